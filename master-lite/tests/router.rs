//! The router in-process (no socket): every route, every class of bad input, long polls.
//!
//! Each test runs a master over a temporary on-disk database; a second, read-only connection
//! dumps every table so refused calls can be shown to change nothing.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::respond;
use master_lite::Master;
use serde_json::{Value, json};
use slapos_proto::{MAX_BODY_BYTES, PARTITION_HEADER};

const SR: &str = "/srv/sr/web.toml";

struct Env {
    master: Master,
    router: Router,
    db: PathBuf,
    /// `SLAPOS_TEST_DB=postgres`: the same tests on a fresh database of a real PostgreSQL
    /// server (`master_lite::testpg`) instead of a SQLite file.
    pg_url: Option<String>,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("master.db");
        let pg_url = common::test_pg_url();
        let master = match &pg_url {
            None => Master::open(&db).unwrap(),
            Some(url) => {
                let url = master_lite::store::DbUrl::Postgres(url.clone());
                std::thread::spawn(move || Master::open_db(&url).unwrap())
                    .join()
                    .unwrap()
            }
        };
        let router = master.router();
        Env {
            master,
            router,
            db,
            pg_url,
            _dir: dir,
        }
    }

    /// Run `sql` (with `?1` = `param`) behind the master's back, on its engine.
    fn behind_the_back(&self, sql: &'static str, param: Option<&'static str>) {
        match &self.pg_url {
            None => {
                let conn = rusqlite::Connection::open(&self.db).unwrap();
                match param {
                    Some(p) => conn.execute(sql, [p]),
                    None => conn.execute(sql, []),
                }
                .unwrap();
            }
            Some(url) => {
                let url = master_lite::store::DbUrl::Postgres(url.clone());
                std::thread::spawn(move || {
                    let store = master_lite::store::Store::open_url(&url, 0).unwrap();
                    let values: Vec<master_lite::store::sql::Value> = param
                        .map(|p| master_lite::store::sql::Value::Text(p.into()))
                        .into_iter()
                        .collect();
                    store.connection().exec(sql, values).unwrap();
                })
                .join()
                .unwrap();
            }
        }
    }

    /// Every row of every table, read through a separate connection.
    fn dump(&self) -> String {
        match &self.pg_url {
            None => common::dump(&self.db),
            Some(url) => {
                let url = master_lite::store::DbUrl::Postgres(url.clone());
                std::thread::spawn(move || {
                    master_lite::store::Store::open_url(&url, 0).unwrap().dump()
                })
                .join()
                .unwrap()
            }
        }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Value, header::HeaderMap) {
        let (status, headers, bytes) = respond(self.router.clone(), req).await;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        (status, body, headers)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let req = Request::get(uri).body(Body::empty()).unwrap();
        let (s, b, _) = self.send(req).await;
        (s, b)
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(uri, body.to_string().into_bytes(), None)
            .await
    }

    async fn post_as(&self, who: &str, uri: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(uri, body.to_string().into_bytes(), Some(who))
            .await
    }

    async fn post_raw(&self, uri: &str, body: Vec<u8>, who: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
        if let Some(w) = who {
            req = req.header(PARTITION_HEADER, w);
        }
        let (s, b, _) = self.send(req.body(Body::from(body)).unwrap()).await;
        (s, b)
    }

    /// Register `C1` with `n` partitions and supply `SR` to it.
    async fn ready(&self, n: usize) {
        let parts: Vec<Value> = (0..n)
            .map(|i| json!({"id": format!("slappart{i}"), "addresses": ["10.0.0.2"]}))
            .collect();
        let (s, b) = self
            .post(
                "/v1/computers",
                json!({"id": "C1", "partitions": parts, "labels": {"region": "eu"}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = self
            .post("/v1/computers/C1/software", json!({"url": SR}))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    async fn desired_etag(&self) -> String {
        let (s, b) = self.get("/v1/computers/C1/desired").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["etag"].as_str().unwrap().to_owned()
    }
}

fn assert_error(got: (StatusCode, Value), status: StatusCode, kind: &str, needle: &str) {
    let (s, b) = got;
    assert_eq!(s, status, "{b}");
    assert_eq!(b["kind"], kind, "{b}");
    let msg = b["error"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "error {msg:?} lacks {needle:?}");
}

#[tokio::test]
async fn health_answers_the_protocol_version() {
    let env = Env::new();
    let (s, b) = env.get("/v1/health").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["protocol"], slapos_proto::PROTOCOL_VERSION);
}

#[tokio::test]
async fn computers_register_list_show_supply_and_report() {
    let env = Env::new();
    env.ready(2).await;
    let (s, list) = env.get("/v1/computers").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["labels"]["region"], "eu");
    assert!(list[0]["last_seen_ms"].as_u64().is_some());

    let (s, b) = env
        .post(
            "/v1/computers/C1/software/report",
            json!({"url": SR, "state": "error", "message": "build failed: tail"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, c) = env.get("/v1/computers/C1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["partitions"][1]["id"], "slappart1");
    assert_eq!(c["partitions"][1]["addresses"][0], "10.0.0.2");
    assert_eq!(c["software"][0]["requested"], "available");
    assert_eq!(c["software"][0]["install"]["state"], "error");
    assert_eq!(c["software"][0]["install"]["message"], "build failed: tail");
}

#[tokio::test]
async fn instance_lifecycle_through_every_route() {
    let env = Env::new();
    env.ready(3).await;
    let e0 = env.desired_etag().await;

    // Request a root instance.
    let (s, web) = env
        .post(
            "/v1/instances",
            json!({"title": "web", "software_url": SR, "parameters": {"port": "8080"},
                   "sla": {"region": "eu"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{web}");
    assert_eq!(web["partition"], "slappart0");
    assert_eq!(web["state"], "started");
    let e1 = env.desired_etag().await;
    assert_ne!(e0, e1);

    // Identical request: same revision, same etag.
    let (_, again) = env
        .post(
            "/v1/instances",
            json!({"title": "web", "software_url": SR, "parameters": {"port": "8080"}}),
        )
        .await;
    assert_eq!(again["revision"], web["revision"]);
    assert_eq!(env.desired_etag().await, e1);

    // The node sees it in its desired state, with an ETag header.
    let req = Request::get("/v1/computers/C1/desired")
        .body(Body::empty())
        .unwrap();
    let (s, d, h) = env.send(req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::ETAG], format!("\"{e1}\"").as_str());
    assert_eq!(d["partitions"][0]["instance"]["parameters"]["port"], "8080");
    assert!(d["partitions"][1]["instance"].is_null());
    // Conditional read without wait: 304 at once.
    let (s, b) = env
        .get(&format!("/v1/computers/C1/desired?etag={e1}"))
        .await;
    assert_eq!((s, b), (StatusCode::NOT_MODIFIED, Value::Null));

    // The instance requests a child with its own identity.
    let (s, child) = env
        .post_as(
            "C1/slappart0",
            "/v1/instances",
            json!({"title": "db", "software_url": SR}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{child}");
    assert_eq!(child["root_title"], "web");
    assert_eq!(child["requester"], "C1/slappart0");
    let (s, b) = env.get("/v1/instances/db?root=web").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["partition"], "slappart1");

    // The child publishes; the parent is bumped and sees the parameters.
    let (_, parent_before) = env.get("/v1/instances/web").await;
    let (s, b) = env
        .post(
            "/v1/computers/C1/partitions/slappart1/connection",
            json!({"parameters": {"url": "postgres://10.0.0.2"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, parent) = env.get("/v1/instances/web").await;
    assert!(parent["revision"].as_u64() > parent_before["revision"].as_u64());
    assert_eq!(parent["children"], json!(["db"]));
    let (_, d) = env.get("/v1/computers/C1/desired").await;
    assert_eq!(
        d["partitions"][0]["instance"]["children"]["db"]["url"],
        "postgres://10.0.0.2"
    );

    // Reports and bang are visible per instance.
    let rev = parent["revision"].as_u64().unwrap();
    let (s, ack) = env
        .post(
            "/v1/computers/C1/partitions/slappart0/report",
            json!({"state": "started", "revision": rev,
                   "promises": [{"name": "http", "ok": true, "message": "200", "at_ms": 1}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack["freed"], false);
    let (s, b) = env
        .post(
            "/v1/computers/C1/partitions/slappart1/bang",
            json!({"message": "restart me"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, list) = env.get("/v1/instances").await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["reported"]["state"], "started");
    assert_eq!(list[0]["reported"]["promises"][0]["name"], "http");
    assert_eq!(list[1]["bang"], "restart me");
    assert!(
        list[0]["revision"].as_u64().unwrap() > rev,
        "bang bumps the tree"
    );

    // Destroy the root: the tree is destroyed and freed bottom-up by the node's reports.
    let (s, b) = env
        .post("/v1/instances/web/state", json!({"state": "destroyed"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = env.get("/v1/instances/db?root=web").await;
    assert_eq!(b["state"], "destroyed");
    let destroyed = json!({"state": "destroyed", "revision": 0});
    let (_, ack) = env
        .post(
            "/v1/computers/C1/partitions/slappart0/report",
            destroyed.clone(),
        )
        .await;
    assert_eq!(ack, json!({"freed": false, "waiting_for": ["db"]}));
    let (_, ack) = env
        .post(
            "/v1/computers/C1/partitions/slappart1/report",
            destroyed.clone(),
        )
        .await;
    assert_eq!(ack["freed"], true);
    let (_, ack) = env
        .post("/v1/computers/C1/partitions/slappart0/report", destroyed)
        .await;
    assert_eq!(ack["freed"], true);
    let (_, list) = env.get("/v1/instances").await;
    assert_eq!(list, json!([]));
    assert_error(
        env.get("/v1/instances/web").await,
        StatusCode::NOT_FOUND,
        "not_found",
        "\"web\"",
    );
}

/// One refused call: method, path, body, optional partition header, and the expected answer.
struct Bad {
    method: &'static str,
    uri: &'static str,
    body: Vec<u8>,
    who: Option<&'static str>,
    status: StatusCode,
    kind: &'static str,
    needle: &'static str,
}

fn bad(
    method: &'static str,
    uri: &'static str,
    body: Value,
    status: StatusCode,
    kind: &'static str,
    needle: &'static str,
) -> Bad {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    Bad {
        method,
        uri,
        body,
        who: None,
        status,
        kind,
        needle,
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_4xx_and_changes_nothing() {
    use StatusCode as S;
    let env = Env::new();
    env.ready(1).await;
    let (s, b) = env
        .post("/v1/instances", json!({"title": "web", "software_url": SR}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let before = env.dump();

    let (br, nf, cf) = ("bad_request", "not_found", "conflict");
    let mut oversize = br#"{"title": "x", "software_url": "/a", "parameters": {"p": ""#.to_vec();
    oversize.resize(MAX_BODY_BYTES + 10, b'a');
    oversize.extend_from_slice(br#""}}"#);
    let started = json!({"state": "started", "revision": 1});
    let cases = vec![
        // Malformed JSON, wrong types, missing fields.
        Bad {
            body: b"{\"id\": \"C2\", ".to_vec(),
            ..bad(
                "POST",
                "/v1/computers",
                Value::Null,
                S::BAD_REQUEST,
                br,
                "invalid JSON body",
            )
        },
        Bad {
            body: b"not json".to_vec(),
            ..bad(
                "POST",
                "/v1/instances",
                Value::Null,
                S::BAD_REQUEST,
                br,
                "invalid JSON body",
            )
        },
        bad(
            "POST",
            "/v1/instances",
            json!({"title": "x", "software_url": 3}),
            S::BAD_REQUEST,
            br,
            "invalid JSON body",
        ),
        bad(
            "POST",
            "/v1/instances/web/state",
            json!({"state": "paused"}),
            S::BAD_REQUEST,
            br,
            "invalid JSON body",
        ),
        // Path-like ids in bodies, paths, queries and the partition header.
        bad(
            "POST",
            "/v1/instances",
            json!({"title": "../x", "software_url": SR}),
            S::BAD_REQUEST,
            br,
            "instance title",
        ),
        bad(
            "POST",
            "/v1/computers",
            json!({"id": "C2", "partitions": [{"id": "../p"}]}),
            S::BAD_REQUEST,
            br,
            "partition id",
        ),
        bad(
            "POST",
            "/v1/computers/..%2Fetc/software",
            json!({"url": SR}),
            S::BAD_REQUEST,
            br,
            "computer id",
        ),
        bad(
            "POST",
            "/v1/computers/C1/partitions/%2E%2E/report",
            started.clone(),
            S::BAD_REQUEST,
            br,
            "partition id",
        ),
        bad(
            "GET",
            "/v1/instances/%2E%2E%2Fx",
            Value::Null,
            S::BAD_REQUEST,
            br,
            "instance title",
        ),
        bad(
            "GET",
            "/v1/instances/web?root=..",
            Value::Null,
            S::BAD_REQUEST,
            br,
            "instance title",
        ),
        Bad {
            who: Some("C1/../slappart0"),
            ..bad(
                "POST",
                "/v1/instances",
                json!({"title": "x", "software_url": SR}),
                S::BAD_REQUEST,
                br,
                PARTITION_HEADER,
            )
        },
        bad(
            "POST",
            "/v1/computers",
            json!({"id": "C1", "partitions": [{"id": "p", "addresses": ["../x"]}]}),
            S::BAD_REQUEST,
            br,
            "IPv4 or IPv6",
        ),
        bad(
            "POST",
            "/v1/instances",
            json!({"title": "x", "software_url": SR, "sla": {"computer_guid": "../x"}}),
            S::BAD_REQUEST,
            br,
            "computer_guid",
        ),
        bad(
            "GET",
            "/v1/computers/C1/desired?wait=soon",
            Value::Null,
            S::BAD_REQUEST,
            br,
            "invalid query",
        ),
        // Unknown computer, partition, instance, release, route; requests from nowhere.
        bad(
            "POST",
            "/v1/computers/NOPE/software",
            json!({"url": SR}),
            S::NOT_FOUND,
            nf,
            "NOPE",
        ),
        bad(
            "GET",
            "/v1/computers/NOPE/desired?etag=1&wait=5",
            Value::Null,
            S::NOT_FOUND,
            nf,
            "NOPE",
        ),
        bad(
            "POST",
            "/v1/computers/C1/partitions/slappart9/connection",
            json!({"parameters": {}}),
            S::NOT_FOUND,
            nf,
            "slappart9",
        ),
        bad(
            "GET",
            "/v1/instances/ghost",
            Value::Null,
            S::NOT_FOUND,
            nf,
            "ghost",
        ),
        bad(
            "POST",
            "/v1/instances/ghost/state",
            json!({"state": "stopped"}),
            S::NOT_FOUND,
            nf,
            "ghost",
        ),
        bad(
            "POST",
            "/v1/instances",
            json!({"title": "ghost", "software_url": SR, "state": "destroyed"}),
            S::NOT_FOUND,
            nf,
            "nothing to destroy",
        ),
        bad(
            "POST",
            "/v1/computers/C1/software/report",
            json!({"url": "/srv/other.toml", "state": "available"}),
            S::NOT_FOUND,
            nf,
            "/srv/other.toml",
        ),
        Bad {
            who: Some("C1/slappart7"),
            ..bad(
                "POST",
                "/v1/instances",
                json!({"title": "x", "software_url": SR}),
                S::NOT_FOUND,
                nf,
                "C1/slappart7",
            )
        },
        bad(
            "GET",
            "/v1/nothing/here",
            Value::Null,
            S::NOT_FOUND,
            nf,
            "/v1/nothing/here",
        ),
        bad(
            "DELETE",
            "/v1/instances",
            Value::Null,
            S::METHOD_NOT_ALLOWED,
            br,
            "DELETE",
        ),
        // Conflicts: same title with another release; no free partition; removing a used release.
        bad(
            "POST",
            "/v1/instances",
            json!({"title": "web", "software_url": "/srv/sr/other.toml"}),
            S::CONFLICT,
            cf,
            SR,
        ),
        bad(
            "POST",
            "/v1/instances",
            json!({"title": "more", "software_url": SR, "sla": {"region": "eu"}}),
            S::CONFLICT,
            "no_allocation",
            "{region=eu}",
        ),
        bad(
            "POST",
            "/v1/computers/C1/software",
            json!({"url": SR, "state": "destroyed"}),
            S::CONFLICT,
            cf,
            "web",
        ),
        // Oversize body.
        Bad {
            body: oversize,
            ..bad(
                "POST",
                "/v1/instances",
                Value::Null,
                S::PAYLOAD_TOO_LARGE,
                "too_large",
                "larger than",
            )
        },
    ];
    for case in cases {
        let mut req = Request::builder().method(case.method).uri(case.uri);
        if let Some(w) = case.who {
            req = req.header(PARTITION_HEADER, w);
        }
        let (status, body, _) = env.send(req.body(Body::from(case.body)).unwrap()).await;
        let what = format!("{} {}", case.method, case.uri);
        assert_eq!(status, case.status, "{what}: {body}");
        assert_eq!(body["kind"], case.kind, "{what}: {body}");
        let msg = body["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(case.needle),
            "{what}: error {msg:?} lacks {:?}",
            case.needle
        );
    }
    assert_eq!(
        env.master.state().hub.channels(),
        0,
        "unknown computer left a channel"
    );
    assert_eq!(env.dump(), before, "a refused call changed the database");
}

#[tokio::test]
async fn internal_errors_hide_their_details() {
    let env = Env::new();
    env.ready(1).await;
    env.post("/v1/instances", json!({"title": "web", "software_url": SR}))
        .await;
    // Corrupt a stored JSON column behind the master's back.
    env.behind_the_back(
        "UPDATE instance SET parameters = 'secret-garbage{' WHERE title = 'web'",
        None,
    );
    let (s, b) = env.get("/v1/instances/web").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(b["kind"], "internal");
    assert!(!b.to_string().contains("secret"), "{b}");
}

#[tokio::test]
async fn a_change_wakes_a_waiting_long_poll() {
    let env = Env::new();
    env.ready(1).await;
    let e1 = env.desired_etag().await;
    let router = env.router.clone();
    let uri = format!("/v1/computers/C1/desired?etag={e1}&wait=30");
    let poll = tokio::spawn(async move {
        let req = Request::get(uri).body(Body::empty()).unwrap();
        let (status, _, bytes) = respond(router, req).await;
        (status, bytes)
    });
    // Wait until the poll is parked on the computer's channel, then change something.
    let hub = env.master.state().hub;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hub.channels() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "poll never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (s, b) = env
        .post("/v1/instances", json!({"title": "web", "software_url": SR}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Safety net only: the poll would otherwise answer 304 after its 30 s.
    let (status, bytes) = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("poll not answered")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let d: Value = serde_json::from_slice(&bytes).unwrap();
    assert_ne!(d["etag"], e1.as_str());
    assert_eq!(d["partitions"][0]["instance"]["title"], "web");
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_long_poll_ends_with_304_after_its_wait() {
    let env = Env::new();
    env.ready(1).await;
    let e1 = env.desired_etag().await;
    let started = tokio::time::Instant::now();
    let (s, b) = env
        .get(&format!("/v1/computers/C1/desired?etag={e1}&wait=45"))
        .await;
    assert_eq!((s, b), (StatusCode::NOT_MODIFIED, Value::Null));
    // The (paused, auto-advanced) clock shows the poll was held for its wait.
    assert!(started.elapsed() >= Duration::from_secs(45));
    // A wait above the cap is clamped to MAX_LONG_POLL_SECS.
    let started = tokio::time::Instant::now();
    let (s, _) = env
        .get(&format!("/v1/computers/C1/desired?etag={e1}&wait=100000"))
        .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let held = started.elapsed();
    assert!(held >= Duration::from_secs(slapos_proto::MAX_LONG_POLL_SECS));
    assert!(held < Duration::from_secs(slapos_proto::MAX_LONG_POLL_SECS + 1));
}

#[tokio::test]
async fn shutdown_ends_waiting_polls_and_closes_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let listener = master_lite::bind("127.0.0.1:0").await.unwrap();
    let url = master_lite::url_of(listener.local_addr().unwrap());
    let master = Master::open(&db).unwrap();
    let hub = master.state().hub;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(master.run(listener, async move {
        let _ = stop_rx.await;
    }));
    let poll = tokio::task::spawn_blocking(move || {
        let c = slapos_client::Client::new(&url).unwrap();
        let id = slapos_proto::ComputerId::parse("C1").unwrap();
        c.register(&slapos_proto::RegisterComputer {
            id: id.clone(),
            partitions: vec![],
            labels: Default::default(),
        })
        .unwrap();
        let etag = c.desired(&id, None, None).unwrap().unwrap().etag;
        c.desired(&id, Some(&etag), Some(Duration::from_secs(60)))
    });
    // Once the poll is parked, stop the server: the poll must be answered (304), not cut.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hub.channels() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "poll never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop_tx.send(()).unwrap();
    let served = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server did not stop")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
    let answer = poll.await.unwrap();
    assert!(matches!(answer, Ok(None)), "{answer:?}");
    // The database was closed cleanly: it reopens with the registration.
    let m = Master::open(&db).unwrap();
    let list = m.state().db.call(|s| s.computers()).await.unwrap();
    assert_eq!(list.len(), 1);
}

/// Text the SLAP wire (XML 1.0) cannot carry is refused at the door on every native write,
/// reports are kept with it replaced, and a value stored before the check existed cannot make
/// a SLAP read of its computer fail (issue 19, item 5).
#[tokio::test]
async fn control_characters_are_refused_at_the_door_and_never_break_slap_reads() {
    let env = Env::new();
    env.ready(2).await;
    let (s, b) = env
        .post("/v1/instances", json!({"title": "ok", "software_url": SR}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let before = env.dump();
    for (what, uri, body) in [
        (
            "NUL in a parameter",
            "/v1/instances",
            json!({"title": "nul", "software_url": SR, "parameters": {"a": "x\u{0}y"}}),
        ),
        (
            "U+0001 deep in a parameter",
            "/v1/instances",
            json!({"title": "soh", "software_url": SR, "parameters": {"a": {"b": ["\u{1}"]}}}),
        ),
        (
            "U+FFFF in a parameter key",
            "/v1/instances",
            json!({"title": "key", "software_url": SR, "parameters": {"\u{ffff}": "v"}}),
        ),
        (
            "U+0001 in a connection parameter",
            "/v1/computers/C1/partitions/slappart0/connection",
            json!({"parameters": {"url": "http://x/\u{1}"}}),
        ),
        (
            "NUL in a bang",
            "/v1/computers/C1/partitions/slappart0/bang",
            json!({"message": "a\u{0}b"}),
        ),
        (
            "NUL in an interface",
            "/v1/computers",
            json!({"id": "C1", "partitions": [{"id": "slappart0", "interface": "eth\u{0}"}]}),
        ),
        (
            "a 10k-character interface",
            "/v1/computers",
            json!({"id": "C1", "partitions": [{"id": "slappart0", "interface": "e".repeat(10_000)}]}),
        ),
    ] {
        let (s, b) = env.post(uri, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {b}");
        assert_eq!(
            env.dump(),
            before,
            "{what}: a refused call changed something"
        );
    }
    let (s, b) = env
        .post(
            "/v1/computers/C1/software/report",
            json!({"url": SR, "state": "error", "message": format!("bad\u{0}{}", "x".repeat(100_000))}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = env
        .post(
            "/v1/computers/C1/partitions/slappart0/report",
            json!({"state": "started", "revision": 1,
                   "promises": [{"name": "p\u{1}", "ok": false, "message": "out\u{0}put", "at_ms": 1}],
                   "error": "e\u{b}rr"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, c) = env.get("/v1/computers/C1").await;
    let msg = c["software"][0]["install"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("bad\u{fffd}") && msg.len() <= 4096 + 3,
        "{}",
        msg.len()
    );
    let (_, i) = env.get("/v1/instances/ok").await;
    assert_eq!(i["reported"]["promises"][0]["message"], "out\u{fffd}put");
    assert_eq!(i["reported"]["error"], "e\u{fffd}rr");

    // A value stored before the door was guarded (written behind the API's back).
    env.behind_the_back(
        "UPDATE instance SET parameters = ?1, connection = ?1 WHERE title = 'ok'",
        Some(r#"{"a": "x\u0000y", "k\u0001": "v"}"#),
    );
    for uri in [
        "/getFullComputerInformation?computer_id=C1",
        "/registerComputerPartition?computer_reference=C1&computer_partition_reference=slappart0",
    ] {
        let req = Request::get(uri).body(Body::empty()).unwrap();
        let (s, _, body) = respond(env.router.clone(), req).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(s, StatusCode::OK, "{uri}: {text}");
        assert!(
            text.contains("x\u{fffd}y") || text.contains("x&#65533;y"),
            "{uri}: {text}"
        );
    }
}

/// The value of the series `name{labels}` in an exposition, if present.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name_and_labels).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn metrics_show_requests_and_the_fleet() {
    let env = Env::new();
    env.ready(2).await;
    let (s, web) = env
        .post("/v1/instances", json!({"title": "web", "software_url": SR}))
        .await;
    assert_eq!(s, StatusCode::OK, "{web}");
    let rev = web["revision"].as_u64().unwrap();
    let (s, b) = env
        .post(
            "/v1/computers/C1/partitions/slappart0/report",
            json!({"state": "started", "revision": rev,
                   "promises": [{"name": "http", "ok": false, "message": "refused", "at_ms": 1},
                                {"name": "disk", "ok": true, "message": "", "at_ms": 1}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let sample = json!({"partition": "slappart0", "instance": "web", "start_ms": 1_000,
        "end_ms": 61_000, "cpu_ns": 3_000_000_000u64, "memory_bytes": 1, "memory_peak_bytes": 1,
        "io_read_bytes": 0, "io_write_bytes": 4096, "disk_bytes": 0, "tasks": 1});
    let (s, b) = env
        .post("/v1/computers/C1/usage", json!({"samples": [sample]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Two different unknown paths: one series, not one per path.
    for p in ["/no/such/1", "/no/such/2"] {
        assert_eq!(env.get(p).await.0, StatusCode::NOT_FOUND);
    }
    let _ = env.desired_etag().await;

    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let (s, h, body) = respond(env.router.clone(), req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], master_lite::metrics::CONTENT_TYPE);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let v = |k: &str| series(&text, k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    assert_eq!(
        v(r#"slapos_master_http_requests_total{route="/v1/instances",method="POST",status="200"}"#),
        1.0
    );
    assert_eq!(
        v(r#"slapos_master_http_requests_total{route="unmatched",method="GET",status="404"}"#),
        2.0
    );
    assert_eq!(
        v(
            r#"slapos_master_http_request_duration_seconds_count{route="/v1/computers/{c}/desired"}"#
        ),
        1.0
    );
    assert_eq!(
        v(r#"slapos_master_instances{requested="started",reported="started"}"#),
        1.0
    );
    assert_eq!(v(r#"slapos_master_promise_failures{computer="C1"}"#), 1.0);
    // The one computer was seen just now; every age bucket is shown.
    assert_eq!(v(r#"slapos_master_computers{seen_within="1m"}"#), 1.0);
    assert_eq!(v(r#"slapos_master_computers{seen_within="never"}"#), 0.0);
    assert_eq!(v("slapos_master_long_polls_held"), 0.0);
    assert_eq!(
        v(r#"slapos_master_usage_cpu_seconds_total{computer="C1"}"#),
        3.0
    );
    assert_eq!(
        v(r#"slapos_master_usage_io_written_bytes_total{computer="C1"}"#),
        4096.0
    );
    assert!(
        v("slapos_master_db_write_batch_seconds_count") >= 3.0,
        "{text}"
    );

    // Every master series the Grafana dashboard queries exists (docs/grafana/).
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/slapos-fleet.json"),
    )
    .unwrap();
    let mut names: Vec<&str> = dashboard
        .match_indices("slapos_master_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 6, "{names:?}");
    for n in names {
        assert!(
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(n)),
            "the dashboard queries {n}, which /metrics does not show"
        );
    }

    // A second scrape counts the first, and the fleet series are recomputed, not added up.
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let (_, _, body) = respond(env.router.clone(), req).await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(
        series(
            &text,
            r#"slapos_master_http_requests_total{route="/metrics",method="GET",status="200"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &text,
            r#"slapos_master_instances{requested="started",reported="started"}"#
        ),
        Some(1.0)
    );
}

fn usage_sample(p: &str, instance: Option<&str>, start_ms: u64) -> Value {
    json!({"partition": p, "instance": instance, "start_ms": start_ms, "end_ms": start_ms + 60_000,
           "cpu_ns": 2_000_000_000u64, "memory_bytes": 1u64 << 30, "memory_peak_bytes": 3u64 << 29,
           "io_read_bytes": 10, "io_write_bytes": 20, "disk_bytes": 2u64 << 30, "tasks": 3})
}

#[tokio::test]
async fn usage_samples_are_stored_once_and_summed_per_group() {
    let env = Env::new();
    env.ready(2).await;
    let (s, web) = env
        .post("/v1/instances", json!({"title": "web", "software_url": SR}))
        .await;
    assert_eq!(s, StatusCode::OK, "{web}");
    let (s, db) = env
        .post_as(
            "C1/slappart0",
            "/v1/instances",
            json!({"title": "db", "software_url": SR}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{db}");
    let t0 = 1_700_000_000_000u64;
    let batch = json!({"samples": [
        usage_sample("slappart0", Some("web"), t0),
        usage_sample("slappart0", Some("web"), t0 + 60_000),
        usage_sample("slappart1", Some("db"), t0),
    ]});
    let (s, ack) = env.post("/v1/computers/C1/usage", batch.clone()).await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack, json!({"stored": 3, "duplicates": 0}));
    // The same batch again (the node lost the answer): nothing counted twice.
    let (s, ack) = env.post("/v1/computers/C1/usage", batch).await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack, json!({"stored": 0, "duplicates": 3}));

    // Bad samples refuse the whole batch and store nothing.
    let before = env.dump();
    let mut bad = usage_sample("slappart1", None, t0 + 120_000);
    bad["end_ms"] = json!(t0);
    let ok = usage_sample("slappart1", None, t0 + 180_000);
    assert_error(
        env.post(
            "/v1/computers/C1/usage",
            json!({"samples": [ok.clone(), bad]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "is not after its start",
    );
    assert_error(
        env.post(
            "/v1/computers/C1/usage",
            json!({"samples": [ok, usage_sample("slappart9", None, t0)]}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "slappart9",
    );
    assert_eq!(before, env.dump());

    let q = |by: &str| {
        format!(
            "/v1/usage?since_ms={}&until_ms={}&by={by}",
            t0,
            t0 + 3_600_000
        )
    };
    let (s, r) = env.get(&q("instance")).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{r}");
    assert_eq!(rows[0]["key"], "web");
    assert_eq!(rows[0]["cpu_seconds"], 4.0);
    assert_eq!(rows[0]["samples"], 2);
    // 1 GiB for two minutes is 1/30 GiB·h; 2 GiB of disk, 2/30.
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-9;
    assert!(close(&rows[0]["memory_gib_hours"], 2.0 / 60.0), "{r}");
    assert!(close(&rows[0]["disk_gib_hours"], 4.0 / 60.0), "{r}");
    assert_eq!(rows[1]["key"], "web/db");
    assert_eq!(r["total"]["cpu_seconds"], 6.0);
    assert_eq!(r["total"]["io_write_bytes"], 60);
    assert_eq!(r["total"]["memory_peak_bytes"], 3u64 << 29);
    let (_, r) = env.get(&q("computer")).await;
    assert_eq!(r["rows"][0]["key"], "C1");
    assert_eq!(r["rows"][0]["samples"], 3);
    // The local operator's trees have no owner.
    let (_, r) = env.get(&q("user")).await;
    assert_eq!(r["rows"][0]["key"], "local");
    // The window is on the period's end: the first minute alone holds two samples.
    let (_, r) = env
        .get(&format!(
            "/v1/usage?since_ms={t0}&until_ms={}&by=computer",
            t0 + 60_000
        ))
        .await;
    assert_eq!(r["total"]["samples"], 2, "{r}");
    assert_error(
        env.get("/v1/usage?by=planet").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid query",
    );
}
