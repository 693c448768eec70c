//! One task's OCI container: the bundle (`config.json`) and the runtime (`runc`) that runs it.
//!
//! Why runc: measured on these machines (`reference/platform.md` §1) it applies memory and pids
//! limits on the hybrid cgroup layout as installed, with no change to the host; crun is faster
//! (about 30 ms against 70 ms a start) but only after moving the `hugetlb` controller to a v1
//! mount, a host-wide change an agent should not make; youki's `libcontainer` runs in-process,
//! where a runtime fault would take the agent and all its tasks down with it. A task's own work
//! dwarfs 70 ms for anything but trivial inputs; the benchmark reports the start latency.
//!
//! The container:
//! - user namespace mapping container ids 0..65536 to host ids `uid_base..` (unprivileged);
//! - new pid, mount, ipc, uts and network namespaces (the network has only a down `lo`);
//! - root: a read-only skeleton directory with the host's `/usr` and `/etc` bind-mounted
//!   read-only (files private to host root stay unreadable: they map to `nobody`);
//! - `/tmp` a tmpfs of the phase's `disk` size (`HOME` and `/var/tmp` point into it);
//! - the input object bound read-only at `/manta/<login>/<path>`, assets at `/assets/...`;
//! - the tools at `/opt/manta/bin`, the task's control socket at `/manta-agent/sock`;
//! - memory (and swap) and pids limits, no capabilities, no new privileges, a seccomp filter
//!   refusing mount, namespace, module, keyring, ptrace, bpf and reboot calls.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Where the skeleton keeps its mount points.
pub const SKELETON_DIRS: &[&str] = &[
    "usr",
    "etc",
    "proc",
    "dev",
    "sys",
    "tmp",
    "manta",
    "assets",
    "opt/manta/bin",
    "manta-agent",
    "var",
];

/// Creates (idempotently) the read-only root skeleton at `dir`.
///
/// # Errors
/// File system failures.
pub fn make_skeleton(dir: &Path) -> std::io::Result<()> {
    for d in SKELETON_DIRS {
        std::fs::create_dir_all(dir.join(d))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
        ("root", "tmp"),
        ("home", "tmp"),
        ("var/tmp", "../tmp"),
    ] {
        let p = dir.join(link);
        if std::fs::symlink_metadata(&p).is_err() {
            std::os::unix::fs::symlink(target, &p)?;
        }
    }
    Ok(())
}

/// A bind mount into the container.
#[derive(Debug, Clone)]
pub struct Bind {
    /// Host path.
    pub source: PathBuf,
    /// Container path.
    pub dest: String,
    /// Writable?
    pub rw: bool,
}

/// What one container gets.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The skeleton root.
    pub root: PathBuf,
    /// Command and arguments.
    pub args: Vec<String>,
    /// Environment (`K=V`).
    pub env: Vec<String>,
    /// Extra bind mounts (input, assets, tools, control socket).
    pub binds: Vec<Bind>,
    /// Memory limit, bytes.
    pub memory: u64,
    /// Scratch size, bytes.
    pub disk: u64,
    /// Most processes.
    pub pids: u64,
    /// First host uid/gid of the container's range.
    pub uid_base: u32,
    /// Host name inside.
    pub hostname: String,
}

fn seccomp() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{
            "names": [
                "mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns",
                "ptrace", "process_vm_readv", "process_vm_writev", "kexec_load",
                "kexec_file_load", "reboot", "swapon", "swapoff", "init_module",
                "finit_module", "delete_module", "bpf", "perf_event_open", "keyctl", "add_key",
                "request_key", "acct", "settimeofday", "clock_settime", "adjtimex",
                "open_by_handle_at", "name_to_handle_at", "userfaultfd", "fanotify_init",
                "quotactl", "lookup_dcookie", "sethostname", "setdomainname", "iopl", "ioperm",
                "syslog", "vhangup", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig",
                "fspick", "mount_setattr"
            ],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1
        }]
    })
}

impl Spec {
    /// The largest file the task may write (its stdout and stderr included): half its disk.
    pub fn max_file(&self) -> u64 {
        self.disk / 2
    }

    /// The OCI `config.json`.
    pub fn config(&self) -> Value {
        let ro = ["rbind", "ro", "nosuid", "nodev"];
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
            json!({"destination": "/usr", "type": "bind", "source": "/usr", "options": ro}),
            json!({"destination": "/etc", "type": "bind", "source": "/etc", "options": ro}),
            json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", format!("size={}", self.disk)]}),
            // A small tmpfs so bind mounts of inputs at any depth have somewhere to go (the
            // root is read-only and owned by host root).
            json!({"destination": "/manta", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755", "size=1m"]}),
            json!({"destination": "/assets", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755", "size=1m"]}),
        ];
        for b in &self.binds {
            let opts: Vec<&str> = if b.rw {
                vec!["rbind", "rw", "nosuid", "nodev"]
            } else {
                vec!["rbind", "ro", "nosuid", "nodev"]
            };
            mounts.push(json!({
                "destination": b.dest,
                "type": "bind",
                "source": b.source,
                "options": opts,
            }));
        }
        let caps: Vec<&str> = Vec::new();
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": self.args,
                "env": self.env,
                "cwd": "/tmp",
                "noNewPrivileges": true,
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps, "ambient": caps},
                // No file a task writes may outgrow half its disk (its stdout and stderr,
                // relayed by the runtime, are cut at the same size by the agent).
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096},
                            {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                            {"type": "RLIMIT_FSIZE", "hard": self.max_file(), "soft": self.max_file()}]
            },
            "root": {"path": self.root, "readonly": true},
            "hostname": self.hostname,
            "mounts": mounts,
            "linux": {
                "uidMappings": [{"containerID": 0, "hostID": self.uid_base, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": self.uid_base, "size": 65536}],
                "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "user"}],
                "resources": {
                    "memory": {"limit": self.memory, "swap": self.memory},
                    "pids": {"limit": self.pids},
                    "cpu": {"shares": 1024}
                },
                "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
                "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
                "seccomp": seccomp()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_every_isolation_setting() {
        let s = Spec {
            root: "/r".into(),
            args: vec!["true".into()],
            env: vec![],
            binds: vec![Bind {
                source: "/data/obj".into(),
                dest: "/manta/jill/stor/a".into(),
                rw: false,
            }],
            memory: 1 << 28,
            disk: 1 << 30,
            pids: 64,
            uid_base: 100_000,
            hostname: "t".into(),
        };
        let c = s.config();
        assert_eq!(c["root"]["readonly"], true);
        assert_eq!(c["process"]["noNewPrivileges"], true);
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 1u64 << 28);
        assert_eq!(c["linux"]["resources"]["pids"]["limit"], 64);
        assert_eq!(c["linux"]["uidMappings"][0]["hostID"], 100_000);
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for want in ["pid", "network", "ipc", "uts", "mount", "user"] {
            assert!(ns.contains(&want), "{want} namespace missing");
        }
        let last = c["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["destination"], "/manta/jill/stor/a");
        assert!(last["options"].as_array().unwrap().contains(&json!("ro")));
        assert!(
            c["linux"]["seccomp"]["syscalls"][0]["names"]
                .as_array()
                .unwrap()
                .contains(&json!("mount"))
        );
    }
}
