//! Seam: partition isolation (who a partition's processes run as).
//!
//! SlapOS gives each partition its own unix user (`slapuserN`) owning its directory (0750), so
//! partitions cannot read each other. That arrives with a later issue (root mode); until then
//! [`CurrentUser`] runs everything as the node's own user, and partitions are plain directories.
//!
//! An implementation must be idempotent: `format_partition` runs at every `format` and node start.

use std::path::Path;

use slapos_proto::PartitionId;

/// A uid/gid pair processes are switched to before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Isolation could not be set up for a partition.
#[derive(Debug, thiserror::Error)]
#[error("isolation of partition `{partition}`: {reason}")]
pub struct IsolationError {
    /// The partition.
    pub partition: String,
    /// What failed.
    pub reason: String,
}

/// How partitions are separated from each other and from the node.
pub trait Isolation: Send + Sync + 'static {
    /// Prepare the partition's identity at format time (create its user, chown `dir`).
    /// Returns the user name recorded in the partition's resource record.
    fn format_partition(
        &self,
        partition: &PartitionId,
        dir: &Path,
    ) -> Result<String, IsolationError>;

    /// The identity the partition's services and promises run as; `None`: the node's own.
    fn identity(&self, partition: &PartitionId) -> Option<Identity>;
}

/// Unprivileged mode: every partition runs as the node's user.
#[derive(Debug, Clone, Copy, Default)]
pub struct CurrentUser;

impl Isolation for CurrentUser {
    fn format_partition(&self, _: &PartitionId, _: &Path) -> Result<String, IsolationError> {
        let uid = nix::unistd::getuid();
        Ok(nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string()))
    }

    fn identity(&self, _: &PartitionId) -> Option<Identity> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_user_names_the_node_user_and_switches_nothing() {
        let p = PartitionId::parse("slappart0").unwrap();
        let name = CurrentUser
            .format_partition(&p, Path::new("/nonexistent"))
            .unwrap();
        assert!(!name.is_empty());
        assert_eq!(CurrentUser.identity(&p), None);
    }
}
