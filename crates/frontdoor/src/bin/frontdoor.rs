//! `frontdoor`: the Manta HTTP API server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use frontdoor::{Config, MoraySource, TlsFiles};
use manta_util::logging::LogArgs;

/// Serve the Manta HTTP API.
#[derive(Debug, Parser)]
#[command(name = "frontdoor", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MANTA_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Moray URL of a one-shard metadata tier (repeat for several instances of the shard).
    #[arg(long = "moray", env = "MANTA_MORAY", value_delimiter = ',')]
    moray: Vec<String>,
    /// etcd endpoints holding the shard ring (instead of --moray).
    #[arg(long = "etcd", env = "MANTA_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Address of the S3 API listener (no S3 API without it).
    #[arg(long, env = "MANTA_S3_LISTEN")]
    s3_listen: Option<SocketAddr>,
    /// Domain for virtual-hosted-style S3 requests (`<bucket>.<domain>`).
    #[arg(long, env = "MANTA_S3_DOMAIN", requires = "s3_listen")]
    s3_domain: Option<String>,
    /// Region name of the S3 API.
    #[arg(long, env = "MANTA_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// TLS certificate chain (PEM); plain HTTP without it.
    #[arg(long, env = "MANTA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "MANTA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The front door's region identity (`cert.pem`, `key.pem`, `ca.pem`, made by
    /// `manta-adm`), presented to Moray and the storage nodes over mutual TLS.
    #[arg(long, env = "MANTA_INTERNAL_TLS_DIR")]
    internal_tls_dir: Option<PathBuf>,
    /// Copies when a request names none.
    #[arg(long, env = "MANTA_DEFAULT_COPIES", default_value_t = 2)]
    default_copies: u32,
    /// Most copies a request may ask for.
    #[arg(long, env = "MANTA_MAX_COPIES", default_value_t = 6)]
    max_copies: u32,
    /// Requests served at once before `ThrottledError`.
    #[arg(long, env = "MANTA_MAX_CONCURRENCY", default_value_t = 2048)]
    max_concurrency: usize,
    /// Requests of one account in progress at once (an account's own limit overrides it).
    #[arg(long, env = "MANTA_ACCOUNT_MAX_CONCURRENCY", default_value_t = 256)]
    account_max_concurrency: u32,
    /// S3 buckets one account may own (an account's own limit overrides it).
    #[arg(long, env = "MANTA_ACCOUNT_MAX_BUCKETS", default_value_t = 100)]
    account_max_buckets: u32,
    /// Jobs one account may have running at once (an account's own limit overrides it).
    #[arg(long, env = "MANTA_ACCOUNT_MAX_JOBS", default_value_t = manta_jobs_api::api::DEFAULT_MAX_JOBS)]
    account_max_jobs: u32,
    /// Idle time after which an upload or download is cut.
    #[arg(long, env = "MANTA_DATA_TIMEOUT", default_value = "45s", value_parser = humantime::parse_duration)]
    data_timeout: Duration,
    /// Most entries in one directory.
    #[arg(long, env = "MANTA_MAX_DIRENTS", default_value_t = manta_types::MAX_DIRENTS)]
    max_dirents: u64,
    /// How often storage node heartbeats are re-read for placement.
    #[arg(long, env = "MANTA_PICKER_REFRESH", default_value = "5s", value_parser = humantime::parse_duration)]
    picker_refresh: Duration,
    /// Heartbeats older than this take a node out of placement.
    #[arg(long, env = "MANTA_HEARTBEAT_MAX_AGE", default_value = "60s", value_parser = humantime::parse_duration)]
    heartbeat_max_age: Duration,
    /// How long a looked-up account (and its keys), the bucket of an S3 object request and the
    /// parent directory of a Manta write are reused before they are read again.
    #[arg(long, env = "MANTA_ACCOUNT_CACHE_TTL", default_value = "2s", value_parser = humantime::parse_duration)]
    account_cache_ttl: Duration,
    /// File holding the secret for tokens issued to jobs (shared by all front doors).
    #[arg(long, env = "MANTA_TOKEN_SECRET_FILE")]
    token_secret_file: Option<PathBuf>,
    /// Serve private data over plain HTTP to non-loopback clients (testing only).
    #[arg(long, env = "MANTA_ALLOW_INSECURE_HTTP")]
    allow_insecure_http: bool,
    /// Take no part in repair (another front door may still repair).
    #[arg(long, env = "MANTA_NO_REPAIR")]
    no_repair: bool,
    /// How long a silent storage node's copies are waited for before the repairer copies
    /// them again elsewhere.
    #[arg(long, env = "MANTA_REPAIR_GRACE", default_value = "1h", value_parser = humantime::parse_duration)]
    repair_grace: Duration,
    /// Pause between repair passes over every object record.
    #[arg(long, env = "MANTA_REPAIR_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    repair_interval: Duration,
    /// Most bytes per second the repairer copies (repair and evacuation).
    #[arg(long, env = "MANTA_REPAIR_RATE", default_value_t = 50 * 1024 * 1024)]
    repair_rate: u64,
    /// How long the repair lease lasts without renewal (a front door that dies hands repair
    /// to another after this).
    #[arg(long, env = "MANTA_REPAIR_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    repair_lease: Duration,
    /// Age at which a multipart upload of the Manta API is swept: aborted if unfinished, and
    /// its parts directory and state removed (by the front door holding the repair lease).
    #[arg(long, env = "MANTA_UPLOAD_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    upload_max_age: Duration,
    /// Collect no access logs and write no usage reports.
    #[arg(long, env = "MANTA_NO_REPORTS")]
    no_reports: bool,
    /// Length of a report period (access logs, request and storage usage under
    /// `/:login/reports`).
    #[arg(long, env = "MANTA_REPORT_PERIOD", default_value = "1h", value_parser = humantime::parse_duration)]
    report_period: Duration,
    /// How often access log lines are written from memory to the metadata tier.
    #[arg(long, env = "MANTA_ACCESS_LOG_FLUSH", default_value = "60s", value_parser = humantime::parse_duration)]
    access_log_flush: Duration,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    run_as: manta_util::proc::RunAsArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    args.log.init();
    let moray = match (args.moray.is_empty(), args.etcd.is_empty()) {
        (false, true) => MoraySource::Single(args.moray),
        (true, false) => MoraySource::Etcd(args.etcd),
        _ => bail!("give exactly one of --moray or --etcd"),
    };
    let mut cfg = Config::new(args.listen, moray);
    cfg.tls = args
        .tls_cert
        .zip(args.tls_key)
        .map(|(cert, key)| TlsFiles { cert, key });
    cfg.internal_tls = args
        .internal_tls_dir
        .as_deref()
        .map(manta_util::tls::Identity::in_dir);
    cfg.run_as = args.run_as.user;
    cfg.default_copies = args.default_copies;
    cfg.max_copies = args.max_copies;
    cfg.max_concurrency = args.max_concurrency;
    cfg.account_max_concurrency = args.account_max_concurrency;
    cfg.account_max_buckets = args.account_max_buckets;
    cfg.account_max_jobs = args.account_max_jobs;
    cfg.data_timeout = args.data_timeout;
    cfg.allow_insecure_http = args.allow_insecure_http;
    cfg.picker_refresh = args.picker_refresh;
    cfg.s3 = args.s3_listen.map(|listen| frontdoor::S3Config {
        listen,
        domain: args.s3_domain,
        region: args.s3_region,
    });
    cfg.max_dirents = args.max_dirents;
    cfg.heartbeat_max_age = args.heartbeat_max_age;
    cfg.account_cache_ttl = args.account_cache_ttl;
    cfg.repair.enabled = !args.no_repair;
    cfg.repair.grace = args.repair_grace;
    cfg.repair.interval = args.repair_interval;
    cfg.repair.rate_bytes_per_sec = args.repair_rate;
    cfg.repair.lease_ttl = args.repair_lease;
    cfg.upload_max_age = args.upload_max_age;
    cfg.reports = frontdoor::reports::ReportConfig {
        enabled: !args.no_reports,
        period: args.report_period,
        flush: args.access_log_flush,
    };
    if args.report_period < Duration::from_secs(1) || args.access_log_flush.is_zero() {
        bail!("--report-period must be at least 1s and --access-log-flush above zero");
    }
    if args.repair_lease < Duration::from_secs(1) {
        bail!("--repair-lease must be at least 1s");
    }
    if args.repair_rate == 0 || args.repair_interval.is_zero() {
        bail!(
            "--repair-rate and --repair-interval must be above zero (use --no-repair to turn repair off)"
        );
    }
    if args.repair_grace < args.heartbeat_max_age {
        bail!("--repair-grace must be at least --heartbeat-max-age");
    }
    if let Some(f) = args.token_secret_file {
        cfg.token_secret = std::fs::read(&f).with_context(|| format!("read {}", f.display()))?;
        if cfg.token_secret.len() < 16 {
            bail!("{} holds fewer than 16 bytes", f.display());
        }
    }
    if cfg.default_copies == 0 || cfg.default_copies > cfg.max_copies {
        bail!("--default-copies must be between 1 and --max-copies");
    }
    frontdoor::run(cfg, manta_util::shutdown_on_signals()).await
}
