//! The agent: one per storage node. It heartbeats, claims the tasks the supervisor dispatched
//! to its node, runs them in containers ([`container`]) next to the data, reusing one container
//! for many tasks of a job and phase ([`warm`]), serves the container's control socket
//! ([`ctl`]), stores outputs on its own node (one copy) and commits their metadata, and records
//! how each task ended.
//!
//! A task claimed by this agent carries its generation (new at every start). If the agent dies,
//! the supervisor sees the generation change (or the heartbeat stop) and dispatches the task
//! again, preferably on another copy. Containers left by a previous run are killed at start.

pub mod container;
pub mod ctl;
pub mod image;
pub mod session;
pub mod warm;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::Stream;
use manta_types::{
    EntryKind, JobErrorCode, MantaPath, MetadataRecord, ObjectId, ObjectInfo, SharkRef,
};
use moray::ShardedClient;
use moray::types::PutOptions;
use storage_api::{ObjectKey, PutRequest, StorageClient};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, warn};

use crate::fdclient::FdClient;
use crate::records::{
    self, AGENTS, AgentBeat, ERRORS, ITEMS, Item, JOBS, Job, JobError, JobStore, Stored, TASKS,
    Task, esc, item_state, now_ms, put_op, task_state,
};
use crate::spec::{Phase, PhaseType};
use crate::tools::{LackeyStatus, TaskOrder};

/// The agent's configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Address for `/ping` and `/metrics`.
    pub listen: SocketAddr,
    /// The storage node this agent serves (its storage id).
    pub storage_id: String,
    /// The node's dataset directory (objects are `<dataset>/objects/<creator>/<id>`).
    pub dataset: PathBuf,
    /// The node's object API.
    pub storage_url: String,
    /// The front door.
    pub frontdoor_url: String,
    /// Moray (one shard URL).
    pub moray_url: String,
    /// Work directory (bundles, scratch, sockets, runtime state).
    pub work_dir: PathBuf,
    /// The OCI runtime.
    pub runc: PathBuf,
    /// The tools binary (`jobs-tool`).
    pub tools_bin: PathBuf,
    /// Tasks at once.
    pub slots: usize,
    /// First host uid of the containers' user namespace range.
    pub uid_base: u32,
    /// Most processes per task.
    pub pids_limit: u64,
    /// Most bytes one task may emit as outputs (`mpipe`, `msplit`) on this node; the phase's
    /// `disk` when that is less.
    pub max_task_output: u64,
    /// Wall-clock limit per task.
    pub task_timeout: Duration,
    /// How long a container waits for the next task of its job and phase before it is ended.
    pub container_idle: Duration,
    /// A node fuller than this percentage stores no output itself: outputs then go through
    /// the front door (as its placement does for uploads).
    pub max_utilization_pct: u32,
    /// Most entries in one directory (as the front doors allow).
    pub max_dirents: u64,
    /// How often to look for work.
    pub poll: Duration,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// The agent's region identity, presented to its storage node (over mutual TLS) when it
    /// stores task outputs there.
    pub tls: Option<manta_util::tls::Identity>,
    /// Most bytes of unpacked OCI images kept on this node (images in use stay regardless).
    pub image_cache: u64,
    /// Where front doors reach this agent's internal endpoints (`mlogin` sessions); by default
    /// its listen address.
    pub advertise_url: Option<String>,
    /// The region's image registry: the store directory whose objects a phase names as
    /// `"image": "NAME"` (`/LOGIN/public/images`, readable by every account).
    pub image_registry: Option<String>,
}

impl AgentConfig {
    /// Defaults for everything but the node and addresses.
    pub fn new(
        storage_id: &str,
        dataset: PathBuf,
        storage_url: &str,
        frontdoor_url: &str,
        moray_url: &str,
        work_dir: PathBuf,
    ) -> AgentConfig {
        AgentConfig {
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            storage_id: storage_id.to_owned(),
            dataset,
            storage_url: storage_url.to_owned(),
            frontdoor_url: frontdoor_url.to_owned(),
            moray_url: moray_url.to_owned(),
            work_dir,
            runc: "runc".into(),
            tools_bin: default_tools_bin(),
            slots: 4,
            uid_base: 100_000,
            pids_limit: 512,
            max_task_output: u64::MAX,
            task_timeout: Duration::from_secs(3600),
            container_idle: warm::IDLE,
            max_utilization_pct: 90,
            max_dirents: manta_types::MAX_DIRENTS,
            poll: Duration::from_millis(100),
            heartbeat: Duration::from_secs(1),
            tls: None,
            image_cache: 4 << 30,
            image_registry: None,
            advertise_url: None,
        }
    }
}

/// The client of the agent's own storage node: over mutual TLS with the agent's identity when it
/// has one.
fn storage_client(cfg: &AgentConfig) -> Result<StorageClient> {
    let mut b = storage_api::ClientBuilder::new();
    if let Some(tls) = manta_util::tls::internal_client_of(cfg.tls.as_ref())
        .context("load the agent's region identity")?
    {
        b = b.tls(tls);
    }
    Ok(b.build().node(&cfg.storage_url))
}

/// `jobs-tool` beside the running executable.
pub fn default_tools_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("jobs-tool")))
        .unwrap_or_else(|| "jobs-tool".into())
}

/// The job as a task needs it.
pub(crate) struct TaskJob {
    pub job: Job,
    pub fd: FdClient,
    /// Output base name: `/<login>/jobs/<id>/stor/<p0input or reduce>.<phase>.<taskId>`.
    pub base: String,
    /// Reducers of the next phase, if it is a reduce phase.
    pub next_reducers: Option<u64>,
}

pub(crate) struct Agent {
    cfg: AgentConfig,
    store: JobStore,
    moray: ShardedClient,
    storage: StorageClient,
    http: reqwest::Client,
    datacenter: String,
    generation: String,
    made_dirs: Mutex<HashSet<String>>,
    metrics: Arc<manta_util::metrics::Metrics>,
    /// Tasks running, and whether each is a reducer (reducers wait on their upstream, so they
    /// have slots of their own: a node full of waiting reducers still runs map tasks).
    running: Mutex<HashMap<String, (CancellationToken, bool)>>,
    /// Containers waiting for their job and phase's next task.
    idle: Mutex<Vec<warm::Warm>>,
    /// Containers being ended in the background (shutdown waits for them).
    ending: tokio_util::task::TaskTracker,
    /// Job records by id (what a task needs of a job never changes after creation).
    jobs: Mutex<HashMap<String, Job>>,
    /// This node's fullness as its heartbeat last said (when read, percent used, MB free).
    node_room: Mutex<Option<NodeRoom>>,
    /// When a claim last looked past its first page of dispatched tasks.
    looked_deep: Mutex<Option<std::time::Instant>>,
    /// OCI images unpacked here.
    images: Arc<image::Images>,
    /// The dynamic loader the tools run with inside an image (file name under
    /// `/opt/manta/lib`), when the tools are dynamically linked.
    loader: Option<String>,
}

/// How often a claim may look past its first page (see [`Agent::claim`]).
const LOOK_DEEP_EVERY: Duration = Duration::from_millis(500);

/// What `jobs_agent_task_step_seconds` measures.
const STEP_HELP: &str = "Time a task spends in each step: waiting to be claimed (wait), \
    preparing its container (prepare), running it (run; of which the user's command itself is \
    command), storing outputs (conclude), committing its result (commit).";

/// When a node's heartbeat was read, its percent used and its MB free.
type NodeRoom = (std::time::Instant, Option<u64>, Option<u64>);

/// How a task ended, before it is committed.
struct Finished {
    ok: bool,
    outputs: Vec<ctl::Output>,
    /// Outputs whose bytes are stored but whose records are committed with the task's result
    /// (in the same Moray batch when they share its shard).
    pending: Vec<Written>,
    error: Option<JobError>,
}

/// An output whose bytes are on this node and whose record is not yet committed.
pub(crate) struct Written {
    /// The object's path, for messages.
    path: String,
    /// Its metadata key and record.
    key: String,
    record: serde_json::Value,
    /// Its bytes, removed again when the record cannot be committed.
    object: ObjectKey,
}

impl Finished {
    /// A task that failed with `error` and produced nothing.
    fn failed(error: JobError) -> Self {
        Self {
            ok: false,
            outputs: Vec::new(),
            pending: Vec::new(),
            error: Some(error),
        }
    }
}

/// How a task ended.
enum End {
    /// Lackey reported how.
    Reported(LackeyStatus),
    /// Its container ended without a report: how the runtime ended.
    Died(std::process::ExitStatus),
    TimedOut,
    Cancelled,
}

/// A failure of this node rather than the user's code: the task is released to run elsewhere.
#[derive(Debug)]
struct Infra(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Infra {
    fn from(e: E) -> Infra {
        Infra(e.into())
    }
}

async fn runc(cfg: &AgentConfig, args: &[&str]) -> std::io::Result<std::process::Output> {
    tokio::process::Command::new(&cfg.runc)
        .arg("--root")
        .arg(cfg.work_dir.join("runc"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
}

/// Starts one container that runs `/bin/true`, with the settings tasks get, so that an agent
/// whose OCI runtime cannot work on this host (no user namespaces, a cgroup layout it does not
/// support, a missing binary) says so at start instead of losing every task it claims.
///
/// # Errors
/// What the runtime said, naming it.
async fn probe_runtime(cfg: &AgentConfig) -> Result<()> {
    let dir = cfg.work_dir.join("probe");
    let (d, base) = (dir.clone(), cfg.uid_base);
    let bundle = manta_util::blocking(move || container::probe_bundle(&d, base))
        .await
        .context("write the runtime probe's bundle")?;
    let id = format!("probe-{}", std::process::id());
    let bundle = bundle.display().to_string();
    let out = runc(cfg, &["run", "--bundle", &bundle, &id])
        .await
        .with_context(|| format!("run the OCI runtime {}", cfg.runc.display()))?;
    let _ = runc(cfg, &["delete", "-f", &id]).await;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        bail!(
            "the OCI runtime {} cannot start a task's container here ({}): {}",
            cfg.runc.display(),
            out.status,
            said.trim()
        );
    }
    Ok(())
}

/// The longest path a Unix socket may be bound at (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Runs the agent until `shutdown`.
///
/// # Errors
/// When the OCI runtime cannot start a container here, the work directory cannot be
/// prepared, the listener bound, or Moray never answers.
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) -> Result<()> {
    // Before `/ping` answers: an agent that cannot start containers is not up.
    probe_runtime(&cfg).await?;
    let slot = session::Slot::default();
    let (metrics, http_task) = manta_util::http::spawn_status_server_with(
        "jobs-agent",
        cfg.listen,
        cfg.tls.as_ref(),
        shutdown.clone(),
        session::routes(slot.clone(), cfg.tls.is_some()),
    )
    .await?;
    let agent = Arc::new(Agent::prepare(cfg, metrics, &shutdown).await?);
    let _ = slot.set(agent.clone());
    let result = agent.clone().work(shutdown.clone()).await;
    let _ = http_task.await;
    result
}

impl Agent {
    async fn prepare(
        cfg: AgentConfig,
        metrics: Arc<manta_util::metrics::Metrics>,
        shutdown: &CancellationToken,
    ) -> Result<Agent> {
        // Each container's sockets live at containers/<id>/ctl/{sock,lackey}: a Unix socket
        // path has at most MAX_SOCKET_PATH bytes, so a deep work dir would fail every task.
        // Refuse it now instead.
        let longest = cfg
            .work_dir
            .join("containers")
            .join(container_id())
            .join("ctl")
            .join("lackey");
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "--work-dir {} is too long: task sockets under it would exceed the \
                 {MAX_SOCKET_PATH} bytes a Unix socket path may have; use a work dir of at most \
                 {} bytes",
                cfg.work_dir.display(),
                MAX_SOCKET_PATH - (longest.as_os_str().len() - cfg.work_dir.as_os_str().len())
            );
        }
        let work = cfg.work_dir.clone();
        let tools = cfg.tools_bin.clone();
        let loader = manta_util::blocking(move || {
            container::make_skeleton(&work.join("rootfs"))?;
            // Tasks' directories hold their assets (their owners' objects): no other local user
            // may enter.
            for d in ["tasks", "containers"] {
                std::fs::create_dir_all(work.join(d))?;
                std::fs::set_permissions(
                    work.join(d),
                    std::os::unix::fs::PermissionsExt::from_mode(0o700),
                )?;
            }
            std::fs::create_dir_all(work.join("runc"))?;
            let tdir = work.join("tools");
            std::fs::create_dir_all(&tdir)?;
            // A copy, not a link: the container sees only this directory.
            let tmp = tdir.join(".jobs-tool.new");
            std::fs::copy(&tools, &tmp)?;
            std::fs::rename(&tmp, tdir.join("jobs-tool"))?;
            for t in crate::tools::TOOLS {
                let l = tdir.join(t);
                if std::fs::symlink_metadata(&l).is_err() {
                    std::os::unix::fs::symlink("jobs-tool", &l)?;
                }
            }
            container::image_tools(
                &tdir.join("jobs-tool"),
                &work.join("tools-image"),
                &work.join("tools-lib"),
            )
        })
        .await
        .with_context(|| format!("prepare {}", cfg.work_dir.display()))?;
        let (dir, max, base) = (
            cfg.work_dir.join("images"),
            cfg.image_cache,
            manta_util::proc::is_root().then_some(cfg.uid_base),
        );
        let images = manta_util::blocking(move || image::Images::open(dir, max, base))
            .await
            .context("open the image cache")?;
        // Containers of a previous run of this agent are orphans now: end them.
        if let Ok(out) = runc(&cfg, &["list", "-q"]).await {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let id = id.trim();
                if id.is_empty() {
                    continue;
                }
                warn!(
                    container = id,
                    "removing a container left by a previous run"
                );
                let _ = runc(&cfg, &["kill", id, "KILL"]).await;
                let _ = runc(&cfg, &["delete", "-f", id]).await;
            }
        }
        let left = [cfg.work_dir.join("tasks"), cfg.work_dir.join("containers")];
        let _ = manta_util::blocking(move || {
            for d in left {
                for e in std::fs::read_dir(&d)?.flatten() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
            Ok(())
        })
        .await;
        let moray = ShardedClient::single_over(
            &cfg.moray_url,
            manta_util::tls::internal_client_of(cfg.tls.as_ref())
                .context("load the agent's region identity")?,
        )?;
        let store = JobStore::new(moray.system());
        let datacenter = loop {
            let r = async {
                store.setup().await?;
                let beat = moray
                    .system()
                    .get_object("manta_storage", &cfg.storage_id)
                    .await?;
                Ok::<_, anyhow::Error>(
                    beat.value["datacenter"]
                        .as_str()
                        .unwrap_or("dc1")
                        .to_owned(),
                )
            }
            .await;
            match r {
                Ok(dc) => break dc,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "waiting for Moray and this node's heartbeat")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => bail!("shut down before start-up finished"),
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        };
        Ok(Agent {
            storage: storage_client(&cfg)?,
            store,
            moray,
            http: FdClient::http(),
            datacenter,
            generation: uuid::Uuid::new_v4().to_string(),
            made_dirs: Mutex::new(HashSet::new()),
            metrics,
            running: Mutex::new(HashMap::new()),
            idle: Mutex::new(Vec::new()),
            ending: tokio_util::task::TaskTracker::new(),
            jobs: Mutex::new(HashMap::new()),
            node_room: Mutex::new(None),
            looked_deep: Mutex::new(None),
            images: Arc::new(images),
            loader,
            cfg,
        })
    }

    /// The job (phases, owner, token), read once per job.
    async fn job(&self, id: &str) -> Result<Option<Job>> {
        if let Some(j) = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(Some(j.clone()));
        }
        let Some(j) = self.store.get::<Job>(JOBS, id).await? else {
            return Ok(None);
        };
        let mut cache = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 1000 {
            cache.clear();
        }
        cache.insert(id.to_owned(), j.value.clone());
        Ok(Some(j.value))
    }

    async fn beat(&self) -> Result<()> {
        let b = AgentBeat {
            v: records::VERSION,
            storage_id: self.cfg.storage_id.clone(),
            generation: self.generation.clone(),
            timestamp: now_ms(),
            url: self.url(),
        };
        self.store
            .put(AGENTS, &self.cfg.storage_id, &b, PutOptions::any())
            .await?;
        Ok(())
    }

    async fn work(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        info!(storage_id = %self.cfg.storage_id, generation = %self.generation, "jobs agent started");
        let me = self.clone();
        let stop_beat = shutdown.clone();
        let beats = tokio::spawn(async move {
            loop {
                if let Err(e) = me.beat().await {
                    warn!(error = %format!("{e:#}"), "heartbeat failed");
                }
                tokio::select! {
                    () = stop_beat.cancelled() => break,
                    () = tokio::time::sleep(me.cfg.heartbeat) => {}
                }
            }
        });
        let mut tasks = JoinSet::new();
        let mut last_cancel_check = tokio::time::Instant::now();
        loop {
            while tasks.try_join_next().is_some() {}
            if let Err(e) = self.claim(&mut tasks, &shutdown).await {
                warn!(error = %format!("{e:#}"), "looking for tasks failed");
            }
            self.end_idle(|w| w.idle_since.elapsed() > self.cfg.container_idle);
            if last_cancel_check.elapsed() > Duration::from_millis(500) {
                last_cancel_check = tokio::time::Instant::now();
                if let Err(e) = self.check_cancelled().await {
                    warn!(error = %format!("{e:#}"), "checking for cancelled tasks failed");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.cfg.poll) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Running tasks are abandoned: the supervisor dispatches them again.
        for t in self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            t.0.cancel();
        }
        while tasks.join_next().await.is_some() {}
        self.end_idle(|_| true);
        self.ending.close();
        self.ending.wait().await;
        beats.abort();
        Ok(())
    }

    /// Ends (in the background) the idle containers `which` picks.
    fn end_idle(self: &Arc<Self>, which: impl Fn(&warm::Warm) -> bool) {
        let ended: Vec<warm::Warm> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let (gone, kept) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|w| which(w));
            *idle = kept;
            gone
        };
        for w in ended {
            self.end_container(w);
        }
    }

    /// Ends container `w` in the background (shutdown waits for it).
    fn end_container(self: &Arc<Self>, w: warm::Warm) {
        let me = self.clone();
        self.ending.spawn(async move { w.end(&me.cfg).await });
    }

    /// Claims what this node has room for among the tasks dispatched to it: map tasks up to
    /// its slots, reducers up to as many again. The claims are one batch (one by one only when
    /// another writer got to one of them first).
    ///
    /// The first page of dispatched tasks is as long as the free slots. Tasks of the kind
    /// without room may fill it while the other kind has room (maps before a reducer, or
    /// reducers beyond their slots before maps), so a claim looks a few pages further too,
    /// but at most every [`LOOK_DEEP_EVERY`]: a claim follows every finished task, and each
    /// would otherwise read pages of maps for a reducer that is not there.
    async fn claim(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let (mut maps, mut reducers) = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let reducing = running.values().filter(|r| r.1).count();
            (
                self.cfg.slots.saturating_sub(running.len() - reducing),
                self.cfg.slots.saturating_sub(reducing),
            )
        };
        let filter = format!(
            "(&(server={})(state={}))",
            esc(&self.cfg.storage_id),
            task_state::DISPATCHED
        );
        // Reducers beyond their room may stand before map tasks: look a few pages on.
        let mut chosen = Vec::new();
        let mut offset = 0;
        for page_no in 0..4 {
            let want = (maps + reducers) as u64;
            if want == 0 {
                break;
            }
            if page_no == 1 {
                let mut at = self.looked_deep.lock().unwrap_or_else(|p| p.into_inner());
                if at.is_some_and(|t| t.elapsed() < LOOK_DEEP_EVERY) {
                    break;
                }
                *at = Some(std::time::Instant::now());
            }
            let page = self
                .store
                .find_from::<Task>(TASKS, &filter, offset, want)
                .await?;
            offset += page.len() as u64;
            let last = (page.len() as u64) < want;
            // Earlier phases first: a reducer waits for the phases before it, so those must
            // never be the ones left without a slot.
            let mut page = page;
            page.sort_by_key(|t| t.value.phase);
            for t in page {
                let room = if t.value.input.is_none() {
                    &mut reducers
                } else {
                    &mut maps
                };
                if *room > 0 {
                    *room -= 1;
                    chosen.push(t);
                }
            }
            if last {
                break;
            }
        }
        if chosen.is_empty() {
            return Ok(());
        }
        let claims: Vec<Stored<Task>> = chosen
            .into_iter()
            .map(|t| {
                let mut task = t.value;
                task.state = task_state::RUNNING.into();
                task.agent_gen = Some(self.generation.clone());
                task.time_started = Some(now_ms());
                Stored {
                    key: t.key,
                    value: task,
                    etag: t.etag,
                    id: t.id,
                }
            })
            .collect();
        let ops = claims
            .iter()
            .map(|c| put_op(TASKS, &c.key, &c.value, PutOptions::if_match(&c.etag)))
            .collect();
        let claimed: Vec<Stored<Task>> = match self.store.batch(ops).await {
            Ok(etags) => claims
                .into_iter()
                .zip(etags)
                .filter_map(|(c, etag)| Some(Stored { etag: etag?, ..c }))
                .collect(),
            Err(records::StoreError::Moray(moray::Error::EtagConflict { .. })) => {
                let mut won = Vec::new();
                for c in claims {
                    match self
                        .store
                        .put(TASKS, &c.key, &c.value, PutOptions::if_match(&c.etag))
                        .await
                    {
                        Ok(etag) => won.push(Stored { etag, ..c }),
                        Err(records::StoreError::Moray(moray::Error::EtagConflict { .. })) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                won
            }
            Err(e) => return Err(e.into()),
        };
        for claimed in claimed {
            let task = &claimed.value;
            let cancel = shutdown.child_token();
            self.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(task.task_id.clone(), (cancel.clone(), task.input.is_none()));
            let me = self.clone();
            let span = tracing::info_span!("task", task = %task.task_id, job = %task.job_id, phase = task.phase);
            tasks.spawn(
                async move {
                    let id = claimed.value.task_id.clone();
                    me.clone().run_task(claimed, cancel).await;
                    me.running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                }
                .instrument(span),
            );
        }
        Ok(())
    }

    async fn check_cancelled(&self) -> Result<()> {
        let ids: Vec<String> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in ids {
            if let Some(t) = self.store.get::<Task>(TASKS, &id).await?
                && (t.value.cancelled || t.value.agent_gen.as_deref() != Some(&self.generation))
                && let Some(tok) = self
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
            {
                tok.0.cancel();
            }
        }
        Ok(())
    }

    async fn run_task(self: Arc<Self>, claimed: Stored<Task>, cancel: CancellationToken) {
        let task = claimed.value.clone();
        let started = std::time::Instant::now();
        let waited = task
            .time_started
            .unwrap_or_default()
            .saturating_sub(task.time_dispatched);
        self.metrics.observe(
            "jobs_agent_task_step_seconds",
            STEP_HELP,
            &[("step", "wait")],
            Duration::from_millis(waited).as_secs_f64(),
        );
        let dir = self.cfg.work_dir.join("tasks").join(&task.task_id);
        let outcome = self.execute(&task, &dir, &cancel).await;
        let mut done = task.clone();
        done.state = task_state::DONE.into();
        done.time_done = Some(now_ms());
        let mut ops = Vec::new();
        let mut pending = Vec::new();
        match outcome {
            Ok(None) => {
                // Stopped early: because the job was cancelled, or because this agent is
                // shutting down or lost the task; then it must run again elsewhere.
                let cancelled = matches!(
                    self.store.get::<Task>(TASKS, &task.task_id).await,
                    Ok(Some(t)) if t.value.cancelled
                );
                done.result = Some(if cancelled { "cancelled" } else { "lost" }.into());
            }
            Ok(Some(mut f)) => {
                pending = std::mem::take(&mut f.pending);
                done.result = Some(if f.ok { "ok" } else { "fail" }.into());
                done.n_outputs = f.outputs.len() as u64;
                if f.ok {
                    match self.job(&task.job_id).await {
                        Ok(Some(job)) => {
                            let n = u32::try_from(job.phases.len()).unwrap_or(u32::MAX);
                            for o in &f.outputs {
                                let to = task.phase + 1;
                                let it = Item {
                                    v: records::VERSION,
                                    job_id: task.job_id.clone(),
                                    to_phase: to,
                                    path: o.path.clone(),
                                    p0input: task.p0input.clone(),
                                    from_task: Some(task.task_id.clone()),
                                    r_idx: o.r_idx,
                                    state: if to >= n {
                                        item_state::OUT
                                    } else {
                                        item_state::NEW
                                    }
                                    .into(),
                                    time: now_ms(),
                                };
                                ops.push(put_op(
                                    ITEMS,
                                    &format!("{}:{}", task.task_id, o.path),
                                    &it,
                                    PutOptions::any(),
                                ));
                            }
                        }
                        other => {
                            warn!(?other, "job vanished while its task ran");
                            return;
                        }
                    }
                }
                if let Some(e) = f.error {
                    ops.push(put_op(
                        ERRORS,
                        &uuid::Uuid::new_v4().to_string(),
                        &e,
                        PutOptions::must_not_exist(),
                    ));
                }
            }
            Err(Infra(e)) => {
                warn!(error = %format!("{e:#}"), "task could not run here; releasing it");
                done.result = Some("lost".into());
            }
        }
        let committing = std::time::Instant::now();
        match self.commit_task(&claimed, done, ops, pending).await {
            Ok(result) => {
                self.took("commit", committing);
                info!(result = %result, ms = started.elapsed().as_millis() as u64, "task finished");
                self.metrics.inc(
                    "jobs_agent_tasks_total",
                    "Tasks run, by result.",
                    &[("result", &result)],
                );
            }
            Err(e) => warn!(error = %e, "task result not recorded (the task was taken back)"),
        }
        let d = dir.clone();
        let _ = manta_util::blocking(move || std::fs::remove_dir_all(&d)).await;
    }

    /// Commits task `done` (claimed as `claimed`) with the rest of its result `ops` and its
    /// outputs' records `pending`: one batch when they all live on the jobs' shard. Otherwise,
    /// or when that batch is refused, the outputs go first, one by one, under the condition
    /// read afresh (an output that cannot be committed makes the task lost, to be run again),
    /// then the result. Answers the result recorded.
    async fn commit_task(
        &self,
        claimed: &Stored<Task>,
        mut done: Task,
        mut ops: Vec<moray::types::BatchOp>,
        pending: Vec<Written>,
    ) -> std::result::Result<String, records::StoreError> {
        let task_op =
            |t: &Task| put_op(TASKS, &claimed.key, t, PutOptions::if_match(&claimed.etag));
        ops.insert(0, task_op(&done));
        let together = !pending.is_empty()
            && pending
                .iter()
                .all(|w| self.moray.on_system_shard("manta", &w.key));
        if together {
            let mut all = ops.clone();
            all.extend(pending.iter().map(|w| moray::types::BatchOp::Put {
                bucket: "manta".into(),
                key: w.key.clone(),
                value: w.record.clone(),
                options: PutOptions::must_not_exist(),
            }));
            if self.moray.batch(all).await.is_ok() {
                return Ok(done.result.unwrap_or_default());
            }
        }
        for w in pending {
            let path = w.path.clone();
            let committed = match self.output_condition_at(&w.key, &path).await {
                Ok(cond) => self.commit_output(w, cond).await,
                Err(e) => {
                    self.remove_bytes(&w.object).await;
                    Err(anyhow!("{}", e.message))
                }
            };
            if let Err(e) = committed {
                warn!(error = %format!("{e:#}"), output = %path, "an output could not be committed; the task is lost");
                done.result = Some("lost".into());
                ops = vec![task_op(&done)];
                break;
            }
        }
        ops[0] = task_op(&done);
        self.store.batch(ops).await?;
        Ok(done.result.unwrap_or_default())
    }

    /// The condition an output's record is committed under: it replaces an object, never a
    /// directory (whose entries would be orphaned), and only the entry read here, so that a
    /// directory made meanwhile is not overwritten either.
    ///
    /// # Errors
    /// `OperationNotAllowedOnDirectory` (the task's own doing); `InternalError` when Moray
    /// cannot say.
    pub(crate) async fn output_condition(
        &self,
        job: &TaskJob,
        p: &MantaPath,
    ) -> std::result::Result<PutOptions, manta_types::MantaError> {
        self.output_condition_at(&p.storage_key(&job.job.owner), &p.to_string())
            .await
    }

    /// [`Agent::output_condition`] of the entry `key` (whose path is `p`, for messages).
    async fn output_condition_at(
        &self,
        key: &str,
        p: &str,
    ) -> std::result::Result<PutOptions, manta_types::MantaError> {
        use manta_types::{ErrorCode, MantaError};
        // The directory's count is read beside the entry (it matters only for a new one).
        let (entry, room) = tokio::join!(
            self.moray.get_object("manta", key),
            self.ensure_dir_room(key)
        );
        match entry {
            Ok(existing) => {
                let rec = MetadataRecord::from_value(existing.value)
                    .map_err(|e| MantaError::new(ErrorCode::InternalError, e.to_string()))?;
                if rec.is_directory() {
                    return Err(MantaError::new(
                        ErrorCode::OperationNotAllowedOnDirectory,
                        format!("{p} is a directory: an output cannot replace it"),
                    ));
                }
                Ok(PutOptions::if_match(existing.etag))
            }
            Err(moray::Error::ObjectNotFound { .. }) => {
                room?;
                Ok(PutOptions::must_not_exist())
            }
            Err(e) => Err(MantaError::new(
                ErrorCode::InternalError,
                format!("read the entry of {p}: {e}"),
            )),
        }
    }

    /// Stores `body` as the object `path` on this node (one copy) and commits its record under
    /// `cond` ([`Agent::output_condition`], which may be read while the bytes are written;
    /// when it fails, the bytes are removed again). A new entry is refused in a directory at the
    /// region's entry limit. When this node is fuller than placement allows (or has less room
    /// than the output's known length), the output goes through the front door instead, to
    /// whichever nodes it places it on.
    pub(crate) async fn store_output<S, E, C>(
        &self,
        job: &TaskJob,
        path: &str,
        body: S,
        len: Option<u64>,
        cond: C,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Sync + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
        C: std::future::Future<Output = Result<PutOptions>>,
    {
        match self.write_output(job, path, body, len, cond).await? {
            Some((w, cond)) => self.commit_output(w, cond).await,
            None => Ok(()),
        }
    }

    /// The first half of [`Agent::store_output`]: the bytes stored on this node and the record
    /// (with the condition it is to be committed under) still to commit; `None` when the
    /// output went through the front door, which committed it.
    async fn write_output<S, E, C>(
        &self,
        job: &TaskJob,
        path: &str,
        body: S,
        len: Option<u64>,
        cond: C,
    ) -> Result<Option<(Written, PutOptions)>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Sync + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
        C: std::future::Future<Output = Result<PutOptions>>,
    {
        let p = MantaPath::parse(path)?;
        let parent = p.parent().ok_or_else(|| anyhow!("{path} has no parent"))?;
        let parent_s = parent.to_string();
        let known = self
            .made_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&parent_s);
        if !known {
            job.fd
                .mkdirp(&parent_s)
                .await
                .with_context(|| format!("create {parent_s}"))?;
            self.made_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(parent_s);
        }
        let key = p.storage_key(&job.job.owner);
        if !self.has_room(len).await {
            self.metrics.inc(
                "jobs_agent_outputs_elsewhere_total",
                "Task outputs sent through the front door because this node was full.",
                &[],
            );
            let body = reqwest::Body::wrap_stream(body);
            let mut req = job
                .fd
                .request(reqwest::Method::PUT, path)
                .header("content-type", "application/octet-stream");
            if let Some(n) = len {
                req = req.header("content-length", n);
            }
            cond.await?;
            job.fd
                .send(req.body(body))
                .await
                .with_context(|| format!("store {path} through the front door"))?;
            return Ok(None);
        }
        let owner = uuid::Uuid::parse_str(&job.job.owner)?;
        let id = ObjectId::random();
        let object = ObjectKey { owner, id };
        // The condition is read while the bytes go to the node; bytes whose record may not be
        // written are removed again.
        let (d, cond) = tokio::join!(
            self.storage
                .put(&object, PutRequest::stream(body, len).compute_md5()),
            cond
        );
        let d = d.context("write the output to this storage node")?;
        let cond = match cond {
            Ok(c) => c,
            Err(e) => {
                self.remove_bytes(&object).await;
                return Err(e);
            }
        };
        let Some(md5) = d.md5_base64() else {
            self.remove_bytes(&object).await;
            anyhow::bail!("the storage node reported no MD5 for a task output");
        };
        let rec = MetadataRecord {
            version: manta_types::record::RECORD_VERSION,
            dirname: manta_types::path::dirname(&key).to_owned(),
            name: p.name().to_owned(),
            key: key.clone(),
            owner: job.job.owner.clone(),
            creator: job.job.owner.clone(),
            mtime: now_ms(),
            headers: Default::default(),
            roles: Vec::new(),
            kind: EntryKind::Object(ObjectInfo {
                content_length: d.size,
                content_md5: md5,
                content_type: "application/octet-stream".into(),
                content_disposition: None,
                etag: id.to_string(),
                object_id: id,
                sharks: vec![SharkRef {
                    datacenter: self.datacenter.clone(),
                    manta_storage_id: self.cfg.storage_id.clone(),
                }],
                created_from: None,
                sha256: d.sha256_hex(),
                crc32c: d.crc32c_hex(),
                parts: None,
            }),
            request_id: manta_util::http::current_request_id(),
            version_id: None,
        };
        let w = Written {
            path: path.to_owned(),
            key,
            record: rec.to_value(),
            object,
        };
        Ok(Some((w, cond)))
    }

    /// The second half of [`Agent::store_output`]: commits the record of `w` under `cond`;
    /// when it is refused, its bytes are removed.
    async fn commit_output(&self, w: Written, cond: PutOptions) -> Result<()> {
        match self.moray.put_object("manta", &w.key, w.record, cond).await {
            Ok(_) => Ok(()),
            Err(moray::Error::EtagConflict { .. }) => {
                // Refused for certain, so the bytes are nobody's. (After other failures the
                // record may have been written: the bytes stay.)
                self.remove_bytes(&w.object).await;
                Err(anyhow!("{} changed while the output was written", w.path))
            }
            Err(e) => Err(anyhow::Error::from(e).context("commit the output's metadata")),
        }
    }

    /// Removes the bytes of an output whose record was not committed (a failure only logged:
    /// what is left is unreferenced bytes, not a wrong answer).
    async fn remove_bytes(&self, object: &ObjectKey) {
        if let Err(gone) = self.storage.delete(object).await {
            warn!(error = %gone, "removing the bytes of an output not committed failed");
        }
    }

    /// Refuses a new entry in the directory of `key` when it holds the region's most entries.
    ///
    /// # Errors
    /// `DirectoryLimitExceeded`; `InternalError` when Moray cannot say.
    async fn ensure_dir_room(&self, key: &str) -> std::result::Result<(), manta_types::MantaError> {
        use manta_types::{ErrorCode, MantaError};
        let dir = manta_types::path::dirname(key);
        let entries = match self.moray.get_object("manta_directory_counts", dir).await {
            Ok(r) => r.value.get("entries").and_then(serde_json::Value::as_u64),
            Err(moray::Error::ObjectNotFound { .. }) => None,
            Err(e) => {
                return Err(MantaError::new(
                    ErrorCode::InternalError,
                    format!("count the entries of {dir}: {e}"),
                ));
            }
        };
        if entries.is_some_and(|n| n >= self.cfg.max_dirents) {
            return Err(MantaError::new(
                ErrorCode::DirectoryLimitExceeded,
                format!(
                    "an output's directory cannot exceed {} entries",
                    self.cfg.max_dirents
                ),
            ));
        }
        Ok(())
    }

    /// Whether this node may take an output of `len` bytes (when known): its heartbeat (read
    /// at most once a second) says it is no fuller than placement allows and has the room. A
    /// node whose heartbeat cannot be read is taken as having room (the write itself then
    /// says).
    async fn has_room(&self, len: Option<u64>) -> bool {
        let cached = *self.node_room.lock().unwrap_or_else(|p| p.into_inner());
        let (pct, free_mb) = match cached {
            Some((at, pct, free)) if at.elapsed() < Duration::from_secs(1) => (pct, free),
            _ => match self
                .moray
                .system()
                .get_object("manta_storage", &self.cfg.storage_id)
                .await
            {
                Ok(r) => {
                    let num = |k: &str| r.value.get(k).and_then(serde_json::Value::as_u64);
                    let (pct, free) = (num("percentUsed"), num("availableMB"));
                    *self.node_room.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((std::time::Instant::now(), pct, free));
                    (pct, free)
                }
                Err(e) => {
                    warn!(error = %e, "cannot read this node's heartbeat; storing the output here");
                    return true;
                }
            },
        };
        let full = pct.is_some_and(|p| p > u64::from(self.cfg.max_utilization_pct));
        let short = matches!((len, free_mb), (Some(n), Some(mb)) if n / (1024 * 1024) >= mb);
        !(full || short)
    }

    async fn store_file(&self, job: &TaskJob, path: &str, file: &Path) -> Result<()> {
        let p = MantaPath::parse(path)?;
        let cond = async {
            self.output_condition(job, &p)
                .await
                .map_err(|e| anyhow!("{}", e.message))
        };
        match self.write_file(job, path, file, cond).await? {
            Some((w, cond)) => self.commit_output(w, cond).await,
            None => Ok(()),
        }
    }

    /// [`Agent::write_output`] of a file.
    async fn write_file<C>(
        &self,
        job: &TaskJob,
        path: &str,
        file: &Path,
        cond: C,
    ) -> Result<Option<(Written, PutOptions)>>
    where
        C: std::future::Future<Output = Result<PutOptions>>,
    {
        let f = tokio::fs::File::open(file).await?;
        let len = f.metadata().await?.len();
        self.write_output(
            job,
            path,
            tokio_util::io::ReaderStream::new(f),
            Some(len),
            cond,
        )
        .await
    }

    /// Where this node keeps the bytes of the map input of `task`: where the supervisor found
    /// them when it dispatched the task, else (or when that copy is gone) as the input's
    /// record says now.
    async fn input_file(
        &self,
        job: &Job,
        task: &Task,
        path: &str,
    ) -> std::result::Result<Result<PathBuf>, Infra> {
        if let Some(o) = &task.input_object {
            if o.sharks.is_empty() {
                return Ok(Ok(PathBuf::new())); // zero bytes: nothing stored anywhere
            }
            let ids_valid = uuid::Uuid::parse_str(&o.creator).is_ok()
                && uuid::Uuid::parse_str(&o.object_id).is_ok();
            if ids_valid && o.sharks.contains(&self.cfg.storage_id) {
                let f = self.object_file(&o.creator, &o.object_id);
                if tokio::fs::metadata(&f).await.is_ok() {
                    return Ok(Ok(f));
                }
            }
        }
        let p = MantaPath::parse(path)?;
        let Some((bucket, key)) = records::input_record(&p, &job.owner) else {
            return Ok(Err(anyhow!("{path} is not an object")));
        };
        let rec = match self.moray.get_object(bucket, &key).await {
            Ok(r) => MetadataRecord::from_value(r.value)?,
            Err(moray::Error::ObjectNotFound { .. } | moray::Error::BucketNotFound { .. }) => {
                return Ok(Err(anyhow!("{path} was not found")));
            }
            Err(e) => return Err(e.into()),
        };
        if rec.owner != job.owner {
            return Ok(Err(anyhow!("{path} is not an object of the job's owner")));
        }
        let Some(o) = rec.object() else {
            return Ok(Err(anyhow!("{path} is a directory")));
        };
        if o.sharks.is_empty() {
            return Ok(Ok(PathBuf::new())); // zero bytes: nothing stored anywhere
        }
        if !o
            .sharks
            .iter()
            .any(|s| s.manta_storage_id == self.cfg.storage_id)
        {
            return Err(Infra(anyhow!(
                "{path} has no copy on {}",
                self.cfg.storage_id
            )));
        }
        let f = self.object_file(&rec.creator, &o.object_id.to_string());
        if tokio::fs::metadata(&f).await.is_err() {
            return Err(Infra(anyhow!(
                "the copy of {path} is missing at {}",
                f.display()
            )));
        }
        Ok(Ok(f))
    }

    /// Where this agent's internal endpoints are reached (`--advertise-url`, else its listen
    /// address when that names one host and port).
    fn url(&self) -> Option<String> {
        if let Some(u) = &self.cfg.advertise_url {
            return Some(u.clone());
        }
        let l = self.cfg.listen;
        if l.ip().is_unspecified() || l.port() == 0 {
            return None;
        }
        let scheme = if self.cfg.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{l}"))
    }

    /// The file of object `id` of `creator` on this node.
    fn object_file(&self, creator: &str, id: &str) -> PathBuf {
        self.cfg
            .dataset
            .join(storage_api::OBJECTS_DIR)
            .join(creator)
            .join(id)
    }

    fn error(task: &Task, server: &str, code: JobErrorCode, message: String) -> JobError {
        JobError {
            v: records::VERSION,
            job_id: task.job_id.clone(),
            task_id: Some(task.task_id.clone()),
            phase_num: task.phase,
            what: format!("phase {}: task", task.phase),
            code: code.as_str().to_owned(),
            message,
            input: task.input.clone(),
            p0input: Some(task.p0input.clone()),
            stderr: None,
            core: None,
            server: Some(server.to_owned()),
            time: now_ms(),
        }
    }

    /// The bytes one task of `job`'s `phase` may emit as outputs: the phase's disk, this
    /// agent's `--max-task-output`, and the owner's own limit (as it was when the job was
    /// made), whichever is least.
    /// A fresh control-socket state acting for `tj` in `phase` (a task, or an `mlogin`
    /// session).
    fn ctl_for(self: &Arc<Self>, tj: &Arc<TaskJob>, phase: &Phase) -> Arc<ctl::Ctl> {
        Arc::new(ctl::Ctl {
            agent: self.clone(),
            job: tj.clone(),
            record: Mutex::new(ctl::CtlRecord::default()),
            output_limit: self.output_limit(&tj.job, phase),
            emitted: Arc::default(),
        })
    }

    fn output_limit(&self, job: &Job, phase: &Phase) -> u64 {
        (phase.disk * 1024 * 1024 * 1024)
            .min(self.cfg.max_task_output)
            .min(job.task_output.unwrap_or(u64::MAX))
    }

    /// Runs the task. `Ok(None)`: cancelled. `Err(Infra)`: this node failed it.
    async fn execute(
        self: &Arc<Self>,
        task: &Task,
        dir: &Path,
        cancel: &CancellationToken,
    ) -> std::result::Result<Option<Finished>, Infra> {
        let step = std::time::Instant::now();
        let (tj, phase) = self.task_job(task).await?;
        let d = dir.to_owned();
        manta_util::blocking(move || std::fs::create_dir_all(&d)).await?;
        let failed = |(code, msg)| {
            Ok(Some(Finished::failed(Self::error(
                task,
                &self.cfg.storage_id,
                code,
                msg,
            ))))
        };
        let input_file = match self.task_input(&tj.job, &phase, task, dir).await? {
            Ok(f) => f,
            Err(e) => return failed(e),
        };
        let mut warm = match self.container(&tj, &phase, task, Vec::new()).await? {
            Ok(w) => w,
            Err(e) => return failed(e),
        };
        // What the container's control socket learns while it acts for this task.
        let ctl_state = self.ctl_for(&tj, &phase);
        let step = self.took("prepare", step);
        let run = self
            .run_in(
                &mut warm,
                &tj,
                &phase,
                task,
                dir,
                input_file.as_deref(),
                ctl_state.clone(),
                cancel,
            )
            .await;
        warm.ctl.stop().await;
        let (end, fed) = match run {
            Ok(r) => r,
            Err(e) => {
                self.retire(warm, false);
                return Err(e);
            }
        };
        let step = self.took("run", step);
        let rec = std::mem::take(&mut *ctl_state.record.lock().unwrap_or_else(|p| p.into_inner()));
        // Only a container whose task ended well runs another.
        let clean = matches!(&end, End::Reported(s)
            if s.code == Some(0) && s.oom_kills == 0 && s.init_failed.is_none());
        let log = warm.dir.join("runtime.log");
        let concluded = self
            .conclude(&tj, &phase, task, dir, &log, end, fed, rec)
            .await;
        self.retire(warm, clean && matches!(&concluded, Ok(Some(f)) if f.ok));
        self.took("conclude", step);
        concluded
    }

    /// A container for `task`: an idle one of its job and phase, else a new one (with the
    /// phase's assets fetched into it). The job error when an asset cannot be fetched.
    async fn container(
        self: &Arc<Self>,
        tj: &TaskJob,
        phase: &Phase,
        task: &Task,
        extra_binds: Vec<container::Bind>,
    ) -> std::result::Result<std::result::Result<warm::Warm, (JobErrorCode, String)>, Infra> {
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.iter()
                .position(|w| w.job_id == task.job_id && w.phase == task.phase)
                .map(|i| idle.swap_remove(i))
        };
        let how = if found.is_some() { "reused" } else { "started" };
        self.metrics.inc(
            "jobs_agent_containers_total",
            "Containers a task ran in: started for it, or reused after an earlier task of its \
             job and phase.",
            &[("how", how)],
        );
        if let Some(w) = found {
            return Ok(Ok(w));
        }
        // Busy and idle containers together stay within the slots: idle ones of other jobs
        // and phases make room, the longest idle first.
        let busy = self.running.lock().unwrap_or_else(|p| p.into_inner()).len();
        let mut oldest: Vec<Instant> = {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.iter().map(|w| w.idle_since).collect()
        };
        oldest.sort();
        // (Busy may exceed the slots, reducers having slots of their own: then every idle one
        // goes.)
        let over = (oldest.len() + busy)
            .saturating_sub(self.cfg.slots)
            .min(oldest.len());
        if over > 0 {
            let last = oldest[over - 1];
            self.end_idle(|w| w.idle_since <= last);
        }

        let dir = self.cfg.work_dir.join("containers").join(container_id());
        let assets = dir.join("assets");
        tokio::fs::create_dir_all(&assets)
            .await
            .map_err(Infra::from)?;
        // Assets: fetched once per container, all of them together no larger than the phase's
        // disk.
        let image = match &phase.image {
            None => None,
            Some(name) => {
                let found = match (
                    &self.loader,
                    image_path(name, self.cfg.image_registry.as_deref()),
                ) {
                    (_, Err(msg)) => Ok(Err(msg)),
                    (Some(_), Ok(path)) => self.images.root(&tj.fd, &path).await,
                    (None, Ok(_)) => Ok(Err(
                        "this agent's tools are statically linked; it runs no images".to_owned(),
                    )),
                };
                match found {
                    Ok(Ok(root)) => Some(root),
                    other => {
                        let d = dir.clone();
                        let _ = manta_util::blocking(move || std::fs::remove_dir_all(&d)).await;
                        return match other {
                            Ok(Err(msg)) => Ok(Err((JobErrorCode::TaskInit, msg))),
                            Err(e) => Err(Infra(e)),
                            Ok(Ok(_)) => unreachable!("handled above"),
                        };
                    }
                }
            }
        };
        let mut room = phase.disk * 1024 * 1024 * 1024;
        for a in &phase.assets {
            let dest = assets.join(a.trim_start_matches('/'));
            match fetch(&tj.fd, a, &dest, room).await {
                Ok(n) => room -= n,
                Err(e) => {
                    let d = dir.clone();
                    let _ = manta_util::blocking(move || std::fs::remove_dir_all(&d)).await;
                    let e = match e.downcast_ref::<TooBig>() {
                        Some(_) => anyhow!("the phase's assets exceed its disk"),
                        None => e,
                    };
                    return Ok(Err((JobErrorCode::TaskInit, format!("asset {a}: {e:#}"))));
                }
            }
        }
        // In an image the tools run through the host's loader and libraries, copied beside
        // them; on the host's own /usr they run as they are.
        let (tools, mut args) = match (&image, &self.loader) {
            (Some(_), Some(l)) => (
                "tools-image",
                vec![
                    format!("/opt/manta/lib/{l}"),
                    "--library-path".into(),
                    "/opt/manta/lib".into(),
                ],
            ),
            _ => ("tools", Vec::new()),
        };
        args.extend(["/opt/manta/bin/jobs-tool".to_owned(), "lackey".to_owned()]);
        let mut binds = vec![container::Bind {
            source: self.cfg.work_dir.join(tools),
            dest: "/opt/manta/bin".into(),
            rw: false,
        }];
        binds.extend(extra_binds);
        if image.is_some() {
            binds.push(container::Bind {
                source: self.cfg.work_dir.join("tools-lib"),
                dest: "/opt/manta/lib".into(),
                rw: false,
            });
        }
        if !phase.assets.is_empty() {
            binds.push(container::Bind {
                source: assets,
                dest: "/assets".into(),
                rw: false,
            });
        }
        let spec = container::Spec {
            root: image
                .as_ref()
                .map_or_else(|| self.cfg.work_dir.join("rootfs"), |i| i.rootfs.clone()),
            host_usr_etc: image.is_none(),
            args,
            env: vec![format!("PATH={TASK_PATH}"), "LANG=C".into()],
            binds,
            memory: phase.memory * 1024 * 1024,
            disk: phase.disk * 1024 * 1024 * 1024,
            pids: self.cfg.pids_limit,
            uid_base: self.cfg.uid_base,
            hostname: "task".into(),
        };
        match warm::Warm::start(&self.cfg, &task.job_id, task.phase, dir.clone(), spec).await {
            Ok(mut w) => {
                w.image = image;
                Ok(Ok(w))
            }
            Err(e) => {
                let _ = manta_util::blocking(move || std::fs::remove_dir_all(&dir)).await;
                Err(Infra(e))
            }
        }
    }

    /// After a task: a container that may run another waits for it; any other is ended.
    fn retire(self: &Arc<Self>, mut w: warm::Warm, keep: bool) {
        if keep {
            w.ran += 1;
            w.idle_since = Instant::now();
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(w);
        } else {
            self.end_container(w);
        }
    }

    /// Hands `task` to the container and waits for it to end (its report, its time limit or
    /// cancellation), feeding a reducer its inputs on stdin meanwhile. Hands back how it ended
    /// and how feeding went.
    #[allow(clippy::too_many_arguments)]
    async fn run_in(
        &self,
        warm: &mut warm::Warm,
        tj: &TaskJob,
        phase: &Phase,
        task: &Task,
        dir: &Path,
        input_file: Option<&Path>,
        ctl_state: Arc<ctl::Ctl>,
        cancel: &CancellationToken,
    ) -> std::result::Result<(End, Result<()>), Infra> {
        use std::os::fd::OwnedFd;
        // The task's stdin: its input object, a pipe its inputs are fed into (a reducer), or
        // nothing. Its stdout and stderr go straight to files here; the container's file size
        // limit holds for them, as for any file the task writes.
        let open = |f: PathBuf| async move {
            Ok::<OwnedFd, Infra>(tokio::fs::File::open(f).await?.into_std().await.into())
        };
        let create = |f: PathBuf| async move {
            Ok::<OwnedFd, Infra>(tokio::fs::File::create(f).await?.into_std().await.into())
        };
        let (stdin, feed) = match input_file {
            Some(f) => (open(f.to_owned()).await?, None),
            None if phase.kind == PhaseType::Reduce => {
                let (tx, rx) = tokio::net::unix::pipe::pipe().map_err(Infra::from)?;
                (rx.into_blocking_fd().map_err(Infra::from)?, Some(tx))
            }
            None => (open("/dev/null".into()).await?, None),
        };
        let stdout = create(dir.join("stdout")).await?;
        let stderr = create(dir.join("stderr")).await?;
        let order = TaskOrder {
            env: task_env(&tj.job, phase, task, &tj.base, tj.next_reducers),
            init: if warm.ran == 0 {
                phase.init.clone()
            } else {
                None
            },
            input: input_file
                .and(task.input.as_ref())
                .map(|i| format!("/manta{i}")),
            core_to: Some(format!(
                "/{}/jobs/{}/stor/cores/{}/core.{}",
                tj.job.login, tj.job.job_id, task.phase, task.task_id
            )),
        };
        warm.ctl.start(ctl_state);
        let started = std::time::Instant::now();
        warm.send(&order, [stdin, stdout, stderr])
            .await
            .map_err(Infra)?;
        // A reducer's time limit counts from the end of its input: until then it waits on the
        // phases before it, not on itself.
        let (ended_tx, mut ended_rx) = tokio::sync::oneshot::channel();
        let mut input_open = feed.is_some();
        let feeder = feed.map(|w| {
            tokio::spawn(feed_reducer(
                self.store.clone(),
                tj.fd.clone(),
                task.clone(),
                w,
                ended_tx,
            ))
        });
        let limit = tokio::time::sleep(self.cfg.task_timeout);
        tokio::pin!(limit);
        let report = warm.report();
        tokio::pin!(report);
        let end = loop {
            tokio::select! {
                r = &mut report => break match r.map_err(Infra)? {
                    warm::Ran::Reported(s) => {
                        self.metrics.observe(
                            "jobs_agent_task_step_seconds",
                            STEP_HELP,
                            &[("step", "command")],
                            Duration::from_micros(s.micros).as_secs_f64(),
                        );
                        End::Reported(s)
                    }
                    warm::Ran::Died(st) => End::Died(st),
                },
                r = &mut ended_rx, if input_open => {
                    input_open = false;
                    if r.is_ok() {
                        limit
                            .as_mut()
                            .reset(tokio::time::Instant::now() + self.cfg.task_timeout);
                    }
                }
                () = &mut limit => break End::TimedOut,
                () = cancel.cancelled() => break End::Cancelled,
            }
        };
        self.metrics.observe(
            "jobs_agent_task_seconds",
            "Run time of tasks in their containers.",
            &[],
            started.elapsed().as_secs_f64(),
        );
        let fed = match feeder {
            Some(f) if matches!(end, End::Reported(_) | End::Died(_)) => {
                f.await.map_err(Infra::from)?
            }
            Some(f) => {
                f.abort();
                Ok(())
            }
            None => Ok(()),
        };
        Ok((end, fed))
    }

    /// Records how long step `name` of a task took (since `since`); the time it ended.
    fn took(&self, name: &str, since: std::time::Instant) -> std::time::Instant {
        self.metrics.observe(
            "jobs_agent_task_step_seconds",
            STEP_HELP,
            &[("step", name)],
            since.elapsed().as_secs_f64(),
        );
        std::time::Instant::now()
    }

    /// The task's job, its phase, and where its output goes.
    async fn task_job(&self, task: &Task) -> std::result::Result<(Arc<TaskJob>, Phase), Infra> {
        let job = self
            .job(&task.job_id)
            .await?
            .ok_or_else(|| anyhow!("job {} not found", task.job_id))?;
        let phase = job
            .phases
            .get(task.phase as usize)
            .cloned()
            .ok_or_else(|| anyhow!("job has no phase {}", task.phase))?;
        let next_reducers = job
            .phases
            .get(task.phase as usize + 1)
            .filter(|p| p.kind == PhaseType::Reduce)
            .map(|p| p.reducers());
        let p0 = if phase.kind == PhaseType::Reduce {
            "reduce".to_owned()
        } else {
            task.p0input.trim_start_matches('/').to_owned()
        };
        let base = format!(
            "/{}/jobs/{}/stor/{p0}.{}.{}",
            job.login, job.job_id, task.phase, task.task_id
        );
        let tj = Arc::new(TaskJob {
            fd: FdClient::new(self.http.clone(), &self.cfg.frontdoor_url, &job.token),
            job,
            base,
            next_reducers,
        });
        Ok((tj, phase))
    }

    /// Judges a run: its outputs (stdout saved as one when the task used no tools) on success,
    /// or the job error, with the task's stderr saved, on failure. A failure of this node
    /// (feeding the reducer, storing outputs) is an `Infra` error instead.
    #[allow(clippy::too_many_arguments)]
    async fn conclude(
        &self,
        tj: &TaskJob,
        phase: &Phase,
        task: &Task,
        dir: &Path,
        runtime_log: &Path,
        end: End,
        fed: Result<()>,
        rec: ctl::CtlRecord,
    ) -> std::result::Result<Option<Finished>, Infra> {
        use std::os::unix::process::ExitStatusExt as _;
        let (lackey, status) = match end {
            End::Cancelled => return Ok(None),
            End::TimedOut => {
                let mut e = Self::error(
                    task,
                    &self.cfg.storage_id,
                    JobErrorCode::TaskKilled,
                    format!(
                        "task exceeded its time limit of {} and was killed",
                        humantime::format_duration(self.cfg.task_timeout)
                    ),
                );
                e.stderr = self.save_stderr(tj, task, dir).await;
                return Ok(Some(Finished::failed(e)));
            }
            End::Reported(s) => (Some(s), std::process::ExitStatus::from_raw(0)),
            End::Died(st) => (None, st),
        };
        if let Err(e) = fed {
            // Reading the previous phase's outputs failed: not the user's doing.
            return Err(Infra(e.context("feed the reducer")));
        }
        let file_mb = phase.disk * 1024 / 2;
        let mut failure =
            verdict(lackey.as_ref(), status, phase.memory, file_mb, runtime_log).await?;
        if let Some(msg) = &rec.over_limit {
            failure = Some((JobErrorCode::UserTask, msg.clone()));
        }
        // A stdout or stderr cut at the file size limit is incomplete, even when the command
        // carried on and exited 0.
        for name in ["stdout", "stderr"] {
            let len = tokio::fs::metadata(dir.join(name))
                .await
                .map_or(0, |m| m.len());
            if len >= file_mb * 1024 * 1024 {
                failure = Some(file_too_big(file_mb));
            }
        }
        if !rec.failures.is_empty() {
            return Err(Infra(anyhow!("{}", rec.failures.join("; "))));
        }
        // A stdout that becomes the task's output counts against its output limit too.
        let limit = self.output_limit(&tj.job, phase);
        if failure.is_none() && !rec.tools_used {
            let len = tokio::fs::metadata(dir.join("stdout"))
                .await
                .map_or(0, |m| m.len());
            if len > limit {
                failure = Some((
                    JobErrorCode::UserTask,
                    format!("the task's outputs exceed {limit} bytes (its stdout is {len})"),
                ));
            }
        }
        match failure {
            None => {
                let mut outputs = rec.outputs;
                let mut pending = Vec::new();
                if !rec.tools_used {
                    // The stdout's name holds the task's id, so its entry is taken to be new
                    // (only the directory's room is read): the record is committed with the
                    // task's result, and should the entry exist after all, under the
                    // condition read then.
                    let key = MantaPath::parse(&tj.base)
                        .map_err(|e| Infra(e.into()))?
                        .storage_key(&tj.job.owner);
                    let cond = async {
                        self.ensure_dir_room(&key)
                            .await
                            .map(|()| PutOptions::must_not_exist())
                            .map_err(|e| anyhow!("{}", e.message))
                    };
                    if let Some((w, _)) = self
                        .write_file(tj, &tj.base, &dir.join("stdout"), cond)
                        .await
                        .map_err(Infra)?
                    {
                        pending.push(w);
                    }
                    outputs.push(ctl::Output {
                        path: tj.base.clone(),
                        r_idx: None,
                    });
                }
                Ok(Some(Finished {
                    ok: true,
                    outputs,
                    pending,
                    error: None,
                }))
            }
            Some((code, mut message)) => {
                let core = lackey.and_then(|l| l.core);
                if let Some(c) = &core {
                    message = format!("{message}; it dumped core, saved at {c}");
                }
                let mut e = Self::error(task, &self.cfg.storage_id, code, message);
                e.stderr = self.save_stderr(tj, task, dir).await;
                e.core = core;
                Ok(Some(Finished {
                    ok: false,
                    outputs: rec.outputs,
                    pending: Vec::new(),
                    error: Some(e),
                }))
            }
        }
    }

    /// The file a map task reads on stdin and at `/manta/<path>`: its input object's file on
    /// this node (made readable by tasks), or an empty file for an empty object; nothing for
    /// other tasks. The job error when the input is gone.
    async fn task_input(
        &self,
        job: &Job,
        phase: &Phase,
        task: &Task,
        dir: &Path,
    ) -> std::result::Result<std::result::Result<Option<PathBuf>, (JobErrorCode, String)>, Infra>
    {
        let (PhaseType::Map, Some(input)) = (&phase.kind, &task.input) else {
            return Ok(Ok(None));
        };
        match self.input_file(job, task, input).await? {
            Ok(f) if f.as_os_str().is_empty() => {
                let empty = dir.join("empty");
                tokio::fs::write(&empty, b"").await.map_err(Infra::from)?;
                Ok(Ok(Some(empty)))
            }
            Ok(f) => {
                let gid = self.cfg.uid_base;
                let g = f.clone();
                manta_util::blocking(move || readable_by_tasks(&g, gid))
                    .await
                    .map_err(Infra::from)?;
                Ok(Ok(Some(f)))
            }
            Err(e) => Ok(Err((JobErrorCode::ResourceNotFound, e.to_string()))),
        }
    }

    async fn save_stderr(&self, tj: &TaskJob, task: &Task, dir: &Path) -> Option<String> {
        let path = tj.base.replacen(
            &format!(".{}.{}", task.phase, task.task_id),
            &format!(".{}.err.{}", task.phase, task.task_id),
            1,
        );
        match self.store_file(tj, &path, &dir.join("stderr")).await {
            Ok(()) => Some(path),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "saving a failed task's stderr failed");
                None
            }
        }
    }
}

/// Downloads `path` to `dest` through the front door, at most `room` bytes; answers its size.
async fn fetch(fd: &FdClient, path: &str, dest: &Path, room: u64) -> Result<u64> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let too_big = || anyhow::Error::new(TooBig(room));
    if let Some(p) = dest.parent() {
        tokio::fs::create_dir_all(p).await?;
    }
    let resp = fd.get(path).await?;
    if resp.content_length().is_some_and(|n| n > room) {
        return Err(too_big());
    }
    let mut f = tokio::fs::File::create(dest).await?;
    let mut s = resp.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = s.next().await {
        let chunk = chunk?;
        got += chunk.len() as u64;
        if got > room {
            return Err(too_big());
        }
        f.write_all(&chunk).await?;
    }
    f.flush().await?;
    Ok(got)
}

/// The object path of a phase's `image`: a path as it is; a name is an object in the region's
/// registry directory (`--image-registry`), or why it cannot be resolved.
fn image_path(image: &str, registry: Option<&str>) -> std::result::Result<String, String> {
    if image.starts_with('/') {
        return Ok(image.to_owned());
    }
    if image.is_empty() || image.contains('/') || image.starts_with('.') {
        return Err(format!(
            "image {image:?} is neither an object path nor an image name"
        ));
    }
    match registry {
        Some(r) => Ok(format!("{}/{image}", r.trim_end_matches('/'))),
        None => Err(format!(
            "image {image:?}: this region has no image registry (name the image's object \
             path instead, /LOGIN/stor/...)"
        )),
    }
}

/// A fetched object would pass its room (the bytes it was allowed).
#[derive(Debug)]
pub(crate) struct TooBig(pub u64);

impl std::fmt::Display for TooBig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than the {} bytes it may have", self.0)
    }
}

impl std::error::Error for TooBig {}

/// Lets this agent's tasks read an object file bound into their containers: its group becomes
/// the tasks' root group (host gid `gid`, which no host user holds) with read access (0640).
/// The storage node keeps object files 0600 in a 0700 dataset, so no local user reads them;
/// the file is reached only through the task's read-only bind mount. Objects never change in
/// place, so this is done once per file. Blocking.
fn readable_by_tasks(file: &Path, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    if !manta_util::proc::is_root() {
        return Ok(()); // cannot give the file away: only this user's own files are readable
    }
    let m = std::fs::metadata(file)?;
    if m.gid() != gid {
        std::os::unix::fs::chown(file, None, Some(gid))?;
    }
    if m.mode() & 0o777 != 0o640 {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o640))?;
    }
    Ok(())
}

/// Streams the reducer's inputs into its stdin as they are routed to it, in the order they were
/// written, while its phase runs: it ends the reducer's input once the supervisor counts the
/// phase's input complete (`phases_input_done`), and says so on `ended`. Polls at most every
/// [`FEED_POLL`], less often while nothing comes.
async fn feed_reducer(
    store: JobStore,
    fd: FdClient,
    task: Task,
    mut w: tokio::net::unix::pipe::Sender,
    ended: tokio::sync::oneshot::Sender<()>,
) -> Result<()> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let filter = |after: i64| {
        format!(
            "(&(jobId={})(toPhase={})(rIdx={})(state={})(_id>={}))",
            esc(&task.job_id),
            task.phase,
            task.r_idx.unwrap_or(0),
            item_state::DONE,
            after + 1
        )
    };
    // An input is routed to its reducer by a write, and every write takes a larger id than
    // the last: each poll reads only what was routed since the one before. (Ids are taken
    // before commit, so one write may show up after a later one: the last pass, once the input
    // is complete, reads them all again and feeds what was missed.)
    let mut after = 0;
    let mut fed = HashSet::new();
    let mut wait = FEED_POLL;
    loop {
        // Read whether the input is complete before the items: items routed before the
        // supervisor counted the phase are then all found by this pass.
        let complete = match store.get::<Job>(JOBS, &task.job_id).await? {
            Some(j) => j.value.phases_input_done > task.phase || j.value.cancelled,
            None => true,
        };
        let since = if complete { 0 } else { after };
        let items = store.find_all::<Item>(ITEMS, &filter(since)).await?;
        let mut any = false;
        for it in items {
            after = after.max(it.id);
            if !fed.insert(it.key) {
                continue;
            }
            any = true;
            let resp = fd.get(&it.value.path).await?;
            let mut s = resp.bytes_stream();
            while let Some(chunk) = s.next().await {
                if w.write_all(&chunk?).await.is_err() {
                    // The reducer stopped reading (it may not need all its input).
                    return Ok(());
                }
            }
        }
        if complete {
            w.shutdown().await.ok();
            let _ = ended.send(());
            return Ok(());
        }
        wait = if any {
            FEED_POLL
        } else {
            (wait * 2).min(FEED_POLL * 8)
        };
        tokio::time::sleep(wait).await;
    }
}

/// How often a running reducer looks for new input, at most.
const FEED_POLL: Duration = Duration::from_millis(100);

/// The environment of a task's container: where the tools are, who and what the task is
/// (`MANTA_USER`, `MANTA_JOB_ID`, `MANTA_PHASE`, `MANTA_INPUT_OBJECT`/`_FILE`, `MANTA_REDUCER`,
/// `MANTA_NEXT_REDUCERS`), where its outputs go, the commands `lackey` runs, and the socket the
/// in-container tools reach the store through.
fn task_env(
    job: &Job,
    phase: &Phase,
    task: &Task,
    base: &str,
    next_reducers: Option<u64>,
) -> Vec<(String, String)> {
    let mut env: Vec<(&str, String)> = vec![
        ("PATH", TASK_PATH.to_owned()),
        ("HOME", "/root".to_owned()),
        ("LANG", "C".to_owned()),
        ("MANTA_USER", job.login.clone()),
        ("MANTA_JOB_ID", job.job_id.clone()),
        ("MANTA_OUTPUT_BASE", base.to_owned()),
        ("MANTA_EXEC", phase.exec.clone()),
        ("MANTA_INIT", phase.init.clone().unwrap_or_default()),
        (crate::tools::SOCKET_ENV, "/manta-agent/sock".to_owned()),
        ("MANTA_NO_AUTH", "true".to_owned()),
        (
            "MANTA_URL",
            format!("http://{}", crate::tools::STORE_LISTEN),
        ),
        ("MANTA_PHASE", task.phase.to_string()),
    ];
    if let Some(n) = next_reducers {
        env.push(("MANTA_NEXT_REDUCERS", n.to_string()));
    }
    if let Some(input) = &task.input {
        env.push(("MANTA_INPUT_OBJECT", input.clone()));
        env.push(("MANTA_INPUT_FILE", format!("/manta{input}")));
    }
    if let Some(r) = task.r_idx {
        env.push(("MANTA_REDUCER", r.to_string()));
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Where a task's shell looks for commands: the tools first.
const TASK_PATH: &str = "/opt/manta/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

/// A new container's id: 64 random bits, short enough that its sockets' paths fit under a
/// deep work directory.
fn container_id() -> String {
    format!("mj-{:016x}", uuid::Uuid::new_v4().as_u64_pair().0)
}

/// What a finished task means: `None` when it succeeded, else the job error code and message
/// for the user. `lackey` is what the container's first process reported (nothing when it
/// could not: the container ended first), `status` how the runtime ended then, `memory_mb` the
/// phase's memory limit, `runtime_log` what the runtime said. A container that never started is
/// not the user's failure: that is an infrastructure error, retried elsewhere.
async fn verdict(
    lackey: Option<&LackeyStatus>,
    status: std::process::ExitStatus,
    memory_mb: u64,
    file_mb: u64,
    runtime_log: &Path,
) -> Result<Option<(JobErrorCode, String)>, Infra> {
    // SIGXFSZ: a write past the largest file a task may write (its stdout, its stderr, a file
    // in /tmp); a shell reports it as 128 + 25.
    let too_big = || Some(file_too_big(file_mb));
    Ok(match lackey {
        Some(LackeyStatus {
            init_failed: Some(c),
            ..
        }) => Some((
            JobErrorCode::TaskInit,
            format!("user command \"init\" exited with code {c}"),
        )),
        // A process killed at the memory limit fails the task even when the command carried
        // on: its output is likely incomplete.
        Some(s) if s.oom_kills > 0 => Some((
            JobErrorCode::UserTask,
            format!("user command ran out of memory (limit {memory_mb} MB): a process was killed"),
        )),
        Some(s) if s.code == Some(0) && status.success() => None,
        Some(LackeyStatus {
            signal: Some(25), ..
        })
        | Some(LackeyStatus {
            code: Some(153), ..
        }) => too_big(),
        Some(LackeyStatus {
            signal: Some(sig), ..
        }) => Some((
            JobErrorCode::UserTask,
            format!("user command was killed by signal {sig}"),
        )),
        Some(LackeyStatus { code: Some(c), .. }) => Some((
            JobErrorCode::UserTask,
            format!("user command exited with code {c}"),
        )),
        _ => {
            let err_text = tokio::fs::read_to_string(runtime_log)
                .await
                .unwrap_or_default();
            if err_text.contains("runc run failed") || err_text.contains("container_linux.go") {
                return Err(Infra(anyhow!(
                    "the container did not start: {}",
                    err_text.trim()
                )));
            }
            // Lackey itself was killed (the memory limit is the usual cause).
            Some((
                JobErrorCode::UserTask,
                match status.code() {
                    Some(137) => format!(
                        "task was killed (SIGKILL); it probably exceeded its memory limit of {memory_mb} MB"
                    ),
                    Some(c) => format!("task exited with code {c}"),
                    None => "task was killed".to_owned(),
                },
            ))
        }
    })
}

/// The failure of a task that wrote a file past the limit of `file_mb`.
fn file_too_big(file_mb: u64) -> (JobErrorCode, String) {
    (
        JobErrorCode::UserTask,
        format!(
            "user command wrote a file past the limit of {file_mb} MB (half the phase's disk; \
             stdout and stderr are files) and was stopped (SIGXFSZ)"
        ),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    fn exited(code: i32) -> std::process::ExitStatus {
        std::process::ExitStatus::from_raw(code << 8)
    }

    fn lackey(code: Option<i32>, signal: Option<i32>) -> LackeyStatus {
        LackeyStatus {
            init_failed: None,
            code,
            signal,
            oom_kills: 0,
            core: None,
            micros: 0,
        }
    }

    async fn judge(
        l: Option<&LackeyStatus>,
        st: i32,
        stderr: &str,
    ) -> Option<(JobErrorCode, String)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr");
        std::fs::write(&path, stderr).unwrap();
        verdict(l, exited(st), 256, 4096, &path)
            .await
            .unwrap_or_else(|Infra(e)| panic!("infrastructure: {e}"))
    }

    #[test]
    fn a_task_sees_who_and_what_it_is_in_its_environment() {
        let spec = crate::spec::parse(
            br#"{"phases":[{"exec":"wc -l","init":"true"},{"type":"reduce","exec":"cat","count":2}]}"#,
        )
        .unwrap();
        let job: Job = serde_json::from_value(serde_json::json!({
            "v": 1, "jobId": "j1", "name": "", "owner": "u1", "login": "jill",
            "phases": spec.phases, "token": "t", "state": "running", "cancelled": false,
            "inputDone": false, "timeCreated": "2026-01-01T00:00:00.000Z",
        }))
        .unwrap();
        let task: Task = serde_json::from_value(serde_json::json!({
            "v": 1, "taskId": "t1", "jobId": "j1", "phase": 0, "input": "/jill/stor/a b",
            "p0input": "/jill/stor/a b", "server": "1.stor", "attempt": 1,
            "state": "running", "timeDispatched": 0,
        }))
        .unwrap();
        let env = task_env(
            &job,
            &job.phases[0],
            &task,
            "/jill/jobs/j1/stor/out",
            Some(2),
        )
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>();
        for want in [
            "MANTA_USER=jill",
            "MANTA_JOB_ID=j1",
            "MANTA_PHASE=0",
            "MANTA_EXEC=wc -l",
            "MANTA_INIT=true",
            "MANTA_OUTPUT_BASE=/jill/jobs/j1/stor/out",
            "MANTA_NEXT_REDUCERS=2",
            "MANTA_INPUT_OBJECT=/jill/stor/a b",
            "MANTA_INPUT_FILE=/manta/jill/stor/a b",
            "MANTA_NO_AUTH=true",
        ] {
            assert!(env.iter().any(|e| e == want), "{want} missing from {env:?}");
        }
        assert!(
            !env.iter().any(|e| e.starts_with("MANTA_REDUCER=")),
            "{env:?}"
        );
    }

    #[tokio::test]
    async fn a_clean_exit_is_a_success() {
        assert_eq!(judge(Some(&lackey(Some(0), None)), 0, "").await, None);
    }

    #[tokio::test]
    async fn user_failures_are_the_users_with_the_reason() {
        let (code, msg) = judge(Some(&lackey(Some(3), None)), 0, "").await.unwrap();
        assert_eq!(
            (code, msg.as_str()),
            (JobErrorCode::UserTask, "user command exited with code 3")
        );
        let (code, msg) = judge(Some(&lackey(None, Some(9))), 0, "").await.unwrap();
        assert_eq!(
            (code, msg.as_str()),
            (
                JobErrorCode::UserTask,
                "user command was killed by signal 9"
            )
        );
        let init = LackeyStatus {
            init_failed: Some(2),
            ..lackey(None, None)
        };
        let (code, _) = judge(Some(&init), 0, "").await.unwrap();
        assert_eq!(code, JobErrorCode::TaskInit);
        // Out of memory fails the task even when the command itself exited 0.
        let oom = LackeyStatus {
            oom_kills: 1,
            ..lackey(Some(0), None)
        };
        let (code, msg) = judge(Some(&oom), 0, "").await.unwrap();
        assert_eq!(code, JobErrorCode::UserTask);
        assert!(msg.contains("out of memory (limit 256 MB)"), "{msg}");
        // No report from inside: killed from outside, probably at the memory limit.
        let (code, msg) = judge(None, 137, "").await.unwrap();
        assert_eq!(code, JobErrorCode::UserTask);
        assert!(msg.contains("memory limit of 256 MB"), "{msg}");
    }

    #[tokio::test]
    async fn a_container_that_never_started_is_an_infrastructure_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr");
        std::fs::write(&path, "time=... level=error msg=\"runc run failed: ...\"").unwrap();
        let r = verdict(None, exited(1), 256, 4096, &path).await;
        assert!(matches!(r, Err(Infra(_))), "{:?}", r.map_err(|Infra(e)| e));
    }
}
