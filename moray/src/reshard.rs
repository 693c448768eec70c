//! Moving a vnode's records from one shard to another while the region serves.
//!
//! [`move_vnode`] does, for vnode `v` going from shard `A` to shard `B`:
//! 1. **fence** `v` on `A` ([`MorayClient::vnode_fence`]): from then on every write of a record
//!    of `v` on `A` is refused with the retryable `NoDatabasePeersError`, and the writes that
//!    were in flight have committed. Reads keep being served by `A`.
//! 2. **lift** any fence `B` has for `v` (it may have given `v` away before) and **clear**
//!    what `B` holds of `v` from an earlier, interrupted move (through Moray, so `B`'s entry
//!    counts stay right);
//! 3. **copy** every record of `v` (every bucket, `(_vnode=v)`, in `_id` order) to `B` through
//!    Moray, with its vnode, so `B`'s triggers rebuild its directories' entry counts; then
//!    check that `B` holds as many records of `v` as `A`;
//! 4. **switch** the ring entry of `v` to `B` (compare-and-swap in etcd); every client follows
//!    the ring, and a client that has not yet seen the change is refused by `A`'s fence and
//!    retries;
//! 5. after `settle` (for reads from clients still on the old ring), **purge** `v` from `A`.
//!    The fence stays: `A` never takes a write of `v` again unless `v` moves back.
//!
//! Writes of `v` fail, retryably, from step 1 to the moment each client sees the new ring;
//! reads never fail. Every step can be run again: a move that stopped half-way is finished by
//! running it again, or undone by moving `v` back.

use std::time::Duration;

use crate::client::{MorayClient, Tls};
use crate::error::{Error, Result};
use crate::ring::RingStore;
use crate::types::{FindOptions, PutOptions, Sort};

/// How a move runs.
#[derive(Debug, Clone)]
pub struct MoveOptions {
    /// Records read per query.
    pub batch: u64,
    /// Wait between the switch and the purge of the old shard.
    pub settle: Duration,
}

impl Default for MoveOptions {
    fn default() -> Self {
        MoveOptions {
            batch: 500,
            settle: Duration::from_secs(10),
        }
    }
}

/// What a move did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MoveReport {
    /// The vnode.
    pub vnode: u32,
    /// The shard it left.
    pub from: String,
    /// The shard it lives on now.
    pub to: String,
    /// Records copied.
    pub copied: u64,
    /// Records of an earlier attempt cleared from the target first.
    pub cleared: u64,
    /// Records purged from the old shard.
    pub purged: u64,
    /// The ring version that made the switch.
    pub ring_version: u64,
}

fn client_of(urls: &[String], tls: &Tls) -> Result<MorayClient> {
    MorayClient::with_urls_over(urls, tls.clone())
}

/// Every record of `vnode` in `bucket` on `c`, a batch at a time, handed to `each`.
async fn for_each_record<F, Fut>(
    c: &MorayClient,
    bucket: &str,
    vnode: u32,
    batch: u64,
    mut each: F,
) -> Result<u64>
where
    F: FnMut(crate::types::ObjectRecord) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut from = 0i64;
    let mut n = 0;
    loop {
        let opts = FindOptions {
            limit: Some(batch),
            sort: vec![Sort::asc("_id")],
            no_count: true,
            ..FindOptions::default()
        };
        let filter = format!("(&(_vnode={vnode})(_id>={from}))");
        let recs = c.find_objects(bucket, &filter, opts).await?;
        let full = recs.len() as u64 >= batch;
        for r in recs {
            from = r.id + 1;
            n += 1;
            each(r).await?;
        }
        if !full {
            return Ok(n);
        }
    }
}

/// How many records of `vnode` `bucket` holds on `c` (one query, counted by Postgres).
async fn count_of(c: &MorayClient, bucket: &str, vnode: u32) -> Result<u64> {
    let opts = FindOptions {
        limit: Some(1),
        ..FindOptions::default()
    };
    let first = c
        .find_objects(bucket, &format!("(_vnode={vnode})"), opts)
        .await?;
    Ok(first.first().and_then(|r| r.count).unwrap_or(0))
}

/// Moves `vnode` to the shard named `to` (see the module docs). Moving a vnode to the shard
/// it is on does nothing.
///
/// # Errors
/// Unknown shard or vnode, a shard or etcd failing (the move can then be run again), or a
/// count that does not match after the copy (nothing switched).
pub async fn move_vnode(
    store: &RingStore,
    tls: Tls,
    vnode: u32,
    to: &str,
    opts: &MoveOptions,
) -> Result<MoveReport> {
    let (ring, _) = store.load().await?.ok_or_else(|| Error::Ring {
        message: "no ring is stored".into(),
        retryable: false,
    })?;
    if vnode >= ring.vnodes {
        return Err(Error::invalid_argument(format!(
            "vnode {vnode} is out of range (the ring has {})",
            ring.vnodes
        )));
    }
    let to_idx = ring
        .shard_index(to)
        .ok_or_else(|| Error::invalid_argument(format!("no shard named {to:?} in the ring")))?;
    let from_idx = ring.shard_index_of_vnode(vnode);
    let mut report = MoveReport {
        vnode,
        from: ring.shards[from_idx].name.clone(),
        to: to.to_owned(),
        ring_version: ring.version,
        ..MoveReport::default()
    };
    if from_idx == to_idx {
        return Ok(report);
    }
    let a = client_of(&ring.shards[from_idx].urls, &tls)?;
    let b = client_of(&ring.shards[to_idx].urls, &tls)?;

    // 1. Nothing of the vnode changes on the old shard from here on.
    a.vnode_fence(vnode, to).await?;
    tracing::info!(vnode, from = %report.from, to, "vnode fenced on its shard");

    // 2. The target owns nothing of it but what is copied now.
    b.vnode_unfence(vnode).await?;
    for bucket in b.list_buckets().await? {
        let c = b
            .delete_many(&bucket.name, &format!("(_vnode={vnode})"), None)
            .await?;
        report.cleared += c.count;
    }

    // 3. Copy, bucket by bucket; `manta` first so the entry counts its triggers keep are
    //    rebuilt before anything else.
    let mut buckets = a.list_buckets().await?;
    buckets.sort_by_key(|bk| bk.name != crate::schema::MANTA);
    for bucket in &buckets {
        let name = bucket.name.as_str();
        let mut made = false;
        let b = &b;
        let copied = for_each_record(&a, name, vnode, opts.batch, |r| {
            let first = !made;
            made = true;
            let config = bucket.config();
            async move {
                if first {
                    b.put_bucket(name, config).await?;
                }
                b.put_object_vnode(
                    name,
                    &r.key,
                    r.value,
                    PutOptions::any(),
                    Some(u64::from(vnode)),
                )
                .await
                .map(drop)
            }
        })
        .await?;
        report.copied += copied;
        if copied > 0 {
            let there = count_of(b, name, vnode).await?;
            if there != copied {
                return Err(Error::internal(format!(
                    "{name}: copied {copied} records of vnode {vnode}, the target holds {there}; \
                     nothing switched, run the move again"
                )));
            }
        }
    }
    tracing::info!(vnode, copied = report.copied, "vnode copied");

    // 4. Switch.
    let ring = store.remap_vnode(vnode, to).await?;
    report.ring_version = ring.version;
    tracing::info!(vnode, version = ring.version, "ring switched");

    // 5. Clean up once clients have had time to follow.
    tokio::time::sleep(opts.settle).await;
    report.purged = a.vnode_purge(vnode).await?;
    tracing::info!(
        vnode,
        purged = report.purged,
        "vnode purged from its old shard"
    );
    Ok(report)
}
