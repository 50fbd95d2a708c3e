//! What the manager persists in its `state_dir` (format in the [manager](super) doc): one
//! [`PartitionRecord`] a partition in `partitions/<name>.json`, the [`HostState`] to restore in
//! `host.json`, both written by rename.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Manager;
use crate::cpulist::CpuList;
use crate::error::{Error, Result};
use crate::irq::IrqOriginals;
use crate::kfs;
use crate::kthread::KthreadOriginals;
use crate::profile::ProfileSpec;

/// A partition's applied profile as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// The profile.
    pub spec: ProfileSpec,
    /// Exclusive CPUs (empty: shared pool).
    pub cpus: CpuList,
    /// cgroup-v1 RT budget written (None: no RT group scheduling or policy other).
    pub rt_runtime_us: Option<u64>,
}

/// What rt changed on the host and must restore when the last partition goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct HostState {
    #[serde(default)]
    pub(super) created: Vec<PathBuf>,
    #[serde(default)]
    pub(super) subtree_exclusive_set: bool,
    #[serde(default)]
    pub(super) v2_root_controllers_added: Vec<String>,
    /// cpuset group (path relative to the subtree) → its CPU list before rt shrank it.
    #[serde(default)]
    pub(super) cpuset_base: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) irq: IrqOriginals,
    /// pid → original affinity (with comm and start time) of each steered kthread.
    #[serde(default)]
    pub(super) kthreads: KthreadOriginals,
}

/// CPUs the `records` reserve: the union of their exclusive CPUs.
pub(super) fn reserved_cpus(records: &BTreeMap<String, PartitionRecord>) -> CpuList {
    records
        .values()
        .fold(CpuList::new(), |acc, r| acc.union(&r.cpus))
}

/// Σ of the v1 RT budgets of `records` (what the subtree's `cpu.rt_runtime_us` holds).
pub(super) fn rt_budget_total(records: &BTreeMap<String, PartitionRecord>) -> u64 {
    records.values().filter_map(|r| r.rt_runtime_us).sum()
}

/// Reads a JSON state file; `None` when it does not exist.
pub(super) fn load_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match kfs::read_opt(path)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| Error::State {
                path: path.to_owned(),
                source,
            }),
    }
}

/// Writes a JSON state file by rename, creating its directory.
pub(super) fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Dir {
            op: "create directory",
            path: dir.to_owned(),
            source,
        })?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value).map_err(|source| Error::State {
        path: path.to_owned(),
        source,
    })?;
    kfs::write(&tmp, &text)?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Write {
        path: path.to_owned(),
        value: "(rename)".into(),
        source,
    })
}

impl Manager {
    pub(super) fn state_file(&self) -> PathBuf {
        self.cfg.state_dir.join("host.json")
    }

    pub(super) fn record_file(&self, partition: &str) -> PathBuf {
        self.cfg
            .state_dir
            .join("partitions")
            .join(format!("{partition}.json"))
    }

    pub(super) fn load_state(&self) -> Result<HostState> {
        Ok(load_json(&self.state_file())?.unwrap_or_default())
    }

    pub(super) fn save_state(&self, st: &HostState) -> Result<()> {
        if *st == HostState::default() {
            return match std::fs::remove_file(self.state_file()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Dir {
                    op: "remove state file",
                    path: self.state_file(),
                    source: e,
                }),
                _ => Ok(()),
            };
        }
        save_json(&self.state_file(), st)
    }

    /// Removes the record of `partition` (absent already is fine).
    pub(super) fn remove_record(&self, partition: &str) -> Result<()> {
        if let Err(e) = std::fs::remove_file(self.record_file(partition))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::Dir {
                op: "remove record",
                path: self.record_file(partition),
                source: e,
            });
        }
        Ok(())
    }

    /// Records of every applied partition.
    pub fn records(&self) -> Result<BTreeMap<String, PartitionRecord>> {
        let dir = self.cfg.state_dir.join("partitions");
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(Error::Dir {
                    op: "list directory",
                    path: dir,
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(part) = name.strip_suffix(".json")
                && let Some(rec) = load_json(&entry.path())?
            {
                out.insert(part.to_owned(), rec);
            }
        }
        Ok(out)
    }
}
