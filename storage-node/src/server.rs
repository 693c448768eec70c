//! The HTTP object API of a storage node.
//!
//! | method | path | answer |
//! |---|---|---|
//! | PUT | `/<owner>/<objectId>` | 201, `x-manta-computed-crc32c` (and `x-joyent-computed-content-md5` when `Content-MD5` was sent), body `{"crc32c","md5"?,"size"}` |
//! | GET, HEAD | `/<owner>/<objectId>` | 200 or 206 (one `Range`), 416, 501 for several ranges |
//! | DELETE | `/<owner>/<objectId>` | 204 |
//! | POST | `/snapshots/<name>` | 201, a snapshot of the dataset |
//! | POST | `/mpu/commit` | 201 (200 if done before), parts joined into a new object ([`crate::concat`]) |
//! | GET | `/capacity` | the dataset's space figures |
//! | GET | `/quarantine` | the copies scrub set aside |
//! | GET | `/ping`, `/metrics` | health and Prometheus metrics |
//!
//! Anything else is a 400 `InvalidResource` (or 405 for another method on an object path), with
//! a `{"code","message"}` body.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::{HeaderMap, HeaderValue, StatusCode};
use manta_types::ErrorCode;
use manta_util::http::{Observer, header_str, only_for, with_observability};
use manta_util::tls::Role;

use crate::dataset::Dataset;
use crate::digest::{Digests, parse_md5_base64};
use crate::error::Error;
use crate::store::{ObjectKey, PutOptions, Store};
use storage_api::range::{ByteRange, RangeError, Resolved};
use storage_api::{COMPUTE_MD5_HEADER, COMPUTED_CRC32C_HEADER};
use storage_api::{COMPUTED_MD5_HEADER, COMPUTED_SHA256_HEADER};

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The object files.
    pub store: Arc<Store>,
    /// The dataset under them.
    pub dataset: Arc<dyn Dataset>,
    /// Largest object accepted.
    pub max_object_size: u64,
    /// Longest pause allowed in an upload body.
    pub idle_timeout: Duration,
    /// Permits for object transfers (PUT bodies and GET bodies) in progress; when none is
    /// left the node answers 503 `ThrottledError` at once rather than queueing without bound.
    pub transfers: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    fn transfer_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        self.transfers
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Throttled)
    }
}

/// Who may change objects on a node: the front door (uploads, discards, joins) and the jobs
/// agents (task outputs). The node's own GC works on its files directly.
const WRITERS: &[Role] = &[Role::Frontdoor, Role::Agent];

/// Who may take snapshots: operators.
const ADMINS: &[Role] = &[Role::Adm];

/// The object API with `/ping`, `/metrics` and the request-id middleware. With `roles` (the
/// node serves mutual TLS) writes and snapshots are checked against the caller's role; reads
/// are for any holder of a region certificate.
pub fn router(state: Arc<AppState>, obs: Arc<Observer>, roles: bool) -> Router<()> {
    let only = |allowed, r| only_for(r, allowed, roles);
    let api = Router::new()
        .route(
            "/{owner}/{id}",
            get(get_object)
                .head(head_object)
                .merge(only(WRITERS, put(put_object).delete(delete_object)))
                .fallback(method_not_allowed),
        )
        .route("/snapshots/{name}", only(ADMINS, post(take_snapshot)))
        .route("/mpu/commit", only(WRITERS, post(crate::concat::commit)))
        .route("/capacity", get(capacity))
        .route("/quarantine", get(quarantine))
        .fallback(not_an_object_path)
        .with_state(state);
    with_observability(api, obs)
}

async fn not_an_object_path() -> Response {
    Error::InvalidPath("expected /<owner uuid>/<object id>".into()).into_response()
}

async fn method_not_allowed() -> Response {
    manta_util::http::error_response_parts(
        ErrorCode::MethodNotAllowed,
        "objects support PUT, GET, HEAD and DELETE",
    )
}

/// The whole-object sums of `d` (CRC32C, or SHA-256 for a copy written before block sums);
/// with `md5_header`, its MD5 too, when the node holds one.
fn digest_headers(h: &mut HeaderMap, d: &Digests, md5_header: Option<&'static str>) {
    let hv = |s: String| HeaderValue::from_str(&s).expect("hex and base64 are valid header values");
    if let Some(crc) = d.crc32c_hex() {
        h.insert(COMPUTED_CRC32C_HEADER, hv(crc));
    }
    if let Some(sha) = d.sha256_hex() {
        h.insert(COMPUTED_SHA256_HEADER, hv(sha));
    }
    if let (Some(name), Some(md5)) = (md5_header, d.md5_base64()) {
        h.insert(name, hv(md5));
    }
}

// `http` has no constant for Content-MD5 (it is deprecated in HTTP, alive in this API).
mod header {
    pub use http::header::*;
    pub const CONTENT_MD5_NAME: &str = "content-md5";
}

async fn put_object(
    State(st): State<Arc<AppState>>,
    Path((owner, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let key = ObjectKey::parse(&owner, &id)?;
    let expected_md5 = match header_str(&headers, header::CONTENT_MD5_NAME) {
        None => None,
        Some(v) => Some(parse_md5_base64(v).ok_or_else(|| {
            Error::InvalidHeader(format!(
                "Content-MD5 {v:?} is not the base64 of a 16-byte MD5"
            ))
        })?),
    };
    let content_length =
        match header_str(&headers, header::CONTENT_LENGTH.as_str()) {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                Error::InvalidHeader(format!("Content-Length {v:?} is not a number"))
            })?),
        };
    let chunked = header_str(&headers, header::TRANSFER_ENCODING.as_str())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if content_length.is_none() && !chunked {
        return Err(Error::ContentLengthRequired);
    }
    let _permit = st.transfer_permit()?;
    let opts = PutOptions {
        max_size: st.max_object_size,
        idle_timeout: st.idle_timeout,
        expected_md5,
        compute_md5: header_str(&headers, COMPUTE_MD5_HEADER)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        content_length,
    };
    // Reading the body is what makes hyper answer `Expect: 100-continue`, so a request refused
    // above never has its body sent.
    let result = st.store.put(&key, body.into_data_stream(), &opts).await;
    let digests = match result {
        Ok(d) => d,
        Err(e @ Error::Abandoned(_)) => {
            tracing::info!(object = %key, error = %e, "upload abandoned by the client");
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    tracing::debug!(object = %key, size = digests.size, "stored");
    let mut resp = (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "crc32c": digests.crc32c_hex(),
            "md5": digests.md5_base64(),
            "size": digests.size,
        })),
    )
        .into_response();
    digest_headers(resp.headers_mut(), &digests, Some(COMPUTED_MD5_HEADER));
    Ok(resp)
}

async fn get_object(
    State(st): State<Arc<AppState>>,
    Path((owner, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    read_object(&st, &owner, &id, &headers, true).await
}

async fn head_object(
    State(st): State<Arc<AppState>>,
    Path((owner, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    read_object(&st, &owner, &id, &headers, false).await
}

async fn read_object(
    st: &AppState,
    owner: &str,
    id: &str,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Response, Error> {
    let key = ObjectKey::parse(owner, id)?;
    let range = match header_str(headers, header::RANGE.as_str()) {
        None => None,
        Some(v) => Some(ByteRange::parse(v).map_err(|e| match e {
            RangeError::Multiple(_) => Error::MultipleRanges(e.to_string()),
            RangeError::Malformed(_) => Error::BadRange(e.to_string()),
        })?),
    };
    let obj = st.store.open_object(&key).await?;
    let (size, digests, mtime) = (obj.size, obj.checksums.digests, obj.mtime);
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(r) => match r.resolve(size) {
            Some(x) => (StatusCode::PARTIAL_CONTENT, x.start, x.len),
            None => return Err(Error::RangeNotSatisfiable { size }),
        },
    };
    let body = if with_body && len > 0 {
        // The permit lives as long as the body stream.
        let permit = st.transfer_permit()?;
        let stream = st.store.read_stream(key, obj, start, len);
        Body::from_stream(futures_util::StreamExt::map(stream, move |chunk| {
            let _ = &permit;
            chunk
        }))
    } else {
        Body::empty()
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = Resolved { start, len }.content_range(size);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&cr).expect("digits and punctuation are a valid header value"),
        );
        // Content-MD5 would describe the body sent: only the whole object's sums are given.
        digest_headers(h, &digests, None);
    } else {
        digest_headers(h, &digests, Some(header::CONTENT_MD5_NAME));
    }
    let tag = digests
        .crc32c_hex()
        .or_else(|| digests.sha256_hex())
        .unwrap_or_default();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{tag}-{size}\"")).expect("hex is a valid header"),
    );
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(mtime)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    Ok(resp)
}

async fn delete_object(
    State(st): State<Arc<AppState>>,
    Path((owner, id)): Path<(String, String)>,
) -> Result<Response, Error> {
    let key = ObjectKey::parse(&owner, &id)?;
    if st.store.delete(&key).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else if st.store.is_quarantined(&key).await {
        Err(Error::Quarantined)
    } else {
        Err(Error::NotFound)
    }
}

async fn take_snapshot(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    st.dataset.snapshot(&name).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "name": name,
            "dataset": st.dataset.name(),
            "kind": st.dataset.kind(),
        })),
    )
        .into_response())
}

async fn capacity(State(st): State<Arc<AppState>>) -> Result<Response, Error> {
    let c = st.dataset.capacity().await?;
    Ok(axum::Json(serde_json::json!({
        "dataset": st.dataset.name(),
        "kind": st.dataset.kind(),
        "total": c.total,
        "available": c.available,
        "used": c.used,
        "availableMB": c.available_mb(),
        "percentUsed": c.percent_used(),
    }))
    .into_response())
}

async fn quarantine(State(st): State<Arc<AppState>>) -> Result<Response, Error> {
    Ok(axum::Json(st.store.quarantined().await?).into_response())
}
