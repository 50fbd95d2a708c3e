//! OPC-UA input against a real OPC-UA server (async-opcua's, in this process) — built only with
//! `--features opcua-test-server`, which CI runs from scripts/checks/buffer.sh.
#![cfg(feature = "opcua-test-server")]

mod common;

use common::peers::*;
use opcua::server::address_space::VariableBuilder;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
use opcua::server::{ServerBuilder, ServerEndpoint, ServerUserToken};
use opcua::types::{DataTypeId, DataValue, NodeId, ObjectId};
use std::sync::mpsc;
use std::time::Duration;

/// Runs a server on a free port with `ns=<ns>;s=temperature`; values sent on the channel are
/// written to the variable. Returns (port, namespace index, value sender).
fn start_server(pki: std::path::PathBuf) -> (u16, u16, tokio::sync::mpsc::Sender<f64>) {
    start_server_with(pki, None)
}

/// [`start_server`]; with `user`, the only endpoint is Basic256Sha256 SignAndEncrypt and the
/// only login that user's name and password.
#[allow(deprecated)] // Basic256Sha256 is deprecated by the standard, still what PLCs offer
fn start_server_with(
    pki: std::path::PathBuf,
    user: Option<(&'static str, &'static str)>,
) -> (u16, u16, tokio::sync::mpsc::Sender<f64>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<f64>(16);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let builder = match user {
                None => ServerBuilder::new_anonymous("buffer-test-server"),
                Some((u, p)) => ServerBuilder::new()
                    .application_name("buffer-test-server")
                    .add_user_token("gw", ServerUserToken::user_pass(u, p))
                    .add_endpoint(
                        "sign-encrypt",
                        ServerEndpoint::new_basic256sha256_sign_encrypt("/", &["gw".to_string()]),
                    ),
            };
            let (server, handle) = builder
                .application_uri("urn:buffer-test-server")
                .product_uri("urn:buffer-test-server")
                .create_sample_keypair(true)
                .pki_dir(pki)
                .host("127.0.0.1")
                .port(port)
                .discovery_urls(vec![format!("opc.tcp://127.0.0.1:{port}/")])
                .trust_client_certs(true)
                .with_node_manager(simple_node_manager(
                    NamespaceMetadata {
                        namespace_uri: "urn:buffer-test".into(),
                        ..Default::default()
                    },
                    "simple",
                ))
                .build()
                .unwrap();
            let nm = handle
                .node_managers()
                .get_of_type::<SimpleNodeManager>()
                .unwrap();
            let ns = handle.get_namespace_index("urn:buffer-test").unwrap();
            let id = NodeId::new(ns, "temperature");
            {
                let mut sp = nm.address_space().write();
                VariableBuilder::new(&id, "temperature", "temperature")
                    .data_type(DataTypeId::Double)
                    .value(0.0f64)
                    .organized_by(ObjectId::ObjectsFolder)
                    .insert(&mut *sp);
            }
            tokio::spawn(server.run_with(listener));
            ready_tx.send((port, ns)).unwrap();
            let subs = handle.subscriptions().clone();
            loop {
                let Some(v) = rx.recv().await else { return };
                nm.set_value(&subs, &id, None, DataValue::new_now(v))
                    .unwrap();
                tokio::task::yield_now().await;
            }
        });
    });
    let (port, ns) = ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    (port, ns, tx)
}

#[test]
fn opcua_data_changes_become_records() {
    let dir = tempfile::tempdir().unwrap();
    let (port, ns, values) = start_server(dir.path().join("pki-server"));
    let sink = HttpSink::start();
    let cfg = format!(
        r#"
node_id = "gw-opcua"
[storage]
dir = "{}"
stream = "plc"
batch_window_ms = 5
[metrics]
listen = "127.0.0.1:0"
[[inputs]]
type = "opcua"
endpoint = "opc.tcp://127.0.0.1:{port}/"
nodes = ["ns={ns};s=temperature"]
interval_ms = 50
[output]
type = "http"
url = "{}"
backoff_base_ms = 20
"#,
        dir.path().join("data").display(),
        sink.url()
    );
    let b = BufferProc::start(dir.path(), &cfg);
    wait_for(Duration::from_secs(60), "opcua subscription", || {
        (b.status()["input_subscriptions"].as_u64().unwrap_or(0) > 0).then_some(())
    });
    for k in 1..=10 {
        let v = 20.0 + f64::from(k) / 4.0;
        values.blocking_send(v).unwrap();
        wait_for(Duration::from_secs(20), "the data change upstream", || {
            sink.snapshot()
                .iter()
                .any(|d| {
                    serde_json::from_str::<serde_json::Value>(&d.payload).is_ok_and(|p| {
                        p["value"].as_f64() == Some(v)
                            && p["node"] == format!("ns={ns};s=temperature")
                    })
                })
                .then_some(())
        });
    }
    let (firsts, dups) = dedup(&sink.snapshot());
    assert_eq!(dups, 0);
    assert!(firsts.windows(2).all(|w| w[0].seq < w[1].seq));
}

/// The client's application instance certificate (URI SAN `urn:slapos-buffer`) and key, made
/// with async-opcua's own generator (RSA 2048); the key mode 0600.
fn client_identity(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use opcua::crypto::{CertificateStore, X509Data};
    use std::os::unix::fs::PermissionsExt as _;
    let (cert, key) = (dir.join("client.der"), dir.join("client.pem"));
    let data = X509Data {
        key_size: 2048,
        common_name: "slapos-buffer".into(),
        organization: "test".into(),
        organizational_unit: "test".into(),
        country: "FR".into(),
        state: "Paris".into(),
        alt_host_names: vec!["urn:slapos-buffer".to_string(), "127.0.0.1".to_string()].into(),
        certificate_duration_days: 30,
    };
    CertificateStore::create_certificate_and_key(&data, true, &cert, &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

fn secure_cfg(
    dir: &std::path::Path,
    port: u16,
    ns: u16,
    pw_file: &std::path::Path,
    sink: &str,
) -> String {
    let (cert, key) = client_identity(dir);
    format!(
        r#"
node_id = "gw-opcua"
[storage]
dir = "{}"
stream = "plc"
batch_window_ms = 5
[metrics]
listen = "127.0.0.1:0"
[[inputs]]
type = "opcua"
endpoint = "opc.tcp://127.0.0.1:{port}/"
nodes = ["ns={ns};s=temperature"]
interval_ms = 50
security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
cert_file = "{}"
key_file = "{}"
server_cert_file = "{}"
username = "gw"
password_file = "{}"
[output]
type = "http"
url = "{sink}"
backoff_base_ms = 20
"#,
        dir.join("data").display(),
        cert.display(),
        key.display(),
        dir.join("pki-server/own/cert.der").display(),
        pw_file.display(),
    )
}

#[test]
fn opcua_basic256sha256_sign_and_encrypt_with_a_user_and_a_wrong_password() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (port, ns, values) =
        start_server_with(dir.path().join("pki-server"), Some(("gw", "right-pw")));
    let sink = HttpSink::start();
    let pw = dir.path().join("opcua.password");
    let write_pw = |p: &str| {
        std::fs::write(&pw, format!("{p}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    // A wrong password: refused, and said so.
    write_pw("wrong-pw");
    let mut b = BufferProc::start(
        dir.path(),
        &secure_cfg(dir.path(), port, ns, &pw, &sink.url()),
    );
    let err = wait_for(Duration::from_secs(60), "the refusal reported", || {
        b.status()["input_error"].as_str().map(str::to_owned)
    });
    eprintln!("wrong password: {err}");
    assert!(
        err.contains("BadIdentityTokenRejected") && err.contains("user name or password refused"),
        "the refusal names the cause: {err}"
    );
    assert_eq!(b.status()["input_subscriptions"], 0);
    assert!(b.terminate());
    // The right one: data changes arrive over the encrypted channel.
    write_pw("right-pw");
    let b = BufferProc::start(
        dir.path(),
        &secure_cfg(dir.path(), port, ns, &pw, &sink.url()),
    );
    wait_for(Duration::from_secs(60), "opcua subscription", || {
        (b.status()["input_subscriptions"].as_u64().unwrap_or(0) > 0).then_some(())
    });
    for k in 1..=3 {
        let v = 30.0 + f64::from(k) / 4.0;
        values.blocking_send(v).unwrap();
        wait_for(Duration::from_secs(20), "the data change upstream", || {
            sink.snapshot()
                .iter()
                .any(|d| {
                    serde_json::from_str::<serde_json::Value>(&d.payload)
                        .is_ok_and(|p| p["value"].as_f64() == Some(v))
                })
                .then_some(())
        });
    }
    assert!(b.status()["input_error"].is_null());
}
