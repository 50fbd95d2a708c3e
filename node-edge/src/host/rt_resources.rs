//! The real [`Resources`]: partition profiles applied by `rt::Manager` (cgroups, exclusive CPUs,
//! SCHED_FIFO/RR, mlock, RT budget).
//!
//! * One manager per host (rt's rule: two would record each other's IRQ values as originals);
//!   its state lives in `<state_dir>/rt`, which survives node restarts.
//! * `apply`: the `[resources]` table is parsed as `rt::ProfileSpec` (unknown fields refused,
//!   the message names them), validated against the free RT pool and applied idempotently (a
//!   node restart adopts the existing cgroups). An empty table applies nothing: the partition
//!   runs as before, outside any group.
//! * The child hook is `rt::ChildSetup::run` (join the cgroups, policy, rlimits); its `env()`
//!   (`SLAPOS_RT_POLICY`, `SLAPOS_RT_PRIORITY`, `SLAPOS_RT_CPUS`, `SLAPOS_RT_MLOCK`) goes to the
//!   services. `mlockall` does not survive exec: programs lock themselves when
//!   `SLAPOS_RT_MLOCK=1`.
//! * `release`: after the services stopped. Tasks still in the partition's cgroup (a process
//!   that left its service's process group) are killed, then the release is retried.
//! * At start, records of partitions this node does not have (fewer partitions, another prefix)
//!   are released; records of its own partitions are reported by [`Resources::held`] so the
//!   partition's first pass re-applies or releases them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use slapos_proto::PartitionId;

use crate::config::{Config, RtMode};
use crate::host::resources::{NoResources, ProcessSetup, ResourceError, Resources};

/// rt could not be enabled although the configuration asked for it.
#[derive(Debug, thiserror::Error)]
pub enum RtSetupError {
    /// Host detection or manager construction failed.
    #[error("rt = true but real-time partitions are unavailable: {0}")]
    Rt(#[from] rt::Error),
    /// `rt_cpus` does not parse.
    #[error("invalid config: `rt_cpus`: {0:?} is not a CPU list")]
    Pool(String),
    /// `rt = true` without root.
    #[error("rt = true but the node does not run as root (euid {0})")]
    NotRoot(u32),
}

/// `Resources` over an `rt::Manager`.
#[derive(Debug)]
pub struct RtResources {
    mgr: rt::Manager,
}

impl RtResources {
    /// Wraps a manager (tests build one over a fake tree).
    pub fn new(mgr: rt::Manager) -> Self {
        Self { mgr }
    }

    /// The manager.
    pub fn manager(&self) -> &rt::Manager {
        &self.mgr
    }

    /// Release records of partitions not in `ours` (left by an earlier configuration).
    pub fn release_stale(&self, ours: &[PartitionId]) {
        let records = match self.mgr.records() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("rt: cannot list records: {e}");
                return;
            }
        };
        for name in records.keys() {
            if ours.iter().any(|p| p.as_str() == name) {
                continue;
            }
            match self.release_name(name) {
                Ok(()) => tracing::info!(partition = %name, "rt: released a stale profile"),
                Err(e) => tracing::warn!(partition = %name, "rt: stale profile not released: {e}"),
            }
        }
    }

    fn release_name(&self, name: &str) -> Result<(), rt::Error> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.mgr.release(name) {
                Ok(r) => {
                    for w in r.warnings {
                        tracing::warn!(partition = %name, "rt release: {w}");
                    }
                    return Ok(());
                }
                Err(rt::Error::NotApplied(_)) => return Ok(()),
                Err(rt::Error::Busy { pids, .. }) if Instant::now() < deadline => {
                    // The services are stopped: whatever is left escaped its process group.
                    for pid in pids {
                        if let Ok(pid) = i32::try_from(pid) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn err(partition: &PartitionId, reason: impl std::fmt::Display) -> ResourceError {
    ResourceError {
        partition: partition.to_string(),
        reason: reason.to_string(),
    }
}

/// Parse a `[resources]` table as rt's profile type (the message names the bad field).
pub fn parse_spec(spec: &Map<String, Value>) -> Result<rt::ProfileSpec, String> {
    serde_json::from_value(Value::Object(spec.clone())).map_err(|e| format!("[resources]: {e}"))
}

impl Resources for RtResources {
    fn labels(&self) -> BTreeMap<String, String> {
        let pool = self
            .mgr
            .config()
            .rt_pool
            .intersection(&self.mgr.host().online_cpus);
        let mut l = BTreeMap::new();
        if !pool.is_empty() && self.mgr.host().fifo_available {
            l.insert("rt_cpus".to_owned(), pool.to_string());
        }
        l
    }

    fn held(&self, partition: &PartitionId) -> bool {
        self.mgr
            .records()
            .is_ok_and(|r| r.contains_key(partition.as_str()))
    }

    fn apply(
        &self,
        partition: &PartitionId,
        spec: &Map<String, Value>,
    ) -> Result<ProcessSetup, ResourceError> {
        if spec.is_empty() {
            // Nothing asked: no group (and release one left from an earlier profile).
            self.release(partition)?;
            return Ok(ProcessSetup::default());
        }
        let profile = parse_spec(spec).map_err(|e| err(partition, e))?;
        let applied = self
            .mgr
            .apply(partition.as_str(), &profile)
            .map_err(|e| err(partition, e))?;
        if applied.adopted {
            tracing::debug!(partition = %partition, "rt: profile re-applied");
        } else {
            tracing::info!(partition = %partition, cpus = %applied.plan.cpus, "rt: profile applied");
        }
        for (n, why) in &applied.irq.unsteerable {
            tracing::debug!(partition = %partition, "rt: IRQ {n} not steered: {why}");
        }
        let child = applied.child;
        let env = child.env().into_iter().collect();
        let child = Arc::new(child);
        Ok(ProcessSetup {
            hook: Some(Arc::new(move || child.run())),
            env,
        })
    }

    fn release(&self, partition: &PartitionId) -> Result<(), ResourceError> {
        self.release_name(partition.as_str())
            .map_err(|e| err(partition, e))
    }

    fn usage(&self, partition: &PartitionId) -> Option<rt::Usage> {
        self.mgr.usage(partition.as_str()).ok()
    }
}

/// The rt adapter `cfg` asks for: `Some` when `rt = true`, or `auto` on a root node with a
/// usable cgroup hierarchy; `None` (refusing RT profiles) otherwise. Changes nothing on the host.
pub fn build(cfg: &Config) -> Result<Option<RtResources>, RtSetupError> {
    let euid = nix::unistd::geteuid().as_raw();
    let pool = cfg
        .rt_cpus
        .as_deref()
        .map(|s| rt::CpuList::parse(s).map_err(|_| RtSetupError::Pool(s.to_owned())))
        .transpose()?;
    let make = || -> Result<RtResources, rt::Error> {
        let host = rt::HostReport::detect()?;
        let pool = pool.clone().unwrap_or_else(|| host.default_rt_pool.clone());
        let mut mc = rt::ManagerConfig::new(cfg.state_dir().join("rt"), pool);
        mc.root_name = cfg.rt_root_name.clone();
        Ok(RtResources::new(rt::Manager::new(host, mc)?))
    };
    Ok(match cfg.rt {
        RtMode::Off => None,
        RtMode::On if euid != 0 => return Err(RtSetupError::NotRoot(euid)),
        RtMode::On => Some(make()?),
        RtMode::Auto if euid != 0 => None,
        RtMode::Auto => match make() {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("rt = auto: real-time partitions disabled: {e}");
                None
            }
        },
    })
}

/// The resources seam of a running node: [`build`]'s adapter (after releasing stale records of
/// partitions this node does not have), else [`NoResources`].
pub fn from_config(cfg: &Config) -> Result<Arc<dyn Resources>, RtSetupError> {
    let Some(res) = build(cfg)? else {
        return Ok(Arc::new(NoResources));
    };
    let ours: Vec<PartitionId> = cfg.partition_ids().into_iter().map(|(_, p)| p).collect();
    res.release_stale(&ours);
    tracing::info!(
        pool = %res.mgr.config().rt_pool,
        fifo = res.mgr.host().fifo_available,
        subtree = %res.mgr.config().root_name,
        "rt: real-time partitions enabled"
    );
    Ok(Arc::new(res))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_rt_profile_and_unknown_fields_are_named() {
        let ok: Map<String, Value> =
            serde_json::from_str(r#"{"cpus":1,"policy":"fifo","priority":80,"mlock":true}"#)
                .unwrap();
        let p = parse_spec(&ok).unwrap();
        assert_eq!(p.priority, Some(80));
        let bad: Map<String, Value> = serde_json::from_str(r#"{"cpu":1}"#).unwrap();
        let e = parse_spec(&bad).unwrap_err();
        assert!(e.contains("`cpu`"), "{e}");
    }

    #[test]
    fn rt_mode_and_tools_dir_from_config() {
        let base = "master_url = \"http://x\"\ncomputer_id = \"C\"\npartitions = 1\n\
                    software_root = \"/s\"\ninstance_root = \"/i\"\n";
        let c = Config::from_toml(base, None).unwrap();
        assert_eq!(c.rt, RtMode::Auto);
        assert_eq!(c.rt_root_name, "slapos-edge");
        // Default: the directory of the running executable.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(c.tools_dir(), exe.parent().map(|p| p.to_path_buf()));
        let c = Config::from_toml(
            &format!("{base}rt = false\ntools_dir = \"bin\"\n"),
            Some(std::path::Path::new("/etc/slapos")),
        )
        .unwrap();
        assert_eq!(c.rt, RtMode::Off);
        assert_eq!(c.tools_dir(), Some("/etc/slapos/bin".into()));
        assert!(Config::from_toml(&format!("{base}rt = \"yes\"\n"), None).is_err());
        assert!(Config::from_toml(&format!("{base}rt_root_name = \"a/b\"\n"), None).is_err());
        // Off never builds a manager (and so never touches the host).
        let off = Config::from_toml(&format!("{base}rt = false\n"), None).unwrap();
        assert!(build(&off).unwrap().is_none());
    }
}
