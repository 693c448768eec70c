//! The one error type of this crate, shared by the server (which renders it) and the client
//! (which parses it back), and its wire form `{"name": "...Error", "message", "context"}`.
//!
//! Wire names follow the original service's error names so operators recognise them; each has a
//! fixed HTTP status ([`Error::http_status`]). A client that meets a name it does not know keeps
//! it in [`Error::Other`] instead of failing to parse.

use manta_types::{ErrorCode, HasErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Everything that can go wrong talking to Moray, on either side of the wire.
///
/// Callers branch on the variant: `ObjectNotFound` and `EtagConflict` are ordinary outcomes of
/// conditional writes, `NoDatabasePeers` and `Unavailable` mean "try again soon"
/// ([`Error::is_retryable`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No record with this key in the bucket.
    #[error("{bucket}::{key} does not exist")]
    ObjectNotFound {
        /// Bucket name.
        bucket: String,
        /// Record key.
        key: String,
    },
    /// The bucket does not exist.
    #[error("bucket {bucket} does not exist")]
    BucketNotFound {
        /// Bucket name.
        bucket: String,
    },
    /// `createBucket` on a bucket that already exists.
    #[error("bucket {bucket} already exists")]
    BucketConflict {
        /// Bucket name.
        bucket: String,
    },
    /// A conditional write found a different etag (or a record where none was expected, or
    /// none where one was expected). `None` means "no record".
    #[error("{bucket}::{key} has etag {actual:?}, expected {expected:?}")]
    EtagConflict {
        /// Bucket name.
        bucket: String,
        /// Record key.
        key: String,
        /// The etag the caller required (`None`: the record must not exist).
        expected: Option<String>,
        /// The etag found (`None`: there was no record).
        actual: Option<String>,
    },
    /// A write would give a `unique` index a value another record already has.
    #[error("unique attribute violated: {message}")]
    UniqueAttribute {
        /// Bucket name.
        bucket: String,
        /// What Postgres reported.
        message: String,
    },
    /// `updateBucket` with a version not newer than the stored one.
    #[error("bucket {bucket} is at version {current}; update to version {requested} refused")]
    BucketVersion {
        /// Bucket name.
        bucket: String,
        /// The stored version.
        current: u64,
        /// The version the caller sent.
        requested: u64,
    },
    /// The filter or query options cannot be understood.
    #[error("invalid query: {message}")]
    InvalidQuery {
        /// What is wrong.
        message: String,
    },
    /// The filter or sort uses a field the bucket does not index (or whose index is still
    /// being filled by `reindexObjects`). Refused rather than silently filtered after `LIMIT`.
    #[error("{message}")]
    NotIndexed {
        /// Bucket name.
        bucket: String,
        /// The field.
        attribute: String,
        /// Why.
        message: String,
    },
    /// The bucket name is not allowed.
    #[error("{message}")]
    InvalidBucketName {
        /// The name given.
        name: String,
        /// What rule it breaks.
        message: String,
    },
    /// The bucket configuration is not valid (index type, trigger name, ...).
    #[error("invalid bucket config: {message}")]
    InvalidBucketConfig {
        /// What is wrong.
        message: String,
    },
    /// A request argument is missing or malformed.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
    },
    /// No writable Postgres primary is reachable right now (none known, failing over, still
    /// read-only, or timed out). Retry soon.
    #[error("no database peers available: {message}")]
    NoDatabasePeers {
        /// Why.
        message: String,
    },
    /// A statement ran longer than the server's statement timeout.
    #[error("query timed out: {message}")]
    QueryTimeout {
        /// What timed out.
        message: String,
    },
    /// The Moray server could not be reached or did not answer in time (client side only).
    #[error("moray unavailable: {message}")]
    Unavailable {
        /// Transport error.
        message: String,
    },
    /// The shard ring or its store (etcd) failed.
    #[error("shard ring: {message}")]
    Ring {
        /// What failed.
        message: String,
        /// True when a retry may succeed (etcd unreachable rather than a bad ring).
        retryable: bool,
    },
    /// An unexpected server-side failure; the server logged the cause.
    #[error("internal error: {message}")]
    Internal {
        /// Description.
        message: String,
    },
    /// A response the client could not make sense of.
    #[error("unexpected response (HTTP {status}): {message}")]
    Protocol {
        /// HTTP status.
        status: u16,
        /// What was wrong with it.
        message: String,
    },
    /// An error name this client does not know (from a newer server).
    #[error("{name}: {message}")]
    Other {
        /// Wire name.
        name: String,
        /// Message.
        message: String,
        /// HTTP status it came with.
        status: u16,
        /// Raw context.
        context: Value,
    },
}

/// The JSON body of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    /// Error name, e.g. `EtagConflictError`.
    pub name: String,
    /// Human-readable message.
    pub message: String,
    /// Structured details (bucket, key, expected, actual, ...).
    #[serde(default)]
    pub context: Value,
}

impl Error {
    /// The wire name, e.g. `ObjectNotFoundError`.
    pub fn name(&self) -> &str {
        match self {
            Error::ObjectNotFound { .. } => "ObjectNotFoundError",
            Error::BucketNotFound { .. } => "BucketNotFoundError",
            Error::BucketConflict { .. } => "BucketConflictError",
            Error::EtagConflict { .. } => "EtagConflictError",
            Error::UniqueAttribute { .. } => "UniqueAttributeError",
            Error::BucketVersion { .. } => "BucketVersionError",
            Error::InvalidQuery { .. } => "InvalidQueryError",
            Error::NotIndexed { .. } => "NotIndexedError",
            Error::InvalidBucketName { .. } => "InvalidBucketNameError",
            Error::InvalidBucketConfig { .. } => "InvalidBucketConfigError",
            Error::InvalidArgument { .. } => "InvalidArgumentError",
            Error::NoDatabasePeers { .. } => "NoDatabasePeersError",
            Error::QueryTimeout { .. } => "QueryTimeoutError",
            Error::Unavailable { .. } => "UnavailableError",
            Error::Ring { .. } => "RingError",
            Error::Internal { .. } => "InternalError",
            Error::Protocol { .. } => "ProtocolError",
            Error::Other { name, .. } => name,
        }
    }

    /// The HTTP status the server answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::ObjectNotFound { .. } | Error::BucketNotFound { .. } => 404,
            Error::BucketConflict { .. }
            | Error::EtagConflict { .. }
            | Error::UniqueAttribute { .. }
            | Error::BucketVersion { .. } => 409,
            Error::InvalidQuery { .. }
            | Error::NotIndexed { .. }
            | Error::InvalidBucketName { .. }
            | Error::InvalidBucketConfig { .. }
            | Error::InvalidArgument { .. } => 400,
            Error::NoDatabasePeers { .. } | Error::Unavailable { .. } => 503,
            Error::Ring { retryable, .. } => {
                if *retryable {
                    503
                } else {
                    500
                }
            }
            Error::QueryTimeout { .. } | Error::Internal { .. } => 500,
            Error::Protocol { status, .. } | Error::Other { status, .. } => *status,
        }
    }

    /// True when the same call may succeed if made again a little later (no primary yet,
    /// server unreachable). Conflicts and bad requests are not retryable.
    pub fn is_retryable(&self) -> bool {
        // One table: a failure is retryable exactly when its code says the service is
        // unavailable.
        self.code() == ErrorCode::ServiceUnavailable
    }

    /// The structured context sent beside the message.
    pub fn context(&self) -> Value {
        match self {
            Error::ObjectNotFound { bucket, key } => json!({"bucket": bucket, "key": key}),
            Error::BucketNotFound { bucket } | Error::BucketConflict { bucket } => {
                json!({"bucket": bucket})
            }
            Error::EtagConflict {
                bucket,
                key,
                expected,
                actual,
            } => json!({"bucket": bucket, "key": key, "expected": expected, "actual": actual}),
            Error::UniqueAttribute { bucket, .. } => json!({"bucket": bucket}),
            Error::BucketVersion {
                bucket,
                current,
                requested,
            } => json!({"bucket": bucket, "current": current, "requested": requested}),
            Error::NotIndexed {
                bucket, attribute, ..
            } => json!({"bucket": bucket, "attribute": attribute}),
            Error::InvalidBucketName { name, .. } => json!({"name": name}),
            Error::Ring { retryable, .. } => json!({"retryable": retryable}),
            Error::Other { context, .. } => context.clone(),
            Error::Protocol { status, .. } => json!({"status": status}),
            Error::InvalidQuery { .. }
            | Error::InvalidBucketConfig { .. }
            | Error::InvalidArgument { .. }
            | Error::NoDatabasePeers { .. }
            | Error::QueryTimeout { .. }
            | Error::Unavailable { .. }
            | Error::Internal { .. } => json!({}),
        }
    }

    /// The message part alone (without the name).
    pub fn message(&self) -> String {
        match self {
            Error::UniqueAttribute { message, .. }
            | Error::NotIndexed { message, .. }
            | Error::InvalidBucketName { message, .. }
            | Error::InvalidQuery { message }
            | Error::InvalidBucketConfig { message }
            | Error::InvalidArgument { message }
            | Error::NoDatabasePeers { message }
            | Error::QueryTimeout { message }
            | Error::Unavailable { message }
            | Error::Internal { message }
            | Error::Ring { message, .. }
            | Error::Other { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The wire body for this error.
    pub fn to_wire(&self) -> WireError {
        WireError {
            name: self.name().to_owned(),
            message: self.message(),
            context: self.context(),
        }
    }

    /// Rebuilds an error from a wire body and the status it came with.
    pub fn from_wire(w: WireError, status: u16) -> Error {
        let c = &w.context;
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let os = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
        let n = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
        let message = w.message.clone();
        match w.name.as_str() {
            "ObjectNotFoundError" => Error::ObjectNotFound {
                bucket: s("bucket"),
                key: s("key"),
            },
            "BucketNotFoundError" => Error::BucketNotFound {
                bucket: s("bucket"),
            },
            "BucketConflictError" => Error::BucketConflict {
                bucket: s("bucket"),
            },
            "EtagConflictError" => Error::EtagConflict {
                bucket: s("bucket"),
                key: s("key"),
                expected: os("expected"),
                actual: os("actual"),
            },
            "UniqueAttributeError" => Error::UniqueAttribute {
                bucket: s("bucket"),
                message,
            },
            "BucketVersionError" => Error::BucketVersion {
                bucket: s("bucket"),
                current: n("current"),
                requested: n("requested"),
            },
            "InvalidQueryError" => Error::InvalidQuery { message },
            "NotIndexedError" => Error::NotIndexed {
                bucket: s("bucket"),
                attribute: s("attribute"),
                message,
            },
            "InvalidBucketNameError" => Error::InvalidBucketName {
                name: s("name"),
                message,
            },
            "InvalidBucketConfigError" => Error::InvalidBucketConfig { message },
            "InvalidArgumentError" => Error::InvalidArgument { message },
            "NoDatabasePeersError" => Error::NoDatabasePeers { message },
            "QueryTimeoutError" => Error::QueryTimeout { message },
            "InternalError" => Error::Internal { message },
            "RingError" => Error::Ring {
                message,
                retryable: c.get("retryable").and_then(Value::as_bool).unwrap_or(false),
            },
            _ => Error::Other {
                name: w.name,
                message,
                status,
                context: w.context,
            },
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Error {
        Error::Internal {
            message: message.into(),
        }
    }

    /// A request this server does not permit (an endpoint switched off, or one for another
    /// role): `NotPermittedError`, 403.
    pub fn not_permitted(message: impl Into<String>) -> Error {
        Error::Other {
            name: "NotPermittedError".into(),
            message: message.into(),
            status: 403,
            context: json!({}),
        }
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Error {
        Error::InvalidArgument {
            message: message.into(),
        }
    }

    pub(crate) fn no_peers(message: impl Into<String>) -> Error {
        Error::NoDatabasePeers {
            message: message.into(),
        }
    }

    pub(crate) fn invalid_query(message: impl Into<String>) -> Error {
        Error::InvalidQuery {
            message: message.into(),
        }
    }
}

/// How the front door reports a Moray failure to its own callers (the original's translation:
/// not-found is 404, conflicts are `ConcurrentRequest`, a missing database is 503, anything
/// else is an internal error).
impl HasErrorCode for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::ObjectNotFound { .. } | Error::BucketNotFound { .. } => {
                ErrorCode::ResourceNotFound
            }
            Error::EtagConflict { .. } | Error::UniqueAttribute { .. } => {
                ErrorCode::ConcurrentRequest
            }
            Error::NoDatabasePeers { .. } | Error::Unavailable { .. } => {
                ErrorCode::ServiceUnavailable
            }
            Error::Ring { retryable, .. } => {
                if *retryable {
                    ErrorCode::ServiceUnavailable
                } else {
                    ErrorCode::InternalError
                }
            }
            Error::Other { status, .. } => match *status {
                503 => ErrorCode::ServiceUnavailable,
                403 => ErrorCode::AuthorizationFailed,
                _ => ErrorCode::InternalError,
            },
            Error::BucketConflict { .. }
            | Error::BucketVersion { .. }
            | Error::InvalidQuery { .. }
            | Error::NotIndexed { .. }
            | Error::InvalidBucketName { .. }
            | Error::InvalidBucketConfig { .. }
            | Error::InvalidArgument { .. }
            | Error::QueryTimeout { .. }
            | Error::Internal { .. }
            | Error::Protocol { .. } => ErrorCode::InternalError,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Error> {
        vec![
            Error::ObjectNotFound {
                bucket: "b".into(),
                key: "k".into(),
            },
            Error::BucketNotFound { bucket: "b".into() },
            Error::BucketConflict { bucket: "b".into() },
            Error::EtagConflict {
                bucket: "b".into(),
                key: "k".into(),
                expected: None,
                actual: Some("ABCDEF01".into()),
            },
            Error::UniqueAttribute {
                bucket: "b".into(),
                message: "dup".into(),
            },
            Error::BucketVersion {
                bucket: "b".into(),
                current: 3,
                requested: 2,
            },
            Error::invalid_query("bad"),
            Error::NotIndexed {
                bucket: "b".into(),
                attribute: "f".into(),
                message: "m".into(),
            },
            Error::InvalidBucketName {
                name: "1x".into(),
                message: "m".into(),
            },
            Error::InvalidBucketConfig {
                message: "m".into(),
            },
            Error::invalid_argument("m"),
            Error::no_peers("m"),
            Error::QueryTimeout {
                message: "m".into(),
            },
            Error::internal("m"),
            Error::Ring {
                message: "m".into(),
                retryable: true,
            },
        ]
    }

    #[test]
    fn wire_round_trip_keeps_variant_and_status() {
        for e in samples() {
            let status = e.http_status();
            let back = Error::from_wire(e.to_wire(), status);
            assert_eq!(back, e, "round trip of {}", e.name());
            assert_eq!(back.http_status(), status);
            assert!(e.name().ends_with("Error"), "{}", e.name());
        }
    }

    #[test]
    fn statuses_and_retryability() {
        assert_eq!(Error::no_peers("x").http_status(), 503);
        assert!(Error::no_peers("x").is_retryable());
        assert!(
            !Error::EtagConflict {
                bucket: "b".into(),
                key: "k".into(),
                expected: None,
                actual: None
            }
            .is_retryable()
        );
        let unknown = Error::from_wire(
            WireError {
                name: "BrandNewError".into(),
                message: "m".into(),
                context: json!({"a": 1}),
            },
            503,
        );
        assert_eq!(unknown.name(), "BrandNewError");
        assert!(unknown.is_retryable());
    }
}
