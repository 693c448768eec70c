//! `mput`/`mget` of a large file through a whole local region, beside `cp` of the same file
//! and beside the client library used directly, all measured in the same run.
//!
//! - baseline: `cp FILE COPY` followed by an fsync of the copy (the store acknowledges a PUT
//!   only once every copy is on disk, so the baseline is made durable too);
//! - `mput -f FILE ~~/stor/x` and `mget -o OUT ~~/stor/x`: the `manta` binary as a user runs
//!   it (a new process each time; `mget` renames its fsynced download into place);
//! - `MantaClient::put_file` / `get_to_writer` into a file (then fsynced), in this process.
//!
//! The region (Postgres, Moray, three storage nodes, the front door) runs on this machine, so
//! every byte is also written by the storage nodes: with the default two copies a PUT writes
//! twice what `cp` writes. Figures are MiB/s of the file's size, medians of `--repeat` runs.
//! Build first: `cargo build --release --bins && target/release/cli_transfer`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use manta_bench::median;
use manta_client::{ClientConfig, DownloadOptions, MantaClient, PutOptions};
use testkit::TestRegion;

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Parser)]
struct Args {
    /// Size of the file in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Copies the store keeps of each object (`mput -c`).
    #[arg(long, default_value_t = 2)]
    copies: u32,
    /// Directory for the test file and its copies.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
}

/// Writes `size` bytes of pseudo-random data (incompressible) to `path`.
fn make_file(path: &Path, size: u64) -> Result<()> {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        manta_bench::fill_noise(&mut buf, &mut x);
        let n = left.min(MIB) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.into_inner()?.sync_all()?;
    Ok(())
}

async fn timed<F, T>(f: F) -> Result<Duration>
where
    F: std::future::Future<Output = Result<T>>,
{
    let start = Instant::now();
    f.await?;
    Ok(start.elapsed())
}

async fn run(cmd: &mut tokio::process::Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat` (in clock
/// ticks of 10 ms, the Linux default).
fn self_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may contain spaces); utime and stime are the
    // 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Runs `cmd` under `/usr/bin/time`; returns its wall time and the CPU time it used.
async fn run_timed(cmd: &mut tokio::process::Command, work: &Path) -> Result<(Duration, Duration)> {
    let report = work.join("time.txt");
    let inner = cmd.as_std();
    let mut wrapped = tokio::process::Command::new("/usr/bin/time");
    wrapped
        .arg("-f")
        .arg("%U %S")
        .arg("-o")
        .arg(&report)
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let wall = timed(run(&mut wrapped)).await?;
    let text = std::fs::read_to_string(&report)?;
    let secs: f64 = text
        .split_whitespace()
        .filter_map(|x| x.parse::<f64>().ok())
        .sum();
    Ok((wall, Duration::from_secs_f64(secs)))
}

/// A report line: name, wall times, client CPU times.
type Row<'a> = (&'a str, &'a [Duration], Option<&'a [Duration]>);

fn mib_s(size: u64, d: Duration) -> f64 {
    size as f64 / MIB as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let size = args.size_mib * MIB;
    let work = tempfile::Builder::new()
        .prefix("cli-transfer-")
        .tempdir_in(&args.dir)
        .context("make the work dir")?;
    let src = work.path().join("src.bin");
    println!(
        "writing a {} MiB test file in {}",
        args.size_mib,
        work.path().display()
    );
    {
        let src = src.clone();
        tokio::task::spawn_blocking(move || make_file(&src, size)).await??;
    }

    println!("starting a region (Postgres, Moray, 3 storage nodes, front door)...");
    let region = TestRegion::start().await?;
    let env = region.cli_env(&region.account);
    let manta = testkit::region::binary("manta")?;
    let cfg = ClientConfig {
        timeout: Duration::from_secs(120),
        ..region.client_config(&region.account)
    };
    let client = MantaClient::new(cfg).await?;
    let copies = args.copies.to_string();
    let tool = |name: &str| {
        let mut c = tokio::process::Command::new(&manta);
        c.arg(name)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    };

    let (mut cp, mut mput, mut mget, mut lib_put, mut lib_get) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // CPU time of the client side: the tool's process, or this one for the library.
    let (mut mput_cpu, mut mget_cpu, mut put_cpu, mut get_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.repeat {
        let copy = work.path().join("copy.bin");
        cp.push(
            timed(async {
                run(tokio::process::Command::new("cp").arg(&src).arg(&copy)).await?;
                let c2 = copy.clone();
                tokio::task::spawn_blocking(move || std::fs::File::open(c2)?.sync_all()).await??;
                Ok(())
            })
            .await?,
        );
        std::fs::remove_file(&copy)?;

        // The tool and the library take turns going first, so neither always runs right
        // after the other's writes are being flushed.
        for pass in 0..2 {
            if (round + pass) % 2 == 0 {
                let remote = format!("~~/stor/bench-{round}");
                let mut put = tool("mput");
                put.args(["-q", "-c", &copies, "-f"]).arg(&src).arg(&remote);
                let (t, cpu) = run_timed(&mut put, work.path()).await?;
                mput.push(t);
                mput_cpu.push(cpu);
                let out = work.path().join("mget.bin");
                let mut get = tool("mget");
                get.args(["-q", "-o"]).arg(&out).arg(&remote);
                let (t, cpu) = run_timed(&mut get, work.path()).await?;
                mget.push(t);
                mget_cpu.push(cpu);
                if std::fs::metadata(&out)?.len() != size {
                    bail!("mget wrote the wrong size");
                }
                std::fs::remove_file(&out)?;
                client.rm(&remote).await?;
            } else {
                let remote = format!("~~/stor/bench-lib-{round}");
                let opts = PutOptions {
                    copies: Some(args.copies),
                    ..PutOptions::default()
                };
                let before = self_cpu();
                lib_put
                    .push(timed(async { Ok(client.put_file(&remote, &src, opts).await?) }).await?);
                put_cpu.push(self_cpu().saturating_sub(before));
                let out = work.path().join("lib.bin");
                let before = self_cpu();
                lib_get.push(
                    timed(async {
                        let f = std::fs::File::create(&out)?;
                        let (f, got) = client
                            .get_to_writer(&remote, DownloadOptions::default(), f)
                            .await?;
                        tokio::task::spawn_blocking(move || f.sync_all()).await??;
                        anyhow::ensure!(got.size == size, "short download");
                        Ok(())
                    })
                    .await?,
                );
                get_cpu.push(self_cpu().saturating_sub(before));
                std::fs::remove_file(&out)?;
                client.rm(&remote).await?;
            }
        }
        println!("round {} of {} done", round + 1, args.repeat);
    }

    let rate = |v: &[Duration]| {
        let mut r: Vec<f64> = v.iter().map(|d| mib_s(size, *d)).collect();
        median(&mut r).unwrap_or(0.0)
    };
    let gib = size as f64 / (1024.0 * MIB as f64);
    let cpu = |v: &[Duration]| {
        let mut r: Vec<f64> = v.iter().map(|d| d.as_secs_f64() / gib).collect();
        median(&mut r).unwrap_or(0.0)
    };
    let base = rate(&cp);
    println!(
        "\n{} MiB file, {} copies per object, medians of {} runs:",
        args.size_mib, args.copies, args.repeat
    );
    println!(
        "{:<36} {:>8} {:>12} {:>18}",
        "", "MiB/s", "vs cp+fsync", "client CPU s/GiB"
    );
    let rows: [Row<'_>; 5] = [
        ("cp + fsync (baseline)", &cp, None),
        ("mput -f (manta binary)", &mput, Some(&mput_cpu)),
        ("mget -o (manta binary)", &mget, Some(&mget_cpu)),
        ("MantaClient::put_file", &lib_put, Some(&put_cpu)),
        (
            "MantaClient::get_to_writer + fsync",
            &lib_get,
            Some(&get_cpu),
        ),
    ];
    for (name, v, c) in rows {
        let r = rate(v);
        let c = c.map(|c| format!("{:.2}", cpu(c))).unwrap_or_default();
        println!("{name:<36} {r:>8.1} {:>11.2}x {c:>18}", r / base);
    }
    println!(
        "mput vs client: {:.2}x, mget vs client: {:.2}x",
        rate(&mput) / rate(&lib_put),
        rate(&mget) / rate(&lib_get)
    );
    Ok(())
}
