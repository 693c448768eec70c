//! Copies restored without an operator: a storage node lost for good, a copy corrupted on
//! disk, and a node evacuated under live writes and overwrites. Each test runs a region of
//! three nodes in three failure domains, with a repairer that passes every second and garbage
//! collection that acts at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{client, live_files, put_object};
use manta_client::MantaClient;
use testkit::{RegionOptions, TestRegion};

fn options(grace: &str, extra_storage: &[&str]) -> RegionOptions {
    let mut storage_args: Vec<String> = ["--gc-interval", "1s", "--gc-min-age", "1s"]
        .map(String::from)
        .to_vec();
    storage_args.extend(extra_storage.iter().map(|s| (*s).to_owned()));
    RegionOptions {
        frontdoor_args: [
            "--repair-interval",
            "1s",
            "--repair-grace",
            grace,
            "--default-copies",
            "2",
        ]
        .map(String::from)
        .to_vec(),
        storage_args,
        ..RegionOptions::default()
    }
}

/// The storage ids a record names, by the entry's name.
async fn sharks_of(region: &TestRegion, name: &str) -> Vec<String> {
    // The test region has one shard.
    let moray = region.moray().unwrap().system();
    let recs = moray
        .find_objects(
            "manta",
            &format!("(&(type=object)(name={name}))"),
            moray::FindOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(recs.len(), 1, "{name}: {recs:?}");
    recs[0].value["sharks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["manta_storage_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The storage ids of nodes holding a live file with exactly `want`.
fn holders(region: &TestRegion, want: &[u8]) -> Vec<String> {
    let mut ids = Vec::new();
    for n in &region.storage {
        let here = testkit::region::files_holding(&n.data, want)
            .into_iter()
            .filter(|p| p.components().any(|c| c.as_os_str() == "objects"))
            .count();
        for _ in 0..here {
            ids.push(n.storage_id.clone());
        }
    }
    ids.sort();
    ids
}

async fn wait_for<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(()) => return,
            Err(why) if start.elapsed() > within => panic!("{what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Makes `dir` and `count` objects in it; returns their names and bytes.
async fn fill(c: &MantaClient, dir: &str, count: usize) -> BTreeMap<String, Vec<u8>> {
    c.mkdir(dir).await.unwrap();
    let mut want = BTreeMap::new();
    for i in 0..count {
        let name = format!("obj-{i}");
        put_object(c, &format!("{dir}/{name}"), body(i, 0))
            .await
            .unwrap();
        want.insert(name, body(i, 0));
    }
    want
}

fn body(i: usize, round: usize) -> Vec<u8> {
    format!("object {i} round {round} {}\n", "x".repeat(i * 37 % 5000)).into_bytes()
}

/// Checks every object: the record names two nodes, both alive (not `gone`), in two failure
/// domains, each holding exactly the bytes; and the front door serves them.
async fn all_have_two_good_copies(
    region: &TestRegion,
    c: &MantaClient,
    dir: &str,
    want: &BTreeMap<String, Vec<u8>>,
    gone: &str,
) -> Result<(), String> {
    for (name, bytes) in want {
        let mut sharks = sharks_of(region, name).await;
        sharks.sort();
        if sharks.len() != 2 || sharks.iter().any(|s| s == gone) {
            return Err(format!("{name} names {sharks:?}"));
        }
        let held = holders(region, bytes);
        if held != sharks {
            return Err(format!(
                "{name}: record names {sharks:?}, copies on {held:?}"
            ));
        }
        let got = c
            .get_bytes(&format!("{dir}/{name}"))
            .await
            .map_err(|e| e.to_string())?;
        if got.as_ref() != bytes.as_slice() {
            return Err(format!("{name}: the front door served other bytes"));
        }
    }
    Ok(())
}

/// Stores `bytes` at `<dir>/victim` and flips a run of 16 bytes from `at` of its copy on the
/// first node its record names. Returns the nodes the record names, that node's index, and the
/// corrupt bytes.
async fn corrupt_a_copy(
    region: &TestRegion,
    c: &MantaClient,
    dir: &str,
    bytes: &[u8],
    at: usize,
) -> (Vec<String>, usize, Vec<u8>) {
    c.mkdir(dir).await.unwrap();
    put_object(c, &format!("{dir}/victim"), bytes.to_vec())
        .await
        .unwrap();
    let named = sharks_of(region, "victim").await;
    let i = region
        .storage
        .iter()
        .position(|n| n.storage_id == named[0])
        .unwrap();
    let file = testkit::region::files_holding(&region.storage[i].data, bytes)
        .pop()
        .unwrap();
    let mut flipped = bytes.to_vec();
    for b in &mut flipped[at..(at + 16).min(bytes.len())] {
        *b ^= 0x20;
    }
    std::fs::write(&file, &flipped).unwrap();
    (named, i, flipped)
}

#[tokio::test]
async fn a_node_lost_for_good_has_its_copies_made_again_after_the_grace_period() {
    let mut region = TestRegion::start_with(options("12s", &[])).await.unwrap();
    let c = client(&region, &region.account).await;
    let dir = format!("/{}/stor/lost", region.account.login);
    let want = fill(&c, &dir, 24).await;
    let victim = region.storage[0].storage_id.clone();
    let on_victim: usize = want
        .values()
        .filter(|b| holders(&region, b).contains(&victim))
        .count();
    assert!(on_victim > 0, "no object had a copy on {victim}");

    // Destroyed for good: the process and its dataset.
    region.storage[0].kill();
    std::fs::remove_dir_all(&region.storage[0].data).unwrap();
    let killed = Instant::now();

    // Within the grace period nothing is copied: the node may come back.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let m = testkit::metrics(&region.url).await;
    assert!(
        !m.contains("repair_copies_total"),
        "copies made within the grace period:\n{m}"
    );

    wait_for(
        "every object has two good copies again",
        Duration::from_secs(90),
        || all_have_two_good_copies(&region, &c, &dir, &want, &victim),
    )
    .await;
    assert!(
        killed.elapsed() >= Duration::from_secs(12),
        "repaired before the grace ended"
    );
    let m = testkit::metrics(&region.url).await;
    let copies = m
        .lines()
        .find(|l| l.starts_with("repair_copies_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert_eq!(
        copies as usize, on_victim,
        "one copy per object the node held\n{m}"
    );
}

#[tokio::test]
async fn a_copy_flipped_on_disk_is_found_by_scrub_and_replaced() {
    let region = TestRegion::start_with(options(
        "1h",
        &["--scrub-rate", "100000000", "--scrub-interval", "1s"],
    ))
    .await
    .unwrap();
    let c = client(&region, &region.account).await;
    let dir = format!("/{}/stor/flip", region.account.login);
    let bytes = body(7, 0);
    let (before, node, flipped) = corrupt_a_copy(&region, &c, &dir, &bytes, 3).await;
    let node = &region.storage[node];

    let want: BTreeMap<String, Vec<u8>> = [("victim".to_owned(), bytes.clone())].into();
    wait_for(
        "the corrupt copy is replaced",
        Duration::from_secs(60),
        || async {
            let sharks = sharks_of(&region, "victim").await;
            if sharks.contains(&before[0]) {
                return Err(format!("still names {sharks:?}"));
            }
            all_have_two_good_copies(&region, &c, &dir, &want, &before[0]).await
        },
    )
    .await;
    let after = sharks_of(&region, "victim").await;
    assert!(
        after.contains(&before[1]),
        "the good copy is kept: {after:?}"
    );
    // The corrupt bytes sit in the node's quarantine area, not among its objects.
    assert!(
        testkit::region::files_holding(&node.data, &flipped)
            .iter()
            .all(|p| !p.components().any(|c| c.as_os_str() == "objects"))
    );
}

#[tokio::test]
async fn every_read_succeeds_past_a_corrupt_copy_and_the_first_that_meets_it_queues_its_repair() {
    // No scrub: only a read can notice.
    let region = TestRegion::start_with(options("1h", &[])).await.unwrap();
    let c = client(&region, &region.account).await;
    let dir = format!("/{}/stor/read", region.account.login);
    // 2 MB with a run of bytes flipped in the second 1 MiB block of one copy.
    let bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = format!("{dir}/victim");
    let (before, node, flipped) = corrupt_a_copy(&region, &c, &dir, &bytes, 1_500_000).await;
    let node = &region.storage[node];

    // Reads pick a copy at random. Every one succeeds with the right bytes: one that meets the
    // bad block goes on from the good copy at the same offset.
    let resumed = || async {
        let m = testkit::metrics(&region.url).await;
        m.lines()
            .find(|l| l.starts_with("frontdoor_reads_resumed_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut reads = 0;
    while reads < 10 || (resumed().await == 0.0 && reads < 40) {
        let got = c.get_bytes(&path).await.expect("every read succeeds");
        assert!(
            got.as_ref() == bytes.as_slice(),
            "read {reads}: other bytes served"
        );
        reads += 1;
    }
    assert_eq!(
        resumed().await,
        1.0,
        "one read met the bad copy and went on from the other"
    );
    // That node quarantined its copy at once: later reads never try it.
    assert!(
        testkit::region::files_holding(&node.data, &flipped)
            .iter()
            .all(|p| !p.components().any(|c| c.as_os_str() == "objects"))
    );
    let want: BTreeMap<String, Vec<u8>> = [("victim".to_owned(), bytes.clone())].into();
    wait_for(
        "the corrupt copy is replaced",
        Duration::from_secs(60),
        || async { all_have_two_good_copies(&region, &c, &dir, &want, &before[0]).await },
    )
    .await;
}

#[tokio::test]
async fn evacuating_a_node_under_writes_moves_every_copy_and_loses_nothing() {
    let region = TestRegion::start_with(options("1h", &[])).await.unwrap();
    let c = client(&region, &region.account).await;
    let dir = format!("/{}/stor/evac", region.account.login);
    let mut want = fill(&c, &dir, 30).await;
    let victim = region.storage[0].storage_id.clone();
    assert!(!live_files(&region.storage[0].data).is_empty());

    let adm = |args: &[&str]| {
        let out = region.manta_adm().unwrap().args(args).output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, said) = adm(&["storage", "retire", &victim]);
    assert!(!ok, "retired before any evacuation: {said}");
    let (ok, said) = adm(&["storage", "evacuate", "9.stor.nowhere"]);
    assert!(!ok && said.contains("no storage node"), "{said}");
    let (ok, said) = adm(&["storage", "evacuate", &victim]);
    assert!(ok, "{said}");

    // Overwrites and new objects while the evacuation runs; what was acknowledged last is
    // what must be read back.
    let writer = {
        let c = c.clone();
        let dir = dir.clone();
        tokio::spawn(async move {
            let mut acked: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            let start = Instant::now();
            let mut round = 1;
            while start.elapsed() < Duration::from_secs(8) {
                for i in (round % 3..40).step_by(3) {
                    let name = format!("obj-{i}");
                    let b = body(i, round);
                    if put_object(&c, &format!("{dir}/{name}"), b.clone())
                        .await
                        .is_ok()
                    {
                        acked.insert(name, b);
                    }
                }
                round += 1;
            }
            acked
        })
    };
    let acked = writer.await.unwrap();
    assert!(!acked.is_empty());
    want.extend(acked);

    wait_for("the node is retired", Duration::from_secs(90), || async {
        let (ok, said) = adm(&["storage", "retire", &victim]);
        if ok { Ok(()) } else { Err(said) }
    })
    .await;
    wait_for(
        "the node holds nothing",
        Duration::from_secs(60),
        || async {
            let left = live_files(&region.storage[0].data);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    all_have_two_good_copies(&region, &c, &dir, &want, &victim)
        .await
        .unwrap();
    // Exactly the latest bytes survive: once garbage collection has run, no earlier round of
    // an overwritten object is left on any node.
    let names: HashSet<&String> = want.keys().collect();
    wait_for(
        "overwritten bytes are collected",
        Duration::from_secs(60),
        || async {
            for n in &region.storage {
                for f in live_files(&n.data) {
                    let b = std::fs::read(&f).unwrap_or_default();
                    if !want.values().any(|w| *w == b) {
                        return Err(format!(
                            "{} holds stale bytes of one of {names:?}",
                            f.display()
                        ));
                    }
                }
            }
            Ok(())
        },
    )
    .await;
    // Status shows the node retired with nothing left to move.
    let m = testkit::metrics(&region.url).await;
    assert!(m.contains("repair_copies_total"), "{m}");
    let (ok, said) = adm(&["storage", "evacuate", &victim]);
    assert!(!ok && said.contains("retired"), "{said}");
}

/// Whether the front door at `url` says it holds the repair lease.
async fn repairs(url: &str) -> bool {
    testkit::metrics(url)
        .await
        .lines()
        .any(|l| l == "repair_active 1")
}

#[tokio::test]
async fn one_front_door_repairs_at_a_time_and_another_takes_over_when_it_dies() {
    let mut opts = options("1h", &[]);
    opts.frontdoor_args
        .extend(["--repair-lease", "3s"].map(String::from));
    let region = TestRegion::start_with(opts).await.unwrap();
    // A second front door over the same metadata.
    let id = region
        .identity("frontdoor2", testkit::region::Role::Frontdoor)
        .unwrap();
    let port = testkit::process::free_port().unwrap();
    let url2 = format!("http://127.0.0.1:{port}");
    let mut cmd =
        testkit::process::guarded_command(testkit::region::binary("frontdoor").unwrap(), None);
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--moray",
        &region.moray_url,
    ])
    .args(["--picker-refresh", "1s", "--heartbeat-max-age", "10s"])
    .args(["--repair-interval", "1s", "--repair-lease", "3s"])
    .arg("--internal-tls-dir")
    .arg(id.dir());
    let mut fd2 =
        testkit::LoggedChild::spawn("frontdoor2", cmd, &region.dir().join("frontdoor2.log"))
            .unwrap();
    testkit::region::wait_ping(&url2, &mut fd2, "frontdoor2", Duration::from_secs(60))
        .await
        .unwrap();

    // Exactly one of them holds the lease, for several seconds running.
    let mut first = None;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (a, b) = (repairs(&region.url).await, repairs(&url2).await);
        assert!(!(a && b), "both front doors repair at once");
        if a || b {
            assert!(
                first.is_none_or(|f| f == a),
                "the lease moved while both lived"
            );
            first = Some(a);
        }
    }
    let region_fd_held = first.expect("neither front door took the lease");

    // The holder dies without giving the lease up: the other takes over once it lapses.
    let (survivor, victim_pid) = if region_fd_held {
        (url2.clone(), region.frontdoor_pid().unwrap())
    } else {
        (region.url.clone(), fd2.pid())
    };
    manta_util::proc::signal(victim_pid, rustix::process::Signal::KILL).unwrap();
    let start = Instant::now();
    while !repairs(&survivor).await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nobody took the repair lease over"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The progress record names the survivor's pass going on.
    let lease = region
        .moray()
        .unwrap()
        .system()
        .get_object("manta_repair", "lease")
        .await
        .unwrap();
    let holder = lease.value["holder"].as_str().unwrap().to_owned();
    let port_of = |u: &str| u.rsplit(':').next().unwrap().to_owned();
    assert!(
        holder.ends_with(&format!(":{}", port_of(&survivor))),
        "{holder}"
    );
}
