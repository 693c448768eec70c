//! The real `manta` npm client (5.4.2) against our server, unchanged: plain HTTP on loopback and
//! TLS. `./run-tests` installs it into `target/node-manta`; `MANTA_NODE_CLIENT` may point at
//! another installation (its `node_modules/manta` directory).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::PathBuf;
use std::process::{Command, Output};

use testkit::{RegionOptions, TestRegion};

mod common;

fn client_dir() -> PathBuf {
    let dir = std::env::var_os("MANTA_NODE_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/node-manta/node_modules/manta")
        });
    assert!(
        dir.join("bin/mput").exists(),
        "the manta npm client is not installed at {}: run ./run-tests, which installs manta@5.4.2 there \
         (or: npm install --prefix target/node-manta manta@5.4.2)",
        dir.display()
    );
    dir
}

struct Cli<'a> {
    region: &'a TestRegion,
    bin: PathBuf,
    work: tempfile::TempDir,
}

impl Cli<'_> {
    fn run(&self, cmd: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = Command::new("node");
        c.arg(self.bin.join(cmd))
            .args(args)
            .current_dir(self.work.path());
        c.env_remove("SSH_AUTH_SOCK");
        for (k, v) in self.region.cli_env(&self.region.account) {
            if !v.is_empty() {
                c.env(k, v);
            }
        }
        c.stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("run node");
        if let Some(data) = stdin {
            use std::io::Write;
            let mut si = child.stdin.take().unwrap();
            si.write_all(data).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Starts a command without waiting for it.
    fn spawn(&self, cmd: &str, args: &[&str]) -> std::process::Child {
        let mut c = Command::new("node");
        c.arg(self.bin.join(cmd))
            .args(args)
            .current_dir(self.work.path())
            .env_remove("SSH_AUTH_SOCK")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in self.region.cli_env(&self.region.account) {
            if !v.is_empty() {
                c.env(k, v);
            }
        }
        c.spawn().expect("run node")
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.run(cmd, args, None);
        assert!(!out.status.success(), "{cmd} {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.run(cmd, args, None);
        let out = testkit::process::assert_success(&format!("{cmd} {args:?}"), out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

async fn drive_every_command(region: &TestRegion) {
    let cli = Cli {
        region,
        bin: client_dir().join("bin"),
        work: tempfile::tempdir().unwrap(),
    };
    let login = &region.account.login;

    cli.ok("mmkdir", &["-p", "~~/stor/a/b/c"]);
    let file = cli.work.path().join("local.txt");
    std::fs::write(&file, "from a file\n").unwrap();
    cli.ok(
        "mput",
        &["-f", file.to_str().unwrap(), "~~/stor/a/b/file.txt"],
    );
    let out = cli.run("mput", &["~~/stor/a/stdin.txt"], Some(b"from stdin\n"));
    assert!(
        out.status.success(),
        "mput from stdin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cli.ok("mget", &["~~/stor/a/b/file.txt"]), "from a file\n");
    assert_eq!(cli.ok("mget", &["~~/stor/a/stdin.txt"]), "from stdin\n");

    let ls = cli.ok("mls", &["~~/stor/a"]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["b/", "stdin.txt"], "{ls}");
    let long = cli.ok("mls", &["-l", "~~/stor/a"]);
    assert!(
        long.lines()
            .any(|l| l.contains(login) && l.ends_with("stdin.txt") && l.contains("11")),
        "{long}"
    );
    let json = cli.ok("mls", &["-j", "~~/stor/a"]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["name"], "b");
    assert_eq!(first["type"], "directory");

    let found = cli.ok("mfind", &["~~/stor"]);
    assert!(
        found.lines().any(|l| l.ends_with("/stor/a/b/file.txt")),
        "{found}"
    );
    let only_objects = cli.ok("mfind", &["-t", "o", "-n", "txt$", "~~/stor"]);
    assert_eq!(only_objects.lines().count(), 2, "{only_objects}");

    cli.ok("mln", &["~~/stor/a/b/file.txt", "~~/stor/a/link.txt"]);
    assert_eq!(cli.ok("mget", &["~~/stor/a/link.txt"]), "from a file\n");

    cli.ok("mchattr", &["-H", "m-color: green", "~~/stor/a/link.txt"]);
    let info = cli.ok("minfo", &["~~/stor/a/link.txt"]);
    assert!(
        info.to_ascii_lowercase().contains("m-color: green"),
        "{info}"
    );
    assert!(info.contains("HTTP/1.1 200"), "{info}");

    let url = cli.ok("msign", &["-E", "1h", "~~/stor/a/b/file.txt"]);
    let fetched = Command::new("curl")
        .args(["-skf", url.trim()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&fetched.stdout),
        "from a file\n",
        "msign URL {url}"
    );

    // Errors name the server's code.
    let missing = cli.run("mget", &["~~/stor/nope"], None);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("ResourceNotFound") || err.contains("was not found"),
        "{err}"
    );
    let nonempty = cli.run("mrmdir", &["~~/stor/a"], None);
    assert!(!nonempty.status.success());
    assert!(String::from_utf8_lossy(&nonempty.stderr).contains("DirectoryNotEmpty"));

    cli.ok("mrm", &["-r", "~~/stor/a/b"]);
    cli.ok("mrm", &["~~/stor/a/stdin.txt", "~~/stor/a/link.txt"]);
    cli.ok("mrmdir", &["~~/stor/a"]);
    assert_eq!(cli.ok("mls", &["~~/stor"]).trim(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_client_works_over_plain_http() {
    let region = TestRegion::start().await.unwrap();
    drive_every_command(&region).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_client_works_over_tls() {
    let region = TestRegion::start_with(RegionOptions {
        tls: true,
        ..RegionOptions::default()
    })
    .await
    .unwrap();
    assert!(region.url.starts_with("https://"));
    drive_every_command(&region).await;
}

/// Live object files on every storage node of `region`.
fn files_everywhere(region: &TestRegion) -> usize {
    region
        .storage
        .iter()
        .map(|n| common::live_files(&n.data).len())
        .sum()
}

/// Waits until `region`'s nodes hold `want` object files (garbage collection runs every
/// second in these regions).
async fn wait_for_files(region: &TestRegion, want: usize, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let have = files_everywhere(region);
        if have == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {have} object files on the nodes, expected {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

fn collected_region() -> RegionOptions {
    RegionOptions {
        storage_args: ["--gc-interval", "1s", "--gc-min-age", "1s"]
            .map(String::from)
            .to_vec(),
        ..RegionOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mmpu_uploads_parts_in_parallel_commits_and_aborts() {
    let region = TestRegion::start_with(collected_region()).await.unwrap();
    let cli = Cli {
        region: &region,
        bin: client_dir().join("bin"),
        work: tempfile::tempdir().unwrap(),
    };
    let before = files_everywhere(&region);
    cli.ok("mmkdir", &["~~/stor/mpu"]);
    let id = cli
        .ok("mmpu", &["create", "~~/stor/mpu/big"])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 36, "{id}");

    // Three parts, uploaded at once: two of 5 MiB (the least but the last may hold), and a
    // small last one.
    let sizes = [5 << 20, 5 << 20, 12_345];
    let mut whole = Vec::new();
    let mut children = Vec::new();
    for (n, size) in sizes.iter().enumerate() {
        let bytes: Vec<u8> = (0..*size).map(|i| ((i * 7 + n * 13) % 251) as u8).collect();
        let path = cli.work.path().join(format!("part{n}"));
        std::fs::write(&path, &bytes).unwrap();
        whole.extend_from_slice(&bytes);
        let (num, file) = (n.to_string(), path.to_str().unwrap().to_owned());
        children.push(cli.spawn("mmpu", &["upload", &id, &num, "-f", &file]));
    }
    let etags: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out =
                testkit::process::assert_success("mmpu upload", c.wait_with_output().unwrap());
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    assert!(etags.iter().all(|e| e.len() == 36), "{etags:?}");

    let listed = cli.ok("mmpu", &["list"]);
    assert!(listed.lines().any(|l| l.ends_with(&id)), "{listed}");
    let parts = cli.ok("mmpu", &["parts", &id]);
    assert_eq!(parts.lines().count(), 3, "{parts}");
    let state: serde_json::Value = serde_json::from_str(&cli.ok("mmpu", &["get", &id])).unwrap();
    assert_eq!(state["state"], "created");
    assert_eq!(state["numCopies"], 2);
    assert!(
        state["targetObject"]
            .as_str()
            .unwrap()
            .ends_with("/stor/mpu/big")
    );

    // A wrong etag is refused with the original's error, and nothing is committed.
    let mut wrong = etags.clone();
    wrong[1] = etags[0].clone();
    let mut args = vec!["commit", id.as_str()];
    args.extend(wrong.iter().map(String::as_str));
    let err = cli.fails("mmpu", &args);
    assert!(
        err.contains(&format!(
            "upload {id}: [part 1] invalid etag \"{}\"",
            etags[0]
        )),
        "{err}"
    );
    cli.fails("mget", &["~~/stor/mpu/big"]);

    let mut args = vec!["commit", id.as_str()];
    args.extend(etags.iter().map(String::as_str));
    cli.ok("mmpu", &args);
    // Committing the same parts again answers as the first commit did.
    cli.ok("mmpu", &args);
    let out = cli.work.path().join("big.out");
    cli.ok("mget", &["-o", out.to_str().unwrap(), "~~/stor/mpu/big"]);
    assert!(
        std::fs::read(&out).unwrap() == whole,
        "mget differs from the parts joined"
    );
    let info = cli.ok("minfo", &["~~/stor/mpu/big"]);
    use base64::Engine as _;
    use md5::Digest as _;
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&whole));
    assert!(info.contains(&md5), "{info}");
    let state: serde_json::Value = serde_json::from_str(&cli.ok("mmpu", &["get", &id])).unwrap();
    assert_eq!(state["state"], "done");
    assert_eq!(state["result"], "committed");
    assert!(state["partsMD5Summary"].is_string());
    // The parts went once joined; the object's two copies stay.
    wait_for_files(&region, before + 2, "after a commit").await;
    assert_eq!(cli.ok("mmpu", &["parts", &id]).trim(), "");
    let err = cli.fails("mmpu", &["upload", &id, "3", "-f", out.to_str().unwrap()]);
    assert!(
        err.contains(&format!("upload {id}: already committed")),
        "{err}"
    );

    // An aborted upload leaves nothing on any node, and cannot be committed.
    let id2 = cli
        .ok("mmpu", &["create", "~~/stor/mpu/never"])
        .trim()
        .to_owned();
    let part = cli.work.path().join("part0");
    cli.ok("mmpu", &["upload", &id2, "0", "-f", part.to_str().unwrap()]);
    wait_for_files(&region, before + 4, "after a part").await;
    cli.ok("mmpu", &["abort", &id2]);
    let state: serde_json::Value = serde_json::from_str(&cli.ok("mmpu", &["get", &id2])).unwrap();
    assert_eq!(state["result"], "aborted");
    wait_for_files(&region, before + 2, "after an abort").await;
    let err = cli.fails("mmpu", &["commit", &id2]);
    assert!(
        err.contains(&format!("upload {id2}: already aborted")),
        "{err}"
    );
    cli.fails("mget", &["~~/stor/mpu/never"]);
    // What the uploads tree is, only its uploads change.
    let err = cli.fails("mmkdir", &["~~/uploads/mine"]);
    assert!(
        err.contains("AuthorizationFailed") || err.contains("not allowed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_uploads_are_swept_with_their_parts() {
    let mut opts = collected_region();
    opts.frontdoor_args = ["--upload-max-age", "3s", "--repair-interval", "1s"]
        .map(String::from)
        .to_vec();
    let region = TestRegion::start_with(opts).await.unwrap();
    let cli = Cli {
        region: &region,
        bin: client_dir().join("bin"),
        work: tempfile::tempdir().unwrap(),
    };
    let before = files_everywhere(&region);
    let id = cli
        .ok("mmpu", &["create", "~~/stor/left"])
        .trim()
        .to_owned();
    let part = cli.work.path().join("part");
    std::fs::write(&part, b"abandoned").unwrap();
    cli.ok("mmpu", &["upload", &id, "0", "-f", part.to_str().unwrap()]);
    // Swept: the upload is gone, and its part's bytes with it.
    wait_for_files(&region, before, "after the sweep").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = cli.run("mmpu", &["get", &id], None);
        if !out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upload was never swept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(!cli.ok("mmpu", &["list"]).contains(&id));
}

/// Runs `manta-adm` against `region`; it must succeed.
fn adm(region: &TestRegion, args: &[&str]) {
    let out = region.manta_adm().unwrap().args(args).output().unwrap();
    testkit::process::assert_success(&format!("manta-adm {args:?}"), out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_user_acts_only_through_its_roles_and_the_role_tags() {
    let region = TestRegion::start().await.unwrap();
    let owner = Cli {
        region: &region,
        bin: client_dir().join("bin"),
        work: tempfile::tempdir().unwrap(),
    };
    let login = region.account.login.clone();
    // A sub-user, bob, with a key of his own.
    let home = owner.work.path().join("bob-home");
    let ssh = home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let key = ssh.join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bob", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let fp = Command::new("ssh-keygen")
        .args(["-E", "md5", "-l", "-f"])
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.strip_prefix("MD5:"))
        .unwrap()
        .to_owned();
    let pubkey = key.with_extension("pub");
    adm(
        &region,
        &[
            "user",
            "create",
            &login,
            "bob",
            "--key",
            pubkey.to_str().unwrap(),
        ],
    );
    adm(
        &region,
        &[
            "policy",
            "create",
            &login,
            "read",
            "--rule",
            "CAN getobject, getdirectory",
        ],
    );
    adm(
        &region,
        &[
            "policy",
            "create",
            &login,
            "write",
            "--rule",
            "CAN putobject",
        ],
    );
    adm(
        &region,
        &[
            "role",
            "create",
            &login,
            "reader",
            "--member",
            "bob",
            "--default-member",
            "bob",
            "--policy",
            "read",
        ],
    );
    adm(
        &region,
        &[
            "role", "create", &login, "writer", "--member", "bob", "--policy", "write",
        ],
    );
    let bob = |args: &[&str]| {
        let mut c = Command::new("node");
        c.arg(owner.bin.join(args[0]))
            .args(&args[1..])
            .current_dir(owner.work.path())
            .stdin(std::process::Stdio::null());
        for (k, v) in region.cli_env(&region.account) {
            if !v.is_empty() {
                c.env(k, v);
            }
        }
        c.env_remove("SSH_AUTH_SOCK")
            .env("HOME", &home)
            .env("MANTA_SUBUSER", "bob")
            .env("MANTA_KEY_ID", &fp);
        c.output().unwrap()
    };
    let denied = |out: Output, what: &str| {
        assert!(!out.status.success(), "bob could {what}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("NoMatchingRoleTag")
                || err.contains("MissingPermission")
                || err.contains("Forbidden")
                || err.contains("role")
                || err.contains("may not"),
            "{what}: {err}"
        );
    };
    let allowed = |out: Output, what: &str| testkit::process::assert_success(what, out).stdout;

    owner.ok("mmkdir", &["~~/stor/shared"]);
    let file = owner.work.path().join("doc.txt");
    std::fs::write(&file, "for readers\n").unwrap();
    owner.ok(
        "mput",
        &["-f", file.to_str().unwrap(), "~~/stor/shared/doc.txt"],
    );

    // Untagged: bob reaches nothing, though his default role may read.
    denied(
        bob(&["mget", "~~/stor/shared/doc.txt"]),
        "read an untagged object",
    );
    denied(
        bob(&["mls", "~~/stor/shared"]),
        "list an untagged directory",
    );

    // Tagged for readers: bob reads it, and lists the directory once it is tagged too.
    owner.ok("mchmod", &["--", "+reader", "~~/stor/shared/doc.txt"]);
    let info = owner.ok("minfo", &["~~/stor/shared/doc.txt"]);
    assert!(
        info.to_ascii_lowercase().contains("role-tag: reader"),
        "{info}"
    );
    let got = allowed(
        bob(&["mget", "~~/stor/shared/doc.txt"]),
        "bob reads a reader object",
    );
    assert_eq!(String::from_utf8_lossy(&got), "for readers\n");
    owner.ok("mchmod", &["--", "+reader", "~~/stor/shared"]);
    let ls = allowed(bob(&["mls", "~~/stor/shared"]), "bob lists");
    assert_eq!(String::from_utf8_lossy(&ls).trim(), "doc.txt");

    // Writing needs the writer role, taken with --role, and a directory tagged for writers.
    let mine = owner.work.path().join("mine.txt");
    std::fs::write(&mine, "bob's\n").unwrap();
    let mine = mine.to_str().unwrap();
    denied(
        bob(&["mput", "-f", mine, "~~/stor/shared/mine.txt"]),
        "write as a reader",
    );
    denied(
        bob(&[
            "mput",
            "--role",
            "writer",
            "-f",
            mine,
            "~~/stor/shared/mine.txt",
        ]),
        "write into a directory not tagged for writers",
    );
    owner.ok("mchmod", &["--", "+writer", "~~/stor/shared"]);
    allowed(
        bob(&[
            "mput",
            "--role",
            "writer",
            "-f",
            mine,
            "~~/stor/shared/mine.txt",
        ]),
        "bob writes as a writer",
    );
    assert_eq!(owner.ok("mget", &["~~/stor/shared/mine.txt"]), "bob's\n");
    // A role bob is not a member of cannot be taken.
    let out = bob(&["mls", "--role", "admin", "~~/stor/shared"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidRole")
            || String::from_utf8_lossy(&out.stderr).contains("not a role")
    );

    // Removing the tag denies the read again; the owner is never held by tags.
    owner.ok("mchmod", &["--", "-reader", "~~/stor/shared/doc.txt"]);
    denied(
        bob(&["mget", "~~/stor/shared/doc.txt"]),
        "read after the tag was removed",
    );
    assert_eq!(
        owner.ok("mget", &["~~/stor/shared/doc.txt"]),
        "for readers\n"
    );
    // The area root's tags live on the account: tagged for writers, bob writes at its top.
    denied(
        bob(&["mput", "--role", "writer", "-f", mine, "~~/stor/top.txt"]),
        "write at the top of an untagged stor",
    );
    owner.ok("mchmod", &["--", "+writer", "~~/stor"]);
    let info = owner.ok("minfo", &["~~/stor"]);
    assert!(
        info.to_ascii_lowercase().contains("role-tag: writer"),
        "{info}"
    );
    allowed(
        bob(&["mput", "--role", "writer", "-f", mine, "~~/stor/top.txt"]),
        "bob writes at the top of stor tagged for writers",
    );
    owner.ok("mchmod", &["--", "-writer", "~~/stor"]);
    denied(
        bob(&["mput", "--role", "writer", "-f", mine, "~~/stor/top2.txt"]),
        "write at the top of stor once its tag is removed",
    );
    // A tag naming no role of the account is refused.
    let err = owner.fails("mchmod", &["--", "+nosuch", "~~/stor"]);
    assert!(
        err.contains("InvalidRoleTag") || err.contains("not a role"),
        "{err}"
    );
    let err = owner.fails("mchmod", &["--", "+nosuch", "~~/stor/shared/doc.txt"]);
    assert!(
        err.contains("InvalidRoleTag") || err.contains("not a role"),
        "{err}"
    );
    // The front door logged each decision with the rule that allowed it.
    let log = region.frontdoor_log();
    assert!(
        log.contains("rule=CAN putobject") || log.contains("rule=\"CAN putobject\""),
        "no allowing rule logged"
    );
    assert!(log.contains("denied"), "no denial logged");
}
