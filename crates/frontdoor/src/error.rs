//! Turning failures of the tiers below into the API's error codes.

use manta_types::{ErrorCode, MantaError};
use tracing::warn;

/// A handler result.
pub type ApiResult<T> = Result<T, MantaError>;

/// Shorthand for an error with a code and message.
pub fn err(code: ErrorCode, message: impl Into<String>) -> MantaError {
    MantaError::new(code, message)
}

/// Maps a Moray failure seen while serving `path`.
///
/// Conflicts become `ConcurrentRequest`, a missing record `ResourceNotFound`, an unavailable
/// metadata tier the retryable `ServiceUnavailable`; anything else is logged and reported as
/// `InternalError` without its details.
pub fn from_moray(e: moray::Error, path: &str) -> MantaError {
    // Moray's own table (`HasErrorCode`) says what kind of failure it is; this only words it
    // for the path at hand and keeps internal details out of the answer.
    match manta_types::HasErrorCode::code(&e) {
        ErrorCode::ResourceNotFound => {
            err(ErrorCode::ResourceNotFound, format!("{path} was not found"))
        }
        ErrorCode::ConcurrentRequest => err(
            ErrorCode::ConcurrentRequest,
            format!("{path} was being concurrently updated"),
        ),
        ErrorCode::ServiceUnavailable => {
            warn!(error = %e, path, "metadata tier unavailable");
            err(
                ErrorCode::ServiceUnavailable,
                "manta is unable to serve this request",
            )
        }
        _ => {
            warn!(error = %e, path, "metadata tier failed");
            err(ErrorCode::InternalError, "an unexpected error occurred")
        }
    }
}

/// Maps an account-store failure.
pub fn from_store(e: manta_auth::StoreError) -> MantaError {
    warn!(error = %e, "account store unavailable");
    err(
        ErrorCode::ServiceUnavailable,
        "manta is unable to serve this request",
    )
}
