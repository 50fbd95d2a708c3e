//! `buffer-bench [DIR]` — measures, in one run and on the filesystem holding DIR (default: a
//! directory under /var/tmp):
//!
//! 1. the machine's anchors: raw fdatasync rate (4 KiB write + fdatasync) and sequential write
//!    bandwidth (1 MiB writes, one final fdatasync);
//! 2. durable ingest of 100-byte records through the log core and through the service channel
//!    (records/s, logical and device write amplification, fsyncs), and through the log core
//!    with the disk budget full, so that every segment roll drops the oldest segment (each drop
//!    recorded in an fdatasync'd cursor slot before the unlink), beside the figure without
//!    drops of the same run;
//! 3. replay of a 1 M-record backlog after kill -9 of the writing process (recovery time and
//!    read rate);
//! 4. end-to-end rate to a local mosquitto at QoS 1 (if mosquitto is installed);
//! 5. peak RSS of the `slapos-buffer` service moving 1 M records TCP → mosquitto;
//! 6. CRC-32C throughput of the crates the codec uses (`crc32c` with std, `crc`'s byte table
//!    without) beside the slice-by-8 the codec carried until format 2 (the anchor).
//!
//! `buffer-bench --only crc [DIR]` runs part 6 alone; `--only mqtt [DIR]` parts 4 and 5.
//! Parts 4 and 5 run plain and over mutual TLS (certificates made with `openssl`, mosquitto
//! with `require_certificate true`) in the same run.
//!
//! Every figure is printed with the 1-minute load average at the time. Goals (issue 5):
//! ≥ 1 M records/s durable with a ≤ 100 ms group-commit window, WA ≤ 1.2, replay ≥ 1 M rec/s,
//! RSS ≤ 8 MB.

use anyhow::{Context, Result, bail};
use buffer::reader::ReadBatch;
use buffer::service::{RecordIn, Writer};
use buffer::{Log, LogConfig, Now, Reader, SyncPolicy};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Sectors-written counter of the block device holding `p` (whole-device counters include
/// other processes' writes).
fn dev_written_bytes(p: &Path) -> Option<u64> {
    let dev = std::fs::metadata(p).ok()?.dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{maj}:{min}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

fn sync_all_fs() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
}

fn report(name: &str, value: String) {
    println!("{name:<52} {value:<40} load1={}", load1());
}

fn raw_fdatasync(dir: &Path) -> Result<(f64, f64, f64)> {
    let p = dir.join("raw-fdatasync.bin");
    let mut f = std::fs::File::create(&p)?;
    let block = vec![0x5au8; 4096];
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) && lat.len() < 20_000 {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        lat.push(t.elapsed().as_secs_f64());
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let p50 = lat[lat.len() / 2];
    let p99 = lat[lat.len() * 99 / 100];
    drop(f);
    std::fs::remove_file(&p)?;
    Ok((rate, p50, p99))
}

fn raw_seq_write(dir: &Path, mib: usize) -> Result<f64> {
    let p = dir.join("raw-seq.bin");
    let mut f = std::fs::File::create(&p)?;
    let block = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..mib {
        f.write_all(&block)?;
    }
    f.sync_data()?;
    let bw = mib as f64 / t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&p)?;
    Ok(bw)
}

fn cfg(dir: &Path, stream: &str) -> LogConfig {
    let mut c = LogConfig::new(dir, stream);
    c.max_bytes = 8 << 30;
    c.segment_bytes = 64 << 20;
    c.batch_bytes = 1 << 20;
    c.frame_bytes = 16 << 10;
    c.batch_window = Duration::from_millis(100);
    c.sync = SyncPolicy::Batched;
    c
}

/// Durable ingest through the log core on this thread.
/// Result of [`ingest_core`].
struct Ingest {
    rate: f64,
    /// p50, p99, max wait (ms) of a batch's first record until durable.
    wait: (f64, f64, f64),
    wa_file: f64,
    wa_dev: Option<f64>,
    fsyncs: u64,
}

fn ingest_core(dir: &Path, n: u64) -> Result<Ingest> {
    let payload = [b'x'; 100];
    sync_all_fs();
    let dev0 = dev_written_bytes(dir);
    let (mut log, _) = Log::open(cfg(dir, "core"))?;
    let t = Instant::now();
    let mut now = Now::system();
    let mut waits: Vec<f64> = Vec::new();
    let mut batch_open: Option<Instant> = None;
    for i in 0..n {
        if i % 1024 == 0 {
            now = Now::system();
            if log.batch_len() == 0 {
                batch_open = None;
            }
        }
        if batch_open.is_none() {
            batch_open = Some(now.mono);
        }
        log.append(now.wall_ms, 0, b"", &payload, now)?;
        if log.batch_len() == 0
            && let Some(o) = batch_open.take()
        {
            // A batch was just written and synced: its oldest record waited this long.
            waits.push(o.elapsed().as_secs_f64() * 1e3);
        }
    }
    log.flush(Now::system())?;
    let elapsed = t.elapsed().as_secs_f64();
    let sh = log.shared().clone();
    assert_eq!(sh.durable(), n);
    let written = sh.metrics.bytes_written.load(Relaxed) as f64;
    let fsyncs = sh.metrics.fsyncs.load(Relaxed);
    log.close(Now::system())?;
    sync_all_fs();
    let dev = match (dev0, dev_written_bytes(dir)) {
        (Some(a), Some(b)) => Some((b - a) as f64 / (n * 100) as f64),
        _ => None,
    };
    waits.sort_by(f64::total_cmp);
    let pct = |p: usize| {
        waits
            .get(waits.len().saturating_sub(1) * p / 100)
            .copied()
            .unwrap_or(0.0)
    };
    let wait = (pct(50), pct(99), pct(100));
    Ok(Ingest {
        rate: n as f64 / elapsed,
        wait,
        wa_file: written / (n * 100) as f64,
        wa_dev: dev,
        fsyncs,
    })
}

/// Durable ingest through the writer thread and the byte-bounded channel, producers sending
/// batches of 1000 records; waits until the last is durable.
fn ingest_service(dir: &Path, n: u64) -> Result<f64> {
    let (log, _) = Log::open(cfg(dir, "service"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ingest, writer) = Writer::spawn(log, 4 << 20, Some(rt.handle().clone()))?;
    let sh = writer.shared().clone();
    let t = Instant::now();
    rt.block_on(async {
        let ts = buffer::log::unix_ms();
        let mut sent = 0;
        while sent < n {
            let k = (n - sent).min(1000);
            let recs = (0..k)
                .map(|_| RecordIn {
                    ts_ms: ts,
                    source: 0,
                    key: Vec::new(),
                    payload: vec![b'y'; 100],
                    origin: None,
                })
                .collect();
            ingest.send(recs, None).await.context("send")?;
            sent += k;
        }
        anyhow::Ok(())
    })?;
    while !sh.wait_durable(n, Duration::from_secs(60)) {}
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(ingest);
    writer.join()?;
    Ok(rate)
}

/// Durable ingest through the log core with a full disk budget (64 MiB, 16 MiB segments) and
/// nothing delivered: every segment roll drops the oldest segment. Returns (records/s, records
/// dropped, gaps waiting at the end).
fn ingest_dropping(dir: &Path, n: u64) -> Result<(f64, u64, usize)> {
    let mut c = cfg(dir, "drops");
    c.max_bytes = 64 << 20;
    c.segment_bytes = 16 << 20;
    let (mut log, _) = Log::open(c)?;
    let payload = [b'd'; 100];
    let t = Instant::now();
    let mut now = Now::system();
    for i in 0..n {
        if i % 1024 == 0 {
            now = Now::system();
        }
        log.append(now.wall_ms, 0, b"", &payload, now)?;
    }
    log.flush(Now::system())?;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let sh = log.shared().clone();
    log.close(Now::system())?;
    Ok((rate, sh.metrics.dropped_total(), sh.gaps_waiting()))
}

/// Child mode: write `n` durable records to `dir`/replay, print DONE, wait to be killed.
fn child_fill(dir: &Path, n: u64) -> Result<()> {
    let (mut log, _) = Log::open(cfg(dir, "replay"))?;
    let payload = [b'r'; 100];
    let now = Now::system();
    for _ in 0..n {
        log.append(now.wall_ms, 0, b"", &payload, now)?;
    }
    log.flush(Now::system())?;
    println!("DONE {}", log.shared().durable());
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn replay(dir: &Path, n: u64) -> Result<(f64, f64)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--fill-child")
        .arg(dir)
        .arg(n.to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().context("child stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    if !line.starts_with("DONE") {
        bail!("fill child failed: {line:?}");
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    // Drop the page cache for the backlog? Not possible without root; measure as is (a
    // process crash leaves the page cache warm, like the anchor's measurement).
    let t = Instant::now();
    let (log, _) = Log::open(cfg(dir, "replay"))?;
    let recovery = t.elapsed().as_secs_f64();
    let mut r = Reader::new(log.shared().clone());
    let mut b = ReadBatch::default();
    let mut got = 0u64;
    let mut bytes = 0u64;
    let t = Instant::now();
    loop {
        b.clear();
        let k = r.read(&mut b, 10_000, 4 << 20)?;
        if k == 0 {
            break;
        }
        got += k as u64;
        for m in &b.recs {
            bytes += b.payload(m).len() as u64;
        }
        log.shared().ack(b.recs[b.len() - 1].seq);
    }
    let rate = got as f64 / t.elapsed().as_secs_f64();
    if got != n || bytes != n * 100 {
        bail!("replay read {got} records / {bytes} bytes, expected {n}");
    }
    Ok((rate, recovery))
}

/// The slice-by-8 CRC-32C the codec carried by hand until it took `crc32c`: kept here only
/// as the anchor the crates are measured against.
mod slice_by_8 {
    const POLY: u32 = 0x82F6_3B78;

    const fn tables() -> [[u32; 256]; 8] {
        let mut t = [[0u32; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
                k += 1;
            }
            t[0][i] = c;
            i += 1;
        }
        let mut i = 0;
        while i < 256 {
            let mut s = 1;
            while s < 8 {
                let prev = t[s - 1][i];
                t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
                s += 1;
            }
            i += 1;
        }
        t
    }

    static T: [[u32; 256]; 8] = tables();

    pub fn crc32c(data: &[u8]) -> u32 {
        let mut c = !0u32;
        let mut chunks = data.chunks_exact(8);
        for ch in &mut chunks {
            let lo = c ^ u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
            let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
            c = T[7][(lo & 0xff) as usize]
                ^ T[6][((lo >> 8) & 0xff) as usize]
                ^ T[5][((lo >> 16) & 0xff) as usize]
                ^ T[4][(lo >> 24) as usize]
                ^ T[3][(hi & 0xff) as usize]
                ^ T[2][((hi >> 8) & 0xff) as usize]
                ^ T[1][((hi >> 16) & 0xff) as usize]
                ^ T[0][(hi >> 24) as usize];
        }
        for &b in chunks.remainder() {
            c = (c >> 8) ^ T[0][((c ^ u32::from(b)) & 0xff) as usize];
        }
        !c
    }
}

/// GB/s of `f` over `size`-byte buffers (about 256 MiB hashed, median of 5 runs).
fn crc_rate(size: usize, f: &dyn Fn(&[u8]) -> u32) -> f64 {
    let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    let iters = ((256usize << 20) / size).max(1);
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let mut acc = 0u32;
            for _ in 0..iters {
                acc ^= f(std::hint::black_box(&data));
            }
            std::hint::black_box(acc);
            (iters * size) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

/// Part 6: the codec's CRC-32C crates against the former slice-by-8.
fn crc_bench() {
    const TABLE: crc::Crc<u32, crc::Table<1>> =
        crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISCSI);
    let probe = b"123456789";
    assert_eq!(slice_by_8::crc32c(probe), buffer::codec::crc32c(probe));
    for size in [36usize, 1024, 8192, 1 << 20] {
        let hw = crc_rate(size, &|d| buffer::codec::crc32c(d));
        let sw = crc_rate(size, &slice_by_8::crc32c);
        let table = crc_rate(size, &|d| TABLE.checksum(d));
        report(
            &format!("CRC-32C {size} B: crc32c (std)"),
            format!("{hw:.2} GB/s ({:.1}x the slice-by-8 anchor)", hw / sw),
        );
        report(
            &format!("CRC-32C {size} B: slice-by-8 anchor, crc table (no_std)"),
            format!("{sw:.2} GB/s, {table:.2} GB/s"),
        );
    }
}

fn have(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists())
}

/// mosquitto: the child, its plain port, and its TLS port (client certificates required)
/// when started with a PKI.
struct Broker(std::process::Child, u16, Option<u16>);
impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Certificates made with the `openssl` command (the bench has no rcgen): a CA, a server
/// certificate for 127.0.0.1, a client certificate; P-256 keys, mode 0600.
struct BenchPki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").args(args).output()?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl BenchPki {
    fn generate(dir: &Path) -> Result<BenchPki> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir)?;
        let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        let (ca_key, ca) = (p("ca.key"), p("ca.crt"));
        a.extend([
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            "/CN=bench CA",
        ]);
        openssl(&a)?;
        let leaf = |name: &str, ext: &str| -> Result<(PathBuf, PathBuf)> {
            let (key, csr, crt, extf) = (
                p(&format!("{name}.key")),
                p(&format!("{name}.csr")),
                p(&format!("{name}.crt")),
                p(&format!("{name}.ext")),
            );
            std::fs::write(&extf, ext)?;
            let mut a = vec!["req"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=bench"]);
            openssl(&a)?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extf,
            ])?;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
            Ok((PathBuf::from(crt), PathBuf::from(key)))
        };
        let server = leaf(
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )?;
        let client = leaf("client", "extendedKeyUsage=clientAuth\n")?;
        Ok(BenchPki {
            ca: PathBuf::from(ca),
            server,
            client,
        })
    }

    fn cfg(&self) -> buffer::tls::TlsCfg {
        buffer::tls::TlsCfg {
            ca_file: Some(self.ca.clone()),
            cert_file: Some(self.client.0.clone()),
            key_file: Some(self.client.1.clone()),
            alpn: vec![],
        }
    }

    /// The `[output.tls]` table of the service config.
    fn table(&self) -> String {
        format!(
            "[output.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            self.ca.display(),
            self.client.0.display(),
            self.client.1.display()
        )
    }
}

fn start_broker(dir: &Path, pki: Option<&BenchPki>) -> Result<Broker> {
    let port = free_port()?;
    let tls_port = pki.map(|_| free_port()).transpose()?;
    let conf = dir.join("mosq.conf");
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root\n"
    } else {
        ""
    };
    let mut text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n{user}"
    );
    if let (Some(pki), Some(tp)) = (pki, tls_port) {
        text.push_str(&format!(
            "listener {tp} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            pki.ca.display(),
            pki.server.0.display(),
            pki.server.1.display()
        ));
    }
    std::fs::write(&conf, text)?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let b = Broker(child, port, tls_port);
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || tls_port.is_some_and(|p| std::net::TcpStream::connect(("127.0.0.1", p)).is_err())
    {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("mosquitto did not start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(b)
}

/// Counts messages on `up/#` until `n` arrived; returns the instant of the last.
fn count_sub(port: u16, n: u64, ready: std::sync::mpsc::Sender<()>) -> Result<Instant> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut o = MqttOptions::new("bench-sub", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (c, mut el) = AsyncClient::new(o, 100);
        let mut got = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    c.subscribe("up/#", QoS::AtLeastOnce).await?;
                }
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                    let _ = ready.send(());
                }
                Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                    got += 1;
                    if got >= n {
                        return Ok(Instant::now());
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("bench subscriber: {e}"),
                Err(_) => bail!("bench subscriber: no message for 60 s after {got}"),
            }
        }
    })
}

/// End-to-end: a backlog of `n` records forwarded by the MQTT output with window `w`, over
/// mutual TLS with `pki` (the subscriber counts on the plain listener).
fn mqtt_e2e(dir: &Path, n: u64, w: u16, pki: Option<&BenchPki>) -> Result<f64> {
    let broker = start_broker(dir, pki)?;
    let tls = match pki {
        Some(p) => Some(buffer::tls::ClientTls::load(&p.cfg())?.rustls()?),
        None => None,
    };
    let stream = format!("e2e{w}{}", if tls.is_some() { "tls" } else { "" });
    let (mut log, _) = Log::open(cfg(dir, &stream))?;
    let now = Now::system();
    for _ in 0..n {
        log.append(now.wall_ms, 0, b"t", &[b'e'; 100], now)?;
    }
    log.flush(Now::system())?;
    let sh = log.shared().clone();
    let port = broker.1;
    let (rtx, rrx) = std::sync::mpsc::channel();
    let sub = std::thread::spawn(move || count_sub(port, n, rtx));
    rrx.recv_timeout(Duration::from_secs(10))
        .context("subscriber ready")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let out = buffer::output::MqttOut {
        host: "127.0.0.1".into(),
        port: broker.2.unwrap_or(port),
        client_id: format!("bench-out-{w}"),
        topic: "up/{key}".into(),
        window: w,
        keep_alive: Duration::from_secs(30),
        username: None,
        password: None,
        backoff: (Duration::from_millis(100), Duration::from_secs(1)),
        tls,
    };
    let t = Instant::now();
    let sh2 = sh.clone();
    rt.block_on(async move {
        let task = tokio::spawn(buffer::output::run_mqtt(sh2.clone(), out, stop_rx));
        while sh2.acked() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop_tx.send(true);
        let _ = task.await;
    });
    let last = sub
        .join()
        .map_err(|_| anyhow::anyhow!("subscriber panicked"))??;
    let rate = n as f64 / last.duration_since(t).as_secs_f64().max(1e-9);
    drop(log);
    Ok(rate)
}

/// Peak RSS of the real service moving `n` records TCP → mosquitto (over mutual TLS with
/// `pki`).
fn service_rss(dir: &Path, n: u64, pki: Option<&BenchPki>) -> Result<(u64, u64, f64)> {
    let bin = std::env::current_exe()?.with_file_name("slapos-buffer");
    if !bin.exists() {
        bail!("{} not built", bin.display());
    }
    let broker = start_broker(dir, pki)?;
    let conf = dir.join("svc.toml");
    let stream = if pki.is_some() { "svctls" } else { "svc" };
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndir = \"{}\"\nstream = \"{stream}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[[inputs]]\ntype = \"tcp\"\nlisten = \"127.0.0.1:0\"\n[output]\ntype = \"mqtt\"\nhost = \"127.0.0.1\"\nport = {}\ntopic = \"up/x\"\nwindow = 256\n{}",
            dir.display(),
            broker.2.unwrap_or(broker.1),
            pki.map(BenchPki::table).unwrap_or_default()
        ),
    )?;
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&conf)
        .env("SLAPOS_BUFFER_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let ready: serde_json::Value = serde_json::from_str(line.trim_start_matches("READY ").trim())?;
    let addr = ready["inputs"][0]["listen"]
        .as_str()
        .context("input addr")?
        .to_string();
    let metrics = ready["metrics"]
        .as_str()
        .context("metrics addr")?
        .to_string();
    let pid = child.id();
    let idle_rss = proc_kib(pid, "VmRSS:");
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(&addr)?;
    let mut buf = Vec::with_capacity(1 << 20);
    for i in 0..n {
        buf.extend_from_slice(
            format!("{{\"n\":{i:>12},\"pad\":\"{}\"}}\n", "p".repeat(69)).as_bytes(),
        );
        if buf.len() > 1 << 19 {
            s.write_all(&buf)?;
            buf.clear();
        }
    }
    s.write_all(&buf)?;
    drop(s);
    loop {
        let (_, m) = buffer::server::get(&metrics, "/status")?;
        let v: serde_json::Value = serde_json::from_str(&m)?;
        if v["records_delivered"].as_u64().unwrap_or(0) >= n {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("service did not deliver {n} records: {v}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let peak = proc_kib(pid, "VmHWM:");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    child.wait()?;
    Ok((idle_rss, peak, rate))
}

/// Parts 4 and 5, plain and over mutual TLS in the same run.
fn mqtt_part(dir: &Path) -> Result<()> {
    if !have("mosquitto") {
        println!(
            "mosquitto not installed: end-to-end and service RSS skipped (scripts/deps/buffer.sh)"
        );
        return Ok(());
    }
    let pki = if have("openssl") {
        Some(BenchPki::generate(dir)?)
    } else {
        println!("openssl not installed: TLS figures skipped (scripts/deps/buffer.sh)");
        None
    };
    let mut modes = vec![None];
    if let Some(p) = &pki {
        modes.push(Some(p));
    }
    let n = 100_000u64;
    for w in [64u16, 1000] {
        for &p in &modes {
            let label = if p.is_some() { "mutual TLS" } else { "plain" };
            let e = mqtt_e2e(dir, n, w, p)?;
            report(
                &format!("end-to-end to mosquitto QoS 1, window {w}, {label}"),
                format!("{e:.0} msg/s ({:.1} MB/s payload, 100 B)", e * 100.0 / 1e6),
            );
        }
    }
    for &p in &modes {
        let label = if p.is_some() { "mutual TLS" } else { "plain" };
        match service_rss(dir, 1_000_000, p) {
            Ok((idle, peak, rate)) => {
                report(
                    &format!("slapos-buffer RSS idle, {label}"),
                    format!("{:.1} MB", idle as f64 / 1024.0),
                );
                report(
                    &format!("slapos-buffer peak RSS, 1M rec TCP -> mosquitto, {label}"),
                    format!(
                        "{:.1} MB ({rate:.0} rec/s end to end)",
                        peak as f64 / 1024.0
                    ),
                );
            }
            Err(e) => report("slapos-buffer peak RSS", format!("not measured: {e}")),
        }
    }
    Ok(())
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    buffer::metrics::proc_status_kib(Path::new("/proc"), pid, field)
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().collect();
    let only = if args.get(1).map(String::as_str) == Some("--only") {
        let part = args.get(2).cloned().context("--only crc|mqtt")?;
        args.drain(1..3);
        Some(part)
    } else {
        None
    };
    if only.as_deref() == Some("crc") {
        println!("--- CRC-32C on {}", std::env::consts::ARCH);
        crc_bench();
        return Ok(());
    }
    if only.as_deref() == Some("mqtt") {
        let base = args
            .get(1)
            .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
        let dir = base.join(format!("buffer-bench-mqtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        println!("--- MQTT QoS 1 end to end, plain and mutual TLS");
        let r = mqtt_part(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        return r;
    }
    if args.get(1).map(String::as_str) == Some("--fill-child") {
        let dir = PathBuf::from(args.get(2).context("dir")?);
        let n: u64 = args.get(3).context("n")?.parse()?;
        return child_fill(&dir, n);
    }
    let base = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let dir = base.join(format!("buffer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let n: u64 = std::env::var("BUFFER_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    println!(
        "buffer-bench on {} (records per ingest run: {n})",
        dir.display()
    );
    println!("--- anchors (this machine, this run)");
    let (rate, p50, p99) = raw_fdatasync(&dir)?;
    report(
        "raw 4 KiB write+fdatasync",
        format!(
            "{rate:.0}/s p50 {:.2} ms p99 {:.2} ms",
            p50 * 1e3,
            p99 * 1e3
        ),
    );
    let bw = raw_seq_write(&dir, 512)?;
    report(
        "raw sequential write, 1 MiB blocks + fdatasync",
        format!("{bw:.0} MiB/s"),
    );
    println!(
        "--- buffer (goals: >= 1M rec/s durable, window <= 100 ms, WA <= 1.2, replay >= 1M rec/s, RSS <= 8 MB)"
    );
    let Ingest {
        rate: r,
        wait,
        wa_file: wa,
        wa_dev: dev,
        fsyncs,
    } = ingest_core(&dir, n)?;
    report(
        "durable ingest, 100 B records, log core",
        format!("{r:.0} rec/s ({:.0} MB/s payload)", r * 100.0 / 1e6),
    );
    report(
        "  first record of a batch: wait until durable",
        format!("p50 {:.1} p99 {:.1} max {:.1} ms", wait.0, wait.1, wait.2),
    );
    report("  group commit", "window 100 ms, batch 1 MiB".to_string());
    report("  fdatasyncs", format!("{fsyncs}"));
    report(
        "  write amplification, file bytes / payload",
        format!("{wa:.3}"),
    );
    match dev {
        Some(d) => report(
            "  write amplification, device bytes / payload",
            format!("{d:.3} (whole-device counter)"),
        ),
        None => report(
            "  write amplification, device",
            "n/a (no block device stat)".into(),
        ),
    }
    report(
        "  vs raw sequential bandwidth",
        format!(
            "{:.0}% of {bw:.0} MiB/s",
            r * 100.0 * wa / (bw * 1048576.0) * 100.0
        ),
    );
    let (rd, dropped, gaps) = ingest_dropping(&dir, n)?;
    report(
        "durable ingest, log core, drop_oldest at 64 MiB",
        format!(
            "{rd:.0} rec/s ({:+.1}% vs without drops; {dropped} dropped, {gaps} gap waiting)",
            (rd / r - 1.0) * 100.0
        ),
    );
    let rs = ingest_service(&dir, n.min(2_000_000))?;
    report(
        "durable ingest via channel + writer thread",
        format!("{rs:.0} rec/s"),
    );
    let (rr, rec) = replay(&dir, 1_000_000)?;
    report(
        "replay of 1M-record backlog after kill -9",
        format!("{rr:.0} rec/s (recovery {:.1} ms)", rec * 1e3),
    );
    mqtt_part(&dir)?;
    println!("--- CRC-32C");
    crc_bench();
    report(
        "bench process peak RSS",
        format!(
            "{:.1} MB",
            proc_kib(std::process::id(), "VmHWM:") as f64 / 1024.0
        ),
    );
    Ok(())
}
