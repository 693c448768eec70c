//! S3 credentials against a real region: access keys from `manta-adm`, accounts kept apart,
//! bad and missing signatures, presigned URLs (and their lifetime bounds), and the exact
//! XML error documents clients parse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod s3_common;

use std::time::{Duration, SystemTime};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use s3_common::*;
use testkit::s3::{Presign, presign, presign_v2, sign_v2};

/// Sends a plain request; returns the answer's status, `x-amz-request-id` and body.
async fn raw(req: reqwest::RequestBuilder) -> (u16, String, String) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-amz-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, id, resp.text().await.unwrap())
}

/// The `<Code>` of an S3 error document, checking its shape on the way.
fn xml_code(body: &str, request_id: &str) -> String {
    assert!(body.starts_with("<?xml"), "{body}");
    assert!(body.contains("<Error>"), "{body}");
    assert!(
        body.contains(&format!("<RequestId>{request_id}</RequestId>")),
        "request id {request_id} missing in {body}"
    );
    let start = body.find("<Code>").unwrap() + 6;
    let end = body.find("</Code>").unwrap();
    body[start..end].to_owned()
}

/// A region serving S3 whose account owns the bucket `private`, holding `secret.txt`.
struct Private {
    s3: S3Region,
    bucket: Bucket,
}

/// Starts a region and puts `for my eyes` at `private/secret.txt` as its account.
async fn private() -> Private {
    let s3 = start().await;
    let bucket = Bucket::create(&s3.client(), "private").await;
    let secret = ByteStream::from_static(b"for my eyes");
    bucket.put("secret.txt", secret).send().await.unwrap();
    Private { s3, bucket }
}

/// A second account, `other`, with an access key of its own: its SDK client and the key.
async fn other_account(s3: &S3Region) -> (aws_sdk_s3::Client, (String, String)) {
    s3.region.add_account("other").await.unwrap();
    let (ak, sk) = s3_key(&s3.region, "other");
    (sdk(&s3.endpoint, &ak, &sk), (ak, sk))
}

/// A hand-made presigned GET of `private/secret.txt` with `keys`, lasting `expires` seconds
/// from `at`.
fn presigned_secret(s3: &S3Region, keys: (&str, &str), expires: u64, at: SystemTime) -> String {
    presign(
        &s3.endpoint,
        "GET",
        "private",
        "secret.txt",
        keys,
        expires,
        at,
    )
}

/// The SDK's presigning configuration for URLs that last five minutes.
fn five_minutes() -> PresigningConfig {
    PresigningConfig::expires_in(Duration::from_secs(300)).unwrap()
}

#[tokio::test]
async fn another_account_reaches_nothing_in_a_private_bucket() {
    let Private { s3, bucket } = private().await;
    let (o, _) = other_account(&s3).await;
    let theirs_to_private = Bucket::new(&o, "private");
    let planted = ByteStream::from_static(b"x");
    for r in [
        code_of(o.head_bucket().bucket("private").send().await),
        code_of(theirs_to_private.get("secret.txt").send().await),
        code_of(theirs_to_private.list().send().await),
        code_of(theirs_to_private.put("planted", planted).send().await),
        code_of(theirs_to_private.delete("secret.txt").send().await),
        code_of(o.delete_bucket().bucket("private").send().await),
    ] {
        assert_eq!(r.1, 403, "{r:?}");
    }
    assert_eq!(
        code_of(theirs_to_private.delete("secret.txt").send().await).0,
        "AccessDenied"
    );
    // Still there for the owner.
    bucket.head("secret.txt").send().await.unwrap();
}

#[tokio::test]
async fn another_account_cannot_copy_from_a_private_bucket() {
    let Private { s3, .. } = private().await;
    let (o, _) = other_account(&s3).await;
    let theirs = Bucket::create(&o, "theirs").await;
    assert_eq!(
        code_of(theirs.copy("stolen", "private/secret.txt").send().await),
        ("AccessDenied".into(), 403)
    );
}

#[tokio::test]
async fn bucket_names_are_unique_in_the_region() {
    let Private { s3, .. } = private().await;
    let (o, _) = other_account(&s3).await;
    Bucket::create(&o, "theirs").await;
    assert_eq!(
        code_of(o.create_bucket().bucket("private").send().await),
        ("BucketAlreadyExists".into(), 409)
    );
    // Their listing holds their own bucket only.
    let mine: Vec<_> = o
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert_eq!(mine, ["theirs"]);
}

#[tokio::test]
async fn wrong_secrets_and_unknown_keys_are_refused() {
    let Private { s3, .. } = private().await;
    let bad = sdk(&s3.endpoint, &s3.access_key, "not-the-secret");
    assert_eq!(
        code_of(bad.list_buckets().send().await),
        ("SignatureDoesNotMatch".into(), 403)
    );
    let unknown = sdk(&s3.endpoint, "MKNOSUCHKEY0000000", "whatever");
    assert_eq!(
        code_of(unknown.list_buckets().send().await),
        ("InvalidAccessKeyId".into(), 403)
    );
}

#[tokio::test]
async fn unsigned_requests_reach_nothing_and_say_so_in_xml() {
    let Private { s3, .. } = private().await;
    let http = reqwest::Client::new();
    let (status, id, body) = raw(http.get(format!("{}/private/secret.txt", s3.endpoint))).await;
    assert_eq!(status, 403);
    // The error document carries the request id.
    assert_eq!(xml_code(&body, &id), "AccessDenied");
}

#[tokio::test]
async fn urls_presigned_by_the_sdk_get_and_put() {
    let Private { s3, bucket } = private().await;
    let http = reqwest::Client::new();
    let g = bucket
        .get("secret.txt")
        .presigned(five_minutes())
        .await
        .unwrap();
    let r = http.get(g.uri()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "for my eyes");
    let p = s3
        .client()
        .put_object()
        .bucket("private")
        .key("via-url.txt")
        .presigned(five_minutes())
        .await
        .unwrap();
    let mut put = http.put(p.uri()).body("uploaded with a URL");
    for (k, v) in p.headers() {
        put = put.header(k, v);
    }
    assert_eq!(put.send().await.unwrap().status(), 200);
    assert_eq!(bucket.bytes("via-url.txt").await, b"uploaded with a URL");
}

#[tokio::test]
async fn a_presigned_url_with_a_tampered_path_fails_its_signature() {
    // Keep the whole fixture: dropping its region would stop the front door.
    let fixture = private().await;
    let bucket = &fixture.bucket;
    let other = ByteStream::from_static(b"uploaded with a URL");
    bucket.put("via-url.txt", other).send().await.unwrap();
    let g = bucket
        .get("secret.txt")
        .presigned(five_minutes())
        .await
        .unwrap();
    let tampered = g.uri().replace("secret.txt", "via-url.txt");
    let (status, id, body) = raw(reqwest::Client::new().get(&tampered)).await;
    assert_eq!(status, 403);
    assert_eq!(xml_code(&body, &id), "SignatureDoesNotMatch");
}

#[tokio::test]
async fn presigned_urls_last_from_one_second_to_seven_days() {
    let Private { s3, .. } = private().await;
    let http = reqwest::Client::new();
    let keys = (s3.access_key.as_str(), s3.secret_key.as_str());
    let now = SystemTime::now();
    let ok = http
        .get(presigned_secret(&s3, keys, 604_800, now))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "{}", ok.text().await.unwrap());
    // 0 and over 7 days are refused, as AWS refuses them.
    for expires in [0, 604_801, 10_000_000] {
        let (status, id, body) = raw(http.get(presigned_secret(&s3, keys, expires, now))).await;
        assert_eq!(status, 403, "X-Amz-Expires={expires}: {body}");
        assert_eq!(xml_code(&body, &id), "AccessDenied");
    }
}

#[tokio::test]
async fn an_expired_presigned_url_is_refused() {
    let Private { s3, .. } = private().await;
    let keys = (s3.access_key.as_str(), s3.secret_key.as_str());
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    let url = presigned_secret(&s3, keys, 3600, two_hours_ago);
    let (status, id, body) = raw(reqwest::Client::new().get(url)).await;
    assert_eq!(status, 403);
    assert_eq!(xml_code(&body, &id), "AccessDenied");
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test]
async fn sigv2_requests_and_urls_expire() {
    let Private { s3, .. } = private().await;
    let keys = (s3.access_key.as_str(), s3.secret_key.as_str());
    let http = reqwest::Client::new();
    let url = format!("{}/private/secret.txt", s3.endpoint);
    let get_dated = |at: SystemTime| {
        let date = httpdate::fmt_http_date(at);
        let auth = sign_v2("GET", "/private/secret.txt", &date, keys);
        http.get(&url)
            .header("date", date)
            .header("authorization", auth)
    };
    let (status, _, body) = raw(get_dated(SystemTime::now())).await;
    assert_eq!((status, body.as_str()), (200, "for my eyes"));
    // The same request captured and replayed twenty minutes later (its signed date is what
    // dates it), or signed for a date ahead.
    for at in [
        SystemTime::now() - Duration::from_secs(20 * 60),
        SystemTime::now() + Duration::from_secs(20 * 60),
    ] {
        let (status, id, body) = raw(get_dated(at)).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(xml_code(&body, &id), "RequestTimeTooSkewed");
    }
    // A SigV2 header signature without a date at all.
    let auth = sign_v2("GET", "/private/secret.txt", "", keys);
    let (status, id, body) = raw(http.get(&url).header("authorization", auth)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(xml_code(&body, &id), "AccessDenied");
    // Presigned: an hour ahead works; a year ahead is refused, as SigV4's 7-day bound is.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ok = presign_v2(&s3.endpoint, "GET", "/private/secret.txt", keys, now + 3600);
    let (status, _, body) = raw(http.get(ok)).await;
    assert_eq!((status, body.as_str()), (200, "for my eyes"));
    let forever = presign_v2(
        &s3.endpoint,
        "GET",
        "/private/secret.txt",
        keys,
        now + 365 * 86_400,
    );
    let (status, id, body) = raw(http.get(forever)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(xml_code(&body, &id), "AccessDenied");
    assert!(body.contains("Expires must be at most"), "{body}");
}

#[tokio::test]
async fn another_accounts_key_cannot_presign_our_objects() {
    let Private { s3, .. } = private().await;
    let (_, (ak, sk)) = other_account(&s3).await;
    let theirs = presigned_secret(&s3, (&ak, &sk), 300, SystemTime::now());
    let r = reqwest::Client::new().get(theirs).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn error_documents() {
    let s3 = start().await;
    let c = s3.client();
    let errs = Bucket::create(&c, "errs").await;
    let http = reqwest::Client::new();
    let signed = |method: &str, key: &str| {
        presign(
            &s3.endpoint,
            method,
            "errs",
            key,
            (&s3.access_key, &s3.secret_key),
            300,
            SystemTime::now(),
        )
    };
    // NoSuchKey as XML with the request id of the response.
    let (status, id, body) = raw(http.get(signed("GET", "missing"))).await;
    assert_eq!(status, 404);
    assert_eq!(xml_code(&body, &id), "NoSuchKey");
    // HEAD errors have no body.
    let r = http.head(signed("HEAD", "missing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.bytes().await.unwrap().is_empty());
    // Unknown or malformed upload ids, continuation tokens, digests, keys and version ids.
    let x = || ByteStream::from_static(b"x");
    let long = "k".repeat(1025);
    let no_such_upload = ("NoSuchUpload".to_owned(), 404);
    let invalid = |code: &str| (code.to_owned(), 400);
    for (got, want) in [
        (
            code_of(
                errs.abort(("k", "0123456789abcdef0123456789abcdef"))
                    .send()
                    .await,
            ),
            no_such_upload.clone(),
        ),
        (
            code_of(errs.part(("k", "../../etc"), 1, x()).send().await),
            no_such_upload,
        ),
        (
            code_of(errs.list().continuation_token("!!not-ours!!").send().await),
            invalid("InvalidArgument"),
        ),
        (
            code_of(errs.put("k", x()).content_md5("not base64").send().await),
            invalid("InvalidDigest"),
        ),
        (
            code_of(errs.put(&long, x()).send().await),
            invalid("KeyTooLongError"),
        ),
        (
            code_of(
                errs.delete("k")
                    .version_id("3sL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")
                    .send()
                    .await,
            ),
            invalid("InvalidArgument"),
        ),
    ] {
        assert_eq!(got, want);
    }
    assert_eq!(
        code_of(c.create_bucket().bucket("192.168.1.1").send().await),
        ("InvalidBucketName".into(), 400)
    );
    // Declared sizes over 5 GiB are refused before any byte is read.
    let (status, id, body) = raw(http
        .put(signed("PUT", "huge"))
        .header("content-length", "0")
        .header("x-amz-decoded-content-length", "6000000000"))
    .await;
    assert_eq!(status, 400);
    assert_eq!(xml_code(&body, &id), "EntityTooLarge");
    // Operations this service does not offer say so.
    assert_eq!(
        code_of(
            c.get_bucket_lifecycle_configuration()
                .bucket("errs")
                .send()
                .await
        ),
        ("NotImplemented".into(), 501)
    );
}

#[tokio::test]
async fn virtual_hosted_style_under_a_domain() {
    let s3 = start_with(&["--s3-domain", "s3.test"], &[]).await;
    let c = s3.client();
    let vhost = Bucket::create(&c, "vhost").await;
    let file = ByteStream::from_static(b"virtual");
    vhost.put("dir/file.txt", file).send().await.unwrap();
    let addr: std::net::SocketAddr = s3.endpoint.trim_start_matches("http://").parse().unwrap();
    let port = addr.port();
    let http = reqwest::Client::builder()
        .resolve("vhost.s3.test", addr)
        .resolve("s3.test", addr)
        .build()
        .unwrap();
    let get = |base: String, path: &'static str| {
        let url = Presign {
            base: &base,
            method: "GET",
            path,
            access_key: &s3.access_key,
            secret_key: &s3.secret_key,
            expires: 300,
            now: SystemTime::now(),
        }
        .url();
        http.get(url)
    };
    for (base, path) in [
        // The bucket in the host name.
        (format!("http://vhost.s3.test:{port}"), "/dir/file.txt"),
        // The domain itself (and IP addresses, as the SDK client above) are path-style.
        (format!("http://s3.test:{port}"), "/vhost/dir/file.txt"),
    ] {
        let (status, _, body) = raw(get(base, path)).await;
        assert_eq!(status, 200);
        assert_eq!(body, "virtual");
    }
    let (status, id, body) = raw(get(format!("http://vhost.s3.test:{port}"), "/missing")).await;
    assert_eq!(status, 404);
    assert_eq!(xml_code(&body, &id), "NoSuchKey");
}

/// An anonymous request's status and error code (empty for a success).
async fn anonymous(http: &reqwest::Client, method: reqwest::Method, url: &str) -> (u16, String) {
    let (status, id, body) = raw(http.request(method, url)).await;
    let code = if status < 300 || body.is_empty() {
        String::new()
    } else {
        xml_code(&body, &id)
    };
    (status, code)
}

/// Canned ACLs: `public-read` objects are readable by anyone, private ones by nobody but the
/// owner; a `public-read` bucket can be listed by anyone; the ACLs are set at creation or
/// later and read back; what is not kept is refused, not ignored.
#[tokio::test]
async fn canned_acls_open_what_their_owner_made_public_and_nothing_else() {
    use aws_sdk_s3::types::{BucketCannedAcl, ObjectCannedAcl, Permission, Type};
    let s3 = start().await;
    let c = s3.client();
    let b = Bucket::create(&c, "pub").await;
    let http = reqwest::Client::new();
    let url = |k: &str| format!("{}/pub/{k}", s3.endpoint);
    let get = |k: &str| {
        let u = url(k);
        let http = http.clone();
        async move { anonymous(&http, reqwest::Method::GET, &u).await }
    };
    let denied = (403, "AccessDenied".to_owned());
    let fine = (200, String::new());

    b.put("open.txt", ByteStream::from_static(b"for everyone"))
        .acl(ObjectCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    b.put("closed.txt", ByteStream::from_static(b"for me"))
        .send()
        .await
        .unwrap();
    assert_eq!(get("open.txt").await, fine);
    let body = http.get(url("open.txt")).send().await.unwrap();
    assert_eq!(body.text().await.unwrap(), "for everyone");
    assert_eq!(
        anonymous(&http, reqwest::Method::HEAD, &url("open.txt"))
            .await
            .0,
        200
    );
    assert_eq!(get("closed.txt").await, denied);
    // Whether a key exists is not told to those who may not list the bucket.
    assert_eq!(get("missing").await, denied);
    assert_eq!(get("").await, denied, "listing a private bucket");
    for m in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        assert_eq!(anonymous(&http, m, &url("open.txt")).await, denied);
    }

    // Read back.
    let acl = c
        .get_object_acl()
        .bucket("pub")
        .key("open.txt")
        .send()
        .await
        .unwrap();
    let me = acl.owner().unwrap().id().unwrap().to_owned();
    let grants: Vec<_> = acl
        .grants()
        .iter()
        .map(|g| {
            let who = g.grantee().unwrap();
            (
                who.r#type().clone(),
                who.id().map(str::to_owned).or(who.uri().map(str::to_owned)),
                g.permission().unwrap().clone(),
            )
        })
        .collect();
    assert_eq!(
        grants,
        [
            (
                Type::CanonicalUser,
                Some(me.clone()),
                Permission::FullControl
            ),
            (
                Type::Group,
                Some("http://acs.amazonaws.com/groups/global/AllUsers".to_owned()),
                Permission::Read
            )
        ]
    );
    let closed = c.get_object_acl().bucket("pub").key("closed.txt").send();
    assert_eq!(closed.await.unwrap().grants().len(), 1);

    // Changed later.
    let set = |k: &'static str, acl: ObjectCannedAcl| {
        c.put_object_acl().bucket("pub").key(k).acl(acl).send()
    };
    set("closed.txt", ObjectCannedAcl::PublicRead)
        .await
        .unwrap();
    set("open.txt", ObjectCannedAcl::Private).await.unwrap();
    assert_eq!(get("closed.txt").await, fine);
    assert_eq!(get("open.txt").await, denied);
    // A copy gets the request's ACL, private by default.
    b.copy("copy.txt", "pub/closed.txt").send().await.unwrap();
    assert_eq!(get("copy.txt").await, denied);
    // A public bucket can be listed (its objects stay as they are).
    c.put_bucket_acl()
        .bucket("pub")
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    let bucket_acl = c.get_bucket_acl().bucket("pub").send().await.unwrap();
    assert_eq!(bucket_acl.grants().len(), 2);
    let listing = http.get(url("")).send().await.unwrap();
    assert_eq!(listing.status(), 200);
    assert!(
        listing
            .text()
            .await
            .unwrap()
            .contains("<Key>closed.txt</Key>")
    );
    assert_eq!(get("open.txt").await, denied);
    assert_eq!(get("missing").await, (404, "NoSuchKey".to_owned()));
    // A bucket that does not exist yet is remembered as absent for anonymous callers, and
    // forgotten when it is made here.
    let later = format!("{}/later/x", s3.endpoint);
    for _ in 0..2 {
        let got = anonymous(&http, reqwest::Method::GET, &later).await;
        assert_eq!(got, (404, "NoSuchBucket".to_owned()));
    }
    let l = Bucket::create(&c, "later").await;
    l.put("x", ByteStream::from_static(b"now"))
        .acl(ObjectCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous(&http, reqwest::Method::GET, &later).await, fine);
    // Public at creation, for buckets and multipart objects.
    c.create_bucket()
        .bucket("born-public")
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    let listing = http
        .get(format!("{}/born-public", s3.endpoint))
        .send()
        .await;
    assert_eq!(listing.unwrap().status(), 200);
    let up = b
        .start_upload("joined.txt")
        .acl(ObjectCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let p = b.part(("joined.txt", id), 1, ByteStream::from_static(b"joined"));
    let etag = p.send().await.unwrap().e_tag().unwrap().to_owned();
    b.complete(("joined.txt", id), vec![completed(1, &etag)])
        .send()
        .await
        .unwrap();
    assert_eq!(get("joined.txt").await, fine);

    // Not kept: refused rather than ignored; nothing written.
    let rw = b
        .put("rw.txt", ByteStream::from_static(b"x"))
        .acl(ObjectCannedAcl::PublicReadWrite)
        .send()
        .await;
    assert_eq!(code_of(rw), ("NotImplemented".into(), 501));
    assert_eq!(code_of(b.head("rw.txt").send().await).1, 404);
    let granted = b
        .put("granted.txt", ByteStream::from_static(b"x"))
        .grant_read("uri=http://acs.amazonaws.com/groups/global/AllUsers")
        .send()
        .await;
    assert_eq!(code_of(granted), ("NotImplemented".into(), 501));
}

/// What an SDK call came to: `ok`, `denied` (403), or the code and status of another failure.
fn outcome<T, E: aws_sdk_s3::error::ProvideErrorMetadata>(
    r: Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> String {
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    match r {
        Ok(_) => "ok".into(),
        Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
            Some(403) => "denied".into(),
            s => format!("{} {s:?}", e.code().unwrap_or("<none>")),
        },
    }
}

/// Runs `manta-adm` in the region; panics when it fails.
fn adm(s3: &S3Region, args: &[&str]) -> Vec<u8> {
    testkit::process::run_ok(s3.region.manta_adm().unwrap().args(args)).stdout
}

/// An S3 client signing with a new access key of `login`'s sub-user `user`.
fn sub_user_client(s3: &S3Region, login: &str, user: &str) -> aws_sdk_s3::Client {
    let out = adm(s3, &["s3-key", "create", login, "--user", user, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    sdk(
        &s3.endpoint,
        v["accessKeyId"].as_str().unwrap(),
        v["secretAccessKey"].as_str().unwrap(),
    )
}

/// The decision matrix over S3: the account, its sub-users with a role the bucket is tagged
/// with (one reading, one editing), one whose role is not on the bucket, another account and
/// anonymous callers, over every kind of operation. The bucket's tags are set and removed
/// with `mchmod`'s request through the Manta API.
#[tokio::test]
async fn sub_users_reach_a_bucket_only_through_its_role_tags() {
    let s3 = start().await;
    let login = s3.region.account.login.clone();
    let owner = s3.client();
    let b = Bucket::create(&owner, "team").await;
    for k in [
        "doc.txt",
        "victim-owner",
        "victim-alice",
        "victim-carol",
        "victim-dave",
    ] {
        b.put(k, ByteStream::from_static(b"team data"))
            .send()
            .await
            .unwrap();
    }
    for u in ["alice", "carol", "dave"] {
        adm(&s3, &["user", "create", &login, u]);
    }
    adm(
        &s3,
        &[
            "policy",
            "create",
            &login,
            "read",
            "--rule",
            "CAN getobject, getdirectory",
        ],
    );
    adm(
        &s3,
        &["policy", "create", &login, "edit", "--rule", "CAN *"],
    );
    for (role, user, policy) in [
        ("readers", "alice", "read"),
        ("editors", "carol", "edit"),
        ("others", "dave", "edit"),
    ] {
        adm(
            &s3,
            &[
                "role",
                "create",
                &login,
                role,
                "--member",
                user,
                "--default-member",
                user,
                "--policy",
                policy,
            ],
        );
    }
    let alice = sub_user_client(&s3, &login, "alice");
    let carol = sub_user_client(&s3, &login, "carol");
    let dave = sub_user_client(&s3, &login, "dave");
    let (other, _) = other_account(&s3).await;
    let anon = reqwest::Client::new();

    // Untagged, the bucket is the account's alone.
    let doc = |c: &aws_sdk_s3::Client| c.get_object().bucket("team").key("doc.txt").send();
    assert_eq!(outcome(doc(&alice).await), "denied");
    assert_eq!(outcome(doc(&carol).await), "denied");

    let manta = s3.region.client(&s3.region.account).await.unwrap();
    let bucket_path = format!("/{login}/buckets/team");
    let tag = |tags: &'static str| {
        let (manta, p) = (&manta, bucket_path.clone());
        async move {
            manta
                .chattr(&p, &[("role-tag".to_owned(), tags.to_owned())])
                .await
                .unwrap();
        }
    };
    tag("readers,editors").await;
    let info = manta.info(&bucket_path).await.unwrap();
    assert_eq!(info.header("role-tag"), Some("readers,editors"));
    // A tag must name a role of the account.
    let bad = manta
        .chattr(
            &bucket_path,
            &[("role-tag".to_owned(), "nobody".to_owned())],
        )
        .await;
    assert!(format!("{bad:?}").contains("InvalidRoleTag"), "{bad:?}");

    // Each caller over each operation: what the roles say, and nothing else.
    let callers: [(&str, Option<&aws_sdk_s3::Client>); 6] = [
        ("owner", Some(&owner)),
        ("alice", Some(&alice)),
        ("carol", Some(&carol)),
        ("dave", Some(&dave)),
        ("other", Some(&other)),
        ("anonymous", None),
    ];
    let mut got: Vec<(String, &str, String)> = Vec::new();
    for (who, client) in callers {
        let Some(c) = client else {
            let url = |p: &str| format!("{}/{p}", s3.endpoint);
            let status = |r: (u16, String)| {
                if r.0 < 300 {
                    "ok".to_owned()
                } else if r.0 == 403 {
                    "denied".into()
                } else {
                    format!("{r:?}")
                }
            };
            use reqwest::Method;
            for (op, m, p) in [
                ("list", Method::GET, "team"),
                ("get", Method::GET, "team/doc.txt"),
                ("head", Method::HEAD, "team/doc.txt"),
                ("put", Method::PUT, "team/new-anonymous"),
                ("delete", Method::DELETE, "team/doc.txt"),
                ("list-buckets", Method::GET, ""),
                ("create-bucket", Method::PUT, "b-anonymous"),
            ] {
                got.push((who.into(), op, status(anonymous(&anon, m, &url(p)).await)));
            }
            continue;
        };
        let list = c.list_objects_v2().bucket("team").send().await;
        got.push((who.into(), "list", outcome(list)));
        got.push((who.into(), "get", outcome(doc(c).await)));
        let head = c.head_object().bucket("team").key("doc.txt").send().await;
        got.push((who.into(), "head", outcome(head)));
        let put = c
            .put_object()
            .bucket("team")
            .key(format!("new-{who}"))
            .body(ByteStream::from_static(b"mine"))
            .send()
            .await;
        got.push((who.into(), "put", outcome(put)));
        let copy = c
            .copy_object()
            .bucket("team")
            .key(format!("copy-{who}"))
            .copy_source("team/doc.txt")
            .send()
            .await;
        got.push((who.into(), "copy", outcome(copy)));
        let del = c
            .delete_object()
            .bucket("team")
            .key(format!("victim-{who}"))
            .send()
            .await;
        got.push((who.into(), "delete", outcome(del)));
        got.push((
            who.into(),
            "list-buckets",
            outcome(c.list_buckets().send().await),
        ));
        let mk = c.create_bucket().bucket(format!("b-{who}")).send().await;
        got.push((who.into(), "create-bucket", outcome(mk)));
        let acl = c
            .put_bucket_acl()
            .bucket("team")
            .acl(aws_sdk_s3::types::BucketCannedAcl::Private)
            .send()
            .await;
        got.push((who.into(), "put-bucket-acl", outcome(acl)));
    }
    let want = |who: &str, op: &str| -> &str {
        let sdk_only = matches!(op, "copy" | "put-bucket-acl");
        match (who, op) {
            ("anonymous", _) if sdk_only => unreachable!(),
            ("owner", _) => "ok",
            ("other", "list-buckets" | "create-bucket") => "ok",
            ("alice", "list" | "get" | "head") => "ok",
            ("carol", "list" | "get" | "head" | "put" | "copy" | "delete") => "ok",
            _ => "denied",
        }
    };
    let wrong: Vec<_> = got
        .iter()
        .filter(|(who, op, out)| out != want(who, op))
        .collect();
    assert!(
        wrong.is_empty(),
        "not as the roles say: {wrong:?}\nall: {got:?}"
    );
    // What was refused did not happen.
    assert_eq!(
        outcome(b.head("new-alice").send().await),
        "NotFound Some(404)"
    );
    assert_eq!(outcome(b.head("victim-alice").send().await), "ok");
    assert_eq!(
        outcome(b.head("victim-carol").send().await),
        "NotFound Some(404)"
    );

    // The tags removed, the sub-users are shut out again.
    tag("").await;
    assert_eq!(outcome(doc(&alice).await), "denied");
    assert_eq!(outcome(doc(&carol).await), "denied");
    assert_eq!(outcome(doc(&owner).await), "ok");
    // Removing a user removes its keys.
    adm(&s3, &["user", "delete", &login, "carol"]);
    tag("editors").await;
    let gone = carol.list_objects_v2().bucket("team").send().await;
    assert_eq!(code_of(gone), ("InvalidAccessKeyId".into(), 403));
}

/// Bucket policies: public read of a prefix, or listing, maps onto the same decision as a
/// `public-read` ACL; what is not kept is refused, not stored; the document reads back.
#[tokio::test]
async fn a_bucket_policy_opens_a_prefix_to_anyone_and_nothing_more() {
    let s3 = start().await;
    let c = s3.client();
    let b = Bucket::create(&c, "site").await;
    for k in ["www/index.html", "www/a/b.css", "private.txt"] {
        b.put(k, ByteStream::from_static(b"<p>hi</p>"))
            .send()
            .await
            .unwrap();
    }
    let http = reqwest::Client::new();
    let get = |k: &str| {
        let (http, u) = (http.clone(), format!("{}/site/{k}", s3.endpoint));
        async move { anonymous(&http, reqwest::Method::GET, &u).await }
    };
    let denied = (403, "AccessDenied".to_owned());
    let fine = (200, String::new());
    assert_eq!(get("www/index.html").await, denied);
    let none = c.get_bucket_policy().bucket("site").send().await;
    assert_eq!(code_of(none), ("NoSuchBucketPolicy".into(), 404));

    let policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"site","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/www/*"}]}"#;
    c.put_bucket_policy()
        .bucket("site")
        .policy(policy)
        .send()
        .await
        .unwrap();
    let back = c.get_bucket_policy().bucket("site").send().await.unwrap();
    assert_eq!(back.policy(), Some(policy));
    assert_eq!(get("www/index.html").await, fine);
    assert_eq!(get("www/a/b.css").await, fine);
    assert_eq!(get("private.txt").await, denied);
    assert_eq!(
        get("www/missing").await,
        denied,
        "a missing key is not told without listing"
    );
    assert_eq!(get("").await, denied, "listing is not granted");
    for m in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        let u = format!("{}/site/www/index.html", s3.endpoint);
        assert_eq!(anonymous(&http, m, &u).await, denied);
    }

    // Listing, added.
    let both = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":["s3:ListBucket"],"Resource":"arn:aws:s3:::site"},{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":["arn:aws:s3:::site/www/*"]}]}"#;
    c.put_bucket_policy()
        .bucket("site")
        .policy(both)
        .send()
        .await
        .unwrap();
    assert_eq!(get("").await, fine);
    assert_eq!(get("www/missing").await, (404, "NoSuchKey".to_owned()));

    // Not kept: refused, and the policy in force stays.
    for (bad, code) in [
        (policy.replace("Allow", "Deny"), "NotImplemented"),
        (
            policy.replace("s3:GetObject", "s3:PutObject"),
            "NotImplemented",
        ),
        (
            policy.replace(
                r#""Principal":"*""#,
                r#""Principal":{"AWS":"arn:aws:iam::1:root"}"#,
            ),
            "NotImplemented",
        ),
        (
            policy.replace("site/www", "elsewhere/www"),
            "MalformedPolicy",
        ),
        ("not json".to_owned(), "MalformedPolicy"),
    ] {
        let r = c
            .put_bucket_policy()
            .bucket("site")
            .policy(bad.clone())
            .send()
            .await;
        assert_eq!(code_of(r).0, code, "{bad}");
    }
    assert_eq!(
        c.get_bucket_policy()
            .bucket("site")
            .send()
            .await
            .unwrap()
            .policy(),
        Some(both)
    );

    // Another account may not set or read it, but reads what it opens as anyone does.
    let (other, _) = other_account(&s3).await;
    let r = other.get_bucket_policy().bucket("site").send().await;
    assert_eq!(code_of(r).1, 403);
    let r = other
        .put_bucket_policy()
        .bucket("site")
        .policy(policy)
        .send()
        .await;
    assert_eq!(code_of(r).1, 403);
    let read = other
        .get_object()
        .bucket("site")
        .key("www/index.html")
        .send();
    assert_eq!(body_of(read.await.unwrap()).await, b"<p>hi</p>");
    let private = other.get_object().bucket("site").key("private.txt").send();
    assert_eq!(code_of(private.await), ("AccessDenied".into(), 403));
    let listed = other.list_objects_v2().bucket("site").send().await.unwrap();
    assert_eq!(listed.contents().len(), 3);
    // It may copy what is open into a bucket of its own, and nothing else.
    let mine = Bucket::create(&other, "mine").await;
    mine.copy("index.html", "site/www/index.html")
        .send()
        .await
        .unwrap();
    assert_eq!(mine.bytes("index.html").await, b"<p>hi</p>");
    let stolen = mine.copy("stolen", "site/private.txt").send().await;
    assert_eq!(code_of(stolen), ("AccessDenied".into(), 403));
    let owner_id = c.get_bucket_acl().bucket("site").send().await.unwrap();
    let owner_id = owner_id.owner().unwrap().id().unwrap().to_owned();
    let named = mine
        .copy("again", "site/www/index.html")
        .expected_source_bucket_owner(&owner_id)
        .send()
        .await;
    assert!(named.is_ok(), "{named:?}");
    let misnamed = mine
        .copy("again", "site/www/index.html")
        .expected_source_bucket_owner("someone-else")
        .send()
        .await;
    assert_eq!(code_of(misnamed), ("AccessDenied".into(), 403));
    let write = other
        .put_object()
        .bucket("site")
        .key("www/evil.html")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(code_of(write), ("AccessDenied".into(), 403));

    c.delete_bucket_policy()
        .bucket("site")
        .send()
        .await
        .unwrap();
    assert_eq!(get("www/index.html").await, denied);
    assert_eq!(get("").await, denied);
}
