//! Shared test helpers: an in-process storage node on a temp dataset, reads and checks through
//! the typed client, raw HTTP, digests, random data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use manta_util::metrics::Metrics;
use md5::Digest as _;
use storage_api::{ClientError, Digests, ObjectKey, PutRequest, StorageClient};
use storage_node::dataset::DatasetSpec;
use storage_node::scrub::{ScrubConfig, ScrubReport, scrub_pass};
use storage_node::store::Store;
use storage_node::{Config, StorageNode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A storage node served in this process over real HTTP on a loopback port.
pub struct Node {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub client: StorageClient,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub root: PathBuf,
    pub shutdown: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<Result<(), storage_node::Error>>>,
    pub dir: Option<testkit::TestDir>,
}

impl Node {
    /// Starts a node on a fresh temp dir; `tweak` adjusts the config first.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Node {
        let dir = testkit::TestDir::new("stor").expect("temp dir");
        Node::start_in(dir, tweak).await
    }

    /// Starts a node on `dir/data`.
    pub async fn start_in(dir: testkit::TestDir, tweak: impl FnOnce(&mut Config)) -> Node {
        let mut config = loopback_config(DatasetSpec::Dir(dir.path().join("data")), "1.stor.test");
        config.drain = Duration::from_secs(2);
        tweak(&mut config);
        Node::serve(config, Some(dir)).await
    }

    /// Starts a node with `config` as given and serves it in the background; `dir`, when
    /// given, is kept until [`Node::stop`].
    pub async fn serve(config: Config, dir: Option<testkit::TestDir>) -> Node {
        let node = StorageNode::start(config)
            .await
            .expect("start storage node");
        let url = node.url();
        let shutdown = CancellationToken::new();
        let store = node.store();
        let metrics = node.metrics();
        let root = node.dataset().root().to_owned();
        let addr = node.local_addr();
        let task = tokio::spawn(node.serve(shutdown.clone()));
        Node {
            client: StorageClient::new(url.clone()).unwrap(),
            url,
            addr,
            store,
            metrics,
            root,
            shutdown,
            task: Some(task),
            dir,
        }
    }

    /// Stops the node and waits for it; gives back its temp dir, if it has one.
    pub async fn stop(mut self) -> Option<testkit::TestDir> {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("serve task").expect("serve");
        }
        self.dir.take()
    }

    /// Files currently in the temp area.
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        list(&self.root.join("tmp"))
    }

    /// The node's URL of object `k`.
    pub fn object_url(&self, k: &ObjectKey) -> String {
        format!("{}{k}", self.url)
    }

    /// Stores `body` as `k` through the typed client.
    pub async fn put(&self, k: &ObjectKey, body: impl Into<Bytes>) -> Digests {
        self.client.put(k, PutRequest::bytes(body)).await.unwrap()
    }

    /// Opens the file that holds `k` for writing, to damage it behind the node's back.
    pub fn open_object(&self, k: &ObjectKey) -> std::fs::File {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.store.object_path(k))
            .unwrap()
    }

    /// Cuts the file that holds `k` to `len` bytes behind the node's back.
    pub fn truncate_object(&self, k: &ObjectKey, len: u64) {
        self.open_object(k).set_len(len).unwrap();
    }

    /// Runs one scrub pass over the node's store with `config`.
    pub async fn scrub(&self, config: &ScrubConfig) -> ScrubReport {
        scrub_pass(
            &self.store,
            config,
            &self.metrics,
            &CancellationToken::new(),
        )
        .await
        .unwrap()
    }
}

/// A config for a node on `spec` named `storage_id`, listening on a free loopback port, with
/// the background scrub off.
pub fn loopback_config(spec: DatasetSpec, storage_id: &str) -> Config {
    let mut config = Config::new(spec, storage_id);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.scrub = None;
    config
}

/// The whole of object `k`, read through the typed client.
pub async fn read_all(client: &StorageClient, k: &ObjectKey) -> Bytes {
    client.get(k, None).await.unwrap().bytes().await.unwrap()
}

/// Whether the node says it has no object `k`.
pub async fn is_missing(client: &StorageClient, k: &ObjectKey) -> bool {
    matches!(client.head(k).await, Err(ClientError::NotFound))
}

/// Whether the node refuses to serve `k` because its copy is quarantined.
pub async fn is_quarantined(client: &StorageClient, k: &ObjectKey) -> bool {
    matches!(client.get(k, None).await, Err(ClientError::Quarantined))
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Entries of a directory (empty when missing).
pub fn list(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Polls `f` every 20 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh random key.
pub fn key() -> ObjectKey {
    ObjectKey {
        owner: uuid::Uuid::new_v4(),
        id: manta_types::ObjectId::random(),
    }
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    storage_node::dataset::conformance::noise(len, seed)
}

/// Opens a connection to `addr` and writes `head` to it as it is (request line, headers and
/// the blank line, maybe the start of a body); the caller goes on from there.
pub async fn send_raw(addr: std::net::SocketAddr, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Starts a raw `PUT` of `k` that declares `len` bytes, with the extra header lines `headers`
/// (each ending in CRLF), and sends the first bytes of the body, `start`; the caller goes on
/// from there.
pub async fn start_put(
    addr: std::net::SocketAddr,
    k: &ObjectKey,
    len: u64,
    headers: &str,
    start: &[u8],
) -> TcpStream {
    let head = format!("PUT {k} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n{headers}\r\n");
    let mut s = send_raw(addr, &head).await;
    s.write_all(start).await.unwrap();
    s
}

/// A raw HTTP/1.1 exchange: sends `head` (request line + headers, without the blank line) and
/// `body`, then reads the whole response (the request says `Connection: close`).
pub async fn raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    let mut s = send_raw(addr, &format!("{head}\r\nConnection: close\r\n\r\n")).await;
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw response.
pub fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Checks that a raw response is an error with `status` and the JSON `code`.
pub fn assert_refused(resp: &str, status: u16, code: &str) {
    assert_eq!(status_of(resp), status, "{resp}");
    assert_eq!(json_of(resp)["code"], code, "{resp}");
}

/// The JSON body of a raw response.
pub fn json_of(resp: &str) -> serde_json::Value {
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// The `code` of a JSON error answer.
pub async fn code_of(resp: reqwest::Response) -> serde_json::Value {
    resp.json::<serde_json::Value>().await.unwrap()["code"].take()
}

/// Sends `req` and reads the JSON body of the answer.
pub async fn json<T: serde::de::DeserializeOwned>(req: reqwest::RequestBuilder) -> T {
    req.send().await.unwrap().json().await.unwrap()
}

/// `body` in `size`-byte pieces, the items of a streamed upload.
pub fn chunks(body: &[u8], size: usize) -> Vec<Result<Bytes, std::io::Error>> {
    body.chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

/// The MD5 of `data`.
pub fn md5_of(data: &[u8]) -> [u8; 16] {
    md5::Md5::digest(data).into()
}

/// The MD5 of `data` in base64, as `Content-MD5` carries it.
pub fn md5_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5_of(data))
}

/// The SHA-256 of `data` in hex.
pub fn sha_hex(data: &[u8]) -> String {
    storage_api::digest::to_hex(&sha2::Sha256::digest(data))
}

/// The hex CRC32C of `data`, as nodes report it.
pub fn crc_hex(data: &[u8]) -> String {
    storage_api::blocks::crc32c_hex(storage_api::blocks::crc32c(data))
}
