//! Process lifetime of partitions and builds: a "jail" cgroup per partition, a uid sweep for
//! isolated partitions, and the pids limit.
//!
//! Stopping a service signals its process group, which a process leaves with one `setsid`. So
//! on a root node every partition process (service, promise, `[[prepare]]` step) and every build
//! step also joins, between `fork` and `exec` and before it drops its privileges, a cgroup that
//! only the node may leave or enter ([`JailJoin`]); cgroup membership is inherited by every
//! descendant, whatever it does with sessions, groups or double forks.
//!
//! Layout (a subtree of the node's own, never a group of the machine):
//! `<hierarchy>/slapos-edge-jail/<node key>/<partition>` (builds: `.build-<release hash>`),
//! where the node key is derived from the node's state directory, so two nodes on one host
//! never share groups. On cgroup v1 the groups live in the `pids` and `freezer` hierarchies,
//! and in `cpuacct`, `memory` and `blkio` where mounted (no limit there: the usage sampler,
//! `crate::usage`, reads them through [`Jails::usage`]);
//! on cgroup v2 in the unified hierarchy (with `pids` when the tree above delegates it; the node
//! never writes the root's `cgroup.subtree_control`).
//!
//! * **Limit**: `pids.max` = `max_processes` (every task: processes and threads).
//! * **Kill** ([`Jails::kill`]): v1: freeze the group (nothing forks any more), `SIGKILL` every
//!   pid in `cgroup.procs`, thaw, until no live process is left; v2: `cgroup.kill` (5.14+; else
//!   `cgroup.freeze` and the same loop). Zombies (killed, not yet reaped) count as gone.
//! * **Uid sweep** ([`sweep_uid`]): for an isolated partition, a forked helper takes the
//!   partition's uid and sends `SIGKILL` to every process it may signal, repeated until no
//!   process of that uid is left in `/proc` (`kill(-1)` is atomic against `fork`; a fork bomb
//!   cannot outrun it). It needs no cgroup, so it also covers hosts without one.
//!
//! [`Jails::empty`] does both and verifies: before a partition is wiped, freed or re-allocated,
//! when it is stopped, at node start (nothing of a partition legitimately runs before the node
//! started it) and at shutdown. Anything left is an error ([`JailError::Survivors`]): the pass
//! fails and is retried.
//!
//! rt (`Resources`) keeps its own groups: on v1 those are other hierarchies (cpu, cpuset,
//! memory), so a process is in both. On v2 a process is in exactly one group: rt's hook runs
//! after the jail join and moves an RT service into rt's group, out of the jail (no `pids.max`
//! there); rt's release kills what is left in its groups, and the uid sweep still covers an
//! isolated partition.
//!
//! Kernel paths are parameters ([`Jails::detect`] takes the cgroup root): unit tests run on
//! fake v1 and v2 trees; the real hierarchies are tested as root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::host::isolation::Identity;

/// Name of the subtree holding every node's jails.
pub const JAIL_ROOT: &str = "slapos-edge-jail";

/// How long a kill waits for a group (or a uid) to be empty.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// A jail operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A cgroup file or directory could not be used.
    #[error("failed to {op} `{}`: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The cgroup file or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Processes were still alive after the kill.
    #[error("{what}: {} process(es) still alive after SIGKILL: {pids:?}", pids.len())]
    Survivors {
        /// The group or uid.
        what: String,
        /// What is left.
        pids: Vec<i32>,
    },
    /// A jail's usage counters could not be read.
    #[error("failed to read the usage of jail `{name}`: {source}")]
    Usage {
        /// The jail.
        name: String,
        /// Cause (names the cgroup file; boxed: rt's error is large).
        #[source]
        source: Box<rt::Error>,
    },
    /// The uid sweep helper failed.
    #[error("uid {uid}: the kill helper failed: {source}")]
    Sweep {
        /// The uid.
        uid: u32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JailError + 'a {
    move |source| JailError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Which cgroup hierarchy jails live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1: the node's directory in the `pids` and in the `freezer` hierarchies.
    V1 {
        /// `<root>/pids/slapos-edge-jail/<key>`.
        pids: PathBuf,
        /// `<root>/freezer/slapos-edge-jail/<key>`.
        freezer: PathBuf,
    },
    /// cgroup v2: the node's directory in the unified hierarchy.
    V2 {
        /// `<unified>/slapos-edge-jail/<key>`.
        dir: PathBuf,
        /// The `pids` controller is available there.
        pids: bool,
    },
}

/// What a child process writes between `fork` and `exec` to enter its jail: `0` to each
/// prepared `cgroup.procs` (the writer joins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailJoin(Arc<[CString]>);

impl JailJoin {
    /// Join (async-signal-safe: the paths are ready, no allocation).
    pub fn join(&self) -> std::io::Result<()> {
        for p in self.0.iter() {
            crate::sys::write_raw(p, b"0")?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files joined.
    pub fn files(&self) -> Vec<PathBuf> {
        self.0
            .iter()
            .map(|c| PathBuf::from(std::ffi::OsStr::from_bytes(c.as_bytes())))
            .collect()
    }
}

/// The jails of one node.
#[derive(Debug, Clone)]
pub struct Jails {
    hierarchy: Hierarchy,
    max_processes: u64,
    proc_root: PathBuf,
    /// cgroup v1 only: the node's directory in the accounting hierarchies that are mounted
    /// (`cpuacct`, `memory`, `blkio`): a jail is a group in each, so its usage is measured.
    acct: Acct,
}

/// The node's directories in the v1 accounting hierarchies (`None`: not mounted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acct {
    /// `<root>/cpuacct/slapos-edge-jail/<key>`.
    pub cpuacct: Option<PathBuf>,
    /// `<root>/memory/slapos-edge-jail/<key>`.
    pub memory: Option<PathBuf>,
    /// `<root>/blkio/slapos-edge-jail/<key>`.
    pub blkio: Option<PathBuf>,
}

impl Acct {
    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.cpuacct, &self.memory, &self.blkio]
            .into_iter()
            .flatten()
    }
}

/// A short, stable key for the node owning `state_dir` (12 hex digits of its SHA-256).
pub fn node_key(state_dir: &Path) -> String {
    let abs = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    crate::util::sha256_hex(abs.as_os_str().as_bytes())[..12].to_owned()
}

fn read(path: &Path) -> Result<String, JailError> {
    std::fs::read_to_string(path).map_err(io("read", path))
}

fn write(path: &Path, data: &str) -> Result<(), JailError> {
    std::fs::write(path, data).map_err(io("write", path))
}

/// The pids listed in a `cgroup.procs` file.
fn parse_procs(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// True when `pid` is alive and not a zombie (`<proc_root>/<pid>/stat`).
fn live(proc_root: &Path, pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

impl Jails {
    /// The jails of the node keyed `key` under the cgroup root `root` (`/sys/fs/cgroup`):
    /// cgroup v2 when `root` is a unified mount; else v1 when the `pids` and `freezer`
    /// hierarchies are mounted; else the unified mount of a hybrid host (`root/unified`);
    /// `None` when there is none of them. On v2, `pids` is used when the root already
    /// delegates it to its children (its `cgroup.subtree_control`, which the node never
    /// writes).
    pub fn detect(root: &Path, key: &str, max_processes: u64, proc_root: &Path) -> Option<Self> {
        let sub = Path::new(JAIL_ROOT).join(key);
        let v2 = |mount: &Path| {
            let pids = std::fs::read_to_string(mount.join("cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == "pids"));
            Hierarchy::V2 {
                dir: mount.join(&sub),
                pids,
            }
        };
        let mut acct = Acct::default();
        let hierarchy = if root.join("cgroup.controllers").is_file() {
            v2(root)
        } else if root.join("pids/cgroup.procs").is_file()
            && root.join("freezer/cgroup.procs").is_file()
        {
            let mounted = |c: &str| {
                root.join(c)
                    .join("cgroup.procs")
                    .is_file()
                    .then(|| root.join(c).join(&sub))
            };
            acct = Acct {
                cpuacct: mounted("cpuacct"),
                memory: mounted("memory"),
                blkio: mounted("blkio"),
            };
            Hierarchy::V1 {
                pids: root.join("pids").join(&sub),
                freezer: root.join("freezer").join(&sub),
            }
        } else if root.join("unified/cgroup.controllers").is_file() {
            v2(&root.join("unified"))
        } else {
            return None;
        };
        Some(Self {
            hierarchy,
            max_processes,
            proc_root: proc_root.to_path_buf(),
            acct,
        })
    }

    /// The v1 accounting hierarchies jails are also groups of.
    pub fn acct(&self) -> &Acct {
        &self.acct
    }

    /// What jail `name`'s processes used (cgroup counters; a field the host does not account
    /// is `None`). A jail not created yet reads as empty.
    pub fn usage(&self, name: &str) -> Result<rt::Usage, JailError> {
        let res = match &self.hierarchy {
            Hierarchy::V1 { pids, .. } => {
                let tasks = pids.join(name);
                if !tasks.is_dir() {
                    return Ok(rt::Usage::default());
                }
                let j = |d: &Option<PathBuf>| d.as_ref().map(|d| d.join(name));
                rt::usage::read_v1(
                    j(&self.acct.cpuacct).as_deref(),
                    j(&self.acct.memory).as_deref(),
                    j(&self.acct.blkio).as_deref(),
                    &tasks,
                )
            }
            Hierarchy::V2 { dir, .. } => {
                let g = dir.join(name);
                if !g.is_dir() {
                    return Ok(rt::Usage::default());
                }
                rt::usage::read_v2(&g)
            }
        };
        res.map_err(|source| JailError::Usage {
            name: name.to_owned(),
            source: Box::new(source),
        })
    }

    /// Where the jails are.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// True when `pids.max` is enforced.
    pub fn limits_pids(&self) -> bool {
        match &self.hierarchy {
            Hierarchy::V1 { .. } => true,
            Hierarchy::V2 { pids, .. } => *pids,
        }
    }

    /// The group directories of jail `name`.
    pub fn dirs(&self, name: &str) -> Vec<PathBuf> {
        self.bases().into_iter().map(|d| d.join(name)).collect()
    }

    /// Create jail `name` (idempotent), set its `pids.max`, and return how a child joins it.
    pub fn prepare(&self, name: &str) -> Result<JailJoin, JailError> {
        if let Hierarchy::V2 { dir, pids: true } = &self.hierarchy {
            // Delegate pids down our own subtree (the root's subtree_control is never written).
            let top = dir.parent().unwrap_or(dir);
            for d in [top, dir.as_path()] {
                std::fs::create_dir_all(d).map_err(io("create", d))?;
                let ctl = d.join("cgroup.subtree_control");
                if !read(&ctl)?.split_whitespace().any(|c| c == "pids") {
                    write(&ctl, "+pids")?;
                }
            }
        }
        let mut files = Vec::new();
        for d in self.dirs(name) {
            if let Err(e) = std::fs::create_dir_all(&d) {
                // An accounting group only measures: where its hierarchy is mounted but cannot
                // be written (read-only in a container, say) the jail goes on without it and
                // its usage fields read 0. The confining groups (pids, freezer) are required.
                if self.acct.all().any(|a| d.starts_with(a)) {
                    tracing::warn!("jail `{name}`: not measured in `{}`: {e}", d.display());
                    continue;
                }
                return Err(io("create", &d)(e));
            }
            files.push(d.join("cgroup.procs"));
        }
        if self.limits_pids() {
            let dir = &self.dirs(name)[0];
            write(&dir.join("pids.max"), &self.max_processes.to_string())?;
        }
        let files = files
            .iter()
            .map(|f| {
                CString::new(f.as_os_str().as_bytes()).map_err(|e| JailError::Io {
                    op: "prepare",
                    path: f.clone(),
                    source: std::io::Error::other(e),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JailJoin(files.into()))
    }

    /// The live (not zombie) processes in jail `name` (none when it does not exist).
    pub fn procs(&self, name: &str) -> Result<Vec<i32>, JailError> {
        let mut out = Vec::new();
        for d in self.dirs(name) {
            let f = d.join("cgroup.procs");
            match std::fs::read_to_string(&f) {
                Ok(t) => out.extend(parse_procs(&t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("read", &f)(e)),
            }
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|p| live(&self.proc_root, *p));
        Ok(out)
    }

    /// Kill everything in jail `name` and wait until nothing is left (see the module doc).
    /// Blocking (at most [`KILL_WAIT`]).
    pub fn kill(&self, name: &str) -> Result<(), JailError> {
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            let left = self.procs(name)?;
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(JailError::Survivors {
                    what: format!("jail `{name}`"),
                    pids: left,
                });
            }
            match &self.hierarchy {
                Hierarchy::V1 { freezer, .. } => self.freeze_kill(
                    &freezer.join(name).join("freezer.state"),
                    ("FROZEN", "THAWED"),
                    name,
                )?,
                Hierarchy::V2 { dir, .. } => {
                    let g = dir.join(name);
                    if g.join("cgroup.kill").exists() {
                        write(&g.join("cgroup.kill"), "1")?;
                    } else {
                        self.freeze_kill(&g.join("cgroup.freeze"), ("1", "0"), name)?;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Freeze (nothing forks any more), SIGKILL every member, thaw (the signals land).
    fn freeze_kill(
        &self,
        state: &Path,
        (freeze, thaw): (&str, &str),
        name: &str,
    ) -> Result<(), JailError> {
        write(state, freeze)?;
        // v1 reports FREEZING until every task stopped (a task in uninterruptible sleep may
        // hold it there: go on, the loop comes back).
        let until = Instant::now() + Duration::from_millis(500);
        while state.ends_with("freezer.state")
            && read(state)?.trim() != "FROZEN"
            && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut res = Ok(());
        for pid in self.procs(name)? {
            match nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            ) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    res = Err(JailError::Io {
                        op: "kill a process of",
                        path: state.to_path_buf(),
                        source: e.into(),
                    });
                }
            }
        }
        write(state, thaw)?;
        res
    }

    /// Kill everything in jail `name`, then remove its groups (missing ones are fine).
    pub fn remove(&self, name: &str) -> Result<(), JailError> {
        self.kill(name)?;
        let mut res = Ok(());
        for d in self.dirs(name) {
            // A killed task may still be leaving a v1 group (`EBUSY` for a moment; longer on a
            // loaded host): retry a while, and try every hierarchy whatever one of them answers.
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        if res.is_ok() {
                            res = Err(io("remove", &d)(e));
                        }
                        break;
                    }
                }
            }
        }
        res
    }

    /// The jails of this node (names of its groups).
    pub fn names(&self) -> Vec<String> {
        // Every hierarchy: a group left in one (its removal failed) is still found.
        let mut names: Vec<String> = Vec::new();
        for base in self.bases() {
            for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() && !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names
    }

    /// The node's directories, one per hierarchy.
    fn bases(&self) -> Vec<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V1 { pids, freezer } => [pids, freezer]
                .into_iter()
                .chain(self.acct.all())
                .cloned()
                .collect(),
            Hierarchy::V2 { dir, .. } => vec![dir.clone()],
        }
    }

    /// Remove the jails not in `keep` (partitions this node no longer has; builds of an
    /// interrupted node), then, when nothing is left, the node's own directories.
    pub fn remove_others(&self, keep: &[&str]) {
        for n in self.names() {
            if !keep.contains(&n.as_str())
                && let Err(e) = self.remove(&n)
            {
                tracing::warn!("jail `{n}`: {e}");
            }
        }
        if self.names().is_empty() {
            for d in self.bases() {
                let _ = std::fs::remove_dir(&d);
                // The shared top: only when no other node uses it.
                if let Some(top) = d.parent() {
                    let _ = std::fs::remove_dir(top);
                }
            }
        }
    }

    /// Kill everything jail `name` holds and, for an isolated partition, everything its uid
    /// runs; verify that nothing is left. Blocking.
    pub fn empty(&self, name: &str, owner: Option<Identity>) -> Result<(), JailError> {
        self.kill(name)?;
        if let Some(id) = owner {
            sweep_uid(&self.proc_root, id)?;
        }
        Ok(())
    }
}

/// The live processes whose real, effective or saved uid is `uid`.
pub fn uid_procs(proc_root: &Path, uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(status) =
                std::fs::read_to_string(proc_root.join(pid.to_string()).join("status"))
            else {
                return false;
            };
            let zombie = status
                .lines()
                .find_map(|l| l.strip_prefix("State:"))
                .is_some_and(|s| {
                    s.trim_start().starts_with('Z') || s.trim_start().starts_with('X')
                });
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"));
            !zombie
                && uids.is_some_and(|u| {
                    u.split_whitespace()
                        .take(3)
                        .any(|x| x.parse::<u32>() == Ok(uid))
                })
        })
        .collect()
}

/// Kill every process of `id.uid` (a forked helper with that uid sends `SIGKILL` to all it may
/// signal), repeated until `/proc` shows none; at most [`KILL_WAIT`]. Blocking. Refuses uid 0
/// and the node's own uid.
pub fn sweep_uid(proc_root: &Path, id: Identity) -> Result<(), JailError> {
    if id.uid == 0 || id.uid == nix::unistd::getuid().as_raw() {
        return Err(JailError::Sweep {
            uid: id.uid,
            source: std::io::Error::other("refusing to sweep root or the node's own uid"),
        });
    }
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let left = uid_procs(proc_root, id.uid);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(JailError::Survivors {
                what: format!("uid {}", id.uid),
                pids: left,
            });
        }
        crate::sys::kill_all_as(id).map_err(|source| JailError::Sweep {
            uid: id.uid,
            source,
        })?;
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v1() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for h in ["pids", "freezer"] {
            std::fs::create_dir_all(d.path().join(h)).unwrap();
            std::fs::write(d.path().join(h).join("cgroup.procs"), "").unwrap();
        }
        d
    }

    #[test]
    fn detects_v1_v2_and_hybrid_trees() {
        let proc = Path::new("/proc");
        let v1 = fake_v1();
        let j = Jails::detect(v1.path(), "k1", 64, proc).unwrap();
        assert_eq!(
            j.hierarchy(),
            &Hierarchy::V1 {
                pids: v1.path().join("pids/slapos-edge-jail/k1"),
                freezer: v1.path().join("freezer/slapos-edge-jail/k1"),
            }
        );
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu io pids\n").unwrap();
        // Available but not delegated by the root: no pids limit.
        std::fs::write(v2.path().join("cgroup.subtree_control"), "cpu\n").unwrap();
        assert!(
            !Jails::detect(v2.path(), "k1", 64, proc)
                .unwrap()
                .limits_pids()
        );
        std::fs::write(v2.path().join("cgroup.subtree_control"), "cpu pids\n").unwrap();
        let j = Jails::detect(v2.path(), "k1", 64, proc).unwrap();
        assert!(j.limits_pids());
        assert_eq!(j.dirs("p0"), [v2.path().join("slapos-edge-jail/k1/p0")]);
        let hybrid = tempfile::tempdir().unwrap();
        std::fs::create_dir(hybrid.path().join("unified")).unwrap();
        std::fs::write(hybrid.path().join("unified/cgroup.controllers"), "").unwrap();
        let j = Jails::detect(hybrid.path(), "k1", 64, proc).unwrap();
        assert!(!j.limits_pids());
        let none = tempfile::tempdir().unwrap();
        assert!(Jails::detect(none.path(), "k1", 64, proc).is_none());
    }

    #[test]
    fn prepare_creates_groups_with_the_limit_on_fake_trees() {
        let v1 = fake_v1();
        let j = Jails::detect(v1.path(), "k", 128, Path::new("/proc")).unwrap();
        let join = j.prepare("slappart0").unwrap();
        let g = v1.path().join("pids/slapos-edge-jail/k/slappart0");
        assert_eq!(std::fs::read_to_string(g.join("pids.max")).unwrap(), "128");
        assert_eq!(
            join.files(),
            [
                g.join("cgroup.procs"),
                v1.path()
                    .join("freezer/slapos-edge-jail/k/slappart0/cgroup.procs")
            ]
        );
        assert_eq!(j.names(), ["slappart0"]);
        // An empty group is killed at once (removal needs the kernel: the real test).
        j.kill("slappart0").unwrap();

        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "pids\n").unwrap();
        std::fs::write(v2.path().join("cgroup.subtree_control"), "pids\n").unwrap();
        // A fake tree has no kernel to create the control files: make them.
        for d in ["slapos-edge-jail", "slapos-edge-jail/k"] {
            std::fs::create_dir_all(v2.path().join(d)).unwrap();
            std::fs::write(v2.path().join(d).join("cgroup.subtree_control"), "").unwrap();
        }
        let j = Jails::detect(v2.path(), "k", 64, Path::new("/proc")).unwrap();
        j.prepare("p1").unwrap();
        for d in ["slapos-edge-jail", "slapos-edge-jail/k"] {
            let ctl = std::fs::read_to_string(v2.path().join(d).join("cgroup.subtree_control"));
            assert_eq!(ctl.unwrap(), "+pids", "{d}");
        }
        assert_eq!(
            std::fs::read_to_string(v2.path().join("slapos-edge-jail/k/p1/pids.max")).unwrap(),
            "64"
        );
    }

    #[test]
    fn v1_jails_are_accounting_groups_too() {
        let v1 = fake_v1();
        let r = v1.path();
        // cpuacct and memory mounted, blkio not: its fields stay absent.
        for h in ["cpuacct", "memory"] {
            std::fs::create_dir_all(r.join(h)).unwrap();
            std::fs::write(r.join(h).join("cgroup.procs"), "").unwrap();
        }
        let j = Jails::detect(r, "k", 8, Path::new("/proc")).unwrap();
        assert_eq!(j.acct().cpuacct, Some(r.join("cpuacct/slapos-edge-jail/k")));
        assert_eq!(j.acct().blkio, None);
        // Not created yet: empty.
        assert_eq!(j.usage("p").unwrap(), rt::Usage::default());
        let join = j.prepare("p").unwrap();
        assert_eq!(join.files().len(), 4, "{:?}", join.files());
        let g = |h: &str| r.join(h).join("slapos-edge-jail/k/p");
        std::fs::write(g("cpuacct").join("cpuacct.usage"), "5000\n").unwrap();
        std::fs::write(g("memory").join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(g("memory").join("memory.max_usage_in_bytes"), "8192\n").unwrap();
        std::fs::write(g("pids").join("tasks"), "1\n2\n").unwrap();
        let u = j.usage("p").unwrap();
        assert_eq!(
            (u.cpu_ns, u.memory_current_bytes, u.memory_peak_bytes),
            (Some(5000), Some(4096), Some(8192))
        );
        assert_eq!((u.io_read_bytes, u.tasks), (None, 2));
    }

    #[test]
    fn only_live_members_count() {
        let v1 = fake_v1();
        let j = Jails::detect(v1.path(), "k", 8, Path::new("/proc")).unwrap();
        j.prepare("p").unwrap();
        let me = std::process::id() as i32;
        // Our own pid is live; a pid that does not exist is not.
        std::fs::write(
            v1.path().join("pids/slapos-edge-jail/k/p/cgroup.procs"),
            format!("{me}\n999999999\n"),
        )
        .unwrap();
        assert_eq!(j.procs("p").unwrap(), [me]);
        assert_eq!(parse_procs("1\n2\nx\n"), [1, 2]);
    }

    #[test]
    fn sweeps_refuse_root_and_the_node_itself() {
        let me = nix::unistd::getuid().as_raw();
        for uid in [0, me] {
            let e = sweep_uid(Path::new("/proc"), Identity { uid, gid: uid }).unwrap_err();
            assert!(matches!(e, JailError::Sweep { .. }), "{e}");
        }
        assert!(uid_procs(Path::new("/proc"), me).contains(&(std::process::id() as i32)));
    }

    /// The real hierarchies, as root: a double-forked, setsid'd child cannot outlive a kill.
    #[test]
    fn an_accounting_hierarchy_that_cannot_be_written_does_not_stop_a_jail() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for h in ["pids", "freezer", "cpuacct", "memory"] {
            std::fs::create_dir_all(r.join(h)).unwrap();
            std::fs::write(r.join(h).join("cgroup.procs"), "").unwrap();
        }
        let j = Jails::detect(r, "k", 8, Path::new("/proc")).unwrap();
        // `memory` is mounted but its subtree cannot be created (a file stands in the way, as
        // EROFS would for root).
        std::fs::write(r.join("memory/slapos-edge-jail"), "").unwrap();
        let join = j.prepare("p").expect("the jail without its memory group");
        assert!(r.join("pids/slapos-edge-jail/k/p").is_dir());
        assert!(r.join("cpuacct/slapos-edge-jail/k/p").is_dir());
        assert_eq!(join.0.len(), 3, "pids, freezer, cpuacct");
        // A confining hierarchy that cannot be written is still an error.
        std::fs::remove_dir_all(r.join("freezer/slapos-edge-jail")).unwrap();
        std::fs::write(r.join("freezer/slapos-edge-jail"), "").unwrap();
        assert!(j.prepare("q").is_err());
    }

    #[test]
    fn real_jails_kill_setsid_survivors() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: real cgroup test skipped");
            return;
        }
        let key = format!("test-{}", std::process::id());
        let root = Path::new("/sys/fs/cgroup");
        let mut kinds = Vec::new();
        if let Some(j) = Jails::detect(root, &key, 32, Path::new("/proc")) {
            kinds.push(j);
        }
        // Also the unified hierarchy of a hybrid host (cgroup.kill without controllers).
        if root.join("unified/cgroup.controllers").is_file()
            && !root.join("cgroup.controllers").is_file()
        {
            kinds.push(Jails {
                hierarchy: Hierarchy::V2 {
                    dir: root.join("unified").join(JAIL_ROOT).join(&key),
                    pids: false,
                },
                max_processes: 32,
                proc_root: "/proc".into(),
                acct: Acct::default(),
            });
        }
        for j in kinds {
            let join = j.prepare("p").unwrap();
            let mut cmd = std::process::Command::new("sh");
            cmd.args(["-c", "setsid sh -c 'sleep 300' & (sleep 300 &) ; sleep 300"]);
            let hook = join.clone();
            // SAFETY: JailJoin::join is async-signal-safe.
            unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || hook.join()) };
            let mut child = cmd.spawn().unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while j.procs("p").unwrap().len() < 4 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(j.procs("p").unwrap().len() >= 4, "{:?}", j.hierarchy());
            j.kill("p").unwrap();
            let _ = child.wait();
            assert!(j.procs("p").unwrap().is_empty());
            j.remove_others(&[]);
            assert!(
                !j.dirs("p")[0].exists(),
                "{:?}: removing again: {:?}",
                j.hierarchy(),
                j.remove("p")
            );
        }
    }

    #[test]
    fn real_jail_usage_measures_a_real_process() {
        use slapos_test_support::gate;
        let test = "real_jail_usage_measures_a_real_process";
        if !gate::privileged(test) {
            return;
        }
        let key = format!("test-usage-{}", std::process::id());
        let Some(j) = Jails::detect(Path::new("/sys/fs/cgroup"), &key, 32, Path::new("/proc"))
        else {
            gate::skip(gate::Need::Privileged, test, "no cgroup hierarchy");
            return;
        };
        let join = j.prepare("p").unwrap();
        // Burns CPU in a shell loop, then charges ~4 MB and sleeps.
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; x=$(head -c 4000000 /dev/zero | tr '\\0' a); sleep 30",
        ]);
        let hook = join.clone();
        // SAFETY: JailJoin::join is async-signal-safe.
        unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || hook.join()) };
        let mut child = cmd.spawn().unwrap();
        let v1 = matches!(j.hierarchy(), Hierarchy::V1 { .. });
        let cpu = !v1 || j.acct().cpuacct.is_some();
        let mem = v1 && j.acct().memory.is_some();
        let measured = |u: &rt::Usage| {
            u.tasks >= 1
                && (!cpu || u.cpu_ns.unwrap_or(0) > 10_000_000)
                && (!mem || u.memory_peak_bytes.unwrap_or(0) > 1_000_000)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut u = j.usage("p").unwrap();
        while Instant::now() < deadline && !measured(&u) {
            std::thread::sleep(Duration::from_millis(50));
            u = j.usage("p").unwrap();
        }
        j.kill("p").unwrap();
        let _ = child.wait();
        j.remove_others(&[]);
        let left: Vec<PathBuf> = j.dirs("p").into_iter().filter(|d| d.exists()).collect();
        assert!(left.is_empty(), "groups left: {left:?}");
        assert!(measured(&u), "cpu {cpu}, memory {mem}: {u:?}");
        eprintln!("{test}: {u:?}");
    }
}
