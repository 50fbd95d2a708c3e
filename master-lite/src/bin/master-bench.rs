//! `master-bench`: figures of the master with its database on disk, next to the physical floor.
//!
//! Runs the real `slapos-master serve` (the binary next to this one) on a database in `--dir`
//! (default: the system temp dir) and times, over HTTP with the blocking client:
//!
//! * the **anchor**: one committed single-row SQLite transaction on the same directory with the
//!   master's settings (WAL, `synchronous = FULL`): the fsync floor every write call pays once;
//! * registration of a computer with 100 partitions (one transaction);
//! * a new-instance request (allocation), and an identical re-request (no change);
//! * the full desired state of a computer with 1000 allocated partitions;
//! * the server's peak RSS (`VmHWM`) and current RSS from `/proc/<pid>/status`;
//! * with `--fleet N` (default 1000; 0 skips): N computers × 10 partitions, all allocated, then
//!   **usage ingestion** (each node posts 10 periods × 10 partitions in batches of 100, from
//!   `--senders` threads) next to its anchor, partition reports (one row each) posted at the same
//!   concurrency; and **`GET /metrics` render time** next to `GET /v1/computers` of the same
//!   fleet (the anchor: the same rows read and serialised as JSON).
//!
//! ```text
//! cargo build --release -p master-lite --bins && target/release/master-bench [--dir DIR]
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod bench_util;
use bench_util::{fs_type, loadavg, proc_status};
use slapos_client::Client;
use slapos_proto::{
    ComputerId, InstanceRequest, InstanceTitle, PartitionId, PartitionSpec, RegisterComputer,
    SoftwareType, SoftwareUrl, SupplyRequest, SupplyState,
};

const SR: &str = "/srv/bench/software.toml";

struct Args {
    dir: PathBuf,
    requests: usize,
    registrations: usize,
    gets: usize,
    anchor: usize,
    server: PathBuf,
    fleet: usize,
    senders: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        dir: std::env::temp_dir(),
        requests: 200,
        registrations: 30,
        gets: 50,
        anchor: 200,
        server: std::env::current_exe()?.with_file_name("slapos-master"),
        fleet: 1000,
        senders: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(val()?),
            "--requests" => a.requests = val()?.parse()?,
            "--registrations" => a.registrations = val()?.parse()?,
            "--gets" => a.gets = val()?.parse()?,
            "--anchor" => a.anchor = val()?.parse()?,
            "--server" => a.server = PathBuf::from(val()?),
            "--fleet" => a.fleet = val()?.parse()?,
            "--senders" => a.senders = val()?.parse::<usize>()?.max(1),
            "-h" | "--help" => {
                println!(
                    "master-bench [--dir DIR] [--requests N] [--registrations N] [--gets N] \
                     [--anchor N] [--server PATH-TO-slapos-master] [--fleet N] [--senders N]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(a)
}

/// Median and 99th percentile.
fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let p99 = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
    (v[v.len() / 2], v[p99])
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn row(what: &str, n: usize, v: Vec<Duration>) {
    let (med, p99) = stats(v);
    println!(
        "{what:<52} {n:>5}  median {:>12}  p99 {:>12}",
        ms(med),
        ms(p99)
    );
}

/// The raw cost of one committed one-row transaction, with the master's pragmas, on a fresh
/// database file `name` in `dir`. `warm`: first grow the WAL past the autocheckpoint size once,
/// so the timed commits overwrite WAL blocks already allocated (the master's steady state)
/// instead of appending to a growing file (its first minutes). `gap`: idle time before each
/// commit (an HTTP call also leaves the disk idle between commits; with back-to-back commits a
/// journal commit of the file system may still be running when the next fsync arrives).
fn anchor(dir: &Path, name: &str, n: usize, warm: bool, gap: Duration) -> Result<Vec<Duration>> {
    let path = dir.join(name);
    let conn = rusqlite::Connection::open(&path)?;
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")?;
    if warm {
        // ~6 MB in one transaction: > 1000 pages, so the commit checkpoints and the next
        // transaction restarts the WAL from its beginning.
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for _ in 0..1500 {
            conn.execute("INSERT INTO t (v) VALUES (zeroblob(4000))", [])?;
        }
        conn.execute_batch("COMMIT")?;
        conn.execute_batch("DELETE FROM t")?;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let t = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("row {i}")])?;
        conn.execute_batch("COMMIT")?;
        out.push(t.elapsed());
    }
    Ok(out)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(server: &Path, db: &Path) -> Result<(Server, String)> {
    let mut child = Command::new(server)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("SLAPOS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "start {} (build it: cargo build --release -p master-lite --bins)",
                server.display()
            )
        })?;
    let out = child.stdout.take().context("server stdout")?;
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    let url = master_lite::listening_url(&line)
        .with_context(|| format!("unexpected server output {line:?}"))?
        .to_owned();
    Ok((server, url))
}

fn computer(id: &str, partitions: usize) -> Result<RegisterComputer> {
    Ok(RegisterComputer {
        id: ComputerId::parse(id)?,
        partitions: (0..partitions)
            .map(|i| {
                Ok(PartitionSpec {
                    id: PartitionId::parse(format!("slappart{i}"))?,
                    addresses: vec![format!(
                        "10.{}.{}.{}",
                        i / 65536 % 256,
                        i / 256 % 256,
                        i % 256
                    )],
                    interface: None,
                    uid: None,
                })
            })
            .collect::<Result<_>>()?,
        labels: [
            ("arch".parse()?, "x86_64".to_owned()),
            ("region".parse()?, "bench".to_owned()),
        ]
        .into(),
    })
}

fn request(title: &str, computer: &str) -> Result<InstanceRequest> {
    Ok(InstanceRequest {
        title: InstanceTitle::parse(title)?,
        software_url: SoftwareUrl::parse(SR)?,
        software_type: SoftwareType::default(),
        parameters: [
            ("port".to_owned(), serde_json::json!("8080")),
            ("name".to_owned(), serde_json::json!(title)),
        ]
        .into_iter()
        .collect(),
        sla: [("computer_guid".to_owned(), computer.to_owned())].into(),
        state: None,
        shared: false,
    })
}

fn ready(c: &Client, id: &str, partitions: usize) -> Result<()> {
    c.register(&computer(id, partitions)?)?;
    c.supply(
        &ComputerId::parse(id)?,
        &SupplyRequest {
            url: SoftwareUrl::parse(SR)?,
            state: SupplyState::Available,
        },
    )?;
    Ok(())
}

/// Run `f(i)` for i in 0..n on `senders` threads; the wall time.
fn spread(n: usize, senders: usize, f: impl Fn(usize) -> Result<()> + Sync) -> Result<Duration> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..senders)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        f(i)?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a sender panicked"))?)
    })?;
    Ok(t.elapsed())
}

/// Usage ingestion and `/metrics` on a fleet of `a.fleet` computers × 10 partitions.
fn fleet(a: &Args, c: &Client) -> Result<()> {
    const PARTS: usize = 10;
    const PERIODS: u64 = 10;
    let n = a.fleet;
    println!();
    let fill = spread(n, a.senders, |i| {
        let id = format!("F{i}");
        ready(c, &id, PARTS)?;
        for p in 0..PARTS {
            c.request(&request(&format!("f{i}-{p}"), &id)?)?;
        }
        Ok(())
    })?;
    println!(
        "fleet: {n} computers x {PARTS} partitions registered and allocated in {:.1} s",
        fill.as_secs_f64()
    );
    // Anchor: one partition report per call (one row written), same senders.
    let reports = n * PARTS;
    let took = spread(reports, a.senders, |k| {
        let (i, p) = (k / PARTS, k % PARTS);
        let info = c.instance(&InstanceTitle::parse(format!("f{i}-{p}"))?, None)?;
        c.report_partition(
            &ComputerId::parse(format!("F{i}"))?,
            &PartitionId::parse(format!("slappart{p}"))?,
            &slapos_proto::PartitionReport {
                state: slapos_proto::InstanceState::Started,
                revision: info.revision,
                promises: Vec::new(),
                error: None,
            },
        )?;
        Ok(())
    })?;
    println!(
        "{:<52} {reports:>5}  {:>9.0} calls/s (each also reads the instance)",
        "ANCHOR partition reports, one row each",
        reports as f64 / took.as_secs_f64()
    );
    let t0 = 1_700_000_000_000u64;
    let took = spread(n, a.senders, |i| {
        let mut samples = Vec::with_capacity(PARTS * PERIODS as usize);
        for p in 0..PARTS {
            for k in 0..PERIODS {
                samples.push(slapos_proto::UsageSample {
                    partition: PartitionId::parse(format!("slappart{p}"))?,
                    instance: Some(InstanceTitle::parse(format!("f{i}-{p}"))?),
                    start_ms: t0 + k * 60_000,
                    end_ms: t0 + (k + 1) * 60_000,
                    cpu_ns: 1_000_000_000,
                    memory_bytes: 64 << 20,
                    memory_peak_bytes: 80 << 20,
                    io_read_bytes: 4096,
                    io_write_bytes: 8192,
                    disk_bytes: 100 << 20,
                    tasks: 4,
                    folded: 1,
                });
            }
        }
        let ack = c.post_usage(
            &ComputerId::parse(format!("F{i}"))?,
            &slapos_proto::UsageBatch { samples },
        )?;
        if ack.stored as usize != PARTS * PERIODS as usize {
            bail!("batch of F{i}: {ack:?}");
        }
        Ok(())
    })?;
    let samples = n * PARTS * PERIODS as usize;
    println!(
        "{:<52} {samples:>5}  {:>9.0} samples/s ({:.1} batches/s)",
        "usage ingestion, batches of 100",
        samples as f64 / took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let report = c.usage(t0, t0 + PERIODS * 60_000, slapos_proto::UsageBy::Computer)?;
    if report.total.samples != samples as u64 {
        bail!(
            "the report counts {} samples, {samples} were sent",
            report.total.samples
        );
    }
    let mut anchor = Vec::new();
    let mut render = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        std::hint::black_box(c.computers()?);
        anchor.push(t.elapsed());
        let t = Instant::now();
        bytes = c.metrics()?.len();
        render.push(t.elapsed());
    }
    row(
        &format!("ANCHOR GET /v1/computers, {n} computers"),
        5,
        anchor,
    );
    row(
        &format!(
            "GET /metrics, {} partitions ({} kB)",
            n * PARTS,
            bytes / 1000
        ),
        5,
        render,
    );
    Ok(())
}

fn main() -> Result<()> {
    let a = args()?;
    let work = a.dir.join(format!("master-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let result = run(&a, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run(a: &Args, work: &Path) -> Result<()> {
    println!(
        "master-bench: database directory {} ({})",
        work.display(),
        fs_type(work)
    );
    println!(
        "machine: {} CPUs, load average {}; server {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        a.server.display()
    );
    println!();

    let gap = Duration::from_micros(500);
    row(
        "ANCHOR one-row commit, growing WAL (WAL, sync FULL)",
        a.anchor,
        anchor(work, "anchor-cold.db", a.anchor, false, Duration::ZERO)?,
    );
    row(
        "ANCHOR one-row commit, reused WAL",
        a.anchor,
        anchor(work, "anchor-warm.db", a.anchor, true, Duration::ZERO)?,
    );
    row(
        "ANCHOR one-row commit, reused WAL, 0.5 ms apart",
        a.anchor,
        anchor(work, "anchor-gap.db", a.anchor, true, gap)?,
    );

    let (server, url) = start(&a.server, &work.join("master.db"))?;
    let pid = server.0.id();
    let c = Client::new(&url)?;
    c.health()?;

    // Registration of a new 100-partition computer.
    let mut regs = Vec::with_capacity(a.registrations);
    for i in 0..a.registrations {
        let reg = computer(&format!("REG-{i}"), 100)?;
        let t = Instant::now();
        c.register(&reg)?;
        regs.push(t.elapsed());
    }
    row(
        "register a new computer with 100 partitions",
        a.registrations,
        regs,
    );
    let reg = computer("REG-0", 100)?;
    let mut again = Vec::with_capacity(a.registrations);
    for _ in 0..a.registrations {
        let t = Instant::now();
        c.register(&reg)?;
        again.push(t.elapsed());
    }
    row("re-register it unchanged", a.registrations, again);

    // New-instance requests (allocation), then identical re-requests.
    ready(&c, "REQ", a.requests)?;
    let mut reqs = Vec::with_capacity(a.requests);
    for i in 0..a.requests {
        let r = request(&format!("inst-{i}"), "REQ")?;
        let t = Instant::now();
        c.request(&r)?;
        reqs.push(t.elapsed());
    }
    row("request a new instance (allocates)", a.requests, reqs);
    let mut same = Vec::with_capacity(a.requests);
    for i in 0..a.requests {
        let r = request(&format!("inst-{i}"), "REQ")?;
        let t = Instant::now();
        c.request(&r)?;
        same.push(t.elapsed());
    }
    row("re-request it identically (no change)", a.requests, same);

    // Full desired state of a computer with 1000 allocated partitions.
    ready(&c, "BIG", 1000)?;
    let fill = Instant::now();
    for i in 0..1000 {
        c.request(&request(&format!("big-{i}"), "BIG")?)?;
    }
    let fill = fill.elapsed();
    let big = ComputerId::parse("BIG")?;
    let d = c.desired(&big, None, None)?.context("desired state")?;
    let allocated = d.partitions.iter().filter(|p| p.instance.is_some()).count();
    if allocated != 1000 {
        bail!("expected 1000 allocated partitions, found {allocated}");
    }
    let bytes = serde_json::to_vec(&d)?.len();
    let mut gets = Vec::with_capacity(a.gets);
    for _ in 0..a.gets {
        let t = Instant::now();
        let d = c.desired(&big, None, None)?;
        gets.push(t.elapsed());
        std::hint::black_box(d);
    }
    row(
        &format!(
            "GET desired, 1000 allocated partitions ({} kB)",
            bytes / 1000
        ),
        a.gets,
        gets,
    );
    println!(
        "{:<52} {:>5}  total  {:>12}",
        "(filling BIG: 1000 sequential requests)",
        1000,
        ms(fill)
    );

    if a.fleet > 0 {
        fleet(a, &c)?;
    }

    row(
        "ANCHOR again after the runs, reused WAL, 0.5 ms apart",
        a.anchor,
        anchor(work, "anchor-after.db", a.anchor, true, gap)?,
    );
    println!();
    println!("load average at the end: {}", loadavg());
    println!(
        "server RSS: peak (VmHWM) {}, now (VmRSS) {}; {} computers, {} instances",
        proc_status(pid, "VmHWM").unwrap_or_else(|| "?".into()),
        proc_status(pid, "VmRSS").unwrap_or_else(|| "?".into()),
        c.computers()?.len(),
        c.instances()?.len()
    );
    drop(server);
    Ok(())
}
