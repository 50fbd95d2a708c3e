//! Kernel module load order for an initramfs without `modprobe`.
//!
//! Debian's kernel debs ship no `modules.dep`, and `.ko` files (6.1) or `.ko.xz` (6.12, which
//! `boards/fetch-kernels.sh` unpacks to `.ko`); each module's `.modinfo`
//! section holds `depends=a,b` (NUL-separated `key=value` strings). [`load_order`] indexes a
//! `lib/modules/<version>` tree, follows `depends=` depth-first and returns the files
//! dependencies first, each once. A dependency that has no `.ko` but is listed in
//! `modules.builtin` is built into the kernel and skipped (the generic arm64 kernel has
//! `CONFIG_VIRTIO=y`, the cloud one `=m`: the same board list works for both).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module names treat `-` and `_` alike (`virtio-net` = `virtio_net`).
fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// The `depends=` list in a module's bytes (empty when it has none).
pub fn depends(ko: &[u8]) -> Vec<String> {
    ko.split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(norm)
                .collect()
        })
        .unwrap_or_default()
}

fn index(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            index(&path, out)?;
        } else if let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        {
            out.insert(norm(stem), path);
        }
    }
    Ok(())
}

/// Modules built into the kernel (`modules.builtin`: `kernel/…/name.ko` per line).
fn builtin(modules_dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next()?.strip_suffix(".ko"))
        .map(norm)
        .collect()
}

/// The `.ko` files to load, dependencies first, for the modules `wanted`.
/// `modules_dir` is `lib/modules/<version>`. Errors name the missing module.
pub fn load_order(modules_dir: &Path, wanted: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut files = BTreeMap::new();
    index(modules_dir, &mut files).map_err(|e| {
        format!(
            "failed to index modules under `{}`: {e}",
            modules_dir.display()
        )
    })?;
    let builtin = builtin(modules_dir);
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for w in wanted {
        visit(
            &norm(w),
            &files,
            &builtin,
            &mut done,
            &mut Vec::new(),
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    files: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    done: &mut BTreeSet<String>,
    stack: &mut Vec<String>,
    order: &mut Vec<PathBuf>,
) -> Result<(), String> {
    if done.contains(name) {
        return Ok(());
    }
    if stack.iter().any(|s| s == name) {
        return Err(format!(
            "module dependency cycle: {} -> {name}",
            stack.join(" -> ")
        ));
    }
    let Some(path) = files.get(name) else {
        if builtin.contains(name) {
            done.insert(name.to_owned());
            return Ok(());
        }
        return Err(format!(
            "kernel module `{name}` not found (neither a .ko nor built in)"
        ));
    };
    let bytes =
        std::fs::read(path).map_err(|e| format!("failed to read `{}`: {e}", path.display()))?;
    stack.push(name.to_owned());
    for dep in depends(&bytes) {
        visit(&dep, files, builtin, done, stack, order)?;
    }
    stack.pop();
    done.insert(name.to_owned());
    order.push(path.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ko(dir: &Path, rel: &str, depends: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut bytes = b"\x7fELF junk\0license=GPL\0".to_vec();
        bytes.extend_from_slice(format!("depends={depends}\0name=x\0").as_bytes());
        std::fs::write(p, bytes).unwrap();
    }

    fn names(v: &[PathBuf]) -> Vec<String> {
        v.iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn depends_parses_the_modinfo_string() {
        assert_eq!(
            depends(b"a\0depends=net_failover,virtio-ring\0b"),
            ["net_failover", "virtio_ring"]
        );
        assert!(depends(b"a\0depends=\0b").is_empty());
        assert!(depends(b"no modinfo here").is_empty());
    }

    #[test]
    fn dependencies_come_first_once_and_builtins_are_skipped() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        ko(m, "kernel/drivers/net/virtio_net.ko", "net_failover");
        ko(m, "kernel/drivers/net/net_failover.ko", "failover");
        ko(m, "kernel/net/core/failover.ko", "");
        ko(
            m,
            "kernel/drivers/virtio/virtio_mmio.ko",
            "virtio,virtio_ring",
        );
        std::fs::write(
            m.join("modules.builtin"),
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n",
        )
        .unwrap();
        let order = load_order(
            m,
            &["virtio-mmio".into(), "virtio_net".into(), "failover".into()],
        )
        .unwrap();
        assert_eq!(
            names(&order),
            ["virtio_mmio", "failover", "net_failover", "virtio_net"]
        );
    }

    #[test]
    fn missing_modules_and_cycles_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        ko(m, "a.ko", "b");
        ko(m, "b.ko", "a");
        ko(m, "c.ko", "nowhere");
        let e = load_order(m, &["a".into()]).unwrap_err();
        assert!(e.contains("cycle"), "{e}");
        let e = load_order(m, &["c".into()]).unwrap_err();
        assert!(e.contains("`nowhere` not found"), "{e}");
    }
}
