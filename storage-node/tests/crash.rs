//! The `storage-node` binary as a real process: killed with SIGKILL mid-upload it shows no
//! partial object and cleans its temp files at the next start; acknowledged objects survive;
//! SIGTERM stops it gracefully.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use storage_api::{PutRequest, StorageClient};
use testkit::LoggedChild;

struct Proc {
    child: LoggedChild,
    client: StorageClient,
    addr: std::net::SocketAddr,
}

async fn spawn(dir: &Path, log: &str) -> Proc {
    let port = testkit::process::free_port().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_storage-node"));
    cmd.args(["--dataset", &format!("dir:{}", dir.join("data").display())])
        .args(["--storage-id", "9.stor.test", "--scrub-rate", "0"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // The node alone, as the front door's peer would not see it: no region identity.
        .arg("--insecure-plain-http")
        .env("RUST_LOG", "info");
    let mut child = LoggedChild::spawn("storage-node", cmd, &dir.join(log)).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    testkit::region::wait_ping(&url, &mut child, "storage-node", Duration::from_secs(5))
        .await
        .unwrap();
    let client = StorageClient::new(url).unwrap();
    Proc {
        child,
        client,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    }
}

#[tokio::test]
async fn sigkill_mid_upload_leaves_no_partial_object() {
    let dir = testkit::TestDir::new("stor-crash").unwrap();
    let mut p = spawn(dir.path(), "first.log").await;

    // An acknowledged object from before the crash.
    let done = key();
    let body = data(3 * 1024 * 1024, 11);
    p.client
        .put(&done, PutRequest::bytes(body.clone()))
        .await
        .unwrap();

    // An upload in flight: 32 MiB declared, 4 MiB sent.
    let k = key();
    let s = start_put(p.addr, &k, 32 << 20, "", &data(4 << 20, 12)).await;
    let tmp = dir.path().join("data/tmp");
    assert!(
        eventually(Duration::from_secs(10), || list(&tmp)
            .iter()
            .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0)))
        .await,
        "the upload never reached its temp file"
    );
    p.child.kill();
    drop(s);

    // Killed: the partial upload is only a temp file, never an object.
    assert!(
        !list(&tmp).is_empty(),
        "expected the killed upload's temp file"
    );
    let obj = dir.path().join("data/objects").join(k.rel_path());
    assert!(!obj.exists());

    // Restarted on the same dataset: temp files are gone, the partial object is not served,
    // the acknowledged one is.
    let p2 = spawn(dir.path(), "second.log").await;
    assert!(
        list(&tmp).is_empty(),
        "temp files left after restart: {:?}",
        list(&tmp)
    );
    assert!(is_missing(&p2.client, &k).await);
    assert_eq!(read_all(&p2.client, &done).await, body);
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    assert!(log.contains("removed temp files"), "{log}");
}

#[tokio::test]
async fn sigterm_stops_gracefully() {
    let dir = testkit::TestDir::new("stor-term").unwrap();
    let mut p = spawn(dir.path(), "node.log").await;
    p.child.signal(rustix::process::Signal::TERM).unwrap();
    let status = p
        .child
        .wait_timeout(Duration::from_secs(15))
        .expect("exited after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("storage node stopped"), "{log}");
}
