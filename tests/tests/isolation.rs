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

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use slapos_proto::{ComputerId, InstanceInfo, SoftwareUrl};
use slapos_tests::tls::{master_cli, stdout_ok};
use slapos_tests::users::{TestUsers, as_user, uid_of, uid_of_process};
use slapos_tests::{
    Client, Master, Node, connection, example_release, http_get, instance_request, params,
    privileged, supply, wait_for,
};

const LONG: Duration = Duration::from_secs(90);
const PREFIX: &str = "slapedgetst";
const PARTITIONS: u16 = 2;

fn request(c: &Client, title: &str, url: &SoftwareUrl) -> InstanceInfo {
    c.request(&instance_request(
        title,
        url,
        params(json!({"title": title})),
    ))
    .expect("request")
}

/// The node's config (as `Node::start` writes it) plus the isolation keys.
fn start_node(dir: &Path, master_url: &str, computer: &str) -> Node {
    let extra = format!(
        "state_dir = \"state\"\nrt = false\nisolation = \"users\"\nuser_prefix = \"{PREFIX}\"\nsoftware_user = \"{PREFIX}soft\"\n"
    );
    Node::start_with(dir, master_url, computer, PARTITIONS, &extra)
}

#[test]
fn partitions_run_as_their_own_users_and_cannot_read_each_other() {
    if !privileged("partitions_run_as_their_own_users_and_cannot_read_each_other") {
        return;
    }
    // Deletes users left by a crashed run; dropped last: after the node has stopped every
    // service.
    let _users = TestUsers::claim(PREFIX);

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
    let url = example_release("hello-web");

    let computer = ComputerId::parse("COMP-ISO").expect("id");
    wait_for("node registered", LONG, || c.computer(&computer).ok());
    supply(&c, computer.as_str(), &url);
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
            connection(&c, title, "url")
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

    // The node registered each partition with its user: over the master's plain loopback
    // listener, A's user acts as partition A and nothing more (issue 19, local trust).
    let cli = slapos_tests::bin("slapos-master");
    let cli = cli.to_string_lossy().into_owned();
    let as_a = |args: &[&str]| {
        let mut argv = vec![cli.as_str(), "--master", master.url.as_str()];
        argv.extend_from_slice(args);
        as_user(&ua, &argv)
    };
    assert!(as_a(&["show", "iso-a"]), "A cannot read its own instance");
    assert!(!as_a(&["show", "iso-b"]), "A read B's instance");
    assert!(
        !as_a(&["supply", "/srv/sr/evil.toml", "--computer", "COMP-ISO"]),
        "A supplied a release"
    );
    assert!(
        !as_user(
            "nobody",
            &[cli.as_str(), "--master", master.url.as_str(), "list"]
        ),
        "a local user with no partition listed instances"
    );

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
    stdout_ok(
        "user create",
        master_cli(&[
            "user",
            "create",
            "ops",
            "--admin",
            "--out",
            &s(&tmp.path().join("ops")),
            "--tls-dir",
            &s(&tls),
            "--db",
            &s(&tmp.path().join("ca-owner.db")),
            "--create-db",
        ]),
    );
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
