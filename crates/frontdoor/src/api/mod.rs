//! The Manta HTTP API: routing a request to its handler after authenticating the caller and
//! checking that it may act on the path.
//!
//! Every request under `/:login/...` goes through [`handle`]: throttle, parse the path, find
//! the owner account, authenticate (signature, presigned URL, token, or anonymous), enforce
//! secure transport, authorise, then route: `/:login/jobs` to the jobs API,
//! `/:login/buckets/...` (S3 buckets, read-only) to [`buckets`], and everything else on method
//! and content type to the handlers in [`objects`], [`dirs`] and [`links`]. Every handler
//! takes the same [`Ctx`]; objects are answered by one read ([`objects::read_object`]: the
//! headers of [`objects::object_headers`], the conditions of [`conditional`]), whether they
//! live in the directory tree or in a bucket.

pub mod buckets;
pub mod conditional;
pub mod cors;
pub mod dirs;
pub mod headers;
pub mod links;
pub mod mlogin;
pub mod objects;
pub mod roles;
pub mod uploads;

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode};
use manta_auth::{Account, AccountStore as _, Caller, RequestInfo, Via};
use manta_types::path::decode_url_path;
use manta_types::{Area, ErrorCode, HasErrorCode, MantaPath, MetadataRecord};
use manta_util::http::{PeerAddr, RouteName, Secure, error_response};

use crate::error::{ApiResult, err, from_moray, from_store};
use crate::state::Frontdoor;

/// The account named `login`, or the error `missing` makes when there is none.
///
/// # Errors
/// `missing`'s error; the account store's failure.
pub(crate) async fn account_named(
    fd: &Frontdoor,
    login: &str,
    missing: impl FnOnce() -> manta_types::MantaError,
) -> ApiResult<Account> {
    fd.accounts
        .by_login(login)
        .await
        .map_err(from_store)?
        .ok_or_else(missing)
}

/// What a handler knows about the request it serves.
#[derive(Debug)]
pub struct Ctx {
    /// The service.
    pub fd: Arc<Frontdoor>,
    /// The method.
    pub method: Method,
    /// The path, validated.
    pub path: MantaPath,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    /// The request headers.
    pub headers: HeaderMap,
    /// Who is calling.
    pub caller: Caller,
    /// The account whose namespace the path is in.
    pub owner: Account,
    /// The client's address (what policies' `sourceip` conditions test).
    pub source_ip: Option<std::net::IpAddr>,
}

impl Ctx {
    /// The metadata key of the path.
    pub fn key(&self) -> String {
        self.path.storage_key(&self.owner.uuid)
    }

    /// Checks the request's conditional headers against `entry`, the entry at the path now.
    ///
    /// # Errors
    /// `PreconditionFailed`, as [`conditional::check`].
    pub fn check_conditions(&self, entry: Option<&Entry>) -> ApiResult<conditional::Outcome> {
        conditional::check(&self.method, &self.headers, entry, &self.path.to_string())
    }

    /// Where the record of the path is written.
    pub fn place(&self) -> crate::data::Place {
        crate::data::Place::of(&self.path, &self.owner.uuid)
    }

    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        manta_util::http::header_str(&self.headers, name)
    }

    /// The login of the caller, for messages.
    pub fn caller_login(&self) -> &str {
        self.caller
            .account()
            .map(|a| a.login.as_str())
            .unwrap_or("anonymous")
    }
}

/// A record with the Moray etag it was read at (for conditional writes).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The record.
    pub rec: MetadataRecord,
    /// Moray's etag of the stored record.
    pub etag: String,
}

/// True for paths that always exist as directories without a record: `/:login/<area>` and
/// `/:login/jobs/<id>/stor`.
pub fn is_virtual_dir(p: &MantaPath) -> bool {
    p.is_area_root()
        || (p.area() == Some(Area::Jobs) && p.segments().len() == 2 && p.segments()[1] == "stor")
}

/// Reads the record of `key`, `None` when there is none.
///
/// # Errors
/// When Moray fails or the record cannot be read.
pub async fn load(fd: &Frontdoor, key: &str) -> ApiResult<Option<Entry>> {
    match fd.moray.get_object("manta", key).await {
        Ok(r) => {
            let rec = MetadataRecord::from_value(r.value).map_err(|e| {
                tracing::error!(key, error = %e, "unreadable metadata record");
                err(ErrorCode::InternalError, "an unexpected error occurred")
            })?;
            Ok(Some(Entry { rec, etag: r.etag }))
        }
        Err(moray::Error::ObjectNotFound { .. }) => Ok(None),
        Err(e) => Err(from_moray(e, key)),
    }
}

/// Parses a raw request path once, for every route: a [`MantaPath`], and for paths under
/// `/:login/buckets` the bucket target below that area root ([`buckets::parse`]: a bucket key
/// is not always a valid [`MantaPath`]). Public for the fuzz targets (`crates/fuzz-targets`).
///
/// # Errors
/// `InvalidResource` (or `ResourceNotFound` for an unknown area) naming the rule the path
/// breaks.
pub fn parse_path(raw: &str) -> ApiResult<(MantaPath, Option<buckets::Target>)> {
    let path_err = |e: manta_types::path::PathError| err(e.code(), e.to_string());
    let decoded = decode_url_path(raw).map_err(path_err)?;
    if let Some((area, target)) = buckets::parse(&decoded)? {
        return Ok((area, Some(target)));
    }
    Ok((MantaPath::parse(&decoded).map_err(path_err)?, None))
}

fn decode_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(manta_auth::presign::parse_query)
        .unwrap_or_default()
}

fn is_loopback(extensions: &http::Extensions) -> bool {
    extensions
        .get::<PeerAddr>()
        .is_some_and(|p| p.0.ip().is_loopback())
}

/// The entry point of every namespace request.
pub async fn handle(State(fd): State<Arc<Frontdoor>>, req: Request) -> Response {
    let Ok(_permit) = fd.throttle.clone().try_acquire_owned() else {
        fd.metrics.inc(
            "frontdoor_throttled_total",
            "Requests refused at the concurrency limit.",
            &[],
        );
        return error_response(&err(
            ErrorCode::ThrottledError,
            "manta throttled this request",
        ));
    };
    let mut route = "other";
    let mut who = None;
    let result = dispatch(&fd, req, &mut route, &mut who).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.code == ErrorCode::InternalError {
                tracing::error!(error = %e.message, route, "request failed");
            }
            error_response(&e)
        }
    };
    resp.extensions_mut().insert(RouteName(route));
    if let Some(w) = who {
        resp.extensions_mut().insert(w);
    }
    resp
}

/// Serves one request; sets `route` to its name and, once the caller is admitted, `who` to
/// the account whose access log it goes in.
async fn dispatch(
    fd: &Arc<Frontdoor>,
    req: Request,
    route: &mut &'static str,
    who: &mut Option<crate::reports::AccessOwner>,
) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let (path, bucket) = parse_path(parts.uri.path())?;
    // An `mlogin` session reads its object: it is authorised as a GET of it.
    let session = mlogin::is_session(&parts) && bucket.is_none();
    let method = if session {
        Method::GET
    } else {
        parts.method.clone()
    };
    let (caller, owner) = admit(fd, &parts, &path, &method).await?;
    *who = Some(crate::reports::AccessOwner {
        owner: owner.uuid.clone(),
        caller: caller.account().map(|a| a.login.clone()),
    });
    if session {
        *route = "Mlogin";
        if caller.user().is_some() {
            return Err(err(
                ErrorCode::AuthorizationFailed,
                "sub-users may not start mlogin sessions",
            ));
        }
        return mlogin::start(fd, parts, &path, &caller, &owner).await;
    }
    // The share of this front door of the account making the request (the owner's for
    // anonymous reads of public data), held while the request is served.
    let charged = caller.account().unwrap_or(&owner);
    let _slot = crate::limits::enter(fd, charged).map_err(|most| {
        err(
            ErrorCode::ThrottledError,
            format!(
                "manta throttled this request: account {} may have {most} requests in progress",
                charged.login
            ),
        )
    })?;
    if path.area() == Some(Area::Jobs)
        && manta_jobs_api::api::is_jobs_route(&parts.method, path.segments())
    {
        *route = "Jobs";
        return jobs(fd, parts, body, &path, &caller, owner).await;
    }
    let ctx = Ctx {
        source_ip: parts.extensions.get::<PeerAddr>().map(|p| p.0.ip()),
        fd: fd.clone(),
        method: parts.method,
        path,
        query: decode_query(parts.uri.query()),
        headers: parts.headers,
        caller,
        owner,
    };
    // A sub-user acts through its roles, decided on the entry the request acts on.
    roles::check(&ctx).await?;
    // S3 buckets (`/:login/buckets/...`): every method, OPTIONS included, is theirs to answer.
    if let Some(target) = bucket {
        return buckets::handle(&ctx, target, route).await;
    }
    if let Some(t) = manta_types::uploads::target(&ctx.path)
        && uploads::takes(&ctx.method, &t)
    {
        return uploads::handle(&ctx, t, body, route).await;
    }
    match ctx.method {
        Method::OPTIONS => {
            *route = "OptionsStorage";
            cors::options(&ctx).await
        }
        Method::GET | Method::HEAD => read(&ctx, route).await,
        Method::PUT => write(&ctx, body, route).await,
        Method::DELETE => {
            *route = "DeleteStorage";
            if ctx.path.is_account_root() || is_virtual_dir(&ctx.path) {
                return Err(err(
                    ErrorCode::OperationNotAllowedOnRootDirectory,
                    format!("DELETE is not allowed on {}", ctx.path),
                ));
            }
            dirs::delete_entry(&ctx).await
        }
        ref m => Err(err(
            ErrorCode::MethodNotAllowed,
            format!("{m} is not allowed on {}", ctx.path),
        )),
    }
}

/// Lets a request in, or says why not: authenticates the caller (before anything about the
/// namespace is revealed), finds the owner of `path`, insists on TLS for private data from
/// another host, and authorises the caller for `method` on the path (the request's own, but
/// for an `mlogin` session, which reads its object). Answers the caller
/// and the owner.
async fn admit(
    fd: &Frontdoor,
    req: &http::request::Parts,
    path: &MantaPath,
    method: &Method,
) -> ApiResult<(Caller, Account)> {
    // The signature covers the request as sent; `method` is what it is authorised as.
    let info = RequestInfo {
        method: req.method.as_str(),
        path: req.uri.path(),
        query: req.uri.query(),
        headers: &req.headers,
    };
    let caller = fd
        .auth
        .authenticate(&info, SystemTime::now())
        .await
        .map_err(|e| match e {
            manta_auth::AuthError::Store(s) => from_store(s),
            e => err(e.code(), e.to_string()),
        })?;
    let owner = match &caller {
        Caller::Account { account, .. } if account.login == path.login() => account.clone(),
        _ => {
            account_named(fd, path.login(), || {
                err(
                    ErrorCode::AccountDoesNotExist,
                    format!("{} does not exist", path.login()),
                )
            })
            .await?
        }
    };
    let secure = req.extensions.get::<Secure>().is_some_and(|s| s.0);
    let read_only = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let public_read = read_only && path.area() == Some(Area::Public);
    let presigned = matches!(
        &caller,
        Caller::Account {
            via: Via::Presigned,
            ..
        }
    );
    if !secure
        && !is_loopback(&req.extensions)
        && !fd.cfg.allow_insecure_http
        && !public_read
        && !presigned
    {
        return Err(err(
            ErrorCode::SecureTransportRequired,
            "Manta requires a secure transport (SSL/TLS)",
        ));
    }
    authorize(&caller, &owner, path, method)?;
    Ok((caller, owner))
}

/// The jobs API: `/:login/jobs` (create, list) and `/:login/jobs/<id>/live/*`, for the owner
/// only.
async fn jobs(
    fd: &Frontdoor,
    parts: http::request::Parts,
    body: Body,
    path: &MantaPath,
    caller: &Caller,
    owner: Account,
) -> ApiResult<Response> {
    // authorize() already refused everyone but the owner's own callers; of those, only the
    // account itself may use its jobs API (not its sub-users).
    if caller.account().map(|a| a.uuid.as_str()) != Some(owner.uuid.as_str())
        || caller.user().is_some()
    {
        return Err(err(
            ErrorCode::AuthorizationRequired,
            "Authorization is required",
        ));
    }
    // Only the account's own signature: a job's token (what a task holds) reaches the job's
    // data, never the jobs API, or tasks could start jobs (each with a fresh token) without
    // bound; a presigned URL is for one object.
    if let Caller::Account { via, .. } = caller
        && *via != Via::Signature
    {
        return Err(err(
            ErrorCode::AuthorizationFailed,
            match via {
                Via::Token => "a job's token reaches its owner's objects, not the jobs API",
                _ => "the jobs API takes a signed request, not a presigned URL",
            },
        ));
    }
    let jreq = manta_jobs_api::api::JobsRequest {
        method: parts.method,
        owner,
        segments: path.segments().to_vec(),
        query: decode_query(parts.uri.query()),
        headers: parts.headers,
        body,
    };
    manta_jobs_api::api::handle(&fd.jobs, jreq).await
}

/// `GET`/`HEAD` of the account root, a virtual directory, a directory or an object.
async fn read(ctx: &Ctx, route: &mut &'static str) -> ApiResult<Response> {
    if ctx.path.is_account_root() {
        *route = "GetRootDirectory";
        return dirs::root_listing(ctx);
    }
    if is_virtual_dir(&ctx.path) {
        *route = "GetDirectory";
        return dirs::get_directory(ctx, None).await;
    }
    match load(&ctx.fd, &ctx.key()).await? {
        None => Err(err(
            ErrorCode::ResourceNotFound,
            format!("{} was not found", ctx.path),
        )),
        Some(e) if e.rec.is_directory() => {
            *route = "GetDirectory";
            dirs::get_directory(ctx, Some(e)).await
        }
        Some(e) => {
            *route = "GetObject";
            objects::get_object(ctx, e).await
        }
    }
}

/// `PUT` of metadata, a directory, a link or an object (by the entry type the headers ask for).
async fn write(ctx: &Ctx, body: Body, route: &mut &'static str) -> ApiResult<Response> {
    if ctx.path.is_account_root() {
        return Err(err(
            ErrorCode::OperationNotAllowedOnRootDirectory,
            format!("PUT is not allowed on {}", ctx.path),
        ));
    }
    let kind = headers::entry_type(&ctx.headers);
    let metadata = ctx.param("metadata") == Some("true");
    // A presigned URL signs the method and the path, not the headers that turn a PUT into a
    // SnapLink (or a metadata update): its holder could otherwise link any of the signer's
    // objects to the signed name and read it there. It uploads bytes, nothing else.
    if matches!(
        ctx.caller,
        Caller::Account {
            via: Via::Presigned,
            ..
        }
    ) && (metadata || kind == headers::EntryType::Link)
    {
        return Err(err(
            ErrorCode::AuthorizationFailed,
            "a presigned URL uploads an object's bytes; it cannot make a SnapLink or change \
             metadata",
        ));
    }
    if metadata {
        *route = "PutMetadata";
        return objects::put_metadata(ctx).await;
    }
    match kind {
        headers::EntryType::Directory => {
            *route = "PutDirectory";
            dirs::put_directory(ctx).await
        }
        headers::EntryType::Link => {
            *route = "PutLink";
            links::put_link(ctx).await
        }
        headers::EntryType::Object => {
            *route = "PutObject";
            objects::put_object(ctx, body).await
        }
    }
}

pub use manta_auth::authorize;

/// A `204 No Content` response.
pub fn no_content() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_once_then_split() {
        let (path, bucket) = parse_path("/jill/stor/a%20b").unwrap();
        assert_eq!((path.to_string(), bucket), ("/jill/stor/a b".into(), None));
        // A bucket key is the rest of the path, percent-decoded: `%2F` is `/`.
        let (path, bucket) = parse_path("/jill/buckets/b/objects/a/b%2Fc%20d").unwrap();
        assert_eq!(path.to_string(), "/jill/buckets");
        assert_eq!(
            bucket,
            Some(buckets::Target::Object("b".into(), "a/b/c d".into()))
        );
        assert_eq!(
            parse_path("/jill/buckets/b/other").unwrap_err().code,
            ErrorCode::InvalidResource
        );
        assert_eq!(
            parse_path("/jill/stor/%FF").unwrap_err().code,
            ErrorCode::InvalidResource
        );
    }
}
