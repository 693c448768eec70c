//! The small tools: `mmkdir`, `mrmdir`, `mrm`, `mln`, `mchattr`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Parser;

use super::common::{Conn, parse_and_run, parse_headers, role_tag};

/// Asks on the terminal; true for `y`/`Y`.
fn confirm(question: &str) -> bool {
    print!("{question}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y")
}

fn interactive_ok(interactive: bool) -> Result<()> {
    if interactive && !std::io::stdin().is_terminal() {
        bail!("stdin must be a tty when interactive specified");
    }
    Ok(())
}

/// Make Manta directories.
#[derive(Debug, Parser)]
#[command(name = "mmkdir", version)]
struct MkdirArgs {
    #[command(flatten)]
    conn: Conn,
    /// HTTP header to store on the directory, as 'name: value'.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    header: Vec<String>,
    /// No error if existing; make parent directories as needed.
    #[arg(short = 'p', long)]
    parents: bool,
    /// Role tags to apply to the directory.
    #[arg(long = "role-tag", value_name = "TAG,TAG...")]
    role_tag: Vec<String>,
    /// Directories to make.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
}

/// `mmkdir`.
pub fn mmkdir(args: Vec<String>) -> ExitCode {
    parse_and_run("mmkdir", args, |a: MkdirArgs| async move {
        let paths = a.conn.resolve_all(&a.paths)?;
        let mut headers = parse_headers(&a.header)?;
        headers.extend(role_tag(&a.role_tag));
        let client = a.conn.client().await?;
        for p in &paths {
            if a.parents {
                client.mkdirp_with(p, &headers).await?;
            } else {
                client.mkdir_with(p, &headers).await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Remove empty Manta directories.
#[derive(Debug, Parser)]
#[command(name = "mrmdir", version)]
struct RmdirArgs {
    #[command(flatten)]
    conn: Conn,
    /// Confirm before removing each directory.
    #[arg(short = 'I', long)]
    interactive: bool,
    /// Directories to remove.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
}

/// `mrmdir`.
pub fn mrmdir(args: Vec<String>) -> ExitCode {
    parse_and_run("mrmdir", args, |a: RmdirArgs| async move {
        interactive_ok(a.interactive)?;
        let paths = a.conn.resolve_all(&a.paths)?;
        let client = a.conn.client().await?;
        for p in &paths {
            let info = client.info(p).await?;
            if !info.is_directory() {
                bail!("{p} is not a directory");
            }
            if a.interactive && !confirm(&format!("remove directory `{p}` [y/N]?: ")) {
                continue;
            }
            client.rm(p).await?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Remove Manta objects (and, with -r, directory trees).
#[derive(Debug, Parser)]
#[command(name = "mrm", version)]
struct RmArgs {
    #[command(flatten)]
    conn: Conn,
    /// Confirm before removing each path.
    #[arg(short = 'I', long)]
    interactive: bool,
    /// Requests in flight at once with -r.
    #[arg(short = 'p', long, value_name = "NUM", default_value_t = 50,
          value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// Remove directories and everything in them.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Objects (or directories, with -r) to remove.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
}

/// `mrm`.
pub fn mrm(args: Vec<String>) -> ExitCode {
    parse_and_run("mrm", args, |a: RmArgs| async move {
        interactive_ok(a.interactive)?;
        let paths = a.conn.resolve_all(&a.paths)?;
        let client = a.conn.client().await?;
        for p in &paths {
            let info = client.info(p).await?;
            if info.is_directory() {
                if !a.recursive {
                    bail!("{p} is not an object");
                }
                if a.interactive
                    && !confirm(&format!("recursively remove directory `{p}` [y/N]?: "))
                {
                    continue;
                }
                client.rm_recursive(p, usize::from(a.parallel)).await?;
            } else {
                if a.interactive && !confirm(&format!("remove object `{p}` [y/N]?: ")) {
                    continue;
                }
                client.rm(p).await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Make a SnapLink: DEST becomes a copy of SOURCE that costs no space.
#[derive(Debug, Parser)]
#[command(name = "mln", version)]
struct LnArgs {
    #[command(flatten)]
    conn: Conn,
    /// Role tags to apply to the link.
    #[arg(long = "role-tag", value_name = "TAG,TAG...")]
    role_tag: Vec<String>,
    /// The existing object.
    #[arg(value_name = "SOURCE")]
    source: String,
    /// The new path.
    #[arg(value_name = "DEST")]
    dest: String,
}

/// `mln`.
pub fn mln(args: Vec<String>) -> ExitCode {
    parse_and_run("mln", args, |a: LnArgs| async move {
        let paths = a.conn.resolve_all(&[a.source.clone(), a.dest.clone()])?;
        let headers: Vec<(String, String)> = role_tag(&a.role_tag).into_iter().collect();
        let client = a.conn.client().await?;
        client.ln_with(&paths[0], &paths[1], &headers).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Replace the stored headers of Manta objects or directories.
#[derive(Debug, Parser)]
#[command(name = "mchattr", version)]
struct ChattrArgs {
    #[command(flatten)]
    conn: Conn,
    /// Header to store, as 'name: value' (repeat for more); the others are dropped.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    header: Vec<String>,
    /// Objects or directories.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
}

/// `mchattr`.
pub fn mchattr(args: Vec<String>) -> ExitCode {
    parse_and_run("mchattr", args, |a: ChattrArgs| async move {
        let paths = a.conn.resolve_all(&a.paths)?;
        let headers = parse_headers(&a.header)?;
        let client = a.conn.client().await?;
        for p in &paths {
            client.chattr(p, &headers).await?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Change the role tags of Manta objects or directories.
#[derive(Debug, Parser)]
#[command(
    name = "mchmod",
    version,
    override_usage = "mchmod [OPTIONS] -- [+-=]ROLE,... PATH..."
)]
struct ChmodArgs {
    #[command(flatten)]
    conn: Conn,
    /// `+a,b` adds the roles, `-a,b` removes them, `=a,b` sets exactly them (`=` alone: none).
    #[arg(value_name = "[+-=]ROLE,...", allow_hyphen_values = true)]
    mode: String,
    /// Objects or directories.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
}

/// How `mchmod` changes a set of tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChmodMode {
    /// Add these.
    Add(Vec<String>),
    /// Remove these.
    Remove(Vec<String>),
    /// Exactly these.
    Set(Vec<String>),
}

impl ChmodMode {
    /// Parses `+a,b`, `-a`, `=a,b` or `=`.
    ///
    /// # Errors
    /// When the mode does not start with `+`, `-` or `=`, or `+`/`-` names no role.
    pub fn parse(s: &str) -> Result<ChmodMode> {
        let mut chars = s.chars();
        let op = chars.next();
        let roles: Vec<String> = chars
            .as_str()
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        match op {
            Some('+') if !roles.is_empty() => Ok(ChmodMode::Add(roles)),
            Some('-') if !roles.is_empty() => Ok(ChmodMode::Remove(roles)),
            Some('=') => Ok(ChmodMode::Set(roles)),
            _ => anyhow::bail!("role list must be [+-=]role,... (got {s:?})"),
        }
    }

    /// The tags `current` becomes.
    pub fn apply(&self, current: &str) -> Vec<String> {
        let mut tags: Vec<String> = current
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        match self {
            ChmodMode::Add(r) => {
                for x in r {
                    if !tags.contains(x) {
                        tags.push(x.clone());
                    }
                }
            }
            ChmodMode::Remove(r) => tags.retain(|t| !r.contains(t)),
            ChmodMode::Set(r) => tags.clone_from(r),
        }
        tags
    }
}

/// `mchmod`.
pub fn mchmod(args: Vec<String>) -> ExitCode {
    parse_and_run("mchmod", args, |a: ChmodArgs| async move {
        let mode = ChmodMode::parse(&a.mode)?;
        let paths = a.conn.resolve_all(&a.paths)?;
        let client = a.conn.client().await?;
        for p in &paths {
            let current = client
                .info(p)
                .await?
                .header("role-tag")
                .unwrap_or_default()
                .to_owned();
            let tags = mode.apply(&current);
            client
                .chattr(p, &[("role-tag".to_owned(), tags.join(","))])
                .await?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod chmod_tests {
    use super::*;

    #[test]
    fn modes_add_remove_and_set_roles() {
        let add = ChmodMode::parse("+reader,writer").unwrap();
        assert_eq!(add.apply("reader"), ["reader", "writer"]);
        let rm = ChmodMode::parse("-reader").unwrap();
        assert_eq!(rm.apply("reader, writer"), ["writer"]);
        assert_eq!(
            ChmodMode::parse("=").unwrap().apply("a,b"),
            Vec::<String>::new()
        );
        assert_eq!(ChmodMode::parse("=b").unwrap().apply("a"), ["b"]);
        for bad in ["", "reader", "+", "-", "*a"] {
            assert!(ChmodMode::parse(bad).is_err(), "{bad:?}");
        }
    }
}
