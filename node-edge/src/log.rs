//! The node's log output: tracing events as one line each on stderr.
//!
//! ```text
//! 2026-12-02T16:40:01.123Z  INFO node_edge::converge: software release available software=… dir=…
//! ```
//!
//! What `tracing_subscriber::fmt()` printed for the node, without its machinery (registry,
//! span storage, formatting layers): the node records no spans, and the static binary has a
//! 3 MB budget (docs/cross.md). Each line is written with one `write_all` on a locked stderr,
//! so lines from several threads never interleave. Spans are accepted and ignored.
//!
//! `SLAPOS_LOG_FORMAT=json` writes one JSON object per line instead, with the keys of
//! tracing-subscriber's JSON format (what the master and the buffer write), for log shippers:
//! `{"timestamp":"…Z","level":"INFO","fields":{"message":"…","key":value},"target":"…"}`.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use slapos_proto::slap::civil_from_days;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// How each event is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One human-readable line (the default).
    Text,
    /// One JSON object per line.
    Json,
}

/// The format `SLAPOS_LOG_FORMAT` names (`text`, the default, or `json`); another value is an
/// error that says which are known.
pub fn format_from_env() -> Result<Format, String> {
    match std::env::var("SLAPOS_LOG_FORMAT").as_deref() {
        Ok("json") => Ok(Format::Json),
        Ok("text") | Err(_) => Ok(Format::Text),
        Ok(other) => Err(format!(
            "SLAPOS_LOG_FORMAT={other:?}: expected `text` (the default) or `json`"
        )),
    }
}

/// Installs the stderr logger for events at `max` and more severe. A second call (or another
/// global subscriber already set) leaves the first in place.
pub fn init(max: Level, format: Format) {
    let _ = tracing::subscriber::set_global_default(Stderr { max, format });
}

/// The level `SLAPOS_LOG` names (`trace|debug|info|warn|error`), `info` otherwise.
pub fn level_from_env() -> Level {
    match std::env::var("SLAPOS_LOG").as_deref() {
        Ok("trace") => Level::TRACE,
        Ok("debug") => Level::DEBUG,
        Ok("warn") => Level::WARN,
        Ok("error") => Level::ERROR,
        _ => Level::INFO,
    }
}

struct Stderr {
    max: Level,
    format: Format,
}

impl Subscriber for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        // In tracing, more verbose levels compare greater (TRACE > ERROR).
        *m.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(self.max))
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = match self.format {
            Format::Text => format_line(SystemTime::now(), event.metadata(), |v| event.record(v)),
            Format::Json => format_json(SystemTime::now(), event.metadata(), |v| event.record(v)),
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// One log line: timestamp, level, target, message, then `key=value` fields.
fn format_line(
    now: SystemTime,
    meta: &Metadata<'_>,
    record: impl FnOnce(&mut dyn Visit),
) -> String {
    let mut fields = Fields::default();
    record(&mut fields);
    let mut line = String::with_capacity(96 + fields.message.len() + fields.rest.len());
    write_utc(&mut line, now);
    let _ = write!(
        line,
        " {:>5} {}: {}",
        meta.level(),
        meta.target(),
        fields.message
    );
    line.push_str(&fields.rest);
    line.push('\n');
    line
}

/// One JSON line: the keys of tracing-subscriber's JSON format.
fn format_json(
    now: SystemTime,
    meta: &Metadata<'_>,
    record: impl FnOnce(&mut dyn Visit),
) -> String {
    let mut fields = JsonFields::default();
    record(&mut fields);
    let mut timestamp = String::with_capacity(24);
    write_utc(&mut timestamp, now);
    let mut line = serde_json::json!({
        "timestamp": timestamp,
        "level": meta.level().as_str(),
        "fields": fields.0,
        "target": meta.target(),
    })
    .to_string();
    line.push('\n');
    line
}

/// The event's fields as a JSON object (numbers and booleans kept, others as text).
#[derive(Default)]
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

/// The event's message and its other fields as ` key=value` (strings unquoted, like the
/// `%value` the node's call sites use; other values with their Debug form).
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

/// `YYYY-MM-DDThh:mm:ss.mmmZ` (UTC, milliseconds).
fn write_utc(out: &mut String, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        // 2000-02-29 (leap day of a year divisible by 400) and 2026-12-02.
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_789), (2026, 12, 2));
        let mut s = String::new();
        write_utc(
            &mut s,
            UNIX_EPOCH + Duration::from_millis(1_764_693_601_123),
        );
        assert_eq!(s, "2025-12-02T16:40:01.123Z");
    }

    /// A subscriber that keeps the formatted lines, to check what `event` writes.
    struct Capture(Arc<Mutex<Vec<String>>>, Level, Format);

    impl Subscriber for Capture {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            *m.level() <= self.1
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, e: &Event<'_>) {
            let line = match self.2 {
                Format::Text => format_line(UNIX_EPOCH, e.metadata(), |v| e.record(v)),
                Format::Json => format_json(UNIX_EPOCH, e.metadata(), |v| e.record(v)),
            };
            self.0.lock().unwrap().push(line);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn lines_carry_level_target_message_and_fields() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sub = Capture(lines.clone(), Level::INFO, Format::Text);
        tracing::subscriber::with_default(sub, || {
            let url = "file:///sr/software.toml";
            tracing::info!(software = %url, n = 3, "software release available");
            tracing::warn!("master unreachable: {}", "connection refused");
            tracing::debug!("filtered out");
        });
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[0],
            "1970-01-01T00:00:00.000Z  INFO node_edge::log::tests: software release available \
             software=file:///sr/software.toml n=3\n"
        );
        assert!(
            lines[1]
                .ends_with(" WARN node_edge::log::tests: master unreachable: connection refused\n"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn json_lines_are_objects_with_typed_fields() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sub = Capture(lines.clone(), Level::INFO, Format::Json);
        tracing::subscriber::with_default(sub, || {
            let url = "file:///sr/\"quoted\".toml";
            tracing::info!(software = %url, n = 3, ok = true, "release available");
        });
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].ends_with('\n') && !lines[0].trim_end().contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "1970-01-01T00:00:00.000Z",
                "level": "INFO",
                "fields": {"message": "release available",
                           "software": "file:///sr/\"quoted\".toml", "n": 3, "ok": true},
                "target": "node_edge::log::tests",
            })
        );
    }
}
