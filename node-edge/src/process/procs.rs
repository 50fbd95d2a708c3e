//! Process groups: signalling, pid records that survive a node restart, orphan clean-up.
//!
//! Every process the node starts (service, promise, build step) leads its own process group
//! (`setpgid(0, 0)` via `process_group(0)`), so a stop reaches its whole tree. A service's pid
//! and its start time (field 22 of `/proc/<pid>/stat`) are recorded in a pid file; after a node
//! crash the next node kills the recorded group only if a process with that pid *and* start time
//! still exists (a recycled pid is left alone). `/proc` is a parameter for tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::host::partition_fs::{FsError, PartitionFs};

/// Send `sig` to process group `pgid`. A group that no longer exists is not an error.
pub fn signal_group(pgid: i32, sig: Signal) -> std::io::Result<()> {
    if pgid <= 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// True while a live (not zombie) process of group `pgid` exists.
///
/// `kill(-pgid, 0)` alone is not enough: a killed grandchild re-parented to an init that does
/// not reap (some containers) stays a zombie in the group forever. So, when the group exists,
/// `<proc_root>/*/stat` is scanned for a member that is not a zombie.
pub fn group_alive(proc_root: &Path, pgid: i32) -> bool {
    if pgid <= 1 || killpg(Pid::from_raw(pgid), None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return true;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        // Fields 3 (state), 4 (ppid), 5 (pgrp).
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("Z");
        let pgrp = f.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != "Z" && state != "X"
    })
}

/// Start time (clock ticks since boot) of `pid`, read from `<proc_root>/<pid>/stat`.
pub fn start_time(proc_root: &Path, pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); start time is field 22 → index 19 here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What is recorded about a running service group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidRecord {
    /// Leader pid (= process group id).
    pub pid: i32,
    /// Its start time, to tell it from a recycled pid.
    pub start_time: u64,
}

impl PidRecord {
    /// Record `pid` as seen in `proc_root` now.
    pub fn capture(proc_root: &Path, pid: i32) -> Option<Self> {
        start_time(proc_root, pid).map(|start_time| Self { pid, start_time })
    }

    /// True when the recorded process still runs (same pid and start time).
    pub fn is_running(&self, proc_root: &Path) -> bool {
        start_time(proc_root, self.pid) == Some(self.start_time)
    }
}

/// Directory of a partition's pid files, relative to the partition.
pub const PID_DIR: &str = ".slapos/run";

/// Largest pid file read (a record is ~40 bytes).
const PID_FILE_MAX: u64 = 4096;

/// At most this many pid files are looked at in a partition.
const PID_FILES_MAX: usize = 1024;

fn pid_file(service: &str) -> PathBuf {
    Path::new(PID_DIR).join(format!("{service}.pid"))
}

/// Write the pid file of a service into the partition `fs` (best effort: a failure is logged
/// by the caller).
pub fn write_pid_file(fs: &PartitionFs, service: &str, rec: &PidRecord) -> Result<(), FsError> {
    let body = serde_json::to_vec(rec).map_err(|e| FsError::Io {
        op: "encode",
        path: fs.path(pid_file(service)),
        source: std::io::Error::other(e),
    })?;
    fs.write_atomic(pid_file(service), &body, None)
}

/// Remove the pid file of a service.
pub fn remove_pid_file(fs: &PartitionFs, service: &str) {
    let _ = fs.remove_file(pid_file(service));
}

/// Real uid of `pid` (the `Uid:` line of `<proc_root>/<pid>/status`).
pub fn process_uid(proc_root: &Path, pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Kill every group recorded in the partition `fs` that still runs (TERM, then KILL after
/// `grace`), and remove the pid files. Returns the pids that were found running.
///
/// The records are read through [`PartitionFs`] (no link followed, a regular file of the
/// partition, at most 4 KiB). For an isolated partition a recorded leader is killed only when
/// it runs as the partition's uid: the pid files live in a directory its user can write, so a
/// forged record must not make the node kill anything but the partition's own processes.
pub async fn kill_orphans(proc_root: &Path, fs: &PartitionFs, grace: Duration) -> Vec<i32> {
    let owner = fs.owner().map(|i| i.uid);
    let names = fs.list(PID_DIR, PID_FILES_MAX).unwrap_or_default();
    let mut killed = Vec::new();
    for name in names {
        let p = Path::new(PID_DIR).join(&name);
        if p.extension().is_none_or(|x| x != "pid") {
            continue;
        }
        let rec = fs
            .read(&p, PID_FILE_MAX)
            .ok()
            .and_then(|b| serde_json::from_slice::<PidRecord>(&b).ok());
        let rec = rec.filter(|r| r.is_running(proc_root));
        if let (Some(r), Some(uid)) = (rec, owner)
            && process_uid(proc_root, r.pid) != Some(uid)
        {
            tracing::warn!(pid = r.pid, file = %fs.path(&p).display(), "ignoring a pid record of a process that is not the partition's");
            let _ = fs.remove_file(&p);
            continue;
        }
        if let Some(rec) = rec {
            tracing::warn!(pid = rec.pid, file = %fs.path(&p).display(), "killing a service group left by a previous node");
            let _ = signal_group(rec.pid, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            while group_alive(proc_root, rec.pid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = signal_group(rec.pid, Signal::SIGKILL);
            killed.push(rec.pid);
        }
        let _ = fs.remove_file(&p);
    }
    killed
}

/// Kills a process group when dropped, unless disarmed (a build step abandoned by a shutdown).
#[derive(Debug)]
pub struct GroupGuard(pub Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = signal_group(pgid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parses_names_with_spaces_and_parens() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("42");
        std::fs::create_dir(&p).unwrap();
        // Fields 3..22: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itrealvalue starttime.
        std::fs::write(
            p.join("stat"),
            "42 (a b) (c)) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 98765 0 0",
        )
        .unwrap();
        assert_eq!(start_time(d.path(), 42), Some(98765));
        assert_eq!(start_time(d.path(), 43), None);
        let rec = PidRecord::capture(d.path(), 42).unwrap();
        assert!(rec.is_running(d.path()));
        let recycled = PidRecord {
            pid: 42,
            start_time: 1,
        };
        assert!(!recycled.is_running(d.path()));
    }

    #[test]
    fn own_start_time_is_readable_on_the_real_proc() {
        let me = std::process::id() as i32;
        assert!(start_time(Path::new("/proc"), me).is_some());
    }

    #[test]
    fn refuses_to_signal_init_or_everyone() {
        assert!(signal_group(1, Signal::SIGTERM).is_err());
        assert!(signal_group(0, Signal::SIGTERM).is_err());
        assert!(!group_alive(Path::new("/proc"), 0));
    }

    #[tokio::test]
    async fn orphans_are_killed_only_when_the_record_matches() {
        if crate::util::emulated_32bit_listing("orphans_are_killed_only_when_the_record_matches") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let fs = PartitionFs::new(d.path(), None);
        let mut child = std::process::Command::new("sleep");
        std::os::unix::process::CommandExt::process_group(&mut child, 0);
        let mut child = child.arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        // Reap it as soon as it dies, as init would for a real orphan.
        let reaper = std::thread::spawn(move || child.wait().unwrap());
        let rec = PidRecord::capture(Path::new("/proc"), pid).unwrap();
        write_pid_file(&fs, "svc", &rec).unwrap();
        // A record whose start time does not match is a recycled pid: left alone.
        write_pid_file(
            &fs,
            "other",
            &PidRecord {
                pid,
                start_time: rec.start_time + 1,
            },
        )
        .unwrap();
        // A record of a process that is not the owner's is left alone.
        let me = process_uid(Path::new("/proc"), pid).unwrap();
        let id = |uid: u32| crate::host::isolation::Identity { uid, gid: 0 };
        let other = PartitionFs::new(d.path(), Some(id(me.wrapping_add(1))));
        // Seen as another partition's files (another owner), the records are refused: nothing
        // is killed.
        let killed = kill_orphans(Path::new("/proc"), &other, Duration::from_secs(1)).await;
        assert!(killed.is_empty());
        write_pid_file(&fs, "svc", &rec).unwrap();
        let killed = kill_orphans(Path::new("/proc"), &fs, Duration::from_secs(5)).await;
        assert_eq!(killed, [pid]);
        let status = reaper.join().unwrap();
        assert!(!status.success());
        assert_eq!(
            std::fs::read_dir(d.path().join(PID_DIR)).unwrap().count(),
            0
        );
    }
}
