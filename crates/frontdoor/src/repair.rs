//! The repairer: brings every object back to as many healthy copies as its record names.
//!
//! An object's durability is the number of copies its record names (`sharks`). A named copy is
//! - *healthy* when its node's heartbeat is fresh, the operator has not set the node
//!   evacuating or retired, and no quarantine record (`manta_quarantine`: scrub, or a read
//!   that found the bytes differ from the record) names it;
//! - *late* when the node's heartbeat is older than the placement limit but younger than the
//!   grace period: the node may be rebooting, so nothing is done yet;
//! - *lost* when the node has been silent longer than the grace period, or is unknown;
//! - *bad* when quarantined;
//! - *draining* when the node is evacuating or retired (it still serves reads).
//!
//! For each lost, bad or draining copy the repairer chooses a live node that holds no copy of
//! the object, preferring failure domains the kept copies are not in, and copies the bytes
//! from a healthy (else draining, else late) copy. The target node verifies them against the
//! record's MD5 as they arrive, so a corrupt source fails the copy and the next source is
//! tried; a copy already on the target with the right MD5 (a SnapLink's, repaired before) is
//! used as it is. The record is then rewritten with the new node in place of the old,
//! conditional on the etag it was read at: a concurrent overwrite or delete always wins, and
//! the copies made for it are handed to garbage collection (a delete-log entry naming them).
//! A successful rewrite makes Moray's delete-log trigger name the nodes dropped from the
//! record, so their garbage collection removes the old copies (an evacuated node empties this
//! way); a copy another record still names there stays.
//!
//! Passes scan every shard's `manta`, `manta_s3_objects` and `manta_s3_versions` buckets in
//! `_id` order, a batch at a time; the cursor and the pass's counts are saved in
//! `manta_repair` after each batch, so a restarted repairer (or the one that takes over) goes on from there. A rewritten record
//! gets a new `_id`, beyond the cursor, so a pass also sees records written during it.
//!
//! The lease holder also sweeps old multipart uploads ([`crate::api::uploads::sweep`]) and
//! writes the usage reports that are due ([`crate::reports::report_due`]) before each pass.
//!
//! Every front door runs a repairer, but only the holder of the lease in `manta_repair` acts:
//! the lease is taken and renewed by compare-and-swap and lapses after a few seconds without
//! renewal, so exactly one repairer acts on an object at a time. Copying is throttled to a
//! byte rate.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use manta_types::repair::{
    LEASE_KEY, PROGRESS_KEY, PassCounts, QUARANTINE_BUCKET, REPAIR_BUCKET, RepairLease,
    RepairProgress,
};
use manta_types::{MetadataRecord, ObjectInfo, SharkRef};
use moray::types::{FindOptions, ObjectRecord, PutOptions, Sort};
use moray::{Error as MorayError, MorayClient};
use serde_json::Value;
use storage_api::ObjectKey;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::picker::Node;
use crate::state::Frontdoor;

/// How the repairer runs.
#[derive(Debug, Clone)]
pub struct RepairConfig {
    /// Whether this front door takes part (it may still never hold the lease).
    pub enabled: bool,
    /// How long a silent node's copies are waited for before they count as lost.
    pub grace: Duration,
    /// Pause between passes.
    pub interval: Duration,
    /// Most bytes copied per second.
    pub rate_bytes_per_sec: u64,
    /// Records read per query.
    pub batch: u64,
    /// How long the lease lasts without renewal.
    pub lease_ttl: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            enabled: true,
            grace: Duration::from_secs(3600),
            interval: Duration::from_secs(300),
            rate_bytes_per_sec: 50 * 1024 * 1024,
            batch: 200,
            lease_ttl: Duration::from_secs(30),
        }
    }
}

/// The buckets holding object records with copies.
const OBJECT_BUCKETS: [&str; 3] = manta_types::s3::OBJECT_RECORD_BUCKETS;

/// What a named copy is worth (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CopyState {
    /// Serve it, keep it.
    Healthy,
    /// Still a source; to be moved off.
    Draining,
    /// Heartbeat late, within the grace period: left alone for now.
    Late,
    /// Quarantined: not a source; replaced.
    Bad,
    /// Node silent past the grace period or unknown: replaced.
    Lost,
}

impl CopyState {
    /// Whether the copy is to be replaced.
    pub fn replace(self) -> bool {
        matches!(self, CopyState::Draining | CopyState::Bad | CopyState::Lost)
    }
}

/// The state of a copy on `node` (`None`: unknown node), given whether it is quarantined.
pub fn copy_state(
    node: Option<&Node>,
    quarantined: bool,
    now_ms: u64,
    max_age: Duration,
    grace: Duration,
) -> CopyState {
    let Some(n) = node else {
        return CopyState::Lost;
    };
    let age = now_ms.saturating_sub(n.timestamp);
    if quarantined {
        CopyState::Bad
    } else if age > grace.as_millis() as u64 {
        CopyState::Lost
    } else if n.draining() {
        CopyState::Draining
    } else if age > max_age.as_millis() as u64 {
        CopyState::Late
    } else {
        CopyState::Healthy
    }
}

/// The repairer of one front door.
#[derive(Debug)]
pub struct Repairer {
    fd: Arc<Frontdoor>,
    cfg: RepairConfig,
    holder: String,
    /// When the lease was last taken or renewed.
    renewed: std::sync::Mutex<Option<Instant>>,
}

/// What became of one object.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Fine,
    Waiting,
    Repaired {
        copies: u64,
        bytes: u64,
    },
    Failed,
    /// The record changed under us; looked at again later.
    Raced,
}

impl Repairer {
    /// A repairer acting through `fd`'s clients, as `holder` (unique per front door).
    pub fn new(fd: Arc<Frontdoor>, cfg: RepairConfig, holder: String) -> Repairer {
        Repairer {
            fd,
            cfg,
            holder,
            renewed: std::sync::Mutex::new(None),
        }
    }

    fn system(&self) -> MorayClient {
        self.fd.moray.system()
    }

    /// Takes or renews the lease; false when another holds it (or Moray fails).
    async fn hold_lease(&self) -> bool {
        let fresh = self
            .renewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < self.cfg.lease_ttl / 3);
        if fresh {
            return true;
        }
        let now = manta_types::time::now_ms();
        let sys = self.system();
        let opts = match sys.get_object(REPAIR_BUCKET, LEASE_KEY).await {
            Ok(rec) => {
                let held = serde_json::from_value::<RepairLease>(rec.value)
                    .is_ok_and(|l| l.holder != self.holder && l.expires > now);
                if held {
                    self.lost_lease();
                    return false;
                }
                PutOptions::if_match(rec.etag)
            }
            Err(MorayError::ObjectNotFound { .. }) => PutOptions::must_not_exist(),
            Err(e) => {
                warn!(error = %e, "repair: cannot read the lease");
                self.lost_lease();
                return false;
            }
        };
        let lease = RepairLease {
            holder: self.holder.clone(),
            expires: now + self.cfg.lease_ttl.as_millis() as u64,
        };
        let value = serde_json::to_value(&lease).unwrap_or(Value::Null);
        match sys.put_object(REPAIR_BUCKET, LEASE_KEY, value, opts).await {
            Ok(_) => {
                let mut r = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
                if r.is_none() {
                    info!(holder = %self.holder, "repair: this front door now repairs");
                }
                *r = Some(Instant::now());
                self.set_active(true);
                true
            }
            Err(e) => {
                debug!(error = %e, "repair: lease taken by another");
                self.lost_lease();
                false
            }
        }
    }

    fn lost_lease(&self) {
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.set_active(false);
    }

    fn set_active(&self, holds: bool) {
        self.fd.metrics.set(
            "repair_active",
            "1 when this front door holds the repair lease.",
            &[],
            f64::from(u8::from(holds)),
        );
    }

    /// Gives the lease up (on shutdown), so another front door takes over at once.
    async fn release(&self) {
        if self
            .renewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            return;
        }
        let sys = self.system();
        if let Ok(rec) = sys.get_object(REPAIR_BUCKET, LEASE_KEY).await {
            let lease = RepairLease {
                holder: self.holder.clone(),
                expires: 0,
            };
            let value = serde_json::to_value(&lease).unwrap_or(Value::Null);
            let _ = sys
                .put_object(
                    REPAIR_BUCKET,
                    LEASE_KEY,
                    value,
                    PutOptions::if_match(rec.etag),
                )
                .await;
        }
        self.lost_lease();
    }

    async fn load_progress(&self) -> RepairProgress {
        match self.system().get_object(REPAIR_BUCKET, PROGRESS_KEY).await {
            Ok(rec) => serde_json::from_value(rec.value).unwrap_or_default(),
            Err(_) => RepairProgress::default(),
        }
    }

    async fn save_progress(&self, p: &mut RepairProgress) {
        p.holder.clone_from(&self.holder);
        p.updated = manta_types::time::now_ms();
        let value = serde_json::to_value(&*p).unwrap_or(Value::Null);
        if let Err(e) = self
            .system()
            .put_object(REPAIR_BUCKET, PROGRESS_KEY, value, PutOptions::any())
            .await
        {
            warn!(error = %e, "repair: cannot save progress");
        }
    }

    /// `(storage id, object id)` of every quarantined copy.
    async fn quarantined(&self) -> HashSet<(String, String)> {
        let opts = FindOptions {
            limit: Some(1_000_000),
            no_count: true,
            ..FindOptions::default()
        };
        match self
            .system()
            .find_objects(QUARANTINE_BUCKET, "(objectId=*)", opts)
            .await
        {
            Ok(recs) => recs
                .into_iter()
                .filter_map(|r| {
                    let node = r.value.get("manta_storage_id")?.as_str()?.to_owned();
                    let id = r.value.get("objectId")?.as_str()?.to_owned();
                    Some((node, id))
                })
                .collect(),
            Err(MorayError::BucketNotFound { .. }) => HashSet::new(),
            Err(e) => {
                warn!(error = %e, "repair: cannot read quarantined copies");
                HashSet::new()
            }
        }
    }

    /// Runs passes until `shutdown`, acting only while holding the lease.
    pub async fn run(self, shutdown: CancellationToken) {
        let idle = self.cfg.interval.min(self.cfg.lease_ttl / 2);
        loop {
            let pause = if self.hold_lease().await {
                match crate::api::uploads::sweep(&self.fd, self.fd.cfg.upload_max_age).await {
                    Ok(0) => {}
                    Ok(n) => info!(uploads = n, "old multipart uploads swept"),
                    Err(e) => warn!(error = %e, "cannot sweep old multipart uploads"),
                }
                if let Err(e) = crate::reports::report_due(&self.fd).await {
                    warn!(error = %e.message, "cannot write usage reports; trying again later");
                }
                match self.pass(&shutdown).await {
                    Ok(true) => self.cfg.interval,
                    Ok(false) => idle,
                    Err(e) => {
                        warn!(error = %e, "repair pass stopped; resuming later");
                        idle
                    }
                }
            } else {
                idle
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => break,
            }
        }
        self.release().await;
    }

    /// One pass (or the rest of one). `Ok(true)` when it went over everything; `Ok(false)`
    /// when it stopped early (lease lost, shutdown).
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn pass(&self, shutdown: &CancellationToken) -> Result<bool, MorayError> {
        // A pass counts as started before the node states it acts on were read, so a pass
        // that began after an evacuation always knew of it.
        let begun = manta_types::time::now_ms();
        self.fd.picker.refresh().await?;
        let mut progress = self.load_progress().await;
        if progress.pass == 0 || progress.current.finished != 0 {
            progress.pass += 1;
            progress.cursors.clear();
            progress.current = PassCounts {
                started: begun,
                ..PassCounts::default()
            };
            info!(pass = progress.pass, "repair pass begins");
        }
        let quarantined = self.quarantined().await;
        let ring = self.fd.moray.ring();
        for (shard, client) in ring.shards.iter().zip(self.fd.moray.shards()) {
            for bucket in OBJECT_BUCKETS {
                let cursor_key = format!("{}/{bucket}", shard.name);
                loop {
                    let from = progress.cursors.get(&cursor_key).copied().unwrap_or(0);
                    let opts = FindOptions {
                        limit: Some(self.cfg.batch),
                        sort: vec![Sort::asc("_id")],
                        no_count: true,
                        ..FindOptions::default()
                    };
                    let filter = format!("(&(type=object)(_id>={from}))");
                    let batch = match client.find_objects(bucket, &filter, opts).await {
                        Ok(b) => b,
                        Err(MorayError::BucketNotFound { .. }) => break,
                        Err(e) => return Err(e),
                    };
                    let full = batch.len() as u64 >= self.cfg.batch;
                    for rec in batch {
                        if shutdown.is_cancelled() || !self.hold_lease().await {
                            self.save_progress(&mut progress).await;
                            return Ok(false);
                        }
                        let next = u64::try_from(rec.id).unwrap_or(0) + 1;
                        self.count(&mut progress.current, &client, bucket, rec, &quarantined)
                            .await;
                        progress.cursors.insert(cursor_key.clone(), next);
                    }
                    self.save_progress(&mut progress).await;
                    if !full {
                        break;
                    }
                }
            }
        }
        progress.current.finished = manta_types::time::now_ms();
        progress.last = Some(progress.current.clone());
        self.save_progress(&mut progress).await;
        self.publish(&progress.current);
        info!(
            pass = progress.pass,
            scanned = progress.current.scanned,
            under_replicated = progress.current.under_replicated,
            repaired = progress.current.repaired,
            failed = progress.current.failed,
            "repair pass done"
        );
        Ok(true)
    }

    /// Sets the gauges of a finished pass.
    fn publish(&self, c: &PassCounts) {
        let m = &self.fd.metrics;
        m.set(
            "repair_under_replicated_objects",
            "Objects with fewer healthy copies than their durability, in the last repair pass.",
            &[],
            c.under_replicated as f64,
        );
        m.set(
            "repair_unrepaired_objects",
            "Objects the last repair pass could not repair.",
            &[],
            c.failed as f64,
        );
        for n in self.fd.picker.nodes().iter().filter(|n| n.draining()) {
            let left = c.on_draining.get(&n.storage_id).copied().unwrap_or(0);
            m.set(
                "repair_draining_copies",
                "Copies the last repair pass left on an evacuating or retired node.",
                &[("node", &n.storage_id)],
                left as f64,
            );
        }
    }

    /// Looks at one record, repairs it when needed, and counts what happened.
    async fn count(
        &self,
        c: &mut PassCounts,
        shard: &MorayClient,
        bucket: &str,
        rec: ObjectRecord,
        quarantined: &HashSet<(String, String)>,
    ) {
        c.scanned += 1;
        self.fd.metrics.inc(
            "repair_objects_scanned_total",
            "Object records the repairer looked at.",
            &[],
        );
        match self.object(c, shard, bucket, rec, quarantined).await {
            Outcome::Fine | Outcome::Raced => {}
            Outcome::Waiting => c.waiting += 1,
            Outcome::Repaired { copies, bytes } => {
                c.repaired += 1;
                c.copies_made += copies;
                c.bytes_copied += bytes;
                let m = &self.fd.metrics;
                m.inc_by(
                    "repair_copies_total",
                    "Copies the repairer made.",
                    &[],
                    copies as f64,
                );
                m.inc_by(
                    "repair_bytes_total",
                    "Bytes the repairer copied.",
                    &[],
                    bytes as f64,
                );
                m.inc(
                    "repair_objects_repaired_total",
                    "Object records the repairer rewrote with new copies.",
                    &[],
                );
            }
            Outcome::Failed => {
                c.failed += 1;
                self.fd.metrics.inc(
                    "repair_failures_total",
                    "Objects the repairer could not repair when it tried.",
                    &[],
                );
            }
        }
    }

    async fn object(
        &self,
        c: &mut PassCounts,
        shard: &MorayClient,
        bucket: &str,
        rec: ObjectRecord,
        quarantined: &HashSet<(String, String)>,
    ) -> Outcome {
        let Ok(meta) = MetadataRecord::from_value(rec.value.clone()) else {
            return Outcome::Fine;
        };
        let Some(info) = meta.object() else {
            return Outcome::Fine;
        };
        if info.sharks.is_empty() {
            return Outcome::Fine;
        }
        let now = manta_types::time::now_ms();
        let object_id = info.object_id.to_string();
        let states: Vec<(SharkRef, Option<Node>, CopyState)> = info
            .sharks
            .iter()
            .map(|s| {
                let node = self.fd.picker.node(&s.manta_storage_id);
                let q = quarantined.contains(&(s.manta_storage_id.clone(), object_id.clone()));
                let st = copy_state(
                    node.as_ref(),
                    q,
                    now,
                    self.fd.cfg.heartbeat_max_age,
                    self.cfg.grace,
                );
                (s.clone(), node, st)
            })
            .collect();
        let healthy = states
            .iter()
            .filter(|(_, _, st)| *st == CopyState::Healthy)
            .count();
        let missing =
            |st: &CopyState| matches!(st, CopyState::Late | CopyState::Bad | CopyState::Lost);
        if states.iter().any(|(_, _, st)| missing(st)) {
            c.under_replicated += 1;
        }
        if !states.iter().any(|(_, _, st)| st.replace()) {
            return if healthy < states.len() {
                Outcome::Waiting
            } else {
                Outcome::Fine
            };
        }
        let outcome = match ObjectKey::parse(&meta.creator, &object_id) {
            Ok(key) => self.repair(shard, bucket, &rec, &key, info, &states).await,
            Err(e) => {
                warn!(record = %rec.key, error = %e.0, "repair: the record names no valid copy key");
                Outcome::Failed
            }
        };
        // What stays on an evacuating node: `storage retire` waits for a pass with none.
        if outcome == Outcome::Failed {
            for (s, _, st) in &states {
                if *st == CopyState::Draining {
                    *c.on_draining.entry(s.manta_storage_id.clone()).or_default() += 1;
                }
            }
        }
        outcome
    }

    /// Replaces every copy to replace, then rewrites the record.
    async fn repair(
        &self,
        shard: &MorayClient,
        bucket: &str,
        rec: &ObjectRecord,
        key: &ObjectKey,
        info: &ObjectInfo,
        states: &[(SharkRef, Option<Node>, CopyState)],
    ) -> Outcome {
        let mut sources: Vec<&Node> = Vec::new();
        for want in [CopyState::Healthy, CopyState::Draining, CopyState::Late] {
            sources.extend(
                states
                    .iter()
                    .filter(|(_, _, st)| *st == want)
                    .filter_map(|(_, n, _)| n.as_ref()),
            );
        }
        if sources.is_empty() {
            warn!(object = %key, record = %rec.key, "repair: no copy left to read from");
            return Outcome::Failed;
        }
        let named: HashSet<String> = states
            .iter()
            .map(|(s, _, _)| s.manta_storage_id.clone())
            .collect();
        let mut in_use: HashSet<String> = states
            .iter()
            .filter(|(_, _, st)| !st.replace())
            .map(|(s, _, _)| s.datacenter.clone())
            .collect();
        let mut chosen: Vec<Node> = Vec::new();
        let mut new_sharks = Vec::with_capacity(states.len());
        let mut bytes = 0;
        for (shark, _, st) in states {
            if !st.replace() {
                new_sharks.push(shark.clone());
                continue;
            }
            let mut exclude = named.clone();
            exclude.extend(chosen.iter().map(|n| n.storage_id.clone()));
            let target = match self.target(info, &exclude, &in_use, states) {
                Some(t) => t,
                None => {
                    warn!(object = %key, "repair: no node can take another copy");
                    self.abandon(rec, key, &chosen).await;
                    return Outcome::Failed;
                }
            };
            match self.copy_from_any(key, info, &sources, &target).await {
                Ok(n) => bytes += n,
                Err(e) => {
                    warn!(object = %key, target = %target.storage_id, error = %e, "repair: copy failed");
                    self.abandon(rec, key, &chosen).await;
                    return Outcome::Failed;
                }
            }
            in_use.insert(target.datacenter.clone());
            new_sharks.push(SharkRef {
                datacenter: target.datacenter.clone(),
                manta_storage_id: target.storage_id.clone(),
            });
            chosen.push(target);
        }
        let mut value = rec.value.clone();
        value["sharks"] = serde_json::to_value(&new_sharks).unwrap_or(Value::Null);
        match shard
            .put_object(bucket, &rec.key, value, PutOptions::if_match(&rec.etag))
            .await
        {
            Ok(_) => {
                info!(record = %rec.key, object = %key, copies = chosen.len(), "repair: copies restored");
                Outcome::Repaired {
                    copies: chosen.len() as u64,
                    bytes,
                }
            }
            Err(MorayError::EtagConflict { .. }) => {
                debug!(record = %rec.key, "repair: record changed meanwhile; it wins");
                self.abandon(rec, key, &chosen).await;
                Outcome::Raced
            }
            Err(e) => {
                warn!(record = %rec.key, error = %e, "repair: cannot rewrite the record");
                self.abandon(rec, key, &chosen).await;
                Outcome::Failed
            }
        }
    }

    /// A node for one more copy: not named by the record nor chosen already; failing that, a
    /// node whose named copy is quarantined (its corrupt copy is no longer in the way).
    fn target(
        &self,
        info: &ObjectInfo,
        exclude: &HashSet<String>,
        in_use: &HashSet<String>,
        states: &[(SharkRef, Option<Node>, CopyState)],
    ) -> Option<Node> {
        let size = info.content_length;
        if let Ok(mut set) = self.fd.picker.choose_beside(1, size, exclude, in_use) {
            return set.pop();
        }
        let mut relaxed = exclude.clone();
        for (s, _, st) in states {
            if *st == CopyState::Bad {
                relaxed.remove(&s.manta_storage_id);
            }
        }
        self.fd
            .picker
            .choose_beside(1, size, &relaxed, in_use)
            .ok()
            .and_then(|mut s| s.pop())
    }

    /// Copies from the first source that gives bytes matching the record. Returns the bytes
    /// copied (0 when the target already held a good copy).
    async fn copy_from_any(
        &self,
        key: &ObjectKey,
        info: &ObjectInfo,
        sources: &[&Node],
        target: &Node,
    ) -> Result<u64, String> {
        let md5 = storage_api::digest::parse_md5_base64(&info.content_md5)
            .ok_or_else(|| format!("record has no valid MD5 ({:?})", info.content_md5))?;
        let to = self.fd.sharks.node(&target.url);
        let crc = info
            .crc32c
            .as_deref()
            .and_then(storage_api::blocks::parse_crc32c_hex);
        if let Ok(have) = to.head(key).await
            && have.size == info.content_length
            && (have.md5 == Some(md5) || (crc.is_some() && have.crc32c == crc))
        {
            return Ok(0);
        }
        let mut errors = Vec::new();
        for from in sources {
            match self.copy(key, info, md5, from, target).await {
                Ok(()) => {
                    self.throttle(info.content_length).await;
                    return Ok(info.content_length);
                }
                Err(e) => errors.push(format!("from {}: {e}", from.storage_id)),
            }
        }
        Err(errors.join("; "))
    }

    async fn copy(
        &self,
        key: &ObjectKey,
        info: &ObjectInfo,
        md5: [u8; 16],
        from: &Node,
        to: &Node,
    ) -> Result<(), String> {
        use futures_util::StreamExt as _;
        let src = self
            .fd
            .sharks
            .node(&from.url)
            .get(key, None)
            .await
            .map_err(|e| e.to_string())?;
        if src.info.size != info.content_length {
            return Err(format!(
                "copy is {} bytes, the record says {}",
                src.info.size, info.content_length
            ));
        }
        let md5_b64 = storage_api::digest::md5_base64(&md5);
        let put = self
            .fd
            .sharks
            .node(&to.url)
            .start_put(key, Some(info.content_length), Some(&md5_b64))
            .await
            .map_err(|e| e.to_string())?;
        let mut body = src.into_stream();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => {
                    if let Err(e) = put.send(b).await {
                        return Err(format!("write: {e}"));
                    }
                }
                Err(e) => {
                    put.abort().await;
                    return Err(format!("read: {e}"));
                }
            }
        }
        let d = put.finish().await.map_err(|e| e.to_string())?;
        if d.md5 != Some(md5) {
            return Err("the copy written differs from the record".into());
        }
        Ok(())
    }

    /// Sleeps as long as copying `bytes` at the configured rate takes.
    async fn throttle(&self, bytes: u64) {
        let rate = self.cfg.rate_bytes_per_sec.max(1);
        let secs = bytes as f64 / rate as f64;
        if secs > 0.001 {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        }
    }

    /// Hands copies made for a record that then changed to garbage collection: a delete-log
    /// entry naming their nodes (each node keeps its copy if a record names it there).
    async fn abandon(&self, rec: &ObjectRecord, key: &ObjectKey, made: &[Node]) {
        if made.is_empty() {
            return;
        }
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        // The `r` keeps the key apart from the trigger's `/<objectId>/<µs>` entries.
        let log_key = format!("/{}/{micros}r", key.id);
        let sharks: Vec<String> = made.iter().map(|n| n.storage_id.clone()).collect();
        let value = moray::schema::delete_log_entry(
            &key.id.to_string(),
            Value::String(key.owner.to_string()),
            &rec.key,
            &sharks,
            i64::try_from(manta_types::time::now_ms()).unwrap_or(i64::MAX),
            Value::Null,
        );
        if let Err(e) = self
            .fd
            .moray
            .put_object(
                moray::schema::DELETE_LOG,
                &log_key,
                value,
                PutOptions::any(),
            )
            .await
        {
            warn!(object = %key, error = %e, "repair: cannot hand unused copies to GC; they stay");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(age_ms: u64, draining: bool) -> Node {
        Node {
            storage_id: "1.stor".into(),
            datacenter: "dc1".into(),
            available_mb: 100,
            percent_used: 1,
            timestamp: 1_000_000 - age_ms,
            url: "http://x".into(),
            retired: false,
            state: draining.then_some(manta_types::repair::NodeState::Evacuating),
        }
    }

    #[test]
    fn copies_are_judged_by_heartbeat_age_state_and_quarantine() {
        let max_age = Duration::from_secs(60);
        let grace = Duration::from_secs(600);
        let st = |n: Option<&Node>, q| copy_state(n, q, 1_000_000, max_age, grace);
        assert_eq!(st(Some(&node(1_000, false)), false), CopyState::Healthy);
        assert_eq!(st(Some(&node(1_000, false)), true), CopyState::Bad);
        assert_eq!(st(Some(&node(120_000, false)), false), CopyState::Late);
        assert_eq!(st(Some(&node(700_000, false)), false), CopyState::Lost);
        assert_eq!(st(Some(&node(700_000, true)), false), CopyState::Lost);
        assert_eq!(st(Some(&node(1_000, true)), false), CopyState::Draining);
        assert_eq!(st(None, false), CopyState::Lost);
        assert!(!CopyState::Late.replace() && !CopyState::Healthy.replace());
        assert!(CopyState::Draining.replace() && CopyState::Bad.replace());
    }
}
