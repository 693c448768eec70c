//! The `moray` and `moray-cli` binaries as real processes against a fresh Postgres.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::process::free_port;
use testkit::{LoggedChild, TestDir, TestEtcd, TestPostgres};

struct Moray {
    child: LoggedChild,
    url: String,
    _dir: TestDir,
}

async fn start_moray(args: &[String]) -> Moray {
    let dir = TestDir::new("moray").unwrap();
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moray"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args);
        let mut child = LoggedChild::spawn("moray", cmd, &dir.path().join("moray.log")).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.exited().is_some() {
                last = child.log_tail(20);
                break;
            }
            if let Ok(r) = reqwest::get(format!("{url}/ping")).await
                && r.status().is_success()
            {
                return Moray {
                    child,
                    url,
                    _dir: dir,
                };
            }
            assert!(
                Instant::now() < deadline,
                "moray did not start:\n{}",
                child.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !last.contains("in use") {
            break;
        }
    }
    panic!("moray did not start:\n{last}");
}

fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moray-cli"))
        .arg("--url")
        .arg(url)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_json(url: &str, args: &[&str]) -> Value {
    let (ok, out, err) = cli(url, args);
    assert!(ok, "moray-cli {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("moray-cli {args:?}: {e}: {out}"))
}

#[tokio::test]
async fn moray_process_answers_every_rpc_and_stops_on_sigterm() {
    let pg = TestPostgres::start().await.unwrap();
    let mut m = start_moray(&["--pg-url".into(), pg.url()]).await;
    let url = m.url.clone();
    let u = url.as_str();
    // The CLI runs blocking processes: keep them off the runtime's workers.
    let run = |args: Vec<&'static str>| {
        let u = url.clone();
        tokio::task::spawn_blocking(move || cli_json(&u, &args))
    };
    assert_eq!(run(vec!["ping"]).await.unwrap(), json!({"ok": true}));
    assert_eq!(run(vec!["version"]).await.unwrap()["version"], 2);
    let b = run(vec![
        "putbucket",
        "people",
        "-i",
        "name:string",
        "-i",
        "age:number",
        "-i",
        "email:string:unique",
    ])
    .await
    .unwrap();
    assert_eq!(
        b["index"]["email"],
        json!({"type": "string", "unique": true})
    );
    assert_eq!(
        run(vec!["getbucket", "people"]).await.unwrap()["name"],
        "people"
    );
    assert_eq!(
        run(vec!["listbuckets"])
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let put = run(vec![
        "putobject",
        "people",
        "p1",
        r#"{"name": "ann", "age": 31, "email": "a@x"}"#,
    ])
    .await
    .unwrap();
    let etag = put["etag"].as_str().unwrap().to_owned();
    run(vec![
        "putobject",
        "people",
        "p2",
        r#"{"name": "bob", "age": 45}"#,
    ])
    .await
    .unwrap();
    let got = run(vec!["getobject", "people", "p1"]).await.unwrap();
    assert_eq!(got["value"]["name"], "ann");
    assert_eq!(got["_etag"], etag.as_str());
    let (ok, out, _) = cli(
        u,
        &["findobjects", "people", "(age>=40)", "--sort", "age:desc"],
    );
    assert!(ok);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["key"], "p2");
    assert_eq!(lines[0]["_count"], 1);
    // Errors: non-zero exit and the error name on stderr.
    let (ok, _, err) = cli(u, &["putobject", "people", "p1", "{}", "--create"]);
    assert!(!ok);
    assert!(err.contains("EtagConflict"), "{err}");
    let (ok, _, err) = cli(u, &["findobjects", "people", "(nope=1)"]);
    assert!(!ok);
    assert!(err.contains("NotIndexed"), "{err}");
    let (ok, _, err) = cli(u, &["getobject", "people", "zzz"]);
    assert!(!ok && err.contains("ObjectNotFound"), "{err}");
    let (ok, out, _) = cli(
        u,
        &[
            "sql",
            "SELECT count(*) AS n FROM people WHERE age > $1",
            "40",
        ],
    );
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap(),
        json!({"n": 1})
    );
    cli_json(u, &["delobject", "people", "p2"]);
    let (ok, _, _) = cli(u, &["getobject", "people", "p2"]);
    assert!(!ok);
    cli_json(u, &["setup-manta"]);
    cli_json(u, &["delbucket", "people"]);

    // Over plain HTTP too, with the request id echoed.
    let resp = reqwest::Client::new()
        .post(format!("{u}/getBucket"))
        .header("x-request-id", "req-42")
        .body(r#"{"name": "manta"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-42");

    // SIGTERM: a clean, prompt exit.
    m.child.signal(rustix::process::Signal::TERM).unwrap();
    let st = tokio::task::spawn_blocking(move || m.child.wait_timeout(Duration::from_secs(15)))
        .await
        .unwrap()
        .expect("moray exits on SIGTERM");
    assert!(st.success(), "{st:?}");
}

#[tokio::test]
async fn moray_process_follows_manatee_and_refuses_bad_flags() {
    let (etcd, pg) = tokio::join!(TestEtcd::start(), TestPostgres::start());
    let (etcd, pg) = (etcd.unwrap(), pg.unwrap());
    let m = start_moray(&[
        "--manatee-etcd".into(),
        etcd.endpoint(),
        "--manatee-shard".into(),
        "7".into(),
    ])
    .await;
    let url = m.url.clone();
    let (ok, _, err) = tokio::task::spawn_blocking({
        let u = url.clone();
        move || cli(&u, &["ping"])
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("NoDatabasePeers"), "{err}");
    let state = json!({"generation": 1, "primary": {"id": "p", "pgUrl": format!("tcp://postgres@127.0.0.1:{}/postgres", pg.port())},
                       "sync": null, "async": [], "deposed": [], "initWal": "0/0", "freeze": null});
    let mut c = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    c.put(
        "/manatee/7/state",
        serde_json::to_vec(&state).unwrap(),
        None,
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let u = url.clone();
        let (ok, _, _) = tokio::task::spawn_blocking(move || cli(&u, &["ping"]))
            .await
            .unwrap();
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "moray never found the primary");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bad flag combinations are refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_moray"))
        .arg("--pool-size")
        .arg("4")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pg-url"));
    let out = Command::new(env!("CARGO_BIN_EXE_moray"))
        .args(["--pg-url", "http://nope", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a Postgres URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
