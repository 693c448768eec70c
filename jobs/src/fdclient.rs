//! The front door, as the supervisor and agents reach it: acting for a job's owner with the
//! token issued at job creation (`Authorization: Token <t>`), forwarding the request id.

use std::time::Duration;

use bytes::Bytes;
use manta_types::{ErrorBody, ErrorCode};

/// A failed call to the front door.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FdError {
    /// The server answered with an error.
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Wire code.
        code: String,
        /// Message.
        message: String,
    },
    /// No answer.
    #[error("front door unreachable: {0}")]
    Transport(#[from] reqwest::Error),
}

impl FdError {
    /// The error code, when the server gave a known one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            FdError::Api { code, .. } => ErrorCode::from_wire(code),
            FdError::Transport(_) => None,
        }
    }

    /// Worth retrying (a transport failure, or a status the one retry rule names).
    pub fn is_retryable(&self) -> bool {
        match self {
            FdError::Api { status, .. } => manta_types::error::retryable_status(*status),
            FdError::Transport(_) => true,
        }
    }
}

/// A client of the front door acting with one token.
#[derive(Debug, Clone)]
pub struct FdClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

use manta_types::path::encode_url_path as url_path;

impl FdClient {
    /// A client of the front door at `base` using `token`.
    pub fn new(http: reqwest::Client, base: &str, token: &str) -> FdClient {
        FdClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// The shared HTTP client settings for front door calls.
    pub fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("the HTTP client builds")
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request with the token and request id set.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request_query(method, path, None)
    }

    /// Like [`request`](Self::request), with a raw (already encoded) query string.
    pub fn request_query(
        &self,
        method: reqwest::Method,
        path: &str,
        query: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let q = query.map(|q| format!("?{q}")).unwrap_or_default();
        let mut b = self
            .http
            .request(method, format!("{}{}{q}", self.base, url_path(path)))
            .header("authorization", format!("Token {}", self.token));
        if let Some(id) = manta_util::http::current_request_id() {
            b = b.header(manta_util::http::REQUEST_ID, id);
        }
        b
    }

    /// Sends and turns error answers into [`FdError::Api`].
    ///
    /// # Errors
    /// Transport failures and error statuses.
    pub async fn send(&self, b: reqwest::RequestBuilder) -> Result<reqwest::Response, FdError> {
        let resp = b.send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        Err(match parsed {
            Some(b) => FdError::Api {
                status,
                code: b.code,
                message: b.message,
            },
            None => FdError::Api {
                status,
                code: ErrorCode::InternalError.as_str().into(),
                message: String::from_utf8_lossy(&body).into_owned(),
            },
        })
    }

    /// Creates a directory (idempotent).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn mkdir(&self, path: &str) -> Result<(), FdError> {
        self.send(
            self.request(reqwest::Method::PUT, path)
                .header("content-type", "application/json; type=directory"),
        )
        .await?;
        Ok(())
    }

    /// Creates `path` and every missing parent below the jobs or storage area root.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn mkdirp(&self, path: &str) -> Result<(), FdError> {
        let p = manta_types::MantaPath::parse(path).map_err(|e| FdError::Api {
            status: 400,
            code: "InvalidResource".into(),
            message: e.to_string(),
        })?;
        let mut chain = Vec::new();
        let mut cur = Some(p);
        while let Some(c) = cur {
            if c.is_area_root() || c.is_account_root() {
                break;
            }
            cur = c.parent();
            chain.push(c);
        }
        // Try the deepest first: usually its parents exist already.
        if let Some(last) = chain.first() {
            match self.mkdir(&last.to_string()).await {
                Ok(()) => return Ok(()),
                Err(e) if e.code() == Some(ErrorCode::DirectoryDoesNotExist) => {}
                Err(e) => return Err(e),
            }
        }
        for c in chain.iter().rev() {
            // The virtual `/:login/jobs/<id>/stor` needs no record.
            let s = c.segments();
            if c.area() == Some(manta_types::Area::Jobs) && s.len() == 2 && s[1] == "stor" {
                continue;
            }
            self.mkdir(&c.to_string()).await?;
        }
        Ok(())
    }

    /// Stores `data` at `path` with `copies` copies.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn put_bytes(
        &self,
        path: &str,
        data: impl Into<Bytes>,
        content_type: &str,
    ) -> Result<(), FdError> {
        let data: Bytes = data.into();
        self.send(
            self.request(reqwest::Method::PUT, path)
                .header("content-type", content_type)
                .header("content-length", data.len())
                .body(data),
        )
        .await?;
        Ok(())
    }

    /// Starts a GET of `path`.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn get(&self, path: &str) -> Result<reqwest::Response, FdError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }
}

/// A request body passed on to the front door as it arrives: an incoming `axum` body (which is
/// not `Sync`, as `reqwest` needs) pumped through an in-memory pipe of 256 KiB, so at most that
/// much is buffered however large the body.
pub fn streamed_body(body: axum::body::Body) -> reqwest::Body {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let (mut w, r) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let mut s = body.into_data_stream();
        while let Some(Ok(chunk)) = s.next().await {
            if w.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(r))
}
