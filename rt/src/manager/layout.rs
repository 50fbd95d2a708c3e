//! Where a partition's cgroups are: the hierarchies rt uses ([`Layout`], found once from the host
//! report) and the paths of the subtree and of each partition's group below them.

use std::path::{Path, PathBuf};

use super::Manager;
use super::state::HostState;
use crate::error::{Error, Result};
use crate::host::{HostPaths, HostReport};
use crate::kfs;

/// One mounted v1 hierarchy rt uses.
#[derive(Clone, Debug)]
pub(super) struct Hier {
    /// Resolved mount directory.
    pub(super) mount: PathBuf,
    /// Controllers of rt's interest mounted there.
    pub(super) controllers: Vec<&'static str>,
}

/// The cgroup hierarchies rt works in: the v1 ones it uses, or the cgroup2 mount.
#[derive(Clone, Debug)]
pub(super) enum Layout {
    V1(Vec<Hier>),
    V2 { mount: PathBuf },
}

const V1_USED: [&str; 6] = ["cpuset", "cpu", "cpuacct", "memory", "blkio", "pids"];

impl Layout {
    /// The layout of the host below `paths`: cgroup2 when the host uses it, else the mounted v1
    /// hierarchies of [`V1_USED`] (co-mounted controllers share one [`Hier`]).
    pub(super) fn detect(paths: &HostPaths, host: &HostReport) -> Result<Self> {
        Ok(if host.cgroup.uses_v2() {
            let mount = host.cgroup.v2_mount.as_ref().map(|m| paths.resolve(m));
            Layout::V2 {
                mount: mount.ok_or_else(|| Error::NoCgroups {
                    mountinfo: paths.resolve("/proc/self/mountinfo"),
                })?,
            }
        } else {
            let mut hiers: Vec<Hier> = Vec::new();
            for ctrl in V1_USED {
                let Some(mp) = host.cgroup.v1.get(ctrl) else {
                    continue;
                };
                let mount = paths.resolve(mp);
                match hiers.iter_mut().find(|h| h.mount == mount) {
                    Some(h) => h.controllers.push(ctrl),
                    None => hiers.push(Hier {
                        mount,
                        controllers: vec![ctrl],
                    }),
                }
            }
            if hiers.is_empty() {
                return Err(Error::NoCgroups {
                    mountinfo: paths.resolve("/proc/self/mountinfo"),
                });
            }
            Layout::V1(hiers)
        })
    }
}

impl Manager {
    /// Mount directory of the v1 hierarchy holding `ctrl` (None on v2 or when not mounted).
    pub(super) fn v1_mount(&self, ctrl: &str) -> Option<&Path> {
        match &self.layout {
            Layout::V1(h) => h
                .iter()
                .find(|h| h.controllers.contains(&ctrl))
                .map(|h| h.mount.as_path()),
            Layout::V2 { .. } => None,
        }
    }

    /// Subtree directory of the hierarchy holding `ctrl` (v1) or the v2 subtree.
    pub(super) fn subtree(&self, ctrl: &str) -> Option<PathBuf> {
        match &self.layout {
            Layout::V1(_) => self.v1_mount(ctrl).map(|m| m.join(&self.cfg.root_name)),
            Layout::V2 { mount } => Some(mount.join(&self.cfg.root_name)),
        }
    }

    /// The partition's group in the hierarchy holding `ctrl` (v1) or in the v2 subtree.
    pub(super) fn group(&self, ctrl: &str, partition: &str) -> Option<PathBuf> {
        self.subtree(ctrl).map(|s| s.join(partition))
    }

    /// All cgroup directories of a partition (one per hierarchy).
    pub fn cgroup_dirs(&self, partition: &str) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1(h) => h
                .iter()
                .map(|h| h.mount.join(&self.cfg.root_name).join(partition))
                .collect(),
            Layout::V2 { mount } => vec![mount.join(&self.cfg.root_name).join(partition)],
        }
    }

    /// Creates the subtree directory `sub` if needed, remembering that rt created it.
    pub(super) fn ensure_subtree(&self, sub: &Path, state: &mut HostState) -> Result<bool> {
        let created = kfs::mkdir(sub)?;
        if created && !state.created.iter().any(|p| p == sub) {
            state.created.push(sub.to_owned());
        }
        Ok(created)
    }
}
