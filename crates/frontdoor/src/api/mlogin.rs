//! `mlogin`: an interactive shell in a task's container on one object.
//!
//! The client sends `POST /:login/stor/<object>` with `Upgrade: manta-mlogin`, signed as
//! usual; the query holds the phase settings (`memory`, `disk`, `image`, `asset` (repeated),
//! `init`) and the terminal's `rows` and `cols`. The caller must be an account signing for
//! itself (not a token or a presigned URL) and may be any account that may read the object.
//! The front door picks a live agent on a node holding a copy, asks it for a session over the
//! region's mutual TLS (`POST /sessions`, the same upgrade, with a token acting for the caller
//! for a day), and once the agent has switched protocols, switches the client's connection too
//! and relays bytes both ways until either side closes.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use manta_auth::{Account, Caller, Via};
use manta_jobs_api::records::{AGENTS, AgentBeat};
use manta_jobs_api::session::{PROTOCOL, SPEC_HEADER, SessionSpec};
use manta_jobs_api::spec::{DEFAULT_DISK_GB, DEFAULT_MEMORY_MB};
use manta_types::{ErrorCode, MantaError, MantaPath};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::error::{ApiResult, err};
use crate::state::Frontdoor;

/// An agent whose last beat is older than this is taken for gone.
const AGENT_FRESH: Duration = Duration::from_secs(10);

/// How long an agent may take to start a session's container (fetching an image included).
const START: Duration = Duration::from_secs(180);

/// True when the request asks for an `mlogin` session.
pub fn is_session(parts: &http::request::Parts) -> bool {
    parts.method == http::Method::POST
        && parts
            .headers
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Starts a session for `caller` on the object at `path` (already authorised for `GET`).
///
/// # Errors
/// `AuthorizationFailed` for a caller not signing for itself; `ResourceNotFound` for no such
/// object; `InvalidArgument` for a directory, bad settings or an asset or image the agent
/// cannot use; `ServiceUnavailable` when no node holding a copy has a live agent with room.
pub async fn start(
    fd: &Arc<Frontdoor>,
    mut parts: http::request::Parts,
    path: &MantaPath,
    caller: &Caller,
    owner: &Account,
) -> ApiResult<Response> {
    let Caller::Account {
        account: user,
        via: Via::Signature,
        ..
    } = caller
    else {
        return Err(err(
            ErrorCode::AuthorizationFailed,
            "mlogin takes a request signed by the account itself",
        ));
    };
    // A session carries a shell: never over plain HTTP from another host, even on a public
    // object.
    let secure = parts
        .extensions
        .get::<manta_util::http::Secure>()
        .is_some_and(|s| s.0);
    if !secure && !super::is_loopback(&parts.extensions) && !fd.cfg.allow_insecure_http {
        return Err(err(
            ErrorCode::SecureTransportRequired,
            "Manta requires a secure transport (SSL/TLS)",
        ));
    }
    let Some(entry) = super::load(fd, &path.storage_key(&owner.uuid)).await? else {
        return Err(err(
            ErrorCode::ResourceNotFound,
            format!("{path} was not found"),
        ));
    };
    let Some(object) = entry.rec.object() else {
        return Err(err(
            ErrorCode::InvalidArgument,
            format!("{path} is a directory: mlogin takes an object"),
        ));
    };
    let query = super::decode_query(parts.uri.query());
    let param = |k: &str| {
        query
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let number = |k: &str, default: u64| -> ApiResult<u64> {
        param(k).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| err(ErrorCode::InvalidArgument, format!("{k}={v}: not a number")))
        })
    };
    let id = uuid::Uuid::new_v4().to_string();
    let spec = SessionSpec {
        id: id.clone(),
        login: user.login.clone(),
        owner: user.uuid.clone(),
        token: fd.jobs.session_token(user, &id),
        object: path.to_string(),
        creator: entry.rec.creator.clone(),
        object_id: object.object_id.to_string(),
        memory: number("memory", DEFAULT_MEMORY_MB)?,
        disk: number("disk", DEFAULT_DISK_GB)?,
        image: param("image").filter(|i| !i.is_empty()),
        assets: query
            .iter()
            .filter(|(n, _)| n == "asset")
            .map(|(_, v)| v.clone())
            .collect(),
        init: param("init").filter(|i| !i.trim().is_empty()),
        rows: u16::try_from(number("rows", 24)?).unwrap_or(24),
        cols: u16::try_from(number("cols", 80)?).unwrap_or(80),
    };
    // The same checks the agent makes, so that bad settings are the caller's 400 here.
    SessionSpec::decode(&spec.encode())?;
    let sharks: Vec<String> = object
        .sharks
        .iter()
        .map(|s| s.manta_storage_id.clone())
        .collect();
    if sharks.is_empty() {
        return Err(err(
            ErrorCode::InvalidArgument,
            format!("{path} is empty: there is no copy to log in beside"),
        ));
    }
    let Some(client_side) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(err(
            ErrorCode::InvalidArgument,
            "this connection cannot be upgraded",
        ));
    };
    let (agent, leftover) = open_session(fd, &sharks, &spec).await?;
    tracing::info!(session = %id, login = %user.login, object = %path, "mlogin session started");
    tokio::spawn(async move {
        let mut agent = agent;
        match client_side.await {
            Ok(up) => {
                let mut client = hyper_util::rt::TokioIo::new(up);
                if client.write_all(&leftover).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
                }
                let _ = client.shutdown().await;
            }
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "the client's connection was not upgraded")
            }
        }
        let _ = agent.shutdown().await;
        tracing::info!(session = %id, "mlogin session ended");
    });
    Ok(manta_jobs_api::session::switching_protocols())
}

/// Asks a live agent beside one of `sharks` for the session: the upgraded connection and any
/// bytes that came after the agent's answer.
async fn open_session(
    fd: &Frontdoor,
    sharks: &[String],
    spec: &SessionSpec,
) -> ApiResult<(Box<dyn Io>, Vec<u8>)> {
    let now = manta_types::time::now_ms();
    let mut last = err(
        ErrorCode::ServiceUnavailable,
        format!(
            "no node holding {} has a jobs agent that answers",
            spec.object
        ),
    );
    for shark in sharks {
        let beat = match fd.jobs.store().get::<AgentBeat>(AGENTS, shark).await {
            Ok(Some(b)) => b.value,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(shark, error = %e, "read agent beat");
                continue;
            }
        };
        let fresh = now.saturating_sub(beat.timestamp) < AGENT_FRESH.as_millis() as u64;
        let Some(url) = beat.url.filter(|_| fresh) else {
            continue;
        };
        match ask(fd, &url, spec).await {
            Ok(x) => return Ok(x),
            // The agent's own refusal (bad settings, an image it cannot use) is the answer;
            // a full or unreachable agent lets the next copy's try.
            Err(e) if e.code != ErrorCode::ServiceUnavailable => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One agent's answer to the session request.
async fn ask(fd: &Frontdoor, url: &str, spec: &SessionSpec) -> ApiResult<(Box<dyn Io>, Vec<u8>)> {
    let unavailable = |m: String| err(ErrorCode::ServiceUnavailable, m);
    let (tls, hostport) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(h), _) => (true, h),
        (None, Some(h)) => (false, h),
        _ => return Err(unavailable(format!("agent URL {url} is not http(s)"))),
    };
    let hostport = hostport.trim_end_matches('/');
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(hostport),
    )
    .await
    .map_err(|_| unavailable(format!("agent {url} did not answer")))?
    .map_err(|e| unavailable(format!("agent {url}: {e}")))?;
    let mut io: Box<dyn Io> = if tls {
        let cfg = manta_util::tls::internal_client_of(fd.cfg.internal_tls.as_ref())
            .map_err(|e| err(ErrorCode::InternalError, format!("region identity: {e}")))?
            .ok_or_else(|| {
                unavailable(format!(
                    "agent {url} needs TLS and this front door has no region identity"
                ))
            })?;
        let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| unavailable(format!("agent {url}: {e}")))?;
        let s = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| unavailable(format!("agent {url}: TLS: {e}")))?;
        Box::new(s)
    } else {
        Box::new(tcp)
    };
    let head = format!(
        "POST /sessions HTTP/1.1\r\nhost: {hostport}\r\nconnection: upgrade\r\nupgrade: {PROTOCOL}\r\n\
         content-length: 0\r\nx-request-id: {}\r\n{SPEC_HEADER}: {}\r\n\r\n",
        spec.id,
        spec.encode()
    );
    io.write_all(head.as_bytes())
        .await
        .map_err(|e| unavailable(format!("agent {url}: {e}")))?;
    let (status, headers, rest) = tokio::time::timeout(START, read_head(&mut io))
        .await
        .map_err(|_| unavailable(format!("agent {url} took too long to start the session")))?
        .map_err(|e| unavailable(format!("agent {url}: {e}")))?;
    if status == 101 {
        return Ok((io, rest));
    }
    // An error answer: `{"code","message"}`, as every service gives.
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
        .min(64 * 1024);
    let mut body = rest;
    while body.len() < len {
        let mut buf = vec![0u8; len - body.len()];
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    let parsed: Option<manta_types::ErrorBody> = serde_json::from_slice(&body).ok();
    Err(match parsed {
        Some(b) => MantaError::new(
            ErrorCode::from_wire(&b.code).unwrap_or(ErrorCode::InternalError),
            b.message,
        ),
        None => unavailable(format!("agent {url} answered {status}")),
    })
}

/// Reads an HTTP response head: status, headers (names lower-cased), and the bytes read past
/// it.
async fn read_head(io: &mut Box<dyn Io>) -> std::io::Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("response head too long"));
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before answering"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = buf[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, rest))
}
