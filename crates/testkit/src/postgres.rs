//! A real PostgreSQL server per test.
//!
//! The first start in a machine runs `initdb --data-checksums` once into a shared template
//! (keyed by the server version), which later starts copy: `initdb` costs seconds, a copy tens of
//! milliseconds. Each server gets its own temp dir, a random loopback port, its Unix socket in
//! that dir, and its log in `postgres.log` there. When the tests run as root, Postgres runs as
//! the unprivileged `postgres` user (it refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{
    LoggedChild, PG_USER, TestDir, chown_to, free_port, guarded_command, is_root,
};

/// The directory holding `initdb`, `postgres`, `pg_ctl`, `pg_basebackup`, ...
///
/// `$MANTA_PG_BINDIR` when set, else the newest `/usr/lib/postgresql/<v>/bin`, else `PATH`.
pub fn pg_bindir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("MANTA_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    manta_util::proc::pg_bindir()
        .context("run the README's test command, which installs PostgreSQL")
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `initdb` into `data` with the settings every peer uses: trust auth on loopback, UTF-8, data
/// checksums (so `pg_rewind` can repair a deposed primary).
///
/// # Errors
/// When initdb fails.
pub fn initdb(bindir: &Path, data: &Path) -> Result<()> {
    let mut cmd = guarded_command(bindir.join("initdb"), Some(PG_USER));
    cmd.arg("-D").arg(data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--data-checksums",
        "--no-sync",
        "--no-instructions",
    ]);
    run(
        cmd,
        "initdb (it refuses to run as root; tests run it as the postgres user)",
    )
}

/// The shared template data dir for the PostgreSQL in `bindir` (an `initdb` with the settings
/// every server uses), made once per machine: `initdb` costs seconds, a copy tens of
/// milliseconds. Safe to call from tests running at once.
///
/// # Errors
/// When initdb fails or the template cannot be put in place.
pub fn template(bindir: &Path) -> Result<PathBuf> {
    // Data dirs are compatible across minor versions; the bindir names the major version.
    let tag: String = bindir
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let root = std::env::temp_dir().join("manta-testkit");
    std::fs::create_dir_all(&root)?;
    let template = root.join(format!("pg-template-v1-{tag}"));
    if !template.join("PG_VERSION").exists() {
        let staging = tempfile::Builder::new()
            .prefix("pg-template-staging-")
            .tempdir_in(&root)?;
        if is_root() {
            chown_to(staging.path(), PG_USER)?;
        }
        let sdata = staging.path().join("data");
        initdb(bindir, &sdata)?;
        // Another test may have won the race; either template is good.
        if std::fs::rename(&sdata, &template).is_err() && !template.join("PG_VERSION").exists() {
            bail!(
                "could not install the Postgres template at {}",
                template.display()
            );
        }
    }
    Ok(template)
}

/// Copies the shared template data dir into `data`, creating the template first if needed.
fn data_from_template(bindir: &Path, data: &Path) -> Result<()> {
    let template = template(bindir)?;
    let st = Command::new("cp")
        .arg("-a")
        .arg(&template)
        .arg(data)
        .status()
        .context("run cp")?;
    if !st.success() {
        bail!("copying the Postgres template to {} failed", data.display());
    }
    Ok(())
}

/// Options for a test server.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
    /// Keep `fsync` on (off by default: tests that need durability say so).
    pub fsync: bool,
}

/// A running PostgreSQL server owned by one test. Killed and removed on drop.
#[derive(Debug)]
pub struct TestPostgres {
    child: LoggedChild,
    port: u16,
    data: PathBuf,
    socket_dir: PathBuf,
    // Declared last: dropped after the server is killed.
    dir: TestDir,
}

impl TestPostgres {
    /// Starts a server with default options.
    ///
    /// # Errors
    /// When Postgres is missing or does not become ready within 60 s.
    pub async fn start() -> Result<TestPostgres> {
        TestPostgres::start_with(PgOptions::default()).await
    }

    /// Starts a server with `opts`.
    ///
    /// # Errors
    /// When Postgres is missing or does not become ready within 60 s.
    pub async fn start_with(opts: PgOptions) -> Result<TestPostgres> {
        let bindir = pg_bindir()?;
        let dir = TestDir::new("pg")?;
        let data = dir.path().join("data");
        let socket_dir = dir.path().to_owned();
        data_from_template(&bindir, &data)?;
        if is_root() {
            chown_to(dir.path(), PG_USER)?;
        }
        let mut last_err = None;
        for _attempt in 0..5 {
            let port = free_port()?;
            let mut cmd = guarded_command(bindir.join("postgres"), Some(PG_USER));
            cmd.arg("-D").arg(&data).arg("-k").arg(&socket_dir).args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "shared_buffers=32MB",
                "-c",
                "max_connections=200",
                "-c",
                &format!("fsync={}", if opts.fsync { "on" } else { "off" }),
                "-c",
                "logging_collector=off",
            ]);
            for (k, v) in &opts.settings {
                cmd.arg("-c").arg(format!("{k}={v}"));
            }
            let log = dir.path().join("postgres.log");
            let mut child = LoggedChild::spawn("postgres", cmd, &log)?;
            match wait_ready(&mut child, port).await {
                Ok(()) => {
                    return Ok(TestPostgres {
                        child,
                        port,
                        data,
                        socket_dir,
                        dir,
                    });
                }
                Err(e) => {
                    let tail = child.log_tail(20);
                    child.kill();
                    if tail.contains("already in use") {
                        last_err = Some(e);
                        continue;
                    }
                    return Err(e.context(format!("postgres did not start; log:\n{tail}")));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("postgres did not start")))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for the `postgres` database as the `postgres` superuser.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The test's temp dir (holds the log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new client connection; its connection task runs on the current runtime.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        connect(self.port).await
    }

    /// Kills the server with SIGKILL (as a crash would).
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

async fn connect(port: u16) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5"),
        tokio_postgres::NoTls,
    )
    .await
    .context("connect to postgres")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn wait_ready(child: &mut LoggedChild, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.exited() {
            bail!("postgres exited with {st}");
        }
        if let Ok(c) = connect(port).await
            && c.simple_query("SELECT 1").await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("postgres on port {port} not ready after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
