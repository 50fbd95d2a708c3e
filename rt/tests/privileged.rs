//! Privileged tests on the real kernel: real cgroups, SCHED_FIFO, IRQ affinity.
//!
//! Skipped with a printed reason when not root (or when the kernel lacks what a test needs),
//! unless `SLAPOS_REQUIRE_PRIVILEGED=1`, which turns every skip into a failure. Groups are
//! created under `slapos-edge-test-<pid>` and removed; IRQ affinities are compared before/after.
//!
//! - `partition_end_to_end`: on whatever the host runs (v1, hybrid or v2) apply a shared and a
//!   FIFO partition (exclusive CPU where the kernel allows), start processes through the
//!   `pre_exec` hook and check from `/proc` that they run FIFO 80 on the reserved CPU from
//!   their first instruction, with raised rlimits, inside their cgroups; that the shared
//!   partition was moved off the reserved CPU and IRQs steered; read usage; refuse release
//!   while busy; release and check everything is back.
//! - `v2_in_private_mount_namespace`: on a hybrid host, re-runs this test binary inside
//!   `unshare -m` with the cgroup2 hierarchy mounted alone at /sys/fs/cgroup, so the v2 code
//!   path (create, join, FIFO, usage, release) runs against the real cgroup2 filesystem.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use slapos_test_support::gate::{self, Need};
use slapos_test_support::wait::wait_for;

use rt::{CgroupMode, CpuList, HostReport, Manager, ManagerConfig, Policy, ProfileSpec};

/// IRQ affinity and the cgroup trees are host-global: one privileged test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Prints why the test is skipped and returns false, or panics when privileged tests are
/// required (`SLAPOS_REQUIRE_PRIVILEGED=1`).
fn skip(reason: &str) -> bool {
    gate::skip(Need::Privileged, "rt privileged", reason)
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

fn status_field(pid: u32, field: &str) -> String {
    read(format!("/proc/{pid}/status"))
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

fn irq_affinities() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc/irq")
        .into_iter()
        .flatten()
        .flatten()
    {
        let f = e.path().join("smp_affinity_list");
        if let Ok(v) = std::fs::read_to_string(&f) {
            out.insert(f.display().to_string(), v.trim().to_owned());
        }
    }
    if let Ok(v) = std::fs::read_to_string("/proc/irq/default_smp_affinity") {
        out.insert("default_smp_affinity".into(), v.trim().to_owned());
    }
    out
}

/// Starts `sh -c` that records its own scheduling state first, then becomes `sleep 60`.
fn spawn_probe_child(setup: &rt::ChildSetup, report: &Path) -> Child {
    let script = format!(
        "grep -E '^policy|^prio' /proc/self/sched > {r}.tmp; grep Cpus_allowed_list /proc/self/status >> {r}.tmp; \
         mv {r}.tmp {r}; exec sleep 60",
        r = report.display()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script).envs(setup.env());
    let hook = setup.clone();
    // SAFETY: ChildSetup::run is async-signal-safe (prepared C strings, raw syscalls only).
    unsafe { cmd.pre_exec(move || hook.run()) };
    cmd.spawn().expect("spawn child through the pre_exec hook")
}

struct Scenario {
    host: HostReport,
    mgr: Manager,
    _state: tempfile::TempDir,
    root_name: String,
}

fn scenario(tag: &str) -> Scenario {
    let host = HostReport::detect().expect("detect host");
    let state = tempfile::tempdir().unwrap();
    let root_name = format!("slapos-edge-test-{}-{tag}", std::process::id());
    let mut cfg = ManagerConfig::new(state.path(), host.default_rt_pool.clone());
    cfg.root_name = root_name.clone();
    let mgr = Manager::new(host.clone(), cfg).expect("manager");
    Scenario {
        host,
        mgr,
        _state: state,
        root_name,
    }
}

/// Undoes a failed run: kills the children, releases what is applied, removes leftover groups
/// and restores IRQ affinities, so a panicking assertion leaves the host as it was.
struct Guard<'a> {
    s: &'a Scenario,
    children: Vec<Child>,
    irqs_before: BTreeMap<String, String>,
    kthreads_before: BTreeMap<u32, (String, String)>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            return;
        }
        for name in self
            .s
            .mgr
            .records()
            .map(|r| r.into_keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if let Err(e) = self.s.mgr.release(&name) {
                eprintln!("cleanup: release {name}: {e}");
            }
        }
        let mounts: Vec<PathBuf> = self
            .s
            .host
            .cgroup
            .v1
            .values()
            .chain(self.s.host.cgroup.v2_mount.iter())
            .cloned()
            .collect();
        for m in mounts {
            let sub = m.join(&self.s.root_name);
            for d in ["rt", "shared", ""] {
                let _ = std::fs::remove_dir(sub.join(d));
            }
        }
        for (file, value) in &self.irqs_before {
            let path = if file == "default_smp_affinity" {
                "/proc/irq/default_smp_affinity".into()
            } else {
                file.clone()
            };
            if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != value) {
                let _ = std::fs::write(&path, value);
            }
        }
        for (pid, (comm, cpus)) in kthread_affinities() {
            match self.kthreads_before.get(&pid) {
                Some((c, before)) if *c == comm && *before != cpus => {
                    if let Ok(b) = CpuList::parse(before) {
                        let _ = rt::sys::set_affinity(pid as i32, &b);
                    }
                }
                _ => {}
            }
        }
    }
}

/// pid → (comm, `Cpus_allowed_list`) of every kernel thread (`PF_KTHREAD` in stat's flags).
fn kthread_affinities() -> BTreeMap<u32, (String, String)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let flags: u64 = rest
            .split_whitespace()
            .nth(6)
            .and_then(|f| f.parse().ok())
            .unwrap_or(0);
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_owned());
        if let (true, Some(cpus), Some((_, comm))) =
            (flags & 0x0020_0000 != 0, cpus, head.split_once('('))
        {
            out.insert(pid, (comm.to_owned(), cpus));
        }
    }
    out
}

fn run_partition_scenario(tag: &str) {
    let s = scenario(tag);
    let host = &s.host;
    let v2 = host.cgroup.mode == CgroupMode::V2;
    let pool = host.default_rt_pool.clone();
    let Some(rt_cpu) = pool.iter().last() else {
        skip("the host has a single CPU: no RT pool");
        return;
    };
    // Exclusive CPUs where the kernel can give them (v1 cpuset; v2 needs Linux 6.7+).
    let plan_probe = ProfileSpec {
        cpu_list: Some(vec![rt_cpu]),
        ..Default::default()
    };
    let exclusive = s.mgr.validate("probe-x", &plan_probe).is_ok();
    let budget = (host.rt_group_sched == Some(true) && !v2).then_some(400_000);
    let rt_spec = ProfileSpec {
        cpu_list: exclusive.then(|| vec![rt_cpu]),
        memory_max_bytes: host.cgroup.has("memory").then_some(256 << 20),
        policy: Some(Policy::Fifo),
        priority: Some(80),
        mlock: Some(true),
        rt_runtime_us: budget,
        ..Default::default()
    };
    let shared_spec = ProfileSpec::default();
    eprintln!(
        "host mode {:?}, exclusive CPU {rt_cpu}: {exclusive}, budget {budget:?}",
        host.cgroup.mode
    );

    let irqs_before = irq_affinities();
    let kthreads_before = kthread_affinities();
    let mut guard = Guard {
        s: &s,
        children: Vec::new(),
        irqs_before: irqs_before.clone(),
        kthreads_before: kthreads_before.clone(),
    };
    let tmp = tempfile::tempdir().unwrap();

    // A shared partition with a process, then the RT partition.
    let shared = s.mgr.apply("shared", &shared_spec).expect("apply shared");
    guard
        .children
        .push(spawn_probe_child(&shared.child, &tmp.path().join("shared")));
    let shared_pid = guard.children[0].id();
    let applied = s.mgr.apply("rt", &rt_spec).expect("apply rt");
    assert_eq!(applied.plan.rt_runtime_us, budget);
    for d in &applied.cgroups {
        assert!(d.is_dir(), "{} exists", d.display());
    }
    let report = tmp.path().join("rt");
    guard
        .children
        .push(spawn_probe_child(&applied.child, &report));
    let pid = guard.children[1].id();
    wait_for("the child's report", Duration::from_secs(10), || {
        report.exists().then_some(())
    });

    // From its first instruction: the shell's own children saw FIFO 80 (policy 1, prio 19 =
    // 99 - 80) and, when exclusive, only the reserved CPU.
    let first = read(&report);
    let policy_line = first
        .lines()
        .find(|l| l.starts_with("policy"))
        .unwrap_or_default();
    assert!(
        policy_line
            .split(':')
            .nth(1)
            .is_some_and(|v| v.trim() == "1"),
        "{first}"
    );
    let prio_line = first
        .lines()
        .find(|l| l.starts_with("prio"))
        .unwrap_or_default();
    assert!(
        prio_line
            .split(':')
            .nth(1)
            .is_some_and(|v| v.trim() == "19"),
        "{first}"
    );
    if exclusive {
        assert!(
            first.contains(&format!("Cpus_allowed_list:\t{rt_cpu}\n")),
            "{first}"
        );
    }
    // And now, on the running process.
    assert_eq!(
        rt::sys::get_scheduler(pid as i32).unwrap(),
        (Some(Policy::Fifo), 80)
    );
    if exclusive {
        assert_eq!(status_field(pid, "Cpus_allowed_list:"), rt_cpu.to_string());
        let cpuset_mount = if v2 {
            host.cgroup.v2_mount.clone()
        } else {
            host.cgroup.v1.get("cpuset").cloned()
        };
        let group = cpuset_mount.unwrap().join(&s.root_name).join("rt");
        assert_eq!(read(group.join("cpuset.cpus")).trim(), rt_cpu.to_string());
        if v2 {
            assert_eq!(read(group.join("cpuset.cpus.partition")).trim(), "root");
        } else {
            assert_eq!(read(group.join("cpuset.cpu_exclusive")).trim(), "1");
        }
        // The shared partition's process was moved off the reserved CPU.
        let shared_cpus = CpuList::parse(&status_field(shared_pid, "Cpus_allowed_list:")).unwrap();
        assert!(
            !shared_cpus.contains(rt_cpu),
            "shared child on {shared_cpus}"
        );
        assert!(!shared_cpus.is_empty());
        for irq in &applied.irq.changed {
            let f = format!("/proc/irq/{irq}/smp_affinity_list");
            let cpus = CpuList::parse(&read(&f)).unwrap();
            assert!(!cpus.contains(rt_cpu), "IRQ {irq} still on {cpus}");
        }
        // Unbound kthreads moved off the reserved CPU; per-CPU ones reported, not failed.
        let kt = &applied.kthreads;
        eprintln!("kthreads moved: {:?}", kt.changed);
        eprintln!("kthreads unsteerable: {:?}", kt.unsteerable);
        let now = kthread_affinities();
        let moved: Vec<_> = kt
            .changed
            .iter()
            .filter(|(p, _)| {
                kthreads_before
                    .get(p)
                    .and_then(|(_, c)| CpuList::parse(c).ok())
                    .is_some_and(|c| c.len() > 1)
            })
            .collect();
        assert!(!moved.is_empty(), "no unbound kthread moved: {kt:?}");
        for (p, comm) in moved {
            // A kthread may exit meanwhile; the ones still here must be off the reserved CPU.
            if let Some((_, cpus)) = now.get(p) {
                let cpus = CpuList::parse(cpus).unwrap();
                assert!(!cpus.contains(rt_cpu), "kthread {p} {comm} still on {cpus}");
            }
        }
    }
    let limits = read(format!("/proc/{pid}/limits"));
    let line = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    if host.privileges.cap_sys_resource {
        let rtprio = line("Max realtime priority");
        assert!(
            rtprio
                .split_whitespace()
                .nth(3)
                .is_some_and(|v| v.parse::<u32>().unwrap() >= 80),
            "{limits}"
        );
        assert!(line("Max locked memory").contains("unlimited"), "{limits}");
    } else {
        // Without CAP_SYS_RESOURCE the hard limits cannot be raised: the child keeps ours.
        let ours = read("/proc/self/limits");
        let ours_line = |name: &str| {
            ours.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            line("Max realtime priority"),
            ours_line("Max realtime priority")
        );
        eprintln!("no CAP_SYS_RESOURCE: rlimits left as they are");
    }
    let cgroup_file = read(format!("/proc/{pid}/cgroup"));
    assert!(
        cgroup_file.contains(&format!("/{}/rt\n", s.root_name)),
        "{cgroup_file}"
    );
    if v2 {
        assert!(
            cgroup_file.contains(&format!("0::/{}/rt\n", s.root_name)),
            "{cgroup_file}"
        );
    } else {
        for ctrl in ["cpuset", "cpu"] {
            let hit = cgroup_file.lines().any(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
                ctrls.split(',').any(|c| c == ctrl) && path == format!("/{}/rt", s.root_name)
            });
            assert!(hit || !host.cgroup.has(ctrl), "{ctrl} in {cgroup_file}");
        }
    }
    if host.cpu_dma_latency {
        assert!(s.mgr.holds_cpu_dma_latency());
    }

    // Usage of the live partition.
    let usage = s.mgr.usage("rt").unwrap();
    assert!(usage.tasks >= 1, "{usage:?}");
    if host.cgroup.has("memory") {
        assert!(
            usage.memory_current_bytes.is_some_and(|m| m > 0),
            "{usage:?}"
        );
    }
    if host.cgroup.has("cpuacct") || v2 {
        assert!(usage.cpu_ns.is_some(), "{usage:?}");
    }

    // Re-apply adopts without disturbing the running process.
    let again = s.mgr.apply("rt", &rt_spec).expect("re-apply");
    assert!(again.adopted);
    assert_eq!(
        rt::sys::get_scheduler(pid as i32).unwrap(),
        (Some(Policy::Fifo), 80)
    );

    // Busy release is refused and changes nothing.
    match s.mgr.release("rt") {
        Err(rt::Error::Busy { pids, .. }) => assert!(pids.contains(&pid), "{pids:?}"),
        other => panic!("release of a busy partition: {other:?}"),
    }
    for c in &mut guard.children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    guard.children.clear();
    let released = s.mgr.release("rt").expect("release rt");
    eprintln!("release warnings: {:?}", released.warnings);
    s.mgr.release("shared").expect("release shared");

    // Everything back: no group left in any hierarchy, IRQs as before, no state.
    let mounts: Vec<PathBuf> = if v2 {
        host.cgroup.v2_mount.iter().cloned().collect()
    } else {
        host.cgroup.v1.values().cloned().collect()
    };
    for m in mounts {
        assert!(
            !m.join(&s.root_name).exists(),
            "{} removed",
            m.join(&s.root_name).display()
        );
    }
    assert_eq!(irq_affinities(), irqs_before, "IRQ affinities restored");
    let kthreads_after = kthread_affinities();
    for (p, comm) in &applied.kthreads.changed {
        if let (Some(before), Some(after)) = (kthreads_before.get(p), kthreads_after.get(p)) {
            assert_eq!(after, before, "kthread {p} {comm} restored");
        }
    }
    assert!(s.mgr.records().unwrap().is_empty());
    assert!(!s.mgr.holds_cpu_dma_latency());
}

#[test]
fn partition_end_to_end() {
    if std::env::var_os("RT_V2_INNER").is_some() {
        return; // this process is the namespace child of the v2 test
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !gate::is_root() {
        skip("needs root (cgroups, SCHED_FIFO, IRQ affinity)");
        return;
    }
    let host = HostReport::detect().unwrap();
    if host.cgroup.mode == CgroupMode::None {
        skip("no cgroup filesystem");
        return;
    }
    if !host.fifo_available {
        skip(&format!(
            "SCHED_FIFO unavailable: {:?}",
            host.fifo_unavailable_reasons
        ));
        return;
    }
    run_partition_scenario("a");
}

#[test]
fn v2_in_private_mount_namespace() {
    if std::env::var_os("RT_V2_INNER").is_some() {
        // Inside the namespace: cgroup2 alone at /sys/fs/cgroup.
        let host = HostReport::detect().unwrap();
        assert_eq!(host.cgroup.mode, CgroupMode::V2, "{:?}", host.cgroup);
        run_partition_scenario("v2");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !gate::is_root() {
        skip("needs root (mount namespace, cgroups)");
        return;
    }
    let host = HostReport::detect().unwrap();
    if host.cgroup.mode != CgroupMode::Hybrid {
        // Pure v2 hosts run the v2 path in partition_end_to_end already; pure v1 has no cgroup2.
        eprintln!(
            "skipped: host is {:?}, the namespace trick is for hybrid hosts",
            host.cgroup.mode
        );
        return;
    }
    if !gate::tool("rt cgroup namespace", "unshare") {
        return;
    }
    let me = std::env::current_exe().unwrap();
    let script = format!(
        "umount -R /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec {} --exact v2_in_private_mount_namespace --nocapture --test-threads 1",
        me.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("RT_V2_INNER", "1")
        .output()
        .expect("run unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "v2 scenario in the namespace failed:\n{text}"
    );
    assert!(text.contains("1 passed"), "{text}");
    assert!(
        text.contains("host mode V2"),
        "the inner run did the scenario:\n{text}"
    );
}
