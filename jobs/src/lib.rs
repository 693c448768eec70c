//! Jobs: map/reduce over stored objects, run in OS containers on the storage nodes that hold
//! the data.
//!
//! # Layout
//! - [`spec`]: the job JSON users submit, parsed and validated.
//! - [`records`]: job state in Moray (jobs, items, tasks, errors, agent heartbeats).
//! - [`api`]: the jobs HTTP API the front door calls.
//! - [`supervisor`]: the leader-elected supervisor that drives jobs.
//! - [`fdclient`]: the front door, acting for a job's owner with its token.

pub mod agent;
pub mod api;
pub mod fdclient;
pub mod gateway;
pub mod records;
pub mod spec;
pub mod supervisor;
pub mod tools;
