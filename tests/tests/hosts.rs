//! A region over three hosts, run as operators would run it: `manta-adm region init` writes
//! the config, and each host runs `manta-adm host run` inside its own network namespace with
//! its own address on a bridge the test makes (etcd with three members, the Manatee peers on
//! three hosts, a storage node per host in three failure domains, front doors on two hosts).
//! The Manta tools, the original npm client and boto3 work against either front door over
//! TLS. Then, under a stream of writes, one whole host is cut off (its link down, every process
//! in its namespace killed) and brought back: no acknowledged write is lost, every object stays
//! readable, the shard fails over when its primary was there, and the host's services rejoin.
//!
//! Traffic to the test subnet only ever leaves from inside the test's namespaces (commands run
//! with `nsenter --net`, threads that entered one); the root namespace blackholes the subnet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::netns::{Net, in_netns, join};
use testkit::process::{assert_success as ok, guarded_command};
use testkit::region::binary;
use testkit::{LoggedChild, TestDir};

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];

/// The region: its namespaces, its config, each host's `host run`.
struct Hosts {
    net: Net,
    dir: TestDir,
    config: PathBuf,
    state: PathBuf,
    home: PathBuf,
    runs: BTreeMap<String, LoggedChild>,
}

impl Hosts {
    fn create() -> Hosts {
        let net = Net::create("mth", 214, &[("h1", 1), ("h2", 2), ("h3", 3)]).unwrap();
        let dir = TestDir::new("hosts").unwrap();
        // Postgres (as its own user) and the containers' uids must reach the hosts' state.
        let state = PathBuf::from(format!("/var/lib/manta/test-hosts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let out = dir.path().join("region");
        let mut init = Command::new(binary("manta-adm").unwrap());
        init.args(["region", "init", "--out"])
            .arg(&out)
            .arg("--state-dir")
            .arg(&state);
        for (i, h) in HOSTS.iter().enumerate() {
            init.arg("--host")
                .arg(format!("{h}={}", net.addr(i as u8 + 1)));
        }
        ok("region init", init.output().unwrap());
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        ok(
            "ssh-keygen",
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(home.join(".ssh/id_ed25519"))
                .output()
                .unwrap(),
        );
        let mut hosts = Hosts {
            net,
            config: out.join("region.toml"),
            dir,
            state,
            home,
            runs: BTreeMap::new(),
        };
        for h in HOSTS {
            hosts.start(h);
        }
        hosts
    }

    /// Starts `host run` for `host`, inside its namespace.
    fn start(&mut self, host: &str) {
        let mut cmd = guarded_command("nsenter", None);
        cmd.args(self.net.enter_args(host))
            .arg(binary("manta-adm").unwrap())
            .args(["host", "run", "--config"])
            .arg(&self.config)
            .args(["--host", host]);
        let log = self.dir.path().join(format!("{host}-run.log"));
        let child = LoggedChild::spawn(&format!("host run {host}"), cmd, &log).unwrap();
        self.runs.insert(host.to_owned(), child);
    }

    /// Cuts `host` off as a power cut would: its link down at the switch, and every process in
    /// its namespace killed at once.
    fn crash(&mut self, host: &str) {
        self.net.set_link(host, false).unwrap();
        let pids = self.net.pids(host).unwrap();
        assert!(!pids.is_empty(), "nothing runs on {host}");
        for pid in &pids {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        self.runs.remove(host);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.net.pids(host).unwrap().is_empty() {
            assert!(Instant::now() < deadline, "{host} did not die");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command run inside `host`'s namespace, as the test user (HOME with the key).
    fn on(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = self.net.command(host, program);
        c.env("HOME", &self.home).env("RUST_BACKTRACE", "0");
        c
    }

    fn adm(&self, host: &str, args: &[&str]) -> Output {
        let mut c = self.on(host, binary("manta-adm").unwrap());
        c.args(args).arg("--config").arg(&self.config);
        c.output().unwrap()
    }

    /// `status --config --json`, asked from `host`.
    fn status(&self, host: &str) -> serde_json::Value {
        let out = self.adm(host, &["status", "--json"]);
        let out = ok("status", out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until every service answers healthy and the shard has its three roles, asked
    /// from `from`; gives how long that took.
    fn wait_healthy(&self, from: &str, within: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let st = self.status(from);
            let services = st["services"].as_array().unwrap();
            let all = services.iter().all(|s| s["state"] == "healthy");
            let shard = st["shard"].as_str().unwrap_or("");
            let roles = ["primary", "sync", "async"]
                .iter()
                .all(|r| shard.lines().any(|l| l.starts_with(r)));
            // Every storage node's heartbeat is in (the front doors re-read them every 5 s).
            let nodes = st["storage"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["heartbeatAgeSeconds"].as_u64().unwrap_or(99) <= 10)
                .count();
            if all && roles && nodes == 3 {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < within,
                "the region was not healthy within {within:?}:\n{}",
                serde_json::to_string_pretty(&st).unwrap()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Has `host run` of `host` read the config again.
    fn reload(&self, host: &str) {
        let pid = self.runs[host].pid();
        ok(
            "kill -HUP",
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .output()
                .unwrap(),
        );
    }

    /// Waits until `f` holds for `status`, asked from `from`.
    fn wait_status(
        &self,
        from: &str,
        what: &str,
        within: Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) {
        let t = Instant::now();
        loop {
            let st = self.status(from);
            if f(&st) {
                return;
            }
            assert!(
                t.elapsed() < within,
                "{what}: not within {within:?}:\n{}",
                serde_json::to_string_pretty(&st).unwrap()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn pki(&self) -> PathBuf {
        self.config.with_file_name("pki")
    }

    /// The front doors' Manta API URLs, by host.
    fn frontdoors(&self) -> Vec<(String, String)> {
        let st = self.status("h3");
        st["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["service"].as_str().unwrap().starts_with("frontdoor"))
            .map(|s| {
                let ep = s["endpoint"].as_str().unwrap();
                let url = ep.split_whitespace().next().unwrap().to_owned();
                let s3 = ep
                    .split("S3: ")
                    .nth(1)
                    .unwrap()
                    .trim_end_matches(')')
                    .to_owned();
                (
                    s["host"].as_str().unwrap().to_owned(),
                    format!("{url} {s3}"),
                )
            })
            .collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Every process of every host, then the namespaces (Net's drop) and the state.
        self.runs.clear();
        for h in HOSTS {
            for pid in self.net.pids(h).unwrap_or_default() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.state);
        } else {
            eprintln!("the hosts' state is kept in {}", self.state.display());
        }
    }
}

/// Files under `dir`, recursively.
fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { count_files(&p) } else { 1 }
        })
        .sum()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The acknowledged writes of the load, and what went wrong.
#[derive(Default)]
struct Load {
    /// Each acknowledged write: its number, when it was sent and when it was acknowledged.
    acked: Vec<(u64, Instant, Instant)>,
    write_errors: Vec<Instant>,
    read_errors: Vec<String>,
    /// The longest a read of an acknowledged object took, retries included.
    slowest_read: Duration,
}

async fn client(url: &str, login: &str, key_id: &str, home: &Path) -> manta_client::MantaClient {
    let cfg = manta_client::ClientConfig {
        url: url.to_owned(),
        user: login.to_owned(),
        subuser: None,
        key_id: Some(key_id.to_owned()),
        // The tools above check the region's certificates; this load generator only counts
        // what is acknowledged and read back.
        insecure: true,
        ssh_dir: home.join(".ssh"),
        no_auth: false,
        timeout: Duration::from_secs(10),
    };
    manta_client::MantaClient::new(cfg).await.unwrap()
}

/// Writes `stream/<n>` objects one after another until `stop`, and after each write reads an
/// earlier acknowledged object (retrying for up to 30 s: a read that needs the shard waits out
/// its failover).
async fn load(
    c: manta_client::MantaClient,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<Load>>,
) -> anyhow::Result<()> {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let body = format!("object {n}\n");
        let sent = Instant::now();
        match c
            .put_bytes(
                &format!("~~/stor/stream/{n}"),
                body,
                manta_client::PutOptions::default(),
            )
            .await
        {
            Ok(_) => state.lock().unwrap().acked.push((n, sent, Instant::now())),
            Err(_) => {
                state.lock().unwrap().write_errors.push(Instant::now());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let pick = {
            let s = state.lock().unwrap();
            (!s.acked.is_empty()).then(|| s.acked[(n as usize * 7919) % s.acked.len()].0)
        };
        if let Some(k) = pick {
            let t = Instant::now();
            let mut last = String::new();
            let mut good = false;
            while t.elapsed() < Duration::from_secs(30) {
                match c.get_bytes(&format!("~~/stor/stream/{k}")).await {
                    Ok(b) if b == format!("object {k}\n").as_bytes() => {
                        good = true;
                        break;
                    }
                    Ok(b) => {
                        last = format!("stream/{k} read back wrong: {b:?}");
                        break;
                    }
                    Err(e) => {
                        last = format!("stream/{k}: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            let mut s = state.lock().unwrap();
            s.slowest_read = s.slowest_read.max(t.elapsed());
            if !good {
                s.read_errors.push(last);
            }
        }
    }
    Ok(())
}

#[test]
fn a_region_over_three_hosts_serves_every_tool_and_survives_losing_a_host() {
    if !manta_util::proc::is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let mut r = Hosts::create();
    let up = r.wait_healthy("h3", Duration::from_secs(300));
    eprintln!("FIGURE: three hosts healthy {up:.1?} after `host run`");
    // The front doors learn of the nodes at their next re-read of the heartbeats.
    std::thread::sleep(Duration::from_secs(6));

    // An account and an S3 key, made by the operator on a host of the region.
    let login = "hostsuser";
    let key = r.home.join(".ssh/id_ed25519.pub");
    ok(
        "account create",
        r.adm(
            "h1",
            &["account", "create", login, "--key", key.to_str().unwrap()],
        ),
    );
    let key_id = text(&ok(
        "ssh-keygen -l",
        Command::new("ssh-keygen")
            .args(["-l", "-E", "md5", "-f"])
            .arg(&key)
            .output()
            .unwrap(),
    ))
    .split_whitespace()
    .nth(1)
    .unwrap()
    .trim_start_matches("MD5:")
    .to_owned();
    let s3: serde_json::Value = serde_json::from_slice(
        &ok(
            "s3-key create",
            r.adm("h1", &["s3-key", "create", login, "--json"]),
        )
        .stdout,
    )
    .unwrap();
    let ca = r.pki().join("ca.pem");
    let frontdoors = r.frontdoors();
    assert_eq!(frontdoors.len(), 2, "{frontdoors:?}");

    // Our tools, the npm client and boto3, against each front door, over TLS that trusts the
    // region's CA (from a host without a front door).
    let manta = binary("manta").unwrap();
    for (fd_host, urls) in &frontdoors {
        let (url, s3_url) = urls.split_once(' ').unwrap();
        assert!(url.starts_with("https://"), "{url}");
        let tool = |args: &[&str], stdin: Option<&str>| {
            let mut c = r.on("h3", &manta);
            c.args(args)
                .env("MANTA_URL", url)
                .env("MANTA_USER", login)
                .env("MANTA_KEY_ID", &key_id)
                .env("SSL_CERT_FILE", &ca);
            let out = match stdin {
                None => c.output().unwrap(),
                Some(s) => {
                    use std::io::Write as _;
                    c.stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped());
                    let mut ch = c.spawn().unwrap();
                    ch.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
                    ch.wait_with_output().unwrap()
                }
            };
            ok(&format!("manta {args:?} via {url}"), out)
        };
        let dir = format!("~~/stor/via-{fd_host}");
        tool(&["mmkdir", "-p", &dir], None);
        tool(
            &["mput", &format!("{dir}/hello.txt")],
            Some("hello across hosts\n"),
        );
        assert_eq!(
            text(&tool(&["mget", &format!("{dir}/hello.txt")], None)),
            "hello across hosts\n"
        );
        assert!(text(&tool(&["mls", &dir], None)).contains("hello.txt"));

        let mut node = r.on("h3", "node");
        node.arg(testkit::tools::node_manta("mls"))
            .arg(&dir)
            .env("MANTA_URL", url)
            .env("MANTA_USER", login)
            .env("MANTA_KEY_ID", &key_id)
            .env("NODE_EXTRA_CA_CERTS", &ca)
            .env_remove("SSH_AUTH_SOCK");
        let out = ok(&format!("npm mls via {url}"), node.output().unwrap());
        assert!(text(&out).contains("hello.txt"), "{}", text(&out));

        let mut py = r.on("h3", testkit::tools::boto3_python());
        py.arg("-c")
            .arg(BOTO3)
            .env("S3_ENDPOINT", s3_url)
            .env("S3_KEY", s3["accessKeyId"].as_str().unwrap())
            .env("S3_SECRET", s3["secretAccessKey"].as_str().unwrap())
            .env("AWS_CA_BUNDLE", &ca)
            .env("BUCKET", format!("b-{fd_host}"));
        let out = ok(&format!("boto3 via {s3_url}"), py.output().unwrap());
        assert_eq!(text(&out).trim(), "boto3 ok");
    }
    // Each front door reads what the other wrote.
    let first = frontdoors[0].0.clone();
    let (other_host, other) = frontdoors
        .iter()
        .find(|(h, _)| *h != first)
        .cloned()
        .unwrap();
    let mut c = r.on("h3", &manta);
    c.args(["mget", &format!("~~/stor/via-{first}/hello.txt")])
        .env("MANTA_URL", other.split(' ').next().unwrap())
        .env("MANTA_USER", login)
        .env("MANTA_KEY_ID", &key_id)
        .env("SSL_CERT_FILE", &ca);
    assert_eq!(
        text(&ok("cross read", c.output().unwrap())),
        "hello across hosts\n"
    );

    // Which host holds the shard's primary: that is the one cut off (unless it runs the only
    // front door the load could use, which three hosts and two front doors never force).
    let st = r.status("h3");
    let shard = st["shard"].as_str().unwrap().to_owned();
    let primary_addr = shard
        .lines()
        .find(|l| l.starts_with("primary"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.split(':').next())
        .unwrap()
        .to_owned();
    let hosts_st = st["hosts"].as_array().unwrap();
    let victim = hosts_st
        .iter()
        .find(|h| h["address"] == primary_addr.as_str())
        .map(|h| h["host"].as_str().unwrap().to_owned())
        .unwrap();
    let (load_host, load_url) = frontdoors
        .iter()
        .find(|(h, _)| *h != victim)
        .map(|(h, u)| (h.clone(), u.split(' ').next().unwrap().to_owned()))
        .unwrap();
    eprintln!("the primary is on {victim}; the load goes through the front door on {load_host}");
    let _ = other_host;

    // The load, from inside the load's host.
    let stop = Arc::new(AtomicBool::new(false));
    let state = Arc::new(Mutex::new(Load::default()));
    let loader = in_netns(&r.net.ns(&load_host), {
        let (stop, state, home) = (stop.clone(), state.clone(), r.home.clone());
        let (url, login, key_id) = (load_url.clone(), login.to_owned(), key_id.clone());
        move || async move {
            let c = client(&url, &login, &key_id, &home).await;
            c.mkdirp("~~/stor/stream").await?;
            load(c, stop, state).await
        }
    });
    let wait_acks = |n: usize, within: Duration| {
        let t = Instant::now();
        while state.lock().unwrap().acked.len() < n {
            assert!(t.elapsed() < within, "fewer than {n} writes acknowledged");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_acks(20, Duration::from_secs(60));

    // The cut (timed from its start: killing every process takes a moment).
    let cut = Instant::now();
    r.crash(&victim);
    let before = state.lock().unwrap().acked.len();
    // The first write sent after the cut began, acknowledged (one in flight at the cut may
    // still have made it).
    let first_write = {
        let t = Instant::now();
        loop {
            let found = state
                .lock()
                .unwrap()
                .acked
                .iter()
                .find(|(_, sent, _)| *sent > cut)
                .map(|(_, _, acked)| *acked - cut);
            if let Some(d) = found {
                break d;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no write acknowledged after the cut"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    eprintln!("FIGURE: first acknowledged write {first_write:.2?} after {victim} was cut off");
    wait_acks(before + 20, Duration::from_secs(60));
    // The shard fails over: a primary on another host.
    r.wait_status(
        &load_host,
        "the shard fails over",
        Duration::from_secs(90),
        |st| {
            st["shard"].as_str().is_some_and(|shard| {
                shard
                    .lines()
                    .any(|l| l.starts_with("primary") && !l.contains(&format!(" {primary_addr}:")))
            })
        },
    );
    let st = r.status(&load_host);
    let healthy_there: Vec<&serde_json::Value> = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["host"] == victim.as_str())
        .filter(|s| s["state"] == "healthy")
        .collect();
    assert!(
        healthy_there.is_empty(),
        "status shows {victim}'s services healthy: {healthy_there:?}"
    );
    let down = st["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == victim.as_str())
        .unwrap();
    assert_eq!(down["reachable"], false, "status: {down}");

    // The host comes back, and its services rejoin by themselves.
    r.net.set_link(&victim, true).unwrap();
    r.start(&victim);
    let back = Instant::now();
    let healthy_again = r.wait_healthy(&load_host, Duration::from_secs(180));
    eprintln!(
        "FIGURE: {victim} healthy again {healthy_again:.1?} after its host run started ({:.1?} after the cut)",
        back - cut + healthy_again
    );
    let after = state.lock().unwrap().acked.len();
    wait_acks(after + 10, Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    join(loader).unwrap();

    // Nothing acknowledged is lost: every object reads back, through either front door.
    let s = state.lock().unwrap();
    assert!(
        s.read_errors.is_empty(),
        "reads failed: {:?}",
        s.read_errors
    );
    eprintln!(
        "FIGURE: {} writes acknowledged, {} refused during the cut; slowest read {:.2?}",
        s.acked.len(),
        s.write_errors.len(),
        s.slowest_read
    );
    let acked: Vec<u64> = s.acked.iter().map(|(n, _, _)| *n).collect();
    drop(s);
    for (_, urls) in &frontdoors {
        let url = urls.split(' ').next().unwrap().to_owned();
        let (acked, home, login, key_id) = (
            acked.clone(),
            r.home.clone(),
            login.to_owned(),
            key_id.clone(),
        );
        join(in_netns(&r.net.ns("h3"), move || async move {
            let c = client(&url, &login, &key_id, &home).await;
            for n in acked {
                let b = c.get_bytes(&format!("~~/stor/stream/{n}")).await?;
                anyhow::ensure!(
                    b == format!("object {n}\n").as_bytes(),
                    "stream/{n} via {url}: {b:?}"
                );
            }
            Ok(())
        }))
        .unwrap();
    }

    // Joining: a storage node and a Moray added to the running region, each started by its
    // host's `host run` when told to read the config again.
    let config = r.config.to_str().unwrap().to_owned();
    let add = |kind: &str, host: &str| {
        let out = ok(
            "region add",
            Command::new(binary("manta-adm").unwrap())
                .args([
                    "region", "add", "--config", &config, "--kind", kind, "--host", host,
                ])
                .output()
                .unwrap(),
        );
        text(&out)
    };
    assert!(add("storage", "h2").contains("added storage4 on h2"));
    assert!(add("moray", "h3").contains("added moray3 on h3"));
    r.reload("h2");
    r.reload("h3");
    r.wait_status(
        "h1",
        "storage4 and moray3 join",
        Duration::from_secs(60),
        |st| {
            let healthy = |name: &str| {
                st["services"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["service"] == name && s["state"] == "healthy")
            };
            let nodes = st["storage"].as_array().unwrap();
            healthy("storage4")
                && healthy("moray3")
                && nodes.iter().any(|n| {
                    n["storage_id"].as_str().unwrap().starts_with("storage4.")
                        && n["heartbeatAgeSeconds"].as_u64().unwrap() <= 10
                })
        },
    );
    // h3's host run puts it in the shard ring once it is ready.
    let in_ring = |log: &str| {
        log.lines().any(|l| {
            l.contains("shard ring: shard 1 is served by") && l.matches("https://").count() == 3
        })
    };
    let t = Instant::now();
    loop {
        let h3_log = std::fs::read_to_string(r.dir.path().join("h3-run.log")).unwrap();
        if in_ring(&h3_log) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "moray3 was not put in the shard ring:\n{h3_log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Leaving: storage1 retired. It keeps serving what it holds (every object above, some
    // with a copy there, reads back), and no new copy lands on it.
    ok(
        "region retire",
        Command::new(binary("manta-adm").unwrap())
            .args(["region", "retire", "--config", &config, "storage1"])
            .output()
            .unwrap(),
    );
    r.reload("h1");
    r.wait_status("h2", "storage1 retired", Duration::from_secs(60), |st| {
        st["storage"].as_array().unwrap().iter().any(|n| {
            n["storage_id"].as_str().unwrap().starts_with("storage1.") && n["retired"] == true
        })
    });
    // The front doors re-read the heartbeats every 5 s.
    std::thread::sleep(Duration::from_secs(6));
    let dataset = r.state.join("h1/storage1/data");
    let held = count_files(&dataset);
    assert!(held > 0, "storage1 held no copies before it was retired");
    let (url, home, login2, key_id2) = (
        load_url.clone(),
        r.home.clone(),
        login.to_owned(),
        key_id.clone(),
    );
    let acked2 = acked.clone();
    join(in_netns(&r.net.ns(&load_host), move || async move {
        let c = client(&url, &login2, &key_id2, &home).await;
        c.mkdirp("~~/stor/after-retire").await?;
        for n in 0..30 {
            c.put_bytes(
                &format!("~~/stor/after-retire/{n}"),
                format!("after {n}\n"),
                manta_client::PutOptions::default(),
            )
            .await?;
        }
        for n in acked2 {
            let b = c.get_bytes(&format!("~~/stor/stream/{n}")).await?;
            anyhow::ensure!(b == format!("object {n}\n").as_bytes(), "stream/{n}: {b:?}");
        }
        Ok(())
    }))
    .unwrap();
    assert_eq!(
        count_files(&dataset),
        held,
        "a copy was placed on the retired storage1"
    );
}

const BOTO3: &str = r#"
import os
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"],
                  aws_access_key_id=os.environ["S3_KEY"],
                  aws_secret_access_key=os.environ["S3_SECRET"],
                  region_name="us-east-1", verify=os.environ["AWS_CA_BUNDLE"],
                  config=Config(s3={"addressing_style": "path"}))
b = os.environ["BUCKET"]
s3.create_bucket(Bucket=b)
s3.put_object(Bucket=b, Key="k/one", Body=b"one across hosts")
assert s3.get_object(Bucket=b, Key="k/one")["Body"].read() == b"one across hosts"
assert [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]] == ["k/one"]
print("boto3 ok")
"#;
