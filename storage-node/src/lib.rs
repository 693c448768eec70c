//! The storage node: keeps the bytes of objects as whole files on a dataset and serves them
//! over HTTP to the front door (which writes every object to several nodes at once and reads
//! from any copy) and to the jobs agent running next to the data.
//!
//! Besides the object API a node heartbeats its free space into Moray (`manta_storage`) so the
//! front door can place objects, collects the garbage the metadata tier logs in
//! `manta_delete_log`, and scrubs its files against their checksums, setting corrupt copies
//! aside so another copy is served and the object can be re-replicated.
//!
//! # Layout
//! - [`server`]: the HTTP object API (PUT/GET/HEAD/DELETE `/<owner>/<objectId>`, snapshots,
//!   capacity, quarantine list).
//! - [`store`]: the files: durable uploads (temp file, checksums, fsync, rename, directory
//!   fsync), streaming reads, tombstone and quarantine moves.
//! - [`dataset`]: the [`Dataset`](dataset::Dataset) trait with its `dir` and `zfs` backends and
//!   their shared [`conformance`](dataset::conformance) suite.
//! - [`digest`]: per-block CRC32C sums (and MD5 when asked) computed while streaming, stored
//!   in an extended attribute and checked on every read.
//! - [`heartbeat`], [`gc`], [`scrub`], [`quarantine`]: the background work.
//! - The wire API (types, headers, the `Range` header, the object key layout) and its client
//!   are the `storage-api` crate, which callers of a node depend on instead of this one.
//! - [`Config`], [`StorageNode`], [`run`]: the service.
//!
//! # Guarantees
//! - A 201 to a PUT means the bytes and their checksums are fsynced and renamed into place,
//!   and the directory entry is fsynced: the object survives a crash.
//! - No reader ever sees a partial object: not while an upload streams, not after the client
//!   vanishes, not after the process is killed mid-write (temp files are removed at start-up).
//! - A body that does not match its `Content-MD5` is refused with 469 and leaves nothing.
//! - Memory per upload is bounded (a few 128 KiB chunks), whatever the object's size; a slow
//!   disk slows the sender down. At most `max_transfers` uploads and downloads run at once
//!   (more get 503 `ThrottledError`), and no blocking-pool thread waits on a slow client.
//! - One node per dataset: the store holds an exclusive lock on `<dataset>/.lock`.
//! - GC never removes bytes a metadata record (including a SnapLink) still references, and
//!   keeps removed bytes in a tombstone area for a grace period.
//! - A copy failing verification is answered with 404 (`x-manta-quarantined: true`), never
//!   served. A read checks each block before sending any of its bytes: one that meets a bad
//!   block ends at that block's first byte (so the reader may go on from another copy there),
//!   and the copy is quarantined and recorded in Moray at once, which queues its repair.
//!
//! # Example
//! ```no_run
//! # async fn f() -> Result<(), storage_node::Error> {
//! use storage_node::{Config, StorageNode, dataset::DatasetSpec};
//! let mut config = Config::new(DatasetSpec::Dir("/var/tmp/stor1".into()), "1.stor.local");
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! let node = StorageNode::start(config).await?;
//! println!("serving on {}", node.url());
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! node.serve(shutdown).await
//! # }
//! ```

pub mod concat;
pub mod dataset;
pub mod digest;
pub mod error;
pub mod gc;
pub mod heartbeat;
pub mod quarantine;
pub mod scrub;
pub mod server;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use manta_util::http::Observer;
use manta_util::metrics::Metrics;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use error::Error;

use dataset::{Dataset, DatasetSpec};
use store::Store;

/// Where the node finds Moray.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MorayConfig {
    /// One shard at this URL (single-shard regions, tests).
    Single(String),
    /// The shard ring stored in etcd at these endpoints (every shard, followed live).
    Etcd(Vec<String>),
}

/// A storage node's configuration, built once at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the object API.
    pub listen: SocketAddr,
    /// The dataset holding the objects.
    pub dataset: DatasetSpec,
    /// This node's storage id (`manta_storage_id`), unique in the region.
    pub storage_id: String,
    /// This node's failure domain.
    pub datacenter: String,
    /// The URL the front door should use to reach this node (default `http://<listen>`).
    pub public_url: Option<String>,
    /// Retired: the heartbeat says so, and the front doors choose the node for no new copies;
    /// it keeps serving the objects it holds.
    pub retired: bool,
    /// Largest object accepted.
    pub max_object_size: u64,
    /// An upload is abandoned when no bytes arrive for this long.
    pub idle_timeout: Duration,
    /// Object transfers (uploads and downloads) served at once; more are refused with 503.
    pub max_transfers: usize,
    /// How long in-flight requests may run on after shutdown begins.
    pub drain: Duration,
    /// Moray, for heartbeats, GC and quarantine records; without it the node only serves
    /// objects (and scrubs, recording locally).
    pub moray: Option<MorayConfig>,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// GC timing (runs only with Moray).
    pub gc: gc::GcConfig,
    /// Scrub pacing; `None` disables scrub.
    pub scrub: Option<scrub::ScrubConfig>,
    /// The node's region identity: with it the object API is served over mutual TLS to
    /// region certificates only, and changing objects is for the front door and the jobs
    /// agents alone. Without it (tests of the node alone) it is plain HTTP to anyone.
    pub tls: Option<manta_util::tls::Identity>,
    /// The user the node becomes once its keys are read and its port bound (the dataset must
    /// be that user's); `None` stays whoever started it (a ZFS dataset's node needs root).
    pub run_as: Option<String>,
}

impl Config {
    /// A configuration with defaults: listen on 127.0.0.1:8081, datacenter `dc1`, 1 TiB
    /// maximum object, 45 s idle timeout, 1024 transfers at once, heartbeats every 5 s, GC defaults, scrub at
    /// 32 MiB/s hourly, no Moray.
    pub fn new(dataset: DatasetSpec, storage_id: impl Into<String>) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            dataset,
            storage_id: storage_id.into(),
            datacenter: "dc1".into(),
            public_url: None,
            retired: false,
            tls: None,
            run_as: None,
            max_object_size: 1 << 40,
            idle_timeout: Duration::from_secs(45),
            max_transfers: 1024,
            drain: Duration::from_secs(10),
            moray: None,
            heartbeat_interval: Duration::from_secs(5),
            gc: gc::GcConfig::default(),
            scrub: Some(scrub::ScrubConfig::default()),
        }
    }
}

/// A bound, ready storage node: the dataset is open, temp files are cleaned, the port is
/// bound. [`StorageNode::serve`] runs it.
#[derive(Debug)]
pub struct StorageNode {
    config: Config,
    listener: TcpListener,
    addr: SocketAddr,
    store: Arc<Store>,
    dataset: Arc<dyn Dataset>,
    metrics: Arc<Metrics>,
    moray: Option<moray::ShardedClient>,
    /// The object API's mutual TLS (read before root is dropped).
    server_tls: Option<Arc<rustls::ServerConfig>>,
}

impl StorageNode {
    /// Reads the node's keys, connects the Moray client (lazily: Moray need not be up yet),
    /// becomes the configured user, opens the dataset and the store (removing leftover temp
    /// files) and binds the listener.
    ///
    /// # Errors
    /// When the dataset cannot be opened, the storage id is empty, or the port cannot be bound.
    pub async fn start(config: Config) -> Result<StorageNode, Error> {
        if config.storage_id.trim().is_empty() {
            return Err(Error::Internal("the storage id must not be empty".into()));
        }
        let metrics = Arc::new(Metrics::new());
        // The node's identity is also how it reaches Moray (heartbeats, GC, quarantine).
        let tls = manta_util::tls::internal_client_of(config.tls.as_ref())
            .map_err(|e| Error::io("load the node's region identity", e))?;
        let moray = match &config.moray {
            None => None,
            Some(MorayConfig::Single(url)) => Some(
                moray::ShardedClient::single_over(url, tls)
                    .map_err(|e| Error::Internal(format!("Moray at {url}: {e}")))?,
            ),
            Some(MorayConfig::Etcd(endpoints)) => Some(
                moray::ShardedClient::from_etcd_over(endpoints.clone(), config.tls.as_ref())
                    .await
                    .map_err(|e| Error::Internal(format!("Moray ring from etcd: {e}")))?,
            ),
        };
        let server_tls = match &config.tls {
            Some(id) => Some(
                manta_util::tls::internal_server_config(id)
                    .map_err(|e| Error::io("load the node's region identity", e))?,
            ),
            None => None,
        };
        // Its keys are read: root is not needed again, and everything the node makes from
        // here on (the dataset's files) is that user's.
        manta_util::proc::run_as(config.run_as.as_deref())
            .map_err(|e| Error::io("drop root", e))?;
        let dataset: Arc<dyn Dataset> = Arc::from(dataset::open(&config.dataset).await?);
        let store = Arc::new(Store::open(dataset.root(), metrics.clone()).await?);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::io("bind the listen address", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("read the bound address", e))?;
        tracing::info!(
            %addr,
            storage_id = %config.storage_id,
            dataset = %dataset.name(),
            kind = dataset.kind(),
            "storage node ready"
        );
        Ok(StorageNode {
            config,
            listener,
            addr,
            store,
            dataset,
            metrics,
            moray,
            server_tls,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL the front door uses (the configured public URL, or `https://<bound address>`
    /// with a region identity, `http://<bound address>` without).
    pub fn url(&self) -> String {
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        self.config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.addr))
    }

    /// The object files.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// The dataset.
    pub fn dataset(&self) -> Arc<dyn Dataset> {
        self.dataset.clone()
    }

    /// The node's metrics registry.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// This node's identity as heartbeats report it.
    pub fn identity(&self) -> heartbeat::Identity {
        heartbeat::Identity {
            storage_id: self.config.storage_id.clone(),
            datacenter: self.config.datacenter.clone(),
            url: self.url(),
            hostname: heartbeat::hostname(),
            retired: self.config.retired,
        }
    }

    /// Serves the object API and runs heartbeats, GC and scrub until `shutdown` is cancelled;
    /// then stops accepting, drains in-flight requests (up to the configured drain time), stops
    /// the background tasks and returns.
    ///
    /// # Errors
    /// When the listener fails beyond retrying.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), Error> {
        let tls = self.server_tls.clone();
        let obs = Arc::new(Observer {
            service: "storage-node",
            metrics: self.metrics.clone(),
        });
        let state = Arc::new(server::AppState {
            store: self.store.clone(),
            dataset: self.dataset.clone(),
            max_object_size: self.config.max_object_size,
            idle_timeout: self.config.idle_timeout,
            transfers: Arc::new(tokio::sync::Semaphore::new(self.config.max_transfers)),
        });
        let app = server::router(state, obs, self.config.tls.is_some());
        let background = shutdown.child_token();
        let mut tasks = JoinSet::new();
        let me = self.identity();
        if let Some(moray) = self.moray.clone() {
            tasks.spawn(heartbeat::run(
                moray.clone(),
                self.dataset.clone(),
                me.clone(),
                self.config.heartbeat_interval,
                self.metrics.clone(),
                background.clone(),
            ));
            let gc = gc::Gc {
                store: self.store.clone(),
                moray,
                storage_id: self.config.storage_id.clone(),
                config: self.config.gc.clone(),
                metrics: self.metrics.clone(),
            };
            tasks.spawn(gc.run(background.clone()));
            // Copies quarantined on read (or while Moray was down) are recorded here too,
            // also when scrub is off.
            tasks.spawn(quarantine_reporter(
                self.store.clone(),
                self.moray.as_ref().map(moray::ShardedClient::system),
                me.clone(),
                self.config.gc.interval,
                background.clone(),
            ));
        }
        if let Some(sc) = self.config.scrub.clone() {
            tasks.spawn(scrub_loop(
                self.store.clone(),
                sc,
                self.metrics.clone(),
                self.moray.as_ref().map(moray::ShardedClient::system),
                me,
                background.clone(),
            ));
        }
        let opts = manta_util::http::ServeOptions {
            drain: self.config.drain,
            tls,
        };
        let served = manta_util::http::serve(self.listener, app, shutdown, opts).await;
        background.cancel();
        while tasks.join_next().await.is_some() {}
        tracing::info!("storage node stopped");
        served.map_err(|e| Error::io("serve", e))
    }
}

/// Re-sends the quarantine records every `interval` until `shutdown`.
async fn quarantine_reporter(
    store: Arc<Store>,
    moray: Option<moray::MorayClient>,
    me: heartbeat::Identity,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let Some(m) = moray else { return };
    let mut bucket_ready = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            // A read found a corrupt copy: record it now, so its repair is queued.
            () = store.quarantine_happened() => {}
            () = shutdown.cancelled() => return,
        }
        let res = async {
            if !bucket_ready {
                quarantine::ensure_bucket(&m).await?;
                bucket_ready = true;
            }
            quarantine::sync(&m, &store, &me.storage_id, &me.datacenter).await
        }
        .await;
        if let Err(e) = res {
            tracing::debug!(error = %e, "cannot record quarantined copies in Moray yet");
        }
    }
}

/// Scrub passes forever (until `shutdown`), re-sending quarantine records after each.
async fn scrub_loop(
    store: Arc<Store>,
    config: scrub::ScrubConfig,
    metrics: Arc<Metrics>,
    moray: Option<moray::MorayClient>,
    me: heartbeat::Identity,
    shutdown: CancellationToken,
) {
    let mut bucket_ready = false;
    loop {
        match scrub::scrub_pass(&store, &config, &metrics, &shutdown).await {
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "scrub pass failed"),
        }
        if let Some(m) = &moray {
            let res = async {
                if !bucket_ready {
                    quarantine::ensure_bucket(m).await?;
                    bucket_ready = true;
                }
                quarantine::sync(m, &store, &me.storage_id, &me.datacenter).await
            }
            .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "cannot record quarantined copies in Moray yet");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Starts a node with `config` and serves until `shutdown` (what the binary runs).
///
/// # Errors
/// As [`StorageNode::start`] and [`StorageNode::serve`].
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    StorageNode::start(config).await?.serve(shutdown).await
}
