//! The ZFS backend against real ZFS. This machine's kernel has no ZFS, so the ZFS test tier
//! (`scripts/zfs-guest/tier.sh`) builds this file with `--features zfs` and runs the binary
//! inside a qemu guest with a fresh pool named by `MANTA_ZFS_POOL`.
//!
//! Run elsewhere (no `MANTA_ZFS_POOL`), each test says it was skipped and passes, so
//! `cargo test --features zfs` stays usable on hosts without ZFS.
#![cfg(feature = "zfs")]
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Node, data, json, key, loopback_config, md5_of, read_all};
use storage_api::ByteRange;
use storage_api::{PutRequest, StorageClient};
use storage_node::dataset::{self, Dataset, DatasetSpec, ZfsDataset, conformance};

fn pool() -> Option<String> {
    match std::env::var("MANTA_ZFS_POOL") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!(
                "SKIPPED: MANTA_ZFS_POOL is not set (the ZFS test tier runs this inside a qemu guest with a pool)"
            );
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Runs the `zfs` command with `args`: its output, trimmed, or when it fails its errors.
fn zfs(args: &[&str]) -> Result<String, String> {
    let out = Command::new("zfs").args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// The value of ZFS property `prop` of dataset `ds`, as the `zfs` command reports it.
fn zfs_get(prop: &str, ds: &str) -> String {
    zfs(&["get", "-H", "-o", "value", prop, ds])
        .unwrap_or_else(|e| panic!("zfs get {prop} {ds}: {e}"))
}

#[tokio::test]
async fn zfs_backend_passes_the_conformance_suite() {
    let Some(pool) = pool() else { return };
    let name = format!("{pool}/{}", unique("conf-"));
    let ds = ZfsDataset::open(&name).await.expect("create the dataset");
    // Created with compression and checksums on, as the properties say (read through
    // libzfs_core and, independently, through the zfs command).
    let props = ds
        .properties(&["compression", "checksum", "mountpoint"])
        .await
        .unwrap();
    assert_eq!(props["compression"], "lz4", "{props:?}");
    assert_eq!(props["checksum"], "on", "{props:?}");
    assert_eq!(zfs_get("compression", &name), "lz4");
    assert_eq!(zfs_get("checksum", &name), "on");
    assert_eq!(ds.root().to_str().unwrap(), props["mountpoint"]);
    let dynds: Box<dyn Dataset> = dataset::open(&DatasetSpec::Zfs(name.clone()))
        .await
        .unwrap();
    assert_eq!(dynds.kind(), "zfs");
    assert_eq!(dynds.name(), name);
    conformance::run_all(dynds.as_ref()).await.unwrap();
    // Capacity agrees with what the zfs command reports.
    let cap = dynds.capacity().await.unwrap();
    let avail: u64 = zfs(&["get", "-Hp", "-o", "value", "available", &name])
        .unwrap()
        .parse()
        .unwrap();
    let diff = cap.available.abs_diff(avail);
    assert!(
        diff < 8 << 20,
        "libzfs_core says {} available, zfs get says {avail}",
        cap.available
    );
}

#[tokio::test]
async fn storage_node_serves_objects_from_a_zfs_dataset() {
    let Some(pool) = pool() else { return };
    let name = format!("{pool}/{}", unique("node-"));
    let config = loopback_config(DatasetSpec::Zfs(name.clone()), "1.stor.zfs");
    let node = Node::serve(config, None).await;
    let (url, client) = (&node.url, &node.client);

    let k = key();
    let body = data(3 * 1024 * 1024 + 5, 41);
    let d = client
        .put(
            &k,
            PutRequest::bytes(body.clone()).content_md5(md5_of(&body)),
        )
        .await
        .unwrap();
    assert_eq!(d.size, body.len() as u64);
    assert!(
        node.root.join("objects").join(k.rel_path()).is_file(),
        "object file is on the ZFS mount"
    );
    assert_eq!(read_all(client, &k).await, body);
    let r = client
        .get(&k, Some(ByteRange::FromTo(10, 19)))
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &body[10..20]);

    let http = reqwest::Client::new();
    let cap: serde_json::Value = json(http.get(format!("{url}/capacity"))).await;
    assert_eq!(cap["kind"], "zfs");
    assert_eq!(cap["dataset"], name.as_str());
    let resp = http
        .post(format!("{url}/snapshots/after-put"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(
        zfs(&["list", "-H", "-t", "snapshot", &format!("{name}@after-put")]).is_ok(),
        "the snapshot exists in ZFS"
    );
    node.stop().await;
}

#[tokio::test]
async fn storage_node_binary_on_zfs() {
    let Some(pool) = pool() else { return };
    let name = format!("{pool}/{}", unique("bin-"));
    let dir = testkit::TestDir::new("zfs-bin").unwrap();
    let port = testkit::process::free_port().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_storage-node"));
    cmd.args([
        "--dataset",
        &format!("zfs:{name}"),
        "--storage-id",
        "2.stor.zfs",
        "--scrub-rate",
        "0",
    ])
    .args(["--listen", &format!("127.0.0.1:{port}")])
    .arg("--insecure-plain-http");
    let mut child =
        testkit::LoggedChild::spawn("storage-node", cmd, &dir.path().join("node.log")).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    testkit::region::wait_ping(
        &url,
        &mut child,
        "storage-node on ZFS",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let client = StorageClient::new(url).unwrap();
    let k = key();
    let body = data(512 * 1024, 42);
    client
        .put(&k, PutRequest::bytes(body.clone()))
        .await
        .unwrap();
    assert_eq!(read_all(&client, &k).await, body);
    assert_eq!(zfs_get("compression", &name), "lz4");
}
