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
use manta_bench::{Case, MIB, median, shared_chunks};
use manta_client::{ClientConfig, MantaClient, PutOptions};
use object_store::aws::{AmazonS3, AmazonS3Builder};
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
    use futures_util::StreamExt as _;
    let mut n = 0u64;
    match api {
        Api::Manta => {
            let r = ctx
                .manta
                .get(&format!("~~/stor/bench/{name}"), Default::default())
                .await?;
            let mut s = r.bytes_stream();
            while let Some(b) = s.next().await {
                n += b?.len() as u64;
            }
        }
        Api::S3 => {
            let mut s = ctx.s3.get(&Path::from(name)).await?.into_stream();
            while let Some(b) = s.next().await {
                n += b?.len() as u64;
            }
        }
    }
    Ok(n)
}

fn s3_key(region: &TestRegion) -> Result<(String, String)> {
    let out = std::process::Command::new(testkit::region::binary("manta-adm")?)
        .args([
            "s3-key",
            "create",
            &region.account.login,
            "--moray",
            &region.moray_url,
            "--json",
        ])
        .output()?;
    anyhow::ensure!(out.status.success(), "manta-adm s3-key create failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        v["accessKeyId"].as_str().context("key id")?.to_owned(),
        v["secretAccessKey"].as_str().context("secret")?.to_owned(),
    ))
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
    let (ak, sk) = s3_key(&region)?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let s3 = AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("bench")
        .with_access_key_id(&ak)
        .with_secret_access_key(&sk)
        .with_unsigned_payload(true)
        .build()?;
    // Make the bucket with a signed request of the same client family.
    let http = reqwest::Client::new();
    let url = format!("{endpoint}/bench");
    let created = create_bucket(&http, &url, &ak, &sk).await?;
    anyhow::ensure!(created, "could not create the bench bucket");
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

/// `PUT /bench` signed with SigV4 (through object_store's signer is not exposed; use a
/// presigned-style query signature made here).
async fn create_bucket(http: &reqwest::Client, url: &str, ak: &str, sk: &str) -> Result<bool> {
    use sha2::Digest as _;
    let now = std::time::SystemTime::now();
    let iso = manta_types::time::iso8601_ms(
        now.duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64
    );
    let amz_date = format!(
        "{}{}{}T{}{}{}Z",
        &iso[0..4],
        &iso[5..7],
        &iso[8..10],
        &iso[11..13],
        &iso[14..16],
        &iso[17..19]
    );
    let date = &amz_date[..8];
    let scope = format!("{date}/us-east-1/s3/aws4_request");
    let (host, path) = url
        .trim_start_matches("http://")
        .split_once('/')
        .context("bucket url")?;
    let cred = format!("{ak}%2F{}", scope.replace('/', "%2F"));
    let query = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={cred}&X-Amz-Date={amz_date}&X-Amz-Expires=300&X-Amz-SignedHeaders=host"
    );
    let canonical = format!("PUT\n/{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&sha2::Sha256::digest(canonical.as_bytes()))
    );
    let mac = |k: &[u8], m: &[u8]| -> Vec<u8> {
        // HMAC-SHA256 by its definition (no extra dependency for one signature).
        let mut key = [0u8; 64];
        if k.len() > 64 {
            key[..32].copy_from_slice(&sha2::Sha256::digest(k));
        } else {
            key[..k.len()].copy_from_slice(k);
        }
        let ipad: Vec<u8> = key
            .iter()
            .map(|b| b ^ 0x36)
            .chain(m.iter().copied())
            .collect();
        let inner = sha2::Sha256::digest(&ipad);
        let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).chain(inner).collect();
        sha2::Sha256::digest(&opad).to_vec()
    };
    let k = mac(format!("AWS4{sk}").as_bytes(), date.as_bytes());
    let k = mac(&k, b"us-east-1");
    let k = mac(&k, b"s3");
    let k = mac(&k, b"aws4_request");
    let sig = hex(&mac(&k, to_sign.as_bytes()));
    let r = http
        .put(format!("{url}?{query}&X-Amz-Signature={sig}"))
        .send()
        .await?;
    Ok(r.status().is_success())
}
