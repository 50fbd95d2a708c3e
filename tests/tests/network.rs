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
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use slapos_proto::{
    ComputerId, InstanceRequest, InstanceTitle, SoftwareType, SoftwareUrl, SupplyRequest,
    SupplyState,
};
use slapos_tests::{Master, Node, bin, free_port_block, privileged, wait_for};

const LONG: Duration = Duration::from_secs(90);
const N1: &str = "slapedge-n1";
const N2: &str = "slapedge-n2";
const USERS: &str = "slapedgenet";

/// Deletes the namespaces (and so the veth pair and TAPs) and the test's users when dropped.
struct Cleanup;

impl Cleanup {
    fn run() {
        for ns in [N1, N2] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for i in 0..2 {
            let name = format!("{USERS}{i}");
            let exists = Command::new("id")
                .arg(&name)
                .output()
                .is_ok_and(|o| o.status.success());
            if exists {
                let _ = Command::new("userdel").arg(&name).status();
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        Self::run();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Enter network namespace `ns` on this thread (processes it spawns inherit it).
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
    // SAFETY: one syscall on a valid descriptor; it changes this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

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

fn node_config(dir: &Path, master_url: &str, partitions: u32, ports: u16) -> String {
    format!(
        "master_url = \"{master_url}\"\ncomputer_id = \"COMP-NET\"\npartitions = {partitions}\n\
         software_root = \"software\"\ninstance_root = \"instance\"\nstate_dir = \"{}\"\n\
         poll_interval = 2\nlong_poll = 20\nrestart_backoff_min = 0.2\nrestart_backoff_max = 2\n\
         stop_timeout = 5\npromise_interval = 2\ninstall_retry = 2\nrt = false\n\
         isolation = \"users\"\nuser_prefix = \"{USERS}\"\n\
         [ports]\nbase = {ports}\nper_partition = 10\n\
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
    Cleanup::run();
    let _cleanup = Cleanup;
    ip(&["netns", "add", N1]);
    ip(&["netns", "add", N2]);
    ip(&[
        "-n",
        N1,
        "link",
        "add",
        "slapedge-v1",
        "type",
        "veth",
        "peer",
        "name",
        "slapedge-v2",
        "netns",
        N2,
    ]);
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
    for (ns, dev) in [
        (N1, "slapedge-v1"),
        (N2, "slapedge-v2"),
        (N1, "lo"),
        (N2, "lo"),
    ] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }

    // The body runs on a thread inside n1: master, node and client all live there.
    let body = std::thread::spawn(|| {
        enter(N1);
        run_in_n1();
    });
    if let Err(e) = body.join() {
        std::panic::resume_unwind(e);
    }
}

fn run_in_n1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let master = Master::start(&tmp.path().join("master.db"));
    let url = write_release(&tmp.path().join("release"));
    let node_dir = tmp.path().join("node");
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let ports = free_port_block(20);
    let config = node_dir.join("node.toml");
    std::fs::write(&config, node_config(&node_dir, &master.url, 2, ports)).expect("config");
    let mut node = Node {
        proc: None,
        config: config.clone(),
        instance_root: node_dir.join("instance"),
        computer: "COMP-NET".into(),
    };
    node.restart();

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
    for tap in ["slapedget0", "slapedget1"] {
        let l = ip_out(&["-n", N1, "-d", "link", "show", tap]);
        assert!(l.contains("tun type tap"), "{tap}: {l}");
        assert!(l.contains("UP"), "{tap} not up: {l}");
    }

    c.supply(
        &computer,
        &SupplyRequest {
            url: url.clone(),
            state: SupplyState::Available,
        },
    )
    .expect("supply");
    c.request(&InstanceRequest {
        title: InstanceTitle::parse("net-web").expect("title"),
        software_url: url,
        software_type: SoftwareType::default(),
        parameters: Default::default(),
        sla: BTreeMap::new(),
        state: None,
    })
    .expect("request");
    let service = wait_for("connection url", LONG, || {
        let i = c
            .instance(&InstanceTitle::parse("net-web").ok()?, None)
            .ok()?;
        Some(i.connection.get("url")?.as_str()?.to_owned())
    });
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
    std::fs::write(&config, node_config(&node_dir, &master.url, 1, ports)).expect("config");
    let st = Command::new(bin("slapos-node"))
        .args(["format", "--config"])
        .arg(&config)
        .status()
        .expect("format");
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
    let st = Command::new(bin("slapos-node"))
        .args(["format", "--config"])
        .arg(&config)
        .status()
        .expect("format");
    assert!(st.success(), "second format: {st}");
    assert_eq!(
        ip_out(&["-n", N1, "addr", "show", "dev", "slapedge-v1"])
            .lines()
            .count(),
        shown.lines().count()
    );
}
