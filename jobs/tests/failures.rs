//! Cancel, user failures (never retried, stderr and core files saved), init failures, and
//! infrastructure failures: an agent or the supervisor killed mid-job, and the job still
//! finishes with the right output.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Env, Options, job};

async fn inputs(env: &Env, dir: &str, n: usize) -> Vec<String> {
    let objects = (0..n)
        .map(|i| (format!("o{i:02}"), "w ".repeat(i + 1) + "\n"))
        .collect();
    env.upload(dir, objects).await.unwrap()
}

/// Map outputs `<words>` per input; the sum over inputs 0..n is n(n+1)/2.
fn check_counts(outs: &[String], n: usize) {
    let mut got: Vec<u64> = outs.iter().map(|o| o.trim().parse().unwrap()).collect();
    got.sort_unstable();
    let want: Vec<u64> = (1..=n as u64).collect();
    assert_eq!(got, want);
}

async fn wait_running_tasks(env: &Env, id: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = env.client.job_status(id).await.unwrap();
        if st["stats"]["tasks"].as_u64().unwrap_or(0) >= n {
            return;
        }
        assert!(Instant::now() < deadline, "tasks never started: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_user_errors_and_init_errors() {
    let env = Env::start().await.unwrap();
    let ins = inputs(&env, "c", 3).await;

    // Cancel: long tasks stop, the job ends with no outputs, no container is left.
    let id = env
        .submit(job(&[("map", "sleep 600")]), &ins)
        .await
        .unwrap();
    wait_running_tasks(&env, &id, 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    env.client.cancel_job(&id).await.unwrap();
    let st = env.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert_eq!(st["cancelled"], true);
    assert!(env.client.job_outputs(&id).await.unwrap().is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        loop {
            if env.containers(i).is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "agent {i} still runs a cancelled task"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A cancelled job takes no more input.
    let e = env
        .client
        .add_job_inputs(&id, &ins, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("InvalidJobState"), "{e}");

    // A user failure: reported once per input with its stderr, never retried.
    let id = env
        .submit(job(&[("map", "echo oops-$RANDOM >&2; exit 3")]), &ins)
        .await
        .unwrap();
    let st = env.wait(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(st["stats"]["errors"], 3);
    assert_eq!(st["stats"]["tasks"], 3, "user failures are not retried");
    assert_eq!(st["stats"]["retries"], 0);
    let errs = env.client.job_errors(&id).await.unwrap();
    for e in &errs {
        assert_eq!(e["code"], "UserTaskError");
        assert!(e["message"].as_str().unwrap().contains("code 3"), "{e}");
        let stderr = env.text(e["stderr"].as_str().unwrap()).await.unwrap();
        assert!(stderr.starts_with("oops-"), "{stderr}");
    }
    let mut failed = env.client.job_failures(&id).await.unwrap();
    failed.sort();
    assert_eq!(failed, ins);

    // A task that dumps core: the core is saved under the job's `stor/cores/<phase>/`, named in
    // its error, and is the crashed program's core (an ELF file).
    let id = env
        .submit(job(&[("map", "kill -SEGV $$")]), &ins[..1])
        .await
        .unwrap();
    env.wait(&id, Duration::from_secs(60)).await.unwrap();
    let errs = env.client.job_errors(&id).await.unwrap();
    assert_eq!(errs.len(), 1, "{errs:?}");
    let core = errs[0]["core"]
        .as_str()
        .unwrap_or_else(|| panic!("no core in {errs:?}"));
    assert!(
        core.starts_with(&format!(
            "/{}/jobs/{id}/stor/cores/0/",
            env.region.account.login
        )),
        "{core}"
    );
    assert!(
        errs[0]["message"].as_str().unwrap().contains(core),
        "{errs:?}"
    );
    let bytes = env.client.get_bytes(core).await.unwrap();
    assert!(bytes.starts_with(b"\x7fELF"), "{} bytes", bytes.len());

    // Init failure, a missing input, and an input that is a directory.
    let j = serde_json::json!({"phases": [{"exec": "wc -w", "init": "exit 7"}]});
    let id = env.submit(j, &ins[..1]).await.unwrap();
    env.wait(&id, Duration::from_secs(60)).await.unwrap();
    let errs = env.client.job_errors(&id).await.unwrap();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0]["code"], "TaskInitError", "{errs:?}");
    let login = &env.region.account.login;
    let missing = vec![format!("/{login}/stor/c/nope"), format!("/{login}/stor/c")];
    let id = env
        .submit(job(&[("map", "wc -w")]), &missing)
        .await
        .unwrap();
    env.wait(&id, Duration::from_secs(60)).await.unwrap();
    let mut codes: Vec<String> = env
        .client
        .job_errors(&id)
        .await
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap().to_owned())
        .collect();
    codes.sort();
    assert_eq!(codes, vec!["InvalidArgumentError", "ResourceNotFoundError"]);

    // Bad jobs are refused with a reason and nothing is created.
    let before = env.client.list_jobs(None, None).await.unwrap().len();
    let e = env
        .client
        .create_job(&serde_json::json!({"phases": [{"type": "map"}]}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("InvalidJob"), "{e}");
    assert_eq!(
        env.client.list_jobs(None, None).await.unwrap().len(),
        before
    );
    assert!(
        env.client
            .job_status("00000000-0000-4000-8000-000000000000")
            .await
            .unwrap_err()
            .to_string()
            .contains("JobNotFound")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_agent_mid_job_still_finishes_correctly() {
    let mut env = Env::start().await.unwrap();
    let n = 24;
    let ins = inputs(&env, "k", n).await;
    let id = env
        .submit(job(&[("map", "sleep 1; wc -w | tr -d ' '")]), &ins)
        .await
        .unwrap();
    wait_running_tasks(&env, &id, 6).await;
    env.kill_agent(0);
    let st = env.wait(&id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(
        st["stats"]["errors"],
        0,
        "{:?}",
        env.client.job_errors(&id).await
    );
    check_counts(&env.output_text(&id).await.unwrap(), n);
    assert!(
        st["stats"]["retries"].as_u64().unwrap() >= 1,
        "tasks of the killed agent ran elsewhere: {st}"
    );
    // A restarted agent cleans up what its predecessor left.
    env.spawn_agent(0).await.unwrap();
    let id = env
        .submit(job(&[("map", "wc -w | tr -d ' '")]), &ins[..3])
        .await
        .unwrap();
    env.wait(&id, Duration::from_secs(60)).await.unwrap();
    check_counts(&env.output_text(&id).await.unwrap(), 3);
    // An agent whose OCI runtime cannot start containers here says so at start, instead of
    // claiming tasks only to lose them.
    env.kill_agent(1);
    env.agent_args = vec!["--runtime".into(), "/bin/false".into()];
    let e = env.spawn_agent(1).await.unwrap_err();
    let log = env.log("agent1");
    assert!(
        log.contains("the OCI runtime /bin/false cannot start a task's container here"),
        "{e:#}\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_supervisor_mid_job_still_finishes_correctly() {
    let mut env = Env::start_with(Options::default()).await.unwrap();
    env.spawn_supervisor().unwrap(); // a standby
    let n = 16;
    let ins = inputs(&env, "s", n).await;
    let mut j = job(&[("map", "sleep 1; wc -w | tr -d ' '"), ("reduce", "sort -n")]);
    j["phases"][1]["count"] = 1.into();
    let id = env.submit(j, &ins).await.unwrap();
    wait_running_tasks(&env, &id, 4).await;
    // Kill whichever leads; the standby takes over.
    let leader = (0..2)
        .find(|i| env.log(&format!("supervisor{i}")).contains("elected"))
        .expect("a supervisor leads");
    if let Some(mut s) = env.supervisors[leader].take() {
        s.kill();
    }
    let st = env.wait(&id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(st["stats"]["errors"], 0);
    let out = env.output_text(&id).await.unwrap();
    assert_eq!(out.len(), 1);
    let lines: Vec<String> = out[0].lines().map(str::to_owned).collect();
    check_counts(&lines, n);
    let standby = 1 - leader;
    assert!(
        env.log(&format!("supervisor{standby}")).contains("elected"),
        "the standby led"
    );
}
