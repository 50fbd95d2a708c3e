//! The statistics stream: format, parser and builder.
//!
//! # Format (specified in docs/radio.md)
//!
//! JSON lines. Each line is one statistics window in the shape SlapOS' simpleran already
//! stores and its promises read (`amarisoft-stats.jinja2.py` → `get_json_log_data_interval`):
//!
//! ```json
//! {"time": "2025-01-31 12:00:00,250", "log_level": "INFO", "message": "Samples stats",
//!  "data": { …Amarisoft remote API `stats` response… }}
//! ```
//!
//! A bare `stats` response (`{"message": "stats", …}`) is accepted too. From `data` the parser
//! reads the Amarisoft fields `utc`, `duration`, `cells.<id>.{dl_bitrate, ul_bitrate,
//! ue_count_min, ue_count_max, ue_count_avg}`, `rf.{rxtx_delay_min, rxtx_delay_max,
//! rxtx_delay_avg}` (ms of TX-ahead margin) and `samples.rx[].{max, rms, sat, count}` (dBFS), and
//! an extension block `tti` written by the stand-in workload (period, counts of TTIs, missed
//! deadlines, wake-up latency percentiles, processing time, and the scheduling state the process
//! observed for itself). Unknown fields are ignored.
//!
//! # Errors
//!
//! A line is rejected with a typed [`LineError`]: empty, over [`MAX_LINE_BYTES`], not UTF-8,
//! truncated (the JSON ends early — typical of a writer caught mid-line), other syntax errors
//! with their column, a field of the wrong type with its JSON path, or valid JSON that is not a
//! statistics record. Parsing never panics (a property test feeds it random bytes).

use crate::cpulist;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Longest line accepted, bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// One statistics window (the `data` object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsData {
    /// `"stats"` in Amarisoft responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// End of the window, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc: Option<f64>,
    /// Window length, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// Per-cell counters by cell id.
    #[serde(default)]
    pub cells: BTreeMap<String, CellStats>,
    /// Radio front-end timing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rf: Option<RfStats>,
    /// Sample levels per antenna.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Samples>,
    /// TTI deadline loop statistics (stand-in workload extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tti: Option<TtiStats>,
}

/// Counters of one cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellStats {
    /// Downlink bit rate, bit/s.
    #[serde(default)]
    pub dl_bitrate: f64,
    /// Uplink bit rate, bit/s.
    #[serde(default)]
    pub ul_bitrate: f64,
    /// Fewest connected UEs in the window.
    #[serde(default)]
    pub ue_count_min: f64,
    /// Most connected UEs in the window.
    #[serde(default)]
    pub ue_count_max: f64,
    /// Average connected UEs in the window.
    #[serde(default)]
    pub ue_count_avg: f64,
    /// `lte` or `nr` (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rat: Option<String>,
    /// Band (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<u16>,
    /// Downlink (NR-)ARFCN (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dl_arfcn: Option<u32>,
    /// Physical cell id (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<u16>,
    /// Whether the cell's radio is active (extension; Amarisoft lists only running cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txrx_active: Option<bool>,
}

/// Radio front-end timing, ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RfStats {
    /// Smallest TX-ahead margin in the window (the worst case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxtx_delay_min: Option<f64>,
    /// Largest margin in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxtx_delay_max: Option<f64>,
    /// Average margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxtx_delay_avg: Option<f64>,
}

/// Sample levels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    /// Per RX antenna.
    #[serde(default)]
    pub rx: Vec<SampleStats>,
    /// Per TX antenna.
    #[serde(default)]
    pub tx: Vec<SampleStats>,
}

/// Level of one antenna's samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleStats {
    /// Peak, dBFS.
    pub max: f64,
    /// RMS, dBFS.
    #[serde(default)]
    pub rms: f64,
    /// Saturated samples.
    #[serde(default)]
    pub sat: u64,
    /// Samples counted.
    #[serde(default)]
    pub count: u64,
}

/// TTI loop statistics of one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TtiStats {
    /// TTI period, µs.
    pub period_us: u32,
    /// TTIs run.
    pub count: u64,
    /// TTIs whose work ended after the TTI's own deadline (wake-up + work > period).
    pub missed: u64,
    /// TTIs that ended after the HARQ-style processing deadline (3 periods).
    #[serde(default)]
    pub late: u64,
    /// Periods skipped because a TTI overran into the next one.
    #[serde(default)]
    pub skipped: u64,
    /// Wake-up latency, µs.
    pub wakeup_us: Percentiles,
    /// Wake-up + work time, µs.
    pub processing_us: Percentiles,
    /// Scheduling policy the loop observed (`fifo`, `rr`, `other`).
    #[serde(default)]
    pub policy: String,
    /// Its priority.
    #[serde(default)]
    pub priority: u8,
    /// CPUs in its affinity mask, CPU-list syntax.
    #[serde(default)]
    pub cpus: String,
    /// Whether `mlockall` succeeded.
    #[serde(default)]
    pub mlocked: bool,
    /// Why a requested setting could not be applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Records the writer dropped because its queue was full (before this one).
    #[serde(default)]
    pub dropped_records: u64,
}

/// Distribution summary, µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Smallest.
    #[serde(default)]
    pub min: f64,
    /// Mean.
    #[serde(default)]
    pub avg: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl TtiStats {
    /// CPUs of the affinity mask.
    pub fn cpu_list(&self) -> Vec<u32> {
        cpulist::parse(&self.cpus).unwrap_or_default()
    }
}

/// A parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsRecord {
    /// Time of the record, seconds since the epoch (`data.utc`, else the line's `time`).
    pub utc: Option<f64>,
    /// The statistics.
    pub data: StatsData,
}

/// Why a line is not a statistics record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Nothing but white space.
    #[error("empty line")]
    Empty,
    /// Longer than [`MAX_LINE_BYTES`].
    #[error("line of {0} bytes exceeds {MAX_LINE_BYTES}")]
    TooLong(usize),
    /// Not UTF-8.
    #[error("not UTF-8 (invalid byte at offset {0})")]
    NotUtf8(usize),
    /// The JSON stops before its end (a writer interrupted mid-line).
    #[error("truncated JSON: input ends at column {0} inside a value")]
    Truncated(usize),
    /// Other JSON syntax error.
    #[error("invalid JSON at column {column}: {message}")]
    Syntax {
        /// 1-based column.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// A field has the wrong type.
    #[error("`{path}`: {message}")]
    Field {
        /// JSON path (`data.rf.rxtx_delay_min`).
        path: String,
        /// What was expected.
        message: String,
    },
    /// Valid JSON that is not a statistics record.
    #[error("not a statistics record: {0}")]
    NotStats(String),
}

/// Parses one line.
pub fn parse_line(line: &[u8]) -> Result<StatsRecord, LineError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong(line.len()));
    }
    let text = std::str::from_utf8(line).map_err(|e| LineError::NotUtf8(e.valid_up_to()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(LineError::Empty);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        if e.classify() == serde_json::error::Category::Eof {
            LineError::Truncated(e.column())
        } else {
            LineError::Syntax {
                column: e.column(),
                message: strip_position(&e.to_string()),
            }
        }
    })?;
    let Value::Object(mut obj) = value else {
        return Err(LineError::NotStats("not a JSON object".into()));
    };
    let (data, at, time) = match obj.remove("data") {
        Some(d) => {
            let time = match obj.get("time") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) => Some(parse_time(t).ok_or_else(|| LineError::Field {
                    path: "time".into(),
                    message: format!("{t:?} is not a date-time"),
                })?),
                Some(other) => {
                    return Err(LineError::Field {
                        path: "time".into(),
                        message: format!("expected a string, got {other}"),
                    });
                }
            };
            (d, "data.", time)
        }
        None if obj.get("message").and_then(Value::as_str) == Some("stats") => {
            (Value::Object(obj), "", None)
        }
        None => {
            return Err(LineError::NotStats(
                "neither a `data` object nor a `\"message\": \"stats\"` response".into(),
            ));
        }
    };
    if !data.is_object() {
        return Err(LineError::Field {
            path: at.trim_end_matches('.').to_string(),
            message: "expected an object".into(),
        });
    }
    let data: StatsData = serde_path_to_error::deserialize(data).map_err(|e| LineError::Field {
        path: format!("{at}{}", e.path()),
        message: e.inner().to_string(),
    })?;
    Ok(StatsRecord {
        utc: data.utc.or(time),
        data,
    })
}

fn strip_position(s: &str) -> String {
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Result of parsing a log: good records in file order and the bad lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedLog {
    /// Records, oldest first.
    pub records: Vec<StatsRecord>,
    /// `(1-based line number, error)` of rejected non-empty lines.
    pub errors: Vec<(usize, LineError)>,
}

/// Parses a whole log (or its tail). Empty lines are skipped silently.
pub fn parse_log(bytes: &[u8]) -> ParsedLog {
    let mut out = ParsedLog::default();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        match parse_line(line) {
            Ok(r) => out.records.push(r),
            Err(LineError::Empty) => {}
            Err(e) => out.errors.push((i + 1, e)),
        }
    }
    out
}

/// Parses `YYYY-MM-DD HH:MM:SS[,mmm]` (Python logging) or RFC 3339 (`…T…[.fff][Z|±hh:mm]`)
/// into seconds since the epoch; times without offset are UTC.
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b' ' || b[10] == b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix(',').or_else(|| rest.strip_prefix('.')) {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return None;
        }
        frac = format!("0.{}", &r[..n]).parse().ok()?;
        rest = &r[n..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let hh: i64 = o[1..3].parse().ok()?;
            let mm: i64 = o[4..6].parse().ok()?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (hh * 3600 + mm * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + se - offset) as f64 + frac)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats seconds since the epoch as Python logging's `YYYY-MM-DD HH:MM:SS,mmm` (UTC).
pub fn format_time(utc: f64) -> String {
    let ms_total = (utc * 1000.0).round() as i64;
    let (secs, ms) = (ms_total.div_euclid(1000), ms_total.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02},{ms:03}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// One log line for `data` (the writer side, used by the stand-in workload).
pub fn format_line(data: &StatsData) -> String {
    let time = data.utc.map(format_time);
    let line = serde_json::json!({
        "time": time,
        "log_level": "INFO",
        "message": "Samples stats",
        "data": data,
    });
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMARISOFT: &str = r#"{"time": "2024-03-05 10:20:30,500", "log_level": "INFO", "message": "Samples stats", "data": {"message": "stats", "instance_id": "65e6d1f1", "cpu": {"global": 312.5}, "cells": {"1": {"dl_bitrate": 1200000.5, "ul_bitrate": 64000, "ue_count_min": 1, "ue_count_max": 3, "ue_count_avg": 2.5, "dl_use_avg": 0.2}}, "rf": {"rxtx_delay_min": 1.8, "rxtx_delay_max": 3.1, "rxtx_delay_avg": 2.4, "rxtx_delay_sd": 0.1, "rx_sample_rate": 23.04}, "samples": {"rx": [{"rms": -40.2, "max": -12.5, "sat": 0, "count": 23040000}, {"rms": -41.0, "max": -0.5, "sat": 12, "count": 23040000}], "tx": []}, "duration": 60.0, "utc": 1709634030.5}}"#;

    #[test]
    fn reads_the_amarisoft_stats_log_line() {
        let r = parse_line(AMARISOFT.as_bytes()).unwrap();
        assert_eq!(r.utc, Some(1_709_634_030.5));
        let c = &r.data.cells["1"];
        assert_eq!(
            (c.dl_bitrate, c.ul_bitrate, c.ue_count_avg),
            (1_200_000.5, 64_000.0, 2.5)
        );
        let rf = r.data.rf.as_ref().unwrap();
        assert_eq!(
            (rf.rxtx_delay_min, rf.rxtx_delay_max),
            (Some(1.8), Some(3.1))
        );
        let rx = &r.data.samples.as_ref().unwrap().rx;
        assert_eq!(rx.len(), 2);
        assert_eq!(rx[1].sat, 12);
        assert!(r.data.tti.is_none());
    }

    #[test]
    fn time_field_is_used_when_utc_is_absent() {
        let r =
            parse_line(br#"{"time": "2024-03-05 10:20:30,500", "data": {"cells": {}}}"#).unwrap();
        assert_eq!(r.utc, Some(1_709_634_030.5));
        let bare = parse_line(br#"{"message": "stats", "utc": 12.5}"#).unwrap();
        assert_eq!(bare.utc, Some(12.5));
    }

    #[test]
    fn typed_errors() {
        assert_eq!(parse_line(b"   "), Err(LineError::Empty));
        assert!(matches!(
            parse_line(&AMARISOFT.as_bytes()[..120]),
            Err(LineError::Truncated(_))
        ));
        assert!(matches!(
            parse_line(b"{\"data\": }"),
            Err(LineError::Syntax { .. })
        ));
        assert!(matches!(
            parse_line(b"\xff\xfe{}"),
            Err(LineError::NotUtf8(0))
        ));
        assert!(matches!(parse_line(b"[1, 2]"), Err(LineError::NotStats(_))));
        assert!(matches!(
            parse_line(br#"{"message": "ready"}"#),
            Err(LineError::NotStats(_))
        ));
        let e = parse_line(br#"{"data": {"rf": {"rxtx_delay_min": "fast"}}}"#).unwrap_err();
        assert!(
            matches!(&e, LineError::Field { path, .. } if path == "data.rf.rxtx_delay_min"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("`data.rf.rxtx_delay_min`: invalid type: string \"fast\""),
            "{e}"
        );
        let e = parse_line(br#"{"time": "yesterday", "data": {}}"#).unwrap_err();
        assert!(
            matches!(e, LineError::Field { ref path, .. } if path == "time"),
            "{e}"
        );
        let e = parse_line(br#"{"data": {"samples": {"rx": [{"rms": 1}]}}}"#).unwrap_err();
        assert!(
            e.to_string().contains("data.samples.rx[0]") && e.to_string().contains("max"),
            "{e}"
        );
        let long = vec![b' '; MAX_LINE_BYTES + 1];
        assert_eq!(
            parse_line(&long),
            Err(LineError::TooLong(MAX_LINE_BYTES + 1))
        );
    }

    #[test]
    fn log_keeps_good_lines_and_numbers_bad_ones() {
        let log = format!("{AMARISOFT}\n\ngarbage\n{AMARISOFT}\n{}", &AMARISOFT[..50]);
        let p = parse_log(log.as_bytes());
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.errors.len(), 2);
        assert_eq!(p.errors[0].0, 3);
        assert!(matches!(p.errors[0].1, LineError::Syntax { .. }));
        assert_eq!(p.errors[1].0, 5);
        assert!(matches!(p.errors[1].1, LineError::Truncated(_)));
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(parse_time("1970-01-01 00:00:00,000"), Some(0.0));
        assert_eq!(parse_time("2000-02-29T12:00:00Z"), Some(951_825_600.0));
        assert_eq!(
            parse_time("2024-03-05T11:20:30+01:00"),
            Some(1_709_634_030.0)
        );
        assert_eq!(parse_time("2024-03-05 10:20:30.25"), Some(1_709_634_030.25));
        for bad in [
            "2024-13-01 00:00:00",
            "2024-03-05",
            "2024-03-05 10:20:30,",
            "2024-03-05 10:20:30 UTC",
            "abcd-ef-gh ij:kl:mn",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        for t in [0.0, 951_825_600.0, 1_709_634_030.5, 4_102_444_799.999] {
            assert_eq!(parse_time(&format_time(t)), Some(t), "{t}");
        }
    }

    #[test]
    fn writer_output_parses_back() {
        let data = StatsData {
            message: Some("stats".into()),
            utc: Some(1_709_634_030.25),
            duration: Some(1.0),
            cells: [(
                "1".to_string(),
                CellStats {
                    dl_bitrate: 5.0,
                    pci: Some(1),
                    ..CellStats::default()
                },
            )]
            .into(),
            rf: Some(RfStats {
                rxtx_delay_min: Some(2.5),
                rxtx_delay_max: Some(2.9),
                rxtx_delay_avg: Some(2.7),
            }),
            samples: Some(Samples {
                rx: vec![SampleStats {
                    max: -20.0,
                    rms: -40.0,
                    sat: 0,
                    count: 7,
                }],
                tx: vec![],
            }),
            tti: Some(TtiStats {
                period_us: 1000,
                count: 1000,
                missed: 2,
                cpus: "2-3".into(),
                ..TtiStats::default()
            }),
        };
        let line = format_line(&data);
        assert!(
            line.contains("\"time\":\"2024-03-05 10:20:30,250\""),
            "{line}"
        );
        let r = parse_line(line.as_bytes()).unwrap();
        assert_eq!(r.data, data);
        assert_eq!(r.data.tti.unwrap().cpu_list(), vec![2, 3]);
    }
}
