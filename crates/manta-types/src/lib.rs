//! Wire and domain types shared by every part of the object store.
//!
//! This crate sits at the bottom of the dependency graph: the front door, Moray, the storage
//! nodes, the jobs services, the client and the command line tools all speak in these types,
//! and it does no I/O of its own.
//!
//! # Layout
//! - [`error`]: [`ErrorCode`], the one table of wire error names and HTTP statuses, and the
//!   `{"code","message"}` body every service renders.
//! - [`path`]: [`MantaPath`], a validated `/:login/<area>/...` path, plus `~~` expansion.
//! - [`ids`]: [`ObjectId`] and [`Etag`].
//! - [`record`]: [`MetadataRecord`], the versioned metadata record of one entry.
//! - [`time`]: millisecond timestamps and their ISO 8601 rendering.
//! - [`s3`]: where objects written through the S3 API are kept, for readers outside it.
//!
//! # Guarantees
//! - A [`MantaPath`] value is always valid; parsing is the only way to get one.
//! - [`ErrorCode::as_str`] never changes for an existing code.
//! - Records carry a version; readers refuse versions newer than they understand.
//!
//! # Example
//! ```
//! use manta_types::{ErrorCode, HasErrorCode, MantaPath};
//! let p = MantaPath::parse("/jill/stor/reports/q1.csv").unwrap();
//! assert_eq!(p.parent().unwrap().to_string(), "/jill/stor/reports");
//! let err = MantaPath::parse("/jill/stor/../bob").unwrap_err();
//! assert_eq!(err.code(), ErrorCode::InvalidResource);
//! assert_eq!(err.code().http_status(), 400);
//! ```

pub mod error;
pub mod ids;
pub mod path;
pub mod record;
pub mod repair;
pub mod s3;
pub mod time;
pub mod uploads;

pub use error::{ErrorBody, ErrorCode, HasErrorCode, JobErrorCode, MantaError};
pub use ids::{Etag, InvalidId, ObjectId};
pub use path::{Area, MantaPath, PathError, expand_tilde};
pub use record::{DirectoryInfo, EntryKind, MetadataRecord, ObjectInfo, RecordError, SharkRef};

/// Most entries in one directory unless the region says otherwise (as the original:
/// 1,000,000; one more answers `DirectoryLimitExceeded`, 409).
pub const MAX_DIRENTS: u64 = 1_000_000;

/// Most entries one page of a listing (a directory's, the jobs') may ask for.
pub const MAX_LIST_LIMIT: u64 = 1024;

/// A listing's `limit` query parameter: `default` when absent, else 1 to [`MAX_LIST_LIMIT`].
///
/// # Errors
/// `InvalidArgument`, in the original's words, for anything else.
pub fn list_limit(param: Option<&str>, default: u64) -> Result<u64, MantaError> {
    // (`limit=` with no value is refused too: it is not a number.)
    match param {
        None => Ok(default),
        Some(l) => l
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| {
                MantaError::new(
                    ErrorCode::InvalidArgument,
                    format!("limit={l} is invalid: must be between [1, {MAX_LIST_LIMIT}]"),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_limits_are_one_to_the_most_a_page_holds() {
        assert_eq!(list_limit(None, 256).unwrap(), 256);
        assert_eq!(list_limit(Some("1"), 256).unwrap(), 1);
        assert_eq!(list_limit(Some("1024"), 256).unwrap(), 1024);
        for bad in ["0", "1025", "-1", "", "ten"] {
            let e = list_limit(Some(bad), 256).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad}");
            assert!(
                e.message.contains(&format!("limit={bad} is invalid")),
                "{e:?}"
            );
        }
    }
}
