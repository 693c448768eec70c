//! What every service in the object store shares: logging set-up, request ids that follow a
//! request across services, Prometheus metrics, `/ping` and `/metrics`, a graceful HTTP server
//! loop (with optional TLS), signal handling, and the helper that keeps blocking work off the
//! async runtime.
//!
//! # Layout
//! - [`logging`]: `init(LogFormat)`, called once by each binary.
//! - [`http`]: the `observe` middleware (request id, span, access log, metrics),
//!   `with_observability` (adds `/ping` and `/metrics`), error responses, and `serve`.
//! - [`metrics`]: a small labelled registry rendered in the Prometheus text format.
//! - [`cache`]: a small read cache whose entries expire (accounts, buckets).
//! - [`proc`]: child processes as an unprivileged user, bound to the parent's life.
//! - [`cli`]: what every command-line tool shares (a closed stdout ends it quietly).
//! - [`secret`]: passwords kept in private files (the region's Postgres roles).
//! - [`tls`]: TLS for every service: the front door's certificate, and inside the region
//!   mutual TLS with each service's identity and role.
//!
//! # Guarantees
//! - Every response carries `x-request-id`; the id is available to the handler's task through
//!   [`http::current_request_id`], and internal clients forward it.
//! - [`http::serve`] stops accepting on shutdown, drains in-flight requests for a bounded time,
//!   then aborts the rest.
//!
//! # Example
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use manta_util::{http, metrics::Metrics};
//! let obs = Arc::new(http::Observer { service: "demo", metrics: Arc::new(Metrics::new()) });
//! let app = http::with_observability(axum::Router::new(), obs);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! http::serve(listener, app, manta_util::shutdown_on_signals(), Default::default()).await
//! # }
//! ```

pub mod cache;
pub mod cli;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod proc;
pub mod secret;
pub mod tls;

use tokio_util::sync::CancellationToken;

/// Runs blocking work (file I/O, fsync, hashing) on the blocking pool, never on a runtime worker.
///
/// # Errors
/// The closure's error, or an error if the blocking task panicked.
pub async fn blocking<T, F>(f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// A token cancelled on the first SIGTERM or SIGINT: the root of a service's shutdown.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; shutdown only by cancellation");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            () = t.cancelled() => return,
        }
        t.cancel();
    });
    token
}

/// Writes a file only its owner may read (mode 0600, from its creation on), replacing any
/// earlier one atomically: for secrets such as keys, tokens and `env.sh`.
///
/// # Errors
/// When the file cannot be written or renamed into place.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// A loopback TCP port that is free now, for a service that will bind it later (a region's
/// layout, a test's server).
///
/// It is drawn at random from below the kernel's ephemeral range (`ip_local_port_range`), so
/// the source port of some outgoing connection cannot take it before the service binds it.
/// The port stays reserved for as long as this process lives: it is never handed out twice
/// here, and another process calling this function skips it too (the reservation is an
/// abstract Unix socket named after the port, which the kernel drops when this process ends),
/// so two regions brought up at once on one machine do not choose the same port.
///
/// # Errors
/// When no free port is found after many tries.
pub fn unused_port() -> std::io::Result<u16> {
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = if ephemeral_low > 12_000 {
        (10_000u16, ephemeral_low)
    } else {
        // An unusual range: fall back to ports the kernel hands out itself.
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        return Ok(l.local_addr()?.port());
    };
    // Callers pick several ports before binding any (a region's services), so a port handed
    // out already, by this process or another, is not free, whatever bind says.
    static GIVEN: std::sync::Mutex<Vec<(u16, Option<std::os::unix::net::UnixDatagram>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let r = uuid::Uuid::new_v4().as_u128();
        let port = low + (r % u128::from(high - low)) as u16;
        if given.iter().any(|(p, _)| *p == port) {
            continue;
        }
        let Some(reservation) = reserve_port(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push((port, reservation));
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback port below the ephemeral range",
    ))
}

/// Claims `port` across processes: binds the abstract Unix socket `manta-port-<port>`, which
/// only one socket on the machine can hold and which disappears with its process. `None` when
/// another process holds it; `Some(None)` when abstract sockets are not available (the claim
/// is then this process's alone).
#[allow(clippy::option_option)]
fn reserve_port(port: u16) -> Option<Option<std::os::unix::net::UnixDatagram>> {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("manta-port-{port}");
    let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) else {
        return Some(None);
    };
    match std::os::unix::net::UnixDatagram::bind_addr(&addr) {
        Ok(sock) => Some(Some(sock)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => None,
        Err(_) => Some(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_handed_out_is_claimed_for_every_process_until_this_one_ends() {
        let port = unused_port().unwrap();
        // The claim is machine-wide (per network namespace): the same bind another process
        // would try fails while this process lives.
        assert!(reserve_port(port).is_none(), "port {port} was not claimed");
        let others: Vec<u16> = (0..50).map(|_| unused_port().unwrap()).collect();
        assert!(!others.contains(&port));
        let mut sorted = others.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), others.len(), "a port was handed out twice");
    }
}
