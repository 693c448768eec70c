//! S3 buckets seen through the Manta API, read-only, so Manta tools and jobs can take S3
//! objects as inputs.
//!
//! | path | GET / HEAD |
//! |---|---|
//! | `/:login/buckets` | the account's buckets, one JSON object per line (`name`, `type` `bucket`, `mtime`) |
//! | `/:login/buckets/<bucket>` | the bucket as one JSON object |
//! | `/:login/buckets/<bucket>/objects` | its objects in key order (`name`, `type` `bucketobject`, `etag`, `size`, `contentType`, `contentMD5`, `mtime`), and `type` `group` entries for common prefixes; query `prefix`, `delimiter`, `marker` (exclusive), `limit` (default and most 1024); `next-marker` header when more follow |
//! | `/:login/buckets/<bucket>/objects/<key>` | the object's bytes (one `Range`), with `etag`, `last-modified`, `content-md5`, `durability-level`, and user metadata as `m-<name>` |
//!
//! The key is the rest of the path, percent-decoded (so `%2F` and `/` are the same). Callers
//! authenticate as for the rest of the Manta API (signature, presigned URL, token) and must
//! be the owning account. Writes are `MethodNotAllowed`: buckets are written through S3.
//!
//! The front door's Manta API calls [`handle`] for every path whose second segment is
//! `buckets` ([`is_buckets_path`]).

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode, header};
use manta_auth::{AccountStore as _, Caller, RequestInfo, Via};
use manta_types::{ErrorCode, HasErrorCode, MetadataRecord};
use manta_util::http::{PeerAddr, Secure};
use storage_api::range::{ByteRange, RangeError};

use super::error::S3Result;
use super::list::{self, Entry, Query};
use super::meta::{BucketState, Meta};
use crate::api::headers::http_date;
use crate::error::{ApiResult, err, from_store};
use crate::state::Frontdoor;

/// Most entries of one object listing.
pub const MAX_LIMIT: usize = 1024;

/// True for `/:login/buckets` and everything under it.
pub fn is_buckets_path(path: &str) -> bool {
    let mut segs = path.trim_start_matches('/').split('/');
    let login = segs.next().unwrap_or("");
    !login.is_empty() && segs.next() == Some("buckets")
}

fn decode(s: &str) -> ApiResult<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| err(ErrorCode::InvalidResource, "the path is not valid UTF-8"))
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Buckets,
    Bucket(String),
    Objects(String),
    Object(String, String),
}

fn parse(path: &str) -> ApiResult<(String, Target)> {
    let p = path.trim_start_matches('/');
    let mut it = p.splitn(5, '/');
    let login = decode(it.next().unwrap_or(""))?;
    let _buckets = it.next();
    let bucket = it
        .next()
        .filter(|b| !b.is_empty())
        .map(decode)
        .transpose()?;
    let objects = it.next();
    let key = it.next();
    let bad = || {
        err(
            ErrorCode::InvalidResource,
            format!("{path} is not a bucket path"),
        )
    };
    let t = match (bucket, objects, key) {
        (None, None, None) => Target::Buckets,
        (Some(b), None | Some(""), None) => Target::Bucket(b),
        (Some(b), Some("objects"), None | Some("")) => Target::Objects(b),
        (Some(b), Some("objects"), Some(k)) => Target::Object(b, decode(k)?),
        _ => return Err(bad()),
    };
    Ok((login, t))
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

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn json_lines(lines: Vec<serde_json::Value>) -> Response {
    let mut body = String::new();
    for l in lines {
        body.push_str(&l.to_string());
        body.push('\n');
    }
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-json-stream; type=directory"),
    );
    r
}

/// Serves a request under `/:login/buckets` (see the module docs); `route` names it for the
/// metrics.
///
/// # Errors
/// The Manta API's errors: authentication, `AuthorizationFailed`, `ResourceNotFound`,
/// `MethodNotAllowed`, `RequestedRangeNotSatisfiable`, `ServiceUnavailable`.
pub async fn handle(
    fd: &Arc<Frontdoor>,
    req: Request,
    route: &mut &'static str,
) -> ApiResult<Response> {
    let raw_path = req.uri().path().to_owned();
    let raw_query = req.uri().query().map(str::to_owned);
    let method = req.method().clone();
    let headers = req.headers().clone();
    let secure = req.extensions().get::<Secure>().is_some_and(|s| s.0);
    let loopback = req
        .extensions()
        .get::<PeerAddr>()
        .is_some_and(|p| p.0.ip().is_loopback());
    drop(req);
    let (login, target) = parse(&raw_path)?;
    let info = RequestInfo {
        method: method.as_str(),
        path: &raw_path,
        query: raw_query.as_deref(),
        headers: &headers,
    };
    let caller = fd
        .auth
        .authenticate(&info, SystemTime::now())
        .await
        .map_err(|e| match e {
            manta_auth::AuthError::Store(s) => from_store(s),
            e => err(e.code(), e.to_string()),
        })?;
    let presigned = matches!(
        &caller,
        Caller::Account {
            via: Via::Presigned,
            ..
        }
    );
    if !secure && !loopback && !fd.cfg.allow_insecure_http && !presigned {
        return Err(err(
            ErrorCode::SecureTransportRequired,
            "Manta requires a secure transport (SSL/TLS)",
        ));
    }
    let Some(account) = caller.account() else {
        return Err(err(
            ErrorCode::AuthorizationRequired,
            "Authorization is required",
        ));
    };
    let owner = fd
        .accounts
        .by_login(&login)
        .await
        .map_err(from_store)?
        .ok_or_else(|| {
            err(
                ErrorCode::AccountDoesNotExist,
                format!("{login} does not exist"),
            )
        })?;
    if account.uuid != owner.uuid {
        return Err(err(
            ErrorCode::AuthorizationFailed,
            format!("{} is not allowed to access {raw_path}", account.login),
        ));
    }
    if let Caller::Account {
        methods: Some(allowed),
        ..
    } = &caller
        && !allowed.iter().any(|m| m == method.as_str())
    {
        return Err(err(
            ErrorCode::InvalidQueryStringAuthentication,
            format!("this URL does not allow {method}"),
        ));
    }
    if !matches!(method, Method::GET | Method::HEAD) {
        *route = "BucketsMethodNotAllowed";
        return Err(err(
            ErrorCode::MethodNotAllowed,
            format!(
                "{method} is not allowed on {raw_path}: buckets are written through the S3 API"
            ),
        ));
    }
    let meta = Meta::existing(fd.moray.clone());
    let query = raw_query
        .as_deref()
        .map(manta_auth::presign::parse_query)
        .unwrap_or_default();
    let param = |n: &str| query.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let head = method == Method::HEAD;
    let bucket_of = |name: &str| {
        let meta = &meta;
        let uuid = owner.uuid.clone();
        let name = name.to_owned();
        async move {
            match lift(meta.bucket(&name).await)? {
                Some(b) if b.rec.owner == uuid && b.rec.state == BucketState::Active => Ok(b.rec),
                _ => Err(not_found(&format!("bucket {name}"))),
            }
        }
    };
    match target {
        Target::Buckets => {
            *route = "ListBuckets";
            let buckets = lift(meta.buckets_of(&owner.uuid).await)?;
            let lines = buckets
                .into_iter()
                .filter(|b| b.state == BucketState::Active)
                .map(|b| {
                    serde_json::json!({
                        "name": b.name,
                        "type": "bucket",
                        "mtime": manta_types::time::iso8601_ms(b.created),
                    })
                })
                .collect();
            Ok(maybe_head(json_lines(lines), head))
        }
        Target::Bucket(name) => {
            *route = "HeadBucket";
            let b = bucket_of(&name).await?;
            let line = serde_json::json!({
                "name": b.name,
                "type": "bucket",
                "mtime": manta_types::time::iso8601_ms(b.created),
            });
            Ok(maybe_head(json_lines(vec![line]), head))
        }
        Target::Objects(name) => {
            *route = "ListBucketObjects";
            bucket_of(&name).await?;
            let limit = match param("limit") {
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
            let prefix = param("prefix").unwrap_or("").to_owned();
            let q = Query {
                prefix: &prefix,
                delimiter: param("delimiter").filter(|d| !d.is_empty()),
                after: param("marker").filter(|m| !m.is_empty()),
                max: limit,
            };
            if prefix.contains('\0') || q.after.is_some_and(|a| a.contains('\0')) {
                return Err(err(
                    ErrorCode::InvalidParameter,
                    "NUL in a listing parameter",
                ));
            }
            let m = &meta;
            let bucket = name.as_str();
            let pfx = prefix.as_str();
            let page = lift(
                list::page(&q, rec_name, |from, n| async move {
                    m.scan(bucket, &from, pfx, n).await
                })
                .await,
            )?;
            let next = page.last.clone().filter(|_| page.truncated);
            let lines = page
                .entries
                .into_iter()
                .map(|e| match e {
                    Entry::Prefix(p) => serde_json::json!({"name": p, "type": "group"}),
                    Entry::Object(r) => object_line(&r),
                })
                .collect();
            let mut resp = json_lines(lines);
            if let Some(n) = next {
                resp.headers_mut().insert("next-marker", hv(&n));
            }
            Ok(maybe_head(resp, head))
        }
        Target::Object(name, key) => {
            *route = "GetBucketObject";
            bucket_of(&name).await?;
            let entry = lift(meta.object(&name, &key).await)?
                .ok_or_else(|| not_found(&format!("{name}/{key}")))?;
            get_object(fd, &headers, entry.rec, head).await
        }
    }
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

fn maybe_head(mut r: Response, head: bool) -> Response {
    if head {
        *r.body_mut() = Body::empty();
    }
    r
}

async fn get_object(
    fd: &Arc<Frontdoor>,
    h: &http::HeaderMap,
    rec: MetadataRecord,
    head: bool,
) -> ApiResult<Response> {
    let Some(o) = rec.object().cloned() else {
        return Err(err(ErrorCode::InternalError, "not an object"));
    };
    let mut resp = Response::new(Body::empty());
    {
        let out = resp.headers_mut();
        out.insert(header::ETAG, hv(&o.etag));
        out.insert(header::LAST_MODIFIED, hv(&http_date(rec.mtime)));
        out.insert(header::CONTENT_TYPE, hv(&o.content_type));
        out.insert("content-md5", hv(&o.content_md5));
        out.insert("durability-level", HeaderValue::from(o.sharks.len()));
        out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(sha) = &o.sha256 {
            out.insert("x-manta-content-sha256", hv(sha));
        }
        for (k, v) in &rec.headers {
            let name = match k.strip_prefix(super::objects::META_PREFIX) {
                Some(m) => format!("m-{m}"),
                None => k.clone(),
            };
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                out.insert(n, v);
            }
        }
    }
    let tag_matches = |v: &str| {
        v.split(',')
            .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
            .any(|t| t == "*" || t == o.etag)
    };
    let get = |n: &str| manta_util::http::header_str(h, n);
    if let Some(v) = get("if-match")
        && !tag_matches(v)
    {
        return Err(err(
            ErrorCode::PreconditionFailed,
            "if-match precondition failed",
        ));
    }
    let not_modified = match get("if-none-match") {
        Some(v) => tag_matches(v),
        None => get("if-modified-since")
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|t| rec.mtime / 1000 <= t.as_secs()),
    };
    if not_modified {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp.headers_mut().remove(header::CONTENT_TYPE);
        return Ok(resp);
    }
    let total = o.content_length;
    let resolved = match get("range").map(ByteRange::parse) {
        None | Some(Err(RangeError::Malformed(_))) => None,
        Some(Err(RangeError::Multiple(_))) => {
            return Err(err(
                ErrorCode::NotImplemented,
                "multiple ranges are not supported",
            ));
        }
        Some(Ok(br)) => match br.resolve(total) {
            Some(r) => Some(r),
            None => {
                return Err(err(
                    ErrorCode::RequestedRangeNotSatisfiable,
                    format!("the range is not satisfiable for {total} bytes"),
                ));
            }
        },
    };
    let length = resolved.as_ref().map_or(total, |r| r.len);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(r) = &resolved {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, hv(&r.content_range(total)));
    }
    if head || length == 0 {
        return Ok(resp);
    }
    let range = resolved
        .as_ref()
        .map(|r| ByteRange::FromTo(r.start, r.last()));
    let (_, _, stream) = crate::data::fetch(fd, &o, &rec.creator, range).await?;
    *resp.body_mut() = Body::from_stream(stream);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(is_buckets_path("/jill/buckets"));
        assert!(is_buckets_path("/jill/buckets/b/objects/k"));
        assert!(!is_buckets_path("/jill/stor/buckets"));
        assert!(!is_buckets_path("//buckets"));
        assert_eq!(parse("/jill/buckets").unwrap().1, Target::Buckets);
        assert_eq!(parse("/jill/buckets/").unwrap().1, Target::Buckets);
        assert_eq!(
            parse("/jill/buckets/b").unwrap().1,
            Target::Bucket("b".into())
        );
        assert_eq!(
            parse("/jill/buckets/b/objects").unwrap().1,
            Target::Objects("b".into())
        );
        assert_eq!(
            parse("/jill/buckets/b/objects/a/b%2Fc%20d").unwrap().1,
            Target::Object("b".into(), "a/b/c d".into())
        );
        assert!(parse("/jill/buckets/b/other").is_err());
    }
}
