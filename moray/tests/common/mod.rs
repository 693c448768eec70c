//! Shared set-up: a real Postgres per test and a Moray server in-process over HTTP, with the
//! small calls most tests repeat.
#![allow(dead_code)]

use moray::server::{Config, RunningServer};
use moray::types::{BatchOp, BucketConfig, DelOptions, FindOptions, PutOptions, PutResult};
use moray::{Error, MorayClient};
use serde_json::Value;
use testkit::TestPostgres;

pub struct Env {
    pub client: MorayClient,
    pub server: RunningServer,
    pub pg: TestPostgres,
}

impl Env {
    pub async fn start() -> Env {
        manta_util::logging::init(manta_util::logging::LogFormat::Plain);
        let pg = TestPostgres::start().await.expect("start postgres");
        // The tests read and set up Postgres state through /sql.
        let server = moray::server::spawn(Config {
            enable_sql: true,
            ..Config::for_postgres(pg.url())
        })
        .await
        .expect("start moray");
        let client = server.client().expect("client");
        Env { client, server, pg }
    }

    /// A fresh server with one empty bucket `name` made with `config`.
    pub async fn with_bucket(name: &str, config: BucketConfig) -> Env {
        let env = Env::start().await;
        env.client
            .create_bucket(name, config)
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
        env
    }

    /// A fresh server with the object store's buckets and triggers set up.
    pub async fn with_manta_buckets() -> Env {
        let env = Env::start().await;
        moray::schema::setup_manta_buckets(&env.client)
            .await
            .expect("set up the manta buckets");
        env
    }

    /// A plain SQL connection to the same database, to check what Moray stored.
    pub async fn sql(&self) -> tokio_postgres::Client {
        self.pg.client().await.expect("connect")
    }
}

/// An unconditional put that must succeed: the set-up step of most tests.
pub async fn put(c: &MorayClient, bucket: &str, key: &str, value: Value) -> PutResult {
    c.put_object(bucket, key, value, PutOptions::any())
        .await
        .unwrap_or_else(|e| panic!("put {bucket}::{key}: {e:?}"))
}

/// The names of the server's buckets, in the order it lists them.
pub async fn bucket_names(c: &MorayClient) -> Vec<String> {
    c.list_buckets()
        .await
        .expect("list buckets")
        .into_iter()
        .map(|b| b.name)
        .collect()
}

/// The error of a `findObjects` that must fail (with default options).
pub async fn find_err(c: &MorayClient, bucket: &str, filter: &str) -> Error {
    match c.find_objects(bucket, filter, FindOptions::default()).await {
        Ok(found) => panic!("{filter} found {} records instead of failing", found.len()),
        Err(e) => e,
    }
}

/// A batch operation that puts `value` at `bucket`::`key` under `options`.
pub fn put_op(bucket: &str, key: &str, value: Value, options: PutOptions) -> BatchOp {
    BatchOp::Put {
        bucket: bucket.into(),
        key: key.into(),
        value,
        options,
    }
}

/// A batch operation that deletes `bucket`::`key` whatever its etag.
pub fn delete_op(bucket: &str, key: &str) -> BatchOp {
    BatchOp::Delete {
        bucket: bucket.into(),
        key: key.into(),
        options: DelOptions::default(),
    }
}
