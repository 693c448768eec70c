//! What `manatee-adm` does, as functions the binary and the tests call: read the state, the
//! peers' Postgres status and the history; freeze, unfreeze, promote, reap, rebuild.
//!
//! Every change is a compare-and-swap on the state, retried a few times when a sitter wrote
//! first; nothing here bypasses the rules the sitters follow (a promotion is a request the
//! sitters carry out, valid for one generation and a short time).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::Error;
use crate::coord::{Coord, HistoryEntry, Versioned};
use crate::lsn::Lsn;
use crate::state::{ClusterState, Freeze, Promote, Registration, Role, now_rfc3339};

/// The state and who is registered.
#[derive(Debug, Clone, Serialize)]
pub struct Show {
    /// The shard.
    pub shard: String,
    /// The state (null before the first generation).
    pub state: Option<ClusterState>,
    /// Registered peers.
    pub peers: Vec<Registration>,
}

/// Reads the state and the registrations.
///
/// # Errors
/// When etcd fails.
pub async fn show(coord: &Coord) -> Result<Show, Error> {
    let snap = coord.snapshot().await?;
    Ok(Show {
        shard: coord.shard().to_owned(),
        state: snap.state.map(|v| v.state),
        peers: snap.peers.into_values().map(|(r, _)| r).collect(),
    })
}

/// `show` for people.
pub fn render_show(s: &Show) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "shard:      {}", s.shard);
    let Some(st) = &s.state else {
        let _ = writeln!(
            o,
            "state:      none yet ({} peer(s) registered)",
            s.peers.len()
        );
        return o;
    };
    let live = |id: &str| {
        if s.peers.iter().any(|r| r.peer.id == id && r.ready) {
            "up"
        } else {
            "DOWN"
        }
    };
    let _ = writeln!(o, "generation: {}", st.generation);
    let _ = writeln!(o, "initWal:    {}", st.init_wal);
    match &st.freeze {
        Some(f) => {
            let _ = writeln!(o, "freeze:     FROZEN since {} ({})", f.date, f.reason);
        }
        None => {
            let _ = writeln!(o, "freeze:     not frozen");
        }
    }
    let _ = writeln!(o, "\nROLE       PEER                           REGISTERED");
    for (p, role) in st.peers() {
        let role = match role {
            Role::Async(i) => format!("async[{i}]"),
            r => r.name().to_owned(),
        };
        let _ = writeln!(o, "{role:<10} {:<30} {}", p.id, live(&p.id));
    }
    for r in &s.peers {
        if st.role_of(&r.peer.id) == Role::Unassigned {
            let _ = writeln!(
                o,
                "{:<10} {:<30} {}",
                "-",
                r.peer.id,
                if r.ready {
                    "up (waiting to join)"
                } else {
                    "waiting"
                }
            );
        }
    }
    if let Some(p) = &st.promote {
        let _ = writeln!(
            o,
            "\npending promotion of {} ({}), until {}",
            p.id, p.role, p.expire_time
        );
    }
    o
}

/// One peer in `pg-status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerPgStatus {
    /// Role in the state (`async[0]` style for asyncs).
    pub role: String,
    /// Peer id.
    pub peer: String,
    /// What its sitter's `/status` said (null when unreachable).
    pub sitter: Option<Value>,
    /// Its postmaster's pid.
    pub pid: Option<u64>,
    /// Its own WAL position (current on a primary, replayed on a standby).
    pub wal: Option<Lsn>,
    /// How its upstream sees it (a `pg_stat_replication` row), when it streams.
    pub replication: Option<Value>,
    /// Bytes between the primary's WAL position and what it replayed.
    pub lag_bytes: Option<u64>,
    /// Replay lag as Postgres measures it, in ms.
    pub replay_lag_ms: Option<f64>,
}

/// Asks every peer's sitter for its Postgres status.
///
/// # Errors
/// When etcd fails or there is no state.
pub async fn pg_status(coord: &Coord, sitters: &SitterClient) -> Result<Vec<PeerPgStatus>, Error> {
    let st = coord
        .state()
        .await?
        .ok_or_else(|| Error::Invalid("the shard has no state yet".into()))?
        .state;
    let peers = st.peers();
    let mut statuses = Vec::new();
    for (p, _) in &peers {
        statuses.push(sitters.status(&p.backup_url).await.ok());
    }
    let lsn_at = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Lsn>().ok())
    };
    let primary_wal = statuses[0]
        .as_ref()
        .and_then(|v| v.get("pg"))
        .and_then(|pg| lsn_at(pg, "currentWal"));
    let mut out = Vec::new();
    for (i, (p, role)) in peers.iter().enumerate() {
        let sitter = statuses[i].clone();
        let pg = sitter.as_ref().and_then(|v| v.get("pg")).cloned();
        let wal = pg
            .as_ref()
            .and_then(|pg| lsn_at(pg, "currentWal").or_else(|| lsn_at(pg, "replayWal")));
        // Its upstream's view of it.
        let replication = st.upstream_of(&p.id).and_then(|up| {
            let j = peers.iter().position(|(q, _)| q.id == up.id)?;
            let rows = statuses[j]
                .as_ref()?
                .get("pg")?
                .get("replication")?
                .as_array()?;
            rows.iter()
                .find(|r| r.get("applicationName").and_then(Value::as_str) == Some(p.id.as_str()))
                .cloned()
        });
        let replay_lag_ms = replication
            .as_ref()
            .and_then(|r| r.get("replayLagMs"))
            .and_then(Value::as_f64);
        let lag_bytes = match (role, primary_wal, wal) {
            (Role::Primary, _, _) => None,
            (_, Some(pw), Some(w)) => Some(pw.bytes_after(w)),
            _ => None,
        };
        out.push(PeerPgStatus {
            role: match role {
                Role::Async(i) => format!("async[{i}]"),
                r => r.name().to_owned(),
            },
            peer: p.id.clone(),
            pid: sitter
                .as_ref()
                .and_then(|v| v.get("postmasterPid"))
                .and_then(Value::as_u64),
            sitter,
            wal,
            replication,
            lag_bytes,
            replay_lag_ms,
        });
    }
    Ok(out)
}

/// `pg-status` for people.
pub fn render_pg_status(rows: &[PeerPgStatus]) -> String {
    let mut o = format!(
        "{:<9} {:<26} {:<8} {:<15} {:<12} {:<12} {:<12} {:<12} {:<10}\n",
        "ROLE", "PEER", "PID", "REPL", "SENT", "WRITE", "FLUSH", "REPLAY", "LAG"
    );
    for r in rows {
        let field = |k: &str| {
            r.replication
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned()
        };
        let pid = match (&r.sitter, r.pid) {
            (None, _) => "unreach".to_owned(),
            (_, Some(p)) => p.to_string(),
            (_, None) => "down".to_owned(),
        };
        let repl = if r.role == "primary" {
            "-".to_owned()
        } else {
            match (field("state").as_str(), field("syncState").as_str()) {
                ("-", _) => "none".to_owned(),
                (s, "sync") => format!("{s}/sync"),
                (s, _) => s.to_owned(),
            }
        };
        let lag = match (r.lag_bytes, r.replay_lag_ms) {
            (Some(b), Some(ms)) => format!("{b}B/{ms:.0}ms"),
            (Some(b), None) => format!("{b}B"),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            o,
            "{:<9} {:<26} {:<8} {:<15} {:<12} {:<12} {:<12} {:<12} {:<10}",
            r.role,
            r.peer,
            pid,
            repl,
            field("sent"),
            field("write"),
            field("flush"),
            field("replay"),
            lag
        );
    }
    o
}

/// Every state written, oldest first.
///
/// # Errors
/// When etcd fails.
pub async fn history(coord: &Coord) -> Result<Vec<HistoryEntry>, Error> {
    coord.history().await
}

/// `history` for people: one line per state.
pub fn render_history(h: &[HistoryEntry]) -> String {
    let mut o = format!(
        "{:<8} {:<4} {:<24} {:<24} {:<12} {}\n",
        "SEQ", "GEN", "PRIMARY", "SYNC", "INITWAL", "ASYNC / DEPOSED / FREEZE"
    );
    for e in h {
        let s = &e.state;
        let ids = |v: &[crate::Peer]| {
            v.iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let _ = writeln!(
            o,
            "{:<8} {:<4} {:<24} {:<24} {:<12} [{}] [{}]{}",
            e.seq,
            s.generation,
            s.primary.id,
            s.sync.as_ref().map(|p| p.id.as_str()).unwrap_or("-"),
            s.init_wal.to_string(),
            ids(&s.asyncs),
            ids(&s.deposed),
            if s.freeze.is_some() { " frozen" } else { "" }
        );
    }
    o
}

/// Applies `change` to the current state with compare-and-swap, retrying when a sitter wrote
/// first. `change` returns the new state, or `None` when there is nothing to do.
async fn update(
    coord: &Coord,
    change: impl Fn(&ClusterState) -> Result<Option<ClusterState>, Error>,
) -> Result<ClusterState, Error> {
    for _ in 0..10 {
        let Versioned { state, revision } = coord
            .state()
            .await?
            .ok_or_else(|| Error::Invalid("the shard has no state yet".into()))?;
        let Some(next) = change(&state)? else {
            return Ok(state);
        };
        if coord.cas(revision, &next).await? {
            return Ok(next);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Conflict)
}

/// Stops automatic transitions.
///
/// # Errors
/// When etcd fails, there is no state, or the reason is empty.
pub async fn freeze(coord: &Coord, reason: &str) -> Result<ClusterState, Error> {
    if reason.trim().is_empty() {
        return Err(Error::Invalid("freeze needs a reason (-r REASON)".into()));
    }
    update(coord, |s| {
        let mut n = s.clone();
        n.freeze = Some(Freeze {
            date: now_rfc3339(),
            reason: reason.to_owned(),
        });
        Ok(Some(n))
    })
    .await
}

/// Allows automatic transitions again.
///
/// # Errors
/// When etcd fails or there is no state.
pub async fn unfreeze(coord: &Coord) -> Result<ClusterState, Error> {
    update(coord, |s| {
        if s.freeze.is_none() {
            return Ok(None);
        }
        let mut n = s.clone();
        n.freeze = None;
        Ok(Some(n))
    })
    .await
}

/// Removes a deposed peer for good (one that will never come back). Without `id`, removes
/// every deposed peer that is not registered.
///
/// # Errors
/// When etcd fails, there is no state, or `id` is not a deposed peer.
pub async fn reap(coord: &Coord, id: Option<&str>) -> Result<ClusterState, Error> {
    let live = coord.snapshot().await?.live();
    update(coord, |s| {
        let mut n = s.clone();
        match id {
            Some(id) => {
                if s.role_of(id) != Role::Deposed {
                    return Err(Error::Invalid(format!("{id} is not a deposed peer")));
                }
                n.deposed.retain(|d| d.id != id);
            }
            None => n.deposed.retain(|d| live.contains_key(&d.id)),
        }
        Ok((n != *s).then_some(n))
    })
    .await
}

/// Asks for a planned promotion of `id`: the sync becomes primary (the old primary is deposed
/// and rewound), or an async becomes the sync. The sitters carry it out; it lapses after
/// `valid_for` or when the generation changes.
///
/// # Errors
/// When etcd fails, there is no state, the shard is frozen, or `id` is the primary or not in
/// the state.
pub async fn promote(coord: &Coord, id: &str, valid_for: Duration) -> Result<ClusterState, Error> {
    update(coord, |s| {
        if s.freeze.is_some() {
            return Err(Error::Invalid(
                "the shard is frozen; unfreeze it first".into(),
            ));
        }
        let (role, idx) = match s.role_of(id) {
            Role::Sync => ("sync", None),
            Role::Async(i) => ("async", Some(i)),
            Role::Primary => return Err(Error::Invalid(format!("{id} is already the primary"))),
            r => {
                return Err(Error::Invalid(format!(
                    "{id} is {} and cannot be promoted",
                    r.name()
                )));
            }
        };
        let mut n = s.clone();
        n.promote = Some(Promote {
            id: id.to_owned(),
            role: role.into(),
            async_index: idx,
            generation: s.generation,
            expire_time: humantime::format_rfc3339_seconds(SystemTime::now() + valid_for)
                .to_string(),
        });
        Ok(Some(n))
    })
    .await
}

/// The one client of the sitters' HTTP API (`/status`, `/rebuild`): over mutual TLS with the
/// caller's region identity when given (sitters of a region serve nothing else), plain HTTP
/// otherwise.
#[derive(Debug, Clone)]
pub struct SitterClient {
    http: reqwest::Client,
}

impl SitterClient {
    /// A client whose requests time out after `timeout`, presenting `tls`'s identity.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<SitterClient, Error> {
        let mut b = reqwest::Client::builder().timeout(timeout);
        if let Some(tls) = tls {
            b = b.tls_backend_preconfigured((*tls).clone());
        }
        Ok(SitterClient {
            http: b.build().map_err(|e| Error::Invalid(e.to_string()))?,
        })
    }

    /// What the sitter at `backup_url` says of itself (`GET /status`: its mode, health,
    /// Postgres figures, last error).
    ///
    /// # Errors
    /// When the sitter cannot be reached, answers with an error status, or not with JSON.
    pub async fn status(&self, backup_url: &str) -> Result<Value, Error> {
        let resp = self
            .http
            .get(format!("{backup_url}/status"))
            .send()
            .await
            .map_err(|e| Error::Invalid(format!("sitter at {backup_url} unreachable: {e}")))?;
        if !resp.status().is_success() {
            return Err(Error::Invalid(format!(
                "sitter at {backup_url} answered {}",
                resp.status()
            )));
        }
        resp.json::<Value>()
            .await
            .map_err(|e| Error::Invalid(format!("sitter at {backup_url}: {e}")))
    }

    /// Asks the sitter at `backup_url` to discard its database and rebuild it from the
    /// primary, then waits (up to `wait`) until it streams again.
    ///
    /// # Errors
    /// When the sitter refuses (it is the primary; the caller is no operator) or does not
    /// come back in time.
    pub async fn rebuild(&self, backup_url: &str, wait: Duration) -> Result<Value, Error> {
        let before = self.status(backup_url).await?;
        let rebuilds0 = before.get("rebuilds").and_then(Value::as_u64).unwrap_or(0);
        let resp = self
            .http
            .post(format!("{backup_url}/rebuild"))
            .send()
            .await
            .map_err(|e| Error::Invalid(e.to_string()))?;
        if !resp.status().is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(Error::Invalid(format!("rebuild refused: {body}")));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Ok(v) = self.status(backup_url).await {
                let done = v.get("rebuilds").and_then(Value::as_u64).unwrap_or(0) > rebuilds0
                    && v.get("mode").and_then(Value::as_str) == Some("standby")
                    && v.get("healthy").and_then(Value::as_bool) == Some(true);
                if done {
                    return Ok(v);
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout(format!("rebuild of {backup_url}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
