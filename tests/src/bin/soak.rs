//! The fault soak: a one-machine region under load while faults (kills, partitions, a full
//! disk, a held standby, moved clocks, flipped bytes) come one after another, each kind in turn
//! first and then at random, for as long as asked; then checked. Writes a report (operations, faults, availability
//! per minute, violations) and exits non-zero on any violation.
//!
//! ```sh
//! cargo build --bins && cargo run -p manta-e2e --bin soak -- --minutes 60 --report soak.md
//! ```
//!
//! Run as root on a machine where `./region up` works (the same set-up).

use std::path::PathBuf;
use std::time::Duration;

use manta_e2e::run::{AdmRegion, RunConfig, run};

fn usage() -> ! {
    eprintln!(
        "usage: soak [--minutes N] [--seed N] [--every SECONDS] [--clients N] [--report FILE] [--keep]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut minutes = 60u64;
    let mut seed = None;
    let mut every = 10u64;
    let mut clients = 4u32;
    let mut report = PathBuf::from("soak-report.md");
    let mut keep = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--minutes" => minutes = val().parse().unwrap_or_else(|_| usage()),
            "--seed" => seed = Some(val().parse().unwrap_or_else(|_| usage())),
            "--every" => every = val().parse().unwrap_or_else(|_| usage()),
            "--clients" => clients = val().parse().unwrap_or_else(|_| usage()),
            "--report" => report = PathBuf::from(val()),
            "--keep" => keep = true,
            _ => usage(),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(t.as_nanos() % u128::from(u64::MAX)).unwrap_or(1)
    });
    eprintln!("soak: seed {seed}, {minutes} min, a fault every {every} s");
    let adm = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("manta-adm")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| {
            eprintln!("soak: manta-adm is not built beside this binary (cargo build --bins)");
            std::process::exit(2)
        });
    let base = std::env::temp_dir().join(format!("manta-soak-{seed}"));
    let mut region = match AdmRegion::up(&adm, &base) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(1)
        }
    };
    region.keep = keep;
    let cfg = RunConfig {
        seed,
        duration: Duration::from_secs(minutes * 60),
        every: Duration::from_secs(every),
        in_turn: true,
        clients,
        s3_clients: 1,
        jobs: true,
    };
    let out = run(&region, &cfg).await;
    // The region goes before the exit below (which would skip its teardown), unless kept.
    drop(region);
    let out = match out {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(1)
        }
    };
    let text = out.markdown();
    if let Err(e) = std::fs::write(&report, &text) {
        eprintln!("soak: write {}: {e}", report.display());
    }
    println!("{text}");
    eprintln!("soak: report in {}", report.display());
    if !out.violations.is_empty() {
        std::process::exit(1);
    }
}
