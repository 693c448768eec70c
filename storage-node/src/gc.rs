//! Garbage collection of deleted and overwritten objects.
//!
//! When a metadata record that names copies on storage nodes is deleted or replaced, Moray
//! writes an entry to `manta_delete_log` on that record's shard, in the same transaction:
//! `{"objectId", "creator", "key", "sharks": [storage ids], "deletedAt", "prev"}`. Each pass,
//! this node, on every shard:
//! 1. finds entries naming it, `(&(sharks=<id>)(_mtime<=now-min_age))`; the minimum age lets a
//!    SnapLink committed at the same moment as the delete become visible first;
//! 2. asks every shard's `manta`, `manta_s3_objects` and `manta_s3_versions` buckets for
//!    `(objectId=<id>)`: when any record still names this node among the object's copies (a
//!    SnapLink shares its source's object id and nodes; an S3 object replaced in a bucket with
//!    versioning lives on as an older version), the bytes stay. A record of the same object that names other nodes only (repair
//!    moved this copy away) does not keep them;
//! 3. otherwise moves `objects/<creator>/<objectId>` to `tombstone/<YYYY-MM-DD>/`;
//! 4. removes its id from the entry's `sharks` with a put conditional on the entry's etag
//!    (deleting the entry when no id is left), re-reading and retrying when another node
//!    changed the entry first.
//!
//! Tombstone days older than the grace period are then deleted for good. Until then an
//! operator can undo a mistaken GC by moving files back.
//!
//! The bytes are moved before the entry is updated, so a crash in between only repeats step 3
//! (a no-op for a file already gone) on the next pass; nothing is ever lost from the log
//! before the bytes are dealt with.

use std::sync::Arc;
use std::time::Duration;

use manta_types::ObjectId;
use manta_util::metrics::Metrics;
use moray::types::{DelOptions, FindOptions, ObjectRecord, PutOptions, Sort};
use moray::{MorayClient, ShardedClient};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::store::{ObjectKey, Store, day_of};

/// How GC runs.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// Pause between passes.
    pub interval: Duration,
    /// Only delete-log entries at least this old are acted on.
    pub min_age: Duration,
    /// Tombstone days are deleted this long after the day ends.
    pub tombstone_grace: Duration,
    /// Delete-log entries fetched per query.
    pub batch: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: Duration::from_secs(60),
            min_age: Duration::from_secs(300),
            tombstone_grace: Duration::from_secs(2 * 86_400),
            batch: 500,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Delete-log entries naming this node that were old enough.
    pub entries: u64,
    /// Objects moved to the tombstone area.
    pub tombstoned: u64,
    /// Entries whose object is still referenced (SnapLinks): bytes kept.
    pub still_referenced: u64,
    /// Entries whose object was not on this node (already collected, or never written).
    pub missing: u64,
    /// Entries left alone because they could not be understood or updated.
    pub skipped: u64,
    /// Tombstone days deleted.
    pub tombstone_days_removed: Vec<String>,
}

/// What GC needs.
#[derive(Debug, Clone)]
pub struct Gc {
    /// The node's objects.
    pub store: Arc<Store>,
    /// Every metadata shard.
    pub moray: ShardedClient,
    /// This node's storage id (what `sharks` lists).
    pub storage_id: String,
    /// Timing.
    pub config: GcConfig,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

fn moray_err(what: &str, e: moray::Error) -> Error {
    Error::Internal(format!("{what}: {e}"))
}

impl Gc {
    /// One full pass over every shard, then tombstone expiry.
    ///
    /// # Errors
    /// Only for local filesystem failures; a shard that cannot be reached is logged and
    /// skipped (its entries wait for the next pass).
    pub async fn pass(&self, cancel: &CancellationToken) -> Result<GcReport, Error> {
        let mut report = GcReport::default();
        let shards = self.moray.shards();
        for shard in &shards {
            if cancel.is_cancelled() {
                return Ok(report);
            }
            if let Err(e) = self.shard_pass(shard, &shards, &mut report, cancel).await {
                match e {
                    Error::Internal(_) => {
                        self.metrics.inc(
                            "storage_gc_errors_total",
                            "GC passes interrupted by a Moray error.",
                            &[],
                        );
                        tracing::warn!(shard = ?shard.urls(), error = %e, "GC skipped a shard");
                    }
                    e => return Err(e),
                }
            }
        }
        report.tombstone_days_removed = self
            .store
            .expire_tombstones(manta_types::time::now_ms(), self.config.tombstone_grace)
            .await?;
        if !report.tombstone_days_removed.is_empty() {
            tracing::info!(days = ?report.tombstone_days_removed, "expired tombstones deleted");
        }
        if report.entries > 0 {
            tracing::info!(
                entries = report.entries,
                tombstoned = report.tombstoned,
                still_referenced = report.still_referenced,
                missing = report.missing,
                skipped = report.skipped,
                "GC pass done"
            );
        }
        Ok(report)
    }

    async fn shard_pass(
        &self,
        shard: &MorayClient,
        all: &[MorayClient],
        report: &mut GcReport,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let cutoff =
            manta_types::time::now_ms().saturating_sub(self.config.min_age.as_millis() as u64);
        let filter = format!(
            "(&(sharks={})(_mtime<={cutoff}))",
            moray::filter::escape(&self.storage_id)
        );
        // Entries that could not be handled stay in the log; skip past them within this pass.
        let mut offset = 0u64;
        loop {
            let opts = FindOptions {
                limit: Some(self.config.batch),
                offset: (offset > 0).then_some(offset),
                sort: vec![Sort::asc("_id")],
                no_count: true,
            };
            let entries = shard
                .find_objects(moray::schema::DELETE_LOG, &filter, opts)
                .await
                .map_err(|e| moray_err("read the delete log", e))?;
            let n = entries.len() as u64;
            for entry in entries {
                if cancel.is_cancelled() {
                    return Ok(());
                }
                report.entries += 1;
                if !self.handle(shard, all, entry, report).await? {
                    report.skipped += 1;
                    offset += 1;
                }
            }
            if n < self.config.batch {
                return Ok(());
            }
        }
    }

    /// Handles one entry; `Ok(false)` when it was left in place for a later pass.
    async fn handle(
        &self,
        shard: &MorayClient,
        all: &[MorayClient],
        entry: ObjectRecord,
        report: &mut GcReport,
    ) -> Result<bool, Error> {
        let parsed = (|| {
            let id: ObjectId = entry.value.get("objectId")?.as_str()?.parse().ok()?;
            let creator: ObjectId = entry.value.get("creator")?.as_str()?.parse().ok()?;
            Some(ObjectKey {
                owner: *creator.as_uuid(),
                id,
            })
        })();
        let Some(key) = parsed else {
            tracing::warn!(entry = %entry.key, "delete-log entry without a valid objectId/creator; left alone");
            return Ok(false);
        };
        let mut referenced = false;
        'shards: for s in all {
            for bucket in manta_types::s3::OBJECT_RECORD_BUCKETS {
                let found = s
                    .find_objects(
                        bucket,
                        &format!("(objectId={})", moray::filter::escape(&key.id.to_string())),
                        FindOptions {
                            limit: Some(10_000),
                            no_count: true,
                            ..FindOptions::default()
                        },
                    )
                    .await;
                let found = match found {
                    Ok(f) => f,
                    // No S3 request has made this bucket yet on that shard.
                    Err(moray::Error::BucketNotFound { .. }) => continue,
                    Err(e) => return Err(moray_err("look for records of the object", e)),
                };
                let names_me = |r: &ObjectRecord| {
                    moray::schema::stored_object(&r.value)
                        .is_some_and(|(_, sharks)| sharks.contains(&self.storage_id))
                };
                if found.iter().any(names_me) {
                    referenced = true;
                    break 'shards;
                }
            }
        }
        if referenced {
            report.still_referenced += 1;
            self.metrics.inc(
                "storage_gc_kept_total",
                "Delete-log entries whose object is still referenced (bytes kept).",
                &[],
            );
            tracing::debug!(object = %key, "object still referenced; bytes kept");
        } else if self
            .store
            .tombstone(&key, &day_of(manta_types::time::now_ms()))
            .await?
        {
            report.tombstoned += 1;
            self.metrics.inc(
                "storage_gc_tombstoned_total",
                "Objects moved to the tombstone area by GC.",
                &[],
            );
            tracing::debug!(object = %key, "object moved to the tombstone area");
        } else {
            report.missing += 1;
        }
        self.drop_me(shard, entry).await
    }

    /// Removes this node's id from the entry (deleting it when empty), conditional on its etag;
    /// on a conflict re-reads and tries again.
    async fn drop_me(&self, shard: &MorayClient, mut entry: ObjectRecord) -> Result<bool, Error> {
        let bucket = moray::schema::DELETE_LOG;
        for _ in 0..8 {
            let mut value = entry.value.clone();
            let Some(sharks) = value.get_mut("sharks").and_then(Value::as_array_mut) else {
                return Ok(false);
            };
            sharks.retain(|s| s.as_str() != Some(self.storage_id.as_str()));
            let res = if sharks.is_empty() {
                shard
                    .del_object(bucket, &entry.key, DelOptions::if_match(entry.etag.clone()))
                    .await
            } else {
                shard
                    .put_object(
                        bucket,
                        &entry.key,
                        value,
                        PutOptions::if_match(entry.etag.clone()),
                    )
                    .await
                    .map(drop)
            };
            match res {
                Ok(()) => return Ok(true),
                Err(moray::Error::ObjectNotFound { .. }) => return Ok(true),
                Err(moray::Error::EtagConflict { .. }) => {
                    entry = match shard.get_object(bucket, &entry.key).await {
                        Ok(e) => e,
                        Err(moray::Error::ObjectNotFound { .. }) => return Ok(true),
                        Err(e) => return Err(moray_err("re-read a delete-log entry", e)),
                    };
                }
                Err(e) => return Err(moray_err("update a delete-log entry", e)),
            }
        }
        tracing::warn!(entry = %entry.key, "delete-log entry kept changing; will retry next pass");
        Ok(false)
    }

    /// Runs passes every `config.interval` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                () = shutdown.cancelled() => return,
            }
            if let Err(e) = self.pass(&shutdown).await {
                tracing::error!(error = %e, "GC pass failed on the local dataset");
            }
        }
    }
}
