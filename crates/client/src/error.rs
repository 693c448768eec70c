//! Client errors.

use manta_types::ErrorCode;

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error.
    #[error("{code}: {message} ({path})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The wire error code (`ResourceNotFound`, ...), or the status when the body had none.
        code: String,
        /// The server's message.
        message: String,
        /// The path of the request.
        path: String,
    },
    /// The request could not be sent or the answer not read.
    #[error("{path}: {source}")]
    Http {
        /// The path of the request.
        path: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// A path that is not valid.
    #[error("{0}")]
    InvalidPath(String),
    /// No key to sign with, or signing failed.
    #[error("{0}")]
    Signer(#[from] manta_auth::SignerError),
    /// Missing or bad configuration (`MANTA_URL`, `MANTA_USER`, ...).
    #[error("{0}")]
    Config(String),
    /// Local I/O (reading a file to upload, writing a download).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The server's error code, when it sent a known one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => ErrorCode::from_wire(code),
            _ => None,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when trying the same request again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { status, .. } => *status == 503 || *status == 500,
            Error::Http { source, .. } => {
                source.is_connect() || source.is_timeout() || source.is_request()
            }
            _ => false,
        }
    }
}
