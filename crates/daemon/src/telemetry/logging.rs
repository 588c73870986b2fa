//! Log setup: the terminal, journald (`<N>` priority prefixes) and plain styles, chosen from
//! the environment ([`init_logging`]).

use std::fmt;
use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FmtSpan, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

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
