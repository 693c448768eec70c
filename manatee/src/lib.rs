//! Manatee: each shard's PostgreSQL, replicated over three or more peers and failed over
//! automatically without losing an acknowledged write.
//!
//! One **sitter** (`manatee-sitter`, [`sitter::run`]) runs beside each Postgres peer. It runs
//! Postgres as its child (under the `postgres` user, killed if the sitter dies, so a dead sitter
//! never leaves an orphaned primary), keeps a registration in etcd under a short lease only while
//! that Postgres answers, and acts on the shard's **cluster state**: one etcd key written only by
//! compare-and-swap. Moray watches the same key and sends every query to `primary.pgUrl`.
//! Operators use `manatee-adm` ([`adm`]).
//!
//! # Layout
//! - [`state`]: the cluster state JSON, peer ids, registrations, and the pure transition rules
//!   (takeover by the sync, the primary's upkeep of sync and asyncs).
//! - [`coord`]: the shard's etcd keys (state CAS, history, registrations, lease, watch).
//! - [`pg`]: Postgres files, configuration per role, the postmaster child, probes, rebuilds.
//! - [`sitter`]: the per-peer loop that ties them together, and its HTTP API.
//! - [`adm`]: what `manatee-adm` does (show, pg-status, history, freeze, promote, ...).
//! - [`lsn`]: WAL positions.
//!
//! # Guarantees
//! - **No acknowledged write is lost** while one of primary and sync survives: the primary
//!   commits synchronously to the sync (`synchronous_commit = on`), and only the sync may take
//!   over, only once its WAL has reached the generation's `initWal`.
//! - **At most one primary acknowledges writes**: the takeover is a compare-and-swap on the
//!   state's revision; the old primary's sync stops acknowledging the moment it is promoted; a
//!   primary that loses etcd for a lease TTL kills its own Postgres; a deposed peer never starts
//!   as a primary again.
//! - **A new primary is read-only** (`default_transaction_read_only`, SQLSTATE 25006 for writers)
//!   until its sync streams from it.
//! - **Deposed and returning peers rejoin by themselves**: data that last ran as a primary is
//!   rewound with `pg_rewind` (or rebuilt with `pg_basebackup` when that fails) before it may
//!   start as a standby, and the primary appends rebuilt peers to the async chain.
//! - `freeze` stops every automatic transition; `unfreeze` allows them again.
//!
//! # The sitter's HTTP API (`backupUrl`)
//! `/ping`, `/metrics`, `/status` (role, mode, writable, postmaster pid, WAL positions, who
//! streams from it), `/ready` (200 while the peer serves in its role, else 503), and
//! `POST /rebuild` (discard a standby's database and take a new base backup).
//!
//! # Example
//! ```no_run
//! # async fn f() -> Result<(), manatee::Error> {
//! let coord = manatee::coord::Coord::new(
//!     &["http://127.0.0.1:2379".to_owned()], "1", std::time::Duration::from_secs(1))?;
//! if let Some(v) = coord.state().await? {
//!     println!("generation {} primary {}", v.state.generation, v.state.primary.pg_url);
//! }
//! # Ok(()) }
//! ```

pub mod adm;
pub mod coord;
pub mod lsn;
pub mod pg;
pub mod sitter;
pub mod state;

pub use lsn::Lsn;
pub use state::{ClusterState, Peer, Role};

/// Errors of the sitter and the admin tool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// etcd failed or was unreachable.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A Postgres query failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A Postgres tool (initdb, pg_basebackup, pg_rewind, ...) failed.
    #[error("{0}")]
    Command(String),
    /// The stored state is not valid.
    #[error("bad cluster state: {0}")]
    BadState(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The request is not valid (bad argument, or not allowed in the current state).
    #[error("{0}")]
    Invalid(String),
    /// Another writer changed the state first.
    #[error("the cluster state changed meanwhile; try again")]
    Conflict,
}

impl Error {
    pub(crate) fn io(what: &str, source: std::io::Error) -> Error {
        Error::Io {
            what: what.to_owned(),
            source,
        }
    }
}

impl manta_types::HasErrorCode for Error {
    fn code(&self) -> manta_types::ErrorCode {
        use manta_types::ErrorCode;
        match self {
            Error::Etcd(_) | Error::Timeout(_) | Error::Conflict => ErrorCode::ServiceUnavailable,
            Error::Invalid(_) => ErrorCode::InvalidArgument,
            Error::Postgres(_) | Error::Io { .. } | Error::Command(_) | Error::BadState(_) => {
                ErrorCode::InternalError
            }
        }
    }
}
