//! Scrub against real files: a flipped byte, a truncated file and a lost checksum attribute
//! are found, quarantined and reported; good objects are untouched.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::os::unix::fs::FileExt as _;
use std::time::Duration;

use common::*;
use storage_node::scrub::ScrubConfig;

#[tokio::test]
async fn scrub_finds_a_flipped_byte_and_quarantines_the_copy() {
    let node = Node::start(|_| {}).await;
    let good = key();
    let flipped = key();
    let truncated = key();
    let stripped = key();
    let body = data(200_000, 21);
    for k in [good, flipped, truncated, stripped] {
        node.put(&k, body.clone()).await;
    }
    // Damage three copies behind the store's back.
    let f = node.open_object(&flipped);
    let mut b = [0u8; 1];
    std::fs::File::open(node.store.object_path(&flipped))
        .unwrap()
        .read_exact_at(&mut b, 123_456)
        .unwrap();
    f.write_all_at(&[b[0] ^ 0x01], 123_456).unwrap();
    drop(f);
    node.truncate_object(&truncated, 1000);
    rustix::fs::removexattr(node.store.object_path(&stripped), "user.manta.digest").unwrap();

    let config = ScrubConfig {
        rate_bytes_per_sec: 0,
        interval: Duration::from_secs(3600),
    };
    let report = node.scrub(&config).await;
    let mut found: Vec<String> = report.corrupt.iter().map(|n| n.object_id.clone()).collect();
    found.sort();
    let mut expected = vec![
        flipped.id.to_string(),
        truncated.id.to_string(),
        stripped.id.to_string(),
    ];
    expected.sort();
    assert_eq!(found, expected, "{report:?}");
    assert_eq!(report.checked, 4);
    let flip_note = report
        .corrupt
        .iter()
        .find(|n| n.object_id == flipped.id.to_string())
        .unwrap();
    assert!(flip_note.reason.contains("CRC32C"), "{flip_note:?}");
    assert_ne!(flip_note.actual, flip_note.expected);
    assert!(
        flip_note
            .expected
            .as_deref()
            .is_some_and(|e| e.starts_with("crc32c:"))
    );

    // The corrupt copies are never served again: 404 marked quarantined, so the front door
    // reads another copy. The good one is served as before.
    for k in [flipped, truncated, stripped] {
        assert!(is_quarantined(&node.client, &k).await, "{k}");
        let resp = reqwest::get(format!("{}{k}", node.url)).await.unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["x-manta-quarantined"], "true");
        assert!(node.store.quarantine_path(&k).exists());
    }
    assert_eq!(read_all(&node.client, &good).await, body);

    // Counted on /metrics and listed for operators.
    let metrics = testkit::metrics(&node.url).await;
    for counted in [
        "storage_scrub_corrupt_total 3",
        "storage_scrub_objects_total 4",
    ] {
        assert!(metrics.contains(counted), "{metrics}");
    }
    let listed: Vec<serde_json::Value> =
        json(reqwest::Client::new().get(format!("{}/quarantine", node.url))).await;
    assert_eq!(listed.len(), 3);

    // A second pass finds nothing new.
    let again = node.scrub(&config).await;
    assert!(again.corrupt.is_empty());
    assert_eq!(again.checked, 1);
}

#[tokio::test]
async fn a_truncated_copy_is_quarantined_when_read() {
    let node = Node::start(|_| {}).await;
    let k = key();
    node.put(&k, data(5000, 22)).await;
    node.truncate_object(&k, 10);
    assert!(is_quarantined(&node.client, &k).await);
    assert!(node.store.quarantine_path(&k).exists());
}

#[tokio::test]
async fn scrub_is_paced() {
    let node = Node::start(|_| {}).await;
    for i in 0..4 {
        node.put(&key(), data(256 * 1024, 30 + i)).await;
    }
    // 1 MiB at 4 MiB/s takes at least ~250 ms (a bound from below only: never a timed upper
    // bound in tests).
    let config = ScrubConfig {
        rate_bytes_per_sec: 4 * 1024 * 1024,
        interval: Duration::from_secs(3600),
    };
    let t = std::time::Instant::now();
    let report = node.scrub(&config).await;
    assert_eq!(report.bytes, 1024 * 1024);
    assert!(
        t.elapsed() >= Duration::from_millis(240),
        "{:?}",
        t.elapsed()
    );
}
