//! Unbound kernel-thread steering: keep kthreads that may run anywhere (`kdamond.0`,
//! `khugepaged`, `kswapd0`, …) off reserved CPUs, restore them afterwards — the same design as
//! [`irq`](crate::irq): the caller keeps the *original* affinity of every kthread it changed and
//! each pass recomputes the target as `original ∖ reserved`; with no CPU reserved every original
//! is written back and the map empties.
//!
//! Originals are keyed by pid *and* carry the comm and start time (`/proc/<pid>/stat` fields 2
//! and 22): an entry whose pid now names another task (pid reuse, reboot) is dropped, never
//! applied to that task.
//!
//! Limits: per-CPU kthreads (`ksoftirqd/N`, `migration/N`, `kworker/N:*`, …) are bound to one
//! CPU and kthreads with `PF_NO_SETAFFINITY` (workqueue workers, including unbound
//! `kworker/uN:*`) are refused by the kernel (EINVAL); both are reported as unsteerable, not
//! as errors. User processes are never touched.

use std::collections::BTreeMap;
use std::io;

use serde::Serialize;

use crate::cpulist::CpuList;
use crate::error::Result;
use crate::host::HostPaths;
use crate::irq::{away_from, numbered_subdirs};
use crate::kfs;

/// `PF_KTHREAD` in `/proc/<pid>/stat` field 9.
const PF_KTHREAD: u64 = 0x0020_0000;
/// `PF_NO_SETAFFINITY`: the kernel refuses `sched_setaffinity` (only the fake tree checks it).
#[cfg(test)]
const PF_NO_SETAFFINITY: u64 = 0x0400_0000;

/// Original affinities of the kthreads changed, persisted by the manager: pid →
/// `"<start time> <original Cpus_allowed_list> <comm>"` (one string, the shape of the IRQ map,
/// whose code it shares in the node binary; the comm is last as it may hold spaces).
pub type KthreadOriginals = BTreeMap<u32, String>;

/// The original CPU list of `entry` when it was recorded for the task `stat` describes (same
/// start time and comm), else `None` (another task holds the pid now).
fn original_of<'a>(entry: &'a str, stat: &Stat) -> Option<&'a str> {
    let (start, rest) = entry.split_once(' ')?;
    let (cpus, comm) = rest.split_once(' ')?;
    (start.parse() == Ok(stat.start) && comm == stat.comm).then_some(cpus)
}

/// What a steering pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KthreadOutcome {
    /// Kthreads whose affinity was set (steered or restored): pid and comm.
    pub changed: Vec<(u32, String)>,
    /// Kthreads that stay on reserved CPUs: pid and the reason (with the comm).
    pub unsteerable: Vec<(u32, String)>,
}

/// What `/proc/<pid>/stat` tells about a task.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    comm: String,
    flags: u64,
    start: u64,
}

/// Parses `/proc/<pid>/stat`: the comm is between the first `(` and the *last* `)` (it may
/// hold spaces and parentheses); fields 3.. follow.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(Stat {
        comm,
        flags: rest.get(9 - 3)?.parse().ok()?,
        start: rest.get(22 - 3)?.parse().ok()?,
    })
}

/// `Cpus_allowed_list` of `/proc/<pid>/status`.
fn allowed_list(status: &str) -> Option<&str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
}

/// The affinity seam: `sched_setaffinity` on the real host, [`fake_set_affinity`] on a fake tree.
fn set_affinity(paths: &HostPaths, pid: u32, cpus: &CpuList) -> io::Result<()> {
    match i32::try_from(pid) {
        Ok(pid) if paths.is_real() => crate::sys::set_affinity(pid, cpus),
        _ => fake_set_affinity(paths, pid, cpus),
    }
}

/// Outside tests a fake tree has no task to move.
#[cfg(not(test))]
fn fake_set_affinity(_paths: &HostPaths, _pid: u32, _cpus: &CpuList) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ESRCH))
}

/// In tests the kernel's answer is emulated on `proc/<pid>/status` (ESRCH when gone, EINVAL for
/// `PF_NO_SETAFFINITY`).
#[cfg(test)]
fn fake_set_affinity(paths: &HostPaths, pid: u32, cpus: &CpuList) -> io::Result<()> {
    let dir = paths.resolve(format!("/proc/{pid}"));
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    let (stat, status) = match (read("stat"), read("status")) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(io::Error::from_raw_os_error(libc::ESRCH)),
    };
    if parse_stat(&stat).is_none_or(|s| s.flags & PF_NO_SETAFFINITY != 0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let status: String = status
        .lines()
        .map(|l| match l.strip_prefix("Cpus_allowed_list:") {
            Some(_) => format!("Cpus_allowed_list:\t{cpus}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(dir.join("status"), status)
}

/// Steers every unbound kthread of `/proc` away from `reserved` (restores everything when
/// `reserved` is empty), updating `originals`.
pub fn steer(
    paths: &HostPaths,
    reserved: &CpuList,
    originals: &mut KthreadOriginals,
) -> Result<KthreadOutcome> {
    let proc_dir = paths.resolve("/proc");
    let mut out = KthreadOutcome::default();
    for pid in numbered_subdirs(&proc_dir, originals.keys())? {
        let dir = proc_dir.join(pid.to_string());
        // A task may exit at any point of the pass: unreadable files mean it is gone.
        let read = |f: &str| kfs::read_opt(&dir.join(f)).ok().flatten();
        let stat = read("stat").as_deref().and_then(parse_stat);
        let Some(stat) = stat.filter(|s| s.flags & PF_KTHREAD != 0) else {
            originals.remove(&pid);
            continue;
        };
        let remembered = originals
            .get(&pid)
            .and_then(|e| original_of(e, &stat))
            .map(str::to_owned);
        if remembered.is_none() {
            // Nothing recorded, or another task holds the pid now: its affinity is its own.
            originals.remove(&pid);
        }
        let Some(current) = read("status")
            .as_deref()
            .and_then(allowed_list)
            .and_then(|t| CpuList::parse(t).ok())
        else {
            continue;
        };
        let original = remembered.unwrap_or_else(|| current.to_string());
        let Ok(orig_cpus) = CpuList::parse(&original) else {
            originals.remove(&pid);
            continue;
        };
        let target = match away_from(&orig_cpus, reserved) {
            Ok(t) => t,
            Err(why) => {
                out.unsteerable.push((pid, format!("{}: {why}", stat.comm)));
                orig_cpus.clone()
            }
        };
        if current != target {
            match set_affinity(paths, pid, &target) {
                Ok(()) => out.changed.push((pid, stat.comm.clone())),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    originals.remove(&pid);
                    continue;
                }
                // EINVAL (PF_NO_SETAFFINITY), EPERM…: like a refused IRQ, reported.
                Err(e) => {
                    out.unsteerable.push((
                        pid,
                        format!("{}: sched_setaffinity refused: {e}", stat.comm),
                    ));
                    if !originals.contains_key(&pid) {
                        continue;
                    }
                }
            }
        }
        if target == orig_cpus || reserved.is_empty() {
            originals.remove(&pid);
        } else {
            originals.insert(pid, format!("{} {original} {}", stat.start, stat.comm));
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::host::tests::put;
    use std::path::Path;

    /// A fake `/proc/<pid>` with `comm`, stat `flags`, `start` time and affinity `cpus`.
    pub(crate) fn put_task(root: &Path, pid: u32, comm: &str, flags: u64, start: u64, cpus: &str) {
        let stat =
            format!("{pid} ({comm}) S 2 0 0 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
        put(root, &format!("proc/{pid}/stat"), &stat);
        let status = format!("Name:\t{comm}\nCpus_allowed:\tf\nCpus_allowed_list:\t{cpus}\n");
        put(root, &format!("proc/{pid}/status"), &status);
    }

    pub(crate) fn cpus_of(root: &Path, pid: u32) -> String {
        let status = std::fs::read_to_string(root.join(format!("proc/{pid}/status"))).unwrap();
        allowed_list(&status).unwrap().to_owned()
    }

    const KT: u64 = PF_KTHREAD;

    #[test]
    fn stat_comm_with_spaces_and_parentheses_parses() {
        let s = "42 (a) (b c)) S 2 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.comm, "a) (b c)");
        assert_eq!(st.flags, 2_129_984);
        assert_eq!(st.start, 777);
        assert_eq!(parse_stat("42 (x S 1"), None);
    }

    #[test]
    fn unbound_kthreads_move_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put_task(root, 10, "kdamond.0", KT, 100, "0-3");
        put_task(root, 11, "ksoftirqd/3", KT | PF_NO_SETAFFINITY, 5, "3");
        put_task(root, 12, "kworker/u8:1", KT | PF_NO_SETAFFINITY, 6, "0-3");
        put_task(root, 13, "bash", 0x0040_0100, 7, "0-3");
        put_task(root, 14, "odd) (name", KT, 8, "2-3");
        put_task(root, 15, "khugepaged", KT, 9, "3");
        put_task(root, 16, "kswapd0", KT, 10, "0-3");
        let paths = HostPaths::under(root);
        let mut orig = KthreadOriginals::default();
        let out = steer(&paths, &CpuList::parse("3").unwrap(), &mut orig).unwrap();
        assert_eq!(cpus_of(root, 10), "0-2");
        assert_eq!(cpus_of(root, 14), "2");
        assert_eq!(cpus_of(root, 13), "0-3", "user processes are not touched");
        assert_eq!(cpus_of(root, 12), "0-3");
        let changed: Vec<u32> = out.changed.iter().map(|c| c.0).collect();
        assert_eq!(changed, vec![10, 14, 16]);
        let stuck: Vec<u32> = out.unsteerable.iter().map(|u| u.0).collect();
        assert_eq!(stuck, vec![11, 12, 15], "{out:?}");
        assert!(out.unsteerable[1].1.contains("refused"), "{out:?}");
        assert_eq!(orig[&14], "8 2-3 odd) (name");

        // Pid 14 is reused by another kthread (other start time): its affinity is its own.
        put_task(root, 14, "odd) (name", KT, 99, "1-2");
        // Pid 16 now names a task with another comm (same start time): not restored either.
        put_task(root, 16, "kthreadd", KT, 10, "0-2");
        // Pid 10 exits.
        std::fs::remove_dir_all(root.join("proc/10")).unwrap();
        let out = steer(&paths, &CpuList::new(), &mut orig).unwrap();
        assert_eq!(cpus_of(root, 14), "1-2");
        assert_eq!(cpus_of(root, 16), "0-2");
        assert!(out.changed.is_empty(), "{out:?}");
        assert!(orig.is_empty(), "{orig:?}");
    }

    #[test]
    fn restore_recomputes_from_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put_task(root, 10, "kswapd0", KT, 100, "0-3");
        let paths = HostPaths::under(root);
        let mut orig = KthreadOriginals::default();
        steer(&paths, &CpuList::parse("2-3").unwrap(), &mut orig).unwrap();
        assert_eq!(cpus_of(root, 10), "0-1");
        steer(&paths, &CpuList::parse("3").unwrap(), &mut orig).unwrap();
        assert_eq!(cpus_of(root, 10), "0-2");
        let out = steer(&paths, &CpuList::new(), &mut orig).unwrap();
        assert_eq!(cpus_of(root, 10), "0-3");
        assert_eq!(out.changed, vec![(10, "kswapd0".to_owned())]);
        assert!(orig.is_empty());
    }
}
