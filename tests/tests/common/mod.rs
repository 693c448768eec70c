//! Helpers shared by the end-to-end tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use manta_auth::KeySigner;
use manta_client::MantaClient;
use testkit::{TestAccount, TestRegion};

/// A client acting as `acct` against `region`.
pub async fn client(region: &TestRegion, acct: &TestAccount) -> MantaClient {
    let signer = KeySigner::from_file(&acct.key).unwrap();
    MantaClient::with_signer(region.client_config(acct), Some(Arc::new(signer))).unwrap()
}

/// A client sending no credentials.
pub fn anonymous(region: &TestRegion, login: &str) -> MantaClient {
    let mut cfg = region.client_config(&region.account);
    cfg.user = login.to_owned();
    cfg.no_auth = true;
    MantaClient::with_signer(cfg, None).unwrap()
}

/// Stores `body` at `path` through `c` with the default options (durability, type, ...).
pub async fn put_object(
    c: &MantaClient,
    path: &str,
    body: impl Into<bytes::Bytes>,
) -> Result<manta_client::PutResult, manta_client::Error> {
    c.put_bytes(path, body, manta_client::PutOptions::default())
        .await
}

/// The server's error code of a failed call.
pub fn code<T: std::fmt::Debug>(r: Result<T, manta_client::Error>) -> String {
    match r {
        Err(manta_client::Error::Api { code, .. }) => code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Signed headers (`date`, `authorization`) for a hand-made request as `acct`.
pub async fn signed_headers(acct: &TestAccount) -> Vec<(String, String)> {
    let signer = KeySigner::from_file(&acct.key).unwrap();
    let date = manta_auth::http_date_now();
    let sig = signer
        .sign(format!("date: {date}").as_bytes())
        .await
        .unwrap();
    let authz = manta_auth::httpsig::format_authorization(&manta_auth::httpsig::SignatureParams {
        key_id: format!("/{}/keys/{}", acct.login, acct.key_id),
        algorithm: signer.algorithm().to_string(),
        headers: vec!["date".into()],
        signature: sig,
    });
    vec![("date".into(), date), ("authorization".into(), authz)]
}

/// Sends a raw HTTP/1.1 request over a socket (for requests HTTP client libraries will not
/// make, like a PUT with neither a length nor chunked encoding) and returns status and body.
pub async fn raw(url: &str, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Every file under a storage node's dataset named like an object id.
pub fn object_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 36 && n.matches('-').count() == 4)
            {
                out.push(p);
            }
        }
    }
    out
}

/// Files of live objects (not tombstoned or quarantined) under a node's dataset.
pub fn live_files(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    object_files(data)
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "objects"))
        .collect()
}
