//! Conditional requests: `If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`, checked against the entry as read; writes that carry one are then
//! made atomic by conditioning the metadata write on the Moray etag that was read.

use http::{HeaderMap, Method};
use manta_types::{ErrorCode, Etag};
use moray::EtagCondition;

use super::Entry;
use crate::error::{ApiResult, err};

/// What a failed precondition means for the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Go on.
    Proceed,
    /// `304 Not Modified` (reads only).
    NotModified,
}

fn get<'a>(h: &'a HeaderMap, n: &str) -> Option<&'a str> {
    manta_util::http::header_str(h, n)
}

/// True when the request makes its write depend on the current state.
pub fn is_conditional(h: &HeaderMap) -> bool {
    h.contains_key(http::header::IF_MATCH) || h.contains_key(http::header::IF_NONE_MATCH)
}

/// Checks the preconditions against `entry` (`None`: nothing at the path).
///
/// # Errors
/// `PreconditionFailed` (412) when a precondition does not hold.
pub fn check(
    method: &Method,
    h: &HeaderMap,
    entry: Option<&Entry>,
    path: &str,
) -> ApiResult<Outcome> {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let etag = entry.and_then(|e| e.rec.object().map(|o| Etag::new(&o.etag)));
    let mtime_s = entry.map(|e| e.rec.mtime / 1000);
    let failed = || {
        err(
            ErrorCode::PreconditionFailed,
            format!("if-* precondition failed for {path}"),
        )
    };
    if let Some(v) = get(h, "if-match") {
        let ok = match &etag {
            Some(e) => e.matches_header(v),
            None => entry.is_some() && v.trim() == "*",
        };
        if !ok {
            return Err(failed());
        }
    }
    if let Some(v) = get(h, "if-none-match") {
        let matched = match &etag {
            Some(e) => e.matches_header(v),
            None => entry.is_some() && v.trim() == "*",
        };
        if matched {
            return if read {
                Ok(Outcome::NotModified)
            } else {
                Err(failed())
            };
        }
    }
    if let (Some(v), Some(m)) = (get(h, "if-unmodified-since"), mtime_s)
        && let Ok(t) = httpdate::parse_http_date(v)
        && let Ok(since) = t.duration_since(std::time::UNIX_EPOCH)
        && m > since.as_secs()
    {
        return Err(failed());
    }
    if read
        && get(h, "if-none-match").is_none()
        && let (Some(v), Some(m)) = (get(h, "if-modified-since"), mtime_s)
        && let Ok(t) = httpdate::parse_http_date(v)
        && let Ok(since) = t.duration_since(std::time::UNIX_EPOCH)
        && m <= since.as_secs()
    {
        return Ok(Outcome::NotModified);
    }
    Ok(Outcome::Proceed)
}

/// The Moray condition for writing over `entry`: when the request was conditional, the write
/// only succeeds if the record is still the one that was checked.
pub fn write_condition(h: &HeaderMap, entry: Option<&Entry>) -> EtagCondition {
    if !is_conditional(h) {
        return EtagCondition::Any;
    }
    match entry {
        Some(e) => EtagCondition::MustMatch(e.etag.clone()),
        None => EtagCondition::MustNotExist,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manta_types::record::{EntryKind, ObjectInfo};

    fn entry(etag: &str, mtime: u64) -> Entry {
        Entry {
            rec: manta_types::MetadataRecord {
                version: 1,
                dirname: "/u/stor".into(),
                key: "/u/stor/x".into(),
                name: "x".into(),
                owner: "u".into(),
                creator: "u".into(),
                mtime,
                headers: Default::default(),
                roles: vec![],
                kind: EntryKind::Object(ObjectInfo {
                    content_length: 1,
                    content_md5: String::new(),
                    content_type: "x/y".into(),
                    content_disposition: None,
                    etag: etag.into(),
                    object_id: manta_types::ObjectId::random(),
                    sharks: vec![],
                    created_from: None,
                    sha256: None,
                    crc32c: None,
                    parts: None,
                }),
                request_id: None,
                version_id: None,
            },
            etag: "moray".into(),
        }
    }

    fn hm(k: &str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
        h
    }

    #[test]
    fn matches_and_mismatches() {
        let e = entry("abc", 1_000_000_000_000);
        let get = Method::GET;
        let put = Method::PUT;
        assert_eq!(
            check(&get, &hm("if-match", "abc"), Some(&e), "p").unwrap(),
            Outcome::Proceed
        );
        assert!(check(&get, &hm("if-match", "xyz"), Some(&e), "p").is_err());
        assert!(check(&put, &hm("if-match", "*"), None, "p").is_err());
        assert_eq!(
            check(&get, &hm("if-none-match", "abc"), Some(&e), "p").unwrap(),
            Outcome::NotModified
        );
        assert!(check(&put, &hm("if-none-match", "*"), Some(&e), "p").is_err());
        assert_eq!(
            check(&put, &hm("if-none-match", "*"), None, "p").unwrap(),
            Outcome::Proceed
        );
        let later = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000),
        );
        let earlier =
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1));
        assert_eq!(
            check(&get, &hm("if-modified-since", &later), Some(&e), "p").unwrap(),
            Outcome::NotModified
        );
        assert_eq!(
            check(&get, &hm("if-modified-since", &earlier), Some(&e), "p").unwrap(),
            Outcome::Proceed
        );
        assert!(check(&put, &hm("if-unmodified-since", &earlier), Some(&e), "p").is_err());
        assert_eq!(
            write_condition(&hm("if-match", "abc"), Some(&e)),
            EtagCondition::MustMatch("moray".into())
        );
        assert_eq!(
            write_condition(&hm("if-none-match", "*"), None),
            EtagCondition::MustNotExist
        );
        assert_eq!(
            write_condition(&HeaderMap::new(), Some(&e)),
            EtagCondition::Any
        );
    }
}
