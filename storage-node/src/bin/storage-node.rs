//! `storage-node`: serves object bytes from a dataset, heartbeats capacity into Moray, collects
//! garbage from the delete log and scrubs its files. See the crate docs of `storage_node`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use manta_util::logging::LogArgs;
use storage_node::dataset::DatasetSpec;
use storage_node::{Config, MorayConfig, gc, scrub};

/// A storage node of the object store.
#[derive(Debug, Parser)]
#[command(name = "storage-node", version)]
struct Args {
    /// Where objects live: `dir:/path` (or just a path) for a directory on any filesystem with
    /// user xattrs, `zfs:pool/name` for a ZFS filesystem (needs the `zfs` build feature).
    #[arg(long, env = "MANTA_DATASET")]
    dataset: DatasetSpec,
    /// This node's storage id, unique in the region (e.g. `1.stor.local`).
    #[arg(long, env = "MANTA_STORAGE_ID")]
    storage_id: String,
    /// This node's failure domain; the front door spreads copies over datacenters.
    #[arg(long, env = "MANTA_DATACENTER", default_value = "dc1")]
    datacenter: String,
    /// Address of the object API.
    #[arg(long, env = "MANTA_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// URL the front door uses to reach this node (default: http://<listen address>).
    #[arg(long, env = "MANTA_PUBLIC_URL")]
    public_url: Option<String>,
    /// Retired: serve the objects held here, but tell the front doors to place no new copies
    /// on this node (what an operator does before taking it away).
    #[arg(long, env = "MANTA_RETIRED")]
    retired: bool,
    /// Moray of a single-shard region (heartbeats, GC, quarantine records).
    #[arg(long, env = "MANTA_MORAY_URL", conflicts_with = "moray_etcd")]
    moray_url: Option<String>,
    /// etcd endpoints holding the Moray shard ring (comma-separated), for multi-shard regions.
    #[arg(long, env = "MANTA_MORAY_ETCD", value_delimiter = ',')]
    moray_etcd: Vec<String>,
    /// Largest object accepted, in bytes.
    #[arg(long, env = "MANTA_MAX_OBJECT_SIZE", default_value_t = 1 << 40)]
    max_object_size: u64,
    /// Abandon an upload when no bytes arrive for this long.
    #[arg(long, env = "MANTA_IDLE_TIMEOUT", default_value = "45s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Object transfers (uploads and downloads) served at once; more are refused with 503.
    #[arg(long, env = "MANTA_MAX_TRANSFERS", default_value_t = 1024)]
    max_transfers: usize,
    /// Time between capacity heartbeats.
    #[arg(long, env = "MANTA_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Time between GC passes.
    #[arg(long, env = "MANTA_GC_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    gc_interval: Duration,
    /// Delete-log entries younger than this are left for later (lets concurrent SnapLinks land).
    #[arg(long, env = "MANTA_GC_MIN_AGE", default_value = "5m", value_parser = humantime::parse_duration)]
    gc_min_age: Duration,
    /// Tombstoned objects are deleted this long after the day they were tombstoned.
    #[arg(long, env = "MANTA_TOMBSTONE_GRACE", default_value = "2days", value_parser = humantime::parse_duration)]
    tombstone_grace: Duration,
    /// Scrub read rate in bytes per second (0 disables scrub).
    #[arg(long, env = "MANTA_SCRUB_RATE", default_value_t = 32 * 1024 * 1024)]
    scrub_rate: u64,
    /// Pause between scrub passes.
    #[arg(long, env = "MANTA_SCRUB_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    scrub_interval: Duration,
    #[command(flatten)]
    tls: manta_util::tls::ServerTlsArgs,
    /// How long in-flight requests may finish after SIGTERM.
    #[arg(long, env = "MANTA_DRAIN", default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    run_as: manta_util::proc::RunAsArgs,
}

impl TryFrom<Args> for Config {
    type Error = anyhow::Error;
    fn try_from(a: Args) -> Result<Config> {
        if a.storage_id.trim().is_empty() {
            bail!("--storage-id must not be empty");
        }
        if a.idle_timeout.is_zero() || a.heartbeat_interval.is_zero() || a.gc_interval.is_zero() {
            bail!("timeouts and intervals must be greater than zero");
        }
        let mut c = Config::new(a.dataset, a.storage_id);
        c.datacenter = a.datacenter;
        c.listen = a.listen;
        c.public_url = a.public_url;
        c.retired = a.retired;
        c.tls = a.tls.identity();
        c.run_as = a.run_as.user;
        c.max_object_size = a.max_object_size;
        c.idle_timeout = a.idle_timeout;
        if a.max_transfers == 0 {
            bail!("--max-transfers must be at least 1");
        }
        c.max_transfers = a.max_transfers;
        c.drain = a.drain;
        c.heartbeat_interval = a.heartbeat_interval;
        c.moray = match (a.moray_url, a.moray_etcd.is_empty()) {
            (Some(url), _) => Some(MorayConfig::Single(url)),
            (None, false) => Some(MorayConfig::Etcd(a.moray_etcd)),
            (None, true) => None,
        };
        c.gc = gc::GcConfig {
            interval: a.gc_interval,
            min_age: a.gc_min_age,
            tombstone_grace: a.tombstone_grace,
            ..gc::GcConfig::default()
        };
        c.scrub = (a.scrub_rate > 0).then_some(scrub::ScrubConfig {
            rate_bytes_per_sec: a.scrub_rate,
            interval: a.scrub_interval,
        });
        Ok(c)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    args.log.init();
    // Every file and directory the node makes is its user's alone (object files 0600).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let config = Config::try_from(args)?;
    if config.moray.is_none() {
        tracing::warn!(
            "no Moray configured: no heartbeats (the front door will not place objects here) and no GC"
        );
    }
    let shutdown = manta_util::shutdown_on_signals();
    storage_node::run(config, shutdown)
        .await
        .context("storage node failed")
}
