//! Small helpers shared by the modules: safe relative paths, atomic writes, octal modes, log
//! tails, clock.
//!
//! Submodule [`backoff`]: capped exponential backoff, pure (service restarts, promise and pass
//! retries, the master link).

pub mod backoff;

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Check that `p` is a relative path that stays inside its base: no root, no `..`, no empty
/// components, and not under a reserved name (anything starting with `.slapos`). Returns the
/// normalised path (`./` components dropped).
pub fn safe_relative(p: &str) -> Result<PathBuf, String> {
    if p.is_empty() {
        return Err("path must not be empty".into());
    }
    if p.contains('\0') {
        return Err(format!("path {p:?} contains a NUL byte"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("path {p:?} must not contain `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("path {p:?} must be relative"));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("path {p:?} names no file"));
    }
    if out
        .components()
        .next()
        .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with(".slapos"))
    {
        return Err(format!("path {p:?} is reserved for the node (`.slapos*`)"));
    }
    Ok(out)
}

/// Parse an octal file mode such as `"0755"` or `"644"` (at most `0o7777`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(m),
        _ => Err(format!(
            "mode {s:?} is not an octal file mode like \"0644\""
        )),
    }
}

/// Write `data` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. A reader sees the old or the new content, never a mix.
pub fn atomic_write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    atomic_write_mode(path, data, None)
}

/// [`atomic_write`], the file created with exactly `mode` when given (a key is never readable by
/// others, not even briefly), else with the default mode and the umask.
pub fn atomic_write_mode(path: &Path, data: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = match mode {
            Some(m) => {
                let _ = std::fs::remove_file(&tmp);
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(m)
                    .open(&tmp)?;
                // The umask may have cleared bits of `mode`: set it exactly.
                f.set_permissions(std::fs::Permissions::from_mode(m))?;
                f
            }
            None => std::fs::File::create(&tmp)?,
        };
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// The last `max` bytes of `text`, cut at a character boundary, with a marker when cut.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Largest error message the node reports to its master (an install error with its log tail,
/// a pass error): a release or a partition cannot make the master store megabytes.
pub const MAX_REPORTED_ERROR: usize = 4096;

/// `msg` cut to at most [`MAX_REPORTED_ERROR`] bytes: its head and its tail (where a log's
/// last lines are) around a `…[N bytes cut]…` marker, at character boundaries.
pub fn cap_message(msg: &str) -> String {
    if msg.len() <= MAX_REPORTED_ERROR {
        return msg.to_owned();
    }
    let marker = format!("\n…[{} bytes cut]…\n", msg.len());
    let room = MAX_REPORTED_ERROR.saturating_sub(marker.len());
    let mut head = room / 2;
    while !msg.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = msg.len() - (room - head);
    while !msg.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}{marker}{}", &msg[..head], &msg[tail..])
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Remove everything inside `dir` (not `dir` itself). Missing `dir` is fine.
pub fn empty_dir(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// Tests only: true (with the reason printed) under qemu-user emulating a 32-bit target, where
/// directory listings of the 64-bit host's ext4 fail with `EOVERFLOW` (64-bit hash offsets do
/// not fit the guest's `getdents`); a 32-bit kernel on real hardware has no such offsets.
#[cfg(test)]
pub fn emulated_32bit_listing(test: &str) -> bool {
    let emulated =
        std::env::var_os("SLAPOS_EMULATED").is_some() && cfg!(target_pointer_width = "32");
    if emulated {
        eprintln!(
            "{test}: skipped under qemu-user on a 32-bit target (directory listing EOVERFLOW)"
        );
    }
    emulated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(
            safe_relative("./etc//a.conf").unwrap(),
            Path::new("etc/a.conf")
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            ".",
            ".slapos/x",
            ".slapos-resource",
        ] {
            assert!(safe_relative(bad).is_err(), "{bad:?}");
        }
        assert!(safe_relative("etc/.slapos").is_ok());
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0755").unwrap(), 0o755);
        assert_eq!(parse_mode("0o600").unwrap(), 0o600);
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("rwx").is_err());
        assert!(parse_mode("").is_err());
    }

    #[test]
    fn reported_messages_are_capped_head_and_tail() {
        assert_eq!(cap_message("short"), "short");
        let long = format!("reason: boom\n{}\nlast line é", "é".repeat(400_000));
        let c = cap_message(&long);
        assert!(c.len() <= MAX_REPORTED_ERROR, "{}", c.len());
        assert!(c.starts_with("reason: boom"), "{c}");
        assert!(c.ends_with("last line é"), "{c}");
        assert!(c.contains("bytes cut"), "{c}");
    }

    #[test]
    fn tail_cuts_at_char_boundaries() {
        assert_eq!(tail("abc", 5), "abc");
        assert_eq!(tail("héllo", 4), "…llo");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/f.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.json"]);
    }

    #[test]
    fn empty_dir_keeps_the_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("f"), "x").unwrap();
        empty_dir(d.path()).unwrap();
        assert!(d.path().is_dir());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        empty_dir(&d.path().join("missing")).unwrap();
    }
}
