//! Manatee failover: time from `kill -9` of the primary's postmaster to the first write
//! acknowledged by the new primary, under a continuous stream of writes, over several runs.
//!
//! Baselines measured in the same run:
//! - the same write path's normal latency (one autocommit INSERT, committed synchronously to
//!   the sync), median of 300;
//! - a bare `pg_ctl promote` of a streaming standby (no detection, no coordination), median.
//!
//! Each run starts a fresh etcd and three sitters (in this process, with fsync on) on
//! loopback. `cargo run --release -p manta-bench --bin manatee_failover -- --runs 5`

use manatee::adm::SitterClient;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use manatee::coord::Coord;
use manatee::pg::PgConn;
use manatee::sitter::{CancellationToken, SitterConfig, run};
use manta_bench::stats;
use serde_json::Value;
use testkit::process::{PG_USER, chown_to, free_port, is_root};
use testkit::{TestDir, TestEtcd, TestPostgres};

#[derive(Parser)]
struct Args {
    /// Failovers to measure.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

struct Shard {
    _etcd: TestEtcd,
    _dir: TestDir,
    coord: Coord,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Sitters run as processes (to kill one as a crash would), when the binary is there.
    procs: Vec<testkit::LoggedChild>,
    peers: Vec<manatee::Peer>,
}

/// The shard's passwords (a bench's throwaway shard).
const REPLICATION_PASSWORD: &str = "bench-replication-password";
const CLIENT_PASSWORD: &str = "bench-client-password-moray";

/// The login the bench writes with: the client role, as Moray would.
fn client_login() -> manta_util::secret::PgLogin {
    manta_util::secret::PgLogin {
        user: manatee::pg::CLIENT_ROLE.into(),
        password: CLIENT_PASSWORD.into(),
    }
}

async fn start_shard(template: &Path, sitter_bin: Option<&Path>) -> Result<Shard> {
    let etcd = TestEtcd::start().await?;
    let dir = TestDir::new("bench-manatee")?;
    let (repl_file, client_file) = (dir.path().join("replication"), dir.path().join("moray"));
    manta_util::write_private(&repl_file, REPLICATION_PASSWORD.as_bytes())?;
    manta_util::write_private(&client_file, CLIENT_PASSWORD.as_bytes())?;
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut procs = Vec::new();
    let mut peers = Vec::new();
    for i in 0..3 {
        let mut cfg = SitterConfig::new(
            vec![etcd.endpoint()],
            "1",
            dir.path().join(format!("peer{i}")),
            [127, 0, 0, 1].into(),
            free_port()?,
            free_port()?,
            testkit::postgres::pg_bindir()?,
            REPLICATION_PASSWORD.into(),
        );
        cfg.client_password = Some(CLIENT_PASSWORD.into());
        cfg.initdb_from = Some(template.to_owned());
        cfg.pg_settings = vec![("shared_buffers".into(), "32MB".into())];
        peers.push(cfg.peer());
        match sitter_bin {
            Some(bin) => {
                std::fs::create_dir_all(&cfg.data_dir)?;
                let mut cmd = testkit::process::guarded_command(bin, None);
                cmd.arg("--etcd")
                    .arg(etcd.endpoint())
                    .args(["--shard", "1", "--data-dir"])
                    .arg(&cfg.data_dir)
                    .args(["--pg-port", &cfg.pg_port.to_string()])
                    .args(["--sitter-port", &cfg.sitter_port.to_string()])
                    .arg("--insecure-plain-http")
                    .arg("--initdb-from")
                    .arg(template)
                    .args(["--pg-setting", "shared_buffers=32MB"])
                    .arg("--replication-password-file")
                    .arg(&repl_file)
                    .arg("--moray-password-file")
                    .arg(&client_file);
                let log = cfg.data_dir.join("sitter.log");
                procs.push(testkit::LoggedChild::spawn("sitter", cmd, &log)?);
            }
            None => {
                let s = stop.clone();
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = run(cfg, s).await {
                        eprintln!("sitter failed: {e}");
                    }
                }));
            }
        }
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let coord = Coord::new(&[etcd.endpoint()], "1", Duration::from_secs(2))?;
    Ok(Shard {
        _etcd: etcd,
        _dir: dir,
        coord,
        stop,
        tasks,
        procs,
        peers,
    })
}

async fn status(http: &SitterClient, p: &manatee::Peer) -> Result<Value> {
    Ok(http.status(&p.backup_url).await?)
}

async fn wait_whole(shard: &Shard, http: &SitterClient) -> Result<manatee::ClusterState> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(v)) = shard.coord.state().await {
            let st = v.state;
            let mut ok = st.peers().len() == shard.peers.len() && st.deposed.is_empty();
            for (p, _) in st.peers() {
                match status(http, p).await {
                    Ok(s)
                        if s["registered"] == true
                            && (s["writable"] == true || s["mode"] == "standby") => {}
                    _ => ok = false,
                }
            }
            if ok && status(http, &st.primary).await?["writable"] == true {
                return Ok(st);
            }
        }
        if Instant::now() > deadline {
            bail!("the shard did not become whole");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One failover: returns (kill -> first ack on the new primary, normal write latencies).
async fn one_run(
    template: &Path,
    http: &SitterClient,
    sitter_bin: Option<&Path>,
) -> Result<(Duration, Vec<Duration>)> {
    let mut shard = start_shard(template, sitter_bin).await?;
    let st = wait_whole(&shard, http).await?;
    let c = PgConn::to_peer(&st.primary, &client_login()).await?;
    c.client
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY)")
        .await?;
    let mut lat = Vec::new();
    for id in 0..300i64 {
        let t = Instant::now();
        c.client
            .execute("INSERT INTO t (id) VALUES ($1)", &[&id])
            .await?;
        lat.push(t.elapsed());
    }
    drop(c);
    // A writer that follows the state, and the kill.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let coord = Coord::new(&[shard._etcd.endpoint()], "1", Duration::from_secs(1))?;
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    let writer = tokio::spawn(async move {
        let mut next = 1_000_000i64;
        let mut conn: Option<(String, PgConn)> = None;
        while !s2.is_cancelled() {
            if conn.is_none() {
                match coord.state().await {
                    Ok(Some(v)) => match tokio::time::timeout(
                        Duration::from_secs(1),
                        PgConn::to_peer(&v.state.primary, &client_login()),
                    )
                    .await
                    {
                        Ok(Ok(c)) => conn = Some((v.state.primary.id.clone(), c)),
                        _ => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                    _ => continue,
                }
            }
            let (on, c) = conn.as_ref().expect("connected");
            next += 1;
            match tokio::time::timeout(
                Duration::from_secs(3),
                c.client.execute("INSERT INTO t (id) VALUES ($1)", &[&next]),
            )
            .await
            {
                Ok(Ok(_)) => {
                    let _ = tx.send((on.clone(), Instant::now()));
                }
                _ => {
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = status(http, &st.primary).await?["postmasterPid"]
        .as_u64()
        .context("pid")? as u32;
    let killed = Instant::now();
    if shard.procs.is_empty() {
        let st_kill = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        if !st_kill.success() {
            bail!("kill -9 {pid} failed");
        }
    } else {
        let i = shard
            .peers
            .iter()
            .position(|p| p.id == st.primary.id)
            .context("primary")?;
        shard.procs[i].kill();
    }
    let deadline = killed + Duration::from_secs(60);
    let took = loop {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some((on, t))) if t > killed && on != st.primary.id => break t - killed,
            Ok(Some(_)) => {}
            _ => bail!("no write acknowledged by a new primary within 60 s"),
        }
    };
    stop.cancel();
    let _ = writer.await;
    shard.stop.cancel();
    for t in shard.tasks {
        let _ = t.await;
    }
    Ok((took, lat))
}

/// A bare promotion: primary + streaming standby, `pg_ctl promote -w` timed.
async fn bare_promote() -> Result<Duration> {
    let primary = TestPostgres::start().await?;
    let bindir = testkit::postgres::pg_bindir()?;
    let dir = TestDir::new("bench-promote")?;
    if is_root() {
        chown_to(dir.path(), PG_USER)?;
    }
    let data = dir.path().join("standby");
    let port = free_port()?;
    run_tool(
        &bindir.join("pg_basebackup"),
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port().to_string(),
            "-U",
            "postgres",
            "-D",
            &data.to_string_lossy(),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ],
    )?;
    let mut cmd = testkit::process::guarded_command(bindir.join("postgres"), Some(PG_USER));
    cmd.arg("-D").arg(&data).arg("-k").arg(dir.path()).args([
        "-p",
        &port.to_string(),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "max_connections=200",
    ]);
    let _standby = testkit::LoggedChild::spawn("standby", cmd, &dir.path().join("standby.log"))?;
    let peer = manatee::Peer::new([127, 0, 0, 1].into(), port, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(c) = PgConn::to_peer(&peer, &client_login()).await
            && let Ok(r) = c
                .client
                .query_one("SELECT status FROM pg_stat_wal_receiver", &[])
                .await
            && r.get::<_, String>(0) == "streaming"
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("standby did not stream");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    run_tool(
        &bindir.join("pg_ctl"),
        &["-D", &data.to_string_lossy(), "-w", "promote"],
    )?;
    Ok(t.elapsed())
}

fn run_tool(bin: &PathBuf, args: &[&str]) -> Result<()> {
    let out = testkit::process::guarded_command(bin, Some(PG_USER))
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let http = SitterClient::new(None, Duration::from_secs(2))?;
    let tdir = TestDir::new("bench-template")?;
    if is_root() {
        chown_to(tdir.path(), PG_USER)?;
    }
    let template = tdir.path().join("data");
    testkit::postgres::initdb(&testkit::postgres::pg_bindir()?, &template)?;

    // The sitter binary, when built next to this benchmark (cargo build --release -p manatee).
    let sitter_bin = std::env::current_exe()?
        .parent()
        .map(|d| d.join("manatee-sitter"))
        .filter(|b| b.exists());

    let mut failovers = Vec::new();
    let mut crashes = Vec::new();
    let mut writes = Vec::new();
    let mut promotes = Vec::new();
    for i in 0..args.runs {
        let (took, mut lat) = one_run(&template, &http, None).await?;
        println!(
            "run {}: kill -9 postmaster -> first acknowledged write on the new primary {:.0} ms",
            i + 1,
            took.as_secs_f64() * 1e3
        );
        failovers.push(took);
        writes.append(&mut lat);
        if let Some(bin) = &sitter_bin {
            let (took, _) = one_run(&template, &http, Some(bin)).await?;
            println!(
                "run {}: kill -9 sitter (lease expiry) -> first acknowledged write on the new primary {:.0} ms",
                i + 1,
                took.as_secs_f64() * 1e3
            );
            crashes.push(took);
        }
        promotes.push(bare_promote().await?);
    }
    let f = stats(&mut failovers).context("no runs")?;
    let w = stats(&mut writes).context("no writes")?;
    let p = stats(&mut promotes).context("no promotes")?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!();
    println!(
        "failover, kill -9 of the primary's postmaster -> first ack on the new primary: median {:.0} ms (max {:.0} ms, {} runs)",
        ms(f.p50),
        failovers.last().map_or(0.0, |d| ms(*d)),
        f.n
    );
    match stats(&mut crashes) {
        Some(c) => println!(
            "failover, kill -9 of the primary's sitter (lease TTL 2 s) -> first ack on the new primary: median {:.0} ms (max {:.0} ms, {} runs)",
            ms(c.p50),
            crashes.last().map_or(0.0, |d| ms(*d)),
            c.n
        ),
        None => println!(
            "(sitter-kill runs skipped: build target/release/manatee-sitter with `cargo build --release -p manatee`)"
        ),
    }
    println!(
        "baseline: normal write (synchronous commit) median {:.2} ms (p99 {:.2} ms, {} writes)",
        ms(w.p50),
        ms(w.p99),
        w.n
    );
    println!("baseline: bare pg_ctl promote median {:.0} ms", ms(p.p50));
    println!(
        "ratio: postmaster-kill failover / bare promote = {:.1}x; / normal write = {:.0}x",
        f.p50.as_secs_f64() / p.p50.as_secs_f64(),
        f.p50.as_secs_f64() / w.p50.as_secs_f64()
    );
    Ok(())
}
