//! The Manta HTTP API end to end: a real region (Postgres, Moray, three storage nodes in three
//! failure domains, the front door), driven over HTTP with signed requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use common::{anonymous, client, code, object_files, put_object, raw, signed_headers};
use manta_client::{GetOptions, ListOptions, PutOptions};
use testkit::TestRegion;

fn md5_b64(data: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

/// Listing options asking for the first `limit` entries.
fn first(limit: u32) -> ListOptions {
    ListOptions {
        limit: Some(limit),
        ..ListOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_with_their_headers_and_copies() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    let data = b"The quick brown fox jumps over the lazy dog".repeat(1000);
    let opts = PutOptions {
        copies: Some(3),
        content_type: Some("text/plain".into()),
        content_md5: Some(md5_b64(&data)),
        headers: vec![
            ("m-color".into(), "blue".into()),
            ("cache-control".into(), "no-cache".into()),
        ],
        ..PutOptions::default()
    };
    let put = c
        .put_bytes("~~/stor/fox.txt", data.clone(), opts)
        .await
        .unwrap();
    let etag = put.etag.clone().unwrap();
    assert_eq!(etag.len(), 36, "the etag is the object id (a UUID): {etag}");
    assert_eq!(put.computed_md5.as_deref(), Some(md5_b64(&data).as_str()));

    let resp = c
        .get("~~/stor/fox.txt", GetOptions::default())
        .await
        .unwrap();
    let h = resp.headers().clone();
    assert_eq!(h["etag"], etag.as_str());
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["content-md5"], md5_b64(&data).as_str());
    assert_eq!(h["durability-level"], "3");
    assert_eq!(h["m-color"], "blue");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["accept-ranges"], "bytes");
    assert!(h.contains_key("last-modified"));
    assert!(h.contains_key("x-request-id") && h.contains_key("x-response-time"));
    assert_eq!(h["server"], "Manta");
    assert_eq!(resp.bytes().await.unwrap(), data.as_slice());

    // Three copies, one per failure domain, byte-exact on disk.
    let oid = etag;
    let mut holders = 0;
    for node in &region.storage {
        let files = object_files(&node.data);
        if let Some(f) = files.iter().find(|f| f.ends_with(&oid)) {
            assert_eq!(std::fs::read(f).unwrap(), data);
            holders += 1;
        }
    }
    assert_eq!(holders, 3);

    // HEAD carries the headers and no body.
    let info = c.info("~~/stor/fox.txt").await.unwrap();
    assert_eq!(info.size(), Some(data.len() as u64));
    assert_eq!(info.header("m-color"), Some("blue"));

    // Overwrite: a new object id; delete: gone.
    let put2 = put_object(&c, "~~/stor/fox.txt", "v2").await.unwrap();
    assert_ne!(put2.etag.unwrap(), oid);
    assert_eq!(c.get_bytes("~~/stor/fox.txt").await.unwrap(), "v2");
    c.rm("~~/stor/fox.txt").await.unwrap();
    assert_eq!(
        code(c.get_bytes("~~/stor/fox.txt").await),
        "ResourceNotFound"
    );
    assert_eq!(code(c.rm("~~/stor/fox.txt").await), "ResourceNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_byte_objects_store_no_bytes() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    let put = put_object(&c, "~~/stor/empty", "").await.unwrap();
    assert_eq!(
        put.computed_md5.as_deref(),
        Some("1B2M2Y8AsgTpgAmY7PhCfg==")
    );
    let resp = c.get("~~/stor/empty", GetOptions::default()).await.unwrap();
    assert_eq!(resp.headers()["content-length"], "0");
    assert_eq!(resp.headers()["durability-level"], "0");
    assert!(resp.bytes().await.unwrap().is_empty());
    for node in &region.storage {
        assert!(
            object_files(&node.data).is_empty(),
            "a zero-byte object left bytes on {}",
            node.storage_id
        );
    }
    // A chunked upload that turns out empty is the same.
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(Vec::<
        Result<bytes::Bytes, std::io::Error>,
    >::new()));
    c.put_stream("~~/stor/empty2", body, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        c.info("~~/stor/empty2")
            .await
            .unwrap()
            .header("durability-level"),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_stream_and_are_checked() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..64)
        .map(|i| Ok(bytes::Bytes::from(vec![i as u8; 64 * 1024])))
        .collect();
    let expected: Vec<u8> = (0..64).flat_map(|i| vec![i as u8; 64 * 1024]).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let put = c
        .put_stream("~~/stor/chunked", body, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(put.computed_md5.unwrap(), md5_b64(&expected));
    assert_eq!(c.get_bytes("~~/stor/chunked").await.unwrap(), expected);

    // A wrong Content-MD5 is refused, and nothing is left on any node.
    let before: usize = region
        .storage
        .iter()
        .map(|n| object_files(&n.data).len())
        .sum();
    let bad = PutOptions {
        content_md5: Some(md5_b64(b"something else")),
        ..PutOptions::default()
    };
    assert_eq!(
        code(c.put_bytes("~~/stor/bad-md5", "hello", bad).await),
        "ContentMD5Mismatch"
    );
    assert_eq!(
        code(c.get_bytes("~~/stor/bad-md5").await),
        "ResourceNotFound"
    );
    let after: usize = region
        .storage
        .iter()
        .map(|n| object_files(&n.data).len())
        .sum();
    assert_eq!(before, after, "a refused upload left files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_shape_errors() {
    let region = TestRegion::start().await.unwrap();
    let acct = &region.account;
    let c = client(&region, acct).await;
    for (copies, ok) in [
        ("0", false),
        ("7", false),
        ("x", false),
        ("1", true),
        ("6", false),
    ] {
        let r = c
            .put_bytes(
                "~~/stor/d",
                "x",
                PutOptions {
                    headers: vec![("durability-level".into(), copies.into())],
                    ..PutOptions::default()
                },
            )
            .await;
        match (ok, copies) {
            (true, _) => assert!(r.is_ok(), "{copies}: {r:?}"),
            // Six copies is a valid level, but only three nodes exist.
            (false, "6") => assert_eq!(code(r), "NotEnoughSpace"),
            (false, _) => assert_eq!(code(r), "InvalidDurabilityLevel", "{copies}"),
        }
    }
    // Neither Content-Length nor chunked: 411.
    let host = region.url.trim_start_matches("http://");
    let mut head = format!(
        "PUT /{}/stor/nolen HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n",
        acct.login
    );
    for (k, v) in signed_headers(acct).await {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let (status, body) = raw(&region.url, &head, b"").await;
    assert_eq!(status, 411, "{body}");
    assert!(body.contains("ContentLengthRequired"), "{body}");
    // Bad paths.
    let (status, body) = raw(
        &region.url,
        &format!(
            "GET /{}/stor/a/../b HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n",
            acct.login
        ),
        b"",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("InvalidResource"), "{body}");
    let (status, body) = raw(
        &region.url,
        &format!(
            "GET /{}/nowhere HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n",
            acct.login
        ),
        b"",
    )
    .await;
    assert_eq!(
        (status, body.contains("ResourceNotFound")),
        (404, true),
        "{body}"
    );
    // Oversized user metadata.
    let big = PutOptions {
        headers: vec![("m-big".into(), "x".repeat(5000))],
        ..PutOptions::default()
    };
    assert_eq!(
        code(c.put_bytes("~~/stor/big-md", "x", big).await),
        "InvalidParameter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_list_page_and_refuse_what_they_must() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    assert_eq!(
        code(put_object(&c, "~~/stor/missing/x", "x").await),
        "DirectoryDoesNotExist"
    );
    c.mkdir("~~/stor/d").await.unwrap();
    c.mkdir("~~/stor/d").await.unwrap(); // idempotent
    put_object(&c, "~~/stor/d/obj", "x").await.unwrap();
    assert_eq!(
        code(put_object(&c, "~~/stor/d/obj/child", "x").await),
        "ParentNotDirectory"
    );
    assert_eq!(
        code(put_object(&c, "~~/stor/d", "x").await),
        "OperationNotAllowedOnDirectory"
    );
    assert_eq!(code(c.rm("~~/stor/d").await), "DirectoryNotEmpty");
    assert_eq!(
        code(c.rm("~~/stor").await),
        "OperationNotAllowedOnRootDirectory"
    );
    assert_eq!(
        code(put_object(&c, "~~/stor", "x").await),
        "OperationNotAllowedOnRootDirectory"
    );

    for i in 0..30 {
        put_object(&c, &format!("~~/stor/d/f{i:02}"), format!("{i}"))
            .await
            .unwrap();
    }
    c.mkdir("~~/stor/d/sub").await.unwrap();
    let (page, total) = c.ls("~~/stor/d", &first(10)).await.unwrap();
    assert_eq!(total, 32, "Result-Set-Size counts every entry");
    assert_eq!(page.len(), 10);
    assert_eq!(page[0].name, "f00");
    // The marker entry itself comes back first, as in the original.
    let (page2, _) = c
        .ls(
            "~~/stor/d",
            &ListOptions {
                marker: Some(page[9].name.clone()),
                ..first(10)
            },
        )
        .await
        .unwrap();
    assert_eq!(page2[0].name, page[9].name);
    let all = c.ls_all("~~/stor/d").await.unwrap();
    assert_eq!(all.len(), 32);
    let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let sub = all.iter().find(|e| e.name == "sub").unwrap();
    assert_eq!(sub.kind, manta_client::EntryType::Directory);
    let obj = all.iter().find(|e| e.name == "f05").unwrap();
    assert_eq!((obj.size, obj.durability), (Some(1), Some(2)));
    // Newest first with sort=mtime, and reversed.
    let (by_time, _) = c
        .ls(
            "~~/stor/d",
            &ListOptions {
                sort_mtime: true,
                ..first(3)
            },
        )
        .await
        .unwrap();
    assert_eq!(by_time[0].name, "sub");
    let (rev, _) = c
        .ls(
            "~~/stor/d",
            &ListOptions {
                reverse: true,
                ..first(1)
            },
        )
        .await
        .unwrap();
    assert_eq!(rev[0].name, "sub");
    // Bad limits.
    for bad in [0, 1025] {
        let r = c.ls("~~/stor/d", &first(bad)).await;
        assert_eq!(code(r), "InvalidArgumentError");
    }
    // The account root lists the five areas.
    let (root, total) = c.ls("~~", &ListOptions::default()).await.unwrap();
    assert_eq!(total, 5);
    let names: Vec<&str> = root.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["jobs", "public", "reports", "stor", "uploads"]);
    assert_eq!(root[0].mtime, "2013-05-22T17:39:43.714Z");
    // Deleting the contents lets the directory go.
    for e in c.ls_all("~~/stor/d").await.unwrap() {
        c.rm(&format!("~~/stor/d/{}", e.name)).await.unwrap();
    }
    c.rm("~~/stor/d").await.unwrap();
    assert_eq!(code(c.get_bytes("~~/stor/d").await), "ResourceNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    put_object(&c, "~~/stor/r", data.clone()).await.unwrap();
    let get = |r: &str| {
        let c = c.clone();
        let r = r.to_owned();
        async move {
            c.get(
                "~~/stor/r",
                GetOptions {
                    range: Some(r),
                    ..GetOptions::default()
                },
            )
            .await
        }
    };
    let resp = get("bytes=10-19").await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(resp.bytes().await.unwrap(), &data[10..20]);
    let resp = get("bytes=-5").await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), &data[995..]);
    let resp = get("bytes=990-").await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), &data[990..]);
    let resp = get("bytes=999-5000").await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), &data[999..]);
    let e = get("bytes=1000-").await.unwrap_err();
    assert_eq!(
        (e.status(), code::<()>(Err(e))),
        (Some(416), "RequestedRangeNotSatisfiable".into())
    );
    assert_eq!(code(get("bytes=0-1,5-6").await), "NotImplemented");
    // A malformed range is ignored: the whole object.
    let resp = get("pages=1-2").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_are_atomic() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    let etag = put_object(&c, "~~/stor/c", "v1")
        .await
        .unwrap()
        .etag
        .unwrap();
    let with = |k: &str, v: &str| PutOptions {
        headers: vec![(k.to_owned(), v.to_owned())],
        ..PutOptions::default()
    };
    assert_eq!(
        code(
            c.put_bytes("~~/stor/c", "v2", with("if-match", "wrong"))
                .await
        ),
        "PreconditionFailed"
    );
    assert_eq!(
        code(
            c.put_bytes("~~/stor/c", "v2", with("if-none-match", "*"))
                .await
        ),
        "PreconditionFailed"
    );
    let e2 = c
        .put_bytes("~~/stor/c", "v2", with("if-match", &etag))
        .await
        .unwrap()
        .etag
        .unwrap();
    // The old etag no longer matches.
    assert_eq!(
        code(
            c.put_bytes("~~/stor/c", "v3", with("if-match", &etag))
                .await
        ),
        "PreconditionFailed"
    );
    let resp = c
        .get(
            "~~/stor/c",
            GetOptions {
                headers: vec![("if-none-match".into(), e2.clone())],
                ..GetOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    let resp = c
        .get(
            "~~/stor/c",
            GetOptions {
                headers: vec![("if-match".into(), "nope".into())],
                ..GetOptions::default()
            },
        )
        .await;
    assert_eq!(code(resp), "PreconditionFailed");
    let future = httpdate::fmt_http_date(
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    );
    let resp = c
        .get(
            "~~/stor/c",
            GetOptions {
                headers: vec![("if-modified-since".into(), future)],
                ..GetOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);

    // Racing creates with If-None-Match: * -- exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.put_bytes(
                "~~/stor/race",
                format!("writer {i}"),
                with("if-none-match", "*"),
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert!(
                matches!(
                    e.code().map(|c| c.as_str()),
                    Some("PreconditionFailed" | "ConcurrentRequest")
                ),
                "{e}"
            ),
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snaplinks_share_bytes_and_outlive_their_source() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    let put = put_object(&c, "~~/stor/src", "linked bytes").await.unwrap();
    let files_before: usize = region
        .storage
        .iter()
        .map(|n| object_files(&n.data).len())
        .sum();
    let link = c.ln("~~/stor/src", "~~/stor/dst").await.unwrap();
    assert_eq!(link.etag, put.etag, "a link has the source's object id");
    let files_after: usize = region
        .storage
        .iter()
        .map(|n| object_files(&n.data).len())
        .sum();
    assert_eq!(files_before, files_after, "a link copied bytes");
    c.rm("~~/stor/src").await.unwrap();
    assert_eq!(c.get_bytes("~~/stor/dst").await.unwrap(), "linked bytes");
    // Errors.
    assert_eq!(
        code(c.ln("~~/stor/nope", "~~/stor/x").await),
        "SourceObjectNotFound"
    );
    c.mkdir("~~/stor/dir").await.unwrap();
    assert_eq!(
        code(c.ln("~~/stor/dir", "~~/stor/x").await),
        "LinkNotObject"
    );
    let r = c
        .request(
            http::Method::PUT,
            "~~/stor/x",
            &[],
            &[("content-type".into(), "application/json; type=link".into())],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(code(r), "LocationRequired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_updates_keep_the_bytes() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    let put = c
        .put_bytes(
            "~~/stor/m",
            "data",
            PutOptions {
                headers: vec![("m-a".into(), "1".into())],
                ..PutOptions::default()
            },
        )
        .await
        .unwrap();
    c.chattr(
        "~~/stor/m",
        &[
            ("m-b".into(), "2".into()),
            ("content-type".into(), "text/x-new".into()),
        ],
    )
    .await
    .unwrap();
    let info = c.info("~~/stor/m").await.unwrap();
    assert_eq!(
        info.header("m-a"),
        None,
        "metadata updates replace the user headers"
    );
    assert_eq!(info.header("m-b"), Some("2"));
    assert_eq!(info.header("content-type"), Some("text/x-new"));
    assert_eq!(info.header("etag"), put.etag.as_deref());
    assert_eq!(c.get_bytes("~~/stor/m").await.unwrap(), "data");
    let r = c
        .chattr("~~/stor/m", &[("durability-level".into(), "3".into())])
        .await;
    assert_eq!(code(r), "InvalidUpdate");
    assert_eq!(
        code(c.chattr("~~/stor/nope", &[]).await),
        "ResourceNotFound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_follow_the_origin() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    let opts = PutOptions {
        headers: vec![
            (
                "access-control-allow-origin".into(),
                "https://a.example, https://b.example".into(),
            ),
            ("access-control-allow-methods".into(), "GET, PUT".into()),
        ],
        ..PutOptions::default()
    };
    c.put_bytes("~~/stor/cors", "x", opts).await.unwrap();
    let get = |origin: &str| {
        let c = c.clone();
        let o = origin.to_owned();
        async move {
            c.get(
                "~~/stor/cors",
                GetOptions {
                    headers: vec![("origin".into(), o)],
                    ..GetOptions::default()
                },
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(
        get("https://b.example").await.headers()["access-control-allow-origin"],
        "https://b.example"
    );
    assert!(
        get("https://evil.example")
            .await
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // Preflight.
    let resp = c
        .request(
            http::Method::OPTIONS,
            "~~/stor/cors",
            &[],
            &[
                ("origin".into(), "https://a.example".into()),
                ("access-control-request-method".into(), "PUT".into()),
            ],
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://a.example"
    );
    assert_eq!(resp.headers()["access-control-allow-methods"], "GET, PUT");
    // Objects in public get a wildcard origin when none is given.
    put_object(&c, "~~/public/p", "x").await.unwrap();
    let anon = anonymous(&region, &region.account.login);
    let resp = anon
        .get(
            "~~/public/p",
            GetOptions {
                headers: vec![("origin".into(), "https://z".into())],
                ..GetOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_never_reaches_another_private_tree() {
    let region = TestRegion::start().await.unwrap();
    let jill = client(&region, &region.account).await;
    let bob_acct = region.add_account("bob").await.unwrap();
    let bob = client(&region, &bob_acct).await;
    let jill_login = region.account.login.clone();
    put_object(&jill, "~~/stor/secret", "mine").await.unwrap();
    put_object(&jill, "~~/public/shared", "ours").await.unwrap();
    let theirs = |p: &str| format!("/{jill_login}/{p}");
    assert_eq!(
        code(bob.get_bytes(&theirs("stor/secret")).await),
        "AuthorizationFailed"
    );
    assert_eq!(
        code(bob.ls(&theirs("stor"), &ListOptions::default()).await),
        "AuthorizationFailed"
    );
    assert_eq!(
        code(put_object(&bob, &theirs("stor/planted"), "x").await),
        "AuthorizationFailed"
    );
    assert_eq!(
        code(put_object(&bob, &theirs("public/planted"), "x").await),
        "AuthorizationFailed"
    );
    assert_eq!(
        code(bob.rm(&theirs("stor/secret")).await),
        "AuthorizationFailed"
    );
    assert_eq!(
        code(bob.ln(&theirs("stor/secret"), "~~/stor/stolen").await),
        "SourceObjectNotFound"
    );
    assert_eq!(
        bob.get_bytes(&theirs("public/shared")).await.unwrap(),
        "ours"
    );
    // Anonymous: public reads only.
    let anon = anonymous(&region, &jill_login);
    assert_eq!(anon.get_bytes("~~/public/shared").await.unwrap(), "ours");
    assert_eq!(
        code(anon.get_bytes("~~/stor/secret").await),
        "AuthorizationRequired"
    );
    assert_eq!(
        code(put_object(&anon, "~~/public/x", "x").await),
        "AuthorizationRequired"
    );
    // A signature by bob's key claiming to be jill.
    let mut forged = common::signed_headers(&bob_acct).await;
    forged[1].1 = forged[1].1.replace(
        &format!("/{}/keys/", bob_acct.login),
        &format!("/{jill_login}/keys/"),
    );
    let r = reqwest::Client::new()
        .get(format!("{}/{jill_login}/stor/secret", region.url))
        .header("date", &forged[0].1)
        .header("authorization", &forged[1].1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("KeyDoesNotExist"));
    // An account that does not exist.
    let r = reqwest::Client::new()
        .get(format!("{}/nobody/public/x", region.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("AccountDoesNotExist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_work_until_they_expire() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    put_object(&c, "~~/stor/a b.txt", "presigned")
        .await
        .unwrap();
    let in_an_hour = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let url = c
        .sign_url("~~/stor/a b.txt", &["GET"], in_an_hour)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "presigned");
    // The same URL cannot delete.
    let r = http.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("InvalidQueryStringAuthentication")
    );
    // A tampered path or an expired URL is refused.
    let r = http
        .get(url.replace("a%20b.txt", "other"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    let expired = c.sign_url("~~/stor/a b.txt", &["GET"], past).await.unwrap();
    let r = http.get(&expired).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("expired"));
    // Fetched with curl, as users do.
    let out = std::process::Command::new("curl")
        .args(["-sf", &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "presigned");

    // A URL for uploading to one name (and reading it back) uploads bytes there, and cannot
    // turn its name into a SnapLink of another of the signer's objects, nor rewrite metadata.
    put_object(&c, "~~/stor/private.txt", "not for the URL's holder")
        .await
        .unwrap();
    let up = c
        .sign_url("~~/stor/drop.txt", &["GET", "PUT"], in_an_hour)
        .await
        .unwrap();
    let login = &region.account.login;
    let r = http
        .put(&up)
        .header("content-type", "application/json; type=link")
        .header("location", format!("/{login}/stor/private.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("AuthorizationFailed"));
    assert_eq!(http.get(&up).send().await.unwrap().status(), 404);
    let r = http
        .put(format!("{up}&metadata=true"))
        .header("m-x", "y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http.put(&up).body("dropped").send().await.unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(
        http.get(&up).send().await.unwrap().text().await.unwrap(),
        "dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_surface_request_ids_and_metrics() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/ping", region.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // A caller's request id is kept and reaches the storage nodes and Moray.
    let mut h = common::signed_headers(&region.account).await;
    h.push(("x-request-id".into(), "e2e-trace-0001".into()));
    let mut req = http
        .put(format!(
            "{}/{}/stor/traced",
            region.url, region.account.login
        ))
        .body("traced");
    for (k, v) in &h {
        req = req.header(k.as_str(), v.as_str());
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["x-request-id"], "e2e-trace-0001");
    let node_logs: String = (1..=3)
        .map(|i| {
            std::fs::read_to_string(region.dir().join(format!("{i}.stor.test.log")))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        node_logs.contains("e2e-trace-0001"),
        "the request id did not reach the storage nodes"
    );
    let moray_log = std::fs::read_to_string(region.dir().join("moray.log")).unwrap();
    assert!(
        moray_log.contains("e2e-trace-0001"),
        "the request id did not reach Moray"
    );
    c.get_bytes("~~/stor/traced").await.unwrap();
    let metrics = testkit::metrics(&region.url).await;
    assert!(
        metrics.contains("http_requests_total{route=\"PutObject\",method=\"PUT\",status=\"204\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket{route=\"GetObject\""),
        "{metrics}"
    );
    assert!(metrics.contains("frontdoor_bytes_in_total"), "{metrics}");
    assert!(metrics.contains("frontdoor_bytes_out_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_door_that_caches_directories_never_writes_into_a_removed_one() {
    // A write's parent directory is reused for 30 s here (2 s by default).
    let region = TestRegion::start_with(testkit::RegionOptions {
        frontdoor_args: vec!["--account-cache-ttl".into(), "30s".into()],
        ..testkit::RegionOptions::default()
    })
    .await
    .unwrap();
    let c = client(&region, &region.account).await;

    // Removed through this front door: forgotten at once.
    c.mkdir("~~/stor/mine").await.unwrap();
    put_object(&c, "~~/stor/mine/a", "a").await.unwrap(); // the directory is now cached
    c.rm("~~/stor/mine/a").await.unwrap();
    c.rm("~~/stor/mine").await.unwrap();
    assert_eq!(
        code(put_object(&c, "~~/stor/mine/b", "b").await),
        "DirectoryDoesNotExist"
    );

    // Removed behind its back (as another front door would): the write streams, finds the
    // directory gone once it lands, is taken back and fails.
    c.mkdir("~~/stor/theirs").await.unwrap();
    put_object(&c, "~~/stor/theirs/a", "a").await.unwrap();
    c.rm("~~/stor/theirs/a").await.unwrap();
    let moray = region.moray().unwrap().system(); // the test region has one shard
    let dirs = moray
        .find_objects(
            "manta",
            "(&(type=directory)(name=theirs))",
            moray::FindOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    moray
        .del_object("manta", &dirs[0].key, moray::DelOptions::default())
        .await
        .unwrap();
    match put_object(&c, "~~/stor/theirs/b", "written into a removed directory").await {
        // "was removed": the cached check let it through and the check after landing caught it.
        Err(manta_client::Error::Api { code, message, .. }) => {
            assert_eq!(code, "DirectoryDoesNotExist");
            assert!(message.contains("was removed"), "{message}");
        }
        other => panic!("a write into a removed directory: {other:?}"),
    }
    assert_eq!(
        code(c.info("~~/stor/theirs/b").await),
        "ResourceNotFound",
        "no entry outlives its directory"
    );
    // Made again, it is used at once.
    c.mkdir("~~/stor/theirs").await.unwrap();
    put_object(&c, "~~/stor/theirs/b", "b").await.unwrap();
}

/// Every object under `dir` (recursively), as `(path, bytes)`.
async fn objects_under(c: &manta_client::MantaClient, dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = c.ls_all(&d).await else {
            continue;
        };
        for e in entries {
            let p = format!("{d}/{}", e.name);
            match e.kind {
                manta_client::EntryType::Directory => todo.push(p),
                manta_client::EntryType::Object if e.name != "latest" => {
                    out.push((p.clone(), c.get_bytes(&p).await.unwrap().to_vec()));
                }
                manta_client::EntryType::Object => {}
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_count_what_an_account_did() {
    let region = TestRegion::start_with(testkit::RegionOptions {
        frontdoor_args: [
            "--report-period",
            "3s",
            "--access-log-flush",
            "1s",
            "--repair-interval",
            "1s",
        ]
        .map(String::from)
        .to_vec(),
        ..testkit::RegionOptions::default()
    })
    .await
    .unwrap();
    let c = client(&region, &region.account).await;
    let login = &region.account.login;
    let traffic = format!("/{login}/stor/traffic");
    c.mkdir("~~/stor/traffic").await.unwrap();
    let sizes = [1000usize, 2000, 3000];
    for (i, n) in sizes.iter().enumerate() {
        put_object(&c, &format!("~~/stor/traffic/{i}"), vec![b'x'; *n])
            .await
            .unwrap();
    }
    for i in 0..sizes.len() {
        c.get_bytes(&format!("~~/stor/traffic/{i}")).await.unwrap();
    }
    let total: usize = sizes.iter().sum();

    // Reports come once each period is over: wait for the traffic's access lines and request
    // counts (reading the reports is traffic too, but only of GETs and LISTs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let (lines, puts, bytes_in) = loop {
        let lines: Vec<serde_json::Value> =
            objects_under(&c, &format!("/{login}/reports/access-logs"))
                .await
                .into_iter()
                .flat_map(|(_, b)| {
                    String::from_utf8(b)
                        .unwrap()
                        .lines()
                        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                        .collect::<Vec<_>>()
                })
                .filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with(&traffic)))
                .collect();
        let (mut puts, mut bytes_in) = (0u64, 0u64);
        for (_, b) in objects_under(&c, &format!("/{login}/reports/usage/request")).await {
            let r: serde_json::Value = serde_json::from_slice(&b).unwrap();
            let n = |v: &serde_json::Value| v.as_str().unwrap().parse::<u64>().unwrap();
            puts += n(&r["requests"]["type"]["PUT"]);
            bytes_in += n(&r["requests"]["bandwidth"]["in"]);
        }
        if lines.len() == 1 + 2 * sizes.len() && puts == 1 + sizes.len() as u64 {
            break (lines, puts, bytes_in);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reports never showed the traffic: {} access lines, {puts} PUTs",
            lines.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(puts, 4);
    assert_eq!(bytes_in, total as u64, "bytes received by PUTs");
    let of = |op: &'static str| lines.iter().filter(move |l| l["billable_operation"] == op);
    assert_eq!(of("PUT").count(), 4);
    assert_eq!(
        of("PUT")
            .map(|l| l["bytesIn"].as_u64().unwrap())
            .sum::<u64>(),
        total as u64
    );
    assert_eq!(of("GET").count(), 3);
    assert_eq!(
        of("GET")
            .map(|l| l["bytesOut"].as_u64().unwrap())
            .sum::<u64>(),
        total as u64
    );
    for l in &lines {
        assert!(l["status"].as_u64().unwrap() < 300, "{l}");
        assert_eq!(l["caller"], login.as_str());
        assert_eq!(l["remoteAddress"], "127.0.0.1");
        assert!(
            l["requestId"].as_str().is_some_and(|r| r.len() == 36),
            "{l}"
        );
        assert!(l["latency"].is_u64() && l["time"].is_string(), "{l}");
    }

    // Storage usage: the three objects and the directory, and the reports themselves.
    let storage: serde_json::Value = serde_json::from_slice(
        &c.get_bytes("~~/reports/usage/storage/latest")
            .await
            .unwrap(),
    )
    .unwrap();
    let stor = &storage["storage"]["stor"];
    assert_eq!(stor["objects"], "3", "{storage}");
    assert_eq!(stor["keys"], "3", "{storage}");
    assert_eq!(stor["directories"], "1", "{storage}");
    assert_eq!(stor["bytes"], total.to_string(), "{storage}");
    assert_ne!(storage["storage"]["reports"]["objects"], "0", "{storage}");
    // The account cannot write its own reports.
    assert_eq!(
        code(put_object(&c, "~~/reports/usage/forged", "x").await),
        "AuthorizationFailed"
    );
}
