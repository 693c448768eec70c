//! Faults for a one-machine region brought up by `manta-adm up`: `kill -9` of one service
//! (its supervisor starts it again) or of a Manatee peer's Postgres (its sitter, or a
//! failover, takes over), or a byte flipped in a stored copy, chosen by a seeded random source
//! so a run can be replayed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workload::Rng;

/// What can be killed, as `manta-adm status` names services, plus `postgres:<peer>` for a
/// Manatee peer's postmaster.
#[derive(Debug)]
pub struct Injector {
    region: PathBuf,
    adm: PathBuf,
    rng: Rng,
    /// Every fault injected: when (as the caller counts) and what.
    pub log: Vec<(u64, String)>,
}

impl Injector {
    /// Faults for the region in `region`, driven by `manta-adm` at `adm`, seeded with `seed`.
    pub fn new(region: &Path, adm: &Path, seed: u64) -> Injector {
        Injector {
            region: region.to_path_buf(),
            adm: adm.to_path_buf(),
            rng: Rng::new(seed),
            log: Vec::new(),
        }
    }

    /// Each running service and its pid, from `manta-adm status --json`.
    pub fn services(&self) -> Vec<(String, u32)> {
        let Ok(out) = Command::new(&self.adm)
            .args(["status", "--json", "--dir"])
            .arg(&self.region)
            .output()
        else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return Vec::new();
        };
        v["services"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        let pid = u32::try_from(s["pid"].as_u64()?).ok()?;
                        Some((s["service"].as_str()?.to_owned(), pid))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether every service answers healthy.
    pub fn all_healthy(&self) -> bool {
        let Ok(out) = Command::new(&self.adm)
            .args(["status", "--json", "--dir"])
            .arg(&self.region)
            .output()
        else {
            return false;
        };
        serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| {
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

    /// One fault, chosen at random: most often a kill ([`Injector::kill_one`]), sometimes a
    /// byte flipped in a stored copy ([`Injector::flip_one`]).
    pub fn inject(&mut self, at: u64) -> Option<String> {
        if self.rng.below(5) == 0
            && let Some(what) = self.flip_one(at)
        {
            return Some(what);
        }
        self.kill_one(at)
    }

    /// Flips one byte in the middle of one stored copy on a random storage node (what a bad
    /// disk does): the front door must never serve those bytes, and the object must stay
    /// readable from its other copy. `None` when no copy is stored yet.
    pub fn flip_one(&mut self, at: u64) -> Option<String> {
        let node = format!("storage{}", self.rng.below(3) + 1);
        let root = self.region.join(&node).join("data");
        // The dataset is `data` itself, or `data/data` when the region keeps its data elsewhere.
        let objects = [root.join("data/objects"), root.join("objects")]
            .into_iter()
            .find(|p| p.is_dir())?;
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
        self.log.push((at, what.clone()));
        Some(what)
    }

    /// Kills one thing with SIGKILL, chosen at random among the running services and the
    /// peers' Postgres; records and gives what, or `None` when nothing runs.
    pub fn kill_one(&mut self, at: u64) -> Option<String> {
        let mut targets = self.services();
        for peer in ["manatee1", "manatee2", "manatee3"] {
            if let Some(pid) = self.postmaster(peer) {
                targets.push((format!("postgres:{peer}"), pid));
            }
        }
        if targets.is_empty() {
            return None;
        }
        let (name, pid) = targets.swap_remove(self.rng.below(targets.len() as u64) as usize);
        let killed = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let what = format!(
            "kill -9 {name} (pid {pid}){}",
            if killed { "" } else { ": gone already" }
        );
        self.log.push((at, what.clone()));
        Some(what)
    }
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
