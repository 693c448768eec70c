//! The sitter: one per Postgres peer. It runs Postgres, keeps the peer's registration alive
//! while Postgres answers, and moves the peer (and, as primary or sync, the shard) through the
//! roles the cluster state gives it.
//!
//! # The loop
//! Every `tick`, on every change under the shard's etcd prefix, and when the postmaster exits,
//! the sitter reads the state and the registrations and reconciles:
//! - **no state**: the first registered peer declares generation 1 once two peers are there;
//! - **primary**: start (read-only) or promote; name the sync in `synchronous_standby_names`;
//!   become writable once the sync streams; replace a dead sync, keep the async chain;
//! - **sync**: stream from the primary; take over when the primary's registration is gone;
//! - **async**: stream from the previous link of the chain;
//! - **deposed / unassigned**: rewind or rebuild from the primary, stream from it, register, and
//!   wait to be appended to the chain.
//!
//! # Fencing
//! A primary that has not renewed its lease for a whole TTL kills its Postgres: by then the sync
//! may have taken over. A primary whose Postgres died waits `takeover_grace` for the sync to
//! take over before starting it again (as a read-only primary, writable only once its sync
//! streams from it again).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use manta_util::http::{Observer, with_observability};
use manta_util::metrics::Metrics;
use rustix::process::Signal;
use serde::Serialize;
use tokio::sync::Notify;
pub use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Error;
use crate::coord::{Coord, Snapshot, Versioned};
use crate::lsn::Lsn;
use crate::pg::{ConfRole, PgConn, PgSetup, Postmaster, Probe};
use crate::state::{ClusterState, NoTakeover, Peer, Registration, Role};

/// Everything a sitter needs; built once by the binary (or a test) and never changed.
#[derive(Debug, Clone)]
pub struct SitterConfig {
    /// etcd endpoints (`http://host:port`).
    pub etcd: Vec<String>,
    /// The shard this peer belongs to.
    pub shard: String,
    /// The peer's data dir (holds `pgdata/`, `sock/`, `postgres.log`).
    pub data_dir: PathBuf,
    /// The address Postgres and the sitter listen on; part of the peer's id.
    pub ip: IpAddr,
    /// Postgres port.
    pub pg_port: u16,
    /// The sitter's HTTP port.
    pub sitter_port: u16,
    /// Postgres binaries.
    pub pg_bindir: PathBuf,
    /// Registration lease TTL: how long a dead sitter stays "alive" for the others.
    pub lease_ttl: Duration,
    /// How often the lease is renewed.
    pub keepalive: Duration,
    /// How often the loop runs without being woken.
    pub tick: Duration,
    /// How long etcd requests may take.
    pub etcd_timeout: Duration,
    /// How long a primary whose Postgres died waits for the sync to take over before starting
    /// its Postgres again.
    pub takeover_grace: Duration,
    /// `fsync` for Postgres (tests turn it off).
    pub pg_fsync: bool,
    /// Extra networks allowed to connect to Postgres with a password (the other peers' and
    /// Moray's addresses).
    pub allow: Vec<String>,
    /// The replication role's password, the same on every peer of the shard.
    pub replication_password: String,
    /// The client (Moray's) role's password: with it the primary creates that role and hands it
    /// the tables. Without it, no client can log in over TCP.
    pub client_password: Option<String>,
    /// Extra Postgres settings.
    pub pg_settings: Vec<(String, String)>,
    /// An initdb'd data dir to copy instead of running initdb (tests, quick set-up).
    pub initdb_from: Option<PathBuf>,
    /// The sitter's region identity: with it its HTTP API is served over mutual TLS to region
    /// certificates only, and `/rebuild` to operators only. Without it (tests of a shard
    /// alone), plain HTTP to anyone.
    pub tls: Option<manta_util::tls::Identity>,
}

impl SitterConfig {
    /// A configuration with the defaults for everything but where, who, and the replication
    /// role's password.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        etcd: Vec<String>,
        shard: &str,
        data_dir: PathBuf,
        ip: IpAddr,
        pg_port: u16,
        sitter_port: u16,
        pg_bindir: PathBuf,
        replication_password: String,
    ) -> SitterConfig {
        SitterConfig {
            etcd,
            shard: shard.to_owned(),
            data_dir,
            ip,
            pg_port,
            sitter_port,
            pg_bindir,
            lease_ttl: Duration::from_secs(2),
            keepalive: Duration::from_millis(500),
            tick: Duration::from_millis(250),
            etcd_timeout: Duration::from_secs(1),
            takeover_grace: Duration::from_secs(4),
            pg_fsync: true,
            allow: Vec::new(),
            replication_password,
            client_password: None,
            pg_settings: Vec::new(),
            initdb_from: None,
            tls: None,
        }
    }

    /// This peer's identity (its sitter `https://` with a region identity).
    pub fn peer(&self) -> Peer {
        let p = Peer::new(self.ip, self.pg_port, self.sitter_port);
        if self.tls.is_some() { p.over_tls() } else { p }
    }
}

/// What Postgres is running as, as far as this sitter started it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Down,
    Standby {
        upstream: String,
    },
    Primary {
        sync: Option<String>,
        writable: bool,
    },
}

/// What `/status` reports.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The peer id.
    pub id: String,
    /// Its role in the current state (`primary`, `sync`, `async`, `deposed`, `unassigned`,
    /// or `none` before the first generation).
    pub role: String,
    /// Index in the async chain.
    pub async_index: Option<usize>,
    /// The state's generation.
    pub generation: Option<u64>,
    /// `down`, `standby` or `primary`: what the sitter runs Postgres as.
    pub mode: String,
    /// Whether a primary accepts writes (its sync streams from it).
    pub writable: bool,
    /// The upstream a standby follows.
    pub upstream: Option<String>,
    /// The postmaster's pid.
    pub postmaster_pid: Option<u32>,
    /// Postgres answered the last probe.
    pub healthy: bool,
    /// The peer's registration is in etcd.
    pub registered: bool,
    /// The shard is frozen.
    pub frozen: bool,
    /// The last probe.
    pub pg: Option<Probe>,
    /// What the sitter last did.
    pub last_action: String,
    /// The last error it met, if the last attempt failed.
    pub last_error: Option<String>,
    /// Rebuilds (rewinds and base backups) done by this sitter process.
    pub rebuilds: u64,
}

/// Requests from the HTTP API to the loop.
#[derive(Debug)]
enum Request {
    Rebuild,
}

struct LeaseState {
    id: Option<i64>,
    last_ok: Instant,
}

struct Sitter {
    cfg: Arc<SitterConfig>,
    me: Peer,
    setup: PgSetup,
    coord: Arc<Coord>,
    lease: Arc<Mutex<LeaseState>>,
    pm: Option<Postmaster>,
    conn: Option<PgConn>,
    mode: Mode,
    registered: Option<(i64, Registration)>,
    /// When Postgres was last lost (also set at start-up): a primary waits for a takeover.
    lost_at: Instant,
    /// Postgres exited on its own (not stopped by us).
    crashed: bool,
    probe_failures: u32,
    last_probe: Option<Probe>,
    retry_after: Option<Instant>,
    force_rebuild: bool,
    /// This primary has created (or updated) the shard's roles since it became primary.
    roles_ready: bool,
    /// When Postgres last became the primary (started or promoted).
    primary_since: Instant,
    /// Since when a standby has not been streaming although its upstream is alive.
    not_streaming_since: Option<Instant>,
    status: Arc<Mutex<Status>>,
    metrics: Arc<Metrics>,
    last_warning: String,
}

/// Runs a sitter until `shutdown` is cancelled: serves HTTP on `ip:sitter_port`, runs Postgres,
/// takes part in the shard. On shutdown it withdraws its registration and stops Postgres with
/// an immediate shutdown (never a clean one: a shutdown checkpoint the sync never received
/// would make the data diverge).
///
/// # Errors
/// When the HTTP port cannot be bound or the data dir cannot be created; everything later is
/// retried, not returned.
pub async fn run(cfg: SitterConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let cfg = Arc::new(cfg);
    let me = cfg.peer();
    let setup = PgSetup {
        bindir: cfg.pg_bindir.clone(),
        base: cfg.data_dir.clone(),
        me: me.clone(),
        fsync: cfg.pg_fsync,
        allow: cfg.allow.clone(),
        replication_password: cfg.replication_password.clone(),
        extra: cfg.pg_settings.clone(),
    };
    {
        let s = setup.clone();
        manta_util::blocking(move || s.prepare_dirs())
            .await
            .map_err(|e| Error::io("create the data dir", e))?;
        // Postgres runs as its own user when we are root: a data dir that user cannot reach
        // would fail initdb, base backups and every start, over and over. Refuse at once.
        let base = setup.base.clone();
        manta_util::blocking(move || {
            manta_util::proc::check_user_reaches(manta_util::proc::PG_USER, &base)
                .map_err(std::io::Error::other)
        })
        .await
        .map_err(|e| Error::Invalid(format!("data dir {}: {e}", setup.base.display())))?;
    }
    let coord = Arc::new(
        Coord::new(&cfg.etcd, &cfg.shard, cfg.etcd_timeout)?.with_identity(cfg.tls.as_ref())?,
    );
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Mutex::new(Status {
        id: me.id.clone(),
        role: "none".into(),
        mode: "down".into(),
        ..Status::default()
    }));
    let (req_tx, mut req_rx) = tokio::sync::mpsc::channel::<Request>(4);
    let wake = Arc::new(Notify::new());

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(cfg.ip, cfg.sitter_port))
        .await
        .map_err(|e| Error::io(&format!("bind {}:{}", cfg.ip, cfg.sitter_port), e))?;
    let server_tls = match &cfg.tls {
        Some(id) => Some(
            manta_util::tls::internal_server_config(id)
                .map_err(|e| Error::io("load the sitter's region identity", e))?,
        ),
        None => None,
    };
    let app = router(
        status.clone(),
        req_tx,
        wake.clone(),
        metrics.clone(),
        cfg.tls.is_some(),
    );
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(manta_util::http::serve(
        listener,
        app,
        http_stop.clone(),
        manta_util::http::ServeOptions {
            tls: server_tls,
            ..Default::default()
        },
    ));

    let lease = Arc::new(Mutex::new(LeaseState {
        id: None,
        last_ok: Instant::now(),
    }));
    let bg_stop = CancellationToken::new();
    let lease_task = tokio::spawn(keep_lease(
        coord.clone(),
        lease.clone(),
        cfg.clone(),
        wake.clone(),
        bg_stop.clone(),
    ));
    let watch_task = tokio::spawn(watch_shard(coord.clone(), wake.clone(), bg_stop.clone()));

    info!(peer = %me.id, shard = %cfg.shard, data = %cfg.data_dir.display(), "sitter starting");
    let mut s = Sitter {
        cfg: cfg.clone(),
        me,
        setup,
        coord: coord.clone(),
        lease: lease.clone(),
        pm: None,
        conn: None,
        mode: Mode::Down,
        registered: None,
        lost_at: Instant::now(),
        crashed: false,
        probe_failures: 0,
        last_probe: None,
        retry_after: None,
        force_rebuild: false,
        roles_ready: false,
        not_streaming_since: None,
        primary_since: Instant::now(),
        status,
        metrics,
        last_warning: String::new(),
    };
    loop {
        s.reconcile().await;
        s.publish();
        let exited = async {
            match s.pm.as_mut() {
                Some(pm) => {
                    pm.wait().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(cfg.tick) => {}
            () = exited => {}
            Some(req) = req_rx.recv() => match req {
                Request::Rebuild => s.force_rebuild = true,
            },
        }
    }
    info!("sitter stopping: withdrawing the registration and stopping postgres");
    let _ = tokio::time::timeout(cfg.etcd_timeout, coord.deregister(&s.me.id)).await;
    let lease_id = lease.lock().expect("lease lock").id.take();
    if let Some(id) = lease_id {
        let _ = tokio::time::timeout(cfg.etcd_timeout, coord.revoke(id)).await;
    }
    bg_stop.cancel();
    if let Some(pm) = s.pm.take() {
        pm.stop(Signal::QUIT, Duration::from_secs(10)).await;
    }
    http_stop.cancel();
    let _ = lease_task.await;
    let _ = watch_task.await;
    let _ = http.await;
    Ok(())
}

/// Grants the lease and renews it every `keepalive`; records when it was last known good.
async fn keep_lease(
    coord: Arc<Coord>,
    lease: Arc<Mutex<LeaseState>>,
    cfg: Arc<SitterConfig>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let current = lease.lock().expect("lease lock").id;
        let sent = Instant::now();
        match current {
            None => {
                match tokio::time::timeout(cfg.etcd_timeout, coord.grant(cfg.lease_ttl)).await {
                    Ok(Ok(id)) => {
                        let mut l = lease.lock().expect("lease lock");
                        l.id = Some(id);
                        l.last_ok = sent;
                        drop(l);
                        debug!(lease = id, "lease granted");
                        wake.notify_one();
                    }
                    Ok(Err(e)) => debug!(error = %e, "lease grant failed"),
                    Err(_) => debug!("lease grant timed out"),
                }
            }
            Some(id) => match tokio::time::timeout(cfg.etcd_timeout, coord.renew(id)).await {
                Ok(Ok(true)) => lease.lock().expect("lease lock").last_ok = sent,
                Ok(Ok(false)) => {
                    warn!(lease = id, "lease expired; taking a new one");
                    lease.lock().expect("lease lock").id = None;
                    wake.notify_one();
                    continue;
                }
                Ok(Err(e)) if Coord::lease_gone(&e) => {
                    warn!(lease = id, "lease expired; taking a new one");
                    lease.lock().expect("lease lock").id = None;
                    wake.notify_one();
                    continue;
                }
                Ok(Err(e)) => debug!(error = %e, "lease renewal failed"),
                Err(_) => debug!("lease renewal timed out"),
            },
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(cfg.keepalive) => {}
        }
    }
}

/// Wakes the loop on every change under the shard's prefix; re-watches when the stream breaks.
async fn watch_shard(coord: Arc<Coord>, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let run = async {
            let mut stream = coord.watch().await?;
            while let Some(_msg) = stream.message().await? {
                wake.notify_one();
            }
            Ok::<(), Error>(())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            r = run => if let Err(e) = r { debug!(error = %e, "watch broke") },
        }
        wake.notify_one();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// How long a new primary waits for its first sync to stream before replacing it.
const SYNC_GRACE: Duration = Duration::from_secs(10);

/// How long a standby may fail to stream from a live upstream before it is rebuilt.
const STUCK_AFTER: Duration = Duration::from_secs(30);

/// The data dir's history: data that last ran as a primary must be rewound before it may run
/// as a standby (its WAL may hold writes no other peer has).
const LAST_RAN_AS: &str = "manatee-last-ran-as";

impl Sitter {
    fn note(&mut self, action: impl Into<String>) {
        let action = action.into();
        info!(peer = %self.me.id, "{action}");
        let mut st = self.status.lock().expect("status lock");
        st.last_action = action;
        st.last_error = None;
    }

    fn trouble(&mut self, what: &str, e: &dyn std::fmt::Display) {
        let msg = format!("{what}: {e}");
        if msg != self.last_warning {
            warn!(peer = %self.me.id, "{msg}");
            self.last_warning = msg.clone();
        }
        self.status.lock().expect("status lock").last_error = Some(msg);
    }

    fn last_ran_as(&self) -> Option<String> {
        std::fs::read_to_string(self.cfg.data_dir.join(LAST_RAN_AS))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn set_last_ran_as(&self, what: &str) -> Result<(), Error> {
        let path = self.cfg.data_dir.join(LAST_RAN_AS);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, what)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::io("record the data dir's role", e))
    }

    fn publish(&self) {
        let mut st = self.status.lock().expect("status lock");
        st.mode = match &self.mode {
            Mode::Down => "down",
            Mode::Standby { .. } => "standby",
            Mode::Primary { .. } => "primary",
        }
        .into();
        st.writable = matches!(self.mode, Mode::Primary { writable: true, .. });
        st.upstream = match &self.mode {
            Mode::Standby { upstream } => Some(upstream.clone()),
            _ => None,
        };
        st.postmaster_pid = self.pm.as_ref().map(|p| p.pid);
        st.healthy = self.last_probe.is_some();
        st.registered = self.registered.as_ref().is_some_and(|(_, r)| r.ready);
        st.pg = self.last_probe.clone();
    }

    /// One pass: observe Postgres and etcd, then act.
    async fn reconcile(&mut self) {
        // Postgres gone?
        if let Some(how) = self.pm.as_ref().and_then(Postmaster::exited) {
            self.trouble("postgres exited", &how);
            self.pm = None;
            self.conn = None;
            self.last_probe = None;
            self.mode = Mode::Down;
            self.lost_at = Instant::now();
            self.crashed = true;
            self.metrics.inc(
                "manatee_postgres_exits_total",
                "Unexpected Postgres exits.",
                &[],
            );
        }
        // Fence: a primary that may have lost its lease stops serving at once.
        let lease_age = self.lease.lock().expect("lease lock").last_ok.elapsed();
        if matches!(self.mode, Mode::Primary { .. }) && lease_age > self.cfg.lease_ttl {
            self.note(format!(
                "fencing: no lease renewal for {lease_age:?}; killing postgres (a takeover may be under way)"
            ));
            self.kill_pg().await;
            self.lost_at = Instant::now();
            self.crashed = false;
            self.metrics.inc(
                "manatee_fences_total",
                "Times a primary killed its own Postgres after losing etcd.",
                &[],
            );
        }
        self.probe().await;
        let snap = match self.coord.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                self.trouble("etcd unreachable", &e);
                return;
            }
        };
        let Some(v) = snap.state.clone() else {
            self.bootstrap(&snap).await;
            return;
        };
        let role = v.state.role_of(&self.me.id);
        {
            let mut st = self.status.lock().expect("status lock");
            st.role = role.name().into();
            st.async_index = match role {
                Role::Async(i) => Some(i),
                _ => None,
            };
            st.generation = Some(v.state.generation);
            st.frozen = v.state.freeze.is_some();
        }
        self.metrics.set(
            "manatee_generation",
            "The shard's generation as last read.",
            &[],
            v.state.generation as f64,
        );
        if self.force_rebuild {
            self.force_rebuild = false;
            if role == Role::Primary {
                self.trouble("rebuild refused", &"this peer is the primary");
            } else {
                self.note("rebuild requested: discarding the local database");
                self.kill_pg().await;
                let s = self.setup.clone();
                if let Err(e) =
                    manta_util::blocking(move || std::fs::remove_dir_all(s.data())).await
                {
                    self.trouble("remove the data dir", &e);
                }
                let _ = self.set_last_ran_as("nothing");
            }
        }
        self.watch_stuck_standby(&snap);
        let mut role = role;
        match role {
            Role::Primary => self.as_primary(&v, &snap).await,
            Role::Sync => {
                if self.as_sync(&v, &snap).await {
                    // Registered from now on as the primary it has become.
                    role = Role::Primary;
                }
            }
            Role::Async(_) | Role::Deposed | Role::Unassigned => {
                let upstream = v.state.upstream_of(&self.me.id).cloned();
                if let Some(up) = upstream {
                    self.ensure_standby(&v.state, &up).await;
                }
            }
        }
        self.register(Some(&v.state), role).await;
    }

    /// A standby that cannot follow its live upstream for [`STUCK_AFTER`] (its WAL belongs to
    /// another history, or its upstream no longer has the WAL it needs) is rebuilt from the
    /// primary, instead of wedging the chain (or, as the sync, every write).
    fn watch_stuck_standby(&mut self, snap: &Snapshot) {
        let Mode::Standby { upstream } = &self.mode else {
            self.not_streaming_since = None;
            return;
        };
        let streaming = self
            .last_probe
            .as_ref()
            .is_some_and(|p| p.receiver.as_deref() == Some("streaming"));
        if streaming || !snap.live().contains_key(upstream) {
            self.not_streaming_since = None;
            return;
        }
        let since = *self.not_streaming_since.get_or_insert_with(Instant::now);
        if since.elapsed() > STUCK_AFTER {
            self.trouble(
                "standby cannot follow its live upstream",
                &format!(
                    "not streaming from {upstream} for {:?}; rebuilding from the primary",
                    since.elapsed()
                ),
            );
            self.not_streaming_since = None;
            self.force_rebuild = true;
        }
    }

    /// Probes the local server; two failures in a row count as unhealthy.
    async fn probe(&mut self) {
        if self.pm.is_none() {
            self.last_probe = None;
            return;
        }
        if self.conn.is_none() {
            self.conn = self.setup.connect_local().await.ok();
        }
        let result = match &self.conn {
            Some(c) => tokio::time::timeout(Duration::from_secs(2), c.probe())
                .await
                .map_err(|_| Error::Timeout("probe".into()))
                .and_then(|r| r),
            None => Err(Error::Timeout("connect".into())),
        };
        match result {
            Ok(p) => {
                self.probe_failures = 0;
                self.last_probe = Some(p);
            }
            Err(e) => {
                self.conn = None;
                self.probe_failures += 1;
                if self.probe_failures >= 2 {
                    if self.last_probe.is_some() {
                        self.trouble("postgres does not answer", &e);
                    }
                    self.last_probe = None;
                }
            }
        }
    }

    /// Keeps the registration in step: present (ready) exactly while Postgres answers in the
    /// mode the role calls for; before the first generation, present in any case.
    async fn register(&mut self, state: Option<&ClusterState>, role: Role) {
        let healthy = self.last_probe.is_some();
        let fits = match (role, &self.mode) {
            (Role::Primary, Mode::Primary { .. }) => true,
            (Role::Primary, _) => false,
            (_, Mode::Standby { .. }) => true,
            _ => false,
        };
        let want = if state.is_none() {
            Some(healthy)
        } else if healthy && fits {
            Some(true)
        } else {
            None
        };
        let lease = self.lease.lock().expect("lease lock").id;
        match (want, lease) {
            (Some(ready), Some(lease)) => {
                let reg = Registration {
                    peer: self.me.clone(),
                    ready,
                    role: role.name().into(),
                };
                if self.registered.as_ref() != Some(&(lease, reg.clone())) {
                    match self.coord.register(&reg, lease).await {
                        Ok(()) => {
                            debug!(ready, role = role.name(), "registered");
                            self.registered = Some((lease, reg));
                        }
                        Err(e) => {
                            if Coord::lease_gone(&e) {
                                let mut l = self.lease.lock().expect("lease lock");
                                if l.id == Some(lease) {
                                    l.id = None;
                                }
                            }
                            self.trouble("register", &e)
                        }
                    }
                }
            }
            (None, _) => {
                if self.registered.is_some() {
                    match self.coord.deregister(&self.me.id).await {
                        Ok(()) => {
                            self.registered = None;
                            self.note("withdrew the registration (postgres not serving)");
                        }
                        Err(e) => self.trouble("deregister", &e),
                    }
                }
            }
            (Some(_), None) => self.registered = None,
        }
    }

    /// No state yet: register, and declare generation 1 if this peer registered first and a
    /// second peer is there to be the sync.
    async fn bootstrap(&mut self, snap: &Snapshot) {
        self.status.lock().expect("status lock").role = "none".into();
        self.register(None, Role::Unassigned).await;
        let mut order: Vec<(&Registration, i64)> =
            snap.peers.values().map(|(r, rev)| (r, *rev)).collect();
        order.sort_by_key(|(r, rev)| (*rev, r.peer.id.clone()));
        if order.len() < 2 || order[0].0.peer.id != self.me.id {
            return;
        }
        let peers: Vec<Peer> = order.iter().map(|(r, _)| r.peer.clone()).collect();
        let first = ClusterState::bootstrap(&peers);
        match self.coord.cas(0, &first).await {
            Ok(true) => self.note(format!(
                "declared generation 1: primary {}, sync {}",
                self.me.id, peers[1].id
            )),
            Ok(false) => {}
            Err(e) => self.trouble("declare generation 1", &e),
        }
    }

    async fn as_primary(&mut self, v: &Versioned, snap: &Snapshot) {
        let st = &v.state;
        let want_sync = st.sync.as_ref().map(|p| p.id.clone());
        match self.mode.clone() {
            Mode::Standby { .. } => {
                if let Err(e) = self.promote(st).await {
                    self.trouble("promote", &e);
                }
            }
            Mode::Down => {
                if self.setup.has_data() && self.lost_at.elapsed() < self.cfg.takeover_grace {
                    return; // give the sync its chance to take over
                }
                if let Err(e) = self.start_primary(st).await {
                    self.trouble("start as primary", &e);
                }
            }
            Mode::Primary { sync, writable } => {
                if self.last_probe.as_ref().is_some_and(|p| p.in_recovery) {
                    // Promotion not finished (or lost): ask again.
                    if let Err(e) = self.promote(st).await {
                        self.trouble("promote", &e);
                    }
                    return;
                }
                if !self.roles_ready {
                    match self.ensure_roles().await {
                        Ok(()) => self.roles_ready = true,
                        Err(e) => self.trouble("create the shard's roles", &e),
                    }
                }
                if sync != want_sync {
                    self.note(format!("synchronous standby is now {want_sync:?}"));
                    if let Err(e) = self.reconfigure_primary(want_sync.clone(), !writable).await {
                        self.trouble("reconfigure", &e);
                        return;
                    }
                    self.mode = Mode::Primary {
                        sync: want_sync.clone(),
                        writable,
                    };
                }
                if !writable {
                    let streaming = self.last_probe.as_ref().is_some_and(|p| {
                        p.replication.iter().any(|r| {
                            Some(&r.application_name) == want_sync.as_ref()
                                && r.state == "streaming"
                        })
                    });
                    if streaming {
                        match self.reconfigure_primary(want_sync.clone(), false).await {
                            Ok(()) => {
                                self.mode = Mode::Primary {
                                    sync: want_sync.clone(),
                                    writable: true,
                                };
                                self.note(format!(
                                    "writable: sync {} streams (generation {})",
                                    want_sync.clone().unwrap_or_default(),
                                    st.generation
                                ));
                            }
                            Err(e) => self.trouble("become writable", &e),
                        }
                    }
                }
                let Some(wal) = self.last_probe.as_ref().map(Probe::wal) else {
                    return;
                };
                let mut live = snap.live();
                // Our own registration may not be written yet; we are alive.
                live.insert(self.me.id.clone(), self.me.clone());
                // Until its sync has streamed once, a new primary gives it time to be built.
                let grace_over = writable || self.primary_since.elapsed() > SYNC_GRACE;
                if let Some(mut next) = st.primary_upkeep(&live, wal, SystemTime::now(), grace_over)
                {
                    // A new sync while the old one lives: from the moment the new state is
                    // written until postgres names the new sync, a commit acknowledged by the
                    // old sync alone would be missing on the new one if this primary died
                    // then, and the new sync would take over without it. So both must
                    // acknowledge commits until the switch, and the new generation's initWal
                    // is read only once they do (the probe's WAL may be behind commits the
                    // old sync acknowledged since).
                    let old = want_sync.clone();
                    let new = next.sync.as_ref().map(|p| p.id.clone());
                    let handover = old != new && old.as_ref().is_some_and(|o| live.contains_key(o));
                    if old != new {
                        let both = handover.then(|| (new.clone(), old.clone()));
                        match self.prepare_sync_change(both, writable).await {
                            Ok(now) => next.init_wal = next.init_wal.max(now),
                            Err((what, e)) => {
                                self.trouble(what, &e);
                                if handover {
                                    self.restore_sync(old, writable).await;
                                }
                                return;
                            }
                        }
                        if handover {
                            self.note(format!(
                                "handing the sync over from {} to {}: both acknowledge commits until the new state is written",
                                old.as_deref().unwrap_or("-"),
                                new.as_deref().unwrap_or("-")
                            ));
                        }
                    }
                    let what = describe_change(st, &next);
                    let written = match self.coord.cas(v.revision, &next).await {
                        Ok(true) => {
                            self.note(what);
                            true
                        }
                        Ok(false) => false,
                        Err(e) => {
                            self.trouble("write the state", &e);
                            false
                        }
                    };
                    if handover && !written {
                        self.restore_sync(old, writable).await;
                    }
                }
            }
        }
    }

    /// Returns true when this peer took over.
    async fn as_sync(&mut self, v: &Versioned, snap: &Snapshot) -> bool {
        let st = &v.state;
        self.ensure_standby(st, &st.primary).await;
        let (Mode::Standby { .. }, Some(probe)) = (&self.mode, &self.last_probe) else {
            return false;
        };
        if !probe.in_recovery {
            return false;
        }
        let mut live: BTreeMap<String, Peer> = snap.live();
        live.insert(self.me.id.clone(), self.me.clone());
        match st.sync_takeover(&self.me.id, &live, probe.wal(), SystemTime::now()) {
            Ok(next) => match self.coord.cas(v.revision, &next).await {
                Ok(true) => {
                    self.note(format!(
                        "took over as primary: generation {}, deposed {}, new sync {}",
                        next.generation,
                        st.primary.id,
                        next.sync.as_ref().map(|p| p.id.as_str()).unwrap_or("-")
                    ));
                    self.metrics
                        .inc("manatee_takeovers_total", "Takeovers by this peer.", &[]);
                    if let Err(e) = self.promote(&next).await {
                        self.trouble("promote", &e);
                    }
                    return true;
                }
                Ok(false) => {}
                Err(e) => self.trouble("write the takeover", &e),
            },
            Err(NoTakeover::PrimaryAlive | NoTakeover::NotSync) => {}
            Err(why) => {
                if !live.contains_key(&st.primary.id) {
                    self.trouble("the primary is gone but this sync may not take over", &why);
                }
            }
        }
        false
    }

    /// Before a new sync is written into the state: while `both` (the new and the old sync)
    /// are given, require both to acknowledge commits; then read the WAL position the new
    /// generation's initWal must cover.
    async fn prepare_sync_change(
        &mut self,
        both: Option<(Option<String>, Option<String>)>,
        writable: bool,
    ) -> Result<Lsn, (&'static str, Error)> {
        if let Some((new, old)) = both {
            self.reconfigure_primary_with(new, old, !writable)
                .await
                .map_err(|e| ("require both syncs during the handover", e))?;
        }
        self.current_wal()
            .await
            .map_err(|e| ("read the WAL position for the handover", e))
    }

    /// After a handover that was not written: the old sync alone again (as the state says).
    async fn restore_sync(&mut self, sync: Option<String>, writable: bool) {
        if let Err(e) = self.reconfigure_primary(sync, !writable).await {
            self.trouble(
                "name the sync again after a handover that was not written",
                &e,
            );
        }
    }

    /// The primary's WAL position now.
    async fn current_wal(&self) -> Result<Lsn, Error> {
        let conn = self.setup.connect_local().await?;
        Ok(conn.probe().await?.wal())
    }

    /// Creates or updates the replication and client roles (see [`PgConn::ensure_roles`]).
    async fn ensure_roles(&mut self) -> Result<(), Error> {
        let conn = self.setup.connect_local().await?;
        conn.ensure_roles(
            &self.cfg.replication_password,
            self.cfg.client_password.as_deref(),
        )
        .await
    }

    /// Writes the primary configuration and reloads, waiting until new sessions see it.
    async fn reconfigure_primary(
        &mut self,
        sync: Option<String>,
        read_only: bool,
    ) -> Result<(), Error> {
        self.reconfigure_primary_with(sync, None, read_only).await
    }

    /// [`Self::reconfigure_primary`], with `also` a second standby every commit must reach
    /// (while the sync changes).
    async fn reconfigure_primary_with(
        &mut self,
        sync: Option<String>,
        also: Option<String>,
        read_only: bool,
    ) -> Result<(), Error> {
        let s = self.setup.clone();
        let want_names = crate::pg::sync_names(sync.as_deref(), also.as_deref());
        let role = ConfRole::Primary {
            sync: sync.clone(),
            also,
            read_only,
        };
        manta_util::blocking(move || s.write_conf(&role))
            .await
            .map_err(|e| Error::io("write the configuration", e))?;
        let conn = self.setup.connect_local().await?;
        conn.client.simple_query("SELECT pg_reload_conf()").await?;
        let want_ro = if read_only { "on" } else { "off" };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Backends read the new file at their next command once the postmaster has.
            let c = self.setup.connect_local().await?;
            let row = c
                .client
                .query_one(
                    "SELECT current_setting('default_transaction_read_only'), current_setting('synchronous_standby_names')",
                    &[],
                )
                .await?;
            if row.get::<_, String>(0) == want_ro && row.get::<_, String>(1) == want_names {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout("configuration reload".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Turns the local standby into the (read-only) primary of `st`, on a new timeline.
    async fn promote(&mut self, st: &ClusterState) -> Result<(), Error> {
        self.roles_ready = false;
        let sync = st.sync.as_ref().map(|p| p.id.clone());
        self.set_last_ran_as("primary")?;
        let s = self.setup.clone();
        let role = ConfRole::Primary {
            sync: sync.clone(),
            also: None,
            read_only: true,
        };
        manta_util::blocking(move || s.write_settings(&role))
            .await
            .map_err(|e| Error::io("write the configuration", e))?;
        let conn = self.setup.connect_local().await?;
        conn.client.simple_query("SELECT pg_reload_conf()").await?;
        let row = conn
            .client
            .query_one(
                "SELECT CASE WHEN pg_is_in_recovery() THEN pg_promote(true, 30) ELSE true END",
                &[],
            )
            .await?;
        if !row.get::<_, bool>(0) {
            return Err(Error::Timeout("pg_promote".into()));
        }
        self.mode = Mode::Primary {
            sync: sync.clone(),
            writable: false,
        };
        self.primary_since = Instant::now();
        self.metrics.inc(
            "manatee_promotions_total",
            "Standby promotions done by this sitter.",
            &[],
        );
        self.note(format!(
            "promoted; read-only until sync {} streams",
            sync.unwrap_or_default()
        ));
        Ok(())
    }

    /// Starts Postgres as the primary of `st` (read-only). A data dir that was a standby is
    /// started as one and promoted, so it moves to a new timeline.
    async fn start_primary(&mut self, st: &ClusterState) -> Result<(), Error> {
        self.roles_ready = false;
        if !self.setup.has_data() {
            if st.generation != 1 {
                return Err(Error::Invalid(format!(
                    "this peer is the primary of generation {} but has no database; restore it or promote another peer",
                    st.generation
                )));
            }
            self.note("creating the database (first generation)");
            self.setup.initdb(self.cfg.initdb_from.clone()).await?;
            self.set_last_ran_as("nothing")?;
        }
        let was_standby = self.setup.data().join("standby.signal").exists();
        if was_standby {
            let upstream = st
                .deposed
                .last()
                .cloned()
                .unwrap_or_else(|| st.primary.clone());
            self.start_pg(ConfRole::Standby { upstream }, "standby")
                .await?;
            return self.promote(st).await;
        }
        let sync = st.sync.as_ref().map(|p| p.id.clone());
        self.start_pg(
            ConfRole::Primary {
                sync: sync.clone(),
                also: None,
                read_only: true,
            },
            "primary",
        )
        .await?;
        self.mode = Mode::Primary {
            sync,
            writable: false,
        };
        self.primary_since = Instant::now();
        self.note(format!(
            "postgres started as primary of generation {} (read-only until the sync streams)",
            st.generation
        ));
        Ok(())
    }

    /// Writes the configuration, starts the postmaster and waits until it answers.
    async fn start_pg(&mut self, role: ConfRole, ran_as: &str) -> Result<(), Error> {
        self.set_last_ran_as(ran_as)?;
        let s = self.setup.clone();
        let r = role.clone();
        manta_util::blocking(move || s.write_conf(&r))
            .await
            .map_err(|e| Error::io("write the configuration", e))?;
        let mut pm = self.setup.spawn().await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(how) = pm.exited() {
                return Err(Error::Command(format!(
                    "postgres exited during start-up ({how}); see {}",
                    self.setup.log().display()
                )));
            }
            if let Ok(c) = self.setup.connect_local().await
                && let Ok(Ok(p)) = tokio::time::timeout(Duration::from_secs(2), c.probe()).await
            {
                self.last_probe = Some(p);
                self.conn = Some(c);
                break;
            }
            if Instant::now() > deadline {
                pm.stop(Signal::KILL, Duration::from_secs(5)).await;
                return Err(Error::Timeout("postgres start-up".into()));
            }
            tokio::select! {
                _ = pm.wait() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        self.pm = Some(pm);
        self.crashed = false;
        self.probe_failures = 0;
        if let ConfRole::Standby { upstream } = role {
            self.mode = Mode::Standby {
                upstream: upstream.id,
            };
        }
        Ok(())
    }

    /// Kills Postgres at once (a fence, or before a rebuild).
    async fn kill_pg(&mut self) {
        if let Some(pm) = self.pm.take() {
            pm.stop(Signal::KILL, Duration::from_secs(5)).await;
        }
        self.conn = None;
        self.last_probe = None;
        self.mode = Mode::Down;
    }

    /// Makes the local server a standby of `upstream`, rebuilding from the primary first when
    /// the data is missing, belongs to another database, or last ran as a primary.
    async fn ensure_standby(&mut self, st: &ClusterState, upstream: &Peer) {
        match self.mode.clone() {
            Mode::Standby { upstream: u } if u == upstream.id => return,
            Mode::Standby { .. } => {
                let s = self.setup.clone();
                let role = ConfRole::Standby {
                    upstream: upstream.clone(),
                };
                let r = async {
                    manta_util::blocking(move || s.write_conf(&role))
                        .await
                        .map_err(|e| Error::io("write the configuration", e))?;
                    let c = self.setup.connect_local().await?;
                    c.client.simple_query("SELECT pg_reload_conf()").await?;
                    Ok::<(), Error>(())
                };
                match r.await {
                    Ok(()) => {
                        self.mode = Mode::Standby {
                            upstream: upstream.id.clone(),
                        };
                        self.note(format!("now streaming from {}", upstream.id));
                    }
                    Err(e) => self.trouble("change upstream", &e),
                }
                return;
            }
            Mode::Primary { .. } => {
                self.note("no longer the primary: killing postgres (fence) before a rewind");
                self.kill_pg().await;
            }
            Mode::Down => {}
        }
        if self.crashed && self.lost_at.elapsed() < self.cfg.lease_ttl {
            return; // let the others notice before coming back
        }
        if self.retry_after.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if let Err(e) = self.prepare_standby_data(st).await {
            self.trouble("prepare the standby's data", &e);
            self.retry_after = Some(Instant::now() + Duration::from_secs(1));
            return;
        }
        match self
            .start_pg(
                ConfRole::Standby {
                    upstream: upstream.clone(),
                },
                "standby",
            )
            .await
        {
            Ok(()) => {
                self.retry_after = None;
                self.note(format!("postgres started as a standby of {}", upstream.id));
            }
            Err(e) => {
                self.trouble("start as a standby", &e);
                self.retry_after = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    async fn prepare_standby_data(&mut self, st: &ClusterState) -> Result<(), Error> {
        let primary = &st.primary;
        if !self.setup.has_data() {
            self.note(format!(
                "no database: base backup from the primary {}",
                primary.id
            ));
            return self.full_rebuild(primary).await;
        }
        if self.last_ran_as().as_deref() == Some("primary") {
            return self.rejoin_former_primary(primary).await;
        }
        // The data was a standby's: it may start as one, unless it is another database.
        if let Ok(Ok(c)) = tokio::time::timeout(
            Duration::from_secs(2),
            PgConn::to_peer(primary, &self.setup.replication_login()),
        )
        .await
            && let Ok(row) = c
                .client
                .query_one(
                    "SELECT system_identifier::text FROM pg_control_system()",
                    &[],
                )
                .await
        {
            let theirs: String = row.get(0);
            let ours = self.setup.system_id().await;
            if ours.as_deref() != Some(theirs.as_str()) {
                self.note(format!(
                    "local database {ours:?} is not the shard's ({theirs}): base backup from {}",
                    primary.id
                ));
                return self.full_rebuild(primary).await;
            }
        }
        Ok(())
    }

    /// Data that last ran as a primary may hold WAL that no other peer has (writes that were
    /// never acknowledged). Its WAL is replayed to the end without writing any, then compared
    /// with where the primary's timeline forked from it:
    /// - it ends at or before the fork: nothing diverged, it starts as a standby as it is;
    /// - it ends after the fork: pg_rewind (after a single-user recovery, so pg_rewind sees
    ///   the divergence), and a base backup when pg_rewind fails or finds nothing to do;
    /// - another lineage, or the primary unreachable: base backup (or wait).
    async fn rejoin_former_primary(&mut self, primary: &Peer) -> Result<(), Error> {
        let source = tokio::time::timeout(
            Duration::from_secs(3),
            PgConn::to_peer(primary, &self.setup.replication_login()),
        )
        .await
        .map_err(|_| Error::Timeout(format!("connect to the primary {}", primary.id)))??;
        let end = self.setup.replay_local_wal().await?;
        let tli = self.setup.local_timeline();
        let fork = match source.fork_point(tli).await {
            Ok(Some(fork)) => fork,
            Ok(None) => {
                // Same timeline: fine only if the primary has all of our WAL.
                let theirs = source.current_wal().await?;
                if end <= theirs {
                    self.set_last_ran_as("standby")?;
                    self.note(format!("former primary on the primary's timeline, WAL {end} <= {theirs}: rejoining as it is"));
                    return Ok(());
                }
                self.note(format!("former primary ahead of the primary on the same timeline ({end} > {theirs}): base backup"));
                return self.full_rebuild(primary).await;
            }
            Err(e) => {
                self.note(format!("former primary's timeline {tli} is not in the primary's history ({e}): base backup"));
                return self.full_rebuild(primary).await;
            }
        };
        if end <= fork {
            self.set_last_ran_as("standby")?;
            self.note(format!(
                "former primary: local WAL ends at {end}, timeline {tli} forked at {fork}: nothing diverged, rejoining as it is"
            ));
            return Ok(());
        }
        self.note(format!(
            "former primary diverged (local WAL ends at {end}, fork at {fork}): pg_rewind from {}",
            primary.id
        ));
        let rewound = async {
            // pg_rewind reads the source's timeline from its control file, which a just
            // promoted primary updates only at its next checkpoint: without one, pg_rewind
            // sees one timeline and reports that nothing needs rewinding.
            source.client.batch_execute("CHECKPOINT").await?;
            self.setup.single_user_recovery().await?;
            self.setup.rewind(primary).await
        }
        .await;
        match rewound {
            Ok(out) if !out.contains("no rewind required") => {
                self.bump_rebuilds("rewind");
                self.set_last_ran_as("standby")?;
                self.note(format!(
                    "rewound: {}",
                    out.lines().last().unwrap_or("done").trim()
                ));
                Ok(())
            }
            Ok(_) => {
                self.trouble(
                    "pg_rewind found nothing to rewind",
                    &"the local WAL diverged all the same; rebuilding with a base backup",
                );
                self.full_rebuild(primary).await
            }
            Err(e) => {
                self.trouble("pg_rewind failed; rebuilding with a base backup", &e);
                self.full_rebuild(primary).await
            }
        }
    }

    async fn full_rebuild(&mut self, source: &Peer) -> Result<(), Error> {
        self.set_last_ran_as("nothing")?;
        let started = Instant::now();
        self.setup.basebackup(source).await?;
        self.set_last_ran_as("standby")?;
        self.bump_rebuilds("basebackup");
        self.note(format!(
            "base backup from {} done in {:?}",
            source.id,
            started.elapsed()
        ));
        Ok(())
    }

    fn bump_rebuilds(&self, how: &str) {
        self.status.lock().expect("status lock").rebuilds += 1;
        self.metrics.inc(
            "manatee_rebuilds_total",
            "Rebuilds of the local database, by method.",
            &[("method", how)],
        );
    }
}

fn describe_change(old: &ClusterState, new: &ClusterState) -> String {
    let ids = |v: &[Peer]| {
        v.iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    if old.generation != new.generation {
        format!(
            "declared generation {}: sync {} (was {}), asyncs [{}]",
            new.generation,
            new.sync.as_ref().map(|p| p.id.as_str()).unwrap_or("-"),
            old.sync.as_ref().map(|p| p.id.as_str()).unwrap_or("-"),
            ids(&new.asyncs)
        )
    } else {
        format!(
            "asyncs now [{}], deposed [{}]",
            ids(&new.asyncs),
            ids(&new.deposed)
        )
    }
}

#[derive(Clone)]
struct HttpState {
    status: Arc<Mutex<Status>>,
    requests: tokio::sync::mpsc::Sender<Request>,
    wake: Arc<Notify>,
}

/// Who may have a peer rebuilt: operators.
const REBUILDERS: &[manta_util::tls::Role] = &[manta_util::tls::Role::Adm];

/// The sitter's API; with `roles` (mutual TLS) `/rebuild` is checked against the caller's role.
fn router(
    status: Arc<Mutex<Status>>,
    requests: tokio::sync::mpsc::Sender<Request>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    roles: bool,
) -> Router {
    let rebuild = manta_util::http::only_for(post(rebuild_handler), REBUILDERS, roles);
    let app = Router::new()
        .route("/status", get(status_handler))
        .route("/ready", get(ready_handler))
        .route("/rebuild", rebuild)
        .with_state(HttpState {
            status,
            requests,
            wake,
        });
    with_observability(
        app,
        Arc::new(Observer {
            service: "manatee-sitter",
            metrics,
        }),
    )
}

async fn status_handler(State(h): State<HttpState>) -> Response {
    let st = h.status.lock().expect("status lock").clone();
    axum::Json(st).into_response()
}

/// 200 while the peer serves in its role (registered: its Postgres answers as the primary or a
/// standby the shard counts on), 503 otherwise; the body is `/status` either way.
async fn ready_handler(State(h): State<HttpState>) -> Response {
    let st = h.status.lock().expect("status lock").clone();
    let code = if st.registered && st.role != "none" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(st)).into_response()
}

async fn rebuild_handler(State(h): State<HttpState>) -> Response {
    let role = h.status.lock().expect("status lock").role.clone();
    if role == "primary" {
        return manta_util::http::error_response_parts(
            manta_types::ErrorCode::InvalidArgument,
            "the primary cannot be rebuilt; promote another peer first",
        );
    }
    match h.requests.try_send(Request::Rebuild) {
        Ok(()) => {
            h.wake.notify_one();
            (
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({"rebuild": "scheduled"})),
            )
                .into_response()
        }
        Err(_) => manta_util::http::error_response_parts(
            manta_types::ErrorCode::ServiceUnavailable,
            "the sitter is busy; try again",
        ),
    }
}
