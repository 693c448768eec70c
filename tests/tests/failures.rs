//! What users see when parts of the region fail or overflow: storage nodes killed before and
//! during writes and reads, a concurrency limit reached, a full directory, no room anywhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::time::Duration;

use common::{client, code, object_files, put_object};
use manta_client::{MantaClient, PutOptions, PutResult};
use testkit::{RegionOptions, TestRegion};

/// Waits until the front door has received `bytes` of object data (an upload is in flight).
async fn wait_bytes_in(region: &TestRegion, bytes: f64) {
    for _ in 0..300 {
        let m = testkit::metrics(&region.url).await;
        let v = m
            .lines()
            .find(|l| l.starts_with("frontdoor_bytes_in_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if v >= bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upload never started");
}

/// Polls `f` for up to 10 s.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}");
}

fn slow_body(chunks: usize, pause: Duration) -> reqwest::Body {
    let s = futures_util::stream::unfold(0usize, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(pause).await;
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 64 * 1024])),
            i + 1,
        ))
    });
    reqwest::Body::wrap_stream(s)
}

/// Starts uploading `chunks` chunks of [`slow_body`], one every 50 ms, to `path` in the
/// background; the task ends with the upload's result.
fn spawn_slow_put(
    c: &MantaClient,
    path: &'static str,
    chunks: usize,
    opts: PutOptions,
) -> tokio::task::JoinHandle<Result<PutResult, manta_client::Error>> {
    let c = c.clone();
    tokio::spawn(async move {
        let body = slow_body(chunks, Duration::from_millis(50));
        c.put_stream(path, body, opts).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_storage_node_is_written_around_and_read_around() {
    let mut region = TestRegion::start_with(RegionOptions {
        storage_nodes: 4,
        ..RegionOptions::default()
    })
    .await
    .unwrap();
    let c = client(&region, &region.account).await;
    // Objects written while every node is up, two copies each.
    for i in 0..6 {
        put_object(&c, &format!("~~/stor/before-{i}"), format!("object {i}"))
            .await
            .unwrap();
    }
    region.storage[0].kill();
    // Reads: every object is still served (from its other copy when one was on the dead node).
    for _round in 0..3 {
        for i in 0..6 {
            assert_eq!(
                c.get_bytes(&format!("~~/stor/before-{i}")).await.unwrap(),
                format!("object {i}")
            );
        }
    }
    // Writes: placed on live nodes only, while the dead node's heartbeat still looks fresh.
    for i in 0..10 {
        put_object(&c, &format!("~~/stor/after-{i}"), format!("new {i}"))
            .await
            .unwrap();
    }
    for i in 0..10 {
        let info = c.info(&format!("~~/stor/after-{i}")).await.unwrap();
        assert_eq!(info.header("durability-level"), Some("2"));
        assert_eq!(
            c.get_bytes(&format!("~~/stor/after-{i}")).await.unwrap(),
            format!("new {i}")
        );
    }
    region.restart_storage_node(0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_node_killed_mid_upload_fails_the_put_cleanly() {
    let mut region = TestRegion::start().await.unwrap();
    let c = client(&region, &region.account).await;
    // Three copies: every node takes part, so killing any one breaks the stream.
    let opts = PutOptions {
        copies: Some(3),
        ..PutOptions::default()
    };
    let upload = spawn_slow_put(&c, "~~/stor/doomed", 40, opts);
    wait_bytes_in(&region, 256.0 * 1024.0).await;
    region.storage[1].kill();
    let r = upload.await.unwrap();
    let e = r.expect_err("the upload must fail when a copy cannot be written");
    assert_eq!(e.status(), Some(503), "{e}");
    // No metadata points at missing bytes, and the surviving nodes kept nothing.
    assert_eq!(
        code(c.get_bytes("~~/stor/doomed").await),
        "ResourceNotFound"
    );
    for n in [&region.storage[0], &region.storage[2]] {
        eventually(&format!("{} kept a partial upload", n.storage_id), || {
            object_files(&n.data).is_empty()
        })
        .await;
    }
    // The region keeps working with the nodes that are left.
    put_object(&c, "~~/stor/later", "fine").await.unwrap();
    assert_eq!(c.get_bytes("~~/stor/later").await.unwrap(), "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_leaves_nothing_behind() {
    let region = TestRegion::start().await.unwrap();
    let acct = &region.account;
    let host = region.url.trim_start_matches("http://");
    let mut head = format!(
        "PUT /{}/stor/vanish HTTP/1.1\r\nhost: {host}\r\ncontent-length: 10000000\r\n",
        acct.login
    );
    for (k, v) in common::signed_headers(acct).await {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&vec![b'z'; 1_000_000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Dropped: the client is gone after 1 MB of 10.
    }
    let c = client(&region, acct).await;
    eventually("the front door never noticed the client left", || {
        region.frontdoor_log().contains("client went away")
    })
    .await;
    assert_eq!(
        code(c.get_bytes("~~/stor/vanish").await),
        "ResourceNotFound"
    );
    for n in &region.storage {
        eventually(
            &format!("{} kept bytes of an abandoned upload", n.storage_id),
            || object_files(&n.data).is_empty(),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_with_their_codes() {
    let opts = RegionOptions {
        frontdoor_args: vec![
            "--max-concurrency".into(),
            "1".into(),
            "--max-dirents".into(),
            "3".into(),
        ],
        ..RegionOptions::default()
    };
    let region = TestRegion::start_with(opts).await.unwrap();
    let c = client(&region, &region.account).await;
    c.mkdir("~~/stor/small").await.unwrap();
    for i in 0..3 {
        put_object(&c, &format!("~~/stor/small/{i}"), "x")
            .await
            .unwrap();
    }
    assert_eq!(
        code(put_object(&c, "~~/stor/small/3", "x").await),
        "DirectoryLimitExceeded"
    );
    // Overwriting an existing entry is not a new entry.
    put_object(&c, "~~/stor/small/0", "y").await.unwrap();
    // One request at a time: a second one while an upload is in flight is throttled.
    let slow = spawn_slow_put(&c, "~~/stor/slow", 60, PutOptions::default());
    wait_bytes_in(&region, 64.0 * 1024.0).await;
    let http = reqwest::Client::new();
    let mut req = http.get(format!(
        "{}/{}/stor/small/0",
        region.url, region.account.login
    ));
    for (k, v) in common::signed_headers(&region.account).await {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("ThrottledError"));
    slow.await.unwrap().unwrap();
    // More copies than nodes: no room.
    let e = c
        .put_bytes(
            "~~/stor/many",
            "x",
            PutOptions {
                copies: Some(5),
                ..PutOptions::default()
            },
        )
        .await;
    assert_eq!(code(e), "NotEnoughSpace");
}

/// Unmounts (lazily: the node may still hold it) the filesystem at its path when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_uploads_never_overfill_a_small_node() {
    let mut region = TestRegion::start().await.unwrap();
    // The first node's dataset on a 64 MiB filesystem of its own.
    let data = region.storage[0].data.clone();
    region.storage[0].kill();
    let st = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64m,mode=0700",
            "manta-small-node",
        ])
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success(), "mount a tmpfs on {}", data.display());
    let _mounted = Mounted(data.clone());
    region.restart_storage_node(0).await.unwrap();
    // Its next heartbeat shows the small filesystem; the front door reads it within a second.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Eight 20 MiB uploads at once, two copies each: placed one after another, every one
    // would see the small node's 64 MiB free, and together they would need more than twice
    // that there. Each upload's bytes count against its nodes from the moment it is placed,
    // so the small node takes no more than it holds, and every upload succeeds.
    let c = client(&region, &region.account).await;
    let body = bytes::Bytes::from(vec![b'z'; 20 * 1024 * 1024]);
    let puts: Vec<_> = (0..8)
        .map(|i| {
            let (c, body) = (c.clone(), body.clone());
            tokio::spawn(async move {
                c.put_bytes(&format!("~~/stor/big-{i}"), body, PutOptions::default())
                    .await
            })
        })
        .collect();
    for (i, p) in puts.into_iter().enumerate() {
        let r = p.await.unwrap();
        assert!(r.is_ok(), "upload {i}: {r:?}");
    }
    let on_small = object_files(&data.join("objects")).len();
    assert!(
        on_small <= 3,
        "{on_small} copies of 20 MiB on a 64 MiB node"
    );
    for i in 0..8 {
        let info = c.info(&format!("~~/stor/big-{i}")).await.unwrap();
        assert_eq!(info.header("durability-level"), Some("2"));
    }
}
