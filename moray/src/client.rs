//! The typed async client of one Moray shard (one or more interchangeable server URLs).
//!
//! Every call is `POST <base>/<method>` with a JSON body. The client:
//! - bounds each call with a timeout (connect 3 s, whole call 60 s by default);
//! - retries a call whose request never reached a server (connection refused) on the next URL;
//! - retries idempotent calls (reads, unconditional puts, bucket reads, ping) also on timeouts,
//!   dropped connections and retryable errors such as `NoDatabasePeersError` (a failover in
//!   progress), with exponential backoff;
//! - forwards the current request id (`x-request-id`) so one id follows a request from the
//!   front door into Moray's logs.
//!
//! Conditional writes and deletes are never retried after the request was sent: a retry could
//! report a conflict with its own first attempt. Callers decide (see [`Error::is_retryable`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result, WireError};
use crate::types::{
    BatchOp, BatchResult, Bucket, BucketConfig, CountResult, DelOptions, EtagCondition,
    FindOptions, ObjectRecord, PutOptions, PutResult, ReindexResult, VersionInfo, req,
};

/// How a client reaches Moray: `None` for plain HTTP, or the TLS configuration of the
/// caller's region identity (`manta_util::tls::internal_client_config`) for servers that serve
/// mutual TLS (`https://` URLs).
pub type Tls = Option<Arc<rustls::ClientConfig>>;

/// A stream of records from `findObjects`.
pub type RecordStream = Pin<Box<dyn Stream<Item = Result<ObjectRecord>> + Send>>;

/// Builds a [`MorayClient`] with non-default timeouts or retries.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    urls: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    backoff: Duration,
    tls: Tls,
}

impl ClientBuilder {
    /// Reach the servers over mutual TLS with this configuration (see [`Tls`]).
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// Whole-call timeout (default 60 s). For `findObjects` it covers the whole stream.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// TCP connect timeout (default 3 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Extra attempts for retryable failures (default 4).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// First backoff between attempts, doubled each time (default 50 ms).
    pub fn backoff(mut self, d: Duration) -> Self {
        self.backoff = d;
        self
    }

    /// Adds another URL of the same shard (another Moray instance).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// `InvalidArgument` for a URL that is not `http(s)://host[:port][/prefix]`, or no URL.
    pub fn build(self) -> Result<MorayClient> {
        if self.urls.is_empty() {
            return Err(Error::invalid_argument(
                "a Moray client needs at least one URL",
            ));
        }
        let mut urls = Vec::new();
        for u in &self.urls {
            let parsed = url::Url::parse(u)
                .map_err(|e| Error::invalid_argument(format!("bad Moray URL {u:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(Error::invalid_argument(format!(
                    "bad Moray URL {u:?}: expected http://host:port"
                )));
            }
            urls.push(u.trim_end_matches('/').to_owned());
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(tls) = &self.tls {
            http = http.tls_backend_preconfigured((**tls).clone());
        }
        let http = http
            .build()
            .map_err(|e| Error::internal(format!("build HTTP client: {e}")))?;
        Ok(MorayClient {
            inner: Arc::new(Inner {
                urls,
                next: AtomicUsize::new(0),
                http,
                retries: self.retries,
                backoff: self.backoff,
            }),
        })
    }
}

#[derive(Debug)]
struct Inner {
    urls: Vec<String>,
    /// Index of the URL to try first; moves on when one refuses connections.
    next: AtomicUsize,
    http: reqwest::Client,
    retries: u32,
    backoff: Duration,
}

/// A client of one Moray shard. Cheap to clone (shares its connection pool).
#[derive(Debug, Clone)]
pub struct MorayClient {
    inner: Arc<Inner>,
}

/// Whether a call may be repeated after the request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads and writes whose repetition has the same effect.
    Idempotent,
    /// Only when the request provably never reached a server.
    UnsentOnly,
}

impl MorayClient {
    /// A client of the Moray server at `base_url` (e.g. `http://127.0.0.1:2020`).
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed URL.
    pub fn new(base_url: &str) -> Result<MorayClient> {
        MorayClient::builder(base_url).build()
    }

    /// A builder starting from `base_url`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            urls: vec![base_url.into()],
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(3),
            retries: 4,
            backoff: Duration::from_millis(50),
            tls: None,
        }
    }

    /// A client over several instances of the same shard, tried in turn.
    ///
    /// # Errors
    /// `InvalidArgument` for no URL or a malformed one.
    pub fn with_urls(urls: &[String]) -> Result<MorayClient> {
        MorayClient::with_urls_over(urls, None)
    }

    /// [`MorayClient::with_urls`], reaching the servers as `tls` says.
    ///
    /// # Errors
    /// `InvalidArgument` for no URL or a malformed one.
    pub fn with_urls_over(urls: &[String], tls: Tls) -> Result<MorayClient> {
        let mut it = urls.iter();
        let first = it
            .next()
            .ok_or_else(|| Error::invalid_argument("a Moray client needs at least one URL"))?;
        it.fold(MorayClient::builder(first.clone()).tls(tls), |b, u| {
            b.url(u.clone())
        })
        .build()
    }

    /// The URLs this client talks to.
    pub fn urls(&self) -> &[String] {
        &self.inner.urls
    }

    async fn send(
        &self,
        method: &str,
        body: &impl Serialize,
        retry: Retry,
    ) -> Result<reqwest::Response> {
        let body = Bytes::from(
            serde_json::to_vec(body)
                .map_err(|e| Error::invalid_argument(format!("encode request: {e}")))?,
        );
        let inner = &self.inner;
        let mut attempt = 0u32;
        loop {
            let idx = inner.next.load(Ordering::Relaxed) % inner.urls.len();
            let url = format!("{}/{method}", inner.urls[idx]);
            let mut rb = inner
                .http
                .post(&url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(id) = manta_util::http::current_request_id() {
                rb = rb.header(manta_util::http::REQUEST_ID, id);
            }
            let (err, may_retry) = match rb.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let err = error_from_response(resp).await;
                    let again = retry == Retry::Idempotent && err.is_retryable();
                    (err, again)
                }
                Err(e) => {
                    let unsent = e.is_connect();
                    if unsent && inner.urls.len() > 1 {
                        // Try the next instance first from now on.
                        let _ = inner.next.compare_exchange(
                            idx,
                            idx + 1,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    let err = Error::Unavailable {
                        message: format!("{method} to {url}: {}", error_chain(&e)),
                    };
                    (err, unsent || retry == Retry::Idempotent)
                }
            };
            if !may_retry || attempt >= inner.retries {
                return Err(err);
            }
            let delay = inner.backoff * 2u32.saturating_pow(attempt);
            tracing::debug!(method, attempt, error = %err, ?delay, "moray call failed; retrying");
            tokio::time::sleep(delay.min(Duration::from_secs(2))).await;
            attempt += 1;
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        body: &impl Serialize,
        retry: Retry,
    ) -> Result<T> {
        let resp = self.send(method, body, retry).await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| Error::Unavailable {
            message: format!("{method}: reading the response: {}", error_chain(&e)),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
            status,
            message: format!("{method}: undecodable response: {e}"),
        })
    }

    /// Creates a bucket.
    ///
    /// # Errors
    /// `BucketConflict` when it exists, `InvalidBucketName`, `InvalidBucketConfig`.
    pub async fn create_bucket(&self, name: &str, config: BucketConfig) -> Result<Bucket> {
        let body = req::PutBucket {
            name: name.to_owned(),
            config,
            no_reindex: false,
        };
        self.call("createBucket", &body, Retry::UnsentOnly).await
    }

    /// Reads a bucket's configuration.
    ///
    /// # Errors
    /// `BucketNotFound`.
    pub async fn get_bucket(&self, name: &str) -> Result<Bucket> {
        let body = req::Name {
            name: name.to_owned(),
        };
        self.call("getBucket", &body, Retry::Idempotent).await
    }

    /// Every bucket.
    ///
    /// # Errors
    /// Transport and database errors.
    pub async fn list_buckets(&self) -> Result<Vec<Bucket>> {
        self.call("listBuckets", &serde_json::json!({}), Retry::Idempotent)
            .await
    }

    /// Replaces a bucket's configuration. New indexes are usable by filters once
    /// [`MorayClient::reindex_objects`] reports nothing left.
    ///
    /// # Errors
    /// `BucketNotFound`, `BucketVersion` when the version does not increase.
    pub async fn update_bucket(&self, name: &str, config: BucketConfig) -> Result<Bucket> {
        self.update_bucket_opts(name, config, false).await
    }

    /// [`MorayClient::update_bucket`], optionally declaring new indexes usable at once
    /// (`no_reindex`: only correct when no existing record has the new fields).
    ///
    /// # Errors
    /// As [`MorayClient::update_bucket`].
    pub async fn update_bucket_opts(
        &self,
        name: &str,
        config: BucketConfig,
        no_reindex: bool,
    ) -> Result<Bucket> {
        let body = req::PutBucket {
            name: name.to_owned(),
            config,
            no_reindex,
        };
        self.call("updateBucket", &body, Retry::UnsentOnly).await
    }

    /// Creates the bucket, or updates it when its stored configuration differs and the version
    /// is newer; a no-op when it already matches. Idempotent: what `setup` code calls.
    ///
    /// # Errors
    /// As [`MorayClient::create_bucket`] and [`MorayClient::update_bucket`].
    pub async fn put_bucket(&self, name: &str, config: BucketConfig) -> Result<Bucket> {
        for _ in 0..3 {
            match self.get_bucket(name).await {
                Ok(b) if b.config() == config => return Ok(b),
                Ok(b)
                    if b.options.version >= config.options.version
                        && config.options.version > 0 =>
                {
                    // Someone already moved it to this version or beyond: keep theirs.
                    return Ok(b);
                }
                Ok(_) => return self.update_bucket(name, config).await,
                Err(Error::BucketNotFound { .. }) => {
                    match self.create_bucket(name, config.clone()).await {
                        Err(Error::BucketConflict { .. }) => continue,
                        other => return other,
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.get_bucket(name).await
    }

    /// Drops a bucket and all its records.
    ///
    /// # Errors
    /// `BucketNotFound`.
    pub async fn del_bucket(&self, name: &str) -> Result<()> {
        let body = req::Name {
            name: name.to_owned(),
        };
        let _: Value = self.call("delBucket", &body, Retry::UnsentOnly).await?;
        Ok(())
    }

    /// Writes a record (create or replace), subject to `opts.etag`.
    ///
    /// # Errors
    /// `EtagConflict` when the condition fails, `BucketNotFound`, `UniqueAttribute`,
    /// `InvalidArgument` when the value is not a JSON object.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        value: Value,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.put_object_vnode(bucket, key, value, opts, None).await
    }

    pub(crate) async fn put_object_vnode(
        &self,
        bucket: &str,
        key: &str,
        value: Value,
        opts: PutOptions,
        vnode: Option<u64>,
    ) -> Result<PutResult> {
        let retry = if opts.etag == EtagCondition::Any {
            Retry::Idempotent
        } else {
            Retry::UnsentOnly
        };
        let body = req::PutObject {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            value,
            options: opts,
            vnode,
        };
        self.call("putObject", &body, retry).await
    }

    /// Reads a record.
    ///
    /// # Errors
    /// `ObjectNotFound`, `BucketNotFound`.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<ObjectRecord> {
        let body = req::GetObject {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        };
        self.call("getObject", &body, Retry::Idempotent).await
    }

    /// Deletes a record, subject to `opts.etag`.
    ///
    /// # Errors
    /// `ObjectNotFound`, `EtagConflict`, `BucketNotFound`.
    pub async fn del_object(&self, bucket: &str, key: &str, opts: DelOptions) -> Result<()> {
        let body = req::DelObject {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            options: opts,
        };
        let _: Value = self.call("delObject", &body, Retry::UnsentOnly).await?;
        Ok(())
    }

    /// Records matching `filter`, collected.
    ///
    /// # Errors
    /// `InvalidQuery`, `NotIndexed`, `BucketNotFound`, or an error met mid-stream.
    pub async fn find_objects(
        &self,
        bucket: &str,
        filter: &str,
        opts: FindOptions,
    ) -> Result<Vec<ObjectRecord>> {
        let mut s = self.find_objects_stream(bucket, filter, opts).await?;
        let mut out = Vec::new();
        while let Some(r) = s.next().await {
            out.push(r?);
        }
        Ok(out)
    }

    /// Every record of `bucket` matching `filter`, in `_id` order, fetched `page` at a time and
    /// handed to `each`; a bucket that does not exist has none. Records written during the
    /// scan get new ids beyond the cursor, so they are seen too.
    ///
    /// # Errors
    /// As [`MorayClient::find_objects`], but for `BucketNotFound`.
    pub async fn scan(
        &self,
        bucket: &str,
        filter: &str,
        page: u64,
        mut each: impl FnMut(ObjectRecord),
    ) -> Result<()> {
        let mut from = 0i64;
        loop {
            let opts = FindOptions {
                limit: Some(page),
                sort: vec![crate::types::Sort::asc("_id")],
                no_count: true,
                ..FindOptions::default()
            };
            let batch = match self
                .find_objects(bucket, &format!("(&{filter}(_id>={from}))"), opts)
                .await
            {
                Ok(b) => b,
                Err(crate::Error::BucketNotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            let full = batch.len() as u64 >= page;
            for r in batch {
                from = r.id + 1;
                each(r);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Records matching `filter`, as they arrive (one JSON record per line on the wire).
    ///
    /// # Errors
    /// Errors detected before the first record are returned here; a failure after that
    /// arrives as the stream's last item.
    pub async fn find_objects_stream(
        &self,
        bucket: &str,
        filter: &str,
        opts: FindOptions,
    ) -> Result<RecordStream> {
        let body = req::FindObjects {
            bucket: bucket.to_owned(),
            filter: filter.to_owned(),
            options: opts,
        };
        let resp = self.send("findObjects", &body, Retry::Idempotent).await?;
        Ok(Box::pin(
            json_lines(resp).map(|line| record_from_line(&line?)),
        ))
    }

    /// Runs operations in one transaction: all apply or none does.
    ///
    /// # Errors
    /// The first failing operation's error (nothing is applied).
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<BatchResult> {
        self.batch_vnodes(ops, Default::default()).await
    }

    pub(crate) async fn batch_vnodes(
        &self,
        ops: Vec<BatchOp>,
        vnodes: std::collections::BTreeMap<usize, u64>,
    ) -> Result<BatchResult> {
        let body = req::Batch {
            requests: ops,
            vnodes,
        };
        self.call("batch", &body, Retry::UnsentOnly).await
    }

    /// Sets indexed fields on every record matching `filter` (their values are merged into the
    /// stored JSON; each record gets its new etag). Triggers do not run.
    ///
    /// # Errors
    /// `NotIndexed` for a field that is not indexed, `InvalidQuery`, `BucketNotFound`.
    pub async fn update_objects(
        &self,
        bucket: &str,
        fields: serde_json::Map<String, Value>,
        filter: &str,
    ) -> Result<CountResult> {
        let body = req::UpdateObjects {
            bucket: bucket.to_owned(),
            fields,
            filter: filter.to_owned(),
        };
        self.call("updateObjects", &body, Retry::Idempotent).await
    }

    /// Deletes records matching `filter` (at most `limit`), running post triggers for each.
    ///
    /// # Errors
    /// `InvalidQuery`, `NotIndexed`, `BucketNotFound`.
    pub async fn delete_many(
        &self,
        bucket: &str,
        filter: &str,
        limit: Option<u64>,
    ) -> Result<CountResult> {
        let body = req::DeleteMany {
            bucket: bucket.to_owned(),
            filter: filter.to_owned(),
            limit,
        };
        self.call("deleteMany", &body, Retry::UnsentOnly).await
    }

    /// Fills the columns of indexes added by `updateBucket` for up to `count` records.
    /// Call until `processed == 0`.
    ///
    /// # Errors
    /// `BucketNotFound`.
    pub async fn reindex_objects(&self, bucket: &str, count: u64) -> Result<ReindexResult> {
        let body = req::Reindex {
            bucket: bucket.to_owned(),
            count,
        };
        self.call("reindexObjects", &body, Retry::Idempotent).await
    }

    /// Runs one SQL statement on the shard's primary (operators and tests only). Values are
    /// sent as text; rows come back as JSON objects.
    ///
    /// # Errors
    /// `InvalidQuery` when Postgres rejects the statement.
    pub async fn sql(&self, statement: &str, values: Vec<Value>) -> Result<Vec<Value>> {
        let body = req::Sql {
            statement: statement.to_owned(),
            values,
        };
        self.call("sql", &body, Retry::UnsentOnly).await
    }

    /// Fences `vnode` on this shard: from the return on, every write of its records here is
    /// refused with the retryable `NoDatabasePeersError` (operators only; see
    /// [`crate::reshard`]).
    ///
    /// # Errors
    /// `NotPermitted` for a caller that is not an operator.
    pub async fn vnode_fence(&self, vnode: u32, target: &str) -> Result<()> {
        let body = req::Vnode {
            vnode,
            target: Some(target.to_owned()),
        };
        self.call::<Value>("vnodeFence", &body, Retry::Idempotent)
            .await
            .map(drop)
    }

    /// Lifts the fence of `vnode` on this shard. Returns whether there was one.
    ///
    /// # Errors
    /// `NotPermitted` for a caller that is not an operator.
    pub async fn vnode_unfence(&self, vnode: u32) -> Result<bool> {
        let body = req::Vnode {
            vnode,
            target: None,
        };
        let v: Value = self.call("vnodeUnfence", &body, Retry::Idempotent).await?;
        Ok(v["lifted"].as_bool().unwrap_or(false))
    }

    /// Deletes every record of the fenced `vnode` on this shard, without triggers. Returns
    /// how many.
    ///
    /// # Errors
    /// `InvalidArgument` when the vnode is not fenced here.
    pub async fn vnode_purge(&self, vnode: u32) -> Result<u64> {
        let body = req::Vnode {
            vnode,
            target: None,
        };
        let v: Value = self.call("vnodePurge", &body, Retry::Idempotent).await?;
        Ok(v["purged"].as_u64().unwrap_or(0))
    }

    /// This shard's fences: `[{"vnode", "target", "since"}]`.
    ///
    /// # Errors
    /// `NotPermitted` for a caller that is not an operator.
    pub async fn vnode_fences(&self) -> Result<Value> {
        let body = req::Ping::default();
        self.call("vnodeFences", &body, Retry::Idempotent).await
    }

    /// Checks the server is up (and, with `deep`, that it has a writable primary).
    ///
    /// # Errors
    /// `Unavailable`, or `NoDatabasePeers` for a deep ping without a primary.
    pub async fn ping_opts(&self, deep: bool) -> Result<()> {
        let _: Value = self
            .call("ping", &req::Ping { deep }, Retry::Idempotent)
            .await?;
        Ok(())
    }

    /// A deep ping: the server answers and reaches its Postgres primary.
    ///
    /// # Errors
    /// As [`MorayClient::ping_opts`].
    pub async fn ping(&self) -> Result<()> {
        self.ping_opts(true).await
    }

    /// The server's API version.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn version(&self) -> Result<VersionInfo> {
        self.call("version", &serde_json::json!({}), Retry::Idempotent)
            .await
    }
}

/// A full error chain as one line (reqwest hides the cause, e.g. "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn error_from_response(resp: reqwest::Response) -> Error {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<WireError>(&bytes) {
        Ok(w) => Error::from_wire(w, status),
        Err(_) if status == 503 => Error::Unavailable {
            message: format!("HTTP 503: {}", String::from_utf8_lossy(&bytes)),
        },
        Err(_) => Error::Protocol {
            status,
            message: String::from_utf8_lossy(&bytes).chars().take(512).collect(),
        },
    }
}

/// A record line, or the error line a server sends when a stream fails after it started
/// (`{"error": {...}}`; a record line always starts with `{"bucket"`).
fn record_from_line(line: &[u8]) -> Result<ObjectRecord> {
    if line.starts_with(b"{\"error\"") {
        #[derive(serde::Deserialize)]
        struct ErrorLine {
            error: WireError,
        }
        let w = serde_json::from_slice::<ErrorLine>(line)
            .map_err(|e| Error::Protocol {
                status: 200,
                message: format!("undecodable error line: {e}"),
            })?
            .error;
        let status = Error::from_wire(w.clone(), 500).http_status();
        return Err(Error::from_wire(w, status));
    }
    serde_json::from_slice(line).map_err(|e| Error::Protocol {
        status: 200,
        message: format!("undecodable record: {e}"),
    })
}

/// Splits a response body into lines (without the newline), skipping blank ones.
fn json_lines(resp: reqwest::Response) -> impl Stream<Item = Result<Bytes>> + Send {
    let body = resp.bytes_stream();
    futures_util::stream::unfold(
        (Box::pin(body), BytesMut::new(), false),
        |(mut body, mut buf, mut done)| async move {
            loop {
                if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let mut line = buf.split_to(nl + 1);
                    line.truncate(nl);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some((Ok(line.freeze()), (body, buf, done)));
                }
                if done {
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    let rest = buf.split().freeze();
                    return Some((Ok(rest), (body, buf, done)));
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        done = true;
                        buf.clear();
                        let err = Error::Unavailable {
                            message: format!("findObjects stream broke: {}", error_chain(&e)),
                        };
                        return Some((Err(err), (body, buf, done)));
                    }
                    None => done = true,
                }
            }
        },
    )
}
