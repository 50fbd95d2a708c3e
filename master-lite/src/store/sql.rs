//! The small SQL layer the store runs on: one connection type over SQLite (rusqlite) or
//! PostgreSQL (the `postgres` client), so the store's statements are written once.
//!
//! # Dialect
//!
//! Store statements are written in the subset both engines share (`ON CONFLICT … DO UPDATE`,
//! `RETURNING`, `COALESCE`, `||`) with SQLite's numbered placeholders `?N`. The differences are
//! handled here and nowhere else:
//!
//! * placeholders: `?N` (and bare `?`) become `$N` on PostgreSQL ([`pg_placeholders`]);
//! * values: parameters are [`Value`]s; on PostgreSQL a value is encoded for the type the
//!   server inferred for its placeholder (an integer bound to an `int4` column, text to `text`),
//!   and rows are decoded by column type into [`Value`]s, so store code reads both engines with
//!   the same `row.get(i)`;
//! * transactions: `BEGIN IMMEDIATE` on SQLite (one writer), `BEGIN ISOLATION LEVEL
//!   SERIALIZABLE` on PostgreSQL, whose serialization failures (`40001`, `40P01`) are reported as
//!   [`SqlError::is_retryable`] so the caller re-runs the whole call;
//! * the schema (identity columns, `bytea`, triggers, the revision sequence) is per engine in
//!   [`super::schema`].
//!
//! Statements are prepared once per connection and cached (SQLite's statement cache; a map of
//! prepared statements on PostgreSQL).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type};

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (booleans are 0/1).
    Int(i64),
    /// A floating point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// A database error, with what the engine said.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// A statement expected a row and got none.
    #[error("no row returned")]
    NoRows,
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (or its connection is gone).
    #[error("{}", pg_text(.0))]
    Pg(#[from] postgres::Error),
    /// A column did not hold the type the store reads it as.
    #[error("column {column} holds {found}, read as {wanted}")]
    Type {
        /// Column index.
        column: usize,
        /// What the store wanted.
        wanted: &'static str,
        /// What was there.
        found: String,
    },
}

/// The server's message and SQLSTATE when there is one (`postgres::Error` alone says "db
/// error").
fn pg_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} (SQLSTATE {})", d.message(), d.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

/// SQLSTATEs after which the whole transaction may simply be run again.
const RETRYABLE: [&str; 2] = ["40001", "40P01"];

impl SqlError {
    /// A serialization failure or deadlock on PostgreSQL: run the call again.
    pub fn is_retryable(&self) -> bool {
        match self {
            SqlError::Pg(e) => e.code().is_some_and(|c| RETRYABLE.contains(&c.code())),
            _ => false,
        }
    }

    /// The connection to the database is lost (PostgreSQL): answer 503, reconnect.
    pub fn is_unavailable(&self) -> bool {
        match self {
            SqlError::Pg(e) => {
                e.is_closed()
                    || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                    || e.code().is_some_and(|c| {
                        let c = c.code();
                        c.starts_with("08") || c.starts_with("57P")
                    })
            }
            _ => false,
        }
    }

    /// The SQLite error under this one, if any (disk-full detection).
    pub fn sqlite(&self) -> Option<&rusqlite::Error> {
        match self {
            SqlError::Sqlite(e) => Some(e),
            _ => None,
        }
    }
}

/// Result of a SQL call.
pub type SqlResult<T> = std::result::Result<T, SqlError>;

/// `q_row(..).optional()`: no row is `None`.
pub trait OptionalExtension<T> {
    /// `Ok(None)` for [`SqlError::NoRows`].
    fn optional(self) -> SqlResult<Option<T>>;
}

impl<T> OptionalExtension<T> for SqlResult<T> {
    fn optional(self) -> SqlResult<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(SqlError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Values in and out.

/// A Rust value usable as a parameter.
pub trait ToValue {
    /// The value.
    fn to_value(&self) -> Value;
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for std::borrow::Cow<'_, str> {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(i64::from(*self))
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, i16, u16, u8);
impl ToValue for u64 {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// Parameters of one statement.
pub trait Params {
    /// The values, in placeholder order.
    fn values(&self) -> Vec<Value>;
}

impl Params for [&dyn ToValue; 0] {
    fn values(&self) -> Vec<Value> {
        Vec::new()
    }
}
impl Params for &[&dyn ToValue] {
    fn values(&self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}
impl Params for Vec<Value> {
    fn values(&self) -> Vec<Value> {
        self.clone()
    }
}
macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToValue> Params for [T; $n] {
            fn values(&self) -> Vec<Value> {
                self.iter().map(ToValue::to_value).collect()
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8);

/// `params![a, b]`: heterogeneous parameters.
#[macro_export]
#[doc(hidden)]
macro_rules! sql_params {
    () => { &[] as &[&dyn $crate::store::sql::ToValue] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::store::sql::ToValue),+] as &[&dyn $crate::store::sql::ToValue] };
}
pub use crate::sql_params as params;

/// A Rust value a column can be read as.
pub trait FromValue: Sized {
    /// Convert column `column`'s value.
    fn from_value(v: &Value, column: usize) -> SqlResult<Self>;
}

fn wrong<T>(v: &Value, column: usize, wanted: &'static str) -> SqlResult<T> {
    Err(SqlError::Type {
        column,
        wanted,
        found: match v {
            Value::Null => "NULL".into(),
            Value::Int(_) => "an integer".into(),
            Value::Real(_) => "a real".into(),
            Value::Text(_) => "text".into(),
            Value::Blob(_) => "a blob".into(),
        },
    })
}

impl FromValue for Value {
    fn from_value(v: &Value, _: usize) -> SqlResult<Self> {
        Ok(v.clone())
    }
}
impl FromValue for String {
    fn from_value(v: &Value, column: usize) -> SqlResult<Self> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            _ => wrong(v, column, "text"),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value, column: usize) -> SqlResult<Self> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            _ => wrong(v, column, "a blob"),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value, column: usize) -> SqlResult<Self> {
        match v {
            Value::Int(i) => Ok(*i != 0),
            _ => wrong(v, column, "a boolean"),
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value, column: usize) -> SqlResult<Self> {
        match v {
            Value::Real(r) => Ok(*r),
            Value::Int(i) => Ok(*i as f64),
            _ => wrong(v, column, "a real"),
        }
    }
}
macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value, column: usize) -> SqlResult<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i)
                        .or_else(|_| wrong(v, column, stringify!($t))),
                    _ => wrong(v, column, stringify!($t)),
                }
            }
        }
    )*};
}
int_from_value!(i64, i32, u32, u64, usize, u16, u8);
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value, column: usize) -> SqlResult<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v, column).map(Some),
        }
    }
}

/// One result row, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i` as a `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> SqlResult<T> {
        let v = self.0.get(i).ok_or(SqlError::Type {
            column: i,
            wanted: "a column",
            found: format!("a row of {} columns", self.0.len()),
        })?;
        T::from_value(v, i)
    }
}

fn lite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let n = r.as_ref().column_count();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(v) => Value::Int(v),
            ValueRef::Real(v) => Value::Real(v),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        });
    }
    Ok(Row(out))
}

fn lite_values(v: &[Value]) -> Vec<rusqlite::types::Value> {
    v.iter()
        .map(|v| match v {
            Value::Null => rusqlite::types::Value::Null,
            Value::Int(i) => rusqlite::types::Value::Integer(*i),
            Value::Real(r) => rusqlite::types::Value::Real(*r),
            Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
            Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
        })
        .collect()
}

fn pg_row(r: &postgres::Row) -> SqlResult<Row> {
    let mut out = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let t = c.type_();
        let v = if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::FLOAT8 {
            r.try_get::<_, Option<f64>>(i)?.map(Value::Real)
        } else if *t == Type::FLOAT4 {
            r.try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(f64::from(v)))
        } else if *t == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob)
        } else {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => {
                if *ty == Type::INT8 {
                    i.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (*i != 0).to_sql(ty, out)
                } else if *ty == Type::FLOAT8 {
                    (*i as f64).to_sql(ty, out)
                } else {
                    i.to_string().to_sql(ty, out)
                }
            }
            Value::Real(r) => {
                if *ty == Type::FLOAT8 {
                    r.to_sql(ty, out)
                } else {
                    r.to_string().to_sql(ty, out)
                }
            }
            Value::Text(s) => {
                if *ty == Type::INT8 {
                    s.parse::<i64>()?.to_sql(ty, out)
                } else if *ty == Type::BYTEA {
                    s.as_bytes().to_sql(ty, out)
                } else {
                    s.as_str().to_sql(ty, out)
                }
            }
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// `?N` and bare `?` placeholders (outside quoted text) as PostgreSQL's `$N`.
pub fn pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut max = 0u32;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                let mut n = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    n.push(*d);
                    chars.next();
                }
                if n.is_empty() {
                    n = (max + 1).to_string();
                }
                max = max.max(n.parse().unwrap_or(0));
                out.push('$');
                out.push_str(&n);
            }
            _ => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Connections.

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

struct Pg {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

impl Pg {
    fn statement(&mut self, sql: &str) -> SqlResult<postgres::Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let st = self.client.prepare(&pg_placeholders(sql))?;
        if self.statements.len() >= 512 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

enum Kind {
    Lite(rusqlite::Connection),
    Pg(Box<RefCell<Pg>>),
}

/// A connection to either engine.
pub struct Conn {
    kind: Kind,
    depth: Cell<u32>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("engine", &self.engine())
            .finish_non_exhaustive()
    }
}

fn pg_params(v: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    v.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Conn {
    /// Over an open SQLite connection.
    pub fn sqlite(conn: rusqlite::Connection) -> Self {
        Self {
            kind: Kind::Lite(conn),
            depth: Cell::new(0),
        }
    }

    /// Over an open PostgreSQL client.
    pub fn postgres(client: postgres::Client) -> Self {
        Self {
            kind: Kind::Pg(Box::new(RefCell::new(Pg {
                client,
                statements: HashMap::new(),
            }))),
            depth: Cell::new(0),
        }
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        match self.kind {
            Kind::Lite(_) => Engine::Sqlite,
            Kind::Pg(_) => Engine::Postgres,
        }
    }

    /// The SQLite connection, on SQLite.
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.kind {
            Kind::Lite(c) => Some(c),
            Kind::Pg(_) => None,
        }
    }

    /// Whether the PostgreSQL connection is gone (always false on SQLite).
    pub fn is_closed(&self) -> bool {
        match &self.kind {
            Kind::Lite(_) => false,
            Kind::Pg(p) => p.try_borrow().is_ok_and(|p| p.client.is_closed()),
        }
    }

    /// Run statements without parameters or results (DDL, `BEGIN`).
    pub fn batch(&self, sql: &str) -> SqlResult<()> {
        match &self.kind {
            Kind::Lite(c) => Ok(c.execute_batch(sql)?),
            Kind::Pg(p) => Ok(p.borrow_mut().client.batch_execute(sql)?),
        }
    }

    /// Run a statement; the number of rows changed.
    pub fn exec(&self, sql: &str, p: impl Params) -> SqlResult<usize> {
        let v = p.values();
        match &self.kind {
            Kind::Lite(c) => {
                let v = lite_values(&v);
                Ok(c.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(v.iter()))?)
            }
            Kind::Pg(pg) => {
                let mut pg = pg.borrow_mut();
                let st = pg.statement(sql)?;
                let n = pg.client.execute(&st, &pg_params(&v))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Every row of a query, each through `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        p: impl Params,
        mut f: impl FnMut(&Row) -> SqlResult<T>,
    ) -> SqlResult<Vec<T>> {
        let v = p.values();
        match &self.kind {
            Kind::Lite(c) => {
                let v = lite_values(&v);
                let mut st = c.prepare_cached(sql)?;
                let rows = st.query_map(rusqlite::params_from_iter(v.iter()), lite_row)?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(f(&r?)?);
                }
                Ok(out)
            }
            Kind::Pg(pg) => {
                let mut pg = pg.borrow_mut();
                let st = pg.statement(sql)?;
                let rows = pg.client.query(&st, &pg_params(&v))?;
                drop(pg);
                rows.iter().map(|r| f(&pg_row(r)?)).collect()
            }
        }
    }

    /// The first row of a query through `f`; [`SqlError::NoRows`] when there is none.
    pub fn q_row<T>(
        &self,
        sql: &str,
        p: impl Params,
        f: impl FnOnce(&Row) -> SqlResult<T>,
    ) -> SqlResult<T> {
        let v = p.values();
        match &self.kind {
            Kind::Lite(c) => {
                let v = lite_values(&v);
                let row = c
                    .prepare_cached(sql)?
                    .query_row(rusqlite::params_from_iter(v.iter()), lite_row)
                    .map_err(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => SqlError::NoRows,
                        e => SqlError::Sqlite(e),
                    })?;
                f(&row)
            }
            Kind::Pg(pg) => {
                let mut pg = pg.borrow_mut();
                let st = pg.statement(sql)?;
                let rows = pg.client.query(&st, &pg_params(&v))?;
                drop(pg);
                let first = rows.first().ok_or(SqlError::NoRows)?;
                f(&pg_row(first)?)
            }
        }
    }

    /// Open the outer transaction of a group commit: the store calls that follow nest in it as
    /// savepoints until [`Conn::end_group`].
    pub fn begin_group(&self) -> SqlResult<()> {
        if self.depth.get() != 0 {
            return Err(SqlError::Type {
                column: 0,
                wanted: "no open transaction",
                found: "a transaction already open".into(),
            });
        }
        self.batch(match self.engine() {
            Engine::Sqlite => "BEGIN IMMEDIATE",
            Engine::Postgres => "BEGIN ISOLATION LEVEL SERIALIZABLE",
        })?;
        self.depth.set(1);
        Ok(())
    }

    /// Commit the group's transaction (rolled back when the commit fails).
    pub fn end_group(&self) -> SqlResult<()> {
        self.depth.set(0);
        let r = self.batch("COMMIT");
        if r.is_err() {
            let _ = self.batch("ROLLBACK");
        }
        r
    }

    /// Begin a transaction (`write`: SQLite takes the write lock at once). Nested calls open a
    /// savepoint, released or rolled back on its own.
    pub fn begin(&self, write: bool) -> SqlResult<Transaction<'_>> {
        let depth = self.depth.get();
        let sql = if depth > 0 {
            format!("SAVEPOINT sp{depth}")
        } else {
            match (self.engine(), write) {
                (Engine::Sqlite, true) => "BEGIN IMMEDIATE".into(),
                (Engine::Sqlite, false) => "BEGIN DEFERRED".into(),
                (Engine::Postgres, true) => "BEGIN ISOLATION LEVEL SERIALIZABLE".into(),
                (Engine::Postgres, false) => {
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into()
                }
            }
        };
        self.batch(&sql)?;
        self.depth.set(depth + 1);
        Ok(Transaction {
            conn: self,
            depth,
            done: false,
        })
    }
}

/// An open transaction (or savepoint); rolled back when dropped uncommitted.
pub struct Transaction<'c> {
    conn: &'c Conn,
    depth: u32,
    done: bool,
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl Transaction<'_> {
    /// Commit (or release the savepoint).
    pub fn commit(mut self) -> SqlResult<()> {
        self.done = true;
        self.conn.depth.set(self.depth);
        if self.depth > 0 {
            return self
                .conn
                .batch(&format!("RELEASE SAVEPOINT sp{}", self.depth));
        }
        let r = self.conn.batch("COMMIT");
        if r.is_err() {
            let _ = self.conn.batch("ROLLBACK");
        }
        r
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.conn.depth.set(self.depth);
        let sql = if self.depth > 0 {
            format!(
                "ROLLBACK TO SAVEPOINT sp{d}; RELEASE SAVEPOINT sp{d}",
                d = self.depth
            )
        } else {
            "ROLLBACK".into()
        };
        if let Err(e) = self.conn.batch(&sql) {
            tracing::debug!("rollback failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_outside_quotes() {
        assert_eq!(
            pg_placeholders("SELECT ?1, '?', ?2 WHERE a = ? AND b = ?"),
            "SELECT $1, '?', $2 WHERE a = $3 AND b = $4"
        );
    }

    #[test]
    fn sqlite_rows_and_savepoints() {
        let c = Conn::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        c.batch("CREATE TABLE t (a INTEGER, b TEXT)").unwrap();
        let tx = c.begin(true).unwrap();
        tx.exec("INSERT INTO t VALUES (?1, ?2)", params![1, "x"])
            .unwrap();
        {
            let sp = tx.begin(true).unwrap();
            sp.exec("INSERT INTO t VALUES (?1, ?2)", params![2, "y"])
                .unwrap();
            // dropped: rolled back alone
        }
        tx.commit().unwrap();
        let rows: Vec<(i64, String)> = c
            .query_map("SELECT a, b FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(rows, vec![(1, "x".to_owned())]);
        assert!(matches!(
            c.q_row("SELECT a FROM t WHERE a = 9", [], |r| r.get::<i64>(0)),
            Err(SqlError::NoRows)
        ));
    }
}
