//! The conformance suite every [`Dataset`] backend must pass: the contract in the trait's docs,
//! checked against a real dataset. `tests/dataset_dir.rs` runs it on a temp directory,
//! `tests/zfs.rs` on a real ZFS pool (inside the qemu guest of the ZFS test tier).
//!
//! Each check leaves the dataset as it found it, apart from snapshots (named with a random
//! suffix) which a backend may not be able to delete.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Dataset, DatasetError};
use crate::digest::{Checksums, Digests};
use storage_api::blocks::{BlockSums, block_size_for};

/// A failed conformance check.
#[derive(Debug, thiserror::Error)]
#[error("{check}: {message}")]
pub struct Failure {
    /// The check that failed.
    pub check: &'static str,
    /// What was wrong.
    pub message: String,
}

fn fail(check: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        check,
        message: message.into(),
    }
}

macro_rules! ensure {
    ($check:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(fail($check, format!($($fmt)+)));
        }
    };
}

trait Ctx<T> {
    fn ctx(self, check: &'static str, what: &str) -> Result<T, Failure>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, check: &'static str, what: &str) -> Result<T, Failure> {
        self.map_err(|e| fail(check, format!("{what}: {e}")))
    }
}

/// Runs every check, stopping at the first failure.
///
/// # Errors
/// The first failed check.
pub async fn run_all(ds: &dyn Dataset) -> Result<(), Failure> {
    check_root(ds).await?;
    check_xattrs_survive_rename(ds).await?;
    check_capacity(ds).await?;
    check_snapshot(ds).await?;
    check_snapshot_names(ds).await?;
    check_reopen(ds).await?;
    Ok(())
}

/// Deterministic incompressible bytes (compressing backends must not hide writes).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn scratch(ds: &dyn Dataset, tag: &str) -> PathBuf {
    ds.root().join(format!(
        "conformance-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The root is a writable directory; a written file reads back identically.
///
/// # Errors
/// When it is not.
pub async fn check_root(ds: &dyn Dataset) -> Result<(), Failure> {
    const C: &str = "root";
    let root = ds.root().to_owned();
    let meta = fs::metadata(&root).ctx(C, "stat the root")?;
    ensure!(C, meta.is_dir(), "{} is not a directory", root.display());
    let p = scratch(ds, "root");
    let data = noise(100_000, 1);
    let (p2, d2) = (p.clone(), data.clone());
    let back = manta_util::blocking(move || {
        write_synced(&p2, &d2)?;
        let back = fs::read(&p2)?;
        fs::remove_file(&p2)?;
        Ok(back)
    })
    .await
    .ctx(C, "write, read and remove a file in the root")?;
    ensure!(C, back == data, "a file read back differently");
    ensure!(C, !p.exists(), "a removed file is still there");
    Ok(())
}

/// Checksum attributes written on a file are read back, also after the file is renamed into a
/// subdirectory (how uploads, GC and quarantine move objects).
///
/// # Errors
/// When they are not.
pub async fn check_xattrs_survive_rename(ds: &dyn Dataset) -> Result<(), Failure> {
    const C: &str = "xattrs";
    let a = scratch(ds, "xattr");
    let subdir = scratch(ds, "xattr-dir");
    let b = subdir.join("moved");
    // The largest table an object can have (512 block sums): what the attribute must hold.
    let size = 1u64 << 40;
    let blocks = BlockSums::new(block_size_for(size), size, (0..512).collect())
        .expect("512 sums cover a 1 TiB object");
    let digests = Checksums {
        digests: Digests {
            size,
            crc32c: Some(blocks.whole()),
            md5: Some([7; 16]),
            sha256: None,
        },
        blocks: Some(blocks),
    };
    let written = digests.clone();
    let (a2, b2, sub2) = (a.clone(), b.clone(), subdir.clone());
    let read = manta_util::blocking(move || {
        let mut f = fs::File::create(&a2)?;
        f.write_all(b"checksummed")?;
        written.write_to(&f)?;
        f.sync_all()?;
        drop(f);
        fs::create_dir(&sub2)?;
        fs::rename(&a2, &b2)?;
        let read = Checksums::read_from(&fs::File::open(&b2)?);
        fs::remove_dir_all(&sub2)?;
        Ok(read)
    })
    .await
    .ctx(C, "write, rename and read back a file with an attribute")?;
    let read = read.ctx(C, "read the attribute after the rename")?;
    ensure!(
        C,
        read == digests,
        "attribute changed: {read:?} != {digests:?}"
    );
    Ok(())
}

/// Capacity figures are consistent, and writing incompressible data lowers `available`.
///
/// # Errors
/// When they are not.
pub async fn check_capacity(ds: &dyn Dataset) -> Result<(), Failure> {
    const C: &str = "capacity";
    const SIZE: usize = 16 << 20;
    let before = ds.capacity().await.ctx(C, "read capacity")?;
    ensure!(C, before.total > 0, "total is zero: {before:?}");
    ensure!(
        C,
        before.available <= before.total && before.used <= before.total,
        "inconsistent figures: {before:?}"
    );
    ensure!(
        C,
        before.available >= 4 * SIZE as u64,
        "too little space to run the check: {before:?}"
    );
    let p = scratch(ds, "fill");
    let p2 = p.clone();
    manta_util::blocking(move || write_synced(&p2, &noise(SIZE, 7)))
        .await
        .ctx(C, "write 16 MiB")?;
    // ZFS accounts space per transaction group (every few seconds): poll rather than expect
    // the figure to move at once. Other writers on a shared filesystem add noise, so only ask
    // for half of what was written.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = ds.capacity().await.ctx(C, "read capacity")?;
    while before.available.saturating_sub(after.available) < SIZE as u64 / 2
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = ds.capacity().await.ctx(C, "read capacity")?;
    }
    let _ = fs::remove_file(&p);
    ensure!(
        C,
        before.available.saturating_sub(after.available) >= SIZE as u64 / 2,
        "writing 16 MiB did not lower available space: before {before:?}, after {after:?}"
    );
    ensure!(
        C,
        after.available <= after.total && after.used <= after.total,
        "inconsistent figures after writing: {after:?}"
    );
    Ok(())
}

/// A snapshot keeps files that existed when it was taken, excludes later ones, and cannot be
/// taken twice under one name.
///
/// # Errors
/// When it does not.
pub async fn check_snapshot(ds: &dyn Dataset) -> Result<(), Failure> {
    const C: &str = "snapshot";
    let name = format!("conformance-{}", uuid::Uuid::new_v4().simple());
    let dir = scratch(ds, "snap");
    let before = dir.join("before");
    let after = dir.join("after");
    let data = noise(64 * 1024, 3);
    let (d2, b2, data2) = (dir.clone(), before.clone(), data.clone());
    manta_util::blocking(move || {
        fs::create_dir(&d2)?;
        write_synced(&b2, &data2)
    })
    .await
    .ctx(C, "write a file")?;
    ensure!(
        C,
        !ds.snapshot_exists(&name).await.ctx(C, "look up")?,
        "a snapshot that was never taken exists"
    );
    ds.snapshot(&name).await.ctx(C, "take a snapshot")?;
    ensure!(
        C,
        ds.snapshot_exists(&name).await.ctx(C, "look up")?,
        "the snapshot just taken does not exist"
    );
    match ds.snapshot(&name).await {
        Err(DatasetError::SnapshotExists(n)) if n == name => {}
        other => return Err(fail(C, format!("second snapshot {name}: {other:?}"))),
    }
    let (b3, a3) = (before.clone(), after.clone());
    manta_util::blocking(move || {
        fs::remove_file(&b3)?;
        write_synced(&a3, b"later")
    })
    .await
    .ctx(C, "change the live files")?;
    let rel = dir
        .strip_prefix(ds.root())
        .expect("scratch paths are under the root");
    let in_snap = ds.snapshot_dir(&name).join(rel);
    let kept = fs::read(in_snap.join("before")).ctx(C, "read the file from the snapshot")?;
    ensure!(C, kept == data, "the snapshot's copy differs");
    ensure!(
        C,
        !in_snap.join("after").exists(),
        "a file created after the snapshot is in it"
    );
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// Names that could escape the snapshot area or confuse ZFS are refused.
///
/// # Errors
/// When one is accepted.
pub async fn check_snapshot_names(ds: &dyn Dataset) -> Result<(), Failure> {
    const C: &str = "snapshot names";
    for bad in ["", ".", "..", "a/b", "a@b", "with space", "x\0y"] {
        match ds.snapshot(bad).await {
            Err(DatasetError::InvalidName(_)) => {}
            other => return Err(fail(C, format!("{bad:?} gave {other:?}"))),
        }
    }
    Ok(())
}

/// Opening the same spec again is idempotent and sees the same files.
///
/// # Errors
/// When it is not.
pub async fn check_reopen(ds: &dyn Dataset) -> Result<(), Failure> {
    const C: &str = "reopen";
    let p = scratch(ds, "reopen");
    fs::write(&p, b"still here").ctx(C, "write a file")?;
    let again = super::open(&ds.spec())
        .await
        .ctx(C, "open the dataset again")?;
    ensure!(
        C,
        again.root() == ds.root(),
        "the root moved: {} != {}",
        again.root().display(),
        ds.root().display()
    );
    let rel = p.strip_prefix(ds.root()).expect("under the root");
    let back =
        fs::read(again.root().join(rel)).ctx(C, "read the file through the reopened dataset")?;
    let _ = fs::remove_file(&p);
    ensure!(
        C,
        back == b"still here",
        "reopened dataset sees other bytes"
    );
    Ok(())
}
