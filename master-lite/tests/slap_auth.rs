//! Authorization of the SLAP routes (classic, `/hateoas`, JSON-RPC) over mTLS, against the real
//! `slapos-master serve --tls-dir`: two enrolled computers, a partition of each, two users and
//! an admin; every route × identity: each legitimate call allowed, each cross access a 403 that
//! changes nothing in the database; filtered lists; and the real slapos.core `slap` library over
//! TLS with a client certificate (a user's request, a computer's getFullComputerInformation).
//!
//! The python part needs `.venv/slapos` (`scripts/deps/slapos-venv.sh`); without it, it prints
//! a reason and is skipped, unless `SLAPOS_REQUIRE_TOOLS=1`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use common::{
    Answer, Cred, Env, Server, assert_matrix, available, cid, registration, slap_python, title,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value as Json, json};
use slapos_client::{Client, Credentials};
use slapos_proto::slap::{self as wire, PartitionRef as WireRef, RequestForm, Value};

const SR: &str = "/srv/sr/web.cfg";

/// A minimal blocking HTTPS/1.1 client (rustls, ring) with an optional client certificate, a
/// new connection per call: enough to send the exact forms and headers of the SLAP wire.
struct Https {
    addr: String,
    config: Arc<rustls::ClientConfig>,
}

impl Https {
    fn new(url: &str, ca_pem: &str, cred: Option<&Cred>) -> Https {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(master_lite::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match cred {
            Some(c) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(c.cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Https {
            addr: url.trim_start_matches("https://").to_owned(),
            config: Arc::new(config),
        }
    }

    /// `(status, body)`.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, String)],
    ) -> (u16, String) {
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(self.config.clone(), name).unwrap();
        let tcp = TcpStream::connect(&self.addr).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        tls.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        if let Err(e) = tls.read_to_end(&mut raw) {
            // A server closing without close_notify after a complete answer.
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }
}

fn form(fields: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn form_headers() -> Vec<(&'static str, String)> {
    vec![(FORM.0, FORM.1.to_owned())]
}

/// `Authorization: X-SlapPartition …` + form content type.
fn partition_headers(c: &str, p: &str) -> Vec<(&'static str, String)> {
    let mut h = form_headers();
    h.push(("Authorization", wire::SlapPartitionAuth::header_value(c, p)));
    h
}

fn request_form(title: &str, on: &str, requester: Option<(&str, &str)>, shared: bool) -> String {
    let f = RequestForm {
        software_release: SR.into(),
        software_type: String::new(),
        partition_reference: title.into(),
        parameters: BTreeMap::new(),
        filter: [("computer_guid".to_owned(), Value::str(on))].into(),
        state: None,
        shared,
        requester: requester.map(|(c, p)| WireRef {
            computer_id: c.into(),
            partition_id: p.into(),
        }),
    };
    let fields = f.to_form().unwrap();
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

fn format_xml(c: &str) -> String {
    let partitions: Vec<Value> = ["p0", "p1", "p2"]
        .iter()
        .map(|p| {
            Value::Dict(
                [
                    (Value::str("reference"), Value::str(*p)),
                    (Value::str("address_list"), Value::List(vec![])),
                    (
                        Value::str("tap"),
                        Value::dict([("name", format!("tap-{p}"))]),
                    ),
                ]
                .into_iter()
                .collect(),
            )
        })
        .collect();
    wire::dumps(&Value::Dict(
        [
            (Value::str("reference"), Value::str(c)),
            (Value::str("address"), Value::str("10.0.0.1")),
            (Value::str("netmask"), Value::str("255.255.255.0")),
            (Value::str("partition_list"), Value::List(partitions)),
        ]
        .into_iter()
        .collect(),
    ))
    .unwrap()
}

/// One SLAP call of the matrix.
struct Call {
    name: String,
    method: &'static str,
    path: String,
    body: String,
    headers: Vec<(&'static str, String)>,
    allowed: &'static [&'static str],
}

fn get(name: &str, path: &str, allowed: &'static [&'static str]) -> Call {
    Call {
        name: name.to_owned(),
        method: "GET",
        path: path.to_owned(),
        body: String::new(),
        headers: vec![],
        allowed,
    }
}

/// A form POST to `/{route}`, named "{route} {on}".
fn post(
    route: &str,
    on: &str,
    fields: &[(&str, String)],
    allowed: &'static [&'static str],
) -> Call {
    Call {
        name: format!("{route} {on}"),
        method: "POST",
        path: format!("/{route}"),
        body: form(fields),
        headers: form_headers(),
        allowed,
    }
}

fn rpc(name: &str, endpoint: &str, body: Json, allowed: &'static [&'static str]) -> Call {
    Call {
        name: name.to_owned(),
        method: "POST",
        path: format!("/{endpoint}"),
        body: body.to_string(),
        headers: vec![("Content-Type", "application/json".into())],
        allowed,
    }
}

/// Run a python snippet with the slap library connected over TLS with `cred`'s certificate.
fn py(venv: &Path, url: &str, cred: &Cred, script: &str) -> Output {
    slap_python(venv, url, Some(cred), script)
}

#[test]
fn slap_routes_authorization_matrix_and_the_slap_library_over_tls() {
    let env = Env::new();
    let ops = env.user("ops", true); // creates the CA the server loads
    let server = Server::start_tls(&env.db(), &env.tls(), "error");
    let url = server.url.clone();
    let ca = env.ca_pem();
    let alice = env.user("alice", false);
    let bob = env.user("bob", false);
    let enroll = |c: &str| -> Cred {
        let creds: Credentials = Client::enroll(&url, &ca, &env.token(c, "600")).unwrap();
        assert_eq!(creds.identity, format!("computer:{c}"));
        env.keep(c, &creds.cert_pem, &creds.key_pem)
    };
    let (c1, c2) = (enroll("C1"), enroll("C2"));
    let h = |c: &Cred| Https::new(&url, &ca, Some(c));
    let (admin_h, alice_h, bob_h, c1_h, c2_h) = (h(&ops), h(&alice), h(&bob), h(&c1), h(&c2));

    // Set-up through the SLAP routes, each call by its legitimate identity: each computer
    // formats itself, the admin supplies, each user requests a root, each node fetches its
    // partition's certificate (a real one, over TLS), the partition of alice's root requests a
    // child.
    let native = |c: &Cred| c.client(&url, &ca);
    native(&c1)
        .register(&registration("C1", &["p0", "p1", "p2"]))
        .unwrap();
    for (c, hc) in [("C1", &c1_h), ("C2", &c2_h)] {
        let (st, body) = hc.call(
            "POST",
            "/loadComputerConfigurationFromXML",
            &form(&[("computer_id", c.into()), ("xml", format_xml(c))]),
            &form_headers(),
        );
        assert_eq!((st, body.as_str()), (200, "done"), "format {c}");
        let (st, body) = admin_h.call(
            "POST",
            "/supplySupply",
            &form(&[
                ("url", SR.into()),
                ("computer_id", c.into()),
                ("state", "available".into()),
            ]),
            &form_headers(),
        );
        assert_eq!(st, 200, "supply {c}: {body}");
    }
    let root = |hc: &Https, t: &str, on: &str| {
        let (st, body) = hc.call(
            "POST",
            "/requestComputerPartition",
            &request_form(t, on, None, false),
            &form_headers(),
        );
        assert_eq!(st, 200, "request {t}: {body}");
    };
    root(&alice_h, "a-root", "C1");
    root(&bob_h, "b-root", "C2");
    let admin_native = native(&ops);
    let a = admin_native.instance(&title("a-root"), None).unwrap();
    assert_eq!((a.computer.as_str(), a.partition.as_str()), ("C1", "p0"));
    // The owner is recorded: alice reads her root natively, bob may not.
    native(&alice).instance(&title("a-root"), None).unwrap();
    assert!(native(&bob).instance(&title("a-root"), None).is_err());
    let certificate = |hc: &Https, c: &str| -> Cred {
        let (st, body) = hc.call(
            "GET",
            &format!("/getComputerPartitionCertificate?computer_id={c}&computer_partition_id=p0"),
            "",
            &[],
        );
        assert_eq!(st, 200, "{body}");
        let v = wire::loads(&body).unwrap();
        let field = |k| v.get(k).and_then(Value::as_str).unwrap().to_owned();
        let (cert, key) = (field("certificate"), field("key"));
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        env.keep(&format!("{c}-p0"), &cert, &key)
    };
    let (pa, pb) = (certificate(&c1_h, "C1"), certificate(&c2_h, "C2"));
    let (pa_h, pb_h) = (h(&pa), h(&pb));
    let (st, body) = pa_h.call(
        "POST",
        "/requestComputerPartition",
        &request_form("a-child", "C1", Some(("C1", "p0")), false),
        &partition_headers("C1", "p0"),
    );
    assert_eq!(st, 200, "child request: {body}");
    let child = admin_native
        .instance(&title("a-child"), Some(&title("a-root")))
        .unwrap();
    assert_eq!(
        (child.computer.as_str(), child.partition.as_str()),
        ("C1", "p1")
    );

    let ids: Vec<(&str, &Https)> = vec![
        ("admin", &admin_h),
        ("alice", &alice_h),
        ("bob", &bob_h),
        ("c1", &c1_h),
        ("c2", &c2_h),
        ("pa", &pa_h),
        ("pb", &pb_h),
    ];
    const ALL: &[&str] = &["admin", "alice", "bob", "c1", "c2", "pa", "pb"];
    const C1: &[&str] = &["admin", "c1"];
    const C1P0: &[&str] = &["admin", "c1", "pa"];
    const ADMIN: &[&str] = &["admin"];
    const A_TREE: &[&str] = &["admin", "alice", "c1", "pa"];
    let part = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("computer_id", "C1".to_owned()),
            ("computer_partition_id", "p0".to_owned()),
        ];
        v.extend(extra.iter().cloned());
        v
    };
    let connection = wire::dumps(&Value::dict([("url", "http://a")])).unwrap();
    let g = "a-root______0";
    let mut matrix = vec![
        get(
            "getFullComputerInformation C1",
            "/getFullComputerInformation?computer_id=C1",
            C1,
        ),
        get(
            "getComputerInformation C1",
            "/getComputerInformation?computer_id=C1",
            C1,
        ),
        get(
            "registerComputerPartition C1/p0",
            "/registerComputerPartition?computer_reference=C1&computer_partition_reference=p0",
            C1P0,
        ),
        get(
            "getComputerPartitionCertificate C1/p0",
            "/getComputerPartitionCertificate?computer_id=C1&computer_partition_id=p0",
            C1,
        ),
        get(
            "getComputerPartitionStatus C1/p0",
            "/getComputerPartitionStatus?computer_id=C1&computer_partition_id=p0",
            C1P0,
        ),
        get(
            "getSoftwareReleaseListFromSoftwareProduct",
            "/getSoftwareReleaseListFromSoftwareProduct?software_product_reference=x",
            ALL,
        ),
    ];
    // The form POSTs, one row each: the route, what it acts on, the fields, who may.
    let sr = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut v = vec![("url", SR.to_owned()), ("computer_id", "C1".to_owned())];
        v.extend(extra.iter().cloned());
        v
    };
    let other_sr = vec![
        ("url", "/srv/sr/other.cfg".into()),
        ("computer_id", "C1".into()),
    ];
    let on_c1 = |k: &'static str, v: String| vec![("computer_id", "C1".into()), (k, v)];
    let rename = vec![
        ("computer_id", "C1".into()),
        ("computer_partition_id", "p1".into()),
        ("new_name", "a-child".into()),
    ];
    #[rustfmt::skip]
    let posts = vec![
        ("loadComputerConfigurationFromXML", "C1", on_c1("xml", format_xml("C1")), C1),
        ("supplySupply", "C1", sr(&[("state", "available".into())]), ADMIN),
        ("buildingSoftwareRelease", "C1", sr(&[]), C1),
        ("availableSoftwareRelease", "C1", sr(&[]), C1),
        ("softwareReleaseError", "C1", sr(&[("error_log", "x".into())]), C1),
        ("destroyedSoftwareRelease", "C1", other_sr, C1),
        ("startedComputerPartition", "C1/p0", part(&[]), C1P0),
        ("stoppedComputerPartition", "C1/p0", part(&[]), C1P0),
        ("softwareInstanceError", "C1/p0", part(&[("error_log", "x".into())]), C1P0),
        ("useComputer", "C1", on_c1("use_string", "<journal/>".into()), C1),
        ("destroyedComputerPartition", "C1/p0 (not requested destroyed: kept)", part(&[]), C1P0),
        ("setComputerPartitionConnectionXml", "C1/p0", part(&[("connection_xml", connection)]), C1P0),
        ("softwareInstanceBang", "C1/p0", part(&[("message", "x".into())]), C1P0),
        ("softwareInstanceRename", "C1/p1 (same name)", rename, C1),
        ("computerBang", "C1", on_c1("message", "x".into()), C1),
    ];
    matrix.extend(
        posts
            .iter()
            .map(|(route, on, fields, allowed)| post(route, on, fields, allowed)),
    );
    matrix.extend([
        Call {
            name: "requestComputerPartition root a-root".into(),
            method: "POST",
            path: "/requestComputerPartition".into(),
            body: request_form("a-root", "C1", None, false),
            headers: form_headers(),
            allowed: &["admin", "alice"],
        },
        Call {
            name: "requestComputerPartition child as C1/p0".into(),
            method: "POST",
            path: "/requestComputerPartition".into(),
            body: request_form("a-child", "C1", Some(("C1", "p0")), false),
            headers: partition_headers("C1", "p0"),
            allowed: C1P0,
        },
        Call {
            name: "requestComputerPartition header C1/p0, form C2/p0 (spoof)".into(),
            method: "POST",
            path: "/requestComputerPartition".into(),
            body: request_form("a-child", "C1", Some(("C2", "p0")), false),
            headers: partition_headers("C1", "p0"),
            allowed: ADMIN,
        },
        Call {
            name: "requestComputerPartition root shared s-root".into(),
            method: "POST",
            path: "/requestComputerPartition".into(),
            body: request_form("s-root", "C1", None, true),
            headers: form_headers(),
            allowed: ADMIN,
        },
        get("hateoas root", "/hateoas/", ALL),
        get("hateoas view a-root", "/hateoas/partitions/a-root", A_TREE),
        get("hateoas view computer C1", "/hateoas/computers/C1", C1),
        get(
            "hateoas view shared s-root",
            "/hateoas/shared/s-root",
            ADMIN,
        ),
        rpc(
            "rpc get software_instance a-root",
            "slapos.get.v0.software_instance",
            json!({"instance_guid": g}),
            A_TREE,
        ),
        rpc(
            "rpc get instance_tree a-root",
            "slapos.get.v0.instance_tree",
            json!({"title": "a-root"}),
            A_TREE,
        ),
        rpc(
            "rpc bang a-root",
            "slapos.put.v0.software_instance_bang",
            json!({"instance_guid": g, "message": "x"}),
            C1P0,
        ),
        rpc(
            "rpc connection parameters a-root",
            "slapos.put.v0.software_instance_connection_parameter",
            json!({"instance_guid": g, "connection_parameter_dict": {"url": "http://a"}}),
            C1P0,
        ),
        rpc(
            "rpc reported state a-root",
            "slapos.put.v0.software_instance_reported_state",
            json!({"instance_guid": g, "reported_state": "started"}),
            C1P0,
        ),
        rpc(
            "rpc compute_partition C1/p0",
            "slapos.get.v0.compute_partition",
            json!({"computer_guid": "C1", "compute_partition_id": "p0"}),
            C1P0,
        ),
        rpc(
            "rpc software installation list C1",
            "slapos.allDocs.v0.compute_node_software_installation_list",
            json!({"computer_guid": "C1"}),
            C1,
        ),
        rpc(
            "rpc compute_node_format C1",
            "slapos.put.v0.compute_node_format",
            json!({"computer_guid": "C1", "compute_partition_list": [
                {"partition_id": "p0", "ip_list": []},
                {"partition_id": "p1", "ip_list": []},
                {"partition_id": "p2", "ip_list": []}]}),
            C1,
        ),
        rpc(
            "rpc supply on C1",
            "slapos.post.v0.software_installation",
            json!({"software_release_uri": SR, "computer_guid": "C1"}),
            ADMIN,
        ),
        rpc(
            "rpc request root a-root",
            "slapos.post.v0.software_instance",
            json!({"title": "a-root", "software_release_uri": SR, "software_type": "",
                   "sla_parameters": {"computer_guid": "C1"}}),
            &["admin", "alice"],
        ),
    ]);
    let mut child_rpc = rpc(
        "rpc request child as C1/p0",
        "slapos.post.v0.software_instance",
        json!({"title": "a-child", "software_release_uri": SR, "software_type": "",
               "sla_parameters": {"computer_guid": "C1"}}),
        C1P0,
    );
    child_rpc.headers.push((
        "Authorization",
        wire::SlapPartitionAuth::header_value("C1", "p0"),
    ));
    matrix.push(child_rpc);

    assert_matrix(
        &matrix,
        &ids,
        |call| (call.name.as_str(), call.allowed),
        |call, hc| {
            let (st, body) = hc.call(call.method, &call.path, &call.body, &call.headers);
            let body: String = body.chars().take(200).collect();
            Answer {
                succeeded: (200..400).contains(&st),
                status: Some(st),
                detail: format!("{st}: {body}"),
            }
        },
        || env.dump(),
    );

    // No client certificate: nothing but enrollment.
    let anon = Https::new(&url, &ca, None);
    for path in ["/getFullComputerInformation?computer_id=C1", "/hateoas/"] {
        assert_eq!(anon.call("GET", path, "", &[]).0, 403, "{path}");
    }

    // Lists are filtered to what each identity may read.
    let services = |hc: &Https| -> Vec<String> {
        let q = form(&[(
            "query",
            "portal_type:\"Instance Tree\" AND validation_state:validated".to_owned(),
        )]);
        let (st, body) = hc.call("GET", &format!("/hateoas/?mode=search&{q}"), "", &[]);
        assert_eq!(st, 200, "{body}");
        let v: Json = serde_json::from_str(&body).unwrap();
        let mut t: Vec<String> = v["_embedded"]["contents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["title"].as_str().unwrap().to_owned())
            .collect();
        t.sort();
        t
    };
    assert_eq!(services(&admin_h), ["a-root", "b-root", "s-root"]);
    assert_eq!(services(&alice_h), ["a-root"]);
    assert_eq!(services(&bob_h), ["b-root"]);
    assert_eq!(services(&c1_h), ["a-root"]);
    assert_eq!(services(&pb_h), ["b-root"]);
    let rpc_list = |hc: &Https, endpoint: &str, key: &str| -> Vec<String> {
        let (st, body) = hc.call(
            "POST",
            &format!("/{endpoint}"),
            "{}",
            &[("Content-Type", "application/json".into())],
        );
        assert_eq!(st, 200, "{body}");
        let v: Json = serde_json::from_str(&body).unwrap();
        let mut t: Vec<String> = v["result_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_str().unwrap().to_owned())
            .collect();
        t.sort();
        t
    };
    let trees = "slapos.allDocs.v0.instance_tree_list";
    assert_eq!(rpc_list(&alice_h, trees, "title"), ["a-root"]);
    assert_eq!(
        rpc_list(&admin_h, trees, "title"),
        ["a-root", "b-root", "s-root"]
    );
    let nodes = "slapos.allDocs.WIP.compute_node_list";
    assert_eq!(rpc_list(&c1_h, nodes, "computer_guid"), ["C1"]);
    assert_eq!(rpc_list(&admin_h, nodes, "computer_guid"), ["C1", "C2"]);
    assert!(rpc_list(&alice_h, nodes, "computer_guid").is_empty());

    // The real slapos.core `slap` library over TLS with client certificates.
    let Some(venv) = common::venv(&["python"], "the slap library part") else {
        return;
    };
    let out = py(
        &venv,
        &url,
        &alice,
        &format!(
            "p = slap.registerOpenOrder().request({SR:?}, 'py-root', \
             filter_kw={{'computer_guid': 'C1'}})\nprint(p.getId())\n"
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "p2");
    // Recorded as alice's: she reads it natively, bob does not.
    let py_root = title("py-root");
    native(&alice).instance(&py_root, None).unwrap();
    assert!(native(&bob).instance(&py_root, None).is_err());
    let full = "c = slap.registerComputer('C1')\n\
                print(sorted(p.getId() for p in c.getComputerPartitionList()))\n\
                print([s.getURI() for s in c.getSoftwareReleaseList()])\n";
    let out = py(&venv, &url, &c1, full);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("['p0', 'p1', 'p2']"), "{text}");
    assert!(text.contains(SR), "{text}");
    // Another computer's certificate: a 403, which the library raises as requests' HTTPError
    // (it maps only TLS failures to AuthenticationError); nothing changed. The reason phrase
    // is Werkzeug's upper-case one, as every SLAP error answer's.
    let before = env.dump();
    let out = py(&venv, &url, &c2, full);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403 Client Error: FORBIDDEN"), "{err}");
    let out = py(
        &venv,
        &url,
        &bob,
        &format!(
            "slap.registerOpenOrder().request({SR:?}, 'a-root', filter_kw={{'computer_guid': 'C1'}})\n"
        ),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403 Client Error: FORBIDDEN"));
    assert_eq!(before, env.dump());

    // Supply stays admin-only through the native API too.
    let r = native(&alice).supply(&cid("C1"), &available(SR));
    assert!(r.is_err());
}

/// A refused request whose body arrives after its headers (a client that writes them apart,
/// as ureq does) is answered once the body is in, on a connection that stays usable: the
/// server reads the body before its 403. Left unread, the connection closed at the answer and
/// the late body bytes reset it, which could lose the 403 before the client read it (a client
/// then saw a transport error instead of the refusal: seen once in `tests/auth.rs`).
#[test]
fn a_refused_request_is_answered_after_its_late_body_and_the_connection_stays_open() {
    let env = Env::new();
    drop(env.user("ops", true)); // creates the CA the server loads
    let server = Server::start_tls(&env.db(), &env.tls(), "error");
    let anon = Https::new(&server.url, &env.ca_pem(), None);
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(anon.config.clone(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(&anon.addr).unwrap());
    let body = serde_json::to_string(&registration("C3", &["p0"])).unwrap();
    let head = format!(
        "POST /v1/computers HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        anon.addr,
        body.len()
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    tls.write_all(body.as_bytes()).unwrap();
    let next = format!(
        "GET /v1/health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        anon.addr
    );
    tls.write_all(next.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let end = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(
        text.matches("HTTP/1.1 403").count(),
        2,
        "both requests refused on one connection ({end:?}): {text:?}"
    );
}
