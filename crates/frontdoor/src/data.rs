//! The data path, shared by every API the front door serves: streaming an upload to N storage
//! nodes at once, and reading an object from one of its copies.
//!
//! Writes: choose candidate sets (the [`Picker`](crate::picker::Picker)), connect to every node
//! of a set before reading a byte of the body (falling back to the next set), then pass each
//! chunk to every node and to an MD5 hasher on the blocking pool; the client is read only as
//! fast as the slowest node accepts. Only when every node has fsynced and reported the same MD5
//! as ours is the write a success. The bytes then come back as an [`Uncommitted`] upload: the
//! caller builds the record ([`Uncommitted::record`], the one builder of a new object's
//! record) and hands its own Moray write to [`Uncommitted::commit`], which discards the bytes
//! on every node when Moray refuses that write. On any failure before that, every node is told
//! to drop what it has. So no record points at bytes that were not stored, and no bytes are
//! kept that no record points at, but for a write whose outcome is unknown (a timeout, an
//! unavailable metadata tier): its bytes are kept, logged and counted, since the record may
//! have landed ([`WriteFailure`]).
//!
//! Reads: try the copies in random order until one answers, failing over before the first byte;
//! stream it while hashing, and if a full read's MD5 differs from the record, break the
//! response instead of finishing it, so a corrupt copy is never served as good.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http::StatusCode;
use manta_types::record::{EMPTY_MD5, EntryKind, ObjectInfo, RECORD_VERSION};
use manta_types::{ErrorCode, HasErrorCode as _, MantaError, MetadataRecord, ObjectId, SharkRef};
use md5::Digest as _;
use rand::seq::SliceRandom as _;
use storage_api::blocks::{crc32c_append, crc32c_hex, parse_crc32c_hex};
use storage_api::{ByteRange, ClientError, CommitRequest, CommitResult, ObjectKey, PutStream};
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
    /// CRC32C of the body (8 hex digits): what every node's block sums added up to.
    pub crc32c: Option<String>,
}

impl Stored {
    /// What an upload of zero bytes stores: nothing, anywhere.
    pub fn empty() -> Stored {
        Stored {
            sharks: Vec::new(),
            md5: EMPTY_MD5.into(),
            size: 0,
            crc32c: Some(crc32c_hex(0)),
        }
    }
}

/// Which digests a [`Hasher`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    /// An upload's: MD5 (base64; what the API reports and `Content-MD5` checks) and CRC32C
    /// (what the nodes' block sums must add up to).
    Upload,
    /// SHA-256, hex: checks a read of an object written before CRC32C block sums.
    Sha256,
    /// MD5, base64: checks a read of an object with neither CRC32C nor SHA-256.
    Md5,
}

/// What a [`Hasher`] computed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Sums {
    /// The MD5 (base64) or SHA-256 (hex) asked for.
    digest: String,
    /// CRC32C (uploads).
    crc32c: u32,
}

/// Body chunks (each up to a socket read, a few hundred KiB) waiting for the hashing thread.
/// With [`storage_api::client::NODE_QUEUE`] this bounds an upload's memory: the front door holds
/// about a megabyte per upload in flight, however fast the client and however slow a node.
const HASH_QUEUE: usize = 2;

/// Hashes chunks on the blocking pool, off the async workers (MD5 and SHA-256 are slow enough
/// to matter there; CRC32C alone is not, and reads check it inline).
struct Hasher {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    done: tokio::task::JoinHandle<Sums>,
}

impl Hasher {
    fn start(kind: Digest) -> Hasher {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
        let done = tokio::task::spawn_blocking(move || match kind {
            Digest::Upload | Digest::Md5 => {
                use base64::Engine as _;
                let mut h = md5::Md5::new();
                let mut crc = 0u32;
                let upload = kind == Digest::Upload;
                while let Some(b) = rx.blocking_recv() {
                    h.update(&b);
                    if upload {
                        crc = crc32c_append(crc, &b);
                    }
                }
                Sums {
                    digest: base64::engine::general_purpose::STANDARD.encode(h.finalize()),
                    crc32c: crc,
                }
            }
            Digest::Sha256 => {
                use sha2::Digest as _;
                let mut h = sha2::Sha256::new();
                while let Some(b) = rx.blocking_recv() {
                    h.update(&b);
                }
                Sums {
                    digest: storage_api::digest::to_hex(&h.finalize()),
                    crc32c: 0,
                }
            }
        });
        Hasher { tx, done }
    }

    async fn push(&self, b: Bytes) {
        let _ = self.tx.send(b).await;
    }

    async fn finish(self) -> Option<Sums> {
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
) -> (Vec<NodeUpload>, Vec<(Node, ClientError)>) {
    // The nodes are not asked to check `Content-MD5`: the front door computes the MD5 (once) and
    // checks it; a node's block sums must add up to the CRC32C of what was sent.
    let attempts = futures_util::future::join_all(
        nodes
            .iter()
            .map(|n| async move { fd.sharks.node(&n.url).start_put(key, len.exact, None).await }),
    )
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
/// door turns a storage client error into an API error. (Nodes are never asked to check a
/// `Content-MD5`: the front door checks it, in [`finish_copies`].)
fn upload_failure(fd: &Frontdoor, node: &Node, e: &ClientError) -> MantaError {
    match e.code() {
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

/// A request body as the data path reads it: chunks of bytes, or an error (shown in the
/// log) that ends the upload.
pub trait UploadBody: Stream<Item = Result<Bytes, <Self as UploadBody>::Error>> + Unpin {
    /// Why the body ended early.
    type Error: std::fmt::Display;
}

impl<S, E> UploadBody for S
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Error = E;
}

/// Streams `body` to `copies` storage nodes as a new object (a fresh object id) of account
/// `creator`, and hands the stored bytes back uncommitted: the caller writes the record
/// through [`Uncommitted::commit`].
///
/// # Errors
/// `NotEnoughSpace` when no set of nodes fits; `ServiceUnavailable` when no set answers or a
/// node fails mid-stream; `UploadTimeout`, `UploadAbandoned`, `MaxContentLengthExceeded`,
/// `ContentMD5Mismatch` as the client's body dictates.
pub async fn store(
    fd: &Arc<Frontdoor>,
    creator: &str,
    copies: u32,
    len: BodyLength,
    content_md5: Option<&str>,
    body: impl UploadBody,
) -> ApiResult<Uncommitted> {
    let cfg = &fd.cfg;
    let limit = len.exact.or(len.max).unwrap_or(cfg.max_streaming_size);
    // A body of unknown length is placed where at least `chunked_reserve` is free, and may then
    // grow to the free space of the fullest node chosen (and no further than the limit).
    let placement = len
        .exact
        .or(len.max)
        .unwrap_or(cfg.chunked_reserve.min(limit));
    let object_id = ObjectId::random();
    if len.exact == Some(0) {
        return empty_upload(fd, creator, object_id, content_md5);
    }
    let key = object_key(creator, &object_id.to_string())?;
    let (streams, reservation, limit) = fd
        .step(
            "put",
            "place",
            place(fd, copies, len, limit, placement, &key),
        )
        .await?;
    let nodes: Vec<_> = streams.iter().map(|s| s.node.clone()).collect();
    let stored = fd
        .step(
            "put",
            "stream",
            pump(fd, streams, &key, len, limit, content_md5, body),
        )
        .await?;
    drop(reservation);
    Ok(Uncommitted::adopt(fd, creator, object_id, nodes, stored))
}

/// Chooses the nodes of a new upload of `key` and connects to each (trying up to three sets),
/// reserving `placement` bytes on them. Answers the uploads started, the reservation, and the
/// limit on the body's size (lowered, for a body of unknown length, to the room on the
/// fullest node chosen).
async fn place(
    fd: &Arc<Frontdoor>,
    copies: u32,
    len: BodyLength,
    mut limit: u64,
    placement: u64,
    key: &ObjectKey,
) -> ApiResult<(Vec<NodeUpload>, crate::picker::Reservation, u64)> {
    fd.picker
        .ensure_loaded()
        .await
        .map_err(|e| crate::error::from_moray(e, "manta_storage"))?;
    let mut streams = None;
    let mut reservation = None;
    let mut excluded = std::collections::HashSet::new();
    for _attempt in 0..3 {
        let set = match fd.picker.choose(copies as usize, placement, &excluded) {
            Ok(s) => s,
            // Nodes were left out because they failed: that is unavailability, not space.
            Err(_) if !excluded.is_empty() => break,
            Err(e) => return Err(e),
        };
        // Counted against the nodes at once, so uploads placed meanwhile see it.
        reservation = Some(fd.picker.reserve(&set, placement));
        let (ok, failed) = start_all(fd, &set, key, len).await;
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
    match (streams, reservation) {
        (Some(streams), Some(reservation)) => Ok((streams, reservation, limit)),
        _ => Err(err(
            ErrorCode::ServiceUnavailable,
            "No storage nodes available for this request",
        )),
    }
}

/// An upload of zero bytes as object `object_id` of `creator`: nothing is stored, anywhere.
fn empty_upload(
    fd: &Arc<Frontdoor>,
    creator: &str,
    object_id: ObjectId,
    content_md5: Option<&str>,
) -> ApiResult<Uncommitted> {
    if content_md5.is_some_and(|m| m != EMPTY_MD5) {
        return Err(err(
            ErrorCode::ContentMD5Mismatch,
            format!(
                "Content-MD5 expected {}, but was {EMPTY_MD5}",
                content_md5.unwrap_or_default()
            ),
        ));
    }
    Ok(Uncommitted::adopt(
        fd,
        creator,
        object_id,
        Vec::new(),
        Stored::empty(),
    ))
}

/// Like [`store`], but on exactly `nodes` (no other set is tried): the S3 API's multipart
/// parts, which must all live on the nodes chosen when the upload began so that each node can
/// join them locally.
///
/// # Errors
/// `ServiceUnavailable` when any of `nodes` cannot be reached or fails mid-stream (the nodes
/// that were reached are told to drop what they have); otherwise as [`store`].
pub async fn store_on(
    fd: &Arc<Frontdoor>,
    nodes: &[crate::picker::Node],
    creator: &str,
    len: BodyLength,
    content_md5: Option<&str>,
    body: impl UploadBody,
) -> ApiResult<Uncommitted> {
    let limit = len.exact.or(len.max).unwrap_or(fd.cfg.max_streaming_size);
    let object_id = ObjectId::random();
    if len.exact == Some(0) {
        return empty_upload(fd, creator, object_id, content_md5);
    }
    let key = object_key(creator, &object_id.to_string())?;
    // The part's bytes count against its nodes like any upload's, so uploads placed meanwhile
    // go elsewhere when these nodes are filling up.
    let reservation = fd.picker.reserve(
        nodes,
        len.exact
            .or(len.max)
            .unwrap_or(fd.cfg.chunked_reserve.min(limit)),
    );
    let (ok, failed) = start_all(fd, nodes, &key, len).await;
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
    let stored = pump(fd, ok, &key, len, limit, content_md5, body).await?;
    drop(reservation);
    Ok(Uncommitted::adopt(
        fd,
        creator,
        object_id,
        nodes.to_vec(),
        stored,
    ))
}

/// Streams `body` to every node of `streams` (already connected) and collects the outcome:
/// relay the body ([`relay`]), then on a failure abort every copy, or else finish them and check
/// that every node stored what was sent ([`finish_copies`]).
async fn pump(
    fd: &Arc<Frontdoor>,
    streams: Vec<NodeUpload>,
    key: &ObjectKey,
    len: BodyLength,
    limit: u64,
    content_md5: Option<&str>,
    body: impl UploadBody,
) -> ApiResult<Stored> {
    let hasher = Hasher::start(Digest::Upload);
    let total = match relay(fd, &streams, &hasher, len, limit, body).await {
        Ok(total) => total,
        Err(Relayed::ClientFailed(e)) => {
            abort_all(streams).await;
            return Err(e);
        }
        Err(Relayed::NodeFailed(sent)) => return Err(node_failed(fd, streams, &sent, key).await),
    };
    let sums = hasher
        .finish()
        .await
        .ok_or_else(|| err(ErrorCode::InternalError, "hashing failed"))?;
    finish_copies(fd, streams, key, total, sums, content_md5).await
}

/// Why relaying a body stopped short.
enum Relayed {
    /// The client's side: it stalled, went away, sent too much or too little.
    ClientFailed(MantaError),
    /// A node refused a chunk: which sends failed, in the order of the streams.
    NodeFailed(Vec<bool>),
}

/// Passes each chunk of `body` to the hasher and to every stream, reading the client only as
/// fast as the slowest node takes it; answers the byte count once the body ends as announced.
async fn relay(
    fd: &Frontdoor,
    streams: &[NodeUpload],
    hasher: &Hasher,
    len: BodyLength,
    limit: u64,
    mut body: impl UploadBody,
) -> Result<u64, Relayed> {
    let abandoned = || {
        Relayed::ClientFailed(err(
            ErrorCode::UploadAbandoned,
            "request was aborted prematurely by the client",
        ))
    };
    let mut total = 0u64;
    loop {
        let chunk = match tokio::time::timeout(fd.cfg.data_timeout, body.next()).await {
            Err(_) => {
                return Err(Relayed::ClientFailed(err(
                    ErrorCode::UploadTimeout,
                    "request took too long to send data",
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                warn!(error = %e, "client went away mid-upload");
                return Err(abandoned());
            }
            Ok(Some(Ok(c))) => c,
        };
        if chunk.is_empty() {
            continue;
        }
        total += chunk.len() as u64;
        if total > limit {
            return Err(Relayed::ClientFailed(err(
                ErrorCode::MaxContentLengthExceeded,
                format!("request has exceeded {limit} bytes"),
            )));
        }
        hasher.push(chunk.clone()).await;
        let sent =
            futures_util::future::join_all(streams.iter().map(|s| s.put.send(chunk.clone()))).await;
        if sent.iter().any(Result::is_err) {
            return Err(Relayed::NodeFailed(
                sent.iter().map(Result::is_err).collect(),
            ));
        }
        fd.metrics.inc_by(
            "frontdoor_bytes_in_total",
            "Object bytes received from clients.",
            &[],
            chunk.len() as f64,
        );
    }
    match len.exact {
        Some(exact) if total != exact => Err(abandoned()),
        _ => Ok(total),
    }
}

/// A node failed mid-stream (`failed[i]` for stream `i`): aborts every copy (ending the bodies
/// normally would let the others commit a short object) and removes anything one committed
/// anyway. A failed node has already answered (its body channel is closed): a full disk is the
/// client's `NotEnoughSpace`, and that node is left out of placement a while.
async fn node_failed(
    fd: &Frontdoor,
    streams: Vec<NodeUpload>,
    failed: &[bool],
    key: &ObjectKey,
) -> MantaError {
    let nodes: Vec<_> = streams.iter().map(|s| s.node.clone()).collect();
    warn!(
        object_id = %key.id,
        "a storage node failed mid-upload; aborting every copy"
    );
    let mut full = false;
    let mut rest = Vec::new();
    for (s, &failed) in streams.into_iter().zip(failed) {
        if failed {
            let node = s.node.storage_id.clone();
            if let Ok(Err(e)) =
                tokio::time::timeout(std::time::Duration::from_secs(1), s.put.finish()).await
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
    if full {
        out_of_space()
    } else {
        err(
            ErrorCode::ServiceUnavailable,
            "a storage node failed during the upload; retry",
        )
    }
}

/// Ends every copy of a fully relayed body (`total` bytes hashing to `sums`) and checks each
/// node stored exactly that (its block sums add up to the CRC32C of what was sent) and the
/// client's `Content-MD5`, when given; on any failure every copy is discarded. An empty body
/// stores nothing.
async fn finish_copies(
    fd: &Frontdoor,
    streams: Vec<NodeUpload>,
    key: &ObjectKey,
    total: u64,
    sums: Sums,
    content_md5: Option<&str>,
) -> ApiResult<Stored> {
    let md5 = sums.digest;
    let nodes: Vec<_> = streams.iter().map(|s| s.node.clone()).collect();
    let results = futures_util::future::join_all(streams.into_iter().map(|s| s.put.finish())).await;
    let mut failure = None;
    for (node, r) in nodes.iter().zip(&results) {
        match r {
            Ok(stored) if stored.crc32c == Some(sums.crc32c) && stored.size == total => {}
            Ok(stored) => {
                error!(node = %node.storage_id, ours = %crc32c_hex(sums.crc32c), theirs = ?stored.crc32c_hex(),
                    "a storage node stored different bytes than were sent");
                failure = Some(err(
                    ErrorCode::InternalError,
                    "an unexpected error occurred",
                ));
            }
            Err(e) => {
                let f = upload_failure(fd, node, e);
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
        return Ok(Stored::empty());
    }
    let sharks = nodes.iter().map(Node::shark_ref).collect();
    Ok(Stored {
        sharks,
        md5,
        size: total,
        crc32c: Some(crc32c_hex(sums.crc32c)),
    })
}

/// SHA-256 of zero bytes, hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Best-effort removal of copies that no record will point at (bytes that never became an
/// [`Uncommitted`] upload, such as a failed join's).
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

/// The nodes of `sharks`, with their current addresses.
///
/// # Errors
/// `ServiceUnavailable` when a node is unknown (no heartbeat was ever seen).
pub async fn nodes_of(fd: &Frontdoor, sharks: &[SharkRef]) -> ApiResult<Vec<Node>> {
    if fd.picker.ensure_loaded().await.is_err() {
        warn!("cannot read storage heartbeats; using the last known node addresses");
    }
    sharks
        .iter()
        .map(|s| {
            fd.picker.node(&s.manta_storage_id).ok_or_else(|| {
                err(
                    ErrorCode::ServiceUnavailable,
                    format!("storage node {} is unknown", s.manta_storage_id),
                )
            })
        })
        .collect()
}

/// Asks one node to join `parts` into `object_id`.
async fn join_one(
    fd: &Frontdoor,
    node: &Node,
    owner: &str,
    object_id: &str,
    parts: &[String],
) -> Result<CommitResult, String> {
    let req = CommitRequest {
        owner: owner.to_owned(),
        object_id: object_id.to_owned(),
        parts: parts.to_vec(),
    };
    fd.sharks
        .node(&node.url)
        .commit(&req)
        .await
        .map_err(|e| format!("{}: {e}", node.storage_id))
}

/// Asks every node of `sharks` to join `parts` (object ids of `owner`'s, in order) into
/// `object_id`, in parallel: multipart uploads of both APIs end this way, the bytes never
/// crossing the network again. They must all succeed with the same result, which comes back
/// uncommitted. On failure the joined copies
/// are discarded on every node.
///
/// # Errors
/// `ServiceUnavailable` when a node fails or is unknown, `InternalError` when nodes disagree.
pub async fn join_on(
    fd: &Arc<Frontdoor>,
    sharks: &[SharkRef],
    owner: &str,
    object_id: ObjectId,
    parts: &[String],
) -> ApiResult<Uncommitted> {
    let nodes = nodes_of(fd, sharks).await?;
    let oid = object_id.to_string();
    let results =
        futures_util::future::join_all(nodes.iter().map(|n| join_one(fd, n, owner, &oid, parts)))
            .await;
    match agree(results) {
        Ok(r) => {
            let stored = Stored {
                sharks: sharks.to_vec(),
                md5: r.md5,
                size: r.size,
                crc32c: r.crc32c,
            };
            Ok(Uncommitted::adopt(fd, owner, object_id, nodes, stored))
        }
        Err(e) => {
            discard(fd, &nodes, owner, &oid).await;
            Err(e)
        }
    }
}

/// The one result every node's join must have given.
fn agree(results: Vec<Result<CommitResult, String>>) -> ApiResult<CommitResult> {
    let mut first: Option<CommitResult> = None;
    for r in results {
        let r = r.map_err(|e| err(ErrorCode::ServiceUnavailable, e))?;
        match &first {
            None => first = Some(r),
            Some(f) if *f == r => {}
            Some(f) => {
                return Err(err(
                    ErrorCode::InternalError,
                    format!(
                        "storage nodes joined different bytes ({} vs {})",
                        f.md5, r.md5
                    ),
                ));
            }
        }
    }
    first.ok_or_else(|| err(ErrorCode::InternalError, "an upload without storage nodes"))
}

/// Where a record is written: its Moray key, the directory (bucket, or upload) it is listed
/// in, and its name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The record's Moray key.
    pub key: String,
    /// What listings of the parent match on.
    pub dirname: String,
    /// The entry's name in its parent.
    pub name: String,
}

impl Place {
    /// The place of `path` in `owner`'s namespace.
    pub fn of(path: &manta_types::MantaPath, owner: &str) -> Place {
        let key = path.storage_key(owner);
        Place {
            dirname: manta_types::path::dirname(&key).to_owned(),
            name: path.name().to_owned(),
            key,
        }
    }
}

impl Place {
    /// A new record of `kind` at this place, owned by `owner`, whose bytes (if any) belong to
    /// `creator`, stamped with the time now and the current request's id. Every record of a
    /// new entry the front door writes is built here.
    pub fn record(
        self,
        owner: &str,
        creator: &str,
        headers: BTreeMap<String, String>,
        kind: EntryKind,
    ) -> MetadataRecord {
        MetadataRecord {
            version: RECORD_VERSION,
            dirname: self.dirname,
            key: self.key,
            name: self.name,
            owner: owner.to_owned(),
            creator: creator.to_owned(),
            mtime: manta_types::time::now_ms(),
            headers,
            roles: Vec::new(),
            kind,
            request_id: manta_util::http::current_request_id(),
            version_id: None,
        }
    }

    /// `rec`, another entry's record, at this place and owned by `owner`, stamped with the
    /// time now and the current request's id; its bytes, creator, headers and roles are kept
    /// (a link).
    pub fn relink(self, rec: MetadataRecord, owner: &str) -> MetadataRecord {
        MetadataRecord {
            dirname: self.dirname,
            key: self.key,
            name: self.name,
            owner: owner.to_owned(),
            mtime: manta_types::time::now_ms(),
            request_id: manta_util::http::current_request_id(),
            version_id: None,
            ..rec
        }
    }
}

/// What the caller says about a new object beyond its bytes.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    /// The object's ETag (the object id for the Manta API, an MD5 for S3).
    pub etag: String,
    /// Its media type.
    pub content_type: String,
    /// The stored headers; `content-disposition` among them is also recorded as the object's.
    pub headers: BTreeMap<String, String>,
}

/// Where an [`Uncommitted`] upload stands, for its `Drop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// No record write has begun: the bytes are nobody's.
    Pending,
    /// The record write is in flight: it may land, so the bytes must stay.
    Writing,
    /// Committed, or discarded.
    Done,
}

/// Bytes stored on every chosen storage node that no record points at yet: what [`store`] and
/// [`store_on`] return (and what [`Uncommitted::adopt`] makes of bytes a node-side join
/// produced).
///
/// [`commit`](Uncommitted::commit) runs the caller's record write, and when it fails discards
/// the bytes on every node before returning the error: callers never discard by hand.
/// [`abort`](Uncommitted::abort) discards them when the caller decides against the record.
///
/// Dropped without either (an error path that returns early, or the request's future dropped
/// because the client went away), the bytes are discarded in a task spawned on the runtime
/// and tracked by [`Frontdoor::background`], never waited for in `Drop`. That is chosen over
/// `#[must_use]` alone because a dropped request future runs no code of the caller's: only
/// `Drop` sees it. Dropped while the record write is in flight, the bytes are kept: the write
/// may have landed, and a record without bytes is worse than bytes without a record.
#[must_use = "commit the upload's record, or abort it; dropped, its bytes are discarded"]
#[derive(Debug)]
pub struct Uncommitted {
    fd: Arc<Frontdoor>,
    /// The account the bytes are stored under (the record's creator).
    creator: String,
    object_id: ObjectId,
    /// The nodes holding a copy: where to discard (empty when nothing was stored).
    nodes: Vec<Node>,
    stored: Stored,
    state: Commit,
}

/// What a failed record write says about whether it was applied.
pub trait WriteFailure {
    /// True when the write was refused, so nothing was written: a condition or conflict, a
    /// missing parent or bucket, a bad request (the client-error codes). False when its
    /// outcome is unknown: a timeout, an unavailable or failing metadata tier (it may have
    /// landed).
    fn refused(&self) -> bool;
}

impl WriteFailure for MantaError {
    fn refused(&self) -> bool {
        self.code.http_status() < 500
    }
}

impl WriteFailure for s3s::S3Error {
    fn refused(&self) -> bool {
        self.status_code()
            .or_else(|| self.code().status_code())
            .is_some_and(|s| s.is_client_error())
    }
}

impl Uncommitted {
    /// Takes charge of bytes already on `nodes` as object `object_id` of `creator`, with what
    /// they reported in `stored`: an upload the data path made, or a join the nodes made
    /// themselves. `stored` with no sharks means nothing was stored (nothing to discard).
    pub fn adopt(
        fd: &Arc<Frontdoor>,
        creator: &str,
        object_id: ObjectId,
        nodes: Vec<Node>,
        stored: Stored,
    ) -> Uncommitted {
        Uncommitted {
            fd: fd.clone(),
            creator: creator.to_owned(),
            object_id,
            nodes: if stored.sharks.is_empty() {
                Vec::new()
            } else {
                nodes
            },
            stored,
            state: Commit::Pending,
        }
    }

    /// What was stored.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// The object id the bytes are stored under.
    pub fn object_id(&self) -> ObjectId {
        self.object_id
    }

    /// The record of these bytes as an object at `place`, owned (and created) by the account
    /// they were stored for: the one builder of a new object's record.
    pub fn record(&self, place: Place, meta: ObjectMeta) -> MetadataRecord {
        let s = &self.stored;
        let info = ObjectInfo {
            content_length: s.size,
            content_md5: s.md5.clone(),
            content_type: meta.content_type,
            content_disposition: meta.headers.get("content-disposition").cloned(),
            etag: meta.etag,
            object_id: self.object_id,
            sharks: s.sharks.clone(),
            created_from: None,
            sha256: None,
            crc32c: s.crc32c.clone(),
            parts: None,
        };
        place.record(
            &self.creator,
            &self.creator,
            meta.headers,
            EntryKind::Object(info),
        )
    }

    /// Runs `write`, the caller's record write (a plain put, a conditional put, a batch). When
    /// the write was refused (see [`WriteFailure`]) the bytes are discarded on every node
    /// before its error is returned; when its outcome is unknown (a timeout, an unavailable or
    /// failing metadata tier: it may have landed) the bytes are kept, since a record without
    /// its bytes would be a lost object while bytes without a record only cost space, and the
    /// kept object is logged and counted (`frontdoor_uncommitted_kept_total`).
    ///
    /// Cancel safety: dropped before `write` completes, the bytes are kept (the write may
    /// have landed); dropped while discarding, the discard finishes in the background.
    ///
    /// # Errors
    /// `write`'s error.
    pub async fn commit<T, E: WriteFailure>(
        mut self,
        write: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.state = Commit::Writing;
        let written = self.fd.step("put", "commit", write).await;
        match &written {
            Err(e) if e.refused() => {
                // Nothing points at the new copies: take them back.
                self.state = Commit::Pending;
                self.discard().await;
            }
            Err(_) if !self.nodes.is_empty() => {
                warn!(object_id = %self.object_id, creator = %self.creator,
                    sharks = ?self.stored.sharks,
                    "record write failed with an unknown outcome; keeping the bytes it may point at");
                self.fd.metrics.inc(
                    "frontdoor_uncommitted_kept_total",
                    "Uploads whose record write failed with an unknown outcome, their bytes kept.",
                    &[],
                );
            }
            _ => {}
        }
        self.state = Commit::Done;
        written
    }

    /// Discards the bytes on every node: no record will point at them.
    pub async fn abort(mut self) {
        self.discard().await;
        self.state = Commit::Done;
    }

    async fn discard(&self) {
        if !self.nodes.is_empty() {
            discard(
                &self.fd,
                &self.nodes,
                &self.creator,
                &self.object_id.to_string(),
            )
            .await;
        }
    }
}

impl Drop for Uncommitted {
    fn drop(&mut self) {
        match self.state {
            Commit::Done => {}
            Commit::Pending if self.nodes.is_empty() => {}
            Commit::Writing => {
                warn!(object_id = %self.object_id, creator = %self.creator,
                    "record write abandoned in flight; keeping the bytes it may point at");
            }
            Commit::Pending => {
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    warn!(object_id = %self.object_id, "no runtime to discard uncommitted bytes; they stay on the nodes");
                    return;
                };
                let fd = self.fd.clone();
                let nodes = std::mem::take(&mut self.nodes);
                let creator = std::mem::take(&mut self.creator);
                let oid = self.object_id.to_string();
                let tracker = fd.background.clone();
                let discard = async move { discard(&fd, &nodes, &creator, &oid).await };
                // The node's log names the request that left the bytes behind.
                match manta_util::http::current_request_id() {
                    Some(id) => {
                        tracker.spawn_on(manta_util::http::with_request_id(id, discard), &rt)
                    }
                    None => tracker.spawn_on(discard, &rt),
                };
            }
        }
    }
}

/// A byte stream read from a storage node.
pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Opens a read of an object: the status (200, 206 or 416), the node's `Content-Range`, and
/// the body. `range` is passed to the node.
///
/// The copies are tried in random order (nodes that failed lately last) until one answers. If
/// that copy then fails mid-body (its node stops at a block that fails its checksum, or dies),
/// the read goes on from the next copy at the same offset, so a client sees one whole body as
/// long as one good copy is left.
///
/// # Errors
/// `ServiceUnavailable` when no copy answers.
pub async fn fetch(
    fd: &Arc<Frontdoor>,
    obj: &ObjectInfo,
    creator: &str,
    range: Option<ByteRange>,
) -> ApiResult<(StatusCode, Option<String>, ByteStream)> {
    fd.step("get", "open", open_read(fd, obj, creator, range))
        .await
}

/// [`fetch`], untimed.
async fn open_read(
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
    // A node that failed a connection lately or went quiet is tried last, so a host that is
    // gone costs reads no connect timeout while another copy answers.
    copies.sort_by_key(|s| fd.picker.read_last(&s.manta_storage_id));
    let oid = obj.object_id.to_string();
    let key = object_key(creator, &oid)?;
    let mut copies: std::collections::VecDeque<SharkRef> = copies.into();
    let mut last = String::from("no copies");
    while let Some(s) = copies.pop_front() {
        match open_copy(fd, &s, &key, range).await {
            Ok(resp) => {
                let status = resp.status();
                let content_range = resp.content_range();
                // Where the body sits in the object, so another copy can take over.
                let (start, end) = match resp.range {
                    Some((a, b)) => (a, b + 1),
                    None => (0, resp.info.size),
                };
                let check = if range.is_none() && status == StatusCode::OK {
                    Check::of(obj)
                } else {
                    Check::None
                };
                let body = verified_stream(Reading {
                    body: resp.into_stream(),
                    check,
                    pending: None,
                    fd: fd.clone(),
                    node: s,
                    rest: copies,
                    key,
                    start,
                    end,
                    received: 0,
                    done: false,
                });
                return Ok((status, content_range, body));
            }
            // The node's copy is shorter than the record says: no other copy will do better.
            Err(ClientError::RangeNotSatisfiable { size }) => {
                let content_range = size.map(|n| format!("bytes */{n}"));
                let empty: ByteStream = Box::pin(futures_util::stream::empty());
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, content_range, empty));
            }
            Err(e) => last = format!("{}: {e}", s.manta_storage_id),
        }
    }
    Err(err(
        ErrorCode::ServiceUnavailable,
        format!("no storage node holding a copy answered ({last})"),
    ))
}

/// Opens a read of `key` (or of `range` of it) on the node holding copy `s`.
async fn open_copy(
    fd: &Frontdoor,
    s: &SharkRef,
    key: &ObjectKey,
    range: Option<ByteRange>,
) -> Result<storage_api::GetResponse, ClientError> {
    let Some(node) = fd.picker.node(&s.manta_storage_id) else {
        return Err(ClientError::InvalidResponse(format!(
            "{} is unknown",
            s.manta_storage_id
        )));
    };
    let r = fd.sharks.node(&node.url).get(key, range).await;
    if let Err(e) = &r
        && !matches!(e, ClientError::RangeNotSatisfiable { .. })
    {
        warn!(error = %e, node = %s.manta_storage_id, "copy unavailable; trying another");
        if matches!(e, ClientError::Connect { .. }) {
            fd.picker.mark_down(&s.manta_storage_id);
        }
    }
    r
}

/// What a whole read is checked against at its end (a node checks every block before sending
/// it; this also covers the way from the node's disk to here).
enum Check {
    /// A range, or nothing to check against.
    None,
    /// The record's CRC32C: computed inline (several GB/s; cheaper than a hop to a thread).
    Crc32c { want: u32, got: u32 },
    /// An object written before CRC32C: its SHA-256 or MD5, hashed on the blocking pool.
    Slow { hasher: Hasher, want: String },
}

impl Check {
    fn of(obj: &ObjectInfo) -> Check {
        if let Some(want) = obj.crc32c.as_deref().and_then(parse_crc32c_hex) {
            return Check::Crc32c { want, got: 0 };
        }
        let (kind, want) = match &obj.sha256 {
            Some(sha) => (Digest::Sha256, sha.clone()),
            None => (Digest::Md5, obj.content_md5.clone()),
        };
        Check::Slow {
            hasher: Hasher::start(kind),
            want,
        }
    }

    async fn update(&mut self, data: &Bytes) {
        match self {
            Check::None => {}
            Check::Crc32c { got, .. } => *got = crc32c_append(*got, data),
            Check::Slow { hasher, .. } => hasher.push(data.clone()).await,
        }
    }

    /// `Err((expected, got))` when the bytes were not the record's.
    async fn finish(self) -> Result<(), (String, Option<String>)> {
        match self {
            Check::None => Ok(()),
            Check::Crc32c { want, got } if want == got => Ok(()),
            Check::Crc32c { want, got } => Err((crc32c_hex(want), Some(crc32c_hex(got)))),
            Check::Slow { hasher, want } => {
                let got = hasher.finish().await.map(|s| s.digest);
                if got.as_deref() == Some(want.as_str()) {
                    Ok(())
                } else {
                    Err((want, got))
                }
            }
        }
    }
}

/// State of a read in progress.
struct Reading {
    body: storage_api::client::BodyStream,
    check: Check,
    /// The latest chunk, held back until the next one arrives (or, for the last chunk, until
    /// the checksum has been verified), so a copy that fails its checksum never completes.
    pending: Option<Bytes>,
    fd: Arc<Frontdoor>,
    /// The copy being read.
    node: SharkRef,
    /// The copies not tried yet.
    rest: std::collections::VecDeque<SharkRef>,
    key: ObjectKey,
    /// The body's first byte in the object, and the byte after its last.
    start: u64,
    end: u64,
    /// Bytes received so far (sent on or pending).
    received: u64,
    done: bool,
}

impl Reading {
    /// The copy being read failed after `received` bytes: goes on from the next copy that
    /// answers, at the same offset. `false` when none is left.
    async fn resume(&mut self, why: &str) -> bool {
        let from = self.start + self.received;
        if from >= self.end {
            return false;
        }
        while let Some(s) = self.rest.pop_front() {
            let range = ByteRange::FromTo(from, self.end - 1);
            match open_copy(&self.fd, &s, &self.key, Some(range)).await {
                Ok(resp) if resp.range.map(|(a, _)| a) == Some(from) => {
                    warn!(object = %self.key, failed = %self.node.manta_storage_id, with = %s.manta_storage_id,
                        offset = from, error = why, "a copy failed mid-read; going on from another copy");
                    self.fd.metrics.inc(
                        "frontdoor_reads_resumed_total",
                        "Reads that went on from another copy after one failed mid-body.",
                        &[],
                    );
                    self.body = resp.into_stream();
                    self.node = s;
                    return true;
                }
                Ok(_) => {
                    warn!(node = %s.manta_storage_id, "a copy answered another range; trying the next")
                }
                Err(_) => {}
            }
        }
        false
    }
}

/// Counts `out`, about to be sent to a client, in the front door's metrics.
fn count_sent(fd: &Frontdoor, out: &Bytes) {
    fd.metrics.inc_by(
        "frontdoor_bytes_out_total",
        "Object bytes sent to clients.",
        &[],
        out.len() as f64,
    );
}

/// Records a copy that failed its checksum in `manta_quarantine`, in the background, so the
/// repairer replaces it (the node itself may not notice until its next scrub).
fn report_corrupt(
    fd: &Arc<Frontdoor>,
    node: &SharkRef,
    key: &ObjectKey,
    expected: &str,
    got: Option<&str>,
) {
    use manta_types::repair::{QUARANTINE_BUCKET, quarantine_key};
    let (owner, id) = (key.owner.to_string(), key.id.to_string());
    let record_key = quarantine_key(&node.manta_storage_id, &owner, &id);
    let value = serde_json::json!({
        "owner": owner,
        "objectId": id,
        "reason": format!("served bytes whose checksum {} differs from the record's {expected}", got.unwrap_or("-")),
        "detectedAt": manta_types::time::now_ms(),
        "detectedBy": "frontdoor",
        "manta_storage_id": node.manta_storage_id,
        "datacenter": node.datacenter,
    });
    let system = fd.moray.system();
    fd.background.spawn(async move {
        if let Err(e) = system
            .put_object(
                QUARANTINE_BUCKET,
                &record_key,
                value,
                moray::PutOptions::any(),
            )
            .await
        {
            warn!(copy = %record_key, error = %e, "cannot record a corrupt copy for repair");
        }
    });
}

fn verified_stream(st: Reading) -> ByteStream {
    Box::pin(futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let timeout = st.fd.cfg.data_timeout;
        loop {
            let failed = match tokio::time::timeout(timeout, st.body.next()).await {
                Err(_) => "storage node stalled".to_owned(),
                Ok(Some(Err(e))) => e.to_string(),
                Ok(Some(Ok(data))) => {
                    if data.is_empty() {
                        continue;
                    }
                    st.received += data.len() as u64;
                    st.check.update(&data).await;
                    let out = st.pending.replace(data);
                    if let Some(out) = out {
                        count_sent(&st.fd, &out);
                        return Some((Ok(out), st));
                    }
                    continue;
                }
                Ok(None) => {
                    st.done = true;
                    let check = std::mem::replace(&mut st.check, Check::None);
                    if let Err((want, got)) = check.finish().await {
                        error!(node = %st.node.manta_storage_id, object = %st.key, expected = %want, got = ?got,
                            "copy failed its checksum while being served; response cut");
                        st.fd.metrics.inc(
                            "frontdoor_corrupt_reads_total",
                            "Reads cut because the copy failed its checksum.",
                            &[],
                        );
                        report_corrupt(&st.fd, &st.node, &st.key, &want, got.as_deref());
                        return Some((Err(io::Error::other("checksum mismatch")), st));
                    }
                    let out = st.pending.take()?;
                    count_sent(&st.fd, &out);
                    return Some((Ok(out), st));
                }
            };
            if !st.resume(&failed).await {
                st.done = true;
                return Some((Err(io::Error::other(failed)), st));
            }
        }
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    //! The data path's failure branches, against storage nodes faked in-process: each records
    //! the objects it was sent in full and the deletes it was asked for.

    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::time::Duration;

    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::{IntoResponse, Response};
    use http::Method;

    use super::*;
    use crate::config::{Config, MoraySource};

    /// What one fake node saw, by object path (`/<owner>/<objectId>`).
    #[derive(Debug, Default)]
    pub(crate) struct Seen {
        /// PUTs that began.
        pub(crate) started: HashSet<String>,
        /// PUTs whose whole body arrived and were answered as stored.
        pub(crate) stored: HashSet<String>,
        /// DELETEs.
        pub(crate) deleted: HashSet<String>,
    }

    /// How a fake node behaves.
    #[derive(Debug, Clone, Copy, Default)]
    pub(crate) struct Fake {
        /// Fails a PUT once this many bytes have arrived (a node dying mid-upload).
        pub(crate) fail_after: Option<usize>,
        /// Answers a whole PUT 507 (a disk that filled up as the copy was written).
        pub(crate) full_at_end: bool,
        /// What a join (`POST /mpu/commit`) reports; `None` fails it.
        pub(crate) joins: Option<&'static str>,
    }

    impl Fake {
        /// A node that stores what it is sent.
        pub(crate) const OK: Fake = Fake {
            fail_after: None,
            full_at_end: false,
            joins: None,
        };
    }

    /// A storage node faked in-process.
    #[derive(Clone)]
    pub(crate) struct FakeNode {
        seen: Arc<Mutex<Seen>>,
        fake: Fake,
    }

    impl FakeNode {
        /// Looks at what the node saw.
        pub(crate) fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
            f(&self.seen.lock().unwrap())
        }
    }

    async fn serve_node(State(node): State<FakeNode>, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        if req.method() == Method::DELETE {
            node.seen.lock().unwrap().deleted.insert(path);
            return StatusCode::NO_CONTENT.into_response();
        }
        if req.method() == Method::POST && path == storage_api::COMMIT_PATH {
            let Some(md5) = node.fake.joins else {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            };
            let r = storage_api::CommitResult {
                md5: md5.into(),
                crc32c: Some(crc32c_hex(0)),
                size: 1,
            };
            return axum::Json(r).into_response();
        }
        if req.method() != Method::PUT {
            return StatusCode::NOT_FOUND.into_response();
        }
        node.seen.lock().unwrap().started.insert(path.clone());
        let mut body = req.into_body().into_data_stream();
        let mut crc = 0u32;
        let mut size = 0usize;
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                // An aborted upload keeps nothing.
                return StatusCode::BAD_REQUEST.into_response();
            };
            size += chunk.len();
            if node.fake.fail_after.is_some_and(|n| size >= n) {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            crc = crc32c_append(crc, &chunk);
        }
        if node.fake.full_at_end {
            return StatusCode::INSUFFICIENT_STORAGE.into_response();
        }
        node.seen.lock().unwrap().stored.insert(path);
        Response::builder()
            .status(StatusCode::CREATED)
            .header(storage_api::COMPUTED_CRC32C_HEADER, crc32c_hex(crc))
            .body(Body::from(format!("{{\"size\":{size}}}")))
            .unwrap()
    }

    /// Starts a fake node on 127.0.0.1:0; its heartbeat says it has plenty of room.
    async fn start_node(id: &str, fake: Fake) -> (FakeNode, Node) {
        let fake = FakeNode {
            seen: Arc::default(),
            fake,
        };
        let app = axum::Router::new()
            .fallback(serve_node)
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let node = Node {
            storage_id: id.into(),
            datacenter: format!("dc-{id}"),
            available_mb: 1024,
            percent_used: 1,
            timestamp: manta_types::time::now_ms(),
            url: format!("http://{addr}"),
            retired: false,
            state: None,
        };
        (fake, node)
    }

    /// The account the tests store for.
    pub(crate) const CREATOR: &str = "5f2b4a52-3a43-4e8a-9a3e-0a6f4a1d2c11";

    /// A front door whose Moray is never reached, placing on fresh fake nodes (`node0`,
    /// `node1`, ...), one per entry of `fakes`.
    pub(crate) async fn region(fakes: &[Fake]) -> (Arc<Frontdoor>, Vec<FakeNode>) {
        let mut started = Vec::new();
        let mut nodes = Vec::new();
        for (i, f) in fakes.iter().enumerate() {
            let (fake, node) = start_node(&format!("node{i}"), *f).await;
            started.push(fake);
            nodes.push(node);
        }
        let cfg = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            MoraySource::Single(vec!["http://127.0.0.1:9".into()]),
        );
        (Frontdoor::for_tests(cfg, nodes).await, started)
    }

    /// `n` chunks of 64 KiB, `pause` apart.
    fn body(n: usize, pause: Duration) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin {
        Box::pin(futures_util::stream::iter(0..n).then(move |i| async move {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            Ok(Bytes::from(vec![b'x'; 64 * 1024]))
        }))
    }

    fn exact(n: u64) -> BodyLength {
        BodyLength {
            exact: Some(n),
            max: None,
        }
    }

    async fn upload(fd: &Arc<Frontdoor>, copies: u32) -> Uncommitted {
        store(
            fd,
            CREATOR,
            copies,
            exact(4 * 64 * 1024),
            None,
            body(4, Duration::ZERO),
        )
        .await
        .expect("every node stores its copy")
    }

    fn path_of(u: &Uncommitted) -> String {
        format!("/{CREATOR}/{}", u.object_id())
    }

    /// Every node was asked to delete `path`, and nothing else.
    pub(crate) fn assert_discarded_everywhere(fakes: &[FakeNode], path: &str) {
        for f in fakes {
            assert_eq!(
                f.seen(|s| s.deleted.clone()),
                HashSet::from([path.to_owned()])
            );
        }
    }

    /// Waits for the discards of dropped uploads.
    async fn settle(fd: &Frontdoor) {
        fd.background.close();
        fd.background.wait().await;
    }

    /// A record write that fails: refused (a 4xx code) or of unknown outcome (a 5xx code).
    pub(crate) fn refused() -> MantaError {
        MantaError::new(ErrorCode::ConcurrentRequest, "etag mismatch")
    }

    fn unknown_outcome() -> MantaError {
        MantaError::new(ErrorCode::ServiceUnavailable, "moray did not answer")
    }

    #[tokio::test]
    async fn a_refused_record_write_discards_the_bytes_on_every_node() {
        let (fd, fakes) = region(&[Fake::OK, Fake::OK]).await;
        let up = upload(&fd, 2).await;
        let path = path_of(&up);
        assert_eq!(up.stored().sharks.len(), 2);
        for f in &fakes {
            assert!(f.seen(|s| s.stored.contains(&path)));
        }
        let r = up.commit(async { Err::<(), _>(refused()) }).await;
        assert_eq!(r, Err(refused()));
        assert_discarded_everywhere(&fakes, &path);
    }

    #[tokio::test]
    async fn a_record_write_of_unknown_outcome_keeps_the_bytes() {
        let (fd, fakes) = region(&[Fake::OK, Fake::OK]).await;
        let up = upload(&fd, 2).await;
        let path = path_of(&up);
        let r = up.commit(async { Err::<(), _>(unknown_outcome()) }).await;
        assert_eq!(r, Err(unknown_outcome()));
        settle(&fd).await;
        for f in &fakes {
            assert!(f.seen(|s| s.stored.contains(&path) && s.deleted.is_empty()));
        }
        assert!(
            fd.metrics
                .render()
                .contains("frontdoor_uncommitted_kept_total 1")
        );
    }

    #[tokio::test]
    async fn a_node_failing_mid_upload_commits_nothing_and_discards_the_other_copies() {
        let (fd, fakes) = region(&[
            Fake::OK,
            Fake {
                fail_after: Some(64 * 1024),
                ..Fake::OK
            },
        ])
        .await;
        let r = store(
            &fd,
            CREATOR,
            2,
            exact(8 * 64 * 1024),
            None,
            body(8, Duration::from_millis(50)),
        )
        .await;
        // No upload to commit: the error is all the caller gets.
        let e = r.expect_err("a node failed");
        assert_eq!(e.code, ErrorCode::ServiceUnavailable);
        let started = fakes[0].seen(|s| s.started.clone());
        assert_eq!(started.len(), 1);
        for f in &fakes {
            assert!(f.seen(|s| s.stored.is_empty()), "no copy completes");
            assert_eq!(
                f.seen(|s| s.deleted.clone()),
                started,
                "every copy is discarded"
            );
        }
    }

    #[tokio::test]
    async fn a_node_failing_at_the_end_commits_nothing_and_discards_every_copy() {
        let full = Fake {
            full_at_end: true,
            ..Fake::OK
        };
        let (fd, fakes) = region(&[Fake::OK, full]).await;
        let e = store(
            &fd,
            CREATOR,
            2,
            exact(4 * 64 * 1024),
            None,
            body(4, Duration::ZERO),
        )
        .await
        .expect_err("a node filled up");
        assert_eq!(e.code, ErrorCode::NotEnoughSpace);
        let path = fakes[0].seen(|s| s.stored.iter().next().cloned()).unwrap();
        assert_discarded_everywhere(&fakes, &path);
    }

    #[tokio::test]
    async fn a_committed_upload_discards_nothing() {
        let (fd, fakes) = region(&[Fake::OK, Fake::OK, Fake::OK]).await;
        let up = upload(&fd, 3).await;
        let path = path_of(&up);
        let r = up.commit(async { Ok::<_, MantaError>(7) }).await;
        assert_eq!(r, Ok(7));
        settle(&fd).await;
        for f in &fakes {
            assert!(f.seen(|s| s.stored.contains(&path)));
            assert!(f.seen(|s| s.deleted.is_empty()));
        }
    }

    #[tokio::test]
    async fn an_upload_dropped_uncommitted_is_discarded_in_the_background() {
        let (fd, fakes) = region(&[Fake::OK, Fake::OK]).await;
        let up = upload(&fd, 2).await;
        let path = path_of(&up);
        drop(up);
        settle(&fd).await;
        assert_discarded_everywhere(&fakes, &path);
    }

    #[tokio::test]
    async fn an_aborted_upload_is_discarded() {
        let (fd, fakes) = region(&[Fake::OK, Fake::OK]).await;
        let up = upload(&fd, 2).await;
        let path = path_of(&up);
        up.abort().await;
        assert_discarded_everywhere(&fakes, &path);
    }

    #[tokio::test]
    async fn a_record_write_abandoned_in_flight_keeps_the_bytes() {
        let (fd, fakes) = region(&[Fake::OK, Fake::OK]).await;
        let up = upload(&fd, 2).await;
        let never = std::future::pending::<Result<(), MantaError>>();
        let r = tokio::time::timeout(Duration::from_millis(50), up.commit(never)).await;
        assert!(r.is_err(), "the write never ends");
        settle(&fd).await;
        for f in &fakes {
            assert!(
                f.seen(|s| s.deleted.is_empty()),
                "the write may have landed"
            );
        }
    }

    #[tokio::test]
    async fn an_empty_upload_stores_and_discards_nothing() {
        let (fd, fakes) = region(&[Fake::OK, Fake::OK]).await;
        let up = store(&fd, CREATOR, 2, exact(0), None, body(0, Duration::ZERO))
            .await
            .unwrap();
        assert!(up.stored().sharks.is_empty());
        let r = up.commit(async { Err::<(), _>(refused()) }).await;
        assert!(r.is_err());
        settle(&fd).await;
        for f in &fakes {
            assert!(f.seen(|s| s.started.is_empty() && s.deleted.is_empty()));
        }
    }

    #[tokio::test]
    async fn the_record_describes_the_stored_bytes() {
        let (fd, _fakes) = region(&[Fake::OK, Fake::OK]).await;
        let up = upload(&fd, 2).await;
        let place = Place {
            key: "/k".into(),
            dirname: "/d".into(),
            name: "n".into(),
        };
        let headers = BTreeMap::from([("content-disposition".into(), "inline".into())]);
        let meta = ObjectMeta {
            etag: "e".into(),
            content_type: "text/plain".into(),
            headers: headers.clone(),
        };
        let rec = up.record(place, meta);
        let o = rec.object().unwrap().clone();
        assert_eq!(
            (rec.key.as_str(), rec.dirname.as_str(), rec.name.as_str()),
            ("/k", "/d", "n")
        );
        assert_eq!(
            (rec.owner.as_str(), rec.creator.as_str()),
            (CREATOR, CREATOR)
        );
        assert_eq!(rec.headers, headers);
        assert_eq!(o.object_id, up.object_id());
        assert_eq!(o.content_length, up.stored().size);
        assert_eq!(o.content_md5, up.stored().md5);
        assert_eq!(o.crc32c, up.stored().crc32c);
        assert_eq!(o.sharks, up.stored().sharks);
        assert_eq!(o.content_disposition.as_deref(), Some("inline"));
        assert_eq!(
            (o.etag.as_str(), o.content_type.as_str()),
            ("e", "text/plain")
        );
        up.commit(async { Ok::<_, MantaError>(()) }).await.unwrap();
    }

    fn sharks(n: usize) -> Vec<SharkRef> {
        (0..n)
            .map(|i| SharkRef {
                datacenter: format!("dc-node{i}"),
                manta_storage_id: format!("node{i}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_failed_join_discards_the_joined_copies_on_every_node() {
        let joins = Fake {
            joins: Some("AAAAAAAAAAAAAAAAAAAAAA=="),
            ..Fake::OK
        };
        // One node cannot join; then two nodes that joined different bytes.
        for fakes in [
            [joins, Fake::OK],
            [
                joins,
                Fake {
                    joins: Some("x"),
                    ..joins
                },
            ],
        ] {
            let (fd, nodes) = region(&fakes).await;
            let id = ObjectId::random();
            let parts = [ObjectId::random().to_string()];
            let r = join_on(&fd, &sharks(2), CREATOR, id, &parts).await;
            assert!(r.is_err());
            assert_discarded_everywhere(&nodes, &format!("/{CREATOR}/{id}"));
        }
    }

    #[tokio::test]
    async fn a_join_comes_back_uncommitted_and_a_failed_record_write_discards_it() {
        let joins = Fake {
            joins: Some("AAAAAAAAAAAAAAAAAAAAAA=="),
            ..Fake::OK
        };
        let (fd, nodes) = region(&[joins, joins]).await;
        let id = ObjectId::random();
        let parts = [ObjectId::random().to_string()];
        let joined = join_on(&fd, &sharks(2), CREATOR, id, &parts).await.unwrap();
        assert_eq!(joined.stored().sharks, sharks(2));
        assert!(nodes.iter().all(|n| n.seen(|s| s.deleted.is_empty())));
        let r = joined.commit(async { Err::<(), _>(refused()) }).await;
        assert!(r.is_err());
        assert_discarded_everywhere(&nodes, &format!("/{CREATOR}/{id}"));
    }
}
