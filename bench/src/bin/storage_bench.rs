//! Storage node throughput and memory, against raw disk baselines measured in the same run.
//!
//! - PUT: 1 MiB and 256 MiB objects, one stream and 8 at once, through a `storage-node`
//!   process over HTTP on loopback; baseline `dd if=/dev/zero of=FILE bs=1M count=N
//!   conv=fsync` to the same disk, in the same shape (one file per object, as many at once).
//! - GET: the same objects read back over HTTP; baseline a raw read of the very same files
//!   (`dd of=/dev/null bs=1M`), both from the page cache (warm) and, for 256 MiB objects,
//!   after dropping the page cache (cold, when run as root).
//! - Peak RSS (VmHWM) of a fresh storage-node process serving 64 concurrent 256 MiB uploads.
//!
//! Figures are medians of `--repeat` runs. Build the server first:
//! `cargo build --release -p storage-node -p manta-bench && target/release/storage_bench`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt as _;
use manta_bench::{dd_write, fill_noise, median};
use manta_pki::Role;
use storage_api::{ObjectKey, PutRequest, StorageClient};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Parser)]
struct Args {
    /// Directory on the disk to measure (the dataset and the dd files go under it).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// The storage-node binary (default: next to this benchmark's binary).
    #[arg(long)]
    storage_node: Option<PathBuf>,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// 1 MiB objects per stream in the small-object cases.
    #[arg(long, default_value_t = 32)]
    small_count: usize,
    /// Skip the 64 x 256 MiB memory test (it writes 16 GiB).
    #[arg(long)]
    skip_rss: bool,
    /// Drop the page cache for cold reads (needs root).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cold: bool,
}

struct Node {
    child: Child,
    client: StorageClient,
    root: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    async fn start(bin: &Path, dir: &Path) -> Result<Node> {
        let port = testkit::process::free_port()?;
        let root = dir.join("data");
        let log = std::fs::File::create(dir.join("storage-node.log"))?;
        // A region identity each for the node and for the client (as a front door), so the
        // node is measured as a region runs it: mutual TLS.
        let ca = manta_pki::Ca::open_or_create(&dir.join("pki"), "bench")?;
        let loopback = ["127.0.0.1".to_owned()];
        let node_id = ca.issue(&dir.join("pki/node"), "node", Role::Storage, &loopback)?;
        let client_id = ca.issue(&dir.join("pki/client"), "client", Role::Frontdoor, &[])?;
        let child = Command::new(bin)
            .arg("--tls-dir")
            .arg(node_id.dir())
            .args(["--dataset", &format!("dir:{}", root.display())])
            .args(["--storage-id", "bench.stor", "--scrub-rate", "0"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let client = storage_api::ClientBuilder::new()
            .pool_max_idle_per_host(128)
            .tls(manta_util::tls::internal_client_config(&client_id)?)
            .build()
            .node(format!("https://127.0.0.1:{port}"));
        for _ in 0..500 {
            if client.ping().await.is_ok() {
                return Ok(Node {
                    child,
                    client,
                    root,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "storage-node did not start (see {})",
            dir.join("storage-node.log").display()
        )
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn path_of(&self, k: &ObjectKey) -> PathBuf {
        self.root.join("objects").join(k.rel_path())
    }
}

fn key() -> ObjectKey {
    ObjectKey {
        owner: uuid::Uuid::from_u128(0x5eed),
        id: manta_types::ObjectId::random(),
    }
}

/// A body of `size` bytes: one random MiB repeated (cheap to produce, so the client is not
/// what is measured).
fn body(block: &Bytes, size: u64) -> PutRequest {
    let n = size.div_ceil(MIB);
    let block = block.clone();
    let stream = futures_util::stream::iter((0..n).map(move |i| {
        let len = if i == n - 1 { size - i * MIB } else { MIB };
        Ok::<_, std::io::Error>(block.slice(..len as usize))
    }));
    PutRequest::stream(stream, Some(size))
}

fn mibps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

/// PUTs `streams` x `per_stream` objects of `size`; returns MiB/s and the keys.
async fn put_case(
    node: &Node,
    block: &Bytes,
    size: u64,
    streams: usize,
    per_stream: usize,
) -> Result<(f64, Vec<ObjectKey>)> {
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let client = node.client.clone();
        let block = block.clone();
        tasks.push(tokio::spawn(async move {
            let mut keys = Vec::new();
            for _ in 0..per_stream {
                let k = key();
                client.put(&k, body(&block, size)).await?;
                keys.push(k);
            }
            Ok::<_, anyhow::Error>(keys)
        }));
    }
    let mut keys = Vec::new();
    for t in tasks {
        keys.extend(t.await??);
    }
    Ok((
        mibps(size * (streams * per_stream) as u64, t.elapsed()),
        keys,
    ))
}

/// GETs every key, `streams` at once; returns MiB/s.
async fn get_case(node: &Node, keys: &[ObjectKey], streams: usize) -> Result<f64> {
    let t = Instant::now();
    let chunks: Vec<Vec<ObjectKey>> = keys
        .chunks(keys.len().div_ceil(streams))
        .map(<[_]>::to_vec)
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let client = node.client.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            for k in chunk {
                let mut s = client.get(&k, None).await?.into_stream();
                while let Some(c) = s.next().await {
                    n += c?.len() as u64;
                }
            }
            Ok::<_, anyhow::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(mibps(total, t.elapsed()))
}

/// Reads `files` in this process with 1 MiB reads (no per-file process start, unlike dd),
/// `streams` at once; returns MiB/s.
fn raw_read(files: &[PathBuf], streams: usize) -> Result<f64> {
    use std::io::Read as _;
    let chunks: Vec<Vec<PathBuf>> = files
        .chunks(files.len().div_ceil(streams))
        .map(<[_]>::to_vec)
        .collect();
    let t = Instant::now();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || -> Result<u64> {
                let mut buf = vec![0u8; MIB as usize];
                let mut n = 0u64;
                for f in chunk {
                    let mut file = std::fs::File::open(&f)?;
                    loop {
                        let r = file.read(&mut buf)?;
                        if r == 0 {
                            break;
                        }
                        n += r as u64;
                    }
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("read thread panicked"))??;
    }
    Ok(mibps(total, t.elapsed()))
}

/// The per-block CRC32C of `size` bytes on one thread: the only hash a node computes on an
/// upload (MD5 only when asked), so the CPU floor of a single-stream upload.
fn hash_rate(block: &Bytes, size: u64) -> f64 {
    let t = Instant::now();
    let mut sum = 0u32;
    for _ in 0..size / MIB {
        sum ^= storage_api::blocks::crc32c(block);
    }
    std::hint::black_box(sum);
    mibps(size, t.elapsed())
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn drop_caches() -> bool {
    // Flush dirty pages first so dropping frees everything that can be freed.
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

struct Row {
    case: String,
    ours: f64,
    base_name: &'static str,
    base: f64,
}

async fn delete_all(node: &Node, keys: &[ObjectKey]) -> Result<()> {
    for k in keys {
        node.client.delete(k).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bin = match &args.storage_node {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("storage-node"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p storage-node)",
            bin.display()
        );
    }
    let work = WorkDir::new(&args.dir)?;
    println!(
        "storage_bench: dir {} ({}), server {}, median of {}",
        work.path().display(),
        fs_of(&args.dir),
        bin.display(),
        args.repeat
    );
    let node = Node::start(&bin, work.path()).await?;
    let mut block = vec![0u8; MIB as usize];
    fill_noise(&mut block, &mut 99);
    let block = Bytes::from(block);
    let mut rows = Vec::new();
    let mut cpu_notes = Vec::new();
    let mut hashes: Vec<f64> = (0..args.repeat)
        .map(|_| hash_rate(&block, 256 * MIB))
        .collect();
    let cold_ok = args.cold && drop_caches();

    for (size_mib, label, per_stream_single) in
        [(1u64, "1 MiB", args.small_count), (256, "256 MiB", 1)]
    {
        for streams in [1usize, 8] {
            let per_stream = if size_mib == 1 { per_stream_single } else { 1 };
            let (mut put, mut dd, mut get_w, mut raw_w, mut get_c, mut raw_c) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            let mut put_cpu = vec![];
            for _ in 0..args.repeat {
                dd.push(dd_write(
                    &work.path().join("dd"),
                    size_mib,
                    streams,
                    per_stream,
                )?);
                let cpu0 = cpu_seconds(node.pid());
                let (p, keys) =
                    put_case(&node, &block, size_mib * MIB, streams, per_stream).await?;
                put.push(p);
                let gib = (size_mib * (streams * per_stream) as u64) as f64 / 1024.0;
                put_cpu.push((cpu_seconds(node.pid()) - cpu0) / gib);
                let files: Vec<PathBuf> = keys.iter().map(|k| node.path_of(k)).collect();
                // Warm: both read from the page cache (the files were just written).
                raw_w.push(raw_read(&files, streams)?);
                get_w.push(get_case(&node, &keys, streams).await?);
                if cold_ok && size_mib > 1 {
                    // Both orders, so neither side profits from what the VM host cached for
                    // the other.
                    for first_raw in [true, false] {
                        for raw in [first_raw, !first_raw] {
                            drop_caches();
                            if raw {
                                raw_c.push(raw_read(&files, streams)?);
                            } else {
                                get_c.push(get_case(&node, &keys, streams).await?);
                            }
                        }
                    }
                }
                delete_all(&node, &keys).await?;
            }
            let case = format!("{label} x{streams}");
            let m = |v: &mut Vec<f64>| median(v).unwrap_or(f64::NAN);
            rows.push(Row {
                case: format!("PUT {case}"),
                ours: m(&mut put),
                base_name: "dd conv=fsync",
                base: m(&mut dd),
            });
            cpu_notes.push(format!(
                "PUT {case}: storage-node used {:.2} CPU-s per GiB",
                m(&mut put_cpu)
            ));
            rows.push(Row {
                case: format!("GET {case} (warm)"),
                ours: m(&mut get_w),
                base_name: "raw read (warm)",
                base: m(&mut raw_w),
            });
            if !get_c.is_empty() {
                rows.push(Row {
                    case: format!("GET {case} (cold)"),
                    ours: m(&mut get_c),
                    base_name: "raw read (cold)",
                    base: m(&mut raw_c),
                });
            }
        }
    }
    drop(node);

    println!();
    println!(
        "{:<26} {:>14} {:>18} {:>14} {:>7}",
        "case", "storage-node", "baseline", "MiB/s", "ratio"
    );
    for r in &rows {
        println!(
            "{:<26} {:>9.0} MiB/s {:>18} {:>8.0} MiB/s {:>6.0}%",
            r.case,
            r.ours,
            r.base_name,
            r.base,
            100.0 * r.ours / r.base
        );
    }
    let floor = median(&mut hashes).unwrap_or(f64::NAN);
    println!();
    println!(
        "CPU floor: CRC32C on one thread {floor:.0} MiB/s (median); load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for n in &cpu_notes {
        println!("{n}");
    }
    for r in rows.iter().filter(|r| r.case.starts_with("PUT")) {
        println!(
            "{}: {:.0}% of the one-thread hashing floor",
            r.case,
            100.0 * r.ours / floor
        );
    }
    if !cold_ok {
        println!("(cold reads skipped: dropping the page cache needs root)");
    }

    if !args.skip_rss {
        let dir = work.path().join("rss");
        std::fs::create_dir_all(&dir)?;
        let node = Node::start(&bin, &dir).await?;
        let idle = vm_hwm_kib(node.pid()).unwrap_or(0);
        let node = Arc::new(node);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let pid = node.pid();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak_rss = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(s) = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
                        && let Some(v) = s
                            .lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    {
                        peak_rss = peak_rss.max(v);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                peak_rss
            })
        };
        let t = Instant::now();
        let (rate, keys) = put_case(&node, &block, 256 * MIB, 64, 1).await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sampled = sampler
            .join()
            .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
        let hwm = vm_hwm_kib(node.pid()).unwrap_or(0);
        println!();
        println!(
            "64 concurrent 256 MiB uploads: {:.1} s, {:.0} MiB/s; storage-node peak RSS (VmHWM) {:.1} MiB \
             (idle before: {:.1} MiB; sampled VmRSS max {:.1} MiB); goal < 100 MiB",
            t.elapsed().as_secs_f64(),
            rate,
            hwm as f64 / 1024.0,
            idle as f64 / 1024.0,
            sampled as f64 / 1024.0
        );
        delete_all(&node, &keys).await?;
    }
    Ok(())
}

/// A scratch directory on the measured disk, removed at the end.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(parent: &Path) -> Result<WorkDir> {
        let p = parent.join(format!("storage-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
        Ok(WorkDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fs_of(dir: &Path) -> String {
    Command::new("df")
        .args(["--output=source,fstype"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default()
}
