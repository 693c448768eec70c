//! `manatee-sitter`: runs one Postgres peer of a shard and takes part in its failover.
//! See the `manatee` crate docs for what it guarantees.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use manta_util::logging::LogArgs;

/// Runs one PostgreSQL peer (as its child, under the `postgres` user) and keeps it in the
/// shard's primary -> sync -> async chain, failing over automatically.
#[derive(Debug, Parser)]
#[command(name = "manatee-sitter", version)]
struct Args {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "MANTA_ETCD", default_value = "http://127.0.0.1:2379")]
    etcd: String,
    /// The shard this peer belongs to.
    #[arg(long, env = "MANTA_SHARD", default_value = "1")]
    shard: String,
    /// The peer's data dir (Postgres data, socket and log live below it).
    #[arg(long, env = "MANTA_DATA_DIR")]
    data_dir: PathBuf,
    /// The address Postgres and the sitter listen on (part of the peer's id).
    #[arg(long, env = "MANTA_IP", default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Postgres port.
    #[arg(long, env = "MANTA_PG_PORT", default_value_t = 5432)]
    pg_port: u16,
    /// The sitter's HTTP port (/ping, /metrics, /status, POST /rebuild).
    #[arg(long, env = "MANTA_SITTER_PORT", default_value_t = 12345)]
    sitter_port: u16,
    /// Directory of the Postgres binaries (default: the newest /usr/lib/postgresql/*/bin).
    #[arg(long, env = "MANTA_PG_BINDIR")]
    pg_bindir: Option<PathBuf>,
    /// Registration lease TTL: how soon the others notice this sitter is gone.
    #[arg(long, env = "MANTA_LEASE_TTL", default_value = "2s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// How often the lease is renewed.
    #[arg(long, env = "MANTA_KEEPALIVE", default_value = "500ms", value_parser = humantime::parse_duration)]
    keepalive: Duration,
    /// How long a primary whose Postgres died waits for the sync to take over before starting
    /// it again.
    #[arg(long, env = "MANTA_TAKEOVER_GRACE", default_value = "4s", value_parser = humantime::parse_duration)]
    takeover_grace: Duration,
    /// Postgres fsync (turn off only for tests).
    #[arg(long, env = "MANTA_PG_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pg_fsync: bool,
    /// Networks (CIDR) of the other peers and of Moray, allowed to connect to Postgres with a
    /// password (loopback and this peer's address always are). Repeat or comma-separate.
    #[arg(long, env = "MANTA_PG_ALLOW", value_delimiter = ',')]
    pg_allow: Vec<String>,
    /// File holding the replication role's password (the same on every peer of the shard).
    #[arg(long, env = "MANTA_REPLICATION_PASSWORD_FILE")]
    replication_password_file: PathBuf,
    /// File holding the password of Moray's role (`moray`), which the primary creates. Without
    /// it no client can log in to the shard's Postgres.
    #[arg(long, env = "MANTA_MORAY_PASSWORD_FILE")]
    moray_password_file: Option<PathBuf>,
    /// Extra Postgres setting NAME=VALUE (repeatable), e.g. shared_buffers=64MB.
    #[arg(long = "pg-setting", value_parser = parse_setting)]
    pg_settings: Vec<(String, String)>,
    /// An initdb'd data dir to copy instead of running initdb for the shard's first database.
    #[arg(long, env = "MANTA_INITDB_FROM")]
    initdb_from: Option<PathBuf>,
    #[command(flatten)]
    tls: manta_util::tls::ServerTlsArgs,
    #[command(flatten)]
    log: LogArgs,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))?;
    let k = k.trim();
    if k.is_empty()
        || !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Err(format!("{k:?} is not a setting name"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    args.log.init();
    if args.lease_ttl < Duration::from_secs(1) || args.keepalive * 2 > args.lease_ttl {
        bail!("--lease-ttl must be at least 1s and at least twice --keepalive");
    }
    let bindir = match args.pg_bindir {
        Some(b) => b,
        None => manta_util::proc::pg_bindir().context("pass --pg-bindir")?,
    };
    let replication_password = manta_util::secret::read_password(&args.replication_password_file)
        .context("the replication role's password")?;
    let client_password = args
        .moray_password_file
        .as_deref()
        .map(manta_util::secret::read_password)
        .transpose()
        .context("the Moray role's password")?;
    let mut cfg = manatee::sitter::SitterConfig::new(
        args.etcd.split(',').map(str::to_owned).collect(),
        &args.shard,
        args.data_dir,
        args.ip,
        args.pg_port,
        args.sitter_port,
        bindir,
        replication_password,
    );
    cfg.lease_ttl = args.lease_ttl;
    cfg.keepalive = args.keepalive;
    cfg.takeover_grace = args.takeover_grace;
    cfg.pg_fsync = args.pg_fsync;
    cfg.allow = args.pg_allow;
    cfg.client_password = client_password;
    cfg.pg_settings = args.pg_settings;
    cfg.initdb_from = args.initdb_from;
    cfg.tls = args.tls.identity();
    manatee::sitter::run(cfg, manta_util::shutdown_on_signals())
        .await
        .context("manatee-sitter")
}
