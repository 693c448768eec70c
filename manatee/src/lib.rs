//! Manatee: replicated PostgreSQL with automatic failover (not yet built).
