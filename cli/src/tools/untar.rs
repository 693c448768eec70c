//! `muntar`: extract a local tar archive into a Manta directory. Every regular file with
//! bytes becomes an object at its archive path under the directory, with parent directories
//! made as needed and several uploads in flight; the path of each object is printed once it
//! is written. As the original tool: empty files, directories, links and devices in the
//! archive make no objects (directories come with the files in them), and uploads that fail
//! with a server error are retried (`-r`, default 3).
//!
//! The archive is read twice, never held in memory: once for its members' names and where
//! their bytes lie, then each member's bytes are streamed from the file (an upload that is
//! retried reads them again). Only uncompressed archives are read: pipe a compressed one
//! through its decompressor into a file first.

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use super::common::{Conn, UploadFlags, describe_client, exit_after_failures, parse_and_run};
use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures_util::StreamExt as _;

/// Extract a tar archive into a Manta directory.
#[derive(Debug, Parser)]
#[command(name = "muntar", version)]
struct Args {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    upload: UploadFlags,
    /// The tar archive to extract (required).
    #[arg(short = 'f', long, value_name = "FILE", required = true)]
    file: PathBuf,
    /// Uploads in flight at once.
    #[arg(short = 'p', long, value_name = "NUM", default_value_t = 20,
          value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// Retries of an upload that fails with a server error (5xx).
    #[arg(short = 'r', long, value_name = "RETRIES", default_value_t = 3)]
    retries: u32,
    /// The Manta directory to extract into.
    #[arg(value_name = "PATH")]
    path: String,
}

/// `muntar`.
pub fn main(args: Vec<String>) -> ExitCode {
    parse_and_run("muntar", args, |a: Args| async move { muntar(a).await })
}

/// A regular file in an archive: its path (relative, `/`-separated), and where its bytes
/// are in the archive file (offset, length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Path inside the archive, without `./`.
    pub path: String,
    /// Offset of its first byte in the archive file.
    pub offset: u64,
    /// Its length (never 0).
    pub len: u64,
}

/// The regular files with bytes in the tar archive `file`, in archive order.
///
/// # Errors
/// When the file cannot be read, is not a tar archive, or names a member outside the
/// directory it is extracted into (an absolute path, or `..`).
pub fn members(file: &Path) -> Result<Vec<Member>> {
    let f = std::fs::File::open(file).with_context(|| file.display().to_string())?;
    let mut archive = tar::Archive::new(f);
    let mut out = Vec::new();
    let entries = archive
        .entries_with_seek()
        .with_context(|| format!("{}: not a tar archive", file.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("{}: not a tar archive", file.display()))?;
        if !e.header().entry_type().is_file() || e.size() == 0 {
            continue;
        }
        let raw = e
            .path()
            .with_context(|| format!("{}: a member's name", file.display()))?;
        let mut parts = Vec::new();
        for c in raw.components() {
            match c {
                Component::Normal(p) => parts.push(
                    p.to_str()
                        .with_context(|| format!("{}: a name is not UTF-8", raw.display()))?
                        .to_owned(),
                ),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    bail!("{}: refusing a member outside the directory", raw.display())
                }
            }
        }
        if parts.is_empty() {
            continue;
        }
        out.push(Member {
            path: parts.join("/"),
            offset: e.raw_file_position(),
            len: e.size(),
        });
    }
    Ok(out)
}

async fn muntar(a: Args) -> Result<ExitCode> {
    let account = a.conn.account()?.to_owned();
    let dir = super::common::resolve(&a.path, &account)?;
    let dir = dir.trim_end_matches('/').to_owned();
    let headers = a.upload.headers()?;
    let file = a.file.clone();
    let listed = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || members(&file)).await??
    };
    let client = a.conn.client().await?.with_retries(a.retries);
    let failures: Vec<String> = futures_util::stream::iter(listed)
        .map(|m| {
            let path = format!("{dir}/{}", m.path);
            let opts = a.upload.options(&headers, &path);
            let (client, file) = (&client, &file);
            async move {
                let span = (m.offset, m.len);
                let mut r = client.put_file_span(&path, file, span, opts.clone()).await;
                if matches!(&r, Err(e) if e.code_str() == Some("DirectoryDoesNotExist")) {
                    let parent = manta_types::path::dirname(&path);
                    client
                        .mkdirp(parent)
                        .await
                        .map_err(|e| describe_client(&e))?;
                    r = client.put_file_span(&path, file, span, opts).await;
                }
                match r {
                    Ok(_) => {
                        println!("{path}");
                        Ok(())
                    }
                    Err(e) => Err(describe_client(&e)),
                }
            }
        })
        .buffer_unordered(usize::from(a.parallel))
        .filter_map(|r: Result<(), String>| std::future::ready(r.err()))
        .collect()
        .await;
    Ok(exit_after_failures("muntar", &failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(std::fs::File::create(f.path()).unwrap());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            if name.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
            } else {
                h.set_size(data.len() as u64);
            }
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
        f
    }

    #[test]
    fn members_are_the_files_with_bytes_and_their_spans() {
        let f = archive(&[
            ("top/", b""),
            ("top/a.txt", b"alpha"),
            ("./top/sub/b.bin", &[7u8; 1500]),
            ("top/empty", b""),
        ]);
        let m = members(f.path()).unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(names, ["top/a.txt", "top/sub/b.bin"]);
        let bytes = std::fs::read(f.path()).unwrap();
        for (m, want) in m.iter().zip([&b"alpha"[..], &[7u8; 1500][..]]) {
            let at = usize::try_from(m.offset).unwrap();
            assert_eq!(&bytes[at..at + want.len()], want);
            assert_eq!(m.len, want.len() as u64);
        }
    }

    #[test]
    fn members_outside_the_directory_are_refused() {
        // The tar crate refuses to write such names; write the header's name by hand.
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(std::fs::File::create(f.path()).unwrap());
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        b.finish().unwrap();
        let e = members(f.path()).unwrap_err();
        assert!(e.to_string().contains("outside the directory"), "{e}");
        let junk = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(junk.path(), vec![b'x'; 2000]).unwrap();
        assert!(members(junk.path()).is_err());
    }
}
