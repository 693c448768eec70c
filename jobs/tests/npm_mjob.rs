//! The real npm `manta` client's `mjob` (5.4.2) against the jobs API: create with inputs on
//! stdin, watch and print the outputs (`-o`), then `get`, `list`, `inputs`, `outputs`,
//! `errors`, `failures`.
//!
//! Needs node and the npm package, which `./run-tests` installs into `target/node-manta`
//! (`MANTA_NODE_CLIENT` may point at another `node_modules/manta`).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::Env;

fn npm_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("MANTA_NODE_CLIENT").map(PathBuf::from),
        Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/node-manta/node_modules/manta"),
        ),
        Some(PathBuf::from("/tmp/npmmanta/node_modules/manta")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("bin/mjob").exists())
        .expect(
            "the manta npm client is not installed: run ./run-tests, which installs manta@5.4.2 \
             into target/node-manta (or set MANTA_NODE_CLIENT to its node_modules/manta)",
        )
}

fn mjob(env: &Env, npm: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut cmd = Command::new("node");
    cmd.arg(npm.join("bin/mjob")).args(args);
    let mut vars = env.region.cli_env(&env.region.account);
    // node-manta would try to reach an agent at an empty SSH_AUTH_SOCK; the key is a file.
    vars.retain(|(k, _)| k != "SSH_AUTH_SOCK");
    for (k, v) in vars.iter_mut() {
        if k == "MANTA_URL" {
            *v = env.url.clone();
        }
    }
    cmd.env_remove("SSH_AUTH_SOCK")
        .envs(vars)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_mjob_client_runs_a_job() {
    let npm = npm_dir();
    let env = Env::start().await.unwrap();
    let ins = env
        .upload(
            "npm",
            (0..5)
                .map(|i| (format!("n{i}"), "a b c\n".repeat(i + 1)))
                .collect(),
        )
        .await
        .unwrap();
    let stdin = ins.join("\n") + "\n";
    let env2 = std::sync::Arc::new(env);
    let e = env2.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        mjob(
            &e,
            &npm,
            &[
                "create",
                "-o",
                "-m",
                "wc -w",
                "-r",
                "awk '{s+=$1} END {print s}'",
            ],
            &stdin,
        )
    })
    .await
    .unwrap();
    assert!(ok, "mjob create failed: {out}\n{err}");
    // 3 words per line, 1+2+3+4+5 lines.
    assert_eq!(out.trim(), "45", "stderr: {err}");

    let jobs = env2.client.list_jobs(None, None).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let id = jobs[0].0.clone();
    let npm = npm_dir();
    let run = |args: Vec<String>| {
        let e = env2.clone();
        let npm = npm.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                mjob(&e, &npm, &a, "")
            })
            .await
            .unwrap()
        }
    };
    let (ok, out, err) = run(vec!["get".into(), id.clone()]).await;
    assert!(ok, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["state"], "done");
    assert_eq!(st["stats"]["tasks"], 6);

    let (ok, out, err) = run(vec!["list".into()]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("{id}/"));

    let (ok, out, err) = run(vec!["inputs".into(), id.clone()]).await;
    assert!(ok, "{err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    assert_eq!(got, ins.iter().map(String::as_str).collect::<Vec<_>>());

    let (ok, out, err) = run(vec!["outputs".into(), id.clone()]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains("/reduce.1."), "{out}");

    let (ok, out, err) = run(vec!["errors".into(), id.clone()]).await;
    assert!(ok && out.trim().is_empty(), "{out} {err}");
    let (ok, out, err) = run(vec!["failures".into(), id.clone()]).await;
    assert!(ok && out.trim().is_empty(), "{out} {err}");
    drop(env2);
}
