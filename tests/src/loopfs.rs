//! A small real filesystem for tests that need one of their own (a full disk, quotas): an
//! ext4 image in a temporary directory, loop-mounted, unmounted and deleted on drop (root).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted ext4 image. Dropping it unmounts it (lazily if busy) and removes the image.
pub struct LoopFs {
    dir: tempfile::TempDir,
    mnt: PathBuf,
}

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: failed to run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

impl LoopFs {
    /// An ext4 filesystem of `mib` MiB with `mkfs_args` (e.g. `["-m", "0"]` for no blocks
    /// reserved to root, `["-O", "project,quota"]`), mounted with `mount_opts` (`""` for none).
    pub fn new(mib: u64, mkfs_args: &[&str], mount_opts: &str) -> LoopFs {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("fs.img");
        let f = std::fs::File::create(&img).expect("create image");
        f.set_len(mib << 20).expect("size image");
        drop(f);
        run(
            "mkfs.ext4",
            Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .args(mkfs_args)
                .arg(&img),
        );
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        let mut mount = Command::new("mount");
        mount.arg("-o");
        mount.arg(if mount_opts.is_empty() {
            "loop".to_owned()
        } else {
            format!("loop,{mount_opts}")
        });
        run("mount", mount.arg(&img).arg(&mnt));
        LoopFs { dir, mnt }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Fill the filesystem with `name` (written in 1 MiB pieces until ENOSPC, then in 4 KiB
    /// pieces); returns the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.mnt.join(name)).expect("create filler");
        let mut total = 0;
        for size in [1 << 20, 4096] {
            let chunk = vec![0x5a_u8; size];
            while f.write_all(&chunk).is_ok() {
                total += size as u64;
            }
        }
        let _ = f.sync_all();
        total
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = self.dir.path();
    }
}
