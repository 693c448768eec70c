//! Object tagging: up to 10 key-value tags per object, set with `x-amz-tagging` on
//! `PutObject`, `CopyObject` (with `x-amz-tagging-directive`: the source's tags by default,
//! the request's with `REPLACE`) and `CreateMultipartUpload`, or later with
//! `PutObjectTagging`; read with `GetObjectTagging` (and counted in `GetObject`'s
//! `x-amz-tagging-count`); removed with `DeleteObjectTagging`.
//!
//! Tags are kept in the object record's stored headers as `x-amz-tagging`, URL-encoded as on
//! the wire (`k1=v1&k2=v2`, in the order given).

use std::collections::BTreeMap;

use manta_types::MetadataRecord;
use s3s::S3ErrorCode;
use s3s::dto::{
    DeleteObjectTaggingInput, DeleteObjectTaggingOutput, GetObjectTaggingInput,
    GetObjectTaggingOutput, PutObjectTaggingInput, PutObjectTaggingOutput, Tag,
};
use s3s::{S3Request, S3Response};

use super::error::{S3Result, s3err};
use super::names::url_encode;
use super::service::{S3Api, bucket_of};

/// The stored header holding an object's tags.
pub const TAGGING_HEADER: &str = "x-amz-tagging";

/// Most tags on one object.
pub const MAX_TAGS: usize = 10;
/// Longest tag key, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest tag value, in characters.
pub const MAX_VALUE_CHARS: usize = 256;

/// One tag.
pub type Pair = (String, String);

fn invalid_tag(why: impl Into<String>) -> s3s::S3Error {
    s3err(S3ErrorCode::InvalidTag, why)
}

/// Checks a tag set: at most 10 tags, keys of 1 to 128 characters, values of at most 256,
/// no key twice, no key in the `aws:` namespace.
///
/// # Errors
/// `InvalidTag`.
pub fn check(tags: &[Pair]) -> S3Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(invalid_tag(format!(
            "Object tags cannot be greater than {MAX_TAGS}"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_KEY_CHARS {
            return Err(invalid_tag(format!(
                "The TagKey you have provided is invalid: 1 to {MAX_KEY_CHARS} characters"
            )));
        }
        if v.chars().count() > MAX_VALUE_CHARS {
            return Err(invalid_tag(format!(
                "The TagValue you have provided is invalid: at most {MAX_VALUE_CHARS} characters"
            )));
        }
        if k.starts_with("aws:") {
            return Err(invalid_tag("Your TagKey cannot be prefixed with aws:"));
        }
        if !seen.insert(k.as_str()) {
            return Err(invalid_tag(
                "Cannot provide multiple Tags with the same key",
            ));
        }
    }
    Ok(())
}

/// Decodes one URL-encoded component (`+` is a space, as form encoding writes it).
fn decode(s: &str) -> S3Result<String> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| invalid_tag("The tag set is not valid UTF-8 once decoded"))
}

/// Parses and checks `x-amz-tagging` (`k1=v1&k2=v2`, URL-encoded).
///
/// # Errors
/// `InvalidTag` (as [`check`], or undecodable).
pub fn parse(header: &str) -> S3Result<Vec<Pair>> {
    let mut tags = Vec::new();
    for part in header.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        tags.push((decode(k)?, decode(v)?));
    }
    check(&tags)?;
    Ok(tags)
}

/// The header form of a tag set.
pub fn encode(tags: &[Pair]) -> String {
    tags.iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Records `tags` in stored headers (none: the header goes).
pub fn store(headers: &mut BTreeMap<String, String>, tags: &[Pair]) {
    if tags.is_empty() {
        headers.remove(TAGGING_HEADER);
    } else {
        headers.insert(TAGGING_HEADER.into(), encode(tags));
    }
}

/// An object's tags (a stored value that no longer parses reads as none).
pub fn of(rec: &MetadataRecord) -> Vec<Pair> {
    rec.headers
        .get(TAGGING_HEADER)
        .and_then(|h| parse(h).ok())
        .unwrap_or_default()
}

/// `GetObjectTagging`.
///
/// # Errors
/// `NoSuchKey`.
pub async fn get_object_tagging(
    api: &S3Api,
    req: S3Request<GetObjectTaggingInput>,
) -> S3Result<S3Response<GetObjectTaggingOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?.rec;
    let i = &req.input;
    let version = i.version_id.as_deref();
    let e = super::objects::existing_version(api, &b.owner, &b.name, &i.key, version).await?;
    let tag_set = of(&e.rec)
        .into_iter()
        .map(|(k, v)| Tag {
            key: Some(k),
            value: Some(v),
        })
        .collect();
    Ok(S3Response::new(GetObjectTaggingOutput {
        tag_set,
        version_id: super::objects::answered_version(&b, &e.rec),
    }))
}

/// `PutObjectTagging`: replaces the object's tags.
///
/// # Errors
/// `NoSuchKey`, `InvalidTag`, `ConditionalRequestConflict` when the object changed meanwhile.
pub async fn put_object_tagging(
    api: &S3Api,
    req: S3Request<PutObjectTaggingInput>,
) -> S3Result<S3Response<PutObjectTaggingOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?.rec;
    let i = &req.input;
    let tags: Vec<Pair> = i
        .tagging
        .tag_set
        .iter()
        .map(|t| {
            (
                t.key.clone().unwrap_or_default(),
                t.value.clone().unwrap_or_default(),
            )
        })
        .collect();
    check(&tags)?;
    super::objects::rewrite_headers(api, &b, (&i.key, i.version_id.as_deref()), |h| {
        store(h, &tags)
    })
    .await?;
    Ok(S3Response::new(PutObjectTaggingOutput::default()))
}

/// `DeleteObjectTagging`: removes the object's tags.
///
/// # Errors
/// `NoSuchKey`, `ConditionalRequestConflict` when the object changed meanwhile.
pub async fn delete_object_tagging(
    api: &S3Api,
    req: S3Request<DeleteObjectTaggingInput>,
) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?.rec;
    let i = &req.input;
    super::objects::rewrite_headers(api, &b, (&i.key, i.version_id.as_deref()), |h| {
        store(h, &[])
    })
    .await?;
    Ok(S3Response::new(DeleteObjectTaggingOutput::default()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use crate::s3::testing::code;

    #[test]
    fn headers_parse_as_the_sdks_write_them() {
        let tags = parse("a=1&b%20c=d+e&empty=&plus=%2B").unwrap();
        let want = [("a", "1"), ("b c", "d e"), ("empty", ""), ("plus", "+")];
        let want: Vec<Pair> = want
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(tags, want);
        assert_eq!(parse(&encode(&tags)).unwrap(), tags);
        assert_eq!(parse("").unwrap(), Vec::<Pair>::new());
    }

    #[test]
    fn bad_tag_sets_are_invalid_tags() {
        let eleven: String = (0..11).map(|i| format!("k{i}=v&")).collect();
        for bad in [
            eleven.as_str(),
            "a=1&a=2",
            "=nokey",
            "aws:x=1",
            &format!("{}=1", "k".repeat(129)),
            &format!("k={}", "v".repeat(257)),
            "k=%FF",
        ] {
            assert_eq!(code(parse(bad)), "InvalidTag", "{bad}");
        }
    }

    proptest! {
        #[test]
        fn tag_sets_round_trip_through_the_header(
            tags in proptest::collection::btree_map("[^\u{0}]{1,20}", ".{0,20}", 0..10)
        ) {
            let tags: Vec<Pair> = tags.into_iter().filter(|(k, _)| !k.starts_with("aws:")).collect();
            prop_assert_eq!(parse(&encode(&tags)).unwrap(), tags);
        }

        #[test]
        fn parsing_never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }
    }
}
