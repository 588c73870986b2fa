//! Log formats (terminal, journald), secrets that never reach a log, and the metric registry's
//! names and text encoding.

use loyalty_daemon::telemetry::{log_subscriber, LogStyle, Metrics, Secret, SecretError};
use std::io::Write;
use std::sync::{Arc, Mutex};
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

/// Every metric `docs/arch/pi.md` documents is registered and exported (at zero) before any
/// traffic, so dashboards can be built first. That the daemon records each one where its event
/// happens is tested through a running daemon (`tests/gateway_lifecycle.rs`).
#[test]
fn every_documented_metric_is_exported_from_the_start() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/arch/pi.md"
    ))
    .expect("docs/arch/pi.md");
    let table = doc
        .split("## Metrics")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a metrics section");
    let names: Vec<&str> = table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .flat_map(|line| {
            let first = line.split('|').nth(1).unwrap_or_default();
            first.split('`').skip(1).step_by(2).collect::<Vec<_>>()
        })
        .collect();
    assert!(names.len() >= 18, "{names:?}");
    let fresh = Metrics::new().encode();
    // Families with an open label set (device names, invariant names) have no series, and so
    // no lines, until their first event.
    let open_labels = ["serial_device_up", "invariant_violations_total"];
    for name in names.into_iter().filter(|name| !open_labels.contains(name)) {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            fresh.contains(&format!("# TYPE loyalty_{family} ")),
            "documented metric {name} is not exported:\n{fresh}"
        );
    }
    assert!(fresh.ends_with("# EOF\n"));
    for name in [
        "loyalty_outbox_depth 0",
        "loyalty_clock_untrusted 0",
        "loyalty_sync_errors_total{kind=\"network\"} 0",
        "loyalty_receipts_total{outcome=\"applied\"} 0",
    ] {
        assert!(fresh.contains(name), "missing {name:?} in:\n{fresh}");
    }
}
