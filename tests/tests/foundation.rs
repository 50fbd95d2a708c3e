//! End-to-end tests of the foundation: a real `slapos-master serve` and real `slapos-node run`
//! processes on loopback, driven through the native API exactly as a user would.

use std::time::Duration;

use serde_json::{Value, json};
use slapos_proto::{
    ComputerId, InstallState, InstanceInfo, InstanceState, InstanceTitle, SoftwareUrl, StateChange,
};
use slapos_tests::{
    Client, Master, Node, example_release, http_get, instance_request, params, repo_root, supply,
    wait_for,
};

const LONG: Duration = Duration::from_secs(60);

fn hello_web() -> SoftwareUrl {
    example_release("hello-web")
}

fn request(c: &Client, title: &str, url: &SoftwareUrl, p: Value) -> InstanceInfo {
    c.request(&instance_request(title, url, params(p)))
        .expect("request")
}

fn show(c: &Client, title: &str) -> InstanceInfo {
    c.instance(&InstanceTitle::parse(title).expect("title"), None)
        .expect("show instance")
}

/// Wait until the instance publishes a connection parameter `key` satisfying `pred`.
fn wait_connection(c: &Client, title: &str, key: &str, pred: impl Fn(&str) -> bool) -> String {
    wait_for(
        &format!("{title}: connection parameter {key}"),
        LONG,
        || {
            let i = show(c, title);
            let v = i.connection.get(key)?.as_str()?.to_owned();
            pred(&v).then_some(v)
        },
    )
}

fn wait_reported(c: &Client, title: &str, state: InstanceState) -> InstanceInfo {
    wait_for(
        &format!("{title}: reported {}", state.as_str()),
        LONG,
        || {
            let i = show(c, title);
            let r = i.reported.as_ref()?;
            (r.report.state == state && r.report.revision == i.revision).then_some(i.clone())
        },
    )
}

fn set_state(c: &Client, title: &str, state: InstanceState) {
    c.set_state(
        &InstanceTitle::parse(title).expect("title"),
        &StateChange { state },
    )
    .expect("state change");
}

fn wait_install(c: &Client, computer: &str, url: &SoftwareUrl, state: InstallState) -> String {
    let id = ComputerId::parse(computer).expect("computer id");
    wait_for(&format!("{url} install {state:?}"), LONG, || {
        let info = c.computer(&id).ok()?;
        let sw = info.software.iter().find(|s| &s.url == url)?;
        let rep = sw.install.as_ref()?;
        (rep.state == state).then(|| rep.message.clone().unwrap_or_default())
    })
}

/// request → installed → running → connection parameters → parameter change → stop → start →
/// destroy (partition wiped and free).
#[test]
fn lifecycle_of_a_real_service() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&tmp.path().join("master.db"));
    let node = Node::start(&tmp.path().join("node"), &master.url, "COMP-E2E", 2);
    let c = master.client();
    let url = hello_web();

    wait_for("node registered", LONG, || {
        c.computer(&ComputerId::parse("COMP-E2E").ok()?).ok()
    });
    supply(&c, "COMP-E2E", &url);
    let first = request(&c, "web", &url, json!({"title": "First page"}));
    assert_eq!(first.computer.as_str(), "COMP-E2E");
    wait_install(&c, "COMP-E2E", &url, InstallState::Available);

    let service = wait_connection(&c, "web", "url", |u| u.starts_with("http://127.0.0.1:"));
    let page = wait_for("page answers", LONG, || http_get(&service));
    assert!(page.contains("First page"), "{page}");
    let running = wait_reported(&c, "web", InstanceState::Started);
    let promises = &running.reported.as_ref().expect("report").report.promises;
    assert!(
        promises.iter().any(|p| p.name == "web-answers" && p.ok),
        "{promises:?}"
    );

    // Same request again: idempotent, same partition, same revision.
    let again = request(&c, "web", &url, json!({"title": "First page"}));
    assert_eq!(again.partition, first.partition);
    assert_eq!(again.revision, running.revision);

    // Parameter change reaches the running service.
    request(&c, "web", &url, json!({"title": "Second page"}));
    wait_connection(&c, "web", "title", |t| t == "Second page");
    let page = wait_for("updated page", LONG, || {
        http_get(&service).filter(|p| p.contains("Second page"))
    });
    assert!(!page.contains("First page"));

    set_state(&c, "web", InstanceState::Stopped);
    wait_reported(&c, "web", InstanceState::Stopped);
    wait_for("service down after stop", LONG, || {
        http_get(&service).is_none().then_some(())
    });

    set_state(&c, "web", InstanceState::Started);
    wait_reported(&c, "web", InstanceState::Started);
    wait_for("service back after start", LONG, || http_get(&service));

    let partition = first.partition.as_str().to_owned();
    set_state(&c, "web", InstanceState::Destroyed);
    wait_for("partition freed", LONG, || {
        let info = c.computer(&ComputerId::parse("COMP-E2E").ok()?).ok()?;
        let p = info
            .partitions
            .iter()
            .find(|p| p.id.as_str() == partition)?;
        p.instance.is_none().then_some(())
    });
    // Only the node's own format record (`.slapos-resource`, written by `format`) survives.
    let left: Vec<_> = std::fs::read_dir(node.partition_dir(&partition))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let left: Vec<_> = left
        .into_iter()
        .filter(|n| n != ".slapos-resource")
        .collect();
    assert!(left.is_empty(), "partition {partition} not wiped: {left:?}");
    assert!(http_get(&service).is_none(), "service still answers");
    // The freed partition is allocatable again.
    let next = request(&c, "web-2", &url, json!({}));
    assert_eq!(next.computer.as_str(), "COMP-E2E");
}

/// The master is killed (SIGKILL) and restarted on the same database and port: nothing
/// acknowledged is lost and the node carries on.
#[test]
fn master_restart_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("master.db");
    let mut master = Master::start(&db);
    let addr = master.addr();
    let _node = Node::start(&tmp.path().join("node"), &master.url, "COMP-MR", 3);
    let c = master.client();
    let url = hello_web();
    wait_for("node registered", LONG, || {
        c.computer(&ComputerId::parse("COMP-MR").ok()?).ok()
    });
    supply(&c, "COMP-MR", &url);
    let before = request(&c, "kept", &url, json!({"title": "Kept"}));
    wait_connection(&c, "kept", "url", |_| true);

    master.proc.kill();
    let master = Master::start_on(&db, &addr);
    let c = master.client();
    let after = show(&c, "kept");
    assert_eq!(after.partition, before.partition);
    assert_eq!(after.parameters.get("title"), Some(&json!("Kept")));
    assert!(
        after.connection.contains_key("url"),
        "{:?}",
        after.connection
    );

    // The node reconnects by itself: a new request after the restart converges.
    request(&c, "after-restart", &url, json!({"title": "After"}));
    let u = wait_connection(&c, "after-restart", "url", |_| true);
    let page = wait_for("new service answers", LONG, || http_get(&u));
    assert!(page.contains("After"));
}

/// The node restarts while the master is down: services come back from the cache; when the
/// master returns the node resyncs and applies what changed meanwhile.
#[test]
fn node_restart_while_master_down() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("master.db");
    let mut master = Master::start(&db);
    let addr = master.addr();
    let mut node = Node::start(&tmp.path().join("node"), &master.url, "COMP-OFF", 2);
    let c = master.client();
    let url = hello_web();
    wait_for("node registered", LONG, || {
        c.computer(&ComputerId::parse("COMP-OFF").ok()?).ok()
    });
    supply(&c, "COMP-OFF", &url);
    request(&c, "offline", &url, json!({"title": "Cached"}));
    let service = wait_connection(&c, "offline", "url", |_| true);
    wait_for("service up", LONG, || http_get(&service));

    master.proc.kill();
    node.stop();
    assert!(http_get(&service).is_none(), "services stop with the node");
    node.restart();
    let page = wait_for("service back from the cache", LONG, || http_get(&service));
    assert!(page.contains("Cached"));

    let master = Master::start_on(&db, &addr);
    let c = master.client();
    request(&c, "offline", &url, json!({"title": "Resynced"}));
    wait_for("change applied after resync", LONG, || {
        http_get(&service).filter(|p| p.contains("Resynced"))
    });
}

/// A release with a bad artifact hash and one whose build fails report errors (with a message)
/// and do not disturb a good instance on the same node.
#[test]
fn broken_releases_do_not_poison_others() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&tmp.path().join("master.db"));
    let _node = Node::start(&tmp.path().join("node"), &master.url, "COMP-BAD", 3);
    let c = master.client();
    wait_for("node registered", LONG, || {
        c.computer(&ComputerId::parse("COMP-BAD").ok()?).ok()
    });

    // Two broken copies of hello-web.
    let src = repo_root().join("examples/hello-web");
    let copy = |name: &str, edit: &dyn Fn(String) -> String| -> SoftwareUrl {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in ["server.py", "check_http.py", "instance.toml.in"] {
            std::fs::copy(src.join(f), dir.join(f)).expect("copy");
        }
        let manifest = std::fs::read_to_string(src.join("software.toml")).expect("manifest");
        std::fs::write(dir.join("software.toml"), edit(manifest)).expect("write");
        SoftwareUrl::parse(dir.join("software.toml").to_string_lossy().into_owned()).expect("url")
    };
    let bad_hash = copy("bad-hash", &|m| {
        m.replacen(
            "a3de4bc6574404789dca98d97d8ab599bdb4efd0782cae09f2762ff7f070db17",
            &"0".repeat(64),
            1,
        )
    });
    let bad_build = copy("bad-build", &|m| {
        m.replacen(
            "command = [\"python3\", \"-m\", \"compileall\"",
            "command = [\"sh\", \"-c\", \"echo build exploded >&2; exit 3\", \"python3\", \"-m\", \"compileall\"",
            1,
        )
    });
    let good = hello_web();
    for u in [&bad_hash, &bad_build, &good] {
        supply(&c, "COMP-BAD", u);
    }
    request(&c, "bad-hash", &bad_hash, json!({}));
    request(&c, "bad-build", &bad_build, json!({}));
    request(&c, "good", &good, json!({"title": "Still fine"}));

    let msg = wait_install(&c, "COMP-BAD", &bad_hash, InstallState::Error);
    assert!(msg.contains("sha256"), "{msg}");
    let msg = wait_install(&c, "COMP-BAD", &bad_build, InstallState::Error);
    assert!(msg.contains("build exploded"), "{msg}");
    let u = wait_connection(&c, "good", "url", |_| true);
    let page = wait_for("good service answers", LONG, || http_get(&u));
    assert!(page.contains("Still fine"));
    assert!(show(&c, "bad-hash").connection.is_empty());
}

/// An instance request whose one parameter holds `len` bytes (over the 1 MiB body limit).
fn oversized_request(len: usize) -> String {
    json!({"title": "big", "software_url": "/x", "parameters": {"p": "x".repeat(len)}}).to_string()
}

/// Bad input to the real server gets a clear 4xx and changes nothing.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&tmp.path().join("master.db"));
    let c = master.client();
    c.register(
        &serde_json::from_value(json!({
            "id": "COMP-IN", "partitions": [{"id": "slappart0"}]
        }))
        .expect("register body"),
    )
    .expect("register");
    let url = hello_web();
    supply(&c, "COMP-IN", &url);
    request(&c, "only", &url, json!({}));
    let snapshot = || {
        (
            serde_json::to_string(&c.instances().expect("list")).expect("json"),
            serde_json::to_string(&c.computers().expect("computers")).expect("json"),
        )
    };
    let before = snapshot();

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |path: &str, body: &str| -> (u16, String) {
        let mut r = agent
            .post(format!("{}{path}", master.url))
            .header("content-type", "application/json")
            .send(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    };
    let cases: Vec<(&str, String, u16)> = vec![
        ("/v1/instances", "{not json".into(), 400),
        (
            "/v1/instances",
            json!({"title": "../x", "software_url": url.as_str()}).to_string(),
            400,
        ),
        (
            "/v1/instances",
            json!({"title": "only", "software_url": "/other/software.toml"}).to_string(),
            409,
        ),
        (
            "/v1/computers/NOPE/software",
            json!({"url": url.as_str()}).to_string(),
            404,
        ),
        (
            "/v1/computers/COMP-IN/partitions/slappart9/report",
            json!({"state": "started", "revision": 1}).to_string(),
            404,
        ),
        (
            "/v1/computers",
            json!({"id": "../etc", "partitions": []}).to_string(),
            400,
        ),
        ("/v1/instances", oversized_request(2 << 20), 413),
    ];
    for (path, body, want) in cases {
        let (status, text) = post(path, &body);
        assert_eq!(status, want, "POST {path}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{text}"
        );
    }
    let unknown = c.instance(&InstanceTitle::parse("missing").expect("title"), None);
    assert_eq!(unknown.expect_err("unknown instance").status(), Some(404));
    assert_eq!(snapshot(), before, "a refused call changed the database");
}

/// A client that sends an over-limit body in pieces with pauses between them (as a slow
/// uplink does) still reads the 413 and its JSON error: the server drains the rest of the
/// body before answering instead of closing on a half-sent request (a broken pipe).
#[test]
fn oversized_body_from_a_slow_sender_gets_its_413() {
    use std::io::{Read, Write};

    let tmp = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&tmp.path().join("master.db"));
    let addr = master.url.trim_start_matches("http://");
    let body = oversized_request(3 << 20);
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LONG)).expect("timeout");
    write!(
        s,
        "POST /v1/instances HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .expect("headers");
    for (i, piece) in body.as_bytes().chunks(256 << 10).enumerate() {
        s.write_all(piece)
            .unwrap_or_else(|e| panic!("piece {i}: the server closed early: {e}"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let err: Value = serde_json::from_str(json).unwrap_or_else(|_| panic!("{answer}"));
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than")),
        "{answer}"
    );
}

/// `slapos-master standalone --example hello-web`: one process, master and node; the printed URL
/// serves the example's page, and a restart brings it back from the database and cache.
#[test]
fn standalone_serves_the_example() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("box");
    let start = || {
        let mut cmd = std::process::Command::new(slapos_tests::bin("slapos-master"));
        cmd.args(["standalone", "--listen", "127.0.0.1:0", "--partitions", "2"])
            .args(["--isolation", "none"])
            .args(["--example", "hello-web", "--dir"])
            .arg(&dir);
        slapos_tests::Proc::spawn("standalone", cmd)
    };
    let mut sa = start();
    let line = sa.wait_line("open http://", LONG);
    let url = slapos_tests::url_in(&line).expect("url");
    let page = wait_for("example page", LONG, || http_get(&url));
    assert!(page.contains("Hello from the edge"), "{page}");
    sa.stop();
    assert!(http_get(&url).is_none(), "service survived the box");
    // The database is private: 0600 in a 0700 directory partition users cannot enter.
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).expect("stat").permissions())
            & 0o777
    };
    assert_eq!(mode(&dir.join("master/master.db")), 0o600);
    assert_eq!(mode(&dir.join("master")), 0o700);

    let again = start();
    let line = again.wait_line("open http://", LONG);
    assert_eq!(slapos_tests::url_in(&line).as_deref(), Some(url.as_str()));
    wait_for("example page after restart", LONG, || http_get(&url));
}
