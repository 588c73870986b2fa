//! The sync status the gateway shows in `/health` and `/metrics`: outbox depth and age, the
//! last success and the last error of uploads and of the changes feed, TLS problems, alarms.
//! Shared through a `tokio::sync::watch` channel: writers are the uploader and the feed, readers
//! call [`SyncStatusHandle::snapshot`].

use jiff::Timestamp;
use std::time::Duration;
use tokio::sync::watch;

/// One failure, as shown to an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFailure {
    /// When it happened.
    pub at: Timestamp,
    /// Short kind for metric labels (`tls`, `connect`, `timeout`, `http_status`, ...).
    pub kind: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

/// Everything known about the CRM link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Whether sync runs at all (`crm.enabled`).
    pub enabled: bool,
    /// Events in the outbox not yet acknowledged by the CRM.
    pub outbox_depth: u64,
    /// Creation time of the oldest unacknowledged event.
    pub oldest_unsent_at: Option<Timestamp>,
    /// Highest sequence number in the outbox.
    pub last_seq: u64,
    /// Highest sequence number the CRM acknowledged.
    pub acked_through: u64,
    /// Events acknowledged since start.
    pub events_uploaded: u64,
    /// Successful uploads since start.
    pub batches_uploaded: u64,
    /// Last successful upload.
    pub last_upload_success: Option<Timestamp>,
    /// Last failed upload (kept after a later success, see `upload_failures`).
    pub last_upload_error: Option<SyncFailure>,
    /// Upload failures in a row (0 after a success).
    pub upload_failures: u32,
    /// Changes cursor in use.
    pub feed_cursor: Option<String>,
    /// Pages applied since start.
    pub feed_pages_applied: u64,
    /// Last successful changes poll.
    pub last_feed_success: Option<Timestamp>,
    /// Last failed changes poll.
    pub last_feed_error: Option<SyncFailure>,
    /// Feed failures in a row.
    pub feed_failures: u32,
    /// The last rule set the CRM sent that was refused, with the reason (the previous rules
    /// stay in force).
    pub rules_rejected: Option<SyncFailure>,
    /// Set when the CRM knows more than this store (it acknowledged a sequence number beyond
    /// the local outbox: local data may have been lost). Never cleared automatically.
    pub alarm: Option<String>,
    /// Bytes written to the CRM's TCP connections (TLS included).
    pub bytes_sent: u64,
    /// Bytes read from the CRM's TCP connections.
    pub bytes_received: u64,
}

impl SyncStatus {
    /// Age of the oldest unacknowledged event at `now` (zero when none).
    pub fn oldest_unsent_age(&self, now: Timestamp) -> Duration {
        match self.oldest_unsent_at {
            Some(at) => now.duration_since(at).try_into().unwrap_or(Duration::ZERO),
            None => Duration::ZERO,
        }
    }

    /// True when the last upload and the last poll succeeded and no alarm is raised.
    pub fn healthy(&self) -> bool {
        self.upload_failures == 0 && self.feed_failures == 0 && self.alarm.is_none()
    }
}

/// Read side of the status (cheap to clone).
#[derive(Debug, Clone)]
pub struct SyncStatusHandle {
    receiver: watch::Receiver<SyncStatus>,
}

impl SyncStatusHandle {
    /// The current status.
    pub fn snapshot(&self) -> SyncStatus {
        self.receiver.borrow().clone()
    }

    /// Waits until `predicate` holds (or the writers are gone), returning that status.
    pub async fn wait_for(&self, predicate: impl FnMut(&SyncStatus) -> bool) -> SyncStatus {
        let mut receiver = self.receiver.clone();
        let result = receiver.wait_for(predicate).await.map(|s| s.clone());
        result.unwrap_or_else(|_| self.snapshot())
    }
}

/// Write side of the status.
#[derive(Debug, Clone)]
pub(crate) struct StatusSink {
    sender: std::sync::Arc<watch::Sender<SyncStatus>>,
    metrics: Option<crate::telemetry::Metrics>,
}

impl StatusSink {
    pub(crate) fn new(
        enabled: bool,
        metrics: Option<crate::telemetry::Metrics>,
    ) -> (StatusSink, SyncStatusHandle) {
        let (sender, receiver) = watch::channel(SyncStatus {
            enabled,
            ..SyncStatus::default()
        });
        (
            StatusSink {
                sender: std::sync::Arc::new(sender),
                metrics,
            },
            SyncStatusHandle { receiver },
        )
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut SyncStatus)) {
        self.sender.send_modify(change);
    }

    /// A request to the CRM failed (`loyalty_sync_errors_total`; local failures such as
    /// storage or configuration are not requests that failed and only show in the status).
    pub(crate) fn request_failed(&self, err: &super::SyncError) {
        if let (Some(metrics), Some(kind)) = (&self.metrics, err.metric_kind()) {
            metrics.sync_error(kind);
        }
    }

    /// The CRM acknowledged `events` more events at `at`.
    pub(crate) fn events_acked(&self, events: u64, at: Timestamp) {
        if let Some(metrics) = &self.metrics {
            metrics.sync_success(events, at.as_second());
        }
    }

    /// An internal invariant failed (`loyalty_invariant_violations_total{what}`).
    pub(crate) fn invariant_violation(&self, what: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.invariant_violation(what);
        }
    }
}
