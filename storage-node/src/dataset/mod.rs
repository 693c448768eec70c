//! Where a storage node keeps its bytes: a *dataset*, either a plain directory on any
//! filesystem (`dir`, the default) or a ZFS dataset (`zfs`, cargo feature `zfs`).
//!
//! Both backends implement [`Dataset`] and pass the same [`conformance`] suite. The object
//! store on top ([`crate::store::Store`]) only ever sees the dataset's root directory; what
//! differs is how the dataset is created, how its capacity is read and how it is snapshotted.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use async_trait::async_trait;

pub mod conformance;
pub mod dir;
#[cfg(feature = "zfs")]
pub mod zfs;

pub use dir::DirDataset;
#[cfg(feature = "zfs")]
pub use zfs::ZfsDataset;

/// Space on a dataset, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Size of the dataset (for `dir`, of the filesystem holding it).
    pub total: u64,
    /// Bytes this node may still write (excludes space reserved for root on `dir`).
    pub available: u64,
    /// Bytes in use.
    pub used: u64,
}

impl Capacity {
    /// Available space in whole MiB, rounded down (the heartbeat's `availableMB`).
    pub fn available_mb(&self) -> u64 {
        self.available / (1024 * 1024)
    }

    /// Used space as a percentage of the total, rounded up (the heartbeat's `percentUsed`), so
    /// a dataset with any data is never reported as 0 % and a full one is 100 %.
    pub fn percent_used(&self) -> u64 {
        if self.total == 0 {
            return 100;
        }
        (u128::from(self.used) * 100).div_ceil(u128::from(self.total)) as u64
    }
}

/// Failures of dataset operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// A filesystem call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// A snapshot or dataset name is not acceptable.
    #[error("invalid name {0:?}: use 1-200 characters from A-Z a-z 0-9 _ . : - (not . or ..)")]
    InvalidName(String),
    /// A snapshot of that name exists already.
    #[error("snapshot {0:?} already exists")]
    SnapshotExists(String),
    /// The filesystem cannot store the checksum attribute the object store relies on.
    #[error(
        "{path}: the filesystem does not support user extended attributes ({source}); \
         object checksums are kept in the `user.manta.digest` attribute, so the dataset must \
         be on a filesystem with user xattrs (ext4, xfs, btrfs, zfs, tmpfs on Linux >= 6.6)"
    )]
    NoXattrs {
        /// The dataset root.
        path: PathBuf,
        /// The error from `fsetxattr`.
        source: io::Error,
    },
    /// A ZFS operation failed.
    #[error("zfs: {0}")]
    Zfs(String),
    /// The backend was not compiled into this binary.
    #[error("dataset backend {0:?} is not built in (rebuild with `--features {0}`)")]
    NotBuilt(&'static str),
}

impl DatasetError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> DatasetError {
        DatasetError::Io {
            what: what.into(),
            source,
        }
    }
}

/// A storage node's dataset.
///
/// # Contract (checked by [`conformance::run_all`])
/// - [`Dataset::root`] is an existing, writable directory on a filesystem with user extended
///   attributes; files renamed within it keep their attributes.
/// - Opening an existing dataset again (same [`DatasetSpec`]) sees the same files: creation is
///   idempotent.
/// - [`Dataset::capacity`] reports `available <= total` and `used <= total`, and writing data
///   lowers `available` (possibly after a few seconds on ZFS, which accounts per transaction
///   group).
/// - [`Dataset::snapshot`] captures the files present at the time of the call: a file removed
///   afterwards is still readable under [`Dataset::snapshot_dir`], a file created afterwards is
///   not there. A second snapshot with the same name fails with
///   [`DatasetError::SnapshotExists`]. Names are checked by [`validate_name`].
#[async_trait]
pub trait Dataset: Send + Sync + fmt::Debug {
    /// `"dir"` or `"zfs"`.
    fn kind(&self) -> &'static str;

    /// What the dataset is, for humans and the heartbeat's `filesystem` field: the directory
    /// for `dir`, the dataset name for `zfs`.
    fn name(&self) -> String;

    /// How to open this dataset again.
    fn spec(&self) -> DatasetSpec;

    /// The directory under which the object store keeps everything.
    fn root(&self) -> &Path;

    /// Current space figures.
    ///
    /// # Errors
    /// When the filesystem or ZFS cannot be asked.
    async fn capacity(&self) -> Result<Capacity, DatasetError>;

    /// Takes a snapshot named `name`.
    ///
    /// # Errors
    /// [`DatasetError::InvalidName`], [`DatasetError::SnapshotExists`], or the backend's error.
    async fn snapshot(&self, name: &str) -> Result<(), DatasetError>;

    /// Whether a snapshot named `name` exists.
    ///
    /// # Errors
    /// [`DatasetError::InvalidName`] or the backend's error.
    async fn snapshot_exists(&self, name: &str) -> Result<bool, DatasetError>;

    /// The directory where a snapshot's files can be read (relative layout as under
    /// [`Dataset::root`]).
    fn snapshot_dir(&self, name: &str) -> PathBuf;
}

/// How to find or create a dataset: `dir:/path` (or just `/path`) or `zfs:pool/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSpec {
    /// A directory, created when missing.
    Dir(PathBuf),
    /// A ZFS filesystem `pool/...`, created (compression=lz4, checksum=on) when missing and
    /// mounted where its `mountpoint` property says.
    Zfs(String),
}

impl FromStr for DatasetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix("zfs:") {
            validate_zfs_name(name)?;
            return Ok(DatasetSpec::Zfs(name.to_owned()));
        }
        let path = s.strip_prefix("dir:").unwrap_or(s);
        if path.is_empty() {
            return Err("empty dataset path (expected dir:/path or zfs:pool/name)".into());
        }
        if path.contains('\0') {
            return Err("dataset path contains NUL".into());
        }
        Ok(DatasetSpec::Dir(PathBuf::from(path)))
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetSpec::Dir(p) => write!(f, "dir:{}", p.display()),
            DatasetSpec::Zfs(n) => write!(f, "zfs:{n}"),
        }
    }
}

/// Opens (creating when missing) the dataset a spec names.
///
/// # Errors
/// The backend's error, or [`DatasetError::NotBuilt`] for `zfs` without the feature.
pub async fn open(spec: &DatasetSpec) -> Result<Box<dyn Dataset>, DatasetError> {
    match spec {
        DatasetSpec::Dir(p) => Ok(Box::new(DirDataset::open(p).await?)),
        #[cfg(feature = "zfs")]
        DatasetSpec::Zfs(name) => Ok(Box::new(ZfsDataset::open(name).await?)),
        #[cfg(not(feature = "zfs"))]
        DatasetSpec::Zfs(_) => Err(DatasetError::NotBuilt("zfs")),
    }
}

/// Checks a snapshot name: 1-200 characters from `A-Z a-z 0-9 _ . : -`, not `.` or `..`
/// (names end up in paths and in ZFS snapshot names, so the set is the intersection of both).
///
/// # Errors
/// [`DatasetError::InvalidName`].
pub fn validate_name(name: &str) -> Result<(), DatasetError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DatasetError::InvalidName(name.to_owned()))
    }
}

/// Checks a ZFS filesystem name `pool/child/...`: components as [`validate_name`], at least
/// a pool, no snapshot (`@`) or bookmark (`#`) part.
///
/// # Errors
/// A message saying what is wrong.
pub fn validate_zfs_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("invalid ZFS dataset name {name:?}"));
    }
    for part in name.split('/') {
        validate_name(part).map_err(|_| format!("invalid ZFS dataset name {name:?}"))?;
    }
    Ok(())
}

/// Runs blocking filesystem work off the async runtime, attaching `what` to any error.
pub(crate) async fn blocking<T, F>(what: &str, f: F) -> Result<T, DatasetError>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    manta_util::blocking(f)
        .await
        .map_err(|e| DatasetError::io(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn specs() {
        assert_eq!(
            "dir:/srv/x".parse::<DatasetSpec>(),
            Ok(DatasetSpec::Dir("/srv/x".into()))
        );
        assert_eq!(
            "/srv/x".parse::<DatasetSpec>(),
            Ok(DatasetSpec::Dir("/srv/x".into()))
        );
        assert_eq!(
            "zfs:tank/manta".parse::<DatasetSpec>(),
            Ok(DatasetSpec::Zfs("tank/manta".into()))
        );
        for bad in [
            "",
            "dir:",
            "zfs:",
            "zfs:tank//x",
            "zfs:tank/a@b",
            "zfs:/tank",
        ] {
            assert!(bad.parse::<DatasetSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capacity_figures() {
        let c = Capacity {
            total: 1000 * 1024 * 1024,
            available: 300 * 1024 * 1024 + 5,
            used: 1,
        };
        assert_eq!(c.available_mb(), 300);
        assert_eq!(c.percent_used(), 1, "any use rounds up to 1 %");
        let full = Capacity {
            total: 10,
            available: 0,
            used: 10,
        };
        assert_eq!(full.percent_used(), 100);
    }

    proptest! {
        #[test]
        fn spec_round_trip(s in "(dir:|zfs:)?[a-z/]{0,20}") {
            if let Ok(spec) = s.parse::<DatasetSpec>() {
                prop_assert_eq!(spec.to_string().parse::<DatasetSpec>(), Ok(spec));
            }
        }

        #[test]
        fn names_never_escape(s in ".{0,30}") {
            if validate_name(&s).is_ok() {
                prop_assert!(!s.contains('/') && s != ".." && !s.contains('@'));
            }
        }
    }
}
