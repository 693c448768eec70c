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
//! - new pid, mount, ipc, uts and network namespaces (the network has only `lo`, where lackey
//!   serves the store as `MANTA_URL`, forwarding to the task's socket);
//! - root: a read-only skeleton directory with the host's `/usr` and `/etc` bind-mounted
//!   read-only (files private to host root stay unreadable: they map to `nobody`);
//! - `/tmp` a tmpfs of the phase's `disk` size (`HOME` and `/var/tmp` point into it);
//! - the input object bound read-only at `/manta/<login>/<path>`, assets at `/assets/...`;
//! - the tools at `/opt/manta/bin`, the task's control socket at `/manta-agent/sock`;
//! - memory (and swap) and pids limits, no capabilities, no new privileges, and a seccomp
//!   allowlist: the calls ordinary programs make, and nothing that mounts, makes or enters a
//!   namespace, loads modules, traces, or reaches `bpf`, keyrings or `io_uring`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Directories the container mounts over, whatever its root: made in the skeleton and in every
/// unpacked image (where a file or link of the image at one of these becomes a directory).
pub const MOUNT_POINTS: &[&str] = &[
    "proc",
    "dev",
    "sys",
    "tmp",
    "manta",
    "assets",
    "opt/manta/bin",
    "opt/manta/lib",
    "manta-agent",
];

/// What the skeleton has besides [`MOUNT_POINTS`]: where the host's `/usr` and `/etc` are
/// bound, and `/var` (for its `tmp` link).
const HOST_DIRS: &[&str] = &["usr", "etc", "var"];

/// Creates (idempotently) the read-only root skeleton at `dir`.
///
/// # Errors
/// File system failures.
pub fn make_skeleton(dir: &Path) -> std::io::Result<()> {
    for d in MOUNT_POINTS.iter().chain(HOST_DIRS) {
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

/// Writes under `dir` a bundle whose container runs `/bin/true` with the agent's own
/// settings (skeleton root, namespaces, seccomp, limits, ids from `uid_base`): what the agent
/// starts once to prove its OCI runtime works here, and what the bench times. Answers the
/// bundle's directory.
///
/// # Errors
/// File system failures.
pub fn probe_bundle(dir: &Path, uid_base: u32) -> std::io::Result<PathBuf> {
    let root = dir.join("rootfs");
    make_skeleton(&root)?;
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle)?;
    let spec = Spec {
        root,
        host_usr_etc: true,
        args: vec!["/bin/true".into()],
        env: vec!["PATH=/usr/bin:/bin".into()],
        binds: Vec::new(),
        memory: 256 << 20,
        disk: 1 << 30,
        pids: 64,
        uid_base,
        hostname: "probe".into(),
    };
    let config = serde_json::to_vec(&spec.config()).map_err(std::io::Error::other)?;
    std::fs::write(bundle.join("config.json"), config)?;
    Ok(bundle)
}

/// Makes what the tools need to run inside an image, whose root has none of the host's
/// libraries: `libs` gets a copy of the dynamic loader and the libraries this process has
/// mapped (the tools link the same ones), and `bin` a copy of `jobs-tool` with one `/bin/sh`
/// script per tool that runs it through that loader. Answers the loader's file name (none
/// when this process is statically linked: the tools then run as they are). Blocking.
///
/// # Errors
/// File system failures.
pub fn image_tools(jobs_tool: &Path, bin: &Path, libs: &Path) -> std::io::Result<Option<String>> {
    std::fs::create_dir_all(bin)?;
    std::fs::create_dir_all(libs)?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut loader = None;
    let mut seen = std::collections::HashSet::new();
    for line in maps.lines() {
        let Some(file) = line
            .split_whitespace()
            .nth(5)
            .filter(|f| f.starts_with('/'))
        else {
            continue;
        };
        let path = Path::new(file);
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !name.contains(".so") || !seen.insert(name.clone()) {
            continue;
        }
        if name.starts_with("ld-") {
            loader = Some(name.clone());
        }
        let tmp = libs.join(format!(".{name}.new"));
        std::fs::copy(path, &tmp)?;
        std::fs::rename(&tmp, libs.join(&name))?;
    }
    let tmp = bin.join(".jobs-tool.new");
    std::fs::copy(jobs_tool, &tmp)?;
    std::fs::rename(&tmp, bin.join("jobs-tool"))?;
    for t in crate::tools::TOOLS {
        let run = match &loader {
            Some(l) => {
                format!("/opt/manta/lib/{l} --library-path /opt/manta/lib /opt/manta/bin/jobs-tool")
            }
            None => "/opt/manta/bin/jobs-tool".to_owned(),
        };
        let script = format!("#!/bin/sh\nexec {run} {t} \"$@\"\n");
        let p = bin.join(t);
        std::fs::write(&p, script)?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    Ok(loader)
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
    /// The root: the skeleton, or an unpacked image.
    pub root: PathBuf,
    /// Whether the host's `/usr` and `/etc` are bound into the root (the skeleton), or the
    /// root is a whole image of its own.
    pub host_usr_etc: bool,
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

/// The system calls a task may make, by purpose. Everything else fails with `EPERM`: mounts,
/// namespaces (`unshare`, `setns`, and `clone` with a namespace flag), modules, keyrings,
/// `ptrace` and reading other processes' memory, `bpf`, `perf_event_open`, `io_uring`, clocks,
/// swap, reboot, and whatever a newer kernel adds. The list follows what ordinary programs
/// (shells, coreutils, Perl, Python, Node, the tools under `/opt/manta/bin`) use; only the
/// 64-bit ABI is allowed (32-bit calls are refused).
const ALLOWED_SYSCALLS: &[&str] = &[
    // files and descriptors
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "open",
    "openat",
    "openat2",
    "creat",
    "close",
    "close_range",
    "lseek",
    "dup",
    "dup2",
    "dup3",
    "pipe",
    "pipe2",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "truncate",
    "ftruncate",
    "fallocate",
    "fadvise64",
    "readahead",
    "sendfile",
    "copy_file_range",
    "splice",
    "tee",
    "vmsplice",
    "ioctl",
    // names and metadata
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getdents",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "rmdir",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "umask",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "mknod",
    "mknodat",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    // memory
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "mincore",
    "msync",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "membarrier",
    "memfd_create",
    "get_mempolicy",
    "set_mempolicy",
    "mbind",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    // processes and threads (`clone` is allowed below without namespace flags only)
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "kill",
    "tkill",
    "tgkill",
    "getpid",
    "getppid",
    "gettid",
    "getpgid",
    "setpgid",
    "getpgrp",
    "getsid",
    "setsid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
    "capget",
    "capset",
    "prctl",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "futex",
    "futex_waitv",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_getattr",
    "sched_setattr",
    "getpriority",
    "setpriority",
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "times",
    "uname",
    "sysinfo",
    "getcpu",
    "pidfd_open",
    "pidfd_send_signal",
    "seccomp",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    // signals
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "rt_sigsuspend",
    "sigaltstack",
    "pause",
    "alarm",
    "signalfd",
    "signalfd4",
    "restart_syscall",
    // time
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    // waiting for events
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    // sockets (the task's network has only a down loopback; the control socket is Unix)
    "socket",
    "socketpair",
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "getsockname",
    "getpeername",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "setsockopt",
    "getsockopt",
    // System V and POSIX IPC (private to the task's ipc namespace)
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    // randomness
    "getrandom",
];

/// Every namespace flag `clone` takes (`CLONE_NEWNS`, `CLONE_NEWCGROUP`, `CLONE_NEWUTS`,
/// `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID`, `CLONE_NEWNET`): a `clone` whose flags
/// hold none of them is an ordinary fork or thread.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// The task's seccomp filter: the allowlist above, `clone` without namespace flags, `clone3`
/// answered `ENOSYS` (its flags sit in memory a filter cannot read; libc then falls back to
/// `clone`), and `personality` only to ask or to set the ordinary Linux persona.
fn seccomp() -> Value {
    const EPERM: u32 = 1;
    const ENOSYS: u32 = 38;
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ALLOWED_SYSCALLS, "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
            },
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            // PER_LINUX, PER_LINUX with UNAME26, PER_LINUX32, and 0xffffffff (ask).
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0x0002_0000, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0x0000_0008, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0xffff_ffffu32, "op": "SCMP_CMP_EQ"}]}
        ]
    })
}

impl Spec {
    /// The largest file the task may write (its stdout and stderr, and a core file, included):
    /// half its disk.
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
            json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", format!("size={}", self.disk)]}),
            // A small tmpfs so bind mounts of inputs at any depth have somewhere to go (the
            // root is read-only and owned by host root).
            json!({"destination": "/manta", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755", "size=1m"]}),
            json!({"destination": "/assets", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755", "size=1m"]}),
        ];
        if self.host_usr_etc {
            for d in ["/usr", "/etc"] {
                mounts.push(json!({"destination": d, "type": "bind", "source": d, "options": ro}));
            }
        }
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
                // No file a task writes may outgrow half its disk: its stdout and stderr
                // (files of the agent's it was handed) and its core files included.
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096},
                            {"type": "RLIMIT_CORE", "hard": self.max_file(), "soft": self.max_file()},
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
                "seccomp": seccomp(),
                // Lackey serves the store on port 80 of the task's own loopback (`MANTA_URL`)
                // without any capability; this namespace has no other interface.
                "sysctl": {"net.ipv4.ip_unprivileged_port_start": "0"}
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
            host_usr_etc: true,
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
        let filter = &c["linux"]["seccomp"];
        assert_eq!(filter["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: Vec<&str> = filter["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().unwrap())
            .map(|n| n.as_str().unwrap())
            .collect();
        for call in ["read", "execve", "openat", "futex", "socket"] {
            assert!(allowed.contains(&call), "{call} must be allowed");
        }
        for call in [
            "mount",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "io_uring_setup",
            "bpf",
            "ptrace",
        ] {
            assert!(
                !allowed.contains(&call),
                "{call} must not be allowed freely"
            );
        }
    }
}
