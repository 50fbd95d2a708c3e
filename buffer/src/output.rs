//! Outputs: MQTT v5 QoS 1 publish and HTTP POST batches, with jittered exponential backoff and
//! no retry limit.
//!
//! Both resume at `acked + 1` after any failure, so records are first sent in seq order and a
//! reconnect resends at most the in-flight window. The cursor advances only over the contiguous
//! prefix acknowledged by the upstream (PUBACK / HTTP 2xx). Delivery ids
//! `node/stream/epoch/seq` travel as the MQTT v5 user property `delivery-id` and, for HTTP, in
//! each JSON line plus the batch's `Idempotency-Key` header.
//!
//! Gap markers come from the log's gap ledger, not from the records: an output sends the
//! waiting gaps before its next records (delivery id `node/stream/gap/<serial>`, fixed before
//! it is sent) and reports each acknowledged one back, which removes it from the ledger.

use crate::codec::GapV1;
use crate::fs::SplitMix;
use crate::log::Shared;
use crate::reader::{ReadBatch, Reader, RecKind, RecMeta};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Full-jitter exponential backoff: the n-th wait is uniform in `[0, min(cap, base·2ⁿ)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: SplitMix,
}

impl Backoff {
    /// A backoff from `base` up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let seed = crate::log::unix_ms() as u64 ^ u64::from(std::process::id()) << 32;
        Backoff {
            base,
            cap,
            attempt: 0,
            rng: SplitMix(seed),
        }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let ms = exp.as_millis() as u64;
        Duration::from_millis(self.rng.below(ms + 1))
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The delivery id of a record.
pub fn delivery_id(sh: &Shared, m: &RecMeta) -> String {
    format!("{}/{}/{}/{}", sh.node_id, sh.stream, m.epoch, m.seq)
}

/// The delivery id of gap `serial` of the ledger.
pub fn gap_id(sh: &Shared, serial: u32) -> String {
    format!("{}/{}/gap/{serial}", sh.node_id, sh.stream)
}

/// The waiting gaps of the ledger not in `skip`, each fixed before it is returned (so that
/// what is sent under its id never changes): `(serial, gap)`.
fn gaps_to_send(sh: &Shared, skip: &[u32], max: usize) -> Vec<(u32, GapV1)> {
    if sh.gaps_waiting() == 0 || max == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (serial, _) in sh.gaps() {
        if out.len() >= max {
            break;
        }
        if skip.contains(&serial) {
            continue;
        }
        match sh.gap_out(serial) {
            Ok(Some(g)) => out.push((serial, g)),
            Ok(None) => {}
            Err(e) => {
                sh.metrics.io_errors.fetch_add(1, Relaxed);
                tracing::warn!("buffer: cannot record gap {serial} as sent: {e}");
                break;
            }
        }
    }
    out
}

/// A gap marker's JSON: `{"reason", "first_seq", "last_seq", "records", "bytes"}`.
pub fn gap_value(g: &GapV1) -> serde_json::Value {
    serde_json::json!({
        "reason": g.reason.label(), "first_seq": g.first_seq, "last_seq": g.last_seq,
        "records": g.records, "bytes": g.bytes,
    })
}

fn gap_json(g: &GapV1) -> String {
    gap_value(g).to_string()
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = crate::service::stopped(stop) => true,
    }
}

/// Reads the next batch (blocking file I/O on a page-cache-friendly sequential pattern).
fn read_more(r: &mut Reader, b: &mut ReadBatch, max: usize, sh: &Shared) -> usize {
    match r.read(b, max, 1 << 20) {
        Ok(n) => n,
        Err(e) => {
            sh.metrics.io_errors.fetch_add(1, Relaxed);
            tracing::warn!("buffer: read failed: {e}");
            0
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MQTT.

/// MQTT output settings.
#[derive(Debug, Clone)]
pub struct MqttOut {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id.
    pub client_id: String,
    /// Topic; `{key}` is replaced by the record's key (source topic), `{stream}` by the stream.
    pub topic: String,
    /// Records in flight (unacknowledged) at most.
    pub window: u16,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Credentials.
    pub username: Option<String>,
    /// Credentials.
    pub password: Option<String>,
    /// Backoff base and cap.
    pub backoff: (Duration, Duration),
}

struct Flight {
    /// The record's seq, or the gap's serial.
    seq: u64,
    gap: bool,
    pkid: Option<u16>,
    acked: bool,
}

fn mqtt_props(id: String, ts_ms: i64, kind: &str) -> PublishProperties {
    PublishProperties {
        user_properties: vec![
            ("delivery-id".into(), id),
            ("ts-ms".into(), ts_ms.to_string()),
            ("kind".into(), kind.into()),
        ],
        ..Default::default()
    }
}

fn topic_for(tpl: &str, sh: &Shared, key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    tpl.replace("{stream}", &sh.stream).replace("{key}", &key)
}

/// Runs the MQTT output until `stop` becomes true.
pub async fn run_mqtt(sh: Arc<Shared>, cfg: MqttOut, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(cfg.backoff.0, cfg.backoff.1);
    let mut reader = Reader::new(sh.clone());
    let mut durable = sh.subscribe_durable();
    let mut highest_sent = sh.acked();
    let window = usize::from(cfg.window.max(1));
    let mut batch = ReadBatch::default();
    loop {
        if *stop.borrow() {
            return;
        }
        let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        // rumqttc refuses keep-alives under 5 s (it panics).
        opts.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(5)))
            .set_clean_start(true)
            .set_outgoing_inflight_upper_limit(cfg.window.max(1).saturating_add(1));
        if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
            opts.set_credentials(u.clone(), p.clone());
        }
        let (client, mut el) = AsyncClient::new(opts, window * 2 + 16);
        // Resume right after the acknowledged prefix.
        reader.seek(sh.acked() + 1);
        batch.clear();
        let mut flights: VecDeque<Flight> = VecDeque::new();
        let mut gaps_sent: Vec<u32> = Vec::new();
        let mut connected = false;
        let failed = loop {
            // Feed the window: waiting gaps first, then records.
            if connected && flights.len() < window {
                for (serial, g) in gaps_to_send(&sh, &gaps_sent, window - flights.len()) {
                    let topic = topic_for(&cfg.topic, &sh, b"_gap");
                    let props = mqtt_props(gap_id(&sh, serial), crate::log::unix_ms(), "gap");
                    if client
                        .try_publish_with_properties(
                            topic,
                            QoS::AtLeastOnce,
                            false,
                            gap_json(&g),
                            props,
                        )
                        .is_err()
                    {
                        break;
                    }
                    gaps_sent.push(serial);
                    flights.push_back(Flight {
                        seq: u64::from(serial),
                        gap: true,
                        pkid: None,
                        acked: false,
                    });
                }
            }
            if connected && flights.len() < window {
                if batch.is_empty() {
                    batch.clear();
                    read_more(&mut reader, &mut batch, window - flights.len(), &sh);
                }
                let mut used = 0;
                for m in batch.recs.iter().take(window - flights.len()) {
                    let (topic, payload) = match m.kind {
                        RecKind::Gap(g) => (
                            topic_for(&cfg.topic, &sh, b"_gap"),
                            gap_json(&g).into_bytes(),
                        ),
                        _ => (
                            topic_for(&cfg.topic, &sh, batch.key(m)),
                            batch.payload(m).to_vec(),
                        ),
                    };
                    let kind = match m.kind {
                        RecKind::Data => "data",
                        RecKind::Gap(_) => "gap",
                        RecKind::Unknown => "unknown",
                    };
                    let props = mqtt_props(delivery_id(&sh, m), m.ts_ms, kind);
                    if client
                        .try_publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props)
                        .is_err()
                    {
                        break;
                    }
                    if m.seq <= highest_sent {
                        sh.metrics.records_resent.fetch_add(1, Relaxed);
                    }
                    highest_sent = highest_sent.max(m.seq);
                    flights.push_back(Flight {
                        seq: m.seq,
                        gap: false,
                        pkid: None,
                        acked: false,
                    });
                    used += 1;
                }
                batch.consume_front(used);
            }
            let want_more = connected && flights.len() < window && batch.is_empty();
            tokio::select! {
                _ = crate::service::stopped(&mut stop) => {
                    let _ = client.try_disconnect();
                    return;
                }
                _ = durable.changed(), if want_more => {}
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        backoff.reset();
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                        if let Some(f) = flights.iter_mut().find(|f| f.pkid.is_none()) {
                            f.pkid = Some(pkid);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let transient = matches!(
                            ack.reason,
                            PubAckReason::UnspecifiedError
                                | PubAckReason::ImplementationSpecificError
                                | PubAckReason::QuotaExceeded
                                | PubAckReason::PacketIdentifierInUse
                        );
                        if transient {
                            sh.metrics.output_errors.fetch_add(1, Relaxed);
                            break true;
                        }
                        let rejected = !matches!(
                            ack.reason,
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                        );
                        if let Some(f) = flights.iter_mut().find(|f| f.pkid == Some(ack.pkid) && !f.acked) {
                            f.acked = true;
                            if f.gap {
                                sh.ack_gap(f.seq as u32);
                            } else if rejected {
                                sh.metrics.records_rejected.fetch_add(1, Relaxed);
                            } else {
                                sh.metrics.records_delivered.fetch_add(1, Relaxed);
                            }
                        }
                        let mut last = None;
                        while let Some(f) = flights.front().filter(|f| f.acked) {
                            if !f.gap {
                                last = Some(f.seq);
                            }
                            flights.pop_front();
                        }
                        if let Some(s) = last {
                            sh.ack(s);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        sh.metrics.output_errors.fetch_add(1, Relaxed);
                        tracing::debug!("buffer: mqtt output: {e}");
                        break true;
                    }
                },
            }
        };
        if failed {
            drop(el);
            if sleep_or_stop(backoff.next_delay(), &mut stop).await {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// HTTP output settings.
#[derive(Debug, Clone)]
pub struct HttpOut {
    /// `http://host:port/path`.
    pub url: String,
    /// Records per POST at most.
    pub batch_records: usize,
    /// Key + payload bytes per POST at most.
    pub batch_bytes: usize,
    /// Request timeout.
    pub timeout: Duration,
    /// Backoff base and cap.
    pub backoff: (Duration, Duration),
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port`.
    pub authority: String,
    /// Host for the `Host` header.
    pub host: String,
    /// Path with query.
    pub path: String,
}

/// Parses `http://host[:port][/path]`.
pub fn parse_http_url(url: &str) -> Option<HttpUrl> {
    let rest = url.strip_prefix("http://")?;
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if auth.is_empty() {
        return None;
    }
    let authority = if auth
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        auth.to_string()
    } else {
        format!("{auth}:80")
    };
    Some(HttpUrl {
        authority,
        host: auth.to_string(),
        path: path.to_string(),
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    let mut o = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                o.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// One NDJSON line per record.
pub fn json_line(sh: &Shared, b: &ReadBatch, m: &RecMeta, out: &mut Vec<u8>) {
    let id = delivery_id(sh, m);
    let kind = match m.kind {
        RecKind::Data => "data",
        RecKind::Gap(_) => "gap",
        RecKind::Unknown => "unknown",
    };
    let mut v = serde_json::json!({
        "id": id,
        "node": sh.node_id,
        "stream": sh.stream,
        "epoch": m.epoch,
        "seq": m.seq,
        "ts_ms": m.ts_ms,
        "source": m.source,
        "kind": kind,
    });
    let key = b.key(m);
    if !key.is_empty() {
        v["key"] = String::from_utf8_lossy(key).into();
    }
    match m.kind {
        RecKind::Gap(g) => v["gap"] = gap_value(&g),
        _ => match std::str::from_utf8(b.payload(m)) {
            Ok(s) => v["payload"] = s.into(),
            Err(_) => v["payload_b64"] = base64(b.payload(m)).into(),
        },
    }
    if serde_json::to_writer(&mut *out, &v).is_ok() {
        out.push(b'\n');
    }
}

/// The NDJSON line of gap `serial` of the ledger (no seq: its id is `node/stream/gap/<serial>`).
pub fn gap_line(sh: &Shared, serial: u32, g: &GapV1, out: &mut Vec<u8>) {
    let v = serde_json::json!({
        "id": gap_id(sh, serial),
        "node": sh.node_id,
        "stream": sh.stream,
        "kind": "gap",
        "gap": gap_value(g),
    });
    if serde_json::to_writer(&mut *out, &v).is_ok() {
        out.push(b'\n');
    }
}

/// A minimal HTTP/1.1 POST (`Connection: close`); returns the status code.
pub async fn http_post(
    url: &HttpUrl,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<u16> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(&url.authority).await?;
        let mut req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            url.path,
            url.host,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        s.write_all(body).await?;
        let mut resp = Vec::with_capacity(256);
        let mut buf = [0u8; 1024];
        while !resp.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            resp.extend_from_slice(&buf[..n]);
            if resp.len() > 64 << 10 {
                break;
            }
        }
        let line = resp.split(|&b| b == b'\n').next().unwrap_or_default();
        let status = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other("malformed HTTP status line"))?;
        Ok(status)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP request timed out"))?
}

/// Runs the HTTP output until `stop` becomes true.
pub async fn run_http(sh: Arc<Shared>, cfg: HttpOut, mut stop: watch::Receiver<bool>) {
    let Some(url) = parse_http_url(&cfg.url) else {
        tracing::error!("buffer: invalid output url `{}`", cfg.url);
        return;
    };
    let mut backoff = Backoff::new(cfg.backoff.0, cfg.backoff.1);
    let mut reader = Reader::new(sh.clone());
    let mut durable = sh.subscribe_durable();
    let mut batch = ReadBatch::default();
    let mut body = Vec::new();
    let mut highest_sent = sh.acked();
    loop {
        batch.clear();
        reader.seek(sh.acked() + 1);
        let n = match reader.read(&mut batch, cfg.batch_records, cfg.batch_bytes) {
            Ok(n) => n,
            Err(e) => {
                sh.metrics.io_errors.fetch_add(1, Relaxed);
                tracing::warn!("buffer: read failed: {e}");
                0
            }
        };
        let gaps = gaps_to_send(&sh, &[], usize::MAX);
        if n == 0 && gaps.is_empty() {
            tokio::select! {
                _ = crate::service::stopped(&mut stop) => return,
                _ = durable.changed() => continue,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        body.clear();
        for (serial, g) in &gaps {
            gap_line(&sh, *serial, g, &mut body);
        }
        for m in &batch.recs {
            json_line(&sh, &batch, m, &mut body);
        }
        let mut key = format!("{}/{}/", sh.node_id, sh.stream);
        let last = batch.recs.last().copied();
        if let (Some(first), Some(last)) = (batch.recs.first(), last) {
            key.push_str(&format!(
                "{}:{}-{}:{}",
                first.epoch, first.seq, last.epoch, last.seq
            ));
            if first.seq <= highest_sent {
                sh.metrics
                    .records_resent
                    .fetch_add(highest_sent.min(last.seq) - first.seq + 1, Relaxed);
            }
            highest_sent = highest_sent.max(last.seq);
        }
        if !gaps.is_empty() {
            let serials: Vec<String> = gaps.iter().map(|g| g.0.to_string()).collect();
            if last.is_some() {
                key.push('+');
            }
            key.push_str(&format!("gap:{}", serials.join(",")));
        }
        let done = |delivered: bool| {
            if let Some(last) = last {
                let c = if delivered {
                    &sh.metrics.records_delivered
                } else {
                    &sh.metrics.records_rejected
                };
                c.fetch_add(n as u64, Relaxed);
                sh.ack(last.seq);
            }
            for (serial, _) in &gaps {
                sh.ack_gap(*serial);
            }
        };
        loop {
            let headers = [
                ("Content-Type", "application/x-ndjson"),
                ("Idempotency-Key", key.as_str()),
            ];
            let r = http_post(&url, &headers, &body, cfg.timeout).await;
            match r {
                Ok(s) if (200..300).contains(&s) || s == 409 => {
                    done(true);
                    backoff.reset();
                    break;
                }
                Ok(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                    // Permanent rejection: counted, never blocks the stream.
                    tracing::warn!("buffer: upstream rejected batch {key} with HTTP {s}");
                    done(false);
                    break;
                }
                other => {
                    sh.metrics.output_errors.fetch_add(1, Relaxed);
                    tracing::debug!("buffer: http output: {other:?}");
                    if sleep_or_stop(backoff.next_delay(), &mut stop).await {
                        return;
                    }
                }
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn urls_parse() {
        let u = parse_http_url("http://127.0.0.1:8080/in?x=1").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:8080", "/in?x=1")
        );
        let u = parse_http_url("http://example").unwrap();
        assert_eq!((u.authority.as_str(), u.path.as_str()), ("example:80", "/"));
        assert!(parse_http_url("https://x/").is_none());
        assert!(parse_http_url("http:///x").is_none());
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut max_seen = Duration::ZERO;
        for n in 0..50 {
            let d = b.next_delay();
            let bound = Duration::from_millis(100 << n.min(20)).min(Duration::from_secs(2));
            assert!(d <= bound, "{d:?} > {bound:?}");
            max_seen = max_seen.max(d);
        }
        assert!(
            max_seen > Duration::from_millis(200),
            "jitter never grew: {max_seen:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
