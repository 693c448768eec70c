//! The object store's buckets and triggers: directory counts and the delete log, including
//! under concurrent writers.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;

use common::{Env, bucket_names, delete_op, put, put_op};
use manta_types::{DirectoryInfo, EntryKind, MetadataRecord, ObjectId, ObjectInfo, SharkRef};
use moray::schema::{DELETE_LOG, DIRECTORY_COUNTS, MANTA, setup_manta_buckets};
use moray::types::*;
use moray::{Error, MorayClient};
use serde_json::{Value, json};

fn object(key: &str, sharks: &[&str]) -> (MetadataRecord, ObjectId) {
    let id = ObjectId::random();
    let (dirname, name) = key.rsplit_once('/').unwrap();
    let rec = MetadataRecord {
        version: 1,
        dirname: dirname.to_owned(),
        key: key.to_owned(),
        name: name.to_owned(),
        owner: "acct".into(),
        creator: "creator-acct".into(),
        mtime: 1,
        headers: BTreeMap::new(),
        roles: vec![],
        kind: EntryKind::Object(ObjectInfo {
            content_length: 5,
            content_md5: "x".into(),
            content_type: "text/plain".into(),
            content_disposition: None,
            etag: id.to_string(),
            object_id: id,
            sharks: sharks
                .iter()
                .map(|s| SharkRef {
                    datacenter: "dc1".into(),
                    manta_storage_id: (*s).to_owned(),
                })
                .collect(),
            created_from: None,
            sha256: None,
            crc32c: None,
            parts: None,
        }),
        request_id: None,
        version_id: None,
    };
    (rec, id)
}

fn directory(key: &str) -> MetadataRecord {
    let (dirname, name) = key.rsplit_once('/').unwrap();
    MetadataRecord {
        version: 1,
        dirname: dirname.to_owned(),
        key: key.to_owned(),
        name: name.to_owned(),
        owner: "acct".into(),
        creator: "acct".into(),
        mtime: 1,
        headers: BTreeMap::new(),
        roles: vec![],
        kind: EntryKind::Directory(DirectoryInfo::default()),
        request_id: None,
        version_id: None,
    }
}

async fn count(c: &MorayClient, dir: &str) -> Option<i64> {
    match c.get_object(DIRECTORY_COUNTS, dir).await {
        Ok(r) => Some(r.value["entries"].as_i64().unwrap()),
        Err(Error::ObjectNotFound { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

async fn log_entries(c: &MorayClient, filter: &str) -> Vec<ObjectRecord> {
    let opts = FindOptions {
        limit: Some(100_000),
        sort: vec![Sort::asc("_id")],
        ..Default::default()
    };
    c.find_objects(DELETE_LOG, filter, opts).await.unwrap()
}

/// Stores `rec` in the manta bucket at its key, unconditionally.
async fn put_record(c: &MorayClient, rec: &MetadataRecord) {
    put(c, MANTA, &rec.key, rec.to_value()).await;
}

/// A batch operation that stores `rec` in the manta bucket at its key, unconditionally.
fn record_op(rec: &MetadataRecord) -> BatchOp {
    put_op(MANTA, &rec.key, rec.to_value(), PutOptions::any())
}

#[tokio::test]
async fn setup_is_idempotent_and_concurrent_safe() {
    let env = Env::start().await;
    let c = &env.client;
    let (a, b) = (c.clone(), c.clone());
    let (ra, rb) = tokio::join!(setup_manta_buckets(&a), setup_manta_buckets(&b));
    ra.unwrap();
    rb.unwrap();
    setup_manta_buckets(c).await.unwrap();
    assert_eq!(
        bucket_names(c).await,
        vec![
            "manta",
            "manta_access_spool",
            "manta_delete_log",
            "manta_directory_counts",
            "manta_repair",
            "manta_storage",
            "manta_storage_states",
            "manta_uploads"
        ]
    );
    let m = c.get_bucket(MANTA).await.unwrap();
    assert_eq!(m.post, vec!["manta_dircount", "manta_delete_log"]);
    assert_eq!(m.index.len(), 5);
    let log = c.get_bucket(DELETE_LOG).await.unwrap();
    assert_eq!(log.index["sharks"].kind, IndexType::StringArray);
    // The array index is a GIN index on a Postgres array.
    let pg = env.sql().await;
    let row = pg
        .query_one(
            "SELECT am.amname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_am am ON am.oid = c.relam WHERE c.relname = 'manta_delete_log_sharks_idx'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "gin");
    // The storage heartbeat bucket takes the storage nodes' records.
    let hb = json!({"manta_storage_id": "1.stor", "datacenter": "dc1", "availableMB": 1000,
                    "percentUsed": 12, "timestamp": 1_700_000_000_000u64, "url": "http://x"});
    put(c, "manta_storage", "1.stor", hb).await;
    let found = c
        .find_objects(
            "manta_storage",
            "(&(percentUsed<=90)(timestamp>=1))",
            FindOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn directory_counts_follow_creates_and_deletes() {
    let env = Env::with_manta_buckets().await;
    let c = &env.client;
    let d = "/acct/stor/d";
    put_record(c, &directory(d)).await;
    assert_eq!(count(c, "/acct/stor").await, Some(1));
    for i in 0..3 {
        put_record(c, &object(&format!("{d}/f{i}"), &["1.stor"]).0).await;
    }
    assert_eq!(count(c, d).await, Some(3));
    // Overwrite: unchanged.
    put_record(c, &object(&format!("{d}/f0"), &["2.stor"]).0).await;
    assert_eq!(count(c, d).await, Some(3));
    // A failed conditional write changes nothing.
    let e = c
        .put_object(
            MANTA,
            &format!("{d}/f1"),
            object("/x/y", &[]).0.to_value(),
            PutOptions::must_not_exist(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::EtagConflict { .. }));
    assert_eq!(count(c, d).await, Some(3));
    c.del_object(MANTA, &format!("{d}/f0"), DelOptions::default())
        .await
        .unwrap();
    assert_eq!(count(c, d).await, Some(2));
    c.delete_many(MANTA, &format!("(dirname={d})"), None)
        .await
        .unwrap();
    assert_eq!(
        count(c, d).await,
        None,
        "the row goes when the count reaches 0"
    );
    // Counts are findable by the entries index.
    assert_eq!(
        c.find_objects(DIRECTORY_COUNTS, "(entries>=1)", FindOptions::default())
            .await
            .unwrap()
            .len(),
        1
    );
    // A batch touching several directories counts each exactly.
    let ops: Vec<BatchOp> = (0..6)
        .map(|i| record_op(&object(&format!("/acct/stor/b{}/f{i}", i % 2), &[]).0))
        .collect();
    c.batch(ops).await.unwrap();
    assert_eq!(count(c, "/acct/stor/b0").await, Some(3));
    assert_eq!(count(c, "/acct/stor/b1").await, Some(3));
}

#[tokio::test]
async fn delete_log_records_replaced_and_deleted_objects() {
    let env = Env::with_manta_buckets().await;
    let c = &env.client;
    let key = "/acct/stor/obj";
    let (v1, id1) = object(key, &["1.stor", "2.stor"]);
    put_record(c, &v1).await;
    assert!(
        log_entries(c, "(objectId=*)").await.is_empty(),
        "a create logs nothing"
    );

    // Metadata-only change (same object id): nothing to collect.
    let mut same = v1.clone();
    same.headers.insert("m-x".into(), "y".into());
    put_record(c, &same).await;
    assert!(log_entries(c, "(objectId=*)").await.is_empty());

    // Repair moved the copy on 2.stor to 4.stor: only 2.stor's copy is garbage, and a later
    // move back is logged the same way.
    let moved = |from: &MetadataRecord, sharks: &[&str]| {
        let mut r = from.clone();
        if let EntryKind::Object(o) = &mut r.kind {
            o.sharks = sharks
                .iter()
                .map(|s| SharkRef {
                    datacenter: "dc1".into(),
                    manta_storage_id: (*s).to_owned(),
                })
                .collect();
        }
        r
    };
    put_record(c, &moved(&same, &["1.stor", "4.stor"])).await;
    let log = log_entries(c, "(objectId=*)").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].value["sharks"], json!(["2.stor"]));
    assert_eq!(log[0].value["objectId"], id1.to_string());
    c.del_object(DELETE_LOG, &log[0].key, DelOptions::default())
        .await
        .unwrap();
    put_record(c, &same).await;
    let log = log_entries(c, "(objectId=*)").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].value["sharks"], json!(["4.stor"]));
    c.del_object(DELETE_LOG, &log[0].key, DelOptions::default())
        .await
        .unwrap();

    // Overwrite with new bytes: the old object id is logged.
    let (v2, id2) = object(key, &["3.stor"]);
    put_record(c, &v2).await;
    let log = log_entries(c, "(objectId=*)").await;
    assert_eq!(log.len(), 1);
    let e = &log[0];
    assert!(e.key.starts_with(&format!("/{id1}/")), "{}", e.key);
    assert_eq!(e.value["objectId"], id1.to_string());
    assert_eq!(e.value["creator"], "creator-acct");
    assert_eq!(e.value["key"], key);
    assert_eq!(e.value["sharks"], json!(["1.stor", "2.stor"]));
    assert!(e.value["deletedAt"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(
        MetadataRecord::from_value(e.value["prev"].clone()).unwrap(),
        same
    );
    // Each storage node finds its share through the array index.
    assert_eq!(log_entries(c, "(sharks=2.stor)").await.len(), 1);
    assert!(log_entries(c, "(sharks=3.stor)").await.is_empty());

    // Replaced by a directory: logged.
    put_record(c, &directory(key)).await;
    let log = log_entries(c, &format!("(objectId={id2})")).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].value["sharks"], json!(["3.stor"]));
    // Deleting a directory, or a zero-byte object (no copies), logs nothing.
    c.del_object(MANTA, key, DelOptions::default())
        .await
        .unwrap();
    let (empty, _) = object("/acct/stor/empty", &[]);
    put_record(c, &empty).await;
    c.del_object(MANTA, "/acct/stor/empty", DelOptions::default())
        .await
        .unwrap();
    assert_eq!(log_entries(c, "(objectId=*)").await.len(), 2);

    // Deleting an object logs it; two links to one object deleted in one batch get two
    // distinct entries.
    let (l1, id3) = object("/acct/stor/l1", &["1.stor"]);
    let mut l2 = l1.clone();
    l2.key = "/acct/stor/l2".into();
    l2.name = "l2".into();
    put_record(c, &l1).await;
    put_record(c, &l2).await;
    c.batch(vec![delete_op(MANTA, &l1.key), delete_op(MANTA, &l2.key)])
        .await
        .unwrap();
    let log = log_entries(c, &format!("(objectId={id3})")).await;
    assert_eq!(log.len(), 2);
    assert_ne!(log[0].key, log[1].key);
    // The GC's conditional shrink of an entry's sharks works like any record.
    let entry = &log[0];
    let mut v = entry.value.clone();
    v["sharks"] = json!([]);
    c.put_object(DELETE_LOG, &entry.key, v, PutOptions::if_match(&entry.etag))
        .await
        .unwrap();
    assert_eq!(
        log_entries(c, &format!("(&(objectId={id3})(sharks=1.stor))"))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn triggers_roll_back_with_their_write() {
    let env = Env::with_manta_buckets().await;
    let c = &env.client;
    let (v1, _) = object("/acct/stor/x/a", &["1.stor"]);
    put_record(c, &v1).await;
    let (v2, _) = object("/acct/stor/x/b", &["1.stor"]);
    let (v3, _) = object("/acct/stor/x/a", &["2.stor"]);
    // New key b (+1), overwrite of a (log), then a failing op: none of it may stick.
    let e = c
        .batch(vec![
            record_op(&v2),
            record_op(&v3),
            delete_op(MANTA, "/acct/stor/x/none"),
        ])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ObjectNotFound { .. }));
    assert_eq!(count(c, "/acct/stor/x").await, Some(1));
    assert!(log_entries(c, "(objectId=*)").await.is_empty());
}

#[tokio::test]
async fn counts_and_delete_log_stay_exact_under_concurrency() {
    let env = Env::with_manta_buckets().await;
    let c = &env.client;
    let dirs = ["/acct/stor/c0", "/acct/stor/c1", "/acct/stor/c2"];
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            // A small deterministic generator per task.
            let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let (mut puts_ok, mut dels_ok) = (0u64, 0u64);
            for _ in 0..40 {
                let dir = dirs[(next() % 3) as usize];
                let key = format!("{dir}/f{}", next() % 6);
                match next() % 5 {
                    0 | 1 => {
                        // Every put has a fresh object id, so every overwrite logs one entry.
                        let (rec, _) = object(&key, &["1.stor"]);
                        put(&c, MANTA, &key, rec.to_value()).await;
                        puts_ok += 1;
                    }
                    2 => {
                        let (rec, _) = object(&key, &["2.stor"]);
                        match c
                            .put_object(MANTA, &key, rec.to_value(), PutOptions::must_not_exist())
                            .await
                        {
                            Ok(_) => puts_ok += 1,
                            Err(Error::EtagConflict { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    3 => match c.del_object(MANTA, &key, DelOptions::default()).await {
                        Ok(()) => dels_ok += 1,
                        Err(Error::ObjectNotFound { .. }) => {}
                        Err(e) => panic!("{e}"),
                    },
                    _ => {
                        let r = c
                            .delete_many(
                                MANTA,
                                &format!("(&(dirname={dir})(name=f{}))", next() % 6),
                                None,
                            )
                            .await
                            .unwrap();
                        dels_ok += r.count;
                    }
                }
            }
            (puts_ok, dels_ok)
        }));
    }
    let (mut puts, mut dels) = (0, 0);
    for t in tasks {
        let (p, d) = t.await.unwrap();
        puts += p;
        dels += d;
    }
    let mut total_keys = 0;
    for dir in dirs {
        let entries = c
            .find_objects(
                MANTA,
                &format!("(dirname={dir})"),
                FindOptions {
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let n = entries.len() as i64;
        total_keys += n;
        assert_eq!(count(c, dir).await.unwrap_or(0), n, "count of {dir}");
        if let Some(first) = entries.first() {
            assert_eq!(first.count, Some(n as u64));
        }
    }
    // Every successful put either created a key or replaced one (logging the old object);
    // every successful delete logged its object. So entries = puts - creations + deletes,
    // and creations = keys now + deletes.
    let logged = log_entries(c, "(objectId=*)").await.len() as i64;
    eprintln!("concurrency: puts {puts}, deletes {dels}, keys {total_keys}, logged {logged}");
    assert_eq!(
        logged,
        puts as i64 - total_keys,
        "puts {puts}, deletes {dels}, keys {total_keys}"
    );
    assert!(dels > 0 && puts > 0);
    // Every log entry is well-formed.
    for e in log_entries(c, "(objectId=*)").await {
        let v: &Value = &e.value;
        assert!(
            e.key
                .starts_with(&format!("/{}/", v["objectId"].as_str().unwrap()))
        );
        assert_eq!(v["sharks"].as_array().unwrap().len(), 1);
    }
}
