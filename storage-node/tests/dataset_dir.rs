//! The dataset conformance suite on the `dir` backend (a temp directory on this machine's
//! filesystem). The same suite runs on ZFS in tests/zfs.rs.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use storage_node::dataset::{self, Dataset, DatasetSpec, DirDataset, conformance};

#[tokio::test]
async fn dir_backend_passes_the_conformance_suite() {
    let dir = testkit::TestDir::new("ds").unwrap();
    let ds = dataset::open(&DatasetSpec::Dir(dir.path().join("a/b/stor")))
        .await
        .expect("open creates missing parents");
    assert_eq!(ds.kind(), "dir");
    conformance::run_all(ds.as_ref()).await.unwrap();
}

#[tokio::test]
async fn snapshots_survive_a_reopen_and_interrupted_ones_are_cleaned() {
    let dir = testkit::TestDir::new("ds").unwrap();
    let ds = DirDataset::open(dir.path()).await.unwrap();
    std::fs::create_dir_all(ds.root().join("objects/o")).unwrap();
    std::fs::write(ds.root().join("objects/o/x"), b"x").unwrap();
    ds.snapshot("s1").await.unwrap();
    // A snapshot interrupted by a crash leaves a hidden partial dir.
    let partial = ds.root().join("snapshots/.partial-dead");
    std::fs::create_dir_all(&partial).unwrap();
    let again = DirDataset::open(dir.path()).await.unwrap();
    assert!(again.snapshot_exists("s1").await.unwrap());
    assert_eq!(
        std::fs::read(again.snapshot_dir("s1").join("objects/o/x")).unwrap(),
        b"x"
    );
    assert!(!partial.exists(), "partial snapshot left behind");
    // Temp files and the snapshots themselves are not snapshotted.
    std::fs::create_dir_all(ds.root().join("tmp")).unwrap();
    std::fs::write(ds.root().join("tmp/upload"), b"partial").unwrap();
    again.snapshot("s2").await.unwrap();
    assert!(!again.snapshot_dir("s2").join("tmp").exists());
    assert!(!again.snapshot_dir("s2").join("snapshots").exists());
}
