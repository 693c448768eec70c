//! `manta-adm`: operate a region.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use manta_cli::region::Region;

/// Operate a region of the object store.
#[derive(Debug, Parser)]
#[command(name = "manta-adm", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start every service of a region on this machine (again, with its data, if it ran before)
    /// and wait until each is healthy.
    Up {
        /// Directory holding the region's data, logs and pid files.
        #[arg(long, env = "MANTA_REGION_DIR", default_value = ".region")]
        dir: PathBuf,
    },
    /// Show every service of the region: pid, health, endpoint.
    Status {
        /// Directory holding the region.
        #[arg(long, env = "MANTA_REGION_DIR", default_value = ".region")]
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop every service of the region (its data stays).
    Down {
        /// Directory holding the region.
        #[arg(long, env = "MANTA_REGION_DIR", default_value = ".region")]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    manta_util::logging::init(manta_util::logging::LogFormat::Plain);
    match Args::parse().cmd {
        Cmd::Up { dir } => {
            let region = Region::open(&dir)?;
            println!("bringing up the region in {}", region.dir().display());
            region.up().await?;
            println!(
                "\nthe region is up; `manta-adm status --dir {}` shows it",
                region.dir().display()
            );
        }
        Cmd::Status { dir, json } => {
            let region = Region::open(&dir)?;
            let rows = region.status().await?;
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(n, pid, st, ep)| serde_json::json!({"service": n, "pid": pid, "state": st, "endpoint": ep}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:<12} {:>8}  {:<10} ENDPOINT", "SERVICE", "PID", "STATE");
                for (n, pid, st, ep) in rows {
                    let pid = pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                    println!("{n:<12} {pid:>8}  {st:<10} {ep}");
                }
            }
        }
        Cmd::Down { dir } => {
            let region = Region::open(&dir)?;
            region.down()?;
        }
    }
    Ok(())
}
