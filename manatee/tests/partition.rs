//! A network partition of the primary, with every peer (and etcd) in a network namespace made
//! by the test: the isolated primary never acknowledges a write, fences itself, and rejoins by
//! itself once the partition heals; the majority side fails over and loses nothing.
//!
//! Traffic to the namespace addresses is only ever sent from threads that entered a test
//! namespace; the root namespace blackholes the test subnet while the test runs.

mod common;

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::*;
use manatee::coord::Coord;
use manatee::{ClusterState, Peer, Role};
use serde_json::Value;
use testkit::process::guarded_command;
use testkit::{LoggedChild, TestDir};

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Test namespaces: a switch (bridge) namespace and one namespace per host on it. Deleted,
/// with the root namespace's blackhole route, on drop (also when the test fails).
struct Net {
    prefix: String,
    subnet: String,
    hosts: Vec<String>,
    route: bool,
}

impl Net {
    /// Hosts `e` (etcd and the test client) at .10 and `p0..pN` at .1...
    fn create(peers: usize) -> Result<Net> {
        clean_stale();
        let pid = std::process::id();
        let prefix = format!("mtp{pid}");
        let subnet = format!("10.213.{}", 100 + pid % 100);
        let mut net = Net {
            prefix: prefix.clone(),
            subnet: subnet.clone(),
            hosts: Vec::new(),
            route: false,
        };
        ip(&["route", "add", "blackhole", &format!("{subnet}.0/24")])?;
        net.route = true;
        let sw = format!("{prefix}-sw");
        ip(&["netns", "add", &sw])?;
        net.hosts.push(sw.clone());
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        let mut hosts = vec![("e".to_owned(), 10)];
        hosts.extend((0..peers).map(|i| (format!("p{i}"), i + 1)));
        for (name, octet) in hosts {
            let ns = format!("{prefix}-{name}");
            ip(&["netns", "add", &ns])?;
            net.hosts.push(ns.clone());
            let (inner, outer) = (format!("{prefix}{name}i"), format!("{prefix}{name}o"));
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

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn addr(&self, octet: usize) -> String {
        format!("{}.{octet}", self.subnet)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().rev() {
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

/// Removes namespaces and routes left by test processes that died without cleaning up.
fn clean_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("mtp") else {
            continue;
        };
        let pid: u32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pid != 0 && !alive(pid) {
            let _ = ip(&["netns", "del", name]);
            let _ = ip(&[
                "route",
                "del",
                "blackhole",
                &format!("10.213.{}.0/24", 100 + pid % 100),
            ]);
        }
    }
}

/// Runs `body` on a thread of its own that first enters network namespace `ns`, with a
/// single-threaded runtime, so every socket it opens is inside that namespace.
fn in_netns<T, F, Fut>(ns: &str, body: F) -> std::thread::JoinHandle<Result<T>>
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

fn join<T>(h: std::thread::JoinHandle<Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("test thread panicked"))?
}

async fn status(http: &reqwest::Client, p: &Peer) -> Result<Value> {
    Ok(manatee::adm::sitter_status(http, &p.backup_url).await?)
}

async fn whole(coord: &Coord, http: &reqwest::Client, n: usize) -> Result<ClusterState> {
    let st = coord.state().await?.context("no state")?.state;
    ensure!(
        st.peers().len() == n && st.deposed.is_empty(),
        "not all placed: {st:?}"
    );
    ensure!(
        status(http, &st.primary).await?["writable"] == true,
        "primary not writable"
    );
    for (p, _) in st.peers().iter().skip(1) {
        let s = status(http, p).await?;
        ensure!(
            s["mode"] == "standby" && s["registered"] == true,
            "{} not streaming",
            p.id
        );
    }
    Ok(st)
}

#[test]
fn partitioned_primary_never_acknowledges_and_rejoins() -> Result<()> {
    if !testkit::process::is_root() {
        eprintln!("skipped: network namespaces need root");
        return Ok(());
    }
    let net = Net::create(3)?;
    let dir = TestDir::new("manatee-netns")?;
    template()?;
    let etcd_ip = net.addr(10);
    let etcd_url = format!("http://{etcd_ip}:2379");
    let mut etcd_cmd = guarded_command("ip", None);
    etcd_cmd
        .args([
            "netns",
            "exec",
            &net.ns("e"),
            "etcd",
            "--name",
            "t",
            "--data-dir",
        ])
        .arg(dir.path().join("etcd"))
        .args([
            "--listen-client-urls",
            &etcd_url,
            "--advertise-client-urls",
            &etcd_url,
        ])
        .args(["--listen-peer-urls", &format!("http://{etcd_ip}:2380")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://{etcd_ip}:2380"),
        ])
        .args(["--initial-cluster", &format!("t=http://{etcd_ip}:2380")])
        .args(["--listen-metrics-urls", &format!("http://{etcd_ip}:2381")])
        .args(["--log-level", "warn"]);
    let _etcd = LoggedChild::spawn("etcd", etcd_cmd, &dir.path().join("etcd.log"))?;
    let mut sitters = Vec::new();
    for i in 0..3 {
        let spec = SitterSpec {
            ip: net.addr(i + 1),
            pg_port: 5432,
            sitter_port: 12345,
            data_dir: dir.path().join(format!("peer{i}")),
            etcd: etcd_url.clone(),
            shard: "1".into(),
            netns: Some(net.ns(&format!("p{i}"))),
            trust: Some(format!("{}.0/24", net.subnet)),
        };
        sitters.push(Sitter::start(&format!("sitter{i}"), spec)?);
        if i == 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // Everything below talks to the namespaces from inside them.
    let e_ns = net.ns("e");
    let client = in_netns(&e_ns, {
        let etcd_url = etcd_url.clone();
        move || async move {
            let coord = Coord::new(std::slice::from_ref(&etcd_url), "1", Duration::from_secs(1))?;
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?;
            let st = wait_until("the shard to be whole", Duration::from_secs(90), || {
                whole(&coord, &http, 3)
            })
            .await?;
            create_table(&st.primary).await?;
            let pid = status(&http, &st.primary).await?["postmasterPid"]
                .as_u64()
                .context("pid")? as u32;
            Ok((st, pid))
        }
    });
    let (st, old_pid) = join(client)?;
    let old = st.primary.clone();
    let old_host = format!(
        "p{}",
        sitters.iter().position(|s| s.id() == old.id).expect("peer")
    );

    // Writers: one on the majority side through the state, one beside the isolated primary.
    let (cut_tx, cut_rx) = std::sync::mpsc::channel::<Instant>();
    let iso = in_netns(&net.ns(&old_host), {
        let old = old.clone();
        move || async move {
            let w = Writer::start_to(
                "http://127.0.0.1:9".into(),
                "1".into(),
                1_000_000_000,
                Some(old.clone()),
            );
            w.wait_ack_after(Instant::now(), None, Duration::from_secs(20))
                .await?;
            let cut_at = tokio::task::spawn_blocking(move || cut_rx.recv()).await??;
            // A write started after the cut: it reaches the isolated primary's WAL (so its
            // data diverges from the new timeline) but is never acknowledged.
            let late = async {
                let c = manatee::pg::PgConn::to_peer(&old).await?;
                c.client
                    .execute("INSERT INTO t (id) VALUES (2000000000)", &[])
                    .await?;
                anyhow::Ok(())
            };
            let r = tokio::time::timeout(Duration::from_secs(6), late).await;
            ensure!(
                !matches!(r, Ok(Ok(()))),
                "a write on the isolated primary was acknowledged"
            );
            tokio::time::sleep(Duration::from_secs(3)).await;
            let acked = w.acked.lock().expect("writer lock").clone();
            let _ = w.stop().await;
            Ok((acked, cut_at))
        }
    });
    let main = in_netns(&e_ns, {
        let etcd_url = etcd_url.clone();
        let old = old.clone();
        let net_sw = net.ns("sw");
        let outer = format!("{}{}o", net.prefix, old_host);
        move || async move {
            let coord = Coord::new(std::slice::from_ref(&etcd_url), "1", Duration::from_secs(1))?;
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?;
            let w = Writer::start(etcd_url.clone(), "1".into(), 1);
            w.wait_ack_after(Instant::now(), None, Duration::from_secs(20))
                .await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let cut_at = Instant::now();
            ip(&["-n", &net_sw, "link", "set", &outer, "down"])?;
            cut_tx.send(cut_at)?;
            let acked_at = w
                .wait_ack_after(cut_at, Some(&old.id), Duration::from_secs(30))
                .await?;
            eprintln!(
                "partition: first acknowledged write on the new primary {:?} after the cut",
                acked_at - cut_at
            );
            let st2 = coord.state().await?.context("state")?.state;
            ensure!(
                st2.primary.id != old.id && st2.role_of(&old.id) == Role::Deposed,
                "{st2:?}"
            );
            // The isolated primary fences itself: its Postgres is gone within about a lease TTL.
            wait_until(
                "the isolated primary to fence itself",
                Duration::from_secs(8),
                || async {
                    ensure!(
                        !alive(old_pid),
                        "postmaster {old_pid} of the isolated primary still runs"
                    );
                    Ok(())
                },
            )
            .await?;
            eprintln!(
                "partition: isolated primary fenced {:?} after the cut",
                cut_at.elapsed()
            );
            tokio::time::sleep(Duration::from_secs(7)).await;
            ip(&["-n", &net_sw, "link", "set", &outer, "up"])?;
            let st3 = wait_until(
                "the shard to be whole again",
                Duration::from_secs(90),
                || whole(&coord, &http, 3),
            )
            .await?;
            ensure!(
                matches!(st3.role_of(&old.id), Role::Async(_) | Role::Sync),
                "{st3:?}"
            );
            // Its WAL held the isolated side's unacknowledged writes: it was rewound (or
            // rebuilt), not started as it was.
            let s = status(&http, &old).await?;
            ensure!(
                s["rebuilds"].as_u64().unwrap_or(0) >= 1,
                "the old primary was not repaired: {s}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            let acked = w.stop().await;
            Ok((st3, acked, cut_at))
        }
    });
    let (st3, acked, cut_at) = join(main)?;
    let (iso_acked, _) = join(iso)?;
    let late: Vec<_> = iso_acked
        .iter()
        .filter(|(_, t, _)| *t > cut_at + Duration::from_millis(500))
        .collect();
    ensure!(
        late.is_empty(),
        "the isolated primary acknowledged {} writes after the cut: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    let iso_ids: Vec<i64> = iso_acked.iter().map(|(i, _, _)| *i).collect();
    let check = in_netns(&e_ns, move || async move {
        assert_all_present(&st3.primary, &acked).await?;
        // Writes the old primary acknowledged before the cut were on its sync: kept too.
        assert_all_present(&st3.primary, &iso_ids).await?;
        Ok(acked.len())
    });
    let n = join(check)?;
    ensure!(n > 20, "the majority side wrote: {n}");
    let pids: Vec<u32> = sitters.iter().filter_map(Sitter::pid).collect();
    drop(sitters);
    wait_children_gone(&pids);
    Ok(())
}
