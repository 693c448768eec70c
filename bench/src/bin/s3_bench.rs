//! The S3 API beside the Manta API, in the same run against the same region: PUT and GET
//! throughput (MiB/s) and rate (ops/s) for small, medium and large objects, and a multipart
//! upload beside a single PUT of the same size. Both APIs use durability 2 and a reqwest-based
//! client (`object_store`'s S3 backend with unsigned payloads; `manta-client` with HTTP
//! Signatures), so the ratio S3/Manta is the cost of the S3 layer (s3s parsing, SigV4,
//! bucket and key checks, the S3 metadata) on the same data path.
//!
//! Needs release binaries: `cargo build --release --bins`, then
//! `cargo run --release -p manta-bench --bin s3_bench [-- --quick]`.
//! Prints medians over rounds; MiB/s counts object bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use manta_auth::KeySigner;
use manta_bench::{Case, MIB, count_bytes, median, shared_chunks};
use manta_client::{ClientConfig, MantaClient, PutOptions};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload, WriteMultipart};
use testkit::{RegionOptions, TestRegion};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Manta,
    S3,
}

struct Ctx {
    manta: MantaClient,
    s3: AmazonS3,
}

async fn put(ctx: Arc<Ctx>, api: Api, name: String, size: usize) -> Result<()> {
    match api {
        Api::Manta => {
            let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
                shared_chunks(size).into_iter().map(Ok::<_, std::io::Error>),
            ));
            let opts = PutOptions {
                copies: Some(2),
                content_length: Some(size as u64),
                ..PutOptions::default()
            };
            ctx.manta
                .put_stream(&format!("~~/stor/bench/{name}"), body, opts)
                .await?;
        }
        Api::S3 => {
            let payload: PutPayload = shared_chunks(size).into_iter().collect();
            ctx.s3.put(&Path::from(name), payload).await?;
        }
    }
    Ok(())
}

async fn get(ctx: Arc<Ctx>, api: Api, name: String) -> Result<u64> {
    match api {
        Api::Manta => {
            let path = format!("~~/stor/bench/{name}");
            count_bytes(
                ctx.manta
                    .get(&path, Default::default())
                    .await?
                    .bytes_stream(),
            )
            .await
        }
        Api::S3 => count_bytes(ctx.s3.get(&Path::from(name)).await?.into_stream()).await,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let port = testkit::process::free_port()?;
    let region = TestRegion::start_with(RegionOptions {
        frontdoor_args: vec!["--s3-listen".into(), format!("127.0.0.1:{port}")],
        ..RegionOptions::default()
    })
    .await
    .context("start a region (did you `cargo build --release --bins`?)")?;
    let acct = &region.account;
    let cfg = ClientConfig {
        timeout: Duration::from_secs(600),
        ..region.client_config(&region.account)
    };
    let manta = MantaClient::with_signer(cfg, Some(Arc::new(KeySigner::from_file(&acct.key)?)))?;
    manta.mkdir("~~/stor/bench").await?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let s3 = manta_bench::s3_bench_bucket(&region, &endpoint).await?;
    let ctx = Arc::new(Ctx { manta, s3 });

    println!("S3 API vs Manta API, same region and data path (durability 2), medians of rounds");
    println!(
        "{:>7} {:>4} {:>4} | {:>10} {:>9} | {:>10} {:>9} | {:>6}",
        "size", "conc", "op", "Manta MiB/s", "ops/s", "S3 MiB/s", "ops/s", "S3/Manta"
    );
    let cases: &[(usize, &str, usize, usize)] = if quick {
        &[(4096, "4KiB", 16, 200), (MIB, "1MiB", 4, 32)]
    } else {
        &[
            (4096, "4KiB", 1, 300),
            (4096, "4KiB", 16, 1000),
            (MIB, "1MiB", 4, 128),
            (64 * MIB, "64MiB", 1, 6),
        ]
    };
    let rounds = if quick { 1 } else { 3 };
    for &(size, label, conc, count) in cases {
        for op in ["PUT", "GET"] {
            let mut fig = Vec::new();
            for api in [Api::Manta, Api::S3] {
                let case = Case::new(label, size, conc, count);
                let r = case.rounds(op, rounds, &ctx, api, put, get).await?;
                fig.push((r.mib_s(), r.ops_s()));
            }
            let (m, s) = (fig[0], fig[1]);
            println!(
                "{label:>7} {conc:>4} {op:>4} | {:>11.1} {:>9.1} | {:>10.1} {:>9.1} | {:>7.0}%",
                m.0,
                m.1,
                s.0,
                s.1,
                s.0 / m.0 * 100.0
            );
        }
    }

    // Multipart: parts go to the upload's nodes, completion joins them on the nodes.
    let size = if quick { 40 * MIB } else { 256 * MIB };
    let part = if quick { 8 * MIB } else { 32 * MIB };
    let mut single = Vec::new();
    let mut multi = Vec::new();
    for round in 0..rounds {
        let c = ctx.clone();
        let t = Instant::now();
        put(c.clone(), Api::S3, format!("single-{round}"), size).await?;
        single.push(size as f64 / MIB as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let upload =
            c.s3.put_multipart(&Path::from(format!("multi-{round}")))
                .await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, part);
        for chunk in shared_chunks(size) {
            w.wait_for_capacity(4).await?;
            w.put(chunk);
        }
        w.finish().await?;
        multi.push(size as f64 / MIB as f64 / t.elapsed().as_secs_f64());
    }
    let (s, m) = (
        median(&mut single).unwrap_or(0.0),
        median(&mut multi).unwrap_or(0.0),
    );
    println!(
        "\n{} MiB through S3: single PUT {s:.1} MiB/s; multipart ({} MiB parts, 4 in flight, joined on the nodes) {m:.1} MiB/s ({:.0}%)",
        size / MIB,
        part / MIB,
        m / s * 100.0
    );
    Ok(())
}
