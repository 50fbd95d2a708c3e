//! The partition resource profile (`[resources]` of an instance manifest, shape fixed by
//! `brief/resources.md`) and its host-independent validation.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ProfileError;

/// Scheduling policy of the partition's processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// SCHED_OTHER (CFS/EEVDF).
    #[default]
    Other,
    /// SCHED_FIFO.
    Fifo,
    /// SCHED_RR.
    Rr,
}

impl Policy {
    /// True for fifo and rr.
    pub fn is_realtime(self) -> bool {
        self != Policy::Other
    }

    /// The libc constant.
    pub fn as_libc(self) -> libc::c_int {
        match self {
            Policy::Other => libc::SCHED_OTHER,
            Policy::Fifo => libc::SCHED_FIFO,
            Policy::Rr => libc::SCHED_RR,
        }
    }

    /// From a libc constant (`SCHED_RESET_ON_FORK` masked off).
    pub fn from_libc(p: libc::c_int) -> Option<Self> {
        match p & !libc::SCHED_RESET_ON_FORK {
            libc::SCHED_OTHER => Some(Policy::Other),
            libc::SCHED_FIFO => Some(Policy::Fifo),
            libc::SCHED_RR => Some(Policy::Rr),
            _ => None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Other => "other",
            Policy::Fifo => "fifo",
            Policy::Rr => "rr",
        })
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "other" => Ok(Policy::Other),
            "fifo" => Ok(Policy::Fifo),
            "rr" => Ok(Policy::Rr),
            _ => Err(format!("unknown policy `{s}` (other|fifo|rr)")),
        }
    }
}

/// A partition's resource profile. All fields optional; field names are the shared contract.
///
/// ```
/// let spec: rt::ProfileSpec = serde_json::from_str(
///     r#"{"cpu_list":[1],"policy":"fifo","priority":80,"mlock":true,"memory_max_bytes":268435456}"#,
/// ).unwrap();
/// assert!(spec.check().is_ok());
/// assert_eq!(spec.effective_rt_runtime_us(), Some(950_000));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Number of exclusive CPUs, picked by the node from its RT pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Explicit exclusive CPUs (mutually exclusive with `cpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_list: Option<Vec<u32>>,
    /// Memory limit (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max_bytes: Option<u64>,
    /// CPU weight 1..=10000 (v2 `cpu.weight`; v1 `cpu.shares = weight*1024/100`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    /// CFS quota per period (v1 `cpu.cfs_quota_us`, v2 `cpu.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota_us: Option<u64>,
    /// CFS period, default 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_period_us: Option<u64>,
    /// Scheduling policy, default other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// RT priority 1..=99, required for fifo/rr, forbidden for other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Lock memory: raises RLIMIT_MEMLOCK to unlimited for the partition's processes (see the
    /// crate doc: `mlockall` itself does not survive `execve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlock: Option<bool>,
    /// cgroup-v1 `cpu.rt_runtime_us` budget (default 950000 with fifo/rr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rt_runtime_us: Option<u64>,
}

/// Default CFS period.
pub const DEFAULT_CPU_PERIOD_US: u64 = 100_000;
/// Default RT budget of a fifo/rr partition.
pub const DEFAULT_RT_RUNTIME_US: u64 = 950_000;
/// RT period of cgroup-v1 groups rt creates (the kernel default).
pub const RT_PERIOD_US: u64 = 1_000_000;

impl ProfileSpec {
    /// The policy (default other).
    pub fn policy(&self) -> Policy {
        self.policy.unwrap_or_default()
    }

    /// The RT budget this profile asks for: explicit, or the default with fifo/rr, or none.
    pub fn effective_rt_runtime_us(&self) -> Option<u64> {
        match (self.rt_runtime_us, self.policy().is_realtime()) {
            (Some(v), _) => Some(v),
            (None, true) => Some(DEFAULT_RT_RUNTIME_US),
            (None, false) => None,
        }
    }

    /// True when the profile reserves exclusive CPUs.
    pub fn wants_exclusive_cpus(&self) -> bool {
        self.cpus.is_some() || self.cpu_list.is_some()
    }

    /// v1 `cpu.shares` for the weight (`weight*1024/100`, at least the kernel minimum 2).
    pub fn cpu_shares(&self) -> Option<u64> {
        self.cpu_weight.map(|w| (w * 1024 / 100).max(2))
    }

    /// Host-independent checks (ranges, combinations). Host-dependent ones (CPUs online, free,
    /// RT availability, budgets) are done by the manager's planning, also before any change.
    pub fn check(&self) -> Result<(), ProfileError> {
        if self.cpus.is_some() && self.cpu_list.is_some() {
            return Err(ProfileError::CpusAndCpuList);
        }
        if self.cpus == Some(0) {
            return Err(ProfileError::ZeroCpus);
        }
        if let Some(list) = &self.cpu_list {
            if list.is_empty() {
                return Err(ProfileError::EmptyCpuList);
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(&dup) = list.iter().find(|c| !seen.insert(**c)) {
                return Err(ProfileError::DuplicateCpu(dup));
            }
        }
        let policy = self.policy();
        match (policy.is_realtime(), self.priority) {
            (true, None) => return Err(ProfileError::PriorityRequired(policy)),
            (false, Some(_)) => return Err(ProfileError::PriorityForbidden),
            (true, Some(p)) if !(1..=99).contains(&p) => {
                return Err(ProfileError::PriorityOutOfRange(p));
            }
            _ => {}
        }
        if let Some(w) = self.cpu_weight
            && !(1..=10_000).contains(&w)
        {
            return Err(ProfileError::CpuWeightOutOfRange(w));
        }
        if let Some(p) = self.cpu_period_us {
            if self.cpu_quota_us.is_none() {
                return Err(ProfileError::PeriodWithoutQuota);
            }
            if !(1_000..=1_000_000).contains(&p) {
                return Err(ProfileError::CpuPeriodOutOfRange(p));
            }
        }
        if let Some(q) = self.cpu_quota_us
            && q < 1_000
        {
            return Err(ProfileError::CpuQuotaOutOfRange(q));
        }
        if let Some(m) = self.memory_max_bytes
            && m < 1 << 20
        {
            return Err(ProfileError::MemoryTooSmall(m));
        }
        if let Some(r) = self.rt_runtime_us {
            if !policy.is_realtime() {
                return Err(ProfileError::RtRuntimeWithoutRtPolicy);
            }
            if r == 0 || r > RT_PERIOD_US {
                return Err(ProfileError::RtRuntimeOutOfRange {
                    value: r,
                    period: RT_PERIOD_US,
                });
            }
        }
        Ok(())
    }
}

/// Checks a name that becomes a cgroup directory (partition name, subtree root name).
pub fn check_name(name: &str) -> Result<(), ProfileError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ProfileError::InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(prio: u32) -> ProfileSpec {
        ProfileSpec {
            policy: Some(Policy::Fifo),
            priority: Some(prio),
            ..Default::default()
        }
    }

    #[test]
    fn parses_the_contract_shape_and_rejects_unknown_fields() {
        let json = r#"{"cpus":1,"memory_max_bytes":268435456,"cpu_weight":100,"cpu_quota_us":50000,
            "cpu_period_us":100000,"policy":"rr","priority":80,"mlock":true,"rt_runtime_us":900000}"#;
        let s: ProfileSpec = serde_json::from_str(json).unwrap();
        assert_eq!(s.cpus, Some(1));
        assert_eq!(s.policy(), Policy::Rr);
        assert_eq!(s.cpu_shares(), Some(1024));
        assert!(s.check().is_ok());
        let back: ProfileSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let e = serde_json::from_str::<ProfileSpec>(r#"{"cpu":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let empty: ProfileSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.policy(), Policy::Other);
        assert_eq!(empty.effective_rt_runtime_us(), None);
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
    }

    #[test]
    fn check_rejects_each_bad_combination() {
        let cases: Vec<(ProfileSpec, ProfileError)> = vec![
            (
                ProfileSpec {
                    cpus: Some(1),
                    cpu_list: Some(vec![1]),
                    ..Default::default()
                },
                ProfileError::CpusAndCpuList,
            ),
            (
                ProfileSpec {
                    cpus: Some(0),
                    ..Default::default()
                },
                ProfileError::ZeroCpus,
            ),
            (
                ProfileSpec {
                    cpu_list: Some(vec![]),
                    ..Default::default()
                },
                ProfileError::EmptyCpuList,
            ),
            (
                ProfileSpec {
                    cpu_list: Some(vec![1, 2, 1]),
                    ..Default::default()
                },
                ProfileError::DuplicateCpu(1),
            ),
            (
                ProfileSpec {
                    policy: Some(Policy::Fifo),
                    ..Default::default()
                },
                ProfileError::PriorityRequired(Policy::Fifo),
            ),
            (
                ProfileSpec {
                    priority: Some(5),
                    ..Default::default()
                },
                ProfileError::PriorityForbidden,
            ),
            (fifo(0), ProfileError::PriorityOutOfRange(0)),
            (fifo(100), ProfileError::PriorityOutOfRange(100)),
            (
                ProfileSpec {
                    cpu_weight: Some(0),
                    ..Default::default()
                },
                ProfileError::CpuWeightOutOfRange(0),
            ),
            (
                ProfileSpec {
                    cpu_weight: Some(10_001),
                    ..Default::default()
                },
                ProfileError::CpuWeightOutOfRange(10_001),
            ),
            (
                ProfileSpec {
                    cpu_period_us: Some(100_000),
                    ..Default::default()
                },
                ProfileError::PeriodWithoutQuota,
            ),
            (
                ProfileSpec {
                    cpu_quota_us: Some(500),
                    ..Default::default()
                },
                ProfileError::CpuQuotaOutOfRange(500),
            ),
            (
                ProfileSpec {
                    cpu_quota_us: Some(5000),
                    cpu_period_us: Some(2_000_000),
                    ..Default::default()
                },
                ProfileError::CpuPeriodOutOfRange(2_000_000),
            ),
            (
                ProfileSpec {
                    memory_max_bytes: Some(4096),
                    ..Default::default()
                },
                ProfileError::MemoryTooSmall(4096),
            ),
            (
                ProfileSpec {
                    rt_runtime_us: Some(1000),
                    ..Default::default()
                },
                ProfileError::RtRuntimeWithoutRtPolicy,
            ),
            (
                ProfileSpec {
                    rt_runtime_us: Some(1_000_001),
                    ..fifo(10)
                },
                ProfileError::RtRuntimeOutOfRange {
                    value: 1_000_001,
                    period: RT_PERIOD_US,
                },
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(spec.check(), Err(want.clone()), "{spec:?}");
        }
        assert!(fifo(99).check().is_ok());
        assert_eq!(
            fifo(1).effective_rt_runtime_us(),
            Some(DEFAULT_RT_RUNTIME_US)
        );
    }

    #[test]
    fn names() {
        for ok in ["slappart0", "slapos-edge", "a.b_c-1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert_eq!(
                check_name(bad),
                Err(ProfileError::InvalidName(bad.to_owned()))
            );
        }
    }

    #[test]
    fn policy_libc_round_trip() {
        for p in [Policy::Other, Policy::Fifo, Policy::Rr] {
            assert_eq!(Policy::from_libc(p.as_libc()), Some(p));
            assert_eq!(p.to_string().parse::<Policy>().unwrap(), p);
        }
        assert_eq!(
            Policy::from_libc(libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK),
            Some(Policy::Fifo)
        );
        assert_eq!(Policy::from_libc(libc::SCHED_IDLE), None);
    }
}
