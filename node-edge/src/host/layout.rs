//! Partition layout and `format` (idempotent).
//!
//! ```text
//! <instance_root>/                 0755, owned by the node
//!   <partition>/                   0750, one per partition (`slappart0` …), owned by the
//!                                  partition's user in root mode (`isolation`)
//!     .slapos-resource             JSON resource record (id, index, path, addresses, ports, user)
//!     .slapos/                     node-owned: rendered manifest, pid files, promise output
//!     etc/ srv/ tmp/ var/log/      created at each pass; files from the manifest go anywhere
//!                                  else under the partition (except `.slapos*`)
//! <software_root>/                 0755 (see `install`)
//! <state_dir>/                     0700: desired-state cache
//! ```
//!
//! In unprivileged mode every partition has the address `127.0.0.1` and its own block of ports
//! (`[ports]` in the config): services must bind their partition's ports only.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use slapos_proto::{LabelKey, PartitionId, PartitionSpec, RegisterComputer};

use crate::NodeError;
use crate::config::Config;
use crate::host::isolation::Isolation;
use crate::host::partition_fs::PartitionFs;

/// Name of the resource record in a partition.
pub const RESOURCE_RECORD: &str = ".slapos-resource";

/// The address partitions bind to in unprivileged mode.
pub const LOOPBACK: &str = "127.0.0.1";

/// One partition's static facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLayout {
    /// Id.
    pub id: PartitionId,
    /// Index (0-based) in the computer.
    pub index: u32,
    /// Directory.
    pub path: PathBuf,
    /// Addresses.
    pub addresses: Vec<String>,
    /// TCP ports.
    pub ports: Vec<u16>,
}

/// The record written to `<partition>/.slapos-resource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// The partition.
    #[serde(flatten)]
    pub layout: PartitionLayout,
    /// The unix user its processes run as.
    pub user: String,
}

/// The layout of every partition of `cfg`.
///
/// Addresses: with `[network]`, the partition's IPv6 then IPv4 address ([`crate::net`]);
/// otherwise `127.0.0.1`.
pub fn layouts(cfg: &Config) -> Vec<PartitionLayout> {
    cfg.partition_ids()
        .into_iter()
        .map(|(index, id)| PartitionLayout {
            path: cfg.partition_dir(&id),
            addresses: match &cfg.network {
                Some(n) => [
                    n.ipv6(index).map(|a| a.to_string()),
                    n.ipv4(index).map(|a| a.to_string()),
                ]
                .into_iter()
                .flatten()
                .collect(),
                None => vec![LOOPBACK.to_owned()],
            },
            ports: cfg.ports.ports(index),
            id,
            index,
        })
        .collect()
}

fn io_err(op: &str, path: &Path, source: std::io::Error) -> NodeError {
    NodeError::Io {
        op: op.to_owned(),
        path: path.to_path_buf(),
        source,
    }
}

fn mkdir_mode(path: &Path, mode: u32) -> Result<(), NodeError> {
    std::fs::create_dir_all(path).map_err(|e| io_err("create directory", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err(&format!("chmod {mode:o}"), path, e))
}

/// Create (or fix) one partition directory and write its resource record.
pub fn format_partition(p: &PartitionLayout, iso: &dyn Isolation) -> Result<(), NodeError> {
    mkdir_mode(&p.path, 0o750)?;
    let user = iso.format_partition(&p.id, p.index, &p.path)?;
    let rec = ResourceRecord {
        layout: p.clone(),
        user,
    };
    let path = p.path.join(RESOURCE_RECORD);
    let body = serde_json::to_vec_pretty(&rec)
        .map_err(|e| io_err("encode", &path, std::io::Error::other(e)))?;
    // Written as the partition: the directory is its own (a planted link is replaced, never
    // followed).
    PartitionFs::new(&p.path, iso.identity(&p.id))
        .write_atomic(RESOURCE_RECORD, &body, None)
        .map_err(|e| io_err("write", &path, std::io::Error::other(e.to_string())))
}

/// Create the roots, every partition and its record. Idempotent.
pub fn format(cfg: &Config, iso: &dyn Isolation) -> Result<Vec<PartitionLayout>, NodeError> {
    mkdir_mode(&cfg.instance_root, 0o755)?;
    mkdir_mode(&cfg.software_root, 0o755)?;
    mkdir_mode(&cfg.state_dir(), 0o700)?;
    let all = layouts(cfg);
    for p in &all {
        format_partition(p, iso)?;
    }
    // Addresses (and TAPs) of the partitions; those of removed partitions go away.
    let owner = |i: u32| {
        all.iter()
            .find(|p| p.index == i)
            .and_then(|p| iso.identity(&p.id))
    };
    crate::net::apply(
        cfg.network.as_ref(),
        cfg.partitions,
        &cfg.state_dir(),
        &owner,
    )?;
    Ok(all)
}

/// The registration message: partitions (with the uid each runs as under `iso`) and labels
/// (config labels win over `extra`, which wins over the detected `arch` and `cpu_count`).
pub fn registration(
    cfg: &Config,
    parts: &[PartitionLayout],
    extra: &BTreeMap<String, String>,
    iso: &dyn Isolation,
) -> RegisterComputer {
    let mut labels = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        if let Ok(k) = LabelKey::parse(k) {
            labels.insert(k, v);
        }
    };
    put("arch", std::env::consts::ARCH.to_owned());
    if let Ok(n) = std::thread::available_parallelism() {
        put("cpu_count", n.to_string());
    }
    for (k, v) in extra {
        put(k, v.clone());
    }
    for (k, v) in &cfg.labels {
        labels.insert(k.clone(), v.clone());
    }
    RegisterComputer {
        id: cfg.computer_id.clone(),
        partitions: parts
            .iter()
            .map(|p| PartitionSpec {
                id: p.id.clone(),
                addresses: p.addresses.clone(),
                interface: cfg
                    .network
                    .as_ref()
                    .map(|n| n.tap_name(p.index).unwrap_or_else(|| n.interface.clone())),
                uid: iso.identity(&p.id).map(|i| i.uid),
            })
            .collect(),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::isolation::CurrentUser;

    #[test]
    fn format_is_idempotent_and_fixes_modes() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = Config::standalone(d.path(), "http://127.0.0.1:1", 2);
        cfg.ports.base = 31000;
        let parts = format(&cfg, &CurrentUser).unwrap();
        assert_eq!(parts.len(), 2);
        let p1 = &parts[1];
        assert_eq!(p1.ports[0], 31010);
        std::fs::set_permissions(&p1.path, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(p1.path.join("data"), "kept").unwrap();
        format(&cfg, &CurrentUser).unwrap();
        let mode = std::fs::metadata(&p1.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750);
        assert_eq!(
            std::fs::read_to_string(p1.path.join("data")).unwrap(),
            "kept"
        );
        let rec: ResourceRecord =
            serde_json::from_slice(&std::fs::read(p1.path.join(RESOURCE_RECORD)).unwrap()).unwrap();
        assert_eq!(&rec.layout, p1);
    }

    #[test]
    fn registration_merges_labels() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = Config::standalone(d.path(), "http://127.0.0.1:1", 1);
        cfg.labels
            .insert(LabelKey::parse("region").unwrap(), "lab".into());
        cfg.labels
            .insert(LabelKey::parse("arch").unwrap(), "custom".into());
        let mut extra = BTreeMap::new();
        extra.insert("rt_cpus".to_owned(), "1-3".to_owned());
        let reg = registration(&cfg, &layouts(&cfg), &extra, &CurrentUser);
        let get = |k: &str| reg.labels[&LabelKey::parse(k).unwrap()].clone();
        assert_eq!(get("region"), "lab");
        assert_eq!(get("arch"), "custom");
        assert_eq!(get("rt_cpus"), "1-3");
        assert!(get("cpu_count").parse::<usize>().unwrap() >= 1);
        assert_eq!(reg.partitions[0].addresses, [LOOPBACK]);
        assert_eq!(reg.partitions[0].interface, None);
        assert_eq!(
            reg.partitions[0].uid, None,
            "not isolated: no uid of its own"
        );
    }

    #[test]
    fn registration_names_the_interface_of_partition_addresses() {
        let text = "master_url = \"http://127.0.0.1:1\"\ncomputer_id = \"C\"\npartitions = 2\n\
                    software_root = \"sw\"\ninstance_root = \"inst\"\n[network]\n\
                    interface = \"eth0\"\nipv6_prefix = \"fd00:5a:1::/64\"\n";
        let mut cfg = Config::from_toml(text, Some(Path::new("/x"))).unwrap();
        let reg = registration(&cfg, &layouts(&cfg), &BTreeMap::new(), &CurrentUser);
        assert_eq!(reg.partitions[1].addresses, ["fd00:5a:1::101"]);
        assert_eq!(reg.partitions[1].interface.as_deref(), Some("eth0"));
        // With TAPs, the partition's own TAP (SlapOS's `slaptapN` in `ip_list`).
        if let Some(n) = cfg.network.as_mut() {
            n.tap = true;
        }
        let reg = registration(&cfg, &layouts(&cfg), &BTreeMap::new(), &CurrentUser);
        let tap = cfg.network.as_ref().and_then(|n| n.tap_name(1));
        assert!(tap.is_some());
        assert_eq!(reg.partitions[1].interface, tap);
    }
}
