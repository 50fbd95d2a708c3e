//! `rt-probe`: cyclictest-style wake-up latency and TTI deadline measurement, JSON output,
//! usable as a promise.
//!
//! ```text
//! rt-probe [--interval-us 1000] [--duration-s 10 | --loops N] [--work-us 0] [--budget-us INTERVAL]
//!          [--cpu LIST] [--policy other|fifo|rr] [--priority 1..99] [--mlock] [--no-dma-latency]
//!          [--hist-max-us 20000] [--histogram] [--max-p99-us N] [--max-miss-ratio F]
//! ```
//!
//! The measuring thread pins itself to `--cpu`, takes the policy (`--priority` alone means
//! fifo), locks memory with `--mlock` and holds `/dev/cpu_dma_latency` at 0 unless
//! `--no-dma-latency` (as cyclictest does by default), then runs the loop of `rt::probe`.
//! `--histogram` adds the non-empty 1 µs buckets (`[[µs, count], …]`) and the overflow count
//! to the JSON, so runs can be merged (rt-bench does).
//!
//! Exit codes: 0 = measured and every threshold held (or `--help`/`--version`, on stdout); 1 = a
//! threshold was exceeded (the JSON is still printed, the violations go to stderr); 2 = bad
//! arguments (an unknown flag gets a "did you mean") or the requested setup (affinity, policy,
//! mlock) failed — the probe never silently measures something else.

use std::process::ExitCode;

use rt::args::Parsed;
use rt::probe::{self, ProbeConfig, RealEnv, Thresholds};
use rt::{CpuList, Policy};
use serde::Serialize;

#[derive(Debug)]
struct Args {
    cfg: ProbeConfig,
    duration_s: Option<f64>,
    cpus: Option<CpuList>,
    policy: Policy,
    priority: u32,
    mlock: bool,
    dma_latency: bool,
    histogram: bool,
    thresholds: Thresholds,
}

const USAGE: &str = "usage: rt-probe [--interval-us N] [--duration-s S | --loops N] [--work-us N] [--budget-us N] \
[--cpu LIST] [--policy other|fifo|rr] [--priority N] [--mlock] [--no-dma-latency] [--hist-max-us N] [--histogram] \
[--max-p99-us N] [--max-miss-ratio F] [--help] [--version]

Wake-up latency and TTI deadline probe; JSON report on stdout. Exit 0: every threshold held;
1: a threshold was exceeded; 2: bad arguments or the requested setup failed.";

/// The flags, for "did you mean".
const FLAGS: &[&str] = &[
    "--interval-us",
    "--loops",
    "--duration-s",
    "--work-us",
    "--budget-us",
    "--hist-max-us",
    "--cpu",
    "--policy",
    "--priority",
    "--mlock",
    "--no-dma-latency",
    "--histogram",
    "--max-p99-us",
    "--max-miss-ratio",
    "--help",
    "--version",
];

fn parse_args(argv: &[String]) -> Result<Parsed<Args>, String> {
    let mut a = Args {
        cfg: ProbeConfig::new(1000, 0),
        duration_s: None,
        cpus: None,
        policy: Policy::Other,
        priority: 0,
        mlock: false,
        dma_latency: true,
        histogram: false,
        thresholds: Thresholds::default(),
    };
    let mut policy: Option<Policy> = None;
    let mut loops: Option<u64> = None;
    let mut budget: Option<u64> = None;
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{flag}: `{v}` is not a valid number"))
        }
        match flag.as_str() {
            "--interval-us" => a.cfg.interval_us = num(flag, value()?)?,
            "--loops" => loops = Some(num(flag, value()?)?),
            "--duration-s" => a.duration_s = Some(num(flag, value()?)?),
            "--work-us" => a.cfg.work_us = num(flag, value()?)?,
            "--budget-us" => budget = Some(num(flag, value()?)?),
            "--hist-max-us" => a.cfg.hist_max_us = num(flag, value()?)?,
            "--cpu" => {
                let v = value()?;
                a.cpus = Some(CpuList::parse(&v).map_err(|e| e.to_string())?);
            }
            "--policy" => policy = Some(value()?.parse()?),
            "--priority" => a.priority = num(flag, value()?)?,
            "--mlock" => a.mlock = true,
            "--no-dma-latency" => a.dma_latency = false,
            "--histogram" => a.histogram = true,
            "--max-p99-us" => a.thresholds.max_p99_us = Some(num(flag, value()?)?),
            "--max-miss-ratio" => a.thresholds.max_miss_ratio = Some(num(flag, value()?)?),
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            other => return Err(rt::args::unknown(other, FLAGS)),
        }
    }
    a.policy = policy.unwrap_or(if a.priority > 0 {
        Policy::Fifo
    } else {
        Policy::Other
    });
    if a.policy.is_realtime() && !(1..=99).contains(&a.priority) {
        return Err(format!("--policy {} needs --priority 1..99", a.policy));
    }
    if !a.policy.is_realtime() && a.priority != 0 {
        return Err("--priority needs --policy fifo or rr".into());
    }
    if a.cfg.interval_us == 0 {
        return Err("--interval-us must be positive".into());
    }
    a.cfg.budget_us = budget.unwrap_or(a.cfg.interval_us);
    a.cfg.loops = match (loops, a.duration_s) {
        (Some(_), Some(_)) => return Err("--loops and --duration-s are mutually exclusive".into()),
        (Some(n), None) => n,
        (None, d) => ((d.unwrap_or(10.0) * 1e6) / a.cfg.interval_us as f64).round() as u64,
    };
    if a.cfg.loops == 0 {
        return Err("nothing to measure (0 loops)".into());
    }
    Ok(Parsed::Run(a))
}

#[derive(Serialize)]
struct Sched {
    policy: String,
    priority: u32,
    affinity: String,
    mlocked: bool,
    cpu_dma_latency_held: bool,
    work_iterations: u64,
}

#[derive(Serialize)]
struct HistogramOut {
    buckets: Vec<(u32, u64)>,
    overflow: u64,
    max_ns: u64,
}

#[derive(Serialize)]
struct Promise {
    ok: bool,
    violations: Vec<String>,
}

#[derive(Serialize)]
struct Output {
    tool: &'static str,
    version: &'static str,
    #[serde(flatten)]
    report: probe::ProbeReport,
    sched: Sched,
    #[serde(skip_serializing_if = "Option::is_none")]
    histogram: Option<HistogramOut>,
    promise: Promise,
}

fn setup(a: &Args) -> Result<(Option<std::fs::File>, bool), String> {
    if let Some(cpus) = &a.cpus {
        rt::sys::set_affinity(0, cpus).map_err(|e| format!("cannot pin to CPUs {cpus}: {e}"))?;
    }
    if a.policy.is_realtime() {
        rt::sys::set_scheduler(0, a.policy, a.priority)
            .map_err(|e| format!("cannot set {} priority {}: {e}", a.policy, a.priority))?;
    }
    if a.mlock {
        rt::sys::lock_all_memory().map_err(|e| format!("mlockall failed: {e}"))?;
        prefault_stack();
    }
    // As cyclictest: 1 ns timer slack (the kernel already ignores slack for fifo/rr; this is
    // for --policy other). Best effort: a failure only leaves the default 50 µs.
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes plain integers and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    let held = if a.dma_latency {
        match rt::pmqos::hold_zero(std::path::Path::new("/dev/cpu_dma_latency")) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("rt-probe: not holding /dev/cpu_dma_latency: {e}");
                None
            }
        }
    } else {
        None
    };
    Ok((held, a.mlock))
}

/// Touches 256 KiB of stack once memory is locked, so the loop never faults a stack page in
/// (what cyclictest's `-m` does not need: its loop is one C frame).
fn prefault_stack() {
    let mut buf = [0u8; 256 * 1024];
    std::hint::black_box(&mut buf);
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match rt::args::handle("rt-probe", USAGE, parse_args(&argv)) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let (dma, mlocked) = match setup(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("rt-probe: {e}");
            return ExitCode::from(2);
        }
    };
    let mut env = RealEnv::calibrated(args.cfg.work_us);
    let (hist, report) = probe::run(&args.cfg, &mut env);
    let (policy, priority) = rt::sys::get_scheduler(0).unwrap_or((None, 0));
    let violations = args.thresholds.check(&report);
    let out = Output {
        tool: "rt-probe",
        version: env!("CARGO_PKG_VERSION"),
        report,
        sched: Sched {
            policy: policy.map_or("unknown".into(), |p| p.to_string()),
            priority,
            affinity: rt::sys::get_affinity(0)
                .map(|c| c.to_string())
                .unwrap_or_default(),
            mlocked,
            cpu_dma_latency_held: dma.is_some(),
            work_iterations: env.iterations(),
        },
        histogram: args.histogram.then(|| HistogramOut {
            buckets: hist.buckets(),
            overflow: hist.overflow(),
            max_ns: hist.max_ns(),
        }),
        promise: Promise {
            ok: violations.is_empty(),
            violations: violations.clone(),
        },
    };
    drop(dma);
    match serde_json::to_string_pretty(&out) {
        Ok(j) => println!("{j}"),
        Err(e) => {
            eprintln!("rt-probe: cannot encode the report: {e}");
            return ExitCode::from(2);
        }
    }
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        for v in &violations {
            eprintln!("rt-probe: promise failed: {v}");
        }
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> Result<Parsed<Args>, String> {
        parse_args(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    fn args(s: &str) -> Result<Args, String> {
        match parsed(s)? {
            Parsed::Run(a) => Ok(a),
            other => Err(format!("not a run: {other:?}")),
        }
    }

    #[test]
    fn help_version_and_suggestions() {
        assert!(matches!(parsed("--loops 5 --help"), Ok(Parsed::Help)));
        assert!(matches!(parsed("-V"), Ok(Parsed::Version)));
        let e = parsed("--intervl-us 500").unwrap_err();
        assert!(e.contains("did you mean `--interval-us`"), "{e}");
        let e = parsed("--max-p99 5").unwrap_err();
        assert!(e.contains("did you mean `--max-p99-us`"), "{e}");
    }

    #[test]
    fn defaults_and_derived_values() {
        let a = args("").unwrap();
        assert_eq!(a.cfg.loops, 10_000, "10 s at 1 ms");
        assert_eq!(a.cfg.budget_us, 1000);
        assert_eq!(a.policy, Policy::Other);
        assert!(a.dma_latency);
        let a =
            args("--priority 80 --interval-us 500 --duration-s 2 --cpu 1 --work-us 200 --mlock")
                .unwrap();
        assert_eq!(a.policy, Policy::Fifo);
        assert_eq!(a.cfg.loops, 4000);
        assert_eq!(a.cfg.budget_us, 500);
        assert_eq!(a.cpus.unwrap().to_string(), "1");
        let a = args("--loops 5 --max-p99-us 100 --max-miss-ratio 1e-4 --policy rr --priority 5")
            .unwrap();
        assert_eq!(a.cfg.loops, 5);
        assert_eq!(a.thresholds.max_p99_us, Some(100));
        assert_eq!(a.thresholds.max_miss_ratio, Some(1e-4));
        assert_eq!(a.policy, Policy::Rr);
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            "--policy fifo",
            "--priority 5 --policy other",
            "--priority 100",
            "--loops 5 --duration-s 1",
            "--loops 0",
            "--interval-us 0",
            "--cpu x",
            "--bogus",
            "--loops",
            "--loops ten",
        ] {
            assert!(args(bad).is_err(), "{bad}");
        }
    }
}
