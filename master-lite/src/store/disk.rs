//! The database's files on disk: their modes, the space reserve that keeps the master writing
//! when its filesystem fills up, and what a full disk looks like to callers.
//!
//! # Modes
//!
//! The database holds every instance's parameters and connection values (passwords, keys):
//! it is created 0600 (SQLite gives its `-wal` and `-shm` files the database file's mode) in a
//! directory created 0700. At every open, a database file, `-wal` or `-shm` that the group or
//! others may read is refused with the `chmod` to run, like the CA key
//! ([`prepare_files`] with `fix = false`); `standalone`, which owns its directory, tightens
//! them instead (`fix = true`). A directory that others may write (without the sticky bit) is
//! refused: they could swap the journal files under the master.
//!
//! # The reserve
//!
//! In WAL mode every write first appends to the `-wal` file, and a checkpoint copies pages
//! into the database file, which grows only when it has no free page left. A hostile or
//! runaway process that fills the filesystem would then make every write fail. The store
//! therefore keeps [`RESERVE_BYTES`] of space that only it can use, *inside its own files*: free
//! pages in the database (SQLite's freelist, reused before the file grows) and a `-wal` file
//! kept at its high-water size (it is rewritten from its start after each checkpoint, not
//! truncated). [`Reserve::top_up`] refills it while the filesystem has room; writes on a full
//! filesystem then keep succeeding until the reserve itself is used up, and only then answer
//! 507 "disk full" ([`is_disk_full`]), with reads unaffected. Temporary tables and sorts stay in
//! memory (`temp_store = MEMORY`), so no statement needs a new file.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode};

use super::error::OpenError;

/// Space kept in the database's own files for writes on a full filesystem (free pages; the
/// `-wal` file holds about as much again).
pub const RESERVE_BYTES: u64 = 8 << 20;

/// True when `e` means the filesystem (or the database's size limit) is full. SQLite's unix
/// VFS turns ENOSPC on a write into `SQLITE_FULL`.
pub fn is_disk_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::DiskFull)
}

/// The database file and its two companions.
fn companions(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut s = db.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

/// Make the database's files private before SQLite opens them (see the module doc): create the
/// directory 0700 and the file 0600 when missing; refuse (or, with `fix`, tighten to 0600) an
/// existing file the group or others may read; refuse a directory others may write.
pub fn prepare_files(db: &Path, fix: bool) -> Result<(), OpenError> {
    let insecure = |path: &Path, reason: String| OpenError::InsecureFile {
        path: path.to_owned(),
        reason,
    };
    // Creating the directory on a full filesystem is the same condition as SQLite finding no
    // room: say so, whichever step meets it first.
    let io = |op: &'static str, path: &Path, source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::StorageFull {
            OpenError::DiskFull {
                path: db.to_owned(),
            }
        } else {
            OpenError::Io {
                op,
                path: path.to_owned(),
                source,
            }
        }
    };
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io("create the database directory", &dir, e))?;
    }
    let md = std::fs::metadata(&dir).map_err(|e| io("inspect", &dir, e))?;
    let mode = md.permissions().mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(insecure(
            &dir,
            format!(
                "the database directory is writable by other users (mode {:o}): run `chmod 700 {}`",
                mode & 0o7777,
                dir.display()
            ),
        ));
    }
    if !db.exists() {
        // Created here with its final mode: SQLite then gives the same mode to -wal and -shm.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create the database file", db, e)),
        }
    }
    for f in companions(db) {
        let md = match std::fs::symlink_metadata(&f) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("inspect", &f, e)),
        };
        if md.file_type().is_symlink() {
            return Err(insecure(
                &f,
                "is a symbolic link: the database files must be plain files".into(),
            ));
        }
        let mode = md.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            continue;
        }
        if fix {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io("chmod 600", &f, e))?;
            tracing::warn!(path = %f.display(), "database file was mode {mode:o}: made 0600");
        } else {
            return Err(insecure(
                &f,
                format!(
                    "other users may read it (mode {mode:o}): it holds every instance's \
                     parameters; run `chmod 600 {}`",
                    f.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The space reserve of one database (see the module doc).
#[derive(Debug, Clone)]
pub struct Reserve {
    /// The database file (`None` in memory: no reserve).
    path: Option<PathBuf>,
    /// Bytes of free pages to keep.
    target: u64,
}

impl Reserve {
    /// A reserve of `target` bytes for the database at `path` (`None`: in memory, nothing kept).
    pub fn new(path: Option<PathBuf>, target: u64) -> Self {
        Self { path, target }
    }

    /// Free bytes in the database's free pages now.
    pub fn held(conn: &Connection) -> rusqlite::Result<u64> {
        let pages: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(u64::try_from(pages.saturating_mul(size)).unwrap_or(0))
    }

    /// Free bytes on the database's filesystem for unprivileged users.
    // `u64::from` converts nothing on 64-bit targets, but fsblkcnt_t and c_ulong are u32 on
    // 32-bit glibc (armv7).
    #[allow(clippy::useless_conversion)]
    fn fs_free(&self) -> Option<u64> {
        let dir = self.path.as_ref()?.parent()?;
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let st = nix::sys::statvfs::statvfs(dir).ok()?;
        Some(u64::from(st.blocks_available()) * u64::from(st.fragment_size()))
    }

    /// Refill the reserve to its target when it is below half of it and the filesystem has
    /// room for it twice over (never consume the last free space of the box). Returns the bytes
    /// held afterwards. Runs as one transaction of its own on the database thread.
    pub fn top_up(&self, conn: &Connection) -> rusqlite::Result<u64> {
        let held = Self::held(conn)?;
        if self.path.is_none() || held >= self.target / 2 {
            return Ok(held);
        }
        let want = self.target - held;
        if self
            .fs_free()
            .is_none_or(|free| free < 2 * want + self.target)
        {
            return Ok(held);
        }
        // Allocated then deleted in one transaction: the pages end up on the freelist (the
        // database grows by them at the next checkpoint) and the -wal file keeps their frames'
        // size for reuse.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             INSERT INTO space_reserve (filler) VALUES (zeroblob({want}));
             DELETE FROM space_reserve;
             COMMIT;"
        ))
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
        // Move the pages into the database file now (PASSIVE: never waits, never truncates
        // the -wal file).
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Self::held(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_are_private_and_loose_ones_refused_or_fixed() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("sub/master.db");
        prepare_files(&db, false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(db.parent().unwrap()), 0o700);
        // A -wal left readable by an older master.
        let wal = companions(&db)[1].clone();
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = prepare_files(&db, false).unwrap_err().to_string();
        assert!(
            e.contains("master.db-wal") && e.contains("chmod 600"),
            "{e}"
        );
        prepare_files(&db, true).unwrap();
        assert_eq!(mode(&wal), 0o600);
        // A directory others may write.
        std::fs::set_permissions(db.parent().unwrap(), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        let e = prepare_files(&db, true).unwrap_err().to_string();
        assert!(e.contains("writable by other users"), "{e}");
    }

    #[test]
    fn the_reserve_is_refilled_on_disk_and_absent_in_memory() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("r.db");
        let conn = Connection::open(&db).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch("CREATE TABLE space_reserve (filler BLOB)")
            .unwrap();
        let r = Reserve::new(Some(db.clone()), 1 << 20);
        assert_eq!(Reserve::held(&conn).unwrap(), 0);
        let held = r.top_up(&conn).unwrap();
        assert!(held >= 1 << 20, "{held}");
        let wal = std::fs::metadata(&companions(&db)[1]).unwrap().len();
        assert!(wal >= 1 << 20, "the -wal keeps the frames' size: {wal}");
        // Nothing to do while at least half is held.
        assert_eq!(r.top_up(&conn).unwrap(), held);
        let mem = Connection::open_in_memory().unwrap();
        assert_eq!(Reserve::new(None, 1 << 20).top_up(&mem).unwrap(), 0);
    }
}
