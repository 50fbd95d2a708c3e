//! Federation (slapproxy's multimaster, `master_lite::federation`): routing on the three
//! request APIs of master A (in process), and forwarding to a real remote `slapos-master serve`
//! B over its native API (plain HTTP, and mTLS with a user certificate B issued) and over its
//! SLAP routes, step by step: forward, record the outcome, read it back on A.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Env, Server, available, respond, slap_master};
use master_lite::federation::{self, Api, Federation, Remote};
use master_lite::store::federation::Outcome;
use serde_json::{Value as Json, json};
use slapos_proto::slap::{RequestForm, SoftwareInstanceDoc, Value, loads};
use slapos_proto::{
    ComputerId, ConnectionPublish, InstanceInfo, InstanceRequest, InstanceState, InstanceTitle,
    PartitionId, PartitionRef, PartitionReport, PartitionSpec, RegisterComputer,
};

const SR: &str = "https://example.com/web/software.cfg";
const REMOTE: &str = "http://127.0.0.1:9";

/// A request of `url` titled `title` (parameter `title=hello`) with the SLA `sla`.
fn request(title: &str, url: &str, sla: &[(&str, &str)]) -> InstanceRequest {
    let sla: BTreeMap<&str, &str> = sla.iter().copied().collect();
    serde_json::from_value(json!({
        "title": title, "software_url": url, "parameters": {"title": "hello"}, "sla": sla,
    }))
    .unwrap()
}

fn federation(remote: &str, api: Api, release: Option<&str>) -> Federation {
    let mut r = Remote::new(remote, api).unwrap();
    if let Some(sr) = release {
        r.set("release", sr).unwrap();
    }
    let mut f = Federation::default();
    f.add(r).unwrap();
    f
}

async fn json_of(master: &master_lite::Master, req: Request<Body>) -> (StatusCode, Json) {
    let (status, _, body) = respond(master.router(), req).await;
    let j = serde_json::from_slice(&body)
        .unwrap_or(Json::String(String::from_utf8_lossy(&body).into_owned()));
    (status, j)
}

fn post_json(path: &str, body: &impl serde::Serialize) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

#[tokio::test]
async fn the_three_request_apis_delegate_by_release_and_by_sla_master() {
    let mut a = slap_master("COMP-A");
    a.set_federation(federation(REMOTE, Api::Slap, Some(SR)));

    // Native: by release.
    let (status, info) = json_of(&a, post_json("/v1/instances", &request("web", SR, &[]))).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    let info: InstanceInfo = serde_json::from_value(info).unwrap();
    assert_eq!(info.computer.as_str(), federation::DELEGATED_COMPUTER);
    assert_eq!(
        info.bang.as_deref(),
        Some("delegated to http://127.0.0.1:9: pending, not forwarded yet")
    );
    assert!(info.reported.is_none(), "not forwarded yet: {info:?}");
    // Idempotent by title: the same request keeps the revision, a change takes a new one.
    let (_, again) = json_of(&a, post_json("/v1/instances", &request("web", SR, &[]))).await;
    assert_eq!(again["revision"].as_u64(), Some(info.revision));
    let mut changed = request("web", SR, &[]);
    changed.parameters.insert("title".into(), json!("changed"));
    let (_, after) = json_of(&a, post_json("/v1/instances", &changed)).await;
    assert!(
        after["revision"].as_u64().unwrap() > info.revision,
        "{after}"
    );

    // Native: by SLA master, for a release not in the list; an unknown master is refused.
    let other = "https://example.com/other/software.cfg";
    let (status, j) = json_of(
        &a,
        post_json(
            "/v1/instances",
            &request("db", other, &[("master", REMOTE)]),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{j}");
    assert_eq!(j["computer"], "federated");
    let (status, j) = json_of(
        &a,
        post_json(
            "/v1/instances",
            &request("x", other, &[("master", "http://elsewhere")]),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("http://elsewhere"),
        "{j}"
    );

    // SLAP: `requestComputerPartition` with `master_url` in the filter (slapproxy's key).
    let form = slap_form(
        other,
        "slap-one",
        ("title", "s"),
        &[("master_url", REMOTE)],
        false,
    );
    slap_delegated(&a, &form).await;

    // JSON-RPC: by release.
    let (status, j) = json_of(
        &a,
        post_json(
            "/slapos.post.v0.software_instance",
            &json!({"title": "rpc-one", "software_release_uri": SR,
                    "software_type": "default", "parameters": {"title": "r"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{j}");
    assert_eq!(j["computer_guid"], "federated", "{j}");
    assert!(
        j["access_status_message"]
            .as_str()
            .unwrap()
            .starts_with("delegated to"),
        "{j}"
    );

    // All four are listed, readable by title, and nothing was allocated on COMP-A.
    let (_, list) = json_of(
        &a,
        Request::get("/v1/instances").body(Body::empty()).unwrap(),
    )
    .await;
    let titles: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 4, "{list}");
    for t in ["web", "db", "slap-one", "rpc-one"] {
        assert!(titles.contains(&t), "{t} in {list}");
        let (status, j) = json_of(
            &a,
            Request::get(format!("/v1/instances/{t}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{j}");
        assert_eq!(j["computer"], "federated");
    }
    // A state change is recorded for forwarding.
    let (status, j) = json_of(
        &a,
        post_json("/v1/instances/web/state", &json!({"state": "stopped"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{j}");
    assert_eq!(j["state"], "stopped");
}

/// A `requestComputerPartition` form of `release` titled `title`, with one parameter.
fn slap_form(
    release: &str,
    title: &str,
    (k, v): (&str, &str),
    filter: &[(&str, &str)],
    shared: bool,
) -> RequestForm {
    RequestForm {
        software_release: release.into(),
        software_type: "default".into(),
        partition_reference: title.into(),
        parameters: BTreeMap::from([(k.to_owned(), Value::str(v))]),
        filter: filter
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::str(*v)))
            .collect(),
        state: None,
        shared,
        requester: None,
    }
}

/// `requestComputerPartition` of `form` on `a`, answered 200 as delegated (computer
/// `federated`): the `SoftwareInstance`.
async fn slap_delegated(a: &master_lite::Master, form: &RequestForm) -> SoftwareInstanceDoc {
    let doc = slap_answer(a, form).await;
    assert_eq!(
        doc.str_attr("slap_computer_id"),
        Some("federated"),
        "{doc:?}"
    );
    doc
}

/// `requestComputerPartition` of `form` on `a`, answered 200: the `SoftwareInstance`.
async fn slap_answer(a: &master_lite::Master, form: &RequestForm) -> SoftwareInstanceDoc {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.to_form().unwrap())
        .finish();
    let req = Request::post("/requestComputerPartition")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let (status, _, body) = respond(a.router(), req).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, StatusCode::OK, "{text}");
    SoftwareInstanceDoc::from_value(&loads(&text).unwrap()).unwrap()
}

/// Forward every due delegation of `a` once and record the outcome; the outcomes.
async fn forward_once(a: &master_lite::Master, fed: &Federation) -> Vec<Outcome> {
    let st = a.state();
    let due = st
        .db
        .call(|s| s.delegations_due(u64::MAX, 100))
        .await
        .unwrap();
    let mut out = Vec::new();
    for d in due {
        let fed = fed.clone();
        let (d, outcome) = tokio::task::spawn_blocking(move || {
            let o = federation::forward(&fed, &d);
            (d, o)
        })
        .await
        .unwrap();
        out.push(outcome.clone());
        st.db
            .call(move |s| s.delegation_outcome(&d, &outcome, 0))
            .await
            .unwrap();
    }
    out
}

async fn show(a: &master_lite::Master, title: &str) -> InstanceInfo {
    let (status, j) = json_of(
        a,
        Request::get(format!("/v1/instances/{title}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{j}");
    serde_json::from_value(j).unwrap()
}

/// A real master B (`slapos-master serve`, plain HTTP) with [`remote_computer`] of `n`
/// partitions, and a client; keep the directory for as long as B runs.
fn remote_b(n: usize) -> (tempfile::TempDir, Server, slapos_client::Client) {
    let dir = tempfile::tempdir().unwrap();
    let b = Server::start(&dir.path().join("b.db"));
    let bc = b.client();
    remote_computer(&bc, n);
    (dir, b, bc)
}

/// Computer `id` with `n` partitions `slappart0`…
fn computer(id: &str, n: usize) -> RegisterComputer {
    RegisterComputer {
        id: ComputerId::parse(id).unwrap(),
        partitions: (0..n)
            .map(|i| PartitionSpec {
                id: PartitionId::parse(format!("slappart{i}")).unwrap(),
                addresses: vec![],
                interface: None,
                uid: None,
            })
            .collect(),
        labels: Default::default(),
    }
}

/// B: a computer with `n` partitions, `SR` supplied.
fn remote_computer(b: &slapos_client::Client, n: usize) {
    b.register(&computer("COMP-B", n)).unwrap();
    b.supply(&ComputerId::parse("COMP-B").unwrap(), &available(SR))
        .unwrap();
}

fn publish(b: &slapos_client::Client, url: &str) {
    b.publish_connection(
        &ComputerId::parse("COMP-B").unwrap(),
        &PartitionId::parse("slappart0").unwrap(),
        &ConnectionPublish {
            parameters: json!({"url": url}).as_object().cloned().unwrap(),
            shared: Default::default(),
        },
    )
    .unwrap();
}

async fn forwards_to(remote_url: &str, api: Api, b: &slapos_client::Client, fed: Federation) {
    let mut a = slap_master("COMP-A");
    a.set_federation(fed.clone());
    let (status, j) = json_of(&a, post_json("/v1/instances", &request("web", SR, &[]))).await;
    assert_eq!(status, StatusCode::OK, "{j}");

    // First forwarding: allocated on B, no connection parameters yet.
    let out = forward_once(&a, &fed).await;
    assert!(
        matches!(&out[..], [Outcome::Accepted { connection, .. }] if connection.is_empty()),
        "{out:?}"
    );
    let info = show(&a, "web").await;
    let status = info.bang.clone().unwrap();
    assert!(
        status.starts_with(&format!(
            "delegated to {remote_url}: forwarded as \"web\" on COMP-B/slappart0, waiting"
        )),
        "{api:?}: {status}"
    );
    assert!(info.reported.is_some(), "accepted: {info:?}");
    let on_b = b
        .instance(&InstanceTitle::parse("web").unwrap(), None)
        .unwrap();
    assert_eq!(on_b.parameters["title"], "hello");

    // B's node publishes; the next forwarding brings the parameters back to A.
    publish(b, "http://[::1]:8080/");
    forward_once(&a, &fed).await;
    let info = show(&a, "web").await;
    assert_eq!(
        info.connection["url"], "http://[::1]:8080/",
        "{api:?}: {info:?}"
    );
    assert!(
        info.bang
            .unwrap()
            .ends_with("connection parameters received"),
        "{api:?}"
    );

    // Stop, then destroy: forwarded; once B accepted the destruction A forgets it.
    for state in [InstanceState::Stopped, InstanceState::Destroyed] {
        let (status, j) = json_of(
            &a,
            post_json("/v1/instances/web/state", &json!({"state": state.as_str()})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{j}");
        forward_once(&a, &fed).await;
        let on_b = b
            .instance(&InstanceTitle::parse("web").unwrap(), None)
            .unwrap();
        assert_eq!(on_b.state, state, "{api:?}");
    }
    let (status, _) = json_of(
        &a,
        Request::get("/v1/instances/web")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{api:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_to_a_master_lite_over_native_and_slap_brings_back_the_connection() {
    for api in [Api::Native, Api::Slap] {
        let (_dir, b, bc) = remote_b(1);
        let fed = federation(&b.url, api, Some(SR));
        forwards_to(&b.url, api, &bc, fed).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_over_mtls_as_a_user_of_the_remote() {
    let env = Env::new();
    let admin = env.user("admin", true);
    let alice = env.user("alice", false);
    let b = Server::start_tls(&env.db(), &env.tls(), "warn");
    let bc = admin.client(&b.url, &env.ca_pem());
    remote_computer(&bc, 1);
    let ca = env.tls().join("ca.pem");
    let spec = format!(
        "{},release={SR},ca={},cert={},key={}",
        b.url,
        ca.display(),
        alice.cert_file.display(),
        alice.key_file.display()
    );
    let mut fed = Federation::default();
    fed.add(Remote::parse_flag(&spec).unwrap()).unwrap();
    forwards_to(&b.url, Api::Native, &bc, fed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_remote_leaves_the_request_pending_with_the_reason() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for api in [Api::Native, Api::Slap] {
        let fed = federation(&url, api, Some(SR));
        let mut a = slap_master("COMP-A");
        a.set_federation(fed.clone());
        json_of(&a, post_json("/v1/instances", &request("web", SR, &[]))).await;
        let out = forward_once(&a, &fed).await;
        assert!(matches!(&out[..], [Outcome::Failed { .. }]), "{out:?}");
        let info = show(&a, "web").await;
        let status = info.bang.unwrap();
        assert!(
            status.starts_with(&format!(
                "delegated to {url}: pending, remote unreachable: "
            )),
            "{api:?}: {status}"
        );
        assert!(status.ends_with("; retrying"), "{status}");
        assert!(info.connection.is_empty());
        assert!(info.reported.is_none());
        // `request --wait` shows the status line while it waits.
        let line = master_lite::cli::wait_progress(
            &show(&a, "web").await,
            master_lite::cli::ReleaseSeen::Unknown,
        );
        assert!(line.starts_with("web: delegated to"), "{line}");
        assert!(line.contains("remote unreachable"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_as_a_partition_of_the_remote_makes_a_child_of_its_instance() {
    for api in [Api::Native, Api::Slap] {
        let (_dir, b, bc) = remote_b(2);
        let host = bc.request(&request("host", SR, &[])).unwrap();
        assert_eq!(host.partition.as_str(), "slappart0");
        // slapproxy's `[multimaster/URL]` with `computer` and `partition`.
        let mut r = Remote::new(&b.url, api).unwrap();
        for (k, v) in [
            ("release", SR),
            ("computer", "COMP-B"),
            ("partition", "slappart0"),
        ] {
            r.set(k, v).unwrap();
        }
        r.check().unwrap();
        let mut fed = Federation::default();
        fed.add(r).unwrap();
        let mut a = slap_master("COMP-A");
        a.set_federation(fed.clone());
        json_of(&a, post_json("/v1/instances", &request("web", SR, &[]))).await;
        let out = forward_once(&a, &fed).await;
        assert!(
            matches!(&out[..], [Outcome::Accepted { .. }]),
            "{api:?}: {out:?}"
        );
        let child = bc
            .instance(
                &InstanceTitle::parse("web").unwrap(),
                Some(&InstanceTitle::parse("host").unwrap()),
            )
            .unwrap();
        assert_eq!(
            child.requester.as_deref(),
            Some("COMP-B/slappart0"),
            "{api:?}"
        );
        assert_eq!(child.partition.as_str(), "slappart1");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_requests_over_slap_are_delegated_and_get_the_remote_hosts_connection() {
    for api in [Api::Native, Api::Slap] {
        let (_dir, b, bc) = remote_b(1);
        bc.request(&request("host", SR, &[])).unwrap();
        let fed = federation(&b.url, api, Some(SR));
        let mut a = slap_master("COMP-A");
        a.set_federation(fed.clone());

        // Classic `requestComputerPartition` with `shared_xml` true, and JSON-RPC `shared`.
        let form = slap_form(SR, "front", ("domain", "a.example"), &[], true);
        slap_delegated(&a, &form).await;
        let rpc = json!({"title": "front-rpc", "software_release_uri": SR,
                         "software_type": "default", "shared": true,
                         "parameters": {"domain": "b.example"}});
        let (status, j) = json_of(&a, post_json("/slapos.post.v0.software_instance", &rpc)).await;
        assert_eq!(status, StatusCode::OK, "{j}");
        assert_eq!(j["computer_guid"], "federated", "{j}");
        assert_eq!(j["shared"], true, "{j}");
        assert!(show(&a, "front").await.shared, "{api:?}");

        // Forwarded as shared requests: B's host serves them.
        let out = forward_once(&a, &fed).await;
        assert!(
            matches!(
                &out[..],
                [Outcome::Accepted { .. }, Outcome::Accepted { .. }]
            ),
            "{api:?}: {out:?}"
        );
        // B's host publishes for them; the next forwarding brings it back to the requester.
        let host = |url: &str| json!({"url": url}).as_object().cloned().unwrap();
        bc.publish_connection(
            &ComputerId::parse("COMP-B").unwrap(),
            &PartitionId::parse("slappart0").unwrap(),
            &ConnectionPublish {
                parameters: host("https://host/"),
                shared: BTreeMap::from([
                    ("_front".to_owned(), host("https://a.example/")),
                    ("_front-rpc".to_owned(), host("https://b.example/")),
                ]),
            },
        )
        .unwrap();
        forward_once(&a, &fed).await;
        let doc = slap_delegated(&a, &form).await;
        let conn = doc
            .dict_attr("_connection_dict")
            .unwrap()
            .unwrap_or_default();
        assert_eq!(
            conn.get("url").and_then(Value::as_str),
            Some("https://a.example/"),
            "{api:?}: {doc:?}"
        );
        let (_, j) = json_of(&a, post_json("/slapos.post.v0.software_instance", &rpc)).await;
        assert_eq!(
            j["connection_parameters"]["url"], "https://b.example/",
            "{api:?}: {j}"
        );
    }
}

/// `f` on A's store (its result unwrapped).
async fn on_store<T, F>(a: &master_lite::Master, f: F) -> T
where
    T: Send + 'static,
    F: FnMut(&mut master_lite::store::Store) -> Result<T, master_lite::store::StoreError>
        + Send
        + 'static,
{
    a.state().db.call(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn destroying_a_non_root_parent_destroys_its_delegated_children_like_its_local_ones() {
    const OTHER: &str = "https://example.com/other/software.cfg";
    let (_dir, b, bc) = remote_b(1);
    let fed = federation(&b.url, Api::Native, Some(SR));
    let mut a = slap_master("COMP-A");
    a.set_federation(fed.clone());
    let at = |p: &str| PartitionRef::parse(&format!("COMP-A/{p}")).unwrap();
    let t = |t: &str| InstanceTitle::parse(t).unwrap();
    // app (root) ─► mid ─► cache (here) and db (delegated to B).
    let remote = b.url.clone();
    let mid = on_store(&a, move |s| {
        s.register(&computer("COMP-A", 3), 1)?;
        let app = s.slap_request(&request("app", OTHER, &[]), None, 2)?.0;
        let from = at(app.partition.as_str());
        let mid = s
            .slap_request(&request("mid", OTHER, &[]), Some(&from), 3)?
            .0;
        let from = at(mid.partition.as_str());
        s.slap_request(&request("cache", OTHER, &[]), Some(&from), 4)?;
        s.delegate(&request("db", SR, &[]), Some(&from), None, &remote, 5)?;
        Ok(mid)
    })
    .await;
    let out = forward_once(&a, &fed).await;
    assert!(matches!(&out[..], [Outcome::Accepted { .. }]), "{out:?}");
    let on_b = |bc: &slapos_client::Client| {
        bc.instance(&InstanceTitle::parse("app_db").unwrap(), None)
            .map(|i| i.state)
    };
    assert_eq!(on_b(&bc).unwrap(), InstanceState::Started);

    // app destroys mid: its children are untouched until its node reports it destroyed.
    let state = move |s: &mut master_lite::store::Store, title: &str| {
        s.instance(&t(title), Some(&t("app"))).map(|i| i.state)
    };
    let (cache, db) = on_store(&a, move |s| {
        let mut gone = request("mid", OTHER, &[]);
        gone.state = Some(InstanceState::Destroyed);
        s.slap_request(&gone, Some(&at("slappart0")), 6)?;
        Ok((state(s, "cache")?, state(s, "db")?))
    })
    .await;
    assert_eq!(
        (cache, db),
        (InstanceState::Started, InstanceState::Started)
    );

    // The node reports mid destroyed: both children are destroyed and keep its partition.
    let report = move |p: &str| {
        let p = PartitionId::parse(p).unwrap();
        move |s: &mut master_lite::store::Store| {
            let rep = PartitionReport {
                state: InstanceState::Destroyed,
                revision: 1,
                promises: Vec::new(),
                error: None,
            };
            s.report_partition(&ComputerId::parse("COMP-A").unwrap(), &p, &rep, 7)
        }
    };
    let ack = on_store(&a, report(mid.partition.as_str())).await;
    assert!(!ack.freed, "{ack:?}");
    assert_eq!(ack.waiting_for, [t("cache"), t("db")]);
    let (cache, db) = on_store(&a, move |s| Ok((state(s, "cache")?, state(s, "db")?))).await;
    assert_eq!(
        (cache, db),
        (InstanceState::Destroyed, InstanceState::Destroyed)
    );

    // Forwarded like any destroy: B destroys it and A forgets it; once the local child is
    // freed too, mid's partition is.
    let out = forward_once(&a, &fed).await;
    assert!(matches!(&out[..], [Outcome::Destroyed]), "{out:?}");
    assert_eq!(on_b(&bc).unwrap(), InstanceState::Destroyed);
    let db = on_store(&a, move |s| Ok(state(s, "db").is_err())).await;
    assert!(db, "db forgotten on A");
    let cache = on_store(&a, move |s| s.instance(&t("cache"), Some(&t("app")))).await;
    assert!(on_store(&a, report(cache.partition.as_str())).await.freed);
    assert!(on_store(&a, report(mid.partition.as_str())).await.freed);
}

#[tokio::test]
async fn a_shared_instance_hosted_here_stays_here_when_its_release_is_routed() {
    let mut a = slap_master("COMP-A");
    on_store(&a, |s| {
        s.register(&computer("COMP-A", 1), 1)?;
        s.slap_request(&request("host", SR, &[]), None, 2)
    })
    .await;
    let form = slap_form(SR, "front", ("domain", "a.example"), &[], true);
    let rpc = json!({"title": "front-rpc", "software_release_uri": SR,
                     "software_type": "default", "shared": true});
    let native = json!({"title": "front-native", "software_url": SR, "shared": true});
    // Hosted here before the release is routed to a remote, then requested again after.
    for routed in [false, true] {
        if routed {
            a.set_federation(federation(REMOTE, Api::Slap, Some(SR)));
        }
        let doc = slap_answer(&a, &form).await;
        assert_eq!(doc.str_attr("slap_computer_id"), Some("COMP-A"), "{doc:?}");
        let (status, j) = json_of(&a, post_json("/slapos.post.v0.software_instance", &rpc)).await;
        assert_eq!(
            (status, &j["computer_guid"]),
            (StatusCode::OK, &json!("COMP-A")),
            "{j}"
        );
        let (status, j) = json_of(&a, post_json("/v1/instances", &native)).await;
        assert_eq!(
            (status, &j["computer"]),
            (StatusCode::OK, &json!("COMP-A")),
            "{j}"
        );
    }
    // A new shared title is delegated.
    slap_delegated(&a, &slap_form(SR, "other", ("domain", "o"), &[], true)).await;
}

// ---------------------------------------------------------------------------------------------
// Hostile and hanging remotes: faults a real peer cannot be made to show, served by a few lines
// of tokio.

/// How a fake remote answers.
#[derive(Clone)]
enum Answer {
    /// 200 with this body and its `Content-Length`.
    Sized(Vec<u8>),
    /// 200 with this body, delimited by closing the connection (no `Content-Length`).
    UntilClose(Vec<u8>),
}

/// Read one HTTP request (headers and a `Content-Length` body) from `s`.
async fn read_request(s: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - end;
    while have < len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        have += n;
    }
    Ok(())
}

/// A fake remote answering the calls, one per connection, with `answers` in turn (the last one
/// again when they run out); its URL.
async fn fake_remote(answers: Vec<Answer>) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut answers = answers.into_iter().peekable();
        let mut last = None;
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let answer = answers.next().or_else(|| last.clone()).unwrap();
            last = Some(answer.clone());
            tokio::spawn(async move {
                if read_request(&mut s).await.is_err() {
                    return;
                }
                let (head, body) = match answer {
                    Answer::Sized(b) => (
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n",
                            b.len()
                        ),
                        b,
                    ),
                    Answer::UntilClose(b) => (
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         connection: close\r\n\r\n"
                            .to_owned(),
                        b,
                    ),
                };
                // The client stops reading at its limit: a failed write is expected.
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    url
}

/// A native answer to the request "web": allocated on COMP-B/slappart0 with the connection
/// parameter `url` (`extra` bytes of padding in a second one).
fn native_answer(url: &str, extra: usize) -> Vec<u8> {
    let mut connection = json!({"url": url});
    if extra > 0 {
        connection["padding"] = Json::String("x".repeat(extra));
    }
    serde_json::to_vec(&json!({
        "title": "web", "root_title": "web", "requester": null,
        "software_url": SR, "software_type": "default", "parameters": {"title": "hello"},
        "state": "started", "computer": "COMP-B", "partition": "slappart0",
        "connection": connection, "reported": null, "bang": null, "revision": 1,
        "children": [], "shared": false,
    }))
    .unwrap()
}

/// `out` for a failure message, cut (an oversized answer would fill the log).
fn brief(out: &[Outcome]) -> String {
    format!("{out:?}").chars().take(500).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_answer_is_not_read_nor_stored_and_leaves_the_request_pending() {
    let limit = federation::MAX_ANSWER_BYTES;
    let huge = native_answer("http://b/", limit);
    for (api, answer, sized) in [
        (Api::Native, Answer::Sized(huge.clone()), true),
        (Api::Native, Answer::UntilClose(huge.clone()), false),
        (Api::Slap, Answer::Sized(huge.clone()), true),
        (Api::Slap, Answer::UntilClose(huge.clone()), false),
    ] {
        let url = fake_remote(vec![answer]).await;
        let fed = federation(&url, api, Some(SR));
        let mut a = slap_master("COMP-A");
        a.set_federation(fed.clone());
        json_of(&a, post_json("/v1/instances", &request("web", SR, &[]))).await;
        let out = forward_once(&a, &fed).await;
        assert!(
            matches!(&out[..], [Outcome::Failed { .. }]),
            "{}",
            brief(&out)
        );
        let info = show(&a, "web").await;
        let status = info.bang.unwrap();
        let expected = if sized {
            format!(
                "delegated to {url}: pending, remote answer too large: {} bytes > limit {limit} bytes",
                huge.len()
            )
        } else {
            format!(
                "delegated to {url}: pending, remote answer too large: more than the limit of {limit} bytes"
            )
        };
        assert!(status.starts_with(&expected), "{api:?}: {status}");
        assert!(status.ends_with("; retrying"), "{status}");
        assert!(info.connection.is_empty(), "{api:?}");
        assert!(info.reported.is_none(), "{api:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_parameters_over_the_stored_limit_keep_the_previous_ones() {
    // Under the read limit, over the stored one: the first answer is kept.
    let over = master_lite::store::federation::MAX_CONNECTION_BYTES;
    assert!(over + 1000 < federation::MAX_ANSWER_BYTES);
    let url = fake_remote(vec![
        Answer::Sized(native_answer("http://b/", 0)),
        Answer::Sized(native_answer("http://evil/", over)),
    ])
    .await;
    let fed = federation(&url, Api::Native, Some(SR));
    let mut a = slap_master("COMP-A");
    a.set_federation(fed.clone());
    json_of(&a, post_json("/v1/instances", &request("web", SR, &[]))).await;
    forward_once(&a, &fed).await;
    assert_eq!(show(&a, "web").await.connection["url"], "http://b/");
    let out = forward_once(&a, &fed).await;
    assert!(
        matches!(&out[..], [Outcome::Accepted { .. }]),
        "{}",
        brief(&out)
    );
    let info = show(&a, "web").await;
    let status = info.bang.unwrap();
    assert!(
        status.starts_with(&format!(
            "delegated to {url}: pending, remote answer too large: "
        )) && status.contains(&format!(
            " bytes > limit {over} bytes (connection parameters)"
        )),
        "{status}"
    );
    assert_eq!(info.connection.len(), 1, "{:?}", info.connection.keys());
    assert_eq!(info.connection["url"], "http://b/");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_remote_does_not_delay_the_delegations_to_another() {
    // Remote H accepts connections and never answers; B is a real master.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = format!("http://{}", hole.local_addr().unwrap());
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
            let _ = accepted_tx.try_send(());
        }
    });
    let (_dir, b, bc) = remote_b(1);
    let hole_sr = "https://example.com/hole/software.cfg";
    let mut fed = Federation::default();
    for (url, sr) in [(&hole_url, hole_sr), (&b.url, SR)] {
        let mut r = Remote::new(url, Api::Native).unwrap();
        r.set("release", sr).unwrap();
        fed.add(r).unwrap();
    }
    let mut a = slap_master("COMP-A");
    a.set_federation(fed.clone());
    // H's request first: it is the longest waiting.
    json_of(
        &a,
        post_json("/v1/instances", &request("slow", hole_sr, &[])),
    )
    .await;
    json_of(&a, post_json("/v1/instances", &request("web", SR, &[]))).await;
    let st = a.state();
    let task = federation::spawn(st.db.clone(), Arc::new(fed), st.federation_wake.clone());

    tokio::time::timeout(Duration::from_secs(60), accepted.recv())
        .await
        .expect("the hanging remote was called");
    let wait_for = |what: &'static str, done: fn(&InstanceInfo) -> bool| {
        let a = &a;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                let info = show(a, "web").await;
                if done(&info) {
                    return info;
                }
                assert!(tokio::time::Instant::now() < deadline, "{what}: {info:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for("allocated on B", |i| {
        i.bang
            .as_deref()
            .is_some_and(|b| b.contains("forwarded as"))
    })
    .await;
    publish(&bc, "http://[::1]:8080/");
    let web = wait_for("B's connection parameters", |i| !i.connection.is_empty()).await;
    assert_eq!(web.connection["url"], "http://[::1]:8080/");
    // Meanwhile the call to H has not returned: nothing was recorded for "slow".
    let slow = show(&a, "slow").await;
    assert_eq!(
        slow.bang.as_deref(),
        Some(format!("delegated to {hole_url}: pending, not forwarded yet").as_str()),
        "B waited for H"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outcome_due_again_in_real_milliseconds_is_recorded_on_both_engines() {
    // The forwarding task records each outcome with its next attempt in wall-clock
    // milliseconds (past i32): PostgreSQL once typed that parameter int4 and refused it.
    let pg = std::thread::spawn(|| {
        master_lite::testpg::TestPg::shared().map(|pg| pg.fresh_db().unwrap())
    })
    .join()
    .unwrap();
    let mut masters = vec![("sqlite", master_lite::Master::open_in_memory().unwrap())];
    match pg {
        Ok(url) => {
            let url = master_lite::store::DbUrl::Postgres(url);
            let m = std::thread::spawn(move || master_lite::Master::open_db(&url).unwrap())
                .join()
                .unwrap();
            masters.push(("postgres", m));
        }
        Err(skip) => eprintln!("PostgreSQL part skipped: {}", skip.0),
    }
    for (engine, mut a) in masters {
        a.set_federation(federation(REMOTE, Api::Native, None));
        json_of(
            &a,
            post_json("/v1/instances", &request("web", SR, &[("master", REMOTE)])),
        )
        .await;
        let db = a.state().db;
        let due = db.read(|s| s.delegations_due(u64::MAX, 10)).await.unwrap();
        let [d] = &due[..] else {
            panic!("{engine}: {due:?}")
        };
        let d = d.clone();
        let now = master_lite::now_ms();
        let outcome = Outcome::Failed {
            reason: "remote unreachable: test".into(),
        };
        db.call(move |s| {
            let next = federation::next_attempt(now, &d, &outcome);
            s.delegation_outcome(&d, &outcome, next)
        })
        .await
        .unwrap_or_else(|e| panic!("{engine}: {e}"));
        let status = show(&a, "web").await.bang.unwrap();
        assert!(
            status.ends_with("remote unreachable: test; retrying"),
            "{engine}: {status}"
        );
        let due = db.read(move |s| s.delegations_due(now, 10)).await.unwrap();
        assert!(due.is_empty(), "{engine}: due again at once: {due:?}");
    }
}
