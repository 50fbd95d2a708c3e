//! Usage, from cgroup to report, end to end: a real master and a real node sampling every
//! second while hello-web runs; the master goes away, the node keeps sampling, is killed with
//! SIGKILL and restarted (a reboot stand-in) while the master is still away; the master comes
//! back and gets every sample exactly once, each partition's periods contiguous.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use slapos_proto::{ComputerId, UsageBy};
use slapos_tests::{
    Client, Master, Node, bin, example_release, http_get, instance_request, is_root, params,
    supply, usage_outbox_depth, wait_for,
};

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_secs(20);
const COMPUTER: &str = "COMP-USAGE";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Samples of the report row `key` whose period ends after `after_ms`.
fn samples_after(c: &Client, key: &str, after_ms: u64) -> u64 {
    c.usage(after_ms, now_ms() + 60_000, UsageBy::Instance)
        .ok()
        .and_then(|r| r.rows.into_iter().find(|r| r.key == key))
        .map(|r| r.samples)
        .unwrap_or(0)
}

/// One stored sample: (start, end, instance, cpu_ns, folded, received).
type Row = (u64, u64, Option<String>, u64, u64, u64);

fn stored(db: &Path) -> BTreeMap<String, Vec<Row>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the master database");
    let mut stmt = conn
        .prepare(
            "SELECT partition, start_ms, end_ms, instance, cpu_ns, folded, received_ms \
             FROM usage_sample WHERE computer = ?1 ORDER BY partition, start_ms",
        )
        .expect("prepare");
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let rows = stmt
        .query_map([COMPUTER], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)? as u64,
                    r.get::<_, i64>(5)? as u64,
                    r.get::<_, i64>(6)? as u64,
                ),
            ))
        })
        .expect("query");
    for row in rows {
        let (p, r) = row.expect("row");
        out.entry(p).or_default().push(r);
    }
    out
}

#[test]
fn usage_survives_a_master_outage_and_a_node_crash_exactly_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("master.db");
    let mut master = Master::start(&db);
    let addr = master.addr();
    let node_dir = tmp.path().join("node");
    let metrics = node_dir.join("usage.prom");
    let mut node = Node::start_with(
        &node_dir,
        &master.url,
        COMPUTER,
        2,
        "usage_period = 1\nusage_metrics_file = \"usage.prom\"\n",
    );
    let c = master.client();
    wait_for("node registered", LONG, || {
        c.computer(&ComputerId::parse(COMPUTER).ok()?).ok()
    });
    let url = example_release("hello-web");
    supply(&c, COMPUTER, &url);
    let web = c
        .request(&instance_request(
            "web",
            &url,
            params(json!({"title": "Usage"})),
        ))
        .expect("request");
    let service = wait_for("hello-web url", LONG, || {
        let i = c
            .instance(&slapos_proto::InstanceTitle::parse("web").ok()?, None)
            .ok()?;
        i.connection.get("url")?.as_str().map(str::to_owned)
    });
    wait_for("hello-web answers", LONG, || http_get(&service));

    // Samples of the running instance reach the master within a couple of periods.
    let up = now_ms();
    wait_for("a sample of web", SHORT, || {
        (samples_after(&c, "web", up) > 0).then_some(())
    });

    // The master goes away; the node keeps sampling into its outbox.
    master.proc.stop();
    let down = now_ms();
    let before_crash = wait_for("samples kept while the master is away", SHORT, || {
        usage_outbox_depth(&metrics).filter(|n| *n >= 4)
    });

    // The node is killed (no shutdown at all) and started again, the master still away.
    if let Some(mut p) = node.proc.take() {
        p.kill();
    }
    std::fs::remove_file(&metrics).expect("remove the metrics file");
    node.restart();
    wait_for("the restarted node resumes from its outbox", SHORT, || {
        usage_outbox_depth(&metrics).filter(|n| *n > before_crash)
    });

    // The master returns on the same address: the outbox drains into it.
    let back = now_ms();
    let mut master = Master::start_on(&db, &addr);
    let c = master.client();
    wait_for("samples after the master's return", SHORT, || {
        (samples_after(&c, "web", back) > 0).then_some(())
    });

    // The operator's report groups them by instance.
    let until = now_ms().to_string();
    let out = Command::new(bin("slapos-master"))
        .args([
            "usage", "--since", "0", "--until", &until, "--by", "instance", "--json",
        ])
        .env("SLAPOS_MASTER", &master.url)
        .output()
        .expect("slapos-master usage");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report json");
    let web_row = report["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["key"] == "web"))
        .unwrap_or_else(|| panic!("no web row: {report}"))
        .clone();

    node.stop();
    master.proc.stop();
    let samples = stored(&db);
    let web_part = web.partition.as_str();
    assert_eq!(samples.len(), 2, "{samples:?}");
    for (p, rows) in &samples {
        // Contiguous: each period starts where the previous one ended (no gap, no overlap,
        // across the outage and the crash: the restarted node went on from its last durable
        // end instead of starting a new numbering), and none was folded.
        for w in rows.windows(2) {
            assert_eq!(w[0].1, w[1].0, "{p}: periods not contiguous: {w:?}");
        }
        assert!(rows.iter().all(|r| r.4 == 1 && r.1 > r.0), "{p}: {rows:?}");
        // Sampled while the master was away, delivered after it returned.
        let late = rows
            .iter()
            .filter(|r| r.1 > down && r.1 < back && r.5 >= back)
            .count();
        assert!(
            late >= 2,
            "{p}: {late} samples of the outage delivered late: {rows:?}"
        );
    }
    let web_rows: Vec<&Row> = samples[web_part]
        .iter()
        .filter(|r| r.2.as_deref() == Some("web"))
        .collect();
    assert_eq!(
        web_row["samples"].as_u64(),
        Some(web_rows.len() as u64),
        "{web_row}"
    );
    if is_root() {
        // Root nodes have partition cgroups: hello-web's CPU time is measured.
        assert!(
            web_rows.iter().map(|r| r.3).sum::<u64>() > 0,
            "{web_rows:?}"
        );
        assert!(
            web_row["cpu_seconds"].as_f64().unwrap_or(0.0) > 0.0,
            "{web_row}"
        );
    }
}
