//! The partition manager: validate a profile, apply it to the partition's cgroup(s), keep other
//! partitions and IRQs off reserved CPUs, release and restore.
//!
//! Layout: one subtree `<root_name>` (default `slapos-edge`) under each used hierarchy, one group
//! per partition below it: `/sys/fs/cgroup/<ctrl>/slapos-edge/<partition>` on v1 (hierarchies
//! cpuset, cpu, cpuacct, memory, blkio, pids — co-mounted ones share a directory),
//! `<cgroup2>/slapos-edge/<partition>` on v2.
//!
//! State (`state_dir`, JSON, written by rename): `partitions/<name>.json` holds each applied
//! profile with its resolved CPUs and RT budget (written *before* the kernel files, so a crash
//! mid-apply is finished by the next apply); `host.json` holds what must be restored when the
//! last partition goes: subtree directories rt created, flags it set, original CPU lists of
//! cgroups it shrank, original IRQ and kthread affinities, controllers it enabled in the v2 root.
//!
//! Invariants after every successful apply/release:
//! - reserved = ∪ exclusive CPUs of all records; every other cpuset group under the subtree has
//!   `base ∖ reserved` (its CPUs before rt touched it, minus reserved), IRQs and unbound kthreads
//!   `original ∖ reserved`;
//! - v1 with RT group scheduling: subtree `cpu.rt_runtime_us` = Σ partition budgets;
//! - no record left ⇒ nothing of rt left on the host (subtrees removed, flags, IRQs and kthreads restored).
//!
//! Where things are (this file is the [`Manager`] facade: apply, release, usage, child setup):
//! - `planning` — the pure core: [`plan`], [`PlanContext`], [`Plan`]; no I/O;
//! - `context` — the I/O side of planning: reads the host and records into a [`PlanContext`];
//! - `state` — what is persisted: [`PartitionRecord`], the host state to restore, load/save;
//! - `layout` — which hierarchies rt uses and the paths of the subtree and partition groups;
//! - `shared` — the non-exclusive cpuset groups kept at `base ∖ reserved`;
//! - `v1`, `v2` — what apply and release write in cgroup v1 (budgets) and v2 (remote partitions).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;

use crate::child::ChildSetup;
use crate::cpulist::CpuList;
use crate::error::{Error, Result};
use crate::host::{HostPaths, HostReport};
use crate::irq::{self, IrqOutcome};
use crate::kfs;
use crate::kthread::{self, KthreadOutcome};
use crate::profile::{ProfileSpec, check_name};
use crate::usage::{self, Usage};

mod context;
mod layout;
mod planning;
mod shared;
mod state;
mod v1;
mod v2;

use layout::Layout;
pub use planning::{Plan, PlanContext, plan};
pub use state::PartitionRecord;
use state::{HostState, reserved_cpus, save_json};

/// Manager settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerConfig {
    /// Subtree name under each hierarchy (default `slapos-edge`).
    pub root_name: String,
    /// Where records are kept (must survive node restarts to restore after one).
    pub state_dir: PathBuf,
    /// CPUs partitions may reserve (published as the `rt_cpus` label).
    pub rt_pool: CpuList,
    /// Steer IRQs off reserved CPUs (default true).
    pub steer_irqs: bool,
    /// Steer unbound kernel threads (kdamond, kswapd, khugepaged…) off reserved CPUs (default
    /// true).
    pub steer_kthreads: bool,
    /// v1: set `cpuset.cpu_exclusive` on reserved groups and the subtree (default true). The
    /// kernel then refuses any sibling of the subtree that overlaps it; turn off on hosts where
    /// other software creates top-level cpusets with all CPUs.
    pub kernel_exclusive: bool,
    /// Hold `/dev/cpu_dma_latency` at 0 while any fifo/rr partition is applied (default true).
    pub hold_cpu_dma_latency: bool,
}

impl ManagerConfig {
    /// Defaults with the given state directory and RT pool.
    pub fn new(state_dir: impl Into<PathBuf>, rt_pool: CpuList) -> Self {
        Self {
            root_name: "slapos-edge".into(),
            state_dir: state_dir.into(),
            rt_pool,
            steer_irqs: true,
            steer_kthreads: true,
            kernel_exclusive: true,
            hold_cpu_dma_latency: true,
        }
    }
}

/// Result of [`Manager::apply`].
#[derive(Clone, Debug)]
pub struct Applied {
    /// The plan carried out.
    pub plan: Plan,
    /// The partition's cgroup directories.
    pub cgroups: Vec<PathBuf>,
    /// True when a record or cgroup of the partition existed already (re-apply, node restart).
    pub adopted: bool,
    /// IRQ steering outcome.
    pub irq: IrqOutcome,
    /// Kernel-thread steering outcome.
    pub kthreads: KthreadOutcome,
    /// Setup for the partition's processes (`pre_exec`).
    pub child: ChildSetup,
}

/// Result of [`Manager::release`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct Released {
    /// Restorations that could not be done (e.g. an IRQ the kernel refuses), for the log.
    pub warnings: Vec<String>,
    /// IRQ restoration outcome.
    pub irq: IrqOutcome,
    /// Kernel-thread restoration outcome.
    pub kthreads: KthreadOutcome,
}

/// Applies, releases and reads partition profiles. `Sync`: operations are serialised by an
/// internal lock, so one `Arc<Manager>` can be shared by the node's tasks.
#[derive(Debug)]
pub struct Manager {
    paths: HostPaths,
    host: HostReport,
    cfg: ManagerConfig,
    layout: Layout,
    /// Serialises operations; holds the `/dev/cpu_dma_latency` descriptor while RT partitions run.
    lock: Mutex<Option<File>>,
}

impl Manager {
    /// A manager for the real host.
    pub fn new(host: HostReport, cfg: ManagerConfig) -> Result<Self> {
        Self::with_paths(HostPaths::real(), host, cfg)
    }

    /// A manager for the host below `paths` (fake trees in tests).
    pub fn with_paths(paths: HostPaths, host: HostReport, cfg: ManagerConfig) -> Result<Self> {
        check_name(&cfg.root_name).map_err(|source| Error::Profile {
            partition: cfg.root_name.clone(),
            source,
        })?;
        let layout = Layout::detect(&paths, &host)?;
        Ok(Self {
            paths,
            host,
            cfg,
            layout,
            lock: Mutex::new(None),
        })
    }

    /// The host report the manager works with.
    pub fn host(&self) -> &HostReport {
        &self.host
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    /// CPUs of the pool not reserved by any partition.
    pub fn free_rt_cpus(&self) -> Result<CpuList> {
        let reserved = reserved_cpus(&self.records()?);
        Ok(self
            .cfg
            .rt_pool
            .intersection(&self.host.online_cpus)
            .difference(&reserved))
    }

    // ----- planning ----------------------------------------------------------------------

    /// Validates `spec` for `partition` against the host and the other partitions without
    /// changing anything.
    pub fn validate(&self, partition: &str, spec: &ProfileSpec) -> Result<Plan> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let records = self.records()?;
        let state = self.load_state()?;
        self.plan_with(partition, spec, &records, &state)
    }

    // ----- apply -------------------------------------------------------------------------

    /// Validates and applies `spec` to `partition`. Idempotent: applying the same profile again
    /// (also after a node restart, adopting the existing cgroups) rewrites nothing that already
    /// holds the right value; applying a changed profile updates it in place. On a validation
    /// error nothing is changed; on a kernel error during a first apply, what was created is
    /// removed again.
    pub fn apply(&self, partition: &str, spec: &ProfileSpec) -> Result<Applied> {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut records = self.records()?;
        let mut state = self.load_state()?;
        let plan = self.plan_with(partition, spec, &records, &state)?;
        let existed = records.contains_key(partition)
            || self.cgroup_dirs(partition).iter().any(|d| d.is_dir());
        let previous = records.get(partition).cloned();
        let record = PartitionRecord {
            spec: spec.clone(),
            cpus: plan.cpus.clone(),
            rt_runtime_us: plan.rt_runtime_us,
        };
        // Intent first: a crash from here on is completed (or undone) by the next apply/release.
        save_json(&self.record_file(partition), &record)?;
        records.insert(partition.to_owned(), record);
        let result = match &self.layout {
            Layout::V1(_) => self.apply_v1(&plan, &records, &mut state),
            Layout::V2 { mount } => self.apply_v2(mount, &plan, &records, &mut state),
        }
        .and_then(|()| self.steer(&plan.reserved_after, &mut state));
        let (irq, kthreads) = match result {
            Ok(steered) => steered,
            Err(e) => {
                self.roll_back(partition, previous, &mut records, &mut state);
                return Err(e);
            }
        };
        self.save_state(&state)?;
        self.update_pm_qos(&mut guard, &records);
        let child = self.child_setup_for(partition, &records[partition])?;
        Ok(Applied {
            plan,
            cgroups: self.cgroup_dirs(partition),
            adopted: existed,
            irq,
            kthreads,
            child,
        })
    }

    /// After a kernel error in `apply`, best effort: errors here are dropped, the caller gets the
    /// apply's own error.
    fn roll_back(
        &self,
        partition: &str,
        previous: Option<PartitionRecord>,
        records: &mut BTreeMap<String, PartitionRecord>,
        state: &mut HostState,
    ) {
        match previous {
            // First apply: undo what was created.
            None => {
                let _ = self.release_locked(partition, records, state, true);
            }
            // Update: keep the previous record; the next apply reconciles the kernel files.
            Some(prev) => {
                let _ = save_json(&self.record_file(partition), &prev);
            }
        }
        let _ = self.save_state(state);
    }

    /// Moves IRQs and unbound kthreads off `reserved` (back to their originals outside it),
    /// each unless its steering is off.
    fn steer(
        &self,
        reserved: &CpuList,
        state: &mut HostState,
    ) -> Result<(IrqOutcome, KthreadOutcome)> {
        let irq = match self.cfg.steer_irqs {
            true => irq::steer(&self.paths, reserved, &mut state.irq)?,
            false => IrqOutcome::default(),
        };
        let kthreads = match self.cfg.steer_kthreads {
            true => kthread::steer(&self.paths, reserved, &mut state.kthreads)?,
            false => KthreadOutcome::default(),
        };
        Ok((irq, kthreads))
    }

    // ----- release -----------------------------------------------------------------------

    /// Releases `partition`: removes its cgroups, gives its CPUs back to the shared groups,
    /// restores IRQs; when it was the last partition, removes the subtrees and restores every
    /// flag rt changed. Fails with [`Error::Busy`] while the partition still has tasks.
    pub fn release(&self, partition: &str) -> Result<Released> {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut records = self.records()?;
        if !records.contains_key(partition) {
            return Err(Error::NotApplied(partition.to_owned()));
        }
        let mut state = self.load_state()?;
        let r = self.release_locked(partition, &mut records, &mut state, false);
        self.save_state(&state)?;
        self.update_pm_qos(&mut guard, &records);
        r
    }

    /// Releases `partition` with the lock held; `force` (undoing a failed first apply) skips the
    /// busy check and keeps going past kernel errors, returning them as warnings.
    fn release_locked(
        &self,
        partition: &str,
        records: &mut BTreeMap<String, PartitionRecord>,
        state: &mut HostState,
        force: bool,
    ) -> Result<Released> {
        let mut out = Released::default();
        let dirs = self.cgroup_dirs(partition);
        if !force {
            self.check_idle(&dirs)?;
        }
        records.remove(partition);
        let reserved = reserved_cpus(records);
        // In forced mode (undoing a failed first apply) keep going past errors.
        let mut soft = |r: Result<()>| -> Result<()> {
            match r {
                Err(e) if force => {
                    out.warnings.push(e.to_string());
                    Ok(())
                }
                other => other,
            }
        };
        match &self.layout {
            Layout::V1(_) => {
                self.release_v1(partition, &dirs, records, state, &reserved, &mut soft)?
            }
            Layout::V2 { mount } => {
                self.release_v2(mount, partition, records, state, &reserved, &mut soft)?
            }
        }
        self.restore_irqs(&reserved, state, &mut out);
        self.remove_record(partition)?;
        if records.is_empty() {
            self.teardown(state, &mut out);
        }
        Ok(out)
    }

    /// Fails with [`Error::Busy`] when a group of the partition still has tasks.
    fn check_idle(&self, dirs: &[PathBuf]) -> Result<()> {
        for d in dirs {
            let file = if self.host.cgroup.uses_v2() {
                "cgroup.procs"
            } else {
                "tasks"
            };
            let pids = kfs::read_pids(&d.join(file))?;
            if !pids.is_empty() {
                return Err(Error::Busy {
                    path: d.clone(),
                    pids,
                });
            }
        }
        Ok(())
    }

    /// Steers IRQs and kthreads for what stays reserved; what cannot be restored becomes a
    /// warning (kthreads only once nothing is reserved: per-CPU ones stay unsteerable before).
    fn restore_irqs(&self, reserved: &CpuList, state: &mut HostState, out: &mut Released) {
        match self.steer(reserved, state) {
            Ok((irq, kthreads)) => {
                out.warnings.extend(
                    irq.unsteerable
                        .iter()
                        .map(|(n, why)| format!("IRQ {n}: {why}")),
                );
                if reserved.is_empty() {
                    out.warnings.extend(
                        kthreads
                            .unsteerable
                            .iter()
                            .map(|(pid, why)| format!("kthread {pid}: {why}")),
                    );
                }
                out.irq = irq;
                out.kthreads = kthreads;
            }
            Err(e) => out.warnings.push(e.to_string()),
        }
    }

    /// Last partition gone: remove the subtrees rt created and the v2 controllers it enabled.
    fn teardown(&self, state: &mut HostState, out: &mut Released) {
        for sub in std::mem::take(&mut state.created).into_iter().rev() {
            if let Err(e) = kfs::rmdir_cgroup(&sub) {
                out.warnings.push(e.to_string());
            }
        }
        if let Layout::V2 { mount } = &self.layout {
            for c in std::mem::take(&mut state.v2_root_controllers_added)
                .into_iter()
                .rev()
            {
                if let Err(e) = kfs::write(&mount.join("cgroup.subtree_control"), &format!("-{c}"))
                {
                    out.warnings.push(e.to_string());
                }
            }
        }
        // Only bases of groups rt does not manage can remain; they were restored by the Grow pass.
        state.cpuset_base.clear();
    }

    // ----- processes and usage -----------------------------------------------------------

    /// The `pre_exec` setup for `partition`'s processes (from its record).
    pub fn child_setup(&self, partition: &str) -> Result<ChildSetup> {
        let records = self.records()?;
        let rec = records
            .get(partition)
            .ok_or_else(|| Error::NotApplied(partition.to_owned()))?;
        self.child_setup_for(partition, rec)
    }

    fn child_setup_for(&self, partition: &str, rec: &PartitionRecord) -> Result<ChildSetup> {
        let policy = rec.spec.policy();
        let prio = rec.spec.priority.unwrap_or(0);
        let mlock = rec.spec.mlock.unwrap_or(false);
        match &self.layout {
            Layout::V1(hiers) => {
                let mut first = Vec::new();
                let mut cpuset = None;
                for h in hiers {
                    let d = h.mount.join(&self.cfg.root_name).join(partition);
                    if h.controllers.contains(&"cpuset") {
                        cpuset = Some(d);
                    } else {
                        first.push(d);
                    }
                }
                ChildSetup::new(
                    &first,
                    cpuset.as_deref(),
                    policy,
                    prio,
                    mlock,
                    rec.cpus.clone(),
                )
            }
            Layout::V2 { mount } => {
                let d = mount.join(&self.cfg.root_name).join(partition);
                ChildSetup::new(&[d], None, policy, prio, mlock, rec.cpus.clone())
            }
        }
    }

    /// CPU time, memory, I/O and task count of `partition`.
    pub fn usage(&self, partition: &str) -> Result<Usage> {
        if !self.records()?.contains_key(partition) {
            return Err(Error::NotApplied(partition.to_owned()));
        }
        match &self.layout {
            Layout::V1(_) => {
                let tasks_dir = self
                    .group("cpuset", partition)
                    .or_else(|| self.group("cpu", partition))
                    .or_else(|| self.cgroup_dirs(partition).into_iter().next())
                    .unwrap_or_default();
                usage::read_v1(
                    self.group("cpuacct", partition).as_deref(),
                    self.group("memory", partition).as_deref(),
                    self.group("blkio", partition).as_deref(),
                    &tasks_dir,
                )
            }
            Layout::V2 { mount } => {
                usage::read_v2(&mount.join(&self.cfg.root_name).join(partition))
            }
        }
    }

    /// Holds `/dev/cpu_dma_latency` at 0 while an RT partition exists; drops it otherwise.
    fn update_pm_qos(&self, slot: &mut Option<File>, records: &BTreeMap<String, PartitionRecord>) {
        let want = self.cfg.hold_cpu_dma_latency
            && records.values().any(|r| r.spec.policy().is_realtime());
        if !want {
            *slot = None;
        } else if slot.is_none() {
            *slot = crate::pmqos::hold_zero(&self.paths.resolve("/dev/cpu_dma_latency")).ok();
        }
    }

    /// True while the manager holds `/dev/cpu_dma_latency`.
    pub fn holds_cpu_dma_latency(&self) -> bool {
        self.lock.lock().map(|g| g.is_some()).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests;
