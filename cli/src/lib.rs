//! The command line tools users touch: the `manta` multi-call binary (`mput`, `mget`, `mls`,
//! `mfind`, `msync`, `mjob`, ...), with the original tools' flags, output and exit codes. It
//! speaks to a region only through the client crate (`manta-client`), like any other client;
//! the operators' `manta-adm` is a crate of its own (`cli/adm`).
//!
//! # Layout
//! - [`tools`]: the multi-call binary's tools and what they share.
//! - [`mjob`]: the `mjob` tool (compute jobs), run by that binary.

pub mod mjob;
pub mod tools;
