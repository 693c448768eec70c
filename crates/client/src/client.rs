//! The client and its calls.

use std::path::PathBuf;
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

/// Where the store is and who the client acts as.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL (`MANTA_URL`).
    pub url: String,
    /// Account login (`MANTA_USER`).
    pub user: String,
    /// Sub-user (`MANTA_SUBUSER`).
    pub subuser: Option<String>,
    /// Key fingerprint (`MANTA_KEY_ID`); the first usable key when absent.
    pub key_id: Option<String>,
    /// Accept any TLS certificate (`MANTA_TLS_INSECURE=1`).
    pub insecure: bool,
    /// Where private keys are looked for (`~/.ssh`).
    pub ssh_dir: PathBuf,
    /// Send no credentials (`MANTA_NO_AUTH`), e.g. for public reads.
    pub no_auth: bool,
    /// Per-request timeout for everything but body transfer.
    pub timeout: Duration,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
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
        let truthy =
            |v: Option<String>| v.is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"));
        let home = env("HOME").unwrap_or_else(|| "/".into());
        Ok(ClientConfig {
            url,
            user,
            subuser: env("MANTA_SUBUSER"),
            key_id: env("MANTA_KEY_ID"),
            insecure: truthy(env("MANTA_TLS_INSECURE")),
            ssh_dir: PathBuf::from(home).join(".ssh"),
            no_auth: truthy(env("MANTA_NO_AUTH")),
            timeout: Duration::from_secs(60),
        })
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

/// A body that can be sent again on retry, or a stream that cannot.
enum Payload {
    Bytes(Bytes),
    Stream(Option<reqwest::Body>),
}

/// The Manta API client.
#[derive(Debug, Clone)]
pub struct MantaClient {
    http: reqwest::Client,
    base: String,
    host: String,
    user: String,
    subuser: Option<String>,
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
            .map(|(_, r)| r.split('/').next().unwrap_or(r).to_owned())
            .ok_or_else(|| {
                Error::Config(format!("MANTA_URL {:?} is not an http(s) URL", cfg.url))
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(cfg.timeout)
            .danger_accept_invalid_certs(cfg.insecure)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(MantaClient {
            http,
            base,
            host,
            user: cfg.user,
            subuser: cfg.subuser,
            signer,
            retries: 3,
        })
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

    async fn send(
        &self,
        method: Method,
        path: &MantaPath,
        query: &[(&str, String)],
        headers: &[(String, String)],
        mut payload: Payload,
    ) -> Result<reqwest::Response, Error> {
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
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::DELETE | Method::PUT
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| Error::Config(format!("header {k}: {e}")))?;
                h.insert(
                    name,
                    HeaderValue::from_str(v)
                        .map_err(|e| Error::Config(format!("header {k}: {e}")))?,
                );
            }
            self.sign_into(&mut h).await?;
            let (body, replayable) = match &mut payload {
                Payload::Bytes(b) => (reqwest::Body::from(b.clone()), true),
                Payload::Stream(s) => (
                    s.take()
                        .unwrap_or_else(|| reqwest::Body::from(Bytes::new())),
                    false,
                ),
            };
            let result = self
                .http
                .request(method.clone(), &url)
                .headers(h)
                .body(body)
                .send()
                .await;
            let retry = attempt <= self.retries && idempotent && replayable;
            match result {
                Ok(resp)
                    if resp.status().is_success()
                        || resp.status() == http::StatusCode::NOT_MODIFIED =>
                {
                    return Ok(resp);
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if retry && status == 503 {
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                        continue;
                    }
                    let text = resp.text().await.unwrap_or_default();
                    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
                        Ok(b) => (b.code, b.message),
                        Err(_) => (format!("HTTP{status}"), text),
                    };
                    return Err(Error::Api {
                        status,
                        code,
                        message,
                        path: path.to_string(),
                    });
                }
                Err(e) if retry && (e.is_connect() || e.is_timeout()) => {
                    tracing::debug!(error = %e, attempt, "retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
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
        h.push((
            "content-type".into(),
            opts.content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
        ));
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
        self.send(Method::GET, &p, &[], &h, Payload::Bytes(Bytes::new()))
            .await
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

    /// `HEAD` of an entry.
    ///
    /// # Errors
    /// The server's refusal (`ResourceNotFound`, ...) or a transport failure.
    pub async fn info(&self, path: &str) -> Result<ObjectInfo, Error> {
        let p = self.path(path)?;
        let resp = self
            .send(Method::HEAD, &p, &[], &[], Payload::Bytes(Bytes::new()))
            .await?;
        Ok(ObjectInfo {
            path: p.to_string(),
            headers: resp.headers().clone(),
        })
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
        let mut h = headers.to_vec();
        h.push((
            "content-type".into(),
            "application/json; type=directory".into(),
        ));
        self.send(Method::PUT, &p, &[], &h, Payload::Bytes(Bytes::new()))
            .await
            .map(|_| ())
    }

    /// Creates a directory and any missing parents below the area root.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn mkdirp(&self, path: &str) -> Result<(), Error> {
        let p = self.path(path)?;
        let segs = p.segments().to_vec();
        let Some(area) = p.area() else {
            return Err(Error::InvalidPath(format!(
                "{path}: cannot create an account root"
            )));
        };
        let mut cur =
            MantaPath::area_root(p.login(), area).map_err(|e| Error::InvalidPath(e.to_string()))?;
        for s in segs {
            cur = cur
                .join(&s)
                .map_err(|e| Error::InvalidPath(e.to_string()))?;
            self.mkdir(&cur.to_string()).await?;
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
            .send(Method::GET, &p, &q, &[], Payload::Bytes(Bytes::new()))
            .await?;
        let total = resp
            .headers()
            .get("result-set-size")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let text = resp.text().await.map_err(|e| Error::Http {
            path: path.to_owned(),
            source: e,
        })?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let e: DirEntry = serde_json::from_str(line)
                .map_err(|e| Error::Config(format!("malformed listing line {line:?}: {e}")))?;
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
        self.send(Method::DELETE, &p, &[], &[], Payload::Bytes(Bytes::new()))
            .await
            .map(|_| ())
    }

    /// Makes `dst` a SnapLink of `src`.
    ///
    /// # Errors
    /// The server's refusal or a transport failure.
    pub async fn ln(&self, src: &str, dst: &str) -> Result<PutResult, Error> {
        let s = self.path(src)?;
        let d = self.path(dst)?;
        let h = vec![
            ("content-type".into(), "application/json; type=link".into()),
            ("location".into(), s.to_url_path()),
        ];
        let resp = self
            .send(Method::PUT, &d, &[], &h, Payload::Bytes(Bytes::new()))
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
            Payload::Bytes(Bytes::new()),
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
