//! The task's control socket: the only door out of the container. The agent serves it on a
//! Unix socket bind-mounted at `/manta-agent/sock`, one per container; it acts for the task the
//! container runs now ([`Switch`]) and for no other. The tools speak HTTP over it.
//!
//! Ordinary requests are forwarded to the front door with the job's token, so a task can do
//! exactly what its owner may and nothing else. Requests marked `x-manta-stream: stdout`
//! (`mpipe`, `msplit`) become task outputs stored on this node; `x-manta-reference: true`
//! (`mcat`) emits an existing object as an output. (Lackey reports how a task ended on its own
//! channel, [`super::warm`], not here.)

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::StreamExt as _;
use http::{HeaderValue, Method, StatusCode};
use manta_types::{Area, ErrorCode, MantaError, MantaPath};
use manta_util::http::error_response;
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

use super::{Agent, TaskJob};

/// An output the task produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Object path.
    pub path: String,
    /// Reducer of the next phase, if routed.
    pub r_idx: Option<u32>,
}

/// What the socket learned during the task.
#[derive(Debug, Default)]
pub struct CtlRecord {
    /// Outputs emitted with `mpipe`/`msplit`/`mcat`.
    pub outputs: Vec<Output>,
    /// False once a tool emitted outputs itself (stdout is then not saved).
    pub tools_used: bool,
    /// Failures storing outputs (the task then fails).
    pub failures: Vec<String>,
    /// Set when the task emitted more than its share of bytes: the task then fails, as the
    /// user's doing.
    pub over_limit: Option<String>,
    auto: u32,
}

pub(super) struct Ctl {
    pub agent: Arc<Agent>,
    pub job: Arc<TaskJob>,
    pub record: Mutex<CtlRecord>,
    /// Most bytes the task may emit as outputs in all (they land on this node's disk).
    pub output_limit: u64,
    /// Bytes emitted so far.
    pub emitted: Arc<std::sync::atomic::AtomicU64>,
}

/// Which task a container's socket acts for: one at a time, and none between tasks.
#[derive(Default)]
pub(super) struct Switch {
    current: Mutex<Option<Arc<Ctl>>>,
    /// Held (shared) by every request while it runs, so that a task is concluded only after
    /// the last of its requests has finished.
    inflight: tokio::sync::RwLock<()>,
}

impl Switch {
    /// The socket acts for `ctl` from now on.
    pub fn start(&self, ctl: Arc<Ctl>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(ctl);
    }

    /// The socket acts for no task from now on; returns once every request made for the
    /// previous one has finished.
    pub async fn stop(&self) {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(self.inflight.write().await);
    }
}

/// Starts serving the socket at `path` until `stop`.
///
/// # Errors
/// When the socket cannot be bound.
pub(super) fn serve(
    ctl: Arc<Switch>,
    path: &Path,
    ctl_owner: u32,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::UnixListener::bind(path)?;
    // The task's own socket: the container's root (mapped to the host uid at the base of the
    // agent's range) may connect, and no other local user may act for the job's owner.
    let owner = ctl_owner;
    std::os::unix::fs::chown(path, Some(owner), Some(owner))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let app = axum::Router::new().fallback(handle).with_state(ctl);
    Ok(tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "task socket failed");
        }
    }))
}

fn err(code: ErrorCode, msg: impl Into<String>) -> Response {
    error_response(&MantaError::new(code, msg))
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn handle(State(switch): State<Arc<Switch>>, req: Request) -> Response {
    let _running = switch.inflight.read().await;
    let current = switch
        .current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(ctl) = current else {
        return err(
            ErrorCode::ServiceUnavailable,
            "no task is running in this container",
        );
    };
    let path = percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8_lossy()
        .into_owned();
    let reducer = match header(&req, "x-manta-reducer").map(str::parse::<u32>) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(_)) => {
            return err(
                ErrorCode::InvalidArgument,
                "x-manta-reducer must be a number",
            );
        }
    };
    if let Some(r) = reducer
        && ctl.job.next_reducers.is_some_and(|n| u64::from(r) >= n)
    {
        return err(
            ErrorCode::InvalidArgument,
            format!(
                "reducer {r} does not exist (the next phase has {})",
                ctl.job.next_reducers.unwrap_or(0)
            ),
        );
    }
    if req.method() == Method::PUT && header(&req, "x-manta-stream") == Some("stdout") {
        return output(&ctl, &path, reducer, req.into_body()).await;
    }
    if req.method() == Method::PUT && header(&req, "x-manta-reference") == Some("true") {
        return reference(&ctl, &path, reducer).await;
    }
    proxy(&ctl, req).await
}

fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// Where a task may put an output: its owner's `stor` or `public`, or its own job's `stor`
/// (where outputs go by default); never `reports`, `uploads`, another job's tree or another
/// account.
fn own_path(ctl: &Ctl, path: &str) -> Result<MantaPath, MantaError> {
    let p = MantaPath::parse(path)
        .map_err(|e| MantaError::new(ErrorCode::InvalidResource, e.to_string()))?;
    let job = &ctl.job.job;
    let allowed = p.login() == job.login
        && match p.area() {
            Some(Area::Stor | Area::Public) => !p.segments().is_empty(),
            Some(Area::Jobs) => {
                p.segments().len() > 2 && p.segments()[0] == job.job_id && p.segments()[1] == "stor"
            }
            _ => false,
        };
    if !allowed {
        return Err(MantaError::new(
            ErrorCode::AuthorizationFailed,
            format!(
                "a task may only emit outputs under /{login}/stor, /{login}/public or its job's \
                 /{login}/jobs/{id}/stor, not {p}",
                login = job.login,
                id = job.job_id
            ),
        ));
    }
    Ok(p)
}

async fn output(ctl: &Arc<Ctl>, path: &str, r_idx: Option<u32>, body: Body) -> Response {
    let target = if path == "/_task/output" {
        let mut rec = ctl.record.lock().unwrap_or_else(|p| p.into_inner());
        rec.auto += 1;
        if rec.auto == 1 {
            ctl.job.base.clone()
        } else {
            format!("{}.{}", ctl.job.base, rec.auto - 1)
        }
    } else {
        path.to_owned()
    };
    let p = match own_path(ctl, &target) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let cond = match ctl.agent.output_condition(&ctl.job, &p).await {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    ctl.record
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .tools_used = true;
    // The storage client wants a `Sync` stream; a duplex pipe turns the request body into one.
    let (mut w, r) = tokio::io::duplex(256 * 1024);
    let feed = tokio::spawn(async move {
        let mut s = body.into_data_stream();
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            w.write_all(&chunk).await?;
        }
        w.shutdown().await
    });
    // Counted as they go to the node: past the task's share the stream fails, so the output
    // is not committed.
    let (emitted, limit) = (ctl.emitted.clone(), ctl.output_limit);
    let stream = tokio_util::io::ReaderStream::new(r).map(move |chunk| {
        let chunk = chunk?;
        let n = chunk.len() as u64;
        let total = emitted.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n;
        if total > limit {
            return Err(std::io::Error::other(format!(
                "the task's outputs exceed {limit} bytes"
            )));
        }
        Ok(chunk)
    });
    let stored = ctl
        .agent
        .store_output(&ctl.job, &p.to_string(), stream, None, async { Ok(cond) })
        .await;
    let fed = feed.await;
    match (stored, fed) {
        (Ok(()), Ok(Ok(()))) => {
            ctl.record
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .outputs
                .push(Output {
                    path: p.to_string(),
                    r_idx,
                });
            empty(StatusCode::NO_CONTENT)
        }
        (Err(_), _) if ctl.emitted.load(std::sync::atomic::Ordering::SeqCst) > limit => {
            let msg = format!(
                "the task's outputs exceeded its limit of {} MB (its phase's disk) at {p}",
                limit >> 20
            );
            ctl.record
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .over_limit = Some(msg.clone());
            err(ErrorCode::MaxContentLengthExceeded, msg)
        }
        // Refused by the front door (the output went there because this node is full): the
        // task's doing, not this node's.
        (Err(ref e), _)
            if let Some(
                fe @ crate::fdclient::FdError::Api {
                    status, message, ..
                },
            ) = e.downcast_ref::<crate::fdclient::FdError>()
                && *status < 500 =>
        {
            let code = fe.code().unwrap_or(ErrorCode::InvalidArgument);
            err(code, format!("storing output {p}: {message}"))
        }
        (Err(e), _) => {
            let msg = format!("storing output {p}: {e:#}");
            tracing::warn!(error = %msg, "task output failed");
            ctl.record
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .failures
                .push(msg.clone());
            err(ErrorCode::InternalError, msg)
        }
        (_, Ok(Err(e))) => err(ErrorCode::InvalidArgument, format!("reading the body: {e}")),
        (_, Err(e)) => err(ErrorCode::InternalError, e.to_string()),
    }
}

async fn reference(ctl: &Arc<Ctl>, path: &str, r_idx: Option<u32>) -> Response {
    let p = match MantaPath::parse(path) {
        Ok(p) => p,
        Err(e) => return err(ErrorCode::InvalidResource, e.to_string()),
    };
    // The front door decides whether the owner may read it.
    match ctl
        .job
        .fd
        .send(ctl.job.fd.request(reqwest::Method::HEAD, &p.to_string()))
        .await
    {
        Ok(_) => {
            let mut rec = ctl.record.lock().unwrap_or_else(|p| p.into_inner());
            rec.tools_used = true;
            rec.outputs.push(Output {
                path: p.to_string(),
                r_idx,
            });
            empty(StatusCode::NO_CONTENT)
        }
        Err(crate::fdclient::FdError::Api {
            status,
            code,
            message,
        }) => {
            let code = ErrorCode::from_wire(&code).unwrap_or(ErrorCode::InternalError);
            let mut r = err(code, message);
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            r
        }
        Err(e) => err(ErrorCode::ServiceUnavailable, e.to_string()),
    }
}

/// The request headers a task's requests keep on their way to the front door (`location`: a
/// task may make SnapLinks of what its owner may read).
const FORWARD: &[&str] = &[
    "location",
    "content-type",
    "content-length",
    "content-md5",
    "durability-level",
    "accept",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "cache-control",
];

async fn proxy(ctl: &Arc<Ctl>, req: Request) -> Response {
    let method = match reqwest::Method::from_bytes(req.method().as_str().as_bytes()) {
        Ok(m) => m,
        Err(_) => return err(ErrorCode::MethodNotAllowed, "bad method"),
    };
    let path = percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8_lossy()
        .into_owned();
    let mut b = ctl.job.fd.request_query(method, &path, req.uri().query());
    for (k, v) in req.headers() {
        let name = k.as_str();
        if FORWARD.contains(&name) || name.starts_with("m-") {
            b = b.header(name, v.as_bytes());
        }
    }
    let has_body = req.headers().contains_key("content-length")
        || req.headers().contains_key("transfer-encoding");
    if has_body {
        b = b.body(crate::fdclient::streamed_body(req.into_body()));
    }
    match b.send().await {
        Ok(resp) => {
            let mut out = Response::new(Body::empty());
            *out.status_mut() =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            for (k, v) in resp.headers() {
                let n = k.as_str();
                if matches!(n, "connection" | "transfer-encoding" | "keep-alive") {
                    continue;
                }
                if let (Ok(name), Ok(val)) = (
                    http::HeaderName::from_bytes(n.as_bytes()),
                    HeaderValue::from_bytes(v.as_bytes()),
                ) {
                    out.headers_mut().append(name, val);
                }
            }
            *out.body_mut() = Body::from_stream(resp.bytes_stream());
            out
        }
        Err(e) => err(
            ErrorCode::ServiceUnavailable,
            format!("the front door did not answer: {e}"),
        ),
    }
}
