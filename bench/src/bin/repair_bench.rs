//! How fast the repairer moves copies, beside the raw copy of the same bytes from node to
//! node, measured in the same run.
//!
//! For each shape (many small objects, fewer large ones), in a fresh local region of three
//! storage nodes with two copies per object:
//! - baseline: every copy on node 1 is read with the storage API client and streamed into a
//!   PUT (with `Content-MD5`) on node 2 under a new id, one object at a time: the bytes a repair
//!   copy moves, with no metadata work;
//! - repair: `manta-adm storage evacuate` of node 1; the time until the repairer has made as
//!   many copies as node 1 held (`repair_copies_total`), with its rate unlimited and its passes
//!   back to back. Each copy is also a Moray scan step, a HEAD of the target and a conditional
//!   record rewrite.
//!
//! Figures are MiB/s and objects/s, medians of `--repeat` runs, and repair/baseline ratios.
//! Build first: `cargo build --release --bins && target/release/repair_bench`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures_util::StreamExt as _;
use manta_bench::{fill_noise, median};
use manta_client::PutOptions;
use storage_api::ObjectKey;
use testkit::{RegionOptions, TestRegion};

const KIB: usize = 1024;

#[derive(Debug, Parser)]
struct Args {
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Small objects: how many, and their size in KiB.
    #[arg(long, default_value_t = 300)]
    small_count: usize,
    #[arg(long, default_value_t = 64)]
    small_kib: usize,
    /// Large objects: how many, and their size in MiB.
    #[arg(long, default_value_t = 12)]
    large_count: usize,
    #[arg(long, default_value_t = 16)]
    large_mib: usize,
}

/// Every live object file on a node: `(owner, object id, path)`.
fn copies_on(data: &Path) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(owners) = std::fs::read_dir(data.join("objects")) else {
        return out;
    };
    for o in owners.flatten() {
        for f in std::fs::read_dir(o.path()).into_iter().flatten().flatten() {
            let (owner, id) = (
                o.file_name().to_string_lossy().into_owned(),
                f.file_name().to_string_lossy().into_owned(),
            );
            if uuid::Uuid::parse_str(&id).is_ok() {
                out.push((owner, id, f.path()));
            }
        }
    }
    out
}

fn copies_made(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("repair_copies_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// One run: `(baseline seconds, repair seconds, copies, bytes)`.
async fn run(count: usize, size: usize) -> Result<(f64, f64, usize, u64)> {
    let region = TestRegion::start_with(RegionOptions {
        frontdoor_args: [
            "--repair-interval",
            "100ms",
            "--repair-rate",
            "100000000000",
            "--default-copies",
            "2",
        ]
        .map(String::from)
        .to_vec(),
        ..RegionOptions::default()
    })
    .await?;
    let c = region.client(&region.account).await?;
    let dir = format!("/{}/stor/bench", region.account.login);
    c.mkdir(&dir).await?;
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut buf = vec![0u8; size];
    for i in 0..count {
        fill_noise(&mut buf, &mut x);
        c.put_bytes(&format!("{dir}/o{i}"), buf.clone(), PutOptions::default())
            .await?;
    }
    let held = copies_on(&region.storage[0].data);
    if held.is_empty() {
        bail!("node 1 holds no copy");
    }
    let bytes = held.len() as u64 * size as u64;

    // Baseline: the same bytes, node 1 to node 2, through the storage client.
    let id = region.identity("bench", manta_pki::Role::Frontdoor)?;
    let tls = manta_util::tls::internal_client_config(&id)?;
    let nodes = storage_api::client::ClientBuilder::new().tls(tls).build();
    let (from, to) = (
        nodes.node(region.storage[0].url.clone()),
        nodes.node(region.storage[1].url.clone()),
    );
    let start = Instant::now();
    for (owner, oid, _) in &held {
        let key = ObjectKey::parse(owner, oid).map_err(|e| anyhow::anyhow!("{}", e.0))?;
        let copy = ObjectKey::parse(owner, &uuid::Uuid::new_v4().to_string())
            .map_err(|e| anyhow::anyhow!("{}", e.0))?;
        let got = from.get(&key, None).await?;
        let md5 = got.info.md5.context("no MD5 from the node")?;
        let md5 = storage_api::digest::md5_base64(&md5);
        let put = to
            .start_put(&copy, Some(got.content_length), Some(&md5))
            .await?;
        let mut body = got.into_stream();
        while let Some(chunk) = body.next().await {
            put.send(chunk?).await?;
        }
        put.finish().await?;
    }
    let baseline = start.elapsed().as_secs_f64();

    // Repair: evacuate node 1 and wait for as many copies.
    let before = copies_made(&testkit::metrics(&region.url).await);
    let out = region
        .manta_adm()?
        .args(["storage", "evacuate", &region.storage[0].storage_id])
        .output()?;
    if !out.status.success() {
        bail!("evacuate: {}", String::from_utf8_lossy(&out.stderr));
    }
    let start = Instant::now();
    loop {
        let made = copies_made(&testkit::metrics(&region.url).await) - before;
        if made >= held.len() as f64 {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!(
                "the repairer made {made} of {} copies in 10 minutes",
                held.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let repair = start.elapsed().as_secs_f64();
    Ok((baseline, repair, held.len(), bytes))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let shapes = [
        ("small", args.small_count, args.small_kib * KIB),
        ("large", args.large_count, args.large_mib * KIB * KIB),
    ];
    println!(
        "{:<6} {:>8} {:>10} | {:>12} {:>10} | {:>12} {:>10} | {:>6}",
        "shape",
        "copies",
        "size",
        "base MiB/s",
        "base obj/s",
        "repair MiB/s",
        "repair obj/s",
        "ratio"
    );
    for (name, count, size) in shapes {
        let (mut base, mut rep) = (Vec::new(), Vec::new());
        let (mut copies, mut bytes) = (0, 0);
        for _ in 0..args.repeat {
            let (b, r, c, n) = run(count, size).await?;
            base.push(b);
            rep.push(r);
            (copies, bytes) = (c, n);
        }
        let b = median(&mut base).unwrap_or(f64::NAN);
        let r = median(&mut rep).unwrap_or(f64::NAN);
        let mib = bytes as f64 / (1024.0 * 1024.0);
        println!(
            "{name:<6} {copies:>8} {:>9}K | {:>12.1} {:>10.1} | {:>12.1} {:>10.1} | {:>5.2}x",
            size / KIB,
            mib / b,
            copies as f64 / b,
            mib / r,
            copies as f64 / r,
            b / r
        );
    }
    Ok(())
}
