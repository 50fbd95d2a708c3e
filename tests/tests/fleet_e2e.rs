//! The fleet master end to end (issue 13): a real node and two real master replicas on one real
//! PostgreSQL (`master_lite::testpg`). The node polls replica B; the operator requests
//! hello-web on replica A; the node converges it (the page answers), its reports reach the
//! database through B and are read back through A. Then replica B is killed: the node is
//! restarted on A (as a load balancer would move it) and a change made on A converges.
//!
//! Without PostgreSQL the test prints why and passes, unless `SLAPOS_REQUIRE_TOOLS=1`.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use slapos_proto::{ComputerId, InstallState, InstanceState, InstanceTitle};
use slapos_tests::{
    Client, Node, Proc, bin, example_release, http_get, instance_request, params, supply, url_in,
    wait_for,
};

const LONG: Duration = Duration::from_secs(60);

/// A replica `slapos-master serve --db URL` on a free port: (process, URL).
fn replica(db: &str) -> (Proc, String) {
    let mut cmd = Command::new(bin("slapos-master"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--db", db]);
    let proc = Proc::spawn("replica", cmd);
    let line = proc.wait_line("listening on http://", Duration::from_secs(30));
    let url = url_in(&line).expect("url in the listening line");
    (proc, url)
}

#[test]
fn a_node_converges_hello_web_through_two_replicas_on_postgres() {
    let pg = match master_lite::testpg::TestPg::start() {
        Ok(pg) => pg,
        Err(skip) => return eprintln!("skipped: {}", skip.0),
    };
    let db = pg.fresh_db().expect("database");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_a, url_a) = replica(&db);
    let (mut b, url_b) = replica(&db);
    let mut node = Node::start(&tmp.path().join("node"), &url_b, "COMP-FLEET", 2);
    let a = Client::new(&url_a).expect("client");
    let web = example_release("hello-web");

    wait_for("node registered (through B, seen on A)", LONG, || {
        a.computer(&ComputerId::parse("COMP-FLEET").ok()?).ok()
    });
    supply(&a, "COMP-FLEET", &web);
    a.request(&instance_request(
        "web",
        &web,
        params(json!({"title": "Fleet page"})),
    ))
    .expect("request on A");
    wait_for("release installed", LONG, || {
        let info = a.computer(&ComputerId::parse("COMP-FLEET").ok()?).ok()?;
        let sw = info.software.iter().find(|s| s.url == web)?;
        (sw.install.as_ref()?.state == InstallState::Available).then_some(())
    });
    let title = InstanceTitle::parse("web").expect("title");
    let service = wait_for("connection url published", LONG, || {
        let i = a.instance(&title, None).ok()?;
        Some(i.connection.get("url")?.as_str()?.to_owned())
    });
    let page = wait_for("page answers", LONG, || http_get(&service));
    assert!(page.contains("Fleet page"), "{page}");
    wait_for("started reported", LONG, || {
        let i = a.instance(&title, None).ok()?;
        let r = i.reported.as_ref()?;
        (r.report.state == InstanceState::Started && r.report.revision == i.revision).then_some(())
    });

    // Replica B dies; the node is pointed at A (a load balancer would do this) and a change
    // made on A still reaches the service.
    b.kill();
    node.stop();
    let mut node = Node::start(&tmp.path().join("node"), &url_a, "COMP-FLEET", 2);
    a.request(&instance_request(
        "web",
        &web,
        params(json!({"title": "After B"})),
    ))
    .expect("change on A");
    // The restarted node has a new port block: read the published URL again.
    let service = wait_for("new title published", LONG, || {
        let i = a.instance(&title, None).ok()?;
        (i.connection.get("title")?.as_str()? == "After B")
            .then(|| Some(i.connection.get("url")?.as_str()?.to_owned()))
            .flatten()
    });
    wait_for("updated page", LONG, || {
        http_get(&service).filter(|p| p.contains("After B"))
    });
    node.stop();
}
