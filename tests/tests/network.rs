//! Partition addresses (root only), in network namespaces the test creates — never on the
//! machine's own interfaces.
//!
//! `slapedge-n1` and `slapedge-n2` are joined by a veth pair (`slapedge-v1` fd00:5a:9::1/64 in
//! n1, `slapedge-v2` fd00:5a:9::2/64 in n2). The test thread enters n1 (`setns` is per thread),
//! so the master and the node it spawns run in n1, on n1's loopback. The node has
//! `[network] interface = "slapedge-v1"`, `ipv6_prefix = "fd00:5a:9::/64"`, `ipv4_prefix =
//! "10.0.44.0/24"`, `tap = true`:
//!
//! * the partitions' addresses (`fd00:5a:9::100`, `::101`, `10.0.44.10`, `.11`) and TAPs appear
//!   on n1 and are shown by the master;
//! * a service bound to its partition's IPv6 address answers from n2 (`curl` run in n2);
//! * after `partitions` shrinks to 1 and `slapos-node format` runs, partition 1's addresses and
//!   TAP are gone and partition 0's remain.
//!
//! Namespaces and the test's partition users are deleted by Drop guards, also on failure.
//! Run: `cargo build -p node-edge -p master-lite --bins && cargo test -p slapos-tests --test
//! network` (needs `ip` and `curl`: `scripts/deps/node-edge.sh`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use slapos_proto::{ComputerId, SoftwareUrl};
use slapos_tests::netns::{Netns, in_ns, ip, ip_out, veth};
use slapos_tests::users::TestUsers;
use slapos_tests::{
    Master, Node, connection, instance_request, node_config, privileged, supply, wait_for,
};

const LONG: Duration = Duration::from_secs(90);
const N1: &str = "slapedge-n1";
const N2: &str = "slapedge-n2";
const USERS: &str = "slapedgenet";

/// A release whose service serves one page on the partition's IPv6 address.
fn write_release(dir: &Path) -> SoftwareUrl {
    std::fs::create_dir_all(dir).expect("release dir");
    let profile = r#"[[service]]
name = "web"
command = ["python3", "-m", "http.server", "--bind", "{{ partition.ipv6 }}", "--directory", "{{ partition.path }}/srv/www", "{{ ports[0] }}"]

[[file]]
path = "srv/www/index.html"
content = "net-web {{ partition.id }}"

[connection]
url = "http://[{{ partition.ipv6 }}]:{{ ports[0] }}/"
"#;
    std::fs::write(dir.join("instance.toml.in"), profile).expect("profile");
    let sha = hex::encode(Sha256::digest(profile.as_bytes()));
    let manifest = format!(
        "[release]\nname = \"net-web\"\n\n[[artifact]]\nurl = \"instance.toml.in\"\nsha256 = \"{sha}\"\n\n\
         [instance]\ndefault = \"instance.toml.in\"\n"
    );
    std::fs::write(dir.join("software.toml"), manifest).expect("manifest");
    SoftwareUrl::parse(dir.join("software.toml").to_string_lossy().into_owned()).expect("url")
}

/// What the node adds to the shared config: users, its state dir, the network section.
fn extra_config(dir: &Path) -> String {
    format!(
        "state_dir = \"{}\"\nrt = false\nisolation = \"users\"\nuser_prefix = \"{USERS}\"\nsoftware_user = \"{USERS}soft\"\n\
         [network]\ninterface = \"slapedge-v1\"\nipv6_prefix = \"fd00:5a:9::/64\"\n\
         ipv4_prefix = \"10.0.44.0/24\"\ntap = true\ntap_prefix = \"slapedget\"\n",
        dir.join("state").display()
    )
}

#[test]
fn partition_addresses_appear_serve_and_disappear_in_a_namespace() {
    if !privileged("partition_addresses_appear_serve_and_disappear_in_a_namespace") {
        return;
    }
    // Dropped in reverse order: the namespaces (with the veth pair and TAPs), then the users.
    let _users = TestUsers::claim(USERS);
    let _netns = Netns::create(&[N1, N2]);
    veth((N1, "slapedge-v1"), (N2, "slapedge-v2"));
    ip(&[
        "-n",
        N1,
        "addr",
        "add",
        "fd00:5a:9::1/64",
        "dev",
        "slapedge-v1",
        "nodad",
    ]);
    ip(&[
        "-n",
        N2,
        "addr",
        "add",
        "fd00:5a:9::2/64",
        "dev",
        "slapedge-v2",
        "nodad",
    ]);

    // The body runs on a thread inside n1: master, node and client all live there.
    in_ns(N1, run_in_n1);
}

fn run_in_n1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let master = Master::start(&tmp.path().join("master.db"));
    let url = write_release(&tmp.path().join("release"));
    let node_dir = tmp.path().join("node");
    let extra = extra_config(&node_dir);
    let mut node = Node::start_with(&node_dir, &master.url, "COMP-NET", 2, &extra);

    let c = master.client();
    let computer = ComputerId::parse("COMP-NET").expect("id");
    // Registered with the partitions' addresses (what SLAP's ip_list is made of).
    let info = wait_for("node registered", LONG, || c.computer(&computer).ok());
    let addrs: BTreeMap<String, Vec<String>> = info
        .partitions
        .iter()
        .map(|p| (p.id.to_string(), p.addresses.clone()))
        .collect();
    assert_eq!(
        addrs.get("slappart0").map(Vec::as_slice),
        Some(&["fd00:5a:9::100".to_owned(), "10.0.44.10".to_owned()][..]),
        "{addrs:?}"
    );
    assert_eq!(
        addrs.get("slappart1").map(Vec::as_slice),
        Some(&["fd00:5a:9::101".to_owned(), "10.0.44.11".to_owned()][..]),
        "{addrs:?}"
    );
    let shown = ip_out(&["-n", N1, "addr", "show", "dev", "slapedge-v1"]);
    for a in [
        "fd00:5a:9::100/128",
        "fd00:5a:9::101/128",
        "10.0.44.10/32",
        "10.0.44.11/32",
    ] {
        assert!(shown.contains(a), "{a} missing:\n{shown}");
    }
    for (i, tap) in ["slapedget0", "slapedget1"].into_iter().enumerate() {
        let l = ip_out(&["-n", N1, "-d", "link", "show", tap]);
        assert!(l.contains("tun type tap"), "{tap}: {l}");
        assert!(l.contains("UP"), "{tap} not up: {l}");
        // Owned by the partition's user (TUNSETOWNER): `ip -d` prints `user <name>`.
        let owner = format!("user {USERS}{i} ");
        assert!(l.contains(&owner), "{tap} not owned by {USERS}{i}: {l}");
    }

    supply(&c, computer.as_str(), &url);
    c.request(&instance_request("net-web", &url, Default::default()))
        .expect("request");
    let service = wait_for("connection url", LONG, || connection(&c, "net-web", "url"));
    assert!(service.starts_with("http://[fd00:5a:9::10"), "{service}");
    // Reached from the other namespace, over the veth pair.
    let page = wait_for("page from n2", LONG, || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                N2,
                "curl",
                "-sfg",
                "--max-time",
                "3",
                &service,
            ])
            .output()
            .ok()?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && body.contains("net-web")).then_some(body)
    });
    assert!(page.contains("net-web slappart"), "{page}");

    // Fewer partitions: format removes partition 1's addresses and TAP, keeps partition 0's.
    node.stop();
    let config = node_config(&master.url, "COMP-NET", 1, node.ports, &extra);
    std::fs::write(&node.config, config).expect("config");
    let st = node.command(&["format"]).status().expect("format");
    assert!(st.success(), "format: {st}");
    let shown = ip_out(&["-n", N1, "addr", "show", "dev", "slapedge-v1"]);
    assert!(
        shown.contains("fd00:5a:9::100/128") && shown.contains("10.0.44.10/32"),
        "{shown}"
    );
    assert!(
        !shown.contains("fd00:5a:9::101") && !shown.contains("10.0.44.11"),
        "partition 1's addresses left:\n{shown}"
    );
    let links = ip_out(&["-n", N1, "link", "show"]);
    assert!(
        links.contains("slapedget0") && !links.contains("slapedget1"),
        "{links}"
    );
    // Formatting again changes nothing (idempotent).
    let st = node.command(&["format"]).status().expect("format");
    assert!(st.success(), "second format: {st}");
    assert_eq!(
        ip_out(&["-n", N1, "addr", "show", "dev", "slapedge-v1"])
            .lines()
            .count(),
        shown.lines().count()
    );
}
