//! The one table of error codes that cross the wire, and their HTTP statuses.
//!
//! Every service renders failures as `{"code": "<wire name>", "message": "..."}` with the
//! status from [`ErrorCode::http_status`]. The wire names are the original system's REST codes,
//! which its command line tools and SDKs branch on; never rename one, add a new code instead.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = ($name:literal, $status:literal), )*) => {
        /// A stable, machine-readable failure reason.
        ///
        /// The variant set is closed inside this crate; callers match on it through
        /// [`ErrorCode::as_str`] or compare values.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The wire name, as it appears in the `code` field of an error body.
            pub const fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $name, )* }
            }

            /// The HTTP status this code is sent with. The only such table in the system.
            pub const fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $status, )* }
            }

            /// Looks a wire name up (the inverse of [`ErrorCode::as_str`]).
            pub fn from_wire(name: &str) -> Option<ErrorCode> {
                match name { $( $name => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

error_codes! {
    // --- namespace and objects
    /// The object or directory does not exist.
    ResourceNotFound = ("ResourceNotFound", 404),
    /// The parent directory of a new entry does not exist.
    DirectoryDoesNotExist = ("DirectoryDoesNotExist", 404),
    /// The parent of a new entry is an object, not a directory.
    ParentNotDirectory = ("ParentNotDirectory", 400),
    /// A directory that still has entries cannot be deleted.
    DirectoryNotEmpty = ("DirectoryNotEmpty", 400),
    /// The directory holds the maximum number of entries.
    DirectoryLimitExceeded = ("DirectoryLimitExceeded", 409),
    /// The operation applies to objects only.
    OperationNotAllowedOnDirectory = ("OperationNotAllowedOnDirectory", 400),
    /// `/:login` itself cannot be written or deleted.
    OperationNotAllowedOnRootDirectory = ("OperationNotAllowedOnRootDirectory", 400),
    /// The entry already exists (and the request demanded that it did not).
    EntityAlreadyExists = ("EntityAlreadyExists", 409),
    /// Another request changed the entry at the same time.
    ConcurrentRequest = ("ConcurrentRequest", 409),
    /// The body did not match the `Content-MD5` the client sent.
    ContentMD5Mismatch = ("ContentMD5Mismatch", 400),
    /// Neither `Content-Length` nor chunked encoding was given.
    ContentLengthRequired = ("ContentLengthRequired", 411),
    /// `durability-level` outside the allowed range.
    InvalidDurabilityLevel = ("InvalidDurabilityLevel", 400),
    /// `max-content-length` is not a valid size.
    InvalidMaxContentLength = ("InvalidMaxContentLength", 400),
    /// The body is larger than allowed.
    MaxContentLengthExceeded = ("MaxContentLengthExceeded", 413),
    /// No set of storage nodes has room for the object.
    NotEnoughSpace = ("NotEnoughSpace", 507),
    /// The stored content type does not satisfy `Accept`.
    NotAcceptable = ("NotAcceptable", 406),
    /// The `Range` cannot be satisfied by the object.
    RequestedRangeNotSatisfiable = ("RequestedRangeNotSatisfiable", 416),
    /// The feature is not implemented by this server.
    NotImplemented = ("NotImplemented", 501),
    /// The client stopped sending the body for too long.
    UploadTimeout = ("UploadTimeout", 408),
    /// The client went away before the upload finished.
    UploadAbandoned = ("UploadAbandoned", 499),
    /// A dependency (metadata tier, storage nodes) is unavailable.
    ServiceUnavailable = ("ServiceUnavailable", 503),
    /// The server is at its concurrency limit; retry later.
    ThrottledError = ("ThrottledError", 503),
    /// An unexpected failure; the server logged the cause.
    InternalError = ("InternalError", 500),
    /// A conditional request's precondition did not hold.
    PreconditionFailed = ("PreconditionFailed", 412),
    // --- authentication and authorisation
    /// The caller may not perform this operation on this resource.
    AuthorizationFailed = ("AuthorizationFailed", 403),
    /// The request carried no credentials and needs them.
    AuthorizationRequired = ("AuthorizationRequired", 401),
    /// The `Authorization` scheme is not one this server accepts.
    AuthorizationSchemeNotAllowed = ("AuthorizationSchemeNotAllowed", 403),
    /// The signature did not verify.
    InvalidSignature = ("InvalidSignature", 403),
    /// The `keyId` is malformed.
    InvalidKeyId = ("InvalidKeyId", 403),
    /// No key with that fingerprint belongs to the account.
    KeyDoesNotExist = ("KeyDoesNotExist", 403),
    /// The account named by the request does not exist.
    AccountDoesNotExist = ("AccountDoesNotExist", 403),
    /// The sub-user named by the request does not exist.
    UserDoesNotExist = ("UserDoesNotExist", 403),
    /// The account is blocked by an operator.
    AccountBlocked = ("AccountBlocked", 403),
    /// The signing algorithm is not supported.
    InvalidAlgorithm = ("InvalidAlgorithm", 401),
    /// A presigned URL is malformed, expired or does not verify.
    InvalidQueryStringAuthentication = ("InvalidQueryStringAuthentication", 403),
    /// A token is malformed or expired.
    InvalidAuthenticationToken = ("InvalidAuthenticationToken", 403),
    /// The HTTP authentication token is malformed.
    InvalidHttpAuthenticationToken = ("InvalidHttpAuthenticationToken", 403),
    /// The operation requires TLS.
    SecureTransportRequired = ("SecureTransportRequired", 403),
    /// A role named by the request is not valid.
    InvalidRole = ("InvalidRole", 409),
    /// A `role-tag` names an unknown role.
    InvalidRoleTag = ("InvalidRoleTag", 409),
    /// No active role matches the resource's role tags.
    NoMatchingRoleTag = ("NoMatchingRoleTag", 403),
    /// The active roles lack the permission.
    MissingPermission = ("MissingPermission", 403),
    /// A query parameter is reserved for operators.
    QueryParameterForbidden = ("QueryParameterForbidden", 403),
    // --- request shape
    /// `PUT ?metadata=true` tried to change a header that cannot change.
    InvalidUpdate = ("InvalidUpdate", 400),
    /// A parameter or header has an invalid value.
    InvalidParameter = ("InvalidParameter", 400),
    /// The path is not a valid resource name.
    InvalidResource = ("InvalidResource", 400),
    /// A query argument is out of range (e.g. listing `limit`). The wire name keeps the
    /// original's `Error` suffix.
    InvalidArgument = ("InvalidArgumentError", 400),
    /// A header is malformed.
    InvalidHeader = ("InvalidHeader", 400),
    /// The request body is malformed.
    BadRequest = ("BadRequest", 400),
    /// The method is not allowed on this route.
    MethodNotAllowed = ("MethodNotAllowed", 405),
    /// The request's `Date` is outside the allowed clock skew.
    RequestExpired = ("RequestExpired", 400),
    // --- links
    /// The link's `Location` is not a valid path.
    InvalidLink = ("InvalidLink", 400),
    /// A link's source is a directory.
    LinkNotObject = ("LinkNotObject", 400),
    /// A link request carried no `Location`.
    LocationRequired = ("LocationRequired", 400),
    /// A link's source does not exist.
    SourceObjectNotFound = ("SourceObjectNotFound", 404),
    /// Links are disabled for this account.
    SnaplinksDisabled = ("SnaplinksDisabledError", 403),
    // --- jobs and multipart uploads
    /// The job description is invalid.
    InvalidJob = ("InvalidJob", 400),
    /// The job is not in a state that allows the operation.
    InvalidJobState = ("InvalidJobState", 409),
    /// No such job.
    JobNotFound = ("JobNotFound", 404),
    /// A multipart upload argument is invalid.
    MultipartUploadInvalidArgument = ("MultipartUploadInvalidArgument", 409),
    /// The multipart upload is not in a state that allows the operation.
    InvalidMultipartUploadState = ("InvalidMultipartUploadState", 409),
}

/// Why a job's task or input failed: the `code` of a job error (`live/err`, `err.txt`), as
/// the original's job tools report and branch on them. A table apart from [`ErrorCode`]: these
/// are never an HTTP answer, and some share a name with a request error only by history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobErrorCode {
    /// The phase's `init` command failed, or an asset could not be fetched.
    TaskInit,
    /// The user's command failed (non-zero exit, a signal, out of memory).
    UserTask,
    /// The task ran past its time limit and was killed.
    TaskKilled,
    /// The system failed the task (its node did not finish it after every retry).
    Internal,
    /// An input does not exist.
    ResourceNotFound,
    /// The job's owner may not read an input (another account's object outside `public`).
    Authorization,
    /// An input is not an object (a directory, a malformed path).
    InvalidArgument,
}

impl JobErrorCode {
    /// Every code.
    pub const ALL: &'static [JobErrorCode] = &[
        JobErrorCode::TaskInit,
        JobErrorCode::UserTask,
        JobErrorCode::TaskKilled,
        JobErrorCode::Internal,
        JobErrorCode::ResourceNotFound,
        JobErrorCode::Authorization,
        JobErrorCode::InvalidArgument,
    ];

    /// The wire name, as in the `code` field of a job error.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobErrorCode::TaskInit => "TaskInitError",
            JobErrorCode::UserTask => "UserTaskError",
            JobErrorCode::TaskKilled => "TaskKilledError",
            JobErrorCode::Internal => "InternalError",
            JobErrorCode::ResourceNotFound => "ResourceNotFoundError",
            JobErrorCode::Authorization => "AuthorizationError",
            JobErrorCode::InvalidArgument => "InvalidArgumentError",
        }
    }

    /// Looks a wire name up (the inverse of [`JobErrorCode::as_str`]).
    pub fn from_wire(name: &str) -> Option<JobErrorCode> {
        JobErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for JobErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one retry rule for HTTP answers between our services and from our clients: a request
/// that got one of these statuses may be sent again unchanged (if it is idempotent) and may then
/// succeed. Transport failures (refused connections, timeouts) are retryable too; every other
/// status is an answer that the same request will get again.
pub const fn retryable_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

impl ErrorCode {
    /// True when a client may retry the same request later and expect it to succeed.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::ServiceUnavailable
                | ErrorCode::ThrottledError
                | ErrorCode::InternalError
                | ErrorCode::ConcurrentRequest
                | ErrorCode::UploadTimeout
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ErrorCode::from_wire(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {s:?}")))
    }
}

/// Implemented by every crate's error type: the code it is reported with.
pub trait HasErrorCode {
    /// The wire code for this error.
    fn code(&self) -> ErrorCode;
}

/// The JSON body of every error response: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Wire name of the code. Kept as a string so bodies from newer servers still parse.
    pub code: String,
    /// Human-readable explanation, safe to show to the caller.
    pub message: String,
}

impl ErrorBody {
    /// A body for `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.as_str().to_owned(),
            message: message.into(),
        }
    }

    /// The code, if this server knows it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_wire(&self.code)
    }

    /// The body as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of two strings always serialises")
    }
}

/// An error with a code and a message: what handlers return and the edge renders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MantaError {
    /// The wire code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl MantaError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        MantaError {
            code,
            message: message.into(),
        }
    }

    /// The response body for this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code, self.message.clone())
    }
}

impl HasErrorCode for MantaError {
    fn code(&self) -> ErrorCode {
        self.code
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn job_error_codes_round_trip() {
        let mut names = std::collections::HashSet::new();
        for c in JobErrorCode::ALL {
            assert!(names.insert(c.as_str()), "{c} twice");
            assert_eq!(JobErrorCode::from_wire(c.as_str()), Some(*c));
        }
        assert_eq!(JobErrorCode::from_wire("NoSuchError"), None);
    }

    use super::*;

    /// The table of the original's REST codes and statuses, transcribed from the public API
    /// reference. Every one must exist here with the same status.
    const REFERENCE: &[(&str, u16)] = &[
        ("ResourceNotFound", 404),
        ("DirectoryDoesNotExist", 404),
        ("ParentNotDirectory", 400),
        ("DirectoryNotEmpty", 400),
        ("DirectoryLimitExceeded", 409),
        ("OperationNotAllowedOnDirectory", 400),
        ("OperationNotAllowedOnRootDirectory", 400),
        ("EntityAlreadyExists", 409),
        ("ConcurrentRequest", 409),
        ("ContentMD5Mismatch", 400),
        ("ContentLengthRequired", 411),
        ("InvalidDurabilityLevel", 400),
        ("InvalidMaxContentLength", 400),
        ("MaxContentLengthExceeded", 413),
        ("NotEnoughSpace", 507),
        ("NotAcceptable", 406),
        ("RequestedRangeNotSatisfiable", 416),
        ("NotImplemented", 501),
        ("UploadTimeout", 408),
        ("UploadAbandoned", 499),
        ("ServiceUnavailable", 503),
        ("ThrottledError", 503),
        ("AuthorizationFailed", 403),
        ("AuthorizationRequired", 401),
        ("AuthorizationSchemeNotAllowed", 403),
        ("InvalidSignature", 403),
        ("InvalidKeyId", 403),
        ("KeyDoesNotExist", 403),
        ("AccountDoesNotExist", 403),
        ("UserDoesNotExist", 403),
        ("AccountBlocked", 403),
        ("InvalidAlgorithm", 401),
        ("InvalidQueryStringAuthentication", 403),
        ("InvalidAuthenticationToken", 403),
        ("InvalidHttpAuthenticationToken", 403),
        ("SecureTransportRequired", 403),
        ("InvalidRole", 409),
        ("InvalidRoleTag", 409),
        ("NoMatchingRoleTag", 403),
        ("MissingPermission", 403),
        ("QueryParameterForbidden", 403),
        ("InvalidUpdate", 400),
        ("InvalidParameter", 400),
        ("InvalidResource", 400),
        ("InvalidLink", 400),
        ("LinkNotObject", 400),
        ("LocationRequired", 400),
        ("SourceObjectNotFound", 404),
        ("InvalidJob", 400),
        ("InvalidJobState", 409),
        ("JobNotFound", 404),
        ("MultipartUploadInvalidArgument", 409),
        ("InvalidMultipartUploadState", 409),
        ("InternalError", 500),
        ("PreconditionFailed", 412),
    ];

    #[test]
    fn every_reference_code_has_its_status() {
        for (name, status) in REFERENCE {
            let code = ErrorCode::from_wire(name)
                .unwrap_or_else(|| panic!("reference code {name} is missing"));
            assert_eq!(code.http_status(), *status, "status of {name}");
            assert_eq!(code.as_str(), *name);
        }
    }

    #[test]
    fn wire_names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(
                seen.insert(code.as_str()),
                "duplicate wire name {}",
                code.as_str()
            );
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(*code));
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), *code);
        }
    }

    #[test]
    fn body_renders_code_and_message_only() {
        let body = ErrorBody::new(ErrorCode::ResourceNotFound, "/jill/stor/nope was not found");
        assert_eq!(
            String::from_utf8(body.to_json()).unwrap(),
            r#"{"code":"ResourceNotFound","message":"/jill/stor/nope was not found"}"#
        );
    }
}
