//! The shard ring: which Moray shard holds a key.
//!
//! The hash space of SHA-256 is cut into a fixed number of equal virtual nodes (vnodes); each
//! vnode is assigned to one shard. A record's *hash key* picks its vnode:
//! - bucket `manta`: the parent directory of the key (`/acct/stor/a/b` hashes `/acct/stor/a`),
//!   so all entries of one directory live on one shard and listing a directory is one query;
//! - bucket `manta_uploads`: the parent directory of the object path after `<uploadId>:`, so an
//!   upload's finalizing record lands beside the object it creates;
//! - buckets `manta_s3_objects`, `manta_s3_versions` and `manta_s3_uploads`
//!   (`<s3 bucket>/<rest>`): the S3 bucket name, so one S3 bucket's objects, versions and
//!   uploads share a shard;
//! - any other bucket: the key itself.
//!
//! The vnode count never changes after the ring is created (it would move almost every key).
//! Moving load to a new shard is done vnode by vnode with [`RingStore::remap_vnode`], an
//! explicit operator action that bumps the ring `version`; clients watching the ring pick the
//! change up online.
//!
//! The ring lives in etcd at [`RING_KEY`] as JSON:
//! `{"version": 3, "vnodes": 4096, "shards": [{"name": "1", "urls": ["http://..."]}], "map": [0, 0, 1, ...]}`
//! where `map[v]` is the index in `shards` of vnode `v`'s shard. It is only ever replaced by
//! compare-and-swap on its etcd revision, so two operators cannot overwrite each other.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::etcd::{ETCD_TIMEOUT, connect_any, etcd_err, get_key};

/// The etcd key holding the ring.
pub const RING_KEY: &str = "/manta/ring";

/// The vnode count of rings created without an explicit one.
pub const DEFAULT_VNODES: u32 = 4096;

/// Largest vnode count accepted (the map is stored inline in one etcd value).
pub const MAX_VNODES: u32 = 1 << 20;

/// One shard: a name and the URLs of its Moray instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Stable name (e.g. `1`); vnodes refer to shards by position, operators by name.
    pub name: String,
    /// Moray instances serving this shard (any of them will do).
    pub urls: Vec<String>,
}

/// The vnode -> shard map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    /// Bumped on every change.
    pub version: u64,
    /// Number of vnodes; fixed for the life of the ring.
    pub vnodes: u32,
    /// The shards, in a stable order (never reordered; new shards are appended).
    pub shards: Vec<ShardInfo>,
    /// `map[v]` = index into `shards` of vnode `v`'s shard.
    pub map: Vec<u32>,
}

/// The hash key of a record: what picks its vnode (see the module docs).
pub fn hashkey<'a>(bucket: &str, key: &'a str) -> &'a str {
    match bucket {
        "manta" => dirname(key),
        "manta_uploads" => match key.split_once(':') {
            Some((_, path)) => dirname(path),
            None => key,
        },
        // The S3 API's objects, their older versions and multipart uploads
        // (`<bucket>/<rest>`): every record of one S3 bucket on the bucket's shard, so a
        // listing is one query, and completing an upload or replacing a version is one
        // transaction (bucket names never contain `/`).
        "manta_s3_objects" | "manta_s3_uploads" | "manta_s3_versions" => {
            key.split_once('/').map_or(key, |(b, _)| b)
        }
        _ => key,
    }
}

/// The parent directory of a `/`-separated key: `/a/b/c` -> `/a/b`, `/a` -> `/`, and a key
/// without a slash is its own hash key.
pub fn dirname(key: &str) -> &str {
    let trimmed = key.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) => "/",
        Some(i) => &trimmed[..i],
        None => key,
    }
}

/// The vnode of `hashkey` in a ring of `vnodes` vnodes: the top 64 bits of SHA-256, scaled
/// to `[0, vnodes)`, so each vnode owns an equal contiguous slice of the hash space.
pub fn vnode_of(hashkey: &str, vnodes: u32) -> u32 {
    let digest = Sha256::digest(hashkey.as_bytes());
    let mut top = [0u8; 8];
    top.copy_from_slice(&digest[..8]);
    let h = u64::from_be_bytes(top);
    ((u128::from(h) * u128::from(vnodes)) >> 64) as u32
}

impl Ring {
    /// A new ring (version 1) with `vnodes` vnodes spread evenly over `shards` in contiguous
    /// runs.
    ///
    /// # Errors
    /// `Ring` for no shards, duplicate names, a shard without URLs, or a bad vnode count.
    pub fn new(vnodes: u32, shards: Vec<ShardInfo>) -> Result<Ring, Error> {
        let n = shards.len().max(1) as u64;
        let map = (0..vnodes)
            .map(|v| (u64::from(v) * n / u64::from(vnodes.max(1))) as u32)
            .collect();
        let ring = Ring {
            version: 1,
            vnodes,
            shards,
            map,
        };
        ring.validate()?;
        Ok(ring)
    }

    /// A ring of one shard.
    ///
    /// # Errors
    /// `Ring` when `url` is empty.
    pub fn single(url: &str) -> Result<Ring, Error> {
        Ring::new(
            DEFAULT_VNODES,
            vec![ShardInfo {
                name: "1".into(),
                urls: vec![url.to_owned()],
            }],
        )
    }

    /// Checks the ring is self-consistent.
    ///
    /// # Errors
    /// `Ring` naming the first problem.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Error::Ring {
            message: m,
            retryable: false,
        };
        if self.vnodes == 0 || self.vnodes > MAX_VNODES {
            return Err(bad(format!(
                "vnode count {} not in 1..={MAX_VNODES}",
                self.vnodes
            )));
        }
        if self.shards.is_empty() {
            return Err(bad("a ring needs at least one shard".into()));
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.shards {
            if s.name.is_empty() || !names.insert(&s.name) {
                return Err(bad(format!("empty or duplicate shard name {:?}", s.name)));
            }
            if s.urls.is_empty() {
                return Err(bad(format!("shard {} has no URLs", s.name)));
            }
        }
        if self.map.len() != self.vnodes as usize {
            return Err(bad(format!(
                "map has {} entries for {} vnodes",
                self.map.len(),
                self.vnodes
            )));
        }
        if let Some(v) = self.map.iter().find(|i| **i as usize >= self.shards.len()) {
            return Err(bad(format!(
                "map names shard index {v}, which does not exist"
            )));
        }
        Ok(())
    }

    /// The vnode of `hashkey`.
    pub fn vnode_for(&self, hashkey: &str) -> u32 {
        vnode_of(hashkey, self.vnodes)
    }

    /// The index into `shards` of the shard owning `vnode`.
    pub fn shard_index_of_vnode(&self, vnode: u32) -> usize {
        self.map.get(vnode as usize).copied().unwrap_or(0) as usize
    }

    /// The shard owning `hashkey`, and its vnode.
    pub fn locate(&self, hashkey: &str) -> (usize, u32) {
        let v = self.vnode_for(hashkey);
        (self.shard_index_of_vnode(v), v)
    }

    /// The shard named `name`, by index.
    pub fn shard_index(&self, name: &str) -> Option<usize> {
        self.shards.iter().position(|s| s.name == name)
    }

    /// The vnodes assigned to shard `name`.
    pub fn vnodes_of(&self, name: &str) -> Vec<u32> {
        match self.shard_index(name) {
            Some(i) => (0..self.vnodes)
                .filter(|v| self.map[*v as usize] as usize == i)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Assigns `vnode` to shard `shard` and bumps the version (in memory; see
    /// [`RingStore::remap_vnode`] for the stored ring).
    ///
    /// # Errors
    /// `Ring` for an unknown shard or a vnode out of range.
    pub fn remap(&mut self, vnode: u32, shard: &str) -> Result<(), Error> {
        let idx = self.shard_index(shard).ok_or_else(|| Error::Ring {
            message: format!("no shard named {shard:?} in the ring"),
            retryable: false,
        })?;
        let slot = self
            .map
            .get_mut(vnode as usize)
            .ok_or_else(|| Error::Ring {
                message: format!("vnode {vnode} out of range 0..{}", self.vnodes),
                retryable: false,
            })?;
        *slot = idx as u32;
        self.version += 1;
        Ok(())
    }

    /// Adds a shard that owns no vnodes yet (move vnodes to it with remaps), or updates the URLs
    /// of an existing one. Bumps the version.
    pub fn upsert_shard(&mut self, shard: ShardInfo) {
        match self.shard_index(&shard.name) {
            Some(i) => self.shards[i] = shard,
            None => self.shards.push(shard),
        }
        self.version += 1;
    }
}

/// The ring as stored in etcd.
#[derive(Debug, Clone)]
pub struct RingStore {
    endpoints: Vec<String>,
    key: String,
    tls: Option<etcd_client::TlsOptions>,
}

impl RingStore {
    /// A store over the etcd cluster at `endpoints`, using [`RING_KEY`].
    pub fn new(endpoints: Vec<String>) -> RingStore {
        RingStore {
            endpoints,
            key: RING_KEY.to_owned(),
            tls: None,
        }
    }

    /// The same store reached over mutual TLS (`crate::etcd::tls_options`).
    pub fn with_tls(mut self, tls: Option<etcd_client::TlsOptions>) -> RingStore {
        self.tls = tls;
        self
    }

    /// How etcd is reached.
    pub(crate) fn tls(&self) -> Option<&etcd_client::TlsOptions> {
        self.tls.as_ref()
    }

    /// The same store under another key (tests run several rings in one etcd).
    pub fn with_key(mut self, key: impl Into<String>) -> RingStore {
        self.key = key.into();
        self
    }

    /// The etcd endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The etcd key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The stored ring and its etcd mod revision, or `None` when there is none.
    ///
    /// # Errors
    /// `Ring` when etcd is unreachable or the stored value is not a valid ring.
    pub async fn load(&self) -> Result<Option<(Ring, i64)>, Error> {
        let (mut c, _) = connect_any(&self.endpoints, 0, self.tls.as_ref()).await?;
        let resp = get_key(&mut c, &self.key, "read the ring").await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => Ok(Some((parse_ring(kv.value())?, kv.mod_revision()))),
        }
    }

    /// Stores `ring` only if no ring exists yet. Returns false (and stores nothing) when one
    /// does.
    ///
    /// # Errors
    /// `Ring` for an invalid ring or an etcd failure.
    pub async fn create(&self, ring: &Ring) -> Result<bool, Error> {
        ring.validate()?;
        self.cas(ring, 0).await
    }

    /// Replaces the stored ring if its mod revision is still `revision` (0: if absent).
    async fn cas(&self, ring: &Ring, revision: i64) -> Result<bool, Error> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let value =
            serde_json::to_vec(ring).map_err(|e| Error::internal(format!("encode ring: {e}")))?;
        let (mut c, _) = connect_any(&self.endpoints, 0, self.tls.as_ref()).await?;
        let cmp = if revision == 0 {
            Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(self.key.as_str(), CompareOp::Equal, revision)
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(self.key.as_str(), value, None)]);
        let resp = tokio::time::timeout(ETCD_TIMEOUT, c.txn(txn))
            .await
            .map_err(|_| etcd_err("write the ring", "timed out"))?
            .map_err(|e| etcd_err("write the ring", e))?;
        Ok(resp.succeeded())
    }

    /// Applies `change` to the stored ring with compare-and-swap, retrying on races.
    ///
    /// # Errors
    /// `Ring` when no ring is stored, `change` fails, or etcd is unreachable.
    pub async fn update(
        &self,
        change: impl Fn(&mut Ring) -> Result<(), Error>,
    ) -> Result<Ring, Error> {
        for _ in 0..16 {
            let (mut ring, rev) = self.load().await?.ok_or_else(|| Error::Ring {
                message: format!("no ring stored at {}", self.key),
                retryable: false,
            })?;
            change(&mut ring)?;
            ring.validate()?;
            if self.cas(&ring, rev).await? {
                return Ok(ring);
            }
        }
        Err(Error::Ring {
            message: "the ring kept changing under the update; try again".into(),
            retryable: true,
        })
    }

    /// Moves `vnode` to shard `shard` (an explicit, online operator action). Clients watching
    /// the ring route the vnode's keys to the new shard from then on; copying the vnode's
    /// existing records (their `_vnode` column) is the operator's job.
    ///
    /// # Errors
    /// As [`RingStore::update`].
    pub async fn remap_vnode(&self, vnode: u32, shard: &str) -> Result<Ring, Error> {
        self.update(|r| r.remap(vnode, shard)).await
    }
}

pub(crate) fn parse_ring(bytes: &[u8]) -> Result<Ring, Error> {
    let ring: Ring = serde_json::from_slice(bytes).map_err(|e| Error::Ring {
        message: format!("stored ring is not valid JSON: {e}"),
        retryable: false,
    })?;
    ring.validate()?;
    Ok(ring)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(n: usize) -> Vec<ShardInfo> {
        (1..=n)
            .map(|i| ShardInfo {
                name: i.to_string(),
                urls: vec![format!("http://127.0.0.1:{}", 2020 + i)],
            })
            .collect()
    }

    #[test]
    fn dirnames() {
        assert_eq!(dirname("/a/stor/x/y"), "/a/stor/x");
        assert_eq!(dirname("/a/stor"), "/a");
        assert_eq!(dirname("/a"), "/");
        assert_eq!(dirname("/a/b/"), "/a");
        assert_eq!(dirname("plain"), "plain");
        assert_eq!(hashkey("manta", "/u/stor/d/f"), "/u/stor/d");
        assert_eq!(hashkey("manta_uploads", "abc:/u/stor/d/f"), "/u/stor/d");
        assert_eq!(hashkey("other", "/u/stor/d/f"), "/u/stor/d/f");
        assert_eq!(hashkey("manta_s3_objects", "bkt/a/b/c"), "bkt");
        assert_eq!(hashkey("manta_s3_uploads", "bkt/upload-id/00001"), "bkt");
        assert_eq!(hashkey("manta_s3_versions", "bkt/0123abcd"), "bkt");
    }

    #[test]
    fn vnodes_are_stable_and_in_range() {
        // Pinned values: changing the hash would move every record in a deployed ring.
        assert_eq!(vnode_of("/u/stor", 4096), vnode_of("/u/stor", 4096));
        let digest = Sha256::digest(b"/u/stor");
        let top = u64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(u64::from(vnode_of("/u/stor", 4096)), top >> 52);
        for k in ["", "a", "/x/y", "漢字"] {
            assert!(vnode_of(k, 7) < 7);
        }
    }

    #[test]
    fn new_ring_spreads_vnodes_evenly() {
        let r = Ring::new(4096, shards(3)).unwrap();
        let counts: Vec<usize> = ["1", "2", "3"]
            .iter()
            .map(|s| r.vnodes_of(s).len())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 4096);
        assert!(
            counts.iter().all(|c| (1364..=1366).contains(c)),
            "{counts:?}"
        );
        // Keys spread over all shards.
        let mut hit = [0usize; 3];
        for i in 0..3000 {
            hit[r.locate(&format!("/acct/stor/d{i}")).0] += 1;
        }
        assert!(hit.iter().all(|h| *h > 800), "{hit:?}");
    }

    #[test]
    fn remap_moves_one_vnode_and_bumps_version() {
        let mut r = Ring::new(64, shards(2)).unwrap();
        let v = r.vnode_for("/acct/stor/dir");
        let before = r.shard_index_of_vnode(v);
        let target = if before == 0 { "2" } else { "1" };
        r.remap(v, target).unwrap();
        assert_eq!(r.version, 2);
        assert_ne!(r.shard_index_of_vnode(v), before);
        assert!(r.remap(64, "1").is_err());
        assert!(r.remap(0, "nope").is_err());
    }

    #[test]
    fn invalid_rings_are_refused() {
        assert!(Ring::new(0, shards(1)).is_err());
        assert!(Ring::new(16, vec![]).is_err());
        let mut dup = shards(2);
        dup[1].name = "1".into();
        assert!(Ring::new(16, dup).is_err());
        let mut r = Ring::new(16, shards(2)).unwrap();
        r.map[3] = 9;
        assert!(r.validate().is_err());
        assert!(parse_ring(b"{").is_err());
    }
}
