//! The jobs API apart from the machinery that runs jobs: what a job is ([`spec`]), how its
//! state is kept in Moray ([`records`]), and the HTTP handlers the front door calls for
//! `/:login/jobs` ([`api`]). The front door links this crate, not the supervisor, the agents
//! or their container code, which live in the `jobs` crate and share these records.
//!
//! # Layout
//! - [`spec`]: the job JSON users submit, parsed and validated.
//! - [`records`]: job state in Moray (jobs, items, tasks, errors, agent heartbeats).
//! - [`api`]: the jobs HTTP API ([`api::JobsApi`], [`api::handle`]).
//! - [`session`]: an `mlogin` session as the front door asks an agent for one.

pub mod api;
pub mod records;
pub mod session;
pub mod spec;
