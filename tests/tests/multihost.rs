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
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use slapos_proto::{
    ComputerId, InstanceRequest, InstanceTitle, Params, SoftwareType, SoftwareUrl, SupplyRequest,
    SupplyState,
};
use slapos_tests::{Client, Proc, bin, http_get, privileged, repo_root, wait_for};

const LONG: Duration = Duration::from_secs(150);
const NS_M: &str = "slapedge-m";
const NS_A: &str = "slapedge-a";
const NS_B: &str = "slapedge-b";

/// Deletes the namespaces (and with them the veth pairs) when dropped.
struct Cleanup;

impl Cleanup {
    fn run() {
        for ns in [NS_M, NS_A, NS_B] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
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

fn netns_file(ns: &str) -> std::fs::File {
    std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns")
}

/// Enter network namespace `ns` on this thread (processes it spawns inherit it).
fn enter(ns: &str) {
    let f = netns_file(ns);
    // SAFETY: one syscall on a valid descriptor; it changes this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Make the process `cmd` spawns join network namespace `ns` (between fork and exec).
fn spawn_in(cmd: &mut Command, ns: &str) {
    let f = netns_file(ns);
    // SAFETY: the hook runs in the forked child before exec and only makes the setns syscall
    // (async-signal-safe, no allocation) on a descriptor the closure keeps open.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Run `f` on a thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &'static str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let t = std::thread::spawn(move || {
        enter(ns);
        f()
    });
    match t.join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn master_cmd(args: &[&str]) -> Output {
    Command::new(bin("slapos-master"))
        .args(args)
        .output()
        .expect("run slapos-master")
}

fn release() -> SoftwareUrl {
    let url = repo_root().join("examples/hello-web/software.toml");
    SoftwareUrl::parse(url.to_string_lossy().into_owned()).expect("url")
}

fn request(c: &Client, title: &str, computer: &str, heading: &str) {
    let mut parameters = Params::new();
    parameters.insert("title".into(), heading.into());
    c.request(&InstanceRequest {
        title: InstanceTitle::parse(title).expect("title"),
        software_url: release(),
        software_type: SoftwareType::default(),
        parameters,
        sla: BTreeMap::from([("computer_guid".to_owned(), computer.to_owned())]),
        state: None,
    })
    .expect("request");
}

/// The instance's published connection parameter `key`.
fn connection(c: &Client, title: &str, key: &str) -> Option<String> {
    let i = c.instance(&InstanceTitle::parse(title).ok()?, None).ok()?;
    Some(i.connection.get(key)?.as_str()?.to_owned())
}

/// The page at `url` as seen from namespace `ns`.
fn page_in(ns: &'static str, url: &str) -> Option<String> {
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
    Cleanup::run();
    let _cleanup = Cleanup;
    for ns in [NS_M, NS_A, NS_B] {
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
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
        ip(&[
            "-n", NS_M, "link", "add", m_dev, "type", "veth", "peer", "name", peer, "netns", ns,
        ]);
        ip(&["-n", NS_M, "addr", "add", m_addr, "dev", m_dev]);
        ip(&["-n", ns, "addr", "add", addr, "dev", peer]);
        ip(&["-n", NS_M, "link", "set", m_dev, "up"]);
        ip(&["-n", ns, "link", "set", peer, "up"]);
    }
    let body = std::thread::spawn(|| {
        enter(NS_M);
        scenario();
    });
    if let Err(e) = body.join() {
        std::panic::resume_unwind(e);
    }
}

fn scenario() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = tmp.path();
    let (db, tls, creds) = (dir.join("master.db"), dir.join("tls"), dir.join("creds"));
    ok(
        "user create",
        master_cmd(&[
            "user",
            "create",
            "ops",
            "--admin",
            "--out",
            s(&creds),
            "--tls-dir",
            s(&tls),
            "--db",
            s(&db),
        ]),
    );
    // The master serves mTLS on every address of its namespace; its certificate names the
    // two veth addresses the nodes use.
    let mut cmd = Command::new(bin("slapos-master"));
    cmd.args([
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--db",
        s(&db),
        "--tls-dir",
        s(&tls),
    ])
    .args(["--tls-name", A.master_ip, "--tls-name", B.master_ip]);
    let _master = Proc::spawn("master", cmd);
    let line = _master.wait_line("listening on https://", Duration::from_secs(30));
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let ca_file = tls.join("ca.pem");
    let ca = std::fs::read_to_string(&ca_file).expect("ca.pem");
    let read = |f: &str| std::fs::read_to_string(creds.join(f)).expect("credential file");
    let admin = Client::with_identity(
        &format!("https://127.0.0.1:{port}"),
        &ca,
        &read("ops.pem"),
        &read("ops.key"),
    )
    .expect("admin client");

    // Each node: token, enrollment over its link, then run — all inside its namespace.
    let mut nodes = Vec::new();
    for site in [&A, &B] {
        let ndir = dir.join(site.computer);
        std::fs::create_dir_all(&ndir).expect("node dir");
        let config = ndir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "master_url = \"https://{}:{port}\"\ncomputer_id = \"{}\"\npartitions = 1\n\
                 software_root = \"software\"\ninstance_root = \"instance\"\n\
                 state_dir = \"state\"\nmaster_ca = \"{}\"\npoll_interval = 1\nlong_poll = 5\n\
                 restart_backoff_min = 0.2\nrestart_backoff_max = 2\nstop_timeout = 5\n\
                 promise_interval = 2\ninstall_retry = 2\nrt = false\nisolation = \"none\"\n\
                 [ports]\nbase = 20000\nper_partition = 10\n",
                site.master_ip,
                site.computer,
                ca_file.display()
            ),
        )
        .expect("node config");
        let token = ok(
            "token create",
            master_cmd(&[
                "token",
                "create",
                "--computer",
                site.computer,
                "--db",
                s(&db),
            ]),
        )
        .trim()
        .to_owned();
        let mut enroll = Command::new(bin("slapos-node"));
        enroll
            .args(["enroll", "--token", &token, "--config"])
            .arg(&config);
        spawn_in(&mut enroll, site.ns);
        let out = ok("enroll", enroll.output().expect("run enroll"));
        assert!(
            out.contains(&format!("computer:{}", site.computer)),
            "{out}"
        );
        let mut run = Command::new(bin("slapos-node"));
        run.args(["run", "--config"]).arg(&config);
        spawn_in(&mut run, site.ns);
        nodes.push(Proc::spawn(&format!("node {}", site.computer), run));
    }

    for site in [&A, &B] {
        let c = ComputerId::parse(site.computer).expect("id");
        wait_for(&format!("{} registered", site.computer), LONG, || {
            admin.computer(&c).ok()
        });
        admin
            .supply(
                &c,
                &SupplyRequest {
                    url: release(),
                    state: SupplyState::Available,
                },
            )
            .expect("supply");
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
