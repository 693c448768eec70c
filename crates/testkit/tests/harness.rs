//! The harness starts real servers, and servers of concurrent tests stay apart.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::future::Future;
use std::path::Path;

use testkit::{TestEtcd, TestPostgres};

/// Starts two servers at once with `start` and checks that they got different ports
/// (`port`) and directories (`dir`).
async fn start_two<S, F: Future<Output = anyhow::Result<S>>>(
    start: impl Fn() -> F,
    port: impl Fn(&S) -> u16,
    dir: impl Fn(&S) -> &Path,
) -> (S, S) {
    let (a, b) = tokio::join!(start(), start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(port(&a), port(&b));
    assert_ne!(dir(&a), dir(&b));
    (a, b)
}

#[tokio::test]
async fn postgres_runs_real_queries() {
    let pg = TestPostgres::start().await.unwrap();
    let c = pg.client().await.unwrap();
    c.batch_execute("CREATE TABLE t (k TEXT PRIMARY KEY, v JSONB NOT NULL)")
        .await
        .unwrap();
    c.execute(
        "INSERT INTO t VALUES ($1, $2)",
        &[&"a", &serde_json::json!({"n": 1})],
    )
    .await
    .unwrap();
    let row = c
        .query_one("SELECT v FROM t WHERE k = $1", &[&"a"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, serde_json::Value>(0)["n"], 1);
    // Data checksums are on: pg_rewind depends on them.
    let row = c.query_one("SHOW data_checksums", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "on");
    // The server does not run as root.
    let row = c
        .query_one("SELECT current_setting('data_directory')", &[])
        .await
        .unwrap();
    let data: String = row.get(0);
    assert!(data.starts_with(pg.dir().to_str().unwrap()));
}

#[tokio::test]
async fn parallel_servers_do_not_share_anything() {
    let (a, b) = start_two(
        TestPostgres::start,
        TestPostgres::port,
        TestPostgres::data_dir,
    )
    .await;
    let (ca, cb) = (a.client().await.unwrap(), b.client().await.unwrap());
    ca.batch_execute("CREATE TABLE only_in_a (x INT)")
        .await
        .unwrap();
    let found = cb
        .query_opt("SELECT 1 FROM pg_tables WHERE tablename = 'only_in_a'", &[])
        .await
        .unwrap();
    assert!(
        found.is_none(),
        "a table created in one server is visible in the other"
    );
}

#[tokio::test]
async fn postgres_dies_with_its_handle() {
    let pg = TestPostgres::start().await.unwrap();
    let pid = pg.pid();
    let port = pg.port();
    drop(pg);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "postmaster {pid} outlived its handle"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn etcd_serves_reads_and_writes() {
    let etcd = TestEtcd::start().await.unwrap();
    let http = reqwest::Client::new();
    // The v3 JSON gateway: put then range (keys and values are base64).
    let put = http
        .post(format!("{}/v3/kv/put", etcd.endpoint()))
        .body(r#"{"key":"Zm9v","value":"YmFy"}"#)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    let got: serde_json::Value = http
        .post(format!("{}/v3/kv/range", etcd.endpoint()))
        .body(r#"{"key":"Zm9v"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["kvs"][0]["value"], "YmFy");
}

#[tokio::test]
async fn two_etcds_at_once() {
    start_two(TestEtcd::start, TestEtcd::port, TestEtcd::dir).await;
}
