//! A whole region on one machine, under one directory: what `manta-adm up|status|down` manage.
//!
//! Each service is a detached process with its own subdirectory holding its data, its log
//! (`<name>.log`) and its pid file. Ports are chosen on the first `up` and kept in
//! `region.json`, so running `up` again restarts the same region, with its data, on the same
//! endpoints.

use std::ffi::OsString;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use manta_util::proc::{Lifetime, PG_USER, alive, chown_tree, command, is_root, signal};
use serde::{Deserialize, Serialize};

/// Ports of the region's services, fixed at the first `up`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ports {
    /// etcd client port.
    pub etcd_client: u16,
    /// etcd peer port.
    pub etcd_peer: u16,
    /// etcd metrics port.
    pub etcd_metrics: u16,
    /// Postgres port.
    pub postgres: u16,
}

/// The persistent description of a region: written once, read on every later command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionFile {
    /// Format version of this file.
    pub version: u32,
    /// The ports.
    pub ports: Ports,
}

/// How to tell that a service is ready.
#[derive(Debug, Clone)]
pub enum Health {
    /// `GET url` answers 2xx.
    Http(String),
    /// A Postgres connection on this loopback port answers `SELECT 1`.
    Postgres(u16),
}

/// One service of the region.
#[derive(Debug, Clone)]
pub struct Service {
    /// Short name; also the subdirectory and log file name.
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<OsString>,
    /// The OS user to run as when we are root.
    pub run_as: Option<&'static str>,
    /// Readiness check.
    pub health: Health,
    /// What `status` shows as its endpoint.
    pub endpoint: String,
}

/// A region rooted at a directory.
#[derive(Debug)]
pub struct Region {
    dir: PathBuf,
    file: RegionFile,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Finds the newest PostgreSQL bin dir.
fn pg_bindir() -> Result<PathBuf> {
    if let Ok(d) = std::env::var("MANTA_PG_BINDIR") {
        return Ok(d.into());
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("postgres").exists())
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .context("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin)")
}

impl Region {
    /// Opens the region at `dir`, creating its description (with fresh ports) on first use.
    ///
    /// # Errors
    /// When the directory or its description cannot be read or written.
    pub fn open(dir: &Path) -> Result<Region> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let path = dir.join("region.json");
        let file = if path.exists() {
            serde_json::from_slice(&fs::read(&path)?).context("read region.json")?
        } else {
            let file = RegionFile {
                version: 1,
                ports: Ports {
                    etcd_client: free_port()?,
                    etcd_peer: free_port()?,
                    etcd_metrics: free_port()?,
                    postgres: free_port()?,
                },
            };
            fs::write(&path, serde_json::to_vec_pretty(&file)?)?;
            file
        };
        Ok(Region { dir, file })
    }

    /// The URL of the region's Moray, once the region runs one.
    pub fn moray_url(&self) -> Option<String> {
        None
    }

    /// The region's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The services in start order.
    pub fn services(&self) -> Result<Vec<Service>> {
        let p = &self.file.ports;
        let etcd_dir = self.dir.join("etcd");
        let client = format!("http://127.0.0.1:{}", p.etcd_client);
        let peer = format!("http://127.0.0.1:{}", p.etcd_peer);
        let etcd = Service {
            name: "etcd".into(),
            argv: [
                "etcd",
                "--name",
                "region",
                "--data-dir",
                &etcd_dir.join("data").to_string_lossy(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("region={peer}"),
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", p.etcd_metrics),
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ]
            .map(OsString::from)
            .to_vec(),
            run_as: None,
            health: Health::Http(format!("{client}/health")),
            endpoint: client.clone(),
        };
        let pg_dir = self.dir.join("postgres");
        let bindir = pg_bindir()?;
        let postgres = Service {
            name: "postgres".into(),
            argv: vec![
                bindir.join("postgres").into(),
                "-D".into(),
                pg_dir.join("data").into(),
                "-k".into(),
                pg_dir.clone().into(),
                "-p".into(),
                p.postgres.to_string().into(),
                "-c".into(),
                "listen_addresses=127.0.0.1".into(),
            ],
            run_as: Some(PG_USER),
            health: Health::Postgres(p.postgres),
            endpoint: format!("postgresql://postgres@127.0.0.1:{}/postgres", p.postgres),
        };
        Ok(vec![etcd, postgres])
    }

    fn service_dir(&self, s: &Service) -> PathBuf {
        self.dir.join(&s.name)
    }

    fn pid_of(&self, s: &Service) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.service_dir(s).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// Prepares what a service needs before its first start (e.g. `initdb`).
    fn prepare(&self, s: &Service) -> Result<()> {
        let sdir = self.service_dir(s);
        fs::create_dir_all(&sdir)?;
        if s.name == "postgres" && !sdir.join("data").join("PG_VERSION").exists() {
            if is_root() {
                chown_tree(&sdir, PG_USER)?;
            }
            println!("  initialising the Postgres data directory (initdb --data-checksums)");
            let out = command(
                pg_bindir()?.join("initdb"),
                Some(PG_USER),
                Lifetime::Detached,
            )
            .arg("-D")
            .arg(sdir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--data-checksums",
            ])
            .output()
            .context("run initdb")?;
            if !out.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        if is_root()
            && let Some(user) = s.run_as
        {
            chown_tree(&sdir, user)?;
        }
        Ok(())
    }

    fn spawn(&self, s: &Service) -> Result<u32> {
        let sdir = self.service_dir(s);
        let log_path = sdir.join(format!("{}.log", s.name));
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = command(&s.argv[0], s.run_as, Lifetime::Detached);
        cmd.args(&s.argv[1..])
            .current_dir(&sdir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C in the terminal that ran `up` does not reach it.
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("start {}", s.name))?;
        let pid = child.id();
        fs::write(sdir.join("pid"), pid.to_string())?;
        Ok(pid)
    }

    async fn healthy(&self, s: &Service) -> bool {
        match &s.health {
            Health::Http(url) => {
                let Ok(client) = reqwest::Client::builder()
                    .timeout(Duration::from_secs(2))
                    .build()
                else {
                    return false;
                };
                client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
            Health::Postgres(port) => {
                let conn = tokio_postgres::connect(
                    &format!(
                        "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2"
                    ),
                    tokio_postgres::NoTls,
                )
                .await;
                match conn {
                    Ok((client, conn)) => {
                        let task = tokio::spawn(conn);
                        let ok = client.simple_query("SELECT 1").await.is_ok();
                        task.abort();
                        ok
                    }
                    Err(_) => false,
                }
            }
        }
    }

    /// Starts every service that is not running and waits until each is healthy.
    ///
    /// # Errors
    /// When a service cannot start or does not become healthy in time (its log tail is shown).
    pub async fn up(&self) -> Result<()> {
        for s in self.services()? {
            if let Some(pid) = self.pid_of(&s) {
                println!("{:<12} already running (pid {pid})", s.name);
                continue;
            }
            self.prepare(&s)?;
            let pid = self.spawn(&s)?;
            print!(
                "{:<12} started (pid {pid}), waiting until healthy ... ",
                s.name
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if self.healthy(&s).await {
                    println!("ok");
                    break;
                }
                if !alive(pid) || Instant::now() > deadline {
                    println!("FAILED");
                    let log = self.service_dir(&s).join(format!("{}.log", s.name));
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    bail!(
                        "{} did not become healthy; last lines of {}:\n{}",
                        s.name,
                        log.display(),
                        tail.join("\n")
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// One line per service: name, pid, state, endpoint.
    pub async fn status(&self) -> Result<Vec<(String, Option<u32>, &'static str, String)>> {
        let mut rows = Vec::new();
        for s in self.services()? {
            let pid = self.pid_of(&s);
            let state = match pid {
                None => "stopped",
                Some(_) if self.healthy(&s).await => "healthy",
                Some(_) => "unhealthy",
            };
            rows.push((s.name.clone(), pid, state, s.endpoint.clone()));
        }
        Ok(rows)
    }

    /// Stops every service, in reverse start order: SIGTERM, then SIGKILL after 15 s.
    ///
    /// # Errors
    /// When the service list cannot be built.
    pub fn down(&self) -> Result<()> {
        for s in self.services()?.iter().rev() {
            let Some(pid) = self.pid_of(s) else {
                println!("{:<12} not running", s.name);
                continue;
            };
            // Postgres: SIGINT is its "fast" shutdown (SIGTERM waits for clients to leave).
            let sig = if s.name == "postgres" {
                rustix::process::Signal::INT
            } else {
                rustix::process::Signal::TERM
            };
            let _ = signal(pid, sig);
            let deadline = Instant::now() + Duration::from_secs(15);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(pid) {
                let _ = signal(pid, rustix::process::Signal::KILL);
                println!("{:<12} killed (did not stop within 15 s)", s.name);
            } else {
                println!("{:<12} stopped", s.name);
            }
            let _ = fs::remove_file(self.service_dir(s).join("pid"));
        }
        Ok(())
    }
}
