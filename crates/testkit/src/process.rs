//! Child processes for tests: spawned with their output in a log file, killed with their parent,
//! and reported (log tail) when the test that owns them fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use anyhow::{Context, Result};

pub use manta_util::proc::{PG_USER, is_root};

/// A free TCP port on 127.0.0.1 at the time of the call. Another process may take it before it
/// is used; callers retry on "address in use".
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> Result<u16> {
    manta_util::unused_port().context("find a free port")
}

/// Panics with the exit status, stdout and stderr unless `out`, the output of `what`,
/// is a success; returns `out`. For tests that run a command that must work.
pub fn assert_success(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` to its end and panics (as [`assert_success`]) unless it succeeds; returns its
/// output. For tests.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert_success(&format!("{cmd:?}"), out)
}

/// Gives a path (recursively) to `user`, so a process running as that user can use it.
///
/// # Errors
/// When the user does not exist or `chown` fails.
pub fn chown_to(path: &Path, user: &str) -> Result<()> {
    manta_util::proc::chown_tree(path, user)
        .with_context(|| format!("chown {} to {user}", path.display()))
}

/// A command that dies with the test (see [`manta_util::proc::Lifetime::DiesWithParent`]) and,
/// when `as_user` is given and we are root, runs as that user.
pub fn guarded_command(program: impl AsRef<std::ffi::OsStr>, as_user: Option<&str>) -> Command {
    manta_util::proc::command(program, as_user, manta_util::proc::Lifetime::DiesWithParent)
}

/// A running child process whose output goes to a log file. Killed (SIGKILL) on drop; when the
/// drop happens during a panic, the tail of its log is printed so a failing test shows why.
#[derive(Debug)]
pub struct LoggedChild {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl LoggedChild {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// When the log cannot be created or the program cannot be started.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<LoggedChild> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .context("open log")?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        Ok(LoggedChild {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }

    /// If the process has exited, its status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal without reaping (e.g. SIGTERM for a graceful stop, SIGSTOP to freeze).
    ///
    /// # Errors
    /// When the signal cannot be delivered.
    pub fn signal(&self, sig: rustix::process::Signal) -> Result<()> {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).context("no pid")?;
        rustix::process::kill_process(pid, sig).context("kill")?;
        Ok(())
    }

    /// Waits for the process to exit (after a signal), up to `timeout`; kills it after that.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(st) = self.exited() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.kill();
        None
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- last lines of {} log ({}) -----\n{}\n----- end of {} log -----",
                self.name,
                self.log.display(),
                self.log_tail(40),
                self.name
            );
        }
        self.kill();
    }
}

/// The last `n` lines of a file (empty when it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A temp dir for one test's servers. Removed on drop unless `MANTA_TEST_KEEP=1`, or the test
/// is panicking and `MANTA_TEST_KEEP_FAILED=1`, so logs can be inspected.
#[derive(Debug)]
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    /// A new dir named after `purpose` under the system temp dir.
    ///
    /// # Errors
    /// When the dir cannot be created.
    pub fn new(purpose: &str) -> Result<TestDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("manta-test-{purpose}-"))
            .tempdir()
            .context("create a temp dir")?;
        Ok(TestDir { dir: Some(dir) })
    }

    /// The dir's path.
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .expect("the dir lives until drop")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let keep = std::env::var("MANTA_TEST_KEEP").is_ok_and(|v| v == "1")
            || (std::thread::panicking()
                && std::env::var("MANTA_TEST_KEEP_FAILED").is_ok_and(|v| v == "1"));
        if let Some(d) = self.dir.take()
            && keep
        {
            eprintln!("keeping test dir {}", d.keep().display());
        }
    }
}
