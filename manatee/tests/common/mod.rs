//! Shared harness of the manatee integration tests: a real etcd, real sitters (the
//! `manatee-sitter` binary) running real Postgres, a writer that records every acknowledged
//! write, and polling helpers.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use manatee::coord::Coord;
use manatee::{ClusterState, Peer};
use serde_json::Value;
use testkit::process::{free_port, guarded_command};
use testkit::{LoggedChild, TestDir, TestEtcd};
use tokio_util::sync::CancellationToken;

pub const SITTER: &str = env!("CARGO_BIN_EXE_manatee-sitter");
pub const ADM: &str = env!("CARGO_BIN_EXE_manatee-adm");

/// An initdb'd data dir shared by all tests on this machine (testkit's template).
pub fn template() -> Result<PathBuf> {
    testkit::postgres::template(&testkit::postgres::pg_bindir()?)
}

/// The replication role's password in these tests' shards.
pub const REPLICATION_PASSWORD: &str = "test-replication-password";
/// The client role's (`moray`) password in these tests' shards.
pub const CLIENT_PASSWORD: &str = "test-client-password-moray";

/// The login the tests write and read with: the client role, as Moray would.
pub fn client_login() -> manta_util::secret::PgLogin {
    manta_util::secret::PgLogin {
        user: manatee::pg::CLIENT_ROLE.into(),
        password: CLIENT_PASSWORD.into(),
    }
}

/// How one sitter is started.
#[derive(Debug, Clone)]
pub struct SitterSpec {
    pub ip: String,
    pub pg_port: u16,
    pub sitter_port: u16,
    pub data_dir: PathBuf,
    pub etcd: String,
    pub shard: String,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Networks allowed to reach Postgres with a password (`--pg-allow`).
    pub allow: Option<String>,
}

impl SitterSpec {
    pub fn peer(&self) -> Peer {
        Peer::new(self.ip.parse().expect("ip"), self.pg_port, self.sitter_port)
    }

    pub fn command(&self) -> Result<Command> {
        // The shard's passwords, beside the peer's data dir.
        let secrets = self.data_dir.with_extension("secrets");
        std::fs::create_dir_all(&secrets)?;
        let (repl, client) = (secrets.join("replication"), secrets.join("moray"));
        manta_util::write_private(&repl, REPLICATION_PASSWORD.as_bytes())?;
        manta_util::write_private(&client, CLIENT_PASSWORD.as_bytes())?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = guarded_command("ip", None);
                c.args(["netns", "exec", ns, SITTER]);
                c
            }
            None => guarded_command(SITTER, None),
        };
        cmd.arg("--etcd")
            .arg(&self.etcd)
            .arg("--shard")
            .arg(&self.shard)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--ip")
            .arg(&self.ip)
            .arg("--pg-port")
            .arg(self.pg_port.to_string())
            .arg("--sitter-port")
            .arg(self.sitter_port.to_string())
            .arg("--pg-fsync")
            .arg("false")
            // A shard tested alone: no region identity.
            .arg("--insecure-plain-http")
            .arg("--initdb-from")
            .arg(template()?)
            .args([
                "--pg-setting",
                "shared_buffers=16MB",
                "--pg-setting",
                "max_connections=40",
            ]);
        cmd.arg("--replication-password-file")
            .arg(repl)
            .arg("--moray-password-file")
            .arg(client);
        if let Some(t) = &self.allow {
            cmd.arg("--pg-allow").arg(t);
        }
        cmd.env("RUST_LOG", "info");
        Ok(cmd)
    }
}

/// A running sitter process.
pub struct Sitter {
    pub spec: SitterSpec,
    pub child: Option<LoggedChild>,
    pub name: String,
}

impl Sitter {
    pub fn start(name: &str, spec: SitterSpec) -> Result<Sitter> {
        std::fs::create_dir_all(&spec.data_dir)?;
        let log = spec.data_dir.join("sitter.log");
        let child = LoggedChild::spawn(name, spec.command()?, &log)?;
        Ok(Sitter {
            spec,
            child: Some(child),
            name: name.to_owned(),
        })
    }

    pub fn restart(&mut self) -> Result<()> {
        let log = self.spec.data_dir.join("sitter.log");
        self.child = Some(LoggedChild::spawn(&self.name, self.spec.command()?, &log)?);
        Ok(())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(LoggedChild::pid)
    }

    pub fn id(&self) -> String {
        self.spec.peer().id
    }
}

/// A shard of `n` sitters on loopback with its own etcd.
pub struct Shard {
    // Dropped in this order: sitters (and with them their Postgres) first, the dir last.
    pub sitters: Vec<Sitter>,
    pub coord: Coord,
    pub http: reqwest::Client,
    pub etcd: TestEtcd,
    pub dir: TestDir,
}

impl Drop for Shard {
    fn drop(&mut self) {
        let pids: Vec<u32> = self.sitters.iter().filter_map(Sitter::pid).collect();
        for s in &mut self.sitters {
            s.kill();
        }
        // Postgres follows its sitter (parent-death signal); let it go before the dir does.
        wait_children_gone(&pids);
    }
}

/// Waits (up to 5 s) until no process has one of `parents` as its parent.
pub fn wait_children_gone(parents: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let any = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path().join("stat")).is_ok_and(|st| {
                    let ppid = st
                        .rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().nth(1));
                    ppid.and_then(|p| p.parse::<u32>().ok())
                        .is_some_and(|p| parents.contains(&p))
                })
            });
        if !any {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Shard {
    pub async fn start(n: usize) -> Result<Shard> {
        let etcd = TestEtcd::start().await?;
        let dir = TestDir::new("manatee")?;
        let shard = "1".to_owned();
        let mut sitters = Vec::new();
        for i in 0..n {
            let spec = SitterSpec {
                ip: "127.0.0.1".into(),
                pg_port: free_port()?,
                sitter_port: free_port()?,
                data_dir: dir.path().join(format!("peer{i}")),
                etcd: etcd.endpoint(),
                shard: shard.clone(),
                netns: None,
                allow: None,
            };
            sitters.push(Sitter::start(&format!("sitter{i}"), spec)?);
            // Registration order decides the first primary: give the first a head start.
            if i == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        let coord = Coord::new(&[etcd.endpoint()], &shard, Duration::from_secs(2))?;
        Ok(Shard {
            etcd,
            dir,
            sitters,
            coord,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()?,
        })
    }

    pub async fn state(&self) -> Result<ClusterState> {
        Ok(self.coord.state().await?.context("no state")?.state)
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.sitters
            .iter()
            .position(|s| s.id() == id)
            .expect("peer of this shard")
    }

    pub async fn status(&self, i: usize) -> Result<Value> {
        let url = format!("{}/status", self.sitters[i].spec.peer().backup_url);
        Ok(self.http.get(url).send().await?.json().await?)
    }

    /// Creates the test table on `primary` and starts a [`Writer`] through the shard's state;
    /// returns once its first write is acknowledged.
    pub async fn start_writing(&self, primary: &Peer) -> Result<Writer> {
        create_table(primary).await?;
        let writer = Writer::start(self.etcd.endpoint(), "1".into(), 1);
        writer
            .wait_ack_after(Instant::now(), None, Duration::from_secs(20))
            .await?;
        Ok(writer)
    }

    /// The pid of peer `i`'s postmaster, from its sitter's status.
    pub async fn postmaster_pid(&self, i: usize) -> Result<u32> {
        let status = self.status(i).await?;
        let pid = status["postmasterPid"]
            .as_u64()
            .with_context(|| format!("no postmasterPid in {status}"))?;
        Ok(u32::try_from(pid)?)
    }

    /// kill -9 of peer `i`'s postmaster, as a crash would; returns when it was sent.
    pub async fn kill_postmaster(&self, i: usize) -> Result<Instant> {
        let pid = self.postmaster_pid(i).await?;
        let killed_at = Instant::now();
        kill_pid(pid)?;
        Ok(killed_at)
    }

    /// Waits until the shard is whole: a writable primary, a streaming sync, and every other
    /// running sitter streaming as an async.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<ClusterState> {
        let running: Vec<usize> = (0..self.sitters.len())
            .filter(|i| self.sitters[*i].child.is_some())
            .collect();
        wait_until("the shard to be whole", timeout, || async {
            let st = self.state().await?;
            let placed = 1 + st.sync.iter().count() + st.asyncs.len();
            if placed != running.len() || !st.deposed.is_empty() {
                bail!("not all placed: {st:?}");
            }
            let p = self.status(self.index_of(&st.primary.id)).await?;
            if p["writable"] != true {
                bail!("primary not writable yet");
            }
            for (peer, _) in st.peers().iter().skip(1) {
                let s = self.status(self.index_of(&peer.id)).await?;
                if s["mode"] != "standby" || s["registered"] != true {
                    bail!("{} not streaming yet: {s}", peer.id);
                }
            }
            Ok(st)
        })
        .await
    }

    pub fn adm(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(ADM)
            .arg("--etcd")
            .arg(self.etcd.endpoint())
            .arg("--shard")
            .arg("1")
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "manatee-adm {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

/// Polls `f` every 100 ms until it succeeds or `timeout` passes.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                if Instant::now() > deadline {
                    bail!("timed out after {timeout:?} waiting for {what}; last: {e:#}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn connect(peer: &Peer) -> Result<manatee::pg::PgConn> {
    Ok(manatee::pg::PgConn::to_peer(peer, &client_login()).await?)
}

/// Writes rows into `t` on whatever the state names as primary, one autocommit insert at a
/// time, and records which inserts were acknowledged. Errors (read-only primary, dead server)
/// are retried on the next id after re-reading the state.
pub struct Writer {
    pub acked: Arc<Mutex<Vec<(i64, Instant, String)>>>,
    pub attempts: Arc<Mutex<u64>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub fn start(coord_endpoint: String, shard: String, first_id: i64) -> Writer {
        Writer::start_to(coord_endpoint, shard, first_id, None)
    }

    /// Like [`Writer::start`], but always to `fixed` when given (without asking etcd).
    pub fn start_to(
        coord_endpoint: String,
        shard: String,
        first_id: i64,
        fixed: Option<Peer>,
    ) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(0));
        let stop = CancellationToken::new();
        let (a, n, s) = (acked.clone(), attempts.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let coord =
                Coord::new(&[coord_endpoint], &shard, Duration::from_secs(1)).expect("coord");
            let mut next = first_id;
            let mut conn: Option<(String, manatee::pg::PgConn)> = None;
            while !s.is_cancelled() {
                if conn.is_none()
                    && let Some(p) = &fixed
                {
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        manatee::pg::PgConn::to_peer(p, &client_login()),
                    )
                    .await
                    {
                        Ok(Ok(c)) => conn = Some((p.id.clone(), c)),
                        _ => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                if conn.is_none() {
                    if let Ok(Some(v)) = coord.state().await
                        && let Ok(Ok(c)) = tokio::time::timeout(
                            Duration::from_secs(2),
                            manatee::pg::PgConn::to_peer(&v.state.primary, &client_login()),
                        )
                        .await
                    {
                        conn = Some((v.state.primary.id.clone(), c));
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                let (on, c) = conn.as_ref().expect("connected");
                let id = next;
                next += 1;
                *n.lock().expect("writer lock") += 1;
                let r = tokio::time::timeout(
                    Duration::from_secs(3),
                    c.client.execute("INSERT INTO t (id) VALUES ($1)", &[&id]),
                )
                .await;
                match r {
                    Ok(Ok(_)) => {
                        a.lock()
                            .expect("writer lock")
                            .push((id, Instant::now(), on.clone()))
                    }
                    _ => {
                        conn = None;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
        Writer {
            acked,
            attempts,
            stop,
            task,
        }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().expect("writer lock").len()
    }

    /// Waits until a write is acknowledged after `since` by a primary other than `not_on`;
    /// returns when it was.
    pub async fn wait_ack_after(
        &self,
        since: Instant,
        not_on: Option<&str>,
        timeout: Duration,
    ) -> Result<Instant> {
        let acked = self.acked.clone();
        wait_until("a write acknowledged after the fault", timeout, || {
            let acked = acked.clone();
            async move {
                acked
                    .lock()
                    .expect("writer lock")
                    .iter()
                    .find(|(_, t, on)| *t > since && Some(on.as_str()) != not_on)
                    .map(|(_, t, _)| *t)
                    .context("none yet")
            }
        })
        .await
    }

    pub async fn stop(self) -> Vec<i64> {
        self.stop_detailed()
            .await
            .into_iter()
            .map(|(i, _, _)| i)
            .collect()
    }

    /// Stops; every acknowledged write with when and by which peer.
    pub async fn stop_detailed(self) -> Vec<(i64, Instant, String)> {
        self.stop.cancel();
        let _ = self.task.await;
        self.acked.lock().expect("writer lock").clone()
    }
}

/// Creates the test table on the primary (retrying while it is still read-only).
pub async fn create_table(primary: &Peer) -> Result<()> {
    wait_until(
        "the table to be created",
        Duration::from_secs(30),
        || async {
            let c = connect(primary).await?;
            c.client
                .batch_execute("CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY)")
                .await?;
            Ok(())
        },
    )
    .await
}

/// Every id in `acked` is in `t` on `peer`.
pub async fn assert_all_present(peer: &Peer, acked: &[i64]) -> Result<()> {
    let c = connect(peer).await?;
    let rows = c.client.query("SELECT id FROM t", &[]).await?;
    let present: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let missing: Vec<i64> = acked
        .iter()
        .filter(|i| !present.contains(i))
        .copied()
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} acknowledged writes missing on {} (of {}): {:?}",
            missing.len(),
            peer.id,
            acked.len(),
            &missing[..missing.len().min(20)]
        );
    }
    Ok(())
}

pub fn kill_pid(pid: u32) -> Result<()> {
    manta_util::proc::signal(pid, rustix::process::Signal::KILL)?;
    Ok(())
}

pub fn alive(pid: u32) -> bool {
    manta_util::proc::alive(pid)
}

pub fn data_dir_of(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("peer{i}"))
}

/// For tests that need root: true (after saying `why` on stderr) when this is not root, so the
/// test returns at once.
pub fn not_root(why: &str) -> bool {
    let not = !testkit::process::is_root();
    if not {
        eprintln!("{why}");
    }
    not
}
