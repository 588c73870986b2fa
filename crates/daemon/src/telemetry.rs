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

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FmtSpan, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

// ---------------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------------

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    /// Interactive terminal: colours and timestamps.
    Terminal,
    /// stderr is connected to journald: `<N>` priority prefixes, no timestamps, no colours.
    Journal,
    /// Anything else (a file, a pipe): timestamps, no colours.
    Plain,
}

impl LogStyle {
    /// Chooses the style from the environment: `Journal` when `JOURNAL_STREAM` names the
    /// device and inode of our stderr (as systemd documents), `Terminal` when stderr is a
    /// terminal, `Plain` otherwise.
    pub fn detect() -> LogStyle {
        let stderr_id = stderr_device_inode();
        LogStyle::decide(
            std::env::var("JOURNAL_STREAM").ok().as_deref(),
            stderr_id,
            std::io::stderr().is_terminal(),
        )
    }

    /// The decision behind [`LogStyle::detect`], from explicit inputs. `journal_stream` is the
    /// value of `JOURNAL_STREAM` (`"DEVICE:INODE"`), `stderr_id` the device and inode of stderr.
    pub fn decide(
        journal_stream: Option<&str>,
        stderr_id: Option<(u64, u64)>,
        stderr_is_terminal: bool,
    ) -> LogStyle {
        let journal = journal_stream
            .and_then(|value| {
                let (dev, ino) = value.trim().split_once(':')?;
                Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
            })
            .is_some_and(|named| stderr_id == Some(named));
        if journal {
            LogStyle::Journal
        } else if stderr_is_terminal {
            LogStyle::Terminal
        } else {
            LogStyle::Plain
        }
    }
}

fn stderr_device_inode() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let metadata = std::fs::File::from(fd).metadata().ok()?;
    Some((metadata.dev(), metadata.ino()))
}

/// Sets up tracing: human-readable on a terminal, journald-friendly under systemd. Safe to call
/// more than once (later calls do nothing).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOYALTY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing::subscriber::set_global_default(log_subscriber(
        LogStyle::detect(),
        filter,
        std::io::stderr,
    ));
}

/// A subscriber writing to `writer` in `style`, filtered by `filter` (used by
/// [`init_logging`], and by tests that capture the output).
pub fn log_subscriber<W>(
    style: LogStyle,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_span_events(FmtSpan::NONE);
    match style {
        LogStyle::Terminal => Box::new(builder.with_ansi(true).finish()),
        LogStyle::Plain => Box::new(builder.with_ansi(false).finish()),
        LogStyle::Journal => Box::new(
            builder
                .with_ansi(false)
                .event_format(JournalFormat::default())
                .finish(),
        ),
    }
}

/// The syslog priority journald assigns a line with the `<N>` prefix (sd-daemon(3)).
pub fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Event format for journald: `<N>target: message fields`, no timestamp, no colours; a
/// multi-line message repeats the prefix on every line so journald keeps the priority.
#[derive(Debug)]
pub struct JournalFormat {
    inner: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl Default for JournalFormat {
    fn default() -> Self {
        JournalFormat {
            inner: tracing_subscriber::fmt::format()
                .without_time()
                .with_ansi(false)
                .with_level(false)
                .with_target(true),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let prefix = format!("<{}>", syslog_priority(event.metadata().level()));
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end_matches('\n');
        for part in body.split('\n') {
            writer.write_str(&prefix)?;
            writer.write_str(part)?;
            writer.write_str("\n")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// A secret value (password, bearer token, key material). `Debug` and `Display` print `***`;
/// only [`Secret::expose`] gives the value, at the one place that needs it. The memory is
/// overwritten on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source} (check that it exists and that the loyalty-gateway user may read it)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Everyone may read the file.
    #[error(
        "secret file {path} is readable by every user (mode {mode:o}); run: chmod o-rwx {path}"
    )]
    WorldReadable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds nothing but whitespace.
    #[error("secret file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Reads a secret from a file (trailing whitespace and newline removed). Refuses a file
    /// that every user may read, and an empty one.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        use std::os::unix::fs::PermissionsExt;
        let read_error = |source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(read_error)?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o004 != 0 {
            return Err(SecretError::WorldReadable {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = std::fs::read_to_string(path).map_err(read_error)?;
        let trimmed = text.trim_end().len();
        text.truncate(trimmed);
        if text.trim().is_empty() {
            return Err(SecretError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Secret(text))
    }

    /// The secret value. Never pass it to a log macro or an error message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in time independent of where they differ (for tokens).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != candidate.len() {
            return false;
        }
        mine.iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Defines a label-value enum with stable lower-case names.
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, so each series is exported (at zero) from the start.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value as exported.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
                fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_enum! {
    /// What a scan turned out to be (`loyalty_scans_total{kind}`).
    ScanKind {
        /// A program card (barcode, stripe, NFC, app QR).
        Card => "card",
        /// A voucher QR code.
        Voucher => "voucher",
        /// Refused: not a program card, unreadable, unknown range.
        Refused => "refused",
    }
}

label_enum! {
    /// What happened to a receipt (`loyalty_receipts_total{outcome}`).
    ReceiptOutcome {
        /// Applied and durable.
        Applied => "applied",
        /// A duplicate of an applied receipt (same answer, no new points).
        Duplicate => "duplicate",
        /// Refused as bad input (nothing written).
        Refused => "refused",
        /// Internal failure (storage); redelivery expected.
        Failed => "failed",
    }
}

label_enum! {
    /// The type of an answer to a lane (`loyalty_answer_latency_seconds{type}`).
    AnswerKind {
        /// `customer` after a card scan.
        Customer => "customer",
        /// `enrolled` after an unknown card of the program's range.
        Enrolled => "enrolled",
        /// `points` after a receipt.
        Points => "points",
        /// `reward` after a voucher scan.
        Reward => "reward",
        /// `error` for anything refused.
        Error => "error",
    }
}

label_enum! {
    /// Why a sync request failed (`loyalty_sync_errors_total{kind}`).
    SyncErrorKind {
        /// DNS, TCP or TLS connect failure, or timeout.
        Network => "network",
        /// The CRM answered 5xx.
        Server => "server",
        /// The CRM refused the request (4xx): needs an operator.
        Rejected => "rejected",
        /// The CRM's answer could not be understood.
        Protocol => "protocol",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScanLabel {
    kind: ScanKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SyncErrorLabel {
    kind: SyncErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: ReceiptOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabel {
    r#type: AnswerKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeviceLabel {
    device: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WhatLabel {
    what: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Upper bounds (seconds) of the answer-latency histogram: 0.5 ms to 2.5 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The metric registry and its handles. Clone it freely: clones share the same metrics, and
/// every recording method is a few atomic operations.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
}

struct MetricsInner {
    registry: Registry,
    scans: Family<ScanLabel, Counter>,
    receipts: Family<OutcomeLabel, Counter>,
    points_earned: Counter,
    points_reversed: Counter,
    answer_latency: Family<TypeLabel, Histogram>,
    outbox_depth: Gauge,
    outbox_oldest_age: FloatGauge,
    device_up: Family<DeviceLabel, Gauge>,
    broker_connected: Gauge,
    sync_errors: Family<SyncErrorLabel, Counter>,
    sync_acked: Counter,
    sync_last_success: Gauge,
    vouchers_issued: Counter,
    vouchers_redeemed: Counter,
    unknown_categories: Counter,
    clock_untrusted: Gauge,
    untrusted_stamps: Counter,
    invariant_violations: Family<WhatLabel, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered (at zero).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("loyalty");
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Version of the running gateway (value is always 1)",
            build_info,
        );
        let inner = MetricsInner {
            scans: Family::default(),
            receipts: Family::default(),
            points_earned: Counter::default(),
            points_reversed: Counter::default(),
            answer_latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            outbox_depth: Gauge::default(),
            outbox_oldest_age: FloatGauge::default(),
            device_up: Family::default(),
            broker_connected: Gauge::default(),
            sync_errors: Family::default(),
            sync_acked: Counter::default(),
            sync_last_success: Gauge::default(),
            vouchers_issued: Counter::default(),
            vouchers_redeemed: Counter::default(),
            unknown_categories: Counter::default(),
            clock_untrusted: Gauge::default(),
            untrusted_stamps: Counter::default(),
            invariant_violations: Family::default(),
            registry: Registry::default(),
        };
        registry.register("scans", "Scans handled, by kind", inner.scans.clone());
        registry.register(
            "receipts_unknown_category",
            "Receipts applied with a line category rules.categories does not list (earned nothing)",
            inner.unknown_categories.clone(),
        );
        registry.register(
            "receipts",
            "Receipts handled, by outcome",
            inner.receipts.clone(),
        );
        registry.register(
            "points_earned",
            "Points credited by receipts",
            inner.points_earned.clone(),
        );
        registry.register(
            "points_reversed",
            "Points debited by returns",
            inner.points_reversed.clone(),
        );
        registry.register(
            "answer_latency_seconds",
            "Time from input to answer on the lane, by answer type",
            inner.answer_latency.clone(),
        );
        registry.register(
            "outbox_depth",
            "Events in the outbox not yet acknowledged by the CRM",
            inner.outbox_depth.clone(),
        );
        registry.register(
            "outbox_oldest_unsent_age_seconds",
            "Age of the oldest event not yet acknowledged by the CRM (0 when none)",
            inner.outbox_oldest_age.clone(),
        );
        registry.register(
            "serial_device_up",
            "1 while a serial device is open and reading, by configured name",
            inner.device_up.clone(),
        );
        registry.register(
            "broker_connected",
            "1 while connected to the MQTT broker",
            inner.broker_connected.clone(),
        );
        registry.register(
            "sync_errors",
            "Failed CRM sync requests, by kind",
            inner.sync_errors.clone(),
        );
        registry.register(
            "sync_events_acked",
            "Events the CRM acknowledged",
            inner.sync_acked.clone(),
        );
        registry.register(
            "sync_last_success_timestamp_seconds",
            "Unix time of the last successful CRM exchange (0 when none yet)",
            inner.sync_last_success.clone(),
        );
        registry.register(
            "vouchers_issued",
            "Vouchers issued by this store",
            inner.vouchers_issued.clone(),
        );
        registry.register(
            "vouchers_redeemed",
            "Vouchers redeemed in this store",
            inner.vouchers_redeemed.clone(),
        );
        registry.register(
            "clock_untrusted",
            "1 while the wall clock is not trusted (no RTC, NTP not yet synchronised)",
            inner.clock_untrusted.clone(),
        );
        registry.register(
            "untrusted_time_events",
            "Scans and receipts handled while the clock was not trusted (their events carry clock_trusted false)",
            inner.untrusted_stamps.clone(),
        );
        registry.register(
            "invariant_violations",
            "Operations rejected because an internal invariant failed, by what",
            inner.invariant_violations.clone(),
        );
        // Export every known series from the start, so rates and alerts work before traffic.
        for &kind in ScanKind::ALL {
            let _ = inner.scans.get_or_create_owned(&ScanLabel { kind });
        }
        for &outcome in ReceiptOutcome::ALL {
            let _ = inner
                .receipts
                .get_or_create_owned(&OutcomeLabel { outcome });
        }
        for &kind in AnswerKind::ALL {
            let _ = inner
                .answer_latency
                .get_or_create_owned(&TypeLabel { r#type: kind });
        }
        for &kind in SyncErrorKind::ALL {
            let _ = inner
                .sync_errors
                .get_or_create_owned(&SyncErrorLabel { kind });
        }
        let mut inner = inner;
        inner.registry = registry;
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// A scan was handled.
    pub fn scan(&self, kind: ScanKind) {
        self.inner.scans.get_or_create(&ScanLabel { kind }).inc();
    }

    /// A receipt was handled.
    pub fn receipt(&self, outcome: ReceiptOutcome) {
        self.inner
            .receipts
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Points earned by one receipt (negative for a return).
    pub fn points(&self, earned: i64) {
        if earned >= 0 {
            self.inner.points_earned.inc_by(earned.unsigned_abs());
        } else {
            self.inner.points_reversed.inc_by(earned.unsigned_abs());
        }
    }

    /// An answer of type `kind` went to a lane `latency` after its input arrived.
    pub fn answer(&self, kind: AnswerKind, latency: Duration) {
        self.inner
            .answer_latency
            .get_or_create(&TypeLabel { r#type: kind })
            .observe(latency.as_secs_f64());
    }

    /// The outbox holds `depth` unacknowledged events, the oldest `oldest_unsent_age` old.
    pub fn outbox(&self, depth: u64, oldest_unsent_age: Option<Duration>) {
        self.inner
            .outbox_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.inner
            .outbox_oldest_age
            .set(oldest_unsent_age.map_or(0.0, |age| age.as_secs_f64()));
    }

    /// A serial device came up or went away.
    pub fn device(&self, name: &str, up: bool) {
        self.inner
            .device_up
            .get_or_create(&DeviceLabel {
                device: name.to_string(),
            })
            .set(i64::from(up));
    }

    /// The MQTT connection came up or went down.
    pub fn broker(&self, connected: bool) {
        self.inner.broker_connected.set(i64::from(connected));
    }

    /// A CRM sync request failed.
    pub fn sync_error(&self, kind: SyncErrorKind) {
        self.inner
            .sync_errors
            .get_or_create(&SyncErrorLabel { kind })
            .inc();
    }

    /// The CRM acknowledged `events` more events at Unix time `at_unix_seconds`.
    pub fn sync_success(&self, events: u64, at_unix_seconds: i64) {
        self.inner.sync_acked.inc_by(events);
        self.inner.sync_last_success.set(at_unix_seconds);
    }

    /// A voucher was issued.
    pub fn voucher_issued(&self) {
        self.inner.vouchers_issued.inc();
    }

    /// A receipt was applied with categories the rules do not list.
    pub fn unknown_categories(&self) {
        self.inner.unknown_categories.inc();
    }

    /// A voucher was redeemed.
    pub fn voucher_redeemed(&self) {
        self.inner.vouchers_redeemed.inc();
    }

    /// Whether the clock is currently trusted (see `clock`).
    pub fn clock_trusted(&self, trusted: bool) {
        self.inner.clock_untrusted.set(i64::from(!trusted));
    }

    /// A scan or receipt was handled (its events stamped) while the clock was untrusted.
    pub fn untrusted_time_event(&self) {
        self.inner.untrusted_stamps.inc();
    }

    /// An operation was rejected because an internal invariant failed (`what`: a short stable
    /// name such as `"ledger_chain"`).
    pub fn invariant_violation(&self, what: &str) {
        self.inner
            .invariant_violations
            .get_or_create(&WhatLabel {
                what: what.to_string(),
            })
            .inc();
    }

    /// The whole registry in the Prometheus/OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
