//! `MantaStore` as an `object_store::ObjectStore` against a real region: the contract data
//! tools rely on (whole puts, ranged gets, heads, listings by prefix and delimiter, copies,
//! renames, conditional writes, multipart uploads), mapped onto Manta directories.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{client, noise};
use futures_util::{StreamExt as _, TryStreamExt as _};
use manta_client::MantaStore;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt as _, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, UpdateVersion,
};
use testkit::TestRegion;

async fn sorted_list(store: &MantaStore, prefix: Option<&Path>) -> Vec<String> {
    let mut v: Vec<String> = store
        .list(prefix)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_contract_over_manta_directories() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region).await;
    let spool = tempfile::tempdir().unwrap();
    let store = MantaStore::new(c.clone(), "~~/stor/lake")
        .unwrap()
        .with_spool_dir(spool.path());
    let u = c.user().to_owned();
    assert_eq!(
        store.to_string(),
        format!("MantaStore({}/{u}/stor/lake)", region.url)
    );
    assert!(
        MantaStore::new(c.clone(), "~~").is_err(),
        "a store needs an area"
    );

    // Nothing there yet: listings are empty, reads are NotFound.
    assert!(sorted_list(&store, None).await.is_empty());
    let missing = Path::from("nope.parquet");
    assert!(matches!(
        store.get(&missing).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert!(matches!(
        store.head(&missing).await,
        Err(object_store::Error::NotFound { .. })
    ));

    // A put makes the parent directories; a payload in pieces is sent as one object.
    let loc = Path::from("year=2024/month=01/part-0.parquet");
    let payload: PutPayload = [Bytes::from_static(b"PAR1"), Bytes::from(noise(1, 10_000))]
        .into_iter()
        .collect();
    let put = store.put(&loc, payload).await.unwrap();
    assert!(put.e_tag.is_some());
    assert!(
        c.info("~~/stor/lake/year=2024/month=01")
            .await
            .unwrap()
            .is_directory()
    );
    let got = store.get(&loc).await.unwrap();
    assert_eq!(got.meta.size, 10_004);
    assert_eq!(got.meta.e_tag, put.e_tag);
    assert_eq!(got.range, 0..10_004);
    let age = chrono::Utc::now() - got.meta.last_modified;
    assert!(age.num_seconds().abs() < 120, "{age}");
    let body = got.bytes().await.unwrap();
    assert_eq!(&body[..4], b"PAR1");
    assert_eq!(&body[4..], noise(1, 10_000).as_slice());

    // Ranges: bounded, from an offset, the last bytes, several at once.
    assert_eq!(store.get_range(&loc, 0..4).await.unwrap(), "PAR1");
    let r = store
        .get_opts(
            &loc,
            GetOptions {
                range: Some(GetRange::Offset(10_000)),
                ..GetOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.range, 10_000..10_004);
    assert_eq!(r.meta.size, 10_004);
    assert_eq!(r.bytes().await.unwrap(), noise(1, 10_000)[9_996..]);
    let r = store
        .get_opts(
            &loc,
            GetOptions {
                range: Some(GetRange::Suffix(4)),
                ..GetOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), noise(1, 10_000)[9_996..]);
    let parts = store
        .get_ranges(&loc, &[0..2, 2..4, 100..110])
        .await
        .unwrap();
    assert_eq!(parts[0], "PA");
    assert_eq!(parts[1], "R1");
    assert_eq!(parts[2], noise(1, 10_000)[96..106]);

    // Head; a directory is not an object.
    let meta = store.head(&loc).await.unwrap();
    assert_eq!(meta.size, 10_004);
    assert_eq!(meta.location, loc);
    assert!(matches!(
        store.head(&Path::from("year=2024")).await,
        Err(object_store::Error::NotFound { .. })
    ));

    // Attributes travel as headers.
    let attrs = Attributes::from_iter([
        (Attribute::ContentType, "text/csv"),
        (Attribute::CacheControl, "max-age=60"),
        (Attribute::Metadata("owner".into()), "data-team"),
    ]);
    let csv = Path::from("tables/t.csv");
    store
        .put_opts(
            &csv,
            "a,b\n".into(),
            PutOptions {
                attributes: attrs,
                ..PutOptions::default()
            },
        )
        .await
        .unwrap();
    let got = store.get(&csv).await.unwrap();
    assert_eq!(
        got.attributes
            .get(&Attribute::ContentType)
            .map(|v| v.as_ref()),
        Some("text/csv")
    );
    assert_eq!(
        got.attributes
            .get(&Attribute::CacheControl)
            .map(|v| v.as_ref()),
        Some("max-age=60")
    );
    assert_eq!(
        got.attributes
            .get(&Attribute::Metadata("owner".into()))
            .map(|v| v.as_ref()),
        Some("data-team")
    );
    assert_eq!(
        c.info("~~/stor/lake/tables/t.csv")
            .await
            .unwrap()
            .header("m-owner"),
        Some("data-team")
    );

    // Conditional writes: create only if absent, update only the version read.
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    assert!(matches!(
        store.put_opts(&csv, "x".into(), create.clone()).await,
        Err(object_store::Error::AlreadyExists { .. })
    ));
    let fresh = Path::from("tables/new.csv");
    let v1 = store.put_opts(&fresh, "v1".into(), create).await.unwrap();
    let update = |e: Option<String>| PutOptions {
        mode: PutMode::Update(UpdateVersion {
            e_tag: e,
            version: None,
        }),
        ..PutOptions::default()
    };
    let v2 = store
        .put_opts(&fresh, "v2".into(), update(v1.e_tag.clone()))
        .await
        .unwrap();
    assert!(matches!(
        store
            .put_opts(&fresh, "v3".into(), update(v1.e_tag.clone()))
            .await,
        Err(object_store::Error::Precondition { .. })
    ));
    assert_eq!(
        store.get(&fresh).await.unwrap().bytes().await.unwrap(),
        "v2"
    );
    // Conditional reads.
    let stale = GetOptions {
        if_match: v1.e_tag.clone(),
        ..GetOptions::default()
    };
    assert!(matches!(
        store.get_opts(&fresh, stale).await,
        Err(object_store::Error::Precondition { .. })
    ));
    let unchanged = GetOptions {
        if_none_match: v2.e_tag.clone(),
        ..GetOptions::default()
    };
    assert!(matches!(
        store.get_opts(&fresh, unchanged).await,
        Err(object_store::Error::NotModified { .. })
    ));
    // Tags are not something Manta stores.
    let mut tags = object_store::TagSet::default();
    tags.push("k", "v");
    assert!(matches!(
        store
            .put_opts(
                &fresh,
                "x".into(),
                PutOptions {
                    tags,
                    ..PutOptions::default()
                }
            )
            .await,
        Err(object_store::Error::NotSupported { .. })
    ));

    // Listing: recursive by prefix (segment-wise), and one level with common prefixes.
    store
        .put(&Path::from("year=2024/month=02/part-0.parquet"), "b".into())
        .await
        .unwrap();
    store
        .put(&Path::from("year=2024x/other"), "c".into())
        .await
        .unwrap();
    store
        .put(&Path::from("foo bar/I contain spaces.parquet"), "d".into())
        .await
        .unwrap();
    store
        .put(&Path::parse("🇦🇺/$shenanigans@@~.txt").unwrap(), "e".into())
        .await
        .unwrap();
    assert_eq!(
        sorted_list(&store, Some(&Path::from("year=2024"))).await,
        [
            "year=2024/month=01/part-0.parquet",
            "year=2024/month=02/part-0.parquet"
        ]
    );
    assert_eq!(sorted_list(&store, None).await.len(), 7);
    assert!(
        sorted_list(&store, Some(&Path::from("no/such/prefix")))
            .await
            .is_empty()
    );
    assert!(
        sorted_list(&store, Some(&csv)).await.is_empty(),
        "an object is no prefix"
    );
    let top = store.list_with_delimiter(None).await.unwrap();
    let mut prefixes: Vec<String> = top
        .common_prefixes
        .iter()
        .map(ToString::to_string)
        .collect();
    prefixes.sort();
    assert_eq!(
        prefixes,
        ["foo bar", "tables", "year=2024", "year=2024x", "🇦🇺"]
    );
    assert!(top.objects.is_empty());
    let one = store
        .list_with_delimiter(Some(&Path::from("tables")))
        .await
        .unwrap();
    let mut names: Vec<String> = one.objects.iter().map(|m| m.location.to_string()).collect();
    names.sort();
    assert_eq!(names, ["tables/new.csv", "tables/t.csv"]);
    let offset: Vec<String> = store
        .list_with_offset(Some(&Path::from("tables")), &Path::from("tables/new.csv"))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(offset, ["tables/t.csv"]);

    // Copies are links; create-only copies refuse to overwrite; renames move.
    let copy = Path::from("copies/deep/c.csv");
    store.copy(&csv, &copy).await.unwrap();
    assert_eq!(
        store.get(&copy).await.unwrap().bytes().await.unwrap(),
        "a,b\n"
    );
    assert!(matches!(
        store.copy_if_not_exists(&fresh, &copy).await,
        Err(object_store::Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.copy(&Path::from("ghost"), &Path::from("g2")).await,
        Err(object_store::Error::NotFound { .. })
    ));
    store.rename(&copy, &Path::from("moved.csv")).await.unwrap();
    assert!(matches!(
        store.head(&copy).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert_eq!(
        store
            .get(&Path::from("moved.csv"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        "a,b\n"
    );

    // Deleting removes the directories it empties, so they stop showing as prefixes.
    assert!(
        c.info("~~/stor/lake/copies").await.is_err(),
        "rename emptied copies/deep"
    );
    store.delete(&Path::from("year=2024x/other")).await.unwrap();
    store.delete(&Path::from("year=2024x/other")).await.unwrap(); // not there: still fine
    let top = store.list_with_delimiter(None).await.unwrap();
    assert!(
        !top.common_prefixes
            .iter()
            .any(|p| p.as_ref() == "year=2024x")
    );
    assert!(
        top.common_prefixes
            .iter()
            .any(|p| p.as_ref() == "year=2024")
    );
    // Bulk delete of everything leaves an empty store.
    let all = store.list(None).map_ok(|m| m.location).boxed();
    let deleted: Vec<Path> = store.delete_stream(all).try_collect().await.unwrap();
    assert_eq!(deleted.len(), 7);
    assert!(sorted_list(&store, None).await.is_empty());
    assert!(
        store
            .list_with_delimiter(None)
            .await
            .unwrap()
            .common_prefixes
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_spool_and_upload_once() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region).await;
    let spool = tempfile::tempdir().unwrap();
    let store = MantaStore::new(c.clone(), "~~/stor/mp")
        .unwrap()
        .with_spool_dir(spool.path());
    let loc = Path::from("big/object.bin");

    // Parts finish out of order; their order is the order put_part was called in.
    let mut up = store.put_multipart(&loc).await.unwrap();
    let p0 = up.put_part(noise(1, 3 * 1024 * 1024).into());
    let p1 = up.put_part(noise(2, 1024 * 1024).into());
    let p2 = up.put_part(noise(3, 17).into());
    p2.await.unwrap();
    p1.await.unwrap();
    p0.await.unwrap();
    // Nothing is visible before complete.
    assert!(matches!(
        store.head(&loc).await,
        Err(object_store::Error::NotFound { .. })
    ));
    let done = up.complete().await.unwrap();
    assert!(done.e_tag.is_some());
    let mut want = noise(1, 3 * 1024 * 1024);
    want.extend(noise(2, 1024 * 1024));
    want.extend(noise(3, 17));
    assert!(store.get(&loc).await.unwrap().bytes().await.unwrap() == want);
    assert_eq!(
        std::fs::read_dir(spool.path()).unwrap().count(),
        0,
        "spool file removed"
    );

    // Attributes of a multipart upload are kept.
    let opts = PutMultipartOptions {
        attributes: Attributes::from_iter([(Attribute::ContentType, "application/x-ndjson")]),
        ..PutMultipartOptions::default()
    };
    let mut up = store
        .put_multipart_opts(&Path::from("logs.ndjson"), opts)
        .await
        .unwrap();
    up.put_part("{}\n".into()).await.unwrap();
    up.complete().await.unwrap();
    let h = c.info("~~/stor/mp/logs.ndjson").await.unwrap();
    assert_eq!(h.header("content-type"), Some("application/x-ndjson"));

    // An aborted upload leaves no object and no spool file.
    let mut up = store.put_multipart(&Path::from("aborted")).await.unwrap();
    up.put_part(noise(4, 1000).into()).await.unwrap();
    up.abort().await.unwrap();
    drop(up);
    assert!(matches!(
        store.head(&Path::from("aborted")).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);

    // The same store works behind a dyn handle, as data tools hold it.
    let dynamic: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(store.clone());
    let w = object_store::buffered::BufWriter::new(dynamic.clone(), Path::from("buffered.txt"));
    let mut w = w;
    use tokio::io::AsyncWriteExt as _;
    w.write_all(b"through BufWriter").await.unwrap();
    w.shutdown().await.unwrap();
    assert_eq!(
        dynamic
            .get(&Path::from("buffered.txt"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        "through BufWriter"
    );
}
