//! A region across hosts, from its config file: `manta-adm region init|add|retire|bootstrap`
//! write and act on the config; `manta-adm host run` runs one host's services in the
//! foreground, each kept running by its own keeper; `manta-adm host install` writes systemd
//! units that do the same under systemd; `manta-adm status --config` asks every host.
//!
//! The config's directory also holds the region's keys (`pki/`) and shared secrets
//! (`secrets/`), which `region init` makes: copy the directory to each host (it is private to
//! root). Each host keeps its services' data, logs and pid files under its `state_dir`.

use std::collections::HashMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use manta_pki::{Ca, Identity, Role};
use manta_util::proc::PG_USER;

use crate::config::{self, HostEntry, Kind, RegionConfig, ServiceEntry};
use crate::layout::{self, EtcdPlacement, Placement, Service};
use crate::status::{HostStatus, Report, ServiceStatus};
use crate::supervise::{self, Kept};

/// A region config, where it was read from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The config.
    pub cfg: RegionConfig,
    /// The file.
    pub path: PathBuf,
    /// Its directory (relative paths in it are relative to this).
    pub base: PathBuf,
}

impl Loaded {
    /// Reads the config at `path`.
    ///
    /// # Errors
    /// As [`RegionConfig::load`].
    pub fn open(path: &Path) -> Result<Loaded> {
        let cfg = RegionConfig::load(path)?;
        let path = path
            .canonicalize()
            .with_context(|| format!("locate {}", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Loaded { cfg, path, base })
    }

    /// The region's key directory.
    pub fn pki(&self) -> PathBuf {
        RegionConfig::resolve(&self.base, &self.cfg.region.pki)
    }

    /// The operator's identity (`pki/adm`).
    pub fn adm(&self) -> Identity {
        Identity::in_dir(&self.pki().join("adm"))
    }

    fn secrets(&self) -> PathBuf {
        RegionConfig::resolve(&self.base, &self.cfg.region.secrets)
    }

    fn ca(&self) -> Result<Ca> {
        Ca::open_or_create(&self.pki(), &format!("region {}", self.cfg.region.id))
            .context("open the region's CA")
    }

    fn save(&self) -> Result<()> {
        self.cfg.check()?;
        self.cfg.save(&self.path)
    }
}

/// One host of a loaded config: where its services keep their files.
#[derive(Debug, Clone)]
pub struct HostPlacement {
    loaded: Loaded,
    host: HostEntry,
    bin: PathBuf,
    user: Option<String>,
}

impl HostPlacement {
    /// Host `name` of `loaded`, with our binaries in `bin`.
    ///
    /// # Errors
    /// When the config has no such host.
    pub fn new(loaded: Loaded, name: &str, bin: PathBuf) -> Result<HostPlacement> {
        let host = loaded
            .cfg
            .host(name)
            .with_context(|| {
                format!(
                    "{} lists no host {name} (it lists {})",
                    loaded.path.display(),
                    loaded
                        .cfg
                        .hosts
                        .iter()
                        .map(|h| h.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?
            .clone();
        let user = manta_util::proc::is_root().then(|| manta_util::proc::SERVICE_USER.to_owned());
        Ok(HostPlacement {
            loaded,
            host,
            bin,
            user,
        })
    }

    /// This host's services, in start order.
    pub fn services(&self) -> Vec<Service> {
        layout::host_services(&self.loaded.cfg, &self.host.name, self)
    }

    fn entries(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.loaded
            .cfg
            .services
            .iter()
            .filter(|s| s.host == self.host.name)
    }

    /// True when this host runs the region's first Moray: its units make the metadata ready.
    fn bootstraps(&self) -> bool {
        self.loaded
            .cfg
            .of(Kind::Moray)
            .next()
            .is_some_and(|m| m.host == self.host.name)
    }

    /// Makes what this host's services need before they start: the service user, the state
    /// directory (reachable by the Postgres user and the containers' uids), each service's
    /// directory, etcd's data and a copy of its identity for the service user, storage
    /// datasets owned by the service user. Checks the keys and secrets are here.
    ///
    /// # Errors
    /// The first thing missing or that cannot be made, naming it.
    pub fn prepare(&self) -> Result<()> {
        if let Some(user) = &self.user {
            manta_util::proc::ensure_system_user(user)
                .with_context(|| format!("make the system user {user} that services run as"))?;
        }
        let state = &self.host.state_dir;
        for d in state.ancestors().collect::<Vec<_>>().into_iter().rev() {
            match fs::create_dir(d) {
                Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(0o755))?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("create {}", d.display())),
            }
        }
        if manta_util::proc::is_root() {
            let agent_uid = layout::CONTAINER_UID_BASE.to_string();
            for user in [PG_USER, agent_uid.as_str()] {
                manta_util::proc::check_user_reaches(user, state).map_err(|why| {
                    anyhow::anyhow!(
                        "host {}'s state_dir {} is out of reach: {why}",
                        self.host.name,
                        state.display()
                    )
                })?;
            }
        }
        for name in ["pg-replication", "pg-moray", "token-secret"] {
            let f = self.loaded.secrets().join(name);
            ensure!(
                f.exists(),
                "the region's secret {} is missing: copy the secrets directory made by \
                 `manta-adm region init` beside {}",
                f.display(),
                self.loaded.path.display()
            );
        }
        for s in self.entries() {
            let id = Identity::in_dir(&self.identity_dir(&s.name));
            ensure!(
                id.cert.exists() && id.key.exists(),
                "{}'s key and certificate are missing from {}: `manta-adm region add` or \
                 `region init` issues them",
                s.name,
                self.identity_dir(&s.name).display()
            );
            fs::create_dir_all(self.service_dir(&s.name))?;
            let Some(user) = &self.user else {
                continue;
            };
            match s.kind {
                Kind::Etcd => {
                    let e = self.etcd(s);
                    crate::region::give_tree(&e.data, user)?;
                    layout::copy_identity(&self.identity_dir(&s.name), &e.tls, user)?;
                }
                Kind::Storage => {
                    if let Some(d) = layout::dataset_dir(s, self) {
                        crate::region::give_tree(&d, user)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Placement for HostPlacement {
    fn service_dir(&self, name: &str) -> PathBuf {
        self.host.state_dir.join(name)
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.host.state_dir.join(name)
    }

    fn identity_dir(&self, name: &str) -> PathBuf {
        self.loaded.pki().join(name)
    }

    fn secret(&self, name: &str) -> PathBuf {
        self.loaded.secrets().join(name)
    }

    fn bin(&self) -> &Path {
        &self.bin
    }

    fn service_user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn etcd(&self, s: &ServiceEntry) -> EtcdPlacement {
        let dir = self.service_dir(&s.name);
        EtcdPlacement {
            member: s.name.clone(),
            data: dir.join("data"),
            tls: match &self.user {
                Some(_) => dir.join("tls"),
                None => self.identity_dir(&s.name),
            },
            user: self.user.clone(),
        }
    }

    fn token_secret(&self, _: &ServiceEntry) -> PathBuf {
        self.secret("token-secret")
    }
}

/// The directory holding manta-adm, and so the other binaries.
pub fn own_bin_dir() -> Result<PathBuf> {
    std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("locate manta-adm's directory")
}

/// `region init`: writes `region.toml` for `hosts` into `out`, with the region's CA, every
/// service's identity and the operator's, and the shared secrets.
///
/// # Errors
/// When `out` already holds a region, or anything cannot be written.
pub fn init(out: &Path, hosts: &[(String, IpAddr)], state_dir: &Path) -> Result<Loaded> {
    let path = out.join(config::FILE_NAME);
    ensure!(
        !path.exists(),
        "{} exists: a region is already described there",
        path.display()
    );
    fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    fs::set_permissions(out, fs::Permissions::from_mode(0o700))?;
    let cfg = config::layout(hosts, state_dir)?;
    cfg.save(&path)?;
    let loaded = Loaded::open(&path)?;
    let ca = loaded.ca()?;
    layout::issue_identities(&ca, &loaded.cfg, &loaded.pki())?;
    ca.issue(&loaded.pki().join("adm"), "manta-adm", Role::Adm, &[])
        .context("issue the operator's identity")?;
    let secrets = loaded.secrets();
    fs::create_dir_all(&secrets)?;
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700))?;
    for name in ["pg-replication", "pg-moray"] {
        manta_util::secret::ensure_password(&secrets.join(name))
            .with_context(|| format!("the region's secret {name}"))?;
    }
    layout::ensure_token_secret(&secrets.join("token-secret"))?;
    Ok(loaded)
}

/// `region add`: a new service of `kind` on `host` in the config, with free ports and its
/// identity issued. Gives its name.
///
/// # Errors
/// When the host is unknown or the config cannot be written.
pub fn add(loaded: &mut Loaded, kind: Kind, host: &str, storage: Option<String>) -> Result<String> {
    let name = config::add_service(&mut loaded.cfg, kind, host, storage)?;
    let s = loaded
        .cfg
        .service(&name)
        .cloned()
        .context("added service")?;
    let one = RegionConfig {
        services: vec![s],
        ..loaded.cfg.clone()
    };
    layout::issue_identities(&loaded.ca()?, &one, &loaded.pki())?;
    loaded.save()?;
    Ok(name)
}

/// `region retire`: a storage node is marked retired (it keeps serving reads, placement
/// stops choosing it); a Moray is taken out of the config and out of the shard ring (so this
/// needs etcd). Its jobs agent, for a storage node, stays.
///
/// # Errors
/// When there is no such service, it is of a kind that cannot be retired, or the ring cannot
/// be updated.
pub async fn retire(loaded: &mut Loaded, name: &str) -> Result<()> {
    let kind = loaded
        .cfg
        .service(name)
        .with_context(|| format!("no service {name} in the config"))?
        .kind;
    match kind {
        Kind::Storage => {
            for s in &mut loaded.cfg.services {
                if s.name == name {
                    s.retired = true;
                }
            }
        }
        Kind::Moray => {
            ensure!(
                loaded.cfg.of(Kind::Moray).count() > 1,
                "{name} is the region's last Moray"
            );
            loaded.cfg.services.retain(|s| s.name != name);
            // Clients stop using it before it stops.
            bootstrap(loaded)
                .await
                .context("take it out of the shard ring")?;
        }
        k => bail!(
            "a {} cannot be retired this way (storage nodes and Morays can)",
            k.as_str()
        ),
    }
    loaded.save()
}

/// `region bootstrap`: the shard ring (with the config's Morays) and the metadata buckets.
///
/// # Errors
/// When etcd or Moray cannot be reached.
pub async fn bootstrap(loaded: &Loaded) -> Result<()> {
    crate::region::ensure_metadata(
        loaded.cfg.etcd_endpoints(),
        &loaded.adm(),
        &loaded.cfg.region.shard,
        loaded.cfg.moray_urls(),
    )
    .await
    .map(|_| ())
}

/// The HTTP client that asks services whether they are ready, with the operator's identity.
fn probe_client(adm: &Identity) -> Result<reqwest::Client> {
    let tls = manta_util::tls::internal_client_config(adm).context("load the operator identity")?;
    layout::probe_client(&tls)
}

/// The running services of `host run`, by name, with how each was started.
type Running = HashMap<String, (Kept, Service)>;

/// `host run`: runs host `name`'s services in the foreground until SIGTERM or SIGINT, kind by
/// kind (each kind waited for until ready, or its readiness time, before the next starts),
/// keeping each running; makes the metadata ready once it has started a Moray. SIGHUP
/// reads the config again: services added to this host start, removed ones stop, changed ones
/// restart.
///
/// # Errors
/// When the host cannot be prepared or another `host run` runs it.
pub async fn run(config: &Path, name: &str) -> Result<()> {
    let at = HostPlacement::new(Loaded::open(config)?, name, own_bin_dir()?)?;
    at.prepare()?;
    let _lock = lock_host(&at.host.state_dir)?;
    let probe = probe_client(&at.loaded.adm())?;
    let mut signals = Signals::new()?;
    println!(
        "host {} of region {} ({}): {} services, state in {}",
        at.host.name,
        at.loaded.cfg.region.id,
        at.host.address,
        at.services().len(),
        at.host.state_dir.display()
    );
    let mut running = Running::new();
    let stopped = start_missing(&at, &mut running, &probe, &mut signals).await?;
    if let Some(why) = stopped {
        println!("{why}: stopping");
        stop_running(running).await;
        return Ok(());
    }
    let mut at = at;
    loop {
        match signals.next().await {
            "SIGHUP" => {
                println!("SIGHUP: reading {} again", at.loaded.path.display());
                let fresh = match Loaded::open(&at.loaded.path)
                    .and_then(|l| HostPlacement::new(l, name, at.bin.clone()))
                    .and_then(|h| h.prepare().map(|()| h))
                {
                    Ok(h) => h,
                    Err(e) => {
                        println!("  kept the running services: {e:#}");
                        continue;
                    }
                };
                let wanted: HashMap<String, Vec<std::ffi::OsString>> = fresh
                    .services()
                    .into_iter()
                    .map(|s| (s.name, s.argv))
                    .collect();
                let stale: Vec<String> = running
                    .iter()
                    .filter(|(n, (_, svc))| wanted.get(*n) != Some(&svc.argv))
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in stale {
                    if let Some((k, _)) = running.remove(&n) {
                        tokio::task::spawn_blocking(move || k.stop(supervise::STOP_GRACE)).await?;
                        println!("  {n:<16} stopped");
                    }
                }
                at = fresh;
                if let Some(why) = start_missing(&at, &mut running, &probe, &mut signals).await? {
                    println!("{why}: stopping");
                    break;
                }
            }
            why => {
                println!("{why}: stopping");
                break;
            }
        }
    }
    stop_running(running).await;
    Ok(())
}

async fn stop_running(running: Running) {
    // In reverse start order.
    let mut all: Vec<(usize, Kept)> = running
        .into_values()
        .map(|(k, svc)| {
            let order = Kind::START_ORDER
                .iter()
                .position(|kind| *kind == svc.kind)
                .unwrap_or(0);
            (order, k)
        })
        .collect();
    all.sort_by_key(|(o, k)| (*o, k.name().to_owned()));
    supervise::stop_all(all.into_iter().map(|(_, k)| k).collect()).await;
}

/// Starts this host's services that are not running, kind by kind; gives the signal that
/// stopped the start, if one did.
async fn start_missing(
    at: &HostPlacement,
    running: &mut Running,
    probe: &reqwest::Client,
    signals: &mut Signals,
) -> Result<Option<&'static str>> {
    let services = at.services();
    for kind in Kind::START_ORDER {
        let batch: Vec<&Service> = services
            .iter()
            .filter(|s| s.kind == kind && !running.contains_key(&s.name))
            .collect();
        if batch.is_empty() {
            continue;
        }
        for s in &batch {
            let k = Kept::start(&(*s).into(), &at.service_dir(&s.name))?;
            println!("  {:<16} started", s.name);
            running.insert(s.name.clone(), (k, (*s).clone()));
        }
        let since = Instant::now();
        let mut waiting = batch;
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for s in waiting {
                if s.healthy(probe).await {
                    println!("  {:<16} healthy", s.name);
                } else if since.elapsed() > s.ready_within {
                    println!(
                        "  {:<16} not ready after {:?}; kept running, see {}",
                        s.name,
                        s.ready_within,
                        supervise::log_path(&at.service_dir(&s.name), &s.name).display()
                    );
                } else {
                    still.push(s);
                }
            }
            waiting = still;
            if !waiting.is_empty() {
                tokio::select! {
                    why = signals.next() => if why != "SIGHUP" { return Ok(Some(why)) },
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
        // A host that starts a Moray makes the metadata ready: the ring (created, or given the
        // config's Moray list when that changed) and the buckets. Safe on several hosts at once.
        if kind == Kind::Moray {
            let loaded = at.loaded.clone();
            tokio::spawn(async move {
                loop {
                    match bootstrap(&loaded).await {
                        Ok(()) => break,
                        Err(e) => {
                            println!("  metadata not ready yet ({e:#}); trying again in 2 s");
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                    }
                }
            });
        }
    }
    Ok(None)
}

/// SIGTERM, SIGINT and SIGHUP, as they come.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Holds `<state_dir>/host.lock` (flock) so that one `host run` runs a host at a time.
fn lock_host(state: &Path) -> Result<fs::File> {
    let path = state.join("host.lock");
    let f = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        bail!(
            "another manta-adm host run runs this host already (it holds {})",
            path.display()
        );
    }
    Ok(f)
}

/// A word for a systemd unit's `ExecStart=`.
fn unit_quote(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    if escaped.is_empty() || escaped.contains(|c: char| c.is_whitespace() || c == ';') {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// The unit name of service `name`.
fn unit_name(name: &str) -> String {
    format!("manta-{name}.service")
}

/// `host install`: prepares host `name` as `host run` would, and writes into `unit_dir` a
/// systemd unit per service (started again a second after it exits, ordered after the kinds
/// before it on this host, with its log in its directory) and `manta.target`, which starts
/// them all; on the host running the first Moray, `manta-bootstrap.service` makes the
/// metadata ready. Gives the units written.
///
/// # Errors
/// When the host cannot be prepared or a unit cannot be written.
pub fn install(config: &Path, name: &str, unit_dir: &Path, prepare: bool) -> Result<Vec<PathBuf>> {
    let at = HostPlacement::new(Loaded::open(config)?, name, own_bin_dir()?)?;
    if prepare {
        at.prepare()?;
    }
    fs::create_dir_all(unit_dir)?;
    let services = at.services();
    let mut written = Vec::new();
    let mut all_units = Vec::new();
    for s in &services {
        let before: Vec<String> = services
            .iter()
            .filter(|o| {
                Kind::START_ORDER.iter().position(|k| *k == o.kind)
                    < Kind::START_ORDER.iter().position(|k| *k == s.kind)
            })
            .map(|o| unit_name(&o.name))
            .collect();
        let dir = at.service_dir(&s.name);
        let log = supervise::log_path(&dir, &s.name);
        let exec: Vec<String> = s
            .argv
            .iter()
            .map(|a| unit_quote(&a.to_string_lossy()))
            .collect();
        // etcd is found on PATH by `host run`; a unit names it in full.
        let mut exec = exec;
        if s.kind == Kind::Etcd {
            exec[0] = which("etcd").unwrap_or_else(|| "/usr/bin/etcd".into());
        }
        let user = s
            .exec_as
            .as_deref()
            .map(|u| format!("User={u}\nGroup={u}\n"))
            .unwrap_or_default();
        let text = format!(
            "# Written by manta-adm host install from {config}; edit the config, not this.\n\
             [Unit]\n\
             Description=Manta {kind} {name} (region {region}, host {host})\n\
             Wants=network-online.target\n\
             After=network-online.target{after}\n\
             PartOf=manta.target\n\
             StartLimitIntervalSec=0\n\
             \n\
             [Service]\n\
             Type=simple\n\
             ExecStart={exec}\n\
             {user}WorkingDirectory={dir}\n\
             Restart=always\n\
             RestartSec=1\n\
             TimeoutStopSec={grace}\n\
             KillMode=mixed\n\
             LimitNOFILE=65536\n\
             UMask=0077\n\
             StandardOutput=append:{log}\n\
             StandardError=append:{log}\n\
             \n\
             [Install]\n\
             WantedBy=manta.target\n",
            config = at.loaded.path.display(),
            kind = s.kind.as_str(),
            name = s.name,
            region = at.loaded.cfg.region.id,
            host = at.host.name,
            after = before.iter().map(|u| format!(" {u}")).collect::<String>(),
            exec = exec.join(" "),
            dir = dir.display(),
            grace = supervise::STOP_GRACE.as_secs(),
            log = log.display(),
        );
        let path = unit_dir.join(unit_name(&s.name));
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        all_units.push(unit_name(&s.name));
        written.push(path);
    }
    if at.bootstraps() {
        let morays: Vec<String> = services
            .iter()
            .filter(|s| s.kind == Kind::Moray)
            .map(|s| unit_name(&s.name))
            .collect();
        let text = format!(
            "# Written by manta-adm host install from {config}.\n\
             [Unit]\n\
             Description=Manta region {region}: the shard ring and metadata buckets\n\
             After={morays}\n\
             PartOf=manta.target\n\
             StartLimitIntervalSec=0\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             RemainAfterExit=yes\n\
             ExecStart={adm} region bootstrap --config {config_q}\n\
             Restart=on-failure\n\
             RestartSec=2\n\
             \n\
             [Install]\n\
             WantedBy=manta.target\n",
            config = at.loaded.path.display(),
            config_q = unit_quote(&at.loaded.path.display().to_string()),
            region = at.loaded.cfg.region.id,
            morays = morays.join(" "),
            adm = unit_quote(&at.bin.join("manta-adm").display().to_string()),
        );
        let path = unit_dir.join("manta-bootstrap.service");
        fs::write(&path, text)?;
        all_units.push("manta-bootstrap.service".into());
        written.push(path);
    }
    let target = format!(
        "# Written by manta-adm host install from {config}.\n\
         [Unit]\n\
         Description=Manta services of host {host} (region {region})\n\
         Wants={units}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        config = at.loaded.path.display(),
        host = at.host.name,
        region = at.loaded.cfg.region.id,
        units = all_units.join(" "),
    );
    let path = unit_dir.join("manta.target");
    fs::write(&path, target)?;
    written.push(path);
    Ok(written)
}

/// `program`'s full path on `PATH`.
fn which(program: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

/// `status --config`: every host's services as their health checks answer, which hosts do not
/// answer at all, the shard, and the storage nodes.
///
/// # Errors
/// When the config or the operator identity cannot be read.
pub async fn status(config: &Path) -> Result<Report> {
    let loaded = Loaded::open(config)?;
    let probe = probe_client(&loaded.adm())?;
    let bin = own_bin_dir()?;
    let mut hosts = Vec::new();
    let mut services = Vec::new();
    for h in &loaded.cfg.hosts {
        let at = HostPlacement::new(loaded.clone(), &h.name, bin.clone())?;
        let entries: Vec<&ServiceEntry> = at.entries().collect();
        let reachable = reachable(h.address, &entries).await;
        let mut healthy_n = 0;
        let here = at.services();
        for s in &here {
            let state = if !reachable {
                "unreachable"
            } else if s.healthy(&probe).await {
                healthy_n += 1;
                "healthy"
            } else {
                "unhealthy"
            };
            // Known when the host's state directory is here (this host, or hosts sharing it).
            let pid = fs::read_to_string(at.service_dir(&s.name).join("pid"))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .filter(|p| manta_util::proc::alive(*p));
            services.push(ServiceStatus {
                service: s.name.clone(),
                host: Some(h.name.clone()),
                pid,
                state,
                endpoint: s.endpoint.clone(),
                user: pid.and_then(manta_util::proc::user_of),
            });
        }
        hosts.push(HostStatus {
            host: h.name.clone(),
            address: h.address.to_string(),
            domain: h.domain.clone(),
            reachable,
            healthy: healthy_n,
            services: here.len(),
        });
    }
    let shard = crate::status::shard_status(
        &bin,
        &loaded.cfg.etcd_endpoints().join(","),
        &loaded.cfg.region.shard,
        &loaded.pki().join("adm"),
    );
    let tls = manta_util::tls::internal_client_of(Some(&loaded.adm()))?;
    let urls = loaded.cfg.moray_urls();
    let repair = crate::status::repair(&urls, tls.clone()).await;
    let storage = crate::status::capacity(&urls, tls, repair.as_ref()).await;
    Ok(Report {
        hosts,
        services,
        shard: shard.as_ref().ok().cloned(),
        shard_error: shard.err(),
        storage,
        repair,
    })
}

/// Whether anything at `address` answers on one of `services`' ports within a second (a
/// refused connection is an answer: the host is up, the service is not).
async fn reachable(address: IpAddr, services: &[&ServiceEntry]) -> bool {
    for s in services {
        let addr = std::net::SocketAddr::new(address, s.port);
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(_)) => return true,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_words_are_quoted_for_systemd() {
        assert_eq!(unit_quote("/usr/bin/etcd"), "/usr/bin/etcd");
        assert_eq!(unit_quote("a b"), "\"a b\"");
        assert_eq!(unit_quote("100%"), "100%%");
        assert_eq!(unit_quote("$HOME"), "$$HOME");
        assert_eq!(unit_quote(""), "\"\"");
    }
}
