//! The metrics and status endpoint: `GET /metrics` (Prometheus text), `GET /status` (JSON),
//! `GET /health` (200, or 503 while degraded). A tiny HTTP/1.1 responder, one request per
//! connection.

use crate::log::{Shared, unix_ms};
use crate::metrics;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The status document.
pub fn status_json(sh: &Shared) -> serde_json::Value {
    let m = &sh.metrics;
    let g = sh.gauges(unix_ms());
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
        "input_subscriptions": m.input_subscriptions.load(Relaxed),
        "gauges": g,
    })
}

/// The response to one request path: (status, content type, body).
pub fn respond(sh: &Shared, path: &str) -> (u16, &'static str, String) {
    match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4",
            metrics::render(&sh.metrics, &sh.gauges(unix_ms()), &sh.stream),
        ),
        "/status" => (200, "application/json", status_json(sh).to_string()),
        "/health" if sh.metrics.degraded.load(Relaxed) => (503, "text/plain", "degraded\n".into()),
        "/health" => (200, "text/plain", "ok\n".into()),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

/// Serves until `stop`.
pub async fn serve(listener: TcpListener, sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let (mut s, _) = tokio::select! {
            _ = crate::service::stopped(&mut stop) => return,
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let sh = sh.clone();
        tokio::spawn(async move {
            let mut req = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line =
                String::from_utf8_lossy(req.split(|&b| b == b'\n').next().unwrap_or_default())
                    .to_string();
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (code, ctype, body) = if method == "GET" {
                respond(&sh, path.split('?').next().unwrap_or(""))
            } else {
                (405, "text/plain", "method not allowed\n".into())
            };
            let reason = match code {
                200 => "OK",
                404 => "Not Found",
                405 => "Method Not Allowed",
                _ => "Service Unavailable",
            };
            let head = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}

/// `GET http://addr/path`, returning the body (for `slapos-buffer status` and tests).
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Blocking `GET http://addr/path` returning the body (tools and tests without a runtime).
pub fn http_get_blocking(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    Ok(r.split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default())
}
