//! A network partition of the primary, with every peer (and etcd) in a network namespace made
//! by the test: the isolated primary never acknowledges a write, fences itself, and rejoins by
//! itself once the partition heals; the majority side fails over and loses nothing.
//!
//! Traffic to the namespace addresses is only ever sent from threads that entered a test
//! namespace; the root namespace blackholes the test subnet while the test runs.

mod common;

use manatee::adm::SitterClient;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::*;
use manatee::coord::Coord;
use manatee::{ClusterState, Peer, Role};
use serde_json::Value;
use testkit::netns::{Net, in_netns, ip, join};
use testkit::process::guarded_command;
use testkit::{LoggedChild, TestDir};

/// Host `e` (etcd and the test client) at .10 and the peers `p0..pN` at .1...
fn create_net(peers: u8) -> Result<Net> {
    let names: Vec<String> = (0..peers).map(|i| format!("p{i}")).collect();
    let mut hosts = vec![("e", 10)];
    hosts.extend(names.iter().zip(1..).map(|(n, o)| (n.as_str(), o)));
    Net::create("mtp", 213, &hosts)
}

async fn status(http: &SitterClient, p: &Peer) -> Result<Value> {
    Ok(http.status(&p.backup_url).await?)
}

async fn whole(coord: &Coord, http: &SitterClient, n: usize) -> Result<ClusterState> {
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

/// The acknowledgements of a [`Writer`]: id, when, and on which primary.
type Acks = Vec<(i64, Instant, String)>;

/// A view of the shard from etcd's namespace: its state in etcd and the sitters' status.
struct Observer {
    coord: Coord,
    http: SitterClient,
}

impl Observer {
    fn new(etcd_url: &str) -> Result<Observer> {
        Ok(Observer {
            coord: Coord::new(&[etcd_url.to_owned()], "1", Duration::from_secs(1))?,
            http: SitterClient::new(None, Duration::from_secs(2))?,
        })
    }

    async fn state(&self) -> Result<ClusterState> {
        Ok(self.coord.state().await?.context("state")?.state)
    }

    /// Waits (up to 90 s) until all three peers are placed and streaming.
    async fn wait_whole(&self, what: &str) -> Result<ClusterState> {
        wait_until(what, Duration::from_secs(90), || {
            whole(&self.coord, &self.http, 3)
        })
        .await
    }
}

/// The link between one host's namespace and the switch: down is a partition of that host.
struct Link {
    switch_ns: String,
    name: String,
}

impl Link {
    fn set(&self, state: &str) -> Result<()> {
        ip(&["-n", &self.switch_ns, "link", "set", &self.name, state])
    }
}

/// Starts etcd in host `e`'s namespace; returns it with its client URL.
fn start_etcd(net: &Net, dir: &TestDir) -> Result<(LoggedChild, String)> {
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
    let etcd = LoggedChild::spawn("etcd", etcd_cmd, &dir.path().join("etcd.log"))?;
    Ok((etcd, etcd_url))
}

/// Starts a sitter in each of hosts `p0..p2`, the first with a head start so it becomes the
/// primary.
fn start_sitters(net: &Net, dir: &TestDir, etcd_url: &str) -> Result<Vec<Sitter>> {
    let mut sitters = Vec::new();
    for i in 0..3u8 {
        let spec = SitterSpec {
            ip: net.addr(i + 1),
            pg_port: 5432,
            sitter_port: 12345,
            data_dir: dir.path().join(format!("peer{i}")),
            etcd: etcd_url.to_owned(),
            shard: "1".into(),
            netns: Some(net.ns(&format!("p{i}"))),
            allow: Some(format!("{}.0/24", net.subnet)),
        };
        sitters.push(Sitter::start(&format!("sitter{i}"), spec)?);
        if i == 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(sitters)
}

/// Step: the shard forms. Waits until it is whole, creates the test table, and returns the
/// state and the primary's postmaster pid.
async fn shard_forms(etcd_url: String) -> Result<(ClusterState, u32)> {
    let view = Observer::new(&etcd_url)?;
    let st = view.wait_whole("the shard to be whole").await?;
    create_table(&st.primary).await?;
    let pid = status(&view.http, &st.primary).await?["postmasterPid"]
        .as_u64()
        .context("pid")? as u32;
    Ok((st, pid))
}

/// Step, beside the isolated primary: writes straight to it until the cut, then checks that a
/// write started after the cut is never acknowledged. Returns every acknowledged write and
/// when the cut was made.
async fn isolated_primary_never_acknowledges(
    old: Peer,
    cut_rx: std::sync::mpsc::Receiver<Instant>,
) -> Result<(Acks, Instant)> {
    let w = Writer::start_to(
        "http://127.0.0.1:9".into(),
        "1".into(),
        1_000_000_000,
        Some(old.clone()),
    );
    w.wait_ack_after(Instant::now(), None, Duration::from_secs(20))
        .await
        .context("no write reached the primary before the cut")?;
    let cut_at = tokio::task::spawn_blocking(move || cut_rx.recv()).await??;
    // A write started after the cut: it reaches the isolated primary's WAL (so its data
    // diverges from the new timeline) but is never acknowledged.
    let late = async {
        let c = manatee::pg::PgConn::to_peer(&old, &client_login()).await?;
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

/// Step: the majority side takes over. A write is acknowledged by another primary, the state
/// deposes the old one, and the isolated primary fences itself (its Postgres is gone within
/// about a lease TTL).
async fn majority_takes_over(
    view: &Observer,
    w: &Writer,
    old: &Peer,
    old_pid: u32,
    cut_at: Instant,
) -> Result<()> {
    let acked_at = w
        .wait_ack_after(cut_at, Some(&old.id), Duration::from_secs(30))
        .await?;
    eprintln!(
        "partition: first acknowledged write on the new primary {:?} after the cut",
        acked_at - cut_at
    );
    let st2 = view.state().await?;
    ensure!(
        st2.primary.id != old.id && st2.role_of(&old.id) == Role::Deposed,
        "{st2:?}"
    );
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
    Ok(())
}

/// Step: after the heal the shard is whole again with the old primary as a standby, repaired
/// (its WAL held the isolated side's unacknowledged writes: it was rewound or rebuilt, not
/// started as it was).
async fn old_primary_rejoins(view: &Observer, old: &Peer) -> Result<ClusterState> {
    let st3 = view.wait_whole("the shard to be whole again").await?;
    ensure!(
        matches!(st3.role_of(&old.id), Role::Async(_) | Role::Sync),
        "{st3:?}"
    );
    let s = status(&view.http, old).await?;
    ensure!(
        s["rebuilds"].as_u64().unwrap_or(0) >= 1,
        "the old primary was not repaired: {s}"
    );
    Ok(st3)
}

/// Step: no write the isolated primary acknowledged came after the cut (with half a second
/// for acknowledgements already in flight).
fn no_acknowledgement_after_the_cut(iso_acked: &Acks, cut_at: Instant) -> Result<()> {
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
    Ok(())
}

/// Step: the new primary holds every write either side acknowledged (those the old primary
/// acknowledged before the cut were on its sync), and the majority side wrote enough to
/// count.
async fn nothing_acknowledged_is_lost(
    primary: Peer,
    acked: Vec<i64>,
    iso_ids: Vec<i64>,
) -> Result<()> {
    assert_all_present(&primary, &acked).await?;
    assert_all_present(&primary, &iso_ids).await?;
    ensure!(acked.len() > 20, "the majority side wrote: {}", acked.len());
    Ok(())
}

#[test]
fn partitioned_primary_never_acknowledges_and_rejoins() -> Result<()> {
    if not_root("skipped: network namespaces need root") {
        return Ok(());
    }
    let net = create_net(3)?;
    let dir = TestDir::new("manatee-netns")?;
    template()?;
    let (_etcd, etcd_url) = start_etcd(&net, &dir).context("step: start etcd")?;
    let sitters = start_sitters(&net, &dir, &etcd_url).context("step: start the sitters")?;

    // Everything below talks to the namespaces from inside them.
    let e_ns = net.ns("e");
    let (st, old_pid) = join(in_netns(&e_ns, {
        let etcd_url = etcd_url.clone();
        move || shard_forms(etcd_url)
    }))
    .context("step: the shard forms")?;
    let old = st.primary.clone();
    let old_host = format!(
        "p{}",
        sitters.iter().position(|s| s.id() == old.id).expect("peer")
    );
    let link = Link {
        switch_ns: net.ns("sw"),
        name: net.link(&old_host),
    };

    // Writers: one beside the isolated primary, straight to it, and one on the majority side
    // through the state.
    let (cut_tx, cut_rx) = std::sync::mpsc::channel::<Instant>();
    let iso = in_netns(&net.ns(&old_host), {
        let old = old.clone();
        move || isolated_primary_never_acknowledges(old, cut_rx)
    });
    let majority = in_netns(&e_ns, {
        let old = old.clone();
        move || async move {
            let view = Observer::new(&etcd_url)?;
            let w = Writer::start(etcd_url.clone(), "1".into(), 1);
            w.wait_ack_after(Instant::now(), None, Duration::from_secs(20))
                .await
                .context("step: writes flow before the partition")?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let cut_at = Instant::now();
            link.set("down").context("step: partition the primary")?;
            cut_tx.send(cut_at)?;
            majority_takes_over(&view, &w, &old, old_pid, cut_at)
                .await
                .context("step: the majority side takes over")?;
            tokio::time::sleep(Duration::from_secs(7)).await;
            link.set("up").context("step: heal the partition")?;
            let st3 = old_primary_rejoins(&view, &old)
                .await
                .context("step: the old primary rejoins, repaired")?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let acked = w.stop().await;
            Ok((st3, acked, cut_at))
        }
    });
    let (st3, acked, cut_at) = join(majority)?;
    let (iso_acked, _) =
        join(iso).context("step: the isolated primary never acknowledges a write")?;
    no_acknowledgement_after_the_cut(&iso_acked, cut_at)
        .context("step: the isolated primary never acknowledges a write")?;
    let iso_ids: Vec<i64> = iso_acked.iter().map(|(i, _, _)| *i).collect();
    join(in_netns(&e_ns, move || {
        nothing_acknowledged_is_lost(st3.primary, acked, iso_ids)
    }))
    .context("step: no acknowledged write is lost")?;
    let pids: Vec<u32> = sitters.iter().filter_map(Sitter::pid).collect();
    drop(sitters);
    wait_children_gone(&pids);
    Ok(())
}
