//! Storage node: object bytes on a dataset (not yet built).
