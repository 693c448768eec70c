//! Writes through a real Moray server that follows the shard's state: a kill -9 of the
//! primary's postmaster loses no acknowledged write, writes resume without an operator, and the
//! errors clients see meanwhile are the retryable kind.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::*;
use moray::MorayClient;
use moray::types::{BucketConfig, PutOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moray_writes_survive_a_primary_kill() -> Result<()> {
    let shard = Shard::start(3).await?;
    let st = shard.wait_healthy(Duration::from_secs(90)).await?;
    let mut cfg = moray::server::Config::for_manatee(vec![shard.etcd.endpoint()], "1");
    cfg.query_timeout = Duration::from_secs(5);
    let server = moray::server::spawn(cfg).await?;
    let c = MorayClient::builder(server.url()).retries(0).build()?;
    wait_until(
        "moray to reach the primary",
        Duration::from_secs(20),
        || async {
            c.create_bucket("b", BucketConfig::new(1)).await?;
            Ok(())
        },
    )
    .await?;

    let acked: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn({
        let (c, acked, errors, stop) = (c.clone(), acked.clone(), errors.clone(), stop.clone());
        async move {
            let mut i = 0i64;
            while !stop.is_cancelled() {
                i += 1;
                let key = format!("k{i}");
                let put = c.put_object("b", &key, json!({"i": i}), PutOptions::any());
                match tokio::time::timeout(Duration::from_secs(10), put).await {
                    Ok(Ok(_)) => acked.lock().expect("lock").push((i, Instant::now())),
                    Ok(Err(e)) => {
                        if !e.is_retryable() {
                            errors.lock().expect("lock").push(format!("{e:?}"));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => errors
                        .lock()
                        .expect("lock")
                        .push("a put hung for 10 s".into()),
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;

    let pid = shard.status(shard.index_of(&st.primary.id)).await?["postmasterPid"]
        .as_u64()
        .expect("pid") as u32;
    let killed = Instant::now();
    kill_pid(pid)?;
    let st2 = wait_until("a new primary", Duration::from_secs(20), || async {
        let s = shard.state().await?;
        ensure!(s.primary.id != st.primary.id, "still {}", s.primary.id);
        Ok(s)
    })
    .await?;
    wait_until(
        "a write through moray after the failover",
        Duration::from_secs(30),
        || async {
            let n = acked
                .lock()
                .expect("lock")
                .iter()
                .filter(|(_, t)| *t > killed + Duration::from_millis(500))
                .count();
            ensure!(n > 0, "none yet");
            Ok(())
        },
    )
    .await?;
    let st3 = shard.wait_healthy(Duration::from_secs(90)).await?;
    ensure!(st3.primary == st2.primary);
    stop.cancel();
    writer.await?;
    let errs = errors.lock().expect("lock").clone();
    ensure!(
        errs.is_empty(),
        "non-retryable errors or hangs during the failover: {errs:?}"
    );

    let acked: Vec<i64> = acked
        .lock()
        .expect("lock")
        .iter()
        .map(|(i, _)| *i)
        .collect();
    let conn = connect(&st3.primary).await?;
    let present: BTreeSet<String> = conn
        .client
        .query("SELECT _key FROM b", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<i64> = acked
        .iter()
        .filter(|i| !present.contains(&format!("k{i}")))
        .copied()
        .collect();
    ensure!(
        missing.is_empty(),
        "{} acknowledged puts lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    ensure!(acked.len() > 20, "only {} puts", acked.len());
    server.stop().await?;
    Ok(())
}
