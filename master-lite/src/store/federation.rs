//! Requests delegated to another master (federation, migration 10; `crate::federation` forwards
//! them).
//!
//! A delegated request is a `delegation` row keyed like an instance (`root`, `title`): the
//! request is idempotent by title whether it is local or delegated, and a title is either an
//! instance here or a delegation, never both (a title already allocated here stays here, as in
//! slapproxy). Every change to forward takes the next value of the revision counter; the
//! forwarding loop reads the due rows ([`Store::delegations_due`]), calls the remote outside of
//! any transaction and records the outcome ([`Store::delegation_outcome`]): the connection
//! parameters the remote answered, or why it could not be reached and when to try again.

use slapos_proto::{
    InstanceInfo, InstanceRequest, InstanceState, Params, PartitionRef, PartitionReport,
    ReportedStatus,
};

use super::error::{DbContext, StoreError};
use super::sql::{OptionalExtension, Row, Transaction, params};
use super::{
    RequestRules, Result, Store, Tx, decode, from_json, instance_state, ms, requester_instance,
    storable, to_json, tree_suffix,
};

/// What users see as the computer of a delegated instance (it runs on another master).
pub const DELEGATED_COMPUTER: &str = "federated";
/// What users see as the partition of a delegated instance.
pub const DELEGATED_PARTITION: &str = "remote";
/// The first words of a delegated instance's status line (its `bang`).
pub const DELEGATED_PREFIX: &str = "delegated to ";

/// The largest delegated connection parameters stored (as JSON, like a node's connection
/// publish body): a remote answering more leaves the delegation pending (`remote answer too
/// large: …`), its previous parameters kept.
pub const MAX_CONNECTION_BYTES: usize = slapos_proto::MAX_BODY_BYTES;

/// The SLA keys that name a master (slapproxy's `master_url`, and `master`): they route the
/// request and are not forwarded.
pub const MASTER_KEYS: [&str; 2] = ["master_url", "master"];

/// One delegated request, as the forwarding loop needs it.
#[derive(Debug, Clone)]
pub struct Delegation {
    /// Title of the requester's tree root, `""` for a root request.
    pub root: String,
    /// The local title.
    pub title: String,
    /// The remote master's URL.
    pub remote: String,
    /// The request to make there (title: the remote title; SLA without [`MASTER_KEYS`]).
    pub request: InstanceRequest,
    /// The revision this request is at.
    pub revision: u64,
    /// Failed attempts in a row.
    pub attempts: u32,
}

/// What forwarding one [`Delegation`] gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The remote accepted the request: its connection parameters (empty until published) and,
    /// when it tells, where the instance is there (`computer/partition`).
    Accepted {
        /// Connection parameters.
        connection: Params,
        /// `computer/partition` on the remote, if known.
        placed: Option<String>,
    },
    /// The remote accepted the destruction (or no longer knows the instance): forget it.
    Destroyed,
    /// The remote could not be reached or refused for now: try again later.
    Failed {
        /// Why, as users should read it.
        reason: String,
    },
}

const COLUMNS: &str = "root, title, remote, remote_title, software_url, software_type, \
    parameters, sla, shared, state, revision, forwarded, connection, status, attempts, \
    requester, owner, requester_id";

/// One `delegation` row.
#[derive(Debug, Clone)]
struct Row10 {
    root: String,
    title: String,
    remote: String,
    remote_title: String,
    software_url: String,
    software_type: String,
    parameters: String,
    sla: String,
    shared: bool,
    state: String,
    revision: i64,
    forwarded: i64,
    connection: String,
    status: String,
    attempts: i64,
    requester: Option<String>,
    owner: Option<String>,
    requester_id: Option<i64>,
}

impl Row10 {
    fn from_row(r: &Row) -> super::sql::SqlResult<Self> {
        Ok(Self {
            root: r.get(0)?,
            title: r.get(1)?,
            remote: r.get(2)?,
            remote_title: r.get(3)?,
            software_url: r.get(4)?,
            software_type: r.get(5)?,
            parameters: r.get(6)?,
            sla: r.get(7)?,
            shared: r.get::<i64>(8)? != 0,
            state: r.get(9)?,
            revision: r.get(10)?,
            forwarded: r.get(11)?,
            connection: r.get(12)?,
            status: r.get(13)?,
            attempts: r.get(14)?,
            requester: r.get(15)?,
            owner: r.get(16)?,
            requester_id: r.get(17)?,
        })
    }

    fn root_title(&self) -> &str {
        if self.root.is_empty() {
            &self.title
        } else {
            &self.root
        }
    }

    /// As users see it: the requested state and parameters, the remote's connection
    /// parameters, the status line as its `bang`, and (once the remote accepted this revision)
    /// a report of the requested state at this revision.
    fn info(&self) -> Result<InstanceInfo> {
        let state = instance_state(&self.state)?;
        let revision = self.revision as u64;
        Ok(InstanceInfo {
            title: decode(&self.title)?,
            root_title: decode(self.root_title())?,
            requester: self.requester.clone(),
            software_url: decode(&self.software_url)?,
            software_type: decode(&self.software_type)?,
            parameters: from_json(&self.parameters)?,
            state,
            computer: decode(DELEGATED_COMPUTER)?,
            partition: decode(DELEGATED_PARTITION)?,
            connection: from_json(&self.connection)?,
            reported: (self.forwarded >= self.revision).then(|| ReportedStatus {
                report: PartitionReport {
                    state,
                    revision,
                    promises: Vec::new(),
                    error: None,
                },
                at_ms: 0,
            }),
            bang: Some(self.status.clone()),
            revision,
            children: Vec::new(),
            shared: self.shared,
        })
    }

    fn delegation(&self) -> Result<Delegation> {
        Ok(Delegation {
            root: self.root.clone(),
            title: self.title.clone(),
            remote: self.remote.clone(),
            request: InstanceRequest {
                title: decode(&self.remote_title)?,
                software_url: decode(&self.software_url)?,
                software_type: decode(&self.software_type)?,
                parameters: from_json(&self.parameters)?,
                sla: from_json(&self.sla)?,
                state: Some(instance_state(&self.state)?),
                shared: self.shared,
            },
            revision: self.revision as u64,
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
        })
    }
}

fn select(tx: &Transaction<'_>, root: &str, title: &str) -> Result<Option<Row10>> {
    tx.q_row(
        &format!("SELECT {COLUMNS} FROM delegation WHERE root = ?1 AND title = ?2"),
        [root, title],
        Row10::from_row,
    )
    .optional()
    .op("look up a delegated request")
}

/// The delegated request `(title, root)`, if any, as users see it.
pub(super) fn delegation_info(
    tx: &Transaction<'_>,
    title: &str,
    root: &str,
) -> Result<Option<InstanceInfo>> {
    select(tx, root, title)?.map(|r| r.info()).transpose()
}

/// The owner recorded on the delegated root request `title`, if it is one.
pub(super) fn delegation_owner(
    tx: &Transaction<'_>,
    title: &str,
) -> Result<Option<Option<String>>> {
    Ok(select(tx, "", title)?.map(|r| r.owner))
}

/// The title on the remote master: the local title for a user's request, prefixed with the
/// requester's tree for a child (two trees may both request `db`), like slapproxy's
/// `<requester>_<title>`.
pub fn remote_title(root: &str, title: &str) -> String {
    if root.is_empty() {
        title.to_owned()
    } else {
        format!("{root}_{title}")
    }
}

/// What the status line says of a request (or a change) not forwarded yet.
const NOT_FORWARDED: &str = "pending, not forwarded yet";

/// The status line of a request waiting for its first forwarding.
fn pending(remote: &str) -> String {
    format!("{DELEGATED_PREFIX}{remote}: {NOT_FORWARDED}")
}

/// The delegated children of tree `root` follow its requested state, as its local instances do
/// (`destroyed` is final); each change is forwarded.
pub(super) fn set_tree_state(tx: &mut Tx<'_>, root: &str, state: InstanceState) -> Result<()> {
    restate(
        tx,
        "root = ?1",
        &root,
        state,
        [
            "count the delegated requests of a tree",
            "change the state of a tree's delegated requests",
        ],
    )
}

/// The delegated children of instance `id` and of every instance below it are destroyed, as
/// `destroy_subtree` marks the local ones; each destruction is forwarded.
pub(super) fn destroy_below(tx: &mut Tx<'_>, id: i64) -> Result<()> {
    restate(
        tx,
        "requester_id IN (WITH RECURSIVE sub(id) AS (
             SELECT id FROM instance WHERE id = ?1
             UNION SELECT i.id FROM instance i JOIN sub ON i.requester = sub.id)
         SELECT id FROM sub)",
        &id,
        InstanceState::Destroyed,
        [
            "count the delegated requests below an instance",
            "destroy the delegated requests below an instance",
        ],
    )
}

/// The titles of the requests instance `id` delegated (its delegated children).
pub(super) fn children(tx: &Transaction<'_>, id: i64) -> Result<Vec<String>> {
    super::titles(
        tx,
        "SELECT title FROM delegation WHERE requester_id = ?1 ORDER BY created_ms, title",
        [id],
    )
}

/// Give the delegated requests `which` (`?1` is `key`) the requested state `state`, to be
/// forwarded; those already destroyed stay destroyed. `ops` names the count and the update.
fn restate(
    tx: &mut Tx<'_>,
    which: &str,
    key: &dyn super::sql::ToValue,
    state: InstanceState,
    ops: [&'static str; 2],
) -> Result<()> {
    let following =
        format!("{which} AND state != ?2 AND (?2 = 'destroyed' OR state != 'destroyed')");
    let s = state.as_str();
    let n: i64 = tx
        .q_row(
            &format!("SELECT COUNT(*) FROM delegation WHERE {following}"),
            params![key, s],
            |r| r.get(0),
        )
        .op(ops[0])?;
    if n == 0 {
        return Ok(());
    }
    let seq = tx.seq()?;
    tx.exec(
        &format!(
            "UPDATE delegation SET state = ?2, revision = ?3, attempts = 0, next_ms = 0,
             status = '{DELEGATED_PREFIX}' || remote || ': {NOT_FORWARDED}'
             WHERE {following}"
        ),
        params![key, s, seq],
    )
    .op(ops[1])?;
    Ok(())
}

impl Store {
    /// Delegate `req` to the master at `remote` (the caller routed it there, see
    /// `crate::federation`): record it, or update the delegated request of that title, in one
    /// transaction. A title already allocated here is requested here ([`Store::request_as`]),
    /// like slapproxy, which forwards only requests it has not allocated.
    pub fn delegate(
        &mut self,
        req: &InstanceRequest,
        from: Option<&PartitionRef>,
        owner: Option<&str>,
        remote: &str,
        now_ms: u64,
    ) -> Result<InstanceInfo> {
        storable(slapos_proto::text::check_params(
            "instance parameters",
            &req.parameters,
        ))?;
        let mut tx = self.write()?;
        let requester = requester_instance(&tx, from)?;
        let root = requester
            .as_ref()
            .map(|r| r.root_title().to_owned())
            .unwrap_or_default();
        let title = req.title.as_str();
        let local: Option<i64> = tx
            .q_row(
                "SELECT id FROM instance WHERE root = ?1 AND title = ?2",
                [root.as_str(), title],
                |r| r.get(0),
            )
            .optional()
            .op("look up an instance")?;
        if local.is_some() {
            drop(tx);
            return self.request_as(req, from, owner, now_ms, RequestRules::NATIVE);
        }
        let sla: std::collections::BTreeMap<&String, &String> = req
            .sla
            .iter()
            .filter(|(k, _)| !MASTER_KEYS.contains(&k.as_str()))
            .collect();
        let (parameters, sla) = (to_json(&req.parameters)?, to_json(&sla)?);
        let existing = select(&tx, &root, title)?;
        match existing {
            None => {
                let state = req.state.unwrap_or_default();
                if state == InstanceState::Destroyed {
                    return Err(StoreError::NotFound(format!(
                        "instance {title:?} does not exist{}: nothing to destroy",
                        tree_suffix(&root)
                    )));
                }
                let seq = tx.seq()?;
                tx.exec(
                    "INSERT INTO delegation (root, title, requester, requester_id, owner, remote,
                     remote_title, software_url, software_type, parameters, sla, shared, state,
                     revision, status, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                    params![
                        root.as_str(),
                        title,
                        from.map(|f| f.to_string()),
                        requester.as_ref().map(|r| r.id),
                        if root.is_empty() { owner } else { None },
                        remote,
                        remote_title(&root, title),
                        req.software_url.as_str(),
                        req.software_type.as_str(),
                        parameters,
                        sla,
                        i64::from(req.shared),
                        state.as_str(),
                        seq,
                        pending(remote),
                        ms(now_ms)
                    ],
                )
                .op("record a delegated request")?;
            }
            Some(e) => {
                let state = req.state.map_or(e.state.clone(), |s| s.as_str().to_owned());
                let changed = e.software_url != req.software_url.as_str()
                    || e.software_type != req.software_type.as_str()
                    || e.parameters != parameters
                    || e.sla != sla
                    || e.state != state
                    || e.shared != req.shared;
                if changed {
                    let seq = tx.seq()?;
                    tx.exec(
                        "UPDATE delegation SET software_url = ?3, software_type = ?4,
                         parameters = ?5, sla = ?6, state = ?7, shared = ?8, revision = ?9,
                         status = ?10, attempts = 0, next_ms = 0
                         WHERE root = ?1 AND title = ?2",
                        params![
                            root.as_str(),
                            title,
                            req.software_url.as_str(),
                            req.software_type.as_str(),
                            parameters,
                            sla,
                            state,
                            i64::from(req.shared),
                            seq,
                            pending(&e.remote)
                        ],
                    )
                    .op("update a delegated request")?;
                }
            }
        }
        let info = select(&tx, &root, title)?
            .ok_or_else(|| StoreError::Internal("delegated request vanished".into()))?
            .info()?;
        tx.commit()?;
        Ok(info)
    }

    /// Change the requested state of the delegated root request `title`, if it is one
    /// (`None` otherwise).
    pub(super) fn set_delegated_state(
        &mut self,
        title: &str,
        state: InstanceState,
    ) -> Result<Option<InstanceInfo>> {
        let mut tx = self.write()?;
        let Some(e) = select(&tx, "", title)? else {
            return Ok(None);
        };
        if e.state != state.as_str() {
            let seq = tx.seq()?;
            tx.exec(
                "UPDATE delegation SET state = ?2, revision = ?3, status = ?4, attempts = 0,
                 next_ms = 0 WHERE root = '' AND title = ?1",
                params![title, state.as_str(), seq, pending(&e.remote)],
            )
            .op("change the state of a delegated request")?;
        }
        let info = select(&tx, "", title)?
            .ok_or_else(|| StoreError::Internal("delegated request vanished".into()))?
            .info()?;
        tx.commit()?;
        Ok(Some(info))
    }

    /// Every delegated request, as users see it, with its owner.
    pub fn delegations(&mut self) -> Result<Vec<(InstanceInfo, Option<String>)>> {
        let tx = self.read()?;
        let rows = super::rows(
            &tx,
            "list delegated requests",
            &format!("SELECT {COLUMNS} FROM delegation ORDER BY created_ms, root, title"),
            [],
            Row10::from_row,
        )?;
        let owners: std::collections::HashMap<&str, Option<String>> = rows
            .iter()
            .filter(|r| r.root.is_empty())
            .map(|r| (r.title.as_str(), r.owner.clone()))
            .collect();
        rows.iter()
            .map(|r| {
                let owner = owners.get(r.root_title()).cloned().flatten();
                Ok((r.info()?, owner))
            })
            .collect()
    }

    /// The delegated requests to forward (or to ask again for their connection parameters) at
    /// `now_ms`, at most `limit`, the longest waiting first.
    pub fn delegations_due(&mut self, now_ms: u64, limit: usize) -> Result<Vec<Delegation>> {
        let tx = self.read()?;
        let rows = super::rows(
            &tx,
            "list due delegated requests",
            &format!(
                "SELECT {COLUMNS} FROM delegation WHERE next_ms <= ?1 ORDER BY next_ms LIMIT ?2"
            ),
            params![ms(now_ms), i64::try_from(limit).unwrap_or(i64::MAX)],
            Row10::from_row,
        )?;
        rows.iter().map(Row10::delegation).collect()
    }

    /// The due delegated requests as [`Store::delegations_due`], but at most `per_remote` of
    /// each remote (grouped by remote, the longest waiting first in each), so a remote with
    /// many due requests does not hide the others' from the forwarding task.
    pub fn delegations_due_per_remote(
        &mut self,
        now_ms: u64,
        per_remote: usize,
    ) -> Result<Vec<Delegation>> {
        let tx = self.read()?;
        let rows = super::rows(
            &tx,
            "list due delegated requests per remote",
            &format!(
                "SELECT {COLUMNS} FROM (SELECT {COLUMNS}, next_ms, ROW_NUMBER() OVER \
                 (PARTITION BY remote ORDER BY next_ms, root, title) AS n \
                 FROM delegation WHERE next_ms <= ?1) AS due \
                 WHERE n <= ?2 ORDER BY remote, next_ms, root, title"
            ),
            params![ms(now_ms), i64::try_from(per_remote).unwrap_or(i64::MAX)],
            Row10::from_row,
        )?;
        rows.iter().map(Row10::delegation).collect()
    }

    /// Record what forwarding `d` gave; the next attempt is due at `next_ms` (the loop retries
    /// with a backoff, asks again for connection parameters until they come, then now and
    /// then). A row changed since `d` was read stays due at once for its new revision.
    pub fn delegation_outcome(
        &mut self,
        d: &Delegation,
        outcome: &Outcome,
        next_ms: u64,
    ) -> Result<()> {
        let capped;
        let outcome = match outcome {
            Outcome::Accepted { connection, .. } => {
                let n = to_json(connection)?.len();
                if n > MAX_CONNECTION_BYTES {
                    capped = Outcome::Failed {
                        reason: format!(
                            "remote answer too large: {n} bytes > limit {MAX_CONNECTION_BYTES} \
                             bytes (connection parameters)"
                        ),
                    };
                    &capped
                } else {
                    outcome
                }
            }
            _ => outcome,
        };
        let mut tx = self.write()?;
        let Some(e) = select(&tx, &d.root, &d.title)? else {
            return Ok(());
        };
        let current = e.revision as u64 == d.revision;
        let reach = format!("{DELEGATED_PREFIX}{}", e.remote);
        let (conn, status, attempts, accepted) = match outcome {
            Outcome::Destroyed => {
                if current {
                    tx.exec(
                        "DELETE FROM delegation WHERE root = ?1 AND title = ?2",
                        [d.root.as_str(), d.title.as_str()],
                    )
                    .op("forget a destroyed delegated request")?;
                    // As when a local child is freed: the requester is processed again (a
                    // destroyed one waiting for its children is then freed).
                    if let Some(id) = e.requester_id {
                        tx.bump_instance(id)?;
                    }
                }
                return tx.commit();
            }
            Outcome::Accepted { connection, placed } => {
                let conn = to_json(connection)?;
                let at = placed
                    .as_deref()
                    .map(|p| format!(" on {p}"))
                    .unwrap_or_default();
                let what = if connection.is_empty() {
                    "waiting for its connection parameters"
                } else {
                    "connection parameters received"
                };
                if conn != e.connection
                    && let Some(id) = e.requester_id
                {
                    // The requester (a partition here) reads its children's connection
                    // parameters in its desired state.
                    tx.bump_instance(id)?;
                }
                let status = format!("{reach}: forwarded as {:?}{at}, {what}", e.remote_title);
                (conn, status, 0, true)
            }
            Outcome::Failed { reason } => {
                let status = format!("{reach}: pending, {reason}; retrying");
                (
                    e.connection.clone(),
                    status,
                    e.attempts.saturating_add(1),
                    false,
                )
            }
        };
        // `CAST(?8 AS BIGINT)`: PostgreSQL would type the parameter after the `0` of the CASE
        // (int4), refusing any real time in milliseconds.
        tx.exec(
            "UPDATE delegation SET connection = ?3, status = ?4, attempts = ?5,
             forwarded = CASE WHEN ?6 = 1 AND ?7 > forwarded THEN ?7 ELSE forwarded END,
             next_ms = CASE WHEN revision = ?7 THEN CAST(?8 AS BIGINT) ELSE 0 END
             WHERE root = ?1 AND title = ?2",
            params![
                d.root.as_str(),
                d.title.as_str(),
                conn,
                status,
                attempts,
                i64::from(accepted),
                d.revision as i64,
                ms(next_ms)
            ],
        )
        .op("record the outcome of a forwarding")?;
        tx.commit()
    }
}
