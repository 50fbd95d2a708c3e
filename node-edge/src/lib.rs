//! # node-edge — the edge node
//!
//! Stateless agent: polls the master (native protocol), installs the software releases it is
//! told to and converges every computer partition to its desired state.
