//! The classic SLAP routes (slapos.core 1.26.1's `slap` library, `slapos request/supply`,
//! slapgrid), served next to the native API over the **same store**: an instance requested
//! here is the same row the native API shows, and the other way round.
//!
//! Design: each handler parses the form or query with the codec of `slapos_proto::slap`, makes
//! one closure call to the database worker and encodes the answer with xml_marshaller. Status
//! codes follow slapproxy (`proxy/slap_tool.py`): a missing form field is 400, an undecodable
//! marshal payload or an unknown partition on a read is 500 (slapproxy's unhandled
//! exception), an unknown computer on `get(Full)ComputerInformation` 404 (the `slap` library
//! raises `NotFoundError`, as slapproxy does in process), allocation failure is 404, and the
//! "action" routes answer 200 with slapproxy's texts (`done`, `OK`, `Ignored`, …), including
//! its 200-with-error-text cases. Error answers carry Werkzeug's upper-case reason phrase. See
//! `docs/slap.md` for the mapping of the two models and the known differences.
//!
//! Invariant: a refused call changes nothing (validation happens before the store call, and
//! store calls are transactions).
//!
//! Submodules: [`hateoas`] (the `/hateoas` subset of `slapos service/computer …`) and [`rpc`]
//! (slapproxy's JSON-RPC API), over the same store.
//!
//! Shared ("slave") instances follow `db.requestSlave`: stored in `slap_shared` (migration 3),
//! listed in the host's `slave_instance_list` with their marshalled types.
//!
//! Authorization: every handler asks [`auth::allow`] with the caller's [`Identity`] (attached by
//! `http::identify`) before acting, with the actions of the native routes: a computer's
//! slapgrid calls need its own `computer_id`, partition calls a partition of the caller
//! (computer) or the caller itself (partition), a request names its requester (X-SlapPartition
//! header and form fields, each checked) or is a root request (users: new titles or their own
//! roots, owner recorded), supply is admin-only. Over plain HTTP the caller is
//! [`Identity::Local`] and everything stays as in slapproxy. A refusal is a 403 (the `slap`
//! library raises it as `requests.HTTPError`), changes nothing, and is logged by
//! `http::identify`.
//!
//! Requests for a release of a `[multimaster/URL]` section, or with `master_url` in their filter,
//! are delegated to that master (`crate::federation`, asynchronously: never 408 nor 523);
//! started/stopped/error reports are accepted and ignored, as slapproxy does.

pub mod frontend;
pub mod hateoas;
pub mod rpc;
pub mod usage;

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value as Json;
use slapos_proto::slap::{
    self as wire, BusyPartition, ComputerConfiguration, ComputerDoc, ComputerPartitionDoc,
    ConnectionForm, FormError, FormFields, ParamDict, PartitionParameters, RequestForm,
    RequestedPartition, RequestedShared, SlapPartitionAuth, SoftwareInstanceDoc,
    SoftwareReleaseDoc, SoftwareReleaseForm, SupplyForm, Value,
};
use slapos_proto::{
    ComputerId, InstallState, InstanceRequest, InstanceState, InstanceTitle, Params, PartitionId,
    SoftwareReport, SoftwareType, SoftwareUrl, SupplyRequest, SupplyState,
};

pub use crate::proxy_config::{ProxyConfig, SlapConfig};

use crate::auth::{self, Action, Identity};
use crate::error::ApiError;
use crate::state::{AppState, now_ms};
use crate::store::{
    RequestRules, SharedEntry, SharedRequest, SlapFormat, SlapInstance, SlapPartition, StoreError,
};

/// The SLAP routes, to merge into the native router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/getFullComputerInformation", get(full_computer))
        .route("/getComputerInformation", get(full_computer))
        .route("/registerComputerPartition", get(register_partition))
        .route("/getComputerPartitionCertificate", get(certificate))
        .route("/getComputerPartitionStatus", get(partition_status))
        .route("/getSoftwareReleaseListFromSoftwareProduct", get(product))
        .route("/loadComputerConfigurationFromXML", post(format))
        .route("/requestComputerPartition", post(request))
        .route("/supplySupply", post(supply))
        .route("/buildingSoftwareRelease", post(building))
        .route("/availableSoftwareRelease", post(available))
        .route("/softwareReleaseError", post(release_error))
        .route("/destroyedSoftwareRelease", post(destroyed_release))
        .route("/startedComputerPartition", post(ignored))
        .route("/stoppedComputerPartition", post(ignored))
        .route("/softwareInstanceError", post(ignored))
        .route("/useComputer", post(use_computer))
        .route("/destroyedComputerPartition", post(destroyed_partition))
        .route("/setComputerPartitionConnectionXml", post(connection))
        .route("/softwareInstanceBang", post(bang))
        .route("/softwareInstanceRename", post(rename))
        .route("/computerBang", post(computer_bang))
        .merge(hateoas::routes())
        .merge(rpc::routes())
        // slapproxy (Werkzeug) has no body limit; a format payload of 1000 partitions is
        // ≈2.5 MB form-encoded, above axum's 2 MB default.
        .layer(DefaultBodyLimit::max(SLAP_BODY_LIMIT))
}

/// Largest SLAP request body accepted (a format payload of ≈20 000 partitions).
pub const SLAP_BODY_LIMIT: usize = 64 << 20;

// ---------------------------------------------------------------------------------------------
// Answers and errors

/// A refused SLAP call: a status and a plain-text body (slapproxy answers text, not JSON).
#[derive(Debug)]
pub struct SlapError(StatusCode, String);

impl IntoResponse for SlapError {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::warn!(status = %self.0, error = %self.1, "SLAP call failed");
        }
        let mut r = (self.0, self.1).into_response();
        // slapproxy (Werkzeug) sends upper-case reason phrases (`400 BAD REQUEST`), which the
        // `slap` library and the CLI print in their errors.
        if let Some(reason) = self.0.canonical_reason()
            && let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.to_uppercase())
        {
            r.extensions_mut().insert(phrase);
        }
        r
    }
}

impl From<ApiError> for SlapError {
    fn from(e: ApiError) -> Self {
        let status = match &e {
            // slapproxy: AllocationFailure → abort(404).
            ApiError::NoAllocation(_) => StatusCode::NOT_FOUND,
            other => other.status(),
        };
        if let ApiError::DiskFull { .. } = e {
            tracing::error!(error = %e, "SLAP call refused: disk full");
            return SlapError(status, e.to_string());
        }
        if status.is_server_error() {
            tracing::error!(error = %e, "internal error in a SLAP call");
            return SlapError(status, "Internal server error".into());
        }
        SlapError(status, e.to_string())
    }
}

/// slapproxy: `request.form['x']` missing → 400 (Flask's BadRequestKeyError); anything the
/// unmarshaller or its callers raise → 500.
impl From<FormError> for SlapError {
    fn from(e: FormError) -> Self {
        match e {
            FormError::MissingField { .. } => SlapError(StatusCode::BAD_REQUEST, e.to_string()),
            other => SlapError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

type SlapResult = Result<Response, SlapError>;

fn bad_request(e: impl std::fmt::Display) -> SlapError {
    SlapError(StatusCode::BAD_REQUEST, e.to_string())
}

fn server_error(e: impl std::fmt::Display) -> SlapError {
    SlapError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// A 200 answer with slapproxy's content type.
fn text(body: impl Into<String>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The answer as xml_marshaller text. Stored data that XML cannot carry (kept from before the
/// API refused it) is cleaned rather than failing the whole read.
fn marshal(v: &Value) -> SlapResult {
    match wire::dumps(v) {
        Ok(t) => Ok(text(t)),
        Err(wire::EncodeError::InvalidChar { .. }) => {
            tracing::warn!("stored text XML cannot carry was replaced by U+FFFD in a SLAP answer");
            wire::dumps(&xml_safe_value(v))
                .map(text)
                .map_err(server_error)
        }
        Err(e) => Err(server_error(e)),
    }
}

type Fields = Vec<(String, String)>;

/// Bodies at least this large are decoded off the runtime's workers ([`decode`]).
const BIG_BODY: usize = 256 << 10;

/// Decode a request body of `len` bytes with `f`. Large ones are decoded one at a time, with
/// `block_in_place` on a multi-thread runtime: a 60 MiB format payload costs seconds of CPU,
/// which must not stall the other requests of the worker thread it landed on.
pub(crate) async fn decode<T>(len: usize, f: impl FnOnce() -> T) -> T {
    static HEAVY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    if len < BIG_BODY {
        return f();
    }
    let _one = HEAVY.acquire().await;
    if crate::db::can_block_in_place() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

fn form(body: &Bytes) -> Fields {
    form_urlencoded::parse(body).into_owned().collect()
}

fn query(q: &Option<String>) -> Fields {
    form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Authorization

/// [`auth::allow`] as a SLAP answer (403, text).
pub(crate) fn allow(who: &Identity, what: Action<'_>) -> Result<(), SlapError> {
    auth::allow(who, what).map_err(SlapError::from)
}

/// A 403 for ids that name nothing the caller could be allowed on.
pub(crate) fn refused(who: &Identity, what: &str) -> SlapError {
    SlapError::from(ApiError::Forbidden(format!("{who} may not {what}")))
}

/// `act` on computer `c` (as sent by the client). Local and admin identities pass without
/// parsing (slapproxy's leniency kept); an id that does not parse is refused to the others.
pub(crate) fn check_computer(
    who: &Identity,
    c: &str,
    act: for<'a> fn(&'a ComputerId) -> Action<'a>,
) -> Result<(), SlapError> {
    if who.is_admin() {
        return Ok(());
    }
    let c = ComputerId::parse(c).map_err(|_| refused(who, &format!("act on computer {c:?}")))?;
    allow(who, act(&c))
}

/// `act` on partition `c/p`, as [`check_computer`].
pub(crate) fn check_partition(
    who: &Identity,
    c: &str,
    p: &str,
    act: for<'a> fn(&'a ComputerId, &'a PartitionId) -> Action<'a>,
) -> Result<(), SlapError> {
    if who.is_admin() {
        return Ok(());
    }
    let (Ok(cc), Ok(pp)) = (ComputerId::parse(c), PartitionId::parse(p)) else {
        return Err(refused(who, &format!("act on partition {c:?}/{p:?}")));
    };
    allow(who, act(&cc, &pp))
}

/// A request made as partition `c/p` (X-SlapPartition header or form fields): the caller must
/// be that partition or its computer.
pub(crate) fn check_requester_identity(who: &Identity, c: &str, p: &str) -> Result<(), SlapError> {
    if who.is_admin() {
        return Ok(());
    }
    let r = slapos_proto::PartitionRef::parse(&format!("{c}/{p}"))
        .map_err(|_| refused(who, &format!("request instances as partition {c:?}/{p:?}")))?;
    allow(who, Action::RequestChild(&r))
}

/// Request (or re-request) a root instance as `who`: the owner rule of the native API, then
/// the request with `who`'s owner recorded (one call on the database thread, so nothing can
/// take the title in between).
pub(crate) fn request_root(
    s: &mut crate::store::Store,
    who: &Identity,
    req: &InstanceRequest,
    now: u64,
) -> Result<slapos_proto::InstanceInfo, ApiError> {
    let owner = auth::root_request_owner(s, who, &req.title)?;
    Ok(s.request_as(req, None, owner.as_deref(), now, RequestRules::SLAPPROXY)?)
}

// ---------------------------------------------------------------------------------------------
// Conversions between the two models

/// Our revision (milliseconds of the global counter) as slapproxy's `str(time.time())`.
pub fn timestamp(revision: i64) -> String {
    wire::pyrepr::float_repr(revision as f64 / 1000.0)
}

/// Stored JSON parameters as `xml2dict` would give them back: strings, `None` for empty.
///
/// Texts XML cannot carry (stored before the API refused them) are replaced by U+FFFD, so a
/// stored value can never make a SLAP read fail.
pub fn param_dict(p: &Params) -> ParamDict {
    let safe = |s: &str| slapos_proto::text::xml_safe(s, usize::MAX).into_owned();
    p.iter()
        .map(|(k, v)| {
            let s = match v {
                Json::Null => None,
                Json::String(s) if s.is_empty() => None,
                Json::String(s) => Some(safe(s)),
                other => Some(safe(&wire::pyrepr::py_str_json(other))),
            };
            (safe(k), s)
        })
        .collect()
}

/// `v` with every string XML cannot carry cleaned ([`slapos_proto::text::xml_safe`]).
fn xml_safe_value(v: &Value) -> Value {
    let safe = |s: &str| slapos_proto::text::xml_safe(s, usize::MAX).into_owned();
    let all = |l: &[Value]| l.iter().map(xml_safe_value).collect();
    match v {
        Value::String(s) => Value::String(safe(s)),
        Value::List(l) => Value::List(all(l)),
        Value::Tuple(l) => Value::Tuple(all(l)),
        Value::Set(l) => Value::Set(all(l)),
        Value::Dict(d) => Value::Dict(
            d.iter()
                .map(|(k, v)| (xml_safe_value(k), xml_safe_value(v)))
                .collect(),
        ),
        Value::Object(o) => {
            let mut o = o.clone();
            o.initargs = all(&o.initargs);
            for v in o.state.values_mut() {
                *v = xml_safe_value(v);
            }
            Value::Object(o)
        }
        other => other.clone(),
    }
}

/// Instance XML (what slapproxy stores) to our JSON parameters.
fn json_params(xml: &str) -> Result<Params, SlapError> {
    let dict = wire::xml2dict(xml).map_err(server_error)?;
    Ok(dict
        .into_iter()
        .map(|(k, v)| (k, v.map_or(Json::Null, Json::String)))
        .collect())
}

fn busy_doc(c: &str, p: &SlapPartition, i: &SlapInstance) -> ComputerPartitionDoc {
    let busy = BusyPartition {
        requested_state: i.state.clone(),
        parameters: PartitionParameters {
            instance: param_dict(&i.parameters),
            ip_list: p.ip_list.clone(),
            software_type: i.software_type.clone(),
            instance_title: i.title.clone(),
            root_instance_title: if i.root.is_empty() {
                i.title.clone()
            } else {
                i.root.clone()
            },
            software_release_url: i.software_url.clone(),
            timestamp: Some(timestamp(i.revision)),
            slave_instance_list: i.shared.iter().map(shared_entry).collect(),
            ..Default::default()
        },
        connection: param_dict(&i.connection),
    };
    ComputerPartitionDoc::busy(c, &p.id, &busy)
}

/// One `slave_instance_list` entry; the stored parameters are a marshalled dictionary.
fn shared_entry(e: &SharedEntry) -> Value {
    let params = wire::loads(&e.parameters)
        .ok()
        .and_then(|v| wire::objects::str_keyed(&v, "parameters").ok())
        .unwrap_or_default();
    wire::slave_instance_entry(&e.reference, &e.software_type, &params)
}

fn partition_doc(c: &str, p: &SlapPartition) -> ComputerPartitionDoc {
    match &p.instance {
        Some(i) => busy_doc(c, p, i),
        None => ComputerPartitionDoc::free(c, &p.id),
    }
}

// ---------------------------------------------------------------------------------------------
// Node-side reads

async fn full_computer(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    RawQuery(q): RawQuery,
) -> SlapResult {
    let q = query(&q);
    let c = wire::forms::required(&q, "computer_id")?.to_owned();
    check_computer(&who, &c, |c| Action::Node(c))?;
    let id = c.clone();
    let found = st.db.read(move |s| s.slap_computer(&id)).await?;
    let body = match found {
        Some(comp) => ComputerDoc::encode_from(
            &c,
            comp.software
                .into_iter()
                .map(|(url, state)| SoftwareReleaseDoc::supplied(&url, &c, &state)),
            comp.partitions.into_iter().map(|p| partition_doc(&c, &p)),
        ),
        // slapproxy: the configured computer answers empty even before it is formatted.
        None if st.slap.computer_id.as_deref() == Some(c.as_str()) => {
            ComputerDoc::empty(&c).encode()
        }
        // slapproxy raises NotFoundError (a 500 from its server); the `slap` library raises
        // NotFoundError on a 404, which is what its callers expect.
        None => {
            return Err(SlapError(
                StatusCode::NOT_FOUND,
                format!("{c} is not registered."),
            ));
        }
    };
    body.map(text).map_err(server_error)
}

async fn register_partition(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    RawQuery(q): RawQuery,
) -> SlapResult {
    let q = query(&q);
    let r = wire::PartitionRef::from_register_query(&q)?;
    check_partition(&who, &r.computer_id, &r.partition_id, |c, p| {
        Action::ReadPartition(c, p)
    })?;
    let (c, p) = (r.computer_id.clone(), r.partition_id.clone());
    let found = st.db.read(move |s| s.slap_partition(&c, &p)).await?;
    let Some(part) = found else {
        return Err(server_error(format!(
            "UnauthorizedError: partition {} of computer {} is not registered",
            r.partition_id, r.computer_id
        )));
    };
    partition_doc(&r.computer_id, &part)
        .encode()
        .map(text)
        .map_err(server_error)
}

/// `getComputerPartitionCertificate`: over TLS, a new certificate of the partition's identity
/// from the master CA (recorded, revoked when the partition is freed), for the computer's node
/// to place in the partition; without a CA, or for a free partition, slapproxy's empty one.
async fn certificate(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    RawQuery(q): RawQuery,
) -> SlapResult {
    let q = query(&q);
    let empty = || marshal(&Value::dict([("certificate", ""), ("key", "")]));
    let (c, p) = match (q.field("computer_id"), q.field("computer_partition_id")) {
        (Some(c), Some(p)) => (c.to_owned(), p.to_owned()),
        _ if who.is_admin() => return empty(),
        (c, p) => {
            return Err(refused(
                &who,
                &format!(
                    "fetch the certificate of partition {:?}/{:?}",
                    c.unwrap_or(""),
                    p.unwrap_or("")
                ),
            ));
        }
    };
    check_partition(&who, &c, &p, |c, p| Action::PartitionCertificate(c, p))?;
    let (Some(ca), Ok(c), Ok(p)) = (st.ca.clone(), ComputerId::parse(&c), PartitionId::parse(&p))
    else {
        return empty();
    };
    let (cc, pp) = (c.clone(), p.clone());
    let allocated = st
        .db
        .call(move |s| match s.partition_allocated(&cc, &pp) {
            Err(StoreError::NotFound(_)) => Ok(false),
            other => other,
        })
        .await?;
    if !allocated {
        return empty();
    }
    let id = Identity::Partition(slapos_proto::PartitionRef {
        computer: c,
        partition: p,
    });
    let (issued, row) = crate::certs::issue(ca, id).await?;
    st.db.call(move |s| s.record_certificate(&row)).await?;
    marshal(&Value::dict([
        ("certificate", issued.cert_pem.as_str()),
        ("key", issued.key_pem.as_str()),
    ]))
}

async fn partition_status(
    Extension(who): Extension<Identity>,
    RawQuery(q): RawQuery,
) -> SlapResult {
    if !who.is_admin() {
        let q = query(&q);
        let c = q.field("computer_id").unwrap_or("");
        let p = q.field("computer_partition_id").unwrap_or("");
        check_partition(&who, c, p, |c, p| Action::ReadPartition(c, p))?;
    }
    marshal(&Value::str("Not implemented."))
}

async fn computer_bang(Extension(who): Extension<Identity>, body: Bytes) -> SlapResult {
    let f = form(&body);
    check_computer(&who, f.field("computer_id").unwrap_or(""), |c| {
        Action::Node(c)
    })?;
    marshal(&Value::str(""))
}

async fn product(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    RawQuery(q): RawQuery,
) -> SlapResult {
    allow(&who, Action::Catalog)?;
    let q = query(&q);
    match (
        q.field("software_product_reference"),
        q.field("software_release_url"),
    ) {
        (Some(name), None) => {
            let list: Vec<Value> = st
                .slap
                .software_products
                .get(name)
                .map(Value::str)
                .into_iter()
                .collect();
            marshal(&Value::List(list))
        }
        (None, Some(_)) => Err(server_error(
            "NotImplementedError: software_release_url parameter is not supported yet.",
        )),
        _ => Err(server_error(
            "AssertionError: give exactly one of software_product_reference and \
             software_release_url",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Computer and software

async fn format(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> SlapResult {
    let cfg = decode(body.len(), || {
        let fields = form(&body);
        // Authorized on the plain form field before the marshalled payload is decoded; the
        // payload's own reference is checked again below.
        check_computer(&who, fields.field("computer_id").unwrap_or(""), |c| {
            Action::Register(c)
        })?;
        ComputerConfiguration::from_form(&fields).map_err(SlapError::from)
    })
    .await?;
    check_computer(&who, &cfg.reference, |c| Action::Register(c))?;
    let now = now_ms();
    let cfg = SlapFormat::from(&cfg);
    st.db.call(move |s| s.slap_format(&cfg, now)).await?;
    Ok(text("done"))
}

async fn supply(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> SlapResult {
    let f = decode(body.len(), || SupplyForm::from_form(&form(&body))).await?;
    check_computer(&who, &f.computer_id, |c| Action::Supply(c))?;
    let c = ComputerId::parse(f.computer_id.as_str()).map_err(bad_request)?;
    let req = SupplyRequest {
        url: SoftwareUrl::parse(f.url.as_str()).map_err(bad_request)?,
        state: match f.state {
            wire::SupplyState::Available => SupplyState::Available,
            wire::SupplyState::Destroyed => SupplyState::Destroyed,
        },
    };
    let now = now_ms();
    st.db.call(move |s| s.slap_supply(&c, &req, now)).await?;
    let state = match f.state {
        wire::SupplyState::Available => "available",
        wire::SupplyState::Destroyed => "destroyed",
    };
    Ok(text(format!(
        "Supplied {} to be {state}",
        wire::pyrepr::str_repr(&f.url)
    )))
}

/// Record a node's software report; unknown computers or releases are ignored (slapproxy
/// ignores these reports altogether).
async fn software_report(st: &AppState, body: &Bytes, state: InstallState) -> Option<()> {
    let f = SoftwareReleaseForm::from_form(&form(body)).ok()?;
    let c = ComputerId::parse(f.computer_id.as_str()).ok()?;
    let rep = SoftwareReport {
        url: SoftwareUrl::parse(f.url.as_str()).ok()?,
        state,
        message: f.error_log,
        parameter_model: None,
    };
    let now = now_ms();
    st.db
        .call(move |s| s.report_software(&c, &rep, now))
        .await
        .ok()
}

/// A node's call about its computer named by the form's `computer_id`.
fn check_node_form(who: &Identity, body: &Bytes) -> Result<(), SlapError> {
    check_computer(who, form(body).field("computer_id").unwrap_or(""), |c| {
        Action::Node(c)
    })
}

/// A call about the partition named by the form's `computer_id` + `computer_partition_id`.
fn check_partition_form(who: &Identity, body: &Bytes) -> Result<(), SlapError> {
    let f = form(body);
    check_partition(
        who,
        f.field("computer_id").unwrap_or(""),
        f.field("computer_partition_id").unwrap_or(""),
        |c, p| Action::Partition(c, p),
    )
}

async fn building(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> SlapResult {
    check_node_form(&who, &body)?;
    software_report(&st, &body, InstallState::Building).await;
    Ok(text("Ignored"))
}

async fn available(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> SlapResult {
    check_node_form(&who, &body)?;
    software_report(&st, &body, InstallState::Available).await;
    Ok(text("Ignored"))
}

async fn release_error(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> SlapResult {
    check_node_form(&who, &body)?;
    software_report(&st, &body, InstallState::Error).await;
    Ok(text("Ignored"))
}

async fn destroyed_release(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> SlapResult {
    let f = form(&body);
    wire::forms::required(&f, "computer_id")?;
    wire::forms::required(&f, "url")?;
    check_node_form(&who, &body)?;
    software_report(&st, &body, InstallState::Destroyed).await;
    Ok(text("OK"))
}

/// `started/stoppedComputerPartition`, `softwareInstanceError`: accepted and ignored (as
/// slapproxy), from the partition or its computer.
async fn ignored(Extension(who): Extension<Identity>, body: Bytes) -> SlapResult {
    check_partition_form(&who, &body)?;
    Ok(text("Ignored"))
}

/// `useComputer`: the node's usage journal (`use_string`) is accounted ([`usage`]); an empty
/// one is ignored, as slapproxy ignores every one.
async fn use_computer(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> SlapResult {
    check_node_form(&who, &body)?;
    let f = form(&body);
    let c = ComputerId::parse(wire::forms::required(&f, "computer_id")?)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    match usage::record_journal(&st, c, f.field("use_string").unwrap_or("")).await? {
        None => Ok(text("Ignored")),
        Some(_) => Ok(text("OK")),
    }
}

// ---------------------------------------------------------------------------------------------
// Instances

/// slapproxy (`getRequesterFromAuthorization`): a requester that is not a registered partition
/// is a 400.
fn check_requester(
    s: &mut crate::store::Store,
    from: Option<&slapos_proto::PartitionRef>,
) -> Result<(), ApiError> {
    if let Some(who) = from
        && s.slap_partition(who.computer.as_str(), who.partition.as_str())?
            .is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "No partition matching the authorization header: ({} / {})",
            who.computer, who.partition
        )));
    }
    Ok(())
}

/// `(computer, partition)` of an X-SlapPartition authorization header naming a partition.
fn requester_header(headers: &HeaderMap) -> Option<(String, String)> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(SlapPartitionAuth::parse)
        .and_then(|a| a.partition_id.map(|p| (a.computer_id, p)))
}

/// The requesting partition: the X-SlapPartition header, else the form's `computer_id` +
/// `computer_partition_id` (slapproxy's order).
fn requester(
    headers: &HeaderMap,
    req: &RequestForm,
) -> Result<Option<slapos_proto::PartitionRef>, SlapError> {
    let who = requester_header(headers).or_else(|| {
        req.requester
            .as_ref()
            .map(|r| (r.computer_id.clone(), r.partition_id.clone()))
    });
    who.map(|(c, p)| {
        Ok(slapos_proto::PartitionRef {
            computer: ComputerId::parse(c).map_err(bad_request)?,
            partition: PartitionId::parse(p).map_err(bad_request)?,
        })
    })
    .transpose()
}

async fn request(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    body: Bytes,
) -> SlapResult {
    // Every requester named (header and form) must be the caller or one of its partitions:
    // checked before the marshalled parameters are decoded, and again on the decoded form.
    if let Some((c, p)) = requester_header(&headers) {
        check_requester_identity(&who, &c, &p)?;
    }
    let f = decode(body.len(), || {
        let fields = form(&body);
        if let (Some(c), Some(p)) = (
            fields.field("computer_id"),
            fields.field("computer_partition_id"),
        ) {
            check_requester_identity(&who, c, p)?;
        }
        RequestForm::from_form(&fields).map_err(SlapError::from)
    })
    .await?;
    if let Some(r) = &f.requester {
        check_requester_identity(&who, &r.computer_id, &r.partition_id)?;
    }
    let from = requester(&headers, &f)?;
    if f.shared {
        // slapproxy: from a partition holding no instance, a root shared request
        // (`requested_by = ''`), hence admin-only like any root shared request.
        let from = match from {
            Some(r) => {
                let (c, p) = (r.computer.to_string(), r.partition.to_string());
                match st.db.read(move |s| s.slap_partition(&c, &p)).await? {
                    Some(part) if part.instance.is_none() => None,
                    _ => Some(r),
                }
            }
            None => None,
        };
        if from.is_none() {
            allow(&who, Action::AdminOnly("request root shared instances"))?;
        }
        // Federation: a shared request routed to a remote is delegated like a partition's.
        if !st.federation.is_empty()
            && let Some(info) =
                delegate(&st, &who, form_request(&f, true)?, from.clone(), true).await?
        {
            return shared_answer(&info);
        }
        return request_shared(&st, &f, from, forwarded_https(&headers)).await;
    }
    // Federation: the whole filter (`master_url`, the caller's `computer_guid`) routes and
    // travels with the request, not this master's default computer.
    let delegated = form_request(&f, false)?;
    let mut sla = BTreeMap::new();
    match f.filter_str("computer_guid") {
        Some(c) => {
            sla.insert("computer_guid".to_owned(), c.to_owned());
        }
        None => {
            if let Some(c) = &st.slap.computer_id {
                sla.insert("computer_guid".to_owned(), c.clone());
            }
        }
    }
    let req = InstanceRequest {
        sla,
        ..delegated.clone()
    };
    if let Some(info) = delegate(&st, &who, delegated, from.clone(), true).await? {
        return instance_answer(&info, Vec::new());
    }
    let now = now_ms();
    let (info, ip_list) = st
        .db
        .call(move |s| -> Result<_, ApiError> {
            check_requester(s, from.as_ref())?;
            // slapproxy: the requester is the calling partition's instance; a partition holding
            // none gives `requested_by = ''`, a root request (still authorized as one below).
            let from = match &from {
                Some(r) => s
                    .slap_partition(r.computer.as_str(), r.partition.as_str())?
                    .and_then(|p| p.instance)
                    .map(|_| r.clone()),
                None => None,
            };
            match &from {
                Some(_) => Ok(s.slap_request(&req, from.as_ref(), now)?),
                None => {
                    let info = request_root(s, &who, &req, now)?;
                    let (c, p) = (info.computer.to_string(), info.partition.to_string());
                    let ip = s.slap_ip_list(&c, &p)?;
                    Ok((info, ip.unwrap_or_default()))
                }
            }
        })
        .await?;
    instance_answer(&info, ip_list)
}

/// The request of form `f` as delegated to another master: its filter as the SLA.
fn form_request(f: &RequestForm, shared: bool) -> Result<InstanceRequest, SlapError> {
    Ok(InstanceRequest {
        title: InstanceTitle::parse(f.partition_reference.as_str()).map_err(bad_request)?,
        software_url: SoftwareUrl::parse(f.software_release.as_str()).map_err(bad_request)?,
        software_type: if f.software_type.is_empty() {
            SoftwareType::default()
        } else {
            SoftwareType::parse(f.software_type.as_str()).map_err(bad_request)?
        },
        parameters: json_params(&f.parameters_instance_xml().map_err(server_error)?)?,
        sla: f
            .filter
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect(),
        state: f.state.map(|s| match s {
            wire::RequestedState::Started => InstanceState::Started,
            wire::RequestedState::Stopped => InstanceState::Stopped,
            wire::RequestedState::Destroyed => InstanceState::Destroyed,
        }),
        shared,
    })
}

/// Federation: delegate `req` if it is routed to a remote (`None`: it stays here), requested
/// by `from`; with `empty_is_root`, a partition holding no instance makes a root request (as
/// the classic request does here).
pub(crate) async fn delegate(
    st: &AppState,
    who: &Identity,
    req: InstanceRequest,
    from: Option<slapos_proto::PartitionRef>,
    empty_is_root: bool,
) -> Result<Option<slapos_proto::InstanceInfo>, ApiError> {
    let Some(remote) = st.federation.route(&req)? else {
        return Ok(None);
    };
    let remote = remote.url.clone();
    let (title, shared) = (req.title.to_string(), req.shared);
    let (from, here) = st
        .db
        .read(move |s| -> Result<_, ApiError> {
            check_requester(s, from.as_ref())?;
            let from = match &from {
                Some(r) if empty_is_root => s
                    .slap_partition(r.computer.as_str(), r.partition.as_str())?
                    .and_then(|p| p.instance)
                    .map(|_| r.clone()),
                other => other.clone(),
            };
            let here = shared && s.shared_hosted_here(&title, from.as_ref())?;
            Ok((from, here))
        })
        .await?;
    if here {
        return Ok(None);
    }
    let info = crate::federation::delegate(st, who.clone(), req, from, remote).await?;
    Ok(Some(info))
}

/// The `SoftwareInstance` answer of a shared request delegated to another master: the
/// placeholder host (`federated/remote`) and the connection parameters the remote's host
/// published for it.
fn shared_answer(info: &slapos_proto::InstanceInfo) -> SlapResult {
    SoftwareInstanceDoc::for_shared(&RequestedShared {
        computer_id: info.computer.to_string(),
        host_partition_id: info.partition.to_string(),
        software_release_url: info.software_url.to_string(),
        software_type: info.software_type.to_string(),
        parameters: param_dict(&info.parameters),
        connection: param_dict(&info.connection),
        ip_list: Vec::new(),
    })
    .encode()
    .map(text)
    .map_err(server_error)
}

/// The `SoftwareInstance` answer of `requestComputerPartition` for `info` on a partition with
/// `ip_list`.
fn instance_answer(
    info: &slapos_proto::InstanceInfo,
    ip_list: Vec<(String, String)>,
) -> SlapResult {
    let connection = param_dict(&info.connection);
    let connection_xml = if connection.is_empty() {
        None
    } else {
        Some(wire::dict2xml_params(&connection).map_err(server_error)?)
    };
    SoftwareInstanceDoc::for_partition(&RequestedPartition {
        computer_id: info.computer.to_string(),
        partition_id: info.partition.to_string(),
        software_release_url: info.software_url.to_string(),
        software_type: info.software_type.to_string(),
        parameters: param_dict(&info.parameters),
        timestamp: timestamp(info.revision as i64),
        connection,
        connection_xml,
        requested_state: info.state.as_str().to_owned(),
        ip_list,
    })
    .encode()
    .map(text)
    .map_err(server_error)
}

/// Whether the client reached us over https through a proxy (`X-Forwarded-Proto: https`),
/// slapproxy's `request.scheme == 'https'`.
pub(crate) fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// `requestComputerPartition` with `shared_xml` true (`db.requestSlave`).
async fn request_shared(
    st: &AppState,
    f: &RequestForm,
    from: Option<slapos_proto::PartitionRef>,
    https: bool,
) -> SlapResult {
    let param = |k: &str| match f.parameters.get(k) {
        Some(Value::String(v)) => Some(v.clone()),
        Some(Value::Int(v)) => Some(v.to_string()),
        _ => None,
    };
    if let Some(fake) = frontend::bypass(&f.software_release, &f.software_type, param, https) {
        let mut doc = SoftwareInstanceDoc::for_shared(&RequestedShared {
            computer_id: String::new(),
            host_partition_id: String::new(),
            software_release_url: f.software_release.clone(),
            software_type: f.software_type.clone(),
            parameters: ParamDict::new(),
            connection: fake
                .connection
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect(),
            ip_list: Vec::new(),
        });
        doc.attributes
            .insert("_partition_id".into(), Value::str(fake.partition_id));
        return doc.encode().map(text).map_err(server_error);
    }
    let computer = f
        .filter_str("computer_guid")
        .map(str::to_owned)
        .or_else(|| st.slap.computer_id.clone())
        .unwrap_or_default();
    let prefix = format!("{computer}-");
    let req = SharedRequest {
        title: f.partition_reference.clone(),
        software_url: f.software_release.clone(),
        software_type: f.software_type.clone(),
        host_partition: f
            .filter_str("instance_guid")
            .map(|g| g.strip_prefix(&prefix).unwrap_or(g).to_owned()),
        parameters: wire::dumps(&Value::Dict(
            f.parameters
                .iter()
                .map(|(k, v)| (Value::str(k), v.clone()))
                .collect(),
        ))
        .map_err(server_error)?,
        destroyed: f.state == Some(wire::RequestedState::Destroyed),
        computer,
    };
    let parameters = wire::xml2dict(&f.parameters_instance_xml().map_err(server_error)?)
        .map_err(server_error)?;
    let now = now_ms();
    let placed = st
        .db
        .call(move |s| -> Result<_, ApiError> {
            check_requester(s, from.as_ref())?;
            Ok(s.slap_request_shared(&req, from.as_ref(), now)?)
        })
        .await?;
    let Some(at) = placed else {
        return Err(SlapError(
            StatusCode::NOT_FOUND,
            format!(
                "No partition corresponding to slave request: {}",
                wire::pyrepr::str_repr(&f.partition_reference)
            ),
        ));
    };
    SoftwareInstanceDoc::for_shared(&RequestedShared {
        computer_id: at.computer,
        host_partition_id: at.partition,
        software_release_url: at.software_url,
        software_type: at.software_type,
        parameters,
        connection: param_dict(&at.connection),
        ip_list: at.ip_list,
    })
    .encode()
    .map(text)
    .map_err(server_error)
}

async fn connection(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> SlapResult {
    // The partition is checked on the plain form fields before the payload is decoded.
    let f = decode(body.len(), || {
        check_partition_form(&who, &body)?;
        ConnectionForm::from_form(&form(&body)).map_err(SlapError::from)
    })
    .await?;
    check_partition(
        &who,
        &f.partition.computer_id,
        &f.partition.partition_id,
        |c, p| Action::Partition(c, p),
    )?;
    let params = json_params(&f.connection_instance_xml().map_err(server_error)?)?;
    if let Some(reference) = f.slave_reference.clone() {
        let (c, p) = (
            f.partition.computer_id.clone(),
            f.partition.partition_id.clone(),
        );
        st.db
            .call(move |s| s.slap_publish_shared(&c, &p, &reference, &params))
            .await?;
        return Ok(text("done"));
    }
    let (Ok(c), Ok(p)) = (
        ComputerId::parse(f.partition.computer_id.as_str()),
        PartitionId::parse(f.partition.partition_id.as_str()),
    ) else {
        return Ok(text("done"));
    };
    let now = now_ms();
    match st
        .db
        .call(move |s| s.publish_connection(&c, &p, &params, now))
        .await
    {
        // slapproxy updates no row for an unknown or free partition and still answers `done`.
        Ok(()) | Err(ApiError::NotFound(_) | ApiError::Conflict(_)) => Ok(text("done")),
        Err(e) => Err(e.into()),
    }
}

async fn bang(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> SlapResult {
    let f = form(&body);
    let r = wire::PartitionRef::from_form(&f)?;
    check_partition(&who, &r.computer_id, &r.partition_id, |c, p| {
        Action::Partition(c, p)
    })?;
    let message = f.field("message").unwrap_or("").to_owned();
    let (Ok(c), Ok(p)) = (
        ComputerId::parse(r.computer_id.as_str()),
        PartitionId::parse(r.partition_id.as_str()),
    ) else {
        return Ok(text("OK"));
    };
    let now = now_ms();
    match st.db.call(move |s| s.bang(&c, &p, &message, now)).await {
        // slapproxy bangs the tree of an unknown partition (none) and answers OK.
        Ok(_) | Err(ApiError::NotFound(_) | ApiError::Conflict(_)) => Ok(text("OK")),
        Err(e) => Err(e.into()),
    }
}

async fn destroyed_partition(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> SlapResult {
    let r = wire::PartitionRef::from_form(&form(&body))?;
    check_partition(&who, &r.computer_id, &r.partition_id, |c, p| {
        Action::Partition(c, p)
    })?;
    let now = now_ms();
    let answer = st
        .db
        .call(move |s| s.slap_destroyed(&r.computer_id, &r.partition_id, now))
        .await?;
    Ok(text(answer))
}

async fn rename(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> SlapResult {
    let f = form(&body);
    let new = wire::forms::required(&f, "new_name")?;
    let r = wire::PartitionRef::from_form(&f)?;
    check_partition(&who, &r.computer_id, &r.partition_id, |c, p| {
        Action::Partition(c, p)
    })?;
    let new = InstanceTitle::parse(new).map_err(bad_request)?;
    let (c, p) = (r.computer_id.clone(), r.partition_id.clone());
    let renamed = st.db.call(move |s| s.slap_rename(&c, &p, &new)).await?;
    Ok(text(if renamed {
        "done".to_owned()
    } else {
        format!(
            "Unknown partition ({}, {})",
            wire::pyrepr::str_repr(&r.partition_id),
            wire::pyrepr::str_repr(&r.computer_id)
        )
    }))
}
