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
pub mod s3;
pub mod time;

pub use error::{ErrorBody, ErrorCode, HasErrorCode, JobErrorCode, MantaError};
pub use ids::{Etag, InvalidId, ObjectId};
pub use path::{Area, MantaPath, PathError, expand_tilde};
pub use record::{DirectoryInfo, EntryKind, MetadataRecord, ObjectInfo, RecordError, SharkRef};

/// Most entries in one directory unless the region says otherwise (as the original:
/// 1,000,000; one more answers `DirectoryLimitExceeded`, 409).
pub const MAX_DIRENTS: u64 = 1_000_000;
