//! One fault run, short (the test suite's) or long (the soak): a one-machine region brought up
//! with `manta-adm up`, the [`workload`](crate::workload) and a jobs client against it, a fault
//! every few seconds, then the region's recovery, final reads, the
//! [`checker`](crate::checker), and a report.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::checker::{Violation, check};
use crate::faults::{Fault, FaultKind, Injector, SMALL_DISK_NODE, keep_on_small_disk};
use crate::workload::{
    Recorder, Rng, Shape, client_loop, final_reads, jobs_loop, prepare_bucket, prepare_job_inputs,
    s3_loop,
};

/// A region brought up by `manta-adm up` in a directory of its own, with a home holding the
/// user's key; destroyed when dropped unless `keep`.
#[derive(Debug)]
pub struct AdmRegion {
    /// The region's directory.
    pub dir: PathBuf,
    /// The home of the region's user (its `.ssh`).
    pub home: PathBuf,
    /// `manta-adm`.
    pub adm: PathBuf,
    /// Leave it running when dropped.
    pub keep: bool,
    /// The small filesystem [`SMALL_DISK_NODE`]'s data is on, unmounted once the region is down.
    pub small_disk: Option<PathBuf>,
}

impl AdmRegion {
    /// Brings a region up under `base` (`base/region`, `base/home`) with the `manta-adm` at
    /// `adm`, with [`SMALL_DISK_NODE`]'s data on a filesystem of its own (256 MiB) that a fault
    /// can fill.
    ///
    /// # Errors
    /// `up`'s output when it fails.
    pub fn up(adm: &Path, base: &Path) -> Result<AdmRegion, String> {
        let r = AdmRegion {
            dir: base.join("region"),
            home: base.join("home"),
            adm: adm.to_path_buf(),
            keep: false,
            small_disk: None,
        };
        std::fs::create_dir_all(&r.home).map_err(|e| e.to_string())?;
        r.adm_up()?;
        let mut r = r;
        r.small_disk = Some(keep_on_small_disk(&r.dir, SMALL_DISK_NODE, 256)?);
        r.adm_up()?;
        Ok(r)
    }

    /// `manta-adm up`, as the region's user.
    fn adm_up(&self) -> Result<(), String> {
        let out = Command::new(&self.adm)
            .args(["up", "--dir"])
            .arg(&self.dir)
            .env("HOME", &self.home)
            .env("USER", "faults")
            .output()
            .map_err(|e| format!("run {}: {e}", self.adm.display()))?;
        if !out.status.success() {
            return Err(format!(
                "manta-adm up failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    fn env(&self) -> HashMap<String, String> {
        std::fs::read_to_string(self.dir.join("env.sh"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect()
    }

    /// An S3 client of the region as its user (the key `up` made). It makes one attempt per
    /// request (the SDK's retries are off): after a retry, a refusal would not say that the
    /// first attempt did not take effect (a completion that landed but whose answer was lost,
    /// retried, answers `NoSuchUpload`), and the checker must be told only what is certain. A
    /// request that gets no answer in 30 s is given up (its outcome unknown).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{
            BehaviorVersion, Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig,
        };
        let env = self.env();
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        let creds = Credentials::new(
            get("AWS_ACCESS_KEY_ID"),
            get("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "region",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(get("AWS_REGION")))
            .endpoint_url(get("AWS_ENDPOINT_URL"))
            .credentials_provider(creds)
            .force_path_style(true)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            )
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// A client of the region as its user.
    ///
    /// # Errors
    /// When `env.sh` or the key cannot be read.
    pub async fn client(&self) -> Result<manta_client::MantaClient, manta_client::Error> {
        let env = self.env();
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        manta_client::MantaClient::new(manta_client::ClientConfig {
            url: get("MANTA_URL"),
            user: get("MANTA_USER"),
            subuser: None,
            key_id: Some(get("MANTA_KEY_ID")),
            insecure: false,
            ssh_dir: self.home.join(".ssh"),
            no_auth: false,
            timeout: Duration::from_secs(15),
        })
        .await
    }
}

impl Drop for AdmRegion {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Some(disk) = &self.small_disk {
            let _ = Command::new(&self.adm)
                .args(["down", "--dir"])
                .arg(&self.dir)
                .output();
            let _ = Command::new("umount").arg(disk).output();
        }
        let _ = Command::new(&self.adm)
            .args(["destroy", "--yes", "--dir"])
            .arg(&self.dir)
            .env("HOME", &self.home)
            .output();
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Seeds the clients' choices and the faults.
    pub seed: u64,
    /// How long the load and the faults last.
    pub duration: Duration,
    /// Time between faults.
    pub every: Duration,
    /// Take each kind of fault in turn first, then random ones.
    pub in_turn: bool,
    /// Manta object clients.
    pub clients: u32,
    /// S3 clients.
    pub s3_clients: u32,
    /// Whether a jobs client runs too.
    pub jobs: bool,
}

/// What a run found.
#[derive(Debug)]
pub struct RunReport {
    /// The run.
    pub cfg: RunConfig,
    /// Operations done, and those that failed or whose outcome is unknown.
    pub ops: u64,
    /// See `ops`.
    pub errors: u64,
    /// Jobs run, and those that did not complete.
    pub jobs: u64,
    /// See `jobs`.
    pub job_errors: u64,
    /// Faults injected: when (seconds into the run) and what.
    pub faults: Vec<(f64, Fault)>,
    /// Per minute: operations that worked and that did not.
    pub per_minute: Vec<(u64, u64)>,
    /// Events checked.
    pub events: usize,
    /// How long the region took to be healthy again once the faults stopped.
    pub recovery: Duration,
    /// Every violation found.
    pub violations: Vec<Violation>,
}

impl RunReport {
    /// The report, in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Fault run\n");
        let _ = writeln!(
            s,
            "- seed: {} (replay with `--seed {}`)\n- length: {:?}, a fault every {:?}\n- \
             clients: {} Manta object clients, {} S3 clients{}\n- operations: {} ({} failed or unknown)\n- jobs: {} \
             ({} did not complete)\n- faults: {}\n- recovery after the last fault: {:.1?}\n- \
             events checked: {}\n- **violations: {}**\n",
            self.cfg.seed,
            self.cfg.seed,
            self.cfg.duration,
            self.cfg.every,
            self.cfg.clients,
            self.cfg.s3_clients,
            if self.cfg.jobs {
                " and a jobs client"
            } else {
                ""
            },
            self.ops,
            self.errors,
            self.jobs,
            self.job_errors,
            self.faults.len(),
            self.recovery,
            self.events,
            self.violations.len(),
        );
        let mut kinds: BTreeMap<(FaultKind, String), usize> = BTreeMap::new();
        for (_, f) in &self.faults {
            // Targets by kind: `moray1` and `moray2` are both a Moray.
            let target = f.target.trim_end_matches(|c: char| c.is_ascii_digit());
            *kinds.entry((f.kind, target.to_owned())).or_default() += 1;
        }
        let _ = writeln!(
            s,
            "## Faults by kind and target\n\n| fault | target | times |\n|---|---|---:|"
        );
        for ((kind, target), n) in &kinds {
            let _ = writeln!(s, "| {kind:?} | {target} | {n} |");
        }
        let _ = writeln!(
            s,
            "\n## Availability per minute\n\n| minute | ok | failed | available |\n|---:|---:|---:|---:|"
        );
        for (m, (ok, bad)) in self.per_minute.iter().enumerate() {
            let total = ok + bad;
            let pct = if total == 0 {
                0.0
            } else {
                100.0 * *ok as f64 / total as f64
            };
            let _ = writeln!(s, "| {m} | {ok} | {bad} | {pct:.1}% |");
        }
        let _ = writeln!(s, "\n## Faults\n");
        for (t, f) in &self.faults {
            let _ = writeln!(s, "- {t:>7.1} s: {}", f.what);
        }
        let _ = writeln!(s, "\n## Violations\n");
        if self.violations.is_empty() {
            let _ = writeln!(s, "None.");
        }
        for v in self.violations.iter().take(20) {
            let _ = writeln!(s, "```\n{v}```");
        }
        s
    }
}

/// Runs the load and the faults against `region` as `cfg` says, waits for the region to be
/// healthy again, reads everything back and checks the history.
///
/// # Errors
/// When the region cannot be reached to set up, or does not recover within five minutes.
pub async fn run(region: &AdmRegion, cfg: &RunConfig) -> Result<RunReport, String> {
    let shape = Shape::default();
    let setup = region.client().await.map_err(|e| e.to_string())?;
    shape.prepare(&setup).await.map_err(|e| e.to_string())?;
    let rec = Arc::new(Recorder::default());
    let inputs = prepare_job_inputs(&setup, &shape, &rec)
        .await
        .map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..cfg.clients {
        let c = region.client().await.map_err(|e| e.to_string())?;
        let rng = Rng::new(cfg.seed.wrapping_add(u64::from(i) + 1));
        clients.push(tokio::spawn(client_loop(
            c,
            i,
            shape.clone(),
            rec.clone(),
            rng,
            stop.clone(),
        )));
    }
    let s3 = region.s3();
    if cfg.s3_clients > 0 {
        prepare_bucket(&s3).await?;
    }
    for i in 0..cfg.s3_clients {
        let id = cfg.clients + 1 + i;
        let rng = Rng::new(cfg.seed.wrapping_add(u64::from(id) + 1));
        clients.push(tokio::spawn(s3_loop(
            s3.clone(),
            id,
            rec.clone(),
            rng,
            stop.clone(),
        )));
    }
    let jobs = if cfg.jobs {
        let c = region.client().await.map_err(|e| e.to_string())?;
        Some(tokio::spawn(jobs_loop(
            c,
            cfg.clients,
            inputs,
            rec.clone(),
            stop.clone(),
        )))
    } else {
        None
    };
    // The faults, off the runtime: `manta-adm status` and `kill` are blocking commands.
    let faults = tokio::task::spawn_blocking({
        let (dir, adm, rec, cfg) = (
            region.dir.clone(),
            region.adm.clone(),
            rec.clone(),
            cfg.clone(),
        );
        move || {
            let mut faults = Injector::new(&dir, &adm, cfg.seed);
            let began = Instant::now();
            let mut n = 0;
            while began.elapsed() + cfg.every <= cfg.duration {
                std::thread::sleep(cfg.every);
                let what = if cfg.in_turn && n < Injector::in_turn() {
                    faults.inject_each(rec.now(), n)
                } else {
                    faults.inject(rec.now())
                };
                n += 1;
                if let Some(what) = what {
                    eprintln!("{:>7.1}s  {what}", began.elapsed().as_secs_f64());
                }
            }
            std::thread::sleep(cfg.duration.saturating_sub(began.elapsed()));
            faults.settle();
            faults
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    stop.store(true, Ordering::SeqCst);
    let (mut ops, mut errors) = (0, 0);
    for c in clients {
        let n = c.await.map_err(|e| e.to_string())?;
        ops += n.ops;
        errors += n.errors;
    }
    let (mut jobs_n, mut job_errors) = (0, 0);
    if let Some(j) = jobs {
        let n = j.await.map_err(|e| e.to_string())?;
        jobs_n = n.ops;
        job_errors = n.errors;
    }
    // Every service back (its supervisor restarts it), then the last word on what survived.
    let t = Instant::now();
    let faults = tokio::task::spawn_blocking(move || {
        while !faults.all_healthy() {
            if t.elapsed() > Duration::from_secs(300) {
                return Err("the region did not recover within 5 minutes of the last fault");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(faults)
    })
    .await
    .map_err(|e| e.to_string())??;
    let recovery = t.elapsed();
    let reader = region.client().await.map_err(|e| e.to_string())?;
    final_reads(&reader, Some(&s3), &shape, &rec).await;
    let history = rec.history();
    let violations = check(&history);
    Ok(RunReport {
        cfg: cfg.clone(),
        ops,
        errors,
        jobs: jobs_n,
        job_errors,
        faults: faults
            .log
            .iter()
            .map(|f| (f.at as f64 / 1e6, f.clone()))
            .collect(),
        per_minute: rec.per_minute(),
        events: history.len(),
        recovery,
        violations,
    })
}
