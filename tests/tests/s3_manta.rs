//! S3 objects beyond the S3 API: read through the Manta API (`/:login/buckets/...`), stored
//! as copies on the storage nodes, and reclaimed by the storage nodes' garbage collection when
//! they are replaced, deleted, joined from parts or aborted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod s3_common;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, Response};
use s3_common::*;

/// Signed requests to a region's Manta API as one account.
struct Manta<'a> {
    /// The front door.
    url: &'a str,
    acct: &'a testkit::TestAccount,
}

impl Manta<'_> {
    /// `method` on `path`, with the `extra` headers.
    async fn send(&self, method: Method, path: &str, extra: &[(&str, &str)]) -> Response {
        let mut b = reqwest::Client::new().request(method, format!("{}{path}", self.url));
        for (k, v) in common::signed_headers(self.acct).await {
            b = b.header(k, v);
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.send().await.unwrap()
    }

    /// `GET path`.
    async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, &[]).await
    }
}

fn lines(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A region with the bucket `bucket`: the region, the bucket, and its account's login and
/// account.
async fn with_bucket(bucket: &str) -> (S3Region, Bucket, String, testkit::TestAccount) {
    let s3 = start().await;
    let b = Bucket::create(&s3.client(), bucket).await;
    let login = s3.region.account.login.clone();
    let me = s3.region.account.clone();
    (s3, b, login, me)
}

#[tokio::test]
async fn buckets_read_through_the_manta_api() {
    let (s3, data, login, me) = with_bucket("data").await;
    for (k, v) in [
        ("logs/a.txt", "hello world"),
        ("logs/b.txt", "second"),
        ("top.txt", "top"),
        ("x/y z", "odd"),
    ] {
        data.put(k, v.as_bytes().to_vec())
            .metadata("color", "red")
            .content_type("text/plain")
            .send()
            .await
            .unwrap();
    }
    let me = Manta {
        url: &s3.region.url,
        acct: &me,
    };
    let objects = format!("/{login}/buckets/data/objects");
    let obj = |key: &str| format!("{objects}/{key}");

    let r = me.get(&format!("/{login}/buckets")).await;
    assert_eq!(r.status(), 200);
    let l = lines(&r.text().await.unwrap());
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0]["name"].as_str(), l[0]["type"].as_str()),
        (Some("data"), Some("bucket"))
    );

    let r = me.get(&format!("{objects}?delimiter=/")).await;
    assert_eq!(r.status(), 200);
    let l = lines(&r.text().await.unwrap());
    let got: Vec<(String, String)> = l
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("logs/".to_owned(), "group".to_owned()),
            ("top.txt".to_owned(), "bucketobject".to_owned()),
            ("x/".to_owned(), "group".to_owned()),
        ]
    );
    let r = me.get(&format!("{objects}?prefix=logs/&limit=1")).await;
    assert_eq!(r.headers()["next-marker"], "logs/a.txt");
    let l = lines(&r.text().await.unwrap());
    assert_eq!(l[0]["size"], 11);
    assert_eq!(l[0]["contentType"], "text/plain");
    let r = me
        .get(&format!("{objects}?prefix=logs/&marker=logs/a.txt"))
        .await;
    let l = lines(&r.text().await.unwrap());
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["name"], "logs/b.txt");

    // The bytes, with Manta's headers; keys are the rest of the path, percent-decoded.
    let r = me.get(&obj("logs/a.txt")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["m-color"], "red");
    assert_eq!(r.headers()["durability-level"], "2");
    assert_eq!(r.headers()["etag"], md5_hex(b"hello world").as_str());
    assert_eq!(r.text().await.unwrap(), "hello world");
    let r = me.get(&obj("x%2Fy%20z")).await;
    assert_eq!(r.text().await.unwrap(), "odd");
    let r = me
        .send(Method::GET, &obj("logs/a.txt"), &[("range", "bytes=6-")])
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.text().await.unwrap(), "world");
    let r = me.send(Method::HEAD, &obj("top.txt"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "3");

    // Missing things, writes, and other accounts.
    let r = me.get(&obj("nope")).await;
    assert_eq!(r.status(), 404);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["code"], "ResourceNotFound");
    assert_eq!(
        me.get(&format!("/{login}/buckets/nobucket/objects"))
            .await
            .status(),
        404
    );
    let r = me.send(Method::PUT, &obj("new"), &[]).await;
    assert_eq!(r.status(), 405);
    // Another spelling of the same area is the same read-only view, not a place to write.
    for spelling in [
        format!("/{login}/%62uckets/data/objects/new"),
        format!("/{login}/%62uckets/shadow"),
        format!("/{login}/bucket%73/data"),
    ] {
        let r = me.send(Method::PUT, &spelling, &[]).await;
        assert_eq!(r.status(), 405, "PUT {spelling}");
    }
    assert_eq!(
        me.get(&format!("/{login}/buckets/shadow")).await.status(),
        404,
        "no entry was made"
    );
    let other = s3.region.add_account("nosy").await.unwrap();
    let nosy = Manta {
        url: &s3.region.url,
        acct: &other,
    };
    let r = nosy.get(&obj("top.txt")).await;
    assert_eq!(r.status(), 403);
    let r = reqwest::get(format!("{}/{login}/buckets", s3.region.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn bucket_objects_answer_conditional_requests_as_manta_objects() {
    let (s3, cond, login, me) = with_bucket("cond").await;
    cond.put("k", b"bytes".to_vec())
        .metadata("color", "red")
        .send()
        .await
        .unwrap();
    let path = format!("/{login}/buckets/cond/objects/k");
    let me = Manta {
        url: &s3.region.url,
        acct: &me,
    };
    let get = |extra: &'static [(&'static str, &'static str)]| me.send(Method::GET, &path, extra);

    // Unmodified since a time before the object was written: it was, so 412.
    let r = get(&[("if-unmodified-since", "Sat, 01 Jan 2000 00:00:00 GMT")]).await;
    assert_eq!(r.status(), 412);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["code"], "PreconditionFailed");
    let before = [("if-unmodified-since", "Sat, 01 Jan 2000 00:00:00 GMT")];
    let r = me.send(Method::HEAD, &path, &before).await;
    assert_eq!(r.status(), 412);
    // Unmodified since a time to come: the bytes, with the user metadata.
    let r = get(&[("if-unmodified-since", "Fri, 01 Jan 2100 00:00:00 GMT")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["m-color"], "red");
    assert_eq!(r.text().await.unwrap(), "bytes");

    // The other conditions, as before.
    let etag = md5_hex(b"bytes");
    let r = get(&[("if-match", "\"nope\"")]).await;
    assert_eq!(r.status(), 412);
    let r = me
        .send(Method::GET, &path, &[("if-none-match", etag.as_str())])
        .await;
    assert_eq!(r.status(), 304);
    let r = get(&[("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")]).await;
    assert_eq!(r.status(), 304);
}

/// Object files per storage node (index in the region).
fn files(s3: &S3Region) -> Vec<usize> {
    s3.region
        .storage
        .iter()
        .map(|n| object_files(&n.data).len())
        .collect()
}

async fn settles(s3: &S3Region, want: usize) -> bool {
    eventually(Duration::from_secs(40), || async {
        files(s3).iter().sum::<usize>() == want
    })
    .await
}

#[tokio::test]
async fn garbage_collection_reclaims_replaced_deleted_joined_and_aborted_bytes() {
    let s3 = start_with(&[], &["--gc-interval", "1s", "--gc-min-age", "1s"]).await;
    let gc = Bucket::create(&s3.client(), "gc-test").await;
    let put = |k: &'static str, b: Vec<u8>| gc.put(k, b).send();
    put("a", data(300_000, 1)).await.unwrap();
    assert_eq!(files(&s3).iter().sum::<usize>(), 2, "two copies");
    // Replaced: the old copies go.
    put("a", data(300_000, 2)).await.unwrap();
    assert!(
        settles(&s3, 2).await,
        "old copies of a replaced object stay: {:?}",
        files(&s3)
    );

    // A copy is made on the nodes holding the source, under its own id: deleting the source
    // reclaims only the source's bytes.
    let before: BTreeMap<usize, usize> = files(&s3).into_iter().enumerate().collect();
    gc.copy("b", "gc-test/a").send().await.unwrap();
    let after: BTreeMap<usize, usize> = files(&s3).into_iter().enumerate().collect();
    for (i, n) in &before {
        let want = if *n > 0 { n * 2 } else { 0 };
        assert_eq!(
            after[i], want,
            "the copy lives beside the source: {before:?} -> {after:?}"
        );
    }
    gc.delete("a").send().await.unwrap();
    assert!(settles(&s3, 2).await, "{:?}", files(&s3));
    assert_eq!(gc.bytes("b").await, data(300_000, 2));

    // Multipart: parts are joined on the nodes, then the parts' files go.
    let id = gc.upload_id("m").await;
    let m = ("m", id.as_str());
    let mut parts = Vec::new();
    for (n, len) in [(1, 5 * 1024 * 1024), (2, 1000)] {
        let e = gc.part(m, n, data(len, n as u64)).send().await.unwrap();
        parts.push(completed(n, e.e_tag().unwrap()));
    }
    // Part 2 again: the replaced part's copies go too.
    let e = gc.part(m, 2, data(1000, 9)).send().await.unwrap();
    parts[1] = completed(2, e.e_tag().unwrap());
    assert_eq!(files(&s3).iter().sum::<usize>(), 2 + 6);
    gc.complete(m, parts).send().await.unwrap();
    assert!(settles(&s3, 4).await, "part copies stay: {:?}", files(&s3));
    let whole = [data(5 * 1024 * 1024, 1), data(1000, 9)].concat();
    assert!(gc.bytes("m").await == whole);

    // Aborted uploads leave nothing.
    let id = gc.upload_id("n").await;
    gc.part(("n", &id), 1, data(2000, 3)).send().await.unwrap();
    assert_eq!(files(&s3).iter().sum::<usize>(), 6);
    gc.abort(("n", &id)).send().await.unwrap();
    assert!(settles(&s3, 4).await, "{:?}", files(&s3));

    // Deleting everything leaves no bytes; a bucket with an upload in progress can go, and
    // takes the upload's parts with it.
    let id = gc.upload_id("o").await;
    gc.part(("o", &id), 1, data(2000, 4)).send().await.unwrap();
    for k in ["b", "m"] {
        gc.delete(k).send().await.unwrap();
    }
    gc.client
        .delete_bucket()
        .bucket("gc-test")
        .send()
        .await
        .unwrap();
    assert!(settles(&s3, 0).await, "{:?}", files(&s3));
}

/// Garbage collection keeps the bytes of every version a bucket with versioning holds, and
/// reclaims a version's bytes once it is deleted for good (or replaced while suspended).
#[tokio::test]
async fn garbage_collection_keeps_older_versions_until_they_are_deleted() {
    let s3 = start_with(&[], &["--gc-interval", "1s", "--gc-min-age", "1s"]).await;
    let c = s3.client();
    let v = Bucket::create(&c, "kept").await;
    let other = Bucket::create(&c, "churn").await;
    // Proof that garbage collection has run since: a replaced object's copies go.
    let churned = |want: usize| {
        let other = other.clone();
        let s3 = &s3;
        async move {
            let n = manta_types::time::now_ms();
            other.put("x", data(1000, n)).send().await.unwrap();
            assert!(settles(s3, want).await, "{:?}", files(s3));
        }
    };
    v.set_versioning("Enabled").await;
    let mut ids = Vec::new();
    for n in 1..=3u64 {
        let out = v.put("k", data(200_000, n)).send().await.unwrap();
        ids.push(out.version_id().unwrap().to_owned());
    }
    // A metadata-only self-copy is a new version sharing the bytes of the one it replaces.
    let same = v
        .copy("k", "kept/k")
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .content_type("text/plain")
        .send()
        .await
        .unwrap();
    let shared = same.version_id().unwrap().to_owned();
    v.delete("k").send().await.unwrap();
    other.put("x", data(1000, 0)).send().await.unwrap();
    // 3 versions with bytes, 2 copies each, plus the churned object.
    churned(3 * 2 + 2).await;
    for (n, id) in ids.iter().enumerate() {
        let got = v.get("k").version_id(id).send().await.unwrap();
        assert!(body_of(got).await == data(200_000, n as u64 + 1));
    }

    // The version sharing its bytes goes: they stay for the other one.
    v.delete("k").version_id(&ids[2]).send().await.unwrap();
    churned(3 * 2 + 2).await;
    let got = v.get("k").version_id(&shared).send().await.unwrap();
    assert!(body_of(got).await == data(200_000, 3));
    v.delete("k").version_id(&shared).send().await.unwrap();
    churned(2 * 2 + 2).await;

    // Suspended: a write replaces the null version, whose bytes go; the rest stay.
    v.set_versioning("Suspended").await;
    v.put("k", data(200_000, 7)).send().await.unwrap();
    v.put("k", data(200_000, 8)).send().await.unwrap();
    churned(3 * 2 + 2).await;
    for id in &ids[..2] {
        v.delete("k").version_id(id).send().await.unwrap();
    }
    churned(2 + 2).await;
    assert!(v.bytes("k").await == data(200_000, 8));
}
