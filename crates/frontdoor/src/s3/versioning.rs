//! Bucket versioning: every write of a key in a bucket with versioning enabled makes a new
//! version, the one it replaces is kept, a delete without a version id leaves a delete
//! marker, and any version can be read, copied or deleted by its id.
//!
//! # Data model
//! - The current version of a key stays where every object is: its record in
//!   `manta_s3_objects` under `<bucket>/<key>`, now with a `versionId` (none for the "null"
//!   version). So reads without a version id, listings, the Manta API's view of buckets and
//!   jobs see exactly what they saw before.
//! - Every other version, and every delete marker, is a record in `manta_s3_versions` under
//!   `<bucket>/<order>`: the object record as it was, plus `vorder` (the order) and `vid`
//!   (the version id, or "null"). A delete marker is a small record of type `deletemarker`.
//! - A version id is 32 hex digits: the time it was made, counted down from the end of time
//!   (so ids sort newest first), then 64 random bits. A version moved out of the current slot
//!   keeps its id as its order; the "null" version gets an order from its modification time.
//! - The key's newest version is current unless it is a delete marker; then the key has no
//!   current record and reads answer `NoSuchKey` (with `x-amz-delete-marker`).
//!
//! # Guarantees
//! - Replacing the current version and keeping the old one is one Moray transaction
//!   (the two buckets share the S3 bucket's shard), conditional on the Moray etag of the
//!   record that was replaced: a concurrent write makes the transaction fail and it is
//!   retried against the new current version, so no version is ever lost or kept twice.
//! - Bytes stay while any version names them: garbage collection looks for records of an
//!   object in `manta_s3_versions` as well as in the current buckets, and a version deleted
//!   for good is logged for collection by the delete-log trigger of `manta_s3_versions`.
//! - Deleting the current version by its id makes the next newest version current (if it is
//!   not a delete marker), in the same transaction.
//!
//! # Limits
//! Turning versioning on takes effect at once on this front door and within the bucket cache's
//! lifetime on the others (S3 also asks clients to wait after enabling it). MFA delete,
//! lifecycle rules for older versions, and tags or ACLs of an older version are not offered.

use manta_types::MetadataRecord;
use moray::EtagCondition;
use moray::filter::Filter;
use moray::types::{BatchOp, DelOptions, PutOptions};
use s3s::{S3Error, S3ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::conditional::{self, Current, DeleteConditions, WriteCondition};
use super::error::{S3Result, conditional_conflict, internal, invalid_argument, s3err};
use super::list::{self, Entry, Query};
use super::meta::{OBJECTS, VERSIONS, Versioned};
use super::service::S3Api;

/// The indexed field holding a version's order in `manta_s3_versions`.
pub const ORDER: &str = "vorder";
/// The indexed field holding a version's id ("null" for the null version).
pub const VID: &str = "vid";
/// The version id of objects written without versioning.
pub const NULL: &str = "null";
/// The record type of a delete marker.
const MARKER_TYPE: &str = "deletemarker";

/// How many times a write is tried again when the current version changed under it.
const ATTEMPTS: usize = 8;

/// A bucket's versioning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Versioning {
    /// Never enabled: every object is the null version, replaced in place.
    #[default]
    Off,
    /// Every write makes a new version.
    Enabled,
    /// Writes make the null version (replacing it); versions already made are kept.
    Suspended,
}

impl Versioning {
    /// True when versioning was never enabled.
    pub fn is_off(&self) -> bool {
        *self == Versioning::Off
    }

    /// The status S3 answers (`None` for a bucket that never had versioning).
    pub fn status(self) -> Option<s3s::dto::BucketVersioningStatus> {
        use s3s::dto::BucketVersioningStatus as S;
        match self {
            Versioning::Off => None,
            Versioning::Enabled => Some(S::from_static(S::ENABLED)),
            Versioning::Suspended => Some(S::from_static(S::SUSPENDED)),
        }
    }

    /// The state a `PutBucketVersioning` status asks for.
    ///
    /// # Errors
    /// `MalformedXML` for a missing or unknown status.
    pub fn requested(status: Option<&str>) -> S3Result<Versioning> {
        match status {
            Some("Enabled") => Ok(Versioning::Enabled),
            Some("Suspended") => Ok(Versioning::Suspended),
            _ => Err(s3err(
                S3ErrorCode::MalformedXML,
                "The versioning status must be Enabled or Suspended",
            )),
        }
    }
}

/// The order (and id) of a version made at `micros` since the epoch, with `salt`.
fn order_at(micros: u64, salt: u64) -> String {
    format!("{:016x}{salt:016x}", u64::MAX - micros)
}

fn random_salt() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// A new version id (ids made later sort first).
pub fn new_version_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    order_at(micros, random_salt())
}

/// True for a version id this service could have made ("null" included).
pub fn valid_version_id(v: &str) -> bool {
    v == NULL
        || (v.len() == 32
            && v.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Checks a version id given by a client.
///
/// # Errors
/// `InvalidArgument` ("Invalid version id specified"), as S3 answers ids it never made.
pub fn check_version_id(v: &str) -> S3Result<()> {
    if valid_version_id(v) {
        Ok(())
    } else {
        Err(invalid_argument("Invalid version id specified"))
    }
}

/// The Moray key of a version record.
pub fn moray_key(bucket: &str, order: &str) -> String {
    format!("{bucket}/{order}")
}

/// The version id of a current object record.
pub fn vid_of(rec: &MetadataRecord) -> &str {
    rec.version_id.as_deref().unwrap_or(NULL)
}

/// The order a current object record takes when it becomes an older version.
fn order_of(rec: &MetadataRecord) -> String {
    match &rec.version_id {
        Some(v) => v.clone(),
        None => order_at(rec.mtime.saturating_mul(1000), random_salt()),
    }
}

/// A delete marker, as stored in `manta_s3_versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteMarker {
    /// Always [`MARKER_TYPE`].
    #[serde(rename = "type")]
    kind: String,
    /// The S3 bucket (indexed, as objects).
    pub dirname: String,
    /// The key.
    pub name: String,
    /// Uuid of the bucket's owner.
    pub owner: String,
    /// When it was made, epoch ms.
    pub mtime: u64,
    /// Its version id ("null" when made while versioning was suspended).
    pub vid: String,
    /// Its order.
    pub vorder: String,
}

/// An older version or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// An object version, with its order.
    Object(Box<MetadataRecord>, String),
    /// A delete marker.
    Marker(DeleteMarker),
}

impl Version {
    /// Reads a record of `manta_s3_versions`.
    ///
    /// # Errors
    /// `InternalError` for a record this code cannot read.
    pub fn from_value(v: Value) -> S3Result<Version> {
        if v.get("type").and_then(Value::as_str) == Some(MARKER_TYPE) {
            return serde_json::from_value(v)
                .map(Version::Marker)
                .map_err(|e| internal(format!("unreadable delete marker: {e}")));
        }
        let order = v
            .get(ORDER)
            .and_then(Value::as_str)
            .ok_or_else(|| internal("a version record without its order"))?
            .to_owned();
        let rec = super::meta::object_record(v)?;
        Ok(Version::Object(Box::new(rec), order))
    }

    /// The record as stored.
    pub fn to_value(&self) -> Value {
        match self {
            Version::Object(rec, order) => {
                let mut v = rec.to_value();
                v[ORDER] = Value::String(order.clone());
                v[VID] = Value::String(vid_of(rec).to_owned());
                v
            }
            Version::Marker(m) => serde_json::to_value(m).expect("markers always serialise"),
        }
    }

    /// The key it is a version of.
    pub fn name(&self) -> &str {
        match self {
            Version::Object(rec, _) => &rec.name,
            Version::Marker(m) => &m.name,
        }
    }

    /// The owner of its bucket.
    pub fn owner(&self) -> &str {
        match self {
            Version::Object(rec, _) => &rec.owner,
            Version::Marker(m) => &m.owner,
        }
    }

    /// Its order.
    pub fn order(&self) -> &str {
        match self {
            Version::Object(_, o) => o,
            Version::Marker(m) => &m.vorder,
        }
    }

    /// Its version id.
    pub fn vid(&self) -> &str {
        match self {
            Version::Object(rec, _) => vid_of(rec),
            Version::Marker(m) => &m.vid,
        }
    }

    /// When it was made, epoch ms.
    pub fn mtime(&self) -> u64 {
        match self {
            Version::Object(rec, _) => rec.mtime,
            Version::Marker(m) => m.mtime,
        }
    }

    /// True for a delete marker.
    pub fn is_marker(&self) -> bool {
        matches!(self, Version::Marker(_))
    }

    fn bucket(&self) -> &str {
        match self {
            Version::Object(rec, _) => &rec.dirname,
            Version::Marker(m) => &m.dirname,
        }
    }

    /// Writes it (it must be new).
    fn put(&self) -> BatchOp {
        BatchOp::Put {
            bucket: VERSIONS.into(),
            key: moray_key(self.bucket(), self.order()),
            value: self.to_value(),
            options: PutOptions::must_not_exist(),
        }
    }
}

/// Deletes a version record read at `etag`.
fn delete_version_op(v: &Versioned<Version>) -> BatchOp {
    BatchOp::Delete {
        bucket: VERSIONS.into(),
        key: moray_key(v.rec.bucket(), v.rec.order()),
        options: DelOptions::if_match(v.etag.clone()),
    }
}

/// Writes a current object record on condition `cond`.
fn put_current_op(rec: &MetadataRecord, cond: EtagCondition) -> BatchOp {
    BatchOp::Put {
        bucket: OBJECTS.into(),
        key: rec.key.clone(),
        value: rec.to_value(),
        options: PutOptions { etag: cond },
    }
}

/// Removes the older null version of a key (a write while versioning is suspended replaces
/// it).
fn drop_null_op(owner: &str, bucket: &str, key: &str) -> BatchOp {
    BatchOp::DeleteMany {
        bucket: VERSIONS.into(),
        filter: Filter::and(vec![
            Filter::eq("dirname", bucket),
            Filter::eq("name", key),
            Filter::eq("owner", owner),
            Filter::eq(VID, NULL),
        ])
        .to_string(),
    }
}

/// What happens to the current version `prev` when a new version of its key arrives: the
/// operations that keep it (or let it go, for the null version while suspended).
fn retire_ops(
    mode: Versioning,
    prev: Option<&MetadataRecord>,
    owner: &str,
    bucket: &str,
    key: &str,
) -> Vec<BatchOp> {
    let mut ops = Vec::new();
    if let Some(p) = prev
        && (mode == Versioning::Enabled || p.version_id.is_some())
    {
        ops.push(Version::Object(Box::new(p.clone()), order_of(p)).put());
    }
    if mode == Versioning::Suspended {
        ops.push(drop_null_op(owner, bucket, key));
    }
    ops
}

/// Writes `rec` (a new object of its bucket, whose versioning is `mode`) as the current
/// version of its key, in one transaction with `with` (operations that must land with it),
/// on the client's condition `cond`. With versioning the record gets its version id here and
/// the version it replaces is kept. Answers the record's new Moray etag, or `Err` naming the
/// Moray bucket whose condition failed (`manta_s3_objects`: the client's condition no longer
/// holds).
///
/// # Errors
/// When Moray fails; `OperationAborted` when the key kept changing.
pub async fn write_current(
    api: &S3Api,
    mode: Versioning,
    rec: &mut MetadataRecord,
    cond: &WriteCondition,
    with: &[BatchOp],
) -> S3Result<Result<String, String>> {
    let at = with.len();
    let etag_at = |r: moray::types::BatchResult| {
        r.results
            .get(at)
            .and_then(|o| o.etag.clone())
            .ok_or_else(|| internal("the object's write answered no etag"))
    };
    if mode.is_off() {
        let mut ops = with.to_vec();
        ops.push(put_current_op(rec, cond.moray()));
        return match api.meta.transact(ops).await? {
            Ok(r) => etag_at(r).map(Ok),
            Err(bucket) => Ok(Err(bucket)),
        };
    }
    rec.version_id = (mode == Versioning::Enabled).then(new_version_id);
    let (owner, bucket, key) = (rec.owner.clone(), rec.dirname.clone(), rec.name.clone());
    for _ in 0..ATTEMPTS {
        let prev = api.meta.object(&owner, &bucket, &key).await?;
        let holds = match (cond, &prev) {
            (WriteCondition::Any, _) => true,
            (WriteCondition::Absent, p) => p.is_none(),
            (WriteCondition::Unchanged(e), Some(p)) => p.etag == *e,
            (WriteCondition::Unchanged(_), None) => false,
        };
        if !holds {
            return Ok(Err(OBJECTS.to_owned()));
        }
        let replace = match &prev {
            Some(p) => EtagCondition::MustMatch(p.etag.clone()),
            None => EtagCondition::MustNotExist,
        };
        let mut ops = with.to_vec();
        ops.push(put_current_op(rec, replace));
        ops.extend(retire_ops(
            mode,
            prev.as_ref().map(|p| &p.rec),
            &owner,
            &bucket,
            &key,
        ));
        match api.meta.transact(ops).await? {
            Ok(r) => return etag_at(r).map(Ok),
            Err(b) if b == OBJECTS && *cond == WriteCondition::Any => continue,
            Err(b) => return Ok(Err(b)),
        }
    }
    Err(busy())
}

/// `OperationAborted`: the key changed under every attempt.
fn busy() -> S3Error {
    s3err(
        S3ErrorCode::OperationAborted,
        "A conflicting operation is in progress against this object. Please try again.",
    )
}

/// `DeleteObject` without a version id in a bucket with versioning: the current version (if
/// any) becomes an older one and a delete marker becomes the newest. `cond` as for a delete
/// of an unversioned object. Answers the marker's version id.
///
/// # Errors
/// `PreconditionFailed`, `NoSuchKey` (conditions on a missing object),
/// `ConditionalRequestConflict`, Moray failures.
pub async fn delete_current(
    api: &S3Api,
    mode: Versioning,
    (owner, bucket, key): (&str, &str, &str),
    cond: &DeleteConditions,
) -> S3Result<String> {
    for _ in 0..ATTEMPTS {
        let prev = api.meta.object(owner, bucket, key).await?;
        if cond.any() {
            let cur = match &prev {
                Some(e) => {
                    let o = super::objects::object_of(&e.rec)?;
                    let c = Current {
                        etag: &o.etag,
                        mtime_ms: e.rec.mtime,
                    };
                    Some((c, o.content_length))
                }
                None => None,
            };
            conditional::check_delete(cur.as_ref().map(|(c, n)| (c, *n)), cond, key)?;
        }
        let vorder = new_version_id();
        let marker = DeleteMarker {
            kind: MARKER_TYPE.into(),
            dirname: bucket.into(),
            name: key.into(),
            owner: owner.into(),
            mtime: manta_types::time::now_ms(),
            vid: match mode {
                Versioning::Suspended => NULL.into(),
                _ => vorder.clone(),
            },
            vorder,
        };
        let mut ops = Vec::new();
        if let Some(p) = &prev {
            ops.push(BatchOp::Delete {
                bucket: OBJECTS.into(),
                key: p.rec.key.clone(),
                options: DelOptions::if_match(p.etag.clone()),
            });
        }
        ops.extend(retire_ops(
            mode,
            prev.as_ref().map(|p| &p.rec),
            owner,
            bucket,
            key,
        ));
        ops.push(Version::Marker(marker.clone()).put());
        match api.meta.transact(ops).await? {
            Ok(_) => return Ok(marker.vid),
            Err(_) if cond.any() => return Err(conditional_conflict()),
            Err(_) => continue,
        }
    }
    Err(busy())
}

/// Deletes version `vid` of `key` for good. When it was the newest, the next newest becomes
/// current (unless it is a delete marker). Answers whether a version was found, and whether
/// it was a delete marker.
///
/// # Errors
/// `InvalidArgument` for an id this service never makes; Moray failures.
pub async fn delete_version(
    api: &S3Api,
    (owner, bucket, key): (&str, &str, &str),
    vid: &str,
) -> S3Result<Option<bool>> {
    check_version_id(vid)?;
    for _ in 0..ATTEMPTS {
        let cur = api.meta.object(owner, bucket, key).await?;
        let mut ops = Vec::new();
        let (marker, promote) = match &cur {
            Some(c) if vid_of(&c.rec) == vid => {
                let next = api.meta.versions_of(owner, bucket, key, 1).await?;
                match next.into_iter().next() {
                    Some(n) if !n.rec.is_marker() => {
                        ops.push(delete_version_op(&n));
                        (false, Some((n, EtagCondition::MustMatch(c.etag.clone()))))
                    }
                    _ => {
                        ops.push(BatchOp::Delete {
                            bucket: OBJECTS.into(),
                            key: c.rec.key.clone(),
                            options: DelOptions::if_match(c.etag.clone()),
                        });
                        (false, None)
                    }
                }
            }
            _ => {
                let Some(v) = api.meta.version(owner, bucket, key, vid).await? else {
                    return Ok(None);
                };
                ops.push(delete_version_op(&v));
                let mut promote = None;
                if cur.is_none() {
                    // It may be the newest: then the one after it may become current.
                    let newest = api.meta.versions_of(owner, bucket, key, 2).await?;
                    if newest
                        .first()
                        .is_some_and(|n| n.rec.order() == v.rec.order())
                        && let Some(n) = newest.into_iter().nth(1)
                        && !n.rec.is_marker()
                    {
                        ops.push(delete_version_op(&n));
                        promote = Some((n, EtagCondition::MustNotExist));
                    }
                }
                (v.rec.is_marker(), promote)
            }
        };
        if let Some((n, cond)) = promote {
            let Version::Object(rec, _) = n.rec else {
                unreachable!("only objects are promoted")
            };
            ops.push(put_current_op(&rec, cond));
        }
        match api.meta.transact(ops).await? {
            Ok(_) => return Ok(Some(marker)),
            Err(_) => continue,
        }
    }
    Err(busy())
}

/// What a read of a version found.
#[derive(Debug)]
pub enum Found {
    /// An object version (current or older), with the etag of its Moray record.
    Object(Box<Versioned<MetadataRecord>>),
    /// A delete marker.
    Marker(DeleteMarker),
}

/// Version `vid` of `key`.
///
/// # Errors
/// `InvalidArgument` for a malformed id, `NoSuchVersion` when there is none.
pub async fn find(
    api: &S3Api,
    (owner, bucket, key): (&str, &str, &str),
    vid: &str,
) -> S3Result<Found> {
    check_version_id(vid)?;
    if let Some(c) = api.meta.object(owner, bucket, key).await?
        && vid_of(&c.rec) == vid
    {
        return Ok(Found::Object(Box::new(c)));
    }
    match api.meta.version(owner, bucket, key, vid).await? {
        Some(Versioned {
            rec: Version::Object(rec, _),
            etag,
        }) => Ok(Found::Object(Box::new(Versioned { rec: *rec, etag }))),
        Some(Versioned {
            rec: Version::Marker(m),
            ..
        }) => Ok(Found::Marker(m)),
        None => Err(s3err(
            S3ErrorCode::NoSuchVersion,
            "The specified version does not exist.",
        )),
    }
}

/// Adds `x-amz-delete-marker: true` and the marker's version id (and time) to `e`.
pub fn mark(mut e: S3Error, m: &DeleteMarker) -> S3Error {
    let mut h = http::HeaderMap::new();
    h.insert(
        "x-amz-delete-marker",
        http::HeaderValue::from_static("true"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&m.vid) {
        h.insert("x-amz-version-id", v);
    }
    if let Ok(v) = http::HeaderValue::from_str(&crate::api::headers::http_date(m.mtime)) {
        h.insert(http::header::LAST_MODIFIED, v);
    }
    e.set_headers(h);
    e
}

/// The read of a delete marker by its version id: 405 `MethodNotAllowed`, marked.
pub fn marker_read(m: &DeleteMarker) -> S3Error {
    mark(
        s3err(
            S3ErrorCode::MethodNotAllowed,
            "The specified method is not allowed against this resource.",
        ),
        m,
    )
}

/// When `key` has no current version: its newest delete marker, if that is what hides it.
///
/// # Errors
/// Moray failures.
pub async fn hiding_marker(
    api: &S3Api,
    (owner, bucket, key): (&str, &str, &str),
) -> S3Result<Option<DeleteMarker>> {
    let newest = api.meta.versions_of(owner, bucket, key, 1).await?;
    Ok(match newest.into_iter().next().map(|v| v.rec) {
        Some(Version::Marker(m)) => Some(m),
        _ => None,
    })
}

// ---- listing ---------------------------------------------------------------------------

/// A position in a version listing: a key, then an order within it (the current version has
/// the empty order, before every other).
pub type Pos = (String, String);

/// After every version of a key.
const PAST_KEY: &str = "~";

/// Where a listing after `key_marker` (and `vid_marker`) starts, exclusive.
async fn start(
    api: &S3Api,
    (owner, bucket): (&str, &str),
    key_marker: &str,
    vid_marker: Option<&str>,
) -> S3Result<Pos> {
    let Some(vid) = vid_marker.filter(|v| !v.is_empty()) else {
        return Ok((key_marker.to_owned(), PAST_KEY.to_owned()));
    };
    check_version_id(vid)?;
    if let Some(c) = api.meta.object(owner, bucket, key_marker).await?
        && vid_of(&c.rec) == vid
    {
        return Ok((key_marker.to_owned(), String::new()));
    }
    Ok(
        match api.meta.version(owner, bucket, key_marker, vid).await? {
            Some(v) => (key_marker.to_owned(), v.rec.order().to_owned()),
            None => (key_marker.to_owned(), PAST_KEY.to_owned()),
        },
    )
}

/// A page of a version listing.
pub struct VersionPage<T> {
    /// Versions, delete markers and common prefixes, in key order, newest first within a key.
    pub entries: Vec<Entry<(T, bool)>>,
    /// True when more follow.
    pub truncated: bool,
}

/// Lists one page of the versions of a bucket: `q.after` is the key marker, `vid_marker` the
/// version id marker. Current versions come from `manta_s3_objects` and the others from
/// `manta_s3_versions`, merged ([`merged_page`]). Each entry is a version and whether it is
/// its key's latest.
///
/// # Errors
/// `InvalidArgument` for a malformed version id marker; Moray failures.
pub async fn page(
    api: &S3Api,
    (owner, bucket): (&str, &str),
    q: &Query<'_>,
    vid_marker: Option<&str>,
) -> S3Result<VersionPage<Version>> {
    let after = match q.after.filter(|a| *a >= q.prefix) {
        Some(a) if list::rollup(a, q.prefix, q.delimiter).is_none() => {
            Some(start(api, (owner, bucket), a, vid_marker).await?)
        }
        _ => None,
    };
    let meta = &api.meta;
    let prefix = q.prefix;
    let currents = |from: String, limit| async move {
        let found = meta.scan(owner, bucket, &from, prefix, limit).await?;
        Ok(found
            .into_iter()
            .map(|r| Version::Object(Box::new(r), String::new()))
            .collect())
    };
    let older = |(from, order): Pos, limit| async move {
        meta.scan_versions(owner, bucket, (&from, &order), prefix, limit)
            .await
    };
    let pos = |v: &Version| (v.name().to_owned(), v.order().to_owned());
    merged_page(q, after, pos, currents, older).await
}

/// One page of a listing merged from two sources, each in position order (a key, then an
/// order within it; the current version's order is empty, before every other):
/// `currents(from, limit)` answers up to `limit` items with keys `>= from`, and
/// `older(pos, limit)` up to `limit` with positions `>= pos`, all under the query's prefix.
/// The page starts after `after` (a position, exclusive) or, without one, at the query's
/// marker (a common prefix: after it) or prefix. Only what both sources have covered is
/// listed from each pair of batches; keys under a common prefix are skipped by restarting
/// past it. An entry is its key's latest when it opens its key.
///
/// # Errors
/// As the sources.
pub async fn merged_page<T, FC, FV, FutC, FutV>(
    q: &Query<'_>,
    after: Option<Pos>,
    pos: impl Fn(&T) -> Pos,
    mut currents: FC,
    mut older: FV,
) -> S3Result<VersionPage<T>>
where
    FC: FnMut(String, u64) -> FutC,
    FV: FnMut(Pos, u64) -> FutV,
    FutC: std::future::Future<Output = S3Result<Vec<T>>>,
    FutV: std::future::Future<Output = S3Result<Vec<T>>>,
{
    let mut out = VersionPage {
        entries: Vec::new(),
        truncated: false,
    };
    if q.max == 0 {
        return Ok(out);
    }
    // `lower`: exclusive when `exclusive`; the listing holds positions after it.
    let (mut lower, mut exclusive) = match (after, q.after.filter(|a| *a >= q.prefix)) {
        (Some(p), _) => (p, true),
        (None, Some(a)) => match list::rollup(a, q.prefix, q.delimiter) {
            Some(cp) => match list::successor(cp) {
                Some(s) => ((s, String::new()), false),
                None => return Ok(out),
            },
            None => ((a.to_owned(), PAST_KEY.to_owned()), true),
        },
        (None, None) => ((q.prefix.to_owned(), String::new()), false),
    };
    // The key of the previous entry seen (a version is the newest only if it opens its key).
    let mut prev_key: Option<String> = exclusive.then(|| lower.0.clone());
    let mut last_prefix: Option<String> = None;
    loop {
        let want = (q.max - out.entries.len()) as u64 + 2;
        let limit = want.clamp(2, 1000);
        let a = currents(lower.0.clone(), limit).await?;
        let b = older(lower.clone(), limit).await?;
        // Only what both sources have fully covered is certain.
        let full_end = |batch: &[T]| {
            (batch.len() as u64 == limit)
                .then(|| batch.last().map(&pos))
                .flatten()
        };
        let horizon = [full_end(&a), full_end(&b)].into_iter().flatten().min();
        let mut merged: Vec<(Pos, T)> = a
            .into_iter()
            .chain(b)
            .map(|t| (pos(&t), t))
            .filter(|(p, _)| if exclusive { *p > lower } else { *p >= lower })
            .filter(|(p, _)| horizon.as_ref().is_none_or(|h| p <= h))
            .collect();
        merged.sort_by(|x, y| x.0.cmp(&y.0));
        for ((name, _), t) in merged {
            if !name.starts_with(q.prefix) {
                return Ok(out);
            }
            let opens = prev_key.as_deref() != Some(name.as_str());
            prev_key = Some(name.clone());
            if last_prefix.as_deref().is_some_and(|p| name.starts_with(p)) {
                continue;
            }
            if out.entries.len() == q.max {
                out.truncated = true;
                return Ok(out);
            }
            match list::rollup(&name, q.prefix, q.delimiter) {
                Some(cp) => {
                    let cp = cp.to_owned();
                    last_prefix = Some(cp.clone());
                    out.entries.push(Entry::Prefix(cp));
                }
                None => out.entries.push(Entry::Object((t, opens))),
            }
        }
        let Some(h) = horizon else {
            return Ok(out);
        };
        match last_prefix.as_deref().filter(|p| h.0.starts_with(*p)) {
            Some(p) => match list::successor(p) {
                Some(s) => {
                    lower = (s, String::new());
                    exclusive = false;
                }
                None => return Ok(out),
            },
            None => {
                lower = h;
                exclusive = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::s3::testing::run;

    /// Every page of a listing of `items` (positions; an empty order is a current version)
    /// with pages of `max`, as a client pages with the next markers.
    fn all_pages(
        items: &[Pos],
        prefix: &str,
        delimiter: Option<&str>,
        max: usize,
    ) -> Vec<Entry<(Pos, bool)>> {
        let mut sorted = items.to_vec();
        sorted.sort();
        let currents = |from: String, limit: u64| {
            let found = sorted
                .iter()
                .filter(|p| p.1.is_empty() && p.0 >= from && p.0.starts_with(prefix))
                .take(limit as usize)
                .cloned()
                .collect();
            std::future::ready(Ok(found))
        };
        let older = |from: Pos, limit: u64| {
            let found = sorted
                .iter()
                .filter(|p| !p.1.is_empty() && **p >= from && p.0.starts_with(prefix))
                .take(limit as usize)
                .cloned()
                .collect();
            std::future::ready(Ok(found))
        };
        let mut got = Vec::new();
        let (mut key_marker, mut after): (Option<String>, Option<Pos>) = (None, None);
        for _ in 0..10_000 {
            let q = Query {
                prefix,
                delimiter,
                after: key_marker.as_deref(),
                max,
            };
            let p = run(merged_page(&q, after.clone(), Pos::clone, currents, older)).unwrap();
            assert!(p.entries.len() <= max);
            match p.entries.last() {
                Some(Entry::Prefix(cp)) => (key_marker, after) = (Some(cp.clone()), None),
                Some(Entry::Object((pos, _))) => {
                    (key_marker, after) = (Some(pos.0.clone()), Some(pos.clone()))
                }
                None => {}
            }
            got.extend(p.entries);
            if !p.truncated {
                return got;
            }
        }
        panic!("listing did not end");
    }

    /// What a listing must hold, the slow and obvious way.
    fn expected(items: &[Pos], prefix: &str, delimiter: Option<&str>) -> Vec<Entry<(Pos, bool)>> {
        let mut sorted = items.to_vec();
        sorted.sort();
        let mut out = Vec::new();
        let mut prev: Option<String> = None;
        for p in sorted.into_iter().filter(|p| p.0.starts_with(prefix)) {
            let opens = prev.as_deref() != Some(p.0.as_str());
            prev = Some(p.0.clone());
            match list::rollup(&p.0, prefix, delimiter) {
                Some(cp) => {
                    let e = Entry::Prefix(cp.to_owned());
                    if out.last() != Some(&e) {
                        out.push(e);
                    }
                }
                None => out.push(Entry::Object((p, opens))),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn version_pages_list_every_version_once_in_order(
            keys in proptest::collection::btree_map("[ab/]{1,4}", (any::<bool>(), proptest::collection::btree_set("[0-9a-f]{2}", 0..4)), 1..12),
            prefix in "[ab/]{0,2}",
            slash in any::<bool>(),
            max in 1usize..5,
        ) {
            let mut items = Vec::new();
            for (k, (current, older)) in &keys {
                if *current || older.is_empty() {
                    items.push((k.clone(), String::new()));
                }
                items.extend(older.iter().map(|o| (k.clone(), o.clone())));
            }
            let delimiter = slash.then_some("/");
            let want = expected(&items, &prefix, delimiter);
            prop_assert_eq!(all_pages(&items, &prefix, delimiter, max), want.clone());
            prop_assert_eq!(all_pages(&items, &prefix, delimiter, 1000), want);
        }
    }

    #[test]
    fn version_ids_sort_newest_first_and_parse() {
        let old = order_at(1_000_000, 7);
        let new = order_at(2_000_000, 1);
        assert!(new < old);
        assert!(valid_version_id(&old) && valid_version_id(&new_version_id()));
        assert!(valid_version_id(NULL));
        for bad in ["", "NULL", "0123", &"g".repeat(32), &"A".repeat(32)] {
            assert!(!valid_version_id(bad), "{bad}");
        }
    }

    #[test]
    fn markers_and_versions_round_trip() {
        let m = Version::Marker(DeleteMarker {
            kind: MARKER_TYPE.into(),
            dirname: "b".into(),
            name: "k".into(),
            owner: "o".into(),
            mtime: 5,
            vid: NULL.into(),
            vorder: order_at(5000, 1),
        });
        assert_eq!(Version::from_value(m.to_value()).unwrap(), m);
        // A marker is not an object to garbage collection or repair.
        assert!(moray::schema::stored_object(&m.to_value()).is_none());
        assert!(MetadataRecord::from_value(m.to_value()).is_err());
    }
}
