//! The minimal `/hateoas` of slapproxy (`proxy/hateoas.py`) that `slapos service list/info` and
//! `slapos computer list/info` use: the root document with the `raw_search` and `traverse`
//! templates, four exact search queries, traversal by 302, and one ERP5-like view per instance
//! tree root and per computer. Everything else answers 400 (`Unhandled query/mode`) or 404.
//!
//! Roots are instances with no requester (slapproxy: `requested_by = ''`) and shared instances
//! requested by a user (slapproxy's `_<title>` slaves), viewed at `/hateoas/shared/<title>`.
//!
//! Authorization: lists are filtered with [`auth::allowed`] (a user sees the trees it owns, a
//! computer the roots on it, admins everything; root shared instances, which record no owner,
//! are for admins); a view of something the caller may not read is a 403.

use axum::Router;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use slapos_proto::InstanceInfo;
use slapos_proto::slap as wire;

use super::{SlapError, param_dict, query, timestamp};
use crate::auth::{self, Action, Identity, InstanceFacts};
use crate::state::AppState;
use crate::store::SharedRow;

pub(crate) const SERVICE_LIST: &str =
    "portal_type:\"Instance Tree\" AND validation_state:validated";
const COMPUTER_LIST: &str = "portal_type:\"Compute Node\" AND validation_state:validated";

/// The `/hateoas` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/hateoas",
            get(|| async { Redirect::permanent("/hateoas/") }),
        )
        .route("/hateoas/", get(hateoas))
        .route("/hateoas/partitions/{title}", get(partition_view))
        .route("/hateoas/computers/{reference}", get(computer_view))
        .route("/hateoas/shared/{reference}", get(shared_view))
}

fn json_ok(v: Json) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// `request.host_url`: scheme (X-Forwarded-Proto honoured) and Host header.
pub(crate) fn host_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    format!("{scheme}://{host}/")
}

/// slapproxy's `is_valid` (regex `"((\.|[^\"])*)"`, where `\.` is any character): the whole
/// name is one double-quoted string without inner `"`. Returns the name without its quotes.
fn quoted(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('"')).then_some(inner)
}

async fn hateoas(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, SlapError> {
    super::allow(&who, Action::Catalog)?;
    let q = query(&q);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match get("mode") {
        None => {
            let base = host_url(&headers);
            Ok(json_ok(json!({"_links": {
                "raw_search": {"href": format!(
                    "{base}hateoas/?mode=search&query={{query}}&select_list={{select_list}}")},
                "traverse": {"href": format!(
                    "{base}hateoas/?mode=traverse&relative_url={{relative_url}}&view={{view}}")},
            }})))
        }
        Some("traverse") => {
            let to = get("relative_url")
                .ok_or_else(|| SlapError(StatusCode::BAD_REQUEST, "relative_url missing".into()))?;
            Ok(Redirect::to(to).into_response())
        }
        Some("search") => {
            let query = get("query")
                .ok_or_else(|| SlapError(StatusCode::BAD_REQUEST, "query missing".into()))?;
            let unhandled =
                || SlapError(StatusCode::BAD_REQUEST, format!("Unhandled query: {query}"));
            let contents = if query == SERVICE_LIST {
                service_rows(&st, &who, None).await?
            } else if let Some(t) = query.strip_prefix(&format!("{SERVICE_LIST} AND title:=")) {
                service_rows(&st, &who, Some(quoted(t).ok_or_else(unhandled)?.to_owned())).await?
            } else if query == COMPUTER_LIST {
                computer_rows(&st, &who, None).await?
            } else if let Some(r) = query.strip_prefix(&format!("{COMPUTER_LIST} AND reference:="))
            {
                computer_rows(&st, &who, Some(quoted(r).ok_or_else(unhandled)?.to_owned())).await?
            } else {
                return Err(unhandled());
            };
            Ok(json_ok(json!({"_embedded": {"contents": contents}})))
        }
        Some(other) => Err(SlapError(
            StatusCode::BAD_REQUEST,
            format!("Unhandled mode: {other}"),
        )),
    }
}

/// A root instance with the owner of its tree.
pub(crate) type OwnedRoot = (InstanceInfo, Option<String>);

/// Whether `who` may read instance `i` of a tree owned by `owner`.
pub(crate) fn readable(who: &Identity, i: &InstanceInfo, owner: Option<&str>) -> bool {
    auth::allowed(
        who,
        &Action::ReadInstance(InstanceFacts {
            computer: i.computer.as_str(),
            partition: i.partition.as_str(),
            requester: i.requester.as_deref(),
            owner,
        }),
    )
}

/// [`readable`], or a 403 naming the instance.
pub(crate) fn check_readable(who: &Identity, (i, owner): &OwnedRoot) -> Result<(), SlapError> {
    super::allow(
        who,
        Action::ReadInstance(InstanceFacts {
            computer: i.computer.as_str(),
            partition: i.partition.as_str(),
            requester: i.requester.as_deref(),
            owner: owner.as_deref(),
        }),
    )
}

/// Root instances (no requester) with their owners, optionally one title; unfiltered.
pub(crate) async fn all_roots(
    st: &AppState,
    title: Option<String>,
) -> Result<Vec<OwnedRoot>, SlapError> {
    let all = st.db.read(|s| s.instances_owned()).await?;
    Ok(all
        .into_iter()
        .filter(|(i, _)| i.requester.is_none() && i.root_title == i.title)
        .filter(|(i, _)| title.as_deref().is_none_or(|t| i.title.as_str() == t))
        .collect())
}

/// The root instances `who` may read, optionally one title.
pub(crate) async fn roots(
    st: &AppState,
    who: &Identity,
    title: Option<String>,
) -> Result<Vec<InstanceInfo>, SlapError> {
    Ok(all_roots(st, title)
        .await?
        .into_iter()
        .filter(|(i, o)| readable(who, i, o.as_deref()))
        .map(|(i, _)| i)
        .collect())
}

/// `dict2xml` of parameters as stored; `None` for an empty connection (slapproxy's NULL).
pub(crate) fn instance_xml(p: &slapos_proto::Params) -> Result<String, SlapError> {
    wire::dict2xml_params(&param_dict(p)).map_err(super::server_error)
}

fn connection_xml(i: &InstanceInfo) -> Result<Json, SlapError> {
    Ok(if i.connection.is_empty() {
        Json::Null
    } else {
        Json::String(instance_xml(&i.connection)?)
    })
}

/// Root shared instances (requested by a user), optionally one title: they record no owner,
/// so only local and admin identities see them.
pub(crate) async fn root_shared(
    st: &AppState,
    who: &Identity,
    title: Option<String>,
) -> Result<Vec<SharedRow>, SlapError> {
    if !who.is_admin() {
        return Ok(Vec::new());
    }
    Ok(st
        .db
        .read(move |s| s.slap_shared_list(Some(""), title.as_deref(), None))
        .await?)
}

async fn service_rows(
    st: &AppState,
    who: &Identity,
    title: Option<String>,
) -> Result<Vec<Json>, SlapError> {
    let mut found = partition_rows(st, who, title.clone()).await?;
    // slapproxy: all root partitions then all root shared; one title: the partition, else
    // the shared instance.
    if title.is_none() || found.is_empty() {
        found.extend(root_shared(st, who, title).await?.iter().map(|r| {
            json!({
                "title": r.title, "url_string": r.software_url,
                "relative_url": format!("/hateoas/shared/{}", r.title),
            })
        }));
    }
    Ok(found)
}

async fn partition_rows(
    st: &AppState,
    who: &Identity,
    title: Option<String>,
) -> Result<Vec<Json>, SlapError> {
    roots(st, who, title)
        .await?
        .iter()
        .map(|i| {
            Ok(json!({
                "title": i.title.as_str(),
                "url_string": i.software_url.as_str(),
                "relative_url": format!("/hateoas/partitions/{}", i.title),
                "reference": i.partition.as_str(),
                "partition_reference": i.title.as_str(),
                "computer_reference": i.computer.as_str(),
                "software_release": i.software_url.as_str(),
                "software_type": i.software_type.as_str(),
                "requested_state": i.state.as_str(),
                "slap_state": "busy",
                "requested_by": "",
                "requester_id": "user",
                "xml": instance_xml(&i.parameters)?,
                "connection_xml": connection_xml(i)?,
                "timestamp": timestamp(i.revision as i64),
            }))
        })
        .collect()
}

/// Whether `who` may read computer `c` (an id that does not parse: admins only).
pub(crate) fn computer_readable(who: &Identity, c: &str) -> bool {
    who.is_admin()
        || slapos_proto::ComputerId::parse(c)
            .is_ok_and(|c| auth::allowed(who, &Action::ReadComputer(&c)))
}

async fn computer_rows(
    st: &AppState,
    who: &Identity,
    reference: Option<String>,
) -> Result<Vec<Json>, SlapError> {
    let list = st
        .db
        .read(move |s| s.slap_computer_list(reference.as_deref()))
        .await?;
    Ok(list
        .into_iter()
        .filter(|c| computer_readable(who, &c.id))
        .map(|c| {
            json!({
                "reference": c.id, "title": c.id, "address": c.address, "netmask": c.netmask,
                "relative_url": format!("/hateoas/computers/{}", c.id),
            })
        })
        .collect())
}

fn field(ty: &str, key: &str, default: Json) -> Json {
    json!({"type": ty, "key": key, "default": default})
}

async fn partition_view(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(title): Path<String>,
) -> Result<Response, SlapError> {
    let Some(root) = all_roots(&st, Some(title)).await?.pop() else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    check_readable(&who, &root)?;
    let i = root.0;
    Ok(json_ok(json!({
        "_embedded": {"_view": {
            "form_id": field("StringField", "form_id", json!("InstanceTree_viewAsHateoas")),
            "my_reference": field("StringField", "field_my_reference", json!(i.title.as_str())),
            "my_slap_state": field("StringField", "field_my_slap_state", json!(i.state.as_str())),
            "my_text_content": field("StringField", "field_my_text_content",
                json!(instance_xml(&i.parameters)?)),
            "my_connection_parameter_list": field("StringField",
                "field_my_connection_parameter_list", connection_xml(&i)?),
            "my_url_string": field("StringField", "field_my_url_string",
                json!(i.software_url.as_str())),
            "my_source_reference": field("StringField", "field_my_source_reference",
                json!(i.software_type.as_str())),
            "my_root_slave": field("IntegerField", "field_my_root_slave", json!(0)),
        }},
        "_links": {"type": {"name": "Instance Tree"}},
    })))
}

/// Parameters of a shared instance (its stored marshal dictionary) as instance XML.
pub(crate) fn shared_params_xml(r: &SharedRow) -> Result<String, SlapError> {
    let v = wire::loads(&r.parameters).map_err(super::server_error)?;
    wire::dict2xml_value(&v).map_err(super::server_error)
}

async fn shared_view(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(title): Path<String>,
) -> Result<Response, SlapError> {
    super::allow(&who, Action::AdminOnly("read root shared instances"))?;
    let Some(r) = root_shared(&st, &who, Some(title)).await?.pop() else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let connection = if r.connection.is_empty() {
        Json::Null
    } else {
        Json::String(instance_xml(&r.connection)?)
    };
    Ok(json_ok(json!({
        "_embedded": {"_view": {
            "form_id": field("StringField", "form_id", json!("InstanceTree_viewAsHateoas")),
            "my_reference": field("StringField", "field_my_reference", json!(r.title)),
            "my_slap_state": field("StringField", "field_my_slap_state", json!("unused")),
            "my_text_content": field("StringField", "field_my_text_content",
                json!(shared_params_xml(&r)?)),
            "my_connection_parameter_list": field("StringField",
                "field_my_connection_parameter_list", connection),
            "my_url_string": field("StringField", "field_my_url_string", json!(r.software_url)),
            "my_source_reference": field("StringField", "field_my_source_reference",
                json!(r.software_type)),
            "my_root_slave": field("IntegerField", "field_my_root_slave", json!(1)),
        }},
        "_links": {"type": {"name": "Instance Tree"}},
    })))
}

async fn computer_view(
    State(st): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(reference): Path<String>,
) -> Result<Response, SlapError> {
    if !computer_readable(&who, &reference) {
        return Err(super::refused(
            &who,
            &format!("read computer {reference:?}"),
        ));
    }
    let list = st
        .db
        .read(move |s| s.slap_computer_list(Some(&reference)))
        .await?;
    let Some(id) = list.into_iter().next().map(|c| c.id) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    Ok(json_ok(json!({
        "_embedded": {"_view": {
            "form_id": field("StringField", "computer", json!(id)),
            "my_reference": field("StringField", "reference", json!(id)),
            "my_title": field("StringField", "reference", json!(id)),
        }},
        "_links": {"type": {"name": "Computer"}},
    })))
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn quoted_names_follow_slapproxy_regex() {
        assert_eq!(quoted("\"abc\""), Some("abc"));
        assert_eq!(quoted("\"a\\\"b\""), None);
        assert_eq!(quoted("\""), None);
        assert_eq!(quoted("\"a\"b\""), None);
        assert_eq!(quoted("abc"), None);
        assert_eq!(quoted("\"abc"), None);
    }
}
