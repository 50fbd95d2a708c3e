//! Child setup between `fork` and `exec`: join the partition's cgroups, raise rlimits, set the
//! scheduling policy, optionally drop to the partition user — so the program runs inside its
//! partition with its policy from its first instruction.
//!
//! Usage (std or tokio `Command`, both have the same `pre_exec` signature):
//!
//! ```no_run
//! # fn f(setup: rt::ChildSetup) -> std::io::Result<()> {
//! use std::os::unix::process::CommandExt;
//! let mut cmd = std::process::Command::new("/opt/enb/lteenb");
//! cmd.envs(setup.env());
//! let hook = setup.clone();
//! // SAFETY: `ChildSetup::run` is async-signal-safe (no allocation, no locks).
//! unsafe { cmd.pre_exec(move || hook.run()) };
//! let child = cmd.spawn()?;
//! # Ok(()) }
//! ```
//!
//! Order in the child, each step one system call on data prepared in the parent:
//! 1. `setrlimit(RLIMIT_RTPRIO, prio)` and `setrlimit(RLIMIT_MEMLOCK, ∞)` (kept across `execve`
//!    and `setuid`, so an unprivileged program may later change its threads' RT priority or
//!    `mlockall` itself). Raising a hard limit needs CAP_SYS_RESOURCE: without it the limits
//!    are left as they are, unless credentials are dropped (then the spawn fails with EPERM);
//! 2. write `0` (= the writer) to `cgroup.procs` of every hierarchy but cpuset (v1) or of the one
//!    v2 group — the cpu group carries the RT budget, so this precedes step 3;
//! 3. `sched_setscheduler(0, FIFO|RR, prio)`;
//! 4. v1: join the cpuset last. The process is then already FIFO when it is migrated to the
//!    reserved cores, so a core saturated by the partition's lower-priority FIFO threads cannot
//!    starve the joining task (runc commit afc23e3 hit that trap);
//! 5. `setgroups`, `setgid`, `setuid` when [`ChildSetup::with_credentials`] was used (do *not*
//!    use `Command::uid`: std runs it before `pre_exec`, which would leave the steps above
//!    unprivileged).
//!
//! `mlockall` is not called here: the kernel clears memory locks and `MCL_FUTURE` at `execve`
//! (mlockall(2)), so a lock taken before exec would not cover the program. `mlock = true` raises
//! RLIMIT_MEMLOCK and exports `SLAPOS_RT_MLOCK=1`; the program locks itself (`rt-probe --mlock`,
//! `cyclictest -m`). [`ChildSetup::apply_to_current_process`] does lock, for in-process use.
//!
//! Failures surface as the `errno` of the failing step through `Command::spawn` (std passes only
//! the errno from `pre_exec` to the parent).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::cpulist::CpuList;
use crate::error::{Error, Result};
use crate::profile::Policy;

/// Identity to switch to after the privileged steps.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Credentials {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

/// What a partition's process needs set up before `exec`. Cheap to clone, `Send + Sync`, with
/// every path prepared as a C string so [`ChildSetup::run`] allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSetup {
    /// `cgroup.procs` files joined before the policy is set.
    procs_first: Vec<CString>,
    /// v1 cpuset `cgroup.procs`, joined after the policy.
    procs_cpuset: Option<CString>,
    policy: Policy,
    priority: u32,
    mlock: bool,
    cpus: CpuList,
    credentials: Option<Credentials>,
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Parse {
        what: "path without NUL byte",
        path: p.to_owned(),
        value: p.display().to_string(),
    })
}

impl ChildSetup {
    /// Builds a setup joining the cgroup directories `first` (procs files are derived) and then
    /// `cpuset`, with the given policy. `cpus` is informational (exported as `SLAPOS_RT_CPUS`).
    pub fn new(
        first: &[PathBuf],
        cpuset: Option<&Path>,
        policy: Policy,
        priority: u32,
        mlock: bool,
        cpus: CpuList,
    ) -> Result<Self> {
        Ok(Self {
            procs_first: first
                .iter()
                .map(|d| cpath(&d.join("cgroup.procs")))
                .collect::<Result<_>>()?,
            procs_cpuset: cpuset.map(|d| cpath(&d.join("cgroup.procs"))).transpose()?,
            policy,
            priority: if policy.is_realtime() { priority } else { 0 },
            mlock,
            cpus,
            credentials: None,
        })
    }

    /// Switches to `uid`/`gid` (supplementary `groups`) as the last step.
    pub fn with_credentials(mut self, uid: u32, gid: u32, groups: &[u32]) -> Self {
        self.credentials = Some(Credentials {
            uid,
            gid,
            groups: groups.to_vec(),
        });
        self
    }

    /// The scheduling policy the child gets.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Its RT priority (0 for other).
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// The `cgroup.procs` files the child joins, in order.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.procs_first
            .iter()
            .chain(self.procs_cpuset.iter())
            .map(|c| PathBuf::from(std::ffi::OsStr::from_bytes(c.as_bytes())))
            .collect()
    }

    /// Environment for the program: `SLAPOS_RT_POLICY`, `SLAPOS_RT_PRIORITY`, `SLAPOS_RT_CPUS`
    /// (exclusive CPUs, empty when shared), `SLAPOS_RT_MLOCK` (`1` when the program should
    /// `mlockall` itself).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SLAPOS_RT_POLICY".into(), self.policy.to_string()),
            ("SLAPOS_RT_PRIORITY".into(), self.priority.to_string()),
            ("SLAPOS_RT_CPUS".into(), self.cpus.to_string()),
            (
                "SLAPOS_RT_MLOCK".into(),
                if self.mlock { "1" } else { "0" }.into(),
            ),
        ]
    }

    /// Runs the setup in the current process. Meant for `pre_exec`: async-signal-safe, no
    /// allocation, each step one system call; the first failure returns its errno.
    pub fn run(&self) -> io::Result<()> {
        self.steps(false).map_err(|(_, e)| e)
    }

    /// The same steps for the calling process outside `fork` (a partition agent moving itself,
    /// the probe), plus `mlockall(MCL_CURRENT|MCL_FUTURE)` when `mlock` is set. Errors name the
    /// step.
    pub fn apply_to_current_process(&self) -> Result<()> {
        self.steps(true)
            .map_err(|(step, source)| step.error(self, source))
    }

    /// The steps in order; a failure names its step without allocating.
    fn steps(&self, in_process: bool) -> Result<(), (Step<'_>, io::Error)> {
        let strict = self.credentials.is_some();
        let rt = self.policy.is_realtime();
        if rt {
            raise_rlimit(false, u64::from(self.priority), strict)
                .map_err(|e| (Step::RtprioLimit, e))?;
        }
        if self.mlock {
            raise_rlimit(true, rlim_infinity(), strict).map_err(|e| (Step::MemlockLimit, e))?;
        }
        for f in &self.procs_first {
            join_raw(f).map_err(|e| (Step::Join(f), e))?;
        }
        if rt {
            crate::sys::set_scheduler(0, self.policy, self.priority)
                .map_err(|e| (Step::Scheduler, e))?;
        }
        if let Some(f) = &self.procs_cpuset {
            join_raw(f).map_err(|e| (Step::Join(f), e))?;
        }
        if let Some(c) = &self.credentials {
            switch_credentials(c).map_err(|e| (Step::Credentials, e))?;
        }
        if in_process && self.mlock {
            crate::sys::lock_all_memory().map_err(|e| (Step::Mlock, e))?;
        }
        Ok(())
    }
}

/// A setup step, to name a failure.
#[derive(Clone, Copy, Debug)]
enum Step<'a> {
    RtprioLimit,
    MemlockLimit,
    Join(&'a CString),
    Scheduler,
    Credentials,
    Mlock,
}

impl Step<'_> {
    fn error(self, s: &ChildSetup, source: io::Error) -> Error {
        let op = match self {
            Step::RtprioLimit => format!("raise RLIMIT_RTPRIO to {}", s.priority),
            Step::MemlockLimit => "raise RLIMIT_MEMLOCK to unlimited".into(),
            Step::Join(f) => {
                let path = PathBuf::from(std::ffi::OsStr::from_bytes(f.as_bytes()));
                return Error::Write {
                    path,
                    value: "0".into(),
                    source,
                };
            }
            Step::Scheduler => format!("sched_setscheduler(0, {}, {})", s.policy, s.priority),
            Step::Credentials => match &s.credentials {
                Some(c) => format!("switch to uid {} gid {}", c.uid, c.gid),
                None => "switch credentials".into(),
            },
            Step::Mlock => "mlockall(MCL_CURRENT|MCL_FUTURE)".into(),
        };
        Error::Sys { op, source }
    }
}

/// setgroups, setgid, setuid — in that order (after setuid the others would be refused).
fn switch_credentials(c: &Credentials) -> io::Result<()> {
    // SAFETY: `groups` is a live Vec of gid_t; setgroups reads `len` entries from it.
    check(unsafe { libc::setgroups(c.groups.len() as _, c.groups.as_ptr()) })?;
    // SAFETY: plain value argument.
    check(unsafe { libc::setgid(c.gid) })?;
    // SAFETY: plain value argument.
    check(unsafe { libc::setuid(c.uid) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// RLIM_INFINITY widened to u64 (rlim_t is u32 on 32-bit glibc).
#[allow(clippy::useless_conversion)]
fn rlim_infinity() -> u64 {
    u64::from(libc::RLIM_INFINITY)
}

/// Raises RLIMIT_MEMLOCK (`memlock`) or RLIMIT_RTPRIO so the soft limit is at least `value`
/// (the hard limit grows only when needed, never shrinks). Raising a hard limit needs
/// CAP_SYS_RESOURCE; without it (EPERM) the limits stay as they are unless `strict` — a process
/// that keeps root's CAP_SYS_NICE/CAP_IPC_LOCK does not need them, one that drops to a partition
/// user does. Async-signal-safe: getrlimit and setrlimit, no allocation.
fn raise_rlimit(memlock: bool, value: u64, strict: bool) -> io::Result<()> {
    let (soft, hard) = crate::sys::get_rlimit(memlock)?;
    if soft >= value {
        return Ok(());
    }
    match crate::sys::set_rlimit(memlock, value, hard.max(value)) {
        Err(e) if !strict && e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        other => other,
    }
}

/// Writes "0" (the calling process) to a `cgroup.procs` file. Async-signal-safe: open, write,
/// close on a prepared C string.
fn join_raw(procs: &CString) -> io::Result<()> {
    // SAFETY: `procs` is a valid NUL-terminated path owned by the caller for the call's duration.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by us; the buffer is a 1-byte static string.
    let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let err = if n == 1 {
        None
    } else {
        Some(io::Error::last_os_error())
    };
    // SAFETY: closes the descriptor opened above exactly once.
    unsafe { libc::close(fd) };
    match err {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procs_files_keep_cpuset_last_and_env_describes_policy() {
        let s = ChildSetup::new(
            &[PathBuf::from("/cg/cpu/p"), PathBuf::from("/cg/memory/p")],
            Some(Path::new("/cg/cpuset/p")),
            Policy::Fifo,
            80,
            true,
            CpuList::parse("1").unwrap(),
        )
        .unwrap();
        assert_eq!(
            s.procs_files(),
            vec![
                PathBuf::from("/cg/cpu/p/cgroup.procs"),
                PathBuf::from("/cg/memory/p/cgroup.procs"),
                PathBuf::from("/cg/cpuset/p/cgroup.procs")
            ]
        );
        let env: std::collections::BTreeMap<_, _> = s.env().into_iter().collect();
        assert_eq!(env["SLAPOS_RT_POLICY"], "fifo");
        assert_eq!(env["SLAPOS_RT_PRIORITY"], "80");
        assert_eq!(env["SLAPOS_RT_CPUS"], "1");
        assert_eq!(env["SLAPOS_RT_MLOCK"], "1");
        let other = ChildSetup::new(&[], None, Policy::Other, 50, false, CpuList::new()).unwrap();
        assert_eq!(other.priority(), 0, "priority is meaningless for other");
    }

    #[test]
    fn joins_a_fake_cgroup_by_writing_zero() {
        // On a plain directory the "join" is a write of "0" to cgroup.procs we can read back.
        let dir = tempfile::tempdir().unwrap();
        let s = ChildSetup::new(
            &[dir.path().to_owned()],
            None,
            Policy::Other,
            0,
            false,
            CpuList::new(),
        )
        .unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "").unwrap();
        s.run().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cgroup.procs")).unwrap(),
            "0"
        );
        let missing = ChildSetup::new(
            &[dir.path().join("nope")],
            None,
            Policy::Other,
            0,
            false,
            CpuList::new(),
        )
        .unwrap();
        assert_eq!(missing.run().unwrap_err().kind(), io::ErrorKind::NotFound);
        let e = missing.apply_to_current_process().unwrap_err();
        assert!(e.to_string().contains("nope/cgroup.procs"), "{e}");
    }
}
