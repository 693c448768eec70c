//! `mls`: list directories (or show an object), page by page, as names, `ls -l`-style lines
//! or JSON.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::{DateTime, Datelike as _, Local, TimeZone as _, Timelike as _, Utc};
use clap::{ArgAction, Parser};
use manta_client::{DirEntry, EntryType, ListOptions, MantaClient, ObjectInfo};

use super::common::{Conn, human_size, parse_and_run, resolve};

/// List Manta directories (an object's path lists the object).
#[derive(Debug, Parser)]
#[command(name = "mls", version, disable_help_flag = true)]
struct Args {
    #[command(flatten)]
    conn: Conn,
    /// Print this help and exit.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Output in JSON (one object per line).
    #[arg(short = 'j', long)]
    json: bool,
    /// JSON output, with every field.
    #[arg(long)]
    fulljson: bool,
    /// Use a long listing format.
    #[arg(short = 'l', long = "long")]
    long: bool,
    /// Human readable sizes in the long format.
    #[arg(short = 'h', long = "human-readable")]
    human: bool,
    /// Start listing from MARKER.
    #[arg(short = 'm', long, value_name = "MARKER")]
    marker: Option<String>,
    /// Reverse the order.
    #[arg(short = 'r', long)]
    reverse: bool,
    /// Only list entries of this type: d (directory) or o (object).
    #[arg(long = "type", value_name = "d|o")]
    kind: Option<String>,
    /// Sort by modification time, newest first.
    #[arg(short = 't', long = "time")]
    time: bool,
    /// Directories to list (default ~~/stor; relative paths are under ~~/stor).
    paths: Vec<String>,
}

/// `mls`.
pub fn main(args: Vec<String>) -> ExitCode {
    parse_and_run("mls", args, |a: Args| async move { mls(a).await })
}

/// What one printed line needs.
struct Line<'a> {
    name: &'a str,
    is_dir: bool,
    size: u64,
    mtime: Option<DateTime<Utc>>,
    owner: &'a str,
}

async fn mls(a: Args) -> Result<ExitCode> {
    let account = a.conn.account()?.to_owned();
    let kind = match a.kind.as_deref() {
        None => None,
        Some("d") => Some(EntryType::Directory),
        Some("o") => Some(EntryType::Object),
        Some(_) => bail!("invalid type, must be \"d\" (directory) or \"o\" (object)"),
    };
    let paths = if a.paths.is_empty() {
        vec![format!("/{account}/stor")]
    } else {
        a.paths
            .iter()
            .map(|p| resolve(p, &account))
            .collect::<Result<Vec<_>>>()?
    };
    let client = a.conn.client().await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let now = Utc::now();
    for p in &paths {
        let info = client.info(p).await?;
        if !info.is_directory() {
            print_object(&mut out, &a, p, &info, now)?;
            continue;
        }
        list_dir(&client, &mut out, &a, p, kind, now).await?;
    }
    out.flush().or_else(ignore_broken_pipe)?;
    Ok(ExitCode::SUCCESS)
}

/// A reader that went away (`mls | head`) is not an error.
pub fn ignore_broken_pipe(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    Err(e)
}

async fn list_dir(
    client: &MantaClient,
    out: &mut impl std::io::Write,
    a: &Args,
    dir: &str,
    kind: Option<EntryType>,
    now: DateTime<Utc>,
) -> Result<()> {
    const PAGE: u32 = 1024;
    let owner = dir.split('/').nth(1).unwrap_or("").to_owned();
    let mut marker = a.marker.clone();
    // Entries already printed at the current marker: pages overlap at their boundary (the
    // marker entry comes back first), and with -t several entries may share one mtime.
    let mut seen_at_marker: Vec<String> = Vec::new();
    let mut first = true;
    loop {
        let opts = ListOptions {
            limit: Some(PAGE),
            marker: marker.clone(),
            sort_mtime: a.time,
            reverse: a.reverse,
        };
        let (page, _) = client.ls(dir, &opts).await?;
        let full = page.len() >= PAGE as usize;
        let mut fresh = 0usize;
        for e in &page {
            let key = if a.time { &e.mtime } else { &e.name };
            if !first && Some(key) == marker.as_ref() && seen_at_marker.contains(&e.name) {
                continue;
            }
            fresh += 1;
            if Some(key) != marker.as_ref() {
                marker = Some(key.clone());
                seen_at_marker.clear();
            }
            seen_at_marker.push(e.name.clone());
            if kind.is_some_and(|k| k != e.kind) {
                continue;
            }
            print_entry(out, a, dir, &owner, e, now)?;
        }
        first = false;
        if !full || fresh == 0 {
            return Ok(());
        }
    }
}

/// A name as the original prints it: JSON string escapes, but bare double quotes.
pub fn safe_name(name: &str) -> String {
    let quoted = serde_json::to_string(name).unwrap_or_else(|_| name.to_owned());
    quoted[1..quoted.len() - 1].replace("\\\"", "\"")
}

fn print_entry(
    out: &mut impl std::io::Write,
    a: &Args,
    dir: &str,
    owner: &str,
    e: &DirEntry,
    now: DateTime<Utc>,
) -> Result<()> {
    if a.json || a.fulljson {
        let raw = e.raw.trim_end();
        let parent = serde_json::to_string(dir)?;
        match raw.strip_suffix('}') {
            Some(body) if body.trim_start() != "{" => {
                writeln!(out, "{body},\"parent\":{parent}}}").or_else(ignore_broken_pipe)?;
            }
            _ => writeln!(out, "{raw}").or_else(ignore_broken_pipe)?,
        }
        return Ok(());
    }
    let line = Line {
        name: &e.name,
        is_dir: e.is_dir(),
        size: e.size.unwrap_or(0),
        mtime: parse_mtime(&e.mtime),
        owner,
    };
    write_line(out, a, &line, now)
}

fn write_line(
    out: &mut impl std::io::Write,
    a: &Args,
    l: &Line<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let name = safe_name(l.name);
    if a.long {
        let size = if l.is_dir { 0 } else { l.size };
        let size = if a.human {
            human_size(size)
        } else {
            size.to_string()
        };
        let date = l
            .mtime
            .map(|t| ls_date(t.with_timezone(&Local), now.with_timezone(&Local)))
            .unwrap_or_default();
        writeln!(
            out,
            "{}rwxr-xr-x 1 {} {size:>13} {date} {name}",
            if l.is_dir { 'd' } else { '-' },
            l.owner,
        )
        .or_else(ignore_broken_pipe)?;
    } else {
        writeln!(out, "{name}{}", if l.is_dir { "/" } else { "" }).or_else(ignore_broken_pipe)?;
    }
    Ok(())
}

fn print_object(
    out: &mut impl std::io::Write,
    a: &Args,
    path: &str,
    info: &ObjectInfo,
    now: DateTime<Utc>,
) -> Result<()> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let owner = path.split('/').nth(1).unwrap_or("");
    let size = info.size().unwrap_or(0);
    let mtime = info
        .header("last-modified")
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .map(DateTime::<Utc>::from);
    if a.json || a.fulljson {
        let mut fields: Vec<(&str, serde_json::Value)> = vec![("name", name.into())];
        if let Some(t) = info.header("content-type") {
            fields.push(("type", t.into()));
        }
        if let Some(e) = info.header("etag") {
            fields.push(("etag", e.into()));
        }
        if let Some(m) = info.header("content-md5") {
            fields.push(("md5", m.into()));
        }
        fields.push(("size", size.into()));
        if let Some(d) = info.header("durability-level") {
            fields.push(("durability", d.into()));
        }
        if let Some(m) = info.header("last-modified") {
            fields.push(("mtime", m.into()));
        }
        fields.push(("parent", path.into()));
        writeln!(out, "{}", json_object(&fields)).or_else(ignore_broken_pipe)?;
        return Ok(());
    }
    let line = Line {
        name,
        is_dir: false,
        size,
        mtime,
        owner,
    };
    write_line(out, a, &line, now)
}

/// A JSON object with its fields in the given order.
pub fn json_object(fields: &[(&str, serde_json::Value)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(*k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Parses a listing's ISO 8601 mtime.
pub fn parse_mtime(iso: &str) -> Option<DateTime<Utc>> {
    let ms = manta_types::time::parse_iso8601_ms(iso)?;
    Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()
}

/// The date column of `ls -l`: `Mar 02 10:14` within six months, `Mar 02  2019` before.
pub fn ls_date<Tz: chrono::TimeZone>(t: DateTime<Tz>, now: DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut months = (now.year() - t.year()) * 12 + now.month() as i32 - t.month() as i32;
    let later_in_month = (now.day(), now.hour(), now.minute(), now.second())
        < (t.day(), t.hour(), t.minute(), t.second());
    if months > 0 && later_in_month {
        months -= 1;
    }
    if months >= 6 {
        t.format("%b %d  %Y").to_string()
    } else {
        t.format("%b %d %H:%M").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_like_the_original() {
        for (name, shown) in [
            ("plain.txt", "plain.txt"),
            ("a\"b", "a\"b"),
            ("tab\there", "tab\\there"),
            ("nl\n", "nl\\n"),
        ] {
            assert_eq!(safe_name(name), shown, "{name:?}");
        }
    }

    #[test]
    fn dates_switch_to_years_after_six_months() {
        let now = Utc.with_ymd_and_hms(2024, 9, 15, 12, 0, 0).unwrap();
        let recent = Utc.with_ymd_and_hms(2024, 3, 16, 8, 5, 0).unwrap();
        assert_eq!(ls_date(recent, now), "Mar 16 08:05");
        let old = Utc.with_ymd_and_hms(2024, 3, 15, 8, 5, 0).unwrap();
        assert_eq!(ls_date(old, now), "Mar 15  2024");
        let older = Utc.with_ymd_and_hms(2019, 1, 2, 0, 0, 0).unwrap();
        assert_eq!(ls_date(older, now), "Jan 02  2019");
    }

    #[test]
    fn json_objects_keep_field_order() {
        let s = json_object(&[("name", "a".into()), ("size", 3.into()), ("b", true.into())]);
        assert_eq!(s, r#"{"name":"a","size":3,"b":true}"#);
    }

    #[test]
    fn mtimes_parse() {
        let t = parse_mtime("2013-05-22T17:39:43.714Z").unwrap();
        assert_eq!(t.timestamp_millis(), 1_369_244_383_714);
        assert!(parse_mtime("yesterday").is_none());
    }
}
