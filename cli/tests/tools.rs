//! The `manta` tools driven as a user drives them: the built binary, through the links
//! `manta install-links` makes and as `manta <tool>`, against a whole real region (Postgres,
//! Moray, three storage nodes, the front door; real processes). Each test starts its own
//! region (a few seconds) and checks output formats, exit codes and error messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use testkit::TestRegion;
use tokio::io::AsyncWriteExt as _;

/// What a tool run gave.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    bytes: Vec<u8>,
}

impl Out {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success; stderr: {}", self.stderr);
        &self.stdout
    }

    #[track_caller]
    fn fails(&self) -> &str {
        assert_eq!(
            self.code, 1,
            "expected exit 1; stdout: {} stderr: {}",
            self.stdout, self.stderr
        );
        &self.stderr
    }

    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// A region, a `bin` dir of tool links, a scratch dir, and the environment the tools run in.
struct Cli {
    region: TestRegion,
    bin: tempfile::TempDir,
    work: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Cli {
    async fn start() -> Cli {
        Cli::start_with(testkit::RegionOptions::default()).await
    }

    async fn start_with(opts: testkit::RegionOptions) -> Cli {
        let region = TestRegion::start_with(opts).await.unwrap();
        let bin = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_manta"))
            .arg("install-links")
            .arg(bin.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut env = region.cli_env(&region.account);
        env.push(("TZ".into(), "UTC".into()));
        env.push(("PATH".into(), "/usr/bin:/bin".into()));
        Cli {
            region,
            bin,
            work: tempfile::tempdir().unwrap(),
            env,
        }
    }

    fn user(&self) -> &str {
        &self.region.account.login
    }

    fn work(&self) -> &Path {
        self.work.path()
    }

    async fn exec(
        &self,
        program: &Path,
        args: &[&str],
        stdin: Option<&[u8]>,
        extra: &[(&str, &str)],
    ) -> Out {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .current_dir(self.work())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(data) = stdin {
            let mut w = child.stdin.take().unwrap();
            let data = data.to_vec();
            tokio::spawn(async move {
                let _ = w.write_all(&data).await;
            });
        }
        let out = child.wait_with_output().await.unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            bytes: out.stdout,
        }
    }

    /// Runs a tool through its link.
    async fn run(&self, tool: &str, args: &[&str]) -> Out {
        self.exec(&self.bin.path().join(tool), args, None, &[])
            .await
    }

    async fn run_env(&self, tool: &str, args: &[&str], extra: &[(&str, &str)]) -> Out {
        self.exec(&self.bin.path().join(tool), args, None, extra)
            .await
    }

    async fn run_stdin(&self, tool: &str, args: &[&str], stdin: &[u8]) -> Out {
        self.exec(&self.bin.path().join(tool), args, Some(stdin), &[])
            .await
    }

    /// Runs `manta <args>`.
    async fn manta(&self, args: &[&str]) -> Out {
        self.exec(Path::new(env!("CARGO_BIN_EXE_manta")), args, None, &[])
            .await
    }
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    testkit::xorshift_bytes(
        seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
        len,
    )
}

/// Every file under `root`, relative, with its bytes.
fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

impl Cli {
    /// Uploads `~~/stor/a/hello.txt` with `mput -f` from a local `hello.txt` (12 bytes of
    /// text, into the directory, so its name is kept), and `~~/stor/a/piped.bin` from stdin
    /// (300,000 bytes, `m-color: blue`, 3 copies). Returns the local file's path.
    async fn put_hello_and_piped(&self) -> PathBuf {
        let hello = self.work().join("hello.txt");
        write(&hello, b"hello world\n");
        self.run("mput", &["-f", hello.to_str().unwrap(), "~~/stor/a"])
            .await
            .ok();
        self.run_stdin(
            "mput",
            &["-H", "m-color: blue", "-c", "3", "~~/stor/a/piped.bin"],
            &noise(1, 300_000),
        )
        .await
        .ok();
        hello
    }

    /// A region [`Cli::seed`]ed, and its account's login.
    async fn seeded() -> (Cli, String) {
        let cli = Cli::start().await;
        cli.seed().await;
        let login = cli.user().to_owned();
        (cli, login)
    }

    /// What the tests of reading, listing and changing objects start from: `~~/stor/a/b/c`,
    /// `a/hello.txt` (12 bytes of text, from a file), `a/piped.bin` (300,000 bytes from stdin,
    /// `m-color: blue`, 3 copies) and `made/too/h.txt` (the same text, parents made by mput).
    async fn seed(&self) {
        self.run("mmkdir", &["-p", "~~/stor/a/b/c"]).await.ok();
        let hello = self.put_hello_and_piped().await;
        self.run(
            "mput",
            &[
                "-p",
                "-f",
                hello.to_str().unwrap(),
                "~~/stor/made/too/h.txt",
            ],
        )
        .await
        .ok();
        std::fs::remove_file(&hello).unwrap();
    }
}

/// The links, `manta <tool>`, usage errors and help, and bad configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_links_usage_and_configuration_errors() {
    let cli = Cli::start().await;

    // The links exist for every tool and point at the one binary.
    for tool in [
        "mput", "mget", "mls", "mfind", "msync", "mjob", "mchattr", "msign",
    ] {
        let link = cli.bin.path().join(tool);
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{tool}"
        );
    }
    // Installing again replaces the links.
    cli.manta(&["install-links", cli.bin.path().to_str().unwrap()])
        .await
        .ok();

    // `manta <tool>` works like the link; usage errors and unknown tools exit 1.
    assert!(cli.manta(&["mls", "~~"]).await.ok().contains("public/\n"));
    assert!(cli.manta(&["--help"]).await.ok().contains("msync"));
    assert!(
        cli.manta(&["nosuchtool"])
            .await
            .fails()
            .contains("unknown tool")
    );
    assert!(
        cli.run("mls", &["--bogus"])
            .await
            .fails()
            .contains("--bogus")
    );
    assert!(cli.run("mput", &["--help"]).await.ok().contains("--copies"));
    assert!(
        cli.run("mls", &["--help"])
            .await
            .ok()
            .contains("--human-readable")
    );
    let e = cli.run("mput", &["-m", "~~/stor/x"]).await;
    assert_eq!(e.fails(), "mput: --md5 requires --file\n");
    let e = cli.run("mls", &["/nobody-here/stor"]).await;
    assert!(
        e.fails().starts_with("mls: AccountDoesNotExist: "),
        "{}",
        e.stderr
    );
    let e = cli.run("mls", &["/x/notanarea"]).await;
    assert!(
        e.fails()
            .starts_with("mls: InvalidPath: /x/notanarea is not a valid Manta path"),
        "{}",
        e.stderr
    );
    // mjob is dispatched to the jobs tool.
    assert!(
        cli.run("mjob", &["--help"])
            .await
            .ok()
            .contains("addinputs")
    );
    assert!(cli.manta(&["mjob"]).await.fails().contains("usage: mjob"));

    // Configuration: a sub-user signs as /<account>/<user>/keys/..., which this account lacks.
    let e = cli
        .run_env("mls", &["~~/stor"], &[("MANTA_SUBUSER", "bob")])
        .await;
    assert!(
        e.fails().starts_with("mls: UserDoesNotExist: "),
        "{}",
        e.stderr
    );
    let e = cli.run_env("mls", &[], &[("MANTA_URL", "")]).await;
    assert!(
        e.fails().contains("url is a required argument"),
        "{}",
        e.stderr
    );
    let e = cli
        .run_env(
            "mls",
            &[],
            &[(
                "MANTA_KEY_ID",
                "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff",
            )],
        )
        .await;
    assert!(e.fails().contains("00:11:22"), "{}", e.stderr);
}

/// Directories and uploads: `mmkdir` with and without `-p`, `mput` from a file, stdin, with
/// `-p` and `-m`, and `minfo` of what was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mmkdir_mput_and_minfo() {
    let cli = Cli::start().await;

    // mmkdir -p, then mls of the parent.
    cli.run("mmkdir", &["-p", "~~/stor/a/b/c"]).await.ok();
    assert_eq!(cli.run("mls", &["~~/stor/a/b"]).await.ok(), "c/\n");
    // Without -p a missing parent is an error naming the code.
    let e = cli.run("mmkdir", &["~~/stor/nope/x"]).await;
    assert!(
        e.fails().starts_with("mmkdir: DirectoryDoesNotExist: "),
        "{}",
        e.stderr
    );

    // mput from a file, into a directory (the file's name is kept), and from stdin.
    let hello = cli.put_hello_and_piped().await;
    let e = cli.run_stdin("mput", &["~~/stor/a"], b"x").await;
    assert_eq!(e.fails(), "cannot infer name without -f\n");
    let e = cli
        .run_stdin("mput", &["~~/stor/missing/dir/x"], b"x")
        .await;
    assert!(
        e.fails().starts_with("mput: DirectoryDoesNotExist: "),
        "{}",
        e.stderr
    );
    cli.run_stdin("mput", &["-p", "~~/stor/made/by/mput/x"], b"x")
        .await
        .ok();
    cli.run(
        "mput",
        &[
            "-p",
            "-m",
            "-f",
            hello.to_str().unwrap(),
            "~~/stor/made/too/h.txt",
        ],
    )
    .await
    .ok();

    // minfo shows the status line and headers; the type was guessed from the name.
    let info = cli.run("minfo", &["~~/stor/a/hello.txt"]).await;
    let text = info.ok();
    assert!(text.starts_with("HTTP/1.1 200 OK\n"), "{text}");
    assert!(text.contains("content-type: text/plain\n"), "{text}");
    assert!(text.contains("content-length: 12\n"), "{text}");
    let j: serde_json::Value =
        serde_json::from_str(cli.run("minfo", &["-j", "~~/stor/a/piped.bin"]).await.ok()).unwrap();
    assert_eq!(j["statusCode"], 200);
    assert_eq!(j["m-color"], "blue");
    assert_eq!(j["durability-level"], "3");
    assert_eq!(j["content-length"], "300000");
}

/// Downloads: to stdout, `-o`, `-O`, several at once, errors that leave nothing behind, and
/// the progress bar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_to_stdout_files_and_its_errors() {
    let (cli, u) = Cli::seeded().await;

    // mget to stdout, to a file (-o), under the remote name (-O), several concatenated.
    assert_eq!(
        cli.run("mget", &["~~/stor/a/hello.txt"]).await.ok(),
        "hello world\n"
    );
    let got = cli.run("mget", &["~~/stor/a/piped.bin"]).await;
    assert_eq!(got.code, 0);
    assert_eq!(got.bytes, noise(1, 300_000));
    assert_eq!(got.stderr, "", "no progress bar into a pipe");
    let outfile = cli.work().join("out.bin");
    cli.run(
        "mget",
        &["-o", outfile.to_str().unwrap(), "~~/stor/a/piped.bin"],
    )
    .await
    .ok();
    assert_eq!(std::fs::read(&outfile).unwrap(), noise(1, 300_000));
    cli.run("mget", &["-O", "~~/stor/a/hello.txt"]).await.ok();
    assert_eq!(
        std::fs::read(cli.work().join("hello.txt")).unwrap(),
        b"hello world\n"
    );
    let two = cli
        .run("mget", &["~~/stor/a/hello.txt", "~~/stor/made/too/h.txt"])
        .await;
    assert_eq!(two.ok(), "hello world\nhello world\n");
    // Errors name the code and the path; nothing is left under the target's name.
    let e = cli
        .run(
            "mget",
            &[
                "-o",
                cli.work().join("never").to_str().unwrap(),
                "~~/stor/nope",
            ],
        )
        .await;
    assert_eq!(
        e.fails(),
        format!("mget: ResourceNotFound: /{u}/stor/nope was not found\n")
    );
    assert!(!cli.work().join("never").exists());
    let leftovers: Vec<_> = std::fs::read_dir(cli.work())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".mget-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let e = cli.run("mget", &["~~/stor/a"]).await;
    assert!(
        e.fails()
            .starts_with("mget: OperationNotAllowedOnDirectory: "),
        "{}",
        e.stderr
    );
    // --progress forces a bar even into a pipe.
    let bar = cli
        .run(
            "mget",
            &[
                "--progress",
                "-o",
                outfile.to_str().unwrap(),
                "~~/stor/a/piped.bin",
            ],
        )
        .await;
    bar.ok();
    assert!(bar.stderr.contains("100%"), "{}", bar.stderr);
}

/// Listings: names, long and human formats, JSON, type filter, order, marker, and errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mls_formats_order_and_errors() {
    let (cli, u) = Cli::seeded().await;

    // mls: names, long format, human sizes, JSON, type filter, reverse, marker, an object.
    assert_eq!(
        cli.run("mls", &["~~/stor/a"]).await.ok(),
        "b/\nhello.txt\npiped.bin\n"
    );
    assert_eq!(
        cli.run("mls", &["-r", "~~/stor/a"]).await.ok(),
        "piped.bin\nhello.txt\nb/\n"
    );
    assert_eq!(
        cli.run("mls", &["--type", "o", "~~/stor/a"]).await.ok(),
        "hello.txt\npiped.bin\n"
    );
    assert_eq!(
        cli.run("mls", &["-m", "hello.txt", "~~/stor/a"]).await.ok(),
        "hello.txt\npiped.bin\n"
    );
    assert_eq!(
        cli.run("mls", &["a"]).await.ok(),
        "b/\nhello.txt\npiped.bin\n",
        "relative to ~~/stor"
    );
    let long = cli.run("mls", &["-l", "~~/stor/a"]).await;
    let lines = long.lines();
    assert_eq!(lines.len(), 3, "{}", long.stdout);
    let dir_line = regex::Regex::new(&format!(
        r"^drwxr-xr-x 1 {u} +0 [A-Z][a-z]{{2}} \d\d \d\d:\d\d b$"
    ))
    .unwrap();
    assert!(dir_line.is_match(lines[0]), "{}", lines[0]);
    assert!(
        lines[2].starts_with(&format!("-rwxr-xr-x 1 {u}        300000 ")),
        "{}",
        lines[2]
    );
    let human = cli.run("mls", &["-lh", "~~/stor/a"]).await;
    assert!(
        human.lines()[2].starts_with(&format!("-rwxr-xr-x 1 {u}       292.97K ")),
        "{}",
        human.stdout
    );
    let json = cli.run("mls", &["-j", "~~/stor/a"]).await;
    let rows: Vec<serde_json::Value> = json
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["name"], "hello.txt");
    assert_eq!(rows[1]["type"], "object");
    assert_eq!(rows[1]["size"], 12);
    assert_eq!(rows[1]["parent"], format!("/{u}/stor/a"));
    assert_eq!(rows[0]["type"], "directory");
    assert_eq!(
        cli.run("mls", &["~~/stor/a/hello.txt"]).await.ok(),
        "hello.txt\n"
    );
    let e = cli.run("mls", &["~~/stor/nope"]).await;
    assert_eq!(
        e.fails(),
        format!("mls: ResourceNotFound: /{u}/stor/nope was not found\n")
    );
    // Newest first with -t.
    cli.run_stdin("mput", &["~~/stor/a/newest"], b"n")
        .await
        .ok();
    assert_eq!(
        cli.run("mls", &["-t", "--type", "o", "~~/stor/a"])
            .await
            .lines()[0],
        "newest"
    );
    // The account root lists the areas; the default is ~~/stor.
    assert!(cli.run("mls", &["~~"]).await.ok().contains("stor/\n"));
    assert!(cli.run("mls", &[]).await.ok().contains("a/\n"));
}

/// SnapLinks, metadata updates and removals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mln_mchattr_mrm_and_mrmdir() {
    let (cli, u) = Cli::seeded().await;

    // mln: a SnapLink reads the same bytes; mchattr replaces the stored headers.
    cli.run("mln", &["~~/stor/a/hello.txt", "~~/stor/a/link.txt"])
        .await
        .ok();
    assert_eq!(
        cli.run("mget", &["~~/stor/a/link.txt"]).await.ok(),
        "hello world\n"
    );
    let e = cli.run("mln", &["~~/stor/a/nothing", "~~/stor/a/l2"]).await;
    assert!(
        e.fails().starts_with("mln: SourceObjectNotFound: "),
        "{}",
        e.stderr
    );
    cli.run("mchattr", &["-H", "m-flavor: mint", "~~/stor/a/piped.bin"])
        .await
        .ok();
    let j: serde_json::Value =
        serde_json::from_str(cli.run("minfo", &["-j", "~~/stor/a/piped.bin"]).await.ok()).unwrap();
    assert_eq!(j["m-flavor"], "mint");
    assert!(j.get("m-color").is_none(), "{j}");
    let e = cli
        .run("mchattr", &["-H", "nocolon", "~~/stor/a/piped.bin"])
        .await;
    assert!(
        e.fails().contains("header must be in the form of"),
        "{}",
        e.stderr
    );

    // mchmod adds and removes role tags, keeping the stored headers; a role the account does
    // not have is refused; msign refuses role tags it could not honour.
    let login = cli.region.account.login.clone();
    for args in [
        vec![
            "policy",
            "create",
            &login,
            "read",
            "--rule",
            "CAN getobject",
        ],
        vec!["role", "create", &login, "reader", "--policy", "read"],
    ] {
        let out = cli
            .region
            .manta_adm()
            .unwrap()
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bad = cli
        .region
        .manta_adm()
        .unwrap()
        .args(["policy", "create", &login, "fly", "--rule", "CAN fly"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("\"fly\" is not an action"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    cli.run("mchmod", &["--", "+reader", "~~/stor/a/piped.bin"])
        .await
        .ok();
    let j: serde_json::Value =
        serde_json::from_str(cli.run("minfo", &["-j", "~~/stor/a/piped.bin"]).await.ok()).unwrap();
    assert_eq!(j["role-tag"], "reader", "{j}");
    assert_eq!(j["m-flavor"], "mint", "{j}");
    cli.run("mchmod", &["--", "-reader", "~~/stor/a/piped.bin"])
        .await
        .ok();
    let j: serde_json::Value =
        serde_json::from_str(cli.run("minfo", &["-j", "~~/stor/a/piped.bin"]).await.ok()).unwrap();
    assert!(j.get("role-tag").is_none(), "{j}");
    let e = cli
        .run("mchmod", &["--", "+nosuch", "~~/stor/a/piped.bin"])
        .await;
    assert!(e.fails().contains("InvalidRoleTag"), "{}", e.stderr);
    let e = cli.run("mchmod", &["reader", "~~/stor/a/piped.bin"]).await;
    assert!(e.fails().contains("[+-=]role"), "{}", e.stderr);
    let e = cli
        .run("msign", &["--role-tag", "reader", "~~/stor/a/piped.bin"])
        .await;
    assert!(
        e.fails().contains("--role-tag is not supported"),
        "{}",
        e.stderr
    );

    // mrm / mrmdir refuse the wrong kind of entry; mrm -r removes a tree.
    let e = cli.run("mrm", &["~~/stor/a/b"]).await;
    assert_eq!(e.fails(), format!("mrm: /{u}/stor/a/b is not an object\n"));
    let e = cli.run("mrmdir", &["~~/stor/a/hello.txt"]).await;
    assert_eq!(
        e.fails(),
        format!("mrmdir: /{u}/stor/a/hello.txt is not a directory\n")
    );
    let e = cli.run("mrmdir", &["~~/stor/a"]).await;
    assert!(
        e.fails().starts_with("mrmdir: DirectoryNotEmpty: "),
        "{}",
        e.stderr
    );
    cli.run("mrmdir", &["~~/stor/a/b/c"]).await.ok();
    cli.run("mrm", &["~~/stor/a/link.txt", "~~/stor/a/hello.txt"])
        .await
        .ok();
    cli.run("mrm", &["-r", "~~/stor/a"]).await.ok();
    let e = cli.run("minfo", &["~~/stor/a"]).await;
    assert_eq!(
        e.fails(),
        format!("minfo: ResourceNotFound: /{u}/stor/a was not found\n")
    );
}

/// The local tree the recursive tools work on, written under `src` in the scratch dir: nested
/// dirs, an empty dir, an empty file, a 3 MiB file, odd names; 17 files. Returns its path.
fn local_tree(cli: &Cli) -> PathBuf {
    let src = cli.work().join("src");
    write(&src.join("top.txt"), b"top\n");
    write(&src.join("empty"), b"");
    write(&src.join("big/blob.bin"), &noise(7, 3 * 1024 * 1024 + 17));
    write(&src.join("big/deeper/x y.txt"), b"spaces and more\n");
    write(&src.join("big/deeper/deepest/z.csv"), b"a,b\n1,2\n");
    for i in 0..12 {
        write(
            &src.join(format!("many/f{i:02}")),
            &noise(i, 1000 + i as usize),
        );
    }
    std::fs::create_dir_all(src.join("hollow")).unwrap();
    src
}

/// A region with [`local_tree`] uploaded as `~~/stor/tree` by `mput -r --parallel 4`; the
/// local tree's path.
async fn with_tree() -> (Cli, PathBuf) {
    let cli = Cli::start().await;
    let src = local_tree(&cli);
    let args = [
        "-r",
        "--parallel",
        "4",
        src.to_str().unwrap(),
        "~~/stor/tree",
    ];
    cli.run("mput", &args).await.ok();
    (cli, src)
}

impl Cli {
    /// Runs `msync` with `args` and then the local tree `src` and `~~/stor/mirror`.
    async fn sync_mirror(&self, args: &[&str], src: &Path) -> Out {
        let args = [args, &[src.to_str().unwrap(), "~~/stor/mirror"]].concat();
        self.run("msync", &args).await
    }
}

/// A region with [`local_tree`] copied to `~~/stor/mirror` by a first `msync`; the local
/// tree's path and what that first `msync` printed.
async fn with_mirror() -> (Cli, PathBuf, Out) {
    let cli = Cli::start().await;
    let src = local_tree(&cli);
    let sync = cli.sync_mirror(&[], &src).await;
    (cli, src, sync)
}

/// `mput -r` uploads the whole tree, the empty directory included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mput_r_uploads_a_tree() {
    let (cli, _src) = with_tree().await;
    assert_eq!(
        cli.run("mls", &["~~/stor/tree"]).await.ok(),
        "big/\nempty\nhollow/\nmany/\ntop.txt\n"
    );
}

/// `mget -r` brings back exactly the same bytes (and the empty directory), into `-o` or
/// `./<name>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_r_brings_back_the_same_bytes() {
    let (cli, src) = with_tree().await;
    let back = cli.work().join("back");
    let args = [
        "-r",
        "-p",
        "4",
        "-o",
        back.to_str().unwrap(),
        "~~/stor/tree",
    ];
    cli.run("mget", &args).await.ok();
    assert_eq!(read_tree(&back), read_tree(&src));
    assert!(back.join("hollow").is_dir());
    // Without -o it lands in ./<name>.
    cli.run("mget", &["-r", "~~/stor/tree/big"]).await.ok();
    assert_eq!(
        read_tree(&cli.work().join("big")),
        read_tree(&src.join("big"))
    );
}

/// `mfind`: everything, by name, by type, by size, by depth, limited, as JSON, an object, and
/// a missing directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfind_selects_by_name_type_size_and_depth() {
    let (cli, _src) = with_tree().await;
    let u = cli.user().to_owned();
    let all = cli.run("mfind", &["~~/stor/tree"]).await;
    assert_eq!(all.lines().len(), 22, "{}", all.stdout);
    assert_eq!(all.lines()[0], format!("/{u}/stor/tree/big"));
    assert_eq!(all.lines()[1], format!("/{u}/stor/tree/big/blob.bin"));
    let tree = format!("/{u}/stor/tree");
    for (args, want) in [
        (
            &["-n", r"\.(csv|txt)$", "~~/stor/tree"][..],
            format!("{tree}/big/deeper/deepest/z.csv\n{tree}/big/deeper/x y.txt\n{tree}/top.txt\n"),
        ),
        (
            &["-t", "d", "~~/stor/tree"],
            format!(
                "{tree}/big\n{tree}/big/deeper\n{tree}/big/deeper/deepest\n{tree}/hollow\n{tree}/many\n"
            ),
        ),
        (
            &["-t", "o", "-s", "1000000", "~~/stor/tree"],
            format!("{tree}/big/blob.bin\n"),
        ),
        (
            &["--maxdepth", "1", "-t", "o", "~~/stor/tree"],
            format!("{tree}/empty\n{tree}/top.txt\n"),
        ),
        (
            &["--mindepth", "2", "-t", "o", "~~/stor/tree/big"],
            format!("{tree}/big/deeper/deepest/z.csv\n"),
        ),
    ] {
        assert_eq!(cli.run("mfind", args).await.ok(), want, "mfind {args:?}");
    }
    assert_eq!(
        cli.run("mfind", &["-l", "2", "~~/stor/tree"])
            .await
            .lines()
            .len(),
        2
    );
    let j = cli.run("mfind", &["-j", "-n", "^z", "~~/stor/tree"]).await;
    let v: serde_json::Value = serde_json::from_str(j.ok().trim()).unwrap();
    assert_eq!(v["name"], "z.csv");
    assert_eq!(v["parent"], format!("/{u}/stor/tree/big/deeper/deepest"));
    assert_eq!(v["depth"], 3);
    assert_eq!(v["size"], 8);
    assert_eq!(
        cli.run("mfind", &["~~/stor/tree/top.txt"]).await.ok(),
        format!("/{u}/stor/tree/top.txt\n"),
        "an object finds itself"
    );
    let e = cli.run("mfind", &["~~/stor/nothing"]).await;
    assert_eq!(
        e.fails(),
        format!("mfind: in /{u}/stor/nothing: ResourceNotFound: /{u}/stor/nothing was not found\n")
    );
}

/// `msync`: a fresh copy sends everything; a second run sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msync_sends_everything_once() {
    let (cli, src, sync) = with_mirror().await;
    let u = cli.user().to_owned();
    let out = sync.ok();
    for want in [
        "source file list built, 17 files found".to_owned(),
        "sync list built, 17 files staged for syncing".to_owned(),
        "17 files (3.16 MB) synced successfully, 0 files failed to sync".to_owned(),
        format!("/{u}/stor/mirror/top.txt... not found, adding to sync list"),
    ] {
        assert!(out.contains(&want), "{out}");
    }
    let again = cli.sync_mirror(&[], &src).await;
    assert!(
        again
            .ok()
            .contains("sync list built, 0 files staged for syncing"),
        "{}",
        again.stdout
    );
}

/// After local changes (a size, content at the same size, one added, one removed): a dry run
/// by size reports but changes nothing; `-m -d` finds the same-size change too and deletes
/// what the source lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msync_compares_by_size_or_md5_and_deletes() {
    let (cli, src, _) = with_mirror().await;
    let u = cli.user().to_owned();
    // Change a size, change content at the same size, add one, remove one.
    write(&src.join("top.txt"), b"top, longer now\n");
    write(&src.join("many/f00"), &noise(99, 1000));
    write(&src.join("new/file"), b"new");
    std::fs::remove_file(src.join("many/f01")).unwrap();
    // Size comparison misses the same-size change; a dry run changes nothing.
    let dry = cli.sync_mirror(&["-n", "-d"], &src).await;
    let out = dry.ok();
    assert!(out.starts_with("== dryrun ==\n"), "{out}");
    for want in [
        "top.txt... size is different",
        "new/file... synced (dryrun)",
        "many/f01... deleted (dryrun)",
    ] {
        assert!(out.contains(&format!("/{u}/stor/mirror/{want}")), "{out}");
    }
    assert!(!out.contains("many/f00"), "{out}");
    assert_eq!(
        cli.run("mget", &["~~/stor/mirror/top.txt"]).await.ok(),
        "top\n"
    );
    // With -m the same-size change is found too; -d deletes what the source lost.
    let real = cli.sync_mirror(&["-m", "-d", "-p", "4"], &src).await;
    let out = real.ok();
    for want in [
        "sync list built, 3 files staged for syncing".to_owned(),
        format!("/{u}/stor/mirror/many/f00... md5 is different"),
        "1 files deleted successfully, 0 files failed to delete".to_owned(),
    ] {
        assert!(out.contains(&want), "{out}");
    }
    assert!(out.ends_with("done\n"), "{out}");
    let mirror = cli.work().join("mirror");
    let args = ["-r", "-o", mirror.to_str().unwrap(), "~~/stor/mirror"];
    cli.run("mget", &args).await.ok();
    assert_eq!(read_tree(&mirror), read_tree(&src));
}

/// Reverse: Manta to local, into a stale copy with an extra file, deleting it, quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msync_r_syncs_manta_to_a_local_copy() {
    let (cli, src, _) = with_mirror().await;
    let local = cli.work().join("local");
    write(&local.join("stale"), b"old");
    write(&local.join("top.txt"), b"wrong");
    let args = ["-r", "-d", "-q", "~~/stor/mirror", local.to_str().unwrap()];
    let rev = cli.run("msync", &args).await;
    assert_eq!(rev.ok(), "", "-q prints nothing");
    assert_eq!(read_tree(&local), read_tree(&src));
}

/// Excluded files are neither sent nor compared; a source that is not there is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msync_excludes_and_needs_its_source() {
    let (cli, src, _) = with_mirror().await;
    write(&src.join("skip.tmp"), b"tmp");
    let x = cli.sync_mirror(&["-x", "*.tmp"], &src).await;
    assert!(x.ok().contains("0 files staged"), "{}", x.stdout);
    // A source that is not there is an error.
    let e = cli
        .run("msync", &["/does/not/exist", "~~/stor/mirror"])
        .await;
    assert!(
        e.fails()
            .starts_with("msync: failed to walk files in /does/not/exist"),
        "{}",
        e.stderr
    );
}

/// `mrm -r` removes big trees, in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mrm_r_removes_big_trees() {
    let (cli, src) = with_tree().await;
    cli.sync_mirror(&[], &src).await.ok();
    cli.run("mrm", &["-r", "-p", "8", "~~/stor/tree", "~~/stor/mirror"])
        .await
        .ok();
    assert_eq!(cli.run("mls", &["~~/stor"]).await.ok(), "");
}

impl Cli {
    /// A region whose account has the private object `~~/stor/secret.txt` (`for your eyes
    /// only`), for the signed URL tests.
    async fn with_secret() -> Cli {
        let cli = Cli::start().await;
        cli.run_stdin("mput", &["~~/stor/secret.txt"], b"for your eyes only")
            .await
            .ok();
        cli
    }

    /// The URL `msign ARGS` prints (it must succeed), with `extra` in its environment.
    async fn msign(&self, args: &[&str], extra: &[(&str, &str)]) -> String {
        let out = self.run_env("msign", args, extra).await;
        out.ok().trim().to_owned()
    }
}

/// The status of the answer to `req`.
async fn status_of(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_objects_refuse_anonymous_reads() {
    let cli = Cli::with_secret().await;
    let u = cli.user();
    let anon = reqwest::Client::new().get(format!("{}/{u}/stor/secret.txt", cli.region.url));
    assert_eq!(status_of(anon).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_signed_for_an_hour_opens_its_object() {
    let cli = Cli::with_secret().await;
    let u = cli.user();
    let url = cli.msign(&["-E", "1h", "~~/stor/secret.txt"], &[]).await;
    assert!(
        url.starts_with(&format!("{}/{u}/stor/secret.txt?", cli.region.url)),
        "{url}"
    );
    for p in ["algorithm=", "expires=", "keyId=", "signature="] {
        assert!(url.contains(p), "{url}");
    }
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "for your eyes only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_url_opens_no_other_method_and_nothing_once_tampered_with() {
    let cli = Cli::with_secret().await;
    let http = reqwest::Client::new();
    let url = cli.msign(&["-E", "1h", "~~/stor/secret.txt"], &[]).await;
    assert_eq!(status_of(http.delete(&url)).await, 403);
    let tampered = url.replace("secret.txt", "other.txt");
    assert_eq!(status_of(http.get(&tampered)).await, 403);
}

/// A sub-user's URL acts in the roles `--role` names (the signed `role` parameter), else in
/// its default roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_users_url_acts_in_the_roles_it_was_signed_with() {
    let cli = Cli::with_secret().await;
    let login = cli.user().to_owned();
    let pubkey = cli.region.account.key.with_extension("pub");
    let adm = |args: &[&str]| {
        let out = cli.region.manta_adm().unwrap().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    adm(&[
        "user",
        "create",
        &login,
        "bob",
        "--key",
        pubkey.to_str().unwrap(),
    ]);
    adm(&[
        "policy",
        "create",
        &login,
        "read",
        "--rule",
        "CAN getobject",
    ]);
    adm(&[
        "role", "create", &login, "reader", "--member", "bob", "--policy", "read",
    ]);
    cli.run("mchmod", &["--", "+reader", "~~/stor/secret.txt"])
        .await
        .ok();
    let as_bob = [("MANTA_SUBUSER", "bob")];
    let plain = cli.msign(&["~~/stor/secret.txt"], &as_bob).await;
    assert!(!plain.contains("role="), "{plain}");
    // bob has no default role: his plain URL opens nothing.
    assert_eq!(status_of(reqwest::Client::new().get(&plain)).await, 403);
    let url = cli
        .msign(&["--role", "reader", "~~/stor/secret.txt"], &as_bob)
        .await;
    assert!(url.contains("role=reader"), "{url}");
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "for your eyes only");
    // The role is signed: changing it breaks the URL.
    let swapped = url.replace("role=reader", "role=writer");
    assert_eq!(status_of(reqwest::Client::new().get(&swapped)).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msign_m_names_the_methods() {
    let cli = Cli::with_secret().await;
    let url = cli
        .msign(&["-m", "get", "-m", "HEAD", "~~/stor/secret.txt"], &[])
        .await;
    assert_eq!(status_of(reqwest::Client::new().head(&url)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msign_e_sets_an_absolute_expiry() {
    let cli = Cli::with_secret().await;
    let http = reqwest::Client::new();
    let past = cli.msign(&["-e", "1000", "~~/stor/secret.txt"], &[]).await;
    assert_eq!(status_of(http.get(&past)).await, 403, "expired");
    let future = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let url = cli
        .msign(&["-e", &future.to_string(), "~~/stor/secret.txt"], &[])
        .await;
    assert!(url.contains(&format!("expires={future}")), "{url}");
    assert_eq!(status_of(http.get(&url)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msign_gives_one_url_a_path() {
    let cli = Cli::start().await;
    assert_eq!(
        cli.run("msign", &["~~/stor/a", "~~/stor/b"])
            .await
            .lines()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msign_refuses_bad_input_in_the_originals_words() {
    let cli = Cli::start().await;
    for (args, want) in [
        (&["-E", "1x"][..], "msign: invalid expires: 1x\n"),
        (
            &["-e", "5", "-E", "1h"],
            "msign: -e and -E cannot be specified together\n",
        ),
        (&["-m", "FETCH"], "msign: method invalid: FETCH\n"),
    ] {
        let args = [args, &["~~/stor/a"]].concat();
        assert_eq!(cli.run("msign", &args).await.fails(), want, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msign_f_signs_with_a_given_key_file() {
    let cli = Cli::with_secret().await;
    let key = cli.region.account.key.to_str().unwrap().to_owned();
    let url = cli.msign(&["-f", &key, "~~/stor/secret.txt"], &[]).await;
    assert_eq!(status_of(reqwest::Client::new().get(&url)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_only_by_ssh_agent_signs_requests_and_urls() {
    let cli = Cli::with_secret().await;
    let agent = Agent::start(&cli.region.account.key);
    // No key file under ~/.ssh.
    let empty_home = tempfile::tempdir().unwrap();
    let sock = agent.sock.to_str().unwrap();
    let home = empty_home.path().to_str().unwrap();
    let via_agent = [("HOME", home), ("SSH_AUTH_SOCK", sock)];
    let ls = cli.run_env("mls", &["~~/stor"], &via_agent).await;
    assert_eq!(ls.ok(), "secret.txt\n");
    let url = cli.msign(&["~~/stor/secret.txt"], &via_agent).await;
    assert_eq!(status_of(reqwest::Client::new().get(&url)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_file_or_an_agent_there_is_no_key() {
    let cli = Cli::start().await;
    let empty_home = tempfile::tempdir().unwrap();
    let home = empty_home.path().to_str().unwrap();
    let e = cli
        .run_env(
            "mls",
            &["~~/stor"],
            &[("HOME", home), ("SSH_AUTH_SOCK", "")],
        )
        .await;
    assert!(e.fails().contains("ssh-agent"), "{}", e.stderr);
}

/// An `ssh-agent` holding one key, stopped on drop.
struct Agent {
    child: std::process::Child,
    sock: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(key: &Path) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let child = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The socket appears when the agent binds it, a moment before it listens: ssh-add is
        // retried until the agent takes the key (for up to 2 s).
        let mut added = false;
        for _ in 0..100 {
            if sock.exists() {
                let st = std::process::Command::new("ssh-add")
                    .arg(key)
                    .env("SSH_AUTH_SOCK", &sock)
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                if st.success() {
                    added = true;
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(added, "ssh-add failed");
        Agent {
            child,
            sock,
            _dir: dir,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_insecure_accepts_a_self_signed_front_door() {
    let opts = testkit::RegionOptions {
        tls: true,
        ..testkit::RegionOptions::default()
    };
    let mut cli = Cli::start_with(opts).await;
    assert!(cli.region.url.starts_with("https://"));
    // The harness trusts its own certificate; a user starts without that.
    cli.env.retain(|(k, _)| k != "MANTA_TLS_INSECURE");
    let e = cli.run("mls", &["~~"]).await;
    assert!(
        e.fails().to_lowercase().contains("certificate"),
        "{}",
        e.stderr
    );
    let ok = cli
        .run_env("mls", &["~~"], &[("MANTA_TLS_INSECURE", "1")])
        .await;
    assert!(ok.ok().contains("stor/"), "{}", ok.stderr);
    assert!(cli.run("mls", &["-i", "~~"]).await.ok().contains("stor/"));
    // A false value does not turn checking off.
    let e = cli
        .run_env("mls", &["~~"], &[("MANTA_TLS_INSECURE", "false")])
        .await;
    e.fails();
    // Transfers work over TLS too.
    cli.run_stdin("mput", &["-i", "~~/stor/over-tls"], &noise(3, 100_000))
        .await
        .ok();
    assert_eq!(
        cli.run("mget", &["-i", "~~/stor/over-tls"]).await.bytes,
        noise(3, 100_000)
    );
}

/// `muntar` extracts a tar of the local tree (every file with bytes, in nested directories
/// made as needed) and prints each object; `mget -r` brings the same files back; `mmd5` prints
/// what `md5sum` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muntar_extracts_a_tree_and_mmd5_prints_digests() {
    let cli = Cli::start().await;
    let src = local_tree(&cli);
    let tarball = cli.work().join("tree.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
    b.append_dir_all("tree", &src).unwrap();
    b.finish().unwrap();
    drop(b);
    let t = tarball.to_str().unwrap();
    let out = cli.run("muntar", &["-f", t, "-p", "4", "~~/stor/x"]).await;
    let mut printed = out.lines();
    printed.sort_unstable();
    let u = cli.user().to_owned();
    let mut want: Vec<String> = read_tree(&src)
        .into_iter()
        .filter(|(_, bytes)| !bytes.is_empty())
        .map(|(rel, _)| format!("/{u}/stor/x/tree/{rel}"))
        .collect();
    want.sort_unstable();
    assert_eq!(printed, want, "{}", out.stderr);
    let back = cli.work().join("back");
    let args = ["-r", "-o", back.to_str().unwrap(), "~~/stor/x/tree"];
    cli.run("mget", &args).await.ok();
    let mut expected = read_tree(&src);
    expected.retain(|_, bytes| !bytes.is_empty());
    assert_eq!(read_tree(&back), expected);

    let blob = std::fs::read(src.join("big/blob.bin")).unwrap();
    let md5: String = md5_digest(&blob)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = format!("/{u}/stor/x/tree/big/blob.bin");
    assert_eq!(
        cli.run("mmd5", &["~~/stor/x/tree/big/blob.bin"]).await.ok(),
        format!("{md5}  {path}\n")
    );
    let dir = cli.run("mmd5", &["~~/stor/x/tree/big"]).await;
    assert!(dir.fails().contains("is a directory"), "{}", dir.stderr);

    // A member naming a path outside the directory fails the whole extraction up front.
    let evil = cli.work().join("evil.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&evil).unwrap());
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    b.finish().unwrap();
    drop(b);
    let refused = cli
        .run("muntar", &["-f", evil.to_str().unwrap(), "~~/stor/y"])
        .await;
    assert!(
        refused.fails().contains("outside the directory"),
        "{}",
        refused.stderr
    );
    assert!(
        cli.run("mls", &["~~/stor/y"])
            .await
            .fails()
            .contains("NotFound")
    );
}

fn md5_digest(b: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    md5::Md5::digest(b).into()
}
