//! End-to-end tests of a whole region live in `tests/tests/`.
