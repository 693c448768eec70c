//! The S3 API with the official AWS SDK (`aws-sdk-s3`, path style) against a real region:
//! buckets, objects, metadata, ranges, conditional requests, copies, listings, multipart
//! uploads, credentials and isolation between accounts, presigned URLs, and the Manta API's
//! view of buckets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod s3_common;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use s3_common::*;

/// The S3 error code and HTTP status of a failed SDK call.
fn code_of<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    r: Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (String, u16) {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            (e.code().unwrap_or("<none>").to_owned(), status)
        }
    }
}

/// Keys that must round-trip and list in order: flat keys where `a` and `a/b` coexist, and
/// characters that need escaping.
const KEYS: [&str; 9] = [
    "a",
    "a/b",
    "a/c/d",
    "b+c",
    "b c",
    "b&c",
    "caf\u{e9}/\u{2603}",
    "p%20q",
    "z//double",
];

/// Buckets: create, duplicate, bad names, head, location, list.
#[tokio::test]
async fn buckets_are_created_once_and_listed() {
    let s3 = start().await;
    let c = s3.client();

    c.create_bucket().bucket("photos").send().await.unwrap();
    assert_eq!(
        code_of(c.create_bucket().bucket("photos").send().await),
        ("BucketAlreadyOwnedByYou".into(), 409)
    );
    assert_eq!(
        code_of(c.create_bucket().bucket("Bad_Name").send().await).0,
        "InvalidBucketName"
    );
    c.head_bucket().bucket("photos").send().await.unwrap();
    assert_eq!(
        code_of(c.head_bucket().bucket("nothere").send().await).1,
        404
    );
    let loc = c
        .get_bucket_location()
        .bucket("photos")
        .send()
        .await
        .unwrap();
    // us-east-1 is answered as an empty constraint, as AWS does.
    assert!(
        loc.location_constraint()
            .is_none_or(|l| l.as_str().is_empty()),
        "{loc:?}"
    );
    let listed = c.list_buckets().send().await.unwrap();
    let names: Vec<_> = listed.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, ["photos"]);
    assert_eq!(
        code_of(c.list_objects_v2().bucket("nothere").send().await),
        ("NoSuchBucket".into(), 404)
    );
}

/// Objects round-trip with their headers; listings v1 and v2, with delimiters, prefixes,
/// paging, start-after, URL encoding, and versions.
#[tokio::test]
async fn objects_round_trip_and_list_in_order() {
    let s3 = start().await;
    let c = s3.client();
    c.create_bucket().bucket("photos").send().await.unwrap();

    // Objects: keys are flat; `a` and `a/b` coexist; odd characters round-trip.
    let keys = KEYS;
    for (i, k) in keys.iter().enumerate() {
        let body = data(1000 + i, i as u64);
        let put = c
            .put_object()
            .bucket("photos")
            .key(*k)
            .body(ByteStream::from(body.clone()))
            .content_type("image/jpeg")
            .metadata("Camera", "x100")
            .cache_control("max-age=60")
            .send()
            .await
            .unwrap();
        assert_eq!(put.e_tag().unwrap(), format!("\"{}\"", md5_hex(&body)));
        let got = c
            .get_object()
            .bucket("photos")
            .key(*k)
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_type(), Some("image/jpeg"));
        assert_eq!(got.cache_control(), Some("max-age=60"));
        assert_eq!(
            got.metadata().unwrap().get("camera").map(String::as_str),
            Some("x100")
        );
        assert_eq!(got.e_tag(), put.e_tag());
        let bytes = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(bytes.as_ref(), body.as_slice(), "{k}");
    }
    assert_eq!(
        code_of(c.get_object().bucket("photos").key("nope").send().await),
        ("NoSuchKey".into(), 404)
    );

    // Listing v2 with a delimiter: objects and common prefixes.
    let l = c
        .list_objects_v2()
        .bucket("photos")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let objs: Vec<_> = l.contents().iter().filter_map(|o| o.key()).collect();
    let pfx: Vec<_> = l
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(objs, ["a", "b c", "b&c", "b+c", "p%20q"]);
    assert_eq!(pfx, ["a/", "caf\u{e9}/", "z/"]);
    assert_eq!(l.key_count(), Some(8));
    // Under a prefix.
    let l = c
        .list_objects_v2()
        .bucket("photos")
        .prefix("a/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let objs: Vec<_> = l.contents().iter().filter_map(|o| o.key()).collect();
    let pfx: Vec<_> = l
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!((objs, pfx), (vec!["a/b"], vec!["a/c/"]));
    // Paging v2 by continuation token, two at a time, sees every key once in order.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_objects_v2()
            .bucket("photos")
            .max_keys(2)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        assert!(page.contents().len() <= 2);
        seen.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        if page.is_truncated() != Some(true) {
            break;
        }
        token = page.next_continuation_token().map(str::to_owned);
        assert!(token.is_some());
    }
    let mut sorted: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    sorted.sort();
    assert_eq!(seen, sorted);
    // start-after.
    let l = c
        .list_objects_v2()
        .bucket("photos")
        .start_after("b+c")
        .max_keys(1)
        .send()
        .await
        .unwrap();
    assert_eq!(l.contents()[0].key(), Some("caf\u{e9}/\u{2603}"));
    // V1 with marker and NextMarker under a delimiter.
    let l = c
        .list_objects()
        .bucket("photos")
        .delimiter("/")
        .max_keys(2)
        .send()
        .await
        .unwrap();
    assert_eq!(l.is_truncated(), Some(true));
    assert_eq!(l.next_marker(), Some("a/"));
    let l2 = c
        .list_objects()
        .bucket("photos")
        .delimiter("/")
        .marker("a/")
        .send()
        .await
        .unwrap();
    assert_eq!(l2.contents()[0].key(), Some("b c"));
    // EncodingType=url is echoed and applied.
    let l = c
        .list_objects_v2()
        .bucket("photos")
        .prefix("b")
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .send()
        .await
        .unwrap();
    assert_eq!(
        l.encoding_type(),
        Some(&aws_sdk_s3::types::EncodingType::Url)
    );
    let objs: Vec<_> = l.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(objs, ["b%20c", "b%26c", "b%2Bc"]);
    // Versions: each object once, VersionId "null".
    let v = c
        .list_object_versions()
        .bucket("photos")
        .send()
        .await
        .unwrap();
    assert_eq!(v.versions().len(), keys.len());
    assert!(
        v.versions()
            .iter()
            .all(|x| x.version_id() == Some("null") && x.is_latest() == Some(true))
    );
}

/// A bucket with objects cannot go; DeleteObjects (as suites clean up) empties it, and then
/// it can.
#[tokio::test]
async fn a_bucket_goes_only_once_empty() {
    let s3 = start().await;
    let c = s3.client();
    c.create_bucket().bucket("photos").send().await.unwrap();
    let keys = KEYS;
    for k in keys {
        c.put_object()
            .bucket("photos")
            .key(k)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }

    // A bucket with objects cannot go; DeleteObjects (as suites clean up) empties it.
    assert_eq!(
        code_of(c.delete_bucket().bucket("photos").send().await),
        ("BucketNotEmpty".into(), 409)
    );
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let del = Delete::builder()
        .set_objects(Some(
            keys.iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(*k)
                        .version_id("null")
                        .build()
                        .unwrap()
                })
                .collect(),
        ))
        .build()
        .unwrap();
    let out = c
        .delete_objects()
        .bucket("photos")
        .delete(del)
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap();
    assert_eq!(out.deleted().len(), keys.len());
    assert!(out.errors().is_empty());
    // Deleting a missing key is fine (204).
    c.delete_object()
        .bucket("photos")
        .key("a")
        .send()
        .await
        .unwrap();
    c.delete_bucket().bucket("photos").send().await.unwrap();
    assert_eq!(
        code_of(c.head_bucket().bucket("photos").send().await).1,
        404
    );
    assert!(c.list_buckets().send().await.unwrap().buckets().is_empty());
}

/// The `docs` bucket with `report.bin`: 100,000 bytes with metadata, a content type and a
/// disposition. Its bytes and ETag.
async fn docs_with_report(c: &aws_sdk_s3::Client) -> (Vec<u8>, String) {
    c.create_bucket().bucket("docs").send().await.unwrap();
    let body = data(100_000, 7);
    let put = c
        .put_object()
        .bucket("docs")
        .key("report.bin")
        .body(ByteStream::from(body.clone()))
        .metadata("owner", "jill")
        .content_type("application/x-report")
        .content_disposition("attachment")
        .send()
        .await
        .unwrap();
    let etag = put.e_tag().unwrap().to_owned();
    (body, etag)
}

/// HEAD, ranges and conditional reads of one object.
#[tokio::test]
async fn head_ranges_and_conditional_reads() {
    let s3 = start().await;
    let c = s3.client();
    let (body, etag) = docs_with_report(&c).await;

    // HEAD and ranges.
    let h = c
        .head_object()
        .bucket("docs")
        .key("report.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_length(), Some(100_000));
    assert_eq!(h.content_disposition(), Some("attachment"));
    assert_eq!(h.e_tag(), Some(etag.as_str()));
    let r = c
        .get_object()
        .bucket("docs")
        .key("report.bin")
        .range("bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.content_range(), Some("bytes 10-19/100000"));
    assert_eq!(r.content_length(), Some(10));
    assert_eq!(
        r.body.collect().await.unwrap().into_bytes().as_ref(),
        &body[10..20]
    );
    let r = c
        .get_object()
        .bucket("docs")
        .key("report.bin")
        .range("bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.body.collect().await.unwrap().into_bytes().as_ref(),
        &body[99_995..]
    );
    assert_eq!(
        code_of(
            c.get_object()
                .bucket("docs")
                .key("report.bin")
                .range("bytes=200000-")
                .send()
                .await
        ),
        ("InvalidRange".into(), 416)
    );

    // Conditional reads.
    let g = |m: Option<&str>, n: Option<&str>| {
        c.get_object()
            .bucket("docs")
            .key("report.bin")
            .set_if_match(m.map(str::to_owned))
            .set_if_none_match(n.map(str::to_owned))
            .send()
    };
    assert!(g(Some(&etag), None).await.is_ok());
    assert_eq!(
        code_of(g(Some("\"nope\""), None).await),
        ("PreconditionFailed".into(), 412)
    );
    assert_eq!(code_of(g(None, Some(&etag)).await).1, 304);
    assert!(g(None, Some("\"other\"")).await.is_ok());
    let future = aws_sdk_s3::primitives::DateTime::from_secs(4_000_000_000);
    let past = aws_sdk_s3::primitives::DateTime::from_secs(1_000_000_000);
    assert_eq!(
        code_of(
            c.get_object()
                .bucket("docs")
                .key("report.bin")
                .if_modified_since(future)
                .send()
                .await
        )
        .1,
        304
    );
    assert_eq!(
        code_of(
            c.head_object()
                .bucket("docs")
                .key("report.bin")
                .if_unmodified_since(past)
                .send()
                .await
        )
        .1,
        412
    );
}

/// Create-only and replace-only-this-version writes, a bad Content-MD5, and an empty
/// object: what is refused stores nothing.
#[tokio::test]
async fn conditional_writes_and_refused_bodies() {
    let s3 = start().await;
    let c = s3.client();
    let (_body, etag) = docs_with_report(&c).await;

    // Conditional writes: create-only and replace-only-this-version.
    let p = |key: &'static str, m: Option<&str>, n: Option<&str>| {
        c.put_object()
            .bucket("docs")
            .key(key)
            .body(ByteStream::from_static(b"v2"))
            .set_if_match(m.map(str::to_owned))
            .set_if_none_match(n.map(str::to_owned))
            .send()
    };
    assert_eq!(
        code_of(p("report.bin", None, Some("*")).await),
        ("PreconditionFailed".into(), 412)
    );
    p("fresh.txt", None, Some("*")).await.unwrap();
    assert_eq!(
        code_of(p("report.bin", Some("\"0123\""), None).await),
        ("PreconditionFailed".into(), 412)
    );
    assert_eq!(
        code_of(p("absent.txt", Some(&etag), None).await),
        ("NoSuchKey".into(), 404)
    );
    // The 412s stored nothing.
    let still = c
        .get_object()
        .bucket("docs")
        .key("report.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(still.e_tag(), Some(etag.as_str()));

    // Bad Content-MD5: refused, nothing stored.
    assert_eq!(
        code_of(
            c.put_object()
                .bucket("docs")
                .key("md5.txt")
                .body(ByteStream::from_static(b"hello"))
                .content_md5("1B2M2Y8AsgTpgAmY7PhCfg==")
                .send()
                .await
        ),
        ("BadDigest".into(), 400)
    );
    assert_eq!(
        code_of(c.head_object().bucket("docs").key("md5.txt").send().await).1,
        404
    );
    // An empty object.
    c.put_object()
        .bucket("docs")
        .key("empty")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .unwrap();
    let e = c
        .get_object()
        .bucket("docs")
        .key("empty")
        .send()
        .await
        .unwrap();
    assert_eq!(e.content_length(), Some(0));
    assert_eq!(e.e_tag(), Some("\"d41d8cd98f00b204e9800998ecf8427e\""));
}

/// Copies: metadata kept or replaced, onto itself, copy-source conditions, missing sources.
#[tokio::test]
async fn copies_keep_or_replace_metadata_and_honour_conditions() {
    let s3 = start().await;
    let c = s3.client();
    let (body, etag) = docs_with_report(&c).await;

    // Copies: metadata copied by default, replaced on request.
    let cp = c
        .copy_object()
        .bucket("docs")
        .key("copy.bin")
        .copy_source("docs/report.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        cp.copy_object_result().unwrap().e_tag(),
        Some(format!("\"{}\"", md5_hex(&body)).as_str())
    );
    let got = c
        .get_object()
        .bucket("docs")
        .key("copy.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("application/x-report"));
    assert_eq!(
        got.metadata().unwrap().get("owner").map(String::as_str),
        Some("jill")
    );
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        body.as_slice()
    );
    c.copy_object()
        .bucket("docs")
        .key("copy2.bin")
        .copy_source("docs/report.bin")
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .metadata("owner", "jack")
        .content_type("text/plain")
        .send()
        .await
        .unwrap();
    let h2 = c
        .head_object()
        .bucket("docs")
        .key("copy2.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(h2.content_type(), Some("text/plain"));
    assert_eq!(
        h2.metadata().unwrap().get("owner").map(String::as_str),
        Some("jack")
    );
    // Onto itself: only with REPLACE, and then only the record changes.
    assert_eq!(
        code_of(
            c.copy_object()
                .bucket("docs")
                .key("report.bin")
                .copy_source("docs/report.bin")
                .send()
                .await
        ),
        ("InvalidRequest".into(), 400)
    );
    c.copy_object()
        .bucket("docs")
        .key("report.bin")
        .copy_source("docs/report.bin")
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .metadata("owner", "june")
        .send()
        .await
        .unwrap();
    let h3 = c
        .head_object()
        .bucket("docs")
        .key("report.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(h3.e_tag(), Some(etag.as_str()));
    assert_eq!(
        h3.metadata().unwrap().get("owner").map(String::as_str),
        Some("june")
    );
    // Copy-source conditions and missing sources.
    assert_eq!(
        code_of(
            c.copy_object()
                .bucket("docs")
                .key("x")
                .copy_source("docs/report.bin")
                .copy_source_if_match("\"nope\"")
                .send()
                .await
        ),
        ("PreconditionFailed".into(), 412)
    );
    assert_eq!(
        code_of(
            c.copy_object()
                .bucket("docs")
                .key("x")
                .copy_source("docs/missing")
                .send()
                .await
        ),
        ("NoSuchKey".into(), 404)
    );
}

#[tokio::test]
async fn multipart_uploads() {
    let s3 = start().await;
    let c = s3.client();
    c.create_bucket().bucket("big").send().await.unwrap();
    let mib = 1024 * 1024;
    let p1 = data(5 * mib, 1);
    let src = data(6 * mib, 2);
    let p3 = data(1234, 3);
    c.put_object()
        .bucket("big")
        .key("source")
        .body(ByteStream::from(src.clone()))
        .send()
        .await
        .unwrap();

    let up = c
        .create_multipart_upload()
        .bucket("big")
        .key("dir/whole.bin")
        .content_type("application/x-whole")
        .metadata("kind", "joined")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_owned();
    let e1 = c
        .upload_part()
        .bucket("big")
        .key("dir/whole.bin")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(p1.clone()))
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    assert_eq!(e1, format!("\"{}\"", md5_hex(&p1)));
    // Part 2 copied from a range of another object: bytes 100 .. 100 + 5 MiB.
    let e2 = c
        .upload_part_copy()
        .bucket("big")
        .key("dir/whole.bin")
        .upload_id(&id)
        .part_number(2)
        .copy_source("big/source")
        .copy_source_range(format!("bytes=100-{}", 100 + 5 * mib - 1))
        .send()
        .await
        .unwrap()
        .copy_part_result()
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    let p2 = src[100..100 + 5 * mib].to_vec();
    assert_eq!(e2, format!("\"{}\"", md5_hex(&p2)));
    let e3 = c
        .upload_part()
        .bucket("big")
        .key("dir/whole.bin")
        .upload_id(&id)
        .part_number(3)
        .body(ByteStream::from(p3.clone()))
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();

    // Listings of parts and uploads.
    let parts = c
        .list_parts()
        .bucket("big")
        .key("dir/whole.bin")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    let nums: Vec<_> = parts
        .parts()
        .iter()
        .filter_map(|p| p.part_number())
        .collect();
    assert_eq!(nums, [1, 2, 3]);
    assert_eq!(parts.parts()[2].size(), Some(1234));
    let page = c
        .list_parts()
        .bucket("big")
        .key("dir/whole.bin")
        .upload_id(&id)
        .max_parts(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.is_truncated(), Some(true));
    assert_eq!(page.next_part_number_marker(), Some("2"));
    let ups = c
        .list_multipart_uploads()
        .bucket("big")
        .send()
        .await
        .unwrap();
    assert_eq!(ups.uploads().len(), 1);
    assert_eq!(ups.uploads()[0].upload_id(), Some(id.as_str()));
    assert_eq!(ups.uploads()[0].key(), Some("dir/whole.bin"));

    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let part = |n: i32, e: &str| CompletedPart::builder().part_number(n).e_tag(e).build();
    let done = |parts: Vec<CompletedPart>| {
        c.complete_multipart_upload()
            .bucket("big")
            .key("dir/whole.bin")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
    };
    // Bad completions leave the upload intact.
    assert_eq!(
        code_of(done(vec![part(2, &e2), part(1, &e1)]).await),
        ("InvalidPartOrder".into(), 400)
    );
    assert_eq!(
        code_of(done(vec![part(1, "\"0000\""), part(2, &e2)]).await),
        ("InvalidPart".into(), 400)
    );
    assert_eq!(
        code_of(done(vec![part(1, &e1), part(4, &e3)]).await),
        ("InvalidPart".into(), 400)
    );
    assert_eq!(
        code_of(done(vec![part(3, &e3), part(4, &e3)]).await).0,
        "InvalidPart"
    );
    assert_eq!(
        code_of(done(vec![part(1, &e1), part(3, &e3), part(2, &e2)]).await).0,
        "InvalidPartOrder"
    );
    let small = c
        .create_multipart_upload()
        .bucket("big")
        .key("small")
        .send()
        .await
        .unwrap();
    let sid = small.upload_id().unwrap();
    let se = c
        .upload_part()
        .bucket("big")
        .key("small")
        .upload_id(sid)
        .part_number(1)
        .body(ByteStream::from_static(b"tiny"))
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    let se2 = c
        .upload_part()
        .bucket("big")
        .key("small")
        .upload_id(sid)
        .part_number(2)
        .body(ByteStream::from_static(b"tiny"))
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    assert_eq!(
        code_of(
            c.complete_multipart_upload()
                .bucket("big")
                .key("small")
                .upload_id(sid)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .parts(part(1, &se))
                        .parts(part(2, &se2))
                        .build()
                )
                .send()
                .await
        ),
        ("EntityTooSmall".into(), 400)
    );
    // Abort: the upload is gone.
    c.abort_multipart_upload()
        .bucket("big")
        .key("small")
        .upload_id(sid)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code_of(
            c.upload_part()
                .bucket("big")
                .key("small")
                .upload_id(sid)
                .part_number(3)
                .body(ByteStream::from_static(b"late"))
                .send()
                .await
        ),
        ("NoSuchUpload".into(), 404)
    );
    assert_eq!(
        code_of(
            c.abort_multipart_upload()
                .bucket("big")
                .key("small")
                .upload_id(sid)
                .send()
                .await
        ),
        ("NoSuchUpload".into(), 404)
    );

    // Complete: one object, S3's composite ETag, the bytes in order.
    let out = done(vec![part(1, &e1), part(2, &e2), part(3, &e3)])
        .await
        .unwrap();
    let mut md5s = Vec::new();
    for p in [&p1, &p2, &p3] {
        use md5::Digest as _;
        md5s.extend_from_slice(&md5::Md5::digest(p));
    }
    let want = format!("\"{}-3\"", md5_hex(&md5s));
    assert_eq!(out.e_tag(), Some(want.as_str()));
    let got = c
        .get_object()
        .bucket("big")
        .key("dir/whole.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(got.e_tag(), Some(want.as_str()));
    assert_eq!(got.content_type(), Some("application/x-whole"));
    assert_eq!(
        got.metadata().unwrap().get("kind").map(String::as_str),
        Some("joined")
    );
    let whole = [p1.as_slice(), p2.as_slice(), p3.as_slice()].concat();
    assert_eq!(got.content_length(), Some(whole.len() as i64));
    let bytes = got.body.collect().await.unwrap().into_bytes();
    assert!(bytes.as_ref() == whole.as_slice());
    // A range across the part boundary.
    let r = c
        .get_object()
        .bucket("big")
        .key("dir/whole.bin")
        .range(format!("bytes={}-{}", 5 * mib - 3, 5 * mib + 2))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.body.collect().await.unwrap().into_bytes().as_ref(),
        &whole[5 * mib - 3..5 * mib + 3]
    );
    // The upload is over.
    assert_eq!(
        code_of(done(vec![part(1, &e1)]).await),
        ("NoSuchUpload".into(), 404)
    );
    assert!(
        c.list_multipart_uploads()
            .bucket("big")
            .send()
            .await
            .unwrap()
            .uploads()
            .is_empty()
    );
}

/// Completing more than 64 MiB answers 200 at once and keeps the connection alive while the
/// nodes join the parts; the result (or an error) comes in the body, which SDKs read.
#[tokio::test]
async fn large_completions_keep_the_connection_alive() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use futures_util::StreamExt as _;
    let mut s3 = start().await;
    let c = s3.client();
    c.create_bucket().bucket("huge").send().await.unwrap();
    let part = data(5 * 1024 * 1024, 42);
    c.put_object()
        .bucket("huge")
        .key("five")
        .body(ByteStream::from(part.clone()))
        .send()
        .await
        .unwrap();
    // 14 parts of 5 MiB (70 MiB), copied server-side from one object.
    let upload = |key: &'static str| {
        let c = c.clone();
        async move {
            let id = c
                .create_multipart_upload()
                .bucket("huge")
                .key(key)
                .send()
                .await
                .unwrap()
                .upload_id()
                .unwrap()
                .to_owned();
            let parts: Vec<CompletedPart> = futures_util::stream::iter(1..=14)
                .map(|n| {
                    let c = c.clone();
                    let id = id.clone();
                    async move {
                        let e = c
                            .upload_part_copy()
                            .bucket("huge")
                            .key(key)
                            .upload_id(&id)
                            .part_number(n)
                            .copy_source("huge/five")
                            .send()
                            .await
                            .unwrap();
                        CompletedPart::builder()
                            .part_number(n)
                            .e_tag(e.copy_part_result().unwrap().e_tag().unwrap())
                            .build()
                    }
                })
                .buffered(4)
                .collect()
                .await;
            (
                id,
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
        }
    };
    let (id, parts) = upload("joined").await;
    let out = c
        .complete_multipart_upload()
        .bucket("huge")
        .key("joined")
        .upload_id(&id)
        .multipart_upload(parts)
        .send()
        .await
        .unwrap();
    assert!(out.e_tag().unwrap().ends_with("-14\""));
    let h = c
        .head_object()
        .bucket("huge")
        .key("joined")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_length(), Some(14 * 5 * 1024 * 1024));
    let r = c
        .get_object()
        .bucket("huge")
        .key("joined")
        .range(format!(
            "bytes={}-{}",
            13 * 5 * 1024 * 1024,
            13 * 5 * 1024 * 1024 + 99
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.body.collect().await.unwrap().into_bytes().as_ref(),
        &part[..100]
    );

    // When the join fails after the 200 went out, the error is in the body.
    let (id, parts) = upload("doomed").await;
    s3.region.storage[0].kill();
    s3.region.storage[1].kill();
    let (code, status) = code_of(
        c.complete_multipart_upload()
            .bucket("huge")
            .key("doomed")
            .upload_id(&id)
            .multipart_upload(parts)
            .send()
            .await,
    );
    assert_eq!(code, "ServiceUnavailable");
    assert_eq!(status, 200);
}
