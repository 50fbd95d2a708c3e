//! Deciding what to do (pure): desired state vs what the node has.
//!
//! * [`software_actions`]: which releases to install or remove. A release is *needed* when it
//!   is supplied `available` or used by a partition whose instance is not `destroyed` (a release
//!   supplied `destroyed` is kept while an instance still uses it). A failed install is retried
//!   once its retry time has come.
//! * [`software_ready`]: what a partition can expect of its release.
//! * [`needs_pass`]: whether a partition must be processed again — the skip rule. A partition
//!   whose `(revision, state, release dir)` was converged is skipped (its services stay supervised
//!   and its promises keep running).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use slapos_proto::{Assignment, DesiredState, InstanceState, SoftwareUrl, SupplyState};
use tokio::time::Instant;

/// What the node knows of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// An install task runs.
    Installing,
    /// Installed in this directory.
    Available(PathBuf),
    /// The last install failed.
    Failed {
        /// Why (with the log tail).
        message: String,
        /// When to try again.
        retry_at: Instant,
    },
    /// Removed (and reported so).
    Removed,
}

/// A release action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoftwareAction {
    /// Install (or find installed).
    Install(SoftwareUrl),
    /// Remove.
    Remove(SoftwareUrl),
}

/// What a partition's release looks like to the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoftwareReady {
    /// Installed here.
    Ready(PathBuf),
    /// Not yet (installing, or not started).
    Pending,
    /// The install failed with this message.
    Failed(String),
}

/// What a partition must converge to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The instance, `None` when the partition is free.
    pub assignment: Option<Assignment>,
    /// Its release.
    pub software: SoftwareReady,
}

/// What a partition last converged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converged {
    /// Assignment revision.
    pub revision: u64,
    /// State reached.
    pub state: InstanceState,
    /// Release directory used (`None` for destroyed).
    pub software_dir: Option<PathBuf>,
}

/// Releases the desired state needs installed.
pub fn needed(desired: &DesiredState) -> BTreeSet<SoftwareUrl> {
    let mut n: BTreeSet<SoftwareUrl> = desired
        .software
        .iter()
        .filter(|s| s.state == SupplyState::Available)
        .map(|s| s.url.clone())
        .collect();
    n.extend(
        desired
            .partitions
            .iter()
            .filter_map(|p| p.instance.as_ref())
            .filter(|a| a.state != InstanceState::Destroyed)
            .map(|a| a.software_url.clone()),
    );
    n
}

/// Release actions for `desired` given the node's `slots`, at `now`.
pub fn software_actions(
    desired: &DesiredState,
    slots: &BTreeMap<SoftwareUrl, Slot>,
    now: Instant,
) -> Vec<SoftwareAction> {
    let need = needed(desired);
    let mut out = Vec::new();
    for url in &need {
        let install = match slots.get(url) {
            None | Some(Slot::Removed) => true,
            Some(Slot::Failed { retry_at, .. }) => now >= *retry_at,
            Some(Slot::Installing | Slot::Available(_)) => false,
        };
        if install {
            out.push(SoftwareAction::Install(url.clone()));
        }
    }
    for s in &desired.software {
        if s.state != SupplyState::Destroyed || need.contains(&s.url) {
            continue;
        }
        match slots.get(&s.url) {
            Some(Slot::Installing | Slot::Removed) => {}
            None | Some(Slot::Available(_) | Slot::Failed { .. }) => {
                out.push(SoftwareAction::Remove(s.url.clone()));
            }
        }
    }
    out
}

/// What a partition can expect of `url`.
pub fn software_ready(slot: Option<&Slot>) -> SoftwareReady {
    match slot {
        Some(Slot::Available(d)) => SoftwareReady::Ready(d.clone()),
        Some(Slot::Failed { message, .. }) => SoftwareReady::Failed(message.clone()),
        _ => SoftwareReady::Pending,
    }
}

/// The skip rule. `dirty`: the partition still has services or files of an earlier instance.
pub fn needs_pass(target: &Target, converged: Option<&Converged>, dirty: bool) -> bool {
    let Some(a) = &target.assignment else {
        return dirty || converged.is_some();
    };
    let Some(c) = converged else {
        return true;
    };
    if c.revision != a.revision || c.state != a.state {
        return true;
    }
    match (&target.software, a.state) {
        (_, InstanceState::Destroyed) => false,
        (SoftwareReady::Ready(d), _) => c.software_dir.as_ref() != Some(d),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slapos_proto::{
        ComputerId, DesiredPartition, DesiredSoftware, InstanceTitle, Params, PartitionId,
        SoftwareType,
    };

    fn url(s: &str) -> SoftwareUrl {
        SoftwareUrl::parse(s).unwrap()
    }

    fn assignment(sr: &str, state: InstanceState, revision: u64) -> Assignment {
        Assignment {
            title: InstanceTitle::parse("t").unwrap(),
            root_title: InstanceTitle::parse("t").unwrap(),
            software_url: url(sr),
            software_type: SoftwareType::default(),
            parameters: Params::new(),
            state,
            revision,
            children: Default::default(),
            shared: Vec::new(),
        }
    }

    fn desired(sw: &[(&str, SupplyState)], parts: Vec<Option<Assignment>>) -> DesiredState {
        DesiredState {
            computer: ComputerId::parse("c").unwrap(),
            etag: "1".into(),
            software: sw
                .iter()
                .map(|(u, s)| DesiredSoftware {
                    url: url(u),
                    state: *s,
                })
                .collect(),
            partitions: parts
                .into_iter()
                .enumerate()
                .map(|(i, a)| DesiredPartition {
                    id: PartitionId::parse(format!("p{i}")).unwrap(),
                    instance: a,
                })
                .collect(),
        }
    }

    #[test]
    fn installs_what_is_needed_and_retries_failures_when_due() {
        let now = Instant::now();
        let d = desired(
            &[
                ("/a", SupplyState::Available),
                ("/b", SupplyState::Available),
            ],
            vec![Some(assignment("/c", InstanceState::Started, 1))],
        );
        let mut slots = BTreeMap::new();
        slots.insert(url("/a"), Slot::Available("/s/a".into()));
        slots.insert(
            url("/b"),
            Slot::Failed {
                message: "x".into(),
                retry_at: now + std::time::Duration::from_secs(5),
            },
        );
        assert_eq!(
            software_actions(&d, &slots, now),
            [SoftwareAction::Install(url("/c"))]
        );
        let later = now + std::time::Duration::from_secs(6);
        assert_eq!(
            software_actions(&d, &slots, later),
            [
                SoftwareAction::Install(url("/b")),
                SoftwareAction::Install(url("/c"))
            ]
        );
    }

    #[test]
    fn removes_only_what_no_live_instance_uses() {
        let now = Instant::now();
        let d = desired(
            &[
                ("/a", SupplyState::Destroyed),
                ("/b", SupplyState::Destroyed),
            ],
            vec![
                Some(assignment("/a", InstanceState::Stopped, 1)),
                Some(assignment("/b", InstanceState::Destroyed, 1)),
            ],
        );
        let mut slots = BTreeMap::new();
        slots.insert(url("/a"), Slot::Available("/s/a".into()));
        slots.insert(url("/b"), Slot::Available("/s/b".into()));
        assert_eq!(
            software_actions(&d, &slots, now),
            [SoftwareAction::Remove(url("/b"))]
        );
        slots.insert(url("/b"), Slot::Removed);
        assert!(software_actions(&d, &slots, now).is_empty());
    }

    #[test]
    fn skip_rule() {
        let dir = PathBuf::from("/s/a");
        let t = |state, rev, sw: SoftwareReady| Target {
            assignment: Some(assignment("/a", state, rev)),
            software: sw,
        };
        let ready = SoftwareReady::Ready(dir.clone());
        let conv = Converged {
            revision: 3,
            state: InstanceState::Started,
            software_dir: Some(dir.clone()),
        };
        assert!(needs_pass(
            &t(InstanceState::Started, 3, ready.clone()),
            None,
            false
        ));
        assert!(!needs_pass(
            &t(InstanceState::Started, 3, ready.clone()),
            Some(&conv),
            false
        ));
        assert!(needs_pass(
            &t(InstanceState::Started, 4, ready.clone()),
            Some(&conv),
            false
        ));
        assert!(needs_pass(
            &t(InstanceState::Stopped, 3, ready.clone()),
            Some(&conv),
            false
        ));
        // Reinstalled elsewhere (removed then supplied again): process again.
        let moved = SoftwareReady::Ready("/s/other".into());
        assert!(needs_pass(
            &t(InstanceState::Started, 3, moved),
            Some(&conv),
            false
        ));
        // A release being reinstalled does not un-converge a running partition.
        assert!(!needs_pass(
            &t(InstanceState::Started, 3, SoftwareReady::Pending),
            Some(&conv),
            false
        ));
        let destroyed = Converged {
            revision: 5,
            state: InstanceState::Destroyed,
            software_dir: None,
        };
        assert!(!needs_pass(
            &t(InstanceState::Destroyed, 5, SoftwareReady::Pending),
            Some(&destroyed),
            false
        ));
        let free = Target {
            assignment: None,
            software: SoftwareReady::Pending,
        };
        assert!(!needs_pass(&free, None, false));
        assert!(needs_pass(&free, None, true));
        assert!(needs_pass(&free, Some(&destroyed), false));
    }
}
