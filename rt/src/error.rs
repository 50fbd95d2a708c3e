//! Error types. [`Error`] is what applying, releasing and reading does; [`ProfileError`] is a
//! profile refused by validation, always returned before anything on the host was changed.

use std::io;
use std::path::PathBuf;

use crate::cpulist::CpuList;
use crate::profile::Policy;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An operation on the host failed. Messages carry the operation and the path or value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a kernel or state file failed.
    #[error("failed to read `{}`: {source}", path.display())]
    Read {
        /// File read.
        path: PathBuf,
        /// OS error.
        source: io::Error,
    },
    /// Writing a kernel or state file failed.
    #[error("failed to write `{value}` to `{}`: {source}", path.display())]
    Write {
        /// File written.
        path: PathBuf,
        /// Value written (trimmed).
        value: String,
        /// OS error.
        source: io::Error,
    },
    /// Creating or removing a directory (cgroup or state) failed.
    #[error("failed to {op} `{}`: {source}", path.display())]
    Dir {
        /// "create directory", "remove cgroup", "list directory"…
        op: &'static str,
        /// Directory.
        path: PathBuf,
        /// OS error.
        source: io::Error,
    },
    /// A kernel file held something the crate cannot parse.
    #[error("cannot parse {what} from `{}`: `{value}`", path.display())]
    Parse {
        /// What was expected ("CPU list", "integer", "mountinfo line"…).
        what: &'static str,
        /// File read.
        path: PathBuf,
        /// Offending text.
        value: String,
    },
    /// A state file of the manager is not valid JSON of the expected shape.
    #[error("state file `{}` is corrupt: {source}", path.display())]
    State {
        /// State file.
        path: PathBuf,
        /// Decoder error.
        source: serde_json::Error,
    },
    /// The profile was refused; nothing was changed.
    #[error("profile of partition `{partition}` refused: {source}")]
    Profile {
        /// Partition name.
        partition: String,
        /// Why.
        source: ProfileError,
    },
    /// No cgroup hierarchy is mounted (neither v1 controllers nor cgroup2).
    #[error("no cgroup filesystem found in `{}`", mountinfo.display())]
    NoCgroups {
        /// The mountinfo file read.
        mountinfo: PathBuf,
    },
    /// The partition has no applied profile (no state record).
    #[error("partition `{0}` has no applied profile")]
    NotApplied(String),
    /// Releasing needs the partition's cgroups empty.
    #[error("cgroup `{}` still has tasks {pids:?}: stop the partition's processes before releasing", path.display())]
    Busy {
        /// Cgroup directory.
        path: PathBuf,
        /// Tasks still inside.
        pids: Vec<u32>,
    },
    /// The kernel refused a cgroup-v2 cpuset partition.
    #[error("cgroup v2 refused partition root for `{}`: cpuset.cpus.partition reads `{state}`", path.display())]
    PartitionInvalid {
        /// Cgroup directory.
        path: PathBuf,
        /// What `cpuset.cpus.partition` reads back ("root invalid (…)").
        state: String,
    },
    /// A system call failed.
    #[error("failed to {op}: {source}")]
    Sys {
        /// The call and its arguments, e.g. "sched_setscheduler(0, SCHED_FIFO, 80)".
        op: String,
        /// OS error.
        source: io::Error,
    },
    /// The crate has no implementation of this on the current platform.
    #[error("{0} is only supported on Linux")]
    Unsupported(&'static str),
}

/// Why a profile was refused. Produced by validation, before anything is changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Partition or root names become cgroup directory names.
    #[error("`{0}` is not a valid cgroup name (1..=64 of A-Z a-z 0-9 . _ -, not `.`/`..`)")]
    InvalidName(String),
    /// `cpus` and `cpu_list` are mutually exclusive.
    #[error("`cpus` and `cpu_list` are mutually exclusive")]
    CpusAndCpuList,
    /// `cpus = 0`.
    #[error("`cpus` must be at least 1")]
    ZeroCpus,
    /// `cpu_list = []`.
    #[error("`cpu_list` is empty")]
    EmptyCpuList,
    /// The same CPU twice in `cpu_list`.
    #[error("CPU {0} appears twice in `cpu_list`")]
    DuplicateCpu(u32),
    /// A CPU that is not online on this host.
    #[error("CPU {cpu} does not exist or is offline (online: {online})")]
    CpuOffline {
        /// Requested CPU.
        cpu: u32,
        /// Online CPUs.
        online: CpuList,
    },
    /// A CPU outside the node's RT pool.
    #[error("CPU {cpu} is not in the RT CPU pool ({pool})")]
    CpuNotInPool {
        /// Requested CPU.
        cpu: u32,
        /// The pool.
        pool: CpuList,
    },
    /// A CPU already reserved by another partition.
    #[error("CPU {cpu} is already reserved by partition `{partition}`")]
    CpuReserved {
        /// Requested CPU.
        cpu: u32,
        /// Holder.
        partition: String,
    },
    /// `cpus = N` with fewer than N free CPUs in the pool.
    #[error("{requested} exclusive CPUs requested, free in the RT pool: [{free}]")]
    NotEnoughFreeCpus {
        /// N.
        requested: u32,
        /// Free CPUs.
        free: CpuList,
    },
    /// Reserving these CPUs would leave a non-exclusive cgroup with no CPU.
    #[error("reserving CPUs {reserved} would leave cgroup `{cgroup}` (CPUs {cpus}) with none")]
    WouldEmptyCgroup {
        /// Cgroup path relative to the subtree root ("" for the subtree root's shared pool).
        cgroup: String,
        /// Its CPUs.
        cpus: CpuList,
        /// All reserved CPUs after this profile.
        reserved: CpuList,
    },
    /// fifo/rr without a priority.
    #[error("policy `{0}` needs `priority` (1..=99)")]
    PriorityRequired(Policy),
    /// `priority` with policy other.
    #[error("`priority` is only allowed with policy fifo or rr")]
    PriorityForbidden,
    /// Priority outside 1..=99.
    #[error("priority {0} is outside 1..=99")]
    PriorityOutOfRange(u32),
    /// `cpu_weight` outside 1..=10000.
    #[error("cpu_weight {0} is outside 1..=10000")]
    CpuWeightOutOfRange(u64),
    /// `cpu_quota_us` below 1000 µs.
    #[error("cpu_quota_us {0} is below the kernel minimum of 1000")]
    CpuQuotaOutOfRange(u64),
    /// `cpu_period_us` outside 1000..=1000000.
    #[error("cpu_period_us {0} is outside 1000..=1000000")]
    CpuPeriodOutOfRange(u64),
    /// `cpu_period_us` without `cpu_quota_us`.
    #[error("`cpu_period_us` needs `cpu_quota_us`")]
    PeriodWithoutQuota,
    /// `memory_max_bytes` too small to run anything.
    #[error("memory_max_bytes {0} is below 1 MiB")]
    MemoryTooSmall(u64),
    /// `rt_runtime_us` with policy other.
    #[error("`rt_runtime_us` is only allowed with policy fifo or rr")]
    RtRuntimeWithoutRtPolicy,
    /// `rt_runtime_us` zero or above its period.
    #[error("rt_runtime_us {value} is outside 1..={period}")]
    RtRuntimeOutOfRange {
        /// Requested budget.
        value: u64,
        /// The group's RT period.
        period: u64,
    },
    /// The host cannot run SCHED_FIFO/RR tasks at all.
    #[error("policy {policy} is not available on this host: {reason}")]
    RtUnavailable {
        /// Requested policy.
        policy: Policy,
        /// Why (no CAP_SYS_NICE, sched_rt_runtime_us = 0…).
        reason: String,
    },
    /// The cgroup-v1 RT bandwidth left is smaller than the requested budget.
    #[error(
        "rt_runtime_us {requested_us} exceeds the RT bandwidth left under the cpu hierarchy \
         ({available_us} µs per second); lower rt_runtime_us of this or another partition"
    )]
    RtBudgetExceeded {
        /// Requested budget (µs per second).
        requested_us: u64,
        /// Available (µs per second).
        available_us: u64,
    },
    /// An explicit `rt_runtime_us` on a host without RT group scheduling (cgroup v2, or v1 kernels
    /// without CONFIG_RT_GROUP_SCHED): the budget could not be enforced.
    #[error("rt_runtime_us cannot be enforced on this host: {0}")]
    RtRuntimeUnsupported(String),
    /// cgroup v2 with RT group scheduling: FIFO tasks must stay outside the cpu controller.
    #[error(
        "policy {policy} on cgroup v2 needs the partition outside the cpu controller: {reason}"
    )]
    RtUnderCpuController {
        /// Requested policy.
        policy: Policy,
        /// Which setting or cgroup puts it under the controller.
        reason: String,
    },
    /// A setting needs a controller the host does not offer.
    #[error("`{setting}` needs the cgroup controller `{controller}`, which is not available")]
    ControllerUnavailable {
        /// Controller name.
        controller: &'static str,
        /// Profile field.
        setting: &'static str,
    },
    /// cgroup v2 exclusive CPUs need `cpuset.cpus.exclusive` (Linux ≥ 6.7).
    #[error(
        "exclusive CPUs on cgroup v2 need cpuset.cpus.exclusive (remote partitions, Linux 6.7+), which kernel {kernel} does not have"
    )]
    V2PartitionUnsupported {
        /// The running kernel's release.
        kernel: String,
    },
}
