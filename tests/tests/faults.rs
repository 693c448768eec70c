//! The short fault run: a one-machine region (`manta-adm up`, every service supervised) under
//! three Manta object clients, an S3 client (put, get, delete, one-part multipart) and a jobs
//! client while, every few seconds, a fault comes: first each kind in turn (a kill of each
//! kind of service and Postgres role, a flipped byte, a full disk, the synchronous standby held
//! down while the primary is killed, partitions of a Moray, a storage node and the primary
//! peer, moved clocks), then seeded random ones. When the faults stop and the
//! region is healthy again, every key is read and every directory listed, and the whole
//! history goes through the checker: no acknowledged write lost, no delete undone, no bytes that
//! were never written, listings that agree, job totals that match their inputs.
//!
//! The long run is the soak: `cargo run -p manta-e2e --bin soak -- --minutes 60`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use manta_e2e::faults::FaultKind;
use manta_e2e::run::{AdmRegion, RunConfig, run};
use testkit::region::binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_seconds_of_faults_under_load_lose_nothing() {
    let tmp = tempfile::Builder::new()
        .prefix("manta-test-faults-")
        .tempdir()
        .unwrap();
    let region = AdmRegion::up(&binary("manta-adm").unwrap(), tmp.path()).unwrap();
    let cfg = RunConfig {
        seed: 0x5eed_0016,
        duration: Duration::from_secs(100),
        every: Duration::from_secs(4),
        in_turn: true,
        clients: 3,
        s3_clients: 1,
        jobs: true,
    };
    let report = run(&region, &cfg).await.unwrap();
    eprintln!("{}", report.markdown());
    assert!(
        report.ops > 200,
        "the workload barely ran: {} operations",
        report.ops
    );
    let kinds: BTreeSet<FaultKind> = report.faults.iter().map(|(_, f)| f.kind).collect();
    assert_eq!(
        kinds.len(),
        6,
        "not every kind of fault came: {:#?}",
        report.faults
    );
    assert!(
        report.jobs > report.job_errors,
        "no job completed: {} of {} failed",
        report.job_errors,
        report.jobs
    );
    if let Some(v) = report.violations.first() {
        panic!("{} violations; the first:\n{v}", report.violations.len());
    }
}
