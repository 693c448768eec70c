//! The shard's keys in etcd: the cluster state (compare-and-swap on its mod revision), its
//! history, and live-peer registrations under a lease.
//!
//! # Keys
//! - `/manatee/<shard>/state`: the [`ClusterState`] JSON.
//! - `/manatee/<shard>/history/<20-digit seq>`: every state written; seq is the mod revision of
//!   the state it replaced (0 for the first), so it is unique and increasing.
//! - `/manatee/<shard>/peers/<id>`: a [`Registration`], attached to the peer's lease.
//!
//! # Endpoints
//! `etcd-client` does not fail over between endpoints on its own (a dead endpoint in its
//! balanced channel keeps failing requests), so [`Coord`] keeps one client per endpoint and moves
//! to the next endpoint when a request fails as unavailable.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};

use crate::Error;
use crate::state::{ClusterState, Peer, Registration};

/// The state as read, with the revision a compare-and-swap must name.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The state.
    pub state: ClusterState,
    /// Its mod revision.
    pub revision: i64,
}

/// One read of everything a decision needs: the state and who is registered.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The state, when the shard has one.
    pub state: Option<Versioned>,
    /// Registrations by peer id, with their create revision (bootstrap order).
    pub peers: BTreeMap<String, (Registration, i64)>,
}

impl Snapshot {
    /// Peers registered and ready (their Postgres answers).
    pub fn live(&self) -> BTreeMap<String, Peer> {
        self.peers
            .iter()
            .filter(|(_, (r, _))| r.ready)
            .map(|(id, (r, _))| (id.clone(), r.peer.clone()))
            .collect()
    }
}

/// A history entry.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// Its sequence number.
    pub seq: u64,
    /// The state written.
    pub state: ClusterState,
}

/// Access to one shard's keys.
pub struct Coord {
    endpoints: Vec<String>,
    shard: String,
    timeout: Duration,
    current: Mutex<(usize, Option<Client>)>,
    /// How etcd is reached (over mutual TLS with the caller's identity, or plain).
    tls: Option<etcd_client::TlsOptions>,
}

impl std::fmt::Debug for Coord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coord")
            .field("endpoints", &self.endpoints)
            .field("shard", &self.shard)
            .finish()
    }
}

impl Coord {
    /// Keys of `shard` in the etcd cluster at `endpoints` (`http://host:port`, comma lists are
    /// split). Requests time out after `timeout`. Connects lazily.
    ///
    /// # Errors
    /// When no endpoint is given or the shard name is unusable as a key segment.
    pub fn new(endpoints: &[String], shard: &str, timeout: Duration) -> Result<Coord, Error> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .flat_map(|e| e.split(','))
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Invalid("no etcd endpoint given".into()));
        }
        if shard.is_empty() || shard.contains('/') || shard.len() > 128 {
            return Err(Error::Invalid(format!(
                "invalid shard name {shard:?}: 1-128 characters, no '/'"
            )));
        }
        Ok(Coord {
            endpoints,
            shard: shard.to_owned(),
            timeout,
            current: Mutex::new((0, None)),
            tls: None,
        })
    }

    /// The same coordinator reaching etcd over mutual TLS with region identity `id` (when
    /// given; `https://` endpoints).
    ///
    /// # Errors
    /// When the identity's files cannot be read.
    pub fn with_identity(mut self, id: Option<&manta_util::tls::Identity>) -> Result<Coord, Error> {
        self.tls = moray::etcd::tls_options_of(id).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(self)
    }

    /// The shard name.
    pub fn shard(&self) -> &str {
        &self.shard
    }

    /// `/manatee/<shard>/`.
    pub fn prefix(&self) -> String {
        format!("/manatee/{}/", self.shard)
    }

    /// `/manatee/<shard>/state`.
    pub fn state_key(&self) -> String {
        format!("/manatee/{}/state", self.shard)
    }

    fn peers_prefix(&self) -> String {
        format!("/manatee/{}/peers/", self.shard)
    }

    fn peer_key(&self, id: &str) -> String {
        format!("/manatee/{}/peers/{id}", self.shard)
    }

    fn history_prefix(&self) -> String {
        format!("/manatee/{}/history/", self.shard)
    }

    /// A connected client: the current endpoint's, or else the next endpoint that accepts a
    /// connection (a dead member is passed over).
    ///
    /// # Errors
    /// When no endpoint can be reached.
    pub async fn client(&self) -> Result<Client, Error> {
        let (idx, existing) = {
            let g = self.current.lock().expect("coord lock");
            (g.0, g.1.clone())
        };
        if let Some(c) = existing {
            return Ok(c);
        }
        let mut last = None;
        for i in 0..self.endpoints.len() {
            let at = (idx + i) % self.endpoints.len();
            let ep = self.endpoints[at].clone();
            let opts = ConnectOptions::new()
                .with_connect_timeout(self.timeout)
                .with_timeout(self.timeout)
                .with_keep_alive(Duration::from_secs(1), self.timeout);
            let opts = moray::etcd::with_tls_for(opts, &ep, self.tls.as_ref());
            match Client::connect([ep], Some(opts)).await {
                Ok(c) => {
                    let mut g = self.current.lock().expect("coord lock");
                    if g.0 == idx {
                        *g = (at, Some(c.clone()));
                    }
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(|| Error::Invalid("no etcd endpoints".into()), Error::Etcd))
    }

    /// Forgets the current client and moves to the next endpoint (after an unavailable error).
    pub fn failed(&self) {
        let mut g = self.current.lock().expect("coord lock");
        g.0 = (g.0 + 1) % self.endpoints.len();
        g.1 = None;
    }

    /// Whether `e` says the endpoint is gone or too slow, so that another member should be
    /// asked. With a single endpoint there is no other, and a slow answer keeps its connection
    /// (only a broken transport makes a new one).
    fn unavailable(&self, e: &etcd_client::Error) -> bool {
        match e {
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
            // By code: the message says "The service is currently unavailable".
            etcd_client::Error::GRpcStatus(s) => {
                self.endpoints.len() > 1
                    && matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                    )
            }
            _ => false,
        }
    }

    fn note<T>(&self, r: Result<T, etcd_client::Error>) -> Result<T, Error> {
        r.map_err(|e| self.fail_with(e))
    }

    /// `e` as our error, moving to the next endpoint when it says this one is unavailable.
    fn fail_with(&self, e: etcd_client::Error) -> Error {
        if self.unavailable(&e) {
            self.failed();
        }
        Error::Etcd(e)
    }

    /// Reads the state (None when the shard has none yet).
    ///
    /// # Errors
    /// When etcd fails or the stored JSON is not a state.
    pub async fn state(&self) -> Result<Option<Versioned>, Error> {
        // A one-shot reader (manatee-adm, status) asks the next member when one is gone.
        let mut tries = self.endpoints.len();
        let resp = loop {
            let mut c = self.client().await?;
            match c.get(self.state_key(), None).await {
                Ok(r) => break r,
                Err(e) if tries > 1 && self.unavailable(&e) => {
                    self.failed();
                    tries -= 1;
                }
                Err(e) => return Err(self.fail_with(e)),
            }
        };
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => {
                let state = serde_json::from_slice(kv.value())
                    .map_err(|e| Error::BadState(format!("{}: {e}", self.state_key())))?;
                Ok(Some(Versioned {
                    state,
                    revision: kv.mod_revision(),
                }))
            }
        }
    }

    /// Reads the state and the registrations.
    ///
    /// # Errors
    /// When etcd fails or the state's JSON is not a state.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        let state = self.state().await?;
        let mut c = self.client().await?;
        let resp = self.note(
            c.get(self.peers_prefix(), Some(GetOptions::new().with_prefix()))
                .await,
        )?;
        let mut peers = BTreeMap::new();
        for kv in resp.kvs() {
            // A registration we cannot read counts as absent: safer than guessing it is alive.
            if let Ok(r) = serde_json::from_slice::<Registration>(kv.value()) {
                peers.insert(r.peer.id.clone(), (r, kv.create_revision()));
            }
        }
        Ok(Snapshot { state, peers })
    }

    /// Writes `next` if the state is still at `revision` (0: if there is no state yet), and
    /// records it in the history. Returns false when someone else wrote first.
    ///
    /// # Errors
    /// When etcd fails.
    pub async fn cas(&self, revision: i64, next: &ClusterState) -> Result<bool, Error> {
        let json = serde_json::to_vec(next).map_err(|e| Error::BadState(e.to_string()))?;
        let hist = format!("{}{:020}", self.history_prefix(), revision.max(0));
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.state_key(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([
                TxnOp::put(self.state_key(), json.clone(), None),
                TxnOp::put(hist, json, None),
            ]);
        let mut c = self.client().await?;
        let resp = self.note(c.txn(txn).await)?;
        Ok(resp.succeeded())
    }

    /// Every state ever written, oldest first.
    ///
    /// # Errors
    /// When etcd fails.
    pub async fn history(&self) -> Result<Vec<HistoryEntry>, Error> {
        let mut c = self.client().await?;
        let prefix = self.history_prefix();
        let resp = self.note(
            c.get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await,
        )?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            let Some(seq) = key.strip_prefix(&prefix).and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Ok(state) = serde_json::from_slice(kv.value()) {
                out.push(HistoryEntry { seq, state });
            }
        }
        out.sort_by_key(|h| h.seq);
        Ok(out)
    }

    /// True when `e` says the lease no longer exists (it expired while we could not renew it).
    pub fn lease_gone(e: &Error) -> bool {
        matches!(e, Error::Etcd(etcd_client::Error::GRpcStatus(s)) if s.message().contains("lease not found"))
            || matches!(e, Error::Etcd(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("lease not found"))
    }

    /// Grants a lease of `ttl`.
    ///
    /// # Errors
    /// When etcd fails.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, Error> {
        let mut c = self.client().await?;
        let resp = self.note(c.lease_grant(ttl.as_secs().max(1) as i64, None).await)?;
        Ok(resp.id())
    }

    /// Renews a lease once. Returns false when the lease has already expired.
    ///
    /// # Errors
    /// When etcd fails.
    pub async fn renew(&self, lease: i64) -> Result<bool, Error> {
        let mut c = self.client().await?;
        let (mut keeper, mut stream) = self.note(c.lease_keep_alive(lease).await)?;
        self.note(keeper.keep_alive().await)?;
        match self.note(stream.message().await)? {
            Some(resp) => Ok(resp.ttl() > 0),
            None => Err(Error::Timeout("lease keepalive stream closed".into())),
        }
    }

    /// Revokes a lease (its keys vanish at once).
    ///
    /// # Errors
    /// When etcd fails.
    pub async fn revoke(&self, lease: i64) -> Result<(), Error> {
        let mut c = self.client().await?;
        self.note(c.lease_revoke(lease).await)?;
        Ok(())
    }

    /// Writes the peer's registration under `lease`.
    ///
    /// # Errors
    /// When etcd fails (an expired lease fails too).
    pub async fn register(&self, reg: &Registration, lease: i64) -> Result<(), Error> {
        let json = serde_json::to_vec(reg).map_err(|e| Error::BadState(e.to_string()))?;
        let mut c = self.client().await?;
        self.note(
            c.put(
                self.peer_key(&reg.peer.id),
                json,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await,
        )?;
        Ok(())
    }

    /// Removes the peer's registration.
    ///
    /// # Errors
    /// When etcd fails.
    pub async fn deregister(&self, id: &str) -> Result<(), Error> {
        let mut c = self.client().await?;
        self.note(c.delete(self.peer_key(id), None).await)?;
        Ok(())
    }

    /// Watches every key of the shard; each message means "something changed, look again".
    /// The stream ends when the connection breaks; callers re-watch.
    ///
    /// # Errors
    /// When etcd fails.
    pub async fn watch(&self) -> Result<etcd_client::WatchStream, Error> {
        let mut c = self.client().await?;
        self.note(
            c.watch(self.prefix(), Some(WatchOptions::new().with_prefix()))
                .await,
        )
    }
}
