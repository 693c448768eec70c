//! HTTP plumbing every service uses: the request-id and metrics middleware, `/ping` and
//! `/metrics`, error responses, and a server loop with optional TLS and graceful shutdown.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use manta_types::{ErrorBody, ErrorCode, MantaError};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::metrics::Metrics;

/// The request id header, accepted from callers and forwarded on every internal hop.
pub const REQUEST_ID: &str = "x-request-id";

/// Largest socket read of a connection's request bytes (hyper's default is about 400 KiB).
/// Large enough that a body costs few reads, small enough that hundreds of uploads at once
/// hold little memory.
pub const READ_BUF: usize = 128 * 1024;

tokio::task_local! {
    static CURRENT_REQUEST_ID: String;
}

/// The request id of the request being handled by the current task, if any. Internal clients
/// send it on as `x-request-id`, so one id follows a request across services.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `fut` with `id` as the current request id (for background work done on behalf of a
/// request, and for tests).
pub async fn with_request_id<F: std::future::Future>(id: String, fut: F) -> F::Output {
    CURRENT_REQUEST_ID.scope(id, fut).await
}

/// A route name a handler attaches to its response (as an extension) so metrics and logs use
/// a stable, low-cardinality label even for catch-all routes.
#[derive(Debug, Clone, Copy)]
pub struct RouteName(pub &'static str);

/// What the observe middleware needs: the service name and its metrics.
#[derive(Debug)]
pub struct Observer {
    /// Service name, shown in logs and the `server` header.
    pub service: &'static str,
    /// The service's registry.
    pub metrics: Arc<Metrics>,
}

fn valid_request_id(h: &HeaderValue) -> Option<String> {
    let s = h.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| s.to_owned())
}

/// Middleware: gives every request an id (the caller's `x-request-id` when well-formed), a
/// tracing span, an access log line, `x-request-id` and `x-response-time` response headers, and
/// request count and latency metrics labelled by route and status.
pub async fn observe(State(obs): State<Arc<Observer>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(valid_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        service = obs.service,
        request_id = %id,
        method = %method,
        path = %req.uri().path(),
    );
    let mut resp = CURRENT_REQUEST_ID
        .scope(id.clone(), next.run(req))
        .instrument(span.clone())
        .await;
    let elapsed = start.elapsed();
    let status = resp.status();
    let route = resp
        .extensions()
        .get::<RouteName>()
        .map(|r| r.0.to_owned())
        .or(matched)
        .unwrap_or_else(|| "other".to_owned());
    let status_str = status.as_str().to_owned();
    obs.metrics.inc(
        "http_requests_total",
        "HTTP requests by route, method and status.",
        &[
            ("route", &route),
            ("method", method.as_str()),
            ("status", &status_str),
        ],
    );
    obs.metrics.observe(
        "http_request_duration_seconds",
        "Time to response headers, by route.",
        &[("route", &route)],
        elapsed.as_secs_f64(),
    );
    let ms = elapsed.as_millis() as u64;
    span.in_scope(|| {
        if status.is_server_error() {
            warn!(status = status.as_u16(), route, ms, "request failed");
        } else {
            info!(status = status.as_u16(), route, ms, "handled");
        }
    });
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(REQUEST_ID, v);
    }
    h.insert("x-response-time", HeaderValue::from(ms));
    h.entry(header::SERVER)
        .or_insert(HeaderValue::from_static("Manta"));
    resp
}

/// Adds `/ping`, `/metrics` and the observe middleware to a service's router.
pub fn with_observability(router: Router, obs: Arc<Observer>) -> Router {
    let metrics = obs.metrics.clone();
    router
        .route(
            "/ping",
            get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(obs, observe))
}

/// Middleware that lets through only requests whose client certificate names one of the
/// roles in its state ([`crate::tls::check_role`]), answering `AuthorizationFailed` (403) to
/// any other caller of the region.
pub async fn require_role(
    State(allowed): State<&'static [crate::tls::Role]>,
    req: Request,
    next: Next,
) -> Response {
    match crate::tls::check_role(req.extensions(), allowed) {
        Ok(_) => next.run(req).await,
        Err(why) => {
            warn!(path = %req.uri().path(), "refused: {why}");
            error_response_parts(ErrorCode::AuthorizationFailed, &why)
        }
    }
}

/// `route` for the roles in `allowed` only when `checked` (the service serves mutual TLS);
/// as it is otherwise (a service tested alone, where no caller has a role).
pub fn only_for<S: Clone + Send + Sync + 'static>(
    route: axum::routing::MethodRouter<S>,
    allowed: &'static [crate::tls::Role],
    checked: bool,
) -> axum::routing::MethodRouter<S> {
    if checked {
        route.layer(axum::middleware::from_fn_with_state(allowed, require_role))
    } else {
        route
    }
}

/// Renders a [`MantaError`] as its status and `{"code","message"}` JSON body.
pub fn error_response(err: &MantaError) -> Response {
    error_response_parts(err.code, &err.message)
}

/// Renders a code and message as an error response.
pub fn error_response_parts(code: ErrorCode, message: &str) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody::new(code, message).to_json();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A wrapper so handlers can `?` a [`MantaError`] into a response.
#[derive(Debug)]
pub struct ApiError(pub MantaError);

impl From<MantaError> for ApiError {
    fn from(e: MantaError) -> ApiError {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

/// Reads a header as a trimmed string, if present and valid UTF-8.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// How a server loop should end.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long in-flight requests may take to finish once shutdown begins.
    pub drain: Duration,
    /// TLS configuration; plain HTTP when absent.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            drain: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// The peer address of a connection, inserted into every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Whether a request arrived over TLS, inserted into every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Secure(pub bool);

/// The service of one connection: `app`, with what is known of the connection (the peer's
/// address, whether it is TLS, the role the client's certificate names) in every request's
/// extensions.
fn connection_service(
    app: Router,
    peer: SocketAddr,
    secure: bool,
    peer_role: Option<crate::tls::PeerRole>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        req.extensions_mut().insert(Secure(secure));
        if let Some(r) = peer_role {
            req.extensions_mut().insert(r);
        }
        let app = app.clone();
        async move {
            use tower::ServiceExt as _;
            Ok::<_, Infallible>(
                app.oneshot(req.map(Body::new))
                    .await
                    .unwrap_or_else(|e| match e {}),
            )
        }
    })
}

/// Serves one connection until it ends, or once `closing` is cancelled, until its request in
/// flight is answered.
macro_rules! drive {
    ($conn:expr, $closing:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            () = $closing.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    }};
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting, lets
/// in-flight requests finish for up to `opts.drain`, and aborts what is left.
///
/// # Errors
/// Only when the listener itself fails in a way that cannot be retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    opts: ServeOptions,
) -> io::Result<()> {
    // Cancelled at shutdown: every connection then finishes its request in flight and closes
    // (an upgraded one, such as an `mlogin` session, is its handler's to end).
    let closing = CancellationToken::new();
    let tls = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let closing = closing.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    // Request bodies arrive in socket reads of at most READ_BUF bytes: with the
                    // services' short queues this is what bounds memory per upload in flight.
                    builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(60)).max_buf_size(READ_BUF);
                    let result = match tls {
                        Some(acceptor) => match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(s)) => {
                                // On a mutually authenticated connection, the role the client's
                                // certificate (its chain already checked) names goes with every
                                // request, for the handlers that check the caller's role.
                                let peer_role = s.get_ref().1.peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(|c| crate::tls::PeerRole(crate::tls::role_of(c)));
                                let svc = connection_service(app, peer, true, peer_role);
                                drive!(builder.serve_connection(TokioIo::new(s), svc).with_upgrades(), closing)
                            }
                            Ok(Err(e)) => { tracing::debug!(%peer, error = %e, "TLS handshake failed"); return; }
                            Err(_) => { tracing::debug!(%peer, "TLS handshake timed out"); return; }
                        },
                        None => {
                            let svc = connection_service(app, peer, false, None);
                            drive!(builder.serve_connection(TokioIo::new(stream), svc).with_upgrades(), closing)
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    closing.cancel();
    tokio::select! {
        () = async { while conns.join_next().await.is_some() {} } => {}
        () = tokio::time::sleep(opts.drain) => {
            warn!(drain = ?opts.drain, "requests still in flight after the drain deadline; aborting them");
        }
    }
    conns.shutdown().await;
    Ok(())
}

/// A service whose HTTP port serves only `/ping` and `/metrics` (a worker such as the jobs
/// supervisor or agent): binds `listen`, serves until `shutdown` (over mutual TLS to region
/// certificates only when the worker has an identity), and hands back the metrics registry
/// the worker records into and the server's task (await it after `shutdown`).
///
/// # Errors
/// When `listen` cannot be bound or the identity cannot be loaded.
pub async fn spawn_status_server(
    service: &'static str,
    listen: SocketAddr,
    identity: Option<&crate::tls::Identity>,
    shutdown: CancellationToken,
) -> io::Result<(Arc<Metrics>, tokio::task::JoinHandle<io::Result<()>>)> {
    spawn_status_server_with(service, listen, identity, shutdown, Router::new()).await
}

/// [`spawn_status_server`] that also serves `routes` (a worker's own internal endpoints,
/// each checking its caller's role with [`only_for`]).
///
/// # Errors
/// As [`spawn_status_server`].
pub async fn spawn_status_server_with(
    service: &'static str,
    listen: SocketAddr,
    identity: Option<&crate::tls::Identity>,
    shutdown: CancellationToken,
    routes: Router,
) -> io::Result<(Arc<Metrics>, tokio::task::JoinHandle<io::Result<()>>)> {
    let metrics = Arc::new(Metrics::new());
    let tls = identity
        .map(crate::tls::internal_server_config)
        .transpose()?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("bind {listen}: {e}")))?;
    let obs = Arc::new(Observer {
        service,
        metrics: metrics.clone(),
    });
    let app = with_observability(routes, obs);
    let opts = ServeOptions {
        tls,
        ..ServeOptions::default()
    };
    let task = tokio::spawn(serve(listener, app, shutdown, opts));
    Ok((metrics, task))
}
