//! slapproxy's JSON-RPC API on master-lite, in process: the cases of slapos.core 1.26.1's
//! `slapos/tests/test_slapproxy_json_rpc.py` (status codes, JSON bodies and errors), plus the
//! common rules (405, 406, schema 400) and one model with the classic and native APIs.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{respond, slap_master};
use serde_json::{Value as Json, json};

struct Rpc {
    master: master_lite::Master,
}

impl Rpc {
    fn new() -> Self {
        Rpc {
            master: slap_master("computer"),
        }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Json) {
        let (status, headers, body) = respond(self.master.router(), req).await;
        let ct = headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(ct.as_deref(), Some("application/json"), "{status}");
        (status, serde_json::from_slice(&body).unwrap())
    }

    async fn post(&self, path: &str, body: Json) -> (StatusCode, Json) {
        self.post_with(path, body, &[]).await
    }

    async fn post_with(
        &self,
        path: &str,
        body: Json,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Json) {
        let mut b = Request::post(path).header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// `format_for_number_of_partitions`: slappartN with two addresses on tapN.
    async fn format(&self, n: usize) {
        let list: Vec<Json> = (0..n)
            .map(|i| {
                json!({"partition_id": format!("slappart{i}"), "ip_list": [
                    {"ip-address": "1.2.3.4", "network-interface": format!("tap{i}")},
                    {"ip-address": "4.3.2.1", "network-interface": format!("tap{i}")}]})
            })
            .collect();
        let r = self
            .post(
                "/slapos.put.v0.compute_node_format",
                json!({"computer_guid": "computer", "compute_partition_list": list}),
            )
            .await;
        assert_eq!(
            r,
            (
                StatusCode::OK,
                json!({"type": "success", "title": "Formatted"})
            )
        );
    }

    async fn request(&self, title: &str, extra: Json) -> (StatusCode, Json) {
        let mut body = json!({"title": title, "software_release_uri": "http://sr//",
                              "software_type": "foobar"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.post("/slapos.post.v0.software_instance", body).await
    }
}

fn error(status: u16, kind: &str, title: &str) -> Json {
    json!({"status": status, "type": kind, "title": title})
}

fn success(title: &str) -> Json {
    json!({"type": "success", "title": title})
}

#[tokio::test]
async fn constant_endpoints() {
    let m = Rpc::new();
    let cases = [
        (
            "/slapos.remove.v0.compute_node_certificate",
            json!({"computer_guid": "c"}),
            success("Ignored"),
        ),
        (
            "/slapos.post.v0.compute_node_certificate",
            json!({"computer_guid": "c"}),
            json!({"key": "", "certificate": ""}),
        ),
        (
            "/slapos.post.v0.compute_node_usage",
            json!({"computer_guid": "c", "tioxml": ""}),
            success("Ignored"),
        ),
        (
            "/slapos.get.v0.compute_node_status",
            json!({"computer_guid": "c"}),
            json!({"text": "Unknown (not implemented)"}),
        ),
        (
            "/slapos.get.v0.software_instance_certificate",
            json!({"instance_guid": "x"}),
            json!({"key": "", "certificate": ""}),
        ),
        (
            "/slapos.put.v0.compute_node_bang",
            json!({"computer_guid": "c", "message": "m"}),
            success("Ignored"),
        ),
        (
            "/slapos.put.v0.software_instance_error",
            json!({"instance_guid": "x", "message": "m"}),
            success("Ignored"),
        ),
        (
            "/slapos.put.v0.software_installation_error",
            json!({"computer_guid": "c", "software_release_uri": "u", "message": "m"}),
            success("Ignored"),
        ),
    ];
    for (path, body, want) in cases {
        assert_eq!(m.post(path, body).await, (StatusCode::OK, want), "{path}");
    }
    // A usage journal is accounted (master-lite/src/slap/usage.rs), so what is not one is a
    // 400 and a journal of an unknown computer a 404.
    let (s, e) = m
        .post(
            "/slapos.post.v0.compute_node_usage",
            json!({"computer_guid": "c", "tioxml": "<x/>"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["title"].as_str().unwrap().contains("<journal>"), "{e}");
    let (s, e) = m
        .post(
            "/slapos.post.v0.compute_node_usage",
            json!({"computer_guid": "c", "tioxml": "<journal/>"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let r = m
        .post_with(
            "/slapos.get.v0.hateoas_url",
            json!({}),
            &[("host", "localhost")],
        )
        .await;
    assert_eq!(
        r,
        (
            StatusCode::OK,
            json!({"hateoas_url": "http://localhost/hateoas/"})
        )
    );
    let r = m
        .post_with(
            "/slapos.get.v0.hateoas_url",
            json!({}),
            &[("host", "localhost"), ("x-forwarded-proto", "https")],
        )
        .await;
    assert_eq!(
        r,
        (
            StatusCode::OK,
            json!({"hateoas_url": "https://localhost/hateoas/"})
        )
    );
}

#[tokio::test]
async fn common_rules_405_406_and_schema_400() {
    let m = Rpc::new();
    let (s, b) = m
        .send(
            Request::get("/slapos.get.v0.compute_node_status")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(b["status"], 405);
    assert_eq!(b["type"], "Method Not Allowed");
    let (s, b) = m
        .post_with(
            "/slapos.get.v0.compute_node_status",
            json!({"computer_guid": "c"}),
            &[("accept", "text/html")],
        )
        .await;
    assert_eq!(
        (s, &b["type"]),
        (StatusCode::NOT_ACCEPTABLE, &json!("Not Acceptable"))
    );
    let ok = m
        .post_with(
            "/slapos.get.v0.compute_node_status",
            json!({"computer_guid": "c"}),
            &[("accept", "text/html, application/json;q=0.9")],
        )
        .await;
    assert_eq!(ok.0, StatusCode::OK);
    for (body, title) in [
        (json!({}), "'computer_guid' is a required property"),
        (
            json!({"computer_guid": "c", "foo": 1}),
            "Additional properties are not allowed ('foo' was unexpected)",
        ),
    ] {
        let r = m.post("/slapos.get.v0.compute_node_status", body).await;
        assert_eq!(
            r,
            (StatusCode::BAD_REQUEST, error(400, "Bad Request", title))
        );
    }
    let (s, _) = m
        .post(
            "/slapos.post.v0.software_installation",
            json!({"computer_guid": "c", "software_release_uri": "u", "state": "nope"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = m.request("x", json!({"shared": "yes"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = m
        .post("/slapos.get.v0.compute_node_status", json!([1]))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn software_installation_supply_list_and_destroyed() {
    let m = Rpc::new();
    let r = m
        .post(
            "/slapos.allDocs.v0.compute_node_software_installation_list",
            json!({"computer_guid": "computer"}),
        )
        .await;
    assert_eq!(
        r,
        (
            StatusCode::FORBIDDEN,
            error(403, "Forbidden", "computer is not registered.")
        )
    );
    let r = m
        .post(
            "/slapos.post.v0.software_installation",
            json!({"computer_guid": "computer", "software_release_uri": "https://mysoft"}),
        )
        .await;
    assert_eq!(
        r,
        (
            StatusCode::OK,
            success("Supplied https://mysoft to be available")
        )
    );
    let list = "/slapos.allDocs.v0.compute_node_software_installation_list";
    let r = m.post(list, json!({"computer_guid": "computer"})).await;
    assert_eq!(
        r.1,
        json!({"result_list": [{"software_release_uri": "https://mysoft", "state": "available"}]})
    );
    let reported = "/slapos.put.v0.software_installation_reported_state";
    let body = |state: &str| {
        json!({"computer_guid": "computer", "software_release_uri": "https://mysoft",
               "reported_state": state})
    };
    assert_eq!(
        m.post(reported, body("available")).await.1,
        success("Ignored")
    );
    assert_eq!(
        m.post(reported, body("building")).await.1,
        success("Ignored")
    );
    m.post(
        "/slapos.post.v0.software_installation",
        json!({"computer_guid": "computer", "software_release_uri": "https://mysoft",
               "state": "destroyed"}),
    )
    .await;
    assert_eq!(
        m.post(reported, body("destroyed")).await.1,
        success("Destroyed")
    );
    let r = m.post(list, json!({"computer_guid": "computer"})).await;
    assert_eq!(r.1, json!({"result_list": []}));
}

/// slapproxy's free texts: a software URL without a scheme (`bar`) and partition addresses
/// that are no IP literals (`MyFirstIpAddress`), each address with its own interface. The
/// SLAP answers give them back as sent; a node's desired state, native or SLAP, still decodes
/// (the native one never carries addresses; a node reports `bar` as its install error).
#[tokio::test]
async fn any_software_url_and_address_text_as_slapproxy_and_nodes_still_decode() {
    let m = Rpc::new();
    let r = m
        .post(
            "/slapos.put.v0.compute_node_format",
            json!({"computer_guid": "computer", "compute_partition_list": [
                {"partition_id": "slappart0", "ip_list": [
                    {"ip-address": "MyFirstIpAddress", "network-interface": "MyFirstNetworkInterface",
                     "netmask": "MyFirstNetmask"},
                    {"ip-address": "fd00::1", "network-interface": "MySecondNetworkInterface"},
                    {"ip-address": "10.0.0.1"}]}]}),
        )
        .await;
    assert_eq!(r, (StatusCode::OK, success("Formatted")));
    let r = m
        .post(
            "/slapos.post.v0.software_installation",
            json!({"computer_guid": "computer", "software_release_uri": "bar"}),
        )
        .await;
    assert_eq!(r, (StatusCode::OK, success("Supplied bar to be available")));
    let r = m
        .request("foo", json!({"software_release_uri": "bar"}))
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1["software_release_uri"], "bar");
    assert_eq!(
        r.1["ip_list"],
        json!([
            ["MyFirstNetworkInterface", "MyFirstIpAddress"],
            ["MySecondNetworkInterface", "fd00::1"],
            ["slappart0", "10.0.0.1"]
        ])
    );
    // A second request finds no free partition: slapproxy's 403, not a 400 on the URL.
    let r = m
        .request("other", json!({"software_release_uri": "bar"}))
        .await;
    assert_eq!(
        r,
        (
            StatusCode::FORBIDDEN,
            error(
                403,
                "Forbidden",
                "No free computer partition found for: other"
            )
        )
    );
    // Refused texts: control characters, an empty address.
    for ip in [json!({"ip-address": "a\nb"}), json!({"ip-address": ""})] {
        let r = m
            .post(
                "/slapos.put.v0.compute_node_format",
                json!({"computer_guid": "computer", "compute_partition_list": [
                    {"partition_id": "slappart0", "ip_list": [ip]}]}),
            )
            .await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
    }

    let router = m.master.router();
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    let computer = slapos_proto::ComputerId::parse("computer").unwrap();
    // The native API: only the IP literals; the desired state decodes.
    let (status, _, body) = respond(router.clone(), get("/v1/computers/computer")).await;
    assert_eq!(status, StatusCode::OK);
    let info: slapos_proto::ComputerInfo = serde_json::from_slice(&body).unwrap();
    assert_eq!(info.partitions[0].addresses, ["fd00::1", "10.0.0.1"]);
    let (status, _, body) = respond(router.clone(), get("/v1/computers/computer/desired")).await;
    assert_eq!(status, StatusCode::OK);
    let desired: slapos_proto::DesiredState = serde_json::from_slice(&body).unwrap();
    let a = desired.partitions[0].instance.as_ref().unwrap();
    assert_eq!(a.software_url.as_str(), "bar");
    assert!(!a.software_url.is_fetchable());
    // A node speaking SLAP decodes the classic document into the same desired state.
    let (status, _, body) = respond(
        router,
        get("/getFullComputerInformation?computer_id=computer"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("MyFirstIpAddress"), "{text}");
    let slap = node_edge::link::slap::desired_from_xml(&text, &computer).unwrap();
    assert_eq!(slap.software[0].url.as_str(), "bar");
    let a = slap.partitions[0].instance.as_ref().unwrap();
    assert_eq!((a.title.as_str(), a.software_url.as_str()), ("foo", "bar"));
}

#[tokio::test]
async fn software_instance_allocation_get_and_lists() {
    let m = Rpc::new();
    let r = m.request("foo", json!({})).await;
    assert_eq!(
        r,
        (
            StatusCode::FORBIDDEN,
            error(
                403,
                "Forbidden",
                "No free computer partition found for: foo"
            )
        )
    );
    m.format(1).await;
    let (s, got) = m
        .request("MyFirstInstance", json!({"parameters": {"bar": "foo"}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    let mut want = json!({
        "title": "MyFirstInstance", "instance_guid": "MyFirstInstance______0",
        "software_release_uri": "http://sr//", "software_type": "foobar", "state": "started",
        "connection_parameters": {}, "parameters": {"bar": "foo"}, "shared": false,
        "root_instance_title": "MyFirstInstance",
        "ip_list": [["tap0", "1.2.3.4"], ["tap0", "4.3.2.1"]], "full_ip_list": [],
        "sla_parameters": {}, "computer_guid": "computer", "compute_partition_id": "slappart0",
        "processing_timestamp": null, "access_status_message": ""});
    assert!(got["processing_timestamp"].as_i64().unwrap() > 1_600_000_000);
    want["processing_timestamp"] = got["processing_timestamp"].clone();
    assert_eq!(got, want);

    // No second free partition.
    let r = m.request("Other", json!({})).await;
    assert_eq!(r.0, StatusCode::FORBIDDEN);

    let g = |guid: &str| json!({"instance_guid": guid});
    assert_eq!(
        m.post(
            "/slapos.get.v0.software_instance",
            g("MyFirstInstance______0")
        )
        .await,
        (StatusCode::OK, want.clone())
    );
    assert_eq!(
        m.post("/slapos.get.v0.software_instance", g("nope______0"))
            .await,
        (
            StatusCode::FORBIDDEN,
            error(403, "Forbidden", "No software instance nope______0 found.")
        )
    );
    assert_eq!(
        m.post("/slapos.get.v0.software_instance", g("garbage"))
            .await,
        (
            StatusCode::FORBIDDEN,
            error(403, "Forbidden", "instance_guid garbage not handled.")
        )
    );
    let part = |p: &str| json!({"computer_guid": "computer", "compute_partition_id": p});
    assert_eq!(
        m.post("/slapos.get.v0.compute_partition", part("slappart0"))
            .await,
        (StatusCode::OK, want.clone())
    );
    assert_eq!(
        m.post("/slapos.get.v0.compute_partition", part("slappart9"))
            .await,
        (
            StatusCode::FORBIDDEN,
            error(
                403,
                "Forbidden",
                "No instance on partition slappart9 found."
            )
        )
    );
    assert_eq!(
        m.post(
            "/slapos.get.v0.instance_tree",
            json!({"title": "MyFirstInstance"})
        )
        .await,
        (StatusCode::OK, want.clone())
    );
    assert_eq!(
        m.post("/slapos.get.v0.instance_tree", json!({"title": "FOO"}))
            .await,
        (
            StatusCode::FORBIDDEN,
            error(403, "Forbidden", "No instance tree FOO found.")
        )
    );
    assert_eq!(
        m.post("/slapos.allDocs.v0.instance_tree_list", json!({}))
            .await
            .1,
        json!({"result_list": [{"title": "MyFirstInstance"}]})
    );
    assert_eq!(
        m.post(
            "/slapos.allDocs.v0.compute_node_instance_list",
            json!({"computer_guid": "computer"})
        )
        .await
        .1,
        json!({"result_list": [{"title": "MyFirstInstance", "instance_guid": "MyFirstInstance______0",
               "state": "started", "compute_partition_id": "slappart0",
               "software_release_uri": "http://sr//"}]})
    );
    assert_eq!(
        m.post(
            "/slapos.allDocs.v0.compute_node_instance_list",
            json!({"computer_guid": "nope"})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        m.post(
            "/slapos.allDocs.v0.instance_node_instance_list",
            g("MyFirstInstance______0")
        )
        .await,
        (StatusCode::OK, json!({"result_list": []}))
    );
    assert_eq!(
        m.post(
            "/slapos.allDocs.v0.instance_node_instance_list",
            g("nope______0")
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        m.post("/slapos.allDocs.WIP.compute_node_list", json!({}))
            .await
            .1,
        json!({"result_list": [{"computer_guid": "computer"}]})
    );
    // A shared request with no matching host (other release) is refused.
    assert_eq!(
        m.request(
            "s",
            json!({"shared": true, "software_release_uri": "http://other/"})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn requests_from_a_partition_and_connection_parameters() {
    let m = Rpc::new();
    m.format(3).await;
    m.request("MyFirstInstance", json!({})).await;
    let r = m
        .post_with(
            "/slapos.post.v0.software_instance",
            json!({"title": "x", "software_release_uri": "http://sr//", "software_type": "t"}),
            &[(
                "authorization",
                "X-SlapPartition computer_id=foo, computer_partition_id=bar",
            )],
        )
        .await;
    assert_eq!(
        r,
        (
            StatusCode::BAD_REQUEST,
            error(
                400,
                "Bad Request",
                "No partition matching the authorization header: (foo / bar)"
            )
        )
    );
    let auth = [(
        "authorization",
        "X-SlapPartition computer_id=computer, computer_partition_id=slappart0",
    )];
    let (s, child) = m
        .post_with(
            "/slapos.post.v0.software_instance",
            json!({"title": "MyChild", "software_release_uri": "http://sr//", "software_type": "t"}),
            &auth,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{child}");
    assert_eq!(child["instance_guid"], "MyChild___MyFirstInstance___0");
    assert_eq!(child["root_instance_title"], "MyFirstInstance");
    assert_eq!(child["compute_partition_id"], "slappart1");

    // The child publishes: stored as strings, the requester's timestamp moves.
    let get = |g: &'static str| {
        m.post(
            "/slapos.get.v0.software_instance",
            json!({"instance_guid": g}),
        )
    };
    let root_before = get("MyFirstInstance______0").await.1["processing_timestamp"].clone();
    let r = m
        .post(
            "/slapos.put.v0.software_instance_connection_parameter",
            json!({"instance_guid": "MyChild___MyFirstInstance___0",
                   "connection_parameter_dict": {"url": "http://x", "n": 42}}),
        )
        .await;
    assert_eq!(r, (StatusCode::OK, success("Updated")));
    let c = get("MyChild___MyFirstInstance___0").await.1;
    assert_eq!(
        c["connection_parameters"],
        json!({"url": "http://x", "n": "42"})
    );
    let root_after = get("MyFirstInstance______0").await.1["processing_timestamp"].clone();
    assert!(root_after.as_i64() >= root_before.as_i64());

    // One model: the classic view of the child's partition carries what JSON-RPC stored.
    let (status, _, xml) = respond(
        m.master.router(),
        Request::get("/registerComputerPartition?computer_reference=computer&computer_partition_reference=slappart1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let xml = String::from_utf8_lossy(&xml);
    assert!(xml.contains("http://x") && xml.contains("MyChild"), "{xml}");

    // Rename and bang.
    let r = m
        .post(
            "/slapos.put.v0.software_instance_title",
            json!({"instance_guid": "MyFirstInstance______0", "title": "Renamed"}),
        )
        .await;
    assert_eq!(r, (StatusCode::OK, success("Renamed")));
    assert_eq!(get("Renamed______0").await.0, StatusCode::OK);
    let r = m
        .post(
            "/slapos.put.v0.software_instance_bang",
            json!({"instance_guid": "Renamed______0", "message": "m"}),
        )
        .await;
    assert_eq!(r, (StatusCode::OK, success("Bang handled")));
    let not_implemented = (
        StatusCode::FORBIDDEN,
        error(403, "Forbidden", "NotImplemented"),
    );
    let r = m
        .post(
            "/slapos.put.v0.software_instance_bang",
            json!({"instance_guid": "s___Renamed___1", "message": "m"}),
        )
        .await;
    assert_eq!(r, not_implemented);
    let r = m
        .post(
            "/slapos.put.v0.software_instance_title",
            json!({"instance_guid": "s___Renamed___1", "title": "t"}),
        )
        .await;
    assert_eq!(r, not_implemented);
}

#[tokio::test]
async fn reported_state_destroyed_frees_the_partition() {
    let m = Rpc::new();
    m.format(1).await;
    let reported = "/slapos.put.v0.software_instance_reported_state";
    let body = |s: &str| json!({"instance_guid": "MyFirstInstance______0", "reported_state": s});
    assert_eq!(
        m.post(reported, body("started")).await.1,
        success("Ignored")
    );
    assert_eq!(
        m.post(reported, body("stopped")).await.1,
        success("Ignored")
    );
    assert_eq!(
        m.post(reported, body("destroyed")).await,
        (
            StatusCode::FORBIDDEN,
            error(
                403,
                "Forbidden",
                "No software instance MyFirstInstance______0 found."
            )
        )
    );
    assert_eq!(
        m.request("MyFirstInstance", json!({})).await.0,
        StatusCode::OK
    );
    let (s, destroyed) = m
        .request("MyFirstInstance", json!({"state": "destroyed"}))
        .await;
    assert_eq!(
        (s, &destroyed["state"]),
        (StatusCode::OK, &json!("destroyed"))
    );
    assert_eq!(
        m.post(reported, body("destroyed")).await,
        (StatusCode::OK, success("Destroyed"))
    );
    let r = m
        .post(
            "/slapos.get.v0.software_instance",
            json!({"instance_guid": "MyFirstInstance______0"}),
        )
        .await;
    assert_eq!(r.0, StatusCode::FORBIDDEN);
    // The partition is free again.
    assert_eq!(m.request("Next", json!({})).await.0, StatusCode::OK);
}

#[tokio::test]
async fn shared_instances() {
    let m = Rpc::new();
    m.format(1).await;
    let (_, host) = m
        .request("MyFirstInstance", json!({"parameters": {"bar": "foo"}}))
        .await;
    let auth = format!(
        "X-SlapPartition computer_id={}, computer_partition_id={}",
        host["computer_guid"].as_str().unwrap(),
        host["compute_partition_id"].as_str().unwrap()
    );
    let (s, got) = m
        .post_with(
            "/slapos.post.v0.software_instance",
            json!({"title": "MySecondInstance", "software_release_uri": "http://sr//",
                   "software_type": "foobar", "parameters": {"bar": "foo"}, "shared": true}),
            &[("authorization", auth.as_str())],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(
        got,
        json!({"title": "MySecondInstance",
               "instance_guid": "MySecondInstance___MyFirstInstance___1",
               "software_release_uri": "http://sr//", "software_type": "foobar",
               "state": "started", "connection_parameters": {}, "parameters": {"bar": "foo"},
               "shared": true, "root_instance_title": "MyFirstInstance",
               "ip_list": [["tap0", "1.2.3.4"], ["tap0", "4.3.2.1"]], "full_ip_list": [],
               "sla_parameters": {}, "computer_guid": "computer",
               "compute_partition_id": "slappart0", "processing_timestamp": 0,
               "access_status_message": ""})
    );
    // A root shared instance with a typed parameter, then the host's list.
    let (s, _) = m
        .request(
            "MySharedInstance",
            json!({"shared": true, "parameters": {"n": 3}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let list = m
        .post(
            "/slapos.allDocs.v0.instance_node_instance_list",
            json!({"instance_guid": "MyFirstInstance______0"}),
        )
        .await;
    assert_eq!(
        list,
        (
            StatusCode::OK,
            json!({"result_list": [
                {"title": "MySecondInstance",
                 "instance_guid": "MySecondInstance___MyFirstInstance___1",
                 "software_type": "foobar", "state": "started", "parameters": {"bar": "foo"},
                 "compute_partition_id": "slappart0"},
                {"title": "MySharedInstance", "instance_guid": "MySharedInstance______1",
                 "software_type": "foobar", "state": "started", "parameters": {"n": 3},
                 "compute_partition_id": "slappart0"}]})
        )
    );
    // The host publishes for the shared instance; get shows it; the requester is bumped.
    let before = m
        .post(
            "/slapos.get.v0.software_instance",
            json!({"instance_guid": "MyFirstInstance______0"}),
        )
        .await
        .1["processing_timestamp"]
        .clone();
    let r = m
        .post(
            "/slapos.put.v0.software_instance_connection_parameter",
            json!({"instance_guid": "MySecondInstance___MyFirstInstance___1",
                   "connection_parameter_dict": {"url": "https://s/"}}),
        )
        .await;
    assert_eq!(r, (StatusCode::OK, success("Updated")));
    let (s, shared) = m
        .post(
            "/slapos.get.v0.software_instance",
            json!({"instance_guid": "MySecondInstance___MyFirstInstance___1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        shared["connection_parameters"],
        json!({"url": "https://s/"})
    );
    assert_eq!(shared["shared"], json!(true));
    let after = m
        .post(
            "/slapos.get.v0.software_instance",
            json!({"instance_guid": "MyFirstInstance______0"}),
        )
        .await
        .1["processing_timestamp"]
        .clone();
    assert!(after.as_i64() >= before.as_i64());
    assert_eq!(
        m.post(
            "/slapos.get.v0.software_instance",
            json!({"instance_guid": "nope______1"})
        )
        .await,
        (
            StatusCode::FORBIDDEN,
            error(403, "Forbidden", "No shared instance nope______1 found.")
        )
    );
    // Instance trees: the root partition and the root shared instance.
    assert_eq!(
        m.post("/slapos.allDocs.v0.instance_tree_list", json!({}))
            .await
            .1,
        json!({"result_list": [{"title": "MyFirstInstance"}, {"title": "MySharedInstance"}]})
    );
    let (s, tree) = m
        .post(
            "/slapos.get.v0.instance_tree",
            json!({"title": "MySharedInstance"}),
        )
        .await;
    assert_eq!((s, &tree["parameters"]), (StatusCode::OK, &json!({"n": 3})));
    // Destroyed: removed from the host.
    let (s, _) = m
        .request(
            "MySharedInstance",
            json!({"shared": true, "state": "destroyed"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let list = m
        .post(
            "/slapos.allDocs.v0.instance_node_instance_list",
            json!({"instance_guid": "MyFirstInstance______0"}),
        )
        .await
        .1;
    assert_eq!(list["result_list"].as_array().unwrap().len(), 1, "{list}");
}
