//! What a task's environment offers: the store at `MANTA_URL` (for `curl` and the npm tools,
//! as the job's owner and through the agent only), inputs the owner may read in other
//! accounts (their `public`), and phases run in an OCI image of the user's.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::Env;
use serde_json::json;

/// Runs a one-phase map job of `phase` over `inputs`; its outputs' text and its errors.
async fn run(
    env: &Env,
    phase: serde_json::Value,
    inputs: &[String],
) -> (String, Vec<serde_json::Value>) {
    let id = env
        .submit(json!({"phases": [phase]}), inputs)
        .await
        .unwrap();
    env.wait(&id, Duration::from_secs(120)).await.unwrap();
    let out = env.output_text(&id).await.unwrap().join("");
    (out, env.client.job_errors(&id).await.unwrap())
}

/// The npm client's `node_modules`, when installed (`./run-tests` installs it).
fn node_modules() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/node-manta/node_modules");
    d.join("manta/bin/mls").exists().then_some(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_answers_at_manta_url_inside_a_task_and_nothing_else_does() {
    let env = Env::start().await.unwrap();
    let login = env.region.account.login.clone();
    let input = env
        .upload("env", vec![("in.txt".into(), "one two three\n".into())])
        .await
        .unwrap()
        .remove(0);
    let other = env.region.add_account("other").await.unwrap();
    let oc = env.region.client(&other).await.unwrap();
    oc.put_bytes("~~/stor/secret.txt", "TOP SECRET\n", Default::default())
        .await
        .unwrap();

    // curl at MANTA_URL reads and writes as the owner, is refused another account's private
    // objects, and no other address answers (192.0.2.1 is a documentation address; the task's
    // namespace has no route at all, so nothing leaves it).
    let exec = [
        "echo url=$MANTA_URL",
        "curl -sf $MANTA_URL/$MANTA_USER/stor/env/in.txt",
        "curl -sf -X PUT --data-binary written -H 'content-type: text/plain' $MANTA_URL/$MANTA_USER/stor/env/from-task.txt; echo put=$?",
        "printf 'secret=%s\\n' $(curl -s -o /dev/null -w '%{http_code}' $MANTA_URL/other/stor/secret.txt)",
        "curl -s -m 3 -o /dev/null http://192.0.2.1/; echo elsewhere=$?",
    ]
    .join("; ");
    let (out, errs) = run(&env, json!({"exec": exec}), std::slice::from_ref(&input)).await;
    assert!(errs.is_empty(), "{errs:?}");
    assert!(out.contains("url=http://127.0.0.1:80\n"), "{out}");
    assert!(out.contains("one two three\n"), "{out}");
    assert!(out.contains("put=0\n"), "{out}");
    assert!(out.contains("secret=403\n"), "{out}");
    assert!(!out.contains("elsewhere=0"), "{out}");
    assert_eq!(
        env.text(&format!("/{login}/stor/env/from-task.txt"))
            .await
            .unwrap(),
        "written"
    );

    // The npm client, unpacked from an asset, lists the owner's directory with no key.
    match node_modules() {
        None => eprintln!(
            "SKIPPED the npm mls inside a task: target/node-manta is not installed (./run-tests \
             installs it)"
        ),
        Some(nm) => {
            let tar = env.dir.path().join("node-manta.tar");
            let st = std::process::Command::new("tar")
                .arg("-C")
                .arg(nm.parent().unwrap())
                .arg("-cf")
                .arg(&tar)
                .arg("node_modules")
                .status()
                .unwrap();
            assert!(st.success());
            let asset = format!("/{login}/stor/env/node-manta.tar");
            env.client
                .put_bytes(&asset, std::fs::read(&tar).unwrap(), Default::default())
                .await
                .unwrap();
            let phase = json!({
                "exec": "node /tmp/node_modules/manta/bin/mls /$MANTA_USER/stor/env",
                "init": format!("tar -xf /assets{asset} -C /tmp"),
                "assets": [asset],
            });
            let (out, errs) = run(&env, phase, std::slice::from_ref(&input)).await;
            assert!(errs.is_empty(), "{errs:?}");
            let mut names: Vec<&str> = out.lines().collect();
            names.sort_unstable();
            assert_eq!(
                names,
                ["from-task.txt", "in.txt", "node-manta.tar"],
                "{out}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_object_the_owner_may_read_is_an_input() {
    let env = Env::start().await.unwrap();
    let other = env.region.add_account("other").await.unwrap();
    let oc = env.region.client(&other).await.unwrap();
    oc.put_bytes("~~/public/shared.txt", "a\nb\nc\n", Default::default())
        .await
        .unwrap();
    oc.put_bytes("~~/stor/secret.txt", "TOP SECRET\n", Default::default())
        .await
        .unwrap();
    let own = env
        .upload("mine", vec![("x.txt".into(), "x\n".into())])
        .await
        .unwrap()
        .remove(0);

    let inputs = [
        own,
        "/other/public/shared.txt".to_owned(),
        "/other/stor/secret.txt".to_owned(),
        "/nobody/public/x.txt".to_owned(),
    ];
    let (out, errs) = run(&env, json!({"exec": "wc -l"}), &inputs).await;
    let mut counts: Vec<&str> = out.split_whitespace().collect();
    counts.sort_unstable();
    assert_eq!(counts, ["1", "3"], "{out}");
    let mut codes: Vec<(String, String)> = errs
        .iter()
        .map(|e| {
            (
                e["input"].as_str().unwrap_or_default().to_owned(),
                e["code"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            (
                "/nobody/public/x.txt".into(),
                "ResourceNotFoundError".into()
            ),
            ("/other/stor/secret.txt".into(), "AuthorizationError".into()),
        ],
        "{errs:?}"
    );
}
