//! Moray: the key-value metadata service of the object store, over PostgreSQL.
//!
//! Every shard of metadata is one Postgres cluster (kept highly available by Manatee) with one
//! or more stateless Moray servers in front. Moray stores JSON records in *buckets* (one table
//! each, with a typed column per indexed field), answers LDAP-style filter queries over the
//! indexed fields, makes writes conditional on etags, runs several writes in one transaction
//! (`batch`), and runs the object store's triggers (directory counts, delete log) inside the
//! same transaction as the write that fires them.
//!
//! Callers: the front door (namespace metadata, through [`ShardedClient`]), the storage nodes
//! (capacity heartbeats into `manta_storage`, garbage collection from `manta_delete_log` on
//! every shard), the jobs services, and operators (`moray-cli`).
//!
//! # Layout
//! - [`client`]: [`MorayClient`], the typed async client of one shard (timeouts, retries of
//!   idempotent calls, request-id forwarding).
//! - [`sharded`]: [`ShardedClient`], routing each key to its shard through the [`ring`].
//! - [`ring`]: the vnode -> shard map stored in etcd; the hash of a key's parent directory picks
//!   its vnode.
//! - [`types`]: wire types (bucket configs, records, options, request bodies).
//! - [`error`]: [`Error`], shared by client and server, with its wire form and HTTP statuses.
//! - [`filter`]: the filter language: parser, renderer, escaping.
//! - [`schema`]: the object store's buckets and [`schema::setup_manta_buckets`].
//! - [`server`]: the HTTP server over Postgres (`run(config, shutdown)`), its connection pool,
//!   Manatee following, SQL compilation and triggers.
//!
//! # Guarantees
//! - A put or delete and the triggers it fires commit together or not at all; so do all the
//!   operations of a `batch`.
//! - A conditional put (`etag: null` or a value) is atomic: of N racing creates of one key
//!   exactly one succeeds, the others get `EtagConflictError`.
//! - A filter term on a field that is not indexed is refused (`NotIndexedError`); results are
//!   never filtered after `LIMIT`.
//! - In a region (`Config::tls`), a server admits only callers holding a region certificate
//!   (mutual TLS), and clients reach it with their own ([`Tls`]); `/sql` is off unless enabled,
//!   and then for operators only.
//! - Every Postgres call is bounded by a timeout; without a writable primary the server answers
//!   the retryable `NoDatabasePeersError` instead of hanging.
//! - Schema changes in normal operation never queue an `ACCESS EXCLUSIVE` lock behind running
//!   queries: columns are added under a short `lock_timeout` (retried), indexes are built
//!   `CONCURRENTLY`.
//!
//! # Example
//! ```no_run
//! # async fn f() -> moray::Result<()> {
//! use moray::{MorayClient, types::*};
//! let client = MorayClient::new("http://127.0.0.1:2020")?;
//! client
//!     .create_bucket("users", BucketConfig::new(1).with_index("email", IndexSpec::unique(IndexType::String)))
//!     .await?;
//! let put = client
//!     .put_object("users", "u1", serde_json::json!({"email": "a@example.com"}), PutOptions::must_not_exist())
//!     .await?;
//! let found = client.find_objects("users", "(email=a@example.com)", FindOptions::default()).await?;
//! assert_eq!(found[0].etag, put.etag);
//! # Ok(()) }
//! ```

pub mod client;
pub mod error;
pub mod etcd;
pub mod filter;
pub mod reshard;
pub mod ring;
pub mod schema;
pub mod server;
pub mod sharded;
pub mod types;

pub use client::{MorayClient, RecordStream, Tls};
pub use error::{Error, Result};
pub use etcd::parse_endpoints;
pub use sharded::ShardedClient;
pub use types::{
    BatchOp, BatchResult, Bucket, BucketConfig, DelOptions, EtagCondition, FindOptions, IndexSpec,
    IndexType, ObjectRecord, PutOptions, PutResult, Sort, SortOrder,
};
