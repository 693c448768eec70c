//! Scrub: re-reads every object at a bounded rate and checks it against the checksums stored
//! with it (each block's CRC32C; the whole SHA-256 of a copy written before block sums). A copy that fails (bytes changed, truncated, checksum attribute gone) is moved to
//! the quarantine area with a note, logged at ERROR (a human must look), counted on
//! `/metrics`, and reported to whoever records quarantined copies (the Moray bucket
//! `manta_quarantine`, see [`crate::quarantine`]), so the front door reads another copy (this
//! node now answers 404 with `x-manta-quarantined: true`) and an operator can re-replicate.
//!
//! Scrub is paced by bytes read per second, so it never starves uploads and reads of disk
//! bandwidth. A pass visits objects owner by owner; objects added during a pass may be left
//! for the next.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use manta_util::metrics::Metrics;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::digest::{Checksums, to_hex};
use crate::error::Error;
use crate::store::{ObjectKey, QuarantineNote, ReadError, Store, check_block};

/// How scrub runs.
#[derive(Debug, Clone)]
pub struct ScrubConfig {
    /// Bytes read per second at most.
    pub rate_bytes_per_sec: u64,
    /// Pause between the end of one pass and the start of the next.
    pub interval: Duration,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig {
            rate_bytes_per_sec: 32 * 1024 * 1024,
            interval: Duration::from_secs(3600),
        }
    }
}

/// What one pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Objects verified.
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Copies found corrupt and quarantined.
    pub corrupt: Vec<QuarantineNote>,
    /// Objects that could not be read (I/O errors other than corruption).
    pub errors: u64,
}

/// Paces reads to a byte rate across a pass.
#[derive(Debug, Clone, Copy)]
struct Pacer {
    rate: u64,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    /// Accounts `n` bytes and sleeps (on the blocking thread) until the pass is back under the
    /// rate.
    fn consume(&mut self, n: u64) {
        self.bytes += n;
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

enum Verdict {
    Good(u64),
    Corrupt(QuarantineNote, (u64, u64)),
    Gone,
}

fn verify(
    store_key: ObjectKey,
    path: std::path::PathBuf,
    pacer: &mut Pacer,
    cancel: &CancellationToken,
) -> io::Result<Verdict> {
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Verdict::Gone),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let ino = (meta.dev(), meta.ino());
    let corrupt = |note: QuarantineNote| Ok(Verdict::Corrupt(note, ino));
    let note = |reason: String, size: Option<u64>| {
        QuarantineNote::new(&store_key, reason).sizes(size, Some(meta.len()))
    };
    let stored = match Checksums::read_from(&file) {
        Ok(d) => d,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidData
            ) =>
        {
            return corrupt(note(format!("checksum attribute unusable: {e}"), None));
        }
        Err(e) => return Err(e),
    };
    let size = stored.digests.size;
    if meta.len() != size {
        return corrupt(note(
            format!("file is {} bytes but {size} were written", meta.len()),
            Some(size),
        ));
    }
    let interrupted = || io::Error::new(io::ErrorKind::Interrupted, "scrub cancelled");
    // An EIO while reading is the disk telling us the bytes are gone: corrupt.
    let is_eio = |e: &io::Error| e.raw_os_error() == Some(5);
    if let Some(blocks) = &stored.blocks {
        for i in 0..blocks.len() {
            if cancel.is_cancelled() {
                return Err(interrupted());
            }
            match check_block(&file, blocks, i) {
                Ok(()) => {}
                Err(ReadError::Bad(bad)) => {
                    return corrupt(note(format!("scrub found {bad}"), Some(size)).bad_block(&bad));
                }
                Err(ReadError::Io(e)) if is_eio(&e) => {
                    return corrupt(note(format!("read error: {e}"), Some(size)));
                }
                Err(ReadError::Io(e)) => return Err(e),
            }
            pacer.consume(blocks.extent(i).1);
        }
        return Ok(Verdict::Good(size));
    }
    // A copy written before block sums: its whole SHA-256.
    let Some(want) = stored.digests.sha256 else {
        return corrupt(note(
            "checksum attribute has no checksum".into(),
            Some(size),
        ));
    };
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut total = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(interrupted());
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_eio(&e) => {
                return corrupt(note(format!("read error: {e}"), Some(size)));
            }
            Err(e) => return Err(e),
        };
        sha.update(&buf[..n]);
        total += n as u64;
        pacer.consume(n as u64);
    }
    let actual: [u8; 32] = sha.finalize().into();
    if total != size || actual != want {
        return corrupt(
            note(
                "SHA-256 of the bytes differs from the one stored at upload".into(),
                Some(size),
            )
            .sums(
                Some(format!("sha256:{}", to_hex(&want))),
                Some(format!("sha256:{}", to_hex(&actual))),
            ),
        );
    }
    Ok(Verdict::Good(total))
}

/// Verifies every object once. Stops early (with what it found so far) when `cancel` fires.
///
/// # Errors
/// When the object directories cannot be listed.
pub async fn scrub_pass(
    store: &Arc<Store>,
    config: &ScrubConfig,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> Result<ScrubReport, Error> {
    let mut report = ScrubReport::default();
    let mut pacer = Pacer {
        rate: config.rate_bytes_per_sec,
        started: Instant::now(),
        bytes: 0,
    };
    let s = store.clone();
    let owners = manta_util::blocking(move || s.list_owners_blocking())
        .await
        .map_err(|e| Error::io("list owners for scrub", e))?;
    for owner in owners {
        let s = store.clone();
        let ids = manta_util::blocking(move || s.list_objects_blocking(&owner))
            .await
            .map_err(|e| Error::io("list objects for scrub", e))?;
        for id in ids {
            if cancel.is_cancelled() {
                return Ok(report);
            }
            let key = ObjectKey { owner, id };
            let path = store.object_path(&key);
            let c = cancel.clone();
            let mut p = pacer;
            let res = tokio::task::spawn_blocking(move || {
                let v = verify(key, path, &mut p, &c);
                (v, p)
            })
            .await
            .map_err(|e| Error::Internal(format!("scrub worker panicked: {e}")))?;
            pacer = res.1;
            match res.0 {
                Ok(Verdict::Good(n)) => {
                    report.checked += 1;
                    report.bytes += n;
                    metrics.inc(
                        "storage_scrub_objects_total",
                        "Objects verified by scrub.",
                        &[],
                    );
                    metrics.inc_by(
                        "storage_scrub_bytes_total",
                        "Bytes read by scrub.",
                        &[],
                        n as f64,
                    );
                }
                Ok(Verdict::Gone) => {}
                Ok(Verdict::Corrupt(note, ino)) => {
                    report.checked += 1;
                    metrics.inc(
                        "storage_scrub_objects_total",
                        "Objects verified by scrub.",
                        &[],
                    );
                    if still_same_file(store, &key, ino).await
                        && store.quarantine(&key, &note).await?
                    {
                        metrics.inc(
                            "storage_scrub_corrupt_total",
                            "Corrupt object copies found by scrub.",
                            &[],
                        );
                        report.corrupt.push(note);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(report),
                Err(e) => {
                    report.errors += 1;
                    metrics.inc(
                        "storage_scrub_errors_total",
                        "Objects scrub could not read.",
                        &[],
                    );
                    tracing::warn!(object = %key, error = %e, "scrub could not read an object");
                }
            }
        }
    }
    metrics.set(
        "storage_scrub_last_pass_completed_ms",
        "When the last complete scrub pass ended (ms since the epoch).",
        &[],
        manta_types::time::now_ms() as f64,
    );
    tracing::info!(
        checked = report.checked,
        bytes = report.bytes,
        corrupt = report.corrupt.len(),
        errors = report.errors,
        "scrub pass complete"
    );
    Ok(report)
}

/// Whether the object's path still names the file that was verified (a new upload of the same
/// id may have replaced a corrupt copy with a good one meanwhile).
async fn still_same_file(store: &Store, key: &ObjectKey, ino: (u64, u64)) -> bool {
    let p = store.object_path(key);
    manta_util::blocking(move || {
        let m = std::fs::metadata(p)?;
        Ok((m.dev(), m.ino()) == ino)
    })
    .await
    .unwrap_or(false)
}
