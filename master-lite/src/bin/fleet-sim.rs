//! `fleet-sim`: a simulated fleet against real `slapos-master serve` replicas (issue 13).
//!
//! ```sh
//! cargo build --release -p master-lite --bins
//! target/release/fleet-sim --engine postgres --replicas 2 --nodes 10000 --partitions 10 \
//!     --requests 2000 --requesters 32
//! target/release/fleet-sim --engine sqlite --nodes 0 --requests 10000 --requesters 1,32
//! ```
//!
//! It starts the replicas (on PostgreSQL: a throw-away server with durable commits, see
//! `master_lite::testpg`; on SQLite one replica over a file), all with one `--tls-dir` (the
//! shared CA). Then:
//!
//! 1. the operator (an admin certificate) registers the computers (M partitions each) and
//!    supplies a release;
//! 2. each simulated node enrolls its computer (one-time token, its own certificate), opens one
//!    mTLS keep-alive connection to a replica (round robin) and holds its long poll on its
//!    desired state, as `slapos-node` does, polling again after each answer;
//! 3. for each requester count C, C requesters issue K requests for new instances in all,
//!    each aimed at one computer (`computer_guid`), and the node of that computer records when
//!    its poll was woken.
//!
//! Printed: requests/s, request latency p50/p99, change → node woken p50/p99 (from the
//! request's send to the node's answer, so it includes the request's own latency), polls
//! held, RSS and CPU of each replica (and RSS per held poll), the simulator's own CPU, errors.
//! After each desired state, a node reports every partition whose assignment revision is new
//! (`POST …/partitions/{p}/report`, on its poll's connection), as `slapos-node` does once it
//! converged: each request thus costs the master a second write, the node's.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use master_lite::store::{DbUrl, Store};
use slapos_client::Client;
use slapos_proto::{
    ComputerId, DesiredState, InstanceRequest, PartitionId, PartitionReport, PartitionSpec,
    RegisterComputer, SoftwareType, SoftwareUrl, SupplyRequest, SupplyState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "bench_util/mod.rs"]
mod bench_util;

const SR: &str = "/srv/sr/fleet.toml";

#[derive(Parser)]
struct Args {
    /// `sqlite` or `postgres`.
    #[arg(long, default_value = "postgres")]
    engine: String,
    /// Replicas (SQLite: always 1).
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Simulated nodes (one computer, one connection each).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Partitions per computer.
    #[arg(long, default_value_t = 10)]
    partitions: usize,
    /// Requests per requester phase.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Concurrent requesters, one phase per value (`1,32`).
    #[arg(long, value_delimiter = ',', default_value = "32")]
    requesters: Vec<usize>,
    /// The `slapos-master` binary [default: next to this one].
    #[arg(long)]
    master: Option<PathBuf>,
}

/// A running replica.
struct Replica {
    child: Child,
    url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn rss_kib(&self) -> u64 {
        kib(bench_util::proc_status(self.pid(), "VmRSS").unwrap_or_default())
    }
    /// CPU seconds used so far (user + system).
    fn cpu_secs(&self) -> f64 {
        bench_util::cpu_secs(self.pid())
    }
}

fn kib(v: String) -> u64 {
    v.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn self_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

fn spawn_replica(bin: &Path, db: &str, tls: &Path) -> Result<Replica> {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--db", db, "--tls-dir"])
        .arg(tls)
        .env("SLAPOS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start slapos-master serve")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let url = master_lite::listening_url(&line)
        .with_context(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    Ok(Replica { child, url })
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// One HTTP/1.1 exchange on a kept-alive stream: status, `ETag` (without quotes). With
/// `keep_body`, `buf` holds the answer's body afterwards (a `Content-Length` one).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    req: &str,
    keep_body: bool,
) -> std::io::Result<(u16, Option<String>)> {
    s.write_all(req.as_bytes()).await?;
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (mut len, mut chunked, mut etag) = (0usize, false, None);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => len = v.parse().unwrap_or(0),
            "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
            "etag" => etag = Some(v.trim_matches('"').to_owned()),
            _ => {}
        }
    }
    if chunked {
        while !buf[head_end..].ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    } else {
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    if keep_body && !chunked {
        buf.truncate(head_end + len);
        buf.drain(..head_end);
    } else {
        buf.clear();
        buf.shrink_to(4096);
    }
    Ok((status, etag))
}

/// What the nodes share with the requesters.
struct Board {
    /// Per computer: ns since `t0` when a request for it was sent (0: none yet).
    sent: Vec<AtomicU64>,
    /// Per computer: ns since `t0` when its node was woken after that (0: not yet).
    woken: Vec<AtomicU64>,
    held: AtomicUsize,
    errors: AtomicUsize,
    /// Partition reports the nodes sent (and the master accepted).
    reports: AtomicUsize,
    t0: Instant,
}

impl Board {
    fn now(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn tls_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let certs =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// An mTLS connection to the replica at `addr` (`host:port`).
async fn connect(addr: &str, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let name =
        rustls::pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

/// What the requesters of one phase send: request `k` for a new instance on its computer.
struct Plan {
    tag: String,
    targets: Vec<usize>,
    nodes: usize,
    computers: usize,
}

impl Plan {
    /// The computer request `k` aims at: a node's (`N…`), else one without a node (`X…`).
    fn computer(&self, k: usize) -> String {
        if self.nodes > 0 {
            format!("N{}", self.targets[k])
        } else {
            format!("X{}", self.nodes + (k % (self.computers - self.nodes)))
        }
    }

    /// The whole HTTP/1.1 request `k`: `POST /v1/instances` with its JSON body.
    fn request(&self, k: usize) -> Result<String> {
        let mut sla = std::collections::BTreeMap::new();
        sla.insert("computer_guid".to_owned(), self.computer(k));
        let req = InstanceRequest {
            title: slapos_proto::InstanceTitle::parse(format!("{}-{k}", self.tag))?,
            software_url: SoftwareUrl::parse(SR)?,
            software_type: SoftwareType::default(),
            parameters: Default::default(),
            sla,
            state: None,
            shared: false,
        };
        let body = serde_json::to_string(&req)?;
        Ok(format!(
            "POST /v1/instances HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }
}

/// What one requester phase saw: when its clock started, each success's latency, failures.
struct Run {
    start: Instant,
    lat: Vec<Duration>,
    errors: usize,
}

/// `c` requesters, each on its own kept-alive mTLS connection (round robin over `addrs`),
/// send `plan`'s `n` requests in all. They speak HTTP/1.1 themselves, as the nodes do, so the
/// simulator costs little beside the master. Every connection is open, one call answered,
/// before the clock starts.
async fn requesters(
    c: usize,
    n: usize,
    addrs: &[String],
    cfg: Arc<rustls::ClientConfig>,
    plan: Arc<Plan>,
    board: Arc<Board>,
) -> Result<Run> {
    let mut conns = Vec::with_capacity(c);
    for t in 0..c {
        let mut s = connect(&addrs[t % addrs.len()], cfg.clone()).await?;
        let mut buf = Vec::new();
        let health = "GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let (status, _) = exchange(&mut s, &mut buf, health, false).await?;
        if status != 200 {
            bail!("requester {t}: GET /v1/health answered {status}");
        }
        conns.push(s);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut s in conns {
        let (next, plan, board) = (next.clone(), plan.clone(), board.clone());
        tasks.spawn(async move {
            let (mut lat, mut errors, mut buf) = (Vec::new(), 0usize, Vec::new());
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return (lat, errors);
                }
                let req = match plan.request(k) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("request {k}: {e}");
                        errors += 1;
                        continue;
                    }
                };
                if plan.nodes > 0 {
                    let target = plan.targets[k];
                    let _ = board.sent[target].compare_exchange(
                        0,
                        board.now(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    board.woken[target].store(0, Ordering::Relaxed);
                }
                let t = Instant::now();
                match exchange(&mut s, &mut buf, &req, false).await {
                    Ok((200..=299, _)) => lat.push(t.elapsed()),
                    other => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("request {k}: {other:?}");
                        }
                        if other.is_err() {
                            // The connection is gone: this requester stops.
                            return (lat, errors);
                        }
                    }
                }
            }
        });
    }
    let mut run = Run {
        start,
        lat: Vec::with_capacity(n),
        errors: 0,
    };
    while let Some(done) = tasks.join_next().await {
        let (lat, errors) = done?;
        run.lat.extend(lat);
        run.errors += errors;
    }
    Ok(run)
}

/// One node: connect, read the desired state, then hold long polls forever.
async fn node(
    i: usize,
    addr: String,
    cfg: Arc<rustls::ClientConfig>,
    board: Arc<Board>,
    gate: Arc<tokio::sync::Semaphore>,
) {
    let path = format!("/v1/computers/N{i}/desired");
    let mut buf = Vec::new();
    // Held until the first answer: the client's side of a handshake ends before the master has
    // checked the certificate, and the master caps unproven connections per source (all these
    // nodes share one uid), so connections in flight are bounded until the master answered.
    let permit = gate.acquire().await.ok();
    let mut s = match connect(&addr, cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("node {i}: connect: {e}");
            board.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let first = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut seen = std::collections::HashMap::new();
    let mut etag = match exchange(&mut s, &mut buf, &first, true).await {
        Ok((200, Some(e))) => e,
        other => {
            eprintln!("node {i}: first read: {other:?}");
            board.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    drop(permit);
    loop {
        if let Err(e) = report(i, &mut s, &mut buf, &mut seen, &board).await {
            eprintln!("node {i}: report: {e}");
            board.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let req = format!("GET {path}?etag={etag}&wait=60 HTTP/1.1\r\nHost: localhost\r\n\r\n");
        board.held.fetch_add(1, Ordering::Relaxed);
        let r = exchange(&mut s, &mut buf, &req, true).await;
        board.held.fetch_sub(1, Ordering::Relaxed);
        match r {
            Ok((200, Some(e))) => {
                etag = e;
                if board.sent[i].load(Ordering::Relaxed) != 0 {
                    let _ = board.woken[i].compare_exchange(
                        0,
                        board.now(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
            Ok((304, _)) => buf.clear(),
            other => {
                eprintln!("node {i}: poll: {other:?}");
                board.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// As `slapos-node` after a desired state (in `buf`): report every partition whose assignment
/// revision it has not reported yet, in the state asked for (the simulated node converges at
/// once, with no promises), on the same connection.
async fn report<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    i: usize,
    s: &mut S,
    buf: &mut Vec<u8>,
    seen: &mut std::collections::HashMap<String, u64>,
    board: &Board,
) -> Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let desired: DesiredState = serde_json::from_slice(buf).context("desired state")?;
    buf.clear();
    buf.shrink_to(4096);
    for p in desired.partitions {
        let Some(a) = p.instance else { continue };
        if seen.get(p.id.as_str()) == Some(&a.revision) {
            continue;
        }
        let body = serde_json::to_string(&PartitionReport {
            state: a.state,
            revision: a.revision,
            promises: Vec::new(),
            error: None,
        })?;
        let req = format!(
            "POST /v1/computers/N{i}/partitions/{}/report HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            p.id,
            body.len()
        );
        match exchange(s, buf, &req, false).await? {
            (200..=299, _) => {
                seen.insert(p.id.to_string(), a.revision);
                board.reports.fetch_add(1, Ordering::Relaxed);
            }
            (status, _) => bail!("partition {} report answered {status}", p.id),
        }
    }
    Ok(())
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn registration(id: &str, partitions: usize) -> RegisterComputer {
    RegisterComputer {
        id: ComputerId::parse(id).expect("valid id"),
        partitions: (0..partitions)
            .map(|p| PartitionSpec {
                id: PartitionId::parse(format!("slappart{p}")).expect("valid id"),
                addresses: vec![],
                interface: None,
                uid: None,
            })
            .collect(),
        labels: Default::default(),
    }
}

/// Run `f(&mut state, i)` for `i in 0..n` over `threads` threads, each with its own state
/// (a kept-alive client) made by `init(thread)`.
/// Run `f` on `n` items from `threads` threads, each with the state `init` made for it; the
/// items start once every thread's state is ready (connections open), at the returned instant.
fn parallel<S, I, F>(n: usize, threads: usize, init: I, f: F) -> Result<Instant>
where
    I: Fn(usize) -> Result<S> + Sync,
    F: Fn(&mut S, usize) -> Result<()> + Sync,
{
    let next = AtomicUsize::new(0);
    let ready = std::sync::Barrier::new(threads + 1);
    let start = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (next, init, f, ready) = (&next, &init, &f, &ready);
                s.spawn(move || -> Result<()> {
                    let state = init(t);
                    ready.wait();
                    let mut state = state?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        f(&mut state, i)?;
                    }
                })
            })
            .collect();
        ready.wait();
        let start = Instant::now();
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok::<_, anyhow::Error>(start)
    })?;
    Ok(start)
}

/// What one requester phase measured.
struct Phase {
    requesters: usize,
    rate: f64,
    p99: Duration,
    /// Failed requests, nodes not woken, node errors.
    errors: usize,
    woken_p99: Option<Duration>,
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// The issue-13 goals this run measured, each with its verdict.
fn summary(args: &Args, replicas: usize, phases: &[Phase], per_poll: Option<f64>) {
    println!(
        "\nsummary: engine {}, {replicas} replica(s), {} nodes; load average {}",
        args.engine,
        args.nodes,
        bench_util::loadavg()
    );
    for p in phases {
        println!(
            "  {:>3} requester(s): {:.0} req/s, p99 {}, errors {}",
            p.requesters,
            p.rate,
            ms(p.p99),
            p.errors
        );
    }
    if let Some(per) = per_poll {
        println!(
            "goal memory per held poll: <= 16 KB, measured {per:.1} KB: {}",
            met(per <= 16.0)
        );
    }
    if let Some(w) = phases.iter().filter_map(|p| p.woken_p99).max() {
        let errors: usize = phases.iter().map(|p| p.errors).sum();
        println!(
            "goal change -> node woken p99: <= 1 s with no errors, measured {} ({errors} \
             errors): {}",
            ms(w),
            met(w <= Duration::from_secs(1) && errors == 0)
        );
    }
    let one = phases.iter().find(|p| p.requesters == 1);
    for p in phases.iter().filter(|p| p.requesters > 1) {
        let Some(one) = one else { break };
        let ratio = p.rate / one.rate.max(1e-9);
        if args.engine == "sqlite" {
            println!(
                "goal SQLite {} requesters: >= 5x the 1-requester rate, measured {ratio:.2}x: {}",
                p.requesters,
                met(ratio >= 5.0)
            );
            println!(
                "goal SQLite {} requesters p99: <= 20 ms, measured {}: {}",
                p.requesters,
                ms(p.p99),
                met(p.p99 <= Duration::from_millis(20) && p.errors == 0)
            );
        } else {
            println!(
                "PostgreSQL, {replicas} replicas, {} requesters: {:.0} req/s = {ratio:.2}x the \
                 1-requester rate, p99 {} (printed beside SQLite's; no goal)",
                p.requesters,
                p.rate,
                ms(p.p99)
            );
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let nofile = master_lite::server::raise_nofile();
    let bin = match &args.master {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("slapos-master"),
    };
    let dir = TempDir(std::env::temp_dir().join(format!("fleet-sim-{}", std::process::id())));
    std::fs::create_dir_all(dir.path())?;
    let tls = dir.path().join("tls");
    let pg;
    let (db, replicas) = match args.engine.as_str() {
        "sqlite" => (
            format!("sqlite:{}", dir.path().join("master.db").display()),
            1,
        ),
        "postgres" => {
            pg = master_lite::testpg::TestPg::start_with(true)
                .map_err(|s| anyhow::anyhow!("PostgreSQL: {}", s.0))?;
            (pg.create_db("fleet")?, args.replicas.max(1))
        }
        other => bail!("--engine sqlite|postgres, not {other}"),
    };
    let dburl: DbUrl = db.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    // The operator's certificate; this also creates the CA the replicas share.
    let ops = dir.path().join("ops");
    let out = Command::new(&bin)
        .args([
            "user",
            "create",
            "ops",
            "--admin",
            "--create-db",
            "--db",
            &db,
            "--out",
        ])
        .arg(&ops)
        .arg("--tls-dir")
        .arg(&tls)
        .output()?;
    if !out.status.success() {
        bail!("user create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ca = std::fs::read_to_string(ops.join("ca.pem"))?;
    let (ops_cert, ops_key) = (
        std::fs::read_to_string(ops.join("ops.pem"))?,
        std::fs::read_to_string(ops.join("ops.key"))?,
    );
    let reps: Vec<Replica> = (0..replicas)
        .map(|_| spawn_replica(&bin, &db, &tls))
        .collect::<Result<_>>()?;
    let urls: Vec<String> = reps.iter().map(|r| r.url.clone()).collect();
    println!(
        "fleet-sim: engine {}, {replicas} replica(s), {} nodes x {} partitions, nofile {nofile}; \
         scratch on {}, load average {}",
        args.engine,
        args.nodes,
        args.partitions,
        bench_util::fs_type(dir.path()),
        bench_util::loadavg()
    );
    let max_req = args.requesters.len() * args.requests;
    let computers = args.nodes.max(max_req.div_ceil(args.partitions.max(1)) + 1);
    let ops_client =
        |r: usize| Client::with_identity(&urls[r % urls.len()], &ca, &ops_cert, &ops_key);

    // 1. Computers and the release.
    let t = Instant::now();
    parallel(
        computers,
        8,
        |t| Ok(ops_client(t)?),
        |c, i| {
            let id = if i < args.nodes {
                format!("N{i}")
            } else {
                format!("X{i}")
            };
            c.register(&registration(&id, args.partitions))?;
            c.supply(
                &ComputerId::parse(&id)?,
                &SupplyRequest {
                    url: SoftwareUrl::parse(SR)?,
                    state: SupplyState::Available,
                },
            )?;
            Ok(())
        },
    )?;
    println!(
        "registered {computers} computers in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 2. Nodes: enrollment, then held polls.
    let t = Instant::now();
    let store = std::sync::Mutex::new(Store::open_url(&dburl, master_lite::now_ms())?);
    let creds: Vec<std::sync::Mutex<Option<slapos_proto::identity::Credentials>>> = (0..args.nodes)
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    parallel(
        args.nodes,
        8,
        |_| Ok(()),
        |_, i| {
            let token = hex::encode(i.to_le_bytes())
                + &hex::encode(std::process::id().to_le_bytes())
                + &format!("{:x}", master_lite::now_ms());
            let computer = ComputerId::parse(format!("N{i}"))?;
            // On PostgreSQL this insert is SERIALIZABLE beside the replicas' enrollments, so
            // it may lose a serialization race: run it again, as the master's `Db` does.
            master_lite::db::retrying(
                || {
                    let now = master_lite::now_ms();
                    store
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .create_token(
                            &master_lite::certs::token_hash(&token),
                            &computer,
                            now,
                            now + 3_600_000,
                        )
                },
                master_lite::store::StoreError::is_retryable,
            )?;
            let cred = Client::enroll(&urls[i % urls.len()], &ca, &token)?;
            *creds[i].lock().map_err(|_| anyhow::anyhow!("creds lock"))? = Some(cred);
            Ok(())
        },
    )?;
    drop(store);
    println!(
        "enrolled {} nodes in {:.1} s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );
    let rss_before: Vec<u64> = reps.iter().map(Replica::rss_kib).collect();

    let board = Arc::new(Board {
        sent: (0..computers).map(|_| AtomicU64::new(0)).collect(),
        woken: (0..computers).map(|_| AtomicU64::new(0)).collect(),
        held: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
        reports: AtomicUsize::new(0),
        t0: Instant::now(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let gate = Arc::new(tokio::sync::Semaphore::new(128));
    let addrs: Vec<String> = urls
        .iter()
        .map(|u| {
            u.trim_start_matches("https://")
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    let ops_cfg = tls_config(&ca, &ops_cert, &ops_key)?;
    for (i, c) in creds.into_iter().enumerate() {
        let c = c
            .into_inner()
            .map_err(|_| anyhow::anyhow!("creds lock"))?
            .context("credentials")?;
        let cfg = tls_config(&ca, &c.cert_pem, &c.key_pem)?;
        let addr = addrs[i % addrs.len()].clone();
        rt.spawn(node(i, addr, cfg, board.clone(), gate.clone()));
    }
    let t = Instant::now();
    while board.held.load(Ordering::Relaxed) + board.errors.load(Ordering::Relaxed) < args.nodes
        && t.elapsed() < Duration::from_secs(600)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let held = board.held.load(Ordering::Relaxed);
    println!(
        "polls held: {held} of {} after {:.1} s (errors {})",
        args.nodes,
        t.elapsed().as_secs_f64(),
        board.errors.load(Ordering::Relaxed)
    );
    let mut per_poll: Option<f64> = None;
    for (r, rep) in reps.iter().enumerate() {
        let now = rep.rss_kib();
        let per = if args.nodes > 0 {
            (now.saturating_sub(rss_before[r]) as f64) / (held as f64 / replicas as f64).max(1.0)
        } else {
            0.0
        };
        println!(
            "replica {r}: RSS {} MB before the polls, {} MB holding them: {:.1} KB per held poll",
            rss_before[r] / 1024,
            now / 1024,
            per
        );
        if args.nodes > 0 {
            per_poll = Some(per_poll.map_or(per, |p: f64| p.max(per)));
        }
    }

    // 3. Requester phases.
    let mut phases: Vec<Phase> = Vec::new();
    for (next_target, &c) in args.requesters.iter().enumerate() {
        let cpu0: Vec<f64> = reps.iter().map(Replica::cpu_secs).collect();
        let sim0 = self_cpu();
        let reports0 = board.reports.load(Ordering::Relaxed);
        let targets: Vec<usize> = (0..args.requests)
            .map(|k| {
                if args.nodes > 0 {
                    (next_target + k * args.nodes / args.requests.max(1)) % args.nodes
                } else {
                    k
                }
            })
            .collect();
        let plan = Arc::new(Plan {
            tag: format!("c{c}"),
            targets: targets.clone(),
            nodes: args.nodes,
            computers,
        });
        let run = rt.block_on(requesters(
            c,
            args.requests,
            &addrs,
            ops_cfg.clone(),
            plan,
            board.clone(),
        ))?;
        let (phase, mut lat) = (run.start, run.lat);
        let errors = AtomicUsize::new(run.errors);
        let took = phase.elapsed();
        std::thread::sleep(Duration::from_secs(2)); // late wake-ups land
        let n = lat.len();
        let mut phase = Phase {
            requesters: c,
            rate: n as f64 / took.as_secs_f64(),
            p99: pct(&mut lat, 0.99),
            errors: errors.load(Ordering::Relaxed),
            woken_p99: None,
        };
        println!(
            "\n{c} requester(s), {} requests: {:.0} req/s, latency p50 {} p99 {}, errors {}",
            args.requests,
            n as f64 / took.as_secs_f64(),
            ms(pct(&mut lat, 0.5)),
            ms(pct(&mut lat, 0.99)),
            errors.load(Ordering::Relaxed)
        );
        if args.nodes > 0 {
            let mut woke = Vec::new();
            let mut missed = 0;
            for &t in &targets {
                let (s, w) = (
                    board.sent[t].swap(0, Ordering::Relaxed),
                    board.woken[t].swap(0, Ordering::Relaxed),
                );
                if s == 0 {
                    continue;
                }
                if w == 0 || w < s {
                    missed += 1;
                } else {
                    woke.push(Duration::from_nanos(w - s));
                }
            }
            phase.woken_p99 = Some(pct(&mut woke, 0.99));
            phase.errors += missed;
            println!(
                "change -> node woken: p50 {} p99 {} ({} woken, {missed} not woken within 2 s \
                 of the phase's end); polls held now {}",
                ms(pct(&mut woke, 0.5)),
                ms(pct(&mut woke, 0.99)),
                woke.len(),
                board.held.load(Ordering::Relaxed)
            );
        }
        for (r, rep) in reps.iter().enumerate() {
            let cpu = rep.cpu_secs() - cpu0[r];
            println!(
                "replica {r}: CPU {cpu:.2} s over the phase ({:.0} %, {:.0} us per request), RSS \
                 {} MB",
                cpu / took.as_secs_f64() * 100.0,
                cpu / n.max(1) as f64 * 1e6,
                rep.rss_kib() / 1024
            );
        }
        println!(
            "simulator CPU {:.2} s over the phase; node reports {}, node errors {}",
            self_cpu() - sim0,
            board.reports.load(Ordering::Relaxed) - reports0,
            board.errors.load(Ordering::Relaxed)
        );
        phase.errors += board.errors.load(Ordering::Relaxed);
        phases.push(phase);
    }
    summary(&args, replicas, &phases, per_poll);
    std::io::stdout().flush()?;
    drop(rt);
    drop(reps);
    Ok(())
}
