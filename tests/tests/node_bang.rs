//! `slapos-node bang` over the native API, end to end: a real master and node with hello-web
//! running; `bang --partition P -m M` (`POST /v1/computers/{c}/partitions/{p}/bang`) records
//! the message on the instance, bumps its revision and the node converges the new revision;
//! `bang -m M` alone bangs each partition holding an instance in the node's cached desired
//! state; a partition the node does not have is refused before any call. The SLAP side
//! (`softwareInstanceBang`, `computerBang`) is in `slap_node.rs`.

use std::time::Duration;

use serde_json::json;
use slapos_proto::{ComputerId, InstanceTitle};
use slapos_tests::{
    Master, Node, example_release, instance_request, output_text, params, supply, wait_for,
};

const LONG: Duration = Duration::from_secs(60);
const COMPUTER: &str = "COMP-BANG";

#[test]
fn bang_bumps_the_tree_and_the_node_processes_it_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&tmp.path().join("master.db"));
    let node = Node::start(&tmp.path().join("node"), &master.url, COMPUTER, 2);
    let c = master.client();
    wait_for("node registered", LONG, || {
        c.computer(&ComputerId::parse(COMPUTER).ok()?).ok()
    });
    let url = example_release("hello-web");
    supply(&c, COMPUTER, &url);
    c.request(&instance_request(
        "web",
        &url,
        params(json!({"title": "Bang"})),
    ))
    .expect("request");
    let title = InstanceTitle::parse("web").expect("title");
    // Converged: the node reported the master's current revision.
    let converged = || {
        let i = c.instance(&title, None).ok()?;
        let reported = i.reported.as_ref()?.report.revision;
        (reported == i.revision && i.connection.contains_key("url")).then_some(i)
    };
    let before = wait_for("web converged", LONG, converged);
    let p = before.partition.to_string();

    let bang = |args: &[&str]| {
        let mut all = vec!["bang"];
        all.extend_from_slice(args);
        node.command(&all).output().expect("slapos-node bang")
    };
    let o = bang(&["--partition", &p, "-m", "disk full"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("banged partition(s) {p}")),
        "{}",
        output_text(&o)
    );
    let after = c.instance(&title, None).expect("instance");
    assert_eq!(after.bang.as_deref(), Some("disk full"));
    assert!(after.revision > before.revision, "{after:?}");
    let again = wait_for("the node converges the banged revision", LONG, converged);
    assert!(again.revision >= after.revision);

    // Without --partition: every partition holding an instance in the node's cache.
    let o = bang(&["-m", "rebooted"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("banged partition(s) {p}:")),
        "{}",
        output_text(&o)
    );
    let i = c.instance(&title, None).expect("instance");
    assert_eq!(i.bang.as_deref(), Some("rebooted"));
    assert!(i.revision > again.revision);

    // A partition this node does not have: refused, nothing sent.
    let o = bang(&["--partition", "slappart7", "-m", "x"]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a partition of this node"),
        "{}",
        output_text(&o)
    );
    assert_eq!(
        c.instance(&title, None).expect("instance").bang.as_deref(),
        Some("rebooted")
    );
    // No -m: a usage error.
    assert_eq!(bang(&["--partition", &p]).status.code(), Some(2));
}
