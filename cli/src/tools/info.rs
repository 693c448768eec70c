//! `minfo`: show the HTTP status line and headers of a `HEAD` on each path.

use std::process::ExitCode;

use anyhow::Result;
use bytes::Bytes;
use clap::Parser;
use http::Method;

use super::common::{Conn, describe_client, parse_and_run};
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
