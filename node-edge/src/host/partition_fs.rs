//! The node touching files inside a partition (or any tree it does not trust, such as a release
//! being built): every read and write goes through [`PartitionFs`].
//!
//! A partition's processes run as its own user and own its directory, so anything under it may
//! be swapped, at any moment, for a symlink, a hard link to a file of someone else, a FIFO or a
//! device node. A root node that opened such a path would read `/etc/shadow` into a promise
//! message or publish its own `desired.json` as connection parameters. So every operation here:
//!
//! * runs with the partition's **filesystem identity** (`setfsuid`/`setfsgid` on the calling
//!   thread, [`crate::host::isolation::as_fs_identity`]): the kernel checks permissions as the
//!   partition, never as root;
//! * resolves the path **beneath the root without following any link**: `openat2` with
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, or, where the kernel has no
//!   `openat2` (before 5.6: `ENOSYS`), a component-by-component `openat(O_NOFOLLOW)` walk from
//!   the root's directory fd. A symlink anywhere on the path is refused ([`FsError::Link`]);
//! * opens with `O_NONBLOCK | O_CLOEXEC | O_NOCTTY`, then `fstat`s the fd: anything but a regular
//!   file is refused ([`FsError::NotRegular`]) before a byte is read or written, so a FIFO
//!   planted in place of a log, a promise output or a pid file never blocks the node;
//! * checks, for an isolated partition, that the file belongs to the partition's uid
//!   ([`FsError::Foreign`]): a hard link to a file of another user is refused;
//! * caps every read ([`FsError::TooLarge`]).
//!
//! Writes are atomic where a reader may look (temporary file created `O_EXCL`, `fchmod` on the
//! fd, fsync, `renameat` in the same directory fd); outputs the node streams into (service logs,
//! promise outputs) are opened once and written through the fd. Paths given here are relative
//! to the root and must not hold `..` (they come from [`crate::util::safe_relative`] or are the
//! node's own constants).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::host::isolation::{Identity, as_fs_identity};

/// Something the node was asked to do inside a partition was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A system call failed.
    #[error("failed to {op} `{}`: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what (absolute).
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A symlink (or a path leaving the root) was met while resolving the path.
    #[error("`{}`: a symlink on the path (or a path leaving the partition): refused", path.display())]
    Link {
        /// The path.
        path: PathBuf,
    },
    /// The path names a FIFO, a device, a socket or a directory.
    #[error("`{}` is {kind}, not a regular file: refused", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The file belongs to another user (e.g. a hard link to someone else's file).
    #[error("`{}` belongs to uid {uid}, not to the partition (uid {owner}): refused", path.display())]
    Foreign {
        /// The path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// The partition's uid.
        owner: u32,
    },
    /// The file is larger than the read cap.
    #[error("`{}` is larger than {max} bytes: refused", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
}

impl FsError {
    /// True when the path (or a parent) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A directory tree the node reads and writes without following links, as its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFs {
    root: PathBuf,
    owner: Option<Identity>,
}

/// Set once `openat2` answered ENOSYS: the component walk is used from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// What `fstat` says a file is, for messages.
fn kind_of(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symlink",
        _ => "an unknown file type",
    }
}

/// True when `st` is a regular file.
pub fn is_regular(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
}

/// `rel` as plain names (no root, no `..`; `.` dropped), or `None`.
fn names(rel: &Path) -> Option<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Open the directory `name` in `dir`, never through a symlink (`ELOOP` for one).
fn subdir(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, name, flags, Mode::empty()).map_err(|e| {
        let link = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits());
        if e == Errno::ENOTDIR && link {
            Errno::ELOOP
        } else {
            e
        }
    })
}

/// Open `rel` beneath the directory `dir` without following any symlink (see the module doc).
/// `flags` gets `O_CLOEXEC`; a symlink on the path gives `ELOOP`.
pub fn open_beneath(dir: &OwnedFd, rel: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let parts = names(rel).ok_or(Errno::EXDEV)?;
    let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let Some((last, parents)) = parts.split_last() else {
        // The root itself.
        return nix::fcntl::openat(dir, ".", flags, mode);
    };
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new().flags(flags).mode(mode).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        let rel: PathBuf = parts.iter().collect();
        for _ in 0..3 {
            match nix::fcntl::openat2(dir, rel.as_path(), how) {
                Err(Errno::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                // A concurrent rename somewhere on the system: the kernel asks to retry.
                Err(Errno::EAGAIN) => continue,
                r => return r,
            }
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            return Err(Errno::EAGAIN);
        }
    }
    let mut cur: Option<OwnedFd> = None;
    for p in parents {
        cur = Some(subdir(cur.as_ref().unwrap_or(dir), p)?);
    }
    nix::fcntl::openat(cur.as_ref().unwrap_or(dir), *last, flags, mode)
}

/// The names in the open directory `dir` (at most `max`; `.` and `..` left out), listed
/// through a duplicate of the fd (the caller keeps `dir` for `openat`).
pub fn names_in(dir: &OwnedFd, max: usize) -> nix::Result<Vec<OsString>> {
    let listing = dir
        .try_clone()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    let mut d = nix::dir::Dir::from_fd(listing)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = OsStr::from_bytes(e.file_name().to_bytes());
        if n != "." && n != ".." {
            out.push(n.to_os_string());
        }
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// Read at most `max` bytes from the end of `file` (from its start when shorter), lossily
/// decoded, with a `…` marker when cut. Reads through the fd, never the path.
pub fn tail_of(file: &File, max: u64) -> String {
    use std::os::unix::fs::FileExt;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    let mut buf = vec![0u8; usize::try_from(len - start).unwrap_or(0)];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], start + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf.truncate(got);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        format!("…{text}")
    } else {
        text
    }
}

impl PartitionFs {
    /// The tree at `root` (a path the node controls), accessed as `owner` (`None`: as the node,
    /// without an ownership check).
    pub fn new(root: impl Into<PathBuf>, owner: Option<Identity>) -> Self {
        Self {
            root: root.into(),
            owner,
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The identity the tree is accessed as.
    pub fn owner(&self) -> Option<Identity> {
        self.owner
    }

    /// The absolute path of `rel`, for messages and for children's arguments.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    fn io(&self, op: &'static str, rel: &Path, e: Errno) -> FsError {
        let path = self.path(rel);
        match e {
            Errno::ELOOP | Errno::EXDEV => FsError::Link { path },
            e => FsError::Io {
                op,
                path,
                source: std::io::Error::from(e),
            },
        }
    }

    fn open_root(&self) -> Result<OwnedFd, FsError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        nix::fcntl::open(&self.root, flags, Mode::empty())
            .map_err(|e| self.io("open", Path::new(""), e))
    }

    /// Run `f` with this tree's filesystem identity.
    fn as_owner<T>(&self, f: impl FnOnce() -> T) -> T {
        as_fs_identity(self.owner, f)
    }

    /// Refuse anything but a regular file of the owner, then clear `O_NONBLOCK`.
    fn checked(&self, rel: &Path, fd: OwnedFd) -> Result<File, FsError> {
        let st = nix::sys::stat::fstat(&fd).map_err(|e| self.io("stat", rel, e))?;
        if !is_regular(&st) {
            return Err(FsError::NotRegular {
                path: self.path(rel),
                kind: kind_of(&st),
            });
        }
        if let Some(o) = self.owner
            && st.st_uid != o.uid
        {
            return Err(FsError::Foreign {
                path: self.path(rel),
                uid: st.st_uid,
                owner: o.uid,
            });
        }
        let fl = nix::fcntl::fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| self.io("fcntl", rel, e))?;
        let fl = OFlag::from_bits_truncate(fl) & !OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, FcntlArg::F_SETFL(fl)).map_err(|e| self.io("fcntl", rel, e))?;
        Ok(File::from(fd))
    }

    /// Open the directory `rel` (the root for an empty path).
    fn dir(&self, root: &OwnedFd, rel: &Path) -> Result<OwnedFd, FsError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        open_beneath(root, rel, flags, Mode::empty()).map_err(|e| self.io("open directory", rel, e))
    }

    /// The parent directory of `rel` (created when `create`) and the last name.
    fn parent(
        &self,
        root: &OwnedFd,
        rel: &Path,
        create: bool,
    ) -> Result<(OwnedFd, OsString), FsError> {
        let parts = names(rel).ok_or_else(|| self.io("resolve", rel, Errno::EXDEV))?;
        let Some((last, parents)) = parts.split_last() else {
            return Err(self.io("resolve", rel, Errno::EINVAL));
        };
        let parent: PathBuf = parents.iter().collect();
        let fd = if create {
            self.mkdirs(root, &parent)?
        } else {
            self.dir(root, &parent)?
        };
        Ok((fd, last.to_os_string()))
    }

    /// `mkdir -p` beneath `root` without following links; returns the last directory.
    fn mkdirs(&self, root: &OwnedFd, rel: &Path) -> Result<OwnedFd, FsError> {
        let parts = names(rel).ok_or_else(|| self.io("resolve", rel, Errno::EXDEV))?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut cur = nix::fcntl::openat(root, ".", flags, Mode::empty())
            .map_err(|e| self.io("open directory", Path::new(""), e))?;
        let mut done = PathBuf::new();
        for p in parts {
            done.push(p);
            match nix::sys::stat::mkdirat(&cur, p, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.io("create directory", &done, e)),
            }
            cur = subdir(&cur, p).map_err(|e| self.io("open directory", &done, e))?;
        }
        Ok(cur)
    }

    /// Create the directory `rel` and its parents (owned by the owner).
    pub fn create_dir_all(&self, rel: impl AsRef<Path>) -> Result<(), FsError> {
        self.as_owner(|| {
            let root = self.open_root()?;
            self.mkdirs(&root, rel.as_ref()).map(drop)
        })
    }

    /// Open the regular file `rel` of the owner for reading.
    pub fn open(&self, rel: impl AsRef<Path>) -> Result<File, FsError> {
        let rel = rel.as_ref();
        self.as_owner(|| {
            let root = self.open_root()?;
            let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
            let fd = open_beneath(&root, rel, flags, Mode::empty())
                .map_err(|e| self.io("open", rel, e))?;
            self.checked(rel, fd)
        })
    }

    /// The whole content of `rel`, refused above `max` bytes.
    pub fn read(&self, rel: impl AsRef<Path>, max: u64) -> Result<Vec<u8>, FsError> {
        let rel = rel.as_ref();
        let f = self.open(rel)?;
        let mut buf = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|source| FsError::Io {
                op: "read",
                path: self.path(rel),
                source,
            })?;
        if buf.len() as u64 > max {
            return Err(FsError::TooLarge {
                path: self.path(rel),
                max,
            });
        }
        Ok(buf)
    }

    /// True when `rel` exists (as anything; links are not followed).
    pub fn exists(&self, rel: impl AsRef<Path>) -> bool {
        let rel = rel.as_ref();
        self.as_owner(|| {
            let Ok(root) = self.open_root() else {
                return false;
            };
            let Ok((dir, name)) = self.parent(&root, rel, false) else {
                return false;
            };
            nix::sys::stat::fstatat(
                &dir,
                name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok()
        })
    }

    /// Open `rel` for appending (and reading back through the fd), created (0644) when missing:
    /// a regular file of the owner.
    pub fn open_append(&self, rel: impl AsRef<Path>) -> Result<File, FsError> {
        let rel = rel.as_ref();
        self.as_owner(|| {
            let root = self.open_root()?;
            let (dir, name) = self.parent(&root, rel, true)?;
            let flags = OFlag::O_RDWR
                | OFlag::O_APPEND
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC;
            let fd = nix::fcntl::openat(
                &dir,
                name.as_os_str(),
                flags,
                Mode::from_bits_truncate(0o644),
            )
            .map_err(|e| self.io("open", rel, e))?;
            self.checked(rel, fd)
        })
    }

    /// A fresh, empty `rel` (whatever was there is unlinked first; never truncated through a
    /// link), created 0644, opened for reading and writing (the node reads back what a child
    /// wrote through this fd, never through the path).
    pub fn create_fresh(&self, rel: impl AsRef<Path>) -> Result<File, FsError> {
        let rel = rel.as_ref();
        self.as_owner(|| {
            let root = self.open_root()?;
            let (dir, name) = self.parent(&root, rel, true)?;
            let flags = OFlag::O_RDWR
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC;
            let mut last = Errno::EEXIST;
            for _ in 0..4 {
                match nix::unistd::unlinkat(
                    &dir,
                    name.as_os_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                ) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(self.io("remove", rel, e)),
                }
                match nix::fcntl::openat(
                    &dir,
                    name.as_os_str(),
                    flags,
                    Mode::from_bits_truncate(0o644),
                ) {
                    Ok(fd) => return Ok(File::from(fd)),
                    // Re-created meanwhile by the partition: unlink again.
                    Err(Errno::EEXIST) => last = Errno::EEXIST,
                    Err(e) => return Err(self.io("create", rel, e)),
                }
            }
            Err(self.io("create", rel, last))
        })
    }

    /// Write `data` to `rel` atomically (temporary file, fsync, rename, fsync of the directory),
    /// creating the parents; the file gets exactly `mode` when given, else 0644 and the umask.
    /// The rename replaces a link planted at `rel` (it is never followed); a directory there is
    /// an error.
    pub fn write_atomic(
        &self,
        rel: impl AsRef<Path>,
        data: &[u8],
        mode: Option<u32>,
    ) -> Result<(), FsError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let rel = rel.as_ref();
        self.as_owner(|| {
            let root = self.open_root()?;
            let (dir, name) = self.parent(&root, rel, true)?;
            let mut tmp = OsString::from(".");
            tmp.push(&name);
            tmp.push(format!(
                ".tmp-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC;
            let create = Mode::from_bits_truncate(mode.unwrap_or(0o644) & 0o777);
            let fd = nix::fcntl::openat(&dir, tmp.as_os_str(), flags, create)
                .map_err(|e| self.io("create", rel, e))?;
            let res = (|| {
                let mut f = File::from(fd);
                if let Some(m) = mode {
                    // The umask may have cleared bits of `mode`: set it exactly, on the fd.
                    nix::sys::stat::fchmod(f.as_fd(), Mode::from_bits_truncate(m & 0o777))
                        .map_err(|e| self.io("chmod", rel, e))?;
                }
                let wr = |source| FsError::Io {
                    op: "write",
                    path: self.path(rel),
                    source,
                };
                f.write_all(data).map_err(wr)?;
                f.sync_all().map_err(wr)?;
                nix::fcntl::renameat(&dir, tmp.as_os_str(), &dir, name.as_os_str())
                    .map_err(|e| self.io("rename into", rel, e))?;
                nix::unistd::fsync(&dir).map_err(|e| self.io("sync the directory of", rel, e))
            })();
            if res.is_err() {
                let _ = nix::unistd::unlinkat(
                    &dir,
                    tmp.as_os_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
            res
        })
    }

    /// Rename `from` to `to` (both relative to the root; the entries themselves, links are
    /// never followed).
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<(), FsError> {
        let (from, to) = (from.as_ref(), to.as_ref());
        self.as_owner(|| {
            let root = self.open_root()?;
            let (fd, fname) = self.parent(&root, from, false)?;
            let (td, tname) = self.parent(&root, to, false)?;
            nix::fcntl::renameat(&fd, fname.as_os_str(), &td, tname.as_os_str())
                .map_err(|e| self.io("rename", from, e))
        })
    }

    /// Remove the file (or link) `rel`; a missing one is fine.
    pub fn remove_file(&self, rel: impl AsRef<Path>) -> Result<(), FsError> {
        let rel = rel.as_ref();
        self.as_owner(|| {
            let root = self.open_root()?;
            let (dir, name) = match self.parent(&root, rel, false) {
                Ok(p) => p,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
            };
            match nix::unistd::unlinkat(
                &dir,
                name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            ) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(self.io("remove", rel, e)),
            }
        })
    }

    /// The names in directory `rel` (at most `max`; `.` and `..` left out). A missing
    /// directory has none.
    pub fn list(&self, rel: impl AsRef<Path>, max: usize) -> Result<Vec<OsString>, FsError> {
        let rel = rel.as_ref();
        self.as_owner(|| {
            let root = self.open_root()?;
            let fd = match self.dir(&root, rel) {
                Ok(fd) => fd,
                Err(e) if e.is_not_found() => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            names_in(&fd, max).map_err(|e| self.io("list", rel, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn tree() -> (tempfile::TempDir, PartitionFs) {
        let d = tempfile::tempdir().unwrap();
        let fs = PartitionFs::new(d.path(), None);
        (d, fs)
    }

    #[test]
    fn reads_regular_files_and_refuses_links_fifos_and_big_files() {
        let (d, fs) = tree();
        fs.write_atomic("etc/a.json", b"{}", None).unwrap();
        assert_eq!(fs.read("etc/a.json", 10).unwrap(), b"{}");
        assert!(matches!(
            fs.read("etc/a.json", 1),
            Err(FsError::TooLarge { .. })
        ));
        assert!(fs.read("etc/missing", 10).unwrap_err().is_not_found());

        let secret = d.path().join("secret");
        std::fs::write(&secret, "s3cret").unwrap();
        // A symlink as the last component, and as a parent directory.
        std::os::unix::fs::symlink(&secret, d.path().join("etc/link")).unwrap();
        std::os::unix::fs::symlink(d.path().join("etc"), d.path().join("dirlink")).unwrap();
        for rel in ["etc/link", "dirlink/a.json"] {
            let e = fs.read(rel, 100).unwrap_err();
            assert!(matches!(e, FsError::Link { .. }), "{rel}: {e}");
            assert!(e.to_string().contains(rel), "{e}");
        }
        // A relative symlink that stays inside is refused too (no link is ever followed).
        std::os::unix::fs::symlink("a.json", d.path().join("etc/inside")).unwrap();
        assert!(matches!(
            fs.read("etc/inside", 100),
            Err(FsError::Link { .. })
        ));
        // `..` never resolves.
        assert!(fs.read("../x", 100).is_err());

        // A FIFO does not block: it is refused at once.
        nix::unistd::mkfifo(&d.path().join("etc/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let e = fs.read("etc/fifo", 100).unwrap_err();
        assert!(
            matches!(e, FsError::NotRegular { kind: "a FIFO", .. }),
            "{e}"
        );
        let e = fs.open_append("etc/fifo").unwrap_err();
        assert!(e.to_string().contains("etc/fifo"), "{e}");
        assert!(matches!(
            fs.read("etc", 100),
            Err(FsError::NotRegular { .. })
        ));
    }

    #[test]
    fn the_walk_fallback_refuses_the_same_paths() {
        let (d, fs) = tree();
        fs.write_atomic("a/b/c", b"x", None).unwrap();
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("l")).unwrap();
        let root = nix::fcntl::open(
            d.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let was = NO_OPENAT2.swap(true, Ordering::Relaxed);
        let ok = open_beneath(&root, Path::new("a/b/c"), OFlag::O_RDONLY, Mode::empty());
        let through = open_beneath(&root, Path::new("l/b/c"), OFlag::O_RDONLY, Mode::empty());
        let last = open_beneath(&root, Path::new("l"), OFlag::O_RDONLY, Mode::empty());
        let up = open_beneath(&root, Path::new("../x"), OFlag::O_RDONLY, Mode::empty());
        NO_OPENAT2.store(was, Ordering::Relaxed);
        assert!(ok.is_ok());
        assert_eq!(through.unwrap_err(), Errno::ELOOP);
        assert_eq!(last.unwrap_err(), Errno::ELOOP);
        assert_eq!(up.unwrap_err(), Errno::EXDEV);
    }

    #[test]
    fn writes_are_atomic_exact_and_never_follow_links() {
        let (d, fs) = tree();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        // A symlink at the target is replaced, not written through.
        std::fs::create_dir_all(d.path().join("srv")).unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("srv/page")).unwrap();
        fs.write_atomic("srv/page", b"new", Some(0o600)).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let md = std::fs::symlink_metadata(d.path().join("srv/page")).unwrap();
        assert!(md.is_file());
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        // A symlinked parent is refused, and nothing is written outside.
        std::os::unix::fs::symlink(outside.path(), d.path().join("out")).unwrap();
        let e = fs.write_atomic("out/x", b"no", None).unwrap_err();
        assert!(matches!(e, FsError::Link { .. }), "{e}");
        assert!(!outside.path().join("x").exists());
        // A directory at the target is an error.
        std::fs::create_dir_all(d.path().join("dir")).unwrap();
        assert!(fs.write_atomic("dir", b"x", None).is_err());
        // No temporary file is left anywhere.
        let names: Vec<_> = std::fs::read_dir(d.path().join("srv")).unwrap().collect();
        assert_eq!(names.len(), 1);
        // create_fresh unlinks a planted link instead of truncating its target.
        std::os::unix::fs::symlink(&victim, d.path().join("srv/out")).unwrap();
        let mut f = fs.create_fresh("srv/out").unwrap();
        f.write_all(b"output").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(d.path().join("srv/out")).unwrap(), b"output");
        assert_eq!(
            tail_of(&File::open(d.path().join("srv/out")).unwrap(), 3),
            "…put"
        );
    }

    #[test]
    fn append_rename_remove_and_list() {
        if crate::util::emulated_32bit_listing("append_rename_remove_and_list") {
            return;
        }
        let (d, fs) = tree();
        let mut f = fs.open_append("var/log/s.log").unwrap();
        f.write_all(b"one\n").unwrap();
        let mut f = fs.open_append("var/log/s.log").unwrap();
        f.write_all(b"two\n").unwrap();
        assert_eq!(fs.read("var/log/s.log", 100).unwrap(), b"one\ntwo\n");
        fs.rename("var/log/s.log", "var/log/s.log.1").unwrap();
        assert!(fs.exists("var/log/s.log.1") && !fs.exists("var/log/s.log"));
        let mut names = fs.list("var/log", 10).unwrap();
        names.sort();
        assert_eq!(names, ["s.log.1"]);
        assert!(fs.list("nope", 10).unwrap().is_empty());
        fs.remove_file("var/log/s.log.1").unwrap();
        fs.remove_file("var/log/s.log.1").unwrap();
        fs.remove_file("no/such/dir/x").unwrap();
        assert_eq!(
            std::fs::read_dir(d.path().join("var/log")).unwrap().count(),
            0
        );
    }

    #[test]
    fn foreign_files_are_refused_for_an_isolated_owner() {
        // Only meaningful (and possible) as root: files of another uid.
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: ownership checks skipped");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let owner = Identity {
            uid: 65534,
            gid: 65534,
        };
        std::os::unix::fs::chown(d.path(), Some(owner.uid), Some(owner.gid)).unwrap();
        let fs = PartitionFs::new(d.path(), Some(owner));
        fs.write_atomic("own", b"mine", None).unwrap();
        assert_eq!(
            std::fs::metadata(d.path().join("own")).unwrap().uid(),
            owner.uid
        );
        assert_eq!(fs.read("own", 10).unwrap(), b"mine");
        // A hard link to a root file (as a kernel without protected_hardlinks would allow).
        let root_file = d.path().join("root-owned");
        std::fs::write(&root_file, "root secret").unwrap();
        std::fs::set_permissions(&root_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::hard_link(&root_file, d.path().join("hard")).unwrap();
        let e = fs.read("hard", 100).unwrap_err();
        assert!(matches!(e, FsError::Foreign { uid: 0, .. }), "{e}");
        assert!(fs.open_append("hard").is_err());
        // A 0600 root file is not even opened: the permission check is the partition's.
        std::fs::set_permissions(&root_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = fs.read("root-owned", 100).unwrap_err();
        assert!(
            matches!(&e, FsError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
            "{e}"
        );
    }
}
