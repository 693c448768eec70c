//! Jobs: map/reduce over stored objects, run in OS containers on the storage nodes that hold
//! the data, so the bytes of a map input never cross the network.
//!
//! Who calls what: the front door serves the jobs HTTP API through [`api::handle`] (users and
//! the `mjob` tools create jobs and add inputs; the spec, the records and the handlers are the
//! `manta-jobs-api` crate, re-exported here, so the front door does not link what follows);
//! the **supervisor** (`jobs-supervisor`, one
//! leader elected through etcd) turns inputs into tasks and drives every job to its end; an
//! **agent** (`jobs-agent`) beside each storage node runs the tasks dispatched to its node in
//! OCI containers (`runc`), one container serving many tasks of one job and phase in turn;
//! inside a container the tools of `jobs-tool` (`mcat`, `mpipe`, `msplit`, `mtee`, `mget`,
//! `mls`, `mput`) reach the store only through a Unix socket the agent serves for the task the
//! container runs, and `maggr` aggregates text by key. All of them coordinate only through records in Moray.
//!
//! # Layout
//! - [`spec`], [`records`], [`api`]: from `manta-jobs-api` (the job JSON, job state in Moray,
//!   the HTTP handlers).
//! - [`supervisor`]: the leader-elected supervisor.
//! - [`agent`]: the per-node agent; [`agent::container`] the OCI bundle; [`agent::warm`]
//!   containers kept for a job and phase's next task; [`agent::ctl`] the task's control
//!   socket; [`agent::image`] OCI images phases run in (verified, unpacked, cached).
//! - [`tools`]: the in-container tools and `lackey`, the container's first process.
//! - [`fdclient`]: the front door, acting for a job's owner with its token.
//! - [`gateway`]: the jobs API as a server of its own in front of a front door (`jobs-api`).
//!
//! # Guarantees
//! - Nothing lives only in a process: a restart of the supervisor or of any agent loses no
//!   job, input, output or error. Every step is a conditional write (or one batch), so a
//!   deposed supervisor and its successor never both apply the same step.
//! - Exactly one supervisor acts at a time (etcd election under a lease of a few seconds).
//! - A map task runs on a node listed in its input's copies; an infrastructure failure (agent
//!   gone, copy missing) runs it again on another copy, up to three attempts. A user failure
//!   (non-zero exit, killed at a limit) is never retried: it is reported with its stderr.
//! - Only the outputs of successful tasks flow to the next phase; an output is committed
//!   (bytes fsynced on this node, metadata in Moray) before the task that made it is done.
//! - A phase with an `image` runs in that image's files (fetched as the job's owner, every
//!   blob and layer checked against its digest, no entry outside its root); without one, in
//!   the node's own `/usr` and `/etc`, read-only.
//! - A task sees only its own input, its assets and its scratch space (which an earlier task
//!   of the same job and phase may have used, as in the original; never another job's); it
//!   acts on the store only as the job's owner, through the front door.
//!
//! # Example
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let job = jobs::spec::parse(br#"{"phases":[{"exec":"wc -l"},{"type":"reduce","exec":"awk '{s+=$1} END {print s}'"}]}"#)?;
//! assert_eq!(job.phases.len(), 2);
//! let cfg = jobs::supervisor::SupervisorConfig::new(
//!     "http://127.0.0.1:2020",
//!     vec!["http://127.0.0.1:2379".into()],
//!     "http://127.0.0.1:8080",
//! );
//! jobs::supervisor::run(cfg, manta_util::shutdown_on_signals()).await
//! # }
//! ```

pub mod agent;
pub mod fdclient;
pub mod gateway;
pub mod maggr;
pub mod supervisor;
pub mod tools;

pub use manta_jobs_api::{api, records, spec};
