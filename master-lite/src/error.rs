//! Errors: [`ApiError`] for everything an API call can answer, [`MasterError`] for starting and
//! running the server.
//!
//! Every [`ApiError`] becomes one JSON [`ErrorBody`] with a stable `kind` and a status. Internal
//! errors (database, a dead worker) are logged with their detail and answered with a generic
//! message, so no SQL, path or library text leaks to clients.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slapos_proto::ErrorBody;

use crate::store::StoreError;

/// An API call failed. The variant decides the status; the text is the message clients see.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, an invalid id, a bad query or header: 400.
    #[error("{0}")]
    BadRequest(String),
    /// The caller may not do this (e.g. a free partition requesting an instance): 403.
    #[error("{0}")]
    Forbidden(String),
    /// Unknown computer, partition, release or instance: 404.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (same title with another release,
    /// removing a release in use, reporting on a free partition): 409.
    #[error("{0}")]
    Conflict(String),
    /// No free partition matches the request's SLA filter and release: 409.
    #[error("{0}")]
    NoAllocation(String),
    /// The body exceeds [`slapos_proto::MAX_BODY_BYTES`]: 413.
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body did not arrive in time: 408.
    #[error("request body not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The master is saturated (e.g. too many large bodies at once): 503, retry.
    #[error("{0}")]
    Busy(String),
    /// A database operation failed: 500, detail logged only.
    #[error("database error while trying to {op}: {source}")]
    Db {
        /// What the store was doing.
        op: &'static str,
        /// The engine's error.
        #[source]
        source: crate::store::sql::SqlError,
    },
    /// The database cannot be reached (PostgreSQL): 503, retry.
    #[error("{0}")]
    Unavailable(String),
    /// The master's filesystem is full (its space reserve is used up too): 507. Nothing was
    /// written; reads keep working.
    #[error(
        "the master's disk is full: nothing was written (while trying to {op}); free space on \
         the filesystem of its database"
    )]
    DiskFull {
        /// What the store was doing.
        op: &'static str,
    },
    /// Anything else that is the server's fault: 500, detail logged only.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A database serialization failure (PostgreSQL): the job may run again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Db { source, .. } if source.is_retryable())
    }

    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::NoAllocation(_) => StatusCode::CONFLICT,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Busy(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Db { .. } | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable kind (see [`ErrorBody::kind`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::NoAllocation(_) => "no_allocation",
            Self::TooLarge { .. } => "too_large",
            Self::DiskFull { .. } => "disk_full",
            Self::BodyTimeout(_) => "timeout",
            Self::Busy(_) => "busy",
            Self::Unavailable(_) => "unavailable",
            Self::Db { .. } | Self::Internal(_) => "internal",
        }
    }

    /// The body clients see: internal details are replaced by a generic message.
    pub fn body(&self) -> ErrorBody {
        let error = match self {
            Self::DiskFull { .. } | Self::Busy(_) | Self::Unavailable(_) => self.to_string(),
            Self::Db { .. } | Self::Internal(_) => {
                "internal error; the master's log has the details".to_owned()
            }
            other => other.to_string(),
        };
        ErrorBody {
            kind: self.kind().to_owned(),
            error,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::DiskFull { .. } | Self::Busy(_) | Self::Unavailable(_) = self {
            tracing::warn!(error = %self, %status, "request refused: resources exhausted");
        } else if status.is_server_error() {
            tracing::error!(error = %self, "internal error answered with 500");
        } else {
            tracing::debug!(error = %self, %status, "request refused");
        }
        (status, axum::Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => Self::BadRequest(m),
            StoreError::Forbidden(m) => Self::Forbidden(m),
            StoreError::NotFound(m) => Self::NotFound(m),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::NoAllocation(m) => Self::NoAllocation(m),
            StoreError::DiskFull { op } => Self::DiskFull { op },
            StoreError::Db { op, source } => Self::Db { op, source },
            e @ StoreError::Unavailable { .. } => {
                tracing::warn!(error = %e, "database unreachable: answering 503");
                Self::Unavailable(
                    "the master's database is unreachable: nothing was read or written; retry \
                     shortly"
                        .into(),
                )
            }
            StoreError::Internal(m) => Self::Internal(m),
        }
    }
}

/// Starting or running the master failed.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The database could not be opened, checked or migrated.
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    /// The database worker thread could not be started.
    #[error("failed to start the database worker thread: {0}")]
    Worker(#[source] std::io::Error),
    /// The HTTP server failed.
    #[error("HTTP server on {addr} failed: {source}")]
    Serve {
        /// Listening address.
        addr: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate authority could not be created or loaded, or a certificate issued.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// The TLS configuration could not be built.
    #[error("failed to configure TLS: {0}")]
    Tls(String),
    /// Plain HTTP on an address other hosts can reach, without `--allow-plain-http`.
    #[error(
        "refusing to serve plain HTTP on {addr}, which is not a loopback address: anyone \
         reaching it would act as the operator. Serve with --tls-dir DIR (mTLS), listen on \
         127.0.0.1, or pass --allow-plain-http to trust that network"
    )]
    PlainHttpRefused {
        /// The bound address.
        addr: String,
    },
    /// Binding the listening socket failed.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
}
