//! The metrics and status endpoint: `GET /metrics` (Prometheus text), `GET /status` (JSON),
//! `GET /health` (200, or 503 while degraded). A small HTTP/1.1 responder, one request per
//! connection, that a slow or idle client cannot hold: each connection has
//! [`Limits::timeout`] to send its request head (8 KiB at most) and to take the answer, and at
//! most [`Limits::connections`] are served at once — more are closed as soon as they are
//! accepted (`tests/service.rs` holds it to that with slow and idle clients).
//! [`get`] is the client side (`slapos-buffer status`, tests), through ureq.

use crate::log::{Shared, unix_ms};
use crate::metrics;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The status document.
pub fn status_json(sh: &Shared) -> serde_json::Value {
    let m = &sh.metrics;
    let g = sh.gauges(unix_ms());
    let (output_error, input_error) = m.last_errors();
    let dropped: serde_json::Map<String, serde_json::Value> = crate::codec::GapReason::ALL
        .iter()
        .map(|r| {
            (
                r.label().to_string(),
                m.dropped_records[*r as usize].load(Relaxed).into(),
            )
        })
        .collect();
    serde_json::json!({
        "node_id": sh.node_id,
        "stream": sh.stream,
        "epoch": sh.epoch,
        "degraded": m.degraded.load(Relaxed),
        "records_in": m.records_in.load(Relaxed),
        "records_durable": m.records_durable.load(Relaxed),
        "records_delivered": m.records_delivered.load(Relaxed),
        "records_resent": m.records_resent.load(Relaxed),
        "records_rejected": m.records_rejected.load(Relaxed),
        "input_invalid": m.input_invalid.load(Relaxed),
        "dropped": dropped,
        "input_resends": m.input_resends.load(Relaxed),
        "corrupt_records": m.corrupt_records.load(Relaxed),
        "corrupt_headers": m.corrupt_headers.load(Relaxed),
        "segments": m.segments.load(Relaxed),
        "disk_bytes": m.disk_bytes.load(Relaxed),
        "fsyncs": m.fsyncs.load(Relaxed),
        "io_errors": m.io_errors.load(Relaxed),
        "output_errors": m.output_errors.load(Relaxed),
        "output_error": output_error,
        "input_errors": m.input_errors.load(Relaxed),
        "input_error": input_error,
        "input_subscriptions": m.input_subscriptions.load(Relaxed),
        "gauges": g,
    })
}

/// The response to one request path: (status, content type, body).
pub fn respond(sh: &Shared, path: &str) -> (u16, &'static str, String) {
    match path {
        "/metrics" => (
            200,
            metrics::CONTENT_TYPE,
            metrics::render(&sh.metrics, &sh.gauges(unix_ms()), &sh.stream),
        ),
        "/status" => (200, "application/json", status_json(sh).to_string()),
        "/health" if sh.metrics.degraded.load(Relaxed) => (503, "text/plain", "degraded\n".into()),
        "/health" => (200, "text/plain", "ok\n".into()),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

/// Bounds of the endpoint against slow and idle clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed at accept.
    pub connections: usize,
    /// Time a connection has to send its request head, and again to take the answer.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 32,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Longest request head read.
const MAX_HEAD: usize = 8192;

/// Serves until `stop`.
pub async fn serve(
    listener: TcpListener,
    sh: Arc<Shared>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.connections.max(1)));
    loop {
        let (s, _) = tokio::select! {
            _ = crate::service::stopped(&mut stop) => return,
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and the like: wait rather than spin.
                    tracing::debug!("buffer: metrics accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(s);
            continue;
        };
        let sh = sh.clone();
        tokio::spawn(async move {
            serve_one(s, &sh, limits.timeout).await;
            drop(slot);
        });
    }
}

/// One request: the head within `timeout`, the answer within `timeout`.
async fn serve_one(mut s: tokio::net::TcpStream, sh: &Shared, timeout: Duration) {
    let mut req = Vec::with_capacity(512);
    let head = async {
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_HEAD {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(tokio::time::timeout(timeout, head).await, Ok(true)) {
        return;
    }
    let line =
        String::from_utf8_lossy(req.split(|&b| b == b'\n').next().unwrap_or_default()).to_string();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (code, ctype, body) = if method == "GET" {
        respond(sh, path.split('?').next().unwrap_or(""))
    } else {
        (405, "text/plain", "method not allowed\n".into())
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let answer = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(timeout, s.write_all(answer.as_bytes())).await;
}

/// Why [`get`] failed.
#[derive(Debug, thiserror::Error)]
#[error("GET http://{addr}{path}: {source}")]
pub struct GetError {
    /// The endpoint.
    pub addr: String,
    /// The path asked for.
    pub path: String,
    /// ureq's error.
    #[source]
    pub source: Box<ureq::Error>,
}

/// Blocking `GET http://addr/path` (10 s at most): status and body.
pub fn get(addr: &str, path: &str) -> Result<(u16, String), GetError> {
    let err = |source| GetError {
        addr: addr.to_owned(),
        path: path.to_owned(),
        source: Box::new(source),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent
        .get(format!("http://{addr}{path}"))
        .call()
        .map_err(err)?;
    let code = r.status().as_u16();
    let body = r.body_mut().read_to_string().map_err(err)?;
    Ok((code, body))
}
