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

/// An OCI image of a static busybox (`/bin/busybox` of the `busybox-static` package) with the
/// applets a job needs linked in, and `/etc/image-release`; a second layer whites out a file
/// of the first.
fn busybox_image() -> Vec<u8> {
    use jobs::agent::image::{LayerBuilder, pack};
    let busybox = std::fs::read("/bin/busybox").expect(
        "a static busybox at /bin/busybox (Debian's busybox-static, which ./run-tests installs)",
    );
    let mut l1 = LayerBuilder::default();
    l1.dir("bin/").unwrap();
    l1.file("bin/busybox", 0o755, &busybox).unwrap();
    for applet in ["sh", "cat", "wc", "ls", "test", "echo", "tr", "cp"] {
        l1.symlink(&format!("bin/{applet}"), "busybox").unwrap();
    }
    l1.file("etc/image-release", 0o644, b"busybox test image\n")
        .unwrap();
    l1.file("etc/gone", 0o644, b"whited out\n").unwrap();
    let mut l2 = LayerBuilder::default();
    l2.file("etc/.wh.gone", 0o644, b"").unwrap();
    pack(&[(l1.finish(), true), (l2.finish(), false)]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_runs_in_an_image_from_the_store_and_bad_images_fail_clearly() {
    use jobs::agent::image::{LayerBuilder, pack};
    // The region's image registry is the test account's `public/images` (its login is
    // testkit's `tester`).
    let env = Env::start_with(common::Options {
        agent_args: vec!["--image-registry".into(), "/tester/public/images".into()],
        ..common::Options::default()
    })
    .await
    .unwrap();
    let login = env.region.account.login.clone();
    assert_eq!(login, "tester");
    let input = env
        .upload("img", vec![("in.txt".into(), "a\nb\nc\n".into())])
        .await
        .unwrap()
        .remove(0);
    let image = format!("/{login}/stor/img/busybox.tar");
    env.client
        .put_bytes(&image, busybox_image(), Default::default())
        .await
        .unwrap();
    // The operator's import checks an image before the registry takes it.
    let file = env.dir.path().join("busybox.tar");
    std::fs::write(&file, busybox_image()).unwrap();
    let mut adm = env.region.manta_adm().unwrap();
    adm.envs(env.region.cli_env(&env.region.account));
    let out = testkit::process::run_ok(adm.args(["image", "import", "busybox"]).arg(&file));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/tester/public/images/busybox"),
        "{out:?}"
    );
    let escape = format!("/{login}/stor/img/escape.tar");
    let layer = LayerBuilder::default()
        .file("../../escaped", 0o644, b"x")
        .unwrap()
        .finish();
    env.client
        .put_bytes(&escape, pack(&[(layer, true)]).unwrap(), Default::default())
        .await
        .unwrap();
    let bad = env.dir.path().join("escape.tar");
    std::fs::write(&bad, env.client.get_bytes(&escape).await.unwrap()).unwrap();
    let mut adm = env.region.manta_adm().unwrap();
    adm.envs(env.region.cli_env(&env.region.account));
    let out = adm
        .args(["image", "import", "evil"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("climbs out"),
        "{out:?}"
    );
    let mut adm = env.region.manta_adm().unwrap();
    adm.envs(env.region.cli_env(&env.region.account));
    let listed = testkit::process::run_ok(adm.args(["image", "list"]));
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains("busybox") && !listed.contains("evil"),
        "{listed}"
    );
    let plain = format!("/{login}/stor/img/plain.tar");
    env.client
        .put_bytes(&plain, "not a tar at all", Default::default())
        .await
        .unwrap();

    // The image's files, not the host's; the tools and the store work from inside it.
    let exec = [
        "cat /etc/image-release",
        "test -e /usr/bin/perl && echo HOST-USR || echo no-host-usr",
        "test -e /etc/gone && echo GONE-STAYED || echo whiteout-applied",
        "wc -l < $MANTA_INPUT_FILE | tr -d ' '",
        "mget $MANTA_INPUT_OBJECT | wc -l | tr -d ' '",
    ]
    .join("; ");
    let (out, errs) = run(
        &env,
        json!({"exec": exec, "image": image}),
        std::slice::from_ref(&input),
    )
    .await;
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        out,
        "busybox test image\nno-host-usr\nwhiteout-applied\n3\n3\n"
    );
    // The same image by its name in the registry.
    let (out, errs) = run(
        &env,
        json!({"exec": "cat /etc/image-release", "image": "busybox"}),
        std::slice::from_ref(&input),
    )
    .await;
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(out, "busybox test image\n");
    // Without `image`, the host's /usr as before.
    let (out, _) = run(
        &env,
        json!({"exec": "test -e /usr/bin/perl && echo host-usr"}),
        std::slice::from_ref(&input),
    )
    .await;
    assert_eq!(out, "host-usr\n");

    // Bad images fail the task with the reason; nothing escaped onto the node.
    for (img, why) in [
        (escape.as_str(), "climbs out"),
        (plain.as_str(), "not a tar archive"),
        (&format!("/{login}/stor/img/missing.tar"), "not found"),
        (
            "no-such-image",
            "/tester/public/images/no-such-image was not found",
        ),
        ("../x", "neither an object path nor an image name"),
    ] {
        let (out, errs) = run(
            &env,
            json!({"exec": "echo ran", "image": img}),
            std::slice::from_ref(&input),
        )
        .await;
        assert_eq!(out, "", "{img}");
        assert_eq!(errs.len(), 1, "{img}: {errs:?}");
        assert_eq!(errs[0]["code"], "TaskInitError", "{img}: {errs:?}");
        let msg = errs[0]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{img}: {msg}");
    }
    let found = std::process::Command::new("find")
        .arg(env.dir.path())
        .args(["-name", "escaped"])
        .output()
        .unwrap();
    assert!(found.stdout.is_empty(), "{found:?}");
}

/// Each reducer's output text of a job, by its `MANTA_REDUCER` (which the reduce phase prints
/// first as `r=N`).
async fn by_reducer(env: &Env, phases: serde_json::Value, inputs: &[String]) -> Vec<String> {
    let id = env.submit(json!({"phases": phases}), inputs).await.unwrap();
    let st = env.wait(&id, Duration::from_secs(120)).await.unwrap();
    let errs = env.client.job_errors(&id).await.unwrap();
    assert_eq!(st["stats"]["errors"], 0, "{errs:?}");
    let mut outs = env.output_text(&id).await.unwrap();
    outs.sort();
    outs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msplit_mtee_and_mpipe_take_the_originals_flags() {
    let env = Env::start().await.unwrap();
    let login = env.region.account.login.clone();
    let nums: String = (1..=20).map(|i| format!("{i}\n")).collect();
    let recs: String = (0..30)
        .map(|i| format!("{{\"k\":\"{}\",\"v\":{i}}}\n", ["a", "b", "c"][i % 3]))
        .collect();
    let inputs = env
        .upload(
            "tools",
            vec![
                ("nums.txt".into(), nums.clone()),
                ("recs.json".into(), recs),
            ],
        )
        .await
        .unwrap();
    let (nums_in, recs_in) = (inputs[0].clone(), inputs[1].clone());
    let reduce = |exec: &str, count: u32| json!({"type": "reduce", "count": count, "exec": format!("echo r=$MANTA_REDUCER; {exec}")});

    // -i -e: the expression's value is the reducer (JavaScript, run by node).
    let outs = by_reducer(
        &env,
        json!([{"exec": "msplit -i -e 'line % 2' -n 2"}, reduce("sort -n | tr '\\n' ' '", 2)]),
        std::slice::from_ref(&nums_in),
    )
    .await;
    assert_eq!(
        outs,
        [
            "r=0\n2 4 6 8 10 12 14 16 18 20 ",
            "r=1\n1 3 5 7 9 11 13 15 17 19 "
        ]
    );

    // -j -f with -z: records split by a JSON field, each reducer's stream gzip-compressed; a
    // key always goes to one reducer.
    let outs = by_reducer(
        &env,
        json!([
            {"exec": "msplit -j -f k -z -n 3"},
            reduce("gzip -dc | sed 's/.*\"k\":\"\\([a-z]\\)\".*/\\1/' | sort | uniq -c | awk '{print $2\"=\"$1}'", 3)
        ]),
        std::slice::from_ref(&recs_in),
    )
    .await;
    let mut keys: Vec<&str> = outs.iter().flat_map(|o| o.lines().skip(1)).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["a=10", "b=10", "c=10"], "{outs:?}");

    // -j -e: `this` is the record.
    let outs = by_reducer(
        &env,
        json!([
            {"exec": "msplit -j -i -e 'this.v % 3' -n 3"},
            reduce("grep -o '\"k\":\"[a-z]\"' | sort -u", 3)
        ]),
        std::slice::from_ref(&recs_in),
    )
    .await;
    assert_eq!(
        outs,
        [
            "r=0\n\"k\":\"a\"\n",
            "r=1\n\"k\":\"b\"\n",
            "r=2\n\"k\":\"c\"\n"
        ]
    );

    // A bad expression fails the task with node's word on it.
    let (_, errs) = run(
        &env,
        json!({"exec": "msplit -e 'line.nope()' -n 2"}),
        std::slice::from_ref(&nums_in),
    )
    .await;
    assert_eq!(errs.len(), 1, "{errs:?}");

    // mtee -H sets the object's headers; mpipe -f reads a file instead of stdin.
    let exec = "mtee -H 'content-type: text/x-teed' ~~/stor/tools/teed.txt < $MANTA_INPUT_FILE \
                | wc -l | mpipe ~~/stor/tools/count.txt; \
                mpipe -f $MANTA_INPUT_FILE ~~/stor/tools/piped.txt";
    let (_, errs) = run(&env, json!({"exec": exec}), std::slice::from_ref(&nums_in)).await;
    assert!(errs.is_empty(), "{errs:?}");
    let teed = format!("/{login}/stor/tools/teed.txt");
    assert_eq!(env.text(&teed).await.unwrap(), nums);
    let info = env.client.info(&teed).await.unwrap();
    assert_eq!(info.header("content-type"), Some("text/x-teed"), "{info:?}");
    assert_eq!(
        env.text(&format!("/{login}/stor/tools/count.txt"))
            .await
            .unwrap()
            .trim(),
        "20"
    );
    assert_eq!(
        env.text(&format!("/{login}/stor/tools/piped.txt"))
            .await
            .unwrap(),
        nums
    );
}

/// `manta mlogin ARGS` under a pseudo-terminal (`script`, util-linux), as at a user's
/// terminal, in its own process group; what it prints is gathered as it comes.
struct Login {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Login {
    fn start(env: &Env, args: &str) -> Login {
        use std::io::Read as _;
        use std::os::unix::process::CommandExt as _;
        let manta = testkit::region::binary("manta").unwrap();
        let mut child = std::process::Command::new("script")
            .args([
                "-qefc",
                &format!("{} mlogin {args}", manta.display()),
                "/dev/null",
            ])
            .envs(env.region.cli_env(&env.region.account))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .process_group(0)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let o = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Login { child, stdin, out }
    }

    fn type_line(&mut self, line: &str) {
        use std::io::Write as _;
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    async fn wait_for(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.out.lock().unwrap().clone();
            if out.contains(what) {
                return out;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {what:?} from mlogin: {out}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until no agent has a container, failing after `limit`.
async fn no_containers_within(env: &Env, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while containers(env) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a session's container outlived its session: {}",
            common::tail(&env.log("agent0"), 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn containers(env: &Env) -> usize {
    (0..env.region.storage.len())
        .map(|i| env.containers(i).lines().count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlogin_opens_a_shell_beside_the_object_and_ends_with_its_client() {
    let env = Env::start().await.unwrap();
    env.upload(
        "login",
        vec![("obj.txt".into(), "the object's text\n".into())],
    )
    .await
    .unwrap();

    // A command sees the object where a map task would, in a terminal, within the limits
    // asked for; `exit` ends the session and the client with it.
    let mut s = Login::start(&env, "--memory 512 ~~/stor/login/obj.txt");
    s.type_line(
        "cat $MANTA_INPUT_FILE; test -t 0 && echo TTY-$((2+3)); \
         echo MEM-$(( $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || \
         cat /sys/fs/cgroup/memory.max) / 1048576 )); echo MARK-$((6*7))",
    );
    let out = s.wait_for("MARK-42").await;
    assert!(out.contains("the object's text"), "{out}");
    assert!(out.contains("TTY-5"), "{out}");
    assert!(out.contains("MEM-512"), "{out}");
    s.type_line("exit");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mlogin did not end after exit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");

    // Killing the client ends the container within seconds.
    let mut s = Login::start(&env, "~~/stor/login/obj.txt");
    s.type_line("echo UP-$((1+1))");
    s.wait_for("UP-2").await;
    assert!(containers(&env) >= 1);
    let pgid = i32::try_from(s.child.id()).unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    let _ = s.child.wait();
    no_containers_within(&env, Duration::from_secs(15)).await;

    // In an image, with an asset and an init: the session's root is the image's, the init
    // ran first, the asset is where a task would see it.
    let login = env.region.account.login.clone();
    env.client
        .put_bytes(
            &format!("/{login}/stor/login/busybox.tar"),
            busybox_image(),
            Default::default(),
        )
        .await
        .unwrap();
    env.client
        .put_bytes(
            &format!("/{login}/stor/login/tool.txt"),
            "from the asset\n",
            Default::default(),
        )
        .await
        .unwrap();
    let mut s = Login::start(
        &env,
        &format!(
            "--image /{login}/stor/login/busybox.tar -s ~~/stor/login/tool.txt \
             --init 'cp /assets/{login}/stor/login/tool.txt /tmp/copied' ~~/stor/login/obj.txt"
        ),
    );
    s.type_line("cat /etc/image-release /tmp/copied $MANTA_INPUT_FILE; echo DONE-$((3*3))");
    let out = s.wait_for("DONE-9").await;
    for want in ["busybox test image", "from the asset", "the object's text"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    s.type_line("exit");
    let _ = s.child.wait();

    // Another account's public object is open to a session; its private ones are not.
    let other = env.region.add_account("other").await.unwrap();
    let oc = env.region.client(&other).await.unwrap();
    oc.put_bytes("~~/public/shared.txt", "shared text\n", Default::default())
        .await
        .unwrap();
    oc.put_bytes("~~/stor/secret.txt", "TOP SECRET\n", Default::default())
        .await
        .unwrap();
    let mut s = Login::start(&env, "/other/public/shared.txt");
    s.type_line("cat $MANTA_INPUT_FILE; echo END-$((4*4))");
    let out = s.wait_for("END-16").await;
    assert!(out.contains("shared text"), "{out}");
    s.type_line("exit");
    let _ = s.child.wait();
    let s = Login::start(&env, "/other/stor/secret.txt");
    let out = s.wait_for("AuthorizationFailed").await;
    assert!(!out.contains("TOP SECRET"), "{out}");

    // An object that is not there is refused before any container starts.
    let s = Login::start(&env, "~~/stor/login/nope.txt");
    let out = s.wait_for("ResourceNotFound").await;
    assert!(out.contains("nope.txt"), "{out}");
    no_containers_within(&env, Duration::from_secs(15)).await;
}
