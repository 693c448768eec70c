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
use http_body_util::BodyExt as _;
use manta_types::record::{EMPTY_MD5, ObjectInfo};
use manta_types::{ErrorCode, SharkRef};
use md5::Digest as _;
use rand::seq::SliceRandom as _;
use tracing::{error, warn};

use crate::api::headers::BodyLength;
use crate::error::{ApiResult, err};
use crate::shark::{PutStream, SharkError};
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
/// With [`crate::shark::NODE_QUEUE`] this bounds an upload's memory: the front door holds
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

async fn abort_all(streams: Vec<PutStream>) {
    futures_util::future::join_all(streams.into_iter().map(PutStream::abort)).await;
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
        let attempts = futures_util::future::join_all(set.iter().map(|n| {
            fd.sharks
                .start_put(n, creator, object_id, len.exact, content_md5)
        }))
        .await;
        let mut ok = Vec::new();
        for (node, a) in set.iter().zip(attempts) {
            match a {
                Ok(s) => ok.push(s),
                Err(e) => {
                    warn!(error = %e, node = %node.storage_id, "storage node unavailable; placing elsewhere");
                    fd.picker.mark_down(&node.storage_id);
                    excluded.insert(node.storage_id.clone());
                }
            }
        }
        if ok.len() == set.len() {
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
    pump(
        fd,
        streams,
        creator,
        object_id,
        len,
        limit,
        content_md5,
        body,
    )
    .await
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
    let attempts = futures_util::future::join_all(nodes.iter().map(|n| {
        fd.sharks
            .start_put(n, creator, object_id, len.exact, content_md5)
    }))
    .await;
    let mut ok = Vec::new();
    let mut failed = None;
    for (node, a) in nodes.iter().zip(attempts) {
        match a {
            Ok(s) => ok.push(s),
            Err(e) => {
                warn!(error = %e, node = %node.storage_id, "storage node of a fixed set unavailable");
                fd.picker.mark_down(&node.storage_id);
                failed = Some(node.storage_id.clone());
            }
        }
    }
    if let Some(node) = failed {
        abort_all(ok).await;
        return Err(err(
            ErrorCode::ServiceUnavailable,
            format!("storage node {node} is unavailable; retry"),
        ));
    }
    pump(fd, ok, creator, object_id, len, limit, content_md5, body).await
}

/// Streams `body` to every node of `streams` (already connected) and collects the outcome.
#[allow(clippy::too_many_arguments)]
async fn pump<S, E>(
    fd: &Arc<Frontdoor>,
    streams: Vec<PutStream>,
    creator: &str,
    object_id: &str,
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
            futures_util::future::join_all(streams.iter().map(|s| s.send(chunk.clone()))).await;
        if sent.iter().any(Result::is_err) {
            // A node failed mid-stream. Abort every copy (ending the bodies normally would
            // let the others commit a short object), and remove anything one committed anyway.
            let nodes: Vec<_> = streams.iter().map(|s| s.node.clone()).collect();
            warn!(
                object_id,
                "a storage node failed mid-upload; aborting every copy"
            );
            // A failed node has already answered (its body channel is closed): a full disk
            // is the client's NotEnoughSpace, and the node is left out of placement a while.
            let mut full = false;
            let mut rest = Vec::new();
            for (s, r) in streams.into_iter().zip(&sent) {
                if r.is_err() {
                    let node = s.node.storage_id.clone();
                    if let Ok(Err(SharkError::Status { status, .. })) =
                        tokio::time::timeout(std::time::Duration::from_secs(1), s.finish()).await
                        && status == StatusCode::INSUFFICIENT_STORAGE
                    {
                        node_full(fd, &node);
                        full = true;
                    }
                } else {
                    rest.push(s);
                }
            }
            abort_all(rest).await;
            discard(fd, &nodes, creator, object_id).await;
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
    let results = futures_util::future::join_all(streams.into_iter().map(PutStream::finish)).await;
    let mut sha256 = None;
    let mut failure = None;
    for r in &results {
        match r {
            Ok(stored) if stored.md5 == md5 => sha256 = sha256.or(stored.sha256.clone()),
            Ok(stored) => {
                error!(ours = %md5, theirs = %stored.md5, "a storage node stored different bytes than were sent");
                failure = Some(err(
                    ErrorCode::InternalError,
                    "an unexpected error occurred",
                ));
            }
            Err(SharkError::Md5Mismatch { .. }) => {
                failure = Some(err(
                    ErrorCode::ContentMD5Mismatch,
                    format!(
                        "Content-MD5 expected {}, but was {md5}",
                        content_md5.unwrap_or_default()
                    ),
                ));
            }
            Err(SharkError::Status { node, status })
                if *status == StatusCode::INSUFFICIENT_STORAGE =>
            {
                node_full(fd, node);
                failure = Some(out_of_space());
            }
            Err(e) => {
                warn!(error = %e, "storage node failed to store its copy");
                failure.get_or_insert_with(|| {
                    err(
                        ErrorCode::ServiceUnavailable,
                        "a storage node failed during the upload; retry",
                    )
                });
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
        discard(fd, &nodes, creator, object_id).await;
        return Err(f);
    }
    if total == 0 {
        // A chunked upload that turned out empty stores no bytes, like a zero-length one.
        discard(fd, &nodes, creator, object_id).await;
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
pub async fn discard(
    fd: &Frontdoor,
    nodes: &[crate::picker::Node],
    creator: &str,
    object_id: &str,
) {
    futures_util::future::join_all(
        nodes
            .iter()
            .map(|n| fd.sharks.delete(n, creator, object_id)),
    )
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
/// the body. `range` is passed to the node as is.
///
/// # Errors
/// `ServiceUnavailable` when no copy answers.
pub async fn fetch(
    fd: &Arc<Frontdoor>,
    obj: &ObjectInfo,
    creator: &str,
    range: Option<&str>,
) -> ApiResult<(StatusCode, Option<String>, ByteStream)> {
    let mut copies = obj.sharks.clone();
    copies.shuffle(&mut rand::rng());
    if fd.picker.ensure_loaded().await.is_err() {
        warn!("cannot read storage heartbeats; reads use the last known addresses");
    }
    let oid = obj.object_id.to_string();
    let mut last = String::from("no copies");
    for s in copies {
        let Some(node) = fd.picker.node(&s.manta_storage_id) else {
            last = format!("{} is unknown", s.manta_storage_id);
            continue;
        };
        match fd.sharks.get(&node, creator, &oid, range).await {
            Ok(resp) => {
                let status = resp.status();
                let content_range = resp
                    .headers()
                    .get(http::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let verify = range.is_none() && status == StatusCode::OK;
                let expect = match &obj.sha256 {
                    Some(sha) => (Digest::Sha256, sha.clone()),
                    None => (Digest::Md5, obj.content_md5.clone()),
                };
                let body = verified_stream(
                    fd.clone(),
                    resp.into_body(),
                    verify.then_some(expect),
                    s.manta_storage_id.clone(),
                    oid.clone(),
                );
                return Ok((status, content_range, body));
            }
            Err(e) => {
                warn!(error = %e, "copy unavailable; trying another");
                last = e.to_string();
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
    body: hyper::body::Incoming,
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
    body: hyper::body::Incoming,
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
            match tokio::time::timeout(timeout, st.body.frame()).await {
                Err(_) => {
                    st.done = true;
                    return Some((Err(io::Error::other("storage node stalled")), st));
                }
                Ok(Some(Err(e))) => {
                    st.done = true;
                    return Some((Err(io::Error::other(e.to_string())), st));
                }
                Ok(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
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
