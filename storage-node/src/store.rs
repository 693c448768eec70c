//! The object files on a dataset: how uploads become durable files, how they are read back,
//! and how GC and scrub move them aside.
//!
//! # Layout under the dataset root
//! - `objects/<owner>/<objectId>`: the bytes of one object, with its [`Digests`] in the
//!   `user.manta.digest` extended attribute.
//! - `tmp/<uuid>`: uploads in progress. Removed when an upload fails or its client goes away,
//!   and all of them at start-up (a crash mid-upload leaves one behind).
//! - `tombstone/<YYYY-MM-DD>/<owner>/<objectId>`: objects GC has removed, kept until the grace
//!   period passes.
//! - `quarantine/<owner>/<objectId>` (+ `<objectId>.json`, why): copies scrub or a read found
//!   corrupt.
//!
//! # Guarantees
//! - A reader sees a complete object or none: bytes are written to `tmp/`, the checksums set,
//!   the file fsynced, renamed into `objects/`, and the directory fsynced, in that order. Two
//!   uploads of one id each write their own temp file; the last rename wins, whole.
//! - An upload whose caller drops it (client disconnect, handler cancelled) leaves nothing: the
//!   writer thread removes its temp file when the channel closes without a finish message.
//! - No file I/O or hashing runs on the async runtime: each upload has a writer on the blocking
//!   pool fed through a bounded channel (so a slow disk slows the client down: backpressure),
//!   and each read has a reader on the blocking pool likewise.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use manta_types::ObjectId;
use manta_util::metrics::Metrics;
use serde::{Deserialize, Serialize};

use crate::dataset::dir::sync_dir;
use crate::digest::{Checksums, Digests, StreamHasher};
use crate::error::Error;
use storage_api::blocks::{BadBlock, BlockSums, crc32c_hex};
pub(crate) use storage_api::{OBJECTS_DIR, ObjectKey};

/// Uploads in progress.
pub const TMP_DIR: &str = "tmp";
/// Objects removed by GC, by day.
pub const TOMBSTONE_DIR: &str = "tombstone";
/// Corrupt copies set aside by scrub.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Upload bytes are handed to the writer in chunks of about this size: large enough that a
/// write syscall and a channel hop are cheap per byte, small enough that many concurrent
/// uploads stay within a small memory budget.
const WRITE_CHUNK: usize = 128 * 1024;
/// Every this many bytes an upload asks the kernel to start writing the previous bytes out,
/// so the disk works while the rest of the body streams in and is hashed, and the final fsync
/// has little left to do (otherwise nothing reaches the disk before the fsync until the
/// machine-wide dirty threshold, and the upload takes hashing time *plus* disk time).
const WRITEBACK_WINDOW: u64 = 8 * 1024 * 1024;
/// Reads of copies without block sums (written by earlier versions) are done in chunks of this
/// size.
const READ_CHUNK: usize = 256 * 1024;
/// A block up to this size is read whole, checked, and sent from the same buffer; a larger one
/// (objects over 2 GiB have them) is checked in a first pass and then read again in chunks of
/// [`READ_CHUNK`], so no read holds more than this in memory.
const READ_BLOCK_MAX: u64 = 4 * 1024 * 1024;

/// Limits and expectations for one upload.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// Refuse bodies larger than this.
    pub max_size: u64,
    /// Abandon the upload when no bytes arrive for this long.
    pub idle_timeout: Duration,
    /// The body's MD5 must equal this (`Content-MD5`).
    pub expected_md5: Option<[u8; 16]>,
    /// Compute the body's MD5 (also without an expected one).
    pub compute_md5: bool,
    /// The declared `Content-Length`, checked against `max_size` before reading anything.
    pub content_length: Option<u64>,
}

/// An object opened for reading.
#[derive(Debug)]
pub struct ObjectFile {
    /// The open file (kept open, so a concurrent delete or replace does not disturb the read).
    pub file: File,
    /// Its stored checksums.
    pub checksums: Checksums,
    /// Its size.
    pub size: u64,
    /// Its modification time (when it was written).
    pub mtime: SystemTime,
}

/// Why a copy was quarantined, stored beside it as `<objectId>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineNote {
    /// The object's owner.
    pub owner: String,
    /// The object id.
    pub object_id: String,
    /// What was wrong.
    pub reason: String,
    /// The stored checksum that failed (`crc32c:<hex>` of a block, `sha256:<hex>` of a whole
    /// copy written by an earlier version), when there was one.
    pub expected: Option<String>,
    /// What the bytes hashed to, in the same form, when they could be read.
    pub actual: Option<String>,
    /// The failing block's first byte, for a copy with block sums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Size recorded at upload.
    pub expected_size: Option<u64>,
    /// Size found.
    pub actual_size: Option<u64>,
    /// When it was found, ms since the epoch.
    pub detected_at: u64,
}

impl QuarantineNote {
    /// A note on the copy `key`, found wrong for `reason` now.
    pub fn new(key: &ObjectKey, reason: String) -> QuarantineNote {
        QuarantineNote {
            owner: key.owner.to_string(),
            object_id: key.id.to_string(),
            reason,
            expected: None,
            actual: None,
            offset: None,
            expected_size: None,
            actual_size: None,
            detected_at: manta_types::time::now_ms(),
        }
    }

    /// With the sizes recorded at upload and found.
    #[must_use]
    pub fn sizes(mut self, expected: Option<u64>, actual: Option<u64>) -> QuarantineNote {
        self.expected_size = expected;
        self.actual_size = actual;
        self
    }

    /// With the checksums that disagreed.
    #[must_use]
    pub fn sums(mut self, expected: Option<String>, actual: Option<String>) -> QuarantineNote {
        self.expected = expected;
        self.actual = actual;
        self
    }

    /// With the block that failed.
    #[must_use]
    pub fn bad_block(self, bad: &BadBlock) -> QuarantineNote {
        let mut n = self.sums(
            Some(format!("crc32c:{}", crc32c_hex(bad.expected))),
            Some(format!("crc32c:{}", crc32c_hex(bad.actual))),
        );
        n.offset = Some(bad.offset);
        n
    }
}

/// Why reading a chunk of a copy failed.
#[derive(Debug)]
pub enum ReadError {
    /// The disk or the file.
    Io(io::Error),
    /// A block's bytes differ from its stored sum.
    Bad(BadBlock),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

/// The next chunk of a read, and the block it verified (when it checked one).
type Chunk = Result<(Bytes, Option<usize>), ReadError>;

/// A read in progress (see [`Store::read_stream`]).
struct Reading {
    file: Arc<File>,
    blocks: Option<Arc<BlockSums>>,
    next: u64,
    end: u64,
    /// The last block checked by a separate pass (blocks over [`READ_BLOCK_MAX`]).
    verified: Option<usize>,
    pending: Option<tokio::task::JoinHandle<Chunk>>,
    store: Arc<Store>,
    key: ObjectKey,
}

impl Reading {
    /// Starts reading the next chunk, if any is left.
    fn read_ahead(&mut self) {
        if self.next >= self.end {
            return;
        }
        let (file, from, end, verified) = (self.file.clone(), self.next, self.end, self.verified);
        let Some(blocks) = self.blocks.clone() else {
            let n = (end - from).min(READ_CHUNK as u64);
            self.next += n;
            self.pending = Some(tokio::task::spawn_blocking(move || {
                Ok((read_at(&file, from, n)?, None))
            }));
            return;
        };
        let i = blocks.block_of(from);
        let (bstart, blen) = blocks.extent(i);
        let bend = bstart + blen;
        if blen <= READ_BLOCK_MAX {
            // The whole block: read, check, and send the part asked for from the same buffer.
            let upto = end.min(bend);
            self.next = upto;
            self.pending = Some(tokio::task::spawn_blocking(move || {
                let block = read_at(&file, bstart, blen)?;
                blocks.check(i, &block).map_err(ReadError::Bad)?;
                Ok((
                    block.slice((from - bstart) as usize..(upto - bstart) as usize),
                    None,
                ))
            }));
        } else {
            // A large block: check it in a first pass (once), then send it in chunks.
            let upto = end.min(bend).min(from + READ_CHUNK as u64);
            self.next = upto;
            self.pending = Some(tokio::task::spawn_blocking(move || {
                if verified != Some(i) {
                    check_block(&file, &blocks, i)?;
                }
                Ok((read_at(&file, from, upto - from)?, Some(i)))
            }));
        }
    }
}

/// Reads `len` bytes of `file` at `off`.
fn read_at(file: &File, off: u64, len: u64) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len as usize];
    read_full_at(file, &mut buf, off)?;
    Ok(Bytes::from(buf))
}

/// Checks block `i` of `file` against `blocks`, reading it in chunks (blocking).
///
/// # Errors
/// [`ReadError::Bad`] for a block that fails; I/O errors.
pub fn check_block(file: &File, blocks: &BlockSums, i: usize) -> Result<(), ReadError> {
    let (start, len) = blocks.extent(i);
    let mut crc = 0u32;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(READ_CHUNK as u64) as usize;
        read_full_at(file, &mut buf[..n], start + done)?;
        crc = storage_api::blocks::crc32c_append(crc, &buf[..n]);
        done += n as u64;
    }
    blocks.verify(i, crc, len).map_err(ReadError::Bad)
}

/// The object files of one dataset.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    metrics: Arc<Metrics>,
    /// Woken when a copy is quarantined, so its record reaches Moray (and the repairer) at once.
    quarantined: tokio::sync::Notify,
    /// An exclusive `flock` on `<root>/.lock`, held while the store is open: a second node on
    /// the same dataset would delete the first one's uploads in progress when it cleans `tmp/`.
    _lock: File,
}

/// Removes a temp file when dropped, unless disarmed (after the rename).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        let Some(p) = self.0.take() else { return };
        let remove = move || {
            if let Err(e) = fs::remove_file(&p)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a temp file");
            }
        };
        // Possibly dropped on a runtime worker (an upload future cancelled between writes):
        // unlink on the blocking pool. Error paths that answer the client remove the file
        // themselves first ([`TempGuard::remove_now`]), so the answer never races the unlink.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

impl TempGuard {
    /// Removes the file now (blocking), disarming the guard.
    fn remove_now(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = fs::remove_file(&p)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove a temp file");
        }
    }
}

type WriteTask = tokio::task::JoinHandle<(Writer, Result<(), Error>)>;

/// An upload between chunks: the writer is either home or out writing one chunk on the
/// blocking pool. No thread is held while waiting for the client.
struct Upload {
    writer: Option<Writer>,
    inflight: Option<WriteTask>,
}

impl Upload {
    /// Waits for the chunk being written, if any.
    async fn settle(&mut self) -> Result<(), Error> {
        if let Some(h) = self.inflight.take() {
            let (w, r) = h
                .await
                .map_err(|e| Error::Internal(format!("upload writer panicked: {e}")))?;
            self.writer = Some(w);
            r?;
        }
        Ok(())
    }

    /// Writes `chunk` in the background after the previous one.
    async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        self.settle().await?;
        let mut w = self.writer.take().expect("the writer is home once settled");
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            let r = w.write(&chunk);
            (w, r)
        }));
        Ok(())
    }

    /// Removes the temp file (on the blocking pool) and waits until it is gone, so an error
    /// answer is only sent once nothing is left behind.
    async fn discard(&mut self) {
        if let Some(h) = self.inflight.take()
            && let Ok((w, _)) = h.await
        {
            self.writer = Some(w);
        }
        if let Some(mut w) = self.writer.take() {
            let _ = manta_util::blocking(move || {
                w.guard.remove_now();
                Ok(())
            })
            .await;
        }
    }
}

impl Store {
    /// Opens the store on a dataset root: creates the areas and removes every temp file left by
    /// a previous run (uploads that never finished).
    ///
    /// # Errors
    /// When the areas cannot be created or cleaned.
    pub async fn open(root: &Path, metrics: Arc<Metrics>) -> Result<Store, Error> {
        let r = root.to_owned();
        let lock = manta_util::blocking(move || {
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(r.join(".lock"))?;
            match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => Ok(Ok(f)),
                Err(rustix::io::Errno::WOULDBLOCK) => Ok(Err(())),
                Err(e) => Err(e.into()),
            }
        })
        .await
        .map_err(|e| Error::io("lock the dataset", e))?
        .map_err(|()| {
            Error::Internal(format!(
                "dataset {} is in use by another storage node (it holds {}/.lock)",
                root.display(),
                root.display()
            ))
        })?;
        let r = root.to_owned();
        let removed = manta_util::blocking(move || {
            for d in [OBJECTS_DIR, TMP_DIR, TOMBSTONE_DIR, QUARANTINE_DIR] {
                fs::create_dir_all(r.join(d))?;
            }
            let mut removed = 0u64;
            for e in fs::read_dir(r.join(TMP_DIR))? {
                let e = e?;
                if e.file_type()?.is_dir() {
                    fs::remove_dir_all(e.path())?;
                } else {
                    fs::remove_file(e.path())?;
                }
                removed += 1;
            }
            sync_dir(&r.join(TMP_DIR))?;
            Ok(removed)
        })
        .await
        .map_err(|e| Error::io("prepare the object store", e))?;
        if removed > 0 {
            tracing::info!(
                removed,
                "removed temp files of uploads interrupted by a restart"
            );
        }
        Ok(Store {
            root: root.to_owned(),
            metrics,
            quarantined: tokio::sync::Notify::new(),
            _lock: lock,
        })
    }

    /// Waits until a copy is quarantined (after this call began).
    pub async fn quarantine_happened(&self) {
        self.quarantined.notified().await;
    }

    /// The dataset root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where an object's file lives.
    pub fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(OBJECTS_DIR).join(key.rel_path())
    }

    /// Where a quarantined copy lives.
    pub fn quarantine_path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(QUARANTINE_DIR).join(key.rel_path())
    }

    /// Whether a copy of `key` sits in the quarantine area.
    pub async fn is_quarantined(&self, key: &ObjectKey) -> bool {
        let p = self.quarantine_path(key);
        manta_util::blocking(move || Ok(p.exists()))
            .await
            .unwrap_or(false)
    }

    /// Streams `body` into the object `key`, durably, and returns its digests.
    ///
    /// Cancel safety: dropping the future abandons the upload; the temp file is removed by the
    /// writer and no object appears.
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::IdleTimeout`], [`Error::Abandoned`] (body error),
    /// [`Error::Md5Mismatch`], [`Error::NoSpace`], I/O errors. In every error case nothing is
    /// left behind and an existing object of the same id is untouched.
    pub async fn put<S, E>(
        &self,
        key: &ObjectKey,
        mut body: S,
        opts: &PutOptions,
    ) -> Result<Digests, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if let Some(len) = opts.content_length
            && len > opts.max_size
        {
            return Err(Error::TooLarge { max: opts.max_size });
        }
        let tmp = self
            .root
            .join(TMP_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string());
        let t2 = tmp.clone();
        let file =
            manta_util::blocking(move || File::options().write(true).create_new(true).open(&t2))
                .await
                .map_err(|e| Error::io("create a temp file", e))?;
        let mut upload = Upload {
            writer: Some(Writer {
                guard: TempGuard(Some(tmp)),
                file: Some(file),
                hasher: StreamHasher::new(opts.compute_md5 || opts.expected_md5.is_some()),
                written: 0,
                writeback_from: 0,
                final_path: self.object_path(key),
                objects_dir: self.root.join(OBJECTS_DIR),
                expected_md5: opts.expected_md5,
                metrics: self.metrics.clone(),
            }),
            inflight: None,
        };
        let mut received = 0u64;
        let fed: Result<(), Error> = async {
            let mut buf = BytesMut::new();
            loop {
                // The next body chunk arrives while the previous one is being written.
                let next = tokio::time::timeout(opts.idle_timeout, body.next())
                    .await
                    .map_err(|_| Error::IdleTimeout(opts.idle_timeout))?;
                let chunk = match next {
                    None => break,
                    Some(Err(e)) => return Err(Error::Abandoned(e.to_string())),
                    Some(Ok(c)) => c,
                };
                received += chunk.len() as u64;
                if received > opts.max_size {
                    return Err(Error::TooLarge { max: opts.max_size });
                }
                let out = if buf.is_empty() && chunk.len() >= WRITE_CHUNK {
                    Some(chunk)
                } else {
                    if buf.is_empty() {
                        buf.reserve(WRITE_CHUNK);
                    }
                    buf.extend_from_slice(&chunk);
                    (buf.len() >= WRITE_CHUNK).then(|| buf.split().freeze())
                };
                if let Some(out) = out {
                    upload.write(out).await?;
                }
            }
            if !buf.is_empty() {
                upload.write(buf.freeze()).await?;
            }
            upload.settle().await
        }
        .await;
        self.metrics.inc_by(
            "storage_bytes_in_total",
            "Object bytes received by PUT (including failed uploads).",
            &[],
            received as f64,
        );
        if let Err(e) = fed {
            upload.discard().await;
            return Err(e);
        }
        let w = upload
            .writer
            .take()
            .expect("the writer is home once settled");
        tokio::task::spawn_blocking(move || w.finish())
            .await
            .map_err(|e| Error::Internal(format!("upload writer panicked: {e}")))?
    }

    /// Opens an object for reading, with its checksums and size.
    ///
    /// A file whose size differs from the size recorded at upload is quarantined on the spot
    /// (it was truncated or extended behind our back) and reported as [`Error::Quarantined`].
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Quarantined`], or I/O errors.
    pub async fn open_object(&self, key: &ObjectKey) -> Result<ObjectFile, Error> {
        let path = self.object_path(key);
        let qpath = self.quarantine_path(key);
        let opened = manta_util::blocking(move || {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Ok(Err(qpath.exists()));
                }
                Err(e) => return Err(e),
            };
            let meta = file.metadata()?;
            let checksums = Checksums::read_from(&file);
            Ok(Ok((file, meta, checksums)))
        })
        .await
        .map_err(|e| Error::io("open an object", e))?;
        let (file, meta, checksums) = match opened {
            Ok(x) => x,
            Err(true) => return Err(Error::Quarantined),
            Err(false) => return Err(Error::NotFound),
        };
        let problem = match &checksums {
            Ok(c) if c.digests.size == meta.len() => None,
            Ok(c) => Some(format!(
                "file is {} bytes but {} were written",
                meta.len(),
                c.digests.size
            )),
            Err(e) => Some(format!("checksum attribute unusable: {e}")),
        };
        if let Some(reason) = problem {
            let note = QuarantineNote::new(key, reason).sizes(
                checksums.as_ref().ok().map(|c| c.digests.size),
                Some(meta.len()),
            );
            self.quarantine(key, &note).await?;
            return Err(Error::Quarantined);
        }
        let checksums = checksums.expect("checked above");
        Ok(ObjectFile {
            file,
            checksums,
            size: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// Streams `len` bytes of the object `obj` (`key`) from `start`. Each chunk is read on the
    /// blocking pool, one chunk ahead of the consumer; no thread waits on a slow client. Bytes
    /// sent are counted in `storage_bytes_out_total`.
    ///
    /// Every block the range touches is checked against its stored CRC32C before any of its
    /// bytes is sent. A block that fails ends the stream with an error at the block's first byte
    /// (the reader has received only good bytes, and can go on from another copy at that
    /// offset), and the copy is quarantined, which queues its repair. Copies written before
    /// block sums are streamed as they are (the front door checks their SHA-256).
    pub fn read_stream(
        self: &Arc<Self>,
        key: ObjectKey,
        obj: ObjectFile,
        start: u64,
        len: u64,
    ) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
        let mut st = Reading {
            file: Arc::new(obj.file),
            blocks: obj.checksums.blocks.map(Arc::new),
            next: start,
            end: start + len,
            verified: None,
            pending: None,
            store: self.clone(),
            key,
        };
        st.read_ahead();
        futures_util::stream::unfold(st, |mut st| async move {
            let h = st.pending.take()?;
            let item = h
                .await
                .unwrap_or_else(|e| Err(ReadError::Io(io::Error::other(e))));
            match item {
                Ok((b, verified)) => {
                    st.verified = verified.or(st.verified);
                    st.store.metrics.inc_by(
                        "storage_bytes_out_total",
                        "Object bytes read from the dataset for GET.",
                        &[],
                        b.len() as f64,
                    );
                    st.read_ahead();
                    Some((Ok(b), st))
                }
                Err(e) => {
                    // Stop after reporting the error.
                    st.next = st.end;
                    let e = match e {
                        ReadError::Io(e) => e,
                        ReadError::Bad(bad) => {
                            let note = QuarantineNote::new(&st.key, format!("a read found {bad}"))
                                .bad_block(&bad);
                            if let Err(e) = st.store.quarantine(&st.key, &note).await {
                                tracing::error!(object = %st.key, error = %e, "cannot quarantine a corrupt copy");
                            }
                            st.store.metrics.inc(
                                "storage_bad_block_reads_total",
                                "Reads stopped at a block that failed its checksum.",
                                &[],
                            );
                            io::Error::new(io::ErrorKind::InvalidData, bad.to_string())
                        }
                    };
                    Some((Err(e), st))
                }
            }
        })
    }

    /// Removes an object. Returns whether it existed.
    ///
    /// # Errors
    /// I/O errors other than "not found".
    pub async fn delete(&self, key: &ObjectKey) -> Result<bool, Error> {
        let path = self.object_path(key);
        manta_util::blocking(move || match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    sync_dir(dir)?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| Error::io("delete an object", e))
    }

    /// Moves an object into `tombstone/<day>/` (GC). Returns whether it existed.
    ///
    /// # Errors
    /// I/O errors other than "not found".
    pub async fn tombstone(&self, key: &ObjectKey, day: &str) -> Result<bool, Error> {
        let from = self.object_path(key);
        let to = self.root.join(TOMBSTONE_DIR).join(day).join(key.rel_path());
        move_aside(from, to)
            .await
            .map_err(|e| Error::io("move an object to the tombstone area", e))
    }

    /// Moves a corrupt object into the quarantine area with a note saying why. Returns whether
    /// the object was there to move.
    ///
    /// # Errors
    /// I/O errors other than "not found".
    pub async fn quarantine(&self, key: &ObjectKey, note: &QuarantineNote) -> Result<bool, Error> {
        let from = self.object_path(key);
        let to = self.quarantine_path(key);
        let note_path = to.with_extension("json");
        let note_bytes = serde_json::to_vec_pretty(note)
            .map_err(|e| Error::Internal(format!("encode a quarantine note: {e}")))?;
        let moved = move_aside(from, to)
            .await
            .map_err(|e| Error::io("move an object to quarantine", e))?;
        if moved {
            manta_util::blocking(move || {
                let mut f = File::create(&note_path)?;
                f.write_all(&note_bytes)?;
                f.sync_all()
            })
            .await
            .map_err(|e| Error::io("write a quarantine note", e))?;
            tracing::error!(
                object = %key,
                reason = %note.reason,
                "corrupt object copy quarantined; re-replicate it from another copy"
            );
            self.quarantined.notify_one();
            self.metrics.inc(
                "storage_quarantined_total",
                "Object copies moved to quarantine because they failed verification.",
                &[],
            );
        }
        Ok(moved)
    }

    /// The quarantine notes on this dataset (what an operator re-replicates).
    ///
    /// # Errors
    /// I/O errors.
    pub async fn quarantined(&self) -> Result<Vec<QuarantineNote>, Error> {
        let dir = self.root.join(QUARANTINE_DIR);
        manta_util::blocking(move || {
            let mut out = Vec::new();
            for owner in fs::read_dir(&dir)? {
                let owner = owner?;
                if !owner.file_type()?.is_dir() {
                    continue;
                }
                for e in fs::read_dir(owner.path())? {
                    let p = e?.path();
                    if p.extension().is_some_and(|x| x == "json")
                        && let Ok(bytes) = fs::read(&p)
                        && let Ok(note) = serde_json::from_slice(&bytes)
                    {
                        out.push(note);
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::io("list the quarantine area", e))
    }

    /// Lists the owners that have objects (directory names under `objects/`). Blocking.
    ///
    /// # Errors
    /// I/O errors.
    pub fn list_owners_blocking(&self) -> io::Result<Vec<uuid::Uuid>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join(OBJECTS_DIR))? {
            let e = e?;
            if let Some(u) = e
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<ObjectId>().ok())
            {
                out.push(*u.as_uuid());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Lists the object ids of one owner. Blocking.
    ///
    /// # Errors
    /// I/O errors.
    pub fn list_objects_blocking(&self, owner: &uuid::Uuid) -> io::Result<Vec<ObjectId>> {
        let dir = self
            .root
            .join(OBJECTS_DIR)
            .join(owner.hyphenated().to_string());
        let mut out = Vec::new();
        let entries = match fs::read_dir(dir) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in entries {
            if let Some(id) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes tombstone days older than `grace` (by the date in their name). Returns the
    /// days removed.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn expire_tombstones(
        &self,
        now_ms: u64,
        grace: Duration,
    ) -> Result<Vec<String>, Error> {
        let dir = self.root.join(TOMBSTONE_DIR);
        manta_util::blocking(move || {
            let mut removed = Vec::new();
            for e in fs::read_dir(&dir)? {
                let e = e?;
                let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Some(day_ms) = day_start_ms(&name) else {
                    tracing::warn!(entry = %name, "unexpected entry in the tombstone area; left alone");
                    continue;
                };
                // A day's directory may receive objects until its end.
                let end_of_day = day_ms + 86_400_000;
                if now_ms.saturating_sub(end_of_day) >= grace.as_millis() as u64 {
                    fs::remove_dir_all(e.path())?;
                    removed.push(name);
                }
            }
            if !removed.is_empty() {
                sync_dir(&dir)?;
            }
            Ok(removed)
        })
        .await
        .map_err(|e| Error::io("expire tombstones", e))
    }
}

/// `YYYY-MM-DD` of a millisecond timestamp (UTC).
pub fn day_of(ms: u64) -> String {
    manta_types::time::iso8601_ms(ms)[..10].to_owned()
}

/// The start (ms, UTC) of a `YYYY-MM-DD` day; `None` for anything else.
pub fn day_start_ms(day: &str) -> Option<u64> {
    if day.len() != 10 {
        return None;
    }
    manta_types::time::parse_iso8601_ms(&format!("{day}T00:00:00.000Z"))
}

fn read_full_at(file: &File, buf: &mut [u8], mut off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "object file is shorter than recorded",
                ));
            }
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Renames `from` to `to` (creating `to`'s parents), fsyncing both directories. `Ok(false)`
/// when `from` does not exist.
async fn move_aside(from: PathBuf, to: PathBuf) -> io::Result<bool> {
    manta_util::blocking(move || {
        if !from.exists() {
            return Ok(false);
        }
        let parent = to.parent().expect("area paths have parents");
        fs::create_dir_all(parent)?;
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        sync_dir(parent)?;
        if let Some(p) = from.parent() {
            sync_dir(p)?;
        }
        Ok(true)
    })
    .await
}

/// The blocking half of an upload: the temp file, the hashes, and the steps that make the
/// object durable. Dropping it before [`Writer::finish`] renamed the file removes the file.
struct Writer {
    guard: TempGuard,
    file: Option<File>,
    hasher: StreamHasher,
    written: u64,
    writeback_from: u64,
    final_path: PathBuf,
    objects_dir: PathBuf,
    expected_md5: Option<[u8; 16]>,
    metrics: Arc<Metrics>,
}

impl Writer {
    /// Hashes and writes one chunk (blocking).
    fn write(&mut self, b: &Bytes) -> Result<(), Error> {
        let file = self.file.as_mut().expect("the file is open until finish");
        self.hasher.update(b);
        file.write_all(b)
            .map_err(|e| Error::io("write an upload", e))?;
        self.written += b.len() as u64;
        if self.written - self.writeback_from >= WRITEBACK_WINDOW {
            // On Linux, DONTNEED starts asynchronous writeback of the dirty pages in the
            // range (and drops none of them until they are clean). Only a hint: failure
            // changes nothing but speed.
            let _ = rustix::fs::fadvise(
                &*file,
                self.writeback_from,
                std::num::NonZeroU64::new(self.written - self.writeback_from),
                rustix::fs::Advice::DontNeed,
            );
            self.writeback_from = self.written;
        }
        Ok(())
    }

    /// Checks the MD5, stores the checksums, fsyncs, renames into place and fsyncs the
    /// directory (blocking). On failure the temp file is gone when this returns.
    fn finish(mut self) -> Result<Digests, Error> {
        let r = self.try_finish();
        if r.is_err() {
            self.guard.remove_now();
        }
        r
    }

    fn try_finish(&mut self) -> Result<Digests, Error> {
        let file = self.file.take().expect("the file is open until finish");
        let checksums = std::mem::replace(&mut self.hasher, StreamHasher::new(false))
            .finish()
            .map_err(|e| Error::io("hash an upload", e))?;
        let digests = checksums.digests;
        if let Some(expected) = self.expected_md5
            && Some(expected) != digests.md5
        {
            return Err(Error::Md5Mismatch {
                expected: crate::digest::md5_base64(&expected),
                computed: digests.md5_base64().unwrap_or_default(),
            });
        }
        checksums
            .write_to(&file)
            .map_err(|e| Error::io("store checksums on an upload", e))?;
        let t = Instant::now();
        file.sync_all()
            .map_err(|e| Error::io("fsync an upload", e))?;
        self.observe_fsync("file", t);
        drop(file);
        let owner_dir = self.final_path.parent().expect("objects have a parent");
        match fs::create_dir(owner_dir) {
            Ok(()) => {
                let t = Instant::now();
                sync_dir(&self.objects_dir)
                    .map_err(|e| Error::io("fsync the objects directory", e))?;
                self.observe_fsync("dir", t);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create an owner directory", e)),
        }
        let tmp = self
            .guard
            .0
            .take()
            .expect("the temp path is set until the rename");
        if let Err(e) = fs::rename(&tmp, &self.final_path) {
            self.guard.0 = Some(tmp);
            return Err(Error::io("rename an upload into place", e));
        }
        let t = Instant::now();
        sync_dir(owner_dir).map_err(|e| Error::io("fsync an owner directory", e))?;
        self.observe_fsync("dir", t);
        Ok(digests)
    }

    fn observe_fsync(&self, kind: &str, started: Instant) {
        self.metrics.observe(
            "storage_fsync_seconds",
            "Time spent in fsync of object files and their directories.",
            &[("kind", kind)],
            started.elapsed().as_secs_f64(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let o = "a5a2a7b6-4a0e-4a0f-9c39-2c1b1b0b8f11";
        let i = "0b7a6f0e-3d7b-4c3e-8d7e-9a6d1e2f3a4b";
        let k = ObjectKey::parse(o, i).unwrap();
        assert_eq!(k.to_string(), format!("/{o}/{i}"));
        assert_eq!(
            ObjectKey::parse(&o.to_uppercase(), i).unwrap(),
            k,
            "upper case is the same uuid and maps to the same file"
        );
        assert!(matches!(
            ObjectKey::parse("jill", i).map_err(Error::from),
            Err(Error::InvalidPath(_))
        ));
        assert!(matches!(
            ObjectKey::parse(o, "..").map_err(Error::from),
            Err(Error::InvalidPath(_))
        ));
    }

    #[test]
    fn days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_start_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(
            day_start_ms(&day_of(1_700_000_000_000)).map(|d| d <= 1_700_000_000_000),
            Some(true)
        );
        assert_eq!(day_start_ms("nonsense"), None);
        assert_eq!(day_start_ms("2024-13-45"), None);
    }
}
