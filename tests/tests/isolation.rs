//! Partition isolation as unix users (root only): a real master and a real node with
//! `isolation = "users"` and a test-specific `user_prefix`, two hello-web partitions.
//!
//! * each service runs with its partition user's uid (never 0);
//! * partition A's user cannot read partition B's directory, the master's database directory
//!   or the node's state directory, and cannot write the installed release;
//! * the test's users (`slapedgetst0`, `slapedgetst1`) are deleted at the end, also on failure
//!   (a Drop guard), and any left by an earlier crashed run are deleted first.
//!
//! Run: `cargo build -p node-edge -p master-lite --bins && cargo test -p slapos-tests --test
//! isolation` (as root; skipped otherwise unless `SLAPOS_REQUIRE_PRIVILEGED=1`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use slapos_proto::{
    ComputerId, InstanceInfo, InstanceRequest, InstanceTitle, Params, SoftwareType, SoftwareUrl,
    SupplyRequest, SupplyState,
};
use slapos_tests::{
    Client, Master, Node, free_port_block, http_get, privileged, repo_root, wait_for,
};

const LONG: Duration = Duration::from_secs(90);
const PREFIX: &str = "slapedgetst";
const PARTITIONS: u32 = 2;

/// Deletes the test's partition users (and their groups) when dropped.
struct Users;

impl Users {
    fn clean() {
        for i in 0..PARTITIONS {
            let name = format!("{PREFIX}{i}");
            if uid_of(&name).is_some() {
                let st = Command::new("userdel").arg(&name).status();
                if !matches!(st, Ok(s) if s.success()) {
                    eprintln!("warning: userdel {name} failed: {st:?}");
                }
            }
        }
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        Self::clean();
    }
}

fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Run `argv` as `user` (runuser, no shell of the user involved); true when it succeeded.
fn as_user(user: &str, argv: &[&str]) -> bool {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .args(argv)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn uid_of_process(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn request(c: &Client, title: &str, url: &SoftwareUrl) -> InstanceInfo {
    let parameters: Params = json!({"title": title})
        .as_object()
        .cloned()
        .unwrap_or_default();
    c.request(&InstanceRequest {
        title: InstanceTitle::parse(title).expect("title"),
        software_url: url.clone(),
        software_type: SoftwareType::default(),
        parameters,
        sla: BTreeMap::new(),
        state: None,
    })
    .expect("request")
}

/// The node's config (as `Node::start` writes it) plus the isolation keys.
fn start_node(dir: &Path, master_url: &str, computer: &str) -> Node {
    std::fs::create_dir_all(dir).expect("node dir");
    let ports = free_port_block(PARTITIONS as u16 * 10);
    let config = dir.join("node.toml");
    let text = format!(
        "master_url = \"{master_url}\"\ncomputer_id = \"{computer}\"\npartitions = {PARTITIONS}\n\
         software_root = \"software\"\ninstance_root = \"instance\"\nstate_dir = \"state\"\n\
         poll_interval = 2\nlong_poll = 20\nrestart_backoff_min = 0.2\nrestart_backoff_max = 2\n\
         stop_timeout = 5\npromise_interval = 2\ninstall_retry = 2\nmax_instance_passes = 4\n\
         rt = false\nisolation = \"users\"\nuser_prefix = \"{PREFIX}\"\n\
         [ports]\nbase = {ports}\nper_partition = 10\n"
    );
    std::fs::write(&config, text).expect("write node config");
    let mut node = Node {
        proc: None,
        config,
        instance_root: dir.join("instance"),
        computer: computer.to_owned(),
    };
    node.restart();
    node
}

#[test]
fn partitions_run_as_their_own_users_and_cannot_read_each_other() {
    if !privileged("partitions_run_as_their_own_users_and_cannot_read_each_other") {
        return;
    }
    Users::clean();
    let _users = Users; // dropped last: after the node has stopped every service

    let tmp = tempfile::tempdir().expect("tempdir");
    // Partition users must reach the roots (a tempdir is 0700).
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // The master's database ("key material" until certificates exist) in a 0700 directory.
    let master_dir = tmp.path().join("master");
    std::fs::create_dir(&master_dir).expect("master dir");
    std::fs::set_permissions(&master_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let master = Master::start(&master_dir.join("master.db"));
    let node_dir = tmp.path().join("node");
    let mut node = start_node(&node_dir, &master.url, "COMP-ISO");
    let c = master.client();
    let url = SoftwareUrl::parse(
        repo_root()
            .join("examples/hello-web/software.toml")
            .to_string_lossy()
            .into_owned(),
    )
    .expect("url");

    let computer = ComputerId::parse("COMP-ISO").expect("id");
    wait_for("node registered", LONG, || c.computer(&computer).ok());
    c.supply(
        &computer,
        &SupplyRequest {
            url: url.clone(),
            state: SupplyState::Available,
        },
    )
    .expect("supply");
    let a = request(&c, "iso-a", &url);
    let b = request(&c, "iso-b", &url);
    let (pa, pb) = (
        a.partition.as_str().to_owned(),
        b.partition.as_str().to_owned(),
    );
    assert_ne!(pa, pb);
    let index = |p: &str| p.trim_start_matches("slappart").to_owned();
    let (ua, ub) = (
        format!("{PREFIX}{}", index(&pa)),
        format!("{PREFIX}{}", index(&pb)),
    );

    // Both services answer (they run, as their users, from the read-only release).
    for title in ["iso-a", "iso-b"] {
        let service = wait_for(&format!("{title}: url"), LONG, || {
            let i = c.instance(&InstanceTitle::parse(title).ok()?, None).ok()?;
            Some(i.connection.get("url")?.as_str()?.to_owned())
        });
        let page = wait_for(&format!("{title}: page"), LONG, || http_get(&service));
        assert!(page.contains(title), "{page}");
    }

    let (uid_a, uid_b) = (
        uid_of(&ua).expect("user A exists"),
        uid_of(&ub).expect("user B exists"),
    );
    assert!(uid_a != 0 && uid_b != 0 && uid_a != uid_b);

    // The services run with their partition's uid.
    for (p, uid) in [(&pa, uid_a), (&pb, uid_b)] {
        let pid_file = node.partition_dir(p).join(".slapos/run/web.pid");
        let rec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display())),
        )
        .expect("pid record");
        let pid = rec["pid"].as_u64().expect("pid") as u32;
        assert_eq!(uid_of_process(pid), Some(uid), "service of {p}");
    }

    // Directories: owned by the partition's user, 0750.
    let dir_a = node.partition_dir(&pa);
    let dir_b = node.partition_dir(&pb);
    for (d, uid) in [(&dir_a, uid_a), (&dir_b, uid_b)] {
        let md = std::fs::metadata(d).expect("partition dir");
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&md),
                md.permissions().mode() & 0o777
            ),
            (uid, 0o750),
            "{}",
            d.display()
        );
    }

    let page_a = dir_a.join("srv/www/index.html");
    let page_b = dir_b.join("srv/www/index.html");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    // Control: a user reads its own files.
    assert!(
        as_user(&ua, &["cat", &s(&page_a)]),
        "A cannot read its own page"
    );
    // A cannot read (nor list) B, and B cannot read A.
    assert!(!as_user(&ua, &["cat", &s(&page_b)]), "A read B's page");
    assert!(!as_user(&ua, &["ls", &s(&dir_b)]), "A listed B's directory");
    assert!(!as_user(&ub, &["cat", &s(&page_a)]), "B read A's page");
    // Neither the master's database nor the node's state.
    assert!(
        !as_user(&ua, &["cat", &s(&master_dir.join("master.db"))]),
        "A read the master's database"
    );
    // Nor the master's CA key, even in a directory anyone may traverse: the key file is 0600.
    let tls = tmp.path().join("tls");
    std::fs::create_dir(&tls).expect("tls dir");
    std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new(slapos_tests::bin("slapos-master"))
        .args(["user", "create", "ops", "--admin", "--out"])
        .arg(tmp.path().join("ops"))
        .arg("--tls-dir")
        .arg(&tls)
        .arg("--db")
        .arg(tmp.path().join("ca-owner.db"))
        .output()
        .expect("slapos-master user create");
    assert!(out.status.success(), "user create: {out:?}");
    assert!(
        tls.join("ca.key").is_file(),
        "no CA key in {}",
        tls.display()
    );
    assert!(
        !as_user(&ua, &["cat", &s(&tls.join("ca.key"))]),
        "A read the master's CA key"
    );
    assert!(
        as_user(&ua, &["cat", &s(&tls.join("ca.pem"))]),
        "the CA certificate is public, A should read it (the test would prove nothing)"
    );
    assert!(
        !as_user(&ua, &["ls", &s(&node_dir.join("state"))]),
        "A listed the node's state directory"
    );
    // The release is readable, not writable.
    let software = std::fs::read_dir(node_dir.join("software"))
        .expect("software root")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("server.py").is_file())
        .expect("installed release");
    assert!(as_user(&ua, &["cat", &s(&software.join("server.py"))]));
    assert!(
        !as_user(&ua, &["touch", &s(&software.join("planted"))]),
        "A wrote into the release"
    );
    assert!(
        !as_user(
            &ua,
            &[
                "sh",
                "-c",
                &format!("echo x >> {}", s(&software.join("server.py")))
            ]
        ),
        "A changed a release file"
    );

    node.stop();
}
