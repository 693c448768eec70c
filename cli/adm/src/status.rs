//! What `manta-adm status` shows, for a one-machine region or a region config: every
//! service's state (and, across hosts, which hosts answer), the shard's roles and lag, and the
//! storage nodes' capacity. One report type, printed as a table or JSON.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use std::collections::BTreeMap;

use manta_types::repair::{
    NodeState, PassCounts, RepairProgress, STORAGE_STATES_BUCKET, StorageState,
};
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
    /// Retired (by its `--retired` flag): placement no longer chooses it.
    pub retired: bool,
    /// The operator's state of it (`evacuating`, `retired`; `manta-adm storage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// For an evacuating or retired node: copies the last complete repair pass left on it.
    #[serde(rename = "copiesToMove", skip_serializing_if = "Option::is_none")]
    pub copies_to_move: Option<u64>,
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
    /// The repairer's progress, once it has run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairProgress>,
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
                let mut state = String::new();
                if n.retired {
                    state.push_str("  retired (flag)");
                }
                if let Some(s) = n.state {
                    state.push_str("  ");
                    state.push_str(s);
                }
                if let Some(c) = n.copies_to_move {
                    state.push_str(&format!(", {c} copies left"));
                }
                println!(
                    "{:<24} {:<6} {:>12} {:>5}% {:>13}s{state}",
                    n.storage_id, n.datacenter, n.available_mb, n.percent_used, n.heartbeat_age_s
                );
            }
        }
        if let Some(r) = &self.repair {
            print_repair(r);
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

fn print_repair(r: &RepairProgress) {
    let c = &r.current;
    let age = |ms: u64| manta_types::time::now_ms().saturating_sub(ms) / 1000;
    println!(
        "\nrepair (by {}, updated {}s ago):",
        r.holder,
        age(r.updated)
    );
    let line = |what: &str, c: &PassCounts| {
        println!(
            "  {what:<13} {} objects scanned, {} under-replicated, {} repaired ({} copies, {} bytes), {} failed, {} waiting for late nodes",
            c.scanned,
            c.under_replicated,
            c.repaired,
            c.copies_made,
            c.bytes_copied,
            c.failed,
            c.waiting
        );
    };
    if c.finished == 0 {
        line(&format!("pass {} now", r.pass), c);
    }
    if let Some(l) = &r.last {
        line("last pass", l);
        println!("  last pass finished {}s ago", age(l.finished));
    }
}

/// The repairer's progress record, or `None` when it has not run (or Moray does not answer).
pub async fn repair(urls: &[String], tls: moray::Tls) -> Option<RepairProgress> {
    let c = moray::MorayClient::with_urls_over(urls, tls).ok()?;
    let get = crate::storage::progress(&c);
    tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .ok()?
        .ok()?
}

/// The operator's node states, by storage id.
async fn node_states(c: &moray::MorayClient) -> BTreeMap<String, NodeState> {
    let opts = moray::FindOptions {
        limit: Some(100_000),
        ..moray::FindOptions::default()
    };
    let find = c.find_objects(STORAGE_STATES_BUCKET, "(manta_storage_id=*)", opts);
    let Ok(Ok(recs)) = tokio::time::timeout(Duration::from_secs(10), find).await else {
        return BTreeMap::new();
    };
    recs.into_iter()
        .filter_map(|r| serde_json::from_value::<StorageState>(r.value).ok())
        .map(|s| (s.manta_storage_id, s.state))
        .collect()
}

/// Each storage node's last heartbeat and state, read from the Morays at `urls`, with the
/// copies the last repair pass (`repair`) found on the draining ones.
pub async fn capacity(
    urls: &[String],
    tls: moray::Tls,
    repair: Option<&RepairProgress>,
) -> Vec<NodeStatus> {
    let Ok(c) = moray::MorayClient::with_urls_over(urls, tls) else {
        return Vec::new();
    };
    let states = node_states(&c).await;
    let left = repair.and_then(|r| r.last.as_ref());
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
                state: None,
                copies_to_move: None,
            }
        })
        .collect();
    for r in &mut rows {
        r.state = states.get(&r.storage_id).map(|s| s.as_str());
        if r.state.is_some() || r.retired {
            r.copies_to_move = left.map(|l| l.on_draining.get(&r.storage_id).copied().unwrap_or(0));
        }
    }
    rows.sort();
    rows
}
