//! # rt — real-time partitions
//!
//! Leaf crate (no workspace dependencies). It detects what the host can give (cgroup v1/v2/
//! hybrid, RT group scheduling, `sched_rt_runtime_us`, PREEMPT_RT, isolated CPUs, governors),
//! applies a per-partition resource profile (exclusive cpuset, memory limit, CPU weight/quota,
//! SCHED_FIFO/RR with a priority, memory locking, RT budget), keeps other partitions, IRQs and
//! unbound kernel threads off reserved CPUs, starts processes inside the partition with their
//! policy, reads usage back and restores everything on release. `rt-probe` measures what the partition gets.
//!
//! ## How node-edge uses it
//!
//! ```no_run
//! # fn main() -> Result<(), rt::Error> {
//! use std::os::unix::process::CommandExt;
//! let host = rt::HostReport::detect()?;                              // 1. readiness report
//! let pool = host.default_rt_pool.clone();                           //    label rt_cpus = pool.to_string()
//! let mgr = rt::Manager::new(host, rt::ManagerConfig::new("/var/lib/slapos-edge/rt", pool))?;
//! let spec: rt::ProfileSpec = serde_json::from_str(r#"{"cpus":1,"policy":"fifo","priority":80}"#).unwrap();
//! let applied = mgr.apply("slappart3", &spec)?;                      // 2. validate + apply (idempotent)
//! let mut cmd = std::process::Command::new("/srv/slappart3/bin/enb");
//! cmd.envs(applied.child.env());
//! let setup = applied.child.clone();
//! unsafe { cmd.pre_exec(move || setup.run()) };                      // 3. SAFETY: async-signal-safe
//! let mut child = cmd.spawn().map_err(|e| rt::Error::Sys { op: "spawn".into(), source: e })?;
//! let usage = mgr.usage("slappart3")?;                               // 4. accounting
//! # let _ = (usage, child.wait());
//! mgr.release("slappart3")?;                                         // 5. stop/destroy
//! # Ok(()) }
//! ```
//! After a node restart, calling `apply` with the same profile adopts the existing cgroups (6);
//! [`Manager::records`] lists what is applied so stale partitions can be released.
//!
//! ## Design
//!
//! - **Pure core, I/O at the edge.** [`manager::plan`] validates and resolves a profile from a
//!   [`manager::PlanContext`] (host report, pool, other partitions, RT bandwidth left) with no
//!   I/O; every refusal is a typed [`ProfileError`] returned before anything is written.
//! - **Kernel paths are parameters.** Everything reads and writes below a [`HostPaths`] root;
//!   unit tests run the whole apply/release cycle on fake v1 and v2 trees in a tempdir.
//! - **Own cgroupfs module** (`kfs` + `manager`, ~std::fs) instead of cgroups-rs: cgroups-rs
//!   pulls zbus and a second nix (+49 crates), hard-codes the v2 root to `/sys/fs/cgroup` (so it
//!   cannot drive the hybrid `/sys/fs/cgroup/unified` of this machine) and writes into the root's
//!   `cgroup.subtree_control` behind the caller's back (crates.md §1a). rt needs ~10 files per
//!   partition and must record exactly what it changed in order to restore it.
//! - **One platform facade** (`sys`): all libc/nix calls; non-Linux builds get `Unsupported`.
//!
//! ## Modules
//!
//! - [`host`] — the readiness report: what the machine offers ([`HostReport`], [`HostPaths`]);
//! - [`profile`] — the partition profile ([`ProfileSpec`]) and its host-independent checks;
//! - [`manager`] — validate, apply, release, read back; its module doc maps its parts: pure
//!   planning, persisted state, cgroup layout, shared cpuset groups, cgroup v1, cgroup v2;
//! - [`child`] — the `pre_exec` setup of a partition's processes;
//! - [`irq`] — IRQ affinity steering and restoration; [`kthread`] — the same for unbound
//!   kernel threads;
//! - [`usage`] — per-partition usage read from its cgroups (its `read_v1`/`read_v2` also read
//!   groups rt does not manage: the node's partition jails);
//! - [`pmqos`] — holding `/dev/cpu_dma_latency`;
//! - [`probe`] — the latency probe behind `rt-probe`;
//! - [`sys`] — the platform facade; `kfs` — kernel-file helpers; [`cpulist`], [`error`].
//!
//! ## Decisions
//!
//! - **cgroup v1**: the subtree and exclusive groups get `cpuset.cpu_exclusive=1` (the kernel
//!   only accepts exclusive children under an exclusive parent; configurable off). Each RT
//!   partition's `cpu` group gets `cpu.rt_runtime_us` (new groups start at 0 and FIFO fails
//!   there with EPERM), and the subtree gets the sum of its partitions' budgets, written parent
//!   first when growing and child first when shrinking. The budget is checked against what the
//!   root group has left (`sched_rt_runtime_us` minus the host's other groups): with the default
//!   950000 only one RT partition fits; several need smaller `rt_runtime_us`.
//! - **cgroup v2**: exclusive CPUs become a remote partition (`cpuset.cpus.exclusive` on the
//!   subtree and the group, `cpuset.cpus.partition=root`, read back; Linux 6.7+, else
//!   [`ProfileError::V2PartitionUnsupported`]). RT group scheduling is v1-only:
//!   `rt_runtime_us` on v2 is refused ([`ProfileError::RtRuntimeUnsupported`]); when the
//!   kernel has (or may have) CONFIG_RT_GROUP_SCHED, a fifo/rr partition must stay outside the
//!   cpu controller, so rt enables `cpu` in the subtree only for partitions asking for
//!   weight/quota and refuses the mix ([`ProfileError::RtUnderCpuController`]) instead of
//!   silently dropping FIFO. With RT group scheduling known off (Debian kernels) both coexist.
//! - **Exclusivity**: every non-exclusive cpuset group under the subtree (managed or not) is
//!   kept at `its original CPUs ∖ reserved`; IRQ and unbound kernel-thread affinities at
//!   `original ∖ reserved`. Originals are persisted, so release in any order restores exact
//!   values. Host user processes outside the subtree are not moved (no housekeeping set is
//!   imposed); they run SCHED_OTHER and cannot preempt the partition's FIFO threads.
//! - **mlock**: `mlockall` does not survive `execve`, so for spawned processes `mlock = true`
//!   raises RLIMIT_MEMLOCK and exports `SLAPOS_RT_MLOCK=1` ([`child`] explains).
//! - **PM-QoS**: the manager holds `/dev/cpu_dma_latency` at 0 while an RT partition exists.
//!
//! ## Limits
//!
//! - One manager per host: two managers with different state directories would each record the
//!   other's steered IRQ and kthread values as originals.
//! - v2 partitions are tested on a fake tree only (this machine's cgroup2 has no cpuset).
//! - The RT period of groups is the kernel default (1 s); `rt_runtime_us` is per second.

pub mod args;
pub mod child;
pub mod cpulist;
pub mod error;
pub mod host;
pub mod irq;
mod kfs;
pub mod kthread;
pub mod manager;
pub mod pmqos;
pub mod probe;
pub mod profile;
pub mod sys;
pub mod usage;

pub use child::ChildSetup;
pub use cpulist::CpuList;
pub use error::{Error, ProfileError, Result};
pub use host::{CgroupMode, HostPaths, HostReport};
pub use manager::{Applied, Manager, ManagerConfig, PartitionRecord, Plan, Released};
pub use profile::{Policy, ProfileSpec};
pub use usage::Usage;
