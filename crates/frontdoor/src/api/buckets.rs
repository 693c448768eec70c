//! S3 buckets seen through the Manta API, read-only, so Manta tools and jobs can take S3
//! objects as inputs.
//!
//! | path | GET / HEAD |
//! |---|---|
//! | `/:login/buckets` | the account's buckets, one JSON object per line (`name`, `type` `bucket`, `mtime`) |
//! | `/:login/buckets/<bucket>` | the bucket as one JSON object, its role tags as `role-tag` |
//! | `/:login/buckets/<bucket>/objects` | its objects in key order (`name`, `type` `bucketobject`, `etag`, `size`, `contentType`, `contentMD5`, `mtime`), and `type` `group` entries for common prefixes; query `prefix`, `delimiter`, `marker` (exclusive), `limit` (default and most 1024); `next-marker` header when more follow |
//! | `/:login/buckets/<bucket>/objects/<key>` | the object, answered as every Manta object ([`objects::read_object`]: its headers, conditional requests, one `Range`), with S3 user metadata as `m-<name>` |
//!
//! The key is the rest of the path, percent-decoded (so `%2F` and `/` are the same); as it
//! may be a name a [`MantaPath`] refuses (ending in `/`, holding `//`, `.` or `..`),
//! [`parse`] splits these paths, for the Manta API's dispatch ([`super::handle`]), into the
//! area root `/:login/buckets` and the [`Target`] below it. The caller is authenticated, the
//! owner found, secure transport enforced and the caller authorised for that area root as for
//! every Manta path, so only the owning account reads it; then [`handle`] serves the target.
//! Writes are `MethodNotAllowed`: buckets are written through S3. The one exception is a
//! bucket's role tags (`PUT /:login/buckets/<bucket>?metadata=true` with `role-tag`, which
//! `mchmod` sends; `HEAD` answers them as `role-tag`): they decide what the account's
//! sub-users may do to the bucket through S3.
//!
//! The records come from the S3 API's metadata ([`Meta`], listed by [`crate::s3::list`]);
//! this module is only their Manta face.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, Method, header};
use manta_types::{Area, ErrorCode, HasErrorCode as _, MantaPath, MetadataRecord};

use super::dirs::DIR_CONTENT_TYPE;
use super::objects::{self, Negotiation};
use super::{Ctx, Entry};
use crate::error::{ApiResult, err};
use crate::s3::error::S3Result;
use crate::s3::list::{self, Query};
use crate::s3::meta::{BucketRecord, BucketState, Meta};
use crate::s3::objects::META_PREFIX;

/// Most entries of one object listing.
pub const MAX_LIMIT: usize = 1024;

/// What a path under `/:login/buckets` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/:login/buckets`: the account's buckets.
    Buckets,
    /// `/:login/buckets/<bucket>`.
    Bucket(String),
    /// `/:login/buckets/<bucket>/objects`: the bucket's objects.
    Objects(String),
    /// `/:login/buckets/<bucket>/objects/<key>`: one object.
    Object(String, String),
}

impl Target {
    /// The path of the target in `login`'s namespace, for messages.
    fn path(&self, login: &str) -> String {
        match self {
            Target::Buckets => format!("/{login}/buckets"),
            Target::Bucket(b) => format!("/{login}/buckets/{b}"),
            Target::Objects(b) => format!("/{login}/buckets/{b}/objects"),
            Target::Object(b, k) => format!("/{login}/buckets/{b}/objects/{k}"),
        }
    }
}

/// Splits a percent-decoded request path: `None` when it is not under `/:login/buckets`,
/// else the path the caller is authorised for (the area root `/:login/buckets`) and the
/// target below it.
///
/// # Errors
/// `InvalidResource` for a login that breaks the account name rules or a path under
/// `/:login/buckets` that names no target.
pub fn parse(path: &str) -> ApiResult<Option<(MantaPath, Target)>> {
    let mut it = path.trim_start_matches('/').splitn(5, '/');
    let login = it.next().unwrap_or("");
    if login.is_empty() || it.next() != Some(Area::Buckets.as_str()) {
        return Ok(None);
    }
    let area =
        MantaPath::area_root(login, Area::Buckets).map_err(|e| err(e.code(), e.to_string()))?;
    let bucket = it.next().filter(|b| !b.is_empty()).map(str::to_owned);
    let target = match (bucket, it.next(), it.next()) {
        (None, None, None) => Target::Buckets,
        (Some(b), None | Some(""), None) => Target::Bucket(b),
        (Some(b), Some("objects"), None | Some("")) => Target::Objects(b),
        (Some(b), Some("objects"), Some(k)) => Target::Object(b, k.to_owned()),
        _ => {
            return Err(err(
                ErrorCode::InvalidResource,
                format!("{path} is not a bucket path"),
            ));
        }
    };
    Ok(Some((area, target)))
}

fn not_found(what: &str) -> manta_types::MantaError {
    err(ErrorCode::ResourceNotFound, format!("{what} was not found"))
}

fn s3_to_manta(e: s3s::S3Error) -> manta_types::MantaError {
    let code = match e.code().as_str() {
        "ServiceUnavailable" | "SlowDown" => ErrorCode::ServiceUnavailable,
        _ => ErrorCode::InternalError,
    };
    err(code, e.message().unwrap_or("an unexpected error occurred"))
}

fn lift<T>(r: S3Result<T>) -> ApiResult<T> {
    r.map_err(s3_to_manta)
}

/// A listing: one JSON object per line, no body for `HEAD`.
fn json_lines(ctx: &Ctx, lines: Vec<serde_json::Value>) -> Response {
    let mut body = String::new();
    if ctx.method != Method::HEAD {
        for l in lines {
            body.push_str(&l.to_string());
            body.push('\n');
        }
    }
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(DIR_CONTENT_TYPE),
    );
    r
}

/// Serves `GET`/`HEAD` of `target` (see the module docs) for a caller already authorised on
/// `/:login/buckets`; `route` names the request for the metrics.
///
/// # Errors
/// `MethodNotAllowed` for anything but `GET`/`HEAD`, `ResourceNotFound`, `InvalidParameter`,
/// those of [`objects::read_object`], `ServiceUnavailable` when the metadata tier is.
pub async fn handle(ctx: &Ctx, target: Target, route: &mut &'static str) -> ApiResult<Response> {
    let meta = Meta::existing(ctx.fd.moray.clone());
    if let (true, Some("true"), Target::Bucket(name)) =
        (ctx.method == Method::PUT, ctx.param("metadata"), &target)
    {
        *route = "PutBucketMetadata";
        return set_role_tags(ctx, &meta, name).await;
    }
    if !matches!(ctx.method, Method::GET | Method::HEAD) {
        *route = "BucketsMethodNotAllowed";
        return Err(err(
            ErrorCode::MethodNotAllowed,
            format!(
                "{} is not allowed on {}: buckets are written through the S3 API",
                ctx.method,
                target.path(ctx.path.login())
            ),
        ));
    }
    match &target {
        Target::Buckets => {
            *route = "ListBuckets";
            let buckets = lift(meta.buckets_of(&ctx.owner.uuid).await)?;
            let lines = buckets
                .iter()
                .filter(|b| b.state == BucketState::Active)
                .map(bucket_line)
                .collect();
            Ok(json_lines(ctx, lines))
        }
        Target::Bucket(name) => {
            *route = "HeadBucket";
            let b = bucket(ctx, &meta, name).await?;
            let mut r = json_lines(ctx, vec![bucket_line(&b)]);
            super::roles::add_tags(r.headers_mut(), &b.roles);
            Ok(r)
        }
        Target::Objects(name) => {
            *route = "ListBucketObjects";
            bucket(ctx, &meta, name).await?;
            list_objects(ctx, &meta, name).await
        }
        Target::Object(name, key) => {
            *route = "GetBucketObject";
            bucket(ctx, &meta, name).await?;
            let found = lift(meta.object(&ctx.owner.uuid, name, key).await)?
                .ok_or_else(|| not_found(&format!("{name}/{key}")))?;
            let entry = Entry {
                rec: manta_view(found.rec),
                etag: found.etag,
            };
            let path = target.path(ctx.path.login());
            objects::read_object(ctx, &entry, &path, Negotiation::Ignore).await
        }
    }
}

/// `PUT /:login/buckets/<bucket>?metadata=true` (what `mchmod` sends): the bucket's role tags
/// become those of the `role-tag` header (none when it is absent), for the sub-users' S3
/// requests ([`crate::s3::auth`]). Nothing else of a bucket changes here.
async fn set_role_tags(ctx: &Ctx, meta: &Meta, name: &str) -> ApiResult<Response> {
    let tags = super::roles::requested_tags(ctx)?.unwrap_or_default();
    // Another change to the bucket (its ACL, versioning) may land between the read and the
    // write; the write is conditional, so read again.
    for _ in 0..3 {
        let b = match lift(meta.bucket(name).await)? {
            Some(b) if b.rec.owner == ctx.owner.uuid && b.rec.state == BucketState::Active => b,
            _ => return Err(not_found(&format!("bucket {name}"))),
        };
        let mut rec = b.rec.clone();
        rec.roles.clone_from(&tags);
        let cond = moray::EtagCondition::MustMatch(b.etag.clone());
        if lift(meta.put_bucket(&rec, cond).await)? {
            tracing::info!(bucket = %name, roles = ?tags, "bucket role tags set");
            return Ok(super::no_content());
        }
    }
    Err(err(
        ErrorCode::ConcurrentRequest,
        format!("bucket {name} kept changing while its role tags were set; try again"),
    ))
}

/// The owner's active bucket `name`.
async fn bucket(ctx: &Ctx, meta: &Meta, name: &str) -> ApiResult<BucketRecord> {
    match lift(meta.bucket(name).await)? {
        Some(b) if b.rec.owner == ctx.owner.uuid && b.rec.state == BucketState::Active => Ok(b.rec),
        _ => Err(not_found(&format!("bucket {name}"))),
    }
}

fn bucket_line(b: &BucketRecord) -> serde_json::Value {
    serde_json::json!({
        "name": b.name,
        "type": "bucket",
        "mtime": manta_types::time::iso8601_ms(b.created),
    })
}

/// One page of the objects of bucket `name`, from the query's `prefix`, `delimiter`,
/// `marker` and `limit`.
async fn list_objects(ctx: &Ctx, meta: &Meta, name: &str) -> ApiResult<Response> {
    let limit = match ctx.param("limit") {
        None => MAX_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(err(
                    ErrorCode::InvalidParameter,
                    format!("limit must be between 1 and {MAX_LIMIT}"),
                ));
            }
        },
    };
    let prefix = ctx.param("prefix").unwrap_or("");
    let q = Query {
        prefix,
        delimiter: ctx.param("delimiter").filter(|d| !d.is_empty()),
        after: ctx.param("marker").filter(|m| !m.is_empty()),
        max: limit,
    };
    if prefix.contains('\0') || q.after.is_some_and(|a| a.contains('\0')) {
        return Err(err(
            ErrorCode::InvalidParameter,
            "NUL in a listing parameter",
        ));
    }
    let page = lift(
        list::page(&q, rec_name, |from, n| async move {
            meta.scan(&ctx.owner.uuid, name, &from, prefix, n).await
        })
        .await,
    )?;
    let next = page.last.clone().filter(|_| page.truncated);
    let lines = page
        .entries
        .into_iter()
        .map(|e| match e {
            list::Entry::Prefix(p) => serde_json::json!({"name": p, "type": "group"}),
            list::Entry::Object(r) => object_line(&r),
        })
        .collect();
    let mut resp = json_lines(ctx, lines);
    if let Some(n) = next {
        resp.headers_mut().insert(
            "next-marker",
            HeaderValue::from_str(&n).unwrap_or_else(|_| HeaderValue::from_static("")),
        );
    }
    Ok(resp)
}

fn rec_name(r: &MetadataRecord) -> &str {
    &r.name
}

fn object_line(r: &MetadataRecord) -> serde_json::Value {
    match r.object() {
        Some(o) => serde_json::json!({
            "name": r.name,
            "type": "bucketobject",
            "etag": o.etag,
            "size": o.content_length,
            "contentType": o.content_type,
            "contentMD5": o.content_md5,
            "mtime": manta_types::time::iso8601_ms(r.mtime),
        }),
        None => serde_json::json!({"name": r.name, "type": "bucketobject"}),
    }
}

/// An S3 object's record as the Manta API shows it: user metadata, stored by S3 under
/// [`META_PREFIX`], becomes `m-<name>`; the other stored headers are kept as they are.
fn manta_view(mut rec: MetadataRecord) -> MetadataRecord {
    rec.headers = std::mem::take(&mut rec.headers)
        .into_iter()
        .map(|(k, v)| match k.strip_prefix(META_PREFIX) {
            Some(name) => (format!("m-{name}"), v),
            None => (k, v),
        })
        .collect();
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        parse(path).unwrap().unwrap().1
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse("/jill/buckets").unwrap().unwrap().0.to_string(),
            "/jill/buckets"
        );
        assert!(parse("/jill/buckets/b/objects/k").unwrap().is_some());
        assert!(parse("/jill/stor/buckets").unwrap().is_none());
        assert!(parse("//buckets").unwrap().is_none());
        assert_eq!(target("/jill/buckets"), Target::Buckets);
        assert_eq!(target("/jill/buckets/"), Target::Buckets);
        assert_eq!(target("/jill/buckets/b"), Target::Bucket("b".into()));
        assert_eq!(
            target("/jill/buckets/b/objects"),
            Target::Objects("b".into())
        );
        // Keys a MantaPath would refuse or change are kept as they are.
        for key in ["a/b/c d", "dir/", "a//b", "./x", "../.."] {
            assert_eq!(
                target(&format!("/jill/buckets/b/objects/{key}")),
                Target::Object("b".into(), key.into())
            );
        }
        assert!(parse("/jill/buckets/b/other").is_err());
        assert!(parse("/j/buckets").is_err());
    }

    #[test]
    fn user_metadata_is_shown_as_m_headers() {
        let mut rec = MetadataRecord {
            version: 1,
            dirname: "b".into(),
            key: "b/k".into(),
            name: "k".into(),
            owner: "u".into(),
            creator: "u".into(),
            mtime: 0,
            headers: Default::default(),
            roles: vec![],
            kind: manta_types::record::EntryKind::Directory(Default::default()),
            request_id: None,
            version_id: None,
        };
        rec.headers
            .insert(format!("{META_PREFIX}color"), "red".into());
        rec.headers
            .insert("cache-control".into(), "no-cache".into());
        let h = manta_view(rec).headers;
        assert_eq!(h.get("m-color").map(String::as_str), Some("red"));
        assert_eq!(h.get("cache-control").map(String::as_str), Some("no-cache"));
        assert_eq!(h.len(), 2);
    }
}
