//! The command line tools people touch: `manta-adm` for operators (bring a whole region up on
//! one machine, show its status, stop it), and, as the front door lands, the `manta` multi-call
//! binary (`mput`, `mget`, `mls`, ...).
//!
//! # Layout
//! - [`region`]: the services of a one-machine region, their data, logs and pid files under one
//!   directory; `up`, `status`, `down`.
//! - [`tools`]: the `manta` multi-call binary (`mput`, `mget`, `mls`, `mfind`, `msync`, ...).
//! - [`mjob`]: the `mjob` tool (compute jobs), run by that binary.
//!
//! # Guarantees
//! - `up` is idempotent: running services are left alone, stopped ones restart with their data
//!   and on the ports chosen the first time.
//! - `down` stops services in reverse start order and never leaves one running silently.

pub mod mjob;
pub mod region;
pub mod tools;
