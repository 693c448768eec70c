//! Containers reused across tasks: the tasks of one job and phase on one node share a container
//! one after another (so `/tmp` carries over between them, as in the original), a task never
//! sees another job's leftovers, and a task that fails (here, at its memory limit) ends its
//! container, so the next task starts fresh.
//!
//! Each check adds one input at a time to a job whose input is open and waits for its task, so
//! the order is known. The same input object always goes to the same node (the supervisor
//! picks among its copies by its name), so consecutive tasks meet the same agent.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::Env;
use serde_json::json;

/// Each task prints how many tasks ran before it in its container (as counted in `/tmp`),
/// whatever an earlier job left there and how many `sleep` processes it sees, leaves one running,
/// and, as the third task of a container, uses more memory than its phase has.
const COUNTING: &str = "n=$(cat /tmp/count 2>/dev/null || echo 0); echo $((n+1)) > /tmp/count; \
     echo \"count=$n left=$(cat /tmp/left 2>/dev/null) sleeps=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$')\"; \
     echo \"$MANTA_JOB_ID\" > /tmp/left; \
     (sleep 300 &); \
     if [ \"$n\" = 2 ]; then head -c 400000000 /dev/zero | tail > /dev/null; fi";

/// Creates a job of one map phase running [`COUNTING`] with 128 MB of memory, input open.
async fn counting_job(env: &Env) -> String {
    env.client
        .create_job(&json!({
            "name": "reuse",
            "phases": [{"type": "map", "exec": COUNTING, "memory": 128}]
        }))
        .await
        .unwrap()
}

/// Adds `input` to job `id` and waits until `done` of its tasks have ended; gives the new
/// task's output (`None` when it failed). `seen` holds the job's outputs handed back before.
async fn one_more(
    env: &Env,
    id: &str,
    input: &str,
    done: u64,
    seen: &mut HashSet<String>,
) -> Option<String> {
    env.client
        .add_job_inputs(id, &[input.to_owned()], false)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let outs = env.client.job_outputs(id).await.unwrap();
        let errors = env.client.job_errors(id).await.unwrap().len();
        if outs.len() + errors >= done as usize {
            let new: Vec<String> = outs
                .into_iter()
                .filter(|o| seen.insert(o.clone()))
                .collect();
            assert!(new.len() <= 1, "one task, one output: {new:?}");
            return match new.first() {
                Some(o) => Some(env.text(o).await.unwrap()),
                None => None,
            };
        }
        let st = env.client.job_status(id).await.unwrap();
        assert!(
            Instant::now() < deadline,
            "task {done} of {id} never ended: {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(name).and_then(|w| w.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name} in {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_serves_one_job_and_phase_and_ends_at_a_failure() {
    let env = Env::start().await.unwrap();
    // One input throughout: the same node runs every task.
    let ins = env
        .upload("reuse", vec![("in".into(), "in\n".into())])
        .await
        .unwrap();
    let input = &ins[0];

    // Job A: its second task runs in the first one's container and finds its `/tmp`, but
    // nothing the first one left running.
    let a = counting_job(&env).await;
    let mut seen_a = HashSet::new();
    let first = one_more(&env, &a, input, 1, &mut seen_a).await.unwrap();
    assert_eq!(field(&first, "count"), "0", "{first}");
    let second = one_more(&env, &a, input, 2, &mut seen_a).await.unwrap();
    assert_eq!(field(&second, "count"), "1", "reused: {second}");
    assert_eq!(field(&second, "left"), a, "{second}");
    // (Counting all processes raced with the counting pipeline's own; sleeps are only ever
    // left by an earlier task.)
    assert_eq!(field(&first, "sleeps"), "0", "{first}");
    assert_eq!(
        field(&second, "sleeps"),
        "0",
        "the first task's background sleep was ended: {first} / {second}"
    );

    // Job B, same node, same phase number, while A's container waits: a fresh container,
    // with nothing of A's in `/tmp`.
    let b = counting_job(&env).await;
    let other = one_more(&env, &b, input, 1, &mut HashSet::new())
        .await
        .unwrap();
    assert_eq!(field(&other, "count"), "0", "{other}");
    assert_eq!(
        field(&other, "left"),
        "",
        "job A's /tmp reached job B: {other}"
    );

    // Back in A: its container's third task runs out of memory and fails, and the next task
    // gets a fresh container (no `/tmp` from before).
    assert_eq!(one_more(&env, &a, input, 3, &mut seen_a).await, None);
    let errs = env.client.job_errors(&a).await.unwrap();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]["message"].as_str().unwrap().contains("memory"),
        "{errs:?}"
    );
    let after = one_more(&env, &a, input, 4, &mut seen_a).await.unwrap();
    assert_eq!(
        field(&after, "count"),
        "0",
        "fresh after the failure: {after}"
    );

    for id in [&a, &b] {
        env.client.end_job_input(id).await.unwrap();
        let st = env.wait(id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(st["state"], "done", "{st}");
    }
}
