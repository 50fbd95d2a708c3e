//! A hostile tenant on an isolated node, for the tenant-attack suite
//! (`tests/tests/tenant_attack.rs`): a real master, a real `slapos-node run` with
//! `isolation = "users"` (test users, deleted at the end) and the hostile release of
//! `tests/fixtures/hostile/` (its `attack` parameter picks what it does, `targets` what it
//! aims at; results come back as connection parameters).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use slapos_proto::{ComputerId, InstallState, InstanceInfo, InstanceTitle, SoftwareUrl};

use crate::users::{TestUsers, uid_of};
use crate::{Client, Master, Node, instance_request, params, repo_root, supply, wait_for};

/// Generous bound of every wait of the suite.
pub const LONG: Duration = Duration::from_secs(90);

/// The hostile release.
pub fn hostile_release() -> SoftwareUrl {
    let p = repo_root().join("tests/fixtures/hostile/software.toml");
    SoftwareUrl::parse(p.to_string_lossy().into_owned()).expect("release url")
}

/// A master and an isolated node under one temporary directory. Dropped in field order: the
/// node stops (and kills every partition process) before the users are deleted.
pub struct Tenancy {
    /// The node (`slapos-node run`).
    pub node: Node,
    /// The master (`slapos-master serve`, plain HTTP on loopback).
    pub master: Master,
    /// A client of the master.
    pub client: Client,
    /// The computer id.
    pub computer: String,
    /// Where the master's database lives (0700).
    pub master_dir: PathBuf,
    /// The node's directory (`node.toml`, `state/`, `software/`, `instance/`).
    pub node_dir: PathBuf,
    /// The temporary directory (0755: partition users must reach the roots).
    pub tmp: tempfile::TempDir,
    /// The test's users.
    pub users: TestUsers,
}

impl Tenancy {
    /// Start a master and a node with `partitions` partitions of users `<prefix>N`, software
    /// user `<prefix>soft`, `extra` node config; the hostile release is supplied.
    pub fn start(prefix: &str, computer: &str, partitions: u16, extra: &str) -> Tenancy {
        let users = TestUsers::claim(prefix);
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let master_dir = tmp.path().join("master");
        std::fs::create_dir(&master_dir).expect("master dir");
        std::fs::set_permissions(&master_dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let master = Master::start(&master_dir.join("master.db"));
        let node_dir = tmp.path().join("node");
        let config = format!(
            "state_dir = \"state\"\nrt = false\nisolation = \"users\"\nuser_prefix = \"{prefix}\"\n\
             software_user = \"{}\"\npromise_interval = 1\n{extra}",
            users.software_user()
        );
        let node = Node::start_with(&node_dir, &master.url, computer, partitions, &config);
        let client = master.client();
        let id = ComputerId::parse(computer).expect("computer id");
        wait_for("node registered", LONG, || client.computer(&id).ok());
        supply(&client, computer, &hostile_release());
        Tenancy {
            node,
            master,
            client,
            computer: computer.to_owned(),
            master_dir,
            node_dir,
            tmp,
            users,
        }
    }

    /// Request instance `title` of the hostile release on this computer.
    pub fn attack(&self, title: &str, attack: &str, targets: &str) -> InstanceInfo {
        let mut req = instance_request(
            title,
            &hostile_release(),
            params(json!({ "attack": attack, "targets": targets })),
        );
        req.sla = BTreeMap::from([("computer_guid".to_owned(), self.computer.clone())]);
        self.client.request(&req).expect("request")
    }

    /// The connection parameters instance `title` published (empty until then).
    pub fn published(&self, title: &str) -> serde_json::Map<String, serde_json::Value> {
        let t = InstanceTitle::parse(title).expect("title");
        self.client
            .instance(&t, None)
            .map(|i| i.connection)
            .unwrap_or_default()
    }

    /// Wait until instance `title` publishes `key`; its value.
    pub fn wait_published(&self, title: &str, key: &str) -> String {
        wait_for(&format!("{title}: `{key}` published"), LONG, || {
            let v = self.published(title).get(key)?.clone();
            Some(v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        })
    }

    /// The instance `title` as the master knows it.
    pub fn instance(&self, title: &str) -> InstanceInfo {
        let t = InstanceTitle::parse(title).expect("title");
        self.client.instance(&t, None).expect("instance")
    }

    /// Wait until `url` is installed on the node; its directory.
    pub fn installed(&self, url: &SoftwareUrl) -> PathBuf {
        let id = ComputerId::parse(&self.computer).expect("computer id");
        wait_for(&format!("{url} installed"), LONG, || {
            let c = self.client.computer(&id).ok()?;
            let r = c.software.into_iter().find(|s| &s.url == url)?.install?;
            (r.state == InstallState::Available).then_some(())
        });
        self.node_dir.join("software").join(url.hash())
    }

    /// Wait until the node reports an install error for `url`; its message.
    pub fn install_error(&self, url: &SoftwareUrl) -> String {
        let id = ComputerId::parse(&self.computer).expect("computer id");
        wait_for(&format!("install error of {url}"), LONG, || {
            let c = self.client.computer(&id).ok()?;
            let r = c.software.into_iter().find(|s| &s.url == url)?.install?;
            (r.state == InstallState::Error).then(|| r.message.unwrap_or_default())
        })
    }

    /// A partition's directory.
    pub fn dir(&self, partition: &str) -> PathBuf {
        self.node.partition_dir(partition)
    }

    /// The node's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.node_dir.join("state")
    }

    /// The uid of a partition's user.
    pub fn uid(&self, partition: &str) -> u32 {
        let index = partition.trim_start_matches("slappart");
        uid_of(&format!("{}{index}", self.prefix())).expect("partition user")
    }

    fn prefix(&self) -> String {
        self.users
            .software_user()
            .trim_end_matches("soft")
            .to_owned()
    }
}

/// The live (not zombie) processes whose real uid is `uid`.
pub fn processes_of(uid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                return false;
            };
            let zombie = s
                .lines()
                .any(|l| l.starts_with("State:") && (l.contains("Z (") || l.contains("X (")));
            let real = s
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().next()?.parse::<u32>().ok());
            !zombie && real == Some(uid)
        })
        .collect()
}

/// True while process `pid` lives (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next());
        !matches!(state, None | Some("Z") | Some("X"))
    })
}

/// The leader pid a node recorded for `service` of the partition in `dir`.
pub fn service_pid(dir: &Path, service: &str) -> Option<u32> {
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!(".slapos/run/{service}.pid"))).ok()?,
    )
    .ok()?;
    rec["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// Kills a process when dropped (a survivor a failing test would otherwise leave running).
pub struct KillOnDrop(pub Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        // Gone before the caller removes their cgroups.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.0.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Remove the (empty) jail cgroups a node whose state directory is `state_dir` left when it
/// was killed with SIGKILL (a clean stop removes them itself): `slapos-edge-jail/<key>/*` in
/// the v1 `pids`, `freezer` and accounting (`cpuacct`, `memory`, `blkio`) hierarchies and in a
/// unified one.
pub fn remove_jails(state_dir: &Path) {
    let abs = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let key = &crate::sha256_hex(abs.as_os_str().as_encoded_bytes())[..12];
    for h in [
        "pids", "freezer", "cpuacct", "memory", "blkio", "unified", "",
    ] {
        let node = Path::new("/sys/fs/cgroup")
            .join(h)
            .join("slapos-edge-jail")
            .join(key);
        if let Ok(entries) = std::fs::read_dir(&node) {
            for e in entries.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&node);
        if let Some(top) = node.parent() {
            let _ = std::fs::remove_dir(top);
        }
    }
}
