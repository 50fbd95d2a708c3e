//! Whole-system benchmark of the foundation (issue 2), with its anchors measured in the same run.
//!
//! ```sh
//! cargo build --release --bins -p master-lite -p node-edge -p slapos-tests
//! target/release/system-bench [--requests 10] [--partitions 100]
//! ```
//!
//! Prints:
//! * idle RSS of `slapos-node run` (registered, long-polling, no instance);
//! * `request` → service answering, through `slapos-master standalone` (the hello-web example:
//!   python3 http.server), first request including the install, then the median of N requests of
//!   an installed release; anchor: the same server started by hand until it answers;
//! * 100 partitions converging to `started` (the `flaky` example: a shell worker and a promise)
//!   with a real master and node; anchor: spawning the same 100 workers by hand.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use slapos_proto::{
    ComputerId, InstanceRequest, InstanceState, InstanceTitle, SoftwareType, SoftwareUrl,
    SupplyRequest, SupplyState,
};
use slapos_tests::{Client, Master, Node, Proc, http_get, repo_root, url_in, wait_for};

const LONG: Duration = Duration::from_secs(300);

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn release(name: &str) -> SoftwareUrl {
    let p = repo_root()
        .join("examples")
        .join(name)
        .join("software.toml");
    SoftwareUrl::parse(p.to_string_lossy().into_owned()).expect("release url")
}

fn request(c: &Client, title: &str, url: &SoftwareUrl, params: serde_json::Value) {
    c.request(&InstanceRequest {
        title: InstanceTitle::parse(title).expect("title"),
        software_url: url.clone(),
        software_type: SoftwareType::default(),
        parameters: params.as_object().cloned().unwrap_or_default(),
        sla: BTreeMap::new(),
        state: None,
        shared: false,
    })
    .expect("request");
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn main() {
    let requests = arg("--requests", 10);
    let partitions = arg("--partitions", 100);
    let tmp = tempfile::tempdir().expect("tempdir");
    println!(
        "system-bench: binaries from {}",
        slapos_tests::bin_dir().display()
    );
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", l.trim());
    }

    // --- idle RSS of the node -----------------------------------------------------------------
    {
        let master = Master::start(&tmp.path().join("idle.db"));
        let node = Node::start(&tmp.path().join("idle-node"), &master.url, "IDLE", 4);
        let c = master.client();
        wait_for("idle node registered", LONG, || {
            c.computer(&ComputerId::parse("IDLE").ok()?).ok()
        });
        std::thread::sleep(Duration::from_secs(3));
        let pid = node.proc.as_ref().map(Proc::pid).unwrap_or(0);
        println!(
            "node idle (4 partitions, registered, long-polling): VmRSS {} KiB, VmHWM {} KiB",
            status_kb(pid, "VmRSS:"),
            status_kb(pid, "VmHWM:")
        );
    }

    // --- request → answering, standalone ------------------------------------------------------
    {
        let dir = tmp.path().join("box");
        let mut cmd = Command::new(slapos_tests::bin("slapos-master"));
        cmd.args(["standalone", "--listen", "127.0.0.1:0", "--partitions"])
            .arg((requests + 2).to_string())
            .args(["--isolation", "none"])
            .arg("--dir")
            .arg(&dir);
        let sa = Proc::spawn("standalone", cmd);
        let url = url_in(&sa.wait_line("listening on http://", LONG)).expect("url");
        let c = Client::new(&url).expect("client");
        let local = ComputerId::parse("local").expect("id");
        wait_for("local node registered", LONG, || c.computer(&local).ok());
        let hello = release("hello-web");
        c.supply(
            &local,
            &SupplyRequest {
                url: hello.clone(),
                state: SupplyState::Available,
            },
        )
        .expect("supply");
        let time_one = |title: &str| -> Duration {
            let t0 = Instant::now();
            request(&c, title, &hello, json!({"title": title}));
            let t = InstanceTitle::parse(title).expect("title");
            let u = wait_for("connection url", LONG, || {
                let i = c.instance(&t, None).ok()?;
                i.connection.get("url")?.as_str().map(str::to_owned)
            });
            wait_for("page answers", LONG, || {
                http_get(&u).filter(|p| p.contains(title))
            });
            t0.elapsed()
        };
        let first = time_one("first");
        let times: Vec<Duration> = (0..requests)
            .map(|i| time_one(&format!("web-{i}")))
            .collect();
        println!(
            "standalone request → service answering: first (includes install) {}; installed release, median of {requests}: {} (min {}, max {})",
            ms(first),
            ms(median(times.clone())),
            ms(*times.iter().min().expect("times")),
            ms(*times.iter().max().expect("times"))
        );
        println!(
            "standalone process VmHWM after {} instances: {} KiB",
            requests + 1,
            status_kb(sa.pid(), "VmHWM:")
        );
        // Anchor: the same server started by hand, until it answers.
        let sw = dir.join("software").join(hello.hash());
        let www = tmp.path().join("www");
        std::fs::create_dir_all(&www).expect("www");
        std::fs::write(www.join("index.html"), "anchor").expect("index");
        let anchors: Vec<Duration> = (0..requests)
            .map(|_| {
                let port = free_port();
                let t0 = Instant::now();
                let mut child = Command::new("python3")
                    .arg(sw.join("server.py"))
                    .args([
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        &port.to_string(),
                        "--directory",
                    ])
                    .arg(&www)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn anchor server");
                wait_for("anchor answers", LONG, || {
                    http_get(&format!("http://127.0.0.1:{port}/"))
                });
                let d = t0.elapsed();
                let _ = child.kill();
                let _ = child.wait();
                d
            })
            .collect();
        println!(
            "anchor: the same server started by hand → answering, median of {requests}: {}",
            ms(median(anchors))
        );
    }

    // --- N partitions converging --------------------------------------------------------------
    {
        let master = Master::start(&tmp.path().join("many.db"));
        let node = Node::start(
            &tmp.path().join("many-node"),
            &master.url,
            "MANY",
            u16::try_from(partitions).expect("partitions"),
        );
        let c = master.client();
        let id = ComputerId::parse("MANY").expect("id");
        wait_for("node registered", LONG, || c.computer(&id).ok());
        let flaky = release("flaky");
        c.supply(
            &id,
            &SupplyRequest {
                url: flaky.clone(),
                state: SupplyState::Available,
            },
        )
        .expect("supply");
        // Install first, so the figure is convergence, not the build.
        request(&c, "warm", &flaky, json!({}));
        wait_for("warm-up instance started", LONG, || {
            let i = c.instance(&InstanceTitle::parse("warm").ok()?, None).ok()?;
            (i.reported?.report.state == InstanceState::Started).then_some(())
        });
        let n = partitions - 1;
        let t0 = Instant::now();
        for i in 0..n {
            request(
                &c,
                &format!("p{i}"),
                &flaky,
                json!({"promise_period": "60"}),
            );
        }
        let sent = t0.elapsed();
        wait_for("all partitions started", LONG, || {
            let all = c.instances().ok()?;
            let done = all
                .iter()
                .filter(|i| {
                    i.reported.as_ref().is_some_and(|r| {
                        r.report.state == InstanceState::Started && r.report.revision == i.revision
                    })
                })
                .count();
            (done > n).then_some(())
        });
        let total = t0.elapsed();
        let pid = node.proc.as_ref().map(Proc::pid).unwrap_or(0);
        println!(
            "{n} partitions requested ({} to send) → all reported started with promises run: {} ; node VmHWM {} KiB",
            ms(sent),
            ms(total),
            status_kb(pid, "VmHWM:")
        );
        // Anchor: start the same workers by hand and wait until each wrote its heartbeat.
        let sw = node_software_dir(&node, &flaky);
        let hb = tmp.path().join("hb");
        std::fs::create_dir_all(&hb).expect("hb dir");
        let t0 = Instant::now();
        let mut children: Vec<_> = (0..n)
            .map(|i| {
                Command::new(sw.join("flaky.sh"))
                    .arg(hb.join(format!("hb{i}")))
                    .env("CRASH", "false")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn worker")
            })
            .collect();
        wait_for("anchor heartbeats", LONG, || {
            (0..n)
                .all(|i| hb.join(format!("hb{i}")).exists())
                .then_some(())
        });
        println!(
            "anchor: the same {n} workers spawned by hand → all alive: {}",
            ms(t0.elapsed())
        );
        for ch in &mut children {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }
}

fn node_software_dir(node: &Node, url: &SoftwareUrl) -> std::path::PathBuf {
    node.config
        .parent()
        .expect("node dir")
        .join("software")
        .join(url.hash())
}
