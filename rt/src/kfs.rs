//! Kernel-file helpers over `std::fs`: every failure becomes an [`Error`] naming the operation,
//! the path and (for writes) the value. Also the `/proc/self/mountinfo` parser.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a file, `None` when it does not exist (optional kernel features, fake trees).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `value` in one `write(2)`, as cgroup and procfs files expect. Does not create or
/// truncate in a way kernel files would mind (kernel files ignore O_TRUNC); creates the file in
/// fake trees.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let err = |source| Error::Write {
        path: path.to_owned(),
        value: value.trim().to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// How long [`write_settling`] keeps retrying.
pub(crate) const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Writes like [`write`], retrying on EINVAL/EBUSY until [`SETTLE`] has passed. For writes that
/// follow an `rmdir` of a sibling or child cgroup: the kernel takes the removed group offline
/// asynchronously, and until then its RT budget still counts against the parent and its
/// exclusive CPUs still block the siblings (measured: an immediate `cpu.rt_runtime_us` write to
/// the parent fails with EINVAL, the same write succeeds a few ms later).
pub(crate) fn write_settling(path: &Path, value: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        match write(path, value) {
            Err(Error::Write { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::EBUSY)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Writes only when the current content differs (idempotent re-apply leaves kernel files alone).
pub(crate) fn write_if_changed(path: &Path, value: &str) -> Result<bool> {
    if read_opt(path)?.is_some_and(|cur| cur.trim() == value.trim()) {
        return Ok(false);
    }
    write(path, value)?;
    Ok(true)
}

/// Creates one directory; `true` when it was created, `false` when it existed.
pub(crate) fn mkdir(path: &Path) -> Result<bool> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(Error::Dir {
            op: "create directory",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes a cgroup directory; a missing one is fine. In a fake tree the regular files we wrote
/// are removed first (cgroupfs has no removable files, so this never touches a real cgroup's
/// content: `remove_file` on cgroupfs fails and the error is reported by `rmdir`).
pub(crate) fn rmdir_cgroup(path: &Path) -> Result<()> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            if is_fake_dir(path) {
                if let Ok(entries) = fs::read_dir(path) {
                    for entry in entries.flatten() {
                        if entry.file_type().is_ok_and(|t| t.is_file()) {
                            let _ = fs::remove_file(entry.path());
                        }
                    }
                }
                return fs::remove_dir(path).map_err(|source| Error::Dir {
                    op: "remove cgroup",
                    path: path.to_owned(),
                    source,
                });
            }
            Err(Error::Dir {
                op: "remove cgroup",
                path: path.to_owned(),
                source: first,
            })
        }
    }
}

/// True when `path` is on an ordinary filesystem (a fake tree), not cgroupfs/cgroup2fs.
fn is_fake_dir(path: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable storage of the
        // right type; statfs only writes into it.
        let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return false;
        }
        // SAFETY: statfs returned 0, so it initialised the whole struct.
        let st = unsafe { st.assume_init() };
        const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
        const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
        #[allow(clippy::unnecessary_cast)]
        let magic = st.f_type as i64;
        magic != CGROUP_SUPER_MAGIC && magic != CGROUP2_SUPER_MAGIC
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        true
    }
}

/// Immediate subdirectories of `path` (names), sorted; empty when `path` does not exist.
pub(crate) fn subdirs(path: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Dir {
                op: "list directory",
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Dir {
            op: "list directory",
            path: path.to_owned(),
            source,
        })?;
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Some(name) = entry.file_name().to_str()
        {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Pids listed in a `tasks` / `cgroup.procs` / `cgroup.threads` file; a missing file is empty.
pub(crate) fn read_pids(path: &Path) -> Result<Vec<u32>> {
    let Some(text) = read_opt(path)? else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| Error::Parse {
                what: "pid",
                path: path.to_owned(),
                value: l.to_owned(),
            })
        })
        .collect()
}

/// One line of `/proc/self/mountinfo` (only the fields rt uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Mount point (octal escapes decoded).
    pub mount_point: PathBuf,
    /// Filesystem type (`cgroup`, `cgroup2`, `tmpfs`…).
    pub fstype: String,
    /// Super options (for cgroup v1: the controllers, e.g. `rw,cpu,cpuacct`).
    pub super_options: String,
}

/// Parses mountinfo text (`proc(5)`): fields 5 (mount point), then after the `-` separator the
/// filesystem type and super options.
pub(crate) fn parse_mountinfo(text: &str, path: &Path) -> Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || Error::Parse {
            what: "mountinfo line",
            path: path.to_owned(),
            value: line.to_owned(),
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-").ok_or_else(bad)?;
        if sep < 6 || fields.len() < sep + 4 {
            return Err(bad());
        }
        mounts.push(Mount {
            mount_point: PathBuf::from(unescape(fields[4])),
            fstype: fields[sep + 1].to_owned(),
            super_options: fields[sep + 3].to_owned(),
        });
    }
    Ok(mounts)
}

/// Decodes the `\040`-style octal escapes of mountinfo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parses_v1_v2_and_escapes() {
        let text = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n\
                    41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw\n";
        let m = parse_mountinfo(text, Path::new("mi")).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].fstype, "cgroup");
        assert_eq!(m[1].super_options, "rw,cpu,cpuacct");
        assert_eq!(m[2].mount_point, PathBuf::from("/sys/fs/cgroup/uni fied"));
        let e = parse_mountinfo("garbage line\n", Path::new("mi")).unwrap_err();
        assert!(e.to_string().contains("mountinfo line"), "{e}");
    }

    #[test]
    fn write_if_changed_skips_equal_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cpuset.cpus");
        assert!(write_if_changed(&p, "1").unwrap());
        assert!(!write_if_changed(&p, "1\n").unwrap());
        assert!(write_if_changed(&p, "2").unwrap());
        assert_eq!(read(&p).unwrap(), "2");
    }

    #[test]
    fn errors_name_path_and_value() {
        let e = write(Path::new("/nonexistent-dir/x/cpu.max"), "max 100000").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("`max 100000`") && msg.contains("/nonexistent-dir/x/cpu.max"),
            "{msg}"
        );
        let e = read(&std::env::temp_dir()).unwrap_err();
        assert!(e.to_string().starts_with("failed to read"), "{e}");
    }

    #[test]
    fn pids_and_subdirs() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("tasks"), "12\n34\n").unwrap();
        assert_eq!(read_pids(&dir.path().join("tasks")).unwrap(), vec![12, 34]);
        assert!(read_pids(&dir.path().join("missing")).unwrap().is_empty());
        fs::create_dir(dir.path().join("b")).unwrap();
        fs::create_dir(dir.path().join("a")).unwrap();
        assert_eq!(subdirs(dir.path()).unwrap(), vec!["a", "b"]);
        assert!(mkdir(&dir.path().join("c")).unwrap());
        assert!(!mkdir(&dir.path().join("c")).unwrap());
        fs::write(dir.path().join("c/cpu.max"), "max").unwrap();
        rmdir_cgroup(&dir.path().join("c")).unwrap();
        assert!(!dir.path().join("c").exists());
        rmdir_cgroup(&dir.path().join("c")).unwrap();
    }
}
