//! Following Manatee: the shard's cluster state is one etcd key, `/manatee/<shard>/state`,
//! whose `primary.pgUrl` names the Postgres that takes writes. We watch it and point the pool
//! at each new primary; while the key is missing or names no primary, requests get
//! `NoDatabasePeersError`.
//!
//! Besides the watch, the key is re-read every few seconds: a watch on an etcd member that
//! silently lost its cluster would otherwise never report anything again.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::db::Primary;
use crate::error::Error;
use crate::etcd::{connect_and_get, etcd_err, get_key};

/// How often the state key is re-read besides the watch.
const RECHECK: Duration = Duration::from_secs(5);

/// The part of the cluster state Moray needs.
#[derive(Debug, Deserialize)]
struct ClusterState {
    #[serde(default)]
    generation: u64,
    primary: Option<Peer>,
}

#[derive(Debug, Deserialize)]
struct Peer {
    #[serde(rename = "pgUrl")]
    pg_url: String,
}

/// The state key of a shard.
pub fn state_key(shard: &str) -> String {
    format!("/manatee/{shard}/state")
}

fn apply(primary: &Primary, value: Option<&[u8]>, key: &str) {
    let Some(bytes) = value else {
        tracing::warn!(
            key,
            "no Manatee cluster state; refusing requests until one appears"
        );
        let _ = primary.set(None);
        return;
    };
    match serde_json::from_slice::<ClusterState>(bytes) {
        Ok(ClusterState {
            generation,
            primary: Some(p),
        }) => {
            if let Err(e) = primary.set(Some(&p.pg_url)) {
                tracing::error!(key, generation, error = %e, "Manatee state names an unusable primary");
            } else {
                tracing::debug!(key, generation, "Manatee state applied");
            }
        }
        Ok(ClusterState { generation, .. }) => {
            tracing::warn!(key, generation, "Manatee state has no primary");
            let _ = primary.set(None);
        }
        Err(e) => {
            tracing::error!(key, error = %e, "Manatee state is not valid JSON; refusing requests");
            let _ = primary.set(None);
        }
    }
}

/// Follows the shard's state until `stop` is cancelled.
pub(crate) async fn follow(
    endpoints: Vec<String>,
    tls: Option<etcd_client::TlsOptions>,
    shard: String,
    primary: Arc<Primary>,
    stop: CancellationToken,
) {
    let key = state_key(&shard);
    let mut start = 0usize;
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let (mut c, resp) = connect_and_get(
                &endpoints,
                tls.as_ref(),
                &mut start,
                &key,
                "read the Manatee state",
            )
            .await?;
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            let mut mod_rev = resp.kvs().first().map(|kv| kv.mod_revision()).unwrap_or(0);
            apply(&primary, resp.kvs().first().map(|kv| kv.value()), &key);
            let opts = etcd_client::WatchOptions::new().with_start_revision(rev + 1);
            let mut stream = c
                .watch(key.as_str(), Some(opts))
                .await
                .map_err(|e| etcd_err("watch the Manatee state", e))?;
            backoff = Duration::from_millis(100);
            let mut tick = tokio::time::interval(RECHECK);
            tick.tick().await;
            loop {
                tokio::select! {
                    msg = stream.message() => {
                        let Some(msg) = msg.map_err(|e| etcd_err("watch the Manatee state", e))? else {
                            return Err::<(), Error>(etcd_err("watch the Manatee state", "stream ended"));
                        };
                        for ev in msg.events() {
                            let Some(kv) = ev.kv() else { continue };
                            mod_rev = mod_rev.max(kv.mod_revision());
                            match ev.event_type() {
                                etcd_client::EventType::Put => apply(&primary, Some(kv.value()), &key),
                                etcd_client::EventType::Delete => apply(&primary, None, &key),
                            }
                        }
                    }
                    _ = tick.tick() => {
                        let resp = get_key(&mut c, &key, "re-read the Manatee state").await?;
                        let now = resp.kvs().first().map(|kv| kv.mod_revision()).unwrap_or(0);
                        if now != mod_rev {
                            tracing::warn!(key, "Manatee state changed without a watch event; applying it");
                            mod_rev = now;
                            apply(&primary, resp.kvs().first().map(|kv| kv.value()), &key);
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            r = session => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, key, "lost the Manatee state watch; reconnecting (keeping the current primary)");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(3));
        start += 1;
    }
}
