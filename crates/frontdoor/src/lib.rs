//! The front door: the public face of the object store.
//!
//! It serves the Manta HTTP API, the jobs API (`/:login/jobs`, through `manta-jobs-api`) and,
//! on a port of its own, the S3 API: it authenticates
//! callers (HTTP Signatures with SSH keys, presigned URLs, tokens), checks they may act on the
//! path, reads and writes metadata through Moray (sharded by parent directory), places new
//! objects on storage nodes from their capacity heartbeats, streams bodies to every copy at
//! once, and serves reads from any copy. It keeps no state of its own: run as many as needed.
//!
//! # Layout
//! - [`config`]: [`Config`], built once.
//! - [`state`]: [`Frontdoor`] (the shared clients), [`start`] and [`run`].
//! - [`api`]: routing, authorisation and the handlers (objects, directories, links, CORS,
//!   conditional requests, headers, multipart uploads under `/:login/uploads`, and the
//!   read-only view of S3 buckets under `/:login/buckets`); jobs routes go to
//!   `manta_jobs_api::api::handle`.
//! - [`s3`]: the S3 API (its own listener, SigV4/SigV2, buckets, objects, multipart), over the
//!   same data path and metadata; its metadata access also feeds `/:login/buckets`.
//! - [`error`]: errors of the front door and how they map to the Manta error codes.
//! - [`data`]: the data path (fan-out writes, failover reads, checksums); an upload comes
//!   back as a [`data::Uncommitted`] whose `commit` writes the record or discards the bytes,
//!   and [`data::Place`] / [`data::Uncommitted::record`] build every new entry's record.
//! - [`picker`]: placement from heartbeats and the operator's node states.
//! - [`repair`]: the repairer, which restores lost, corrupt and evacuated copies (one front
//!   door at a time acts, by a lease in Moray); the lease holder also sweeps old multipart
//!   uploads and writes the reports that are due.
//! - [`reports`]: access logs (every front door collects its requests' lines) and usage
//!   reports under `/:login/reports`.
//! - Storage nodes are reached through the `storage-api` crate's client; [`Frontdoor`]
//!   holds its connector (settings and connection pool).
//!
//! Accounts come from `manta-accounts` (the metadata layer), not from here.
//!
//! # Guarantees
//! - A 2xx to an object `PUT` means every requested copy is fsynced on its node and the record
//!   is committed in Moray; no record ever points at bytes that were not stored.
//! - Bytes whose record is not written are discarded on every node: every record of new bytes
//!   (Manta `PUT`, S3 put, copy, part, completion) is written through
//!   [`data::Uncommitted::commit`], which discards them when Moray refuses the write, and an
//!   upload dropped uncommitted is discarded in the background. A write whose outcome is
//!   unknown (Moray timed out or failed; the request dropped mid-write) keeps its bytes, since
//!   its record may have landed: such bytes are logged and counted.
//! - Bytes are streamed, never held whole in memory; the client is read only as fast as the
//!   slowest copy is written.
//! - A read never completes from a copy whose MD5 differs from the record.
//! - A conditional write (`If-Match`/`If-None-Match`) is atomic with the state it checked.
//! - One account can never read, list or write another's private tree.
//!
//! # Example
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use frontdoor::{Config, MoraySource};
//! let cfg = Config::new("127.0.0.1:8080".parse()?, MoraySource::Single(vec!["http://127.0.0.1:2020".into()]));
//! frontdoor::run(cfg, manta_util::shutdown_on_signals()).await
//! # }
//! ```

pub mod api;
pub mod config;
pub mod data;
pub mod error;
pub mod limits;
pub mod picker;
pub mod repair;
pub mod reports;
pub mod s3;
pub mod state;

pub use config::{Config, MoraySource, S3Config, TlsFiles};
pub use state::{Frontdoor, Running, run, start};
