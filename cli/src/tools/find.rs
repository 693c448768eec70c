//! `mfind`: walk directory trees and print the entries that match, with several listings in
//! flight.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Parser;
use futures_util::StreamExt as _;
use manta_client::{EntryType, WalkEntry, WalkOptions};
use regex::Regex;

use super::common::{Conn, describe_client, parse_and_run};
use super::ls::{ignore_broken_pipe, json_object};

/// Walk Manta directory trees, printing the entries that match.
#[derive(Debug, Parser)]
#[command(name = "mfind", version)]
struct Args {
    #[command(flatten)]
    conn: Conn,
    /// Stop after this many results.
    #[arg(short = 'l', long, value_name = "LIMIT",
          value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Only entries whose name matches this regular expression.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: Option<String>,
    /// Listings in flight at once.
    #[arg(short = 'p', long, value_name = "NUM", default_value_t = 50,
          value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// Only objects of at least this many bytes (directories still match).
    #[arg(short = 's', long, value_name = "SIZE")]
    size: Option<u64>,
    /// Only entries of this type: d (directory) or o (object).
    #[arg(short = 't', long = "type", value_name = "d|o")]
    kind: Option<String>,
    /// Only entries at least this deep (a directory's own entries are depth 0).
    #[arg(long, value_name = "DEPTH")]
    mindepth: Option<u32>,
    /// Only entries less deep than this.
    #[arg(long, value_name = "DEPTH",
          value_parser = clap::value_parser!(u32).range(1..))]
    maxdepth: Option<u32>,
    /// One JSON object per line.
    #[arg(short = 'j', long)]
    json: bool,
    /// Directories to walk.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
}

/// `mfind`.
pub fn main(args: Vec<String>) -> ExitCode {
    parse_and_run("mfind", args, |a: Args| async move { mfind(a).await })
}

struct Filter {
    name: Option<Regex>,
    size: Option<u64>,
    kind: Option<EntryType>,
    mindepth: u32,
    maxdepth: Option<u32>,
}

impl Filter {
    fn matches(&self, e: &WalkEntry) -> bool {
        if e.depth < self.mindepth || self.maxdepth.is_some_and(|m| e.depth >= m) {
            return false;
        }
        if self
            .name
            .as_ref()
            .is_some_and(|r| !r.is_match(&e.entry.name))
        {
            return false;
        }
        if let Some(min) = self.size
            && e.entry.kind == EntryType::Object
            && e.entry.size.unwrap_or(0) < min
        {
            return false;
        }
        self.kind.is_none_or(|k| k == e.entry.kind)
    }
}

async fn mfind(a: Args) -> Result<ExitCode> {
    let filter = Filter {
        name: match &a.name {
            Some(n) => Some(Regex::new(n).map_err(|e| anyhow::anyhow!("invalid --name: {e}"))?),
            None => None,
        },
        size: a.size,
        kind: match a.kind.as_deref() {
            None => None,
            Some("d") => Some(EntryType::Directory),
            Some("o") => Some(EntryType::Object),
            Some(_) => bail!("invalid type, must be \"d\" (directory) or \"o\" (object)"),
        },
        mindepth: a.mindepth.unwrap_or(0),
        maxdepth: a.maxdepth,
    };
    let paths = a.conn.resolve_all(&a.paths)?;
    let client = a.conn.client().await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let mut failed = false;
    let limit_reached = |n: u64| a.limit.is_some_and(|l| n >= l);
    'paths: for p in &paths {
        let info = match client.info(p).await {
            Ok(i) => i,
            Err(e) => {
                eprintln!("mfind: in {p}: {}", describe_client(&e));
                failed = true;
                continue;
            }
        };
        if !info.is_directory() {
            // An object is its own only result.
            if a.json {
                let fields = [
                    ("name", "".into()),
                    ("type", "object".into()),
                    ("size", info.size().unwrap_or(0).into()),
                    ("parent", p.as_str().into()),
                ];
                writeln!(out, "{}", json_object(&fields)).or_else(ignore_broken_pipe)?;
            } else {
                writeln!(out, "{p}").or_else(ignore_broken_pipe)?;
            }
            printed += 1;
            if limit_reached(printed) {
                break;
            }
            continue;
        }
        let mut walk = client.walk(
            p,
            WalkOptions {
                parallel: usize::from(a.parallel),
                max_depth: a.maxdepth,
            },
        );
        while let Some(item) = walk.next().await {
            let e = match item {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("mfind: in {p}: {}", describe_client(&e));
                    failed = true;
                    continue;
                }
            };
            if !filter.matches(&e) {
                continue;
            }
            if a.json {
                let raw = e.entry.raw.trim_end();
                let body = raw.strip_suffix('}').unwrap_or(raw);
                writeln!(
                    out,
                    "{body},\"parent\":{},\"depth\":{}}}",
                    serde_json::Value::from(e.parent.as_str()),
                    e.depth
                )
                .or_else(ignore_broken_pipe)?;
            } else {
                writeln!(out, "{}", e.path()).or_else(ignore_broken_pipe)?;
            }
            printed += 1;
            if limit_reached(printed) {
                break 'paths;
            }
        }
    }
    out.flush().or_else(ignore_broken_pipe)?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
