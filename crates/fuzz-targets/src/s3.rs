//! The S3 API's untrusted input: the XML bodies it accepts, and whole requests through the
//! `s3s` service as the listener configures it.
//!
//! `s3s` keeps its SigV4/SigV2 parsers (`Authorization` headers, presigned queries,
//! `aws-chunked` bodies) private, so [`s3_request`] reaches them the way the listener does:
//! through [`s3s::service::S3Service::call`], after the front door's own checks
//! ([`frontdoor::s3::service::precheck`]). Its operations refuse everything and its one access
//! key's secret is known only here, so no fuzzed request can be answered with success.

use std::sync::OnceLock;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use s3s::dto::{
    CompletedMultipartUpload, CreateBucketConfiguration, Delete, PutObjectInput, PutObjectOutput,
    StreamingBlob, UploadPartInput, UploadPartOutput,
};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::xml::{Deserialize, Deserializer, Serialize, Serializer};
use s3s::{S3, S3Request, S3Response, S3Result};

use crate::RawRequest;

/// The domain of virtual-hosted-style requests in [`s3_request`] (`<bucket>.s3.fuzz.example`).
pub const DOMAIN: &str = "s3.fuzz.example:9000";
/// The one access key [`s3_request`]'s service knows.
pub const ACCESS_KEY: &str = "AKIAFUZZFUZZFUZZFUZZ";
/// Its secret.
pub const SECRET_KEY: &str = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz";

/// The bodies the S3 API's operations read (`CreateBucket`, `DeleteObjects`,
/// `CompleteMultipartUpload`), as `s3s` reads them: what parses writes back to XML that parses
/// to the same value.
///
/// A part's `ETag` is left out of that: `s3s` takes an unquoted `ETag` as is but refuses a
/// quoted one holding characters an HTTP entity tag may not (a NUL, a quote), and it writes
/// every `ETag` quoted, so such a value does not read back. The server only compares it with
/// the parts' own.
pub fn s3_xml(data: &[u8]) {
    round_trip::<CreateBucketConfiguration>(data);
    round_trip::<Delete>(data);
    if let Some(mut c) = read::<CompletedMultipartUpload>(data) {
        for p in c.parts.iter_mut().flatten() {
            p.e_tag = None;
        }
        let mut out = Vec::new();
        c.serialize(&mut Serializer::new(&mut out))
            .expect("what was read can be written");
        assert_eq!(read::<CompletedMultipartUpload>(&out).as_ref(), Some(&c));
    }
}

fn read<T: for<'x> Deserialize<'x>>(data: &[u8]) -> Option<T> {
    let mut d = Deserializer::new(data);
    let v = T::deserialize(&mut d).ok()?;
    d.expect_eof().ok()?;
    Some(v)
}

fn round_trip<T>(data: &[u8])
where
    T: for<'x> Deserialize<'x> + Serialize + PartialEq + std::fmt::Debug,
{
    let Some(v) = read::<T>(data) else {
        return;
    };
    let mut out = Vec::new();
    v.serialize(&mut Serializer::new(&mut out))
        .expect("what was read can be written");
    let again = read::<T>(&out);
    assert_eq!(
        again.as_ref(),
        Some(&v),
        "{:?} -> {:?}",
        String::from_utf8_lossy(data),
        String::from_utf8_lossy(&out)
    );
}

/// Operations that refuse everything (`NotImplemented`), after reading the body of the two
/// that stream one (so `aws-chunked` decoding runs).
struct Refuse;

async fn drain(body: Option<StreamingBlob>) {
    if let Some(mut b) = body {
        while let Some(Ok(_)) = b.next().await {}
    }
}

#[async_trait]
impl S3 for Refuse {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        drain(req.input.body).await;
        Err(s3s::S3Error::new(s3s::S3ErrorCode::NotImplemented))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        drain(req.input.body).await;
        Err(s3s::S3Error::new(s3s::S3ErrorCode::NotImplemented))
    }
}

fn service() -> &'static S3Service {
    static SERVICE: OnceLock<S3Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let mut b = S3ServiceBuilder::new(Refuse);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        frontdoor::s3::service::configure(&mut b, Some(DOMAIN));
        b.build()
    })
}

/// A whole S3 request (an input is a request as [`RawRequest`] reads it): the front door's
/// checks, then `s3s`'s parsing of the host, path, query, headers, signature and body.
pub fn s3_request(data: &[u8]) {
    let Some(raw) = RawRequest::split(data) else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(raw.method) else {
        return;
    };
    let Ok(uri) = http::Uri::try_from(raw.target) else {
        return;
    };
    let headers = raw.header_map();
    let mut check = http::Request::new(axum::body::Body::empty());
    *check.method_mut() = method.clone();
    *check.uri_mut() = uri.clone();
    *check.headers_mut() = headers.clone();
    if frontdoor::s3::service::precheck(&check, crate::now()).is_some() {
        return;
    }
    let mut req = http::Request::new(s3s::Body::from(bytes::Bytes::copy_from_slice(raw.body)));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    if let Ok(resp) = crate::block_on(service().call(req)) {
        assert!(
            !resp.status().is_success(),
            "{} for {:?}",
            resp.status(),
            String::from_utf8_lossy(data)
        );
    }
}

/// An `x-amz-tagging` header value, as `PutObject`, `CopyObject` and `CreateMultipartUpload`
/// take it: what parses is a valid tag set that encodes back to the same tags.
pub fn tagging_header(data: &[u8]) {
    use frontdoor::s3::tagging::{MAX_TAGS, check, encode, parse};
    let s = crate::text(data);
    if let Ok(tags) = parse(&s) {
        assert!(tags.len() <= MAX_TAGS);
        assert!(check(&tags).is_ok());
        assert_eq!(parse(&encode(&tags)).ok(), Some(tags), "{s:?}");
    }
}

/// A bucket policy document, as `PutBucketPolicy` takes it: nothing panics, what parses keeps
/// the document as given and opens exactly the keys under the prefixes it grants.
pub fn bucket_policy(data: &[u8]) {
    use frontdoor::s3::policy::parse;
    let s = crate::text(data);
    if let Ok(p) = parse("fuzz", &s) {
        assert_eq!(p.text, s);
        for k in ["", "a", "a/b", "zzz"] {
            let open = p.grant(Some(k)) == manta_auth::Grant::PublicRead;
            assert_eq!(
                open,
                p.read_prefixes.iter().any(|x| k.starts_with(x.as_str()))
            );
        }
    }
}
