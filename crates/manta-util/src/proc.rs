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
