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
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
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
        url: region.url.clone(),
        user: region.account.login.clone(),
        subuser: None,
        key_id: Some(region.account.key_id.clone()),
        insecure: false,
        ssh_dir: region.account.key.parent().context("key dir")?.to_owned(),
        no_auth: false,
        timeout: Duration::from_secs(120),
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

        let remote = format!("~~/stor/bench-{round}");
        mput.push(
            timed(run(tool("mput")
                .args(["-q", "-c", &copies, "-f"])
                .arg(&src)
                .arg(&remote)))
            .await?,
        );
        let out = work.path().join("mget.bin");
        mget.push(timed(run(tool("mget").args(["-q", "-o"]).arg(&out).arg(&remote))).await?);
        if std::fs::metadata(&out)?.len() != size {
            bail!("mget wrote the wrong size");
        }
        std::fs::remove_file(&out)?;

        let remote_lib = format!("~~/stor/bench-lib-{round}");
        let opts = PutOptions {
            copies: Some(args.copies),
            ..PutOptions::default()
        };
        lib_put.push(timed(async { Ok(client.put_file(&remote_lib, &src, opts).await?) }).await?);
        let out = work.path().join("lib.bin");
        lib_get.push(
            timed(async {
                let f = std::fs::File::create(&out)?;
                let (f, got) = client
                    .get_to_writer(&remote_lib, DownloadOptions::default(), f)
                    .await?;
                tokio::task::spawn_blocking(move || f.sync_all()).await??;
                anyhow::ensure!(got.size == size, "short download");
                Ok(())
            })
            .await?,
        );
        std::fs::remove_file(&out)?;
        client.rm(&remote).await?;
        client.rm(&remote_lib).await?;
        println!("round {} of {} done", round + 1, args.repeat);
    }

    let rate = |v: &[Duration]| {
        let mut r: Vec<f64> = v.iter().map(|d| mib_s(size, *d)).collect();
        median(&mut r).unwrap_or(0.0)
    };
    let base = rate(&cp);
    println!(
        "\n{} MiB file, {} copies per object, medians of {} runs:",
        args.size_mib, args.copies, args.repeat
    );
    println!("{:<34} {:>10} {:>14}", "", "MiB/s", "vs cp+fsync");
    for (name, v) in [
        ("cp + fsync (baseline)", &cp),
        ("mput -f (manta binary)", &mput),
        ("mget -o (manta binary)", &mget),
        ("MantaClient::put_file", &lib_put),
        ("MantaClient::get_to_writer + fsync", &lib_get),
    ] {
        let r = rate(v);
        println!("{name:<34} {r:>10.1} {:>13.2}x", r / base);
    }
    println!(
        "mput vs client: {:.2}x, mget vs client: {:.2}x",
        rate(&mput) / rate(&lib_put),
        rate(&mget) / rate(&lib_get)
    );
    Ok(())
}
