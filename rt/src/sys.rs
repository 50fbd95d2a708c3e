//! The platform facade: every scheduler, affinity, memory-locking, rlimit and clock call of the
//! crate. `cfg(target_os)` appears here only; other targets get functions returning
//! `ErrorKind::Unsupported`, so the workspace still builds there.

use std::io;

use crate::cpulist::CpuList;
use crate::profile::Policy;

pub use imp::*;

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::sys::mman::{MlockAllFlags, mlockall};
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use nix::sys::time::TimeSpec;
    use nix::time::{ClockId, ClockNanosleepFlags, clock_gettime, clock_nanosleep};
    use nix::unistd::Pid;

    fn nix_err(e: nix::Error) -> io::Error {
        io::Error::from_raw_os_error(e as i32)
    }

    /// A sched_param with `prio`; musl's has extra (SCHED_SPORADIC) fields, so no struct literal.
    fn sched_param(prio: libc::c_int) -> libc::sched_param {
        // SAFETY: sched_param is plain old data; all-zero is a valid value on every libc.
        let mut p: libc::sched_param = unsafe { std::mem::zeroed() };
        p.sched_priority = prio;
        p
    }

    /// `sched_setscheduler(pid, policy, prio)`; pid 0 is the calling thread.
    pub fn set_scheduler(pid: i32, policy: Policy, priority: u32) -> io::Result<()> {
        let prio = if policy.is_realtime() {
            priority as libc::c_int
        } else {
            0
        };
        let param = sched_param(prio);
        // SAFETY: raw sched_setscheduler(2): pid and policy by value, `param` a valid, initialised
        // sched_param living across the call that the kernel only reads. The raw syscall, not the
        // libc wrapper: musl's wrapper returns ENOSYS by design (static aarch64 builds).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_setscheduler,
                pid,
                policy.as_libc(),
                &param as *const libc::sched_param,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Policy and RT priority of `pid` (0 = calling thread). Unknown policies (SCHED_IDLE,
    /// SCHED_BATCH, SCHED_DEADLINE) read as `None`.
    pub fn get_scheduler(pid: i32) -> io::Result<(Option<Policy>, u32)> {
        // SAFETY: raw sched_getscheduler(2) takes a pid by value and touches no memory of ours
        // (raw syscall: musl's wrapper returns ENOSYS).
        let policy = unsafe { libc::syscall(libc::SYS_sched_getscheduler, pid) };
        if policy < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut param = sched_param(0);
        // SAFETY: raw sched_getparam(2); `param` is valid writable storage for one sched_param.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_getparam,
                pid,
                &mut param as *mut libc::sched_param,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((
            Policy::from_libc(policy as libc::c_int),
            param.sched_priority.max(0) as u32,
        ))
    }

    /// Pins `pid` (0 = calling thread) to `cpus`.
    pub fn set_affinity(pid: i32, cpus: &CpuList) -> io::Result<()> {
        let mut set = CpuSet::new();
        for c in cpus.iter() {
            set.set(c as usize).map_err(nix_err)?;
        }
        sched_setaffinity(Pid::from_raw(pid), &set).map_err(nix_err)
    }

    /// CPUs `pid` (0 = calling thread) may run on.
    pub fn get_affinity(pid: i32) -> io::Result<CpuList> {
        let set = sched_getaffinity(Pid::from_raw(pid)).map_err(nix_err)?;
        Ok((0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .map(|c| c as u32)
            .collect())
    }

    /// `mlockall(MCL_CURRENT | MCL_FUTURE)` for the calling process.
    pub fn lock_all_memory() -> io::Result<()> {
        mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(nix_err)
    }

    /// Soft and hard RLIMIT_RTPRIO / RLIMIT_MEMLOCK of the calling process.
    // rlim_t is u32 on 32-bit glibc (armv7) and u64 elsewhere.
    #[allow(clippy::useless_conversion)]
    pub fn get_rlimit(memlock: bool) -> io::Result<(u64, u64)> {
        let res = if memlock {
            Resource::RLIMIT_MEMLOCK
        } else {
            Resource::RLIMIT_RTPRIO
        };
        getrlimit(res)
            .map(|(soft, hard)| (u64::from(soft), u64::from(hard)))
            .map_err(nix_err)
    }

    /// Sets RLIMIT_RTPRIO (memlock = false) or RLIMIT_MEMLOCK (memlock = true).
    pub fn set_rlimit(memlock: bool, soft: u64, hard: u64) -> io::Result<()> {
        let res = if memlock {
            Resource::RLIMIT_MEMLOCK
        } else {
            Resource::RLIMIT_RTPRIO
        };
        setrlimit(res, to_rlim(soft), to_rlim(hard)).map_err(nix_err)
    }

    /// `v` as rlim_t, saturating to RLIM_INFINITY where rlim_t is 32-bit.
    fn to_rlim(v: u64) -> libc::rlim_t {
        libc::rlim_t::try_from(v).unwrap_or(libc::RLIM_INFINITY)
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    pub fn monotonic_ns() -> u64 {
        match clock_gettime(ClockId::CLOCK_MONOTONIC) {
            Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
            // CLOCK_MONOTONIC cannot fail on Linux; 0 keeps this total.
            Err(_) => 0,
        }
    }

    /// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns` (absolute, like cyclictest), retrying
    /// on EINTR.
    pub fn sleep_until_ns(deadline_ns: u64) -> io::Result<()> {
        let ts = TimeSpec::new(
            (deadline_ns / 1_000_000_000) as _,
            (deadline_ns % 1_000_000_000) as _,
        );
        loop {
            match clock_nanosleep(
                ClockId::CLOCK_MONOTONIC,
                ClockNanosleepFlags::TIMER_ABSTIME,
                &ts,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(nix_err(e)),
            }
        }
    }

    /// Number of the CPU the calling thread runs on.
    pub fn current_cpu() -> Option<u32> {
        // SAFETY: sched_getcpu takes no arguments and only returns a value.
        let c = unsafe { libc::sched_getcpu() };
        u32::try_from(c).ok()
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    fn unsupported<T>() -> io::Result<T> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "real-time scheduling is only supported on Linux",
        ))
    }

    /// Unsupported off Linux.
    pub fn set_scheduler(_pid: i32, _policy: Policy, _priority: u32) -> io::Result<()> {
        unsupported()
    }
    /// Unsupported off Linux.
    pub fn get_scheduler(_pid: i32) -> io::Result<(Option<Policy>, u32)> {
        unsupported()
    }
    /// Unsupported off Linux.
    pub fn set_affinity(_pid: i32, _cpus: &CpuList) -> io::Result<()> {
        unsupported()
    }
    /// Unsupported off Linux.
    pub fn get_affinity(_pid: i32) -> io::Result<CpuList> {
        unsupported()
    }
    /// Unsupported off Linux.
    pub fn lock_all_memory() -> io::Result<()> {
        unsupported()
    }
    /// Unsupported off Linux.
    pub fn get_rlimit(_memlock: bool) -> io::Result<(u64, u64)> {
        unsupported()
    }
    /// Unsupported off Linux.
    pub fn set_rlimit(_memlock: bool, _soft: u64, _hard: u64) -> io::Result<()> {
        unsupported()
    }
    /// A process-relative monotonic clock.
    pub fn monotonic_ns() -> u64 {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
    /// Sleeps with `std::thread::sleep` (relative, less precise).
    pub fn sleep_until_ns(deadline_ns: u64) -> io::Result<()> {
        let now = monotonic_ns();
        if deadline_ns > now {
            std::thread::sleep(std::time::Duration::from_nanos(deadline_ns - now));
        }
        Ok(())
    }
    /// Unknown off Linux.
    pub fn current_cpu() -> Option<u32> {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn scheduler_and_affinity_of_this_thread_read_back() {
        let (policy, _prio) = get_scheduler(0).unwrap();
        assert!(policy.is_some());
        let cpus = get_affinity(0).unwrap();
        assert!(!cpus.is_empty());
        // Setting the current affinity again is allowed for any user.
        set_affinity(0, &cpus).unwrap();
        assert_eq!(get_affinity(0).unwrap(), cpus);
        let cpu = current_cpu().unwrap();
        assert!(cpus.contains(cpu));
    }

    #[test]
    fn clock_advances_and_absolute_sleep_returns_after_deadline() {
        let t0 = monotonic_ns();
        let deadline = t0 + 200_000;
        sleep_until_ns(deadline).unwrap();
        assert!(monotonic_ns() >= deadline);
        // A deadline in the past returns at once without error.
        sleep_until_ns(t0).unwrap();
    }

    #[test]
    fn rlimits_read() {
        let (soft, hard) = get_rlimit(true).unwrap();
        assert!(soft <= hard);
    }
}
