//! Faults for a one-machine region brought up by `manta-adm up`, chosen by a seeded random
//! source (or taken in turn) so a run can be replayed:
//!
//! - `kill -9` of one service (its supervisor starts it again) or of a Manatee peer's Postgres
//!   (its sitter, or a failover, takes over);
//! - a byte flipped in a stored copy;
//! - the storage node on a small disk ([`SMALL_DISK_NODE`]) filled up;
//! - the shard's synchronous standby held down (its Postgres stopped) and, halfway, the
//!   primary's Postgres killed: no write may be acknowledged that only the primary had;
//! - one service partitioned: every packet to or from its ports dropped (nftables, on loopback);
//! - one service's clock moved by minutes (restarted under libfaketime).
//!
//! A fault that lasts (a full disk, a held standby, a partition, a moved clock) holds until the
//! next one is injected, or [`Injector::settle`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::workload::Rng;

/// The storage node whose data a fault run keeps on a small filesystem of its own, so that it
/// can be filled.
pub const SMALL_DISK_NODE: &str = "storage3";

/// libfaketime, which moves a process's wall clock (Debian package `faketime`, in
/// `/usr/lib/<multiarch triple>/faketime`).
pub fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
}

/// What a fault is, for the report's tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// `kill -9` of a service or a Postgres.
    Kill,
    /// A byte flipped in a stored copy.
    Flip,
    /// A storage node's disk filled.
    DiskFull,
    /// The synchronous standby held down, the primary killed meanwhile.
    SyncHeld,
    /// A service cut off the network.
    Partition,
    /// A service's clock moved.
    Clock,
}

/// One fault injected.
#[derive(Debug, Clone)]
pub struct Fault {
    /// When, as the caller counts.
    pub at: u64,
    /// What kind.
    pub kind: FaultKind,
    /// Its target, as `manta-adm status` names it (`postgres:manatee1` for a peer's Postgres).
    pub target: String,
    /// What was done, in words.
    pub what: String,
}

/// A fault still in force.
#[derive(Debug)]
enum Hold {
    /// A file filling a disk.
    Filler(PathBuf),
    /// Stopped processes.
    Stopped(Vec<u32>),
    /// An nftables table dropping a service's packets.
    Firewall(String),
    /// A service restarted with a moved clock: its directory.
    Clock(PathBuf),
}

/// Injects faults into the region in `region`.
#[derive(Debug)]
pub struct Injector {
    region: PathBuf,
    adm: PathBuf,
    rng: Rng,
    held: Option<Hold>,
    /// Supervisors this injector started (a service with a moved clock, and its return).
    children: Vec<Child>,
    /// Every fault injected.
    pub log: Vec<Fault>,
}

/// The faults taken in turn by [`Injector::inject_each`].
const IN_TURN: &[(FaultKind, &str)] = &[
    (FaultKind::Kill, "frontdoor"),
    (FaultKind::Kill, "moray1"),
    (FaultKind::Kill, "postgres:primary"),
    (FaultKind::Kill, "storage1"),
    (FaultKind::Kill, "manatee:sync"),
    (FaultKind::Kill, "etcd"),
    (FaultKind::Kill, "jobs-supervisor"),
    (FaultKind::Kill, "jobs-agent2"),
    (FaultKind::Kill, "moray2"),
    (FaultKind::Flip, ""),
    (FaultKind::DiskFull, SMALL_DISK_NODE),
    (FaultKind::SyncHeld, ""),
    (FaultKind::Partition, "moray1"),
    (FaultKind::Partition, "storage2"),
    (FaultKind::Partition, "manatee:primary"),
    (FaultKind::Clock, "storage1"),
    (FaultKind::Clock, "frontdoor"),
];

impl Injector {
    /// Faults for the region in `region`, driven by `manta-adm` at `adm`, seeded with `seed`.
    pub fn new(region: &Path, adm: &Path, seed: u64) -> Injector {
        Injector {
            region: region.to_path_buf(),
            adm: adm.to_path_buf(),
            rng: Rng::new(seed),
            held: None,
            children: Vec::new(),
            log: Vec::new(),
        }
    }

    fn status(&self) -> Option<serde_json::Value> {
        let out = Command::new(&self.adm)
            .args(["status", "--json", "--dir"])
            .arg(&self.region)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Each running service, its pid and the ports it listens on, from `manta-adm status`.
    pub fn services(&self) -> Vec<(String, u32, Vec<u16>)> {
        let Some(v) = self.status() else {
            return Vec::new();
        };
        v["services"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        let pid = u32::try_from(s["pid"].as_u64()?).ok()?;
                        let ports = ports_in(s["endpoint"].as_str().unwrap_or(""));
                        Some((s["service"].as_str()?.to_owned(), pid, ports))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether every service answers healthy.
    pub fn all_healthy(&self) -> bool {
        self.status().is_some_and(|v| {
            v["services"]
                .as_array()
                .is_some_and(|a| a.iter().all(|s| s["state"] == "healthy"))
        })
    }

    /// The postmaster pid of Manatee peer `peer` (`manatee1`...).
    fn postmaster(&self, peer: &str) -> Option<u32> {
        let dir = self.region.join(peer);
        [dir.join("data/pgdata"), dir.join("pgdata")]
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join("postmaster.pid")).ok())
            .and_then(|s| s.lines().next()?.trim().parse().ok())
    }

    /// The peer (`manatee1`...) holding `role` (`primary`, `sync`) in the shard, as
    /// `manta-adm status` shows it.
    fn peer_in_role(&self, role: &str) -> Option<String> {
        let v = self.status()?;
        let table = v["shard"].as_str()?;
        let pid: u32 = table
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|r| r.starts_with(role))
            })?
            .split_whitespace()
            .nth(2)?
            .parse()
            .ok()?;
        ["manatee1", "manatee2", "manatee3"]
            .into_iter()
            .find(|p| self.postmaster(p) == Some(pid))
            .map(str::to_owned)
    }

    /// Names `manatee:primary`, `postgres:sync`... after the peers that hold those roles now.
    fn resolve(&self, target: &str) -> Option<String> {
        match target.split_once(':') {
            Some((what, role @ ("primary" | "sync" | "async"))) => {
                let peer = self.peer_in_role(role)?;
                Some(if what == "manatee" {
                    peer
                } else {
                    format!("{what}:{peer}")
                })
            }
            _ => Some(target.to_owned()),
        }
    }

    fn record(&mut self, at: u64, kind: FaultKind, target: &str, what: String) -> Option<String> {
        self.log.push(Fault {
            at,
            kind,
            target: target.to_owned(),
            what: what.clone(),
        });
        Some(what)
    }

    /// One fault, chosen at random: most often a kill, sometimes one of the others. Ends the
    /// fault in force first.
    pub fn inject(&mut self, at: u64) -> Option<String> {
        self.settle();
        let kind = match self.rng.below(12) {
            0 => FaultKind::Flip,
            1 => FaultKind::DiskFull,
            2 => FaultKind::SyncHeld,
            3 | 4 => FaultKind::Partition,
            5 => FaultKind::Clock,
            _ => FaultKind::Kill,
        };
        let target = match kind {
            FaultKind::Kill | FaultKind::Partition => {
                let mut names: Vec<String> =
                    self.services().into_iter().map(|(n, _, _)| n).collect();
                if kind == FaultKind::Kill {
                    names.extend(["primary", "sync", "async"].map(|r| format!("postgres:{r}")));
                }
                if names.is_empty() {
                    return None;
                }
                names.swap_remove(self.rng.below(names.len() as u64) as usize)
            }
            FaultKind::Clock => {
                let mut names: Vec<String> = self
                    .services()
                    .into_iter()
                    .map(|(n, _, _)| n)
                    // etcd keeps Go's own clock, out of libfaketime's reach.
                    .filter(|n| n != "etcd")
                    .collect();
                if names.is_empty() {
                    return None;
                }
                names.swap_remove(self.rng.below(names.len() as u64) as usize)
            }
            _ => String::new(),
        };
        self.inject_one(at, kind, &target)
    }

    /// Fault number `i` of a fixed list that takes each kind, and each kind of target, in
    /// turn; `None` once the list is done.
    pub fn inject_each(&mut self, at: u64, i: usize) -> Option<String> {
        let (kind, target) = IN_TURN.get(i)?;
        self.settle();
        self.inject_one(at, *kind, target)
            .or_else(|| Some(format!("{kind:?} {target}: nothing to do")))
    }

    /// How many faults [`Injector::inject_each`] takes in turn.
    pub fn in_turn() -> usize {
        IN_TURN.len()
    }

    fn inject_one(&mut self, at: u64, kind: FaultKind, target: &str) -> Option<String> {
        match kind {
            FaultKind::Kill => {
                let target = self.resolve(target)?;
                self.kill(at, &target)
            }
            FaultKind::Flip => self.flip_one(at),
            FaultKind::DiskFull => self.fill_disk(at, SMALL_DISK_NODE),
            FaultKind::SyncHeld => self.hold_sync(at),
            FaultKind::Partition => {
                let target = self.resolve(target)?;
                self.partition(at, &target)
            }
            FaultKind::Clock => {
                let minutes: i64 = if self.rng.below(2) == 0 { 7 } else { -7 };
                self.move_clock(at, target, minutes)
            }
        }
    }

    /// Ends the fault in force, if any: the disk emptied, the standby resumed, the partition
    /// healed, the clock set right.
    pub fn settle(&mut self) {
        match self.held.take() {
            None => {}
            Some(Hold::Filler(f)) => {
                let _ = std::fs::remove_file(f);
            }
            Some(Hold::Stopped(pids)) => signal("CONT", &pids),
            Some(Hold::Firewall(table)) => {
                let _ = Command::new("nft")
                    .args(["delete", "table", "inet", &table])
                    .status();
            }
            Some(Hold::Clock(sdir)) => {
                let _ = self.restart_supervisor(&sdir, None);
            }
        }
        // Reap the supervisors that have exited.
        self.children
            .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    }

    /// Flips one byte in the middle of one stored copy on a random storage node (what a bad
    /// disk does): the front door must never serve those bytes, and the object must stay
    /// readable from its other copy. `None` when no copy is stored yet.
    pub fn flip_one(&mut self, at: u64) -> Option<String> {
        let node = format!("storage{}", self.rng.below(3) + 1);
        let objects = dataset_of(&self.region, &node)?.join("objects");
        let mut files = Vec::new();
        walk(&objects, &mut files);
        files.retain(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0));
        if files.is_empty() {
            return None;
        }
        files.sort();
        let file = files.swap_remove(self.rng.below(files.len() as u64) as usize);
        let mut bytes = std::fs::read(&file).ok()?;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        // In place, as the disk would: same inode, same owner.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .ok()?;
        let what = format!("flip a byte of a copy on {node} ({})", file.display());
        self.record(at, FaultKind::Flip, &node, what)
    }

    /// Fills `node`'s disk (the small filesystem [`keep_on_small_disk`] gave it) to the last
    /// byte, until the next fault: puts that pick it must go elsewhere or fail cleanly, and
    /// what it holds must stay readable.
    pub fn fill_disk(&mut self, at: u64, node: &str) -> Option<String> {
        let filler = dataset_of(&self.region, node)?.join("fault-filler");
        let mut f = std::fs::File::create(&filler).ok()?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match std::io::Write::write(&mut f, &chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(_) => break,
            }
        }
        self.held = Some(Hold::Filler(filler));
        let what = format!("fill the disk of {node} ({} MiB more)", written >> 20);
        self.record(at, FaultKind::DiskFull, node, what)
    }

    /// Stops every process of the synchronous standby's Postgres, waits a few seconds (writes
    /// must wait for it, or for the shard to name another standby), then kills the primary's
    /// Postgres; the standby resumes with the next fault. A write that only the primary had
    /// must never have been acknowledged.
    pub fn hold_sync(&mut self, at: u64) -> Option<String> {
        let sync = self.peer_in_role("sync")?;
        let primary = self.peer_in_role("primary")?;
        // Mid-takeover the table can name one peer twice: no fault then.
        if sync == primary {
            return None;
        }
        let postmaster = self.postmaster(&sync)?;
        let mut pids = children(postmaster);
        pids.push(postmaster);
        signal("STOP", &pids);
        self.held = Some(Hold::Stopped(pids));
        std::thread::sleep(Duration::from_secs(3));
        let killed = self.postmaster(&primary).is_some_and(|pid| {
            signal("KILL", &[pid]);
            true
        });
        let what = format!(
            "hold the sync standby's Postgres ({sync}) down, and after 3 s {} the primary's \
             ({primary})",
            if killed { "kill -9" } else { "(gone already)" }
        );
        self.record(at, FaultKind::SyncHeld, &format!("postgres:{sync}"), what)
    }

    /// Cuts `target` off: every TCP packet to or from its ports is dropped, connections made
    /// already included, until the next fault.
    pub fn partition(&mut self, at: u64, target: &str) -> Option<String> {
        let ports = self
            .services()
            .into_iter()
            .find(|(n, _, _)| n == target)
            .map(|(_, _, p)| p)
            .filter(|p| !p.is_empty())?;
        let table = format!("manta_fault_{}", std::process::id());
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let rules = format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    \
             tcp dport {{ {list} }} drop\n    tcp sport {{ {list} }} drop\n  }}\n}}\n"
        );
        let mut nft = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .ok()?;
        std::io::Write::write_all(nft.stdin.as_mut()?, rules.as_bytes()).ok()?;
        drop(nft.stdin.take());
        if !nft.wait().is_ok_and(|s| s.success()) {
            return None;
        }
        self.held = Some(Hold::Firewall(table));
        let what = format!("partition {target} (drop every packet of ports {list})");
        self.record(at, FaultKind::Partition, target, what)
    }

    /// Restarts `target`'s supervisor, and so the service, with its wall clock `minutes` off,
    /// until the next fault.
    pub fn move_clock(&mut self, at: u64, target: &str, minutes: i64) -> Option<String> {
        let sdir = self.region.join(target);
        let clock = (libfaketime()?, format!("{minutes:+}m"));
        self.restart_supervisor(&sdir, Some(clock))?;
        self.held = Some(Hold::Clock(sdir));
        let what = format!("move the clock of {target} by {minutes:+} minutes (libfaketime)");
        self.record(at, FaultKind::Clock, target, what)
    }

    /// Stops the supervisor in `sdir` and starts it again as it was (same command, same
    /// environment, same log), with the wall clock moved when `clock` (libfaketime and the
    /// offset) is given.
    fn restart_supervisor(&mut self, sdir: &Path, clock: Option<(PathBuf, String)>) -> Option<()> {
        let pid = supervisor_pid(sdir).ok()?;
        let argv = nul_split(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?);
        let env = nul_split(&std::fs::read(format!("/proc/{pid}/environ")).ok()?);
        let (program, args) = argv.split_first()?;
        let name = args
            .windows(2)
            .find(|w| w[0] == "--name")
            .map(|w| w[1].clone())?;
        // Started again even when it is slow to go: the next fault's settle stops it again.
        let children = &mut self.children;
        stop_and_wait(pid, || {
            children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        });
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(sdir.join(format!("{name}.log")))
            .ok()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .current_dir(sdir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().ok()?)
            .stderr(log);
        for kv in &env {
            if let Some((k, v)) = kv.split_once('=')
                && !matches!(k, "LD_PRELOAD" | "FAKETIME" | "DONT_FAKE_MONOTONIC")
            {
                cmd.env(k, v);
            }
        }
        if let Some((lib, offset)) = clock {
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME", offset)
                // Timers and timeouts keep the real pace; only the wall clock is off.
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        self.children.push(cmd.spawn().ok()?);
        Some(())
    }

    /// Kills `target` (a service, or `postgres:<peer>`) with SIGKILL.
    fn kill(&mut self, at: u64, target: &str) -> Option<String> {
        let pid = match target.strip_prefix("postgres:") {
            Some(peer) => self.postmaster(peer),
            None => self
                .services()
                .into_iter()
                .find(|(n, _, _)| n == target)
                .map(|(_, pid, _)| pid),
        }?;
        let killed = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let what = format!(
            "kill -9 {target} (pid {pid}){}",
            if killed { "" } else { ": gone already" }
        );
        self.record(at, FaultKind::Kill, target, what)
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.settle();
    }
}

/// Moves `node`'s data to a filesystem of its own of `mib` MiB (a tmpfs), so that a fault can
/// fill it without filling the machine's disk: stops the node and moves its data there; the
/// caller starts it again (`manta-adm up`). Gives the mount point, to unmount once the region
/// is down.
///
/// # Errors
/// What failed, in words.
pub fn keep_on_small_disk(region: &Path, node: &str, mib: u64) -> Result<PathBuf, String> {
    let dataset = dataset_of(region, node)
        .ok_or_else(|| format!("no dataset for {node} in {}", region.display()))?;
    let pid =
        supervisor_pid(&region.join(node)).map_err(|e| format!("{node}'s supervisor: {e}"))?;
    if !stop_and_wait(pid, || {}) {
        return Err(format!("{node} did not stop"));
    }
    let old = dataset.with_extension("before-small-disk");
    let meta = std::fs::metadata(&dataset).map_err(|e| e.to_string())?;
    std::fs::rename(&dataset, &old).map_err(|e| e.to_string())?;
    std::fs::create_dir(&dataset).map_err(|e| e.to_string())?;
    use std::os::unix::fs::MetadataExt as _;
    let opts = format!(
        "size={mib}m,mode=0700,uid={},gid={}",
        meta.uid(),
        meta.gid()
    );
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", &opts, "manta-fault-disk"])
        .arg(&dataset))?;
    let mut copy = Command::new("cp");
    copy.arg("-a").arg(old.join(".")).arg(&dataset);
    run(&mut copy)?;
    std::fs::remove_dir_all(&old).map_err(|e| e.to_string())?;
    Ok(dataset)
}

/// Storage node `node`'s dataset directory in `region`: `data` itself, or `data/data` when the
/// region keeps its data elsewhere.
fn dataset_of(region: &Path, node: &str) -> Option<PathBuf> {
    let root = region.join(node).join("data");
    [root.join("data"), root]
        .into_iter()
        .find(|p| p.join("objects").is_dir())
}

/// The pid of the `manta-adm supervise` keeping the service in `sdir`.
fn supervisor_pid(sdir: &Path) -> Result<u32, String> {
    std::fs::read_to_string(sdir.join("supervisor.pid"))
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))
}

/// Sends SIGTERM to `pid` and waits up to 30 s for it to be gone, calling `meanwhile` as it
/// waits; whether it went.
fn stop_and_wait(pid: u32, mut meanwhile: impl FnMut()) -> bool {
    signal("TERM", &[pid]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            return false;
        }
        meanwhile();
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Every port number in a `manta-adm status` endpoint (`https://127.0.0.1:123`, `postgres
/// 127.0.0.1:5432, sitter https://127.0.0.1:456`).
fn ports_in(endpoint: &str) -> Vec<u16> {
    endpoint
        .split(':')
        .skip(1)
        .filter_map(|s| {
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

fn nul_split(b: &[u8]) -> Vec<String> {
    b.split(|c| *c == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Sends `SIG<sig>` to `pids`.
fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Every file under `dir`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_of_an_endpoint_is_found() {
        assert_eq!(ports_in("https://127.0.0.1:30822"), [30822]);
        assert_eq!(
            ports_in("postgres 127.0.0.1:21418, sitter https://127.0.0.1:12074"),
            [21418, 12074]
        );
        assert_eq!(
            ports_in("http://127.0.0.1:10492 (S3: http://127.0.0.1:19661)"),
            [10492, 19661]
        );
        assert_eq!(ports_in("-"), Vec::<u16>::new());
    }
}
