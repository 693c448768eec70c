//! Where quarantined copies are recorded for operators: the Moray bucket `manta_quarantine` on
//! the system shard (the shard of `manta_storage`), one record per copy.
//!
//! Key `/<storage id>/<owner>/<objectId>`; value = the [`QuarantineNote`] plus
//! `manta_storage_id` and `datacenter`; indexed by `manta_storage_id`, `objectId`, `owner` and
//! `detectedAt`. An operator lists a node's corrupt copies with
//! `moray-cli findobjects manta_quarantine '(manta_storage_id=1.stor.local)'`, finds the
//! object's metadata by `objectId`, copies a good replica back, and deletes the record.
//!
//! The local quarantine area stays the source of truth: the node re-sends every note after
//! each scrub pass (puts are idempotent), so records lost while Moray was unreachable arrive
//! later. The front door needs none of this: the node answers 404 for a quarantined copy and
//! the front door reads another.

use moray::types::{BucketConfig, IndexSpec, IndexType};
use moray::{MorayClient, PutOptions};
use serde_json::json;

use crate::error::Error;
use crate::store::{QuarantineNote, Store};

/// The bucket of quarantined copies.
pub const BUCKET: &str = manta_types::repair::QUARANTINE_BUCKET;

/// The bucket's configuration (version 1).
pub fn bucket_config() -> BucketConfig {
    let s = || IndexSpec::new(IndexType::String);
    BucketConfig::new(1)
        .with_index("manta_storage_id", s())
        .with_index("objectId", s())
        .with_index("owner", s())
        .with_index("detectedAt", IndexSpec::new(IndexType::Number))
}

/// Creates the bucket when missing (idempotent; several nodes may run it at once).
///
/// # Errors
/// Moray's error.
pub async fn ensure_bucket(system: &MorayClient) -> Result<(), Error> {
    system
        .put_bucket(BUCKET, bucket_config())
        .await
        .map(drop)
        .map_err(|e| Error::Internal(format!("create bucket {BUCKET}: {e}")))
}

/// Records (or re-records) every quarantined copy of this node. Returns how many.
///
/// # Errors
/// The first failing Moray call.
pub async fn sync(
    system: &MorayClient,
    store: &Store,
    storage_id: &str,
    datacenter: &str,
) -> Result<usize, Error> {
    let notes = store.quarantined().await?;
    for n in &notes {
        record(system, storage_id, datacenter, n).await?;
    }
    Ok(notes.len())
}

/// Records one quarantined copy.
///
/// # Errors
/// Moray's error.
pub async fn record(
    system: &MorayClient,
    storage_id: &str,
    datacenter: &str,
    n: &QuarantineNote,
) -> Result<(), Error> {
    let key = manta_types::repair::quarantine_key(storage_id, &n.owner, &n.object_id);
    let mut value = serde_json::to_value(n).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("manta_storage_id".into(), json!(storage_id));
        obj.insert("datacenter".into(), json!(datacenter));
    }
    system
        .put_object(BUCKET, &key, value, PutOptions::any())
        .await
        .map(drop)
        .map_err(|e| Error::Internal(format!("record quarantined copy {key}: {e}")))
}
