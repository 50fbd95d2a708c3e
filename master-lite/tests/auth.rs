//! Identity and authorization over mTLS, against the real `slapos-master serve --tls-dir`:
//! enrollment tokens, the authorization matrix of every native route × identity (each legitimate
//! call allowed, each cross access a 403 that changes nothing in the database), TLS without a
//! client certificate, with a foreign CA and with a revoked certificate, and the CA surviving a
//! restart. Identities: an admin, two users, two computers, a partition of each computer.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::json;
use slapos_client::{Client, ClientError, Credentials};
use slapos_proto::{
    Bang, ComputerId, ConnectionPublish, InstallState, InstanceRequest, InstanceState,
    InstanceTitle, Params, PartitionId, PartitionRef, PartitionReport, PartitionSpec,
    RegisterComputer, SoftwareReport, SoftwareType, SoftwareUrl, StateChange, SupplyRequest,
    SupplyState,
};

const BIN: &str = env!("CARGO_BIN_EXE_slapos-master");
const SR: &str = "/srv/sr/web.toml";

/// A running `slapos-master serve --tls-dir`, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(db: &Path, tls: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .arg("--tls-dir")
            .arg(tls)
            .env("SLAPOS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn slapos-master serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = master_lite::listening_url(&line)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(url.starts_with("https://"), "{url}");
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run slapos-master")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn db(&self) -> PathBuf {
        self.dir.path().join("master.db")
    }
    fn tls(&self) -> PathBuf {
        self.dir.path().join("tls")
    }
    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }
    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.tls().join("ca.pem")).unwrap()
    }
    fn token(&self, computer: &str, ttl: &str) -> String {
        let (db, _) = (self.db(), ());
        ok(run(&[
            "token",
            "create",
            "--computer",
            computer,
            "--ttl",
            ttl,
            "--db",
            Self::s(&db),
        ]))
        .trim()
        .to_owned()
    }
    /// `user create` → a client with that identity.
    fn user(&self, url: &str, name: &str, admin: bool) -> Client {
        let out = self.dir.path().join("users");
        let (db, tls) = (self.db(), self.tls());
        let mut args = vec![
            "user",
            "create",
            name,
            "--out",
            Self::s(&out),
            "--tls-dir",
            Self::s(&tls),
            "--db",
            Self::s(&db),
        ];
        if admin {
            args.push("--admin");
        }
        ok(run(&args));
        let read = |f: String| std::fs::read_to_string(out.join(f)).unwrap();
        Client::with_identity(
            url,
            &read("ca.pem".into()),
            &read(format!("{name}.pem")),
            &read(format!("{name}.key")),
        )
        .unwrap()
    }
    fn dump(&self) -> String {
        let conn = rusqlite::Connection::open_with_flags(
            self.db(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        master_lite::store::dump(&conn)
    }
}

fn client_of(url: &str, c: &Credentials) -> Client {
    Client::with_identity(url, &c.ca_pem, &c.cert_pem, &c.key_pem).unwrap()
}

fn cid(s: &str) -> ComputerId {
    ComputerId::parse(s).unwrap()
}
fn pid(s: &str) -> PartitionId {
    PartitionId::parse(s).unwrap()
}
fn title(s: &str) -> InstanceTitle {
    InstanceTitle::parse(s).unwrap()
}
fn pref(s: &str) -> PartitionRef {
    PartitionRef::parse(s).unwrap()
}

fn registration(c: &str) -> RegisterComputer {
    RegisterComputer {
        id: cid(c),
        partitions: ["p0", "p1"]
            .iter()
            .map(|p| PartitionSpec {
                id: pid(p),
                addresses: vec![],
                interface: None,
            })
            .collect(),
        labels: BTreeMap::new(),
    }
}

fn request(t: &str, on: Option<&str>) -> InstanceRequest {
    InstanceRequest {
        title: title(t),
        software_url: SoftwareUrl::parse(SR).unwrap(),
        software_type: SoftwareType::default(),
        parameters: Params::new(),
        sla: on
            .map(|c| [("computer_guid".to_owned(), c.to_owned())].into())
            .unwrap_or_default(),
        state: None,
    }
}

fn status(r: &Result<impl std::fmt::Debug, ClientError>) -> Option<u16> {
    r.as_ref().err().and_then(ClientError::status)
}

type Op = Box<dyn Fn(&Client) -> Result<(), ClientError>>;

fn op<T>(f: impl Fn(&Client) -> Result<T, ClientError> + 'static) -> Op {
    Box::new(move |c| f(c).map(drop))
}

#[test]
fn authorization_matrix_and_tls_rejections() {
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    // Users first: `user create` creates the CA the server then loads.
    let placeholder = "https://127.0.0.1:1";
    drop(env.user(placeholder, "ops", true));
    let server = Server::start(&env.db(), &env.tls());
    let url = server.url.clone();
    let ca = env.ca_pem();
    let admin = Client::with_identity(
        &url,
        &ca,
        &std::fs::read_to_string(env.dir.path().join("users/ops.pem")).unwrap(),
        &std::fs::read_to_string(env.dir.path().join("users/ops.key")).unwrap(),
    )
    .unwrap();
    let alice = env.user(&url, "alice", false);
    let bob = env.user(&url, "bob", false);

    // Enrollment: one-time, unexpired tokens only; nothing else without a client certificate.
    let t1 = env.token("C1", "600");
    let c1 = Client::enroll(&url, &ca, &t1).unwrap();
    assert_eq!(c1.identity, "computer:C1");
    let reuse = Client::enroll(&url, &ca, &t1);
    assert_eq!(status(&reuse), Some(403), "{reuse:?}");
    let expired = env.token("C2", "0");
    let r = Client::enroll(&url, &ca, &expired);
    assert_eq!(status(&r), Some(403), "{r:?}");
    assert_eq!(
        status(&Client::enroll(&url, &ca, "no-such-token")),
        Some(403)
    );
    let c2 = Client::enroll(&url, &ca, &env.token("C2", "600")).unwrap();
    let anon = Client::with_ca(&url, &ca).unwrap();
    let before = env.dump();
    assert_eq!(status(&anon.health()), Some(403));
    assert_eq!(status(&anon.register(&registration("C3"))), Some(403));
    assert_eq!(status(&anon.instances()), Some(403));
    assert_eq!(before, env.dump());
    let (c1, c2) = (client_of(&url, &c1), client_of(&url, &c2));

    // The legitimate set-up: each computer registers itself, the admin supplies, each user
    // requests a tree on one computer, each node fetches its partition's certificate, and the
    // partition of alice's root requests a child.
    c1.register(&registration("C1")).unwrap();
    c2.register(&registration("C2")).unwrap();
    for c in ["C1", "C2"] {
        admin
            .supply(
                &cid(c),
                &SupplyRequest {
                    url: SoftwareUrl::parse(SR).unwrap(),
                    state: SupplyState::Available,
                },
            )
            .unwrap();
    }
    let a = alice.request(&request("a-root", Some("C1"))).unwrap();
    let b = bob.request(&request("b-root", Some("C2"))).unwrap();
    assert_eq!((a.computer.as_str(), a.partition.as_str()), ("C1", "p0"));
    assert_eq!((b.computer.as_str(), b.partition.as_str()), ("C2", "p0"));
    let pa = c1.partition_certificate(&cid("C1"), &pid("p0")).unwrap();
    assert_eq!(pa.identity, "partition:C1/p0");
    let pb = c2.partition_certificate(&cid("C2"), &pid("p0")).unwrap();
    let (pa, pb) = (client_of(&url, &pa), client_of(&url, &pb));
    let child = pa
        .clone()
        .as_partition(&pref("C1/p0"))
        .request(&request("a-child", None))
        .unwrap();
    assert_eq!(child.computer.as_str(), "C1");
    assert_eq!(child.requester.as_deref(), Some("C1/p0"));

    let ids: Vec<(&str, &Client)> = vec![
        ("admin", &admin),
        ("alice", &alice),
        ("bob", &bob),
        ("c1", &c1),
        ("c2", &c2),
        ("pa", &pa),
        ("pb", &pb),
    ];

    // Every native route × identity. Allowed calls succeed; every other is a 403 that changes
    // no row.
    let matrix: Vec<(&str, Op, &[&str])> = vec![
        (
            "health",
            op(|c: &Client| c.health()),
            &["admin", "alice", "bob", "c1", "c2", "pa", "pb"],
        ),
        (
            "register C1",
            op(|c: &Client| c.register(&registration("C1"))),
            &["admin", "c1"],
        ),
        (
            "show computer C1",
            op(|c: &Client| c.computer(&cid("C1"))),
            &["admin", "c1"],
        ),
        (
            "supply on C1",
            op(|c: &Client| {
                c.supply(
                    &cid("C1"),
                    &SupplyRequest {
                        url: SoftwareUrl::parse(SR).unwrap(),
                        state: SupplyState::Available,
                    },
                )
            }),
            &["admin"],
        ),
        (
            "software report C1",
            op(|c: &Client| {
                c.report_software(
                    &cid("C1"),
                    &SoftwareReport {
                        url: SoftwareUrl::parse(SR).unwrap(),
                        state: InstallState::Available,
                        message: None,
                        parameter_model: None,
                    },
                )
            }),
            &["admin", "c1"],
        ),
        (
            "desired C1",
            op(|c: &Client| c.desired(&cid("C1"), None, None)),
            &["admin", "c1"],
        ),
        (
            "report C1/p0",
            op(|c: &Client| {
                c.report_partition(
                    &cid("C1"),
                    &pid("p0"),
                    &PartitionReport {
                        state: InstanceState::Started,
                        revision: 1,
                        promises: vec![],
                        error: None,
                    },
                )
            }),
            &["admin", "c1", "pa"],
        ),
        (
            "connection C1/p0",
            op(|c: &Client| {
                c.publish_connection(
                    &cid("C1"),
                    &pid("p0"),
                    &ConnectionPublish {
                        parameters: [("url".to_owned(), json!("http://a"))]
                            .into_iter()
                            .collect(),
                    },
                )
            }),
            &["admin", "c1", "pa"],
        ),
        (
            "bang C1/p0",
            op(|c: &Client| {
                c.bang(
                    &cid("C1"),
                    &pid("p0"),
                    &Bang {
                        message: "x".into(),
                    },
                )
            }),
            &["admin", "c1", "pa"],
        ),
        (
            "certificate of C1/p0",
            op(|c: &Client| c.partition_certificate(&cid("C1"), &pid("p0"))),
            &["admin", "c1"],
        ),
        (
            "re-request root a-root",
            op(|c: &Client| c.request(&request("a-root", Some("C1")))),
            &["admin", "alice"],
        ),
        (
            "request child as C1/p0",
            op(|c: &Client| {
                c.clone()
                    .as_partition(&pref("C1/p0"))
                    .request(&request("a-child", None))
            }),
            &["admin", "c1", "pa"],
        ),
        (
            "show a-root",
            op(|c: &Client| c.instance(&title("a-root"), None)),
            &["admin", "alice", "c1", "pa"],
        ),
        (
            "show a-child",
            op(|c: &Client| c.instance(&title("a-child"), Some(&title("a-root")))),
            &["admin", "alice", "c1", "pa"],
        ),
        (
            "start a-root",
            op(|c: &Client| {
                c.set_state(
                    &title("a-root"),
                    &StateChange {
                        state: InstanceState::Started,
                    },
                )
            }),
            &["admin", "alice"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, f, allowed) in &matrix {
        for (who, c) in &ids {
            let before = env.dump();
            let r = f(c);
            if allowed.contains(who) {
                if let Err(e) = r {
                    failures.push(format!("{who} {name}: refused: {e}"));
                }
            } else {
                match status(&r) {
                    Some(403) => {}
                    _ => failures.push(format!("{who} {name}: expected 403, got {r:?}")),
                }
                if env.dump() != before {
                    failures.push(format!("{who} {name}: a refused call changed the database"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Lists are filtered to what each identity may see.
    let titles = |c: &Client| -> Vec<String> {
        let mut v: Vec<String> = c
            .instances()
            .unwrap()
            .into_iter()
            .map(|i| i.title.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(titles(&admin), ["a-child", "a-root", "b-root"]);
    assert_eq!(titles(&alice), ["a-child", "a-root"]);
    assert_eq!(titles(&bob), ["b-root"]);
    assert_eq!(titles(&pa), ["a-child", "a-root"]);
    assert_eq!(titles(&pb), ["b-root"]);
    assert_eq!(titles(&c1), ["a-child", "a-root"]);
    assert_eq!(titles(&c2), ["b-root"]);
    let computers = |c: &Client| -> Vec<String> {
        c.computers()
            .unwrap()
            .into_iter()
            .map(|c| c.id.to_string())
            .collect()
    };
    assert_eq!(computers(&admin), ["C1", "C2"]);
    assert_eq!(computers(&c1), ["C1"]);
    assert!(computers(&alice).is_empty());
    assert!(computers(&pa).is_empty());

    // A partition may not pretend to be another one with the header, nor request roots.
    let spoof = pb.clone().as_partition(&pref("C1/p0"));
    assert_eq!(status(&spoof.request(&request("x", None))), Some(403));
    assert_eq!(status(&pa.request(&request("x", None))), Some(403));
    // A user may not take over another user's root title.
    assert_eq!(
        status(&bob.request(&request("a-root", Some("C1")))),
        Some(403)
    );

    // A certificate from another CA fails the handshake; a revoked one is refused.
    let foreign_dir = env.dir.path().join("foreign");
    let foreign = master_lite::pki::Ca::open(&foreign_dir).unwrap();
    let fake = foreign
        .issue_client(&master_lite::auth::Identity::Admin("ops".parse().unwrap()))
        .unwrap();
    let r = Client::with_identity(&url, &ca, &fake.cert_pem, &fake.key_pem)
        .unwrap()
        .health();
    assert!(
        r.is_err() && status(&r).is_none(),
        "foreign CA accepted: {r:?}"
    );
    let eve = env.user(&url, "eve", false);
    eve.health().unwrap();
    ok(run(&[
        "cert",
        "revoke",
        "--identity",
        "user:eve",
        "--db",
        Env::s(&env.db()),
    ]));
    assert_eq!(status(&eve.health()), Some(403));
    assert_eq!(status(&eve.request(&request("e", Some("C1")))), Some(403));

    // The CA persists: after a restart, the same ca.pem and every certificate still works.
    drop(server);
    let server = Server::start(&env.db(), &env.tls());
    assert_eq!(env.ca_pem(), ca);
    let alice = env.user(&server.url, "alice2", false);
    alice.health().unwrap();
    let c1 = Client::with_identity(
        &server.url,
        &ca,
        &std::fs::read_to_string(env.dir.path().join("users/bob.pem")).unwrap(),
        &std::fs::read_to_string(env.dir.path().join("users/bob.key")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        c1.instance(&title("b-root"), None).unwrap().title.as_str(),
        "b-root"
    );
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve plain HTTP"), "{err}");
}
