//! Logging and metrics: every metric name and the log setup live here, and the rule that
//! secrets are never logged ([`Secret`]).
//!
//! - **Logging** ([`init_logging`]): human-readable with colours on a terminal; under systemd
//!   (`JOURNAL_STREAM` names our stderr) one line per event with a `<N>` syslog priority prefix
//!   that journald turns into the entry's priority, without timestamps (journald adds its own)
//!   and without ANSI colours; plain text with timestamps otherwise. `LOYALTY_LOG` takes an
//!   `EnvFilter` directive (default `info`).
//! - **Metrics** ([`Metrics`]): one registry owning every metric name (all prefixed
//!   `loyalty_`), with cheap typed handles the other modules call; [`Metrics::encode`] renders
//!   the Prometheus/OpenMetrics text served on `GET /metrics`.
//! - **Secrets** ([`Secret`]): passwords, tokens and keys read from files are held in a
//!   `Secret`, whose `Debug` and `Display` print `***`, so no log line or error can show them.

mod families;
mod logging;
mod metrics;
mod secret;

pub use families::{
    AnswerKind, LookupOutcomeKind, ReceiptOutcome, RedemptionOutcome, ScanKind, SyncErrorKind,
};
pub use logging::{init_logging, log_subscriber, syslog_priority, JournalFormat, LogStyle};
pub use metrics::{Metrics, METRICS_CONTENT_TYPE};
pub use secret::{Secret, SecretError};
