//! What goes wrong talking to a storage node, whether trying again may help, and which
//! [`ErrorCode`] it stands for.

use manta_types::{ErrorCode, HasErrorCode};

/// A boxed cause from below (hyper, the connection, a body stream).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong talking to a storage node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node has no such object.
    #[error("object not found on the storage node")]
    NotFound,
    /// The node's copy is corrupt and was set aside: read another copy.
    #[error("the storage node's copy is quarantined")]
    Quarantined,
    /// The body did not match the `Content-MD5` sent (status 469).
    #[error("the storage node computed another MD5 than Content-MD5: {0}")]
    Md5Mismatch(String),
    /// The range is outside the object.
    #[error("range not satisfiable (object is {size:?} bytes)")]
    RangeNotSatisfiable {
        /// The object's size, from `Content-Range: bytes */size`.
        size: Option<u64>,
    },
    /// Any other error answer.
    #[error("storage node answered {status} {code}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The error code from the body (`code`), or `Unknown`.
        code: String,
        /// The message from the body.
        message: String,
    },
    /// No connection could be made: refused, timed out, or the handshake failed.
    #[error("cannot connect to the storage node at {addr}: {source}")]
    Connect {
        /// The `host:port` tried.
        addr: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The node did not answer (or send the next chunk) in time.
    #[error("the storage node sent no {0} in time")]
    Timeout(&'static str),
    /// The connection broke, or the exchange failed below HTTP.
    #[error("storage node unreachable: {0}")]
    Transport(#[source] BoxError),
    /// The upload's request already ended (the node answered or the connection broke):
    /// [`PutStream::finish`](crate::PutStream::finish) says how.
    #[error("the upload to the storage node has already ended")]
    Closed,
    /// The node answered something this client does not understand.
    #[error("unexpected answer from the storage node: {0}")]
    InvalidResponse(String),
    /// The request could not be built (a header value that HTTP does not allow).
    #[error("cannot build the request to the storage node: {0}")]
    InvalidRequest(String),
}

impl ClientError {
    /// Whether trying again (on this node, later) may succeed: the one retry rule for every
    /// caller of a storage node.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Timeout(_)
            | ClientError::Transport(_)
            | ClientError::Closed => true,
            ClientError::Status { status, code, .. } => {
                ErrorCode::from_wire(code).is_some_and(ErrorCode::is_retryable)
                    || (*status >= 500 && *status != 501 && *status != 507)
            }
            ClientError::NotFound
            | ClientError::Quarantined
            | ClientError::Md5Mismatch(_)
            | ClientError::RangeNotSatisfiable { .. }
            | ClientError::InvalidResponse(_)
            | ClientError::InvalidRequest(_) => false,
        }
    }
}

impl HasErrorCode for ClientError {
    /// The code a caller reports for this error: the node's own code when it sent a known
    /// one; `ServiceUnavailable` when the node could not be reached or failed without one.
    fn code(&self) -> ErrorCode {
        match self {
            ClientError::NotFound | ClientError::Quarantined => ErrorCode::ResourceNotFound,
            ClientError::Md5Mismatch(_) => ErrorCode::ContentMD5Mismatch,
            ClientError::RangeNotSatisfiable { .. } => ErrorCode::RequestedRangeNotSatisfiable,
            ClientError::Status { status: 507, .. } => ErrorCode::NotEnoughSpace,
            ClientError::Status { code, .. } => {
                ErrorCode::from_wire(code).unwrap_or(ErrorCode::ServiceUnavailable)
            }
            ClientError::Connect { .. }
            | ClientError::Timeout(_)
            | ClientError::Transport(_)
            | ClientError::Closed => ErrorCode::ServiceUnavailable,
            ClientError::InvalidResponse(_) | ClientError::InvalidRequest(_) => {
                ErrorCode::InternalError
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: &str) -> ClientError {
        ClientError::Status {
            status,
            code: code.into(),
            message: String::new(),
        }
    }

    #[test]
    fn retry_rule() {
        assert!(ClientError::Timeout("answer").is_retryable());
        assert!(ClientError::Closed.is_retryable());
        assert!(status(503, "ThrottledError").is_retryable());
        assert!(status(500, "Unknown").is_retryable());
        assert!(!status(507, "NotEnoughSpace").is_retryable());
        assert!(!status(501, "NotImplemented").is_retryable());
        assert!(!status(413, "MaxContentLengthExceeded").is_retryable());
        assert!(!ClientError::NotFound.is_retryable());
        assert!(!ClientError::Md5Mismatch(String::new()).is_retryable());
    }

    #[test]
    fn codes() {
        assert_eq!(status(507, "Unknown").code(), ErrorCode::NotEnoughSpace);
        assert_eq!(
            status(503, "ThrottledError").code(),
            ErrorCode::ThrottledError
        );
        assert_eq!(status(502, "Unknown").code(), ErrorCode::ServiceUnavailable);
        assert_eq!(ClientError::Quarantined.code(), ErrorCode::ResourceNotFound);
        assert_eq!(
            ClientError::Md5Mismatch(String::new()).code(),
            ErrorCode::ContentMD5Mismatch
        );
    }
}
