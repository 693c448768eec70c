//! The one client of the storage node's object API, for the front door (which streams one
//! upload to several nodes at once and reads from whichever copy answers), the jobs agent, the
//! tests and the benchmarks.
//!
//! A [`Connector`] holds the connection settings and a pool of kept-alive connections; it
//! hands out a [`StorageClient`] per node, all sharing that pool. Reads, deletes, pings and
//! [`StorageClient::put`] use the pool. [`StorageClient::start_put`] and
//! [`StorageClient::commit`] open a connection of their own: an upload then knows the node
//! accepted a connection *before* its sender's first byte is read (so a caller can place the
//! object elsewhere and lose nothing), and a join that runs for minutes holds no pooled
//! connection.
//!
//! Every request forwards the current request id (`x-request-id`). Nodes of a region are
//! `https://` and served over mutual TLS: the [`ClientBuilder::tls`] configuration carries the
//! caller's region identity; without one, `https://` trusts nothing.
//!
//! # Timeouts
//! - connect: establishing a connection;
//! - response: waiting for the answer's headers to a GET, HEAD, DELETE or ping (a PUT's
//!   answer comes only after its body, however long that takes, so it has none);
//! - read: between two chunks of an answer's body (and for the small JSON answers whole);
//! - commit: waiting for a join's answer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt as _};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use manta_types::ErrorBody;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::blocks::parse_crc32c_hex;
use crate::digest::{Digests, md5_base64, parse_hex32, parse_md5_base64};
use crate::error::{BoxError, ClientError};
use crate::key::ObjectKey;
use crate::range::ByteRange;
use crate::{
    COMMIT_PATH, COMPUTE_MD5_HEADER, COMPUTED_CRC32C_HEADER, COMPUTED_MD5_HEADER,
    COMPUTED_SHA256_HEADER, CONTENT_MD5_HEADER, CommitRequest, CommitResult, MD5_MISMATCH_STATUS,
    QUARANTINED_HEADER,
};

/// Body chunks queued for one storage node's connection by [`PutStream::send`]. Small on
/// purpose: chunks are socket reads of up to a few hundred KiB, and with many uploads at once
/// the queues are most of the front door's memory; the node's TCP window keeps the pipe full
/// beyond them.
pub const NODE_QUEUE: usize = 2;

/// The chunks of an object's bytes as a node sends them.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>;

/// The body of a pooled request.
type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

/// The limits every request of a [`Connector`] runs under.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    response: Duration,
    read: Option<Duration>,
    commit: Duration,
}

/// Builds a [`Connector`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    timeouts: Timeouts,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ClientBuilder {
    /// 5 s to connect, 60 s for an answer's headers and between its body's chunks, an hour
    /// for a join; idle pooled connections kept 90 s, without a limit on their number.
    fn default() -> Self {
        ClientBuilder {
            timeouts: Timeouts {
                connect: Duration::from_secs(5),
                response: Duration::from_secs(60),
                read: Some(Duration::from_secs(60)),
                commit: Duration::from_secs(3600),
            },
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: usize::MAX,
            tls: None,
        }
    }
}

impl ClientBuilder {
    /// The defaults (see [`ClientBuilder::default`]).
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Limit on establishing a connection.
    pub fn connect_timeout(mut self, t: Duration) -> ClientBuilder {
        self.timeouts.connect = t;
        self
    }

    /// Limit on waiting for the headers of an answer to a GET, HEAD, DELETE or ping.
    pub fn response_timeout(mut self, t: Duration) -> ClientBuilder {
        self.timeouts.response = t;
        self
    }

    /// Limit on waiting for the next chunk of an answer's body (`None`: no limit).
    pub fn read_timeout(mut self, t: Option<Duration>) -> ClientBuilder {
        self.timeouts.read = t;
        self
    }

    /// Limit on waiting for the answer to a join ([`StorageClient::commit`]).
    pub fn commit_timeout(mut self, t: Duration) -> ClientBuilder {
        self.timeouts.commit = t;
        self
    }

    /// How long an unused pooled connection is kept.
    pub fn pool_idle_timeout(mut self, t: Duration) -> ClientBuilder {
        self.pool_idle_timeout = t;
        self
    }

    /// How many unused connections to one node are kept.
    pub fn pool_max_idle_per_host(mut self, n: usize) -> ClientBuilder {
        self.pool_max_idle_per_host = n;
        self
    }

    /// Reach nodes whose URL is `https://` with this TLS configuration (inside a region: the
    /// caller's identity and the region CA, `manta_util::tls::internal_client_config`).
    /// Without it only `http://` nodes can be reached.
    pub fn tls(mut self, cfg: Arc<rustls::ClientConfig>) -> ClientBuilder {
        self.tls = Some(cfg);
        self
    }

    /// The connector.
    pub fn build(self) -> Connector {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(self.timeouts.connect));
        http.set_nodelay(true);
        http.enforce_http(false);
        // Without a configuration of the caller's, https:// trusts nothing at all.
        let tls = self.tls.unwrap_or_else(manta_util::tls::trust_nothing);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pool = legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build(https);
        Connector {
            timeouts: self.timeouts,
            pool,
            tls,
            uploads: Arc::new(UploadPool {
                idle: std::sync::Mutex::new(std::collections::HashMap::new()),
                idle_timeout: self.pool_idle_timeout,
                max_per_node: self.pool_max_idle_per_host,
            }),
        }
    }
}

/// Connections that carried an upload and may carry the next one to the same node: an upload
/// opens a connection of its own (so it knows the node took it before reading the client's
/// body), and keeping it afterwards spares the next upload a TCP connect and, inside a region,
/// a mutual TLS handshake.
struct UploadPool {
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<IdleUpload>>>,
    idle_timeout: Duration,
    max_per_node: usize,
}

/// An idle upload connection and since when it is idle.
type IdleUpload = (
    std::time::Instant,
    hyper::client::conn::http1::SendRequest<ChannelBody>,
);

impl std::fmt::Debug for UploadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadPool").finish_non_exhaustive()
    }
}

impl UploadPool {
    /// The most recently used connection to `node` still open and ready, if any.
    fn take(&self, node: &str) -> Option<hyper::client::conn::http1::SendRequest<ChannelBody>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = idle.get_mut(node)?;
        while let Some((since, send)) = list.pop() {
            if since.elapsed() < self.idle_timeout && send.is_ready() && !send.is_closed() {
                return Some(send);
            }
        }
        None
    }

    /// Keeps `send` for the next upload to `node` once its connection is ready again (the
    /// answer read to its end), unless the node has enough idle ones already.
    async fn keep(
        &self,
        node: String,
        mut send: hyper::client::conn::http1::SendRequest<ChannelBody>,
    ) {
        if !matches!(
            tokio::time::timeout(Duration::from_millis(100), send.ready()).await,
            Ok(Ok(()))
        ) {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = idle.entry(node).or_default();
        list.retain(|(since, s)| since.elapsed() < self.idle_timeout && !s.is_closed());
        if list.len() < self.max_per_node {
            list.push((std::time::Instant::now(), send));
        }
    }
}

/// Connection settings and the pool of kept-alive connections, shared by the clients of every
/// node it hands out ([`Connector::node`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Connector {
    timeouts: Timeouts,
    pool: legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, ReqBody>,
    /// For the connections of their own that uploads and joins open to `https://` nodes.
    tls: Arc<rustls::ClientConfig>,
    /// Upload connections kept for the next upload.
    uploads: Arc<UploadPool>,
}

impl Default for Connector {
    fn default() -> Self {
        ClientBuilder::default().build()
    }
}

impl Connector {
    /// A client of the node at `base_url` (e.g. `http://127.0.0.1:8081`) over this pool.
    pub fn node(&self, base_url: impl Into<String>) -> StorageClient {
        let base = base_url.into().trim_end_matches('/').to_owned();
        StorageClient {
            conn: self.clone(),
            base,
        }
    }
}

/// HTTP/1 over an open connection to `addr`; the connection's task runs until the request and
/// its answer are done with (or the body breaks).
async fn handshake<I, B>(
    io: I,
    addr: String,
) -> Result<hyper::client::conn::http1::SendRequest<B>, ClientError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Connect {
            addr,
            source: e.into(),
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "storage node connection ended");
        }
    });
    Ok(send)
}

/// An upload for [`StorageClient::put`]: the body and what is known about it up front.
#[derive(Debug)]
pub struct PutRequest {
    body: ReqBody,
    content_length: Option<u64>,
    content_md5: Option<[u8; 16]>,
    compute_md5: bool,
}

impl PutRequest {
    /// A body held in memory (small objects, tests).
    pub fn bytes(data: impl Into<Bytes>) -> PutRequest {
        let data: Bytes = data.into();
        PutRequest {
            content_length: Some(data.len() as u64),
            body: http_body_util::Full::new(data)
                .map_err(|e| match e {})
                .boxed_unsync(),
            content_md5: None,
            compute_md5: false,
        }
    }

    /// A streamed body. With `content_length` it is sent with `Content-Length` (and the node
    /// refuses a body of another length); without, chunked.
    pub fn stream<S, E>(stream: S, content_length: Option<u64>) -> PutRequest
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Sync + 'static,
        E: Into<BoxError> + 'static,
    {
        let frames = stream.map_ok(Frame::data).map_err(Into::into);
        PutRequest {
            body: http_body_util::StreamBody::new(frames).boxed_unsync(),
            content_length,
            content_md5: None,
            compute_md5: false,
        }
    }

    /// Asks the node to verify the body's MD5.
    pub fn content_md5(mut self, md5: [u8; 16]) -> PutRequest {
        self.content_md5 = Some(md5);
        self
    }

    /// Asks the node to compute the body's MD5 and report it (a node computes only its block
    /// sums otherwise).
    pub fn compute_md5(mut self) -> PutRequest {
        self.compute_md5 = true;
        self
    }
}

/// What a node reports about a stored object (HEAD, and the headers of GET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size of the whole object.
    pub size: u64,
    /// CRC32C of the whole object (copies written by this version).
    pub crc32c: Option<u32>,
    /// SHA-256 of the whole object (copies written by earlier versions).
    pub sha256: Option<[u8; 32]>,
    /// MD5 of the whole object, when the node holds one (never on a 206, whose Content-MD5
    /// would describe a slice).
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
    body: Incoming,
    read_timeout: Option<Duration>,
}

impl GetResponse {
    /// 206 for a range, else 200.
    pub fn status(&self) -> StatusCode {
        if self.range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        }
    }

    /// The `Content-Range` of a 206 (`bytes first-last/size`).
    pub fn content_range(&self) -> Option<String> {
        self.range
            .map(|(a, b)| format!("bytes {a}-{b}/{}", self.info.size))
    }

    /// The body as a stream of chunks, each within the read timeout of the one before.
    pub fn into_stream(self) -> BodyStream {
        Box::pin(body_stream(self.body, self.read_timeout))
    }

    /// The whole body in memory (small objects and tests only).
    ///
    /// # Errors
    /// When the connection breaks mid-body or stalls.
    pub async fn bytes(self) -> Result<Bytes, ClientError> {
        let chunks: Vec<Bytes> = self.into_stream().try_collect().await?;
        Ok(chunks.concat().into())
    }
}

/// The data chunks of `body`, each within `read_timeout` of the one before.
fn body_stream(
    body: Incoming,
    read_timeout: Option<Duration>,
) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static {
    futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        loop {
            let next = match read_timeout {
                Some(t) => match tokio::time::timeout(t, body.frame()).await {
                    Ok(f) => f,
                    Err(_) => return Some((Err(ClientError::Timeout("body chunk")), None)),
                },
                None => body.frame().await,
            };
            match next {
                None => return None,
                Some(Err(e)) => return Some((Err(ClientError::Transport(e.into())), None)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Some((Ok(data), Some(body)));
                    }
                }
            }
        }
    })
}

/// A body fed from a channel; an `Err` item aborts the request.
#[derive(Debug)]
struct ChannelBody {
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
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// An upload in progress to one node over its own connection: send chunks, then
/// [`finish`](PutStream::finish) (or [`abort`](PutStream::abort)).
#[derive(Debug)]
pub struct PutStream {
    tx: mpsc::Sender<io::Result<Bytes>>,
    done: tokio::task::JoinHandle<Result<Digests, ClientError>>,
}

impl PutStream {
    /// Sends one chunk; waits while the node is slower than the sender (at most
    /// [`NODE_QUEUE`] chunks wait).
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the node's request has already ended.
    pub async fn send(&self, b: Bytes) -> Result<(), ClientError> {
        self.tx.send(Ok(b)).await.map_err(|_| ClientError::Closed)
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

    /// Ends the body and waits for the node's answer: the digests it computed over what it
    /// stored.
    ///
    /// # Errors
    /// When the node refused or failed the upload, or the connection broke.
    pub async fn finish(self) -> Result<Digests, ClientError> {
        drop(self.tx);
        match self.done.await {
            Ok(r) => r,
            Err(e) => Err(ClientError::Transport(e.into())),
        }
    }
}

/// A client of one storage node. Cheap to clone; clones share the [`Connector`]'s pool.
#[derive(Debug, Clone)]
pub struct StorageClient {
    conn: Connector,
    base: String,
}

impl StorageClient {
    /// A client of the node at `base_url` (e.g. `http://127.0.0.1:8081`) with its own pool and
    /// the [`ClientBuilder::default`] settings: 5 s connect timeout, 60 s timeout between
    /// reads, no overall timeout, since objects may be huge.
    ///
    /// # Errors
    /// None today; kept fallible for settings that may be refused.
    pub fn new(base_url: impl Into<String>) -> Result<StorageClient, ClientError> {
        Ok(ClientBuilder::default().build().node(base_url))
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `host:port` of the node.
    fn authority(&self) -> &str {
        authority(&self.base)
    }

    /// A request to `path` over the pool (absolute URI), with the request id.
    fn pooled(&self, method: Method, path: &str) -> http::request::Builder {
        with_request_id(
            Request::builder()
                .method(method)
                .uri(format!("{}{path}", self.base)),
        )
    }

    /// A request to `path` over a connection of its own (origin-form URI and `Host`).
    fn direct(&self, method: Method, path: &str) -> http::request::Builder {
        with_request_id(
            Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, self.authority()),
        )
    }

    /// Sends a pooled request; waits at most `timeout` for the answer's headers.
    async fn send(
        &self,
        req: http::request::Builder,
        body: ReqBody,
        timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, ClientError> {
        let req = req
            .body(body)
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let fut = self.conn.pool.request(req);
        let res = match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| ClientError::Timeout("answer"))?,
            None => fut.await,
        };
        res.map_err(|e| {
            if e.is_connect() {
                ClientError::Connect {
                    addr: self.authority().to_owned(),
                    source: e.into(),
                }
            } else {
                ClientError::Transport(e.into())
            }
        })
    }

    /// A pooled request without a body, answered within the response timeout, checked.
    async fn call(&self, method: Method, path: &str) -> Result<Response<Incoming>, ClientError> {
        let empty = http_body_util::Empty::new()
            .map_err(|e| match e {})
            .boxed_unsync();
        let resp = self
            .send(
                self.pooled(method, path),
                empty,
                Some(self.conn.timeouts.response),
            )
            .await?;
        self.check(resp).await
    }

    /// Opens a connection of its own to the node (within the connect timeout).
    async fn connect<B>(&self) -> Result<hyper::client::conn::http1::SendRequest<B>, ClientError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let addr = self.authority().to_owned();
        let tcp = tokio::time::timeout(self.conn.timeouts.connect, TcpStream::connect(&addr))
            .await
            .map_err(|_| ClientError::Connect {
                addr: addr.clone(),
                source: "connect timed out".into(),
            })?
            .map_err(|e| ClientError::Connect {
                addr: addr.clone(),
                source: e.into(),
            })?;
        let _ = tcp.set_nodelay(true);
        let send = if self.base.starts_with("https://") {
            let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| ClientError::Connect {
                    addr: addr.clone(),
                    source: e.into(),
                })?;
            let tls = tokio::time::timeout(
                self.conn.timeouts.connect,
                tokio_rustls::TlsConnector::from(self.conn.tls.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| ClientError::Connect {
                addr: addr.clone(),
                source: "TLS handshake timed out".into(),
            })?
            .map_err(|e| ClientError::Connect {
                addr: addr.clone(),
                source: e.into(),
            })?;
            handshake(TokioIo::new(tls), addr).await?
        } else {
            handshake(TokioIo::new(tcp), addr).await?
        };
        Ok(send)
    }

    /// Uploads an object over the pool; returns the digests the node computed (and verified
    /// against `Content-MD5` when given).
    ///
    /// # Errors
    /// [`ClientError::Md5Mismatch`], [`ClientError::Status`] (e.g. 413), transport errors.
    pub async fn put(&self, key: &ObjectKey, put: PutRequest) -> Result<Digests, ClientError> {
        let md5 = put.content_md5.map(|m| md5_base64(&m));
        let mut req = put_headers(
            self.pooled(Method::PUT, &key.to_string()),
            put.content_length,
            md5.as_deref(),
        );
        if put.compute_md5 {
            req = req.header(COMPUTE_MD5_HEADER, "true");
        }
        let resp = self.send(req, put.body, None).await?;
        self.stored(resp).await
    }

    /// Connects to the node and starts `PUT /<owner>/<objectId>` over that connection; the
    /// body is what is then sent through the returned stream. Returns only once the node
    /// accepted the connection, before any byte of the body is needed.
    ///
    /// `content_md5` (base64) is sent as is for the node to verify.
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the node cannot be reached.
    pub async fn start_put(
        &self,
        key: &ObjectKey,
        content_length: Option<u64>,
        content_md5: Option<&str>,
    ) -> Result<PutStream, ClientError> {
        let mut send = match self.conn.uploads.take(&self.base) {
            Some(s) => s,
            None => self.connect::<ChannelBody>().await?,
        };
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        let req = put_headers(
            self.direct(Method::PUT, &key.to_string()),
            content_length,
            content_md5,
        )
        .body(ChannelBody {
            rx,
            len: content_length,
        })
        .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let client = self.clone();
        let done = tokio::spawn(async move {
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| ClientError::Transport(e.into()))?;
            let digests = client.stored(resp).await?;
            client.conn.uploads.keep(client.base.clone(), send).await;
            Ok(digests)
        });
        Ok(PutStream { tx, done })
    }

    /// The digests in a PUT's answer.
    async fn stored(&self, resp: Response<Incoming>) -> Result<Digests, ClientError> {
        let resp = self.check(resp).await?;
        let h = resp.headers();
        let (crc32c, sha256) = whole_object_sums(h)?;
        let md5 = match header(h, COMPUTED_MD5_HEADER) {
            None => None,
            Some(v) => Some(parse_md5_base64(v).ok_or_else(|| {
                ClientError::InvalidResponse(format!("bad {COMPUTED_MD5_HEADER} {v:?}"))
            })?),
        };
        let body: serde_json::Value = serde_json::from_slice(&self.small_body(resp).await?)
            .map_err(|e| ClientError::InvalidResponse(format!("unreadable answer: {e}")))?;
        let size = body["size"]
            .as_u64()
            .ok_or_else(|| ClientError::InvalidResponse(format!("no size in {body}")))?;
        Ok(Digests {
            size,
            crc32c,
            md5,
            sha256,
        })
    }

    /// Starts reading an object (or one range of it) over the pool.
    ///
    /// # Errors
    /// [`ClientError::NotFound`], [`ClientError::Quarantined`],
    /// [`ClientError::RangeNotSatisfiable`], [`ClientError::Timeout`], transport errors.
    pub async fn get(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<GetResponse, ClientError> {
        let mut req = self.pooled(Method::GET, &key.to_string());
        if let Some(range) = range {
            req = req.header(http::header::RANGE, range.to_string());
        }
        let empty = http_body_util::Empty::new()
            .map_err(|e| match e {})
            .boxed_unsync();
        let resp = self
            .send(req, empty, Some(self.conn.timeouts.response))
            .await?;
        let resp = self.check(resp).await?;
        let content_length = header(resp.headers(), "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::InvalidResponse("no Content-Length".into()))?;
        let (info, range) = info_of(resp.status(), resp.headers(), content_length)?;
        Ok(GetResponse {
            info,
            range,
            content_length,
            body: resp.into_body(),
            read_timeout: self.conn.timeouts.read,
        })
    }

    /// What the node knows about an object, without its bytes.
    ///
    /// # Errors
    /// [`ClientError::NotFound`], [`ClientError::Quarantined`], transport errors.
    pub async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, ClientError> {
        let resp = self.call(Method::HEAD, &key.to_string()).await?;
        let len = header(resp.headers(), "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::InvalidResponse("no Content-Length".into()))?;
        Ok(info_of(resp.status(), resp.headers(), len)?.0)
    }

    /// Removes an object.
    ///
    /// # Errors
    /// [`ClientError::NotFound`], transport errors.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), ClientError> {
        self.call(Method::DELETE, &key.to_string()).await.map(drop)
    }

    /// `GET /ping`.
    ///
    /// # Errors
    /// When the node does not answer 200.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.call(Method::GET, "/ping").await.map(drop)
    }

    /// Asks the node to join the parts of `req` into a new object (`POST /mpu/commit`), over
    /// a connection of its own, waiting up to the commit timeout for the answer.
    ///
    /// # Errors
    /// [`ClientError::Status`] for a refused join, [`ClientError::Timeout`], transport errors.
    pub async fn commit(&self, req: &CommitRequest) -> Result<CommitResult, ClientError> {
        let body =
            serde_json::to_vec(req).map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let mut send = self.connect::<http_body_util::Full<Bytes>>().await?;
        let req = self
            .direct(Method::POST, COMMIT_PATH)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let resp = tokio::time::timeout(self.conn.timeouts.commit, send.send_request(req))
            .await
            .map_err(|_| ClientError::Timeout("answer"))?
            .map_err(|e| ClientError::Transport(e.into()))?;
        let resp = self.check(resp).await?;
        let bytes = self.small_body(resp).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::InvalidResponse(format!("unreadable answer: {e}")))
    }

    /// A small (JSON) answer body, whole, within the read timeout.
    async fn small_body(&self, resp: Response<Incoming>) -> Result<Bytes, ClientError> {
        let collect = resp.into_body().collect();
        let collected = match self.conn.timeouts.read {
            Some(t) => tokio::time::timeout(t, collect)
                .await
                .map_err(|_| ClientError::Timeout("answer body"))?,
            None => collect.await,
        };
        Ok(collected
            .map_err(|e| ClientError::Transport(e.into()))?
            .to_bytes())
    }

    /// Turns error answers into [`ClientError`]s.
    async fn check(&self, resp: Response<Incoming>) -> Result<Response<Incoming>, ClientError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let quarantined = resp.headers().contains_key(QUARANTINED_HEADER);
        let size = header(resp.headers(), "content-range")
            .and_then(|v| v.strip_prefix("bytes */").and_then(|n| n.parse().ok()));
        let text = self
            .small_body(resp)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
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
}

/// Where a storage node's object API is (`host:port` of its URL).
fn authority(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

/// Adds the request id of the current request, if any (and if it is a valid header value).
fn with_request_id(mut b: http::request::Builder) -> http::request::Builder {
    if let Some(id) = manta_util::http::current_request_id()
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        b = b.header(manta_util::http::REQUEST_ID, v);
    }
    b
}

/// The headers of a PUT: its length (or chunked) and the MD5 to verify.
fn put_headers(
    mut b: http::request::Builder,
    content_length: Option<u64>,
    content_md5: Option<&str>,
) -> http::request::Builder {
    b = match content_length {
        Some(len) => b.header(http::header::CONTENT_LENGTH, len),
        None => b.header(http::header::TRANSFER_ENCODING, "chunked"),
    };
    if let Some(md5) = content_md5 {
        b = b.header(CONTENT_MD5_HEADER, md5);
    }
    b
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)?.to_str().ok()
}

/// The whole object's CRC32C and SHA-256 from a node's answer: at least one is there (a copy
/// written by this version has a CRC32C, an older one a SHA-256).
fn whole_object_sums(h: &HeaderMap) -> Result<(Option<u32>, Option<[u8; 32]>), ClientError> {
    let bad = |name: &str, v: &str| ClientError::InvalidResponse(format!("bad {name} {v:?}"));
    let crc32c = match header(h, COMPUTED_CRC32C_HEADER) {
        None => None,
        Some(v) => Some(parse_crc32c_hex(v).ok_or_else(|| bad(COMPUTED_CRC32C_HEADER, v))?),
    };
    let sha256 = match header(h, COMPUTED_SHA256_HEADER) {
        None => None,
        Some(v) => Some(parse_hex32(v).ok_or_else(|| bad(COMPUTED_SHA256_HEADER, v))?),
    };
    if crc32c.is_none() && sha256.is_none() {
        return Err(ClientError::InvalidResponse(format!(
            "neither {COMPUTED_CRC32C_HEADER} nor {COMPUTED_SHA256_HEADER} in the answer"
        )));
    }
    Ok((crc32c, sha256))
}

/// What the headers of a GET or HEAD answer say about the object, and the range of a 206.
fn info_of(
    status: StatusCode,
    h: &HeaderMap,
    content_length: u64,
) -> Result<(ObjectInfo, Option<(u64, u64)>), ClientError> {
    let (crc32c, sha256) = whole_object_sums(h)?;
    if status == StatusCode::PARTIAL_CONTENT {
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
                crc32c,
                sha256,
                md5: None,
            },
            Some((a, b)),
        ));
    }
    let md5 = header(h, CONTENT_MD5_HEADER).and_then(parse_md5_base64);
    Ok((
        ObjectInfo {
            size: content_length,
            crc32c,
            sha256,
            md5,
        },
        None,
    ))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(authority("http://127.0.0.1:8081"), "127.0.0.1:8081");
        assert_eq!(authority("http://n1:80/x"), "n1:80");
    }

    const SHA: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    /// A node that takes one request (head and `Content-Length` body), answers `answer`,
    /// and hands back the request as text.
    async fn node_once(answer: String) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before the whole request");
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            s.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(req).unwrap()
        });
        (url, served)
    }

    fn key() -> ObjectKey {
        ObjectKey::parse(
            "a5a2a7b6-4a0e-4a0f-9c39-2c1b1b0b8f11",
            "0b7a6f0e-3d7b-4c3e-8d7e-9a6d1e2f3a4b",
        )
        .unwrap()
    }

    #[tokio::test]
    async fn an_upload_on_its_own_connection_forwards_the_request_id() {
        let body = r#"{"size":5}"#;
        let (url, served) = node_once(format!(
            "HTTP/1.1 201 Created\r\n{COMPUTED_MD5_HEADER}: XUFAKrxLKna5cZ2REBfFkg==\r\n\
             {COMPUTED_SHA256_HEADER}: {SHA}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))
        .await;
        let node = StorageClient::new(url).unwrap();
        let stored = manta_util::http::with_request_id("req-1".into(), async {
            let put = node.start_put(&key(), Some(5), None).await.unwrap();
            put.send(Bytes::from_static(b"hello")).await.unwrap();
            put.finish().await
        })
        .await
        .unwrap();
        assert_eq!(stored.size, 5);
        assert_eq!(
            stored.md5_base64().as_deref(),
            Some("XUFAKrxLKna5cZ2REBfFkg==")
        );
        let req = served.await.unwrap();
        assert!(
            req.starts_with(&format!("PUT {} HTTP/1.1\r\n", key())),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase().contains("x-request-id: req-1\r\n"),
            "{req}"
        );
        assert!(req.ends_with("\r\n\r\nhello"), "{req}");
    }

    #[tokio::test]
    async fn a_pooled_read_forwards_the_request_id_and_knows_a_quarantined_copy() {
        let body = r#"{"code":"ResourceNotFound","message":"quarantined"}"#;
        let (url, served) = node_once(format!(
            "HTTP/1.1 404 Not Found\r\n{QUARANTINED_HEADER}: true\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        ))
        .await;
        let node = StorageClient::new(url).unwrap();
        let got = manta_util::http::with_request_id(
            "req-2".into(),
            node.get(&key(), Some(ByteRange::FromTo(0, 9))),
        )
        .await;
        assert!(matches!(got, Err(ClientError::Quarantined)), "{got:?}");
        let req = served.await.unwrap().to_ascii_lowercase();
        assert!(req.contains("x-request-id: req-2\r\n"), "{req}");
        assert!(req.contains("range: bytes=0-9\r\n"), "{req}");
    }
}
