//! `mput`: upload a file or stdin to an object, or (`-r`) a local directory tree to a Manta
//! directory with several uploads in flight.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use futures_util::StreamExt as _;
use indicatif::ProgressBar;
use manta_client::{MantaClient, Progress};

use super::common::{
    Conn, UploadFlags, bar_progress, describe_client, exit_after_failures, file_md5, parse_and_run,
    progress_bar, resolve, want_progress,
};

/// Upload a file (or stdin) to a Manta object; with -r, a directory tree.
#[derive(Debug, Parser)]
#[command(name = "mput", version)]
struct Args {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    upload: UploadFlags,
    /// Local file to upload (with -r, the local directory).
    #[arg(short = 'f', long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Compute the MD5 first and have the server verify it (requires -f).
    #[arg(short = 'm', long)]
    md5: bool,
    /// Create parent directories as needed.
    #[arg(short = 'p', long)]
    parents: bool,
    /// Do not draw a progress bar.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Draw the progress bar even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    /// Upload a local directory tree: `mput -r LOCALDIR REMOTEDIR` (or `-f LOCALDIR REMOTEDIR`).
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Uploads in flight at once with -r.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// The object to write (with -r: [LOCALDIR] REMOTEDIR).
    #[arg(value_name = "PATH")]
    paths: Vec<String>,
}

/// `mput`.
pub fn main(args: Vec<String>) -> ExitCode {
    parse_and_run("mput", args, |a: Args| async move {
        if a.recursive {
            put_tree(a).await
        } else {
            put_one(a).await
        }
    })
}

/// The original's wording for the refusals people hit most.
fn explain(e: manta_client::Error) -> anyhow::Error {
    match e.code_str() {
        Some("OperationNotAllowedOnDirectory" | "OperationNotAllowedOnRootDirectory") => {
            anyhow!("Cannot write to a directory; specify full object path")
        }
        Some("PreconditionFailed") => anyhow!("Cannot write because HTTP precondition not met."),
        _ => anyhow!(describe_client(&e)),
    }
}

async fn put_one(a: Args) -> Result<ExitCode> {
    let [raw] = a.paths.as_slice() else {
        bail!("mput takes exactly one path (use -r to upload a directory)");
    };
    if a.md5 && a.file.is_none() {
        bail!("--md5 requires --file");
    }
    let account = a.conn.account()?.to_owned();
    let mut path = resolve(raw, &account)?;
    let headers = a.upload.headers()?;
    let client = a.conn.client().await?;

    if let Some(f) = &a.file {
        let meta = std::fs::metadata(f).with_context(|| f.display().to_string())?;
        if !meta.is_file() {
            bail!("{} is not a file", f.display());
        }
    }
    // Writing "into" a directory puts the file under its own name there.
    match client.info(&path).await {
        Ok(info) if info.is_directory() => match &a.file {
            Some(f) => {
                let name = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| anyhow!("cannot infer a name from {}", f.display()))?;
                path = format!("{path}/{name}");
            }
            None => {
                // The original's words, without the tool's prefix.
                eprintln!("cannot infer name without -f");
                return Ok(ExitCode::from(1));
            }
        },
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }

    let mut opts = a.upload.options(&headers, &path);
    let bar = want_progress(a.quiet, a.progress).then(|| {
        let size = a
            .file
            .as_ref()
            .and_then(|f| std::fs::metadata(f).ok())
            .map(|m| m.len());
        progress_bar(&path, size)
    });
    opts.progress = bar.as_ref().map(bar_progress);

    let result = match &a.file {
        Some(f) => {
            if a.md5 {
                opts.content_md5 = Some(file_md5(f).await?);
            }
            let mut r = client.put_file(&path, f, opts.clone()).await;
            if a.parents && matches!(&r, Err(e) if e.code_str() == Some("DirectoryDoesNotExist")) {
                client.mkdirp(parent_of(&path)).await?;
                r = client.put_file(&path, f, opts).await;
            }
            r
        }
        None => {
            // stdin can be read only once, so the parents must exist before it is sent.
            if a.parents {
                client.mkdirp(parent_of(&path)).await?;
            }
            client.put_reader(&path, std::io::stdin(), opts).await
        }
    };
    if let Some(b) = bar {
        b.finish();
    }
    result.map_err(explain)?;
    Ok(ExitCode::SUCCESS)
}

fn parent_of(path: &str) -> &str {
    manta_types::path::dirname(path)
}

/// A local tree: directories (parents first) and files, relative to its root.
#[derive(Debug, Default)]
pub struct LocalTree {
    /// Directories, relative, each after its parent.
    pub dirs: Vec<String>,
    /// Files, relative, with their sizes.
    pub files: Vec<(String, u64)>,
    /// What was skipped and why.
    pub skipped: Vec<String>,
}

/// Scans `root` (blocking): regular files and symlinks to files are taken, symlinks to
/// directories and special files are skipped (and reported). Names that are not UTF-8 are
/// skipped too: object names are text.
///
/// # Errors
/// When `root` cannot be read.
pub fn scan_local(root: &Path, follow_links: bool) -> std::io::Result<LocalTree> {
    let mut tree = LocalTree::default();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(&rel)
        };
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                tree.skipped
                    .push(format!("{}: name is not UTF-8", e.path().display()));
                continue;
            };
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type()?;
            if ft.is_symlink() {
                if !follow_links {
                    tree.skipped.push(format!("{child}: symbolic link"));
                    continue;
                }
                match std::fs::metadata(e.path()) {
                    Ok(m) if m.is_file() => tree.files.push((child, m.len())),
                    Ok(m) if m.is_dir() => tree
                        .skipped
                        .push(format!("{child}: symbolic link to a directory")),
                    _ => tree
                        .skipped
                        .push(format!("{child}: dangling or special link")),
                }
            } else if ft.is_dir() {
                tree.dirs.push(child.clone());
                subdirs.push(child);
            } else if ft.is_file() {
                tree.files.push((child, e.metadata()?.len()));
            } else {
                tree.skipped.push(format!("{child}: not a regular file"));
            }
        }
        // Depth-first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(tree)
}

/// A progress callback for one of several transfers sharing `bar`: adds what this transfer
/// moved since its last report (and takes back what a retry starts over).
pub fn shared_progress(bar: &ProgressBar) -> Progress {
    let bar = bar.clone();
    let last = Arc::new(AtomicU64::new(0));
    Progress::new(move |pos| {
        let prev = last.swap(pos, Ordering::Relaxed);
        if pos >= prev {
            bar.inc(pos - prev);
        } else {
            bar.set_position(bar.position().saturating_sub(prev - pos));
        }
    })
}

async fn put_tree(a: Args) -> Result<ExitCode> {
    let (local, remote) = match (&a.file, a.paths.as_slice()) {
        (Some(f), [r]) => (f.clone(), r.clone()),
        (None, [l, r]) => (PathBuf::from(l), r.clone()),
        _ => bail!("usage: mput -r LOCALDIR REMOTEDIR (or mput -r -f LOCALDIR REMOTEDIR)"),
    };
    let account = a.conn.account()?.to_owned();
    let remote = resolve(&remote, &account)?;
    let headers = a.upload.headers()?;
    let meta = std::fs::metadata(&local).with_context(|| local.display().to_string())?;
    if !meta.is_dir() {
        bail!("{} is not a directory", local.display());
    }
    let client = a.conn.client().await?;
    let tree = {
        let local = local.clone();
        manta_util::blocking(move || scan_local(&local, true)).await?
    };
    for s in &tree.skipped {
        eprintln!("mput: skipping {s}");
    }
    let failures = upload_tree(&client, &a, &headers, &local, &remote, &tree).await?;
    Ok(exit_after_failures("mput", &failures))
}

async fn upload_tree(
    client: &MantaClient,
    a: &Args,
    headers: &[(String, String)],
    local: &Path,
    remote: &str,
    tree: &LocalTree,
) -> Result<Vec<String>> {
    let parallel = usize::from(a.parallel);
    client.mkdirp(remote).await?;
    // Directories level by level, each level's in parallel.
    let mut by_depth: Vec<Vec<&str>> = Vec::new();
    for d in &tree.dirs {
        let depth = d.matches('/').count();
        if by_depth.len() <= depth {
            by_depth.resize_with(depth + 1, Vec::new);
        }
        by_depth[depth].push(d);
    }
    for level in by_depth {
        let results: Vec<Result<(), manta_client::Error>> = futures_util::stream::iter(level)
            .map(|d| {
                let path = format!("{remote}/{d}");
                async move { client.mkdir(&path).await }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            return Err(e.into());
        }
    }

    let total: u64 = tree.files.iter().map(|(_, n)| n).sum();
    let bar = want_progress(a.quiet, a.progress).then(|| progress_bar(remote, Some(total)));
    let failures: Vec<String> = futures_util::stream::iter(&tree.files)
        .map(|(rel, _)| {
            let path = format!("{remote}/{rel}");
            let file = local.join(rel);
            let mut opts = a.upload.options(headers, &path);
            opts.progress = bar.as_ref().map(shared_progress);
            async move {
                client
                    .put_file(&path, &file, opts)
                    .await
                    .map_err(|e| describe_client(&e))
            }
        })
        .buffer_unordered(parallel)
        .filter_map(|r| std::future::ready(r.err()))
        .collect()
        .await;
    if let Some(b) = bar {
        b.finish();
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_a_tree_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("top.txt"), "12345").unwrap();
        std::fs::write(root.join("b/c/deep"), "").unwrap();
        std::os::unix::fs::symlink(root.join("top.txt"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("b"), root.join("dirlink")).unwrap();
        let t = scan_local(root, true).unwrap();
        assert_eq!(t.dirs, vec!["a", "b", "b/c"]);
        let mut files = t.files.clone();
        files.sort();
        assert_eq!(
            files,
            vec![
                ("b/c/deep".to_owned(), 0),
                ("link".to_owned(), 5),
                ("top.txt".to_owned(), 5)
            ]
        );
        assert_eq!(t.skipped.len(), 1, "{:?}", t.skipped);
        let t = scan_local(root, false).unwrap();
        assert_eq!(t.skipped.len(), 2, "{:?}", t.skipped);
    }
}
