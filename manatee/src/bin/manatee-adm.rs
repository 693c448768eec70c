//! `manatee-adm`: look at and steer a Manatee shard. Output is for people; `--json` gives the
//! same facts for scripts.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use manatee::adm;
use manatee::coord::Coord;

/// Look at and steer a Manatee shard (cluster state in etcd, one sitter per Postgres peer).
#[derive(Debug, Parser)]
#[command(name = "manatee-adm", version)]
struct Args {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "MANATEE_ETCD",
        default_value = "http://127.0.0.1:2379",
        global = true
    )]
    etcd: String,
    /// The shard.
    #[arg(long, env = "MANATEE_SHARD", default_value = "1", global = true)]
    shard: String,
    /// The operator's region identity (`cert.pem`, `key.pem`, `ca.pem`) for sitters that serve
    /// mutual TLS.
    #[arg(long, env = "MANTA_TLS_DIR", global = true)]
    tls_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The cluster state: generation, roles, freeze, who is registered.
    Show {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Each peer's Postgres: role, postmaster pid, WAL sent/write/flush/replay, lag.
    PgStatus {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Every state the shard has had, oldest first.
    History {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Stop automatic transitions (takeovers, sync replacement, async changes).
    Freeze {
        /// Why (shown by `show`).
        #[arg(short = 'r', long)]
        reason: String,
    },
    /// Allow automatic transitions again.
    Unfreeze,
    /// Discard a standby's database and rebuild it from the primary.
    Rebuild {
        /// The peer id (ip:pgPort:sitterPort); default: the peer whose sitter listens on
        /// 127.0.0.1, if there is exactly one.
        #[arg(long)]
        peer: Option<String>,
        /// How long to wait for the rebuild.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Planned promotion: the sync becomes primary, or an async becomes the sync.
    Promote {
        /// The peer id to promote.
        #[arg(long)]
        peer: String,
        /// How long the request stays valid.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        valid_for: Duration,
    },
    /// Remove a deposed peer that will never come back (all unregistered deposed peers without
    /// --peer).
    Reap {
        /// The deposed peer's id.
        #[arg(long)]
        peer: Option<String>,
    },
}

fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    manta_util::cli::exit_quietly_on_closed_pipe();
    let args = Args::parse();
    let id = args
        .tls_dir
        .as_deref()
        .map(manta_util::tls::Identity::in_dir);
    let coord = Coord::new(
        std::slice::from_ref(&args.etcd),
        &args.shard,
        Duration::from_secs(3),
    )
    .and_then(|c| c.with_identity(id.as_ref()))
    .context("etcd endpoints")?;
    let id = args
        .tls_dir
        .as_deref()
        .map(manta_util::tls::Identity::in_dir);
    let tls =
        manta_util::tls::internal_client_of(id.as_ref()).context("load the region identity")?;
    // Rebuilds wait on the sitter's answers longer than a status read does.
    let sitters = adm::SitterClient::new(tls.clone(), Duration::from_secs(2))?;
    let rebuilder = adm::SitterClient::new(tls, Duration::from_secs(5))?;
    match args.cmd {
        Cmd::Show { json: j } => {
            let s = adm::show(&coord).await.context("read the state")?;
            if j {
                json(&s)?
            } else {
                print!("{}", adm::render_show(&s))
            }
        }
        Cmd::PgStatus { json: j } => {
            let rows = adm::pg_status(&coord, &sitters)
                .await
                .context("read the peers' status")?;
            if j {
                json(&rows)?
            } else {
                print!("{}", adm::render_pg_status(&rows))
            }
        }
        Cmd::History { json: j } => {
            let h = adm::history(&coord).await.context("read the history")?;
            if j {
                let v: Vec<_> = h
                    .iter()
                    .map(|e| serde_json::json!({"seq": e.seq, "state": e.state}))
                    .collect();
                json(&v)?
            } else {
                print!("{}", adm::render_history(&h))
            }
        }
        Cmd::Freeze { reason } => {
            let s = adm::freeze(&coord, &reason).await.context("freeze")?;
            println!("frozen at generation {}: {reason}", s.generation);
        }
        Cmd::Unfreeze => {
            let s = adm::unfreeze(&coord).await.context("unfreeze")?;
            println!("unfrozen at generation {}", s.generation);
        }
        Cmd::Rebuild { peer, wait } => {
            let st = coord
                .state()
                .await?
                .context("the shard has no state yet")?
                .state;
            let target = match peer {
                Some(id) => st
                    .peers()
                    .into_iter()
                    .find(|(p, _)| p.id == id)
                    .map(|(p, _)| p.clone())
                    .with_context(|| format!("{id} is not in the cluster state"))?,
                None => {
                    let local: Vec<_> = st
                        .peers()
                        .into_iter()
                        .filter(|(p, _)| p.ip == "127.0.0.1")
                        .collect();
                    anyhow::ensure!(
                        local.len() == 1,
                        "several peers are local; name one with --peer"
                    );
                    local[0].0.clone()
                }
            };
            println!(
                "rebuilding {} from the primary {} ...",
                target.id, st.primary.id
            );
            let v = rebuilder
                .rebuild(&target.backup_url, wait)
                .await
                .context("rebuild")?;
            println!(
                "rebuilt: {} is a {} streaming from {}",
                target.id,
                v.get("role").and_then(|r| r.as_str()).unwrap_or("?"),
                v.get("upstream").and_then(|r| r.as_str()).unwrap_or("?")
            );
        }
        Cmd::Promote { peer, valid_for } => {
            let s = adm::promote(&coord, &peer, valid_for)
                .await
                .context("promote")?;
            println!(
                "promotion of {peer} requested at generation {}; the sitters carry it out",
                s.generation
            );
        }
        Cmd::Reap { peer } => {
            let s = adm::reap(&coord, peer.as_deref()).await.context("reap")?;
            let left: Vec<_> = s.deposed.iter().map(|p| p.id.as_str()).collect();
            println!("deposed peers now: [{}]", left.join(", "));
        }
    }
    Ok(())
}
