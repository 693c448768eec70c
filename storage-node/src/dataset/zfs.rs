//! The `zfs` backend (cargo feature `zfs`): a ZFS filesystem per storage node, created with
//! `compression=lz4` and `checksum=on`, its capacity read from the dataset's `used` and
//! `available` properties, snapshots taken atomically by ZFS.
//!
//! Snapshots, existence checks and property reads go through libzfs_core (the `zfs-core`
//! crate); properties are read with a read-only ZFS channel program, the only property reader
//! libzfs_core offers. Creation and mounting use the `zfs` command: `lzc_create` wants index
//! properties such as `compression` as 64-bit integers, which the `nvpair` crate behind
//! `zfs-core` 0.5 cannot encode without `unsafe` code (forbidden in this workspace), and
//! libzfs_core has no mount call.
//!
//! Every libzfs_core call runs on the blocking pool: they are ioctls that may wait for a
//! transaction group.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use async_trait::async_trait;
use nvpair::NvData;
use zfs_core::Zfs;

use super::{Capacity, Dataset, DatasetError, DatasetSpec, validate_name, validate_zfs_name};

/// A ZFS filesystem used as a storage node's dataset.
#[derive(Debug, Clone)]
pub struct ZfsDataset {
    name: String,
    mountpoint: PathBuf,
}

fn zfs_err(what: &str, e: impl std::fmt::Display) -> DatasetError {
    DatasetError::Zfs(format!("{what}: {e}"))
}

async fn lzc<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce(&Zfs) -> io::Result<T> + Send + 'static,
) -> Result<T, DatasetError> {
    let r = tokio::task::spawn_blocking(move || {
        let z = Zfs::new().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("libzfs_core_init ({e}); is the zfs module loaded and /dev/zfs there?"),
            )
        })?;
        f(&z)
    })
    .await
    .map_err(|e| zfs_err(what, e))?;
    r.map_err(|e| zfs_err(what, e))
}

fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Where `name` is mounted, from `/proc/self/mounts`.
fn mounted_at(name: &str) -> io::Result<Option<PathBuf>> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    Ok(mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (src, dst, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "zfs" && src == name).then(|| PathBuf::from(dst.replace("\\040", " ")))
    }))
}

/// A Lua string literal for a validated dataset name (only `[A-Za-z0-9_.:/-]`).
fn lua_str(s: &str) -> String {
    format!("\"{s}\"")
}

impl ZfsDataset {
    /// Opens the filesystem `name` (`pool/...`), creating it with `compression=lz4` and
    /// `checksum=on` when it does not exist, and mounting it when it is not mounted.
    ///
    /// # Errors
    /// When ZFS is unavailable, the name is invalid, or creation or mounting fails.
    pub async fn open(name: &str) -> Result<ZfsDataset, DatasetError> {
        validate_zfs_name(name).map_err(|_| DatasetError::InvalidName(name.to_owned()))?;
        let n = name.to_owned();
        let exists = lzc("check the dataset", move |z| Ok(z.exists(n.as_str()))).await?;
        if !exists {
            let n = name.to_owned();
            tokio::task::spawn_blocking(move || {
                run(Command::new("zfs").args([
                    "create",
                    "-p",
                    "-o",
                    "compression=lz4",
                    "-o",
                    "checksum=on",
                    &n,
                ]))
            })
            .await
            .map_err(|e| zfs_err("zfs create", e))?
            .map_err(|e| zfs_err("zfs create", e))?;
            tracing::info!(
                dataset = name,
                "created ZFS dataset (compression=lz4, checksum=on)"
            );
        }
        let n = name.to_owned();
        let mountpoint = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::PermissionsExt as _;
            let m = match mounted_at(&n)? {
                Some(m) => m,
                None => {
                    run(Command::new("zfs").args(["mount", &n]))?;
                    mounted_at(&n)?
                        .ok_or_else(|| io::Error::other("not mounted after `zfs mount`"))?
                }
            };
            // Private to the node's user, snapshots (`.zfs`) included, as the `dir` backend.
            std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o700))?;
            Ok::<_, io::Error>(m)
        })
        .await
        .map_err(|e| zfs_err("mount", e))?
        .map_err(|e| zfs_err(&format!("mount {name}"), e))?;
        super::dir::probe_xattrs(&mountpoint).await?;
        Ok(ZfsDataset {
            name: name.to_owned(),
            mountpoint,
        })
    }

    fn pool(&self) -> String {
        self.name.split('/').next().unwrap_or(&self.name).to_owned()
    }

    /// Reads dataset properties with a read-only channel program. Numbers come back as their
    /// decimal strings.
    ///
    /// # Errors
    /// When the program fails or returns something unexpected.
    pub async fn properties(
        &self,
        names: &[&str],
    ) -> Result<BTreeMap<String, String>, DatasetError> {
        let mut program = format!("local ds = {}\nlocal out = {{}}\n", lua_str(&self.name));
        for p in names {
            validate_name(p)?;
            program.push_str(&format!("out[\"{p}\"] = zfs.get_prop(ds, \"{p}\")\n"));
        }
        program.push_str("return out\n");
        let pool = self.pool();
        lzc("read properties", move |z| {
            let args = nvpair::NvList::new();
            let out = z.channel_program_nosync(
                pool.as_str(),
                program.as_str(),
                10_000_000,
                10 << 20,
                &args,
            )?;
            let ret = out.lookup_nvlist("return").map_err(|e| {
                io::Error::other(format!("channel program returned no table ({e}): {out:?}"))
            })?;
            let mut map = BTreeMap::new();
            for pair in ret.iter() {
                let key = pair.name().to_string_lossy().into_owned();
                let value = match pair.data() {
                    NvData::Int64(v) => v.to_string(),
                    NvData::Uint64(v) => v.to_string(),
                    NvData::Int32(v) => v.to_string(),
                    NvData::Uint32(v) => v.to_string(),
                    NvData::Str(s) => s.to_string_lossy().into_owned(),
                    NvData::BoolV(b) => b.to_string(),
                    other => {
                        return Err(io::Error::other(format!(
                            "property {key}: unexpected value {other:?}"
                        )));
                    }
                };
                map.insert(key, value);
            }
            Ok(map)
        })
        .await
    }
}

#[async_trait]
impl Dataset for ZfsDataset {
    fn kind(&self) -> &'static str {
        "zfs"
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn spec(&self) -> DatasetSpec {
        DatasetSpec::Zfs(self.name.clone())
    }

    fn root(&self) -> &Path {
        &self.mountpoint
    }

    async fn capacity(&self) -> Result<Capacity, DatasetError> {
        let p = self.properties(&["used", "available"]).await?;
        let num = |k: &str| -> Result<u64, DatasetError> {
            p.get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| zfs_err("read capacity", format!("property {k} missing in {p:?}")))
        };
        let (used, available) = (num("used")?, num("available")?);
        Ok(Capacity {
            total: used + available,
            available,
            used,
        })
    }

    async fn snapshot(&self, name: &str) -> Result<(), DatasetError> {
        validate_name(name)?;
        let full = format!("{}@{name}", self.name);
        let f2 = full.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<(), DatasetError> {
            let z = Zfs::new().map_err(|e| zfs_err("libzfs_core_init", e))?;
            if z.exists(f2.as_str()) {
                return Err(DatasetError::SnapshotExists(String::new()));
            }
            z.snapshot([f2.as_str()]).map_err(|e| match e {
                zfs_core::Error::Io { source } if source.raw_os_error() == Some(17) => {
                    DatasetError::SnapshotExists(String::new())
                }
                e => zfs_err("lzc_snapshot", e),
            })
        })
        .await
        .map_err(|e| zfs_err("snapshot", e))?;
        match r {
            Err(DatasetError::SnapshotExists(_)) => {
                Err(DatasetError::SnapshotExists(name.to_owned()))
            }
            Err(e) => Err(e),
            Ok(()) => {
                tracing::info!(snapshot = %full, "snapshot taken");
                Ok(())
            }
        }
    }

    async fn snapshot_exists(&self, name: &str) -> Result<bool, DatasetError> {
        validate_name(name)?;
        let full = format!("{}@{name}", self.name);
        lzc("look for a snapshot", move |z| Ok(z.exists(full.as_str()))).await
    }

    fn snapshot_dir(&self, name: &str) -> PathBuf {
        self.mountpoint.join(".zfs").join("snapshot").join(name)
    }
}
