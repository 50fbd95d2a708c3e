//! The node's identity over mTLS, end to end: a real `slapos-master serve --tls-dir` on
//! 127.0.0.1:0, `slapos-master token create`, `slapos-node enroll`, `slapos-node run` over
//! https.
//!
//! * `run` and `format` before enrollment refuse to start and say to run `slapos-node enroll`;
//! * `enroll` writes the key (0600), certificate and master CA into the state dir and prints the
//!   identity; the same token again is refused with a clear message and changes nothing;
//! * a user (`slapos-master user create alice`, over `Client::with_identity`) requests
//!   hello-web on the node; its connection parameters come back and the page answers;
//! * the partition holds `.slapos/partition.crt|key` (owned by the partition user as root,
//!   mode 0644/0600), CN `partition:<computer>/<partition>` (`openssl x509 -subject`), recorded
//!   by the master (`cert list`); that certificate reads its own instance from the master; a
//!   parameter change and a node restart keep it (one certificate per allocation);
//! * another computer's certificate cannot read this computer's desired state (403);
//! * destroying the instance wipes the certificate with the partition;
//! * a node with `protocol = "slap"` (the classic SLAP routes a SlapOS master serves) refuses to
//!   start before enrollment, enrolls with the token on standard input, then registers and
//!   converges an instance over mTLS with its computer certificate.
//!
//! As root the partitions run as users `slapedgeid0/1` (deleted at the end, also on failure);
//! otherwise with `isolation = "none"`.
//!
//! Run: `cargo build -p node-edge -p master-lite --bins && cargo test -p slapos-tests --test
//! node_identity` (needs python3 and openssl).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use slapos_client::ClientError;
use slapos_proto::{
    ComputerId, InstanceRequest, InstanceState, InstanceTitle, Params, StateChange,
};
use slapos_tests::tls::{TlsMaster, path_str as s, stdout_ok};
use slapos_tests::users::{TestUsers, uid_of};
use slapos_tests::{
    Client, Node, example_release, http_get, instance_request, is_root, supply, wait_for,
};

const LONG: Duration = Duration::from_secs(120);
const USERS: &str = "slapedgeid";
const COMPUTER: &str = "COMP-ID-A";

fn title(t: &str) -> InstanceTitle {
    InstanceTitle::parse(t).expect("title")
}

fn hello_request(params: Params, state: Option<InstanceState>) -> InstanceRequest {
    InstanceRequest {
        sla: BTreeMap::from([("computer_guid".to_owned(), COMPUTER.to_owned())]),
        state,
        ..instance_request("id-web", &example_release("hello-web"), params)
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

#[test]
fn node_enrolls_runs_over_mtls_and_places_partition_certificates() {
    let root = is_root();
    if !root {
        eprintln!("note: not root: partitions run with isolation = \"none\"");
    }
    let _users = TestUsers::claim(USERS);
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = tmp.path();

    // The operator: an admin and a user certificate (the first creates the CA), then serve.
    let server = TlsMaster::start(dir, "127.0.0.1:0", &[("ops", true), ("alice", false)], &[]);
    let url = server.url.clone();
    let (ca_file, ca) = (server.ca_file(), server.ca());
    let admin = server.client("ops");
    let alice = server.client("alice");

    // A node configured for the https master, without master_ca (enroll's --ca fills the
    // default <state_dir>/master-ca.pem).
    let node_dir = dir.join("node");
    let state = node_dir.join("state");
    let isolation = if root {
        format!(
            "isolation = \"users\"\nuser_prefix = \"{USERS}\"\nsoftware_user = \"{USERS}soft\"\n"
        )
    } else {
        "isolation = \"none\"\n".to_owned()
    };
    let mut edge = Node::configure(
        &node_dir,
        &url,
        COMPUTER,
        2,
        &format!("state_dir = \"state\"\nrt = false\n{isolation}"),
    );
    let node = |args: &[&str]| edge.command(args).output().expect("run slapos-node");

    // Not enrolled: run and format refuse, naming the command to run, and create nothing.
    for cmd in ["run", "format"] {
        let out = node(&[cmd]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} without identity succeeded");
        assert!(err.contains("slapos-node enroll"), "{cmd}: {err}");
    }
    assert!(
        !node_dir.join("instance").exists(),
        "formatted before refusing"
    );

    // Enrollment, the token read from a file (it stays out of `ps`).
    let token = server.token(COMPUTER, &["--ttl", "600"]);
    let token_file = node_dir.join("enroll-token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write the token file");
    let out = stdout_ok(
        "enroll",
        node(&[
            "enroll",
            "--token-file",
            s(&token_file),
            "--ca",
            s(&ca_file),
        ]),
    );
    assert!(
        out.contains(&format!("enrolled as computer:{COMPUTER}")),
        "{out}"
    );
    let key_file = state.join("computer.key");
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&state.join("computer.crt")), 0o644);
    assert_eq!(
        std::fs::read_to_string(state.join("master-ca.pem")).expect("stored CA"),
        ca
    );
    let key_before = std::fs::read(&key_file).expect("key");
    // The token is spent: a clear refusal, nothing overwritten.
    let again = node(&["enroll", "--token", &token]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "token reused: {err}");
    assert!(
        err.contains("already used") && err.contains("token create"),
        "{err}"
    );
    assert_eq!(std::fs::read(&key_file).expect("key"), key_before);

    // The node over mTLS.
    edge.restart();
    let computer = ComputerId::parse(COMPUTER).expect("id");
    wait_for("node registered over mTLS", LONG, || {
        admin.computer(&computer).ok()
    });
    let release = hello_request(Params::new(), None).software_url;
    supply(&admin, COMPUTER, &release);
    let mut params = Params::new();
    params.insert("title".into(), "mTLS edge".into());
    alice
        .request(&hello_request(params.clone(), None))
        .expect("request");
    let conn = wait_for("connection parameters", LONG, || {
        let i = alice.instance(&title("id-web"), None).ok()?;
        i.connection.get("url")?.as_str().map(str::to_owned)
    });
    let page = wait_for("page", LONG, || http_get(&conn));
    assert!(page.contains("mTLS edge"), "{page}");

    // The partition's certificate.
    let info = alice.instance(&title("id-web"), None).expect("instance");
    let part = info.partition.clone();
    let pdir = node_dir.join("instance").join(part.as_str());
    let (crt, key, pca) = (
        pdir.join(".slapos/partition.crt"),
        pdir.join(".slapos/partition.key"),
        pdir.join(".slapos/master-ca.pem"),
    );
    wait_for("partition certificate files", LONG, || {
        (crt.exists() && key.exists() && pca.exists()).then_some(())
    });
    assert_eq!((mode(&key), mode(&crt), mode(&pca)), (0o600, 0o644, 0o644));
    let owner = if root {
        uid_of(&format!("{USERS}{}", &part.as_str()["slappart".len()..])).expect("partition user")
    } else {
        std::fs::metadata(dir).expect("tmp").uid()
    };
    for f in [&crt, &key, &pca] {
        assert_eq!(
            std::fs::metadata(f).expect("meta").uid(),
            owner,
            "{}",
            f.display()
        );
    }
    let identity = format!("partition:{COMPUTER}/{part}");
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&crt)
        .output()
        .expect("openssl");
    let subject = String::from_utf8_lossy(&subject.stdout).into_owned();
    assert!(subject.contains(&identity), "{subject}");
    // The record: identity, serial, allocation (one per line).
    let record = std::fs::read_to_string(pdir.join(".slapos/partition-cert")).expect("record");
    let mut lines = record.lines();
    assert_eq!(lines.next(), Some(identity.as_str()), "{record}");
    let serial = lines.next().expect("serial").to_owned();
    let list = server.cli("cert list", &["cert", "list"]);
    assert!(
        list.lines()
            .any(|l| l.contains(&serial) && l.contains(&identity)),
        "{serial} {identity} not in\n{list}"
    );
    // It is a working identity: the partition reads its own instance.
    let as_part = Client::with_identity(
        &url,
        &ca,
        &std::fs::read_to_string(&crt).expect("crt"),
        &std::fs::read_to_string(&key).expect("key"),
    )
    .expect("partition client");
    assert_eq!(
        as_part
            .instance(&title("id-web"), None)
            .expect("own instance")
            .title,
        title("id-web")
    );

    // A parameter change is applied over mTLS and keeps the certificate (one per allocation).
    let crt_before = std::fs::read(&crt).expect("crt");
    params.insert("title".into(), "mTLS edge 2".into());
    alice
        .request(&hello_request(params, None))
        .expect("re-request");
    wait_for("new title published", LONG, || {
        let i = alice.instance(&title("id-web"), None).ok()?;
        (i.connection.get("title")?.as_str()? == "mTLS edge 2").then_some(())
    });
    assert_eq!(std::fs::read(&crt).expect("crt"), crt_before);
    // A restarted node converges the partition again and keeps its certificate too.
    edge.stop();
    edge.restart();
    let restarted = edge.proc.as_ref().expect("node restarted");
    restarted.wait_line("converged partition=", LONG);
    assert_eq!(std::fs::read(&crt).expect("crt"), crt_before);
    wait_for("page after the restart", LONG, || {
        http_get(&conn).filter(|p| p.contains("mTLS edge 2"))
    });

    // Another computer's certificate may not read this computer's desired state.
    let token_b = server.token("COMP-ID-B", &[]);
    let b = Client::enroll(&url, &ca, &token_b).expect("enroll B");
    assert_eq!(b.identity, "computer:COMP-ID-B");
    let b = Client::with_identity(&url, &ca, &b.cert_pem, &b.key_pem).expect("client B");
    let r = b.desired(&computer, None, None);
    assert_eq!(
        r.as_ref().err().and_then(ClientError::status),
        Some(403),
        "{r:?}"
    );
    let r = b.partition_certificate(&computer, &part);
    assert_eq!(
        r.as_ref().err().and_then(ClientError::status),
        Some(403),
        "{r:?}"
    );

    // Destroy: the partition is wiped, certificate included; the master revoked it.
    alice
        .set_state(
            &title("id-web"),
            &StateChange {
                state: InstanceState::Destroyed,
            },
        )
        .expect("destroy");
    wait_for("partition freed", LONG, || {
        let c = admin.computer(&computer).ok()?;
        c.partitions
            .iter()
            .all(|p| p.instance.is_none())
            .then_some(())
    });
    assert!(
        !crt.exists() && !key.exists(),
        "certificate left after destroy"
    );
    let list = server.cli("cert list", &["cert", "list"]);
    let row = list
        .lines()
        .find(|l| l.contains(&serial))
        .unwrap_or_else(|| panic!("{serial} gone from\n{list}"));
    assert!(!row.trim_end().ends_with('-'), "not revoked: {row}");
    edge.stop();
    drop(server);
}

#[test]
fn slap_protocol_node_runs_over_mtls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let server = TlsMaster::start(dir, "127.0.0.1:0", &[("ops", true)], &[]);
    let admin = server.client("ops");
    const SLAP_COMPUTER: &str = "COMP-ID-SLAP";
    let node_dir = dir.join("node");
    let mut edge = Node::configure(
        &node_dir,
        &server.url,
        SLAP_COMPUTER,
        1,
        "protocol = \"slap\"\nstate_dir = \"state\"\nrt = false\nisolation = \"none\"\n",
    );

    // Before enrollment the SLAP link refuses to start too, naming the command.
    let out = edge.command(&["run"]).output().expect("run slapos-node");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ran without identity: {err}");
    assert!(err.contains("slapos-node enroll"), "{err}");

    // The token on standard input (`--token-file -`).
    let token = server.token(SLAP_COMPUTER, &[]);
    let mut enroll = edge.command(&["enroll", "--token-file", "-", "--ca", s(&server.ca_file())]);
    enroll
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = enroll.spawn().expect("spawn enroll");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{token}").expect("write the token");
    }
    let out = stdout_ok("enroll", child.wait_with_output().expect("enroll"));
    assert!(
        out.contains(&format!("enrolled as computer:{SLAP_COMPUTER}")),
        "{out}"
    );

    // Format, desired state and reports: the SLAP routes, over mTLS as computer:COMP-ID-SLAP.
    edge.restart();
    let computer = ComputerId::parse(SLAP_COMPUTER).expect("id");
    wait_for("SLAP node registered over mTLS", LONG, || {
        admin.computer(&computer).ok()
    });
    let mut req = hello_request(Params::new(), None);
    req.sla = BTreeMap::from([("computer_guid".to_owned(), SLAP_COMPUTER.to_owned())]);
    req.parameters
        .insert("title".into(), "SLAP over mTLS".into());
    supply(&admin, SLAP_COMPUTER, &req.software_url);
    admin.request(&req).expect("request");
    let conn = wait_for("connection parameters over SLAP", LONG, || {
        let i = admin.instance(&title("id-web"), None).ok()?;
        i.connection.get("url")?.as_str().map(str::to_owned)
    });
    let page = wait_for("page", LONG, || http_get(&conn));
    assert!(page.contains("SLAP over mTLS"), "{page}");
    edge.stop();
}
