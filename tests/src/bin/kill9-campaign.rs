//! kill -9 campaign (issue 19): the real processes killed at random moments, many times, on
//! disk, and the invariants checked after every restart.
//!
//! ```sh
//! scripts/kill9-campaign.sh              # builds, then: master 100, node 100
//! target/debug/kill9-campaign master 100 # one part
//! ```
//!
//! * `master N`: a `slapos-master serve` on a database file takes requests from a writer
//!   (re-requests of 40 titles with a new generation each, new allocations, destructions) and
//!   is killed with SIGKILL 50–600 ms into each round, then restarted on the same file.
//!   Invariants: every acknowledged write is there (a title's stored generation is at least the
//!   last acknowledged one), `PRAGMA integrity_check` is `ok`, no partition holds two instances,
//!   every acknowledged allocation exists.
//! * `node N`: a real master and a `slapos-node run` with two `flaky` instances (a shell
//!   worker each); the node is killed with SIGKILL 0.2–3 s into each round (converging or
//!   idle) and restarted. Invariants: within a second of the kill no service of the dead node
//!   is left (they die with it), and after the restart each partition runs exactly one worker
//!   (no orphan, no double start).
//!
//! * `buffer N`: a `slapos-buffer` (TCP input with `ok <n>` acknowledgements, HTTP output to a
//!   sink in this process) takes numbered lines from a producer that resends from its last
//!   acknowledgement after each kill, and is killed with SIGKILL 50–600 ms into each round,
//!   then restarted on the same directory. Invariants, after a last restart that delivers the
//!   backlog: every acknowledged line was delivered at least once; every delivered record is a
//!   line that was sent, byte for byte (nothing invented, nothing corrupted); the buffer found
//!   no corrupt record or header on disk.
//!
//! Prints one summary line per part; exits 1 if any invariant failed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use slapos_proto::{
    ComputerId, InstanceState, InstanceTitle, PartitionId, PartitionSpec, RegisterComputer,
    SoftwareUrl,
};
use slapos_tests::{
    Client, Master, Node, example_release, instance_request, params, supply, wait_for,
};

/// A small xorshift generator: the campaign needs spread, not cryptography.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        eprintln!("seed {seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

const TITLES: u64 = 40;
const PARTITIONS: usize = 400;

/// What the writer had acknowledged when its master was killed.
#[derive(Default)]
struct Acked {
    /// Title → last acknowledged generation.
    generation: BTreeMap<String, u64>,
    /// Allocations acknowledged (titles that must exist).
    allocated: Vec<String>,
    writes: u64,
}

fn master_part(rounds: u64, dir: &Path, rng: &mut Rng) -> Result<String, String> {
    let db = dir.join("master.db");
    let url = SoftwareUrl::parse("/srv/sr/kill9.toml").map_err(|e| e.to_string())?;
    let mut master = Master::start(&db);
    let c = master.client();
    c.register(&RegisterComputer {
        id: ComputerId::parse("K9").map_err(|e| e.to_string())?,
        partitions: (0..PARTITIONS)
            .map(|i| PartitionSpec {
                id: PartitionId::parse(format!("slappart{i}")).expect("partition id"),
                addresses: vec![],
                interface: None,
                uid: None,
            })
            .collect(),
        labels: Default::default(),
    })
    .map_err(|e| e.to_string())?;
    supply(&c, "K9", &url);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut failures = Vec::new();
    let mut next_new = 0u64;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (acked, stop, base) = (acked.clone(), stop.clone(), master.url.clone());
            let url = url.clone();
            let first_new = next_new;
            std::thread::spawn(move || {
                let Ok(c) = Client::new(&base) else { return 0 };
                let mut new = first_new;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let generation = round * 1_000_000 + i;
                    let (title, fresh) =
                        if i.is_multiple_of(7) && new < (PARTITIONS as u64 - TITLES) {
                            new += 1;
                            (format!("new-{new}"), true)
                        } else {
                            (format!("t{}", i % TITLES), false)
                        };
                    let req = instance_request(&title, &url, params(json!({ "gen": generation })));
                    match c.request(&req) {
                        Ok(_) => {
                            let mut a = acked.lock().expect("acked");
                            a.writes += 1;
                            if fresh {
                                a.allocated.push(title);
                            } else {
                                a.generation.insert(title, generation);
                            }
                        }
                        Err(_) => break,
                    }
                }
                new
            })
        };
        std::thread::sleep(Duration::from_millis(rng.range(50, 600)));
        master.proc.kill();
        stop.store(true, Ordering::Relaxed);
        next_new = writer.join().unwrap_or(next_new);
        master = Master::start(&db);
        let c = master.client();
        let list = c
            .instances()
            .map_err(|e| format!("round {round}: list: {e}"))?;
        let stored: BTreeMap<String, u64> = list
            .iter()
            .map(|i| {
                (
                    i.title.to_string(),
                    i.parameters
                        .get("gen")
                        .and_then(|g| g.as_u64())
                        .unwrap_or(0),
                )
            })
            .collect();
        let a = acked.lock().expect("acked");
        for (t, g) in &a.generation {
            if stored.get(t).is_none_or(|s| s < g) {
                failures.push(format!(
                    "round {round}: {t} acked gen {g}, stored {:?}",
                    stored.get(t)
                ));
            }
        }
        for t in &a.allocated {
            if !stored.contains_key(t) {
                failures.push(format!("round {round}: acknowledged allocation {t} lost"));
            }
        }
        let mut places: Vec<String> = list
            .iter()
            .map(|i| format!("{}/{}", i.computer, i.partition))
            .collect();
        let n = places.len();
        places.sort();
        places.dedup();
        if places.len() != n {
            failures.push(format!("round {round}: a partition holds two instances"));
        }
        let check = Command::new("python3")
            .args(["-c", "import sys,sqlite3; print(sqlite3.connect(sys.argv[1]).execute('pragma integrity_check').fetchone()[0])"])
            .arg(&db)
            .output()
            .map_err(|e| e.to_string())?;
        let verdict = String::from_utf8_lossy(&check.stdout).trim().to_owned();
        if verdict != "ok" {
            failures.push(format!("round {round}: integrity_check {verdict:?}"));
        }
    }
    let a = acked.lock().expect("acked");
    let summary = format!(
        "master: {rounds} kills, {} acknowledged writes ({} allocations), {} invariant failures",
        a.writes,
        a.allocated.len(),
        failures.len()
    );
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{summary}\n{}", failures.join("\n")))
    }
}

/// Pids of live `flaky.sh` workers whose argument lies under `root`.
fn workers(root: &Path) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let root = root.to_string_lossy().into_owned();
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let state = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .next()?
                .to_owned();
            (cmd.contains("flaky.sh") && cmd.contains(&root) && state != "Z").then_some((pid, cmd))
        })
        .collect()
}

fn node_part(rounds: u64, dir: &Path, rng: &mut Rng) -> Result<String, String> {
    let master = Master::start(&dir.join("master.db"));
    let c = master.client();
    let node_dir = dir.join("node");
    let mut node = Node::start(&node_dir, &master.url, "K9N", 3);
    let url = example_release("flaky");
    wait_for("node registered", Duration::from_secs(60), || {
        c.computer(&ComputerId::parse("K9N").ok()?).ok()
    });
    supply(&c, "K9N", &url);
    for t in ["w1", "w2"] {
        c.request(&instance_request(
            t,
            &url,
            params(json!({"promise_period": 2})),
        ))
        .map_err(|e| e.to_string())?;
    }
    let started = |c: &Client| {
        ["w1", "w2"].iter().all(|t| {
            InstanceTitle::parse(*t)
                .ok()
                .and_then(|t| c.instance(&t, None).ok())
                .and_then(|i| i.reported)
                .is_some_and(|r| r.report.state == InstanceState::Started)
        })
    };
    wait_for("first convergence", Duration::from_secs(120), || {
        started(&c).then_some(())
    });
    let root = node_dir.join("instance");
    let mut failures = Vec::new();
    let mut survivors = 0usize;
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(rng.range(200, 3000)));
        if let Some(mut p) = node.proc.take() {
            p.kill();
        }
        // The services die with their node.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !workers(&root).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = workers(&root);
        if !left.is_empty() {
            survivors += left.len();
            failures.push(format!(
                "round {round}: {} worker(s) outlived the node: {left:?}",
                left.len()
            ));
        }
        node.restart();
        // Converged again: exactly one worker per instance.
        let settled = wait_for_opt(Duration::from_secs(60), || {
            let w = workers(&root);
            (w.len() == 2 && started(&c)).then_some(w)
        });
        match settled {
            Some(_) => {}
            None => {
                let w = workers(&root);
                failures.push(format!(
                    "round {round}: after restart {} worker(s): {w:?}",
                    w.len()
                ));
            }
        }
    }
    node.stop();
    let summary = format!(
        "node: {rounds} kills, {survivors} services outlived their node, {} invariant failures",
        failures.len()
    );
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{summary}\n{}", failures.join("\n")))
    }
}

/// The producer's line `n` (what the sink must receive, byte for byte).
fn buffer_line(n: u64) -> String {
    format!(
        "{{\"n\":{n},\"v\":{}.25,\"pad\":\"{}\"}}",
        n % 89,
        "k".repeat(n as usize % 61)
    )
}

/// A `slapos-buffer` child: its input and metrics addresses.
struct BufferChild {
    child: std::process::Child,
    input: String,
    metrics: String,
}

impl BufferChild {
    fn start(conf: &Path) -> Result<BufferChild, String> {
        let mut child = Command::new(slapos_tests::bin("slapos-buffer"))
            .arg("--config")
            .arg(conf)
            .env("SLAPOS_BUFFER_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn slapos-buffer: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| format!("slapos-buffer stdout: {e}"))?;
        let ready: serde_json::Value = line
            .strip_prefix("READY ")
            .and_then(|j| serde_json::from_str(j.trim()).ok())
            .ok_or_else(|| format!("slapos-buffer did not become ready: {line:?}"))?;
        let field = |v: &serde_json::Value| v.as_str().map(str::to_owned).ok_or("no address");
        Ok(BufferChild {
            input: field(&ready["inputs"][0]["listen"])?,
            metrics: field(&ready["metrics"])?,
            child,
        })
    }

    fn status(&self) -> Option<serde_json::Value> {
        let mut r = ureq::get(format!("http://{}/status", self.metrics))
            .call()
            .ok()?;
        serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends lines `from..` over one connection until `stop` or the connection breaks; raises
/// `acked` with every `ok <k>` (the first k lines of this connection are durable) and `sent`
/// with every line written.
fn produce(addr: &str, from: u64, acked: &AtomicU64Pair, stop: &AtomicBool) {
    let Ok(s) = std::net::TcpStream::connect(addr) else {
        return;
    };
    let Ok(mut w) = s.try_clone() else { return };
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut n = from;
            while !stop.load(Ordering::SeqCst) {
                let mut buf = String::new();
                for k in n..n + 50 {
                    buf.push_str(&buffer_line(k));
                    buf.push('\n');
                }
                // Counted as sent before the write: a line half-written at the kill was sent.
                acked.sent.fetch_max(n + 49, Ordering::SeqCst);
                if w.write_all(buf.as_bytes()).is_err() {
                    return;
                }
                n += 50;
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        for l in BufReader::new(s).lines() {
            let Ok(l) = l else { break };
            if let Some(k) = l
                .strip_prefix("ok ")
                .and_then(|k| k.trim().parse::<u64>().ok())
            {
                acked.acked.fetch_max(from - 1 + k, Ordering::SeqCst);
            }
        }
        stop.store(true, Ordering::SeqCst);
    });
}

#[derive(Default)]
struct AtomicU64Pair {
    acked: std::sync::atomic::AtomicU64,
    sent: std::sync::atomic::AtomicU64,
}

/// An HTTP sink recording the `payload` of every NDJSON record it is sent (200 to each POST).
fn buffer_sink() -> (String, Arc<Mutex<Vec<String>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the sink");
    let url = format!("http://{}/ingest", l.local_addr().expect("sink address"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(mut w) = s.try_clone() else { continue };
            let mut r = BufReader::new(s);
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            {
                let mut g = g.lock().expect("sink lock");
                for rec in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let v: serde_json::Value = serde_json::from_slice(rec)
                        .unwrap_or_else(|_| json!({"payload": String::from_utf8_lossy(rec)}));
                    if v["kind"] == "data" || v.get("kind").is_none() {
                        g.push(v["payload"].as_str().unwrap_or("<no payload>").to_owned());
                    }
                }
            }
            let _ =
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn buffer_part(rounds: u64, dir: &Path, rng: &mut Rng) -> Result<String, String> {
    let (url, got) = buffer_sink();
    let conf = dir.join("buffer.toml");
    std::fs::write(
        &conf,
        format!(
            "node_id = \"kill9\"\n[storage]\ndir = \"{}\"\nstream = \"sensors\"\nbatch_window_ms = 5\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[[inputs]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:0\"\n\
             format = \"json\"\nack = true\n[output]\ntype = \"http\"\nurl = \"{url}\"\n\
             batch_records = 1000\nbackoff_base_ms = 20\nbackoff_max_ms = 200\n",
            dir.join("data").display()
        ),
    )
    .map_err(|e| format!("write {}: {e}", conf.display()))?;
    let counts = AtomicU64Pair::default();
    for _ in 0..rounds {
        let mut b = BufferChild::start(&conf)?;
        let stop = AtomicBool::new(false);
        let from = counts.acked.load(Ordering::SeqCst) + 1;
        let delay = Duration::from_millis(rng.range(50, 600));
        let input = b.input.clone();
        std::thread::scope(|sc| {
            sc.spawn(|| produce(&input, from, &counts, &stop));
            std::thread::sleep(delay);
            b.kill9();
            stop.store(true, Ordering::SeqCst);
        });
    }
    let b = BufferChild::start(&conf)?;
    let acked = counts.acked.load(Ordering::SeqCst);
    let sent = counts.sent.load(Ordering::SeqCst);
    let delivered = |got: &Mutex<Vec<String>>| -> BTreeSet<u64> {
        got.lock()
            .expect("sink lock")
            .iter()
            .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok()?["n"].as_u64())
            .collect()
    };
    // The whole backlog (every round's lines, resends included) goes out now: allow for a
    // debug build on a loaded machine.
    let all = wait_for_opt(Duration::from_secs(600), || {
        let d = delivered(&got);
        (1..=acked).all(|n| d.contains(&n)).then_some(())
    });
    let mut failures = Vec::new();
    if all.is_none() {
        let d = delivered(&got);
        let missing: Vec<u64> = (1..=acked).filter(|n| !d.contains(n)).take(10).collect();
        failures.push(format!(
            "acknowledged lines never delivered, first: {missing:?}"
        ));
    }
    let records = got.lock().expect("sink lock").clone();
    let distinct = records
        .iter()
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok()?["n"].as_u64())
        .collect::<BTreeSet<u64>>()
        .len();
    for p in &records {
        let n = serde_json::from_str::<serde_json::Value>(p)
            .ok()
            .and_then(|v| v["n"].as_u64());
        match n {
            Some(n) if n <= sent && *p == buffer_line(n) => {}
            _ => {
                failures.push(format!("delivered a record that was never sent: {p:?}"));
                break;
            }
        }
    }
    match b.status() {
        Some(st) => {
            for k in ["corrupt_records", "corrupt_headers"] {
                if st[k].as_u64() != Some(0) {
                    failures.push(format!("after the last restart {k} = {}", st[k]));
                }
            }
        }
        None => failures.push("no /status after the last restart".into()),
    }
    let mut b = b;
    b.kill9();
    let summary = format!(
        "buffer: {rounds} kills, {acked} lines acknowledged, {sent} sent, {} records delivered \
         ({} duplicates), {} invariant failures",
        records.len(),
        records.len() - distinct,
        failures.len()
    );
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{summary}\n{}", failures.join("\n")))
    }
}

fn wait_for_opt<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (part, rounds) = match args.as_slice() {
        [p] => (p.clone(), 100),
        [p, n] => (p.clone(), n.parse().unwrap_or(100)),
        _ => {
            eprintln!("usage: kill9-campaign master|node|buffer [ROUNDS]");
            std::process::exit(2);
        }
    };
    // On disk, not tmpfs: durability is what is being checked.
    let base = PathBuf::from("/var/tmp");
    let dir = tempfile::Builder::new()
        .prefix("kill9-")
        .tempdir_in(&base)
        .expect("campaign directory");
    let mut rng = Rng::new();
    let t = Instant::now();
    let result = match part.as_str() {
        "master" => master_part(rounds, dir.path(), &mut rng),
        "node" => node_part(rounds, dir.path(), &mut rng),
        "buffer" => buffer_part(rounds, dir.path(), &mut rng),
        other => Err(format!("unknown part {other:?}: master, node or buffer")),
    };
    match result {
        Ok(line) => println!("{line} ({:.0} s)", t.elapsed().as_secs_f64()),
        Err(e) => {
            println!("FAILED {e}");
            std::process::exit(1);
        }
    }
}
