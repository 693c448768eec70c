//! The S3 API with the official AWS SDK (`aws-sdk-s3`, path style) against a real region:
//! buckets, objects, metadata, ranges, conditional requests, copies, listings, multipart
//! uploads, credentials and isolation between accounts, presigned URLs, and the Manta API's
//! view of buckets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod s3_common;

use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::MetadataDirective;
use futures_util::StreamExt as _;
use s3_common::*;
use std::time::Duration;

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

/// The keys and the common prefixes of a listing, in its order.
fn keys_and_prefixes(l: &ListObjectsV2Output) -> (Vec<&str>, Vec<&str>) {
    let keys = l.contents().iter().filter_map(|o| o.key()).collect();
    let prefixes = l.common_prefixes().iter().filter_map(|p| p.prefix());
    (keys, prefixes.collect())
}

/// Buckets: create, duplicate, bad names, head, location, list.
#[tokio::test]
async fn buckets_are_created_once_and_listed() {
    let s3 = start().await;
    let c = s3.client();

    c.create_bucket().bucket("photos").send().await.unwrap();
    // Again, by its owner: 200 in us-east-1 (409 `BucketAlreadyOwnedByYou` elsewhere).
    let again = c.create_bucket().bucket("photos").send().await.unwrap();
    assert_eq!(again.location(), Some("/photos"));
    for bad in ["Bad_Name", "a.-b", "a-.b", "sthree-x"] {
        assert_eq!(
            code_of(c.create_bucket().bucket(bad).send().await),
            ("InvalidBucketName".into(), 400),
            "{bad}"
        );
    }
    c.head_bucket().bucket("photos").send().await.unwrap();
    assert_eq!(
        code_of(c.head_bucket().bucket("nothere").send().await).1,
        404
    );
    let loc = Bucket::new(&c, "photos").location().send().await.unwrap();
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

/// A region with the empty bucket `photos`: the region, its account's client, the bucket.
async fn photos() -> (S3Region, aws_sdk_s3::Client, Bucket) {
    let s3 = start().await;
    let c = s3.client();
    let b = Bucket::create(&c, "photos").await;
    (s3, c, b)
}

/// Objects round-trip with their headers; listings v1 and v2, with delimiters, prefixes,
/// paging, start-after, URL encoding, and versions.
#[tokio::test]
async fn objects_round_trip_and_list_in_order() {
    let (s3, c, b) = photos().await;

    // Objects: keys are flat; `a` and `a/b` coexist; odd characters round-trip.
    let keys = KEYS;
    for (i, k) in keys.iter().enumerate() {
        let body = data(1000 + i, i as u64);
        let put = b
            .put(k, body.clone())
            .content_type("image/jpeg")
            .metadata("Camera", "x100")
            .cache_control("max-age=60")
            .send()
            .await
            .unwrap();
        assert_eq!(put.e_tag().unwrap(), format!("\"{}\"", md5_hex(&body)));
        let got = b.get(k).send().await.unwrap();
        assert_eq!(got.content_type(), Some("image/jpeg"));
        assert_eq!(got.cache_control(), Some("max-age=60"));
        assert_eq!(
            got.metadata().unwrap().get("camera").map(String::as_str),
            Some("x100")
        );
        assert_eq!(got.e_tag(), put.e_tag());
        assert_eq!(body_of(got).await, body, "{k}");
    }
    assert_eq!(
        code_of(b.get("nope").send().await),
        ("NoSuchKey".into(), 404)
    );

    // Listing v2 with a delimiter: objects and common prefixes.
    let l = b.list().delimiter("/").send().await.unwrap();
    let (objs, pfx) = keys_and_prefixes(&l);
    assert_eq!(objs, ["a", "b c", "b&c", "b+c", "p%20q"]);
    assert_eq!(pfx, ["a/", "caf\u{e9}/", "z/"]);
    assert_eq!(l.key_count(), Some(8));
    // Under a prefix.
    let l = b.list().prefix("a/").delimiter("/").send().await.unwrap();
    assert_eq!(keys_and_prefixes(&l), (vec!["a/b"], vec!["a/c/"]));
    // Paging v2 by continuation token, two at a time, sees every key once in order.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = b
            .list()
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
    let l = b
        .list()
        .start_after("b+c")
        .max_keys(1)
        .send()
        .await
        .unwrap();
    assert_eq!(l.contents()[0].key(), Some("caf\u{e9}/\u{2603}"));
    // V1 with marker and NextMarker under a delimiter.
    let v1 = || c.list_objects().bucket("photos").delimiter("/");
    let l = v1().max_keys(2).send().await.unwrap();
    assert_eq!(l.is_truncated(), Some(true));
    assert_eq!(l.next_marker(), Some("a/"));
    let l2 = v1().marker("a/").send().await.unwrap();
    assert_eq!(l2.contents()[0].key(), Some("b c"));
    // EncodingType=url is echoed and applied.
    let url = aws_sdk_s3::types::EncodingType::Url;
    let l = b
        .list()
        .prefix("b")
        .encoding_type(url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(l.encoding_type(), Some(&url));
    assert_eq!(keys_and_prefixes(&l).0, ["b%20c", "b%26c", "b%2Bc"]);
    // An empty delimiter groups nothing.
    let l = b.list().delimiter("").send().await.unwrap();
    assert_eq!(l.contents().len(), keys.len());
    assert!(l.common_prefixes().is_empty());
    // The owner: always in v1, in v2 only with fetch-owner; the account's ID and name.
    let me = c.list_buckets().send().await.unwrap();
    let me = me.owner().unwrap();
    let v1 = c.list_objects().bucket("photos").send().await.unwrap();
    assert!(
        v1.contents().iter().all(|o| o.owner() == Some(me)),
        "{v1:?}"
    );
    let without = b.list().send().await.unwrap();
    assert!(without.contents().iter().all(|o| o.owner().is_none()));
    let with = b.list().fetch_owner(true).send().await.unwrap();
    assert!(with.contents().iter().all(|o| o.owner() == Some(me)));
    assert_eq!(me.display_name(), Some(s3.region.account.login.as_str()));
    // Versions: each object once, VersionId "null".
    let v = b.versions().send().await.unwrap();
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
    let (_s3, c, b) = photos().await;
    let keys = KEYS;
    for k in keys {
        b.put(k, ByteStream::from_static(b"x"))
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
    let id = |k: &str| {
        ObjectIdentifier::builder()
            .key(k)
            .version_id("null")
            .build()
    };
    let ids = keys.iter().map(|k| id(k).unwrap()).collect();
    let del = Delete::builder().set_objects(Some(ids)).build().unwrap();
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
    b.delete("a").send().await.unwrap();
    c.delete_bucket().bucket("photos").send().await.unwrap();
    assert_eq!(
        code_of(c.head_bucket().bucket("photos").send().await).1,
        404
    );
    assert!(c.list_buckets().send().await.unwrap().buckets().is_empty());
}

/// A region with the `docs` bucket holding `report.bin`: 100,000 bytes with metadata, a
/// content type and a disposition. The region, the bucket, the bytes and their ETag.
async fn docs_with_report() -> (S3Region, Bucket, Vec<u8>, String) {
    let s3 = start().await;
    let docs = Bucket::create(&s3.client(), "docs").await;
    let body = data(100_000, 7);
    let put = docs
        .put("report.bin", body.clone())
        .metadata("owner", "jill")
        .content_type("application/x-report")
        .content_disposition("attachment")
        .send()
        .await
        .unwrap();
    let etag = put.e_tag().unwrap().to_owned();
    (s3, docs, body, etag)
}

/// HEAD, ranges and conditional reads of one object.
#[tokio::test]
async fn head_ranges_and_conditional_reads() {
    let (_s3, docs, body, etag) = docs_with_report().await;

    // HEAD and ranges.
    let h = docs.head("report.bin").send().await.unwrap();
    assert_eq!(h.content_length(), Some(100_000));
    assert_eq!(h.content_disposition(), Some("attachment"));
    assert_eq!(h.e_tag(), Some(etag.as_str()));
    let range = |r: &str| docs.get("report.bin").range(r).send();
    let r = range("bytes=10-19").await.unwrap();
    assert_eq!(r.content_range(), Some("bytes 10-19/100000"));
    assert_eq!(r.content_length(), Some(10));
    assert_eq!(body_of(r).await, &body[10..20]);
    let r = range("bytes=-5").await.unwrap();
    assert_eq!(body_of(r).await, &body[99_995..]);
    assert_eq!(
        code_of(range("bytes=200000-").await),
        ("InvalidRange".into(), 416)
    );

    // Conditional reads.
    let g = |m: Option<&str>, n: Option<&str>| {
        docs.get("report.bin")
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
    let since = docs
        .get("report.bin")
        .if_modified_since(future)
        .send()
        .await;
    assert_eq!(code_of(since).1, 304);
    let unmodified = docs.head("report.bin").if_unmodified_since(past).send();
    assert_eq!(code_of(unmodified.await).1, 412);
}

/// Create-only and replace-only-this-version writes, a bad Content-MD5, and an empty
/// object: what is refused stores nothing.
#[tokio::test]
async fn conditional_writes_and_refused_bodies() {
    let (_s3, docs, _body, etag) = docs_with_report().await;

    // Conditional writes: create-only and replace-only-this-version.
    let p = |key: &'static str, m: Option<&str>, n: Option<&str>| {
        docs.put(key, ByteStream::from_static(b"v2"))
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
    let still = docs.get("report.bin").send().await.unwrap();
    assert_eq!(still.e_tag(), Some(etag.as_str()));

    // Bad Content-MD5: refused, nothing stored.
    let bad_md5 = docs
        .put("md5.txt", ByteStream::from_static(b"hello"))
        .content_md5("1B2M2Y8AsgTpgAmY7PhCfg==")
        .send()
        .await;
    assert_eq!(code_of(bad_md5), ("BadDigest".into(), 400));
    assert_eq!(code_of(docs.head("md5.txt").send().await).1, 404);
    // An empty object.
    let empty = ByteStream::from_static(b"");
    docs.put("empty", empty).send().await.unwrap();
    let e = docs.get("empty").send().await.unwrap();
    assert_eq!(e.content_length(), Some(0));
    assert_eq!(e.e_tag(), Some("\"d41d8cd98f00b204e9800998ecf8427e\""));
}

/// The user metadata `owner` of an object.
fn owner(meta: Option<&std::collections::HashMap<String, String>>) -> Option<&str> {
    meta.unwrap().get("owner").map(String::as_str)
}

/// Copies: metadata kept or replaced, onto itself, copy-source conditions, missing sources.
#[tokio::test]
async fn copies_keep_or_replace_metadata_and_honour_conditions() {
    let (_s3, docs, body, etag) = docs_with_report().await;

    // Copies: metadata copied by default, replaced on request.
    let cp = docs
        .copy("copy.bin", "docs/report.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        cp.copy_object_result().unwrap().e_tag(),
        Some(format!("\"{}\"", md5_hex(&body)).as_str())
    );
    let got = docs.get("copy.bin").send().await.unwrap();
    assert_eq!(got.content_type(), Some("application/x-report"));
    assert_eq!(owner(got.metadata()), Some("jill"));
    assert_eq!(body_of(got).await, body);
    docs.copy("copy2.bin", "docs/report.bin")
        .metadata_directive(MetadataDirective::Replace)
        .metadata("owner", "jack")
        .content_type("text/plain")
        .send()
        .await
        .unwrap();
    let h2 = docs.head("copy2.bin").send().await.unwrap();
    assert_eq!(h2.content_type(), Some("text/plain"));
    assert_eq!(owner(h2.metadata()), Some("jack"));
    // Onto itself: only with REPLACE, and then only the record changes.
    let onto_itself = || docs.copy("report.bin", "docs/report.bin");
    assert_eq!(
        code_of(onto_itself().send().await),
        ("InvalidRequest".into(), 400)
    );
    onto_itself()
        .metadata_directive(MetadataDirective::Replace)
        .metadata("owner", "june")
        .send()
        .await
        .unwrap();
    let h3 = docs.head("report.bin").send().await.unwrap();
    assert_eq!(h3.e_tag(), Some(etag.as_str()));
    assert_eq!(owner(h3.metadata()), Some("june"));
    // Copy-source conditions and missing sources.
    let if_match = docs
        .copy("x", "docs/report.bin")
        .copy_source_if_match("\"nope\"");
    assert_eq!(
        code_of(if_match.send().await),
        ("PreconditionFailed".into(), 412)
    );
    assert_eq!(
        code_of(docs.copy("x", "docs/missing").send().await),
        ("NoSuchKey".into(), 404)
    );
}

const MIB: usize = 1024 * 1024;

/// A region with the bucket `big` holding `source` (6 MiB), and a multipart upload of
/// `dir/whole.bin` (with a content type and metadata) that has three parts: 5 MiB uploaded,
/// 5 MiB copied from `source` at offset 100, and 1234 bytes uploaded.
struct ThreePartUpload {
    /// Kept for the region's lifetime.
    _s3: S3Region,
    big: Bucket,
    /// The upload id.
    id: String,
    /// Each part's bytes.
    parts: [Vec<u8>; 3],
    /// Each part's ETag, as UploadPart (or UploadPartCopy) answered it.
    etags: [String; 3],
}

/// The key the three-part upload makes.
const WHOLE: &str = "dir/whole.bin";

impl ThreePartUpload {
    async fn start() -> ThreePartUpload {
        let s3 = start().await;
        let big = Bucket::create(&s3.client(), "big").await;
        let p1 = data(5 * MIB, 1);
        let src = data(6 * MIB, 2);
        let p3 = data(1234, 3);
        big.put("source", src.clone()).send().await.unwrap();
        let up = big
            .start_upload(WHOLE)
            .content_type("application/x-whole")
            .metadata("kind", "joined")
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap().to_owned();
        let e1 = big.part((WHOLE, &id), 1, p1.clone()).send().await.unwrap();
        // Part 2 copied from a range of another object: bytes 100 .. 100 + 5 MiB.
        let e2 = big
            .part_copy((WHOLE, &id), 2, "big/source")
            .copy_source_range(format!("bytes=100-{}", 100 + 5 * MIB - 1))
            .send()
            .await
            .unwrap();
        let p2 = src[100..100 + 5 * MIB].to_vec();
        let e3 = big.part((WHOLE, &id), 3, p3.clone()).send().await.unwrap();
        let e2 = e2.copy_part_result().unwrap().e_tag();
        ThreePartUpload {
            etags: [e1.e_tag(), e2, e3.e_tag()].map(|e| e.unwrap().to_owned()),
            parts: [p1, p2, p3],
            _s3: s3,
            big,
            id,
        }
    }

    /// Completes the upload with `parts` (number, ETag).
    async fn complete(
        &self,
        parts: &[(i32, &str)],
    ) -> Result<
        aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput,
        aws_sdk_s3::error::SdkError<
            aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError,
            aws_sdk_s3::config::http::HttpResponse,
        >,
    > {
        let parts = parts.iter().map(|(n, e)| completed(*n, e)).collect();
        self.big.complete((WHOLE, &self.id), parts).send().await
    }

    /// Completes the upload with its three parts in order.
    async fn complete_all(
        &self,
    ) -> aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput {
        let [e1, e2, e3] = &self.etags;
        self.complete(&[(1, e1), (2, e2), (3, e3)]).await.unwrap()
    }
}

/// Uploaded parts and parts copied from a range of another object answer their bytes' MD5.
#[tokio::test]
async fn multipart_parts_answer_their_md5() {
    let up = ThreePartUpload::start().await;
    for i in [0, 1] {
        assert_eq!(up.etags[i], format!("\"{}\"", md5_hex(&up.parts[i])));
    }
}

/// ListParts (whole and paged) and ListMultipartUploads show the upload in progress.
#[tokio::test]
async fn multipart_parts_and_uploads_are_listed() {
    let up = ThreePartUpload::start().await;
    let c = &up.big.client;
    let list = || c.list_parts().bucket("big").key(WHOLE).upload_id(&up.id);
    let parts = list().send().await.unwrap();
    let nums: Vec<_> = parts
        .parts()
        .iter()
        .filter_map(|p| p.part_number())
        .collect();
    assert_eq!(nums, [1, 2, 3]);
    assert_eq!(parts.parts()[2].size(), Some(1234));
    let page = list().max_parts(2).send().await.unwrap();
    assert_eq!(page.is_truncated(), Some(true));
    assert_eq!(page.next_part_number_marker(), Some("2"));
    let ups = c.list_multipart_uploads().bucket("big").send().await;
    let ups = ups.unwrap();
    assert_eq!(ups.uploads().len(), 1);
    assert_eq!(ups.uploads()[0].upload_id(), Some(up.id.as_str()));
    assert_eq!(ups.uploads()[0].key(), Some(WHOLE));
}

/// Completions out of order, with a wrong ETag or with a part never uploaded fail, and leave
/// the upload intact: it completes afterwards.
#[tokio::test]
async fn bad_multipart_completions_leave_the_upload_intact() {
    let up = ThreePartUpload::start().await;
    let [e1, e2, e3] = &up.etags;
    for (parts, want) in [
        (vec![(2, e2.as_str()), (1, e1)], ("InvalidPartOrder", 400)),
        (vec![(1, "\"0000\""), (2, e2)], ("InvalidPart", 400)),
        (vec![(1, e1), (4, e3)], ("InvalidPart", 400)),
    ] {
        let got = code_of(up.complete(&parts).await);
        assert_eq!(got, (want.0.into(), want.1), "{parts:?}");
    }
    let got = code_of(up.complete(&[(3, e3), (4, e3)]).await);
    assert_eq!(got.0, "InvalidPart");
    let got = code_of(up.complete(&[(1, e1), (3, e3), (2, e2)]).await);
    assert_eq!(got.0, "InvalidPartOrder");
    up.complete_all().await;
}

/// Parts but the last must be 5 MiB at least; an aborted upload is gone for parts and for a
/// second abort.
#[tokio::test]
async fn small_parts_cannot_complete_and_aborted_uploads_are_gone() {
    let s3 = start().await;
    let big = Bucket::create(&s3.client(), "big").await;
    let id = big.upload_id("small").await;
    let small = ("small", id.as_str());
    let tiny = || ByteStream::from_static(b"tiny");
    let se = big.part(small, 1, tiny()).send().await.unwrap();
    let se2 = big.part(small, 2, tiny()).send().await.unwrap();
    let parts = vec![
        completed(1, se.e_tag().unwrap()),
        completed(2, se2.e_tag().unwrap()),
    ];
    assert_eq!(
        code_of(big.complete(small, parts).send().await),
        ("EntityTooSmall".into(), 400)
    );
    // Abort: the upload is gone.
    big.abort(small).send().await.unwrap();
    let late = big.part(small, 3, ByteStream::from_static(b"late"));
    assert_eq!(code_of(late.send().await), ("NoSuchUpload".into(), 404));
    assert_eq!(
        code_of(big.abort(small).send().await),
        ("NoSuchUpload".into(), 404)
    );
}

/// Completing makes one object with S3's composite ETag, the upload's content type and
/// metadata, and the parts' bytes in order (also in a range across a part boundary).
#[tokio::test]
async fn a_completed_upload_joins_its_parts() {
    let up = ThreePartUpload::start().await;
    let out = up.complete_all().await;
    let mut md5s = Vec::new();
    for p in &up.parts {
        use md5::Digest as _;
        md5s.extend_from_slice(&md5::Md5::digest(p));
    }
    let want = format!("\"{}-3\"", md5_hex(&md5s));
    assert_eq!(out.e_tag(), Some(want.as_str()));
    let got = up.big.get(WHOLE).send().await.unwrap();
    assert_eq!(got.e_tag(), Some(want.as_str()));
    assert_eq!(got.content_type(), Some("application/x-whole"));
    assert_eq!(
        got.metadata().unwrap().get("kind").map(String::as_str),
        Some("joined")
    );
    let whole = up.parts.concat();
    assert_eq!(got.content_length(), Some(whole.len() as i64));
    assert!(body_of(got).await == whole);
    // A range across the part boundary.
    let across = format!("bytes={}-{}", 5 * MIB - 3, 5 * MIB + 2);
    let r = up.big.get(WHOLE).range(across).send().await.unwrap();
    assert_eq!(body_of(r).await, &whole[5 * MIB - 3..5 * MIB + 3]);
}

/// Once completed, the upload is over: completing it again finds no upload, and none is
/// listed.
#[tokio::test]
async fn a_completed_upload_is_over() {
    let up = ThreePartUpload::start().await;
    up.complete_all().await;
    assert_eq!(
        code_of(up.complete(&[(1, &up.etags[0])]).await),
        ("NoSuchUpload".into(), 404)
    );
    let ups = up.big.client.list_multipart_uploads().bucket("big");
    assert!(ups.send().await.unwrap().uploads().is_empty());
}

/// Completing more than 64 MiB answers 200 at once and keeps the connection alive while the
/// nodes join the parts; the result (or an error) comes in the body, which SDKs read.
#[tokio::test]
async fn large_completions_keep_the_connection_alive() {
    use futures_util::StreamExt as _;
    let mut s3 = start().await;
    let huge = Bucket::create(&s3.client(), "huge").await;
    let part = data(5 * MIB, 42);
    huge.put("five", part.clone()).send().await.unwrap();
    // 14 parts of 5 MiB (70 MiB), copied server-side from one object.
    let upload = |key: &'static str| {
        let huge = huge.clone();
        async move {
            let id = huge.upload_id(key).await;
            let parts: Vec<_> = futures_util::stream::iter(1..=14)
                .map(|n| {
                    let copy = huge.part_copy((key, &id), n, "huge/five").send();
                    async move {
                        let e = copy.await.unwrap();
                        completed(n, e.copy_part_result().unwrap().e_tag().unwrap())
                    }
                })
                .buffered(4)
                .collect()
                .await;
            (id, parts)
        }
    };
    let (id, parts) = upload("joined").await;
    let out = huge.complete(("joined", &id), parts).send().await.unwrap();
    assert!(out.e_tag().unwrap().ends_with("-14\""));
    let h = huge.head("joined").send().await.unwrap();
    assert_eq!(h.content_length(), Some(14 * 5 * 1024 * 1024));
    let last = format!("bytes={}-{}", 13 * 5 * MIB, 13 * 5 * MIB + 99);
    let r = huge.get("joined").range(last).send().await.unwrap();
    assert_eq!(body_of(r).await, &part[..100]);

    // When the join fails after the 200 went out, the error is in the body.
    let (id, parts) = upload("doomed").await;
    s3.region.storage[0].kill();
    s3.region.storage[1].kill();
    let (code, status) = code_of(huge.complete(("doomed", &id), parts).send().await);
    assert_eq!(code, "ServiceUnavailable");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_front_door_that_caches_buckets_forgets_its_own_changes_at_once() {
    // Buckets read for object requests are cached for 30 s here (2 s by default).
    let s3 = start_with(&["--account-cache-ttl", "30s"], &[]).await;
    let c = s3.client();
    let b = Bucket::create(&c, "cached").await;
    b.put("k", ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(b.get("k").send().await.unwrap()).await, b"v");
    // The bucket is now in the cache. Deleted through this front door, it is gone at once.
    b.delete("k").send().await.unwrap();
    c.delete_bucket().bucket("cached").send().await.unwrap();
    assert_eq!(
        code_of(b.get("k").send().await),
        ("NoSuchBucket".into(), 404)
    );
    assert_eq!(
        code_of(b.put("k", ByteStream::from_static(b"v")).send().await),
        ("NoSuchBucket".into(), 404)
    );
    // Made again, it is used at once.
    Bucket::create(&c, "cached").await;
    b.put("k", ByteStream::from_static(b"w"))
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(b.get("k").send().await.unwrap()).await, b"w");
}

/// `DeleteObject` with `If-Match`, `x-amz-if-match-last-modified-time` and
/// `x-amz-if-match-size`, and the same conditions per key in `DeleteObjects`.
#[tokio::test]
async fn conditional_deletes_check_etag_time_and_size() {
    let s3 = start().await;
    let c = s3.client();
    let b = Bucket::create(&c, "conditional").await;
    let put = b.put("a", ByteStream::from_static(b"hello")).send().await;
    let etag = put.unwrap().e_tag().unwrap().to_owned();
    let modified = *b.head("a").send().await.unwrap().last_modified().unwrap();
    let later = aws_sdk_s3::primitives::DateTime::from_secs(modified.secs() + 1);
    // A time no object here was written at (z is written later than `a`: possibly in the
    // second after it).
    let long_ago = aws_sdk_s3::primitives::DateTime::from_secs(1_000_000_000);

    let refused = [
        b.delete("a").if_match("\"0123\""),
        b.delete("a").if_match_size(4),
        b.delete("a").if_match_last_modified_time(later),
        // All must hold.
        b.delete("a")
            .if_match(&etag)
            .if_match_size(5)
            .if_match_size(6),
    ];
    for d in refused {
        assert_eq!(code_of(d.send().await), ("PreconditionFailed".into(), 412));
    }
    assert_eq!(
        b.bytes("a").await,
        b"hello",
        "a refused delete deletes nothing"
    );
    b.delete("a")
        .if_match(&etag)
        .if_match_size(5)
        .if_match_last_modified_time(modified)
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(b.head("a").send().await).1, 404);
    // Conditions on nothing: 404; no condition: 204 as always.
    assert_eq!(
        code_of(b.delete("a").if_match(&etag).send().await),
        ("NoSuchKey".into(), 404)
    );
    assert_eq!(
        code_of(b.delete("a").if_match_size(5).send().await),
        ("NoSuchKey".into(), 404)
    );
    b.delete("a").send().await.unwrap();

    // DeleteObjects: each key's own conditions.
    for k in ["x", "y", "z"] {
        b.put(k, ByteStream::from_static(b"12345"))
            .send()
            .await
            .unwrap();
    }
    let id = |k: &str| aws_sdk_s3::types::ObjectIdentifier::builder().key(k);
    let delete = aws_sdk_s3::types::Delete::builder()
        .objects(id("x").e_tag("\"0123\"").build().unwrap())
        .objects(id("y").e_tag(&etag).size(5).build().unwrap()) // "hello" and "12345" share no ETag
        .objects(
            id("z")
                .size(5)
                .last_modified_time(long_ago)
                .build()
                .unwrap(),
        )
        .objects(id("w").size(5).build().unwrap())
        .build()
        .unwrap();
    let out = c
        .delete_objects()
        .bucket("conditional")
        .delete(delete)
        .send()
        .await
        .unwrap();
    let mut failed: Vec<(&str, &str)> = out
        .errors()
        .iter()
        .map(|e| (e.key().unwrap(), e.code().unwrap()))
        .collect();
    failed.sort_unstable();
    let y_etag = b
        .head("y")
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    assert_eq!(
        failed,
        [
            ("w", "NoSuchKey"),
            ("x", "PreconditionFailed"),
            ("y", "PreconditionFailed"),
            ("z", "PreconditionFailed")
        ]
    );
    assert!(out.deleted().is_empty());
    // With the right conditions they go.
    let z_modified = *b.head("z").send().await.unwrap().last_modified().unwrap();
    let delete = aws_sdk_s3::types::Delete::builder()
        .objects(id("y").e_tag(&y_etag).size(5).build().unwrap())
        .objects(id("z").last_modified_time(z_modified).build().unwrap())
        .objects(id("x").build().unwrap())
        .build()
        .unwrap();
    let out = c
        .delete_objects()
        .bucket("conditional")
        .delete(delete)
        .send()
        .await
        .unwrap();
    assert!(out.errors().is_empty(), "{:?}", out.errors());
    assert_eq!(out.deleted().len(), 3);
    let left = b.list().send().await.unwrap();
    assert_eq!(left.key_count(), Some(0));
}

/// A conditional PUT whose object changes between the check and the write: `If-Match` is
/// told to retry (409 `ConditionalRequestConflict`), `If-None-Match: *` that it failed (412),
/// and neither overwrites the object that won.
#[tokio::test]
async fn a_conditional_put_that_loses_a_race_stores_nothing() {
    let s3 = start().await;
    let c = s3.client();
    let b = Bucket::create(&c, "race").await;
    let put = b.put("k", ByteStream::from_static(b"v1")).send().await;
    let etag = put.unwrap().e_tag().unwrap().to_owned();
    let http = reqwest::Client::new();
    for (cond, want) in [
        (
            ("if-match", etag.as_str()),
            (409, "ConditionalRequestConflict"),
        ),
        (("if-none-match", "*"), (412, "PreconditionFailed")),
    ] {
        let key = if cond.0 == "if-match" { "k" } else { "fresh" };
        let mut builder = c.put_object().bucket("race").key(key);
        builder = if cond.0 == "if-match" {
            builder.if_match(cond.1)
        } else {
            builder.if_none_match(cond.1)
        };
        let p = builder
            .presigned(
                aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300))
                    .unwrap(),
            )
            .await
            .unwrap();
        // The body's first half is sent, then it waits until the object has been written
        // by someone else: by then the front door has checked the condition (before any
        // byte goes to a storage node).
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let half = bytes::Bytes::from_static(b"loser's ");
        let rest = bytes::Bytes::from_static(b"bytes...");
        let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(half) }).chain(
            futures_util::stream::once(async move {
                let _ = wait.await;
                Ok(rest)
            }),
        );
        let mut req = http
            .put(p.uri())
            .header("content-length", "16")
            .body(reqwest::Body::wrap_stream(body));
        for (k, v) in p.headers() {
            req = req.header(k, v);
        }
        let sent = tokio::spawn(req.send());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        b.put(key, ByteStream::from_static(b"winner"))
            .send()
            .await
            .unwrap();
        go.send(()).unwrap();
        let resp = sent.await.unwrap().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, want.0, "{text}");
        assert!(text.contains(&format!("<Code>{}</Code>", want.1)), "{text}");
        assert_eq!(b.bytes(key).await, b"winner");
    }
}

/// `CompleteMultipartUpload` with `If-None-Match: *` and `If-Match`, against the object at the
/// key when the upload completes (not when it started).
#[tokio::test]
async fn conditional_multipart_completions() {
    let s3 = start().await;
    let c = s3.client();
    let b = Bucket::create(&c, "mpu-cond").await;
    let upload = |key: &'static str| {
        let b = &b;
        async move {
            let id = b.upload_id(key).await;
            let p = b.part((key, &id), 1, ByteStream::from_static(b"joined"));
            let etag = p.send().await.unwrap().e_tag().unwrap().to_owned();
            (id, vec![completed(1, &etag)])
        }
    };

    // Create-only: refused once the key exists, even if it was written after the upload began.
    let (id, parts) = upload("k").await;
    let first = b.put("k", ByteStream::from_static(b"first")).send().await;
    let first = first.unwrap().e_tag().unwrap().to_owned();
    let create_only = b.complete(("k", &id), parts).if_none_match("*");
    assert_eq!(
        code_of(create_only.send().await),
        ("PreconditionFailed".into(), 412)
    );
    assert_eq!(b.bytes("k").await, b"first");

    // Replace-only-this-version.
    let (id, parts) = upload("k").await;
    let stale = b.complete(("k", &id), parts.clone()).if_match("\"0123\"");
    assert_eq!(
        code_of(stale.send().await),
        ("PreconditionFailed".into(), 412)
    );
    assert_eq!(b.bytes("k").await, b"first");
    let (id, parts) = upload("k").await;
    b.complete(("k", &id), parts)
        .if_match(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(b.bytes("k").await, b"joined");

    // If-Match on nothing: 404; If-None-Match on nothing: written.
    let (id, parts) = upload("absent").await;
    let on_nothing = b.complete(("absent", &id), parts).if_match(&first);
    assert_eq!(code_of(on_nothing.send().await), ("NoSuchKey".into(), 404));
    let (id, parts) = upload("new").await;
    b.complete(("new", &id), parts)
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    assert_eq!(b.bytes("new").await, b"joined");
}

/// `ListBuckets` a page at a time, and `x-amz-expected-bucket-owner` on bucket and object
/// operations (and its copy-source twin).
#[tokio::test]
async fn buckets_page_and_answer_only_their_expected_owner() {
    let s3 = start().await;
    let c = s3.client();
    for n in ["b-1", "b-2", "b-3", "b-4", "b-5", "other"] {
        c.create_bucket().bucket(n).send().await.unwrap();
    }
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_buckets()
            .prefix("b-")
            .max_buckets(2)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        assert!(page.buckets().len() <= 2);
        names.extend(page.buckets().iter().map(|b| b.name().unwrap().to_owned()));
        token = page.continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(names, ["b-1", "b-2", "b-3", "b-4", "b-5"]);
    let all = c.list_buckets().send().await.unwrap();
    assert_eq!(all.buckets().len(), 6);
    assert_eq!(all.continuation_token(), None);
    assert_eq!(
        code_of(c.list_buckets().max_buckets(0).send().await),
        ("InvalidArgument".into(), 400)
    );

    // The expected owner: the ID ListBuckets answers as the owner.
    let me = all.owner().unwrap().id().unwrap().to_owned();
    let b = Bucket::new(&c, "b-1");
    b.put("k", ByteStream::from_static(b"v"))
        .expected_bucket_owner(&me)
        .send()
        .await
        .unwrap();
    c.head_bucket()
        .bucket("b-1")
        .expected_bucket_owner(&me)
        .send()
        .await
        .unwrap();
    let someone = "123456789012";
    assert_eq!(
        code_of(b.get("k").expected_bucket_owner(someone).send().await),
        ("AccessDenied".into(), 403)
    );
    assert_eq!(
        code_of(
            c.head_bucket()
                .bucket("b-1")
                .expected_bucket_owner(someone)
                .send()
                .await
        )
        .1,
        403
    );
    assert_eq!(
        code_of(b.delete("k").expected_bucket_owner(someone).send().await),
        ("AccessDenied".into(), 403)
    );
    assert_eq!(b.bytes("k").await, b"v", "a refused delete deletes nothing");
    let copy = b.copy("copied", "b-1/k");
    assert_eq!(
        code_of(copy.expected_source_bucket_owner(someone).send().await),
        ("AccessDenied".into(), 403)
    );
    b.copy("copied", "b-1/k")
        .expected_source_bucket_owner(&me)
        .send()
        .await
        .unwrap();
    assert_eq!(b.bytes("copied").await, b"v");
}

/// An empty `Content-MD5` is a digest that cannot match: refused, nothing stored.
#[tokio::test]
async fn an_empty_content_md5_is_an_invalid_digest() {
    let s3 = start().await;
    let b = Bucket::create(&s3.client(), "md5").await;
    let put = b
        .put("k", ByteStream::from_static(b"v"))
        .customize()
        .mutate_request(|r| {
            r.headers_mut().insert("content-md5", "");
        })
        .send()
        .await;
    assert_eq!(code_of(put), ("InvalidDigest".into(), 400));
    assert_eq!(code_of(b.head("k").send().await).1, 404);
}

/// An upload framed as `aws-chunked` (the SDK's streaming checksums) keeps the object's own
/// `Content-Encoding`, without the framing.
#[tokio::test]
async fn aws_chunked_framing_is_not_the_objects_encoding() {
    let s3 = start().await;
    let b = Bucket::create(&s3.client(), "framing").await;
    let path = s3.region.dir().join("framed.bin");
    let body = data(300_000, 3);
    std::fs::write(&path, &body).unwrap();
    for (key, encoding) in [("plain", None), ("zipped", Some("gzip"))] {
        b.put(key, ByteStream::from_path(&path).await.unwrap())
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
            .set_content_encoding(encoding.map(str::to_owned))
            .send()
            .await
            .unwrap();
        let got = b.get(key).send().await.unwrap();
        assert_eq!(got.content_encoding(), encoding, "{key}");
        assert_eq!(body_of(got).await, body, "{key}");
    }
}

/// `GetObject`/`HeadObject` with `partNumber`, and `GetObjectAttributes`, of an object made
/// from three parts and of one put whole.
#[tokio::test]
async fn parts_of_a_multipart_object_are_read_and_listed_by_number() {
    const MIB: usize = 1024 * 1024;
    let s3 = start().await;
    let c = s3.client();
    let b = Bucket::create(&c, "parts").await;
    let sizes = [5 * MIB, 5 * MIB, 1000];
    let body = data(sizes.iter().sum(), 11);
    let id = b.upload_id("big").await;
    let mut done = Vec::new();
    let mut at = 0;
    for (n, size) in (1..).zip(sizes) {
        let chunk = body[at..at + size].to_vec();
        at += size;
        let p = b.part(("big", &id), n, chunk).send().await.unwrap();
        done.push(completed(n, p.e_tag().unwrap()));
    }
    let etag = b.complete(("big", &id), done).send().await.unwrap();
    let etag = etag.e_tag().unwrap().to_owned();

    let mut at = 0;
    for (n, size) in (1..).zip(sizes) {
        let h = b.head("big").part_number(n).send().await.unwrap();
        assert_eq!(h.parts_count(), Some(3));
        assert_eq!(h.content_length(), Some(size as i64), "part {n}");
        assert_eq!(h.e_tag(), Some(etag.as_str()));
        let g = b.get("big").part_number(n).send().await.unwrap();
        assert_eq!(g.parts_count(), Some(3));
        let want_range = format!("bytes {at}-{}/{}", at + size - 1, body.len());
        assert_eq!(g.content_range(), Some(want_range.as_str()));
        assert_eq!(body_of(g).await, &body[at..at + size], "part {n}");
        at += size;
    }
    assert_eq!(
        code_of(b.get("big").part_number(4).send().await),
        ("InvalidPartNumber".into(), 416)
    );
    assert_eq!(
        code_of(b.get("big").part_number(1).range("bytes=0-9").send().await),
        ("InvalidRequest".into(), 400)
    );

    // An object put whole is its own part 1.
    b.put("small", ByteStream::from_static(b"whole"))
        .send()
        .await
        .unwrap();
    let g = b.get("small").part_number(1).send().await.unwrap();
    assert_eq!(body_of(g).await, b"whole");
    assert_eq!(code_of(b.head("small").part_number(2).send().await).1, 416);

    // Attributes, the parts a page at a time.
    use aws_sdk_s3::types::ObjectAttributes as A;
    let attrs = |key: &str| {
        c.get_object_attributes()
            .bucket("parts")
            .key(key)
            .object_attributes(A::Etag)
            .object_attributes(A::ObjectSize)
            .object_attributes(A::StorageClass)
            .object_attributes(A::ObjectParts)
    };
    let a = attrs("big").max_parts(2).send().await.unwrap();
    assert_eq!(Some(a.e_tag().unwrap()), etag.get(1..etag.len() - 1));
    assert_eq!(a.object_size(), Some(body.len() as i64));
    assert_eq!(
        a.storage_class(),
        Some(&aws_sdk_s3::types::StorageClass::Standard)
    );
    let p = a.object_parts().unwrap();
    assert_eq!(p.total_parts_count(), Some(3));
    assert_eq!(p.is_truncated(), Some(true));
    let listed: Vec<_> = p
        .parts()
        .iter()
        .map(|x| (x.part_number(), x.size()))
        .collect();
    assert_eq!(
        listed,
        [
            (Some(1), Some(5 * MIB as i64)),
            (Some(2), Some(5 * MIB as i64))
        ]
    );
    let marker = p.next_part_number_marker().unwrap();
    let a = attrs("big")
        .part_number_marker(marker)
        .send()
        .await
        .unwrap();
    let p = a.object_parts().unwrap();
    assert_eq!(p.is_truncated(), Some(false));
    let listed: Vec<_> = p
        .parts()
        .iter()
        .map(|x| (x.part_number(), x.size()))
        .collect();
    assert_eq!(listed, [(Some(3), Some(1000))]);
    let a = attrs("small").send().await.unwrap();
    assert_eq!(a.object_size(), Some(5));
    assert!(a.object_parts().is_none());
    let only_size = c
        .get_object_attributes()
        .bucket("parts")
        .key("small")
        .object_attributes(A::ObjectSize)
        .send()
        .await
        .unwrap();
    assert_eq!(only_size.e_tag(), None);
    assert_eq!(
        code_of(attrs("nothing").send().await),
        ("NoSuchKey".into(), 404)
    );
}

/// Object tags: set on put, copy (kept or replaced) and multipart upload, or later; read,
/// counted on GET, removed; bad sets refused.
#[tokio::test]
async fn objects_carry_their_tags() {
    use aws_sdk_s3::types::{Tag, Tagging, TaggingDirective};
    let s3 = start().await;
    let c = s3.client();
    let b = Bucket::create(&c, "tagged").await;
    let tags_of = |key: &'static str| {
        let c = c.clone();
        async move {
            let out = c
                .get_object_tagging()
                .bucket("tagged")
                .key(key)
                .send()
                .await
                .unwrap();
            out.tag_set()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect::<Vec<_>>()
        }
    };
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };

    b.put("k", ByteStream::from_static(b"v"))
        .tagging("project=blue&owner=jill%20smith")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags_of("k").await,
        pairs(&[("project", "blue"), ("owner", "jill smith")])
    );
    let got = b.get("k").send().await.unwrap();
    assert_eq!(got.tag_count(), Some(2));

    // Copies keep the source's tags unless told to replace them.
    b.copy("kept", "tagged/k").send().await.unwrap();
    assert_eq!(tags_of("kept").await, tags_of("k").await);
    b.copy("replaced", "tagged/k")
        .tagging_directive(TaggingDirective::Replace)
        .tagging("stage=copy")
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of("replaced").await, pairs(&[("stage", "copy")]));

    // Set and removed later.
    let set = Tagging::builder()
        .tag_set(Tag::builder().key("a").value("1").build().unwrap())
        .build()
        .unwrap();
    c.put_object_tagging()
        .bucket("tagged")
        .key("k")
        .tagging(set)
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of("k").await, pairs(&[("a", "1")]));
    assert_eq!(b.bytes("k").await, b"v", "tagging leaves the bytes alone");
    c.delete_object_tagging()
        .bucket("tagged")
        .key("k")
        .send()
        .await
        .unwrap();
    assert!(tags_of("k").await.is_empty());
    assert_eq!(b.get("k").send().await.unwrap().tag_count(), None);

    // Multipart uploads tag the object they make.
    let up = b
        .start_upload("mp")
        .tagging("from=mpu")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let p = b.part(("mp", id), 1, ByteStream::from_static(b"joined"));
    let etag = p.send().await.unwrap().e_tag().unwrap().to_owned();
    b.complete(("mp", id), vec![completed(1, &etag)])
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of("mp").await, pairs(&[("from", "mpu")]));

    // Refused, nothing written.
    let eleven: String = (0..11).map(|i| format!("k{i}=v&")).collect();
    for bad in [eleven.as_str(), "a=1&a=2", "aws:reserved=1"] {
        let put = b
            .put("bad", ByteStream::from_static(b"x"))
            .tagging(bad)
            .send();
        assert_eq!(code_of(put.await), ("InvalidTag".into(), 400), "{bad}");
    }
    assert_eq!(code_of(b.head("bad").send().await).1, 404);
    let missing = c.get_object_tagging().bucket("tagged").key("nope").send();
    assert_eq!(code_of(missing.await), ("NoSuchKey".into(), 404));
}

/// Versioning: versions kept on overwrite, read and copied by id, delete markers, deleting a
/// version for good (the next newest becomes current), suspending, listings with paging, and
/// a bucket that keeps older versions is not empty.
#[tokio::test]
async fn versions_are_kept_read_restored_and_deleted() {
    let s3 = start().await;
    let c = s3.client();
    let b = Bucket::create(&c, "history").await;
    let status = || async {
        let out = c
            .get_bucket_versioning()
            .bucket("history")
            .send()
            .await
            .unwrap();
        out.status().map(|s| s.as_str().to_owned())
    };
    assert_eq!(status().await, None, "never enabled");
    let put = |body: &'static str| {
        let req = b.put("k", ByteStream::from_static(body.as_bytes())).send();
        async move { req.await.unwrap().version_id().map(str::to_owned) }
    };
    let read = |vid: Option<&str>| {
        let req = b.get("k").set_version_id(vid.map(str::to_owned)).send();
        async move {
            let out = req.await.unwrap();
            let vid = out.version_id().map(str::to_owned);
            (String::from_utf8(body_of(out).await).unwrap(), vid)
        }
    };

    // Before versioning: the null version, no version id answered.
    assert_eq!(put("v0").await, None);
    b.set_versioning("Enabled").await;
    assert_eq!(status().await.as_deref(), Some("Enabled"));

    // Every write is a new version; the current one is read without an id.
    let v1 = put("v1").await.expect("a version id");
    let v2 = put("v2").await.expect("a version id");
    assert_ne!(v1, v2);
    assert_eq!(read(None).await, ("v2".into(), Some(v2.clone())));
    assert_eq!(read(Some(&v1)).await, ("v1".into(), Some(v1.clone())));
    assert_eq!(read(Some("null")).await, ("v0".into(), Some("null".into())));
    let head = b.head("k").version_id(&v1).send().await.unwrap();
    assert_eq!(head.content_length(), Some(2));
    assert_eq!(head.version_id(), Some(v1.as_str()));
    assert_eq!(
        code_of(
            b.get("k")
                .version_id("0123456789abcdef0123456789abcdef")
                .send()
                .await
        ),
        ("NoSuchVersion".into(), 404)
    );
    assert_eq!(
        code_of(b.get("k").version_id("not-a-version").send().await),
        ("InvalidArgument".into(), 400)
    );
    // Newest first; only the current one is the latest.
    let listed = b.versions().send().await.unwrap();
    let ids: Vec<(&str, bool)> = listed
        .versions()
        .iter()
        .map(|v| (v.version_id().unwrap(), v.is_latest().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [(v2.as_str(), true), (v1.as_str(), false), ("null", false)]
    );

    // A delete without an id leaves a delete marker: the key is gone from reads and listings
    // but every version stays.
    let del = b.delete("k").send().await.unwrap();
    assert_eq!(del.delete_marker(), Some(true));
    let marker = del.version_id().unwrap().to_owned();
    assert_eq!(code_of(b.get("k").send().await), ("NoSuchKey".into(), 404));
    // The answer says a delete marker hides the key, and which.
    let hidden = b.get("k").send().await.unwrap_err();
    let h = hidden.raw_response().unwrap().headers();
    assert_eq!(h.get("x-amz-delete-marker"), Some("true"));
    assert_eq!(h.get("x-amz-version-id"), Some(marker.as_str()));
    assert_eq!(
        code_of(b.get("k").version_id(&marker).send().await),
        ("MethodNotAllowed".into(), 405)
    );
    assert!(b.list().send().await.unwrap().contents().is_empty());
    assert_eq!(read(Some(&v2)).await.0, "v2");
    let all = b.all_versions(1000).await;
    assert!(all.contains(&("k".into(), marker.clone(), true, true)));
    assert!(all.contains(&("k".into(), v2.clone(), false, false)));
    assert_eq!(all.len(), 4);

    // Restoring an older version is copying it onto its key: a new version.
    let copied = b
        .copy("k", &format!("history/k?versionId={v1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(copied.copy_source_version_id(), Some(v1.as_str()));
    let v3 = copied.version_id().unwrap().to_owned();
    assert_eq!(read(None).await, ("v1".into(), Some(v3.clone())));

    // Deleting the current version for good: the next newest (the marker) hides the key
    // again; deleting the marker brings v2 back.
    let gone = b.delete("k").version_id(&v3).send().await.unwrap();
    assert_eq!(gone.version_id(), Some(v3.as_str()));
    assert_eq!(code_of(b.get("k").send().await), ("NoSuchKey".into(), 404));
    let unmarked = b.delete("k").version_id(&marker).send().await.unwrap();
    assert_eq!(unmarked.delete_marker(), Some(true));
    assert_eq!(read(None).await, ("v2".into(), Some(v2.clone())));

    // Listing pages of one entry see the same versions as one page (several keys, markers).
    for k in ["a", "b/c", "b/d"] {
        b.put(k, ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
        b.put(k, ByteStream::from_static(b"y"))
            .send()
            .await
            .unwrap();
    }
    b.delete("a").send().await.unwrap();
    let whole = b.all_versions(1000).await;
    let mut paged = b.all_versions(1).await;
    let mut sorted = whole.clone();
    sorted.sort();
    paged.sort();
    assert_eq!(paged, sorted);
    assert_eq!(whole.len(), 3 + 3 + 2 + 2);
    let latest: Vec<&str> = whole.iter().filter(|v| v.2).map(|v| v.0.as_str()).collect();
    assert_eq!(latest.len(), 4, "one latest per key: {whole:?}");
    let rolled = b.versions().delimiter("/").send().await.unwrap();
    let prefixes: Vec<&str> = rolled
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["b/"]);

    // Suspended: writes make the null version, replacing the older null one.
    b.set_versioning("Suspended").await;
    assert_eq!(status().await.as_deref(), Some("Suspended"));
    assert_eq!(put("v4").await.as_deref(), Some("null"));
    assert_eq!(read(Some("null")).await.0, "v4");
    let of_k: Vec<String> = b
        .all_versions(1000)
        .await
        .into_iter()
        .filter(|v| v.0 == "k")
        .map(|v| v.1)
        .collect();
    assert_eq!(of_k, ["null".to_owned(), v2.clone(), v1.clone()]);

    // Older versions keep the bucket from being deleted; DeleteObjects with version ids
    // empties it.
    let del = c.delete_bucket().bucket("history").send().await;
    assert_eq!(code_of(del), ("BucketNotEmpty".into(), 409));
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let ids = b
        .all_versions(1000)
        .await
        .into_iter()
        .map(|(k, v, _, _)| {
            ObjectIdentifier::builder()
                .key(k)
                .version_id(v)
                .build()
                .unwrap()
        })
        .collect();
    let out = c
        .delete_objects()
        .bucket("history")
        .delete(Delete::builder().set_objects(Some(ids)).build().unwrap())
        .send()
        .await
        .unwrap();
    assert!(out.errors().is_empty(), "{:?}", out.errors());
    assert!(b.all_versions(1000).await.is_empty());
    c.delete_bucket().bucket("history").send().await.unwrap();
    drop(s3);
}
