//! Every RPC and its errors, over HTTP against a real Postgres.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Env, bucket_names, delete_op, find_err, put, put_op};
use moray::types::*;
use moray::{Error, MorayClient};
use serde_json::{Value, json};

fn cfg() -> BucketConfig {
    BucketConfig::new(1)
        .with_index("name", IndexSpec::new(IndexType::String))
        .with_index("size", IndexSpec::new(IndexType::Number))
        .with_index("hot", IndexSpec::new(IndexType::Boolean))
        .with_index("tags", IndexSpec::new(IndexType::StringArray))
        .with_index("email", IndexSpec::unique(IndexType::String))
}

async fn raw(client: &MorayClient, method: &str, body: &str) -> (u16, Value) {
    let url = format!("{}/{method}", client.urls()[0]);
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-request-id", "test-req-1")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["x-request-id"], "test-req-1");
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn buckets_create_get_list_delete() {
    let env = Env::start().await;
    let c = &env.client;
    let b = c.create_bucket("things", cfg()).await.unwrap();
    assert_eq!(b.name, "things");
    assert_eq!(b.index["email"], IndexSpec::unique(IndexType::String));
    assert_eq!(c.get_bucket("things").await.unwrap().config(), cfg());
    assert!(matches!(
        c.create_bucket("things", cfg()).await,
        Err(Error::BucketConflict { .. })
    ));
    c.create_bucket("others", BucketConfig::new(0))
        .await
        .unwrap();
    assert_eq!(bucket_names(c).await, vec!["others", "things"]);
    put(c, "things", "k", json!({"name": "x"})).await;
    c.del_bucket("things").await.unwrap();
    assert!(matches!(
        c.get_bucket("things").await,
        Err(Error::BucketNotFound { .. })
    ));
    assert!(matches!(
        c.get_object("things", "k").await,
        Err(Error::BucketNotFound { .. })
    ));
    assert!(matches!(
        c.del_bucket("things").await,
        Err(Error::BucketNotFound { .. })
    ));
    // Gone from Postgres too.
    let pg = env.sql().await;
    let n: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'things'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // put_bucket is idempotent and creates what is missing.
    c.put_bucket("things", cfg()).await.unwrap();
    c.put_bucket("things", cfg()).await.unwrap();
    assert_eq!(c.get_bucket("things").await.unwrap().options.version, 1);
}

#[tokio::test]
async fn bad_bucket_names_and_configs_are_refused() {
    let env = Env::start().await;
    let c = &env.client;
    for name in [
        "",
        "1abc",
        "a-b",
        "x\"; DROP TABLE buckets_config; --",
        "moray_x",
        "buckets_config",
    ] {
        let e = c
            .create_bucket(name, BucketConfig::new(1))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidBucketName { .. }),
            "{name}: {e:?}"
        );
        assert_eq!(e.http_status(), 400);
    }
    let bad = BucketConfig::new(1).with_index("a\"b", IndexSpec::new(IndexType::String));
    assert!(matches!(
        c.create_bucket("b1", bad).await,
        Err(Error::InvalidBucketConfig { .. })
    ));
    assert!(matches!(
        c.create_bucket("b1", BucketConfig::new(1).with_post("no_such_trigger"))
            .await,
        Err(Error::InvalidBucketConfig { .. })
    ));
    // An unknown index type never reaches the server's logic: the body is refused as a whole.
    let (status, body) = raw(
        c,
        "createBucket",
        r#"{"name": "b2", "config": {"index": {"a": {"type": "blob"}}}}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["name"], "InvalidArgumentError");
    assert!(body["message"].as_str().unwrap().contains("blob"));
    assert!(c.list_buckets().await.unwrap().is_empty());
    // The catalog survived the injection attempt.
    let pg = env.sql().await;
    pg.query_one("SELECT count(*) FROM buckets_config", &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn objects_put_get_delete_with_etags() {
    let env = Env::with_bucket("b", cfg()).await;
    let c = &env.client;
    let v = json!({"name": "n1", "size": 10, "nested": {"deep": [1, 2, 3]}, "unicode": "é漢"});
    let first = put(c, "b", "/a/k1", v.clone()).await;
    let want_etag = format!(
        "{:08X}",
        crc32fast_hash(&serde_json::to_string(&v).unwrap())
    );
    assert_eq!(first.etag, want_etag);
    let got = c.get_object("b", "/a/k1").await.unwrap();
    assert_eq!(got.value, v);
    assert_eq!(got.etag, first.etag);
    assert_eq!((got.bucket.as_str(), got.key.as_str()), ("b", "/a/k1"));
    assert!(got.mtime > 1_600_000_000_000);
    assert!(got.id > 0);

    // Must-not-exist on an existing key.
    let e = c
        .put_object("b", "/a/k1", json!({}), PutOptions::must_not_exist())
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::EtagConflict {
            bucket: "b".into(),
            key: "/a/k1".into(),
            expected: None,
            actual: Some(first.etag.clone())
        }
    );
    assert_eq!(e.http_status(), 409);
    // Wrong etag.
    let e = c
        .put_object("b", "/a/k1", json!({}), PutOptions::if_match("DEADBEEF"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::EtagConflict { expected: Some(x), actual: Some(a), .. } if x == "DEADBEEF" && *a == first.etag),
        "{e:?}"
    );
    // Etag on a missing key.
    let e = c
        .put_object("b", "/a/nope", json!({}), PutOptions::if_match("DEADBEEF"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::EtagConflict { actual: None, .. }),
        "{e:?}"
    );
    // Nothing changed.
    assert_eq!(c.get_object("b", "/a/k1").await.unwrap().value, v);
    // Right etag replaces; the id moves on.
    let put2 = c
        .put_object(
            "b",
            "/a/k1",
            json!({"name": "n2"}),
            PutOptions::if_match(&first.etag),
        )
        .await
        .unwrap();
    assert_ne!(put2.etag, first.etag);
    let got2 = c.get_object("b", "/a/k1").await.unwrap();
    assert!(got2.id > got.id);
    assert_eq!(got2.value, json!({"name": "n2"}));

    // Deletes.
    let e = c
        .del_object("b", "/a/k1", DelOptions::if_match(&first.etag))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::EtagConflict { .. }));
    c.get_object("b", "/a/k1").await.unwrap();
    c.del_object("b", "/a/k1", DelOptions::if_match(&put2.etag))
        .await
        .unwrap();
    let e = c.get_object("b", "/a/k1").await.unwrap_err();
    assert_eq!(
        e,
        Error::ObjectNotFound {
            bucket: "b".into(),
            key: "/a/k1".into()
        }
    );
    assert_eq!(e.http_status(), 404);
    assert!(matches!(
        c.del_object("b", "/a/k1", DelOptions::default()).await,
        Err(Error::ObjectNotFound { .. })
    ));
    assert!(matches!(
        c.put_object("nobucket", "k", json!({}), PutOptions::any())
            .await,
        Err(Error::BucketNotFound { .. })
    ));
}

fn crc32fast_hash(s: &str) -> u32 {
    // Reference CRC-32 (IEEE), bit by bit, independent of the server's implementation.
    let mut crc = 0xFFFF_FFFFu32;
    for b in s.bytes() {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let env = Env::with_bucket("b", cfg()).await;
    let c = &env.client;
    let e = c
        .put_object("b", "k", json!([1, 2]), PutOptions::any())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    let e = c
        .put_object("b", "", json!({}), PutOptions::any())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    let (status, body) = raw(c, "putObject", "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["name"], "InvalidArgumentError");
    assert!(body.get("context").is_some());
    let (status, body) = raw(c, "getObject", r#"{"bucket": "b"}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = raw(c, "getObject", r#"{"bucket": "b", "key": "missing"}"#).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"name": "ObjectNotFoundError", "message": "b::missing does not exist", "context": {"bucket": "b", "key": "missing"}})
    );
    // A number index given a value that is not a number stores NULL (the record is kept).
    put(c, "b", "k2", json!({"size": "big"})).await;
    assert_eq!(c.get_object("b", "k2").await.unwrap().value["size"], "big");
    let found = c
        .find_objects("b", "(size>=0)", FindOptions::default())
        .await
        .unwrap();
    assert!(found.is_empty());
    // An unknown method.
    let (status, _) = raw(c, "frobnicate", "{}").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unique_indexes_are_enforced() {
    let env = Env::with_bucket("b", cfg()).await;
    let c = &env.client;
    put(c, "b", "u1", json!({"email": "a@x"})).await;
    let e = c
        .put_object("b", "u2", json!({"email": "a@x"}), PutOptions::any())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::UniqueAttribute { bucket, .. } if bucket == "b"),
        "{e:?}"
    );
    assert_eq!(e.http_status(), 409);
    assert!(matches!(
        c.get_object("b", "u2").await,
        Err(Error::ObjectNotFound { .. })
    ));
    // Overwriting the holder with the same value is fine.
    put(c, "b", "u1", json!({"email": "a@x", "v": 2})).await;
}

#[tokio::test]
async fn exactly_one_of_many_racing_creates_wins() {
    let env = Env::with_bucket("b", BucketConfig::new(1)).await;
    let c = &env.client;
    for round in 0..3 {
        let key = format!("race{round}");
        let mut tasks = Vec::new();
        for i in 0..16 {
            let c = c.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                c.put_object(
                    "b",
                    &key,
                    json!({"writer": i}),
                    PutOptions::must_not_exist(),
                )
                .await
            }));
        }
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(p) => winners.push((i, p.etag)),
                Err(Error::EtagConflict {
                    expected: None,
                    actual: Some(_),
                    ..
                }) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let got = c.get_object("b", &key).await.unwrap();
        assert_eq!(got.value["writer"], winners[0].0);
        assert_eq!(got.etag, winners[0].1);
    }
}

#[tokio::test]
async fn conditional_updates_serialise() {
    // N writers each do read-modify-write with if-match, retrying on conflict: no increment is
    // lost.
    let env = Env::with_bucket("b", BucketConfig::new(1)).await;
    let c = &env.client;
    put(c, "b", "ctr", json!({"n": 0})).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                loop {
                    let cur = c.get_object("b", "ctr").await.unwrap();
                    let n = cur.value["n"].as_i64().unwrap();
                    match c
                        .put_object(
                            "b",
                            "ctr",
                            json!({"n": n + 1}),
                            PutOptions::if_match(cur.etag),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::EtagConflict { .. }) => continue,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.get_object("b", "ctr").await.unwrap().value["n"], 40);
}

/// A fresh server with bucket `b` ([`cfg`]) holding twenty records `k00`..`k19` (name `nNN`,
/// size NN, hot when even, tags red and blue every third, else green, and a field that is not
/// indexed) and one record `bare` with none of the indexed fields.
async fn seeded() -> Env {
    let env = Env::with_bucket("b", cfg()).await;
    let c = &env.client;
    for i in 0..20 {
        let v = json!({
            "name": format!("n{i:02}"),
            "size": i,
            "hot": i % 2 == 0,
            "tags": if i % 3 == 0 { json!(["red", "blue"]) } else { json!(["green"]) },
            "other": "not indexed",
        });
        put(c, "b", &format!("k{i:02}"), v).await;
    }
    // A record without most fields.
    put(c, "b", "bare", json!({"misc": 1})).await;
    env
}

async fn keys(c: &MorayClient, filter: &str) -> Vec<String> {
    let opts = FindOptions {
        sort: vec![Sort::asc("_key")],
        no_count: true,
        ..FindOptions::default()
    };
    c.find_objects("b", filter, opts)
        .await
        .unwrap_or_else(|e| panic!("{filter}: {e}"))
        .into_iter()
        .map(|r| r.key)
        .collect()
}

/// Finds on bucket `b` with each of `filters`: every one must fail with an error `want`
/// accepts (a failure names the filter and the error).
async fn assert_each_refused(c: &MorayClient, filters: &[&str], want: impl Fn(&Error) -> bool) {
    for f in filters {
        let e = find_err(c, "b", f).await;
        assert!(want(&e), "{f}: {e:?}");
    }
}

/// The error of a find on bucket `b` sorted by `attribute`, which must fail.
async fn sorted_find_err(c: &MorayClient, attribute: &str) -> Error {
    let opts = FindOptions {
        sort: vec![Sort::asc(attribute)],
        ..Default::default()
    };
    c.find_objects("b", "(size>=0)", opts)
        .await
        .expect_err("a find sorted by an unusable attribute")
}

#[tokio::test]
async fn find_objects_filters() {
    let env = seeded().await;
    let c = &env.client;
    // Each filter and the keys it finds, in key order.
    for (filter, want) in [
        ("(name=n05)", vec!["k05"]),
        // Numbers compare as numbers, not strings.
        ("(size>=18)", vec!["k18", "k19"]),
        ("(&(size>=9)(size<=10))", vec!["k09", "k10"]),
        ("(size=7)", vec!["k07"]),
        ("(&(hot=true)(size<=4))", vec!["k00", "k02", "k04"]),
        ("(|(name=n01)(name=n03))", vec!["k01", "k03"]),
        ("(!(name=*))", vec!["bare"]),
        ("(name=*9)", vec!["k09", "k19"]),
        (
            "(name=n*1*)",
            vec![
                "k01", "k10", "k11", "k12", "k13", "k14", "k15", "k16", "k17", "k18", "k19",
            ],
        ),
        // Arrays match on any element.
        (
            "(tags=blue)",
            vec!["k00", "k03", "k06", "k09", "k12", "k15", "k18"],
        ),
        ("(&(tags=red)(tags=blue)(size<=3))", vec!["k00", "k03"]),
        // Moray's own columns.
        ("(_key=k07)", vec!["k07"]),
    ] {
        assert_eq!(keys(c, filter).await, want, "{filter}");
    }
    // Each filter and how many keys it finds.
    for (filter, n) in [
        ("(name=*)", 20),
        ("(name=n1*)", 10),
        ("(_key=k1*)", 10),
        // Negation includes records without the field.
        ("(!(hot=true))", 11),
    ] {
        assert_eq!(keys(c, filter).await.len(), n, "{filter}");
    }
    assert!(keys(c, "(!(hot=true))").await.contains(&"bare".to_owned()));
    // Moray's other columns, matched against one record's values.
    let k07 = c.get_object("b", "k07").await.unwrap();
    assert_eq!(keys(c, &format!("(_id={})", k07.id)).await, vec!["k07"]);
    assert_eq!(keys(c, &format!("(_etag={})", k07.etag)).await, vec!["k07"]);
    assert!(
        !keys(c, &format!("(_mtime>={})", k07.mtime))
            .await
            .is_empty()
    );
    // Escaped specials are literal.
    put(c, "b", "weird", json!({"name": "a(b)*c\\d"})).await;
    assert_eq!(
        keys(c, &format!("(name={})", moray::filter::escape("a(b)*c\\d"))).await,
        vec!["weird"]
    );
    assert_eq!(keys(c, r"(name=a\(b\)\**)").await, vec!["weird"]);
    // LIKE wildcards in values are literal too.
    put(c, "b", "pct", json!({"name": "100%_x"})).await;
    assert_eq!(keys(c, "(name=100%_*)").await, vec!["pct"]);
    assert!(keys(c, "(name=1%)").await.is_empty());
}

/// The `size` field of each record, in order.
fn sizes(records: &[ObjectRecord]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r.value["size"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn find_objects_sort_limit_offset_count() {
    let env = seeded().await;
    let c = &env.client;
    let opts = FindOptions {
        limit: Some(3),
        offset: Some(2),
        sort: vec![Sort::desc("size")],
        no_count: false,
    };
    let r = c.find_objects("b", "(size>=0)", opts).await.unwrap();
    assert_eq!(sizes(&r), vec![17, 16, 15]);
    assert!(r.iter().all(|r| r.count == Some(20)));
    // Two sort keys.
    let opts = FindOptions {
        sort: vec![Sort::asc("hot"), Sort::desc("size")],
        limit: Some(3),
        no_count: true,
        ..Default::default()
    };
    let r = c.find_objects("b", "(size>=0)", opts).await.unwrap();
    assert_eq!(sizes(&r), vec![19, 17, 15]);
    assert!(r.iter().all(|r| r.count.is_none()));
    // Default limit is 1000; the stream delivers everything.
    c.create_bucket(
        "many",
        BucketConfig::new(1).with_index("i", IndexSpec::new(IndexType::Number)),
    )
    .await
    .unwrap();
    let ops: Vec<BatchOp> = (0..1500)
        .map(|i| BatchOp::Put {
            bucket: "many".into(),
            key: format!("m{i}"),
            value: json!({"i": i, "pad": "x".repeat(100)}),
            options: PutOptions::any(),
        })
        .collect();
    c.batch(ops).await.unwrap();
    let all = c
        .find_objects("many", "(i>=0)", FindOptions::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1000);
    assert_eq!(all[0].count, Some(1500));
    let opts = FindOptions {
        limit: Some(5000),
        ..Default::default()
    };
    let all = c.find_objects("many", "(i>=0)", opts).await.unwrap();
    let distinct: BTreeSet<String> = all.iter().map(|r| r.key.clone()).collect();
    assert_eq!(distinct.len(), 1500);
    // The wire form is a JSON stream.
    let resp = reqwest::Client::new()
        .post(format!("{}/findObjects", c.urls()[0]))
        .body(r#"{"bucket": "many", "filter": "(i<=1)", "options": {"sort": {"attribute": "i"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-json-stream");
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["value"]["i"], 1);
    assert_eq!(lines[1]["_count"], 2);
}

#[tokio::test]
async fn find_objects_refuses_unindexed_fields_and_bad_filters() {
    let env = seeded().await;
    let c = &env.client;
    assert_each_refused(
        c,
        &[
            "(other=x)",
            "(&(name=n01)(other=not indexed))",
            "(|(other=*)(size=1))",
            "(!(other=a))",
        ],
        |e| {
            matches!(e, Error::NotIndexed { attribute, .. } if attribute == "other")
                && e.http_status() == 400
        },
    )
    .await;
    assert!(matches!(
        sorted_find_err(c, "other").await,
        Error::NotIndexed { .. }
    ));
    assert_each_refused(
        c,
        &[
            "",
            "name=x",
            "(name=x",
            "(size>=abc)",
            "(hot=maybe)",
            "(tags=a*)",
            "(_id=x)",
            "(&)",
        ],
        |e| matches!(e, Error::InvalidQuery { .. }) && e.http_status() == 400,
    )
    .await;
    assert!(matches!(
        find_err(c, "nob", "(a=1)").await,
        Error::BucketNotFound { .. }
    ));
}

#[tokio::test]
async fn sql_injection_attempts_are_inert() {
    let env = seeded().await;
    let c = &env.client;
    let evil = [
        "x'; DROP TABLE b; --",
        "x\"; DROP TABLE b; --",
        "') OR 1=1 --",
        "$1",
        "\\'; DELETE FROM b; --",
    ];
    for v in evil {
        let f = format!("(name={})", moray::filter::escape(v));
        assert!(keys(c, &f).await.is_empty(), "{v}");
        // Stored and found back verbatim.
        put(c, "b", v, json!({"name": v})).await;
        assert_eq!(keys(c, &f).await, vec![v.to_owned()]);
        assert_eq!(c.get_object("b", v).await.unwrap().value["name"], v);
    }
    // Field names cannot carry SQL: they are either refused by the parser or unknown.
    assert_each_refused(
        c,
        &[
            "(name;drop=1)",
            "(name\"=1)",
            "(name)or(1=1)",
            "(1=1) OR (1=1)",
        ],
        |e| matches!(e, Error::InvalidQuery { .. } | Error::NotIndexed { .. }),
    )
    .await;
    let e = find_err(c, "b", "(name--=1)").await;
    assert!(matches!(e, Error::NotIndexed { .. }), "{e:?}");
    // Sort attributes too.
    assert!(matches!(
        sorted_find_err(c, "name; DROP TABLE b").await,
        Error::NotIndexed { .. }
    ));
    // Everything is still there.
    assert_eq!(keys(c, "(size>=0)").await.len(), 20);
}

#[tokio::test]
async fn a_batch_applies_all_its_operations() {
    let env = seeded().await;
    let c = &env.client;
    let before = c.get_object("b", "k01").await.unwrap();
    let res = c
        .batch(vec![
            put_op(
                "b",
                "new1",
                json!({"name": "new1"}),
                PutOptions::must_not_exist(),
            ),
            put_op(
                "b",
                "k01",
                json!({"name": "changed"}),
                PutOptions::if_match(&before.etag),
            ),
            delete_op("b", "k02"),
            BatchOp::Update {
                bucket: "b".into(),
                fields: json!({"hot": false}).as_object().unwrap().clone(),
                filter: "(size<=1)".into(),
            },
            BatchOp::DeleteMany {
                bucket: "b".into(),
                filter: "(size>=19)".into(),
            },
        ])
        .await
        .unwrap();
    assert_eq!(res.results.len(), 5);
    assert!(res.results[0].etag.is_some());
    assert_eq!(res.results[3].count, Some(1));
    assert_eq!(res.results[4].count, Some(1));
    assert_eq!(
        c.get_object("b", "k01").await.unwrap().value,
        json!({"name": "changed"})
    );
    assert!(matches!(
        c.get_object("b", "k02").await,
        Err(Error::ObjectNotFound { .. })
    ));
    assert!(matches!(
        c.get_object("b", "k19").await,
        Err(Error::ObjectNotFound { .. })
    ));
    assert_eq!(c.get_object("b", "k00").await.unwrap().value["hot"], false);
}

#[tokio::test]
async fn a_batch_with_one_failing_operation_changes_nothing() {
    let env = seeded().await;
    let c = &env.client;
    // One failing operation (last) rolls everything before it back, whatever the failure.
    let snapshot = keys(c, "(_key=*)").await;
    let k03 = c.get_object("b", "k03").await.unwrap();
    for failing in [
        // A stale etag.
        put_op("b", "k04", json!({}), PutOptions::if_match("00000000")),
        delete_op("b", "no-such-key"),
        put_op("nobucket", "x", json!({}), PutOptions::any()),
        BatchOp::DeleteMany {
            bucket: "b".into(),
            filter: "(other=x)".into(),
        },
    ] {
        let e = c
            .batch(vec![
                put_op("b", "new2", json!({"name": "new2"}), PutOptions::any()),
                put_op(
                    "b",
                    "k03",
                    json!({"name": "overwritten"}),
                    PutOptions::any(),
                ),
                delete_op("b", "k05"),
                BatchOp::DeleteMany {
                    bucket: "b".into(),
                    filter: "(size<=8)".into(),
                },
                failing.clone(),
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::EtagConflict { .. }
                    | Error::ObjectNotFound { .. }
                    | Error::BucketNotFound { .. }
                    | Error::NotIndexed { .. }
            ),
            "{failing:?}: {e:?}"
        );
        assert_eq!(keys(c, "(_key=*)").await, snapshot, "{failing:?}");
        assert_eq!(c.get_object("b", "k03").await.unwrap(), k03);
    }
}

#[tokio::test]
async fn update_objects_and_delete_many() {
    let env = seeded().await;
    let c = &env.client;
    let before = c.get_object("b", "k01").await.unwrap();
    let fields = json!({"name": "renamed", "hot": true})
        .as_object()
        .unwrap()
        .clone();
    let r = c.update_objects("b", fields, "(size<=2)").await.unwrap();
    assert_eq!(r.count, 3);
    let after = c.get_object("b", "k01").await.unwrap();
    assert_eq!(after.value["name"], "renamed");
    assert_eq!(after.value["other"], "not indexed");
    assert_ne!(after.etag, before.etag);
    assert_eq!(
        keys(c, "(&(name=renamed)(hot=true))").await,
        vec!["k00", "k01", "k02"]
    );
    let bad = json!({"other": 1}).as_object().unwrap().clone();
    assert!(matches!(
        c.update_objects("b", bad, "(size<=2)").await,
        Err(Error::NotIndexed { .. })
    ));

    let r = c.delete_many("b", "(size>=10)", Some(4)).await.unwrap();
    assert_eq!(r.count, 4);
    assert_eq!(keys(c, "(size>=10)").await.len(), 6);
    let r = c.delete_many("b", "(size>=10)", None).await.unwrap();
    assert_eq!(r.count, 6);
    assert!(keys(c, "(size>=10)").await.is_empty());
}

#[tokio::test]
async fn update_bucket_versions_and_reindexing() {
    let env = Env::start().await;
    let c = &env.client;
    let v1 = BucketConfig::new(1).with_index("a", IndexSpec::new(IndexType::String));
    c.create_bucket("b", v1.clone()).await.unwrap();
    for i in 0..25 {
        put(c, "b", &format!("k{i}"), json!({"a": "x", "n": i})).await;
    }
    let v2 = v1
        .clone()
        .with_index("n", IndexSpec::new(IndexType::Number));
    // Same or lower version: refused.
    let e = c
        .update_bucket(
            "b",
            BucketConfig {
                options: BucketOptions { version: 1 },
                ..v2.clone()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::BucketVersion {
            bucket: "b".into(),
            current: 1,
            requested: 1
        }
    );
    assert_eq!(e.http_status(), 409);
    let v2 = BucketConfig {
        options: BucketOptions { version: 2 },
        ..v2
    };
    let b = c.update_bucket("b", v2.clone()).await.unwrap();
    assert_eq!(b.reindexing, vec!["n"]);
    // Not usable until reindexed: refusing beats returning only the new rows.
    let e = find_err(c, "b", "(n>=0)").await;
    assert!(matches!(e, Error::NotIndexed { .. }), "{e:?}");
    // New writes fill the column already.
    put(c, "b", "k100", json!({"a": "y", "n": 100})).await;
    let mut total = 0;
    loop {
        let r = c.reindex_objects("b", 10).await.unwrap();
        total += r.processed;
        if r.processed == 0 {
            assert_eq!(r.remaining, 0);
            break;
        }
    }
    assert_eq!(total, 25);
    assert!(c.get_bucket("b").await.unwrap().reindexing.is_empty());
    let found = c
        .find_objects("b", "(n>=20)", FindOptions::default())
        .await
        .unwrap();
    assert_eq!(found.len(), 6);
    // Removing an index drops it.
    let v3 = BucketConfig::new(3).with_index("n", IndexSpec::new(IndexType::Number));
    c.update_bucket("b", v3).await.unwrap();
    assert!(matches!(
        find_err(c, "b", "(a=x)").await,
        Error::NotIndexed { .. }
    ));
    assert_eq!(
        c.find_objects("b", "(n>=20)", FindOptions::default())
            .await
            .unwrap()
            .len(),
        6
    );
    // Changing an index's type is refused.
    let v4 = BucketConfig::new(4).with_index("n", IndexSpec::new(IndexType::String));
    assert!(matches!(
        c.update_bucket("b", v4).await,
        Err(Error::InvalidBucketConfig { .. })
    ));
    // no_reindex makes a new index usable at once.
    let v5 = BucketConfig::new(5)
        .with_index("n", IndexSpec::new(IndexType::Number))
        .with_index("z", IndexSpec::new(IndexType::String));
    let b = c.update_bucket_opts("b", v5, true).await.unwrap();
    assert!(b.reindexing.is_empty());
    assert!(
        c.find_objects("b", "(z=1)", FindOptions::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        c.update_bucket("nob", BucketConfig::new(9)).await,
        Err(Error::BucketNotFound { .. })
    ));
}

#[tokio::test]
async fn update_bucket_never_queues_ahead_of_queries() {
    // A long transaction holds a lock on the table. Adding a column needs an exclusive lock;
    // it must not wait in the lock queue (where every later query would wait behind it), but
    // give up quickly and retry, so reads and writes keep flowing meanwhile.
    let env = Env::with_bucket("hot", BucketConfig::new(1)).await;
    let c = &env.client;
    put(c, "hot", "k", json!({"a": 1})).await;
    let mut blocker = env.sql().await;
    let txn = blocker.transaction().await.unwrap();
    txn.query("SELECT * FROM hot", &[]).await.unwrap();
    let c2 = c.clone();
    let update = tokio::spawn(async move {
        c2.update_bucket(
            "hot",
            BucketConfig::new(2).with_index("a", IndexSpec::new(IndexType::Number)),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !update.is_finished(),
        "the schema change cannot finish while the table is locked"
    );
    // Queries still run (with a client timeout far below the blocker's lifetime).
    let quick = MorayClient::builder(c.urls()[0].clone())
        .timeout(Duration::from_secs(5))
        .retries(0)
        .build()
        .unwrap();
    for i in 0..5 {
        quick.get_object("hot", "k").await.unwrap();
        put(&quick, "hot", &format!("k{i}"), json!({"a": i})).await;
    }
    assert!(!update.is_finished());
    txn.rollback().await.unwrap();
    let b = update.await.unwrap().unwrap();
    assert_eq!(b.options.version, 2);
}

#[tokio::test]
async fn sql_ping_version() {
    let env = Env::start().await;
    let c = &env.client;
    c.ping().await.unwrap();
    c.ping_opts(false).await.unwrap();
    let v = c.version().await.unwrap();
    assert_eq!(v.version, API_VERSION);
    let rows = c
        .sql("SELECT $1::int + 1 AS n, $2::text AS s, 1.50::numeric AS d, NULL::text AS z, ARRAY['a','b'] AS arr", vec![json!(41), json!("hi")])
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![json!({"n": 42, "s": "hi", "d": 1.50, "z": null, "arr": ["a", "b"]})]
    );
    c.sql("CREATE TABLE t (x int)", vec![]).await.unwrap();
    c.sql("INSERT INTO t VALUES ($1)", vec![json!("7")])
        .await
        .unwrap();
    assert_eq!(
        c.sql("SELECT x FROM t", vec![]).await.unwrap(),
        vec![json!({"x": 7})]
    );
    let e = c.sql("SELEKT 1", vec![]).await.unwrap_err();
    assert!(matches!(e, Error::InvalidQuery { .. }), "{e:?}");
    // /ping and /metrics from the shared observability layer.
    let base = &c.urls()[0];
    let ping = reqwest::get(format!("{base}/ping")).await.unwrap();
    assert_eq!(ping.status(), 200);
    let metrics = testkit::metrics(base).await;
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    let status: Value = reqwest::get(format!("{base}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["primary"]
            .as_str()
            .unwrap()
            .starts_with("postgresql://")
    );
}

#[tokio::test]
async fn the_client_forwards_the_request_id_and_retries_only_safe_calls() {
    use std::sync::{Arc, Mutex};
    // A real HTTP server standing in for a Moray instance that is failing over: it records
    // request ids and answers 503 NoDatabasePeersError twice, then succeeds.
    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let s = s.clone();
        async move {
            let id = req
                .headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap().to_owned());
            let n = {
                let mut g = s.lock().unwrap();
                g.push((req.uri().path().to_owned(), id));
                g.len()
            };
            if n <= 2 {
                (
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"name":"NoDatabasePeersError","message":"failing over","context":{}}"#,
                )
            } else {
                (http::StatusCode::OK, r#"{"ok":true}"#)
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let c = MorayClient::builder(format!("http://{addr}"))
        .backoff(Duration::from_millis(1))
        .build()
        .unwrap();
    manta_util::http::with_request_id("req-from-frontdoor".into(), async {
        c.ping().await.unwrap();
    })
    .await;
    {
        let g = seen.lock().unwrap();
        assert_eq!(g.len(), 3, "two retryable failures, then success");
        assert!(
            g.iter()
                .all(|(p, id)| p == "/ping" && id.as_deref() == Some("req-from-frontdoor"))
        );
    }
    // A conditional write is not repeated after it reached a server.
    seen.lock().unwrap().clear();
    let e = c
        .put_object("b", "k", json!({}), PutOptions::must_not_exist())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoDatabasePeers { .. }));
    assert_eq!(seen.lock().unwrap().len(), 1);
    // A request that never reached a server (connection refused) is retried on the next URL.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    seen.lock().unwrap().clear();
    let both = MorayClient::with_urls(&[dead_url, format!("http://{addr}")]).unwrap();
    both.ping_opts(false).await.unwrap();
    assert!(
        !seen.lock().unwrap().is_empty(),
        "the live instance was tried"
    );
}

#[tokio::test]
async fn sql_is_off_unless_the_server_enables_it() {
    let pg = testkit::TestPostgres::start().await.unwrap();
    let server = moray::server::spawn(moray::server::Config::for_postgres(pg.url()))
        .await
        .unwrap();
    let e = server
        .client()
        .unwrap()
        .sql("SELECT 1", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.name(), "NotPermittedError", "{e}");
    assert_eq!(e.http_status(), 403);
    assert!(e.to_string().contains("--enable-sql"), "{e}");
}

#[tokio::test]
async fn over_mutual_tls_sql_is_for_operators_only() {
    let pg = testkit::TestPostgres::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = manta_pki::Ca::open_or_create(&tmp.path().join("pki"), "t").unwrap();
    let loopback = ["127.0.0.1".to_owned()];
    let issue = |name: &str, role| {
        ca.issue(&tmp.path().join(name), name, role, &loopback)
            .unwrap()
    };
    let server = moray::server::spawn(moray::server::Config {
        tls: Some(issue("moray", manta_pki::Role::Moray)),
        enable_sql: true,
        ..moray::server::Config::for_postgres(pg.url())
    })
    .await
    .unwrap();
    assert!(server.url().starts_with("https://"));
    let as_role = |role| {
        let id = issue(&format!("as-{role}"), role);
        let tls = manta_util::tls::internal_client_config(&id).unwrap();
        MorayClient::builder(server.url())
            .tls(Some(tls))
            .retries(0)
            .build()
            .unwrap()
    };
    let adm = as_role(manta_pki::Role::Adm);
    assert_eq!(
        adm.sql("SELECT 1 AS one", vec![]).await.unwrap(),
        vec![json!({"one": 1})]
    );
    let fd = as_role(manta_pki::Role::Frontdoor);
    let e = fd.sql("SELECT 1", vec![]).await.unwrap_err();
    assert_eq!(e.name(), "NotPermittedError", "{e}");
    // Its other RPCs are for any region service.
    fd.ping().await.unwrap();
    // A client without the region's certificate gets nowhere.
    let e = MorayClient::builder(server.url())
        .retries(0)
        .build()
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(e.is_retryable() || e.http_status() >= 500, "{e}");
}
