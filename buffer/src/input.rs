//! Inputs: MQTT subscription, TCP lines, serial lines (and OPC-UA behind the `opcua` feature).
//!
//! An input acknowledges its source only up to what is durable: the MQTT input sends PUBACK for
//! a message after the writer reported it durable (manual acks, persistent session, so the
//! broker redelivers unacknowledged messages after a crash); the TCP input with `ack = true`
//! writes `ok <n>` once its first `n` lines are durable (or refused, reported before as
//! `bad <line>`); the serial input with `ack = true` writes the same lines back on the serial
//! line, for firmware that keeps what it sent until then. Serial lines without `ack` cannot be
//! acknowledged: a crash loses what was in the channel.
//!
//! Resends are recognised (`crate::dedupe`) so that a record is stored once: the MQTT input
//! passes each QoS 1 message's packet id and DUP flag; a TCP connection to an input with
//! `idempotent = true` may begin with `hello <producer> <next>`, after which its lines are
//! numbered `next`, `next + 1`, … for that producer.

use crate::dedupe::{Origin, PACKET_WINDOW};
use crate::log::{Shared, unix_ms};
use crate::output::Backoff;
use crate::service::{Ingest, Outcome, RecordIn};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event};
use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

/// Line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// Any bytes.
    Raw,
    /// Each line must be a JSON value; others are refused and counted.
    Json,
}

/// Checks a line against the format.
pub fn line_ok(format: LineFormat, line: &[u8]) -> bool {
    match format {
        LineFormat::Raw => true,
        LineFormat::Json => serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok(),
    }
}

/// Strips a trailing `\n` / `\r\n`.
pub fn trim_eol(mut l: &[u8]) -> &[u8] {
    if let Some(x) = l.strip_suffix(b"\n") {
        l = x;
    }
    if let Some(x) = l.strip_suffix(b"\r") {
        l = x;
    }
    l
}

// ---------------------------------------------------------------------------------------------
// MQTT subscription.

/// MQTT input settings.
#[derive(Debug, Clone)]
pub struct MqttIn {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id (the persistent session's name).
    pub client_id: String,
    /// Topic filters, subscribed at QoS 1.
    pub topics: Vec<String>,
    /// Source index stored in records.
    pub source: u16,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Credentials.
    pub username: Option<String>,
    /// Credentials (read from the configured password file).
    pub password: Option<String>,
    /// TLS: the client configuration built by `crate::tls`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Runs the MQTT input until `stop`.
pub async fn run_mqtt(
    ingest: Ingest,
    sh: Arc<Shared>,
    cfg: MqttIn,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let mut opts = crate::output::mqtt_options(
            &cfg.client_id,
            &cfg.host,
            cfg.port,
            cfg.keep_alive,
            (&cfg.username, &cfg.password),
            &cfg.tls,
        );
        opts.set_clean_start(false)
            .set_session_expiry_interval(Some(7 * 24 * 3600))
            .set_manual_acks(true)
            // Every message the broker may redeliver is within the resend window.
            .set_receive_maximum(Some(PACKET_WINDOW as u16));
        let (client, mut el) = AsyncClient::new(opts, 1024);
        // Acks go out in arrival order, each once its record is durable.
        let (ack_tx, mut ack_rx) = mpsc::channel::<(Publish, oneshot::Receiver<Outcome>)>(4096);
        let acker_client = client.clone();
        let acker = tokio::spawn(async move {
            while let Some((p, rx)) = ack_rx.recv().await {
                if rx.await.is_err() {
                    return;
                }
                if acker_client.ack(&p).await.is_err() {
                    return;
                }
            }
        });
        let failed = loop {
            tokio::select! {
                _ = crate::service::stopped(&mut stop) => {
                    acker.abort();
                    let _ = client.try_disconnect();
                    return;
                }
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff.reset();
                        sh.metrics.input_ok();
                        for t in &cfg.topics {
                            if client.try_subscribe(t.clone(), QoS::AtLeastOnce).is_err() {
                                break;
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        sh.metrics.input_subscriptions.fetch_add(1, Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let rec = RecordIn {
                            ts_ms: unix_ms(),
                            source: cfg.source,
                            key: p.topic.to_vec(),
                            payload: p.payload.to_vec(),
                            origin: (p.qos != QoS::AtMostOnce)
                                .then(|| Origin::packet(p.pkid, p.dup)),
                        };
                        if p.qos == QoS::AtMostOnce {
                            if ingest.send(vec![rec], None).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        let (tx, rx) = oneshot::channel();
                        if ingest.send(vec![rec], Some(tx)).await.is_err() {
                            return;
                        }
                        if ack_tx.send((p, rx)).await.is_err() {
                            break true;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        sh.metrics.input_failed(&format!("mqtt {}:{}: {e}", cfg.host, cfg.port));
                        break true;
                    }
                }
            }
        };
        acker.abort();
        if failed {
            tokio::select! {
                _ = crate::service::stopped(&mut stop) => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TCP lines.

/// TCP lines input settings.
#[derive(Debug, Clone)]
pub struct TcpIn {
    /// Line format.
    pub format: LineFormat,
    /// Write `ok <n>` acknowledgements.
    pub ack: bool,
    /// Accept a first line `hello <producer> <next>` that numbers the connection's lines.
    pub idempotent: bool,
    /// Source index.
    pub source: u16,
    /// Longest accepted line.
    pub max_line: usize,
}

/// Parses `hello <producer> <next>`: a producer name (`[A-Za-z0-9_.-]{1,64}`) and the number
/// (≥ 1) of the line that follows.
pub fn parse_hello(line: &[u8]) -> Option<(Vec<u8>, u64)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut it = text.split(' ');
    let (hello, name, next) = (it.next()?, it.next()?, it.next()?);
    let name_ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    let next: u64 = next.parse().ok()?;
    (hello == "hello" && name_ok && next >= 1 && it.next().is_none())
        .then(|| (name.as_bytes().to_vec(), next))
}

/// Serves TCP line connections on `listener` until `stop`.
pub async fn run_tcp(
    ingest: Ingest,
    sh: Arc<Shared>,
    listener: TcpListener,
    cfg: TcpIn,
    stop: watch::Receiver<bool>,
) {
    let mut stop_wait = stop.clone();
    loop {
        tokio::select! {
            _ = crate::service::stopped(&mut stop_wait) => return,
            acc = listener.accept() => match acc {
                Ok((sock, _)) => {
                    let (ingest, sh, cfg, stop) = (ingest.clone(), sh.clone(), cfg.clone(), stop.clone());
                    tokio::spawn(async move { tcp_conn(ingest, sh, sock, cfg, stop).await });
                }
                Err(e) => {
                    tracing::warn!("buffer: tcp accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn tcp_conn(
    ingest: Ingest,
    sh: Arc<Shared>,
    sock: tokio::net::TcpStream,
    cfg: TcpIn,
    mut stop: watch::Receiver<bool>,
) {
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    // Acks are written by a task that awaits completions in order.
    let (ack_tx, mut ack_rx) = mpsc::channel::<(u64, Vec<u64>, oneshot::Receiver<Outcome>)>(64);
    let acker = tokio::spawn(async move {
        while let Some((upto, bad, rx)) = ack_rx.recv().await {
            if rx.await.is_err() {
                return;
            }
            if wr.write_all(ack_text(upto, &bad).as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let mut line = Vec::with_capacity(256);
    let mut count = 0u64;
    // (producer, number of line 1) after a `hello`.
    let mut producer: Option<(Vec<u8>, u64)> = None;
    let mut first = cfg.idempotent;
    'conn: loop {
        let mut recs = Vec::new();
        let mut bad = Vec::new();
        // One line (awaiting), then whatever complete lines are already buffered.
        loop {
            line.clear();
            let n = tokio::select! {
                _ = crate::service::stopped(&mut stop) => break 'conn,
                r = read_line_limited(&mut rd, &mut line, cfg.max_line) => match r {
                    Ok(n) => n,
                    Err(_) => break 'conn,
                }
            };
            if n == 0 {
                break;
            }
            if std::mem::take(&mut first)
                && let Some(h) = parse_hello(trim_eol(&line))
            {
                producer = Some(h);
                continue;
            }
            count += 1;
            let l = trim_eol(&line);
            if line.len() > cfg.max_line || !line_ok(cfg.format, l) {
                sh.metrics.input_invalid.fetch_add(1, Relaxed);
                bad.push(count);
            } else if !l.is_empty() || cfg.format == LineFormat::Raw {
                let (key, origin) = match &producer {
                    Some((name, next)) => (
                        name.clone(),
                        Some(Origin::numbered(next.saturating_add(count - 1))),
                    ),
                    None => (Vec::new(), None),
                };
                recs.push(RecordIn {
                    ts_ms: unix_ms(),
                    source: cfg.source,
                    key,
                    payload: l.to_vec(),
                    origin,
                });
            }
            if recs.len() >= 512 || !rd.buffer().contains(&b'\n') {
                break;
            }
        }
        if recs.is_empty() && bad.is_empty() {
            break;
        }
        if cfg.ack {
            let (tx, rx) = oneshot::channel();
            if ingest.send(recs, Some(tx)).await.is_err()
                || ack_tx.send((count, bad, rx)).await.is_err()
            {
                break;
            }
        } else if ingest.send(recs, None).await.is_err() {
            break;
        }
    }
    drop(ack_tx);
    let _ = acker.await;
}

/// Reads one line, keeping at most `max + 1` bytes of it (the rest is consumed and dropped,
/// so an over-long line is reported, not buffered). Returns bytes consumed (0 at EOF).
async fn read_line_limited<R: tokio::io::AsyncBufRead + Unpin>(
    rd: &mut R,
    out: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let buf = rd.fill_buf().await?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = (max + 1).saturating_sub(out.len());
        out.extend_from_slice(&buf[..take.min(room)]);
        rd.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serial lines.

/// Serial input settings.
#[derive(Debug, Clone)]
pub struct SerialIn {
    /// Device path.
    pub path: String,
    /// Baud rate.
    pub baud: u32,
    /// Line format.
    pub format: LineFormat,
    /// Source index.
    pub source: u16,
    /// Longest accepted line.
    pub max_line: usize,
    /// Write `ok <n>` (and `bad <k>`) back once the first `n` lines since the device was
    /// opened are durable.
    pub ack: bool,
}

/// The acknowledgement lines of a batch: `bad <k>` for each refused line, then `ok <upto>`.
fn ack_text(upto: u64, bad: &[u64]) -> String {
    let mut msg = String::new();
    for b in bad {
        msg.push_str(&format!("bad {b}\n"));
    }
    msg.push_str(&format!("ok {upto}\n"));
    msg
}

/// A batch waiting for its records to be durable: (lines so far, refused lines, completion).
type PendingAck = (u64, Vec<u64>, oneshot::Receiver<Outcome>);

/// Writes acknowledgements to `port` in order, each once its batch is durable (a thread of
/// its own: the reader never waits for the disk).
fn serial_acker(
    mut port: Box<dyn serialport::SerialPort>,
    pending: std::sync::mpsc::Receiver<PendingAck>,
) {
    use std::io::Write as _;
    while let Ok((upto, bad, rx)) = pending.recv() {
        if rx.blocking_recv().is_err() || port.write_all(ack_text(upto, &bad).as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads lines from a serial device on the current (plain) thread until `stop`; reopens the
/// device with backoff when it fails or disappears.
pub fn run_serial(ingest: Ingest, sh: Arc<Shared>, cfg: SerialIn, stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    while !*stop.borrow() {
        let port = serialport::new(&cfg.path, cfg.baud)
            .timeout(Duration::from_millis(200))
            .open();
        let mut port = match port {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("buffer: serial {}: {e}", cfg.path);
                std::thread::sleep(backoff.next_delay());
                continue;
            }
        };
        backoff.reset();
        let mut acks = None;
        if cfg.ack {
            match port.try_clone() {
                Ok(w) => {
                    let (tx, rx) = std::sync::mpsc::sync_channel::<PendingAck>(64);
                    std::thread::spawn(move || serial_acker(w, rx));
                    acks = Some(tx);
                }
                Err(e) => {
                    tracing::warn!("buffer: serial {}: no handle to acknowledge: {e}", cfg.path);
                    std::thread::sleep(backoff.next_delay());
                    continue;
                }
            }
        }
        let mut count = 0u64;
        let mut buf = [0u8; 4096];
        let mut line = Vec::with_capacity(256);
        let mut overlong = false;
        while !*stop.borrow() {
            let n = match port.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("buffer: serial {}: {e}", cfg.path);
                    break;
                }
            };
            let mut recs = Vec::new();
            let mut bad = Vec::new();
            for &b in &buf[..n] {
                if b == b'\n' {
                    count += 1;
                    let l = trim_eol(&line);
                    if overlong || !line_ok(cfg.format, l) {
                        sh.metrics.input_invalid.fetch_add(1, Relaxed);
                        bad.push(count);
                    } else if !l.is_empty() {
                        recs.push(RecordIn {
                            ts_ms: unix_ms(),
                            source: cfg.source,
                            key: Vec::new(),
                            payload: l.to_vec(),
                            origin: None,
                        });
                    }
                    line.clear();
                    overlong = false;
                } else if line.len() < cfg.max_line {
                    line.push(b);
                } else {
                    overlong = true;
                }
            }
            if recs.is_empty() && bad.is_empty() {
                continue;
            }
            let sent = match &acks {
                Some(acks) => {
                    let (tx, rx) = oneshot::channel();
                    let sent = ingest.blocking_send(recs, Some(tx));
                    // The acker is gone only if writing to the device failed: reopen.
                    if sent.is_ok() && acks.send((count, bad, rx)).is_err() {
                        break;
                    }
                    sent
                }
                None if recs.is_empty() => Ok(()),
                None => ingest.blocking_send(recs, None),
            };
            if sent.is_err() {
                return;
            }
        }
        drop(acks);
        std::thread::sleep(backoff.next_delay());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_lines_parse_and_others_do_not() {
        assert_eq!(
            parse_hello(b"hello sensor-7.a_b 42"),
            Some((b"sensor-7.a_b".to_vec(), 42))
        );
        for bad in [
            &b"hello p 0"[..],
            b"hello p",
            b"hello p 1 2",
            b"hello p x",
            b"hello  1",
            b"hello a/b 1",
            b"Hello p 1",
            b"{\"hello\":1}",
        ] {
            assert_eq!(parse_hello(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let long = format!("hello {} 1", "p".repeat(65));
        assert_eq!(parse_hello(long.as_bytes()), None);
    }
}
