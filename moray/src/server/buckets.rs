//! Buckets in Postgres: the catalog table, one table per bucket, and schema changes that never
//! queue an exclusive lock behind running queries.
//!
//! Catalog: `buckets_config(name, config JSON, reindexing JSON array, generation, mtime)`.
//! Bucket `b`: sequence `b_serial` and table
//! `b(_id, _key PRIMARY KEY, _value JSON text, _etag, _mtime, _vnode, _rver, <index columns>)`.
//! `_rver` is the bucket's schema generation when the row was last written: rows written
//! before an index was added have an older one, and `reindexObjects` finds them by it.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::db::{Db, Op, OpError, Params};
use crate::error::Error;
use crate::schema::{TRIGGER_DELETE_LOG, TRIGGER_DIRCOUNT};
use crate::types::{Bucket, BucketConfig, IndexSpec, IndexType};

pub(crate) const CATALOG_DDL: &str = "CREATE TABLE IF NOT EXISTS buckets_config (\
    name TEXT PRIMARY KEY, \
    config TEXT NOT NULL, \
    reindexing TEXT NOT NULL DEFAULT '[]', \
    generation BIGINT NOT NULL DEFAULT 1, \
    mtime BIGINT NOT NULL)";

/// Longest bucket name: leaves room for `_serial` and `_<field>_idx` within Postgres' 63-byte
/// identifiers.
pub(crate) const MAX_BUCKET_NAME: usize = 31;
/// Longest indexed field name (see [`MAX_BUCKET_NAME`]).
pub(crate) const MAX_FIELD_NAME: usize = 27;

/// Triggers this server knows how to run.
pub(crate) const KNOWN_POST_TRIGGERS: &[&str] = &[TRIGGER_DIRCOUNT, TRIGGER_DELETE_LOG];

/// How long an `ALTER TABLE` may wait for its lock before giving up (and being retried), so it
/// never holds up the queries queued behind it for longer than this.
const DDL_LOCK_TIMEOUT: &str = "500ms";
const DDL_ATTEMPTS: u32 = 20;

/// A bucket as the server uses it.
#[derive(Debug, Clone)]
pub(crate) struct BucketSchema {
    pub name: String,
    pub config: BucketConfig,
    /// Indexes whose columns are not yet filled for every row.
    pub reindexing: BTreeSet<String>,
    pub generation: i64,
    pub mtime: i64,
}

impl BucketSchema {
    pub fn to_bucket(&self) -> Bucket {
        Bucket {
            name: self.name.clone(),
            index: self.config.index.clone(),
            pre: self.config.pre.clone(),
            post: self.config.post.clone(),
            options: self.config.options.clone(),
            reindexing: self.reindexing.iter().cloned().collect(),
            mtime: u64::try_from(self.mtime).unwrap_or(0),
        }
    }

    /// The quoted table name.
    pub fn table(&self) -> String {
        ident(&self.name)
    }

    /// The quoted sequence name as a string literal for `nextval`.
    pub fn serial(&self) -> String {
        format!("'\"{}_serial\"'", self.name)
    }
}

/// Quotes an identifier. Names are validated to `[A-Za-z_][A-Za-z0-9_]*` before they get here;
/// quoting keeps case and keeps reserved words usable.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn valid_ident(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Checks a bucket name.
pub(crate) fn validate_name(name: &str) -> Result<(), Error> {
    let bad = |m: &str| Error::InvalidBucketName {
        name: name.to_owned(),
        message: format!("invalid bucket name {name:?}: {m}"),
    };
    if name.is_empty() || name.len() > MAX_BUCKET_NAME {
        return Err(bad(&format!("must be 1 to {MAX_BUCKET_NAME} characters")));
    }
    if !valid_ident(name) {
        return Err(bad("must match [A-Za-z_][A-Za-z0-9_]*"));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("moray") || lower.starts_with("pg_") || lower == "buckets_config" {
        return Err(bad(
            "names starting with moray or pg_, and buckets_config, are reserved",
        ));
    }
    Ok(())
}

/// Checks a bucket configuration.
pub(crate) fn validate_config(config: &BucketConfig) -> Result<(), Error> {
    let bad = |m: String| Error::InvalidBucketConfig { message: m };
    for field in config.index.keys() {
        if field.is_empty() || field.len() > MAX_FIELD_NAME || !valid_ident(field) {
            return Err(bad(format!(
                "index name {field:?} must match [A-Za-z_][A-Za-z0-9_]* and be at most {MAX_FIELD_NAME} characters"
            )));
        }
        if field.starts_with('_') {
            return Err(bad(format!(
                "index name {field:?}: names starting with '_' are reserved for Moray's own columns"
            )));
        }
    }
    for (field, spec) in &config.index {
        if spec.unique && spec.kind.is_array() {
            return Err(bad(format!(
                "index {field:?}: array indexes cannot be unique"
            )));
        }
    }
    if let Some(p) = config.pre.first() {
        return Err(bad(format!("unknown pre trigger {p:?} (none are defined)")));
    }
    let mut seen = BTreeSet::new();
    for t in &config.post {
        if !KNOWN_POST_TRIGGERS.contains(&t.as_str()) {
            return Err(bad(format!(
                "unknown post trigger {t:?} (known: {})",
                KNOWN_POST_TRIGGERS.join(", ")
            )));
        }
        if !seen.insert(t) {
            return Err(bad(format!("post trigger {t:?} listed twice")));
        }
    }
    Ok(())
}

pub(crate) fn column_type(kind: IndexType) -> &'static str {
    match kind {
        IndexType::String => "TEXT",
        IndexType::Number => "NUMERIC",
        IndexType::Boolean => "BOOLEAN",
        IndexType::StringArray => "TEXT[]",
        IndexType::NumberArray => "NUMERIC[]",
        IndexType::BooleanArray => "BOOLEAN[]",
    }
}

fn index_name(bucket: &str, field: &str) -> String {
    format!("{bucket}_{field}_idx")
}

/// The statement creating the index of one field (`concurrently` for existing tables).
fn index_ddl(bucket: &str, field: &str, spec: &IndexSpec, concurrently: bool) -> String {
    let conc = if concurrently { " CONCURRENTLY" } else { "" };
    let unique = if spec.unique { "UNIQUE " } else { "" };
    let using = if spec.kind.is_array() {
        " USING GIN"
    } else {
        ""
    };
    format!(
        "CREATE {unique}INDEX{conc} IF NOT EXISTS {} ON {}{using} ({})",
        ident(&index_name(bucket, field)),
        ident(bucket),
        ident(field)
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn row_to_schema(row: &tokio_postgres::Row) -> Op<BucketSchema> {
    let name: String = row.try_get(0)?;
    let config: String = row.try_get(1)?;
    let reindexing: String = row.try_get(2)?;
    let config: BucketConfig = serde_json::from_str(&config)
        .map_err(|e| Error::internal(format!("stored config of bucket {name} is corrupt: {e}")))?;
    let reindexing: BTreeSet<String> = serde_json::from_str(&reindexing).map_err(|e| {
        Error::internal(format!(
            "stored reindex list of bucket {name} is corrupt: {e}"
        ))
    })?;
    Ok(BucketSchema {
        name,
        config,
        reindexing,
        generation: row.try_get(3)?,
        mtime: row.try_get(4)?,
    })
}

const SELECT_BUCKET: &str =
    "SELECT name, config, reindexing, generation, mtime FROM buckets_config";

/// Reads a bucket from the catalog (no cache).
pub(crate) async fn load(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
) -> Op<Option<BucketSchema>> {
    let mut p = Params::new();
    let sql = format!("{SELECT_BUCKET} WHERE name = {}", p.text(name));
    let rows = client.query_typed(&sql, &p.typed()).await?;
    rows.first().map(row_to_schema).transpose()
}

/// Every bucket.
pub(crate) async fn list(db: &Db) -> Op<Vec<Bucket>> {
    db.ensure_catalog().await?;
    let conn = db.conn().await?;
    let rows = conn
        .query_typed(&format!("{SELECT_BUCKET} ORDER BY name"), &[])
        .await?;
    rows.iter()
        .map(|r| row_to_schema(r).map(|s| s.to_bucket()))
        .collect()
}

/// Creates a bucket: catalog row, sequence, table and indexes in one transaction (the table is
/// new and empty, so building its indexes takes no time and blocks nobody).
pub(crate) async fn create(db: &Db, name: &str, config: &BucketConfig) -> Op<Bucket> {
    validate_name(name)?;
    validate_config(config)?;
    db.ensure_catalog().await?;
    let mut conn = db.conn().await?;
    let txn = conn.transaction().await?;
    let mtime = now_ms();
    let cfg_json = serde_json::to_string(config).map_err(|e| Error::internal(e.to_string()))?;
    let mut p = Params::new();
    let sql = format!(
        "INSERT INTO buckets_config (name, config, reindexing, generation, mtime) \
         VALUES ({}, {}, '[]', 1, {}) ON CONFLICT (name) DO NOTHING RETURNING name",
        p.text(name),
        p.text(cfg_json),
        p.int(mtime)
    );
    if txn.query_typed(&sql, &p.typed()).await?.is_empty() {
        return Err(OpError::Moray(Error::BucketConflict {
            bucket: name.to_owned(),
        }));
    }
    let t = ident(name);
    let seq = ident(&format!("{name}_serial"));
    let mut cols = String::new();
    for (field, spec) in &config.index {
        cols.push_str(&format!(", {} {}", ident(field), column_type(spec.kind)));
    }
    let mut ddl = format!(
        "CREATE SEQUENCE {seq};\n\
         CREATE TABLE {t} (\
           _id BIGINT NOT NULL DEFAULT nextval('{seq}'), \
           _key TEXT PRIMARY KEY, \
           _value TEXT NOT NULL, \
           _etag CHAR(8) NOT NULL, \
           _mtime BIGINT NOT NULL, \
           _vnode BIGINT, \
           _rver BIGINT NOT NULL DEFAULT 1{cols});\n\
         ALTER SEQUENCE {seq} OWNED BY {t}._id;\n"
    );
    for internal in ["_id", "_mtime", "_etag", "_vnode", "_rver"] {
        ddl.push_str(&format!(
            "CREATE INDEX {} ON {t} ({internal});\n",
            ident(&format!("{name}{internal}_idx"))
        ));
    }
    for (field, spec) in &config.index {
        ddl.push_str(&index_ddl(name, field, spec, false));
        ddl.push_str(";\n");
    }
    match txn.batch_execute(&ddl).await {
        Ok(()) => {}
        // A leftover table of the same name (catalog row lost): refuse rather than adopt it.
        Err(e) if matches!(e.code(), Some(c) if *c == SqlState::DUPLICATE_TABLE) => {
            return Err(OpError::Moray(Error::BucketConflict {
                bucket: name.to_owned(),
            }));
        }
        Err(e) => return Err(e.into()),
    }
    txn.commit().await?;
    db.forget_bucket(name);
    Ok(BucketSchema {
        name: name.to_owned(),
        config: config.clone(),
        reindexing: BTreeSet::new(),
        generation: 1,
        mtime,
    }
    .to_bucket())
}

/// Runs one short DDL statement under a short `lock_timeout`, retrying while the lock is busy:
/// an `ALTER TABLE` must never sit in the lock queue of a hot table (every query behind it
/// would wait too).
async fn ddl_with_lock_timeout(client: &tokio_postgres::Client, stmt: &str) -> Op<()> {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=DDL_ATTEMPTS {
        let sql = format!("BEGIN; SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'; {stmt}; COMMIT;");
        match client.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.code(), Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE) => {
                let _ = client.batch_execute("ROLLBACK").await;
                tracing::info!(attempt, stmt, "table busy; schema change will retry");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e.into());
            }
        }
    }
    Err(OpError::Moray(Error::no_peers(format!(
        "could not get a lock for {stmt:?} after {DDL_ATTEMPTS} short attempts; the table is busy, try again"
    ))))
}

/// Builds an index without blocking writers; an invalid leftover from an earlier failed
/// attempt is dropped first.
async fn create_index_concurrently(
    client: &tokio_postgres::Client,
    bucket: &str,
    field: &str,
    spec: &IndexSpec,
) -> Op<()> {
    let name = index_name(bucket, field);
    let mut p = Params::new();
    let sql = format!(
        "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = {}",
        p.text(name.clone())
    );
    if let Some(row) = client.query_typed(&sql, &p.typed()).await?.first() {
        let valid: bool = row.try_get(0)?;
        if !valid {
            client
                .batch_execute(&format!(
                    "DROP INDEX CONCURRENTLY IF EXISTS {}",
                    ident(&name)
                ))
                .await?;
        }
    }
    if let Err(e) = client
        .batch_execute(&index_ddl(bucket, field, spec, true))
        .await
    {
        let _ = client
            .batch_execute(&format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {}",
                ident(&name)
            ))
            .await;
        return Err(e.into());
    }
    Ok(())
}

/// Changes a bucket's configuration. Added index columns are added without a default (a
/// catalog-only change) under a short lock timeout, their indexes built concurrently; removed
/// ones are dropped the same way. The catalog row is updated last, with compare-and-swap on the
/// generation, so a concurrent update fails instead of being lost.
pub(crate) async fn update(
    db: &Db,
    name: &str,
    config: &BucketConfig,
    no_reindex: bool,
) -> Op<Bucket> {
    validate_config(config)?;
    db.ensure_catalog().await?;
    // DDL may outlast the statement timeout (index builds on big tables): own connection,
    // no statement timeout.
    let client = db.dedicated().await?;
    client.batch_execute("SET statement_timeout = 0").await?;
    let cur = load(&client, name)
        .await?
        .ok_or_else(|| Error::BucketNotFound {
            bucket: name.to_owned(),
        })?;
    let (have, want) = (cur.config.options.version, config.options.version);
    if have > 0 && want <= have {
        return Err(OpError::Moray(Error::BucketVersion {
            bucket: name.to_owned(),
            current: have,
            requested: want,
        }));
    }
    for (field, spec) in &config.index {
        if let Some(old) = cur.config.index.get(field)
            && old != spec
        {
            return Err(OpError::Moray(Error::InvalidBucketConfig {
                message: format!(
                    "index {field:?} changes from {:?} to {:?}; remove it in one update and add it back in another",
                    old, spec
                ),
            }));
        }
    }
    let t = ident(name);
    let added: Vec<(&String, &IndexSpec)> = config
        .index
        .iter()
        .filter(|(f, _)| !cur.config.index.contains_key(*f))
        .collect();
    let removed: Vec<&String> = cur
        .config
        .index
        .keys()
        .filter(|f| !config.index.contains_key(*f))
        .collect();
    for (field, spec) in &added {
        ddl_with_lock_timeout(
            &client,
            &format!(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {} {}",
                ident(field),
                column_type(spec.kind)
            ),
        )
        .await?;
        create_index_concurrently(&client, name, field, spec).await?;
    }
    for field in &removed {
        client
            .batch_execute(&format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {}",
                ident(&index_name(name, field))
            ))
            .await?;
        ddl_with_lock_timeout(
            &client,
            &format!("ALTER TABLE {t} DROP COLUMN IF EXISTS {}", ident(field)),
        )
        .await?;
    }
    let mut reindexing: BTreeSet<String> = cur
        .reindexing
        .iter()
        .filter(|f| config.index.contains_key(*f))
        .cloned()
        .collect();
    if !no_reindex {
        reindexing.extend(added.iter().map(|(f, _)| (*f).clone()));
    }
    let mtime = now_ms();
    let cfg_json = serde_json::to_string(config).map_err(|e| Error::internal(e.to_string()))?;
    let re_json = serde_json::to_string(&reindexing).map_err(|e| Error::internal(e.to_string()))?;
    let mut p = Params::new();
    let sql = format!(
        "UPDATE buckets_config SET config = {}, reindexing = {}, generation = generation + 1, mtime = {} \
         WHERE name = {} AND generation = {} RETURNING generation",
        p.text(cfg_json),
        p.text(re_json),
        p.int(mtime),
        p.text(name),
        p.int(cur.generation)
    );
    let rows = client.query_typed(&sql, &p.typed()).await?;
    let Some(row) = rows.first() else {
        let now = load(&client, name).await?;
        return Err(OpError::Moray(match now {
            None => Error::BucketNotFound {
                bucket: name.to_owned(),
            },
            Some(n) => Error::BucketVersion {
                bucket: name.to_owned(),
                current: n.config.options.version,
                requested: want,
            },
        }));
    };
    let generation: i64 = row.try_get(0)?;
    db.forget_bucket(name);
    Ok(BucketSchema {
        name: name.to_owned(),
        config: config.clone(),
        reindexing,
        generation,
        mtime,
    }
    .to_bucket())
}

/// Drops a bucket with its records. The `DROP TABLE` waits for its lock only briefly (retried),
/// like every other schema change.
pub(crate) async fn delete(db: &Db, name: &str) -> Op<()> {
    db.ensure_catalog().await?;
    let client = db.dedicated().await?;
    if load(&client, name).await?.is_none() {
        return Err(OpError::Moray(Error::BucketNotFound {
            bucket: name.to_owned(),
        }));
    }
    // The name exists in the catalog, so it passed validation: [A-Za-z0-9_] only. Quoted as
    // a literal anyway.
    let lit = format!("'{}'", name.replace('\'', "''"));
    ddl_with_lock_timeout(
        &client,
        &format!(
            "DELETE FROM buckets_config WHERE name = {lit}; DROP TABLE IF EXISTS {}; DROP SEQUENCE IF EXISTS {}",
            ident(name),
            ident(&format!("{name}_serial"))
        ),
    )
    .await?;
    db.forget_bucket(name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["manta", "a", "_x", "A_1", &"b".repeat(MAX_BUCKET_NAME)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "a-b",
            "a b",
            "a\"b",
            "a;drop",
            "moray_x",
            "MORAYx",
            "pg_class",
            "buckets_config",
            &"b".repeat(MAX_BUCKET_NAME + 1),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configs() {
        let ok = BucketConfig::new(1)
            .with_index("a", IndexSpec::unique(IndexType::String))
            .with_post(TRIGGER_DIRCOUNT);
        assert!(validate_config(&ok).is_ok());
        for bad in [
            BucketConfig::new(1).with_index("_id", IndexSpec::new(IndexType::String)),
            BucketConfig::new(1).with_index("a b", IndexSpec::new(IndexType::String)),
            BucketConfig::new(1)
                .with_index("x\"); drop table t; --", IndexSpec::new(IndexType::String)),
            BucketConfig::new(1).with_index("a", IndexSpec::unique(IndexType::StringArray)),
            BucketConfig::new(1).with_post("nope"),
            BucketConfig::new(1)
                .with_post(TRIGGER_DIRCOUNT)
                .with_post(TRIGGER_DIRCOUNT),
            BucketConfig {
                pre: vec!["x".into()],
                ..BucketConfig::default()
            },
        ] {
            assert!(validate_config(&bad).is_err(), "{bad:?}");
        }
    }
}
