//! Talking to storage nodes: one PUT body streamed to N nodes at once, and GETs that fail over
//! between copies before the first byte.
//!
//! Connections are opened explicitly (not from a pool) so a PUT knows every node of a
//! candidate set accepted a connection *before* it reads the client's body; if one does not,
//! the next set is tried and no byte is lost. The body then flows through bounded channels,
//! one per node: the client is read only as fast as the slowest node writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::debug;

use crate::picker::Node;

/// Body chunks queued for one storage node's connection. Small on purpose: chunks are socket
/// reads of up to a few hundred KiB, and with many uploads at once the queues are most of
/// the front door's memory; the node's TCP window keeps the pipe full beyond them.
pub const NODE_QUEUE: usize = 2;

/// A body fed from a channel; an `Err` item aborts the request.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    len: Option<u64>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Why talking to a storage node failed.
#[derive(Debug, thiserror::Error)]
pub enum SharkError {
    /// No connection within the timeout, or refused.
    #[error("cannot connect to {node}: {reason}")]
    Connect {
        /// Storage id.
        node: String,
        /// Why.
        reason: String,
    },
    /// The node answered with an error status.
    #[error("{node} answered {status}")]
    Status {
        /// Storage id.
        node: String,
        /// The status.
        status: StatusCode,
    },
    /// The node refused the body's Content-MD5 (its status 469).
    #[error("{node} computed a different MD5 than Content-MD5")]
    Md5Mismatch {
        /// Storage id.
        node: String,
    },
    /// The exchange broke (reset, timeout, protocol error).
    #[error("{node}: {reason}")]
    Io {
        /// Storage id.
        node: String,
        /// Why.
        reason: String,
    },
}

/// Connection settings for storage nodes, and the pool reads use.
#[derive(Debug, Clone)]
pub struct SharkClient {
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit on waiting for response headers once a request (and its body) is sent.
    pub response_timeout: Duration,
    /// Kept-alive connections for reads and deletes. Writes open their own connections so they
    /// know every node accepted one before the client's body is read.
    pool: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<Bytes>,
    >,
}

impl Default for SharkClient {
    fn default() -> Self {
        let connect_timeout = Duration::from_secs(2);
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let pool =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .build(connector);
        SharkClient {
            connect_timeout,
            response_timeout: Duration::from_secs(120),
            pool,
        }
    }
}

fn authority(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

/// The digests a node reports for what it stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Base64 MD5.
    pub md5: String,
    /// Hex SHA-256, when the node reports it.
    pub sha256: Option<String>,
}

/// A PUT in progress to one node: send chunks, then await the outcome.
#[derive(Debug)]
pub struct PutStream {
    /// The node.
    pub node: Node,
    tx: mpsc::Sender<io::Result<Bytes>>,
    done: tokio::task::JoinHandle<Result<Stored, SharkError>>,
}

impl PutStream {
    /// Sends one chunk; waits while the node is slower than the sender.
    ///
    /// # Errors
    /// When the node's request has already failed.
    pub async fn send(&self, b: Bytes) -> Result<(), ()> {
        self.tx.send(Ok(b)).await.map_err(|_| ())
    }

    /// Aborts the upload: the node sees a broken body and keeps nothing.
    pub async fn abort(self) {
        // Never wait on a stalled node: queue the error if there is room, then drop the
        // request, which closes the connection in the middle of the body.
        let _ = self.tx.try_send(Err(io::Error::other("upload aborted")));
        drop(self.tx);
        self.done.abort();
        let _ = self.done.await;
    }

    /// Ends the body and waits for the node's answer.
    ///
    /// # Errors
    /// When the node refused or failed the upload.
    pub async fn finish(self) -> Result<Stored, SharkError> {
        drop(self.tx);
        match self.done.await {
            Ok(r) => r,
            Err(e) => Err(SharkError::Io {
                node: self.node.storage_id.clone(),
                reason: e.to_string(),
            }),
        }
    }
}

async fn connect(
    node: &Node,
    timeout: Duration,
) -> Result<hyper::client::conn::http1::SendRequest<ChannelBody>, SharkError> {
    let addr = authority(&node.url).to_owned();
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| SharkError::Connect {
            node: node.storage_id.clone(),
            reason: "connect timed out".into(),
        })?
        .map_err(|e| SharkError::Connect {
            node: node.storage_id.clone(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| SharkError::Connect {
            node: node.storage_id.clone(),
            reason: e.to_string(),
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "storage node connection ended");
        }
    });
    Ok(send)
}

fn with_request_id(mut b: http::request::Builder) -> http::request::Builder {
    if let Some(id) = manta_util::http::current_request_id()
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        b = b.header(manta_util::http::REQUEST_ID, v);
    }
    b
}

impl SharkClient {
    /// Connects to `node` and starts `PUT /<owner>/<object_id>`; the body is what is then sent
    /// through the returned stream.
    ///
    /// # Errors
    /// When the node cannot be reached.
    pub async fn start_put(
        &self,
        node: &Node,
        owner: &str,
        object_id: &str,
        content_length: Option<u64>,
        content_md5: Option<&str>,
    ) -> Result<PutStream, SharkError> {
        let mut send = connect(node, self.connect_timeout).await?;
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        let mut b = Request::put(format!("/{owner}/{object_id}"))
            .header(http::header::HOST, authority(&node.url));
        b = with_request_id(b);
        if let Some(len) = content_length {
            b = b.header(http::header::CONTENT_LENGTH, len);
        } else {
            b = b.header(http::header::TRANSFER_ENCODING, "chunked");
        }
        if let Some(md5) = content_md5 {
            b = b.header("content-md5", md5);
        }
        let req = b
            .body(ChannelBody {
                rx,
                len: content_length,
            })
            .map_err(|e| SharkError::Io {
                node: node.storage_id.clone(),
                reason: e.to_string(),
            })?;
        let id = node.storage_id.clone();
        let timeout = self.response_timeout;
        let done = tokio::spawn(async move {
            let resp = send.send_request(req).await.map_err(|e| SharkError::Io {
                node: id.clone(),
                reason: e.to_string(),
            })?;
            let status = resp.status();
            let md5 = resp
                .headers()
                .get("x-joyent-computed-content-md5")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let sha256 = resp
                .headers()
                .get("x-manta-computed-sha256")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // Drain the small body so the connection closes cleanly.
            let _ = tokio::time::timeout(timeout, resp.into_body().collect()).await;
            if status.as_u16() == 469 {
                return Err(SharkError::Md5Mismatch { node: id });
            }
            if !status.is_success() {
                return Err(SharkError::Status { node: id, status });
            }
            let md5 = md5.ok_or_else(|| SharkError::Io {
                node: id.clone(),
                reason: "no computed MD5 in the answer".into(),
            })?;
            Ok(Stored { md5, sha256 })
        });
        Ok(PutStream {
            node: node.clone(),
            tx,
            done,
        })
    }

    /// `GET /<owner>/<object_id>` (with an optional `Range`) from one node, over a pooled
    /// connection.
    ///
    /// # Errors
    /// When the node cannot be reached or does not answer 200/206/416 in time.
    pub async fn get(
        &self,
        node: &Node,
        owner: &str,
        object_id: &str,
        range: Option<&str>,
    ) -> Result<http::Response<Incoming>, SharkError> {
        let mut b = with_request_id(Request::get(format!(
            "{}/{owner}/{object_id}",
            node.url.trim_end_matches('/')
        )));
        if let Some(r) = range {
            b = b.header(http::header::RANGE, r);
        }
        let req = b
            .body(http_body_util::Empty::new())
            .map_err(|e| SharkError::Io {
                node: node.storage_id.clone(),
                reason: e.to_string(),
            })?;
        let resp = tokio::time::timeout(self.connect_timeout * 5, self.pool.request(req))
            .await
            .map_err(|_| SharkError::Io {
                node: node.storage_id.clone(),
                reason: "no answer in time".into(),
            })?
            .map_err(|e| SharkError::Connect {
                node: node.storage_id.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE {
            Ok(resp)
        } else {
            Err(SharkError::Status {
                node: node.storage_id.clone(),
                status,
            })
        }
    }

    /// `DELETE /<owner>/<object_id>` on one node, best effort (cleaning up after a failed PUT).
    pub async fn delete(&self, node: &Node, owner: &str, object_id: &str) {
        let b = with_request_id(Request::delete(format!(
            "{}/{owner}/{object_id}",
            node.url.trim_end_matches('/')
        )));
        if let Ok(req) = b.body(http_body_util::Empty::new()) {
            let _ = tokio::time::timeout(self.connect_timeout * 5, self.pool.request(req)).await;
        }
    }
}
