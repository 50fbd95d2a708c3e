//! # buffer — store and forward
//!
//! Leaf crate: a segment log of framed records (length, CRC32C, sequence, postcard payload) with
//! group commit, an ack cursor, bounded disk use and recovery that never refuses to start.
//! Filled by the buffer issue.
