//! Shared test helpers: an in-process storage node on a temp dataset, raw HTTP, random data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manta_util::metrics::Metrics;
use storage_api::ObjectKey;
use storage_api::StorageClient;
use storage_node::dataset::DatasetSpec;
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
        let mut config = Config::new(DatasetSpec::Dir(dir.path().join("data")), "1.stor.test");
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.scrub = None;
        config.drain = Duration::from_secs(2);
        tweak(&mut config);
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
            dir: Some(dir),
        }
    }

    /// Stops the node and waits for it.
    pub async fn stop(mut self) -> testkit::TestDir {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("serve task").expect("serve");
        }
        self.dir.take().expect("the dir lives until stop")
    }

    /// Files currently in the temp area.
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        list(&self.root.join("tmp"))
    }
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

/// A raw HTTP/1.1 exchange: sends `head` (request line + headers, without the blank line) and
/// `body`, then reads the whole response (the request says `Connection: close`).
pub async fn raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
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

/// The JSON body of a raw response.
pub fn json_of(resp: &str) -> serde_json::Value {
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}
