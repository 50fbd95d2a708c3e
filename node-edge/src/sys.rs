//! The raw system calls node-edge makes that neither std nor `nix` wraps: each `unsafe` block is
//! one call, its result turned into an `io::Result` at once.
//!
//! * child-side steps between `fork` and `exec` (async-signal-safe: no allocation, no lock):
//!   [`write_raw`] (join a cgroup), [`drop_to`] (take a partition's uid/gid), [`harden`]
//!   (`no_new_privs`, parent-death signal, parent check);
//! * [`kill_all_as`]: a forked helper that becomes a user and sends `SIGKILL` to every process
//!   that user may signal;
//! * project quotas: [`get_project`] / [`set_project`] (`FS_IOC_FSGETXATTR` /
//!   `FS_IOC_FSSETXATTR`) and [`set_project_limit`] (`quotactl_fd`, Linux 5.14+);
//! * TAP interfaces (feature `net`): [`tun_set_iff`] and [`tun_set`] (the `TUNSET*` ioctls).
//!
//! Calls `nix` wraps are made through it elsewhere (sockets, `setfsuid`, `geteuid`, …).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// A uid/gid pair processes are switched to before exec (the partition's user, the software
/// user); [`crate::host::isolation`] decides which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Write `data` to the file `path` with plain `open`/`write`/`close` (async-signal-safe: for
/// `pre_exec`, e.g. `0` to a `cgroup.procs` file to join that group).
pub fn write_raw(path: &CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string; open has no other precondition.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) })?;
    // SAFETY: `data` is a valid buffer of `data.len()` bytes; `fd` was just opened.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let res = if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    res
}

/// Take `id`'s gid and uid, with no supplementary groups (async-signal-safe).
pub fn drop_to(id: Identity) -> io::Result<()> {
    // SAFETY: setgroups with a zero count never reads the (null) list.
    check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: plain syscall with an integer argument.
    check(unsafe { libc::setgid(id.gid) })?;
    // SAFETY: plain syscall with an integer argument.
    check(unsafe { libc::setuid(id.uid) })?;
    Ok(())
}

/// The last steps of every partition process before `exec`, after its credentials are final
/// (a credential change clears the parent-death signal): `PR_SET_NO_NEW_PRIVS` (setuid and
/// file capabilities no longer raise privileges), `PR_SET_PDEATHSIG(SIGKILL)` (the process dies
/// with the node's thread that forked it), then a check that the parent is still `parent`: a
/// node that died between `fork` and the `prctl` would not deliver the signal.
pub fn harden(parent: u32) -> io::Result<()> {
    nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)?;
    if nix::unistd::getppid().as_raw() as u32 != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Fork a helper that takes `id` (uid, gid, no groups) and sends `SIGKILL` to every process it
/// may signal (`kill(-1, …)`: every process whose real or saved uid is `id.uid`, except itself),
/// then exits; waits for it. One `kill(-1)` is atomic against `fork`: a child created during the
/// signal walk is either listed or its parent already has the signal pending, which makes the
/// fork fail. Refuses uid 0.
pub fn kill_all_as(id: Identity) -> io::Result<()> {
    if id.uid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to kill every process of uid 0",
        ));
    }
    // SAFETY: the child only makes async-signal-safe system calls (setgroups, setgid, setuid,
    // kill, _exit) before it exits; it never returns into Rust code.
    let pid = check(unsafe { libc::fork() })?;
    if pid == 0 {
        let code = match drop_to(id) {
            // SAFETY: plain syscall; -1 = every process the (now unprivileged) caller may signal.
            Ok(()) if unsafe { libc::kill(-1, libc::SIGKILL) } == 0 => 0,
            // ESRCH: nothing to kill.
            Ok(()) => 0,
            Err(_) => 1,
        };
        // SAFETY: ends the forked child without running destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => {
                return Err(io::Error::other(format!(
                    "the kill helper could not take uid {} (exit {c})",
                    id.uid
                )));
            }
            Ok(_) => return Err(io::Error::other("the kill helper was killed")),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `struct fsxattr` (linux/fs.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FsXattr {
    /// `FS_XFLAG_*`.
    pub xflags: u32,
    extsize: u32,
    nextents: u32,
    /// Project id.
    pub projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// New files and directories inherit the directory's project id.
pub const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

nix::ioctl_read!(fs_get_xattr, b'X', 31, FsXattr);
nix::ioctl_write_ptr!(fs_set_xattr, b'X', 32, FsXattr);

/// The extended attributes (project id, flags) of the open file `fd`.
pub fn get_project(fd: impl AsFd) -> io::Result<FsXattr> {
    let mut x = FsXattr::default();
    // SAFETY: `x` is a valid, writable `struct fsxattr` for the ioctl to fill.
    unsafe { fs_get_xattr(fd.as_fd().as_raw_fd(), &mut x) }.map_err(io::Error::from)?;
    Ok(x)
}

/// Set project id `projid` on the open file `fd` (and `FS_XFLAG_PROJINHERIT` when `inherit`,
/// for directories), keeping its other attributes.
pub fn set_project(fd: impl AsFd, projid: u32, inherit: bool) -> io::Result<()> {
    let mut x = get_project(fd.as_fd())?;
    let flags = if inherit {
        x.xflags | FS_XFLAG_PROJINHERIT
    } else {
        x.xflags
    };
    if x.projid == projid && x.xflags == flags {
        return Ok(());
    }
    x.projid = projid;
    x.xflags = flags;
    // SAFETY: `x` is a valid `struct fsxattr` read just before, only two fields changed.
    unsafe { fs_set_xattr(fd.as_fd().as_raw_fd(), &x) }.map_err(io::Error::from)?;
    Ok(())
}

const PRJQUOTA: libc::c_int = 2;

fn qcmd(cmd: libc::c_int) -> libc::c_int {
    (cmd << 8) | PRJQUOTA
}

/// `quotactl_fd(fd, QCMD(cmd, PRJQUOTA), projid, q)`.
fn project_quotactl(
    fd: impl AsFd,
    cmd: libc::c_int,
    projid: u32,
    q: &mut libc::dqblk,
) -> io::Result<()> {
    // SAFETY: quotactl_fd(fd, cmd, id, addr) with a valid fd and a valid, writable dqblk (the
    // layout both Q_SETQUOTA and Q_GETQUOTA take).
    let r = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fd.as_fd().as_raw_fd(),
            qcmd(cmd),
            projid,
            q as *mut libc::dqblk,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An all-zero `dqblk`.
fn dqblk() -> libc::dqblk {
    // SAFETY: dqblk is plain integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Set the block hard and soft limits of project `projid` on the filesystem holding `fd` to
/// `bytes` (rounded up to KiB; 0 removes the limit). `ENOSYS`: a kernel before 5.14;
/// `ESRCH`/`ENOTSUP`: project quotas are not enabled on that filesystem.
pub fn set_project_limit(fd: impl AsFd, projid: u32, bytes: u64) -> io::Result<()> {
    let mut q = dqblk();
    let kib = bytes.div_ceil(1024);
    q.dqb_bhardlimit = kib;
    q.dqb_bsoftlimit = kib;
    q.dqb_valid = libc::QIF_BLIMITS;
    project_quotactl(fd, libc::Q_SETQUOTA, projid, &mut q)
}

/// Space used by project `projid` on the filesystem holding `fd` (bytes), as the kernel counts
/// it.
pub fn project_usage(fd: impl AsFd, projid: u32) -> io::Result<u64> {
    let mut q = dqblk();
    project_quotactl(fd, libc::Q_GETQUOTA, projid, &mut q)?;
    Ok(q.dqb_curspace)
}

/// A `TUNSET*` ioctl of `/dev/net/tun` that takes an integer (`linux/if_tun.h`).
#[cfg(feature = "net")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunSet {
    /// `TUNSETPERSIST`: the interface outlives the descriptor.
    Persist,
    /// `TUNSETOWNER`: the uid that may attach to it.
    Owner,
    /// `TUNSETGROUP`: the gid that may attach to it.
    Group,
}

#[cfg(feature = "net")]
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// `TUNSETIFF` on the open `/dev/net/tun` `tun`: attach it to the interface `ifr` names (a
/// `struct ifreq`: 16-byte name, then the flags), created when missing.
#[cfg(feature = "net")]
pub fn tun_set_iff(tun: impl AsFd, ifr: &mut [u8; 40]) -> io::Result<()> {
    // SAFETY: TUNSETIFF reads and writes a struct ifreq; `ifr` is 40 bytes, its size.
    check(unsafe { libc::ioctl(tun.as_fd().as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) })
        .map(drop)
}

/// One integer `TUNSET*` ioctl on the open `/dev/net/tun` `tun`.
#[cfg(feature = "net")]
pub fn tun_set(tun: impl AsFd, what: TunSet, arg: libc::c_ulong) -> io::Result<()> {
    let req: libc::c_ulong = match what {
        TunSet::Persist => 0x4004_54cb,
        TunSet::Owner => 0x4004_54cc,
        TunSet::Group => 0x4004_54ce,
    };
    // SAFETY: these requests take an integer argument, no pointer.
    check(unsafe { libc::ioctl(tun.as_fd().as_raw_fd(), req as _, arg) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsxattr_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
    }

    #[test]
    fn kill_all_as_refuses_root() {
        let e = kill_all_as(Identity { uid: 0, gid: 0 }).unwrap_err();
        assert!(e.to_string().contains("uid 0"), "{e}");
    }
}
