//! The OS calls of the TTI loop: monotonic clock, absolute sleep, scheduling, affinity, memory
//! locking, signals. Each `unsafe` block is one libc call whose return code becomes an
//! `io::Result` at once.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Monotonic time, ns.
pub fn now_ns() -> u64 {
    // SAFETY: an all-zero timespec is valid (32-bit musl adds padding fields).
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until monotonic time `t_ns` (absolute, like cyclictest), resuming after signals
/// unless `stop` is set.
pub fn sleep_until_ns(t_ns: u64, stop: &AtomicBool) -> io::Result<()> {
    // SAFETY: an all-zero timespec is valid (musl adds padding fields).
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    ts.tv_sec = (t_ns / 1_000_000_000) as _;
    ts.tv_nsec = (t_ns % 1_000_000_000) as _;
    loop {
        // SAFETY: `ts` is a valid timespec; the remainder pointer may be null with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        match rc {
            0 => return Ok(()),
            libc::EINTR if !stop.load(Ordering::Relaxed) => continue,
            libc::EINTR => return Ok(()),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE)`.
pub fn mlockall() -> io::Result<()> {
    // SAFETY: plain syscall with constant flags.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the calling thread's policy (`SCHED_FIFO`/`SCHED_OTHER`) and priority.
pub fn set_scheduler(policy: libc::c_int, priority: i32) -> io::Result<()> {
    // SAFETY: an all-zero sched_param is valid (musl has extra SCHED_SPORADIC fields).
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = priority;
    // SAFETY: raw sched_setscheduler(2) (musl's wrapper returns ENOSYS by design): pid 0 is the
    // calling thread; `param` is a valid sched_param the kernel only reads.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            policy,
            &param as *const libc::sched_param,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's policy name and priority.
pub fn scheduler() -> (String, u8) {
    // SAFETY: raw sched_getscheduler(2) (musl's wrapper returns ENOSYS); pid 0 is the caller.
    let policy = unsafe { libc::syscall(libc::SYS_sched_getscheduler, 0) } as libc::c_int;
    // SAFETY: an all-zero sched_param is valid.
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    // SAFETY: raw sched_getparam(2); `param` is a valid, writable sched_param.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getparam,
            0,
            &mut param as *mut libc::sched_param,
        )
    };
    let prio = if rc == 0 {
        param.sched_priority.clamp(0, 99) as u8
    } else {
        0
    };
    let name = match policy {
        libc::SCHED_FIFO => "fifo",
        libc::SCHED_RR => "rr",
        libc::SCHED_OTHER => "other",
        libc::SCHED_BATCH => "batch",
        libc::SCHED_IDLE => "idle",
        _ => "unknown",
    };
    (name.to_string(), prio)
}

/// Pins the calling thread to `cpus`.
pub fn set_affinity(cpus: &[u32]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c as usize >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CPU {c} beyond CPU_SETSIZE"),
            ));
        }
        // SAFETY: `c` is below CPU_SETSIZE (checked above), so the bit is inside `set`.
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the given size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPUs of the calling thread's affinity mask.
pub fn affinity() -> io::Result<Vec<u32>> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is writable and of the given size.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as u32)
        // SAFETY: `c` is below CPU_SETSIZE, so the bit is inside `set`.
        .filter(|&c| unsafe { libc::CPU_ISSET(c as usize, &set) })
        .collect())
}

/// Whether this process has locked memory (`VmLck` of /proc/self/status is non-zero).
pub fn memory_locked() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .is_some_and(|kb| kb > 0)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs SIGTERM/SIGINT handlers that set the returned flag.
pub fn stop_flag() -> io::Result<&'static AtomicBool> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: an all-zero sigaction is valid (empty mask, no flags).
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        // SAFETY: `sa` is initialised; the handler only stores to an atomic (async-signal-safe).
        let rc = unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(&STOP)
}
