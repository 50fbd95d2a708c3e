//! Outputs: MQTT v5 QoS 1 publish and HTTP POST batches, with jittered exponential backoff and
//! no retry limit, each over TLS when configured (`crate::tls`: server verification, client
//! certificates).
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
use rumqttc::{TlsConfiguration, Transport};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
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
    /// Credentials (read from the configured password file).
    pub password: Option<String>,
    /// Backoff base and cap.
    pub backoff: (Duration, Duration),
    /// TLS (`mqtts`): the client configuration built by `crate::tls`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// MQTT options shared by the output and the input: keep-alive (rumqttc panics under 5 s),
/// credentials, TLS.
pub fn mqtt_options(
    client_id: &str,
    host: &str,
    port: u16,
    keep_alive: Duration,
    credentials: (&Option<String>, &Option<String>),
    tls: &Option<Arc<rustls::ClientConfig>>,
) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(keep_alive.max(Duration::from_secs(5)));
    if let (Some(u), Some(p)) = credentials {
        opts.set_credentials(u.clone(), p.clone());
    }
    if let Some(t) = tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            t.clone(),
        )));
    }
    opts
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
        let mut opts = mqtt_options(
            &cfg.client_id,
            &cfg.host,
            cfg.port,
            cfg.keep_alive,
            (&cfg.username, &cfg.password),
            &cfg.tls,
        );
        opts.set_clean_start(true)
            .set_outgoing_inflight_upper_limit(cfg.window.max(1).saturating_add(1));
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
                        sh.metrics.output_ok();
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
                            sh.metrics.output_failed(&format!(
                                "mqtt {}:{}: PUBACK {:?}",
                                cfg.host, cfg.port, ack.reason
                            ));
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
                        sh.metrics.output_failed(&format!("mqtt {}:{}: {e}", cfg.host, cfg.port));
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
    /// `http://` or `https://host[:port]/path`.
    pub url: String,
    /// Records per POST at most.
    pub batch_records: usize,
    /// Key + payload bytes per POST at most.
    pub batch_bytes: usize,
    /// Request timeout (connect, send, answer).
    pub timeout: Duration,
    /// Backoff base and cap.
    pub backoff: (Duration, Duration),
    /// Roots and client certificate of an `https://` URL (`crate::tls`).
    pub tls: Option<ureq::tls::TlsConfig>,
}

/// Checks an output URL: `http://` or `https://`, with a host.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(()),
        (Some("http" | "https"), _) => Err("no host".into()),
        _ => Err("use http:// or https://".into()),
    }
}

/// The HTTP client of the output: ureq (chunked and sized answers, keep-alive, rustls with
/// ring), redirects refused (a 3xx is an answer, reported as a failure: the batch stays), every
/// status handed back, one deadline per request.
pub fn http_agent(timeout: Duration, tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    let mut b = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
        .user_agent("slapos-buffer");
    if let Some(t) = tls {
        b = b.tls_config(t);
    }
    b.build().into()
}

/// An upstream's answer: status and `Location` (of a refused redirect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Location` header, if any.
    pub location: Option<String>,
}

/// POSTs `body` (blocking): the answer, its body read (64 KiB at most, chunked or not) so the
/// connection can serve the next batch.
pub fn http_post(
    agent: &ureq::Agent,
    url: &str,
    idempotency_key: &str,
    body: &[u8],
) -> Result<Answer, ureq::Error> {
    let mut r = agent
        .post(url)
        .header("Content-Type", "application/x-ndjson")
        .header("Idempotency-Key", idempotency_key)
        .send(body)?;
    let answer = Answer {
        status: r.status().as_u16(),
        location: r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let _ = r.body_mut().with_config().limit(64 << 10).read_to_vec();
    Ok(answer)
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
            Err(_) => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(b.payload(m));
                v["payload_b64"] = b64.into();
            }
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

/// Runs the HTTP output until `stop` becomes true.
pub async fn run_http(sh: Arc<Shared>, cfg: HttpOut, mut stop: watch::Receiver<bool>) {
    let agent = http_agent(cfg.timeout, cfg.tls.clone());
    let url: Arc<str> = cfg.url.as_str().into();
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
        let payload: Arc<[u8]> = body.as_slice().into();
        let key: Arc<str> = key.into();
        loop {
            let post = {
                let (agent, url, key, payload) =
                    (agent.clone(), url.clone(), key.clone(), payload.clone());
                tokio::task::spawn_blocking(move || http_post(&agent, &url, &key, &payload))
            };
            // A request in flight at a stop finishes (or times out) on its blocking thread.
            let r = tokio::select! {
                _ = crate::service::stopped(&mut stop) => return,
                r = post => r,
            };
            let failure = match r {
                Ok(Ok(a)) if (200..300).contains(&a.status) || a.status == 409 => {
                    done(true);
                    backoff.reset();
                    sh.metrics.output_ok();
                    break;
                }
                Ok(Ok(a))
                    if (400..500).contains(&a.status) && a.status != 408 && a.status != 429 =>
                {
                    // Permanent rejection: counted, never blocks the stream.
                    tracing::warn!(
                        "buffer: upstream rejected batch {key} with HTTP {}",
                        a.status
                    );
                    done(false);
                    sh.metrics.output_ok();
                    break;
                }
                Ok(Ok(Answer {
                    status,
                    location: Some(to),
                })) if (300..400).contains(&status) => {
                    format!("HTTP {status}: redirect to `{to}` refused (set the output url to it)")
                }
                Ok(Ok(a)) => format!("HTTP {}", a.status),
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("request task: {e}"),
            };
            sh.metrics
                .output_failed(&format!("POST {}: {failure}", redact(&url)));
            if sleep_or_stop(backoff.next_delay(), &mut stop).await {
                return;
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// `url` without credentials (`user:pass@`) for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(a)) if a > s && !url[s + 3..a].contains('/') => {
            format!("{}***{}", &url[..s + 3], &url[a..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_urls_are_checked_and_redacted() {
        for ok in [
            "http://127.0.0.1:8080/in?x=1",
            "https://collector.example/ingest",
            "http://h",
        ] {
            assert_eq!(check_http_url(ok), Ok(()), "{ok}");
        }
        for bad in ["ftp://x/", "http:///x", "collector:8080/in", "https://"] {
            assert!(check_http_url(bad).is_err(), "{bad}");
        }
        assert_eq!(redact("https://u:p@h/x"), "https://***@h/x");
        assert_eq!(redact("https://h/x@y"), "https://h/x@y");
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
