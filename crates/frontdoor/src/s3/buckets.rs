//! Bucket operations: create, head, list, delete, location, and the three listings of a
//! bucket's objects (V1, V2, versions).
//!
//! - `CreateBucket` is a must-not-exist put of the bucket record: the loser of a race, or
//!   anyone asking for a taken name, gets `BucketAlreadyOwnedByYou` (it is theirs) or
//!   `BucketAlreadyExists` (409 both). A `LocationConstraint` other than this region is
//!   `InvalidLocationConstraint`.
//! - `DeleteBucket` first marks the bucket `deleting` (conditional on its etag), so new
//!   writes are refused, then checks it holds no object (`BucketNotEmpty` puts it back),
//!   drops multipart uploads still in progress (their parts go to GC) and removes the record.
//!   A write that passed its bucket check just before the mark can still land after the
//!   emptiness check; its object then sits in a bucket that no longer exists until a bucket
//!   of that name is made again (the records are on different shards, so there is no single
//!   transaction to close that window).

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};

use super::conditional::timestamp;
use super::error::{S3Result, internal, invalid_argument, s3err};
use super::list::{self, Entry, Query};
use super::meta::{BucketRecord, BucketState, S3_RECORD_VERSION};
use super::names;
use super::service::{S3Api, bucket_of, caller};
use super::versioning::{self, Versioning};
use manta_types::MetadataRecord;
use moray::EtagCondition;

/// Most keys a listing page holds.
pub const MAX_KEYS: i32 = 1000;

/// `ListBuckets`: the caller's buckets, by name, a page of `max-buckets` at a time (all of
/// them when not given), with `prefix` and `bucket-region` filters.
///
/// # Errors
/// `InvalidArgument` for a bad `max-buckets` or continuation token; Moray failures.
pub async fn list_buckets(
    api: &S3Api,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let acct = caller(&req)?;
    let i = &req.input;
    let prefix = i.prefix.clone().unwrap_or_default();
    let most = match i.max_buckets {
        None => MAX_BUCKETS_LISTED,
        Some(n) if (1..=MAX_BUCKETS_LISTED).contains(&n) => n,
        Some(_) => {
            return Err(invalid_argument(format!(
                "max-buckets must be from 1 to {MAX_BUCKETS_LISTED}"
            )));
        }
    };
    let after = match i.continuation_token.as_deref() {
        Some(t) => Some(list::parse_continuation_token(t)?),
        None => None,
    };
    // An account owns a bounded number of buckets (`TooManyBuckets`): all are read, in name
    // order, and the page is cut from them.
    let mut matching = api
        .meta
        .buckets_of(&acct.uuid)
        .await?
        .into_iter()
        .filter(|b| {
            b.state == BucketState::Active
                && b.name.starts_with(&prefix)
                && after.as_ref().is_none_or(|a| b.name.as_str() > a.as_str())
                && i.bucket_region.as_ref().is_none_or(|r| &b.region == r)
        })
        .peekable();
    let buckets: Vec<Bucket> = matching
        .by_ref()
        .take(usize::try_from(most).unwrap_or(usize::MAX))
        .map(|b| Bucket {
            name: Some(b.name),
            creation_date: Some(timestamp(b.created)),
            bucket_region: Some(b.region),
        })
        .collect();
    let continuation_token = match (matching.peek(), buckets.last()) {
        (Some(_), Some(last)) => last.name.as_deref().map(list::continuation_token),
        _ => None,
    };
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(owner(&acct.uuid, &acct.login)),
        prefix: req.input.prefix,
        continuation_token,
    }))
}

/// Most buckets in one `ListBuckets` page (S3's bound on `max-buckets`).
pub const MAX_BUCKETS_LISTED: i32 = 10_000;

/// The S3 owner element of an account.
pub fn owner(uuid: &str, login: &str) -> Owner {
    Owner {
        id: Some(uuid.to_owned()),
        display_name: Some(login.to_owned()),
    }
}

/// `CreateBucket`. Creating a bucket one already owns succeeds (and changes nothing) in
/// `us-east-1`, as there.
///
/// # Errors
/// `BucketAlreadyOwnedByYou` (outside `us-east-1`), `BucketAlreadyExists`, `InvalidLocationConstraint`,
/// `InvalidBucketName`.
pub async fn create_bucket(
    api: &S3Api,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let acct = caller(&req)?.clone();
    let name = req.input.bucket.clone();
    if !names::valid_bucket_name(&name) {
        return Err(s3err(
            S3ErrorCode::InvalidBucketName,
            "The specified bucket is not valid.",
        ));
    }
    let acl = super::acl::requested_acl!(req.input, write)?;
    let region = api.region().to_owned();
    if let Some(lc) = req
        .input
        .create_bucket_configuration
        .as_ref()
        .and_then(|c| c.location_constraint.as_ref())
    {
        let lc = lc.as_str();
        if !lc.is_empty() && lc != region {
            return Err(s3err(
                S3ErrorCode::InvalidLocationConstraint,
                format!("The specified location-constraint is not valid: this region is {region}"),
            ));
        }
    }
    // The account's share of the region's bucket names (they are region-wide: squatting them
    // must cost something). Two creates at once may both pass; the count is the bound.
    let most = crate::limits::buckets(&api.fd.cfg, &acct);
    let owned = api.meta.buckets_of(&acct.uuid).await?.len();
    if owned >= most as usize && api.meta.bucket(&name).await?.is_none() {
        return Err(s3err(
            S3ErrorCode::TooManyBuckets,
            format!(
                "You have attempted to create more buckets than allowed: this account may own {most}."
            ),
        ));
    }
    let rec = BucketRecord {
        version: S3_RECORD_VERSION,
        name: name.clone(),
        owner: acct.uuid.clone(),
        owner_login: acct.login.clone(),
        created: manta_types::time::now_ms(),
        region,
        state: BucketState::Active,
        acl,
        versioning: Versioning::Off,
        roles: Vec::new(),
        policy: None,
    };
    if !api
        .meta
        .put_bucket(&rec, EtagCondition::MustNotExist)
        .await?
    {
        let mine = api
            .meta
            .bucket(&name)
            .await?
            .is_some_and(|b| b.rec.owner == acct.uuid);
        // us-east-1 answers the owner's repeated create with 200 (and changes nothing); every
        // other region with 409 `BucketAlreadyOwnedByYou`.
        if mine && api.region() == "us-east-1" {
            return Ok(S3Response::new(CreateBucketOutput {
                location: Some(format!("/{name}")),
            }));
        }
        return Err(if mine {
            s3err(
                S3ErrorCode::BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it.",
            )
        } else {
            s3err(
                S3ErrorCode::BucketAlreadyExists,
                "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again.",
            )
        });
    }
    tracing::info!(bucket = %name, owner = %acct.login, "bucket created");
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{name}")),
    }))
}

/// `HeadBucket` (the access check already found it and its owner).
///
/// # Errors
/// `NoSuchBucket`, `AccessDenied` (from the access check).
pub async fn head_bucket(
    api: &S3Api,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?;
    let _ = api;
    Ok(S3Response::new(HeadBucketOutput {
        bucket_region: Some(b.rec.region),
        ..HeadBucketOutput::default()
    }))
}

/// `GetBucketLocation`: empty for `us-east-1` (as AWS answers), else the region.
///
/// # Errors
/// As the access check.
pub async fn get_bucket_location(
    _api: &S3Api,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?;
    let location_constraint = (b.rec.region != "us-east-1").then(|| b.rec.region.into());
    Ok(S3Response::new(GetBucketLocationOutput {
        location_constraint,
    }))
}

/// `DeleteBucket` (see the module docs).
///
/// # Errors
/// `BucketNotEmpty`, `NoSuchBucket`.
pub async fn delete_bucket(
    api: &S3Api,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let name = req.input.bucket.clone();
    let b = bucket_of(&req, &name)?;
    let mut marked = b.rec.clone();
    marked.state = BucketState::Deleting;
    if !api
        .meta
        .put_bucket(&marked, EtagCondition::MustMatch(b.etag.clone()))
        .await?
    {
        return Err(s3err(
            S3ErrorCode::OperationAborted,
            "A conflicting conditional operation is currently in progress against this resource. Please try again.",
        ));
    }
    let Some(now) = api.meta.bucket(&name).await? else {
        return Err(super::error::no_such_bucket(&name));
    };
    if api.meta.has_objects(&now.rec.owner, &name).await?
        || api.meta.has_versions(&now.rec.owner, &name).await?
    {
        let mut back = now.rec.clone();
        back.state = BucketState::Active;
        api.meta
            .put_bucket(&back, EtagCondition::MustMatch(now.etag.clone()))
            .await?;
        return Err(s3err(
            S3ErrorCode::BucketNotEmpty,
            "The bucket you tried to delete is not empty",
        ));
    }
    let dropped = api.meta.drop_uploads(&name).await?;
    if !api.meta.delete_bucket(&name, &now.etag).await? {
        return Err(super::error::no_such_bucket(&name));
    }
    tracing::info!(bucket = %name, uploads_dropped = dropped, "bucket deleted");
    Ok(S3Response::new(DeleteBucketOutput {}))
}

fn check_text(what: &str, v: &str) -> S3Result<()> {
    if v.contains('\0') {
        return Err(invalid_argument(format!(
            "{what} must not contain the NUL character"
        )));
    }
    Ok(())
}

/// The page size asked for: 1000 by default and at most.
fn max_keys(v: Option<i32>) -> S3Result<usize> {
    match v {
        None => Ok(MAX_KEYS as usize),
        Some(n) if n < 0 => Err(invalid_argument("max-keys must be a non-negative integer")),
        Some(n) => Ok(n.min(MAX_KEYS) as usize),
    }
}

/// True for `EncodingType=url`.
fn url_encoding(e: Option<&EncodingType>) -> S3Result<bool> {
    match e.map(EncodingType::as_str) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case(EncodingType::URL) => Ok(true),
        Some(_) => Err(invalid_argument(
            "Invalid Encoding Method specified in Request",
        )),
    }
}

/// Lists one page of a bucket.
async fn page(
    api: &S3Api,
    owner: &str,
    bucket: &str,
    q: &Query<'_>,
) -> S3Result<list::Page<MetadataRecord>> {
    check_text("prefix", q.prefix)?;
    if let Some(a) = q.after {
        check_text("marker", a)?;
    }
    let meta = &api.meta;
    let prefix = q.prefix;
    list::page(
        q,
        |r: &MetadataRecord| r.name.as_str(),
        |from, limit| async move { meta.scan(owner, bucket, &from, prefix, limit).await },
    )
    .await
}

fn enc(url: bool, s: String) -> String {
    if url { names::url_encode(&s) } else { s }
}

fn s3_object(rec: MetadataRecord, url: bool, owner_el: Option<&Owner>) -> S3Result<Object> {
    let Some(o) = rec.object() else {
        return Err(internal(format!("{} is not an object record", rec.key)));
    };
    Ok(Object {
        e_tag: Some(ETag::Strong(o.etag.clone())),
        size: Some(i64::try_from(o.content_length).unwrap_or(i64::MAX)),
        last_modified: Some(timestamp(rec.mtime)),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        owner: owner_el.cloned(),
        key: Some(enc(url, rec.name)),
        ..Object::default()
    })
}

fn split(
    page: list::Page<MetadataRecord>,
    url: bool,
    owner_el: Option<&Owner>,
) -> S3Result<(Vec<Object>, Vec<CommonPrefix>)> {
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    for e in page.entries {
        match e {
            Entry::Object(rec) => objects.push(s3_object(rec, url, owner_el)?),
            Entry::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(enc(url, p)),
            }),
        }
    }
    Ok((objects, prefixes))
}

fn delimiter(d: Option<&String>) -> Option<&str> {
    d.map(String::as_str).filter(|d| !d.is_empty())
}

/// `ListObjects` (V1: `marker`, `NextMarker`).
///
/// # Errors
/// `InvalidArgument` for bad parameters; Moray failures.
pub async fn list_objects(
    api: &S3Api,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let i = &req.input;
    let b = bucket_of(&req, &i.bucket)?;
    let url = url_encoding(i.encoding_type.as_ref())?;
    let max = max_keys(i.max_keys)?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let q = Query {
        prefix: &prefix,
        delimiter: delimiter(i.delimiter.as_ref()),
        after: i.marker.as_deref().filter(|m| !m.is_empty()),
        max,
    };
    let p = page(api, &b.rec.owner, &i.bucket, &q).await?;
    let truncated = p.truncated;
    let next = p.last.clone().filter(|_| truncated);
    let own = owner(&b.rec.owner, &b.rec.owner_login);
    let (contents, prefixes) = split(p, url, Some(&own))?;
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(i.bucket.clone()),
        prefix: Some(enc(url, prefix.clone())),
        marker: Some(enc(url, i.marker.clone().unwrap_or_default())),
        max_keys: Some(max as i32),
        is_truncated: Some(truncated),
        contents: Some(contents),
        common_prefixes: Some(prefixes),
        delimiter: i.delimiter.clone().map(|d| enc(url, d)),
        next_marker: next.map(|n| enc(url, n)),
        encoding_type: i.encoding_type.clone(),
        request_charged: None,
    }))
}

/// `ListObjectsV2` (`continuation-token`, `start-after`, `fetch-owner`).
///
/// # Errors
/// `InvalidArgument` for bad parameters or tokens; Moray failures.
pub async fn list_objects_v2(
    api: &S3Api,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let i = &req.input;
    let b = bucket_of(&req, &i.bucket)?;
    let url = url_encoding(i.encoding_type.as_ref())?;
    let max = max_keys(i.max_keys)?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let after = match i.continuation_token.as_deref() {
        Some(t) => Some(list::parse_continuation_token(t)?),
        None => i.start_after.clone().filter(|s| !s.is_empty()),
    };
    let q = Query {
        prefix: &prefix,
        delimiter: delimiter(i.delimiter.as_ref()),
        after: after.as_deref(),
        max,
    };
    let p = page(api, &b.rec.owner, &i.bucket, &q).await?;
    let truncated = p.truncated;
    let next = p
        .last
        .as_deref()
        .filter(|_| truncated)
        .map(list::continuation_token);
    let own = owner(&b.rec.owner, &b.rec.owner_login);
    let (contents, prefixes) = split(p, url, i.fetch_owner.unwrap_or(false).then_some(&own))?;
    let key_count = (contents.len() + prefixes.len()) as i32;
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(i.bucket.clone()),
        prefix: Some(enc(url, prefix.clone())),
        max_keys: Some(max as i32),
        key_count: Some(key_count),
        continuation_token: i.continuation_token.clone(),
        is_truncated: Some(truncated),
        next_continuation_token: next,
        contents: Some(contents),
        common_prefixes: Some(prefixes),
        delimiter: i.delimiter.clone().map(|d| enc(url, d)),
        encoding_type: i.encoding_type.clone(),
        start_after: i.start_after.clone().map(|s| enc(url, s)),
        request_charged: None,
    }))
}

/// `ListObjectVersions`: every version and delete marker, by key and newest first within a
/// key, with `key-marker` and `version-id-marker` paging (a bucket that never had versioning
/// lists each object as its "null" version).
///
/// # Errors
/// `InvalidArgument` for bad parameters (a version id marker without a key marker); Moray
/// failures.
pub async fn list_object_versions(
    api: &S3Api,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let i = &req.input;
    let b = bucket_of(&req, &i.bucket)?;
    let url = url_encoding(i.encoding_type.as_ref())?;
    let max = max_keys(i.max_keys)?;
    let prefix = i.prefix.clone().unwrap_or_default();
    check_text("prefix", &prefix)?;
    let key_marker = i.key_marker.as_deref().filter(|m| !m.is_empty());
    let vid_marker = i.version_id_marker.as_deref().filter(|m| !m.is_empty());
    if let Some(k) = key_marker {
        check_text("key-marker", k)?;
    } else if vid_marker.is_some() {
        return Err(invalid_argument(
            "A version-id marker cannot be specified without a key marker.",
        ));
    }
    let q = Query {
        prefix: &prefix,
        delimiter: delimiter(i.delimiter.as_ref()),
        after: key_marker,
        max,
    };
    let at = (b.rec.owner.as_str(), b.rec.name.as_str());
    let p = versioning::page(api, at, &q, vid_marker).await?;
    let own = owner(&b.rec.owner, &b.rec.owner_login);
    let mut versions = Vec::new();
    let mut markers = Vec::new();
    let mut prefixes = Vec::new();
    // Where the next page starts: the last entry's key (or prefix) and version id.
    let next = match p.entries.last().filter(|_| p.truncated) {
        Some(Entry::Prefix(cp)) => Some((cp.clone(), None)),
        Some(Entry::Object((v, _))) => Some((v.name().to_owned(), Some(v.vid().to_owned()))),
        None => None,
    };
    for e in p.entries {
        let (version, latest) = match e {
            Entry::Prefix(cp) => {
                prefixes.push(CommonPrefix {
                    prefix: Some(enc(url, cp)),
                });
                continue;
            }
            Entry::Object(l) => l,
        };
        let vid = version.vid().to_owned();
        match version {
            versioning::Version::Object(rec, _) => {
                let o = s3_object(*rec, url, Some(&own))?;
                versions.push(ObjectVersion {
                    e_tag: o.e_tag,
                    is_latest: Some(latest),
                    key: o.key,
                    last_modified: o.last_modified,
                    owner: o.owner,
                    size: o.size,
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    version_id: Some(vid),
                    ..ObjectVersion::default()
                });
            }
            versioning::Version::Marker(m) => markers.push(DeleteMarkerEntry {
                is_latest: Some(latest),
                key: Some(enc(url, m.name)),
                last_modified: Some(timestamp(m.mtime)),
                owner: Some(own.clone()),
                version_id: Some(vid),
            }),
        }
    }
    let (next_key, next_vid) = match next {
        Some((k, v)) => (Some(enc(url, k)), v),
        None => (None, None),
    };
    Ok(S3Response::new(ListObjectVersionsOutput {
        common_prefixes: Some(prefixes),
        delete_markers: Some(markers),
        delimiter: i.delimiter.clone().map(|d| enc(url, d)),
        encoding_type: i.encoding_type.clone(),
        is_truncated: Some(p.truncated),
        key_marker: Some(enc(url, i.key_marker.clone().unwrap_or_default())),
        max_keys: Some(max as i32),
        name: Some(i.bucket.clone()),
        next_key_marker: next_key,
        next_version_id_marker: next_vid,
        prefix: Some(enc(url, prefix)),
        request_charged: None,
        version_id_marker: i.version_id_marker.clone(),
        versions: Some(versions),
    }))
}

/// `GetBucketVersioning`: the bucket's status (none for a bucket that never had versioning).
///
/// # Errors
/// `NoSuchBucket`, `AccessDenied`.
pub async fn get_bucket_versioning(
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?;
    Ok(S3Response::new(GetBucketVersioningOutput {
        status: b.rec.versioning.status(),
        mfa_delete: None,
    }))
}

/// `PutBucketVersioning`: `Enabled` or `Suspended` (a bucket can never go back to having no
/// versioning, as S3). MFA delete is not offered.
///
/// # Errors
/// `MalformedXML` for a missing or unknown status, `NotImplemented` for MFA delete,
/// `OperationAborted` when the bucket changed meanwhile.
pub async fn put_bucket_versioning(
    api: &S3Api,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?;
    let c = &req.input.versioning_configuration;
    if c.mfa_delete
        .as_ref()
        .is_some_and(|m| m.as_str() == "Enabled")
        || req.input.mfa.is_some()
    {
        return Err(super::error::not_implemented("MFA delete"));
    }
    let wanted = Versioning::requested(c.status.as_ref().map(|s| s.as_str()))?;
    if b.rec.versioning == wanted {
        return Ok(S3Response::new(PutBucketVersioningOutput {}));
    }
    let mut rec = b.rec.clone();
    rec.versioning = wanted;
    if !api
        .meta
        .put_bucket(&rec, EtagCondition::MustMatch(b.etag.clone()))
        .await?
    {
        return Err(s3err(
            S3ErrorCode::OperationAborted,
            "A conflicting conditional operation is currently in progress against this resource. Please try again.",
        ));
    }
    tracing::info!(bucket = %rec.name, versioning = ?wanted, "bucket versioning changed");
    Ok(S3Response::new(PutBucketVersioningOutput {}))
}
