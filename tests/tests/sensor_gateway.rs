//! `examples/sensor-gateway` through a real master and node: sensors write JSON lines to the
//! partition's TCP input while the upstream collector is down (it answers 503); when it comes
//! back, every record arrives once per delivery id, in order, none missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use slapos_proto::ComputerId;
use slapos_tests::{
    Master, Node, connection, example_release, instance_request, params, supply, wait_for,
};

const LONG: Duration = Duration::from_secs(60);

/// A minimal HTTP/1.1 collector: keeps the NDJSON lines of every accepted POST; answers 503
/// while `down` is set (the uplink is "cut").
struct Collector {
    url: String,
    lines: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind collector");
        let url = format!(
            "http://{}/ingest",
            listener.local_addr().expect("collector addr")
        );
        let lines = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let (l2, d2) = (lines.clone(), down.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (l3, d3) = (l2.clone(), d2.clone());
                std::thread::spawn(move || serve(conn, &l3, &d3));
            }
        });
        Collector { url, lines, down }
    }
}

fn serve(conn: TcpStream, lines: &Mutex<Vec<Value>>, down: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        // Request line, then headers.
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = if down.load(Ordering::SeqCst) {
            "503 Service Unavailable"
        } else {
            let mut kept = lines.lock().expect("lines");
            for l in String::from_utf8_lossy(&body).lines() {
                if let Ok(v) = serde_json::from_str::<Value>(l) {
                    kept.push(v);
                }
            }
            "200 OK"
        };
        let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn sensor_data_survives_an_uplink_outage() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&tmp.path().join("master.db"));
    let _node = Node::start(&tmp.path().join("node"), &master.url, "GW-1", 2);
    let c = master.client();
    let id = ComputerId::parse("GW-1").expect("id");
    wait_for("node registered", LONG, || c.computer(&id).ok());
    let url = example_release("sensor-gateway");
    supply(&c, id.as_str(), &url);

    let collector = Collector::start();
    collector.down.store(true, Ordering::SeqCst);
    let params = params(json!({"upstream_http_url": collector.url, "stream": "plant"}));
    c.request(&instance_request("gw", &url, params))
        .expect("request");
    let input = wait_for("tcp-input published", LONG, || {
        connection(&c, "gw", "tcp-input")
    });

    // Sensors write while the uplink is down; the buffer acknowledges what is durable.
    let stream = wait_for("tcp input accepts", LONG, || {
        TcpStream::connect(&input).ok()
    });
    let mut w = stream.try_clone().expect("clone");
    let total = 300;
    for n in 0..total {
        writeln!(w, "{}", json!({"sensor": "t1", "n": n})).expect("write line");
    }
    w.flush().expect("flush");
    let mut acks = BufReader::new(stream);
    let mut acked = 0;
    while acked < total {
        let mut line = String::new();
        assert!(
            acks.read_line(&mut line).expect("ack line") > 0,
            "input closed"
        );
        if let Some(n) = line.trim().strip_prefix("ok ") {
            acked = n.parse().expect("ack count");
        }
    }
    assert!(
        collector.lines.lock().expect("lines").is_empty(),
        "nothing can be delivered while the collector is down"
    );

    // The uplink returns: everything arrives, once per delivery id, in order.
    collector.down.store(false, Ordering::SeqCst);
    let got = wait_for("all records delivered", LONG, || {
        let l = collector.lines.lock().expect("lines");
        let data: Vec<Value> = l.iter().filter(|v| v["kind"] == "data").cloned().collect();
        (data.len() >= total).then_some(data)
    });
    let mut seen = std::collections::BTreeSet::new();
    let mut ns = Vec::new();
    for v in &got {
        let id = v["id"].as_str().expect("delivery id").to_owned();
        if seen.insert(id) {
            let payload: Value = match &v["payload"] {
                Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                other => other.clone(),
            };
            ns.push(payload["n"].as_u64().expect("n in payload"));
        }
    }
    let want: Vec<u64> = (0..total as u64).collect();
    assert_eq!(ns, want, "records missing, duplicated or out of order");
    assert!(got.iter().all(|v| v["stream"] == "plant"));
}
