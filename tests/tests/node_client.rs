//! The real `manta` npm client (5.4.2) against our server, unchanged: plain HTTP on loopback and
//! TLS. `./run-tests` installs it into `target/node-manta`; `MANTA_NODE_CLIENT` may point at
//! another installation (its `node_modules/manta` directory).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::PathBuf;
use std::process::{Command, Output};

use testkit::{RegionOptions, TestRegion};

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
