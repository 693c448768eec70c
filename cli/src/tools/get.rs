//! `mget`: download objects to stdout or a file, or (`-r`) a Manta directory tree to a local
//! directory with several downloads in flight.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use futures_util::{StreamExt as _, TryStreamExt as _};
use manta_client::{DownloadOptions, MantaClient, WalkEntry, WalkOptions};

use super::common::{
    Conn, bar_progress, describe_client, exit_after_failures, parse_and_run, parse_headers,
    progress_bar, resolve, want_progress,
};
use super::put::shared_progress;

/// Download Manta objects (to stdout unless -o/-O); with -r, a directory tree.
#[derive(Debug, Parser)]
#[command(name = "mget", version)]
struct Args {
    #[command(flatten)]
    conn: Conn,
    /// HTTP header to send, as 'name: value' (repeat for more).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    header: Vec<String>,
    /// Do not draw a progress bar.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Draw the progress bar even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    /// Write to FILE instead of stdout (with -r: the local directory to fill).
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Write to a local file named like the object.
    #[arg(short = 'O', long = "remote-name")]
    remote_name: bool,
    /// Download a directory tree (into -o DIR, or ./<name of the directory>).
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Downloads in flight at once with -r.
    #[arg(short = 'p', long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// Objects to download.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
}

/// `mget`.
pub fn main(args: Vec<String>) -> ExitCode {
    parse_and_run("mget", args, |a: Args| async move {
        let r = if a.recursive {
            get_tree(a).await
        } else {
            get_objects(a).await
        };
        // A reader that went away (`mget x | head`) ends the download quietly, as it should.
        match r {
            Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
            r => r,
        }
    })
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(c.downcast_ref::<manta_client::Error>(),
                Some(manta_client::Error::Io(io)) if io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Where a single download goes.
enum Target {
    Stdout,
    /// A regular file (or a new one): written beside, renamed into place.
    File(PathBuf),
    /// Something else that exists (`/dev/null`, a fifo): written in place.
    Special(PathBuf),
}

async fn get_objects(a: Args) -> Result<ExitCode> {
    let paths = a.conn.resolve_all(&a.paths)?;
    let output = if a.remote_name {
        let [p] = paths.as_slice() else {
            bail!("--remote-name only works with a single object path");
        };
        Some(PathBuf::from(p.rsplit('/').next().unwrap_or(p)))
    } else {
        a.output.clone()
    };
    let target = match output {
        None => Target::Stdout,
        Some(p) if p.as_os_str() == "-" => Target::Stdout,
        Some(p) => {
            let meta = {
                let p = p.clone();
                manta_util::blocking(move || Ok(std::fs::metadata(p).ok())).await?
            };
            match meta {
                Some(m) if !m.is_file() && !m.is_dir() => Target::Special(p),
                Some(m) if m.is_dir() => bail!("{} is a directory", p.display()),
                _ => Target::File(p),
            }
        }
    };
    let headers = parse_headers(&a.header)?;
    let client = a.conn.client().await?;
    // A bar on a terminal that also shows the bytes would garble both.
    let bars = want_progress(a.quiet, a.progress)
        && !(matches!(target, Target::Stdout) && std::io::stdout().is_terminal() && !a.progress);

    match target {
        Target::Stdout => {
            let mut out = std::io::stdout();
            for p in &paths {
                out = download(&client, p, &headers, bars, out).await?;
            }
        }
        Target::Special(path) => {
            let mut f = {
                let p2 = path.clone();
                manta_util::blocking(move || std::fs::OpenOptions::new().write(true).open(p2))
                    .await
                    .with_context(|| path.display().to_string())?
            };
            for p in &paths {
                f = download(&client, p, &headers, bars, f).await?;
            }
        }
        Target::File(path) => {
            let mut tmp = temp_beside(&path).await?;
            for p in &paths {
                tmp = download(&client, p, &headers, bars, tmp).await?;
            }
            persist(tmp, &path).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn download<W: std::io::Write + Send + 'static>(
    client: &MantaClient,
    path: &str,
    headers: &[(String, String)],
    bar: bool,
    w: W,
) -> Result<W> {
    let bar = if bar {
        let size = client.info(path).await?.size();
        Some(progress_bar(path, size))
    } else {
        None
    };
    let opts = DownloadOptions {
        headers: headers.to_vec(),
        progress: bar.as_ref().map(bar_progress),
        objects_only: true,
        ..DownloadOptions::default()
    };
    let r = client.get_to_writer(path, opts, w).await;
    if let Some(b) = bar {
        b.finish();
    }
    Ok(r?.0)
}

/// A temporary file in the directory of `target`, so the final rename stays on one
/// filesystem.
pub(crate) async fn temp_beside(target: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    manta_util::blocking(move || {
        tempfile::Builder::new()
            .prefix(&format!(".{name}.mget-"))
            .tempfile_in(&dir)
    })
    .await
    .with_context(|| format!("create a temporary file beside {}", target.display()))
}

/// Flushes the download to disk and renames it to `target`.
pub(crate) async fn persist(tmp: tempfile::NamedTempFile, target: &Path) -> Result<()> {
    let target = target.to_owned();
    manta_util::blocking(move || {
        tmp.as_file().sync_all()?;
        tmp.persist(&target).map_err(|e| e.error)?;
        Ok(())
    })
    .await
    .context("move the download into place")
}

/// True for a name that is safe to use as one local path component.
fn safe_component(name: &str) -> bool {
    !(name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']))
}

async fn get_tree(a: Args) -> Result<ExitCode> {
    let [raw] = a.paths.as_slice() else {
        bail!("mget -r takes exactly one directory");
    };
    let account = a.conn.account()?.to_owned();
    let remote = resolve(raw, &account)?;
    let local = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(remote.rsplit('/').next().unwrap_or("download")));
    let parallel = usize::from(a.parallel);
    let headers = parse_headers(&a.header)?;
    let client = a.conn.client().await?;
    let info = client.info(&remote).await?;
    if !info.is_directory() {
        bail!("{remote} is not a directory (mget without -r downloads an object)");
    }
    let entries: Vec<WalkEntry> = client
        .walk(
            &remote,
            WalkOptions {
                parallel,
                max_depth: None,
            },
        )
        .try_collect()
        .await?;

    // Local directories first, parents before children (the walk yields them in that order).
    let mut dirs = vec![local.clone()];
    let mut files = Vec::new();
    for e in &entries {
        let rel = e
            .path()
            .strip_prefix(&remote)
            .map(|r| r.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        if !rel.split('/').all(safe_component) {
            bail!(
                "refusing the unsafe name {:?} in {}",
                e.entry.name,
                e.parent
            );
        }
        if e.entry.is_dir() {
            dirs.push(local.join(&rel));
        } else {
            files.push((e.path(), local.join(&rel), e.entry.size.unwrap_or(0)));
        }
    }
    manta_util::blocking(move || {
        for d in dirs {
            std::fs::create_dir_all(&d)?;
        }
        Ok(())
    })
    .await
    .context("create the local directories")?;

    let total = files.iter().map(|(_, _, n)| n).sum();
    let bar = want_progress(a.quiet, a.progress).then(|| progress_bar(&remote, Some(total)));
    let failures: Vec<String> = futures_util::stream::iter(files)
        .map(|(remote_path, local_path, _)| {
            let client = client.clone();
            let headers = headers.clone();
            let progress = bar.as_ref().map(shared_progress);
            async move {
                let fetch = async {
                    let tmp = temp_beside(&local_path).await?;
                    let opts = DownloadOptions {
                        headers,
                        progress,
                        objects_only: true,
                        ..DownloadOptions::default()
                    };
                    let (tmp, _) = client
                        .get_to_writer(&remote_path, opts, tmp)
                        .await
                        .map_err(|e| anyhow!(describe_client(&e)))?;
                    persist(tmp, &local_path).await
                };
                fetch.await.err().map(|e| format!("{e:#}"))
            }
        })
        .buffer_unordered(parallel)
        .filter_map(std::future::ready)
        .collect()
        .await;
    if let Some(b) = bar {
        b.finish();
    }
    Ok(exit_after_failures("mget", &failures))
}
