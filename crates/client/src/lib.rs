//! A typed async client for the Manta HTTP API, and an [`object_store::ObjectStore`] over it.
//!
//! The `manta` command line tools (`cli/`), the end-to-end tests and the benchmarks all talk to
//! the store through it; Rust data tools can use [`MantaStore`]. It signs every request with
//! an SSH key (a file under `~/.ssh` or a key held by `ssh-agent`, as
//! [`manta_auth::KeySigner::find`] picks it; as a sub-user with `MANTA_SUBUSER`), expands `~~`
//! to the user's root, streams bodies both ways, retries requests that are safe to retry, and
//! turns error responses into [`Error::Api`] carrying the server's error code.
//!
//! # Layout
//! - [`ClientConfig`]: URL, user, sub-user, key, TLS checking, from `MANTA_*` variables or set
//!   directly.
//! - [`MantaClient`]: the calls (`put_*`, `get*`, `info`, `ls`, `mkdir(p)`, `rm`, `ln`,
//!   `chattr`, `sign_url`, `request`).
//! - `transfer`: files and readers streamed up from a blocking thread
//!   ([`MantaClient::put_file`], [`MantaClient::put_reader`]); downloads streamed into any
//!   writer on a blocking thread, MD5-checked and resumed after a broken connection
//!   ([`MantaClient::get_to_writer`]).
//! - `walk`: [`MantaClient::walk`] (a directory tree as a stream, several listings in flight)
//!   and [`MantaClient::rm_recursive`].
//! - `store`: [`MantaStore`], the `object_store` implementation.
//! - [`Error`]: what can go wrong, with [`Error::is_retryable`].
//!
//! # Guarantees
//! - Idempotent requests (`GET`, `HEAD`, `DELETE`, `PUT` of directories, links, metadata and
//!   of bodies that can be produced again: bytes, pieces in memory, local files) are retried
//!   after connection failures and 500/502/503/504 answers, 3 times by default, with
//!   exponential backoff and jitter. One-shot streams (stdin) are never retried.
//! - Bodies are never held whole in memory: a transfer keeps a few MiB in flight, and file
//!   and writer I/O never runs on the async runtime's threads.
//! - A download either delivers exactly the object's bytes (length and `Content-MD5` checked)
//!   or fails; a resumed download asks for the same etag, so a replaced object is never spliced.
//! - Every request carries a fresh `Date` and its signature; nothing is signed in advance.
//!
//! # Example
//! ```no_run
//! # async fn f() -> Result<(), manta_client::Error> {
//! let client = manta_client::MantaClient::new(manta_client::ClientConfig::from_env()?).await?;
//! client.mkdirp("~~/stor/reports").await?;
//! client.put_bytes("~~/stor/reports/q1.csv", "a,b\n1,2\n", Default::default()).await?;
//! for e in client.ls_all("~~/stor/reports").await? {
//!     println!("{} {}", e.name, e.size.unwrap_or(0));
//! }
//! let file = std::fs::File::create("/tmp/q1.csv")?;
//! let (_file, got) = client
//!     .get_to_writer("~~/stor/reports/q1.csv", Default::default(), file)
//!     .await?;
//! assert_eq!(got.size, 8);
//! # Ok(()) }
//! ```

mod client;
mod error;
mod jobs;
mod store;
mod transfer;
mod walk;

pub use client::{
    ClientConfig, DirEntry, EntryType, GetOptions, ListOptions, MantaClient, ObjectInfo, Progress,
    PutOptions, PutResult,
};
pub use error::Error;
pub use store::MantaStore;
pub use transfer::{Download, DownloadOptions};
pub use walk::{WalkEntry, WalkOptions};
