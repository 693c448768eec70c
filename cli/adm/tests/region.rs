//! `manta-adm up`, `status`, `down` and `up` again, for real, in a temp dir: the whole region
//! (etcd, a 3-peer Manatee shard, two Morays, three storage nodes, the front door, the jobs
//! supervisor and agents) serves a shell session that sources `env.sh` and uses every tool
//! (and a job, the original npm client, and s3cmd on the S3 endpoint and key from `env.sh`),
//! and keeps the data across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn adm(dir: &Path, home: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_manta-adm"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("HOME", home)
        .env("USER", "regiontest")
        .output()
        .expect("run manta-adm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn status(dir: &Path, home: &Path) -> serde_json::Value {
    let (ok, text) = adm(dir, home, &["status", "--json"]);
    assert!(ok, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status --json: {e}: {text}"))
}

/// The `export K=V` lines of env.sh.
fn env_sh(dir: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(dir.join("env.sh"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Runs a bash script in a shell that has sourced the region's `env.sh` (and nothing else of
/// this test's environment that names the region): (success, stdout, stderr).
fn sourced(dir: &Path, home: &Path, script: &str) -> (bool, String, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(". \"$REGION/env.sh\" && {script}"))
        .current_dir(home)
        .env("REGION", dir)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("MANTA_REGION_DIR")
        .env_remove("MANATEE_ETCD")
        .env_remove("MORAY_URL")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A region in a temp dir that only its owner may enter (as `mktemp -d` makes, or a home such
/// as `/root`), with a home of its own for the user's SSH key. Dropping it stops the region
/// even when an assertion failed, so no daemon outlives the test, and deletes it (with any
/// data kept outside its directory) unless `MANTA_TEST_KEEP=1`.
struct TestRegion {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    home: PathBuf,
}

impl TestRegion {
    /// Brings the region up; panics with `up`'s output when that fails.
    fn up() -> TestRegion {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::Builder::new()
            .prefix("manta-test-region-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let r = TestRegion {
            dir: tmp.path().join("region"),
            home: tmp.path().join("home"),
            tmp,
        };
        std::fs::create_dir_all(&r.home).unwrap();
        let (ok, text) = adm(&r.dir, &r.home, &["up"]);
        assert!(ok, "up in a 0700 directory failed:\n{text}");
        r
    }
}

impl Drop for TestRegion {
    fn drop(&mut self) {
        if std::env::var("MANTA_TEST_KEEP").is_ok_and(|v| v == "1") {
            let _ = adm(&self.dir, &self.home, &["down"]);
            eprintln!(
                "keeping {}",
                std::mem::replace(&mut self.tmp, tempfile::tempdir().unwrap())
                    .keep()
                    .display()
            );
        } else {
            let _ = adm(&self.dir, &self.home, &["destroy", "--yes"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_in_a_private_directory_stores_and_reads() {
    let r = TestRegion::up();
    let (dir, home) = (r.dir.as_path(), r.home.as_path());
    if manta_util::proc::is_root() {
        // Postgres runs as `postgres`, which cannot enter the directory: its files live
        // elsewhere, linked from the peer's directory.
        let link = dir.join("manatee1/data");
        let target = std::fs::read_link(&link).unwrap_or_else(|e| panic!("{link:?}: {e}"));
        assert!(!target.starts_with(r.tmp.path()), "{target:?}");
        assert!(target.join("pgdata/PG_VERSION").exists(), "{target:?}");
    }
    let (ok, out, err) = sourced(
        dir,
        home,
        "echo 'kept private' | mput ~~/stor/private.txt && mget ~~/stor/private.txt",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "kept private\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_sh_is_private_and_drives_every_operator_tool() {
    use std::os::unix::fs::PermissionsExt as _;
    let r = TestRegion::up();
    let (dir, home) = (r.dir.as_path(), r.home.as_path());

    let mode = std::fs::metadata(dir.join("env.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "env.sh holds the S3 secret: {mode:o}");
    // So are the region's directory, its keys and the services' logs (request data).
    for (path, want) in [
        (dir.to_path_buf(), 0o700),
        (dir.join("pki"), 0o700),
        (dir.join("pki/ca-key.pem"), 0o600),
        (dir.join("pki/adm/key.pem"), 0o600),
        (dir.join("pki/frontdoor/key.pem"), 0o600),
        (dir.join("pki/moray1/key.pem"), 0o600),
        (dir.join("frontdoor/frontdoor.log"), 0o600),
        (dir.join("storage1/storage1.log"), 0o600),
    ] {
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, want, "{}: {mode:o}", path.display());
    }

    // manatee-adm finds the region's etcd and shard from env.sh alone.
    let (ok, out, err) = sourced(dir, home, "manatee-adm pg-status --json");
    assert!(ok, "manatee-adm pg-status: {err}");
    let rows: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut roles: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sitter"]["role"].as_str().unwrap())
        .collect();
    roles.sort_unstable();
    assert_eq!(roles, ["async", "primary", "sync"], "{out}");

    // moray-cli finds Moray; manta-adm finds the region without --dir.
    let (ok, out, err) = sourced(dir, home, "moray-cli listbuckets");
    assert!(
        ok && out.contains("manta"),
        "moray-cli listbuckets: {out}{err}"
    );
    let (ok, out, err) = sourced(dir, home, "cd / && manta-adm status --json");
    assert!(ok, "manta-adm status without --dir: {err}");
    assert!(out.contains("frontdoor"), "{out}");
    let (ok, out, err) = sourced(dir, home, "manta-adm account get \"$MANTA_USER\"");
    assert!(
        ok && out.contains("regiontest"),
        "manta-adm account get: {out}{err}"
    );

    // A reader that stops early ends every tool quietly.
    let (_, out, err) = sourced(
        dir,
        home,
        "manta-adm status | head -1; manatee-adm pg-status | head -1; \
         moray-cli listbuckets | head -1; mls ~~ | head -1; true",
    );
    assert!(out.starts_with("SERVICE"), "{out}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe") && !err.contains("os error 32"),
        "a closed pipe made a tool complain:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_cannot_start_is_named_with_its_own_error_at_once() {
    let r = TestRegion::up();
    let (dir, home) = (r.dir.as_path(), r.home.as_path());
    let (ok, text) = adm(dir, home, &["down"]);
    assert!(ok, "{text}");

    // Something else holds the front door's port: the next `up` must say so, not time out.
    let region: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("region.json")).unwrap()).unwrap();
    let port = region["ports"]["frontdoor"].as_u64().unwrap();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port as u16)).unwrap();
    let started = std::time::Instant::now();
    let (ok, text) = adm(dir, home, &["up"]);
    let took = started.elapsed();
    assert!(
        !ok,
        "up succeeded with the front door's port taken:\n{text}"
    );
    assert!(text.contains("frontdoor failed to start"), "{text}");
    assert!(
        text.contains("Address already in use"),
        "the front door's own error: {text}"
    );
    assert!(
        took < std::time::Duration::from_secs(60),
        "took {took:?}:\n{text}"
    );
}

async fn client(dir: &Path, home: &Path) -> manta_client::MantaClient {
    let env = env_sh(dir);
    let cfg = manta_client::ClientConfig {
        url: env["MANTA_URL"].clone(),
        user: env["MANTA_USER"].clone(),
        subuser: None,
        key_id: Some(env["MANTA_KEY_ID"].clone()),
        insecure: false,
        ssh_dir: home.join(".ssh"),
        no_auth: false,
        timeout: std::time::Duration::from_secs(30),
    };
    manta_client::MantaClient::new(cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_makes_a_key_and_status_shows_every_service_healthy() {
    let r = TestRegion::up();
    let (dir, home) = (r.dir.as_path(), r.home.as_path());
    assert!(
        home.join(".ssh/id_ed25519").exists(),
        "no key was generated for the user"
    );
    // A service may be caught between two health checks on a loaded machine (a sitter renewing
    // its lease): every one must be healthy at one moment within a few seconds.
    let mut st = status(dir, home);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut flaps = Vec::new();
    while st["services"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["state"] != "healthy")
        && std::time::Instant::now() < deadline
    {
        flaps.push(st.to_string());
        std::thread::sleep(std::time::Duration::from_millis(500));
        st = status(dir, home);
    }
    if !flaps.is_empty() {
        eprintln!(
            "not all healthy at first ({} checks): {}",
            flaps.len(),
            flaps[0]
        );
    }
    let services = st["services"].as_array().unwrap();
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    for want in [
        "etcd",
        "manatee1",
        "manatee2",
        "manatee3",
        "moray1",
        "moray2",
        "storage1",
        "storage2",
        "storage3",
        "frontdoor",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for s in services {
        let name = s["service"].as_str().unwrap();
        let log =
            std::fs::read_to_string(dir.join(name).join(format!("{name}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>();
        assert_eq!(
            s["state"],
            "healthy",
            "{name} in {st}\n{name}'s log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let dcs: std::collections::HashSet<&str> = st["storage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["datacenter"].as_str().unwrap())
        .collect();
    assert_eq!(dcs.len(), 3, "three failure domains: {st}");
    let (_, people) = adm(dir, home, &["status"]);
    assert!(
        people.contains("primary") && people.contains("sync") && people.contains("async"),
        "{people}"
    );
    // The account is the user's.
    assert_eq!(env_sh(dir)["MANTA_USER"], "regiontest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_sources_env_sh_uses_every_tool() {
    let r = TestRegion::up();
    let (dir, home) = (r.dir.as_path(), r.home.as_path());
    // A user's session: source env.sh, then the tools by their usual names.
    let script = r#"
        set -eo pipefail
        . "$REGION/env.sh"
        mmkdir -p ~~/stor/kept/deep
        echo 'survives restarts' | mput ~~/stor/kept/obj
        printf 'one two three\nfour five\n' > words.txt
        mput -f words.txt ~~/stor/kept/deep/words.txt
        mls ~~/stor/kept
        mls -l ~~/stor/kept/deep
        mget ~~/stor/kept/obj
        minfo ~~/stor/kept/obj | grep -i '^etag:'
        mln ~~/stor/kept/obj ~~/stor/kept/link
        mchattr -H 'm-color: teal' ~~/stor/kept/link
        minfo ~~/stor/kept/link | grep -i 'm-color: teal'
        mfind -t o ~~/stor/kept
        curl -sf "$(msign -E 1h ~~/stor/kept/obj)"
        echo ~~/stor/kept/deep/words.txt | mjob create -o -m 'wc -w'
        mkdir -p tree/sub && echo a > tree/a && echo b > tree/sub/b
        mput -r tree ~~/stor/tree && mget -r -o copy ~~/stor/tree && diff -r tree copy
        mrm -r ~~/stor/tree
        mrm ~~/stor/kept/link
        mmkdir ~~/stor/empty && mrmdir ~~/stor/empty
        # The S3 API with the endpoint and key from env.sh, and the same bytes through Manta.
        host=${AWS_ENDPOINT_URL#http://}
        printf '[default]\nhost_base = %s\nhost_bucket = %s\nuse_https = False\n' "$host" "$host" > s3cfg
        s3() { s3cmd -c s3cfg --access_key="$AWS_ACCESS_KEY_ID" --secret_key="$AWS_SECRET_ACCESS_KEY" --region="$AWS_REGION" "$@"; }
        s3 mb s3://region-bucket
        s3 put words.txt s3://region-bucket/from/s3.txt
        s3 ls -r s3://region-bucket
        mget ~~/buckets/region-bucket/objects/from/s3.txt | sed 's/^/via-manta: /'
        echo ~~/buckets/region-bucket/objects/from/s3.txt | mjob create -o -m 'wc -l' | sed 's/^/s3-job: /'
    "#;
    let work = r.tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(&work)
        .env("REGION", dir)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the CLI session failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.lines().any(|l| l == "deep/"), "{stdout}");
    assert!(stdout.contains("words.txt"), "{stdout}");
    assert_eq!(
        stdout.matches("survives restarts").count(),
        2,
        "mget and the presigned URL: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "5"),
        "the job's word count: {stdout}"
    );
    assert!(
        stdout.contains("/stor/kept/deep/words.txt"),
        "mfind: {stdout}"
    );
    assert!(
        stdout.contains("s3://region-bucket/from/s3.txt"),
        "s3cmd ls: {stdout}"
    );
    assert!(
        stdout.contains("via-manta: one two three"),
        "an S3 object read through the Manta API: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "s3-job: 2"),
        "a job over an S3 object (wc -l): {stdout}"
    );

    // The original npm client works with the same env.sh.
    let node_client = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/node-manta/node_modules/manta/bin/mls");
    assert!(
        node_client.exists(),
        "the manta npm client is not installed (./run-tests installs it)"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". \"$REGION/env.sh\" && node {} ~~/stor/kept",
            node_client.display()
        ))
        .env("REGION", dir)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["deep/", "obj"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_stops_every_service_and_up_again_keeps_the_data_and_the_port() {
    let r = TestRegion::up();
    let (dir, home) = (r.dir.as_path(), r.home.as_path());
    let (ok, _, err) = sourced(
        dir,
        home,
        "mmkdir -p ~~/stor/kept/deep && echo 'survives restarts' | mput ~~/stor/kept/obj && \
         printf 'one two three\\nfour five\\n' | mput ~~/stor/kept/deep/words.txt",
    );
    assert!(ok, "{err}");
    let env = env_sh(dir);

    let (ok, text) = adm(dir, home, &["down"]);
    assert!(ok, "{text}");
    for s in status(dir, home)["services"].as_array().unwrap() {
        assert_eq!(s["state"], "stopped");
    }

    let (ok, text) = adm(dir, home, &["up"]);
    assert!(ok, "second up failed:\n{text}");
    assert_eq!(
        env_sh(dir)["MANTA_URL"],
        env["MANTA_URL"],
        "the region moved to a new port"
    );
    let c = client(dir, home).await;
    assert_eq!(
        c.get_bytes("~~/stor/kept/obj").await.unwrap(),
        "survives restarts\n"
    );
    assert_eq!(
        c.get_bytes("~~/stor/kept/deep/words.txt").await.unwrap(),
        "one two three\nfour five\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_is_back_within_seconds_and_the_region_works() {
    let r = TestRegion::up();
    let (dir, home) = (r.dir.as_path(), r.home.as_path());
    let pid_of = |st: &serde_json::Value, name: &str| -> Option<u64> {
        st["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .and_then(|s| s["pid"].as_u64())
    };
    let victims = ["frontdoor", "moray1", "storage2"];
    let before = status(dir, home);
    let killed_at = std::time::Instant::now();
    for v in victims {
        let pid = pid_of(&before, v).unwrap_or_else(|| panic!("{v} has no pid: {before}"));
        let st = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
    // Each is started again by its supervisor, under a new pid, and answers.
    let deadline = killed_at + std::time::Duration::from_secs(30);
    loop {
        let st = status(dir, home);
        let back = victims.iter().all(|v| {
            let row = st["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["service"] == *v)
                .unwrap();
            row["state"] == "healthy" && pid_of(&st, v) != pid_of(&before, v)
        });
        if back {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not back 30 s after kill -9: {st}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let took = killed_at.elapsed();
    eprintln!("front door, a Moray and a storage node back {took:?} after kill -9");
    let log = std::fs::read_to_string(dir.join("frontdoor/frontdoor.log")).unwrap();
    assert!(log.contains("frontdoor was killed by SIGKILL"), "{log}");
    let (ok, out, err) = sourced(
        dir,
        home,
        "echo 'after the crash' | mput ~~/stor/crash.txt && mget ~~/stor/crash.txt",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "after the crash\n");

    // A supervisor that is killed takes its service along (the front door has become the
    // service user, which the parent-death signal survives), so none runs unmanaged; `up`
    // starts both again.
    let fd = pid_of(&status(dir, home), "frontdoor").unwrap();
    let sup: u32 = std::fs::read_to_string(dir.join("frontdoor/supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", &sup.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let gone_by = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{fd}")).exists() {
        assert!(
            std::time::Instant::now() < gone_by,
            "the front door (pid {fd}) outlived its killed supervisor"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (ok, text) = adm(dir, home, &["up"]);
    assert!(ok, "{text}");
    let (ok, out, err) = sourced(dir, home, "mget ~~/stor/crash.txt");
    assert!(ok, "{err}");
    assert_eq!(out, "after the crash\n");
}

/// A client of the region's internal endpoints holding `id`.
fn internal_client(id: &manta_pki::Identity) -> reqwest::Client {
    let tls = manta_util::tls::internal_client_config(id).unwrap();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .tls_backend_preconfigured((*tls).clone())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_endpoints_admit_only_the_region_and_the_right_role() {
    let r = TestRegion::up();
    let dir = r.dir.as_path();
    let st = status(dir, &r.home);
    let rows = st["services"].as_array().unwrap();
    let base = |name: &str| -> String {
        let row = rows.iter().find(|s| s["service"] == name).unwrap();
        // "postgres 127.0.0.1:P, sitter https://..." for a peer; the URL alone otherwise.
        let ep = row["endpoint"].as_str().unwrap();
        ep[ep
            .find("https://")
            .unwrap_or_else(|| panic!("{name}: {ep}"))..]
            .to_owned()
    };
    // Each internal endpoint with a path every region certificate may read.
    let mut internal: Vec<String> = ["manatee1", "manatee2", "manatee3", "moray1", "moray2"]
        .iter()
        .chain(&["storage1", "storage2", "storage3", "jobs-supervisor"])
        .chain(&["jobs-agent1", "jobs-agent2", "jobs-agent3"])
        .map(|n| format!("{}/ping", base(n)))
        .collect();
    internal.push(format!("{}/health", base("etcd")));
    // Without a region certificate, nothing gets past the handshake.
    let anonymous = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    for url in &internal {
        let r = anonymous.get(url).send().await;
        assert!(r.is_err(), "{url} answered a stranger: {r:?}");
    }
    // A front door's certificate of this region gets in, but may not have a peer rebuilt.
    let region_id: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("region.json")).unwrap()).unwrap();
    let ca = manta_pki::Ca::open_or_create(
        &dir.join("pki"),
        &format!("region {}", region_id["id"].as_str().unwrap()),
    )
    .unwrap();
    let fd = ca
        .issue(
            &r.tmp.path().join("fd"),
            "fd",
            manta_pki::Role::Frontdoor,
            &[],
        )
        .unwrap();
    let fd = internal_client(&fd);
    for url in &internal {
        let r = fd.get(url).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
    }
    let sitter = base("manatee2");
    let r = fd.post(format!("{sitter}/rebuild")).send().await.unwrap();
    assert_eq!(r.status(), 403, "a front door had a peer rebuilt");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "AuthorizationFailed", "{body}");

    postgres_admits_only_its_roles_with_their_passwords(dir, rows).await;
}

/// Every peer's Postgres port: no superuser and no password-less login over TCP; Moray's role
/// with its password gets in on the primary, and is no superuser.
async fn postgres_admits_only_its_roles_with_their_passwords(
    dir: &Path,
    rows: &[serde_json::Value],
) {
    let moray_pw = std::fs::read_to_string(dir.join("secrets/pg-moray")).unwrap();
    let login = |port: &str, user: &str, pw: Option<&str>| {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port.parse().unwrap())
            .user(user)
            .dbname("postgres")
            .connect_timeout(std::time::Duration::from_secs(5));
        if let Some(pw) = pw {
            cfg.password(pw);
        }
        async move { cfg.connect(tokio_postgres::NoTls).await }
    };
    let mut superuser_seen = Vec::new();
    for name in ["manatee1", "manatee2", "manatee3"] {
        let row = rows.iter().find(|s| s["service"] == name).unwrap();
        // "postgres 127.0.0.1:P, sitter https://..."
        let ep = row["endpoint"].as_str().unwrap();
        let port = ep
            .strip_prefix("postgres 127.0.0.1:")
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("{name}: {ep}"));
        for (user, pw) in [
            ("postgres", None),
            ("postgres", Some("guess-guess-guess")),
            ("moray", None),
            ("moray", Some("guess-guess-guess")),
            ("manatee_repl", None),
        ] {
            let r = login(port, user, pw).await;
            assert!(r.is_err(), "{name}: {user} got in with {pw:?}");
        }
        // With its password Moray's role logs in (reading is all a standby allows).
        let (client, conn) = login(port, "moray", Some(moray_pw.trim()))
            .await
            .unwrap_or_else(|e| panic!("{name}: moray with its password: {e}"));
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .unwrap();
        superuser_seen.push(row.get::<_, bool>(0));
    }
    assert_eq!(superuser_seen, [false; 3], "Moray's role is a superuser");
}

/// Every control socket of a running task below `dir`.
fn task_sockets(dir: &Path, out: &mut Vec<PathBuf>) {
    use std::os::unix::fs::FileTypeExt as _;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            task_sockets(&e.path(), out);
        } else if t.is_socket() && e.file_name() == "sock" {
            out.push(e.path());
        }
    }
}

/// Runs `argv` as the unprivileged user `nobody` (no groups).
fn as_nobody(argv: &[&std::ffi::OsStr]) -> std::process::Output {
    as_user("65534", argv)
}

/// Runs `argv` as `user` (a name or a uid; its own group, no others).
fn as_user(user: &str, argv: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new("setpriv")
        .arg(format!("--reuid={user}"))
        .arg(format!("--regid={user}"))
        .arg("--clear-groups")
        .args(argv)
        .output()
        .unwrap()
}

/// manatee1's Postgres data directory, wherever the region keeps it (its real path).
fn pg_data(dir: &Path) -> PathBuf {
    ["manatee1/data/pgdata", "manatee1/pgdata"]
        .iter()
        .map(|p| std::fs::canonicalize(dir.join(p)).unwrap_or_else(|_| dir.join(p)))
        .find(|p| p.exists())
        .expect("manatee1's pgdata")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_local_user_reads_no_data_or_secret_and_reaches_no_task() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: not root (the region's files all belong to this user anyway)");
        return;
    }
    let r = TestRegion::up();
    let (dir, home) = (r.dir.as_path(), r.home.as_path());
    let secret = b"nobody else may read these bytes\n";
    let (ok, _, err) = sourced(
        dir,
        home,
        "printf 'nobody else may read these bytes\\n' | mput ~~/stor/private && \
         echo ~~/stor/private | mjob create -m 'sleep 30'",
    );
    assert!(ok, "{err}");
    // The data lives where Postgres and the job containers can reach their own parts (the
    // region's data root when the region's directory is private): look at the real paths.
    let real = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let mut objects = Vec::new();
    for i in 1..=3 {
        for d in [format!("storage{i}/data"), format!("storage{i}")] {
            objects.extend(testkit::region::files_holding(&real(dir.join(d)), secret));
        }
    }
    objects.sort();
    objects.dedup();
    assert!(!objects.is_empty(), "no object file holds the bytes");
    let pg_data = pg_data(dir);
    let mut private: Vec<PathBuf> = objects;
    private.extend([
        pg_data.join("PG_VERSION"),
        pg_data.join("global/pg_control"),
        pg_data.parent().unwrap().join("postgres.log"),
        dir.join("pki/frontdoor/key.pem"),
        dir.join("pki/ca-key.pem"),
        dir.join("secrets/pg-moray"),
        dir.join("env.sh"),
    ]);
    for p in &private {
        assert!(std::fs::read(p).is_ok(), "{} is not there", p.display());
        let out = as_nobody(&["cat".as_ref(), "--".as_ref(), p.as_os_str()]);
        assert!(
            !out.status.success(),
            "another local user read {}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // A running task's control socket: its container alone connects.
    let mut sockets = Vec::new();
    for _ in 0..300 {
        for i in 1..=3 {
            task_sockets(&real(dir.join(format!("jobs-agent{i}/data"))), &mut sockets);
            task_sockets(&real(dir.join(format!("jobs-agent{i}"))), &mut sockets);
        }
        if !sockets.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let sock = sockets.first().expect("a running task's control socket");
    let out = as_nobody(&[
        "curl".as_ref(),
        "-s".as_ref(),
        "--unix-socket".as_ref(),
        sock.as_os_str(),
        "http://task/ping".as_ref(),
    ]);
    assert!(
        !out.status.success(),
        "another local user reached the task's socket {}: {}",
        sock.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_that_need_no_root_run_as_the_service_user_and_read_no_other_key() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: not root (every service runs as this user)");
        return;
    }
    let r = TestRegion::up();
    let (dir, home) = (r.dir.as_path(), r.home.as_path());
    let st = status(dir, home);
    for s in st["services"].as_array().unwrap() {
        let name = s["service"].as_str().unwrap();
        // Sitters switch to the Postgres user for Postgres, agents start containers: root.
        let want = if name.starts_with("manatee") || name.starts_with("jobs-agent") {
            "root"
        } else {
            "manta"
        };
        assert_eq!(s["user"], want, "{name} runs as {}: {st}", s["user"]);
    }
    // The region works with them so (objects written by the nodes as that user).
    let (ok, out, err) = sourced(
        dir,
        home,
        "echo hi | mput ~~/stor/runas && mget ~~/stor/runas",
    );
    assert!(ok && out.contains("hi"), "{out}{err}");
    // The service user reads none of root's keys or secrets, nor Postgres's data.
    let pg_data = pg_data(dir);
    for p in [
        dir.join("pki/ca-key.pem"),
        dir.join("pki/manatee1/key.pem"),
        dir.join("pki/frontdoor/key.pem"),
        dir.join("secrets/pg-replication"),
        pg_data.join("global/pg_control"),
    ] {
        assert!(std::fs::read(&p).is_ok(), "{} is not there", p.display());
        let out = as_user("manta", &["cat".as_ref(), "--".as_ref(), p.as_os_str()]);
        assert!(
            !out.status.success(),
            "the service user read {}",
            p.display()
        );
    }
}
