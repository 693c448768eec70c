//! `msync`: make a Manta directory match a local one (or, with `-r`, a local directory match
//! a Manta one), sending only files that are missing or differ in size (or MD5 with `-m`),
//! optionally deleting what the source does not have. Checks and transfers run in parallel.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures_util::StreamExt as _;
use manta_client::{DownloadOptions, EntryType, MantaClient, WalkOptions};

use super::common::{
    Conn, describe_client, file_md5, parse_and_run, parse_headers, resolve, si_size,
};
use super::get::{persist, temp_beside};
use super::put::scan_local;

/// Synchronise a local directory to a Manta directory (or back, with -r).
#[derive(Debug, Parser)]
#[command(name = "msync", version)]
struct Args {
    #[command(flatten)]
    conn: Conn,
    /// Number of copies of each uploaded object.
    #[arg(short = 'c', long, value_name = "COPIES",
          value_parser = clap::value_parser!(u32).range(1..))]
    copies: Option<u32>,
    /// Delete files at the destination that the source does not have.
    #[arg(short = 'd', long)]
    delete: bool,
    /// Skip source files matching this pattern (one `*` wildcard; repeat for more).
    #[arg(short = 'x', long = "exclude", value_name = "PATTERN")]
    exclude: Vec<String>,
    /// HTTP header to send with uploads, as 'name: value'.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    header: Vec<String>,
    /// Send nothing; only delete extra destination files.
    #[arg(short = 'j', long = "just-delete")]
    just_delete: bool,
    /// Ignore symbolic links in the local directory.
    #[arg(short = 'l', long = "ignore-links")]
    ignore_links: bool,
    /// Compare MD5s instead of sizes (slower, more accurate).
    #[arg(short = 'm', long)]
    md5: bool,
    /// Show what would be done, change nothing.
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Checks and transfers in flight at once.
    #[arg(short = 'p', long, value_name = "CONCURRENCY", default_value_t = 50,
          value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// Print nothing but errors.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Manta to local: `msync -r ~~/stor/dir ./dir`.
    #[arg(short = 'r', long)]
    reverse: bool,
    /// The source directory (local; Manta with -r).
    #[arg(value_name = "SOURCE")]
    source: String,
    /// The destination directory (Manta; local with -r).
    #[arg(value_name = "DEST")]
    dest: String,
}

/// `msync`.
pub fn main(args: Vec<String>) -> ExitCode {
    parse_and_run("msync", args, |a: Args| async move { msync(a).await })
}

/// An `--exclude` pattern: the part before the first `*` must start the relative path, the
/// part after it must end it (a leading `./` or `/` is ignored on both).
#[derive(Debug, Clone)]
pub struct Glob {
    starts: String,
    ends: String,
}

fn clean(s: &str) -> &str {
    s.strip_prefix("./").unwrap_or(s).trim_start_matches('/')
}

impl Glob {
    /// Parses a pattern.
    pub fn new(pattern: &str) -> Glob {
        let c = clean(pattern);
        let mut parts = c.splitn(2, '*');
        let starts = parts.next().unwrap_or("").to_owned();
        let ends = parts.next().unwrap_or("").replace('*', "");
        Glob { starts, ends }
    }

    /// True when `path` (relative to the source) is excluded.
    pub fn matches(&self, path: &str) -> bool {
        let p = clean(path);
        p.len() >= self.starts.len() + self.ends.len()
            && p.starts_with(&self.starts)
            && p.ends_with(&self.ends)
    }
}

/// Progress lines: level 0 always (unless -q), 1 with -v, 2 with -vv.
struct Log {
    verbosity: i32,
    errors: Mutex<Vec<String>>,
}

impl Log {
    fn say(&self, level: i32, msg: &str) {
        if level <= self.verbosity {
            println!("{msg}");
        }
    }

    fn error(&self, msg: String) {
        eprintln!("{msg}");
        if let Ok(mut e) = self.errors.lock() {
            e.push(msg);
        }
    }
}

fn took(start: Instant) -> String {
    let ms = start.elapsed().as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s {}ms", ms / 1000, ms % 1000)
    }
}

/// What is known of a file on either side.
#[derive(Debug, Clone)]
struct Meta {
    size: u64,
    /// Base64 MD5, when known without reading the file.
    md5: Option<String>,
}

/// The local side: its files, relative, with sizes.
async fn local_files(root: &Path, follow_links: bool) -> Result<Vec<(String, u64)>> {
    let root = root.to_owned();
    let tree = manta_util::blocking(move || scan_local(&root, follow_links)).await?;
    Ok(tree.files)
}

/// The Manta side: its objects, relative, with sizes and MD5s (from the listings). A
/// directory that does not exist has none.
async fn remote_files(
    client: &MantaClient,
    root: &str,
    parallel: usize,
) -> Result<Vec<(String, Meta)>> {
    let mut out = Vec::new();
    let mut walk = client.walk(
        root,
        WalkOptions {
            parallel,
            max_depth: None,
        },
    );
    while let Some(item) = walk.next().await {
        match item {
            Ok(w) if w.entry.kind == EntryType::Object => {
                let full = w.path();
                let rel = full[root.len()..].trim_start_matches('/').to_owned();
                out.push((
                    rel,
                    Meta {
                        size: w.entry.size.unwrap_or(0),
                        md5: w.entry.content_md5.clone(),
                    },
                ));
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() && out.is_empty() => return Ok(out),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

struct Plan {
    /// Relative paths of the source files (after exclusions).
    source: Vec<(String, Meta)>,
}

async fn msync(a: Args) -> Result<ExitCode> {
    let account = a.conn.account()?.to_owned();
    let mut conn = a.conn.clone();
    // The first two -v are msync's own; more turn on the client's debug logs.
    let verbosity = if a.quiet {
        -1
    } else {
        i32::from(a.conn.verbose.min(2))
    };
    conn.verbose = a.conn.verbose.saturating_sub(2);
    let log = Log {
        verbosity,
        errors: Mutex::new(Vec::new()),
    };
    let globs: Vec<Glob> = a.exclude.iter().map(|g| Glob::new(g)).collect();
    let headers = parse_headers(&a.header)?;
    let (remote, local) = if a.reverse {
        (resolve(&a.source, &account)?, absolute(&a.dest)?)
    } else {
        (resolve(&a.dest, &account)?, absolute(&a.source)?)
    };
    let client = conn.client().await?;
    let parallel = usize::from(a.parallel);

    if a.dry_run {
        log.say(0, "== dryrun ==");
    }
    log.say(0, "building source file list...");
    let mut source: Vec<(String, Meta)> = if a.reverse {
        let info = client.info(&remote).await?;
        if !info.is_directory() {
            bail!("{remote} is not a directory");
        }
        remote_files(&client, &remote, parallel).await?
    } else {
        let meta = std::fs::metadata(&local)
            .with_context(|| format!("failed to walk files in {}", local.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a directory", local.display());
        }
        local_files(&local, !a.ignore_links)
            .await?
            .into_iter()
            .map(|(rel, size)| (rel, Meta { size, md5: None }))
            .collect()
    };
    source.retain(|(rel, _)| match globs.iter().find(|g| g.matches(rel)) {
        Some(g) => {
            log.say(
                2,
                &format!("skipping {rel} because it was excluded by {g:?}"),
            );
            false
        }
        None => true,
    });
    log.say(
        0,
        &format!("source file list built, {} files found", source.len()),
    );
    let plan = Plan { source };
    if plan.source.is_empty() {
        return Ok(done(&log));
    }
    let ctx = Ctx {
        a: &a,
        client: &client,
        log: &log,
        remote: &remote,
        local: &local,
        headers: &headers,
        parallel,
    };
    if !a.just_delete {
        let staged = ctx.compare(&plan).await;
        ctx.transfer(&staged).await;
    }
    if a.delete || a.just_delete {
        ctx.delete_extra(&plan).await;
    }
    Ok(done(&log))
}

fn done(log: &Log) -> ExitCode {
    let errors = log.errors.lock().map(|e| e.clone()).unwrap_or_default();
    if !errors.is_empty() {
        eprintln!("\n== errors\n");
        for e in &errors {
            eprintln!("{e}");
        }
    }
    log.say(0, "done");
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn absolute(p: &str) -> Result<PathBuf> {
    let p = Path::new(p);
    Ok(if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir()?.join(p)
    })
}

struct Ctx<'a> {
    a: &'a Args,
    client: &'a MantaClient,
    log: &'a Log,
    remote: &'a str,
    local: &'a Path,
    headers: &'a [(String, String)],
    parallel: usize,
}

impl Ctx<'_> {
    /// The destination's name for a relative path, as progress lines show it.
    fn dest_name(&self, rel: &str) -> String {
        if self.a.reverse {
            self.local.join(rel).display().to_string()
        } else {
            format!("{}/{rel}", self.remote)
        }
    }

    /// What the destination has at `rel`: `Ok(None)` when nothing.
    async fn dest_meta(&self, rel: &str) -> Result<Option<Meta>> {
        if self.a.reverse {
            let path = self.local.join(rel);
            let m = manta_util::blocking(move || match std::fs::metadata(&path) {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            })
            .await?;
            Ok(m.map(|m| Meta {
                size: m.len(),
                md5: None,
            }))
        } else {
            match self.client.info(&format!("{}/{rel}", self.remote)).await {
                Ok(info) if info.is_directory() => bail!("is a directory"),
                Ok(info) => Ok(Some(Meta {
                    size: info.size().unwrap_or(0),
                    md5: info.header("content-md5").map(str::to_owned),
                })),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    }

    /// The MD5 of `rel` on the local side.
    async fn local_md5(&self, rel: &str) -> Result<String> {
        file_md5(&self.local.join(rel)).await
    }

    /// Whether `rel` must be sent, printing why.
    async fn differs(&self, rel: &str, src: &Meta, n: usize, total: usize) -> Result<bool> {
        let dest = self.dest_name(rel);
        let Some(d) = self.dest_meta(rel).await? else {
            self.log.say(
                0,
                &format!("{dest}... not found, adding to sync list ({n}/{total})"),
            );
            return Ok(true);
        };
        if self.a.md5 {
            // One side's MD5 comes from Manta; the other is computed from the local file.
            let (s, d) = if self.a.reverse {
                (src.md5.clone(), Some(self.local_md5(rel).await?))
            } else {
                (Some(self.local_md5(rel).await?), d.md5)
            };
            if s.is_some() && s == d {
                self.log.say(
                    1,
                    &format!("{dest}... md5 same as source file, skipping ({n}/{total})"),
                );
                Ok(false)
            } else {
                self.log.say(
                    0,
                    &format!("{dest}... md5 is different, adding to sync list ({n}/{total})"),
                );
                Ok(true)
            }
        } else if d.size == src.size {
            self.log.say(
                1,
                &format!("{dest}... size same as source file, skipping ({n}/{total})"),
            );
            Ok(false)
        } else {
            self.log.say(
                0,
                &format!("{dest}... size is different, adding to sync list ({n}/{total})"),
            );
            Ok(true)
        }
    }

    /// Checks every source file against the destination; returns those to send.
    async fn compare(&self, plan: &Plan) -> Vec<(String, Meta)> {
        let start = Instant::now();
        let total = plan.source.len();
        let processed = std::sync::atomic::AtomicUsize::new(0);
        let staged: Vec<(String, Meta)> = futures_util::stream::iter(&plan.source)
            .map(|(rel, meta)| {
                let processed = &processed;
                async move {
                    let r = self.differs_counted(rel, meta, processed, total).await;
                    r.then(|| (rel.clone(), meta.clone()))
                }
            })
            .buffer_unordered(self.parallel)
            .filter_map(std::future::ready)
            .collect()
            .await;
        self.log.say(
            0,
            &format!(
                "\nsync list built, {} files staged for syncing (took {})",
                staged.len(),
                took(start)
            ),
        );
        staged
    }

    async fn differs_counted(
        &self,
        rel: &str,
        meta: &Meta,
        processed: &std::sync::atomic::AtomicUsize,
        total: usize,
    ) -> bool {
        // Count before printing so lines show how far along the check is.
        let n = processed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        match self.differs(rel, meta, n, total).await {
            Ok(d) => d,
            Err(e) => {
                self.log.error(format!(
                    "{}... unknown error: {} ({n}/{total})",
                    self.dest_name(rel),
                    describe(&e)
                ));
                false
            }
        }
    }

    /// Sends one file to the destination.
    async fn send(&self, rel: &str) -> Result<()> {
        if self.a.reverse {
            let target = self.local.join(rel);
            if let Some(parent) = target.parent() {
                let parent = parent.to_owned();
                manta_util::blocking(move || std::fs::create_dir_all(parent)).await?;
            }
            let tmp = temp_beside(&target).await?;
            let opts = DownloadOptions {
                objects_only: true,
                ..DownloadOptions::default()
            };
            let (tmp, _) = self
                .client
                .get_to_writer(&format!("{}/{rel}", self.remote), opts, tmp)
                .await?;
            persist(tmp, &target).await
        } else {
            let path = format!("{}/{rel}", self.remote);
            let file = self.local.join(rel);
            let opts = super::common::upload_options(self.a.copies, self.headers, &path);
            let mut r = self.client.put_file(&path, &file, opts.clone()).await;
            if matches!(&r, Err(e) if e.code_str() == Some("DirectoryDoesNotExist")) {
                self.client
                    .mkdirp(manta_types::path::dirname(&path))
                    .await?;
                r = self.client.put_file(&path, &file, opts).await;
            }
            r.map(|_| ()).map_err(Into::into)
        }
    }

    async fn transfer(&self, staged: &[(String, Meta)]) {
        if staged.is_empty() {
            return;
        }
        let start = Instant::now();
        let total = staged.len();
        let counters = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<(bool, u64)> = futures_util::stream::iter(staged)
            .map(|(rel, meta)| {
                let counters = &counters;
                async move {
                    let dest = self.dest_name(rel);
                    if self.a.dry_run {
                        self.log.say(0, &format!("{dest}... synced (dryrun)"));
                        return (true, 0);
                    }
                    let r = self.send(rel).await;
                    let n = counters.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    match r {
                        Ok(()) => {
                            self.log.say(0, &format!("{dest}... synced ({n}/{total})"));
                            (true, meta.size)
                        }
                        Err(e) => {
                            self.log.error(format!(
                                "{dest}... error syncing: {} ({n}/{total})",
                                describe(&e)
                            ));
                            (false, 0)
                        }
                    }
                }
            })
            .buffer_unordered(self.parallel)
            .collect()
            .await;
        if self.a.dry_run {
            return;
        }
        let ok = results.iter().filter(|(ok, _)| *ok).count();
        let bytes: u64 = results.iter().map(|(_, b)| b).sum();
        self.log.say(
            0,
            &format!(
                "\n{ok} files ({}) synced successfully, {} files failed to sync (took {})",
                si_size(bytes),
                total - ok,
                took(start)
            ),
        );
    }

    /// Deletes destination files the source does not have.
    async fn delete_extra(&self, plan: &Plan) {
        self.log
            .say(0, "\nbuilding destination file list for deletion...");
        let keep: HashSet<&str> = plan.source.iter().map(|(r, _)| r.as_str()).collect();
        let dest: Result<Vec<String>> = if self.a.reverse {
            local_files(self.local, !self.a.ignore_links)
                .await
                .map(|f| f.into_iter().map(|(r, _)| r).collect())
        } else {
            remote_files(self.client, self.remote, self.parallel)
                .await
                .map(|f| f.into_iter().map(|(r, _)| r).collect())
        };
        let extra: Vec<String> = match dest {
            Ok(d) => d
                .into_iter()
                .filter(|r| !keep.contains(r.as_str()))
                .collect(),
            Err(e) => {
                self.log
                    .error(format!("error listing destination files: {}", describe(&e)));
                return;
            }
        };
        self.log.say(
            0,
            &format!("destination file list built, {} files found", extra.len()),
        );
        if extra.is_empty() {
            return;
        }
        let start = Instant::now();
        let total = extra.len();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        let ok: Vec<bool> = futures_util::stream::iter(&extra)
            .map(|rel| {
                let counter = &counter;
                async move {
                    let dest = self.dest_name(rel);
                    if self.a.dry_run {
                        self.log.say(0, &format!("{dest}... deleted (dryrun)"));
                        return true;
                    }
                    let r: Result<()> = if self.a.reverse {
                        let p = self.local.join(rel);
                        manta_util::blocking(move || std::fs::remove_file(p))
                            .await
                            .map_err(Into::into)
                    } else {
                        self.client.rm(&dest).await.map_err(Into::into)
                    };
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    match r {
                        Ok(()) => {
                            self.log.say(0, &format!("{dest}... deleted ({n}/{total})"));
                            true
                        }
                        Err(e) => {
                            self.log.error(format!(
                                "{dest}... error deleting: {} ({n}/{total})",
                                describe(&e)
                            ));
                            false
                        }
                    }
                }
            })
            .buffer_unordered(self.parallel)
            .collect()
            .await;
        if self.a.dry_run {
            return;
        }
        let deleted = ok.iter().filter(|b| **b).count();
        self.log.say(
            0,
            &format!(
                "\n{deleted} files deleted successfully, {} files failed to delete (took {})",
                total - deleted,
                took(start)
            ),
        );
    }
}

fn describe(e: &anyhow::Error) -> String {
    match e.downcast_ref::<manta_client::Error>() {
        Some(c) => describe_client(c),
        None => format!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn globs_like_the_original() {
        let g = Glob::new("*.txt");
        assert!(g.matches("/foo/bar/baz.txt"));
        assert!(g.matches("baz.txt"));
        assert!(!g.matches("/foo/bar/baz.png"));
        let g = Glob::new("./build/*");
        assert!(g.matches("build/x/y"));
        assert!(!g.matches("src/build/x"));
        let g = Glob::new("exact");
        assert!(g.matches("exact"));
        assert!(g.matches("exact/child"));
        assert!(!g.matches("inexact"));
    }

    proptest! {
        #[test]
        fn glob_never_panics_and_star_matches_all(p in "\\PC{0,20}", s in "\\PC{0,20}") {
            let _ = Glob::new(&p).matches(&s);
            prop_assert!(Glob::new("*").matches(&s));
        }

        #[test]
        fn glob_matches_its_own_pieces(a in "[a-z]{0,5}", mid in "[a-z/]{0,5}", b in "[a-z.]{0,5}") {
            let g = Glob::new(&format!("{a}*{b}"));
            let s = format!("{a}{mid}{b}");
            prop_assert!(g.matches(&s));
        }
    }
}
