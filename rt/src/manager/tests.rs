//! Manager tests on fake v1 (hybrid) and v2 trees: full apply → adopt → update → release cycles,
//! checked file by file, plus every refusal path (nothing may change on a refused profile).

use super::*;
use crate::error::ProfileError;
use crate::host::tests::{fake_v1_host, fake_v2_host, put};
use crate::kthread::tests::{cpus_of, put_task};
use crate::profile::Policy;
use std::fs;

struct Fake {
    _dir: tempfile::TempDir,
    root: PathBuf,
    mgr: Manager,
}

impl Fake {
    fn v1() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        fake_v1_host(&root);
        Self::finish(dir, root)
    }

    fn v2(rt_group_sched: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        fake_v2_host(&root, rt_group_sched);
        Self::finish(dir, root)
    }

    fn finish(dir: tempfile::TempDir, root: PathBuf) -> Self {
        let paths = HostPaths::under(&root);
        let host = HostReport::detect_with(&paths).unwrap();
        let pool = host.default_rt_pool.clone();
        let cfg = ManagerConfig::new(root.join("state"), pool);
        let mgr = Manager::with_paths(paths, host, cfg).unwrap();
        Self {
            _dir: dir,
            root,
            mgr,
        }
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .trim()
            .to_owned()
    }

    fn exists(&self, rel: &str) -> bool {
        self.root.join(rel).exists()
    }

    /// Every file below the fake root with its content (to prove "nothing changed").
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    // The kernel prints values with a newline; the fake files rt wrote have none.
                    out.insert(
                        p.clone(),
                        fs::read_to_string(&p).unwrap_or_default().trim().to_owned(),
                    );
                }
            }
        }
        out
    }
}

fn fifo_on(cpus: &[u32], prio: u32) -> ProfileSpec {
    ProfileSpec {
        cpu_list: Some(cpus.to_vec()),
        policy: Some(Policy::Fifo),
        priority: Some(prio),
        mlock: Some(true),
        memory_max_bytes: Some(256 << 20),
        ..Default::default()
    }
}

/// `PF_KTHREAD`.
const KT: u64 = 0x0020_0000;
const CS: &str = "sys/fs/cgroup/cpuset/slapos-edge";
const CPU: &str = "sys/fs/cgroup/cpu,cpuacct/slapos-edge";

#[test]
fn v1_apply_adopt_release_restores_everything() {
    let f = Fake::v1();
    // An unmanaged group already under the subtree, and a shared partition, both on all CPUs.
    put(&f.root, &format!("{CS}/foreign/cpuset.cpus"), "0-3\n");
    // An unbound kthread, a per-CPU one on the CPU to reserve and a user process.
    put_task(&f.root, 300, "kdamond.0", KT, 1000, "0-3");
    put_task(&f.root, 301, "ksoftirqd/2", KT | 0x0400_0000, 10, "2");
    put_task(&f.root, 302, "enb-helper", 0x0040_0000, 2000, "0-3");
    let shared = ProfileSpec {
        cpu_weight: Some(200),
        cpu_quota_us: Some(50_000),
        ..Default::default()
    };
    let a = f.mgr.apply("web", &shared).unwrap();
    assert!(!a.adopted);
    assert!(a.plan.cpus.is_empty());
    assert_eq!(f.read(&format!("{CS}/web/cpuset.cpus")), "0-3");
    assert_eq!(
        f.read(&format!("{CS}/cpuset.cpus")),
        "0-3",
        "subtree copies the parent"
    );
    assert_eq!(f.read(&format!("{CPU}/web/cpu.shares")), "2048");
    assert_eq!(f.read(&format!("{CPU}/web/cpu.cfs_quota_us")), "50000");
    assert_eq!(f.read(&format!("{CPU}/web/cpu.rt_runtime_us")), "0");
    assert_eq!(
        f.read("sys/fs/cgroup/memory/slapos-edge/web/memory.limit_in_bytes"),
        "-1"
    );
    assert!(f.exists("sys/fs/cgroup/blkio/slapos-edge/web"));
    assert!(f.exists("sys/fs/cgroup/pids/slapos-edge/web"));
    let before_rt = f.snapshot();

    // The RT partition takes CPU 2: others shrink, IRQs move, budget flows down.
    let enb = fifo_on(&[2], 80);
    let a = f.mgr.apply("enb", &enb).unwrap();
    assert_eq!(a.plan.cpus.to_string(), "2");
    assert_eq!(a.plan.rt_runtime_us, Some(950_000));
    assert_eq!(f.read(&format!("{CS}/enb/cpuset.cpus")), "2");
    assert_eq!(f.read(&format!("{CS}/enb/cpuset.cpu_exclusive")), "1");
    assert_eq!(f.read(&format!("{CS}/enb/cpuset.mems")), "0");
    assert_eq!(f.read(&format!("{CS}/cpuset.cpu_exclusive")), "1");
    assert_eq!(f.read(&format!("{CS}/web/cpuset.cpus")), "0-1,3");
    assert_eq!(f.read(&format!("{CS}/foreign/cpuset.cpus")), "0-1,3");
    assert_eq!(f.read(&format!("{CPU}/enb/cpu.rt_runtime_us")), "950000");
    assert_eq!(f.read(&format!("{CPU}/cpu.rt_runtime_us")), "950000");
    assert_eq!(
        f.read("sys/fs/cgroup/memory/slapos-edge/enb/memory.limit_in_bytes"),
        "268435456"
    );
    assert_eq!(f.read("proc/irq/24/smp_affinity_list"), "0-1,3");
    assert_eq!(f.read("proc/irq/default_smp_affinity"), "0000000b");
    assert_eq!(a.irq.changed, vec![24, 25, 40]);
    assert_eq!(a.kthreads.changed, vec![(300, "kdamond.0".to_owned())]);
    assert_eq!(cpus_of(&f.root, 300), "0-1,3");
    assert_eq!(cpus_of(&f.root, 302), "0-3", "user processes stay");
    assert_eq!(a.kthreads.unsteerable.len(), 1, "{:?}", a.kthreads);
    assert_eq!(a.kthreads.unsteerable[0].0, 301);
    // The child joins cpu/cpuacct, memory, blkio, pids first and cpuset last, as FIFO 80.
    let files = a.child.procs_files();
    assert_eq!(files.len(), 5);
    assert!(
        files[4].ends_with("cpuset/slapos-edge/enb/cgroup.procs"),
        "{files:?}"
    );
    assert_eq!((a.child.policy(), a.child.priority()), (Policy::Fifo, 80));
    assert_eq!(f.mgr.free_rt_cpus().unwrap().to_string(), "1,3");

    // Re-apply (node restart): adopted, nothing rewritten.
    let snap = f.snapshot();
    let again = f.mgr.apply("enb", &enb).unwrap();
    assert!(again.adopted);
    assert_eq!(again.plan.cpus, a.plan.cpus);
    assert_eq!(f.snapshot(), snap, "idempotent re-apply changes no file");

    // Usage reads the partition's files.
    put(&f.root, &format!("{CPU}/enb/cpuacct.usage"), "5000\n");
    put(&f.root, &format!("{CS}/enb/tasks"), "");
    let u = f.mgr.usage("enb").unwrap();
    assert_eq!(u.cpu_ns, Some(5000));
    assert_eq!(u.tasks, 0);

    // Release refuses while tasks remain, then restores the state before the RT partition.
    put(&f.root, &format!("{CS}/enb/tasks"), "4242\n");
    match f.mgr.release("enb") {
        Err(Error::Busy { pids, .. }) => assert_eq!(pids, vec![4242]),
        other => panic!("{other:?}"),
    }
    put(&f.root, &format!("{CS}/enb/tasks"), "");
    let r = f.mgr.release("enb").unwrap();
    assert_eq!(r.kthreads.changed, vec![(300, "kdamond.0".to_owned())]);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let mut after = f.snapshot();
    // The usage/tasks files we planted died with the group; the state dir holds web's record.
    after.retain(|p, _| !p.starts_with(f.root.join("state")));
    let mut expected = before_rt.clone();
    expected.retain(|p, _| !p.starts_with(f.root.join("state")));
    // Files a real cgroup has from birth with value 0 (written back to 0 by release) exist in the
    // fake only once written: `cpu.rt_runtime_us` and `cpuset.cpu_exclusive` of the subtree.
    after.retain(|p, v| expected.contains_key(p) || v != "0");
    assert_eq!(
        after, expected,
        "release restores every file to its pre-apply content"
    );
    assert!(!f.exists(&format!("{CS}/enb")));
    assert_eq!(f.read(&format!("{CS}/cpuset.cpu_exclusive")), "0");

    // Last partition: subtrees removed; the foreign group keeps the subtree dir (not removable
    // in the fake as it holds a foreign dir) but its CPUs are back.
    f.mgr.release("web").unwrap();
    assert!(!f.exists(CPU));
    assert!(!f.exists("sys/fs/cgroup/memory/slapos-edge"));
    assert_eq!(f.read(&format!("{CS}/foreign/cpuset.cpus")), "0-3");
    assert!(!f.exists("state/host.json"));
    assert!(f.mgr.records().unwrap().is_empty());
    assert!(matches!(f.mgr.release("web"), Err(Error::NotApplied(_))));
}

#[test]
fn v1_cpus_n_picks_free_cpus_and_budgets_must_fit() {
    let f = Fake::v1();
    let one = ProfileSpec {
        cpus: Some(1),
        policy: Some(Policy::Rr),
        priority: Some(10),
        rt_runtime_us: Some(400_000),
        ..Default::default()
    };
    let a = f.mgr.apply("a", &one).unwrap();
    assert_eq!(
        a.plan.cpus.to_string(),
        "1",
        "lowest free CPU of the pool 1-3"
    );
    let b = f.mgr.apply("b", &one).unwrap();
    assert_eq!(b.plan.cpus.to_string(), "2");
    assert_eq!(f.read(&format!("{CPU}/cpu.rt_runtime_us")), "800000");
    // 950000 − 800000 = 150000 left.
    let big = ProfileSpec {
        rt_runtime_us: Some(200_000),
        ..one.clone()
    };
    let snap = f.snapshot();
    match f.mgr.apply("c", &big) {
        Err(Error::Profile {
            source:
                ProfileError::RtBudgetExceeded {
                    requested_us,
                    available_us,
                },
            ..
        }) => {
            assert_eq!((requested_us, available_us), (200_000, 150_000));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.snapshot(), snap, "a refused profile changes nothing");
    // Re-applying `a` keeps its CPU even though CPU 1 is no longer the lowest free one.
    let again = f.mgr.apply("a", &one).unwrap();
    assert_eq!(again.plan.cpus.to_string(), "1");
    // Shrinking a's budget writes the child before the subtree.
    f.mgr
        .apply(
            "a",
            &ProfileSpec {
                rt_runtime_us: Some(100_000),
                ..one.clone()
            },
        )
        .unwrap();
    assert_eq!(f.read(&format!("{CPU}/a/cpu.rt_runtime_us")), "100000");
    assert_eq!(f.read(&format!("{CPU}/cpu.rt_runtime_us")), "500000");
    // Pool exhausted: only CPU 3 is free.
    let two = ProfileSpec {
        cpus: Some(2),
        ..Default::default()
    };
    match f.mgr.validate("d", &two) {
        Err(Error::Profile {
            source: ProfileError::NotEnoughFreeCpus { requested: 2, free },
            ..
        }) => {
            assert_eq!(free.to_string(), "3");
        }
        other => panic!("{other:?}"),
    }
    f.mgr.release("b").unwrap();
    assert_eq!(f.read(&format!("{CPU}/cpu.rt_runtime_us")), "100000");
    f.mgr.release("a").unwrap();
    assert!(!f.exists(CPU));
    assert!(!f.exists(CS));
    assert_eq!(f.read("proc/irq/24/smp_affinity_list"), "0-3");
    assert_eq!(f.read("proc/irq/default_smp_affinity"), "f");
}

#[test]
fn v1_refusals_happen_before_any_change() {
    let f = Fake::v1();
    f.mgr.apply("enb", &fifo_on(&[3], 50)).unwrap();
    // A top-level cpu group of the host already holds RT budget too.
    put(
        &f.root,
        "sys/fs/cgroup/cpu,cpuacct/other/cpu.rt_runtime_us",
        "0\n",
    );
    let snap = f.snapshot();
    type Check = fn(&ProfileError) -> bool;
    let cases: Vec<(ProfileSpec, Check)> = vec![
        (
            fifo_on(&[3], 50),
            |e| matches!(e, ProfileError::CpuReserved { cpu: 3, partition } if partition == "enb"),
        ),
        (fifo_on(&[7], 50), |e| {
            matches!(e, ProfileError::CpuOffline { cpu: 7, .. })
        }),
        (fifo_on(&[0], 50), |e| {
            matches!(e, ProfileError::CpuNotInPool { cpu: 0, .. })
        }),
        (fifo_on(&[1], 0), |e| {
            matches!(e, ProfileError::PriorityOutOfRange(0))
        }),
        (
            ProfileSpec {
                policy: Some(Policy::Fifo),
                priority: Some(1),
                ..Default::default()
            },
            |e| {
                matches!(
                    e,
                    ProfileError::RtBudgetExceeded {
                        requested_us: 950_000,
                        available_us: 0
                    }
                )
            },
        ),
    ];
    for (spec, ok) in cases {
        match f.mgr.apply("x", &spec) {
            Err(Error::Profile { source, partition }) => {
                assert_eq!(partition, "x");
                assert!(ok(&source), "{spec:?}: {source}");
            }
            other => panic!("{spec:?}: {other:?}"),
        }
    }
    match f.mgr.apply("bad/name", &ProfileSpec::default()) {
        Err(Error::Profile {
            source: ProfileError::InvalidName(_),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(f.snapshot(), snap);
}

#[test]
fn v1_reserving_the_last_shared_cpu_is_refused() {
    let f = Fake::v1();
    put(&f.root, &format!("{CS}/pinned/cpuset.cpus"), "2-3\n");
    f.mgr
        .apply(
            "a",
            &ProfileSpec {
                cpu_list: Some(vec![2]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(f.read(&format!("{CS}/pinned/cpuset.cpus")), "3");
    match f.mgr.apply(
        "b",
        &ProfileSpec {
            cpu_list: Some(vec![3]),
            ..Default::default()
        },
    ) {
        Err(Error::Profile {
            source: ProfileError::WouldEmptyCgroup { cgroup, .. },
            ..
        }) => {
            assert_eq!(cgroup, "pinned");
        }
        other => panic!("{other:?}"),
    }
    f.mgr.release("a").unwrap();
    assert_eq!(f.read(&format!("{CS}/pinned/cpuset.cpus")), "2-3");
}

#[test]
fn v1_update_moves_cpus_and_back_to_shared() {
    let f = Fake::v1();
    f.mgr.apply("s", &ProfileSpec::default()).unwrap();
    f.mgr
        .apply(
            "p",
            &ProfileSpec {
                cpu_list: Some(vec![1]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(f.read(&format!("{CS}/s/cpuset.cpus")), "0,2-3");
    f.mgr
        .apply(
            "p",
            &ProfileSpec {
                cpu_list: Some(vec![2, 3]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(f.read(&format!("{CS}/p/cpuset.cpus")), "2-3");
    assert_eq!(f.read(&format!("{CS}/s/cpuset.cpus")), "0-1");
    assert_eq!(f.read("proc/irq/40/smp_affinity_list"), "0-1");
    f.mgr.apply("p", &ProfileSpec::default()).unwrap();
    assert_eq!(f.read(&format!("{CS}/p/cpuset.cpu_exclusive")), "0");
    assert_eq!(f.read(&format!("{CS}/p/cpuset.cpus")), "0-3");
    assert_eq!(f.read(&format!("{CS}/s/cpuset.cpus")), "0-3");
    assert_eq!(f.read(&format!("{CS}/cpuset.cpu_exclusive")), "0");
    assert_eq!(f.read("proc/irq/40/smp_affinity_list"), "0-3");
}

#[test]
fn v1_failed_first_apply_is_undone() {
    let f = Fake::v1();
    // A directory where memory.limit_in_bytes should be makes the write fail mid-apply.
    fs::create_dir_all(
        f.root
            .join("sys/fs/cgroup/memory/slapos-edge/enb/memory.limit_in_bytes"),
    )
    .unwrap();
    let e = f.mgr.apply("enb", &fifo_on(&[1], 80)).unwrap_err();
    assert!(e.to_string().contains("memory.limit_in_bytes"), "{e}");
    assert!(
        f.mgr.records().unwrap().is_empty(),
        "the intent record is dropped"
    );
    assert!(!f.exists(&format!("{CS}/enb")));
    assert!(!f.exists(&format!("{CPU}/enb")));
    assert_eq!(f.read("proc/irq/24/smp_affinity_list"), "0-3");
}

#[test]
fn v2_partition_root_and_controllers_are_restored() {
    let f = Fake::v2(false);
    let spec = ProfileSpec {
        cpu_weight: Some(50),
        ..fifo_on(&[3], 70)
    };
    let a = f.mgr.apply("enb", &spec).unwrap();
    let sub = "sys/fs/cgroup/slapos-edge";
    assert_eq!(f.read(&format!("{sub}/cpuset.cpus.exclusive")), "3");
    assert_eq!(f.read(&format!("{sub}/enb/cpuset.cpus")), "3");
    assert_eq!(f.read(&format!("{sub}/enb/cpuset.cpus.exclusive")), "3");
    assert_eq!(
        f.read(&format!("{sub}/enb/cpuset.cpus.partition")),
        "isolated"
    );
    assert_eq!(f.read(&format!("{sub}/enb/memory.max")), "268435456");
    assert_eq!(f.read(&format!("{sub}/enb/cpu.weight")), "50");
    assert_eq!(f.read(&format!("{sub}/enb/cpu.max")), "max 100000");
    assert_eq!(a.plan.rt_runtime_us, None, "no RT budget on v2");
    assert_eq!(
        a.child.procs_files(),
        vec![f.root.join(format!("{sub}/enb/cgroup.procs"))]
    );
    assert_eq!(f.read("proc/irq/24/smp_affinity_list"), "0-2");
    // The root enabled memory+pids; rt added io, cpuset, cpu (last write wins in the fake file).
    assert_eq!(f.read("sys/fs/cgroup/cgroup.subtree_control"), "+cpu");
    put(&f.root, &format!("{sub}/enb/cgroup.procs"), "");
    f.mgr.release("enb").unwrap();
    assert!(!f.exists(sub));
    assert_eq!(
        f.read("sys/fs/cgroup/cgroup.subtree_control"),
        "-io",
        "added controllers removed in reverse"
    );
    assert_eq!(f.read("proc/irq/24/smp_affinity_list"), "0-3");
    assert!(!f.exists("state/host.json"));
}

#[test]
fn v2_with_rt_group_sched_keeps_fifo_outside_cpu() {
    let f = Fake::v2(true);
    let fifo = fifo_on(&[2], 80);
    match f.mgr.validate(
        "enb",
        &ProfileSpec {
            cpu_weight: Some(100),
            ..fifo.clone()
        },
    ) {
        Err(Error::Profile {
            source:
                ProfileError::RtUnderCpuController {
                    policy: Policy::Fifo,
                    reason,
                },
            ..
        }) => {
            assert!(reason.contains("cpu_weight"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match f.mgr.validate(
        "enb",
        &ProfileSpec {
            rt_runtime_us: Some(500_000),
            ..fifo.clone()
        },
    ) {
        Err(Error::Profile {
            source: ProfileError::RtRuntimeUnsupported(_),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    f.mgr.apply("enb", &fifo).unwrap();
    assert!(
        !f.exists("sys/fs/cgroup/slapos-edge/enb/cpu.weight"),
        "cpu controller not used"
    );
    // Now a shared partition asking for a weight would put enb under the cpu controller.
    match f.mgr.apply(
        "web",
        &ProfileSpec {
            cpu_weight: Some(100),
            ..Default::default()
        },
    ) {
        Err(Error::Profile {
            source: ProfileError::RtUnderCpuController { reason, .. },
            ..
        }) => {
            assert!(reason.contains("`enb`"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    f.mgr
        .apply(
            "web",
            &ProfileSpec {
                memory_max_bytes: Some(1 << 30),
                ..Default::default()
            },
        )
        .unwrap();
    // A root that enables cpu for every child makes FIFO impossible below it.
    put(
        &f.root,
        "sys/fs/cgroup/cgroup.subtree_control",
        "cpu memory pids\n",
    );
    let f2 = Fake::finish(tempfile::tempdir().unwrap(), f.root.clone());
    match f2.mgr.validate("x", &fifo_on(&[3], 80)) {
        Err(Error::Profile {
            source: ProfileError::RtUnderCpuController { reason, .. },
            ..
        }) => {
            assert!(reason.contains("root"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn v2_old_kernel_refuses_exclusive_cpus() {
    let f = Fake::v2(false);
    put(&f.root, "proc/sys/kernel/osrelease", "6.1.0\n");
    let f = Fake::finish(tempfile::tempdir().unwrap(), f.root.clone());
    match f.mgr.validate(
        "enb",
        &ProfileSpec {
            cpus: Some(1),
            ..Default::default()
        },
    ) {
        Err(
            e @ Error::Profile {
                source: ProfileError::V2PartitionUnsupported { .. },
                ..
            },
        ) => {
            let msg = e.to_string();
            assert!(
                msg.contains("cpuset.cpus.exclusive") && msg.contains("kernel 6.1.0 "),
                "the refusal names the knob and the kernel: {msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        f.mgr
            .validate(
                "web",
                &ProfileSpec {
                    memory_max_bytes: Some(1 << 30),
                    ..Default::default()
                }
            )
            .is_ok()
    );
}

#[test]
fn fifo_refused_when_host_cannot_give_it() {
    let f = Fake::v1();
    put(&f.root, "proc/sys/kernel/sched_rt_runtime_us", "0\n");
    let f = Fake::finish(tempfile::tempdir().unwrap(), f.root.clone());
    match f.mgr.validate("enb", &fifo_on(&[1], 80)) {
        Err(Error::Profile {
            source:
                ProfileError::RtUnavailable {
                    policy: Policy::Fifo,
                    reason,
                },
            ..
        }) => {
            assert!(reason.contains("sched_rt_runtime_us"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Without RT group scheduling, an explicit budget is refused and the default is dropped.
    let g = Fake::v1();
    fs::remove_file(g.root.join("sys/fs/cgroup/cpu,cpuacct/cpu.rt_runtime_us")).unwrap();
    let g = Fake::finish(tempfile::tempdir().unwrap(), g.root.clone());
    assert_eq!(g.mgr.host().rt_group_sched, Some(false));
    let explicit = ProfileSpec {
        rt_runtime_us: Some(100_000),
        ..fifo_on(&[1], 80)
    };
    assert!(matches!(
        g.mgr.validate("enb", &explicit),
        Err(Error::Profile {
            source: ProfileError::RtRuntimeUnsupported(_),
            ..
        })
    ));
    assert_eq!(
        g.mgr
            .validate("enb", &fifo_on(&[1], 80))
            .unwrap()
            .rt_runtime_us,
        None
    );
}
