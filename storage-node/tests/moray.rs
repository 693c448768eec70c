//! The storage node against a real Moray (run in-process from the moray crate) over a real
//! PostgreSQL: capacity heartbeats, garbage collection with SnapLinks, tombstone expiry, and
//! quarantine records.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::time::Duration;

use common::*;
use moray::{MorayClient, PutOptions};
use serde_json::{Value, json};
use storage_api::ObjectKey;
use storage_node::MorayConfig;
use storage_node::gc::{Gc, GcConfig};
use testkit::TestPostgres;
use tokio_util::sync::CancellationToken;

const ME: &str = "1.stor.test";
const OTHER: &str = "2.stor.test";

struct Env {
    _pg: TestPostgres,
    moray: moray::server::RunningServer,
    mc: MorayClient,
}

async fn env() -> Env {
    let pg = TestPostgres::start().await.unwrap();
    let moray = moray::server::spawn(moray::server::Config::for_postgres(pg.url()))
        .await
        .unwrap();
    let mc = moray.client().unwrap();
    moray::schema::setup_manta_buckets(&mc).await.unwrap();
    Env { _pg: pg, moray, mc }
}

impl Env {
    /// Starts a node named [`ME`] in datacenter `dc` that reports to this Moray; `tweak`
    /// adjusts its config further.
    async fn node(&self, dc: &str, tweak: impl FnOnce(&mut storage_node::Config)) -> Node {
        let url = self.moray.url();
        Node::start(|c| {
            c.storage_id = ME.into();
            c.datacenter = dc.into();
            c.moray = Some(MorayConfig::Single(url));
            tweak(c);
        })
        .await
    }
}

/// A `manta` record of an object with copies on `sharks`.
fn record(acct: &uuid::Uuid, name: &str, k: &ObjectKey, sharks: &[&str]) -> Value {
    let dir = format!("/{acct}/stor");
    json!({
        "dirname": dir,
        "key": format!("{dir}/{name}"),
        "name": name,
        "owner": acct.to_string(),
        "creator": k.owner.to_string(),
        "type": "object",
        "objectId": k.id.to_string(),
        "etag": k.id.to_string(),
        "contentLength": 10,
        "contentMD5": "",
        "contentType": "application/octet-stream",
        "mtime": manta_types::time::now_ms(),
        "headers": {},
        "roles": [],
        "sharks": sharks.iter().enumerate().map(|(i, s)| json!({"datacenter": format!("dc{i}"), "manta_storage_id": s})).collect::<Vec<_>>(),
    })
}

/// The garbage collector of node `n` under `storage_id`, taking entries older than `min_age`.
fn gc_of(e: &Env, n: &Node, storage_id: &str, min_age: Option<Duration>) -> Gc {
    let mut config = GcConfig::default();
    if let Some(min_age) = min_age {
        config.min_age = min_age;
    }
    Gc {
        store: n.store.clone(),
        moray: moray::ShardedClient::single(&e.moray.url()).unwrap(),
        storage_id: storage_id.into(),
        config,
        metrics: n.metrics.clone(),
    }
}

/// Polls `bucket` for records matching `filter` (for up to ten seconds) until there are some.
async fn wait_for_records(
    mc: &MorayClient,
    bucket: &str,
    filter: &str,
) -> Vec<moray::ObjectRecord> {
    let mut found = Vec::new();
    for _ in 0..200 {
        found = mc
            .find_objects(bucket, filter, moray::FindOptions::default())
            .await
            .unwrap_or_default();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    found
}

/// Deletes the `manta` record `name` of account `acct`.
async fn del(mc: &MorayClient, acct: &uuid::Uuid, name: &str) {
    mc.del_object("manta", &format!("/{acct}/stor/{name}"), Default::default())
        .await
        .unwrap();
}

async fn log_entries(mc: &MorayClient, id: &ObjectKey) -> Vec<moray::ObjectRecord> {
    mc.find_objects(
        moray::schema::DELETE_LOG,
        &format!("(objectId={})", id.id),
        moray::FindOptions::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn gc_keeps_snaplinked_bytes_and_tombstones_the_rest() {
    let e = env().await;
    let node = e
        .node("dc1", |c| {
            // Background GC out of the way: this test runs passes itself.
            c.gc.interval = Duration::from_secs(3600);
        })
        .await;
    let gc = gc_of(&e, &node, ME, Some(Duration::from_millis(800)));
    let acct = uuid::Uuid::new_v4();
    let linked = ObjectKey {
        owner: acct,
        ..key()
    };
    let lone = ObjectKey {
        owner: acct,
        ..key()
    };
    let moved = ObjectKey {
        owner: acct,
        ..key()
    };
    for k in [linked, lone, moved] {
        node.put(&k, data(10_000, 1)).await;
    }
    let put = |name: &str, k: ObjectKey, sharks: &[&str]| {
        let mc = e.mc.clone();
        let key = format!("/{acct}/stor/{name}");
        let v = record(&acct, name, &k, sharks);
        async move {
            mc.put_object("manta", &key, v, PutOptions::any())
                .await
                .unwrap()
        }
    };
    put("a", linked, &[ME, OTHER]).await;
    put("link-to-a", linked, &[ME, OTHER]).await; // a SnapLink: same object id
    put("b", lone, &[ME]).await;
    // Repair moved c's copy from this node to another: the record stays, naming other nodes.
    put("c", moved, &[ME, OTHER]).await;
    put("c", moved, &[OTHER, "3.stor"]).await;
    assert_eq!(
        log_entries(&e.mc, &moved).await[0].value["sharks"],
        json!([ME])
    );
    del(&e.mc, &acct, "a").await;
    del(&e.mc, &acct, "b").await;
    assert_eq!(log_entries(&e.mc, &linked).await.len(), 1);
    assert_eq!(log_entries(&e.mc, &lone).await.len(), 1);

    // Too young: nothing happens.
    let r = gc.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(r.entries, 0, "{r:?}");
    assert!(node.client.head(&lone).await.is_ok());

    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = gc.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(r.entries, 3, "{r:?}");
    assert_eq!(r.tombstoned, 2, "{r:?}");
    assert_eq!(r.still_referenced, 1, "{r:?}");
    assert!(
        is_missing(&node.client, &moved).await,
        "a copy no record names here"
    );
    // The lone object is gone from service, kept in today's tombstone; its entry is gone.
    assert!(is_missing(&node.client, &lone).await);
    let day = storage_node::store::day_of(manta_types::time::now_ms());
    assert!(
        node.root
            .join("tombstone")
            .join(&day)
            .join(lone.rel_path())
            .is_file()
    );
    assert!(log_entries(&e.mc, &lone).await.is_empty());
    // The linked object's bytes stay; only this node left the entry.
    assert!(node.client.head(&linked).await.is_ok());
    let entries = log_entries(&e.mc, &linked).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].value["sharks"], json!([OTHER]));

    // The link goes too: now nothing references the bytes.
    del(&e.mc, &acct, "link-to-a").await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = gc.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(r.tombstoned, 1, "{r:?}");
    assert!(is_missing(&node.client, &linked).await);
    // Both entries of that object now only name the other node.
    for entry in log_entries(&e.mc, &linked).await {
        assert_eq!(entry.value["sharks"], json!([OTHER]), "{entry:?}");
    }
    // A pass with nothing to do does nothing.
    let r = gc.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(r.entries, 0, "{r:?}");
    let metrics = testkit::metrics(&node.url).await;
    assert!(
        metrics.contains("storage_gc_tombstoned_total 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn gc_racing_nodes_both_leave_the_entry_and_it_is_deleted() {
    let e = env().await;
    let acct = uuid::Uuid::new_v4();
    let k = ObjectKey {
        owner: acct,
        ..key()
    };
    let a = Node::start(|c| c.storage_id = ME.into()).await;
    let b = Node::start(|c| c.storage_id = OTHER.into()).await;
    for n in [&a, &b] {
        n.put(&k, "bytes").await;
    }
    e.mc.put_object(
        "manta",
        &format!("/{acct}/stor/x"),
        record(&acct, "x", &k, &[ME, OTHER]),
        PutOptions::any(),
    )
    .await
    .unwrap();
    del(&e.mc, &acct, "x").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let min_age = Some(Duration::from_millis(500));
    let (ga, gb) = (gc_of(&e, &a, ME, min_age), gc_of(&e, &b, OTHER, min_age));
    let cancel = CancellationToken::new();
    let (ra, rb) = tokio::join!(ga.pass(&cancel), gb.pass(&cancel));
    assert_eq!(ra.unwrap().tombstoned, 1);
    assert_eq!(rb.unwrap().tombstoned, 1);
    assert!(
        log_entries(&e.mc, &k).await.is_empty(),
        "the entry is deleted once no node is left in it"
    );
}

#[tokio::test]
async fn old_tombstones_are_deleted_after_the_grace_period() {
    let e = env().await;
    let node = Node::start(|_| {}).await;
    let old = node.root.join("tombstone/2001-02-03/o");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("x"), b"x").unwrap();
    let today = node
        .root
        .join("tombstone")
        .join(storage_node::store::day_of(manta_types::time::now_ms()));
    std::fs::create_dir_all(&today).unwrap();
    let gc = gc_of(&e, &node, ME, None);
    let r = gc.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(r.tombstone_days_removed, vec!["2001-02-03".to_owned()]);
    assert!(!old.exists());
    assert!(
        today.exists(),
        "today's tombstones are within the grace period"
    );
}

#[tokio::test]
async fn heartbeats_reach_manta_storage() {
    let e = env().await;
    let node = e
        .node("east-1", |c| {
            c.heartbeat_interval = Duration::from_millis(200);
        })
        .await;
    let mut first = None;
    for _ in 0..100 {
        if let Ok(r) = e.mc.get_object(moray::schema::STORAGE, ME).await {
            first = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = first.expect("a heartbeat arrived");
    let v = &first.value;
    assert_eq!(v["manta_storage_id"], ME);
    assert_eq!(v["datacenter"], "east-1");
    assert_eq!(v["url"], node.url.as_str());
    assert_eq!(v["kind"], "dir");
    assert!(v["availableMB"].as_u64().unwrap() > 0);
    assert!(v["percentUsed"].as_u64().unwrap() <= 100);
    assert!(!v["hostname"].as_str().unwrap().is_empty());
    assert!(!v["filesystem"].as_str().unwrap().is_empty());
    let ts = v["timestamp"].as_u64().unwrap();
    assert!(ts.abs_diff(manta_types::time::now_ms()) < 60_000);
    // Found by the front door's kind of query, and refreshed.
    let found =
        e.mc.find_objects(
            moray::schema::STORAGE,
            "(&(percentUsed<=100)(availableMB>=1))",
            moray::FindOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let mut refreshed = false;
    for _ in 0..100 {
        let r = e.mc.get_object(moray::schema::STORAGE, ME).await.unwrap();
        if r.value["timestamp"].as_u64().unwrap() > ts {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refreshed, "the heartbeat is repeated");
}

#[tokio::test]
async fn scrub_records_quarantined_copies_in_moray() {
    let e = env().await;
    let node = e
        .node("west-2", |c| {
            c.scrub = Some(storage_node::scrub::ScrubConfig {
                rate_bytes_per_sec: 0,
                interval: Duration::from_millis(200),
            });
        })
        .await;
    let k = key();
    let body = data(40_000, 5);
    node.put(&k, body.clone()).await;
    // Flip one byte behind the node's back.
    use std::os::unix::fs::FileExt as _;
    node.open_object(&k)
        .write_all_at(&[body[777] ^ 0x80], 777)
        .unwrap();
    // The background scrub finds it and records it in Moray.
    let found = wait_for_records(
        &e.mc,
        storage_node::quarantine::BUCKET,
        &format!("(manta_storage_id={ME})"),
    )
    .await;
    assert_eq!(found.len(), 1, "no quarantine record arrived");
    let v = &found[0].value;
    assert_eq!(v["objectId"], k.id.to_string());
    assert_eq!(v["owner"], k.owner.to_string());
    assert_eq!(v["datacenter"], "west-2");
    assert!(v["reason"].as_str().unwrap().contains("CRC32C"), "{v}");
    assert_eq!(found[0].key, format!("/{ME}/{}/{}", k.owner, k.id));
    assert!(is_quarantined(&node.client, &k).await);
}

#[tokio::test]
async fn copies_quarantined_on_read_are_recorded_even_without_scrub() {
    let e = env().await;
    let node = e
        .node("dc1", |c| {
            c.scrub = None;
            c.gc.interval = Duration::from_millis(200);
        })
        .await;
    let k = key();
    node.put(&k, data(4000, 6)).await;
    node.truncate_object(&k, 3);
    assert!(is_quarantined(&node.client, &k).await);
    let found = wait_for_records(
        &e.mc,
        storage_node::quarantine::BUCKET,
        &format!("(objectId={})", k.id),
    )
    .await;
    assert_eq!(found.len(), 1, "no quarantine record arrived");
    assert!(
        found[0].value["reason"]
            .as_str()
            .unwrap()
            .contains("3 bytes"),
        "{}",
        found[0].value
    );
}
