//! Capacity heartbeats: every few seconds the node writes its free space into the Moray bucket
//! `manta_storage` on the system shard, keyed by its storage id. The front door's placement
//! reads these records, skips nodes whose `timestamp` is stale, and prefers different
//! `datacenter`s for the copies of one object.
//!
//! Record value:
//! `{"manta_storage_id", "datacenter", "availableMB", "percentUsed", "timestamp" (ms), "url",
//!   "hostname", "filesystem", "kind", "capacity": {"total", "available", "used"} (bytes)}`.

use std::time::Duration;

use manta_util::metrics::Metrics;
use moray::ShardedClient;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::dataset::Dataset;
use crate::error::Error;

/// Who this node is, as the heartbeat tells it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The storage id (`manta_storage_id`), e.g. `1.stor.local`; the key of the record.
    pub storage_id: String,
    /// The failure domain (datacenter) of this node.
    pub datacenter: String,
    /// How the front door reaches this node's object API, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    /// The host's name.
    pub hostname: String,
    /// Retired: placement chooses it for no new copies.
    pub retired: bool,
}

/// The host name of this machine (from the kernel), or `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The record this node writes, from current figures.
///
/// # Errors
/// When the dataset's capacity cannot be read.
pub async fn record(ds: &dyn Dataset, me: &Identity) -> Result<Value, Error> {
    let c = ds.capacity().await?;
    Ok(json!({
        "manta_storage_id": me.storage_id,
        "datacenter": me.datacenter,
        "availableMB": c.available_mb(),
        "percentUsed": c.percent_used(),
        "timestamp": manta_types::time::now_ms(),
        "url": me.url,
        "hostname": me.hostname,
        "retired": me.retired,
        "filesystem": ds.name(),
        "kind": ds.kind(),
        "capacity": {"total": c.total, "available": c.available, "used": c.used},
    }))
}

/// Writes one heartbeat.
///
/// # Errors
/// When capacity cannot be read or Moray refuses the write.
pub async fn beat(
    moray: &ShardedClient,
    ds: &dyn Dataset,
    me: &Identity,
    metrics: &Metrics,
) -> Result<Value, Error> {
    let value = record(ds, me).await?;
    if let Some(c) = value.get("capacity") {
        for (k, name, help) in [
            (
                "available",
                "storage_available_bytes",
                "Bytes this node may still write.",
            ),
            ("used", "storage_used_bytes", "Bytes in use on the dataset."),
            ("total", "storage_total_bytes", "Size of the dataset."),
        ] {
            metrics.set(name, help, &[], c[k].as_f64().unwrap_or(0.0));
        }
    }
    moray
        .put_object(
            moray::schema::STORAGE,
            &me.storage_id,
            value.clone(),
            moray::PutOptions::any(),
        )
        .await
        .map_err(|e| Error::Internal(format!("heartbeat to Moray: {e}")))?;
    Ok(value)
}

/// Heartbeats every `interval` until `shutdown`. A failed beat is logged (once per outage, at
/// WARN) and retried at the next tick; the node keeps serving objects meanwhile.
pub async fn run(
    moray: ShardedClient,
    ds: std::sync::Arc<dyn Dataset>,
    me: Identity,
    interval: Duration,
    metrics: std::sync::Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let res = tokio::select! {
            r = beat(&moray, ds.as_ref(), &me, &metrics) => r,
            () = shutdown.cancelled() => return,
        };
        match res {
            Ok(_) => {
                metrics.inc(
                    "storage_heartbeats_total",
                    "Capacity heartbeats by result.",
                    &[("result", "ok")],
                );
                if failing {
                    tracing::info!("heartbeats to Moray work again");
                    failing = false;
                }
            }
            Err(e) => {
                metrics.inc(
                    "storage_heartbeats_total",
                    "Capacity heartbeats by result.",
                    &[("result", "error")],
                );
                if !failing {
                    tracing::warn!(error = %e, "heartbeat failed; the front door will stop placing objects here if this lasts");
                    failing = true;
                } else {
                    tracing::debug!(error = %e, "heartbeat failed again");
                }
            }
        }
    }
}
