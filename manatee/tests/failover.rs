//! Failover under a continuous stream of writes, with real sitters running real Postgres and a
//! real etcd: kill -9 of the primary's postmaster, of the primary's sitter, of the sync; freeze;
//! planned promotion; manatee-adm output.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::*;
use manatee::Role;
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_postmaster_kill_fails_over_and_the_old_primary_rejoins() -> Result<()> {
    let shard = Shard::start(3).await?;
    let st = shard.wait_healthy(SETTLE).await?;
    let g0 = st.generation;
    create_table(&st.primary).await?;
    let writer = Writer::start(shard.etcd.endpoint(), "1".into(), 1);
    writer.wait_ack_after(Instant::now(), Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // manatee-adm shows the shard for people and for scripts.
    let text = shard.adm(&["show"])?;
    assert!(text.contains(&format!("generation: {g0}")), "{text}");
    assert!(text.contains(&format!("primary    {}", st.primary.id)), "{text}");
    let json: Value = serde_json::from_str(&shard.adm(&["show", "--json"])?)?;
    assert_eq!(json["state"]["primary"]["pgUrl"], st.primary.pg_url.as_str());
    let pg: Value = serde_json::from_str(&shard.adm(&["pg-status", "--json"])?)?;
    let rows = pg.as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["role"], "primary");
    assert!(rows[0]["pid"].as_u64().is_some());
    assert_eq!(rows[1]["replication"]["syncState"], "sync", "{pg}");
    assert_eq!(rows[2]["replication"]["state"], "streaming", "{pg}");
    let text = shard.adm(&["pg-status"])?;
    assert!(text.contains("streaming/sync"), "{text}");

    // Kill the primary's postmaster.
    let old = shard.index_of(&st.primary.id);
    let sync_id = st.sync.clone().expect("sync").id;
    let pid = shard.status(old).await?["postmasterPid"].as_u64().expect("pid") as u32;
    let killed_at = Instant::now();
    kill_pid(pid)?;

    let acked_at = writer.wait_ack_after(killed_at, Duration::from_secs(30)).await?;
    let st2 = shard.state().await?;
    ensure!(st2.generation > g0 && st2.primary.id == sync_id, "the sync took over: {st2:?}");
    ensure!(st2.deposed.iter().any(|p| p.id == st.primary.id) || st2.role_of(&st.primary.id) != Role::Primary);
    eprintln!("first acknowledged write on the new primary {:?} after the kill", acked_at - killed_at);

    // The deposed peer is rewound and rejoins by itself; the shard is whole again.
    let st3 = shard.wait_healthy(SETTLE).await?;
    ensure!(matches!(st3.role_of(&st.primary.id), Role::Async(_) | Role::Sync), "{st3:?}");
    let rebuilds = shard.status(old).await?["rebuilds"].as_u64().unwrap_or(0);
    ensure!(rebuilds >= 1, "the old primary was rewound or rebuilt");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = writer.stop().await;
    ensure!(acked.len() > 20, "writes went through: {}", acked.len());
    assert_all_present(&st3.primary, &acked).await?;

    // History holds every generation.
    let hist: Value = serde_json::from_str(&shard.adm(&["history", "--json"])?)?;
    let gens: Vec<u64> = hist.as_array().unwrap().iter().map(|e| e["state"]["generation"].as_u64().unwrap()).collect();
    ensure!(gens.contains(&g0) && gens.contains(&st2.generation), "{gens:?}");
    assert!(shard.adm(&["history"])?.contains(&sync_id));
    Ok(())
}
