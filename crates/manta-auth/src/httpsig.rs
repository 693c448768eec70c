//! The `Authorization: Signature ...` scheme: parsing its parameters, naming the key, and the
//! string that was signed.
//!
//! ```text
//! Authorization: Signature keyId="/jill/keys/a1:b2:...",algorithm="rsa-sha256",headers="date",signature="..."
//! ```
//! The signed string is one line per listed header, `name: value`, joined by `\n`;
//! `(request-target)` stands for `<method in lower case> <path and query>`. Without `headers`
//! only `date` is signed.

use std::fmt::Write as _;

/// The parameters of a `Signature` authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureParams {
    /// `/login/keys/<fingerprint>` (or with a sub-user).
    pub key_id: String,
    /// `rsa-sha256`, ...
    pub algorithm: String,
    /// Lower-case names of the signed headers, in order.
    pub headers: Vec<String>,
    /// Base64 signature.
    pub signature: String,
}

/// What an `Authorization` header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// The HTTP Signature scheme.
    Signature(SignatureParams),
    /// A bearer token issued by the front door (`Token <value>`).
    Token(String),
    /// Any other scheme (refused with `AuthorizationSchemeNotAllowed`).
    Other(String),
}

/// A malformed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Authorization header: {0}")]
pub struct ParseError(pub String);

/// Parses an `Authorization` header value.
///
/// # Errors
/// [`ParseError`] when a `Signature` header lacks `keyId`, `algorithm` or `signature`, or its
/// parameters are not `name="value"` pairs.
pub fn parse_authorization(value: &str) -> Result<Authorization, ParseError> {
    let value = value.trim();
    let (scheme, rest) = match value.find(char::is_whitespace) {
        Some(i) => (&value[..i], value[i..].trim_start()),
        None => (value, ""),
    };
    if scheme.eq_ignore_ascii_case("token") {
        return Ok(Authorization::Token(rest.to_owned()));
    }
    if !scheme.eq_ignore_ascii_case("signature") {
        return Ok(Authorization::Other(scheme.to_owned()));
    }
    let params = parse_params(rest)?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let key_id = get("keyId").ok_or_else(|| ParseError("keyId is missing".into()))?;
    let algorithm = get("algorithm").ok_or_else(|| ParseError("algorithm is missing".into()))?;
    let signature = get("signature").ok_or_else(|| ParseError("signature is missing".into()))?;
    let headers = match get("headers") {
        Some(h) => h.split_whitespace().map(str::to_ascii_lowercase).collect(),
        None => vec!["date".to_owned()],
    };
    if headers.is_empty() {
        return Err(ParseError("headers is empty".into()));
    }
    Ok(Authorization::Signature(SignatureParams {
        key_id,
        algorithm,
        headers,
        signature,
    }))
}

fn parse_params(mut s: &str) -> Result<Vec<(String, String)>, ParseError> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if s.is_empty() {
            return Ok(out);
        }
        let eq = s
            .find('=')
            .ok_or_else(|| ParseError(format!("expected name=value at {s:?}")))?;
        let name = s[..eq].trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ParseError(format!("bad parameter name {name:?}")));
        }
        s = &s[eq + 1..];
        let value;
        if let Some(rest) = s.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = rest.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let end = end.ok_or_else(|| ParseError(format!("unterminated value for {name}")))?;
            value = v;
            s = &rest[end + 1..];
        } else {
            let end = s.find(',').unwrap_or(s.len());
            value = s[..end].trim().to_owned();
            s = &s[end..];
        }
        out.push((name.to_owned(), value));
    }
}

/// Renders a `Signature` authorization header value (what clients send).
pub fn format_authorization(p: &SignatureParams) -> String {
    let mut s = String::from("Signature ");
    let _ = write!(
        s,
        "keyId=\"{}\",algorithm=\"{}\",headers=\"{}\",signature=\"{}\"",
        escape(&p.key_id),
        escape(&p.algorithm),
        escape(&p.headers.join(" ")),
        escape(&p.signature)
    );
    s
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A signed header that the request does not carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signed header {0:?} is not in the request")]
pub struct MissingHeader(pub String);

/// Builds the string that was signed.
///
/// `path_and_query` is the request target exactly as sent. `header` returns a header's value.
///
/// # Errors
/// [`MissingHeader`] when a listed header is absent.
pub fn signing_string<'a>(
    headers: &[String],
    method: &str,
    path_and_query: &str,
    header: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, MissingHeader> {
    let mut lines = Vec::with_capacity(headers.len());
    for h in headers {
        if h == "(request-target)" {
            lines.push(format!(
                "(request-target): {} {}",
                method.to_ascii_lowercase(),
                path_and_query
            ));
        } else {
            let v = header(h).ok_or_else(|| MissingHeader(h.clone()))?;
            lines.push(format!("{h}: {}", v.trim()));
        }
    }
    Ok(lines.join("\n"))
}

/// The parts of a `keyId`: `/login/keys/<fp>`, `/login/<sub-user>/keys/<fp>` or
/// `/login/users/<sub-user>/keys/<fp>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyId {
    /// The account login.
    pub login: String,
    /// The sub-user, if any.
    pub subuser: Option<String>,
    /// The key fingerprint.
    pub fingerprint: String,
}

impl KeyId {
    /// Parses a key id.
    pub fn parse(s: &str) -> Option<KeyId> {
        let parts: Vec<&str> = s.strip_prefix('/')?.split('/').collect();
        let (login, subuser, fp) = match parts.as_slice() {
            [login, "keys", fp] => (*login, None, *fp),
            [login, "users", sub, "keys", fp] | [login, sub, "keys", fp] => {
                (*login, Some(*sub), *fp)
            }
            _ => return None,
        };
        if login.is_empty() || fp.is_empty() || subuser.is_some_and(str::is_empty) {
            return None;
        }
        Some(KeyId {
            login: login.to_owned(),
            subuser: subuser.map(str::to_owned),
            fingerprint: fp.to_owned(),
        })
    }

    /// The id as clients write it (`/login[/sub]/keys/<fp>`).
    pub fn render(&self) -> String {
        match &self.subuser {
            Some(sub) => format!("/{}/{sub}/keys/{}", self.login, self.fingerprint),
            None => format!("/{}/keys/{}", self.login, self.fingerprint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_what_the_manta_client_sends() {
        let h = r#"Signature keyId="/jill/keys/a1:b2:c3",algorithm="rsa-sha256",headers="date",signature="c2ln+/=""#;
        let Authorization::Signature(p) = parse_authorization(h).unwrap() else {
            panic!()
        };
        assert_eq!(p.key_id, "/jill/keys/a1:b2:c3");
        assert_eq!(p.algorithm, "rsa-sha256");
        assert_eq!(p.headers, ["date"]);
        assert_eq!(p.signature, "c2ln+/=");
        // Without headers, only date is signed; spaces after commas are fine.
        let h = r#"Signature keyId="/a/keys/x", algorithm="ed25519-sha512", signature="s""#;
        let Authorization::Signature(p) = parse_authorization(h).unwrap() else {
            panic!()
        };
        assert_eq!(p.headers, ["date"]);
        assert!(
            matches!(parse_authorization("Basic abc").unwrap(), Authorization::Other(s) if s == "Basic")
        );
        assert!(
            matches!(parse_authorization("Token abc").unwrap(), Authorization::Token(s) if s == "abc")
        );
    }

    #[test]
    fn refuses_malformed_headers() {
        for h in [
            "Signature",
            r#"Signature keyId="/a/keys/x",algorithm="rsa-sha256""#,
            r#"Signature keyId="/a/keys/x,algorithm="rsa-sha256",signature="x"#,
            r#"Signature =x"#,
        ] {
            assert!(parse_authorization(h).is_err(), "{h}");
        }
    }

    #[test]
    fn signing_strings() {
        let headers = vec!["(request-target)".to_owned(), "date".to_owned()];
        let s = signing_string(&headers, "GET", "/jill/stor?limit=1", |h| {
            (h == "date").then_some("Thu, 01 Jan 1970 00:00:00 GMT")
        })
        .unwrap();
        assert_eq!(
            s,
            "(request-target): get /jill/stor?limit=1\ndate: Thu, 01 Jan 1970 00:00:00 GMT"
        );
        let err = signing_string(&["host".to_owned()], "GET", "/", |_| None).unwrap_err();
        assert_eq!(err, MissingHeader("host".into()));
    }

    #[test]
    fn key_ids() {
        let k = KeyId::parse("/jill/keys/a1:b2").unwrap();
        assert_eq!(
            (k.login.as_str(), k.subuser, k.fingerprint.as_str()),
            ("jill", None, "a1:b2")
        );
        let k = KeyId::parse("/jill/bob/keys/SHA256:abc").unwrap();
        assert_eq!(k.subuser.as_deref(), Some("bob"));
        let k = KeyId::parse("/jill/users/bob/keys/fp").unwrap();
        assert_eq!(k.render(), "/jill/bob/keys/fp");
        for bad in [
            "",
            "/",
            "jill/keys/x",
            "/jill/keys/",
            "/jill/x/y/z/keys/fp",
            "//keys/fp",
        ] {
            assert!(KeyId::parse(bad).is_none(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(
            key_id in "[ -~]{1,40}",
            alg in "[a-z0-9-]{1,20}",
            headers in prop::collection::vec("[a-z()-]{1,16}", 1..4),
            sig in "[A-Za-z0-9+/=]{0,80}",
        ) {
            let p = SignatureParams { key_id, algorithm: alg, headers, signature: sig };
            let parsed = parse_authorization(&format_authorization(&p)).unwrap();
            prop_assert_eq!(parsed, Authorization::Signature(p));
        }

        #[test]
        fn parsing_never_panics(s in ".{0,200}") {
            let _ = parse_authorization(&s);
            let _ = KeyId::parse(&s);
        }
    }
}
