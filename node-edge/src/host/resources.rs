//! Seam: partition resources (the `[resources]` table of an instance manifest).
//!
//! The table's shape is owned by the `rt` crate (`rt::ProfileSpec`, see `docs/software-release.md`);
//! the node keeps it opaque (a JSON object) and hands it to a [`Resources`] implementation:
//!
//! 1. at node start, [`Resources::labels`] adds computer labels (e.g. `rt_cpus`);
//! 2. before a partition's services start, [`Resources::apply`] validates and applies the profile
//!    (idempotent: after a node restart it adopts what it set up before) and returns a
//!    [`ProcessSetup`]: a [`ChildSetup`] hook run in every service process between fork and exec
//!    (before the switch to the partition's uid/gid, so it may still use the node's privileges),
//!    and environment variables for the services (e.g. `SLAPOS_RT_CPUS`);
//! 3. when the partition stops, is destroyed or the node shuts down, [`Resources::release`];
//! 4. [`Resources::held`] at node start (a profile left by a crashed node: the partition's first
//!    pass re-applies or releases it) and [`Resources::usage`] after promise runs (written to
//!    `<partition>/.slapos/usage.json`) and by the usage sampler (`crate::usage`), which prefers
//!    it to the jail's counters: a profile's processes live in rt's groups.
//!
//! The default, [`NoResources`], enforces nothing, so it **refuses** what a partition cannot do
//! without enforcement (exclusive CPUs, a real-time policy, `mlock`, an RT budget) with a clear
//! error, and logs a warning for plain limits it does not enforce. [`crate::host::rt_resources`] is the
//! real implementation over the `rt` crate, chosen by [`crate::run`] from the `rt` config key.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use slapos_proto::PartitionId;

/// Runs in the child between fork and exec (`pre_exec`), before the partition's uid/gid are
/// taken. It must only make async-signal-safe calls (no allocation, no locks): join a cgroup by
/// writing a prepared path, `sched_setscheduler`, `mlockall`, `setrlimit`.
pub type ChildSetup = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// What an applied profile gives the partition's service processes.
#[derive(Clone, Default)]
pub struct ProcessSetup {
    /// Hook run in each service process before exec.
    pub hook: Option<ChildSetup>,
    /// Extra environment of each service (changing it restarts the services).
    pub env: BTreeMap<String, String>,
}

impl std::fmt::Debug for ProcessSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSetup")
            .field("hook", &self.hook.is_some())
            .field("env", &self.env)
            .finish()
    }
}

/// A resource profile could not be applied or released.
#[derive(Debug, thiserror::Error)]
#[error("resources of partition `{partition}`: {reason}")]
pub struct ResourceError {
    /// The partition.
    pub partition: String,
    /// What failed, naming the field or the kernel file.
    pub reason: String,
}

/// Applies and releases partition resource profiles.
pub trait Resources: Send + Sync + 'static {
    /// Computer labels this implementation contributes at registration.
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Apply `spec` (the `[resources]` table, possibly empty) to `partition`. Idempotent.
    fn apply(
        &self,
        partition: &PartitionId,
        spec: &Map<String, Value>,
    ) -> Result<ProcessSetup, ResourceError>;

    /// Undo [`Resources::apply`]. Idempotent; releasing a partition never applied is a no-op.
    fn release(&self, partition: &PartitionId) -> Result<(), ResourceError>;

    /// Something is applied for `partition` (e.g. left by a node that crashed): its first pass
    /// must re-apply or release it.
    fn held(&self, _partition: &PartitionId) -> bool {
        false
    }

    /// Usage of the partition's resources (CPU time, memory, I/O, tasks), when accounted.
    fn usage(&self, _partition: &PartitionId) -> Option<rt::Usage> {
        None
    }
}

/// Fields that cannot be honoured without a real implementation.
const NEEDS_ENFORCEMENT: [&str; 4] = ["cpus", "cpu_list", "mlock", "rt_runtime_us"];

/// No enforcement: refuses real-time and exclusive-CPU requests, warns about plain limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResources;

impl Resources for NoResources {
    fn apply(
        &self,
        partition: &PartitionId,
        spec: &Map<String, Value>,
    ) -> Result<ProcessSetup, ResourceError> {
        let refuse = |what: String| ResourceError {
            partition: partition.to_string(),
            reason: format!(
                "{what} needs a resource manager (the rt integration), and this node has none"
            ),
        };
        match spec.get("policy").and_then(Value::as_str) {
            None | Some("other") => {}
            Some(p) => return Err(refuse(format!("scheduling policy `{p}`"))),
        }
        for key in NEEDS_ENFORCEMENT {
            match spec.get(key) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => {}
                Some(v) => return Err(refuse(format!("`{key} = {v}`"))),
            }
        }
        let ignored: Vec<&str> = spec
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "policy")
            .collect();
        if !ignored.is_empty() {
            tracing::warn!(
                partition = %partition,
                "resources {ignored:?} are not enforced: no resource manager on this node"
            );
        }
        Ok(ProcessSetup::default())
    }

    fn release(&self, _: &PartitionId) -> Result<(), ResourceError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn default_refuses_realtime_and_exclusive_cpus() {
        let p = PartitionId::parse("slappart1").unwrap();
        for bad in [
            r#"{"policy":"fifo","priority":80}"#,
            r#"{"cpus":1}"#,
            r#"{"cpu_list":[2,3]}"#,
            r#"{"mlock":true}"#,
        ] {
            let err = NoResources.apply(&p, &spec(bad)).err().unwrap();
            let msg = err.to_string();
            assert!(
                msg.contains("slappart1") && msg.contains("resource manager"),
                "{msg}"
            );
        }
        let none = NoResources.apply(&p, &spec("{}")).unwrap();
        assert!(none.hook.is_none() && none.env.is_empty());
        let limits = NoResources
            .apply(
                &p,
                &spec(r#"{"memory_max_bytes":1048576,"policy":"other","mlock":false}"#),
            )
            .unwrap();
        assert!(limits.hook.is_none());
        NoResources.release(&p).unwrap();
    }
}
