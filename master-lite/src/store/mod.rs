//! The master's state in embedded SQLite: computers, partitions, releases, instances.
//!
//! # Design
//!
//! [`Store`] owns one [`rusqlite::Connection`] and is driven by one thread (see [`crate::db`]);
//! every public method is **one transaction** (`BEGIN IMMEDIATE` for writes), so an API call is
//! applied completely or not at all, and input is validated before anything is written. The
//! schema and its numbered migrations are in [`schema`].
//!
//! # Durability
//!
//! The database runs in WAL mode with `synchronous = FULL`: a commit returns only after the WAL
//! has been fsynced, so anything the master acknowledged survives a crash of the process **and**
//! of the machine (power loss), which matters on an edge box. `NORMAL` would survive only a
//! process crash. The price is one fsync per write call; `master-bench` measures it against the
//! raw cost of a one-row commit on the same disk.
//!
//! # Revisions and etags
//!
//! One monotonic counter (`meta.seq`) is advanced at most once per transaction, and only when
//! the transaction changes something a node acts on. That value becomes the new `revision` of
//! every instance whose assignment changed and the new `etag` of every computer whose desired
//! state changed. An identical re-request therefore changes nothing; a freed and re-allocated
//! partition can never show a revision the node has already converged. The computers changed by
//! a committed transaction are collected in [`Store::take_touched`] so the caller can wake the
//! long polls of exactly those nodes.
//!
//! # Semantics (after SlapOS, see `docs/api.md`)
//!
//! * An instance is keyed by `(title, root)`: `root` is `''` for an instance a user requested and
//!   the title of the tree root for one requested by a partition.
//! * Allocation takes the first free partition, in registration order, of a computer matching
//!   the SLA filter **and** having the release supplied.
//! * An instance row exists exactly while it holds a partition. A node's `destroyed` report
//!   deletes it (freeing and resetting the partition) once its children are gone; until then its
//!   children are marked destroyed and the report answers `freed: false`.
//! * A root's state change (request or state route) is applied to its whole tree; a destroyed
//!   child stays destroyed when the tree is started again.

pub mod copy;
pub mod disk;
pub mod error;
pub mod federation;
mod identity;
pub mod models;
pub mod schema;
mod slap;
pub mod sql;
pub mod sqlite_alloc;
mod usage;
mod usage_series;
pub use usage::{MAX_BATCH as MAX_USAGE_BATCH, UsageTotals};
pub use usage_series::{MAX_BUCKETS as MAX_USAGE_BUCKETS, UsagePoint};

pub use identity::{CertificateRow, Enrolled};

pub use slap::{
    MAX_ADDRESS_TEXT, SharedEntry, SharedPlacement, SharedRequest, SharedRow, SlapAddress,
    SlapComputer, SlapComputerRow, SlapFormat, SlapInstance, SlapPartition,
};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use slapos_proto::{
    Assignment, ComputerId, ComputerInfo, ConnectionPublish, DesiredPartition, DesiredSoftware,
    DesiredState, InstallState, InstanceInfo, InstanceRequest, InstanceState, InstanceTitle,
    LabelKey, Params, PartitionId, PartitionInfo, PartitionRef, PartitionReport, RegisterComputer,
    ReportAck, ReportedStatus, SharedInstance, SoftwareInfo, SoftwareReport, SoftwareType,
    SoftwareUrl, SupplyRequest, SupplyState,
};
use sql::{Conn, OptionalExtension, Row, Transaction, params};

use error::DbContext;
pub use error::{OpenError, StoreError};

/// Result of a store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Longest label value accepted at registration (bytes).
pub const MAX_LABEL_VALUE: usize = 256;

/// Longest error text kept from a node's report (install error with its log tail, a
/// partition's error), bytes; longer ones are cut.
pub const MAX_REPORT_ERROR: usize = 4096;

/// Longest promise message kept from a report (bytes).
pub const MAX_PROMISE_MESSAGE: usize = 1024;

/// Most promise results kept from one report.
pub const MAX_PROMISES: usize = 256;

/// Longest interface name accepted at registration (bytes).
pub const MAX_INTERFACE: usize = 64;

/// The first `max` bytes of `s` (at a character boundary), for error messages.
pub(crate) fn cut(s: &str, max: usize) -> String {
    slapos_proto::text::xml_safe(s, max).into_owned()
}

/// Longest bang message (bytes).
pub const MAX_BANG: usize = 4096;

/// What callers send must be storable and readable on every wire ([`slapos_proto::text`]).
fn storable(r: std::result::Result<(), slapos_proto::text::TextError>) -> Result<()> {
    r.map_err(|e| StoreError::Invalid(e.to_string()))
}

/// A node's report as stored: texts the SLAP wire cannot carry replaced, lengths capped.
fn clean_report(rep: &PartitionReport) -> PartitionReport {
    use slapos_proto::text::xml_safe;
    PartitionReport {
        state: rep.state,
        revision: rep.revision,
        promises: rep
            .promises
            .iter()
            .take(MAX_PROMISES)
            .map(|p| slapos_proto::PromiseResult {
                name: xml_safe(&p.name, 128).into_owned(),
                ok: p.ok,
                message: xml_safe(&p.message, MAX_PROMISE_MESSAGE).into_owned(),
                at_ms: p.at_ms,
            })
            .collect(),
        error: rep
            .error
            .as_deref()
            .map(|e| xml_safe(e, MAX_REPORT_ERROR).into_owned()),
    }
}

/// The master's database.
pub struct Store {
    conn: Conn,
    touched: Vec<(ComputerId, u64)>,
    reserve: disk::Reserve,
    /// The PostgreSQL URL to reconnect to (None on SQLite).
    pg_url: Option<String>,
    /// The floor of a new SQLite revision: the wall clock in ms (see [`Store::set_clock`]).
    clock: fn() -> u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.conn.engine())
            .finish_non_exhaustive()
    }
}

/// A failed open: a full filesystem gets its own message.
fn open_error(path: &Path, source: rusqlite::Error) -> OpenError {
    if disk::is_disk_full(&source) {
        OpenError::DiskFull {
            path: path.to_owned(),
        }
    } else {
        OpenError::Open {
            path: path.to_owned(),
            source,
        }
    }
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    // postgres://user:secret@host/db -> postgres://user:***@host/db
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((cred, host)) = rest.rsplit_once('@')
        && let Some((user, _)) = cred.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

/// Where the master's state lives: `sqlite:PATH`, a bare path (SQLite), or
/// `postgres://…` / `postgresql://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl FromStr for DbUrl {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<postgres::Config>()
                .map_err(|e| format!("invalid PostgreSQL URL {}: {e}", redact(s)))?;
            Ok(DbUrl::Postgres(s.to_owned()))
        } else if let Some(p) = s.strip_prefix("sqlite:") {
            if p.is_empty() {
                return Err("sqlite: needs a path (sqlite:/var/lib/slapos/master.db)".into());
            }
            Ok(DbUrl::Sqlite(PathBuf::from(p)))
        } else if s.is_empty() {
            Err("empty database location".into())
        } else {
            Ok(DbUrl::Sqlite(PathBuf::from(s)))
        }
    }
}

impl std::fmt::Display for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            DbUrl::Postgres(u) => f.write_str(&redact(u)),
        }
    }
}

impl From<&Path> for DbUrl {
    fn from(p: &Path) -> Self {
        DbUrl::Sqlite(p.to_owned())
    }
}

/// PostgreSQL channel on which committed changes are announced to every replica: the payload
/// is `<computer id> <etag>` (ids hold no space).
pub const NOTIFY_CHANNEL: &str = "slapos_desired";

/// Connect to PostgreSQL (no TLS: run the database on a trusted network or a local socket).
pub fn pg_connect(url: &str) -> std::result::Result<postgres::Client, postgres::Error> {
    let mut cfg: postgres::Config = url.parse()?;
    cfg.connect_timeout(std::time::Duration::from_secs(5));
    cfg.keepalives_idle(std::time::Duration::from_secs(10));
    cfg.application_name("slapos-master");
    cfg.connect(postgres::NoTls)
}

impl Store {
    /// Open (or create) the database file at `path`, configure it and migrate it. Files the
    /// group or others may read are refused ([`disk::prepare_files`]).
    pub fn open(path: &Path, now_ms: u64) -> std::result::Result<Self, OpenError> {
        Self::open_with(path, now_ms, false)
    }

    /// [`Store::open`]; with `fix_modes`, loose file modes are tightened to 0600 instead of
    /// refused (for a directory the caller owns, such as `standalone`'s).
    pub fn open_with(
        path: &Path,
        now_ms: u64,
        fix_modes: bool,
    ) -> std::result::Result<Self, OpenError> {
        disk::prepare_files(path, fix_modes)?;
        let conn = rusqlite::Connection::open(path).map_err(|source| open_error(path, source))?;
        Self::setup(conn, path, now_ms, Some(path.to_owned()))
    }

    /// A store in memory (tests, throw-away masters). Same code path as on disk.
    pub fn open_in_memory(now_ms: u64) -> std::result::Result<Self, OpenError> {
        let path = Path::new(":memory:");
        let conn =
            rusqlite::Connection::open_in_memory().map_err(|source| open_error(path, source))?;
        Self::setup(conn, path, now_ms, None)
    }

    /// Open the database `db` names (one connection).
    pub fn open_url(db: &DbUrl, now_ms: u64) -> std::result::Result<Self, OpenError> {
        match db {
            DbUrl::Sqlite(p) => Self::open(p, now_ms),
            DbUrl::Postgres(u) => Self::open_postgres(u, now_ms),
        }
    }

    /// A store on a PostgreSQL database (`postgres://user:pass@host:port/db`), migrated under
    /// an advisory lock so that replicas starting together migrate once.
    pub fn open_postgres(url: &str, now_ms: u64) -> std::result::Result<Self, OpenError> {
        let mut client = pg_connect(url).map_err(|source| OpenError::Postgres {
            url: redact(url),
            source,
        })?;
        schema::migrate_pg(&mut client, url, now_ms)?;
        Ok(Self {
            conn: Conn::postgres(client),
            touched: Vec::new(),
            reserve: disk::Reserve::new(None, 0),
            pg_url: Some(url.to_owned()),
            clock: wall_clock_ms,
        })
    }

    fn setup(
        mut conn: rusqlite::Connection,
        path: &Path,
        now_ms: u64,
        file: Option<PathBuf>,
    ) -> std::result::Result<Self, OpenError> {
        let cfg = |conn: &rusqlite::Connection| -> rusqlite::Result<()> {
            // WAL + FULL: see the module doc (Durability).
            let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            // No statement needs a temporary file (the reserve covers the database's own).
            conn.pragma_update(None, "temp_store", "MEMORY")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            stable_plans(conn)?;
            Ok(())
        };
        cfg(&conn).map_err(|source| open_error(path, source))?;
        schema::migrate(&mut conn, path, now_ms)?;
        let mut store = Self {
            conn: Conn::sqlite(conn),
            touched: Vec::new(),
            reserve: disk::Reserve::new(file, disk::RESERVE_BYTES),
            pg_url: None,
            clock: wall_clock_ms,
        };
        store.maintain();
        Ok(store)
    }

    /// Housekeeping between calls (the database thread runs it now and then): refill the space
    /// reserve ([`disk`]) while the filesystem has room. Failures are logged, never fatal.
    pub fn maintain(&mut self) {
        let Some(conn) = self.conn.as_sqlite() else {
            return;
        };
        match self.reserve.top_up(conn) {
            Ok(held) if held < disk::RESERVE_BYTES / 2 => tracing::debug!(
                held,
                "database space reserve below half (its filesystem is short of space)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("failed to refill the database space reserve: {e}"),
        }
    }

    /// Computers whose desired state changed in the transactions committed since the last call,
    /// with their new etag.
    pub fn take_touched(&mut self) -> Vec<(ComputerId, u64)> {
        std::mem::take(&mut self.touched)
    }

    /// Open a group commit ([`crate::db`]): the calls until [`Store::group_commit`] share one
    /// transaction, each in a savepoint of its own.
    pub fn group_begin(&mut self) -> Result<()> {
        self.conn.begin_group().op("begin a group commit")
    }

    /// Commit the group. On failure nothing of the group is kept, and the computers its calls
    /// touched are forgotten (nothing changed for their polls).
    pub fn group_commit(&mut self) -> Result<()> {
        let r = self.conn.end_group().op("commit a group of calls");
        if r.is_err() {
            self.touched.clear();
        }
        r
    }

    /// A read-only connection to the SQLite file at `path`, already migrated by its writer
    /// ([`crate::db::start_sqlite`]); writes through it fail.
    pub fn open_reader(path: &Path) -> std::result::Result<Self, OpenError> {
        let conn = rusqlite::Connection::open(path).map_err(|source| open_error(path, source))?;
        let cfg = |conn: &rusqlite::Connection| -> rusqlite::Result<()> {
            conn.pragma_update(None, "query_only", "ON")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            stable_plans(conn)?;
            Ok(())
        };
        cfg(&conn).map_err(|source| open_error(path, source))?;
        Ok(Self {
            conn: Conn::sqlite(conn),
            touched: Vec::new(),
            reserve: disk::Reserve::new(None, 0),
            pg_url: None,
            clock: wall_clock_ms,
        })
    }

    /// The underlying connection (diagnostics, tests, `migrate`).
    pub fn connection(&self) -> &Conn {
        &self.conn
    }

    /// The engine this store runs on.
    pub fn engine(&self) -> sql::Engine {
        self.conn.engine()
    }

    /// On PostgreSQL, a lost connection is replaced before the next call; a failure to
    /// reconnect is [`StoreError::Unavailable`] (the call is answered 503).
    fn ensure_connected(&mut self) -> Result<()> {
        let Some(url) = &self.pg_url else {
            return Ok(());
        };
        if !self.conn.is_closed() {
            return Ok(());
        }
        match pg_connect(url) {
            Ok(client) => {
                tracing::info!("reconnected to the database {}", redact(url));
                self.conn = Conn::postgres(client);
                Ok(())
            }
            Err(e) => Err(StoreError::Unavailable {
                op: "reconnect to the database",
                source: sql::SqlError::Pg(e),
            }),
        }
    }

    fn write(&mut self) -> Result<Tx<'_>> {
        self.ensure_connected()?;
        let tx = self.conn.begin(true).op("begin a write transaction")?;
        Ok(Tx::new(tx, &mut self.touched, (self.clock)()))
    }

    fn read(&mut self) -> Result<Tx<'_>> {
        self.ensure_connected()?;
        let tx = self.conn.begin(false).op("begin a read transaction")?;
        Ok(Tx::new(tx, &mut self.touched, (self.clock)()))
    }

    /// Replace the clock that floors new SQLite revisions (the wall clock in ms by default):
    /// tests pass a fixed one.
    pub fn set_clock(&mut self, clock: fn() -> u64) {
        self.clock = clock;
    }

    /// Every row of every table, as text (see [`dump`]), on either engine.
    pub fn dump(&self) -> String {
        dump_conn(&self.conn)
    }

    // ---------------------------------------------------------------------------------------
    // Computers

    /// Register or re-register a computer: labels are replaced, new partitions are appended in
    /// the given order, known ones keep their place and allocation, and known ones missing from
    /// the list are dropped when free and kept when allocated.
    pub fn register(&mut self, reg: &RegisterComputer, now_ms: u64) -> Result<ComputerInfo> {
        self.register_with(reg, now_ms, false)
    }

    /// [`Store::register`]; `from_this_host`: the registration came over a connection from
    /// this host, so the partitions' unix users ([`PartitionSpec::uid`]) are recorded (a uid
    /// belongs to one partition: the latest registration naming it wins). Otherwise they are
    /// cleared: a uid means something only on the master's own host.
    ///
    /// [`PartitionSpec::uid`]: slapos_proto::PartitionSpec::uid
    pub fn register_with(
        &mut self,
        reg: &RegisterComputer,
        now_ms: u64,
        from_this_host: bool,
    ) -> Result<ComputerInfo> {
        let mut tx = self.write()?;
        register_in(&mut tx, reg, now_ms)?;
        record_local_uids(&tx, reg, from_this_host)?;
        let info = computer_info(&tx, reg.id.as_str())?;
        tx.commit()?;
        Ok(info)
    }

    /// Every computer, in id order.
    pub fn computers(&mut self) -> Result<Vec<ComputerInfo>> {
        let tx = self.read()?;
        let ids: Vec<String> = rows(
            &tx,
            "list computers",
            "SELECT id FROM computer ORDER BY id",
            [],
            |r| r.get(0),
        )?;
        ids.iter().map(|c| computer_info(&tx, c)).collect()
    }

    /// One computer.
    pub fn computer(&mut self, c: &ComputerId) -> Result<ComputerInfo> {
        let tx = self.read()?;
        require_computer(&tx, c.as_str())?;
        computer_info(&tx, c.as_str())
    }

    // ---------------------------------------------------------------------------------------
    // Software releases

    /// Supply a release to a computer, or ask for its removal. Removing a release that an
    /// allocated instance uses is a conflict; removing one never supplied changes nothing.
    pub fn supply(&mut self, c: &ComputerId, req: &SupplyRequest) -> Result<SoftwareInfo> {
        let mut tx = self.write()?;
        let cs = c.as_str();
        let url = req.url.as_str();
        require_computer(&tx, cs)?;
        let current: Option<String> = tx
            .q_row(
                "SELECT requested FROM software WHERE computer = ?1 AND url = ?2",
                [cs, url],
                |r| r.get(0),
            )
            .optional()
            .op("look up a release")?;
        match (req.state, current.as_deref()) {
            (SupplyState::Available, None | Some("destroyed")) => {
                tx.exec(
                    "INSERT INTO software (computer, url, requested) VALUES (?1, ?2, 'available')
                     ON CONFLICT (computer, url) DO UPDATE SET requested = 'available'",
                    [cs, url],
                )
                .op("supply a release")?;
                tx.bump_computer(cs)?;
            }
            (SupplyState::Destroyed, Some("available")) => {
                let users = titles(
                    &tx,
                    "SELECT title FROM instance WHERE computer = ?1 AND software_url = ?2
                     ORDER BY id LIMIT 10",
                    params![cs, url],
                )?;
                if !users.is_empty() {
                    return Err(StoreError::Conflict(format!(
                        "cannot remove release {url} from computer {cs}: instances still use it \
                         ({}); destroy them first",
                        users.join(", ")
                    )));
                }
                tx.exec(
                    "UPDATE software SET requested = 'destroyed' WHERE computer = ?1 AND url = ?2",
                    [cs, url],
                )
                .op("remove a release")?;
                tx.bump_computer(cs)?;
            }
            (SupplyState::Destroyed, None) => {
                return Ok(SoftwareInfo {
                    url: req.url.clone(),
                    requested: SupplyState::Destroyed,
                    install: None,
                });
            }
            _ => {} // already as asked
        }
        let info = software_info(&tx, cs, url)?.ok_or_else(|| {
            StoreError::Internal(format!("release {url} on {cs} vanished in its transaction"))
        })?;
        tx.commit()?;
        Ok(info)
    }

    /// Record the node's install state of a release. `destroyed` for a release whose removal
    /// was asked deletes it from the computer.
    pub fn report_software(
        &mut self,
        c: &ComputerId,
        rep: &SoftwareReport,
        now_ms: u64,
    ) -> Result<()> {
        let mut tx = self.write()?;
        let cs = c.as_str();
        let url = rep.url.as_str();
        require_computer(&tx, cs)?;
        let requested: String = tx
            .q_row(
                "SELECT requested FROM software WHERE computer = ?1 AND url = ?2",
                [cs, url],
                |r| r.get(0),
            )
            .optional()
            .op("look up a release")?
            .ok_or_else(|| {
                StoreError::NotFound(format!("release {url} is not supplied to computer {cs}"))
            })?;
        if rep.state == InstallState::Destroyed && requested == "destroyed" {
            tx.exec(
                "DELETE FROM software WHERE computer = ?1 AND url = ?2",
                [cs, url],
            )
            .op("forget a removed release")?;
            tx.bump_computer(cs)?;
        } else {
            tx.exec(
                "UPDATE software SET install_state = ?3, install_message = ?4, install_ms = ?5,
                     parameter_model = CASE WHEN ?3 = 'available' THEN ?6 ELSE parameter_model END
                 WHERE computer = ?1 AND url = ?2",
                params![
                    cs,
                    url,
                    install_state_str(rep.state),
                    rep.message
                        .as_deref()
                        .map(|m| slapos_proto::text::xml_safe(m, MAX_REPORT_ERROR)),
                    ms(now_ms),
                    rep.parameter_model,
                ],
            )
            .op("record an install report")?;
        }
        touch_seen(&tx, cs, now_ms)?;
        tx.commit()
    }

    // ---------------------------------------------------------------------------------------
    // Desired state

    /// The desired state of a computer, or `None` when its etag still equals `known`.
    pub fn desired(&mut self, c: &ComputerId, known: Option<&str>) -> Result<Option<DesiredState>> {
        let tx = self.read()?;
        let cs = c.as_str();
        let etag = require_computer(&tx, cs)?.to_string();
        if known == Some(etag.as_str()) {
            return Ok(None);
        }
        let software = rows(
            &tx,
            "read releases",
            "SELECT url, requested FROM software WHERE computer = ?1 ORDER BY rowid",
            [cs],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
        )?
        .into_iter()
        .map(|(url, state)| {
            Ok(DesiredSoftware {
                url: decode(&url)?,
                state: supply_state(&state)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        // Children's connection parameters, keyed by the parent's partition; the shared
        // instances a partition requested are its children too (with what their host
        // published for them).
        let mut children: HashMap<String, BTreeMap<String, Params>> = HashMap::new();
        for (p, title, conn) in rows(
            &tx,
            "read children",
            "SELECT par.partition, ch.title, ch.connection FROM instance ch
             JOIN instance par ON ch.requester = par.id WHERE par.computer = ?1
             UNION ALL
             SELECT par.partition, s.title, s.connection FROM slap_shared s
             JOIN instance par ON s.requester = par.id WHERE par.computer = ?1
             UNION ALL
             SELECT par.partition, d.title, d.connection FROM delegation d
             JOIN instance par ON d.requester_id = par.id
              AND d.root = CASE WHEN par.root = '' THEN par.title ELSE par.root END
             WHERE par.computer = ?1",
            [cs],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                ))
            },
        )? {
            children
                .entry(p)
                .or_default()
                .insert(title, from_json(&conn)?);
        }
        let mut hosted = slap::hosted_shared(&tx, cs, None)?;
        let mut partitions = Vec::new();
        for (id, inst) in rows(
            &tx,
            "read partitions",
            &format!(
                "SELECT p.id, {} FROM partition p LEFT JOIN instance i
                 ON i.computer = p.computer AND i.partition = p.id
                 WHERE p.computer = ?1 ORDER BY p.seq",
                InstanceRow::COLUMNS_I
            ),
            [cs],
            |r| {
                let inst = match r.get::<Option<i64>>(1)? {
                    Some(_) => Some(InstanceRow::from_row(r, 1)?),
                    None => None,
                };
                Ok((r.get::<String>(0)?, inst))
            },
        )? {
            let instance = match inst {
                None => None,
                Some(i) => {
                    let kids = children.remove(&i.partition).unwrap_or_default();
                    let mut a = i.assignment(kids)?;
                    a.shared = hosted
                        .remove(&i.id)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|e| SharedInstance {
                            parameters: slap::shared_params(&e.parameters),
                            reference: e.reference,
                            software_type: e.software_type,
                        })
                        .collect();
                    Some(a)
                }
            };
            partitions.push(DesiredPartition {
                id: decode(&id)?,
                instance,
            });
        }
        Ok(Some(DesiredState {
            computer: c.clone(),
            etag,
            software,
            partitions,
        }))
    }

    // ---------------------------------------------------------------------------------------
    // Node reports about partitions

    /// Record what the node did with a partition. A `destroyed` report for an instance whose
    /// requested state is `destroyed` frees the partition, unless the instance still has
    /// children (here or delegated to another master): they are then marked destroyed (the
    /// delegated ones below it too, to be forwarded) and the partition is freed on a later report,
    /// after the last child is gone (the parent's revision is bumped at that moment so the node
    /// reports again).
    pub fn report_partition(
        &mut self,
        c: &ComputerId,
        p: &PartitionId,
        rep: &PartitionReport,
        now_ms: u64,
    ) -> Result<ReportAck> {
        let mut tx = self.write()?;
        let (cs, ps) = (c.as_str(), p.as_str());
        require_partition(&tx, cs, ps)?;
        touch_seen(&tx, cs, now_ms)?;
        let Some(inst) = instance_on(&tx, cs, ps)? else {
            if rep.state == InstanceState::Destroyed {
                tx.commit()?;
                return Ok(ReportAck {
                    freed: true,
                    waiting_for: Vec::new(),
                });
            }
            return Err(StoreError::Conflict(format!(
                "partition {cs}/{ps} is free: a {} report is only accepted for an allocated \
                 partition",
                rep.state.as_str()
            )));
        };
        let status = ReportedStatus {
            report: clean_report(rep),
            at_ms: now_ms,
        };
        tx.exec(
            "UPDATE instance SET reported = ?2 WHERE id = ?1",
            params![inst.id, to_json(&status)?],
        )
        .op("record a partition report")?;
        let mut ack = ReportAck {
            freed: false,
            waiting_for: Vec::new(),
        };
        if rep.state == InstanceState::Destroyed && inst.state == InstanceState::Destroyed.as_str()
        {
            let kids = children(&tx, inst.id)?;
            if kids.is_empty() {
                tx.exec("DELETE FROM instance WHERE id = ?1", [inst.id])
                    .op("free a partition")?;
                tx.bump_computer(cs)?;
                if let Some(parent) = inst.requester {
                    tx.bump_instance(parent)?;
                }
                ack.freed = true;
            } else {
                destroy_subtree(&mut tx, &inst)?;
                federation::destroy_below(&mut tx, inst.id)?;
                ack.waiting_for = kids.iter().map(|t| decode(t)).collect::<Result<_>>()?;
            }
        }
        tx.commit()?;
        Ok(ack)
    }

    /// Store the connection parameters a partition publishes; when they changed, bump the
    /// revision of the instance that requested it, so the parent re-renders with them.
    pub fn publish_connection(
        &mut self,
        c: &ComputerId,
        p: &PartitionId,
        params: &Params,
        now_ms: u64,
    ) -> Result<()> {
        self.publish(
            c,
            p,
            &ConnectionPublish {
                parameters: params.clone(),
                shared: BTreeMap::new(),
            },
            now_ms,
        )
    }

    /// [`Store::publish_connection`], and what a host publishes for each shared instance it
    /// serves (by `slave_reference`, unknown ones ignored), in one transaction.
    pub fn publish(
        &mut self,
        c: &ComputerId,
        p: &PartitionId,
        conn: &ConnectionPublish,
        now_ms: u64,
    ) -> Result<()> {
        let params = &conn.parameters;
        storable(slapos_proto::text::check_params(
            "connection parameters",
            params,
        ))?;
        for (reference, shared) in &conn.shared {
            storable(slapos_proto::text::check_text(
                "a slave_reference",
                reference,
            ))?;
            storable(slapos_proto::text::check_params(
                "shared connection parameters",
                shared,
            ))?;
        }
        let mut tx = self.write()?;
        let (cs, ps) = (c.as_str(), p.as_str());
        let inst = allocated_instance(&tx, cs, ps, "publish connection parameters")?;
        touch_seen(&tx, cs, now_ms)?;
        if from_json::<Params>(&inst.connection)? != *params {
            tx.exec(
                "UPDATE instance SET connection = ?2 WHERE id = ?1",
                params![inst.id, to_json(params)?],
            )
            .op("store connection parameters")?;
            if let Some(parent) = inst.requester {
                tx.bump_instance(parent)?;
            }
        }
        for (reference, shared) in &conn.shared {
            slap::publish_shared_in(&mut tx, cs, ps, reference, shared)?;
        }
        tx.commit()
    }

    /// A partition signals a problem: record the message and bump every instance of its tree.
    /// Returns how many instances were bumped.
    pub fn bang(
        &mut self,
        c: &ComputerId,
        p: &PartitionId,
        message: &str,
        now_ms: u64,
    ) -> Result<usize> {
        if message.len() > MAX_BANG {
            return Err(StoreError::Invalid(format!(
                "bang message must be at most {MAX_BANG} bytes"
            )));
        }
        storable(slapos_proto::text::check_text("the bang message", message))?;
        let mut tx = self.write()?;
        let (cs, ps) = (c.as_str(), p.as_str());
        let inst = allocated_instance(&tx, cs, ps, "bang")?;
        touch_seen(&tx, cs, now_ms)?;
        tx.exec(
            "UPDATE instance SET bang = ?2 WHERE id = ?1",
            params![inst.id, message],
        )
        .op("record a bang")?;
        let ids = ids(
            &tx,
            "SELECT id FROM instance WHERE (root = '' AND title = ?1) OR root = ?1",
            [inst.root_title()],
        )?;
        for id in &ids {
            tx.bump_instance(*id)?;
        }
        tx.commit()?;
        Ok(ids.len())
    }

    // ---------------------------------------------------------------------------------------
    // Instances

    /// Request an instance, as a user (`from = None`: a root instance) or as the instance
    /// allocated on partition `from` (a child in that instance's tree). Idempotent by
    /// `(title, tree)`: an identical request changes nothing.
    pub fn request(
        &mut self,
        req: &InstanceRequest,
        from: Option<&PartitionRef>,
        now_ms: u64,
    ) -> Result<InstanceInfo> {
        self.request_with(req, from, now_ms, RequestRules::NATIVE)
    }

    /// [`Store::request`] under explicit [`RequestRules`] (the SLAP routes relax two of them).
    pub fn request_with(
        &mut self,
        req: &InstanceRequest,
        from: Option<&PartitionRef>,
        now_ms: u64,
        rules: RequestRules,
    ) -> Result<InstanceInfo> {
        self.request_as(req, from, None, now_ms, rules)
    }

    /// [`Store::request_with`], recording `owner` (e.g. `user:alice`) on a new root instance.
    /// The caller has checked with [`crate::auth::allow`] that its identity may request this
    /// title (see [`Store::root_owner`]); the single database thread keeps that check and this
    /// write in order.
    pub fn request_as(
        &mut self,
        req: &InstanceRequest,
        from: Option<&PartitionRef>,
        owner: Option<&str>,
        now_ms: u64,
        rules: RequestRules,
    ) -> Result<InstanceInfo> {
        let sla = Sla::parse(&req.sla)?;
        storable(slapos_proto::text::check_params(
            "instance parameters",
            &req.parameters,
        ))?;
        let mut tx = self.write()?;
        if req.state != Some(InstanceState::Destroyed) {
            let url = req.software_url.as_str();
            let model: Option<String> = tx
                .q_row(RELEASE_MODEL, [url], |r| r.get(0))
                .optional()
                .op("look up the release's parameter model")?;
            if let Some(m) = model {
                models::check(&m, url, &req.parameters)?;
            }
        }
        let requester = requester_instance(&tx, from)?;
        // '' for a root instance, else the title of the requester's tree root.
        let root = requester
            .as_ref()
            .map(|r| r.root_title().to_owned())
            .unwrap_or_default();
        let root_state: Option<InstanceState> = if root.is_empty() {
            None
        } else {
            tx.q_row(
                "SELECT state FROM instance WHERE root = '' AND title = ?1",
                [&root],
                |r| r.get::<String>(0),
            )
            .optional()
            .op("look up the tree root")?
            .map(|s| instance_state(&s))
            .transpose()?
        };
        let title = req.title.as_str();
        let existing = tx
            .q_row(
                &format!(
                    "SELECT {} FROM instance WHERE root = ?1 AND title = ?2",
                    InstanceRow::COLUMNS
                ),
                [&root, title],
                |r| InstanceRow::from_row(r, 0),
            )
            .optional()
            .op("look up an instance")?;
        let id = match existing {
            Some(e) => update_instance(&mut tx, e, req, requester.as_ref(), root_state, rules)?,
            None => {
                let mut state = req.state.unwrap_or_default();
                if state == InstanceState::Destroyed {
                    return Err(StoreError::NotFound(format!(
                        "instance {title:?} does not exist{}: nothing to destroy",
                        tree_suffix(&root)
                    )));
                }
                if let Some(r) = &requester
                    && r.state == InstanceState::Destroyed.as_str()
                {
                    return Err(StoreError::Conflict(format!(
                        "instance {:?} is being destroyed and cannot request new instances",
                        r.title
                    )));
                }
                match root_state {
                    Some(InstanceState::Destroyed) => {
                        return Err(StoreError::Conflict(format!(
                            "tree {root:?} is being destroyed: no new instance {title:?} in it"
                        )));
                    }
                    Some(InstanceState::Stopped) => state = InstanceState::Stopped,
                    _ => {}
                }
                let (computer, partition) =
                    allocate(&tx, &req.software_url, &sla, title, rules.require_supply)?;
                let seq = tx.seq()?;
                let id: i64 = tx
                    .q_row(
                        "INSERT INTO instance (title, root, requester, software_url, software_type,
                         parameters, state, computer, partition, revision, created_ms, owner)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id",
                        params![
                            title,
                            root,
                            requester.as_ref().map(|r| r.id),
                            req.software_url.as_str(),
                            req.software_type.as_str(),
                            to_json(&req.parameters)?,
                            state.as_str(),
                            computer,
                            partition,
                            seq,
                            ms(now_ms),
                            if root.is_empty() { owner } else { None }
                        ],
                        |r| r.get(0),
                    )
                    .op("insert an instance")?;
                tx.bump_instance(id)?;
                if let Some(r) = &requester {
                    tx.bump_instance(r.id)?; // its children map gained an entry
                }
                id
            }
        };
        let info = instance_info_by_id(&tx, id)?;
        tx.commit()?;
        Ok(info)
    }

    /// Every instance, roots and children, in creation order.
    pub fn instances(&mut self) -> Result<Vec<InstanceInfo>> {
        let tx = self.read()?;
        let rows = rows(
            &tx,
            "list instances",
            &format!("SELECT {} FROM instance ORDER BY id", InstanceRow::COLUMNS),
            [],
            |r| InstanceRow::from_row(r, 0),
        )?;
        let by_id: HashMap<i64, &InstanceRow> = rows.iter().map(|r| (r.id, r)).collect();
        let mut kids: HashMap<i64, Vec<String>> = HashMap::new();
        for r in &rows {
            if let Some(p) = r.requester {
                kids.entry(p).or_default().push(r.title.clone());
            }
        }
        rows.iter()
            .map(|r| {
                let requester = r
                    .requester
                    .and_then(|p| by_id.get(&p))
                    .map(|p| format!("{}/{}", p.computer, p.partition));
                r.info(requester, kids.remove(&r.id).unwrap_or_default())
            })
            .collect()
    }

    /// What `GET /metrics` counts, in two queries whatever the fleet's size: each computer's
    /// last contact, and each instance's computer, requested state, reported state and failing
    /// promises.
    pub fn fleet_summary(&mut self) -> Result<FleetSummary> {
        let tx = self.read()?;
        let computers = rows(
            &tx,
            "list computers' last contact",
            "SELECT id, last_seen_ms FROM computer ORDER BY id",
            [],
            |r| Ok((r.get::<String>(0)?, r.get::<Option<i64>>(1)?)),
        )?
        .into_iter()
        .map(|(id, seen)| (id, seen.and_then(|v| u64::try_from(v).ok())))
        .collect();
        let instances = rows(
            &tx,
            "list instances' states",
            "SELECT computer, state, reported FROM instance ORDER BY id",
            [],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<Option<String>>(2)?,
                ))
            },
        )?
        .into_iter()
        .map(|(computer, requested, reported)| {
            let reported: Option<ReportedStatus> =
                reported.as_deref().map(from_json).transpose()?;
            Ok(FleetInstance {
                computer,
                requested,
                reported: reported
                    .as_ref()
                    .map(|r| r.report.state.as_str().to_owned()),
                failing_promises: reported
                    .as_ref()
                    .map_or(0, |r| r.report.promises.iter().filter(|p| !p.ok).count()),
            })
        })
        .collect::<Result<_>>()?;
        Ok(FleetSummary {
            computers,
            instances,
        })
    }

    /// One instance: a root by title (`root = None`), or a child by title within `root`'s tree.
    pub fn instance(
        &mut self,
        title: &InstanceTitle,
        root: Option<&InstanceTitle>,
    ) -> Result<InstanceInfo> {
        let tx = self.read()?;
        let root = root.map(InstanceTitle::as_str).unwrap_or("");
        instance_or_shared(&tx, title.as_str(), root)
    }

    /// Change the requested state of a root instance and of its whole tree.
    pub fn set_state(
        &mut self,
        title: &InstanceTitle,
        state: InstanceState,
    ) -> Result<InstanceInfo> {
        if let Some(info) = self.set_delegated_state(title.as_str(), state)? {
            return Ok(info);
        }
        let mut tx = self.write()?;
        let id = find_instance(&tx, title.as_str(), "")?;
        set_tree_state(&mut tx, title.as_str(), state)?;
        let info = instance_info_by_id(&tx, id)?;
        tx.commit()?;
        Ok(info)
    }
}

// -------------------------------------------------------------------------------------------
// Transactions

/// A transaction that stamps revisions and etags with one counter value and reports the
/// computers it touched once committed.
struct Tx<'c> {
    tx: Transaction<'c>,
    seq: Option<i64>,
    /// The floor of this transaction's revision on SQLite (the clock when it began, in ms).
    floor: i64,
    touched: BTreeMap<String, i64>,
    sink: &'c mut Vec<(ComputerId, u64)>,
}

impl<'c> Deref for Tx<'c> {
    type Target = Transaction<'c>;
    fn deref(&self) -> &Transaction<'c> {
        &self.tx
    }
}

impl<'c> Tx<'c> {
    fn new(tx: Transaction<'c>, sink: &'c mut Vec<(ComputerId, u64)>, floor_ms: u64) -> Self {
        Self {
            tx,
            seq: None,
            floor: i64::try_from(floor_ms).unwrap_or(i64::MAX / 2),
            touched: BTreeMap::new(),
            sink,
        }
    }

    /// The counter value of this transaction, taken on first use.
    ///
    /// On SQLite the counter also never falls behind the store's clock (the wall clock in ms,
    /// read when the transaction began: `max(value + 1, now)`): a revision is then a time no
    /// earlier than the change, as
    /// slapproxy's `timestamp` (`time.time()` of the change) is, which SLAP clients compare
    /// with their own clock. Still strictly increasing (the single writer holds the row).
    /// PostgreSQL keeps the plain sequence: a `setval` there could hand two replicas the
    /// same value.
    fn seq(&mut self) -> Result<i64> {
        if let Some(s) = self.seq {
            return Ok(s);
        }
        let s = match self.tx.engine() {
            sql::Engine::Sqlite => self.tx.q_row(
                "UPDATE meta SET value = max(value + 1, ?1) WHERE key = 'seq' RETURNING value",
                params![self.floor],
                |r| r.get(0),
            ),
            sql::Engine::Postgres => self
                .tx
                .q_row("SELECT nextval('revision_seq')", [], |r| r.get(0)),
        }
        .op("advance the revision counter")?;
        self.seq = Some(s);
        Ok(s)
    }

    /// The desired state of computer `c` changed.
    fn bump_computer(&mut self, c: &str) -> Result<()> {
        let s = self.seq()?;
        if self.touched.contains_key(c) {
            return Ok(());
        }
        self.tx
            .exec("UPDATE computer SET etag = ?2 WHERE id = ?1", params![c, s])
            .op("bump a computer etag")?;
        self.touched.insert(c.to_owned(), s);
        Ok(())
    }

    /// The assignment of instance `id` changed: new revision, and its computer's etag.
    fn bump_instance(&mut self, id: i64) -> Result<()> {
        let s = self.seq()?;
        let c: Option<String> = self
            .tx
            .q_row(
                "UPDATE instance SET revision = ?2 WHERE id = ?1 RETURNING computer",
                params![id, s],
                |r| r.get(0),
            )
            .optional()
            .op("bump an instance revision")?;
        match c {
            Some(c) => self.bump_computer(&c),
            None => Ok(()),
        }
    }

    fn commit(self) -> Result<()> {
        if self.tx.engine() == sql::Engine::Postgres {
            // Delivered to every replica's listener when (and only if) this commits.
            for (c, etag) in &self.touched {
                self.tx
                    .exec(
                        "SELECT pg_notify(?1, ?2)",
                        params![NOTIFY_CHANNEL, format!("{c} {etag}")],
                    )
                    .op("announce a change")?;
            }
        }
        self.tx.commit().op("commit")?;
        for (c, etag) in self.touched {
            let id = ComputerId::parse(c)
                .map_err(|e| StoreError::Internal(format!("stored computer id is invalid: {e}")))?;
            self.sink.push((id, etag as u64));
        }
        Ok(())
    }
}

// -------------------------------------------------------------------------------------------
// Rows and conversions

/// One `instance` row.
#[derive(Debug, Clone)]
struct InstanceRow {
    id: i64,
    title: String,
    root: String,
    requester: Option<i64>,
    software_url: String,
    software_type: String,
    parameters: String,
    state: String,
    computer: String,
    partition: String,
    connection: String,
    reported: Option<String>,
    bang: Option<String>,
    revision: i64,
}

impl InstanceRow {
    const COLUMNS: &'static str = "id, title, root, requester, software_url, software_type, \
        parameters, state, computer, partition, connection, reported, bang, revision";
    const COLUMNS_I: &'static str = "i.id, i.title, i.root, i.requester, i.software_url, \
        i.software_type, i.parameters, i.state, i.computer, i.partition, i.connection, \
        i.reported, i.bang, i.revision";

    fn from_row(r: &Row, at: usize) -> sql::SqlResult<Self> {
        Ok(Self {
            id: r.get(at)?,
            title: r.get(at + 1)?,
            root: r.get(at + 2)?,
            requester: r.get(at + 3)?,
            software_url: r.get(at + 4)?,
            software_type: r.get(at + 5)?,
            parameters: r.get(at + 6)?,
            state: r.get(at + 7)?,
            computer: r.get(at + 8)?,
            partition: r.get(at + 9)?,
            connection: r.get(at + 10)?,
            reported: r.get(at + 11)?,
            bang: r.get(at + 12)?,
            revision: r.get(at + 13)?,
        })
    }

    /// Title of the tree root (itself for a root).
    fn root_title(&self) -> &str {
        if self.root.is_empty() {
            &self.title
        } else {
            &self.root
        }
    }

    fn assignment(&self, children: BTreeMap<String, Params>) -> Result<Assignment> {
        Ok(Assignment {
            title: decode(&self.title)?,
            root_title: decode(self.root_title())?,
            software_url: decode(&self.software_url)?,
            software_type: decode(&self.software_type)?,
            parameters: from_json(&self.parameters)?,
            state: instance_state(&self.state)?,
            revision: self.revision as u64,
            children,
            shared: Vec::new(),
        })
    }

    fn info(&self, requester: Option<String>, children: Vec<String>) -> Result<InstanceInfo> {
        Ok(InstanceInfo {
            title: decode(&self.title)?,
            root_title: decode(self.root_title())?,
            requester,
            software_url: decode(&self.software_url)?,
            software_type: decode::<SoftwareType>(&self.software_type)?,
            parameters: from_json(&self.parameters)?,
            state: instance_state(&self.state)?,
            computer: decode(&self.computer)?,
            partition: decode(&self.partition)?,
            connection: from_json(&self.connection)?,
            reported: self.reported.as_deref().map(from_json).transpose()?,
            bang: self.bang.clone(),
            revision: self.revision as u64,
            children: children.iter().map(|t| decode(t)).collect::<Result<_>>()?,
            shared: false,
        })
    }
}

/// Parse a validated id read back from the database; failure means a corrupted row.
fn decode<T: FromStr<Err = slapos_proto::IdError>>(s: &str) -> Result<T> {
    T::from_str(s).map_err(|e| StoreError::Internal(format!("stored value is invalid: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s)
        .map_err(|e| StoreError::Internal(format!("stored JSON is invalid: {e}: {s:.80}")))
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(format!("JSON encoding failed: {e}")))
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn instance_state(s: &str) -> Result<InstanceState> {
    s.parse()
        .map_err(|e| StoreError::Internal(format!("stored state is invalid: {e}")))
}

fn supply_state(s: &str) -> Result<SupplyState> {
    match s {
        "available" => Ok(SupplyState::Available),
        "destroyed" => Ok(SupplyState::Destroyed),
        other => Err(StoreError::Internal(format!(
            "stored supply state is invalid: {other:?}"
        ))),
    }
}

fn install_state_str(s: InstallState) -> &'static str {
    match s {
        InstallState::Building => "building",
        InstallState::Available => "available",
        InstallState::Error => "error",
        InstallState::Destroyed => "destroyed",
    }
}

fn install_state(s: &str) -> Result<InstallState> {
    Ok(match s {
        "building" => InstallState::Building,
        "available" => InstallState::Available,
        "error" => InstallState::Error,
        "destroyed" => InstallState::Destroyed,
        other => {
            return Err(StoreError::Internal(format!(
                "stored install state is invalid: {other:?}"
            )));
        }
    })
}

fn tree_suffix(root: &str) -> String {
    if root.is_empty() {
        String::new()
    } else {
        format!(" in tree {root:?}")
    }
}

// -------------------------------------------------------------------------------------------
// Queries shared by several operations

/// The etag of computer `c`, or 404.
fn require_computer(tx: &Transaction<'_>, c: &str) -> Result<i64> {
    tx.q_row("SELECT etag FROM computer WHERE id = ?1", [c], |r| r.get(0))
        .optional()
        .op("look up a computer")?
        .ok_or_else(|| StoreError::NotFound(format!("computer {c} is not registered")))
}

fn require_partition(tx: &Transaction<'_>, c: &str, p: &str) -> Result<()> {
    require_computer(tx, c)?;
    tx.q_row(
        "SELECT 1 FROM partition WHERE computer = ?1 AND id = ?2",
        [c, p],
        |_| Ok(()),
    )
    .optional()
    .op("look up a partition")?
    .ok_or_else(|| StoreError::NotFound(format!("partition {p} is not registered on computer {c}")))
}

/// The instance on the requesting partition `from` (`None` for a user's request): 404 for an
/// unknown partition, 403 for a free one.
fn requester_instance(
    tx: &Transaction<'_>,
    from: Option<&PartitionRef>,
) -> Result<Option<InstanceRow>> {
    let Some(who) = from else {
        return Ok(None);
    };
    let (cs, ps) = (who.computer.as_str(), who.partition.as_str());
    if tx
        .q_row(
            "SELECT 1 FROM partition WHERE computer = ?1 AND id = ?2",
            [cs, ps],
            |_| Ok(()),
        )
        .optional()
        .op("look up the requesting partition")?
        .is_none()
    {
        return Err(StoreError::NotFound(format!(
            "requesting partition {who} is not registered"
        )));
    }
    Ok(Some(instance_on(tx, cs, ps)?.ok_or_else(|| {
        StoreError::Forbidden(format!(
            "partition {who} holds no instance, so it cannot request instances"
        ))
    })?))
}

fn instance_on(tx: &Transaction<'_>, c: &str, p: &str) -> Result<Option<InstanceRow>> {
    tx.q_row(
        &format!(
            "SELECT {} FROM instance WHERE computer = ?1 AND partition = ?2",
            InstanceRow::COLUMNS
        ),
        [c, p],
        |r| InstanceRow::from_row(r, 0),
    )
    .optional()
    .op("look up the instance of a partition")
}

/// The instance on `c/p` for a call that needs one (`what` names the call): 404 for an unknown
/// partition, 409 for a free one.
fn allocated_instance(tx: &Transaction<'_>, c: &str, p: &str, what: &str) -> Result<InstanceRow> {
    require_partition(tx, c, p)?;
    instance_on(tx, c, p)?.ok_or_else(|| {
        StoreError::Conflict(format!(
            "partition {c}/{p} is free: only an allocated partition can {what}"
        ))
    })
}

fn find_instance(tx: &Transaction<'_>, title: &str, root: &str) -> Result<i64> {
    tx.q_row(
        "SELECT id FROM instance WHERE root = ?1 AND title = ?2",
        [root, title],
        |r| r.get(0),
    )
    .optional()
    .op("look up an instance")?
    .ok_or_else(|| {
        StoreError::NotFound(format!(
            "no instance {title:?}{}",
            if root.is_empty() {
                " (a root instance; pass root=TITLE for a child)".to_owned()
            } else {
                tree_suffix(root)
            }
        ))
    })
}

/// The instance `(title, root)`, else the shared instance of that key.
fn instance_or_shared(tx: &Transaction<'_>, title: &str, root: &str) -> Result<InstanceInfo> {
    match find_instance(tx, title, root) {
        Ok(id) => instance_info_by_id(tx, id),
        Err(StoreError::NotFound(e)) => match slap::shared_info(tx, title, root)? {
            Some(info) => Ok(info),
            None => federation::delegation_info(tx, title, root)?.ok_or(StoreError::NotFound(e)),
        },
        Err(e) => Err(e),
    }
}

fn instance_info_by_id(tx: &Transaction<'_>, id: i64) -> Result<InstanceInfo> {
    let row = tx
        .q_row(
            &format!(
                "SELECT {} FROM instance WHERE id = ?1",
                InstanceRow::COLUMNS
            ),
            [id],
            |r| InstanceRow::from_row(r, 0),
        )
        .op("read an instance")?;
    let requester = match row.requester {
        None => None,
        Some(p) => tx
            .q_row(
                "SELECT computer || '/' || partition FROM instance WHERE id = ?1",
                [p],
                |r| r.get(0),
            )
            .optional()
            .op("read a requester")?,
    };
    let kids = titles(
        tx,
        "SELECT title FROM instance WHERE requester = ?1 ORDER BY id",
        [id],
    )?;
    row.info(requester, kids)
}

/// Run `sql` and map every row with `f`; `op` names the operation in errors.
/// [`Store::register`] inside the caller's write transaction (the SLAP format adds its address
/// rows to the same transaction).
/// Record (or clear) the local uids of `reg`'s partitions (see [`Store::register_with`]).
fn record_local_uids(tx: &Tx<'_>, reg: &RegisterComputer, from_this_host: bool) -> Result<()> {
    let c = reg.id.as_str();
    for spec in &reg.partitions {
        let uid = spec.uid.filter(|_| from_this_host);
        if let Some(u) = uid {
            tx.exec(
                "UPDATE partition SET local_uid = NULL
                 WHERE local_uid = ?1 AND NOT (computer = ?2 AND id = ?3)",
                params![u, c, spec.id.as_str()],
            )
            .op("record a partition's local user")?;
        }
        tx.exec(
            "UPDATE partition SET local_uid = ?3 WHERE computer = ?1 AND id = ?2
               AND local_uid IS DISTINCT FROM ?3",
            params![c, spec.id.as_str(), uid],
        )
        .op("record a partition's local user")?;
    }
    Ok(())
}

fn register_in(tx: &mut Tx<'_>, reg: &RegisterComputer, now_ms: u64) -> Result<()> {
    validate_registration(reg)?;
    let c = reg.id.as_str();
    let existed = tx
        .q_row("SELECT 1 FROM computer WHERE id = ?1", [c], |_| Ok(()))
        .optional()
        .op("look up a computer")?
        .is_some();
    tx.exec(
        "INSERT INTO computer (id, etag, registered_ms, last_seen_ms) VALUES (?1, 0, ?2, ?2)
         ON CONFLICT (id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
        params![c, ms(now_ms)],
    )
    .op("insert a computer")?;
    if labels(tx, c)? != reg.labels {
        tx.exec("DELETE FROM label WHERE computer = ?1", [c])
            .op("replace labels")?;
        for (k, v) in &reg.labels {
            tx.exec(
                "INSERT INTO label (computer, key, value) VALUES (?1, ?2, ?3)",
                params![c, k.as_str(), v],
            )
            .op("replace labels")?;
        }
    }
    // Known partitions: id -> ((addresses, interface), allocated).
    type Known = ((String, Option<String>), bool);
    let mut known: HashMap<String, Known> = rows(
        tx,
        "list partitions",
        "SELECT p.id, p.addresses, p.interface, EXISTS (SELECT 1 FROM instance i
             WHERE i.computer = p.computer AND i.partition = p.id)
         FROM partition p WHERE p.computer = ?1",
        [c],
        |r| Ok((r.get(0)?, ((r.get(1)?, r.get(2)?), r.get(3)?))),
    )?
    .into_iter()
    .collect();
    let mut changed = !existed;
    {
        const INSERT: &str = "INSERT INTO partition (computer, id, addresses, interface)
                              VALUES (?1, ?2, ?3, ?4)";
        const UPDATE: &str = "UPDATE partition SET addresses = ?3, interface = ?4
                              WHERE computer = ?1 AND id = ?2";
        for spec in &reg.partitions {
            let addresses = to_json(&spec.addresses)?;
            let iface = spec.interface.as_deref();
            match known.remove(spec.id.as_str()) {
                None => {
                    tx.exec(INSERT, params![c, spec.id.as_str(), addresses, iface])
                        .op("insert a partition")?;
                    changed = true;
                }
                Some(((old, old_iface), _))
                    if old != addresses || old_iface.as_deref() != iface =>
                {
                    tx.exec(UPDATE, params![c, spec.id.as_str(), addresses, iface])
                        .op("update a partition")?;
                }
                Some(_) => {}
            }
        }
        for (id, (_, allocated)) in known {
            if allocated {
                tracing::warn!(
                    computer = c,
                    partition = id,
                    "re-registration omits an allocated partition; it is kept until freed"
                );
            } else {
                tx.exec(
                    "DELETE FROM partition WHERE computer = ?1 AND id = ?2",
                    params![c, id],
                )
                .op("drop a partition")?;
                changed = true;
            }
        }
    }
    if changed {
        tx.bump_computer(c)?;
    }
    Ok(())
}

/// Prepared statements kept per SQLite connection: every distinct statement the store runs
/// fits. A request runs about a dozen statements; compiling each one anew cost more than running
/// it (slap-bench, see docs/slap.md), so every store statement goes through the cache
/// ([`sql::Conn`] prepares through it; PostgreSQL keeps its own map).
const STATEMENT_CACHE: usize = 256;

/// Make a cached statement's plan independent of the values bound to it (SQLite's query
/// planner stability guarantee, `SQLITE_DBCONFIG_ENABLE_QPSG`).
///
/// Without it, SQLite may look at the values bound to a statement's parameters while
/// planning (to match a partial index's condition, among others), records which parameters it
/// looked at, and marks the statement expired whenever one of them is bound again, even to the
/// same value: the next run compiles it anew (`sqlite3Reprepare`). The statement cache clears
/// the bindings of every statement it takes back, so such a statement was compiled again on
/// every use. On the new-request path these were the children lookup of
/// `instance_info_by_id` and the free-partition search (`allocate`): about a sixth of the
/// writer thread's CPU per request (perf, `fleet-sim`, one requester). Every condition a
/// partial index relies on is written as a literal in the statements that use it
/// (`p.busy = 0`, `parameter_model IS NOT NULL`), no statement matches a parameter with
/// `LIKE`/`GLOB`, and the store runs no `ANALYZE`: the plans are the same, compiled once
/// (`plan_tests`).
fn stable_plans(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

fn rows<T>(
    tx: &Transaction<'_>,
    op: &'static str,
    sql: &str,
    p: impl sql::Params,
    f: impl FnMut(&Row) -> sql::SqlResult<T>,
) -> Result<Vec<T>> {
    tx.query_map(sql, p, f).op(op)
}

fn titles(tx: &Transaction<'_>, sql: &str, p: impl sql::Params) -> Result<Vec<String>> {
    rows(tx, "list titles", sql, p, |r| r.get(0))
}

/// The titles of the children of instance `id`: the instances it requested here, then the
/// requests it delegated to other masters (both keep a destroyed parent's partition).
fn children(tx: &Transaction<'_>, id: i64) -> Result<Vec<String>> {
    let mut kids = titles(
        tx,
        "SELECT title FROM instance WHERE requester = ?1 ORDER BY id",
        [id],
    )?;
    kids.extend(federation::children(tx, id)?);
    Ok(kids)
}

fn ids(tx: &Transaction<'_>, sql: &str, p: impl sql::Params) -> Result<Vec<i64>> {
    rows(tx, "list instance ids", sql, p, |r| r.get(0))
}

fn touch_seen(tx: &Transaction<'_>, c: &str, now_ms: u64) -> Result<()> {
    tx.exec(
        "UPDATE computer SET last_seen_ms = ?2 WHERE id = ?1",
        params![c, ms(now_ms)],
    )
    .op("record the node's last contact")?;
    Ok(())
}

/// `requested, install_state, install_message, parameter_model` of a `software` row.
type SoftwareColumns = (String, Option<String>, Option<String>, Option<String>);

fn software_info(tx: &Transaction<'_>, c: &str, url: &str) -> Result<Option<SoftwareInfo>> {
    let row: Option<SoftwareColumns> = tx
        .q_row(
            "SELECT requested, install_state, install_message, parameter_model FROM software
             WHERE computer = ?1 AND url = ?2",
            [c, url],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .op("read a release")?;
    row.map(|(req, st, msg, model)| software_from(url, &req, st.as_deref(), msg, model))
        .transpose()
}

fn software_from(
    url: &str,
    requested: &str,
    install: Option<&str>,
    message: Option<String>,
    parameter_model: Option<String>,
) -> Result<SoftwareInfo> {
    let url: SoftwareUrl = decode(url)?;
    Ok(SoftwareInfo {
        url: url.clone(),
        requested: supply_state(requested)?,
        install: match install {
            None => None,
            Some(s) => Some(SoftwareReport {
                url,
                state: install_state(s)?,
                message,
                parameter_model,
            }),
        },
    })
}

fn labels(tx: &Transaction<'_>, c: &str) -> Result<BTreeMap<LabelKey, String>> {
    rows(
        tx,
        "read labels",
        "SELECT key, value FROM label WHERE computer = ?1",
        [c],
        |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
    )?
    .into_iter()
    .map(|(k, v)| Ok((decode::<LabelKey>(&k)?, v)))
    .collect()
}

fn computer_info(tx: &Transaction<'_>, c: &str) -> Result<ComputerInfo> {
    let last_seen: Option<i64> = tx
        .q_row(
            "SELECT last_seen_ms FROM computer WHERE id = ?1",
            [c],
            |r| r.get(0),
        )
        .op("read a computer")?;
    let labels = labels(tx, c)?;
    let partitions = rows(
        tx,
        "read partitions",
        "SELECT p.id, p.addresses, i.title FROM partition p LEFT JOIN instance i
         ON i.computer = p.computer AND i.partition = p.id
         WHERE p.computer = ?1 ORDER BY p.seq",
        [c],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<String>(1)?,
                r.get::<Option<String>>(2)?,
            ))
        },
    )?
    .into_iter()
    .map(|(id, addrs, title)| {
        Ok(PartitionInfo {
            id: decode(&id)?,
            addresses: from_json(&addrs)?,
            instance: title.as_deref().map(decode).transpose()?,
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let software = rows(
        tx,
        "read releases",
        "SELECT url, requested, install_state, install_message, parameter_model FROM software
         WHERE computer = ?1 ORDER BY rowid",
        [c],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<String>(1)?,
                r.get::<Option<String>>(2)?,
                r.get::<Option<String>>(3)?,
                r.get::<Option<String>>(4)?,
            ))
        },
    )?
    .into_iter()
    .map(|(url, req, st, msg, model)| software_from(&url, &req, st.as_deref(), msg, model))
    .collect::<Result<Vec<_>>>()?;
    Ok(ComputerInfo {
        id: decode(c)?,
        labels,
        partitions,
        software,
        last_seen_ms: last_seen.map(|v| v as u64),
    })
}

// -------------------------------------------------------------------------------------------
// Request helpers

/// Apply a re-request to an existing instance; returns its id.
fn update_instance(
    tx: &mut Tx<'_>,
    e: InstanceRow,
    req: &InstanceRequest,
    requester: Option<&InstanceRow>,
    root_state: Option<InstanceState>,
    rules: RequestRules,
) -> Result<i64> {
    let url_changed = e.software_url != req.software_url.as_str();
    if url_changed && !rules.allow_url_change {
        return Err(StoreError::Conflict(format!(
            "instance {:?}{} already exists with software URL {}; destroy it or choose another \
             title to use {}",
            e.title,
            tree_suffix(&e.root),
            e.software_url,
            req.software_url
        )));
    }
    // Re-parenting must not make the instance its own ancestor: a cycle could never be freed.
    if let Some(r) = requester
        && e.requester != Some(r.id)
        && (r.id == e.id || is_ancestor(tx, e.id, r.id)?)
    {
        return Err(StoreError::Conflict(format!(
            "instance {:?} cannot request {:?}{}: it is that instance or one of its descendants",
            r.title,
            e.title,
            tree_suffix(&e.root)
        )));
    }
    let current = instance_state(&e.state)?;
    let mut state = req.state.unwrap_or(current);
    // As in SlapOS: a child re-requested while its tree root is not started follows the root.
    if let Some(rs) = root_state
        && rs != InstanceState::Started
    {
        state = rs;
    }
    let params_changed = from_json::<Params>(&e.parameters)? != req.parameters;
    let type_changed = e.software_type != req.software_type.as_str();
    if params_changed || type_changed || url_changed || state != current {
        tx.exec(
            "UPDATE instance SET software_type = ?2, parameters = ?3, state = ?4,
                 software_url = ?5 WHERE id = ?1",
            params![
                e.id,
                req.software_type.as_str(),
                to_json(&req.parameters)?,
                state.as_str(),
                req.software_url.as_str()
            ],
        )
        .op("update an instance")?;
        tx.bump_instance(e.id)?;
    }
    // Re-parenting: another partition of the same tree now requests it.
    if let Some(r) = requester
        && e.requester != Some(r.id)
    {
        tx.exec(
            "UPDATE instance SET requester = ?2 WHERE id = ?1",
            params![e.id, r.id],
        )
        .op("re-parent an instance")?;
        if let Some(old) = e.requester {
            tx.bump_instance(old)?;
        }
        tx.bump_instance(r.id)?;
    }
    if e.root.is_empty() && state != current {
        set_tree_state(tx, &e.title, state)?;
    }
    Ok(e.id)
}

/// Whether `ancestor` is on the requester chain above instance `id`.
fn is_ancestor(tx: &Transaction<'_>, ancestor: i64, id: i64) -> Result<bool> {
    tx.q_row(
        "WITH RECURSIVE up(id) AS (
             SELECT requester FROM instance WHERE id = ?1
             UNION SELECT i.requester FROM instance i JOIN up ON i.id = up.id)
         SELECT EXISTS (SELECT 1 FROM up WHERE id = ?2)",
        params![id, ancestor],
        |r| r.get(0),
    )
    .op("check the requester chain")
}

/// Apply a root's state to its tree: every member gets `state`, except that members already
/// destroyed stay destroyed unless the tree is being destroyed anyway.
fn set_tree_state(tx: &mut Tx<'_>, root: &str, state: InstanceState) -> Result<()> {
    let s = state.as_str();
    let mut changed = ids(
        tx,
        "UPDATE instance SET state = ?2 WHERE root = '' AND title = ?1 AND state != ?2
         RETURNING id",
        params![root, s],
    )?;
    changed.extend(ids(
        tx,
        "UPDATE instance SET state = ?2 WHERE root = ?1 AND state != ?2
             AND (?2 = 'destroyed' OR state != 'destroyed')
         RETURNING id",
        params![root, s],
    )?);
    for id in changed {
        tx.bump_instance(id)?;
    }
    federation::set_tree_state(tx, root, state)
}

/// Mark everything below `inst` destroyed (its requester links; for a root, its whole tree).
fn destroy_subtree(tx: &mut Tx<'_>, inst: &InstanceRow) -> Result<()> {
    let changed = ids(
        tx,
        "WITH RECURSIVE sub(id) AS (
             SELECT id FROM instance WHERE requester = ?1
             UNION SELECT i.id FROM instance i JOIN sub ON i.requester = sub.id)
         UPDATE instance SET state = 'destroyed'
         WHERE state != 'destroyed'
           AND (id IN (SELECT id FROM sub) OR (?2 = '' AND root = ?3))
         RETURNING id",
        params![inst.id, inst.root, inst.title],
    )?;
    for id in changed {
        tx.bump_instance(id)?;
    }
    Ok(())
}

/// Rules of a request that differ between the native API and slapproxy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRules {
    /// Allocate only on computers that have the release supplied (native); slapproxy does not
    /// check.
    pub require_supply: bool,
    /// A re-request with another software URL updates the instance (slapproxy) instead of
    /// being a conflict (native).
    pub allow_url_change: bool,
}

impl RequestRules {
    /// The native API's rules.
    pub const NATIVE: Self = Self {
        require_supply: true,
        allow_url_change: false,
    };
    /// slapproxy's rules (the classic SLAP routes).
    pub const SLAPPROXY: Self = Self {
        require_supply: false,
        allow_url_change: true,
    };
}

/// The wall clock in milliseconds since the epoch, rounded up (0 if the clock is before it): a
/// revision floored by it is no earlier than the change, even for a client that reads its own
/// clock in microseconds within the same millisecond (slapproxy's suite compares `time.time()`
/// before a request with the instance's `timestamp`).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
        })
}

/// A parsed SLA filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sla {
    /// `computer_guid`: only this computer.
    pub computer: Option<ComputerId>,
    /// Every other key: the computer's label of that name must equal the value.
    pub labels: Vec<(LabelKey, String)>,
}

impl Sla {
    /// Validate a request's SLA map: `computer_guid` must be a computer id, other keys label keys.
    pub fn parse(map: &BTreeMap<String, String>) -> Result<Self> {
        let mut sla = Sla::default();
        for (k, v) in map {
            if k == "computer_guid" {
                sla.computer = Some(
                    ComputerId::parse(v.as_str())
                        .map_err(|e| StoreError::Invalid(format!("sla computer_guid: {e}")))?,
                );
            } else {
                let key = LabelKey::parse(k.as_str()).map_err(|e| {
                    StoreError::Invalid(format!(
                        "sla key: {e} (keys are computer_guid or a label name)"
                    ))
                })?;
                sla.labels.push((key, v.clone()));
            }
        }
        Ok(sla)
    }

    /// `{computer_guid=A, region=eu}`, or `{} (any computer)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.computer {
            parts.push(format!("computer_guid={c}"));
        }
        for (k, v) in &self.labels {
            parts.push(format!("{k}={v}"));
        }
        if parts.is_empty() {
            "{} (any computer)".to_owned()
        } else {
            format!("{{{}}}", parts.join(", "))
        }
    }

    /// SQL condition on `<alias>.computer` and its parameters (numbered from `first`).
    fn condition(&self, alias: &str, first: usize) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut args = Vec::new();
        let mut n = first;
        if let Some(c) = &self.computer {
            sql.push_str(&format!(" AND {alias}.computer = ?{n}"));
            args.push(c.to_string());
            n += 1;
        }
        for (k, v) in &self.labels {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM label l WHERE l.computer = {alias}.computer \
                 AND l.key = ?{n} AND l.value = ?{})",
                n + 1
            ));
            args.push(k.to_string());
            args.push(v.clone());
            n += 2;
        }
        (sql, args)
    }
}

/// The parameter model of a release, if any computer reported one: looked up on every new
/// request, so it searches the partial index `software_url_model` (migration 11) instead of
/// scanning one `software` row per computer and release.
const RELEASE_MODEL: &str = "SELECT parameter_model FROM software
                             WHERE url = ?1 AND parameter_model IS NOT NULL LIMIT 1";

/// The first free partition, in registration order, of a computer that matches `sla` and has
/// `url` supplied. On failure, a message saying which condition nothing met. Free partitions
/// are found through `partition.busy` (kept by triggers on `instance`, migration 11) and its
/// partial indexes, so the cost does not grow with the busy partitions; that no instance holds
/// the one found is still checked.
fn allocate(
    tx: &Transaction<'_>,
    url: &SoftwareUrl,
    sla: &Sla,
    title: &str,
    require_supply: bool,
) -> Result<(String, String)> {
    let (cond, args) = sla.condition("p", 2);
    // ?1 is always bound; without the supply rule it is only compared with itself.
    let supply = if require_supply {
        "JOIN software s ON s.computer = p.computer AND s.url = ?1 AND s.requested = 'available'"
    } else {
        ""
    };
    let sql = format!(
        "SELECT p.computer, p.id FROM partition p {supply}
         WHERE CAST(?1 AS TEXT) = CAST(?1 AS TEXT) AND p.busy = 0
           AND NOT EXISTS (SELECT 1 FROM instance i
                           WHERE i.computer = p.computer AND i.partition = p.id){cond}
         ORDER BY p.seq LIMIT 1"
    );
    let mut all: Vec<sql::Value> = vec![sql::Value::Text(url.as_str().to_owned())];
    all.extend(args.iter().map(|a| sql::Value::Text(a.clone())));
    let found: Option<(String, String)> = tx
        .q_row(&sql, all, |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .op("find a free partition")?;
    if let Some(f) = found {
        return Ok(f);
    }
    // Diagnose: which condition failed?
    let (cond, args) = sla.condition("c", 1);
    let matching: Vec<String> = rows(
        tx,
        "diagnose an allocation",
        &format!(
            "SELECT c.id FROM (SELECT id AS computer, id FROM computer) c WHERE 1 = 1{cond} \
             ORDER BY c.id"
        ),
        args.iter()
            .map(|a| sql::Value::Text(a.clone()))
            .collect::<Vec<_>>(),
        |r| r.get(0),
    )?;
    let mut with_release = Vec::new();
    for c in &matching {
        let supplied = tx
            .q_row(
                "SELECT 1 FROM software WHERE computer = ?1 AND url = ?2 AND requested = 'available'",
                [c.as_str(), url.as_str()],
                |_| Ok(()),
            )
            .optional()
            .op("diagnose an allocation")?
            .is_some();
        if supplied {
            with_release.push(c.as_str());
        }
    }
    let list = |v: &[&str]| {
        let mut s = v.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        if v.len() > 5 {
            s.push_str(&format!(", … ({} in all)", v.len()));
        }
        s
    };
    let why = if matching.is_empty() {
        "no registered computer matches the SLA filter".to_owned()
    } else if with_release.is_empty() && require_supply {
        let m: Vec<&str> = matching.iter().map(String::as_str).collect();
        format!(
            "the release is not supplied on any matching computer ({}); supply it first",
            list(&m)
        )
    } else if require_supply {
        format!(
            "every partition is allocated on the matching computers that have the release ({})",
            list(&with_release)
        )
    } else {
        let m: Vec<&str> = matching.iter().map(String::as_str).collect();
        format!(
            "every partition is allocated on the matching computers ({})",
            list(&m)
        )
    };
    Err(StoreError::NoAllocation(format!(
        "cannot allocate instance {title:?}: no free partition for software URL {url} with SLA {}: \
         {why}",
        sla.describe()
    )))
}

/// Input checks of a registration that the id types do not already do.
fn validate_registration(reg: &RegisterComputer) -> Result<()> {
    if reg.id.as_str() == federation::DELEGATED_COMPUTER {
        return Err(StoreError::Invalid(format!(
            "computer id {:?} is reserved: it names the requests delegated to other masters",
            federation::DELEGATED_COMPUTER
        )));
    }
    let mut seen = BTreeSet::new();
    for p in &reg.partitions {
        if !seen.insert(p.id.as_str()) {
            return Err(StoreError::Invalid(format!(
                "partition {} is listed twice in the registration of {}",
                p.id, reg.id
            )));
        }
        for a in &p.addresses {
            if a.parse::<IpAddr>().is_err() {
                return Err(StoreError::Invalid(format!(
                    "address {a:?} of partition {} is not an IPv4 or IPv6 literal",
                    p.id
                )));
            }
        }
        if let Some(i) = &p.interface
            && (i.is_empty()
                || i.len() > MAX_INTERFACE
                || !i.bytes().all(|b| b.is_ascii_graphic() && b != b'/'))
        {
            return Err(StoreError::Invalid(format!(
                "interface {:?} of partition {} must be 1 to {MAX_INTERFACE} printable ASCII \
                 characters without spaces or '/'",
                slapos_proto::text::terminal_safe(&crate::store::cut(i, 80)),
                p.id
            )));
        }
    }
    for (k, v) in &reg.labels {
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(StoreError::Invalid(format!(
                "label {k} must be at most {MAX_LABEL_VALUE} bytes without control characters"
            )));
        }
    }
    Ok(())
}

/// What [`Store::fleet_summary`] reads.
#[derive(Debug, Clone, Default)]
pub struct FleetSummary {
    /// Every computer's id and last contact (unix ms), by id.
    pub computers: Vec<(String, Option<u64>)>,
    /// Every instance, in creation order.
    pub instances: Vec<FleetInstance>,
}

/// One instance as [`Store::fleet_summary`] counts it.
#[derive(Debug, Clone)]
pub struct FleetInstance {
    /// The computer it is allocated on.
    pub computer: String,
    /// Its requested state.
    pub requested: String,
    /// The state its node last reported, if any.
    pub reported: Option<String>,
    /// Promises failing in that report.
    pub failing_promises: usize,
}

/// The tables of the schema, in dependency order (parents first).
pub const TABLES: [&str; 14] = [
    "meta",
    "computer",
    "label",
    "partition",
    "software",
    "instance",
    "slap_computer",
    "slap_address",
    "slap_shared",
    "certificate",
    "enroll_token",
    "usage_sample",
    "usage_total",
    "delegation",
];

/// Every row of every table, as text: lets tests check that a refused call changed nothing.
#[doc(hidden)]
pub fn dump(conn: &rusqlite::Connection) -> String {
    let mut out = String::new();
    for table in TABLES {
        let Ok(mut st) = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2")) else {
            out.push_str(&format!("{table}: unreadable\n"));
            continue;
        };
        let n = st.column_count();
        let rows = st.query_map([], |r| {
            let mut line = Vec::with_capacity(n);
            for i in 0..n {
                line.push(format!("{:?}", r.get_ref(i)?));
            }
            Ok(line.join("|"))
        });
        if let Ok(rows) = rows {
            for row in rows.flatten() {
                out.push_str(&format!("{table}: {row}\n"));
            }
        }
    }
    out
}

/// [`dump`] on either engine; values as [`sql::Value`].
#[doc(hidden)]
pub fn dump_conn(conn: &Conn) -> String {
    let mut out = String::new();
    for table in TABLES {
        let rows = conn.query_map(&format!("SELECT * FROM {table} ORDER BY 1, 2"), [], |r| {
            Ok(r.0
                .iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join("|"))
        });
        match rows {
            Ok(rows) => {
                for row in rows {
                    out.push_str(&format!("{table}: {row}\n"));
                }
            }
            Err(_) => out.push_str(&format!("{table}: unreadable\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod plan_tests {
    use super::Store;
    use rusqlite::StatementStatus;

    /// Statements of the new-request path run from the statement cache with other values
    /// without being compiled again (see [`super::stable_plans`]), on the writer and on a
    /// reader, and their plans still use the partial indexes.
    #[test]
    fn cached_statements_are_not_recompiled_for_new_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let writer = Store::open(&path, 1).unwrap();
        let reader = Store::open_reader(&path).unwrap();
        let free = "SELECT p.computer, p.id FROM partition p
             WHERE CAST(?1 AS TEXT) = CAST(?1 AS TEXT) AND p.busy = 0
               AND NOT EXISTS (SELECT 1 FROM instance i
                               WHERE i.computer = p.computer AND i.partition = p.id)
               AND p.computer = ?2
             ORDER BY p.seq LIMIT 1";
        for store in [&writer, &reader] {
            let conn = store.connection().as_sqlite().unwrap();
            // Each statement, the values it runs with, and the index its plan must use.
            for (sql, values, index) in [
                (
                    "SELECT title FROM instance WHERE requester = ?1 ORDER BY id",
                    vec![vec!["1"], vec!["2"], vec!["3"]],
                    None,
                ),
                (
                    free,
                    vec![vec!["u", "A"], vec!["u", "B"], vec!["v", "C"]],
                    Some("partition_free"),
                ),
                (
                    super::RELEASE_MODEL,
                    vec![vec!["u"], vec!["v"], vec!["w"]],
                    Some("software_url_model"),
                ),
                (
                    super::identity::LOCAL_UID_PARTITION,
                    vec![vec!["1000"], vec!["1001"], vec!["1002"]],
                    Some("partition_local_uid"),
                ),
            ] {
                for v in &values {
                    let mut st = conn.prepare_cached(sql).unwrap();
                    let mut rows = st.query(rusqlite::params_from_iter(v)).unwrap();
                    while rows.next().unwrap().is_some() {}
                    drop(rows);
                    assert_eq!(st.get_status(StatementStatus::RePrepare), 0, "{sql}");
                }
                let plan: Vec<String> = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .unwrap()
                    .query_map(rusqlite::params_from_iter(&values[0]), |r| r.get(3))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let plan = plan.join(" | ");
                if let Some(index) = index {
                    assert!(plan.contains(index), "{sql}: {plan}");
                }
            }
        }
    }
}

/// The same tests on a real PostgreSQL server (see `tests.rs`).
#[cfg(test)]
#[path = "tests.rs"]
#[allow(clippy::duplicate_mod)] // on purpose: one body of tests, two engines
mod tests_pg;
