//! How each service of a region is started: the one place that turns a [`ServiceEntry`] of
//! the region config into a command line, a readiness check and an endpoint. The one-machine
//! region (`manta-adm up`), `manta-adm host run` and the systemd units of `manta-adm host
//! install` all start services from here; where their files live is the caller's
//! [`Placement`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Kind, RegionConfig, ServiceEntry, sock};

/// The host uid that the first jobs agent maps its containers' root to (the next agents use
/// the following 65,536-uid ranges).
pub const CONTAINER_UID_BASE: u32 = 100_000;

/// How to tell that a service is ready.
#[derive(Debug, Clone)]
pub enum Health {
    /// `GET url` answers 2xx.
    Http(String),
    /// A Manatee sitter: ready when its Postgres serves in its role (`/ready` answers 2xx);
    /// `/status` says why not.
    Sitter {
        /// The sitter's base URL.
        base: String,
    },
}

impl Health {
    /// The URL whose 2xx means ready.
    pub fn url(&self) -> String {
        match self {
            Health::Http(url) => url.clone(),
            Health::Sitter { base } => format!("{base}/ready"),
        }
    }
}

/// One service, ready to start.
#[derive(Debug, Clone)]
pub struct Service {
    /// Short name; also the subdirectory and log file name.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Program and arguments.
    pub argv: Vec<OsString>,
    /// Readiness check.
    pub health: Health,
    /// What `status` shows as its endpoint.
    pub endpoint: String,
    /// How long it may take to become ready.
    pub ready_within: Duration,
    /// The user it is started as, when not the one starting it (etcd, which cannot drop root
    /// itself; our own services that need no root take `--user` instead).
    pub exec_as: Option<String>,
}

/// The HTTP client that asks services whether they are ready, presenting the operator's
/// region identity (`tls`).
///
/// # Errors
/// When the client cannot be built.
pub fn probe_client(tls: &rustls::ClientConfig) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context as _;
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .tls_backend_preconfigured(tls.clone())
        .build()
        .context("make the HTTP client for health checks")
}

impl Service {
    /// Whether it answers its readiness check (through `probe`, see [`probe_client`]).
    pub async fn healthy(&self, probe: &reqwest::Client) -> bool {
        probe
            .get(self.health.url())
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// Where a host keeps the files of its services, and as whom they run.
pub trait Placement {
    /// Service `name`'s directory (its log, pid file, and data unless kept elsewhere).
    fn service_dir(&self, name: &str) -> PathBuf;
    /// Where service `name` keeps its data.
    fn data_dir(&self, name: &str) -> PathBuf;
    /// Service `name`'s region identity (`cert.pem`, `key.pem`, `ca.pem`).
    fn identity_dir(&self, name: &str) -> PathBuf;
    /// A shared secret's file.
    fn secret(&self, name: &str) -> PathBuf;
    /// The directory holding our binaries.
    fn bin(&self) -> &Path;
    /// The user our services that need no root become (`--user`), if any.
    fn service_user(&self) -> Option<&str>;
    /// etcd member `s`: its member name, data directory, the identity it reads (a copy its
    /// user can read when it runs unprivileged), and the user it is started as.
    fn etcd(&self, s: &ServiceEntry) -> EtcdPlacement;
    /// The front door's token secret.
    fn token_secret(&self, s: &ServiceEntry) -> PathBuf;
}

/// Where an etcd member keeps its data and identity.
#[derive(Debug, Clone)]
pub struct EtcdPlacement {
    /// Its member name (fixed once the member exists).
    pub member: String,
    /// Its data directory.
    pub data: PathBuf,
    /// The identity it serves with.
    pub tls: PathBuf,
    /// The user it is started as.
    pub user: Option<String>,
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The dataset directory of storage node `s`, when it is a `dir:` dataset.
pub fn dataset_dir(s: &ServiceEntry, at: &dyn Placement) -> Option<PathBuf> {
    match &s.dataset {
        Some(d) => d.strip_prefix("dir:").map(PathBuf::from),
        None => Some(at.data_dir(&s.name).join("data")),
    }
}

/// The `--dataset` argument of storage node `s`.
fn dataset_arg(s: &ServiceEntry, at: &dyn Placement) -> String {
    match &s.dataset {
        Some(d) => d.clone(),
        None => format!("dir:{}", path(&at.data_dir(&s.name).join("data"))),
    }
}

/// How service `s` of `cfg` is started on its host, with its files where `at` says.
#[allow(clippy::too_many_lines)]
pub fn service(cfg: &RegionConfig, s: &ServiceEntry, at: &dyn Placement) -> Service {
    let addr = cfg.address(s);
    let listen = |port: u16| sock(addr, port);
    let etcd = cfg.etcd_endpoints().join(",");
    let exe = |name: &str| at.bin().join(name).into_os_string();
    let tls_dir = path(&at.identity_dir(&s.name));
    let run_as: Vec<OsString> = at
        .service_user()
        .map(|u| os(&["--user", u]))
        .unwrap_or_default();
    let internal = |argv: Vec<OsString>, health_path: &str, ready_within: Duration| {
        let endpoint = cfg.url(s, s.port);
        Service {
            name: s.name.clone(),
            kind: s.kind,
            argv,
            health: Health::Http(format!("{endpoint}{health_path}")),
            endpoint,
            ready_within,
            exec_as: None,
        }
    };
    // Services that need one peer of another kind talk to the one on their host, if any.
    let nearest_url = |kind: Kind| {
        cfg.nearest(kind, &s.host)
            .map(|p| cfg.url(p, p.port))
            .unwrap_or_default()
    };
    // The region's defaults for each account's share, to the services that apply them.
    let limit = |flag: &str, v: Option<String>| -> Vec<OsString> {
        v.map(|v| os(&[flag, &v])).unwrap_or_default()
    };
    let l = &cfg.limits;
    let near_frontdoor = cfg
        .nearest(Kind::Frontdoor, &s.host)
        .map(|f| frontdoor_url(cfg, f))
        .unwrap_or_default();
    match s.kind {
        Kind::Etcd => {
            let e = at.etcd(s);
            let id = manta_util::tls::Identity::in_dir(&e.tls);
            let client = cfg.url(s, s.port);
            let members: Vec<&ServiceEntry> = cfg.of(Kind::Etcd).collect();
            // A lone member has no peers to talk to; members of a cluster speak mutual TLS to
            // each other too.
            let peer_scheme = if members.len() > 1 { "https" } else { "http" };
            let peer_of = |m: &ServiceEntry| {
                format!(
                    "{peer_scheme}://{}",
                    sock(cfg.address(m), m.peer_port.unwrap_or_default())
                )
            };
            let member_name = |m: &ServiceEntry| {
                if m.name == s.name {
                    e.member.clone()
                } else {
                    m.name.clone()
                }
            };
            let cluster: Vec<String> = members
                .iter()
                .map(|m| format!("{}={}", member_name(m), peer_of(m)))
                .collect();
            let peer = peer_of(s);
            let mut argv = os(&[
                "etcd",
                "--name",
                &e.member,
                "--data-dir",
                &path(&e.data),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &cluster.join(","),
                "--initial-cluster-token",
                &format!("manta-{}", cfg.region.id),
                "--listen-metrics-urls",
                &format!("http://{}", listen(s.metrics_port.unwrap_or_default())),
                // Clients need a certificate of the region's CA.
                "--client-cert-auth",
                "--trusted-ca-file",
                &path(&id.ca),
                "--cert-file",
                &path(&id.cert),
                "--key-file",
                &path(&id.key),
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ]);
            if members.len() > 1 {
                argv.extend(os(&[
                    "--peer-client-cert-auth",
                    "--peer-trusted-ca-file",
                    &path(&id.ca),
                    "--peer-cert-file",
                    &path(&id.cert),
                    "--peer-key-file",
                    &path(&id.key),
                ]));
            }
            Service {
                name: s.name.clone(),
                kind: s.kind,
                argv,
                health: Health::Http(format!("{client}/health")),
                endpoint: client,
                ready_within: Duration::from_secs(30),
                exec_as: e.user,
            }
        }
        Kind::Manatee => {
            let pg = s.pg_port.unwrap_or_default();
            let mut argv = vec![exe("manatee-sitter")];
            argv.extend(os(&[
                "--etcd",
                &etcd,
                "--shard",
                &cfg.region.shard,
                "--data-dir",
                &path(&at.data_dir(&s.name)),
                "--ip",
                &addr.to_string(),
                "--pg-port",
                &pg.to_string(),
                "--sitter-port",
                &s.port.to_string(),
                "--tls-dir",
                &tls_dir,
                "--replication-password-file",
                &path(&at.secret("pg-replication")),
                "--moray-password-file",
                &path(&at.secret("pg-moray")),
            ]));
            // The other peers and Moray reach Postgres from their hosts' addresses.
            let mut others: Vec<String> = cfg
                .hosts
                .iter()
                .filter(|h| h.address != addr)
                .map(|h| match h.address {
                    std::net::IpAddr::V4(a) => format!("{a}/32"),
                    std::net::IpAddr::V6(a) => format!("{a}/128"),
                })
                .collect();
            others.dedup();
            if !others.is_empty() {
                argv.push("--pg-allow".into());
                argv.push(others.join(",").into());
            }
            let base = cfg.url(s, s.port);
            Service {
                name: s.name.clone(),
                kind: s.kind,
                argv,
                endpoint: format!("postgres {}, sitter {base}", listen(pg)),
                health: Health::Sitter { base },
                // A first start runs initdb on the primary and base backups on the others.
                ready_within: Duration::from_secs(120),
                exec_as: None,
            }
        }
        Kind::Moray => {
            let mut argv = vec![exe("moray")];
            argv.extend(os(&[
                "--listen",
                &listen(s.port),
                "--manatee-etcd",
                &etcd,
                "--manatee-shard",
                &cfg.region.shard,
                "--pg-user",
                manta_util::secret::PG_CLIENT_ROLE,
                "--pg-password-file",
                &path(&at.secret("pg-moray")),
                "--tls-dir",
                &tls_dir,
            ]));
            argv.extend(run_as);
            // Ready when the shard has a writable primary, which takes a first start's initdb
            // and base backups.
            internal(argv, "/health", Duration::from_secs(180))
        }
        Kind::Storage => {
            let domain = cfg.domain(s);
            let mut argv = vec![exe("storage-node")];
            argv.extend(os(&[
                "--dataset",
                &dataset_arg(s, at),
                "--storage-id",
                &cfg.storage_id(s),
                "--datacenter",
                &domain,
                "--listen",
                &listen(s.port),
                "--moray-etcd",
                &etcd,
                "--tls-dir",
                &tls_dir,
            ]));
            if s.retired {
                argv.push("--retired".into());
            }
            argv.extend(run_as);
            internal(argv, "/ping", Duration::from_secs(30))
        }
        Kind::Frontdoor => {
            let fd = frontdoor_url(cfg, s);
            let mut argv = vec![exe("frontdoor")];
            argv.extend(os(&[
                "--listen",
                &listen(s.port),
                "--etcd",
                &etcd,
                "--token-secret-file",
                &path(&at.token_secret(s)),
                "--s3-listen",
                &listen(s.s3_port.unwrap_or_default()),
                "--s3-region",
                &cfg.region.s3_region,
                "--internal-tls-dir",
                &tls_dir,
            ]));
            if !addr.is_loopback() {
                // Reached from other hosts: the public APIs speak TLS too, with the front
                // door's region certificate (its clients trust the region's CA).
                let id = manta_util::tls::Identity::in_dir(&at.identity_dir(&s.name));
                argv.extend(os(&[
                    "--tls-cert",
                    &path(&id.cert),
                    "--tls-key",
                    &path(&id.key),
                ]));
            }
            let n = |v: Option<u32>| v.map(|n| n.to_string());
            argv.extend(limit("--account-max-concurrency", n(l.concurrent_requests)));
            argv.extend(limit("--account-max-buckets", n(l.buckets)));
            argv.extend(limit("--account-max-jobs", n(l.jobs)));
            argv.extend(run_as);
            Service {
                name: s.name.clone(),
                kind: s.kind,
                argv,
                health: Health::Http(format!("{fd}/ping")),
                endpoint: format!("{fd} (S3: {})", s3_url(cfg, s)),
                ready_within: Duration::from_secs(90),
                exec_as: None,
            }
        }
        Kind::JobsSupervisor => {
            let mut argv = vec![exe("jobs-supervisor")];
            argv.extend(os(&[
                "--listen",
                &listen(s.port),
                "--moray-url",
                &nearest_url(Kind::Moray),
                "--etcd",
                &etcd,
                "--frontdoor-url",
                &near_frontdoor,
                "--tls-dir",
                &tls_dir,
            ]));
            argv.extend(limit("--account-max-tasks", l.tasks.map(|n| n.to_string())));
            argv.extend(run_as);
            internal(argv, "/ping", Duration::from_secs(30))
        }
        Kind::JobsAgent => {
            let node = s.storage.as_deref().and_then(|n| cfg.service(n));
            let (storage_id, storage_url, dataset) = match node {
                Some(n) => (
                    cfg.storage_id(n),
                    cfg.url(n, n.port),
                    dataset_dir(n, at).unwrap_or_default(),
                ),
                None => Default::default(),
            };
            let index = cfg
                .of(Kind::JobsAgent)
                .position(|a| a.name == s.name)
                .unwrap_or_default();
            let uid_base = CONTAINER_UID_BASE + 65_536 * u32::try_from(index).unwrap_or(0);
            let mut argv = vec![exe("jobs-agent")];
            argv.extend(os(&[
                "--listen",
                &listen(s.port),
                "--storage-id",
                &storage_id,
                "--dataset",
                &path(&dataset),
                "--storage-url",
                &storage_url,
                "--tls-dir",
                &tls_dir,
                "--frontdoor-url",
                &near_frontdoor,
                "--moray-url",
                &nearest_url(Kind::Moray),
                "--work-dir",
                &path(&at.data_dir(&s.name)),
                "--uid-base",
                &uid_base.to_string(),
            ]));
            argv.extend(limit("--max-task-output", l.task_output.clone()));
            argv.extend(limit("--image-registry", cfg.region.image_registry.clone()));
            internal(argv, "/ping", Duration::from_secs(30))
        }
    }
}

/// The Manta API URL of front door `s`: `http://` on loopback, `https://` elsewhere.
pub fn frontdoor_url(cfg: &RegionConfig, s: &ServiceEntry) -> String {
    let addr = cfg.address(s);
    let scheme = if addr.is_loopback() { "http" } else { "https" };
    format!("{scheme}://{}", sock(addr, s.port))
}

/// The S3 endpoint of front door `s`.
pub fn s3_url(cfg: &RegionConfig, s: &ServiceEntry) -> String {
    let addr = cfg.address(s);
    let scheme = if addr.is_loopback() { "http" } else { "https" };
    format!("{scheme}://{}", sock(addr, s.s3_port.unwrap_or_default()))
}

/// Every service of `host`, in start order.
pub fn host_services(cfg: &RegionConfig, host: &str, at: &dyn Placement) -> Vec<Service> {
    Kind::START_ORDER
        .iter()
        .flat_map(|k| cfg.of(*k).filter(|s| s.host == host))
        .map(|s| service(cfg, s, at))
        .collect()
}

/// Issues every service of `cfg` a key and certificate from `ca` into `<pki>/<service>`, for
/// its host's address (and `localhost` on loopback), replacing any it had.
///
/// # Errors
/// When a certificate cannot be made or written.
pub fn issue_identities(ca: &manta_pki::Ca, cfg: &RegionConfig, pki: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    for s in &cfg.services {
        let addr = cfg.address(s);
        let mut names = vec![addr.to_string()];
        if addr.is_loopback() {
            names.push("localhost".into());
        }
        ca.issue(&pki.join(&s.name), &s.name, s.kind.role(), &names)
            .with_context(|| format!("issue {}'s region identity", s.name))?;
    }
    Ok(())
}

/// Copies the identity in `from` to `to` (0600 files in a 0700 directory) and gives the copy
/// to `user`: for a program that runs as `user` and cannot read the region's key directory.
///
/// # Errors
/// When a file cannot be read, written or given.
pub fn copy_identity(from: &Path, to: &Path, user: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt as _;
    let (a, b) = (
        manta_util::tls::Identity::in_dir(from),
        manta_util::tls::Identity::in_dir(to),
    );
    std::fs::create_dir_all(to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))?;
    for (x, y) in [(&a.ca, &b.ca), (&a.cert, &b.cert), (&a.key, &b.key)] {
        let bytes = std::fs::read(x).with_context(|| format!("read {}", x.display()))?;
        manta_util::write_private(y, &bytes)?;
    }
    manta_util::proc::chown_tree(to, user)
        .with_context(|| format!("give {} to {user}", to.display()))
}

/// Makes the front doors' token secret at `path` on first use (an existing one is kept).
///
/// # Errors
/// When it cannot be written.
pub fn ensure_token_secret(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        manta_util::secret::ensure_password(path)?;
    }
    Ok(())
}
