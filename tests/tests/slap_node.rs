//! node-edge against a real SLAP master, each test run against both peers: slapproxy
//! (`slapos proxy start` of slapos.core 1.26.1 from `.venv/slapos`, see
//! `scripts/deps/slapos-venv.sh`) and master-lite (`slapos-master serve --cfg`, the same
//! `slapos-proxy.cfg`), on loopback, with `slapos-node run` set to `protocol = "slap"` and the
//! real `slapos` CLI:
//!
//! * hello-web: supply it, request it until the CLI prints the connection parameters the node
//!   published, stop it, destroy it (the master frees the partition only on the node's
//!   `destroyedComputerPartition`), remove the release.
//! * child requests: `tests/fixtures/slap-child`, whose default instance requests a `child`
//!   instance as its partition (`requestComputerPartition` with `X-SlapPartition`); the child
//!   is allocated on the same computer, converges and publishes `secret`; the parent's rendered
//!   instance sees it (in a file and in its own connection parameters, which the CLI prints).
//!
//! Without the venv (or python3, which hello-web needs) the test prints a reason and passes,
//! unless `SLAPOS_REQUIRE_TOOLS=1`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use slapos_proto::slap::{ComputerDoc, loads};
use slapos_test_support::gate::{Need, skip};
use slapos_tests::{Node, Proc, bin, http_get, repo_root, url_in, wait_for};

const COMPUTER: &str = "COMP";

fn skip_or_fail(why: String) -> Option<PathBuf> {
    skip(Need::Tools, "slap_node", &why);
    None
}

/// The venv's `bin` directory, `None` (after printing why) when the test must be skipped.
fn tools() -> Option<PathBuf> {
    let v = repo_root().join(".venv/slapos/bin");
    if !v.join("slapos").exists() {
        return skip_or_fail(format!(
            "{} missing: run scripts/deps/slapos-venv.sh",
            v.join("slapos").display()
        ));
    }
    let python = Command::new("python3").arg("--version").output();
    if !python.is_ok_and(|o| o.status.success()) {
        return skip_or_fail("python3 (needed by hello-web) missing".into());
    }
    Some(v)
}

/// The SLAP master a test runs against.
#[derive(Debug, Clone, Copy)]
enum Peer {
    /// `slapos proxy start --cfg F` (slapos.core 1.26.1).
    Slapproxy,
    /// `slapos-master serve --cfg F` (this repository's master-lite).
    MasterLite,
}

/// The peer with the `slapos-proxy.cfg` the slapos docs describe, its database in `dir`, and
/// `dir/client.cfg` for the CLI; stopped when the handle drops. slapproxy cannot take port 0:
/// it gets a port that was free a moment ago; master-lite takes 0 and prints its address.
fn start_peer(peer: Peer, venv: &Path, dir: &Path) -> (Proc, String) {
    let port = match peer {
        Peer::Slapproxy => TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port(),
        Peer::MasterLite => 0,
    };
    let cfg = dir.join("slapos-proxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[slapos]\ncomputer_id = {COMPUTER}\n\n[slapproxy]\nhost = 127.0.0.1\nport = {port}\n\
             database_uri = {}\n",
            dir.join("proxy.db").display()
        ),
    )
    .expect("write slapos-proxy.cfg");
    let (proc, url) = match peer {
        Peer::Slapproxy => {
            let mut cmd = Command::new(venv.join("slapos"));
            cmd.args(["proxy", "start", "--cfg"])
                .arg(&cfg)
                .current_dir(dir);
            let proc = Proc::spawn("slapproxy", cmd);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_for("slapproxy to listen", Duration::from_secs(60), || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .ok()
                    .map(drop)
            });
            (proc, format!("http://127.0.0.1:{port}"))
        }
        Peer::MasterLite => {
            let mut cmd = Command::new(bin("slapos-master"));
            cmd.args(["serve", "--cfg"])
                .arg(&cfg)
                .env("SLAPOS_LOG", "warn")
                .current_dir(dir);
            let proc = Proc::spawn("master-lite", cmd);
            let line = proc.wait_line("listening on http://", Duration::from_secs(30));
            let url = url_in(&line).expect("url in the listening line");
            (proc, url)
        }
    };
    std::fs::write(
        dir.join("client.cfg"),
        format!("[slapos]\nmaster_url = {url}\nmaster_rest_url = {url}/hateoas\n"),
    )
    .expect("write client.cfg");
    (proc, url)
}

fn out(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `slapos ARGS --cfg client.cfg` (the CLI logs its results on stderr).
fn slapos(venv: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(venv.join("slapos"))
        .args(args)
        .arg("--cfg")
        .arg(dir.join("client.cfg"))
        .current_dir(dir)
        .output()
        .expect("run slapos")
}

/// slapproxy's view of the computer (`getFullComputerInformation`, decoded).
fn computer(url: &str) -> ComputerDoc {
    let body = http_get(&format!(
        "{url}/getFullComputerInformation?computer_id={COMPUTER}"
    ))
    .expect("getFullComputerInformation answers");
    ComputerDoc::from_value(&loads(&body).expect("xml_marshaller")).expect("a Computer")
}

/// The value of `'key': '…'` in the CLI's printed connection dictionary.
fn printed(output: &str, key: &str) -> Option<String> {
    let start = output.find(&format!("'{key}': '"))? + key.len() + 5;
    let end = output[start..].find('\'')?;
    Some(output[start..start + end].to_owned())
}

#[test]
fn node_edge_converges_what_the_real_slapos_cli_requests_from_slapproxy() {
    hello_web(Peer::Slapproxy);
}

#[test]
fn node_edge_converges_what_the_real_slapos_cli_requests_from_master_lite() {
    hello_web(Peer::MasterLite);
}

#[test]
fn a_child_request_over_slap_brings_the_childs_connection_to_the_parent_slapproxy() {
    child_request(Peer::Slapproxy);
}

#[test]
fn a_child_request_over_slap_brings_the_childs_connection_to_the_parent_master_lite() {
    child_request(Peer::MasterLite);
}

/// `slapos-node run` with `protocol = "slap"` and two partitions, registered.
fn start_node(dir: &Path, url: &str) -> Node {
    let node = Node::start_with(&dir.join("node"), url, COMPUTER, 2, "protocol = \"slap\"\n");
    let proc = node.proc.as_ref().expect("node running");
    proc.wait_line("registered", Duration::from_secs(30));
    node
}

fn node_output(node: &Node) -> String {
    node.proc
        .as_ref()
        .map(|p| p.output().join("\n"))
        .unwrap_or_default()
}

/// The output of `run` (a `slapos request`), run every 2 s until it succeeds and prints `key`
/// with a value that is `done`; fails after 180 s with the last output and the node's.
fn until_printed(
    node: &Node,
    peer: Peer,
    run: impl Fn() -> Output,
    key: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let o = run();
        let text = out(&o);
        if o.status.success() && printed(&text, key).is_some_and(|v| done(&v)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{peer:?}: no `{key}` as expected after 180 s; last CLI output:\n{text}\nnode \
             output:\n{}",
            node_output(node)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn child_request(peer: Peer) {
    let Some(venv) = tools() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_peer, url) = start_peer(peer, &venv, dir);
    let mut node = start_node(dir, &url);
    let sr = repo_root().join("tests/fixtures/slap-child/software.toml");
    let sr = sr.to_str().expect("utf-8 path");
    let o = slapos(&venv, dir, &["supply", sr, COMPUTER]);
    assert!(o.status.success(), "supply: {}", out(&o));

    // The parent publishes `pending` until the child's `secret` comes back to it.
    let text = until_printed(
        &node,
        peer,
        || {
            slapos(
                &venv,
                dir,
                &["request", "parent", sr, "--node", "computer_guid=COMP"],
            )
        },
        "child_secret",
        |s| s != "pending",
    );
    // The child runs in the other partition of the same computer.
    assert_eq!(
        printed(&text, "child_secret").as_deref(),
        Some("hi from slappart1"),
        "{text}"
    );
    let c = computer(&url);
    let kinds: Vec<(String, Option<String>)> = c
        .partition_list
        .iter()
        .map(|p| {
            let ty = p
                .parameters
                .as_ref()
                .and_then(|d| d.get("slap_software_type"))
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            (p.partition_id.clone(), ty)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("slappart0".to_owned(), Some("default".to_owned())),
            ("slappart1".to_owned(), Some("child".to_owned())),
        ],
        "{peer:?}"
    );
    // The parent's rendered instance holds it.
    let file = node.partition_dir("slappart0").join("srv/child-secret.txt");
    assert_eq!(
        std::fs::read_to_string(&file).ok().as_deref(),
        Some("hi from slappart1"),
        "{}",
        file.display()
    );
    node.stop();
}

fn hello_web(peer: Peer) {
    let Some(venv) = tools() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_peer, url) = start_peer(peer, &venv, dir);

    // The node, configured like `Node::start` does plus `protocol = "slap"`.
    let mut node = start_node(dir, &url);
    let ports = node.ports;
    // Registration is slapos node format's call: slapproxy now lists both partitions, free.
    let c = computer(&url);
    let ids: Vec<&str> = c
        .partition_list
        .iter()
        .map(|p| p.partition_id.as_str())
        .collect();
    assert_eq!(ids, ["slappart0", "slappart1"]);
    assert!(
        c.partition_list
            .iter()
            .all(|p| p.software_release.is_none())
    );

    let sr = repo_root().join("examples/hello-web/software.toml");
    let sr = sr.to_str().expect("utf-8 path");
    let o = slapos(&venv, dir, &["supply", sr, COMPUTER]);
    assert!(o.status.success(), "supply: {}", out(&o));

    // Request until the CLI prints what the node published.
    let request = |extra: &[&str]| {
        let mut args = vec![
            "request",
            "web",
            sr,
            "--node",
            "computer_guid=COMP",
            "--parameters",
            "title=Hello SLAP",
        ];
        args.extend_from_slice(extra);
        slapos(&venv, dir, &args)
    };
    let text = until_printed(&node, peer, || request(&[]), "url", |_| true);
    let web = printed(&text, "url").unwrap_or_default();
    assert_eq!(
        printed(&text, "title").as_deref(),
        Some("Hello SLAP"),
        "{text}"
    );
    assert!(
        web.starts_with(&format!("http://127.0.0.1:{ports}/")),
        "{web}"
    );
    let page = wait_for("the page", Duration::from_secs(30), || http_get(&web));
    assert!(page.contains("Hello SLAP"), "{page}");
    let c = computer(&url);
    let busy = c
        .partition_list
        .iter()
        .find(|p| p.software_release.is_some())
        .expect("a partition runs `web`");
    assert_eq!(busy.partition_id, "slappart0");
    assert_eq!(busy.requested_state.as_deref(), Some("started"));
    let part = node.partition_dir("slappart0");
    assert!(part.join(".slapos/instance.toml").exists());

    // Stop: the service goes away, the rendered partition stays.
    let o = request(&["--state", "stopped"]);
    assert!(o.status.success(), "stop: {}", out(&o));
    wait_for("the service to stop", Duration::from_secs(60), || {
        http_get(&web).is_none().then_some(())
    });
    assert!(part.join(".slapos/instance.toml").exists());

    // Destroy: slapproxy frees the partition when the node reports it destroyed.
    let o = request(&["--state", "destroyed"]);
    assert!(o.status.success(), "destroy: {}", out(&o));
    wait_for(
        "slapproxy to free slappart0 (destroyedComputerPartition)",
        Duration::from_secs(60),
        || {
            computer(&url)
                .partition_list
                .iter()
                .all(|p| p.software_release.is_none())
                .then_some(())
        },
    );
    assert!(
        !part.join(".slapos/instance.toml").exists(),
        "the partition was wiped"
    );
    assert!(http_get(&web).is_none());

    // Remove the release: the node uninstalls it and slapproxy drops it on
    // destroyedSoftwareRelease.
    let o = slapos(&venv, dir, &["remove", sr, COMPUTER]);
    assert!(o.status.success(), "remove: {}", out(&o));
    wait_for(
        "slapproxy to drop the release (destroyedSoftwareRelease)",
        Duration::from_secs(60),
        || {
            computer(&url)
                .software_release_list
                .is_empty()
                .then_some(())
        },
    );
    node.stop();
}
