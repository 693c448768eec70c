//! Object operations: put, get, head, delete, delete many, copy.
//!
//! Bytes go through the front door's data path ([`crate::data`]) exactly as Manta API
//! uploads do; the record is written only once every copy is durable, conditional on what was
//! checked. The ETag is the hex MD5 of the bytes (for multipart objects, S3's
//! `md5-of-md5s-N`). User metadata (`x-amz-meta-*`, at most 2 KiB) and the content headers
//! (`Cache-Control`, `Content-Disposition`, `Content-Encoding`, `Content-Language`,
//! `Expires`) are kept in the record's headers and answered on reads.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use manta_types::record::{EntryKind, ObjectInfo};
use manta_types::{MetadataRecord, ObjectId, SharkRef};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response};
use tracing::warn;

use super::conditional::{
    self, Conditions, Current, DeleteConditions, ReadOutcome, WriteCondition, timestamp,
};
use super::error::{
    S3Result, conditional_conflict, from_manta, internal, invalid_argument, no_such_key,
    not_implemented, s3err,
};
use super::meta::{BucketRecord, Versioned};
use super::names;
use super::service::{MAX_OBJECT_SIZE, S3Api, bucket_of, caller, declared_length};
use super::versioning;
use crate::api::headers::BodyLength;
use crate::data::{self, ObjectMeta, Place, Stored, Uncommitted};
use crate::state::Frontdoor;

/// Most bytes of user metadata (keys and values) on one object, as S3.
pub const MAX_USER_METADATA: usize = 2048;

/// The prefix user metadata keys are stored under in the record's headers.
pub const META_PREFIX: &str = "x-amz-meta-";

/// `Content-Type` of objects stored without one, as S3.
pub const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

/// Content headers kept with an object and answered on reads.
#[derive(Debug, Clone, Default)]
pub struct ContentHeaders {
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Language`.
    pub content_language: Option<String>,
    /// `Expires` (HTTP date).
    pub expires: Option<Timestamp>,
}

fn http_date(t: &Timestamp) -> Option<String> {
    conditional::epoch_secs(t)
        .map(|s| httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)))
}

/// The headers map of a record: user metadata under [`META_PREFIX`], then content headers.
///
/// # Errors
/// `MetadataTooLarge` over [`MAX_USER_METADATA`].
pub fn stored_headers(
    metadata: Option<&Metadata>,
    content: &ContentHeaders,
) -> S3Result<BTreeMap<String, String>> {
    let mut h = BTreeMap::new();
    let mut size = 0usize;
    if let Some(m) = metadata {
        for (k, v) in m {
            size += k.len() + v.len();
            h.insert(
                format!("{META_PREFIX}{}", k.to_ascii_lowercase()),
                v.clone(),
            );
        }
    }
    if size > MAX_USER_METADATA {
        return Err(s3err(
            S3ErrorCode::MetadataTooLarge,
            format!(
                "Your metadata headers exceed the maximum allowed metadata size of {MAX_USER_METADATA} bytes"
            ),
        ));
    }
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            h.insert(k.to_owned(), v.clone());
        }
    };
    put("cache-control", &content.cache_control);
    put("content-disposition", &content.content_disposition);
    put(
        "content-encoding",
        &content
            .content_encoding
            .as_deref()
            .and_then(stored_encoding),
    );
    put("content-language", &content.content_language);
    if let Some(e) = content.expires.as_ref().and_then(http_date) {
        h.insert("expires".into(), e);
    }
    Ok(h)
}

/// The `Content-Encoding` an object keeps: what the client sent without `aws-chunked`, which
/// describes the request's framing (undone by the time the bytes are stored), not the object.
fn stored_encoding(sent: &str) -> Option<String> {
    let kept: Vec<&str> = sent
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

/// The `Content-Type` and stored headers ([`stored_headers`]) of a new object, from the
/// input of a request that makes one (`PutObject`, `CopyObject` with `REPLACE`,
/// `CreateMultipartUpload`: distinct types with the same fields, hence a macro). Moves those
/// fields out of the input; evaluates to `S3Result<(content_type, headers)>`.
macro_rules! new_object_headers {
    ($i:expr) => {{
        let content = $crate::s3::objects::ContentHeaders {
            cache_control: $i.cache_control,
            content_disposition: $i.content_disposition,
            content_encoding: $i.content_encoding,
            content_language: $i.content_language,
            expires: $i.expires,
        };
        let acl = $crate::s3::acl::requested_acl!($i);
        let tags = $crate::s3::tagging::parse($i.tagging.as_deref().unwrap_or_default());
        acl.and_then(|acl| tags.map(|tags| (acl, tags)))
            .and_then(|(acl, tags)| {
                $crate::s3::objects::stored_headers($i.metadata.as_ref(), &content).map(
                    |mut headers| {
                        acl.store(&mut headers);
                        $crate::s3::tagging::store(&mut headers, &tags);
                        let default = || $crate::s3::objects::DEFAULT_CONTENT_TYPE.to_owned();
                        ($i.content_type.unwrap_or_else(default), headers)
                    },
                )
            })
    }};
}
pub(crate) use new_object_headers;

/// The `x-amz-copy-source-if-*` conditions of a request that copies (`CopyObject`,
/// `UploadPartCopy`: distinct types with the same fields, hence a macro).
macro_rules! copy_source_conditions {
    ($i:expr) => {
        $crate::s3::conditional::Conditions {
            if_match: $i.copy_source_if_match.as_ref(),
            if_none_match: $i.copy_source_if_none_match.as_ref(),
            if_modified_since: $i.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: $i.copy_source_if_unmodified_since.as_ref(),
        }
    };
}
pub(crate) use copy_source_conditions;

/// [`S3Api::write_condition`] for the input of a request that writes an object
/// (`PutObject`, `CompleteMultipartUpload`: distinct types with the same fields, hence a macro).
macro_rules! object_write_condition {
    ($api:expr, $owner:expr, $i:expr) => {
        $api.write_condition(
            $owner,
            &$i.bucket,
            &$i.key,
            $i.if_match.as_ref(),
            $i.if_none_match.as_ref(),
        )
    };
}
pub(crate) use object_write_condition;

/// The user metadata of a record.
pub fn user_metadata(rec: &MetadataRecord) -> Option<Metadata> {
    let m: Metadata = rec
        .headers
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(META_PREFIX)
                .map(|k| (k.to_owned(), v.clone()))
        })
        .collect();
    (!m.is_empty()).then_some(m)
}

/// The content headers of a record.
pub fn content_headers(rec: &MetadataRecord) -> ContentHeaders {
    let g = |k: &str| rec.headers.get(k).cloned();
    ContentHeaders {
        cache_control: g("cache-control"),
        content_disposition: g("content-disposition"),
        content_encoding: g("content-encoding"),
        content_language: g("content-language"),
        expires: g("expires")
            .and_then(|e| httpdate::parse_http_date(&e).ok())
            .map(Timestamp::from),
    }
}

/// Hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The hex MD5 of a base64 MD5 (the S3 ETag of single-part bytes).
pub fn md5_hex(b64: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map(|d| hex(&d))
        .unwrap_or_default()
}

/// The request's `Content-MD5`, checked. Read from the headers as sent: an empty value (which
/// the request parser drops as absent) is a digest, and no body matches it.
///
/// # Errors
/// `InvalidDigest`.
pub fn content_md5_of(headers: &http::HeaderMap) -> S3Result<Option<String>> {
    match headers.get("content-md5") {
        None => Ok(None),
        Some(v) => content_md5(Some(v.to_str().unwrap_or(""))),
    }
}

/// Checks `Content-MD5`: the base64 of 16 bytes.
///
/// # Errors
/// `InvalidDigest`.
pub fn content_md5(v: Option<&str>) -> S3Result<Option<String>> {
    use base64::Engine as _;
    let Some(v) = v else { return Ok(None) };
    match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
        Ok(d) if d.len() == 16 => Ok(Some(v.trim().to_owned())),
        _ => Err(s3err(
            S3ErrorCode::InvalidDigest,
            "The Content-MD5 you specified is not valid.",
        )),
    }
}

/// How many bytes a request body has (exact, or at most `max`).
///
/// # Errors
/// `EntityTooLarge` above `max`, `InvalidArgument` for a negative length.
pub fn body_length(content_length: Option<i64>, max: u64) -> S3Result<BodyLength> {
    match content_length {
        Some(n) if n < 0 => Err(invalid_argument("Content-Length must not be negative")),
        Some(n) if n.unsigned_abs() > max => Err(s3err(
            S3ErrorCode::EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size.",
        )),
        Some(n) => Ok(BodyLength {
            exact: Some(n.unsigned_abs()),
            max: None,
        }),
        None => Ok(BodyLength {
            exact: None,
            max: Some(max),
        }),
    }
}

/// A request body as the data path takes it.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, s3s::StdError>> + Send>>;

/// The body of a request, empty when there is none.
pub fn body_stream(b: Option<StreamingBlob>) -> BodyStream {
    match b {
        Some(b) => Box::pin(b),
        None => Box::pin(futures_util::stream::empty()),
    }
}

/// Where the record of object `key` in `bucket` is written.
pub fn place(bucket: &str, key: &str) -> Place {
    Place {
        key: names::object_key(bucket, key),
        dirname: bucket.to_owned(),
        name: key.to_owned(),
    }
}

/// The object fields of a record.
///
/// # Errors
/// `InternalError` for a record that is not an object.
pub fn object_of(rec: &MetadataRecord) -> S3Result<&ObjectInfo> {
    rec.object()
        .ok_or_else(|| internal(format!("{} is not an object record", rec.key)))
}

fn current(rec: &MetadataRecord) -> S3Result<Current<'_>> {
    Ok(Current {
        etag: &object_of(rec)?.etag,
        mtime_ms: rec.mtime,
    })
}

/// The record of object `key` in `bucket`.
///
/// # Errors
/// `NoSuchKey` when there is none.
pub(crate) async fn existing(
    api: &S3Api,
    owner: &str,
    bucket: &str,
    key: &str,
) -> S3Result<Versioned<MetadataRecord>> {
    api.meta
        .object(owner, bucket, key)
        .await?
        .ok_or_else(|| no_such_key(key))
}

/// Version `version` of object `key` in `bucket` (the current one when `None`).
///
/// # Errors
/// `NoSuchKey`, `NoSuchVersion`, `InvalidArgument` (a malformed id), `MethodNotAllowed` (a
/// delete marker).
pub(crate) async fn existing_version(
    api: &S3Api,
    owner: &str,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> S3Result<Versioned<MetadataRecord>> {
    match version {
        None => existing(api, owner, bucket, key).await,
        Some(vid) => match versioning::find(api, (owner, bucket, key), vid).await? {
            versioning::Found::Object(v) => Ok(*v),
            versioning::Found::Marker(m) => Err(versioning::marker_read(&m)),
        },
    }
}

impl S3Api {
    /// How a write of `key` in `bucket` must be conditioned for its `If-Match` and
    /// `If-None-Match` (the current object is read only when either is given).
    ///
    /// # Errors
    /// As [`conditional::check_write`].
    pub async fn write_condition(
        &self,
        owner: &str,
        bucket: &str,
        key: &str,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> S3Result<WriteCondition> {
        if if_match.is_none() && if_none_match.is_none() {
            return Ok(WriteCondition::Any);
        }
        let existing = self.meta.object(owner, bucket, key).await?;
        let cur = match &existing {
            Some(e) => Some((current(&e.rec)?, e.etag.as_str())),
            None => None,
        };
        conditional::check_write(
            cur.as_ref().map(|(c, e)| (c, *e)),
            if_match,
            if_none_match,
            key,
        )
    }
}

/// Commits `bytes` with `write`, a conditional record write that answers `false` when its
/// condition failed: that is then the error `failed` (and the bytes are discarded).
///
/// # Errors
/// `write`'s error, or `failed`.
pub async fn commit_unless_failed(
    bytes: Uncommitted,
    write: impl std::future::Future<Output = S3Result<bool>>,
    failed: impl FnOnce() -> S3Error,
) -> S3Result<()> {
    bytes
        .commit(async {
            match write.await? {
                true => Ok(()),
                false => Err(failed()),
            }
        })
        .await
}

/// Writes the record of `bytes` as object `key` in bucket `b` (content type and stored
/// headers as given) on condition `cond` (a new version, when `b` has versioning), or
/// discards them: the record and the S3 ETag.
async fn commit_object(
    api: &S3Api,
    bytes: Uncommitted,
    (b, key): (&BucketRecord, &str),
    (content_type, headers): (String, BTreeMap<String, String>),
    cond: &WriteCondition,
) -> S3Result<(MetadataRecord, String)> {
    let etag = md5_hex(&bytes.stored().md5);
    let meta = ObjectMeta {
        etag: etag.clone(),
        content_type,
        headers,
    };
    let mut rec = bytes.record(place(&b.name, key), meta);
    let write = async {
        commit_record(api, b, &mut rec, cond, &[])
            .await?
            .map_err(|other| internal(format!("an object's write failed on {other}")))
    };
    bytes.commit(write).await?;
    Ok((rec, etag))
}

/// Writes `rec` as the current version of its key in bucket `b` on condition `cond`, in one
/// transaction with `with` (see [`versioning::write_current`]), then makes sure the bucket
/// is still there ([`settle_in_bucket`]). A failed condition on the object is `cond.lost()`;
/// one on another Moray bucket is handed back as `Ok(Err(bucket))`.
///
/// # Errors
/// `cond.lost()`, `NoSuchBucket`, Moray failures.
pub async fn commit_record(
    api: &S3Api,
    b: &BucketRecord,
    rec: &mut MetadataRecord,
    cond: &WriteCondition,
    with: &[moray::types::BatchOp],
) -> S3Result<Result<(), String>> {
    match versioning::write_current(api, b.versioning, rec, cond, with).await? {
        Ok(written) => {
            settle_in_bucket(api, (&b.name, &rec.name), &rec.owner, &written).await?;
            Ok(Ok(()))
        }
        Err(bucket) if bucket == super::meta::OBJECTS => Err(cond.lost()),
        Err(bucket) => Ok(Err(bucket)),
    }
}

/// After object `key` of `owner` (now at Moray etag `written`) has landed in `bucket`: the bucket must
/// still be its owner's. `DeleteBucket` marks the bucket before checking it is empty and
/// deletes it only if the mark is unchanged, so a write that finds the bucket unmarked
/// after landing will be seen by that check. When the bucket went (or changed hands) the
/// write is taken back: its record goes, its bytes go to garbage collection, and the caller
/// hears `NoSuchBucket` rather than a success that nobody could read.
///
/// # Errors
/// `NoSuchBucket`; Moray failures.
pub async fn settle_in_bucket(
    api: &S3Api,
    (bucket, key): (&str, &str),
    owner: &str,
    written: &str,
) -> S3Result<()> {
    if api.meta.bucket_keeps(bucket, owner).await? {
        return Ok(());
    }
    api.meta
        .delete_object(
            bucket,
            key,
            moray::EtagCondition::MustMatch(written.to_owned()),
        )
        .await?;
    tracing::info!(
        bucket,
        key,
        "bucket deleted while a write landed in it: write taken back"
    );
    Err(super::error::no_such_bucket(bucket))
}

/// `PutObject`.
///
/// # Errors
/// `PreconditionFailed`, `BadDigest`, `InvalidDigest`, `EntityTooLarge`, `IncompleteBody`,
/// `MetadataTooLarge`, `NoSuchKey` (`If-Match` on nothing), `ServiceUnavailable`, ...
pub async fn put_object(
    api: &S3Api,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let owner = caller(&req)?.uuid.clone();
    let b = bucket_of(&req, &req.input.bucket)?.rec;
    let md5 = content_md5_of(&req.headers)?;
    let declared = declared_length(&req, req.input.content_length);
    let i = req.input;
    names::check_key(&i.key)?;
    let fields = new_object_headers!(i)?;
    let len = body_length(declared, MAX_OBJECT_SIZE)?;
    let fd = &api.fd;
    let cond = fd
        .step("put", "check", object_write_condition!(api, &owner, i))
        .await?;
    let body = body_stream(i.body);
    let bytes = data::store(fd, &owner, fd.cfg.default_copies, len, md5.as_deref(), body)
        .await
        .map_err(from_manta)?;
    let (rec, etag) = commit_object(api, bytes, (&b, &i.key), fields, &cond).await?;
    let size = object_of(&rec)?.content_length;
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(ETag::Strong(etag)),
        version_id: answered_version(&b, &rec),
        size: Some(i64::try_from(size).unwrap_or(i64::MAX)),
        ..PutObjectOutput::default()
    }))
}

/// A byte stream that is `Sync` (as `s3s` bodies must be) by owning its inner stream behind
/// a mutex that is never contended: polling takes `&mut self`.
struct SyncStream(std::sync::Mutex<data::ByteStream>);

impl Stream for SyncStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        inner.as_mut().poll_next(cx)
    }
}

/// A 304 with the object's validators.
fn not_modified(rec: &MetadataRecord, etag: &str) -> S3Error {
    let mut e = S3Error::new(S3ErrorCode::NotModified);
    let mut h = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(http::header::ETAG, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(&crate::api::headers::http_date(rec.mtime)) {
        h.insert(http::header::LAST_MODIFIED, v);
    }
    e.set_headers(h);
    super::error::tag(&mut e);
    e
}

/// What of an object a read asks for: the version, and a range or a part.
#[derive(Debug, Clone, Copy)]
struct Wanted<'a> {
    version: Option<&'a str>,
    range: Option<&'a Range>,
    part_number: Option<i32>,
}

/// Reads the record for a GET or HEAD and applies the conditions and the range: the entry
/// and the byte range to serve (`None`: all of it).
async fn read_entry(
    api: &S3Api,
    bucket: &BucketRecord,
    key: &str,
    cond: &Conditions<'_>,
    want: Wanted<'_>,
    anonymous: Option<&super::auth::Anonymous>,
) -> S3Result<(Versioned<MetadataRecord>, Option<std::ops::Range<u64>>)> {
    let Wanted {
        version,
        range,
        part_number,
    } = want;
    let entry = match existing_version(api, &bucket.owner, &bucket.name, key, version).await {
        // Whether a key exists is only told to those who may list the bucket.
        Err(e)
            if anonymous.is_some()
                && e.code() == &S3ErrorCode::NoSuchKey
                && super::policy::granted(bucket, None) != manta_auth::Grant::PublicRead =>
        {
            return Err(super::error::access_denied("Access Denied"));
        }
        // A key whose newest version is a delete marker says so.
        Err(e) if e.code() == &S3ErrorCode::NoSuchKey && !bucket.versioning.is_off() => {
            let at = (bucket.owner.as_str(), bucket.name.as_str(), key);
            return Err(match versioning::hiding_marker(api, at).await? {
                Some(m) => versioning::mark(e, &m),
                None => e,
            });
        }
        other => other?,
    };
    if let Some(super::auth::Anonymous(owner)) = anonymous {
        // Decided now that the object's ACL is known.
        let acl = super::acl::CannedAcl::of_object(&entry.rec);
        let grant = super::policy::granted(bucket, Some((key, acl)));
        super::auth::anonymous_read(owner, &bucket.name, Some(key), grant)?;
    }
    let o = object_of(&entry.rec)?;
    if conditional::check_read(&current(&entry.rec)?, cond)? == ReadOutcome::NotModified {
        return Err(not_modified(&entry.rec, &o.etag));
    }
    let span = match (part_number, range) {
        (Some(_), Some(_)) => {
            return Err(s3err(
                S3ErrorCode::InvalidRequest,
                "Cannot specify both Range header and partNumber query parameter",
            ));
        }
        (Some(n), None) => part_span(o, n)?,
        (None, Some(r)) => read_span(r, o.content_length)?,
        (None, None) => None,
    };
    Ok((entry, span))
}

/// The bytes of part `n` of an object (`?partNumber=`): `None` for all of them (part 1 of
/// an object not made from parts is the whole object).
///
/// # Errors
/// `InvalidArgument` outside 1 to 10 000; `InvalidPartNumber` (416) past the last part (or
/// for an empty part of a non-empty object, which no `Content-Range` can name);
/// `NotImplemented` for a multipart object completed before part sizes were recorded.
fn part_span(o: &ObjectInfo, n: i32) -> S3Result<Option<std::ops::Range<u64>>> {
    let n = names::check_part_number(n)?;
    let past_the_last = || {
        let mut e = s3err(
            S3ErrorCode::Custom("InvalidPartNumber".into()),
            "The requested partnumber is not satisfiable",
        );
        e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
        e
    };
    match recorded_parts(o)? {
        Some(parts) => match parts.range(u64::from(n)) {
            Some(r) if r.is_empty() && o.content_length == 0 => Ok(None),
            Some(r) if r.is_empty() => Err(past_the_last()),
            Some(r) if r.start == 0 && r.end == o.content_length => Ok(None),
            Some(r) => Ok(Some(r)),
            None => Err(past_the_last()),
        },
        None if n == 1 => Ok(None),
        None => Err(past_the_last()),
    }
}

/// The part sizes of an object made from parts; `None` for an object put whole.
///
/// # Errors
/// `NotImplemented` for a multipart object completed before part sizes were recorded.
fn recorded_parts(o: &ObjectInfo) -> S3Result<Option<&manta_types::record::PartSizes>> {
    match &o.parts {
        Some(p) => Ok(Some(p)),
        None if parts_count(&o.etag).is_some() => Err(not_implemented(
            "Parts of a multipart object completed before part sizes were recorded",
        )),
        None => Ok(None),
    }
}

/// The bytes of an object of `total` bytes that a read's `Range` asks for: `None` for all
/// of them, and never an empty span (a suffix range of an empty object, which `s3s` finds
/// satisfiable, reads the whole empty object: no `Content-Range` can name zero bytes). Public
/// for the fuzz targets (`crates/fuzz-targets`).
///
/// # Errors
/// `InvalidRange` (416, with `Content-Range: bytes */<total>`) for a range that is not
/// satisfiable.
pub fn read_span(range: &Range, total: u64) -> S3Result<Option<std::ops::Range<u64>>> {
    match range.check(total) {
        Ok(span) if span.is_empty() => Ok(None),
        Ok(span) => Ok(Some(span)),
        Err(_) => {
            let mut e = s3err(
                S3ErrorCode::InvalidRange,
                "The requested range is not satisfiable",
            );
            let mut h = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{total}")) {
                h.insert(http::header::CONTENT_RANGE, v);
            }
            if let Ok(v) = http::HeaderValue::from_str("application/xml") {
                h.insert(http::header::CONTENT_TYPE, v);
            }
            e.set_headers(h);
            Err(e)
        }
    }
}

/// What `GetObject` and `HeadObject` share on the way in: the bucket check, the conditions,
/// and the read of the record and the span asked for (their inputs are distinct types with the
/// same fields, hence a macro). Evaluates to `(record, span)`.
macro_rules! read_object {
    ($api:expr, $req:expr) => {{
        let b = bucket_of(&$req, &$req.input.bucket)?;
        let i = &$req.input;
        let cond = Conditions {
            if_match: i.if_match.as_ref(),
            if_none_match: i.if_none_match.as_ref(),
            if_modified_since: i.if_modified_since.as_ref(),
            if_unmodified_since: i.if_unmodified_since.as_ref(),
        };
        let read = read_entry(
            $api,
            &b.rec,
            &i.key,
            &cond,
            Wanted {
                version: i.version_id.as_deref(),
                range: i.range.as_ref(),
                part_number: i.part_number,
            },
            $req.extensions.get::<$crate::s3::auth::Anonymous>(),
        );
        let (entry, span) = $api.fd.step("get", "lookup", read).await?;
        (b.rec, entry.rec, span)
    }};
}

/// What `GetObject` and `HeadObject` share on the way out: the object's headers, as the
/// output type `$ty` (distinct types with the same fields), plus any `$extra` fields.
macro_rules! object_output {
    ($ty:ident, $rec:expr, $o:expr, $len:expr, $content_range:expr, $($field:ident: $value:expr,)*) => {{
        let rec: &MetadataRecord = $rec;
        let ch = content_headers(rec);
        $ty {
            accept_ranges: Some("bytes".into()),
            content_length: Some(i64::try_from($len).unwrap_or(i64::MAX)),
            content_range: $content_range,
            content_type: Some($o.content_type.clone()),
            e_tag: Some(ETag::Strong($o.etag.clone())),
            last_modified: Some(timestamp(rec.mtime)),
            metadata: user_metadata(rec),
            cache_control: ch.cache_control,
            content_disposition: ch.content_disposition,
            content_encoding: ch.content_encoding,
            content_language: ch.content_language,
            expires: ch.expires,
            parts_count: $o
                .parts
                .as_ref()
                .map(|p| i32::try_from(p.count()).unwrap_or(i32::MAX))
                .or_else(|| parts_count(&$o.etag)),
            $($field: $value,)*
            ..$ty::default()
        }
    }};
}

/// The length a read returns and its `Content-Range`, for an object of `total` bytes and the
/// span [`read_span`] gave. Public for the fuzz targets (`crates/fuzz-targets`).
pub fn span_of(total: u64, span: Option<&std::ops::Range<u64>>) -> (u64, Option<String>) {
    match span {
        Some(r) => (
            r.end - r.start,
            Some(format!("bytes {}-{}/{total}", r.start, r.end - 1)),
        ),
        None => (total, None),
    }
}

/// `GetObject`: one range at most; the copy's MD5 is checked as a full read streams.
///
/// # Errors
/// `NoSuchKey`, `PreconditionFailed`, `NotModified` (304), `InvalidRange`,
/// `ServiceUnavailable` when no copy answers.
pub async fn get_object(
    api: &S3Api,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let (b, rec, span) = read_object!(api, req);
    let o = object_of(&rec)?.clone();
    let (len, content_range) = span_of(o.content_length, span.as_ref());
    let body = if len == 0 {
        StreamingBlob::wrap(futures_util::stream::empty::<io::Result<Bytes>>())
    } else {
        let range = span
            .as_ref()
            .map(|r| storage_api::ByteRange::FromTo(r.start, r.end - 1));
        let (_status, _cr, stream) = data::fetch(&api.fd, &o, &rec.creator, range)
            .await
            .map_err(from_manta)?;
        StreamingBlob::wrap(SyncStream(std::sync::Mutex::new(stream)))
    };
    Ok(S3Response::new(object_output!(
        GetObjectOutput,
        &rec,
        o,
        len,
        content_range,
        body: Some(body),
        storage_class: None,
        version_id: answered_version(&b, &rec),
        tag_count: match super::tagging::of(&rec).len() {
            0 => None,
            n => i32::try_from(n).ok(),
        },
    )))
}

/// `GetObjectAttributes`: the attributes asked for (`x-amz-object-attributes`) of an
/// object: `ETag`, `ObjectSize`, `StorageClass`, and `ObjectParts` (the parts of an object
/// made by a multipart upload, `max-parts` at a time after `part-number-marker`). `Checksum`
/// is answered with nothing: no S3 checksum is kept.
///
/// # Errors
/// `NoSuchKey`, `InvalidArgument` (no attributes, an unknown one, bad paging),
/// `NotImplemented` for the parts of a multipart object completed before part sizes were
/// recorded.
pub async fn get_object_attributes(
    api: &S3Api,
    req: S3Request<GetObjectAttributesInput>,
) -> S3Result<S3Response<GetObjectAttributesOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?;
    let i = &req.input;
    // One header line per attribute, or one comma-separated line (as boto3 sends it).
    let wants: Vec<&str> = i
        .object_attributes
        .iter()
        .flat_map(|a| a.as_str().split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if wants.is_empty() {
        return Err(invalid_argument(
            "x-amz-object-attributes must name at least one attribute",
        ));
    }
    const KNOWN: [&str; 5] = [
        ObjectAttributes::CHECKSUM,
        ObjectAttributes::ETAG,
        ObjectAttributes::OBJECT_PARTS,
        ObjectAttributes::OBJECT_SIZE,
        ObjectAttributes::STORAGE_CLASS,
    ];
    if let Some(bad) = wants.iter().find(|w| !KNOWN.contains(w)) {
        return Err(invalid_argument(format!(
            "Invalid attribute name specified: {bad}"
        )));
    }
    let wanted = |a: &str| wants.contains(&a);
    let version = i.version_id.as_deref();
    let entry = existing_version(api, &b.rec.owner, &b.rec.name, &i.key, version).await?;
    let o = object_of(&entry.rec)?;
    let object_parts = if wanted(ObjectAttributes::OBJECT_PARTS) {
        object_parts(o, i.part_number_marker, i.max_parts)?
    } else {
        None
    };
    Ok(S3Response::new(GetObjectAttributesOutput {
        e_tag: wanted(ObjectAttributes::ETAG).then(|| ETag::Strong(o.etag.clone())),
        object_size: wanted(ObjectAttributes::OBJECT_SIZE)
            .then(|| i64::try_from(o.content_length).unwrap_or(i64::MAX)),
        storage_class: wanted(ObjectAttributes::STORAGE_CLASS)
            .then(|| StorageClass::from_static(StorageClass::STANDARD)),
        object_parts,
        last_modified: Some(timestamp(entry.rec.mtime)),
        version_id: answered_version(&b.rec, &entry.rec),
        ..GetObjectAttributesOutput::default()
    }))
}

/// Most parts one `GetObjectAttributes` lists.
const MAX_PARTS_LISTED: i32 = 1000;

/// The `ObjectParts` of an object: `None` for one not made from parts (as S3 answers).
fn object_parts(
    o: &ObjectInfo,
    marker: Option<i32>,
    max: Option<i32>,
) -> S3Result<Option<GetObjectAttributesParts>> {
    let marker = match marker {
        None => 0,
        Some(n) if n < 0 => return Err(invalid_argument("part-number-marker must be >= 0")),
        Some(n) => u64::from(n.unsigned_abs()),
    };
    let max = match max {
        None => MAX_PARTS_LISTED,
        Some(n) if n < 0 => return Err(invalid_argument("max-parts must be >= 0")),
        Some(n) => n.min(MAX_PARTS_LISTED),
    };
    let Some(sizes) = recorded_parts(o)? else {
        return Ok(None);
    };
    let mut after = sizes.iter().filter(|&(n, _, _)| n > marker).peekable();
    let parts: Vec<ObjectPart> = after
        .by_ref()
        .take(usize::try_from(max).unwrap_or(0))
        .map(|(n, size, _)| ObjectPart {
            part_number: i32::try_from(n).ok(),
            size: i64::try_from(size).ok(),
            ..ObjectPart::default()
        })
        .collect();
    let truncated = after.peek().is_some();
    let next = parts.last().and_then(|p| p.part_number);
    Ok(Some(GetObjectAttributesParts {
        total_parts_count: i32::try_from(sizes.count()).ok(),
        part_number_marker: i32::try_from(marker).ok(),
        next_part_number_marker: if truncated { next } else { None },
        max_parts: Some(max),
        is_truncated: Some(truncated),
        parts: Some(parts),
    }))
}

/// The part count of a multipart ETag (`...-N`).
fn parts_count(etag: &str) -> Option<i32> {
    etag.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

/// `HeadObject`.
///
/// # Errors
/// As [`get_object`], without reading bytes.
pub async fn head_object(
    api: &S3Api,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let (b, rec, span) = read_object!(api, req);
    let o = object_of(&rec)?;
    let (len, content_range) = span_of(o.content_length, span.as_ref());
    Ok(S3Response::new(object_output!(
        HeadObjectOutput,
        &rec,
        o,
        len,
        content_range,
        version_id: answered_version(&b, &rec),
    )))
}

/// Rewrites the stored headers of object `key` in `bucket` with `change` (ACLs, tags), if the
/// record is still the one read. Only the current version can be changed (`version`, when
/// given, must be its id).
///
/// # Errors
/// `NoSuchKey`; `ConditionalRequestConflict` when the object changed meanwhile;
/// `NotImplemented` for an older version.
pub(crate) async fn rewrite_headers(
    api: &S3Api,
    bucket: &BucketRecord,
    (key, version): (&str, Option<&str>),
    change: impl FnOnce(&mut BTreeMap<String, String>),
) -> S3Result<()> {
    let cur = api.meta.object(&bucket.owner, &bucket.name, key).await?;
    let e = match (cur, version) {
        (Some(c), None) => c,
        (Some(c), Some(v)) if versioning::vid_of(&c.rec) == v => c,
        (_, Some(v)) => {
            // An older version (or none: then the error says which).
            existing_version(api, &bucket.owner, &bucket.name, key, Some(v)).await?;
            return Err(not_implemented(
                "Changing the ACL or tags of an older version",
            ));
        }
        (None, None) => return Err(no_such_key(key)),
    };
    let mut rec = e.rec;
    change(&mut rec.headers);
    let written = api
        .meta
        .put_object(&rec, moray::EtagCondition::MustMatch(e.etag))
        .await?;
    if written.is_none() {
        return Err(conditional_conflict());
    }
    Ok(())
}

/// What the delete of one key did.
#[derive(Debug, Default)]
struct Deleted {
    /// The version deleted for good, or the delete marker made.
    version_id: Option<String>,
    /// True when a delete marker was made or deleted.
    marker: bool,
}

/// Deletes one key of bucket `b`: `Ok` whether or not it existed (as S3), unless conditions
/// are given: then the object must exist and meet them, and the delete applies only to the
/// record they were checked against. With a version id that version goes for good; without
/// one, in a bucket with versioning, a delete marker is made.
async fn delete_key(
    api: &S3Api,
    b: &BucketRecord,
    (key, version): (&str, Option<&str>),
    cond: &DeleteConditions,
) -> S3Result<Deleted> {
    names::check_key(key)?;
    let at = (b.owner.as_str(), b.name.as_str(), key);
    let version = version.filter(|v| !(b.versioning.is_off() && *v == versioning::NULL));
    if let Some(v) = version {
        if cond.any() {
            return Err(not_implemented("A conditional delete of a version"));
        }
        let found = versioning::delete_version(api, at, v).await?;
        return Ok(Deleted {
            version_id: Some(v.to_owned()),
            marker: found == Some(true),
        });
    }
    if !b.versioning.is_off() {
        let vid = versioning::delete_current(api, b.versioning, at, cond).await?;
        return Ok(Deleted {
            version_id: Some(vid),
            marker: true,
        });
    }
    let (owner, bucket) = (b.owner.as_str(), b.name.as_str());
    let moray_cond = if cond.any() {
        let e = api.meta.object(owner, bucket, key).await?;
        let cur = match &e {
            Some(e) => Some((current(&e.rec)?, object_of(&e.rec)?.content_length)),
            None => None,
        };
        conditional::check_delete(cur.as_ref().map(|(c, n)| (c, *n)), cond, key)?;
        let e = e.expect("check_delete refuses conditions on a missing object");
        moray::EtagCondition::MustMatch(e.etag)
    } else {
        moray::EtagCondition::Any
    };
    let conditional = !matches!(moray_cond, moray::EtagCondition::Any);
    if !api.meta.delete_object(bucket, key, moray_cond).await? && conditional {
        // Changed or deleted since the check.
        return Err(conditional_conflict());
    }
    Ok(Deleted::default())
}

/// `DeleteObject`: 204 whether or not the key existed. With versioning, see [`delete_key`]:
/// the answer names the version deleted or the delete marker made.
///
/// # Errors
/// `InvalidArgument` for a malformed version id, `PreconditionFailed` for a failed `If-Match`.
pub async fn delete_object(
    api: &S3Api,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?;
    let i = &req.input;
    let cond = DeleteConditions {
        if_match: i.if_match.clone(),
        last_modified: i.if_match_last_modified_time.clone(),
        size: i.if_match_size,
    };
    let at = (i.key.as_str(), i.version_id.as_deref());
    let d = delete_key(api, &b.rec, at, &cond).await?;
    Ok(S3Response::new(DeleteObjectOutput {
        version_id: d.version_id.or_else(|| i.version_id.clone()),
        delete_marker: d.marker.then_some(true),
        ..DeleteObjectOutput::default()
    }))
}

/// Most keys in one `DeleteObjects`.
pub const MAX_DELETE_KEYS: usize = 1000;

/// `DeleteObjects`: up to 1000 keys (each with its version id and conditions, as
/// [`delete_key`]), 16 at a time; the bypass-governance header is accepted and ignored (no
/// object is ever locked). With `Quiet`, only failures are listed.
///
/// # Errors
/// `MalformedXML` for no keys or more than 1000.
pub async fn delete_objects(
    api: &S3Api,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?.rec;
    let b = &b;
    let i = &req.input;
    let objects = &i.delete.objects;
    if objects.is_empty() || objects.len() > MAX_DELETE_KEYS {
        return Err(s3err(
            S3ErrorCode::MalformedXML,
            format!("A delete request names 1 to {MAX_DELETE_KEYS} keys"),
        ));
    }
    let quiet = i.delete.quiet.unwrap_or(false);
    let results: Vec<(ObjectIdentifier, S3Result<Deleted>)> =
        futures_util::stream::iter(objects.iter().cloned())
            .map(|o| async move {
                let cond = DeleteConditions {
                    if_match: o.e_tag.clone().map(ETagCondition::ETag),
                    last_modified: o.last_modified_time.clone(),
                    size: o.size,
                };
                let at = (o.key.as_str(), o.version_id.as_deref());
                let r = delete_key(api, b, at, &cond).await;
                (o, r)
            })
            .buffered(16)
            .collect()
            .await;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (o, r) in results {
        match r {
            Ok(d) => {
                if !quiet {
                    // A marker made answers its id apart; one deleted is the version named.
                    let made = d.marker && o.version_id.is_none();
                    deleted.push(DeletedObject {
                        key: Some(o.key),
                        delete_marker: d.marker.then_some(true),
                        delete_marker_version_id: if made { d.version_id } else { None },
                        version_id: o.version_id,
                    });
                }
            }
            Err(e) => errors.push(Error {
                code: Some(e.code().as_str().to_owned()),
                key: Some(o.key),
                message: e.message().map(str::to_owned),
                version_id: o.version_id,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        request_charged: None,
    }))
}

/// The bucket, key and version id (if named) of a copy source
/// (`<bucket>/<key>[?versionId=<id>]`).
///
/// # Errors
/// `NotImplemented` for access point sources, `InvalidArgument` for malformed version ids.
pub fn copy_source(src: &CopySource) -> S3Result<(String, String, Option<String>)> {
    match src {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            if let Some(v) = version_id {
                versioning::check_version_id(v)?;
            }
            let version = version_id.as_deref().map(str::to_owned);
            Ok((bucket.to_string(), key.to_string(), version))
        }
        _ => Err(not_implemented("Copying from an access point")),
    }
}

/// Reads a copy source the caller may read: in its account's bucket (a sub-user's roles must
/// let it read there), or what the owner of another account's bucket opened to everyone. A
/// source owner the client expects (`x-amz-source-expected-bucket-owner`) must own it.
///
/// # Errors
/// `NoSuchBucket`, `AccessDenied`, `NoSuchKey`, `PreconditionFailed`.
pub async fn read_source(
    api: &S3Api,
    caller: &super::auth::Caller,
    src: &CopySource,
    expected_owner: Option<&str>,
    cond: &Conditions<'_>,
) -> S3Result<Versioned<MetadataRecord>> {
    use manta_auth::Grant;
    let (bucket, key, version) = copy_source(src)?;
    let b = api
        .meta
        .bucket(&bucket)
        .await?
        .filter(|b| b.rec.state == super::meta::BucketState::Active)
        .ok_or_else(|| super::error::no_such_bucket(&bucket))?;
    if expected_owner.is_some_and(|o| o.trim() != b.rec.owner) {
        return Err(super::error::access_denied(
            "Access Denied: the source bucket is not owned by the account \
             x-amz-source-expected-bucket-owner names",
        ));
    }
    let mine = caller.account().is_some_and(|a| a.uuid == b.rec.owner);
    if mine {
        let read = (manta_auth::rbac::Action::GetObject, http::Method::GET);
        super::auth::check_sub_user(caller, &b.rec, Some(&key), read)?;
    }
    let found = existing_version(api, &b.rec.owner, &bucket, &key, version.as_deref()).await;
    let entry = match found {
        // Whether a key exists is told to strangers only when they may list the bucket.
        Err(e)
            if !mine
                && e.code() == &S3ErrorCode::NoSuchKey
                && super::policy::granted(&b.rec, None) != Grant::PublicRead =>
        {
            return Err(super::error::access_denied("Access Denied"));
        }
        other => other?,
    };
    if !mine {
        let acl = super::acl::CannedAcl::of_object(&entry.rec);
        if super::policy::granted(&b.rec, Some((&key, acl))) != Grant::PublicRead {
            return Err(super::error::access_denied("Access Denied"));
        }
    }
    conditional::check_copy_source(&current(&entry.rec)?, cond)?;
    Ok(entry)
}

/// Copies the bytes of `src` into a new object id: each node holding a copy makes its own
/// copy next to it (a one-part join, no bytes through the front door); when any of them
/// cannot, the copies made are dropped and the bytes are streamed through the front door to
/// newly placed nodes instead. The copy comes back uncommitted.
///
/// # Errors
/// As the data path.
pub async fn copy_bytes(
    fd: &Arc<Frontdoor>,
    src: &ObjectInfo,
    src_creator: &str,
    owner: &str,
) -> S3Result<Uncommitted> {
    if src.content_length == 0 || src.sharks.is_empty() {
        return Ok(Uncommitted::adopt(
            fd,
            owner,
            ObjectId::random(),
            Vec::new(),
            Stored::empty(),
        ));
    }
    if src_creator == owner {
        let parts = [src.object_id.to_string()];
        let joined = data::join_on(fd, &src.sharks, owner, ObjectId::random(), &parts);
        match joined.await {
            Ok(copy) if copy.stored().md5 == src.content_md5 => return Ok(copy),
            Ok(copy) => {
                let got = copy.stored().md5.clone();
                copy.abort().await;
                warn!(expected = %src.content_md5, %got, "a node-local copy differs from its source; streaming instead");
            }
            // The join's copies are discarded already.
            Err(e) => warn!(error = %e, "node-local copy failed; streaming instead"),
        }
    }
    let (_, _, stream) = data::fetch(fd, src, src_creator, None)
        .await
        .map_err(from_manta)?;
    let len = BodyLength {
        exact: Some(src.content_length),
        max: None,
    };
    data::store(
        fd,
        owner,
        fd.cfg.default_copies,
        len,
        Some(&src.content_md5),
        stream,
    )
    .await
    .map_err(from_manta)
}

/// `CopyObject`: metadata is copied (`COPY`, the default) or taken from the request
/// (`REPLACE`). Copying an object onto itself needs `REPLACE` and rewrites only the record.
///
/// # Errors
/// `InvalidRequest` (a self-copy that changes nothing), `NoSuchKey`, `NoSuchBucket`,
/// `AccessDenied` (another account's source), `PreconditionFailed`, data path errors.
pub async fn copy_object(
    api: &S3Api,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let owner = caller(&req)?.uuid.clone();
    let signer = super::service::signer(&req)?.clone();
    let b = bucket_of(&req, &req.input.bucket)?.rec;
    let i = req.input;
    names::check_key(&i.key)?;
    let cond = copy_source_conditions!(i);
    let expected = i.expected_source_bucket_owner.as_deref();
    let src = read_source(api, &signer, &i.copy_source, expected, &cond).await?;
    let (src_bucket, src_key, src_version) = copy_source(&i.copy_source)?;
    // The source's version, as answered (none from a bucket that never had versioning).
    let copied_version = src_version.clone().or_else(|| src.rec.version_id.clone());
    let replace = match i.metadata_directive.as_ref().map(MetadataDirective::as_str) {
        None => false,
        Some(d) if d.eq_ignore_ascii_case(MetadataDirective::COPY) => false,
        Some(d) if d.eq_ignore_ascii_case(MetadataDirective::REPLACE) => true,
        Some(_) => return Err(invalid_argument("Unknown metadata directive.")),
    };
    let so = object_of(&src.rec)?.clone();
    // The copy gets the request's ACL (private by default), never the source's.
    let acl = super::acl::requested_acl!(i)?;
    // Tags: the source's, unless the request replaces them.
    let tags = match i.tagging_directive.as_ref().map(TaggingDirective::as_str) {
        None => super::tagging::of(&src.rec),
        Some(d) if d.eq_ignore_ascii_case(TaggingDirective::COPY) => super::tagging::of(&src.rec),
        Some(d) if d.eq_ignore_ascii_case(TaggingDirective::REPLACE) => {
            super::tagging::parse(i.tagging.as_deref().unwrap_or_default())?
        }
        Some(_) => return Err(invalid_argument("Unknown tagging directive.")),
    };
    let (content_type, mut headers) = if replace {
        new_object_headers!(i)?
    } else {
        (so.content_type.clone(), src.rec.headers.clone())
    };
    acl.store(&mut headers);
    super::tagging::store(&mut headers, &tags);
    // Copying an older version onto its own key is how one is restored: a new object.
    let mut same = src_bucket == i.bucket && src_key == i.key;
    if same && src_version.is_some() {
        let cur = api.meta.object(&b.owner, &b.name, &i.key).await?;
        same = cur.is_some_and(|c| c.etag == src.etag);
    }
    if same {
        if !replace {
            return Err(s3err(
                S3ErrorCode::InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
            ));
        }
        let mut rec = src.rec.clone();
        rec.mtime = manta_types::time::now_ms();
        rec.request_id = manta_util::http::current_request_id();
        rec.headers = headers;
        if let EntryKind::Object(o) = &mut rec.kind {
            o.content_type = content_type;
            o.content_disposition = rec.headers.get("content-disposition").cloned();
        }
        // With versioning this is a new version sharing the bytes of the one it replaces
        // (garbage collection keeps bytes any version names).
        let unchanged = WriteCondition::Unchanged(src.etag.clone());
        match commit_record(api, &b, &mut rec, &unchanged, &[]).await {
            Ok(Ok(())) => {}
            Ok(Err(other)) => return Err(internal(format!("a self-copy failed on {other}"))),
            Err(e) if e.status_code() == Some(http::StatusCode::CONFLICT) => {
                return Err(s3err(
                    S3ErrorCode::OperationAborted,
                    "A conflicting operation is in progress against this object. Please try again.",
                ));
            }
            Err(e) => return Err(e),
        }
        return Ok(copied(so.etag.clone(), &b, &rec, copied_version));
    }
    let copy = copy_bytes(&api.fd, &so, &src.rec.creator, &owner).await?;
    let fields = (content_type, headers);
    let to = (&b, i.key.as_str());
    let (rec, etag) = commit_object(api, copy, to, fields, &WriteCondition::Any).await?;
    Ok(copied(etag, &b, &rec, copied_version))
}

/// The answer to a `CopyObject` that made `rec` (ETag `etag`) in bucket `b` from the source
/// version `source_version`.
fn copied(
    etag: String,
    b: &BucketRecord,
    rec: &MetadataRecord,
    source_version: Option<String>,
) -> S3Response<CopyObjectOutput> {
    S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(timestamp(rec.mtime)),
            ..CopyObjectResult::default()
        }),
        version_id: answered_version(b, rec),
        copy_source_version_id: source_version,
        ..CopyObjectOutput::default()
    })
}

/// The version id to answer for object `rec` of bucket `b`: none in a bucket that never had
/// versioning.
pub fn answered_version(b: &BucketRecord, rec: &MetadataRecord) -> Option<String> {
    (!b.versioning.is_off() || rec.version_id.is_some()).then(|| versioning::vid_of(rec).to_owned())
}

/// The storage nodes of a record, for logs.
pub fn shark_ids(sharks: &[SharkRef]) -> Vec<&str> {
    sharks.iter().map(|s| s.manta_storage_id.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_encoding_drops_the_request_framing() {
        for (sent, kept) in [
            ("aws-chunked", None),
            ("aws-chunked,gzip", Some("gzip")),
            ("gzip, AWS-CHUNKED", Some("gzip")),
            ("gzip,br", Some("gzip,br")),
            ("", None),
        ] {
            assert_eq!(stored_encoding(sent).as_deref(), kept, "{sent}");
        }
    }

    /// Found by the `range_header` fuzz target: `bytes=-5` on an empty object gave the empty
    /// span 0..0, whose `Content-Range` underflowed (`bytes 0-18446744073709551615/0` in a
    /// release build, a panic in a debug one).
    #[test]
    fn a_suffix_range_of_an_empty_object_reads_all_of_it() {
        assert_eq!(read_span(&Range::Suffix { length: 5 }, 0).unwrap(), None);
        assert_eq!(span_of(0, None), (0, None));
        assert_eq!(
            read_span(&Range::Suffix { length: 5 }, 3).unwrap(),
            Some(0..3)
        );
        for r in [
            Range::Int {
                first: 0,
                last: None,
            },
            Range::Int {
                first: 0,
                last: Some(0),
            },
        ] {
            let e = read_span(&r, 0).unwrap_err();
            assert_eq!(*e.code(), S3ErrorCode::InvalidRange);
        }
    }

    #[test]
    fn metadata_limits_and_round_trip() {
        let mut m = Metadata::new();
        m.insert("Color".into(), "blue".into());
        let content = ContentHeaders {
            cache_control: Some("no-cache".into()),
            expires: Some(timestamp(1_700_000_000_000)),
            ..ContentHeaders::default()
        };
        let h = stored_headers(Some(&m), &content).unwrap();
        assert_eq!(h["x-amz-meta-color"], "blue");
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["expires"], "Tue, 14 Nov 2023 22:13:20 GMT");
        let mut big = Metadata::new();
        big.insert("k".into(), "v".repeat(MAX_USER_METADATA));
        assert_eq!(
            stored_headers(Some(&big), &ContentHeaders::default())
                .unwrap_err()
                .code()
                .as_str(),
            "MetadataTooLarge"
        );
    }

    #[test]
    fn digests_and_lengths() {
        assert_eq!(
            md5_hex("1B2M2Y8AsgTpgAmY7PhCfg=="),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert!(content_md5(Some("1B2M2Y8AsgTpgAmY7PhCfg==")).is_ok());
        for bad in ["nope", "AAAA", "1B2M2Y8AsgTpgAmY7PhCfg"] {
            assert_eq!(
                content_md5(Some(bad)).unwrap_err().code().as_str(),
                "InvalidDigest",
                "{bad}"
            );
        }
        assert_eq!(body_length(Some(5), 10).unwrap().exact, Some(5));
        assert_eq!(body_length(None, 10).unwrap().max, Some(10));
        assert_eq!(
            body_length(Some(11), 10).unwrap_err().code().as_str(),
            "EntityTooLarge"
        );
        assert_eq!(parts_count("abc-12"), Some(12));
        assert_eq!(parts_count("abc"), None);
    }
}
