//! MQTT end to end with real mosquitto brokers: a local broker the sensors publish to, an
//! upstream broker the buffer forwards to, outages of the upstream and kills of the buffer.

mod common;

use common::peers::*;
use std::collections::HashSet;
use std::time::Duration;

fn cfg(dir: &std::path::Path, local: u16, upstream: u16, extra_out: &str) -> String {
    format!(
        r#"
node_id = "gw-mqtt"
[storage]
dir = "{}"
stream = "sensors"
batch_window_ms = 5
[metrics]
listen = "127.0.0.1:0"
[[inputs]]
type = "mqtt"
host = "127.0.0.1"
port = {local}
client_id = "buffer-in"
topics = ["sensors/#"]
[output]
type = "mqtt"
host = "127.0.0.1"
port = {upstream}
topic = "up/{{key}}"
window = 20
keep_alive_s = 5
backoff_base_ms = 50
backoff_max_ms = 400
{extra_out}
"#,
        dir.join("data").display()
    )
}

/// The buffer's MQTT input holds its subscription (messages published before are not queued
/// for a session the broker does not know yet).
fn wait_subscribed(b: &BufferProc) {
    wait_for(Duration::from_secs(20), "the buffer's subscription", || {
        (b.status()["input_subscriptions"].as_u64().unwrap_or(0) > 0).then_some(())
    });
}

fn msgs(from: u64, to: u64) -> Vec<String> {
    (from..=to)
        .map(|n| format!("{{\"n\":{n},\"t\":21.5}}"))
        .collect()
}

fn n_of(p: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(p).ok()?["n"].as_u64()
}

/// Checks: every message 1..=n arrived, ids carry one payload each, first arrivals in seq order.
fn check(sub: &Subscriber, n: u64, max_dups: usize) {
    let got = sub.delivered();
    let (firsts, dups) = dedup(&got);
    let ns: HashSet<u64> = firsts.iter().filter_map(|d| n_of(&d.payload)).collect();
    for i in 1..=n {
        assert!(ns.contains(&i), "message {i} missing upstream");
    }
    for w in firsts.windows(2) {
        assert!(
            w[0].seq < w[1].seq || w[0].epoch != w[1].epoch,
            "order: {:?} then {:?}",
            w[0].id,
            w[1].id
        );
    }
    assert!(dups <= max_dups, "{dups} duplicates > {max_dups}");
    assert!(got.iter().all(|d| d.id.starts_with("gw-mqtt/sensors/")));
}

#[test]
fn upstream_broker_outage_delivers_everything_once_per_id_in_order() {
    if !require_tool("mosquitto") || !require_tool("mosquitto_passwd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let local = Mosquitto::start(&dir.path().join("local"), "");
    let pw = dir.path().join("upstream.passwd");
    mosquitto_passwd(&pw, "sub", "s3cret");
    mosquitto_passwd(&pw, "buf", "b3cret");
    let auth = format!("allow_anonymous false\npassword_file {}\n", pw.display());
    let mut up = Mosquitto::start(&dir.path().join("up"), &auth);
    let sub = Subscriber::start(up.port, "up/#", Some(("sub", "s3cret")));
    sub.wait_subscribed();
    let b = BufferProc::start(
        dir.path(),
        &cfg(
            dir.path(),
            local.port,
            up.port,
            "username = \"buf\"\npassword = \"b3cret\"",
        ),
    );
    wait_subscribed(&b);
    // Phase 1: link up.
    mqtt_publish_all(local.port, "sensors/t1", msgs(1, 300));
    wait_for(Duration::from_secs(30), "300 upstream", || {
        (dedup(&sub.delivered()).0.len() >= 300).then_some(())
    });
    // Phase 2: upstream broker down while sensors keep publishing.
    up.stop();
    mqtt_publish_all(local.port, "sensors/t1", msgs(301, 600));
    wait_for(Duration::from_secs(30), "600 durable", || {
        (b.status()["records_durable"].as_u64().unwrap_or(0) >= 600).then_some(())
    });
    assert!(b.status()["gauges"]["backlog_records"].as_u64().unwrap() >= 300);
    // Phase 3: upstream back, but the buffer is refused until the subscriber is in again.
    std::fs::remove_file(&pw).unwrap();
    mosquitto_passwd(&pw, "sub", "s3cret");
    let before = sub.subacks.load(std::sync::atomic::Ordering::SeqCst);
    up.restart();
    wait_for(Duration::from_secs(20), "resubscription", || {
        (sub.subacks.load(std::sync::atomic::Ordering::SeqCst) > before).then_some(())
    });
    mosquitto_passwd(&pw, "buf", "b3cret");
    up.reload();
    mqtt_publish_all(local.port, "sensors/t1", msgs(601, 900));
    wait_for(Duration::from_secs(60), "900 upstream", || {
        (dedup(&sub.delivered()).0.len() >= 900).then_some(())
    });
    check(&sub, 900, 3 * 20);
    // PUBACKs of the last messages may still be on their way to the buffer.
    let st = wait_for(Duration::from_secs(20), "900 acknowledged", || {
        let st = b.status();
        (st["records_delivered"].as_u64() == Some(900)).then_some(st)
    });
    assert_eq!(st["gauges"]["backlog_records"].as_u64(), Some(0), "{st}");
    assert!(st["output_errors"].as_u64().unwrap() > 0);
    assert!(
        sub.snapshot()
            .iter()
            .all(|m| m.topic == "up/sensors/t1" && m.kind == "data")
    );
}

#[test]
fn kill9_of_the_buffer_loses_no_sensor_message() {
    if !require_tool("mosquitto") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let local = Mosquitto::start(&dir.path().join("local"), "");
    let up = Mosquitto::start(&dir.path().join("up"), "");
    let sub = Subscriber::start(up.port, "up/#", None);
    sub.wait_subscribed();
    let config = cfg(dir.path(), local.port, up.port, "");
    let total = 3000u64;
    let mut kills = 0;
    {
        // First start: the local broker learns the buffer's persistent session.
        let mut b = BufferProc::start(dir.path(), &config);
        wait_subscribed(&b);
        b.kill9();
    }
    // Sensors publish in the background while the buffer is killed and restarted.
    let lp = local.port;
    let publisher = std::thread::spawn(move || {
        for k in 0..30 {
            mqtt_publish_all(lp, "sensors/t1", msgs(k * 100 + 1, k * 100 + 100));
        }
    });
    let mut rng = buffer::fs::SplitMix(0xC0FFEE ^ u64::from(std::process::id()));
    while !publisher.is_finished() || kills < 20 {
        let mut b = BufferProc::start(dir.path(), &config);
        std::thread::sleep(Duration::from_millis(20 + rng.below(150)));
        b.kill9();
        kills += 1;
        if kills > 200 {
            break;
        }
    }
    publisher.join().unwrap();
    let b = BufferProc::start(dir.path(), &config);
    wait_for(Duration::from_secs(60), "all messages upstream", || {
        let ns: HashSet<u64> = sub
            .snapshot()
            .iter()
            .filter_map(|m| n_of(&m.payload))
            .collect();
        (ns.len() as u64 >= total).then_some(())
    });
    // Delivery ids are consistent and duplicates bounded by the window per kill.
    let (_, dups) = dedup(&sub.delivered());
    assert!(
        dups <= kills * 20,
        "{dups} duplicate ids after {kills} kills"
    );
    eprintln!("mqtt kill loop: {kills} kills, {total} messages, {dups} duplicate ids");
    drop(b);
}
