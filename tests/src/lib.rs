//! End-to-end tests of a whole region live in `tests/tests/`. This library holds what they and
//! the fault soak share: the [`checker`] of a workload's history.

pub mod checker;
