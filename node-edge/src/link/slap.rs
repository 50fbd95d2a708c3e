//! The classic SLAP protocol (slapos.core 1.26.1, as `slapos proxy start` serves it) behind
//! [`MasterLink`], selected with `protocol = "slap"` (`docs/node.md`, "SLAP protocol").
//!
//! * `register` → `POST /loadComputerConfigurationFromXML` (`computer_id`, `xml`: the marshalled
//!   computer dictionary `slapos node format` sends: `reference`, `address`, `netmask`,
//!   `partition_list` with `reference`, `address_list`, `tap`).
//! * `desired` → `GET /getFullComputerInformation?computer_id=…`, decoded into a
//!   [`DesiredState`]. slapproxy has no long poll: the link ignores `wait` and answers
//!   `Ok(None)` when the state has `etag`; the [`Session`](super::Session) polls every
//!   [`POLL_STEP`] ([`MasterLink::poll_step`]) while a hold lasts. The etag is a hash of
//!   the decoded state, and each partition's `revision` a hash of its assignment, so any change
//!   the node must apply changes the revision (the node only compares revisions for
//!   inequality).
//! * `send` → the slapgrid report routes (`buildingSoftwareRelease`, `availableSoftwareRelease`,
//!   `softwareReleaseError`, `destroyedSoftwareRelease`, `startedComputerPartition`,
//!   `stoppedComputerPartition`, `destroyedComputerPartition`, `softwareInstanceError`,
//!   `setComputerPartitionConnectionXml`). A `started` report with a failing promise is
//!   slapgrid's `softwareInstanceError` (`Promise 'name' failed with output: …`).
//! * Child requests → `requestComputerPartition` as the partition (`computer_id`,
//!   `computer_partition_id`, `X-SlapPartition`, like `ComputerPartition.request`). The link keeps
//!   the last `_connection_dict` per (partition, child title) and puts it in the requesting
//!   partition's [`Assignment::children`] on every poll (before the revision is computed, so a
//!   child's new connection parameters re-process the parent, as the native master does). A
//!   remembered request is sent again by the poll while its answer has no connection parameters
//!   (or is slapproxy's 408 "not ready"), and every [`REREQUEST`] otherwise; it is forgotten
//!   when its partition is free.
//!
//! Encoding and decoding are pure functions ([`computer_xml`], [`desired_from_xml`],
//! [`call_for`]) over the `slapos_proto::slap` codec; only [`SlapLink`] does I/O (ureq).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use slapos_client::ClientError;
use slapos_proto::slap::{
    ComputerDoc, ComputerPartitionDoc, ConnectionForm, EncodeError, JournalWriter,
    PartitionRef as SlapPartitionRef, RequestForm, RequestedState, SlapPartitionAuth,
    SoftwareInstanceDoc, Value, dumps, journal_date, journal_user, loads,
};
use slapos_proto::{
    Assignment, ComputerId, DesiredPartition, DesiredSoftware, DesiredState, InstallState,
    InstanceRequest, InstanceState, InstanceTitle, Params, PartitionId, RegisterComputer,
    SoftwareType, SoftwareUrl, SupplyState, UsageAck, UsageBatch, routes,
};

use crate::link::{MasterLink, Outgoing};

/// Period of the desired-state polling while a `wait` is held (slapproxy has no long poll).
pub const POLL_STEP: Duration = Duration::from_secs(1);

/// Time limit of one SLAP call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest answer read from the master (a computer of many partitions).
const ANSWER_LIMIT: usize = slapos_client::DEFAULT_ANSWER_LIMIT;

/// Period after which the poll sends a remembered child request again although its answer
/// already carried connection parameters (they may change).
pub const REREQUEST: Duration = Duration::from_secs(60);

/// Connection parameters of children: (requesting partition, child title, parameters).
pub type Children = Vec<(PartitionId, String, Params)>;

/// A form to `POST`.
type Form = Vec<(&'static str, String)>;

/// A child request the link sent, with its last answer.
#[derive(Debug, Clone)]
struct Sent {
    partition: PartitionId,
    title: String,
    form: Form,
    /// `None`: not answered yet (408 "not ready").
    answer: Option<Params>,
    at: Instant,
}

/// Keys slapproxy (and the real master) add to `_parameter_dict` besides the requested
/// parameters; they are not instance parameters.
const CONTEXT_KEYS: &[&str] = &[
    "ip_list",
    "full_address_list",
    "full_ip_list",
    "slap_software_type",
    "instance_title",
    "root_instance_title",
    "root_instance_short_title",
    "slap_computer_id",
    "slap_computer_partition_id",
    "slap_software_release_url",
    "slave_instance_list",
    "timestamp",
];

/// One HTTP call the link makes for an [`Outgoing`] message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `POST /<route>` with a form; `partition`: sent with the partition's
    /// `X-SlapPartition` authorization, like slapgrid.
    Post {
        /// Route, without the leading `/`.
        route: &'static str,
        /// Form fields, in order.
        form: Vec<(&'static str, String)>,
        /// The partition the call is about.
        partition: Option<PartitionId>,
    },
    /// Nothing to send over SLAP (the reason is logged at debug level).
    Drop(&'static str),
}

/// The node's link to a SLAP master (slapproxy).
#[derive(Clone)]
pub struct SlapLink {
    base: String,
    agent: ureq::Agent,
    computer: ComputerId,
    /// Child requests by (requesting partition, child title).
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl std::fmt::Debug for SlapLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlapLink")
            .field("base", &self.base)
            .field("computer", &self.computer)
            .finish()
    }
}

impl SlapLink {
    /// A link for `computer` to the SLAP master at `url` (`http://host:port`).
    pub fn new(url: &str, computer: ComputerId) -> Result<Self, ClientError> {
        let (base, agent) = slapos_client::http_agent(url, CALL_TIMEOUT)?;
        Ok(Self {
            base,
            agent,
            computer,
            sent: Arc::default(),
        })
    }

    /// The same over mTLS (`https://host:port`): the master CA as the only root, the enrolled
    /// computer certificate as the client identity (what a SlapOS master or master-lite's
    /// `serve --tls-dir` expects of a node).
    pub fn with_identity(
        url: &str,
        computer: ComputerId,
        id: &crate::link::identity::NodeIdentity,
    ) -> Result<Self, ClientError> {
        let (base, agent) = slapos_client::tls_agent(
            url,
            &id.ca_pem,
            Some((&id.cert_pem, &id.key_pem)),
            CALL_TIMEOUT,
        )?;
        Ok(Self {
            base,
            agent,
            computer,
            sent: Arc::default(),
        })
    }

    fn url(&self, route: &str) -> String {
        format!("{}/{route}", self.base)
    }

    fn post(
        &self,
        route: &str,
        form: &[(&'static str, String)],
        partition: Option<&PartitionId>,
    ) -> Result<String, ClientError> {
        let auth =
            partition.map(|p| SlapPartitionAuth::header_value(self.computer.as_str(), p.as_str()));
        slapos_client::post_form(
            &self.agent,
            &self.url(route),
            form,
            auth.as_deref(),
            ANSWER_LIMIT,
        )
    }

    /// One `getFullComputerInformation`, decoded, with the children's connection parameters
    /// of the remembered child requests (those due are sent again first).
    pub fn fetch(&self) -> Result<DesiredState, ClientError> {
        let url = self.url(&format!(
            "getFullComputerInformation?computer_id={}",
            routes::encode(self.computer.as_str())
        ));
        let res = self.agent.get(&url).call();
        let body = slapos_client::read_answer("GET", url.clone(), res, ANSWER_LIMIT)?;
        let decode = |reason| ClientError::Decode {
            method: "GET",
            url: url.clone(),
            reason,
        };
        let doc = computer_doc(&body).map_err(decode)?;
        self.rerequest(&doc);
        desired_from_doc(&doc, &self.computer, &self.children()).map_err(decode)
    }

    fn sent(&self) -> std::sync::MutexGuard<'_, Vec<Sent>> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last answered connection parameters of every remembered child request.
    pub fn children(&self) -> Children {
        self.sent()
            .iter()
            .filter_map(|s| Some((s.partition.clone(), s.title.clone(), s.answer.clone()?)))
            .collect()
    }

    /// Forgets the child requests of free partitions; sends again those due (unanswered or
    /// empty answers at each poll, others every [`REREQUEST`]). Failures are logged: the
    /// previous answer stays.
    fn rerequest(&self, doc: &ComputerDoc) {
        let busy: Vec<&str> = doc
            .partition_list
            .iter()
            .filter(|p| p.software_release.is_some())
            .map(|p| p.partition_id.as_str())
            .collect();
        let due: Vec<Sent> = {
            let mut sent = self.sent();
            sent.retain(|s| busy.contains(&s.partition.as_str()));
            sent.iter()
                .filter(|s| {
                    s.answer.as_ref().is_none_or(Params::is_empty) || s.at.elapsed() >= REREQUEST
                })
                .cloned()
                .collect()
        };
        for Sent {
            partition: p,
            title,
            form,
            ..
        } in due
        {
            if let Err(e) = self.request(&p, &title, form) {
                tracing::debug!("child request `{title}` of {p} sent again: {e}");
            }
        }
    }

    /// One `requestComputerPartition` as partition `p`; remembers the form and the answer.
    fn request(&self, p: &PartitionId, title: &str, form: Form) -> Result<(), ClientError> {
        let route = "requestComputerPartition";
        let answer = match self.post(route, &form, Some(p)) {
            Ok(body) => Some(request_answer(&body).map_err(|reason| ClientError::Decode {
                method: "POST",
                url: self.url(route),
                reason,
            })?),
            // slapproxy's ResourceNotReady: asked again at the next poll.
            Err(ClientError::Api { status: 408, .. }) => None,
            Err(e) => return Err(e),
        };
        let mut sent = self.sent();
        let old = sent
            .iter()
            .position(|s| &s.partition == p && s.title == title)
            .map(|i| sent.swap_remove(i));
        sent.push(Sent {
            partition: p.clone(),
            title: title.to_owned(),
            form,
            answer: answer.or_else(|| old.and_then(|s| s.answer)),
            at: Instant::now(),
        });
        Ok(())
    }
}

impl MasterLink for SlapLink {
    fn register(&self, reg: &RegisterComputer) -> Result<(), ClientError> {
        let route = "loadComputerConfigurationFromXML";
        let xml = computer_xml(reg).map_err(|reason| ClientError::Decode {
            method: "POST",
            url: self.url(route),
            reason,
        })?;
        self.post(
            route,
            &[("computer_id", reg.id.to_string()), ("xml", xml)],
            None,
        )
        .map(drop)
    }

    fn desired(
        &self,
        etag: Option<&str>,
        _wait: Option<Duration>,
    ) -> Result<Option<DesiredState>, ClientError> {
        let d = self.fetch()?;
        Ok((etag != Some(d.etag.as_str())).then_some(d))
    }

    fn poll_step(&self) -> Option<Duration> {
        Some(POLL_STEP)
    }

    fn post_usage(&self, batch: &UsageBatch) -> Result<Option<UsageAck>, ClientError> {
        let route = "useComputer";
        let journal = usage_journal(&self.computer, batch).map_err(|e| ClientError::Api {
            method: "POST",
            url: self.url(route),
            status: 0,
            kind: "encode".into(),
            message: e.to_string(),
        })?;
        let form = [
            ("computer_id", self.computer.to_string()),
            ("use_string", journal),
        ];
        self.post(route, &form, None)?;
        // slapproxy answers `Ignored`, master-lite `OK`: either is the acknowledgement.
        Ok(Some(UsageAck {
            stored: u32::try_from(batch.samples.len()).unwrap_or(u32::MAX),
            duplicates: 0,
        }))
    }

    fn bang(&self, p: Option<&PartitionId>, message: &str) -> Result<(), ClientError> {
        let c = ("computer_id", self.computer.to_string());
        let m = ("message", message.to_owned());
        match p {
            // `ComputerPartition.bang`, with the partition's authorization.
            Some(p) => self.post(
                "softwareInstanceBang",
                &[c, ("computer_partition_id", p.to_string()), m],
                Some(p),
            ),
            // `Computer.bang` (`slapos node bang`).
            None => self.post("computerBang", &[c, m], None),
        }
        .map(drop)
    }

    fn send(&self, item: &Outgoing) -> Result<(), ClientError> {
        match call_for(&self.computer, item) {
            Ok(Call::Drop(why)) => {
                tracing::debug!("not sent over SLAP: {why}");
                Ok(())
            }
            Ok(Call::Post {
                route: "requestComputerPartition",
                form,
                partition: Some(p),
            }) => {
                let Outgoing::Request(_, r) = item else {
                    return Ok(());
                };
                self.request(&p, r.title.as_str(), form)
            }
            Ok(Call::Post {
                route,
                form,
                partition,
            }) => {
                let body = self.post(route, &form, partition.as_ref())?;
                // slapproxy answers 200 with the reason when it does not free a destroyed
                // partition: children still there (retried by the outbox until it frees it,
                // hence a 5xx), or an unknown partition (dropped with a warning).
                if route == "destroyedComputerPartition" && body.trim() != "OK" {
                    let retry = body.trim_start().starts_with("Not destroying yet");
                    return Err(ClientError::Api {
                        method: "POST",
                        url: self.url(route),
                        status: if retry { 503 } else { 409 },
                        kind: "not_freed".into(),
                        message: format!("slapproxy did not free the partition: {}", short(&body)),
                    });
                }
                Ok(())
            }
            Err(message) => Err(ClientError::Api {
                method: "POST",
                url: self.url(route_of(item)),
                // No call was made: not a server answer, and not worth a retry.
                status: 0,
                kind: "encode".into(),
                message,
            }),
        }
    }
}

fn route_of(item: &Outgoing) -> &'static str {
    match item {
        Outgoing::Request(..) => "requestComputerPartition",
        Outgoing::Connection(..) => "setComputerPartitionConnectionXml",
        Outgoing::Software(_) | Outgoing::Report(..) => "(report)",
    }
}

fn short(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn netmask_of(addr: &str) -> &'static str {
    if addr.contains(':') {
        "ffff:ffff:ffff:ffff::"
    } else {
        "255.255.255.255"
    }
}

/// The marshalled computer dictionary of `loadComputerConfigurationFromXML` (`xml` field), the
/// shape `slapos node format` sends, with the keys slapproxy reads. A partition's interface
/// (`tap.name`, what slapproxy puts first in `ip_list`) is its TAP or network interface when
/// `[network]` is configured, else its reference.
pub fn computer_xml(reg: &RegisterComputer) -> Result<String, String> {
    let first = reg
        .partitions
        .iter()
        .flat_map(|p| p.addresses.first())
        .next();
    let partitions: Vec<Value> = reg
        .partitions
        .iter()
        .map(|p| {
            let addresses: Vec<Value> = p
                .addresses
                .iter()
                .map(|a| {
                    Value::dict([
                        ("addr", Value::str(a)),
                        ("netmask", Value::str(netmask_of(a))),
                    ])
                })
                .collect();
            Value::dict([
                ("address_list", Value::List(addresses)),
                ("external_storage_list", Value::List(vec![])),
                ("reference", Value::str(p.id.as_str())),
                (
                    "tap",
                    Value::dict([(
                        "name",
                        Value::str(p.interface.as_deref().unwrap_or(p.id.as_str())),
                    )]),
                ),
                ("tun", Value::None),
            ])
        })
        .collect();
    let dict = Value::dict([
        ("address", first.map_or(Value::None, Value::str)),
        (
            "netmask",
            first.map_or(Value::None, |a| Value::str(netmask_of(a))),
        ),
        ("partition_list", Value::List(partitions)),
        ("reference", Value::str(reg.id.as_str())),
    ]);
    dumps(&dict).map_err(|e| format!("failed to encode the computer: {e}"))
}

/// A JSON value as a SLAP parameter value: strings as they are, anything else as its JSON text.
fn json_to_slap(v: &Json) -> Value {
    match v {
        Json::String(s) => Value::str(s),
        other => Value::str(other.to_string()),
    }
}

/// The HTTP call for an outgoing message; `Err` for a message SLAP cannot carry.
pub fn call_for(computer: &ComputerId, item: &Outgoing) -> Result<Call, String> {
    let c = computer.to_string();
    let partition_form = |p: &PartitionId| {
        vec![
            ("computer_id", c.clone()),
            ("computer_partition_id", p.to_string()),
        ]
    };
    Ok(match item {
        Outgoing::Software(r) => {
            let route = match r.state {
                InstallState::Building => "buildingSoftwareRelease",
                InstallState::Available => "availableSoftwareRelease",
                InstallState::Error => "softwareReleaseError",
                InstallState::Destroyed => "destroyedSoftwareRelease",
            };
            let mut form = vec![("url", r.url.to_string()), ("computer_id", c.clone())];
            if r.state == InstallState::Error {
                form.push(("error_log", r.message.clone().unwrap_or_default()));
            }
            Call::Post {
                route,
                form,
                partition: None,
            }
        }
        Outgoing::Report(p, r) => {
            let mut form = partition_form(p);
            let failed = r.promises.iter().find(|x| !x.ok);
            let route = if let Some(e) = &r.error {
                form.push(("error_log", e.clone()));
                "softwareInstanceError"
            } else if let Some(f) = failed.filter(|_| r.state == InstanceState::Started) {
                form.push(("error_log", promise_error_log(&f.name, &f.message)));
                "softwareInstanceError"
            } else {
                match r.state {
                    InstanceState::Started => "startedComputerPartition",
                    InstanceState::Stopped => "stoppedComputerPartition",
                    InstanceState::Destroyed => "destroyedComputerPartition",
                }
            };
            Call::Post {
                route,
                form,
                partition: Some(p.clone()),
            }
        }
        // Over SLAP only the host's own parameters are sent (shared ones: not yet).
        Outgoing::Connection(p, conn) => {
            let params = &conn.parameters;
            let f = ConnectionForm {
                partition: SlapPartitionRef {
                    computer_id: c.clone(),
                    partition_id: p.to_string(),
                },
                connection: params
                    .iter()
                    .map(|(k, v)| (k.clone(), json_to_slap(v)))
                    .collect(),
                slave_reference: None,
            };
            Call::Post {
                route: "setComputerPartitionConnectionXml",
                form: f
                    .to_form()
                    .map_err(|e| format!("failed to encode connection parameters: {e}"))?,
                partition: Some(p.clone()),
            }
        }
        Outgoing::Request(p, r) => Call::Post {
            route: "requestComputerPartition",
            form: request_form(computer, p, r)
                .to_form()
                .map_err(|e| format!("failed to encode child request `{}`: {e}", r.title))?,
            partition: Some(p.clone()),
        },
    })
}

/// The `use_string` of `useComputer` for `batch`: slapos.collect's journal
/// ([`JournalWriter`]), one transaction per period (consecutive samples of the same period
/// share it; dates to the millisecond), and per sample the movements slapos.collect writes for
/// a partition user: `cpu_load_percent` (CPU time over the period, % of one CPU),
/// `memory_used` and `disk_used` (MB). The user is `slapuserN` for `slappartN` (SlapOS's
/// naming), else the partition id (master-lite reads both). I/O, tasks and the memory peak
/// have no resource there and are not sent.
pub fn usage_journal(computer: &ComputerId, batch: &UsageBatch) -> Result<String, EncodeError> {
    const MB: f64 = 1_048_576.0;
    let mut w = JournalWriter::new();
    let mut period = None;
    for s in &batch.samples {
        if period != Some((s.start_ms, s.end_ms)) {
            period = Some((s.start_ms, s.end_ms));
            w.transaction(
                &format!("Eco Information for {computer} "),
                &journal_date(s.start_ms),
                &journal_date(s.end_ms),
                &format!("{computer}-{}", s.start_ms),
            )?;
        }
        let user = journal_user(s.partition.as_str());
        let period_ns = s.end_ms.saturating_sub(s.start_ms).max(1) as f64 * 1e6;
        for (resource, title, q) in [
            (
                "cpu_load_percent",
                "CPU Load Percent Average",
                s.cpu_ns as f64 * 100.0 / period_ns,
            ),
            (
                "memory_used",
                "Memory Used Average",
                s.memory_bytes as f64 / MB,
            ),
            (
                "disk_used",
                "Partition Disk Used Average",
                s.disk_bytes as f64 / MB,
            ),
        ] {
            w.movement(
                &format!("service_module/{resource}"),
                &format!("{title} for {user}"),
                &user,
                q,
            )?;
        }
    }
    Ok(w.finish())
}

/// slapgrid's `error_log` for a failing promise (`PromiseError` of `slapos.grid.promise`:
/// `"Promise %r failed with output: %s"`; a promise name is `[A-Za-z0-9_.-]`, so its `repr` is
/// the name in single quotes).
pub fn promise_error_log(name: &str, output: &str) -> String {
    format!("Promise '{name}' failed with output: {output}")
}

/// `requestComputerPartition` as partition `p` (`ComputerPartition.request`): parameters that
/// are all strings travel as they are, others as one json-in-xml `_` entry (what
/// [`instance_parameters`] reads back); the SLA is the filter.
pub fn request_form(computer: &ComputerId, p: &PartitionId, r: &InstanceRequest) -> RequestForm {
    let parameters = if r.parameters.values().all(Json::is_string) {
        r.parameters
            .iter()
            .map(|(k, v)| (k.clone(), json_to_slap(v)))
            .collect()
    } else {
        let mut one = BTreeMap::new();
        one.insert(
            "_".to_owned(),
            Value::str(Json::Object(r.parameters.clone()).to_string()),
        );
        one
    };
    RequestForm {
        software_release: r.software_url.to_string(),
        software_type: r.software_type.to_string(),
        partition_reference: r.title.to_string(),
        parameters,
        filter: r
            .sla
            .iter()
            .map(|(k, v)| (k.clone(), Value::str(v)))
            .collect(),
        state: r.state.map(|s| match s {
            InstanceState::Started => RequestedState::Started,
            InstanceState::Stopped => RequestedState::Stopped,
            InstanceState::Destroyed => RequestedState::Destroyed,
        }),
        shared: r.shared,
        requester: Some(SlapPartitionRef {
            computer_id: computer.to_string(),
            partition_id: p.to_string(),
        }),
    }
}

/// The connection parameters in a `requestComputerPartition` answer (a `SoftwareInstance`'s
/// `_connection_dict`; a lone json-in-xml `_` entry decoded like instance parameters).
pub fn request_answer(body: &str) -> Result<Params, String> {
    let value = loads(body).map_err(|e| format!("not xml_marshaller: {e}"))?;
    let doc = SoftwareInstanceDoc::from_value(&value)
        .map_err(|e| format!("not a SoftwareInstance: {e}"))?;
    let conn = doc
        .dict_attr("_connection_dict")
        .map_err(|e| format!("SoftwareInstance: {e}"))?
        .unwrap_or_default();
    Ok(instance_parameters(&conn))
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A marshalled value as JSON (strings stay strings; `None` is `null`).
fn slap_to_json(v: &Value) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::List(items) | Value::Tuple(items) | Value::Set(items) => {
            Json::Array(items.iter().map(slap_to_json).collect())
        }
        Value::Dict(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = k.as_str().map_or_else(|| k.py_str(), str::to_owned);
                    (key, slap_to_json(v))
                })
                .collect(),
        ),
        other => Json::String(other.py_str()),
    }
}

/// The instance parameters of a `_parameter_dict`: the `_` key (json-in-xml) decoded when it is
/// the only parameter and holds a JSON object, else every parameter (strings, `None` → null).
pub fn instance_parameters(dict: &BTreeMap<String, Value>) -> Params {
    let own: BTreeMap<&String, &Value> = dict
        .iter()
        .filter(|(k, _)| !CONTEXT_KEYS.contains(&k.as_str()))
        .collect();
    if own.len() == 1
        && let Some(Value::String(text)) = own.get(&"_".to_owned())
        && let Ok(Json::Object(map)) = serde_json::from_str::<Json>(text)
    {
        return map;
    }
    own.into_iter()
        .map(|(k, v)| (k.clone(), slap_to_json(v)))
        .collect()
}

fn hash_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The revision of an assignment: 53 bits of the hash of everything the node applies and of
/// the master's `timestamp` (a bang or a propagated change moves it: slapgrid processes the
/// partition again then).
fn revision_of(a: &Assignment, timestamp: &str) -> u64 {
    let mut a = a.clone();
    a.revision = 0;
    let bytes = serde_json::to_vec(&a).unwrap_or_default();
    let digest = Sha256::new()
        .chain_update(&bytes)
        .chain_update(timestamp)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) & ((1 << 53) - 1)
}

fn partition_assignment(
    p: &ComputerPartitionDoc,
    children: BTreeMap<String, Params>,
) -> Result<Option<Assignment>, String> {
    let Some(sr) = &p.software_release else {
        return Ok(None);
    };
    let at = |what: &str| format!("partition {}: {what}", p.partition_id);
    let params = p.parameters.clone().unwrap_or_default();
    let text = |k: &str| params.get(k).and_then(Value::as_str).map(str::to_owned);
    let title = text("instance_title").ok_or_else(|| at("no instance_title"))?;
    let title = InstanceTitle::parse(title).map_err(|e| at(&e.to_string()))?;
    let root_title = match text("root_instance_title") {
        Some(t) => InstanceTitle::parse(t).map_err(|e| at(&e.to_string()))?,
        None => title.clone(),
    };
    let software_url = SoftwareUrl::parse(&sr.url).map_err(|e| at(&e.to_string()))?;
    let software_type = match text("slap_software_type").filter(|t| !t.is_empty()) {
        Some(t) => SoftwareType::parse(t).map_err(|e| at(&e.to_string()))?,
        None => SoftwareType::default(),
    };
    let state = p
        .requested_state
        .as_deref()
        .unwrap_or("started")
        .parse::<InstanceState>()
        .map_err(|e| at(&e))?;
    let mut a = Assignment {
        title,
        root_title,
        software_url,
        software_type,
        parameters: instance_parameters(&params),
        state,
        revision: 0,
        children,
        shared: Vec::new(),
    };
    a.revision = revision_of(&a, &text("timestamp").unwrap_or_default());
    Ok(Some(a))
}

/// A decoded `getFullComputerInformation` document as the node's desired state; `children`:
/// the connection parameters of the children each partition requested (its assignment's
/// `children`, part of its revision).
pub fn desired_from_doc(
    doc: &ComputerDoc,
    computer: &ComputerId,
    children: &Children,
) -> Result<DesiredState, String> {
    if doc.computer_id != computer.as_str() {
        return Err(format!(
            "the master answered for computer {:?}, not {computer}",
            doc.computer_id
        ));
    }
    let mut software = Vec::new();
    for s in &doc.software_release_list {
        let url = SoftwareUrl::parse(&s.url).map_err(|e| format!("software release: {e}"))?;
        let state = match s.requested_state.as_deref() {
            None | Some("available") => SupplyState::Available,
            Some("destroyed") => SupplyState::Destroyed,
            Some(other) => {
                return Err(format!(
                    "software release {url}: requested state {other:?} is neither available nor destroyed"
                ));
            }
        };
        software.push(DesiredSoftware { url, state });
    }
    let mut partitions = Vec::new();
    for p in &doc.partition_list {
        let id = PartitionId::parse(&p.partition_id).map_err(|e| e.to_string())?;
        // Inserted one by one: collecting into a map would link a sort for its entries.
        let mut kids = BTreeMap::new();
        for (_, t, c) in children.iter().filter(|(q, _, _)| *q == id) {
            kids.insert(t.clone(), c.clone());
        }
        partitions.push(DesiredPartition {
            id,
            instance: partition_assignment(p, kids)?,
        });
    }
    let etag = hash_hex(&serde_json::to_vec(&(&software, &partitions)).map_err(|e| e.to_string())?)
        [..32]
        .to_owned();
    Ok(DesiredState {
        computer: computer.clone(),
        etag,
        software,
        partitions,
    })
}

/// A `getFullComputerInformation` body, decoded.
pub fn computer_doc(body: &str) -> Result<ComputerDoc, String> {
    let value = loads(body).map_err(|e| format!("not xml_marshaller: {e}"))?;
    ComputerDoc::from_value(&value).map_err(|e| format!("not a Computer: {e}"))
}

/// A `getFullComputerInformation` body as the node's desired state (no children).
pub fn desired_from_xml(body: &str, computer: &ComputerId) -> Result<DesiredState, String> {
    desired_from_doc(&computer_doc(body)?, computer, &Children::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use slapos_proto::slap::{ComputerConfiguration, FormFields, SoftwareReleaseForm};
    use slapos_proto::{PartitionReport, PartitionSpec, PromiseResult, SoftwareReport};

    /// The captures of `../shared/reference/slap-wire/` (the copy kept with the codec's tests).
    const NODE_CAPTURE: &str =
        include_str!("../../../proto/tests/fixtures/slap-wire/node-http-exchanges.txt");
    const CLIENT_CAPTURE: &str =
        include_str!("../../../proto/tests/fixtures/slap-wire/http-exchanges.txt");

    use slapos_test_support::slap_capture::parse as captured;

    fn publish(parameters: Params) -> slapos_proto::ConnectionPublish {
        slapos_proto::ConnectionPublish {
            parameters,
            shared: BTreeMap::new(),
        }
    }

    /// The captured `getFullComputerInformation` bodies. The capture tool cut each one inside
    /// `_software_release_list`; the cut is completed with the release the capture supplied.
    fn full_computer_bodies() -> Vec<String> {
        captured(NODE_CAPTURE, "GET /getFullComputerInformation")
            .into_iter()
            .map(|ex| {
                let cut = ex
                    .response
                    .find("...[truncated]")
                    .expect("the capture is cut");
                format!(
                    "{}ftware_release_list</string><list id=\"i99\"><object id=\"i100\" \
                     module=\"slapos.slap.slap\" class=\"SoftwareRelease\"><tuple>\
                     <string>/srv/demonode/sr/software.cfg</string><string>NODE</string></tuple>\
                     <dictionary id=\"i101\"><string>_computer_guid</string><string>NODE</string>\
                     <string>_requested_state</string><string>available</string>\
                     <string>_software_instance_list</string><list id=\"i102\"/>\
                     <string>_software_release</string><string>/srv/demonode/sr/software.cfg\
                     </string></dictionary></object></list></dictionary></object></marshal>",
                    &ex.response[..cut]
                )
            })
            .collect()
    }

    fn node() -> ComputerId {
        ComputerId::parse("NODE").unwrap()
    }

    fn pid(s: &str) -> PartitionId {
        PartitionId::parse(s).unwrap()
    }

    #[test]
    fn captured_full_computer_information_decodes_into_the_desired_state() {
        let bodies = full_computer_bodies();
        assert_eq!(bodies.len(), 5);
        let states: Vec<DesiredState> = bodies
            .iter()
            .map(|b| desired_from_xml(b, &node()).unwrap())
            .collect();
        let d = &states[0];
        assert_eq!(d.computer, node());
        assert_eq!(
            d.software,
            [DesiredSoftware {
                url: SoftwareUrl::parse("/srv/demonode/sr/software.cfg").unwrap(),
                state: SupplyState::Available,
            }]
        );
        assert_eq!(d.partitions.len(), 2);
        assert_eq!(d.partitions[0].id, pid("slappart0"));
        let a = d.partitions[0]
            .instance
            .as_ref()
            .expect("slappart0 is busy");
        assert_eq!(a.title.as_str(), "inst");
        assert_eq!(a.root_title.as_str(), "inst");
        assert_eq!(a.software_url.as_str(), "/srv/demonode/sr/software.cfg");
        assert_eq!(a.software_type.as_str(), "default");
        assert_eq!(a.state, InstanceState::Started);
        // Only the requested parameter: ip_list, timestamp, … are context, not parameters.
        assert_eq!(
            Json::Object(a.parameters.clone()),
            serde_json::json!({"foo": "x"})
        );
        assert!(a.children.is_empty());
        assert_eq!(d.partitions[1].id, pid("slappart1"));
        assert_eq!(d.partitions[1].instance, None, "slappart1 is free");

        // Same document, same etag and revision; the destroy request changes both.
        assert_eq!(states[1], states[0]);
        let destroyed = states[3].partitions[0].instance.as_ref().unwrap();
        assert_eq!(destroyed.state, InstanceState::Destroyed);
        assert_ne!(destroyed.revision, a.revision);
        assert_ne!(states[3].etag, states[0].etag);
        // Decoding is deterministic (the cached etag survives a restart).
        assert_eq!(desired_from_xml(&bodies[3], &node()).unwrap(), states[3]);
    }

    #[test]
    fn revision_follows_every_change_the_node_applies() {
        let body = &full_computer_bodies()[0];
        let base = desired_from_xml(body, &node()).unwrap();
        let rev = |b: &str| {
            desired_from_xml(b, &node()).unwrap().partitions[0]
                .instance
                .as_ref()
                .unwrap()
                .revision
        };
        let r0 = base.partitions[0].instance.as_ref().unwrap().revision;
        assert!(r0 < 1 << 53);
        let changed = [
            body.replacen("<string>x</string>", "<string>y</string>", 1),
            body.replacen("<string>default</string>", "<string>other</string>", 1),
            body.replacen("<string>inst</string>", "<string>inst2</string>", 1),
            body.replacen("<string>started</string>", "<string>stopped</string>", 1),
            body.replace("/srv/demonode/sr/software.cfg", "/srv/other/software.cfg"),
        ];
        for (i, b) in changed.iter().enumerate() {
            assert!(b != body, "change {i} applies");
            assert_ne!(rev(b), r0, "change {i}");
        }
        // The timestamp alone (a bang): processed again, as slapgrid does.
        let ts = body.replacen("1795312672.8965757", "1795312999.5", 1);
        assert!(ts != *body);
        assert_ne!(rev(&ts), r0);
    }

    #[test]
    fn usage_is_slapos_collects_journal_one_transaction_per_period() {
        use slapos_proto::UsageSample;
        use slapos_proto::slap::{journal_date_ms, parse_journal};
        let sample = |p: &str, start_ms, cpu_ns, memory_bytes| UsageSample {
            partition: pid(p),
            instance: None,
            start_ms,
            end_ms: start_ms + 1500,
            cpu_ns,
            memory_bytes,
            memory_peak_bytes: memory_bytes * 2,
            io_read_bytes: 7,
            io_write_bytes: 8,
            disk_bytes: 3 * 1_048_576 + 1,
            tasks: 2,
            folded: 1,
        };
        let t0 = 1_764_547_200_250;
        let batch = UsageBatch {
            samples: vec![
                sample("slappart0", t0, 750_000_000, 123_456_789),
                sample("slappart12", t0, 0, 0),
                sample("web-1", t0 + 1500, 1, 4096),
            ],
        };
        let xml = usage_journal(&node(), &batch).unwrap();
        assert!(
            xml.starts_with(
                "<?xml version='1.0' encoding='utf-8'?><journal><transaction type=\"Sale Packing \
                 List\"><title>Eco Information for NODE </title><start_date>2025-12-01 \
                 00:00:00.250</start_date><stop_date>2025-12-01 00:00:01.750</stop_date>"
            ),
            "{xml}"
        );
        let j = parse_journal(&xml).unwrap();
        assert_eq!(j.transactions.len(), 2);
        let (a, b) = (&j.transactions[0], &j.transactions[1]);
        assert_eq!(journal_date_ms(&a.start_date), Some(t0));
        assert_eq!(journal_date_ms(&b.stop_date), Some(t0 + 3000));
        let got: Vec<(&str, &str, f64)> = a
            .movements
            .iter()
            .chain(&b.movements)
            .map(|m| (m.resource.as_str(), m.reference.as_str(), m.quantity))
            .collect();
        let disk = (3 * 1_048_576 + 1) as f64 / 1_048_576.0;
        assert_eq!(
            got,
            [
                ("service_module/cpu_load_percent", "slapuser0", 50.0),
                (
                    "service_module/memory_used",
                    "slapuser0",
                    123_456_789.0 / 1_048_576.0
                ),
                ("service_module/disk_used", "slapuser0", disk),
                ("service_module/cpu_load_percent", "slapuser12", 0.0),
                ("service_module/memory_used", "slapuser12", 0.0),
                ("service_module/disk_used", "slapuser12", disk),
                ("service_module/cpu_load_percent", "web-1", 1.0 / 1.5e7),
                ("service_module/memory_used", "web-1", 4096.0 / 1_048_576.0),
                ("service_module/disk_used", "web-1", disk),
            ]
        );
        // Bytes come back exactly (MB = bytes / 2^20).
        assert_eq!((got[1].2 * 1_048_576.0) as u64, 123_456_789);
        assert!(xml.contains("<title>Memory Used Average for slapuser0</title>"));
    }

    #[test]
    fn json_in_xml_parameters_and_bad_documents() {
        let mut d = BTreeMap::new();
        d.insert(
            "_".to_owned(),
            Value::str("{\n  \"title\": \"Hi\",\n  \"n\": 3\n}"),
        );
        d.insert("ip_list".to_owned(), Value::List(vec![]));
        d.insert("timestamp".to_owned(), Value::str("1"));
        let p = instance_parameters(&d);
        assert_eq!(Json::Object(p), serde_json::json!({"title": "Hi", "n": 3}));
        // `_` that is not a JSON object, or next to other parameters, stays a string.
        d.insert("_".to_owned(), Value::str("[1]"));
        d.insert("x".to_owned(), Value::None);
        let p = instance_parameters(&d);
        assert_eq!(Json::Object(p), serde_json::json!({"_": "[1]", "x": null}));

        let body = &full_computer_bodies()[0];
        let other = ComputerId::parse("OTHER").unwrap();
        assert!(
            desired_from_xml(body, &other)
                .unwrap_err()
                .contains("OTHER")
        );
        let bad_title = body.replace("<string>inst</string>", "<string>a/b</string>");
        let err = desired_from_xml(&bad_title, &node()).unwrap_err();
        assert!(
            err.contains("slappart0") && err.contains("instance title"),
            "{err}"
        );
        let err = desired_from_xml("<html>404</html>", &node()).unwrap_err();
        assert!(err.contains("xml_marshaller"), "{err}");
    }

    #[test]
    fn register_xml_is_what_slapproxy_reads() {
        let reg = RegisterComputer {
            id: node(),
            partitions: (0..2)
                .map(|i| PartitionSpec {
                    id: pid(&format!("slappart{i}")),
                    addresses: vec!["127.0.0.1".into()],
                    interface: None,
                    uid: None,
                })
                .collect(),
            labels: BTreeMap::new(),
        };
        let xml = computer_xml(&reg).unwrap();
        // Read back with the codec slapproxy's twin (master-lite) uses for this route.
        let form = vec![
            ("computer_id".to_owned(), "NODE".to_owned()),
            ("xml".to_owned(), xml),
        ];
        let c = ComputerConfiguration::from_form(&form).unwrap();
        assert_eq!(c.reference, "NODE");
        assert_eq!(c.address.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.netmask.as_deref(), Some("255.255.255.255"));
        assert_eq!(c.partitions.len(), 2);
        assert_eq!(c.partitions[1].reference, "slappart1");
        assert_eq!(c.partitions[1].network_interface(), "slappart1");
        assert_eq!(c.partitions[1].addresses[0].addr, "127.0.0.1");
        // The keys `slapos node format` sends for these (see the captured format payload).
        let captured = &captured(NODE_CAPTURE, "POST /loadComputerConfigurationFromXML")[0];
        let raw = &captured.form.iter().find(|(k, _)| k == "xml").unwrap().1;
        for key in [
            "address",
            "netmask",
            "partition_list",
            "reference",
            "address_list",
            "tap",
            "tun",
        ] {
            assert!(
                raw.contains(&format!("<string>{key}</string>")),
                "{key} in the capture"
            );
            assert!(
                form[1].1.contains(&format!("<string>{key}</string>")),
                "{key} sent"
            );
        }
    }

    /// The route, form fields and authorization of a call, as the capture shows them.
    fn as_captured(call: &Call) -> (String, Vec<(String, String)>, Option<String>) {
        let Call::Post {
            route,
            form,
            partition,
        } = call
        else {
            panic!("{call:?}")
        };
        (
            format!("POST /{route}"),
            form.iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            partition
                .as_ref()
                .map(|p| SlapPartitionAuth::header_value("NODE", p.as_str())),
        )
    }

    #[test]
    fn reports_are_the_captured_slapgrid_forms() {
        let url = SoftwareUrl::parse("/srv/demonode/sr/software.cfg").unwrap();
        let sw = |state, message: Option<&str>| {
            Outgoing::Software(SoftwareReport {
                url: url.clone(),
                state,
                message: message.map(str::to_owned),
                parameter_model: None,
            })
        };
        let part = |state, error: Option<&str>| {
            Outgoing::Report(
                pid("slappart0"),
                PartitionReport {
                    state,
                    revision: 7,
                    promises: vec![],
                    error: error.map(str::to_owned),
                },
            )
        };
        // Routes the node capture holds: compare header, form and authorization.
        for (item, header) in [
            (
                sw(InstallState::Building, None),
                "POST /buildingSoftwareRelease",
            ),
            (
                sw(InstallState::Available, None),
                "POST /availableSoftwareRelease",
            ),
            (
                part(InstanceState::Started, None),
                "POST /startedComputerPartition",
            ),
            (
                part(InstanceState::Stopped, None),
                "POST /stoppedComputerPartition",
            ),
            (
                part(InstanceState::Destroyed, None),
                "POST /destroyedComputerPartition",
            ),
        ] {
            let ex = &captured(NODE_CAPTURE, header)[0];
            let (h, form, auth) = as_captured(&call_for(&node(), &item).unwrap());
            assert!(ex.header.starts_with(&h), "{h}");
            assert_eq!(form, ex.form, "{h}");
            assert_eq!(auth, ex.authorization, "{h}");
        }
        // Routes the capture does not hold: read back with master-lite's form parser.
        let (h, form, _) =
            as_captured(&call_for(&node(), &sw(InstallState::Error, Some("boom"))).unwrap());
        assert_eq!(h, "POST /softwareReleaseError");
        let f = SoftwareReleaseForm::from_form(&form).unwrap();
        assert_eq!(
            (f.url.as_str(), f.error_log.as_deref()),
            (url.as_str(), Some("boom"))
        );
        let (h, form, _) =
            as_captured(&call_for(&node(), &sw(InstallState::Destroyed, None)).unwrap());
        assert_eq!(h, "POST /destroyedSoftwareRelease");
        assert_eq!(form.field("url"), Some(url.as_str()));
        let (h, form, auth) = as_captured(
            &call_for(&node(), &part(InstanceState::Started, Some("bad template"))).unwrap(),
        );
        assert_eq!(h, "POST /softwareInstanceError");
        assert_eq!(form.field("error_log"), Some("bad template"));
        assert_eq!(form.field("computer_partition_id"), Some("slappart0"));
        assert!(auth.is_some());
    }

    #[test]
    fn connection_parameters_are_the_captured_form() {
        let ex = &captured(CLIENT_CAPTURE, "POST /setComputerPartitionConnectionXml")[0];
        let mut params = Params::new();
        params.insert("password".into(), Json::from("secret"));
        params.insert("url".into(), Json::from("http://[fd00::10]:8080/"));
        let computer = ComputerId::parse("local_computer").unwrap();
        let call = call_for(
            &computer,
            &Outgoing::Connection(pid("slappart0"), publish(params)),
        )
        .unwrap();
        let Call::Post {
            route,
            form,
            partition,
        } = call
        else {
            panic!()
        };
        assert_eq!(
            format!("POST /{route}"),
            ex.header.split(" -> ").next().unwrap()
        );
        assert_eq!(partition, Some(pid("slappart0")));
        let names: Vec<&str> = form.iter().map(|(k, _)| *k).collect();
        let captured_names: Vec<&str> = ex.form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, captured_names);
        for ((k, ours), (_, theirs)) in form.iter().zip(&ex.form) {
            if *k == "connection_xml" {
                assert_eq!(loads(ours).unwrap(), loads(theirs).unwrap());
            } else {
                assert_eq!(ours, theirs, "{k}");
            }
        }
        // Non-string values travel as their JSON text.
        let mut p = Params::new();
        p.insert("n".into(), Json::from(3));
        p.insert("ok".into(), Json::from(true));
        let Call::Post { form, .. } =
            call_for(&computer, &Outgoing::Connection(pid("p"), publish(p))).unwrap()
        else {
            panic!()
        };
        let xml = &form.iter().find(|(k, _)| *k == "connection_xml").unwrap().1;
        let sent = loads(xml).unwrap();
        assert_eq!(
            sent,
            Value::dict([("n", Value::str("3")), ("ok", Value::str("true"))])
        );
    }

    fn child_request(json: serde_json::Value) -> slapos_proto::InstanceRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn child_requests_are_the_partitions_request_form() {
        let req = child_request(serde_json::json!({
            "title": "child", "software_url": "/sr.toml", "software_type": "db",
            "parameters": {"size": "1G"}, "sla": {"computer_guid": "NODE"}, "state": "stopped"
        }));
        let call = call_for(&node(), &Outgoing::Request(pid("slappart0"), req)).unwrap();
        let (h, form, auth) = as_captured(&call);
        assert_eq!(h, "POST /requestComputerPartition");
        // ComputerPartition.request's fields, in its order, and its X-SlapPartition header.
        let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "computer_id",
                "computer_partition_id",
                "software_release",
                "software_type",
                "partition_reference",
                "shared_xml",
                "partition_parameter_xml",
                "filter_xml",
                "state"
            ]
        );
        assert_eq!(
            auth.as_deref(),
            Some(SlapPartitionAuth::header_value("NODE", "slappart0").as_str())
        );
        // Read back with the parser master-lite serves this route with.
        let f = RequestForm::from_form(&form).unwrap();
        assert_eq!(f.partition_reference, "child");
        assert_eq!(f.software_release, "/sr.toml");
        assert_eq!(f.software_type, "db");
        assert_eq!(
            f.parameters,
            BTreeMap::from([("size".into(), Value::str("1G"))])
        );
        assert_eq!(f.filter_str("computer_guid"), Some("NODE"));
        assert_eq!(f.state, Some(RequestedState::Stopped));
        assert!(!f.shared);
        let r = f.requester.unwrap();
        assert_eq!(
            (r.computer_id.as_str(), r.partition_id.as_str()),
            ("NODE", "slappart0")
        );
        // The shared/state/filter fields are marshalled like the captured OpenOrder request's.
        let ex = &captured(CLIENT_CAPTURE, "POST /requestComputerPartition")[0];
        let req = child_request(serde_json::json!({"title": "c", "software_url": "/sr.toml"}));
        let Call::Post { form: ours, .. } =
            call_for(&node(), &Outgoing::Request(pid("p"), req)).unwrap()
        else {
            panic!()
        };
        for k in ["shared_xml", "state", "filter_xml"] {
            let mine = &ours.iter().find(|(n, _)| *n == k).unwrap().1;
            assert_eq!(
                loads(mine).unwrap(),
                loads(ex.form.field(k).unwrap()).unwrap(),
                "{k}"
            );
        }
        // A shared request says so.
        let req = child_request(serde_json::json!({
            "title": "s", "software_url": "/sr.toml", "shared": true
        }));
        assert!(request_form(&node(), &pid("p"), &req).shared);
        // Non-string parameters travel as one json-in-xml `_`, which the child decodes back.
        let req = child_request(serde_json::json!({
            "title": "c", "software_url": "/sr.toml", "parameters": {"n": 3, "s": "x"}
        }));
        let f = request_form(&node(), &pid("p"), &req);
        assert_eq!(
            Json::Object(instance_parameters(&f.parameters)),
            serde_json::json!({"n": 3, "s": "x"})
        );
    }

    #[test]
    fn request_answers_bring_the_childs_connection_parameters() {
        let answers = captured(CLIENT_CAPTURE, "POST /requestComputerPartition");
        // The first answer comes before the instance published: no parameters yet.
        assert_eq!(request_answer(&answers[0].response).unwrap(), Params::new());
        let published = answers
            .iter()
            .map(|ex| request_answer(&ex.response).unwrap())
            .find(|p| !p.is_empty())
            .expect("a captured answer with connection parameters");
        assert_eq!(
            Json::Object(published),
            serde_json::json!({"password": "secret", "url": "http://[fd00::10]:8080/"})
        );
        let err = request_answer("<html>408</html>").unwrap_err();
        assert!(err.contains("xml_marshaller"), "{err}");
        let err = request_answer(&full_computer_bodies()[0]).unwrap_err();
        assert!(err.contains("SoftwareInstance"), "{err}");

        // The children go into the requesting partition's assignment and its revision.
        let body = &full_computer_bodies()[0];
        let plain = desired_from_xml(body, &node()).unwrap();
        let kids = vec![(
            pid("slappart0"),
            "db".to_owned(),
            request_answer(&answers.last().unwrap().response).unwrap(),
        )];
        let doc = computer_doc(body).unwrap();
        let with = desired_from_doc(&doc, &node(), &kids).unwrap();
        let a = with.partitions[0].instance.as_ref().unwrap();
        assert_eq!(a.children["db"]["password"], "secret");
        assert_ne!(
            a.revision,
            plain.partitions[0].instance.as_ref().unwrap().revision
        );
        assert_ne!(with.etag, plain.etag);
    }

    #[test]
    fn a_failing_promise_is_slapgrids_software_instance_error() {
        let promise = |name: &str, ok| PromiseResult {
            name: name.into(),
            ok,
            message: format!("{name} said no"),
            at_ms: 1,
        };
        let report = |state, promises| {
            Outgoing::Report(
                pid("slappart0"),
                PartitionReport {
                    state,
                    revision: 1,
                    promises,
                    error: None,
                },
            )
        };
        let (h, form, auth) = as_captured(
            &call_for(
                &node(),
                &report(
                    InstanceState::Started,
                    vec![
                        promise("a", true),
                        promise("web-answers", false),
                        promise("c", false),
                    ],
                ),
            )
            .unwrap(),
        );
        assert_eq!(h, "POST /softwareInstanceError");
        assert_eq!(
            form,
            [
                ("computer_id".to_owned(), "NODE".to_owned()),
                ("computer_partition_id".to_owned(), "slappart0".to_owned()),
                (
                    "error_log".to_owned(),
                    "Promise 'web-answers' failed with output: web-answers said no".to_owned()
                ),
            ]
        );
        assert!(auth.is_some());
        // Passing promises: the captured startedComputerPartition form.
        let ex = &captured(NODE_CAPTURE, "POST /startedComputerPartition")[0];
        let (_, form, _) = as_captured(
            &call_for(
                &node(),
                &report(InstanceState::Started, vec![promise("a", true)]),
            )
            .unwrap(),
        );
        assert_eq!(form, ex.form);
        // A stopped partition's report is about its state, not its (old) promises.
        let (h, _, _) = as_captured(
            &call_for(
                &node(),
                &report(InstanceState::Stopped, vec![promise("a", false)]),
            )
            .unwrap(),
        );
        assert_eq!(h, "POST /stoppedComputerPartition");
    }

    #[test]
    fn unreachable_child_requests_are_retried_and_not_remembered() {
        let link = SlapLink::new("http://127.0.0.1:9", node()).unwrap();
        let req = child_request(serde_json::json!({"title": "child", "software_url": "/sr.toml"}));
        let e = link
            .send(&Outgoing::Request(pid("slappart0"), req))
            .unwrap_err();
        assert!(e.is_unreachable(), "retried by the outbox: {e}");
        assert!(e.to_string().contains("requestComputerPartition"), "{e}");
        assert!(link.children().is_empty());
        assert!(SlapLink::new("ftp://x", node()).is_err());
    }
}
