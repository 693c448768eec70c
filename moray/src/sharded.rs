//! A client over every shard of the ring, routing each call to the shard that owns its key.
//!
//! Routing (see [`crate::ring`] for hash keys):
//! - `put_object`, `get_object`, `del_object`: by the record's hash key; the record's vnode is
//!   stored with it (`_vnode`) so a remapped vnode's records can be found and moved;
//! - `find_objects`: by an explicit `hashkey` (e.g. the directory being listed);
//! - `batch`: every put/delete must route to the same shard;
//! - bucket `manta_storage` (capacity heartbeats): always the *system shard* (the ring's first),
//!   so the front door's picker reads all heartbeats with one query;
//! - bucket administration (`create/update/put/del_bucket`): every shard.
//!
//! Calls that must see every shard (the storage nodes' garbage collector checking whether any
//! record still references an object id, the front door's link checks) use
//! [`ShardedClient::shards`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::client::{MorayClient, RecordStream, Tls};
use crate::error::{Error, Result};
use crate::etcd::connect_and_get;
use crate::ring::{RING_KEY, Ring, RingStore, hashkey, parse_ring};
use crate::types::{
    BatchOp, BatchResult, Bucket, BucketConfig, DelOptions, FindOptions, ObjectRecord, PutOptions,
    PutResult,
};

/// The bucket that always lives on the system shard.
pub const SYSTEM_BUCKETS: &[&str] = &["manta_storage"];

#[derive(Debug)]
struct Routing {
    ring: Arc<Ring>,
    /// Parallel to `ring.shards`.
    clients: Vec<MorayClient>,
}

impl Routing {
    fn new(ring: Ring, tls: &Tls) -> Result<Routing> {
        ring.validate()?;
        let clients = ring
            .shards
            .iter()
            .map(|s| MorayClient::with_urls_over(&s.urls, tls.clone()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Routing {
            ring: Arc::new(ring),
            clients,
        })
    }
}

#[derive(Debug)]
struct Inner {
    routing: RwLock<Arc<Routing>>,
    /// How the shards are reached (also for the clients of a new ring).
    tls: Tls,
    /// Stops the ring watcher when the last clone is dropped.
    _watch: Option<DropGuard>,
}

/// A client of all shards. Cheap to clone; clones share the ring and its watcher.
#[derive(Debug, Clone)]
pub struct ShardedClient {
    inner: Arc<Inner>,
}

impl ShardedClient {
    /// One shard at `url`, without etcd (single-shard setups and tests).
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed URL.
    pub fn single(url: &str) -> Result<ShardedClient> {
        ShardedClient::single_over(url, None)
    }

    /// [`ShardedClient::single`], reaching the shard as `tls` says.
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed URL.
    pub fn single_over(url: &str, tls: Tls) -> Result<ShardedClient> {
        ShardedClient::from_ring_over(Ring::single(url)?, tls)
    }

    /// A fixed ring, not watched.
    ///
    /// # Errors
    /// `Ring` for an invalid ring, `InvalidArgument` for malformed URLs.
    pub fn from_ring(ring: Ring) -> Result<ShardedClient> {
        ShardedClient::from_ring_over(ring, None)
    }

    /// [`ShardedClient::from_ring`], reaching the shards as `tls` says.
    ///
    /// # Errors
    /// As [`ShardedClient::from_ring`].
    pub fn from_ring_over(ring: Ring, tls: Tls) -> Result<ShardedClient> {
        Ok(ShardedClient {
            inner: Arc::new(Inner {
                routing: RwLock::new(Arc::new(Routing::new(ring, &tls)?)),
                tls,
                _watch: None,
            }),
        })
    }

    /// Loads the ring from etcd ([`RING_KEY`]) and keeps following it: remaps take effect
    /// without a restart.
    ///
    /// # Errors
    /// `Ring` when etcd is unreachable or holds no valid ring.
    pub async fn from_etcd(endpoints: Vec<String>) -> Result<ShardedClient> {
        ShardedClient::from_etcd_over(endpoints, None).await
    }

    /// [`ShardedClient::from_etcd`] for a caller holding region identity `id` (when given,
    /// both etcd and the shards are reached over mutual TLS with it).
    ///
    /// # Errors
    /// As [`ShardedClient::from_etcd`], or when the identity cannot be loaded.
    pub async fn from_etcd_over(
        endpoints: Vec<String>,
        id: Option<&manta_util::tls::Identity>,
    ) -> Result<ShardedClient> {
        let tls = manta_util::tls::internal_client_of(id)
            .map_err(|e| Error::internal(format!("load the region identity: {e}")))?;
        let store = RingStore::new(endpoints).with_tls(crate::etcd::tls_options_of(id)?);
        ShardedClient::from_store_over(store, tls).await
    }

    /// Like [`ShardedClient::from_etcd`] with an explicit store (key).
    ///
    /// # Errors
    /// As [`ShardedClient::from_etcd`].
    pub async fn from_store(store: RingStore) -> Result<ShardedClient> {
        ShardedClient::from_store_over(store, None).await
    }

    /// [`ShardedClient::from_store`], reaching the shards as `tls` says.
    ///
    /// # Errors
    /// As [`ShardedClient::from_etcd`].
    pub async fn from_store_over(store: RingStore, tls: Tls) -> Result<ShardedClient> {
        let (ring, rev) = store.load().await?.ok_or_else(|| Error::Ring {
            message: format!(
                "no ring stored at {} (create one with moray-cli ring-create)",
                store.key()
            ),
            retryable: false,
        })?;
        let token = CancellationToken::new();
        let inner = Arc::new(Inner {
            routing: RwLock::new(Arc::new(Routing::new(ring, &tls)?)),
            tls,
            _watch: Some(token.clone().drop_guard()),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(watch_ring(store, rev, weak, token));
        Ok(ShardedClient { inner })
    }

    fn routing(&self) -> Arc<Routing> {
        self.inner
            .routing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The ring currently in use.
    pub fn ring(&self) -> Arc<Ring> {
        self.routing().ring.clone()
    }

    /// A client per shard, in ring order (for calls that must see every shard).
    pub fn shards(&self) -> Vec<MorayClient> {
        self.routing().clients.clone()
    }

    /// The system shard (the ring's first): home of `manta_storage`.
    pub fn system(&self) -> MorayClient {
        self.routing().clients[0].clone()
    }

    /// The shard of a hash key, and the key's vnode.
    pub fn shard_for_hashkey(&self, hashkey: &str) -> (MorayClient, u32) {
        let r = self.routing();
        let (i, v) = r.ring.locate(hashkey);
        (r.clients[i].clone(), v)
    }

    /// The shard a record of `bucket` with `key` lives on, and its vnode (`None` for system
    /// buckets, which are not hashed).
    pub fn shard_for(&self, bucket: &str, key: &str) -> (MorayClient, Option<u32>) {
        if SYSTEM_BUCKETS.contains(&bucket) {
            return (self.system(), None);
        }
        let (c, v) = self.shard_for_hashkey(hashkey(bucket, key));
        (c, Some(v))
    }

    /// Whether a record of `bucket` with `key` lives on the system shard (so that one batch
    /// may write it together with system records).
    pub fn on_system_shard(&self, bucket: &str, key: &str) -> bool {
        SYSTEM_BUCKETS.contains(&bucket) || self.routing().ring.locate(hashkey(bucket, key)).0 == 0
    }

    /// Writes a record on its shard.
    ///
    /// # Errors
    /// As [`MorayClient::put_object`].
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        value: Value,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let (c, v) = self.shard_for(bucket, key);
        c.put_object_vnode(bucket, key, value, opts, v.map(u64::from))
            .await
    }

    /// Reads a record from its shard.
    ///
    /// # Errors
    /// As [`MorayClient::get_object`].
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<ObjectRecord> {
        self.shard_for(bucket, key).0.get_object(bucket, key).await
    }

    /// Deletes a record on its shard.
    ///
    /// # Errors
    /// As [`MorayClient::del_object`].
    pub async fn del_object(&self, bucket: &str, key: &str, opts: DelOptions) -> Result<()> {
        self.shard_for(bucket, key)
            .0
            .del_object(bucket, key, opts)
            .await
    }

    fn find_target(&self, bucket: &str, hashkey: &str) -> MorayClient {
        if SYSTEM_BUCKETS.contains(&bucket) {
            self.system()
        } else {
            self.shard_for_hashkey(hashkey).0
        }
    }

    /// Finds records on the shard owning `hashkey` (e.g. the directory being listed).
    ///
    /// # Errors
    /// As [`MorayClient::find_objects`].
    pub async fn find_objects(
        &self,
        bucket: &str,
        filter: &str,
        hashkey: &str,
        opts: FindOptions,
    ) -> Result<Vec<ObjectRecord>> {
        self.find_target(bucket, hashkey)
            .find_objects(bucket, filter, opts)
            .await
    }

    /// Streaming form of [`ShardedClient::find_objects`].
    ///
    /// # Errors
    /// As [`MorayClient::find_objects_stream`].
    pub async fn find_objects_stream(
        &self,
        bucket: &str,
        filter: &str,
        hashkey: &str,
        opts: FindOptions,
    ) -> Result<RecordStream> {
        self.find_target(bucket, hashkey)
            .find_objects_stream(bucket, filter, opts)
            .await
    }

    /// Runs a batch on the shard all its put/delete operations route to.
    ///
    /// # Errors
    /// `InvalidArgument` when the keys span shards (or there is none); otherwise as
    /// [`MorayClient::batch`].
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<BatchResult> {
        let r = self.routing();
        let mut target: Option<usize> = None;
        let mut vnodes = std::collections::BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let (bucket, key) = match op {
                BatchOp::Put { bucket, key, .. } | BatchOp::Delete { bucket, key, .. } => {
                    (bucket, key)
                }
                BatchOp::Update { .. } | BatchOp::DeleteMany { .. } => continue,
            };
            let (shard, vnode) = if SYSTEM_BUCKETS.contains(&bucket.as_str()) {
                (0, None)
            } else {
                let (s, v) = r.ring.locate(hashkey(bucket, key));
                (s, Some(v))
            };
            if let (BatchOp::Put { .. }, Some(v)) = (op, vnode) {
                vnodes.insert(i, u64::from(v));
            }
            match target {
                None => target = Some(shard),
                Some(t) if t != shard => {
                    return Err(Error::invalid_argument(format!(
                        "batch spans shards {} and {} (key {key:?}); a batch must stay on one shard",
                        r.ring.shards[t].name, r.ring.shards[shard].name
                    )));
                }
                Some(_) => {}
            }
        }
        let t = target.ok_or_else(|| {
            Error::invalid_argument("a sharded batch needs at least one put or delete to route by")
        })?;
        r.clients[t].batch_vnodes(ops, vnodes).await
    }

    /// Creates a bucket on every shard.
    ///
    /// # Errors
    /// The first shard's error.
    pub async fn create_bucket(&self, name: &str, config: BucketConfig) -> Result<Bucket> {
        let mut last = None;
        for c in self.shards() {
            last = Some(c.create_bucket(name, config.clone()).await?);
        }
        last.ok_or_else(|| Error::internal("ring without shards"))
    }

    /// Updates a bucket on every shard.
    ///
    /// # Errors
    /// The first shard's error.
    pub async fn update_bucket(&self, name: &str, config: BucketConfig) -> Result<Bucket> {
        let mut last = None;
        for c in self.shards() {
            last = Some(c.update_bucket(name, config.clone()).await?);
        }
        last.ok_or_else(|| Error::internal("ring without shards"))
    }

    /// Creates or updates a bucket on every shard (idempotent).
    ///
    /// # Errors
    /// The first shard's error.
    pub async fn put_bucket(&self, name: &str, config: BucketConfig) -> Result<Bucket> {
        let mut last = None;
        for c in self.shards() {
            last = Some(c.put_bucket(name, config.clone()).await?);
        }
        last.ok_or_else(|| Error::internal("ring without shards"))
    }

    /// Reads a bucket from the system shard.
    ///
    /// # Errors
    /// As [`MorayClient::get_bucket`].
    pub async fn get_bucket(&self, name: &str) -> Result<Bucket> {
        self.system().get_bucket(name).await
    }

    /// Deletes a bucket on every shard (shards where it is already gone are skipped).
    ///
    /// # Errors
    /// The first error other than `BucketNotFound`.
    pub async fn del_bucket(&self, name: &str) -> Result<()> {
        for c in self.shards() {
            match c.del_bucket(name).await {
                Ok(()) | Err(Error::BucketNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Creates the object store's buckets on every shard (see
    /// [`crate::schema::setup_manta_buckets`]).
    ///
    /// # Errors
    /// The first shard's error.
    pub async fn setup_manta_buckets(&self) -> Result<()> {
        for c in self.shards() {
            crate::schema::setup_manta_buckets(&c).await?;
        }
        Ok(())
    }

    /// Deep-pings every shard.
    ///
    /// # Errors
    /// The first failing shard's error.
    pub async fn ping(&self) -> Result<()> {
        for c in self.shards() {
            c.ping().await?;
        }
        Ok(())
    }
}

/// Follows the ring key: each new valid version replaces the routing. Ends when the client is
/// dropped. Reconnects (to any endpoint) when the watch breaks.
async fn watch_ring(
    store: RingStore,
    mut rev: i64,
    inner: std::sync::Weak<Inner>,
    stop: CancellationToken,
) {
    let endpoints = store.endpoints().to_vec();
    let key = store.key().to_owned();
    let mut start = 0usize;
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            // Catch up on anything missed while disconnected.
            let (mut c, resp) =
                connect_and_get(&endpoints, store.tls(), &mut start, &key, "read the ring").await?;
            if let Some(kv) = resp.kvs().first()
                && kv.mod_revision() > rev
            {
                apply(&inner, kv.value(), &key);
                rev = kv.mod_revision();
            }
            let opts = etcd_client::WatchOptions::new().with_start_revision(rev + 1);
            let mut stream = c
                .watch(key.as_str(), Some(opts))
                .await
                .map_err(|e| crate::etcd::etcd_err("watch the ring", e))?;
            backoff = Duration::from_millis(100);
            while let Some(msg) = stream
                .message()
                .await
                .map_err(|e| crate::etcd::etcd_err("watch the ring", e))?
            {
                for ev in msg.events() {
                    if let Some(kv) = ev.kv()
                        && ev.event_type() == etcd_client::EventType::Put
                    {
                        apply(&inner, kv.value(), &key);
                        rev = rev.max(kv.mod_revision());
                    }
                }
                if inner.strong_count() == 0 {
                    return Ok::<(), Error>(());
                }
            }
            Err(crate::etcd::etcd_err("watch the ring", "stream ended"))
        };
        tokio::select! {
            () = stop.cancelled() => return,
            r = session => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, key = RING_KEY, "ring watch interrupted; reconnecting");
                }
            }
        }
        if inner.strong_count() == 0 {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
        start += 1;
    }
}

fn apply(inner: &std::sync::Weak<Inner>, bytes: &[u8], key: &str) {
    let Some(inner) = inner.upgrade() else { return };
    match parse_ring(bytes).and_then(|ring| Routing::new(ring, &inner.tls)) {
        Ok(routing) => {
            let mut cur = inner
                .routing
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if routing.ring.version > cur.ring.version {
                tracing::info!(version = routing.ring.version, key, "ring updated");
                *cur = Arc::new(routing);
            }
        }
        Err(e) => tracing::error!(error = %e, key, "ignoring an invalid ring in etcd"),
    }
}
