//! SigV4 presigned URLs and SigV2 signatures made by hand, for the S3 tests and benches: a
//! request the SDKs would refuse to make (an expiry out of range, a wrong secret, a stale
//! date) or one made without an SDK.

use std::time::SystemTime;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC accepts every key length")
    };
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// Percent-encoding as SigV4 wants it (unreserved kept; `/` kept in paths).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a SigV4 presigned URL is made of.
pub struct Presign<'a> {
    /// `http://host:port` the request goes to (its host is signed).
    pub base: &'a str,
    /// The method.
    pub method: &'a str,
    /// The path, not yet encoded (`/<bucket>/<key>`, or `/<key>` virtual-hosted).
    pub path: &'a str,
    /// Access key id.
    pub access_key: &'a str,
    /// Its secret.
    pub secret_key: &'a str,
    /// `X-Amz-Expires` (any value: this is how the tests make URLs the SDKs refuse).
    pub expires: u64,
    /// When it is signed.
    pub now: SystemTime,
}

impl Presign<'_> {
    /// The presigned URL.
    pub fn url(&self) -> String {
        let iso = manta_types::time::iso8601_ms(
            self.now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        );
        // 2024-01-02T03:04:05.678Z -> 20240102T030405Z
        let amz_date = format!(
            "{}{}{}T{}{}{}Z",
            &iso[0..4],
            &iso[5..7],
            &iso[8..10],
            &iso[11..13],
            &iso[14..16],
            &iso[17..19]
        );
        let date = &amz_date[..8];
        let region = "us-east-1";
        let scope = format!("{date}/{region}/s3/aws4_request");
        let host = self.base.trim_start_matches("http://");
        let path = uri_encode(self.path, true);
        let mut q = [
            ("X-Amz-Algorithm".to_owned(), "AWS4-HMAC-SHA256".to_owned()),
            (
                "X-Amz-Credential".to_owned(),
                uri_encode(&format!("{}/{scope}", self.access_key), false),
            ),
            ("X-Amz-Date".to_owned(), amz_date.clone()),
            ("X-Amz-Expires".to_owned(), self.expires.to_string()),
            ("X-Amz-SignedHeaders".to_owned(), "host".to_owned()),
        ];
        q.sort();
        let query = q
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let canonical = format!(
            "{}\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD",
            self.method
        );
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let k_date = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.as_bytes(),
        );
        let k_region = hmac(&k_date, region.as_bytes());
        let k_service = hmac(&k_region, b"s3");
        let k_signing = hmac(&k_service, b"aws4_request");
        let sig = hex(&hmac(&k_signing, to_sign.as_bytes()));
        format!("{}{path}?{query}&X-Amz-Signature={sig}", self.base)
    }
}

/// A SigV4 presigned URL for `method` on `/<bucket>/<key>` (path style) at `endpoint`, made
/// at `now` with the key `(access key id, secret)`, valid `expires` seconds.
pub fn presign(
    endpoint: &str,
    method: &str,
    bucket: &str,
    key: &str,
    (access_key, secret_key): (&str, &str),
    expires: u64,
    now: SystemTime,
) -> String {
    Presign {
        base: endpoint,
        method,
        path: &format!("/{bucket}/{key}"),
        access_key,
        secret_key,
        expires,
        now,
    }
    .url()
}

/// SigV2's signature of `to_sign` with `secret`: base64 of its HMAC-SHA1.
fn sign_v2_string(secret: &str, to_sign: &str) -> String {
    use base64::Engine as _;
    let Ok(mut m) = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) else {
        unreachable!("HMAC accepts every key length")
    };
    m.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// A SigV2 `Authorization` header (`AWS <key>:<signature>`) for a request without a body,
/// `Content-MD5`, `Content-Type` or `x-amz-*` headers: `method` on `resource` (`/bucket/key`),
/// sent with `date` as its `Date` header.
pub fn sign_v2(method: &str, resource: &str, date: &str, keys: (&str, &str)) -> String {
    let to_sign = format!("{method}\n\n\n{date}\n{resource}");
    format!("AWS {}:{}", keys.0, sign_v2_string(keys.1, &to_sign))
}

/// A SigV2 presigned URL: `method` on `resource` (`/bucket/key`) at `endpoint`, good until
/// `expires` (Unix seconds).
pub fn presign_v2(
    endpoint: &str,
    method: &str,
    resource: &str,
    keys: (&str, &str),
    expires: u64,
) -> String {
    let to_sign = format!("{method}\n\n\n{expires}\n{resource}");
    let sig = sign_v2_string(keys.1, &to_sign);
    format!(
        "{endpoint}{resource}?AWSAccessKeyId={}&Expires={expires}&Signature={}",
        uri_encode(keys.0, false),
        uri_encode(&sig, false)
    )
}
