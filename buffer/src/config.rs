//! `slapos-buffer` configuration (TOML). See `docs/buffer.md` for an annotated example.

use crate::input::LineFormat;
use crate::log::{FullPolicy, LogConfig, SyncPolicy};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read config `{path}`: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TOML or schema error.
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Node id in delivery ids (default: random, kept in META).
    pub node_id: Option<String>,
    /// Storage.
    pub storage: Storage,
    /// Metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsCfg,
    /// Inputs.
    #[serde(default)]
    pub inputs: Vec<InputCfg>,
    /// Output (none: the log only fills; useful for tests and local capture).
    pub output: Option<OutputCfg>,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Parent directory of the stream directory.
    pub dir: PathBuf,
    /// Stream name.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Segment size.
    pub segment_bytes: Option<u64>,
    /// Frame size.
    pub frame_bytes: Option<usize>,
    /// Batch size.
    pub batch_bytes: Option<usize>,
    /// Batch window.
    pub batch_window_ms: Option<u64>,
    /// `batched` | `interval` | `never`.
    #[serde(default = "default_sync")]
    pub sync: String,
    /// For `interval`.
    pub sync_interval_ms: Option<u64>,
    /// Disk budget.
    pub max_bytes: Option<u64>,
    /// Age limit.
    pub max_age_secs: Option<u64>,
    /// Free space floor.
    pub min_free_bytes: Option<u64>,
    /// `drop_oldest` | `block` | `drop_newest`.
    #[serde(default = "default_policy")]
    pub full_policy: String,
    /// Cursor fdatasync interval.
    pub cursor_sync_ms: Option<u64>,
    /// Ingest channel bound in bytes.
    pub channel_bytes: Option<usize>,
}

fn default_stream() -> String {
    "default".into()
}
fn default_sync() -> String {
    "batched".into()
}
fn default_policy() -> String {
    "drop_oldest".into()
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsCfg {
    /// `host:port` of the Prometheus/status endpoint (port 0: any free port).
    pub listen: Option<String>,
}

/// `[[inputs]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum InputCfg {
    /// MQTT subscription to a (local) broker.
    Mqtt {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Client id (persistent session).
        client_id: Option<String>,
        /// Topic filters.
        topics: Vec<String>,
        /// Credentials.
        username: Option<String>,
        /// Credentials.
        password: Option<String>,
        /// Keep-alive seconds.
        keep_alive_s: Option<u64>,
    },
    /// TCP lines.
    Tcp {
        /// `host:port` to listen on.
        listen: String,
        /// `raw` | `json`.
        format: Option<String>,
        /// Write `ok <n>` acknowledgements.
        #[serde(default)]
        ack: bool,
        /// Accept `hello <producer> <next>` as a connection's first line: its lines are
        /// numbered and resends of stored lines are not stored again.
        #[serde(default)]
        idempotent: bool,
        /// Longest line.
        max_line: Option<usize>,
    },
    /// Serial lines.
    Serial {
        /// Device.
        path: String,
        /// Baud rate.
        baud: Option<u32>,
        /// `raw` | `json`.
        format: Option<String>,
        /// Longest line.
        max_line: Option<usize>,
    },
    /// OPC-UA monitored items (feature `opcua`).
    Opcua {
        /// `opc.tcp://host:port/path`.
        endpoint: String,
        /// Node ids (`ns=2;s=temperature`).
        nodes: Vec<String>,
        /// Sampling/publishing interval.
        interval_ms: Option<u64>,
    },
}

/// `[output]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputCfg {
    /// MQTT v5 QoS 1.
    Mqtt {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Client id.
        client_id: Option<String>,
        /// Topic template (`{stream}`, `{key}`).
        topic: Option<String>,
        /// In-flight window (records).
        window: Option<u16>,
        /// Keep-alive seconds.
        keep_alive_s: Option<u64>,
        /// Credentials.
        username: Option<String>,
        /// Credentials.
        password: Option<String>,
        /// Backoff base.
        backoff_base_ms: Option<u64>,
        /// Backoff cap.
        backoff_max_ms: Option<u64>,
    },
    /// HTTP POST batches.
    Http {
        /// `http://host:port/path`.
        url: String,
        /// Records per batch.
        batch_records: Option<usize>,
        /// Bytes per batch.
        batch_bytes: Option<usize>,
        /// Request timeout.
        timeout_ms: Option<u64>,
        /// Backoff base.
        backoff_base_ms: Option<u64>,
        /// Backoff cap.
        backoff_max_ms: Option<u64>,
    },
}

/// Parses `raw` / `json`.
pub fn line_format(s: Option<&str>) -> Result<LineFormat, ConfigError> {
    match s.unwrap_or("raw") {
        "raw" => Ok(LineFormat::Raw),
        "json" => Ok(LineFormat::Json),
        o => Err(ConfigError::Invalid(format!(
            "line format `{o}`: use raw or json"
        ))),
    }
}

impl Config {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text)?;
        c.log_config()?;
        for i in &c.inputs {
            match i {
                InputCfg::Tcp { format, .. } | InputCfg::Serial { format, .. } => {
                    line_format(format.as_deref())?;
                }
                InputCfg::Opcua { .. } if !cfg!(feature = "opcua") => {
                    return Err(ConfigError::Invalid(
                        "an opcua input needs slapos-buffer built with the `opcua` feature".into(),
                    ));
                }
                _ => {}
            }
        }
        if let Some(OutputCfg::Http { url, .. }) = &c.output
            && crate::output::parse_http_url(url).is_none()
        {
            return Err(ConfigError::Invalid(format!(
                "output url `{url}`: use http://host:port/path"
            )));
        }
        Ok(c)
    }

    /// Reads and parses a file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The log configuration.
    pub fn log_config(&self) -> Result<LogConfig, ConfigError> {
        let s = &self.storage;
        let mut c = LogConfig::new(&s.dir, &s.stream);
        let ms = Duration::from_millis;
        if let Some(v) = s.segment_bytes {
            c.segment_bytes = v;
        }
        if let Some(v) = s.frame_bytes {
            c.frame_bytes = v.clamp(256, crate::codec::MAX_BODY_LEN as usize);
        }
        if let Some(v) = s.batch_bytes {
            c.batch_bytes = v.max(c.frame_bytes);
        }
        if let Some(v) = s.batch_window_ms {
            c.batch_window = ms(v);
        }
        c.sync = match s.sync.as_str() {
            "batched" | "always" => SyncPolicy::Batched,
            "interval" => SyncPolicy::Interval(ms(s.sync_interval_ms.unwrap_or(1000))),
            "never" => SyncPolicy::Never,
            o => {
                return Err(ConfigError::Invalid(format!(
                    "sync `{o}`: use batched, interval or never"
                )));
            }
        };
        if let Some(v) = s.max_bytes {
            if v < 1 << 20 {
                return Err(ConfigError::Invalid(format!(
                    "max_bytes {v}: at least 1 MiB"
                )));
            }
            c.max_bytes = v;
        }
        c.max_age = s.max_age_secs.map(Duration::from_secs);
        if let Some(v) = s.min_free_bytes {
            c.min_free_bytes = v;
        }
        c.full_policy = match s.full_policy.as_str() {
            "drop_oldest" => FullPolicy::DropOldest,
            "block" => FullPolicy::Block,
            "drop_newest" => FullPolicy::DropNewest,
            o => {
                return Err(ConfigError::Invalid(format!(
                    "full_policy `{o}`: use drop_oldest, block or drop_newest"
                )));
            }
        };
        if let Some(v) = s.cursor_sync_ms {
            c.cursor_sync = ms(v);
        }
        c.node_id = self.node_id.clone();
        Ok(c)
    }

    /// Ingest channel bound (default 1 MiB).
    pub fn channel_bytes(&self) -> usize {
        self.storage.channel_bytes.unwrap_or(1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            r#"
            node_id = "gw-1"
            [storage]
            dir = "/srv/buf"
            stream = "sensors"
            sync = "interval"
            sync_interval_ms = 500
            max_bytes = 67108864
            full_policy = "block"
            [metrics]
            listen = "127.0.0.1:0"
            [[inputs]]
            type = "mqtt"
            host = "127.0.0.1"
            port = 1883
            topics = ["sensors/#"]
            [[inputs]]
            type = "tcp"
            listen = "127.0.0.1:0"
            format = "json"
            ack = true
            idempotent = true
            [[inputs]]
            type = "serial"
            path = "/dev/ttyUSB0"
            [output]
            type = "http"
            url = "http://127.0.0.1:8080/ingest"
            "#,
        )
        .unwrap();
        let l = c.log_config().unwrap();
        assert_eq!(l.sync, SyncPolicy::Interval(Duration::from_millis(500)));
        assert_eq!(l.full_policy, FullPolicy::Block);
        assert_eq!(l.node_id.as_deref(), Some("gw-1"));
        assert_eq!(c.inputs.len(), 3);
        assert!(matches!(
            c.inputs[1],
            InputCfg::Tcp {
                idempotent: true,
                ..
            }
        ));
    }

    #[test]
    fn bad_values_are_refused_with_the_value() {
        for (bad, what) in [
            ("[storage]\ndir='/x'\nsync='sometimes'", "sometimes"),
            ("[storage]\ndir='/x'\nfull_policy='panic'", "panic"),
            ("[storage]\ndir='/x'\nmax_bytes=10", "max_bytes 10"),
            (
                "[storage]\ndir='/x'\n[[inputs]]\ntype='tcp'\nlisten='x'\nformat='xml'",
                "xml",
            ),
            (
                "[storage]\ndir='/x'\n[output]\ntype='http'\nurl='ftp://x'",
                "ftp://x",
            ),
            ("[storage]\ndir='/x'\nbogus=1", "bogus"),
        ] {
            let e = Config::parse(bad).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
    }
}
