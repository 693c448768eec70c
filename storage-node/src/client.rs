//! A small typed client of the storage node's object API, for the front door (which streams one
//! upload to several nodes at once and reads from whichever copy answers), the jobs agent, the
//! tests and the benchmarks.
//!
//! Every request forwards the current request id (`x-request-id`), so one id follows a user's
//! request onto the storage nodes' logs.
//!
//! ```no_run
//! # async fn f() -> Result<(), storage_node::client::ClientError> {
//! use storage_node::client::{StorageClient, PutRequest};
//! use storage_node::store::ObjectKey;
//! let node = StorageClient::new("http://127.0.0.1:8081")?;
//! let key = ObjectKey { owner: uuid::Uuid::new_v4(), id: manta_types::ObjectId::random() };
//! let put = node.put(&key, PutRequest::bytes("hello")).await?;
//! let got = node.get(&key, None).await?.bytes().await?;
//! assert_eq!(&got[..], b"hello");
//! assert_eq!(put.size, 5);
//! # Ok(()) }
//! ```

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt as _};
use manta_types::{ErrorBody, ErrorCode};

use crate::digest::{Digests, parse_hex32, parse_md5_base64};
use crate::error::{MD5_MISMATCH_STATUS, QUARANTINED_HEADER};
use crate::range::ByteRange;
use crate::server::{COMPUTED_MD5_HEADER, COMPUTED_SHA256_HEADER};
use crate::store::ObjectKey;

/// What went wrong talking to a storage node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node has no such object.
    #[error("object not found on the storage node")]
    NotFound,
    /// The node's copy is corrupt and was set aside: read another copy.
    #[error("the storage node's copy is quarantined")]
    Quarantined,
    /// The body did not match the `Content-MD5` sent (status 469).
    #[error("the storage node computed another MD5 than Content-MD5: {0}")]
    Md5Mismatch(String),
    /// The range is outside the object.
    #[error("range not satisfiable (object is {size:?} bytes)")]
    RangeNotSatisfiable {
        /// The object's size, from `Content-Range: bytes */size`.
        size: Option<u64>,
    },
    /// Any other error answer.
    #[error("storage node answered {status} {code}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The error code from the body (`code`), or `Unknown`.
        code: String,
        /// The message from the body.
        message: String,
    },
    /// The node could not be reached, or the connection broke.
    #[error("storage node unreachable: {0}")]
    Transport(#[source] reqwest::Error),
    /// The node answered something this client does not understand.
    #[error("unexpected answer from the storage node: {0}")]
    InvalidResponse(String),
}

impl ClientError {
    /// Whether trying again (on this node, later) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Status { status, code, .. } => {
                ErrorCode::from_wire(code).is_some_and(ErrorCode::is_retryable)
                    || (*status >= 500 && *status != 501 && *status != 507)
            }
            _ => false,
        }
    }

    /// The wire error code, when the node sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::NotFound | ClientError::Quarantined => Some(ErrorCode::ResourceNotFound),
            ClientError::Md5Mismatch(_) => Some(ErrorCode::ContentMD5Mismatch),
            ClientError::RangeNotSatisfiable { .. } => {
                Some(ErrorCode::RequestedRangeNotSatisfiable)
            }
            ClientError::Status { code, .. } => ErrorCode::from_wire(code),
            ClientError::Transport(_) | ClientError::InvalidResponse(_) => None,
        }
    }
}

/// An upload: the body and what is known about it up front.
#[derive(Debug)]
pub struct PutRequest {
    body: reqwest::Body,
    content_length: Option<u64>,
    content_md5: Option<[u8; 16]>,
}

impl PutRequest {
    /// A body held in memory (small objects, tests).
    pub fn bytes(data: impl Into<Bytes>) -> PutRequest {
        let data: Bytes = data.into();
        PutRequest {
            content_length: Some(data.len() as u64),
            body: reqwest::Body::from(data),
            content_md5: None,
        }
    }

    /// A streamed body. With `content_length` it is sent with `Content-Length` (and the node
    /// refuses a body of another length); without, chunked.
    pub fn stream<S, E>(stream: S, content_length: Option<u64>) -> PutRequest
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Sync + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        PutRequest {
            body: reqwest::Body::wrap_stream(stream),
            content_length,
            content_md5: None,
        }
    }

    /// Asks the node to verify the body's MD5.
    pub fn content_md5(mut self, md5: [u8; 16]) -> PutRequest {
        self.content_md5 = Some(md5);
        self
    }
}

/// What a node reports about a stored object (HEAD, and the headers of GET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size of the whole object.
    pub size: u64,
    /// SHA-256 of the whole object.
    pub sha256: [u8; 32],
    /// MD5 of the whole object (absent on a 206, whose Content-MD5 would describe a slice).
    pub md5: Option<[u8; 16]>,
}

/// A GET in progress: headers read, body still to stream.
#[derive(Debug)]
pub struct GetResponse {
    /// What the node says about the object.
    pub info: ObjectInfo,
    /// The range sent, `start..=last`, when the answer is a 206.
    pub range: Option<(u64, u64)>,
    /// Bytes in the body.
    pub content_length: u64,
    resp: reqwest::Response,
}

impl GetResponse {
    /// The body as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ClientError>> {
        self.resp.bytes_stream().map_err(ClientError::Transport)
    }

    /// The whole body in memory (small objects and tests only).
    ///
    /// # Errors
    /// When the connection breaks mid-body.
    pub async fn bytes(self) -> Result<Bytes, ClientError> {
        self.resp.bytes().await.map_err(ClientError::Transport)
    }
}

/// A client of one storage node.
#[derive(Debug, Clone)]
pub struct StorageClient {
    http: reqwest::Client,
    base: String,
}

impl StorageClient {
    /// A client of the node at `base_url` (e.g. `http://127.0.0.1:8081`), with a 5 s connect
    /// timeout and a 60 s timeout between reads; no overall timeout, since objects may be huge.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base_url: impl Into<String>) -> Result<StorageClient, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(ClientError::Transport)?;
        Ok(StorageClient::with_http(http, base_url))
    }

    /// A client sharing an existing `reqwest::Client` (and its connection pool).
    pub fn with_http(http: reqwest::Client, base_url: impl Into<String>) -> StorageClient {
        let base = base_url.into().trim_end_matches('/').to_owned();
        StorageClient { http, base }
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, key: &ObjectKey) -> String {
        format!("{}{key}", self.base)
    }

    fn req(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, url);
        if let Some(id) = manta_util::http::current_request_id() {
            r = r.header(manta_util::http::REQUEST_ID, id);
        }
        r
    }

    /// Uploads an object; returns the digests the node computed (and verified against
    /// `Content-MD5` when given).
    ///
    /// # Errors
    /// [`ClientError::Md5Mismatch`], [`ClientError::Status`] (e.g. 413), transport errors.
    pub async fn put(&self, key: &ObjectKey, put: PutRequest) -> Result<Digests, ClientError> {
        let mut r = self.req(reqwest::Method::PUT, self.url(key));
        if let Some(len) = put.content_length {
            r = r.header(reqwest::header::CONTENT_LENGTH, len);
        }
        if let Some(md5) = put.content_md5 {
            r = r.header("content-md5", crate::digest::md5_base64(&md5));
        }
        let resp = r
            .body(put.body)
            .send()
            .await
            .map_err(ClientError::Transport)?;
        let resp = check(resp).await?;
        let h = resp.headers();
        let md5 = header(h, COMPUTED_MD5_HEADER)
            .and_then(|v| parse_md5_base64(&v))
            .ok_or_else(|| ClientError::InvalidResponse(format!("no {COMPUTED_MD5_HEADER}")))?;
        let sha256 = header(h, COMPUTED_SHA256_HEADER)
            .and_then(|v| parse_hex32(&v))
            .ok_or_else(|| ClientError::InvalidResponse(format!("no {COMPUTED_SHA256_HEADER}")))?;
        let body: serde_json::Value = resp.json().await.map_err(ClientError::Transport)?;
        let size = body["size"]
            .as_u64()
            .ok_or_else(|| ClientError::InvalidResponse(format!("no size in {body}")))?;
        Ok(Digests { md5, sha256, size })
    }

    /// Starts reading an object (or one range of it).
    ///
    /// # Errors
    /// [`ClientError::NotFound`], [`ClientError::Quarantined`],
    /// [`ClientError::RangeNotSatisfiable`], transport errors.
    pub async fn get(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<GetResponse, ClientError> {
        let mut r = self.req(reqwest::Method::GET, self.url(key));
        if let Some(range) = range {
            r = r.header(reqwest::header::RANGE, range.to_string());
        }
        let resp = check(r.send().await.map_err(ClientError::Transport)?).await?;
        let content_length = resp
            .content_length()
            .ok_or_else(|| ClientError::InvalidResponse("no Content-Length".into()))?;
        let (info, range) = info_of(&resp, content_length)?;
        Ok(GetResponse {
            info,
            range,
            content_length,
            resp,
        })
    }

    /// What the node knows about an object, without its bytes.
    ///
    /// # Errors
    /// [`ClientError::NotFound`], [`ClientError::Quarantined`], transport errors.
    pub async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, ClientError> {
        let resp = self
            .req(reqwest::Method::HEAD, self.url(key))
            .send()
            .await
            .map_err(ClientError::Transport)?;
        let resp = check(resp).await?;
        let len = header(resp.headers(), "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::InvalidResponse("no Content-Length".into()))?;
        Ok(info_of(&resp, len)?.0)
    }

    /// Removes an object.
    ///
    /// # Errors
    /// [`ClientError::NotFound`], transport errors.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), ClientError> {
        let resp = self
            .req(reqwest::Method::DELETE, self.url(key))
            .send()
            .await
            .map_err(ClientError::Transport)?;
        check(resp).await.map(drop)
    }

    /// `GET /ping`.
    ///
    /// # Errors
    /// When the node does not answer 200.
    pub async fn ping(&self) -> Result<(), ClientError> {
        let resp = self
            .req(reqwest::Method::GET, format!("{}/ping", self.base))
            .send()
            .await
            .map_err(ClientError::Transport)?;
        check(resp).await.map(drop)
    }
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_owned)
}

fn info_of(
    resp: &reqwest::Response,
    content_length: u64,
) -> Result<(ObjectInfo, Option<(u64, u64)>), ClientError> {
    let h = resp.headers();
    let sha256 = header(h, COMPUTED_SHA256_HEADER)
        .and_then(|v| parse_hex32(&v))
        .ok_or_else(|| ClientError::InvalidResponse(format!("no {COMPUTED_SHA256_HEADER}")))?;
    if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
        let cr = header(h, "content-range").unwrap_or_default();
        let parsed = (|| {
            let (range, total) = cr.strip_prefix("bytes ")?.split_once('/')?;
            let (a, b) = range.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
        })();
        let (a, b, total) = parsed
            .ok_or_else(|| ClientError::InvalidResponse(format!("bad Content-Range {cr:?}")))?;
        return Ok((
            ObjectInfo {
                size: total,
                sha256,
                md5: None,
            },
            Some((a, b)),
        ));
    }
    let md5 = header(h, "content-md5").and_then(|v| parse_md5_base64(&v));
    Ok((
        ObjectInfo {
            size: content_length,
            sha256,
            md5,
        },
        None,
    ))
}

/// Turns error answers into [`ClientError`]s.
async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let quarantined = resp.headers().contains_key(QUARANTINED_HEADER);
    let size = header(resp.headers(), "content-range")
        .and_then(|v| v.strip_prefix("bytes */").and_then(|n| n.parse().ok()));
    let text = resp.text().await.unwrap_or_default();
    let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
    let (code, message) = match body {
        Some(b) => (b.code, b.message),
        None => ("Unknown".to_owned(), text),
    };
    Err(match status.as_u16() {
        404 if quarantined => ClientError::Quarantined,
        404 => ClientError::NotFound,
        416 => ClientError::RangeNotSatisfiable { size },
        s if s == MD5_MISMATCH_STATUS => ClientError::Md5Mismatch(message),
        s => ClientError::Status {
            status: s,
            code,
            message,
        },
    })
}
