//! Shared set-up: a real Postgres per test and a Moray server in-process over HTTP.
#![allow(dead_code)]

use moray::MorayClient;
use moray::server::{Config, RunningServer};
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
        let server = moray::server::spawn(Config::for_postgres(pg.url()))
            .await
            .expect("start moray");
        let client = server.client().expect("client");
        Env { client, server, pg }
    }

    /// A plain SQL connection to the same database, to check what Moray stored.
    pub async fn sql(&self) -> tokio_postgres::Client {
        self.pg.client().await.expect("connect")
    }
}
