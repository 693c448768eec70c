//! Benchmarks of the object store, each a binary in `src/bin/`, each measuring a baseline in the
//! same run (raw disk write with fsync, raw hashing, a plain file copy, raw SQL) so results are
//! reported as ratios on a noisy machine. Run one with
//! `cargo run --release -p manta-bench --bin <name>`.
//!
//! This library holds what the benchmarks share: timing and percentile helpers, a
//! closed-loop load generator and the PUT-then-GET rounds built on it, and test data
//! (incompressible, or one shared chunk repeated).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs `op(0..count)` from `conc` workers, each taking the next index as soon as its last
/// operation ends (closed loop). Answers the wall time of the whole run and every operation's
/// latency; the first error stops the run.
///
/// # Errors
/// The first error an operation returns.
pub async fn closed_loop<F, Fut>(
    count: usize,
    conc: usize,
    op: F,
) -> anyhow::Result<(Duration, Vec<Duration>)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let op = op.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((start.elapsed(), all))
}

/// The figures of one closed-loop round of transfers.
#[derive(Debug, Clone)]
pub struct Round {
    /// Object bytes moved per second, in MiB.
    pub mib_s: f64,
    /// Operations per second.
    pub ops_s: f64,
    /// Every operation's latency.
    pub latencies: Vec<Duration>,
}

/// The rounds of one case, summarised.
#[derive(Debug, Clone)]
pub struct Rounds(pub Vec<Round>);

impl Rounds {
    /// The median MiB/s of the rounds.
    pub fn mib_s(&self) -> f64 {
        median(&mut self.0.iter().map(|r| r.mib_s).collect::<Vec<_>>()).unwrap_or(0.0)
    }

    /// The median operations per second of the rounds.
    pub fn ops_s(&self) -> f64 {
        median(&mut self.0.iter().map(|r| r.ops_s).collect::<Vec<_>>()).unwrap_or(0.0)
    }

    /// Latency statistics over every operation of every round; `None` without samples.
    pub fn latency(&self) -> Option<Stats> {
        let mut all: Vec<Duration> = self.0.iter().flat_map(|r| r.latencies.clone()).collect();
        stats(&mut all)
    }
}

/// One case of a PUT-then-GET comparison: `count` objects of `size` bytes, `conc` in flight.
#[derive(Debug, Clone, Copy)]
pub struct Case<'a> {
    /// The size as printed (`4KiB`), also part of the object names.
    pub label: &'a str,
    /// Bytes per object.
    pub size: usize,
    /// Operations in flight.
    pub conc: usize,
    /// Objects per round.
    pub count: usize,
}

impl<'a> Case<'a> {
    /// The case of `count` objects of `size` bytes (printed as `label`), `conc` in flight.
    pub fn new(label: &'a str, size: usize, conc: usize, count: usize) -> Self {
        Case {
            label,
            size,
            conc,
            count,
        }
    }

    /// Runs `rounds` rounds of `op` (`"PUT"` or `"GET"`) against `target`. A PUT round writes
    /// the objects `{label}-c{conc}-r{round}-{i}` with `put(ctx, target, name, size)`; a GET
    /// round reads with `get(ctx, target, name)` what the PUT of round 0 wrote, and fails on a
    /// short read. Two targets measured with the same case see the same names.
    ///
    /// # Errors
    /// The first error of an operation, or a read of the wrong length.
    #[allow(clippy::too_many_arguments)]
    pub async fn rounds<C, T, P, PF, G, GF>(
        &self,
        op: &str,
        rounds: usize,
        ctx: &Arc<C>,
        target: T,
        put: P,
        get: G,
    ) -> anyhow::Result<Rounds>
    where
        C: Send + Sync + 'static,
        T: Copy + Send + Sync + 'static,
        P: Fn(Arc<C>, T, String, usize) -> PF + Copy + Send + Sync + 'static,
        PF: Future<Output = anyhow::Result<()>> + Send,
        G: Fn(Arc<C>, T, String) -> GF + Copy + Send + Sync + 'static,
        GF: Future<Output = anyhow::Result<u64>> + Send,
    {
        let (label, size, conc) = (self.label, self.size, self.conc);
        let mut out = Vec::new();
        for round in 0..rounds {
            let c = ctx.clone();
            let (took, latencies) = if op == "PUT" {
                let prefix = format!("{label}-c{conc}-r{round}");
                closed_loop(self.count, conc, move |i| {
                    put(c.clone(), target, format!("{prefix}-{i}"), size)
                })
                .await?
            } else {
                let prefix = format!("{label}-c{conc}-r0");
                closed_loop(self.count, conc, move |i| {
                    let read = get(c.clone(), target, format!("{prefix}-{i}"));
                    async move {
                        let n = read.await?;
                        anyhow::ensure!(n as usize == size, "short read: {n} of {size} bytes");
                        Ok(())
                    }
                })
                .await?
            };
            let secs = took.as_secs_f64();
            out.push(Round {
                mib_s: (self.count * size) as f64 / MIB as f64 / secs,
                ops_s: self.count as f64 / secs,
                latencies,
            });
        }
        Ok(Rounds(out))
    }
}

/// Reads a body stream to its end, counting its bytes (what a GET measures).
///
/// # Errors
/// The stream's first error.
pub async fn count_bytes<S, E>(stream: S) -> anyhow::Result<u64>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
    E: Into<anyhow::Error>,
{
    use futures_util::StreamExt as _;
    let mut stream = std::pin::pin!(stream);
    let mut n = 0u64;
    while let Some(b) = stream.next().await {
        n += b.map_err(Into::into)?.len() as u64;
    }
    Ok(n)
}

/// A mebibyte.
pub const MIB: usize = 1024 * 1024;

/// `size` bytes as chunks of one shared 1 MiB buffer, so a large body costs no large
/// allocation.
pub fn shared_chunks(size: usize) -> Vec<bytes::Bytes> {
    let chunk = bytes::Bytes::from(vec![0x5a; MIB.min(size.max(1))]);
    let mut v = vec![chunk.clone(); size / chunk.len()];
    if !size.is_multiple_of(chunk.len()) {
        v.push(chunk.slice(..size % chunk.len()));
    }
    v
}

/// Summary statistics of a set of latency samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Mean.
    pub mean: Duration,
}

/// Computes p50, p99 and mean (nearest-rank percentiles); `None` for no samples.
pub fn stats(samples: &mut [Duration]) -> Option<Stats> {
    if samples.is_empty() {
        return None;
    }
    samples.sort();
    let rank = |p: f64| {
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    let total: Duration = samples.iter().sum();
    Some(Stats {
        n: samples.len(),
        p50: rank(0.50),
        p99: rank(0.99),
        mean: total / samples.len() as u32,
    })
}

/// Runs the OCI bundle at `bundle` to its end as container `id` with `runtime` (state under
/// `state`); how long that took.
///
/// # Errors
/// When the runtime cannot be run or the container fails.
pub fn run_container(
    runtime: &str,
    state: &std::path::Path,
    bundle: &std::path::Path,
    id: &str,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let st = std::process::Command::new(runtime)
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(std::process::Stdio::null())
        .status()?;
    let took = t.elapsed();
    if !st.success() {
        anyhow::bail!("{runtime} run {id} failed: {st}");
    }
    Ok(took)
}

/// The median of a list of figures (e.g. MiB/s of repeated runs); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    Some(values[values.len() / 2])
}

/// CPU time (user and system, clock ticks) used so far by every live process, by pid with its
/// command name, counting the reaped children of each (so a supervisor that waits for
/// short-lived helpers, like an agent for its runtime, carries their time), and the whole
/// machine's busy ticks from `/proc/stat`. Two snapshots around a run say which service spent
/// the machine's CPU on it; see [`cpu_delta`].
pub fn cpu_snapshot() -> CpuSnapshot {
    let mut procs = std::collections::BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`: the command may hold spaces, so split at the last ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            // Kernel workers rename themselves after their current work: one name for them all.
            let comm = match &stat[open + 1..close] {
                c if c.starts_with("kworker/") => "kworker (kernel)".to_owned(),
                c => c.to_owned(),
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            // After the command: state is field 0, utime 11, stime 12, cutime 13, cstime 14.
            let ticks: u64 = (11..=14)
                .filter_map(|i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
                .sum();
            procs.insert(pid, (comm, ticks));
        }
    }
    let busy = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_owned();
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
            Some(
                v.iter().sum::<u64>()
                    - v.get(3).copied().unwrap_or(0)
                    - v.get(4).copied().unwrap_or(0),
            )
        })
        .unwrap_or(0);
    CpuSnapshot { procs, busy }
}

/// What [`cpu_snapshot`] saw.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    /// By pid: command name and ticks used (with reaped children's).
    procs: std::collections::BTreeMap<u32, (String, u64)>,
    /// The machine's busy ticks.
    busy: u64,
}

/// Seconds of CPU per command between two [`cpu_snapshot`]s (each process's own difference,
/// or all it used for one that began in between), largest first, commands under 1% of the
/// total left out; and the machine's busy seconds. Processes that ended in between count only
/// through a parent that reaped them. Clock ticks are taken as 100 a second, Linux's `USER_HZ`
/// everywhere it runs.
pub fn cpu_delta(before: &CpuSnapshot, after: &CpuSnapshot) -> (Vec<(String, f64)>, f64) {
    const HZ: f64 = 100.0;
    let mut by = std::collections::BTreeMap::<String, u64>::new();
    for (pid, (comm, ticks)) in &after.procs {
        let was = before
            .procs
            .get(pid)
            .filter(|(c, _)| c == comm)
            .map_or(0, |(_, t)| *t);
        *by.entry(comm.clone()).or_default() += ticks.saturating_sub(was);
    }
    let mut v: Vec<(String, f64)> = by.into_iter().map(|(k, t)| (k, t as f64 / HZ)).collect();
    let total: f64 = v.iter().map(|x| x.1).sum();
    v.retain(|x| x.1 > total * 0.01);
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    (v, after.busy.saturating_sub(before.busy) as f64 / HZ)
}

/// Fills `buf` with pseudo-random, incompressible bytes from the xorshift state `x` (which
/// moves on, so successive calls continue the sequence; a zero state is replaced by one).
pub fn fill_noise(buf: &mut [u8], x: &mut u64) {
    if *x == 0 {
        *x = 1;
    }
    for chunk in buf.chunks_mut(8) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// The storage node key a benchmark object name stands for (a UUID derived from the name), so
/// the front door and node baselines of one case use the same names.
pub fn node_key(name: &str) -> storage_api::ObjectKey {
    use md5::Digest as _;
    let id = uuid::Uuid::from_bytes(md5::Md5::digest(name.as_bytes()).into());
    storage_api::ObjectKey {
        owner: uuid::Uuid::nil(),
        id: id
            .to_string()
            .parse()
            .expect("a UUID's text is an object id"),
    }
}

/// `dd if=/dev/zero of=FILE bs=1M count=N conv=fsync` into `dir`, `streams` at once,
/// `per_stream` files each (the raw disk baseline of a PUT); returns MiB/s. `dir` is removed
/// afterwards.
///
/// # Errors
/// When dd cannot run or fails.
pub fn dd_write(
    dir: &std::path::Path,
    size_mib: u64,
    streams: usize,
    per_stream: usize,
) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let t = Instant::now();
    let handles: Vec<_> = (0..streams)
        .map(|s| {
            let dir = dir.to_owned();
            std::thread::spawn(move || -> anyhow::Result<()> {
                for i in 0..per_stream {
                    let st = std::process::Command::new("dd")
                        .arg("if=/dev/zero")
                        .arg(format!("of={}", dir.join(format!("dd-{s}-{i}")).display()))
                        .args([
                            "bs=1M",
                            &format!("count={size_mib}"),
                            "conv=fsync",
                            "status=none",
                        ])
                        .status()?;
                    anyhow::ensure!(st.success(), "dd failed");
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("dd thread panicked"))??;
    }
    let bytes = size_mib * MIB as u64 * (streams * per_stream) as u64;
    let r = bytes as f64 / MIB as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(dir)?;
    Ok(r)
}

/// An S3 client (`object_store`, unsigned payloads) of bucket `bench` on the region's S3
/// listener at `endpoint`, with a fresh key of the region's account; the bucket is created.
///
/// # Errors
/// When the key cannot be made or the bucket created.
pub async fn s3_bench_bucket(
    region: &testkit::TestRegion,
    endpoint: &str,
) -> anyhow::Result<object_store::aws::AmazonS3> {
    use anyhow::Context as _;
    let out = region
        .manta_adm()?
        .args(["s3-key", "create", &region.account.login, "--json"])
        .output()?;
    anyhow::ensure!(out.status.success(), "manta-adm s3-key create failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ak = v["accessKeyId"].as_str().context("key id")?;
    let sk = v["secretAccessKey"].as_str().context("secret")?;
    // `object_store` does not create buckets: `PUT /bench` with a presigned URL.
    let url = testkit::s3::Presign {
        base: endpoint,
        method: "PUT",
        path: "/bench",
        access_key: ak,
        secret_key: sk,
        expires: 300,
        now: std::time::SystemTime::now(),
    }
    .url();
    let created = reqwest::Client::new().put(url).send().await?;
    anyhow::ensure!(
        created.status().is_success(),
        "could not create the bench bucket: {}",
        created.status()
    );
    Ok(object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("bench")
        .with_access_key_id(ak)
        .with_secret_access_key(sk)
        .with_unsigned_payload(true)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = stats(&mut v).unwrap();
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert!(stats(&mut []).is_none());
    }
}
