//! Map/reduce end to end on a real region with real containers: word counts equal a local
//! count, `msplit` routes to the right reducer over three phases, every map task runs on a node
//! holding a copy of its input, a reducer reads its inputs while the map phase still runs,
//! `maggr` sums what map tasks counted, and the job is archived.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, job};
use jobs::records::{ITEMS, Item, JobStore, TASKS, Task};
use manta_types::MetadataRecord;

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

/// Deterministic text: object `i` has a few dozen words.
fn text(i: usize) -> String {
    let mut x = (i as u64)
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1);
    let mut s = String::new();
    for k in 0..(20 + i % 30) {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        s.push_str(WORDS[((x >> 33) as usize) % WORDS.len()]);
        s.push(if k % 7 == 6 { '\n' } else { ' ' });
    }
    s.push('\n');
    s
}

/// Uploads `n` objects of [`text`] under `~~/stor/<dir>`; their texts and paths.
async fn upload_texts(env: &Env, dir: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let texts: Vec<String> = (0..n).map(text).collect();
    let objects = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("f{i:03}.txt"), t.clone()))
        .collect();
    (texts, env.upload(dir, objects).await.unwrap())
}

/// Runs a job of `phases` over `inputs`; its outputs' texts, once it ended without errors.
async fn outputs_of_clean_run(
    env: &Env,
    phases: &[(&str, &str)],
    inputs: &[String],
) -> Vec<String> {
    let id = env.submit(job(phases), inputs).await.unwrap();
    let st = env.wait(&id, Duration::from_secs(120)).await.unwrap();
    let errors = env.client.job_errors(&id).await;
    assert_eq!(st["stats"]["errors"], 0, "{errors:?}");
    env.output_text(&id).await.unwrap()
}

fn local_count(texts: &[String]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for t in texts {
        for w in t.split_whitespace() {
            *m.entry(w.to_owned()).or_insert(0) += 1;
        }
    }
    m
}

fn parse_counts(outputs: &[String]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for o in outputs {
        for line in o.lines().filter(|l| !l.trim().is_empty()) {
            let mut f = line.split_whitespace();
            let (w, n) = (f.next().unwrap(), f.next().unwrap());
            assert!(
                m.insert(w.to_owned(), n.parse().unwrap()).is_none(),
                "{w} in two reducers' outputs"
            );
        }
    }
    m
}

const MAP_WC: &str =
    "tr -s ' ' '\\n' | grep . | sort | uniq -c | awk '{print $2\" \"$1}' | msplit -d ' ' -f 1";
const REDUCE_SUM: &str = "awk '{c[$1]+=$2} END {for (w in c) print w, c[w]}'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_over_200_objects_with_2_reducers_equals_a_local_count() {
    let env = Env::start().await.unwrap();
    let (texts, inputs) = upload_texts(&env, "words", 200).await;
    let mut j = job(&[("map", MAP_WC), ("reduce", REDUCE_SUM)]);
    j["phases"][1]["count"] = 2.into();
    let id = env.submit(j, &inputs).await.unwrap();
    let st = env.wait(&id, Duration::from_secs(240)).await.unwrap();
    assert_eq!(
        st["stats"]["errors"],
        0,
        "{:?}",
        env.client.job_errors(&id).await
    );
    let outputs = env.client.job_outputs(&id).await.unwrap();
    assert_eq!(outputs.len(), 2, "one output per reducer: {outputs:?}");
    assert!(
        outputs.iter().all(|o| o.contains("/reduce.1.")),
        "{outputs:?}"
    );
    let got = parse_counts(&env.output_text(&id).await.unwrap());
    assert_eq!(got, local_count(&texts));

    // Every map task ran on a node holding a copy of its input.
    let moray = env.region.moray().unwrap();
    let store = JobStore::new(moray.system());
    let tasks = store
        .find_all::<Task>(TASKS, &format!("(&(jobId={id})(phase=0))"))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 200);
    let owner = {
        let acct = moray
            .system()
            .find_objects(
                "manta_accounts",
                &format!("(login={})", env.region.account.login),
                Default::default(),
            )
            .await
            .unwrap();
        acct[0].value["uuid"].as_str().unwrap().to_owned()
    };
    for t in &tasks {
        let input = t.value.input.clone().unwrap();
        let key = manta_types::MantaPath::parse(&input)
            .unwrap()
            .storage_key(&owner);
        let rec = MetadataRecord::from_value(moray.get_object("manta", &key).await.unwrap().value)
            .unwrap();
        let sharks: Vec<String> = rec
            .object()
            .unwrap()
            .sharks
            .iter()
            .map(|s| s.manta_storage_id.clone())
            .collect();
        assert!(
            sharks.contains(&t.value.server),
            "task for {input} ran on {} but copies are on {sharks:?}",
            t.value.server
        );
    }
    // Reducer routing: each routed item went to the reducer msplit chose.
    let items = store
        .find_all::<Item>(ITEMS, &format!("(&(jobId={id})(toPhase=1))"))
        .await
        .unwrap();
    assert!(items.iter().all(|i| i.value.r_idx.is_some()));

    // Archived: inputs, outputs, status.
    let dir = format!("/{}/jobs/{id}", env.region.account.login);
    let in_txt = env.text(&format!("{dir}/in.txt")).await.unwrap();
    assert_eq!(in_txt.lines().count(), 200);
    let out_txt = env.text(&format!("{dir}/out.txt")).await.unwrap();
    assert_eq!(out_txt.lines().count(), 2);
    let job_json: serde_json::Value =
        serde_json::from_str(&env.text(&format!("{dir}/job.json")).await.unwrap()).unwrap();
    assert_eq!(job_json["state"], "done");
    assert_eq!(job_json["stats"]["tasks"], 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_phases_with_msplit_routing_init_and_assets() {
    let env = Env::start().await.unwrap();
    let texts: Vec<String> = (0..12).map(text).collect();
    let objects = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("g{i}.txt"), t.clone()))
        .collect();
    let inputs = env.upload("three", objects).await.unwrap();
    // An asset: a script the second phase runs, and an init that must run first.
    let asset = format!("/{}/stor/three-tools/count.sh", env.region.account.login);
    env.client
        .mkdirp(&format!("/{}/stor/three-tools", env.region.account.login))
        .await
        .unwrap();
    env.client
        .put_bytes(
            &asset,
            "sort | uniq -c | awk '{print $2\" \"$1}'\n",
            Default::default(),
        )
        .await
        .unwrap();
    let j = serde_json::json!({
        "name": "three",
        "phases": [
            {"type": "map", "exec": "tr -s ' ' '\\n' | grep ."},
            {"type": "map", "exec": "test -f /tmp/ready && bash /assets$ASSET | msplit -d ' ' -f 1",
             "init": "touch /tmp/ready", "assets": [asset]},
            {"type": "reduce", "count": 3, "exec": format!("{REDUCE_SUM} | sort")},
        ]
    });
    let j = serde_json::from_str(&j.to_string().replace("$ASSET", &asset)).unwrap();
    let id = env.submit(j, &inputs).await.unwrap();
    let st = env.wait(&id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(
        st["stats"]["errors"],
        0,
        "{:?}",
        env.client.job_errors(&id).await
    );
    let outs = env.output_text(&id).await.unwrap();
    assert_eq!(outs.len(), 3);
    let got = parse_counts(&outs);
    assert_eq!(got, local_count(&texts));
    // Every reducer saw only its own words: the same word never appears in two outputs
    // (checked by parse_counts), and each output is sorted.
    for o in &outs {
        let lines: Vec<&str> = o.lines().collect();
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(lines, sorted);
    }
}

/// Runs `manta mjob ARGS` as the region's account with `stdin`; with `tty`, under a
/// pseudo-terminal (`script`, util-linux) as a user at a shell would. Its stdout.
fn mjob(env: &Env, args: &str, stdin: &str, tty: bool) -> String {
    use std::io::Write as _;
    let manta = testkit::region::binary("manta").unwrap();
    let line = format!("{} mjob {args}", manta.display());
    let mut cmd = if tty {
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &line, "/dev/null"]);
        c
    } else {
        let mut c = std::process::Command::new("sh");
        c.args(["-c", &line]);
        c
    };
    cmd.envs(env.region.cli_env(&env.region.account))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(
        out.status.success(),
        "mjob {args}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjob_as_users_type_it() {
    let env = Env::start_with(common::Options {
        supervisor_args: vec!["--input-idle-timeout".into(), "3s".into()],
        ..common::Options::default()
    })
    .await
    .unwrap();
    let inputs = env
        .upload("typed", vec![("a.txt".into(), "one two\n".into())])
        .await
        .unwrap();

    // --dry-run shows the job (with --image on its phase) and makes none.
    let shown = mjob(&env, "create --dry-run --image '>=1.0' -m wc", "", false);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["phases"][0]["image"], ">=1.0", "{shown}");
    assert!(env.client.list_jobs(None, None).await.unwrap().is_empty());

    // From a terminal, create leaves the input open for addinputs, which -o keeps open.
    let id = mjob(&env, "create -n typed -m 'wc -w'", "", true)
        .trim()
        .to_owned();
    let st = env.client.job_status(&id).await.unwrap();
    assert_eq!(st["inputDone"], false, "{st}");
    // Its directory is there from the start.
    let dir = env.client.info(&format!("~~/jobs/{id}")).await.unwrap();
    assert!(dir.is_directory(), "{dir:?}");
    mjob(&env, &format!("addinputs -o -b 1 {id}"), &inputs[0], false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.client.job_status(&id).await.unwrap()["inputDone"],
        false
    );
    mjob(&env, &format!("addinputs {id}"), "", false);
    env.wait(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(env.output_text(&id).await.unwrap(), vec!["2\n".to_owned()]);
    let named = mjob(&env, "list -n typed", "", false);
    assert_eq!(named.trim(), format!("{id}/"));
    assert!(mjob(&env, "list -n other", "", false).trim().is_empty());

    // A job whose input stays open with nothing new is ended after the idle time.
    let idle = env
        .client
        .create_job(&job(&[("map", "wc -l")]))
        .await
        .unwrap();
    env.client
        .add_job_inputs(&idle, &inputs, false)
        .await
        .unwrap();
    let st = env.wait(&idle, Duration::from_secs(60)).await.unwrap();
    assert_eq!(st["inputDone"], true, "{st}");
    assert_eq!(
        env.output_text(&idle).await.unwrap(),
        vec!["1\n".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducer_reads_its_first_input_before_the_last_map_task_ends() {
    let env = Env::start().await.unwrap();
    // Map tasks that take 0 and 6 seconds and print when they end (ns); the reducer prints,
    // for each line, that line and when it read it.
    let ins = env
        .upload(
            "stream",
            vec![("fast".into(), "0\n".into()), ("slow".into(), "6\n".into())],
        )
        .await
        .unwrap();
    let id = env
        .submit(
            job(&[
                ("map", "sleep $(cat); date +%s%N"),
                ("reduce", "while read t; do echo \"$t $(date +%s%N)\"; done"),
            ]),
            &ins,
        )
        .await
        .unwrap();
    let st = env.wait(&id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(st["stats"]["errors"], 0, "{st}");
    let out = env.output_text(&id).await.unwrap().join("");
    let lines: Vec<(u128, u128)> = out
        .lines()
        .map(|l| {
            let (ended, read) = l.split_once(' ').unwrap();
            (ended.parse().unwrap(), read.parse().unwrap())
        })
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    let first_read = lines.iter().map(|l| l.1).min().unwrap();
    let last_map_end = lines.iter().map(|l| l.0).max().unwrap();
    assert!(
        first_read < last_map_end,
        "the reducer read its first input {} ms after the last map task ended: {out}",
        (first_read - last_map_end) / 1_000_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_every_job() {
    let env = Env::start().await.unwrap();
    let mut made = Vec::new();
    for i in 0..5 {
        let id = env
            .client
            .create_job(
                &serde_json::json!({"name": format!("page{}", i % 2), "phases": [{"exec": "wc"}]}),
            )
            .await
            .unwrap();
        made.push(id);
    }
    made.sort();
    // Two at a time: every job once, in id order, however the pages fall.
    let paged: Vec<String> = env
        .client
        .list_jobs_paged(None, None, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.0)
        .collect();
    assert_eq!(paged, made);
    let all: Vec<String> = env
        .client
        .list_jobs(None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.0)
        .collect();
    assert_eq!(all, made);
    // A name filter pages too (the filtered-out jobs do not end the listing early).
    let named = env
        .client
        .list_jobs_paged(None, Some("page1"), 1)
        .await
        .unwrap();
    assert_eq!(named.len(), 2, "{named:?}");
    // A bad page size is refused with the reason.
    let e = env
        .client
        .list_jobs_paged(None, None, 5000)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("limit=5000 is invalid"), "{e}");
    // `mjob list -l` prints them as directories, one per line.
    let text = mjob(&env, "list -l", "", false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    for (l, id) in lines.iter().zip(&made) {
        assert!(l.starts_with("drwxr-xr-x 1 "), "{l}");
        assert!(l.ends_with(id.as_str()), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maggr_adds_up_line_counts_and_counts_by_key() {
    let env = Env::start().await.unwrap();
    let (texts, inputs) = upload_texts(&env, "maggr", 24).await;
    // The manual's reducer of line counts.
    let lines: usize = texts.iter().map(|t| t.lines().count()).sum();
    assert_eq!(
        outputs_of_clean_run(&env, &[("map", "wc -l"), ("reduce", "maggr sum")], &inputs).await,
        vec![format!("{lines}\n")]
    );
    // The same as a user types it: `mfind -t o DIR | mjob create -o -m 'wc -l' -r 'maggr sum'`.
    let manta = testkit::region::binary("manta").unwrap();
    let found = std::process::Command::new(&manta)
        .args([
            "mfind",
            "-t",
            "o",
            &format!("/{}/stor/maggr", env.region.account.login),
        ])
        .envs(env.region.cli_env(&env.region.account))
        .output()
        .unwrap();
    assert!(found.status.success(), "{found:?}");
    let found = String::from_utf8(found.stdout).unwrap();
    assert_eq!(found.lines().count(), inputs.len());
    let printed = mjob(&env, "create -o -m 'wc -l' -r 'maggr sum'", &found, false);
    assert_eq!(printed, format!("{lines}\n"));
    // Counts by key: each map task's `word count` lines, summed per word.
    let reduce = ("reduce", "maggr -c1=key -c2=sum");
    assert_eq!(
        parse_counts(&outputs_of_clean_run(&env, &[("map", MAP_WC), reduce], &inputs).await),
        local_count(&texts)
    );
}
