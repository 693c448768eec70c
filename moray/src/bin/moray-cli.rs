//! `moray-cli`: an operator's command line for one Moray shard (and the shard ring), printing
//! JSON. Each command is one RPC.

use std::io::Read as _;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use moray::MorayClient;
use moray::ring::{Ring, RingStore, ShardInfo};
use moray::types::{
    BucketConfig, DelOptions, FindOptions, IndexSpec, IndexType, PutOptions, Sort, SortOrder,
};
use serde_json::Value;

/// Talk to a Moray server.
#[derive(Debug, Parser)]
#[command(name = "moray-cli", version)]
struct Args {
    /// The Moray server.
    #[arg(
        long,
        short = 'u',
        env = "MORAY_URL",
        default_value = "http://127.0.0.1:2020",
        global = true
    )]
    url: String,
    /// The operator's region identity (`cert.pem`, `key.pem`, `ca.pem`) for a Moray that
    /// serves mutual TLS (`https://`).
    #[arg(long, env = "MANTA_TLS_DIR", global = true)]
    tls_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a bucket, or update it if it exists (give a higher --version to update).
    Putbucket {
        /// Bucket name.
        name: String,
        /// Index: FIELD:TYPE[:unique] (TYPE: string, number, boolean, [string], ...). Repeatable.
        #[arg(short, long = "index")]
        index: Vec<String>,
        /// Post trigger name. Repeatable.
        #[arg(short, long = "post")]
        post: Vec<String>,
        /// Schema version.
        #[arg(short = 'V', long, default_value_t = 1)]
        version: u64,
        /// The whole config as JSON instead of the flags above.
        #[arg(long, conflicts_with_all = ["index", "post"])]
        config: Option<String>,
    },
    /// Show a bucket.
    Getbucket { name: String },
    /// List buckets.
    Listbuckets,
    /// Drop a bucket and its records.
    Delbucket { name: String },
    /// Write a record (value as JSON argument, or on stdin when omitted).
    Putobject {
        bucket: String,
        key: String,
        value: Option<String>,
        /// Only replace the record with this etag.
        #[arg(short, long, conflicts_with = "create")]
        etag: Option<String>,
        /// Only create (fail if the key exists).
        #[arg(short, long)]
        create: bool,
    },
    /// Read a record.
    Getobject { bucket: String, key: String },
    /// Delete a record.
    Delobject {
        bucket: String,
        key: String,
        /// Only delete the record with this etag.
        #[arg(short, long)]
        etag: Option<String>,
    },
    /// Find records: one JSON record per line.
    Findobjects {
        bucket: String,
        filter: String,
        #[arg(short, long)]
        limit: Option<u64>,
        #[arg(short, long)]
        offset: Option<u64>,
        /// Sort key: FIELD[:asc|desc]. Repeatable.
        #[arg(short, long)]
        sort: Vec<String>,
        /// Skip the _count column.
        #[arg(long)]
        no_count: bool,
    },
    /// Set indexed fields (JSON object) on matching records.
    Updatemany {
        bucket: String,
        fields: String,
        filter: String,
    },
    /// Delete matching records.
    Delmany {
        bucket: String,
        filter: String,
        #[arg(short, long)]
        limit: Option<u64>,
    },
    /// Fill new index columns; repeats until nothing is left.
    Reindexobjects {
        bucket: String,
        #[arg(short, long, default_value_t = 1000)]
        count: u64,
    },
    /// Run SQL on the primary (values are bound to $1, $2, ...).
    Sql {
        statement: String,
        values: Vec<String>,
    },
    /// Deep ping (server and its Postgres primary).
    Ping,
    /// Server API version.
    Version,
    /// Show the shard ring stored in etcd.
    RingShow {
        #[arg(long, env = "MANTA_MORAY_ETCD")]
        etcd: String,
    },
    /// Create the shard ring in etcd (only if none exists): SHARD=URL[,URL] ...
    RingCreate {
        #[arg(long, env = "MANTA_MORAY_ETCD")]
        etcd: String,
        #[arg(long, default_value_t = moray::ring::DEFAULT_VNODES)]
        vnodes: u32,
        #[arg(required = true)]
        shards: Vec<String>,
    },
    /// Point one vnode at another shard in the ring, without moving its records (for a vnode
    /// that holds none; `vnode-move` moves one that does).
    RingRemap {
        #[arg(long, env = "MANTA_MORAY_ETCD")]
        etcd: String,
        vnode: u32,
        shard: String,
    },
    /// Move one vnode and its records to another shard while the region serves: fence it on
    /// its shard, copy, switch the ring, purge the old copy (writes of the vnode are refused,
    /// retryably, until clients see the new ring; reads never fail). Safe to run again after
    /// an interruption.
    VnodeMove {
        #[arg(long, env = "MANTA_MORAY_ETCD")]
        etcd: String,
        vnode: u32,
        /// The shard to move it to.
        shard: String,
        /// Wait between the switch and the purge of the old shard (clients follow the ring
        /// within a second or two).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        settle: std::time::Duration,
    },
    /// This Moray's shard's vnode fences (vnodes moving or moved away).
    VnodeFences,
    /// Create the object store's buckets (idempotent).
    SetupManta,
}

fn print(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn parse_index(spec: &str) -> Result<(String, IndexSpec)> {
    let mut parts = spec.splitn(3, ':');
    let field = parts.next().unwrap_or_default();
    let kind = parts.next().context("index must be FIELD:TYPE[:unique]")?;
    let kind = IndexType::parse(kind).with_context(|| format!("unknown index type {kind:?}"))?;
    let unique = match parts.next() {
        None => false,
        Some("unique") => true,
        Some(x) => bail!("unknown index flag {x:?} (only 'unique')"),
    };
    Ok((field.to_owned(), IndexSpec { kind, unique }))
}

fn parse_json(s: &str) -> Result<Value> {
    serde_json::from_str(s).with_context(|| format!("not JSON: {s}"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    manta_util::cli::exit_quietly_on_closed_pipe();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if manta_util::cli::is_broken_pipe(e.as_ref()) => {
            std::process::ExitCode::from(manta_util::cli::CLOSED_PIPE_STATUS as u8)
        }
        Err(e) => {
            // Moray's own errors print in their wire form, so scripts can branch on the name.
            match e.downcast_ref::<moray::Error>() {
                Some(me) => eprintln!(
                    "{}",
                    serde_json::to_string(&me.to_wire()).unwrap_or_else(|_| me.to_string())
                ),
                None => eprintln!("moray-cli: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let id = args
        .tls_dir
        .as_deref()
        .map(manta_util::tls::Identity::in_dir);
    let tls = manta_util::tls::internal_client_of(id.as_ref())?;
    let c = MorayClient::builder(args.url.clone())
        .tls(tls.clone())
        .build()?;
    match args.cmd {
        Cmd::Putbucket {
            name,
            index,
            post,
            version,
            config,
        } => {
            let cfg = match config {
                Some(j) => serde_json::from_str(&j).context("--config is not a bucket config")?,
                None => {
                    let mut cfg = BucketConfig::new(version);
                    for i in &index {
                        let (f, s) = parse_index(i)?;
                        cfg.index.insert(f, s);
                    }
                    cfg.post = post;
                    cfg
                }
            };
            print(&c.put_bucket(&name, cfg).await?)?;
        }
        Cmd::Getbucket { name } => print(&c.get_bucket(&name).await?)?,
        Cmd::Listbuckets => print(&c.list_buckets().await?)?,
        Cmd::Delbucket { name } => {
            c.del_bucket(&name).await?;
            print(&serde_json::json!({"deleted": name}))?;
        }
        Cmd::Putobject {
            bucket,
            key,
            value,
            etag,
            create,
        } => {
            let text = match value {
                Some(v) => v,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                }
            };
            let opts = match (etag, create) {
                (Some(e), _) => PutOptions::if_match(e),
                (None, true) => PutOptions::must_not_exist(),
                (None, false) => PutOptions::any(),
            };
            print(
                &c.put_object(&bucket, &key, parse_json(&text)?, opts)
                    .await?,
            )?;
        }
        Cmd::Getobject { bucket, key } => print(&c.get_object(&bucket, &key).await?)?,
        Cmd::Delobject { bucket, key, etag } => {
            let opts = etag.map(DelOptions::if_match).unwrap_or_default();
            c.del_object(&bucket, &key, opts).await?;
            print(&serde_json::json!({"deleted": key}))?;
        }
        Cmd::Findobjects {
            bucket,
            filter,
            limit,
            offset,
            sort,
            no_count,
        } => {
            let sort = sort
                .iter()
                .map(|s| {
                    let (attr, dir) = s.split_once(':').unwrap_or((s, "asc"));
                    let order = match dir.to_ascii_lowercase().as_str() {
                        "asc" => SortOrder::Asc,
                        "desc" => SortOrder::Desc,
                        x => bail!("unknown sort order {x:?}"),
                    };
                    Ok(Sort {
                        attribute: attr.to_owned(),
                        order,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let opts = FindOptions {
                limit,
                offset,
                sort,
                no_count,
            };
            use futures_util::StreamExt as _;
            let mut s = c.find_objects_stream(&bucket, &filter, opts).await?;
            while let Some(r) = s.next().await {
                println!("{}", serde_json::to_string(&r?)?);
            }
        }
        Cmd::Updatemany {
            bucket,
            fields,
            filter,
        } => {
            let Value::Object(fields) = parse_json(&fields)? else {
                bail!("fields must be a JSON object");
            };
            print(&c.update_objects(&bucket, fields, &filter).await?)?;
        }
        Cmd::Delmany {
            bucket,
            filter,
            limit,
        } => print(&c.delete_many(&bucket, &filter, limit).await?)?,
        Cmd::Reindexobjects { bucket, count } => {
            let mut total = 0;
            loop {
                let r = c.reindex_objects(&bucket, count).await?;
                total += r.processed;
                if r.processed == 0 {
                    print(&serde_json::json!({"processed": total, "remaining": r.remaining}))?;
                    break;
                }
            }
        }
        Cmd::Sql { statement, values } => {
            let values = values.into_iter().map(Value::String).collect();
            for row in c.sql(&statement, values).await? {
                println!("{}", serde_json::to_string(&row)?);
            }
        }
        Cmd::Ping => {
            c.ping().await?;
            print(&serde_json::json!({"ok": true}))?;
        }
        Cmd::Version => print(&c.version().await?)?,
        Cmd::RingShow { etcd } => {
            let store = RingStore::new(moray::parse_endpoints(&etcd))
                .with_tls(moray::etcd::tls_options_of(id.as_ref())?);
            match store.load().await? {
                Some((ring, _)) => print(&ring_summary(&ring))?,
                None => bail!("no ring stored at {}", moray::ring::RING_KEY),
            }
        }
        Cmd::RingCreate {
            etcd,
            vnodes,
            shards,
        } => {
            let shards = shards
                .iter()
                .map(|s| {
                    let (name, urls) = s.split_once('=').context("shard must be NAME=URL[,URL]")?;
                    Ok(ShardInfo {
                        name: name.to_owned(),
                        urls: urls.split(',').map(str::to_owned).collect(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let ring = Ring::new(vnodes, shards)?;
            let store = RingStore::new(moray::parse_endpoints(&etcd))
                .with_tls(moray::etcd::tls_options_of(id.as_ref())?);
            if !store.create(&ring).await? {
                bail!(
                    "a ring already exists at {}; it is never replaced wholesale",
                    store.key()
                );
            }
            print(&ring_summary(&ring))?;
        }
        Cmd::RingRemap { etcd, vnode, shard } => {
            let store = RingStore::new(moray::parse_endpoints(&etcd))
                .with_tls(moray::etcd::tls_options_of(id.as_ref())?);
            print(&ring_summary(&store.remap_vnode(vnode, &shard).await?))?;
        }
        Cmd::VnodeMove {
            etcd,
            vnode,
            shard,
            settle,
        } => {
            let store = RingStore::new(moray::parse_endpoints(&etcd))
                .with_tls(moray::etcd::tls_options_of(id.as_ref())?);
            let opts = moray::reshard::MoveOptions {
                settle,
                ..moray::reshard::MoveOptions::default()
            };
            print(&moray::reshard::move_vnode(&store, tls.clone(), vnode, &shard, &opts).await?)?;
        }
        Cmd::VnodeFences => print(&c.vnode_fences().await?)?,
        Cmd::SetupManta => {
            moray::schema::setup_manta_buckets(&c).await?;
            print(&serde_json::json!({"ok": true}))?;
        }
    }
    Ok(())
}

/// The ring without its (long) vnode map: version, vnode count, and each shard's share.
fn ring_summary(r: &Ring) -> Value {
    let shards: Vec<Value> = r
        .shards
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "urls": s.urls, "vnodes": r.vnodes_of(&s.name).len()}))
        .collect();
    serde_json::json!({"version": r.version, "vnodes": r.vnodes, "shards": shards})
}
