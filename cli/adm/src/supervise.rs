//! Keeping services running: each service gets a keeper thread that starts it, waits for it,
//! and when it exits notes why and starts it again after a backoff (1 s, doubling up to 30 s,
//! back to 1 s once it has run for a minute). `manta-adm host run` keeps every service of a
//! host this way in one process; the one-machine region runs one small `manta-adm supervise`
//! process per service, so each can be stopped on its own.
//!
//! The service is started from the keeper thread with a parent-death signal, so a supervisor
//! that is killed takes its services with it instead of leaving them unmanaged. Its output
//! goes to `<dir>/<name>.log` (0600), its pid to `<dir>/pid` while it runs, and every exit to
//! `<dir>/exits` (`<unix ms> <status>` per line), which `up` reads to tell that a service it
//! is waiting for failed.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use manta_util::proc::{alive, signal};
use rustix::process::Signal;

/// What a keeper runs: a service's name, command line and user.
#[derive(Debug, Clone)]
pub struct Program {
    /// The service's name.
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<std::ffi::OsString>,
    /// The user it is started as, when not the supervisor's.
    pub exec_as: Option<String>,
}

impl From<&crate::layout::Service> for Program {
    fn from(s: &crate::layout::Service) -> Program {
        Program {
            name: s.name.clone(),
            argv: s.argv.clone(),
            exec_as: s.exec_as.clone(),
        }
    }
}

/// The first wait before starting a service that exited again.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long resets the backoff.
const STEADY: Duration = Duration::from_secs(60);
/// How long a service may take to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// The state a keeper shares with whoever stops it.
#[derive(Debug, Default)]
struct Shared {
    stopping: AtomicBool,
    pid: Mutex<Option<u32>>,
    wake: Condvar,
}

/// A service being kept running.
#[derive(Debug)]
pub struct Kept {
    name: String,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Its log file.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// Opens (creates) `path` for appending, private to its owner (logs hold request data).
fn open_log(path: &Path) -> Result<fs::File> {
    let f = fs::File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Exits of the service in `dir` since `since_ms` (unix ms): their statuses.
pub fn exits_since(dir: &Path, since_ms: u64) -> Vec<String> {
    fs::read_to_string(dir.join("exits"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (at, status) = l.split_once(' ')?;
            (at.parse::<u64>().ok()? >= since_ms).then(|| status.to_owned())
        })
        .collect()
}

impl Kept {
    /// Starts keeping `svc` running, with its files in `dir` (made if missing).
    ///
    /// # Errors
    /// When `dir` or the log cannot be made.
    pub fn start(svc: &Program, dir: &Path) -> Result<Kept> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let log = log_path(dir, &svc.name);
        open_log(&log)?;
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name(format!("keep-{}", svc.name))
            .spawn({
                let (svc, dir, shared) = (svc.clone(), dir.to_path_buf(), shared.clone());
                move || keep(&svc, &dir, &log, &shared)
            })
            .context("start a keeper thread")?;
        Ok(Kept {
            name: svc.name.clone(),
            shared,
            thread: Some(thread),
        })
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The running process's pid, if it runs now.
    pub fn pid(&self) -> Option<u32> {
        *self.shared.pid.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops keeping it: SIGTERM, then SIGKILL after `grace`; returns once it is gone.
    pub fn stop(mut self, grace: Duration) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        let pid = self.pid();
        if let Some(pid) = pid {
            let _ = signal(pid, Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        while pid.is_some_and(alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(pid) = self.pid().filter(|p| alive(*p)) {
            let _ = signal(pid, Signal::KILL);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn note(log: &Path, line: &str) {
    if let Ok(mut f) = open_log(log) {
        let _ = writeln!(f, "manta-adm supervise: {line}");
    }
}

/// The keeper's loop (its own thread: the service's parent-death signal follows it).
fn keep(svc: &Program, dir: &Path, log: &Path, shared: &Shared) {
    let mut backoff = FIRST_BACKOFF;
    let pid_file = dir.join("pid");
    while !shared.stopping.load(Ordering::SeqCst) {
        let started = Instant::now();
        let status = match run_once(svc, dir, log, shared, &pid_file) {
            Ok(status) => status,
            Err(e) => format!("could not be started: {e:#}"),
        };
        let _ = fs::remove_file(&pid_file);
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        if started.elapsed() >= STEADY {
            backoff = FIRST_BACKOFF;
        }
        let now = manta_types::time::now_ms();
        if let Ok(mut f) = fs::File::options()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("exits"))
        {
            let _ = writeln!(f, "{now} {status}");
        }
        note(
            log,
            &format!(
                "{} {status} after {:.1?}; starting it again in {backoff:?}",
                svc.name,
                started.elapsed()
            ),
        );
        let guard = shared.pid.lock().unwrap_or_else(|p| p.into_inner());
        let _ = shared
            .wake
            .wait_timeout_while(guard, backoff, |_| !shared.stopping.load(Ordering::SeqCst));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Starts the service once and waits for it; gives how it ended.
fn run_once(
    svc: &Program,
    dir: &Path,
    log: &Path,
    shared: &Shared,
    pid_file: &Path,
) -> Result<String> {
    let out = open_log(log)?;
    let mut cmd = manta_util::proc::command(
        &svc.argv[0],
        svc.exec_as.as_deref(),
        manta_util::proc::Lifetime::DiesWithParent,
    );
    cmd.args(&svc.argv[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {:?}", svc.argv[0]))?;
    let pid = child.id();
    *shared.pid.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid);
    fs::write(pid_file, pid.to_string())?;
    // A stop that came between the spawn and the pid being known.
    if shared.stopping.load(Ordering::SeqCst) {
        let _ = signal(pid, Signal::TERM);
    }
    let status = child.wait()?;
    *shared.pid.lock().unwrap_or_else(|p| p.into_inner()) = None;
    Ok(describe(status))
}

/// "exited with status 1", "was killed by SIGKILL".
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => {
            let name = match s {
                1 => "SIGHUP",
                2 => "SIGINT",
                6 => "SIGABRT",
                7 => "SIGBUS",
                9 => "SIGKILL",
                11 => "SIGSEGV",
                15 => "SIGTERM",
                _ => return format!("was killed by signal {s}"),
            };
            format!("was killed by {name}")
        }
        _ => "ended".into(),
    }
}

/// Waits for SIGTERM or SIGINT.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn until_stopped() -> Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Stops `kept` in reverse order (each given [`STOP_GRACE`]), off the async runtime.
pub async fn stop_all(mut kept: Vec<Kept>) {
    let _ = tokio::task::spawn_blocking(move || {
        while let Some(k) = kept.pop() {
            let name = k.name().to_owned();
            k.stop(STOP_GRACE);
            println!("  {name:<16} stopped");
        }
    })
    .await;
}

/// `manta-adm supervise`: keeps one service running until SIGTERM or SIGINT, then stops it.
/// Its own pid is in `<dir>/supervisor.pid` meanwhile.
///
/// # Errors
/// When the service's directory cannot be used.
pub async fn supervise_one(svc: Program, dir: &Path) -> Result<()> {
    let me = dir.join("supervisor.pid");
    fs::write(&me, std::process::id().to_string())?;
    let kept = Kept::start(&svc, dir)?;
    let why = until_stopped().await?;
    note(
        &log_path(dir, &svc.name),
        &format!("{why}: stopping {}", svc.name),
    );
    stop_all(vec![kept]).await;
    let _ = fs::remove_file(&me);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, script: &str) -> Program {
        Program {
            name: name.into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            exec_as: None,
        }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_killed_service_is_started_again_and_its_exit_noted() {
        let dir = tempfile::tempdir().unwrap();
        let since = manta_types::time::now_ms();
        let kept = Kept::start(&svc("sleeper", "echo up; exec sleep 600"), dir.path()).unwrap();
        let log = log_path(dir.path(), "sleeper");
        wait_for("the first start", || {
            fs::read_to_string(&log).is_ok_and(|l| l.contains("up\n"))
        });
        let first = kept.pid().unwrap();
        signal(first, Signal::KILL).unwrap();
        wait_for("a restart", || kept.pid().is_some_and(|p| p != first));
        let exits = exits_since(dir.path(), since);
        assert_eq!(exits, ["was killed by SIGKILL"]);
        let second = kept.pid().unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("pid")).unwrap(),
            second.to_string()
        );
        // The new process has said it is up (on a loaded machine that can come after its pid).
        wait_for("the second start", || {
            fs::read_to_string(&log).is_ok_and(|l| l.matches("up\n").count() == 2)
        });
        kept.stop(Duration::from_secs(5));
        assert!(!alive(second));
        assert!(!dir.path().join("pid").exists());
        let log = fs::read_to_string(&log).unwrap();
        assert_eq!(log.matches("up\n").count(), 2, "{log}");
        assert!(log.contains("starting it again in 1s"), "{log}");
    }

    #[test]
    fn stopping_a_service_in_its_backoff_returns_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Kept::start(&svc("failing", "exit 3"), dir.path()).unwrap();
        wait_for("a failed start", || !exits_since(dir.path(), 0).is_empty());
        let t = Instant::now();
        kept.stop(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(exits_since(dir.path(), 0)[0], "exited with status 3");
    }
}
