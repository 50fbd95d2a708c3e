//! The binaries as an instance profile uses them: validate → render → resources → enb-sim →
//! promise / kpi.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use slapos_test_support::gate::{self, Need};

const SIM: &str = env!("CARGO_BIN_EXE_enb-sim");
const CLI: &str = env!("CARGO_BIN_EXE_slapos-radio");

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("failed to run {bin}: {e}"))
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn validate_accepts_and_refuses_naming_the_field() {
    let o = run(CLI, &["validate", p(&golden("lte-b7-20mhz.params.json"))]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("valid: 1 LTE cell(s)"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    let mut doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden("lte-2cells-endc.params.json")).unwrap(),
    )
    .unwrap();
    doc["cell_list"]["lte-a"]["dl_earfcn"] = serde_json::json!(62000); // outside every band
    std::fs::write(&bad, doc.to_string()).unwrap();
    let o = run(CLI, &["validate", p(&bad)]);
    assert_eq!(o.status.code(), Some(1));
    let (_, err) = text(&o);
    assert!(err.contains("invalid: `cell_list.lte-a.dl_earfcn`: EARFCN 62000 is not a downlink channel of any E-UTRA band"), "{err}");
}

#[test]
fn render_writes_the_golden_files_and_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        CLI,
        &[
            "render",
            "--out",
            p(dir.path()),
            p(&golden("lte-2cells-endc.params.json")),
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let rr = std::fs::read_to_string(dir.path().join("rr.conf")).unwrap();
    assert_eq!(
        rr,
        std::fs::read_to_string(golden("lte-2cells-endc.rr.conf")).unwrap()
    );
    let enb = std::fs::read_to_string(dir.path().join("enb.conf")).unwrap();
    assert!(enb.contains("nof_phy_threads = 4\n"), "{enb}");
    let plan: radio::plan::Plan =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("radio.json")).unwrap())
            .unwrap();
    assert_eq!(plan.lte_cells.len(), 2);
    assert!(text(&o).1.contains("note: plmn_list"), "{:?}", text(&o));
}

#[test]
fn resources_in_both_formats() {
    let o = run(CLI, &["resources", p(&golden("lte-b7-20mhz.params.json"))]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cpus"], 2, "20 MHz LTE: 2 CPUs");
    assert_eq!(v["policy"], "fifo");
    assert_eq!(v["mlock"], true);
    let o = run(
        CLI,
        &[
            "resources",
            "--format",
            "toml",
            "--priority",
            "70",
            p(&golden("lte-b7-20mhz.params.json")),
        ],
    );
    let t: toml::Table = toml::from_str(&String::from_utf8(o.stdout).unwrap()).unwrap();
    let r = t["resources"].as_table().unwrap();
    assert_eq!(r["priority"].as_integer(), Some(70));
    assert_eq!(r["rt_runtime_us"].as_integer(), Some(950_000));
    // The table reads back into the contract type (deny_unknown_fields).
    let profile: radio::rtprofile::RtProfile = toml::Value::Table(r.clone()).try_into().unwrap();
    assert_eq!(profile.priority, Some(70));
    let o = run(
        CLI,
        &[
            "resources",
            "--priority",
            "0",
            p(&golden("lte-b7-20mhz.params.json")),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "priority 0 is a usage error");
}

/// Runs the stand-in on `config` for about `secs` and returns the statistics file.
fn simulate_with(dir: &Path, config: &Path, extra: &[&str], secs: &str) -> PathBuf {
    let stats = dir.join("enb.stats.log");
    let mut args = vec![
        "--config",
        p(config),
        "--stats",
        p(&stats),
        "--period",
        "0.25",
        "--duration",
        secs,
        "--no-mlock",
    ];
    args.extend_from_slice(extra);
    let o = run(SIM, &args);
    assert!(o.status.success(), "enb-sim failed: {:?}", text(&o));
    stats
}

/// Runs the stand-in on the band-7 golden request.
fn simulate(dir: &Path, extra: &[&str], secs: &str) -> PathBuf {
    simulate_with(dir, &golden("lte-b7-20mhz.params.json"), extra, secs)
}

/// Runs `slapos-radio promise ARGS`, expects exit 1 and a failed `check` whose line has `words`.
fn promise_fails(args: &[&str], check: &str, words: &[&str]) -> String {
    let mut all = vec!["promise"];
    all.extend_from_slice(args);
    let o = run(CLI, &all);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("FAIL {check}")))
        .unwrap_or_else(|| panic!("no failed {check} in {out}"));
    for w in words {
        assert!(line.contains(w), "{line:?} lacks {w:?}");
    }
    out
}

#[test]
fn stand_in_feeds_kpis_and_a_passing_promise() {
    let dir = tempfile::tempdir().unwrap();
    let stats = simulate(
        dir.path(),
        &["--ues", "3", "--dl-bitrate", "1000000"],
        "1.2",
    );
    let log = radio::stats::parse_log(&std::fs::read(&stats).unwrap());
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    assert!(log.records.len() >= 4, "{} records", log.records.len());
    let tti = log.records[0].data.tti.as_ref().unwrap();
    assert_eq!(tti.period_us, 1000);
    assert!(tti.count > 0);

    let o = run(CLI, &["kpi", "--stats", p(&stats)]);
    assert!(o.status.success(), "{:?}", text(&o));
    let k: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(k["kpi-cell-up"], true);
    assert_eq!(k["kpi-connected-ues"], 3.0);
    assert_eq!(k["kpi-dl-bitrate-bps"], 1e6);
    assert!(k["kpi-tti-count"].as_u64().unwrap() > 0);
    assert!(k["kpi-processing-max-us"].as_f64().unwrap() > 0.0);

    // Generous thresholds: passes whatever the machine's load.
    let o = run(
        CLI,
        &[
            "promise",
            "--stats",
            p(&stats),
            "--params",
            p(&golden("lte-b7-20mhz.params.json")),
            "--max-miss-ratio",
            "1",
            "--max-latency-us",
            "1e9",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    for check in ["cell-up", "latency", "rx-saturation", "tti-misses"] {
        assert!(out.contains(&format!("OK   {check}")), "{out}");
    }
}

#[test]
fn missed_ttis_fail_the_promise() {
    let dir = tempfile::tempdir().unwrap();
    // 3 ms of work in a 1 ms TTI: every TTI misses its deadline.
    let stats = simulate(dir.path(), &["--work-us", "3000"], "0.8");
    promise_fails(
        &["--stats", p(&stats), "--max-miss-ratio", "0.5"],
        "tti-misses",
        &["missed their deadline"],
    );
}

#[test]
fn rx_saturation_fails_with_high_rx_gain() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("lte-b7-20mhz.params.json")).unwrap())
            .unwrap();
    let mut inner: serde_json::Value = serde_json::from_str(doc["_"].as_str().unwrap()).unwrap();
    inner["cell_list"]["cell1"]["ru"]["rx_gain"] = serde_json::json!(75);
    doc["_"] = serde_json::Value::String(inner.to_string());
    let params = dir.path().join("p.json");
    std::fs::write(&params, doc.to_string()).unwrap();
    let stats = simulate_with(dir.path(), &params, &[], "0.5");
    promise_fails(
        &["--stats", p(&stats), "--params", p(&params)],
        "rx-saturation",
        &["please lower rx_gain"],
    );
}

#[test]
fn garbage_and_missing_statistics_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("junk.log");
    std::fs::write(
        &f,
        b"\x00\xff garbage\n{\"data\": {\"rf\": {\"rxtx_delay_min\": \"x\"}}}\n{\"truncated\": ",
    )
    .unwrap();
    let o = run(
        CLI,
        &["promise", "--stats", p(&f), "--max-latency-us", "900"],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out.contains("FAIL cell-up: no statistics record in the window"),
        "{out}"
    );
    assert!(
        err.contains("line 1: not UTF-8") && err.contains("line 2: `data.rf.rxtx_delay_min`"),
        "{err}"
    );
    let o = run(
        CLI,
        &["promise", "--stats", p(&dir.path().join("absent.log"))],
    );
    assert_eq!(o.status.code(), Some(1));
    let o = run(CLI, &["kpi", "--stats", p(&dir.path().join("absent.log"))]);
    assert!(o.status.success());
    assert!(text(&o).0.contains("\"kpi-cell-up\":false"));
}

#[test]
fn host_readiness_on_a_fake_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for (rel, content) in [
        ("sys/devices/system/cpu/online", "0-3"),
        (
            "sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
            "powersave",
        ),
        (
            "sys/devices/system/cpu/cpu3/cpufreq/scaling_governor",
            "performance",
        ),
        ("proc/sys/kernel/sched_rt_runtime_us", "950000"),
        ("proc/cmdline", "isolcpus=2-3"),
    ] {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let stats = simulate(dir.path(), &[], "0.3");
    let o = run(
        CLI,
        &[
            "promise",
            "--stats",
            p(&stats),
            "--params",
            p(&golden("lte-b7-20mhz.params.json")),
            "--no-cell-up",
            "--host",
            "--root",
            p(&root),
            "--rt-cpus",
            "2-3",
        ],
    );
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    // The stand-in ran unpinned, SCHED_OTHER, unlocked: each is named.
    assert!(out.contains("FAIL host: error [not-pinned]"), "{out}");
    assert!(out.contains("FAIL host: error [policy]: the workload runs SCHED_OTHER but the profile asks for SCHED_FIFO priority 80"), "{out}");
    assert!(out.contains("FAIL host: error [mlock]"), "{out}");
}

fn privileged() -> bool {
    gate::is_root()
        || gate::skip(
            Need::Privileged,
            "fifo_in_an_rt_cgroup_as_root",
            "needs root (SCHED_FIFO in a cgroup with an RT budget)",
        )
}

/// As root: the stand-in runs SCHED_FIFO inside a cgroup-v1 cpu group given an RT budget
/// (a new group starts at cpu.rt_runtime_us = 0, where FIFO fails), locks its memory, and the
/// promise's host check sees the policy it asked for.
#[test]
fn fifo_in_an_rt_cgroup_as_root() {
    if !privileged() {
        return;
    }
    let cpu_root = Path::new("/sys/fs/cgroup/cpu");
    if !cpu_root.join("cpu.rt_runtime_us").exists() {
        gate::skip(
            Need::Privileged,
            "fifo_in_an_rt_cgroup_as_root",
            "no cgroup-v1 RT group scheduling (cpu.rt_runtime_us)",
        );
        return;
    }
    let group = cpu_root.join(format!("slapos-edge-test-radio-{}", std::process::id()));
    std::fs::create_dir(&group).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _cleanup = Cleanup(group.clone());
    // The parent's budget (950000 µs) is shared by its children: another group on a shared
    // machine may hold all of it, in which case writing a budget fails with EINVAL. The loop
    // keeps its CPU ~21% busy, so the budget must be well above 210000 µs.
    let budget = ["500000", "300000"]
        .into_iter()
        .find(|b| std::fs::write(group.join("cpu.rt_runtime_us"), b).is_ok());
    if budget.is_none() {
        let msg = "no RT budget left under /sys/fs/cgroup/cpu (sibling groups hold the parent's cpu.rt_runtime_us)";
        gate::skip(Need::Privileged, "fifo_in_an_rt_cgroup_as_root", msg);
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("s.log");
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {SIM} --config {} --stats {} --period 0.25 --duration 0.8 --fifo 80 --cpus 1",
        group.display(),
        golden("lte-b7-20mhz.params.json").display(),
        stats.display()
    );
    let o = run("sh", &["-c", &script]);
    assert!(o.status.success(), "{:?}", text(&o));
    let log = radio::stats::parse_log(&std::fs::read(&stats).unwrap());
    let tti = log.records.last().unwrap().data.tti.clone().unwrap();
    assert_eq!(
        (tti.policy.as_str(), tti.priority, tti.cpus.as_str()),
        ("fifo", 80, "1"),
        "{tti:?}"
    );
    assert!(tti.mlocked, "{tti:?}");
    assert!(tti.note.is_none(), "{tti:?}");
    let o = run(
        CLI,
        &[
            "promise",
            "--stats",
            p(&stats),
            "--params",
            p(&golden("lte-b7-20mhz.params.json")),
            "--host",
            "--rt-cpus",
            "1",
            "--max-miss-ratio",
            "1",
        ],
    );
    let (out, _) = text(&o);
    assert!(
        !out.contains("[policy]") && !out.contains("[mlock]") && !out.contains("[not-pinned]"),
        "{out}"
    );
}
