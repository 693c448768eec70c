//! Front door throughput and latency, with the storage node's own figures as the baseline.
//!
//! Starts a real region (release binaries: run `cargo build --release --bins` first), then for
//! 4 KiB, 1 MiB and 256 MiB objects at concurrency 1 and 16 measures PUT (durability 2) and GET
//! through the front door, and the same PUT/GET straight to one storage node in the same run.
//! Prints MiB/s (median of rounds), p50/p99 latency and the ratio front door / storage node.
//! Finally it measures the front door's peak RSS while it serves 64 concurrent 256 MiB uploads.
//!
//! With `--internal-tls` it measures instead what the region's mutual TLS costs: two regions in
//! the same run, one whose Moray and storage nodes serve mutual TLS (as `manta-adm up` runs
//! them) and one over plain HTTP, each taking 4 KiB and 1 MiB PUTs and GETs through the front
//! door in alternating rounds; it prints the median of each and the ratio.
//!
//! `cargo run --release -p manta-bench --bin frontdoor_bench [-- --quick | --rss | --internal-tls]`

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use manta_auth::KeySigner;
use manta_bench::{Case, MIB, count_bytes, node_key, shared_chunks};
use manta_client::{ClientConfig, MantaClient, PutOptions};
use storage_api::{PutRequest, StorageClient};
use testkit::TestRegion;

/// `size` bytes as a stream of one shared 1 MiB chunk (no big allocation).
fn body_stream(size: usize) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    futures_util::stream::iter(shared_chunks(size).into_iter().map(Ok))
}

#[derive(Clone, Copy, Debug)]
enum Target {
    FrontDoor,
    StorageNode,
}

struct Ctx {
    client: MantaClient,
    node: StorageClient,
}

async fn put(ctx: Arc<Ctx>, t: Target, name: String, size: usize) -> Result<()> {
    match t {
        Target::FrontDoor => {
            let opts = PutOptions {
                copies: Some(2),
                content_length: Some(size as u64),
                ..PutOptions::default()
            };
            ctx.client
                .put_stream(
                    &format!("~~/stor/bench/{name}"),
                    reqwest::Body::wrap_stream(body_stream(size)),
                    opts,
                )
                .await?;
        }
        Target::StorageNode => {
            let body = PutRequest::stream(body_stream(size), Some(size as u64));
            ctx.node.put(&node_key(&name), body).await?;
        }
    }
    Ok(())
}

async fn get(ctx: Arc<Ctx>, t: Target, name: String) -> Result<u64> {
    match t {
        Target::FrontDoor => {
            let path = format!("~~/stor/bench/{name}");
            count_bytes(
                ctx.client
                    .get(&path, Default::default())
                    .await?
                    .bytes_stream(),
            )
            .await
        }
        Target::StorageNode => {
            count_bytes(ctx.node.get(&node_key(&name), None).await?.into_stream()).await
        }
    }
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Starts a region (its internal services over plain HTTP when `internal_plain`) and the
/// clients of its front door and of its first storage node.
async fn start(internal_plain: bool) -> Result<(TestRegion, Arc<Ctx>)> {
    // The production default: accounts are cached for 2 s (tests turn the cache off).
    let opts = testkit::RegionOptions {
        frontdoor_args: vec!["--account-cache-ttl".into(), "2s".into()],
        internal_plain,
        ..testkit::RegionOptions::default()
    };
    let region = TestRegion::start_with(opts)
        .await
        .context("start a region (did you `cargo build --release --bins`?)")?;
    let acct = &region.account;
    let cfg = ClientConfig {
        timeout: Duration::from_secs(600),
        ..region.client_config(&region.account)
    };
    let client = MantaClient::with_signer(cfg, Some(Arc::new(KeySigner::from_file(&acct.key)?)))?;
    client.mkdir("~~/stor/bench").await?;
    // The baseline client holds a front door's region identity, as the front door does.
    let mut node = storage_api::ClientBuilder::new();
    if !internal_plain {
        node = node.tls(manta_util::tls::internal_client_config(
            &region.identity("bench", testkit::region::Role::Frontdoor)?,
        )?);
    }
    let node = node.build().node(region.storage[0].url.clone());
    Ok((region, Arc::new(Ctx { client, node })))
}

/// The front door's rates with the region's internal mutual TLS beside the same region over
/// plain HTTP, in alternating rounds.
async fn compare_internal_tls(quick: bool) -> Result<()> {
    let (_tls_region, tls) = start(false).await?;
    let (_plain_region, plain) = start(true).await?;
    let rounds = if quick { 3 } else { 5 };
    println!(
        "front door, durability 2: internal mutual TLS vs plain HTTP (median of {rounds} alternating rounds)"
    );
    println!(
        "{:>6} {:>4} {:>4} | {:>9} {:>9} | {:>9} {:>9} | {:>6}",
        "size", "conc", "op", "TLS op/s", "MiB/s", "plain op/s", "MiB/s", "ratio"
    );
    let sizes: &[(usize, &str, usize)] = if quick {
        &[(4096, "4KiB", 100), (MIB, "1MiB", 32)]
    } else {
        &[(4096, "4KiB", 400), (MIB, "1MiB", 96)]
    };
    for &(size, label, count) in sizes {
        for conc in [1usize, 16] {
            for op in ["PUT", "GET"] {
                let case = Case::new(label, size, conc, count);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for _ in 0..rounds {
                    let t = Target::FrontDoor;
                    a.extend(case.rounds(op, 1, &tls, t, put, get).await?.0);
                    b.extend(case.rounds(op, 1, &plain, t, put, get).await?.0);
                }
                let (a, b) = (manta_bench::Rounds(a), manta_bench::Rounds(b));
                println!(
                    "{label:>6} {conc:>4} {op:>4} | {:>9.0} {:>9.1} | {:>10.0} {:>9.1} | {:>5.0}%",
                    a.ops_s(),
                    a.mib_s(),
                    b.ops_s(),
                    b.mib_s(),
                    a.ops_s() / b.ops_s() * 100.0
                );
            }
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--internal-tls") {
        return compare_internal_tls(quick).await;
    }
    // The memory run writes 32 GiB (64 x 256 MiB, two copies): its own invocation, so the two
    // runs never need their disk at once.
    let rss_only = std::env::args().any(|a| a == "--rss");
    let (region, ctx) = start(false).await?;

    if rss_only {
        let pid = region.frontdoor_pid().context("front door pid")?;
        let before = vm_hwm_kib(pid).unwrap_or(0);
        let case = Case::new("rss", 256 * MIB, 64, 64);
        let t = Target::FrontDoor;
        let rate = case.rounds("PUT", 1, &ctx, t, put, get).await?.mib_s();
        let after = vm_hwm_kib(pid).unwrap_or(0);
        println!(
            "64 concurrent 256 MiB uploads (durability 2): {rate:.1} MiB/s; front door peak RSS {:.1} MiB (at start: {:.1} MiB); goal < 150 MiB",
            after as f64 / 1024.0,
            before as f64 / 1024.0
        );
        return Ok(());
    }
    println!(
        "front door vs storage node, durability 2 through the front door, one copy on the node"
    );
    println!(
        "{:>8} {:>4} {:>5} | {:>10} {:>9} {:>9} | {:>10} {:>9} {:>9} | {:>6}",
        "size",
        "conc",
        "op",
        "door MiB/s",
        "p50 ms",
        "p99 ms",
        "node MiB/s",
        "p50 ms",
        "p99 ms",
        "ratio"
    );
    let sizes: &[(usize, &str, usize)] = if quick {
        &[(4096, "4KiB", 200), (MIB, "1MiB", 64)]
    } else {
        &[
            (4096, "4KiB", 1000),
            (MIB, "1MiB", 200),
            (256 * MIB, "256MiB", 8),
        ]
    };
    for &(size, label, count) in sizes {
        for conc in [1usize, 16] {
            let count = if size >= 256 * MIB && conc == 16 {
                16
            } else {
                count
            };
            let rounds = if size >= 256 * MIB { 1 } else { 3 };
            for op in ["PUT", "GET"] {
                let mut figures = Vec::new();
                for t in [Target::FrontDoor, Target::StorageNode] {
                    let case = Case::new(label, size, conc, count);
                    let r = case.rounds(op, rounds, &ctx, t, put, get).await?;
                    let s = r.latency().context("no samples")?;
                    figures.push((r.mib_s(), s.p50, s.p99));
                }
                let (d, n) = (figures[0], figures[1]);
                println!(
                    "{label:>8} {conc:>4} {op:>5} | {:>10.1} {:>9.2} {:>9.2} | {:>10.1} {:>9.2} {:>9.2} | {:>5.0}%",
                    d.0,
                    d.1.as_secs_f64() * 1e3,
                    d.2.as_secs_f64() * 1e3,
                    n.0,
                    n.1.as_secs_f64() * 1e3,
                    n.2.as_secs_f64() * 1e3,
                    d.0 / n.0 * 100.0
                );
            }
        }
    }

    Ok(())
}
