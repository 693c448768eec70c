//! The region config file (`region.toml`): which hosts make up a region and which services each
//! runs, on which ports, with which datasets. `manta-adm region init` writes one; `manta-adm
//! host run|install` read it on each host; `manta-adm status --config` reads it to know what to
//! ask.
//!
//! ```toml
//! [region]
//! id = "6f3c..."          # names the region's CA
//! shard = "1"             # the metadata shard
//! s3_region = "us-east-1"
//! pki = "pki"             # keys and certificates (relative to this file): pki/<service>
//! secrets = "secrets"     # shared secrets: pg-replication, pg-moray, token-secret
//! image_registry = "/admin/public/images"   # optional: where jobs' image names are found
//!
//! [[host]]
//! name = "h1"
//! address = "10.0.0.1"    # where its services listen and are reached
//! domain = "dc1"          # failure domain: no two copies of an object share one
//! state_dir = "/var/lib/manta"
//!
//! [[service]]
//! name = "storage1"
//! kind = "storage"
//! host = "h1"
//! port = 7070
//! dataset = "dir:/var/lib/manta/storage1/data"   # optional
//! ```
//!
//! An optional `[limits]` table sets each account's default share of the region (an account's
//! own limits, from `manta-adm account set-limits`, override them; what is unset keeps the
//! services' defaults):
//!
//! ```toml
//! [limits]
//! concurrent_requests = 256   # requests in progress at once on one front door
//! buckets = 100               # S3 buckets owned
//! jobs = 64                   # jobs running at once
//! tasks = 256                 # tasks dispatched or running at once
//! task_output = "4GiB"        # bytes one task may emit as outputs
//! ```
//!
//! Every service has a `port`; etcd also has `peer_port` and `metrics_port`, a Manatee peer
//! `pg_port` (its sitter serves `port`), a front door `s3_port`, a jobs agent the `storage`
//! node it serves. A storage node marked `retired = true` keeps serving reads but is never
//! chosen for new copies.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// The file name `region init` writes.
pub const FILE_NAME: &str = "region.toml";

/// A whole region's description.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Region-wide settings.
    pub region: RegionSection,
    /// The hosts.
    #[serde(rename = "host", default)]
    pub hosts: Vec<HostEntry>,
    /// The services, in start order within each host.
    #[serde(rename = "service", default)]
    pub services: Vec<ServiceEntry>,
    /// Each account's default share of the region.
    #[serde(default, skip_serializing_if = "LimitsSection::is_unset")]
    pub limits: LimitsSection,
}

/// Each account's default share of the region; `None` keeps the services' own defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Requests in progress at once on one front door (`--account-max-concurrency`).
    pub concurrent_requests: Option<u32>,
    /// S3 buckets owned (`--account-max-buckets`).
    pub buckets: Option<u32>,
    /// Jobs running at once (`--account-max-jobs`).
    pub jobs: Option<u32>,
    /// Tasks dispatched or running at once (the supervisor's `--account-max-tasks`).
    pub tasks: Option<u32>,
    /// Bytes one task may emit as outputs (the agents' `--max-task-output`), e.g. `"4GiB"`.
    pub task_output: Option<String>,
}

impl LimitsSection {
    fn is_unset(&self) -> bool {
        *self == LimitsSection::default()
    }
}

/// Region-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionSection {
    /// The region's id (its CA is named after it).
    pub id: uuid::Uuid,
    /// The metadata shard's name.
    #[serde(default = "default_shard")]
    pub shard: String,
    /// The region name the S3 API answers to.
    #[serde(default = "default_s3_region")]
    pub s3_region: String,
    /// Keys and certificates: `<pki>/<service>/{cert,key,ca}.pem`, `<pki>/adm` for operators.
    /// Relative to the config file's directory.
    #[serde(default = "default_pki")]
    pub pki: PathBuf,
    /// Shared secrets (`pg-replication`, `pg-moray`, `token-secret`), relative likewise.
    #[serde(default = "default_secrets")]
    pub secrets: PathBuf,
    /// The jobs' image registry: the store directory whose objects phases name as
    /// `"image": "NAME"` (the agents' `--image-registry`); readable by every account, so
    /// under some account's `public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_registry: Option<String>,
}

fn default_shard() -> String {
    "1".into()
}
fn default_s3_region() -> String {
    "us-east-1".into()
}
fn default_pki() -> PathBuf {
    "pki".into()
}
fn default_secrets() -> PathBuf {
    "secrets".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/manta".into()
}

/// One host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// Its name in this file.
    pub name: String,
    /// The address its services listen on and are reached at.
    pub address: IpAddr,
    /// Its failure domain (an object's copies go to distinct domains).
    pub domain: String,
    /// Where its services keep their data, logs and pid files (`<state_dir>/<service>`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

/// What a service is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An etcd member.
    Etcd,
    /// A Manatee peer (a sitter and its Postgres).
    Manatee,
    /// A Moray instance of the shard.
    Moray,
    /// A storage node.
    Storage,
    /// A front door (the Manta and S3 APIs).
    Frontdoor,
    /// The jobs supervisor.
    JobsSupervisor,
    /// A jobs agent, beside a storage node.
    JobsAgent,
}

impl Kind {
    /// Every kind, in the order a host starts them (and stops them in reverse).
    pub const START_ORDER: [Kind; 7] = [
        Kind::Etcd,
        Kind::Manatee,
        Kind::Moray,
        Kind::Storage,
        Kind::Frontdoor,
        Kind::JobsSupervisor,
        Kind::JobsAgent,
    ];

    /// Its name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Manatee => "manatee",
            Kind::Moray => "moray",
            Kind::Storage => "storage",
            Kind::Frontdoor => "frontdoor",
            Kind::JobsSupervisor => "jobs-supervisor",
            Kind::JobsAgent => "jobs-agent",
        }
    }

    /// The port a service of this kind gets by default (the next free one above it when a host
    /// runs several).
    fn base_port(self) -> u16 {
        match self {
            Kind::Etcd => 2379,
            Kind::Manatee => 5480,
            Kind::Moray => 2020,
            Kind::Storage => 7070,
            Kind::Frontdoor => 8080,
            Kind::JobsSupervisor => 8090,
            Kind::JobsAgent => 8070,
        }
    }

    /// The region identity's role of a service of this kind.
    pub fn role(self) -> manta_pki::Role {
        use manta_pki::Role;
        match self {
            Kind::Etcd => Role::Etcd,
            Kind::Manatee => Role::Sitter,
            Kind::Moray => Role::Moray,
            Kind::Storage => Role::Storage,
            Kind::Frontdoor => Role::Frontdoor,
            Kind::JobsSupervisor => Role::Supervisor,
            Kind::JobsAgent => Role::Agent,
        }
    }
}

/// One service on one host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// Its name (unique in the region): names its directory, log, identity and unit.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// The host running it.
    pub host: String,
    /// Its main port: etcd's client port, a sitter's, Moray's, a storage node's, the Manta
    /// API's, the jobs supervisor's and agents'.
    pub port: u16,
    /// etcd: the peer port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// etcd: the metrics port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
    /// Manatee: the Postgres port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_port: Option<u16>,
    /// Front door: the S3 API's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_port: Option<u16>,
    /// Storage node: its dataset (`dir:PATH` or `zfs:POOL/NAME`); by default
    /// `dir:<state_dir>/<name>/data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Storage node: its failure domain, when not its host's (one host holding nodes of
    /// several domains: a one-machine region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Storage node: its id in placement (default `<name>.stor.<region id prefix>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_id: Option<String>,
    /// Jobs agent: the storage node (on the same host) whose objects its tasks read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Storage node: no longer chosen for new copies (its objects stay readable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
}

impl ServiceEntry {
    /// Service `name` of `kind` on `host` at `port`, with nothing else set.
    pub fn new(name: String, kind: Kind, host: &str, port: u16) -> ServiceEntry {
        ServiceEntry {
            name,
            kind,
            host: host.to_owned(),
            port,
            peer_port: None,
            metrics_port: None,
            pg_port: None,
            s3_port: None,
            dataset: None,
            domain: None,
            storage_id: None,
            storage: None,
            retired: false,
        }
    }

    /// Every port it listens on.
    pub fn ports(&self) -> Vec<u16> {
        [
            Some(self.port),
            self.peer_port,
            self.metrics_port,
            self.pg_port,
            self.s3_port,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl RegionConfig {
    /// Reads and checks the config file at `path`.
    ///
    /// # Errors
    /// When it cannot be read, is not valid TOML of this shape, or is inconsistent (see
    /// [`RegionConfig::check`]).
    pub fn load(path: &Path) -> Result<RegionConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let cfg: RegionConfig =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        cfg.check()
            .with_context(|| format!("check {}", path.display()))?;
        Ok(cfg)
    }

    /// Writes it to `path` (0600: it names every address and path of the region).
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).context("write the region config")?;
        manta_util::write_private(path, text.as_bytes())
            .with_context(|| format!("write {}", path.display()))
    }

    /// Checks that names are unique, every service's host exists, each kind has the ports it
    /// needs, no two services listen on one address and port, every jobs agent serves a storage
    /// node of its host, and the region has what it cannot work without.
    ///
    /// # Errors
    /// The first inconsistency found, naming the service or host.
    pub fn check(&self) -> Result<()> {
        if let Some(t) = &self.limits.task_output {
            manta_util::cli::parse_bytes(t)
                .map_err(|e| anyhow::anyhow!("[limits] task_output: {e}"))?;
        }
        let mut hosts = HashSet::new();
        for h in &self.hosts {
            ensure!(!h.name.is_empty(), "a host has an empty name");
            ensure!(hosts.insert(&h.name), "host {} is listed twice", h.name);
        }
        let mut names = HashSet::new();
        let mut bound = HashSet::new();
        for s in &self.services {
            ensure!(
                !s.name.is_empty()
                    && s.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "service name {:?}: use letters, digits, - and _",
                s.name
            );
            ensure!(names.insert(&s.name), "service {} is listed twice", s.name);
            let host = self.host(&s.host).with_context(|| {
                format!(
                    "service {} runs on host {}, which is not listed",
                    s.name, s.host
                )
            })?;
            let need: &[(&str, Option<u16>)] = match s.kind {
                Kind::Etcd => &[("peer_port", s.peer_port), ("metrics_port", s.metrics_port)],
                Kind::Manatee => &[("pg_port", s.pg_port)],
                Kind::Frontdoor => &[("s3_port", s.s3_port)],
                _ => &[],
            };
            for (what, v) in need {
                ensure!(
                    v.is_some(),
                    "service {} ({}) needs {what}",
                    s.name,
                    s.kind.as_str()
                );
            }
            for p in s.ports() {
                ensure!(p != 0, "service {} has port 0", s.name);
                ensure!(
                    bound.insert((host.address, p)),
                    "service {} listens on {}:{p}, which another service already uses",
                    s.name,
                    host.address
                );
            }
            if s.kind == Kind::JobsAgent {
                let node = s
                    .storage
                    .as_deref()
                    .with_context(|| format!("jobs agent {} names no storage node", s.name))?;
                let n = self.service(node).with_context(|| {
                    format!("jobs agent {} serves {node}, which is not listed", s.name)
                })?;
                ensure!(
                    n.kind == Kind::Storage && n.host == s.host,
                    "jobs agent {} serves {node}, which is not a storage node on {}",
                    s.name,
                    s.host
                );
            }
        }
        for kind in [Kind::Etcd, Kind::Manatee, Kind::Moray] {
            ensure!(
                self.of(kind).next().is_some(),
                "the region has no {} service",
                kind.as_str()
            );
        }
        Ok(())
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&HostEntry> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceEntry> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The services of one kind, in file order.
    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &ServiceEntry> {
        self.services.iter().filter(move |s| s.kind == kind)
    }

    /// The address of service `s`'s host.
    pub fn address(&self, s: &ServiceEntry) -> IpAddr {
        self.host(&s.host)
            .map_or(IpAddr::from([127, 0, 0, 1]), |h| h.address)
    }

    /// `https://<address>:<port>` of service `s`.
    pub fn url(&self, s: &ServiceEntry, port: u16) -> String {
        format!("https://{}", sock(self.address(s), port))
    }

    /// The etcd client endpoints, comma-separated.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.of(Kind::Etcd).map(|s| self.url(s, s.port)).collect()
    }

    /// The Moray URLs of the shard.
    pub fn moray_urls(&self) -> Vec<String> {
        self.of(Kind::Moray).map(|s| self.url(s, s.port)).collect()
    }

    /// The service of `kind` on `host`, or else the region's first of that kind: what a service
    /// that needs one such peer talks to.
    pub fn nearest(&self, kind: Kind, host: &str) -> Option<&ServiceEntry> {
        self.of(kind)
            .find(|s| s.host == host)
            .or_else(|| self.of(kind).next())
    }

    /// A storage node's failure domain.
    pub fn domain(&self, s: &ServiceEntry) -> String {
        s.domain.clone().unwrap_or_else(|| {
            self.host(&s.host)
                .map(|h| h.domain.clone())
                .unwrap_or_default()
        })
    }

    /// A storage node's id in placement.
    pub fn storage_id(&self, s: &ServiceEntry) -> String {
        s.storage_id.clone().unwrap_or_else(|| {
            let mut id = self.region.id.simple().to_string();
            id.truncate(8);
            format!("{}.stor.{id}", s.name)
        })
    }

    /// A path named in the file, relative to the file's directory `base`.
    pub fn resolve(base: &Path, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    }
}

/// `address:port`, with brackets for IPv6.
pub fn sock(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// What `region init` lays out for `hosts` (name, address), each its own failure domain:
/// etcd and a Manatee peer on the first three hosts (all of them when fewer), Moray and a
/// front door on the first two, the jobs supervisor on the first, and a storage node with its
/// jobs agent on every host. With a single host, that host gets three storage nodes (so two
/// copies still land on distinct nodes) in three domains of its own.
///
/// # Errors
/// When no host is given or two share a name.
pub fn layout(hosts: &[(String, IpAddr)], state_dir: &Path) -> Result<RegionConfig> {
    if hosts.is_empty() {
        bail!("a region needs at least one host");
    }
    let mut cfg = RegionConfig {
        limits: LimitsSection::default(),
        region: RegionSection {
            id: uuid::Uuid::new_v4(),
            shard: default_shard(),
            s3_region: default_s3_region(),
            pki: default_pki(),
            secrets: default_secrets(),
            image_registry: None,
        },
        hosts: hosts
            .iter()
            .enumerate()
            .map(|(i, (name, address))| HostEntry {
                name: name.clone(),
                address: *address,
                domain: format!("dc{}", i + 1),
                state_dir: if hosts.len() == 1 {
                    state_dir.to_path_buf()
                } else {
                    state_dir.join(name)
                },
            })
            .collect(),
        services: Vec::new(),
    };
    let mut ports = PortBook::default();
    let mut count: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut add = |cfg: &mut RegionConfig, kind: Kind, host: usize| -> ServiceEntry {
        let n = count.entry(kind).or_default();
        *n += 1;
        let h = &cfg.hosts[host];
        let mut s = ServiceEntry::new(
            format!("{}{n}", kind.as_str()),
            kind,
            &h.name,
            ports.next(h.address, kind.base_port()),
        );
        match kind {
            Kind::Etcd => {
                s.peer_port = Some(ports.next(h.address, 2380));
                s.metrics_port = Some(ports.next(h.address, 2381));
            }
            Kind::Manatee => s.pg_port = Some(ports.next(h.address, 5432)),
            Kind::Frontdoor => s.s3_port = Some(ports.next(h.address, 9000)),
            _ => {}
        }
        s
    };
    let n = hosts.len();
    let first = |k: usize| 0..n.min(k);
    let mut push = |cfg: &mut RegionConfig, kind: Kind, on: &mut dyn Iterator<Item = usize>| {
        for h in on {
            let s = add(cfg, kind, h);
            cfg.services.push(s);
        }
    };
    push(&mut cfg, Kind::Etcd, &mut first(if n >= 3 { 3 } else { 1 }));
    push(&mut cfg, Kind::Manatee, &mut (0..3).map(|i| i % n));
    push(&mut cfg, Kind::Moray, &mut (0..2).map(|i| i % n));
    let storage_hosts: Vec<usize> = if n == 1 { vec![0; 3] } else { (0..n).collect() };
    push(&mut cfg, Kind::Storage, &mut storage_hosts.iter().copied());
    if n == 1 {
        for (i, s) in cfg
            .services
            .iter_mut()
            .filter(|s| s.kind == Kind::Storage)
            .enumerate()
        {
            s.domain = Some(format!("dc{}", i + 1));
        }
    }
    push(&mut cfg, Kind::Frontdoor, &mut first(2));
    push(&mut cfg, Kind::JobsSupervisor, &mut first(1));
    let nodes: Vec<(String, String)> = cfg
        .of(Kind::Storage)
        .map(|s| (s.name.clone(), s.host.clone()))
        .collect();
    for (node, host) in nodes {
        let h = cfg.hosts.iter().position(|x| x.name == host).unwrap_or(0);
        let mut s = add(&mut cfg, Kind::JobsAgent, h);
        s.storage = Some(node);
        cfg.services.push(s);
    }
    cfg.check()?;
    Ok(cfg)
}

/// Ports taken so far per address, to give each service the first free one at or above its
/// kind's default.
#[derive(Default)]
struct PortBook(HashSet<(IpAddr, u16)>);

impl PortBook {
    fn next(&mut self, address: IpAddr, from: u16) -> u16 {
        let mut p = from;
        while !self.0.insert((address, p)) {
            p += 1;
        }
        p
    }
}

/// Adds a service of `kind` on `host` to `cfg`, with the first free ports for that host (and,
/// for a jobs agent, serving `storage`). Gives the new service's name.
///
/// # Errors
/// When the host is not listed, or the result is inconsistent.
pub fn add_service(
    cfg: &mut RegionConfig,
    kind: Kind,
    host: &str,
    storage: Option<String>,
) -> Result<String> {
    let address = cfg
        .host(host)
        .with_context(|| format!("no host {host} in the config"))?
        .address;
    let mut book = PortBook::default();
    for s in &cfg.services {
        for p in s.ports() {
            book.0.insert((cfg.address(s), p));
        }
    }
    let mut n = cfg.of(kind).count() + 1;
    while cfg.service(&format!("{}{n}", kind.as_str())).is_some() {
        n += 1;
    }
    let mut s = ServiceEntry::new(
        format!("{}{n}", kind.as_str()),
        kind,
        host,
        book.next(address, kind.base_port()),
    );
    match kind {
        Kind::Etcd | Kind::Manatee => bail!(
            "adding an {} to a running region is not supported (edit the config before the \
             first start instead)",
            if kind == Kind::Etcd {
                "etcd member"
            } else {
                "Manatee peer"
            }
        ),
        Kind::Frontdoor => s.s3_port = Some(book.next(address, 9000)),
        Kind::JobsAgent => s.storage = storage,
        _ => {}
    }
    let name = s.name.clone();
    cfg.services.push(s);
    cfg.check()?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<(String, IpAddr)> {
        (1..=n)
            .map(|i| (format!("h{i}"), IpAddr::from([10, 0, 0, i as u8])))
            .collect()
    }

    #[test]
    fn a_three_host_layout_spreads_the_quorum_and_the_copies() {
        let cfg = layout(&hosts(3), Path::new("/var/lib/manta")).unwrap();
        let on = |k: Kind| -> Vec<String> { cfg.of(k).map(|s| s.host.clone()).collect() };
        assert_eq!(on(Kind::Etcd), ["h1", "h2", "h3"]);
        assert_eq!(on(Kind::Manatee), ["h1", "h2", "h3"]);
        assert_eq!(on(Kind::Storage), ["h1", "h2", "h3"]);
        assert_eq!(on(Kind::Frontdoor), ["h1", "h2"]);
        let domains: HashSet<_> = cfg.hosts.iter().map(|h| &h.domain).collect();
        assert_eq!(domains.len(), 3);
        // Written and read back, it is the same region.
        let text = toml::to_string_pretty(&cfg).unwrap();
        let back: RegionConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn one_host_gets_distinct_ports_for_every_service() {
        let cfg = layout(
            &[("local".into(), IpAddr::from([127, 0, 0, 1]))],
            Path::new("/tmp/r"),
        )
        .unwrap();
        let mut all: Vec<u16> = cfg.services.iter().flat_map(ServiceEntry::ports).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(cfg.of(Kind::Storage).count(), 3);
    }

    #[test]
    fn inconsistent_files_are_refused_with_the_reason() {
        let mut cfg = layout(&hosts(3), Path::new("/x")).unwrap();
        cfg.services[1].port = cfg.services[0].port;
        cfg.services[1].host = cfg.services[0].host.clone();
        let e = cfg.check().unwrap_err().to_string();
        assert!(e.contains("already uses"), "{e}");

        let mut cfg = layout(&hosts(3), Path::new("/x")).unwrap();
        cfg.services[0].host = "nowhere".into();
        let e = cfg.check().unwrap_err().to_string();
        assert!(e.contains("not listed"), "{e}");

        let bad = "[region]\nid = \"6f3c1d2e-0000-4000-8000-000000000000\"\nsurprise = 1\n";
        assert!(toml::from_str::<RegionConfig>(bad).is_err());
    }

    #[test]
    fn an_added_storage_node_gets_free_ports_on_its_host() {
        let mut cfg = layout(&hosts(3), Path::new("/x")).unwrap();
        let name = add_service(&mut cfg, Kind::Storage, "h2", None).unwrap();
        assert_eq!(name, "storage4");
        let s = cfg.service(&name).unwrap();
        assert_eq!(s.port, Kind::Storage.base_port() + 1);
    }
}
