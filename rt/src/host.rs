//! Host detection: what real-time support the machine offers (the `rt` readiness report).
//!
//! Everything is read below a [`HostPaths`] root, so tests build a fake `/proc` + `/sys` tree in
//! a temporary directory; [`HostReport::detect`] reads the real one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cpulist::CpuList;
use crate::error::{Error, Result};
use crate::kfs;

/// Where the kernel's files are: `/` on a real host, a temporary directory in tests. Absolute
/// kernel paths (including mount points read from mountinfo) are resolved below this root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPaths {
    root: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self::real()
    }
}

impl HostPaths {
    /// The real host (`/`).
    pub fn real() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    /// A fake tree rooted at `root` (holding `proc/…`, `sys/…`).
    pub fn under(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves an absolute kernel path (`/proc/cmdline`) below the root.
    pub fn resolve(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.root.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    /// True for the real host root.
    pub fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }
}

/// Which cgroup layout the host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only cgroup-v1 controller hierarchies.
    V1,
    /// Only the unified cgroup2 hierarchy.
    V2,
    /// v1 controller hierarchies plus a cgroup2 mount (systemd "hybrid"); rt uses the v1 side.
    Hybrid,
    /// No cgroup filesystem mounted.
    None,
}

/// The cgroup side of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupInfo {
    /// Layout.
    pub mode: CgroupMode,
    /// v1 controller → mount point of its hierarchy (co-mounted controllers share one).
    pub v1: BTreeMap<String, PathBuf>,
    /// cgroup2 mount point, if any.
    pub v2_mount: Option<PathBuf>,
    /// Controllers listed in the cgroup2 root's `cgroup.controllers`.
    pub v2_controllers: Vec<String>,
    /// Controllers enabled in the cgroup2 root's `cgroup.subtree_control`.
    pub v2_subtree_control: Vec<String>,
}

impl CgroupInfo {
    /// True when rt drives the v2 hierarchy (pure v2 host), false for v1/hybrid.
    pub fn uses_v2(&self) -> bool {
        self.mode == CgroupMode::V2
    }

    /// True when `controller` can be used by rt on this host.
    pub fn has(&self, controller: &str) -> bool {
        match self.mode {
            CgroupMode::V1 | CgroupMode::Hybrid => self.v1.contains_key(controller),
            CgroupMode::V2 => self.v2_controllers.iter().any(|c| c == controller),
            CgroupMode::None => false,
        }
    }
}

/// Capabilities and limits of the detecting process relevant to real-time setup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Privileges {
    /// Effective uid.
    pub euid: u32,
    /// CAP_SYS_NICE in the effective set (SCHED_FIFO at any priority).
    pub cap_sys_nice: bool,
    /// CAP_IPC_LOCK (mlock beyond RLIMIT_MEMLOCK).
    pub cap_ipc_lock: bool,
    /// CAP_SYS_RESOURCE (raise hard rlimits for children).
    pub cap_sys_resource: bool,
}

/// The host readiness report (`rt-report` prints it as JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostReport {
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_release: String,
    /// `/proc/sys/kernel/version` (carries the preemption model).
    pub kernel_version: String,
    /// PREEMPT_RT kernel (`/sys/kernel/realtime` = 1 or `PREEMPT_RT` in the version).
    pub preempt_rt: bool,
    /// Preemption model: `PREEMPT_RT`, `PREEMPT_DYNAMIC` (with the active mode when debugfs shows
    /// it, e.g. `PREEMPT_DYNAMIC (none)`), `PREEMPT` or `none`.
    pub preempt_model: String,
    /// Online CPUs.
    pub online_cpus: CpuList,
    /// CPUs isolated by the kernel (`/sys/devices/system/cpu/isolated`).
    pub isolated_cpus: CpuList,
    /// `nohz_full` CPUs (`/sys/devices/system/cpu/nohz_full`).
    pub nohz_full_cpus: CpuList,
    /// `isolcpus=` value on the kernel command line.
    pub cmdline_isolcpus: Option<String>,
    /// `nohz_full=` value on the kernel command line.
    pub cmdline_nohz_full: Option<String>,
    /// CPU → cpufreq governor, where readable (empty without cpufreq, e.g. in most VMs).
    pub governors: BTreeMap<u32, String>,
    /// `/proc/sys/kernel/sched_rt_runtime_us` (-1 = no throttling).
    pub sched_rt_runtime_us: Option<i64>,
    /// `/proc/sys/kernel/sched_rt_period_us`.
    pub sched_rt_period_us: Option<u64>,
    /// cgroup layout and controllers.
    pub cgroup: CgroupInfo,
    /// RT group scheduling (CONFIG_RT_GROUP_SCHED): `Some(true)` when the v1 cpu hierarchy has
    /// `cpu.rt_runtime_us` or the kernel config says so; `None` when unknown.
    pub rt_group_sched: Option<bool>,
    /// The detecting process's privileges.
    pub privileges: Privileges,
    /// `/dev/cpu_dma_latency` exists (PM-QoS; holding it at 0 halves wake-up latency in VMs).
    pub cpu_dma_latency: bool,
    /// SCHED_FIFO/RR can be given to partitions.
    pub fifo_available: bool,
    /// Why not, when `fifo_available` is false.
    pub fifo_unavailable_reasons: Vec<String>,
    /// The default RT CPU pool: the isolated CPUs if the kernel isolates any, else every online
    /// CPU but the first (kept for housekeeping).
    pub default_rt_pool: CpuList,
}

const CAP_SYS_NICE: u32 = 23;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_RESOURCE: u32 = 24;

impl HostReport {
    /// Detects the real host.
    pub fn detect() -> Result<Self> {
        Self::detect_with(&HostPaths::real())
    }

    /// Detects the host whose kernel files are below `paths`.
    pub fn detect_with(paths: &HostPaths) -> Result<Self> {
        let trimmed = |p: &str| -> Result<Option<String>> {
            Ok(kfs::read_opt(&paths.resolve(p))?.map(|s| s.trim().to_owned()))
        };
        let kernel_release = trimmed("/proc/sys/kernel/osrelease")?.unwrap_or_default();
        let kernel_version = trimmed("/proc/sys/kernel/version")?.unwrap_or_default();
        let realtime_flag = trimmed("/sys/kernel/realtime")?.is_some_and(|s| s == "1");
        let preempt_rt = realtime_flag || kernel_version.contains("PREEMPT_RT");
        let preempt_model = preempt_model(
            &kernel_version,
            preempt_rt,
            // Informational; debugfs may refuse even root (EPERM when locked down, measured).
            trimmed("/sys/kernel/debug/sched/preempt").ok().flatten(),
        );

        // An unset cpumask reads `(null)` on some kernels (`nohz_full` on Debian's 6.12 arm64,
        // measured on the QEMU board): no CPUs.
        let cpu_list = |p: &str| -> Result<CpuList> {
            match kfs::read_opt(&paths.resolve(p))? {
                Some(t) if t.trim() == "(null)" => Ok(CpuList::new()),
                Some(t) => CpuList::parse(&t).map_err(|_| Error::Parse {
                    what: "CPU list",
                    path: paths.resolve(p),
                    value: t.trim().to_owned(),
                }),
                None => Ok(CpuList::new()),
            }
        };
        let online_cpus = cpu_list("/sys/devices/system/cpu/online")?;
        let isolated_cpus = cpu_list("/sys/devices/system/cpu/isolated")?;
        let nohz_full_cpus = cpu_list("/sys/devices/system/cpu/nohz_full")?;

        let cmdline = trimmed("/proc/cmdline")?.unwrap_or_default();
        let cmdline_isolcpus = cmdline_value(&cmdline, "isolcpus");
        let cmdline_nohz_full = cmdline_value(&cmdline, "nohz_full");

        let mut governors = BTreeMap::new();
        for cpu in online_cpus.iter() {
            if let Some(g) = trimmed(&format!(
                "/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
            ))? {
                governors.insert(cpu, g);
            }
        }

        let sched_rt_runtime_us =
            trimmed("/proc/sys/kernel/sched_rt_runtime_us")?.and_then(|s| s.parse().ok());
        let sched_rt_period_us =
            trimmed("/proc/sys/kernel/sched_rt_period_us")?.and_then(|s| s.parse().ok());

        let cgroup = detect_cgroups(paths)?;
        let rt_group_sched = detect_rt_group_sched(paths, &cgroup, &kernel_release)?;
        let privileges = detect_privileges(paths)?;
        let cpu_dma_latency = paths.resolve("/dev/cpu_dma_latency").exists();

        let mut reasons = Vec::new();
        if sched_rt_runtime_us == Some(0) {
            reasons.push("kernel.sched_rt_runtime_us is 0 (RT tasks get no CPU time)".to_owned());
        }
        if !privileges.cap_sys_nice {
            reasons.push(format!(
                "the node (euid {}) lacks CAP_SYS_NICE",
                privileges.euid
            ));
        }
        let default_rt_pool = if isolated_cpus.is_empty() {
            let first = online_cpus.iter().next();
            online_cpus.iter().filter(|c| Some(*c) != first).collect()
        } else {
            isolated_cpus.intersection(&online_cpus)
        };
        Ok(Self {
            kernel_release,
            kernel_version,
            preempt_rt,
            preempt_model,
            online_cpus,
            isolated_cpus,
            nohz_full_cpus,
            cmdline_isolcpus,
            cmdline_nohz_full,
            governors,
            sched_rt_runtime_us,
            sched_rt_period_us,
            cgroup,
            rt_group_sched,
            privileges,
            cpu_dma_latency,
            fifo_available: reasons.is_empty(),
            fifo_unavailable_reasons: reasons,
            default_rt_pool,
        })
    }
}

fn preempt_model(version: &str, rt: bool, debugfs: Option<String>) -> String {
    if rt {
        return "PREEMPT_RT".to_owned();
    }
    let has = |w: &str| version.split_whitespace().any(|t| t == w);
    if has("PREEMPT_DYNAMIC") {
        // debugfs prints e.g. "none (voluntary) full lazy": the active one is in parentheses.
        let active = debugfs.as_deref().and_then(|s| {
            let (_, rest) = s.split_once('(')?;
            Some(rest.split_once(')')?.0.to_owned())
        });
        return match active {
            Some(a) => format!("PREEMPT_DYNAMIC ({a})"),
            None => "PREEMPT_DYNAMIC".to_owned(),
        };
    }
    if has("PREEMPT") {
        return "PREEMPT".to_owned();
    }
    "none".to_owned()
}

/// `key=value` from a kernel command line (first occurrence, before a `--` separator).
fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .take_while(|t| *t != "--")
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
}

const V1_CONTROLLERS: [&str; 12] = [
    "cpuset",
    "cpu",
    "cpuacct",
    "memory",
    "blkio",
    "pids",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "hugetlb",
    "rdma",
];

fn detect_cgroups(paths: &HostPaths) -> Result<CgroupInfo> {
    let mi_path = paths.resolve("/proc/self/mountinfo");
    let mounts = kfs::parse_mountinfo(&kfs::read(&mi_path)?, &mi_path)?;
    let mut v1 = BTreeMap::new();
    let mut v2_mount = None;
    for m in &mounts {
        match m.fstype.as_str() {
            "cgroup" => {
                for opt in m.super_options.split(',') {
                    if V1_CONTROLLERS.contains(&opt) {
                        v1.entry(opt.to_owned())
                            .or_insert_with(|| m.mount_point.clone());
                    }
                }
            }
            "cgroup2" if v2_mount.is_none() => v2_mount = Some(m.mount_point.clone()),
            _ => {}
        }
    }
    let words = |file: &str| -> Result<Vec<String>> {
        let Some(mp) = &v2_mount else {
            return Ok(Vec::new());
        };
        let text = kfs::read_opt(&paths.resolve(mp).join(file))?.unwrap_or_default();
        Ok(text.split_whitespace().map(str::to_owned).collect())
    };
    let v2_controllers = words("cgroup.controllers")?;
    let v2_subtree_control = words("cgroup.subtree_control")?;
    let mode = match (v1.is_empty(), v2_mount.is_some()) {
        (false, true) => CgroupMode::Hybrid,
        (false, false) => CgroupMode::V1,
        (true, true) => CgroupMode::V2,
        (true, false) => CgroupMode::None,
    };
    Ok(CgroupInfo {
        mode,
        v1,
        v2_mount,
        v2_controllers,
        v2_subtree_control,
    })
}

fn detect_rt_group_sched(
    paths: &HostPaths,
    cg: &CgroupInfo,
    release: &str,
) -> Result<Option<bool>> {
    if cg.mode != CgroupMode::V2
        && let Some(cpu) = cg.v1.get("cpu")
    {
        return Ok(Some(paths.resolve(cpu).join("cpu.rt_runtime_us").exists()));
    }
    // Kernels with RT group scheduling on cgroup2 expose the budget files in the root (6.16+).
    if let Some(mp) = &cg.v2_mount
        && paths.resolve(mp).join("cpu.rt_runtime_us").exists()
    {
        return Ok(Some(true));
    }
    let config = kfs::read_opt(&paths.resolve(format!("/boot/config-{release}")))?;
    Ok(config.and_then(|c| {
        c.lines().find_map(|l| {
            if l.trim() == "CONFIG_RT_GROUP_SCHED=y" {
                Some(true)
            } else if l.trim() == "# CONFIG_RT_GROUP_SCHED is not set" {
                Some(false)
            } else {
                None
            }
        })
    }))
}

fn detect_privileges(paths: &HostPaths) -> Result<Privileges> {
    let status = kfs::read_opt(&paths.resolve("/proc/self/status"))?.unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let cap_eff = field("CapEff:")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0);
    let euid = field("Uid:")
        .and_then(|v| v.split_whitespace().nth(1).and_then(|e| e.parse().ok()))
        .unwrap_or(u32::MAX);
    let cap = |bit: u32| cap_eff & (1 << bit) != 0;
    Ok(Privileges {
        euid,
        cap_sys_nice: cap(CAP_SYS_NICE),
        cap_ipc_lock: cap(CAP_IPC_LOCK),
        cap_sys_resource: cap(CAP_SYS_RESOURCE),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    /// Writes `content` at `rel` below `root`, creating parents.
    pub(crate) fn put(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// A fake host like the reference VM: 4 CPUs, hybrid cgroups (v1 cpu+cpuacct co-mounted,
    /// cpuset, memory, blkio, pids; cgroup2 with only hugetlb), RT group scheduling, root.
    pub(crate) fn fake_v1_host(root: &Path) {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
             32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             36 31 0:33 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio\n\
             37 31 0:34 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let files = [
            ("proc/sys/kernel/osrelease", "6.18.44-fc"),
            ("proc/sys/kernel/version", "#1 SMP PREEMPT_DYNAMIC @0"),
            (
                "sys/kernel/debug/sched/preempt",
                "(none) voluntary full lazy",
            ),
            ("sys/devices/system/cpu/online", "0-3"),
            ("sys/devices/system/cpu/isolated", ""),
            (
                "proc/cmdline",
                "console=ttyS0 quiet nohz_full=3 -- isolcpus=9",
            ),
            (
                "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
                "performance",
            ),
            ("proc/sys/kernel/sched_rt_runtime_us", "950000"),
            ("proc/sys/kernel/sched_rt_period_us", "1000000"),
            ("sys/fs/cgroup/unified/cgroup.controllers", "hugetlb"),
            ("sys/fs/cgroup/unified/cgroup.subtree_control", ""),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.rt_runtime_us", "950000"),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.rt_period_us", "1000000"),
            ("sys/fs/cgroup/cpuset/cpuset.cpus", "0-3"),
            ("sys/fs/cgroup/cpuset/cpuset.mems", "0"),
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712",
            ),
            ("sys/fs/cgroup/pids/tasks", "1"),
            ("sys/fs/cgroup/blkio/tasks", "1"),
            (
                "proc/self/status",
                "Name:\trt\nUid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff",
            ),
            ("proc/irq/24/smp_affinity_list", "0-3"),
            ("proc/irq/25/smp_affinity_list", "0-3"),
            ("proc/irq/40/smp_affinity_list", "0-3"),
            ("proc/irq/default_smp_affinity", "f"),
        ];
        put(root, "proc/self/mountinfo", mountinfo);
        for (rel, content) in files {
            put(root, rel, &format!("{content}\n"));
        }
    }

    /// A fake pure cgroup-v2 host (4 CPUs, cpuset partitions with cpuset.cpus.exclusive).
    pub(crate) fn fake_v2_host(root: &Path, rt_group_sched: bool) {
        let config = if rt_group_sched {
            "CONFIG_RT_GROUP_SCHED=y"
        } else {
            "# CONFIG_RT_GROUP_SCHED is not set"
        };
        let files = [
            ("proc/sys/kernel/osrelease", "6.12.0"),
            ("proc/sys/kernel/version", "#1 SMP PREEMPT_RT"),
            ("sys/devices/system/cpu/online", "0-3"),
            ("sys/devices/system/cpu/isolated", "2-3"),
            ("proc/cmdline", "isolcpus=2-3"),
            ("proc/sys/kernel/sched_rt_runtime_us", "950000"),
            ("proc/sys/kernel/sched_rt_period_us", "1000000"),
            (
                "proc/self/mountinfo",
                "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate",
            ),
            (
                "sys/fs/cgroup/cgroup.controllers",
                "cpuset cpu io memory hugetlb pids",
            ),
            ("sys/fs/cgroup/cgroup.subtree_control", "memory pids"),
            ("sys/fs/cgroup/cpuset.cpus.effective", "0-3"),
            ("sys/fs/cgroup/cpuset.mems.effective", "0"),
            ("boot/config-6.12.0", config),
            (
                "proc/self/status",
                "Uid:\t1000\t0\t0\t0\nCapEff:\t0000000000800000",
            ),
            ("proc/irq/24/smp_affinity_list", "0-3"),
        ];
        for (rel, content) in files {
            put(root, rel, &format!("{content}\n"));
        }
    }

    #[test]
    fn detects_hybrid_reference_vm() {
        let dir = tempfile::tempdir().unwrap();
        fake_v1_host(dir.path());
        let r = HostReport::detect_with(&HostPaths::under(dir.path())).unwrap();
        assert_eq!(r.cgroup.mode, CgroupMode::Hybrid);
        assert!(!r.cgroup.uses_v2());
        assert_eq!(
            r.cgroup.v1["cpu"],
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(r.cgroup.v1["cpuacct"], r.cgroup.v1["cpu"]);
        assert!(!r.cgroup.v1.contains_key("name=systemd"));
        assert_eq!(r.cgroup.v2_controllers, vec!["hugetlb"]);
        assert!(r.cgroup.has("cpuset") && !r.cgroup.has("hugetlb"));
        assert_eq!(r.rt_group_sched, Some(true));
        assert_eq!(r.preempt_model, "PREEMPT_DYNAMIC (none)");
        assert!(!r.preempt_rt);
        assert_eq!(r.online_cpus.to_string(), "0-3");
        assert_eq!(r.cmdline_nohz_full.as_deref(), Some("3"));
        assert_eq!(
            r.cmdline_isolcpus, None,
            "arguments after `--` belong to init"
        );
        assert_eq!(r.governors.get(&0).map(String::as_str), Some("performance"));
        assert_eq!(r.sched_rt_runtime_us, Some(950000));
        assert!(r.privileges.cap_sys_nice && r.privileges.euid == 0);
        assert!(r.fifo_available, "{:?}", r.fifo_unavailable_reasons);
        assert_eq!(r.default_rt_pool.to_string(), "1-3");
    }

    #[test]
    fn an_unreadable_debugfs_preempt_file_does_not_stop_detection() {
        let dir = tempfile::tempdir().unwrap();
        fake_v1_host(dir.path());
        // A directory in its place: reading fails (as EPERM does on a locked-down debugfs).
        let f = dir.path().join("sys/kernel/debug/sched/preempt");
        fs::remove_file(&f).unwrap();
        fs::create_dir(&f).unwrap();
        let r = HostReport::detect_with(&HostPaths::under(dir.path())).unwrap();
        assert_eq!(r.preempt_model, "PREEMPT_DYNAMIC");
    }

    #[test]
    fn detects_v2_isolated_pool_and_missing_privilege() {
        let dir = tempfile::tempdir().unwrap();
        fake_v2_host(dir.path(), false);
        put(
            dir.path(),
            "proc/self/status",
            "Uid:\t1000\t1000\t0\t0\nCapEff:\t0000000000000000\n",
        );
        put(dir.path(), "proc/sys/kernel/sched_rt_runtime_us", "0\n");
        put(dir.path(), "sys/devices/system/cpu/nohz_full", "(null)\n");
        let r = HostReport::detect_with(&HostPaths::under(dir.path())).unwrap();
        assert!(r.nohz_full_cpus.is_empty());
        assert_eq!(r.cgroup.mode, CgroupMode::V2);
        assert_eq!(r.cgroup.v2_subtree_control, vec!["memory", "pids"]);
        assert!(r.cgroup.has("cpuset"));
        assert_eq!(r.rt_group_sched, Some(false));
        assert!(r.preempt_rt);
        assert_eq!(r.cmdline_isolcpus.as_deref(), Some("2-3"));
        assert_eq!(r.default_rt_pool.to_string(), "2-3");
        assert!(!r.fifo_available);
        assert_eq!(
            r.fifo_unavailable_reasons.len(),
            2,
            "{:?}",
            r.fifo_unavailable_reasons
        );
    }

    #[test]
    fn no_cgroups_and_unknown_rt_group_sched() {
        let dir = tempfile::tempdir().unwrap();
        put(
            dir.path(),
            "proc/self/mountinfo",
            "1 0 0:1 / / rw - ext4 /dev/vda rw\n",
        );
        let r = HostReport::detect_with(&HostPaths::under(dir.path())).unwrap();
        assert_eq!(r.cgroup.mode, CgroupMode::None);
        assert_eq!(r.rt_group_sched, None);
        assert!(r.online_cpus.is_empty());
    }

    #[test]
    fn detects_the_real_host() {
        // Any Linux host has a mountinfo and online CPUs; assert the parts that must hold.
        let r = HostReport::detect().unwrap();
        assert!(!r.online_cpus.is_empty());
        assert!(!r.kernel_release.is_empty());
        assert!(r.default_rt_pool.is_subset(&r.online_cpus));
    }
}
