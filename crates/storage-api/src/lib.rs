//! The storage node's wire API: what the front door, the jobs agent, the benchmarks and the
//! tests need to talk to a storage node without linking the node itself.
//!
//! The storage node (`storage-node/`) serves this API and uses these same definitions, so each
//! type, header name and status exists once. Its callers depend on this crate only.
//!
//! # Layout
//! - [`client`]: [`StorageClient`], the one client of the object API (PUT/GET/HEAD/DELETE
//!   `/<owner>/<objectId>`, `POST /mpu/commit`, `GET /ping`), and [`Connector`], the
//!   connection settings and pool shared by clients of many nodes.
//! - [`error`]: [`ClientError`], with the one retry rule ([`ClientError::is_retryable`]) and
//!   its [`HasErrorCode`](manta_types::HasErrorCode) mapping.
//! - [`key`]: [`ObjectKey`], the `<owner>/<objectId>` name of an object on a node and in its
//!   dataset (`objects/<owner>/<objectId>`).
//! - [`blocks`]: the per-block CRC32C checksums that protect bytes at rest and in flight.
//! - [`digest`]: [`Digests`] and the wire forms of MD5 (base64), SHA-256 and CRC32C (hex).
//! - [`range`]: the `Range` header.
//! - [`CommitRequest`], [`CommitResult`]: the body and answer of `POST /mpu/commit`.
//! - Header names and statuses: [`COMPUTED_MD5_HEADER`], [`COMPUTED_CRC32C_HEADER`],
//!   [`COMPUTED_SHA256_HEADER`],
//!   [`QUARANTINED_HEADER`], [`MD5_MISMATCH_STATUS`].
//!
//! # Guarantees
//! - Bodies stream both ways: the client never holds a whole object in memory (except where
//!   a caller asks for it, [`GetResponse::bytes`]). An upload started with
//!   [`StorageClient::start_put`] is read from its sender only as fast as the node accepts it.
//! - Every request carries the current request id (`x-request-id`), so one id follows a
//!   user's request onto the storage nodes' logs.
//! - Whether an error is worth retrying is decided in one place,
//!   [`ClientError::is_retryable`].
//!
//! # Example
//! ```no_run
//! # async fn f() -> Result<(), storage_api::ClientError> {
//! use storage_api::{ObjectKey, PutRequest, StorageClient};
//! let node = StorageClient::new("http://127.0.0.1:8081")?;
//! let key = ObjectKey { owner: uuid::Uuid::new_v4(), id: manta_types::ObjectId::random() };
//! let put = node.put(&key, PutRequest::bytes("hello")).await?;
//! let got = node.get(&key, None).await?.bytes().await?;
//! assert_eq!(&got[..], b"hello");
//! assert_eq!(put.size, 5);
//! # Ok(()) }
//! ```

pub mod blocks;
pub mod client;
pub mod digest;
pub mod error;
pub mod key;
pub mod range;

use serde::{Deserialize, Serialize};

pub use client::{
    ClientBuilder, Connector, GetResponse, ObjectInfo, PutRequest, PutStream, StorageClient,
};
pub use digest::Digests;
pub use error::ClientError;
pub use key::{InvalidObjectKey, OBJECTS_DIR, ObjectKey};
pub use range::{ByteRange, RangeError};

/// Response header of a PUT (and of a commit): the base64 MD5 the node computed over the
/// bytes it stored, when it was asked to check one (`Content-MD5`), and of a GET or HEAD of a
/// copy whose MD5 the node holds.
pub const COMPUTED_MD5_HEADER: &str = "x-joyent-computed-content-md5";

/// Response header of a PUT, commit, GET and HEAD: the CRC32C of the whole object, 8 hex
/// digits (absent for copies written before CRC32C block sums).
pub const COMPUTED_CRC32C_HEADER: &str = "x-manta-computed-crc32c";

/// Response header of a GET and HEAD of a copy written before CRC32C block sums: the hex
/// SHA-256 of the whole object.
pub const COMPUTED_SHA256_HEADER: &str = "x-manta-computed-sha256";

/// The request header (`true`) asking the node to compute and report the body's MD5 (which it
/// otherwise computes only to check a `Content-MD5`).
pub const COMPUTE_MD5_HEADER: &str = "x-manta-compute-md5";

/// The request header asking the node to verify the body's MD5 (base64, RFC 1864).
pub const CONTENT_MD5_HEADER: &str = "content-md5";

/// The status a storage node answers when the body does not match `Content-MD5`. Not a
/// standard status: the original storage node answered 469 so the front door can tell "the
/// client sent other bytes than it promised" from every other 4xx, and the front door maps it
/// to `ContentMD5Mismatch` (400) for the user.
pub const MD5_MISMATCH_STATUS: u16 = 469;

/// Header set on the 404 for an object whose copy here was quarantined, so operators and the
/// front door can tell "corrupt here, read another copy" from "never stored here".
pub const QUARANTINED_HEADER: &str = "x-manta-quarantined";

/// The path of the multipart join (`POST`, a [`CommitRequest`] body).
pub const COMMIT_PATH: &str = "/mpu/commit";

/// The body of `POST /mpu/commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitRequest {
    /// Account the parts and the result belong to (the directory under `objects/`).
    pub owner: String,
    /// Id of the object to create.
    pub object_id: String,
    /// Ids of the objects to join, in order; an id may appear more than once.
    pub parts: Vec<String>,
}

/// The answer to a commit: the digests of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResult {
    /// Base64 MD5 (a joined object's MD5 is what its metadata record carries).
    pub md5: String,
    /// Hex CRC32C (absent for a result joined by an earlier version, retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    /// Size in bytes.
    pub size: u64,
}
