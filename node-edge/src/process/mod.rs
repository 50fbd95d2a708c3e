//! The processes the node runs for a partition and for builds, and what they leave behind.
//!
//! * [`supervisor`]: one task per service, restarted with capped exponential backoff, its
//!   output in a rotated log; also the launch of any partition process (identity, limits,
//!   environment, jail);
//! * [`promise`]: a check command with a time limit, and when to run it again (pure);
//! * [`procs`]: process groups, pid records that survive a node restart, orphan clean-up;
//! * [`logfile`]: size-rotated log files written through the partition's filesystem identity.

pub mod logfile;
pub mod procs;
pub mod promise;
pub mod supervisor;
