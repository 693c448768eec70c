//! Test networks: hosts that are network namespaces, each with its own address on a bridge in
//! a "switch" namespace, all made by the test and deleted when it ends.
//!
//! Traffic to the test subnet must only ever be sent from inside those namespaces (threads
//! that entered one with [`in_netns`], or commands run with [`Net::command`]): the root
//! namespace would route it off the machine, so it blackholes the subnet while the net lives.

use std::future::Future;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Runs `ip` with `args`.
///
/// # Errors
/// When it fails, with its error output.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Test namespaces: a switch (bridge) namespace and one namespace per host on it. Deleted,
/// with the root namespace's blackhole route, on drop (also when the test fails).
#[derive(Debug)]
pub struct Net {
    /// Prefix of every namespace and link name (`<tag><pid>`).
    pub prefix: String,
    /// The first three octets of the subnet (`10.<n>.<m>`).
    pub subnet: String,
    namespaces: Vec<String>,
    route: bool,
}

/// The subnet of test process `pid` for a net tagged with `second_octet`.
fn subnet_of(second_octet: u8, pid: u32) -> String {
    format!("10.{second_octet}.{}", 100 + pid % 100)
}

impl Net {
    /// Hosts `(name, last octet)` on `10.<second_octet>.<100 + pid % 100>.0/24`, namespaces
    /// named `<tag><pid>-<name>`. Namespaces that dead test processes left with the same tag
    /// are removed first.
    ///
    /// # Errors
    /// When a namespace, link or route cannot be made (not root, say).
    pub fn create(tag: &str, second_octet: u8, hosts: &[(&str, u8)]) -> Result<Net> {
        clean_stale(tag, second_octet);
        let pid = std::process::id();
        let prefix = format!("{tag}{pid}");
        let subnet = subnet_of(second_octet, pid);
        let mut net = Net {
            prefix: prefix.clone(),
            subnet: subnet.clone(),
            namespaces: Vec::new(),
            route: false,
        };
        ip(&["route", "add", "blackhole", &format!("{subnet}.0/24")])?;
        net.route = true;
        let sw = format!("{prefix}-sw");
        ip(&["netns", "add", &sw])?;
        net.namespaces.push(sw.clone());
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for (name, octet) in hosts {
            let ns = net.ns(name);
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let (inner, outer) = (format!("{prefix}{name}i"), net.link(name));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "netns", &sw])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{subnet}.{octet}/24"),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &sw, "link", "set", &outer, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &outer, "up"])?;
        }
        Ok(net)
    }

    /// The namespace of host `host` (`sw` for the switch).
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// The switch's end of host `host`'s link (setting it down cuts the host off).
    pub fn link(&self, host: &str) -> String {
        format!("{}{host}o", self.prefix)
    }

    /// Sets host `host`'s link up or down at the switch.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn set_link(&self, host: &str, up: bool) -> Result<()> {
        ip(&[
            "-n",
            &self.ns("sw"),
            "link",
            "set",
            &self.link(host),
            if up { "up" } else { "down" },
        ])
    }

    /// The address with last octet `octet`.
    pub fn addr(&self, octet: u8) -> String {
        format!("{}.{octet}", self.subnet)
    }

    /// `program` run inside host `host`'s namespace: see [`Net::enter_args`].
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.args(self.enter_args(host)).arg(program);
        c
    }

    /// The arguments of `nsenter` that run a program (which follows them) in host `host`'s
    /// network namespace. Only the network is entered: `ip netns exec` would also give the
    /// program a mount namespace with a fresh `/sys`, without the machine's cgroup mounts, and
    /// a host's container runtime needs those as any real host has them.
    pub fn enter_args(&self, host: &str) -> Vec<String> {
        vec![format!("--net=/run/netns/{}", self.ns(host)), "--".into()]
    }

    /// The pids of every process in host `host`'s namespace.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn pids(&self, host: &str) -> Result<Vec<u32>> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.ns(host)])
            .output()
            .context("run ip netns pids")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        if self.route {
            let _ = ip(&[
                "route",
                "del",
                "blackhole",
                &format!("{}.0/24", self.subnet),
            ]);
        }
    }
}

/// Removes namespaces and routes tagged `tag` left by test processes that died without
/// cleaning up.
fn clean_stale(tag: &str, second_octet: u8) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(tag) else {
            continue;
        };
        let pid: u32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pid != 0 && !manta_util::proc::alive(pid) {
            let _ = ip(&["netns", "del", name]);
            let _ = ip(&[
                "route",
                "del",
                "blackhole",
                &format!("{}.0/24", subnet_of(second_octet, pid)),
            ]);
        }
    }
}

/// Runs `body` on a thread of its own that first enters network namespace `ns`, with a
/// single-threaded runtime, so every socket it opens is inside that namespace.
pub fn in_netns<T, F, Fut>(ns: &str, body: F) -> std::thread::JoinHandle<Result<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .context("setns")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(body())
    })
}

/// The result of a thread from [`in_netns`].
///
/// # Errors
/// The thread's error, or that it panicked.
pub fn join<T>(h: std::thread::JoinHandle<Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("test thread panicked"))?
}
