//! Boards as data (`boards/<board>/board.toml`) and what the QEMU board test needs to boot them.
//!
//! A [`Board`] names the Rust target triple its node is built for, its CPUs and memory, how QEMU
//! emulates it (or why it cannot), the Debian kernel package and the modules the initramfs must
//! load, the partitions and RT CPUs the node offers, and the node's labels. [`Board::parse`] is
//! the only way a file becomes a `Board` and checks the rules (RT CPUs exist and leave a
//! housekeeping CPU, a board QEMU cannot boot says why, labels are valid label keys, …).
//!
//! The board test (`tests/tests/boards.rs`) builds an initramfs with [`cpio::Cpio`]: the board PID 1
//! (`edge-init`, `src/bin/edge-init.rs`, configured by [`init_conf::InitConf`]), the static node,
//! the kernel modules in [`kmod::load_order`], and boots it with [`qemu::Boot`].
//! Kernels are fetched by `boards/fetch-kernels.sh` into the cache ([`kernel_dir`]), never committed.
//!
//! Gate: [`qemu_skip`] skips with a reason, or fails when `SLAPOS_REQUIRE_QEMU=1`.

pub mod cpio;
pub mod init_conf;
pub mod kmod;
pub mod qemu;
pub mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use slapos_proto::LabelKey;
use slapos_test_support::gate::{Need, skip};

/// A board file that cannot be used; the message names the file and the rule.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// Unreadable file or directory.
    #[error("failed to read `{path}`: {source}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or unknown / missing / mistyped keys.
    #[error("invalid board file `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value broke a rule.
    #[error("invalid board file `{path}`: `{key}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// The rule.
        reason: String,
    },
}

/// One board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Name, equal to the directory name (and a valid label value).
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// Rust target triple of the node built for it.
    pub target: String,
    /// CPU count (QEMU `-smp`).
    pub cpus: u32,
    /// Memory (QEMU `-m`).
    pub memory_mib: u32,
    /// How QEMU emulates it.
    pub qemu: Option<QemuSpec>,
    /// Kernel and modules.
    pub kernel: KernelSpec,
    /// What the node offers.
    pub partitions: PartitionsSpec,
    /// Node settings.
    pub node: NodeSpec,
}

/// QEMU emulation of a board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSpec {
    /// Whether the board test boots it.
    pub boots: bool,
    /// Why not, when `boots = false`.
    #[serde(default)]
    pub why_not: Option<String>,
    /// `qemu-system-aarch64`, `qemu-system-arm`, …
    pub system: String,
    /// `-M`.
    pub machine: String,
    /// `-cpu`.
    pub cpu: String,
    /// `-device` of the user-mode network card, `none` for no NIC.
    pub nic: String,
    /// Kernel console device (`ttyAMA0`).
    pub console: String,
    /// Device tree, relative to the kernel package's dtb directory.
    #[serde(default)]
    pub dtb: Option<String>,
}

/// Kernel of a board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// Debian (meta) package: `linux-image-arm64`.
    pub package: String,
    /// Debian architecture of the package: `arm64`, `armhf`, `amd64`.
    pub debian_arch: String,
    /// Modules to load at boot (their dependencies are added).
    #[serde(default)]
    pub modules: Vec<String>,
    /// The network interface the node uses.
    pub interface: String,
    /// Kernel command line (after `console=`).
    #[serde(default)]
    pub cmdline: String,
}

/// Partitions and RT CPUs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionsSpec {
    /// Computer partitions the node formats.
    pub count: u32,
    /// CPUs reserved for real-time partitions.
    #[serde(default)]
    pub rt_cpus: Vec<u32>,
}

/// Node settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Labels sent at registration.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Board {
    /// Parse and check a board file's text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Board, BoardError> {
        let board: Board = toml::from_str(text).map_err(|e| BoardError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        board.check().map_err(|(key, reason)| BoardError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        })?;
        Ok(board)
    }

    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<Board, BoardError> {
        let text = std::fs::read_to_string(path).map_err(|source| BoardError::Read {
            path: path.to_owned(),
            source,
        })?;
        Board::parse(&text, path)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        LabelKey::parse(self.name.as_str()).map_err(|e| ("name", e.to_string()))?;
        let arch = self.arch();
        if !matches!(arch, "aarch64" | "armv7" | "x86_64") || !self.target.contains("-linux-") {
            return Err((
                "target",
                format!(
                    "`{}` is not an aarch64/armv7/x86_64 Linux triple",
                    self.target
                ),
            ));
        }
        if self.cpus == 0 || self.memory_mib < 64 {
            return Err(("cpus", "need at least 1 CPU and 64 MiB".into()));
        }
        if self.partitions.count == 0 {
            return Err(("partitions.count", "must be at least 1".into()));
        }
        let rt = &self.partitions.rt_cpus;
        if let Some(c) = rt.iter().find(|c| **c >= self.cpus) {
            return Err((
                "partitions.rt_cpus",
                format!("CPU {c} does not exist ({} CPUs)", self.cpus),
            ));
        }
        let mut uniq = rt.clone();
        uniq.sort_unstable();
        uniq.dedup();
        if uniq.len() != rt.len() {
            return Err(("partitions.rt_cpus", "lists a CPU twice".into()));
        }
        if !rt.is_empty() && rt.len() as u32 >= self.cpus {
            return Err((
                "partitions.rt_cpus",
                "must leave at least one housekeeping CPU".into(),
            ));
        }
        for (k, v) in &self.node.labels {
            LabelKey::parse(k.as_str()).map_err(|e| ("node.labels", e.to_string()))?;
            if v.is_empty() || v.chars().any(char::is_control) {
                return Err((
                    "node.labels",
                    format!("label `{k}` needs a printable value"),
                ));
            }
        }
        if let Some(q) = &self.qemu {
            if !q.boots && q.why_not.as_deref().is_none_or(str::is_empty) {
                return Err((
                    "qemu.why_not",
                    "a board QEMU does not boot must say why".into(),
                ));
            }
            if q.boots && q.nic == "none" {
                return Err((
                    "qemu.nic",
                    "a booted board needs a NIC to reach the master".into(),
                ));
            }
        }
        if self.kernel.interface.is_empty() || self.kernel.interface.len() > 15 {
            return Err(("kernel.interface", "must be 1..=15 bytes".into()));
        }
        Ok(())
    }

    /// `aarch64`, `armv7` or `x86_64` (the triple's first component).
    pub fn arch(&self) -> &str {
        self.target.split('-').next().unwrap_or_default()
    }

    /// Whether the node binary is dynamically linked against glibc (it then needs the C runtime
    /// from the cross sysroot in the initramfs).
    pub fn is_glibc(&self) -> bool {
        self.target.ends_with("-gnu") || self.target.ends_with("-gnueabihf")
    }

    /// Labels the node is configured with: the board's, plus `target`. (The node adds `arch`,
    /// `cpu_count` and, from its `rt_cpus` setting, `rt_cpus` itself.)
    pub fn node_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.node.labels.clone();
        labels.insert("target".into(), self.target.clone());
        labels
    }

    /// The RT CPUs as a kernel CPU list (`2,3`), the node's `rt_cpus` setting; `None` if none.
    pub fn rt_cpu_list(&self) -> Option<String> {
        let rt: Vec<String> = self.partitions.rt_cpus.iter().map(u32::to_string).collect();
        (!rt.is_empty()).then(|| rt.join(","))
    }

    /// `qemu` if QEMU boots this board.
    pub fn bootable(&self) -> Option<&QemuSpec> {
        self.qemu.as_ref().filter(|q| q.boots)
    }
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate is inside the workspace")
        .to_path_buf()
}

/// `boards/` of the workspace.
pub fn boards_dir() -> PathBuf {
    repo_root().join("boards")
}

/// Every `boards/<name>/board.toml`, sorted by name; the name must equal the directory's.
pub fn load_all(dir: &Path) -> Result<Vec<Board>, BoardError> {
    let read_err = |source| BoardError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut boards = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let sub = entry.map_err(read_err)?.path();
        let file = sub.join("board.toml");
        if !file.is_file() {
            continue;
        }
        let board = Board::load(&file)?;
        if sub.file_name().and_then(|n| n.to_str()) != Some(board.name.as_str()) {
            return Err(BoardError::Invalid {
                path: file,
                key: "name",
                reason: format!("`{}` differs from the directory name", board.name),
            });
        }
        boards.push(board);
    }
    boards.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(boards)
}

/// Targets listed in `rust-toolchain.toml` (`[toolchain] targets`).
pub fn toolchain_targets(repo: &Path) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct File {
        toolchain: Toolchain,
    }
    #[derive(Deserialize)]
    struct Toolchain {
        #[serde(default)]
        targets: Vec<String>,
    }
    let path = repo.join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("failed to read `{}`: {e}", path.display()))?;
    let file: File =
        toml::from_str(&text).map_err(|e| format!("invalid `{}`: {e}", path.display()))?;
    Ok(file.toolchain.targets)
}

/// The kernel cache: `$SLAPOS_BOARDS_CACHE`, else `<target dir>/boards-cache`
/// (the default of `boards/fetch-kernels.sh`).
pub fn cache_dir(target_dir: &Path) -> PathBuf {
    std::env::var_os("SLAPOS_BOARDS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir.join("boards-cache"))
}

/// Where `boards/fetch-kernels.sh` unpacks the board's kernel: `vmlinuz`, `modules/`, `dtbs/`.
pub fn kernel_dir(cache: &Path, board: &Board) -> PathBuf {
    cache.join("kernels").join(format!(
        "{}_{}",
        board.kernel.package, board.kernel.debian_arch
    ))
}

/// The Debian cross sysroot of a glibc target (loader and C runtime for the initramfs).
pub fn glibc_sysroot(target: &str) -> Option<PathBuf> {
    match target.split('-').next()? {
        "aarch64" => Some("/usr/aarch64-linux-gnu".into()),
        "armv7" => Some("/usr/arm-linux-gnueabihf".into()),
        _ => None,
    }
}

/// The CPUs of a kernel cpu list (`0-2,5`; `cpuset.cpus.*`, `Cpus_allowed_list`); what does
/// not parse is left out.
pub fn cpu_set(list: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in list.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            out.extend(a..=b);
        }
    }
    out
}

/// `SLAPOS_REQUIRE_QEMU=1`: a missing QEMU, kernel or cross toolchain is a failure.
pub fn qemu_required() -> bool {
    Need::Qemu.required()
}

/// Skip `test` for `reason` (printed), or panic when [`qemu_required`].
pub fn qemu_skip(test: &str, reason: &str) {
    skip(Need::Qemu, test, reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_sets() {
        assert_eq!(cpu_set("0-2,5\n"), vec![0, 1, 2, 5]);
        assert_eq!(cpu_set("1"), vec![1]);
        assert!(cpu_set("").is_empty());
        assert!(cpu_set("absent").is_empty());
    }

    const GOOD: &str = r#"
name = "b1"
description = "d"
target = "aarch64-unknown-linux-musl"
cpus = 4
memory_mib = 256
[qemu]
boots = true
system = "qemu-system-aarch64"
machine = "virt"
cpu = "cortex-a57"
nic = "virtio-net-device"
console = "ttyAMA0"
[kernel]
package = "linux-image-arm64"
debian_arch = "arm64"
modules = ["virtio_net"]
interface = "eth0"
[partitions]
count = 2
rt_cpus = [2, 3]
[node]
labels = { board = "b1" }
"#;

    fn parse(text: &str) -> Result<Board, BoardError> {
        Board::parse(text, Path::new("boards/b1/board.toml"))
    }

    #[test]
    fn a_good_board_parses_with_derived_labels() {
        let b = parse(GOOD).unwrap();
        assert_eq!(b.arch(), "aarch64");
        assert!(!b.is_glibc());
        assert!(b.bootable().is_some());
        let l = b.node_labels();
        assert_eq!(l["board"], "b1");
        assert_eq!(l["target"], "aarch64-unknown-linux-musl");
        assert_eq!(b.rt_cpu_list().as_deref(), Some("2,3"));
        let none = parse(&GOOD.replace("rt_cpus = [2, 3]", "rt_cpus = []")).unwrap();
        assert_eq!(none.rt_cpu_list(), None);
    }

    #[test]
    fn rules_are_enforced_with_the_key_named() {
        for (from, to, key) in [
            ("rt_cpus = [2, 3]", "rt_cpus = [4]", "partitions.rt_cpus"),
            ("rt_cpus = [2, 3]", "rt_cpus = [2, 2]", "partitions.rt_cpus"),
            (
                "rt_cpus = [2, 3]",
                "rt_cpus = [0, 1, 2, 3]",
                "partitions.rt_cpus",
            ),
            ("count = 2", "count = 0", "partitions.count"),
            ("boots = true", "boots = false", "qemu.why_not"),
            ("nic = \"virtio-net-device\"", "nic = \"none\"", "qemu.nic"),
            (
                "aarch64-unknown-linux-musl",
                "thumbv7em-none-eabihf",
                "target",
            ),
            ("name = \"b1\"", "name = \"../b1\"", "name"),
            (
                "{ board = \"b1\" }",
                "{ \"bad key\" = \"x\" }",
                "node.labels",
            ),
            (
                "interface = \"eth0\"",
                "interface = \"\"",
                "kernel.interface",
            ),
        ] {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "{from}");
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{key}`")) && e.contains("boards/b1/board.toml"),
                "{to}: {e}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = parse(&format!("{GOOD}\nextra = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("extra"), "{e}");
    }

    #[test]
    fn load_all_checks_the_directory_name() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("b1")).unwrap();
        std::fs::write(t.path().join("b1/board.toml"), GOOD).unwrap();
        std::fs::create_dir(t.path().join("not-a-board")).unwrap();
        let boards = load_all(t.path()).unwrap();
        assert_eq!(boards.len(), 1);
        std::fs::create_dir(t.path().join("b2")).unwrap();
        std::fs::write(t.path().join("b2/board.toml"), GOOD).unwrap();
        let e = load_all(t.path()).unwrap_err().to_string();
        assert!(e.contains("differs from the directory name"), "{e}");
    }
}
