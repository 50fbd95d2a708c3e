//! `enb-sim` — the stand-in eNB/gNB workload.
//!
//! No LTE stack installs from Debian 12, so partitions run this instead: a TTI deadline loop
//! (absolute `clock_nanosleep` on CLOCK_MONOTONIC, fixed calibrated work per TTI over an
//! I/Q-sized buffer) that writes the same statistics stream a real stack's collector writes
//! (docs/radio.md), with the configured cells, deadline misses and the scheduling state it
//! observes for itself.
//!
//! The loop thread never blocks on I/O and never allocates: a finished window goes through a
//! bounded queue to a writer thread (which drops to SCHED_OTHER), which computes its statistics
//! (quantiles over 2×20,001 buckets), builds and writes the record, empties the window and hands
//! it back for reuse; when the queue is full a record is dropped and counted. (Until issue 20
//! the loop computed, allocated and zeroed all that itself once per record period: a
//! 50–100 µs stall every second on the TTI thread, i.e. at p99.9.)

mod os;

use anyhow::{Context, bail};
use clap::Parser;
use radio::plan::Plan;
use radio::stats::format_line;
use radio::tti::{Load, SchedState, Window, record};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Parser, Debug)]
#[command(
    name = "enb-sim",
    version,
    about = "Stand-in eNB/gNB: a TTI deadline loop writing simpleran-style statistics"
)]
struct Args {
    /// Parameters (simpleran JSON, as for `slapos-radio validate`) or the `radio.json` plan
    /// written by `slapos-radio render`.
    #[arg(long)]
    config: PathBuf,
    /// Append statistics lines to this file (rotated to FILE1 past --stats-max-bytes);
    /// default: standard output.
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Seconds per statistics record (default: the request's enb_stats_fetch_period).
    #[arg(long)]
    period: Option<f64>,
    /// Stop after this many seconds (default: run until SIGTERM/SIGINT).
    #[arg(long)]
    duration: Option<f64>,
    /// TTI period in µs (default: 1000 for LTE, the NR slot for NR-only plans).
    #[arg(long)]
    tti_us: Option<u32>,
    /// Work per TTI in µs, calibrated once at start into a fixed amount of work.
    #[arg(long, default_value_t = 200)]
    work_us: u32,
    /// Bytes of the I/Q buffer the work walks (default: one TTI of samples of the widest cell).
    #[arg(long)]
    iq_bytes: Option<usize>,
    /// Switch the loop to SCHED_FIFO at this priority (normally the node applies the profile
    /// before exec and this is not needed).
    #[arg(long)]
    fifo: Option<u8>,
    /// Pin the loop to these CPUs (CPU-list syntax).
    #[arg(long)]
    cpus: Option<String>,
    /// Do not mlockall (memory locks do not survive exec, so the workload locks itself).
    #[arg(long)]
    no_mlock: bool,
    /// Connected UEs reported per cell (synthetic).
    #[arg(long, default_value_t = 0.0)]
    ues: f64,
    /// Downlink bit rate reported per cell, bit/s (synthetic).
    #[arg(long, default_value_t = 0.0)]
    dl_bitrate: f64,
    /// Uplink bit rate reported per cell, bit/s (synthetic).
    #[arg(long, default_value_t = 0.0)]
    ul_bitrate: f64,
    /// Rotate the statistics file beyond this size.
    #[arg(long, default_value_t = 50 << 20)]
    stats_max_bytes: u64,
}

fn load_plan(path: &Path) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    if let Ok(plan) = serde_json::from_str::<Plan>(&text) {
        return Ok(plan);
    }
    match radio::validate::validate_json(&text) {
        Ok(v) => Ok(v.plan),
        Err(e) => bail!(
            "{} is neither a radio.json plan nor valid parameters: {e}",
            path.display()
        ),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = load_plan(&args.config)?;
    let tti_us = args.tti_us.unwrap_or_else(|| plan.tti_us());
    if !(100..=100_000).contains(&tti_us) {
        bail!("--tti-us {tti_us} is outside 100..=100000");
    }
    let period_s = args.period.unwrap_or(plan.monitoring.stats_period_s);
    if !(period_s.is_finite() && period_s > 0.0) {
        bail!("--period {period_s} must be a positive number of seconds");
    }
    let load = Load {
        ues: args.ues,
        dl_bitrate: args.dl_bitrate,
        ul_bitrate: args.ul_bitrate,
    };
    let stop = os::stop_flag().context("failed to install signal handlers")?;

    // Writer thread first, so it does not inherit a FIFO policy set below.
    let (tx, rx) = sync_channel::<Finished>(16);
    let (back_tx, back_rx) = sync_channel::<Window>(SPARE_WINDOWS);
    let dropped = Arc::new(AtomicU64::new(0));
    let writer_dropped = dropped.clone();
    let writer_plan = plan.clone();
    let mut out: Box<dyn Write + Send> = match &args.stats {
        Some(p) => Box::new(RotatingFile::open(p.clone(), args.stats_max_bytes)?),
        None => Box::new(std::io::stdout()),
    };
    let writer = std::thread::Builder::new()
        .name("stats-writer".into())
        .spawn(move || -> std::io::Result<()> {
            // The loop's policy may have been inherited from exec: the writer must not compete.
            let _ = os::set_scheduler(libc::SCHED_OTHER, 0);
            for mut f in rx {
                let (tti, rf) = f
                    .window
                    .finish(&f.sched, writer_dropped.load(Ordering::Relaxed));
                let data = record(&writer_plan, f.utc, f.duration_s, tti, rf, f.load);
                f.window.reset();
                // Back to the loop; if it already has enough spares the window is freed here.
                let _ = back_tx.try_send(f.window);
                out.write_all(format_line(&data).as_bytes())?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            Ok(())
        })?;

    // Scheduling setup, reporting (not hiding) what could not be applied.
    let mut notes = Vec::new();
    if let Some(list) = &args.cpus {
        let cpus = radio::cpulist::parse(list).map_err(anyhow::Error::msg)?;
        if let Err(e) = os::set_affinity(&cpus) {
            notes.push(format!("sched_setaffinity({list}): {e}"));
        }
    }
    if !args.no_mlock
        && let Err(e) = os::mlockall()
    {
        notes.push(format!("mlockall: {e}"));
    }
    if let Some(prio) = args.fifo
        && let Err(e) = os::set_scheduler(libc::SCHED_FIFO, i32::from(prio))
    {
        notes.push(format!("sched_setscheduler(SCHED_FIFO, {prio}): {e}"));
    }

    let iq_bytes = args
        .iq_bytes
        .unwrap_or_else(|| iq_bytes_per_tti(&plan, tti_us))
        .clamp(4096, 64 << 20);
    let mut work = Work::new(iq_bytes);
    let units = work.calibrate(u64::from(args.work_us) * 1000);

    let (policy, priority) = os::scheduler();
    let sched = Arc::new(SchedState {
        policy,
        priority,
        cpus: radio::cpulist::format(&os::affinity().unwrap_or_default()),
        mlocked: os::memory_locked(),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    });
    eprintln!(
        "enb-sim: {} LTE + {} NR cell(s), TTI {tti_us} µs, work {} µs ({units} units over {iq_bytes} B), record every {period_s} s, SCHED_{} {} on CPUs {}, mlocked={}{}",
        plan.lte_cells.len(),
        plan.nr_cells.len(),
        args.work_us,
        sched.policy.to_uppercase(),
        sched.priority,
        sched.cpus,
        sched.mlocked,
        sched
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );

    let result = run_loop(
        &args, &sched, tti_us, period_s, load, &mut work, units, stop, &tx, &back_rx, &dropped,
    );
    drop(tx);
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("statistics writer panicked"))?;
    result?;
    written.context("failed to write statistics")?;
    Ok(())
}

/// Windows allocated before the loop starts and recycled by the writer.
const SPARE_WINDOWS: usize = 2;

/// A finished statistics window on its way to the writer thread.
struct Finished {
    window: Window,
    utc: f64,
    duration_s: f64,
    load: Load,
    sched: Arc<SchedState>,
}

#[allow(clippy::too_many_arguments)]
fn run_loop(
    args: &Args,
    sched: &Arc<SchedState>,
    tti_us: u32,
    period_s: f64,
    load: Load,
    work: &mut Work,
    units: u64,
    stop: &std::sync::atomic::AtomicBool,
    tx: &SyncSender<Finished>,
    back: &Receiver<Window>,
    dropped: &AtomicU64,
) -> anyhow::Result<()> {
    let period_ns = u64::from(tti_us) * 1000;
    let record_ns = (period_s * 1e9) as u64;
    // Allocated (and, memory being locked, faulted in) before the first TTI.
    let mut spares: Vec<Window> = (0..SPARE_WINDOWS).map(|_| Window::new(period_ns)).collect();
    let start = os::now_ns();
    let end = args.duration.map(|d| start + (d * 1e9) as u64);
    let mut window = Window::new(period_ns);
    let mut window_start = start;
    let mut next = start + period_ns;
    let mut emit = |window: &mut Window, window_start: &mut u64, now: u64| {
        // A recycled window, else a spare; a new allocation only if the writer is far behind.
        let fresh = back
            .try_recv()
            .ok()
            .or_else(|| spares.pop())
            .unwrap_or_else(|| Window::new(period_ns));
        let finished = Finished {
            window: std::mem::replace(window, fresh),
            utc: utc_now(),
            duration_s: (now - *window_start) as f64 / 1e9,
            load,
            sched: sched.clone(),
        };
        if let Err(TrySendError::Full(mut f)) = tx.try_send(finished) {
            dropped.fetch_add(1, Ordering::Relaxed);
            f.window.reset();
            spares.push(f.window);
        }
        *window_start = now;
    };
    loop {
        os::sleep_until_ns(next, stop).context("clock_nanosleep failed")?;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let woke = os::now_ns();
        work.run(units);
        let done = os::now_ns();
        let skip = window.record(woke.saturating_sub(next), done.saturating_sub(next));
        next += period_ns * (1 + skip);
        if done - window_start >= record_ns {
            emit(&mut window, &mut window_start, done);
        }
        if end.is_some_and(|e| done >= e) {
            break;
        }
    }
    if window.count() > 0 {
        emit(&mut window, &mut window_start, os::now_ns());
    }
    Ok(())
}

fn utc_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One TTI of 16-bit complex samples (4 bytes each) of the widest cell.
fn iq_bytes_per_tti(plan: &Plan, tti_us: u32) -> usize {
    let rate = plan
        .lte_cells
        .iter()
        .map(|c| c.bandwidth.sample_rate())
        .chain(plan.nr_cells.iter().map(|c| c.sample_rate()))
        .max()
        .unwrap_or(1_920_000);
    (u64::from(rate) * u64::from(tti_us) / 1_000_000 * 4) as usize
}

/// Fixed CPU work: mixing passes over 4 KiB chunks of an I/Q-sized buffer.
struct Work {
    buf: Vec<u64>,
    pos: usize,
    acc: u64,
}

const CHUNK_WORDS: usize = 512; // 4 KiB

impl Work {
    fn new(bytes: usize) -> Self {
        let words = (bytes / 8).max(CHUNK_WORDS);
        // Touch every page now so the loop does not fault.
        let buf = (0..words as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        Work {
            buf,
            pos: 0,
            acc: 1,
        }
    }

    fn run(&mut self, units: u64) {
        for _ in 0..units {
            if self.pos + CHUNK_WORDS > self.buf.len() {
                self.pos = 0;
            }
            let chunk = &mut self.buf[self.pos..self.pos + CHUNK_WORDS];
            let mut a = self.acc;
            for w in chunk.iter_mut() {
                a ^= *w;
                a = a.rotate_left(13).wrapping_mul(0x2545_F491_4F6C_DD1D);
                *w = w.wrapping_add(a);
            }
            self.acc = std::hint::black_box(a);
            self.pos += CHUNK_WORDS;
        }
    }

    /// Number of units that take about `target_ns` here and now (median of 5 trials).
    fn calibrate(&mut self, target_ns: u64) -> u64 {
        if target_ns == 0 {
            return 0;
        }
        let trial = 64;
        let mut per_unit: Vec<u64> = (0..5)
            .map(|_| {
                let t0 = os::now_ns();
                self.run(trial);
                (os::now_ns() - t0).max(1) / trial
            })
            .collect();
        per_unit.sort_unstable();
        (target_ns / per_unit[2].max(1)).max(1)
    }
}

/// Append-only statistics file, rotated SlapOS-style (`FILE` → `FILE1`).
struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl RotatingFile {
    fn open(path: PathBuf, max: u64) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("failed to open statistics file {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile {
            path,
            file,
            size,
            max,
        })
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max && buf != b"\n" {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push("1");
            std::fs::rename(&self.path, &rotated)?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = 0;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
