//! The real-time resource profile a base station needs, and host-readiness checks.
//!
//! [`RtProfile`] has exactly the field names of the partition `[resources]` table (the `rt`
//! crate owns the authoritative type, `rt::ProfileSpec`; this crate is a leaf and mirrors it).
//! [`derive()`] computes it from a [`Plan`]; [`check_host`] compares it with [`HostFacts`] (plain
//! data gathered by a binary from `/proc`, `/sys` and the workload's own statistics) and returns
//! problems with messages an operator can act on. Errors fail the promise; warnings are shown.
//!
//! # Sizing rules (documented heuristics, see docs/radio.md)
//!
//! * exclusive CPUs = Σ per cell: LTE ⌈bandwidth / 10 MHz⌉ (1.4–10 MHz → 1, 15–20 MHz → 2),
//!   NR FR1 ⌈bandwidth / 40 MHz⌉, NR FR2 ⌈bandwidth / 100 MHz⌉; +1 for a cell with ≥ 4 downlink
//!   antennas. The PHY threads of each cell then have a core of their own.
//! * memory: 256 MiB + 256 MiB per LTE cell + 512 MiB per NR cell, all locked (`mlock`).
//! * `SCHED_FIFO` priority 80 by default (below the kernel's 99 watchdogs and cyclictest's usual
//!   99, above IRQ threads at 50), RT budget 950000 µs of 1 s (the kernel default, so a runaway
//!   FIFO thread cannot starve its core).

use crate::bands::nr;
use crate::cpulist;
use crate::plan::Plan;
use crate::stats::TtiStats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

/// The partition resource profile (`[resources]` of an instance manifest). All fields optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtProfile {
    /// Number of exclusive CPUs picked by the node from its RT pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Explicit CPUs (exclusive with `cpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_list: Option<Vec<u32>>,
    /// Memory limit, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max_bytes: Option<u64>,
    /// CPU weight 1..=10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    /// CPU quota per period, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota_us: Option<u64>,
    /// CPU period, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_period_us: Option<u64>,
    /// `other`, `fifo` or `rr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// 1..=99 for fifo/rr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// `mlockall` before exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlock: Option<bool>,
    /// cgroup v1 `cpu.rt_runtime_us` of the partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rt_runtime_us: Option<u64>,
}

/// Scheduling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// `SCHED_OTHER`.
    Other,
    /// `SCHED_FIFO`.
    Fifo,
    /// `SCHED_RR`.
    Rr,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Policy::Other => "other",
            Policy::Fifo => "fifo",
            Policy::Rr => "rr",
        })
    }
}

impl RtProfile {
    /// The profile as a TOML `[resources]` table (the manifest form).
    pub fn to_toml(&self) -> String {
        let mut s = String::from("[resources]\n");
        let mut kv = |k: &str, v: String| {
            let _ = writeln!(s, "{k} = {v}");
        };
        if let Some(v) = self.cpus {
            kv("cpus", v.to_string());
        }
        if let Some(v) = &self.cpu_list {
            kv(
                "cpu_list",
                format!(
                    "[{}]",
                    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                ),
            );
        }
        if let Some(v) = self.memory_max_bytes {
            kv("memory_max_bytes", v.to_string());
        }
        if let Some(v) = self.cpu_weight {
            kv("cpu_weight", v.to_string());
        }
        if let Some(v) = self.cpu_quota_us {
            kv("cpu_quota_us", v.to_string());
        }
        if let Some(v) = self.cpu_period_us {
            kv("cpu_period_us", v.to_string());
        }
        if let Some(v) = self.policy {
            kv("policy", format!("\"{v}\""));
        }
        if let Some(v) = self.priority {
            kv("priority", v.to_string());
        }
        if let Some(v) = self.mlock {
            kv("mlock", v.to_string());
        }
        if let Some(v) = self.rt_runtime_us {
            kv("rt_runtime_us", v.to_string());
        }
        s
    }
}

/// Knobs of [`derive()`]; the defaults are the documented sizing rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtOptions {
    /// FIFO priority of the stack.
    pub priority: u8,
    /// `rt_runtime_us` budget per second.
    pub rt_runtime_us: u64,
    /// Fixed memory, bytes.
    pub memory_base_bytes: u64,
    /// Memory per LTE cell, bytes.
    pub memory_per_lte_cell: u64,
    /// Memory per NR cell, bytes.
    pub memory_per_nr_cell: u64,
    /// Overrides the computed CPU count.
    pub cpus: Option<u32>,
}

const MIB: u64 = 1 << 20;

impl Default for RtOptions {
    fn default() -> Self {
        RtOptions {
            priority: 80,
            rt_runtime_us: 950_000,
            memory_base_bytes: 256 * MIB,
            memory_per_lte_cell: 256 * MIB,
            memory_per_nr_cell: 512 * MIB,
            cpus: None,
        }
    }
}

/// Exclusive CPUs the PHY of `plan` needs (see the module doc).
pub fn phy_cpus(plan: &Plan) -> u32 {
    let lte: u32 = plan
        .lte_cells
        .iter()
        .map(|c| c.bandwidth.khz().div_ceil(10_000) + u32::from(c.ru.n_antenna_dl >= 4))
        .sum();
    let nr: u32 = plan
        .nr_cells
        .iter()
        .map(|c| {
            let per = if nr::band(c.band).is_some_and(|b| b.is_fr2()) {
                100
            } else {
                40
            };
            u32::from(c.bandwidth_mhz).div_ceil(per) + u32::from(c.ru.n_antenna_dl >= 4)
        })
        .sum();
    (lte + nr).max(1)
}

/// The profile of a base station.
pub fn derive(plan: &Plan, opts: &RtOptions) -> RtProfile {
    let memory = opts.memory_base_bytes
        + opts.memory_per_lte_cell * plan.lte_cells.len() as u64
        + opts.memory_per_nr_cell * plan.nr_cells.len() as u64;
    RtProfile {
        cpus: Some(opts.cpus.unwrap_or_else(|| phy_cpus(plan))),
        memory_max_bytes: Some(memory),
        policy: Some(Policy::Fifo),
        priority: Some(opts.priority),
        mlock: Some(true),
        rt_runtime_us: Some(opts.rt_runtime_us),
        ..RtProfile::default()
    }
}

/// Facts about the host and the running workload. `None` means "could not be read".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Online CPUs (`/sys/devices/system/cpu/online`).
    pub online_cpus: Vec<u32>,
    /// The node's RT CPU pool (computer label `rt_cpus`), if published.
    pub rt_pool: Option<Vec<u32>>,
    /// CPUs of the pool already reserved by other partitions.
    pub reserved_cpus: Vec<u32>,
    /// `/proc/sys/kernel/sched_rt_runtime_us` (−1 = unlimited).
    pub sched_rt_runtime_us: Option<i64>,
    /// `scaling_governor` per CPU, for CPUs where cpufreq exists.
    pub governors: BTreeMap<u32, String>,
    /// Whether the kernel is PREEMPT_RT.
    pub preempt_rt: Option<bool>,
    /// `isolcpus=` CPUs.
    pub isolcpus: Vec<u32>,
    /// `nohz_full=` CPUs.
    pub nohz_full: Vec<u32>,
    /// Available memory, bytes (`MemAvailable`).
    pub mem_available_bytes: Option<u64>,
    /// What the workload reports about itself (from its statistics), if it runs.
    pub observed: Option<Observed>,
}

/// Scheduling state the workload observed for itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// `fifo`, `rr` or `other`.
    pub policy: String,
    /// Priority (0 for other).
    pub priority: u8,
    /// CPUs in its affinity mask.
    pub cpus: Vec<u32>,
    /// Whether its memory is locked.
    pub mlocked: bool,
    /// Why it could not get what it asked for, if it said.
    pub note: Option<String>,
    /// Share of one CPU its RT loop is busy (work time / period), if known.
    pub busy_fraction: Option<f64>,
}

impl From<&TtiStats> for Observed {
    /// What a stand-in's statistics say about its scheduling. The busy share is the average
    /// work time (processing − wake-up latency) over the period.
    fn from(t: &TtiStats) -> Self {
        Observed {
            policy: t.policy.clone(),
            priority: t.priority,
            cpus: t.cpu_list(),
            mlocked: t.mlocked,
            note: t.note.clone(),
            busy_fraction: (t.period_us > 0 && t.count > 0)
                .then(|| (t.processing_us.avg - t.wakeup_us.avg).max(0.0) / f64::from(t.period_us)),
        }
    }
}

/// How serious a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Shown, does not fail the promise.
    Warning,
    /// Fails the promise.
    Error,
}

/// A readiness problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Severity.
    pub severity: Severity,
    /// Stable identifier (`rt-pool-too-small`, `governor`, …).
    pub code: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let s = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{s} [{}]: {}", self.code, self.message)
    }
}

/// Compares the profile with the host; errors first.
pub fn check_host(profile: &RtProfile, facts: &HostFacts) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut push = |severity, code, message: String| {
        out.push(Problem {
            severity,
            code,
            message,
        })
    };
    let wants_rt = matches!(profile.policy, Some(Policy::Fifo | Policy::Rr));
    let need = profile.cpus.unwrap_or(0) as usize + profile.cpu_list.as_ref().map_or(0, Vec::len);

    // CPUs the workload will run on: what it observes, else the free pool.
    let mut candidate: Vec<u32> = Vec::new();
    match &facts.rt_pool {
        None => push(
            Severity::Warning,
            "rt-pool-unknown",
            "the node publishes no RT CPU pool (computer label rt_cpus): exclusive cores cannot be checked".into(),
        ),
        Some(pool) => {
            let missing: Vec<u32> = pool.iter().copied().filter(|c| !facts.online_cpus.contains(c)).collect();
            if !facts.online_cpus.is_empty() && !missing.is_empty() {
                push(Severity::Error, "rt-pool-offline", format!(
                    "RT pool rt_cpus={} names CPU(s) {} that are not online (online: {})",
                    cpulist::format(pool), cpulist::format(&missing), cpulist::format(&facts.online_cpus)
                ));
            }
            let free: Vec<u32> = pool.iter().copied().filter(|c| !facts.reserved_cpus.contains(c)).collect();
            if facts.observed.is_none() && free.len() < need {
                push(Severity::Error, "rt-pool-too-small", format!(
                    "needs {need} exclusive CPU(s) but the RT pool rt_cpus={} has {} free ({} reserved by other partitions)",
                    cpulist::format(pool),
                    free.len(),
                    if facts.reserved_cpus.is_empty() { "none".to_string() } else { cpulist::format(&facts.reserved_cpus) }
                ));
            }
            if let Some(obs) = &facts.observed {
                let outside: Vec<u32> = obs.cpus.iter().copied().filter(|c| !pool.contains(c)).collect();
                if !outside.is_empty() {
                    push(Severity::Error, "not-pinned", format!(
                        "the workload may run on CPU(s) {} outside the RT pool {} (affinity {}): it is not pinned to exclusive cores",
                        cpulist::format(&outside), cpulist::format(pool), cpulist::format(&obs.cpus)
                    ));
                }
            }
            candidate = free;
        }
    }
    if let Some(obs) = &facts.observed {
        candidate = obs.cpus.clone();
        let wanted = profile
            .policy
            .map(|p| p.to_string())
            .unwrap_or_else(|| "other".into());
        if wants_rt && obs.policy != wanted {
            push(
                Severity::Error,
                "policy",
                format!(
                    "the workload runs SCHED_{} but the profile asks for SCHED_{} priority {}{}",
                    obs.policy.to_uppercase(),
                    wanted.to_uppercase(),
                    profile.priority.unwrap_or(0),
                    obs.note
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                ),
            );
        } else if wants_rt && Some(obs.priority) != profile.priority {
            push(
                Severity::Warning,
                "priority",
                format!(
                    "the workload runs at priority {} instead of {}",
                    obs.priority,
                    profile.priority.unwrap_or(0)
                ),
            );
        }
        let budget = profile.rt_runtime_us.unwrap_or(950_000) as f64 / 1e6;
        if let Some(busy) = obs.busy_fraction.filter(|&b| wants_rt && b > 0.9 * budget) {
            push(
                Severity::Error,
                "rt-budget",
                format!(
                    "the RT loop keeps a CPU {:.0}% busy but the partition's RT budget is {:.0}% (rt_runtime_us {}): it will be throttled; raise rt_runtime_us or lower the work",
                    busy * 100.0,
                    budget * 100.0,
                    profile.rt_runtime_us.unwrap_or(950_000)
                ),
            );
        }
        if profile.mlock == Some(true) && !obs.mlocked {
            push(
                Severity::Error,
                "mlock",
                format!(
                    "the workload's memory is not locked (mlockall failed or was not applied){}",
                    obs.note
                        .as_deref()
                        .map(|n| format!(": {n}"))
                        .unwrap_or_default()
                ),
            );
        }
    }

    let budget = profile.rt_runtime_us.unwrap_or(950_000);
    match facts.sched_rt_runtime_us {
        _ if !wants_rt => {}
        Some(-1) => push(
            Severity::Warning,
            "rt-throttling-off",
            "kernel.sched_rt_runtime_us = -1: RT throttling is off, a runaway FIFO thread can starve its core \
             forever (950000 keeps 5% for the kernel)"
                .into(),
        ),
        Some(v) if u64::try_from(v).is_ok_and(|v| v < budget) => push(
            Severity::Error,
            "rt-runtime",
            format!("kernel.sched_rt_runtime_us = {v} is below the partition's rt_runtime_us {budget}: FIFO threads would be throttled"),
        ),
        None => push(Severity::Warning, "rt-runtime-unknown", "kernel.sched_rt_runtime_us could not be read".into()),
        _ => {}
    }

    if facts.governors.is_empty() {
        push(Severity::Warning, "governor-unknown",
            "cpufreq is not exposed (no scaling_governor; usual in VMs): the performance governor cannot be checked".into());
    } else {
        let slow: Vec<String> = candidate
            .iter()
            .filter_map(|c| {
                facts
                    .governors
                    .get(c)
                    .filter(|g| g.as_str() != "performance")
                    .map(|g| format!("CPU {c}: {g}"))
            })
            .collect();
        if !slow.is_empty() {
            push(
                Severity::Error,
                "governor",
                format!(
                    "scaling_governor is not `performance` on the RT CPUs ({}); set it (cpupower frequency-set -g performance) or frequency scaling adds wake-up latency",
                    slow.join(", ")
                ),
            );
        }
    }
    if facts.preempt_rt == Some(false) {
        push(Severity::Warning, "not-preempt-rt",
            "the kernel is not PREEMPT_RT: expect wake-up latency tails of hundreds of µs under load".into());
    }
    let not_isolated: Vec<u32> = candidate
        .iter()
        .copied()
        .filter(|c| !facts.isolcpus.contains(c) && !facts.nohz_full.contains(c))
        .collect();
    if !candidate.is_empty() && !not_isolated.is_empty() {
        push(
            Severity::Warning,
            "not-isolated",
            format!(
                "CPU(s) {} are not in isolcpus= or nohz_full=: kernel threads and timer ticks still run there",
                cpulist::format(&not_isolated)
            ),
        );
    }
    if let (Some(avail), Some(need)) = (facts.mem_available_bytes, profile.memory_max_bytes)
        && facts.observed.is_none()
        && avail < need
    {
        push(
            Severity::Warning,
            "memory",
            format!(
                "MemAvailable is {} MiB, the profile locks up to {} MiB",
                avail / MIB,
                need / MIB
            ),
        );
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.severity));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(cpus: u32) -> RtProfile {
        RtProfile {
            cpus: Some(cpus),
            memory_max_bytes: Some(512 * MIB),
            policy: Some(Policy::Fifo),
            priority: Some(80),
            mlock: Some(true),
            rt_runtime_us: Some(950_000),
            ..RtProfile::default()
        }
    }

    fn good_host() -> HostFacts {
        HostFacts {
            online_cpus: vec![0, 1, 2, 3],
            rt_pool: Some(vec![2, 3]),
            reserved_cpus: vec![],
            sched_rt_runtime_us: Some(950_000),
            governors: (0..4).map(|c| (c, "performance".to_string())).collect(),
            preempt_rt: Some(true),
            isolcpus: vec![2, 3],
            nohz_full: vec![2, 3],
            mem_available_bytes: Some(8 << 30),
            observed: None,
        }
    }

    fn codes(p: &[Problem]) -> Vec<&'static str> {
        p.iter().map(|p| p.code).collect()
    }

    #[test]
    fn ready_host_has_no_problem() {
        assert!(check_host(&fifo(2), &good_host()).is_empty());
    }

    #[test]
    fn pool_too_small_names_the_pool_and_reservations() {
        let mut h = good_host();
        h.reserved_cpus = vec![3];
        let p = check_host(&fifo(2), &h);
        assert_eq!(codes(&p), vec!["rt-pool-too-small"]);
        assert_eq!(p[0].severity, Severity::Error);
        assert!(
            p[0].message.contains("needs 2 exclusive CPU(s)")
                && p[0].message.contains("rt_cpus=2-3 has 1 free (3 reserved"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn governor_runtime_and_kernel() {
        let mut h = good_host();
        h.governors.insert(3, "powersave".into());
        h.sched_rt_runtime_us = Some(500_000);
        h.preempt_rt = Some(false);
        let p = check_host(&fifo(1), &h);
        assert_eq!(codes(&p), vec!["rt-runtime", "governor", "not-preempt-rt"]);
        assert!(p[1].message.contains("CPU 3: powersave"), "{}", p[1]);
        h.sched_rt_runtime_us = Some(-1);
        h.governors.clear();
        assert_eq!(
            codes(&check_host(&fifo(1), &h)),
            vec!["rt-throttling-off", "governor-unknown", "not-preempt-rt"]
        );
    }

    #[test]
    fn observed_workload_must_have_what_it_asked() {
        let mut h = good_host();
        h.observed = Some(Observed {
            policy: "other".into(),
            priority: 0,
            cpus: vec![0, 1, 2, 3],
            mlocked: false,
            note: Some("sched_setscheduler: Operation not permitted".into()),
            busy_fraction: Some(0.2),
        });
        let p = check_host(&fifo(1), &h);
        assert_eq!(
            codes(&p),
            vec!["not-pinned", "policy", "mlock", "not-isolated"]
        );
        assert!(
            p[1].message.contains("SCHED_OTHER")
                && p[1].message.contains("Operation not permitted"),
            "{}",
            p[1]
        );
        h.observed = Some(Observed {
            policy: "fifo".into(),
            priority: 80,
            cpus: vec![2],
            mlocked: true,
            note: None,
            busy_fraction: Some(0.2),
        });
        assert!(check_host(&fifo(1), &h).is_empty());
        // 20% busy with a 20% budget: throttled.
        let mut small = fifo(1);
        small.rt_runtime_us = Some(200_000);
        assert_eq!(codes(&check_host(&small, &h)), vec!["rt-budget"]);
    }

    #[test]
    fn observed_from_statistics() {
        let t = TtiStats {
            period_us: 1000,
            count: 10,
            cpus: "1".into(),
            policy: "fifo".into(),
            priority: 80,
            wakeup_us: crate::stats::Percentiles {
                avg: 15.0,
                ..Default::default()
            },
            processing_us: crate::stats::Percentiles {
                avg: 225.0,
                ..Default::default()
            },
            ..Default::default()
        };
        let o = Observed::from(&t);
        assert_eq!((o.cpus, o.busy_fraction), (vec![1], Some(0.21)));
    }

    #[test]
    fn toml_and_json_use_the_contract_names() {
        let p = fifo(2);
        let json = serde_json::to_value(&p).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec![
                "cpus",
                "memory_max_bytes",
                "mlock",
                "policy",
                "priority",
                "rt_runtime_us"
            ]
        );
        assert_eq!(json["policy"], "fifo");
        let t = p.to_toml();
        assert!(t.starts_with("[resources]\ncpus = 2\n"), "{t}");
        assert!(t.contains("policy = \"fifo\"\n"), "{t}");
        let list = RtProfile {
            cpu_list: Some(vec![2, 3]),
            ..RtProfile::default()
        };
        assert_eq!(list.to_toml(), "[resources]\ncpu_list = [2, 3]\n");
        assert!(serde_json::from_str::<RtProfile>(r#"{"cpus": 1, "bogus": 2}"#).is_err());
    }
}
