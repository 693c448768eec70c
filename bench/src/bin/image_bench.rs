//! What an OCI image costs a jobs agent: unpacking one (every blob and layer verified against
//! its digest, entries checked, whiteouts applied) beside GNU `tar -xzf` of the same gzipped
//! layer (decompress and extract, nothing checked), and starting a container in an unpacked
//! image beside starting one on the host-based skeleton root.
//!
//! The image is one gzipped layer of a real directory tree (`--tree`, default
//! `/usr/lib/python3.11`: thousands of small files) plus Debian's static busybox. Run as root
//! with `runc` installed: `cargo build --release -p manta-bench --bin image_bench &&
//! target/release/image_bench`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use jobs::agent::container;
use jobs::agent::image::{LayerBuilder, pack, unpack};
use manta_bench::median;

#[derive(Debug, Parser)]
struct Args {
    /// The directory tree packed as the image's big layer.
    #[arg(long, default_value = "/usr/lib/python3.11")]
    tree: String,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Container starts of each kind.
    #[arg(long, default_value_t = 20)]
    starts: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Starts `n` containers of `bundle` running `/bin/true`; the median time, ms.
fn starts(bundle: &Path, state: &Path, n: usize, tag: &str) -> Result<f64> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(manta_bench::run_container(
            "runc",
            state,
            bundle,
            &format!("bench-{tag}-{i}"),
        )?);
    }
    Ok(median_ms(&v))
}

/// The median of `v`, in milliseconds.
fn median_ms(v: &[Duration]) -> f64 {
    median(&mut v.iter().map(|d| ms(*d)).collect::<Vec<_>>()).unwrap_or(0.0)
}

fn main() -> Result<()> {
    let a = Args::parse();
    let dir = tempfile::Builder::new().prefix("image-bench").tempdir()?;
    let work = dir.path();

    // The big layer: the tree, as GNU tar writes it (long names and all).
    let tree = Path::new(&a.tree);
    let parent = tree.parent().context("--tree needs a parent directory")?;
    let name = tree.file_name().context("--tree needs a name")?;
    let out = Command::new("tar")
        .args(["--numeric-owner", "-cf", "-", "-C"])
        .arg(parent)
        .arg(name)
        .output()?;
    if !out.status.success() {
        bail!("tar of {} failed", a.tree);
    }
    let big = out.stdout;
    let mut small = LayerBuilder::default();
    small.dir("bin/")?;
    small.file("bin/busybox", 0o755, &std::fs::read("/bin/busybox")?)?;
    small.symlink("bin/true", "busybox")?;
    small.symlink("bin/sh", "busybox")?;
    let archive = work.join("image.tar");
    std::fs::write(
        &archive,
        pack(&[(small.finish(), true), (big.clone(), true)])?,
    )?;
    // The baseline's input: the same big layer, gzipped alone.
    let gz = work.join("layer.tar.gz");
    {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz)?,
            flate2::Compression::default(),
        );
        e.write_all(&big)?;
        e.finish()?;
    }
    let archive_mb = std::fs::metadata(&archive)?.len() as f64 / 1e6;
    println!(
        "image: {} ({:.1} MB tar, {:.1} MB archive)",
        a.tree,
        big.len() as f64 / 1e6,
        archive_mb
    );

    let (mut ours, mut base) = (Vec::new(), Vec::new());
    let mut root = None;
    for i in 0..a.runs {
        let out = work.join(format!("ours-{i}"));
        let t = Instant::now();
        let u = unpack(&archive, &out, u64::MAX, Some(300_000))
            .map_err(|e| anyhow::anyhow!("unpack: {e}"))?;
        ours.push(t.elapsed());
        if i == 0 {
            println!(
                "unpacked {} ({:.1} MB of files)",
                u.digest,
                u.size as f64 / 1e6
            );
            root = Some(out.join("rootfs"));
        } else {
            std::fs::remove_dir_all(&out)?;
        }
        let b = work.join(format!("tar-{i}"));
        std::fs::create_dir(&b)?;
        let t = Instant::now();
        let st = Command::new("tar")
            .arg("-xzf")
            .arg(&gz)
            .arg("-C")
            .arg(&b)
            .status()?;
        base.push(t.elapsed());
        if !st.success() {
            bail!("tar -xzf failed");
        }
        std::fs::remove_dir_all(&b)?;
    }
    let (o, b) = (median_ms(&ours), median_ms(&base));
    println!(
        "unpack, median of {}: ours {o:.0} ms, tar -xzf {b:.0} ms: {:.2}x",
        a.runs,
        o / b
    );

    // Container starts: the image's root against the skeleton.
    let root = root.context("no unpacked root")?;
    let state = work.join("runc-state");
    let skeleton = container::probe_bundle(&work.join("skeleton"), 300_000)?;
    let image_bundle = work.join("image-bundle");
    std::fs::create_dir_all(&image_bundle)?;
    let spec = container::Spec {
        root,
        host_usr_etc: false,
        args: vec!["/bin/true".into()],
        env: vec!["PATH=/bin".into()],
        binds: Vec::new(),
        memory: 256 << 20,
        disk: 1 << 30,
        pids: 64,
        uid_base: 300_000,
        hostname: "bench".into(),
    };
    std::fs::write(
        image_bundle.join("config.json"),
        serde_json::to_vec(&spec.config())?,
    )?;
    let h = starts(&skeleton, &state, a.starts, "host")?;
    let i = starts(&image_bundle, &state, a.starts, "image")?;
    println!(
        "container start, median of {}: image root {i:.1} ms, host skeleton {h:.1} ms: {:.2}x",
        a.starts,
        i / h
    );
    Ok(())
}
