//! Counters and gauges of one log, and their Prometheus text rendering.

use crate::codec::GapReason;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
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

/// The media type of [`render`]'s exposition (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One scrape: the counters and gauges read once, encoded by prometheus-client.
#[derive(Debug)]
struct Scrape {
    counters: Vec<(&'static str, &'static str, u64)>,
    dropped: [(&'static str, &'static str, [u64; 6]); 2],
    /// fdatasync latency: per-bucket (not cumulative) counts, the last one above every bound.
    fsync_buckets: Vec<(f64, u64)>,
    fsync_sum_s: f64,
    fsync_count: u64,
    gauges: Vec<(&'static str, &'static str, f64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for &(name, help, v) in &self.counters {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        for (name, help, values) in &self.dropped {
            let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for r in GapReason::ALL {
                let label = ReasonLabel { reason: r.label() };
                ConstCounter::new(values[r as usize]).encode(family.encode_family(&label)?)?;
            }
        }
        enc.encode_descriptor(
            "fsync_seconds",
            "fdatasync latency of segments.",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            self.fsync_sum_s,
            self.fsync_count,
            &self.fsync_buckets,
            None,
        )?;
        for &(name, help, v) in &self.gauges {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// Renders the exposition of one stream's log (every series labelled `stream`).
pub fn render(m: &Metrics, g: &Gauges, stream: &str) -> String {
    let counters = vec![
        ("records_in", "Records accepted.", &m.records_in),
        ("bytes_in", "Payload bytes accepted.", &m.bytes_in),
        (
            "records_durable",
            "Records made durable.",
            &m.records_durable,
        ),
        (
            "records_delivered",
            "Records acknowledged upstream.",
            &m.records_delivered,
        ),
        (
            "records_resent",
            "Records sent again after a reconnect or restart.",
            &m.records_resent,
        ),
        (
            "records_rejected",
            "Records rejected permanently upstream.",
            &m.records_rejected,
        ),
        (
            "input_invalid",
            "Input messages refused (malformed, too large).",
            &m.input_invalid,
        ),
        (
            "corrupt_records",
            "Records lost to corruption.",
            &m.corrupt_records,
        ),
        ("corrupt_bytes", "Corrupt bytes skipped.", &m.corrupt_bytes),
        (
            "torn_tails",
            "Torn tails truncated at recovery.",
            &m.torn_tails,
        ),
        (
            "corrupt_headers",
            "Segments found with a damaged or cut header.",
            &m.corrupt_headers,
        ),
        (
            "input_resends",
            "Input records recognised as resends and not stored again.",
            &m.input_resends,
        ),
        (
            "bytes_written",
            "Bytes written to segment files.",
            &m.bytes_written,
        ),
        (
            "io_errors",
            "Failed writes, syncs and cursor writes.",
            &m.io_errors,
        ),
        (
            "input_errors",
            "Input connection failures.",
            &m.input_errors,
        ),
        (
            "output_errors",
            "Output connection or request failures.",
            &m.output_errors,
        ),
    ]
    .into_iter()
    .map(|(n, h, a)| (n, h, a.load(Relaxed)))
    .collect();
    let load = |a: &[AtomicU64; 6]| std::array::from_fn(|i| a[i].load(Relaxed));
    let fsync_count = m.fsyncs.load(Relaxed);
    let mut below = 0;
    let mut fsync_buckets: Vec<(f64, u64)> = FSYNC_BUCKETS_US
        .iter()
        .zip(&m.fsync_hist)
        .map(|(&us, cumulative)| {
            let c = cumulative.load(Relaxed);
            let here = c.saturating_sub(below);
            below = c;
            (us as f64 / 1e6, here)
        })
        .collect();
    fsync_buckets.push((f64::INFINITY, fsync_count.saturating_sub(below)));
    let scrape = Scrape {
        counters,
        dropped: [
            (
                "dropped_records",
                "Records dropped, by reason.",
                load(&m.dropped_records),
            ),
            (
                "dropped_bytes",
                "Payload bytes dropped, by reason.",
                load(&m.dropped_bytes),
            ),
        ],
        fsync_buckets,
        fsync_sum_s: m.fsync_us_sum.load(Relaxed) as f64 / 1e6,
        fsync_count,
        gauges: vec![
            (
                "backlog_records",
                "Records not yet acknowledged upstream.",
                g.backlog_records as f64,
            ),
            (
                "backlog_bytes",
                "Segment bytes not yet acknowledged.",
                g.backlog_bytes as f64,
            ),
            (
                "oldest_unacked_age_seconds",
                "Age of the oldest unacknowledged record.",
                g.oldest_unacked_age_s,
            ),
            (
                "segments",
                "Segment files.",
                m.segments.load(Relaxed) as f64,
            ),
            (
                "disk_bytes",
                "Bytes on disk (segments, cursor, meta).",
                m.disk_bytes.load(Relaxed) as f64,
            ),
            (
                "degraded",
                "1 while the log cannot write.",
                f64::from(u8::from(m.degraded.load(Relaxed))),
            ),
            ("durable_seq", "Highest durable seq.", g.durable_seq as f64),
            ("acked_seq", "Highest acknowledged seq.", g.acked_seq as f64),
            ("epoch", "Writer epoch.", f64::from(g.epoch)),
            (
                "gaps_waiting",
                "Gap markers not yet acknowledged upstream.",
                g.gaps_waiting as f64,
            ),
        ],
    };
    let mut registry = Registry::with_prefix_and_labels(
        "buffer",
        [(Cow::Borrowed("stream"), Cow::Owned(stream.to_owned()))].into_iter(),
    );
    registry.register_collector(Box::new(scrape));
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail; an error here is a bug of the encoder.
    if let Err(e) = encode(&mut out, &registry) {
        tracing::error!("buffer: rendering the metrics failed: {e}");
    }
    out
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
        assert!(
            t.contains("buffer_dropped_records_total{stream=\"s\",reason=\"disk_full\"} 3\n"),
            "{t}"
        );
        assert!(
            t.contains("buffer_dropped_bytes_total{stream=\"s\",reason=\"disk_full\"} 300\n"),
            "{t}"
        );
        // Cumulative buckets: 700 µs is above 0.5 ms, within 1 ms and everything above.
        assert!(
            t.contains("buffer_fsync_seconds_bucket{stream=\"s\",le=\"0.0005\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("buffer_fsync_seconds_bucket{stream=\"s\",le=\"0.001\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("buffer_fsync_seconds_bucket{stream=\"s\",le=\"1.0\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("buffer_fsync_seconds_bucket{stream=\"s\",le=\"+Inf\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("buffer_fsync_seconds_count{stream=\"s\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("buffer_records_in_total{stream=\"s\"} 0\n"),
            "{t}"
        );
        assert!(t.contains("# TYPE buffer_backlog_records gauge\n"), "{t}");
        assert!(t.ends_with("# EOF\n"), "{t}");
        // Every buffer series the Grafana dashboard queries exists (docs/grafana/).
        let dashboard = include_str!("../../docs/grafana/slapos-fleet.json");
        let used: Vec<&str> = dashboard
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("buffer_"))
            .collect();
        assert!(used.len() >= 3, "{used:?}");
        for n in used {
            assert!(
                t.lines().any(|l| !l.starts_with('#') && l.starts_with(n)),
                "the dashboard queries {n}, which /metrics does not show"
            );
        }
    }
}
