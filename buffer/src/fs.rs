//! The filesystem seam: every file operation of the log goes through [`Fs`].
//!
//! [`RealFs`] is the production side (positioned I/O, `fdatasync`, `flock`, `statvfs`).
//! [`MemFs`] is an in-memory filesystem that models what survives a power cut — file contents
//! as of their last `sync_data`, directory entries as of their last `sync_dir`, with torn,
//! zero-filled or sector-mixed unsynced tails — and can inject ENOSPC and EIO.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// An open file.
pub trait FsFile: Send + Sync {
    /// Reads at `off`; returns bytes read (0 at EOF).
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `off`.
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Current length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
}

/// A held lock; released on drop.
pub trait FsLock: Send + Sync {}

/// Filesystem operations used by the log.
pub trait Fs: Send + Sync + fmt::Debug {
    /// `mkdir -p`.
    fn create_dir_all(&self, p: &Path) -> io::Result<()>;
    /// Opens read-write, creating the file if `create`.
    fn open(&self, p: &Path, create: bool) -> io::Result<Box<dyn FsFile>>;
    /// Opens read-only.
    fn open_read(&self, p: &Path) -> io::Result<Box<dyn FsFile>>;
    /// `unlink`.
    fn remove_file(&self, p: &Path) -> io::Result<()>;
    /// `rename`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// File names in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// `fsync` of a directory.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Bytes available to unprivileged users on the filesystem holding `dir`.
    fn free_bytes(&self, dir: &Path) -> io::Result<u64>;
    /// Takes an exclusive advisory lock on `p` (created if missing); fails if held.
    fn lock(&self, p: &Path) -> io::Result<Box<dyn FsLock>>;
}

// ---------------------------------------------------------------------------------------------
// Real filesystem.

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile(std::fs::File);

impl FsFile for RealFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.0, buf, off)
    }
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, off)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

struct RealLock(#[allow(dead_code)] std::fs::File);
impl FsLock for RealLock {}

impl Fs for RealFs {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir_all(p)
    }
    fn open(&self, p: &Path, create: bool) -> io::Result<Box<dyn FsFile>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(p)?;
        Ok(Box::new(RealFile(f)))
    }
    fn open_read(&self, p: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(RealFile(std::fs::File::open(p)?)))
    }
    fn remove_file(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_file(p)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(dir)? {
            if let Ok(n) = e?.file_name().into_string() {
                v.push(n);
            }
        }
        Ok(v)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        statvfs_free(dir)
    }
    fn lock(&self, p: &Path) -> io::Result<Box<dyn FsLock>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)?;
        match f.try_lock() {
            Ok(()) => Ok(Box::new(RealLock(f))),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "held by another process",
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// `statvfs(path)`: `f_bavail * f_frsize`.
pub fn statvfs_free(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: all-zero bytes are a valid `statvfs` (plain integers).
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string alive for the call, `st` a valid out pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

// ---------------------------------------------------------------------------------------------
// In-memory filesystem with power-cut semantics and fault injection.

#[derive(Default, Debug)]
struct MemFile {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Default, Debug)]
struct MemState {
    /// Current namespace: path → file.
    names: BTreeMap<PathBuf, Arc<Mutex<MemFile>>>,
    /// Namespace as of the last `sync_dir` of each entry's directory.
    durable_names: BTreeMap<PathBuf, Arc<Mutex<MemFile>>>,
    dirs: HashSet<PathBuf>,
    locks: HashSet<PathBuf>,
    /// Total bytes allowed across files (ENOSPC beyond).
    capacity: Option<u64>,
    /// The next N `sync_data` calls fail with EIO.
    fail_syncs: u32,
    /// The next N writes fail with EIO.
    fail_writes: u32,
    /// The next N writes to files whose name starts with the prefix fail with EIO.
    fail_writes_to: Option<(String, u32)>,
    /// Counters: (syncs, writes, bytes written).
    syncs: u64,
    writes: u64,
    bytes_written: u64,
}

impl MemState {
    fn used(&self) -> u64 {
        self.names.values().map(|f| lock(f).data.len() as u64).sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An in-memory filesystem for tests; clones share state.
#[derive(Clone, Default)]
pub struct MemFs {
    st: Arc<Mutex<MemState>>,
}

impl fmt::Debug for MemFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemFs")
    }
}

/// How unsynced data fares in a [`MemFs::power_cut`].
#[derive(Clone, Copy, Debug)]
pub enum CutMode {
    /// Every unsynced byte and directory change is lost.
    DropUnsynced,
    /// Random torn states: a random prefix of appended data, random zero tails, per-512-byte
    /// sector old/new mixes of overwritten data.
    Torn(u64),
}

struct MemHandle {
    st: Arc<Mutex<MemState>>,
    file: Arc<Mutex<MemFile>>,
    writable: bool,
    name: String,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}
fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

impl FsFile for MemHandle {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let f = lock(&self.file);
        let off = off as usize;
        if off >= f.data.len() {
            return Ok(0);
        }
        let n = buf.len().min(f.data.len() - off);
        buf[..n].copy_from_slice(&f.data[off..off + n]);
        Ok(n)
    }
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let mut st = lock(&self.st);
        if st.fail_writes > 0 {
            st.fail_writes -= 1;
            return Err(eio());
        }
        if let Some((prefix, n)) = &mut st.fail_writes_to
            && *n > 0
            && self.name.starts_with(prefix.as_str())
        {
            *n -= 1;
            return Err(eio());
        }
        let used = st.used();
        let mut f = lock(&self.file);
        let off = off as usize;
        let end = off + buf.len();
        let grow = end.saturating_sub(f.data.len()) as u64;
        let mut n = buf.len();
        let mut err = None;
        if let Some(cap) = st.capacity
            && used + grow > cap
        {
            // Partial write up to the capacity, then ENOSPC (as a real write can).
            let room = cap.saturating_sub(used) as usize;
            n = (f.data.len() + room).saturating_sub(off).min(buf.len());
            err = Some(enospc());
        }
        if off + n > f.data.len() {
            f.data.resize(off + n, 0);
        }
        f.data[off..off + n].copy_from_slice(&buf[..n]);
        st.writes += 1;
        st.bytes_written += n as u64;
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.file).data.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let st = lock(&self.st);
        let used = st.used();
        let mut f = lock(&self.file);
        let grow = (len as usize).saturating_sub(f.data.len()) as u64;
        if let Some(cap) = st.capacity
            && used + grow > cap
        {
            return Err(enospc());
        }
        f.data.resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut st = lock(&self.st);
        if st.fail_syncs > 0 {
            st.fail_syncs -= 1;
            return Err(eio());
        }
        st.syncs += 1;
        let mut f = lock(&self.file);
        f.durable = f.data.clone();
        Ok(())
    }
}

struct MemLock {
    st: Arc<Mutex<MemState>>,
    path: PathBuf,
}
impl FsLock for MemLock {}
impl Drop for MemLock {
    fn drop(&mut self) {
        lock(&self.st).locks.remove(&self.path);
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", p.display()),
    )
}

impl MemFs {
    /// An empty filesystem.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits total file bytes (ENOSPC beyond); `None` for unlimited.
    pub fn set_capacity(&self, cap: Option<u64>) {
        lock(&self.st).capacity = cap;
    }

    /// Makes the next `n` `sync_data` calls fail with EIO.
    pub fn fail_next_syncs(&self, n: u32) {
        lock(&self.st).fail_syncs = n;
    }

    /// Makes the next `n` writes fail with EIO.
    pub fn fail_next_writes(&self, n: u32) {
        lock(&self.st).fail_writes = n;
    }

    /// Makes the next `n` writes to files whose name starts with `prefix` fail with EIO (e.g.
    /// `seg-`: a crash between a cursor update and the next segment write).
    pub fn fail_next_writes_to(&self, prefix: &str, n: u32) {
        lock(&self.st).fail_writes_to = Some((prefix.to_string(), n));
    }

    /// (sync_data calls, write calls, bytes written) so far.
    pub fn io_counts(&self) -> (u64, u64, u64) {
        let st = lock(&self.st);
        (st.syncs, st.writes, st.bytes_written)
    }

    /// Total bytes in files now.
    pub fn used_bytes(&self) -> u64 {
        lock(&self.st).used()
    }

    /// Current contents of a file.
    pub fn read_file(&self, p: &Path) -> Option<Vec<u8>> {
        lock(&self.st).names.get(p).map(|f| lock(f).data.clone())
    }

    /// Replaces a file's contents (durably), for corruption tests.
    pub fn write_file(&self, p: &Path, data: &[u8]) {
        let mut st = lock(&self.st);
        let f = Arc::new(Mutex::new(MemFile {
            data: data.to_vec(),
            durable: data.to_vec(),
        }));
        st.names.insert(p.to_path_buf(), f.clone());
        st.durable_names.insert(p.to_path_buf(), f);
    }

    /// Simulates a power cut: afterwards only what was synced (and, in `Torn` mode, random
    /// parts of what was not) remains. Locks are released. Handles opened before keep pointing
    /// at the old contents and must not be used.
    pub fn power_cut(&self, mode: CutMode) {
        let mut st = lock(&self.st);
        let mut rng = match mode {
            CutMode::DropUnsynced => None,
            CutMode::Torn(seed) => Some(SplitMix(seed)),
        };
        let mut names = BTreeMap::new();
        for (p, f) in &st.durable_names {
            let f = lock(f);
            let data = match rng.as_mut() {
                None => f.durable.clone(),
                Some(r) => torn(&f.durable, &f.data, r),
            };
            names.insert(
                p.clone(),
                Arc::new(Mutex::new(MemFile {
                    durable: data.clone(),
                    data,
                })),
            );
        }
        st.durable_names = names.clone();
        st.names = names;
        st.locks.clear();
    }
}

/// A small deterministic PRNG (SplitMix64) for torn states.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn torn(durable: &[u8], current: &[u8], r: &mut SplitMix) -> Vec<u8> {
    let (d, c) = (durable.len(), current.len());
    let len = if c >= d {
        d + r.below((c - d) as u64 + 1) as usize
    } else if r.below(2) == 0 {
        c
    } else {
        d
    };
    let mut out = vec![0u8; len];
    // Bytes both versions have: per 512-byte sector, old or new.
    let common = d.min(c).min(len);
    for s in (0..common).step_by(512) {
        let e = (s + 512).min(common);
        let src = if r.below(2) == 0 { durable } else { current };
        out[s..e].copy_from_slice(&src[s..e]);
    }
    // Beyond: from whichever version is long enough; the appended tail may be zeros.
    for (i, b) in out.iter_mut().enumerate().skip(common) {
        *b = if i < c {
            current[i]
        } else if i < d {
            durable[i]
        } else {
            0
        };
    }
    if len > d && r.below(3) == 0 {
        let z = d + r.below((len - d) as u64 + 1) as usize;
        out[z..].fill(0);
    }
    out
}

impl Fs for MemFs {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        lock(&self.st).dirs.insert(p.to_path_buf());
        Ok(())
    }
    fn open(&self, p: &Path, create: bool) -> io::Result<Box<dyn FsFile>> {
        let mut st = lock(&self.st);
        let file = match st.names.get(p) {
            Some(f) => f.clone(),
            None if create => {
                let f = Arc::new(Mutex::new(MemFile::default()));
                st.names.insert(p.to_path_buf(), f.clone());
                f
            }
            None => return Err(not_found(p)),
        };
        Ok(Box::new(MemHandle {
            st: self.st.clone(),
            file,
            writable: true,
            name: file_name(p),
        }))
    }
    fn open_read(&self, p: &Path) -> io::Result<Box<dyn FsFile>> {
        let st = lock(&self.st);
        let file = st.names.get(p).cloned().ok_or_else(|| not_found(p))?;
        Ok(Box::new(MemHandle {
            st: self.st.clone(),
            file,
            writable: false,
            name: file_name(p),
        }))
    }
    fn remove_file(&self, p: &Path) -> io::Result<()> {
        lock(&self.st)
            .names
            .remove(p)
            .map(|_| ())
            .ok_or_else(|| not_found(p))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = lock(&self.st);
        let f = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), f);
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = lock(&self.st);
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.st);
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        let entries: Vec<_> = st
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, f)| (p.clone(), f.clone()))
            .collect();
        st.durable_names.extend(entries);
        Ok(())
    }
    fn free_bytes(&self, _dir: &Path) -> io::Result<u64> {
        let st = lock(&self.st);
        Ok(match st.capacity {
            Some(c) => c.saturating_sub(st.used()),
            None => u64::MAX / 2,
        })
    }
    fn lock(&self, p: &Path) -> io::Result<Box<dyn FsLock>> {
        let mut st = lock(&self.st);
        if !st.locks.insert(p.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "held by another process",
            ));
        }
        Ok(Box::new(MemLock {
            st: self.st.clone(),
            path: p.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_cut_keeps_only_synced_state() {
        let fs = MemFs::new();
        let d = Path::new("/d");
        let a = fs.open(&d.join("a"), true).unwrap();
        a.write_all_at(b"hello", 0).unwrap();
        a.sync_data().unwrap();
        fs.sync_dir(d).unwrap();
        a.write_all_at(b" world", 5).unwrap();
        let b = fs.open(&d.join("b"), true).unwrap();
        b.write_all_at(b"x", 0).unwrap();
        b.sync_data().unwrap(); // data synced, directory entry not
        fs.power_cut(CutMode::DropUnsynced);
        assert_eq!(fs.read_file(&d.join("a")).unwrap(), b"hello");
        assert!(fs.read_file(&d.join("b")).is_none());
        assert_eq!(fs.list(d).unwrap(), vec!["a".to_string()]);
    }

    #[test]
    fn capacity_gives_partial_write_then_enospc() {
        let fs = MemFs::new();
        fs.set_capacity(Some(10));
        let f = fs.open(Path::new("/f"), true).unwrap();
        let e = f.write_all_at(&[1u8; 16], 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(f.len().unwrap(), 10);
        assert_eq!(fs.free_bytes(Path::new("/")).unwrap(), 0);
    }

    #[test]
    fn real_lock_is_exclusive_and_statvfs_works() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("LOCK");
        let l = RealFs.lock(&p).unwrap();
        assert_eq!(
            RealFs.lock(&p).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
        drop(l);
        RealFs.lock(&p).unwrap();
        assert!(RealFs.free_bytes(dir.path()).unwrap() > 0);
    }
}
