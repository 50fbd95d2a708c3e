//! `slapos-radio` — the commands a base-station instance profile runs.
//!
//! * `validate PARAMS.json` — request-time validation; exit 1 with one `path: rule` line per error.
//! * `render --out DIR PARAMS.json` — `enb.conf`, `rr.conf` (srsRAN 4G) and `radio.json` (the
//!   resolved plan, read by `enb-sim`).
//! * `resources PARAMS.json` — the RT resource profile (JSON, or TOML with `--format toml`).
//! * `promise --stats FILE …` — exit 0/1 with one line per check (a SlapOS promise).
//! * `kpi --stats FILE` — KPIs as a flat JSON object (connection parameters).
//!
//! Exit codes: 0 success / promise passed, 1 invalid input / promise failed, 2 usage error.

mod host;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use radio::kpi::{self, PromiseConfig};
use radio::rtprofile::{self, Observed, RtOptions, Severity};
use radio::srsran::{self, SrsranOptions};
use radio::stats::{self, ParsedLog};
use radio::validate::{self, RequestError};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(
    name = "slapos-radio",
    version,
    about = "simpleran-compatible eNB/gNB parameters: validate, render, RT profile, promises, KPIs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate request parameters; exit 1 naming each invalid parameter.
    Validate {
        /// Parameters file (JSON; `{"_": "…"}` accepted), `-` for standard input.
        params: PathBuf,
        /// Print the resolved plan (JSON) on success.
        #[arg(long)]
        plan: bool,
    },
    /// Write enb.conf, rr.conf (srsRAN 4G) and radio.json into DIR.
    Render {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Parameters file.
        params: PathBuf,
        #[command(flatten)]
        srsran: SrsranArgs,
    },
    /// Print the RT resource profile the request needs.
    Resources {
        /// Parameters file.
        params: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        #[command(flatten)]
        rt: RtArgs,
    },
    /// Check the statistics (and optionally the host); exit 1 when a check fails.
    Promise {
        #[command(flatten)]
        stats: StatsArgs,
        /// Parameters file: thresholds default to its min_rxtx_delay / max_rx_sample_db /
        /// enb_stats_fetch_period (freshness = 3 periods), and --host uses its RT profile.
        #[arg(long)]
        params: Option<PathBuf>,
        /// Skip the cell-up check.
        #[arg(long)]
        no_cell_up: bool,
        /// Fail when the largest TTI processing time exceeds this, µs.
        #[arg(long)]
        max_latency_us: Option<f64>,
        /// Fail when missed TTIs / TTIs exceeds this ratio.
        #[arg(long)]
        max_miss_ratio: Option<f64>,
        /// Fail when the smallest TX/RX margin (rf.rxtx_delay_min) is below this, ms.
        #[arg(long)]
        min_rxtx_delay_ms: Option<f64>,
        /// Fail when the largest TX/RX margin (rf.rxtx_delay_max) exceeds this, ms.
        #[arg(long)]
        max_rxtx_delay_ms: Option<f64>,
        /// Fail when an RX antenna peaks at or above this, dBFS.
        #[arg(long)]
        max_rx_sample_db: Option<f64>,
        /// Also check host readiness for the RT profile (needs --params).
        #[arg(long, requires = "params")]
        host: bool,
        /// Root of /proc and /sys for --host.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// The node's RT CPU pool (computer label rt_cpus), CPU-list syntax.
        #[arg(long)]
        rt_cpus: Option<String>,
        /// CPUs of the pool reserved by other partitions.
        #[arg(long)]
        reserved_cpus: Option<String>,
        #[command(flatten)]
        rt: RtArgs,
    },
    /// Print KPIs of the last records as a flat JSON object.
    Kpi {
        #[command(flatten)]
        stats: StatsArgs,
        /// All values as strings (SlapOS' classic connection parameters).
        #[arg(long)]
        strings: bool,
    },
}

/// srsENB choices that are not request parameters.
#[derive(clap::Args)]
struct SrsranArgs {
    /// `[rf] device_name`.
    #[arg(long, default_value = "auto")]
    device_name: String,
    /// `[rf] device_args`.
    #[arg(long, default_value = "auto")]
    device_args: String,
    /// `[log] filename`.
    #[arg(long, default_value = "enb.log")]
    log_file: String,
    /// `[expert] metrics_csv_filename`.
    #[arg(long, default_value = "enb_metrics.csv")]
    metrics_csv: String,
    /// `[enb_files] sib_config` (srsRAN's stock file).
    #[arg(long, default_value = "sib.conf")]
    sib_config: String,
    /// `[enb_files] rb_config` (srsRAN's stock file).
    #[arg(long, default_value = "rb.conf")]
    rb_config: String,
}

impl SrsranArgs {
    fn options(self, nof_phy_threads: Option<u8>) -> SrsranOptions {
        let SrsranArgs {
            device_name,
            device_args,
            log_file,
            metrics_csv,
            sib_config,
            rb_config,
        } = self;
        SrsranOptions {
            device_name,
            device_args,
            log_file,
            metrics_csv,
            sib_config,
            rb_config,
            nof_phy_threads,
            ..SrsranOptions::default()
        }
    }
}

#[derive(clap::Args)]
struct StatsArgs {
    /// Statistics file (JSON lines); `FILE1` is read too when FILE has fewer records than the window.
    #[arg(long)]
    stats: PathBuf,
    /// Records in the window.
    #[arg(long, default_value_t = 5)]
    window: usize,
    /// Oldest acceptable last record, seconds (default: 3 periods with --params, else none).
    #[arg(long)]
    max_age: Option<f64>,
}

#[derive(clap::Args)]
struct RtArgs {
    /// FIFO priority.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=99))]
    priority: u8,
    /// Exclusive CPUs (default: derived from the cells).
    #[arg(long)]
    cpus: Option<u32>,
    /// RT runtime budget per second, µs.
    #[arg(long, default_value_t = 950_000)]
    rt_runtime_us: u64,
}

impl RtArgs {
    fn options(&self) -> RtOptions {
        RtOptions {
            priority: self.priority,
            rt_runtime_us: self.rt_runtime_us,
            cpus: self.cpus,
            ..RtOptions::default()
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Toml,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("slapos-radio: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn read_params(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("failed to read parameters from standard input")?;
        return Ok(s);
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("failed to read parameters {}", path.display()))
}

/// Validates, printing notes to stderr; an invalid request prints each error and returns None.
fn validated(path: &Path) -> anyhow::Result<Option<validate::Validated>> {
    let text = read_params(path)?;
    match validate::validate_json(&text) {
        Ok(v) => {
            for n in &v.notes {
                eprintln!("note: {n}");
            }
            Ok(Some(v))
        }
        Err(RequestError::Invalid(inv)) => {
            for n in &inv.notes {
                eprintln!("note: {n}");
            }
            for e in &inv.errors {
                eprintln!("invalid: {e}");
            }
            Ok(None)
        }
        Err(RequestError::Params(e)) => {
            eprintln!("invalid: {e}");
            Ok(None)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Validate { params, plan } => {
            let Some(v) = validated(&params)? else {
                return Ok(ExitCode::from(1));
            };
            if plan {
                println!("{}", serde_json::to_string_pretty(&v.plan)?);
            } else {
                println!(
                    "valid: {} LTE cell(s), {} NR cell(s)",
                    v.plan.lte_cells.len(),
                    v.plan.nr_cells.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Render {
            out,
            params,
            srsran,
        } => {
            let Some(v) = validated(&params)? else {
                return Ok(ExitCode::from(1));
            };
            let profile = rtprofile::derive(&v.plan, &RtOptions::default());
            let opts = srsran.options(profile.cpus.map(|c| c.clamp(1, 4) as u8));
            let r = match srsran::render(&v.plan, &opts) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("unsupported by srsRAN 4G: {e}");
                    return Ok(ExitCode::from(1));
                }
            };
            std::fs::create_dir_all(&out)
                .with_context(|| format!("failed to create {}", out.display()))?;
            for (name, text) in [
                ("enb.conf", r.enb_conf),
                ("rr.conf", r.rr_conf),
                ("radio.json", serde_json::to_string_pretty(&v.plan)? + "\n"),
            ] {
                write_atomic(&out.join(name), text.as_bytes())?;
            }
            for n in &r.notes {
                eprintln!("note: {n}");
            }
            println!("wrote enb.conf, rr.conf, radio.json to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Resources { params, format, rt } => {
            let Some(v) = validated(&params)? else {
                return Ok(ExitCode::from(1));
            };
            let p = rtprofile::derive(&v.plan, &rt.options());
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&p)?),
                Format::Toml => print!("{}", p.to_toml()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Promise {
            stats,
            params,
            no_cell_up,
            max_latency_us,
            max_miss_ratio,
            min_rxtx_delay_ms,
            max_rxtx_delay_ms,
            max_rx_sample_db,
            host,
            root,
            rt_cpus,
            reserved_cpus,
            rt,
        } => {
            let plan = match &params {
                Some(p) => match validated(p)? {
                    Some(v) => Some(v.plan),
                    None => return Ok(ExitCode::from(1)),
                },
                None => None,
            };
            let mon = plan.as_ref().map(|p| &p.monitoring);
            let cfg = PromiseConfig {
                window: stats.window,
                now: Some(now()),
                max_age_s: stats.max_age.or(mon.map(|m| 3.0 * m.stats_period_s)),
                cell_up: !no_cell_up,
                max_latency_us,
                max_miss_ratio,
                min_rxtx_delay_ms: min_rxtx_delay_ms
                    .or(mon.map(|m| m.min_rxtx_delay_ms).filter(|&v| v > 0.0)),
                max_rxtx_delay_ms,
                max_rx_sample_db: max_rx_sample_db.or(mon.map(|m| m.max_rx_sample_db)),
            };
            let log = read_stats(&stats.stats, stats.window)?;
            report_bad_lines(&log);
            let mut failed = false;
            for o in kpi::evaluate(&log.records, &cfg) {
                println!(
                    "{} {}: {}",
                    if o.ok { "OK  " } else { "FAIL" },
                    o.check,
                    o.message
                );
                failed |= !o.ok;
            }
            if host {
                let Some(plan) = &plan else {
                    bail!("--host needs --params")
                };
                let profile = rtprofile::derive(plan, &rt.options());
                let pool = rt_cpus
                    .as_deref()
                    .map(radio::cpulist::parse)
                    .transpose()
                    .map_err(anyhow::Error::msg)?;
                let reserved = reserved_cpus
                    .as_deref()
                    .map(radio::cpulist::parse)
                    .transpose()
                    .map_err(anyhow::Error::msg)?;
                let observed = kpi::window(&log.records, 1)
                    .last()
                    .and_then(|r| r.data.tti.as_ref())
                    .map(Observed::from);
                let facts = host::gather(&root, pool, reserved.unwrap_or_default(), observed);
                let problems = rtprofile::check_host(&profile, &facts);
                if problems.is_empty() {
                    println!(
                        "OK   host: ready for {} CPU(s) SCHED_FIFO {}",
                        profile.cpus.unwrap_or(0),
                        profile.priority.unwrap_or(0)
                    );
                }
                for p in problems {
                    println!(
                        "{} host: {p}",
                        if p.severity == Severity::Error {
                            "FAIL"
                        } else {
                            "WARN"
                        }
                    );
                    failed |= p.severity == Severity::Error;
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Kpi { stats, strings } => {
            let log = read_stats(&stats.stats, stats.window)?;
            report_bad_lines(&log);
            let k = kpi::kpis(&log.records, stats.window, Some(now()), stats.max_age);
            let k = if strings { kpi::stringify(&k) } else { k };
            println!("{}", serde_json::to_string(&k)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn report_bad_lines(log: &ParsedLog) {
    // The last line may be half-written by a running writer: not worth a warning.
    let last = log.errors.last().map(|(n, _)| *n);
    for (n, e) in &log.errors {
        if Some(*n) == last && matches!(e, stats::LineError::Truncated(_)) {
            continue;
        }
        eprintln!("warning: statistics line {n}: {e}");
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Bytes read from the end of a statistics file (enough for hundreds of records).
const TAIL_BYTES: u64 = 4 << 20;

fn read_tail(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf)?;
    if start > 0 {
        // Drop the partial first line.
        let cut = buf
            .iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |i| i + 1);
        buf.drain(..cut);
    }
    Ok(buf)
}

/// Records of FILE, preceded by those of the rotated FILE1 when FILE alone is too short.
fn read_stats(path: &Path, window: usize) -> anyhow::Result<ParsedLog> {
    let current = match read_tail(path) {
        Ok(b) => stats::parse_log(&b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ParsedLog::default(),
        Err(e) => {
            return Err(e).with_context(|| format!("failed to read statistics {}", path.display()));
        }
    };
    if current.records.len() >= window {
        return Ok(current);
    }
    let mut rotated = path.as_os_str().to_owned();
    rotated.push("1");
    match read_tail(Path::new(&rotated)) {
        Ok(b) => {
            let mut old = stats::parse_log(&b);
            old.records.extend(current.records);
            old.errors.extend(current.errors);
            Ok(old)
        }
        Err(_) => Ok(current),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("failed to rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
