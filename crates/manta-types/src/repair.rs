//! What the repairer and the operator share through the system shard: the operator's state of
//! each storage node (`manta_storage_states`) and the repairer's lease and progress
//! (`manta_repair`).
//!
//! - `manta_storage_states`, key = storage id: a [`StorageState`]. `manta-adm storage
//!   evacuate` writes `evacuating`; placement stops choosing the node at once (within a picker
//!   refresh) and the repairer moves every copy off it. `manta-adm storage retire` writes
//!   `retired` once a whole repair pass that began after the evacuation left no copy there.
//! - `manta_repair`, key [`LEASE_KEY`]: a [`RepairLease`], the one front door whose repairer
//!   acts; key [`PROGRESS_KEY`]: a [`RepairProgress`], what `manta-adm status` shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bucket of the operator's storage node states (system shard).
pub const STORAGE_STATES_BUCKET: &str = "manta_storage_states";
/// Bucket of the repairer's lease and progress (system shard).
pub const REPAIR_BUCKET: &str = "manta_repair";
/// Bucket of quarantined copies (system shard): key [`quarantine_key`], value the storage
/// node's note plus `manta_storage_id`, indexed by `manta_storage_id` and `objectId`. Storage
/// nodes write what scrub or a read found; the front door writes a copy whose bytes failed the
/// record's checksum while it served them. The repairer replaces every copy named here.
pub const QUARANTINE_BUCKET: &str = "manta_quarantine";

/// The key of a quarantined copy's record.
pub fn quarantine_key(storage_id: &str, owner: &str, object_id: &str) -> String {
    format!("/{storage_id}/{owner}/{object_id}")
}

/// Key of the repairer's lease in [`REPAIR_BUCKET`].
pub const LEASE_KEY: &str = "lease";
/// Key of the repairer's progress in [`REPAIR_BUCKET`].
pub const PROGRESS_KEY: &str = "progress";

/// What the operator has decided for a storage node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Being emptied: never chosen for new copies; the repairer moves its copies away.
    Evacuating,
    /// Emptied and out of service: never chosen, never read from by the repairer.
    Retired,
}

impl NodeState {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Evacuating => "evacuating",
            NodeState::Retired => "retired",
        }
    }
}

/// One record of [`STORAGE_STATES_BUCKET`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageState {
    /// The node.
    pub manta_storage_id: String,
    /// Its state.
    pub state: NodeState,
    /// When the state was set, epoch ms.
    pub since: u64,
}

/// The repairer that may act, until `expires` (epoch ms on its own clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairLease {
    /// Which front door (host, pid, listen address).
    pub holder: String,
    /// Epoch ms after which another may take over.
    pub expires: u64,
}

/// Counts of one repair pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassCounts {
    /// When the pass began, epoch ms.
    pub started: u64,
    /// When it ended (0 while running).
    #[serde(default)]
    pub finished: u64,
    /// Object records looked at.
    pub scanned: u64,
    /// Objects with fewer healthy copies than their durability when looked at.
    pub under_replicated: u64,
    /// Objects whose copies were all restored (records updated).
    pub repaired: u64,
    /// Copies written.
    pub copies_made: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Objects that could not be repaired this pass (no source, no target, a node error).
    pub failed: u64,
    /// Objects left for a later pass because a node's heartbeat is late but within the grace.
    pub waiting: u64,
    /// Copies left on each evacuating or retired node: found there and not moved off.
    #[serde(default)]
    pub on_draining: BTreeMap<String, u64>,
}

/// The repairer's state: where the current pass is, and the last complete pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairProgress {
    /// The front door doing it.
    pub holder: String,
    /// Pass number (1 for the first).
    pub pass: u64,
    /// Where each `<shard>/<bucket>` scan stands: the next `_id` to look at.
    #[serde(default)]
    pub cursors: BTreeMap<String, u64>,
    /// The pass in progress.
    pub current: PassCounts,
    /// The last pass that went over everything.
    #[serde(default)]
    pub last: Option<PassCounts>,
    /// Last update, epoch ms.
    pub updated: u64,
}
