//! The Moray server: HTTP+JSON RPCs in front of one shard's Postgres primary.
//!
//! # Layout
//! - `http`: routes and handlers; every database operation goes through one runner that bounds
//!   it with the query timeout and re-runs it on deadlocks.
//! - `db`: the bb8 pool of the current primary, error mapping, bound parameters.
//! - `manatee`: follows `/manatee/<shard>/state` in etcd and swaps the pool on failover.
//! - `buckets`: the catalog and per-bucket tables; schema changes.
//! - `objects`: record reads and writes inside a transaction.
//! - `query`: filters and sorts to SQL; record values to index columns.
//! - `triggers`: directory counts and the delete log.
//! - `sql`: the operator's raw SQL call.
//!
//! Start one in-process with [`spawn`] (tests, other crates' tests) or [`run`] (the binary).

mod buckets;
mod db;
mod http;
pub mod manatee;
mod objects;
mod query;
mod sql;
mod triggers;
mod vnodes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::db::{DbSettings, Primary};
use self::http::AppState;

/// Where the server finds its Postgres primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSource {
    /// A fixed Postgres URL (`postgresql://`, `postgres://` or `tcp://`).
    Static(String),
    /// Follow Manatee: the primary named in `/manatee/<shard>/state` in etcd.
    Manatee {
        /// etcd client endpoints.
        etcd: Vec<String>,
        /// Shard name.
        shard: String,
    },
}

/// Server configuration (see the `moray` binary for the flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where Postgres is.
    pub database: DatabaseSource,
    /// Most Postgres connections held at once.
    pub pool_size: u32,
    /// Bound on every database operation (and Postgres' `statement_timeout`): past it the
    /// request fails with a retryable `NoDatabasePeersError` instead of hanging.
    pub query_timeout: Duration,
    /// TCP connect timeout to Postgres, and the wait for a free pooled connection.
    pub connect_timeout: Duration,
    /// How long bucket configurations are cached. Another server's `updateBucket` is seen
    /// after at most this long.
    pub bucket_cache_ttl: Duration,
    /// How long in-flight requests may finish after shutdown begins.
    pub drain: Duration,
    /// The server's region identity: with it Moray serves mutual TLS to region certificates
    /// only (and `/sql`, when enabled, to operators only). Without it, plain HTTP to anyone
    /// (tests of Moray alone).
    pub tls: Option<manta_util::tls::Identity>,
    /// Serve `/sql` (arbitrary SQL as Moray's database user); off by default.
    pub enable_sql: bool,
    /// The Postgres role and password to log in with (Manatee's client role in a region). Without
    /// it, the user of the URL (or Manatee's state), with no password.
    pub pg_login: Option<manta_util::secret::PgLogin>,
    /// The user the server becomes once it has read its keys and bound its port (it needs root
    /// for nothing after that); `None` stays whoever started it.
    pub run_as: Option<String>,
}

impl Config {
    /// Defaults around a fixed Postgres URL, listening on an ephemeral loopback port.
    pub fn for_postgres(url: impl Into<String>) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: DatabaseSource::Static(url.into()),
            pool_size: 16,
            query_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            bucket_cache_ttl: Duration::from_secs(10),
            drain: Duration::from_secs(10),
            tls: None,
            enable_sql: false,
            pg_login: None,
            run_as: None,
        }
    }

    /// Defaults around Manatee's state in etcd.
    pub fn for_manatee(etcd: Vec<String>, shard: impl Into<String>) -> Config {
        Config {
            database: DatabaseSource::Manatee {
                etcd,
                shard: shard.into(),
            },
            ..Config::for_postgres("")
        }
    }
}

/// The SQL condition the server runs for a filter as a request gives it (`findObjects`,
/// `updateObjects`, `deleteMany`) on a bucket with this configuration, whose indexes named in
/// `reindexing` are still being filled, and how many parameters it binds. Not an API: public
/// for the fuzz targets (`crates/fuzz-targets`).
///
/// # Errors
/// As those calls: `InvalidQuery` for a filter that does not parse or a value that does not
/// fit its column, `NotIndexed` for a field the bucket does not (yet) index.
#[doc(hidden)]
pub fn compile_filter(
    config: &crate::types::BucketConfig,
    reindexing: &[&str],
    filter: &str,
) -> crate::Result<(String, usize)> {
    let schema = buckets::BucketSchema {
        name: "fuzz".into(),
        config: config.clone(),
        reindexing: reindexing.iter().map(|s| (*s).to_owned()).collect(),
        generation: 1,
        mtime: 0,
    };
    let f = objects::parse_filter(filter)?;
    let mut p = db::Params::new();
    let sql = query::compile(&schema, &f, &mut p)?;
    Ok((sql, p.typed().len()))
}

/// A bound, not yet running server.
pub struct Server {
    config: Config,
    listener: TcpListener,
}

impl Server {
    /// Binds the listening socket (so the caller knows the port before serving).
    ///
    /// # Errors
    /// When the address cannot be bound, or a static Postgres URL is malformed.
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        if let DatabaseSource::Static(url) = &config.database {
            db::normalise_pg_url(url).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?;
        }
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Server { config, listener })
    }

    /// The bound address.
    ///
    /// # Errors
    /// When the socket has none (never, once bound).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests.
    ///
    /// # Errors
    /// Only when the listener fails.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let metrics = Arc::new(manta_util::metrics::Metrics::new());
        let settings = DbSettings {
            pool_size: self.config.pool_size,
            connect_timeout: self.config.connect_timeout,
            query_timeout: self.config.query_timeout,
            bucket_cache_ttl: self.config.bucket_cache_ttl,
            login: self.config.pg_login.clone(),
        };
        let etcd_tls = crate::etcd::tls_options_of(self.config.tls.as_ref())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tls = match &self.config.tls {
            Some(id) => Some(manta_util::tls::internal_server_config(id)?),
            None => None,
        };
        // Everything root's was read (keys, the Postgres password) and the port is bound: root
        // is not needed again.
        manta_util::proc::run_as(self.config.run_as.as_deref())?;
        let primary = Arc::new(Primary::new(settings, metrics.clone()));
        let follower = match &self.config.database {
            DatabaseSource::Static(url) => {
                primary.set(Some(url)).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
                })?;
                None
            }
            DatabaseSource::Manatee { etcd, shard } => Some(tokio::spawn(manatee::follow(
                etcd.clone(),
                etcd_tls,
                shard.clone(),
                primary.clone(),
                shutdown.child_token(),
            ))),
        };
        let state = Arc::new(AppState {
            primary: primary.clone(),
        });
        let obs = Arc::new(manta_util::http::Observer {
            service: "moray",
            metrics,
        });
        let routes = http::Routes {
            roles: self.config.tls.is_some(),
            sql: self.config.enable_sql,
        };
        let app = manta_util::http::with_observability(http::router(state, routes), obs);
        tracing::info!(addr = %self.listener.local_addr()?, tls = tls.is_some(), sql = self.config.enable_sql, "moray listening");
        let opts = manta_util::http::ServeOptions {
            drain: self.config.drain,
            tls,
        };
        let r = manta_util::http::serve(self.listener, app, shutdown.clone(), opts).await;
        shutdown.cancel();
        if let Some(f) = follower {
            let _ = f.await;
        }
        let _ = primary.set(None);
        tracing::info!("moray stopped");
        r
    }
}

/// Binds and serves until `shutdown` is cancelled.
///
/// # Errors
/// When the address cannot be bound or the listener fails.
pub async fn run(config: Config, shutdown: CancellationToken) -> std::io::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}

/// A server running in the background of the current runtime; stopped when dropped.
pub struct RunningServer {
    addr: SocketAddr,
    scheme: &'static str,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// `http://127.0.0.1:<port>` (`https://` with a region identity).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client of this server.
    ///
    /// # Errors
    /// Never in practice (the URL is well-formed).
    pub fn client(&self) -> crate::Result<crate::MorayClient> {
        crate::MorayClient::new(&self.url())
    }

    /// Stops the server and waits for it to drain.
    ///
    /// # Errors
    /// The server's own error, if it failed.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(t) => t.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a server in the background (for tests and for other crates' tests).
///
/// # Errors
/// When binding fails.
pub async fn spawn(config: Config) -> std::io::Result<RunningServer> {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    Ok(RunningServer {
        addr,
        scheme,
        shutdown,
        task: Some(task),
    })
}
