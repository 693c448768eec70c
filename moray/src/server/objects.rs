//! Record operations inside a transaction: the building blocks of every object RPC.
//!
//! A record is a row `(_key, _value, _etag, _mtime, _id, _vnode, _rver, <index columns>)`.
//! `_value` is the JSON text of the value (keys sorted, so equal values have equal text),
//! `_etag` its CRC-32 as 8 hex digits, `_id` a fresh serial on every write.

use std::sync::Arc;

use serde_json::Value;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use super::buckets::{self, BucketSchema, ident};
use super::db::{Db, Op, OpError, Param, Params};
use super::query::{cast, compile, index_value};
use super::triggers::{self, Event, TxnCtx};
use crate::error::Error;
use crate::filter::Filter;
use crate::types::{
    BatchOp, BatchOpResult, BatchResult, CountResult, EtagCondition, ReindexResult,
};

/// Largest accepted key, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 4096;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The etag of a value's stored text.
pub(crate) fn etag_of(text: &str) -> String {
    format!("{:08X}", crc32fast::hash(text.as_bytes()))
}

/// The bucket, from the cache or read through `client` (inside the caller's transaction, so a
/// busy pool can never deadlock waiting for a second connection).
pub(crate) async fn load_bucket(
    db: &Db,
    client: &impl GenericClient,
    name: &str,
) -> Op<Arc<BucketSchema>> {
    if let Some(b) = db.cached_bucket(name) {
        return Ok(b);
    }
    match buckets::load(client, name).await {
        Ok(Some(b)) => {
            let b = Arc::new(b);
            db.cache_bucket(b.clone());
            Ok(b)
        }
        Ok(None) => Err(OpError::Moray(Error::BucketNotFound {
            bucket: name.to_owned(),
        })),
        Err(e) if e.is_stale_schema() => Err(OpError::Moray(Error::BucketNotFound {
            bucket: name.to_owned(),
        })),
        Err(e) => Err(e),
    }
}

/// Checks a key and value from a request.
pub(crate) fn validate_record(key: &str, value: &Value) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::invalid_argument(format!(
            "key must be 1 to {MAX_KEY_LEN} bytes"
        )));
    }
    if key.contains('\0') {
        return Err(Error::invalid_argument("key must not contain NUL"));
    }
    if !value.is_object() {
        return Err(Error::invalid_argument("value must be a JSON object"));
    }
    Ok(())
}

/// The current etag and value of a key, locking the row for the rest of the transaction.
async fn lock_current(
    txn: &impl GenericClient,
    s: &BucketSchema,
    key: &str,
) -> Op<Option<(String, String)>> {
    let sql = format!(
        "SELECT _etag, _value FROM {} WHERE _key = $1 FOR UPDATE",
        s.table()
    );
    let rows = txn.query_typed(&sql, &[(&key, Type::TEXT)]).await?;
    match rows.first() {
        None => Ok(None),
        Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?))),
    }
}

fn conflict(s: &BucketSchema, key: &str, cond: &EtagCondition, actual: Option<String>) -> OpError {
    OpError::Moray(Error::EtagConflict {
        bucket: s.name.clone(),
        key: key.to_owned(),
        expected: cond.expected(),
        actual,
    })
}

/// What a write replaced.
pub(crate) struct Written {
    pub etag: String,
    /// The previous value, when there was one and the caller asked for it.
    pub prev: Option<Value>,
}

/// Writes a record under `cond`. With `need_prev` (triggers will run) the previous record is
/// read and returned; without it and without a condition, the write is one upsert statement.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_row(
    txn: &impl GenericClient,
    s: &BucketSchema,
    key: &str,
    value: &Value,
    cond: &EtagCondition,
    vnode: Option<i64>,
    now: i64,
    need_prev: bool,
) -> Op<Written> {
    let text = serde_json::to_string(value).map_err(|e| Error::internal(e.to_string()))?;
    let etag = etag_of(&text);
    let mut p = Params::new();
    let k = p.text(key);
    let v = p.text(text);
    let e = p.text(etag.clone());
    let m = p.int(now);
    let vn = p.push(Param::Int8(vnode));
    let rv = p.int(s.generation);
    let mut names = String::new();
    let mut phs = String::new();
    let mut sets = String::new();
    for (field, spec) in &s.config.index {
        let ph = format!(
            "{}{}",
            p.push(index_value(spec.kind, value.get(field))),
            cast(spec.kind)
        );
        let col = ident(field);
        names.push_str(&format!(", {col}"));
        phs.push_str(&format!(", {ph}"));
        sets.push_str(&format!(", {col} = {ph}"));
    }
    let t = s.table();
    let insert = format!(
        "INSERT INTO {t} (_key, _value, _etag, _mtime, _vnode, _rver{names}) VALUES ({k}, {v}, {e}, {m}, {vn}, {rv}{phs})"
    );
    let update_set = format!(
        "_id = nextval({}), _value = {v}, _etag = {e}, _mtime = {m}, _vnode = COALESCE({vn}, {t}._vnode), _rver = {rv}{sets}",
        s.serial()
    );
    if *cond == EtagCondition::Any && !need_prev {
        let sql = format!("{insert} ON CONFLICT (_key) DO UPDATE SET {update_set}");
        txn.execute_typed(&sql, &p.typed()).await?;
        return Ok(Written { etag, prev: None });
    }
    for _ in 0..10 {
        let cur = lock_current(txn, s, key).await?;
        match (&cur, cond) {
            (None, EtagCondition::MustMatch(_)) => return Err(conflict(s, key, cond, None)),
            (Some((cur_etag, _)), EtagCondition::MustNotExist) => {
                return Err(conflict(s, key, cond, Some(cur_etag.clone())));
            }
            (Some((cur_etag, _)), EtagCondition::MustMatch(want)) if cur_etag != want => {
                return Err(conflict(s, key, cond, Some(cur_etag.clone())));
            }
            _ => {}
        }
        match cur {
            Some((_, prev_text)) => {
                let sql = format!("UPDATE {t} SET {update_set} WHERE _key = {k}");
                txn.execute_typed(&sql, &p.typed()).await?;
                let prev = serde_json::from_str(&prev_text).map_err(|e| {
                    Error::internal(format!(
                        "stored value of {}::{key} is not JSON: {e}",
                        s.name
                    ))
                })?;
                return Ok(Written {
                    etag,
                    prev: Some(prev),
                });
            }
            None => {
                // Someone may create the key between our look and our insert: the insert then
                // does nothing (after waiting for their commit) and we look again.
                let sql = format!("{insert} ON CONFLICT (_key) DO NOTHING RETURNING _id");
                if !txn.query_typed(&sql, &p.typed()).await?.is_empty() {
                    return Ok(Written { etag, prev: None });
                }
            }
        }
    }
    Err(OpError::Moray(Error::no_peers(format!(
        "{}::{key} kept changing under a conditional write; retry",
        s.name
    ))))
}

/// Deletes a record under `cond`; returns its value.
pub(crate) async fn delete_row(
    txn: &impl GenericClient,
    s: &BucketSchema,
    key: &str,
    cond: &EtagCondition,
) -> Op<Value> {
    let t = s.table();
    let rows = match cond {
        EtagCondition::Any => {
            let sql = format!("DELETE FROM {t} WHERE _key = $1 RETURNING _value");
            txn.query_typed(&sql, &[(&key, Type::TEXT)]).await?
        }
        EtagCondition::MustMatch(want) => {
            let sql = format!("DELETE FROM {t} WHERE _key = $1 AND _etag = $2 RETURNING _value");
            let rows = txn
                .query_typed(&sql, &[(&key, Type::TEXT), (want, Type::TEXT)])
                .await?;
            if rows.is_empty()
                && let Some((actual, _)) = lock_current(txn, s, key).await?
            {
                return Err(conflict(s, key, cond, Some(actual)));
            }
            rows
        }
        EtagCondition::MustNotExist => {
            return Err(OpError::Moray(Error::invalid_argument(
                "delObject with etag null (must not exist) can never succeed",
            )));
        }
    };
    let Some(row) = rows.first() else {
        return Err(OpError::Moray(Error::ObjectNotFound {
            bucket: s.name.clone(),
            key: key.to_owned(),
        }));
    };
    let text: String = row.try_get(0)?;
    Ok(serde_json::from_str(&text).map_err(|e| {
        Error::internal(format!(
            "stored value of {}::{key} is not JSON: {e}",
            s.name
        ))
    })?)
}

/// `putObject`: write plus triggers.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn put(
    db: &Db,
    txn: &tokio_postgres::Transaction<'_>,
    bucket: &str,
    key: &str,
    value: &Value,
    cond: &EtagCondition,
    vnode: Option<i64>,
    ctx: &mut TxnCtx,
) -> Op<String> {
    validate_record(key, value)?;
    let s = load_bucket(db, txn, bucket).await?;
    let has_triggers = !s.config.post.is_empty();
    let w = write_row(txn, &s, key, value, cond, vnode, ctx.now_ms, has_triggers).await?;
    if has_triggers {
        let ev = Event::Put {
            prev: w.prev.as_ref(),
            new: value,
        };
        triggers::run_post(db, txn, &s, key, ev, ctx).await?;
    }
    Ok(w.etag)
}

/// `delObject`: delete plus triggers.
pub(crate) async fn del(
    db: &Db,
    txn: &tokio_postgres::Transaction<'_>,
    bucket: &str,
    key: &str,
    cond: &EtagCondition,
    ctx: &mut TxnCtx,
) -> Op<()> {
    let s = load_bucket(db, txn, bucket).await?;
    let prev = delete_row(txn, &s, key, cond).await?;
    triggers::run_post(db, txn, &s, key, Event::Delete { prev: &prev }, ctx).await
}

/// Renders a record line (`findObjects`) or body (`getObject`) straight from the stored text.
pub(crate) fn record_json(
    bucket: &str,
    key: &str,
    value_text: &str,
    id: i64,
    etag: &str,
    mtime: i64,
    count: Option<i64>,
) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut out = format!(
        "{{\"bucket\":{},\"key\":{},\"value\":{value_text},\"_id\":{id},\"_etag\":{},\"_mtime\":{mtime}",
        q(bucket),
        q(key),
        q(etag.trim_end())
    );
    if let Some(c) = count {
        out.push_str(&format!(",\"_count\":{c}"));
    }
    out.push('}');
    out
}

/// `getObject`: the record's JSON.
pub(crate) async fn get(db: &Db, bucket: &str, key: &str) -> Op<String> {
    let conn = db.conn().await?;
    let s = load_bucket(db, &*conn, bucket).await?;
    let sql = format!(
        "SELECT _value, _id, _etag, _mtime FROM {} WHERE _key = $1",
        s.table()
    );
    let rows = conn.query_typed(&sql, &[(&key, Type::TEXT)]).await?;
    let Some(r) = rows.first() else {
        return Err(OpError::Moray(Error::ObjectNotFound {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }));
    };
    let value: String = r.try_get(0)?;
    let id: i64 = r.try_get(1)?;
    let etag: String = r.try_get(2)?;
    let mtime: i64 = r.try_get(3)?;
    Ok(record_json(bucket, key, &value, id, &etag, mtime, None))
}

/// Parses a filter from a request.
pub(crate) fn parse_filter(filter: &str) -> Result<Filter, Error> {
    Filter::parse(filter).map_err(|e| Error::invalid_query(e.to_string()))
}

/// `updateObjects`: sets indexed fields on matching records (value and column), one row at a
/// time so each keeps an etag that is the CRC of its value.
pub(crate) async fn update_many(
    db: &Db,
    txn: &tokio_postgres::Transaction<'_>,
    bucket: &str,
    fields: &serde_json::Map<String, Value>,
    filter: &str,
    now: i64,
) -> Op<CountResult> {
    let s = load_bucket(db, txn, bucket).await?;
    if fields.is_empty() {
        return Err(OpError::Moray(Error::invalid_argument(
            "updateObjects needs at least one field",
        )));
    }
    for f in fields.keys() {
        if !s.config.index.contains_key(f) {
            return Err(OpError::Moray(Error::NotIndexed {
                bucket: s.name.clone(),
                attribute: f.clone(),
                message: format!(
                    "updateObjects may only set indexed fields; {f:?} is not indexed in {}",
                    s.name
                ),
            }));
        }
    }
    let f = parse_filter(filter)?;
    let mut p = Params::new();
    let w = compile(&s, &f, &mut p)?;
    let sql = format!(
        "SELECT _key, _value FROM {} WHERE {w} FOR UPDATE",
        s.table()
    );
    let rows = txn.query_typed(&sql, &p.typed()).await?;
    let mut count = 0;
    for r in rows {
        let key: String = r.try_get(0)?;
        let text: String = r.try_get(1)?;
        let mut value: Value = serde_json::from_str(&text).map_err(|e| {
            Error::internal(format!("stored value of {bucket}::{key} is not JSON: {e}"))
        })?;
        if let Some(obj) = value.as_object_mut() {
            for (k, v) in fields {
                obj.insert(k.clone(), v.clone());
            }
        }
        write_row(txn, &s, &key, &value, &EtagCondition::Any, None, now, false).await?;
        count += 1;
    }
    Ok(CountResult { count, etag: None })
}

/// `deleteMany`: deletes matching records (up to `limit`), running triggers for each.
pub(crate) async fn delete_many(
    db: &Db,
    txn: &tokio_postgres::Transaction<'_>,
    bucket: &str,
    filter: &str,
    limit: Option<u64>,
    ctx: &mut TxnCtx,
) -> Op<CountResult> {
    let s = load_bucket(db, txn, bucket).await?;
    let f = parse_filter(filter)?;
    let mut p = Params::new();
    let w = compile(&s, &f, &mut p)?;
    let lim = match limit {
        Some(n) => format!(" LIMIT {}", p.int(i64::try_from(n).unwrap_or(i64::MAX))),
        None => String::new(),
    };
    let t = s.table();
    let sql = format!(
        "DELETE FROM {t} WHERE _key IN (SELECT _key FROM {t} WHERE {w}{lim} FOR UPDATE) RETURNING _key, _value"
    );
    let rows = txn.query_typed(&sql, &p.typed()).await?;
    let mut count = 0;
    for r in rows {
        let key: String = r.try_get(0)?;
        let text: String = r.try_get(1)?;
        let prev: Value = serde_json::from_str(&text).map_err(|e| {
            Error::internal(format!("stored value of {bucket}::{key} is not JSON: {e}"))
        })?;
        triggers::run_post(db, txn, &s, &key, Event::Delete { prev: &prev }, ctx).await?;
        count += 1;
    }
    Ok(CountResult { count, etag: None })
}

/// `batch`: every operation in the caller's transaction, in order.
pub(crate) async fn batch(
    db: &Db,
    txn: &tokio_postgres::Transaction<'_>,
    ops: &[BatchOp],
    vnodes: &std::collections::BTreeMap<usize, u64>,
    ctx: &mut TxnCtx,
) -> Op<BatchResult> {
    let mut results = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let r = match op {
            BatchOp::Put {
                bucket,
                key,
                value,
                options,
            } => {
                let vnode = vnodes.get(&i).and_then(|v| i64::try_from(*v).ok());
                let etag = put(db, txn, bucket, key, value, &options.etag, vnode, ctx).await?;
                BatchOpResult {
                    bucket: bucket.clone(),
                    key: Some(key.clone()),
                    etag: Some(etag),
                    count: None,
                }
            }
            BatchOp::Delete {
                bucket,
                key,
                options,
            } => {
                del(db, txn, bucket, key, &options.etag, ctx).await?;
                BatchOpResult {
                    bucket: bucket.clone(),
                    key: Some(key.clone()),
                    etag: None,
                    count: None,
                }
            }
            BatchOp::Update {
                bucket,
                fields,
                filter,
            } => {
                let c = update_many(db, txn, bucket, fields, filter, ctx.now_ms).await?;
                BatchOpResult {
                    bucket: bucket.clone(),
                    key: None,
                    etag: None,
                    count: Some(c.count),
                }
            }
            BatchOp::DeleteMany { bucket, filter } => {
                let c = delete_many(db, txn, bucket, filter, None, ctx).await?;
                BatchOpResult {
                    bucket: bucket.clone(),
                    key: None,
                    etag: None,
                    count: Some(c.count),
                }
            }
        };
        results.push(r);
    }
    Ok(BatchResult { results })
}

/// `reindexObjects`: fills the columns of new indexes for up to `count` rows written under an
/// older schema generation; when none remain, the new indexes become usable by filters.
pub(crate) async fn reindex(
    db: &Db,
    txn: &tokio_postgres::Transaction<'_>,
    bucket: &str,
    count: u64,
) -> Op<ReindexResult> {
    // Always the stored schema: the cache may predate the update being reindexed for.
    let s = buckets::load(txn, bucket)
        .await?
        .ok_or_else(|| Error::BucketNotFound {
            bucket: bucket.to_owned(),
        })?;
    let t = s.table();
    let n = i64::try_from(count.max(1)).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT _key, _value FROM {t} WHERE _rver < $1 ORDER BY _rver LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let rows = txn
        .query_typed(&sql, &[(&s.generation, Type::INT8), (&n, Type::INT8)])
        .await?;
    let mut processed = 0u64;
    for r in &rows {
        let key: String = r.try_get(0)?;
        let text: String = r.try_get(1)?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let mut p = Params::new();
        let mut sets = format!("_rver = {}", p.int(s.generation));
        for (field, spec) in &s.config.index {
            let ph = p.push(index_value(spec.kind, value.get(field)));
            sets.push_str(&format!(", {} = {ph}{}", ident(field), cast(spec.kind)));
        }
        let k = p.text(key);
        txn.execute_typed(
            &format!("UPDATE {t} SET {sets} WHERE _key = {k}"),
            &p.typed(),
        )
        .await?;
        processed += 1;
    }
    let rem = txn
        .query_typed(
            &format!("SELECT count(*) FROM {t} WHERE _rver < $1"),
            &[(&s.generation, Type::INT8)],
        )
        .await?;
    let remaining: i64 = rem.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
    if remaining == 0 && !s.reindexing.is_empty() {
        let mut p = Params::new();
        let sql = format!(
            "UPDATE buckets_config SET reindexing = '[]' WHERE name = {} AND generation = {}",
            p.text(bucket),
            p.int(s.generation)
        );
        txn.execute_typed(&sql, &p.typed()).await?;
        db.forget_bucket(bucket);
    }
    Ok(ReindexResult {
        processed,
        remaining: u64::try_from(remaining).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_crc32_hex() {
        assert_eq!(etag_of(""), "00000000");
        assert_eq!(etag_of("{}"), format!("{:08X}", crc32fast::hash(b"{}")));
        assert_eq!(etag_of("{\"a\":1}").len(), 8);
    }

    #[test]
    fn record_lines_are_valid_json() {
        let line = record_json("b", "k\"\n", "{\"a\":[1,2]}", 7, "ABCDEF01", 12, Some(3));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["key"], "k\"\n");
        assert_eq!(v["value"]["a"][1], 2);
        assert_eq!(v["_count"], 3);
        let r: crate::types::ObjectRecord = serde_json::from_value(v).unwrap();
        assert_eq!(r.id, 7);
        assert_eq!(r.count, Some(3));
    }

    #[test]
    fn records_are_validated() {
        assert!(validate_record("", &serde_json::json!({})).is_err());
        assert!(validate_record("k", &serde_json::json!([1])).is_err());
        assert!(validate_record("k\0", &serde_json::json!({})).is_err());
        assert!(validate_record("k", &serde_json::json!({"a": 1})).is_ok());
    }
}
