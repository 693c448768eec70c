//! `jobs-agent`: runs job tasks in OCI containers on one storage node. See `jobs::agent`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use manta_util::logging::LogArgs;

/// The jobs agent of one storage node.
#[derive(Debug, Parser)]
#[command(name = "jobs-agent", version)]
struct Args {
    /// Address for /ping and /metrics.
    #[arg(long, env = "MANTA_LISTEN", default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// The storage id of the node this agent runs beside.
    #[arg(long, env = "MANTA_STORAGE_ID")]
    storage_id: String,
    /// The node's dataset directory (as given to storage-node --dataset dir:PATH).
    #[arg(long, env = "MANTA_DATASET")]
    dataset: PathBuf,
    /// The node's object API URL.
    #[arg(long, env = "MANTA_STORAGE_URL")]
    storage_url: String,
    /// The front door URL.
    #[arg(long, env = "MANTA_FRONTDOOR_URL")]
    frontdoor_url: String,
    /// Moray URL of the system shard.
    #[arg(long, env = "MANTA_MORAY_URL")]
    moray_url: String,
    /// Work directory: container bundles, task sockets, runtime state.
    #[arg(long, env = "MANTA_WORK_DIR")]
    work_dir: PathBuf,
    /// The OCI runtime: any with runc's command line (`runc`, `crun`). runc is the default:
    /// on this platform's hybrid cgroup layout crun needs a host-wide change first
    /// (`reference/platform.md` §1), and with containers reused a start is rare.
    #[arg(
        long = "runtime",
        alias = "runc",
        env = "MANTA_RUNC",
        default_value = "runc"
    )]
    runc: PathBuf,
    /// The in-container tools binary (default: jobs-tool beside this binary).
    #[arg(long, env = "MANTA_TOOLS_BIN")]
    tools_bin: Option<PathBuf>,
    /// Tasks run at once.
    #[arg(long, env = "MANTA_SLOTS", default_value_t = 4)]
    slots: usize,
    /// First host uid/gid of the containers' user namespace (65536 ids from it).
    #[arg(long, env = "MANTA_UID_BASE", default_value_t = 100_000)]
    uid_base: u32,
    /// Most processes per task.
    #[arg(long, env = "MANTA_PIDS_LIMIT", default_value_t = 512)]
    pids_limit: u64,
    /// Most bytes one task may emit as outputs on this node (the phase's `disk` when that is
    /// less), e.g. `4GiB`.
    #[arg(long, env = "MANTA_MAX_TASK_OUTPUT", value_parser = manta_util::cli::parse_bytes)]
    max_task_output: Option<u64>,
    /// Wall-clock limit per task.
    #[arg(long, env = "MANTA_TASK_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
    task_timeout: Duration,
    /// How long a container waits for the next task of its job and phase before it is ended.
    #[arg(long, env = "MANTA_CONTAINER_IDLE", default_value = "5s", value_parser = humantime::parse_duration)]
    container_idle: Duration,
    /// A node fuller than this percentage stores no task output itself: outputs go through
    /// the front door instead (the front doors place uploads by the same 90% default).
    #[arg(long, env = "MANTA_MAX_UTILIZATION_PCT", default_value_t = 90)]
    max_utilization_pct: u32,
    /// Most entries in one directory (as the front doors' `--max-dirents`).
    #[arg(long, env = "MANTA_MAX_DIRENTS", default_value_t = manta_types::MAX_DIRENTS)]
    max_dirents: u64,
    /// The agent's region identity (`cert.pem`, `key.pem`, `ca.pem`, made by `manta-adm`),
    /// presented to its storage node over mutual TLS.
    #[arg(long, env = "MANTA_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Most bytes of unpacked OCI images this node keeps (images in use stay regardless), e.g.
    /// `4GiB`; an image larger than this is refused.
    #[arg(long, env = "MANTA_IMAGE_CACHE", default_value = "4GiB", value_parser = manta_util::cli::parse_bytes)]
    image_cache: u64,
    /// The region's image registry: the store directory whose objects phases name as
    /// `"image": "NAME"` (e.g. `/admin/public/images`, readable by every account). Without it
    /// only image paths are accepted.
    #[arg(long, env = "MANTA_IMAGE_REGISTRY")]
    image_registry: Option<String>,
    /// Where front doors reach this agent for `mlogin` sessions (`https://HOST:PORT`); by
    /// default its `--listen` address, when that names one host.
    #[arg(long, env = "MANTA_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// How often to look for tasks.
    #[arg(long, env = "MANTA_POLL", default_value = "100ms", value_parser = humantime::parse_duration)]
    poll: Duration,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    a.log.init();
    if a.slots == 0 || a.pids_limit < 8 {
        bail!("--slots must be at least 1 and --pids-limit at least 8");
    }
    let mut cfg = jobs::agent::AgentConfig::new(
        &a.storage_id,
        a.dataset,
        &a.storage_url,
        &a.frontdoor_url,
        &a.moray_url,
        a.work_dir,
    );
    cfg.listen = a.listen;
    cfg.runc = a.runc;
    if let Some(t) = a.tools_bin {
        cfg.tools_bin = t;
    }
    cfg.slots = a.slots;
    cfg.uid_base = a.uid_base;
    cfg.pids_limit = a.pids_limit;
    if let Some(n) = a.max_task_output {
        cfg.max_task_output = n;
    }
    cfg.task_timeout = a.task_timeout;
    cfg.container_idle = a.container_idle;
    cfg.max_utilization_pct = a.max_utilization_pct;
    cfg.max_dirents = a.max_dirents;
    cfg.poll = a.poll;
    cfg.image_cache = a.image_cache;
    cfg.image_registry = a.image_registry;
    cfg.advertise_url = a.advertise_url;
    cfg.tls = a.tls_dir.as_deref().map(manta_util::tls::Identity::in_dir);
    jobs::agent::run(cfg, manta_util::shutdown_on_signals()).await
}
