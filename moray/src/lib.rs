//! Moray: key-value metadata over PostgreSQL (not yet built).
