//! `slap-bench`: master-lite against the real slapproxy, both driven through the classic SLAP
//! protocol by the **same client** (the real `slapos.slap` library, `slap-bench.py`), in one run,
//! on the same machine, each with its database on disk in a fresh temp dir.
//!
//! For each server (`slapos proxy start --cfg F` from `.venv/slapos`, and `slapos-master serve
//! --cfg F`, the binary next to this one) the driver times every call:
//!
//! * the client floor: a constant answer (`getComputerPartitionStatus`), no store access;
//! * registering a computer with `--partitions` partitions (`Computer.updateConfiguration`, the
//!   payload `slapos node format` sends: 2 addresses, a tap and a user per partition), cold then
//!   3 warm re-registrations;
//! * `--requests` sequential new requests (`OpenOrder.request`, 2 parameters, `computer_guid`),
//!   each allocating a partition; then 20 identical re-requests;
//! * `getFullComputerInformation` (raw HTTP through the library's connection helper) with every
//!   partition busy, at `--partitions` and, after re-formatting with `--big` partitions and
//!   requesting the rest, at `--big`;
//! * each server's peak RSS (`VmHWM` of `/proc/<pid>/status`) at the end.
//!
//! `--rounds` (default 3) alternates the servers, each round on fresh databases, and pools the
//! samples: the disk's fsync latency drifts with the machine's load, and alternation keeps the
//! drift out of the ratios. It prints both columns and slapproxy/master-lite ratios.
//! Reference: slapos-protocol.md §6.
//!
//! ```text
//! scripts/deps/slapos-venv.sh
//! cargo build --release -p master-lite --bins && target/release/slap-bench [--dir DIR]
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod bench_util;
use bench_util::{fs_type, loadavg, proc_status};

const DRIVER: &str = include_str!("slap-bench.py");
const COMPUTER: &str = "BENCH";

struct Args {
    dir: PathBuf,
    partitions: usize,
    requests: usize,
    big: usize,
    gets: usize,
    rounds: usize,
    venv: PathBuf,
    server: PathBuf,
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
            "-h" | "--help" => {
                println!(
                    "slap-bench [--dir DIR] [--partitions 100] [--requests 100] [--big 1000] \
                     [--gets 20] [--rounds 3] [--venv .venv/slapos/bin] [--server target/release/slapos-master]"
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

fn drive(a: &Args, server: &Server) -> Result<Run> {
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
    let phases: Phases = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "driver output {:?}",
            String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(300)
                .collect::<String>()
        )
    })?;
    let peak_rss_kb = proc_status(server.child.id(), "VmHWM")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok());
    Ok(Run {
        phases,
        peak_rss_kb,
    })
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
    let got = ratio.map_or_else(|| "?".into(), |r| format!("{r:.1}x"));
    let met = if ratio.is_some_and(|r| r >= goal) {
        "met"
    } else {
        "NOT met"
    };
    println!("goal {what}: >= {goal}x, measured {got}: {met}");
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
    println!(
        "client: slapos.slap from {} (one new TCP connection per call, as the real client)",
        a.venv.display()
    );

    // Rounds alternate the two servers (A B A B …), each on a fresh database, so a change in
    // the machine's disk or CPU load during the run affects both columns alike; every sample
    // of every round is pooled per phase.
    let (mut p, mut l) = (Run::default(), Run::default());
    for round in 1..=a.rounds {
        let (pd, ld) = (pdir.join(round.to_string()), ldir.join(round.to_string()));
        std::fs::create_dir_all(&pd)?;
        std::fs::create_dir_all(&ld)?;
        let proxy = start_slapproxy(&a.venv, &pd)?;
        println!(
            "round {round}: slapproxy   {} (pid {})",
            proxy.url,
            proxy.child.id()
        );
        p.pool(drive(a, &proxy)?);
        drop(proxy);
        let lite = start_master_lite(&a.server, &ld)?;
        println!(
            "round {round}: master-lite {} (pid {})",
            lite.url,
            lite.child.id()
        );
        l.pool(drive(a, &lite)?);
        drop(lite);
        println!("load average: {}", loadavg());
    }

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
    Ok(())
}
