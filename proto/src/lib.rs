//! # slapos-proto — the one wire crate
//!
//! Everything that crosses the boundary between master-lite, node-edge and the CLI lives here:
//! the protocol version, validated identifiers ([`ids`]) and the JSON messages of the native API
//! ([`api`]). The crate does no I/O and depends on no workspace crate.
//!
//! Invariants:
//! * ids that can become paths, cgroup names or user names ([`ids::PartitionId`],
//!   [`ids::ComputerId`], [`ids::SoftwareType`]) are validated on entry and cannot hold `/`,
//!   `..` or control characters;
//! * the wire shape of [`api::DesiredState`] is locked by a golden test;
//! * a change that breaks compatibility bumps [`PROTOCOL_VERSION`].

pub mod api;
pub mod identity;
pub mod ids;
pub mod slap;
pub mod text;

pub use api::*;
pub use ids::*;

/// Version of the native protocol. A node refuses a master speaking another version.
pub const PROTOCOL_VERSION: u32 = 1;

/// Header naming the partition an instance request comes from: `computer/partition`.
pub const PARTITION_HEADER: &str = "x-slapos-partition";

/// Largest request body the master accepts (bytes).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Longest a desired-state long poll is held (seconds).
pub const MAX_LONG_POLL_SECS: u64 = 60;
