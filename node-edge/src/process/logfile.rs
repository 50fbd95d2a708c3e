//! Size-rotated log files for service output.
//!
//! `name.log` is written until the next write would take it past `max_bytes`; then
//! `name.log.(N-1)` → `name.log.N`, …, `name.log` → `name.log.1`, and a fresh `name.log` is
//! opened. At most `keep` rotated files exist (`keep = 0`: the log is truncated instead). A
//! single write larger than `max_bytes` still goes in whole (a line is never split).
//! Writes are plain blocking `write(2)` calls of small chunks (pipe reads of ≤ 8 KiB).
//!
//! The log lives in a partition the node does not trust: it is opened, rotated and re-opened
//! through [`PartitionFs`] (the partition's filesystem identity, no link followed, a regular
//! file of the partition only), and written through the open fd.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::host::partition_fs::{FsError, PartitionFs};

/// An append-only log with size rotation.
#[derive(Debug)]
pub struct RotatingLog {
    fs: PartitionFs,
    rel: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn io(e: FsError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl RotatingLog {
    /// Open (append to) `rel` in `fs`.
    pub fn open(
        fs: PartitionFs,
        rel: impl Into<PathBuf>,
        max_bytes: u64,
        keep: u32,
    ) -> Result<Self, FsError> {
        let rel = rel.into();
        let file = fs.open_append(&rel)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            fs,
            rel,
            max_bytes,
            keep,
            file,
            size,
        })
    }

    /// The live file's path.
    pub fn path(&self) -> PathBuf {
        self.fs.path(&self.rel)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.keep).rev() {
            let from = numbered(&self.rel, n);
            if self.fs.exists(&from) {
                self.fs
                    .rename(&from, numbered(&self.rel, n + 1))
                    .map_err(io)?;
            }
        }
        self.fs
            .rename(&self.rel, numbered(&self.rel, 1))
            .map_err(io)?;
        self.file = self.fs.open_append(&self.rel).map_err(io)?;
        self.size = 0;
        Ok(())
    }

    /// Append `data`, rotating first if it would not fit.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + data.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    /// Append a line written by the node itself (`[node] …`).
    pub fn note(&mut self, line: &str) {
        let _ = self.write(format!("[node] {line}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(d: &tempfile::TempDir) -> PartitionFs {
        PartitionFs::new(d.path(), None)
    }

    #[test]
    fn rotates_and_keeps_at_most_n_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log/svc.log");
        let mut log = RotatingLog::open(fs(&d), "log/svc.log", 10, 2).unwrap();
        for i in 0..7 {
            log.write(format!("line{i}\n").as_bytes()).unwrap();
        }
        // 6 bytes per line, 10 max: one line per file.
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "line6\n");
        assert_eq!(std::fs::read_to_string(numbered(&p, 1)).unwrap(), "line5\n");
        assert_eq!(std::fs::read_to_string(numbered(&p, 2)).unwrap(), "line4\n");
        assert!(!numbered(&p, 3).exists());
    }

    #[test]
    fn reopening_continues_the_size_count() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("svc.log");
        RotatingLog::open(fs(&d), "svc.log", 8, 1)
            .unwrap()
            .write(b"12345")
            .unwrap();
        let mut log = RotatingLog::open(fs(&d), "svc.log", 8, 1).unwrap();
        log.write(b"6789").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "6789");
        assert_eq!(std::fs::read_to_string(numbered(&p, 1)).unwrap(), "12345");
    }

    #[test]
    fn keep_zero_truncates() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("svc.log");
        let mut log = RotatingLog::open(fs(&d), "svc.log", 4, 0).unwrap();
        log.write(b"abc").unwrap();
        log.write(b"def").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "def");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_planted_link_or_fifo_is_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("svc.log")).unwrap();
        assert!(RotatingLog::open(fs(&d), "svc.log", 4, 1).is_err());
        std::fs::remove_file(d.path().join("svc.log")).unwrap();
        // A link planted where the rotation will re-open the log: the rename moves the link,
        // and the fresh log is a new file.
        let mut log = RotatingLog::open(fs(&d), "svc.log", 4, 1).unwrap();
        log.write(b"abc").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("svc.log.1")).unwrap();
        log.write(b"defg").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(d.path().join("svc.log")).unwrap(), b"defg");
    }
}
