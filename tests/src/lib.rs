//! End-to-end tests of a whole region live in `tests/tests/`. This library holds what they and
//! the fault soak share: the [`workload`] that records a history, the [`faults`] injected
//! meanwhile, the [`checker`] of the history, and
//! the [`run`] that puts them together (the short run in the suite, and the `soak` binary).

pub mod checker;
pub mod faults;
pub mod run;
pub mod workload;
