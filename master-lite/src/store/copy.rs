//! `slapos-master migrate`: copy a whole master's state from one database to another (a box's
//! SQLite file into a fleet's PostgreSQL, or back).
//!
//! Both sides are opened (and migrated) to the same schema version first. The target must hold
//! no computer, instance, certificate or token unless `force` is given, which empties it first.
//! Every table is copied row by row in one target transaction, in dependency order; an
//! instance's `requester` is set in a second pass (a child may have a lower id than its
//! parent after a re-parenting). The insertion order of the tables whose order means something
//! (`partition.seq`: registration order, `software`/`slap_shared` rowid: supply order) is kept,
//! and the target's identity sequences and revision counter continue above the copied values,
//! so no revision a node has seen is ever handed out again.

use super::sql::{Conn, Engine, SqlError, Value};
use super::{DbUrl, OpenError, Store, TABLES};

/// A copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A database could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The target already holds a master's state.
    #[error(
        "the target database {target} is not empty ({rows} rows in {table}); pass --force to \
         replace its content"
    )]
    NotEmpty {
        /// The target.
        target: String,
        /// A non-empty table.
        table: &'static str,
        /// Its row count.
        rows: i64,
    },
    /// A statement failed.
    #[error("failed to {op} (table {table}): {source}")]
    Sql {
        /// What was done.
        op: &'static str,
        /// On which table.
        table: &'static str,
        /// The engine's error.
        #[source]
        source: SqlError,
    },
}

/// What was copied.
#[derive(Debug, Default)]
pub struct CopyReport {
    /// Rows per table.
    pub rows: Vec<(&'static str, usize)>,
}

fn sql(op: &'static str, table: &'static str) -> impl FnOnce(SqlError) -> CopyError {
    move |source| CopyError::Sql { op, table, source }
}

/// The columns of `table` that both engines share, in the source's order (PostgreSQL's
/// explicit `rowid` columns are left out).
pub fn columns(conn: &Conn, table: &str) -> Result<Vec<String>, SqlError> {
    let names: Vec<String> = match conn.engine() {
        Engine::Sqlite => conn.query_map(
            &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
            [],
            |r| r.get(0),
        )?,
        Engine::Postgres => conn.query_map(
            "SELECT column_name::TEXT FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ?1 ORDER BY ordinal_position",
            [table],
            |r| r.get(0),
        )?,
    };
    Ok(names.into_iter().filter(|c| c != "rowid").collect())
}

/// The order rows of `table` are read and written in.
fn order(table: &str, engine: Engine) -> &'static str {
    match (table, engine) {
        ("software" | "slap_shared", _) => "rowid",
        ("partition", _) => "seq",
        ("instance", _) => "id",
        _ => "1, 2",
    }
}

/// Every row of `table` (columns `cols`), in its meaningful order.
pub fn rows(conn: &Conn, table: &str, cols: &[String]) -> Result<Vec<Vec<Value>>, SqlError> {
    conn.query_map(
        &format!(
            "SELECT {} FROM {table} ORDER BY {}",
            cols.join(", "),
            order(table, conn.engine())
        ),
        [],
        |r| Ok(r.0.clone()),
    )
}

/// Copy everything from `from` to `to`.
pub fn copy(from: &DbUrl, to: &DbUrl, force: bool, now_ms: u64) -> Result<CopyReport, CopyError> {
    let src = Store::open_url(from, now_ms)?;
    let dst = Store::open_url(to, now_ms)?;
    let (s, d) = (src.connection(), dst.connection());
    for table in TABLES.iter().copied().filter(|t| *t != "meta") {
        let n: i64 = d
            .q_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .map_err(sql("count rows", table))?;
        if n > 0 && !force {
            return Err(CopyError::NotEmpty {
                target: to.to_string(),
                table,
                rows: n,
            });
        }
    }
    let tx = d.begin(true).map_err(sql("begin", "-"))?;
    for table in TABLES.iter().rev() {
        tx.exec(&format!("DELETE FROM {table}"), [])
            .map_err(sql("empty the target", table))?;
    }
    let mut report = CopyReport::default();
    let mut requesters: Vec<(Value, Value)> = Vec::new();
    for table in TABLES {
        let cols = columns(s, table).map_err(sql("read the columns", table))?;
        let data = rows(s, table, &cols).map_err(sql("read", table))?;
        let requester = cols.iter().position(|c| c == "requester");
        let id = cols.iter().position(|c| c == "id");
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            cols.join(", "),
            (1..=cols.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for mut row in data.iter().cloned() {
            if table == "instance"
                && let (Some(r), Some(i)) = (requester, id)
                && row[r] != Value::Null
            {
                requesters.push((row[i].clone(), std::mem::replace(&mut row[r], Value::Null)));
            }
            tx.exec(&insert, row as Vec<Value>)
                .map_err(sql("write", table))?;
        }
        report.rows.push((table, data.len()));
    }
    for (id, requester) in requesters {
        tx.exec(
            "UPDATE instance SET requester = ?2 WHERE id = ?1",
            vec![id, requester],
        )
        .map_err(sql("link requesters", "instance"))?;
    }
    let seq: Option<i64> = s
        .q_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0))
        .ok();
    if d.engine() == Engine::Postgres {
        for (table, col) in [
            ("partition", "seq"),
            ("instance", "id"),
            ("software", "rowid"),
            ("slap_shared", "rowid"),
        ] {
            tx.exec(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{col}'),
                                   COALESCE((SELECT MAX({col}) FROM {table}), 0) + 1, false)"
                ),
                [],
            )
            .map_err(sql("continue the identity", table))?;
        }
        // The revision counter: SQLite's meta.seq, or PostgreSQL's sequence, whichever source.
        let current = match s.engine() {
            Engine::Sqlite => seq,
            Engine::Postgres => s
                .q_row("SELECT last_value FROM revision_seq", [], |r| r.get(0))
                .ok(),
        };
        if let Some(v) = current {
            tx.exec("SELECT setval('revision_seq', ?1)", vec![Value::Int(v)])
                .map_err(sql("continue the revision counter", "meta"))?;
        }
    } else if s.engine() == Engine::Postgres {
        let v: i64 = s
            .q_row("SELECT last_value FROM revision_seq", [], |r| r.get(0))
            .map_err(sql("read the revision counter", "meta"))?;
        tx.exec(
            "INSERT INTO meta (key, value) VALUES ('seq', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            vec![Value::Int(v)],
        )
        .map_err(sql("continue the revision counter", "meta"))?;
    }
    tx.commit().map_err(sql("commit", "-"))?;
    Ok(report)
}
