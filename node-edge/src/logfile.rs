//! Size-rotated log files for service output.
//!
//! `name.log` is written until the next write would take it past `max_bytes`; then
//! `name.log.(N-1)` → `name.log.N`, …, `name.log` → `name.log.1`, and a fresh `name.log` is
//! opened. At most `keep` rotated files exist (`keep = 0`: the log is truncated instead). A
//! single write larger than `max_bytes` still goes in whole (a line is never split).
//! Writes are plain blocking `write(2)` calls of small chunks (pipe reads of ≤ 8 KiB).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only log with size rotation.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingLog {
    /// Open (append to) `path`.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        let path = path.into();
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes,
            keep,
            file,
            size,
        })
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.keep).rev() {
            let from = numbered(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path)?;
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

    #[test]
    fn rotates_and_keeps_at_most_n_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log/svc.log");
        let mut log = RotatingLog::open(&p, 10, 2).unwrap();
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
        RotatingLog::open(&p, 8, 1)
            .unwrap()
            .write(b"12345")
            .unwrap();
        let mut log = RotatingLog::open(&p, 8, 1).unwrap();
        log.write(b"6789").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "6789");
        assert_eq!(std::fs::read_to_string(numbered(&p, 1)).unwrap(), "12345");
    }

    #[test]
    fn keep_zero_truncates() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("svc.log");
        let mut log = RotatingLog::open(&p, 4, 0).unwrap();
        log.write(b"abc").unwrap();
        log.write(b"def").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "def");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
