//! `MantaStore` as an `object_store::ObjectStore` against a real region: the contract data
//! tools rely on (whole puts, ranged gets, heads, listings by prefix and delimiter, copies,
//! renames, conditional writes, multipart uploads), mapped onto Manta directories. Each test
//! checks one part of that contract on a region of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{client, noise};
use futures_util::{StreamExt as _, TryStreamExt as _};
use manta_client::{MantaClient, MantaStore};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt as _, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UpdateVersion,
};
use testkit::TestRegion;

/// Where the Parquet-like object of the contract tests lives.
const PARQUET: &str = "year=2024/month=01/part-0.parquet";
/// Where the CSV object with attributes lives.
const CSV: &str = "tables/t.csv";
/// Where the object written by conditional puts lives.
const FRESH: &str = "tables/new.csv";

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

/// A region, a client acting as its account, and a `MantaStore` over one of its areas, with
/// the spool directory the store writes multipart uploads into.
struct Lake {
    region: TestRegion,
    c: MantaClient,
    store: MantaStore,
    spool: tempfile::TempDir,
}

/// Starts a region and opens a store over `area` (the contract tests use `~~/stor/lake`).
/// Tests take it by reference, `let Lake { store, .. } = &lake(AREA).await;`, which keeps the
/// whole fixture (the region above all) alive until the test ends.
async fn lake(area: &str) -> Lake {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region).await;
    let spool = tempfile::tempdir().unwrap();
    let store = MantaStore::new(c.clone(), area)
        .unwrap()
        .with_spool_dir(spool.path());
    Lake {
        region,
        c,
        store,
        spool,
    }
}

/// Puts 10,004 bytes at [`PARQUET`] (a magic number, then noise) as a payload in two pieces.
async fn put_parquet(store: &MantaStore) -> PutResult {
    let payload: PutPayload = [Bytes::from_static(b"PAR1"), Bytes::from(noise(1, 10_000))]
        .into_iter()
        .collect();
    store.put(&Path::from(PARQUET), payload).await.unwrap()
}

/// Puts `a,b\n` at [`CSV`] with a content type, a cache control and an `owner` metadata value.
async fn put_csv(store: &MantaStore) {
    let attrs = Attributes::from_iter([
        (Attribute::ContentType, "text/csv"),
        (Attribute::CacheControl, "max-age=60"),
        (Attribute::Metadata("owner".into()), "data-team"),
    ]);
    let opts = PutOptions {
        attributes: attrs,
        ..PutOptions::default()
    };
    store
        .put_opts(&Path::from(CSV), "a,b\n".into(), opts)
        .await
        .unwrap();
}

/// Fills the store with the seven objects the listing and deletion tests walk: five top-level
/// prefixes, some nested two deep, with spaces, an emoji and punctuation in their names.
async fn fill(store: &MantaStore) {
    put_parquet(store).await;
    put_csv(store).await;
    for (loc, body) in [
        (Path::from(FRESH), "v2"),
        (Path::from("year=2024/month=02/part-0.parquet"), "b"),
        (Path::from("year=2024x/other"), "c"),
        (Path::from("foo bar/I contain spaces.parquet"), "d"),
        (Path::parse("🇦🇺/$shenanigans@@~.txt").unwrap(), "e"),
    ] {
        store.put(&loc, body.into()).await.unwrap();
    }
}

/// Options for a put that only succeeds over the version with etag `e`.
fn update(e: Option<String>) -> PutOptions {
    PutOptions {
        mode: PutMode::Update(UpdateVersion {
            e_tag: e,
            version: None,
        }),
        ..PutOptions::default()
    }
}

/// Every byte of the object at `loc` (which must exist).
async fn read<S: ObjectStore + ?Sized>(store: &S, loc: &Path) -> Bytes {
    store.get(loc).await.unwrap().bytes().await.unwrap()
}

/// The name of the error `r` failed with (for the kinds the tests expect), or what it was.
fn failure<T>(r: object_store::Result<T>) -> String {
    use object_store::Error;
    match r {
        Ok(_) => "no error".into(),
        Err(Error::NotFound { .. }) => "NotFound".into(),
        Err(Error::AlreadyExists { .. }) => "AlreadyExists".into(),
        Err(Error::Precondition { .. }) => "Precondition".into(),
        Err(Error::NotModified { .. }) => "NotModified".into(),
        Err(Error::NotSupported { .. }) => "NotSupported".into(),
        Err(e) => format!("another error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_names_its_area_and_needs_one() {
    let Lake {
        region, c, store, ..
    } = &lake("~~/stor/lake").await;
    let u = c.user().to_owned();
    assert_eq!(
        store.to_string(),
        format!("MantaStore({}/{u}/stor/lake)", region.url)
    );
    assert!(
        MantaStore::new(c.clone(), "~~").is_err(),
        "a store needs an area"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_lists_nothing_and_reads_not_found() {
    let Lake { store, .. } = &lake("~~/stor/lake").await;
    assert!(sorted_list(store, None).await.is_empty());
    let missing = Path::from("nope.parquet");
    assert_eq!(failure(store.get(&missing).await), "NotFound");
    assert_eq!(failure(store.head(&missing).await), "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_makes_parent_directories_and_reads_back_whole() {
    let Lake { c, store, .. } = &lake("~~/stor/lake").await;
    // The payload comes in pieces and is sent as one object.
    let put = put_parquet(store).await;
    assert!(put.e_tag.is_some());
    assert!(
        c.info("~~/stor/lake/year=2024/month=01")
            .await
            .unwrap()
            .is_directory()
    );
    let got = store.get(&Path::from(PARQUET)).await.unwrap();
    assert_eq!(got.meta.size, 10_004);
    assert_eq!(got.meta.e_tag, put.e_tag);
    assert_eq!(got.range, 0..10_004);
    let age = chrono::Utc::now() - got.meta.last_modified;
    assert!(age.num_seconds().abs() < 120, "{age}");
    let body = got.bytes().await.unwrap();
    assert_eq!(&body[..4], b"PAR1");
    assert_eq!(&body[4..], noise(1, 10_000).as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_gets_return_the_bytes_asked() {
    let Lake { store, .. } = &lake("~~/stor/lake").await;
    put_parquet(store).await;
    let loc = Path::from(PARQUET);
    let tail = &noise(1, 10_000)[9_996..];
    let ranged = |range| GetOptions {
        range: Some(range),
        ..GetOptions::default()
    };

    // Bounded.
    assert_eq!(store.get_range(&loc, 0..4).await.unwrap(), "PAR1");
    // From an offset.
    let r = store
        .get_opts(&loc, ranged(GetRange::Offset(10_000)))
        .await
        .unwrap();
    assert_eq!(r.range, 10_000..10_004);
    assert_eq!(r.meta.size, 10_004);
    assert_eq!(r.bytes().await.unwrap(), tail);
    // The last bytes.
    let r = store
        .get_opts(&loc, ranged(GetRange::Suffix(4)))
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), tail);
    // Several at once.
    let parts = store
        .get_ranges(&loc, &[0..2, 2..4, 100..110])
        .await
        .unwrap();
    assert_eq!(parts[0], "PA");
    assert_eq!(parts[1], "R1");
    assert_eq!(parts[2], noise(1, 10_000)[96..106]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_describes_objects_and_a_directory_is_not_one() {
    let Lake { store, .. } = &lake("~~/stor/lake").await;
    put_parquet(store).await;
    let loc = Path::from(PARQUET);
    let meta = store.head(&loc).await.unwrap();
    assert_eq!(meta.size, 10_004);
    assert_eq!(meta.location, loc);
    assert_eq!(
        failure(store.head(&Path::from("year=2024")).await),
        "NotFound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_travel_as_headers() {
    let Lake { c, store, .. } = &lake("~~/stor/lake").await;
    put_csv(store).await;
    let got = store.get(&Path::from(CSV)).await.unwrap();
    for (attribute, want) in [
        (Attribute::ContentType, "text/csv"),
        (Attribute::CacheControl, "max-age=60"),
        (Attribute::Metadata("owner".into()), "data-team"),
    ] {
        assert_eq!(
            got.attributes.get(&attribute).map(|v| v.as_ref()),
            Some(want),
            "{attribute:?}"
        );
    }
    assert_eq!(
        c.info("~~/stor/lake/tables/t.csv")
            .await
            .unwrap()
            .header("m-owner"),
        Some("data-team")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_puts_create_only_if_absent_and_update_only_the_version_read() {
    let Lake { store, .. } = &lake("~~/stor/lake").await;
    put_csv(store).await;
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    assert_eq!(
        failure(
            store
                .put_opts(&Path::from(CSV), "x".into(), create.clone())
                .await
        ),
        "AlreadyExists"
    );
    let fresh = Path::from(FRESH);
    let v1 = store.put_opts(&fresh, "v1".into(), create).await.unwrap();
    store
        .put_opts(&fresh, "v2".into(), update(v1.e_tag.clone()))
        .await
        .unwrap();
    assert_eq!(
        failure(store.put_opts(&fresh, "v3".into(), update(v1.e_tag)).await),
        "Precondition"
    );
    assert_eq!(read(store, &fresh).await, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_gets_compare_etags() {
    let Lake { store, .. } = &lake("~~/stor/lake").await;
    let fresh = Path::from(FRESH);
    let v1 = store.put(&fresh, "v1".into()).await.unwrap();
    let v2 = store
        .put_opts(&fresh, "v2".into(), update(v1.e_tag.clone()))
        .await
        .unwrap();
    let stale = GetOptions {
        if_match: v1.e_tag,
        ..GetOptions::default()
    };
    assert_eq!(failure(store.get_opts(&fresh, stale).await), "Precondition");
    let unchanged = GetOptions {
        if_none_match: v2.e_tag,
        ..GetOptions::default()
    };
    assert_eq!(
        failure(store.get_opts(&fresh, unchanged).await),
        "NotModified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_not_something_manta_stores() {
    let Lake { store, .. } = &lake("~~/stor/lake").await;
    let fresh = Path::from(FRESH);
    store.put(&fresh, "v1".into()).await.unwrap();
    let mut tags = object_store::TagSet::default();
    tags.push("k", "v");
    let tagged = PutOptions {
        tags,
        ..PutOptions::default()
    };
    assert_eq!(
        failure(store.put_opts(&fresh, "x".into(), tagged).await),
        "NotSupported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_go_by_prefix_segment_and_by_delimiter() {
    let Lake { store, .. } = &lake("~~/stor/lake").await;
    fill(store).await;

    // Recursive by prefix, segment-wise.
    assert_eq!(
        sorted_list(store, Some(&Path::from("year=2024"))).await,
        [
            "year=2024/month=01/part-0.parquet",
            "year=2024/month=02/part-0.parquet"
        ]
    );
    assert_eq!(sorted_list(store, None).await.len(), 7);
    assert!(
        sorted_list(store, Some(&Path::from("no/such/prefix")))
            .await
            .is_empty()
    );
    assert!(
        sorted_list(store, Some(&Path::from(CSV))).await.is_empty(),
        "an object is no prefix"
    );

    // One level, with common prefixes.
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

    // From an offset.
    let offset: Vec<String> = store
        .list_with_offset(Some(&Path::from("tables")), &Path::from(FRESH))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(offset, ["tables/t.csv"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_are_links_and_create_only_copies_refuse_to_overwrite() {
    let Lake { store, .. } = &lake("~~/stor/lake").await;
    put_csv(store).await;
    let fresh = Path::from(FRESH);
    store.put(&fresh, "v2".into()).await.unwrap();
    let copy = Path::from("copies/deep/c.csv");
    store.copy(&Path::from(CSV), &copy).await.unwrap();
    assert_eq!(read(store, &copy).await, "a,b\n");
    assert_eq!(
        failure(store.copy_if_not_exists(&fresh, &copy).await),
        "AlreadyExists"
    );
    assert_eq!(
        failure(store.copy(&Path::from("ghost"), &Path::from("g2")).await),
        "NotFound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_move_and_remove_the_directories_they_empty() {
    let Lake { c, store, .. } = &lake("~~/stor/lake").await;
    put_csv(store).await;
    let copy = Path::from("copies/deep/c.csv");
    store.copy(&Path::from(CSV), &copy).await.unwrap();
    store.rename(&copy, &Path::from("moved.csv")).await.unwrap();
    assert_eq!(failure(store.head(&copy).await), "NotFound");
    assert_eq!(read(store, &Path::from("moved.csv")).await, "a,b\n");
    assert!(
        c.info("~~/stor/lake/copies").await.is_err(),
        "rename emptied copies/deep"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_remove_the_directories_they_empty() {
    let Lake { store, .. } = &lake("~~/stor/lake").await;
    fill(store).await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_delete_of_everything_leaves_an_empty_store() {
    let Lake { store, .. } = &lake("~~/stor/lake").await;
    fill(store).await;
    let all = store.list(None).map_ok(|m| m.location).boxed();
    let deleted: Vec<Path> = store.delete_stream(all).try_collect().await.unwrap();
    assert_eq!(deleted.len(), 7);
    assert!(sorted_list(store, None).await.is_empty());
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
    let Lake {
        c, store, spool, ..
    } = &lake("~~/stor/mp").await;
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
    assert_eq!(failure(store.head(&loc).await), "NotFound");
    let done = up.complete().await.unwrap();
    assert!(done.e_tag.is_some());
    let mut want = noise(1, 3 * 1024 * 1024);
    want.extend(noise(2, 1024 * 1024));
    want.extend(noise(3, 17));
    assert!(read(store, &loc).await == want);
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
    assert_eq!(
        failure(store.head(&Path::from("aborted")).await),
        "NotFound"
    );
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);

    // The same store works behind a dyn handle, as data tools hold it.
    let dynamic: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(store.clone());
    let w = object_store::buffered::BufWriter::new(dynamic.clone(), Path::from("buffered.txt"));
    let mut w = w;
    use tokio::io::AsyncWriteExt as _;
    w.write_all(b"through BufWriter").await.unwrap();
    w.shutdown().await.unwrap();
    assert_eq!(
        read(&*dynamic, &Path::from("buffered.txt")).await,
        "through BufWriter"
    );
}
