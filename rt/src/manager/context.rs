//! The I/O side of planning: [`Manager::plan_with`] reads what the pure [`plan`] needs from the
//! host and the records (CPUs an adopted group holds, RT bandwidth left, the shared groups that
//! would shrink, whether the kernel has v2 remote partitions) into a [`PlanContext`].

use std::collections::BTreeMap;

use super::Manager;
use super::planning::{Plan, PlanContext, plan};
use super::state::{HostState, PartitionRecord, rt_budget_total};
use crate::cpulist::CpuList;
use crate::error::{Error, Result};
use crate::kfs;
use crate::profile::{ProfileSpec, RT_PERIOD_US, check_name};

impl Manager {
    /// Reads what [`plan`] needs from the host and the records, then plans (the I/O side).
    pub(super) fn plan_with(
        &self,
        partition: &str,
        spec: &ProfileSpec,
        records: &BTreeMap<String, PartitionRecord>,
        state: &HostState,
    ) -> Result<Plan> {
        let wrap = |source| Error::Profile {
            partition: partition.to_owned(),
            source,
        };
        check_name(partition).map_err(wrap)?;
        let mut others = records.clone();
        let own = others.remove(partition);
        let previous_cpus = match own {
            Some(r) if !r.cpus.is_empty() => Some(r.cpus),
            Some(_) => None,
            None => self.existing_cpus(partition)?,
        };
        let rt_bandwidth_left = self.rt_bandwidth_left(&others)?;
        let shared_groups = self
            .shared_groups(partition, &others, state)?
            .into_iter()
            .map(|(r, _, b)| (r, b))
            .collect();
        let ctx = PlanContext {
            host: &self.host,
            pool: &self.cfg.rt_pool,
            others: &others,
            previous_cpus,
            rt_bandwidth_left,
            shared_groups,
            v2_exclusive_supported: kernel_at_least(&self.host.kernel_release, 6, 7),
        };
        plan(partition, spec, &ctx).map_err(wrap)
    }

    /// CPUs of an existing (adopted) cpuset group of the partition, if it is exclusive.
    pub(super) fn existing_cpus(&self, partition: &str) -> Result<Option<CpuList>> {
        let Some(dir) = self.group("cpuset", partition) else {
            return Ok(None);
        };
        let file = dir.join("cpuset.cpus");
        match kfs::read_opt(&file)? {
            Some(t) => Ok(CpuList::parse(&t).ok().filter(|c| !c.is_empty())),
            None => Ok(None),
        }
    }

    /// v1 RT bandwidth (µs per second of each CPU) left for one more partition: the root
    /// group's, minus the host's other top-level groups, minus the other partitions' budgets.
    pub(super) fn rt_bandwidth_left(
        &self,
        others: &BTreeMap<String, PartitionRecord>,
    ) -> Result<Option<u64>> {
        if self.host.cgroup.uses_v2() || self.host.rt_group_sched != Some(true) {
            return Ok(None);
        }
        let Some(cpu_mount) = self.v1_mount("cpu") else {
            return Ok(None);
        };
        let per_second = |runtime: i64, period: u64| -> u64 {
            if runtime < 0 || period == 0 {
                RT_PERIOD_US
            } else {
                (runtime as u64).saturating_mul(RT_PERIOD_US) / period
            }
        };
        let total = per_second(
            self.host.sched_rt_runtime_us.unwrap_or(950_000),
            self.host.sched_rt_period_us.unwrap_or(RT_PERIOD_US),
        );
        let mut used = 0u64;
        for name in kfs::subdirs(cpu_mount)? {
            if name == self.cfg.root_name {
                continue;
            }
            let dir = cpu_mount.join(&name);
            let rt: Option<i64> =
                kfs::read_opt(&dir.join("cpu.rt_runtime_us"))?.and_then(|s| s.trim().parse().ok());
            let period: u64 = kfs::read_opt(&dir.join("cpu.rt_period_us"))?
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(RT_PERIOD_US);
            if let Some(rt) = rt.filter(|r| *r > 0) {
                used += per_second(rt, period);
            }
        }
        used += rt_budget_total(others);
        Ok(Some(total.saturating_sub(used).min(RT_PERIOD_US)))
    }
}

/// True when a release string like `6.18.44-fc` is at least `major.minor`.
pub(super) fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let a: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let b: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (a, b) >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.18.44-fc-v769", 6, 7));
        assert!(kernel_at_least("7.0", 6, 7));
        assert!(!kernel_at_least("6.1.0-18-amd64", 6, 7));
        assert!(!kernel_at_least("", 6, 7));
    }
}
