//! Sync with the central CRM (SPEC 2.5): the only module that knows the CRM's JSON.
//!
//! - `uploader`: reads the store's outbox in sequence order and uploads batches (gzip) over
//!   mutual TLS 1.3; advances only on the CRM's `acked_through`; retries with backoff forever,
//!   so the outbox simply grows on disk while the CRM is away.
//! - `feed`: long-polls the changes feed and applies each page atomically together with its
//!   cursor (`store::sync_state`).
//! - `lookup`: asks the CRM who holds a card a lane does not know, within
//!   `crm.lookup_timeout_ms`, before the lane enrolls it offline.
//! - `client` (hyper 1 + tokio-rustls, gzip, byte counters). The rustls configuration comes
//!   from [`crate::tls`] and the retry delays from [`crate::backoff`] (shared with the other
//!   edges).
//!
//! Invariant: an outbox event is only acknowledged locally after the CRM answered with an
//! `acked_through` covering it; a changes cursor is only stored in the same sled transaction as
//! the page it belongs to.

pub mod client;
pub mod lookup;
pub mod offers;
pub mod status;
pub mod uploader;

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
    TlsSetup(#[from] std::sync::Arc<crate::tls::TlsSetupError>),
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

impl From<crate::tls::TlsSetupError> for SyncError {
    fn from(err: crate::tls::TlsSetupError) -> Self {
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

    /// The `loyalty_sync_errors_total{kind}` of a failed request; `None` for local failures
    /// (configuration, TLS set-up, storage), which are not requests the CRM saw.
    pub fn metric_kind(&self) -> Option<crate::telemetry::SyncErrorKind> {
        use crate::telemetry::SyncErrorKind;
        match self {
            SyncError::Config(_) | SyncError::TlsSetup(_) | SyncError::Store(_) => None,
            SyncError::Tls(_)
            | SyncError::Connect(_)
            | SyncError::Connection(_)
            | SyncError::Timeout(_) => Some(SyncErrorKind::Network),
            SyncError::Status { status, .. } if *status >= 500 || *status == 429 => {
                Some(SyncErrorKind::Server)
            }
            SyncError::Status { .. } => Some(SyncErrorKind::Rejected),
            SyncError::BadResponse(_) => Some(SyncErrorKind::Protocol),
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

pub mod feed;

use crate::config::Config;
use feed::{CrmRules, FeedSettings};
use loyalty_store::{Store, StoreError};
use status::StatusSink;
use std::sync::Arc;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use uploader::{Outbox, OutboxCounts, PendingEvent, UploadSettings};

impl From<crate::blocking::TaskFailed> for SyncError {
    fn from(err: crate::blocking::TaskFailed) -> Self {
        SyncError::Store(err.to_string())
    }
}

fn store_error(err: StoreError) -> SyncError {
    SyncError::Store(err.to_string())
}

impl Outbox for Store {
    fn pending(&self, after: u64, max: usize) -> Result<Vec<PendingEvent>, SyncError> {
        Ok(self
            .outbox_raw_after(after, max)
            .map_err(store_error)?
            .into_iter()
            .map(|e| PendingEvent {
                seq: e.seq,
                json: e.json,
            })
            .collect())
    }

    fn ack(&self, through: u64) -> Result<(), SyncError> {
        self.outbox_ack(through).map_err(store_error)
    }

    fn counts(&self) -> Result<OutboxCounts, SyncError> {
        let (last_seq, acked_through) = self.outbox_positions().map_err(store_error)?;
        let depth = last_seq.saturating_sub(acked_through);
        let oldest = if depth > 0 {
            self.outbox_raw_after(acked_through, 1)
                .map_err(store_error)?
                .first()
                .map(|e| e.at)
        } else {
            None
        };
        Ok(OutboxCounts {
            depth,
            oldest_unsent_at: oldest,
            last_seq,
            acked_through,
        })
    }

    fn compact(&self) -> Result<u64, SyncError> {
        self.compact_outbox(jiff::Timestamp::now())
            .map_err(store_error)
    }
}

/// The running sync tasks and what the rest of the gateway reads from them.
pub struct SyncHandle {
    status: SyncStatusHandle,
    rules: watch::Receiver<Option<Arc<CrmRules>>>,
    keys: watch::Receiver<u64>,
    nudge: Arc<Notify>,
    poll_now: Arc<Notify>,
    counters: Arc<client::WireCounters>,
    tasks: tokio_util::task::TaskTracker,
    lookup: Option<Arc<lookup::CardLookup>>,
}

impl SyncHandle {
    /// The by-card lookup at the CRM for cards this store does not know (`None` when sync is
    /// off or `crm.lookup_timeout_ms` is 0).
    pub fn card_lookup(&self) -> Option<Arc<lookup::CardLookup>> {
        self.lookup.clone()
    }

    /// The status (outbox depth and age, last success and error, alarms) for `/health` and
    /// `/metrics`.
    pub fn status(&self) -> SyncStatusHandle {
        self.status.clone()
    }

    /// The earning rules last accepted from the CRM (`None`: use the configured ones). Await
    /// `changed()` on it to swap rules in when the CRM sends new ones.
    pub fn rules(&self) -> watch::Receiver<Option<Arc<CrmRules>>> {
        self.rules.clone()
    }

    /// Changes (a count of feed pages that stored voucher keys) each time the changes feed
    /// stored voucher keys or key revocations: await `changed()` on it to reload the trusted
    /// keys from the store at once.
    pub fn voucher_keys(&self) -> watch::Receiver<u64> {
        self.keys.clone()
    }

    /// Tells the uploader that new events were written (it also polls on its own).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Makes the changes feed poll now instead of at its next interval.
    pub fn poll_changes_now(&self) {
        self.poll_now.notify_one();
    }

    /// Bytes sent and received on the CRM connections (TLS included).
    pub fn wire_bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.counters.sent.load(Ordering::Relaxed),
            self.counters.received.load(Ordering::Relaxed),
        )
    }

    /// Waits for the tasks to end (after the cancellation token fired).
    pub async fn join(self) {
        self.stopped().await;
    }

    /// Waits for the tasks to end (after the cancellation token fired), without consuming the
    /// handle (the gateway shares it).
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Starts the uploader and the changes feed for `config.store.id` (nothing runs when
/// `crm.enabled` is false, but the status and the stored CRM rules are still available).
/// Must be called inside a tokio runtime. Both tasks stop when `cancel` fires.
pub fn start(
    config: &Config,
    store: Store,
    cancel: CancellationToken,
) -> Result<SyncHandle, SyncError> {
    start_with_metrics(config, store, cancel, None)
}

/// [`start`], recording failed requests and acknowledged events in `metrics`
/// (`loyalty_sync_errors_total`, `loyalty_sync_events_acked_total`, ...).
pub fn start_with_metrics(
    config: &Config,
    store: Store,
    cancel: CancellationToken,
    metrics: Option<crate::telemetry::Metrics>,
) -> Result<SyncHandle, SyncError> {
    let crm = &config.crm;
    let (sink, status) = StatusSink::new(crm.enabled, metrics.clone());
    let initial_rules = feed::load_rules(&store, &config.store.currency);
    let (rules_tx, rules) = watch::channel(initial_rules);
    let rules_tx = Arc::new(rules_tx);
    let (keys_tx, keys) = watch::channel(0u64);
    let nudge = Arc::new(Notify::new());
    let poll_now = Arc::new(Notify::new());
    let counters = Arc::new(client::WireCounters::default());
    let tasks = tokio_util::task::TaskTracker::new();
    let mut card_lookup = None;
    if let Ok(Some(reason)) = store.rules_rejection() {
        sink.update(|s| {
            s.rules_rejected = Some(SyncFailure {
                at: jiff::Timestamp::now(),
                kind: "rules",
                message: reason,
            })
        });
    }
    if crm.enabled {
        let settings = client::ClientSettings::from_config(crm)?;
        let instance = store.instance().map_err(store_error)?;
        let backoff_min = Duration::from_millis(crm.backoff_min_ms);
        let backoff_max = Duration::from_millis(crm.backoff_max_ms);
        let retry_after_cap = Duration::from_millis(crm.retry_after_max_ms);
        let upload = UploadSettings {
            store_id: config.store.id.clone(),
            instance: instance.clone(),
            max_events: crm.batch_max_events,
            max_bytes: crm.batch_max_bytes,
            max_age: Duration::from_millis(crm.batch_max_age_ms),
            backoff_min,
            backoff_max,
            retry_after_cap,
            compaction_interval: Duration::from_secs(3600),
        };
        let feed_settings = FeedSettings {
            store_id: config.store.id.clone(),
            instance: instance.clone(),
            currency: config.store.currency.clone(),
            poll_interval: Duration::from_secs(crm.poll_interval_secs),
            wait: Duration::from_secs(crm.feed_wait_secs),
            backoff_min,
            backoff_max,
            retry_after_cap,
        };
        if crm.lookup_timeout_ms > 0 {
            card_lookup = Some(Arc::new(lookup::CardLookup::new(
                config.store.id.clone(),
                instance.clone(),
                settings.clone(),
                counters.clone(),
                Duration::from_millis(crm.lookup_timeout_ms),
                status.clone(),
                metrics.clone(),
            )));
        }
        tasks.spawn(uploader::run(
            store.clone(),
            client::CrmClient::new(settings.clone(), counters.clone()),
            upload,
            sink.clone(),
            nudge.clone(),
            cancel.clone(),
        ));
        tasks.spawn(feed::run(
            store.clone(),
            client::CrmClient::new(settings, counters.clone()),
            feed_settings,
            sink.clone(),
            feed::FeedSignals {
                rules: rules_tx.clone(),
                keys: keys_tx,
            },
            poll_now.clone(),
            cancel.clone(),
        ));
        // Keep the wire counters in the status.
        let c = counters.clone();
        let s = sink.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            use std::sync::atomic::Ordering;
            loop {
                s.update(|st| {
                    st.bytes_sent = c.sent.load(Ordering::Relaxed);
                    st.bytes_received = c.received.load(Ordering::Relaxed);
                });
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }
    Ok(SyncHandle {
        status,
        rules,
        keys,
        nudge,
        poll_now,
        counters,
        tasks,
        lookup: card_lookup,
    })
}

/// Runs sync until `cancel` fires (the interface of the team brief).
pub async fn run(
    config: &Config,
    store: Store,
    cancel: CancellationToken,
) -> Result<(), SyncError> {
    start(config, store, cancel)?.join().await;
    Ok(())
}
