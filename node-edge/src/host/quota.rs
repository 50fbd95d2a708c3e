//! Per-partition disk budget (`disk_quota_mb`, opt-in).
//!
//! * **Enforced** where the filesystem of `instance_root` has project quotas on (ext4 with the
//!   `project,quota` features mounted `prjquota`, or XFS with `prjquota`): each partition is a
//!   project (id [`Quotas::project`]: `0x4000_0000`, the node key's 14 bits, the partition index),
//!   its directory and everything in it carry that id with `FS_XFLAG_PROJINHERIT` on
//!   directories (`FS_IOC_FSSETXATTR`, through fds, no link followed), and the project's block
//!   limit is the budget (`quotactl_fd(Q_SETQUOTA, PRJQUOTA)`, Linux 5.14+). A write past it
//!   fails with `EDQUOT` in the partition; the rest of the filesystem is untouched.
//! * **Measured** otherwise: the node walks the partition (no link followed, one filesystem,
//!   hard links counted once, allocated blocks) on every promise round.
//!
//! Either way the built-in promise [`PROMISE`] reports "uses X MiB of its Y MiB disk budget"
//! and fails when over. With project quotas the walk also puts back the project id of any file
//! that left it (the owner of a file may change its project with `chattr -p`): the kernel then
//! counts it again.
//!
//! Kernel paths are parameters: the walk and the accounting run on any directory (unit tests
//! on tempdirs; the enforced path as root on a loop-mounted ext4 image).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};

/// Name of the built-in promise.
pub const PROMISE: &str = "slapos-disk-budget";

/// Deepest nesting measured: a deeper tree is reported as unmeasurable (the promise fails).
const MAX_DEPTH: usize = 256;

/// How a budget is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetMode {
    /// Project quotas (kernel-enforced), plus the measured report.
    Project,
    /// Measured only.
    Measured,
}

/// The disk budgets of a node's partitions.
#[derive(Debug, Clone)]
pub struct Quotas {
    budget: u64,
    mode: BudgetMode,
    key: u32,
}

/// What a walk found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes.
    pub bytes: u64,
    /// Entries whose project id was put back.
    pub restamped: u64,
}

fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, Mode::empty()).map_err(std::io::Error::from)
}

impl Quotas {
    /// Budgets of `mb` MiB under `instance_root`: project quotas when the filesystem has them
    /// on, else measured. `node_key` separates two nodes' projects on one filesystem.
    pub fn detect(instance_root: &Path, mb: u64, node_key: &str) -> Self {
        let key = u32::from_str_radix(node_key.get(..4).unwrap_or("0"), 16).unwrap_or(0) & 0x3FFF;
        let mut q = Self {
            budget: mb.saturating_mul(1 << 20),
            mode: BudgetMode::Measured,
            key,
        };
        match open_dir(instance_root)
            .and_then(|fd| crate::sys::project_usage(&fd, q.project(0)).map(drop))
        {
            Ok(()) => q.mode = BudgetMode::Project,
            Err(e) => tracing::info!(
                "disk budget of {mb} MiB per partition measured, not enforced: no project quota on \
                 `{}` ({e}; ext4 needs `-O project,quota` and `prjquota`)",
                instance_root.display()
            ),
        }
        q
    }

    /// A measured budget of `bytes` (tests).
    pub fn measured(bytes: u64) -> Self {
        Self {
            budget: bytes,
            mode: BudgetMode::Measured,
            key: 0,
        }
    }

    /// How the budget is held.
    pub fn mode(&self) -> BudgetMode {
        self.mode
    }

    /// The budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The project id of partition `index`.
    pub fn project(&self, index: u32) -> u32 {
        0x4000_0000 | (self.key << 16) | (index & 0xFFFF)
    }

    /// Put partition `index` (directory `dir`) under its budget: with project quotas, stamp
    /// the tree and set the limit. Idempotent; a measured budget has nothing to set.
    pub fn apply(&self, dir: &Path, index: u32) -> Result<(), String> {
        if self.mode != BudgetMode::Project {
            return Ok(());
        }
        let projid = self.project(index);
        let fd = open_dir(dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
        crate::sys::set_project_limit(&fd, projid, self.budget)
            .map_err(|e| format!("project quota {projid} on `{}`: {e}", dir.display()))?;
        walk(dir, Some(projid)).map(drop)
    }

    /// Measure partition `index` and tell whether it is within its budget (the built-in
    /// promise's verdict and message). Blocking: run it off the runtime thread.
    pub fn check(&self, dir: &Path, index: u32) -> (bool, String) {
        let projid = (self.mode == BudgetMode::Project).then(|| self.project(index));
        let mib = |b: u64| b.div_ceil(1 << 20);
        match walk(dir, projid) {
            Ok(u) => {
                let mut msg = format!(
                    "uses {} MiB of its {} MiB disk budget",
                    mib(u.bytes),
                    mib(self.budget)
                );
                if u.restamped > 0 {
                    msg.push_str(&format!(
                        " ({} file(s) had left the partition's quota project: put back)",
                        u.restamped
                    ));
                }
                (u.bytes <= self.budget, msg)
            }
            Err(e) => (false, format!("disk usage not measured: {e}")),
        }
    }
}

/// `st_dev` and `st_ino` are `u64` on 64-bit targets but not on all 32-bit ones.
fn wide(x: impl Into<u64>) -> u64 {
    x.into()
}

/// Allocated bytes under `dir` (no link followed, one filesystem, hard links once); with
/// `projid`, every directory and regular file not in that project is put back in it.
pub fn walk(dir: &Path, projid: Option<u32>) -> Result<Usage, String> {
    let fd = open_dir(dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("`{}`: {e}", dir.display()))?;
    let mut w = Walk {
        dev: wide(st.st_dev),
        seen: Vec::new(),
        usage: Usage::default(),
        projid,
    };
    w.restamp(&fd, true, dir)?;
    w.usage.bytes += st.st_blocks as u64 * 512;
    w.dir(fd, dir.to_path_buf(), 0)?;
    Ok(w.usage)
}

struct Walk {
    dev: u64,
    /// Hard-linked inodes counted, sorted.
    seen: Vec<(u64, u64)>,
    usage: Usage,
    projid: Option<u32>,
}

impl Walk {
    fn restamp(&mut self, fd: &OwnedFd, is_dir: bool, path: &Path) -> Result<(), String> {
        let Some(p) = self.projid else {
            return Ok(());
        };
        let x = crate::sys::get_project(fd).map_err(|e| format!("`{}`: {e}", path.display()))?;
        let inherit = !is_dir || x.xflags & crate::sys::FS_XFLAG_PROJINHERIT != 0;
        if x.projid != p || !inherit {
            crate::sys::set_project(fd, p, is_dir)
                .map_err(|e| format!("project id of `{}`: {e}", path.display()))?;
            self.usage.restamped += 1;
        }
        Ok(())
    }

    fn dir(&mut self, fd: OwnedFd, path: PathBuf, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "`{}` is nested deeper than {MAX_DEPTH} directories",
                path.display()
            ));
        }
        let at = |e: nix::errno::Errno| format!("`{}`: {e}", path.display());
        for name in crate::host::partition_fs::names_in(&fd, usize::MAX).map_err(at)? {
            let p = path.join(&name);
            // Gone meanwhile (the partition is running): not counted.
            let Ok(st) =
                nix::sys::stat::fstatat(&fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            if wide(st.st_dev) != self.dev {
                continue;
            }
            let ty = st.st_mode & SFlag::S_IFMT.bits();
            if st.st_nlink > 1 && ty != SFlag::S_IFDIR.bits() {
                let id = (wide(st.st_dev), wide(st.st_ino));
                match self.seen.binary_search(&id) {
                    Ok(_) => continue,
                    Err(i) => self.seen.insert(i, id),
                }
            }
            self.usage.bytes += st.st_blocks as u64 * 512;
            if ty == SFlag::S_IFDIR.bits() {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let Ok(sub) = nix::fcntl::openat(&fd, name.as_os_str(), flags, Mode::empty())
                else {
                    continue;
                };
                self.restamp(&sub, true, &p)?;
                self.dir(sub, p, depth + 1)?;
            } else if ty == SFlag::S_IFREG.bits() && self.projid.is_some() {
                let flags = OFlag::O_RDONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_NOCTTY
                    | OFlag::O_CLOEXEC;
                if let Ok(f) = nix::fcntl::openat(&fd, name.as_os_str(), flags, Mode::empty()) {
                    self.restamp(&f, false, &p)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn measures_without_following_links_and_counts_hard_links_once() {
        if crate::util::emulated_32bit_listing(
            "measures_without_following_links_and_counts_hard_links_once",
        ) {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1u8; 4 << 20]).unwrap();
        let empty = walk(d.path(), None).unwrap().bytes;
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(d.path().join("a/b/f"), d.path().join("a/g")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), d.path().join("flink")).unwrap();
        let used = walk(d.path(), None).unwrap().bytes - empty;
        assert!((1 << 20..2 << 20).contains(&used), "{used}");

        let q = Quotas::measured(3 << 20);
        let (ok, msg) = q.check(d.path(), 0);
        assert!(ok, "{msg}");
        assert!(
            msg.starts_with("uses 2 MiB of its 3 MiB disk budget"),
            "{msg}"
        );
        std::fs::write(d.path().join("more"), vec![1u8; 3 << 20]).unwrap();
        let (ok, msg) = q.check(d.path(), 0);
        assert!(!ok && msg.contains("of its 3 MiB"), "{msg}");
    }

    #[test]
    fn project_ids_are_distinct_per_node_and_partition() {
        let mut a = Quotas::measured(1);
        a.key = 0x1234 & 0x3FFF;
        let mut b = a.clone();
        b.key = 0x0042;
        assert_ne!(a.project(0), b.project(0));
        assert_ne!(a.project(0), a.project(1));
        assert_eq!(a.project(3) & 0xC000_0000, 0x4000_0000);
    }

    /// Unmounts (and so detaches the loop device) when dropped.
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    /// The enforced path for real, as root: a loop-mounted ext4 image with project quotas.
    #[test]
    fn project_quota_is_enforced_on_a_loop_mounted_ext4() {
        if !slapos_test_support::gate::privileged(
            "project_quota_is_enforced_on_a_loop_mounted_ext4",
        ) {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("fs.img");
        let mnt = d.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let run = |cmd: &mut std::process::Command| cmd.output().map(|o| (o.status.success(), o));
        let made = run(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "project,quota"])
            .arg(&img));
        let mounted = made.as_ref().is_ok_and(|m| m.0)
            && run(std::process::Command::new("mount")
                .args(["-o", "loop,prjquota"])
                .arg(&img)
                .arg(&mnt))
            .is_ok_and(|m| m.0);
        if !mounted {
            // Not a privilege question: the kernel must have CONFIG_QUOTA and CONFIG_QFMT_V2
            // (ext4's `quota` feature), which some CI kernels lack.
            eprintln!(
                "SKIP: cannot mount an ext4 image with project quotas here (mkfs: {made:?}); \
                 see dmesg: a kernel without CONFIG_QFMT_V2 refuses the `quota` feature"
            );
            return;
        }
        let _m = Mounted(mnt.clone());
        let inst = mnt.join("inst");
        let part = inst.join("slappart0");
        std::fs::create_dir_all(&part).unwrap();
        std::os::unix::fs::chown(&part, Some(65534), Some(65534)).unwrap();
        std::fs::write(part.join("before"), vec![1u8; 1 << 20]).unwrap();
        let q = Quotas::detect(&inst, 4, "abcd");
        assert_eq!(q.mode(), BudgetMode::Project);
        q.apply(&part, 0).unwrap();
        // The existing file was put in the project with the directory.
        let f = std::fs::File::open(part.join("before")).unwrap();
        assert_eq!(crate::sys::get_project(&f).unwrap().projid, q.project(0));
        // A partition user writing 8 MiB stops at its 4 MiB.
        let out = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=1M", "count=8"])
            .arg(format!("of={}", part.join("fill").display()))
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(!out.status.success(), "dd went past the budget");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("quota"), "{err}");
        let used = crate::sys::project_usage(&f, q.project(0)).unwrap();
        assert!(used <= 4 << 20, "{used}");
        // A file moved out of the project (`chattr -p`) is put back by the check.
        crate::sys::set_project(&f, 0, false).unwrap();
        let (_, msg) = q.check(&part, 0);
        assert!(
            msg.contains("of its 4 MiB") && msg.contains("put back"),
            "{msg}"
        );
        assert_eq!(crate::sys::get_project(&f).unwrap().projid, q.project(0));
    }
}
