//! Typed async client for the Manta HTTP API (not yet built).
