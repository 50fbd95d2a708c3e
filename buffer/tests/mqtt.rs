//! MQTT end to end with real mosquitto brokers: a local broker the sensors publish to, an
//! upstream broker the buffer forwards to, outages of the upstream and kills of the buffer.

mod common;

use common::peers::*;
use common::{GapSeen, check_explained};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// An upstream broker that admits a subscriber `sub` and the buffer as `buf` (password file),
/// with a subscriber to `up/#` on it.
struct Upstream {
    pw: std::path::PathBuf,
    /// The buffer's password, in a file of its own (mode 0600): never in the config.
    buf_pw: std::path::PathBuf,
    up: Mosquitto,
    sub: Subscriber,
}

impl Upstream {
    fn start(dir: &std::path::Path) -> Upstream {
        let pw = dir.join("upstream.passwd");
        mosquitto_passwd(&pw, "sub", "s3cret");
        mosquitto_passwd(&pw, "buf", "b3cret");
        let buf_pw = dir.join("buf.password");
        std::fs::write(&buf_pw, "b3cret\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&buf_pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let auth = format!("allow_anonymous false\npassword_file {}\n", pw.display());
        let up = Mosquitto::start(&dir.join("up"), &auth);
        let sub = Subscriber::start(up.port, "up/#", Some(("sub", "s3cret")));
        sub.wait_subscribed();
        Upstream {
            pw,
            buf_pw,
            up,
            sub,
        }
    }

    /// Restarts the stopped broker; the buffer is let in only once the subscriber is
    /// subscribed again (nothing it sends can pass unseen).
    fn back(&mut self) {
        std::fs::remove_file(&self.pw).unwrap();
        mosquitto_passwd(&self.pw, "sub", "s3cret");
        let before = self.sub.subacks.load(Ordering::SeqCst);
        self.up.restart();
        wait_for(Duration::from_secs(20), "resubscription", || {
            (self.sub.subacks.load(Ordering::SeqCst) > before).then_some(())
        });
        mosquitto_passwd(&self.pw, "buf", "b3cret");
        self.up.reload();
    }
}

/// A test directory, a local broker, an upstream one and a subscriber to `up/#` on it (`None`
/// when mosquitto is not installed: the test is skipped).
fn brokers() -> Option<(tempfile::TempDir, Mosquitto, Mosquitto, Subscriber)> {
    if !require_tool("mosquitto") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let local = Mosquitto::start(&dir.path().join("local"), "");
    let up = Mosquitto::start(&dir.path().join("up"), "");
    let sub = Subscriber::start(up.port, "up/#", None);
    sub.wait_subscribed();
    Some((dir, local, up, sub))
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
    let mut upstream = Upstream::start(dir.path());
    let b = BufferProc::start(
        dir.path(),
        &cfg(
            dir.path(),
            local.port,
            upstream.up.port,
            &format!(
                "username = \"buf\"\npassword_file = \"{}\"",
                upstream.buf_pw.display()
            ),
        ),
    );
    wait_subscribed(&b);
    // Phase 1: link up.
    mqtt_publish_all(local.port, "sensors/t1", msgs(1, 300));
    wait_for(Duration::from_secs(30), "300 upstream", || {
        (dedup(&upstream.sub.delivered()).0.len() >= 300).then_some(())
    });
    // Phase 2: upstream broker down while sensors keep publishing.
    upstream.up.stop();
    mqtt_publish_all(local.port, "sensors/t1", msgs(301, 600));
    wait_for(Duration::from_secs(30), "600 durable", || {
        (b.status()["records_durable"].as_u64().unwrap_or(0) >= 600).then_some(())
    });
    assert!(b.status()["gauges"]["backlog_records"].as_u64().unwrap() >= 300);
    // Phase 3: upstream back, but the buffer is refused until the subscriber is in again.
    upstream.back();
    let sub = &upstream.sub;
    mqtt_publish_all(local.port, "sensors/t1", msgs(601, 900));
    wait_for(Duration::from_secs(60), "900 upstream", || {
        (dedup(&sub.delivered()).0.len() >= 900).then_some(())
    });
    check(sub, 900, 3 * 20);
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
    let Some((dir, local, up, sub)) = brokers() else {
        return;
    };
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
        (sub.numbers().len() as u64 >= total).then_some(())
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

#[test]
fn qos1_redeliveries_after_a_kill_keep_their_delivery_ids() {
    let Some((dir, local, up, sub)) = brokers() else {
        return;
    };
    // The buffer reaches its local broker through a proxy that can keep its PUBACKs back.
    let proxy = HoldProxy::start(local.port);
    let config = cfg(dir.path(), proxy.port, up.port, "");
    let mut rng = buffer::fs::SplitMix(0xBEEF ^ u64::from(std::process::id()));
    let (mut sent, rounds) = (0u64, 8u64);
    let mut b = BufferProc::start(dir.path(), &config);
    wait_subscribed(&b);
    for round in 0..rounds {
        // The messages are stored (fdatasync'd) and forwarded; their PUBACKs never reach the
        // broker before the kill, so it redelivers them all (DUP) to the next incarnation.
        proxy.hold.store(true, std::sync::atomic::Ordering::SeqCst);
        mqtt_publish_all(local.port, "sensors/t1", msgs(sent + 1, sent + 200));
        sent += 200;
        if round % 2 == 0 {
            wait_for(Duration::from_secs(20), "the messages durable", || {
                (b.status()["records_durable"].as_u64().unwrap_or(0) >= 200).then_some(())
            });
            wait_for(Duration::from_secs(20), "the messages upstream", || {
                (sub.numbers().len() as u64 >= sent).then_some(())
            });
        } else {
            // Anywhere around the fdatasyncs.
            std::thread::sleep(Duration::from_millis(rng.below(40)));
        }
        b.kill9();
        proxy.hold.store(false, std::sync::atomic::Ordering::SeqCst);
        b = BufferProc::start(dir.path(), &config);
        wait_subscribed(&b);
        if round % 2 == 0 {
            // All 200 reached the killed incarnation and none was acknowledged: the broker
            // redelivers them (DUP) and this incarnation must recognise them as resends. (The
            // counter is per process, so it is read here, not after a random-time kill.)
            wait_for(
                Duration::from_secs(20),
                "the redeliveries recognised",
                || (b.status()["input_resends"].as_u64().unwrap_or(0) > 0).then_some(()),
            );
        }
    }
    wait_for(Duration::from_secs(60), "every message upstream", || {
        (sub.numbers().len() as u64 >= sent).then_some(())
    });
    wait_for(Duration::from_secs(20), "the backlog drained", || {
        (b.status()["gauges"]["backlog_records"] == 0).then_some(())
    });
    check_one_id_per_number(&sub.delivered(), sent);
}

#[test]
fn restart_campaign_every_drop_is_explained_upstream_and_counted() {
    if !require_tool("mosquitto") || !require_tool("mosquitto_passwd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut upstream = Upstream::start(dir.path());
    let config = format!(
        r#"
node_id = "gw-camp"
[storage]
dir = "{}"
stream = "sensors"
batch_window_ms = 5
segment_bytes = 65536
max_bytes = 1048576
full_policy = "drop_oldest"
[metrics]
listen = "127.0.0.1:0"
[[inputs]]
type = "tcp"
listen = "127.0.0.1:0"
format = "json"
ack = true
[output]
type = "mqtt"
host = "127.0.0.1"
port = {}
topic = "up/{{key}}"
window = 20
keep_alive_s = 5
backoff_base_ms = 50
backoff_max_ms = 400
username = "buf"
password_file = "{}"
"#,
        dir.path().join("data").display(),
        upstream.up.port,
        upstream.buf_pw.display()
    );
    // The upstream broker is down for the whole campaign: the 1 MiB budget overflows many
    // times while the buffer is killed again and again.
    upstream.up.stop();
    let acked = AtomicU64::new(0);
    let mut rng = buffer::fs::SplitMix(0xCA4 ^ u64::from(std::process::id()));
    for _ in 0..8 {
        let mut b = BufferProc::start(dir.path(), &config);
        let addr = b.input_addr(0);
        let from = acked.load(Ordering::SeqCst) + 1;
        // Killed after a random count of acknowledged lines (not after a delay: the test
        // must not depend on how fast this machine is).
        let upto = from - 1 + 5000 + rng.below(3000);
        std::thread::scope(|s| {
            s.spawn(|| Producer::run(&addr, from, from + 8000, &acked, None));
            wait_for(Duration::from_secs(60), "lines acknowledged", || {
                (acked.load(Ordering::SeqCst) >= upto).then_some(())
            });
            b.kill9();
        });
    }
    let b = BufferProc::start(dir.path(), &config);
    let from = acked.load(Ordering::SeqCst) + 1;
    Producer::run(&b.input_addr(0), from, from + 5000, &acked, None);
    // About 100 B a line: the 1 MiB budget overflowed several times.
    assert!(acked.load(Ordering::SeqCst) > 40_000);
    // The upstream comes back (the buffer is let in once the subscriber is there again).
    upstream.back();
    let st = wait_for(
        Duration::from_secs(60),
        "backlog and gaps delivered",
        || {
            let st = b.status();
            let gaps_waiting = st["gauges"]["gaps_waiting"].as_u64().unwrap_or(0);
            (st["gauges"]["backlog_records"] == 0 && gaps_waiting == 0).then_some(st)
        },
    );
    // Every seq the upstream did not get is inside a gap marker it got, and the markers add up
    // to the drop counters, which count every drop since the log was created.
    let got = upstream.sub.delivered();
    let (firsts, _) = dedup(&got);
    let data: std::collections::BTreeSet<u64> = firsts
        .iter()
        .filter(|d| d.gap.is_none())
        .map(|d| d.seq)
        .collect();
    let gaps: Vec<GapSeen> = firsts.iter().filter_map(|d| d.gap).collect();
    let ranges = check_explained(&data, &gaps, GapReasons::total(&st));
    assert_eq!(ranges.first().map(|g| g.0), Some(1));
    assert!(GapReasons::total(&st) > 20_000);
    eprintln!(
        "restart campaign: {} lines acked, {} delivered, {} dropped in {} gap markers",
        acked.load(Ordering::SeqCst),
        data.len(),
        GapReasons::total(&st),
        ranges.len()
    );
}

/// Sums of the `dropped` object of the status.
struct GapReasons;

impl GapReasons {
    fn total(status: &serde_json::Value) -> u64 {
        status["dropped"]
            .as_object()
            .map(|o| o.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0)
    }
}
