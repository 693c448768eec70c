//! A map of `wc` over 1,000 objects of 64 KiB through the whole jobs system, beside the
//! baseline `xargs -P2 wc` over the same bytes as local files, in the same run; where a task's
//! time goes (the agents' step histograms), how many containers the tasks ran in (started or
//! reused); and container start latency (`runc run` of `/bin/true` with the agent's own bundle)
//! beside a plain `sh -c true` spawn.
//!
//! Everything runs for real: a testkit region (Postgres, Moray, 3 storage nodes, front door),
//! etcd, the `jobs-api` gateway, a supervisor and an agent per node. Build first:
//! `cargo build --release --bins && target/release/jobs_wc` (root, `runc` installed).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use manta_bench::{cpu_delta, cpu_snapshot, median, stats};
use manta_client::{ClientConfig, MantaClient};
use testkit::process::{LoggedChild, free_port, guarded_command};
use testkit::region::{binary, wait_ping, wait_ping_with};
use testkit::{RegionOptions, TestEtcd, TestRegion};

/// How long a started jobs service may take to answer `/ping`.
const PING_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
struct Args {
    /// Objects to map over.
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// Object size, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    size: usize,
    /// Runs of the job (the median is reported).
    #[arg(long, default_value_t = 1)]
    job_runs: usize,
    /// Runs of the local baseline.
    #[arg(long, default_value_t = 3)]
    baseline_runs: usize,
    /// Container starts to time.
    #[arg(long, default_value_t = 100)]
    starts: usize,
    /// Task slots per agent.
    #[arg(long, default_value_t = 2)]
    slots: usize,
    /// The OCI runtime the agents use and whose starts are timed (runc's command line).
    #[arg(long, default_value = "runc")]
    runtime: String,
    /// Also load `pg_stat_statements` and print the statements that took Postgres longest
    /// over the last run (the extension's own bookkeeping costs a little).
    #[arg(long)]
    pg_statements: bool,
}

/// Moray's requests so far, by route (its `http_requests_total`, summed over statuses).
async fn moray_routes(region: &TestRegion) -> Result<std::collections::BTreeMap<String, f64>> {
    let text = region
        .internal_http()
        .get(format!("{}/metrics", region.moray_url))
        .send()
        .await?
        .text()
        .await?;
    let mut by = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("http_requests_total{") else {
            continue;
        };
        let route = rest
            .split("route=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_owned();
        let n: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *by.entry(route).or_default() += n;
    }
    Ok(by)
}

fn body(i: usize, size: usize) -> String {
    let words = [
        "manta", "job", "object", "store", "map", "reduce", "node", "copy",
    ];
    let mut s = String::with_capacity(size);
    let mut k = i;
    while s.len() < size {
        k = k.wrapping_mul(31).wrapping_add(7);
        s.push_str(words[k % words.len()]);
        s.push(if k.is_multiple_of(9) { '\n' } else { ' ' });
    }
    s.truncate(size);
    s
}

fn container_starts(runtime: &str, dir: &Path, n: usize) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let bundle = jobs::agent::container::probe_bundle(dir, 300_000)?;
    let state = dir.join("runc-state");
    let (mut rt, mut sh) = (Vec::new(), Vec::new());
    for i in 0..n {
        rt.push(manta_bench::run_container(
            runtime,
            &state,
            &bundle,
            &format!("bench-{i}"),
        )?);
        let t = Instant::now();
        Command::new("sh").args(["-c", "true"]).status()?;
        sh.push(t.elapsed());
    }
    Ok((rt, sh))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::Builder::new().prefix("jobs-wc").tempdir()?;
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, uuid::Uuid::new_v4().simple().to_string())?;

    eprintln!("starting a region with jobs ...");
    let region = TestRegion::start_with(RegionOptions {
        frontdoor_args: vec!["--token-secret-file".into(), secret.display().to_string()],
        pg_settings: if args.pg_statements {
            vec![(
                "shared_preload_libraries".into(),
                "pg_stat_statements".into(),
            )]
        } else {
            Vec::new()
        },
        ..RegionOptions::default()
    })
    .await?;
    let pg = if args.pg_statements {
        let (pg, conn) = tokio_postgres::connect(&region.pg.url(), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        pg.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await?;
        Some(pg)
    } else {
        None
    };
    let etcd = TestEtcd::start().await?;
    let mut children: Vec<LoggedChild> = Vec::new();
    let api_port = free_port()?;
    let api_url = format!("http://127.0.0.1:{api_port}");
    let api_id = region.identity("jobs-api", testkit::region::Role::JobsApi)?;
    let mut cmd = guarded_command(binary("jobs-api")?, None);
    cmd.args(["--listen", &format!("127.0.0.1:{api_port}")])
        .arg("--tls-dir")
        .arg(api_id.dir())
        .args([
            "--moray-url",
            &region.moray_url,
            "--frontdoor-url",
            &region.url,
        ])
        .arg("--token-secret-file")
        .arg(&secret);
    children.push(LoggedChild::spawn(
        "jobs-api",
        cmd,
        &tmp.path().join("api.log"),
    )?);
    wait_ping(
        &api_url,
        children.last_mut().context("jobs-api")?,
        "jobs-api",
        PING_WITHIN,
    )
    .await?;
    let sup_id = region.identity("supervisor", testkit::region::Role::Supervisor)?;
    let mut cmd = guarded_command(binary("jobs-supervisor")?, None);
    cmd.args(["--listen", &format!("127.0.0.1:{}", free_port()?)])
        .arg("--tls-dir")
        .arg(sup_id.dir())
        .args([
            "--moray-url",
            &region.moray_url,
            "--frontdoor-url",
            &region.url,
        ])
        .args(["--etcd", &etcd.endpoint()]);
    children.push(LoggedChild::spawn(
        "supervisor",
        cmd,
        &tmp.path().join("sup.log"),
    )?);
    let mut agent_urls = Vec::new();
    for (i, node) in region.storage.iter().enumerate() {
        let port = free_port()?;
        agent_urls.push(format!("https://127.0.0.1:{port}"));
        let id = region.identity(&format!("agent{i}"), testkit::region::Role::Agent)?;
        let mut cmd = guarded_command(binary("jobs-agent")?, None);
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-dir")
            .arg(id.dir())
            .args(["--storage-id", &node.storage_id])
            .arg("--dataset")
            .arg(&node.data)
            .args(["--storage-url", &node.url, "--frontdoor-url", &region.url])
            .args(["--moray-url", &region.moray_url])
            .arg("--work-dir")
            .arg(tmp.path().join(format!("agent{i}")))
            .args(["--slots", &args.slots.to_string()])
            .args(["--runtime", &args.runtime])
            .args(["--uid-base", &(100_000 + 65_536 * i).to_string()]);
        children.push(LoggedChild::spawn(
            &format!("agent{i}"),
            cmd,
            &tmp.path().join(format!("agent{i}.log")),
        )?);
        let agent = children.last_mut().context("agent")?;
        wait_ping_with(
            region.internal_http(),
            &format!("https://127.0.0.1:{port}"),
            agent,
            "jobs agent",
            PING_WITHIN,
        )
        .await?;
    }

    let acct = &region.account;
    let client = MantaClient::new(ClientConfig {
        timeout: Duration::from_secs(60),
        ..region.client_config_at(&region.account, &api_url)
    })
    .await?;

    eprintln!(
        "uploading {} objects of {} bytes ...",
        args.objects, args.size
    );
    let local = tmp.path().join("local");
    std::fs::create_dir_all(&local)?;
    client.mkdirp("~~/stor/wc").await?;
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut set = tokio::task::JoinSet::new();
    let mut inputs = Vec::new();
    for i in 0..args.objects {
        let b = body(i, args.size);
        std::fs::write(local.join(format!("o{i:04}")), &b)?;
        let path = format!("/{}/stor/wc/o{i:04}", acct.login);
        inputs.push(path.clone());
        let (c, sem) = (client.clone(), sem.clone());
        set.spawn(async move {
            let _p = sem.acquire().await;
            c.put_bytes(&path, b, Default::default()).await
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }

    // Baseline: the same bytes as local files, `wc` two at a time.
    let mut base = Vec::new();
    for _ in 0..args.baseline_runs {
        let t = Instant::now();
        let st = Command::new("sh")
            .arg("-c")
            .arg("ls | xargs -P2 -n1 wc > /dev/null")
            .current_dir(&local)
            .status()?;
        if !st.success() {
            bail!("baseline failed");
        }
        base.push(t.elapsed().as_secs_f64());
    }

    // The job: map `wc` over every object.
    let mut runs = Vec::new();
    let mut task_ms = Vec::new();
    let mut cpu = Vec::new();
    let mut moray_calls = Default::default();
    for _ in 0..args.job_runs {
        let calls_before = moray_routes(&region).await?;
        if let Some(pg) = &pg {
            pg.batch_execute("SELECT pg_stat_statements_reset()")
                .await?;
        }
        let before = cpu_snapshot();
        let t = Instant::now();
        let id = client
            .create_job(
                &serde_json::json!({"name": "wc", "phases": [{"type": "map", "exec": "wc"}]}),
            )
            .await?;
        for chunk in inputs.chunks(500) {
            client.add_job_inputs(&id, chunk, false).await?;
        }
        client.end_job_input(&id).await?;
        let mut failures = 0;
        let st = loop {
            match client.job_status(&id).await {
                Ok(st) if st["state"] == "done" => break st,
                Ok(_) => failures = 0,
                // The metadata tier may shed load for a moment; give up only if it persists.
                Err(e) if failures < 20 => {
                    failures += 1;
                    eprintln!("status: {e}");
                }
                Err(e) => return Err(e.into()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        runs.push(t.elapsed().as_secs_f64());
        cpu.push(cpu_delta(&before, &cpu_snapshot()));
        let mut calls = moray_routes(&region).await?;
        for (route, n) in &mut calls {
            *n -= calls_before.get(route).copied().unwrap_or(0.0);
        }
        calls.retain(|_, n| *n > 0.0);
        moray_calls = calls;
        if st["stats"]["errors"] != 0 || st["stats"]["outputs"] != args.objects {
            bail!("job did not complete cleanly: {st}");
        }
        let moray = region.moray()?;
        let recs = moray
            .system()
            .find_objects(
                "jobs_tasks_v1",
                &format!("(jobId={id})"),
                moray::types::FindOptions {
                    limit: Some(100_000),
                    ..Default::default()
                },
            )
            .await?;
        for r in recs {
            if let (Some(a), Some(b)) = (
                r.value["timeStarted"].as_u64(),
                r.value["timeDone"].as_u64(),
            ) {
                task_ms.push(Duration::from_millis(b.saturating_sub(a)));
            }
        }
    }

    // Where a task's time goes, from the agents' step histograms (sum and count).
    let mut steps: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    // Containers the tasks ran in: started for them, or reused.
    let mut containers: std::collections::BTreeMap<String, f64> = Default::default();
    for url in &agent_urls {
        let text = region
            .internal_http()
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        // A sample line is `name{label="value"} number`: its one label's value and its number.
        let sample = |rest: &str| {
            let label = rest.split('"').nth(1).unwrap_or_default().to_owned();
            let v: f64 = rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            (label, v)
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("jobs_agent_containers_total{") {
                let (how, v) = sample(rest);
                *containers.entry(how).or_default() += v;
                continue;
            }
            let Some(rest) = line.strip_prefix("jobs_agent_task_step_seconds_") else {
                continue;
            };
            let (kind, rest) = rest.split_once('{').unwrap_or_default();
            let (step, v) = sample(rest);
            let e = steps.entry(step).or_default();
            match kind {
                "sum" => e.0 += v,
                "count" => e.1 += v,
                _ => {}
            }
        }
    }

    eprintln!("timing {} container starts ...", args.starts);
    let (mut rt, mut sh) = tokio::task::spawn_blocking({
        let d = tmp.path().join("starts");
        let n = args.starts;
        let runtime = args.runtime.clone();
        move || container_starts(&runtime, &d, n)
    })
    .await??;

    let b = median(&mut base).unwrap_or(0.0);
    let j = median(&mut runs).unwrap_or(0.0);
    println!(
        "jobs_wc: {} objects x {} KiB, 3 storage nodes, {} slots each (2 cores)",
        args.objects,
        args.size / 1024,
        args.slots
    );
    println!(
        "  baseline  xargs -P2 wc (local files)     median {b:8.3} s  ({} runs)",
        base.len()
    );
    println!(
        "  job       map wc (containers, end to end) median {j:8.3} s  ({} runs)",
        runs.len()
    );
    println!(
        "  ratio     job / baseline                  {:8.1}x",
        j / b.max(1e-9)
    );
    if let Some(s) = stats(&mut task_ms) {
        println!(
            "  per task  claim to commit                 p50 {:6.1} ms  p99 {:6.1} ms  (n={})",
            s.p50.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3,
            s.n
        );
    }
    for (step, (sum, count)) in &steps {
        println!(
            "  step      {step:<9} (agents' mean)            {:6.1} ms  (n={count})",
            sum / count.max(1.0) * 1e3
        );
    }
    // The CPU of the first run, by command: where the machine's two cores went. (A later run
    // would also carry the earlier runs' containers, which end during it.)
    if let Some((by, busy)) = cpu.first() {
        println!(
            "  cpu       machine busy {busy:6.2} s over the job (of {:.2} s on 2 cores); by command:",
            runs.first().copied().unwrap_or(0.0) * 2.0
        );
        for (comm, secs) in by {
            println!(
                "            {comm:<16} {secs:6.2} s  ({:5.2} ms a task)",
                secs * 1e3 / args.objects as f64
            );
        }
    }
    if let Some(pg) = &pg {
        println!("  postgres  statements of the last run by total time (ms a task, calls a task):");
        let rows = pg
            .query(
                "SELECT total_exec_time, calls, regexp_replace(query, '\\s+', ' ', 'g') \
                 FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15",
                &[],
            )
            .await?;
        for r in rows {
            let (ms, calls, q): (f64, i64, String) = (r.get(0), r.get(1), r.get(2));
            let n = args.objects as f64;
            println!(
                "            {:6.3} ms {:6.2}  {}",
                ms / n,
                calls as f64 / n,
                q.chars().take(110).collect::<String>()
            );
        }
    }
    println!("  moray     requests over the last run, by route (per task):");
    for (route, n) in &moray_calls {
        println!(
            "            {route:<16} {n:8.0}  ({:5.2} a task)",
            n / args.objects as f64
        );
    }
    println!(
        "  containers started {:.0}, reused {:.0} (tasks that found one of their job and phase waiting)",
        containers.get("started").copied().unwrap_or(0.0),
        containers.get("reused").copied().unwrap_or(0.0)
    );
    if let (Some(r), Some(s)) = (stats(&mut rt), stats(&mut sh)) {
        println!(
            "  container {:<4} run /bin/true              p50 {:6.1} ms  p99 {:6.1} ms  (n={})",
            args.runtime,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.n
        );
        println!(
            "  baseline  sh -c true                      p50 {:6.1} ms  p99 {:6.1} ms  (ratio p50 {:.1}x)",
            s.p50.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3,
            r.p50.as_secs_f64() / s.p50.as_secs_f64().max(1e-9)
        );
    }
    drop(children);
    Ok(())
}
