//! Test harness: starts the real components the object store runs on (PostgreSQL, etcd) and,
//! as they land, the store's own services, each in its own temp dir on random loopback ports.
//!
//! Nothing here is a mock. Tests in every crate, the end-to-end suite in `tests/` and the
//! benchmarks in `bench/` use it; it is never a dependency of a shipped binary.
//!
//! # Layout
//! - [`process`]: child processes that die with the test and print their log tail when the test
//!   fails; temp dirs; free ports.
//! - [`postgres`]: [`TestPostgres`], a real PostgreSQL (run as the `postgres` user under root).
//! - [`etcd`]: [`TestEtcd`], a real one-member etcd.
//! - [`region`]: [`TestRegion`], a whole region (Postgres, Moray, storage nodes, front door)
//!   with a test account, and clients for it.
//! - [`s3`]: SigV4 presigned URLs made by hand.
//! - [`netns`]: hosts as network namespaces on a bridge, for tests across hosts.
//! - [`tools`]: boto3, the npm `manta` client and packaged tools the tests drive.
//!
//! # Guarantees
//! - Servers of different tests (and of test binaries running at once) never share a port, a
//!   data dir or a socket.
//! - A server is killed when its handle drops, and also when the test process dies.
//! - When a test panics, the last lines of each of its servers' logs are printed.
//!
//! # Example
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let pg = testkit::TestPostgres::start().await?;
//! let client = pg.client().await?;
//! let row = client.query_one("SELECT 1 + 1", &[]).await?;
//! assert_eq!(row.get::<_, i32>(0), 2);
//! # Ok(()) }
//! ```

pub mod etcd;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod region;
pub mod s3;
pub mod tools;

pub use etcd::TestEtcd;
pub use postgres::{PgOptions, TestPostgres};
pub use process::{LoggedChild, TestDir};
pub use region::{RegionOptions, TestAccount, TestRegion};

/// The Prometheus text a service serves on `{base}/metrics` (panics when it does not answer:
/// for tests).
pub async fn metrics(base: &str) -> String {
    let resp = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("GET {base}/metrics: {e}"));
    resp.text()
        .await
        .unwrap_or_else(|e| panic!("read {base}/metrics: {e}"))
}

/// `len` deterministic pseudo-random bytes from a xorshift generator started at `state` (which
/// must not be 0): test data that is the same on every run and does not compress.
pub fn xorshift_bytes(state: u64, len: usize) -> Vec<u8> {
    let mut x = state;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
