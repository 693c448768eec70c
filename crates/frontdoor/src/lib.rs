//! The front door: the Manta HTTP API over Moray and the storage nodes (not yet built).
