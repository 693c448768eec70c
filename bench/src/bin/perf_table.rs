//! The performance table of the README, refreshed by one command:
//!
//! `cargo build --release --bins && cargo run --release -p manta-bench --bin perf_table [-- --quick]`
//!
//! `--only 1MiB` (or `4KiB`, `64MiB`) measures one size alone, e.g. to profile it.
//!
//! In one run on one machine it measures:
//! - the baselines: the raw disk (`dd bs=1M conv=fsync`, in the shapes of the PUT rows, on the
//!   filesystem the region's datasets live on) and raw hashing on one core (MD5, SHA-256,
//!   CRC32C);
//! - a region started from the release binaries, through its S3 API (`object_store`, path
//!   style, unsigned payloads; durability 2, every copy fsynced): PUT and GET of 4 KiB objects
//!   16 at a time, 1 MiB 8 at a time and 64 MiB 4 at a time (the rows of the table Garage was
//!   measured with); the rate, p50 and p99 latency, and the CPU the front door and the storage
//!   nodes spent per GiB moved;
//! - the same PUTs and GETs straight to one storage node (one copy), the bound the front door
//!   is held to.
//!
//! It prints a Markdown table (medians of rounds) with the ratios to one node and to Garage's
//! figures from the same kind of run on this machine (Garage v2.0.0, 3 nodes, replication 2,
//! no fsync of data; not re-measured here: it is not installed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use manta_bench::{
    Case, MIB, count_bytes, cpu_delta, cpu_snapshot, dd_write, fill_noise, median, node_key,
    shared_chunks,
};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use storage_api::{PutRequest, StorageClient};
use testkit::{RegionOptions, TestRegion};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The front door's S3 API.
    Door,
    /// One storage node, directly.
    Node,
}

struct Ctx {
    s3: AmazonS3,
    node: StorageClient,
    /// The front door's Manta API (its `/metrics`).
    door_url: String,
}

async fn put(ctx: Arc<Ctx>, t: Target, name: String, size: usize) -> Result<()> {
    match t {
        Target::Door => {
            let payload: PutPayload = shared_chunks(size).into_iter().collect();
            ctx.s3.put(&Path::from(name), payload).await?;
        }
        Target::Node => {
            let body = futures_util::stream::iter(
                shared_chunks(size).into_iter().map(Ok::<_, std::io::Error>),
            );
            ctx.node
                .put(
                    &node_key(&name),
                    PutRequest::stream(body, Some(size as u64)),
                )
                .await?;
        }
    }
    Ok(())
}

async fn get(ctx: Arc<Ctx>, t: Target, name: String) -> Result<u64> {
    match t {
        Target::Door => count_bytes(ctx.s3.get(&Path::from(name)).await?.into_stream()).await,
        Target::Node => {
            count_bytes(ctx.node.get(&node_key(&name), None).await?.into_stream()).await
        }
    }
}

/// MiB/s of `f` over `buf` on this thread (median of 3).
fn hash_rate(buf: &[u8], f: impl Fn(&[u8])) -> f64 {
    let mut v: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            f(buf);
            buf.len() as f64 / MIB as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    median(&mut v).unwrap_or(0.0)
}

/// Garage's figures for a row (ops/s for 4 KiB, MiB/s otherwise), from the run the issue
/// reports on this machine.
fn garage(label: &str, op: &str) -> f64 {
    match (label, op) {
        ("4KiB", "PUT") => 213.0,
        ("4KiB", "GET") => 354.0,
        ("1MiB", "PUT") => 107.0,
        ("1MiB", "GET") => 471.0,
        ("64MiB", "PUT") => 120.0,
        ("64MiB", "GET") => 358.0,
        _ => f64::NAN,
    }
}

/// The cumulative counts of `frontdoor_step_seconds` buckets in a `/metrics` text, by
/// (op, step), as (upper bound, count) pairs in bound order.
fn step_buckets(metrics: &str) -> BTreeMap<(String, String), Vec<(f64, f64)>> {
    let mut out: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("frontdoor_step_seconds_bucket{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        let (Some(op), Some(step), Some(le)) = (label("op"), label("step"), label("le")) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            out.entry((op, step)).or_default().push((le, v));
        }
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// The bucket bound (ms) under which a fraction `q` of the observations between two scrapes
/// fell: an upper estimate of that percentile.
fn quantile_ms(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let count =
        |v: &[(f64, f64)], le: f64| v.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
    let total = after.last()?.1 - before.last().map_or(0.0, |x| x.1);
    if total <= 0.0 {
        return None;
    }
    after
        .iter()
        .find(|(le, c)| c - count(before, *le) >= q * total)
        .map(|(le, _)| le * 1e3)
}

/// One measured cell: rate, latency, CPU.
struct Cell {
    ops_s: f64,
    mib_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU seconds per GiB moved: the front door's, the storage nodes'.
    cpu_door: f64,
    cpu_nodes: f64,
    /// The front door's steps of this operation: name, p50 and p99 (ms, bucket bounds).
    steps: Vec<(String, f64, f64)>,
}

async fn measure(
    ctx: &Arc<Ctx>,
    t: Target,
    case: Case<'_>,
    op: &str,
    rounds: usize,
) -> Result<Cell> {
    let steps_before = step_buckets(&testkit::metrics(&ctx.door_url).await);
    let before = cpu_snapshot();
    let r = case.rounds(op, rounds, ctx, t, put, get).await?;
    let (by, _) = cpu_delta(&before, &cpu_snapshot());
    let steps_after = step_buckets(&testkit::metrics(&ctx.door_url).await);
    let mut steps = Vec::new();
    for ((o, step), after) in &steps_after {
        if !o.eq_ignore_ascii_case(op) {
            continue;
        }
        let before = steps_before
            .get(&(o.clone(), step.clone()))
            .map_or(&[][..], Vec::as_slice);
        if let (Some(p50), Some(p99)) = (
            quantile_ms(before, after, 0.5),
            quantile_ms(before, after, 0.99),
        ) {
            steps.push((step.clone(), p50, p99));
        }
    }
    let gib = (case.size * case.count * rounds) as f64 / (1024.0 * MIB as f64);
    let cpu = |name: &str| {
        by.iter()
            .filter(|(c, _)| c == name)
            .map(|(_, s)| s)
            .sum::<f64>()
            / gib
    };
    let lat = r.latency().context("no samples")?;
    Ok(Cell {
        ops_s: r.ops_s(),
        mib_s: r.mib_s(),
        p50_ms: lat.p50.as_secs_f64() * 1e3,
        p99_ms: lat.p99.as_secs_f64() * 1e3,
        cpu_door: cpu("frontdoor"),
        cpu_nodes: cpu("storage-node"),
        steps,
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let (mut quick, mut only) = (false, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => {
                only = Some(
                    args.next()
                        .context("--only wants a size: 4KiB, 1MiB or 64MiB")?,
                );
            }
            _ => anyhow::bail!(
                "unknown argument {a:?}; usage: perf_table [--quick] [--only 4KiB|1MiB|64MiB]"
            ),
        }
    }
    let rounds = if quick { 1 } else { 3 };

    // Raw hashing on one core.
    let mut buf = vec![0u8; 64 * MIB];
    fill_noise(&mut buf, &mut 7);
    let md5 = hash_rate(&buf, |b| {
        use md5::Digest as _;
        std::hint::black_box(md5::Md5::digest(b));
    });
    let sha = hash_rate(&buf, |b| {
        use sha2::Digest as _;
        std::hint::black_box(sha2::Sha256::digest(b));
    });
    let crc = hash_rate(&buf, |b| {
        std::hint::black_box(storage_api::blocks::crc32c(b));
    });
    drop(buf);

    let port = testkit::process::free_port()?;
    let region = TestRegion::start_with(RegionOptions {
        frontdoor_args: vec![
            "--s3-listen".into(),
            format!("127.0.0.1:{port}"),
            // The production default: accounts are cached (tests turn the cache off).
            "--account-cache-ttl".into(),
            "2s".into(),
        ],
        ..RegionOptions::default()
    })
    .await
    .context("start a region (did you `cargo build --release --bins`?)")?;
    let s3 = manta_bench::s3_bench_bucket(&region, &format!("http://127.0.0.1:{port}")).await?;
    let node = storage_api::ClientBuilder::new()
        .tls(manta_util::tls::internal_client_config(
            &region.identity("bench", testkit::region::Role::Frontdoor)?,
        )?)
        .build()
        .node(region.storage[0].url.clone());
    let ctx = Arc::new(Ctx {
        s3,
        node,
        door_url: region.url.clone(),
    });

    // The raw disk, on the filesystem of the region's datasets, in the PUT rows' shapes.
    let scratch = region.dir().join("dd");
    let dd_small = dd_write(&scratch, 1, 8, if quick { 8 } else { 25 })?;
    let dd_large = dd_write(&scratch, 64, 4, 1)?;

    let rows: &[(usize, &str, usize, usize)] = if quick {
        &[
            (4096, "4KiB", 16, 500),
            (MIB, "1MiB", 8, 64),
            (64 * MIB, "64MiB", 4, 4),
        ]
    } else {
        &[
            (4096, "4KiB", 16, 2000),
            (MIB, "1MiB", 8, 200),
            (64 * MIB, "64MiB", 4, 16),
        ]
    };
    println!(
        "| size, conc | op | front door (S3), durability 2 | p50 / p99 ms | one node, 1 copy | door / node | Garage | door / Garage | CPU s/GiB door + nodes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut node_large_put = 0.0;
    let mut steps = Vec::new();
    if let Some(o) = &only
        && !rows.iter().any(|r| r.1 == o)
    {
        anyhow::bail!("--only {o}: no such row (4KiB, 1MiB, 64MiB)");
    }
    for &(size, label, conc, count) in rows {
        if only.as_deref().is_some_and(|o| o != label) {
            continue;
        }
        for op in ["PUT", "GET"] {
            let case = Case::new(label, size, conc, count);
            let d = measure(&ctx, Target::Door, case, op, rounds).await?;
            let n = measure(&ctx, Target::Node, case, op, rounds).await?;
            let small = size < MIB;
            let rate = |c: &Cell| {
                if small {
                    format!("{:.0} ops/s", c.ops_s)
                } else {
                    format!("{:.0} MiB/s", c.mib_s)
                }
            };
            let (door, one) = if small {
                (d.ops_s, n.ops_s)
            } else {
                (d.mib_s, n.mib_s)
            };
            if label == "64MiB" && op == "PUT" {
                node_large_put = n.mib_s;
            }
            steps.push((format!("{label}, {conc} {op}"), d.steps.clone()));
            let g = garage(label, op);
            println!(
                "| {label}, {conc} | {op} | {} | {:.1} / {:.1} | {} | {:.2}x | {g:.0} | {:.2}x | {:.2} + {:.2} |",
                rate(&d),
                d.p50_ms,
                d.p99_ms,
                rate(&n),
                door / one,
                door / g,
                d.cpu_door,
                d.cpu_nodes,
            );
        }
    }
    println!();
    println!("Steps through the front door, p50 / p99 ms (histogram bucket bounds):");
    for (row, st) in &steps {
        let cells: Vec<String> = st
            .iter()
            .map(|(name, p50, p99)| format!("{name} {p50} / {p99}"))
            .collect();
        println!("- {row}: {}", cells.join(", "));
    }
    println!();
    println!(
        "Raw disk, dd bs=1M conv=fsync: {dd_small:.0} MiB/s as 1 MiB files 8 at a time, {dd_large:.0} MiB/s as 64 MiB files 4 at a time; one storage node's 64 MiB PUT is {:.2}x of it.",
        node_large_put / dd_large
    );
    println!(
        "Raw hashing on one core: MD5 {md5:.0} MiB/s, SHA-256 {sha:.0} MiB/s, CRC32C {crc:.0} MiB/s."
    );
    Ok(())
}
