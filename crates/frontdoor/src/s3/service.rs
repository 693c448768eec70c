//! The axum side of the S3 listener: limits `s3s` does not apply, then the `s3s` service
//! (parsing, signatures, the operations in [`S3Api`]), then response touches: the
//! `x-amz-request-id` header, the operation as the metrics route label, empty 304 bodies,
//! a message and `<RequestId>` in error documents `s3s` made itself, and a well-formed body
//! for long multipart completions that fail after their 200.
//!
//! `s3s` logs every failed operation at `ERROR`, client mistakes included; it runs under a
//! subscriber that drops those lines (`QuietS3s`), since the access line already records
//! each answer and failures on our side are logged where they become `InternalError`.
//!
//! Limits, checked before any work: the front door's concurrency limit (`SlowDown` 503),
//! presigned URL lifetimes (`X-Amz-Expires` 1 s to 7 days, else `AccessDenied` 403, as AWS),
//! and declared body sizes (`EntityTooLarge` above 5 GiB); XML bodies are capped by `s3s`
//! at [`XML_MAX_BODY`] and browser-form uploads at [`POST_OBJECT_MAX`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use manta_util::http::RouteName;
use s3s::dto::*;
use s3s::host::{S3Host, VirtualHost};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3, S3ErrorCode, S3Request, S3Response};
use tracing::instrument::WithSubscriber as _;

use super::auth::{BucketRef, Caller, KeyCache, Keys, OpSlot, Owners};
use super::error::{S3Result, s3err};
use super::meta::{BucketRecord, Meta, Versioned};
use super::{acl, buckets, multipart, objects, policy, tagging};
use crate::state::Frontdoor;

/// Largest single PUT (and part), as S3.
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Largest XML request body (a `CompleteMultipartUpload` of 10 000 parts is under 1 MiB).
pub const XML_MAX_BODY: usize = 4 * 1024 * 1024;
/// Largest browser-form (`POST` object) upload: `s3s` holds such a file in memory.
pub const POST_OBJECT_MAX: u64 = 16 * 1024 * 1024;
/// Longest presigned URL lifetime (7 days), as AWS.
pub const MAX_PRESIGNED_SECS: u64 = 7 * 24 * 3600;

/// The operations: the `s3s::S3` implementation over the front door.
#[derive(Debug, Clone)]
pub struct S3Api {
    /// The front door (data path, placement, accounts, configuration).
    pub fd: Arc<Frontdoor>,
    /// The S3 metadata.
    pub meta: Arc<Meta>,
}

impl S3Api {
    /// The region this service reports.
    pub fn region(&self) -> &str {
        self.fd
            .cfg
            .s3
            .as_ref()
            .map(|c| c.region.as_str())
            .unwrap_or("us-east-1")
    }
}

/// The authenticated account of a request.
///
/// # Errors
/// `AccessDenied` when the access check did not run (never for routed operations).
pub fn caller<T>(req: &S3Request<T>) -> S3Result<&manta_auth::Account> {
    signer(req)?
        .account()
        .ok_or_else(|| s3err(S3ErrorCode::AccessDenied, "Access Denied"))
}

/// Who signed a request: the account, or its sub-user.
///
/// # Errors
/// `AccessDenied` when the access check did not run (never for routed operations).
pub fn signer<T>(req: &S3Request<T>) -> S3Result<&Caller> {
    req.extensions
        .get::<Caller>()
        .ok_or_else(|| s3err(S3ErrorCode::AccessDenied, "Access Denied"))
}

/// The bucket a request addresses, as the access check read it.
///
/// # Errors
/// `NoSuchBucket` when the access check did not find it.
pub fn bucket_of<T>(req: &S3Request<T>, name: &str) -> S3Result<Versioned<BucketRecord>> {
    req.extensions
        .get::<BucketRef>()
        .map(|b| b.0.clone())
        .ok_or_else(|| super::error::no_such_bucket(name))
}

/// Virtual-hosted-style addressing under one domain: `<bucket>.<domain>[:port]` names a
/// bucket; the domain itself, IP addresses and any other host (e.g. `localhost`) are
/// path-style.
#[derive(Debug)]
struct DomainHost {
    domain: String,
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // `[v6]:port`; a `[` never closed is left whole (it names no virtual host).
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl S3Host for DomainHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<VirtualHost<'a>> {
        let h = strip_port(host).to_ascii_lowercase();
        if let Some(b) = h
            .strip_suffix(self.domain.as_str())
            .and_then(|x| x.strip_suffix('.'))
            .filter(|b| !b.is_empty())
        {
            return Ok(VirtualHost::new(self.domain.as_str()).with_bucket(b.to_owned()));
        }
        Ok(VirtualHost::new(host))
    }
}

struct Adapter {
    fd: Arc<Frontdoor>,
    service: S3Service,
    /// The process's subscriber minus `s3s`'s own error lines (see [`QuietS3s`]).
    logs: tracing::Dispatch,
}

/// A subscriber that forwards everything to `inner` except `ERROR` events of the `s3s`
/// crate. `s3s` logs every failed operation at `ERROR`, client mistakes (a missing key, a
/// bad signature) included; here a 4xx is not an error. The request's own access line (from
/// the observe middleware) says what was answered, and failures on our side are logged with
/// their cause where they are turned into `InternalError`.
struct QuietS3s {
    inner: tracing::Dispatch,
    /// The most verbose level the process logs (so this subscriber does not widen it).
    max: tracing::level_filters::LevelFilter,
}

impl QuietS3s {
    fn muted(m: &tracing::Metadata<'_>) -> bool {
        *m.level() == tracing::Level::ERROR && m.target().starts_with("s3s")
    }
}

impl tracing::Subscriber for QuietS3s {
    fn register_callsite(
        &self,
        m: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if Self::muted(m) {
            tracing::subscriber::Interest::never()
        } else {
            self.inner.register_callsite(m)
        }
    }

    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        !Self::muted(m) && self.inner.enabled(m)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.inner.new_span(attrs)
    }

    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        self.inner.record(span, values);
    }

    fn record_follows_from(&self, span: &tracing::span::Id, follows: &tracing::span::Id) {
        self.inner.record_follows_from(span, follows);
    }

    fn event(&self, e: &tracing::Event<'_>) {
        if !Self::muted(e.metadata()) {
            self.inner.event(e);
        }
    }

    fn enter(&self, span: &tracing::span::Id) {
        self.inner.enter(span);
    }

    fn exit(&self, span: &tracing::span::Id) {
        self.inner.exit(span);
    }

    fn clone_span(&self, id: &tracing::span::Id) -> tracing::span::Id {
        self.inner.clone_span(id)
    }

    fn try_close(&self, id: tracing::span::Id) -> bool {
        self.inner.try_close(id)
    }
}

/// The S3 application: every path goes to `s3s`.
pub fn router(fd: Arc<Frontdoor>) -> Router {
    let meta = Arc::new(Meta::new(fd.moray.clone()));
    let api = S3Api {
        fd: fd.clone(),
        meta: meta.clone(),
    };
    let cache = Arc::new(KeyCache::default());
    let mut b = S3ServiceBuilder::new(api);
    b.set_auth(Keys {
        fd: fd.clone(),
        cache: cache.clone(),
    });
    b.set_access(Owners {
        fd: fd.clone(),
        cache,
        meta,
    });
    configure(&mut b, fd.cfg.s3.as_ref().and_then(|c| c.domain.as_deref()));
    let inner = tracing::dispatcher::get_default(Clone::clone);
    let adapter = Arc::new(Adapter {
        fd,
        service: b.build(),
        logs: tracing::Dispatch::new(QuietS3s {
            inner,
            max: tracing::level_filters::LevelFilter::current(),
        }),
    });
    Router::new().fallback(handle).with_state(adapter)
}

/// What the listener sets on its `s3s` service besides the operations, the keys and the
/// access check: virtual-hosted-style addressing under `domain` (if any) and the body limits.
/// Public so the fuzz targets (`crates/fuzz-targets`) parse requests as the listener does.
pub fn configure(b: &mut S3ServiceBuilder, domain: Option<&str>) {
    if let Some(domain) = domain {
        b.set_host(DomainHost {
            domain: strip_port(domain).to_ascii_lowercase(),
        });
    }
    let mut conf = s3s::config::S3Config::default();
    conf.xml_max_body_size = XML_MAX_BODY;
    conf.post_object_max_file_size = POST_OBJECT_MAX;
    conf.form_max_fields_size = 1024 * 1024;
    b.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        conf,
    ))));
}

fn error_response(e: s3s::S3Error) -> Response {
    let mut e = e;
    super::error::tag(&mut e);
    match e.to_http_response() {
        Ok(r) => r.map(axum::body::Body::new),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Marks an object or part upload whose body is `Transfer-Encoding: chunked` with no
/// `Content-Length`: the operation reads it to its end (up to its size limit) and takes the
/// length from there, ignoring the declared one (see [`admit_unknown_length`]).
#[derive(Debug, Clone, Copy)]
pub struct UnknownLength;

/// The length a request declares for its body, unless the adapter marked it unknown.
pub fn declared_length<T>(req: &S3Request<T>, content_length: Option<i64>) -> Option<i64> {
    match req.extensions.get::<UnknownLength>() {
        Some(UnknownLength) => None,
        None => content_length,
    }
}

/// `PutObject` and `UploadPart` with a chunked body and an unsigned payload
/// (`x-amz-content-sha256: UNSIGNED-PAYLOAD`) have no length until the body ends; `s3s`
/// refuses every unsigned body without one. Such a request gets a placeholder
/// `Content-Length` (not covered by its signature: the header was absent when it was signed)
/// and the [`UnknownLength`] mark, which the operations honour. Requests with other bodies
/// (XML documents, signed payloads whose hash needs the length) are left as they are, and
/// still answer 411 `MissingContentLength`.
pub fn admit_unknown_length(req: &mut Request) {
    let h = req.headers();
    if req.method() != http::Method::PUT
        || h.contains_key(http::header::CONTENT_LENGTH)
        || h.contains_key("x-amz-copy-source")
        || h.get("x-amz-content-sha256")
            .is_none_or(|v| v != "UNSIGNED-PAYLOAD")
    {
        return;
    }
    let chunked = h.get_all(http::header::TRANSFER_ENCODING).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
    });
    // Only uploads of bytes: no sub-resource but a part's number and upload id.
    let bytes_upload = req.uri().query().unwrap_or_default().split('&').all(|p| {
        let name = p.split('=').next().unwrap_or_default();
        name.is_empty() || name == "partNumber" || name == "uploadId"
    });
    if chunked && bytes_upload {
        req.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(MAX_OBJECT_SIZE),
        );
        req.extensions_mut().insert(UnknownLength);
    }
}

/// How far a SigV2 request's date may be from the server's clock, as AWS allows.
pub const MAX_V2_SKEW_SECS: u64 = 15 * 60;

/// Refuses what must not reach `s3s`: presigned URLs living 0 s or over 7 days (SigV4's
/// `X-Amz-Expires`, SigV2's `Expires`), SigV2 requests whose signed date is missing or over 15
/// minutes from the server's clock (`s3s` checks neither: such a request could be replayed for
/// ever), bodies declared over the size limit. `now` is the server's clock. Public for the
/// fuzz targets (`crates/fuzz-targets`).
pub fn precheck(req: &Request, now: SystemTime) -> Option<s3s::S3Error> {
    if let Some(e) = check_v2_time(req, now) {
        return Some(e);
    }
    if let Some(q) = req.uri().query() {
        for (k, v) in manta_auth::presign::parse_query(q) {
            if k == "X-Amz-Expires" {
                match v.parse::<u64>() {
                    Ok(n) if (1..=MAX_PRESIGNED_SECS).contains(&n) => {}
                    Ok(_) => {
                        return Some(s3err(
                            S3ErrorCode::AccessDenied,
                            format!(
                                "X-Amz-Expires must be between 1 and {MAX_PRESIGNED_SECS} seconds"
                            ),
                        ));
                    }
                    Err(_) => {
                        return Some(s3err(
                            S3ErrorCode::AuthorizationQueryParametersError,
                            "X-Amz-Expires should be a number",
                        ));
                    }
                }
            }
        }
    }
    let declared = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let size = declared("x-amz-decoded-content-length").or_else(|| declared("content-length"));
    // aws-chunked framing adds a little to Content-Length; the decoded length is exact.
    if size.is_some_and(|n| n > MAX_OBJECT_SIZE + 64 * 1024 * 1024) {
        return Some(s3err(
            S3ErrorCode::EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size.",
        ));
    }
    None
}

/// The time checks SigV2 needs and `s3s` leaves out: a header-signed request's `x-amz-date`
/// (or else `Date`) within [`MAX_V2_SKEW_SECS`] of `now`; a presigned URL's `Expires` at most
/// [`MAX_PRESIGNED_SECS`] ahead (one already past is refused by `s3s`).
fn check_v2_time(req: &Request, now: SystemTime) -> Option<s3s::S3Error> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if header("authorization").is_some_and(|a| a.starts_with("AWS ")) {
        let Some(date) = header("x-amz-date").or_else(|| header("date")) else {
            return Some(s3err(
                S3ErrorCode::AccessDenied,
                "AWS authentication requires a valid Date or x-amz-date header",
            ));
        };
        let Ok(when) = httpdate::parse_http_date(date) else {
            return Some(s3err(
                S3ErrorCode::AccessDenied,
                "AWS authentication requires a valid Date or x-amz-date header",
            ));
        };
        let skew = now
            .duration_since(when)
            .unwrap_or_else(|e| e.duration())
            .as_secs();
        if skew > MAX_V2_SKEW_SECS {
            return Some(s3err(
                S3ErrorCode::RequestTimeTooSkewed,
                format!(
                    "The difference between the request time ({date}) and the server's time is \
                     {skew} s, over {MAX_V2_SKEW_SECS} s."
                ),
            ));
        }
    }
    let q = req.uri().query()?;
    let params = manta_auth::presign::parse_query(q);
    let has = |name: &str| params.iter().any(|(k, _)| k == name);
    if has("Signature") && has("AWSAccessKeyId") {
        let expires = params.iter().find(|(k, _)| k == "Expires").map(|(_, v)| v);
        match expires.and_then(|v| v.parse::<u64>().ok()) {
            Some(t) if t <= now_secs.saturating_add(MAX_PRESIGNED_SECS) => {}
            Some(_) => {
                return Some(s3err(
                    S3ErrorCode::AccessDenied,
                    format!("Expires must be at most {MAX_PRESIGNED_SECS} seconds ahead"),
                ));
            }
            None => {
                return Some(s3err(
                    S3ErrorCode::AuthorizationQueryParametersError,
                    "Expires should be a number of seconds since the epoch",
                ));
            }
        }
    }
    None
}

/// Messages for errors `s3s` raises without one (signature checks, request parsing).
fn default_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "SignatureDoesNotMatch" => {
            "The request signature we calculated does not match the signature you provided. Check your key and signing method."
        }
        "InvalidAccessKeyId" => "The AWS Access Key Id you provided does not exist in our records.",
        "AccessDenied" => "Access Denied",
        "InvalidBucketName" => "The specified bucket is not valid.",
        "KeyTooLongError" => "Your key is too long",
        "InvalidURI" => "Couldn't parse the specified URI.",
        "MissingContentLength" => "You must provide the Content-Length HTTP header.",
        "MalformedXML" => {
            "The XML you provided was not well-formed or did not validate against our published schema"
        }
        "RequestTimeTooSkewed" => {
            "The difference between the request time and the server's time is too large."
        }
        "NotImplemented" => "A header you provided implies functionality that is not implemented",
        "MethodNotAllowed" => "The specified method is not allowed against this resource.",
        "InvalidRequest" => "Invalid Request",
        "InvalidArgument" => "Invalid Argument",
        _ => return None,
    })
}

/// Gives an error document made inside `s3s` (before any operation ran) what ours have: a
/// `<Message>` and the `<RequestId>` (clients and operators match it with the logs).
async fn complete_error_document(resp: Response) -> Response {
    const MAX: usize = 64 * 1024;
    let is_xml = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("xml"));
    if !is_xml {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let mut doc = text.to_owned();
    if doc.contains("<Error>") {
        if !doc.contains("<Message>")
            && let Some(code) = doc
                .split_once("<Code>")
                .and_then(|(_, r)| r.split_once("</Code>"))
                .map(|(c, _)| c.to_owned())
            && let Some(m) = default_message(&code)
        {
            doc = doc.replacen("</Code>", &format!("</Code><Message>{m}</Message>"), 1);
        }
        if !doc.contains("<RequestId>")
            && let Some(id) = manta_util::http::current_request_id()
        {
            doc = doc.replacen(
                "</Error>",
                &format!("<RequestId>{id}</RequestId></Error>"),
                1,
            );
        }
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(doc))
}

async fn handle(State(st): State<Arc<Adapter>>, req: Request) -> Response {
    let (mut resp, route) = serve(&st, req).await;
    if let Some(id) = manta_util::http::current_request_id()
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        resp.headers_mut().insert("x-amz-request-id", v);
    }
    resp.extensions_mut().insert(RouteName(route));
    resp
}

/// The response, and the route name for the metrics.
async fn serve(st: &Adapter, mut req: Request) -> (Response, &'static str) {
    let Ok(_permit) = st.fd.throttle.clone().try_acquire_owned() else {
        st.fd.metrics.inc(
            "frontdoor_throttled_total",
            "Requests refused at the concurrency limit.",
            &[],
        );
        let e = s3err(S3ErrorCode::SlowDown, "Please reduce your request rate.");
        return (error_response(e), "S3Throttled");
    };
    if let Some(e) = precheck(&req, SystemTime::now()) {
        return (error_response(e), "S3Refused");
    }
    join_repeated(req.headers_mut(), http::header::CONTENT_ENCODING);
    admit_unknown_length(&mut req);
    let slot = OpSlot::default();
    req.extensions_mut().insert(slot.clone());
    let req = req.map(s3s::Body::http_body_unsync);
    let call = st.service.call(req).with_subscriber(st.logs.clone());
    let mut resp = match call.await {
        Ok(r) => r.map(axum::body::Body::new),
        Err(e) => {
            let err: s3s::StdError = e.into();
            error_response(super::error::internal(err))
        }
    };
    if resp.status().is_client_error() || resp.status().is_server_error() {
        resp = complete_error_document(resp).await;
    }
    if resp.status() == StatusCode::NOT_MODIFIED {
        *resp.body_mut() = axum::body::Body::empty();
        resp.headers_mut().remove(http::header::CONTENT_LENGTH);
        resp.headers_mut().remove(http::header::CONTENT_TYPE);
    }
    let op = slot.get().unwrap_or("S3Unrouted");
    if op == "GetObjectAttributes" && resp.status() == StatusCode::OK {
        resp = unquoted_etag(resp).await;
    }
    if op == "CompleteMultipartUpload" && resp.status() == StatusCode::OK {
        let (parts, body) = resp.into_parts();
        resp = Response::from_parts(parts, drop_late_declaration(body));
    }
    (resp, op)
}

/// `GetObjectAttributes` answers the ETag in its document without the quotes every other
/// answer has (as S3 does; clients compare it so). `s3s` always quotes it: this takes them
/// off. The document is small (a page of part numbers and sizes at most).
async fn unquoted_etag(resp: Response) -> Response {
    const MOST: usize = 1024 * 1024;
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MOST).await else {
        return error_response(super::error::internal(
            "GetObjectAttributes answer too large",
        ));
    };
    let doc = String::from_utf8_lossy(&bytes);
    let doc = match (doc.find("<ETag>\""), doc.find("\"</ETag>")) {
        (Some(a), Some(b)) if a + 7 <= b => format!(
            "{}<ETag>{}</ETag>{}",
            &doc[..a],
            &doc[a + 7..b],
            &doc[b + 8..]
        ),
        _ => doc.into_owned(),
    };
    let mut resp = Response::from_parts(parts, axum::body::Body::from(doc));
    resp.headers_mut().remove(http::header::CONTENT_LENGTH);
    resp
}

/// Joins the lines of a list-valued header sent more than once into one (`a,b`), as HTTP
/// defines them and as SigV4 signs them, so the signature still holds. The AWS SDKs send
/// `Content-Encoding` twice when an object with its own encoding is uploaded `aws-chunked`;
/// `s3s` refuses repeated headers.
fn join_repeated(headers: &mut http::HeaderMap, name: http::HeaderName) {
    if headers.get_all(&name).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<u8> = headers
        .get_all(&name)
        .iter()
        .map(|v| v.as_bytes().trim_ascii())
        .collect::<Vec<_>>()
        .join(&b',');
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(name, v);
    }
}

/// A long completion answers 200, an XML declaration, whitespace while the nodes work, then
/// the result or an error document. `s3s` writes error documents with their own declaration,
/// and a second declaration makes the whole answer malformed XML (clients then cannot read the
/// error code): this drops any declaration after the first.
fn drop_late_declaration(body: axum::body::Body) -> axum::body::Body {
    use futures_util::StreamExt as _;
    let mut seen = false;
    let stream = body.into_data_stream().map(move |chunk| {
        chunk.map(|c| {
            let start = c
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(c.len());
            if c[start..].starts_with(b"<?xml") {
                if seen && let Some(end) = c[start..].windows(2).position(|w| w == b"?>") {
                    return c.slice(start + end + 2..);
                }
                seen = true;
            }
            c
        })
    });
    axum::body::Body::from_stream(stream)
}

#[async_trait]
impl S3 for S3Api {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> s3s::S3Result<S3Response<ListBucketsOutput>> {
        buckets::list_buckets(self, req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> s3s::S3Result<S3Response<CreateBucketOutput>> {
        buckets::create_bucket(self, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> s3s::S3Result<S3Response<HeadBucketOutput>> {
        buckets::head_bucket(self, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> s3s::S3Result<S3Response<DeleteBucketOutput>> {
        buckets::delete_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> s3s::S3Result<S3Response<GetBucketLocationOutput>> {
        buckets::get_bucket_location(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> s3s::S3Result<S3Response<GetBucketVersioningOutput>> {
        buckets::get_bucket_versioning(req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> s3s::S3Result<S3Response<PutBucketVersioningOutput>> {
        buckets::put_bucket_versioning(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> s3s::S3Result<S3Response<ListObjectsOutput>> {
        buckets::list_objects(self, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> s3s::S3Result<S3Response<ListObjectsV2Output>> {
        buckets::list_objects_v2(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> s3s::S3Result<S3Response<ListObjectVersionsOutput>> {
        buckets::list_object_versions(self, req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> s3s::S3Result<S3Response<PutObjectOutput>> {
        objects::put_object(self, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> s3s::S3Result<S3Response<GetObjectOutput>> {
        objects::get_object(self, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> s3s::S3Result<S3Response<HeadObjectOutput>> {
        objects::head_object(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> s3s::S3Result<S3Response<DeleteObjectOutput>> {
        objects::delete_object(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> s3s::S3Result<S3Response<DeleteObjectsOutput>> {
        objects::delete_objects(self, req).await
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> s3s::S3Result<S3Response<GetBucketAclOutput>> {
        acl::get_bucket_acl(self, req).await
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> s3s::S3Result<S3Response<PutBucketAclOutput>> {
        acl::put_bucket_acl(self, req).await
    }

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> s3s::S3Result<S3Response<PutBucketPolicyOutput>> {
        policy::put_bucket_policy(self, req).await
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> s3s::S3Result<S3Response<GetBucketPolicyOutput>> {
        policy::get_bucket_policy(self, req).await
    }

    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> s3s::S3Result<S3Response<DeleteBucketPolicyOutput>> {
        policy::delete_bucket_policy(self, req).await
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> s3s::S3Result<S3Response<GetObjectAclOutput>> {
        acl::get_object_acl(self, req).await
    }

    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> s3s::S3Result<S3Response<PutObjectAclOutput>> {
        acl::put_object_acl(self, req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> s3s::S3Result<S3Response<GetObjectTaggingOutput>> {
        tagging::get_object_tagging(self, req).await
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> s3s::S3Result<S3Response<PutObjectTaggingOutput>> {
        tagging::put_object_tagging(self, req).await
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> s3s::S3Result<S3Response<DeleteObjectTaggingOutput>> {
        tagging::delete_object_tagging(self, req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> s3s::S3Result<S3Response<GetObjectAttributesOutput>> {
        objects::get_object_attributes(self, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> s3s::S3Result<S3Response<CopyObjectOutput>> {
        objects::copy_object(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> s3s::S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create(self, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> s3s::S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> s3s::S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> s3s::S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> s3s::S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_uploads(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> s3s::S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> s3s::S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort(self, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chunked_uploads_of_unsigned_bytes_get_an_unknown_length() {
        let req = |uri: &str, headers: &[(&str, &str)]| {
            let mut b = http::Request::builder().method("PUT").uri(uri);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            let mut r = b.body(axum::body::Body::empty()).unwrap();
            admit_unknown_length(&mut r);
            r.extensions().get::<UnknownLength>().is_some()
        };
        let chunked = ("transfer-encoding", "chunked");
        let unsigned = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
        assert!(req("/b/k", &[chunked, unsigned]));
        assert!(req("/b/k?partNumber=2&uploadId=u", &[chunked, unsigned]));
        assert!(!req("/b/k", &[unsigned]), "not chunked");
        assert!(!req("/b/k", &[chunked, ("x-amz-content-sha256", "abc")]));
        assert!(!req("/b/k?tagging", &[chunked, unsigned]), "an XML body");
        let copy = ("x-amz-copy-source", "b/j");
        assert!(!req("/b/k", &[chunked, unsigned, copy]));
        assert!(!req("/b/k", &[chunked, unsigned, ("content-length", "3")]));
    }

    #[test]
    fn repeated_list_headers_are_joined_as_sigv4_signs_them() {
        let mut h = http::HeaderMap::new();
        h.append("content-encoding", HeaderValue::from_static("gzip"));
        join_repeated(&mut h, http::header::CONTENT_ENCODING);
        assert_eq!(h.get_all("content-encoding").iter().count(), 1);
        h.append(
            "content-encoding",
            HeaderValue::from_static(" aws-chunked "),
        );
        join_repeated(&mut h, http::header::CONTENT_ENCODING);
        let all: Vec<_> = h.get_all("content-encoding").iter().collect();
        assert_eq!(all, ["gzip,aws-chunked"]);
    }

    #[test]
    fn virtual_hosts() {
        let h = DomainHost {
            domain: "s3.example.test".into(),
        };
        let b = |host: &str| {
            h.parse_host_header(host)
                .unwrap()
                .bucket()
                .map(str::to_owned)
        };
        assert_eq!(b("s3.example.test"), None);
        assert_eq!(b("s3.example.test:9000"), None);
        assert_eq!(b("photos.s3.example.test:9000").as_deref(), Some("photos"));
        assert_eq!(b("Photos.S3.Example.Test").as_deref(), Some("photos"));
        assert_eq!(b("localhost:9000"), None);
        assert_eq!(b("127.0.0.1:9000"), None);
        assert_eq!(b("[::1]:9000"), None);
        assert_eq!(strip_port("[::1]:9000"), "[::1]");
    }

    /// Found by the `s3_request` fuzz target: a Host header opening `[` without closing it
    /// panicked (sliced one byte past its end) when virtual hosts were on.
    #[test]
    fn an_unclosed_bracket_in_the_host_is_no_virtual_host() {
        assert_eq!(strip_port("[::1"), "[::1");
        assert_eq!(strip_port("["), "[");
        assert_eq!(strip_port("[::1]"), "[::1]");
        let h = DomainHost {
            domain: "s3.example.test".into(),
        };
        let vh = h.parse_host_header("[::1bucket").unwrap();
        assert_eq!(vh.bucket(), None);
    }
}
