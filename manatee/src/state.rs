//! The shard's cluster state (the one etcd key `/manatee/<shard>/state`), peer identities, live
//! registrations, and the pure rules that compute the next state.
//!
//! The rules are plain functions of (state, who is alive, WAL positions) so they are tested
//! without etcd or Postgres; the sitter only gathers those inputs and writes what they return
//! with a compare-and-swap.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize};

use crate::lsn::Lsn;

/// One Postgres peer of a shard. Its identity is `id` alone (`<ip>:<pgPort>:<sitterPort>`); the
/// other fields are derived from it and kept in the JSON for readers such as Moray.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// `<ip>:<pgPort>:<sitterPort>`.
    pub id: String,
    /// `tcp://postgres@<ip>:<pgPort>/postgres`: where Moray sends queries.
    #[serde(rename = "pgUrl")]
    pub pg_url: String,
    /// `http://<ip>:<sitterPort>` (`https://` when the sitter serves mutual TLS): the sitter's
    /// HTTP API (`/status`, `/ready`, `/rebuild`).
    #[serde(rename = "backupUrl")]
    pub backup_url: String,
    /// The peer's address.
    pub ip: String,
}

impl Peer {
    /// The peer at `ip` with Postgres on `pg_port` and its sitter on `sitter_port`.
    pub fn new(ip: IpAddr, pg_port: u16, sitter_port: u16) -> Peer {
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        Peer {
            id: format!("{ip}:{pg_port}:{sitter_port}"),
            pg_url: format!("tcp://postgres@{host}:{pg_port}/postgres"),
            backup_url: format!("http://{host}:{sitter_port}"),
            ip: ip.to_string(),
        }
    }

    /// The same peer, its sitter reached over TLS (`https://`).
    #[must_use]
    pub fn over_tls(mut self) -> Peer {
        if let Some(rest) = self.backup_url.strip_prefix("http://") {
            self.backup_url = format!("https://{rest}");
        }
        self
    }

    /// Parses an id (`<ip>:<pgPort>:<sitterPort>`) back into a peer.
    ///
    /// # Errors
    /// When the id is not of that form.
    pub fn from_id(id: &str) -> Result<Peer, String> {
        let bad = || format!("invalid peer id {id:?}: expected <ip>:<pgPort>:<sitterPort>");
        let mut parts = id.rsplitn(3, ':');
        let sitter: u16 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let pg: u16 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let ip: IpAddr = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let peer = Peer::new(ip, pg, sitter);
        if peer.id != id {
            return Err(bad());
        }
        Ok(peer)
    }

    /// The Postgres port, from the id.
    pub fn pg_port(&self) -> u16 {
        self.id
            .rsplit(':')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(5432)
    }

    /// A libpq/tokio-postgres connection string for this peer's Postgres, without a role.
    pub fn conninfo(&self, connect_timeout_s: u32) -> String {
        format!(
            "host={} port={} dbname=postgres connect_timeout={connect_timeout_s}",
            self.ip,
            self.pg_port()
        )
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Why automatic transitions are stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// When it was frozen (RFC 3339).
    pub date: String,
    /// What the operator said.
    pub reason: String,
}

/// A planned promotion asked for by an operator (`manatee-adm promote`): valid only for the
/// generation it names and until it expires, so a stale request never fires later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promote {
    /// The peer to promote.
    pub id: String,
    /// Its role when asked: `sync` (becomes primary) or `async` (becomes sync).
    pub role: String,
    /// Its index in the async list when `role` is `async`.
    #[serde(
        rename = "asyncIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub async_index: Option<usize>,
    /// The generation the request was made in.
    pub generation: u64,
    /// When the request lapses (RFC 3339).
    #[serde(rename = "expireTime")]
    pub expire_time: String,
}

impl Promote {
    /// True when the request still applies to `state` at time `now`.
    pub fn applies(&self, state: &ClusterState, now: SystemTime) -> bool {
        let unexpired = humantime::parse_rfc3339(&self.expire_time).is_ok_and(|t| t > now);
        unexpired
            && self.generation == state.generation
            && state.role_of(&self.id).name() == self.role
    }
}

/// The cluster state of one shard: who is primary, sync and async, who was deposed, the WAL
/// position the sync must have reached before it may take over, and whether transitions are
/// frozen. Written only by compare-and-swap; every version is also kept under `history/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Bumped whenever the primary or the sync changes.
    pub generation: u64,
    /// The only peer that may accept writes.
    pub primary: Peer,
    /// The synchronous standby: every acknowledged write is on it.
    pub sync: Option<Peer>,
    /// Asynchronous standbys, a chain: async[0] streams from the sync, async[i] from async[i-1].
    #[serde(rename = "async", default)]
    pub asyncs: Vec<Peer>,
    /// Former primaries that must be rebuilt before they rejoin.
    #[serde(default)]
    pub deposed: Vec<Peer>,
    /// The primary's WAL position when this generation was declared: the sync may take over only
    /// once it has reached it (it then holds every write acknowledged before).
    #[serde(rename = "initWal")]
    pub init_wal: Lsn,
    /// Set while automatic transitions are stopped.
    #[serde(default, deserialize_with = "freeze_de")]
    pub freeze: Option<Freeze>,
    /// A pending planned promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<Promote>,
}

/// The original system also wrote `"freeze": true`; read it as a freeze with no reason.
fn freeze_de<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Freeze>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Any {
        Flag(bool),
        Full(Freeze),
    }
    Ok(match Option::<Any>::deserialize(d)? {
        None | Some(Any::Flag(false)) => None,
        Some(Any::Flag(true)) => Some(Freeze {
            date: String::new(),
            reason: String::new(),
        }),
        Some(Any::Full(f)) => Some(f),
    })
}

/// A peer's role in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes.
    Primary,
    /// Synchronous standby of the primary.
    Sync,
    /// Asynchronous standby at this index of the chain.
    Async(usize),
    /// A former primary waiting to be rebuilt and re-added.
    Deposed,
    /// Not in the state (a newcomer, or a standby that was dropped while down).
    Unassigned,
}

impl Role {
    /// `primary`, `sync`, `async`, `deposed` or `unassigned`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Sync => "sync",
            Role::Async(_) => "async",
            Role::Deposed => "deposed",
            Role::Unassigned => "unassigned",
        }
    }
}

/// Why the sync did not take over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoTakeover {
    /// Transitions are frozen.
    Frozen,
    /// The caller is not the sync.
    NotSync,
    /// The primary is still registered (and no planned promotion names the sync).
    PrimaryAlive,
    /// No live async could become the new sync.
    NoAsync,
    /// The sync never reached the generation's initWal: it may lack acknowledged writes.
    BehindInitWal {
        /// The sync's position.
        wal: Lsn,
        /// What it needed.
        init_wal: Lsn,
    },
}

impl fmt::Display for NoTakeover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoTakeover::Frozen => f.write_str("the shard is frozen"),
            NoTakeover::NotSync => f.write_str("not the sync"),
            NoTakeover::PrimaryAlive => f.write_str("the primary is alive"),
            NoTakeover::NoAsync => f.write_str("no live async to become the new sync"),
            NoTakeover::BehindInitWal { wal, init_wal } => {
                write!(f, "WAL {wal} is behind the generation's initWal {init_wal}")
            }
        }
    }
}

impl ClusterState {
    /// The first generation: `peers[0]` is primary, `peers[1]` sync, the rest async.
    ///
    /// # Panics
    /// When fewer than two peers are given (a shard never starts without a sync).
    pub fn bootstrap(peers: &[Peer]) -> ClusterState {
        assert!(peers.len() >= 2, "bootstrap needs a primary and a sync");
        ClusterState {
            generation: 1,
            primary: peers[0].clone(),
            sync: Some(peers[1].clone()),
            asyncs: peers[2..].to_vec(),
            deposed: Vec::new(),
            init_wal: Lsn(0),
            freeze: None,
            promote: None,
        }
    }

    /// The role of the peer with this id.
    pub fn role_of(&self, id: &str) -> Role {
        if self.primary.id == id {
            Role::Primary
        } else if self.sync.as_ref().is_some_and(|s| s.id == id) {
            Role::Sync
        } else if let Some(i) = self.asyncs.iter().position(|p| p.id == id) {
            Role::Async(i)
        } else if self.deposed.iter().any(|p| p.id == id) {
            Role::Deposed
        } else {
            Role::Unassigned
        }
    }

    /// Whom the peer streams WAL from: the primary for the sync (and for peers not yet placed),
    /// the previous link of the chain for an async, nobody for the primary.
    pub fn upstream_of(&self, id: &str) -> Option<&Peer> {
        match self.role_of(id) {
            Role::Primary => None,
            Role::Sync | Role::Deposed | Role::Unassigned => Some(&self.primary),
            Role::Async(0) => Some(self.sync.as_ref().unwrap_or(&self.primary)),
            Role::Async(i) => Some(&self.asyncs[i - 1]),
        }
    }

    /// Every peer named in the state, primary first.
    pub fn peers(&self) -> Vec<(&Peer, Role)> {
        let mut v = vec![(&self.primary, Role::Primary)];
        if let Some(s) = &self.sync {
            v.push((s, Role::Sync));
        }
        v.extend(
            self.asyncs
                .iter()
                .enumerate()
                .map(|(i, p)| (p, Role::Async(i))),
        );
        v.extend(self.deposed.iter().map(|p| (p, Role::Deposed)));
        v
    }

    /// The sync's takeover: allowed only when it is the sync, transitions are not frozen, the
    /// primary is gone (or a planned promotion names the sync), a live async can become the new
    /// sync, and the sync's WAL has reached `initWal`. The old primary is deposed.
    ///
    /// # Errors
    /// Why the takeover is not allowed.
    pub fn sync_takeover(
        &self,
        me: &str,
        live: &BTreeMap<String, Peer>,
        my_wal: Lsn,
        now: SystemTime,
    ) -> Result<ClusterState, NoTakeover> {
        if self.freeze.is_some() {
            return Err(NoTakeover::Frozen);
        }
        let Some(sync) = self.sync.as_ref().filter(|s| s.id == me) else {
            return Err(NoTakeover::NotSync);
        };
        let planned = self
            .promote
            .as_ref()
            .is_some_and(|p| p.id == me && p.applies(self, now));
        if live.contains_key(&self.primary.id) && !planned {
            return Err(NoTakeover::PrimaryAlive);
        }
        let Some(new_sync) = self.asyncs.iter().find(|a| live.contains_key(&a.id)) else {
            return Err(NoTakeover::NoAsync);
        };
        if my_wal < self.init_wal {
            return Err(NoTakeover::BehindInitWal {
                wal: my_wal,
                init_wal: self.init_wal,
            });
        }
        let mut deposed = self.deposed.clone();
        if !deposed.iter().any(|d| d.id == self.primary.id) {
            deposed.push(self.primary.clone());
        }
        Ok(ClusterState {
            generation: self.generation + 1,
            primary: sync.clone(),
            sync: Some(new_sync.clone()),
            asyncs: self
                .asyncs
                .iter()
                .filter(|a| a.id != new_sync.id)
                .cloned()
                .collect(),
            deposed,
            init_wal: my_wal,
            freeze: None,
            promote: None,
        })
    }

    /// The primary's upkeep, run with the set of live (registered, healthy) peers and its own WAL
    /// position:
    /// - a dead sync is replaced by the first live async (new generation, initWal = `wal`);
    /// - a planned promotion of an async swaps it with the sync (new generation);
    /// - dead asyncs are dropped, live newcomers and rebuilt deposed peers are appended.
    ///
    /// Returns `None` when nothing changes (and always when frozen).
    ///
    /// With `sync_grace_over` false the sync may still be on its way (a new primary waiting for
    /// its first sync to be built): it is kept even while not registered.
    pub fn primary_upkeep(
        &self,
        live: &BTreeMap<String, Peer>,
        wal: Lsn,
        now: SystemTime,
        sync_grace_over: bool,
    ) -> Option<ClusterState> {
        if self.freeze.is_some() {
            return None;
        }
        let mut next = self.clone();
        let sync_alive = self
            .sync
            .as_ref()
            .is_some_and(|s| live.contains_key(&s.id) || !sync_grace_over);
        let first_live_async = self.asyncs.iter().position(|a| live.contains_key(&a.id));
        if !sync_alive && let Some(i) = first_live_async {
            let new_sync = next.asyncs.remove(i);
            next.sync = Some(new_sync);
            next.generation += 1;
            next.init_wal = wal;
            next.promote = None;
        } else if let Some(p) = self
            .promote
            .as_ref()
            .filter(|p| p.role == "async" && p.applies(self, now))
            && let Role::Async(i) = self.role_of(&p.id)
            && sync_alive
        {
            let promoted = next.asyncs[i].clone();
            let old_sync = next.sync.replace(promoted).expect("sync is alive");
            next.asyncs[i] = old_sync;
            next.generation += 1;
            next.init_wal = wal;
            next.promote = None;
        }
        // Asyncs: keep the live ones in order, then append live peers not yet placed.
        next.asyncs.retain(|a| live.contains_key(&a.id));
        for (id, peer) in live {
            match next.role_of(id) {
                Role::Unassigned => next.asyncs.push(peer.clone()),
                Role::Deposed => {
                    // It registers only once rebuilt and streaming: it may rejoin.
                    next.deposed.retain(|d| &d.id != id);
                    next.asyncs.push(peer.clone());
                }
                _ => {}
            }
        }
        if next.sync.is_none() && !next.asyncs.is_empty() {
            next.sync = Some(next.asyncs.remove(0));
            next.generation += 1;
            next.init_wal = wal;
        }
        (next != *self).then_some(next)
    }
}

/// What a live peer writes under `/manatee/<shard>/peers/<id>`, attached to its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Who.
    pub peer: Peer,
    /// True while its Postgres answers. False only before the shard's first generation exists
    /// (a peer with no database yet registers so the bootstrap can count it).
    pub ready: bool,
    /// The role it believes it has.
    pub role: String,
}

/// The current time as RFC 3339, for freeze dates and promotion expiry.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(n: u8) -> Peer {
        Peer::new(IpAddr::from([10, 0, 0, n]), 5432, 12345)
    }

    fn live(ps: &[&Peer]) -> BTreeMap<String, Peer> {
        ps.iter().map(|p| (p.id.clone(), (*p).clone())).collect()
    }

    #[test]
    fn json_matches_the_contract() {
        let s = ClusterState::bootstrap(&[p(1), p(2), p(3)]);
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["generation"], 1);
        assert_eq!(v["primary"]["id"], "10.0.0.1:5432:12345");
        assert_eq!(
            v["primary"]["pgUrl"],
            "tcp://postgres@10.0.0.1:5432/postgres"
        );
        assert_eq!(v["primary"]["backupUrl"], "http://10.0.0.1:12345");
        assert_eq!(v["sync"]["ip"], "10.0.0.2");
        assert_eq!(v["async"][0]["id"], "10.0.0.3:5432:12345");
        assert_eq!(v["initWal"], "0/0");
        assert!(v["freeze"].is_null());
        assert!(v.get("promote").is_none());
        let back: ClusterState = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        // The original's forms: extra peer fields, freeze: true.
        let orig = r#"{"generation":3,"primary":{"id":"10.0.0.1:5432:12345","pgUrl":"tcp://postgres@10.0.0.1:5432/postgres","backupUrl":"http://10.0.0.1:12345","zoneId":"z","ip":"10.0.0.1"},"sync":null,"async":[],"deposed":[],"initWal":"0/12345678","freeze":true}"#;
        let o: ClusterState = serde_json::from_str(orig).unwrap();
        assert!(o.freeze.is_some() && o.sync.is_none());
    }

    #[test]
    fn peer_ids_round_trip_and_reject_garbage() {
        let a = p(7);
        assert_eq!(Peer::from_id(&a.id).unwrap(), a);
        assert_eq!(a.pg_port(), 5432);
        for bad in [
            "",
            "1.2.3.4",
            "1.2.3.4:5",
            "x:1:2",
            "1.2.3.4:70000:1",
            "1.2.3.4:01:2",
        ] {
            assert!(Peer::from_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_and_chain() {
        let s = ClusterState::bootstrap(&[p(1), p(2), p(3), p(4)]);
        assert_eq!(s.role_of(&p(1).id), Role::Primary);
        assert_eq!(s.role_of(&p(4).id), Role::Async(1));
        assert_eq!(s.role_of(&p(9).id), Role::Unassigned);
        assert_eq!(s.upstream_of(&p(1).id), None);
        assert_eq!(s.upstream_of(&p(2).id), Some(&p(1)));
        assert_eq!(s.upstream_of(&p(3).id), Some(&p(2)));
        assert_eq!(s.upstream_of(&p(4).id), Some(&p(3)));
        assert_eq!(s.upstream_of(&p(9).id), Some(&p(1)));
    }

    #[test]
    fn takeover_rules() {
        let now = SystemTime::now();
        let mut s = ClusterState::bootstrap(&[p(1), p(2), p(3)]);
        s.init_wal = Lsn(100);
        let all = live(&[&p(1), &p(2), &p(3)]);
        let no_primary = live(&[&p(2), &p(3)]);
        assert_eq!(
            s.sync_takeover(&p(3).id, &no_primary, Lsn(200), now),
            Err(NoTakeover::NotSync)
        );
        assert_eq!(
            s.sync_takeover(&p(2).id, &all, Lsn(200), now),
            Err(NoTakeover::PrimaryAlive)
        );
        assert_eq!(
            s.sync_takeover(&p(2).id, &live(&[&p(2)]), Lsn(200), now),
            Err(NoTakeover::NoAsync)
        );
        assert!(matches!(
            s.sync_takeover(&p(2).id, &no_primary, Lsn(99), now),
            Err(NoTakeover::BehindInitWal { .. })
        ));
        let next = s
            .sync_takeover(&p(2).id, &no_primary, Lsn(150), now)
            .unwrap();
        assert_eq!(next.generation, 2);
        assert_eq!(next.primary, p(2));
        assert_eq!(next.sync, Some(p(3)));
        assert!(next.asyncs.is_empty());
        assert_eq!(next.deposed, vec![p(1)]);
        assert_eq!(next.init_wal, Lsn(150));
        let mut frozen = s.clone();
        frozen.freeze = Some(Freeze {
            date: now_rfc3339(),
            reason: "test".into(),
        });
        assert_eq!(
            frozen.sync_takeover(&p(2).id, &no_primary, Lsn(150), now),
            Err(NoTakeover::Frozen)
        );
        // A planned promotion lets the sync take over from a live primary, once.
        let mut planned = s.clone();
        planned.promote = Some(Promote {
            id: p(2).id,
            role: "sync".into(),
            async_index: None,
            generation: 1,
            expire_time: humantime::format_rfc3339(now + std::time::Duration::from_secs(60))
                .to_string(),
        });
        assert!(planned.sync_takeover(&p(2).id, &all, Lsn(150), now).is_ok());
        planned.generation = 2;
        assert_eq!(
            planned.sync_takeover(&p(2).id, &all, Lsn(150), now),
            Err(NoTakeover::PrimaryAlive)
        );
    }

    #[test]
    fn primary_upkeep_rules() {
        let now = SystemTime::now();
        let s = ClusterState::bootstrap(&[p(1), p(2), p(3), p(4)]);
        assert_eq!(
            s.primary_upkeep(&live(&[&p(1), &p(2), &p(3), &p(4)]), Lsn(5), now, true),
            None
        );
        // Dead sync: async[0] takes its place, new generation.
        let n = s
            .primary_upkeep(&live(&[&p(1), &p(3), &p(4)]), Lsn(5), now, true)
            .unwrap();
        assert_eq!(
            (n.generation, n.sync.clone(), n.asyncs.clone()),
            (2, Some(p(3)), vec![p(4)])
        );
        assert_eq!(n.init_wal, Lsn(5));
        // Dead sync and no live async: nothing to do (writes wait for the sync).
        assert_eq!(
            s.primary_upkeep(&live(&[&p(1)]), Lsn(5), now, true)
                .map(|n| n.sync),
            Some(Some(p(2)))
        );
        // Dead async dropped, newcomer appended, same generation.
        let n = s
            .primary_upkeep(&live(&[&p(1), &p(2), &p(4), &p(9)]), Lsn(5), now, true)
            .unwrap();
        assert_eq!((n.generation, n.asyncs.clone()), (1, vec![p(4), p(9)]));
        // A rebuilt deposed peer rejoins at the end.
        let mut d = s.clone();
        d.deposed = vec![p(8)];
        let n = d
            .primary_upkeep(
                &live(&[&p(1), &p(2), &p(3), &p(4), &p(8)]),
                Lsn(5),
                now,
                true,
            )
            .unwrap();
        assert!(n.deposed.is_empty());
        assert_eq!(n.asyncs.last(), Some(&p(8)));
        // A first sync still being built is kept while the grace lasts.
        assert_eq!(
            s.primary_upkeep(&live(&[&p(1), &p(3), &p(4)]), Lsn(5), now, false),
            None
        );
        let mut f = s.clone();
        f.freeze = Some(Freeze {
            date: String::new(),
            reason: String::new(),
        });
        assert_eq!(
            f.primary_upkeep(&live(&[&p(1), &p(3)]), Lsn(5), now, true),
            None
        );
    }

    proptest! {
        /// Whatever subset is alive, the upkeep never loses the primary, never puts a peer in
        /// two places, and never makes a dead peer the new sync.
        #[test]
        fn upkeep_keeps_peers_unique(alive in proptest::collection::vec(any::<bool>(), 6)) {
            let peers: Vec<Peer> = (1..=6).map(p).collect();
            let mut s = ClusterState::bootstrap(&peers[..4]);
            s.deposed = vec![peers[4].clone()];
            let mut l = BTreeMap::new();
            l.insert(peers[0].id.clone(), peers[0].clone());
            for (i, a) in alive.iter().enumerate() {
                if *a { l.insert(peers[i].id.clone(), peers[i].clone()); }
            }
            let n = s.primary_upkeep(&l, Lsn(1), SystemTime::now(), true).unwrap_or(s.clone());
            prop_assert_eq!(&n.primary, &peers[0]);
            let ids: Vec<&str> = n.peers().iter().map(|(p, _)| p.id.as_str()).collect();
            let mut dedup = ids.clone();
            dedup.sort();
            dedup.dedup();
            prop_assert_eq!(ids.len(), dedup.len());
            if n.generation != s.generation {
                prop_assert!(l.contains_key(&n.sync.as_ref().unwrap().id));
            }
        }

        #[test]
        fn peer_ids_round_trip(ip in any::<[u8; 4]>(), v6 in any::<[u16; 8]>(), six in any::<bool>(), pg in any::<u16>(), sitter in any::<u16>()) {
            let addr: IpAddr = if six { std::net::Ipv6Addr::from(v6).into() } else { IpAddr::from(ip) };
            let peer = Peer::new(addr, pg, sitter);
            prop_assert_eq!(Peer::from_id(&peer.id), Ok(peer.clone()));
            prop_assert_eq!(peer.pg_port(), pg);
        }

        #[test]
        fn peer_id_parse_never_panics(s in "\\PC{0,60}") {
            let _ = Peer::from_id(&s);
        }

        #[test]
        fn state_json_never_panics(s in "\\PC{0,200}") {
            let _ = serde_json::from_str::<ClusterState>(&s);
        }
    }
}
