//! A minimal writer of the cpio "newc" format, the format the Linux kernel unpacks as initramfs
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry is a 110-byte ASCII header (`070701` then 13 fields of 8 hex digits: ino, mode,
//! uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check),
//! the NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes. The archive ends
//! with an entry named `TRAILER!!!`. Owners are root, mtimes 0, so the output only depends on
//! the inputs. The kernel does not create missing parent directories, so [`Cpio`] adds them.
//! No compression: the kernel accepts an uncompressed archive and the boards boot it as is.

use std::collections::BTreeSet;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// An archive being built. Paths are relative (`bin/slapos-node`); a leading `/` is stripped.
#[derive(Debug, Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Cpio {
        Cpio::default()
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            u32::try_from(data.len()).expect("cpio newc entries are < 4 GiB"),
            0,
            0,
            0,
            0,
            u32::try_from(name.len() + 1).expect("short name"),
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            let dir = path[..end].to_owned();
            if !dir.is_empty() && self.dirs.insert(dir.clone()) {
                self.entry(&dir, S_IFDIR | 0o755, &[]);
            }
            end += 1;
        }
    }

    /// A directory (and its parents).
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        self.parents(path);
        if self.dirs.insert(path.to_owned()) {
            self.entry(path, S_IFDIR | 0o755, &[]);
        }
    }

    /// A regular file with permission bits `perm` (e.g. `0o755`).
    pub fn file(&mut self, path: &str, data: &[u8], perm: u32) {
        let path = path.trim_start_matches('/');
        self.parents(path);
        self.entry(path, S_IFREG | (perm & 0o7777), data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_start_matches('/');
        self.parents(path);
        self.entry(path, S_IFLNK | 0o777, target.as_bytes());
    }

    /// The archive bytes, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader written from the format description, to check what the writer produced.
    fn read(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let total = b.len();
        loop {
            assert_eq!(&b[..6], b"070701", "magic at offset {}", total - b.len());
            let field = |i: usize| {
                let s = std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap() as usize
            };
            let (mode, size, namesize) = (field(1), field(6), field(11));
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .unwrap()
                .to_owned();
            assert_eq!(b[110 + namesize - 1], 0, "name NUL");
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = b[data_at..data_at + size].to_vec();
            b = &b[(data_at + size).next_multiple_of(4)..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push((name, mode as u32, data));
        }
    }

    #[test]
    fn entries_round_trip_with_parents_and_padding() {
        let mut c = Cpio::new();
        c.file("/init", b"\x7fELF12345", 0o755);
        c.file("lib/modules/a.ko", b"abc", 0o644);
        c.dir("proc");
        c.dir("lib/modules");
        c.symlink("bin/sh", "/init");
        let bytes = c.finish();
        assert!(bytes.len().is_multiple_of(4));
        let e = read(&bytes);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "init",
                "lib",
                "lib/modules",
                "lib/modules/a.ko",
                "proc",
                "bin",
                "bin/sh"
            ]
        );
        assert_eq!(e[0].1, S_IFREG | 0o755);
        assert_eq!(e[0].2, b"\x7fELF12345");
        assert_eq!(e[1].1, S_IFDIR | 0o755);
        assert_eq!(e[3].2, b"abc");
        assert_eq!(e[6].1, S_IFLNK | 0o777);
        assert_eq!(e[6].2, b"/init");
    }

    #[test]
    fn header_layout_matches_the_kernel_format() {
        let mut c = Cpio::new();
        c.file("x", b"hi", 0o600);
        let b = c.finish();
        // 6 magic + 13*8 fields; name "x\0" ends at 112 -> data at 112, next entry at 116.
        let expected = "070701\
            00000001\
            00008180\
            00000000\
            00000000\
            00000001\
            00000000\
            00000002\
            00000000\
            00000000\
            00000000\
            00000000\
            00000002\
            00000000";
        assert_eq!(std::str::from_utf8(&b[..110]).unwrap(), expected);
        assert_eq!(&b[110..116], b"x\0hi\0\0");
        assert_eq!(&b[116..122], b"070701");
    }
}
