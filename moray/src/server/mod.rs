//! The Moray server (being built).
