//! Following the Manatee primary through etcd, failing fast without a database, and the shard
//! ring with its sharded client over two real shards.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::put;
use moray::ring::{Ring, RingStore, ShardInfo};
use moray::schema::MANTA;
use moray::server::{Config, RunningServer};
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

/// An etcd and two empty Postgres servers, started side by side.
async fn etcd_and_two_postgres() -> (TestEtcd, TestPostgres, TestPostgres) {
    init_logs();
    let (etcd, a, b) = tokio::join!(
        TestEtcd::start(),
        TestPostgres::start(),
        TestPostgres::start()
    );
    (etcd.unwrap(), a.unwrap(), b.unwrap())
}

/// A Moray server following Manatee shard "1" through a test etcd, two Postgres servers `a`
/// and `b` that a test names primary in turn, and a client `c` that never retries (so each
/// refusal is seen).
struct Following {
    c: MorayClient,
    server: RunningServer,
    key: String,
    a: TestPostgres,
    b: TestPostgres,
    etcd: TestEtcd,
}

impl Following {
    async fn start() -> Following {
        let (etcd, a, b) = etcd_and_two_postgres().await;
        let mut cfg = Config::for_manatee(vec![etcd.endpoint()], "1");
        cfg.query_timeout = Duration::from_secs(10);
        cfg.enable_sql = true; // a statement kept in flight with pg_sleep
        let server = moray::server::spawn(cfg).await.unwrap();
        Following {
            c: no_retry(&server.url()),
            server,
            key: moray::server::manatee::state_key("1"),
            a,
            b,
            etcd,
        }
    }

    /// Publishes the shard's state at `generation`, naming `primary` (or no primary).
    async fn name_primary(&self, generation: u64, primary: Option<&TestPostgres>) {
        etcd_put(&self.etcd, &self.key, Some(&state(generation, primary))).await;
    }

    /// Deletes the shard's state from etcd.
    async fn delete_state(&self) {
        etcd_put(&self.etcd, &self.key, None).await;
    }

    /// Names `pg` primary, waits until Moray reaches it, and stores `key` in a new bucket `b`.
    async fn serve_from(&self, generation: u64, pg: &TestPostgres, key: &str) {
        self.name_primary(generation, Some(pg)).await;
        eventually("moray reaches the primary", || async {
            self.c.ping().await.is_ok()
        })
        .await;
        self.c
            .create_bucket("b", BucketConfig::new(1))
            .await
            .unwrap();
        put(&self.c, "b", key, json!({"on": key})).await;
    }

    /// Waits until a ping is refused with the retryable no-primary error.
    async fn wait_refused(&self, what: &str) {
        eventually(what, || async {
            matches!(self.c.ping().await, Err(Error::NoDatabasePeers { .. }))
        })
        .await;
    }
}

/// The keys of table `b` as stored in `pg`, read with plain SQL.
async fn keys_of_b(pg: &TestPostgres) -> Vec<String> {
    pg.client()
        .await
        .unwrap()
        .query("SELECT _key FROM b ORDER BY _key", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Makes every new transaction on `pg` read-only (or no longer), as a primary that is not yet
/// writable is.
async fn set_read_only(pg: &TestPostgres, on: bool) {
    let change = if on {
        "ALTER SYSTEM SET default_transaction_read_only = on"
    } else {
        "ALTER SYSTEM RESET default_transaction_read_only"
    };
    let admin = pg.client().await.unwrap();
    admin.batch_execute(change).await.unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
}

#[tokio::test]
async fn without_a_shard_state_requests_are_refused_retryably() {
    let f = Following::start().await;
    // No state yet: a retryable refusal, not a hang.
    let e = f.c.ping().await.unwrap_err();
    assert!(matches!(e, Error::NoDatabasePeers { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(e.http_status(), 503);
}

#[tokio::test]
async fn a_statement_in_flight_fails_at_once_when_the_primary_changes() {
    let f = Following::start().await;
    f.serve_from(1, &f.a, "on-a").await;
    // A long statement in flight on A when B takes over fails at once with the retryable
    // error (it would otherwise answer after 20 s, or never if A were dead).
    let c2 = f.c.clone();
    let slow = tokio::spawn(async move { c2.sql("SELECT pg_sleep(20)", vec![]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.name_primary(2, Some(&f.b)).await;
    let r = slow.await.unwrap();
    assert!(matches!(r, Err(Error::NoDatabasePeers { .. })), "{r:?}");
}

#[tokio::test]
async fn a_new_primary_holds_only_what_was_written_to_it() {
    let f = Following::start().await;
    let c = &f.c;
    f.serve_from(1, &f.a, "on-a").await;
    f.name_primary(2, Some(&f.b)).await;
    // B is empty: the bucket is not there until created on B.
    eventually("moray switches to B", || async {
        matches!(
            c.get_object("b", "on-a").await,
            Err(Error::BucketNotFound { .. })
        )
    })
    .await;
    c.create_bucket("b", BucketConfig::new(1)).await.unwrap();
    put(c, "b", "on-b", json!({"x": 2})).await;
    // Each holds its own record only (B's one row is the new one).
    assert_eq!(
        (keys_of_b(&f.b).await, keys_of_b(&f.a).await),
        (vec!["on-b".to_owned()], vec!["on-a".to_owned()])
    );
}

#[tokio::test]
async fn a_read_only_primary_refuses_writes_retryably_and_serves_reads() {
    let f = Following::start().await;
    let c = &f.c;
    f.serve_from(1, &f.b, "on-b").await;
    // A primary that is still read-only refuses writes with the retryable error; reads work.
    set_read_only(&f.b, true).await;
    eventually("writes on B are refused as not-yet-writable", || async {
        matches!(
            c.put_object("b", "ro", json!({}), PutOptions::any()).await,
            Err(Error::NoDatabasePeers { .. })
        )
    })
    .await;
    assert!(matches!(c.ping().await, Err(Error::NoDatabasePeers { .. })));
    c.get_object("b", "on-b").await.unwrap();
    set_read_only(&f.b, false).await;
    eventually("B becomes writable", || async {
        c.put_object("b", "rw", json!({}), PutOptions::any())
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
async fn without_a_primary_requests_are_refused_until_one_is_named() {
    let f = Following::start().await;
    f.serve_from(1, &f.a, "on-a").await;
    // A state without a primary, then no state at all: refused again.
    f.name_primary(2, None).await;
    f.wait_refused("no primary").await;
    f.name_primary(3, Some(&f.a)).await;
    eventually("back on A", || async {
        f.c.get_object("b", "on-a").await.is_ok()
    })
    .await;
    f.delete_state().await;
    f.wait_refused("state deleted").await;
}

#[tokio::test]
async fn the_default_client_retries_a_read_through_a_primary_switch() {
    let f = Following::start().await;
    f.serve_from(1, &f.b, "on-b").await;
    f.delete_state().await;
    f.wait_refused("state deleted").await;
    // The default client retries retryable errors: a read during a switch just succeeds.
    let patient = MorayClient::builder(f.server.url())
        .retries(8)
        .backoff(Duration::from_millis(100))
        .build()
        .unwrap();
    let waiter = tokio::spawn(async move { patient.get_object("b", "on-b").await });
    f.name_primary(2, Some(&f.b)).await;
    waiter.await.unwrap().unwrap();
    f.server.stop().await.unwrap();
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
    put(&c, "b", "k", json!({})).await;

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

/// A Moray server over `pg`, standing for one shard.
async fn shard(pg: &TestPostgres) -> RunningServer {
    // The tests look at the stored rows through /sql.
    moray::server::spawn(Config {
        enable_sql: true,
        ..Config::for_postgres(pg.url())
    })
    .await
    .unwrap()
}

/// The ten directories the sharded tests write to.
fn directories() -> Vec<String> {
    (0..10).map(|i| format!("/acct/stor/dir{i}")).collect()
}

/// Two Moray shards over their own Postgres, a ring of both stored in a test etcd, and a
/// sharded client that read it and set up the manta buckets on both shards.
struct Sharded {
    sc: ShardedClient,
    /// Plain clients of shard "1" and shard "2", to see where records landed.
    direct: [MorayClient; 2],
    store: RingStore,
    ring: Ring,
    s1: RunningServer,
    // Kept for the life of the test, dropped after the clients.
    _s2: RunningServer,
    _pg: [TestPostgres; 2],
    _etcd: TestEtcd,
}

impl Sharded {
    async fn start() -> Sharded {
        let (etcd, p1, p2) = etcd_and_two_postgres().await;
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
        let sc = ShardedClient::from_etcd(vec![etcd.endpoint()])
            .await
            .unwrap();
        sc.setup_manta_buckets().await.unwrap();
        Sharded {
            sc,
            direct: [s1.client().unwrap(), s2.client().unwrap()],
            store,
            ring,
            s1,
            _s2: s2,
            _pg: [p1, p2],
            _etcd: etcd,
        }
    }

    /// Four entries in each of the [`directories`], written through the sharded client;
    /// returns the directories.
    async fn fill(&self) -> Vec<String> {
        let dirs = directories();
        for d in &dirs {
            for f in 0..4 {
                let key = format!("{d}/f{f}");
                let v = json!({"dirname": d, "key": key, "name": format!("f{f}"), "owner": "acct", "type": "directory"});
                self.sc
                    .put_object(MANTA, &key, v, PutOptions::any())
                    .await
                    .unwrap();
            }
        }
        dirs
    }

    /// A storage node's heartbeat record, written through the sharded client.
    async fn put_heartbeat(&self) {
        self.sc
            .put_object(
                "manta_storage",
                "1.stor",
                json!({"manta_storage_id": "1.stor"}),
                PutOptions::any(),
            )
            .await
            .unwrap();
    }

    /// Remaps the vnode of `dir` to the other shard and waits until the client sees the new
    /// ring; returns the vnode and the index of the shard it left.
    async fn remap_to_the_other_shard(&self, dir: &str) -> (u32, usize) {
        let (_, v) = self.sc.shard_for_hashkey(dir);
        let from = self.sc.ring().shard_index_of_vnode(v);
        let to = if from == 0 { "2" } else { "1" };
        let new_ring = self.store.remap_vnode(v, to).await.unwrap();
        assert_eq!(new_ring.version, 2);
        eventually("the client sees the new ring", || async {
            self.sc.ring().version == 2
        })
        .await;
        (v, from)
    }
}

#[tokio::test]
async fn an_existing_ring_is_never_replaced_by_create() {
    let f = Sharded::start().await;
    assert!(
        !f.store.create(&f.ring).await.unwrap(),
        "an existing ring is never replaced by create"
    );
    assert_eq!(f.sc.ring().version, 1);
}

#[tokio::test]
async fn a_directory_lives_on_one_shard_with_its_count_and_vnodes() {
    let f = Sharded::start().await;
    let (sc, direct) = (&f.sc, &f.direct);
    let dirs = f.fill().await;
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
}

#[tokio::test]
async fn heartbeats_go_to_the_system_shard() {
    let f = Sharded::start().await;
    // The system shard is the first.
    f.put_heartbeat().await;
    f.direct[0]
        .get_object("manta_storage", "1.stor")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_batch_must_stay_on_one_shard() {
    let f = Sharded::start().await;
    let dirs = directories();
    let (c0, _) = f.sc.shard_for_hashkey(&dirs[0]);
    let other = dirs
        .iter()
        .find(|d| f.sc.shard_for_hashkey(d).0.urls() != c0.urls())
        .unwrap();
    let entry = |key: String| BatchOp::Put {
        bucket: MANTA.into(),
        key,
        value: json!({"type": "directory"}),
        options: PutOptions::any(),
    };
    let e =
        f.sc.batch(vec![
            entry(format!("{}/x", dirs[0])),
            entry(format!("{other}/x")),
        ])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    f.sc.batch(vec![
        entry(format!("{}/x", dirs[0])),
        entry(format!("{}/y", dirs[0])),
    ])
    .await
    .unwrap();
}

#[tokio::test]
async fn a_remapped_vnode_takes_new_writes_on_its_new_shard() {
    let f = Sharded::start().await;
    let (sc, direct) = (&f.sc, &f.direct);
    let dirs = f.fill().await;
    // Remap the vnode of dirs[0] to the other shard, online.
    let (_, from) = f.remap_to_the_other_shard(&dirs[0]).await;
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
}

#[tokio::test]
async fn remapping_to_an_unknown_shard_is_refused_and_changes_nothing() {
    let f = Sharded::start().await;
    let (v, _) = f.remap_to_the_other_shard(&directories()[0]).await;
    assert!(f.store.remap_vnode(v, "9").await.is_err());
    assert_eq!(f.store.load().await.unwrap().unwrap().0.version, 2);
}

#[tokio::test]
async fn a_one_shard_client_needs_no_etcd() {
    let f = Sharded::start().await;
    f.put_heartbeat().await;
    let single = ShardedClient::single(&f.s1.url()).unwrap();
    assert_eq!(single.shards().len(), 1);
    single.get_object("manta_storage", "1.stor").await.unwrap();
}

/// Writes `value` at `key` through `sc` until it is acknowledged, retrying what the fence of a
/// moving vnode refuses. Returns how many refusals it met.
async fn put_retrying(sc: &ShardedClient, key: &str, value: Value) -> u32 {
    let mut refused = 0;
    loop {
        match sc
            .put_object(MANTA, key, value.clone(), PutOptions::any())
            .await
        {
            Ok(_) => return refused,
            Err(e) if e.is_retryable() => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{key}: {e}"),
        }
    }
}

#[tokio::test]
async fn a_vnode_moves_between_shards_under_writes_and_every_acknowledged_record_is_there_once() {
    let f = Sharded::start().await;
    let dirs = f.fill().await;
    let dir = dirs[0].clone();
    let (_, vnode) = f.sc.shard_for_hashkey(&dir);
    let from = f.sc.ring().shard_index_of_vnode(vnode);
    let to = 1 - from;
    let to_name = f.ring.shards[to].name.clone();
    // Other directories of the same vnode move with it; those of other vnodes stay.
    let movers: Vec<&String> = dirs
        .iter()
        .filter(|d| f.sc.shard_for_hashkey(d).1 == vnode)
        .collect();

    // A writer keeps creating and overwriting entries of the moving directory.
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let sc = f.sc.clone();
        let dir = dir.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked = std::collections::BTreeMap::new();
            let mut refused = 0;
            let mut n = 0u32;
            while !stop.is_cancelled() {
                // New keys, and overwrites of a few.
                let key = if n % 3 == 2 {
                    format!("{dir}/w{}", n / 3)
                } else {
                    format!("{dir}/w{n}")
                };
                let v = json!({"dirname": dir, "key": key, "name": key.rsplit('/').next(), "owner": "acct", "type": "directory", "n": n});
                refused += put_retrying(&sc, &key, v.clone()).await;
                acked.insert(key, v);
                n += 1;
            }
            (acked, refused)
        })
    };
    // A reader keeps reading entries that were there before the move: never a failure.
    let reader = {
        let sc = f.sc.clone();
        let dir = dir.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut reads, mut failed) = (0u32, Vec::new());
            while !stop.is_cancelled() {
                let key = format!("{dir}/f{}", reads % 4);
                if let Err(e) = sc.get_object(MANTA, &key).await {
                    failed.push(format!("{key}: {e}"));
                }
                reads += 1;
            }
            (reads, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let opts = moray::reshard::MoveOptions {
        batch: 7,
        settle: Duration::from_millis(500),
    };
    let report = moray::reshard::move_vnode(&f.store, None, vnode, &to_name, &opts)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let (acked, refused) = writer.await.unwrap();
    let (reads, failed) = reader.await.unwrap();
    assert!(
        reads > 10 && failed.is_empty(),
        "{reads} reads, failed: {failed:?}"
    );
    assert!(
        acked.len() > 10,
        "the writer made progress: {}",
        acked.len()
    );
    assert_eq!(report.ring_version, 2);
    assert!(report.copied >= 4, "{report:?}");
    eprintln!("moved: {report:?}; the writer was refused {refused} times");

    // Every acknowledged record is on the new shard, once, with its last value; the old shard
    // has nothing of the vnode.
    let rows = |c: &MorayClient, filter: String| {
        let c = c.clone();
        async move {
            c.find_objects(
                MANTA,
                &filter,
                FindOptions {
                    limit: Some(100_000),
                    ..FindOptions::default()
                },
            )
            .await
            .unwrap()
        }
    };
    assert!(
        rows(&f.direct[from], format!("(_vnode={vnode})"))
            .await
            .is_empty()
    );
    for (key, v) in &acked {
        let got = f.sc.get_object(MANTA, key).await.unwrap();
        assert_eq!(&got.value, v, "{key}");
        let there = rows(&f.direct[to], format!("(_key={key})")).await;
        assert_eq!(there.len(), 1, "{key}");
    }
    let mut total = 0;
    for d in &movers {
        let entries = rows(&f.direct[to], format!("(dirname={d})")).await;
        let expected = if **d == dir { 4 + acked.len() } else { 4 };
        total += expected as u64;
        assert_eq!(entries.len(), expected, "{d}");
        // The entry count moved with the entries, and left the old shard.
        let count = f.direct[to]
            .get_object("manta_directory_counts", d)
            .await
            .unwrap();
        assert_eq!(count.value["entries"], json!(expected), "{d}");
        assert!(matches!(
            f.direct[from].get_object("manta_directory_counts", d).await,
            Err(Error::ObjectNotFound { .. })
        ));
    }
    // A client still on the old ring is refused by the old shard, retryably; nothing lands.
    let stale = ShardedClient::from_ring(f.ring.clone()).unwrap();
    let e = stale
        .put_object(
            MANTA,
            &format!("{dir}/late"),
            json!({"dirname": dir}),
            PutOptions::any(),
        )
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        rows(&f.direct[from], format!("(_vnode={vnode})"))
            .await
            .is_empty()
    );
    // Moving it back works the same way (the old fence is lifted).
    let back = moray::reshard::move_vnode(&f.store, None, vnode, &f.ring.shards[from].name, &opts)
        .await
        .unwrap();
    assert_eq!(back.copied, total, "{back:?}");
    assert_eq!(back.purged, total, "{back:?}");
    let got = f.direct[from]
        .get_object(MANTA, acked.keys().next().unwrap())
        .await
        .unwrap();
    assert_eq!(&got.value, acked.values().next().unwrap());
}
