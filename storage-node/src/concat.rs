//! Joining stored objects into a new object on the node itself: how an S3 multipart upload
//! becomes one object without its bytes crossing the network again, and how an S3 copy is made
//! next to its source.
//!
//! `POST /mpu/commit` with the JSON body
//! `{"owner": "<uuid>", "objectId": "<new uuid>", "parts": ["<uuid>", ...]}` writes the parts'
//! bytes, in the order given, into the new object `<owner>/<objectId>` and answers 201 with
//! `{"md5","crc32c","size"}` (and the same digests in the `x-joyent-computed-content-md5` and
//! `x-manta-computed-crc32c` headers). The result has block sums like any upload, and an MD5
//! (the metadata record of the joined object carries it).
//!
//! # Guarantees
//! - Atomic: the result is written to `tmp/`, its checksums set, fsynced, renamed into
//!   `objects/` and the directory fsynced, as an upload is; a reader sees the whole object or
//!   none, and a failure leaves nothing behind.
//! - Idempotent: when `<owner>/<objectId>` already exists (a retried commit), its digests are
//!   answered and nothing is written. Object ids are never reused for other bytes, so the
//!   existing file is the result of an earlier identical commit.
//! - Verified: every block of every part is checked against its stored CRC32C while it is
//!   copied (the whole SHA-256 of a part written before block sums).
//!   A part that fails is quarantined (like a failed read) and the commit answers 404 with
//!   `x-manta-quarantined: true`, so a corrupt part never becomes part of a good-looking object.
//! - The parts are left in place: the metadata tier logs them for garbage collection when their
//!   records go.
//! - All file work runs on the blocking pool, in 1 MiB chunks; the commit holds one transfer
//!   permit (503 `ThrottledError` when none is left).
//!
//! Errors: a malformed body is 400 `InvalidParameter`; a missing part 404 `ResourceNotFound`.

use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use manta_types::ErrorCode;
use sha2::Digest as _;
use storage_api::blocks::{BlockSums, crc32c_append};

use crate::dataset::dir::sync_dir;
use crate::digest::{Checksums, Digests, StreamHasher};
use crate::error::Error;
use crate::server::AppState;
use crate::store::{QuarantineNote, TMP_DIR};
use storage_api::{
    COMPUTED_CRC32C_HEADER, COMPUTED_MD5_HEADER, CommitRequest, CommitResult, OBJECTS_DIR,
    ObjectKey,
};

/// Most parts one commit may join (S3's limit on the parts of an upload).
pub const MAX_PARTS: usize = 10_000;

/// Largest request body accepted (10 000 ids fit in well under half of it).
pub const MAX_BODY: usize = 1024 * 1024;

/// Bytes read and written at a time.
const CHUNK: usize = 1024 * 1024;

/// How far ahead parts are read, and how often the joined bytes are pushed to disk (a
/// multiple of [`CHUNK`]).
const READAHEAD: u64 = 8 * 1024 * 1024;

fn bad_request(message: &str) -> Response {
    manta_util::http::error_response_parts(ErrorCode::InvalidParameter, message)
}

/// Why a blocking join stopped.
enum JoinError {
    /// A part's bytes differ from its stored SHA-256 (or its size from the recorded size):
    /// the part and why it is to be quarantined.
    Corrupt(ObjectKey, Box<QuarantineNote>),
    /// Anything else.
    Other(Error),
}

impl From<Error> for JoinError {
    fn from(e: Error) -> Self {
        JoinError::Other(e)
    }
}

/// `POST /mpu/commit`.
///
/// # Errors
/// As the module docs say.
pub async fn commit(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    if body.len() > MAX_BODY {
        return bad_request(&format!("a commit body is at most {MAX_BODY} bytes"));
    }
    let req: CommitRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("malformed commit request: {e}")),
    };
    if req.parts.is_empty() || req.parts.len() > MAX_PARTS {
        return bad_request(&format!("a commit joins 1 to {MAX_PARTS} parts"));
    }
    let target = match ObjectKey::parse(&req.owner, &req.object_id) {
        Ok(k) => k,
        Err(e) => return bad_request(&e.to_string()),
    };
    let mut parts = Vec::with_capacity(req.parts.len());
    for p in &req.parts {
        match ObjectKey::parse(&req.owner, p) {
            Ok(k) if k == target => {
                return bad_request("the new object cannot be one of its own parts");
            }
            Ok(k) => parts.push(k),
            Err(e) => return bad_request(&e.to_string()),
        }
    }
    match run(&st, target, parts).await {
        Ok((d, created)) => answer(&d, created).unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

fn answer(d: &Digests, created: bool) -> Result<Response, Error> {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let md5 = d
        .md5_base64()
        .ok_or_else(|| Error::Internal("the joined object has no MD5".into()))?;
    let mut resp = (
        status,
        axum::Json(CommitResult {
            md5: md5.clone(),
            crc32c: d.crc32c_hex(),
            size: d.size,
        }),
    )
        .into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&md5) {
        h.insert(COMPUTED_MD5_HEADER, v);
    }
    if let Some(crc) = d.crc32c_hex()
        && let Ok(v) = HeaderValue::from_str(&crc)
    {
        h.insert(COMPUTED_CRC32C_HEADER, v);
    }
    Ok(resp)
}

/// Joins `parts` into `target`; `Ok((digests, true))` when it was written now, `false` when it
/// already existed.
async fn run(
    st: &AppState,
    target: ObjectKey,
    parts: Vec<ObjectKey>,
) -> Result<(Digests, bool), Error> {
    let _permit = st
        .transfers
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::Throttled)?;
    match st.store.open_object(&target).await {
        Ok(existing) => return Ok((existing.checksums.digests, false)),
        Err(Error::NotFound) => {}
        Err(e) => return Err(e),
    }
    let root = st.store.root().to_owned();
    let started = std::time::Instant::now();
    let joined = tokio::task::spawn_blocking(move || join_blocking(&root, &target, &parts))
        .await
        .map_err(|e| Error::Internal(format!("commit worker panicked: {e}")))?;
    match joined {
        Ok(d) => {
            tracing::info!(
                object = %target,
                size = d.size,
                ms = started.elapsed().as_millis() as u64,
                "parts joined into a new object"
            );
            Ok((d, true))
        }
        Err(JoinError::Other(e)) => Err(e),
        Err(JoinError::Corrupt(key, note)) => {
            st.store.quarantine(&key, &note).await?;
            Err(Error::Quarantined)
        }
    }
}

/// Removes the temp file unless disarmed.
struct Temp(Option<PathBuf>);

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = fs::remove_file(&p)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove a temp file");
        }
    }
}

/// A corrupt part, and why.
fn corrupt(key: &ObjectKey, note: QuarantineNote) -> JoinError {
    let reason = format!("{} (found while joining parts)", note.reason);
    JoinError::Corrupt(*key, Box::new(QuarantineNote { reason, ..note }))
}

fn hex(bytes: &[u8]) -> String {
    crate::digest::to_hex(bytes)
}

/// The blocking half: copy, verify, hash, make durable, rename.
fn join_blocking(
    root: &Path,
    target: &ObjectKey,
    parts: &[ObjectKey],
) -> Result<Digests, JoinError> {
    let objects = root.join(OBJECTS_DIR);
    let tmp_path = root.join(TMP_DIR).join(uuid::Uuid::new_v4().to_string());
    let mut guard = Temp(Some(tmp_path.clone()));
    let mut out = File::create(&tmp_path).map_err(|e| Error::io("create a temp file", e))?;
    let mut whole = StreamHasher::new(true);
    let (mut written, mut flushed_to) = (0u64, 0u64);
    for key in parts {
        let path = objects.join(key.rel_path());
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NotFound.into()),
            Err(e) => return Err(Error::io("open a part", e).into()),
        };
        let stored = Checksums::read_from(&f).map_err(|e| {
            corrupt(
                key,
                QuarantineNote::new(key, format!("checksum attribute unusable: {e}")),
            )
        })?;
        // Parts were written a while ago and may have left the page cache: have the kernel
        // read ahead while this thread hashes and writes (hints only; failures change speed).
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::Sequential);
        let mut part = PartCheck::new(&stored);
        let mut size = 0u64;
        loop {
            if size.is_multiple_of(READAHEAD) {
                let _ = rustix::fs::fadvise(
                    &f,
                    size + READAHEAD,
                    std::num::NonZeroU64::new(READAHEAD),
                    rustix::fs::Advice::WillNeed,
                );
            }
            // Never across a block boundary, so each block is checked before the next is read.
            let want = part.room(size).min(CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            let n = read_some(&mut f, &mut buf).map_err(|e| Error::io("read a part", e))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            let chunk = Bytes::from(buf);
            part.update(key, size, &chunk)
                .map_err(|note| corrupt(key, *note))?;
            whole.update(&chunk);
            out.write_all(&chunk)
                .map_err(|e| Error::io("write a joined object", e))?;
            size += n as u64;
            written += n as u64;
            if written - flushed_to >= READAHEAD {
                // Start writing the joined bytes out now, so the final fsync has little left.
                let _ = rustix::fs::fadvise(
                    &out,
                    flushed_to,
                    std::num::NonZeroU64::new(written - flushed_to),
                    rustix::fs::Advice::DontNeed,
                );
                flushed_to = written;
            }
        }
        part.finish(key, size).map_err(|note| corrupt(key, *note))?;
    }
    let checksums = whole
        .finish()
        .map_err(|e| Error::io("hash a joined object", e))?;
    checksums
        .write_to(&out)
        .map_err(|e| Error::io("store checksums on a joined object", e))?;
    out.sync_all()
        .map_err(|e| Error::io("fsync a joined object", e))?;
    drop(out);
    let final_path = objects.join(target.rel_path());
    let owner_dir = final_path
        .parent()
        .expect("object paths have an owner directory")
        .to_owned();
    match fs::create_dir(&owner_dir) {
        Ok(()) => sync_dir(&objects).map_err(|e| Error::io("fsync the objects directory", e))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create an owner directory", e).into()),
    }
    fs::rename(&tmp_path, &final_path)
        .map_err(|e| Error::io("rename a joined object into place", e))?;
    guard.0 = None;
    sync_dir(&owner_dir).map_err(|e| Error::io("fsync an owner directory", e))?;
    Ok(checksums.digests)
}

/// Checks a part's bytes as they are copied: block by block against its CRC32C sums, or
/// whole against the SHA-256 of a part written before block sums.
enum PartCheck {
    Blocks {
        blocks: BlockSums,
        crc: u32,
    },
    Whole {
        sha: Box<sha2::Sha256>,
        want: Option<[u8; 32]>,
        size: u64,
    },
}

impl PartCheck {
    fn new(stored: &Checksums) -> PartCheck {
        match &stored.blocks {
            Some(b) => PartCheck::Blocks {
                blocks: b.clone(),
                crc: 0,
            },
            None => PartCheck::Whole {
                sha: Box::default(),
                want: stored.digests.sha256,
                size: stored.digests.size,
            },
        }
    }

    /// How many bytes from `at` stay within one block.
    fn room(&self, at: u64) -> u64 {
        match self {
            PartCheck::Blocks { blocks, .. } => {
                let bs = blocks.block_size();
                bs - at % bs
            }
            PartCheck::Whole { .. } => u64::MAX,
        }
    }

    /// Feeds the bytes at `at` (never across a block boundary).
    fn update(
        &mut self,
        key: &ObjectKey,
        at: u64,
        chunk: &[u8],
    ) -> Result<(), Box<QuarantineNote>> {
        match self {
            PartCheck::Blocks { blocks, crc } => {
                *crc = crc32c_append(*crc, chunk);
                let end = at + chunk.len() as u64;
                if end.is_multiple_of(blocks.block_size()) || end == blocks.size() {
                    let i = blocks.block_of(at);
                    let (_, len) = blocks.extent(i);
                    blocks.verify(i, *crc, len).map_err(|bad| {
                        Box::new(QuarantineNote::new(key, format!("{bad}")).bad_block(&bad))
                    })?;
                    *crc = 0;
                }
                Ok(())
            }
            PartCheck::Whole { sha, .. } => {
                sha.update(chunk);
                Ok(())
            }
        }
    }

    /// Checks the part's length (and, for a whole-object check, its SHA-256).
    fn finish(self, key: &ObjectKey, size: u64) -> Result<(), Box<QuarantineNote>> {
        let (want_size, sums) = match self {
            PartCheck::Blocks { blocks, .. } => (blocks.size(), None),
            PartCheck::Whole { sha, want, size } => {
                let actual: [u8; 32] = sha.finalize().into();
                let ok = want == Some(actual);
                (size, (!ok).then(|| (want.map(|w| hex(&w)), hex(&actual))))
            }
        };
        if size == want_size && sums.is_none() {
            return Ok(());
        }
        let mut note =
            QuarantineNote::new(key, "part bytes do not match their stored checksum".into())
                .sizes(Some(want_size), Some(size));
        if let Some((want, actual)) = sums {
            note = note.sums(
                want.map(|w| format!("sha256:{w}")),
                Some(format!("sha256:{actual}")),
            );
        }
        Err(Box::new(note))
    }
}

fn read_some(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    // Fill the buffer as far as the file allows, so chunks stay large.
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
