//! Node configuration (TOML).
//!
//! Every key is documented in `docs/node.md`; [`Config::from_toml`] is the only way a file becomes
//! a [`Config`], and [`Config::validate`] the only place the rules live, so the binary, the
//! embedded standalone node and the tests cannot disagree.
//!
//! Durations are seconds (integer or float: `poll_interval = 30`, `restart_backoff_min = 0.5`).
//! Relative paths in a file are resolved against the directory holding the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use slapos_proto::{ComputerId, LabelKey, PartitionId};

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read config file `{path}`: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The TOML did not parse or had unknown/mistyped keys.
    #[error("invalid config{}: {message}", origin.as_ref().map(|p| format!(" `{}`", p.display())).unwrap_or_default())]
    Parse {
        /// File, if any.
        origin: Option<PathBuf>,
        /// Parser message (names the key and line).
        message: String,
    },
    /// A value broke a rule.
    #[error("invalid config: `{key}`: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// The rule.
        reason: String,
    },
}

fn d_usage_period() -> Duration {
    Duration::from_secs(60)
}

fn d_outbox_max() -> usize {
    10_000
}

/// A block of TCP ports per partition, on 127.0.0.1 (unprivileged mode).
///
/// Partition `i` (0-based) owns `base + i*per_partition ..= base + (i+1)*per_partition - 1`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    /// First port of partition 0.
    #[serde(default = "default_port_base")]
    pub base: u16,
    /// Ports per partition.
    #[serde(default = "default_ports_per_partition")]
    pub per_partition: u16,
}

fn default_port_base() -> u16 {
    20000
}
fn default_ports_per_partition() -> u16 {
    10
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            base: default_port_base(),
            per_partition: default_ports_per_partition(),
        }
    }
}

impl PortRange {
    /// The ports of partition `index`.
    pub fn ports(&self, index: u32) -> Vec<u16> {
        let first = u32::from(self.base) + index * u32::from(self.per_partition);
        (first..first + u32::from(self.per_partition))
            .filter_map(|p| u16::try_from(p).ok())
            .collect()
    }
}

/// The node's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the master (`http://host:port`).
    pub master_url: String,
    /// This computer's reference at the master.
    pub computer_id: ComputerId,
    /// Number of partitions to format and offer.
    pub partitions: u32,
    /// Partition names are `<partition_prefix><index>`.
    #[serde(default = "default_prefix")]
    pub partition_prefix: String,
    /// Where software releases are installed (`<software_root>/<url hash>`).
    pub software_root: PathBuf,
    /// Where partitions live (`<instance_root>/<partition>`).
    pub instance_root: PathBuf,
    /// Node-private state (desired-state cache); default `<instance_root>/.slapos-node`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Fallback polling period, and retry period while the master is unreachable.
    #[serde(default = "d_poll", deserialize_with = "de_secs")]
    pub poll_interval: Duration,
    /// How long the master may hold a desired-state request (long poll); 0 = plain polling.
    #[serde(default = "d_long_poll", deserialize_with = "de_secs")]
    pub long_poll: Duration,
    /// Labels sent at registration (used by SLA filters).
    #[serde(default)]
    pub labels: BTreeMap<LabelKey, String>,
    /// Software releases installed at the same time.
    #[serde(default = "one")]
    pub max_installs: usize,
    /// Partition passes (render + start + promises) run at the same time.
    #[serde(default = "two")]
    pub max_instance_passes: usize,
    /// Ports per partition on 127.0.0.1.
    #[serde(default)]
    pub ports: PortRange,
    /// First delay before a crashed service is restarted.
    #[serde(default = "d_backoff_min", deserialize_with = "de_secs")]
    pub restart_backoff_min: Duration,
    /// Cap of the restart delay (doubles on each crash). A service that ran this long resets it.
    #[serde(default = "d_backoff_max", deserialize_with = "de_secs")]
    pub restart_backoff_max: Duration,
    /// Time between TERM and KILL when a service group is stopped.
    #[serde(default = "d_stop", deserialize_with = "de_secs")]
    pub stop_timeout: Duration,
    /// Default period of a promise (a manifest may set its own).
    #[serde(default = "d_promise_interval", deserialize_with = "de_secs")]
    pub promise_interval: Duration,
    /// Default time limit of one promise run.
    #[serde(default = "d_promise_timeout", deserialize_with = "de_secs")]
    pub promise_timeout: Duration,
    /// A service log is rotated when it exceeds this size.
    #[serde(default = "d_log_max")]
    pub log_max_bytes: u64,
    /// Rotated logs kept per service (`.1` … `.N`).
    #[serde(default = "two_u32")]
    pub log_keep: u32,
    /// A failed install is retried after this delay (or when the desired state changes).
    #[serde(default = "d_install_retry", deserialize_with = "de_secs")]
    pub install_retry: Duration,
    /// Time limit of one artifact download.
    #[serde(default = "d_fetch_timeout", deserialize_with = "de_secs")]
    pub fetch_timeout: Duration,
    /// PEM bundle of the CAs trusted for `https://` release downloads (read when the first
    /// https download starts). Default: the system bundle, `/etc/ssl/certs/ca-certificates.crt`.
    #[serde(default = "d_ca_bundle")]
    pub ca_bundle: PathBuf,
    /// Real-time partitions (the `rt` crate): `true`, `false` or `"auto"` (default: on when the
    /// node runs as root and a cgroup hierarchy is usable).
    #[serde(default)]
    pub rt: RtMode,
    /// CPUs partitions may reserve (`"1-3"`); default: rt's pool (isolated CPUs, else all but
    /// the first). Published as the `rt_cpus` label.
    #[serde(default)]
    pub rt_cpus: Option<String>,
    /// Name of the cgroup subtree holding the partitions' groups.
    #[serde(default = "d_rt_root_name")]
    pub rt_root_name: String,
    /// Directory of the node's companion programs (`rt-probe`, `enb-sim`, `slapos-radio`):
    /// `{{ tools_dir }}` in profiles, first in services' and promises' `PATH`. Default: the
    /// directory of the running executable.
    #[serde(default)]
    pub tools_dir: Option<PathBuf>,
    /// How the node talks to its master: `"native"` (default, the `/v1` API of master-lite) or
    /// `"slap"` (the classic SLAP protocol of slapos.core, e.g. `slapos proxy start`;
    /// `master_url` is then the slapproxy URL).
    #[serde(default)]
    pub protocol: Protocol,
    /// Partition isolation: `"users"` (a unix user per partition, root only), `"none"` (every
    /// partition runs as the node's user) or `"auto"` (default: users when root, see
    /// `docs/node.md`).
    #[serde(default)]
    pub isolation: IsolationMode,
    /// Partition users are `<user_prefix><index>` (`slapuser0` …).
    #[serde(default = "d_user_prefix")]
    pub user_prefix: String,
    /// The user build steps run as with `isolation = "users"` (created like partition users;
    /// default `slapsoft`). Without isolation builds run as the node's user.
    #[serde(default = "d_software_user")]
    pub software_user: String,
    /// Tasks (processes and threads) a partition may have at once: its jail's `pids.max`, and
    /// `RLIMIT_NPROC` of an isolated partition's processes.
    #[serde(default = "d_max_processes")]
    pub max_processes: u64,
    /// Disk budget of each partition in MiB (none by default: partitions share the
    /// filesystem). Enforced with project quotas where `instance_root` supports them, else
    /// measured (`docs/node.md`).
    #[serde(default)]
    pub disk_quota_mb: Option<u64>,
    /// Partition addresses on an interface (`[network]`, root mode); none by default.
    #[serde(default)]
    pub network: Option<crate::net::NetworkConfig>,
    /// PEM file of the master's CA (the only root trusted for an `https://` native master;
    /// `slapos-node enroll` authenticates the master with it). Default
    /// `<state_dir>/master-ca.pem`, where `enroll` stores the CA the master sent.
    /// Usage sampling period (`crate::usage`); zero disables it. Default 60 s.
    #[serde(default = "d_usage_period", deserialize_with = "de_secs")]
    pub usage_period: Duration,
    /// Samples the on-disk usage outbox holds before it folds the oldest. Default 10,000.
    #[serde(default = "d_outbox_max")]
    pub usage_outbox_max: usize,
    /// A node_exporter textfile rewritten on each usage sample (atomic rename); none by default.
    /// Flat keys rather than a `[usage]` table: a table's deserializer costs the static node
    /// ~3.5 KB (docs/cross.md, size goal).
    #[serde(default)]
    pub usage_metrics_file: Option<PathBuf>,
    #[serde(default)]
    pub master_ca: Option<PathBuf>,
    /// The computer's certificate (PEM), written by `slapos-node enroll`. Default
    /// `<state_dir>/computer.crt`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The computer's private key (PEM, mode 0600), written by `slapos-node enroll`. Default
    /// `<state_dir>/computer.key`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// Who partitions run as (`isolation` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationMode {
    /// `users` on a root node whose roots partition users can reach, else `none` (warned).
    #[default]
    Auto,
    /// A unix user per partition; refused when the node is not root.
    Users,
    /// Every partition runs as the node's user.
    None,
}

impl std::str::FromStr for IsolationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "users" => Ok(Self::Users),
            "none" => Ok(Self::None),
            other => Err(format!(
                "isolation = {other:?}: expected \"auto\", \"users\" or \"none\""
            )),
        }
    }
}

impl<'de> Deserialize<'de> for IsolationMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)
            .map_err(|e| serde::de::Error::custom(format!("isolation: {e}")))?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn d_user_prefix() -> String {
    "slapuser".into()
}

fn d_software_user() -> String {
    "slapsoft".into()
}

fn d_max_processes() -> u64 {
    1024
}

/// The protocol the node speaks to its master (`protocol` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// The native API (`/v1`, JSON, long poll).
    #[default]
    Native,
    /// The classic SLAP protocol (xml_marshaller forms, polling), as slapproxy serves it.
    Slap,
}

impl Protocol {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Slap => "slap",
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)
            .map_err(|e| serde::de::Error::custom(format!("protocol: {e}")))?;
        match s.as_str() {
            "native" => Ok(Self::Native),
            "slap" => Ok(Self::Slap),
            other => Err(serde::de::Error::custom(format!(
                "protocol = {other:?}: expected \"native\" or \"slap\""
            ))),
        }
    }
}

/// Whether the node manages real-time partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RtMode {
    /// On when root and a cgroup hierarchy is usable; otherwise off (refusing RT profiles).
    #[default]
    Auto,
    /// On; the node refuses to start when rt cannot work.
    On,
    /// Off: RT profiles are refused.
    Off,
}

impl<'de> Deserialize<'de> for RtMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::B(true) => Ok(Self::On),
            Raw::B(false) => Ok(Self::Off),
            Raw::S(s) if s == "auto" => Ok(Self::Auto),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "rt = {s:?}: expected true, false or \"auto\""
            ))),
        }
    }
}

fn d_rt_root_name() -> String {
    "slapos-edge".into()
}

fn default_prefix() -> String {
    "slappart".into()
}
fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn two_u32() -> u32 {
    2
}
fn d_poll() -> Duration {
    Duration::from_secs(30)
}
fn d_long_poll() -> Duration {
    Duration::from_secs(25)
}
fn d_backoff_min() -> Duration {
    Duration::from_secs(1)
}
fn d_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn d_stop() -> Duration {
    Duration::from_secs(10)
}
fn d_promise_interval() -> Duration {
    Duration::from_secs(60)
}
fn d_promise_timeout() -> Duration {
    Duration::from_secs(20)
}
fn d_log_max() -> u64 {
    1 << 20
}
fn d_install_retry() -> Duration {
    Duration::from_secs(300)
}
fn d_ca_bundle() -> PathBuf {
    PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
}

fn d_fetch_timeout() -> Duration {
    Duration::from_secs(600)
}

/// Seconds as an integer or a float, never negative, NaN or absurd.
pub(crate) fn de_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        I(u64),
        F(f64),
    }
    match Num::deserialize(d)? {
        Num::I(s) => Ok(Duration::from_secs(s)),
        Num::F(f) => Duration::try_from_secs_f64(f)
            .map_err(|_| serde::de::Error::custom(format!("{f} is not a valid number of seconds"))),
    }
}

impl Config {
    /// A configuration with every default, for `computer_id` talking to `master_url`.
    pub fn new(
        master_url: impl Into<String>,
        computer_id: ComputerId,
        partitions: u32,
        software_root: impl Into<PathBuf>,
        instance_root: impl Into<PathBuf>,
    ) -> Self {
        Self {
            master_url: master_url.into(),
            computer_id,
            partitions,
            partition_prefix: default_prefix(),
            software_root: software_root.into(),
            instance_root: instance_root.into(),
            state_dir: None,
            poll_interval: d_poll(),
            long_poll: d_long_poll(),
            labels: BTreeMap::new(),
            max_installs: one(),
            max_instance_passes: two(),
            ports: PortRange::default(),
            restart_backoff_min: d_backoff_min(),
            restart_backoff_max: d_backoff_max(),
            stop_timeout: d_stop(),
            promise_interval: d_promise_interval(),
            promise_timeout: d_promise_timeout(),
            log_max_bytes: d_log_max(),
            log_keep: two_u32(),
            install_retry: d_install_retry(),
            fetch_timeout: d_fetch_timeout(),
            ca_bundle: d_ca_bundle(),
            rt: RtMode::Auto,
            rt_cpus: None,
            rt_root_name: d_rt_root_name(),
            tools_dir: None,
            protocol: Protocol::Native,
            isolation: IsolationMode::Auto,
            user_prefix: d_user_prefix(),
            software_user: d_software_user(),
            max_processes: d_max_processes(),
            disk_quota_mb: None,
            network: None,
            usage_period: d_usage_period(),
            usage_outbox_max: d_outbox_max(),
            usage_metrics_file: None,
            master_ca: None,
            cert: None,
            key: None,
        }
    }

    /// The single-box layout used by `slapos-master standalone`: `<dir>/software`,
    /// `<dir>/instance`, `<dir>/node-state`, computer `local`, shorter polling.
    pub fn standalone(dir: &Path, master_url: impl Into<String>, partitions: u32) -> Self {
        let computer = ComputerId::parse("local").expect("`local` is a valid computer id");
        let mut c = Self::new(
            master_url,
            computer,
            partitions,
            dir.join("software"),
            dir.join("instance"),
        );
        c.state_dir = Some(dir.join("node-state"));
        c.poll_interval = Duration::from_secs(5);
        c.promise_interval = Duration::from_secs(30);
        c.install_retry = Duration::from_secs(60);
        c
    }

    /// Parse a TOML text; `base` resolves relative paths (the file's directory).
    pub fn from_toml(text: &str, base: Option<&Path>) -> Result<Self, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: base.map(Path::to_path_buf),
            message: e.to_string(),
        })?;
        if let Some(b) = base {
            for p in [&mut c.software_root, &mut c.instance_root] {
                if p.is_relative() {
                    *p = b.join(&*p);
                }
            }
            for s in [
                c.state_dir.as_mut(),
                c.tools_dir.as_mut(),
                Some(&mut c.ca_bundle),
                c.master_ca.as_mut(),
                c.cert.as_mut(),
                c.key.as_mut(),
                c.usage_metrics_file.as_mut(),
            ]
            .into_iter()
            .flatten()
            .filter(|s| s.is_relative())
            {
                *s = b.join(&*s);
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Read, parse and validate a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // Relative paths in the file are relative to the file, wherever the node is started.
        let abs = std::path::absolute(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml(&text, Some(&base)).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                origin: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })
    }

    /// Check every rule; the node refuses to start on the first broken one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if !(self.master_url.starts_with("http://") || self.master_url.starts_with("https://")) {
            return bad(
                "master_url",
                format!("{:?} must start with http:// or https://", self.master_url),
            );
        }
        if self.partitions == 0 || self.partitions > 10_000 {
            return bad(
                "partitions",
                format!("{} must be in 1..=10000", self.partitions),
            );
        }
        if let Err(e) = PartitionId::parse(format!("{}{}", self.partition_prefix, self.partitions))
        {
            return bad("partition_prefix", e.to_string());
        }
        for (key, p) in [
            ("software_root", &self.software_root),
            ("instance_root", &self.instance_root),
        ] {
            if p.is_relative() {
                return bad(key, format!("`{}` must be an absolute path", p.display()));
            }
        }
        if self.software_root == self.instance_root {
            return bad("software_root", "must differ from instance_root".to_owned());
        }
        if self.max_installs == 0 {
            return bad("max_installs", "must be at least 1".into());
        }
        if self.max_instance_passes == 0 {
            return bad("max_instance_passes", "must be at least 1".into());
        }
        if self.ports.per_partition == 0 {
            return bad("ports.per_partition", "must be at least 1".into());
        }
        let last = u64::from(self.ports.base)
            + u64::from(self.partitions) * u64::from(self.ports.per_partition);
        if self.ports.base < 1024 || last > 65536 {
            return bad(
                "ports",
                format!(
                    "{} partitions × {} ports from {} do not fit in 1024..=65535",
                    self.partitions, self.ports.per_partition, self.ports.base
                ),
            );
        }
        if self.restart_backoff_min.is_zero() || self.restart_backoff_min > self.restart_backoff_max
        {
            return bad(
                "restart_backoff_min",
                "must be > 0 and at most restart_backoff_max".into(),
            );
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval", "must be > 0".into());
        }
        if self.promise_interval.is_zero() || self.promise_timeout.is_zero() {
            return bad(
                "promise_interval",
                "promise interval and timeout must be > 0".into(),
            );
        }
        if self.log_max_bytes < 1024 {
            return bad("log_max_bytes", "must be at least 1024".into());
        }
        let name_ok = !self.rt_root_name.is_empty()
            && self.rt_root_name.len() <= 64
            && !matches!(self.rt_root_name.as_str(), "." | "..")
            && self
                .rt_root_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !name_ok {
            return bad(
                "rt_root_name",
                format!("{:?} must be 1-64 of A-Z a-z 0-9 . _ -", self.rt_root_name),
            );
        }
        if !self.usage_period.is_zero() && self.usage_period < Duration::from_millis(100) {
            return bad("usage_period", "must be 0 (off) or at least 0.1 s".into());
        }
        if self.usage_outbox_max < 2 {
            return bad("usage_outbox_max", "must be at least 2".into());
        }
        if let Some(n) = &self.network {
            n.validate(self.partitions)
                .map_err(|e| ConfigError::Invalid {
                    key: "network",
                    reason: e.to_string(),
                })?;
        }
        // A portable user name (useradd's default NAME_REGEX) of at most 32 bytes.
        let users_ok = self.user_prefix.len() + self.partitions.to_string().len() <= 32
            && self
                .user_prefix
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && self
                .user_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
        let soft_ok = (1..=32).contains(&self.software_user.len())
            && self
                .software_user
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && self
                .software_user
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
        if !soft_ok {
            return bad(
                "software_user",
                format!(
                    "{:?} must be 1-32 bytes, start with a-z or _ and hold only a-z 0-9 _ -",
                    self.software_user
                ),
            );
        }
        if self
            .software_user
            .strip_prefix(self.user_prefix.as_str())
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            return bad(
                "software_user",
                format!(
                    "{:?} is a partition user name (user_prefix)",
                    self.software_user
                ),
            );
        }
        if !(16..=4_194_304).contains(&self.max_processes) {
            return bad(
                "max_processes",
                format!("{} must be in 16..=4194304", self.max_processes),
            );
        }
        if self.disk_quota_mb == Some(0) {
            return bad(
                "disk_quota_mb",
                "must be at least 1 (omit it for no budget)".into(),
            );
        }
        if !users_ok {
            return bad(
                "user_prefix",
                format!(
                    "{:?} must start with a-z or _, hold only a-z 0-9 _ -, and leave room for \
                     the partition index within 32 bytes",
                    self.user_prefix
                ),
            );
        }
        Ok(())
    }

    /// Where the node's companion programs are: `tools_dir`, else the running executable's
    /// directory (`None` when neither is known).
    pub fn tools_dir(&self) -> Option<PathBuf> {
        self.tools_dir.clone().or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
        })
    }

    /// The node's private state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| self.instance_root.join(".slapos-node"))
    }

    /// True when the node authenticates to its master with a client certificate: an
    /// `https://` master, with either protocol.
    pub fn uses_identity(&self) -> bool {
        self.master_url.starts_with("https://")
    }

    /// The master CA file (`master_ca`, default `<state_dir>/master-ca.pem`).
    pub fn master_ca_path(&self) -> PathBuf {
        self.master_ca
            .clone()
            .unwrap_or_else(|| self.state_dir().join("master-ca.pem"))
    }

    /// The computer's certificate file (`cert`, default `<state_dir>/computer.crt`).
    pub fn cert_path(&self) -> PathBuf {
        self.cert
            .clone()
            .unwrap_or_else(|| self.state_dir().join("computer.crt"))
    }

    /// The computer's key file (`key`, default `<state_dir>/computer.key`).
    pub fn key_path(&self) -> PathBuf {
        self.key
            .clone()
            .unwrap_or_else(|| self.state_dir().join("computer.key"))
    }

    /// The partitions this node offers, in order, with their index.
    pub fn partition_ids(&self) -> Vec<(u32, PartitionId)> {
        (0..self.partitions)
            .filter_map(|i| {
                PartitionId::parse(format!("{}{i}", self.partition_prefix))
                    .ok()
                    .map(|p| (i, p))
            })
            .collect()
    }

    /// Directory of a partition.
    pub fn partition_dir(&self, id: &PartitionId) -> PathBuf {
        self.instance_root.join(id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
master_url = "http://127.0.0.1:8000"
computer_id = "COMP-1"
partitions = 3
software_root = "soft"
instance_root = "/srv/inst"
"#;

    #[test]
    fn minimal_file_gets_defaults_and_resolves_relative_paths() {
        let c = Config::from_toml(MINIMAL, Some(Path::new("/etc/slapos"))).unwrap();
        assert_eq!(c.software_root, Path::new("/etc/slapos/soft"));
        assert_eq!(c.instance_root, Path::new("/srv/inst"));
        assert_eq!(c.state_dir(), Path::new("/srv/inst/.slapos-node"));
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert_eq!(c.ports, PortRange::default());
        let ids: Vec<String> = c
            .partition_ids()
            .into_iter()
            .map(|(_, p)| p.to_string())
            .collect();
        assert_eq!(ids, ["slappart0", "slappart1", "slappart2"]);
    }

    #[test]
    fn durations_accept_integers_and_floats() {
        let t = format!("{MINIMAL}restart_backoff_min = 0.25\nrestart_backoff_max = 4\n");
        let c = Config::from_toml(&t, Some(Path::new("/x"))).unwrap();
        assert_eq!(c.restart_backoff_min, Duration::from_millis(250));
        assert_eq!(c.restart_backoff_max, Duration::from_secs(4));
        let t = format!("{MINIMAL}poll_interval = -1.0\n");
        let err = Config::from_toml(&t, Some(Path::new("/x"))).unwrap_err();
        assert!(err.to_string().contains("poll_interval"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key() {
        let t = format!("{MINIMAL}pol_interval = 3\n");
        let err = Config::from_toml(&t, None).unwrap_err();
        assert!(err.to_string().contains("pol_interval"), "{err}");

        let t = MINIMAL.replace("COMP-1", "../etc");
        let err = Config::from_toml(&t, None).unwrap_err();
        assert!(err.to_string().contains("computer id"), "{err}");

        let t = format!("{MINIMAL}[ports]\nbase = 65000\nper_partition = 1000\n");
        let err = Config::from_toml(&t, Some(Path::new("/x"))).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { key: "ports", .. }),
            "{err}"
        );

        let t = format!("{MINIMAL}restart_backoff_min = 9\nrestart_backoff_max = 2\n");
        let err = Config::from_toml(&t, Some(Path::new("/x"))).unwrap_err();
        assert!(err.to_string().contains("restart_backoff_min"), "{err}");

        // Without a base directory a relative root is an error, not a silent cwd path.
        let err = Config::from_toml(MINIMAL, None).unwrap_err();
        assert!(err.to_string().contains("software_root"), "{err}");
    }

    #[test]
    fn relative_config_file_paths_resolve_against_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("node.toml"), MINIMAL).unwrap();
        let c = Config::from_file(&d.path().join("node.toml")).unwrap();
        assert_eq!(c.software_root, d.path().join("soft"));
        let err = Config::from_file(&d.path().join("missing.toml")).unwrap_err();
        assert!(err.to_string().contains("missing.toml"), "{err}");
    }

    #[test]
    fn port_blocks_do_not_overlap() {
        let r = PortRange {
            base: 30000,
            per_partition: 3,
        };
        assert_eq!(r.ports(0), [30000, 30001, 30002]);
        assert_eq!(r.ports(2), [30006, 30007, 30008]);
    }

    #[test]
    fn protocol_defaults_to_native_and_is_validated() {
        let c = Config::from_toml(MINIMAL, Some(Path::new("/x"))).unwrap();
        assert_eq!(c.protocol, Protocol::Native);
        let t = format!("{MINIMAL}protocol = \"slap\"\n");
        let c = Config::from_toml(&t, Some(Path::new("/x"))).unwrap();
        assert_eq!(c.protocol, Protocol::Slap);
        assert_eq!(c.protocol.as_str(), "slap");
        let t = format!("{MINIMAL}protocol = \"SLAP\"\n");
        let err = Config::from_toml(&t, Some(Path::new("/x"))).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("protocol") && msg.contains("\"native\" or \"slap\""),
            "{msg}"
        );
        let t = format!("{MINIMAL}protocol = 1\n");
        let err = Config::from_toml(&t, Some(Path::new("/x"))).unwrap_err();
        assert!(err.to_string().contains("protocol"), "{err}");
    }

    #[test]
    fn isolation_and_user_prefix() {
        let c = Config::from_toml(MINIMAL, Some(Path::new("/x"))).unwrap();
        assert_eq!(c.isolation, IsolationMode::Auto);
        assert_eq!(c.user_prefix, "slapuser");
        let t = format!("{MINIMAL}isolation = \"users\"\nuser_prefix = \"edge_u\"\n");
        let c = Config::from_toml(&t, Some(Path::new("/x"))).unwrap();
        assert_eq!(
            (c.isolation, c.user_prefix.as_str()),
            (IsolationMode::Users, "edge_u")
        );
        let t = format!("{MINIMAL}isolation = \"none\"\n");
        let c = Config::from_toml(&t, Some(Path::new("/x"))).unwrap();
        assert_eq!(c.isolation, IsolationMode::None);
        let t = format!("{MINIMAL}isolation = \"root\"\n");
        let err = Config::from_toml(&t, Some(Path::new("/x"))).unwrap_err();
        assert!(err.to_string().contains("isolation"), "{err}");
        for bad in ["Slap", "9u", "a/b", "", &"u".repeat(32)] {
            let t = format!("{MINIMAL}user_prefix = {bad:?}\n");
            let err = Config::from_toml(&t, Some(Path::new("/x"))).unwrap_err();
            assert!(err.to_string().contains("user_prefix"), "{bad}: {err}");
        }
    }

    #[test]
    fn software_user_processes_and_disk_budget() {
        let c = Config::from_toml(MINIMAL, Some(Path::new("/x"))).unwrap();
        assert_eq!(
            (c.software_user.as_str(), c.max_processes, c.disk_quota_mb),
            ("slapsoft", 1024, None)
        );
        let t = format!(
            "{MINIMAL}software_user = \"edge_soft\"\nmax_processes = 64\ndisk_quota_mb = 100\n"
        );
        let c = Config::from_toml(&t, Some(Path::new("/x"))).unwrap();
        assert_eq!(
            (c.software_user.as_str(), c.max_processes, c.disk_quota_mb),
            ("edge_soft", 64, Some(100))
        );
        for (bad, key) in [
            ("software_user = \"Root\"", "software_user"),
            ("software_user = \"\"", "software_user"),
            ("software_user = \"slapuser3\"", "software_user"),
            ("max_processes = 3", "max_processes"),
            ("disk_quota_mb = 0", "disk_quota_mb"),
        ] {
            let err =
                Config::from_toml(&format!("{MINIMAL}{bad}\n"), Some(Path::new("/x"))).unwrap_err();
            assert!(err.to_string().contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn usage_keys() {
        let base = Some(Path::new("/etc/slapos"));
        let c = Config::from_toml(MINIMAL, base).unwrap();
        assert_eq!(c.usage_period, Duration::from_secs(60));
        assert_eq!((c.usage_outbox_max, c.usage_metrics_file), (10_000, None));
        let t = format!(
            "usage_period = 1.5\nusage_outbox_max = 50\nusage_metrics_file = \"m/u.prom\"\n{MINIMAL}"
        );
        let c = Config::from_toml(&t, base).unwrap();
        assert_eq!(c.usage_period, Duration::from_millis(1500));
        assert_eq!(c.usage_outbox_max, 50);
        assert_eq!(
            c.usage_metrics_file.as_deref(),
            Some(Path::new("/etc/slapos/m/u.prom"))
        );
        let c = Config::from_toml(&format!("usage_period = 0\n{MINIMAL}"), base).unwrap();
        assert!(c.usage_period.is_zero());
        for bad in [
            "usage_period = \"off\"",
            "usage_period = 0.01",
            "usage_outbox_max = 1",
        ] {
            let e = Config::from_toml(&format!("{bad}\n{MINIMAL}"), base).unwrap_err();
            let key = bad.split(' ').next().unwrap_or_default();
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn network_table() {
        let c = Config::from_toml(MINIMAL, Some(Path::new("/x"))).unwrap();
        assert_eq!(c.network, None);
        let t =
            format!("{MINIMAL}[network]\ninterface = \"eth0\"\nipv6_prefix = \"fd00:5a:1::/64\"\n");
        let c = Config::from_toml(&t, Some(Path::new("/x"))).unwrap();
        let n = c.network.unwrap();
        assert_eq!(n.ipv6(2).unwrap().to_string(), "fd00:5a:1::102");
        let t =
            format!("{MINIMAL}[network]\ninterface = \"eth0\"\nipv4_prefix = \"10.1.2.0/30\"\n");
        let err = Config::from_toml(&t, Some(Path::new("/x"))).unwrap_err();
        assert!(err.to_string().contains("ipv4_prefix"), "{err}");
    }

    #[test]
    fn identity_files_default_to_the_state_dir() {
        let c = Config::from_toml(MINIMAL, Some(Path::new("/x"))).unwrap();
        assert!(!c.uses_identity(), "http:// needs no identity");
        assert_eq!(
            (c.master_ca_path(), c.cert_path(), c.key_path()),
            (
                PathBuf::from("/srv/inst/.slapos-node/master-ca.pem"),
                PathBuf::from("/srv/inst/.slapos-node/computer.crt"),
                PathBuf::from("/srv/inst/.slapos-node/computer.key")
            )
        );
        let t = MINIMAL.replace("http://", "https://")
            + "master_ca = \"ca.pem\"\ncert = \"/etc/n.crt\"\nkey = \"n.key\"\n";
        let c = Config::from_toml(&t, Some(Path::new("/etc/slapos"))).unwrap();
        assert!(c.uses_identity());
        assert_eq!(c.master_ca_path(), Path::new("/etc/slapos/ca.pem"));
        assert_eq!(c.cert_path(), Path::new("/etc/n.crt"));
        assert_eq!(c.key_path(), Path::new("/etc/slapos/n.key"));
        let t = MINIMAL.replace("http://", "https://") + "protocol = \"slap\"\n";
        let c = Config::from_toml(&t, Some(Path::new("/x"))).unwrap();
        assert!(
            c.uses_identity(),
            "the SLAP link presents the certificate too"
        );
    }

    #[test]
    fn standalone_layout_is_valid() {
        let c = Config::standalone(Path::new("/tmp/sa"), "http://127.0.0.1:1", 4);
        c.validate().unwrap();
        assert_eq!(c.software_root, Path::new("/tmp/sa/software"));
        assert_eq!(c.state_dir(), Path::new("/tmp/sa/node-state"));
        assert_eq!(c.partition_ids().len(), 4);
    }
}
