//! The S3 API: the same store as the Manta API, spoken the way S3 clients and tools expect,
//! on its own listener (`--s3-listen`).
//!
//! The `s3s` crate parses requests (path-style, and virtual-hosted-style under
//! `--s3-domain`), verifies SigV4/SigV2 signatures (header, presigned query, `aws-chunked`
//! bodies) and writes the XML; this module supplies the operations ([`S3Api`] implements
//! `s3s::S3`), the secret of an access key ([`auth::Keys`] over the account store) and the
//! authorisation ([`auth::Owners`]: an account reaches only the buckets it owns).
//! [`router`] adapts the `s3s` service into the axum router the front door serves, adding
//! the limits `s3s` does not have (concurrency, body sizes, presigned URL lifetimes).
//!
//! # Layout
//! - [`service`]: the axum adapter, limits, request ids, route names for metrics.
//! - [`auth`]: access keys to accounts and sub-users, bucket ownership checks, the decision
//!   for a sub-user's operation.
//! - [`acl`], [`policy`]: canned ACLs and bucket policies (what anyone may read).
//! - [`meta`]: the Moray buckets and records (buckets, objects, multipart uploads and parts).
//! - [`buckets`], [`objects`], [`multipart`]: the operations.
//! - [`list`]: listing with prefix, delimiter and markers over Moray range queries.
//! - [`conditional`]: `If-*` and `x-amz-copy-source-if-*` evaluation.
//! - [`versioning`]: versions, delete markers, and listing them.
//! - [`names`], [`error`]: key rules, S3 error codes.
//! - The read-only view of buckets through the Manta API
//!   (`/:login/buckets/<bucket>/objects/<key>`) is the Manta API's
//!   ([`crate::api::buckets`]), over [`meta`] and [`list`].
//!
//! # Data model
//! - Bucket records live in Moray bucket `manta_s3_buckets` on the system shard, keyed by
//!   name: names are unique in the region, each owned by one account. Creating is a
//!   must-not-exist put, so two accounts racing for a name cannot both win.
//! - Object records live in `manta_s3_objects` under `<bucket>/<key>`; the ring hashes them
//!   by bucket name, so one bucket's objects share a shard and a listing is one range query
//!   on the `name` index (the key, compared bytewise). A key is flat: `/` is just a character,
//!   and `a` and `a/b` coexist. Records are [`manta_types::MetadataRecord`]s (`dirname` = the
//!   bucket, `name` = the key, `etag` = the S3 ETag), so storage-node GC and jobs understand
//!   them; the bucket carries the `manta_delete_log` trigger, so overwritten and deleted
//!   objects are logged for garbage collection in the transaction that drops them.
//! - In a bucket with versioning, older versions and delete markers live in
//!   `manta_s3_versions` (same hashing; see [`versioning`]).
//! - Multipart uploads live in `manta_s3_uploads` (same hashing): the upload
//!   (`<bucket>/<uploadId>`, type `upload`, with the storage nodes chosen at creation) and its
//!   parts (`<bucket>/<uploadId>/<part number>`, object records with the `uploadId`).
//!
//! # Guarantees
//! - Objects get the Manta API's data path ([`crate::data`]): placement over failure
//!   domains, every copy fsynced before the record is written, streaming with backpressure,
//!   MD5 checked against `Content-MD5`, reads fail over between copies and never complete from
//!   a copy whose MD5 differs.
//! - Conditional writes (`If-Match`, `If-None-Match: *`) are atomic: the record is written
//!   on condition of the Moray etag that was checked.
//! - Multipart parts are stored on the nodes chosen when the upload began; completing asks
//!   each of those nodes to join the parts locally (`POST /mpu/commit`), so the bytes cross
//!   the front door once. The new record, the removal of the upload and of every part record
//!   are one Moray transaction; the parts' bytes are then reclaimed by GC. An upload is
//!   completed or aborted once: both are conditional on the upload record's etag.
//! - A copy is made by the nodes holding the source (a local join of one part) under a new
//!   object id, so deleting either object never takes the other's bytes; it falls back to
//!   streaming through the front door when a source node cannot do it. Copying an object
//!   onto itself with `REPLACE` rewrites only its record.
//! - One account's keys never reach another account's buckets (`AccessDenied`), and an
//!   unsigned request reaches nothing.
//!
//! # Limits
//! Single PUTs and parts up to 5 GiB, at most 10 000 parts of at least 5 MiB (except the
//! last), XML bodies up to 4 MiB, 1000 keys per `DeleteObjects`, 2 KiB of user metadata,
//! presigned URLs valid 1 s to 7 days. ACLs other than the canned `private` and
//! `public-read`, bucket policies beyond public reads ([`policy`]), lifecycle rules and
//! server-side encryption are not offered (`NotImplemented`).
//!
//! # Example
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use frontdoor::{Config, MoraySource, S3Config};
//! let mut cfg = Config::new("127.0.0.1:8080".parse()?, MoraySource::Single(vec!["http://127.0.0.1:2020".into()]));
//! cfg.s3 = Some(S3Config { listen: "127.0.0.1:9000".parse()?, domain: None, region: "us-east-1".into() });
//! // S3 clients use http://127.0.0.1:9000 with a key from `manta-adm s3-key create LOGIN`.
//! frontdoor::run(cfg, manta_util::shutdown_on_signals()).await
//! # }
//! ```

pub mod acl;
pub mod auth;
pub mod buckets;
pub mod conditional;
pub mod error;
pub mod list;
pub mod meta;
pub mod multipart;
pub mod names;
pub mod objects;
pub mod policy;
pub mod service;
pub mod tagging;
pub mod versioning;

use std::sync::Arc;

use axum::Router;

use crate::state::Frontdoor;

pub use service::S3Api;

/// The S3 API's application (the front door wraps it with request ids and `/metrics`).
pub fn router(fd: Arc<Frontdoor>) -> Router {
    service::router(fd)
}

/// What the unit tests of this module's parts share.
#[cfg(test)]
pub(crate) mod testing {
    /// The code of a failed operation, or the debug form of its answer.
    pub fn code<T: std::fmt::Debug>(r: super::error::S3Result<T>) -> String {
        r.map(|v| format!("{v:?}"))
            .unwrap_or_else(|e| e.code().as_str().to_owned())
    }

    /// Runs `f` to completion on a runtime of its own.
    pub fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(f)
    }
}
