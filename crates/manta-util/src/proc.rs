//! Child processes run by services and operators: as an unprivileged user when we are root
//! (Postgres refuses root), and optionally bound to the parent's life.

use std::io;
use std::path::Path;
use std::process::Command;

/// The OS user that runs Postgres when the caller is root.
pub const PG_USER: &str = "postgres";

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
/// `exec`s, so the child's pid is the program's pid) with the given lifetime.
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
        cmd.args(["--reuid", user, "--regid", user, "--init-groups"]);
    }
    cmd.arg("--").arg(program);
    cmd
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
