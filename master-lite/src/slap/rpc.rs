//! slapproxy's JSON-RPC API (`proxy/json_rpc.py`, OpenAPI `json_rpc.json` "slapos master api
//! 0.0.3"): `POST /slapos.<verb>.v0.<object>` with a JSON body, over the same store as the
//! classic and native APIs.
//!
//! Rules as slapproxy: `POST` only (405), an `Accept` that excludes `application/json` is 406,
//! the body is checked against the endpoint's request schema (required keys, no other keys,
//! types and enums; failure 400), errors are JSON `{"status", "type", "title"}`. Instances are
//! named by the synthetic guid `<title>___<root title or ''>___<0|1>`.
//!
//! Authorization (`authorize`, before any work, by the rule of each `Endpoint`: one exhaustive
//! match): the same actions as the classic routes —
//! `computer_guid` calls of the node need that computer's identity, `instance_guid` calls the
//! instance's partition or its computer, supply is admin-only, a request follows the requester
//! rules (X-SlapPartition must name the caller or one of its partitions; roots: users' own
//! titles, owner recorded), lists are filtered. A refusal is a 403 JSON error.
//!
//! `reported_state destroyed` (installation or instance) follows slapproxy for the local
//! operator (plain HTTP: its trust model), frees / forgets whatever was requested; for any
//! certified identity the native rule (only what was requested destroyed) holds. Shared
//! requests for slapproxy's two known frontends get its fake-frontend answer
//! (`super::frontend`).
//!
//! `compute_node_format` records each address with its own `network-interface` (the partition
//! id when it has none), as slapproxy's `partition_network`; address texts that are not IP
//! literals are answered back as given but kept out of the native tables.
//!
//! Limits: bang and rename of a shared guid are 403 `NotImplemented` (as slapproxy); no
//! forwarding (never 523).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value as Json, json};
use slapos_proto::slap::{self as wire, Value};
use slapos_proto::{
    ComputerId, InstanceRequest, InstanceState, InstanceTitle, PartitionId, PartitionRef,
    SoftwareType, SoftwareUrl, SupplyRequest, SupplyState,
};

use super::hateoas::{all_roots, check_readable, computer_readable, host_url, root_shared, roots};
use super::{
    SlapError, check_computer, check_partition, check_requester, check_requester_identity,
    param_dict, request_root, requester_header,
};
use crate::auth::{Action, Identity, InstanceFacts};
use crate::error::ApiError;
use crate::state::{AppState, now_ms};
use crate::store::{
    SharedRequest, SharedRow, SlapAddress, SlapFormat, SlapPartition, Store, StoreError,
};

/// The `/slapos.*` routes, one per endpoint of the schema table.
pub fn routes() -> Router<AppState> {
    Endpoint::ALL.iter().fold(Router::new(), |r, &ep| {
        r.route(
            &format!("/{}", ep.path()),
            any(move |st, who, method, headers, body| endpoint(st, who, ep, method, headers, body)),
        )
    })
}

/// A JSON-RPC error: status and title.
#[derive(Debug)]
pub struct RpcError(StatusCode, String);

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let body = json!({
            "status": self.0.as_u16(),
            "type": self.0.canonical_reason().unwrap_or("Unknown Error"),
            "title": self.1,
        });
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<SlapError> for RpcError {
    fn from(e: SlapError) -> Self {
        RpcError(e.0, e.1)
    }
}

impl From<ApiError> for RpcError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NoAllocation(_) => RpcError(StatusCode::FORBIDDEN, e.to_string()),
            other => SlapError::from(other).into(),
        }
    }
}

fn forbidden(title: impl Into<String>) -> RpcError {
    RpcError(StatusCode::FORBIDDEN, title.into())
}

fn bad(title: impl Into<String>) -> RpcError {
    RpcError(StatusCode::BAD_REQUEST, title.into())
}

type RpcResult = Result<Response, RpcError>;

fn ok(v: Json) -> RpcResult {
    Ok(([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response())
}

fn success(title: impl Into<String>) -> RpcResult {
    ok(json!({"type": "success", "title": title.into()}))
}

/// A property of a request schema.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Enum(&'static [&'static str]),
    Object,
    Array,
    Bool,
}

/// Required and optional properties of a request schema (`json_rpc.json`, all
/// `additionalProperties: false`).
type Props = &'static [(&'static str, Ty)];

const STATES: &[&str] = &["started", "stopped", "destroyed"];

/// Every endpoint of slapproxy's `json_rpc.json`. Each one is routed ([`Endpoint::ALL`]), has
/// its schema ([`Endpoint::schema`]), its authorization rule ([`Endpoint::rule`], one
/// exhaustive match: a new endpoint cannot compile until it is decided) and its handler
/// (`endpoint`, exhaustive too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    /// `/slapos.put.v0.software_installation_reported_state`.
    SoftwareInstallationReportedState,
    /// `/slapos.allDocs.v0.instance_tree_list`.
    InstanceTreeList,
    /// `/slapos.get.v0.software_instance_certificate`.
    SoftwareInstanceCertificate,
    /// `/slapos.put.v0.software_instance_title`.
    SoftwareInstanceTitle,
    /// `/slapos.get.v0.instance_tree`.
    InstanceTree,
    /// `/slapos.put.v0.software_installation_error`.
    SoftwareInstallationError,
    /// `/slapos.get.v0.hateoas_url`.
    HateoasUrl,
    /// `/slapos.put.v0.software_instance_connection_parameter`.
    SoftwareInstanceConnectionParameter,
    /// `/slapos.get.v0.compute_node_status`.
    ComputeNodeStatus,
    /// `/slapos.allDocs.v0.compute_node_instance_list`.
    ComputeNodeInstanceList,
    /// `/slapos.get.v0.compute_partition`.
    ComputePartition,
    /// `/slapos.allDocs.v0.compute_node_software_installation_list`.
    ComputeNodeSoftwareInstallationList,
    /// `/slapos.put.v0.software_instance_error`.
    SoftwareInstanceError,
    /// `/slapos.post.v0.software_instance`.
    SoftwareInstanceRequest,
    /// `/slapos.post.v0.compute_node_certificate`.
    ComputeNodeCertificate,
    /// `/slapos.allDocs.v0.instance_node_instance_list`.
    InstanceNodeInstanceList,
    /// `/slapos.get.v0.software_instance`.
    SoftwareInstance,
    /// `/slapos.post.v0.compute_node_usage`.
    ComputeNodeUsage,
    /// `/slapos.put.v0.software_instance_bang`.
    SoftwareInstanceBang,
    /// `/slapos.put.v0.compute_node_format`.
    ComputeNodeFormat,
    /// `/slapos.put.v0.software_instance_reported_state`.
    SoftwareInstanceReportedState,
    /// `/slapos.remove.v0.compute_node_certificate`.
    ComputeNodeCertificateRemove,
    /// `/slapos.put.v0.compute_node_bang`.
    ComputeNodeBang,
    /// `/slapos.post.v0.software_installation`.
    SoftwareInstallation,
    /// `/slapos.allDocs.WIP.compute_node_list`.
    ComputeNodeList,
}

use Endpoint as E;

impl Endpoint {
    /// Every endpoint, in the order of the schema file.
    const ALL: [Endpoint; 25] = [
        E::SoftwareInstallationReportedState,
        E::InstanceTreeList,
        E::SoftwareInstanceCertificate,
        E::SoftwareInstanceTitle,
        E::InstanceTree,
        E::SoftwareInstallationError,
        E::HateoasUrl,
        E::SoftwareInstanceConnectionParameter,
        E::ComputeNodeStatus,
        E::ComputeNodeInstanceList,
        E::ComputePartition,
        E::ComputeNodeSoftwareInstallationList,
        E::SoftwareInstanceError,
        E::SoftwareInstanceRequest,
        E::ComputeNodeCertificate,
        E::InstanceNodeInstanceList,
        E::SoftwareInstance,
        E::ComputeNodeUsage,
        E::SoftwareInstanceBang,
        E::ComputeNodeFormat,
        E::SoftwareInstanceReportedState,
        E::ComputeNodeCertificateRemove,
        E::ComputeNodeBang,
        E::SoftwareInstallation,
        E::ComputeNodeList,
    ];

    /// Its path, without the leading `/`.
    fn path(self) -> &'static str {
        match self {
            E::SoftwareInstallationReportedState => {
                "slapos.put.v0.software_installation_reported_state"
            }
            E::InstanceTreeList => "slapos.allDocs.v0.instance_tree_list",
            E::SoftwareInstanceCertificate => "slapos.get.v0.software_instance_certificate",
            E::SoftwareInstanceTitle => "slapos.put.v0.software_instance_title",
            E::InstanceTree => "slapos.get.v0.instance_tree",
            E::SoftwareInstallationError => "slapos.put.v0.software_installation_error",
            E::HateoasUrl => "slapos.get.v0.hateoas_url",
            E::SoftwareInstanceConnectionParameter => {
                "slapos.put.v0.software_instance_connection_parameter"
            }
            E::ComputeNodeStatus => "slapos.get.v0.compute_node_status",
            E::ComputeNodeInstanceList => "slapos.allDocs.v0.compute_node_instance_list",
            E::ComputePartition => "slapos.get.v0.compute_partition",
            E::ComputeNodeSoftwareInstallationList => {
                "slapos.allDocs.v0.compute_node_software_installation_list"
            }
            E::SoftwareInstanceError => "slapos.put.v0.software_instance_error",
            E::SoftwareInstanceRequest => "slapos.post.v0.software_instance",
            E::ComputeNodeCertificate => "slapos.post.v0.compute_node_certificate",
            E::InstanceNodeInstanceList => "slapos.allDocs.v0.instance_node_instance_list",
            E::SoftwareInstance => "slapos.get.v0.software_instance",
            E::ComputeNodeUsage => "slapos.post.v0.compute_node_usage",
            E::SoftwareInstanceBang => "slapos.put.v0.software_instance_bang",
            E::ComputeNodeFormat => "slapos.put.v0.compute_node_format",
            E::SoftwareInstanceReportedState => "slapos.put.v0.software_instance_reported_state",
            E::ComputeNodeCertificateRemove => "slapos.remove.v0.compute_node_certificate",
            E::ComputeNodeBang => "slapos.put.v0.compute_node_bang",
            E::SoftwareInstallation => "slapos.post.v0.software_installation",
            E::ComputeNodeList => "slapos.allDocs.WIP.compute_node_list",
        }
    }

    /// Its request schema: required, then optional properties.
    fn schema(self) -> (Props, Props) {
        match self {
            E::SoftwareInstallationReportedState => (
                &[
                    ("software_release_uri", Ty::Str),
                    ("computer_guid", Ty::Str),
                    (
                        "reported_state",
                        Ty::Enum(&["available", "destroyed", "building"]),
                    ),
                ],
                &[],
            ),
            E::InstanceTreeList => (&[], &[]),
            E::SoftwareInstanceCertificate => (&[("instance_guid", Ty::Str)], &[]),
            E::SoftwareInstanceTitle => (&[("instance_guid", Ty::Str), ("title", Ty::Str)], &[]),
            E::InstanceTree => (&[("title", Ty::Str)], &[]),
            E::SoftwareInstallationError => (
                &[
                    ("software_release_uri", Ty::Str),
                    ("computer_guid", Ty::Str),
                    ("message", Ty::Str),
                ],
                &[],
            ),
            E::HateoasUrl => (&[], &[]),
            E::SoftwareInstanceConnectionParameter => (
                &[
                    ("instance_guid", Ty::Str),
                    ("connection_parameter_dict", Ty::Object),
                ],
                &[],
            ),
            E::ComputeNodeStatus => (&[("computer_guid", Ty::Str)], &[]),
            E::ComputeNodeInstanceList => (&[("computer_guid", Ty::Str)], &[]),
            E::ComputePartition => (
                &[
                    ("computer_guid", Ty::Str),
                    ("compute_partition_id", Ty::Str),
                ],
                &[],
            ),
            E::ComputeNodeSoftwareInstallationList => (&[("computer_guid", Ty::Str)], &[]),
            E::SoftwareInstanceError => (&[("instance_guid", Ty::Str), ("message", Ty::Str)], &[]),
            E::SoftwareInstanceRequest => (
                &[
                    ("title", Ty::Str),
                    ("software_release_uri", Ty::Str),
                    ("software_type", Ty::Str),
                ],
                &[
                    ("parameters", Ty::Object),
                    ("state", Ty::Enum(STATES)),
                    ("sla_parameters", Ty::Object),
                    ("shared", Ty::Bool),
                ],
            ),
            E::ComputeNodeCertificate => (&[("computer_guid", Ty::Str)], &[]),
            E::InstanceNodeInstanceList => (&[("instance_guid", Ty::Str)], &[]),
            E::SoftwareInstance => (&[("instance_guid", Ty::Str)], &[]),
            E::ComputeNodeUsage => (&[("computer_guid", Ty::Str), ("tioxml", Ty::Str)], &[]),
            E::SoftwareInstanceBang => (&[("instance_guid", Ty::Str), ("message", Ty::Str)], &[]),
            E::ComputeNodeFormat => (
                &[
                    ("compute_partition_list", Ty::Array),
                    ("computer_guid", Ty::Str),
                ],
                &[],
            ),
            E::SoftwareInstanceReportedState => (
                &[
                    ("instance_guid", Ty::Str),
                    ("reported_state", Ty::Enum(STATES)),
                ],
                &[],
            ),
            E::ComputeNodeCertificateRemove => (&[("computer_guid", Ty::Str)], &[]),
            E::ComputeNodeBang => (&[("message", Ty::Str), ("computer_guid", Ty::Str)], &[]),
            E::SoftwareInstallation => (
                &[
                    ("software_release_uri", Ty::Str),
                    ("computer_guid", Ty::Str),
                ],
                &[("state", Ty::Enum(&["available", "destroyed"]))],
            ),
            E::ComputeNodeList => (&[], &[]),
        }
    }
}

/// jsonschema's messages for the first violation.
fn validate(body: &Json, (required, optional): (Props, Props)) -> Result<(), RpcError> {
    let Some(obj) = body.as_object() else {
        return Err(bad(format!("{body} is not of type 'object'")));
    };
    for (k, _) in required {
        if !obj.contains_key(*k) {
            return Err(bad(format!("'{k}' is a required property")));
        }
    }
    let known = required.iter().chain(optional);
    for (k, v) in obj {
        let Some((_, ty)) = known.clone().find(|(n, _)| n == k) else {
            return Err(bad(format!(
                "Additional properties are not allowed ('{k}' was unexpected)"
            )));
        };
        let fits = match ty {
            Ty::Str => v.is_string(),
            Ty::Enum(allowed) => v.as_str().is_some_and(|s| allowed.contains(&s)),
            Ty::Object => v.is_object(),
            Ty::Array => v.is_array(),
            Ty::Bool => v.is_boolean(),
        };
        if !fits {
            return Err(bad(format!("{v} is not valid for '{k}'")));
        }
    }
    Ok(())
}

/// Werkzeug's `best_match(['application/json'])` is `None` for an Accept header that names
/// neither `application/json` nor a wildcard covering it.
fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    if accept.trim().is_empty() {
        return true;
    }
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let mime = parts.next().unwrap_or("").trim();
        let q_zero = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        !q_zero && matches!(mime, "application/json" | "application/*" | "*/*" | "*")
    })
}

async fn endpoint(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    ep: Endpoint,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> RpcResult {
    if method != Method::POST {
        return Err(RpcError(
            StatusCode::METHOD_NOT_ALLOWED,
            "The method is not allowed for the requested URL.".into(),
        ));
    }
    if !accepts_json(&headers) {
        return Err(RpcError(
            StatusCode::NOT_ACCEPTABLE,
            "The resource identified by the request is only capable of generating response \
             entities which have content characteristics not acceptable according to the accept \
             headers sent in the request."
                .into(),
        ));
    }
    let body: Json = super::decode(body.len(), || serde_json::from_slice(&body))
        .await
        .map_err(|e| bad(format!("Failed to decode JSON object: {e}")))?;
    validate(&body, ep.schema())?;
    if !who.is_admin() {
        authorize(&st, &who, ep, &body).await?;
    }
    let s = |k: &str| body.get(k).and_then(Json::as_str).unwrap_or("").to_owned();
    let now = now_ms();
    match ep {
        E::ComputeNodeUsage => {
            let c =
                ComputerId::parse(s("computer_guid").as_str()).map_err(|e| bad(e.to_string()))?;
            match super::usage::record_journal(&st, c, &s("tioxml")).await? {
                None => success("Ignored"),
                Some(n) => success(format!("Stored {n} usage samples")),
            }
        }
        E::ComputeNodeCertificateRemove
        | E::ComputeNodeBang
        | E::SoftwareInstanceError
        | E::SoftwareInstallationError => success("Ignored"),
        E::ComputeNodeCertificate | E::SoftwareInstanceCertificate => {
            ok(json!({"key": "", "certificate": ""}))
        }
        E::ComputeNodeStatus => ok(json!({"text": "Unknown (not implemented)"})),
        E::HateoasUrl => ok(json!({"hateoas_url": format!("{}hateoas/", host_url(&headers))})),
        E::SoftwareInstallation => {
            let state = body
                .get("state")
                .and_then(Json::as_str)
                .unwrap_or("available");
            let (c, url) = (s("computer_guid"), s("software_release_uri"));
            let c = ComputerId::parse(c.as_str()).map_err(|e| bad(e.to_string()))?;
            let req = SupplyRequest {
                url: SoftwareUrl::parse(url.as_str()).map_err(|e| bad(e.to_string()))?,
                state: if state == "destroyed" {
                    SupplyState::Destroyed
                } else {
                    SupplyState::Available
                },
            };
            st.db.call(move |s| s.slap_supply(&c, &req, now)).await?;
            success(format!("Supplied {url} to be {state}"))
        }
        E::ComputeNodeSoftwareInstallationList => {
            let c = s("computer_guid");
            let id = c.clone();
            let Some(comp) = st.db.read(move |s| s.slap_computer(&id)).await? else {
                return Err(forbidden(format!("{c} is not registered.")));
            };
            let list: Vec<Json> = comp
                .software
                .iter()
                .map(|(url, state)| json!({"software_release_uri": url, "state": state}))
                .collect();
            ok(json!({"result_list": list}))
        }
        E::SoftwareInstallationReportedState => {
            if s("reported_state") != "destroyed" {
                return success("Ignored");
            }
            let (c, url) = (s("computer_guid"), s("software_release_uri"));
            let (Ok(c), Ok(url)) = (ComputerId::parse(c), SoftwareUrl::parse(url)) else {
                return success("Destroyed");
            };
            let rep = slapos_proto::SoftwareReport {
                url,
                state: slapos_proto::InstallState::Destroyed,
                message: None,
                parameter_model: None,
            };
            // slapproxy deletes the row if any; an unknown one changes nothing. Under its trust
            // model (plain HTTP on loopback) whatever was requested; otherwise the native rule
            // (only a release requested destroyed is forgotten).
            if matches!(who, Identity::Local) {
                st.db
                    .call(move |s| s.slap_forget_software(c.as_str(), rep.url.as_str()))
                    .await?;
            } else {
                let _ = st.db.call(move |s| s.report_software(&c, &rep, now)).await;
            }
            success("Destroyed")
        }
        E::ComputeNodeInstanceList => {
            let c = s("computer_guid");
            let id = c.clone();
            let Some(comp) = st.db.read(move |s| s.slap_computer(&id)).await? else {
                return Err(forbidden(format!("{c} is not registered.")));
            };
            let list: Vec<Json> = comp
                .partitions
                .iter()
                .filter_map(|p| {
                    let i = p.instance.as_ref()?;
                    Some(json!({
                        "title": i.title, "instance_guid": guid(&i.title, &i.root, false),
                        "state": i.state, "compute_partition_id": p.id,
                        "software_release_uri": i.software_url,
                    }))
                })
                .collect();
            ok(json!({"result_list": list}))
        }
        E::InstanceNodeInstanceList => {
            let g = s("instance_guid");
            let (title, root, shared) = parse_guid(&g)?;
            let host = if shared {
                None
            } else {
                locate(&st, title, root).await?
            };
            let Some((c, p)) = host else {
                return Err(forbidden(format!("No software instance {g} found.")));
            };
            let list = st
                .db
                .read(move |s| s.slap_shared_list(None, None, Some((&c, &p.id))))
                .await?;
            let list: Vec<Json> = list
                .iter()
                .map(|r| {
                    json!({
                        "title": r.title, "instance_guid": guid(&r.title, &r.root, true),
                        "software_type": r.software_type, "state": "started",
                        "parameters": shared_params(r), "compute_partition_id": r.partition,
                    })
                })
                .collect();
            ok(json!({"result_list": list}))
        }
        E::SoftwareInstance => {
            let g = s("instance_guid");
            let (title, root, shared) = parse_guid(&g)?;
            if shared {
                return match shared_row(&st, title, root).await? {
                    Some(r) => ok(shared_json(&r)),
                    None => Err(forbidden(format!("No shared instance {g} found."))),
                };
            }
            match locate(&st, title, root).await? {
                Some((c, p)) => ok(instance_json(&c, &p)),
                None => Err(forbidden(format!("No software instance {g} found."))),
            }
        }
        E::ComputePartition => {
            let (c, p) = (s("computer_guid"), s("compute_partition_id"));
            let (cc, pp) = (c.clone(), p.clone());
            match st.db.read(move |s| s.slap_partition(&cc, &pp)).await? {
                Some(part) if part.instance.is_some() => ok(instance_json(&c, &part)),
                _ => Err(forbidden(format!("No instance on partition {p} found."))),
            }
        }
        E::InstanceTree => {
            let t = s("title");
            let mut found = roots(&st, &who, Some(t.clone())).await?;
            let mut shared = root_shared(&st, &who, Some(t.clone())).await?;
            if found.is_empty()
                && let (Some(r), true) = (shared.pop(), shared.is_empty())
            {
                return ok(shared_json(&r));
            }
            let (Some(i), true) = (found.pop(), found.is_empty()) else {
                return Err(forbidden(format!("No instance tree {t} found.")));
            };
            match locate(&st, i.title.to_string(), String::new()).await? {
                Some((c, p)) => ok(instance_json(&c, &p)),
                None => Err(forbidden(format!("No instance tree {t} found."))),
            }
        }
        E::InstanceTreeList => {
            let mut list: Vec<Json> = roots(&st, &who, None)
                .await?
                .iter()
                .map(|i| json!({"title": i.title}))
                .collect();
            list.extend(
                root_shared(&st, &who, None)
                    .await?
                    .iter()
                    .map(|r| json!({"title": r.title})),
            );
            ok(json!({"result_list": list}))
        }
        E::ComputeNodeList => {
            let list = st.db.read(|s| s.slap_computer_list(None)).await?;
            let list: Vec<Json> = list
                .iter()
                .filter(|c| computer_readable(&who, &c.id))
                .map(|c| json!({"computer_guid": c.id}))
                .collect();
            ok(json!({"result_list": list}))
        }
        E::ComputeNodeFormat => format(&st, &body, now).await,
        E::SoftwareInstanceRequest => request(&st, who, &headers, &body, now).await,
        E::SoftwareInstanceConnectionParameter => {
            instance_call(&st, InstanceCall::ConnectionParameter, &body, now).await
        }
        E::SoftwareInstanceReportedState => {
            let call = if matches!(who, Identity::Local) {
                InstanceCall::ReportedStateAnyway
            } else {
                InstanceCall::ReportedState
            };
            instance_call(&st, call, &body, now).await
        }
        E::SoftwareInstanceBang => instance_call(&st, InstanceCall::Bang, &body, now).await,
        E::SoftwareInstanceTitle => instance_call(&st, InstanceCall::Title, &body, now).await,
    }
}

/// What a non-admin caller needs for an endpoint.
enum Rule {
    /// The identity of `computer_guid`'s node (or of that computer), as this action.
    Computer(for<'a> fn(&'a ComputerId) -> Action<'a>),
    /// To read partition `computer_guid` / `compute_partition_id`.
    ReadPartition,
    /// To read the root named `title` (an unknown title is the handler's 403).
    ReadTree,
    /// To read the instance `instance_guid` (its tree's owner, its partition or computer).
    ReadInstance,
    /// To read the partition of `instance_guid` (its shared instances).
    ReadInstancePartition,
    /// To act as the partition of `instance_guid`.
    ActOnInstance,
    /// Decided by the handler: lists filtered by identity, requests by the requester rules,
    /// answers that are the same for everyone.
    InHandler,
}

impl Endpoint {
    /// Its authorization rule for a caller that is not an admin (see the module doc).
    fn rule(self) -> Rule {
        match self {
            E::SoftwareInstallationReportedState
            | E::SoftwareInstallationError
            | E::ComputeNodeInstanceList
            | E::ComputeNodeSoftwareInstallationList
            | E::ComputeNodeCertificate
            | E::ComputeNodeCertificateRemove
            | E::ComputeNodeUsage
            | E::ComputeNodeBang => Rule::Computer(|c| Action::Node(c)),
            E::ComputeNodeStatus => Rule::Computer(|c| Action::ReadComputer(c)),
            E::ComputeNodeFormat => Rule::Computer(|c| Action::Register(c)),
            E::SoftwareInstallation => Rule::Computer(|c| Action::Supply(c)),
            E::ComputePartition => Rule::ReadPartition,
            E::InstanceTree => Rule::ReadTree,
            E::SoftwareInstance => Rule::ReadInstance,
            E::InstanceNodeInstanceList => Rule::ReadInstancePartition,
            E::SoftwareInstanceCertificate
            | E::SoftwareInstanceTitle
            | E::SoftwareInstanceConnectionParameter
            | E::SoftwareInstanceError
            | E::SoftwareInstanceBang
            | E::SoftwareInstanceReportedState => Rule::ActOnInstance,
            E::InstanceTreeList
            | E::ComputeNodeList
            | E::SoftwareInstanceRequest
            | E::HateoasUrl => Rule::InHandler,
        }
    }
}

/// Where the instance named by a guid lives: its (host) computer and partition, and the facts
/// to decide a read on (`None` for a shared instance: no owner is recorded for it).
type Placed = (
    String,
    String,
    Option<(slapos_proto::InstanceInfo, Option<String>)>,
);

async fn place(st: &AppState, g: &str) -> Result<Option<Placed>, RpcError> {
    let (title, root, shared) = parse_guid(g)?;
    if shared {
        return Ok(shared_row(st, title, root)
            .await?
            .map(|r| (r.computer, r.partition, None)));
    }
    let found = st
        .db
        .call(move |s| {
            let (Ok(t), Ok(r)) = (
                InstanceTitle::parse(title.as_str()),
                (!root.is_empty())
                    .then(|| InstanceTitle::parse(root.as_str()))
                    .transpose(),
            ) else {
                return Ok(None);
            };
            match s.instance_owned(&t, r.as_ref()) {
                Ok(v) => Ok(Some(v)),
                Err(StoreError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
    Ok(found.map(|(i, o)| {
        (
            i.computer.to_string(),
            i.partition.to_string(),
            Some((i, o)),
        )
    }))
}

/// Whether a non-admin `who` may make this call ([`Endpoint::rule`]).
async fn authorize(
    st: &AppState,
    who: &Identity,
    ep: Endpoint,
    body: &Json,
) -> Result<(), RpcError> {
    let s = |k: &str| body.get(k).and_then(Json::as_str).unwrap_or("");
    let instance = |what| async move {
        let g = s("instance_guid");
        match place(st, g).await? {
            Some(placed) => Ok(placed),
            None => Err(forbidden(format!("{who} may not {what} instance {g}"))),
        }
    };
    match ep.rule() {
        Rule::InHandler => Ok(()),
        Rule::Computer(act) => Ok(check_computer(who, s("computer_guid"), act)?),
        Rule::ReadPartition => Ok(check_partition(
            who,
            s("computer_guid"),
            s("compute_partition_id"),
            |c, p| Action::ReadPartition(c, p),
        )?),
        Rule::ReadTree => {
            // A root the caller may not read is refused; an unknown title is the handler's 403.
            match all_roots(st, Some(s("title").to_owned())).await?.pop() {
                Some(root) => Ok(check_readable(who, &root)?),
                None => Ok(()),
            }
        }
        Rule::ReadInstance => match instance("read").await? {
            (_, _, Some((i, o))) => {
                let facts = InstanceFacts {
                    computer: i.computer.as_str(),
                    partition: i.partition.as_str(),
                    requester: i.requester.as_deref(),
                    owner: o.as_deref(),
                };
                Ok(super::allow(who, Action::ReadInstance(facts))?)
            }
            (c, p, None) => Ok(check_partition(who, &c, &p, |c, p| {
                Action::ReadPartition(c, p)
            })?),
        },
        Rule::ReadInstancePartition => {
            let (c, p, _) = instance("read").await?;
            Ok(check_partition(who, &c, &p, |c, p| {
                Action::ReadPartition(c, p)
            })?)
        }
        Rule::ActOnInstance => {
            let (c, p, _) = instance("act on").await?;
            Ok(check_partition(who, &c, &p, |c, p| {
                Action::Partition(c, p)
            })?)
        }
    }
}

/// `'%s___%s___%i' % (title, requested_by, is_shared)`.
fn guid(title: &str, root: &str, shared: bool) -> String {
    format!("{title}___{root}___{}", i32::from(shared))
}

/// `extractInstanceGuid`: split on `___` at most twice; anything else is 403.
fn parse_guid(g: &str) -> Result<(String, String, bool), RpcError> {
    let mut it = g.splitn(3, "___");
    let (Some(t), Some(r), Some(s)) = (it.next(), it.next(), it.next()) else {
        return Err(forbidden(format!("instance_guid {g} not handled.")));
    };
    let shared = s
        .trim()
        .parse::<i64>()
        .map_err(|_| forbidden(format!("instance_guid {g} not handled.")))?;
    Ok((t.to_owned(), r.to_owned(), shared != 0))
}

/// Instance `(title, root)` → its computer and partition (with the instance), if allocated.
async fn locate(
    st: &AppState,
    title: String,
    root: String,
) -> Result<Option<(String, SlapPartition)>, RpcError> {
    Ok(st.db.call(move |s| locate_in(s, &title, &root)).await?)
}

fn locate_in(
    s: &mut Store,
    title: &str,
    root: &str,
) -> Result<Option<(String, SlapPartition)>, ApiError> {
    let (Ok(t), Ok(r)) = (
        InstanceTitle::parse(title),
        (!root.is_empty())
            .then(|| InstanceTitle::parse(root))
            .transpose(),
    ) else {
        return Ok(None);
    };
    let info = match s.instance(&t, r.as_ref()) {
        Ok(i) => i,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (c, p) = (info.computer.to_string(), info.partition.to_string());
    Ok(s.slap_partition(&c, &p)?.map(|part| (c, part)))
}

/// The "Instance information" object of a busy partition.
/// Parameters as the JSON-RPC answers show them: `dict2xml` strings, `null` for empty.
fn string_dict(params: &slapos_proto::Params) -> Map<String, Json> {
    param_dict(params)
        .into_iter()
        .map(|(k, v)| (k, v.map_or(Json::Null, Json::String)))
        .collect()
}

/// A request delegated to another master (federation): no partition here; the status line
/// is the `access_status_message`.
fn delegated_json(i: &slapos_proto::InstanceInfo) -> Json {
    let root = if i.root_title == i.title {
        ""
    } else {
        i.root_title.as_str()
    };
    json!({
        "title": i.title,
        "instance_guid": guid(i.title.as_str(), root, i.shared),
        "software_release_uri": i.software_url,
        "software_type": i.software_type,
        "state": i.state.as_str(),
        "connection_parameters": string_dict(&i.connection),
        "parameters": string_dict(&i.parameters),
        "shared": i.shared,
        "root_instance_title": i.root_title,
        "ip_list": [],
        "full_ip_list": [],
        "sla_parameters": {},
        "computer_guid": i.computer,
        "compute_partition_id": i.partition,
        "processing_timestamp": i.revision / 1000,
        "access_status_message": i.bang.as_deref().unwrap_or(""),
    })
}

fn instance_json(c: &str, p: &SlapPartition) -> Json {
    let Some(i) = &p.instance else {
        return Json::Null;
    };
    let dict = string_dict;
    json!({
        "title": i.title,
        "instance_guid": guid(&i.title, &i.root, false),
        "software_release_uri": i.software_url,
        "software_type": i.software_type,
        "state": i.state,
        "connection_parameters": dict(&i.connection),
        "parameters": dict(&i.parameters),
        "shared": false,
        "root_instance_title": if i.root.is_empty() { &i.title } else { &i.root },
        "ip_list": p.ip_list.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        "full_ip_list": [],
        "sla_parameters": {},
        "computer_guid": c,
        "compute_partition_id": p.id,
        "processing_timestamp": i.revision / 1000,
        "access_status_message": "",
    })
}

async fn format(st: &AppState, body: &Json, now: u64) -> RpcResult {
    let empty = Vec::new();
    let list = body
        .get("compute_partition_list")
        .and_then(Json::as_array)
        .unwrap_or(&empty);
    let mut partitions = Vec::new();
    for p in list {
        let id = p
            .get("partition_id")
            .and_then(Json::as_str)
            .ok_or_else(|| bad("'partition_id' is a required property"))?;
        let ips = p.get("ip_list").and_then(Json::as_array).unwrap_or(&empty);
        let mut addresses = Vec::new();
        for ip in ips {
            let field = |k| ip.get(k).and_then(Json::as_str);
            let address =
                field("ip-address").ok_or_else(|| bad("'ip-address' is a required property"))?;
            addresses.push(SlapAddress {
                interface: field("network-interface")
                    .filter(|i| !i.is_empty())
                    .unwrap_or(id)
                    .to_owned(),
                address: address.to_owned(),
                netmask: field("netmask").unwrap_or("").to_owned(),
            });
        }
        partitions.push((id.to_owned(), addresses));
    }
    let cfg = SlapFormat {
        computer: body
            .get("computer_guid")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned(),
        address: None,
        netmask: None,
        partitions,
    };
    st.db.call(move |s| s.slap_format(&cfg, now)).await?;
    success("Formatted")
}

async fn request(
    st: &AppState,
    who: Identity,
    headers: &HeaderMap,
    body: &Json,
    now: u64,
) -> RpcResult {
    let s = |k: &str| body.get(k).and_then(Json::as_str).unwrap_or("").to_owned();
    let title = s("title");
    if let Some((c, p)) = requester_header(headers) {
        check_requester_identity(&who, &c, &p)?;
    }
    let from = requester_header(headers)
        .map(|(c, p)| -> Result<PartitionRef, RpcError> {
            let unknown = || {
                bad(format!(
                    "No partition matching the authorization header: ({c} / {p})"
                ))
            };
            Ok(PartitionRef {
                computer: ComputerId::parse(c.as_str()).map_err(|_| unknown())?,
                partition: PartitionId::parse(p.as_str()).map_err(|_| unknown())?,
            })
        })
        .transpose()?;
    let mut sla: std::collections::BTreeMap<String, String> = body
        .get("sla_parameters")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    // Federation: the caller's SLA (not this master's default computer) routes and travels.
    let asked_sla = sla.clone();
    if !sla.contains_key("computer_guid")
        && let Some(c) = &st.slap.computer_id
    {
        sla.insert("computer_guid".into(), c.clone());
    }
    if body.get("shared").and_then(Json::as_bool) == Some(true) {
        if from.is_none() {
            super::allow(&who, Action::AdminOnly("request root shared instances"))?;
        }
        // Federation: a shared request routed to a remote is delegated like a partition's
        // (parameters as given: a shared instance's keep their types).
        if !st.federation.is_empty() {
            let params = body.get("parameters").and_then(Json::as_object).cloned();
            let req = rpc_request(body, params.unwrap_or_default(), asked_sla.clone(), true)?;
            if let Some(answer) = delegate(st, &who, req, from.clone()).await? {
                return ok(answer);
            }
        }
        let https = super::forwarded_https(headers);
        return request_shared(st, body, from, sla, https, now).await;
    }
    let params = body
        .get("parameters")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    // dict2xml: Python str() of every value.
                    let v = match v {
                        Json::String(s) => Json::String(s.clone()),
                        Json::Null => Json::Null,
                        other => Json::String(slapos_proto::slap::pyrepr::py_str_json(other)),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    let delegated = rpc_request(body, params, asked_sla, false)?;
    let req = InstanceRequest {
        sla,
        ..delegated.clone()
    };
    if let Some(answer) = delegate(st, &who, delegated, from.clone()).await? {
        return ok(answer);
    }
    let located = st
        .db
        .call(move |s| -> Result<_, ApiError> {
            check_requester(s, from.as_ref())?;
            let info = match &from {
                Some(_) => s.slap_request(&req, from.as_ref(), now)?.0,
                None => request_root(s, &who, &req, now)?,
            };
            let (c, p) = (info.computer.to_string(), info.partition.to_string());
            Ok(s.slap_partition(&c, &p)?.map(|part| (c, part)))
        })
        .await
        .map_err(|e| match e {
            ApiError::BadRequest(m) => bad(m),
            ApiError::Forbidden(m) => forbidden(m),
            ApiError::NoAllocation(_) => {
                forbidden(format!("No free computer partition found for: {title}"))
            }
            other => other.into(),
        })?;
    match located {
        Some((c, p)) => ok(instance_json(&c, &p)),
        None => Err(RpcError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error".into(),
        )),
    }
}

/// The request `body` with `parameters` and the SLA `sla` (what is routed and delegated).
fn rpc_request(
    body: &Json,
    parameters: slapos_proto::Params,
    sla: std::collections::BTreeMap<String, String>,
    shared: bool,
) -> Result<InstanceRequest, RpcError> {
    let s = |k: &str| body.get(k).and_then(Json::as_str).unwrap_or("");
    let software_type = s("software_type");
    Ok(InstanceRequest {
        title: InstanceTitle::parse(s("title")).map_err(|e| bad(e.to_string()))?,
        software_url: SoftwareUrl::parse(s("software_release_uri"))
            .map_err(|e| bad(e.to_string()))?,
        software_type: if software_type.is_empty() {
            SoftwareType::default()
        } else {
            SoftwareType::parse(software_type).map_err(|e| bad(e.to_string()))?
        },
        parameters,
        sla,
        state: Some(match body.get("state").and_then(Json::as_str) {
            Some("stopped") => InstanceState::Stopped,
            Some("destroyed") => InstanceState::Destroyed,
            _ => InstanceState::Started,
        }),
        shared,
    })
}

/// Federation: delegate `req` if it is routed to a remote (`None`: it stays here); the answer.
async fn delegate(
    st: &AppState,
    who: &Identity,
    req: InstanceRequest,
    from: Option<PartitionRef>,
) -> Result<Option<Json>, RpcError> {
    let info = super::delegate(st, who, req, from, false)
        .await
        .map_err(|e| match e {
            ApiError::BadRequest(m) => bad(m),
            ApiError::Forbidden(m) => forbidden(m),
            other => other.into(),
        })?;
    Ok(info.as_ref().map(delegated_json))
}

/// `dict2xml(connection_parameter_dict)` read back: strings, `None` for empty.
fn connection_params(body: &Json) -> slapos_proto::Params {
    body.get("connection_parameter_dict")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Json::String(s) if s.is_empty() => Json::Null,
                        Json::String(s) => Json::String(s.clone()),
                        Json::Null => Json::String("None".into()),
                        other => Json::String(slapos_proto::slap::pyrepr::py_str_json(other)),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// JSON → xml_marshaller value (what the Python client would have marshalled).
fn to_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::None,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0))),
        Json::String(s) => Value::str(s),
        Json::Array(a) => Value::List(a.iter().map(to_value).collect()),
        Json::Object(m) => Value::Dict(
            m.iter()
                .map(|(k, v)| (Value::str(k), to_value(v)))
                .collect(),
        ),
    }
}

/// xml_marshaller value → JSON (shared-instance parameters keep their types).
fn to_json(v: &Value) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::String(s) => json!(s),
        Value::List(a) | Value::Tuple(a) | Value::Set(a) => a.iter().map(to_json).collect(),
        Value::Dict(d) => Json::Object(
            d.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned),
                        to_json(v),
                    )
                })
                .collect(),
        ),
        other => json!(format!("{other:?}")),
    }
}

/// A shared instance's stored parameters (marshal dictionary) as JSON.
fn shared_params(r: &SharedRow) -> Json {
    wire::loads(&r.parameters).map_or(json!({}), |v| to_json(&v))
}

/// The "Instance information" object of a shared instance (`send_json_rpc_sql_shared`).
fn shared_json(r: &SharedRow) -> Json {
    json!({
        "title": r.title,
        "instance_guid": guid(&r.title, &r.root, true),
        "software_release_uri": r.software_url,
        "software_type": r.host_software_type,
        "state": "started",
        "connection_parameters": strings(&r.connection),
        "parameters": shared_params(r),
        "shared": true,
        "root_instance_title": if r.root.is_empty() { &r.title } else { &r.root },
        "ip_list": [],
        "full_ip_list": [],
        "sla_parameters": {},
        "computer_guid": r.computer,
        "compute_partition_id": r.partition,
        "processing_timestamp": r.host_revision / 1000,
        "access_status_message": "",
    })
}

fn strings(p: &slapos_proto::Params) -> Map<String, Json> {
    param_dict(p)
        .into_iter()
        .map(|(k, v)| (k, v.map_or(Json::Null, Json::String)))
        .collect()
}

/// One shared instance by guid parts.
async fn shared_row(
    st: &AppState,
    title: String,
    root: String,
) -> Result<Option<SharedRow>, RpcError> {
    Ok(st
        .db
        .read(move |s| s.slap_shared_list(Some(&root), Some(&title), None))
        .await?
        .pop())
}

async fn request_shared(
    st: &AppState,
    body: &Json,
    from: Option<PartitionRef>,
    sla: std::collections::BTreeMap<String, String>,
    https: bool,
    now: u64,
) -> RpcResult {
    let s = |k: &str| body.get(k).and_then(Json::as_str).unwrap_or("").to_owned();
    let title = s("title");
    let param = |k: &str| match body.get("parameters").and_then(|p| p.get(k)) {
        Some(Json::String(v)) => Some(v.clone()),
        Some(Json::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(fake) = super::frontend::bypass(
        &s("software_release_uri"),
        &s("software_type"),
        param,
        https,
    ) {
        // slapproxy's answer for the fake ComputerPartition: nothing allocated or recorded.
        let requested_by = match &from {
            None => String::new(),
            Some(r) => {
                let (c, p) = (r.computer.to_string(), r.partition.to_string());
                st.db
                    .read(move |s| s.slap_partition(&c, &p))
                    .await?
                    .and_then(|p| p.instance)
                    .map(|i| if i.root.is_empty() { i.title } else { i.root })
                    .unwrap_or_default()
            }
        };
        let state = match s("state") {
            st if st.is_empty() => "started".to_owned(),
            st => st,
        };
        let connection: Map<String, Json> = fake
            .connection
            .into_iter()
            .map(|(k, v)| (k, Json::String(v)))
            .collect();
        return ok(json!({
            "title": title,
            "instance_guid": guid(&title, &requested_by, true),
            "software_release_uri": s("software_release_uri"),
            "software_type": s("software_type"),
            "state": state,
            "connection_parameters": connection,
            "parameters": body.get("parameters").cloned().unwrap_or_else(|| json!({})),
            "shared": true,
            "root_instance_title": if requested_by.is_empty() { &title } else { &requested_by },
            "ip_list": [],
            "full_ip_list": [],
            "sla_parameters": {},
            "computer_guid": "",
            "compute_partition_id": fake.partition_id,
            "processing_timestamp": 0,
            "access_status_message": "",
        }));
    }
    let computer = sla.get("computer_guid").cloned().unwrap_or_default();
    let prefix = format!("{computer}-");
    let params = body.get("parameters").cloned().unwrap_or_else(|| json!({}));
    let req = SharedRequest {
        title: title.clone(),
        software_url: s("software_release_uri"),
        software_type: s("software_type"),
        host_partition: sla
            .get("instance_guid")
            .map(|g| g.strip_prefix(&prefix).unwrap_or(g).to_owned()),
        parameters: wire::dumps(&to_value(&params)).map_err(|e| bad(e.to_string()))?,
        destroyed: s("state") == "destroyed",
        computer,
    };
    let placed = st
        .db
        .call(move |s| -> Result<_, ApiError> {
            check_requester(s, from.as_ref())?;
            Ok(s.slap_request_shared(&req, from.as_ref(), now)?)
        })
        .await
        .map_err(|e| match e {
            ApiError::BadRequest(m) => bad(m),
            other => other.into(),
        })?;
    let Some(at) = placed else {
        return Err(forbidden(format!(
            "No partition corresponding to slave request: {title}"
        )));
    };
    // `send_json_rpc_slap_instance` for a shared one: xml2dict strings, timestamp 0.
    let strings_of = |v: &Json| -> Map<String, Json> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let s = match v {
                            Json::String(s) if s.is_empty() => Json::Null,
                            Json::String(s) => Json::String(s.clone()),
                            other => Json::String(slapos_proto::slap::pyrepr::py_str_json(other)),
                        };
                        (k.clone(), s)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    ok(json!({
        "title": title,
        "instance_guid": guid(&title, &at.root, true),
        "software_release_uri": at.software_url,
        "software_type": at.software_type,
        "state": "started",
        "connection_parameters": strings(&at.connection),
        "parameters": strings_of(&params),
        "shared": true,
        "root_instance_title": if at.root.is_empty() { &title } else { &at.root },
        "ip_list": at.ip_list.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        "full_ip_list": [],
        "sla_parameters": {},
        "computer_guid": at.computer,
        "compute_partition_id": at.partition,
        "processing_timestamp": 0,
        "access_status_message": "",
    }))
}

/// The instance calls that take an `instance_guid` and change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InstanceCall {
    ConnectionParameter,
    /// `reported_state destroyed`: frees only an instance requested destroyed (native rule).
    ReportedState,
    /// The same under slapproxy's trust model (plain HTTP on loopback): frees the instance
    /// whatever was requested, as slapproxy does (not one that still has children).
    ReportedStateAnyway,
    Bang,
    Title,
}

/// Connection parameters, reported state, bang, title of an instance.
async fn instance_call(st: &AppState, call: InstanceCall, body: &Json, now: u64) -> RpcResult {
    let s = |k: &str| body.get(k).and_then(Json::as_str).unwrap_or("").to_owned();
    let g = s("instance_guid");
    let reported = matches!(
        call,
        InstanceCall::ReportedState | InstanceCall::ReportedStateAnyway
    );
    if reported && s("reported_state") != "destroyed" {
        return success("Ignored");
    }
    let (title, root, shared) = parse_guid(&g)?;
    if shared {
        return match call {
            InstanceCall::ReportedState | InstanceCall::ReportedStateAnyway => success("Ignored"),
            InstanceCall::ConnectionParameter => {
                if let Some(r) = shared_row(st, title, root).await? {
                    let params = connection_params(body);
                    let reference = format!("{}_{}", r.root, r.title);
                    st.db
                        .call(move |s| {
                            s.slap_publish_shared(&r.computer, &r.partition, &reference, &params)
                        })
                        .await?;
                }
                // slapproxy: an unknown shared reference updates no row, still Updated.
                success("Updated")
            }
            InstanceCall::Bang | InstanceCall::Title => Err(forbidden("NotImplemented")),
        };
    }
    let located = locate(st, title, root).await?;
    let ids = located.as_ref().and_then(|(c, p)| {
        Some((
            ComputerId::parse(c.as_str()).ok()?,
            PartitionId::parse(p.id.as_str()).ok()?,
        ))
    });
    match call {
        InstanceCall::ConnectionParameter => {
            let Some((c, p)) = ids else {
                // slapproxy's UPDATE matches no row and still answers Updated.
                return success("Updated");
            };
            let params = connection_params(body);
            st.db
                .call(move |s| s.publish_connection(&c, &p, &params, now))
                .await?;
            success("Updated")
        }
        InstanceCall::ReportedState | InstanceCall::ReportedStateAnyway => {
            let Some((c, p)) = ids else {
                return Err(forbidden(format!("No software instance {g} found.")));
            };
            let anyway = call == InstanceCall::ReportedStateAnyway;
            let answer = st
                .db
                .call(move |s| {
                    if anyway {
                        s.slap_destroyed_anyway(c.as_str(), p.as_str(), now)
                    } else {
                        s.slap_destroyed(c.as_str(), p.as_str(), now)
                    }
                })
                .await?;
            if answer == "OK" {
                success("Destroyed")
            } else {
                Err(forbidden(answer))
            }
        }
        InstanceCall::Bang => {
            if let Some((c, p)) = ids {
                let message = s("message");
                st.db.call(move |s| s.bang(&c, &p, &message, now)).await?;
            }
            success("Bang handled")
        }
        InstanceCall::Title => {
            if let Some((c, p)) = ids {
                let new =
                    InstanceTitle::parse(s("title").as_str()).map_err(|e| bad(e.to_string()))?;
                st.db
                    .call(move |s| s.slap_rename(c.as_str(), p.as_str(), &new))
                    .await?;
            }
            success("Renamed")
        }
    }
}
