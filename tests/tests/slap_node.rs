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
//! * usage and bang (`usage_and_bang`): with hello-web running and `usage_period = 1`, the
//!   node's samples go out as `useComputer` journals: slapproxy acknowledges them (the outbox
//!   stays drained); master-lite stores them: the samples the node kept in its outbox while
//!   master-lite was stopped are stored, once it is back, with the node's periods and figures.
//!   `slapos-node bang --partition slappart0` (`softwareInstanceBang`) moves the partition's
//!   timestamp in `getFullComputerInformation` and the node processes it again (a new
//!   revision converged); `slapos-node bang` alone (`computerBang`) is accepted.
//! * the journal the node writes is byte for byte what slapos.collect's `Journal` writes for
//!   the same values (`journal_is_what_slapos_collect_writes`).
//!
//! Without the venv (or python3, which hello-web needs) the test prints a reason and passes,
//! unless `SLAPOS_REQUIRE_TOOLS=1`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use slapos_proto::slap::{ComputerDoc, loads};
use slapos_test_support::gate::{Need, skip};
use slapos_tests::{
    Node, Proc, bin, http_get, output_text, repo_root, url_in, usage_outbox_depth, wait_for,
};

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
    start_peer_on(peer, venv, dir, 0)
}

/// [`start_peer`] on `port` (0: any), the database in `dir` kept (a restart).
fn start_peer_on(peer: Peer, venv: &Path, dir: &Path, port: u16) -> (Proc, String) {
    let port = match peer {
        _ if port != 0 => port,
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
        let text = output_text(&o);
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
    assert!(o.status.success(), "supply: {}", output_text(&o));

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
    assert!(o.status.success(), "supply: {}", output_text(&o));

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
    assert!(o.status.success(), "stop: {}", output_text(&o));
    wait_for("the service to stop", Duration::from_secs(60), || {
        http_get(&web).is_none().then_some(())
    });
    assert!(part.join(".slapos/instance.toml").exists());

    // Destroy: slapproxy frees the partition when the node reports it destroyed.
    let o = request(&["--state", "destroyed"]);
    assert!(o.status.success(), "destroy: {}", output_text(&o));
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
    assert!(o.status.success(), "remove: {}", output_text(&o));
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

#[test]
fn usage_over_slap_is_acknowledged_and_bang_reprocesses_slapproxy() {
    usage_and_bang(Peer::Slapproxy);
}

#[test]
fn usage_over_slap_is_stored_as_measured_and_bang_reprocesses_master_lite() {
    usage_and_bang(Peer::MasterLite);
}

/// One outbox sample as the node keeps it: (partition, start, end, cpu_ns, memory, disk).
type Sample = (String, u64, u64, u64, u64, u64);

/// `<state_dir>/usage/outbox`, read as `node_edge::usage::outbox` writes it.
fn outbox(node: &Node) -> Vec<Sample> {
    let path = node.instance_root.join(".slapos-node/usage/outbox");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Whole lines only: the node may be appending the next period.
    text.split_inclusive('\n')
        .filter_map(|l| {
            let f: Vec<&str> = l.strip_suffix('\n')?.split(' ').collect();
            let n = |i: usize| f.get(i)?.parse::<u64>().ok();
            Some((f[0].to_owned(), n(1)?, n(2)?, n(3)?, n(4)?, n(8)?))
        })
        .collect()
}

/// master-lite's stored samples of `COMPUTER` (its database read-only).
fn stored(db: &Path) -> Vec<(Sample, Option<String>)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the master database");
    let mut stmt = conn
        .prepare(
            "SELECT partition, start_ms, end_ms, cpu_ns, memory_bytes, disk_bytes, instance \
             FROM usage_sample WHERE computer = ?1 ORDER BY partition, start_ms",
        )
        .expect("prepare");
    stmt.query_map([COMPUTER], |r| {
        let n = |i| r.get::<_, i64>(i).map(|v| v as u64);
        Ok((
            (r.get(0)?, n(1)?, n(2)?, n(3)?, n(4)?, n(5)?),
            r.get::<_, Option<String>>(6)?,
        ))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// The revisions the node logged as converged for `partition`.
fn converged(node: &Node, partition: &str) -> Vec<String> {
    node_output(node)
        .lines()
        .filter(|l| l.contains("converged") && l.contains(partition))
        .filter_map(|l| {
            let r = &l[l.find("revision=")? + 9..];
            Some(r.split([' ', ',', '}']).next()?.to_owned())
        })
        .collect()
}

fn timestamp(url: &str, partition: &str) -> Option<String> {
    let c = computer(url);
    let p = c
        .partition_list
        .iter()
        .find(|p| p.partition_id == partition)?;
    p.parameters
        .as_ref()?
        .get("timestamp")?
        .as_str()
        .map(str::to_owned)
}

fn usage_and_bang(peer: Peer) {
    let Some(venv) = tools() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut master, url) = start_peer(peer, &venv, dir);
    let mut node = Node::start_with(
        &dir.join("node"),
        &url,
        COMPUTER,
        2,
        "protocol = \"slap\"\nusage_period = 1\nusage_metrics_file = \"usage.prom\"\n",
    );
    node.proc
        .as_ref()
        .expect("node running")
        .wait_line("registered", Duration::from_secs(30));
    let sr = repo_root().join("examples/hello-web/software.toml");
    let sr = sr.to_str().expect("utf-8 path");
    let o = slapos(&venv, dir, &["supply", sr, COMPUTER]);
    assert!(o.status.success(), "supply: {}", output_text(&o));
    let request = || {
        slapos(
            &venv,
            dir,
            &["request", "web", sr, "--node", "computer_guid=COMP"],
        )
    };
    until_printed(&node, peer, request, "url", |_| true);

    // Usage: every period's samples are acknowledged, so the outbox never grows beyond one
    // period (2 partitions).
    wait_for("a sample of slappart0", Duration::from_secs(30), || {
        let n = std::fs::read_to_string(node.config.with_file_name("usage.prom")).ok()?;
        n.contains("slapos_partition_disk_bytes{partition=\"slappart0\"}")
            .then_some(())
    });
    for _ in 0..4 {
        std::thread::sleep(Duration::from_secs(1));
        let depth = usage_outbox_depth(&node.config.with_file_name("usage.prom"));
        assert!(
            depth.is_some_and(|d| d <= 2),
            "{peer:?}: outbox depth {depth:?}: useComputer not acknowledged; node output:\n{}",
            node_output(&node)
        );
    }
    assert!(
        !node_output(&node).contains("the master refused"),
        "{}",
        node_output(&node)
    );
    if let Peer::MasterLite = peer {
        // Kept while master-lite is away, then stored as the node measured them.
        let port: u16 = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the url");
        master.stop();
        wait_for("samples kept", Duration::from_secs(30), || {
            usage_outbox_depth(&node.config.with_file_name("usage.prom")).filter(|d| *d >= 6)
        });
        let kept = outbox(&node);
        assert!(kept.len() >= 6, "{kept:?}");
        let (m, _) = start_peer_on(peer, &venv, dir, port);
        master = m;
        wait_for(
            "the kept samples delivered",
            Duration::from_secs(30),
            || usage_outbox_depth(&node.config.with_file_name("usage.prom")).filter(|d| *d <= 2),
        );
        master.stop();
        let db = stored(&dir.join("proxy.db"));
        for k in &kept {
            let (s, instance) = db
                .iter()
                .find(|(s, _)| s.0 == k.0 && s.1 == k.1)
                .unwrap_or_else(|| {
                    panic!(
                        "{k:?} not stored: {db:?}; node output:\n{}\nmaster:\n{}",
                        node_output(&node),
                        master.output().join("\n")
                    )
                });
            assert_eq!((s.2, s.4, s.5), (k.2, k.4, k.5), "{k:?} stored as {s:?}");
            // CPU travels as a percentage of the period: back within a nanosecond.
            assert!(s.3.abs_diff(k.3) <= 1, "{k:?} stored as {s:?}");
            if k.0 == "slappart0" {
                assert_eq!(instance.as_deref(), Some("web"));
            }
        }
        let (m, _) = start_peer_on(peer, &venv, dir, port);
        master = m;
    }

    // Bang: the partition's timestamp moves and the node processes it again.
    let before = timestamp(&url, "slappart0").expect("a timestamp for slappart0");
    let revisions = converged(&node, "slappart0");
    assert!(!revisions.is_empty(), "{}", node_output(&node));
    let bang = |extra: &[&str]| {
        let mut args = vec!["bang", "-m", "disk full"];
        args.extend_from_slice(extra);
        let o = node.command(&args).output().expect("slapos-node bang");
        assert!(
            o.status.success(),
            "{peer:?}: bang {extra:?}: {}",
            output_text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let said = bang(&["--partition", "slappart0"]);
    assert!(said.contains("slappart0"), "{said}");
    let after = timestamp(&url, "slappart0");
    assert!(
        after.is_some() && after.as_deref() != Some(&*before),
        "{after:?}"
    );
    wait_for(
        "the node to process slappart0 again",
        Duration::from_secs(60),
        || {
            converged(&node, "slappart0")
                .iter()
                .any(|r| !revisions.contains(r))
                .then_some(())
        },
    );
    let said = bang(&[]);
    assert!(said.contains(&format!("computer {COMPUTER}")), "{said}");
    node.stop();
    drop(master);
}

#[test]
fn journal_is_what_slapos_collect_writes() {
    let Some(venv) = tools() else { return };
    use slapos_proto::slap::{JournalWriter, journal_date};
    // (title, start, stop, reference, movements)
    type Movement = (&'static str, String, String, f64);
    let transactions: Vec<(String, String, String, String, Vec<Movement>)> = vec![
        (
            "Eco Information for COMP ".into(),
            journal_date(1_764_547_200_250),
            journal_date(1_764_547_201_250),
            "COMP-1764547200250".into(),
            vec![
                (
                    "service_module/cpu_load_percent",
                    "CPU Load Percent Average for slapuser0".into(),
                    "slapuser0".into(),
                    12.345_678_9,
                ),
                (
                    "service_module/memory_used",
                    "Memory Used Average for slapuser0".into(),
                    "slapuser0".into(),
                    123_456_789.0 / 1_048_576.0,
                ),
                (
                    "service_module/disk_used",
                    "a & <b>".into(),
                    "slapuser0".into(),
                    1e-9,
                ),
            ],
        ),
        (
            "second".into(),
            journal_date(1_764_547_201_250),
            journal_date(1_764_633_600_000),
            "r".into(),
            vec![(
                "service_module/cpu_load_percent",
                "t".into(),
                "slappart1".into(),
                1e22,
            )],
        ),
    ];
    let mut w = JournalWriter::new();
    let mut spec = Vec::new();
    for (title, start, stop, reference, movements) in &transactions {
        w.transaction(title, start, stop, reference)
            .expect("transaction");
        let mut ms = Vec::new();
        for (resource, t, r, q) in movements {
            w.movement(resource, t, r, *q).expect("movement");
            // The exact float, as Python reads it back.
            ms.push(serde_json::json!([resource, t, r, format!("{q:e}")]));
        }
        spec.push(serde_json::json!([title, start, stop, reference, ms]));
    }
    let ours = w.finish();
    let script = r#"
import json, sys
from slapos.collect.reporter import ElementTree
from slapos.collect.reporter import Journal
j = Journal()
for title, start, stop, reference, movements in json.load(sys.stdin):
    t = j.newTransaction()
    for k, v in (("title", title), ("start_date", start), ("stop_date", stop),
                 ("reference", reference), ("currency", ""), ("payment_mode", ""),
                 ("category", "")):
        j.setProperty(t, k, v)
    ElementTree.SubElement(t, "arrow").set("type", "Destination")
    for resource, title, reference, q in movements:
        j.newMovement(t, resource=resource, title=title, quantity=str(float(q)),
                      reference=reference, category="")
sys.stdout.write(j.getXML().decode())
"#;
    let mut child = Command::new(venv.join("python"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("venv python");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(serde_json::Value::Array(spec).to_string().as_bytes())
            .expect("write the spec");
    }
    let o = child.wait_with_output().expect("python output");
    assert!(o.status.success(), "{}", output_text(&o));
    assert_eq!(ours, String::from_utf8_lossy(&o.stdout));
}
