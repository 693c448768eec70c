//! The running service: its clients of the tiers below, its registry, and how it starts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::Router;
use manta_auth::{Authenticator, TokenKey};
use manta_util::http::{Observer, ServeOptions, serve, with_observability};
use manta_util::metrics::Metrics;
use moray::ShardedClient;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, MoraySource};
use crate::picker::Picker;
use manta_accounts::MorayAccounts;

/// Everything a request handler needs, shared by all requests.
#[derive(Debug)]
pub struct Frontdoor {
    /// Configuration.
    pub cfg: Arc<Config>,
    /// Metadata, routed to shards.
    pub moray: ShardedClient,
    /// Accounts.
    pub accounts: Arc<MorayAccounts>,
    /// Credential checks.
    pub auth: Authenticator,
    /// Placement and node addresses.
    pub picker: Arc<Picker>,
    /// How storage nodes are reached: the settings and pool every node's client shares.
    pub sharks: storage_api::Connector,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Concurrency limit.
    pub throttle: Arc<Semaphore>,
    /// Each account's requests in progress, held to its share.
    pub in_flight: crate::limits::InFlight,
    /// The jobs API (job state lives in Moray's system shard).
    pub jobs: manta_jobs_api::api::JobsApi,
    /// Directories recently read as such, by storage key: a write's parent check reuses them for
    /// `account_cache_ttl`. Safe because the check is made again after the write lands
    /// (`objects::save`); this front door forgets a directory it removes at once.
    pub dirs: manta_util::cache::TtlCache<()>,
    /// Work a request leaves behind: the discards of uploads dropped uncommitted
    /// ([`crate::data::Uncommitted`]). Waited for (up to the drain deadline) at shutdown.
    pub background: TaskTracker,
    /// Access log lines not yet written to the spool ([`crate::reports`]).
    pub access: crate::reports::AccessLog,
}

/// How many directories [`Frontdoor::dirs`] holds before it starts over.
const DIR_CACHE_ENTRIES: usize = 100_000;

/// The front door's region identity as a client's TLS configuration (none: plain HTTP).
fn internal_tls(cfg: &Config) -> Result<moray::Tls> {
    manta_util::tls::internal_client_of(cfg.internal_tls.as_ref())
        .context("load the front door's region identity")
}

async fn connect_moray(cfg: &Config, tls: &moray::Tls) -> Result<ShardedClient> {
    Ok(match &cfg.moray {
        MoraySource::Single(urls) => {
            if urls.is_empty() {
                anyhow::bail!("no Moray URL configured");
            }
            let shard = moray::ring::ShardInfo {
                name: "1".into(),
                urls: urls.clone(),
            };
            ShardedClient::from_ring_over(
                moray::ring::Ring::new(moray::ring::DEFAULT_VNODES, vec![shard])?,
                tls.clone(),
            )?
        }
        MoraySource::Etcd(endpoints) => {
            ShardedClient::from_etcd_over(endpoints.clone(), cfg.internal_tls.as_ref()).await?
        }
    })
}

/// The buckets of `frontdoor_step_seconds`: finer than a request's, as each step of a small
/// request takes well under a millisecond to a few milliseconds.
pub const STEP_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
    0.256, 1.0, 10.0,
];

impl Frontdoor {
    /// Runs `fut` as step `step` of an object request of kind `op` (`put`, `get`), timing it in
    /// the histogram `frontdoor_step_seconds{op,step}`: where a request's time goes (`check`:
    /// the metadata read and checks before a write; `place`: choosing nodes and connecting;
    /// `stream`: the bytes to every node, fsynced; `commit`: the record write; `lookup`: the
    /// record read of a read; `open`: a node's first answer).
    pub async fn step<T>(
        &self,
        op: &'static str,
        step: &'static str,
        fut: impl std::future::Future<Output = T>,
    ) -> T {
        let t = std::time::Instant::now();
        let out = fut.await;
        self.metrics.observe_in(
            "frontdoor_step_seconds",
            "Time spent in each step of object requests.",
            STEP_BUCKETS,
            &[("op", op), ("step", step)],
            t.elapsed().as_secs_f64(),
        );
        out
    }

    /// Connects to the metadata tier and prepares its buckets, waiting up to `wait` for Moray to
    /// answer (services of a region start together).
    ///
    /// # Errors
    /// When Moray does not answer in time.
    pub async fn new(cfg: Config, wait: Duration) -> Result<Arc<Frontdoor>> {
        // A bad identity fails at once, not after the wait for Moray.
        let tls = internal_tls(&cfg)?;
        let deadline = tokio::time::Instant::now() + wait;
        let moray = loop {
            match connect_moray(&cfg, &tls).await {
                Ok(m) => match (
                    m.setup_manta_buckets().await,
                    manta_accounts::ensure_bucket(&m.system()).await,
                ) {
                    (Ok(()), Ok(())) => break m,
                    (Err(e), _) | (_, Err(e)) => {
                        if tokio::time::Instant::now() > deadline {
                            return Err(e).context("prepare the metadata buckets");
                        }
                        warn!(error = %e, "metadata tier not ready; retrying");
                    }
                },
                Err(e) => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(e).context("connect to the metadata tier");
                    }
                    warn!(error = %e, "metadata tier not ready; retrying");
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let fd = Frontdoor::assemble(cfg, moray, tls);
        fd.jobs
            .setup()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("create the job buckets")?;
        Ok(Arc::new(fd))
    }

    /// The service over `moray`, reaching storage nodes as `tls` says; nothing yet contacted.
    fn assemble(cfg: Config, moray: ShardedClient, tls: moray::Tls) -> Frontdoor {
        let system = moray.system();
        let accounts = Arc::new(MorayAccounts::new(system.clone(), cfg.account_cache_ttl));
        let mut auth =
            Authenticator::new(accounts.clone()).with_tokens(TokenKey::new(&cfg.token_secret));
        auth.max_skew = cfg.clock_skew;
        let jobs =
            manta_jobs_api::api::JobsApi::new(moray.clone(), TokenKey::new(&cfg.token_secret))
                .with_max_jobs(cfg.account_max_jobs);
        let picker = Arc::new(Picker::new(
            system,
            cfg.heartbeat_max_age,
            cfg.max_utilization_pct,
        ));
        let sharks = storage_connector(&cfg, tls);
        Frontdoor {
            throttle: Arc::new(Semaphore::new(cfg.max_concurrency)),
            in_flight: crate::limits::InFlight::default(),
            jobs,
            cfg: Arc::new(cfg),
            moray,
            accounts,
            auth,
            picker,
            sharks,
            metrics: Arc::new(Metrics::new()),
            dirs: manta_util::cache::TtlCache::new(DIR_CACHE_ENTRIES),
            background: TaskTracker::new(),
            access: crate::reports::AccessLog::default(),
        }
    }

    /// A front door whose Moray is never reached and whose placement knows exactly `nodes`
    /// (for the data path's tests).
    #[cfg(test)]
    pub(crate) async fn for_tests(cfg: Config, nodes: Vec<crate::picker::Node>) -> Arc<Frontdoor> {
        let moray = connect_moray(&cfg, &None)
            .await
            .expect("a single-shard ring needs no connection");
        let fd = Frontdoor::assemble(cfg, moray, None);
        fd.picker.set_nodes(nodes);
        Arc::new(fd)
    }

    /// The HTTP application: `/ping`, `/metrics`, and the Manta API for everything else.
    pub fn router(self: &Arc<Self>) -> Router {
        let api = Router::new()
            .fallback(crate::api::handle)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                crate::reports::record,
            ))
            .with_state(self.clone());
        let obs = Arc::new(Observer {
            service: "frontdoor",
            metrics: self.metrics.clone(),
        });
        with_observability(api, obs)
    }
}

fn tls_config(files: &crate::config::TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    manta_util::tls::server_config(&files.cert, &files.key).context("the TLS configuration")
}

/// A started front door.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where the S3 API listens, when enabled.
    pub s3_addr: Option<SocketAddr>,
    /// The service (for tests that look inside).
    pub frontdoor: Arc<Frontdoor>,
    /// Ends when the server has stopped.
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// Binds the listener and serves until `shutdown` (returns once listening).
///
/// # Errors
/// When the metadata tier does not answer, TLS files are bad, or the address cannot be bound.
pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<Running> {
    let tls = cfg.tls.as_ref().map(tls_config).transpose()?;
    let drain = cfg.drain;
    let refresh = cfg.picker_refresh;
    let run_as = cfg.run_as.clone();
    let listen = cfg.listen;
    let s3_listen = cfg.s3.as_ref().map(|s| s.listen);
    let fd = Frontdoor::new(cfg, Duration::from_secs(60)).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let addr = listener.local_addr()?;
    let s3_listener = match s3_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("bind the S3 listener {a}"))?,
        ),
        None => None,
    };
    let s3_addr = s3_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    // Everything root's was read (keys, the token secret) and the ports are bound: root is not
    // needed again.
    manta_util::proc::run_as(run_as.as_deref()).context("drop root")?;
    let refresher = fd.picker.spawn_refresher(refresh, shutdown.clone());
    let repairer = fd.cfg.repair.enabled.then(|| {
        let holder = format!(
            "{}:{}:{addr}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim(),
            std::process::id()
        );
        let r = crate::repair::Repairer::new(fd.clone(), fd.cfg.repair.clone(), holder);
        tokio::spawn(r.run(shutdown.clone()))
    });
    let flusher = fd
        .cfg
        .reports
        .enabled
        .then(|| tokio::spawn(crate::reports::run_flusher(fd.clone(), shutdown.clone())));
    let app = fd.router();
    info!(%addr, tls = tls.is_some(), "front door listening (Manta API)");
    let s3_task = s3_listener.map(|l| {
        info!(addr = ?s3_addr, "front door listening (S3 API)");
        let obs = Arc::new(Observer {
            service: "frontdoor-s3",
            metrics: fd.metrics.clone(),
        });
        let app = with_observability(crate::s3::router(fd.clone()), obs);
        let opts = ServeOptions {
            drain,
            tls: tls.clone(),
        };
        tokio::spawn(serve(l, app, shutdown.clone(), opts))
    });
    let background = fd.background.clone();
    let task = tokio::spawn(async move {
        serve(listener, app, shutdown, ServeOptions { drain, tls }).await?;
        if let Some(t) = s3_task {
            t.await.context("the S3 server task panicked")??;
        }
        refresher.abort();
        if let Some(r) = repairer {
            // It stops at the shutdown signal, after giving up its lease.
            let _ = tokio::time::timeout(drain, r).await;
        }
        if let Some(f) = flusher {
            // It writes what it holds once more after the shutdown signal.
            let _ = tokio::time::timeout(drain, f).await;
        }
        background.close();
        if tokio::time::timeout(drain, background.wait())
            .await
            .is_err()
        {
            warn!("shutting down with discards of uncommitted uploads still running");
        }
        Ok(())
    });
    Ok(Running {
        addr,
        s3_addr,
        frontdoor: fd,
        task,
    })
}

/// Runs the front door until `shutdown`.
///
/// # Errors
/// As [`start`], or when serving fails.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<()> {
    let running = start(cfg, shutdown).await?;
    running.task.await.context("the server task panicked")?
}

/// How the front door talks to storage nodes: 2 s to connect (a PUT tries the next set of
/// nodes rather than wait), 10 s for a read's headers, the answer to a PUT (or the next chunk
/// of a read) within 120 s or the upload data timeout if longer, an hour for a multipart join;
/// up to 64 idle connections per node kept 30 s; over mutual TLS with the front door's region
/// identity when it has one.
fn storage_connector(cfg: &Config, tls: moray::Tls) -> storage_api::Connector {
    let mut b = storage_api::ClientBuilder::new()
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(10))
        .read_timeout(Some(cfg.data_timeout.max(Duration::from_secs(120))))
        .commit_timeout(Duration::from_secs(3600))
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64);
    if let Some(tls) = tls {
        b = b.tls(tls);
    }
    b.build()
}
