//! The client against a real region: streaming both ways, error codes of bodiless answers,
//! directory helpers, tree walks, and retries/resumption through a proxy that breaks
//! connections on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fault, FlakyProxy, client, config, noise};
use futures_util::{StreamExt as _, TryStreamExt as _};
use manta_client::{DownloadOptions, Error, MantaClient, Progress, PutOptions, WalkOptions};
use testkit::TestRegion;

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(e) => e
            .code_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{e}")),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_files_and_readers_both_ways() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region).await;
    c.mkdirp("~~/stor/s/t").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // A file goes up from a reader thread with its length; progress reaches the size.
    let data = noise(1, 5 * 1024 * 1024 + 3);
    let src = dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = seen.clone();
    let opts = PutOptions {
        progress: Some(Progress::new(move |n| {
            s2.store(n, std::sync::atomic::Ordering::Relaxed);
        })),
        ..PutOptions::default()
    };
    let put = c
        .put_file("~~/stor/s/t/file.bin", &src, opts)
        .await
        .unwrap();
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::Relaxed),
        data.len() as u64
    );
    assert!(put.etag.is_some());

    // It comes down into a file on a writer thread, checked against its Content-MD5.
    let out = std::fs::File::create(dir.path().join("out.bin")).unwrap();
    let (out, got) = c
        .get_to_writer("~~/stor/s/t/file.bin", DownloadOptions::default(), out)
        .await
        .unwrap();
    drop(out);
    assert_eq!(got.size, data.len() as u64);
    assert_eq!(Some(got.md5.clone()), put.computed_md5);
    assert_eq!(std::fs::read(dir.path().join("out.bin")).unwrap(), data);

    // Anything readable goes up chunked, with no length known in advance.
    let reader = std::io::Cursor::new(noise(2, 700_000));
    c.put_reader("~~/stor/s/piped", reader, PutOptions::default())
        .await
        .unwrap();
    let (v, _) = c
        .get_to_writer("~~/stor/s/piped", DownloadOptions::default(), Vec::new())
        .await
        .unwrap();
    assert_eq!(v, noise(2, 700_000));

    // A range is passed through (and turns off the whole-object checks).
    let opts = DownloadOptions {
        headers: vec![("range".into(), "bytes=10-19".into())],
        ..DownloadOptions::default()
    };
    let (v, _) = c
        .get_to_writer("~~/stor/s/piped", opts, Vec::new())
        .await
        .unwrap();
    assert_eq!(v, noise(2, 700_000)[10..20]);

    // Pieces in memory go up without being joined; an empty file is fine too.
    let parts = vec![
        bytes::Bytes::from_static(b"ab"),
        bytes::Bytes::from_static(b"cd"),
    ];
    c.put_parts("~~/stor/s/parts", parts, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(c.get_bytes("~~/stor/s/parts").await.unwrap(), "abcd");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    c.put_file("~~/stor/s/empty", &empty, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(c.info("~~/stor/s/empty").await.unwrap().size(), Some(0));

    // A directory is refused when only objects are wanted; a local directory cannot be sent.
    let opts = DownloadOptions {
        objects_only: true,
        ..DownloadOptions::default()
    };
    assert_eq!(
        code(c.get_to_writer("~~/stor/s", opts, Vec::new()).await),
        "OperationNotAllowedOnDirectory"
    );
    assert!(matches!(
        c.put_file("~~/stor/s/x", dir.path(), PutOptions::default())
            .await,
        Err(Error::Io(_))
    ));

    // A writer that fails stops the download with its error.
    #[derive(Debug)]
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "disk full",
            ))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let r = c
        .get_to_writer("~~/stor/s/t/file.bin", DownloadOptions::default(), Full)
        .await;
    assert!(
        matches!(&r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::StorageFull),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_directories_and_walks() {
    let region = TestRegion::start().await.unwrap();
    let c = client(&region).await;

    // A HEAD has no body, yet its errors carry the server's code.
    assert_eq!(code(c.info("~~/stor/nope").await), "ResourceNotFound");
    assert_eq!(
        code(c.info("/nobody-at-all/stor/x").await),
        "AccountDoesNotExist"
    );
    let e = c.info("~~/stor/nope").await.unwrap_err();
    assert!(e.to_string().contains("/stor/nope was not found"), "{e}");
    assert!(!e.is_retryable());
    // Bad paths never reach the server.
    assert!(matches!(
        c.info("/x/unknown-area").await,
        Err(Error::InvalidPath(_))
    ));

    // mkdirp makes every missing level, and is happy when they exist.
    c.mkdirp("~~/stor/w/x/y/z").await.unwrap();
    c.mkdirp("~~/stor/w/x/y/z").await.unwrap();
    c.mkdirp("~~/stor").await.unwrap();
    assert!(c.info("~~/stor/w/x/y").await.unwrap().is_directory());
    c.mkdirp_with("~~/stor/w/tagged", &[("m-kind".into(), "dir".into())])
        .await
        .unwrap();
    assert_eq!(
        c.info("~~/stor/w/tagged").await.unwrap().header("m-kind"),
        Some("dir")
    );

    // A walk is depth first, in name order, each directory before its contents.
    for p in ["w/a", "w/x/b", "w/x/y/z/c", "w/x/y/d"] {
        c.put_bytes(&format!("~~/stor/{p}"), p.to_owned(), PutOptions::default())
            .await
            .unwrap();
    }
    let found: Vec<(u32, String)> = c
        .walk("~~/stor/w", WalkOptions::default())
        .map_ok(|e| (e.depth, e.path()))
        .try_collect()
        .await
        .unwrap();
    let u = c.user().to_owned();
    let expect: Vec<(u32, String)> = [
        (0, "a"),
        (0, "tagged"),
        (0, "x"),
        (1, "x/b"),
        (1, "x/y"),
        (2, "x/y/d"),
        (2, "x/y/z"),
        (3, "x/y/z/c"),
    ]
    .iter()
    .map(|(d, p)| (*d, format!("/{u}/stor/w/{p}")))
    .collect();
    assert_eq!(found, expect);
    // max_depth stops the descent.
    let shallow: Vec<String> = c
        .walk(
            "~~/stor/w",
            WalkOptions {
                parallel: 1,
                max_depth: Some(2),
            },
        )
        .map_ok(|e| e.entry.name)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(shallow, ["a", "tagged", "x", "b", "y"]);
    // Walking what is not there is an error.
    let missing: Result<Vec<_>, _> = c
        .walk("~~/stor/none", WalkOptions::default())
        .try_collect()
        .await;
    assert_eq!(code(missing), "ResourceNotFound");

    // Listing pages follow markers past 1024 entries.
    c.mkdir("~~/stor/many").await.unwrap();
    let names: Vec<String> = (0..1100).map(|i| format!("n{i:04}")).collect();
    // 32 at a time: all 1100 at once would be throttled, the account's share of the front door
    // being 256 requests in progress.
    let _: Vec<_> = futures_util::stream::iter(names.iter().map(|n| {
        let c = c.clone();
        let n = n.clone();
        async move {
            c.put_bytes(&format!("~~/stor/many/{n}"), "", PutOptions::default())
                .await
        }
    }))
    .buffer_unordered(32)
    .try_collect()
    .await
    .unwrap();
    let listed: Vec<String> = c
        .ls_all("~~/stor/many")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(listed, names);

    // rm_recursive removes a tree, however wide.
    c.rm_recursive("~~/stor/many", 16).await.unwrap();
    c.rm_recursive("~~/stor/w", 4).await.unwrap();
    assert_eq!(code(c.info("~~/stor/w").await), "ResourceNotFound");
    assert!(c.ls_all("~~/stor").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_resumes_through_a_flaky_network() {
    let region = TestRegion::start().await.unwrap();
    let direct = client(&region).await;
    let data = noise(9, 3 * 1024 * 1024);
    direct
        .put_bytes("~~/stor/big", data.clone(), PutOptions::default())
        .await
        .unwrap();

    // Two dropped connections are retried away.
    let proxy = FlakyProxy::start(&region.url, vec![Fault::Drop, Fault::Drop]).await;
    let c = MantaClient::new(config(&region, &proxy.url)).await.unwrap();
    assert_eq!(
        c.info("~~/stor/big").await.unwrap().size(),
        Some(data.len() as u64)
    );
    assert_eq!(proxy.connections(), 3);

    // Without retries the first drop is the answer.
    let proxy = FlakyProxy::start(&region.url, vec![Fault::Drop]).await;
    let c = MantaClient::new(config(&region, &proxy.url))
        .await
        .unwrap()
        .with_retries(0);
    let e = c.info("~~/stor/big").await.unwrap_err();
    assert!(matches!(e, Error::Http { .. }), "{e:?}");
    assert!(e.is_retryable());

    // A file upload is sent again from the start; a stream cannot be.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, &data[..100_000]).unwrap();
    let proxy = FlakyProxy::start(&region.url, vec![Fault::Drop]).await;
    let c = MantaClient::new(config(&region, &proxy.url)).await.unwrap();
    c.put_file("~~/stor/retried", &f, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        direct.get_bytes("~~/stor/retried").await.unwrap(),
        data[..100_000]
    );
    let proxy = FlakyProxy::start(&region.url, vec![Fault::Drop]).await;
    let c = MantaClient::new(config(&region, &proxy.url)).await.unwrap();
    let r = c
        .put_reader(
            "~~/stor/streamed",
            std::io::Cursor::new(vec![1u8; 1000]),
            PutOptions::default(),
        )
        .await;
    assert!(matches!(r, Err(Error::Http { .. })), "{r:?}");

    // A download cut off mid-body resumes where it stopped and delivers exact bytes.
    let proxy = FlakyProxy::start(&region.url, vec![Fault::CutAfter(1_000_000)]).await;
    let c = MantaClient::new(config(&region, &proxy.url)).await.unwrap();
    let (v, got) = c
        .get_to_writer("~~/stor/big", DownloadOptions::default(), Vec::new())
        .await
        .unwrap();
    assert_eq!(got.size, data.len() as u64);
    assert!(v == data, "resumed bytes differ");
    assert_eq!(proxy.connections(), 2);
    // Without retries the cut is an error, and no partial result is claimed.
    let proxy = FlakyProxy::start(&region.url, vec![Fault::CutAfter(1_000_000)]).await;
    let c = MantaClient::new(config(&region, &proxy.url))
        .await
        .unwrap()
        .with_retries(0);
    let r = c
        .get_to_writer("~~/stor/big", DownloadOptions::default(), Vec::new())
        .await;
    assert!(r.is_err(), "a cut download must fail");
}
