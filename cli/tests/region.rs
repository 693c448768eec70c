//! `manta-adm up`, `status`, `down` and `up` again, for real, in a temp dir: the whole region
//! (etcd, a 3-peer Manatee shard, two Morays, three storage nodes, the front door) serves
//! objects with the account and key `env.sh` names, and keeps them across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
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

/// Stops the region even when an assertion fails, so no daemon outlives the test.
struct Down<'a>(&'a Path, &'a Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = adm(self.0, self.1, &["down"]);
    }
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
async fn up_status_down_up_keeps_data() {
    let tmp = tempfile::Builder::new()
        .prefix("manta-test-region-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("region");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let _down = Down(&dir, &home);

    let (ok, text) = adm(&dir, &home, &["up"]);
    assert!(ok, "up failed:\n{text}");
    assert!(
        home.join(".ssh/id_ed25519").exists(),
        "no key was generated for the user"
    );
    let st = status(&dir, &home);
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
        assert_eq!(s["state"], "healthy", "{st}");
    }
    let dcs: std::collections::HashSet<&str> = st["storage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["datacenter"].as_str().unwrap())
        .collect();
    assert_eq!(dcs.len(), 3, "three failure domains: {st}");
    let (_, people) = adm(&dir, &home, &["status"]);
    assert!(
        people.contains("primary") && people.contains("sync") && people.contains("async"),
        "{people}"
    );

    let env = env_sh(&dir);
    assert_eq!(env["MANTA_USER"], "regiontest");
    let c = client(&dir, &home).await;
    c.mkdir("~~/stor/kept").await.unwrap();
    c.put_bytes("~~/stor/kept/obj", "survives restarts", Default::default())
        .await
        .unwrap();

    let (ok, text) = adm(&dir, &home, &["down"]);
    assert!(ok, "{text}");
    for s in status(&dir, &home)["services"].as_array().unwrap() {
        assert_eq!(s["state"], "stopped");
    }

    let (ok, text) = adm(&dir, &home, &["up"]);
    assert!(ok, "second up failed:\n{text}");
    assert_eq!(
        env_sh(&dir)["MANTA_URL"],
        env["MANTA_URL"],
        "the region moved to a new port"
    );
    let c = client(&dir, &home).await;
    assert_eq!(
        c.get_bytes("~~/stor/kept/obj").await.unwrap(),
        "survives restarts"
    );
}
