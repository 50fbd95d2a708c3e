//! # radio — base-station partitions
//!
//! Leaf crate, pure logic: a typed model of simpleran-compatible eNB/gNB parameters validated
//! against 3GPP tables, generation of a base-station configuration, the RT profile the stack
//! needs, and KPIs parsed from the stack's statistics. Filled by the radio issue.
