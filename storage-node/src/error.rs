//! The storage node's error type, its wire codes, and how it is rendered at the HTTP edge.

use std::io;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use manta_types::{ErrorCode, HasErrorCode};

use storage_api::{InvalidObjectKey, MD5_MISMATCH_STATUS, QUARANTINED_HEADER};

use crate::dataset::DatasetError;

/// What can go wrong serving objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path is not `/<owner uuid>/<object id>`.
    #[error("{0}")]
    InvalidPath(String),
    /// A request header is malformed.
    #[error("{0}")]
    InvalidHeader(String),
    /// A PUT with neither `Content-Length` nor chunked transfer encoding.
    #[error("a Content-Length or Transfer-Encoding: chunked is required")]
    ContentLengthRequired,
    /// The body is larger than the configured maximum.
    #[error("object is larger than the maximum of {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The body's MD5 differs from `Content-MD5`.
    #[error("Content-MD5 {expected} does not match the body's MD5 {computed}")]
    Md5Mismatch {
        /// What the client said (base64).
        expected: String,
        /// What arrived (base64).
        computed: String,
    },
    /// The client sent nothing for too long.
    #[error("no data received for {0:?}")]
    IdleTimeout(Duration),
    /// The client went away (or broke the body) before the upload finished.
    #[error("upload abandoned: {0}")]
    Abandoned(String),
    /// No such object on this node.
    #[error("object not found")]
    NotFound,
    /// The copy on this node failed verification and was moved aside.
    #[error(
        "the copy of this object on this storage node is quarantined (checksum mismatch); read another copy"
    )]
    Quarantined,
    /// A malformed `Range`.
    #[error("{0}")]
    BadRange(String),
    /// Several ranges at once.
    #[error("{0}")]
    MultipleRanges(String),
    /// A well-formed range outside the object.
    #[error("range not satisfiable for an object of {size} bytes")]
    RangeNotSatisfiable {
        /// The object's size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// Too many transfers in progress.
    #[error("too many transfers in progress on this storage node; retry or use another copy")]
    Throttled,
    /// The dataset is full.
    #[error("not enough space on this storage node: {0}")]
    NoSpace(io::Error),
    /// A dataset operation failed.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// A filesystem call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// Anything else that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error, classifying a full disk as [`Error::NoSpace`].
    pub fn io(what: &'static str, source: io::Error) -> Error {
        if matches!(
            source.raw_os_error(),
            Some(28 /* ENOSPC */ | 122 /* EDQUOT */)
        ) {
            Error::NoSpace(source)
        } else {
            Error::Io { what, source }
        }
    }
}

impl From<InvalidObjectKey> for Error {
    fn from(e: InvalidObjectKey) -> Error {
        Error::InvalidPath(e.0)
    }
}

impl HasErrorCode for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidPath(_) => ErrorCode::InvalidResource,
            Error::InvalidHeader(_) | Error::BadRange(_) => ErrorCode::InvalidHeader,
            Error::ContentLengthRequired => ErrorCode::ContentLengthRequired,
            Error::TooLarge { .. } => ErrorCode::MaxContentLengthExceeded,
            Error::Md5Mismatch { .. } => ErrorCode::ContentMD5Mismatch,
            Error::IdleTimeout(_) => ErrorCode::UploadTimeout,
            Error::Abandoned(_) => ErrorCode::UploadAbandoned,
            Error::NotFound | Error::Quarantined => ErrorCode::ResourceNotFound,
            Error::MultipleRanges(_) => ErrorCode::NotImplemented,
            Error::RangeNotSatisfiable { .. } => ErrorCode::RequestedRangeNotSatisfiable,
            Error::Throttled => ErrorCode::ThrottledError,
            Error::NoSpace(_) => ErrorCode::NotEnoughSpace,
            Error::Dataset(DatasetError::InvalidName(_)) => ErrorCode::InvalidParameter,
            Error::Dataset(DatasetError::SnapshotExists(_)) => ErrorCode::EntityAlreadyExists,
            Error::Dataset(_) | Error::Io { .. } | Error::Internal(_) => ErrorCode::InternalError,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        let message = match code {
            ErrorCode::InternalError => {
                // Log the cause where it is handled; the caller only learns it was ours.
                match &self {
                    Error::Io { source, .. } if source.raw_os_error() == Some(5 /* EIO */) => {
                        tracing::error!(error = %self, "disk I/O error; the dataset needs attention")
                    }
                    _ => tracing::warn!(error = %self, "request failed"),
                }
                "internal error; see the storage node's log for the request id".to_owned()
            }
            ErrorCode::NotEnoughSpace => {
                tracing::warn!(error = %self, "dataset full");
                self.to_string()
            }
            _ => self.to_string(),
        };
        let mut resp = manta_util::http::error_response_parts(code, &message);
        match &self {
            Error::Md5Mismatch { .. } => {
                *resp.status_mut() =
                    StatusCode::from_u16(MD5_MISMATCH_STATUS).expect("469 is a valid status");
            }
            Error::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            Error::Quarantined => {
                resp.headers_mut()
                    .insert(QUARANTINED_HEADER, HeaderValue::from_static("true"));
            }
            _ => {}
        }
        resp
    }
}
