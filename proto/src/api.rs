//! Messages of the native API (`/v1`, JSON over HTTP).
//!
//! Every body the master accepts or returns is one of these types, so master-lite, node-edge and
//! the CLI cannot drift apart. Ids inside them are validated newtypes ([`crate::ids`]): a message
//! that deserialises is already free of path-like ids.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{ComputerId, InstanceTitle, LabelKey, PartitionId, SoftwareType, SoftwareUrl};

/// Instance parameters or connection parameters: a JSON object.
pub type Params = Map<String, Value>;

/// The state a user asks of an instance, and the state a node reports back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Processes run and promises are checked.
    #[default]
    Started,
    /// Rendered, processes stopped.
    Stopped,
    /// Processes stopped, partition wiped and handed back to the free pool.
    Destroyed,
}

impl InstanceState {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::Destroyed => "destroyed",
        }
    }
}

impl std::str::FromStr for InstanceState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "started" => Ok(Self::Started),
            "stopped" => Ok(Self::Stopped),
            "destroyed" => Ok(Self::Destroyed),
            _ => Err(format!(
                "invalid state {s:?}: expected started, stopped or destroyed"
            )),
        }
    }
}

/// What a user asks of a software release on a computer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SupplyState {
    /// Install it (and keep it installed).
    #[default]
    Available,
    /// Remove it.
    Destroyed,
}

/// Install state of a software release, as the node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallState {
    /// Fetching artifacts or running build steps.
    Building,
    /// Installed and usable.
    Available,
    /// The last install attempt failed; the message carries the reason and log tail.
    Error,
    /// Removed from the node.
    Destroyed,
}

/// Service health as seen by the master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// [`crate::PROTOCOL_VERSION`] of the server.
    pub protocol: u32,
    /// Server program version.
    pub version: String,
}

/// One partition a node offers, sent at registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    /// Partition reference (`slappart0`).
    pub id: PartitionId,
    /// Addresses reserved for the partition (IPv4/IPv6 literals), may be empty.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The interface those addresses sit on (the partition's TAP, else the node's network
    /// interface): the first element of SlapOS's `ip_list` pairs. `None`: the partition id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The unix user the partition's processes run as, on a node that isolates partitions.
    /// The master records it only from a node registering over a connection from its own host,
    /// and then takes a plain-HTTP caller on that host running as this uid for the partition
    /// (`docs/identity.md`, local trust).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

/// `POST /v1/computers`: a node registers (or re-registers) itself and its partitions.
/// Re-registering keeps allocated partitions; partitions missing from the list are dropped only
/// when they are free.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterComputer {
    /// The computer's reference.
    pub id: ComputerId,
    /// Its partitions, in the order allocation should prefer them.
    pub partitions: Vec<PartitionSpec>,
    /// Labels used by SLA filters (`arch`, `cpu_count`, `rt_cpus`, `region`, …).
    #[serde(default)]
    pub labels: BTreeMap<LabelKey, String>,
}

/// A computer as the master knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComputerInfo {
    /// Reference.
    pub id: ComputerId,
    /// Labels.
    pub labels: BTreeMap<LabelKey, String>,
    /// Partitions, in registration order.
    pub partitions: Vec<PartitionInfo>,
    /// Software releases supplied to it, with the node's last install report.
    pub software: Vec<SoftwareInfo>,
    /// Unix milliseconds of the node's last contact, if any.
    pub last_seen_ms: Option<u64>,
}

/// A partition as the master knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Reference.
    pub id: PartitionId,
    /// Addresses.
    pub addresses: Vec<String>,
    /// Title of the instance allocated here, `None` when free.
    pub instance: Option<InstanceTitle>,
}

/// `POST /v1/computers/{id}/software`: supply or remove a release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupplyRequest {
    /// The release.
    pub url: SoftwareUrl,
    /// `available` (default) or `destroyed`.
    #[serde(default)]
    pub state: SupplyState,
}

/// `POST /v1/computers/{id}/software/report`: the node's install state of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftwareReport {
    /// The release.
    pub url: SoftwareUrl,
    /// Install state.
    pub state: InstallState,
    /// For `error`: what failed and the tail of the build log.
    #[serde(default)]
    pub message: Option<String>,
    /// For `available`: the parameter model the release declares (`[release] parameter_model`
    /// of its manifest, e.g. `radio-enb`). The master checks requests of the release against
    /// it, so bad parameters are refused at request time, not found later on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_model: Option<String>,
}

/// A release on a computer: what was asked and what the node reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoftwareInfo {
    /// The release.
    pub url: SoftwareUrl,
    /// What the user asked.
    pub requested: SupplyState,
    /// The node's last report, if any.
    pub install: Option<SoftwareReport>,
}

/// `POST /v1/instances`: request an instance by title. Idempotent: the same title (in the same
/// tree) updates parameters, state and type and never allocates a second partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRequest {
    /// Title, unique within the requester's tree.
    pub title: InstanceTitle,
    /// Software release the instance runs.
    pub software_url: SoftwareUrl,
    /// Software type (`default` when omitted).
    #[serde(default)]
    pub software_type: SoftwareType,
    /// Instance parameters.
    #[serde(default)]
    pub parameters: Params,
    /// SLA filter: `computer_guid` selects a computer, any other key must equal that label.
    #[serde(default)]
    pub sla: BTreeMap<String, String>,
    /// Requested state; `None` keeps the current state (`started` for a new instance).
    #[serde(default)]
    pub state: Option<InstanceState>,
    /// A shared ("slave") instance: no partition of its own, attached to a host instance of
    /// the same release and type (SLA `computer_guid`, `instance_guid` = `<computer>-<partition>`
    /// pick the host) and listed in the host's `slave_instance_list`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shared: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `POST /v1/instances/{title}/state`: change only the requested state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateChange {
    /// New requested state.
    pub state: InstanceState,
}

/// The outcome of one promise run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromiseResult {
    /// Promise name.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// Its output (tail) or the reason it failed.
    pub message: String,
    /// Unix milliseconds when it ran.
    pub at_ms: u64,
}

/// `POST /v1/computers/{c}/partitions/{p}/report`: what the node did with a partition.
/// A report with state `destroyed` means the partition was wiped: the master frees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionReport {
    /// State the partition is in.
    pub state: InstanceState,
    /// The assignment revision this report is about.
    pub revision: u64,
    /// Latest promise results (empty when stopped).
    #[serde(default)]
    pub promises: Vec<PromiseResult>,
    /// An error that kept the partition from converging, if any.
    #[serde(default)]
    pub error: Option<String>,
}

/// The last report of a partition, as the master shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportedStatus {
    /// The node's report.
    #[serde(flatten)]
    pub report: PartitionReport,
    /// Unix milliseconds when the master received it.
    pub at_ms: u64,
}

/// Answer to a [`PartitionReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// True when the partition is free after this report (a `destroyed` report was accepted,
    /// or the partition was already free).
    pub freed: bool,
    /// For a `destroyed` report on an instance that still has children: the children that must
    /// be destroyed first (they now are marked destroyed). The master bumps the instance's
    /// revision once they are gone, and the node reports `destroyed` again.
    #[serde(default)]
    pub waiting_for: Vec<InstanceTitle>,
}

/// `POST /v1/computers/{c}/partitions/{p}/connection`: publish connection parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionPublish {
    /// The parameters, replacing the previous ones.
    pub parameters: Params,
    /// What a host publishes for each shared instance it serves, by `slave_reference`
    /// (replacing that shared instance's previous ones; unknown references are ignored).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared: BTreeMap<String, Params>,
}

/// `POST /v1/computers/{c}/partitions/{p}/bang`: the instance signals a problem; the master
/// bumps the revision of its tree so every partition of it is processed again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bang {
    /// Why.
    pub message: String,
}

/// An instance as the master shows it to users.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Title.
    pub title: InstanceTitle,
    /// Title of the root of its tree (itself for a root).
    pub root_title: InstanceTitle,
    /// `computer/partition` of the instance that requested it; `None` for a user request.
    pub requester: Option<String>,
    /// Software release.
    pub software_url: SoftwareUrl,
    /// Software type.
    pub software_type: SoftwareType,
    /// Requested parameters.
    pub parameters: Params,
    /// Requested state.
    pub state: InstanceState,
    /// Where it is allocated.
    pub computer: ComputerId,
    /// Where it is allocated.
    pub partition: PartitionId,
    /// Connection parameters published by the node (empty until published).
    pub connection: Params,
    /// The node's last report.
    pub reported: Option<ReportedStatus>,
    /// Last bang message, if any.
    pub bang: Option<String>,
    /// Revision of the desired state; bumps on every change the node must act on.
    pub revision: u64,
    /// Titles of the instances it requested.
    pub children: Vec<InstanceTitle>,
    /// A shared instance: `computer`/`partition`/`revision` are its host's, `connection` what
    /// the host published for it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shared: bool,
}

/// Query of `GET /v1/computers/{id}/desired`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DesiredQuery {
    /// The etag the node already has; with `wait`, the answer is held until it changes.
    #[serde(default)]
    pub etag: Option<String>,
    /// Seconds to hold the answer (long poll), capped at [`crate::MAX_LONG_POLL_SECS`].
    #[serde(default)]
    pub wait: Option<u64>,
}

/// `GET /v1/computers/{id}/desired`: everything a node must converge to.
/// `304 Not Modified` (no body) when `etag` is still current after `wait`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Computer.
    pub computer: ComputerId,
    /// Changes whenever anything below changes.
    pub etag: String,
    /// Releases to install or remove.
    pub software: Vec<DesiredSoftware>,
    /// Every partition of the computer, allocated or not.
    pub partitions: Vec<DesiredPartition>,
}

/// A release a node must have (or remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredSoftware {
    /// The release.
    pub url: SoftwareUrl,
    /// Install or remove.
    pub state: SupplyState,
}

/// One partition of the desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredPartition {
    /// Partition.
    pub id: PartitionId,
    /// The instance it must run; `None` when free.
    pub instance: Option<Assignment>,
}

/// The instance a partition must run. `revision` changes whenever anything the node acts on
/// changes (state, release, type, parameters, children's connection parameters, bang), so the
/// node skips partitions whose revision it has already converged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Title.
    pub title: InstanceTitle,
    /// Title of its tree's root.
    pub root_title: InstanceTitle,
    /// Release.
    pub software_url: SoftwareUrl,
    /// Software type.
    pub software_type: SoftwareType,
    /// Parameters.
    pub parameters: Params,
    /// Requested state.
    pub state: InstanceState,
    /// Revision.
    pub revision: u64,
    /// Connection parameters of the instances this one requested, by title.
    #[serde(default)]
    pub children: BTreeMap<String, Params>,
    /// The shared instances this one hosts, in request order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<SharedInstance>,
}

/// A shared instance in its host's [`Assignment`]: rendered as one `slave_instance_list` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedInstance {
    /// `slave_reference`: `<requester tree root>_<title>` (`_<title>` from a user), the key
    /// the host publishes its connection parameters under.
    pub reference: String,
    /// The software type it asked for (`slap_software_type`).
    pub software_type: String,
    /// Its parameters.
    pub parameters: Params,
}

/// Error body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable kind: `bad_request`, `not_found`, `conflict`, `no_allocation`,
    /// `too_large`, `forbidden`, `internal`.
    pub kind: String,
    /// Human-readable message naming the object and what to do.
    pub error: String,
}

// ---------------------------------------------------------------------------------------------
// Usage (accounting)

/// What one partition used over one sampling period, as its node measured it (cgroup counters,
/// partition directory size). The node sends batches of these and keeps each until the master
/// acknowledges it; the master stores a sample once per `(computer, partition, start_ms)`, so
/// a batch sent again is not counted twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageSample {
    /// The partition measured.
    pub partition: PartitionId,
    /// Title of the instance the node ran there (`None`: the partition was free).
    #[serde(default)]
    pub instance: Option<InstanceTitle>,
    /// Period start, unix ms (the previous sample's end).
    pub start_ms: u64,
    /// Period end, unix ms; after `start_ms`.
    pub end_ms: u64,
    /// CPU time consumed over the period, nanoseconds.
    pub cpu_ns: u64,
    /// Memory charged at the end of the period, bytes (taken as the period's mean).
    pub memory_bytes: u64,
    /// Peak memory seen over the period (or since the cgroup exists), bytes.
    pub memory_peak_bytes: u64,
    /// Bytes read from block devices over the period.
    pub io_read_bytes: u64,
    /// Bytes written to block devices over the period.
    pub io_write_bytes: u64,
    /// Size of the partition directory at the end of the period, bytes.
    pub disk_bytes: u64,
    /// Tasks (threads) in the partition at the end of the period.
    pub tasks: u64,
    /// How many samples this one stands for: more than 1 when the node's outbox was full and
    /// it summed old samples into one rather than dropping them.
    #[serde(default = "one")]
    pub folded: u32,
}

fn one() -> u32 {
    1
}

/// A batch of samples a node posts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageBatch {
    /// The samples, any order.
    pub samples: Vec<UsageSample>,
}

/// The master's answer to a batch: every sample of it is now stored (new or already there),
/// so the node may drop them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAck {
    /// Samples stored by this call.
    pub stored: u32,
    /// Samples that were already stored (a resend).
    pub duplicates: u32,
}

/// How a usage report groups its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageBy {
    /// By instance (`root/title`, or `title` for a root; `(free)` for free partitions).
    Instance,
    /// By owner of the instance tree (`local` for the local operator's trees).
    User,
    /// By computer.
    Computer,
}

impl std::str::FromStr for UsageBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "instance" => Ok(Self::Instance),
            "user" => Ok(Self::User),
            "computer" => Ok(Self::Computer),
            other => Err(format!(
                "unknown grouping {other:?}: expected instance, user or computer"
            )),
        }
    }
}

/// One row of a usage report: sums over the samples of its group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The group (instance, owner or computer); `total` for the totals row.
    pub key: String,
    /// CPU seconds.
    pub cpu_seconds: f64,
    /// Memory × time, GiB·h.
    pub memory_gib_hours: f64,
    /// Disk × time, GiB·h.
    pub disk_gib_hours: f64,
    /// Bytes read.
    pub io_read_bytes: u64,
    /// Bytes written.
    pub io_write_bytes: u64,
    /// Highest peak memory of any sample, bytes.
    pub memory_peak_bytes: u64,
    /// Samples summed (a folded sample counts as the samples it stands for).
    pub samples: u64,
}

/// `GET /v1/usage`: the samples whose period ends in `(since_ms, until_ms]`, grouped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Start of the window (exclusive), unix ms.
    pub since_ms: u64,
    /// End of the window (inclusive), unix ms.
    pub until_ms: u64,
    /// The grouping.
    pub by: UsageBy,
    /// One row per group, by key.
    pub rows: Vec<UsageRow>,
    /// Sums over every row.
    pub total: UsageRow,
}

/// Path builders for the native API, so no client spells a route by hand.
pub mod routes {
    use crate::ids::{ComputerId, InstanceTitle, PartitionId};

    /// Prefix of every native route.
    pub const PREFIX: &str = "/v1";

    /// Percent-encode a path segment or query value (everything but RFC 3986 unreserved).
    pub fn encode(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// `GET` health.
    pub fn health() -> String {
        format!("{PREFIX}/health")
    }
    /// `POST` register, `GET` list.
    pub fn computers() -> String {
        format!("{PREFIX}/computers")
    }
    /// `GET` one computer.
    pub fn computer(c: &ComputerId) -> String {
        format!("{PREFIX}/computers/{c}")
    }
    /// `POST` supply.
    pub fn software(c: &ComputerId) -> String {
        format!("{PREFIX}/computers/{c}/software")
    }
    /// `POST` install report.
    pub fn software_report(c: &ComputerId) -> String {
        format!("{PREFIX}/computers/{c}/software/report")
    }
    /// `GET` desired state (long poll).
    pub fn desired(c: &ComputerId) -> String {
        format!("{PREFIX}/computers/{c}/desired")
    }
    /// `POST` partition report.
    pub fn partition_report(c: &ComputerId, p: &PartitionId) -> String {
        format!("{PREFIX}/computers/{c}/partitions/{p}/report")
    }
    /// `POST` connection parameters.
    pub fn partition_connection(c: &ComputerId, p: &PartitionId) -> String {
        format!("{PREFIX}/computers/{c}/partitions/{p}/connection")
    }
    /// `POST` bang.
    pub fn partition_bang(c: &ComputerId, p: &PartitionId) -> String {
        format!("{PREFIX}/computers/{c}/partitions/{p}/bang")
    }
    /// `POST` request, `GET` list.
    pub fn instances() -> String {
        format!("{PREFIX}/instances")
    }
    /// `GET` one instance. `root` selects a child instance's tree (`None`: a root instance).
    pub fn instance(title: &InstanceTitle, root: Option<&InstanceTitle>) -> String {
        let base = format!("{PREFIX}/instances/{}", encode(title.as_str()));
        match root {
            Some(r) => format!("{base}?root={}", encode(r.as_str())),
            None => base,
        }
    }
    /// `POST` a state change of a root instance.
    pub fn instance_state(title: &InstanceTitle) -> String {
        format!("{PREFIX}/instances/{}/state", encode(title.as_str()))
    }
    /// `POST` a node's usage samples.
    pub fn usage_samples(c: &ComputerId) -> String {
        format!("{PREFIX}/computers/{c}/usage")
    }
    /// `GET` a usage report of the window `(since_ms, until_ms]` grouped `by`.
    pub fn usage(since_ms: u64, until_ms: u64, by: super::UsageBy) -> String {
        let by = match by {
            super::UsageBy::Instance => "instance",
            super::UsageBy::User => "user",
            super::UsageBy::Computer => "computer",
        };
        format!("{PREFIX}/usage?since_ms={since_ms}&until_ms={until_ms}&by={by}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_defaults_are_filled() {
        let r: InstanceRequest =
            serde_json::from_str(r#"{"title":"web","software_url":"/srv/sr/software.toml"}"#)
                .unwrap();
        assert_eq!(r.software_type.as_str(), "default");
        assert!(r.parameters.is_empty());
        assert_eq!(r.state, None);
    }

    #[test]
    fn request_refuses_path_like_titles() {
        let err = serde_json::from_str::<InstanceRequest>(
            r#"{"title":"../x","software_url":"/srv/sr/software.toml"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("instance title"), "{err}");
    }

    #[test]
    fn states_use_lowercase_names() {
        assert_eq!(
            serde_json::to_string(&InstanceState::Destroyed).unwrap(),
            "\"destroyed\""
        );
        assert_eq!(
            "stopped".parse::<InstanceState>().unwrap(),
            InstanceState::Stopped
        );
        assert!("paused".parse::<InstanceState>().is_err());
    }

    #[test]
    fn routes_encode_titles() {
        let t = InstanceTitle::parse("My web #1?").unwrap();
        assert_eq!(
            routes::instance(&t, None),
            "/v1/instances/My%20web%20%231%3F"
        );
        let r = InstanceTitle::parse("root").unwrap();
        assert_eq!(
            routes::instance(&t, Some(&r)),
            "/v1/instances/My%20web%20%231%3F?root=root"
        );
    }

    /// Locks the wire shape of the desired state: a change here breaks deployed nodes.
    #[test]
    fn desired_state_golden() {
        let json = r#"{"computer":"COMP-1","etag":"7","software":[{"url":"/sr/a.toml","state":"available"}],"partitions":[{"id":"slappart0","instance":{"title":"web","root_title":"web","software_url":"/sr/a.toml","software_type":"default","parameters":{"port":"8080"},"state":"started","revision":3,"children":{}}},{"id":"slappart1","instance":null}]}"#;
        let d: DesiredState = serde_json::from_str(json).unwrap();
        assert_eq!(d.partitions.len(), 2);
        assert_eq!(serde_json::to_string(&d).unwrap(), json);
    }
}
