//! The whole chain comes up and serves one object.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use testkit::TestRegion;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_stores_and_serves_an_object() {
    let region = TestRegion::start().await.unwrap();
    let c = region.client(&region.account).await.unwrap();
    c.mkdir("~~/stor/dir").await.unwrap();
    let put = c
        .put_bytes("~~/stor/dir/hello.txt", "hello world\n", Default::default())
        .await
        .unwrap();
    assert!(put.etag.is_some());
    assert_eq!(
        c.get_bytes("~~/stor/dir/hello.txt").await.unwrap(),
        "hello world\n"
    );
    let entries = c.ls_all("~~/stor/dir").await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "hello.txt");
    assert_eq!(entries[0].durability, Some(2));
}
