//! Moray: putObject, getObject and findObjects through a Moray server over HTTP, beside the same
//! SQL statements sent straight to the same Postgres in the same run.
//!
//! - putObject: unconditional writes of new keys into a bucket with two indexes (Moray sends
//!   one upsert per put for a bucket without triggers; the baseline sends that upsert).
//! - getObject: reads of random existing keys (baseline: the same `SELECT ... WHERE _key`).
//! - findObjects: an indexed equality filter matching 1000 of 100 000 records, limit 1000,
//!   with `_count` (baseline: the same `SELECT ..., count(*) OVER () ... LIMIT 1000`, all rows
//!   read).
//!
//! Each operation is timed one at a time from one client (latency), and with 8 concurrent
//! clients (throughput). A last line times findObjects read as raw bytes over HTTP (no
//! client-side decoding), to show how much of the cost is the client library's JSON decoding. `cargo run --release -p manta-bench --bin moray_bench`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use manta_bench::{Stats, stats};
use moray::types::{BatchOp, BucketConfig, FindOptions, IndexSpec, IndexType, PutOptions};
use moray::{MorayClient, server};
use serde_json::json;
use testkit::TestPostgres;
use tokio_postgres::types::Type;

#[derive(Parser)]
struct Args {
    /// Records in the bucket searched by findObjects.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Sequential operations timed for put and get.
    #[arg(long, default_value_t = 3000)]
    ops: usize,
    /// Sequential findObjects calls timed.
    #[arg(long, default_value_t = 200)]
    finds: usize,
    /// Concurrent clients for the throughput figures.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

const GROUPS: usize = 100;

fn value(i: usize) -> serde_json::Value {
    json!({
        "owner": format!("owner-{}", i % 7),
        "grp": i % GROUPS,
        "name": format!("object-{i:08}"),
        "sharks": [{"datacenter": "dc1", "manta_storage_id": "1.stor"}],
        "contentLength": i * 17,
    })
}

/// The SQL Moray runs for an unconditional put into this bucket (see moray's objects.rs).
const RAW_PUT: &str = "INSERT INTO bench (_key, _value, _etag, _mtime, _vnode, _rver, \"grp\", \"owner\") \
    VALUES ($1, $2, $3, $4, $5, $6, $7::numeric, $8) ON CONFLICT (_key) DO UPDATE SET \
    _id = nextval('\"bench_serial\"'), _value = $2, _etag = $3, _mtime = $4, \
    _vnode = COALESCE($5, bench._vnode), _rver = $6, \"grp\" = $7::numeric, \"owner\" = $8";
const RAW_GET: &str = "SELECT _value, _id, _etag, _mtime FROM bench WHERE _key = $1";
const RAW_FIND: &str = "SELECT _id, _key, _value, _etag, _mtime, count(*) OVER () FROM bench \
    WHERE (\"grp\" = $1::numeric) LIMIT $2 OFFSET $3";

async fn raw_put(pg: &tokio_postgres::Client, key: &str, i: usize) -> Result<()> {
    let v = value(i);
    let text = serde_json::to_string(&v)?;
    let etag = format!("{:08X}", text.len());
    let now: i64 = 1_700_000_000_000;
    let vnode: Option<i64> = None;
    let rver: i64 = 1;
    let grp = (i % GROUPS).to_string();
    let owner = format!("owner-{}", i % 7);
    pg.query_typed(
        RAW_PUT,
        &[
            (&key, Type::TEXT),
            (&text, Type::TEXT),
            (&etag, Type::TEXT),
            (&now, Type::INT8),
            (&vnode, Type::INT8),
            (&rver, Type::INT8),
            (&grp, Type::TEXT),
            (&owner, Type::TEXT),
        ],
    )
    .await?;
    Ok(())
}

async fn raw_get(pg: &tokio_postgres::Client, key: &str) -> Result<()> {
    let rows = pg.query_typed(RAW_GET, &[(&key, Type::TEXT)]).await?;
    anyhow::ensure!(rows.len() == 1, "missing {key}");
    let _: &str = rows[0].try_get(0)?;
    Ok(())
}

async fn raw_find(pg: &tokio_postgres::Client, grp: usize) -> Result<usize> {
    let g = grp.to_string();
    let (limit, offset) = (1000i64, 0i64);
    let rows = pg
        .query_typed(
            RAW_FIND,
            &[
                (&g, Type::TEXT),
                (&limit, Type::INT8),
                (&offset, Type::INT8),
            ],
        )
        .await?;
    for r in &rows {
        let _: &str = r.try_get(2)?;
    }
    Ok(rows.len())
}

fn pick(i: usize, n: usize) -> usize {
    // A fixed scramble, so both sides read the same keys in the same order.
    (i.wrapping_mul(2_654_435_761)) % n
}

struct Line {
    name: &'static str,
    moray: Stats,
    raw: Stats,
    moray_tput: f64,
    raw_tput: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn time_seq<F, Fut>(n: usize, mut f: F) -> Result<Stats>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await?;
        samples.push(t.elapsed());
    }
    stats(&mut samples).context("no samples")
}

/// Ops/s of `n` operations spread over `workers` concurrent tasks.
async fn time_par<F, Fut>(n: usize, workers: usize, f: F) -> Result<f64>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let f = Arc::new(f);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                f(w, i).await?;
                i += workers;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Times `op(worker, i)` for `n` indexes one after another (latency; worker 0), then for `n`
/// more indexes (`n..2n`, so writes stay new keys) over `workers` concurrent tasks (ops/s).
async fn seq_and_par<F, Fut>(n: usize, workers: usize, op: F) -> Result<(Stats, f64)>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let seq = time_seq(n, |i| op(0, i)).await?;
    let par = time_par(n, workers, move |w, i| op(w, n + i)).await?;
    Ok((seq, par))
}

impl Line {
    /// A table line from Moray's and the baseline's (latency, ops/s).
    fn new(name: &'static str, moray: (Stats, f64), raw: (Stats, f64)) -> Line {
        Line {
            name,
            moray: moray.0,
            raw: raw.0,
            moray_tput: moray.1,
            raw_tput: raw.1,
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let pg = TestPostgres::start().await?;
    let srv = server::spawn(server::Config::for_postgres(pg.url())).await?;
    let client = MorayClient::new(&srv.url())?;
    let cfg = BucketConfig::new(1)
        .with_index("grp", IndexSpec::new(IndexType::Number))
        .with_index("owner", IndexSpec::new(IndexType::String));
    client.create_bucket("bench", cfg).await?;

    eprintln!("loading {} records through moray batches...", args.rows);
    let t = Instant::now();
    for chunk in (0..args.rows).collect::<Vec<_>>().chunks(1000) {
        let ops = chunk
            .iter()
            .map(|i| BatchOp::Put {
                bucket: "bench".into(),
                key: format!("/load/{i:08}"),
                value: value(*i),
                options: PutOptions::any(),
            })
            .collect();
        client.batch(ops).await?;
    }
    eprintln!("loaded in {:.1} s", t.elapsed().as_secs_f64());
    let admin = pg.client().await?;
    admin.batch_execute("VACUUM ANALYZE bench").await?;

    // One raw connection per worker, like the server's pool.
    let mut raws = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        raws.push(Arc::new(pg.client().await?));
    }
    let mut lines = Vec::new();

    let (ops, finds, conc) = (args.ops, args.finds, args.concurrency);
    let c = client.clone();
    let moray = seq_and_par(ops, conc, move |_, i| {
        let c = c.clone();
        async move {
            c.put_object("bench", &format!("/put/m/{i}"), value(i), PutOptions::any())
                .await?;
            Ok(())
        }
    })
    .await?;
    let rs = raws.clone();
    let raw = seq_and_par(ops, conc, move |w, i| {
        let pg = rs[w].clone();
        async move { raw_put(&pg, &format!("/put/r/{i}"), i).await }
    })
    .await?;
    lines.push(Line::new("putObject", moray, raw));

    let rows = args.rows;
    let c = client.clone();
    let moray = seq_and_par(ops, conc, move |_, i| {
        let c = c.clone();
        async move {
            c.get_object("bench", &format!("/load/{:08}", pick(i, rows)))
                .await?;
            Ok(())
        }
    })
    .await?;
    let rs = raws.clone();
    let raw = seq_and_par(ops, conc, move |w, i| {
        let pg = rs[w].clone();
        async move { raw_get(&pg, &format!("/load/{:08}", pick(i, rows))).await }
    })
    .await?;
    lines.push(Line::new("getObject", moray, raw));

    let c = client.clone();
    let moray = seq_and_par(finds, conc, move |_, i| {
        let c = c.clone();
        async move {
            let opts = FindOptions {
                limit: Some(1000),
                ..Default::default()
            };
            let found = c
                .find_objects("bench", &format!("(grp={})", i % GROUPS), opts)
                .await?;
            anyhow::ensure!((1..=1000).contains(&found.len()), "found {}", found.len());
            Ok(())
        }
    })
    .await?;
    let rs = raws.clone();
    let raw = seq_and_par(finds, conc, move |w, i| {
        let pg = rs[w].clone();
        async move {
            let n = raw_find(&pg, i % GROUPS).await?;
            anyhow::ensure!((1..=1000).contains(&n), "found {n}");
            Ok(())
        }
    })
    .await?;
    lines.push(Line::new("findObjects", moray, raw));

    // The same findObjects read as bytes only (no client-side JSON decoding), to split Moray's
    // cost between the server and the client library.
    let http = reqwest::Client::new();
    let find_url = format!("{}/findObjects", srv.url());
    let body = |i: usize| {
        format!(
            r#"{{"bucket":"bench","filter":"(grp={})","options":{{"limit":1000}}}}"#,
            i % GROUPS
        )
    };
    let bytes = seq_and_par(finds, conc, move |_, i| {
        let (http, url, b) = (http.clone(), find_url.clone(), body(i));
        async move {
            let bytes = http
                .post(url)
                .body(b)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            anyhow::ensure!(bytes.len() > 100, "short body");
            Ok(())
        }
    })
    .await?;
    let raw = (lines[2].raw, lines[2].raw_tput);
    lines.push(Line::new("find, bytes", bytes, raw));

    println!(
        "moray over HTTP vs the same SQL straight to Postgres ({} rows; {} sequential ops, {} clients for ops/s)",
        args.rows, args.ops, args.concurrency
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>10} {:>9}",
        "op",
        "moray p50",
        "moray p99",
        "raw p50",
        "raw p99",
        "p50 x",
        "moray op/s",
        "raw op/s",
        "op/s %"
    );
    for l in &lines {
        println!(
            "{:<12} {:>8.3}ms {:>8.3}ms {:>8.3}ms {:>8.3}ms {:>8.2}x {:>10.0} {:>10.0} {:>8.0}%",
            l.name,
            ms(l.moray.p50),
            ms(l.moray.p99),
            ms(l.raw.p50),
            ms(l.raw.p99),
            ms(l.moray.p50) / ms(l.raw.p50),
            l.moray_tput,
            l.raw_tput,
            100.0 * l.moray_tput / l.raw_tput
        );
    }
    srv.stop().await?;
    Ok(())
}
