//! Real peers for the integration tests: the `slapos-buffer` binary, mosquitto, an HTTP sink,
//! a TCP line producer with acknowledgements. Everything on loopback: listeners of the test on
//! ports the kernel picks, the children's on ports reserved for the test
//! (`slapos_test_support::ports`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use slapos_test_support::gate::{self, Need};
/// A reserved loopback port: no other test, in this process or another, gets it meanwhile.
pub use slapos_test_support::ports::free_port;

/// Whether an external tool is there; skips (false) or, with `SLAPOS_REQUIRE_TOOLS=1`, fails.
pub fn require_tool(name: &str) -> bool {
    let found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join(name).exists());
    found
        || gate::skip(
            Need::Tools,
            name,
            &format!("`{name}` not installed (scripts/deps/buffer.sh installs it)"),
        )
}

/// Whether we are root; skips (false) or, with `SLAPOS_REQUIRE_PRIVILEGED=1`, fails.
pub fn require_root(what: &str) -> bool {
    gate::privileged(what)
}

/// Polls `f` until it returns `Some` or `timeout` passes ([`slapos_test_support::wait`], in
/// the argument order of the buffer's tests).
pub fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    slapos_test_support::wait::wait_for(what, timeout, f)
}

// ---------------------------------------------------------------------------------------------
// mosquitto.

/// A mosquitto broker child process, killed on drop.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    extra: String,
}

impl Mosquitto {
    /// Starts a broker on a free loopback port; `extra` is appended to its config.
    pub fn start(dir: &Path, extra: &str) -> Mosquitto {
        Self::start_on(dir, free_port(), extra)
    }

    /// Starts on `port`.
    pub fn start_on(dir: &Path, port: u16, extra: &str) -> Mosquitto {
        std::fs::create_dir_all(dir).expect("broker dir");
        let mut m = Mosquitto {
            child: None,
            port,
            dir: dir.to_path_buf(),
            extra: extra.to_string(),
        };
        m.restart();
        m
    }

    /// (Re)starts the broker with its config.
    pub fn restart(&mut self) {
        self.stop();
        let conf = self.dir.join("mosquitto.conf");
        let mut text = format!("listener {} 127.0.0.1\n", self.port);
        if !self.extra.contains("allow_anonymous") {
            text.push_str("allow_anonymous true\n");
        }
        text.push_str("persistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Keep root so the broker can read files in the test's private temp dir.
            text.push_str("user root\n");
        }
        text.push_str(&self.extra);
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(10), "mosquitto to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    /// Sends SIGHUP (reloads password files).
    pub fn reload(&self) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGHUP) };
        }
    }

    /// Kills the broker.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The slapos-buffer binary.

/// A running `slapos-buffer`, killed on drop.
pub struct BufferProc {
    pub child: Child,
    pub ready: serde_json::Value,
}

impl BufferProc {
    /// Writes `config` to `dir/buffer.toml` and starts the binary; waits for `READY`.
    pub fn start(dir: &Path, config: &str) -> BufferProc {
        Self::start_with(dir, config, None)
    }

    /// Same, optionally prefixed by a wrapper command (e.g. `ip netns exec NS`).
    pub fn start_with(dir: &Path, config: &str, wrapper: Option<&[&str]>) -> BufferProc {
        let conf = dir.join("buffer.toml");
        std::fs::write(&conf, config).expect("write config");
        let bin = env!("CARGO_BIN_EXE_slapos-buffer");
        let mut cmd = match wrapper {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .arg("--config")
            .arg(&conf)
            .env(
                "SLAPOS_BUFFER_LOG",
                std::env::var("SLAPOS_BUFFER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn slapos-buffer");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(j) = line.strip_prefix("READY ") {
                    let _ = tx.send(j.trim().to_string());
                }
                line.clear();
            }
        });
        let ready = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(j) => serde_json::from_str(&j).expect("READY json"),
            Err(_) => {
                let _ = child.kill();
                let st = child.wait();
                panic!("slapos-buffer did not become ready ({st:?})");
            }
        };
        BufferProc { child, ready }
    }

    /// Address of input `i`.
    pub fn input_addr(&self, i: usize) -> String {
        self.ready["inputs"][i]["listen"]
            .as_str()
            .expect("input address")
            .to_string()
    }

    /// Metrics address.
    pub fn metrics_addr(&self) -> String {
        self.ready["metrics"]
            .as_str()
            .expect("metrics address")
            .to_string()
    }

    /// GET on the metrics endpoint.
    pub fn get(&self, path: &str) -> String {
        http_get(&self.metrics_addr(), path)
    }

    /// The status document.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/status")).expect("status json")
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }
}

impl Drop for BufferProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/proc/<pid>/status` field in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    buffer::metrics::proc_status_kib(Path::new("/proc"), pid, field)
}

/// Blocking `GET`, body only.
pub fn http_get(addr: &str, path: &str) -> String {
    buffer::server::get(addr, path)
        .expect("GET on the metrics endpoint")
        .1
}

/// A Prometheus sample value (first line starting with `name{` or `name `).
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// HTTP sink.

/// One delivered record.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
    pub kind: String,
    pub payload: String,
    /// A gap marker's (first seq, last seq, records).
    pub gap: Option<super::GapSeen>,
}

/// An HTTP server recording NDJSON batches; answers 503 while `fail` is set.
pub struct HttpSink {
    pub addr: String,
    pub got: Arc<Mutex<Vec<Delivered>>>,
    pub keys: Arc<Mutex<Vec<String>>>,
    pub fail: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl HttpSink {
    pub fn start() -> HttpSink {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let addr = l.local_addr().expect("addr").to_string();
        let got = Arc::new(Mutex::new(Vec::new()));
        let keys = Arc::new(Mutex::new(Vec::new()));
        let fail = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, k, f, st) = (got.clone(), keys.clone(), fail.clone(), stop.clone());
        thread::spawn(move || {
            for s in l.incoming() {
                if st.load(SeqCst) {
                    return;
                }
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut len = 0usize;
                let mut key = String::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("idempotency-key:") {
                        key = line["idempotency-key:".len()..].trim().to_string();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                if r.read_exact(&mut body).is_err() {
                    continue;
                }
                if f.load(SeqCst) {
                    let _ = s.write_all(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                {
                    let mut g = g.lock().expect("sink lock");
                    for l in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                        let v: serde_json::Value = serde_json::from_slice(l).expect("ndjson line");
                        g.push(Delivered {
                            id: v["id"].as_str().unwrap_or_default().to_string(),
                            epoch: v["epoch"].as_u64().unwrap_or(0),
                            seq: v["seq"].as_u64().unwrap_or(0),
                            kind: v["kind"].as_str().unwrap_or_default().to_string(),
                            payload: v["payload"].as_str().unwrap_or_default().to_string(),
                            gap: v.get("gap").map(gap_seen),
                        });
                    }
                    k.lock().expect("keys").push(key);
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        HttpSink {
            addr,
            got,
            keys,
            fail,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/ingest", self.addr)
    }

    pub fn snapshot(&self) -> Vec<Delivered> {
        self.got.lock().expect("sink lock").clone()
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// The `n` of a JSON payload `{"n": …}` (the tests' producers number their lines).
pub fn n_of(p: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(p).ok()?["n"].as_u64()
}

/// Each number `1..=total` arrived under exactly one delivery id (duplicates share it), and the
/// first arrivals have contiguous seqs (nothing stored twice, nothing lost).
pub fn check_one_id_per_number(got: &[Delivered], total: u64) {
    let (firsts, dups) = dedup(got);
    let mut ids: HashMap<u64, std::collections::HashSet<&str>> = HashMap::new();
    for d in got {
        if let Some(n) = n_of(&d.payload) {
            ids.entry(n).or_default().insert(&d.id);
        }
    }
    for n in 1..=total {
        let i = ids.get(&n).map_or(0, |s| s.len());
        assert_eq!(
            i,
            1,
            "number {n} arrived under {i} delivery ids: {:?}",
            ids.get(&n)
        );
    }
    for (i, d) in firsts.iter().enumerate() {
        assert_eq!(d.seq, i as u64 + 1, "stored twice or lost at {i}: {d:?}");
    }
    eprintln!(
        "{total} numbered, {} deliveries, {dups} duplicates",
        got.len()
    );
}

/// A gap marker's JSON as (first seq, last seq, records).
pub fn gap_seen(g: &serde_json::Value) -> super::GapSeen {
    (
        g["first_seq"].as_u64().unwrap_or(0),
        g["last_seq"].as_u64().unwrap_or(0),
        g["records"].as_u64().unwrap_or(0),
    )
}

/// Checks a delivery log: each id always carries the same payload; returns the first-arrival
/// order of ids (deduplicated) and the number of duplicates.
pub fn dedup(got: &[Delivered]) -> (Vec<Delivered>, usize) {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut firsts = Vec::new();
    let mut dups = 0;
    for d in got {
        match seen.get(&d.id) {
            Some(p) => {
                assert_eq!(p, &d.payload, "delivery id {} carried two payloads", d.id);
                dups += 1;
            }
            None => {
                seen.insert(d.id.clone(), d.payload.clone());
                firsts.push(d.clone());
            }
        }
    }
    (firsts, dups)
}

// ---------------------------------------------------------------------------------------------
// TCP producer with acknowledgements.

/// Sends numbered JSON lines to a TCP input and tracks `ok <n>` acknowledgements.
pub struct Producer {
    /// Lines acknowledged as durable (by their number).
    pub acked: Arc<AtomicU64>,
}

/// The JSON line number `n`.
pub fn line(n: u64) -> String {
    format!(
        "{{\"sensor\":\"s1\",\"n\":{n},\"v\":{}.5,\"pad\":\"{}\"}}",
        n % 97,
        "x".repeat(40)
    )
}

impl Producer {
    /// Sends lines `from..to` over one connection; the acked counter is set to
    /// `from - 1 + <n>` for every `ok <n>` received. Returns when all were acked or the
    /// connection broke (the caller resends from `acked + 1`).
    pub fn run(addr: &str, from: u64, to: u64, acked: &AtomicU64, stop_after: Option<Duration>) {
        Self::run_as(addr, None, from, to, acked, stop_after)
    }

    /// [`Producer::run`] by producer `name`: the connection starts with `hello <name> <from>`
    /// (line `n` is the producer's record number `n`).
    pub fn run_as(
        addr: &str,
        name: Option<&str>,
        from: u64,
        to: u64,
        acked: &AtomicU64,
        stop_after: Option<Duration>,
    ) {
        let Ok(s) = TcpStream::connect(addr) else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mut w = s.try_clone().expect("clone");
        let r = BufReader::new(s);
        let base = from - 1;
        let started = Instant::now();
        let hello = name.map(|n| format!("hello {n} {from}\n"));
        let writer = thread::spawn(move || {
            let mut buf = hello.unwrap_or_default();
            for n in from..to {
                buf.push_str(&line(n));
                buf.push('\n');
                if buf.len() > 8192 || n + 1 == to {
                    if w.write_all(buf.as_bytes()).is_err() {
                        return;
                    }
                    buf.clear();
                }
                if stop_after.is_some_and(|d| started.elapsed() > d) {
                    let _ = w.write_all(buf.as_bytes());
                    return;
                }
            }
        });
        for l in r.lines() {
            let Ok(l) = l else { break };
            if let Some(v) = l.strip_prefix("ok ")
                && let Ok(n) = v.trim().parse::<u64>()
            {
                acked.fetch_max(base + n, SeqCst);
                if base + n >= to - 1 {
                    break;
                }
            }
        }
        let _ = writer.join();
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy that can hold one direction (acknowledgements lost in transit at a crash).

/// Forwards loopback TCP connections to `127.0.0.1:target`. Once a connection has seen `hold`
/// set, what its client sends is never forwarded for the rest of that connection (as when a
/// process dies before its packets left the machine). The hold latches per connection:
/// clearing `hold` right after killing the client must not let the proxy forward bytes it
/// had not read yet.
pub struct HoldProxy {
    pub port: u16,
    pub hold: Arc<AtomicBool>,
}

impl HoldProxy {
    pub fn start(target: u16) -> HoldProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = l.local_addr().expect("proxy addr").port();
        let hold = Arc::new(AtomicBool::new(false));
        let h = hold.clone();
        thread::spawn(move || {
            for c in l.incoming() {
                let Ok(client) = c else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut c_rd, mut s_wr) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mut s_rd, mut c_wr) = (server, client);
                thread::spawn(move || {
                    let _ = std::io::copy(&mut s_rd, &mut c_wr);
                    let _ = c_wr.shutdown(std::net::Shutdown::Both);
                });
                let h = h.clone();
                thread::spawn(move || {
                    let mut held = false;
                    let mut buf = [0u8; 16 << 10];
                    loop {
                        let n = match c_rd.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        held |= h.load(SeqCst);
                        if !held && s_wr.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_wr.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        HoldProxy { port, hold }
    }
}

// ---------------------------------------------------------------------------------------------
// MQTT clients (rumqttc v5) for sensors and the upstream subscriber.

/// A message seen by the subscriber.
#[derive(Clone, Debug)]
pub struct MqttMsg {
    pub topic: String,
    pub payload: String,
    pub id: String,
    pub kind: String,
}

/// An upstream subscriber on its own thread and runtime; reconnects and resubscribes forever.
pub struct Subscriber {
    pub got: Arc<Mutex<Vec<MqttMsg>>>,
    /// SUBACKs received (one per (re)subscription).
    pub subacks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    join: Option<thread::JoinHandle<()>>,
}

impl Subscriber {
    pub fn start(port: u16, topic: &str, creds: Option<(&str, &str)>) -> Subscriber {
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let got = Arc::new(Mutex::new(Vec::new()));
        let subacks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, sa, st) = (got.clone(), subacks.clone(), stop.clone());
        let topic = topic.to_string();
        let creds = creds.map(|(u, p)| (u.to_string(), p.to_string()));
        let join = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut o = MqttOptions::new(format!("test-sub-{port}"), "127.0.0.1", port);
                o.set_keep_alive(Duration::from_secs(5));
                if let Some((u, p)) = creds {
                    o.set_credentials(u, p);
                }
                let (c, mut el) = AsyncClient::new(o, 100);
                while !st.load(SeqCst) {
                    match tokio::time::timeout(Duration::from_millis(200), el.poll()).await {
                        Err(_) => {}
                        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                            let _ = c.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                        }
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                            sa.fetch_add(1, SeqCst);
                        }
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            let prop = |k: &str| {
                                p.properties
                                    .as_ref()
                                    .and_then(|pp| pp.user_properties.iter().find(|x| x.0 == k))
                                    .map(|x| x.1.clone())
                                    .unwrap_or_default()
                            };
                            g.lock().unwrap().push(MqttMsg {
                                topic: String::from_utf8_lossy(&p.topic).into(),
                                payload: String::from_utf8_lossy(&p.payload).into(),
                                id: prop("delivery-id"),
                                kind: prop("kind"),
                            });
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            });
        });
        Subscriber {
            got,
            subacks,
            stop,
            join: Some(join),
        }
    }

    /// Waits until at least one subscription was acknowledged.
    pub fn wait_subscribed(&self) {
        wait_for(Duration::from_secs(10), "subscription", || {
            (self.subacks.load(SeqCst) > 0).then_some(())
        });
    }

    pub fn snapshot(&self) -> Vec<MqttMsg> {
        self.got.lock().unwrap().clone()
    }

    /// The distinct numbers (`n_of`) of the payloads received.
    pub fn numbers(&self) -> std::collections::HashSet<u64> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| n_of(&m.payload))
            .collect()
    }

    /// As [`Delivered`] records, for [`dedup`].
    pub fn delivered(&self) -> Vec<Delivered> {
        self.snapshot()
            .into_iter()
            .map(|m| {
                // node/stream/epoch/seq, or node/stream/gap/serial with a JSON body.
                let mut it = m.id.rsplit('/');
                let seq = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let epoch = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let gap = (m.kind == "gap")
                    .then(|| serde_json::from_str::<serde_json::Value>(&m.payload).ok())
                    .flatten()
                    .map(|v| gap_seen(&v));
                Delivered {
                    id: m.id,
                    epoch,
                    seq: if gap.is_some() { 0 } else { seq },
                    kind: m.kind,
                    payload: m.payload,
                    gap,
                }
            })
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Publishes `payloads` at QoS 1 to `topic` and returns once every PUBACK arrived.
pub fn mqtt_publish_all(port: u16, topic: &str, payloads: Vec<String>) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut o = MqttOptions::new(
            format!("test-pub-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        o.set_outgoing_inflight_upper_limit(100);
        let (c, mut el) = AsyncClient::new(o, 200);
        let n = payloads.len();
        let topic = topic.to_string();
        let feeder = tokio::spawn(async move {
            for p in payloads {
                c.publish(topic.clone(), QoS::AtLeastOnce, false, p)
                    .await
                    .unwrap();
            }
            c
        });
        let mut acks = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while acks < n {
            match tokio::time::timeout_at(deadline, el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acks += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("sensor publish failed: {e}"),
                Err(_) => panic!("sensor publish timed out after {acks}/{n} acks"),
            }
        }
        let _ = feeder.await;
    });
}

/// Creates or extends a mosquitto password file.
pub fn mosquitto_passwd(file: &Path, user: &str, pass: &str) {
    let mut c = Command::new("mosquitto_passwd");
    if !file.exists() {
        c.arg("-c");
    }
    let st = c
        .arg("-b")
        .arg(file)
        .arg(user)
        .arg(pass)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_passwd");
    assert!(st.success(), "mosquitto_passwd failed");
}
