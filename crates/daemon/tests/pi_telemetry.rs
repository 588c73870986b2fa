//! Log formats (terminal, journald), secrets that never reach a log, and the metric registry's
//! names and text encoding.

use loyalty_daemon::telemetry::{
    log_subscriber, AnswerKind, LogStyle, Metrics, ReceiptOutcome, ScanKind, Secret, SecretError,
    SyncErrorKind,
};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
    }
}

fn capture(style: LogStyle, emit: impl FnOnce()) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = log_subscriber(style, EnvFilter::new("debug"), move || writer.clone());
    tracing::subscriber::with_default(subscriber, emit);
    captured.text()
}

#[test]
fn journald_lines_carry_syslog_priorities_and_no_timestamps_or_colours() {
    let text = capture(LogStyle::Journal, || {
        tracing::error!(device = "lane1-scanner", "device unplugged");
        tracing::warn!("broker unreachable");
        tracing::info!(points = 12, "receipt applied");
        tracing::debug!("tick");
        tracing::info!("first line\nsecond line");
    });
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].starts_with("<3>"), "{text}");
    assert!(lines[0].contains("device unplugged"));
    assert!(lines[0].contains("device=\"lane1-scanner\""));
    assert!(lines[1].starts_with("<4>"), "{text}");
    assert!(lines[2].starts_with("<6>"), "{text}");
    assert!(lines[2].contains("points=12"));
    assert!(lines[3].starts_with("<7>"), "{text}");
    // Every line of a multi-line message keeps its priority.
    assert!(lines[4].starts_with("<6>") && lines[4].contains("first line"));
    assert_eq!(lines[5], "<6>second line");
    assert!(!text.contains('\u{1b}'), "no ANSI escapes: {text:?}");
    assert!(
        !text.contains("2026-") && !text.contains("1970-"),
        "no timestamps: {text}"
    );
    // The level is in the prefix, not repeated as a word.
    assert!(!lines[2].contains("INFO"), "{text}");
}

#[test]
fn plain_output_has_timestamps_and_no_colours() {
    let text = capture(LogStyle::Plain, || tracing::info!("hello"));
    assert!(text.contains("INFO"), "{text}");
    assert!(text.contains("hello"));
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(!text.starts_with('<'), "{text}");
    // RFC 3339 timestamp at the start of the line (year 2xxx).
    assert!(
        text.starts_with('2') && text.as_bytes()[4] == b'-',
        "{text}"
    );
}

#[test]
fn terminal_output_is_coloured() {
    let text = capture(LogStyle::Terminal, || tracing::warn!("careful"));
    assert!(text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("careful"));
}

#[test]
fn journal_style_only_when_journal_stream_names_our_stderr() {
    let ours = Some((64769, 123456));
    assert_eq!(
        LogStyle::decide(Some("64769:123456"), ours, false),
        LogStyle::Journal
    );
    assert_eq!(
        LogStyle::decide(Some("64769:123456"), ours, true),
        LogStyle::Journal
    );
    // Inherited by a child whose stderr was redirected elsewhere.
    assert_eq!(
        LogStyle::decide(Some("64769:999"), ours, false),
        LogStyle::Plain
    );
    assert_eq!(
        LogStyle::decide(Some("64769:999"), ours, true),
        LogStyle::Terminal
    );
    assert_eq!(
        LogStyle::decide(Some("garbage"), ours, false),
        LogStyle::Plain
    );
    assert_eq!(LogStyle::decide(None, ours, true), LogStyle::Terminal);
    assert_eq!(LogStyle::decide(None, None, false), LogStyle::Plain);
}

#[test]
fn secrets_print_as_stars_in_debug_display_and_logs() {
    #[derive(Debug)]
    #[allow(dead_code)]
    struct MqttCredentials {
        username: String,
        password: Secret,
    }
    let credentials = MqttCredentials {
        username: "gateway".into(),
        password: Secret::new("hunter2"),
    };
    let debug = format!("{credentials:?}");
    assert!(
        debug.contains("gateway") && debug.contains("Secret(***)"),
        "{debug}"
    );
    assert!(!debug.contains("hunter2"));
    assert_eq!(credentials.password.to_string(), "***");
    let text = capture(LogStyle::Journal, || {
        tracing::info!(password = %credentials.password, creds = ?credentials, "connecting");
    });
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(credentials.password.expose(), "hunter2");
    assert!(credentials.password.matches(b"hunter2"));
    assert!(!credentials.password.matches(b"hunter3"));
    assert!(!credentials.password.matches(b"hunter"));
}

#[test]
fn secret_files_are_trimmed_and_must_not_be_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("password");
    std::fs::write(&path, "p4ss word\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(
        Secret::from_file(&path).expect("secret").expose(),
        "p4ss word"
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = Secret::from_file(&path).expect_err("world-readable");
    assert!(matches!(
        err,
        SecretError::WorldReadable { mode: 0o644, .. }
    ));
    let message = err.to_string();
    assert!(message.contains("chmod o-rwx"), "{message}");
    assert!(!message.contains("p4ss"), "{message}");

    std::fs::write(&path, "\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(matches!(
        Secret::from_file(&path),
        Err(SecretError::Empty { .. })
    ));
    assert!(matches!(
        Secret::from_file(&dir.path().join("missing")),
        Err(SecretError::Read { .. })
    ));
}

#[test]
fn every_metric_is_exported_under_its_name() {
    let metrics = Metrics::new();
    let handle = metrics.clone();
    handle.scan(ScanKind::Card);
    handle.scan(ScanKind::Refused);
    handle.receipt(ReceiptOutcome::Applied);
    handle.receipt(ReceiptOutcome::Duplicate);
    handle.points(120);
    handle.points(-20);
    handle.answer(AnswerKind::Points, Duration::from_micros(800));
    handle.outbox(7, Some(Duration::from_secs(90)));
    handle.device("lane1-scanner", true);
    handle.device("lane1-printer", false);
    handle.broker(true);
    handle.sync_error(SyncErrorKind::Network);
    handle.sync_success(5, 1_795_000_000);
    handle.voucher_issued();
    handle.voucher_redeemed();
    handle.clock_trusted(false);
    handle.untrusted_time_event();
    handle.invariant_violation("ledger_chain");
    let text = metrics.encode();
    for expected in [
        "loyalty_build_info{version=\"",
        "loyalty_scans_total{kind=\"card\"} 1",
        "loyalty_scans_total{kind=\"refused\"} 1",
        "loyalty_receipts_total{outcome=\"applied\"} 1",
        "loyalty_receipts_total{outcome=\"duplicate\"} 1",
        "loyalty_points_earned_total 120",
        "loyalty_points_reversed_total 20",
        "loyalty_answer_latency_seconds_bucket{le=\"0.001\",type=\"points\"} 1",
        "loyalty_answer_latency_seconds_bucket{le=\"0.0005\",type=\"points\"} 0",
        "loyalty_answer_latency_seconds_count{type=\"points\"} 1",
        "loyalty_outbox_depth 7",
        "loyalty_outbox_oldest_unsent_age_seconds 90.0",
        "loyalty_serial_device_up{device=\"lane1-scanner\"} 1",
        "loyalty_serial_device_up{device=\"lane1-printer\"} 0",
        "loyalty_broker_connected 1",
        "loyalty_sync_errors_total{kind=\"network\"} 1",
        "loyalty_sync_events_acked_total 5",
        "loyalty_sync_last_success_timestamp_seconds 1795000000",
        "loyalty_vouchers_issued_total 1",
        "loyalty_vouchers_redeemed_total 1",
        "loyalty_clock_untrusted 1",
        "loyalty_untrusted_time_events_total 1",
        "loyalty_invariant_violations_total{what=\"ledger_chain\"} 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    // Metrics not touched yet are still described (dashboards can be built before traffic).
    let fresh = Metrics::new().encode();
    for name in [
        "loyalty_outbox_depth 0",
        "loyalty_clock_untrusted 0",
        "# TYPE loyalty_receipts counter",
    ] {
        assert!(fresh.contains(name), "missing {name:?} in:\n{fresh}");
    }
}
