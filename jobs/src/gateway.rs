//! A standalone jobs API server in front of a front door: it authenticates and serves the
//! jobs routes itself (through [`crate::api::handle`], exactly as the front door will) and
//! passes every other request through to the front door untouched.
//!
//! It lets the jobs API run before a front door routes jobs itself, and lets the tests drive
//! the real npm `mjob` against the whole system. Accounts are read from Moray's
//! `manta_accounts` bucket (the front door's), so the same SSH keys work.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode};
use manta_auth::{Account, AccountStore, Authenticator, Caller, RequestInfo, StoreError};
use manta_types::{ErrorCode, HasErrorCode, MantaError, MantaPath};
use manta_util::http::error_response;
use moray::MorayClient;

use crate::api::{self, JobsApi, JobsRequest};

/// Accounts read from the front door's `manta_accounts` bucket (read-only).
#[derive(Debug, Clone)]
pub struct MorayAccountStore {
    moray: MorayClient,
}

impl MorayAccountStore {
    /// Over the system shard.
    pub fn new(moray: MorayClient) -> MorayAccountStore {
        MorayAccountStore { moray }
    }
}

fn parse(v: serde_json::Value) -> Result<Account, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError(format!("malformed account record: {e}")))
}

#[async_trait]
impl AccountStore for MorayAccountStore {
    async fn by_login(&self, login: &str) -> Result<Option<Account>, StoreError> {
        let filter = format!("(login={})", moray::filter::escape(login));
        let r = self
            .moray
            .find_objects("manta_accounts", &filter, Default::default())
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        r.into_iter().next().map(|r| parse(r.value)).transpose()
    }

    async fn by_uuid(&self, uuid: &str) -> Result<Option<Account>, StoreError> {
        match self.moray.get_object("manta_accounts", uuid).await {
            Ok(r) => parse(r.value).map(Some),
            Err(moray::Error::ObjectNotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError(e.to_string())),
        }
    }

    async fn by_s3_key(&self, _access_key_id: &str) -> Result<Option<Account>, StoreError> {
        Ok(None)
    }
}

/// The gateway's state.
#[derive(Debug)]
pub struct Gateway {
    /// The jobs API.
    pub api: JobsApi,
    /// Credential checks.
    pub auth: Authenticator,
    /// Where everything else goes.
    pub frontdoor_url: String,
    http: reqwest::Client,
}

impl Gateway {
    /// A gateway serving `api`, authenticating with `auth`, passing the rest to the front door.
    pub fn new(api: JobsApi, auth: Authenticator, frontdoor_url: &str) -> Arc<Gateway> {
        Arc::new(Gateway {
            api,
            auth,
            frontdoor_url: frontdoor_url.trim_end_matches('/').to_owned(),
            http: crate::fdclient::FdClient::http(),
        })
    }

    /// The HTTP application (with `/ping` and `/metrics`).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let obs = Arc::new(manta_util::http::Observer {
            service: "jobs-api",
            metrics: Arc::new(manta_util::metrics::Metrics::new()),
        });
        manta_util::http::with_observability(
            axum::Router::new()
                .fallback(handle)
                .with_state(self.clone()),
            obs,
        )
    }
}

fn jobs_segments(raw_path: &str) -> Option<Vec<String>> {
    let p = MantaPath::from_url_path(raw_path).ok()?;
    if p.area() != Some(manta_types::Area::Jobs) {
        return None;
    }
    Some(p.segments().to_vec())
}

async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let raw_path = req.uri().path().to_owned();
    match jobs_segments(&raw_path) {
        Some(segs) if api::is_jobs_route(req.method(), &segs) => {
            match serve_jobs(&gw, req, segs).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            }
        }
        _ => proxy(&gw, req).await,
    }
}

async fn serve_jobs(
    gw: &Gateway,
    req: Request,
    segments: Vec<String>,
) -> Result<Response, MantaError> {
    let raw_path = req.uri().path().to_owned();
    let raw_query = req.uri().query().map(str::to_owned);
    let path = MantaPath::from_url_path(&raw_path)
        .map_err(|e| MantaError::new(e.code(), e.to_string()))?;
    let info = RequestInfo {
        method: req.method().as_str(),
        path: &raw_path,
        query: raw_query.as_deref(),
        headers: req.headers(),
    };
    let caller = gw
        .auth
        .authenticate(&info, SystemTime::now())
        .await
        .map_err(|e| MantaError::new(e.code(), e.to_string()))?;
    let owner = match caller {
        Caller::Account { account, .. } if account.login == path.login() => account,
        Caller::Account { account, .. } => {
            return Err(MantaError::new(
                ErrorCode::AuthorizationFailed,
                format!("{} is not allowed to access {path}", account.login),
            ));
        }
        _ => {
            return Err(MantaError::new(
                ErrorCode::AuthorizationRequired,
                "Authorization is required",
            ));
        }
    };
    let query = raw_query
        .as_deref()
        .map(manta_auth::presign::parse_query)
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    api::handle(
        &gw.api,
        JobsRequest {
            method: parts.method,
            owner,
            segments,
            query,
            headers: parts.headers,
            body,
        },
    )
    .await
}

async fn proxy(gw: &Gateway, req: Request) -> Response {
    let Ok(method) = reqwest::Method::from_bytes(req.method().as_str().as_bytes()) else {
        return error_response(&MantaError::new(ErrorCode::MethodNotAllowed, "bad method"));
    };
    let url = format!(
        "{}{}",
        gw.frontdoor_url,
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut b = gw.http.request(method, url);
    for (k, v) in req.headers() {
        if matches!(k.as_str(), "host" | "connection" | "transfer-encoding") {
            continue;
        }
        b = b.header(k.as_str(), v.as_bytes());
    }
    let has_body = req.headers().contains_key("content-length")
        || req.headers().contains_key("transfer-encoding");
    if !has_body {
        return forward(b).await;
    }
    b = b.body(crate::fdclient::streamed_body(req.into_body()));
    forward(b).await
}

async fn forward(b: reqwest::RequestBuilder) -> Response {
    match b.send().await {
        Ok(resp) => {
            let mut out = Response::new(Body::empty());
            *out.status_mut() =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            for (k, v) in resp.headers() {
                if matches!(
                    k.as_str(),
                    "connection" | "transfer-encoding" | "keep-alive"
                ) {
                    continue;
                }
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_str().as_bytes()),
                    HeaderValue::from_bytes(v.as_bytes()),
                ) {
                    out.headers_mut().append(n, v);
                }
            }
            *out.body_mut() = Body::from_stream(resp.bytes_stream());
            out
        }
        Err(e) => error_response(&MantaError::new(
            ErrorCode::ServiceUnavailable,
            format!("the front door did not answer: {e}"),
        )),
    }
}
