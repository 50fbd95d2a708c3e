//! Per-partition usage read from its cgroup(s): CPU time, memory current/peak, I/O bytes, tasks.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::kfs;

/// Usage of one partition. `None` where the host does not account it (controller absent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// CPU time consumed, nanoseconds (v1 `cpuacct.usage`, v2 `cpu.stat` usage_usec × 1000).
    pub cpu_ns: Option<u64>,
    /// Memory charged now (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub memory_current_bytes: Option<u64>,
    /// Peak memory (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`, Linux 5.19+).
    pub memory_peak_bytes: Option<u64>,
    /// Bytes read from block devices (v1 blkio throttle stats, v2 `io.stat` rbytes).
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices.
    pub io_write_bytes: Option<u64>,
    /// Threads in the partition.
    pub tasks: u64,
}

fn opt_u64(path: &Path) -> Result<Option<u64>> {
    Ok(kfs::read_opt(path)?.and_then(|s| s.trim().parse().ok()))
}

/// Reads v1 usage: `cpuacct`, `memory`, `blkio` group directories (each optional) and the
/// directory whose `tasks` file counts threads.
pub fn read_v1(
    cpuacct: Option<&Path>,
    memory: Option<&Path>,
    blkio: Option<&Path>,
    tasks_dir: &Path,
) -> Result<Usage> {
    let mut u = Usage {
        tasks: kfs::read_pids(&tasks_dir.join("tasks"))?.len() as u64,
        ..Usage::default()
    };
    if let Some(d) = cpuacct {
        u.cpu_ns = opt_u64(&d.join("cpuacct.usage"))?;
    }
    if let Some(d) = memory {
        u.memory_current_bytes = opt_u64(&d.join("memory.usage_in_bytes"))?;
        u.memory_peak_bytes = opt_u64(&d.join("memory.max_usage_in_bytes"))?;
    }
    if let Some(d) = blkio {
        // Lines "8:0 Read 4096" … "Total 8192"; the throttle files count every I/O (the bfq
        // ones only I/O through bfq).
        if let Some(text) = kfs::read_opt(&d.join("blkio.throttle.io_service_bytes_recursive"))? {
            let (mut r, mut w) = (0u64, 0u64);
            for line in text.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [_dev, op, n] = f[..] {
                    let n: u64 = n.parse().unwrap_or(0);
                    match op {
                        "Read" => r += n,
                        "Write" => w += n,
                        _ => {}
                    }
                }
            }
            u.io_read_bytes = Some(r);
            u.io_write_bytes = Some(w);
        }
    }
    Ok(u)
}

/// Reads v2 usage from one group directory.
pub fn read_v2(dir: &Path) -> Result<Usage> {
    let mut u = Usage {
        tasks: kfs::read_pids(&dir.join("cgroup.threads"))?.len() as u64,
        ..Usage::default()
    };
    if let Some(stat) = kfs::read_opt(&dir.join("cpu.stat"))? {
        u.cpu_ns = stat.lines().find_map(|l| {
            let v = l.strip_prefix("usage_usec ")?;
            v.trim().parse::<u64>().ok().map(|us| us * 1000)
        });
    }
    u.memory_current_bytes = opt_u64(&dir.join("memory.current"))?;
    u.memory_peak_bytes = opt_u64(&dir.join("memory.peak"))?;
    if let Some(text) = kfs::read_opt(&dir.join("io.stat"))? {
        let (mut r, mut w) = (0u64, 0u64);
        for kv in text.split_whitespace() {
            if let Some(v) = kv.strip_prefix("rbytes=") {
                r += v.parse::<u64>().unwrap_or(0);
            } else if let Some(v) = kv.strip_prefix("wbytes=") {
                w += v.parse::<u64>().unwrap_or(0);
            }
        }
        u.io_read_bytes = Some(r);
        u.io_write_bytes = Some(w);
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::put;

    #[test]
    fn v1_sums_devices_and_counts_threads() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        put(r, "acct/cpuacct.usage", "123456789\n");
        put(r, "mem/memory.usage_in_bytes", "4096\n");
        put(r, "mem/memory.max_usage_in_bytes", "8192\n");
        put(
            r,
            "blk/blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 100\n8:0 Write 50\n8:0 Sync 150\n8:16 Read 1\n8:16 Write 2\nTotal 153\n",
        );
        put(r, "cs/tasks", "10\n11\n12\n");
        let u = read_v1(
            Some(&r.join("acct")),
            Some(&r.join("mem")),
            Some(&r.join("blk")),
            &r.join("cs"),
        )
        .unwrap();
        assert_eq!(
            u,
            Usage {
                cpu_ns: Some(123456789),
                memory_current_bytes: Some(4096),
                memory_peak_bytes: Some(8192),
                io_read_bytes: Some(101),
                io_write_bytes: Some(52),
                tasks: 3
            }
        );
        let none = read_v1(None, None, None, &r.join("cs")).unwrap();
        assert_eq!(none.cpu_ns, None);
        assert_eq!(none.tasks, 3);
    }

    #[test]
    fn v2_reads_cpu_stat_and_io_stat() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        put(
            r,
            "g/cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
        );
        put(r, "g/memory.current", "1048576\n");
        put(
            r,
            "g/io.stat",
            "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n8:16 rbytes=5 wbytes=0\n",
        );
        put(r, "g/cgroup.threads", "7\n");
        let u = read_v2(&r.join("g")).unwrap();
        assert_eq!(u.cpu_ns, Some(2_500_000));
        assert_eq!(u.memory_current_bytes, Some(1048576));
        assert_eq!(u.memory_peak_bytes, None);
        assert_eq!((u.io_read_bytes, u.io_write_bytes), (Some(15), Some(20)));
        assert_eq!(u.tasks, 1);
    }
}
