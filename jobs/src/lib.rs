//! Jobs: map/reduce in containers next to the data (not yet built).
