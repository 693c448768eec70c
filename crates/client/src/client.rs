//! The client and its calls.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use manta_auth::KeySigner;
use manta_auth::httpsig::{SignatureParams, format_authorization};
use manta_auth::presign::PresignRequest;
use manta_types::{ErrorBody, MantaPath, expand_tilde};
use serde::Deserialize;

use crate::error::Error;
use crate::transfer;

/// Where the store is and who the client acts as.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL (`MANTA_URL`).
    pub url: String,
    /// Account login (`MANTA_USER`).
    pub user: String,
    /// Sub-user (`MANTA_SUBUSER`): requests are signed as `/<user>/<subuser>/keys/<fp>`.
    pub subuser: Option<String>,
    /// Key fingerprint (`MANTA_KEY_ID`, MD5 or SHA256 form); the first usable key when absent.
    pub key_id: Option<String>,
    /// Accept any TLS certificate (`MANTA_TLS_INSECURE=1`), for self-signed test regions.
    pub insecure: bool,
    /// Where private keys are looked for (`~/.ssh`); `ssh-agent` is tried after.
    pub ssh_dir: PathBuf,
    /// Send no credentials (`MANTA_NO_AUTH`), e.g. for public reads.
    pub no_auth: bool,
    /// Longest wait for a connection or for the next bytes of an answer. Transfers may take
    /// any time as long as bytes keep moving.
    pub timeout: Duration,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// True for an environment flag that is set to anything but `0`/`false`/`no`/`off`.
pub(crate) fn truthy(v: Option<&str>) -> bool {
    v.is_some_and(|v| {
        let v = v.trim();
        !(v.is_empty()
            || v == "0"
            || v.eq_ignore_ascii_case("false")
            || v.eq_ignore_ascii_case("no")
            || v.eq_ignore_ascii_case("off"))
    })
}

impl ClientConfig {
    /// Reads `MANTA_URL`, `MANTA_USER`, `MANTA_SUBUSER`, `MANTA_KEY_ID`, `MANTA_TLS_INSECURE`,
    /// `MANTA_NO_AUTH` and `HOME`.
    ///
    /// # Errors
    /// When `MANTA_URL` or `MANTA_USER` is missing.
    pub fn from_env() -> Result<ClientConfig, Error> {
        let url = env("MANTA_URL").ok_or_else(|| Error::Config("MANTA_URL is not set".into()))?;
        let user =
            env("MANTA_USER").ok_or_else(|| Error::Config("MANTA_USER is not set".into()))?;
        let home = env("HOME").unwrap_or_else(|| "/".into());
        Ok(ClientConfig {
            url,
            user,
            subuser: env("MANTA_SUBUSER"),
            key_id: env("MANTA_KEY_ID"),
            insecure: truthy(env("MANTA_TLS_INSECURE").as_deref()),
            ssh_dir: PathBuf::from(home).join(".ssh"),
            no_auth: truthy(env("MANTA_NO_AUTH").as_deref()),
            timeout: Duration::from_secs(60),
        })
    }
}

/// A transfer progress callback: called with the number of bytes moved so far by the current
/// attempt (it starts again from 0 when a request is retried).
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(u64) + Send + Sync>);

impl Progress {
    /// Wraps a callback.
    pub fn new(f: impl Fn(u64) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(f))
    }

    /// Reports a position.
    pub fn report(&self, pos: u64) {
        (self.0)(pos);
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// Options of a `PUT` of an object.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Copies (`durability-level`); the server's default when absent.
    pub copies: Option<u32>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-MD5` (base64) for the server to verify.
    pub content_md5: Option<String>,
    /// Other headers (`m-*`, `cache-control`, `if-match`, ...).
    pub headers: Vec<(String, String)>,
    /// Body length when streaming (chunked encoding without it).
    pub content_length: Option<u64>,
    /// Told how many bytes of the body have been read so far.
    pub progress: Option<Progress>,
}

/// What a `PUT` answered.
#[derive(Debug, Clone)]
pub struct PutResult {
    /// The new etag (the object id).
    pub etag: Option<String>,
    /// `Computed-MD5`.
    pub computed_md5: Option<String>,
}

/// Options of a `GET`.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// A `Range` header value.
    pub range: Option<String>,
    /// Other headers.
    pub headers: Vec<(String, String)>,
}

/// Directory or object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    /// A directory.
    Directory,
    /// An object.
    Object,
}

/// One line of a directory listing.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirEntry {
    /// Name within the directory.
    pub name: String,
    /// Directory or object.
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Last modification, ISO 8601.
    pub mtime: String,
    /// Size (objects).
    pub size: Option<u64>,
    /// Etag (objects).
    pub etag: Option<String>,
    /// Content type (objects).
    pub content_type: Option<String>,
    /// Base64 MD5 (objects).
    #[serde(rename = "contentMD5")]
    pub content_md5: Option<String>,
    /// Number of copies (objects).
    pub durability: Option<u32>,
    /// The listing line exactly as the server sent it (the tools print it with `-j`, keeping
    /// every field, known or not, in the server's order).
    #[serde(skip)]
    pub raw: String,
}

impl DirEntry {
    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryType::Directory
    }
}

/// Options of a listing page.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Page size (server default 256, at most 1024).
    pub limit: Option<u32>,
    /// Start at this name (inclusive) or, with `sort_mtime`, this time.
    pub marker: Option<String>,
    /// Newest first.
    pub sort_mtime: bool,
    /// Reverse the order.
    pub reverse: bool,
}

/// What `HEAD` says about an entry.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// The path.
    pub path: String,
    /// Every response header.
    pub headers: HeaderMap,
}

impl ObjectInfo {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// True when the entry is a directory.
    pub fn is_directory(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.contains("type=directory"))
    }

    /// The size of an object.
    pub fn size(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }
}

/// A request body. Everything but a one-shot stream can be sent again when a request is
/// retried.
pub(crate) enum Payload {
    /// In memory.
    Bytes(Bytes),
    /// In memory, in pieces (sent without joining them).
    Parts(Arc<[Bytes]>),
    /// A local file, read again from the start on each attempt.
    File {
        path: PathBuf,
        /// Where the bytes start in the file, and how many there are.
        span: (u64, u64),
        progress: Option<Progress>,
    },
    /// A stream that can be sent once.
    Stream(Option<reqwest::Body>),
}

impl Payload {
    fn empty() -> Payload {
        Payload::Bytes(Bytes::new())
    }

    /// The body for the next attempt, and whether another attempt could send it again.
    fn body(&mut self) -> (reqwest::Body, bool) {
        match self {
            Payload::Bytes(b) => (reqwest::Body::from(b.clone()), true),
            Payload::Parts(parts) => {
                let parts = parts.clone();
                let s = futures_util::stream::iter(
                    (0..parts.len()).map(move |i| Ok::<Bytes, std::io::Error>(parts[i].clone())),
                );
                (reqwest::Body::wrap_stream(s), true)
            }
            Payload::File {
                path,
                span,
                progress,
            } => (
                transfer::file_body(path.clone(), *span, progress.clone()),
                true,
            ),
            Payload::Stream(s) => (
                s.take()
                    .unwrap_or_else(|| reqwest::Body::from(Bytes::new())),
                false,
            ),
        }
    }
}

/// Delay before retry number `attempt` (1-based): 250 ms doubling to at most 4 s, with up to
/// a quarter of jitter so clients that failed together do not retry together.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 250u64.saturating_mul(1 << attempt.saturating_sub(1).min(4));
    let base = base.min(4000);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    Duration::from_millis(base + nanos % (base / 4 + 1))
}

use manta_types::error::retryable_status;

/// The Manta API client. Cheap to clone (clones share the connection pool).
#[derive(Debug, Clone)]
pub struct MantaClient {
    http: reqwest::Client,
    base: String,
    host: String,
    user: String,
    subuser: Option<String>,
    roles: Vec<String>,
    signer: Option<Arc<KeySigner>>,
    retries: u32,
}

impl MantaClient {
    /// Builds a client, finding the signing key as the command line tools do.
    ///
    /// # Errors
    /// When no key is found (unless `no_auth`) or the URL is malformed.
    pub async fn new(cfg: ClientConfig) -> Result<MantaClient, Error> {
        let signer = if cfg.no_auth {
            None
        } else {
            Some(Arc::new(
                KeySigner::find(cfg.key_id.as_deref(), &cfg.ssh_dir).await?,
            ))
        };
        MantaClient::with_signer(cfg, signer)
    }

    /// Builds a client with an explicit signer (`None`: anonymous).
    ///
    /// # Errors
    /// When the URL is malformed.
    pub fn with_signer(
        cfg: ClientConfig,
        signer: Option<Arc<KeySigner>>,
    ) -> Result<MantaClient, Error> {
        let base = cfg.url.trim_end_matches('/').to_owned();
        let host = base
            .split_once("://")
            .filter(|(scheme, _)| *scheme == "http" || *scheme == "https")
            .map(|(_, r)| r.split('/').next().unwrap_or(r).to_owned())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                Error::Config(format!("MANTA_URL {:?} is not an http(s) URL", cfg.url))
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(cfg.timeout))
            .read_timeout(cfg.timeout)
            .tls_danger_accept_invalid_certs(cfg.insecure)
            // The API never redirects a client somewhere it should follow blindly.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("manta-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(MantaClient {
            http,
            base,
            host,
            user: cfg.user,
            subuser: cfg.subuser,
            roles: Vec::new(),
            signer,
            retries: 3,
        })
    }

    /// How many times an idempotent request is tried again after a connection failure or a
    /// 500/502/503/504 answer (default 3; 0 disables retries).
    pub fn with_retries(mut self, retries: u32) -> MantaClient {
        self.retries = retries;
        self
    }

    /// Roles to assume on every request (the `Role` header, `MANTA_ROLE`).
    pub fn with_roles(mut self, roles: Vec<String>) -> MantaClient {
        self.roles = roles;
        self
    }

    /// The retry budget of idempotent requests.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The account login.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Expands `~~` and validates a path.
    ///
    /// # Errors
    /// [`Error::InvalidPath`].
    pub fn path(&self, p: &str) -> Result<MantaPath, Error> {
        MantaPath::parse(&expand_tilde(p, &self.user))
            .map_err(|e| Error::InvalidPath(format!("{p}: {e}")))
    }

    fn key_id(&self, signer: &KeySigner) -> String {
        match &self.subuser {
            Some(s) => format!(
                "/{}/{s}/keys/{}",
                self.user,
                signer.public_key().md5_fingerprint()
            ),
            None => format!(
                "/{}/keys/{}",
                self.user,
                signer.public_key().md5_fingerprint()
            ),
        }
    }

    async fn sign_into(&self, h: &mut HeaderMap) -> Result<(), Error> {
        let date = manta_auth::http_date_now();
        h.insert(
            http::header::DATE,
            HeaderValue::from_str(&date).map_err(|e| Error::Config(e.to_string()))?,
        );
        if let Some(signer) = &self.signer {
            let sig = signer.sign(format!("date: {date}").as_bytes()).await?;
            let authz = format_authorization(&SignatureParams {
                key_id: self.key_id(signer),
                algorithm: signer.algorithm().to_string(),
                headers: vec!["date".into()],
                signature: sig,
            });
            h.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&authz).map_err(|e| Error::Config(e.to_string()))?,
            );
        }
        Ok(())
    }

    fn url_for(&self, path: &MantaPath, query: &[(&str, String)]) -> String {
        let mut url = format!("{}{}", self.base, path.to_url_path());
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        manta_auth::presign::rfc3986(k),
                        manta_auth::presign::rfc3986(v)
                    )
                })
                .collect();
            url.push('?');
            url.push_str(&q.join("&"));
        }
        url
    }

    fn headers_for(&self, headers: &[(String, String)]) -> Result<HeaderMap, Error> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|e| Error::Config(format!("header {k:?}: {e}")))?;
            let value = HeaderValue::from_str(v.trim())
                .map_err(|e| Error::Config(format!("header {k}: {e}")))?;
            h.insert(name, value);
        }
        if !self.roles.is_empty() && !h.contains_key("role") {
            let value = HeaderValue::from_str(&self.roles.join(","))
                .map_err(|e| Error::Config(format!("role: {e}")))?;
            h.insert("role", value);
        }
        Ok(h)
    }

    /// Sends a request, retrying what is safe to retry. Only 2xx and 304 answers are `Ok`.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &MantaPath,
        query: &[(&str, String)],
        headers: &[(String, String)],
        mut payload: Payload,
    ) -> Result<reqwest::Response, Error> {
        let url = self.url_for(path, query);
        let base_headers = self.headers_for(headers)?;
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::DELETE | Method::PUT | Method::OPTIONS
        );
        let mut attempt = 0;
        // Set when an earlier attempt may have reached the server before failing.
        let mut maybe_applied = false;
        loop {
            attempt += 1;
            let mut h = base_headers.clone();
            self.sign_into(&mut h).await?;
            let (body, replayable) = payload.body();
            let result = self
                .http
                .request(method.clone(), &url)
                .headers(h)
                .body(body)
                .send()
                .await;
            let may_retry = attempt <= self.retries && idempotent && replayable;
            match result {
                Ok(resp)
                    if resp.status().is_success()
                        || resp.status() == http::StatusCode::NOT_MODIFIED
                        || resp.status() == http::StatusCode::SWITCHING_PROTOCOLS =>
                {
                    return Ok(resp);
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if may_retry && retryable_status(status) {
                        tracing::debug!(status, attempt, %url, "retrying");
                        // A 5xx may come after the effect (a record committed whose
                        // acknowledgement Moray lost in a failover).
                        maybe_applied = true;
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    // A DELETE whose earlier attempt was cut off may have been applied already.
                    if status == 404 && maybe_applied && method == Method::DELETE {
                        return Ok(resp);
                    }
                    return Err(api_error(&method, status, resp, path).await);
                }
                Err(e) if may_retry && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                    tracing::debug!(error = %e, attempt, %url, "retrying");
                    maybe_applied |= !e.is_connect();
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => {
                    return Err(Error::Http {
                        path: path.to_string(),
                        source: e,
                    });
                }
            }
        }
    }

    fn put_headers(opts: &PutOptions) -> Vec<(String, String)> {
        let mut h = opts.headers.clone();
        if let Some(c) = opts.copies {
            h.push(("durability-level".into(), c.to_string()));
        }
        if !h
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            h.push((
                "content-type".into(),
                opts.content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into()),
            ));
        }
        if let Some(m) = &opts.content_md5 {
            h.push(("content-md5".into(), m.clone()));
        }
        if let Some(n) = opts.content_length {
            h.push(("content-length".into(), n.to_string()));
        }
        h
    }

    fn put_result(resp: &reqwest::Response) -> PutResult {
        let get = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        PutResult {
            etag: get("etag"),
            computed_md5: get("computed-md5"),
        }
    }

    /// Writes an object from memory (retried when safe).
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn put_bytes(
        &self,
        path: &str,
        data: impl Into<Bytes>,
        opts: PutOptions,
    ) -> Result<PutResult, Error> {
        let p = self.path(path)?;
        let data = data.into();
        let mut opts = opts;
        opts.content_length = Some(data.len() as u64);
        let resp = self
            .send(
                Method::PUT,
                &p,
                &[],
                &Self::put_headers(&opts),
                Payload::Bytes(data),
            )
            .await?;
        Ok(Self::put_result(&resp))
    }

    /// Writes an object from pieces held in memory, without joining them (retried when safe).
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn put_parts(
        &self,
        path: &str,
        parts: Vec<Bytes>,
        opts: PutOptions,
    ) -> Result<PutResult, Error> {
        let p = self.path(path)?;
        let mut opts = opts;
        opts.content_length = Some(parts.iter().map(|b| b.len() as u64).sum());
        let resp = self
            .send(
                Method::PUT,
                &p,
                &[],
                &Self::put_headers(&opts),
                Payload::Parts(parts.into()),
            )
            .await?;
        Ok(Self::put_result(&resp))
    }

    /// Writes an object from a local file, streaming it from a reader thread. The length is
    /// taken from the file when the upload starts; a file that shrinks meanwhile fails the
    /// upload, one that grows is sent up to that length. Retried when safe, reading the file
    /// again from the start.
    ///
    /// # Errors
    /// The server's refusal, a transport failure, or the file cannot be read.
    pub async fn put_file(
        &self,
        path: &str,
        local: &Path,
        opts: PutOptions,
    ) -> Result<PutResult, Error> {
        let meta = {
            let local = local.to_owned();
            manta_util::blocking(move || std::fs::metadata(local)).await?
        };
        if !meta.is_file() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a file", local.display()),
            )));
        }
        self.put_file_span(path, local, (0, meta.len()), opts).await
    }

    /// Writes an object from `len` bytes of a local file starting at `offset` (a member of an
    /// archive, say), streamed from a reader thread; retried when safe, reading those bytes
    /// again. A file that ends before them fails the upload.
    ///
    /// # Errors
    /// The server's refusal, a transport failure, or the file cannot be read.
    pub async fn put_file_span(
        &self,
        path: &str,
        local: &Path,
        (offset, len): (u64, u64),
        opts: PutOptions,
    ) -> Result<PutResult, Error> {
        let p = self.path(path)?;
        let mut opts = opts;
        opts.content_length = Some(len);
        let payload = Payload::File {
            path: local.to_owned(),
            span: (offset, len),
            progress: opts.progress.clone(),
        };
        let resp = self
            .send(Method::PUT, &p, &[], &Self::put_headers(&opts), payload)
            .await?;
        Ok(Self::put_result(&resp))
    }

    /// Writes an object from anything readable (stdin, a pipe), read on a blocking thread and
    /// streamed; chunked unless `opts.content_length` is given. Never retried: the bytes cannot
    /// be read again.
    ///
    /// # Errors
    /// The server's refusal, a transport failure, or a read error.
    pub async fn put_reader(
        &self,
        path: &str,
        reader: impl std::io::Read + Send + 'static,
        opts: PutOptions,
    ) -> Result<PutResult, Error> {
        let body = transfer::reader_body(reader, opts.content_length, opts.progress.clone());
        self.put_stream(path, body, opts).await
    }

    /// Writes an object from a stream (never retried). Without `opts.content_length` the body is
    /// sent chunked.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn put_stream(
        &self,
        path: &str,
        body: reqwest::Body,
        opts: PutOptions,
    ) -> Result<PutResult, Error> {
        let p = self.path(path)?;
        let resp = self
            .send(
                Method::PUT,
                &p,
                &[],
                &Self::put_headers(&opts),
                Payload::Stream(Some(body)),
            )
            .await?;
        Ok(Self::put_result(&resp))
    }

    /// Reads an object; the response streams its body.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn get(&self, path: &str, opts: GetOptions) -> Result<reqwest::Response, Error> {
        let p = self.path(path)?;
        let mut h = opts.headers.clone();
        if let Some(r) = opts.range {
            h.push(("range".into(), r));
        }
        self.send(Method::GET, &p, &[], &h, Payload::empty()).await
    }

    /// Reads a whole object into memory (small objects, tests).
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn get_bytes(&self, path: &str) -> Result<Bytes, Error> {
        let resp = self.get(path, GetOptions::default()).await?;
        resp.bytes().await.map_err(|e| Error::Http {
            path: path.to_owned(),
            source: e,
        })
    }

    /// `HEAD` of an entry. A failed `HEAD` carries no body; when its status alone does not
    /// say what went wrong, the path is read with `GET` to learn the server's error code.
    ///
    /// # Errors
    /// The server's refusal (`ResourceNotFound`, ...) or a transport failure.
    pub async fn info(&self, path: &str) -> Result<ObjectInfo, Error> {
        self.info_with(path, &[]).await
    }

    /// `HEAD` with extra headers (conditions, `role`).
    ///
    /// # Errors
    /// As [`MantaClient::info`].
    pub async fn info_with(
        &self,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<ObjectInfo, Error> {
        let p = self.path(path)?;
        match self
            .send(Method::HEAD, &p, &[], headers, Payload::empty())
            .await
        {
            Ok(resp) => Ok(ObjectInfo {
                path: p.to_string(),
                headers: resp.headers().clone(),
            }),
            Err(e @ Error::Api { .. }) if e.code().is_none() && e.status() != Some(304) => {
                // Learn the code from a GET's body; keep the HEAD's error if that succeeds.
                match self
                    .send(
                        Method::GET,
                        &p,
                        &[("limit", "1".into())],
                        headers,
                        Payload::empty(),
                    )
                    .await
                {
                    Err(g @ Error::Api { .. }) if g.code().is_some() => Err(g),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a directory (succeeds when it exists).
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn mkdir(&self, path: &str) -> Result<(), Error> {
        self.mkdir_with(path, &[]).await
    }

    /// Creates a directory with extra headers.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn mkdir_with(&self, path: &str, headers: &[(String, String)]) -> Result<(), Error> {
        let p = self.path(path)?;
        self.mkdir_path(&p, headers).await
    }

    async fn mkdir_path(&self, p: &MantaPath, headers: &[(String, String)]) -> Result<(), Error> {
        let mut h = headers.to_vec();
        h.push((
            "content-type".into(),
            "application/json; type=directory".into(),
        ));
        self.send(Method::PUT, p, &[], &h, Payload::empty())
            .await
            .map(|_| ())
    }

    /// Creates a directory and any missing parents below the area root. The directory itself
    /// is tried first, so an existing parent costs one request, not one per level.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn mkdirp(&self, path: &str) -> Result<(), Error> {
        self.mkdirp_with(path, &[]).await
    }

    /// [`MantaClient::mkdirp`] with headers for the directory itself (parents get none).
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn mkdirp_with(&self, path: &str, headers: &[(String, String)]) -> Result<(), Error> {
        let p = self.path(path)?;
        if p.is_account_root() {
            return Err(Error::InvalidPath(format!(
                "{path}: cannot create an account root"
            )));
        }
        // Walk up until a directory can be made, then come back down.
        let mut missing = Vec::new();
        let mut cur = p.clone();
        loop {
            if cur.is_area_root() {
                break;
            }
            let h = if cur == p { headers } else { &[] };
            match self.mkdir_path(&cur, h).await {
                Ok(()) => break,
                Err(e) if e.code_str() == Some("DirectoryDoesNotExist") => {
                    let parent = cur.parent().ok_or(e)?;
                    missing.push(cur);
                    cur = parent;
                }
                Err(e) => return Err(e),
            }
        }
        while let Some(dir) = missing.pop() {
            let h = if dir == p { headers } else { &[] };
            self.mkdir_path(&dir, h).await?;
        }
        Ok(())
    }

    /// One page of a directory listing, and the directory's total entry count.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn ls(&self, path: &str, opts: &ListOptions) -> Result<(Vec<DirEntry>, u64), Error> {
        let p = self.path(path)?;
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(l) = opts.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(m) = &opts.marker {
            q.push(("marker", m.clone()));
        }
        if opts.sort_mtime {
            q.push(("sort", "mtime".into()));
        }
        if opts.reverse {
            q.push(("sort_order", "reverse".into()));
        }
        let resp = self
            .send(Method::GET, &p, &q, &[], Payload::empty())
            .await?;
        let total = resp
            .headers()
            .get("result-set-size")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let is_dir = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("type=directory"));
        if !is_dir {
            return Err(Error::Api {
                status: 400,
                code: "NotADirectory".into(),
                message: format!("{p} is not a directory"),
                path: p.to_string(),
            });
        }
        let text = resp.text().await.map_err(|e| Error::Http {
            path: path.to_owned(),
            source: e,
        })?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut e: DirEntry = serde_json::from_str(line)
                .map_err(|e| Error::Config(format!("malformed listing line {line:?}: {e}")))?;
            e.raw = line.to_owned();
            out.push(e);
        }
        Ok((out, total))
    }

    /// Every entry of a directory, by name, following markers page by page.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn ls_all(&self, path: &str) -> Result<Vec<DirEntry>, Error> {
        let mut all: Vec<DirEntry> = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let opts = ListOptions {
                limit: Some(1024),
                marker: marker.clone(),
                ..ListOptions::default()
            };
            let (page, _) = self.ls(path, &opts).await?;
            let n = page.len();
            // The marker entry itself comes back first on every page after the first.
            let fresh: Vec<DirEntry> = page
                .into_iter()
                .filter(|e| Some(&e.name) != marker.as_ref())
                .collect();
            let last = fresh.last().map(|e| e.name.clone());
            all.extend(fresh);
            match last {
                Some(l) if n >= 1024 => marker = Some(l),
                _ => return Ok(all),
            }
        }
    }

    /// Deletes an object or an empty directory.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn rm(&self, path: &str) -> Result<(), Error> {
        let p = self.path(path)?;
        self.send(Method::DELETE, &p, &[], &[], Payload::empty())
            .await
            .map(|_| ())
    }

    /// Makes `dst` a SnapLink of `src`.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn ln(&self, src: &str, dst: &str) -> Result<PutResult, Error> {
        self.ln_with(src, dst, &[]).await
    }

    /// Makes `dst` a SnapLink of `src`, with extra headers (`if-none-match: *`, `role-tag`).
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn ln_with(
        &self,
        src: &str,
        dst: &str,
        headers: &[(String, String)],
    ) -> Result<PutResult, Error> {
        let s = self.path(src)?;
        let d = self.path(dst)?;
        let mut h = headers.to_vec();
        h.push(("content-type".into(), "application/json; type=link".into()));
        h.push(("location".into(), s.to_url_path()));
        let resp = self
            .send(Method::PUT, &d, &[], &h, Payload::empty())
            .await?;
        Ok(Self::put_result(&resp))
    }

    /// Replaces an entry's stored headers (`PUT ?metadata=true`).
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn chattr(&self, path: &str, headers: &[(String, String)]) -> Result<(), Error> {
        let p = self.path(path)?;
        self.send(
            Method::PUT,
            &p,
            &[("metadata", "true".into())],
            headers,
            Payload::empty(),
        )
        .await
        .map(|_| ())
    }

    /// A presigned URL for `methods` on `path`, valid until `expires`.
    ///
    /// # Errors
    /// When there is no key to sign with.
    pub async fn sign_url(
        &self,
        path: &str,
        methods: &[&str],
        expires: SystemTime,
    ) -> Result<String, Error> {
        let p = self.path(path)?;
        let signer = self
            .signer
            .as_ref()
            .ok_or_else(|| Error::Config("no key to sign with".into()))?;
        let key_id = self.key_id(signer);
        let alg = signer.algorithm().to_string();
        let url_path = p.to_url_path();
        // A sub-user's URL acts in the roles this client takes (`--role`), signed with it.
        let roles = self.roles.join(",");
        let req = PresignRequest {
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            host: &self.host,
            path: &url_path,
            key_id: &key_id,
            algorithm: &alg,
            expires: expires
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            role: Some(roles.as_str()),
        };
        let (params, line) = req.to_sign();
        let sig = signer.sign(line.as_bytes()).await?;
        Ok(format!("{}{}", self.base, req.url_path(&params, &sig)))
    }

    /// A raw signed request, for calls this client has no method for.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<reqwest::Response, Error> {
        let p = self.path(path)?;
        self.send(method, &p, query, headers, Payload::Bytes(body))
            .await
    }
}

/// Turns an error answer into [`Error::Api`], reading the `{code, message}` body when there is
/// one.
async fn api_error(
    method: &Method,
    status: u16,
    resp: reqwest::Response,
    path: &MantaPath,
) -> Error {
    let text = if *method == Method::HEAD {
        String::new()
    } else {
        resp.text().await.unwrap_or_default()
    };
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => (b.code, b.message),
        Err(_) if status == 404 => ("ResourceNotFound".into(), format!("{path} was not found")),
        Err(_) => {
            let reason = http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error");
            let msg = if text.trim().is_empty() {
                reason.to_owned()
            } else {
                text.trim().to_owned()
            };
            (format!("HTTP{status}"), msg)
        }
    };
    Error::Api {
        status,
        code,
        message,
        path: path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let first = backoff(1);
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(313));
        let third = backoff(3);
        assert!(third >= Duration::from_millis(1000) && third <= Duration::from_millis(1251));
        for n in 5..40 {
            let d = backoff(n);
            assert!(d >= Duration::from_millis(4000) && d <= Duration::from_millis(5001));
        }
    }

    #[test]
    fn truthy_flags() {
        for v in ["1", "true", "yes", "TRUE", "on"] {
            assert!(truthy(Some(v)), "{v}");
        }
        for v in ["", "0", "false", "False", "no", "off"] {
            assert!(!truthy(Some(v)), "{v}");
        }
        assert!(!truthy(None));
    }
}
