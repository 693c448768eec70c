//! What a task cannot do: read another account's objects or another task's files, reach any
//! network address, write the root file system, use more memory than its phase allows (it is
//! killed and the error reported), or fork past the pids limit. The node is unharmed: a normal
//! job runs fine afterwards on the same agents.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Env, Options};
use serde_json::json;

/// Submits a one-phase map job of `exec` over `input`, the phase's other fields (`memory`,
/// `disk`) from `limits`.
async fn one(env: &Env, exec: &str, input: &str, limits: &serde_json::Value) -> String {
    let mut phase = json!({"type": "map", "exec": exec});
    for (k, v) in limits.as_object().into_iter().flatten() {
        phase[k] = v.clone();
    }
    let job = serde_json::json!({"name": "iso", "phases": [phase]});
    env.submit(job, &[input.to_owned()]).await.unwrap()
}

/// A jobs region whose agents limit each task to 48 processes and 16 MiB of outputs, and the
/// object `~~/stor/iso/in.txt` (`one two three`) the checks' jobs take as input.
async fn start() -> (Env, String) {
    let env = Env::start_with(Options {
        agent_args: vec![
            "--pids-limit".into(),
            "48".into(),
            "--max-task-output".into(),
            "16MiB".into(),
        ],
        ..Options::default()
    })
    .await
    .unwrap();
    let input = env
        .upload("iso", vec![("in.txt".into(), "one two three\n".into())])
        .await
        .unwrap()
        .remove(0);
    (env, input)
}

/// What one check's job gave.
struct Ran {
    id: String,
    status: serde_json::Value,
    out: String,
    errs: Vec<serde_json::Value>,
}

/// Submits one job a check (name, the phase's `exec`, its other fields) all at once, then
/// waits for each and collects what it gave, by name.
async fn run_checks(
    env: &Env,
    input: &str,
    checks: &[(&'static str, String, serde_json::Value)],
) -> HashMap<&'static str, Ran> {
    let mut ids = Vec::new();
    for (name, exec, mem) in checks {
        ids.push((*name, one(env, exec, input, mem).await));
    }
    let mut results = HashMap::new();
    for (name, id) in ids {
        let status = env.wait(&id, Duration::from_secs(120)).await.unwrap();
        let out = env.output_text(&id).await.unwrap().join("");
        let errs = env.client.job_errors(&id).await.unwrap();
        results.insert(
            name,
            Ran {
                id,
                status,
                out,
                errs,
            },
        );
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_isolated() {
    let (env, input) = start().await;
    let login = env.region.account.login.clone();

    // Another account with a private object.
    let other = env.region.add_account("other").await.unwrap();
    let oc = env.region.client(&other).await.unwrap();
    oc.put_bytes("~~/stor/secret.txt", "TOP SECRET\n", Default::default())
        .await
        .unwrap();
    let fd_port = env.region.url.rsplit(':').next().unwrap().to_owned();
    let agent_dir = env.agent_work_dir(0).display().to_string();
    let store_dir = env.region.storage[0].data.display().to_string();

    let checks = [
        (
            "other-account",
            "mget /other/stor/secret.txt; echo rc=$?; mget /$MANTA_USER/stor/iso/in.txt".to_owned(),
            json!({}),
        ),
        (
            // Every other way at the other account's data from inside a task, through the
            // task's socket with the job's token: read, list, write, delete, metadata,
            // SnapLink, an output by reference (a copy), an output into its tree.
            "other-account-matrix",
            [
                "c() { printf '%s=%s ' \"$1\" \"$(shift; curl -s -o /dev/null -w '%{http_code}' --unix-socket /manta-agent/sock \"$@\")\"; }",
                "o=http://task/other/stor/secret.txt",
                "c read $o",
                "c list http://task/other/stor",
                "c write -X PUT --data-binary x http://task/other/stor/planted",
                "c delete -X DELETE $o",
                "c metadata -X PUT -H 'content-type: text/x' \"$o?metadata=true\"",
                "c snaplink -X PUT -H 'content-type: application/json; type=link' -H 'location: /other/stor/secret.txt' http://task/$MANTA_USER/stor/stolen",
                "mcat /other/stor/secret.txt 2>/dev/null; printf 'reference=%s ' $?",
                "echo x | mpipe /other/stor/planted 2>/dev/null; printf 'output=%s ' $?",
            ]
            .join("; "),
            json!({}),
        ),
        (
            "files",
            format!(
                "find -L /manta -type f; test -e {agent_dir} && echo SEES-AGENT; test -e {store_dir} && echo SEES-STORE; ls /manta-agent; echo done"
            ),
            json!({}),
        ),
        (
            "network",
            format!(
                "(exec 3<>/dev/tcp/127.0.0.1/{fd_port}) 2>/dev/null && echo CONNECTED || echo BLOCKED; grep -c : /proc/net/dev"
            ),
            json!({}),
        ),
        (
            // A task holds its job's token: with it, the jobs API must refuse to list, read
            // or create jobs (a job creating jobs, each with a fresh token, has no bound).
            "jobs-api",
            "for m in POST GET; do curl -s -o /dev/null -w \"$m=%{http_code} \" --unix-socket /manta-agent/sock -X $m -H 'content-type: application/json' -d '{\"phases\":[{\"exec\":\"true\"}]}' http://task/$MANTA_USER/jobs; done; curl -s --unix-socket /manta-agent/sock http://task/$MANTA_USER/stor/iso/in.txt".to_owned(),
            json!({}),
        ),
        (
            // Outputs go where the owner may write, and replace objects only: not under
            // /reports, not into another job's tree, not over a directory (whose entries would
            // be orphaned).
            "outputs",
            "for t in reports/evil stor/iso jobs/00000000-0000-0000-0000-000000000000/stor/x; do echo evil | mpipe /$MANTA_USER/$t 2>/dev/null; printf '%s=%s ' $t $?; done | mpipe ~~/stor/iso-out/codes".to_owned(),
            json!({}),
        ),
        (
            // The seccomp allowlist: a user namespace by unshare or by clone, and io_uring,
            // are refused with EPERM (each works on the host, as root or not); an ordinary
            // fork still works.
            "syscalls",
            r#"perl -e 'my $p = "\0" x 120; my $r = syscall(425, 1, $p); print "uring=$r/", $!+0, " "; $r = syscall(272, 0x10000000); print "unshare=$r/", $!+0, " "; $r = syscall(56, 0x10000000 | 17, 0, 0, 0, 0); exit 0 if $r == 0; print "clone=$r/", $!+0, " "; my $pid = fork(); exit 0 if $pid == 0; waitpid($pid, 0); print "fork=", ($pid > 0 ? "ok" : "failed"), "\n"'"#.to_owned(),
            json!({}),
        ),
        (
            "rootfs",
            "for f in /x /usr/x /etc/x /bin/x; do touch $f 2>/dev/null && echo WROTE $f; done; echo hi > /tmp/ok && cat /tmp/ok; id -u".to_owned(),
            json!({}),
        ),
    ];
    let results = run_checks(&env, &input, &checks).await;

    let Ran { out, errs, .. } = &results["other-account"];
    assert!(errs.is_empty(), "{errs:?}");
    assert!(!out.contains("TOP SECRET"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(
        out.contains("one two three"),
        "own objects stay readable: {out}"
    );

    let out = &results["other-account-matrix"].out;
    let tried: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(tried.len(), 8, "{out}");
    for t in &tried {
        let (what, code) = t.split_once('=').unwrap();
        match what {
            "reference" | "output" => assert_ne!(code, "0", "{out}"),
            _ => assert!(code == "403" || code == "404", "{what}: {out}"),
        }
    }
    let kept = oc.get_bytes("~~/stor/secret.txt").await.unwrap();
    assert_eq!(kept, "TOP SECRET\n".as_bytes());
    assert_eq!(oc.ls_all("~~/stor").await.unwrap().len(), 1);
    assert!(env.client.info("~~/stor/stolen").await.is_err());

    // The other account's object as a job input: an error, nothing of it read.
    let id = env
        .submit(
            json!({"phases": [{"type": "map", "exec": "cat"}]}),
            &["/other/stor/secret.txt".to_owned()],
        )
        .await
        .unwrap();
    env.wait(&id, Duration::from_secs(120)).await.unwrap();
    let errs = env.client.job_errors(&id).await.unwrap();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(env.output_text(&id).await.unwrap().is_empty());

    let out = &results["files"].out;
    let files: Vec<&str> = out.lines().filter(|l| l.starts_with("/manta/")).collect();
    assert_eq!(
        files,
        vec![format!("/manta/{login}/stor/iso/in.txt")],
        "{out}"
    );
    assert!(!out.contains("SEES-"), "{out}");
    assert!(out.contains("sock"), "{out}");

    let out = &results["network"].out;
    assert!(out.contains("BLOCKED"), "{out}");
    // /proc/net/dev: two header lines without a colon-terminated name, one line for `lo`.
    assert_eq!(out.lines().nth(1), Some("1"), "only lo: {out}");

    let out = &results["jobs-api"].out;
    assert!(out.contains("POST=403 GET=403"), "{out}");
    assert!(
        out.contains("one two three"),
        "the token still reads the owner's objects: {out}"
    );
    let jobs = env.client.list_jobs(None, None).await.unwrap();
    assert_eq!(
        jobs.len(),
        checks.len() + 1,
        "no job was made from a task (one job per check, and the job of another's input): {jobs:?}"
    );

    let Ran { errs, .. } = &results["outputs"];
    assert!(errs.is_empty(), "{errs:?}");
    let codes = env.client.get_bytes("~~/stor/iso-out/codes").await.unwrap();
    let codes = String::from_utf8_lossy(&codes);
    for t in ["reports/evil", "stor/iso", "jobs/"] {
        let code = codes
            .split_whitespace()
            .find(|c| c.starts_with(t))
            .unwrap_or_else(|| panic!("{t} in {codes}"));
        assert!(!code.ends_with("=0"), "mpipe to {t} worked: {codes}");
    }
    let listed = env.client.ls_all("~~/stor/iso").await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the directory and its entry stay: {listed:?}"
    );
    assert!(
        env.client
            .info(&format!("/{login}/reports/evil"))
            .await
            .is_err()
    );

    let out = &results["syscalls"].out;
    assert!(
        out.contains("uring=-1/1 unshare=-1/1 clone=-1/1 fork=ok"),
        "{out}"
    );

    let out = &results["rootfs"].out;
    assert!(!out.contains("WROTE"), "{out}");
    assert!(out.contains("hi"), "{out}");
    assert_eq!(
        out.lines().last(),
        Some("0"),
        "root inside, mapped outside: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_limited_and_the_node_is_unharmed() {
    let (env, input) = start().await;
    let checks = [
        ("memory", "head -c 400000000 /dev/zero | tail > /dev/null; echo survived".to_owned(), json!({"memory": 128})),
        (
            // 20 GB to stdout (a file on the node's disk) with a 2 GB disk: stopped at 1 GB.
            "disk",
            "head -c 20G /dev/zero; echo never".to_owned(),
            json!({"disk": 2}),
        ),
        (
            // 40 MB through mpipe where a task may emit 16 MB: refused, nothing committed.
            "emit",
            "head -c 40M /dev/zero | mpipe ~~/stor/iso-big; echo rc=$?".to_owned(),
            json!({}),
        ),
        (
            "forkbomb",
            "b() { b | b & }; (b) 2>/dev/null; read -t 3 x < /dev/zero 2>/dev/null; read c < /sys/fs/cgroup/pids/pids.current; read m < /sys/fs/cgroup/pids/pids.max; echo pids=$c max=$m".to_owned(),
            json!({}),
        ),
    ];
    // The free space of the disk the agents work on, sampled while the checks run.
    let work = env.agent_work_dir(0);
    let before = free_bytes(&work);
    let lowest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = {
        let (work, lowest) = (work.clone(), lowest.clone());
        tokio::spawn(async move {
            loop {
                let now = tokio::task::spawn_blocking({
                    let work = work.clone();
                    move || free_bytes(&work)
                })
                .await
                .unwrap();
                lowest.fetch_min(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let results = run_checks(&env, &input, &checks).await;
    sampling.abort();
    // The 20 GB went no further than the phase's 2 GB disk allows (with 1 GB to spare for
    // whatever else the machine writes meanwhile).
    let dropped = before.saturating_sub(lowest.load(std::sync::atomic::Ordering::SeqCst));
    assert!(
        dropped <= 3 << 30,
        "the node's free space dropped by {} MB",
        dropped >> 20
    );

    let Ran {
        id,
        status,
        out,
        errs,
    } = &results["memory"];
    assert_eq!(status["stats"]["errors"], 1, "{status}");
    assert!(
        out.is_empty(),
        "a failed task's stdout is not an output: {out}"
    );
    assert_eq!(errs[0]["code"], "UserTaskError");
    assert!(
        errs[0]["message"].as_str().unwrap().contains("memory"),
        "{errs:?}"
    );
    let stderr_path = errs[0]["stderr"].as_str().unwrap();
    assert!(stderr_path.contains(".0.err."), "{stderr_path}");
    assert_eq!(
        env.client.job_failures(id).await.unwrap(),
        vec![input.clone()]
    );

    let Ran { status, errs, .. } = &results["disk"];
    assert_eq!(status["stats"]["errors"], 1, "{status}");
    let message = errs[0]["message"].as_str().unwrap();
    assert!(
        message.contains("past the limit of 1024 MB") && message.contains("SIGXFSZ"),
        "{errs:?}"
    );

    let Ran { status, errs, .. } = &results["emit"];
    assert_eq!(status["stats"]["errors"], 1, "{status}");
    let message = errs[0]["message"].as_str().unwrap();
    assert!(message.contains("exceeded its limit of 16 MB"), "{errs:?}");
    assert!(
        env.client.info("~~/stor/iso-big").await.is_err(),
        "a cut output is not committed"
    );

    let Ran { out, errs, .. } = &results["forkbomb"];
    assert!(errs.is_empty(), "{errs:?}");
    let pids: u64 = out
        .split("pids=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(pids <= 48, "{out}");
    assert!(out.contains("max=48"), "{out}");

    // The node is unharmed: an ordinary job still runs on the same agents.
    let id = one(&env, "wc -w", &input, &json!({})).await;
    env.wait(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(env.output_text(&id).await.unwrap(), vec!["3\n".to_owned()]);
    // No container is left behind (an idle one is ended within seconds).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for i in 0..3 {
        loop {
            let left = env.containers(i);
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agent {i} left containers: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The control sockets of the containers running under `work_dir`
/// (`containers/<id>/ctl/sock`).
fn task_sockets(work_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(work_dir.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("ctl").join("sock"))
        .filter(|p| p.exists())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_control_socket_is_the_tasks_alone() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let (env, input) = start().await;
    let id = one(&env, "sleep 6; echo done", &input, &json!({})).await;
    // Find the running task's socket on whichever agent took it.
    let mut found = None;
    for _ in 0..200 {
        found = (0..env.region.storage.len())
            .find_map(|i| task_sockets(&env.agent_work_dir(i)).pop().map(|s| (i, s)));
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (agent, sock) = found.expect("a running task's control socket");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{}",
        sock.display()
    );
    let container_root = 100_000 + 65_536 * agent as u32;
    assert_eq!(meta.uid(), container_root, "owned by the container's root");
    // Another local user cannot connect to it (and so cannot act for the job's owner).
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
        ])
        .args(["-o", "/dev/null", "-w", "%{http_code}", "--unix-socket"])
        .arg(&sock)
        .arg("http://task/ping")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "nobody reached the task's socket: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The task itself still uses it: the job finishes with its output.
    let st = env.wait(&id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(st["state"], "done", "{st}");
    assert_eq!(env.output_text(&id).await.unwrap().join(""), "done\n");
}

/// Bytes free (to an unprivileged user) on the file system holding `dir` (`df`, coreutils).
fn free_bytes(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("df of {}: {:?}", dir.display(), out))
}

/// Waits for `id` (a job of the account `c` acts for) to be done; its status.
async fn wait_as(c: &manta_client::MantaClient, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let st = c.job_status(id).await.unwrap();
        if st["state"] == "done" {
            return st;
        }
        assert!(std::time::Instant::now() < deadline, "{id} not done: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The most intervals (`start end`, one a line per text) open at one instant.
fn most_at_once(texts: &[String]) -> usize {
    let mut edges: Vec<(u128, i32)> = Vec::new();
    for t in texts {
        let v: Vec<u128> = t
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(v.len(), 2, "{t}");
        edges.push((v[0], 1));
        edges.push((v[1], -1));
    }
    edges.sort_unstable_by_key(|&(at, d)| (at, d));
    let (mut open, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        most = most.max(open);
    }
    usize::try_from(most).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_at_its_job_task_and_output_limits_leaves_others_unharmed() {
    let (env, _) = start().await;
    let a = env.region.account.login.clone();
    let bee = env.region.add_account("bee").await.unwrap();
    let bc = env.region.client(&bee).await.unwrap();
    let b_input = "/bee/stor/b.txt".to_owned();
    bc.put_bytes(&b_input, "b\n", Default::default())
        .await
        .unwrap();
    let b_submit = |job: serde_json::Value| {
        let (bc, input) = (bc.clone(), b_input.clone());
        async move {
            let id = bc.create_job(&job).await.unwrap();
            bc.add_job_inputs(&id, &[input], true).await.unwrap();
            id
        }
    };
    testkit::process::run_ok(env.region.manta_adm().unwrap().args([
        "account",
        "set-limits",
        &a,
        "--jobs",
        "1",
        "--tasks",
        "2",
        "--task-output",
        "1KiB",
    ]));
    // The front door reads accounts again after its cache's 2 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // A's job of 6 inputs, each task 2 s long, runs at most 2 tasks at once (the region's
    // agents have 12 slots)...
    let inputs = env
        .upload(
            "quota",
            (0..6)
                .map(|i| (format!("{i}.txt"), format!("{i}\n")))
                .collect(),
        )
        .await
        .unwrap();
    let slow = json!({"phases": [{"type": "map", "exec": "date +%s%N; sleep 2; date +%s%N"}]});
    let id = env.submit(slow.clone(), &inputs).await.unwrap();
    // ...and it may have no second job running meanwhile.
    let second = env.client.create_job(&slow).await.unwrap_err();
    assert!(second.to_string().contains("ThrottledError"), "{second}");
    // B's job meanwhile is not held up behind A's.
    let bid = b_submit(json!({"phases": [{"type": "map", "exec": "echo bee"}]})).await;
    wait_as(&bc, &bid).await;
    let a_now = env.client.job_status(&id).await.unwrap();
    assert_eq!(a_now["state"], "running", "B's job waited for A's: {a_now}");
    env.wait(&id, Duration::from_secs(120)).await.unwrap();
    let texts = env.output_text(&id).await.unwrap();
    assert_eq!(texts.len(), 6, "{texts:?}");
    assert!(env.client.job_errors(&id).await.unwrap().is_empty());
    assert!(most_at_once(&texts) <= 2, "{texts:?}");

    // A task emitting more than A's 1 KiB of outputs fails with an error that says so, by
    // mpipe or by its stdout; the same job of B's is fine.
    let big = |how: &str| json!({"phases": [{"type": "map", "exec": format!("head -c 5000 /dev/zero {how}")}]});
    for how in ["| mpipe", ""] {
        let id = env.submit(big(how), &inputs[..1]).await.unwrap();
        env.wait(&id, Duration::from_secs(120)).await.unwrap();
        let errs = env.client.job_errors(&id).await.unwrap();
        assert_eq!(errs.len(), 1, "{how}: {errs:?}");
        assert!(
            errs[0]["message"].as_str().unwrap().contains("exceed"),
            "{how}: {errs:?}"
        );
        let bid = b_submit(big(how)).await;
        let st = wait_as(&bc, &bid).await;
        assert!(bc.job_errors(&bid).await.unwrap().is_empty(), "{how}: {st}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_sends_task_outputs_through_the_front_door() {
    // Agents that take their nodes as full: every output goes where the front door places it.
    let env = Env::start_with(Options {
        agent_args: vec!["--max-utilization-pct".into(), "0".into()],
        ..Options::default()
    })
    .await
    .unwrap();
    let input = env
        .upload("full", vec![("in.txt".into(), "words\n".into())])
        .await
        .unwrap();
    let piped = env
        .submit(
            json!({"phases": [{"type": "map", "exec": "tr a-z A-Z | mpipe ~~/stor/full-out/piped"}]}),
            &input,
        )
        .await
        .unwrap();
    let plain = env
        .submit(
            json!({"phases": [{"type": "map", "exec": "tr a-z A-Z"}]}),
            &input,
        )
        .await
        .unwrap();
    for id in [&piped, &plain] {
        env.wait(id, Duration::from_secs(120)).await.unwrap();
        let errs = env.client.job_errors(id).await.unwrap();
        assert!(errs.is_empty(), "{errs:?}");
        let outs = env.client.job_outputs(id).await.unwrap();
        assert_eq!(outs.len(), 1, "{outs:?}");
        assert_eq!(env.text(&outs[0]).await.unwrap(), "WORDS\n");
        // An output an agent stores itself has one copy, on its own node; these have the
        // front door's two.
        let info = env.client.info(&outs[0]).await.unwrap();
        assert_eq!(info.header("durability-level"), Some("2"), "{info:?}");
    }
}
