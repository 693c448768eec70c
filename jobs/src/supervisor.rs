//! The supervisor: one leader (elected through etcd) drives every running job from the records
//! in Moray.
//!
//! Each pass over a running job:
//! 1. turns new items into work: a map input becomes a task for the agent of a node that holds
//!    a copy (a live agent, one not already failed for this task); a reduce input is assigned
//!    to its reducer (`mpipe -r`, else a hash of its path);
//! 2. finds tasks whose agent is gone (stale heartbeat, or a newer agent generation) and
//!    dispatches them again on another copy, up to `max_attempts` in all; user failures are
//!    never retried;
//! 3. dispatches a reduce phase's reducers as soon as its upstream has begun (they read their
//!    inputs as they are committed), and records which phases have all their input (a reducer
//!    ends its input then);
//! 4. when the last phase is complete (or the job was cancelled) marks the job done, then
//!    archives it (`job.json`, `in.txt`, `out.txt`, `err.txt`, `fail.txt` under
//!    `/:login/jobs/<id>/`) through the front door with the job's token.
//!
//! Every change is a conditional write (or one batch of them), so a supervisor that loses its
//! lease mid-pass and a new leader can never both apply the same step.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use manta_types::{JobErrorCode, MantaPath, MetadataRecord};
use moray::ShardedClient;
use moray::types::PutOptions;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::JobsApi;
use crate::fdclient::FdClient;
use crate::records::{
    self, AGENTS, AgentBeat, ERRORS, ITEMS, InputObject, Item, JOBS, Job, JobError, JobStore,
    Stored, TASKS, Task, esc, item_state, job_state, now_iso, now_ms, put_op, task_state,
};
use crate::spec::PhaseType;

/// The supervisor's configuration.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Address for `/ping` and `/metrics`.
    pub listen: SocketAddr,
    /// Moray (one shard URL).
    pub moray_url: String,
    /// etcd endpoints for the election.
    pub etcd: Vec<String>,
    /// The front door (for archiving).
    pub frontdoor_url: String,
    /// This instance's name in the election.
    pub name: String,
    /// How often each job is looked at.
    pub poll: Duration,
    /// An agent whose heartbeat is older than this is gone.
    pub agent_timeout: Duration,
    /// Lease of the leadership, seconds (a dead leader is replaced after about this long).
    pub lease_ttl: i64,
    /// Attempts per task on infrastructure failures.
    pub max_attempts: u32,
    /// Tasks one account may have dispatched or running at once over all its jobs, unless
    /// its own limits say otherwise; the rest of its inputs wait their turn.
    pub account_max_tasks: u32,
    /// A job whose input is still open but has had no new input for this long has its input
    /// ended (as `mjob close` would).
    pub input_idle: Duration,
    /// The supervisor's region identity, presented to Moray over mutual TLS.
    pub tls: Option<manta_util::tls::Identity>,
    /// The user the supervisor becomes once its keys are read and its port bound; `None` stays
    /// whoever started it.
    pub run_as: Option<String>,
}

impl SupervisorConfig {
    /// Defaults for everything but the addresses.
    pub fn new(moray_url: &str, etcd: Vec<String>, frontdoor_url: &str) -> SupervisorConfig {
        SupervisorConfig {
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            moray_url: moray_url.to_owned(),
            etcd,
            frontdoor_url: frontdoor_url.to_owned(),
            name: format!("supervisor-{}", uuid::Uuid::new_v4()),
            poll: Duration::from_millis(200),
            agent_timeout: Duration::from_secs(5),
            lease_ttl: 3,
            max_attempts: 3,
            account_max_tasks: DEFAULT_MAX_TASKS,
            input_idle: DEFAULT_INPUT_IDLE,
            tls: None,
            run_as: None,
        }
    }
}

/// How long a job's open input may go without a new input before it is ended.
pub const DEFAULT_INPUT_IDLE: Duration = Duration::from_secs(3600);

/// Tasks one account may have dispatched or running at once, unless its limits say otherwise.
pub const DEFAULT_MAX_TASKS: u32 = 256;

/// How many more map tasks each account may be given in this pass: its limit less what it has
/// dispatched or running, counted the first time one of its jobs has new inputs.
type Budgets = HashMap<String, u64>;

/// The election's name in etcd.
pub const ELECTION: &str = "/manta/jobs/supervisor";

struct Sup {
    cfg: SupervisorConfig,
    store: JobStore,
    moray: ShardedClient,
    /// How etcd is reached (read once: the process may no longer read its key files).
    etcd_tls: Option<etcd_client::TlsOptions>,
    /// The etcd member the next campaign tries first.
    etcd_next: std::sync::atomic::AtomicUsize,
    http: reqwest::Client,
    metrics: Arc<manta_util::metrics::Metrics>,
    /// The accounts (for their own limits).
    accounts: crate::gateway::MorayAccountStore,
    /// When each job's stats were last recounted (counting is the costliest query).
    counted: std::sync::Mutex<HashMap<String, tokio::time::Instant>>,
    /// When each job's open tasks were last all read, and the live agents' generations then.
    scanned: std::sync::Mutex<HashMap<String, (tokio::time::Instant, String)>>,
}

/// Runs the supervisor until `shutdown`: serves `/ping` and `/metrics`, campaigns for
/// leadership, and drives jobs while it leads.
///
/// # Errors
/// When the listener cannot be bound or Moray never becomes reachable.
pub async fn run(cfg: SupervisorConfig, shutdown: CancellationToken) -> Result<()> {
    let (metrics, http_task) = manta_util::http::spawn_status_server(
        "jobs-supervisor",
        cfg.listen,
        cfg.tls.as_ref(),
        shutdown.clone(),
    )
    .await?;
    let tls = manta_util::tls::internal_client_of(cfg.tls.as_ref())
        .context("load the supervisor's region identity")?;
    let moray = ShardedClient::single_over(&cfg.moray_url, tls)?;
    let etcd_tls = moray::etcd::tls_options_of(cfg.tls.as_ref())?;
    // Its keys are read and its port bound: root is not needed again.
    manta_util::proc::run_as(cfg.run_as.as_deref()).context("drop root")?;
    let store = JobStore::new(moray.system());
    let accounts = crate::gateway::MorayAccountStore::new(moray.system());
    loop {
        match store.setup().await {
            Ok(()) => break,
            Err(e) => warn!(error = %e, "job buckets not ready; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    let sup = Arc::new(Sup {
        cfg,
        etcd_tls,
        etcd_next: std::sync::atomic::AtomicUsize::new(0),
        store,
        moray,
        http: FdClient::http(),
        metrics,
        accounts,
        counted: std::sync::Mutex::new(HashMap::new()),
        scanned: std::sync::Mutex::new(HashMap::new()),
    });
    while !shutdown.is_cancelled() {
        if let Err(e) = sup.clone().lead(&shutdown).await {
            warn!(error = %format!("{e:#}"), "leadership lost or not won; campaigning again");
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
    let _ = http_task.await;
    Ok(())
}

impl Sup {
    /// Campaigns, then works while the lease holds.
    async fn lead(self: Arc<Self>, shutdown: &CancellationToken) -> Result<()> {
        // One live member (etcd-client does not move off a dead one by itself); each attempt
        // starts from the next member.
        let start = self
            .etcd_next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (mut client, _) =
            moray::etcd::connect_any(&self.cfg.etcd, start, self.etcd_tls.as_ref())
                .await
                .context("connect to etcd")?;
        let lease = client
            .lease_grant(self.cfg.lease_ttl, None)
            .await
            .context("grant a lease")?
            .id();
        let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
        let lost = CancellationToken::new();
        let lost2 = lost.clone();
        let every = Duration::from_millis(
            u64::try_from(self.cfg.lease_ttl * 1000 / 3)
                .unwrap_or(1000)
                .max(100),
        );
        let keepalive = tokio::spawn(async move {
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(every * 2, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                    _ => break,
                }
                tokio::time::sleep(every).await;
            }
            lost2.cancel();
        });
        let leader = tokio::select! {
            r = client.campaign(ELECTION, self.cfg.name.clone(), lease) => r.context("campaign")?,
            () = shutdown.cancelled() => { keepalive.abort(); let _ = client.lease_revoke(lease).await; return Ok(()); }
            () = lost.cancelled() => anyhow::bail!("lease lost while campaigning"),
        };
        info!(name = %self.cfg.name, "elected jobs supervisor");
        self.metrics.set(
            "jobs_supervisor_leader",
            "1 while this supervisor leads.",
            &[],
            1.0,
        );
        let result = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                () = lost.cancelled() => break Err(anyhow::anyhow!("lease lost")),
                () = tokio::time::sleep(self.cfg.poll) => {}
            }
            if let Err(e) = self.pass(&lost).await {
                warn!(error = %format!("{e:#}"), "supervisor pass failed");
            }
        };
        self.metrics.set(
            "jobs_supervisor_leader",
            "1 while this supervisor leads.",
            &[],
            0.0,
        );
        keepalive.abort();
        if let Some(l) = leader.leader() {
            let _ = client
                .resign(Some(
                    etcd_client::ResignOptions::new().with_leader(l.clone()),
                ))
                .await;
        }
        let _ = client.lease_revoke(lease).await;
        result
    }

    async fn agents(&self) -> Result<HashMap<String, AgentBeat>> {
        let beats = self
            .store
            .find_all::<AgentBeat>(AGENTS, "(storageId=*)")
            .await?;
        let now = now_ms();
        let max = u64::try_from(self.cfg.agent_timeout.as_millis()).unwrap_or(u64::MAX);
        Ok(beats
            .into_iter()
            .filter(|b| now.saturating_sub(b.value.timestamp) <= max)
            .map(|b| (b.value.storage_id.clone(), b.value))
            .collect())
    }

    async fn pass(&self, lost: &CancellationToken) -> Result<()> {
        let agents = self.agents().await?;
        let jobs = self
            .store
            .find_all::<Job>(JOBS, "(|(state=running)(state=done))")
            .await?;
        let running: Vec<(String, String)> = jobs
            .iter()
            .filter(|j| j.value.state == job_state::RUNNING)
            .map(|j| (j.value.owner.clone(), j.value.job_id.clone()))
            .collect();
        let mut budgets = Budgets::new();
        for job in jobs {
            if lost.is_cancelled() {
                break;
            }
            let id = job.value.job_id.clone();
            let r = if job.value.state == job_state::DONE {
                self.archive(job).await
            } else {
                self.drive(job, &agents, &running, &mut budgets).await
            };
            if let Err(e) = r {
                warn!(job = %id, error = %format!("{e:#}"), "job step failed");
            }
        }
        Ok(())
    }

    async fn count(&self, bucket: &'static str, filter: &str) -> Result<u64> {
        let opts = moray::types::FindOptions {
            limit: Some(1),
            offset: None,
            sort: Vec::new(),
            no_count: false,
        };
        let r = self
            .store
            .moray()
            .find_objects(bucket, filter, opts)
            .await?;
        Ok(r.first().and_then(|r| r.count).unwrap_or(0))
    }

    /// How many more map tasks `owner` may be given now: its limit (its own, else the
    /// region's) less the tasks of its `running` jobs that are dispatched or running.
    async fn budget(&self, owner: &str, running: &[(String, String)]) -> Result<u64> {
        use manta_auth::AccountStore as _;
        let own = self
            .accounts
            .by_uuid(owner)
            .await
            .map_err(|e| anyhow::anyhow!("read account {owner}: {e}"))?
            .and_then(|a| a.limits.tasks);
        let most = u64::from(own.unwrap_or(self.cfg.account_max_tasks));
        let mut busy = 0;
        for (_, job) in running.iter().filter(|(o, _)| o == owner) {
            let f = format!(
                "(&(jobId={})(|(state={})(state={})))",
                esc(job),
                task_state::DISPATCHED,
                task_state::RUNNING
            );
            busy += self.count(TASKS, &f).await?;
            if busy >= most {
                break;
            }
        }
        Ok(most.saturating_sub(busy))
    }

    async fn any(&self, bucket: &'static str, filter: &str) -> Result<bool> {
        Ok(!self
            .store
            .find::<serde_json::Value>(bucket, filter, 1)
            .await?
            .is_empty())
    }

    fn error(
        job: &Job,
        phase: u32,
        code: JobErrorCode,
        message: String,
        input: Option<&str>,
    ) -> JobError {
        JobError {
            v: records::VERSION,
            job_id: job.job_id.clone(),
            task_id: None,
            phase_num: phase,
            what: format!("phase {phase}: input"),
            code: code.as_str().to_owned(),
            message,
            input: input.map(str::to_owned),
            p0input: input.map(str::to_owned),
            stderr: None,
            core: None,
            server: None,
            time: now_ms(),
        }
    }

    /// Where an object's copies are, or why it cannot be an input.
    async fn locate(
        &self,
        job: &Job,
        path: &str,
    ) -> Result<std::result::Result<InputObject, (JobErrorCode, String)>> {
        let p = match MantaPath::parse(path) {
            Ok(p) => p,
            Err(e) => return Ok(Err((JobErrorCode::InvalidArgument, e.to_string()))),
        };
        // Any object the owner may GET is an input: its own, and other accounts' `public`
        // objects, decided by the front door's one authorisation function.
        let owner = if p.login() == job.login {
            job.owner.clone()
        } else {
            use manta_auth::AccountStore as _;
            let found = self
                .accounts
                .by_login(p.login())
                .await
                .map_err(|e| anyhow::anyhow!("read account {}: {e}", p.login()))?;
            let (Some(other), Some(me)) = (found, self.accounts.by_uuid(&job.owner).await?) else {
                return Ok(Err((
                    JobErrorCode::ResourceNotFound,
                    format!("{path} was not found"),
                )));
            };
            let caller = manta_auth::Caller::Account {
                account: me,
                via: manta_auth::Via::Token,
                methods: None,
                user: None,
            };
            if let Err(e) = manta_auth::authorize(&caller, &other, &p, &http::Method::GET) {
                return Ok(Err((
                    JobErrorCode::Authorization,
                    format!("{path}: {}", e.message),
                )));
            }
            other.uuid
        };
        let Some((bucket, key)) = records::input_record(&p, &owner) else {
            return Ok(Err((
                JobErrorCode::InvalidArgument,
                format!("{path} is not an object"),
            )));
        };
        match self.moray.get_object(bucket, &key).await {
            Ok(r) => {
                let rec = MetadataRecord::from_value(r.value)?;
                if rec.owner != owner {
                    // A bucket of another account (bucket names are region-wide).
                    return Ok(Err((
                        JobErrorCode::Authorization,
                        format!("{path}: a bucket of another account"),
                    )));
                }
                match rec.object() {
                    Some(o) => Ok(Ok(InputObject {
                        creator: rec.creator.clone(),
                        object_id: o.object_id.to_string(),
                        sharks: o
                            .sharks
                            .iter()
                            .map(|s| s.manta_storage_id.clone())
                            .collect(),
                    })),
                    None => Ok(Err((
                        JobErrorCode::InvalidArgument,
                        format!("{path} is a directory"),
                    ))),
                }
            }
            Err(moray::Error::ObjectNotFound { .. } | moray::Error::BucketNotFound { .. }) => {
                Ok(Err((
                    JobErrorCode::ResourceNotFound,
                    format!("{path} was not found"),
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A live agent among `candidates` (any live agent when empty), avoiding `excluded`.
    fn pick(
        agents: &HashMap<String, AgentBeat>,
        candidates: &[String],
        excluded: &[String],
        salt: &str,
    ) -> Option<String> {
        let mut live: Vec<&String> = if candidates.is_empty() {
            agents.keys().collect()
        } else {
            candidates
                .iter()
                .filter(|c| agents.contains_key(*c))
                .collect()
        };
        live.sort();
        let fresh: Vec<&String> = live
            .iter()
            .copied()
            .filter(|c| !excluded.contains(c))
            .collect();
        let from = if fresh.is_empty() { &live } else { &fresh };
        if from.is_empty() {
            return None;
        }
        let i = usize::try_from(crc(salt)).unwrap_or(0) % from.len();
        Some(from[i].clone())
    }

    fn new_task(job: &Job, phase: u32, server: String) -> Task {
        Task {
            v: records::VERSION,
            task_id: uuid::Uuid::new_v4().to_string(),
            job_id: job.job_id.clone(),
            phase,
            input: None,
            p0input: "reduce".into(),
            r_idx: None,
            server,
            excluded: Vec::new(),
            attempt: 1,
            state: task_state::DISPATCHED.into(),
            result: None,
            agent_gen: None,
            cancelled: false,
            time_dispatched: now_ms(),
            time_started: None,
            time_done: None,
            n_outputs: 0,
            input_object: None,
        }
    }

    /// One pass over a running job: route its new inputs, retry tasks whose agent is gone,
    /// start reducers and notice finished phases, then record its stats (and its end).
    async fn drive(
        &self,
        job: Stored<Job>,
        agents: &HashMap<String, AgentBeat>,
        running: &[(String, String)],
        budgets: &mut Budgets,
    ) -> Result<()> {
        let j = &job.value;
        let jf = format!("(jobId={})", esc(&j.job_id));
        if j.cancelled {
            return self.cancel(job).await;
        }
        self.route_new_items(j, &jf, agents, running, budgets)
            .await?;
        let retried = self.retry_lost_tasks(j, &jf, agents).await?;
        let (complete, inputs_done) = self.advance_phases(j, &jf, agents).await?;
        self.record_progress(&job, &jf, complete, inputs_done, retried)
            .await
    }

    /// Step 1: each new item becomes a map task on a node holding a copy of its input (or a
    /// job error when it cannot be an input), or is assigned to a reducer. An owner at its
    /// limit of tasks gets no new map task: its inputs wait for a later pass.
    async fn route_new_items(
        &self,
        j: &Job,
        jf: &str,
        agents: &HashMap<String, AgentBeat>,
        running: &[(String, String)],
        budgets: &mut Budgets,
    ) -> Result<()> {
        let new_items = self
            .store
            .find::<Item>(ITEMS, &format!("(&{jf}(state={}))", item_state::NEW), 500)
            .await?;
        if new_items.is_empty() {
            return Ok(());
        }
        let left = match budgets.get_mut(&j.owner) {
            Some(left) => left,
            None => {
                let b = self.budget(&j.owner, running).await?;
                budgets.entry(j.owner.clone()).or_insert(b)
            }
        };
        if *left == 0 {
            self.metrics.inc(
                "jobs_supervisor_account_tasks_throttled_total",
                "Passes in which a job's new inputs waited for its owner's limit of tasks.",
                &[],
            );
        }
        // Look the map inputs up several at a time (only as many as the owner may be given
        // tasks now), then write in a few batches.
        let mut may_locate = *left;
        let located: Vec<_> = {
            use futures_util::StreamExt as _;
            futures_util::stream::iter(new_items.iter().map(|it| {
                let is_map = j
                    .phases
                    .get(it.value.to_phase as usize)
                    .is_some_and(|p| p.kind == PhaseType::Map);
                let locate = is_map && may_locate > 0;
                if locate {
                    may_locate -= 1;
                }
                async move {
                    if locate {
                        Some(self.locate(j, &it.value.path).await)
                    } else {
                        None
                    }
                }
            }))
            .buffered(8)
            .collect()
            .await
        };
        let mut ops = Vec::new();
        for (it, loc) in new_items.iter().zip(located) {
            let Some(phase) = j.phases.get(it.value.to_phase as usize) else {
                continue;
            };
            let mut item = it.value.clone();
            match (phase.kind, loc) {
                (PhaseType::Map, Some(loc)) => match loc? {
                    Err((code, msg)) => {
                        item.state = item_state::FAILED.into();
                        let e = Self::error(j, item.to_phase, code, msg, Some(&item.p0input));
                        ops.push(put_op(
                            ITEMS,
                            &it.key,
                            &item,
                            PutOptions::if_match(&it.etag),
                        ));
                        ops.push(put_op(
                            ERRORS,
                            &uuid::Uuid::new_v4().to_string(),
                            &e,
                            PutOptions::must_not_exist(),
                        ));
                    }
                    Ok(_) if *left == 0 => continue, // at the owner's limit: a later pass
                    Ok(object) => {
                        let Some(server) = Self::pick(agents, &object.sharks, &[], &item.path)
                        else {
                            continue; // no live agent holds a copy yet: try again later
                        };
                        *left -= 1;
                        let mut t = Self::new_task(j, item.to_phase, server);
                        t.input = Some(item.path.clone());
                        t.input_object = Some(object);
                        t.p0input = item.p0input.clone();
                        item.state = item_state::DONE.into();
                        ops.push(put_op(
                            ITEMS,
                            &it.key,
                            &item,
                            PutOptions::if_match(&it.etag),
                        ));
                        ops.push(put_op(TASKS, &t.task_id, &t, PutOptions::must_not_exist()));
                    }
                },
                // Not looked up: the owner is at its limit of tasks; a later pass.
                (PhaseType::Map, None) => continue,
                _ => {
                    let n = phase.reducers();
                    let r = item
                        .r_idx
                        .map(u64::from)
                        .filter(|r| *r < n)
                        .unwrap_or_else(|| crc(&item.path) % n);
                    item.r_idx = Some(u32::try_from(r).unwrap_or(0));
                    item.state = item_state::DONE.into();
                    ops.push(put_op(
                        ITEMS,
                        &it.key,
                        &item,
                        PutOptions::if_match(&it.etag),
                    ));
                }
            }
            if ops.len() >= 100 {
                self.store.batch(std::mem::take(&mut ops)).await?;
            }
        }
        self.store.batch(ops).await?;
        Ok(())
    }

    /// Step 2: tasks whose agent is gone (or restarted, or reported them lost) run again
    /// elsewhere. Answers how many were dispatched again.
    async fn retry_lost_tasks(
        &self,
        j: &Job,
        jf: &str,
        agents: &HashMap<String, AgentBeat>,
    ) -> Result<u64> {
        // Every open task is read when an agent came, went or restarted since the last such
        // read, and at least once an agent timeout; between, only those of nodes not heard
        // from (normally none): a job's open tasks may be thousands, and passes are frequent.
        let generations = {
            let mut g: Vec<String> = agents
                .iter()
                .map(|(s, b)| format!("{s}={}", b.generation))
                .collect();
            g.sort();
            g.join(",")
        };
        let all = {
            let mut m = self.scanned.lock().unwrap_or_else(|p| p.into_inner());
            match m.get(&j.job_id) {
                Some((at, g)) if *g == generations && at.elapsed() < self.cfg.agent_timeout => {
                    false
                }
                _ => {
                    m.insert(j.job_id.clone(), (tokio::time::Instant::now(), generations));
                    true
                }
            }
        };
        let open_states = format!(
            "(|(state={})(state={}))",
            task_state::DISPATCHED,
            task_state::RUNNING
        );
        let live: String = agents
            .keys()
            .map(|s| format!("(server={})", esc(s)))
            .collect();
        let filter = if all || live.is_empty() {
            format!("(&{jf}{open_states})")
        } else {
            format!("(&{jf}{open_states}(!(|{live})))")
        };
        let open = self.store.find_all::<Task>(TASKS, &filter).await?;
        let lost_done = self
            .store
            .find_all::<Task>(
                TASKS,
                &format!("(&{jf}(state={})(result=lost))", task_state::DONE),
            )
            .await
            .unwrap_or_default();
        let mut retried = 0;
        for t in open.iter().chain(lost_done.iter()) {
            let beat = agents.get(&t.value.server);
            let gone = match (&t.value.result, beat) {
                (Some(r), _) if r == "lost" => true,
                (_, None) => true,
                (_, Some(b)) => {
                    t.value.state == task_state::RUNNING
                        && t.value.agent_gen.as_deref() != Some(b.generation.as_str())
                }
            };
            if gone && self.retry(j, t, agents).await? {
                retried += 1;
            }
        }
        Ok(retried)
    }

    /// Step 3: starts the reducers of a phase whose upstream has begun (or whose input is
    /// complete), and says whether every phase is complete (the job is done) and how many
    /// phases, from the first, have all their input.
    async fn advance_phases(
        &self,
        j: &Job,
        jf: &str,
        agents: &HashMap<String, AgentBeat>,
    ) -> Result<(bool, u32)> {
        let mut prev_complete = j.input_done;
        let mut inputs_done = 0;
        for (p, phase) in j.phases.iter().enumerate() {
            let p32 = u32::try_from(p).unwrap_or(u32::MAX);
            let input_complete = prev_complete
                && !self
                    .any(
                        ITEMS,
                        &format!("(&{jf}(toPhase={p32})(state={}))", item_state::NEW),
                    )
                    .await?;
            let pending = self
                .any(
                    TASKS,
                    &format!(
                        "(&{jf}(phase={p32})(|(state={})(state={})))",
                        task_state::DISPATCHED,
                        task_state::RUNNING
                    ),
                )
                .await?;
            if input_complete && inputs_done == p32 {
                inputs_done = p32 + 1;
            }
            let mut complete = input_complete && !pending;
            if phase.kind == PhaseType::Reduce {
                let have = self.any(TASKS, &format!("(&{jf}(phase={p32}))")).await?;
                if !have {
                    complete = false;
                    // Reducers stream: they start once their upstream has begun (a task of
                    // the phase before exists), or at once for a first phase.
                    let begun = input_complete
                        || p32 == 0
                        || self
                            .any(TASKS, &format!("(&{jf}(phase={}))", p32 - 1))
                            .await?;
                    if begun {
                        let mut ops = Vec::new();
                        for r in 0..phase.reducers() {
                            let Some(server) =
                                Self::pick(agents, &[], &[], &format!("{}{r}", j.job_id))
                            else {
                                break;
                            };
                            let mut t = Self::new_task(j, p32, server);
                            t.r_idx = Some(u32::try_from(r).unwrap_or(0));
                            ops.push(put_op(TASKS, &t.task_id, &t, PutOptions::must_not_exist()));
                        }
                        if ops.len() as u64 == phase.reducers() {
                            // One batch: all reducers of the phase exist or none does.
                            self.store.batch(ops).await?;
                        }
                    }
                }
            }
            prev_complete = complete;
        }
        Ok((prev_complete, inputs_done))
    }

    /// How long since job `j` (its filter `jf`) last took an input (or was made, if none).
    async fn input_idle_since(&self, j: &Job, jf: &str) -> Result<Duration> {
        let opts = moray::types::FindOptions {
            limit: Some(1),
            offset: None,
            sort: vec![moray::types::Sort::desc("_id")],
            no_count: true,
        };
        let last = self
            .store
            .moray()
            .find_objects(ITEMS, &format!("(&{jf}(toPhase=0))"), opts)
            .await?;
        let at = match last.first() {
            Some(r) => u64::try_from(r.mtime).unwrap_or(0),
            None => manta_types::time::parse_iso8601_ms(&j.time_created).unwrap_or(0),
        };
        Ok(Duration::from_millis(now_ms().saturating_sub(at)))
    }

    /// Step 4: the job's stats (at most once a second, and at the end, and when tasks were
    /// dispatched again: `retried` of them in this pass), its input ended when it has been
    /// idle too long, and its end. The job's record is written only under the etag read at
    /// the start of the pass, so nothing a user changed meanwhile (its input ended, say) is
    /// undone; a conflict loses only this pass's figures.
    async fn record_progress(
        &self,
        job: &Stored<Job>,
        jf: &str,
        prev_complete: bool,
        inputs_done: u32,
        retried: u64,
    ) -> Result<()> {
        let j = &job.value;
        let mut next = j.clone();
        next.stats.retries += retried;
        // Running reducers wait for this: it is written at once, not with the stats.
        next.phases_input_done = inputs_done;
        let ended_inputs = inputs_done != j.phases_input_done;
        let n = j.phases.len();
        let recount = {
            let mut c = self.counted.lock().unwrap_or_else(|p| p.into_inner());
            let due = c
                .get(&j.job_id)
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if due || prev_complete {
                c.insert(j.job_id.clone(), tokio::time::Instant::now());
            }
            due || prev_complete || ended_inputs || retried > 0
        };
        if !recount {
            return Ok(());
        }
        if !j.input_done && self.input_idle_since(j, jf).await? >= self.cfg.input_idle {
            info!(job = %j.job_id, idle = ?self.cfg.input_idle, "job input ended: no new input");
            next.input_done = true;
            next.time_input_done = Some(now_iso());
        }
        next.stats.tasks = self.count(TASKS, jf).await?;
        next.stats.tasks_done = self
            .count(TASKS, &format!("(&{jf}(state={}))", task_state::DONE))
            .await?;
        next.stats.errors = self.count(ERRORS, jf).await?;
        next.stats.outputs = self
            .count(
                ITEMS,
                &format!("(&{jf}(toPhase={n})(state={}))", item_state::OUT),
            )
            .await?;
        if prev_complete {
            next.state = job_state::DONE.into();
            next.time_done = Some(now_iso());
            self.forget(&j.job_id);
            info!(job = %j.job_id, "job done");
        }
        if next != *j {
            match self
                .store
                .put(JOBS, &job.key, &next, PutOptions::if_match(&job.etag))
                .await
            {
                Ok(_) | Err(records::StoreError::Moray(moray::Error::EtagConflict { .. })) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Dispatches lost task `t` again (or fails it after its last attempt); answers whether
    /// it was dispatched again.
    async fn retry(
        &self,
        job: &Job,
        t: &Stored<Task>,
        agents: &HashMap<String, AgentBeat>,
    ) -> Result<bool> {
        let mut task = t.value.clone();
        let mut ops = Vec::new();
        if task.attempt >= self.cfg.max_attempts {
            task.state = task_state::DONE.into();
            task.result = Some("fail".into());
            task.time_done = Some(now_ms());
            let mut e = Self::error(
                job,
                task.phase,
                JobErrorCode::Internal,
                format!(
                    "task failed on {} attempts: its node did not finish it",
                    task.attempt
                ),
                task.input.as_deref(),
            );
            e.task_id = Some(task.task_id.clone());
            e.p0input = Some(task.p0input.clone());
            e.what = format!("phase {}: task", task.phase);
            ops.push(put_op(
                ERRORS,
                &uuid::Uuid::new_v4().to_string(),
                &e,
                PutOptions::must_not_exist(),
            ));
        } else {
            let located = match &task.input {
                Some(input) => self.locate(job, input).await?.ok(),
                None => None,
            };
            let candidates = located
                .as_ref()
                .map(|o| o.sharks.clone())
                .unwrap_or_default();
            let mut excluded = task.excluded.clone();
            excluded.push(task.server.clone());
            let Some(server) = Self::pick(agents, &candidates, &excluded, &task.task_id) else {
                return Ok(false); // nobody can take it now; look again next pass
            };
            if server == task.server
                && task.state == task_state::DISPATCHED
                && task.result.is_none()
            {
                return Ok(false); // still waiting for the same (now live) agent
            }
            warn!(task = %task.task_id, from = %task.server, to = %server, "dispatching a lost task again");
            task.excluded = excluded;
            task.server = server;
            task.attempt += 1;
            task.state = task_state::DISPATCHED.into();
            task.result = None;
            task.agent_gen = None;
            task.time_dispatched = now_ms();
            task.time_started = None;
            if located.is_some() {
                task.input_object = located;
            }
        }
        let again = task.state == task_state::DISPATCHED;
        ops.insert(
            0,
            put_op(TASKS, &t.key, &task, PutOptions::if_match(&t.etag)),
        );
        match self.store.batch(ops).await {
            Ok(_) => Ok(again),
            Err(records::StoreError::Moray(moray::Error::EtagConflict { .. })) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn cancel(&self, job: Stored<Job>) -> Result<()> {
        let j = &job.value;
        let open = self
            .store
            .find_all::<Task>(
                TASKS,
                &format!(
                    "(&(jobId={})(|(state={})(state={})))",
                    esc(&j.job_id),
                    task_state::DISPATCHED,
                    task_state::RUNNING
                ),
            )
            .await?;
        for t in open {
            let mut task = t.value.clone();
            if task.state == task_state::DISPATCHED {
                task.state = task_state::DONE.into();
                task.result = Some("cancelled".into());
                task.time_done = Some(now_ms());
            }
            task.cancelled = true;
            if task != t.value {
                let _ = self
                    .store
                    .put(TASKS, &t.key, &task, PutOptions::if_match(&t.etag))
                    .await;
            }
        }
        let mut next = j.clone();
        next.state = job_state::DONE.into();
        next.time_done = Some(now_iso());
        self.store
            .put(JOBS, &job.key, &next, PutOptions::if_match(&job.etag))
            .await?;
        info!(job = %j.job_id, "job cancelled");
        Ok(())
    }

    /// Drops what the passes kept about job `id` (when it was counted and scanned).
    fn forget(&self, id: &str) {
        self.counted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.scanned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    async fn archive(&self, job: Stored<Job>) -> Result<()> {
        let mut j = job.value.clone();
        // A job ended by cancellation never passed through the count that forgets it.
        self.forget(&j.job_id);
        let fd = FdClient::new(self.http.clone(), &self.cfg.frontdoor_url, &j.token);
        let dir = format!("/{}/jobs/{}", j.login, j.job_id);
        if j.time_archive_started.is_none() {
            j.time_archive_started = Some(now_iso());
        }
        let views = JobsApi::views_of(&self.store, &j)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        fd.mkdirp(&dir).await?;
        let lines = |v: &[String]| {
            let mut s = v.join("\n");
            if !s.is_empty() {
                s.push('\n');
            }
            s
        };
        let mut err = String::new();
        for e in &views.errors {
            err.push_str(&e.public().to_string());
            err.push('\n');
        }
        let mut done = j.clone();
        done.state = job_state::ARCHIVED.into();
        done.time_archive_done = Some(now_iso());
        fd.put_bytes(&format!("{dir}/in.txt"), lines(&views.inputs), "text/plain")
            .await?;
        fd.put_bytes(
            &format!("{dir}/out.txt"),
            lines(&views.outputs),
            "text/plain",
        )
        .await?;
        fd.put_bytes(
            &format!("{dir}/fail.txt"),
            lines(&views.failures),
            "text/plain",
        )
        .await?;
        fd.put_bytes(
            &format!("{dir}/err.txt"),
            err,
            "application/x-json-stream; type=job-error",
        )
        .await?;
        fd.put_bytes(
            &format!("{dir}/job.json"),
            done.status().to_string(),
            "application/json",
        )
        .await?;
        self.store
            .put(JOBS, &job.key, &done, PutOptions::if_match(&job.etag))
            .await?;
        info!(job = %j.job_id, "job archived");
        Ok(())
    }
}

/// A stable hash for spreading work (CRC-32 of the text).
pub fn crc(s: &str) -> u64 {
    let mut c: u32 = 0xffff_ffff;
    for b in s.as_bytes() {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    u64::from(!c)
}
