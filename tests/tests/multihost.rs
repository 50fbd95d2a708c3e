//! Multi-host (root only): a master and two nodes, each in its own network namespace, over
//! mTLS — never on the machine's own interfaces.
//!
//! ```text
//!  slapedge-a                 slapedge-m                         slapedge-b
//!  node COMP-MH-A             slapos-master serve --tls-dir      node COMP-MH-B
//!  slapedge-am 10.77.1.2 ──── slapedge-ma 10.77.1.1
//!                             slapedge-mb 10.77.2.1 ──────────── slapedge-bm 10.77.2.2
//! ```
//!
//! The test thread running the scenario enters `slapedge-m` (`setns` is per thread), so the
//! master it spawns and the admin client live there; each node process (and its `enroll`) is
//! moved into its namespace by a `setns` between fork and exec. The scenario:
//!
//! * both nodes enroll over their veth link (`slapos-node enroll`, `master_ca` in the config),
//!   register and run a hello-web instance each;
//! * node A's link is cut (`ip link set slapedge-ma down` in the master's namespace): node B
//!   keeps converging (a parameter change is applied, its connection parameters updated), node
//!   A notices that the master is unreachable (its held long poll times out, ~35 s) and its
//!   instance keeps serving from its cache; a change requested for it meanwhile is not applied;
//! * the link is restored: node A resyncs and applies that change.
//!
//! Namespaces (and so the veth pairs) are deleted by a Drop guard, also on failure, and any
//! left by an earlier crashed run are deleted first.
//! Run: `cargo build -p node-edge -p master-lite --bins && cargo test -p slapos-tests --test
//! multihost` (needs `ip` and python3).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use slapos_proto::{ComputerId, InstanceRequest, Params, SoftwareUrl};
use slapos_tests::netns::{Netns, in_ns, ip, spawn_in, veth};
use slapos_tests::tls::{TlsMaster, stdout_ok};
use slapos_tests::{
    Client, Node, Proc, connection, example_release, http_get, instance_request, privileged,
    supply, wait_for,
};

const LONG: Duration = Duration::from_secs(150);
const NS_M: &str = "slapedge-m";
const NS_A: &str = "slapedge-a";
const NS_B: &str = "slapedge-b";

fn release() -> SoftwareUrl {
    example_release("hello-web")
}

fn request(c: &Client, title: &str, computer: &str, heading: &str) {
    let mut parameters = Params::new();
    parameters.insert("title".into(), heading.into());
    c.request(&InstanceRequest {
        sla: BTreeMap::from([("computer_guid".to_owned(), computer.to_owned())]),
        ..instance_request(title, &release(), parameters)
    })
    .expect("request");
}

/// The page at `url` as seen from namespace `ns`.
fn page_in(ns: &str, url: &str) -> Option<String> {
    let url = url.to_owned();
    in_ns(ns, move || http_get(&url))
}

/// One node: its namespace, computer, the master address it reaches.
struct Site {
    ns: &'static str,
    computer: &'static str,
    master_ip: &'static str,
    title: &'static str,
}

const A: Site = Site {
    ns: NS_A,
    computer: "COMP-MH-A",
    master_ip: "10.77.1.1",
    title: "mh-a",
};
const B: Site = Site {
    ns: NS_B,
    computer: "COMP-MH-B",
    master_ip: "10.77.2.1",
    title: "mh-b",
};

#[test]
fn two_nodes_in_namespaces_survive_a_cut_link() {
    if !privileged("two_nodes_in_namespaces_survive_a_cut_link") {
        return;
    }
    let _netns = Netns::create(&[NS_M, NS_A, NS_B]);
    for (m_dev, peer, ns, m_addr, addr) in [
        (
            "slapedge-ma",
            "slapedge-am",
            NS_A,
            "10.77.1.1/24",
            "10.77.1.2/24",
        ),
        (
            "slapedge-mb",
            "slapedge-bm",
            NS_B,
            "10.77.2.1/24",
            "10.77.2.2/24",
        ),
    ] {
        veth((NS_M, m_dev), (ns, peer));
        ip(&["-n", NS_M, "addr", "add", m_addr, "dev", m_dev]);
        ip(&["-n", ns, "addr", "add", addr, "dev", peer]);
    }
    in_ns(NS_M, scenario);
}

fn scenario() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = tmp.path();
    // The master serves mTLS on every address of its namespace; its certificate names the
    // two veth addresses the nodes use.
    let master = TlsMaster::start(
        dir,
        "0.0.0.0:0",
        &[("ops", true)],
        &[A.master_ip, B.master_ip],
    );
    let admin = master.client("ops");

    // Each node: token, enrollment over its link, then run — all inside its namespace.
    let mut nodes = Vec::new();
    for site in [&A, &B] {
        let extra = format!(
            "state_dir = \"state\"\nmaster_ca = \"{}\"\npoll_interval = 1\nlong_poll = 5\n\
             rt = false\n",
            master.ca_file().display()
        );
        let master_url = format!("https://{}:{}", site.master_ip, master.port);
        let node = Node::configure(
            &dir.join(site.computer),
            &master_url,
            site.computer,
            1,
            &extra,
        );
        let token = master.token(site.computer, &[]);
        let mut enroll = node.command(&["enroll", "--token", &token]);
        spawn_in(&mut enroll, site.ns);
        let out = enroll.output().expect("run enroll");
        let out = stdout_ok("enroll", out);
        assert!(
            out.contains(&format!("computer:{}", site.computer)),
            "{out}"
        );
        let mut run = node.command(&["run"]);
        spawn_in(&mut run, site.ns);
        nodes.push(Proc::spawn(&format!("node {}", site.computer), run));
    }

    for site in [&A, &B] {
        let c = ComputerId::parse(site.computer).expect("id");
        wait_for(&format!("{} registered", site.computer), LONG, || {
            admin.computer(&c).ok()
        });
        supply(&admin, c.as_str(), &release());
        request(
            &admin,
            site.title,
            site.computer,
            &format!("{} v1", site.title),
        );
    }
    let mut urls = BTreeMap::new();
    for site in [&A, &B] {
        let url = wait_for(&format!("{} connection", site.title), LONG, || {
            connection(&admin, site.title, "url")
        });
        let want = format!("{} v1", site.title);
        let page = wait_for(&format!("{} page", site.title), LONG, || {
            page_in(site.ns, &url).filter(|p| p.contains(&want))
        });
        assert!(page.contains(&want), "{page}");
        urls.insert(site.title, url);
    }

    // Cut node A's link on the master's side.
    ip(&["-n", NS_M, "link", "set", "slapedge-ma", "down"]);
    request(&admin, A.title, A.computer, "mh-a v2");
    request(&admin, B.title, B.computer, "mh-b v2");
    // B converges: the change is applied and its connection parameters updated.
    wait_for("B's new title published", LONG, || {
        (connection(&admin, B.title, "title")? == "mh-b v2").then_some(())
    });
    let page = wait_for("B's new page", LONG, || {
        page_in(NS_B, &urls[B.title]).filter(|p| p.contains("mh-b v2"))
    });
    assert!(page.contains("mh-b v2"), "{page}");
    // A notices (its held long poll times out: 30 s + long_poll) and works from its cache: its
    // instance keeps serving, and it has not seen the change.
    nodes[0].wait_line("master unreachable", Duration::from_secs(90));
    let page = page_in(NS_A, &urls[A.title]).expect("A's instance answers while cut off");
    assert!(page.contains("mh-a v1"), "{page}");
    assert_eq!(
        connection(&admin, A.title, "title").as_deref(),
        Some("mh-a v1")
    );

    // Restore: A resyncs and applies the change requested while it was cut off.
    ip(&["-n", NS_M, "link", "set", "slapedge-ma", "up"]);
    wait_for(
        "A's new title published after the link is back",
        LONG,
        || (connection(&admin, A.title, "title")? == "mh-a v2").then_some(()),
    );
    let page = wait_for("A's new page", LONG, || {
        page_in(NS_A, &urls[A.title]).filter(|p| p.contains("mh-a v2"))
    });
    assert!(page.contains("mh-a v2"), "{page}");
    for mut n in nodes {
        n.stop();
    }
}
