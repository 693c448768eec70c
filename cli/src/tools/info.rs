//! `minfo`: show the HTTP status line and headers of a `HEAD` on each path; `mmd5`: the MD5
//! the server holds for each object, as `md5sum` prints it.

use std::process::ExitCode;

use anyhow::Result;
use bytes::Bytes;
use clap::Parser;
use http::Method;

use base64::Engine as _;

use super::common::{Conn, describe_client, exit_after_failures, parse_and_run};
use super::ls::json_object;

/// Show the HTTP headers of Manta objects and directories.
#[derive(Debug, Parser)]
#[command(name = "minfo", version)]
struct Args {
    #[command(flatten)]
    conn: Conn,
    /// JSON output: the headers plus `status` and `statusCode`.
    #[arg(short = 'j', long)]
    json: bool,
    /// Objects or directories.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
}

/// `minfo`.
pub fn main(args: Vec<String>) -> ExitCode {
    parse_and_run("minfo", args, |a: Args| async move { minfo(a).await })
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2.0",
        http::Version::HTTP_3 => "3.0",
        _ => "1.1",
    }
}

async fn minfo(a: Args) -> Result<ExitCode> {
    let paths = a.conn.resolve_all(&a.paths)?;
    let client = a.conn.client().await?;
    let mut failed = false;
    for p in &paths {
        let resp = match client
            .request(Method::HEAD, p, &[], &[], Bytes::new())
            .await
        {
            Ok(r) => r,
            Err(_) => {
                // A HEAD has no body to say why; `info` asks again to learn the code.
                let e = match client.info(p).await {
                    Err(e) => e,
                    Ok(_) => continue,
                };
                eprintln!("minfo: {}", describe_client(&e));
                failed = true;
                continue;
            }
        };
        let status = resp.status();
        let line = format!(
            "HTTP/{} {} {}",
            version(resp.version()),
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        if a.json {
            let mut fields: Vec<(&str, serde_json::Value)> = vec![
                ("status", line.as_str().into()),
                ("statusCode", status.as_u16().into()),
            ];
            for (k, v) in resp.headers() {
                fields.push((k.as_str(), String::from_utf8_lossy(v.as_bytes()).into()));
            }
            println!("{}", json_object(&fields));
        } else {
            println!("{line}");
            for (k, v) in resp.headers() {
                println!("{k}: {}", String::from_utf8_lossy(v.as_bytes()));
            }
            println!();
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Print the MD5 of Manta objects (as the server recorded it), as md5sum prints it.
#[derive(Debug, Parser)]
#[command(name = "mmd5", version)]
struct Md5Args {
    #[command(flatten)]
    conn: Conn,
    /// Objects.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
}

/// `mmd5`: `<hex md5>  <path>` per object, from a `HEAD` (no bytes are read). A directory,
/// or an object without an MD5, is a failure.
pub fn mmd5(args: Vec<String>) -> ExitCode {
    parse_and_run("mmd5", args, |a: Md5Args| async move {
        let paths = a.conn.resolve_all(&a.paths)?;
        let client = a.conn.client().await?;
        let mut failures = Vec::new();
        for p in &paths {
            match client.info(p).await {
                Err(e) => failures.push(describe_client(&e)),
                Ok(i) if i.is_directory() => failures.push(format!("{p}: {p} is a directory")),
                Ok(i) => {
                    let md5 = i
                        .header("content-md5")
                        .and_then(|m| base64::engine::general_purpose::STANDARD.decode(m).ok());
                    match md5 {
                        Some(md5) => {
                            let hex: String = md5.iter().map(|b| format!("{b:02x}")).collect();
                            println!("{hex}  {p}");
                        }
                        None => failures.push(format!("{p}: missing MD5")),
                    }
                }
            }
        }
        Ok(exit_after_failures("mmd5", &failures))
    })
}
