//! Host facts for the readiness checks, read from a root directory (`/` in production, a fake
//! tree in tests). Unreadable files become `None`/empty facts, never errors: readiness then
//! reports what it could not check.

use radio::cpulist;
use radio::rtprofile::{HostFacts, Observed};
use std::collections::BTreeMap;
use std::path::Path;

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The value of `key=` on a kernel command line (last occurrence wins, as in the kernel).
fn cmdline_param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

/// Gathers the facts under `root`.
pub fn gather(
    root: &Path,
    rt_pool: Option<Vec<u32>>,
    reserved_cpus: Vec<u32>,
    observed: Option<Observed>,
) -> HostFacts {
    let online_cpus = read(root, "sys/devices/system/cpu/online")
        .and_then(|s| cpulist::parse(&s).ok())
        .unwrap_or_default();
    let mut governors = BTreeMap::new();
    for &cpu in &online_cpus {
        if let Some(g) = read(
            root,
            &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
        ) {
            governors.insert(cpu, g);
        }
    }
    let preempt_rt = match read(root, "sys/kernel/realtime") {
        Some(v) => Some(v == "1"),
        None => read(root, "proc/sys/kernel/version").map(|v| v.contains("PREEMPT_RT")),
    };
    let cmdline = read(root, "proc/cmdline").unwrap_or_default();
    let list = |key| {
        cmdline_param(&cmdline, key)
            .and_then(|v| cpulist::parse(v).ok())
            .unwrap_or_default()
    };
    let mem_available_bytes = read(root, "proc/meminfo").and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    HostFacts {
        online_cpus,
        rt_pool,
        reserved_cpus,
        sched_rt_runtime_us: read(root, "proc/sys/kernel/sched_rt_runtime_us")
            .and_then(|v| v.parse().ok()),
        governors,
        preempt_rt,
        isolcpus: list("isolcpus"),
        nohz_full: list("nohz_full"),
        mem_available_bytes,
        observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    #[test]
    fn reads_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "sys/devices/system/cpu/online", "0-3\n");
        write(
            r,
            "sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
            "powersave\n",
        );
        write(
            r,
            "sys/devices/system/cpu/cpu3/cpufreq/scaling_governor",
            "performance\n",
        );
        write(r, "sys/kernel/realtime", "1\n");
        write(r, "proc/sys/kernel/sched_rt_runtime_us", "950000\n");
        write(
            r,
            "proc/cmdline",
            "BOOT_IMAGE=/vmlinuz isolcpus=managed_irq,domain,2-3 nohz_full=3 quiet\n",
        );
        write(
            r,
            "proc/meminfo",
            "MemTotal: 100 kB\nMemAvailable:    2048 kB\n",
        );
        let f = gather(r, Some(vec![2, 3]), vec![3], None);
        assert_eq!(f.online_cpus, vec![0, 1, 2, 3]);
        assert_eq!(f.governors.get(&2).map(String::as_str), Some("powersave"));
        assert_eq!(f.governors.len(), 2);
        assert_eq!(f.preempt_rt, Some(true));
        assert_eq!(f.sched_rt_runtime_us, Some(950_000));
        assert_eq!(f.isolcpus, vec![2, 3]);
        assert_eq!(f.nohz_full, vec![3]);
        assert_eq!(f.mem_available_bytes, Some(2048 * 1024));
        assert_eq!(f.reserved_cpus, vec![3]);
    }

    #[test]
    fn empty_tree_gives_unknowns() {
        let dir = tempfile::tempdir().unwrap();
        let f = gather(dir.path(), None, vec![], None);
        assert!(f.online_cpus.is_empty() && f.governors.is_empty());
        assert_eq!(
            (f.preempt_rt, f.sched_rt_runtime_us, f.mem_available_bytes),
            (None, None, None)
        );
    }

    #[test]
    fn real_host_is_readable() {
        let f = gather(Path::new("/"), None, vec![], None);
        assert!(
            !f.online_cpus.is_empty(),
            "/sys/devices/system/cpu/online unreadable"
        );
        assert!(f.sched_rt_runtime_us.is_some());
        assert!(f.mem_available_bytes.is_some_and(|m| m > 0));
    }
}
