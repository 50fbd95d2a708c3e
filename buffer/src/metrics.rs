//! Counters and gauges of one log, and their Prometheus text rendering.

use crate::codec::GapReason;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

/// Sets `slot` to `what`; true when that changed it (the caller logs only then).
fn set_error(slot: &Mutex<Option<String>>, what: Option<&str>) -> bool {
    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
    if s.as_deref() == what {
        return false;
    }
    *s = what.map(str::to_owned);
    true
}

/// Upper bounds (µs) of the fsync latency histogram buckets.
pub const FSYNC_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// All counters of a log; shared by the writer, readers, inputs and outputs.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Records accepted by the writer (assigned a seq).
    pub records_in: AtomicU64,
    /// Payload bytes accepted.
    pub bytes_in: AtomicU64,
    /// Records covered by a completed sync (or written, under `never`).
    pub records_durable: AtomicU64,
    /// Records acknowledged by the upstream.
    pub records_delivered: AtomicU64,
    /// Records sent again after a reconnect or restart (may be duplicates upstream).
    pub records_resent: AtomicU64,
    /// Records rejected permanently by the upstream.
    pub records_rejected: AtomicU64,
    /// Input lines/messages that could not be accepted (bad JSON, too large).
    pub input_invalid: AtomicU64,
    /// Dropped records per [`GapReason`] index, since the log was created (kept in the
    /// cursor slot across restarts).
    pub dropped_records: [AtomicU64; 6],
    /// Dropped bytes per [`GapReason`] index, since the log was created.
    pub dropped_bytes: [AtomicU64; 6],
    /// Records lost to corruption (found at recovery or by a reader).
    pub corrupt_records: AtomicU64,
    /// Corrupt bytes skipped.
    pub corrupt_bytes: AtomicU64,
    /// Torn tails truncated at recovery.
    pub torn_tails: AtomicU64,
    /// Segments found at open with a damaged or cut header (their frames are still read).
    pub corrupt_headers: AtomicU64,
    /// Input records recognised as resends of stored records, not stored again.
    pub input_resends: AtomicU64,
    /// Bytes written to segment files.
    pub bytes_written: AtomicU64,
    /// Completed fdatasync calls of segments.
    pub fsyncs: AtomicU64,
    /// fdatasync latency histogram (cumulative counts per bucket of [`FSYNC_BUCKETS_US`]).
    pub fsync_hist: [AtomicU64; 10],
    /// Sum of fdatasync latencies, µs.
    pub fsync_us_sum: AtomicU64,
    /// Failed writes/syncs/cursor writes.
    pub io_errors: AtomicU64,
    /// Output connection or request failures.
    pub output_errors: AtomicU64,
    /// Input connection failures (MQTT, OPC-UA).
    pub input_errors: AtomicU64,
    /// The last output failure (connection, TLS, HTTP status), cleared by a success.
    pub output_error: Mutex<Option<String>>,
    /// The last input failure (connection, TLS, authentication), cleared by a success.
    pub input_error: Mutex<Option<String>>,
    /// MQTT input subscriptions acknowledged by the broker (SUBACKs).
    pub input_subscriptions: AtomicU64,
    /// True while the log cannot write (disk full, I/O errors, blocked by policy).
    pub degraded: AtomicBool,
    /// Number of segment files.
    pub segments: AtomicU64,
    /// Bytes of all segment files + cursor + meta.
    pub disk_bytes: AtomicU64,
    /// Ingest time (unix ms) of the oldest record not yet acknowledged, 0 if none.
    pub oldest_unacked_ms: AtomicI64,
}

impl Metrics {
    /// Counts a drop.
    pub fn dropped(&self, reason: GapReason, records: u64, bytes: u64) {
        let i = reason as usize;
        self.dropped_records[i].fetch_add(records, Relaxed);
        self.dropped_bytes[i].fetch_add(bytes, Relaxed);
    }

    /// Records one fdatasync latency.
    pub fn fsync_done(&self, us: u64) {
        self.fsyncs.fetch_add(1, Relaxed);
        self.fsync_us_sum.fetch_add(us, Relaxed);
        for (i, &b) in FSYNC_BUCKETS_US.iter().enumerate() {
            if us <= b {
                self.fsync_hist[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// Counts an output failure and keeps `what` for `/status`; logged when it differs from
    /// the previous one (a refused TLS handshake is reported once, not at every retry).
    pub fn output_failed(&self, what: &str) {
        self.output_errors.fetch_add(1, Relaxed);
        if set_error(&self.output_error, Some(what)) {
            tracing::warn!("buffer: output: {what}");
        }
    }

    /// The output connected or was answered: the last failure is over.
    pub fn output_ok(&self) {
        if set_error(&self.output_error, None) {
            tracing::info!("buffer: output connected");
        }
    }

    /// Counts an input failure and keeps `what` for `/status` (logged as for outputs).
    pub fn input_failed(&self, what: &str) {
        self.input_errors.fetch_add(1, Relaxed);
        if set_error(&self.input_error, Some(what)) {
            tracing::warn!("buffer: input: {what}");
        }
    }

    /// An input connected: its last failure is over.
    pub fn input_ok(&self) {
        if set_error(&self.input_error, None) {
            tracing::info!("buffer: input connected");
        }
    }

    /// The last output and input failures.
    pub fn last_errors(&self) -> (Option<String>, Option<String>) {
        let get = |m: &Mutex<Option<String>>| m.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (get(&self.output_error), get(&self.input_error))
    }

    /// Total dropped records over all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_records.iter().map(|a| a.load(Relaxed)).sum()
    }
}

/// Point-in-time values that are not plain counters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Gauges {
    /// Highest seq written.
    pub written_seq: u64,
    /// Highest durable seq.
    pub durable_seq: u64,
    /// Highest acknowledged seq.
    pub acked_seq: u64,
    /// Records not yet acknowledged.
    pub backlog_records: u64,
    /// Segment bytes not yet acknowledged (whole segments, approximate to one segment).
    pub backlog_bytes: u64,
    /// Age of the oldest unacknowledged record, seconds.
    pub oldest_unacked_age_s: f64,
    /// Current epoch.
    pub epoch: u32,
    /// Gap markers waiting for the upstream's acknowledgement.
    pub gaps_waiting: u64,
}

/// Renders the Prometheus text exposition (version 0.0.4).
pub fn render(m: &Metrics, g: &Gauges, stream: &str) -> String {
    let mut o = String::with_capacity(4096);
    let l = format!("stream=\"{}\"", stream.replace(['"', '\\', '\n'], "_"));
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            o,
            "# HELP buffer_{name} {help}\n# TYPE buffer_{name} counter"
        );
        let _ = writeln!(o, "buffer_{name}{{{l}}} {v}");
    };
    counter(
        "records_in_total",
        "Records accepted.",
        m.records_in.load(Relaxed),
    );
    counter(
        "bytes_in_total",
        "Payload bytes accepted.",
        m.bytes_in.load(Relaxed),
    );
    counter(
        "records_durable_total",
        "Records made durable.",
        m.records_durable.load(Relaxed),
    );
    counter(
        "records_delivered_total",
        "Records acknowledged upstream.",
        m.records_delivered.load(Relaxed),
    );
    counter(
        "records_resent_total",
        "Records sent again after a reconnect or restart.",
        m.records_resent.load(Relaxed),
    );
    counter(
        "records_rejected_total",
        "Records rejected permanently upstream.",
        m.records_rejected.load(Relaxed),
    );
    counter(
        "input_invalid_total",
        "Input messages refused (malformed, too large).",
        m.input_invalid.load(Relaxed),
    );
    counter(
        "corrupt_records_total",
        "Records lost to corruption.",
        m.corrupt_records.load(Relaxed),
    );
    counter(
        "corrupt_bytes_total",
        "Corrupt bytes skipped.",
        m.corrupt_bytes.load(Relaxed),
    );
    counter(
        "torn_tails_total",
        "Torn tails truncated at recovery.",
        m.torn_tails.load(Relaxed),
    );
    counter(
        "corrupt_headers_total",
        "Segments found with a damaged or cut header.",
        m.corrupt_headers.load(Relaxed),
    );
    counter(
        "input_resends_total",
        "Input records recognised as resends and not stored again.",
        m.input_resends.load(Relaxed),
    );
    counter(
        "bytes_written_total",
        "Bytes written to segment files.",
        m.bytes_written.load(Relaxed),
    );
    counter(
        "io_errors_total",
        "Failed writes, syncs and cursor writes.",
        m.io_errors.load(Relaxed),
    );
    counter(
        "input_errors_total",
        "Input connection failures.",
        m.input_errors.load(Relaxed),
    );
    counter(
        "output_errors_total",
        "Output connection or request failures.",
        m.output_errors.load(Relaxed),
    );
    for (name, help, values) in [
        (
            "dropped_records_total",
            "Records dropped, by reason.",
            &m.dropped_records,
        ),
        (
            "dropped_bytes_total",
            "Payload bytes dropped, by reason.",
            &m.dropped_bytes,
        ),
    ] {
        let _ = writeln!(
            o,
            "# HELP buffer_{name} {help}\n# TYPE buffer_{name} counter"
        );
        for r in GapReason::ALL {
            let v = values[r as usize].load(Relaxed);
            let _ = writeln!(o, "buffer_{name}{{{l},reason=\"{}\"}} {v}", r.label());
        }
    }
    let _ = writeln!(
        o,
        "# HELP buffer_fsync_seconds fdatasync latency of segments.\n# TYPE buffer_fsync_seconds histogram"
    );
    for (i, b) in FSYNC_BUCKETS_US.iter().enumerate() {
        let _ = writeln!(
            o,
            "buffer_fsync_seconds_bucket{{{l},le=\"{}\"}} {}",
            *b as f64 / 1e6,
            m.fsync_hist[i].load(Relaxed)
        );
    }
    let n = m.fsyncs.load(Relaxed);
    let _ = writeln!(o, "buffer_fsync_seconds_bucket{{{l},le=\"+Inf\"}} {n}");
    let _ = writeln!(
        o,
        "buffer_fsync_seconds_sum{{{l}}} {}",
        m.fsync_us_sum.load(Relaxed) as f64 / 1e6
    );
    let _ = writeln!(o, "buffer_fsync_seconds_count{{{l}}} {n}");
    let mut gauge = |name: &str, help: &str, v: String| {
        let _ = writeln!(o, "# HELP buffer_{name} {help}\n# TYPE buffer_{name} gauge");
        let _ = writeln!(o, "buffer_{name}{{{l}}} {v}");
    };
    gauge(
        "backlog_records",
        "Records not yet acknowledged upstream.",
        g.backlog_records.to_string(),
    );
    gauge(
        "backlog_bytes",
        "Segment bytes not yet acknowledged.",
        g.backlog_bytes.to_string(),
    );
    gauge(
        "oldest_unacked_age_seconds",
        "Age of the oldest unacknowledged record.",
        format!("{:.3}", g.oldest_unacked_age_s),
    );
    gauge(
        "segments",
        "Segment files.",
        m.segments.load(Relaxed).to_string(),
    );
    gauge(
        "disk_bytes",
        "Bytes on disk (segments, cursor, meta).",
        m.disk_bytes.load(Relaxed).to_string(),
    );
    gauge(
        "degraded",
        "1 while the log cannot write.",
        u8::from(m.degraded.load(Relaxed)).to_string(),
    );
    gauge(
        "durable_seq",
        "Highest durable seq.",
        g.durable_seq.to_string(),
    );
    gauge(
        "acked_seq",
        "Highest acknowledged seq.",
        g.acked_seq.to_string(),
    );
    gauge("epoch", "Writer epoch.", g.epoch.to_string());
    gauge(
        "gaps_waiting",
        "Gap markers not yet acknowledged upstream.",
        g.gaps_waiting.to_string(),
    );
    o
}

/// A `/proc/<pid>/status` field (`VmRSS:`, `VmHWM:`) in KiB, 0 if unreadable; `proc_root` is
/// `/proc` outside tests.
pub fn proc_status_kib(proc_root: &std::path::Path, pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_fields_from_a_fake_tree_and_the_real_one() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("42")).unwrap();
        std::fs::write(
            d.path().join("42/status"),
            "Name:\tx\nVmHWM:\t  7168 kB\nVmRSS:\t 3800 kB\n",
        )
        .unwrap();
        assert_eq!(proc_status_kib(d.path(), 42, "VmHWM:"), 7168);
        assert_eq!(proc_status_kib(d.path(), 42, "VmRSS:"), 3800);
        assert_eq!(proc_status_kib(d.path(), 43, "VmRSS:"), 0);
        assert!(proc_status_kib(std::path::Path::new("/proc"), std::process::id(), "VmRSS:") > 0);
    }

    #[test]
    fn prometheus_text_has_every_family() {
        let m = Metrics::default();
        m.dropped(GapReason::DiskFull, 3, 300);
        m.fsync_done(700);
        let t = render(&m, &Gauges::default(), "s");
        assert!(t.contains("buffer_dropped_records_total{stream=\"s\",reason=\"disk_full\"} 3"));
        assert!(t.contains("buffer_fsync_seconds_bucket{stream=\"s\",le=\"0.001\"} 1"));
        assert!(t.contains("buffer_fsync_seconds_bucket{stream=\"s\",le=\"0.0005\"} 0"));
        assert!(t.contains("buffer_fsync_seconds_count{stream=\"s\"} 1"));
    }
}
