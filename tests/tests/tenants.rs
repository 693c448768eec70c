//! Tenants cannot take what others need: an account's requests in progress on a front door
//! and the S3 buckets it owns are bounded (the region's defaults, or the account's own limits
//! from `manta-adm account set-limits`), and another account is served while one is at its
//! bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod s3_common;

use std::time::Duration;

use common::{client, signed_headers};
use testkit::TestRegion;
use tokio::io::AsyncWriteExt as _;

fn set_limits(region: &TestRegion, login: &str, args: &[&str]) {
    testkit::process::run_ok(
        region
            .manta_adm()
            .unwrap()
            .args(["account", "set-limits", login])
            .args(args),
    );
}

/// Starts an upload of `path` as `acct` of a body of `len` bytes, sends its headers and
/// `first`, then leaves the rest to the caller: a slow client holding its request open.
async fn started_upload(
    region: &TestRegion,
    acct: &testkit::TestAccount,
    path: &str,
    len: usize,
    first: &[u8],
) -> tokio::net::TcpStream {
    let addr = region.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "PUT {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {len}\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    );
    for (k, v) in signed_headers(acct).await {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(first).await.unwrap();
    s
}

/// An upload of a large body that stalls after a few bytes.
async fn stalled_upload(
    region: &TestRegion,
    acct: &testkit::TestAccount,
    path: &str,
) -> tokio::net::TcpStream {
    started_upload(region, acct, path, 10_000_000, b"just a few bytes").await
}

/// Sends the rest of an upload and reads its whole answer.
async fn finish_upload(mut up: tokio::net::TcpStream, rest: &[u8]) -> String {
    use tokio::io::AsyncReadExt as _;
    up.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), up.read_to_end(&mut answer))
        .await
        .expect("the upload is answered")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_removed_under_an_upload_keeps_no_hidden_object() {
    let region = TestRegion::start().await.unwrap();
    let a = &region.account;
    let ca = client(&region, a).await;
    ca.mkdir("~~/stor/d").await.unwrap();
    let body = format!("late words {}", uuid::Uuid::new_v4()).into_bytes();
    let up = started_upload(
        &region,
        a,
        &format!("/{}/stor/d/late.txt", a.login),
        body.len(),
        &body[..5],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The directory is empty while the upload is in flight: its removal succeeds...
    ca.rm("~~/stor/d").await.unwrap();
    // ...and the upload that lands after it is refused, not acknowledged and hidden.
    let answer = finish_upload(up, &body[5..]).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("DirectoryDoesNotExist"), "{answer}");
    // Nothing of it is left: a new directory of that name is empty, and no node keeps the
    // bytes.
    ca.mkdir("~~/stor/d").await.unwrap();
    assert!(ca.ls_all("~~/stor/d").await.unwrap().is_empty());
    assert!(ca.info("~~/stor/d/late.txt").await.is_err());
    assert_eq!(region.copies_of(&body), Vec::<std::path::PathBuf>::new());
    // An upload into a directory that stays is unaffected, and the directory is then not
    // empty.
    ca.put_bytes("~~/stor/d/kept.txt", "kept", Default::default())
        .await
        .unwrap();
    assert!(ca.rm("~~/stor/d").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_accounts_slow_uploads_do_not_starve_another() {
    let region = TestRegion::start().await.unwrap();
    let a = &region.account;
    let b = region.add_account("bob").await.unwrap();
    set_limits(&region, &a.login, &["--concurrent-requests", "2"]);
    let ca = client(&region, a).await;
    let cb = client(&region, &b).await;

    // A's two slow uploads take its whole share...
    let path = |i: usize| format!("/{}/stor/slow{i}", a.login);
    let mut held = Vec::new();
    for i in 0..2 {
        held.push(stalled_upload(&region, a, &path(i)).await);
    }
    let mut refused = None;
    for _ in 0..50 {
        // On a loaded machine the front door may take a probe below before a stalled upload,
        // and refuse that upload instead: it is started again.
        for (i, s) in held.iter_mut().enumerate() {
            let mut buf = [0u8; 512];
            if let Ok(n) = s.try_read(&mut buf) {
                let said = String::from_utf8_lossy(&buf[..n]);
                assert!(
                    said.contains("ThrottledError"),
                    "stalled upload {i}: {said}"
                );
                *s = stalled_upload(&region, a, &path(i)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        match ca.ls_all("~~/stor").await {
            Err(manta_client::Error::Api { code, status, .. }) => {
                refused = Some((code, status));
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        refused,
        Some(("ThrottledError".to_owned(), 503)),
        "A's third request"
    );
    // ...and B is served all the same.
    cb.put_bytes("~~/stor/b.txt", "bob's", Default::default())
        .await
        .unwrap();
    assert_eq!(&cb.get_bytes("~~/stor/b.txt").await.unwrap()[..], b"bob's");

    // Once A's uploads give up, A is served again; its limit can go back to the default.
    drop(held);
    let mut back = false;
    for _ in 0..50 {
        if ca.ls_all("~~/stor").await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "A is served once its slow uploads are gone");
    set_limits(&region, &a.login, &["--concurrent-requests", "default"]);
    let acct = region
        .manta_adm()
        .unwrap()
        .args(["account", "get", &a.login])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&acct.stdout).unwrap();
    assert!(v.get("limits").is_none(), "no own limits left: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_owns_at_most_its_share_of_bucket_names() {
    let s3 = s3_common::start().await;
    let login = s3.region.account.login.clone();
    set_limits(&s3.region, &login, &["--buckets", "2"]);
    let c = s3.client();
    for b in ["one", "two"] {
        c.create_bucket().bucket(b).send().await.unwrap();
    }
    let e = c.create_bucket().bucket("three").send().await.unwrap_err();
    let e = e.into_service_error();
    assert_eq!(e.meta().code(), Some("TooManyBuckets"), "{e:?}");
    // Creating one it already owns still answers as below the limit (200, as us-east-1 does),
    // not `TooManyBuckets`; another account is unaffected.
    c.create_bucket().bucket("one").send().await.unwrap();
    s3.region.add_account("other").await.unwrap();
    let (ak, sk) = s3_common::s3_key(&s3.region, "other");
    let other = s3_common::sdk(&s3.endpoint, &ak, &sk);
    other.create_bucket().bucket("three").send().await.unwrap();
    // A deleted bucket frees its place.
    c.delete_bucket().bucket("two").send().await.unwrap();
    c.create_bucket().bucket("four").send().await.unwrap();
    // Bad limits are refused with a clear message.
    let out = s3
        .region
        .manta_adm()
        .unwrap()
        .args(["account", "set-limits", &login, "--buckets", "lots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a number or `default`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_outlives_its_bucket_is_not_the_next_owners() {
    use tokio::io::AsyncReadExt as _;
    let s3 = s3_common::start().await;
    let a = s3.client();
    a.create_bucket().bucket("shared").send().await.unwrap();
    // A starts an upload into its bucket and stalls halfway...
    let url = testkit::s3::presign(
        &s3.endpoint,
        "PUT",
        "shared",
        "left.txt",
        (&s3.access_key, &s3.secret_key),
        600,
        std::time::SystemTime::now(),
    );
    let rest = url.trim_start_matches("http://");
    let (host, target) = rest.split_at(rest.find('/').unwrap());
    let mut up = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = b"A's words, late for the bucket";
    let head = format!(
        "PUT {target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    up.write_all(head.as_bytes()).await.unwrap();
    up.write_all(&body[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...deletes the bucket (still empty) meanwhile, and B takes the name.
    a.delete_bucket().bucket("shared").send().await.unwrap();
    s3.region.add_account("bee").await.unwrap();
    let (ak, sk) = s3_common::s3_key(&s3.region, "bee");
    let b = s3_common::sdk(&s3.endpoint, &ak, &sk);
    b.create_bucket().bucket("shared").send().await.unwrap();
    // A's upload completes: it is told the bucket is gone, and B's bucket does not hold
    // A's object.
    up.write_all(&body[5..]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), up.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("NoSuchBucket"), "{answer}");
    assert_eq!(s3.region.copies_of(body), Vec::<std::path::PathBuf>::new());
    let listed = b.list_objects_v2().bucket("shared").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(0), "{listed:?}");
    let got = b.get_object().bucket("shared").key("left.txt").send().await;
    let e = got.unwrap_err().into_service_error();
    assert!(e.is_no_such_key(), "{e:?}");
    // B's bucket is empty to B: it can delete it.
    b.delete_bucket().bucket("shared").send().await.unwrap();
}

/// The status of a Manta client call that must fail.
fn status_of<T: std::fmt::Debug>(r: Result<T, manta_client::Error>) -> u16 {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(manta_client::Error::Api { status, .. }) => status,
        Err(e) => panic!("expected a refusal, got {e}"),
    }
}

/// The tenant matrix: account B tries every way in to account A's private data, through the
/// Manta API and S3, and is refused each time; A's data is unchanged after. (Inside a task,
/// as job input and as job output: `jobs/tests/isolation.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_account_reaches_none_of_an_accounts_private_data() {
    use s3_common::code_of;
    let s3 = s3_common::start().await;
    let a = &s3.region.account;
    let ca = client(&s3.region, a).await;
    let a3 = s3.client();
    let secret = format!("A's secret {}", uuid::Uuid::new_v4());
    ca.mkdir("~~/stor/dir").await.unwrap();
    ca.put_bytes("~~/stor/dir/secret.txt", secret.clone(), Default::default())
        .await
        .unwrap();
    ca.put_bytes("~~/public/open.txt", "for all", Default::default())
        .await
        .unwrap();
    a3.create_bucket().bucket("a-private").send().await.unwrap();
    a3.put_object()
        .bucket("a-private")
        .key("k")
        .body(secret.clone().into_bytes().into())
        .send()
        .await
        .unwrap();

    let b = s3.region.add_account("bea").await.unwrap();
    let cb = client(&s3.region, &b).await;
    let (bk, bs) = s3_common::s3_key(&s3.region, "bea");
    let b3 = s3_common::sdk(&s3.endpoint, &bk, &bs);
    b3.create_bucket().bucket("b-own").send().await.unwrap();
    let al = &a.login;
    let file = format!("/{al}/stor/dir/secret.txt");
    let dir = format!("/{al}/stor/dir");

    // The Manta API, with B's own signature.
    let manta: Vec<(&str, u16)> = vec![
        ("read", status_of(cb.get_bytes(&file).await)),
        ("head", status_of(cb.info(&file).await)),
        ("list", status_of(cb.ls_all(&dir).await)),
        (
            "write",
            status_of(
                cb.put_bytes(&format!("{dir}/new.txt"), "B", Default::default())
                    .await,
            ),
        ),
        (
            "overwrite",
            status_of(cb.put_bytes(&file, "B", Default::default()).await),
        ),
        ("delete", status_of(cb.rm(&file).await)),
        ("mkdir", status_of(cb.mkdir(&format!("{dir}/b")).await)),
        (
            "metadata",
            status_of(
                cb.chattr(&file, &[("content-type".into(), "text/b".into())])
                    .await,
            ),
        ),
        ("snaplink", status_of(cb.ln(&file, "~~/stor/stolen").await)),
        (
            "buckets view",
            status_of(
                cb.get_bytes(&format!("/{al}/buckets/a-private/objects/k"))
                    .await,
            ),
        ),
        (
            "jobs",
            status_of(cb.get_bytes(&format!("/{al}/jobs")).await),
        ),
    ];
    for (what, status) in &manta {
        assert!(
            *status == 403 || *status == 404,
            "Manta {what}: {status} ({manta:?})"
        );
    }
    // A URL B signs for A's object is B's request, and refused the same way.
    let url = cb
        .sign_url(
            &file,
            &["GET"],
            std::time::SystemTime::now() + Duration::from_secs(60),
        )
        .await
        .unwrap();
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), 403, "presigned by B");
    // What A made public, B reads (the refusals above are about privacy, not a broken B).
    assert_eq!(
        cb.get_bytes(&format!("/{al}/public/open.txt"))
            .await
            .unwrap(),
        "for all".as_bytes()
    );

    // S3, with B's own access key.
    let s3_tries: Vec<(&str, (String, u16))> = vec![
        (
            "get",
            code_of(b3.get_object().bucket("a-private").key("k").send().await),
        ),
        (
            "head",
            code_of(b3.head_object().bucket("a-private").key("k").send().await),
        ),
        (
            "list",
            code_of(b3.list_objects_v2().bucket("a-private").send().await),
        ),
        (
            "put",
            code_of(
                b3.put_object()
                    .bucket("a-private")
                    .key("b")
                    .body(b"B".to_vec().into())
                    .send()
                    .await,
            ),
        ),
        (
            "overwrite",
            code_of(
                b3.put_object()
                    .bucket("a-private")
                    .key("k")
                    .body(b"B".to_vec().into())
                    .send()
                    .await,
            ),
        ),
        (
            "delete",
            code_of(b3.delete_object().bucket("a-private").key("k").send().await),
        ),
        (
            "copy out",
            code_of(
                b3.copy_object()
                    .bucket("b-own")
                    .key("stolen")
                    .copy_source("a-private/k")
                    .send()
                    .await,
            ),
        ),
        (
            "copy in",
            code_of(
                b3.copy_object()
                    .bucket("a-private")
                    .key("planted")
                    .copy_source("b-own/none")
                    .send()
                    .await,
            ),
        ),
        (
            "multipart",
            code_of(
                b3.create_multipart_upload()
                    .bucket("a-private")
                    .key("m")
                    .send()
                    .await,
            ),
        ),
        (
            "delete bucket",
            code_of(b3.delete_bucket().bucket("a-private").send().await),
        ),
    ];
    for (what, (code, status)) in &s3_tries {
        // A HEAD's answer has no body to carry a code.
        let want = if *what == "head" {
            "<none>"
        } else {
            "AccessDenied"
        };
        assert_eq!(
            (code.as_str(), *status),
            (want, 403),
            "S3 {what} ({s3_tries:?})"
        );
    }

    // A's data is as it was, and B has nothing of it.
    assert_eq!(ca.get_bytes(&file).await.unwrap(), secret.as_bytes());
    assert_eq!(ca.ls_all(&dir).await.unwrap().len(), 1);
    let kept = a3
        .get_object()
        .bucket("a-private")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(s3_common::body_of(kept).await, secret.as_bytes());
    let listed = a3
        .list_objects_v2()
        .bucket("a-private")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(1));
    assert!(cb.info("~~/stor/stolen").await.is_err());
    let b_has = b3.list_objects_v2().bucket("b-own").send().await.unwrap();
    assert_eq!(b_has.key_count(), Some(0));
}
