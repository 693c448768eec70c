//! A whole region on one machine, under one directory: what `manta-adm up|status|down|destroy`
//! manage.
//!
//! The region is etcd, one metadata shard of three Manatee peers (each a sitter running its own
//! Postgres), two Moray instances following the shard's primary, the shard ring in etcd, three
//! storage nodes in three failure domains, and the front door. Each service is a detached
//! process with its own subdirectory holding its data, its log (`<name>.log`) and its pid file.
//! Ports are chosen on the first `up` and kept in `region.json`, so running `up` again restarts
//! the same region, with its data, on the same endpoints.
//!
//! Some services' data must be reachable by users other than the one running `up`: Postgres
//! runs as the unprivileged `postgres` user (when `up` runs as root), and job tasks run in
//! user namespaces whose root is an unprivileged host uid, with the input objects and the
//! agent's files bind-mounted in. When those users cannot reach the region's directory (a
//! checkout in a 0700 home such as `/root`, or any `mktemp -d`), the Manatee peers', storage
//! nodes' and jobs agents' data are kept under `/var/lib/manta/regions/<region id>/<service>`
//! instead, linked from each service's subdirectory as `data`; logs, pids, `region.json` and
//! `env.sh` stay in the region's directory, and `destroy` removes both.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use manta_pki::{Ca, Identity, Role};
use manta_types::repair::RepairProgress;

use crate::config::{HostEntry, Kind, RegionConfig, RegionSection, ServiceEntry};
use crate::layout::{CONTAINER_UID_BASE, EtcdPlacement, Health, Placement, Service};
use crate::status::{NodeStatus, ServiceStatus};
use crate::supervise;
use manta_util::proc::{PG_USER, alive, signal};
use serde::{Deserialize, Serialize};

/// Format version of `region.json`.
const REGION_VERSION: u32 = 2;
/// Number of Manatee peers, storage nodes and Moray instances.
const PEERS: usize = 3;
const STORAGE_NODES: usize = 3;
const MORAYS: usize = 2;
/// The metadata shard's name.
const SHARD: &str = "1";
/// The region name the S3 API answers to (and signatures are scoped to).
const S3_REGION: &str = "us-east-1";

/// Ports of the region's services, fixed at the first `up`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ports {
    /// etcd client port.
    pub etcd_client: u16,
    /// etcd peer port.
    pub etcd_peer: u16,
    /// etcd metrics port.
    pub etcd_metrics: u16,
    /// Postgres port of each Manatee peer.
    pub pg: Vec<u16>,
    /// HTTP port of each Manatee sitter.
    pub sitter: Vec<u16>,
    /// Each Moray instance.
    pub moray: Vec<u16>,
    /// Each storage node.
    pub storage: Vec<u16>,
    /// The front door's Manta API.
    pub frontdoor: u16,
    /// The jobs supervisor (added after the first layout: filled in on open when missing).
    #[serde(default)]
    pub jobs_supervisor: u16,
    /// One jobs agent beside each storage node.
    #[serde(default)]
    pub jobs_agents: Vec<u16>,
    /// The front door's S3 API (added after the first layout: filled in on open when missing).
    #[serde(default)]
    pub s3: u16,
}

/// The persistent description of a region: written once, read on every later command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionFile {
    /// Format version of this file.
    pub version: u32,
    /// The ports.
    pub ports: Ports,
    /// The account made for the local user.
    #[serde(default)]
    pub login: Option<String>,
    /// The region's id (names its data root when the data lives outside the directory).
    #[serde(default = "uuid::Uuid::new_v4")]
    pub id: uuid::Uuid,
    /// Where the services whose data other users must reach keep it, when those users cannot
    /// reach the region's directory; decided on the first `up` and kept.
    #[serde(default)]
    pub data_root: Option<PathBuf>,
    /// Each account's default share of the region (as `[limits]` in a `region.toml`);
    /// applied by the next `up`.
    #[serde(default)]
    pub limits: crate::config::LimitsSection,
}

/// Where services' data goes when the users that must reach it cannot reach the region's
/// directory.
const DATA_ROOT_BASE: &str = "/var/lib/manta/regions";
/// The region's keys and certificates, under the region's directory (0700).
const PKI_DIR: &str = "pki";

/// The region's shared secrets (the Postgres roles' passwords), under the region's directory.
const SECRETS_DIR: &str = "secrets";

/// The region's CA, kept in `pki` (made on first use).
fn region_ca(pki: &Path, id: uuid::Uuid) -> Result<Ca> {
    Ca::open_or_create(pki, &format!("region {id}")).context("open the region's CA")
}

/// A region rooted at a directory.
#[derive(Debug)]
pub struct Region {
    dir: PathBuf,
    file: RegionFile,
    bin: PathBuf,
    /// Asks services whether they are ready (one client for every probe).
    probe: reqwest::Client,
    /// The operator's region identity, for every call `manta-adm` makes inside the region.
    adm_tls: std::sync::Arc<rustls::ClientConfig>,
}

fn free_port() -> Result<u16> {
    Ok(manta_util::unused_port()?)
}

fn ports(n: usize) -> Result<Vec<u16>> {
    (0..n).map(|_| free_port()).collect()
}

/// Makes `dir` (and what is in it) `user`'s, 0700: at once when it is new, by walking it only
/// when it is not yet theirs (a region made before the service user).
pub(crate) fn give_tree(dir: &Path, user: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let (uid, _) = manta_util::proc::user_ids(user)?;
    if fs::metadata(dir)?.uid() != uid {
        manta_util::proc::chown_tree(dir, user)
            .with_context(|| format!("give {} to {user}", dir.display()))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

impl Region {
    /// Opens the region at `dir`, creating its description (with fresh ports) on first use.
    ///
    /// # Errors
    /// When the directory or its description cannot be read or written, or was written by an
    /// incompatible version.
    pub fn open(dir: &Path) -> Result<Region> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        // Logs with request data, keys and env.sh live here: a new region's directory is its
        // owner's alone (data that other users run services as must reach then goes elsewhere,
        // see place_data). A region made before keeps its mode, and its data where it is.
        if !dir.join("region.json").exists() {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("make {} private", dir.display()))?;
        }
        Self::load(dir)
    }

    /// Opens the region at `dir`, which a `manta-adm up` must have made.
    ///
    /// # Errors
    /// When there is no region there, or as [`Region::open`].
    pub fn open_existing(dir: &Path) -> Result<Region> {
        if !dir.join("region.json").exists() {
            bail!(
                "no region in {} (no region.json): start one with `manta-adm up --dir {}`, or \
                 name its directory with --dir or MANTA_REGION_DIR",
                dir.display(),
                dir.display()
            );
        }
        Self::load(dir)
    }

    fn load(dir: &Path) -> Result<Region> {
        let dir = dir.canonicalize()?;
        let path = dir.join("region.json");
        let file = if path.exists() {
            let f: RegionFile =
                serde_json::from_slice(&fs::read(&path)?).context("read region.json")?;
            if f.version != REGION_VERSION {
                bail!(
                    "{} describes a region of layout {} (this manta-adm writes {REGION_VERSION}); \
                     stop it and move the directory away to start afresh",
                    path.display(),
                    f.version
                );
            }
            f
        } else {
            let file = RegionFile {
                version: REGION_VERSION,
                ports: Ports {
                    etcd_client: free_port()?,
                    etcd_peer: free_port()?,
                    etcd_metrics: free_port()?,
                    pg: ports(PEERS)?,
                    sitter: ports(PEERS)?,
                    moray: ports(MORAYS)?,
                    storage: ports(STORAGE_NODES)?,
                    frontdoor: free_port()?,
                    jobs_supervisor: free_port()?,
                    jobs_agents: ports(STORAGE_NODES)?,
                    s3: free_port()?,
                },
                login: None,
                id: uuid::Uuid::new_v4(),
                data_root: None,
                limits: crate::config::LimitsSection::default(),
            };
            fs::write(&path, serde_json::to_vec_pretty(&file)?)?;
            file
        };
        let bin = std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .context("locate manta-adm's directory")?;
        // The operator's own region identity: health checks reach the services that serve
        // mutual TLS with it.
        let pki = dir.join(PKI_DIR);
        let adm = Identity::in_dir(&pki.join("adm"));
        if !adm.cert.exists() {
            region_ca(&pki, file.id)?
                .issue(adm.dir(), "manta-adm", Role::Adm, &[])
                .context("issue manta-adm's region identity")?;
        }
        let adm_tls = manta_util::tls::internal_client_config(&adm)
            .context("load manta-adm's region identity")?;
        let probe = crate::layout::probe_client(&adm_tls)?;
        let mut region = Region {
            dir,
            file,
            bin,
            probe,
            adm_tls,
        };
        // Services added since the region was made get their ports now, once.
        let p = &mut region.file.ports;
        if p.jobs_supervisor == 0 || p.jobs_agents.len() != STORAGE_NODES {
            p.jobs_supervisor = free_port()?;
            p.jobs_agents = ports(STORAGE_NODES)?;
            region.save()?;
        }
        if region.file.ports.s3 == 0 {
            region.file.ports.s3 = free_port()?;
            region.save()?;
        }
        Ok(region)
    }

    fn save(&self) -> Result<()> {
        fs::write(
            self.dir.join("region.json"),
            serde_json::to_vec_pretty(&self.file)?,
        )?;
        Ok(())
    }

    /// The region's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The operator's region identity (`pki/adm`).
    pub fn adm_identity(&self) -> Identity {
        Identity::in_dir(&self.identity_dir("adm"))
    }

    /// How `manta-adm` reaches the region's Moray: with the operator's identity.
    pub fn adm_tls(&self) -> moray::Tls {
        Some(self.adm_tls.clone())
    }

    /// The etcd endpoint.
    pub fn etcd(&self) -> String {
        format!("https://127.0.0.1:{}", self.file.ports.etcd_client)
    }

    /// The URL of the region's first Moray.
    pub fn moray_url(&self) -> Option<String> {
        self.file
            .ports
            .moray
            .first()
            .map(|p| format!("https://127.0.0.1:{p}"))
    }

    /// The front door's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.file.ports.frontdoor)
    }

    /// The front door's S3 endpoint.
    pub fn s3_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.file.ports.s3)
    }

    /// The region as a region config: one host on loopback running every service, with the
    /// ports of `region.json` (what `host run` would start for it).
    pub fn config(&self) -> RegionConfig {
        let p = &self.file.ports;
        let host = "local";
        let entry = |name: String, kind: Kind, port: u16| ServiceEntry::new(name, kind, host, port);
        let mut services = vec![ServiceEntry {
            peer_port: Some(p.etcd_peer),
            metrics_port: Some(p.etcd_metrics),
            ..entry("etcd".into(), Kind::Etcd, p.etcd_client)
        }];
        for (i, (pg, sitter)) in p.pg.iter().zip(&p.sitter).enumerate() {
            services.push(ServiceEntry {
                pg_port: Some(*pg),
                ..entry(format!("manatee{}", i + 1), Kind::Manatee, *sitter)
            });
        }
        for (i, port) in p.moray.iter().enumerate() {
            services.push(entry(format!("moray{}", i + 1), Kind::Moray, *port));
        }
        for (i, port) in p.storage.iter().enumerate() {
            services.push(ServiceEntry {
                storage_id: Some(format!("{}.stor.local", i + 1)),
                domain: Some(format!("dc{}", i + 1)),
                ..entry(format!("storage{}", i + 1), Kind::Storage, *port)
            });
        }
        services.push(ServiceEntry {
            s3_port: Some(p.s3),
            ..entry("frontdoor".into(), Kind::Frontdoor, p.frontdoor)
        });
        services.push(entry(
            "jobs-supervisor".into(),
            Kind::JobsSupervisor,
            p.jobs_supervisor,
        ));
        for (i, port) in p.jobs_agents.iter().enumerate() {
            services.push(ServiceEntry {
                storage: Some(format!("storage{}", i + 1)),
                ..entry(format!("jobs-agent{}", i + 1), Kind::JobsAgent, *port)
            });
        }
        RegionConfig {
            limits: self.file.limits.clone(),
            region: RegionSection {
                id: self.file.id,
                shard: SHARD.into(),
                s3_region: S3_REGION.into(),
                pki: PKI_DIR.into(),
                secrets: SECRETS_DIR.into(),
                // The local user's account keeps the region's images: `mput -f img.tar
                // ~~/public/images/NAME` makes NAME usable as a phase's image.
                image_registry: Some(format!(
                    "/{}/public/images",
                    self.file.login.clone().unwrap_or_else(local_login)
                )),
            },
            hosts: vec![HostEntry {
                name: host.into(),
                address: std::net::IpAddr::from([127, 0, 0, 1]),
                domain: "dc1".into(),
                state_dir: self.dir.clone(),
            }],
            services,
        }
    }

    /// The services in start order.
    pub fn services(&self) -> Vec<Service> {
        crate::layout::host_services(&self.config(), "local", self)
    }

    /// Issues every service that serves or calls mutual TLS a new key and certificate from
    /// the region's CA (made on the first `up`), for loopback: storage nodes, the front door
    /// and the jobs agents.
    fn issue_identities(&self) -> Result<()> {
        let ca = region_ca(&self.dir.join(PKI_DIR), self.file.id)?;
        crate::layout::issue_identities(&ca, &self.config(), &self.dir.join(PKI_DIR))
    }

    /// Makes the passwords of the shard's Postgres roles on the first `up` (0600, in a 0700
    /// directory): `pg-replication` for the peers, `pg-moray` for Moray's role.
    fn ensure_secrets(&self) -> Result<()> {
        let dir = self.dir.join(SECRETS_DIR);
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        for name in ["pg-replication", "pg-moray"] {
            manta_util::secret::ensure_password(&self.secret(name))
                .with_context(|| format!("the region's secret {name}"))?;
        }
        Ok(())
    }

    fn sdir(&self, s: &Service) -> PathBuf {
        self.dir.join(&s.name)
    }

    /// The storage node `name`'s dataset.
    fn dataset(&self, name: &str) -> PathBuf {
        self.data_dir(name).join("data")
    }

    /// etcd's data directory: under the data root when the region has one (where
    /// `etcd/data` links to), unless an older region keeps it in `etcd/data` itself.
    fn etcd_data(&self) -> PathBuf {
        let in_dir = self.dir.join("etcd").join("data");
        let real_dir = fs::symlink_metadata(&in_dir).is_ok_and(|m| m.is_dir());
        match &self.file.data_root {
            Some(_) if !real_dir => self.data_dir("etcd"),
            _ => in_dir,
        }
    }

    /// The user etcd is started as: the service user when it can reach etcd's data (an older
    /// region's data in a directory out of its reach keeps etcd as root; `up` says so).
    fn etcd_user(&self) -> Option<String> {
        let user = self.service_user()?;
        self.etcd_unreachable(user)
            .is_none()
            .then(|| user.to_owned())
    }

    /// Why `user` cannot reach etcd's data directory, if it cannot.
    fn etcd_unreachable(&self, user: &str) -> Option<String> {
        let parent = self.etcd_data().parent().map(Path::to_path_buf)?;
        manta_util::proc::check_user_reaches(user, &parent).err()
    }

    /// Where etcd reads its key and certificates: its own region identity directory, or, when
    /// it runs as the service user, a copy beside its data that the user owns (the region's
    /// `pki` directory is root's alone).
    fn etcd_tls_dir(&self, as_service_user: bool) -> PathBuf {
        if as_service_user {
            self.etcd_data().with_file_name("etcd-tls")
        } else {
            self.identity_dir("etcd")
        }
    }

    /// Copies etcd's identity where etcd, running as `user`, reads it (0600 in 0700, `user`'s).
    fn copy_etcd_identity(&self, user: &str) -> Result<()> {
        crate::layout::copy_identity(&self.identity_dir("etcd"), &self.etcd_tls_dir(true), user)
    }

    /// Decides, on the first `up`, where the data that other users must reach goes: in the
    /// region's directory when the Postgres user and the containers' uids can reach it (or we
    /// are not root, so both run as us), else under [`DATA_ROOT_BASE`]. Says so when it goes
    /// elsewhere.
    fn place_data(&mut self) -> Result<()> {
        let container_uid = CONTAINER_UID_BASE.to_string();
        let service_user = self.service_user().map(str::to_owned);
        let reach = |dir: &Path| {
            manta_util::proc::check_user_reaches(PG_USER, dir)
                .and_then(|()| manta_util::proc::check_user_reaches(&container_uid, dir))
                .and_then(|()| match &service_user {
                    Some(u) => manta_util::proc::check_user_reaches(u, dir),
                    None => Ok(()),
                })
        };
        if self.file.data_root.is_none()
            && let Err(why) = reach(&self.dir)
        {
            // Short: job tasks' sockets live a few levels below (at most 107 bytes in all).
            let mut id = self.file.id.simple().to_string();
            id.truncate(12);
            let root = Path::new(DATA_ROOT_BASE).join(id);
            println!(
                "  this directory is out of reach of the users that Postgres and job tasks run \
                 as:\n    {why}\n  so the Manatee peers', storage nodes' and jobs agents' data \
                 go to {} (linked as */data; `manta-adm destroy` removes it)",
                root.display()
            );
            self.file.data_root = Some(root);
            self.save()?;
        }
        let Some(root) = self.file.data_root.clone() else {
            return Ok(());
        };
        // Every directory on the way must let those users through; each service makes (and
        // keeps private) its own directory below.
        for d in root.ancestors().collect::<Vec<_>>().into_iter().rev() {
            match fs::create_dir(d) {
                Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(0o755))?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("create {}", d.display())),
            }
        }
        reach(&root).map_err(|why| {
            anyhow::anyhow!("cannot keep the region's data in {}: {why}", root.display())
        })?;
        for s in self.services() {
            let own = self.data_dir(&s.name);
            if !own.starts_with(&root) {
                continue;
            }
            fs::create_dir_all(&own).with_context(|| format!("create {}", own.display()))?;
            let link = self.sdir(&s).join("data");
            fs::create_dir_all(self.sdir(&s))?;
            if fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(&own, &link)
                    .with_context(|| format!("link {}", link.display()))?;
            }
        }
        Ok(())
    }

    fn pid_of(&self, s: &Service) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.sdir(s).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    fn prepare(&self, s: &Service) -> Result<()> {
        let sdir = self.sdir(s);
        fs::create_dir_all(&sdir)?;
        // What a service that runs as the service user writes must be that user's.
        if let Some(user) = &s.exec_as {
            give_tree(&self.etcd_data(), user)?;
            self.copy_etcd_identity(user)?;
        }
        if s.kind == Kind::Storage
            && let Some(user) = self.service_user()
        {
            give_tree(&self.dataset(&s.name), user)?;
        }
        if s.kind == Kind::Frontdoor {
            crate::layout::ensure_token_secret(&sdir.join("token-secret"))?;
        }
        Ok(())
    }

    /// The pid of the `manta-adm supervise` process keeping `s` running, if there is one.
    fn supervisor_of(&self, s: &Service) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.sdir(s).join("supervisor.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// Starts a `manta-adm supervise` process that keeps `s` running (its own process group,
    /// so a Ctrl-C in the terminal that ran `up` reaches neither it nor the service); gives its
    /// pid, and the service's once it has started.
    fn spawn(&self, s: &Service) -> Result<(u32, Option<u32>)> {
        let sdir = self.sdir(s);
        let log = supervise::log_path(&sdir, &s.name);
        let out = fs::File::options()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log)?;
        // Logs hold request data: the service's owner's alone (also an older region's).
        fs::set_permissions(&log, fs::Permissions::from_mode(0o600))?;
        let _ = fs::remove_file(sdir.join("pid"));
        let mut cmd = Command::new(self.bin.join("manta-adm"));
        cmd.arg("supervise")
            .arg("--dir")
            .arg(&sdir)
            .arg("--name")
            .arg(&s.name);
        if let Some(user) = &s.exec_as {
            cmd.arg("--exec-as").arg(user);
        }
        cmd.arg("--")
            .args(&s.argv)
            .current_dir(&sdir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("start the supervisor of {}", s.name))?;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut pid = None;
        while pid.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            pid = self.pid_of(s);
        }
        Ok((child.id(), pid))
    }

    async fn healthy(&self, s: &Service) -> bool {
        s.healthy(&self.probe).await
    }

    /// What the service itself says is wrong, when it can say (a sitter's last error).
    async fn own_complaint(&self, s: &Service) -> Option<String> {
        let Health::Sitter { base } = &s.health else {
            return None;
        };
        let st: serde_json::Value = self
            .probe
            .get(format!("{base}/status"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        st.get("lastError")
            .and_then(|e| e.as_str())
            .map(|e| format!("{} reports: {e}", s.name))
    }

    /// The service's own account of a failure: the error lines near the end of its log (or
    /// its last lines when none looks like an error), and for a Manatee peer the same of
    /// Postgres's log.
    fn log_errors(&self, s: &Service) -> String {
        let mut logs = vec![self.sdir(s).join(format!("{}.log", s.name))];
        if s.kind == Kind::Manatee {
            logs.push(self.data_dir(&s.name).join("postgres.log"));
        }
        let mut out = String::new();
        for log in logs {
            let Ok(text) = fs::read_to_string(&log) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            let recent = &lines[lines.len().saturating_sub(200)..];
            // A program that gave up says why last (`Error: ...` and its causes): show that
            // whole; else the lines that look like errors.
            let errors: Vec<&str> = match recent.iter().rposition(|l| l.starts_with("Error: ")) {
                Some(at) => recent[at..]
                    .iter()
                    .copied()
                    .take_while(|l| !l.starts_with("Stack backtrace:"))
                    .filter(|l| !l.trim().is_empty())
                    .take(10)
                    .collect(),
                None => recent
                    .iter()
                    .copied()
                    .filter(|l| looks_like_error(l))
                    .collect(),
            };
            let (what, shown) = if errors.is_empty() {
                ("last lines of", &recent[recent.len().saturating_sub(10)..])
            } else if errors[0].starts_with("Error: ") {
                ("its error, in", &errors[..])
            } else {
                ("last errors in", &errors[errors.len().saturating_sub(10)..])
            };
            if shown.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "\n{what} {}:\n  {}",
                log.display(),
                shown.join("\n  ")
            ));
        }
        if out.is_empty() {
            out.push_str(" (its log is empty)");
        }
        out
    }

    async fn start_and_wait(&self, batch: &[Service]) -> Result<()> {
        let mut started = Vec::new();
        let since_ms = manta_types::time::now_ms();
        for s in batch {
            if let Some(sup) = self.supervisor_of(s) {
                println!("  {:<12} already running (supervisor pid {sup})", s.name);
            } else if let Some(pid) = self.pid_of(s) {
                println!(
                    "  {:<12} already running (pid {pid}, not supervised: `down` and `up` again to supervise it)",
                    s.name
                );
            } else {
                self.prepare(s)?;
                match self.spawn(s)? {
                    (_, Some(pid)) => println!("  {:<12} started (pid {pid})", s.name),
                    (sup, None) => println!("  {:<12} started (supervisor pid {sup})", s.name),
                }
            }
            started.push(s);
        }
        // Wait for the whole batch together, so that whichever service fails first is the one
        // reported, at once, with its own error.
        let since = Instant::now();
        let mut waiting: Vec<&Service> = started;
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for s in waiting {
                let exits = supervise::exits_since(&self.sdir(s), since_ms);
                let gone = self.supervisor_of(s).is_none() && self.pid_of(s).is_none();
                if self.healthy(s).await {
                    println!("  {:<12} healthy", s.name);
                } else if !exits.is_empty() || gone {
                    // Not left to restart behind the operator's back: `up` again retries.
                    self.stop(s);
                    let how = exits.first().map_or("exited", String::as_str);
                    bail!("{} failed to start: it {how}{}", s.name, self.log_errors(s));
                } else if since.elapsed() > s.ready_within {
                    let said = self
                        .own_complaint(s)
                        .await
                        .map(|c| format!("\n{c}"))
                        .unwrap_or_default();
                    bail!(
                        "{} failed to start: not ready after {:?}{said}{}",
                        s.name,
                        s.ready_within,
                        self.log_errors(s)
                    );
                } else {
                    still.push(s);
                }
            }
            waiting = still;
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// Starts every service that is not running, waits until each is healthy, prepares the
    /// metadata (ring, buckets) and the local user's account, and writes `env.sh`.
    ///
    /// # Errors
    /// When a service cannot start or does not become healthy in time (its log tail is shown).
    pub async fn up(&mut self) -> Result<()> {
        if let Some(user) = self.service_user() {
            manta_util::proc::ensure_system_user(user)
                .with_context(|| format!("make the system user {user} that services run as"))?;
        }
        self.place_data()?;
        if let Some(why) = self.service_user().and_then(|u| self.etcd_unreachable(u)) {
            println!("  etcd runs as root: {why}");
        }
        self.issue_identities()?;
        self.ensure_secrets()?;
        let services = self.services();
        let group = |kinds: &[Kind]| -> Vec<Service> {
            services
                .iter()
                .filter(|s| kinds.contains(&s.kind))
                .cloned()
                .collect()
        };
        println!("coordination:");
        self.start_and_wait(&group(&[Kind::Etcd])).await?;
        println!("metadata shard {SHARD} (Manatee: primary, sync, async):");
        self.start_and_wait(&group(&[Kind::Manatee])).await?;
        println!("metadata service (Moray, following the shard's primary):");
        self.start_and_wait(&group(&[Kind::Moray])).await?;
        let sharded = self.prepare_metadata().await?;
        println!("storage nodes (one per failure domain):");
        self.start_and_wait(&group(&[Kind::Storage])).await?;
        println!("front door:");
        self.start_and_wait(&group(&[Kind::Frontdoor])).await?;
        println!("jobs (a supervisor, and an agent beside each storage node):");
        self.start_and_wait(&group(&[Kind::JobsSupervisor, Kind::JobsAgent]))
            .await?;
        let admin = manta_accounts::AccountAdmin::new(sharded.system());
        let (login, key_id) = self.ensure_account(&admin).await?;
        self.file.login = Some(login.clone());
        self.save()?;
        let s3 = Self::ensure_s3_key(&admin, &login).await?;
        self.write_env(&login, &key_id, &s3)?;
        Ok(())
    }

    /// The account's first S3 access key, made on the first `up`.
    async fn ensure_s3_key(
        admin: &manta_accounts::AccountAdmin,
        login: &str,
    ) -> Result<manta_auth::S3Key> {
        let (account, _) = admin.get(login).await?;
        if let Some(k) = account.s3_keys.first() {
            return Ok(k.clone());
        }
        let k = admin.create_s3_key(login, None).await?;
        println!(
            "  created S3 access key {} for {login} (also in env.sh)",
            k.access_key_id
        );
        Ok(k)
    }

    /// Creates the shard ring (on the first `up`) and the metadata buckets; gives the client
    /// of the sharded metadata tier for what `up` does next.
    async fn prepare_metadata(&self) -> Result<moray::ShardedClient> {
        let cfg = self.config();
        ensure_metadata(
            cfg.etcd_endpoints(),
            &self.adm_identity(),
            &cfg.region.shard,
            cfg.moray_urls(),
        )
        .await
    }

    /// The local user's login and SSH public key (generating `~/.ssh/id_ed25519` if the user has
    /// no key), and an account for them.
    async fn ensure_account(
        &self,
        admin: &manta_accounts::AccountAdmin,
    ) -> Result<(String, String)> {
        let login = match &self.file.login {
            Some(l) => l.clone(),
            None => local_login(),
        };
        let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
        let ssh = home.join(".ssh");
        let existing = ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .map(|n| ssh.join(format!("{n}.pub")))
            .find(|p| p.exists() && p.with_extension("").exists());
        let pubkey = match existing {
            Some(p) => p,
            None => {
                fs::create_dir_all(&ssh)?;
                let key = ssh.join("id_ed25519");
                println!("  no SSH key found: generating {}", key.display());
                let st = Command::new("ssh-keygen")
                    .args([
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        &format!("{login}@manta"),
                        "-f",
                    ])
                    .arg(&key)
                    .status()
                    .context("run ssh-keygen (is openssh-client installed?)")?;
                if !st.success() {
                    bail!("ssh-keygen failed");
                }
                key.with_extension("pub")
            }
        };
        let line = fs::read_to_string(&pubkey)?;
        let key = manta_auth::AccountKey::from_openssh(line.trim(), None)?;
        match admin.get(&login).await {
            Ok((a, _)) => {
                if !a.keys.iter().any(|k| k.fingerprint == key.fingerprint) {
                    admin.add_key(&login, line.trim(), None).await?;
                    println!("  added {} to account {login}", pubkey.display());
                }
            }
            Err(manta_accounts::AdminError::NotFound(_)) => {
                admin.create(&login, &[line.trim().to_owned()]).await?;
                println!("  created account {login} with key {}", pubkey.display());
            }
            Err(e) => return Err(e.into()),
        }
        Ok((login, key.fingerprint))
    }

    fn write_env(&self, login: &str, key_id: &str, s3: &manta_auth::S3Key) -> Result<()> {
        let bin = self.dir.join("bin");
        let manta = self.bin.join("manta");
        if manta.exists() {
            let st = Command::new(&manta)
                .arg("install-links")
                .arg(&bin)
                .stdout(Stdio::null())
                .status();
            if !st.is_ok_and(|s| s.success()) {
                eprintln!(
                    "warning: could not make the mput/mget/... links in {}",
                    bin.display()
                );
            }
        }
        let q = |p: &Path| shell_quote(&p.display().to_string());
        let etcd = self.etcd();
        let moray = self.moray_url().unwrap_or_default();
        let env = format!(
            "# Source this file to use the region in {dir}:  . {dir}/env.sh\n\
             export MANTA_URL={url}\n\
             export MANTA_USER={login}\n\
             export MANTA_KEY_ID={key_id}\n\
             export PATH={bin}:{tools}:\"$PATH\"\n\
             # Operators' tools: manta-adm (this region without --dir), manatee-adm, moray-cli.\n\
             export MANTA_REGION_DIR={dir}\n\
             export MANTA_ETCD={etcd}\n\
             export MANATEE_ETCD={etcd}\n\
             export MANATEE_SHARD={SHARD}\n\
             export MORAY_URL={moray}\n\
             export MANTA_MORAY_ETCD={etcd}\n\
             # The operator's region identity: what the operators' tools present inside the region.\n\
             export MANTA_TLS_DIR={adm}\n\
             # The S3 API of the same store (aws, boto3, rclone, s3cmd and the SDKs read these).\n\
             export AWS_ENDPOINT_URL={s3url}\n\
             export AWS_ACCESS_KEY_ID={akid}\n\
             export AWS_SECRET_ACCESS_KEY={secret}\n\
             export AWS_REGION={S3_REGION}\n\
             export AWS_DEFAULT_REGION={S3_REGION}\n",
            dir = q(&self.dir),
            url = self.url(),
            s3url = self.s3_url(),
            akid = s3.access_key_id,
            secret = s3.secret_access_key,
            bin = q(&bin),
            tools = q(&self.bin),
            adm = q(&self.identity_dir("adm")),
        );
        // It holds the S3 secret: only its owner may read it.
        manta_util::write_private(&self.dir.join("env.sh"), env.as_bytes())?;
        Ok(())
    }

    /// One row per service.
    pub async fn status(&self) -> Vec<ServiceStatus> {
        let mut rows = Vec::new();
        for s in self.services() {
            let pid = self.pid_of(&s);
            let state = match pid {
                // Its supervisor waits to start it again.
                None if self.supervisor_of(&s).is_some() => "restarting",
                None => "stopped",
                Some(_) if self.healthy(&s).await => "healthy",
                Some(_) => "unhealthy",
            };
            rows.push(ServiceStatus {
                service: s.name.clone(),
                host: None,
                pid,
                state,
                endpoint: s.endpoint.clone(),
                user: pid.and_then(manta_util::proc::user_of),
            });
        }
        rows
    }

    /// The shard's roles and replication, as `manatee-adm pg-status` shows them.
    ///
    /// # Errors
    /// Why the shard did not answer.
    pub fn shard_status(&self) -> Result<String, String> {
        crate::status::shard_status(&self.bin, &self.etcd(), SHARD, &self.identity_dir("adm"))
    }

    /// Each storage node's last heartbeat and state, and the repairer's progress.
    pub async fn capacity(&self) -> (Vec<NodeStatus>, Option<RepairProgress>) {
        let urls = self.config().moray_urls();
        let repair = crate::status::repair(&urls, self.adm_tls()).await;
        let nodes = crate::status::capacity(&urls, self.adm_tls(), repair.as_ref()).await;
        (nodes, repair)
    }

    /// The whole `status` report.
    pub async fn report(&self) -> crate::status::Report {
        let shard = self.shard_status();
        let (storage, repair) = self.capacity().await;
        crate::status::Report {
            hosts: Vec::new(),
            services: self.status().await,
            shard: shard.as_ref().ok().cloned(),
            shard_error: shard.err(),
            storage,
            repair,
        }
    }

    /// Stops every service and deletes the region: its directory, and the Postgres files kept
    /// outside it.
    ///
    /// # Errors
    /// When something cannot be deleted.
    pub fn destroy(&self) -> Result<()> {
        self.down();
        if let Some(root) = &self.file.data_root {
            remove_tree(root)?;
            println!("removed {}", root.display());
        }
        remove_tree(&self.dir)?;
        println!("removed {}", self.dir.display());
        Ok(())
    }

    /// Stops every service, in reverse start order: SIGTERM, then SIGKILL after 20 s.
    pub fn down(&self) {
        for s in self.services().iter().rev() {
            if self.supervisor_of(s).is_none() && self.pid_of(s).is_none() {
                println!("{:<12} not running", s.name);
                continue;
            }
            println!("{:<12} {}", s.name, self.stop(s));
        }
    }

    /// Stops service `s`: its supervisor, which stops it (SIGTERM, SIGKILL after 20 s); or,
    /// for a service started before services were supervised, the service itself.
    fn stop(&self, s: &Service) -> &'static str {
        let grace = supervise::STOP_GRACE;
        let (pid, wait) = match self.supervisor_of(s) {
            Some(sup) => (sup, grace + Duration::from_secs(5)),
            None => match self.pid_of(s) {
                Some(pid) => (pid, grace),
                None => return "not running",
            },
        };
        let _ = signal(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + wait;
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let outcome = if alive(pid) {
            let _ = signal(pid, rustix::process::Signal::KILL);
            "killed (did not stop within 20 s)"
        } else {
            "stopped"
        };
        let _ = fs::remove_file(self.sdir(s).join("pid"));
        let _ = fs::remove_file(self.sdir(s).join("supervisor.pid"));
        outcome
    }
}

impl Placement for Region {
    fn service_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Its own subdirectory, or its directory under the data root when the region has one.
    fn data_dir(&self, name: &str) -> PathBuf {
        match &self.file.data_root {
            Some(root) => root.join(name),
            None => self.dir.join(name),
        }
    }

    /// `pki/<name>`.
    fn identity_dir(&self, name: &str) -> PathBuf {
        self.dir.join(PKI_DIR).join(name)
    }

    /// `secrets/<name>`, except the front door's token secret, kept beside it.
    fn secret(&self, name: &str) -> PathBuf {
        self.dir.join(SECRETS_DIR).join(name)
    }

    fn bin(&self) -> &Path {
        &self.bin
    }

    /// The `manta` system user when `manta-adm` runs as root (`up` makes it), else whoever
    /// runs `manta-adm`.
    fn service_user(&self) -> Option<&str> {
        manta_util::proc::is_root().then_some(manta_util::proc::SERVICE_USER)
    }

    fn etcd(&self, _: &ServiceEntry) -> EtcdPlacement {
        let user = self.etcd_user();
        EtcdPlacement {
            member: "region".into(),
            data: self.etcd_data(),
            tls: self.etcd_tls_dir(user.is_some()),
            user,
        }
    }

    fn token_secret(&self, s: &ServiceEntry) -> PathBuf {
        self.dir.join(&s.name).join("token-secret")
    }
}

/// Makes the metadata tier ready, as the operator `adm`: the shard ring in etcd (created with
/// `shard` served by the Morays at `urls`, or that shard's URLs brought up to date), and every
/// metadata bucket. Safe to run again; gives the client of the sharded metadata tier.
///
/// # Errors
/// When etcd or Moray cannot be reached or refuse.
pub async fn ensure_metadata(
    etcd: Vec<String>,
    adm: &Identity,
    shard: &str,
    urls: Vec<String>,
) -> Result<moray::ShardedClient> {
    let store =
        moray::ring::RingStore::new(etcd.clone()).with_tls(Some(moray::etcd::tls_options(adm)?));
    if let Some((ring, _)) = store.load().await.context("read the shard ring")? {
        // Morays added or retired since (and a region made before its services spoke TLS,
        // which names its Morays http://).
        if ring
            .shards
            .iter()
            .any(|s| s.name == shard && s.urls != urls)
        {
            let info = moray::ring::ShardInfo {
                name: shard.into(),
                urls: urls.clone(),
            };
            store
                .update(|r| {
                    r.upsert_shard(info.clone());
                    Ok(())
                })
                .await
                .context("update the shard ring's Moray URLs")?;
            println!(
                "  shard ring: shard {shard} is served by {}",
                urls.join(", ")
            );
        }
    } else {
        let ring = moray::ring::Ring::new(
            moray::ring::DEFAULT_VNODES,
            vec![moray::ring::ShardInfo {
                name: shard.into(),
                urls,
            }],
        )?;
        store.create(&ring).await.context("store the shard ring")?;
        println!(
            "  shard ring created ({} vnodes on shard {shard})",
            moray::ring::DEFAULT_VNODES
        );
    }
    let sharded = moray::ShardedClient::from_etcd_over(etcd, Some(adm)).await?;
    setup_buckets(&sharded).await?;
    println!("  metadata buckets ready");
    Ok(sharded)
}

/// Creates every Moray bucket the object store uses, accounts included (safe to run again).
///
/// # Errors
/// When Moray refuses.
pub async fn setup_buckets(sharded: &moray::ShardedClient) -> Result<()> {
    sharded
        .setup_manta_buckets()
        .await
        .context("create the object store's buckets")?;
    manta_accounts::ensure_bucket(&sharded.system())
        .await
        .context("create the accounts bucket")?;
    Ok(())
}

fn remove_tree(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// `s` as one word for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,=".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// True for a log line that reports a problem (our services' `WARN`/`ERROR` lines, Postgres's
/// `FATAL`/`PANIC`, a Rust panic, a tool's `error:`).
fn looks_like_error(line: &str) -> bool {
    const MARKS: [&str; 9] = [
        "ERROR", "WARN", "FATAL", "PANIC", "panicked", "error:", "Error:", "failed", "denied",
    ];
    MARKS.iter().any(|m| line.contains(m))
}

/// The local user's name as a valid login (`manta` when it is not one).
fn local_login() -> String {
    let name = std::env::var("USER")
        .ok()
        .or_else(|| {
            Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        })
        .unwrap_or_default();
    if manta_types::path::validate_login(&name).is_ok() {
        name
    } else {
        "manta".into()
    }
}
