//! Request headers: what kind of entry a PUT makes, durability, sizes, checksums, and the
//! headers stored with an entry.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use manta_types::ErrorCode;

use crate::config::Config;
use crate::error::{ApiResult, err};

/// Most bytes of `m-*` user metadata on one entry.
pub const MAX_USER_HEADER_BYTES: usize = 4096;

/// The CORS headers an entry may store and responses echo.
pub const CORS_HEADERS: [&str; 5] = [
    "access-control-allow-headers",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "access-control-max-age",
    "access-control-allow-methods",
];

/// What a PUT creates, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// `application/json; type=directory`.
    Directory,
    /// `application/json; type=link`.
    Link,
    /// Anything else.
    Object,
}

/// Reads the entry type from `Content-Type` (media type and `type=` parameter,
/// case-insensitive, spaces tolerated).
pub fn entry_type(h: &HeaderMap) -> EntryType {
    let Some(ct) = h
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return EntryType::Object;
    };
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("").to_ascii_lowercase();
    if media != "application/json" {
        return EntryType::Object;
    }
    for p in parts {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("type")
        {
            match v.trim().trim_matches('"').to_ascii_lowercase().as_str() {
                "directory" => return EntryType::Directory,
                "link" => return EntryType::Link,
                _ => {}
            }
        }
    }
    EntryType::Object
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    manta_util::http::header_str(h, name)
}

/// The requested number of copies (`durability-level` or `x-durability-level`).
///
/// # Errors
/// `InvalidDurabilityLevel` outside `1..=max_copies` or not a number.
pub fn durability(h: &HeaderMap, cfg: &Config) -> ApiResult<u32> {
    let Some(v) = get(h, "durability-level").or_else(|| get(h, "x-durability-level")) else {
        return Ok(cfg.default_copies);
    };
    match v.parse::<u32>() {
        Ok(n) if (1..=cfg.max_copies).contains(&n) => Ok(n),
        _ => Err(err(
            ErrorCode::InvalidDurabilityLevel,
            format!("durability-level must be between 1 and {}", cfg.max_copies),
        )),
    }
}

/// How the body's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLength {
    /// `Content-Length`, when given.
    pub exact: Option<u64>,
    /// `max-content-length` for chunked bodies, when given.
    pub max: Option<u64>,
}

/// Reads `Content-Length`, chunked encoding and `max-content-length`.
///
/// # Errors
/// `ContentLengthRequired` when the length is neither given nor chunked;
/// `InvalidMaxContentLength` for a malformed maximum; `InvalidParameter` for a malformed
/// `Content-Length`.
pub fn body_length(h: &HeaderMap) -> ApiResult<BodyLength> {
    let chunked =
        get(h, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let exact = match get(h, "content-length") {
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            err(
                ErrorCode::ContentLengthRequired,
                "Content-Length must be >= 0",
            )
        })?),
        None => None,
    };
    let max = match get(h, "max-content-length") {
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            err(
                ErrorCode::InvalidMaxContentLength,
                format!("{v} is an invalid max-content-length value"),
            )
        })?),
        None => None,
    };
    if exact.is_none() && !chunked {
        return Err(err(
            ErrorCode::ContentLengthRequired,
            "Content-Length must be >= 0",
        ));
    }
    Ok(BodyLength {
        exact: if chunked { None } else { exact },
        max,
    })
}

/// The `Content-MD5` header, checked to be a base64 MD5.
///
/// # Errors
/// `InvalidParameter` when present but not 16 bytes of base64.
pub fn content_md5(h: &HeaderMap) -> ApiResult<Option<String>> {
    match get(h, "content-md5") {
        None => Ok(None),
        Some(v) => match STANDARD.decode(v) {
            Ok(b) if b.len() == 16 => Ok(Some(v.to_owned())),
            _ => Err(err(
                ErrorCode::InvalidParameter,
                format!("\"{v}\" is invalid for \"content-md5\""),
            )),
        },
    }
}

/// The headers stored with an entry: `m-*` user metadata (at most
/// [`MAX_USER_HEADER_BYTES`]), CORS headers, `cache-control`, `surrogate-key`,
/// `content-disposition`.
///
/// # Errors
/// `InvalidParameter` when the user metadata is too large or a value is not text.
pub fn stored_headers(h: &HeaderMap) -> ApiResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut user_bytes = 0usize;
    for (name, value) in h {
        let name = name.as_str();
        let keep = (name.starts_with("m-") && name.len() > 2)
            || CORS_HEADERS.contains(&name)
            || matches!(
                name,
                "cache-control" | "surrogate-key" | "content-disposition"
            );
        if !keep {
            continue;
        }
        let v = value.to_str().map_err(|_| {
            err(
                ErrorCode::InvalidParameter,
                format!("header {name} is not valid text"),
            )
        })?;
        if name.starts_with("m-") {
            user_bytes += name.len() + v.len();
            if user_bytes > MAX_USER_HEADER_BYTES {
                return Err(err(
                    ErrorCode::InvalidParameter,
                    format!("m-* user metadata exceeds {MAX_USER_HEADER_BYTES} bytes"),
                ));
            }
        }
        out.insert(name.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// An epoch-milliseconds time as an HTTP date.
pub fn http_date(ms: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// Does an `Accept` header admit `content_type`?
pub fn accepts(accept: Option<&str>, content_type: &str) -> bool {
    let Some(accept) = accept else { return true };
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (ct_type, _) = ct.split_once('/').unwrap_or((&ct, ""));
    accept.split(',').any(|range| {
        let r = range
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        r.is_empty()
            || r == "*/*"
            || r == "*"
            || r == ct
            || r.strip_suffix("/*").is_some_and(|t| t == ct_type)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn entry_types() {
        for (content_type, want) in [
            ("application/json; type=directory", EntryType::Directory),
            ("Application/JSON;type=\"link\"", EntryType::Link),
            ("application/json", EntryType::Object),
            ("text/plain; type=directory", EntryType::Object),
        ] {
            let h = hm(&[("content-type", content_type)]);
            assert_eq!(entry_type(&h), want, "{content_type}");
        }
        assert_eq!(entry_type(&hm(&[])), EntryType::Object);
    }

    #[test]
    fn durability_bounds() {
        let cfg = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            crate::config::MoraySource::Single(vec![]),
        );
        assert_eq!(durability(&hm(&[]), &cfg).unwrap(), 2);
        assert_eq!(
            durability(&hm(&[("x-durability-level", "3")]), &cfg).unwrap(),
            3
        );
        for bad in ["0", "7", "-1", "two", ""] {
            let e = durability(&hm(&[("durability-level", bad)]), &cfg).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidDurabilityLevel, "{bad}");
        }
    }

    #[test]
    fn lengths() {
        assert_eq!(
            body_length(&hm(&[("content-length", "5")])).unwrap().exact,
            Some(5)
        );
        let chunked = body_length(&hm(&[
            ("transfer-encoding", "chunked"),
            ("max-content-length", "100"),
        ]))
        .unwrap();
        assert_eq!((chunked.exact, chunked.max), (None, Some(100)));
        assert_eq!(
            body_length(&hm(&[])).unwrap_err().code,
            ErrorCode::ContentLengthRequired
        );
        assert_eq!(
            body_length(&hm(&[
                ("transfer-encoding", "chunked"),
                ("max-content-length", "x")
            ]))
            .unwrap_err()
            .code,
            ErrorCode::InvalidMaxContentLength
        );
    }

    #[test]
    fn stored_and_user_headers() {
        let h = hm(&[
            ("m-color", "blue"),
            ("cache-control", "no-cache"),
            ("x-other", "no"),
            ("access-control-allow-origin", "*"),
        ]);
        let s = stored_headers(&h).unwrap();
        assert_eq!(s.len(), 3);
        assert!(!s.contains_key("x-other"));
        let big = "x".repeat(5000);
        assert_eq!(
            stored_headers(&hm(&[("m-big", &big)])).unwrap_err().code,
            ErrorCode::InvalidParameter
        );
    }

    #[test]
    fn md5_and_accept() {
        assert!(
            content_md5(&hm(&[("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")]))
                .unwrap()
                .is_some()
        );
        assert!(content_md5(&hm(&[("content-md5", "nope")])).is_err());
        assert!(accepts(Some("text/*"), "text/plain"));
        assert!(accepts(Some("application/json, */*;q=0.1"), "image/png"));
        assert!(!accepts(
            Some("application/json"),
            "text/plain; charset=utf-8"
        ));
        assert!(accepts(None, "x/y"));
    }
}
