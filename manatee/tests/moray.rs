//! Writes through a real Moray server that follows the shard's state: a kill -9 of the
//! primary's postmaster loses no acknowledged write, writes resume without an operator, and the
//! errors clients see meanwhile are the retryable kind.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::*;
use manatee::ClusterState;
use moray::MorayClient;
use moray::server::RunningServer;
use moray::types::{BucketConfig, PutOptions};
use serde_json::json;

/// Puts `k1`, `k2`, ... into bucket `b` through Moray, one at a time, recording which were
/// acknowledged (and when) and every error that is not the retryable kind, or a put that hung.
struct PutLoop {
    acked: Arc<Mutex<Vec<(i64, Instant)>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl PutLoop {
    fn start(c: &MorayClient) -> PutLoop {
        let acked: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
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
        PutLoop {
            acked,
            errors,
            stop,
            task,
        }
    }

    /// How many puts were acknowledged after `t`.
    fn acked_after(&self, t: Instant) -> usize {
        self.acked
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, at)| *at > t)
            .count()
    }

    /// Stops the loop; returns the numbers of the acknowledged puts and the errors seen.
    async fn stop(self) -> Result<(Vec<i64>, Vec<String>)> {
        self.stop.cancel();
        self.task.await?;
        let acked = self
            .acked
            .lock()
            .expect("lock")
            .iter()
            .map(|(i, _)| *i)
            .collect();
        let errors = self.errors.lock().expect("lock").clone();
        Ok((acked, errors))
    }
}

/// Step: a Moray server following the shard reaches its primary; returns the server and a
/// client that does not retry (so clients' errors are seen), with bucket `b` created.
async fn moray_reaches_the_primary(shard: &Shard) -> Result<(RunningServer, MorayClient)> {
    let mut cfg = moray::server::Config::for_manatee(vec![shard.etcd.endpoint()], "1");
    cfg.query_timeout = Duration::from_secs(5);
    cfg.pg_login = Some(client_login());
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
    Ok((server, c))
}

/// Step: kill -9 of the primary's postmaster; returns when.
async fn kill_the_primary(shard: &Shard, st: &ClusterState) -> Result<Instant> {
    shard.kill_postmaster(shard.index_of(&st.primary.id)).await
}

/// Step: another peer becomes primary, and puts through Moray are acknowledged again
/// (half a second after the kill, past any acknowledgement already in flight).
async fn writes_resume_on_a_new_primary(
    shard: &Shard,
    old: &ClusterState,
    puts: &PutLoop,
    killed: Instant,
) -> Result<ClusterState> {
    let st2 = wait_until("a new primary", Duration::from_secs(20), || async {
        let s = shard.state().await?;
        ensure!(s.primary.id != old.primary.id, "still {}", s.primary.id);
        Ok(s)
    })
    .await?;
    wait_until(
        "a write through moray after the failover",
        Duration::from_secs(30),
        || async {
            let n = puts.acked_after(killed + Duration::from_millis(500));
            ensure!(n > 0, "none yet");
            Ok(())
        },
    )
    .await?;
    Ok(st2)
}

/// Step: no acknowledged put is missing from the primary, and there were enough to count.
async fn no_acknowledged_put_is_lost(st: &ClusterState, acked: &[i64]) -> Result<()> {
    let conn = connect(&st.primary).await?;
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
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moray_writes_survive_a_primary_kill() -> Result<()> {
    let shard = Shard::start(3).await?;
    let st = shard
        .wait_healthy(Duration::from_secs(90))
        .await
        .context("step: the shard forms")?;
    let (server, c) = moray_reaches_the_primary(&shard)
        .await
        .context("step: moray reaches the primary")?;
    let puts = PutLoop::start(&c);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed = kill_the_primary(&shard, &st)
        .await
        .context("step: kill the primary")?;
    let st2 = writes_resume_on_a_new_primary(&shard, &st, &puts, killed)
        .await
        .context("step: writes resume on a new primary")?;
    let st3 = shard
        .wait_healthy(Duration::from_secs(90))
        .await
        .context("step: the shard heals")?;
    ensure!(
        st3.primary == st2.primary,
        "step: the shard heals: the primary changed again, to {}",
        st3.primary.id
    );
    let (acked, errs) = puts.stop().await?;
    ensure!(
        errs.is_empty(),
        "step: clients see only retryable errors: non-retryable errors or hangs during the failover: {errs:?}"
    );
    no_acknowledged_put_is_lost(&st3, &acked)
        .await
        .context("step: no acknowledged put is lost")?;
    server.stop().await?;
    Ok(())
}
