//! The `object_store` crate's S3 backend (`AmazonS3Builder`, path style, plain HTTP) against a
//! real region: put, get, ranges, head, listing with a delimiter, conditional puts, multipart
//! writes, copy, delete. Each test checks one of them on a region of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod s3_common;

use futures_util::TryStreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, PutResult, Result,
    UpdateVersion, WriteMultipart,
};
use s3_common::*;

fn store(s3: &S3Region, bucket: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_access_key_id(&s3.access_key)
        .with_secret_access_key(&s3.secret_key)
        .build()
        .unwrap()
}

/// A region serving S3 with the bucket `lake`, and an `object_store` S3 backend over it (keep
/// the region: dropping it stops the service).
async fn lake() -> (S3Region, AmazonS3) {
    let s3 = start().await;
    Bucket::create(&s3.client(), "lake").await;
    let st = store(&s3, "lake");
    (s3, st)
}

/// Where [`put_parquet`] puts its object.
const PARQUET: &str = "tables/t1/part-0.parquet";

/// Puts 70,000 bytes of data at [`PARQUET`]; returns them and what the put answered.
async fn put_parquet(st: &impl ObjectStore) -> (Vec<u8>, PutResult) {
    let body = data(70_000, 5);
    let payload = PutPayload::from(body.clone());
    let put = st.put(&Path::from(PARQUET), payload).await.unwrap();
    (body, put)
}

/// Writes 11 MiB and 17 bytes to `big/blob.bin` as a multipart upload in parts of 5 MiB (so
/// three parts, the last short); returns the bytes and the path.
async fn write_big(st: &impl ObjectStore) -> (Vec<u8>, Path) {
    let big = data(11 * 1024 * 1024 + 17, 6);
    let mp = Path::from("big/blob.bin");
    let upload = st.put_multipart(&mp).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
    for chunk in big.chunks(1024 * 1024) {
        w.write(chunk);
    }
    w.finish().await.unwrap();
    (big, mp)
}

/// A create-only put of `body` at `path`.
async fn create(st: &impl ObjectStore, path: &Path, body: &'static [u8]) -> Result<PutResult> {
    let opts = PutOptions::from(PutMode::Create);
    st.put_opts(path, PutPayload::from_static(body), opts).await
}

/// A put of `body` at `path` that only applies over the version `v`.
async fn update(
    st: &impl ObjectStore,
    path: &Path,
    body: &'static [u8],
    v: &UpdateVersion,
) -> Result<PutResult> {
    let opts = PutOptions::from(PutMode::Update(v.clone()));
    st.put_opts(path, PutPayload::from_static(body), opts).await
}

#[tokio::test]
async fn a_put_answers_the_md5_etag_and_reads_back_whole() {
    let (_s3, st) = lake().await;
    let (body, put) = put_parquet(&st).await;
    assert_eq!(
        put.e_tag.as_deref(),
        Some(format!("\"{}\"", md5_hex(&body)).as_str())
    );
    let got = st.get(&Path::from(PARQUET)).await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());
}

#[tokio::test]
async fn ranged_gets_return_the_bytes_asked() {
    let (_s3, st) = lake().await;
    let (body, _) = put_parquet(&st).await;
    let p = Path::from(PARQUET);
    let r = st.get_range(&p, 1000..1010).await.unwrap();
    assert_eq!(r.as_ref(), &body[1000..1010]);
    let ranges = st.get_ranges(&p, &[0..5, 69_990..70_000]).await.unwrap();
    assert_eq!(ranges[1].as_ref(), &body[69_990..]);
}

#[tokio::test]
async fn head_gives_the_size() {
    let (_s3, st) = lake().await;
    put_parquet(&st).await;
    let meta = st.head(&Path::from(PARQUET)).await.unwrap();
    assert_eq!(meta.size, 70_000);
}

#[tokio::test]
async fn listings_go_by_delimiter_and_recursively() {
    let (_s3, st) = lake().await;
    put_parquet(&st).await;
    for k in [
        "tables/t1/part-1.parquet",
        "tables/t2/part-0.parquet",
        "tables/_meta",
    ] {
        st.put(&Path::from(k), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }
    let l = st
        .list_with_delimiter(Some(&Path::from("tables")))
        .await
        .unwrap();
    let dirs: Vec<String> = l.common_prefixes.iter().map(ToString::to_string).collect();
    let objs: Vec<String> = l.objects.iter().map(|o| o.location.to_string()).collect();
    assert_eq!(dirs, ["tables/t1", "tables/t2"]);
    assert_eq!(objs, ["tables/_meta"]);
    let mut all: Vec<String> = st
        .list(Some(&Path::from("tables/t1")))
        .map_ok(|o| o.location.to_string())
        .try_collect()
        .await
        .unwrap();
    all.sort();
    assert_eq!(
        all,
        ["tables/t1/part-0.parquet", "tables/t1/part-1.parquet"]
    );
}

#[tokio::test]
async fn a_create_only_put_refuses_an_existing_object() {
    let (_s3, st) = lake().await;
    let lock = Path::from("locks/leader");
    create(&st, &lock, b"node-a").await.unwrap();
    let again = create(&st, &lock, b"node-b").await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
}

#[tokio::test]
async fn an_update_put_applies_only_over_the_version_read() {
    let (_s3, st) = lake().await;
    let lock = Path::from("locks/leader");
    let first = create(&st, &lock, b"node-a").await.unwrap();
    let v1 = UpdateVersion {
        e_tag: first.e_tag,
        version: None,
    };
    update(&st, &lock, b"node-a2", &v1).await.unwrap();
    let stale = update(&st, &lock, b"node-c", &v1).await;
    assert!(
        matches!(stale, Err(object_store::Error::Precondition { .. })),
        "{stale:?}"
    );
    assert_eq!(
        st.get(&lock).await.unwrap().bytes().await.unwrap().as_ref(),
        b"node-a2"
    );
}

#[tokio::test]
async fn multipart_writes_join_their_parts() {
    let (_s3, st) = lake().await;
    let (big, mp) = write_big(&st).await;
    let got = st.get(&mp).await.unwrap().bytes().await.unwrap();
    assert!(got.as_ref() == big.as_slice());
    assert!(st.head(&mp).await.unwrap().e_tag.unwrap().ends_with("-3\""));
}

#[tokio::test]
async fn a_copy_outlives_the_deleted_source() {
    let (_s3, st) = lake().await;
    let (big, mp) = write_big(&st).await;
    let cp = Path::from("big/copy.bin");
    st.copy(&mp, &cp).await.unwrap();
    assert_eq!(st.head(&cp).await.unwrap().size, big.len() as u64);
    st.delete(&mp).await.unwrap();
    assert!(matches!(
        st.get(&mp).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert!(st.get(&cp).await.unwrap().bytes().await.unwrap().as_ref() == big.as_slice());
}
