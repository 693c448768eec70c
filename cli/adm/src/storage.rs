//! `manta-adm storage`: the operator's decisions about storage nodes, kept in Moray
//! (`manta_storage_states`, see [`manta_types::repair`]) where placement and the repairer read
//! them.
//!
//! - `evacuate NODE`: placement stops choosing the node (within a picker refresh) and the
//!   repairer copies everything it holds elsewhere, then the node's garbage collection removes
//!   the copies no record names there any more.
//! - `retire NODE`: once a whole repair pass that began after the evacuation left no copy on
//!   it, the node is marked retired: it may be switched off.
//! - `restore NODE`: undoes either; the node takes new copies again.

use anyhow::{Context as _, Result, bail};
use manta_types::repair::{
    NodeState, PROGRESS_KEY, REPAIR_BUCKET, RepairProgress, STORAGE_STATES_BUCKET, StorageState,
};
use moray::MorayClient;
use moray::types::PutOptions;

/// The node's heartbeat must exist: a typo must not evacuate nothing.
async fn known(system: &MorayClient, node: &str) -> Result<()> {
    match system.get_object("manta_storage", node).await {
        Ok(_) => Ok(()),
        Err(moray::Error::ObjectNotFound { .. }) => {
            bail!("no storage node {node} (no heartbeat in manta_storage)")
        }
        Err(e) => Err(e).context("read the storage nodes"),
    }
}

async fn state_of(system: &MorayClient, node: &str) -> Result<Option<(StorageState, String)>> {
    match system.get_object(STORAGE_STATES_BUCKET, node).await {
        Ok(rec) => {
            let s = serde_json::from_value(rec.value).context("a malformed storage state")?;
            Ok(Some((s, rec.etag)))
        }
        Err(moray::Error::ObjectNotFound { .. }) => Ok(None),
        Err(e) => Err(e).context("read the node's state"),
    }
}

/// Starts evacuating `node`.
///
/// # Errors
/// Unknown node, a retired one, or Moray's error.
pub async fn evacuate(system: &MorayClient, node: &str) -> Result<String> {
    known(system, node).await?;
    let opts = match state_of(system, node).await? {
        Some((s, _)) if s.state == NodeState::Evacuating => {
            return Ok(format!("{node} is already being evacuated"));
        }
        Some((s, _)) => bail!("{node} is {}; `restore` it first", s.state.as_str()),
        None => PutOptions::must_not_exist(),
    };
    let st = StorageState {
        manta_storage_id: node.to_owned(),
        state: NodeState::Evacuating,
        since: manta_types::time::now_ms(),
    };
    system
        .put_object(
            STORAGE_STATES_BUCKET,
            node,
            serde_json::to_value(&st)?,
            opts,
        )
        .await
        .context("record the evacuation")?;
    Ok(format!(
        "evacuating {node}: no new copies go there; the repairer moves its copies away \
         (`manta-adm status` shows how many are left), then `manta-adm storage retire {node}`"
    ))
}

/// The repairer's progress record, `None` before it first ran.
///
/// # Errors
/// Moray's error.
pub async fn progress(system: &MorayClient) -> Result<Option<RepairProgress>> {
    match system.get_object(REPAIR_BUCKET, PROGRESS_KEY).await {
        Ok(rec) => Ok(serde_json::from_value(rec.value).ok()),
        Err(moray::Error::ObjectNotFound { .. }) => Ok(None),
        Err(e) => Err(e).context("read the repairer's progress"),
    }
}

/// Retires an emptied node: the last complete repair pass began after the evacuation and left
/// no copy on it.
///
/// # Errors
/// When it is not evacuating, copies are left, or no complete pass has run since.
pub async fn retire(system: &MorayClient, node: &str) -> Result<String> {
    let Some((st, etag)) = state_of(system, node).await? else {
        bail!("{node} is not being evacuated; `manta-adm storage evacuate {node}` first");
    };
    if st.state == NodeState::Retired {
        return Ok(format!("{node} is already retired"));
    }
    let last = progress(system).await?.and_then(|p| p.last);
    match last {
        Some(l) if l.started > st.since => {
            let left = l.on_draining.get(node).copied().unwrap_or(0);
            if left > 0 {
                bail!(
                    "the last repair pass left {left} copies on {node} (the front door's log says why); wait for the next"
                );
            }
        }
        _ => bail!(
            "no repair pass has gone over every object since the evacuation of {node} began; \
             wait for one (`manta-adm status`)"
        ),
    }
    let done = StorageState {
        state: NodeState::Retired,
        since: manta_types::time::now_ms(),
        ..st
    };
    system
        .put_object(
            STORAGE_STATES_BUCKET,
            node,
            serde_json::to_value(&done)?,
            PutOptions::if_match(etag),
        )
        .await
        .context("record the retirement")?;
    Ok(format!(
        "{node} is retired: it holds no copy a record names; it may be switched off"
    ))
}

/// Returns a node to service.
///
/// # Errors
/// Moray's error.
pub async fn restore(system: &MorayClient, node: &str) -> Result<String> {
    match system
        .del_object(
            STORAGE_STATES_BUCKET,
            node,
            moray::types::DelOptions::default(),
        )
        .await
    {
        Ok(()) => Ok(format!("{node} takes new copies again")),
        Err(moray::Error::ObjectNotFound { .. }) => Ok(format!("{node} was in service")),
        Err(e) => Err(e).context("clear the node's state"),
    }
}
