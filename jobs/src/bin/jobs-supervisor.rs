//! `jobs-supervisor`: drives map/reduce jobs; one of any number of instances leads (etcd
//! election). See `jobs::supervisor`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use manta_util::logging::LogArgs;

/// The jobs supervisor.
#[derive(Debug, Parser)]
#[command(name = "jobs-supervisor", version)]
struct Args {
    /// Address for /ping and /metrics.
    #[arg(long, env = "MANTA_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Moray URL of the system shard (where the job records live).
    #[arg(long, env = "MANTA_MORAY_URL")]
    moray_url: String,
    /// etcd endpoints for the leader election (comma-separated).
    #[arg(long, env = "MANTA_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// The front door (archives are written through it with each job's token).
    #[arg(long, env = "MANTA_FRONTDOOR_URL")]
    frontdoor_url: String,
    /// Name of this instance in the election (default: a random one).
    #[arg(long, env = "MANTA_NAME")]
    name: Option<String>,
    /// How often each running job is looked at.
    #[arg(long, env = "MANTA_POLL", default_value = "200ms", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// An agent whose heartbeat is older than this is considered gone.
    #[arg(long, env = "MANTA_AGENT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    agent_timeout: Duration,
    /// Leadership lease, seconds.
    #[arg(long, env = "MANTA_LEASE_TTL", default_value_t = 3)]
    lease_ttl: i64,
    /// The supervisor's region identity (`cert.pem`, `key.pem`, `ca.pem`, made by
    /// `manta-adm`), presented to Moray over mutual TLS.
    #[arg(long, env = "MANTA_TLS_DIR")]
    tls_dir: Option<std::path::PathBuf>,
    /// Attempts per task on infrastructure failures.
    #[arg(long, env = "MANTA_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// Tasks one account may have dispatched or running at once over all its jobs (an
    /// account's own limit overrides it); the rest of its inputs wait their turn.
    #[arg(long, env = "MANTA_ACCOUNT_MAX_TASKS", default_value_t = jobs::supervisor::DEFAULT_MAX_TASKS)]
    account_max_tasks: u32,
    /// A job's open input is ended after this long without a new input.
    #[arg(long, env = "MANTA_INPUT_IDLE_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
    input_idle_timeout: Duration,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    run_as: manta_util::proc::RunAsArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    a.log.init();
    if a.etcd.is_empty() {
        bail!("--etcd needs at least one endpoint");
    }
    if a.lease_ttl < 1 || a.max_attempts < 1 {
        bail!("--lease-ttl and --max-attempts must be at least 1");
    }
    let mut cfg = jobs::supervisor::SupervisorConfig::new(&a.moray_url, a.etcd, &a.frontdoor_url);
    cfg.listen = a.listen;
    if let Some(n) = a.name {
        cfg.name = n;
    }
    cfg.poll = a.poll;
    cfg.agent_timeout = a.agent_timeout;
    cfg.lease_ttl = a.lease_ttl;
    cfg.max_attempts = a.max_attempts;
    cfg.account_max_tasks = a.account_max_tasks;
    cfg.input_idle = a.input_idle_timeout;
    cfg.tls = a.tls_dir.as_deref().map(manta_util::tls::Identity::in_dir);
    cfg.run_as = a.run_as.user;
    jobs::supervisor::run(cfg, manta_util::shutdown_on_signals()).await
}
