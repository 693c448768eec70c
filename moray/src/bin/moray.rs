//! `moray`: the key-value metadata server of one shard. See the `moray` crate docs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use manta_util::logging::LogArgs;
use moray::server::{Config, DatabaseSource};

/// Moray: buckets of JSON records over PostgreSQL, for one metadata shard.
#[derive(Debug, Parser)]
#[command(name = "moray", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MANTA_LISTEN", default_value = "127.0.0.1:2020")]
    listen: SocketAddr,
    /// A fixed Postgres primary (postgresql://user@host:port/db, or Manatee's tcp:// form).
    #[arg(long, env = "MANTA_PG_URL", conflicts_with_all = ["manatee_etcd", "manatee_shard"])]
    pg_url: Option<String>,
    /// Follow Manatee: etcd endpoints (comma-separated) holding /manatee/<shard>/state.
    #[arg(long, env = "MANTA_MANATEE_ETCD", requires = "manatee_shard")]
    manatee_etcd: Option<String>,
    /// Follow Manatee: the shard name.
    #[arg(long, env = "MANTA_MANATEE_SHARD", requires = "manatee_etcd")]
    manatee_shard: Option<String>,
    /// The Postgres role to log in as (default: the URL's user, or Manatee's `postgres`).
    #[arg(long, env = "MANTA_PG_USER", requires = "pg_password_file")]
    pg_user: Option<String>,
    /// File holding the role's password (a region's: `secrets/pg-moray`).
    #[arg(long, env = "MANTA_PG_PASSWORD_FILE", requires = "pg_user")]
    pg_password_file: Option<std::path::PathBuf>,
    /// Most Postgres connections at once.
    #[arg(long, env = "MANTA_PG_POOL_SIZE", default_value_t = 16)]
    pool_size: u32,
    /// Bound on every database operation; past it the request fails (retryably).
    #[arg(long, env = "MANTA_QUERY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    query_timeout: Duration,
    /// Postgres connect timeout, and the wait for a free pooled connection.
    #[arg(long, env = "MANTA_PG_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// How long bucket configurations are cached (other servers' updateBucket shows after it).
    #[arg(long, env = "MANTA_BUCKET_CACHE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    bucket_cache_ttl: Duration,
    #[command(flatten)]
    tls: manta_util::tls::ServerTlsArgs,
    #[command(flatten)]
    run_as: manta_util::proc::RunAsArgs,
    /// Serve `/sql` (arbitrary SQL as Moray's database user; over mutual TLS to operators
    /// only). Off by default.
    #[arg(long, env = "MANTA_ENABLE_SQL")]
    enable_sql: bool,
    /// Time in-flight requests get to finish on SIGTERM.
    #[arg(long, env = "MANTA_DRAIN", default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    #[command(flatten)]
    log: LogArgs,
}

fn config(args: Args) -> Result<Config> {
    let database = match (args.pg_url, args.manatee_etcd, args.manatee_shard) {
        (Some(url), None, None) => DatabaseSource::Static(url),
        (None, Some(etcd), Some(shard)) => {
            let etcd = moray::parse_endpoints(&etcd);
            if etcd.is_empty() || shard.is_empty() {
                bail!("--manatee-etcd needs at least one endpoint and --manatee-shard a name");
            }
            DatabaseSource::Manatee { etcd, shard }
        }
        _ => bail!("give either --pg-url, or --manatee-etcd and --manatee-shard"),
    };
    let pg_login = match (&args.pg_user, &args.pg_password_file) {
        (Some(user), Some(file)) => Some(
            manta_util::secret::PgLogin::from_file(user, file)
                .context("the Postgres role's password")?,
        ),
        _ => None,
    };
    if args.pool_size == 0 {
        bail!("--pool-size must be at least 1");
    }
    Ok(Config {
        listen: args.listen,
        database,
        pool_size: args.pool_size,
        query_timeout: args.query_timeout,
        connect_timeout: args.connect_timeout,
        bucket_cache_ttl: args.bucket_cache_ttl,
        drain: args.drain,
        tls: args.tls.identity(),
        enable_sql: args.enable_sql,
        pg_login,
        run_as: args.run_as.user,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    args.log.init();
    let config = config(args)?;
    moray::server::run(config, manta_util::shutdown_on_signals()).await?;
    Ok(())
}
