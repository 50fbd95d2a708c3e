//! The web console's routes in-process (no socket, the local operator): the page and its
//! headers, and the JSON view with secrets masked, KPIs apart and usage buckets, on SQLite and,
//! when a PostgreSQL server can be started (`master_lite::testpg`), on PostgreSQL.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::respond;
use master_lite::Master;
use master_lite::testpg::TestPg;
use serde_json::{Value, json};
use slapos_test_support::gate::{Need, skip};

const SR: &str = "/srv/sr/web.toml";

async fn post(router: &Router, uri: &str, body: Value) -> Value {
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (s, _, b) = respond(router.clone(), req).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "POST {uri}: {}",
        String::from_utf8_lossy(&b)
    );
    serde_json::from_slice(&b).unwrap()
}

async fn get(router: &Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let req = Request::get(uri).body(Body::empty()).unwrap();
    let (s, h, b) = respond(router.clone(), req).await;
    (s, h, String::from_utf8_lossy(&b).into_owned())
}

/// One computer with an instance publishing a URL, a secret and KPIs, and usage samples; the
/// page and the view as the local operator sees them.
async fn console_shows_the_fleet(master: Master) {
    let r = master.router();
    let now = master_lite::now_ms();
    post(
        &r,
        "/v1/computers",
        json!({"id": "C1", "partitions": [{"id": "p0"}, {"id": "p1"}], "labels": {"region": "eu"}}),
    )
    .await;
    post(&r, "/v1/computers/C1/software", json!({"url": SR})).await;
    post(
        &r,
        "/v1/instances",
        json!({"title": "web", "software_url": SR,
               "parameters": {"db-password": "param-secret", "port": "8080"}}),
    )
    .await;
    post(
        &r,
        "/v1/computers/C1/partitions/p0/connection",
        json!({"parameters": {"url": "http://10.0.0.1:8080/", "api-token": "conn-secret",
                              "rt-p99-us": "40", "kpi-cell-up": "true"}}),
    )
    .await;
    let samples: Vec<Value> = (1..=3u64)
        .map(|k| {
            json!({"partition": "p0", "instance": "web", "start_ms": now - (k + 1) * 60_000,
                   "end_ms": now - k * 60_000, "cpu_ns": 30_000_000_000u64,
                   "memory_bytes": 1u64 << 20, "memory_peak_bytes": 2u64 << 20,
                   "io_read_bytes": 0, "io_write_bytes": 0, "disk_bytes": 4096, "tasks": 1})
        })
        .collect();
    post(&r, "/v1/computers/C1/usage", json!({"samples": samples})).await;

    let (s, h, page) = get(&r, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("/console/console.js"), "{page}");
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    for asset in ["/console/console.js", "/console/console.css"] {
        let (s, _, body) = get(&r, asset).await;
        assert_eq!(s, StatusCode::OK, "{asset}");
        assert!(body.len() > 1000, "{asset}: {body}");
    }

    let (s, h, body) = get(&r, "/console/api/view").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    for secret in ["param-secret", "conn-secret"] {
        assert!(!body.contains(secret), "{secret} in {body}");
    }
    let v: Value = serde_json::from_str(&body).unwrap();
    let c = &v["computers"][0];
    assert_eq!(
        (&c["id"], &c["partitions"], &c["free_partitions"]),
        (&json!("C1"), &json!(2), &json!(1))
    );
    assert_eq!(c["labels"], json!({"region": "eu"}));
    assert_eq!(c["software"][0]["url"], SR);
    assert_eq!(c["software"][0]["install"], Value::Null);
    let i = &v["instances"][0];
    assert_eq!(
        (&i["title"], &i["requested"], &i["reported"]),
        (&json!("web"), &json!("started"), &Value::Null)
    );
    assert_eq!(i["connection"]["url"], "http://10.0.0.1:8080/");
    assert_eq!(i["connection"]["api-token"], "••••••");
    assert_eq!(i["parameters"]["db-password"], "••••••");
    assert_eq!(i["parameters"]["port"], "8080");
    assert_eq!(i["rt"], json!({"rt-p99-us": "40"}));
    assert_eq!(i["radio"], json!({"kpi-cell-up": "true"}));
    let series = v["usage"]["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{body}");
    assert_eq!(series[0]["instance"], "web");
    let points = series[0]["points"].as_array().unwrap();
    assert!(!points.is_empty() && points.len() <= 3, "{body}");
    // 30 CPU seconds per 60 s measured: half a core.
    assert!(
        (points[0][1].as_f64().unwrap() - 0.5).abs() < 1e-9,
        "{body}"
    );

    let (s, _, body) = get(&r, "/console/api/view?hours=25").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("hours must be 1 to 24"), "{body}");
}

#[tokio::test]
async fn console_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    console_shows_the_fleet(Master::open(&dir.path().join("master.db")).unwrap()).await;
}

#[tokio::test]
async fn console_on_postgres() {
    // The sync PostgreSQL client runs its own runtime: keep it off the test's.
    let opened = std::thread::spawn(|| {
        let pg: &TestPg = TestPg::shared()?;
        let url = master_lite::store::DbUrl::Postgres(pg.fresh_db().unwrap());
        Ok::<_, master_lite::testpg::Skip>(Master::open_db(&url).unwrap())
    })
    .join()
    .unwrap();
    match opened {
        Ok(master) => console_shows_the_fleet(master).await,
        Err(reason) => {
            skip(Need::Tools, "console_on_postgres", &reason.0);
        }
    }
}
