//! Node benchmark (prints figures; `harness = false`):
//!
//! 1. time for N partitions (default 100) to converge: one desired-state change assigns a
//!    trivial instance (one `sleep` service, one `true` promise) to every partition of an
//!    in-process node; measured until the fake master holds a `started` report with its promise
//!    ok for every partition; for `max_instance_passes` 2 (default) and 8;
//! 2. idle RSS of the `slapos-node run` binary next to this bench's executable's profile
//!    (`target/release/slapos-node`, build it first) registered with the fake master, 3
//!    partitions, after 5 s;
//! 3. the cost of usage sampling: the same binary with N partitions (`NODE_BENCH_USAGE_PARTITIONS`,
//!    default 20) each running the trivial instance, `usage_period = 1` against `0` in the
//!    same run: CPU time (utime + stime) of the node process over `NODE_BENCH_USAGE_SECS`
//!    (default 20) seconds once every partition is started, and its VmHWM / VmRSS.
//!
//! ```sh
//! cargo build --release -p node-edge --bin slapos-node
//! cargo bench -p node-edge --bench converge            # N=100
//! NODE_BENCH_PARTITIONS=20 cargo bench -p node-edge --bench converge
//! ```
//!
//! No anchor figure: SlapOS's own node (slapgrid + buildout) is not installed here.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{FakeMaster, assignment};
use node_edge::Config;
use slapos_proto::{ComputerId, InstanceState};

const PROFILE: &str = r#"[[service]]
name = "idle"
command = ["sleep", "3600"]
[[promise]]
name = "ok"
command = ["true"]
[connection]
partition = {{ partition.id | toml }}
"#;

/// Supply release `sr` and assign its instance to every partition.
fn assign_all(m: &FakeMaster, sr: &str) {
    m.update(|dstate| {
        dstate.software.push(slapos_proto::DesiredSoftware {
            url: slapos_proto::SoftwareUrl::parse(sr.to_owned()).unwrap(),
            state: slapos_proto::SupplyState::Available,
        });
        for (i, p) in dstate.partitions.iter_mut().enumerate() {
            p.instance = Some(assignment(&format!("inst{i}"), sr, serde_json::json!({})));
        }
    });
}

fn converge(n: u32, passes: usize) -> (Duration, Duration) {
    let d = tempfile::tempdir().unwrap();
    let sr = common::write_release(&d.path().join("sr"), PROFILE);
    let m = FakeMaster::start("BENCH", n);
    let mut cfg = Config::new(
        m.url.clone(),
        ComputerId::parse("BENCH").unwrap(),
        n,
        d.path().join("soft"),
        d.path().join("inst"),
    );
    cfg.state_dir = Some(d.path().join("state"));
    cfg.isolation = node_edge::IsolationMode::None;
    cfg.max_instance_passes = passes;
    cfg.poll_interval = Duration::from_secs(1);
    cfg.ports.per_partition = 1;
    cfg.ports.base = common::free_block(n as u16);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let node = tokio::spawn(node_edge::run(cfg, async move {
            let _ = rx.await;
        }));
        common::until(30, "registration", || {
            m.with(|s| s.registrations.first().map(drop))
        })
        .await;
        let t0 = Instant::now();
        assign_all(&m, &sr);
        let first = common::until(120, "first partition", || {
            m.with(|s| (!s.reports.is_empty()).then(|| t0.elapsed()))
        })
        .await;
        let all = common::until(600, "every partition started", || {
            let done = (0..n).all(|i| {
                m.last_report(&format!("slappart{i}")).is_some_and(|r| {
                    r.state == InstanceState::Started && r.promises.iter().all(|p| p.ok)
                })
            });
            done.then(|| t0.elapsed())
        })
        .await;
        let _ = stop.send(());
        node.await.unwrap().unwrap();
        (first, all)
    })
}

/// The `slapos-node` binary of this bench's profile, when built (`what` is skipped otherwise).
fn node_bin(what: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/release/deps/converge-… → target/release/slapos-node
    let bin = exe.parent()?.parent()?.join("slapos-node");
    if !bin.exists() {
        println!("{what}: skipped, {} not built", bin.display());
        return None;
    }
    Some(bin)
}

/// `slapos-node run --config cfg`, its logs discarded.
fn run_node(bin: &std::path::Path, cfg: &std::path::Path) -> Option<std::process::Child> {
    std::process::Command::new(bin)
        .args(["run", "--config"])
        .arg(cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
}

/// SIGTERM (the node stops its services), then wait.
fn stop_node(child: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

fn idle_rss() -> Option<u64> {
    let bin = node_bin("idle RSS")?;
    let d = tempfile::tempdir().unwrap();
    let m = FakeMaster::start("IDLE", 3);
    let cfg = d.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "master_url = \"{}\"\ncomputer_id = \"IDLE\"\npartitions = 3\nsoftware_root = \"soft\"\ninstance_root = \"inst\"\n[ports]\nbase = {}\nper_partition = 1\n",
            m.url,
            common::free_block(3)
        ),
    )
    .unwrap();
    let mut child = run_node(&bin, &cfg)?;
    std::thread::sleep(Duration::from_secs(5));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok());
    let registered = m.with(|s| !s.registrations.is_empty());
    stop_node(&mut child);
    if !registered {
        println!("idle RSS: the node did not register");
    }
    kib
}

/// `(utime + stime)` of `pid` in clock ticks, `VmHWM` and `VmRSS` in KiB.
fn proc_figures(pid: u32) -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based) → 0-based 11, 12.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((ticks, kib("VmHWM:")?, kib("VmRSS:")?))
}

/// The node binary with `n` started partitions and `usage_period`: CPU ms over `secs`,
/// VmHWM and VmRSS (KiB), samples the master received.
fn usage_cost(n: u32, period: &str, secs: u64) -> Option<(f64, u64, u64, usize)> {
    let bin = node_bin("usage cost")?;
    let d = tempfile::tempdir().unwrap();
    let sr = common::write_release(&d.path().join("sr"), PROFILE);
    let m = FakeMaster::start("USAGE", n);
    let cfg = d.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "master_url = \"{}\"\ncomputer_id = \"USAGE\"\npartitions = {n}\nsoftware_root = \"soft\"\n\
             instance_root = \"inst\"\nisolation = \"none\"\npoll_interval = 1\nmax_instance_passes = 8\n\
             usage_period = {period}\n[ports]\nbase = {}\nper_partition = 1\n",
            m.url,
            common::free_block(n as u16)
        ),
    )
    .unwrap();
    let mut child = run_node(&bin, &cfg)?;
    let started = (|| {
        let t0 = Instant::now();
        while m.with(|s| s.registrations.is_empty()) {
            std::thread::sleep(Duration::from_millis(50));
            if t0.elapsed() > Duration::from_secs(30) {
                return false;
            }
        }
        assign_all(&m, &sr);
        while m.with(|s| {
            let up: std::collections::BTreeSet<&str> = s
                .reports
                .iter()
                .filter(|(_, r)| r.state == InstanceState::Started)
                .map(|(p, _)| p.as_str())
                .collect();
            up.len() < n as usize
        }) {
            std::thread::sleep(Duration::from_millis(100));
            if t0.elapsed() > Duration::from_secs(120) {
                return false;
            }
        }
        true
    })();
    let res = if started {
        let a = proc_figures(child.id());
        std::thread::sleep(Duration::from_secs(secs));
        let b = proc_figures(child.id());
        a.zip(b).map(|((t0, _, _), (t1, hwm, rss))| {
            // USER_HZ is 100 on Linux.
            let ms = (t1 - t0) as f64 * 10.0;
            (ms, hwm, rss, m.with(|s| s.usage))
        })
    } else {
        println!("usage cost: the partitions did not start");
        None
    };
    stop_node(&mut child);
    res
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let n: u32 = std::env::var("NODE_BENCH_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    for passes in [2, 8] {
        let (first, all) = converge(n, passes);
        println!(
            "converge: {n} partitions, max_instance_passes={passes}: first report {:.0} ms, all started+promise ok {:.0} ms",
            first.as_secs_f64() * 1e3,
            all.as_secs_f64() * 1e3
        );
    }
    if let Some(kib) = idle_rss() {
        println!("idle RSS of slapos-node run (3 partitions, registered, long-polling): {kib} KiB");
    }
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (np, secs) = (
        env("NODE_BENCH_USAGE_PARTITIONS", 20) as u32,
        env("NODE_BENCH_USAGE_SECS", 20),
    );
    // The anchor (sampling off) measured in the same run, right before.
    for (label, period) in [("off", "0"), ("on, period 1 s", "1")] {
        if let Some((ms, hwm, rss, got)) = usage_cost(np, period, secs) {
            println!(
                "usage sampling {label}: {np} started partitions, {secs} s: node CPU {ms:.0} ms \
                 ({:.2} % of a core), VmHWM {hwm} KiB, VmRSS {rss} KiB, samples received {got}",
                ms / (secs as f64 * 10.0)
            );
        }
    }
    println!("anchor: none (SlapOS slapgrid/buildout is not installed on this machine)");
}
