//! End-to-end tests of a whole region live in `tests/tests/`. This library holds what they and
//! the fault soak share: the [`workload`] that records a history, the [`faults`] injected
//! meanwhile, and the [`checker`] of the history.

pub mod checker;
pub mod faults;
pub mod workload;
