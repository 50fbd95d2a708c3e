//! The host side of a partition: what the node prepares and enforces on the machine so that a
//! partition's processes run as its own user, inside its own limits, with its own files.
//!
//! * [`isolation`]: the seam deciding who a partition runs as (a unix user each as root);
//! * [`layout`]: partition directories at format time, and the registration sent to the master;
//! * [`partition_fs`]: the node touching a partition's files as the partition (no link followed);
//! * [`jail`]: a cgroup per partition, the uid sweep, `pids.max`;
//! * [`quota`]: the disk budget (project quotas, or measured);
//! * [`resources`]: the seam for CPU, memory and real-time limits; [`rt_resources`] its
//!   adapter to the `rt` crate.
//!
//! Partition addresses and TAPs are in [`crate::net`]; the raw system calls in [`crate::sys`].

pub mod isolation;
pub mod jail;
pub mod layout;
pub mod partition_fs;
pub mod quota;
pub mod resources;
pub mod rt_resources;
