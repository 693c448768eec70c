//! The `object_store` crate's S3 backend (`AmazonS3Builder`, path style, plain HTTP) against a
//! real region: put, get, ranges, head, listing with a delimiter, conditional puts, multipart
//! writes, copy, delete.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod s3_common;

use futures_util::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion,
    WriteMultipart,
};
use s3_common::*;

fn store(s3: &S3Region, bucket: &str) -> impl ObjectStore {
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

#[tokio::test]
async fn object_store_s3_backend() {
    let s3 = start().await;
    s3.client()
        .create_bucket()
        .bucket("lake")
        .send()
        .await
        .unwrap();
    let st = store(&s3, "lake");

    let body = data(70_000, 5);
    let p = Path::from("tables/t1/part-0.parquet");
    let put = st.put(&p, PutPayload::from(body.clone())).await.unwrap();
    assert_eq!(
        put.e_tag.as_deref(),
        Some(format!("\"{}\"", md5_hex(&body)).as_str())
    );
    let got = st.get(&p).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), body.as_slice());
    let r = st.get_range(&p, 1000..1010).await.unwrap();
    assert_eq!(r.as_ref(), &body[1000..1010]);
    let ranges = st.get_ranges(&p, &[0..5, 69_990..70_000]).await.unwrap();
    assert_eq!(ranges[1].as_ref(), &body[69_990..]);
    let meta = st.head(&p).await.unwrap();
    assert_eq!(meta.size, 70_000);

    // Listing with a delimiter, and recursively.
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

    // Conditional puts: create-only, and update-if-unchanged.
    let lock = Path::from("locks/leader");
    let first = st
        .put_opts(
            &lock,
            PutPayload::from_static(b"node-a"),
            PutOptions::from(PutMode::Create),
        )
        .await
        .unwrap();
    let again = st
        .put_opts(
            &lock,
            PutPayload::from_static(b"node-b"),
            PutOptions::from(PutMode::Create),
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    let v1 = UpdateVersion {
        e_tag: first.e_tag.clone(),
        version: None,
    };
    st.put_opts(
        &lock,
        PutPayload::from_static(b"node-a2"),
        PutOptions::from(PutMode::Update(v1.clone())),
    )
    .await
    .unwrap();
    let stale = st
        .put_opts(
            &lock,
            PutPayload::from_static(b"node-c"),
            PutOptions::from(PutMode::Update(v1)),
        )
        .await;
    assert!(
        matches!(stale, Err(object_store::Error::Precondition { .. })),
        "{stale:?}"
    );
    assert_eq!(
        st.get(&lock).await.unwrap().bytes().await.unwrap().as_ref(),
        b"node-a2"
    );

    // Multipart writes (parts of 5 MiB and a short last one).
    let big = data(11 * 1024 * 1024 + 17, 6);
    let mp = Path::from("big/blob.bin");
    let upload = st.put_multipart(&mp).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
    for chunk in big.chunks(1024 * 1024) {
        w.write(chunk);
    }
    w.finish().await.unwrap();
    let got = st.get(&mp).await.unwrap().bytes().await.unwrap();
    assert!(got.as_ref() == big.as_slice());
    assert!(st.head(&mp).await.unwrap().e_tag.unwrap().ends_with("-3\""));

    // Copy and delete.
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
