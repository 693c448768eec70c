//! Job state in Moray: every fact the supervisor and the agents act on is a record here, so a
//! restart of any process loses nothing and any supervisor can take over.
//!
//! All buckets live on the system shard (one place to poll). Records carry a version `v`.
//!
//! | bucket | key | what |
//! |---|---|---|
//! | `jobs_v1` | job id | the job: phases, owner, token, state, flags, stats |
//! | `jobs_items_v1` | uuid | an object flowing into phase `toPhase` (job inputs have `toPhase` 0; outputs of the last phase have `toPhase` = number of phases and are the job's outputs) |
//! | `jobs_tasks_v1` | task id | one map or reduce task, its node and its state |
//! | `jobs_errors_v1` | uuid | one error of a job |
//! | `jobs_agents_v1` | storage id | an agent's heartbeat and generation |

use moray::MorayClient;
use moray::types::{BatchOp, BucketConfig, FindOptions, IndexSpec, IndexType, PutOptions, Sort};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::spec::Phase;

/// Jobs.
pub const JOBS: &str = "jobs_v1";
/// Items (inputs, intermediate and final outputs).
pub const ITEMS: &str = "jobs_items_v1";
/// Tasks.
pub const TASKS: &str = "jobs_tasks_v1";
/// Errors.
pub const ERRORS: &str = "jobs_errors_v1";
/// Agent heartbeats.
pub const AGENTS: &str = "jobs_agents_v1";

/// Version of the records this code writes.
pub const VERSION: u32 = 1;

/// Job states.
pub mod job_state {
    /// Accepted; the supervisor acts on it.
    pub const RUNNING: &str = "running";
    /// Finished (all phases done, or cancelled); archiving may still be under way.
    pub const DONE: &str = "done";
    /// Done and archived.
    pub const ARCHIVED: &str = "archived";
}

/// Item states.
pub mod item_state {
    /// Not yet looked at by the supervisor.
    pub const NEW: &str = "new";
    /// Turned into a map task, or assigned to a reducer.
    pub const DONE: &str = "done";
    /// An output of the last phase: a job output.
    pub const OUT: &str = "out";
    /// Refused (missing input and the like); an error was recorded.
    pub const FAILED: &str = "failed";
}

/// Task states.
pub mod task_state {
    /// Waiting for its agent.
    pub const DISPATCHED: &str = "dispatched";
    /// Claimed by an agent generation.
    pub const RUNNING: &str = "running";
    /// Finished (see `result`).
    pub const DONE: &str = "done";
}

/// Counts shown in the job's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Errors recorded.
    pub errors: u64,
    /// Job outputs.
    pub outputs: u64,
    /// Tasks retried after an infrastructure failure.
    pub retries: u64,
    /// Tasks dispatched.
    pub tasks: u64,
    /// Tasks finished.
    #[serde(rename = "tasksDone")]
    pub tasks_done: u64,
}

/// A job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Record version.
    pub v: u32,
    /// Job id.
    pub job_id: String,
    /// Name.
    pub name: String,
    /// Owner account id.
    pub owner: String,
    /// Owner login (paths are written with it).
    pub login: String,
    /// Phases.
    pub phases: Vec<Phase>,
    /// Token acting for the owner (the supervisor and agents use it against the front door).
    pub token: String,
    /// `running` or `done`.
    pub state: String,
    /// Cancelled by the user.
    #[serde(default)]
    pub cancelled: bool,
    /// No more inputs will come.
    #[serde(default)]
    pub input_done: bool,
    /// How many of the phases, from the first, have all their input: the supervisor counts a
    /// phase once its upstream has ended and every input has been routed. A reducer, which
    /// runs from the start of its phase, ends its input when its phase is counted here.
    #[serde(default)]
    pub phases_input_done: u32,
    /// ISO times.
    pub time_created: String,
    /// When input ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_input_done: Option<String>,
    /// When cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_cancelled: Option<String>,
    /// When done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_done: Option<String>,
    /// When archiving began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_archive_started: Option<String>,
    /// When the archive was complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_archive_done: Option<String>,
    /// Counts.
    #[serde(default)]
    pub stats: Stats,
    /// The owner's own limit on the bytes one task may emit, as it was when the job was
    /// created (`None`: the agents' default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_output: Option<u64>,
}

impl Job {
    /// The public status JSON (`live/status`, `job.json`); never includes the token.
    pub fn status(&self) -> Value {
        // Users see `running` or `done`; archiving happens after `done`.
        let state = if self.state == job_state::RUNNING {
            job_state::RUNNING
        } else {
            job_state::DONE
        };
        let mut v = serde_json::json!({
            "id": self.job_id,
            "name": self.name,
            "state": state,
            "cancelled": self.cancelled,
            "inputDone": self.input_done,
            "transient": false,
            "stats": self.stats,
            "timeCreated": self.time_created,
            "phases": self.phases,
            "options": {},
        });
        for (k, t) in [
            ("timeDone", &self.time_done),
            ("timeArchiveStarted", &self.time_archive_started),
            ("timeArchiveDone", &self.time_archive_done),
        ] {
            if let Some(t) = t {
                v[k] = Value::String(t.clone());
            }
        }
        v
    }
}

/// An object flowing into a phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// Record version.
    pub v: u32,
    /// Job.
    pub job_id: String,
    /// The phase it feeds; the number of phases for job outputs.
    pub to_phase: u32,
    /// The object path (`/:login/...`).
    pub path: String,
    /// The job input it derives from (for error reports and output naming).
    pub p0input: String,
    /// The task that produced it (none for job inputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_task: Option<String>,
    /// The reducer it goes to (reduce phases), as routed by `mpipe -r` or assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r_idx: Option<u32>,
    /// See [`item_state`].
    pub state: String,
    /// Order of arrival (ms), for listings.
    pub time: u64,
}

/// One task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Record version.
    pub v: u32,
    /// Task id.
    pub task_id: String,
    /// Job.
    pub job_id: String,
    /// Phase number.
    pub phase: u32,
    /// Map: the input object path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The job input this work derives from (map), or `reduce`.
    pub p0input: String,
    /// Reduce: which reducer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r_idx: Option<u32>,
    /// The storage id of the node whose agent runs it.
    pub server: String,
    /// Nodes to avoid on a retry (they failed this task).
    #[serde(default)]
    pub excluded: Vec<String>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// See [`task_state`].
    pub state: String,
    /// `ok` or `fail` when done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The agent generation that claimed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_gen: Option<String>,
    /// Set when the job is cancelled: the agent kills it.
    #[serde(default)]
    pub cancelled: bool,
    /// When dispatched (ms).
    pub time_dispatched: u64,
    /// When claimed (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_started: Option<u64>,
    /// When done (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_done: Option<u64>,
    /// Outputs it produced.
    #[serde(default)]
    pub n_outputs: u64,
    /// Map: where the input's bytes were when the task was dispatched (so the agent need not
    /// look the input up again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_object: Option<InputObject>,
}

/// Where a map input's bytes are: the object's creator and id (its file on a node is
/// `objects/<creator>/<id>`) and the nodes holding a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputObject {
    /// The account that stored the bytes.
    pub creator: String,
    /// The object's id.
    pub object_id: String,
    /// Storage ids of the nodes holding a copy (none for zero bytes).
    pub sharks: Vec<String>,
}

/// One error of a job (the `live/err` line, minus nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobError {
    /// Record version.
    pub v: u32,
    /// Job.
    pub job_id: String,
    /// Task, when a task failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Phase number.
    pub phase_num: u32,
    /// What was being done.
    pub what: String,
    /// Error code (`UserTaskError`, `TaskInitError`, `ResourceNotFoundError`, ...).
    pub code: String,
    /// Message for people.
    pub message: String,
    /// The task's input object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The job input it derives from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p0input: Option<String>,
    /// Where the task's stderr was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Where a core file was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<String>,
    /// The node that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Order of arrival (ms).
    pub time: u64,
}

impl JobError {
    /// The public `live/err` line.
    pub fn public(&self) -> Value {
        let mut v = serde_json::json!({
            "phaseNum": self.phase_num.to_string(),
            "what": self.what,
            "code": self.code,
            "message": self.message,
        });
        for (k, f) in [
            ("taskId", &self.task_id),
            ("input", &self.input),
            ("p0input", &self.p0input),
            ("stderr", &self.stderr),
            ("core", &self.core),
            ("server", &self.server),
        ] {
            if let Some(s) = f {
                v[k] = Value::String(s.clone());
            }
        }
        v
    }
}

/// An agent's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentBeat {
    /// Record version.
    pub v: u32,
    /// The storage node it runs beside.
    pub storage_id: String,
    /// New at every agent start: tasks claimed by an older generation were lost.
    pub generation: String,
    /// Last beat (ms).
    pub timestamp: u64,
    /// Where the agent serves its internal endpoints (`mlogin` sessions), for the front doors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A record with the etag it was read at.
#[derive(Debug, Clone)]
pub struct Stored<T> {
    /// Key.
    pub key: String,
    /// Value.
    pub value: T,
    /// Moray etag (for conditional updates).
    pub etag: String,
    /// Moray's serial id of the write that made this version: later writes have larger ids.
    pub id: i64,
}

/// A failure of the job store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Moray failed.
    #[error(transparent)]
    Moray(#[from] moray::Error),
    /// A record could not be read.
    #[error("malformed {bucket} record {key}: {err}")]
    Malformed {
        /// Bucket.
        bucket: &'static str,
        /// Key.
        key: String,
        /// Why.
        err: serde_json::Error,
    },
}

/// Typed access to the job buckets.
#[derive(Debug, Clone)]
pub struct JobStore {
    moray: MorayClient,
}

fn s() -> IndexSpec {
    IndexSpec::new(IndexType::String)
}
fn n() -> IndexSpec {
    IndexSpec::new(IndexType::Number)
}

/// Renders a value for a filter.
pub fn esc(v: &str) -> String {
    moray::filter::escape(v)
}

impl JobStore {
    /// A store over the system shard's client.
    pub fn new(moray: MorayClient) -> JobStore {
        JobStore { moray }
    }

    /// The Moray client.
    pub fn moray(&self) -> &MorayClient {
        &self.moray
    }

    /// Creates the buckets (idempotent).
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn setup(&self) -> Result<(), StoreError> {
        let buckets = [
            (
                JOBS,
                BucketConfig::new(1)
                    .with_index("owner", s())
                    .with_index("state", s()),
            ),
            (
                ITEMS,
                BucketConfig::new(1)
                    .with_index("jobId", s())
                    .with_index("toPhase", n())
                    .with_index("state", s())
                    .with_index("rIdx", n()),
            ),
            (
                TASKS,
                BucketConfig::new(1)
                    .with_index("jobId", s())
                    .with_index("server", s())
                    .with_index("state", s())
                    .with_index("phase", n())
                    .with_index("result", s()),
            ),
            (ERRORS, BucketConfig::new(1).with_index("jobId", s())),
            (AGENTS, BucketConfig::new(1).with_index("storageId", s())),
        ];
        for (name, cfg) in buckets {
            match self.moray.get_bucket(name).await {
                Ok(_) => {}
                Err(moray::Error::BucketNotFound { .. }) => {
                    match self.moray.create_bucket(name, cfg).await {
                        Ok(_) | Err(moray::Error::BucketConflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads one record.
    ///
    /// # Errors
    /// Moray failures; `Ok(None)` when missing.
    pub async fn get<T: DeserializeOwned>(
        &self,
        bucket: &'static str,
        key: &str,
    ) -> Result<Option<Stored<T>>, StoreError> {
        match self.moray.get_object(bucket, key).await {
            Ok(r) => Ok(Some(Stored {
                value: serde_json::from_value(r.value).map_err(|err| StoreError::Malformed {
                    bucket,
                    key: key.to_owned(),
                    err,
                })?,
                key: r.key,
                etag: r.etag,
                id: r.id,
            })),
            Err(moray::Error::ObjectNotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records matching `filter`, in write order (`_id`), at most `limit`.
    ///
    /// # Errors
    /// Moray failures or malformed records.
    pub async fn find<T: DeserializeOwned>(
        &self,
        bucket: &'static str,
        filter: &str,
        limit: u64,
    ) -> Result<Vec<Stored<T>>, StoreError> {
        self.find_from(bucket, filter, 0, limit).await
    }

    /// Like [`find`](Self::find), skipping `offset` matches.
    ///
    /// # Errors
    /// Moray failures or malformed records.
    pub async fn find_from<T: DeserializeOwned>(
        &self,
        bucket: &'static str,
        filter: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<Stored<T>>, StoreError> {
        let opts = FindOptions {
            limit: Some(limit),
            offset: (offset > 0).then_some(offset),
            sort: vec![Sort::asc("_id")],
            no_count: true,
        };
        let recs = self.moray.find_objects(bucket, filter, opts).await?;
        recs.into_iter()
            .map(|r| {
                Ok(Stored {
                    value: serde_json::from_value(r.value).map_err(|err| {
                        StoreError::Malformed {
                            bucket,
                            key: r.key.clone(),
                            err,
                        }
                    })?,
                    key: r.key,
                    etag: r.etag,
                    id: r.id,
                })
            })
            .collect()
    }

    /// Every record matching `filter` (paged).
    ///
    /// # Errors
    /// Moray failures or malformed records.
    pub async fn find_all<T: DeserializeOwned>(
        &self,
        bucket: &'static str,
        filter: &str,
    ) -> Result<Vec<Stored<T>>, StoreError> {
        const PAGE: u64 = 1000;
        let mut out = Vec::new();
        loop {
            let page = self
                .find_from(bucket, filter, out.len() as u64, PAGE)
                .await?;
            let done = (page.len() as u64) < PAGE;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Writes one record.
    ///
    /// # Errors
    /// Moray failures, including `EtagConflict` for a failed condition.
    pub async fn put<T: Serialize>(
        &self,
        bucket: &'static str,
        key: &str,
        value: &T,
        opts: PutOptions,
    ) -> Result<String, StoreError> {
        let v = serde_json::to_value(value).expect("records serialise");
        Ok(self.moray.put_object(bucket, key, v, opts).await?.etag)
    }

    /// Runs several writes in one transaction; answers each write's new etag, in order.
    ///
    /// # Errors
    /// Moray failures; nothing is written then.
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<Vec<Option<String>>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let done = self.moray.batch(ops).await?;
        Ok(done.results.into_iter().map(|r| r.etag).collect())
    }
}

/// A batch put.
pub fn put_op<T: Serialize>(bucket: &str, key: &str, value: &T, options: PutOptions) -> BatchOp {
    BatchOp::Put {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        value: serde_json::to_value(value).expect("records serialise"),
        options,
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    manta_types::time::now_ms()
}

/// ISO 8601 for now.
pub fn now_iso() -> String {
    manta_types::time::iso8601_ms(now_ms())
}

/// Where the metadata record of the map input `path` lives: the Moray bucket and key. Objects
/// of the directory tree are in `manta` under their owner's storage key; S3 objects
/// (`/:login/buckets/<bucket>/objects/<key>`) in the S3 objects bucket under `<bucket>/<key>`,
/// whose owner the caller must still compare with the job's (bucket names are region-wide).
/// `None` when `path` names a bucket or bucket directory rather than an object.
pub fn input_record(p: &manta_types::MantaPath, owner: &str) -> Option<(&'static str, String)> {
    if p.area() == Some(manta_types::path::Area::Buckets) {
        let b = manta_types::s3::BucketObjectPath::parse(&p.to_string())?;
        Some((manta_types::s3::OBJECTS_BUCKET, b.record_key()))
    } else {
        Some(("manta", p.storage_key(owner)))
    }
}

#[cfg(test)]
mod input_record_tests {
    use super::input_record;
    use manta_types::MantaPath;

    #[test]
    fn tree_objects_and_bucket_objects() {
        let owner = "6f1c2d0e-0000-4000-8000-000000000001";
        let p = MantaPath::parse("/jill/stor/a/b.txt").unwrap();
        assert_eq!(
            input_record(&p, owner),
            Some(("manta", p.storage_key(owner)))
        );
        let p = MantaPath::parse("/jill/buckets/logs/objects/2024/a.txt").unwrap();
        assert_eq!(
            input_record(&p, owner),
            Some(("manta_s3_objects", "logs/2024/a.txt".to_owned()))
        );
        for not_object in [
            "/jill/buckets",
            "/jill/buckets/logs",
            "/jill/buckets/logs/objects",
        ] {
            assert_eq!(
                input_record(&MantaPath::parse(not_object).unwrap(), owner),
                None
            );
        }
    }
}
