//! OCI images a phase runs in (`"image": "/login/stor/x.tar"`, or a name from the region's
//! image registry): fetched as the job's owner, verified, unpacked once per node and kept in a
//! bounded cache.
//!
//! An image is an OCI image layout packed as one tar object (`skopeo copy ...
//! oci-archive:img.tar`, or `tar -cf img.tar -C layout .` of a `umoci` layout). Unpacking checks
//! everything it reads:
//! - every blob's content against its sha256 name, and the sizes the descriptors give;
//! - every layer's uncompressed bytes against the config's `rootfs.diff_ids`;
//! - every layer entry's path: no absolute path, no `..`, and no entry reached through a
//!   symbolic link (a link may point anywhere: it is only ever followed inside the container,
//!   never while unpacking). A hard link's target obeys the same rules.
//!
//! Layers are applied in order into one directory, whiteouts included (`.wh.NAME` removes
//! `NAME` of the layers below; `.wh..wh..opq` hides everything below in its directory).
//! Ownership is mapped into the agent's container range (the image's uid 0 is `uid_base`),
//! set-id bits are dropped, and device files are skipped (a task's `/dev` is its own tmpfs).
//! The result is the container's read-only root, keyed by the manifest's digest: two objects
//! with the same image share one copy. An image in use by a container is never evicted; the
//! others go, least recently used first, once the cache passes its size.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context as _, Result, anyhow};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use storage_api::digest::to_hex as hex;

use super::container;
use crate::fdclient::FdClient;

/// Why an image cannot be used.
#[derive(Debug)]
pub enum ImageError {
    /// The user's doing: not an image, a digest mismatch, an entry that escapes, too large.
    Bad(String),
    /// This node's: a disk or read failure (the task may run elsewhere).
    Io(io::Error),
}

impl From<io::Error> for ImageError {
    fn from(e: io::Error) -> Self {
        ImageError::Io(e)
    }
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageError::Bad(m) => f.write_str(m),
            ImageError::Io(e) => write!(f, "{e}"),
        }
    }
}

fn bad<T>(msg: impl Into<String>) -> Result<T, ImageError> {
    Err(ImageError::Bad(msg.into()))
}

/// An unpacked image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The manifest's digest, `sha256:<hex>`.
    pub digest: String,
    /// Bytes of its files.
    pub size: u64,
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// The hex of a `sha256:<64 hex>` digest, or why it is not one.
fn sha256_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(h)
        }
        _ => bad(format!("unsupported digest {digest:?} (only sha256 is)")),
    }
}

/// A relative path made of normal components only, or why not.
fn clean(raw: &Path, what: &str) -> Result<PathBuf, ImageError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return bad(format!("{what} {} climbs out with `..`", raw.display()));
            }
            Component::RootDir | Component::Prefix(_) => {
                return bad(format!("{what} {} is an absolute path", raw.display()));
            }
        }
    }
    Ok(out)
}

/// Unpacks the image layout archive `archive` into `dest` (which must not exist): `dest/rootfs`
/// is the root. At most `limit` bytes are written in all. Blocking.
///
/// # Errors
/// [`ImageError::Bad`] for anything wrong with the image, [`ImageError::Io`] for the node's
/// own failures.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    limit: u64,
    uid_base: Option<u32>,
) -> Result<Unpacked, ImageError> {
    std::fs::create_dir_all(dest.join("blobs"))?;
    let mut written = 0u64;
    let mut found_layout = false;
    let mut index = None;
    let mut blobs: HashMap<String, u64> = HashMap::new();
    let mut outer = tar::Archive::new(std::fs::File::open(archive)?);
    let entries = outer.entries().map_err(|e| not_tar(&e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| not_tar(&e))?;
        let path = clean(&entry.path().map_err(|e| not_tar(&e))?, "archive entry")?;
        let kind = entry.header().entry_type();
        if kind.is_dir() || path.as_os_str().is_empty() {
            continue;
        }
        if !kind.is_file() {
            continue; // links and the like are no part of a layout
        }
        let name = path.to_string_lossy().into_owned();
        if name == "oci-layout" || name == "index.json" {
            let mut text = Vec::new();
            (&mut entry).take(1 << 20).read_to_end(&mut text)?;
            if name == "oci-layout" {
                found_layout = true;
            } else {
                index = Some(text);
            }
            continue;
        }
        let Some(h) = name.strip_prefix("blobs/sha256/") else {
            continue; // other files (a Docker `manifest.json`, say) are not read
        };
        let h = sha256_hex(&format!("sha256:{h}"))?.to_owned();
        let mut r = Hashing {
            inner: &mut entry,
            hash: Sha256::new(),
            n: 0,
        };
        let mut f = std::fs::File::create(dest.join("blobs").join(&h))?;
        let room = limit.saturating_sub(written);
        let n = io::copy(&mut (&mut r).take(room.saturating_add(1)), &mut f)?;
        if n > room {
            return bad(format!(
                "the image is larger than this node's image cache ({limit} bytes)"
            ));
        }
        written += n;
        let got = hex(&r.hash.finalize());
        if got != h {
            return bad(format!(
                "blob sha256:{h} does not match its content (sha256:{got})"
            ));
        }
        blobs.insert(h, n);
    }
    if !found_layout {
        return bad(
            "not an OCI image layout: the archive has no `oci-layout` file (make one with `skopeo copy docker-archive:IN oci-archive:OUT`)",
        );
    }
    let Some(index) = index else {
        return bad("not an OCI image layout: the archive has no `index.json`");
    };
    let blob = |d: &Value, what: &str| -> Result<(PathBuf, u64), ImageError> {
        let digest = d["digest"].as_str().unwrap_or_default();
        let h = sha256_hex(digest)?;
        let Some(&n) = blobs.get(h) else {
            return bad(format!("the {what} {digest} is not in the archive"));
        };
        if d["size"].as_u64() != Some(n) {
            return bad(format!(
                "the {what} {digest} has {n} bytes, not the {} its descriptor says",
                d["size"]
            ));
        }
        Ok((dest.join("blobs").join(h), n))
    };
    let json = |p: &Path, what: &str| -> Result<Value, ImageError> {
        serde_json::from_slice(&std::fs::read(p)?)
            .map_err(|e| ImageError::Bad(format!("the {what} is not JSON: {e}")))
    };
    // The index names the manifest: the one for linux/amd64 (or the only one), through at most
    // one nested index.
    let mut doc: Value = serde_json::from_slice(&index)
        .map_err(|e| ImageError::Bad(format!("index.json is not JSON: {e}")))?;
    let mut manifest = None;
    for _ in 0..3 {
        let Some(list) = doc["manifests"].as_array() else {
            return bad("the image index lists no manifests");
        };
        let chosen = list
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64" && m["platform"]["os"] == "linux")
            .or_else(|| list.iter().find(|m| m.get("platform").is_none()))
            .ok_or_else(|| ImageError::Bad("the image has no manifest for linux/amd64".into()))?
            .clone();
        let (p, _) = blob(&chosen, "manifest")?;
        let m = json(&p, "manifest")?;
        if m.get("manifests").is_some() {
            doc = m; // a nested index
            continue;
        }
        manifest = Some((chosen["digest"].as_str().unwrap_or_default().to_owned(), m));
        break;
    }
    let Some((digest, manifest)) = manifest else {
        return bad("the image's indexes nest too deep");
    };
    let (config_path, _) = blob(&manifest["config"], "config")?;
    let config = json(&config_path, "config")?;
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    if layers.len() != diff_ids.len() {
        return bad(format!(
            "the manifest has {} layers but the config lists {} diff_ids",
            layers.len(),
            diff_ids.len()
        ));
    }
    let root = dest.join("rootfs");
    std::fs::create_dir(&root)?;
    let mut apply = Apply {
        root: root.clone(),
        uid_base,
        written: 0,
        limit: limit.saturating_sub(written),
        dir_modes: Vec::new(),
    };
    for (i, (layer, diff_id)) in layers.iter().zip(&diff_ids).enumerate() {
        let (p, _) = blob(layer, "layer")?;
        let media = layer["mediaType"].as_str().unwrap_or_default();
        let file = io::BufReader::new(std::fs::File::open(&p)?);
        let raw: Box<dyn Read> = match media {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Box::new(file),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                Box::new(flate2::read::MultiGzDecoder::new(file))
            }
            m if m.ends_with("+zstd") => {
                return bad(format!(
                    "layer {i} is zstd-compressed, which is not supported: use gzip"
                ));
            }
            m => return bad(format!("layer {i} has the unknown media type {m:?}")),
        };
        let mut r = Hashing {
            inner: raw,
            hash: Sha256::new(),
            n: 0,
        };
        apply.layer(&mut r, i)?;
        // The tar's end marker may leave padding unread; the digest covers all of it.
        io::copy(&mut r, &mut io::sink())
            .map_err(|e| ImageError::Bad(format!("layer {i}: {e}")))?;
        let want = sha256_hex(diff_id)?;
        let got = hex(&r.hash.finalize());
        if got != want {
            return bad(format!(
                "layer {i}'s content is sha256:{got}, not its diff_id {diff_id}"
            ));
        }
    }
    apply.finish()?;
    let _ = std::fs::remove_dir_all(dest.join("blobs"));
    Ok(Unpacked {
        digest,
        size: apply.written,
    })
}

fn not_tar(e: &io::Error) -> ImageError {
    ImageError::Bad(format!("not a tar archive of an OCI image layout: {e}"))
}

/// Layers being applied into one root.
struct Apply {
    root: PathBuf,
    uid_base: Option<u32>,
    written: u64,
    limit: u64,
    /// Directories' modes, set once every layer is in (a read-only directory would refuse
    /// later entries otherwise).
    dir_modes: Vec<(PathBuf, u32)>,
}

impl Apply {
    /// The host path of `rel`, after checking that no directory on the way is a symbolic
    /// link or a file, making the missing ones. Answers whether anything exists there now.
    fn parent_ready(&self, rel: &Path, made: &mut HashSet<PathBuf>) -> Result<PathBuf, ImageError> {
        let mut at = PathBuf::new();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                at.push(c);
                let host = self.root.join(&at);
                match std::fs::symlink_metadata(&host) {
                    Ok(m) if m.file_type().is_dir() => {}
                    Ok(m) if m.file_type().is_symlink() => {
                        return bad(format!(
                            "layer entry {} passes through the symbolic link {}",
                            rel.display(),
                            at.display()
                        ));
                    }
                    Ok(_) => {
                        return bad(format!(
                            "layer entry {} is under {}, which is not a directory",
                            rel.display(),
                            at.display()
                        ));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        std::fs::create_dir(&host)?;
                        self.own(&host, 0, 0)?;
                        made.insert(at.clone());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(self.root.join(rel))
    }

    fn own(&self, host: &Path, uid: u64, gid: u64) -> Result<(), ImageError> {
        let Some(base) = self.uid_base else {
            return Ok(());
        };
        // Ids past the container's 65536 become its `nobody`.
        let map = |id: u64| {
            base + u32::try_from(id)
                .ok()
                .filter(|i| *i < 65536)
                .unwrap_or(65534)
        };
        std::os::unix::fs::lchown(host, Some(map(uid)), Some(map(gid)))?;
        Ok(())
    }

    fn layer(&mut self, r: &mut impl Read, i: usize) -> Result<(), ImageError> {
        use std::os::unix::fs::PermissionsExt as _;
        let layer_bad =
            |e: io::Error| ImageError::Bad(format!("layer {i} is not a tar archive: {e}"));
        // What this layer made: its own whiteouts do not remove it.
        let mut made: HashSet<PathBuf> = HashSet::new();
        let mut archive = tar::Archive::new(r);
        for entry in archive.entries().map_err(layer_bad)? {
            let mut entry = entry.map_err(layer_bad)?;
            let rel = clean(&entry.path().map_err(layer_bad)?, "layer entry")?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            let host = self.parent_ready(&rel, &mut made)?;
            let name = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name == ".wh..wh..opq" {
                let dir = host.parent().unwrap_or(&self.root).to_owned();
                let dir_rel = rel.parent().unwrap_or(Path::new("")).to_owned();
                for child in std::fs::read_dir(&dir)? {
                    let child = child?;
                    if !made.contains(&dir_rel.join(child.file_name())) {
                        remove(&child.path())?;
                    }
                }
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                remove(&host.with_file_name(hidden))?;
                continue;
            }
            let header = entry.header();
            let kind = header.entry_type();
            let mode = header.mode().map_err(layer_bad)? & 0o1777;
            let (uid, gid) = (
                header.uid().map_err(layer_bad)?,
                header.gid().map_err(layer_bad)?,
            );
            let existing = std::fs::symlink_metadata(&host).ok();
            if kind.is_dir() {
                if !existing.as_ref().is_some_and(|m| m.file_type().is_dir()) {
                    if existing.is_some() {
                        remove(&host)?;
                    }
                    std::fs::create_dir(&host)?;
                }
                self.own(&host, uid, gid)?;
                self.dir_modes.push((host, mode));
                made.insert(rel);
                continue;
            }
            if existing.is_some() {
                remove(&host)?;
            }
            if kind.is_file() || kind == tar::EntryType::Continuous {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&host)?;
                let room = self.limit.saturating_sub(self.written);
                let n = io::copy(&mut (&mut entry).take(room.saturating_add(1)), &mut f)
                    .map_err(layer_bad)?;
                if n > room {
                    return bad(format!(
                        "the image unpacks to more than this node's image cache ({} bytes)",
                        self.limit
                    ));
                }
                self.written += n;
                f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
                self.own(&host, uid, gid)?;
            } else if kind.is_symlink() {
                let target = entry.link_name().map_err(layer_bad)?.ok_or_else(|| {
                    ImageError::Bad(format!("symbolic link {} has no target", rel.display()))
                })?;
                std::os::unix::fs::symlink(&target, &host)?;
                self.own(&host, uid, gid)?;
            } else if kind.is_hard_link() {
                let target = entry.link_name().map_err(layer_bad)?.ok_or_else(|| {
                    ImageError::Bad(format!("hard link {} has no target", rel.display()))
                })?;
                let target = clean(&target, "hard link target")?;
                let target_host = self.parent_ready(&target, &mut made)?;
                match std::fs::symlink_metadata(&target_host) {
                    Ok(m) if !m.file_type().is_dir() => std::fs::hard_link(&target_host, &host)?,
                    _ => {
                        return bad(format!(
                            "hard link {} names {}, which is not a file of the image",
                            rel.display(),
                            target.display()
                        ));
                    }
                }
            } else {
                continue; // devices, fifos: a task's /dev is its own
            }
            made.insert(rel);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ImageError> {
        use std::os::unix::fs::PermissionsExt as _;
        for d in container::MOUNT_POINTS {
            let mut at = self.root.clone();
            for c in Path::new(d).components() {
                at.push(c);
                match std::fs::symlink_metadata(&at) {
                    Ok(m) if m.file_type().is_dir() => {}
                    Ok(_) => {
                        remove(&at)?;
                        std::fs::create_dir(&at)?;
                        self.own(&at, 0, 0)?;
                    }
                    Err(_) => {
                        std::fs::create_dir(&at)?;
                        self.own(&at, 0, 0)?;
                    }
                }
            }
        }
        // Deepest first, so a read-only parent is set after its children.
        self.dir_modes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (p, mode) in self.dir_modes.drain(..) {
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_dir()) {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
            }
        }
        Ok(())
    }
}

/// Removes whatever is at `p` (nothing there is fine).
fn remove(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Images unpacked on this node.
pub(crate) struct Images {
    dir: PathBuf,
    max_bytes: u64,
    uid_base: Option<u32>,
    state: Mutex<State>,
    /// One fetch and unpack at a time per object version.
    fetching: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Default)]
struct State {
    /// Unpacked images by digest hex.
    cached: HashMap<String, Cached>,
    /// Object versions (path and etag) already seen, and their image's digest hex.
    seen: HashMap<String, String>,
}

struct Cached {
    size: u64,
    used: SystemTime,
    users: usize,
}

/// An image's root, held while a container uses it (it is not evicted meanwhile).
pub(crate) struct ImageRoot {
    pub rootfs: PathBuf,
    hex: String,
    images: Arc<Images>,
}

impl Drop for ImageRoot {
    fn drop(&mut self) {
        let mut st = self.images.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = st.cached.get_mut(&self.hex) {
            c.users = c.users.saturating_sub(1);
            c.used = SystemTime::now();
        }
    }
}

impl Images {
    /// The cache in `dir` (images a previous run unpacked stay; half-done ones go). Blocking.
    pub fn open(dir: PathBuf, max_bytes: u64, uid_base: Option<u32>) -> io::Result<Images> {
        let _ = std::fs::remove_dir_all(dir.join("tmp"));
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
        let mut st = State::default();
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "tmp" {
                continue;
            }
            let size = std::fs::read_to_string(e.path().join("size"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            match size {
                Some(size) if e.path().join("rootfs").is_dir() => {
                    let used = e.metadata()?.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    st.cached.insert(
                        name,
                        Cached {
                            size,
                            used,
                            users: 0,
                        },
                    );
                }
                _ => remove(&e.path())?,
            }
        }
        Ok(Images {
            dir,
            max_bytes,
            uid_base,
            state: Mutex::new(st),
            fetching: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    fn hold(self: &Arc<Self>, hex: &str) -> Option<ImageRoot> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let c = st.cached.get_mut(hex)?;
        c.users += 1;
        c.used = SystemTime::now();
        Some(ImageRoot {
            rootfs: self.dir.join(hex).join("rootfs"),
            hex: hex.to_owned(),
            images: self.clone(),
        })
    }

    /// The root of the image object at `path`, read as `fd`'s account: from the cache when
    /// this version of the object was unpacked before, else fetched and unpacked now.
    ///
    /// # Errors
    /// The outer error is this node's failure; the inner one the image's (or the owner's:
    /// not found, not allowed), for the job's error.
    pub async fn root(
        self: &Arc<Self>,
        fd: &FdClient,
        path: &str,
    ) -> Result<Result<ImageRoot, String>> {
        let head = fd.send(fd.request(reqwest::Method::HEAD, path)).await;
        let head = match head {
            Ok(r) => r,
            Err(e) if e.is_retryable() => return Err(anyhow!("image {path}: {e}")),
            // A HEAD answer has no body to explain itself: say what its status means.
            Err(crate::fdclient::FdError::Api { status: 404, .. }) => {
                return Ok(Err(format!("image {path} was not found")));
            }
            Err(crate::fdclient::FdError::Api {
                status: 401 | 403, ..
            }) => {
                return Ok(Err(format!("the job's owner may not read image {path}")));
            }
            Err(e) => return Ok(Err(format!("image {path}: {e}"))),
        };
        let etag = head
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let version = format!("{path}\n{etag}");
        let lock = self
            .fetching
            .lock()
            .await
            .entry(version.clone())
            .or_default()
            .clone();
        let _one = lock.lock().await;
        let known = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .get(&version)
            .cloned();
        if let Some(h) = known.and_then(|h| self.hold(&h)) {
            return Ok(Ok(h));
        }
        let tmp = self
            .dir
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        tokio::fs::create_dir_all(&tmp).await?;
        let archive = tmp.join("image.tar");
        let r = super::fetch(fd, path, &archive, self.max_bytes).await;
        if let Err(e) = r {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            return if e.downcast_ref::<super::TooBig>().is_some() {
                Ok(Err(format!(
                    "image {path} is larger than this node's image cache ({} bytes)",
                    self.max_bytes
                )))
            } else {
                Err(e.context(format!("fetch image {path}")))
            };
        }
        let (dest, max, uid_base) = (tmp.join("out"), self.max_bytes, self.uid_base);
        let unpacked = manta_util::blocking(move || {
            Ok::<_, io::Error>(unpack(&archive, &dest, max, uid_base))
        })
        .await?;
        let u = match unpacked {
            Ok(u) => u,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                return match e {
                    ImageError::Bad(m) => Ok(Err(format!("image {path}: {m}"))),
                    ImageError::Io(e) => {
                        Err(anyhow::Error::from(e).context(format!("unpack image {path}")))
                    }
                };
            }
        };
        let hex = u.digest.trim_start_matches("sha256:").to_owned();
        let (dir, tmp2, hex2, size) = (self.dir.join(&hex), tmp.clone(), hex.clone(), u.size);
        manta_util::blocking(move || {
            if !dir.join("rootfs").is_dir() {
                let _ = remove(&dir);
                std::fs::create_dir(&dir)?;
                std::fs::write(dir.join("size"), size.to_string())?;
                std::fs::rename(tmp2.join("out").join("rootfs"), dir.join("rootfs"))?;
            }
            let _ = std::fs::remove_dir_all(&tmp2);
            Ok::<_, io::Error>(())
        })
        .await
        .with_context(|| format!("keep image {hex2}"))?;
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.cached.entry(hex.clone()).or_insert(Cached {
                size: u.size,
                used: SystemTime::now(),
                users: 0,
            });
            st.seen.insert(version, hex.clone());
        }
        tracing::info!(image = path, digest = %u.digest, bytes = u.size, "unpacked an image");
        let held = self
            .hold(&hex)
            .ok_or_else(|| anyhow!("image {hex} vanished"))?;
        self.evict().await;
        Ok(Ok(held))
    }

    /// Removes unused images, least recently used first, until the cache fits its size.
    async fn evict(&self) {
        let doomed: Vec<String> = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut total: u64 = st.cached.values().map(|c| c.size).sum();
            let mut idle: Vec<(SystemTime, String, u64)> = st
                .cached
                .iter()
                .filter(|(_, c)| c.users == 0)
                .map(|(h, c)| (c.used, h.clone(), c.size))
                .collect();
            idle.sort();
            let mut doomed = Vec::new();
            for (_, h, size) in idle {
                if total <= self.max_bytes {
                    break;
                }
                total -= size;
                st.cached.remove(&h);
                doomed.push(h);
            }
            st.seen.retain(|_, h| !doomed.contains(h));
            doomed
        };
        for h in doomed {
            let d = self.dir.join(&h);
            tracing::info!(digest = %h, "evicting an image from the cache");
            let _ = manta_util::blocking(move || remove(&d)).await;
        }
    }
}

/// A layer tar being built, for [`pack`] (tests, benchmarks and tools that make images).
#[derive(Default)]
pub struct LayerBuilder {
    out: Vec<u8>,
}

impl LayerBuilder {
    fn entry(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        mode: u32,
        link: Option<&str>,
        data: &[u8],
    ) -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        // The name's bytes go in as they are (`tar`'s own setter refuses `..`, which tests of
        // the unpacker need to write).
        let bytes = name.as_bytes();
        let field = &mut h.as_old_mut().name;
        if bytes.len() > field.len() {
            return Err(io::Error::other(format!("name {name} is too long")));
        }
        field[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l)?;
        }
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        self.out.resize(self.out.len().div_ceil(512) * 512, 0);
        Ok(())
    }

    /// A regular file.
    ///
    /// # Errors
    /// A name longer than 100 bytes.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<&mut Self> {
        self.entry(name, tar::EntryType::Regular, mode, None, data)?;
        Ok(self)
    }

    /// A directory.
    ///
    /// # Errors
    /// A name longer than 100 bytes.
    pub fn dir(&mut self, name: &str) -> io::Result<&mut Self> {
        self.entry(name, tar::EntryType::Directory, 0o755, None, b"")?;
        Ok(self)
    }

    /// A symbolic link.
    ///
    /// # Errors
    /// A name or target longer than 100 bytes.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<&mut Self> {
        self.entry(name, tar::EntryType::Symlink, 0o777, Some(target), b"")?;
        Ok(self)
    }

    /// A hard link to `target`.
    ///
    /// # Errors
    /// A name or target longer than 100 bytes.
    pub fn hard_link(&mut self, name: &str, target: &str) -> io::Result<&mut Self> {
        self.entry(name, tar::EntryType::Link, 0o644, Some(target), b"")?;
        Ok(self)
    }

    /// The tar's bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// An OCI image layout archive (one linux/amd64 manifest) of `layers`, bottom first, each a
/// tar and whether to gzip it.
///
/// # Errors
/// Compression failures.
pub fn pack(layers: &[(Vec<u8>, bool)]) -> io::Result<Vec<u8>> {
    use std::io::Write as _;
    let digest = |b: &[u8]| format!("sha256:{}", hex(&Sha256::digest(b)));
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, gz) in layers {
        diff_ids.push(digest(tar));
        let (blob, media) = if *gz {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar)?;
            (e.finish()?, "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (tar.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        descs.push(
            serde_json::json!({"mediaType": media, "digest": digest(&blob), "size": blob.len()}),
        );
        blobs.push(blob);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": descs,
    }))?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest), "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }))?;
    let mut outer = LayerBuilder::default();
    outer.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    outer.file("index.json", 0o644, &index)?;
    outer.dir("blobs/")?.dir("blobs/sha256/")?;
    for b in blobs.iter().chain([&config, &manifest]) {
        outer.file(&format!("blobs/sha256/{}", &digest(b)[7..]), 0o644, b)?;
    }
    Ok(outer.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpack_layers(
        layers: &[(Vec<u8>, bool)],
    ) -> (tempfile::TempDir, Result<Unpacked, ImageError>) {
        let d = tempfile::tempdir().unwrap();
        let archive = d.path().join("img.tar");
        std::fs::write(&archive, pack(layers).unwrap()).unwrap();
        let r = unpack(&archive, &d.path().join("out"), 1 << 30, None);
        (d, r)
    }

    fn refused(r: Result<Unpacked, ImageError>) -> String {
        match r {
            Err(ImageError::Bad(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let l1 = LayerBuilder::default()
            .dir("bin/")
            .unwrap()
            .file("bin/tool", 0o4755, b"#!/bin/sh\n")
            .unwrap()
            .symlink("bin/sh", "/bin/tool")
            .unwrap()
            .file("etc/gone", 0o644, b"x")
            .unwrap()
            .file("opq/old", 0o644, b"x")
            .unwrap()
            .file("keep/a", 0o644, b"a")
            .unwrap()
            .finish();
        let l2 = LayerBuilder::default()
            .file("opq/new", 0o644, b"n")
            .unwrap()
            .file("opq/.wh..wh..opq", 0o644, b"")
            .unwrap()
            .file("etc/.wh.gone", 0o644, b"")
            .unwrap()
            .hard_link("keep/b", "keep/a")
            .unwrap()
            .finish();
        let (d, r) = unpack_layers(&[(l1, true), (l2, false)]);
        let u = r.unwrap();
        assert!(u.digest.starts_with("sha256:"));
        let root = d.path().join("out/rootfs");
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("opq/old").exists());
        assert!(
            root.join("opq/new").exists(),
            "the opaque marker hides only lower layers"
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("/bin/tool")
        );
        assert_eq!(std::fs::read(root.join("keep/b")).unwrap(), b"a");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(root.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "set-id bits are dropped");
        for m in container::MOUNT_POINTS {
            assert!(root.join(m).is_dir(), "{m}");
        }
    }

    #[test]
    fn escapes_are_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                LayerBuilder::default()
                    .file("../evil", 0o644, b"x")
                    .unwrap()
                    .finish(),
                "climbs out",
            ),
            (
                LayerBuilder::default()
                    .file("a/../../evil", 0o644, b"x")
                    .unwrap()
                    .finish(),
                "climbs out",
            ),
            (
                LayerBuilder::default()
                    .file("/etc/evil", 0o644, b"x")
                    .unwrap()
                    .finish(),
                "absolute",
            ),
            (
                LayerBuilder::default()
                    .symlink("etc", "/etc")
                    .unwrap()
                    .file("etc/evil", 0o644, b"x")
                    .unwrap()
                    .finish(),
                "symbolic link",
            ),
            (
                LayerBuilder::default()
                    .symlink("up", "../../..")
                    .unwrap()
                    .file("up/evil", 0o644, b"x")
                    .unwrap()
                    .finish(),
                "symbolic link",
            ),
            (
                LayerBuilder::default()
                    .hard_link("pw", "/etc/passwd")
                    .unwrap()
                    .finish(),
                "absolute",
            ),
            (
                LayerBuilder::default()
                    .hard_link("pw", "../x")
                    .unwrap()
                    .finish(),
                "climbs out",
            ),
        ];
        for (layer, why) in cases {
            let (_d, r) = unpack_layers(&[(layer, true)]);
            let m = refused(r);
            assert!(m.contains(why), "{why}: {m}");
        }
    }

    #[test]
    fn tampered_and_foreign_archives_are_refused() {
        let layer = LayerBuilder::default()
            .file("a", 0o644, b"hello")
            .unwrap()
            .finish();
        let good = pack(&[(layer.clone(), false)]).unwrap();
        // Change the layer's content inside the archive, keeping its name.
        let at = good.windows(5).position(|w| w == b"hello").unwrap();
        let mut bad = good.clone();
        bad[at] = b'j';
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bad.tar"), &bad).unwrap();
        let m = refused(unpack(
            &d.path().join("bad.tar"),
            &d.path().join("o1"),
            1 << 30,
            None,
        ));
        assert!(m.contains("does not match"), "{m}");
        // A tar that is no image layout.
        std::fs::write(d.path().join("plain.tar"), &layer).unwrap();
        let m = refused(unpack(
            &d.path().join("plain.tar"),
            &d.path().join("o2"),
            1 << 30,
            None,
        ));
        assert!(m.contains("not an OCI image layout"), "{m}");
        // Not a tar at all.
        std::fs::write(d.path().join("junk.tar"), vec![7u8; 3000]).unwrap();
        assert!(matches!(
            unpack(
                &d.path().join("junk.tar"),
                &d.path().join("o3"),
                1 << 30,
                None
            ),
            Err(ImageError::Bad(_))
        ));
        // Larger than the cache.
        std::fs::write(d.path().join("good.tar"), &good).unwrap();
        let m = refused(unpack(
            &d.path().join("good.tar"),
            &d.path().join("o4"),
            100,
            None,
        ));
        assert!(m.contains("larger than") || m.contains("more than"), "{m}");
    }

    #[tokio::test]
    async fn the_cache_evicts_least_recently_used_images_but_never_one_in_use() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("images");
        // Three images of 40 bytes each on disk from an earlier run, in a cache of 100.
        for (i, h) in ["aa", "bb", "cc"].iter().enumerate() {
            std::fs::create_dir_all(dir.join(h).join("rootfs")).unwrap();
            std::fs::write(dir.join(h).join("size"), "40").unwrap();
            let t =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            std::fs::File::open(dir.join(h))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        // A half-unpacked one goes at once.
        std::fs::create_dir_all(dir.join("dd")).unwrap();
        let images = Arc::new(Images::open(dir.clone(), 100, None).unwrap());
        assert!(!dir.join("dd").exists());
        // The oldest is in use: the next oldest goes instead.
        let held = images.hold("aa").unwrap();
        images.evict().await;
        assert!(dir.join("aa").exists() && !dir.join("bb").exists() && dir.join("cc").exists());
        // Once released it may go in its turn (here the other is in use and the cache over).
        drop(held);
        let _cc = images.hold("cc").unwrap();
        images
            .state
            .lock()
            .unwrap()
            .cached
            .get_mut("aa")
            .unwrap()
            .size = 80;
        images.evict().await;
        assert!(!dir.join("aa").exists() && dir.join("cc").exists());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever a layer holds, nothing is written outside the unpack directory.
        #[test]
        fn nothing_lands_outside(entries in proptest::collection::vec(
            (0u8..4, proptest::sample::select(vec!["a", "b", "..", ".", "/", "c/d", "a/..", "/tmp", "../.."]), proptest::sample::select(vec!["a", "b", "x", ".wh.a", ".wh..wh..opq"])),
            1..12,
        )) {
            let d = tempfile::tempdir().unwrap();
            let inside = d.path().join("in");
            std::fs::create_dir(&inside).unwrap();
            let mut l = LayerBuilder::default();
            for (kind, dir, name) in &entries {
                let path = format!("{dir}/{name}");
                let _ = match kind {
                    0 => l.file(&path, 0o644, b"x"),
                    1 => l.dir(&path),
                    2 => l.symlink(&path, dir),
                    _ => l.hard_link(&path, dir),
                };
            }
            let archive = inside.join("img.tar");
            std::fs::write(&archive, pack(&[(l.finish(), false)]).unwrap()).unwrap();
            let _ = unpack(&archive, &inside.join("out"), 1 << 20, None);
            let mut outside: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            outside.sort();
            proptest::prop_assert_eq!(outside, vec![std::ffi::OsString::from("in")]);
        }
    }
}
