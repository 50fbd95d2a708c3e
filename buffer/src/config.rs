//! `slapos-buffer` configuration (TOML). See `docs/buffer.md` for an annotated example.

use crate::input::LineFormat;
use crate::log::{FullPolicy, LogConfig, SyncPolicy};
use crate::tls::TlsCfg;
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
    /// A TLS file or a secret could not be used.
    #[error("{what}: {source}")]
    Secret {
        /// The input or output it belongs to.
        what: String,
        /// Why.
        #[source]
        source: crate::tls::TlsError,
    },
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
    /// Time a client has to send its request, and to take the answer (default 5000).
    pub timeout_ms: Option<u64>,
    /// Connections served at once (default 32); more are closed when accepted.
    pub max_connections: Option<usize>,
}

impl MetricsCfg {
    /// The endpoint's limits.
    pub fn limits(&self) -> crate::server::Limits {
        let mut l = crate::server::Limits::default();
        if let Some(ms) = self.timeout_ms {
            l.timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(n) = self.max_connections {
            l.connections = n.max(1);
        }
        l
    }
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
        /// User name.
        username: Option<String>,
        /// Refused: a password goes in `password_file`.
        password: Option<String>,
        /// File holding the password (mode 0600 or stricter).
        password_file: Option<PathBuf>,
        /// Keep-alive seconds.
        keep_alive_s: Option<u64>,
        /// TLS (absent: plain MQTT).
        tls: Option<TlsCfg>,
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
        /// Write `ok <n>` back on the line once the first `n` lines are durable (for
        /// firmware that keeps what it sent until then).
        #[serde(default)]
        ack: bool,
    },
    /// OPC-UA monitored items (feature `opcua`).
    Opcua {
        /// `opc.tcp://host:port/path`.
        endpoint: String,
        /// Node ids (`ns=2;s=temperature`).
        nodes: Vec<String>,
        /// Sampling/publishing interval.
        interval_ms: Option<u64>,
        /// `None` (default), `Basic256Sha256`, `Aes128Sha256RsaOaep` or `Aes256Sha256RsaPss`.
        security_policy: Option<String>,
        /// `Sign` or `SignAndEncrypt` (default with a policy other than `None`).
        security_mode: Option<String>,
        /// The client's application instance certificate (DER or PEM); its URI SAN must be
        /// `application_uri`.
        cert_file: Option<PathBuf>,
        /// The certificate's private key (PEM, mode 0600 or stricter).
        key_file: Option<PathBuf>,
        /// The server certificate to trust (DER or PEM): needed with a security policy.
        server_cert_file: Option<PathBuf>,
        /// User name (anonymous without).
        username: Option<String>,
        /// Refused: a password goes in `password_file`.
        password: Option<String>,
        /// File holding the user's password (mode 0600 or stricter).
        password_file: Option<PathBuf>,
        /// Application URI (default `urn:slapos-buffer`).
        application_uri: Option<String>,
        /// Values the server keeps per item while the buffer is away (default 1000).
        queue_size: Option<u32>,
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
        /// User name.
        username: Option<String>,
        /// Refused: a password goes in `password_file`.
        password: Option<String>,
        /// File holding the password (mode 0600 or stricter).
        password_file: Option<PathBuf>,
        /// Backoff base.
        backoff_base_ms: Option<u64>,
        /// Backoff cap.
        backoff_max_ms: Option<u64>,
        /// TLS (absent: plain MQTT).
        tls: Option<TlsCfg>,
    },
    /// HTTP POST batches.
    Http {
        /// `http://` or `https://host[:port]/path`.
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
        /// TLS of an `https://` url (absent: the system bundle, no client certificate).
        tls: Option<TlsCfg>,
    },
}

/// Refuses a password written in the config text, and a password file without a user.
fn check_password(
    what: &str,
    username: &Option<String>,
    password: &Option<String>,
    password_file: &Option<PathBuf>,
) -> Result<(), ConfigError> {
    if password.is_some() {
        return Err(ConfigError::Invalid(format!(
            "{what}: `password` in the config file: write it to a file of its own (mode 0600) \
             and name that file in `password_file`"
        )));
    }
    if password_file.is_some() && username.is_none() {
        return Err(ConfigError::Invalid(format!(
            "{what}: `password_file` without `username`"
        )));
    }
    Ok(())
}

/// Reads the password file of an input or output, if any.
pub fn read_password(
    what: &str,
    password_file: &Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    password_file
        .as_deref()
        .map(crate::tls::read_password)
        .transpose()
        .map_err(|source| ConfigError::Secret {
            what: what.to_owned(),
            source,
        })
}

/// Loads the TLS table of an input or output, if any.
pub fn load_tls(
    what: &str,
    tls: &Option<TlsCfg>,
) -> Result<Option<crate::tls::ClientTls>, ConfigError> {
    tls.as_ref()
        .map(crate::tls::ClientTls::load)
        .transpose()
        .map_err(|source| ConfigError::Secret {
            what: what.to_owned(),
            source,
        })
}

/// OPC-UA security policy names (`None` included).
pub const OPCUA_POLICIES: [&str; 4] = [
    "None",
    "Basic256Sha256",
    "Aes128Sha256RsaOaep",
    "Aes256Sha256RsaPss",
];

/// The OPC-UA (policy, mode) of an input: the mode defaults to `SignAndEncrypt` under a
/// policy, and a policy needs the certificates.
pub fn opcua_security(input: &InputCfg) -> Result<(String, String), ConfigError> {
    let InputCfg::Opcua {
        security_policy,
        security_mode,
        cert_file,
        key_file,
        server_cert_file,
        ..
    } = input
    else {
        return Err(ConfigError::Invalid("not an opcua input".into()));
    };
    let policy = security_policy.clone().unwrap_or_else(|| "None".into());
    if !OPCUA_POLICIES.contains(&policy.as_str()) {
        return Err(ConfigError::Invalid(format!(
            "opcua security_policy `{policy}`: use one of {}",
            OPCUA_POLICIES.join(", ")
        )));
    }
    let mode = match (policy.as_str(), security_mode.as_deref()) {
        ("None", None | Some("None")) => "None",
        ("None", Some(m)) => {
            return Err(ConfigError::Invalid(format!(
                "opcua security_mode `{m}` needs a security_policy"
            )));
        }
        (_, None | Some("SignAndEncrypt")) => "SignAndEncrypt",
        (_, Some("Sign")) => "Sign",
        (_, Some(m)) => {
            return Err(ConfigError::Invalid(format!(
                "opcua security_mode `{m}`: use Sign or SignAndEncrypt"
            )));
        }
    };
    if policy != "None" && (cert_file.is_none() || key_file.is_none() || server_cert_file.is_none())
    {
        return Err(ConfigError::Invalid(format!(
            "opcua security_policy `{policy}` needs cert_file and key_file (the client's \
             certificate) and server_cert_file (the server's, to trust)"
        )));
    }
    Ok((policy, mode.to_owned()))
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
        for (n, i) in c.inputs.iter().enumerate() {
            let what = format!("input {n}");
            match i {
                InputCfg::Tcp { format, .. } | InputCfg::Serial { format, .. } => {
                    line_format(format.as_deref())?;
                }
                InputCfg::Opcua { .. } if !cfg!(feature = "opcua") => {
                    return Err(ConfigError::Invalid(
                        "an opcua input needs slapos-buffer built with the `opcua` feature".into(),
                    ));
                }
                InputCfg::Opcua {
                    username,
                    password,
                    password_file,
                    ..
                } => {
                    check_password(&what, username, password, password_file)?;
                    opcua_security(i)?;
                }
                InputCfg::Mqtt {
                    username,
                    password,
                    password_file,
                    ..
                } => check_password(&what, username, password, password_file)?,
            }
        }
        match &c.output {
            Some(OutputCfg::Http { url, tls, .. }) => {
                crate::output::check_http_url(url)
                    .map_err(|e| ConfigError::Invalid(format!("output url `{url}`: {e}")))?;
                if tls.is_some() && !url.starts_with("https://") {
                    return Err(ConfigError::Invalid(format!(
                        "output url `{url}`: a [output.tls] table needs an https:// url"
                    )));
                }
                if tls.as_ref().is_some_and(|t| !t.alpn.is_empty()) {
                    return Err(ConfigError::Invalid(
                        "output tls: `alpn` is for MQTT (the HTTPS client offers http/1.1)".into(),
                    ));
                }
            }
            Some(OutputCfg::Mqtt {
                username,
                password,
                password_file,
                ..
            }) => check_password("output", username, password, password_file)?,
            None => {}
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
            (
                "[storage]\ndir='/x'\n[output]\ntype='http'\nurl='http://x/'\n[output.tls]",
                "needs an https:// url",
            ),
            (
                "[storage]\ndir='/x'\n[output]\ntype='mqtt'\nhost='h'\nport=1\nusername='u'\npassword='p'",
                "password_file",
            ),
            (
                "[storage]\ndir='/x'\n[output]\ntype='mqtt'\nhost='h'\nport=1\n[output.tls]\ncafile='x'",
                "cafile",
            ),
            ("[storage]\ndir='/x'\nbogus=1", "bogus"),
        ] {
            let e = Config::parse(bad).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
    }
}
