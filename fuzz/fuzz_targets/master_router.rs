//! JSON API bodies into the store, through master-lite's router, in process: a fresh
//! `Master::open_in_memory()` per input, driven with `tower::ServiceExt::oneshot` on a
//! current-thread runtime (no socket).
//!
//! Input: up to four requests separated by NUL bytes; each starts with a byte choosing the
//! route ([`ROUTES`]), the rest is the JSON body (or, for the last route, the path and query of
//! a GET under `/v1/`). Before them the master holds computer `C1` (partitions `slappart0..2`),
//! release `/srv/sr/web.toml` supplied to it and instance `web` on `slappart0`.
//!
//! Properties, for every request:
//! * the router answers (no panic, within 3 s, except a long poll the input asked for);
//! * never a 5xx: the in-memory store cannot fail, so a 500 is a bug;
//! * every 4xx body is an `ErrorBody` with a documented kind (docs/api.md);
//! * a refused call changes nothing: the computers and instances read the same before and after.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use master_lite::Master;
use serde_json::Value;
use slapos_proto::{ErrorBody, PARTITION_HEADER};
use tower::ServiceExt;

/// `(method, path, x-slapos-partition header)`; the last entry is the GET of a fuzzed path.
const ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("POST", "/v1/computers", None),
    ("POST", "/v1/computers/C1/software", None),
    ("POST", "/v1/computers/C1/software/report", None),
    ("POST", "/v1/computers/C1/partitions/slappart0/report", None),
    (
        "POST",
        "/v1/computers/C1/partitions/slappart0/connection",
        None,
    ),
    ("POST", "/v1/computers/C1/partitions/slappart0/bang", None),
    ("POST", "/v1/instances", None),
    ("POST", "/v1/instances", Some("C1/slappart0")),
    ("POST", "/v1/instances/web/state", None),
    ("POST", "/v1/enroll", None),
    ("GET", "/v1/", None),
];

const KINDS: &[&str] = &[
    "bad_request",
    "not_found",
    "conflict",
    "no_allocation",
    "too_large",
    "forbidden",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(run(data));
});

async fn run(data: &[u8]) {
    let master = Master::open_in_memory().expect("in-memory master");
    let router = master.router();
    for (path, body) in [
        (
            "/v1/computers",
            r#"{"id":"C1","partitions":[{"id":"slappart0","addresses":["10.0.0.2"]},{"id":"slappart1"},{"id":"slappart2"}],"labels":{"region":"eu"}}"#,
        ),
        ("/v1/computers/C1/software", r#"{"url":"/srv/sr/web.toml"}"#),
        (
            "/v1/instances",
            r#"{"title":"web","software_url":"/srv/sr/web.toml","parameters":{"port":"8080"}}"#,
        ),
    ] {
        let req = Request::post(path).body(Body::from(body)).expect("request");
        let (status, _) = send(&router, req).await.expect("setup answers");
        assert_eq!(status, StatusCode::OK, "setup {path}");
    }
    for chunk in data.split(|&b| b == 0).take(4) {
        let Some((&pick, rest)) = chunk.split_first() else {
            continue;
        };
        let (method, path, who) = ROUTES[usize::from(pick) % ROUTES.len()];
        let req = if method == "GET" {
            let Ok(tail) = std::str::from_utf8(rest) else {
                continue;
            };
            match Request::get(format!("{path}{tail}")).body(Body::empty()) {
                Ok(r) => r,
                Err(_) => continue, // not a URI: never reaches a router
            }
        } else {
            let mut b = Request::post(path).header(header::CONTENT_TYPE, "application/json");
            if let Some(w) = who {
                b = b.header(PARTITION_HEADER, w);
            }
            b.body(Body::from(rest.to_vec())).expect("request")
        };
        let uri = req.uri().to_string();
        let before = snapshot(&router).await;
        let Some((status, body)) = send(&router, req).await else {
            // Only a long poll may be held (docs/api.md: up to 60 s).
            assert!(uri.contains("desired"), "{method} {uri} hung");
            continue;
        };
        assert!(
            !status.is_server_error(),
            "{method} {uri}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        if status.is_client_error() {
            let e: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "{method} {uri}: {status} with a non-ErrorBody ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            });
            assert!(KINDS.contains(&e.kind.as_str()), "{method} {uri}: {e:?}");
            if method == "POST" {
                assert_eq!(
                    snapshot(&router).await,
                    before,
                    "{method} {uri}: refused ({status}) but changed the store"
                );
            }
        } else if !body.is_empty() {
            serde_json::from_slice::<Value>(&body)
                .unwrap_or_else(|e| panic!("{method} {uri}: {status} non-JSON body: {e}"));
        }
    }
    drop(router);
    drop(master);
}

async fn send(router: &axum::Router, req: Request<Body>) -> Option<(StatusCode, Vec<u8>)> {
    let answer = async {
        let resp = router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, body.to_vec())
    };
    tokio::time::timeout(Duration::from_secs(3), answer)
        .await
        .ok()
}

/// Computers and instances as the API shows them, without the in-memory `last_seen_ms`.
async fn snapshot(router: &axum::Router) -> Vec<Value> {
    let mut out = Vec::new();
    for path in ["/v1/computers", "/v1/instances"] {
        let req = Request::get(path).body(Body::empty()).expect("request");
        let (status, body) = send(router, req).await.expect("list answers");
        assert_eq!(status, StatusCode::OK, "{path}");
        let mut v: Value = serde_json::from_slice(&body).expect("list is JSON");
        strip(&mut v);
        out.push(v);
    }
    out
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("last_seen_ms");
            o.values_mut().for_each(strip);
        }
        Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}
