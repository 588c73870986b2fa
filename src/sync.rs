//! Sync with the central CRM (SPEC 2.5): the only module that knows the CRM's JSON.
//!
//! - `uploader`: reads the store's outbox in sequence order and uploads batches (gzip) over
//!   mutual TLS 1.3; advances only on the CRM's `acked_through`; retries with backoff forever,
//!   so the outbox simply grows on disk while the CRM is away.
//! - `feed`: polls the changes feed and applies each page atomically together with its cursor
//!   (`store::sync_state`).
//! - `client` (hyper 1 + tokio-rustls), `tls` (rustls configs, ring provider, operator-readable
//!   TLS errors), `wire` (the JSON types), `backoff`, `certs` (a throw-away CA for tests and the
//!   demo).
//!
//! Invariant: an outbox event is only acknowledged locally after the CRM answered with an
//! `acked_through` covering it; a changes cursor is only stored in the same sled transaction as
//! the page it belongs to.

pub mod backoff;
pub mod certs;
pub mod client;
pub mod status;
pub mod tls;
pub mod uploader;
pub mod wire;

pub use status::{SyncFailure, SyncStatus, SyncStatusHandle};

use std::time::Duration;

/// Why one sync attempt failed. Every variant is retried; the text says what an operator can do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    /// The configuration cannot work (bad URL).
    #[error("CRM configuration: {0}")]
    Config(String),
    /// Certificates or keys could not be loaded.
    #[error("{0}")]
    TlsSetup(#[from] std::sync::Arc<tls::TlsSetupError>),
    /// The TLS handshake or the TLS session failed (certificate problems).
    #[error("{0}")]
    Tls(String),
    /// The CRM could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The connection broke mid-request.
    #[error("{0}")]
    Connection(String),
    /// The CRM took too long.
    #[error("{0}")]
    Timeout(String),
    /// The CRM answered with an error status.
    #[error("the CRM answered HTTP {status}{}: {body}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Status {
        /// HTTP status code.
        status: u16,
        /// `Retry-After`, when sent with 429 or 503.
        retry_after: Option<Duration>,
        /// The start of the answer's body.
        body: String,
    },
    /// The CRM's answer could not be understood.
    #[error("{0}")]
    BadResponse(String),
    /// Local storage failed.
    #[error("local storage: {0}")]
    Store(String),
}

impl From<tls::TlsSetupError> for SyncError {
    fn from(err: tls::TlsSetupError) -> Self {
        SyncError::TlsSetup(std::sync::Arc::new(err))
    }
}

impl SyncError {
    /// `Retry-After` of a 429 or 503 answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SyncError::Status {
                status: 429 | 503,
                retry_after,
                ..
            } => *retry_after,
            _ => None,
        }
    }

    /// A short machine-readable kind, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::Config(_) => "config",
            SyncError::TlsSetup(_) | SyncError::Tls(_) => "tls",
            SyncError::Connect(_) => "connect",
            SyncError::Connection(_) => "connection",
            SyncError::Timeout(_) => "timeout",
            SyncError::Status { .. } => "http_status",
            SyncError::BadResponse(_) => "bad_response",
            SyncError::Store(_) => "storage",
        }
    }
}
