//! A real one-member etcd per test, on random loopback ports, data in a temp dir.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{LoggedChild, TestDir, free_port, guarded_command};

/// A running etcd owned by one test. Killed and removed on drop.
#[derive(Debug)]
pub struct TestEtcd {
    child: LoggedChild,
    client_port: u16,
    dir: TestDir,
}

impl TestEtcd {
    /// Starts etcd and waits until `/health` reports healthy.
    ///
    /// # Errors
    /// When etcd is not installed or does not become healthy within 30 s.
    pub async fn start() -> Result<TestEtcd> {
        let dir = TestDir::new("etcd")?;
        let mut last_err = None;
        for _attempt in 0..5 {
            let (client, peer, metrics) = (free_port()?, free_port()?, free_port()?);
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut cmd = guarded_command("etcd", None);
            cmd.arg("--name")
                .arg("test")
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .arg("--listen-client-urls")
                .arg(&client_url)
                .arg("--advertise-client-urls")
                .arg(&client_url)
                .arg("--listen-peer-urls")
                .arg(&peer_url)
                .arg("--initial-advertise-peer-urls")
                .arg(&peer_url)
                .arg("--initial-cluster")
                .arg(format!("test={peer_url}"))
                .arg("--listen-metrics-urls")
                .arg(format!("http://127.0.0.1:{metrics}"))
                .args(["--log-level", "warn", "--logger", "zap"]);
            let mut child = LoggedChild::spawn("etcd", cmd, &dir.path().join("etcd.log"))
                .context("start etcd (is the etcd-server package installed?)")?;
            match wait_healthy(&mut child, client).await {
                Ok(()) => {
                    return Ok(TestEtcd {
                        child,
                        client_port: client,
                        dir,
                    });
                }
                Err(e) => {
                    let tail = child.log_tail(20);
                    child.kill();
                    let _ = std::fs::remove_dir_all(dir.path().join("data"));
                    if tail.contains("address already in use") {
                        last_err = Some(e);
                        continue;
                    }
                    return Err(e.context(format!("etcd did not start; log:\n{tail}")));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    /// The client endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The test's temp dir (holds the log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The etcd process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

async fn wait_healthy(child: &mut LoggedChild, port: u16) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.exited() {
            bail!("etcd exited with {st}");
        }
        if let Ok(resp) = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            && resp.status().is_success()
            && resp.text().await.unwrap_or_default().contains("true")
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("etcd on port {port} not healthy after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
