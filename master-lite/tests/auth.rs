//! Identity and authorization over mTLS, against the real `slapos-master serve --tls-dir`:
//! enrollment tokens, the authorization matrix of every native route × identity (each legitimate
//! call allowed, each cross access a 403 that changes nothing in the database), TLS without a
//! client certificate, with a foreign CA and with a revoked certificate, and the CA surviving a
//! restart. Identities: an admin, two users, two computers, a partition of each computer.

mod common;

use common::{
    Answer, Env, Server, assert_matrix, available, cid, ok, pid, pref, registration, run, s, title,
};
use serde_json::json;
use slapos_client::{Client, ClientError, Credentials};
use slapos_proto::{
    Bang, ConnectionPublish, InstallState, InstanceRequest, InstanceState, Params, PartitionReport,
    SoftwareReport, SoftwareType, SoftwareUrl, StateChange,
};

const SR: &str = "/srv/sr/web.toml";
const PARTITIONS: &[&str] = &["p0", "p1"];

/// `user create` → a client with that identity, trusting the `ca.pem` written next to it.
fn user(env: &Env, url: &str, name: &str, admin: bool) -> Client {
    let cred = env.user(name, admin);
    let ca = std::fs::read_to_string(env.users().join("ca.pem")).unwrap();
    cred.client(url, &ca)
}

fn client_of(url: &str, c: &Credentials) -> Client {
    Client::with_identity(url, &c.ca_pem, &c.cert_pem, &c.key_pem).unwrap()
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
        shared: false,
    }
}

/// A shared instance of `SR`, hosted by an instance on C1.
fn shared(t: &str) -> InstanceRequest {
    InstanceRequest {
        shared: true,
        ..request(t, Some("C1"))
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
    let env = Env::new();
    // Users first: `user create` creates the CA the server then loads.
    let placeholder = "https://127.0.0.1:1";
    drop(user(&env, placeholder, "ops", true));
    let server = Server::start_tls(&env.db(), &env.tls(), "warn");
    let url = server.url.clone();
    let ca = env.ca_pem();
    let admin = env.user_cred("ops").client(&url, &ca);
    let alice = user(&env, &url, "alice", false);
    let bob = user(&env, &url, "bob", false);

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
    assert_eq!(
        status(&anon.register(&registration("C3", PARTITIONS))),
        Some(403)
    );
    assert_eq!(status(&anon.instances()), Some(403));
    assert_eq!(before, env.dump());
    let (c1, c2) = (client_of(&url, &c1), client_of(&url, &c2));

    // The legitimate set-up: each computer registers itself, the admin supplies, each user
    // requests a tree on one computer, each node fetches its partition's certificate, and the
    // partition of alice's root requests a child.
    c1.register(&registration("C1", PARTITIONS)).unwrap();
    c2.register(&registration("C2", PARTITIONS)).unwrap();
    for c in ["C1", "C2"] {
        admin.supply(&cid(c), &available(SR)).unwrap();
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
        ("metrics", op(|c: &Client| c.metrics()), &["admin"]),
        (
            "register C1",
            op(|c: &Client| c.register(&registration("C1", PARTITIONS))),
            &["admin", "c1"],
        ),
        (
            "show computer C1",
            op(|c: &Client| c.computer(&cid("C1"))),
            &["admin", "c1"],
        ),
        (
            "supply on C1",
            op(|c: &Client| c.supply(&cid("C1"), &available(SR))),
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
                        shared: Default::default(),
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
            // A root shared instance records no owner: operators only (as over SLAP).
            "request root shared s-root on a-root's host",
            op(|c: &Client| c.request(&shared("s-root"))),
            &["admin"],
        ),
        (
            "request shared child as C1/p0",
            op(|c: &Client| {
                c.clone()
                    .as_partition(&pref("C1/p0"))
                    .request(&shared("a-front"))
            }),
            &["admin", "c1", "pa"],
        ),
        (
            "show shared a-front",
            op(|c: &Client| c.instance(&title("a-front"), Some(&title("a-root")))),
            &["admin", "alice", "c1", "pa"],
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
    assert_matrix(
        &matrix,
        &ids,
        |(name, _, allowed)| (name, allowed),
        |(_, f, _), c| {
            let r = f(c);
            Answer {
                succeeded: r.is_ok(),
                status: status(&r),
                detail: match &r {
                    Err(e) => e.to_string(),
                    Ok(()) => "Ok(())".to_owned(),
                },
            }
        },
        || env.dump(),
    );

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
    let eve = user(&env, &url, "eve", false);
    eve.health().unwrap();
    ok(run(&[
        "cert",
        "revoke",
        "--identity",
        "user:eve",
        "--db",
        s(&env.db()),
    ]));
    assert_eq!(status(&eve.health()), Some(403));
    assert_eq!(status(&eve.request(&request("e", Some("C1")))), Some(403));

    // The CA persists: after a restart, the same ca.pem and every certificate still works.
    drop(server);
    let server = Server::start_tls(&env.db(), &env.tls(), "warn");
    assert_eq!(env.ca_pem(), ca);
    let alice = user(&env, &server.url, "alice2", false);
    alice.health().unwrap();
    let c1 = env.user_cred("bob").client(&server.url, &ca);
    assert_eq!(
        c1.instance(&title("b-root"), None).unwrap().title.as_str(),
        "b-root"
    );
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let out = run(&["serve", "--listen", "0.0.0.0:0", "--db", s(&db)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve plain HTTP"), "{err}");
}
