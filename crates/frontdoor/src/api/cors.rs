//! The headers stored with an entry, echoed on reads, with the CORS rules: a stored
//! `access-control-allow-origin` may be a comma list; when the request has an `Origin`, only a
//! matching value (or `*`, answered as that origin) is returned and otherwise every CORS
//! header is dropped; `access-control-allow-methods` must name the request's method.

use std::collections::BTreeMap;

use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use manta_types::ErrorCode;

use super::headers::CORS_HEADERS;
use super::{Ctx, is_virtual_dir, load};
use crate::error::{ApiResult, err};

fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Adds an entry's stored headers to a response for a request with `origin` and `method`.
pub fn add_stored_headers(
    out: &mut HeaderMap,
    stored: &BTreeMap<String, String>,
    origin: Option<&str>,
    method: &str,
) {
    let mut cors_ok = true;
    let mut adds: Vec<(&str, String)> = Vec::new();
    for (k, v) in stored {
        let k = k.as_str();
        if origin.is_some() && CORS_HEADERS.contains(&k) {
            let origin = origin.unwrap_or_default();
            match k {
                "access-control-allow-origin" => {
                    if split_list(v).any(|o| o == origin || o == "*") {
                        adds.push((k, origin.to_owned()));
                    } else {
                        cors_ok = false;
                    }
                }
                "access-control-allow-methods" => {
                    if split_list(v).any(|m| m.eq_ignore_ascii_case(method)) {
                        adds.push((k, v.clone()));
                    } else {
                        cors_ok = false;
                    }
                }
                _ => adds.push((k, v.clone())),
            }
        } else {
            adds.push((k, v.clone()));
        }
    }
    for (k, v) in adds {
        if !cors_ok && CORS_HEADERS.contains(&k) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            out.insert(n, v);
        }
    }
}

/// `OPTIONS`: a CORS preflight answered from the entry's stored CORS headers.
///
/// # Errors
/// `ResourceNotFound` when there is no entry.
pub async fn options(ctx: &Ctx) -> ApiResult<Response> {
    let stored = if ctx.path.is_account_root() || is_virtual_dir(&ctx.path) {
        BTreeMap::new()
    } else {
        match load(&ctx.fd, &ctx.key()).await? {
            Some(e) => e.rec.headers,
            None => {
                return Err(err(
                    ErrorCode::ResourceNotFound,
                    format!("{} was not found", ctx.path),
                ));
            }
        }
    };
    let method = ctx
        .header("access-control-request-method")
        .unwrap_or("GET")
        .to_owned();
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = StatusCode::OK;
    let cors: BTreeMap<String, String> = stored
        .into_iter()
        .filter(|(k, _)| CORS_HEADERS.contains(&k.as_str()))
        .collect();
    add_stored_headers(resp.headers_mut(), &cors, ctx.header("origin"), &method);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn origin_lists_and_methods() {
        let s = stored(&[
            (
                "access-control-allow-origin",
                "https://a.example, https://b.example",
            ),
            ("access-control-allow-methods", "GET, PUT"),
            ("m-color", "blue"),
        ]);
        let mut h = HeaderMap::new();
        add_stored_headers(&mut h, &s, Some("https://b.example"), "GET");
        assert_eq!(h["access-control-allow-origin"], "https://b.example");
        assert_eq!(h["m-color"], "blue");
        let mut h = HeaderMap::new();
        add_stored_headers(&mut h, &s, Some("https://evil.example"), "GET");
        assert!(h.get("access-control-allow-origin").is_none());
        assert!(h.get("access-control-allow-methods").is_none());
        assert_eq!(h["m-color"], "blue");
        let mut h = HeaderMap::new();
        add_stored_headers(&mut h, &s, Some("https://a.example"), "DELETE");
        assert!(h.get("access-control-allow-origin").is_none());
        // Without Origin, the raw list is echoed.
        let mut h = HeaderMap::new();
        add_stored_headers(&mut h, &s, None, "GET");
        assert_eq!(
            h["access-control-allow-origin"],
            "https://a.example, https://b.example"
        );
        // A wildcard answers with the caller's origin.
        let mut h = HeaderMap::new();
        add_stored_headers(
            &mut h,
            &stored(&[("access-control-allow-origin", "*")]),
            Some("https://x"),
            "GET",
        );
        assert_eq!(h["access-control-allow-origin"], "https://x");
    }
}
