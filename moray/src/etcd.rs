//! Connecting to etcd in a way that survives dead endpoints.
//!
//! `etcd-client` accepts a list of endpoints but does not fail over between them: with one of
//! three members down, requests keep failing with `Unavailable` (platform notes §3). So we hold
//! one client per endpoint and move to the next endpoint on any failure.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, TlsOptions};

use crate::error::Error;

/// Per-request timeout for etcd calls.
pub(crate) const ETCD_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to the first endpoint (starting at `start`) that answers a status call.
/// Returns the client and the index of the endpoint used.
///
/// # Errors
/// When no endpoint answers.
pub async fn connect_any(
    endpoints: &[String],
    start: usize,
    tls: Option<&TlsOptions>,
) -> Result<(Client, usize), Error> {
    if endpoints.is_empty() {
        return Err(Error::Ring {
            message: "no etcd endpoints given".into(),
            retryable: false,
        });
    }
    let mut last = String::new();
    for i in 0..endpoints.len() {
        let idx = (start + i) % endpoints.len();
        let ep = &endpoints[idx];
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(ETCD_TIMEOUT)
            .with_timeout(ETCD_TIMEOUT);
        opts = with_tls_for(opts, ep, tls);
        match tokio::time::timeout(ETCD_TIMEOUT * 2, Client::connect([ep.as_str()], Some(opts)))
            .await
        {
            Ok(Ok(mut c)) => match tokio::time::timeout(ETCD_TIMEOUT, c.status()).await {
                Ok(Ok(_)) => return Ok((c, idx)),
                Ok(Err(e)) => last = format!("{ep}: {e}"),
                Err(_) => last = format!("{ep}: status timed out"),
            },
            Ok(Err(e)) => last = format!("{ep}: {e}"),
            Err(_) => last = format!("{ep}: connect timed out"),
        }
    }
    Err(Error::Ring {
        message: format!("no etcd endpoint reachable (last: {last})"),
        retryable: true,
    })
}

/// How a caller holding region identity `id` reaches etcd members that serve mutual TLS
/// (`https://` endpoints): the region CA as the only root, and `id`'s certificate.
///
/// # Errors
/// When a file of the identity cannot be read.
pub fn tls_options(id: &manta_util::tls::Identity) -> Result<TlsOptions, Error> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Error::internal(format!("read {}: {e}", p.display())))
    };
    Ok(TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(&id.ca)?))
        .identity(etcd_client::Identity::from_pem(
            read(&id.cert)?,
            read(&id.key)?,
        )))
}

/// `opts` with `tls` when `endpoint` is `https://` (an etcd serving mutual TLS); a plain
/// `http://` endpoint (an etcd outside a region, in tests) is reached without it.
pub fn with_tls_for(
    opts: ConnectOptions,
    endpoint: &str,
    tls: Option<&TlsOptions>,
) -> ConnectOptions {
    match tls {
        Some(t) if endpoint.starts_with("https://") => opts.with_tls(t.clone()),
        _ => opts,
    }
}

/// [`tls_options`] of a service's identity when it has one.
///
/// # Errors
/// As [`tls_options`].
pub fn tls_options_of(id: Option<&manta_util::tls::Identity>) -> Result<Option<TlsOptions>, Error> {
    id.map(tls_options).transpose()
}

/// Splits a comma-separated endpoint list, adding `http://` where no scheme is given.
pub fn parse_endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.contains("://") {
                e.to_owned()
            } else {
                format!("http://{e}")
            }
        })
        .collect()
}

/// Reads `key` within [`ETCD_TIMEOUT`]; a failure is a retryable `Ring` error that says it
/// was trying to `what`.
pub(crate) async fn get_key(
    c: &mut Client,
    key: &str,
    what: &str,
) -> Result<etcd_client::GetResponse, Error> {
    tokio::time::timeout(ETCD_TIMEOUT, c.get(key, None))
        .await
        .map_err(|_| etcd_err(what, "timed out"))?
        .map_err(|e| etcd_err(what, e))
}

/// A watcher's (re)connection: connects as [`connect_any`] does from endpoint `*start`,
/// keeping the endpoint it reached in `start` for next time, and reads `key` as [`get_key`]
/// does.
pub(crate) async fn connect_and_get(
    endpoints: &[String],
    tls: Option<&TlsOptions>,
    start: &mut usize,
    key: &str,
    what: &str,
) -> Result<(Client, etcd_client::GetResponse), Error> {
    let (mut c, idx) = connect_any(endpoints, *start, tls).await?;
    *start = idx;
    let resp = get_key(&mut c, key, what).await?;
    Ok((c, resp))
}

pub(crate) fn etcd_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Ring {
        message: format!("{what}: {e}"),
        retryable: true,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(
            super::parse_endpoints("127.0.0.1:2379, http://h:1,"),
            vec!["http://127.0.0.1:2379", "http://h:1"]
        );
    }
}
