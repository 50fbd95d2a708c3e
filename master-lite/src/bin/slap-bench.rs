//! `slap-bench`: master-lite against the real slapproxy, both driven through the classic SLAP
//! protocol by the **same client**, in one run, on the same machine, each with its database on
//! disk in a fresh temp dir.
//!
//! Two clients (`--client python|rust|both`, default `both`):
//!
//! * `python`: the real `slapos.slap` library (`slap-bench.py`, run with the venv's python): what
//!   slapos node/request really cost end to end, but its own per-call cost (≈1.2 ms: a new TCP
//!   connection per call, `requests`) caps any measurable ratio;
//! * `rust`: a near-zero-cost client in this process: one keep-alive ureq agent, form bodies and
//!   xml_marshaller payloads built and answers decoded with `slapos_proto::slap`, the same calls
//!   with the same fields as the Python driver (`OpenOrder.request`'s seven form fields,
//!   `Computer.updateConfiguration`'s `xml`, `Supply.supply`'s `url`/`computer_id`/`state`).
//!
//! For each server (`slapos proxy start --cfg F` from `.venv/slapos`, and `slapos-master serve
//! --cfg F`, the binary next to this one) the client times every call:
//!
//! * the client floor: a constant answer (`getComputerPartitionStatus`), no store access;
//! * registering a computer with `--partitions` partitions (`loadComputerConfigurationFromXML`,
//!   the payload `slapos node format` sends: 2 addresses, a tap and a user per partition), cold
//!   then 3 warm re-registrations;
//! * supplying the release to the computer, then `--requests` sequential new requests
//!   (`requestComputerPartition`, 2 parameters, `computer_guid`), each allocating a partition
//!   (200 with a marshalled `SoftwareInstance` checked, never a 404/408); then 20 identical
//!   re-requests;
//! * `getFullComputerInformation` (raw HTTP) with every partition busy, at `--partitions`, once
//!   more including the client's decoding (busy partitions counted), and, after re-formatting
//!   with `--big` partitions and requesting the rest, at `--big`;
//! * each server's peak RSS (`VmHWM` of `/proc/<pid>/status`) at the end.
//!
//! Context printed with the figures: the disk's cost of one durable one-row SQLite commit
//! (WAL, master-lite's setting, and the rollback journal of slapproxy's `sqlite3` connections;
//! sampled before, between and after the runs, pooled), the CPU cost of decoding the format
//! payload with the codec, and the request ratio a master-lite paying nothing but one WAL commit
//! per request would reach.
//!
//! `--rounds` (default 3) alternates the servers (and the clients), each run on fresh databases,
//! and pools the samples per client: the disk's fsync latency drifts with the machine's load,
//! and alternation keeps the drift out of the ratios. It prints both columns and
//! slapproxy/master-lite ratios per client, and which goals are met.
//! Reference: slapos-protocol.md §6.
//!
//! ```text
//! scripts/deps/slapos-venv.sh
//! cargo build --release -p master-lite --bins && target/release/slap-bench [--client rust] [--dir DIR]
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use slapos_proto::slap::{
    ComputerConfiguration, ComputerDoc, RequestForm, SoftwareInstanceDoc, Value, dumps, loads,
};

mod bench_util;
use bench_util::{cpu_secs, fs_type, loadavg, proc_status};

const DRIVER: &str = include_str!("slap-bench.py");
const COMPUTER: &str = "BENCH";
/// Pause between a server's start and the first timed call.
const SETTLE: Duration = Duration::from_millis(500);
/// The software release both drivers supply and request.
const SR: &str = "/srv/slap-bench/software.cfg";

/// Which client drives the servers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Client {
    /// The real `slapos.slap` library (`slap-bench.py`).
    Python,
    /// ureq keep-alive agent + `slapos_proto::slap`, in this process.
    Rust,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Python => "python",
            Client::Rust => "rust",
        }
    }
}

struct Args {
    dir: PathBuf,
    partitions: usize,
    requests: usize,
    big: usize,
    gets: usize,
    rounds: usize,
    venv: PathBuf,
    server: PathBuf,
    clients: Vec<Client>,
    /// Requesters of the concurrency phase (0: no such phase).
    concurrent: usize,
    /// New requests per concurrency phase (one requester, then `concurrent`).
    concurrent_requests: usize,
}

fn args() -> Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args {
        dir: std::env::temp_dir(),
        partitions: 100,
        requests: 100,
        big: 1000,
        gets: 20,
        rounds: 3,
        venv: Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/slapos/bin"),
        server: exe.with_file_name("slapos-master"),
        clients: vec![Client::Python, Client::Rust],
        concurrent: 32,
        concurrent_requests: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(val()?),
            "--partitions" => a.partitions = val()?.parse()?,
            "--requests" => a.requests = val()?.parse()?,
            "--big" => a.big = val()?.parse()?,
            "--gets" => a.gets = val()?.parse()?,
            "--rounds" => a.rounds = val()?.parse::<usize>()?.max(1),
            "--venv" => a.venv = PathBuf::from(val()?),
            "--server" => a.server = PathBuf::from(val()?),
            "--concurrent" => a.concurrent = val()?.parse()?,
            "--concurrent-requests" => a.concurrent_requests = val()?.parse::<usize>()?.max(1),
            "--client" => {
                a.clients = match val()?.as_str() {
                    "python" => vec![Client::Python],
                    "rust" => vec![Client::Rust],
                    "both" => vec![Client::Python, Client::Rust],
                    other => bail!("--client {other}: expected python, rust or both"),
                }
            }
            "-h" | "--help" => {
                println!(
                    "slap-bench [--dir DIR] [--partitions 100] [--requests 100] [--big 1000] \
                     [--gets 20] [--rounds 3] [--client python|rust|both (default both)] \
                     [--concurrent 32 (0: none)] [--concurrent-requests 500] \
                     [--venv .venv/slapos/bin] [--server target/release/slapos-master]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.requests > a.partitions {
        bail!("--requests must not exceed --partitions");
    }
    Ok(a)
}

/// A server process, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_cfg(dir: &Path, port: u16) -> Result<PathBuf> {
    let cfg = dir.join("slapos-proxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[slapos]\ncomputer_id = {COMPUTER}\n\n[slapproxy]\nhost = 127.0.0.1\nport = {port}\n\
             database_uri = {}\n",
            dir.join("proxy.db").display()
        ),
    )
    .with_context(|| format!("write {}", cfg.display()))?;
    Ok(cfg)
}

/// `slapos proxy start --cfg F` on a port that was free a moment ago (slapproxy cannot take 0).
fn start_slapproxy(venv: &Path, dir: &Path) -> Result<Server> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cfg = write_cfg(dir, port)?;
    let log = std::fs::File::create(dir.join("slapproxy.log"))?;
    let child = Command::new(venv.join("slapos"))
        .args(["proxy", "start", "--cfg"])
        .arg(&cfg)
        .current_dir(dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "start {} proxy (run scripts/deps/slapos-venv.sh)",
                venv.join("slapos").display()
            )
        })?;
    let mut server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "slapproxy exited ({status}); see {}",
                dir.join("slapproxy.log").display()
            );
        }
        if Instant::now() > deadline {
            bail!("slapproxy did not listen on {addr} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

/// `slapos-master serve --cfg F` on port 0; the first stdout line names the URL.
fn start_master_lite(bin: &Path, dir: &Path) -> Result<Server> {
    let cfg = write_cfg(dir, 0)?;
    let mut child = Command::new(bin)
        .args(["serve", "--cfg"])
        .arg(&cfg)
        .env("SLAPOS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "start {} (build it: cargo build --release -p master-lite --bins)",
                bin.display()
            )
        })?;
    let out = child.stdout.take().context("server stdout")?;
    let mut server = Server {
        child,
        url: String::new(),
    };
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    server.url = master_lite::listening_url(&line)
        .with_context(|| format!("unexpected server output {line:?}"))?
        .to_owned();
    Ok(server)
}

/// Per-phase call times (seconds) and sizes, as the driver prints them.
type Phases = BTreeMap<String, serde_json::Value>;

#[derive(Default)]
struct Run {
    phases: Phases,
    peak_rss_kb: Option<u64>,
}

impl Run {
    /// Append another round's samples; keep the highest peak RSS.
    fn pool(&mut self, other: Run) {
        for (k, v) in other.phases {
            match (self.phases.get_mut(&k), v) {
                (Some(serde_json::Value::Array(mine)), serde_json::Value::Array(more)) => {
                    mine.extend(more)
                }
                (_, v) => {
                    self.phases.insert(k, v);
                }
            }
        }
        self.peak_rss_kb = self.peak_rss_kb.max(other.peak_rss_kb);
    }
}

/// Drives `server` with `client`, then reads the server's peak RSS.
fn drive(a: &Args, client: Client, server: &Server) -> Result<Run> {
    // Let the server settle after it starts listening (slapproxy's first calls right after
    // start take ~3 ms instead of ~1): the Python driver's interpreter start gave it this time,
    // the in-process client would not.
    std::thread::sleep(SETTLE);
    let phases = match client {
        Client::Python => drive_python(a, server)?,
        Client::Rust => drive_rust(a, server)?,
    };
    let peak_rss_kb = proc_status(server.child.id(), "VmHWM")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok());
    Ok(Run {
        phases,
        peak_rss_kb,
    })
}

/// The real `slapos.slap` library: `slap-bench.py` with the venv's python prints the phases.
fn drive_python(a: &Args, server: &Server) -> Result<Phases> {
    let driver = std::env::temp_dir().join(format!("slap-bench-{}.py", std::process::id()));
    std::fs::write(&driver, DRIVER)?;
    let out = Command::new(a.venv.join("python"))
        .arg(&driver)
        .arg(&server.url)
        .arg(COMPUTER)
        .args([a.partitions, a.requests, a.big, a.gets].map(|n| n.to_string()))
        .stderr(Stdio::inherit())
        .output()
        .context("run the slap driver with the venv's python")?;
    let _ = std::fs::remove_file(&driver);
    if !out.status.success() {
        bail!("driver against {} failed ({})", server.url, out.status);
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "driver output {:?}",
            String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(300)
                .collect::<String>()
        )
    })
}

/// What `slapos node format` sends (`slap-bench.py`'s `payload`): 2 addresses, a tap and a user
/// per partition, marshalled as `slapos.util.dumps` does.
fn format_payload(n: usize) -> Result<String> {
    let partitions = (0..n)
        .map(|i| {
            Value::dict([
                ("reference", Value::str(format!("slappart{i}"))),
                ("path", Value::str(format!("/srv/slapgrid/slappart{i}"))),
                (
                    "address_list",
                    Value::List(vec![
                        Value::dict([
                            (
                                "addr",
                                format!("10.{}.{}.{}", i / 65536, i / 256 % 256, i % 256),
                            ),
                            ("netmask", "255.255.255.255".into()),
                        ]),
                        Value::dict([
                            ("addr", format!("fd00::{:x}", i + 1)),
                            ("netmask", "ffff:ffff:ffff:ffff::".into()),
                        ]),
                    ]),
                ),
                ("tap", Value::dict([("name", format!("slaptap{i}"))])),
                ("user", Value::dict([("name", format!("slapuser{i}"))])),
                ("external_storage_list", Value::List(Vec::new())),
            ])
        })
        .collect();
    let computer = Value::dict([
        ("reference", Value::str(COMPUTER)),
        ("address", Value::str("10.0.0.1")),
        ("netmask", Value::str("255.255.255.0")),
        ("instance_root", Value::str("/srv/slapgrid")),
        ("software_root", Value::str("/opt/slapgrid")),
        ("partition_list", Value::List(partitions)),
    ]);
    Ok(dumps(&computer)?)
}

/// `OpenOrder.request(SR, 'inst<i>', partition_parameter_kw={'p': 'v<i>', 'n': str(i)},
/// filter_kw={'computer_guid': COMPUTER})`: the seven form fields the Python client posts.
fn request_form(i: usize) -> Result<Vec<(&'static str, String)>> {
    let form = RequestForm {
        software_release: SR.into(),
        software_type: "default".into(),
        partition_reference: format!("inst{i}"),
        parameters: BTreeMap::from([
            ("p".into(), Value::str(format!("v{i}"))),
            ("n".into(), Value::str(i.to_string())),
        ]),
        filter: BTreeMap::from([("computer_guid".into(), Value::str(COMPUTER))]),
        state: None,
        shared: false,
        requester: None,
    };
    Ok(form.to_form()?)
}

/// Samples per phase (seconds per call) and sizes, in the Python driver's JSON shape.
#[derive(Default)]
struct Samples {
    times: BTreeMap<String, Vec<f64>>,
    sizes: BTreeMap<String, usize>,
}

impl Samples {
    fn timed<T>(&mut self, key: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let v = f()?;
        let dt = t.elapsed().as_secs_f64();
        self.times.entry(key.to_owned()).or_default().push(dt);
        Ok(v)
    }

    fn into_phases(self) -> Phases {
        let mut p: Phases = self
            .times
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::from(v)))
            .collect();
        p.extend(
            self.sizes
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::from(v))),
        );
        p
    }
}

/// The first characters of an answer, for error messages.
fn short(body: &str) -> String {
    body.chars().take(200).collect()
}

/// The Rust SLAP client: one keep-alive agent (`slapos_client::http_agent`: ureq, every status
/// handed back). Every answer must be a 200; requests must decode to a `SoftwareInstance` with a
/// partition (slapproxy answers 404 with no free partition and 408 for a not-ready resource).
struct Slap {
    base: String,
    agent: ureq::Agent,
}

impl Slap {
    fn new(url: &str) -> Result<Self> {
        let (base, agent) = slapos_client::http_agent(url, Duration::from_secs(600))?;
        Ok(Self { base, agent })
    }

    /// The body of a 200 answer, else an error with the status and the start of the body.
    fn answer(what: String, mut resp: ureq::http::Response<ureq::Body>) -> Result<String> {
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .with_context(|| format!("{what}: read the answer"))?;
        if status != 200 {
            bail!("{what}: {status} {}", short(&body));
        }
        Ok(body)
    }

    fn get(&self, route: &str, query: &[(&str, &str)]) -> Result<String> {
        let mut req = self.agent.get(format!("{}/{route}", self.base));
        for (k, v) in query {
            req = req.query(k, v);
        }
        let what = format!("GET {route}");
        let resp = req.call().with_context(|| what.clone())?;
        Self::answer(what, resp)
    }

    fn post(&self, route: &str, form: &[(&str, String)]) -> Result<String> {
        let what = format!("POST {route}");
        let resp = self
            .agent
            .post(format!("{}/{route}", self.base))
            .send_form(form.iter().map(|(k, v)| (*k, v.as_str())))
            .with_context(|| what.clone())?;
        Self::answer(what, resp)
    }

    fn register(&self, xml: &str) -> Result<String> {
        self.post("loadComputerConfigurationFromXML", &[("xml", xml.into())])
    }

    fn supply(&self) -> Result<String> {
        let supply = [
            ("url", SR.to_owned()),
            ("computer_id", COMPUTER.to_owned()),
            ("state", "available".to_owned()),
        ];
        self.post("supplySupply", &supply)
    }

    /// Request `inst<i>`; its partition.
    fn request(&self, i: usize) -> Result<String> {
        let body = self.post("requestComputerPartition", &request_form(i)?)?;
        let doc = SoftwareInstanceDoc::from_value(&loads(&body)?)
            .with_context(|| format!("request inst{i}: {}", short(&body)))?;
        match doc.str_attr("slap_computer_partition_id") {
            Some(p) => Ok(p.to_owned()),
            None => bail!("request inst{i}: no partition in {}", short(&body)),
        }
    }

    fn full_info(&self) -> Result<String> {
        self.get("getFullComputerInformation", &[("computer_id", COMPUTER)])
    }

    /// Partitions of the computer that are not destroyed (busy), as the client decodes them.
    fn busy(&self) -> Result<usize> {
        let doc = ComputerDoc::from_value(&loads(&self.full_info()?)?)?;
        Ok(doc
            .partition_list
            .iter()
            .filter(|p| p.requested_state.as_deref() != Some("destroyed"))
            .count())
    }

    /// A constant answer: the client's round trip with no store access.
    fn floor(&self) -> Result<String> {
        self.get(
            "getComputerPartitionStatus",
            &[
                ("computer_id", COMPUTER),
                ("computer_partition_id", "slappart0"),
            ],
        )
    }
}

/// The Rust client: the Python driver's calls, in the same order, over one keep-alive agent.
fn drive_rust(a: &Args, server: &Server) -> Result<Phases> {
    let c = Slap::new(&server.url)?;
    let register = |xml: &str| c.register(xml);
    let request = |i: usize| c.request(i).map(drop);
    let full_info = || c.full_info();
    let floor = || c.floor();

    let mut s = Samples::default();
    for _ in 0..20 {
        s.timed("floor", floor)?;
    }
    let body = format_payload(a.partitions)?;
    s.timed("register_cold", || register(&body))?;
    for _ in 0..3 {
        s.timed("register_warm", || register(&body))?;
    }
    s.timed("supply", || c.supply())?;
    for i in 0..a.requests {
        s.timed("request_new", || request(i))?;
    }
    for i in 0..a.requests.min(20) {
        s.timed("request_same", || request(i))?;
    }
    let mut size = 0;
    for _ in 0..a.gets {
        size = s
            .timed(&format!("full_info_{}", a.partitions), full_info)?
            .len();
    }
    s.sizes
        .insert(format!("full_info_{}_bytes", a.partitions), size);
    let busy = s.timed("full_info_client", || c.busy())?;
    if busy != a.requests {
        bail!("{busy} busy partitions, expected {}", a.requests);
    }
    if a.big > a.partitions {
        let body = format_payload(a.big)?;
        s.timed(&format!("register_{}", a.big), || register(&body))?;
        for i in a.requests..a.big {
            s.timed("request_new_big", || request(i))?;
        }
        for _ in 0..(a.gets / 5).max(3) {
            size = s.timed(&format!("full_info_{}", a.big), full_info)?.len();
        }
        s.sizes.insert(format!("full_info_{}_bytes", a.big), size);
    }
    Ok(s.into_phases())
}

/// One phase of new requests: `threads` requesters (one keep-alive client each) issue `n`
/// requests in all, `inst<first>` on.
struct Load {
    threads: usize,
    took: f64,
    /// Seconds per answered request, sorted.
    lat: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

impl Load {
    fn run(url: &str, threads: usize, first: usize, n: usize) -> Result<Load> {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let clients: Vec<Slap> = (0..threads)
            .map(|_| Slap::new(url))
            .collect::<Result<_>>()?;
        // Connections open before the clock starts.
        for c in &clients {
            c.floor()?;
        }
        let next = AtomicUsize::new(first);
        let lat = Mutex::new(Vec::with_capacity(n));
        let failed = Mutex::new((0, None));
        let t = Instant::now();
        std::thread::scope(|s| {
            for c in &clients {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= first + n {
                            break;
                        }
                        let t = Instant::now();
                        let r = c.request(i);
                        let dt = t.elapsed().as_secs_f64();
                        match r {
                            Ok(_) => lock(&lat).push(dt),
                            Err(e) => {
                                let mut f = lock(&failed);
                                f.0 += 1;
                                f.1.get_or_insert_with(|| format!("{e:#}"));
                            }
                        }
                    }
                });
            }
        });
        let took = t.elapsed().as_secs_f64();
        let mut lat = lat
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lat.sort_by(f64::total_cmp);
        let (errors, first_error) = failed
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Load {
            threads,
            took,
            lat,
            errors,
            first_error,
        })
    }

    fn rate(&self) -> f64 {
        self.lat.len() as f64 / self.took.max(1e-9)
    }

    fn print(&self, server: &str) {
        let show = |p| pct(&self.lat, p).map_or_else(|| "-".into(), ms);
        println!(
            "{server:<12} {:>3} requester(s): {:>7.0} req/s, latency p50 {:>9} p99 {:>9}, \
             errors {}",
            self.threads,
            self.rate(),
            show(50.0),
            show(99.0),
            self.errors
        );
        if let Some(e) = &self.first_error {
            println!("{server:<12}     first error: {}", short(e));
        }
    }
}

/// The concurrency phases on a fresh server: a computer with room for every request, the
/// release supplied, then [`Load`] with one requester and with `a.concurrent`; returns both and
/// how many acknowledged requests have no busy partition afterwards (given a partition another
/// request also got).
fn drive_concurrent(a: &Args, server: &Server) -> Result<(Load, Load, usize)> {
    std::thread::sleep(SETTLE);
    let k = a.concurrent_requests;
    let c = Slap::new(&server.url)?;
    c.register(&format_payload(2 * k + k / 4 + 1)?)?;
    c.supply()?;
    let one = Load::run(&server.url, 1, 0, k)?;
    let many = Load::run(&server.url, a.concurrent, k, k)?;
    let acked = one.lat.len() + many.lat.len();
    let lost = acked.saturating_sub(c.busy()?);
    Ok((one, many, lost))
}

/// Both servers under the same concurrent load, each on a fresh database; the master-lite
/// goals (issue 13: at least 5x the one-requester rate, p99 at most 20 ms).
fn concurrency(a: &Args, work: &Path) -> Result<()> {
    println!(
        "\nconcurrent new requests, classic route, rust client: {} requests with 1 requester, \
         then {} with {} requesters (one keep-alive connection each); load average {}",
        a.concurrent_requests,
        a.concurrent_requests,
        a.concurrent,
        loadavg()
    );
    let (pd, ld) = (work.join("conc-slapproxy"), work.join("conc-master-lite"));
    std::fs::create_dir_all(&pd)?;
    std::fs::create_dir_all(&ld)?;
    let proxy = start_slapproxy(&a.venv, &pd)?;
    let (p1, pn, plost) = drive_concurrent(a, &proxy)?;
    drop(proxy);
    let lite = start_master_lite(&a.server, &ld)?;
    let cpu0 = cpu_secs(lite.child.id());
    let (l1, ln, llost) = drive_concurrent(a, &lite)?;
    let cpu = cpu_secs(lite.child.id()) - cpu0;
    drop(lite);
    for (name, one, many, lost) in [
        ("slapproxy", &p1, &pn, plost),
        ("master-lite", &l1, &ln, llost),
    ] {
        one.print(name);
        many.print(name);
        println!(
            "{name:<12}     {}x the one-requester rate; acknowledged but lost (partition given \
             twice): {lost}",
            fmt_ratio(many.rate() / one.rate().max(1e-9))
        );
    }
    let answered = (l1.lat.len() + ln.lat.len()).max(1);
    println!(
        "master-lite CPU: {:.0} us per request over both phases ({:.2} s); load average {}",
        cpu / answered as f64 * 1e6,
        cpu,
        loadavg()
    );
    verdict(
        &format!("master-lite {} requesters vs 1 (rate)", a.concurrent),
        Some(ln.rate() / l1.rate().max(1e-9)),
        5.0,
    );
    let p99 = pct(&ln.lat, 99.0);
    let met = p99.is_some_and(|v| v <= 0.020) && ln.errors == 0 && llost == 0;
    println!(
        "goal master-lite {} requesters p99: <= 20 ms, measured {}: {}",
        a.concurrent,
        p99.map_or_else(|| "?".into(), ms),
        if met { "met" } else { "NOT met" }
    );
    Ok(())
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn fmt_ratio(r: f64) -> String {
    format!("{r:.2}")
}

fn times(r: &Run, key: &str) -> Vec<f64> {
    let mut v: Vec<f64> = r
        .phases
        .get(key)
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    v.sort_by(f64::total_cmp);
    v
}

/// Nearest-rank percentile of sorted values.
fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn ms(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.2} ms", s * 1000.0)
    }
}

/// One row: both figures and slapproxy / master-lite (how many times master-lite is better).
fn row(what: &str, proxy: Option<f64>, lite: Option<f64>, fmt: fn(f64) -> String) -> Option<f64> {
    let show = |v: Option<f64>| v.map_or_else(|| "-".into(), fmt);
    let ratio = match (proxy, lite) {
        (Some(p), Some(l)) if l > 0.0 => Some(p / l),
        _ => None,
    };
    println!(
        "{what:<44} {:>12} {:>12} {:>9}",
        show(proxy),
        show(lite),
        ratio.map_or_else(|| "-".into(), |r| format!("{r:.1}x"))
    );
    ratio
}

fn verdict(what: &str, ratio: Option<f64>, goal: f64) {
    let got = ratio.map_or_else(|| "?".into(), |r| format!("{r:.2}x"));
    let met = if ratio.is_some_and(|r| r >= goal) {
        "met"
    } else {
        "NOT met"
    };
    println!("goal {what}: >= {goal}x, measured {got}: {met}");
}

/// Median cost of a one-row autocommit INSERT on a fresh database in `dir`, `synchronous =
/// FULL`, with the given journal mode, 1 ms apart (calls leave the disk idle in between too):
/// `WAL` is master-lite's setting (one fsync of the WAL per commit), `DELETE` the default of
/// slapproxy's `sqlite3` connections (journal and database fsynced, journal unlinked).
fn commit_cost(dir: &Path, journal: &str, n: usize) -> Result<Vec<f64>> {
    let path = dir.join(format!("anchor-{journal}.db"));
    let conn = rusqlite::Connection::open(&path)?;
    let _: String = conn.query_row(&format!("PRAGMA journal_mode = {journal}"), [], |r| {
        r.get(0)
    })?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")?;
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        std::thread::sleep(Duration::from_millis(1));
        let t = Instant::now();
        conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("row {i}")])?;
        v.push(t.elapsed().as_secs_f64());
    }
    drop(conn);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(v)
}

/// The disk's cost of one durable commit, both ways (seconds), sampled before, between and
/// after the runs: the disk of a shared VM switches between regimes within minutes.
#[derive(Default)]
struct Anchor {
    wal: Vec<f64>,
    delete: Vec<f64>,
}

impl Anchor {
    /// Takes `n` samples of each kind, prints their medians, pools them.
    fn sample(&mut self, dir: &Path, when: &str, n: usize) -> Result<()> {
        let med = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            pct(&v, 50.0).unwrap_or(0.0)
        };
        let (wal, delete) = (commit_cost(dir, "WAL", n)?, commit_cost(dir, "DELETE", n)?);
        println!(
            "disk anchor {when}: one-row commit, synchronous FULL, median of {n}: WAL \
             (master-lite) {}, rollback journal (slapproxy's sqlite3 default) {}",
            ms(med(wal.clone())),
            ms(med(delete.clone()))
        );
        self.wal.extend(wal);
        self.delete.extend(delete);
        Ok(())
    }

    /// Pooled medians (WAL, rollback journal).
    fn medians(&self) -> (f64, f64) {
        let med = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            pct(&v, 50.0).unwrap_or(0.0)
        };
        (med(&self.wal), med(&self.delete))
    }
}

fn main() -> Result<()> {
    let a = args()?;
    let work = a.dir.join(format!("slap-bench-{}", std::process::id()));
    let result = run(&a, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run(a: &Args, work: &Path) -> Result<()> {
    let (pdir, ldir) = (work.join("slapproxy"), work.join("master-lite"));
    std::fs::create_dir_all(&pdir).with_context(|| format!("create {}", pdir.display()))?;
    std::fs::create_dir_all(&ldir).with_context(|| format!("create {}", ldir.display()))?;
    println!(
        "slap-bench: databases in {} ({}); load average {}",
        work.display(),
        fs_type(work),
        loadavg()
    );
    for c in &a.clients {
        match c {
            Client::Python => println!(
                "client python: slapos.slap from {} (one new TCP connection per call, as the \
                 real client)",
                a.venv.display()
            ),
            Client::Rust => println!(
                "client rust: ureq keep-alive agent + slapos_proto::slap codec, in process"
            ),
        }
    }

    // Rounds alternate the two servers (A B A B …), and within a round the clients, each run
    // on a fresh database, so a change in the machine's disk or CPU load during the run
    // affects both columns alike; every sample of every round is pooled per client and phase.
    // What decoding a registration costs with the codec master-lite uses (CPU only): the
    // part of master-lite's registration time that is not SQL, HTTP or the commit.
    let payload = format_payload(a.partitions)?;
    let mut decode = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        ComputerConfiguration::from_value(loads(&payload)?)?;
        decode.push(t.elapsed().as_secs_f64());
    }
    decode.sort_by(f64::total_cmp);
    println!(
        "codec: decoding the {}-partition format payload ({} kB) with slapos_proto::slap, median \
         of 20: {}",
        a.partitions,
        payload.len() / 1000,
        pct(&decode, 50.0).map_or_else(|| "-".into(), ms)
    );
    let mut disk = Anchor::default();
    disk.sample(work, "before", 50)?;
    let mut runs: BTreeMap<Client, (Run, Run)> = BTreeMap::new();
    for round in 1..=a.rounds {
        for &client in &a.clients {
            let tag = format!("{round}-{}", client.name());
            let (pd, ld) = (pdir.join(&tag), ldir.join(&tag));
            std::fs::create_dir_all(&pd)?;
            std::fs::create_dir_all(&ld)?;
            let (p, l) = runs.entry(client).or_default();
            disk.sample(work, "between", 20)?;
            let proxy = start_slapproxy(&a.venv, &pd)?;
            println!(
                "round {round}, client {}: slapproxy   {} (pid {})",
                client.name(),
                proxy.url,
                proxy.child.id()
            );
            p.pool(drive(a, client, &proxy)?);
            drop(proxy);
            disk.sample(work, "between", 20)?;
            let lite = start_master_lite(&a.server, &ld)?;
            println!(
                "round {round}, client {}: master-lite {} (pid {})",
                client.name(),
                lite.url,
                lite.child.id()
            );
            l.pool(drive(a, client, &lite)?);
            drop(lite);
            println!("load average: {}", loadavg());
        }
    }
    disk.sample(work, "after", 50)?;
    let (wal, delete) = disk.medians();
    println!(
        "\ndisk anchor, all samples pooled: WAL (master-lite) {}, rollback journal (slapproxy) {}",
        ms(wal),
        ms(delete)
    );
    for (client, (p, l)) in runs {
        report(a, client, p, l, wal);
    }
    if a.concurrent > 0 {
        concurrency(a, work)?;
    }
    Ok(())
}

/// Both columns, the ratios and the goals, for one client.
///
/// `wal`: the pooled WAL commit anchor; a new request on master-lite pays at least one such commit, so
/// slapproxy's median divided by it is the request ratio a master-lite with no CPU or HTTP cost
/// (and the same durability) could show; adding the client floor (master-lite's constant-answer
/// round trip through the same client) gives the ratio a server doing nothing but that commit
/// could show.
fn report(a: &Args, client: Client, p: Run, l: Run, wal: f64) {
    println!("\nclient {}:", client.name());
    println!(
        "\n{:<44} {:>12} {:>12} {:>9}",
        format!("metric ({} rounds pooled, per call)", a.rounds),
        "slapproxy",
        "master-lite",
        "ratio"
    );
    let med = |r: &Run, k: &str| pct(&times(r, k), 50.0);
    let p95 = |r: &Run, k: &str| pct(&times(r, k), 95.0);
    let (n, big) = (a.partitions, a.big);
    row(
        "client floor (constant answer), median",
        med(&p, "floor"),
        med(&l, "floor"),
        ms,
    );
    let reg = row(
        &format!("register {n} partitions, cold, median"),
        med(&p, "register_cold"),
        med(&l, "register_cold"),
        ms,
    );
    let reg_warm = row(
        &format!("register {n} partitions, warm, median"),
        med(&p, "register_warm"),
        med(&l, "register_warm"),
        ms,
    );
    row("supply", med(&p, "supply"), med(&l, "supply"), ms);
    let req = row(
        &format!("request new ({}), median", a.requests),
        med(&p, "request_new"),
        med(&l, "request_new"),
        ms,
    );
    row(
        "request new, p95",
        p95(&p, "request_new"),
        p95(&l, "request_new"),
        ms,
    );
    row(
        "re-request unchanged, median",
        med(&p, "request_same"),
        med(&l, "request_same"),
        ms,
    );
    let key = format!("full_info_{n}");
    row(
        &format!("getFullComputerInformation {n} busy, median"),
        med(&p, &key),
        med(&l, &key),
        ms,
    );
    row(
        &format!("  same, p95 ({} calls)", a.gets),
        p95(&p, &key),
        p95(&l, &key),
        ms,
    );
    row(
        &format!("  same, incl. client unmarshal ({n})"),
        med(&p, "full_info_client"),
        med(&l, "full_info_client"),
        ms,
    );
    if big > n {
        row(
            &format!("register {big} partitions (re-format)"),
            med(&p, &format!("register_{big}")),
            med(&l, &format!("register_{big}")),
            ms,
        );
        row(
            &format!("request new on {big} partitions, median"),
            med(&p, "request_new_big"),
            med(&l, "request_new_big"),
            ms,
        );
        let key = format!("full_info_{big}");
        row(
            &format!("getFullComputerInformation {big} busy, median"),
            med(&p, &key),
            med(&l, &key),
            ms,
        );
    }
    let bytes = |r: &Run, k: &str| r.phases.get(k).and_then(|v| v.as_f64());
    row(
        &format!("full information size, {n} busy"),
        bytes(&p, &format!("full_info_{n}_bytes")),
        bytes(&l, &format!("full_info_{n}_bytes")),
        |b| format!("{:.0} kB", b / 1000.0),
    );
    let rss = row(
        "peak RSS (VmHWM)",
        p.peak_rss_kb.map(|k| k as f64),
        l.peak_rss_kb.map(|k| k as f64),
        |k| format!("{:.1} MB", k / 1024.0),
    );
    println!();
    verdict("requests (new, median)", req, 40.0);
    verdict("registration (cold)", reg, 100.0);
    verdict("registration (warm)", reg_warm, 100.0);
    verdict("memory (peak RSS, slapproxy / master-lite)", rss, 3.0);
    if let Some(proxy) = med(&p, "request_new") {
        println!(
            "ceiling for requests with one durable commit each (slapproxy median / WAL commit \
             anchor {}): {:.1}x",
            ms(wal),
            proxy / wal
        );
        if let Some(floor) = med(&l, "floor") {
            // The same client's round trip to master-lite answering a constant: no request can
            // cost less, whatever the server does.
            println!(
                "ceiling for requests with no server work at all (slapproxy median / master-lite \
                 client floor {}): {:.1}x; with the floor and one durable commit: {:.1}x",
                ms(floor),
                proxy / floor,
                proxy / (floor + wal)
            );
        }
    }
    if let (Some(req), Some(floor)) = (med(&l, "request_new"), med(&l, "floor")) {
        // Issue 13: one requester's new request costs at most 1.5x the floor: the same
        // client's constant-answer round trip plus one durable WAL commit, both measured here.
        let anchor = floor + wal;
        let met = req <= 1.5 * anchor;
        println!(
            "goal master-lite request latency, one requester (median): <= 1.5x the floor \
             (client floor {} + WAL commit {} = {}), measured {} = {:.2}x: {}",
            ms(floor),
            ms(wal),
            ms(anchor),
            ms(req),
            req / anchor,
            if met { "met" } else { "NOT met" }
        );
    }
}
