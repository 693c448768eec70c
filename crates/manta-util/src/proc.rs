//! Child processes run by services and operators: as an unprivileged user when we are root
//! (Postgres refuses root), and optionally bound to the parent's life.

use std::io;
use std::path::Path;
use std::process::Command;

/// The OS user that runs Postgres when the caller is root.
pub const PG_USER: &str = "postgres";

/// The system user that a region's services which need no root run as, when `manta-adm` runs
/// as root (made by `manta-adm up` when the host has none).
pub const SERVICE_USER: &str = "manta";

/// True when this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Looks up the uid and gid of a user in `/etc/passwd`.
///
/// # Errors
/// `NotFound` when the user does not exist.
pub fn user_ids(name: &str) -> io::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == name {
            let uid = f[2].parse().map_err(io::Error::other)?;
            let gid = f[3].parse().map_err(io::Error::other)?;
            return Ok((uid, gid));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("user {name:?} does not exist"),
    ))
}

/// The name of the user with uid `uid` in `/etc/passwd` (the number itself when it has none).
pub fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[2].parse() == Ok(uid))
        .map_or_else(|| uid.to_string(), |f| f[0].to_owned())
}

/// The user a running process runs as (its real uid's name), if it exists.
pub fn user_of(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(user_name(uid))
}

/// Makes `name` a system user (its own group, no home, no login shell) unless it exists.
///
/// # Errors
/// When `useradd` cannot be run or fails and the user still does not exist.
pub fn ensure_system_user(name: &str) -> io::Result<()> {
    if user_ids(name).is_ok() {
        return Ok(());
    }
    let out = Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home"])
        .args(["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"])
        .args(["--comment", "object store services"])
        .arg(name)
        .output()
        .map_err(|e| io::Error::other(format!("run useradd (package passwd): {e}")))?;
    // Another `up` may have made it meanwhile.
    if out.status.success() || user_ids(name).is_ok() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "useradd {name} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Gives `path` and everything below it to `user`.
///
/// # Errors
/// When the user does not exist or `chown` fails.
pub fn chown_tree(path: &Path, user: &str) -> io::Result<()> {
    let (uid, gid) = user_ids(user)?;
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "chown -R {uid}:{gid} {} failed",
            path.display()
        )))
    }
}

/// How a child relates to its parent's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// SIGKILL the child when the spawning thread exits (`setpriv --pdeathsig`). Spawn from a
    /// thread that lives as long as the child should, never from `spawn_blocking`.
    DiesWithParent,
    /// The child outlives the parent (daemons started by `manta-adm up`).
    Detached,
}

/// A command for `program` that runs as `as_user` when we are root (through `setpriv`, which
/// `exec`s, so the child's pid is the program's pid) with the given lifetime. `as_user` is a
/// user name (run with that user's groups), or a bare uid such as the host uid a container's
/// root maps to (run as that uid and gid, with no supplementary groups).
pub fn command(
    program: impl AsRef<std::ffi::OsStr>,
    as_user: Option<&str>,
    life: Lifetime,
) -> Command {
    let drop_user = as_user.filter(|_| is_root());
    if drop_user.is_none() && life == Lifetime::Detached {
        return Command::new(program);
    }
    let mut cmd = Command::new("setpriv");
    if life == Lifetime::DiesWithParent {
        cmd.arg("--pdeathsig").arg("KILL");
    }
    if let Some(user) = drop_user {
        let groups = if is_bare_uid(user) {
            "--clear-groups"
        } else {
            "--init-groups"
        };
        cmd.args(["--reuid", user, "--regid", user, groups]);
    }
    cmd.arg("--").arg(program);
    cmd
}

/// True for a user given as a number rather than a name.
fn is_bare_uid(user: &str) -> bool {
    user.parse::<u32>().is_ok()
}

/// True when a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state is the field after the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Sends `sig` to `pid`.
///
/// # Errors
/// When the process does not exist or may not be signalled.
pub fn signal(pid: u32, sig: rustix::process::Signal) -> io::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
    rustix::process::kill_process(pid, sig).map_err(io::Error::from)
}

/// Checks that `user` (a name, or a bare uid with no groups, such as the host uid a container's
/// root maps to) can reach `dir`: search permission on it and on every directory above it, as
/// the kernel decides (ACLs included), found by running `test -x` as that user. Only meaningful
/// when we are root (only then do children run as another user); otherwise `Ok`.
///
/// # Errors
/// A message naming the first directory on the path that `user` may not search, and what to do
/// about it.
pub fn check_user_reaches(user: &str, dir: &Path) -> Result<(), String> {
    if !is_root() {
        return Ok(());
    }
    let searchable = |p: &Path| -> Result<bool, String> {
        let st = command("test", Some(user), Lifetime::Detached)
            .arg("-x")
            .arg(p)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("run setpriv (util-linux) to check {}: {e}", p.display()))?;
        Ok(st.success())
    };
    if searchable(dir)? {
        return Ok(());
    }
    let who = if is_bare_uid(user) {
        format!("uid {user}")
    } else {
        format!("the {user} user")
    };
    let mut at = std::path::PathBuf::new();
    for part in dir.components() {
        at.push(part);
        if !searchable(&at)? {
            return Err(format!(
                "{who} cannot reach {} (no search permission on {}); keep the data under a \
                 directory it can reach, or grant it search permission there \
                 (setfacl -m u:{user}:x {})",
                dir.display(),
                at.display(),
                at.display()
            ));
        }
    }
    Err(format!("{who} cannot reach {}", dir.display()))
}

/// The directory of the newest installed PostgreSQL's programs (`initdb`, `postgres`,
/// `pg_basebackup`, ...): the highest `/usr/lib/postgresql/<version>/bin` that has them (where
/// Debian puts them), else a directory on `PATH` that has `initdb`.
///
/// # Errors
/// `NotFound`, saying so, when PostgreSQL is not installed.
pub fn pg_bindir() -> io::Result<std::path::PathBuf> {
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        if Path::new(dir).join("initdb").exists() {
            return Ok(std::path::PathBuf::from(dir));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH)",
    ))
}

/// The command-line option of a service that needs root for nothing: the user it becomes once
/// it has read its keys and bound its port (`manta-adm` names the host's `manta` system user
/// when it runs as root).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunAsArgs {
    /// Become this user (its uid and primary group, no supplementary groups) once the keys are
    /// read and the port is bound. Only root can; anyone else naming a user other than
    /// themselves is refused.
    #[arg(long = "user", env = "MANTA_SERVICE_USER", value_name = "USER")]
    pub user: Option<String>,
}

/// Becomes `user` (when given) for good: its uid and primary group, no other group, in every
/// thread of this process (glibc applies the change process-wide), with no way back to root.
/// A no-op when we already are that user. A service calls it once, after everything that needs
/// root (reading root's key files, binding) and before it serves anyone.
///
/// # Errors
/// When the user does not exist, when we are not root and it is not us, or when a step fails
/// (the process must then not go on serving as root).
pub fn run_as(user: Option<&str>) -> io::Result<()> {
    let Some(user) = user else {
        return Ok(());
    };
    use nix::unistd::{Gid, Uid, getuid, setgid, setgroups, setuid};
    let (uid, gid) = user_ids(user)?;
    if getuid().as_raw() == uid && !is_root() {
        return Ok(());
    }
    if !is_root() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("cannot become user {user:?}: only root can change user"),
        ));
    }
    let fail = |what: &str, e: nix::Error| {
        io::Error::other(format!("becoming user {user:?}: {what}: {e}"))
    };
    // Changing credentials clears the parent-death signal a supervisor asked for (so that a
    // killed supervisor takes its services along): keep it across the change.
    let death = rustix::process::parent_process_death_signal().unwrap_or(None);
    let parent = rustix::process::getppid();
    setgroups(&[]).map_err(|e| fail("setgroups", e))?;
    setgid(Gid::from_raw(gid)).map_err(|e| fail("setgid", e))?;
    setuid(Uid::from_raw(uid)).map_err(|e| fail("setuid", e))?;
    if let Some(sig) = death {
        rustix::process::set_parent_process_death_signal(Some(sig))
            .map_err(|e| io::Error::other(format!("keep the parent-death signal: {e}")))?;
        // The parent may have gone while the signal was unset: then it is due now.
        if rustix::process::getppid() != parent {
            let _ = rustix::process::kill_process(rustix::process::getpid(), sig);
        }
    }
    // Prove there is no way back.
    if uid != 0 && setuid(Uid::from_raw(0)).is_ok() {
        return Err(io::Error::other(format!(
            "becoming user {user:?}: root could be regained"
        )));
    }
    Ok(())
}
