//! The server loop over plain HTTP and TLS, request ids, and graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use manta_util::http::{Observer, ServeOptions, serve, with_observability};
use manta_util::metrics::Metrics;
use tokio_util::sync::CancellationToken;

fn app() -> axum::Router {
    let obs = Arc::new(Observer {
        service: "test",
        metrics: Arc::new(Metrics::new()),
    });
    let router = axum::Router::new().route(
        "/id",
        axum::routing::get(|| async { manta_util::http::current_request_id().unwrap_or_default() }),
    );
    with_observability(router, obs)
}

fn tls_config(dir: &std::path::Path) -> Arc<rustls::ServerConfig> {
    let (cert, key) = testkit::region::self_signed_cert(dir).unwrap();
    manta_util::tls::server_config(&cert, &key).unwrap()
}

async fn check(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let opts = ServeOptions {
        drain: Duration::from_secs(2),
        tls: tls.then(|| tls_config(dir.path())),
    };
    let server = tokio::spawn(serve(listener, app(), shutdown.clone(), opts));
    let scheme = if tls { "https" } else { "http" };
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = http
        .get(format!("{scheme}://{addr}/ping"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(r.headers().contains_key("x-request-id"));
    // The caller's request id is the handler's.
    let r = http
        .get(format!("{scheme}://{addr}/id"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    assert_eq!(r.text().await.unwrap(), "abc-123");
    let m = http
        .get(format!("{scheme}://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("http_requests_total"), "{m}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn plain_http() {
    check(false).await;
}

#[tokio::test]
async fn tls() {
    check(true).await;
}
