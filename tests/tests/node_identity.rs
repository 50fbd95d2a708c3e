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
//! * destroying the instance wipes the certificate with the partition.
//!
//! As root the partitions run as users `slapedgeid0/1` (deleted at the end, also on failure);
//! otherwise with `isolation = "none"`.
//!
//! Run: `cargo build -p node-edge -p master-lite --bins && cargo test -p slapos-tests --test
//! node_identity` (needs python3 and openssl).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use slapos_client::ClientError;
use slapos_proto::{
    ComputerId, InstanceRequest, InstanceState, InstanceTitle, Params, SoftwareType, SoftwareUrl,
    StateChange, SupplyRequest, SupplyState,
};
use slapos_tests::{Client, Proc, bin, free_port_block, http_get, is_root, repo_root, wait_for};

const LONG: Duration = Duration::from_secs(120);
const USERS: &str = "slapedgeid";
const COMPUTER: &str = "COMP-ID-A";

/// Deletes the test's partition users when dropped (root only).
struct Users;

impl Users {
    fn clean() {
        for i in 0..2 {
            let name = format!("{USERS}{i}");
            if uid_of(&name).is_some() {
                let _ = Command::new("userdel").arg(&name).status();
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

fn master(args: &[&str]) -> Output {
    Command::new(bin("slapos-master"))
        .args(args)
        .output()
        .expect("run slapos-master")
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

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn https_url(line: &str) -> Option<String> {
    let start = line.find("https://")?;
    let url: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    Some(url.trim_end_matches('/').to_owned())
}

fn title(t: &str) -> InstanceTitle {
    InstanceTitle::parse(t).expect("title")
}

fn hello_request(params: Params, state: Option<InstanceState>) -> InstanceRequest {
    let url = repo_root().join("examples/hello-web/software.toml");
    InstanceRequest {
        title: title("id-web"),
        software_url: SoftwareUrl::parse(url.to_string_lossy().into_owned()).expect("url"),
        software_type: SoftwareType::default(),
        parameters: params,
        sla: BTreeMap::from([("computer_guid".to_owned(), COMPUTER.to_owned())]),
        state,
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
    Users::clean();
    let _users = Users;
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = tmp.path();
    let (db, tls, creds) = (dir.join("master.db"), dir.join("tls"), dir.join("creds"));

    // The operator: an admin and a user certificate (the first creates the CA), then serve.
    for (name, admin) in [("ops", true), ("alice", false)] {
        let mut args = vec![
            "user",
            "create",
            name,
            "--out",
            s(&creds),
            "--tls-dir",
            s(&tls),
            "--db",
            s(&db),
        ];
        if admin {
            args.push("--admin");
        }
        ok("user create", master(&args));
    }
    let mut cmd = Command::new(bin("slapos-master"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        s(&db),
        "--tls-dir",
        s(&tls),
    ]);
    let server = Proc::spawn("master", cmd);
    let line = server.wait_line("listening on https://", Duration::from_secs(30));
    let url = https_url(&line).expect("https url");
    let ca_file = tls.join("ca.pem");
    let ca = std::fs::read_to_string(&ca_file).expect("ca.pem");
    let read = |f: &str| std::fs::read_to_string(creds.join(f)).expect("credential file");
    let admin =
        Client::with_identity(&url, &ca, &read("ops.pem"), &read("ops.key")).expect("admin");
    let alice =
        Client::with_identity(&url, &ca, &read("alice.pem"), &read("alice.key")).expect("alice");

    // A node configured for the https master, without master_ca (enroll's --ca fills the
    // default <state_dir>/master-ca.pem).
    let node_dir = dir.join("node");
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let state = node_dir.join("state");
    let ports = free_port_block(20);
    let config = node_dir.join("node.toml");
    let isolation = if root {
        format!("isolation = \"users\"\nuser_prefix = \"{USERS}\"\n")
    } else {
        "isolation = \"none\"\n".to_owned()
    };
    std::fs::write(
        &config,
        format!(
            "master_url = \"{url}\"\ncomputer_id = \"{COMPUTER}\"\npartitions = 2\n\
             software_root = \"software\"\ninstance_root = \"instance\"\nstate_dir = \"state\"\n\
             poll_interval = 2\nlong_poll = 20\nrestart_backoff_min = 0.2\n\
             restart_backoff_max = 2\nstop_timeout = 5\npromise_interval = 2\ninstall_retry = 2\n\
             rt = false\n{isolation}[ports]\nbase = {ports}\nper_partition = 10\n"
        ),
    )
    .expect("config");
    let node = |args: &[&str]| {
        Command::new(bin("slapos-node"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run slapos-node")
    };

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

    // Enrollment.
    let token = ok(
        "token create",
        master(&[
            "token",
            "create",
            "--computer",
            COMPUTER,
            "--ttl",
            "600",
            "--db",
            s(&db),
        ]),
    )
    .trim()
    .to_owned();
    let out = ok(
        "enroll",
        node(&["enroll", "--token", &token, "--ca", s(&ca_file)]),
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
    let mut cmd = Command::new(bin("slapos-node"));
    cmd.args(["run", "--config"]).arg(&config);
    let mut node_proc = Proc::spawn("node", cmd);
    let computer = ComputerId::parse(COMPUTER).expect("id");
    wait_for("node registered over mTLS", LONG, || {
        admin.computer(&computer).ok()
    });
    let release = hello_request(Params::new(), None).software_url;
    admin
        .supply(
            &computer,
            &SupplyRequest {
                url: release,
                state: SupplyState::Available,
            },
        )
        .expect("supply");
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
    let list = ok("cert list", master(&["cert", "list", "--db", s(&db)]));
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
    node_proc.stop();
    let mut cmd = Command::new(bin("slapos-node"));
    cmd.args(["run", "--config"]).arg(&config);
    node_proc = Proc::spawn("node (restarted)", cmd);
    node_proc.wait_line("converged partition=", LONG);
    assert_eq!(std::fs::read(&crt).expect("crt"), crt_before);
    wait_for("page after the restart", LONG, || {
        http_get(&conn).filter(|p| p.contains("mTLS edge 2"))
    });

    // Another computer's certificate may not read this computer's desired state.
    let token_b = ok(
        "token create B",
        master(&["token", "create", "--computer", "COMP-ID-B", "--db", s(&db)]),
    )
    .trim()
    .to_owned();
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
    let list = ok("cert list", master(&["cert", "list", "--db", s(&db)]));
    let row = list
        .lines()
        .find(|l| l.contains(&serial))
        .unwrap_or_else(|| panic!("{serial} gone from\n{list}"));
    assert!(!row.trim_end().ends_with('-'), "not revoked: {row}");
    node_proc.stop();
    drop(server);
}
