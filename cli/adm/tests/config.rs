//! The region config and what is made from it without running it: `region init` for three
//! hosts, the systemd units `host install` writes for each (checked by `systemd-analyze
//! verify`), and `region add`/`retire` changing the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn adm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_manta-adm"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run manta-adm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn init(dir: &Path) -> String {
    let out = dir.join("region");
    let (ok, text) = adm(&[
        "region",
        "init",
        "--out",
        out.to_str().unwrap(),
        "--host",
        "h1=10.77.0.1",
        "--host",
        "h2=10.77.0.2",
        "--host",
        "h3=10.77.0.3",
        "--state-dir",
        dir.join("state").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    out.join("region.toml").display().to_string()
}

/// Writes `host`'s systemd units for `config` into `units`.
fn install_units(config: &str, host: &str, units: &Path) {
    let (ok, text) = adm(&[
        "host",
        "install",
        "--config",
        config,
        "--host",
        host,
        "--unit-dir",
        units.to_str().unwrap(),
        "--units-only",
    ]);
    assert!(ok, "{text}");
}

#[test]
fn the_units_of_every_host_pass_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let config = init(tmp.path());
    for host in ["h1", "h2", "h3"] {
        let units = tmp.path().join(format!("units-{host}"));
        install_units(&config, host, &units);
        let mut files: Vec<_> = std::fs::read_dir(&units)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"manta.target".to_owned()), "{names:?}");
        assert!(
            names.contains(&format!("manta-storage{}.service", &host[1..])),
            "{names:?}"
        );
        // Only the host of the first Moray makes the metadata ready.
        assert_eq!(
            names.contains(&"manta-bootstrap.service".to_owned()),
            host == "h1",
            "{names:?}"
        );
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .args(&files)
            .output()
            .expect("run systemd-analyze (Debian package systemd)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify on {host}'s units:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let storage =
            std::fs::read_to_string(units.join(format!("manta-storage{}.service", &host[1..])))
                .unwrap();
        assert!(storage.contains("Restart=always"), "{storage}");
        assert!(
            storage.contains("After=network-online.target manta-etcd"),
            "ordered after the services before it: {storage}"
        );
    }
}

#[test]
fn a_storage_node_added_and_retired_changes_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let config = init(tmp.path());
    let (ok, text) = adm(&[
        "region", "add", "--config", &config, "--kind", "storage", "--host", "h2",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("added storage4 on h2"), "{text}");
    let pki = Path::new(&config).with_file_name("pki").join("storage4");
    assert!(pki.join("cert.pem").exists(), "its identity was issued");
    let (ok, text) = adm(&["region", "retire", "--config", &config, "storage4"]);
    assert!(ok, "{text}");
    let cfg = std::fs::read_to_string(&config).unwrap();
    assert!(cfg.contains("name = \"storage4\""), "{cfg}");
    assert!(cfg.contains("retired = true"), "{cfg}");

    // What cannot be done is refused, saying why.
    let (ok, text) = adm(&["region", "retire", "--config", &config, "etcd1"]);
    assert!(!ok && text.contains("cannot be retired"), "{text}");
    let (ok, text) = adm(&[
        "region", "add", "--config", &config, "--kind", "storage", "--host", "h9",
    ]);
    assert!(!ok && text.contains("no host h9"), "{text}");
    std::fs::write(&config, cfg.replace("port = 7070", "port = 2379")).unwrap();
    let (ok, text) = adm(&["status", "--config", &config]);
    assert!(!ok && text.contains("already uses"), "{text}");
}

#[test]
fn the_configs_limits_reach_the_services_that_apply_them() {
    let tmp = tempfile::tempdir().unwrap();
    let config = init(tmp.path());
    let mut cfg = std::fs::read_to_string(&config).unwrap();
    cfg.push_str(
        "\n[limits]\nconcurrent_requests = 9\nbuckets = 8\njobs = 5\ntasks = 7\ntask_output = \"1GiB\"\n",
    );
    std::fs::write(&config, &cfg).unwrap();
    let units = tmp.path().join("units");
    install_units(&config, "h1", &units);
    let unit = |name: &str| std::fs::read_to_string(units.join(name)).unwrap();
    let fd = unit("manta-frontdoor1.service");
    for want in [
        "--account-max-concurrency 9",
        "--account-max-buckets 8",
        "--account-max-jobs 5",
    ] {
        assert!(fd.contains(want), "{want}: {fd}");
    }
    let sup = unit("manta-jobs-supervisor1.service");
    assert!(sup.contains("--account-max-tasks 7"), "{sup}");
    let agent = unit("manta-jobs-agent1.service");
    assert!(agent.contains("--max-task-output 1GiB"), "{agent}");

    // A limit that does not parse is refused, naming it.
    std::fs::write(&config, cfg.replace("\"1GiB\"", "\"lots\"")).unwrap();
    let (ok, text) = adm(&["status", "--config", &config]);
    assert!(!ok && text.contains("task_output"), "{text}");
}
