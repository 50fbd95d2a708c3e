//! The pure core: [`plan`] validates a profile and resolves its CPUs and RT budget from a
//! [`PlanContext`] (what the manager read from the host) with no I/O, so every refusal is a typed
//! [`ProfileError`] returned before anything is written, and the rules are unit-testable alone.

use std::collections::BTreeMap;

use serde::Serialize;

use super::state::PartitionRecord;
use crate::cpulist::CpuList;
use crate::error::ProfileError;
use crate::host::HostReport;
use crate::profile::{ProfileSpec, check_name};

/// The validated, resolved form of a profile (what `apply` will do).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Partition name.
    pub partition: String,
    /// The profile.
    pub spec: ProfileSpec,
    /// Exclusive CPUs (empty: shared pool).
    pub cpus: CpuList,
    /// v1 RT budget to write.
    pub rt_runtime_us: Option<u64>,
    /// All reserved CPUs once applied.
    pub reserved_after: CpuList,
}

/// Everything needed to compute a [`Plan`] without touching the host (the pure core).
#[derive(Clone, Debug)]
pub struct PlanContext<'a> {
    /// The host.
    pub host: &'a HostReport,
    /// RT pool.
    pub pool: &'a CpuList,
    /// Records of the *other* partitions.
    pub others: &'a BTreeMap<String, PartitionRecord>,
    /// CPUs the partition holds already (record or existing cgroup), preferred for `cpus = N`.
    pub previous_cpus: Option<CpuList>,
    /// v1 with RT group scheduling: RT bandwidth (µs per second) left for this partition after
    /// the host's other groups and the other partitions. None: no RT group scheduling.
    pub rt_bandwidth_left: Option<u64>,
    /// Non-exclusive cpuset groups that would be shrunk: relative path ("" = the shared pool of
    /// the subtree) and their base CPUs.
    pub shared_groups: Vec<(String, CpuList)>,
    /// cgroup v2 supports remote partitions (`cpuset.cpus.exclusive`, Linux 6.7+).
    pub v2_exclusive_supported: bool,
}

/// Validates `spec` for `partition` and resolves its CPUs and budget. Pure: no I/O.
///
/// The checks run in a fixed order and the first refusal is returned: name and profile, what
/// the host offers, exclusive CPUs, RT budget (v1) or the cpu-controller rule (v2), v2 remote
/// partitions, then that no shared cpuset group would be left without CPUs.
pub fn plan(
    partition: &str,
    spec: &ProfileSpec,
    ctx: &PlanContext<'_>,
) -> Result<Plan, ProfileError> {
    check_name(partition)?;
    spec.check()?;
    check_host_offers(spec, ctx.host)?;
    let (cpus, reserved_others) = resolve_cpus(spec, ctx)?;
    let rt_runtime_us = resolve_rt_budget(spec, ctx)?;
    if !cpus.is_empty() && ctx.host.cgroup.uses_v2() && !ctx.v2_exclusive_supported {
        return Err(ProfileError::V2PartitionUnsupported {
            kernel: ctx.host.kernel_release.clone(),
        });
    }
    let reserved_after = reserved_others.union(&cpus);
    check_shared_groups_keep_cpus(ctx, &reserved_after)?;
    Ok(Plan {
        partition: partition.to_owned(),
        spec: spec.clone(),
        cpus,
        rt_runtime_us,
        reserved_after,
    })
}

/// The host can give what the profile asks: a real-time policy, and a controller for every
/// setting.
fn check_host_offers(spec: &ProfileSpec, host: &HostReport) -> Result<(), ProfileError> {
    let policy = spec.policy();
    if policy.is_realtime() && !host.fifo_available {
        return Err(ProfileError::RtUnavailable {
            policy,
            reason: host.fifo_unavailable_reasons.join("; "),
        });
    }
    let need = |ctrl: &'static str, setting: &'static str| {
        if host.cgroup.has(ctrl) {
            Ok(())
        } else {
            Err(ProfileError::ControllerUnavailable {
                controller: ctrl,
                setting,
            })
        }
    };
    if spec.wants_exclusive_cpus() {
        need(
            "cpuset",
            if spec.cpus.is_some() {
                "cpus"
            } else {
                "cpu_list"
            },
        )?;
    }
    if spec.memory_max_bytes.is_some() {
        need("memory", "memory_max_bytes")?;
    }
    if spec.cpu_weight.is_some() {
        need("cpu", "cpu_weight")?;
    }
    if spec.cpu_quota_us.is_some() {
        need("cpu", "cpu_quota_us")?;
    }
    Ok(())
}

/// The partition's exclusive CPUs (empty: shared pool) and the CPUs the other partitions
/// reserve. `cpu_list` must be online, in the pool and free; `cpus = N` keeps the previous CPUs
/// when they are still free, else takes the lowest free ones.
fn resolve_cpus(
    spec: &ProfileSpec,
    ctx: &PlanContext<'_>,
) -> Result<(CpuList, CpuList), ProfileError> {
    let host = ctx.host;
    let mut reserved_by: BTreeMap<u32, &str> = BTreeMap::new();
    for (name, rec) in ctx.others {
        for c in rec.cpus.iter() {
            reserved_by.insert(c, name);
        }
    }
    let reserved_others: CpuList = reserved_by.keys().copied().collect();
    let cpus = if let Some(list) = &spec.cpu_list {
        for &c in list {
            if !host.online_cpus.contains(c) {
                return Err(ProfileError::CpuOffline {
                    cpu: c,
                    online: host.online_cpus.clone(),
                });
            }
            if !ctx.pool.contains(c) {
                return Err(ProfileError::CpuNotInPool {
                    cpu: c,
                    pool: ctx.pool.clone(),
                });
            }
            if let Some(holder) = reserved_by.get(&c) {
                return Err(ProfileError::CpuReserved {
                    cpu: c,
                    partition: (*holder).to_owned(),
                });
            }
        }
        list.iter().copied().collect()
    } else if let Some(n) = spec.cpus {
        let free = ctx
            .pool
            .intersection(&host.online_cpus)
            .difference(&reserved_others);
        match &ctx.previous_cpus {
            Some(prev) if prev.len() == n as usize && prev.is_subset(&free) => prev.clone(),
            _ if free.len() < n as usize => {
                return Err(ProfileError::NotEnoughFreeCpus { requested: n, free });
            }
            _ => free.iter().take(n as usize).collect(),
        }
    } else {
        CpuList::new()
    };
    Ok((cpus, reserved_others))
}

/// The v1 RT budget to write: the profile's (or the default) when it fits in the bandwidth
/// left, None without RT group scheduling. On v2 there is no budget; the cpu-controller rule
/// applies instead.
fn resolve_rt_budget(
    spec: &ProfileSpec,
    ctx: &PlanContext<'_>,
) -> Result<Option<u64>, ProfileError> {
    let host = ctx.host;
    let mut rt_runtime_us = None;
    if host.cgroup.uses_v2() {
        if spec.rt_runtime_us.is_some() {
            return Err(ProfileError::RtRuntimeUnsupported(
                "cgroup v2 has no per-group RT bandwidth (cpu.rt_runtime_us is v1-only)".into(),
            ));
        }
        if host.rt_group_sched != Some(false) {
            check_rt_outside_cpu_controller(spec, ctx)?;
        }
    } else if let Some(left) = ctx.rt_bandwidth_left {
        if let Some(want) = spec.effective_rt_runtime_us() {
            if want > left {
                return Err(ProfileError::RtBudgetExceeded {
                    requested_us: want,
                    available_us: left,
                });
            }
            rt_runtime_us = Some(want);
        }
    } else if spec.rt_runtime_us.is_some() {
        return Err(ProfileError::RtRuntimeUnsupported(
            "the kernel has no RT group scheduling (no cpu.rt_runtime_us in the v1 cpu hierarchy)"
                .into(),
        ));
    }
    Ok(rt_runtime_us)
}

/// v2 with (possibly) RT group scheduling: a fifo/rr partition must stay outside the cpu
/// controller, which rt enables in the subtree for any partition asking for weight/quota.
fn check_rt_outside_cpu_controller(
    spec: &ProfileSpec,
    ctx: &PlanContext<'_>,
) -> Result<(), ProfileError> {
    let policy = spec.policy();
    if policy.is_realtime() {
        let reason = if uses_cpu_controller(spec) {
            Some("cpu_weight/cpu_quota_us would enable the cpu controller for it".to_owned())
        } else if ctx
            .host
            .cgroup
            .v2_subtree_control
            .iter()
            .any(|c| c == "cpu")
        {
            Some("the cgroup2 root enables cpu for every child group".to_owned())
        } else {
            ctx.others.iter().find(|(_, r)| uses_cpu_controller(&r.spec)).map(|(n, _)| {
                format!("partition `{n}` uses cpu_weight/cpu_quota_us, which enables cpu in the subtree")
            })
        };
        if let Some(reason) = reason {
            return Err(ProfileError::RtUnderCpuController { policy, reason });
        }
    } else if uses_cpu_controller(spec)
        && let Some((n, r)) = ctx
            .others
            .iter()
            .find(|(_, r)| r.spec.policy().is_realtime())
    {
        return Err(ProfileError::RtUnderCpuController {
            policy: r.spec.policy(),
            reason: format!(
                "cpu_weight/cpu_quota_us here would put partition `{n}` under the cpu controller"
            ),
        });
    }
    Ok(())
}

/// True when the profile sets weight or quota, for which rt enables the cpu controller.
pub(super) fn uses_cpu_controller(spec: &ProfileSpec) -> bool {
    spec.cpu_weight.is_some() || spec.cpu_quota_us.is_some()
}

/// No shared cpuset group may be left without CPUs once `reserved_after` is reserved.
fn check_shared_groups_keep_cpus(
    ctx: &PlanContext<'_>,
    reserved_after: &CpuList,
) -> Result<(), ProfileError> {
    for (rel, base) in &ctx.shared_groups {
        if !base.is_empty()
            && base.difference(reserved_after).is_empty()
            && !reserved_after.is_empty()
        {
            return Err(ProfileError::WouldEmptyCgroup {
                cgroup: rel.clone(),
                cpus: base.clone(),
                reserved: reserved_after.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostPaths;
    use crate::host::tests::fake_v1_host;

    #[test]
    fn pure_plan_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        fake_v1_host(dir.path());
        let host = HostReport::detect_with(&HostPaths::under(dir.path())).unwrap();
        let pool = CpuList::parse("1-3").unwrap();
        let mut others = BTreeMap::new();
        others.insert(
            "a".to_owned(),
            PartitionRecord {
                spec: ProfileSpec::default(),
                cpus: CpuList::parse("1").unwrap(),
                rt_runtime_us: None,
            },
        );
        let ctx = PlanContext {
            host: &host,
            pool: &pool,
            others: &others,
            previous_cpus: Some(CpuList::parse("3").unwrap()),
            rt_bandwidth_left: Some(950_000),
            shared_groups: vec![(String::new(), CpuList::parse("0-3").unwrap())],
            v2_exclusive_supported: false,
        };
        let p = plan(
            "b",
            &ProfileSpec {
                cpus: Some(1),
                ..Default::default()
            },
            &ctx,
        )
        .unwrap();
        assert_eq!(
            p.cpus.to_string(),
            "3",
            "previous CPUs are kept when still free"
        );
        assert_eq!(p.reserved_after.to_string(), "1,3");
        let p = plan(
            "b",
            &ProfileSpec {
                cpus: Some(2),
                ..Default::default()
            },
            &ctx,
        )
        .unwrap();
        assert_eq!(p.cpus.to_string(), "2-3");
        let all = ProfileSpec {
            cpu_list: Some(vec![0]),
            ..Default::default()
        };
        let pool_all = CpuList::parse("0-3").unwrap();
        let ctx2 = PlanContext {
            pool: &pool_all,
            others: &BTreeMap::new(),
            ..ctx.clone()
        };
        let ctx2 = PlanContext {
            shared_groups: vec![(String::new(), CpuList::parse("0").unwrap())],
            ..ctx2
        };
        assert!(matches!(
            plan("b", &all, &ctx2),
            Err(ProfileError::WouldEmptyCgroup { .. })
        ));
    }
}
