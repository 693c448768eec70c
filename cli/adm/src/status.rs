//! What `manta-adm status` shows, for a one-machine region or a region config: every
//! service's state (and, across hosts, which hosts answer), the shard's roles and lag, and the
//! storage nodes' capacity. One report type, printed as a table or JSON.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

/// One row per service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// The service.
    pub service: String,
    /// Its host, in a region config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Its pid, when running here.
    pub pid: Option<u32>,
    /// `healthy`, `unhealthy`, `restarting`, `stopped`, or `unreachable` (its host does not
    /// answer).
    pub state: &'static str,
    /// Where it answers.
    pub endpoint: String,
    /// The user it runs as, when running here.
    pub user: Option<String>,
}

/// One row per host of a region config.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    /// The host.
    pub host: String,
    /// Its address.
    pub address: String,
    /// Its failure domain.
    pub domain: String,
    /// Whether anything at its address answered (a refused connection is an answer).
    pub reachable: bool,
    /// Its services that are healthy, and how many it runs.
    pub healthy: usize,
    /// How many services it runs.
    pub services: usize,
}

/// A storage node's last heartbeat.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeStatus {
    /// Its storage id.
    pub storage_id: String,
    /// Its failure domain.
    pub datacenter: String,
    /// Free space.
    #[serde(rename = "availableMB")]
    pub available_mb: u64,
    /// Used space.
    #[serde(rename = "percentUsed")]
    pub percent_used: u64,
    /// Seconds since its last heartbeat.
    #[serde(rename = "heartbeatAgeSeconds")]
    pub heartbeat_age_s: u64,
    /// Retired: placement no longer chooses it.
    pub retired: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Hosts, for a region config.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostStatus>,
    /// Services.
    pub services: Vec<ServiceStatus>,
    /// `manatee-adm pg-status`'s table, when the shard answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Why the shard did not answer, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_error: Option<String>,
    /// Storage nodes' heartbeats.
    pub storage: Vec<NodeStatus>,
}

impl Report {
    /// Prints it: JSON, or tables.
    ///
    /// # Errors
    /// When JSON cannot be written.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        if !self.hosts.is_empty() {
            println!(
                "{:<12} {:<16} {:<8} {:<12} SERVICES",
                "HOST", "ADDRESS", "DOMAIN", "STATE"
            );
            for h in &self.hosts {
                let state = if h.reachable {
                    "reachable"
                } else {
                    "UNREACHABLE"
                };
                println!(
                    "{:<12} {:<16} {:<8} {state:<12} {}/{} healthy",
                    h.host, h.address, h.domain, h.healthy, h.services
                );
            }
            println!();
        }
        let with_host = self.services.iter().any(|r| r.host.is_some());
        if with_host {
            print!("{:<12} ", "HOST");
        }
        println!(
            "{:<16} {:>8}  {:<11} {:<8} ENDPOINT",
            "SERVICE", "PID", "STATE", "USER"
        );
        for r in &self.services {
            if with_host {
                print!("{:<12} ", r.host.as_deref().unwrap_or("-"));
            }
            let pid = r.pid.map_or_else(|| "-".into(), |p| p.to_string());
            let user = r.user.as_deref().unwrap_or("-");
            println!(
                "{:<16} {pid:>8}  {:<11} {user:<8} {}",
                r.service, r.state, r.endpoint
            );
        }
        match (&self.shard, &self.shard_error) {
            (Some(shard), _) => println!("\nmetadata shard:\n{shard}"),
            (None, why) => println!(
                "\nmetadata shard: no answer ({})",
                why.as_deref().unwrap_or("unknown")
            ),
        }
        if !self.storage.is_empty() {
            println!(
                "\n{:<24} {:<6} {:>12} {:>6} {:>14}",
                "STORAGE NODE", "DC", "AVAILABLE MB", "USED%", "HEARTBEAT AGE"
            );
            for n in &self.storage {
                let retired = if n.retired { "  retired" } else { "" };
                println!(
                    "{:<24} {:<6} {:>12} {:>5}% {:>13}s{retired}",
                    n.storage_id, n.datacenter, n.available_mb, n.percent_used, n.heartbeat_age_s
                );
            }
        }
        Ok(())
    }
}

/// The shard's roles and replication, as `manatee-adm pg-status` (in `bin`) shows them, asked
/// of etcd at `etcd` (a comma list) with the operator identity in `adm`; or why not.
///
/// # Errors
/// `manatee-adm`'s own error when it fails.
pub fn shard_status(bin: &Path, etcd: &str, shard: &str, adm: &Path) -> Result<String, String> {
    let out = Command::new(bin.join("manatee-adm"))
        .args(["--etcd", etcd, "--shard", shard, "pg-status"])
        .arg("--tls-dir")
        .arg(adm)
        .env("RUST_BACKTRACE", "0")
        .output()
        .map_err(|e| format!("run manatee-adm: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err
            .lines()
            .next()
            .unwrap_or("manatee-adm failed")
            .trim()
            .to_owned())
    }
}

/// Each storage node's last heartbeat, read from the Morays at `urls`.
pub async fn capacity(urls: &[String], tls: moray::Tls) -> Vec<NodeStatus> {
    let Ok(c) = moray::MorayClient::with_urls_over(urls, tls) else {
        return Vec::new();
    };
    let opts = moray::FindOptions {
        limit: Some(1000),
        ..moray::FindOptions::default()
    };
    let find = c.find_objects("manta_storage", "(manta_storage_id=*)", opts);
    let Ok(Ok(recs)) = tokio::time::timeout(Duration::from_secs(10), find).await else {
        return Vec::new();
    };
    let now = manta_types::time::now_ms();
    let mut rows: Vec<NodeStatus> = recs
        .into_iter()
        .map(|r| {
            let v = &r.value;
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
            let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            NodeStatus {
                storage_id: s("manta_storage_id"),
                datacenter: s("datacenter"),
                available_mb: n("availableMB"),
                percent_used: n("percentUsed"),
                heartbeat_age_s: now.saturating_sub(n("timestamp")) / 1000,
                retired: v
                    .get("retired")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false),
            }
        })
        .collect();
    rows.sort();
    rows
}
