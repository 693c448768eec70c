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
        // Moray alone, without a region identity; /sql on for moray-cli's sql command.
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--insecure-plain-http", "--enable-sql"])
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

/// Runs `moray-cli --url URL ARGS...` off the runtime's workers (it blocks until the process
/// exits); returns whether it succeeded, its stdout and its stderr.
async fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_moray-cli"))
            .arg("--url")
            .arg(url)
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `moray` process over a fresh Postgres of its own.
struct Running {
    m: Moray,
    _pg: TestPostgres,
}

impl Running {
    async fn start() -> Running {
        let pg = TestPostgres::start().await.unwrap();
        let m = start_moray(&["--pg-url".into(), pg.url()]).await;
        Running { m, _pg: pg }
    }

    /// `moray-cli ARGS...` against this process.
    async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        cli(&self.m.url, args).await
    }

    /// `moray-cli ARGS...`, which must succeed, and the JSON it printed.
    async fn json(&self, args: &[&str]) -> Value {
        let (ok, out, err) = self.cli(args).await;
        assert!(ok, "moray-cli {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("moray-cli {args:?}: {e}: {out}"))
    }

    /// Creates bucket `people` (indexed on name, age and a unique email); returns the bucket
    /// as the CLI printed it.
    async fn people(&self) -> Value {
        self.json(&[
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
    }

    /// The `people` bucket with ann (`p1`, 31, with an email) and bob (`p2`, 45) in it;
    /// returns ann's etag.
    async fn ann_and_bob(&self) -> String {
        self.people().await;
        let put = self
            .json(&[
                "putobject",
                "people",
                "p1",
                r#"{"name": "ann", "age": 31, "email": "a@x"}"#,
            ])
            .await;
        self.json(&["putobject", "people", "p2", r#"{"name": "bob", "age": 45}"#])
            .await;
        put["etag"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn the_process_answers_ping_and_version() {
    let r = Running::start().await;
    assert_eq!(r.json(&["ping"]).await, json!({"ok": true}));
    assert_eq!(r.json(&["version"]).await["version"], 2);
}

#[tokio::test]
async fn buckets_are_created_with_their_indexes_and_listed() {
    let r = Running::start().await;
    let b = r.people().await;
    assert_eq!(
        b["index"]["email"],
        json!({"type": "string", "unique": true})
    );
    assert_eq!(r.json(&["getbucket", "people"]).await["name"], "people");
    assert_eq!(r.json(&["listbuckets"]).await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn objects_are_stored_read_and_found() {
    let r = Running::start().await;
    let etag = r.ann_and_bob().await;
    let got = r.json(&["getobject", "people", "p1"]).await;
    assert_eq!(got["value"]["name"], "ann");
    assert_eq!(got["_etag"], etag.as_str());
    let (ok, out, _) = r
        .cli(&["findobjects", "people", "(age>=40)", "--sort", "age:desc"])
        .await;
    assert!(ok);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["key"], "p2");
    assert_eq!(lines[0]["_count"], 1);
}

#[tokio::test]
async fn a_failed_call_exits_non_zero_and_names_the_error() {
    let r = Running::start().await;
    r.ann_and_bob().await;
    // The error's name is on stderr.
    let (ok, _, err) = r
        .cli(&["putobject", "people", "p1", "{}", "--create"])
        .await;
    assert!(!ok);
    assert!(err.contains("EtagConflict"), "{err}");
    let (ok, _, err) = r.cli(&["findobjects", "people", "(nope=1)"]).await;
    assert!(!ok);
    assert!(err.contains("NotIndexed"), "{err}");
    let (ok, _, err) = r.cli(&["getobject", "people", "zzz"]).await;
    assert!(!ok && err.contains("ObjectNotFound"), "{err}");
}

#[tokio::test]
async fn sql_takes_arguments() {
    let r = Running::start().await;
    r.ann_and_bob().await;
    let (ok, out, _) = r
        .cli(&[
            "sql",
            "SELECT count(*) AS n FROM people WHERE age > $1",
            "40",
        ])
        .await;
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap(),
        json!({"n": 1})
    );
}

#[tokio::test]
async fn objects_and_buckets_are_deleted() {
    let r = Running::start().await;
    r.ann_and_bob().await;
    r.json(&["delobject", "people", "p2"]).await;
    let (ok, _, _) = r.cli(&["getobject", "people", "p2"]).await;
    assert!(!ok);
    r.json(&["setup-manta"]).await;
    r.json(&["delbucket", "people"]).await;
}

#[tokio::test]
async fn plain_http_calls_echo_the_request_id() {
    let r = Running::start().await;
    r.json(&["setup-manta"]).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/getBucket", r.m.url))
        .header("x-request-id", "req-42")
        .body(r#"{"name": "manta"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-42");
}

#[tokio::test]
async fn sigterm_makes_a_clean_prompt_exit() {
    let Running { mut m, _pg } = Running::start().await;
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
    let (ok, _, err) = cli(&url, &["ping"]).await;
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
        let (ok, _, _) = cli(&url, &["ping"]).await;
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "moray never found the primary");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bad flag combinations are refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_moray"))
        .args(["--insecure-plain-http", "--pool-size", "4"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pg-url"));
    let out = Command::new(env!("CARGO_BIN_EXE_moray"))
        .args(["--insecure-plain-http", "--pg-url", "http://nope"])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a Postgres URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
