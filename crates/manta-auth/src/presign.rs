//! Presigned URLs (`msign`): a URL that carries its own signature and expiry.
//!
//! The signed line is
//! ```text
//! <METHODS>\n<Host>\n<path as sent>\n<query without signature, keys sorted, k=v, RFC 3986-encoded, joined by &>
//! ```
//! where `METHODS` is the `method` parameter (a sorted comma list) when present, else the
//! request's method. The query carries `algorithm` (upper case), `expires` (Unix seconds),
//! `keyId` and `signature`, and optionally `method`, `role`, `role-tag`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// RFC 3986 encoding: everything but `A-Z a-z 0-9 - _ . ~` is escaped.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Encodes a query key or value as the signing line requires.
pub fn rfc3986(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// Splits a raw query string into decoded `(key, value)` pairs, in order.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (dec(k), dec(v))
        })
        .collect()
}

/// The query parameters of a presigned URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    /// `RSA-SHA256`, ...
    pub algorithm: String,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// The key id.
    pub key_id: String,
    /// Base64 signature.
    pub signature: String,
    /// The allowed methods, when the URL names several.
    pub methods: Option<String>,
    /// Every parameter except `signature`, decoded, for the signing line.
    pub params: Vec<(String, String)>,
}

/// Most query parameters a presigned URL may carry (it needs six at most; the rest are the
/// caller's own). Past this the URL is refused before anything is sorted or signed.
pub const MAX_PARAMS: usize = 64;

/// Why a presigned query is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PresignError(pub String);

impl Presigned {
    /// Reads the presign parameters from a raw query string. `None` when the query carries no
    /// `signature` (it is not a presigned request).
    pub fn from_query(raw: &str) -> Option<Result<Presigned, PresignError>> {
        let params = parse_query(raw);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let signature = get("signature")?;
        Some((|| {
            if params.len() > MAX_PARAMS {
                return Err(PresignError(format!(
                    "a presigned URL may carry at most {MAX_PARAMS} query parameters, not {}",
                    params.len()
                )));
            }
            let algorithm =
                get("algorithm").ok_or_else(|| PresignError("algorithm is missing".into()))?;
            let key_id = get("keyId").ok_or_else(|| PresignError("keyId is missing".into()))?;
            let expires = get("expires")
                .ok_or_else(|| PresignError("expires is missing".into()))?
                .parse::<u64>()
                .map_err(|_| PresignError("expires is not a number of seconds".into()))?;
            let methods = get("method");
            let rest = params
                .iter()
                .filter(|(k, _)| k != "signature")
                .cloned()
                .collect();
            Ok(Presigned {
                algorithm,
                expires,
                key_id,
                signature,
                methods,
                params: rest,
            })
        })())
    }

    /// The methods this URL allows (upper case).
    pub fn allowed_methods(&self, request_method: &str) -> Vec<String> {
        match &self.methods {
            Some(m) => m
                .split(',')
                .map(|s| s.trim().to_ascii_uppercase())
                .collect(),
            None => vec![request_method.to_ascii_uppercase()],
        }
    }

    /// The line that was signed, for a request to `host` and `path` (as sent) with `method`.
    pub fn signing_line(&self, method: &str, host: &str, path: &str) -> String {
        let methods = self
            .methods
            .clone()
            .unwrap_or_else(|| method.to_ascii_uppercase());
        signing_line(&methods, host, path, &self.params)
    }
}

/// The signed line for a presigned URL (see the module docs). `params` excludes `signature`.
pub fn signing_line(methods: &str, host: &str, path: &str, params: &[(String, String)]) -> String {
    format!("{methods}\n{host}\n{path}\n{}", encoded_query(params))
}

/// `k=v&...` with keys in the order the reference client signs them (a locale comparison,
/// which for these ASCII parameter names is case-insensitive), each part RFC 3986-encoded.
fn encoded_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Each key is lowered once (not at every comparison: a query of a thousand parameters
    // would cost tens of milliseconds before its signature is even checked).
    sorted.sort_by_cached_key(|(k, _)| (k.to_lowercase(), k.clone()));
    let query: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{}={}", rfc3986(k), rfc3986(v)))
        .collect();
    query.join("&")
}

/// What a client needs to build a presigned URL.
#[derive(Debug, Clone)]
pub struct PresignRequest<'a> {
    /// Allowed methods (sorted and joined; a `method` parameter is added when more than one).
    pub methods: Vec<String>,
    /// `host[:port]` of the front door, as the URL will carry it.
    pub host: &'a str,
    /// The path, percent-encoded as it will be sent.
    pub path: &'a str,
    /// The key id (`/login/keys/<md5>`).
    pub key_id: &'a str,
    /// Algorithm, upper case (`RSA-SHA256`).
    pub algorithm: &'a str,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// The roles a sub-user's URL acts in (the signed `role` parameter); `None`: its
    /// default roles.
    pub role: Option<&'a str>,
}

impl PresignRequest<'_> {
    /// The parameters (without the signature) and the line to sign.
    pub fn to_sign(&self) -> (Vec<(String, String)>, String) {
        let mut methods: Vec<String> = self
            .methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        methods.sort();
        methods.dedup();
        let joined = methods.join(",");
        let mut params = vec![
            ("algorithm".to_owned(), self.algorithm.to_ascii_uppercase()),
            ("expires".to_owned(), self.expires.to_string()),
            ("keyId".to_owned(), self.key_id.to_owned()),
        ];
        if methods.len() > 1 {
            params.push(("method".to_owned(), joined.clone()));
        }
        if let Some(r) = self.role.filter(|r| !r.is_empty()) {
            params.push(("role".to_owned(), r.to_owned()));
        }
        let line = signing_line(&joined, self.host, self.path, &params);
        (params, line)
    }

    /// The path and query of the finished URL, given the signature of [`PresignRequest::to_sign`].
    pub fn url_path(&self, params: &[(String, String)], signature_b64: &str) -> String {
        format!(
            "{}?{}&signature={}",
            self.path,
            encoded_query(params),
            rfc3986(signature_b64)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_line_matches_the_documented_example_shape() {
        let req = PresignRequest {
            methods: vec!["GET".into()],
            host: "us-central.manta.mnx.io",
            path: "/jill/stor/image.png",
            key_id: "/jill/keys/8e:36",
            algorithm: "rsa-sha256",
            expires: 1_354_201_912,
            role: None,
        };
        let (params, line) = req.to_sign();
        assert_eq!(
            line,
            "GET\nus-central.manta.mnx.io\n/jill/stor/image.png\nalgorithm=RSA-SHA256&expires=1354201912&keyId=%2Fjill%2Fkeys%2F8e%3A36"
        );
        let url = req.url_path(&params, "a+b/c=");
        assert!(url.ends_with("&signature=a%2Bb%2Fc%3D"), "{url}");
        // The server reads the same parameters back and rebuilds the same line.
        let p = Presigned::from_query(url.split_once('?').unwrap().1)
            .unwrap()
            .unwrap();
        assert_eq!(p.signature, "a+b/c=");
        assert_eq!(
            p.signing_line("GET", "us-central.manta.mnx.io", "/jill/stor/image.png"),
            line
        );
    }

    #[test]
    fn several_methods_are_signed_as_a_list() {
        let req = PresignRequest {
            methods: vec!["PUT".into(), "GET".into()],
            host: "h",
            path: "/a/stor/x",
            key_id: "/a/keys/f",
            algorithm: "RSA-SHA256",
            expires: 5,
            role: None,
        };
        let (params, line) = req.to_sign();
        assert!(line.starts_with("GET,PUT\nh\n/a/stor/x\n"));
        let p = Presigned::from_query(req.url_path(&params, "s").split_once('?').unwrap().1)
            .unwrap()
            .unwrap();
        assert_eq!(p.allowed_methods("PUT"), ["GET", "PUT"]);
        assert_eq!(p.signing_line("PUT", "h", "/a/stor/x"), line);
    }

    #[test]
    fn incomplete_queries() {
        assert!(Presigned::from_query("limit=5").is_none());
        assert!(Presigned::from_query("signature=x").unwrap().is_err());
        assert!(
            Presigned::from_query("signature=x&algorithm=a&keyId=k&expires=soon")
                .unwrap()
                .is_err()
        );
        // Too many parameters: refused with the reason, whatever else is right.
        let many: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=v&")).collect();
        let e = Presigned::from_query(&format!(
            "{many}signature=x&algorithm=RSA-SHA256&keyId=k&expires=1"
        ))
        .unwrap()
        .unwrap_err();
        assert!(e.0.contains("at most 64"), "{e}");
        let few: String = (0..MAX_PARAMS - 4).map(|i| format!("p{i}=v&")).collect();
        assert!(
            Presigned::from_query(&format!(
                "{few}signature=x&algorithm=RSA-SHA256&keyId=k&expires=1"
            ))
            .unwrap()
            .is_ok()
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = Presigned::from_query(&s);
            let _ = parse_query(&s);
        }

        #[test]
        fn rfc3986_round_trips(s in ".{0,60}") {
            let enc = rfc3986(&s);
            prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
            prop_assert_eq!(percent_decode_str(&enc).decode_utf8().unwrap(), s);
        }
    }
}
