//! End-to-end tests of real-time partitions: a real `slapos-master serve` and a real
//! `slapos-node run` as root with rt enabled (`rt = true`, cgroup subtree
//! `slapos-edge-test-<pid>-<n>`), driven through the native API.
//!
//! * `examples/rt-probe`: placed through the SLA label `rt_cpus`, its service runs SCHED_FIFO 80
//!   on the reserved CPU inside the partition's cgroup, its connection parameters carry latency
//!   figures, a threshold of 1 µs makes its promise fail, destroy removes the cgroups;
//! * `examples/enb`: simpleran-style parameters run `enb-sim` RT-pinned and publish KPIs; an
//!   EARFCN outside its band is refused with an error naming `cell_list.cell1.dl_earfcn`.
//!
//! Needs root (skipped otherwise, failing under `SLAPOS_REQUIRE_PRIVILEGED=1`) and python3 (the
//! rt-probe release's helper). The tests hold one lock: the RT pool here is one CPU and the
//! default RT budget takes the whole root budget. Every cgroup is removed even on failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use slapos_proto::{
    ComputerId, InstanceInfo, InstanceRequest, InstanceState, InstanceTitle, LabelKey, Params,
    SoftwareUrl, StateChange,
};
use slapos_tests::{
    Client, Master, Node, bin, example_release, instance_request, params, privileged, supply,
    wait_for,
};

const LONG: Duration = Duration::from_secs(90);
static RT: Mutex<()> = Mutex::new(());

/// The companion programs are there (the node's tools_dir is its own directory); they are
/// built with the workspace binaries, never by the test.
fn tools() {
    for t in ["rt-probe", "enb-sim", "slapos-radio"] {
        bin(t);
    }
}

/// Removes the test's cgroup subtree from every hierarchy on drop (after the node is gone).
struct Cgroups {
    root: String,
}

impl Cgroups {
    fn dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let d = e.path().join(&self.root);
                if d.is_dir() && !out.contains(&d) {
                    out.push(d);
                }
            }
        }
        out
    }
}

fn kill_and_rmdir(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                kill_and_rmdir(&e.path());
            }
        }
    }
    for _ in 0..100 {
        let tasks = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in tasks.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("could not remove cgroup {}", dir.display());
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in self.dirs() {
            kill_and_rmdir(&d);
        }
    }
}

/// Wait until the node has removed the test's cgroup subtree; on timeout, name what is left
/// and which tasks hold it.
fn wait_for_release(cgroups: &Cgroups) {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let left = cgroups.dirs();
        if left.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            let held: Vec<String> = left
                .iter()
                .map(|d| {
                    let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                    let subs: Vec<_> = std::fs::read_dir(d)
                        .map(|rd| {
                            rd.flatten()
                                .filter(|e| e.path().is_dir())
                                .map(|e| e.file_name())
                                .collect()
                        })
                        .unwrap_or_default();
                    format!(
                        "{} (tasks: {}; children: {subs:?})",
                        d.display(),
                        procs.split_whitespace().collect::<Vec<_>>().join(" ")
                    )
                })
                .collect();
            panic!("cgroups not released after {LONG:?}: {held:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Setup {
    // Field order = drop order: node, then master, then the cgroups, then the files.
    node: Node,
    master: Master,
    cgroups: Cgroups,
    _dir: tempfile::TempDir,
}

fn setup(name: &str) -> Setup {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = format!(
        "slapos-edge-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let cgroups = Cgroups { root: root.clone() };
    let master = Master::start(&dir.path().join("master.db"));
    let extra = format!("rt = true\nrt_root_name = \"{root}\"\n");
    let node = Node::start_with(&dir.path().join("node"), &master.url, name, 2, &extra);
    Setup {
        node,
        master,
        cgroups,
        _dir: dir,
    }
}

fn release(name: &str) -> SoftwareUrl {
    example_release(name)
}

fn rt_label(c: &Client, computer: &str) -> String {
    wait_for("rt_cpus label", LONG, || {
        let info = c.computer(&ComputerId::parse(computer).expect("id")).ok()?;
        info.labels
            .get(&LabelKey::parse("rt_cpus").expect("label"))
            .cloned()
    })
}

fn request(c: &Client, title: &str, url: &SoftwareUrl, params: Value, rt_cpus: &str) {
    try_request(c, title, url, params, rt_cpus).expect("request");
}

/// Supplies `url` to RT-NODE and requests `title`; the master's answer to the request.
fn try_request(
    c: &Client,
    title: &str,
    url: &SoftwareUrl,
    p: Value,
    rt_cpus: &str,
) -> Result<InstanceInfo, slapos_client::ClientError> {
    supply(c, "RT-NODE", url);
    c.request(&InstanceRequest {
        // Placed by the node's RT capability label.
        sla: BTreeMap::from([("rt_cpus".to_owned(), rt_cpus.to_owned())]),
        ..instance_request(title, url, params(p))
    })
}

fn show(c: &Client, title: &str) -> InstanceInfo {
    c.instance(&InstanceTitle::parse(title).expect("title"), None)
        .expect("show instance")
}

fn connection(c: &Client, title: &str, keys: &[&str]) -> Params {
    wait_for(&format!("{title}: connection {keys:?}"), LONG, || {
        let i = show(c, title);
        keys.iter()
            .all(|k| i.connection.contains_key(*k))
            .then_some(i.connection)
    })
}

fn num(p: &Params, k: &str) -> f64 {
    p[k].as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{k} = {:?} is not a number", p[k]))
}

/// Pid of the first process whose command line contains `needle`, inside `cgroup_dir`.
fn pid_in(cgroup_dir: &Path, needle: &str) -> Option<u32> {
    let procs = std::fs::read_to_string(cgroup_dir.join("cgroup.procs")).ok()?;
    procs.split_whitespace().find_map(|p| {
        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmd)
            .contains(needle)
            .then(|| p.parse().ok())
            .flatten()
    })
}

/// (policy, rt priority, processor) from /proc/<pid>/stat fields 41, 40, 39.
fn sched_of(pid: u32) -> (u32, u32, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // `after` starts at field 3 (state): field n is f[n - 3].
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_owned();
    (
        f[41 - 3].parse().expect("policy"),
        f[40 - 3].parse().expect("rt_priority"),
        allowed,
    )
}

fn set_state(c: &Client, title: &str, state: InstanceState) {
    c.set_state(
        &InstanceTitle::parse(title).expect("title"),
        &StateChange { state },
    )
    .expect("state change");
}

#[test]
fn rt_probe_runs_fifo_on_its_reserved_cpu_and_publishes_latency() {
    if !privileged("rt_probe_runs_fifo_on_its_reserved_cpu_and_publishes_latency") {
        return;
    }
    let _lock = RT.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("RT-NODE");
    let c = s.master.client();
    let pool = rt_label(&c, "RT-NODE");
    let url = release("rt-probe");
    request(
        &c,
        "probe",
        &url,
        json!({"round_s": "2", "promise_period": "2"}),
        &pool,
    );

    let conn = connection(&c, "probe", &["rt-p99-us", "rt-policy", "rt-misses"]);
    assert_eq!(conn["rt-policy"], "fifo", "{conn:?}");
    assert_eq!(conn["rt-priority"], "80");
    assert_eq!(conn["rt-mlocked"], "true");
    assert!(num(&conn, "rt-p99-us") > 0.0 && num(&conn, "rt-periods") > 0.0);
    let cpu = conn["rt-affinity"].as_str().expect("affinity").to_owned();
    assert!(
        pool.split(',').any(|r| r == cpu) || pool.contains(&cpu),
        "probe on CPU {cpu}, pool {pool}"
    );

    // The service really runs FIFO 80 pinned, inside the partition's cgroup of the subtree.
    let part = show(&c, "probe").partition.to_string();
    let cpuset = PathBuf::from("/sys/fs/cgroup/cpuset")
        .join(&s.cgroups.root)
        .join(&part);
    let pid = wait_for("probe.py in the partition cgroup", LONG, || {
        pid_in(&cpuset, "probe.py")
    });
    let (policy, prio, allowed) = sched_of(pid);
    assert_eq!((policy, prio), (1, 80), "SCHED_FIFO 80 expected");
    assert_eq!(allowed, cpu);
    assert_eq!(
        std::fs::read_to_string(cpuset.join("cpuset.cpus"))
            .expect("cpuset.cpus")
            .trim(),
        cpu
    );
    let usage = s.node.partition_dir(&part).join(".slapos/usage.json");
    wait_for("usage.json", LONG, || usage.exists().then_some(()));

    // Node crash (SIGKILL) and restart: the profile is adopted, the probe runs FIFO again.
    let mut s = s;
    if let Some(p) = s.node.proc.as_mut() {
        p.kill();
    }
    s.node.restart();
    let pid2 = wait_for("probe.py back in the partition cgroup", LONG, || {
        pid_in(&cpuset, "probe.py").filter(|p| *p != pid)
    });
    assert_eq!(sched_of(pid2).0, 1, "SCHED_FIFO after the node restart");

    // Promise: the figures above hold; an impossible threshold (p99 ≤ 1 µs) fails it.
    wait_for("latency promise ok", LONG, || {
        let r = show(&c, "probe").reported?;
        r.report
            .promises
            .iter()
            .any(|p| p.name == "latency" && p.ok)
            .then_some(())
    });
    request(
        &c,
        "probe",
        &url,
        json!({"round_s": "1", "promise_period": "2", "max_p99_us": "1"}),
        &pool,
    );
    let msg = wait_for("latency promise failing", LONG, || {
        let r = show(&c, "probe").reported?;
        r.report
            .promises
            .iter()
            .find(|p| p.name == "latency" && !p.ok && p.message.contains("degraded"))
            .map(|p| p.message.clone())
    });
    assert!(msg.contains("p99"), "{msg}");

    // Destroy releases the partition's cgroups (and, the last partition gone, the subtree).
    set_state(&c, "probe", InstanceState::Destroyed);
    wait_for_release(&s.cgroups);
}

fn simpleran(dl_earfcn: u32) -> Value {
    let doc = json!({
        "enb_id": "0x19B", "gtp_addr": "127.0.1.1",
        "mme_list": [{"mme_addr": "127.0.1.100"}], "plmn_list": [{"plmn": "00101"}],
        "enb_stats_fetch_period": 1,
        "cell_list": {"cell1": {
            "cell_type": "lte", "rf_mode": "fdd", "cell_id": "0x01", "pci": 1, "tac": "0x0007",
            "dl_earfcn": dl_earfcn, "bandwidth": "20 MHz",
            "ru": {"ru_type": "sdr", "ru_link_type": "sdr", "sdr_dev_list": [0],
                   "n_antenna_dl": 2, "n_antenna_ul": 2, "tx_gain": 80, "rx_gain": 40,
                   "txrx_active": "ACTIVE"}}}
    });
    json!({"_": doc.to_string(), "promise_period": "2", "max_miss_ratio": "0.5"})
}

#[test]
fn enb_runs_rt_pinned_reports_kpis_and_refuses_a_bad_cell() {
    if !privileged("enb_runs_rt_pinned_reports_kpis_and_refuses_a_bad_cell") {
        return;
    }
    let _lock = RT.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("RT-NODE");
    let c = s.master.client();
    let pool = rt_label(&c, "RT-NODE");
    let url = release("enb");

    // An EARFCN outside any band, requested before the node installed the release (so before
    // the master knows its parameter model): the node's validate step refuses it naming the
    // field, nothing started.
    request(&c, "bad-enb", &url, simpleran(99999), &pool);
    let err = wait_for("bad cell refused", LONG, || {
        show(&c, "bad-enb").reported?.report.error
    });
    assert!(err.contains("cell_list.cell1.dl_earfcn"), "{err}");
    assert!(
        s.cgroups.dirs().is_empty(),
        "a refused request applied resources"
    );
    set_state(&c, "bad-enb", InstanceState::Destroyed);

    request(&c, "enb", &url, simpleran(3350), &pool);
    // The first publication may predate enb-sim's first statistics line (cell not up yet); the
    // KPIs are republished with each promise period.
    let conn = wait_for("enb: kpi-cell-up = true", LONG, || {
        let i = show(&c, "enb");
        let ready = ["kpi-tti-count", "kpi-policy"]
            .iter()
            .all(|k| i.connection.contains_key(*k));
        (ready && i.connection.get("kpi-cell-up").is_some_and(|v| v == "true"))
            .then_some(i.connection)
    });
    assert_eq!(conn["kpi-policy"], "fifo");
    assert_eq!(conn["kpi-priority"], "80");
    assert_eq!(conn["kpi-mlocked"], "true", "{conn:?}");
    assert!(num(&conn, "kpi-tti-count") > 0.0);

    // The release is installed and declared its `radio-enb` parameter model: a bad cell is now
    // refused at request time, by the master, naming the field, and nothing is allocated.
    let err = try_request(&c, "bad-enb-2", &url, simpleran(99999), &pool)
        .expect_err("an EARFCN outside its band must be refused at request time");
    let msg = err.to_string();
    assert!(msg.contains("cell_list.cell1.dl_earfcn"), "{msg}");
    assert!(msg.contains("radio-enb"), "{msg}");
    assert!(
        c.instance(&InstanceTitle::parse("bad-enb-2").expect("title"), None)
            .is_err(),
        "a refused request allocated an instance"
    );
    assert!(
        conn["enb-conf"]
            .as_str()
            .is_some_and(|p| p.ends_with("etc/enb.conf"))
    );
    let part = show(&c, "enb").partition.to_string();
    let rr = std::fs::read_to_string(s.node.partition_dir(&part).join("etc/rr.conf"))
        .expect("rr.conf rendered");
    assert!(
        rr.contains("3350"),
        "rr.conf without the cell's EARFCN:\n{rr}"
    );
    let cpuset = PathBuf::from("/sys/fs/cgroup/cpuset")
        .join(&s.cgroups.root)
        .join(&part);
    let pid = wait_for("enb-sim in the partition cgroup", LONG, || {
        pid_in(&cpuset, "enb-sim")
    });
    let (policy, prio, allowed) = sched_of(pid);
    assert_eq!((policy, prio), (1, 80), "SCHED_FIFO 80 expected");
    assert_eq!(Some(allowed.as_str()), conn["kpi-cpus"].as_str());
    wait_for("tti promise ok", LONG, || {
        let r = show(&c, "enb").reported?;
        r.report
            .promises
            .iter()
            .any(|p| p.name == "tti" && p.ok)
            .then_some(())
    });

    set_state(&c, "enb", InstanceState::Destroyed);
    wait_for_release(&s.cgroups);
}
