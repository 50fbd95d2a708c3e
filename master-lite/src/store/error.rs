//! What a store call can fail with, free of HTTP: the serving layer maps each variant to its
//! status and body (`crate::error::ApiError: From<StoreError>`); [`OpenError`] for opening a
//! database.

use std::path::PathBuf;

use super::sql::SqlError;

/// A store call failed. The text is what callers see (except for `Db` and `Internal`, whose
/// details the serving layer only logs).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The input is invalid (an id, a parameter, a registration, an SLA): nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this (a free partition requesting an instance, a spent token).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown computer, partition, release or instance.
    #[error("{0}")]
    NotFound(String),
    /// The call contradicts the current state (same title with another release, removing a
    /// release in use, reporting on a free partition).
    #[error("{0}")]
    Conflict(String),
    /// No free partition matches the request's SLA filter and release.
    #[error("{0}")]
    NoAllocation(String),
    /// The database's filesystem is full (its space reserve is used up too): nothing was
    /// written; reads keep working.
    #[error(
        "the master's disk is full: nothing was written (while trying to {op}); free space on \
         the filesystem of its database"
    )]
    DiskFull {
        /// What the store was doing.
        op: &'static str,
    },
    /// A database operation failed.
    #[error("database error while trying to {op}: {source}")]
    Db {
        /// What the store was doing.
        op: &'static str,
        /// The engine's error.
        #[source]
        source: SqlError,
    },
    /// The database server cannot be reached (PostgreSQL): nothing was read or written; the
    /// replica reconnects on the next call.
    #[error(
        "the master's database is unreachable (while trying to {op}): {source}; nothing was \
         read or written, retry shortly"
    )]
    Unavailable {
        /// What the store was doing.
        op: &'static str,
        /// The client's error.
        #[source]
        source: SqlError,
    },
    /// Stored data is inconsistent, or another fault of the master's own.
    #[error("{0}")]
    Internal(String),
}

/// The database could not be opened, checked or migrated (start-up).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database file could not be opened or configured.
    #[error("failed to open the database {path}: {source}")]
    Open {
        /// Database path (`:memory:` for an in-memory store).
        path: PathBuf,
        /// SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database's filesystem is full at start (a migration or the journal needs room).
    #[error(
        "cannot open the database {path}: its filesystem is full; free some space there and \
         start again"
    )]
    DiskFull {
        /// Database path.
        path: PathBuf,
    },
    /// A database file or directory other users could read or change.
    #[error("refusing to use {path}: {reason}")]
    InsecureFile {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and the command that fixes it.
        reason: String,
    },
    /// A filesystem operation on the database's files failed.
    #[error("failed to {op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A schema migration failed; the database is left at the previous version.
    #[error("failed to migrate the database {path} to schema version {version}: {source}")]
    Migrate {
        /// Database path (or PostgreSQL URL without its password).
        path: PathBuf,
        /// The migration that failed.
        version: u32,
        /// The engine's error.
        #[source]
        source: SqlError,
    },
    /// The PostgreSQL server could not be reached or refused the connection.
    #[error("failed to open the PostgreSQL database {url}: {source}")]
    Postgres {
        /// The URL, password removed.
        url: String,
        /// The client's error.
        #[source]
        source: postgres::Error,
    },
    /// The database was written by a newer master.
    #[error(
        "the database {path} has schema version {found}, newer than this master knows ({known}); \
         use a newer slapos-master"
    )]
    SchemaTooNew {
        /// Database path.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Newest version this build knows.
        known: u32,
    },
}

/// Attach the operation to a SQLite error: `conn.execute(..).op("free a partition")?`.
pub(crate) trait DbContext<T> {
    /// Wrap the error with what the store was doing (a full disk becomes
    /// [`StoreError::DiskFull`]).
    fn op(self, op: &'static str) -> Result<T, StoreError>;
}

impl<T> DbContext<T> for Result<T, SqlError> {
    fn op(self, op: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| {
            if source.sqlite().is_some_and(super::disk::is_disk_full) {
                StoreError::DiskFull { op }
            } else if source.is_unavailable() {
                StoreError::Unavailable { op, source }
            } else {
                StoreError::Db { op, source }
            }
        })
    }
}

impl StoreError {
    /// A serialization failure or deadlock (PostgreSQL): the whole call may run again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Db { source, .. } if source.is_retryable())
    }
}
