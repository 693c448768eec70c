//! The buckets the object store keeps in every shard, and the call that creates them.
//!
//! | bucket | key | indexes | triggers |
//! |---|---|---|---|
//! | `manta` | the entry's path (`/<account uuid>/stor/...`) | dirname, name, owner, objectId, type | `manta_dircount`, `manta_delete_log` |
//! | `manta_directory_counts` | a directory path | entries (number) | |
//! | `manta_delete_log` | `/<objectId>/<epoch µs>` | objectId, sharks ([string]) | |
//! | `manta_storage` | storage node id | manta_storage_id, datacenter, availableMB, percentUsed, timestamp | |
//! | `manta_uploads` | `<uploadId>:<object path>` | uploadId, finalizingType | |
//! | `manta_storage_states` | storage node id | manta_storage_id, state | |
//! | `manta_repair` | `lease`, `progress`, `reports` | | |
//! | `manta_access_spool` | `<period>/<owner>/<front door>/<seq>` | period (number), owner | |
//!
//! Records in `manta` are [`manta_types::MetadataRecord`] JSON. The two triggers keep, in the
//! same transaction as the write:
//! - `manta_directory_counts`: `{"entries": N}` per directory, +1 when a new key appears, -1
//!   when a key is deleted (the row goes at 0), unchanged on overwrite;
//! - `manta_delete_log`: one entry each time an object record with copies on storage nodes is
//!   deleted, or replaced by a record with another object id (or by a directory). The value is
//!   `{"objectId", "creator", "key", "sharks": [storage ids], "deletedAt": ms, "prev": <old record>}`.
//!   Storage nodes find their work with `(sharks=<their id>)`.

use crate::client::MorayClient;
use crate::error::Result;
use crate::types::{BucketConfig, IndexSpec, IndexType};

/// Bucket of namespace entries.
pub const MANTA: &str = "manta";
/// Bucket of per-directory entry counts.
pub const DIRECTORY_COUNTS: &str = "manta_directory_counts";
/// Bucket of deleted or replaced objects awaiting garbage collection.
pub const DELETE_LOG: &str = "manta_delete_log";
/// Bucket of storage node capacity heartbeats.
pub const STORAGE: &str = "manta_storage";
/// Bucket of multipart upload records.
pub const UPLOADS: &str = "manta_uploads";

/// Bucket of the operator's storage node states (evacuating, retired); see
/// [`manta_types::repair`].
pub const STORAGE_STATES: &str = manta_types::repair::STORAGE_STATES_BUCKET;
/// Bucket of the repairer's lease and progress.
pub const REPAIR: &str = manta_types::repair::REPAIR_BUCKET;

/// Bucket of access log lines waiting to be reported (written to the system shard).
pub const ACCESS_SPOOL: &str = "manta_access_spool";

/// Trigger name: directory entry counts.
pub const TRIGGER_DIRCOUNT: &str = "manta_dircount";
/// Trigger name: delete log.
pub const TRIGGER_DELETE_LOG: &str = "manta_delete_log";

/// An object record with copies on storage nodes: its object id and the storage ids of the
/// nodes its record names (`None` for a directory, or an object with no copies).
pub fn stored_object(v: &serde_json::Value) -> Option<(&str, Vec<String>)> {
    use serde_json::Value;
    if v.get("type").and_then(Value::as_str) != Some("object") {
        return None;
    }
    let id = v.get("objectId").and_then(Value::as_str)?;
    let sharks: Vec<String> = v
        .get("sharks")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|s| {
            s.get("manta_storage_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    if sharks.is_empty() {
        return None;
    }
    Some((id, sharks))
}

/// A `manta_delete_log` entry: the copies of `object_id` (stored under `creator`) on `sharks`
/// may be garbage since the record at `key` stopped naming them (`prev`: that record, or null).
pub fn delete_log_entry(
    object_id: &str,
    creator: serde_json::Value,
    key: &str,
    sharks: &[String],
    deleted_at: i64,
    prev: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "objectId": object_id,
        "creator": creator,
        "key": key,
        "sharks": sharks,
        "deletedAt": deleted_at,
        "prev": prev,
    })
}

/// Every bucket the object store uses, with its configuration (version 1).
pub fn manta_buckets() -> Vec<(&'static str, BucketConfig)> {
    let s = || IndexSpec::new(IndexType::String);
    let n = || IndexSpec::new(IndexType::Number);
    vec![
        (
            MANTA,
            BucketConfig::new(1)
                .with_index("dirname", s())
                .with_index("name", s())
                .with_index("owner", s())
                .with_index("objectId", s())
                .with_index("type", s())
                .with_post(TRIGGER_DIRCOUNT)
                .with_post(TRIGGER_DELETE_LOG),
        ),
        (
            DIRECTORY_COUNTS,
            BucketConfig::new(1).with_index("entries", n()),
        ),
        (
            DELETE_LOG,
            BucketConfig::new(1)
                .with_index("objectId", s())
                .with_index("sharks", IndexSpec::new(IndexType::StringArray)),
        ),
        (
            STORAGE,
            BucketConfig::new(1)
                .with_index("manta_storage_id", s())
                .with_index("datacenter", s())
                .with_index("availableMB", n())
                .with_index("percentUsed", n())
                .with_index("timestamp", n()),
        ),
        (
            UPLOADS,
            BucketConfig::new(1)
                .with_index("uploadId", s())
                .with_index("finalizingType", s()),
        ),
        (
            STORAGE_STATES,
            BucketConfig::new(1)
                .with_index("manta_storage_id", s())
                .with_index("state", s()),
        ),
        (REPAIR, BucketConfig::new(1)),
        (
            ACCESS_SPOOL,
            BucketConfig::new(1)
                .with_index("period", n())
                .with_index("owner", s()),
        ),
    ]
}

/// Creates (or brings up to date) every bucket the object store uses on one shard. Idempotent
/// and safe to run from several processes at once. The trigger target buckets are created
/// before `manta`, so its triggers always find them.
///
/// # Errors
/// The first failing call's error.
pub async fn setup_manta_buckets(client: &MorayClient) -> Result<()> {
    let mut buckets = manta_buckets();
    // `manta` last: its triggers write into the others.
    buckets.sort_by_key(|(name, _)| *name == MANTA);
    for (name, config) in buckets {
        client.put_bucket(name, config).await?;
    }
    Ok(())
}
