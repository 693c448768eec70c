//! The front door's configuration: one struct, built once at start-up and shared read-only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the metadata tier is.
#[derive(Debug, Clone)]
pub enum MoraySource {
    /// One shard, one Moray URL (or several instances of that shard).
    Single(Vec<String>),
    /// The shard ring stored in etcd (`/manta/ring`).
    Etcd(Vec<String>),
}

/// TLS certificate and key files (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// The S3 API's listener.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Address of the S3 listener.
    pub listen: SocketAddr,
    /// Domain for virtual-hosted-style requests (`<bucket>.<domain>`); path style only without.
    pub domain: Option<String>,
    /// Region name reported by `GetBucketLocation` and expected in SigV4 scopes.
    pub region: String,
}

/// Everything the front door needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the Manta API listener.
    pub listen: SocketAddr,
    /// TLS for the listener; plain HTTP without it.
    pub tls: Option<TlsFiles>,
    /// The front door's region identity, presented to Moray and the storage nodes (which
    /// serve mutual TLS). Without it only plain-HTTP services can be reached.
    pub internal_tls: Option<manta_util::tls::Identity>,
    /// The user the front door becomes once its keys are read and its ports bound; `None`
    /// stays whoever started it.
    pub run_as: Option<String>,
    /// The metadata tier.
    pub moray: MoraySource,
    /// Copies when a request names none (`durability-level`).
    pub default_copies: u32,
    /// Most copies a request may ask for.
    pub max_copies: u32,
    /// The largest chunked upload that gives no `max-content-length`.
    pub max_streaming_size: u64,
    /// Free space a node needs to be chosen for a chunked upload that gives no
    /// `max-content-length` (the upload may then grow to the smallest free space among the
    /// nodes chosen, up to `max_streaming_size`).
    pub chunked_reserve: u64,
    /// How long an upload or download may go without a byte before it is cut.
    pub data_timeout: Duration,
    /// Most entries in one directory.
    pub max_dirents: u64,
    /// Requests served at once; more are refused with `ThrottledError` (503).
    pub max_concurrency: usize,
    /// Requests of one account in progress at once, unless its own limits say otherwise;
    /// more are refused with `ThrottledError` (S3: `SlowDown`), 503.
    pub account_max_concurrency: u32,
    /// S3 buckets one account may own, unless its own limits say otherwise.
    pub account_max_buckets: u32,
    /// Jobs one account may have running at once, unless its own limits say otherwise; one
    /// more is refused with `ThrottledError`.
    pub account_max_jobs: u32,
    /// Storage nodes fuller than this percentage get no new objects.
    pub max_utilization_pct: u32,
    /// Heartbeats older than this take a node out of placement.
    pub heartbeat_max_age: Duration,
    /// How often the picker re-reads heartbeats.
    pub picker_refresh: Duration,
    /// Allowed difference between a signed request's `Date` and our clock.
    pub clock_skew: Duration,
    /// How long a looked-up account, the bucket of an S3 object request and the parent
    /// directory of a Manta write are reused before they are read again (a front door forgets
    /// its own bucket and directory removals at once).
    pub account_cache_ttl: Duration,
    /// Secret for tokens the front door issues (jobs act for their owner with them).
    pub token_secret: Vec<u8>,
    /// Serve private data over plain HTTP to non-loopback clients (off: such requests get
    /// `SecureTransportRequired`). Loopback clients may always use plain HTTP.
    pub allow_insecure_http: bool,
    /// How long in-flight requests may finish once shutdown begins.
    pub drain: Duration,
    /// The S3 API, when enabled.
    pub s3: Option<S3Config>,
    /// The repairer ([`crate::repair`]).
    pub repair: crate::repair::RepairConfig,
    /// Age at which a multipart upload of the Manta API is swept ([`crate::api::uploads::sweep`]).
    pub upload_max_age: Duration,
    /// Access logs and usage reports ([`crate::reports`]).
    pub reports: crate::reports::ReportConfig,
}

impl Config {
    /// A configuration with the original's defaults, listening on `listen`, over `moray`.
    pub fn new(listen: SocketAddr, moray: MoraySource) -> Config {
        Config {
            listen,
            tls: None,
            moray,
            default_copies: 2,
            max_copies: 6,
            max_streaming_size: 51_200 * 1024 * 1024,
            chunked_reserve: 1024 * 1024 * 1024,
            data_timeout: Duration::from_secs(45),
            max_dirents: manta_types::MAX_DIRENTS,
            max_concurrency: 2048,
            account_max_concurrency: 256,
            account_max_buckets: 100,
            account_max_jobs: manta_jobs_api::api::DEFAULT_MAX_JOBS,
            max_utilization_pct: 90,
            heartbeat_max_age: Duration::from_secs(60),
            picker_refresh: Duration::from_secs(5),
            clock_skew: Duration::from_secs(300),
            account_cache_ttl: Duration::from_secs(2),
            token_secret: uuid::Uuid::new_v4().as_bytes().to_vec(),
            allow_insecure_http: false,
            internal_tls: None,
            run_as: None,
            drain: Duration::from_secs(10),
            s3: None,
            repair: crate::repair::RepairConfig::default(),
            upload_max_age: Duration::from_secs(7 * 24 * 3600),
            reports: crate::reports::ReportConfig::default(),
        }
    }
}
