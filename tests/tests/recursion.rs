//! Recursion (issue 15, part 5): SlapOS deploying SlapOS. A `slapos-master` runs as an instance
//! of the `examples/master` release, and a second node joins that inner master.
//!
//! ```text
//!  outer master (serve, plain HTTP on loopback)
//!   └─ node COMP-HOST, partition slappart0: instance `inner-master` of examples/master
//!        └─ slapos-master serve --tls-dir srv/master/tls   https://127.0.0.1:<ports[0]>
//!             └─ node COMP-INNER (enrolled with the published token, mTLS)
//!                  └─ partition slappart0: hello-web, requested on the inner master
//! ```
//!
//! Everything is a real process: the outer master, both nodes, the inner master the host node
//! supervises; the request on the inner master goes through the `slapos-master` CLI with the
//! admin credentials the instance published. The outer instance is stopped (the inner master's
//! port closes, the inner node goes offline, hello-web keeps answering) and started again (same
//! CA, the inner node's certificate still works, a change converges). Then it is destroyed: the
//! host node stops the inner master with TERM (its process gone, its port closed, its database
//! and CA wiped with the partition), and the inner node goes offline but keeps serving hello-web,
//! and brings it back from its cached desired state when it restarts with no master. Both nodes run on loopback in this namespace (unprivileged
//! `isolation = "none"` partitions); needs python3 (the release's prepare step, its promise and
//! hello-web). Run: `cargo build --workspace --bins && cargo test -p slapos-tests --test
//! recursion`.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use slapos_proto::{ComputerId, InstanceState, InstanceTitle, StateChange};
use slapos_test_support::gate;
use slapos_tests::tls::{master_cli, path_str, stdout_ok};
use slapos_tests::{
    Client, Master, Node, Proc, connection, example_release, http_get, instance_request, params,
    supply, wait_for,
};

const LONG: Duration = Duration::from_secs(90);
const HOST: &str = "COMP-HOST";
const INNER: &str = "COMP-INNER";

/// The connection parameters of the outer instance that a node and an operator of the inner
/// master need.
struct Published {
    url: String,
    ca_pem: String,
    ca_sha256: String,
    admin_cert: String,
    admin_key: String,
    token: String,
}

fn published(c: &Client, title: &str) -> Option<Published> {
    let get = |k: &str| connection(c, title, k);
    Some(Published {
        url: get("url")?,
        ca_pem: get("ca-pem")?,
        ca_sha256: get("ca-sha256")?,
        admin_cert: get("admin-cert")?,
        admin_key: get("admin-key")?,
        token: get(&format!("enroll-token-{INNER}"))?,
    })
}

/// Whether anything accepts connections on `url`'s host and port.
fn port_open(url: &str) -> bool {
    let addr: SocketAddr = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .expect("host:port");
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// The pid recorded for `service` in a partition (`.slapos/run/<service>.pid`).
fn service_pid(partition: &Path, service: &str) -> Option<u32> {
    let text =
        std::fs::read_to_string(partition.join(format!(".slapos/run/{service}.pid"))).ok()?;
    let rec: serde_json::Value = serde_json::from_str(&text).ok()?;
    u32::try_from(rec["pid"].as_u64()?).ok()
}

/// Whether `pid` is a running `slapos-master serve`.
fn is_inner_master(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let argv: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            argv.first().is_some_and(|a| a.ends_with(b"slapos-master"))
                && argv.get(1) == Some(&&b"serve"[..])
        })
        .unwrap_or(false)
}

/// Ask the outer master for `state` of `title` and wait until its node reports it.
fn converge_to(c: &Client, title: &str, state: InstanceState) {
    let t = InstanceTitle::parse(title).expect("title");
    c.set_state(&t, &StateChange { state })
        .unwrap_or_else(|e| panic!("{title} → {}: {e}", state.as_str()));
    wait_for(
        &format!("{title} reported {}", state.as_str()),
        LONG,
        || {
            let i = c.instance(&t, None).ok()?;
            let r = i.reported?.report;
            (r.state == state && r.revision == i.revision).then_some(())
        },
    );
}

/// The first line containing `needle` that `proc` printed after its first `from` lines.
fn line_after(proc: &Proc, from: usize, needle: &str) -> String {
    wait_for(&format!("{needle:?} after line {from}"), LONG, || {
        let lines = proc.output();
        lines
            .get(from..)?
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    })
}

#[test]
fn a_master_deployed_as_an_instance_hosts_a_node_of_its_own() {
    const TEST: &str = "a_master_deployed_as_an_instance_hosts_a_node_of_its_own";
    if !gate::tool(TEST, "python3") {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();

    // The outer world: a master and a host node whose tools_dir (next to slapos-node) holds
    // slapos-master, as an installation puts both in /usr/bin.
    let outer = Master::start(&dir.join("outer.db"));
    let oc = outer.client();
    // Two nodes on one host: no real-time manager (one per host, docs/node.md).
    let mut host = Node::start_with(&dir.join("host"), &outer.url, HOST, 1, "rt = false\n");
    wait_for("host node registered", LONG, || {
        oc.computer(&ComputerId::parse(HOST).ok()?).ok()
    });
    let release = example_release("master");
    supply(&oc, HOST, &release);
    let info = oc
        .request(&instance_request(
            "inner-master",
            &release,
            params(json!({ "computers": INNER })),
        ))
        .expect("request the master instance");
    let partition = host.partition_dir(info.partition.as_str());
    let p = wait_for("the inner master's connection parameters", LONG, || {
        published(&oc, "inner-master")
    });
    assert!(p.url.starts_with("https://127.0.0.1:"), "{}", p.url);
    assert!(
        p.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        p.ca_pem
    );
    assert_eq!(p.ca_sha256.len(), 64, "{}", p.ca_sha256);
    // Its database and CA live in the partition.
    for f in [
        "srv/master/db/master.db",
        "srv/master/tls/ca.key",
        "etc/master.toml",
    ] {
        assert!(partition.join(f).is_file(), "{f} not in the partition");
    }
    // The health promise (mTLS, the monitor certificate) holds.
    wait_for("master-health promise ok", LONG, || {
        let i = oc
            .instance(&InstanceTitle::parse("inner-master").ok()?, None)
            .ok()?;
        let promises = &i.reported?.report.promises;
        promises
            .iter()
            .any(|p| p.name == "master-health" && p.ok)
            .then_some(())
    });
    let pid = wait_for("the inner master's pid record", LONG, || {
        service_pid(&partition, "master")
    });
    assert!(is_inner_master(pid), "pid {pid} is not slapos-master serve");

    // The operator's files of the inner master, from the connection parameters.
    let creds = dir.join("inner-creds");
    std::fs::create_dir_all(&creds).expect("creds dir");
    let (ca, cert, key, token) = (
        creds.join("ca.pem"),
        creds.join("admin.pem"),
        creds.join("admin.key"),
        creds.join("token"),
    );
    for (f, text) in [
        (&ca, &p.ca_pem),
        (&cert, &p.admin_cert),
        (&key, &p.admin_key),
        (&token, &p.token),
    ] {
        std::fs::write(f, text).expect("write credential");
    }

    // The inner world: a second node enrolls with the published token, over TLS, trusting only
    // the published CA, then runs against the inner master.
    let mut inner_node = Node::configure(
        &dir.join("inner"),
        &p.url,
        INNER,
        1,
        &format!(
            "state_dir = \"state\"\nmaster_ca = \"{}\"\nrt = false\n",
            ca.display()
        ),
    );
    let out = inner_node
        .command(&["enroll", "--token-file", path_str(&token)])
        .output()
        .expect("run enroll");
    let out = stdout_ok("enroll with the published token", out);
    assert!(out.contains(&format!("computer:{INNER}")), "{out}");
    inner_node.restart();

    let ic = Client::with_identity(&p.url, &p.ca_pem, &p.admin_cert, &p.admin_key)
        .expect("admin client of the inner master");
    wait_for("inner node registered with the inner master", LONG, || {
        ic.computer(&ComputerId::parse(INNER).ok()?).ok()
    });
    let hello = example_release("hello-web");
    let cli = |what: &str, args: &[&str]| {
        let mut all = vec![
            "--master",
            &p.url,
            "--ca",
            path_str(&ca),
            "--cert",
            path_str(&cert),
            "--key",
            path_str(&key),
        ];
        all.extend_from_slice(args);
        stdout_ok(what, master_cli(&all))
    };
    cli(
        "supply on the inner master",
        &["supply", hello.as_str(), "--computer", INNER],
    );
    cli(
        "request on the inner master",
        &[
            "request",
            "inner-web",
            hello.as_str(),
            "--param",
            "title=Served under the inner master",
        ],
    );
    let web = wait_for("hello-web url on the inner master", LONG, || {
        connection(&ic, "inner-web", "url")
    });
    let page = wait_for("hello-web answers", LONG, || {
        http_get(&web).filter(|p| p.contains("Served under the inner master"))
    });
    assert!(page.contains(INNER), "{page}");
    // Two separate worlds: each master knows only its own computer.
    let computers = |c: &Client| -> Vec<String> {
        let list = c.computers().expect("computers");
        list.into_iter().map(|c| c.id.as_str().to_owned()).collect()
    };
    assert_eq!(computers(&oc), [HOST]);
    assert_eq!(computers(&ic), [INNER]);

    let inner_proc = inner_node.proc.as_ref().expect("inner node running");

    // Stopped, the inner master is down and its node works offline; started again, it comes
    // back with its database and CA: the node's certificate still works, a change converges.
    let mark = inner_proc.output().len();
    converge_to(&oc, "inner-master", InstanceState::Stopped);
    assert!(!port_open(&p.url), "{} open while stopped", p.url);
    line_after(inner_proc, mark, "master unreachable");
    assert!(
        http_get(&web).is_some(),
        "hello-web down while the master is"
    );
    let mark = inner_proc.output().len();
    converge_to(&oc, "inner-master", InstanceState::Started);
    assert_eq!(
        connection(&oc, "inner-master", "ca-sha256").as_deref(),
        Some(p.ca_sha256.as_str()),
        "a new CA after a restart"
    );
    wait_for("the restarted inner master answers", LONG, || {
        ic.computer(&ComputerId::parse(INNER).ok()?).ok()
    });
    // The inner node's poll may be held by the restarted master: the change wakes it.
    cli(
        "change on the restarted inner master",
        &[
            "request",
            "inner-web",
            hello.as_str(),
            "--param",
            "title=Second",
        ],
    );
    wait_for(
        "hello-web changed through the restarted master",
        LONG,
        || http_get(&web).filter(|p| p.contains("Second")),
    );
    line_after(inner_proc, mark, "master reachable");
    let pid = wait_for("the restarted inner master's pid record", LONG, || {
        service_pid(&partition, "master").filter(|p| is_inner_master(*p))
    });

    // Destroyed, the host node stops the inner master with TERM and wipes it.
    let mark = inner_proc.output().len();
    let t = InstanceTitle::parse("inner-master").expect("title");
    oc.set_state(
        &t,
        &StateChange {
            state: InstanceState::Destroyed,
        },
    )
    .expect("destroy the master instance");
    let host_proc = host.proc.as_ref().expect("host node running");
    let how = wait_for("the host node stops the inner master", LONG, || {
        host_proc.output().into_iter().find(|l| {
            l.split_whitespace().any(|w| w == format!("pid={pid}"))
                && (l.contains("stopped (TERM)") || l.contains("killed"))
        })
    });
    assert!(how.contains("stopped (TERM)"), "not a clean stop: {how}");
    wait_for("partition freed on the outer master", LONG, || {
        let info = oc.computer(&ComputerId::parse(HOST).ok()?).ok()?;
        info.partitions
            .iter()
            .all(|p| p.instance.is_none())
            .then_some(())
    });
    assert!(
        !is_inner_master(pid),
        "the inner master (pid {pid}) survived"
    );
    assert!(!port_open(&p.url), "{} still accepts connections", p.url);
    assert!(
        !partition.join("srv/master").exists(),
        "the inner master's database and CA survived the destroy"
    );

    // The inner node notices, keeps its partition running, and brings it back from its cache
    // when it restarts with no master to ask.
    line_after(inner_proc, mark, "master unreachable");
    let page = http_get(&web).expect("hello-web still answers from the inner node's cache");
    assert!(page.contains("Second"), "{page}");
    inner_node.stop();
    assert!(http_get(&web).is_none(), "hello-web outlived its node");
    inner_node.restart();
    let page = wait_for("hello-web back from the cache", LONG, || http_get(&web));
    assert!(page.contains("Second"), "{page}");
    inner_node.stop();
    host.stop();
    eprintln!("recursion scenario: {:.1?}", started.elapsed());
}
