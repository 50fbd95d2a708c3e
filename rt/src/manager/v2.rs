//! cgroup v2: one group a partition under the subtree, the controllers enabled for it, exclusive
//! CPUs as a remote isolated partition (`cpuset.cpus.exclusive` +
//! `cpuset.cpus.partition=isolated`: the CPUs also leave the scheduler's load balancing).

use std::collections::BTreeMap;
use std::path::Path;

use super::Manager;
use super::planning::{Plan, uses_cpu_controller};
use super::shared::Phase;
use super::state::{HostState, PartitionRecord};
use crate::cpulist::CpuList;
use crate::error::{Error, Result};
use crate::kfs;
use crate::profile::ProfileSpec;

const V2_USAGE_CONTROLLERS: [&str; 3] = ["memory", "io", "pids"];
/// The `cpuset.cpus.partition` mode of a group with exclusive CPUs.
const PARTITION_MODE: &str = "isolated";

/// Whether a `cpuset.cpus.partition` value is a partition root (valid or not).
fn is_partition_root(state: &str) -> bool {
    let s = state.trim();
    s.starts_with("root") || s.starts_with("isolated")
}

/// Controllers the subtree needs for `records`: cpuset when any partition reserves CPUs, cpu
/// only when some partition sets weight/quota (RT partitions must stay outside it, see plan()),
/// memory/io/pids for limits and usage.
fn v2_controllers(records: &BTreeMap<String, PartitionRecord>) -> Vec<&'static str> {
    let mut wanted: Vec<&str> = V2_USAGE_CONTROLLERS.to_vec();
    if records.values().any(|r| !r.cpus.is_empty()) {
        wanted.push("cpuset");
    }
    if records.values().any(|r| uses_cpu_controller(&r.spec)) {
        wanted.push("cpu");
    }
    wanted
}

impl Manager {
    /// Applies a plan on cgroup v2: controllers, the cpuset remote partition, memory and cpu.
    pub(super) fn apply_v2(
        &self,
        mount: &Path,
        plan: &Plan,
        records: &BTreeMap<String, PartitionRecord>,
        state: &mut HostState,
    ) -> Result<()> {
        let part = plan.partition.as_str();
        let sub = mount.join(&self.cfg.root_name);
        self.ensure_subtree(&sub, state)?;
        let wanted = v2_controllers(records);
        self.v2_enable_controllers(mount, &sub, &wanted, state)?;
        let dir = sub.join(part);
        kfs::mkdir(&dir)?;
        if self.host.cgroup.has("cpuset") {
            self.v2_cpuset(&sub, &dir, plan, records, state)?;
        }
        self.v2_limits(&dir, &plan.spec, wanted.contains(&"cpu"))
    }

    /// Enables the `wanted` controllers in the root (remembering those rt added) and in the
    /// subtree.
    fn v2_enable_controllers(
        &self,
        mount: &Path,
        sub: &Path,
        wanted: &[&str],
        state: &mut HostState,
    ) -> Result<()> {
        let root_ctl = mount.join("cgroup.subtree_control");
        let sub_ctl = sub.join("cgroup.subtree_control");
        let enabled_in = |f: &Path| -> Result<Vec<String>> {
            Ok(kfs::read_opt(f)?
                .unwrap_or_default()
                .split_whitespace()
                .map(|s| s.trim_start_matches('+').to_owned())
                .collect())
        };
        let root_enabled = enabled_in(&root_ctl)?;
        let sub_enabled = enabled_in(&sub_ctl)?;
        for c in wanted.iter().filter(|c| self.host.cgroup.has(c)) {
            if !root_enabled.iter().any(|e| e == c) {
                kfs::write(&root_ctl, &format!("+{c}"))?;
                if !state.v2_root_controllers_added.iter().any(|e| e == c) {
                    state.v2_root_controllers_added.push((*c).to_owned());
                }
            }
            if !sub_enabled.iter().any(|e| e == c) {
                kfs::write(&sub_ctl, &format!("+{c}"))?;
            }
        }
        Ok(())
    }

    /// cpuset: the partition group `dir` becomes a remote partition root with
    /// `cpuset.cpus.exclusive` (or a plain member of the shared pool), between the shrink and the
    /// grow pass over the shared groups.
    fn v2_cpuset(
        &self,
        sub: &Path,
        dir: &Path,
        plan: &Plan,
        records: &BTreeMap<String, PartitionRecord>,
        state: &mut HostState,
    ) -> Result<()> {
        self.reconcile_shared(records, state, &plan.reserved_after, Phase::Shrink)?;
        let partition_file = dir.join("cpuset.cpus.partition");
        let current = kfs::read_opt(&partition_file)?.unwrap_or_default();
        let is_root = is_partition_root(&current);
        if plan.cpus.is_empty() {
            if is_root {
                kfs::write(&partition_file, "member")?;
            }
            if kfs::read_opt(&dir.join("cpuset.cpus.exclusive"))?
                .is_some_and(|s| !s.trim().is_empty())
            {
                kfs::write(&dir.join("cpuset.cpus.exclusive"), "")?;
            }
            self.v2_subtree_exclusive(sub, &plan.reserved_after)?;
        } else {
            let cpus = plan.cpus.to_string();
            let sub_x = sub.join("cpuset.cpus.exclusive");
            let cur_sub: CpuList = kfs::read_opt(&sub_x)?
                .and_then(|t| CpuList::parse(&t).ok())
                .unwrap_or_default();
            // Grow the parent's exclusive set before the child, shrink it after.
            kfs::write_if_changed(&sub_x, &cur_sub.union(&plan.reserved_after).to_string())?;
            kfs::write_if_changed(&dir.join("cpuset.cpus"), &cpus)?;
            kfs::write_if_changed(&dir.join("cpuset.cpus.exclusive"), &cpus)?;
            if current.trim() != PARTITION_MODE {
                kfs::write(&partition_file, PARTITION_MODE)?;
            }
            // The kernel accepts the write and reports a refusal in the file ("isolated
            // invalid (…)"): read it back.
            let state_now = kfs::read(&partition_file)?;
            if state_now.trim() != PARTITION_MODE {
                return Err(Error::PartitionInvalid {
                    path: dir.to_owned(),
                    state: state_now.trim().to_owned(),
                });
            }
            self.v2_subtree_exclusive(sub, &plan.reserved_after)?;
        }
        self.reconcile_shared(records, state, &plan.reserved_after, Phase::Grow)
    }

    /// memory.max, and cpu.weight/cpu.max when the cpu controller is enabled for partitions.
    fn v2_limits(&self, dir: &Path, spec: &ProfileSpec, cpu_enabled: bool) -> Result<()> {
        if self.host.cgroup.has("memory") {
            let max = spec
                .memory_max_bytes
                .map_or("max".to_owned(), |m| m.to_string());
            kfs::write_if_changed(&dir.join("memory.max"), &max)?;
        }
        if cpu_enabled && self.host.cgroup.has("cpu") {
            kfs::write_if_changed(
                &dir.join("cpu.weight"),
                &spec.cpu_weight.unwrap_or(100).to_string(),
            )?;
            let period = spec
                .cpu_period_us
                .unwrap_or(crate::profile::DEFAULT_CPU_PERIOD_US);
            let quota = spec
                .cpu_quota_us
                .map_or("max".to_owned(), |q| q.to_string());
            kfs::write_if_changed(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        Ok(())
    }

    /// Sets the subtree's `cpuset.cpus.exclusive` to the reserved CPUs.
    pub(super) fn v2_subtree_exclusive(&self, sub: &Path, reserved: &CpuList) -> Result<()> {
        let f = sub.join("cpuset.cpus.exclusive");
        if (kfs::read_opt(&f)?.is_some() || !reserved.is_empty())
            && kfs::read_opt(&f)?.is_none_or(|v| v.trim() != reserved.to_string())
        {
            kfs::write_settling(&f, &reserved.to_string())?;
        }
        Ok(())
    }

    /// Removes a partition's v2 group (a partition root becomes a member first) and gives its
    /// CPUs back to the subtree's shared groups. `soft` decides which kernel errors stop the
    /// release.
    pub(super) fn release_v2(
        &self,
        mount: &Path,
        partition: &str,
        records: &BTreeMap<String, PartitionRecord>,
        state: &mut HostState,
        reserved: &CpuList,
        soft: &mut impl FnMut(Result<()>) -> Result<()>,
    ) -> Result<()> {
        let dir = mount.join(&self.cfg.root_name).join(partition);
        let pf = dir.join("cpuset.cpus.partition");
        if kfs::read_opt(&pf)?.is_some_and(|s| is_partition_root(&s)) {
            kfs::write(&pf, "member")?;
        }
        soft(kfs::rmdir_cgroup(&dir))?;
        state.cpuset_base.remove(partition);
        let sub = mount.join(&self.cfg.root_name);
        if sub.is_dir() && self.host.cgroup.has("cpuset") {
            self.v2_subtree_exclusive(&sub, reserved)?;
            self.reconcile_shared(records, state, reserved, Phase::Grow)?;
        }
        Ok(())
    }
}
