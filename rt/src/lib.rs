//! # rt — real-time partitions
//!
//! Leaf crate (no workspace dependencies). Detects what the host can give (cgroup v1/v2,
//! `sched_rt_runtime_us`, PREEMPT_RT, isolated CPUs), applies a per-partition resource profile
//! (exclusive cpuset, memory limit, CPU weight, SCHED_FIFO/RR with a priority, `mlockall`) and
//! reads per-partition usage back. Filled by the rt issue.
