//! Who is calling: `Authorization: Signature` headers and key ids, presigned URL queries, and
//! the whole authentication of a Manta API request over an in-memory account store.

use std::sync::{Arc, OnceLock};

use manta_auth::httpsig::{
    Authorization, KeyId, format_authorization, parse_authorization, signing_string,
};
use manta_auth::presign::{Presigned, parse_query, rfc3986, signing_line};
use manta_auth::{
    Account, AccountKey, Authenticator, Caller, MemoryAccounts, RequestInfo, TokenKey, Via,
};

use crate::RawRequest;

/// The account the `authenticate` target's requests may sign as (login `fuzz`), with one key
/// of each family. The private half of the Ed25519 key signs the corpus' signed seeds (see
/// `tests/short_run.rs`); the others' private halves were thrown away.
pub const ED25519_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGEB9AHyyts7q7yUY2ajBCmQE62deH7A8ot2SOcU0nq6 fuzz-test-key";
/// See [`ED25519_KEY`].
pub const P256_KEY: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBCc5MSwhe2VT0Al7GQtLpGy/mPQigMAVGGnG4fjphObaCHyhPPXJJhFamxHY66wEZodDgq9j1AfEiwR07YFoEHo= fuzz-p256";
/// See [`ED25519_KEY`].
pub const RSA_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDUHF5P53JbHzuDSObJtLBq8GwxDcDBHyOMWJMLwpClVTFiWc5lgOU8hPPdB/tcraiTV94rFpMWOEf/0aCv0AnvkCLTPGFYzJ344Ozqil7hnQJEP6arw+8+ObWmkqW94jc1Jt+aO/sGHKAyK4X00CSnzU1+/RVoMngtHdma4pzaW7sAySEv+P/hRgCCgHJgwHgyByVSYeC3hmmjj4unR56UEm/H3qlE/KZbdH6VQtxiETjsWaiNUFEWbe6k+zWuSkyGF8Sr3K1yJIQI0Mm2RxyD541bSRKbcPfULE3xtLrph2XrnJ1QFiyaHIpLw98V8MhOVL0VQj+I4l3f8HeCc8pz fuzz-rsa";
/// The front door's token secret in the `authenticate` target.
pub const TOKEN_SECRET: &[u8] = b"fuzz-token-secret-0123456789abcdef";
/// The uuid of the `fuzz` account.
pub const FUZZ_UUID: &str = "00000000-0000-4000-8000-00000000f022";

/// `Authorization` header values: the parse, and what it renders back to.
pub fn http_signature(data: &[u8]) {
    let s = crate::text(data);
    match parse_authorization(&s) {
        Ok(Authorization::Signature(p)) => {
            assert!(!p.headers.is_empty());
            for h in &p.headers {
                assert!(!h.is_empty() && !h.contains(char::is_whitespace));
                assert!(!h.bytes().any(|b| b.is_ascii_uppercase()));
            }
            let again = parse_authorization(&format_authorization(&p));
            assert_eq!(again, Ok(Authorization::Signature(p.clone())), "{s:?}");
            let lines = signing_string(&p.headers, "GET", "/fuzz/stor/a?b=c", |_| Some("v"))
                .expect("every header is given");
            assert_eq!(lines.split('\n').count(), p.headers.len());
            key_id(&p.key_id);
        }
        Ok(Authorization::Token(_)) => {}
        Ok(Authorization::Other(scheme)) => {
            assert!(!scheme.contains(char::is_whitespace));
            assert!(
                !scheme.eq_ignore_ascii_case("signature") && !scheme.eq_ignore_ascii_case("token")
            );
        }
        Err(_) => {}
    }
    key_id(&s);
}

/// A `keyId`: what parses renders to an id that parses the same.
fn key_id(s: &str) {
    if let Some(k) = KeyId::parse(s) {
        assert!(!k.login.is_empty() && !k.fingerprint.is_empty());
        assert!(k.subuser.as_deref().is_none_or(|u| !u.is_empty()));
        assert_eq!(KeyId::parse(&k.render()).as_ref(), Some(&k), "{s:?}");
    }
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

/// Query strings, as the front door reads every one, and presigned URLs' parameters.
pub fn presigned_url(data: &[u8]) {
    let s = crate::text(data);
    let params = parse_query(&s);
    // Each pair on its own reads back the same (the first few: the check is the same for all).
    for (k, v) in params.iter().take(16) {
        let one = format!("{}={}", rfc3986(k), rfc3986(v));
        assert_eq!(parse_query(&one), [(k.clone(), v.clone())], "{s:?}");
    }
    match Presigned::from_query(&s) {
        None => assert!(params.iter().all(|(k, _)| k != "signature")),
        Some(Ok(p)) => {
            assert!(p.params.iter().all(|(k, _)| k != "signature"));
            let signatures = params.iter().filter(|(k, _)| k == "signature").count();
            assert_eq!(p.params.len() + signatures, params.len());
            // The signed line ends with the parameters, encoded; they read back the same.
            let head = "GET\nhost.example\n/fuzz/stor/a\n";
            let line = signing_line("GET", "host.example", "/fuzz/stor/a", &p.params);
            let query = line
                .strip_prefix(head)
                .expect("the line starts with its head");
            assert_eq!(
                sorted(parse_query(query)),
                sorted(p.params.clone()),
                "{s:?}"
            );
            assert!(!query.contains('\n'));
            let methods = p.allowed_methods("get");
            assert!(!methods.is_empty());
            assert!(
                methods
                    .iter()
                    .all(|m| !m.bytes().any(|b| b.is_ascii_lowercase()))
            );
            let _ = p.signing_line("PUT", "host.example", "/fuzz/stor/a");
        }
        Some(Err(_)) => {}
    }
}

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let store = MemoryAccounts::default();
        let keys: Vec<AccountKey> = [ED25519_KEY, P256_KEY, RSA_KEY]
            .iter()
            .map(|k| AccountKey::from_openssh(k, None).expect("a valid test key"))
            .collect();
        let mut fuzz = Account::new("fuzz");
        fuzz.uuid = FUZZ_UUID.into();
        fuzz.keys = keys.clone();
        store.put(fuzz);
        let mut blocked = Account::new("blocked");
        blocked.keys = keys;
        blocked.blocked = true;
        store.put(blocked);
        Authenticator::new(Arc::new(store)).with_tokens(TokenKey::new(TOKEN_SECRET))
    })
}

/// A request as [`authenticate`] makes it of an input.
struct Request {
    method: String,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
}

impl Request {
    fn of(data: &[u8]) -> Option<Request> {
        let raw = RawRequest::split(data)?;
        let target = crate::text(raw.target);
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.clone().into_owned(), None),
        };
        Some(Request {
            method: crate::text(raw.method).into_owned(),
            path,
            query,
            headers: raw.header_map(),
        })
    }

    fn authenticate(&self) -> Result<Caller, manta_auth::AuthError> {
        let info = RequestInfo {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
        };
        crate::block_on(authenticator().authenticate(&info, crate::now()))
    }
}

/// Who the front door takes an input's request to come from (`None` when it refuses it).
pub fn caller_of(data: &[u8]) -> Option<Caller> {
    Request::of(data)?.authenticate().ok()
}

/// A whole request's authentication (an input is a request as [`RawRequest`] reads it):
/// HTTP Signatures, presigned URLs and tokens, checked against the `fuzz` account's keys at
/// [`crate::NOW_SECS`].
pub fn authenticate(data: &[u8]) {
    let Some(req) = Request::of(data) else {
        return;
    };
    let Ok(Caller::Account {
        account,
        via,
        methods,
        user: _,
    }) = req.authenticate()
    else {
        return;
    };
    let (headers, query, method, auth) = (
        &req.headers,
        req.query.as_deref(),
        &req.method,
        authenticator(),
    );
    assert!(
        !account.blocked,
        "a blocked account authenticated: {:?}",
        req.path
    );
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    match via {
        Via::Signature => {
            let authz = header("authorization").expect("signed requests carry Authorization");
            let Ok(Authorization::Signature(p)) = parse_authorization(authz) else {
                panic!("not a signature: {authz:?}");
            };
            assert!(p.headers.iter().any(|h| h == "date"), "{p:?}");
            let date = header("date").expect("the date is signed");
            let when = httpdate::parse_http_date(date).expect("an HTTP date");
            let skew = crate::now()
                .duration_since(when)
                .unwrap_or_else(|e| e.duration());
            assert!(skew <= auth.max_skew, "{date} is too far from now");
            assert!(methods.is_none());
        }
        Via::Presigned => {
            let q = query.expect("presigned URLs have a query");
            let p = Presigned::from_query(q)
                .expect("a signature")
                .expect("valid parameters");
            assert!(p.expires >= crate::NOW_SECS, "expired at {}", p.expires);
            let methods = methods.expect("presigned callers have methods");
            assert!(methods.iter().any(|m| m.eq_ignore_ascii_case(method)));
        }
        Via::Token => {
            let authz = header("authorization").expect("tokens come in Authorization");
            let Ok(Authorization::Token(t)) = parse_authorization(authz) else {
                panic!("not a token: {authz:?}");
            };
            let claims = TokenKey::new(TOKEN_SECRET)
                .verify(&t, crate::NOW_SECS)
                .expect("a valid token");
            assert_eq!(claims.uuid, account.uuid);
        }
    }
}

/// Policy rules (`CAN getobject WHEN sourceip = 10.0.0.0/8`), as an account's policies are
/// read: what parses renders back to a rule that parses the same, and deciding with it never
/// panics.
pub fn policy_rule(data: &[u8]) {
    let s = crate::text(data);
    let Ok(rule) = manta_auth::rbac::parse_rule(&s) else {
        return;
    };
    let again = manta_auth::rbac::parse_rule(&rule.render());
    assert_eq!(
        again.as_ref(),
        Ok(&rule),
        "{s:?} renders as {:?}",
        rule.render()
    );
    let ctx = manta_auth::rbac::Conditions {
        source_ip: Some(std::net::IpAddr::from([10, 1, 2, 3])),
        now_ms: crate::NOW_SECS * 1000,
    };
    for a in manta_auth::rbac::Action::ALL {
        let _ = rule.allows(a, &ctx);
    }
}
