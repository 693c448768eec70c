//! The object store's triggers, run inside the transaction of the write that fires them.
//!
//! A bucket names its post triggers in its configuration (`post`). They run after each put
//! and delete of a record, in the same transaction, so the derived data can never disagree
//! with the records:
//! - `manta_dircount` keeps `manta_directory_counts` exact: +1 for the parent directory when a
//!   key is created, -1 when one is deleted (the row is removed at 0), nothing on overwrite.
//!   Deltas are collected during the transaction and applied at its end in key order, so two
//!   transactions touching the same directories lock their count rows in the same order and
//!   cannot deadlock on them.
//! - `manta_delete_log` records every object whose bytes may now be garbage: a deleted object
//!   record, or one replaced by a record with another object id (or by a directory), when it
//!   had copies on storage nodes; and, for a record whose object id stays but which names
//!   fewer nodes than before (repair moved a copy), the nodes it no longer names.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio_postgres::Transaction;

use super::buckets::BucketSchema;
use super::db::{Db, Op, OpError};
use super::objects::{delete_row, load_bucket, write_row};
use crate::error::Error;
use crate::ring::dirname;
use crate::schema::{
    DELETE_LOG, DIRECTORY_COUNTS, TRIGGER_DELETE_LOG, TRIGGER_DIRCOUNT, delete_log_entry,
    stored_object,
};
use crate::types::EtagCondition;

/// What one write did, as triggers see it.
pub(crate) enum Event<'a> {
    Put {
        prev: Option<&'a Value>,
        new: &'a Value,
    },
    Delete {
        prev: &'a Value,
    },
}

/// State shared by all trigger runs of one transaction.
#[derive(Debug, Default)]
pub(crate) struct TxnCtx {
    /// Pending directory count changes, by directory.
    pub dircount: BTreeMap<String, i64>,
    pub now_ms: i64,
}

impl TxnCtx {
    pub fn new(now_ms: i64) -> TxnCtx {
        TxnCtx {
            dircount: BTreeMap::new(),
            now_ms,
        }
    }
}

/// Runs the bucket's post triggers for one write.
pub(crate) async fn run_post(
    db: &Db,
    txn: &Transaction<'_>,
    schema: &BucketSchema,
    key: &str,
    ev: Event<'_>,
    ctx: &mut TxnCtx,
) -> Op<()> {
    for name in &schema.config.post {
        match name.as_str() {
            TRIGGER_DIRCOUNT => dircount(key, &ev, ctx),
            TRIGGER_DELETE_LOG => delete_log(db, txn, key, &ev, ctx).await?,
            other => {
                return Err(OpError::Moray(Error::internal(format!(
                    "bucket {} names unknown trigger {other}",
                    schema.name
                ))));
            }
        }
    }
    Ok(())
}

/// The directory an entry counts towards: its record's `dirname`, else its key's parent.
fn entry_dir(key: &str, value: &Value) -> String {
    match value.get("dirname").and_then(Value::as_str) {
        Some(d) => d.to_owned(),
        None => dirname(key).to_owned(),
    }
}

fn dircount(key: &str, ev: &Event<'_>, ctx: &mut TxnCtx) {
    let (dir, delta) = match ev {
        Event::Put { prev: None, new } => (entry_dir(key, new), 1),
        Event::Put { prev: Some(_), .. } => return,
        Event::Delete { prev } => (entry_dir(key, prev), -1),
    };
    *ctx.dircount.entry(dir).or_insert(0) += delta;
}

/// Loads `bucket`, which `trigger` writes to; a missing one is the operator's to create, said
/// as an internal error.
async fn trigger_bucket(
    db: &Db,
    txn: &Transaction<'_>,
    trigger: &str,
    bucket: &str,
) -> Op<std::sync::Arc<BucketSchema>> {
    load_bucket(db, txn, bucket).await.map_err(|e| match e {
        OpError::Moray(Error::BucketNotFound { .. }) => OpError::Moray(Error::internal(format!(
            "trigger {trigger} needs bucket {bucket}; run setup_manta_buckets"
        ))),
        other => other,
    })
}

/// Applies the collected directory count changes, in key order.
pub(crate) async fn finish(db: &Db, txn: &Transaction<'_>, ctx: &mut TxnCtx) -> Op<()> {
    let deltas: Vec<(String, i64)> = std::mem::take(&mut ctx.dircount)
        .into_iter()
        .filter(|(_, d)| *d != 0)
        .collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let counts = trigger_bucket(db, txn, TRIGGER_DIRCOUNT, DIRECTORY_COUNTS).await?;
    for (dir, delta) in deltas {
        apply_count(txn, &counts, &dir, delta, ctx.now_ms).await?;
    }
    Ok(())
}

async fn apply_count(
    txn: &Transaction<'_>,
    counts: &BucketSchema,
    dir: &str,
    delta: i64,
    now: i64,
) -> Op<()> {
    // Read under a row lock, then write conditionally: an absent row is created with
    // must-not-exist, so two transactions creating the same directory's row cannot both win;
    // the loser sees the winner's row on the next round.
    for _ in 0..8 {
        let sql = format!(
            "SELECT _etag, _value FROM {} WHERE _key = $1 FOR UPDATE",
            counts.table()
        );
        let rows = txn
            .query_typed(&sql, &[(&dir, tokio_postgres::types::Type::TEXT)])
            .await?;
        let (cur, cond) = match rows.first() {
            Some(r) => {
                let etag: String = r.try_get(0)?;
                let value: String = r.try_get(1)?;
                let v: Value = serde_json::from_str(&value).unwrap_or(Value::Null);
                (
                    v.get("entries").and_then(Value::as_i64).unwrap_or(0),
                    EtagCondition::MustMatch(etag),
                )
            }
            None => (0, EtagCondition::MustNotExist),
        };
        let next = cur + delta;
        let r = if next <= 0 {
            if matches!(cond, EtagCondition::MustNotExist) {
                if next < 0 {
                    tracing::warn!(
                        dir,
                        delta,
                        "directory count would go negative; leaving it absent"
                    );
                }
                return Ok(());
            }
            delete_row(txn, counts, dir, &cond).await.map(|_| ())
        } else {
            write_row(
                txn,
                counts,
                dir,
                &json!({ "entries": next }),
                &cond,
                None,
                now,
                false,
            )
            .await
            .map(|_| ())
        };
        match r {
            Err(OpError::Moray(Error::EtagConflict { .. })) => continue,
            other => return other,
        }
    }
    Err(OpError::Moray(Error::internal(format!(
        "could not update the entry count of {dir} (kept conflicting)"
    ))))
}

async fn delete_log(
    db: &Db,
    txn: &Transaction<'_>,
    key: &str,
    ev: &Event<'_>,
    ctx: &mut TxnCtx,
) -> Op<()> {
    let (prev, kept) = match ev {
        Event::Put { prev: None, .. } => return Ok(()),
        Event::Put {
            prev: Some(prev),
            new,
        } => {
            let Some((old_id, _)) = stored_object(prev) else {
                return Ok(());
            };
            let new_is_dir = new.get("type").and_then(Value::as_str) == Some("directory");
            let new_id = new.get("objectId").and_then(Value::as_str);
            if new_is_dir || new_id != Some(old_id) {
                (*prev, Vec::new())
            } else {
                // Same bytes (a metadata-only update, or a copy moved by repair): only the
                // nodes the record no longer names hold garbage.
                match stored_object(new) {
                    Some((_, new_sharks)) => (*prev, new_sharks),
                    None => return Ok(()),
                }
            }
        }
        Event::Delete { prev } => (*prev, Vec::new()),
    };
    let Some((object_id, mut sharks)) = stored_object(prev) else {
        return Ok(());
    };
    sharks.retain(|s| !kept.contains(s));
    if sharks.is_empty() {
        return Ok(());
    }
    let log = trigger_bucket(db, txn, TRIGGER_DELETE_LOG, DELETE_LOG).await?;
    let value = delete_log_entry(
        object_id,
        prev.get("creator").cloned().unwrap_or(Value::Null),
        key,
        &sharks,
        ctx.now_ms,
        prev.clone(),
    );
    let mut micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    // Keys are unique per object id and microsecond; two deletions of links to the same object
    // in the same microsecond take the next free one.
    for _ in 0..64 {
        let log_key = format!("/{object_id}/{micros}");
        match write_row(
            txn,
            &log,
            &log_key,
            &value,
            &EtagCondition::MustNotExist,
            None,
            ctx.now_ms,
            false,
        )
        .await
        {
            Err(OpError::Moray(Error::EtagConflict { .. })) => micros += 1,
            other => return other.map(|_| ()),
        }
    }
    Err(OpError::Moray(Error::internal(format!(
        "no free delete-log key for object {object_id}"
    ))))
}
