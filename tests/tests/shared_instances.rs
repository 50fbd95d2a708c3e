//! End-to-end test of shared ("slave") instances on the native API: a real `slapos-master
//! serve` and a real `slapos-node run`, the `examples/shared-proxy` release as the host. Shared
//! instances are attached to the host, rendered into its `slave_instance_list`, get their own
//! URL (published by the host under their `slave_reference`), follow parameter changes, and
//! stop answering once destroyed while the others keep working.

use std::time::Duration;

use serde_json::{Value, json};
use slapos_client::ClientError;
use slapos_proto::{ComputerId, InstanceInfo, InstanceRequest, InstanceState, InstanceTitle};
use slapos_tests::{
    Client, Master, Node, example_release, http_get, instance_request, params, supply, wait_for,
};

const LONG: Duration = Duration::from_secs(60);
const COMPUTER: &str = "COMP-SHARED";

fn shared(title: &str, p: Value) -> InstanceRequest {
    InstanceRequest {
        shared: true,
        ..instance_request(title, &example_release("shared-proxy"), params(p))
    }
}

fn show(c: &Client, title: &str) -> Result<InstanceInfo, ClientError> {
    c.instance(&InstanceTitle::parse(title).expect("title"), None)
}

/// Wait until `title` publishes a connection parameter `key` satisfying `pred`.
fn wait_connection(c: &Client, title: &str, key: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(&format!("{title}: connection {key}"), LONG, || {
        let v = show(c, title).ok()?.connection.get(key)?.clone();
        pred(&v).then_some(v)
    })
}

/// The HTTP status of `url` (any status, not only 200); `None` when nothing answers.
fn status(url: &str) -> Option<u16> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .http_status_as_error(false)
        .build()
        .into();
    agent.get(url).call().ok().map(|r| r.status().as_u16())
}

#[test]
fn shared_instances_are_rendered_by_their_host_and_detached_on_destroy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&tmp.path().join("master.db"));
    let _node = Node::start(&tmp.path().join("node"), &master.url, COMPUTER, 2);
    let c = master.client();
    let url = example_release("shared-proxy");
    wait_for("node registered", LONG, || {
        c.computer(&ComputerId::parse(COMPUTER).ok()?).ok()
    });
    supply(&c, COMPUTER, &url);

    // No host yet: a 409 that names the release and says what to do; nothing is created.
    match c.request(&shared("site-a", json!({}))) {
        Err(ClientError::Api {
            status: 409,
            kind,
            message,
            ..
        }) => {
            assert_eq!(kind, "no_allocation");
            assert!(
                message.contains("request the host instance first"),
                "{message}"
            );
        }
        other => panic!("shared request without a host: {other:?}"),
    }
    assert_eq!(show(&c, "site-a").unwrap_err().status(), Some(404));

    let host = c
        .request(&instance_request("proxy", &url, params(json!({}))))
        .expect("request the host");
    let base = wait_connection(&c, "proxy", "url", Value::is_string);
    let base = base.as_str().expect("url");
    assert_eq!(status(&format!("{base}healthz")), Some(200));

    let a = c
        .request(&shared(
            "site-a",
            json!({"title": "Site A", "message": "first"}),
        ))
        .expect("request site-a");
    assert!(a.shared);
    assert_eq!(a.partition, host.partition, "hosted by the proxy");
    c.request(&shared("site-b", json!({"title": "Site B"})))
        .expect("request site-b");

    // The host renders both (its own count) and publishes a URL for each.
    wait_connection(&c, "proxy", "shared_count", |v| v == 2);
    let url_a = wait_connection(&c, "site-a", "url", Value::is_string);
    let url_a = url_a.as_str().expect("url").to_owned();
    let url_b = wait_connection(&c, "site-b", "url", Value::is_string);
    let url_b = url_b.as_str().expect("url").to_owned();
    assert_eq!(url_a, format!("{base}_site-a/"));
    assert_eq!(url_b, format!("{base}_site-b/"));
    let page_a = wait_for("site-a answers", LONG, || http_get(&url_a));
    assert!(
        page_a.contains("Site A") && page_a.contains("first"),
        "{page_a}"
    );
    let page_b = wait_for("site-b answers", LONG, || http_get(&url_b));
    assert!(
        page_b.contains("Site B") && !page_b.contains("Site A"),
        "{page_b}"
    );

    // A parameter change re-renders the host.
    c.request(&shared(
        "site-a",
        json!({"title": "Site A", "message": "second"}),
    ))
    .expect("change site-a");
    wait_for("site-a re-rendered", LONG, || {
        http_get(&url_a).filter(|p| p.contains("second"))
    });

    // Destroy: gone from the host's rendering, its URL answers 404, the other still works.
    let gone = c
        .request(&InstanceRequest {
            state: Some(InstanceState::Destroyed),
            ..shared("site-a", json!({}))
        })
        .expect("destroy site-a");
    assert_eq!(gone.state, InstanceState::Destroyed);
    wait_connection(&c, "proxy", "shared_count", |v| v == 1);
    wait_for("site-a answers 404", LONG, || {
        (status(&url_a) == Some(404)).then_some(())
    });
    assert_eq!(show(&c, "site-a").unwrap_err().status(), Some(404));
    let page_b = http_get(&url_b).expect("site-b still answers");
    assert!(page_b.contains("Site B"), "{page_b}");
    assert_eq!(
        show(&c, "site-b").expect("site-b").connection["url"],
        Value::from(url_b)
    );
}
