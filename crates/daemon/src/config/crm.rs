//! `[crm]`: the central CRM (mutual TLS, store-and-forward sync).

use super::{Config, Errors, Section};
use serde::Deserialize;
use std::path::PathBuf;

/// CRM sync settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CrmConfig {
    /// Whether the gateway syncs at all (the outbox fills either way).
    pub enabled: bool,
    /// Base URL, `https://crm.example.com`.
    pub url: String,
    /// This store's client certificate (PEM).
    pub client_cert_file: Option<PathBuf>,
    /// This store's client key (PEM, mode 0600).
    pub client_key_file: Option<PathBuf>,
    /// CA that signed the CRM's server certificate (PEM).
    pub ca_file: Option<PathBuf>,
    /// Most events in one upload.
    pub batch_max_events: usize,
    /// Most bytes (uncompressed JSON) in one upload.
    pub batch_max_bytes: usize,
    /// How long a new event may wait to be batched, in milliseconds.
    pub batch_max_age_ms: u64,
    /// Seconds between polls of the changes feed (when the CRM does not long-poll).
    pub poll_interval_secs: u64,
    /// Long-poll: seconds the CRM may hold a changes request open until something changes
    /// (`?wait=`; 0: never ask to wait). A request may take this much longer than
    /// `request_timeout_ms`.
    pub feed_wait_secs: u64,
    /// Milliseconds a lane waits at most for the CRM's answer about a card it does not know
    /// (`GET .../customers/by-card/{card}`) before enrolling it offline; 0: never ask.
    pub lookup_timeout_ms: u64,
    /// TCP + TLS connect timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout in milliseconds.
    pub request_timeout_ms: u64,
    /// First retry delay in milliseconds (exponential, with jitter).
    pub backoff_min_ms: u64,
    /// Longest retry delay in milliseconds.
    pub backoff_max_ms: u64,
    /// Longest `Retry-After` (from a 429 or 503) honoured, in milliseconds.
    pub retry_after_max_ms: u64,
}

impl Default for CrmConfig {
    fn default() -> Self {
        CrmConfig {
            enabled: false,
            url: String::new(),
            client_cert_file: None,
            client_key_file: None,
            ca_file: None,
            batch_max_events: 1000,
            batch_max_bytes: 512 * 1024,
            batch_max_age_ms: 200,
            poll_interval_secs: 60,
            feed_wait_secs: 25,
            lookup_timeout_ms: 300,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            backoff_min_ms: 500,
            backoff_max_ms: 300_000,
            retry_after_max_ms: 3_600_000,
        }
    }
}

impl Section for CrmConfig {
    fn validate(&self, path: &str, _config: &Config, errors: &mut Errors) {
        if !self.enabled {
            return;
        }
        errors.check(
            self.url.starts_with("https://") && self.url.len() > "https://".len(),
            format!("{path}.url"),
            "required when crm.enabled: an https:// URL",
        );
        errors.check(
            self.client_cert_file.is_some(),
            format!("{path}.client_cert_file"),
            "required when crm.enabled: the store's client certificate (PEM)",
        );
        errors.check(
            self.client_key_file.is_some(),
            format!("{path}.client_key_file"),
            "required when crm.enabled: the store's client key (PEM)",
        );
        errors.check(
            self.ca_file.is_some(),
            format!("{path}.ca_file"),
            "required when crm.enabled: the CA of the CRM's server certificate (PEM)",
        );
        errors.check(
            (1..=100_000).contains(&self.batch_max_events),
            format!("{path}.batch_max_events"),
            "must be between 1 and 100000",
        );
        errors.check(
            self.backoff_min_ms > 0 && self.backoff_min_ms <= self.backoff_max_ms,
            format!("{path}.backoff_min_ms"),
            "must be positive and not above backoff_max_ms",
        );
        errors.check(
            self.batch_max_bytes >= 1024,
            format!("{path}.batch_max_bytes"),
            "must be at least 1024",
        );
        errors.check(
            self.connect_timeout_ms > 0 && self.request_timeout_ms > 0,
            format!("{path}.request_timeout_ms"),
            "timeouts must be positive",
        );
        errors.check(
            self.poll_interval_secs > 0,
            format!("{path}.poll_interval_secs"),
            "must be positive",
        );
        errors.check(
            self.feed_wait_secs <= 300,
            format!("{path}.feed_wait_secs"),
            "must be at most 300 (0: no long-poll)",
        );
        errors.check(
            self.lookup_timeout_ms <= 5_000,
            format!("{path}.lookup_timeout_ms"),
            "must be at most 5000: a lane waits this long for the CRM (0: never ask)",
        );
    }
}
