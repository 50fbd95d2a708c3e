//! Seam: partition isolation (who a partition's processes run as).
//!
//! Two implementations:
//!
//! * [`CurrentUser`] (unprivileged mode, `isolation = "none"`): everything runs as the node's
//!   own user; partitions are plain 0750 directories.
//! * [`UnixUsers`] (root mode, `isolation = "users"`, or `"auto"` on a root node): as SlapOS,
//!   each partition has its own unix user `<user_prefix><index>` (`slapuser0` …) and a group of
//!   the same name, created idempotently with `useradd --system --user-group --no-create-home
//!   --shell /usr/sbin/nologin --home-dir <partition dir>` (the distribution's tool, so
//!   `/etc/passwd`, `/etc/shadow`, `/etc/group` and nscd stay consistent; it is not edited by
//!   hand). The partition directory is owned by that user, mode 0750, so partitions cannot read
//!   each other. Services, promises and `[[prepare]]` commands run with the partition's uid/gid
//!   and no supplementary group ([`crate::process::supervisor::Launch`]); a root node refuses to start a
//!   partition's process when it has no identity ([`Isolation::requires_identity`]).
//!
//! Files the node itself reads or writes inside a partition go through
//! [`crate::host::partition_fs::PartitionFs`], which runs with the partition's filesystem identity
//! ([`as_fs_identity`], `setfsuid`/`setfsgid` on the calling thread) and never follows a link,
//! so nothing the partition plants can make the root node read or write outside what the
//! partition may. Build steps run as the software user ([`Isolation::software_identity`]).
//!
//! Users are **kept** when a partition is removed (shrinking `partitions`), as SlapOS keeps
//! them: a later format reuses them. An existing user of the right name is reused as is, unless
//! it is uid 0.
//!
//! An implementation must be idempotent: `format_partition` runs at every `format`, node start
//! and destroy.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::unistd::{Gid, Uid, setfsgid, setfsuid};
use slapos_proto::PartitionId;

/// A uid/gid pair processes are switched to before exec (defined beside the calls that take
/// it, so the raw system calls and the network setup need nothing of the isolation seam).
pub use crate::sys::Identity;

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
    /// `index` is the partition's 0-based index in the computer. Returns the user name recorded
    /// in the partition's resource record.
    fn format_partition(
        &self,
        partition: &PartitionId,
        index: u32,
        dir: &Path,
    ) -> Result<String, IsolationError>;

    /// The identity the partition's services and promises run as; `None`: the node's own.
    fn identity(&self, partition: &PartitionId) -> Option<Identity>;

    /// True when a partition's processes must never run with the node's identity: a partition
    /// for which [`Isolation::identity`] is `None` is then refused (not started as root).
    fn requires_identity(&self) -> bool {
        false
    }

    /// Prepare the user build steps run as (`name`, home `software_root`) and return its
    /// identity; `None`: builds run as the node.
    fn software_identity(
        &self,
        _name: &str,
        _software_root: &Path,
    ) -> Result<Option<Identity>, IsolationError> {
        Ok(None)
    }
}

/// Unprivileged mode: every partition runs as the node's user.
#[derive(Debug, Clone, Copy, Default)]
pub struct CurrentUser;

impl Isolation for CurrentUser {
    fn format_partition(
        &self,
        _: &PartitionId,
        _: u32,
        _: &Path,
    ) -> Result<String, IsolationError> {
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

/// Root mode: one unix user (and group) per partition, `<prefix><index>`.
#[derive(Debug)]
pub struct UnixUsers {
    prefix: String,
    useradd: PathBuf,
    known: Mutex<BTreeMap<PartitionId, Identity>>,
}

/// Where `useradd` is looked for (`/usr/sbin` is not always in a service's `PATH`).
const USERADD: [&str; 2] = ["/usr/sbin/useradd", "/sbin/useradd"];

/// `useradd`: one of [`USERADD`], else the first in `PATH`; `None` when there is none (a
/// minimal board image).
pub(crate) fn find_useradd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    USERADD
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path).map(|d| d.join("useradd")))
        .find(|p| p.is_file())
}

impl UnixUsers {
    /// Users named `<prefix><index>`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self::with_useradd(
            prefix,
            find_useradd().unwrap_or_else(|| PathBuf::from("useradd")),
        )
    }

    /// Users named `<prefix><index>`, created with the `useradd` at `useradd`.
    pub(crate) fn with_useradd(prefix: impl Into<String>, useradd: PathBuf) -> Self {
        Self {
            prefix: prefix.into(),
            useradd,
            known: Mutex::new(BTreeMap::new()),
        }
    }

    /// The user name of partition `index`.
    pub fn user_name(&self, index: u32) -> String {
        format!("{}{index}", self.prefix)
    }

    fn ensure_user(&self, name: &str, home: &Path) -> Result<Identity, String> {
        if let Some(id) = lookup(name)? {
            return Ok(id);
        }
        let out = std::process::Command::new(&self.useradd)
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--home-dir",
            ])
            .arg(home)
            .arg(name)
            .output()
            .map_err(|e| format!("failed to run `{}`: {e}", self.useradd.display()))?;
        // Exit 9: the name exists (another node or an operator created it meanwhile).
        if !out.status.success() && out.status.code() != Some(9) {
            return Err(format!(
                "`{} … {name}` failed ({}): {}",
                self.useradd.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        lookup(name)?.ok_or_else(|| format!("user `{name}` does not exist after useradd"))
    }
}

/// uid/gid of user `name`, `None` when it does not exist. uid 0 is refused.
fn lookup(name: &str) -> Result<Option<Identity>, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) if u.uid.is_root() => Err(format!(
            "user `{name}` has uid 0: refusing to run a partition as root"
        )),
        Ok(Some(u)) => Ok(Some(Identity {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("failed to look up user `{name}`: {e}")),
    }
}

impl Isolation for UnixUsers {
    fn format_partition(
        &self,
        partition: &PartitionId,
        index: u32,
        dir: &Path,
    ) -> Result<String, IsolationError> {
        let err = |reason: String| IsolationError {
            partition: partition.to_string(),
            reason,
        };
        let name = self.user_name(index);
        let id = self.ensure_user(&name, dir).map_err(err)?;
        // `dir` sits in the node-owned instance root: no partition can swap it for a symlink.
        std::os::unix::fs::lchown(dir, Some(id.uid), Some(id.gid)).map_err(|e| {
            err(format!(
                "failed to chown `{}` to {name}: {e}",
                dir.display()
            ))
        })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
            .map_err(|e| err(format!("failed to chmod 750 `{}`: {e}", dir.display())))?;
        if let Ok(mut k) = self.known.lock() {
            k.insert(partition.clone(), id);
        }
        Ok(name)
    }

    fn identity(&self, partition: &PartitionId) -> Option<Identity> {
        self.known.lock().ok()?.get(partition).copied()
    }

    fn requires_identity(&self) -> bool {
        true
    }

    /// The software user, created like partition users (`slapsoft` by default).
    fn software_identity(
        &self,
        name: &str,
        software_root: &Path,
    ) -> Result<Option<Identity>, IsolationError> {
        self.ensure_user(name, software_root)
            .map(Some)
            .map_err(|reason| IsolationError {
                partition: format!("(software user {name})"),
                reason,
            })
    }
}

/// True when every directory from `/` down to `dir` (included) can be searched by users that
/// are neither its owner nor in its group (`o+x`): a partition user must reach its partition and
/// the software releases.
pub fn reachable_by_others(dir: &Path) -> Result<(), PathBuf> {
    let mut cur = PathBuf::new();
    for c in dir.components() {
        cur.push(c);
        match std::fs::metadata(&cur) {
            Ok(md) if md.permissions().mode() & 0o001 != 0 => {}
            // Not created yet: format creates it 0755.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            _ => return Err(cur),
        }
    }
    Ok(())
}

/// Restores the thread's filesystem ids when dropped.
struct FsIds {
    uid: u32,
    gid: u32,
}

impl Drop for FsIds {
    fn drop(&mut self) {
        // Only this thread's credentials change.
        setfsuid(Uid::from_raw(self.uid));
        setfsgid(Gid::from_raw(self.gid));
    }
}

/// Run `f` with this thread's filesystem uid/gid set to `id` (no-op for `None`): the files it
/// creates belong to `id`, and path resolution and permission checks are `id`'s, so the node
/// cannot be tricked into writing through a symlink the partition planted. Only the calling
/// thread is affected, and only for the duration of `f` (which must not yield to other tasks).
pub fn as_fs_identity<T>(id: Option<Identity>, f: impl FnOnce() -> T) -> T {
    let Some(id) = id else {
        return f();
    };
    // The calling thread's fsuid and fsgid only; the previous values are restored by the
    // guard, even on panic.
    let gid = setfsgid(Gid::from_raw(id.gid)).as_raw();
    let uid = setfsuid(Uid::from_raw(id.uid)).as_raw();
    let guard = FsIds { uid, gid };
    let out = f();
    drop(guard);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_user_names_the_node_user_and_switches_nothing() {
        let p = PartitionId::parse("slappart0").unwrap();
        let name = CurrentUser
            .format_partition(&p, 0, Path::new("/nonexistent"))
            .unwrap();
        assert!(!name.is_empty());
        assert_eq!(CurrentUser.identity(&p), None);
        assert!(!CurrentUser.requires_identity());
    }

    #[test]
    fn unix_users_names_and_refuses_root() {
        let u = UnixUsers::new("slapuser");
        assert_eq!(u.user_name(3), "slapuser3");
        assert!(u.requires_identity());
        assert_eq!(u.identity(&PartitionId::parse("slappart0").unwrap()), None);
        assert!(lookup("root").is_err());
        assert_eq!(lookup("slapedge-no-such-user").unwrap(), None);
    }

    #[test]
    fn reachability_of_directories() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("a");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(reachable_by_others(&sub), Err(d.path().to_path_buf()));
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(reachable_by_others(&sub), Ok(()));
        assert_eq!(reachable_by_others(&sub.join("not/yet")), Ok(()));
    }

    #[test]
    fn fs_identity_is_restored() {
        // setfsuid(-1) changes nothing and reports the current value.
        let current = || setfsuid(Uid::from_raw(u32::MAX)).as_raw();
        let before = current();
        let inner = as_fs_identity(
            Some(Identity {
                uid: 65534,
                gid: 65534,
            }),
            current,
        );
        let after = current();
        assert_eq!(before, after);
        if nix::unistd::geteuid().is_root() {
            assert_eq!(inner, 65534);
        }
    }
}
