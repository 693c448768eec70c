//! The object API over real HTTP: uploads, reads, ranges, bad input, abandoned and concurrent
//! uploads. Each test runs its own node on a temp directory.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use storage_api::ByteRange;
use storage_api::{ClientError, PutRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The first answer the node sends on `s`, within five seconds.
async fn first_read(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn put_get_head_delete_round_trip() {
    let node = Node::start(|_| {}).await;
    let k = key();
    let body = data(1024 * 1024 + 17, 1);
    let http = reqwest::Client::new();
    let url = node.object_url(&k);

    let resp = http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    // No MD5 was asked for: the node computes only its block sums.
    let crc = crc_hex(&body);
    assert!(!resp.headers().contains_key("x-joyent-computed-content-md5"));
    assert_eq!(resp.headers()["x-manta-computed-crc32c"], crc.as_str());
    let j: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(j["crc32c"], crc.as_str());
    assert!(j["md5"].is_null(), "{j}");
    assert_eq!(j["size"], body.len() as u64);

    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-length"], body.len().to_string().as_str());
    assert!(!h.contains_key("content-md5"));
    assert_eq!(h["x-manta-computed-crc32c"], crc.as_str());
    assert_eq!(h["etag"], format!("\"{crc}-{}\"", body.len()).as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    assert!(h.contains_key("last-modified"));
    assert!(h.contains_key("x-request-id"));
    assert_eq!(resp.bytes().await.unwrap(), body);

    let info = node.client.head(&k).await.unwrap();
    assert_eq!(info.size, body.len() as u64);
    assert_eq!(info.md5, None);
    assert_eq!(info.crc32c, Some(storage_api::blocks::crc32c(&body)));

    // The typed client sees the same.
    let got = node.client.get(&k, None).await.unwrap();
    assert_eq!(got.info, info);
    assert_eq!(got.bytes().await.unwrap(), body);

    node.client.delete(&k).await.unwrap();
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(code_of(resp).await, "ResourceNotFound");
    assert!(matches!(
        node.client.delete(&k).await,
        Err(ClientError::NotFound)
    ));
    assert!(is_missing(&node.client, &k).await);

    let metrics = testkit::metrics(&node.url).await;
    for family in [
        "storage_bytes_in_total",
        "storage_bytes_out_total",
        "storage_fsync_seconds_bucket",
    ] {
        assert!(metrics.contains(family), "{metrics}");
    }
    assert_eq!(
        http.get(format!("{}/ping", node.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn md5_mismatch_is_469_and_leaves_nothing() {
    let node = Node::start(|_| {}).await;
    let k = key();
    let good = data(300_000, 2);
    let wrong = md5_of(b"something else");
    let err = node
        .client
        .put(&k, PutRequest::bytes(good.clone()).content_md5(wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Md5Mismatch(_)), "{err:?}");
    let resp = reqwest::Client::new()
        .put(node.object_url(&k))
        .header("content-md5", md5_b64(b"something else"))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 469);
    assert_eq!(code_of(resp).await, "ContentMD5Mismatch");
    assert!(is_missing(&node.client, &k).await);
    assert!(node.tmp_files().is_empty(), "{:?}", node.tmp_files());

    // The right MD5 is accepted; a later mismatching upload of the same id leaves it intact.
    let d = node
        .client
        .put(
            &k,
            PutRequest::bytes(good.clone()).content_md5(md5_of(&good)),
        )
        .await
        .unwrap();
    assert_eq!(d.md5, Some(md5_of(&good)));
    let err = node
        .client
        .put(&k, PutRequest::bytes(data(10, 3)).content_md5(wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Md5Mismatch(_)));
    assert_eq!(read_all(&node.client, &k).await, good);
    assert!(node.tmp_files().is_empty());

    // A Content-MD5 that is not an MD5 at all is a bad header, refused before the body.
    let resp = raw(
        node.addr,
        &format!("PUT {k} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-MD5: bm90LW1kNQ=="),
        b"abc",
    )
    .await;
    assert_refused(&resp, 400, "InvalidHeader");
}

#[tokio::test]
async fn range_edge_cases() {
    let node = Node::start(|_| {}).await;
    let k = key();
    let body = data(1000, 4);
    node.put(&k, body.clone()).await;
    let http = reqwest::Client::new();
    let url = node.object_url(&k);
    let get = |range: &'static str| {
        let http = http.clone();
        let url = url.clone();
        async move { http.get(&url).header("range", range).send().await.unwrap() }
    };
    for (range, start, end) in [
        ("bytes=0-0", 0usize, 0usize), // first byte
        ("bytes=999-999", 999, 999),   // last byte
        ("bytes=-10", 990, 999),       // suffix
        ("bytes=-5000", 0, 999),       // suffix longer than the object
        ("bytes=990-", 990, 999),      // open-ended
        ("bytes=995-2000", 995, 999),  // clipped at the end
    ] {
        let resp = get(range).await;
        assert_eq!(resp.status(), 206, "{range}");
        let h = resp.headers().clone();
        assert_eq!(
            h["content-range"],
            format!("bytes {start}-{end}/1000").as_str(),
            "{range}"
        );
        assert_eq!(h["content-length"], (end - start + 1).to_string().as_str());
        assert!(
            !h.contains_key("content-md5"),
            "a slice must not carry the object's MD5"
        );
        assert_eq!(h["x-manta-computed-crc32c"], crc_hex(&body).as_str());
        assert_eq!(resp.bytes().await.unwrap(), &body[start..=end], "{range}");
    }
    for range in ["bytes=1000-", "bytes=1000-1001", "bytes=-0"] {
        let resp = get(range).await;
        assert_eq!(resp.status(), 416, "{range}");
        assert_eq!(resp.headers()["content-range"], "bytes */1000");
        assert_eq!(code_of(resp).await, "RequestedRangeNotSatisfiable");
    }
    let resp = get("bytes=0-1,5-6").await;
    assert_eq!(resp.status(), 501);
    assert_eq!(code_of(resp).await, "NotImplemented");
    for range in ["bytes=abc", "bytes=5-2", "items=0-1", "bytes=", "0-1"] {
        let resp = get(range).await;
        assert_eq!(resp.status(), 400, "{range}");
        assert_eq!(code_of(resp).await, "InvalidHeader");
    }
    // Typed client.
    let r = node
        .client
        .get(&k, Some(ByteRange::Suffix(1)))
        .await
        .unwrap();
    assert_eq!(r.range, Some((999, 999)));
    assert_eq!(r.info.size, 1000);
    assert_eq!(r.bytes().await.unwrap(), &body[999..]);
    assert!(matches!(
        node.client.get(&k, Some(ByteRange::From(5000))).await,
        Err(ClientError::RangeNotSatisfiable { size: Some(1000) })
    ));

    // The empty object: whole GET works, every range is unsatisfiable.
    let e = key();
    let d = node.put(&e, Bytes::new()).await;
    assert_eq!((d.size, d.crc32c, d.md5), (0, Some(0), None));
    let resp = http.get(node.object_url(&e)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "0");
    assert!(resp.bytes().await.unwrap().is_empty());
    for range in ["bytes=0-", "bytes=-1", "bytes=0-0"] {
        let resp = http
            .get(node.object_url(&e))
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 416, "{range}");
        assert_eq!(resp.headers()["content-range"], "bytes */0");
    }
}

#[tokio::test]
async fn bad_paths_and_methods_are_refused_with_json() {
    let node = Node::start(|_| {}).await;
    let http = reqwest::Client::new();
    let k = key();
    for path in [
        "/jill/stor".to_owned(),
        format!("/{}/not-a-uuid", k.owner),
        format!("/not-a-uuid/{}", k.id),
        format!("{k}/extra"),
        format!("/{}", k.owner),
        "/".to_owned(),
        format!("/{}/{}", k.owner, k.id.to_string().replace('-', "")),
    ] {
        let resp = http
            .put(format!("{}{path}", node.url))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let j: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(j["code"], "InvalidResource", "{path}");
        assert!(j["message"].as_str().unwrap().contains("uuid"), "{j}");
    }
    let resp = http.post(node.object_url(&k)).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(code_of(resp).await, "MethodNotAllowed");
    assert!(node.tmp_files().is_empty());
    // Nothing was created under objects/.
    assert!(list(&node.root.join("objects")).is_empty());
}

#[tokio::test]
async fn chunked_uploads_and_size_limits() {
    let node = Node::start(|c| c.max_object_size = 1024 * 1024).await;
    let k = key();
    // Chunked (no Content-Length), streamed in pieces.
    let body = data(1024 * 1024, 5);
    let pieces = futures_util::stream::iter(chunks(&body, 10_000));
    let d = node
        .client
        .put(&k, PutRequest::stream(pieces, None))
        .await
        .unwrap();
    assert_eq!(d.size, body.len() as u64);
    assert_eq!(read_all(&node.client, &k).await, body);

    // One byte over the limit, chunked: 413 once the limit is crossed, nothing left.
    let big = key();
    let over = data(1024 * 1024 + 1, 6);
    let pieces = futures_util::stream::iter(chunks(&over, 64 * 1024));
    let err = node
        .client
        .put(&big, PutRequest::stream(pieces, None))
        .await;
    match err {
        Err(ClientError::Status {
            status: 413, code, ..
        }) => assert_eq!(code, "MaxContentLengthExceeded"),
        // The node may answer and close before the client finished sending.
        Err(ClientError::Transport(_)) => {}
        other => panic!("expected 413, got {other:?}"),
    }
    assert!(eventually(Duration::from_secs(5), || node.tmp_files().is_empty()).await);
    assert!(is_missing(&node.client, &big).await);

    // Declared too large: refused before the body, and `Expect: 100-continue` is not honoured.
    let expect = "Expect: 100-continue\r\n";
    let mut s = start_put(node.addr, &big, 2_000_000, expect, b"").await;
    let resp = first_read(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(!resp.contains("100 Continue"), "{resp}");

    // Neither Content-Length nor chunked: 411.
    let resp = raw(node.addr, &format!("PUT {big} HTTP/1.1\r\nHost: x"), b"").await;
    assert_refused(&resp, 411, "ContentLengthRequired");
}

#[tokio::test]
async fn expect_100_continue_then_body() {
    let node = Node::start(|_| {}).await;
    let k = key();
    let headers = "Expect: 100-continue\r\nConnection: close\r\n";
    let mut s = start_put(node.addr, &k, 5, headers, b"").await;
    let first = first_read(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 100 Continue"), "{first}");
    s.write_all(b"hello").await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let all = first + &String::from_utf8_lossy(&rest);
    assert!(all.contains("HTTP/1.1 201"), "{all}");
    assert_eq!(read_all(&node.client, &k).await, "hello");
}

#[tokio::test]
async fn idle_upload_times_out_with_408() {
    let node = Node::start(|c| c.idle_timeout = Duration::from_millis(500)).await;
    let k = key();
    let mut s = start_put(node.addr, &k, 100, "", b"0123456789").await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let resp = String::from_utf8_lossy(&out);
    assert_refused(&resp, 408, "UploadTimeout");
    assert!(node.tmp_files().is_empty());
    assert!(is_missing(&node.client, &k).await);
}

#[tokio::test]
async fn client_vanishing_mid_upload_leaves_no_file() {
    let node = Node::start(|_| {}).await;
    let k = key();
    let s = start_put(node.addr, &k, 10_000_000, "", &data(1_000_000, 7)).await;
    // The upload is under way: its temp file exists.
    assert!(eventually(Duration::from_secs(5), || !node.tmp_files().is_empty()).await);
    drop(s);
    assert!(
        eventually(Duration::from_secs(5), || node.tmp_files().is_empty()).await,
        "temp file left: {:?}",
        node.tmp_files()
    );
    assert!(is_missing(&node.client, &k).await);
    assert!(
        list(&node.root.join("objects"))
            .iter()
            .all(|d| list(d).is_empty())
    );
}

#[tokio::test]
async fn concurrent_puts_of_one_id_never_expose_a_partial_object() {
    let node = Node::start(|_| {}).await;
    let k = key();
    let versions: Vec<Vec<u8>> = (0..6).map(|i| data(2 * 1024 * 1024, 100 + i)).collect();
    let crcs: Vec<u32> = versions
        .iter()
        .map(|v| storage_api::blocks::crc32c(v))
        .collect();
    let stop = tokio_util::sync::CancellationToken::new();
    // A reader hammering the object while the writers race.
    let reader = {
        let client = node.client.clone();
        let versions = versions.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while !stop.is_cancelled() {
                match client.get(&k, None).await {
                    Ok(r) => {
                        let crc = r.info.crc32c;
                        let body = r.bytes().await.unwrap();
                        assert!(
                            versions.iter().any(|v| *v == body),
                            "a partial or mixed object was served"
                        );
                        assert_eq!(crc, Some(storage_api::blocks::crc32c(&body)));
                        seen += 1;
                    }
                    Err(ClientError::NotFound) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for v in &versions {
        let client = node.client.clone();
        let v = v.clone();
        // Slow, chunked senders so the uploads overlap.
        let pieces = futures_util::stream::iter(chunks(&v, 256 * 1024));
        let stream = futures_util::StreamExt::then(pieces, |c| async move {
            tokio::time::sleep(Duration::from_millis(15)).await;
            c
        });
        writers.push(tokio::spawn(async move {
            client
                .put(&k, PutRequest::stream(stream, Some(v.len() as u64)))
                .await
        }));
    }
    for w in writers {
        w.await.unwrap().unwrap();
    }
    stop.cancel();
    let seen = reader.await.unwrap();
    let final_body = read_all(&node.client, &k).await;
    let i = versions
        .iter()
        .position(|v| *v == final_body)
        .expect("the final object is one whole upload");
    assert_eq!(node.client.head(&k).await.unwrap().crc32c, Some(crcs[i]));
    assert!(node.tmp_files().is_empty());
    eprintln!("reader saw {seen} complete objects during the race");
}

#[tokio::test]
async fn snapshots_capacity_and_shutdown() {
    let node = Node::start(|_| {}).await;
    let http = reqwest::Client::new();
    let k = key();
    node.put(&k, "kept in the snapshot").await;
    // The first snapshot of a name is made, a second of the same name and a bad name are not.
    for (name, status, code) in [
        ("before-delete", 201, None),
        ("before-delete", 409, Some("EntityAlreadyExists")),
        ("a@b", 400, Some("InvalidParameter")),
    ] {
        let resp = http
            .post(format!("{}/snapshots/{name}", node.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{name}");
        if let Some(code) = code {
            assert_eq!(code_of(resp).await, code, "{name}");
        }
    }
    node.client.delete(&k).await.unwrap();
    let snap = node
        .root
        .join("snapshots/before-delete/objects")
        .join(k.rel_path());
    assert_eq!(std::fs::read(snap).unwrap(), b"kept in the snapshot");

    let cap: serde_json::Value = json(http.get(format!("{}/capacity", node.url))).await;
    assert!(cap["total"].as_u64().unwrap() > 0);
    assert!(cap["available"].as_u64().unwrap() <= cap["total"].as_u64().unwrap());
    assert!(cap["percentUsed"].as_u64().unwrap() <= 100);
    assert_eq!(cap["kind"], "dir");

    // Shutdown stops the server: the port no longer answers.
    let addr = node.addr;
    node.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn transfers_beyond_the_limit_are_refused_with_503() {
    let node = Node::start(|c| c.max_transfers = 1).await;
    let k = key();
    // One upload in progress holds the only permit.
    let mut s = start_put(node.addr, &k, 10, "", b"01234").await;
    assert!(eventually(Duration::from_secs(5), || !node.tmp_files().is_empty()).await);
    let other = key();
    match node.client.put(&other, PutRequest::bytes("x")).await {
        Err(ClientError::Status {
            status: 503, code, ..
        }) => assert_eq!(code, "ThrottledError"),
        r => panic!("expected 503, got {r:?}"),
    }
    // Finishing the first upload frees the permit.
    s.write_all(b"56789").await.unwrap();
    let mut out = vec![0u8; 1024];
    let n = s.read(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out[..n]).starts_with("HTTP/1.1 201"));
    node.put(&other, "x").await;
    assert_eq!(read_all(&node.client, &other).await, "x");
}

#[tokio::test]
async fn a_second_node_on_the_same_dataset_is_refused() {
    let node = Node::start(|_| {}).await;
    let config = loopback_config(
        storage_node::dataset::DatasetSpec::Dir(node.root.clone()),
        "2.stor.test",
    );
    let err = storage_node::StorageNode::start(config).await.unwrap_err();
    assert!(
        err.to_string().contains("in use by another storage node"),
        "{err}"
    );
    // The first node is unaffected.
    node.put(&key(), "still mine").await;
}

#[tokio::test]
async fn a_read_stops_at_a_bad_block_and_quarantines_the_copy() {
    use std::os::unix::fs::FileExt as _;
    let node = Node::start(|_| {}).await;
    let k = key();
    let body = data(3 * 1024 * 1024 + 100, 8);
    node.put(&k, body.clone()).await;
    // Flip one byte in the third block (2 MiB..3 MiB) behind the node's back.
    let at = 2 * 1024 * 1024 + 4321;
    node.open_object(&k)
        .write_all_at(&[body[at] ^ 0x10], at as u64)
        .unwrap();

    // A range within good blocks is served whole (blocks are checked one by one).
    let r = node
        .client
        .get(&k, Some(ByteRange::FromTo(1000, 1_500_000)))
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &body[1000..=1_500_000]);
    assert!(node.client.head(&k).await.is_ok(), "not quarantined yet");

    // A whole read gets exactly the good blocks before the bad one, then an error: never a byte
    // of the bad block.
    let r = node.client.get(&k, None).await.unwrap();
    let mut stream = r.into_stream();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(c) = futures_util::StreamExt::next(&mut stream).await {
        match c {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the read must not complete");
    assert_eq!(
        got.len(),
        2 * 1024 * 1024,
        "the read stops at the bad block's start"
    );
    assert!(got == body[..2 * 1024 * 1024]);

    // The copy is now quarantined, with a note naming the block.
    assert!(is_quarantined(&node.client, &k).await);
    let notes = node.store.quarantined().await.unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].offset, Some(2 * 1024 * 1024));
    assert!(notes[0].reason.contains("block 2"), "{:?}", notes[0]);
}

#[tokio::test]
async fn copies_written_by_earlier_versions_are_served_and_scrubbed() {
    let node = Node::start(|_| {}).await;
    let (good, bad) = (key(), key());
    let body = data(700_000, 9);
    for k in [&good, &bad] {
        node.put(k, body.clone()).await;
        // The attribute an earlier version wrote: whole-object MD5 and SHA-256, no block sums.
        let v1 = serde_json::json!({
            "v": 1, "md5": md5_b64(&body), "sha256": sha_hex(&body), "size": body.len(),
        });
        rustix::fs::setxattr(
            node.store.object_path(k),
            "user.manta.digest",
            serde_json::to_vec(&v1).unwrap().as_slice(),
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    let r = node.client.get(&good, None).await.unwrap();
    assert_eq!(r.info.crc32c, None);
    assert_eq!(
        r.info.sha256.map(|s| storage_api::digest::to_hex(&s)),
        Some(sha_hex(&body))
    );
    assert_eq!(
        r.info.md5.map(|m| storage_api::digest::md5_base64(&m)),
        Some(md5_b64(&body))
    );
    assert_eq!(r.bytes().await.unwrap(), body);

    use std::os::unix::fs::FileExt as _;
    node.open_object(&bad)
        .write_all_at(&[body[5] ^ 1], 5)
        .unwrap();
    let report = node
        .scrub(&storage_node::scrub::ScrubConfig {
            rate_bytes_per_sec: 0,
            interval: Duration::from_secs(3600),
        })
        .await;
    assert_eq!(report.checked, 2);
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    assert_eq!(report.corrupt[0].object_id, bad.id.to_string());
    assert!(report.corrupt[0].reason.contains("SHA-256"));
}
