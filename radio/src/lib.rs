//! # radio — base-station partitions
//!
//! Leaf crate, pure logic: a typed model of simpleran-compatible eNB/gNB parameters validated
//! against 3GPP tables, generation of a base-station configuration, the RT profile the stack
//! needs, and KPIs parsed from the stack's statistics.

pub mod bands;
pub mod cpulist;
pub mod de;
pub mod params;
pub mod plan;
pub mod validate;
