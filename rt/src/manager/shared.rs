//! The shared side of exclusivity: every non-exclusive cpuset group under the subtree (managed
//! or not) is kept at its base CPUs minus the reserved ones. This module lists those groups with
//! their base and moves them, shrinking before CPUs are reserved and growing after they are
//! given back; the bases of groups it changed are kept in [`HostState`] for restoration.

use std::collections::BTreeMap;

use super::Manager;
use super::layout::Layout;
use super::state::{HostState, PartitionRecord};
use crate::cpulist::CpuList;
use crate::error::{Error, Result};
use crate::kfs;

/// A pass of [`Manager::reconcile_shared`]: before a partition takes CPUs the shared groups
/// shrink (children first), after CPUs are given back they grow (parents first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Shrink,
    Grow,
}

impl Manager {
    /// Non-exclusive cpuset groups under the subtree (not `partition`, not other exclusive
    /// partitions or their descendants): (relative path, current CPUs, base CPUs). The first
    /// entry is ("", subtree CPUs, subtree CPUs): the shared pool itself.
    pub(super) fn shared_groups(
        &self,
        partition: &str,
        others: &BTreeMap<String, PartitionRecord>,
        state: &HostState,
    ) -> Result<Vec<(String, CpuList, CpuList)>> {
        let Some(sub) = self.subtree("cpuset") else {
            return Ok(Vec::new());
        };
        if !self.host.cgroup.has("cpuset") {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let pool = self.subtree_cpus()?;
        out.push((String::new(), pool.clone(), pool));
        let skip: Vec<&str> = others
            .iter()
            .filter(|(_, r)| !r.cpus.is_empty())
            .map(|(n, _)| n.as_str())
            .chain(std::iter::once(partition))
            .collect();
        let mut stack: Vec<String> = kfs::subdirs(&sub)?
            .into_iter()
            .filter(|n| !skip.contains(&n.as_str()))
            .collect();
        while let Some(rel) = stack.pop() {
            let dir = sub.join(&rel);
            let current = kfs::read_opt(&dir.join("cpuset.cpus"))?
                .and_then(|t| CpuList::parse(&t).ok())
                .unwrap_or_default();
            let base = state
                .cpuset_base
                .get(&rel)
                .and_then(|t| CpuList::parse(t).ok())
                .unwrap_or_else(|| current.clone());
            if !base.is_empty() {
                out.push((rel.clone(), current, base));
            }
            for child in kfs::subdirs(&dir)? {
                stack.push(format!("{rel}/{child}"));
            }
        }
        Ok(out)
    }

    /// CPUs the subtree distributes: v1 the subtree's `cpuset.cpus` (the parent's when it does
    /// not exist yet), v2 the root's effective CPUs.
    pub(super) fn subtree_cpus(&self) -> Result<CpuList> {
        let Some(sub) = self.subtree("cpuset") else {
            return Ok(CpuList::new());
        };
        let candidates = match &self.layout {
            Layout::V1(_) => vec![
                sub.join("cpuset.cpus"),
                sub.parent()
                    .map(|p| p.join("cpuset.cpus"))
                    .unwrap_or_default(),
            ],
            Layout::V2 { mount } => vec![mount.join("cpuset.cpus.effective")],
        };
        for f in candidates {
            if let Some(t) = kfs::read_opt(&f)? {
                let cpus = CpuList::parse(&t).map_err(|_| Error::Parse {
                    what: "CPU list",
                    path: f.clone(),
                    value: t.trim().to_owned(),
                })?;
                if !cpus.is_empty() {
                    return Ok(cpus);
                }
            }
        }
        Ok(self.host.online_cpus.clone())
    }

    /// Moves every non-exclusive cpuset group under the subtree to `base ∖ reserved` (only
    /// shrinking in `Phase::Shrink`, deepest first; only growing in `Phase::Grow`, parents first).
    pub(super) fn reconcile_shared(
        &self,
        records: &BTreeMap<String, PartitionRecord>,
        state: &mut HostState,
        reserved: &CpuList,
        phase: Phase,
    ) -> Result<()> {
        let Some(sub) = self.subtree("cpuset") else {
            return Ok(());
        };
        let exclusive: BTreeMap<String, PartitionRecord> = records
            .iter()
            .filter(|(_, r)| !r.cpus.is_empty())
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        // "" is excluded below; the skip-name is one that cannot be a directory.
        let mut groups = self.shared_groups("/", &exclusive, state)?;
        groups.retain(|(rel, _, _)| !rel.is_empty());
        // Parents before children (path order); reversed for shrinking.
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        if phase == Phase::Shrink {
            groups.reverse();
        }
        let managed: Vec<&String> = records
            .iter()
            .filter(|(_, r)| r.cpus.is_empty())
            .map(|(n, _)| n)
            .collect();
        for (rel, current, base) in groups {
            let target = base.difference(reserved);
            let mut now = current.clone();
            if !target.is_empty()
                && target != current
                && (phase == Phase::Shrink) == target.is_subset(&current)
            {
                // Growing may follow the rmdir of an exclusive sibling still going offline.
                let file = sub.join(&rel).join("cpuset.cpus");
                match phase {
                    Phase::Shrink => kfs::write(&file, &target.to_string())?,
                    Phase::Grow => kfs::write_settling(&file, &target.to_string())?,
                }
                now = target;
            }
            // Remember the base of groups that differ from it, forget restored ones; managed
            // shared partitions keep theirs (the subtree pool) for as long as they exist.
            if managed.contains(&&rel) {
                continue;
            }
            if now == base {
                state.cpuset_base.remove(&rel);
            } else {
                state.cpuset_base.insert(rel, base.to_string());
            }
        }
        Ok(())
    }
}
