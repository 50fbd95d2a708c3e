//! cgroup v1: a partition's groups in each hierarchy (cpuset, cpu, cpuacct, memory, blkio, pids),
//! exclusive cpusets under an exclusive subtree, and the RT budgets of RT group scheduling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Manager;
use super::layout::{Hier, Layout};
use super::planning::Plan;
use super::shared::Phase;
use super::state::{HostState, PartitionRecord, rt_budget_total};
use crate::cpulist::CpuList;
use crate::error::Result;
use crate::kfs;
use crate::profile::ProfileSpec;

impl Manager {
    /// Applies a plan on cgroup v1: subtrees, cpuset (exclusive CPUs, shared groups shrunk and
    /// grown around them), cpu (shares, quota, RT budget), memory, accounting-only groups.
    pub(super) fn apply_v1(
        &self,
        plan: &Plan,
        records: &BTreeMap<String, PartitionRecord>,
        state: &mut HostState,
    ) -> Result<()> {
        let part = plan.partition.as_str();
        let Layout::V1(hiers) = &self.layout else {
            return Ok(());
        };
        self.v1_subtrees(hiers, state)?;
        let exclusive_any = records.values().any(|r| !r.cpus.is_empty());
        if let Some(sub) = self.subtree("cpuset") {
            self.v1_cpuset(&sub, plan, records, state, exclusive_any)?;
        }
        if let Some(dir) = self.group("cpu", part) {
            self.v1_cpu(&dir, plan, records)?;
        }
        if let Some(dir) = self.group("memory", part) {
            v1_memory(&dir, &plan.spec)?;
        }
        // accounting-only hierarchies
        for ctrl in ["cpuacct", "blkio", "pids"] {
            if let Some(dir) = self.group(ctrl, part) {
                kfs::mkdir(&dir)?;
            }
        }
        if !exclusive_any && state.subtree_exclusive_set {
            if let Some(sub) = self.subtree("cpuset") {
                kfs::write(&sub.join("cpuset.cpu_exclusive"), "0")?;
            }
            state.subtree_exclusive_set = false;
        }
        Ok(())
    }

    /// Creates the subtree in every hierarchy; a cpuset subtree gets its parent's mems and cpus.
    fn v1_subtrees(&self, hiers: &[Hier], state: &mut HostState) -> Result<()> {
        for h in hiers {
            let sub = h.mount.join(&self.cfg.root_name);
            self.ensure_subtree(&sub, state)?;
            if h.controllers.contains(&"cpuset") {
                // A new v1 cpuset group is empty; tasks cannot join it (nor its children get
                // CPUs) until cpus/mems are set: take the parent's.
                for file in ["cpuset.mems", "cpuset.cpus"] {
                    if kfs::read_opt(&sub.join(file))?.is_none_or(|v| v.trim().is_empty()) {
                        kfs::write(&sub.join(file), kfs::read(&h.mount.join(file))?.trim())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The partition's cpuset group below the subtree `sub`: the subtree made exclusive when a
    /// partition reserves CPUs, the partition's CPUs (or the shared pool) written between the
    /// shrink and the grow pass over the shared groups.
    fn v1_cpuset(
        &self,
        sub: &Path,
        plan: &Plan,
        records: &BTreeMap<String, PartitionRecord>,
        state: &mut HostState,
        exclusive_any: bool,
    ) -> Result<()> {
        let part = plan.partition.as_str();
        if exclusive_any && self.cfg.kernel_exclusive && !state.subtree_exclusive_set {
            // Children can only be exclusive below an exclusive parent.
            if kfs::read_opt(&sub.join("cpuset.cpu_exclusive"))?.is_none_or(|v| v.trim() != "1") {
                kfs::write(&sub.join("cpuset.cpu_exclusive"), "1")?;
                state.subtree_exclusive_set = true;
            }
        }
        let dir = sub.join(part);
        kfs::mkdir(&dir)?;
        kfs::write_if_changed(
            &dir.join("cpuset.mems"),
            kfs::read(&sub.join("cpuset.mems"))?.trim(),
        )?;
        if plan.cpus.is_empty() {
            state
                .cpuset_base
                .insert(part.to_owned(), self.subtree_cpus()?.to_string());
        } else {
            state.cpuset_base.remove(part);
        }
        self.reconcile_shared(records, state, &plan.reserved_after, Phase::Shrink)?;
        if plan.cpus.is_empty() {
            if kfs::read_opt(&dir.join("cpuset.cpu_exclusive"))?.is_some_and(|v| v.trim() == "1") {
                kfs::write(&dir.join("cpuset.cpu_exclusive"), "0")?;
            }
        } else {
            kfs::write_if_changed(&dir.join("cpuset.cpus"), &plan.cpus.to_string())?;
            if self.cfg.kernel_exclusive {
                kfs::write_if_changed(&dir.join("cpuset.cpu_exclusive"), "1")?;
            }
        }
        self.reconcile_shared(records, state, &plan.reserved_after, Phase::Grow)
    }

    /// The partition's cpu group `dir`: weight, quota, RT budget.
    fn v1_cpu(
        &self,
        dir: &Path,
        plan: &Plan,
        records: &BTreeMap<String, PartitionRecord>,
    ) -> Result<()> {
        let spec = &plan.spec;
        kfs::mkdir(dir)?;
        kfs::write_if_changed(
            &dir.join("cpu.shares"),
            &spec.cpu_shares().unwrap_or(1024).to_string(),
        )?;
        let period = spec
            .cpu_period_us
            .unwrap_or(crate::profile::DEFAULT_CPU_PERIOD_US);
        kfs::write_if_changed(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
        let quota = spec.cpu_quota_us.map_or("-1".to_owned(), |q| q.to_string());
        kfs::write_if_changed(&dir.join("cpu.cfs_quota_us"), &quota)?;
        if self.host.rt_group_sched == Some(true) {
            let total = rt_budget_total(records);
            self.v1_budget(dir, plan.rt_runtime_us.unwrap_or(0), total)?;
        }
        Ok(())
    }

    /// Writes a partition's RT budget and the subtree's total (= Σ budgets) in an order the
    /// kernel accepts: a parent grows before its child, shrinks after it.
    pub(super) fn v1_budget(&self, dir: &Path, child: u64, total: u64) -> Result<()> {
        let Some(sub) = dir.parent() else {
            return Ok(());
        };
        let file = sub.join("cpu.rt_runtime_us");
        let cur: u64 = kfs::read_opt(&file)?
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if total > cur {
            kfs::write(&file, &total.to_string())?;
        }
        kfs::write_if_changed(&dir.join("cpu.rt_runtime_us"), &child.to_string())?;
        if total < cur {
            kfs::write(&file, &total.to_string())?;
        }
        Ok(())
    }

    /// Removes a partition's v1 groups, gives its CPUs back to the shared groups and drops the
    /// subtree's exclusive flag with the last exclusive partition. `soft` decides which kernel
    /// errors stop the release.
    pub(super) fn release_v1(
        &self,
        partition: &str,
        dirs: &[PathBuf],
        records: &BTreeMap<String, PartitionRecord>,
        state: &mut HostState,
        reserved: &CpuList,
        soft: &mut impl FnMut(Result<()>) -> Result<()>,
    ) -> Result<()> {
        // cpu first: removing the child frees its budget, then the subtree shrinks.
        if let Some(d) = self.group("cpu", partition) {
            soft(kfs::rmdir_cgroup(&d))?;
            if self.host.rt_group_sched == Some(true)
                && let Some(sub) = self.subtree("cpu").filter(|s| s.is_dir())
            {
                let total = rt_budget_total(records);
                let file = sub.join("cpu.rt_runtime_us");
                if kfs::read_opt(&file)?.is_none_or(|v| v.trim() != total.to_string()) {
                    soft(kfs::write_settling(&file, &total.to_string()))?;
                }
            }
        }
        for d in dirs {
            soft(kfs::rmdir_cgroup(d))?;
        }
        state.cpuset_base.remove(partition);
        self.reconcile_shared(records, state, reserved, Phase::Grow)?;
        if state.subtree_exclusive_set && !records.values().any(|r| !r.cpus.is_empty()) {
            if let Some(sub) = self.subtree("cpuset") {
                soft(kfs::write_settling(&sub.join("cpuset.cpu_exclusive"), "0"))?;
            }
            state.subtree_exclusive_set = false;
        }
        Ok(())
    }
}

/// The partition's memory group `dir`: `memory.limit_in_bytes` (-1 without a limit).
fn v1_memory(dir: &Path, spec: &ProfileSpec) -> Result<()> {
    kfs::mkdir(dir)?;
    let limit = spec
        .memory_max_bytes
        .map_or("-1".to_owned(), |m| m.to_string());
    // The kernel rounds limits to pages and prints -1 as a large number: compare loosely.
    let cur: Option<i128> =
        kfs::read_opt(&dir.join("memory.limit_in_bytes"))?.and_then(|s| s.trim().parse().ok());
    let want: i128 = limit.parse().unwrap_or(-1);
    let same = match (cur, want) {
        (Some(c), -1) => c >= (1i128 << 62),
        (Some(c), w) => c == w,
        (None, _) => false,
    };
    if !same {
        kfs::write(&dir.join("memory.limit_in_bytes"), &limit)?;
    }
    Ok(())
}
