//! What every tool shares: the connection options, building the client, remote path
//! resolution, header parsing, error reporting, human-readable sizes, progress bars.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use base64::Engine as _;
use clap::Args;
use clap::builder::FalseyValueParser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use manta_client::{ClientConfig, MantaClient, Progress, PutOptions};
use manta_types::MantaPath;
use md5::{Digest as _, Md5};

/// The help section of the connection options.
const CONN: &str = "Manta connection options";

/// Connection options every tool takes (the original's names and environment variables).
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Manta account (login name).
    #[arg(
        help_heading = CONN,
        short = 'a',
        long = "account",
        env = "MANTA_USER",
        value_name = "ACCOUNT"
    )]
    pub account: Option<String>,
    /// Manta sub-user (login name).
    #[arg(
        help_heading = CONN,
        long = "user",
        visible_alias = "subuser",
        env = "MANTA_SUBUSER",
        value_name = "USER"
    )]
    pub subuser: Option<String>,
    /// Assume a role (repeat, or give a comma-separated list).
    #[arg(
        help_heading = CONN,
        long = "role",
        env = "MANTA_ROLE",
        value_delimiter = ',',
        value_name = "ROLE,ROLE,..."
    )]
    pub role: Vec<String>,
    /// Do not validate the server's TLS certificate.
    #[arg(help_heading = CONN, short = 'i', long = "insecure", env = "MANTA_TLS_INSECURE",
          value_parser = FalseyValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub insecure: bool,
    /// SSH key fingerprint (MD5 or SHA256); the first key found in ~/.ssh or ssh-agent
    /// when absent.
    #[arg(help_heading = CONN, short = 'k', long = "keyId", env = "MANTA_KEY_ID", value_name = "FP")]
    pub key_id: Option<String>,
    /// Manta URL.
    #[arg(help_heading = CONN, short = 'u', long = "url", env = "MANTA_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Verbose logging to stderr (repeat for more).
    #[arg(help_heading = CONN, short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Conn {
    /// The account, or the error the original gives without one.
    ///
    /// # Errors
    /// When neither `-a` nor `MANTA_USER` is set.
    pub fn account(&self) -> Result<&str> {
        self.account
            .as_deref()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| anyhow!("account is a required argument (-a or MANTA_USER)"))
    }

    /// Each remote path as given on the command line, resolved for this account
    /// (see [`resolve`]).
    ///
    /// # Errors
    /// When the account is missing or a path is not valid.
    pub fn resolve_all(&self, paths: &[String]) -> Result<Vec<String>> {
        let account = self.account()?;
        paths.iter().map(|p| resolve(p, account)).collect()
    }

    /// The client configuration these options describe.
    ///
    /// # Errors
    /// When the URL or the account is missing.
    pub fn config(&self) -> Result<ClientConfig> {
        let url = self
            .url
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| anyhow!("url is a required argument (-u or MANTA_URL)"))?;
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        let no_auth = std::env::var("MANTA_NO_AUTH")
            .is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no" | "off"));
        Ok(ClientConfig {
            url,
            user: self.account()?.to_owned(),
            subuser: self.subuser.clone().filter(|s| !s.is_empty()),
            key_id: self.key_id.clone().filter(|k| !k.is_empty()),
            insecure: self.insecure,
            ssh_dir: std::path::PathBuf::from(home).join(".ssh"),
            no_auth,
            timeout: Duration::from_secs(60),
        })
    }

    /// Sets up logging for `-v` and builds the client (finding the signing key).
    ///
    /// # Errors
    /// Missing configuration, or no usable key.
    pub async fn client(&self) -> Result<MantaClient> {
        init_logging(self.verbose);
        let cfg = self.config()?;
        let roles: Vec<String> = self
            .role
            .iter()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        Ok(MantaClient::new(cfg).await?.with_roles(roles))
    }
}

/// `-v`: the client's and the tools' debug logs; `-vv`: everything.
fn init_logging(verbose: u8) {
    if verbose == 0 {
        return;
    }
    let filter = if verbose == 1 {
        "manta_client=debug,manta_cli=debug"
    } else {
        "trace"
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Normalises a `/`-separated path as POSIX does: no empty or `.` segments, `..` removes the
/// segment before it (and stops at the root), no trailing slash.
pub fn normalize(p: &str) -> String {
    let absolute = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !absolute {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if absolute {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// Ends a tool that went on past failures: prints each (`TOOL: failure`) and exits 1 when
/// there was any, 0 otherwise.
pub fn exit_after_failures(tool: &str, failures: &[String]) -> ExitCode {
    for f in failures {
        eprintln!("{tool}: {f}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The base64 MD5 of a local file, as `Content-MD5` and `computed-md5` spell it (read on the
/// blocking pool).
///
/// # Errors
/// When the file cannot be read.
pub async fn file_md5(path: &std::path::Path) -> Result<String> {
    let path = path.to_owned();
    let digest = manta_util::blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        let mut h = Md5::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(h.finalize())
    })
    .await?;
    Ok(base64::engine::general_purpose::STANDARD.encode(digest))
}

/// Resolves a remote path as the tools take it: `~~` is the account's root, a relative path
/// is under `~~/stor`, and the result is normalised and validated.
///
/// # Errors
/// When the result is not a valid namespace path.
pub fn resolve(raw: &str, account: &str) -> Result<String> {
    let expanded = manta_types::expand_tilde(raw.trim(), account);
    let absolute = if expanded.starts_with('/') {
        expanded
    } else {
        format!("/{account}/stor/{expanded}")
    };
    let norm = normalize(&absolute);
    MantaPath::parse(&norm)
        .map(|p| p.to_string())
        .map_err(|e| anyhow!("InvalidPath: {raw} is not a valid Manta path ({e})"))
}

/// Parses `-H 'name: value'` options.
///
/// # Errors
/// When one has no colon (the original's wording).
pub fn parse_headers(raw: &[String]) -> Result<Vec<(String, String)>> {
    raw.iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| anyhow!("header must be in the form of \"[header]: value\""))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(anyhow!("header must be in the form of \"[header]: value\""));
            }
            Ok((k.to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

/// `--role-tag a,b --role-tag c` as one header value.
pub fn role_tag(tags: &[String]) -> Option<(String, String)> {
    let tags: Vec<&str> = tags
        .iter()
        .flat_map(|t| t.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    (!tags.is_empty()).then(|| ("role-tag".to_owned(), tags.join(",")))
}

/// How an error is shown after `<tool>: `: the server's code and message for API errors
/// (`ResourceNotFound: /jill/stor/nope was not found`), the cause chain otherwise.
pub fn describe(e: &anyhow::Error) -> String {
    if let Some(c) = e.downcast_ref::<manta_client::Error>() {
        return describe_client(c);
    }
    format!("{e:#}")
}

/// [`describe`] for a client error.
pub fn describe_client(e: &manta_client::Error) -> String {
    match e {
        manta_client::Error::Api {
            code,
            message,
            path,
            ..
        } => {
            if message.is_empty() {
                format!("{code}: {path}")
            } else {
                format!("{code}: {message}")
            }
        }
        manta_client::Error::Http { path, source } => {
            // reqwest's own message is terse; its sources say what actually failed.
            let mut msg = source.to_string();
            let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(source);
            while let Some(s) = cur {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                cur = s.source();
            }
            format!("{path}: {msg}")
        }
        other => other.to_string(),
    }
}

/// Prints `<tool>: <error>` to stderr and returns exit code 1.
pub fn fail(tool: &str, e: &anyhow::Error) -> ExitCode {
    if manta_util::cli::is_broken_pipe(e.as_ref()) {
        // The reader went away (`mget obj | head`): end quietly, as Unix tools do.
        return ExitCode::from(manta_util::cli::CLOSED_PIPE_STATUS as u8);
    }
    eprintln!("{tool}: {}", describe(e));
    ExitCode::from(1)
}

/// Runs a tool's async body on a small runtime; errors are printed as `<tool>: <error>` and
/// give exit code 1, an interrupt (Ctrl-C) exit code 130.
pub fn run<F>(tool: &str, fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<ExitCode>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")
    {
        Ok(rt) => rt,
        Err(e) => return fail(tool, &e),
    };
    // Ctrl-C drops the work in progress, so temporary download files are removed on the way
    // out instead of being left behind.
    let interrupted = rt.block_on(async {
        tokio::select! {
            r = fut => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    match interrupted {
        Some(Ok(code)) => code,
        Some(Err(e)) => fail(tool, &e),
        None => {
            eprintln!("{tool}: interrupted");
            ExitCode::from(130)
        }
    }
}

/// A tool's whole `main`: parses its arguments (as [`parse`] does), then runs `body` with them
/// (as [`run`] does).
pub fn parse_and_run<P, F, Fut>(tool: &str, args: Vec<String>, body: F) -> ExitCode
where
    P: clap::Parser,
    F: FnOnce(P) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode>>,
{
    match parse::<P>(args) {
        Ok(a) => run(tool, body(a)),
        Err(code) => code,
    }
}

/// Parses a tool's arguments; `--help`/`--version` print and exit 0, bad usage prints the
/// problem and the usage and exits 1 (as the original tools do).
///
/// # Errors
/// The exit code to return instead of running.
pub fn parse<P: clap::Parser>(args: Vec<String>) -> Result<P, ExitCode> {
    P::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Sizes as the original's `-h` shows them: powers of 1024, at most two decimals, trailing
/// zeros dropped, no space (`0`, `512`, `1K`, `1.5M`, `2.25G`).
pub fn human_size(bytes: u64) -> String {
    const SUFFIXES: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    for i in (0..SUFFIXES.len()).rev() {
        let unit = 1024f64.powi(i as i32);
        if bytes as f64 >= unit {
            let s = format!("{:.2}", bytes as f64 / unit);
            let s = s.trim_end_matches('0').trim_end_matches('.');
            return format!("{s}{}", SUFFIXES[i]);
        }
    }
    "0".to_owned()
}

/// Sizes as `msync` reports them: SI units, three significant digits (`100 B`, `1.34 kB`).
pub fn si_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        return format!("{bytes} B");
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    format!("{s} {}", UNITS[i])
}

/// Whether to draw progress: `--progress` forces it; otherwise only when stderr is a terminal
/// and `-q` was not given.
pub fn want_progress(quiet: bool, force: bool) -> bool {
    force || (!quiet && std::io::stderr().is_terminal())
}

/// A transfer progress bar on stderr (drawn even when stderr is not a terminal: callers
/// decide with [`want_progress`]). `None` size draws a spinner with the bytes moved.
pub fn progress_bar(name: &str, size: Option<u64>) -> ProgressBar {
    let target = ProgressDrawTarget::term_like_with_hz(Box::new(StderrTerm::new()), 10);
    let bar = match size {
        Some(n) => {
            let b = ProgressBar::with_draw_target(Some(n), target);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg:30!} [{bar:30}] {percent:>3}% {bytes:>10} {binary_bytes_per_sec:>12} {eta:>4}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        }
        None => {
            let b = ProgressBar::with_draw_target(None, target);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg:30!} {spinner} {bytes:>10} {binary_bytes_per_sec:>12}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        }
    };
    bar.set_message(name.to_owned());
    bar
}

/// A progress callback moving `bar` to the reported position (plus `base`, for bars that
/// span several transfers).
pub fn bar_progress(bar: &ProgressBar) -> Progress {
    let bar = bar.clone();
    Progress::new(move |pos| bar.set_position(pos))
}

/// stderr as indicatif's terminal, whether or not it is one, so `--progress` can force a bar
/// into a pipe or a log. Cursor movement uses ANSI sequences.
#[derive(Debug)]
struct StderrTerm {
    width: u16,
}

impl StderrTerm {
    fn new() -> StderrTerm {
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(100);
        StderrTerm { width }
    }

    fn write(&self, s: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut e = std::io::stderr().lock();
        e.write_all(s.as_bytes())
    }
}

impl indicatif::TermLike for StderrTerm {
    fn width(&self) -> u16 {
        self.width
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.write(&format!("\x1b[{n}A"))?;
        }
        Ok(())
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.write(&format!("\x1b[{n}B"))?;
        }
        Ok(())
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.write(&format!("\x1b[{n}C"))?;
        }
        Ok(())
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.write(&format!("\x1b[{n}D"))?;
        }
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.write("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        use std::io::Write as _;
        std::io::stderr().flush()
    }
}

/// What every upload takes (`mput`, `muntar`): copies, headers and role tags.
#[derive(Debug, Clone, Args)]
pub struct UploadFlags {
    /// Number of copies to make (the server's default, 2, when absent).
    #[arg(short = 'c', long, value_name = "COPIES",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub copies: Option<u32>,
    /// HTTP header to send, as 'name: value' (repeat for more).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub header: Vec<String>,
    /// Role tags to apply to the object.
    #[arg(long = "role-tag", value_name = "TAG,TAG...")]
    pub role_tag: Vec<String>,
}

impl UploadFlags {
    /// The headers for an upload: `-H`, `--role-tag`.
    ///
    /// # Errors
    /// A header not in the form `name: value`.
    pub fn headers(&self) -> Result<Vec<(String, String)>> {
        let mut h = parse_headers(&self.header)?;
        h.extend(role_tag(&self.role_tag));
        Ok(h)
    }

    /// The options of an upload to `remote` with `headers`: the copies, and a content type
    /// guessed from the name unless a header gives one.
    pub fn options(&self, headers: &[(String, String)], remote: &str) -> PutOptions {
        upload_options(self.copies, headers, remote)
    }
}

/// The options of an upload to `remote` with `copies` and `headers`, with a content type
/// guessed from the name unless a header gives one.
pub fn upload_options(
    copies: Option<u32>,
    headers: &[(String, String)],
    remote: &str,
) -> PutOptions {
    let explicit = headers.iter().any(|(k, _)| k == "content-type");
    PutOptions {
        copies,
        content_type: (!explicit).then(|| super::mime::content_type_for(remote)),
        headers: headers.to_vec(),
        ..PutOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalizes_like_posix() {
        for (a, b) in [
            ("/a//b/./c/", "/a/b/c"),
            ("/a/b/../c", "/a/c"),
            ("/../a", "/a"),
            ("/", "/"),
            ("a/../..", ".."),
            ("", "."),
        ] {
            assert_eq!(normalize(a), b, "{a}");
        }
    }

    #[test]
    fn resolves_remote_paths() {
        assert_eq!(resolve("~~/stor/x/", "jill").unwrap(), "/jill/stor/x");
        assert_eq!(resolve("~~", "jill").unwrap(), "/jill");
        assert_eq!(resolve("a/b", "jill").unwrap(), "/jill/stor/a/b");
        assert_eq!(
            resolve("/bob/public/../stor/z", "jill").unwrap(),
            "/bob/stor/z"
        );
        let e = resolve("/jill/nope/x", "jill").unwrap_err().to_string();
        assert!(e.starts_with("InvalidPath: /jill/nope/x"), "{e}");
    }

    #[test]
    fn headers_and_tags() {
        let h = parse_headers(&["Content-Type: text/plain".into(), "m-a:  b:c ".into()]).unwrap();
        assert_eq!(
            h,
            vec![
                ("content-type".to_owned(), "text/plain".to_owned()),
                ("m-a".to_owned(), "b:c".to_owned())
            ]
        );
        assert!(parse_headers(&["nocolon".into()]).is_err());
        assert!(parse_headers(&[": v".into()]).is_err());
        assert_eq!(
            role_tag(&["a, b".into(), "c".into()]),
            Some(("role-tag".to_owned(), "a,b,c".to_owned()))
        );
        assert_eq!(role_tag(&[]), None);
    }

    #[test]
    fn sizes() {
        for (n, s) in [
            (0, "0"),
            (512, "512"),
            (1024, "1K"),
            (1536, "1.5K"),
            (1024 * 1024 * 5 / 2, "2.5M"),
            (1024u64.pow(3) * 9 / 4, "2.25G"),
        ] {
            assert_eq!(human_size(n), s, "{n}");
        }
        for (n, s) in [
            (0, "0 B"),
            (100, "100 B"),
            (1337, "1.34 kB"),
            (10_000, "10 kB"),
            (123_456_789, "123 MB"),
        ] {
            assert_eq!(si_size(n), s, "{n}");
        }
    }

    proptest! {
        #[test]
        fn normalize_is_idempotent_and_clean(p in "[a-z./]{0,30}") {
            let once = normalize(&p);
            prop_assert_eq!(normalize(&once), once.clone());
            prop_assert!(!once.contains("//"));
            prop_assert!(once == "/" || !once.ends_with('/'));
            prop_assert!(once == "." || !once.split('/').any(|s| s == "."));
        }

        #[test]
        fn resolve_never_panics(p in "\\PC{0,60}") {
            let _ = resolve(&p, "jill");
        }

        #[test]
        fn resolved_paths_parse_again(p in "(~~/stor/)?[a-z]{1,5}(/[a-z.]{1,5}){0,4}/?") {
            if let Ok(r) = resolve(&p, "jill") {
                prop_assert_eq!(resolve(&r, "jill").unwrap(), r.clone());
                prop_assert!(MantaPath::parse(&r).is_ok());
            }
        }

        #[test]
        fn headers_round_trip(k in "[a-z][a-z0-9-]{0,10}", v in "[ -~]{0,20}") {
            let h = parse_headers(&[format!("{k}: {v}")]).unwrap();
            prop_assert_eq!(&h[0].0, &k);
            prop_assert_eq!(&h[0].1, v.trim());
        }

        #[test]
        fn human_size_never_panics(n in any::<u64>()) {
            let s = human_size(n);
            prop_assert!(!s.is_empty());
            let _ = si_size(n);
        }
    }
}
