//! The short fault run: a one-machine region (`manta-adm up`, every service supervised) under
//! four concurrent clients while, every few seconds, one service or one Postgres is killed with
//! SIGKILL (seeded: the same faults every run). When the faults stop and the region is healthy
//! again, every key is read and every directory listed, and the whole history goes through the
//! checker: no acknowledged write lost, no delete undone, no bytes that were never written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use manta_e2e::checker::check;
use manta_e2e::faults::Injector;
use manta_e2e::workload::{Recorder, Rng, Shape, client_loop, final_reads};
use testkit::region::binary;

/// The short run's seed and length.
const SEED: u64 = 0x5eed_0016;
const RUN: Duration = Duration::from_secs(60);
const EVERY: Duration = Duration::from_secs(4);

fn env_sh(dir: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(dir.join("env.sh"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Stops and deletes the region when the test ends, however it ends.
struct Region {
    dir: std::path::PathBuf,
    home: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = Command::new(binary("manta-adm").unwrap())
            .args(["destroy", "--yes", "--dir"])
            .arg(&self.dir)
            .env("HOME", &self.home)
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_kills_under_load_loses_nothing() {
    let tmp = tempfile::Builder::new()
        .prefix("manta-test-faults-")
        .tempdir()
        .unwrap();
    let r = Region {
        dir: tmp.path().join("region"),
        home: tmp.path().join("home"),
        _tmp: tmp,
    };
    std::fs::create_dir_all(&r.home).unwrap();
    let adm = binary("manta-adm").unwrap();
    let out = Command::new(&adm)
        .args(["up", "--dir"])
        .arg(&r.dir)
        .env("HOME", &r.home)
        .env("USER", "faults")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "up: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let env = env_sh(&r.dir);
    let client = || {
        let cfg = manta_client::ClientConfig {
            url: env["MANTA_URL"].clone(),
            user: env["MANTA_USER"].clone(),
            subuser: None,
            key_id: Some(env["MANTA_KEY_ID"].clone()),
            insecure: false,
            ssh_dir: r.home.join(".ssh"),
            no_auth: false,
            timeout: Duration::from_secs(15),
        };
        manta_client::MantaClient::new(cfg)
    };
    let shape = Shape::default();
    shape.prepare(&client().await.unwrap()).await.unwrap();

    let rec = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..4u32 {
        let c = client().await.unwrap();
        let (shape, rec, stop) = (shape.clone(), rec.clone(), stop.clone());
        let rng = Rng::new(SEED + u64::from(i) + 1);
        clients.push(tokio::spawn(client_loop(c, i, shape, rec, rng, stop)));
    }
    // The faults, off the runtime: `manta-adm status` and `kill` are blocking commands.
    let faults = tokio::task::spawn_blocking({
        let (dir, adm, rec) = (r.dir.clone(), adm.clone(), rec.clone());
        move || {
            let mut faults = Injector::new(&dir, &adm, SEED);
            let began = Instant::now();
            while began.elapsed() < RUN {
                std::thread::sleep(EVERY);
                if let Some(what) = faults.kill_one(rec.now()) {
                    eprintln!("{:>6.1}s  {what}", began.elapsed().as_secs_f64());
                }
            }
            faults
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut ops = 0;
    let mut errors = 0;
    for c in clients {
        let n = c.await.unwrap();
        ops += n.ops;
        errors += n.errors;
    }
    // Every service back (its supervisor restarts it), then the last word on what survived.
    let faults = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        while !faults.all_healthy() {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the region did not recover after the faults"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        faults
    })
    .await
    .unwrap();
    final_reads(&client().await.unwrap(), &shape, &rec).await;
    let history = rec.history();
    let violations = check(&history);
    eprintln!(
        "FIGURE: {ops} operations ({errors} failed or unknown), {} faults, {} events checked, {} violations",
        faults.log.len(),
        history.len(),
        violations.len()
    );
    assert!(ops > 200, "the workload barely ran: {ops} operations");
    assert!(faults.log.len() >= 10, "too few faults: {:?}", faults.log);
    if let Some(v) = violations.first() {
        panic!("{} violations; the first:\n{v}", violations.len());
    }
}
