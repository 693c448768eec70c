//! A whole region for end-to-end tests: real Postgres, Moray, storage nodes and a front door,
//! each a real process of the workspace's binaries, on random loopback ports, in one temp dir.
//! Like a real region it has a CA of its own (in `pki/`): the storage nodes serve mutual TLS and
//! the front door reaches them with its own region certificate; [`TestRegion::identity`] issues
//! more (a jobs agent's, an operator's) and [`TestRegion::internal_http`] is an operator's
//! client of the internal endpoints.
//!
//! The binaries are found beside the running test (`target/<profile>/`); `cargo nextest run
//! --workspace` builds them. A test gets a [`TestRegion`] with an account whose SSH key is a
//! file in the region dir, and can kill and restart storage nodes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use manta_client::{ClientConfig, MantaClient};
use manta_pki::Ca;
pub use manta_pki::{Identity, Role};

use crate::postgres::TestPostgres;
use crate::process::{LoggedChild, TestDir, free_port, guarded_command};

/// How long a region's services get to answer their first `/ping`.
const PING_WITHIN: Duration = Duration::from_secs(60);

/// Path of a workspace binary built beside the running test.
///
/// # Errors
/// When it has not been built.
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the test binary")?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "{} is not built; run `cargo build --bins` (./run-tests builds every binary)",
            path.display()
        )
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct RegionOptions {
    /// Storage nodes, each in its own failure domain (`dc1`, `dc2`, ...) unless
    /// `datacenters` says otherwise.
    pub storage_nodes: usize,
    /// Failure domain of each storage node (cycled).
    pub datacenters: Vec<String>,
    /// Extra arguments for the front door.
    pub frontdoor_args: Vec<String>,
    /// Extra arguments for each storage node.
    pub storage_args: Vec<String>,
    /// Serve the front door over TLS with a self-signed certificate (made with `openssl`).
    pub tls: bool,
    /// Run Moray and the storage nodes over plain HTTP with no region identity
    /// (`--insecure-plain-http`): only the bench uses it, as the baseline that shows what
    /// internal mutual TLS costs. Never for tests of the region's security.
    pub internal_plain: bool,
    /// Extra PostgreSQL settings (`-c name=value`), e.g. for a bench that reads
    /// `pg_stat_statements`.
    pub pg_settings: Vec<(String, String)>,
}

impl Default for RegionOptions {
    fn default() -> Self {
        RegionOptions {
            storage_nodes: 3,
            datacenters: vec!["dc1".into(), "dc2".into(), "dc3".into()],
            frontdoor_args: Vec::new(),
            storage_args: Vec::new(),
            tls: false,
            internal_plain: false,
            pg_settings: Vec::new(),
        }
    }
}

/// A storage node of a test region.
#[derive(Debug)]
pub struct TestStorageNode {
    /// Its storage id.
    pub storage_id: String,
    /// Its failure domain.
    pub datacenter: String,
    /// Its object API.
    pub url: String,
    /// Its dataset directory.
    pub data: PathBuf,
    port: u16,
    args: Vec<String>,
    /// Its region identity (none: plain HTTP).
    tls_dir: Option<PathBuf>,
    child: Option<LoggedChild>,
}

/// An account of a test region, with its SSH key.
#[derive(Debug, Clone)]
pub struct TestAccount {
    /// Login.
    pub login: String,
    /// Private key file (its `.pub` is beside it).
    pub key: PathBuf,
    /// MD5 fingerprint (what `MANTA_KEY_ID` holds).
    pub key_id: String,
}

/// A running region.
#[derive(Debug)]
pub struct TestRegion {
    /// Postgres (one shard).
    pub pg: TestPostgres,
    /// Moray's URL.
    pub moray_url: String,
    /// The storage nodes.
    pub storage: Vec<TestStorageNode>,
    /// The front door's URL.
    pub url: String,
    /// The account created for the test.
    pub account: TestAccount,
    moray: LoggedChild,
    frontdoor: Option<LoggedChild>,
    frontdoor_args: Vec<String>,
    frontdoor_port: u16,
    moray_port: u16,
    adm_http: reqwest::Client,
    pki: PathBuf,
    dir: TestDir,
}

/// Every file below `dir` (following no links) whose bytes are `want`: where copies of an
/// object are, on a storage node's data directory.
pub fn files_holding(dir: &Path, want: &[u8]) -> Vec<PathBuf> {
    fn walk(dir: &Path, want: &[u8], out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                walk(&e.path(), want, out);
            } else if t.is_file() && std::fs::read(e.path()).is_ok_and(|b| b == want) {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, want, &mut out);
    out
}

/// Issues `name` an identity of `role` from the CA in `pki` (made on first use), valid for
/// loopback, in `pki/<name>`.
fn issue(pki: &Path, name: &str, role: Role) -> Result<Identity> {
    let ca = Ca::open_or_create(pki, "test-region")?;
    Ok(ca.issue(
        &pki.join(name),
        name,
        role,
        &["127.0.0.1".into(), "localhost".into()],
    )?)
}

/// Waits until the service `what` at `url`, run by `child`, answers `GET /ping` with a success,
/// for at most `within`.
///
/// # Errors
/// When the process exits first or `within` passes; the error holds its log tail.
pub async fn wait_ping(
    url: &str,
    child: &mut LoggedChild,
    what: &str,
    within: Duration,
) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .tls_danger_accept_invalid_certs(true)
        .build()?;
    wait_ping_with(&http, url, child, what, within).await
}

/// [`wait_ping`] through `http` (a client holding a region certificate, for a service that
/// serves mutual TLS).
///
/// # Errors
/// When the process exits first or `within` passes; the error holds its log tail.
pub async fn wait_ping_with(
    http: &reqwest::Client,
    url: &str,
    child: &mut LoggedChild,
    what: &str,
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.exited() {
            bail!("{what} exited with {st}; log:\n{}", child.log_tail(30));
        }
        let last = match http.get(format!("{url}/ping")).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "{what} did not answer /ping within {within:?} ({last}); log:\n{}",
                child.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP client of a region's internal endpoints holding `id` (its certificate presented,
/// only the region CA trusted).
///
/// # Errors
/// When the identity's files cannot be loaded.
pub fn internal_http(id: &Identity) -> Result<reqwest::Client> {
    let tls = manta_util::tls::internal_client_config(id)?;
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_backend_preconfigured((*tls).clone())
        .build()?)
}

impl TestStorageNode {
    fn spawn(&mut self, moray_url: &str, dir: &Path) -> Result<()> {
        let mut cmd = guarded_command(binary("storage-node")?, None);
        cmd.arg("--dataset")
            .arg(format!("dir:{}", self.data.display()))
            .args([
                "--storage-id",
                &self.storage_id,
                "--datacenter",
                &self.datacenter,
            ])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--moray-url", moray_url, "--heartbeat-interval", "1s"])
            .args(&self.args);
        match &self.tls_dir {
            Some(d) => cmd.arg("--tls-dir").arg(d),
            None => cmd.arg("--insecure-plain-http"),
        };
        let log = dir.join(format!("{}.log", self.storage_id));
        self.child = Some(LoggedChild::spawn(&self.storage_id, cmd, &log)?);
        Ok(())
    }

    /// Waits for the node just spawned to answer `/ping` (to `http`, an operator's client).
    async fn wait_up(&mut self, http: &reqwest::Client) -> Result<()> {
        let child = self.child.as_mut().context("the node is not running")?;
        wait_ping_with(http, &self.url, child, &self.storage_id, PING_WITHIN).await
    }

    /// Kills the node with SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// True while the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(LoggedChild::pid)
    }
}

impl TestRegion {
    /// Every file on the region's storage nodes whose bytes are `want`.
    pub fn copies_of(&self, want: &[u8]) -> Vec<PathBuf> {
        self.storage
            .iter()
            .flat_map(|n| files_holding(&n.data, want))
            .collect()
    }

    /// Starts a region with default options.
    ///
    /// # Errors
    /// When a service fails to start; its log tail is in the error.
    pub async fn start() -> Result<TestRegion> {
        TestRegion::start_with(RegionOptions::default()).await
    }

    /// Starts a region.
    ///
    /// # Errors
    /// When a service fails to start; its log tail is in the error.
    pub async fn start_with(opts: RegionOptions) -> Result<TestRegion> {
        let pg = TestPostgres::start_with(crate::postgres::PgOptions {
            settings: opts.pg_settings.clone(),
            ..Default::default()
        })
        .await?;
        let dir = TestDir::new("region")?;
        let pki = dir.path().join("pki");
        let adm = issue(&pki, "adm", Role::Adm)?;
        let adm_http = internal_http(&adm)?;
        let moray_port = free_port()?;
        let plain = opts.internal_plain;
        let internal = if plain { "http" } else { "https" };
        let moray_url = format!("{internal}://127.0.0.1:{moray_port}");
        let moray_id = (!plain)
            .then(|| issue(&pki, "moray", Role::Moray))
            .transpose()?;
        let mut moray = spawn_moray(&pg, moray_port, dir.path(), moray_id.as_ref())?;
        wait_ping_with(&adm_http, &moray_url, &mut moray, "moray", PING_WITHIN).await?;
        let out = adm_command(&pki, &moray_url)?.arg("setup").output()?;
        if !out.status.success() {
            bail!(
                "manta-adm setup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let mut storage = Vec::new();
        for i in 0..opts.storage_nodes {
            let dc = opts.datacenters[i % opts.datacenters.len().max(1)].clone();
            let data = dir.path().join(format!("stor{}", i + 1));
            std::fs::create_dir_all(&data)?;
            let mut node = TestStorageNode {
                storage_id: format!("{}.stor.test", i + 1),
                datacenter: dc,
                url: String::new(),
                data,
                port: free_port()?,
                args: opts.storage_args.clone(),
                tls_dir: (!plain)
                    .then(|| issue(&pki, &format!("stor{}", i + 1), Role::Storage))
                    .transpose()?
                    .map(|id| id.dir().to_owned()),
                child: None,
            };
            node.url = format!("{internal}://127.0.0.1:{}", node.port);
            node.spawn(&moray_url, dir.path())?;
            storage.push(node);
        }
        for node in &mut storage {
            node.wait_up(&adm_http).await?;
        }
        let adm_moray = moray::MorayClient::builder(moray_url.clone())
            .tls(Some(manta_util::tls::internal_client_config(&adm)?))
            .build()?;
        wait_heartbeats(&adm_moray, storage.iter().map(|n| n.storage_id.as_str())).await?;

        let account = make_account(dir.path(), &pki, &moray_url, "tester").await?;
        let frontdoor_port = free_port()?;
        let mut frontdoor_args = opts.frontdoor_args;
        if !plain {
            let frontdoor_id = issue(&pki, "frontdoor", Role::Frontdoor)?;
            frontdoor_args.extend([
                "--internal-tls-dir".into(),
                frontdoor_id.dir().display().to_string(),
            ]);
        }
        let scheme = if opts.tls {
            let (cert, key) = self_signed_cert(dir.path())?;
            frontdoor_args.extend([
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ]);
            "https"
        } else {
            "http"
        };
        let mut region = TestRegion {
            pg,
            moray_url,
            storage,
            url: format!("{scheme}://127.0.0.1:{frontdoor_port}"),
            account,
            moray,
            frontdoor: None,
            frontdoor_args,
            frontdoor_port,
            moray_port,
            adm_http,
            pki,
            dir,
        };
        region.start_frontdoor().await?;
        Ok(region)
    }

    async fn start_frontdoor(&mut self) -> Result<()> {
        let mut cmd = guarded_command(binary("frontdoor")?, None);
        cmd.args(["--listen", &format!("127.0.0.1:{}", self.frontdoor_port)])
            .args([
                "--moray",
                &self.moray_url,
                "--picker-refresh",
                "1s",
                "--heartbeat-max-age",
                "10s",
            ])
            .args(&self.frontdoor_args);
        // Tests see account and key changes at once, unless they ask for caching.
        if !self
            .frontdoor_args
            .iter()
            .any(|a| a == "--account-cache-ttl")
        {
            cmd.args(["--account-cache-ttl", "0s"]);
        }
        let mut child =
            LoggedChild::spawn("frontdoor", cmd, &self.dir.path().join("frontdoor.log"))?;
        wait_ping(&self.url, &mut child, "frontdoor", PING_WITHIN).await?;
        self.frontdoor = Some(child);
        Ok(())
    }

    /// The region's temp dir (logs, datasets, keys).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues `name` a region identity of `role` (valid for loopback), in `pki/<name>`.
    ///
    /// # Errors
    /// When the keys cannot be made or written.
    pub fn identity(&self, name: &str, role: Role) -> Result<Identity> {
        issue(&self.pki, name, role)
    }

    /// An operator's client of the internal endpoints (Moray, storage nodes).
    pub fn internal_http(&self) -> &reqwest::Client {
        &self.adm_http
    }

    /// An operator's client of the region's Moray.
    ///
    /// # Errors
    /// When the operator's identity cannot be loaded.
    pub fn moray(&self) -> Result<moray::ShardedClient> {
        let tls =
            manta_util::tls::internal_client_config(&Identity::in_dir(&self.pki.join("adm")))?;
        Ok(moray::ShardedClient::single_over(
            &self.moray_url,
            Some(tls),
        )?)
    }

    /// `manta-adm` acting on this region's Moray as the operator (`MANTA_MORAY` and
    /// `MANTA_TLS_DIR` set).
    ///
    /// # Errors
    /// When `manta-adm` is not built.
    pub fn manta_adm(&self) -> Result<Command> {
        adm_command(&self.pki, &self.moray_url)
    }

    /// Moray's port.
    pub fn moray_port(&self) -> u16 {
        self.moray_port
    }

    /// Moray's process id.
    pub fn moray_pid(&self) -> u32 {
        self.moray.pid()
    }

    /// The front door's process id.
    pub fn frontdoor_pid(&self) -> Option<u32> {
        self.frontdoor.as_ref().map(LoggedChild::pid)
    }

    /// Creates another account with its own key.
    ///
    /// # Errors
    /// When `manta-adm` fails.
    pub async fn add_account(&self, login: &str) -> Result<TestAccount> {
        make_account(self.dir.path(), &self.pki, &self.moray_url, login).await
    }

    /// Restarts a killed storage node on the same port and dataset, and waits for it.
    ///
    /// # Errors
    /// When it does not come back.
    pub async fn restart_storage_node(&mut self, i: usize) -> Result<()> {
        let moray = self.moray_url.clone();
        let dir = self.dir.path().to_owned();
        let node = &mut self.storage[i];
        node.kill();
        node.spawn(&moray, &dir)?;
        node.wait_up(&self.adm_http).await
    }

    /// The front door's log so far.
    pub fn frontdoor_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("frontdoor.log")).unwrap_or_default()
    }

    /// The configuration of a client acting as `account` against `url` (the region's front
    /// door, or something standing in front of it), with a 30 s timeout.
    pub fn client_config_at(&self, account: &TestAccount, url: &str) -> ClientConfig {
        ClientConfig {
            url: url.to_owned(),
            user: account.login.clone(),
            subuser: None,
            key_id: Some(account.key_id.clone()),
            insecure: false,
            ssh_dir: account
                .key
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            no_auth: false,
            timeout: Duration::from_secs(30),
        }
    }

    /// The configuration of a client acting as `account` against the region's front door.
    pub fn client_config(&self, account: &TestAccount) -> ClientConfig {
        self.client_config_at(account, &self.url)
    }

    /// A client acting as `account` against the region's front door, its key read from the
    /// account's `.ssh` dir.
    ///
    /// # Errors
    /// When the key cannot be loaded.
    pub async fn client(&self, account: &TestAccount) -> Result<MantaClient> {
        Ok(MantaClient::new(self.client_config(account)).await?)
    }

    /// Environment for the `manta` command line tools (`MANTA_URL`, `MANTA_USER`,
    /// `MANTA_KEY_ID`, and `HOME` pointing at a dir whose `.ssh` holds the key).
    pub fn cli_env(&self, account: &TestAccount) -> Vec<(String, String)> {
        let home = account
            .key
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        vec![
            ("MANTA_URL".into(), self.url.clone()),
            ("MANTA_USER".into(), account.login.clone()),
            ("MANTA_KEY_ID".into(), account.key_id.clone()),
            ("HOME".into(), home.display().to_string()),
            ("SSH_AUTH_SOCK".into(), String::new()),
            (
                "MANTA_TLS_INSECURE".into(),
                if self.url.starts_with("https") {
                    "1".into()
                } else {
                    String::new()
                },
            ),
        ]
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost, made with `openssl` in `dir`:
/// (certificate, key) PEM files.
///
/// # Errors
/// When `openssl` cannot be run or fails.
pub fn self_signed_cert(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("run openssl (is the openssl package installed?)")?;
    if !out.status.success() {
        bail!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((cert, key))
}

/// Moray over `pg`, serving mutual TLS with `tls` (plain HTTP without).
fn spawn_moray(
    pg: &TestPostgres,
    port: u16,
    dir: &Path,
    tls: Option<&Identity>,
) -> Result<LoggedChild> {
    let mut cmd = guarded_command(binary("moray")?, None);
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--pg-url", &pg.url()]);
    match tls {
        Some(id) => cmd.arg("--tls-dir").arg(id.dir()),
        None => cmd.arg("--insecure-plain-http"),
    };
    LoggedChild::spawn("moray", cmd, &dir.join("moray.log"))
}

/// `manta-adm` acting on the region's Moray at `moray_url` with the operator's identity in
/// `pki/adm` (what `MANTA_TLS_DIR` gives it).
fn adm_command(pki: &Path, moray_url: &str) -> Result<Command> {
    let mut cmd = Command::new(binary("manta-adm")?);
    cmd.env("MANTA_TLS_DIR", pki.join("adm"))
        .env("MANTA_MORAY", moray_url);
    Ok(cmd)
}

async fn wait_heartbeats<'a>(
    moray: &moray::MorayClient,
    ids: impl Iterator<Item = &'a str>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in ids {
        while moray.get_object("manta_storage", id).await.is_err() {
            if Instant::now() > deadline {
                bail!("storage node {id} never heartbeat into Moray");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Makes an SSH key (ed25519) under `<dir>/home-<login>/.ssh/id_ed25519` and an account for it
/// through `manta-adm account create`.
async fn make_account(dir: &Path, pki: &Path, moray_url: &str, login: &str) -> Result<TestAccount> {
    let ssh = dir.join(format!("home-{login}")).join(".ssh");
    std::fs::create_dir_all(&ssh)?;
    let key = ssh.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", login, "-f"])
        .arg(&key)
        .status()
        .context("run ssh-keygen")?;
    if !st.success() {
        bail!("ssh-keygen failed");
    }
    let out = adm_command(pki, moray_url)?
        .args(["account", "create", login, "--key"])
        .arg(key.with_extension("pub"))
        .output()
        .context("run manta-adm")?;
    if !out.status.success() {
        bail!(
            "manta-adm account create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let fp = Command::new("ssh-keygen")
        .args(["-E", "md5", "-l", "-f"])
        .arg(key.with_extension("pub"))
        .output()?;
    let text = String::from_utf8_lossy(&fp.stdout);
    let key_id = text
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.strip_prefix("MD5:"))
        .context("read the key fingerprint")?
        .to_owned();
    Ok(TestAccount {
        login: login.to_owned(),
        key,
        key_id,
    })
}
