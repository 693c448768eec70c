//! A region with jobs: testkit's region (Postgres, Moray, 3 storage nodes, a front door that
//! accepts job tokens and serves the jobs API), etcd, a supervisor and one agent per
//! storage node as processes of this crate's binaries.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use manta_client::{ClientConfig, MantaClient};
use testkit::process::{LoggedChild, free_port};
use testkit::{RegionOptions, TestEtcd, TestRegion};
use tokio_util::sync::CancellationToken;

pub struct Env {
    pub region: TestRegion,
    pub etcd: TestEtcd,
    /// The front door (Manta API and jobs API).
    pub url: String,
    pub client: MantaClient,
    pub supervisors: Vec<Option<LoggedChild>>,
    pub agents: Vec<Option<LoggedChild>>,
    pub agent_args: Vec<String>,
    pub supervisor_args: Vec<String>,
    shutdown: CancellationToken,
    /// Last, so the processes (and their log tails) go before their logs do.
    pub dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct Options {
    pub agent_args: Vec<String>,
    pub supervisor_args: Vec<String>,
    pub agents: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agent_args: Vec::new(),
            supervisor_args: Vec::new(),
            agents: true,
        }
    }
}

impl Env {
    pub async fn start() -> Result<Env> {
        Env::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Result<Env> {
        let dir = tempfile::Builder::new().prefix("jobs-test").tempdir()?;
        let secret = dir.path().join("token-secret");
        std::fs::write(&secret, uuid::Uuid::new_v4().simple().to_string())?;
        let region = TestRegion::start_with(RegionOptions {
            frontdoor_args: vec!["--token-secret-file".into(), secret.display().to_string()],
            ..RegionOptions::default()
        })
        .await?;
        let etcd = TestEtcd::start().await?;

        // The front door serves the jobs API; make its job buckets exist before agents poll.
        let moray = region.moray()?;
        let tokens = manta_auth::TokenKey::new(&std::fs::read(&secret)?);
        jobs::api::JobsApi::new(moray, tokens).setup().await?;
        let url = region.url.clone();
        let shutdown = CancellationToken::new();
        let client = MantaClient::new(ClientConfig {
            timeout: Duration::from_secs(60),
            ..region.client_config(&region.account)
        })
        .await?;
        let mut env = Env {
            region,
            etcd,
            url,
            client,
            dir,
            supervisors: Vec::new(),
            agents: Vec::new(),
            agent_args: opts.agent_args,
            supervisor_args: opts.supervisor_args,
            shutdown,
        };
        env.spawn_supervisor()?;
        for i in 0..env.region.storage.len() {
            env.agents.push(None);
            if opts.agents {
                env.spawn_agent(i).await?;
            }
        }
        Ok(env)
    }

    pub fn spawn_supervisor(&mut self) -> Result<usize> {
        let i = self.supervisors.len();
        let port = free_port()?;
        let mut cmd =
            testkit::process::guarded_command(env!("CARGO_BIN_EXE_jobs-supervisor"), None);
        let tls = self
            .region
            .identity(&format!("supervisor{i}"), testkit::region::Role::Supervisor)?;
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--moray-url", &self.region.moray_url])
            .arg("--tls-dir")
            .arg(tls.dir())
            .args(["--etcd", &self.etcd.endpoint()])
            .args(["--frontdoor-url", &self.region.url])
            .args(["--name", &format!("sup{i}")])
            .args([
                "--poll",
                "100ms",
                "--agent-timeout",
                "3s",
                "--lease-ttl",
                "2",
            ])
            .args(&self.supervisor_args);
        let log = self.dir.path().join(format!("supervisor{i}.log"));
        self.supervisors.push(Some(LoggedChild::spawn(
            &format!("supervisor{i}"),
            cmd,
            &log,
        )?));
        Ok(i)
    }

    pub fn agent_work_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("agent{i}"))
    }

    pub async fn spawn_agent(&mut self, i: usize) -> Result<()> {
        let node = &self.region.storage[i];
        let port = free_port()?;
        let tls = self
            .region
            .identity(&format!("agent{i}"), testkit::region::Role::Agent)?;
        let mut cmd = testkit::process::guarded_command(env!("CARGO_BIN_EXE_jobs-agent"), None);
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-dir")
            .arg(tls.dir())
            .args(["--storage-id", &node.storage_id])
            .arg("--dataset")
            .arg(&node.data)
            .args(["--storage-url", &node.url])
            .args(["--frontdoor-url", &self.region.url])
            .args(["--moray-url", &self.region.moray_url])
            .arg("--work-dir")
            .arg(self.agent_work_dir(i))
            .args(["--tools-bin", env!("CARGO_BIN_EXE_jobs-tool")])
            .args(["--uid-base", &(100_000 + 65_536 * (i as u32)).to_string()])
            .args(&self.agent_args);
        let log = self.dir.path().join(format!("agent{i}.log"));
        let mut child = LoggedChild::spawn(&format!("agent{i}"), cmd, &log)?;
        testkit::region::wait_ping_with(
            self.region.internal_http(),
            &format!("https://127.0.0.1:{port}"),
            &mut child,
            &format!("agent {i}"),
            Duration::from_secs(30),
        )
        .await?;
        self.agents[i] = Some(child);
        Ok(())
    }

    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].take() {
            c.kill();
        }
    }

    /// The ids of the containers agent `i` still has (what `runc list -q` prints for its runc
    /// root), empty when it has none.
    pub fn containers(&self, i: usize) -> String {
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(self.agent_work_dir(i).join("runc"))
            .args(["list", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Creates a job, adds inputs, ends input; returns its id.
    pub async fn submit(&self, job: serde_json::Value, inputs: &[String]) -> Result<String> {
        let id = self.client.create_job(&job).await?;
        for chunk in inputs.chunks(500) {
            self.client.add_job_inputs(&id, chunk, false).await?;
        }
        self.client.end_job_input(&id).await?;
        Ok(id)
    }

    /// Waits for a job to be done (and archived); returns its status.
    pub async fn wait(&self, id: &str, limit: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let st = self.client.job_status(id).await?;
            if st["state"] == "done" && st.get("timeArchiveDone").is_some() {
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!(
                    "job {id} not done after {limit:?}: {st}\nsupervisor: {}\nagents: {}",
                    tail(&self.log("supervisor0"), 20),
                    tail(&self.log("agent0"), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn text(&self, path: &str) -> Result<String> {
        let b = self
            .client
            .get_bytes(path)
            .await
            .with_context(|| format!("get {path}"))?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Concatenated outputs of a job, in output order.
    pub async fn output_text(&self, id: &str) -> Result<Vec<String>> {
        let mut v = Vec::new();
        for o in self.client.job_outputs(id).await? {
            v.push(self.text(&o).await?);
        }
        Ok(v)
    }

    /// Uploads `objects` (name, body) under `~~/stor/<dir>/` in parallel; returns their paths.
    pub async fn upload(&self, dir: &str, objects: Vec<(String, String)>) -> Result<Vec<String>> {
        let root = format!("/{}/stor/{dir}", self.region.account.login);
        self.client.mkdirp(&root).await?;
        let mut set = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(16));
        let mut paths = Vec::new();
        for (name, body) in objects {
            let path = format!("{root}/{name}");
            paths.push(path.clone());
            let c = self.client.clone();
            let sem = sem.clone();
            set.spawn(async move {
                let _p = sem.acquire().await;
                c.put_bytes(&path, body, Default::default()).await
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        Ok(paths)
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A job JSON from (type, exec) pairs.
pub fn job(phases: &[(&str, &str)]) -> serde_json::Value {
    serde_json::json!({
        "name": "test",
        "phases": phases.iter().map(|(t, e)| serde_json::json!({"type": t, "exec": e})).collect::<Vec<_>>()
    })
}
