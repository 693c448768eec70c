//! S3 errors: the codes and statuses S3 clients branch on, from the failures of the tiers
//! below.
//!
//! Every error carries the request id (`<RequestId>` in the XML body). Internal failures are
//! logged here, where they are turned into the client's `InternalError`, with their cause;
//! the client learns only the code and the request id.

use manta_types::{ErrorCode, MantaError};
use s3s::{S3Error, S3ErrorCode};
use tracing::warn;

/// A result of an S3 operation.
pub type S3Result<T> = Result<T, S3Error>;

/// An error with `code` and `message`, tagged with the current request id.
pub fn s3err(code: S3ErrorCode, message: impl Into<String>) -> S3Error {
    let mut e = S3Error::with_message(code, message.into());
    tag(&mut e);
    e
}

/// Sets the request id on `e` (when the request has one).
pub fn tag(e: &mut S3Error) {
    if e.request_id().is_none()
        && let Some(id) = manta_util::http::current_request_id()
    {
        e.set_request_id(id);
    }
}

/// `InternalError`, after logging `cause`.
pub fn internal(cause: impl std::fmt::Display) -> S3Error {
    warn!(error = %cause, "S3 request failed");
    s3err(
        S3ErrorCode::InternalError,
        "We encountered an internal error. Please try again.",
    )
}

/// `ServiceUnavailable` (503): a tier below cannot serve now; clients retry.
pub fn unavailable(cause: impl std::fmt::Display) -> S3Error {
    warn!(error = %cause, "S3 request failed: a tier below is unavailable");
    s3err(
        S3ErrorCode::ServiceUnavailable,
        "Please reduce your request rate or retry.",
    )
}

/// Maps a Moray failure that the caller did not expect (conditions are handled where they
/// are made).
pub fn from_moray(e: moray::Error) -> S3Error {
    // Moray's own table (`HasErrorCode`) decides; S3 has no codes for the rest.
    match manta_types::HasErrorCode::code(&e) {
        ErrorCode::ServiceUnavailable => unavailable(e),
        _ => internal(e),
    }
}

/// Maps a failure of the shared data path or of the Manta API's helpers.
pub fn from_manta(e: MantaError) -> S3Error {
    use S3ErrorCode as S;
    let (code, msg): (S3ErrorCode, String) = match e.code {
        ErrorCode::ContentMD5Mismatch => (
            S::BadDigest,
            "The Content-MD5 you specified did not match what we received.".into(),
        ),
        ErrorCode::MaxContentLengthExceeded => (
            S::EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size.".into(),
        ),
        ErrorCode::UploadTimeout => (
            S::RequestTimeout,
            "Your socket connection to the server was not read from or written to within the timeout period.".into(),
        ),
        ErrorCode::UploadAbandoned => (
            S::IncompleteBody,
            "You did not provide the number of bytes specified by the Content-Length HTTP header.".into(),
        ),
        ErrorCode::ThrottledError => (S::SlowDown, "Please reduce your request rate.".into()),
        ErrorCode::NotEnoughSpace => {
            warn!(error = %e.message, "no room for an S3 upload");
            let mut err = S3Error::with_message(
                "InsufficientStorage"
                    .parse::<S3ErrorCode>()
                    .unwrap_or(S::ServiceUnavailable),
                "There is not enough free space on the storage nodes for this object.",
            );
            err.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
            tag(&mut err);
            return err;
        }
        ErrorCode::ServiceUnavailable => return unavailable(e.message),
        ErrorCode::RequestedRangeNotSatisfiable => (
            S::InvalidRange,
            "The requested range is not satisfiable".into(),
        ),
        ErrorCode::PreconditionFailed => (
            S::PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold".into(),
        ),
        _ => return internal(format!("{}: {}", e.code.as_str(), e.message)),
    };
    s3err(code, msg)
}

/// `NoSuchBucket`.
pub fn no_such_bucket(bucket: &str) -> S3Error {
    s3err(
        S3ErrorCode::NoSuchBucket,
        format!("The specified bucket does not exist: {bucket}"),
    )
}

/// `NoSuchKey`.
pub fn no_such_key(key: &str) -> S3Error {
    s3err(
        S3ErrorCode::NoSuchKey,
        format!("The specified key does not exist: {key}"),
    )
}

/// `NoSuchUpload`.
pub fn no_such_upload(upload_id: &str) -> S3Error {
    s3err(
        S3ErrorCode::NoSuchUpload,
        format!(
            "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed: {upload_id}"
        ),
    )
}

/// `PreconditionFailed`.
pub fn precondition_failed() -> S3Error {
    s3err(
        S3ErrorCode::PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold",
    )
}

/// `ConditionalRequestConflict` (409): a conditional write or delete whose condition held
/// when it was checked met a concurrent change before it landed; the client retries.
pub fn conditional_conflict() -> S3Error {
    let mut e = s3err(
        S3ErrorCode::Custom("ConditionalRequestConflict".into()),
        "A conflicting operation occurred. If using PutObject you can retry the request. If using multipart upload you should initiate another CreateMultipartUpload request and re-upload each part.",
    );
    e.set_status_code(http::StatusCode::CONFLICT);
    e
}

/// `AccessDenied`.
pub fn access_denied(message: impl Into<String>) -> S3Error {
    s3err(S3ErrorCode::AccessDenied, message)
}

/// `InvalidArgument`.
pub fn invalid_argument(message: impl Into<String>) -> S3Error {
    s3err(S3ErrorCode::InvalidArgument, message)
}

/// `NotImplemented`.
pub fn not_implemented(what: &str) -> S3Error {
    s3err(
        S3ErrorCode::NotImplemented,
        format!("{what} is not implemented by this service"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_path_failures_become_s3_codes() {
        let cases = [
            (ErrorCode::ContentMD5Mismatch, "BadDigest", 400),
            (ErrorCode::MaxContentLengthExceeded, "EntityTooLarge", 400),
            (ErrorCode::UploadAbandoned, "IncompleteBody", 400),
            (ErrorCode::UploadTimeout, "RequestTimeout", 400),
            (ErrorCode::ThrottledError, "SlowDown", 503),
            (ErrorCode::ServiceUnavailable, "ServiceUnavailable", 503),
            (ErrorCode::NotEnoughSpace, "InsufficientStorage", 507),
            (ErrorCode::InternalError, "InternalError", 500),
        ];
        for (code, s3, status) in cases {
            let e = from_manta(MantaError::new(code, "x"));
            assert_eq!(e.code().as_str(), s3);
            assert_eq!(e.status_code().map(|s| s.as_u16()), Some(status), "{s3}");
        }
    }
}
