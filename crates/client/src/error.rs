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
        /// The wire error code (`ResourceNotFound`, ...), or `HTTP<status>` when the answer
        /// carried no code (a `HEAD` has no body; a 404 to a `HEAD` is still reported as
        /// `ResourceNotFound`).
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
    /// The bytes received are not the bytes the server stored: their MD5 differs from the
    /// object's `Content-MD5`.
    #[error("{path}: MD5 of the bytes received is {actual}, the object's is {expected}")]
    Checksum {
        /// The object.
        path: String,
        /// The object's `Content-MD5` (base64).
        expected: String,
        /// MD5 of what arrived (base64).
        actual: String,
    },
    /// The answer ended before `Content-Length` bytes arrived, and could not be resumed.
    #[error("{path}: expected {expected} bytes, received {received}")]
    Truncated {
        /// The object.
        path: String,
        /// `Content-Length`.
        expected: u64,
        /// What arrived.
        received: u64,
    },
}

impl Error {
    /// The server's error code, when it sent a known one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => ErrorCode::from_wire(code),
            _ => None,
        }
    }

    /// The wire code as text (`ResourceNotFound`, `HTTP502`, ...) of an API error.
    pub fn code_str(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
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

    /// True when the server said the path does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True when trying the same request again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { status, .. } => manta_types::error::retryable_status(*status),
            Error::Http { source, .. } => {
                source.is_connect() || source.is_timeout() || source.is_request()
            }
            Error::Truncated { .. } => true,
            _ => false,
        }
    }
}
