//! Following the Manatee primary through etcd, failing fast without a database, and the shard
//! ring with its sharded client over two real shards.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use moray::ring::{Ring, RingStore, ShardInfo};
use moray::schema::MANTA;
use moray::server::Config;
use moray::types::*;
use moray::{Error, MorayClient, ShardedClient};
use serde_json::{Value, json};
use testkit::{TestEtcd, TestPostgres};

fn init_logs() {
    manta_util::logging::init(manta_util::logging::LogFormat::Plain);
}

fn state(generation: u64, primary: Option<&TestPostgres>) -> Value {
    let peer = |pg: &TestPostgres| {
        json!({
            "id": format!("127.0.0.1:{}:0", pg.port()),
            "pgUrl": format!("tcp://postgres@127.0.0.1:{}/postgres", pg.port()),
            "backupUrl": "http://127.0.0.1:0",
            "ip": "127.0.0.1",
        })
    };
    json!({
        "generation": generation,
        "primary": primary.map(peer),
        "sync": null,
        "async": [],
        "deposed": [],
        "initWal": "0/0",
        "freeze": null,
    })
}

async fn etcd_put(etcd: &TestEtcd, key: &str, value: Option<&Value>) {
    let mut c = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    match value {
        Some(v) => {
            c.put(key, serde_json::to_vec(v).unwrap(), None)
                .await
                .unwrap();
        }
        None => {
            c.delete(key, None).await.unwrap();
        }
    }
}

/// Polls `f` until it returns true (or fails the test after 15 s).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn no_retry(url: &str) -> MorayClient {
    MorayClient::builder(url.to_owned())
        .retries(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn follows_the_manatee_primary() {
    init_logs();
    let (etcd, a, b) = tokio::join!(
        TestEtcd::start(),
        TestPostgres::start(),
        TestPostgres::start()
    );
    let (etcd, a, b) = (etcd.unwrap(), a.unwrap(), b.unwrap());
    let key = moray::server::manatee::state_key("1");
    let mut cfg = Config::for_manatee(vec![etcd.endpoint()], "1");
    cfg.query_timeout = Duration::from_secs(10);
    let server = moray::server::spawn(cfg).await.unwrap();
    let c = no_retry(&server.url());

    // No state yet: a retryable refusal, not a hang.
    let e = c.ping().await.unwrap_err();
    assert!(matches!(e, Error::NoDatabasePeers { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(e.http_status(), 503);

    etcd_put(&etcd, &key, Some(&state(1, Some(&a)))).await;
    eventually("moray reaches primary A", || async {
        c.ping().await.is_ok()
    })
    .await;
    c.create_bucket("b", BucketConfig::new(1)).await.unwrap();
    c.put_object("b", "on-a", json!({"x": 1}), PutOptions::any())
        .await
        .unwrap();

    // A long statement in flight on A when B takes over fails at once with the retryable
    // error (it would otherwise answer after 20 s, or never if A were dead).
    let c2 = c.clone();
    let slow = tokio::spawn(async move { c2.sql("SELECT pg_sleep(20)", vec![]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd_put(&etcd, &key, Some(&state(2, Some(&b)))).await;
    let r = slow.await.unwrap();
    assert!(matches!(r, Err(Error::NoDatabasePeers { .. })), "{r:?}");

    // B is empty: the bucket is not there until created on B.
    eventually("moray switches to B", || async {
        matches!(
            c.get_object("b", "on-a").await,
            Err(Error::BucketNotFound { .. })
        )
    })
    .await;
    c.create_bucket("b", BucketConfig::new(1)).await.unwrap();
    c.put_object("b", "on-b", json!({"x": 2}), PutOptions::any())
        .await
        .unwrap();
    let on_b: i64 = b
        .client()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM b", &[])
        .await
        .unwrap()
        .get(0);
    let on_a: Vec<String> = a
        .client()
        .await
        .unwrap()
        .query("SELECT _key FROM b", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!((on_b, on_a), (1, vec!["on-a".to_owned()]));

    // A primary that is still read-only refuses writes with the retryable error; reads work.
    let admin = b.client().await.unwrap();
    admin
        .batch_execute("ALTER SYSTEM SET default_transaction_read_only = on")
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    eventually("writes on B are refused as not-yet-writable", || async {
        matches!(
            c.put_object("b", "ro", json!({}), PutOptions::any()).await,
            Err(Error::NoDatabasePeers { .. })
        )
    })
    .await;
    assert!(matches!(c.ping().await, Err(Error::NoDatabasePeers { .. })));
    c.get_object("b", "on-b").await.unwrap();
    admin
        .batch_execute("ALTER SYSTEM RESET default_transaction_read_only")
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    eventually("B becomes writable", || async {
        c.put_object("b", "rw", json!({}), PutOptions::any())
            .await
            .is_ok()
    })
    .await;

    // A state without a primary, then no state at all: refused again.
    etcd_put(&etcd, &key, Some(&state(3, None))).await;
    eventually("no primary", || async {
        matches!(c.ping().await, Err(Error::NoDatabasePeers { .. }))
    })
    .await;
    etcd_put(&etcd, &key, Some(&state(4, Some(&a)))).await;
    eventually("back on A", || async {
        c.get_object("b", "on-a").await.is_ok()
    })
    .await;
    etcd_put(&etcd, &key, None).await;
    eventually("state deleted", || async {
        matches!(c.ping().await, Err(Error::NoDatabasePeers { .. }))
    })
    .await;

    // The default client retries retryable errors: a read during a switch just succeeds.
    let patient = MorayClient::builder(server.url())
        .retries(8)
        .backoff(Duration::from_millis(100))
        .build()
        .unwrap();
    let waiter = tokio::spawn(async move { patient.get_object("b", "on-b").await });
    etcd_put(&etcd, &key, Some(&state(5, Some(&b)))).await;
    waiter.await.unwrap().unwrap();
    server.stop().await.unwrap();
}

fn postgres_processes(postmaster: u32) -> Vec<u32> {
    let mut out = vec![postmaster];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 4 (after the parenthesised command) is the parent pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(postmaster) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn a_hung_or_dead_primary_fails_requests_instead_of_hanging() {
    init_logs();
    let mut pg = TestPostgres::start().await.unwrap();
    let mut cfg = Config::for_postgres(pg.url());
    cfg.query_timeout = Duration::from_secs(2);
    cfg.connect_timeout = Duration::from_secs(2);
    let server = moray::server::spawn(cfg).await.unwrap();
    let c = no_retry(&server.url());
    c.create_bucket("b", BucketConfig::new(1)).await.unwrap();
    c.put_object("b", "k", json!({}), PutOptions::any())
        .await
        .unwrap();

    // Freeze every Postgres process: connections stay open but nothing answers.
    let pids = postgres_processes(pg.pid());
    for p in &pids {
        manta_util::proc::signal(*p, rustix::process::Signal::STOP).unwrap();
    }
    let r = tokio::time::timeout(Duration::from_secs(20), c.get_object("b", "k")).await;
    for p in &pids {
        let _ = manta_util::proc::signal(*p, rustix::process::Signal::CONT);
    }
    let r = r.expect("the request must not hang past the query timeout");
    assert!(matches!(r, Err(Error::NoDatabasePeers { .. })), "{r:?}");
    c.get_object("b", "k").await.unwrap();

    // Killed: refused promptly and retryably.
    pg.kill();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        c.put_object("b", "k2", json!({}), PutOptions::any()),
    )
    .await;
    let e = r.expect("no hang").unwrap_err();
    assert!(matches!(e, Error::NoDatabasePeers { .. }), "{e:?}");
    assert!(e.is_retryable());
}

async fn shard(pg: &TestPostgres) -> moray::server::RunningServer {
    moray::server::spawn(Config::for_postgres(pg.url()))
        .await
        .unwrap()
}

#[tokio::test]
async fn sharded_client_routes_by_directory_and_follows_remaps() {
    init_logs();
    let (etcd, p1, p2) = tokio::join!(
        TestEtcd::start(),
        TestPostgres::start(),
        TestPostgres::start()
    );
    let (etcd, p1, p2) = (etcd.unwrap(), p1.unwrap(), p2.unwrap());
    let (s1, s2) = (shard(&p1).await, shard(&p2).await);
    let store = RingStore::new(vec![etcd.endpoint()]);
    assert!(store.load().await.unwrap().is_none());
    let ring = Ring::new(
        64,
        vec![
            ShardInfo {
                name: "1".into(),
                urls: vec![s1.url()],
            },
            ShardInfo {
                name: "2".into(),
                urls: vec![s2.url()],
            },
        ],
    )
    .unwrap();
    assert!(store.create(&ring).await.unwrap());
    assert!(
        !store.create(&ring).await.unwrap(),
        "an existing ring is never replaced by create"
    );
    let sc = ShardedClient::from_etcd(vec![etcd.endpoint()])
        .await
        .unwrap();
    assert_eq!(sc.ring().version, 1);
    sc.setup_manta_buckets().await.unwrap();
    let direct = [s1.client().unwrap(), s2.client().unwrap()];

    let dirs: Vec<String> = (0..10).map(|i| format!("/acct/stor/dir{i}")).collect();
    for d in &dirs {
        for f in 0..4 {
            let key = format!("{d}/f{f}");
            let v = json!({"dirname": d, "key": key, "name": format!("f{f}"), "owner": "acct", "type": "directory"});
            sc.put_object(MANTA, &key, v, PutOptions::any())
                .await
                .unwrap();
        }
    }
    let mut per_shard = [0usize; 2];
    for d in &dirs {
        // All of one directory's entries are on one shard, and a listing is one query there.
        let listing = sc
            .find_objects(MANTA, &format!("(dirname={d})"), d, FindOptions::default())
            .await
            .unwrap();
        assert_eq!(listing.len(), 4, "{d}");
        let mut holders = Vec::new();
        for (i, c) in direct.iter().enumerate() {
            let n = c
                .find_objects(MANTA, &format!("(dirname={d})"), FindOptions::default())
                .await
                .unwrap()
                .len();
            if n > 0 {
                assert_eq!(n, 4);
                holders.push(i);
            }
        }
        assert_eq!(holders.len(), 1, "{d} is split");
        per_shard[holders[0]] += 1;
        // The entry count lives beside the entries.
        let counts = direct[holders[0]]
            .get_object("manta_directory_counts", d)
            .await
            .unwrap();
        assert_eq!(counts.value["entries"], 4);
        // The vnode is stored with each record.
        let (_, vnode) = sc.shard_for_hashkey(d);
        let rows = direct[holders[0]]
            .sql(
                "SELECT DISTINCT _vnode FROM manta WHERE dirname = $1",
                vec![json!(d)],
            )
            .await
            .unwrap();
        assert_eq!(rows, vec![json!({"_vnode": vnode})]);
    }
    assert!(per_shard[0] > 0 && per_shard[1] > 0, "{per_shard:?}");

    // Heartbeats go to the system shard (the first).
    sc.put_object(
        "manta_storage",
        "1.stor",
        json!({"manta_storage_id": "1.stor"}),
        PutOptions::any(),
    )
    .await
    .unwrap();
    direct[0]
        .get_object("manta_storage", "1.stor")
        .await
        .unwrap();

    // A batch must stay on one shard.
    let (c0, _) = sc.shard_for_hashkey(&dirs[0]);
    let other = dirs
        .iter()
        .find(|d| sc.shard_for_hashkey(d).0.urls() != c0.urls())
        .unwrap();
    let put = |key: String| BatchOp::Put {
        bucket: MANTA.into(),
        key,
        value: json!({"type": "directory"}),
        options: PutOptions::any(),
    };
    let e = sc
        .batch(vec![
            put(format!("{}/x", dirs[0])),
            put(format!("{other}/x")),
        ])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    sc.batch(vec![
        put(format!("{}/x", dirs[0])),
        put(format!("{}/y", dirs[0])),
    ])
    .await
    .unwrap();

    // Remap the vnode of dirs[0] to the other shard, online.
    let (_, v) = sc.shard_for_hashkey(&dirs[0]);
    let from = sc.ring().shard_index_of_vnode(v);
    let to = if from == 0 { "2" } else { "1" };
    let new_ring = store.remap_vnode(v, to).await.unwrap();
    assert_eq!(new_ring.version, 2);
    eventually("the client sees the new ring", || async {
        sc.ring().version == 2
    })
    .await;
    // New writes of that directory go to the new shard; moving the old records is the
    // operator's separate step, so they are not visible there.
    sc.put_object(
        MANTA,
        &format!("{}/new", dirs[0]),
        json!({"dirname": dirs[0], "type": "directory"}),
        PutOptions::any(),
    )
    .await
    .unwrap();
    let to_idx = 1 - from;
    direct[to_idx]
        .get_object(MANTA, &format!("{}/new", dirs[0]))
        .await
        .unwrap();
    assert!(matches!(
        sc.get_object(MANTA, &format!("{}/f0", dirs[0])).await,
        Err(Error::ObjectNotFound { .. })
    ));
    direct[from]
        .get_object(MANTA, &format!("{}/f0", dirs[0]))
        .await
        .unwrap();
    // Remapping to an unknown shard is refused and changes nothing.
    assert!(store.remap_vnode(v, "9").await.is_err());
    assert_eq!(store.load().await.unwrap().unwrap().0.version, 2);

    // A one-shard client needs no etcd.
    let single = ShardedClient::single(&s1.url()).unwrap();
    assert_eq!(single.shards().len(), 1);
    single.get_object("manta_storage", "1.stor").await.unwrap();
    drop(sc);
}
