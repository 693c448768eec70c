//! The fuzz targets: one function per parser that takes untrusted input, each `fn(&[u8])`
//! that feeds the bytes to the parser the way the server does and panics when a property
//! fails (a panic or a hang in the parser is a failure too).
//!
//! Properties checked, besides "no panic": what parses renders back to text that parses to the
//! same value (paths, `Authorization` headers, key ids, presigned queries, Moray filters, job
//! JSON, ranges, S3 XML bodies); parsed values keep their invariants (path and name limits,
//! ranges inside the object, checksum tables that cover their object, job sizes from the allowed lists, filter depth); a filter's SQL
//! holds none of the filter's text; a request authenticates only within the date skew, before
//! its expiry and never for a blocked account; and the S3 service never answers an unsigned
//! request with success.
//!
//! Each target lives only here, so its two drivers run the same code:
//! - `tests/fuzz` (not a workspace member): a `cargo fuzz` crate whose `fuzz_targets/<name>.rs`
//!   call [`TARGETS`]' functions under libFuzzer, seeded by `tests/fuzz/corpus/<name>/`;
//!   `scripts/fuzz` runs them (the long run).
//! - `tests/short_run.rs` here (stable Rust, part of the test suite): every seed of every
//!   target, then a fixed number of inputs mutated from them with a seeded generator.
//!
//! # Layout
//! - [`paths`]: request paths of the Manta API, Manta paths, S3 objects' Manta paths.
//! - [`auth`]: `Authorization: Signature` and key ids, presigned URL queries, the whole
//!   authentication of a request (signatures, presigned URLs, tokens), and policy rules.
//! - [`filters`]: Moray filters, and the SQL the server compiles them to.
//! - [`jobs`]: the job JSON users submit.
//! - [`images`]: the OCI image archives phases run in, as an agent unpacks them.
//! - [`ranges`]: `Range` headers (Manta API and storage nodes; S3 reads and part copies).
//! - [`storage`]: the checksum attribute a storage node stores with each object.
//! - [`s3`]: the XML bodies the S3 API accepts, and whole S3 requests through `s3s` as the
//!   listener configures it (SigV4/SigV2 headers and presigned queries, paths, headers, bodies).

pub mod auth;
pub mod filters;
pub mod images;
pub mod jobs;
pub mod paths;
pub mod ranges;
pub mod s3;
pub mod storage;

/// A fuzz target: panics when the input breaks a property.
pub type Target = fn(&[u8]);

/// Every target, by the name its `cargo fuzz` binary and seed corpus have.
pub const TARGETS: &[(&str, Target)] = &[
    ("manta_path", paths::manta_path),
    ("http_signature", auth::http_signature),
    ("presigned_url", auth::presigned_url),
    ("authenticate", auth::authenticate),
    ("moray_filter", filters::moray_filter),
    ("job_spec", jobs::job_spec),
    ("range_header", ranges::range_header),
    ("s3_xml", s3::s3_xml),
    ("s3_request", s3::s3_request),
    ("tagging_header", s3::tagging_header),
    ("bucket_policy", s3::bucket_policy),
    ("policy_rule", auth::policy_rule),
    ("oci_image", images::oci_image),
    ("checksum_attribute", storage::checksum_attribute),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The server's clock for the targets that read one (2026-01-01T00:00:00Z), so an input
/// behaves the same on every run.
pub const NOW_SECS: u64 = 1_767_225_600;

/// [`NOW_SECS`] as a time.
pub fn now() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW_SECS)
}

/// Runs a future that needs no I/O to completion on this thread's runtime.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
    }
    RT.with(|rt| rt.block_on(f))
}

/// The input as text, as a server that reads a header or path as UTF-8 (lossily) sees it.
pub(crate) fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// An HTTP request as the request targets read their input: a line `METHOD TARGET`, header
/// lines `name: value`, an empty line, the body. Lines end with `\n` (a `\r` before it is
/// dropped); a header line without `:` is skipped.
#[derive(Debug)]
pub struct RawRequest<'a> {
    /// The method.
    pub method: &'a [u8],
    /// The request target (path and query).
    pub target: &'a [u8],
    /// The headers, in order.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// The body.
    pub body: &'a [u8],
}

impl RawRequest<'_> {
    /// Splits an input (see the type's docs); `None` without a first line.
    pub fn split(data: &[u8]) -> Option<RawRequest<'_>> {
        let mut rest = data;
        let mut line = || -> Option<&[u8]> {
            let (l, r) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None if rest.is_empty() => return None,
                None => (rest, &rest[rest.len()..]),
            };
            rest = r;
            Some(l.strip_suffix(b"\r").unwrap_or(l))
        };
        let first = line()?;
        let (method, target) = match first.iter().position(|&b| b == b' ') {
            Some(i) => (&first[..i], &first[i + 1..]),
            None => (first, &b""[..]),
        };
        let mut headers = Vec::new();
        while let Some(l) = line() {
            if l.is_empty() {
                break;
            }
            if let Some(i) = l.iter().position(|&b| b == b':') {
                headers.push((l[..i].trim_ascii(), l[i + 1..].trim_ascii()));
            }
        }
        Some(RawRequest {
            method,
            target,
            headers,
            body: rest,
        })
    }

    /// The headers that are valid HTTP header names and values (a server refuses the others).
    pub fn header_map(&self) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (n, v) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(n),
                http::HeaderValue::from_bytes(v),
            ) {
                h.append(n, v);
            }
        }
        h
    }
}

/// Renders a request the way [`RawRequest::split`] reads it (for making seeds).
pub fn raw_request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target}\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}
