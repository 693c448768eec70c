//! The `dir` backend: a plain directory on any filesystem with user extended attributes.
//!
//! Capacity comes from `statvfs` of the directory (so it is the whole filesystem's). A snapshot
//! is a tree of hard links under `<root>/snapshots/<name>/`: the object store never changes a
//! file in place (uploads are renamed into place, scrub only reads, GC and quarantine rename),
//! so a hard link keeps the bytes as they were when the snapshot was taken even after the
//! original is deleted or replaced. The temp area (`tmp/`) and the snapshots themselves are not
//! included. A snapshot is built under a hidden name and renamed into place, so it is either
//! complete or absent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Capacity, Dataset, DatasetError, DatasetSpec, blocking, validate_name};

/// The directory (under the root) holding `dir` snapshots.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Top-level entries never copied into a snapshot.
const NOT_SNAPSHOTTED: &[&str] = &[SNAPSHOTS_DIR, crate::store::TMP_DIR, ".lock"];

/// A dataset that is a directory.
#[derive(Debug, Clone)]
pub struct DirDataset {
    root: PathBuf,
}

impl DirDataset {
    /// Opens the directory `path`, creating it (and its parents) when missing, and checks that
    /// its filesystem keeps user extended attributes. Leftovers of interrupted snapshots are
    /// removed. The directory is made private to the node's user (0700): no other local user
    /// reaches an object file, whatever its own mode (older nodes wrote them 0644).
    ///
    /// # Errors
    /// When the directory cannot be created or written, or xattrs are unsupported
    /// ([`DatasetError::NoXattrs`]).
    pub async fn open(path: &Path) -> Result<DirDataset, DatasetError> {
        let root = path.to_owned();
        let r = root.clone();
        blocking("create the dataset directory", move || {
            use std::os::unix::fs::PermissionsExt as _;
            fs::create_dir_all(r.join(SNAPSHOTS_DIR))?;
            fs::set_permissions(&r, fs::Permissions::from_mode(0o700))?;
            for e in fs::read_dir(r.join(SNAPSHOTS_DIR))? {
                let e = e?;
                if e.file_name().to_string_lossy().starts_with(".partial-") {
                    fs::remove_dir_all(e.path())?;
                }
            }
            Ok(())
        })
        .await?;
        let root = blocking("resolve the dataset directory", move || {
            fs::canonicalize(&root)
        })
        .await?;
        probe_xattrs(&root).await?;
        Ok(DirDataset { root })
    }
}

/// Writes and reads back a user xattr on a scratch file in `root`.
pub(crate) async fn probe_xattrs(root: &Path) -> Result<(), DatasetError> {
    let root = root.to_owned();
    let r = root.clone();
    let res = manta_util::blocking(move || {
        let probe = r.join(format!(".xattr-probe-{}", uuid::Uuid::new_v4()));
        let f = fs::File::create(&probe)?;
        let set = rustix::fs::fsetxattr(
            &f,
            "user.manta.probe",
            b"1",
            rustix::fs::XattrFlags::empty(),
        );
        let _ = fs::remove_file(&probe);
        Ok(set.map_err(io::Error::from))
    })
    .await
    .map_err(|e| DatasetError::io("write a probe file in the dataset", e))?;
    res.map_err(|source| DatasetError::NoXattrs { path: root, source })
}

#[async_trait]
impl Dataset for DirDataset {
    fn kind(&self) -> &'static str {
        "dir"
    }

    fn name(&self) -> String {
        self.root.display().to_string()
    }

    fn spec(&self) -> DatasetSpec {
        DatasetSpec::Dir(self.root.clone())
    }

    fn root(&self) -> &Path {
        &self.root
    }

    async fn capacity(&self) -> Result<Capacity, DatasetError> {
        let root = self.root.clone();
        blocking("statvfs the dataset", move || {
            let s = rustix::fs::statvfs(&root)?;
            let frsize = s.f_frsize;
            Ok(Capacity {
                total: s.f_blocks * frsize,
                available: s.f_bavail * frsize,
                used: s.f_blocks.saturating_sub(s.f_bfree) * frsize,
            })
        })
        .await
    }

    async fn snapshot(&self, name: &str) -> Result<(), DatasetError> {
        validate_name(name)?;
        let root = self.root.clone();
        let final_dir = root.join(SNAPSHOTS_DIR).join(name);
        let name = name.to_owned();
        let outcome = manta_util::blocking(move || {
            if final_dir.exists() {
                return Ok(false);
            }
            let partial = root
                .join(SNAPSHOTS_DIR)
                .join(format!(".partial-{}", uuid::Uuid::new_v4()));
            fs::create_dir(&partial)?;
            let built = (|| {
                for e in fs::read_dir(&root)? {
                    let e = e?;
                    let fname = e.file_name();
                    if NOT_SNAPSHOTTED.iter().any(|s| fname == *s)
                        || fname.to_string_lossy().starts_with(".xattr-probe-")
                    {
                        continue;
                    }
                    link_tree(&e.path(), &partial.join(&fname))?;
                }
                sync_dir(&partial)?;
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &partial,
                    rustix::fs::CWD,
                    &final_dir,
                    rustix::fs::RenameFlags::NOREPLACE,
                )
                .map_err(io::Error::from)
            })();
            match built {
                Ok(()) => {
                    sync_dir(&root.join(SNAPSHOTS_DIR))?;
                    Ok(true)
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&partial);
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        Ok(false)
                    } else {
                        Err(e)
                    }
                }
            }
        })
        .await
        .map_err(|e| DatasetError::io("take a snapshot", e))?;
        if outcome {
            tracing::info!(snapshot = %name, "snapshot taken");
            Ok(())
        } else {
            Err(DatasetError::SnapshotExists(name))
        }
    }

    async fn snapshot_exists(&self, name: &str) -> Result<bool, DatasetError> {
        validate_name(name)?;
        let dir = self.snapshot_dir(name);
        blocking("look for a snapshot", move || Ok(dir.is_dir())).await
    }

    fn snapshot_dir(&self, name: &str) -> PathBuf {
        self.root.join(SNAPSHOTS_DIR).join(name)
    }
}

/// Recreates `src` at `dst`: directories are made, files hard-linked.
fn link_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    if meta.is_dir() {
        fs::create_dir(dst)?;
        for e in fs::read_dir(src)? {
            let e = e?;
            match link_tree(&e.path(), &dst.join(e.file_name())) {
                // Removed (by GC, a DELETE) while we walked: it is simply not in the snapshot.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    } else if meta.is_file() {
        fs::hard_link(src, dst)
    } else {
        tracing::warn!(path = %src.display(), "not a file or directory; left out of the snapshot");
        Ok(())
    }
}

/// fsyncs a directory so renames and new entries in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
