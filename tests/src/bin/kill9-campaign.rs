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
//! Prints one summary line per part; exits 1 if any invariant failed.

use std::collections::BTreeMap;
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
            eprintln!("usage: kill9-campaign master|node [ROUNDS]");
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
        other => Err(format!("unknown part {other:?}: master or node")),
    };
    match result {
        Ok(line) => println!("{line} ({:.0} s)", t.elapsed().as_secs_f64()),
        Err(e) => {
            println!("FAILED {e}");
            std::process::exit(1);
        }
    }
}
