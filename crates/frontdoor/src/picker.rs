//! Placement: which storage nodes get the copies of a new object.
//!
//! The picker re-reads the nodes' capacity heartbeats (Moray bucket `manta_storage`) every few
//! seconds. For a write of N copies it proposes a set of N nodes whose heartbeat is fresh, that
//! are below the utilisation cap and have room for the object, spread over as many failure
//! domains (datacenters) as there are. When a node of the set does not answer, the front door
//! asks again without it (up to three sets in all), and the picker keeps it out of placement
//! for a short while, so one dead node costs one failed connect rather than failed writes until
//! its heartbeat ages out. Reads use the same table to find a node's address by its storage id
//! (a node whose heartbeat is stale is still read from).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use manta_types::repair::{NodeState, STORAGE_STATES_BUCKET, StorageState};
use manta_types::{ErrorCode, MantaError};
use moray::MorayClient;
use moray::types::FindOptions;
use rand::seq::SliceRandom as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// One storage node as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Stable id (what object records name).
    #[serde(rename = "manta_storage_id")]
    pub storage_id: String,
    /// Failure domain.
    pub datacenter: String,
    /// Free space, MiB.
    #[serde(rename = "availableMB")]
    pub available_mb: u64,
    /// Used space, percent.
    pub percent_used: u32,
    /// Heartbeat time, epoch ms.
    pub timestamp: u64,
    /// Base URL of its object API.
    pub url: String,
    /// Retired by its operator: still read from, never chosen for new copies.
    #[serde(default)]
    pub retired: bool,
    /// The operator's state of it (`manta-adm storage evacuate|retire`): when set, never
    /// chosen for new copies, and the repairer moves its copies away.
    #[serde(skip)]
    pub state: Option<NodeState>,
}

impl Node {
    /// Whether copies on it should move elsewhere (evacuating or retired, by either means).
    pub fn draining(&self) -> bool {
        self.retired || self.state.is_some()
    }

    /// How an object's record names a copy on it.
    pub fn shark_ref(&self) -> manta_types::SharkRef {
        manta_types::SharkRef {
            datacenter: self.datacenter.clone(),
            manta_storage_id: self.storage_id.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    nodes: Vec<Node>,
    by_id: HashMap<String, Node>,
    loaded: bool,
}

/// Chooses storage nodes for writes and resolves them for reads.
#[derive(Debug)]
pub struct Picker {
    moray: MorayClient,
    table: RwLock<Arc<Table>>,
    max_age: Duration,
    max_utilization_pct: u32,
    /// Nodes that recently refused a connection, and when.
    down: Mutex<HashMap<String, Instant>>,
    /// Bytes placed on each node that its heartbeat may not show yet (see [`Reservation`]).
    pending: Arc<Mutex<Vec<Pending>>>,
}

/// Bytes placed on a node by an upload of this front door.
#[derive(Debug)]
struct Pending {
    id: u64,
    node: String,
    bytes: u64,
    /// When the upload ended (epoch ms); until then it is in flight.
    ended: Option<u64>,
}

/// Bytes counted against nodes' free space while an upload writes them, and until a heartbeat
/// taken after the upload ended shows them, so concurrent uploads never overfill a node that
/// the last heartbeat said had room. Dropped when the upload ends, however it ends.
#[derive(Debug)]
pub struct Reservation {
    pending: Arc<Mutex<Vec<Pending>>>,
    ids: Vec<u64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let now = manta_types::time::now_ms();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for e in p.iter_mut().filter(|e| self.ids.contains(&e.id)) {
            e.ended = Some(now);
        }
    }
}

/// How long a node that refused a connection stays out of placement.
pub const DOWN_FOR: Duration = Duration::from_secs(15);

impl Picker {
    /// A picker reading heartbeats from the system shard.
    pub fn new(moray: MorayClient, max_age: Duration, max_utilization_pct: u32) -> Picker {
        Picker {
            moray,
            table: RwLock::new(Arc::new(Table::default())),
            max_age,
            max_utilization_pct,
            down: Mutex::new(HashMap::new()),
            pending: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads every heartbeat.
    ///
    /// # Errors
    /// When Moray fails; the previous table stays in use.
    pub async fn refresh(&self) -> moray::Result<()> {
        let recs = self.every_node_record("manta_storage").await?;
        let states = self.states().await?;
        let mut nodes = Vec::with_capacity(recs.len());
        for r in recs {
            match serde_json::from_value::<Node>(r.value) {
                Ok(mut n) => {
                    n.state = states.get(&n.storage_id).copied();
                    nodes.push(n);
                }
                Err(e) => warn!(key = %r.key, error = %e, "ignoring malformed heartbeat"),
            }
        }
        let by_id = nodes
            .iter()
            .map(|n| (n.storage_id.clone(), n.clone()))
            .collect();
        debug!(nodes = nodes.len(), "picker refreshed");
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Table {
            nodes,
            by_id,
            loaded: true,
        });
        Ok(())
    }

    /// Every record of `bucket`, one per storage node.
    async fn every_node_record(&self, bucket: &str) -> moray::Result<Vec<moray::ObjectRecord>> {
        let opts = FindOptions {
            limit: Some(100_000),
            no_count: true,
            ..FindOptions::default()
        };
        self.moray
            .find_objects(bucket, "(manta_storage_id=*)", opts)
            .await
    }

    /// The operator's node states, by storage id.
    async fn states(&self) -> moray::Result<HashMap<String, NodeState>> {
        let recs = self.every_node_record(STORAGE_STATES_BUCKET).await?;
        let mut states = HashMap::with_capacity(recs.len());
        for r in recs {
            match serde_json::from_value::<StorageState>(r.value) {
                Ok(s) => {
                    states.insert(s.manta_storage_id, s.state);
                }
                Err(e) => warn!(key = %r.key, error = %e, "ignoring malformed storage state"),
            }
        }
        Ok(states)
    }

    /// Loads the table if it never was (the first request after start-up).
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn ensure_loaded(&self) -> moray::Result<()> {
        if self.table().loaded {
            Ok(())
        } else {
            self.refresh().await
        }
    }

    /// Replaces the table with exactly `nodes` (tests place on nodes of their own).
    #[cfg(test)]
    pub(crate) fn set_nodes(&self, nodes: Vec<Node>) {
        let by_id = nodes
            .iter()
            .map(|n| (n.storage_id.clone(), n.clone()))
            .collect();
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Table {
            nodes,
            by_id,
            loaded: true,
        });
    }

    /// Refreshes every `every` until `shutdown`.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.refresh().await {
                    warn!(error = %e, "cannot read storage heartbeats; keeping the last table");
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        })
    }

    /// The node with this storage id, fresh or not.
    pub fn node(&self, storage_id: &str) -> Option<Node> {
        self.table().by_id.get(storage_id).cloned()
    }

    /// Every known node.
    pub fn nodes(&self) -> Vec<Node> {
        self.table().nodes.clone()
    }

    /// Keeps `storage_id` out of placement for [`DOWN_FOR`] (it refused a connection).
    pub fn mark_down(&self, storage_id: &str) {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(storage_id.to_owned(), Instant::now());
    }

    /// Whether a read should try `storage_id` only after the other copies: it failed a
    /// connection lately, its heartbeat is stale, or it is unknown.
    pub fn read_last(&self, storage_id: &str) -> bool {
        let max_age_ms = self.max_age.as_millis() as u64;
        let stale = self
            .node(storage_id)
            .is_none_or(|n| manta_types::time::now_ms().saturating_sub(n.timestamp) > max_age_ms);
        stale || self.recently_down().contains(storage_id)
    }

    /// Counts `bytes` against each of `nodes` until the returned reservation is dropped (and a
    /// heartbeat after that shows them).
    pub fn reserve(&self, nodes: &[Node], bytes: u64) -> Reservation {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let ids = nodes
            .iter()
            .map(|n| {
                let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                p.push(Pending {
                    id,
                    node: n.storage_id.clone(),
                    bytes,
                    ended: None,
                });
                id
            })
            .collect();
        Reservation {
            pending: self.pending.clone(),
            ids,
        }
    }

    /// Bytes reserved on each node that its last heartbeat does not show; forgets those a
    /// newer heartbeat covers.
    fn reserved(&self, table: &Table) -> HashMap<String, u64> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|e| {
            let seen = table
                .by_id
                .get(&e.node)
                .is_none_or(|n| e.ended.is_some_and(|end| n.timestamp > end));
            !seen
        });
        let mut out: HashMap<String, u64> = HashMap::new();
        for e in p.iter() {
            *out.entry(e.node.clone()).or_default() += e.bytes;
        }
        out
    }

    fn recently_down(&self) -> HashSet<String> {
        let mut d = self.down.lock().unwrap_or_else(|p| p.into_inner());
        d.retain(|_, t| t.elapsed() < DOWN_FOR);
        d.keys().cloned().collect()
    }

    /// A set of `copies` nodes with room for `size` bytes, none of them in `exclude` or
    /// recently down, spread over the failure domains.
    ///
    /// # Errors
    /// `NotEnoughSpace` (507) when no such set exists.
    pub fn choose(
        &self,
        copies: usize,
        size: u64,
        exclude: &HashSet<String>,
    ) -> Result<Vec<Node>, MantaError> {
        self.choose_beside(copies, size, exclude, &HashSet::new())
    }

    /// As [`Picker::choose`], for copies to add beside existing ones: failure domains not in
    /// `in_use` (those of the copies kept) are taken first.
    ///
    /// # Errors
    /// `NotEnoughSpace` (507) when no such set exists.
    pub fn choose_beside(
        &self,
        copies: usize,
        size: u64,
        exclude: &HashSet<String>,
        in_use: &HashSet<String>,
    ) -> Result<Vec<Node>, MantaError> {
        let now = manta_types::time::now_ms();
        let size_mb = size.div_ceil(1024 * 1024);
        let max_age_ms = self.max_age.as_millis() as u64;
        let down = self.recently_down();
        let table = self.table();
        let reserved = self.reserved(&table);
        let mut by_dc: BTreeMap<String, Vec<Node>> = BTreeMap::new();
        for n in &table.nodes {
            let fresh = now.saturating_sub(n.timestamp) <= max_age_ms;
            let taken_mb = reserved
                .get(&n.storage_id)
                .map_or(0, |b| b.div_ceil(1024 * 1024));
            let usable = fresh
                && !n.draining()
                && n.percent_used <= self.max_utilization_pct
                && n.available_mb.saturating_sub(taken_mb) >= size_mb
                && !exclude.contains(&n.storage_id)
                && !down.contains(&n.storage_id);
            if usable {
                by_dc
                    .entry(n.datacenter.clone())
                    .or_default()
                    .push(n.clone());
            }
        }
        let usable: usize = by_dc.values().map(Vec::len).sum();
        if copies == 0 || usable < copies {
            return Err(MantaError::new(
                ErrorCode::NotEnoughSpace,
                format!(
                    "not enough free space for {size_mb} MB on {copies} storage nodes ({usable} usable)"
                ),
            ));
        }
        let mut rng = rand::rng();
        let mut dcs: Vec<Vec<Node>> = by_dc.into_values().collect();
        for d in &mut dcs {
            d.shuffle(&mut rng);
        }
        dcs.shuffle(&mut rng);
        // Domains without a copy first (a stable sort keeps the shuffle within each group).
        dcs.sort_by_key(|d| d.first().is_some_and(|n| in_use.contains(&n.datacenter)));
        // Round-robin over the failure domains, one node from each in turn.
        let mut set = Vec::with_capacity(copies);
        while set.len() < copies {
            for d in dcs.iter_mut() {
                if set.len() == copies {
                    break;
                }
                if let Some(n) = d.pop() {
                    set.push(n);
                }
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, dc: &str, mb: u64, pct: u32) -> Node {
        Node {
            storage_id: id.into(),
            datacenter: dc.into(),
            available_mb: mb,
            percent_used: pct,
            timestamp: manta_types::time::now_ms(),
            url: format!("http://{id}"),
            retired: false,
            state: None,
        }
    }

    /// `count` nodes in each failure domain `dc` (named `<dc>1`, `<dc>2`, ...), all with `mb`
    /// MB available and `pct` percent used.
    fn domains(counts: &[(&str, usize)], mb: u64, pct: u32) -> Vec<Node> {
        counts
            .iter()
            .flat_map(|&(dc, count)| {
                (1..=count).map(move |i| node(&format!("{dc}{i}"), dc, mb, pct))
            })
            .collect()
    }

    fn picker_with(nodes: Vec<Node>) -> Picker {
        let p = Picker::new(
            MorayClient::new("http://127.0.0.1:9").unwrap(),
            Duration::from_secs(60),
            90,
        );
        p.set_nodes(nodes);
        p
    }

    #[test]
    fn reads_try_nodes_that_failed_or_went_quiet_last() {
        let mut nodes = domains(&[("a", 1), ("b", 1), ("c", 1)], 1000, 10);
        nodes[2].timestamp = 0;
        let p = picker_with(nodes);
        assert!(!p.read_last("a1"));
        p.mark_down("a1");
        assert!(p.read_last("a1"), "failed a connection");
        assert!(!p.read_last("b1"));
        assert!(p.read_last("c1"), "stale heartbeat");
        assert!(p.read_last("z9"), "unknown");
    }

    #[test]
    fn a_retired_node_is_never_chosen_but_still_resolves_for_reads() {
        let mut nodes = domains(&[("a", 1), ("b", 1), ("c", 1)], 1000, 10);
        nodes[0].retired = true;
        let p = picker_with(nodes);
        let none = HashSet::new();
        for _ in 0..50 {
            let s = p.choose(2, 10, &none).unwrap();
            assert!(s.iter().all(|n| n.storage_id != "a1"), "{s:?}");
        }
        assert!(
            p.choose(3, 10, &none).is_err(),
            "only two nodes take copies"
        );
        assert_eq!(p.node("a1").map(|n| n.url), Some("http://a1".into()));
    }

    #[test]
    fn an_evacuating_node_is_never_chosen_and_added_copies_go_to_new_domains() {
        let mut nodes = domains(&[("a", 2), ("b", 2), ("c", 2)], 1000, 10);
        nodes[4].state = Some(NodeState::Evacuating); // c1
        let p = picker_with(nodes);
        let none = HashSet::new();
        let in_use: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        for _ in 0..50 {
            let s = p.choose_beside(1, 10, &none, &in_use).unwrap();
            assert_eq!(s[0].storage_id, "c2", "{s:?}");
        }
        assert!(p.node("c1").unwrap().draining());
    }

    #[test]
    fn bytes_in_flight_count_against_a_node_until_a_later_heartbeat_shows_them() {
        let mib = 1024 * 1024;
        let p = picker_with(domains(&[("a", 1), ("b", 1)], 100, 10));
        let none = HashSet::new();
        let a = p.node("a1").unwrap();
        let r = p.reserve(std::slice::from_ref(&a), 60 * mib);
        // a1 has 100 MB, 60 are being written: a second 60 MB upload goes elsewhere.
        for _ in 0..20 {
            let s = p.choose(1, 60 * mib, &none).unwrap();
            assert_eq!(s[0].storage_id, "b1");
        }
        assert!(p.choose(2, 60 * mib, &none).is_err(), "both cannot take it");
        // Ended, but no heartbeat since: still counted.
        drop(r);
        assert!(p.choose(2, 60 * mib, &none).is_err());
        // A heartbeat taken after the upload ended shows the bytes itself.
        let mut nodes = domains(&[("a", 1), ("b", 1)], 100, 10);
        for n in &mut nodes {
            n.timestamp = manta_types::time::now_ms() + 1;
        }
        p.set_nodes(nodes);
        assert_eq!(p.choose(2, 60 * mib, &none).unwrap().len(), 2);
        assert!(p.pending.lock().unwrap().is_empty(), "forgotten once seen");
    }

    #[test]
    fn spreads_copies_over_failure_domains_and_avoids_failed_nodes() {
        let p = picker_with(domains(&[("a", 2), ("b", 2), ("c", 2)], 1000, 10));
        let none = HashSet::new();
        for _ in 0..50 {
            let s = p.choose(3, 10, &none).unwrap();
            let dcs: HashSet<_> = s.iter().map(|n| n.datacenter.clone()).collect();
            assert_eq!(dcs.len(), 3, "{s:?}");
        }
        let exclude: HashSet<String> = ["a1".to_string(), "b1".to_string()].into();
        p.mark_down("c1");
        for _ in 0..20 {
            let s = p.choose(3, 10, &exclude).unwrap();
            let ids: HashSet<_> = s.iter().map(|n| n.storage_id.as_str()).collect();
            assert_eq!(ids, ["a2", "b2", "c2"].into());
        }
    }

    #[test]
    fn full_stale_and_small_nodes_are_skipped() {
        let mut stale = node("s", "a", 10_000, 10);
        stale.timestamp -= 3_600_000;
        let p = picker_with(vec![
            stale,
            node("full", "b", 10_000, 95),
            node("small", "c", 5, 10),
            node("ok", "d", 10_000, 10),
        ]);
        let none = HashSet::new();
        let set = p.choose(1, 100 * 1024 * 1024, &none).unwrap();
        assert_eq!(set[0].storage_id, "ok");
        let e = p.choose(2, 100 * 1024 * 1024, &none).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotEnoughSpace);
        // Reads still find the stale node.
        assert!(p.node("s").is_some());
    }

    #[test]
    fn more_copies_than_domains_still_places() {
        let p = picker_with(domains(&[("a", 2), ("b", 1)], 100, 1));
        let set = p.choose(3, 1, &HashSet::new()).unwrap();
        assert_eq!(set.len(), 3);
    }
}
