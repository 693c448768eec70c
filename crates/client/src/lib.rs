//! A typed async client for the Manta HTTP API.
//!
//! The command line tools, the end-to-end tests and the benchmarks all talk to the store
//! through it. It signs every request with an SSH key (a file under `~/.ssh` or a key held by
//! `ssh-agent`, as [`manta_auth::KeySigner::find`] picks it), expands `~~` to the user's root,
//! streams bodies, retries requests that are safe to retry, and turns error responses into
//! [`Error::Api`] carrying the server's error code.
//!
//! # Layout
//! - [`ClientConfig`]: URL, user and key, from `MANTA_*` environment variables or set directly.
//! - [`MantaClient`]: the calls (`put`, `get`, `info`, `ls`, `mkdir(p)`, `rm`, `ln`, `chattr`,
//!   `sign_url`, ...).
//! - [`Error`]: what can go wrong, with [`Error::is_retryable`].
//!
//! # Guarantees
//! - Idempotent requests (`GET`, `HEAD`, `DELETE`, directory `PUT`, and `PUT`s of in-memory
//!   bodies) are retried on connection failures and 503 answers, a few times with backoff.
//!   Streamed bodies are never retried: they cannot be replayed.
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
//! # Ok(()) }
//! ```

mod client;
mod error;

pub use client::{
    ClientConfig, DirEntry, EntryType, GetOptions, ListOptions, MantaClient, ObjectInfo,
    PutOptions, PutResult,
};
pub use error::Error;
