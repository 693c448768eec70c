//! The data path, shared by every API the front door serves: streaming an upload to N storage
//! nodes at once, and reading an object from one of its copies.
//!
//! Writes: choose candidate sets (the [`Picker`](crate::picker::Picker)), connect to every node
//! of a set before reading a byte of the body (falling back to the next set), then pass each
//! chunk to every node and to an MD5 hasher on the blocking pool; the client is read only as
//! fast as the slowest node accepts. Only when every node has fsynced and reported the same MD5
//! as ours is the write a success; the caller then commits metadata. On any failure every node
//! is told to drop what it has.
//!
//! Reads: try the copies in random order until one answers, failing over before the first byte;
//! stream it while hashing, and if a full read's MD5 differs from the record, break the
//! response instead of finishing it, so a corrupt copy is never served as good.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http::StatusCode;
use manta_types::record::{EMPTY_MD5, ObjectInfo};
use manta_types::{ErrorCode, HasErrorCode as _, MantaError, SharkRef};
use md5::Digest as _;
use rand::seq::SliceRandom as _;
use storage_api::{ByteRange, ClientError, ObjectKey, PutStream};
use tracing::{error, warn};

use crate::api::headers::BodyLength;
use crate::error::{ApiResult, err};
use crate::picker::Node;
use crate::state::Frontdoor;

/// What a successful upload stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The nodes holding a copy (empty for zero bytes).
    pub sharks: Vec<SharkRef>,
    /// Base64 MD5 of the body.
    pub md5: String,
    /// Bytes received.
    pub size: u64,
    /// Hex SHA-256, as the nodes computed it.
    pub sha256: Option<String>,
}

/// Which digest a [`Hasher`] computes, and how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    /// MD5, base64 (what the API reports and `Content-MD5` checks).
    Md5,
    /// SHA-256, hex. Reads verify with it when the record has one: this CPU family computes it
    /// in hardware, several times faster than MD5.
    Sha256,
}

/// Hashes chunks on the blocking pool, off the async workers.
/// Body chunks (each up to a socket read, a few hundred KiB) waiting for the hashing thread.
/// With [`storage_api::client::NODE_QUEUE`] this bounds an upload's memory: the front door holds
/// about a megabyte per upload in flight, however fast the client and however slow a node.
const HASH_QUEUE: usize = 2;

struct Hasher {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    done: tokio::task::JoinHandle<String>,
}

impl Hasher {
    fn start(kind: Digest) -> Hasher {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
        let done = tokio::task::spawn_blocking(move || match kind {
            Digest::Md5 => {
                use base64::Engine as _;
                let mut h = md5::Md5::new();
                while let Some(b) = rx.blocking_recv() {
                    h.update(&b);
                }
                base64::engine::general_purpose::STANDARD.encode(h.finalize())
            }
            Digest::Sha256 => {
                use sha2::Digest as _;
                let mut h = sha2::Sha256::new();
                while let Some(b) = rx.blocking_recv() {
                    h.update(&b);
                }
                h.finalize().iter().map(|b| format!("{b:02x}")).collect()
            }
        });
        Hasher { tx, done }
    }

    async fn push(&self, b: Bytes) {
        let _ = self.tx.send(b).await;
    }

    async fn finish(self) -> Option<String> {
        drop(self.tx);
        self.done.await.ok()
    }
}

/// A node answered that its disk is full: leave it out of placement for a while.
fn node_full(fd: &Frontdoor, node: &str) {
    warn!(node, "storage node is full");
    fd.picker.mark_down(node);
}

fn out_of_space() -> manta_types::MantaError {
    err(
        ErrorCode::NotEnoughSpace,
        "a storage node ran out of space during the upload",
    )
}

/// An upload to one node in progress.
struct NodeUpload {
    node: Node,
    put: PutStream,
}

async fn abort_all(streams: Vec<NodeUpload>) {
    futures_util::future::join_all(streams.into_iter().map(|s| s.put.abort())).await;
}

/// The key of object `object_id` of account `creator` on a storage node.
fn object_key(creator: &str, object_id: &str) -> ApiResult<ObjectKey> {
    ObjectKey::parse(creator, object_id).map_err(|e| err(ErrorCode::InternalError, e.0))
}

/// Connects to every node of `nodes` and starts the upload of `key` on each; the failures are
/// returned beside the uploads started.
async fn start_all(
    fd: &Frontdoor,
    nodes: &[Node],
    key: &ObjectKey,
    len: BodyLength,
    content_md5: Option<&str>,
) -> (Vec<NodeUpload>, Vec<(Node, ClientError)>) {
    let attempts = futures_util::future::join_all(nodes.iter().map(|n| async move {
        fd.sharks
            .node(&n.url)
            .start_put(key, len.exact, content_md5)
            .await
    }))
    .await;
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (node, a) in nodes.iter().zip(attempts) {
        match a {
            Ok(put) => ok.push(NodeUpload {
                node: node.clone(),
                put,
            }),
            Err(e) => failed.push((node.clone(), e)),
        }
    }
    (ok, failed)
}

/// What a node's failure to store its copy means for the client: the one place the front
/// door turns a storage client error into an API error. `md5` is what the body hashed to.
fn upload_failure(
    fd: &Frontdoor,
    node: &Node,
    e: &ClientError,
    md5: &str,
    content_md5: Option<&str>,
) -> MantaError {
    match e.code() {
        ErrorCode::ContentMD5Mismatch => err(
            ErrorCode::ContentMD5Mismatch,
            format!(
                "Content-MD5 expected {}, but was {md5}",
                content_md5.unwrap_or_default()
            ),
        ),
        ErrorCode::NotEnoughSpace => {
            node_full(fd, &node.storage_id);
            out_of_space()
        }
        _ => {
            warn!(error = %e, node = %node.storage_id, "storage node failed to store its copy");
            err(
                ErrorCode::ServiceUnavailable,
                "a storage node failed during the upload; retry",
            )
        }
    }
}

/// Streams `body` to `copies` storage nodes as object `object_id` of account `creator`.
///
/// # Errors
/// `NotEnoughSpace` when no set of nodes fits; `ServiceUnavailable` when no set answers or a
/// node fails mid-stream; `UploadTimeout`, `UploadAbandoned`, `MaxContentLengthExceeded`,
/// `ContentMD5Mismatch` as the client's body dictates.
pub async fn store<S, E>(
    fd: &Arc<Frontdoor>,
    creator: &str,
    object_id: &str,
    copies: u32,
    len: BodyLength,
    content_md5: Option<&str>,
    body: S,
) -> ApiResult<Stored>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let cfg = &fd.cfg;
    let mut limit = len.exact.or(len.max).unwrap_or(cfg.max_streaming_size);
    // A body of unknown length is placed where at least `chunked_reserve` is free, and may then
    // grow to the free space of the fullest node chosen (and no further than the limit).
    let placement = len
        .exact
        .or(len.max)
        .unwrap_or(cfg.chunked_reserve.min(limit));
    if len.exact == Some(0) {
        return empty_upload(content_md5);
    }
    let key = object_key(creator, object_id)?;
    fd.picker
        .ensure_loaded()
        .await
        .map_err(|e| crate::error::from_moray(e, "manta_storage"))?;
    let mut streams = None;
    let mut excluded = std::collections::HashSet::new();
    for _attempt in 0..3 {
        let set = match fd.picker.choose(copies as usize, placement, &excluded) {
            Ok(s) => s,
            // Nodes were left out because they failed: that is unavailability, not space.
            Err(_) if !excluded.is_empty() => break,
            Err(e) => return Err(e),
        };
        let (ok, failed) = start_all(fd, &set, &key, len, content_md5).await;
        for (node, e) in &failed {
            warn!(error = %e, node = %node.storage_id, "storage node unavailable; placing elsewhere");
            fd.picker.mark_down(&node.storage_id);
            excluded.insert(node.storage_id.clone());
        }
        if failed.is_empty() {
            if len.exact.is_none() && len.max.is_none() {
                let room = set
                    .iter()
                    .map(|n| n.available_mb.saturating_mul(1024 * 1024))
                    .min()
                    .unwrap_or(0);
                limit = limit.min(room);
            }
            streams = Some(ok);
            break;
        }
        abort_all(ok).await;
    }
    let Some(streams) = streams else {
        return Err(err(
            ErrorCode::ServiceUnavailable,
            "No storage nodes available for this request",
        ));
    };
    pump(fd, streams, &key, len, limit, content_md5, body).await
}

/// What an upload of zero bytes stores: nothing, anywhere.
fn empty_upload(content_md5: Option<&str>) -> ApiResult<Stored> {
    if content_md5.is_some_and(|m| m != EMPTY_MD5) {
        return Err(err(
            ErrorCode::ContentMD5Mismatch,
            format!(
                "Content-MD5 expected {}, but was {EMPTY_MD5}",
                content_md5.unwrap_or_default()
            ),
        ));
    }
    Ok(Stored {
        sharks: Vec::new(),
        md5: EMPTY_MD5.into(),
        size: 0,
        sha256: Some(EMPTY_SHA256.into()),
    })
}

/// Like [`store`], but on exactly `nodes` (no other set is tried): the S3 API's multipart
/// parts, which must all live on the nodes chosen when the upload began so that each node can
/// join them locally.
///
/// # Errors
/// `ServiceUnavailable` when any of `nodes` cannot be reached or fails mid-stream (the nodes
/// that were reached are told to drop what they have); otherwise as [`store`].
pub async fn store_on<S, E>(
    fd: &Arc<Frontdoor>,
    nodes: &[crate::picker::Node],
    creator: &str,
    object_id: &str,
    len: BodyLength,
    content_md5: Option<&str>,
    body: S,
) -> ApiResult<Stored>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let limit = len.exact.or(len.max).unwrap_or(fd.cfg.max_streaming_size);
    if len.exact == Some(0) {
        return empty_upload(content_md5);
    }
    let key = object_key(creator, object_id)?;
    let (ok, failed) = start_all(fd, nodes, &key, len, content_md5).await;
    for (node, e) in &failed {
        warn!(error = %e, node = %node.storage_id, "storage node of a fixed set unavailable");
        fd.picker.mark_down(&node.storage_id);
    }
    if let Some((node, _)) = failed.last() {
        abort_all(ok).await;
        return Err(err(
            ErrorCode::ServiceUnavailable,
            format!("storage node {} is unavailable; retry", node.storage_id),
        ));
    }
    pump(fd, ok, &key, len, limit, content_md5, body).await
}

/// Streams `body` to every node of `streams` (already connected) and collects the outcome.
async fn pump<S, E>(
    fd: &Arc<Frontdoor>,
    streams: Vec<NodeUpload>,
    key: &ObjectKey,
    len: BodyLength,
    limit: u64,
    content_md5: Option<&str>,
    body: S,
) -> ApiResult<Stored>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let cfg = &fd.cfg;
    let hasher = Hasher::start(Digest::Md5);
    let mut body = body;
    let mut total = 0u64;
    loop {
        let next = tokio::time::timeout(cfg.data_timeout, body.next()).await;
        let chunk = match next {
            Err(_) => {
                abort_all(streams).await;
                return Err(err(
                    ErrorCode::UploadTimeout,
                    "request took too long to send data",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                abort_all(streams).await;
                warn!(error = %e, "client went away mid-upload");
                return Err(err(
                    ErrorCode::UploadAbandoned,
                    "request was aborted prematurely by the client",
                ));
            }
            Ok(Some(Ok(c))) => c,
        };
        if chunk.is_empty() {
            continue;
        }
        total += chunk.len() as u64;
        if total > limit {
            abort_all(streams).await;
            return Err(err(
                ErrorCode::MaxContentLengthExceeded,
                format!("request has exceeded {limit} bytes"),
            ));
        }
        hasher.push(chunk.clone()).await;
        let sent =
            futures_util::future::join_all(streams.iter().map(|s| s.put.send(chunk.clone()))).await;
        if sent.iter().any(Result::is_err) {
            // A node failed mid-stream. Abort every copy (ending the bodies normally would
            // let the others commit a short object), and remove anything one committed anyway.
            let nodes: Vec<_> = streams.iter().map(|s| s.node.clone()).collect();
            warn!(
                object_id = %key.id,
                "a storage node failed mid-upload; aborting every copy"
            );
            // A failed node has already answered (its body channel is closed): a full disk
            // is the client's NotEnoughSpace, and the node is left out of placement a while.
            let mut full = false;
            let mut rest = Vec::new();
            for (s, r) in streams.into_iter().zip(&sent) {
                if r.is_err() {
                    let node = s.node.storage_id.clone();
                    if let Ok(Err(e)) =
                        tokio::time::timeout(std::time::Duration::from_secs(1), s.put.finish())
                            .await
                        && e.code() == ErrorCode::NotEnoughSpace
                    {
                        node_full(fd, &node);
                        full = true;
                    }
                } else {
                    rest.push(s);
                }
            }
            abort_all(rest).await;
            discard_key(fd, &nodes, key).await;
            return Err(if full {
                out_of_space()
            } else {
                err(
                    ErrorCode::ServiceUnavailable,
                    "a storage node failed during the upload; retry",
                )
            });
        }
        fd.metrics.inc_by(
            "frontdoor_bytes_in_total",
            "Object bytes received from clients.",
            &[],
            chunk.len() as f64,
        );
    }
    if let Some(exact) = len.exact
        && total != exact
    {
        abort_all(streams).await;
        return Err(err(
            ErrorCode::UploadAbandoned,
            "request was aborted prematurely by the client",
        ));
    }
    let md5 = hasher
        .finish()
        .await
        .ok_or_else(|| err(ErrorCode::InternalError, "hashing failed"))?;
    let nodes: Vec<_> = streams.iter().map(|s| s.node.clone()).collect();
    let results = futures_util::future::join_all(streams.into_iter().map(|s| s.put.finish())).await;
    let mut sha256 = None;
    let mut failure = None;
    for (node, r) in nodes.iter().zip(&results) {
        match r {
            Ok(stored) if stored.md5_base64() == md5 => {
                sha256 = sha256.or(Some(stored.sha256_hex()));
            }
            Ok(stored) => {
                error!(ours = %md5, theirs = %stored.md5_base64(), "a storage node stored different bytes than were sent");
                failure = Some(err(
                    ErrorCode::InternalError,
                    "an unexpected error occurred",
                ));
            }
            Err(e) => {
                let f = upload_failure(fd, node, e, &md5, content_md5);
                if f.code == ErrorCode::ServiceUnavailable {
                    failure.get_or_insert(f);
                } else {
                    failure = Some(f);
                }
            }
        }
    }
    if failure.is_none()
        && let Some(want) = content_md5
        && want != md5
    {
        failure = Some(err(
            ErrorCode::ContentMD5Mismatch,
            format!("Content-MD5 expected {want}, but was {md5}"),
        ));
    }
    if let Some(f) = failure {
        discard_key(fd, &nodes, key).await;
        return Err(f);
    }
    if total == 0 {
        // A chunked upload that turned out empty stores no bytes, like a zero-length one.
        discard_key(fd, &nodes, key).await;
        return Ok(Stored {
            sharks: Vec::new(),
            md5: EMPTY_MD5.into(),
            size: 0,
            sha256: Some(EMPTY_SHA256.into()),
        });
    }
    let sharks = nodes
        .iter()
        .map(|n| SharkRef {
            datacenter: n.datacenter.clone(),
            manta_storage_id: n.storage_id.clone(),
        })
        .collect();
    Ok(Stored {
        sharks,
        md5,
        size: total,
        sha256,
    })
}

/// SHA-256 of zero bytes, hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Best-effort removal of copies that no record will point at.
pub async fn discard(fd: &Frontdoor, nodes: &[Node], creator: &str, object_id: &str) {
    // A key the nodes cannot parse was never stored on them.
    if let Ok(key) = ObjectKey::parse(creator, object_id) {
        discard_key(fd, nodes, &key).await;
    }
}

async fn discard_key(fd: &Frontdoor, nodes: &[Node], key: &ObjectKey) {
    futures_util::future::join_all(nodes.iter().map(|n| async move {
        let _ = fd.sharks.node(&n.url).delete(key).await;
    }))
    .await;
}

/// Best-effort removal of an object's copies by storage id.
pub async fn discard_refs(fd: &Frontdoor, sharks: &[SharkRef], creator: &str, object_id: &str) {
    let nodes: Vec<_> = sharks
        .iter()
        .filter_map(|s| fd.picker.node(&s.manta_storage_id))
        .collect();
    discard(fd, &nodes, creator, object_id).await;
}

/// A byte stream read from a storage node.
pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Opens a read of an object: the status (200, 206 or 416), the node's `Content-Range`, and
/// the body. `range` is passed to the node.
///
/// # Errors
/// `ServiceUnavailable` when no copy answers.
pub async fn fetch(
    fd: &Arc<Frontdoor>,
    obj: &ObjectInfo,
    creator: &str,
    range: Option<ByteRange>,
) -> ApiResult<(StatusCode, Option<String>, ByteStream)> {
    let mut copies = obj.sharks.clone();
    copies.shuffle(&mut rand::rng());
    if fd.picker.ensure_loaded().await.is_err() {
        warn!("cannot read storage heartbeats; reads use the last known addresses");
    }
    let oid = obj.object_id.to_string();
    let key = object_key(creator, &oid)?;
    let mut last = String::from("no copies");
    for s in copies {
        let Some(node) = fd.picker.node(&s.manta_storage_id) else {
            last = format!("{} is unknown", s.manta_storage_id);
            continue;
        };
        match fd.sharks.node(&node.url).get(&key, range).await {
            Ok(resp) => {
                let status = resp.status();
                let content_range = resp.content_range();
                let verify = range.is_none() && status == StatusCode::OK;
                let expect = match &obj.sha256 {
                    Some(sha) => (Digest::Sha256, sha.clone()),
                    None => (Digest::Md5, obj.content_md5.clone()),
                };
                let body = verified_stream(
                    fd.clone(),
                    resp.into_stream(),
                    verify.then_some(expect),
                    s.manta_storage_id.clone(),
                    oid.clone(),
                );
                return Ok((status, content_range, body));
            }
            // The node's copy is shorter than the record says: no other copy will do better.
            Err(ClientError::RangeNotSatisfiable { size }) => {
                let content_range = size.map(|n| format!("bytes */{n}"));
                let empty: ByteStream = Box::pin(futures_util::stream::empty());
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, content_range, empty));
            }
            Err(e) => {
                warn!(error = %e, node = %s.manta_storage_id, "copy unavailable; trying another");
                last = format!("{}: {e}", s.manta_storage_id);
            }
        }
    }
    Err(err(
        ErrorCode::ServiceUnavailable,
        format!("no storage node holding a copy answered ({last})"),
    ))
}

/// State of a read in progress.
struct Reading {
    body: storage_api::client::BodyStream,
    hasher: Option<Hasher>,
    expect: Option<String>,
    /// The latest chunk, held back until the next one arrives (or, for the last chunk, until
    /// the checksum has been verified), so a copy that fails its checksum never completes.
    pending: Option<Bytes>,
    fd: Arc<Frontdoor>,
    node: String,
    object_id: String,
    done: bool,
}

fn verified_stream(
    fd: Arc<Frontdoor>,
    body: storage_api::client::BodyStream,
    expect: Option<(Digest, String)>,
    node: String,
    object_id: String,
) -> ByteStream {
    let hasher = expect.as_ref().map(|(kind, _)| Hasher::start(*kind));
    let st = Reading {
        body,
        hasher,
        expect: expect.map(|(_, v)| v),
        pending: None,
        fd,
        node,
        object_id,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let timeout = st.fd.cfg.data_timeout;
        loop {
            match tokio::time::timeout(timeout, st.body.next()).await {
                Err(_) => {
                    st.done = true;
                    return Some((Err(io::Error::other("storage node stalled")), st));
                }
                Ok(Some(Err(e))) => {
                    st.done = true;
                    return Some((Err(io::Error::other(e.to_string())), st));
                }
                Ok(Some(Ok(data))) => {
                    if data.is_empty() {
                        continue;
                    }
                    if let Some(h) = &st.hasher {
                        h.push(data.clone()).await;
                    }
                    let out = st.pending.replace(data);
                    if let Some(out) = out {
                        st.fd.metrics.inc_by(
                            "frontdoor_bytes_out_total",
                            "Object bytes sent to clients.",
                            &[],
                            out.len() as f64,
                        );
                        return Some((Ok(out), st));
                    }
                }
                Ok(None) => {
                    st.done = true;
                    if let (Some(h), Some(want)) = (st.hasher.take(), st.expect.clone()) {
                        let got = h.finish().await;
                        if got.as_deref() != Some(want.as_str()) {
                            error!(node = %st.node, object_id = %st.object_id, expected = %want, got = ?got,
                                "copy failed its checksum while being served; response cut");
                            st.fd.metrics.inc(
                                "frontdoor_corrupt_reads_total",
                                "Reads cut because the copy failed its checksum.",
                                &[],
                            );
                            return Some((Err(io::Error::other("checksum mismatch")), st));
                        }
                    }
                    let out = st.pending.take()?;
                    st.fd.metrics.inc_by(
                        "frontdoor_bytes_out_total",
                        "Object bytes sent to clients.",
                        &[],
                        out.len() as f64,
                    );
                    return Some((Ok(out), st));
                }
            }
        }
    }))
}
