//! The serial edge: one reader per `[[serial]]` device. Scanners (`kind = "scanner"`) send one
//! code per line, forwarded as [`Input::Scan`]; receipt printer taps (`kind = "escpos"`) pass
//! every byte from the till (`path`) to the printer (`printer_path`) unchanged, relay the
//! printer's answers (DLE EOT status bytes) back, and feed the till's bytes to the ESC/POS
//! assembler, forwarded as [`Input::Receipt`] at each cut or idle gap. Device state changes are
//! [`Input::Device`].
//!
//! Shape: each device runs on its own OS thread (the `serialport` crate is blocking), named
//! `serial:<name>` (the tap's back channel `tapback:<name>`); threads hand inputs to an
//! unbounded channel that an async task forwards to the gateway, so a slow gateway never
//! stalls the printer.
//!
//! Invariants:
//! - A device that disappears (USB unplug: `BrokenPipe`/`EIO`, or `Ok(0)` reads that never
//!   end) is closed at once, reported down once, and reopened by polling its path with
//!   exponential backoff ([`REOPEN_MIN`] .. [`REOPEN_MAX`]); no loop spins while it is gone.
//! - A tap is up only when both ports are open; when either side goes, both are closed (the
//!   till sees its printer vanish, as without the gateway) and reopened together.
//! - The printer gets the till's bytes unchanged and in order; parsing never alters them.
//!   With `answer = "print"` the gateway prints the lane's answer (a trailer: points, balance,
//!   new vouchers' QR codes, a cut) right after the till's cut: the till's bytes after the cut
//!   are held (read and kept, so no UART buffer overflows) until the trailer is out or
//!   `answer_timeout_ms` passed, so a trailer never interleaves with the next receipt.
//! - Scanner lines longer than `max_line_len` are dropped (reported), never buffered without
//!   bound; nothing here panics on device input.

use crate::backoff::Backoff;
use crate::capture::{CaptureSetupError, ReceiptCapture};
use crate::config::{Built, SerialConfig, SerialKind};
use crate::input::{send_printed_receipt, AwaitedAnswer, Input, Origin};
use loyalty_core::escpos::Document;
use serialport::{DataBits, FlowControl, Parity, SerialPort, StopBits, TTYPort};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long one blocking read waits before the thread checks for shutdown and idle gaps.
pub const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// First wait before reopening a device that is gone.
pub const REOPEN_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts to reopen a device that is gone.
pub const REOPEN_MAX: Duration = Duration::from_secs(2);
/// How long one blocking read waits while an answer to print is awaited (the answer is looked
/// for between reads).
pub const ANSWER_POLL: Duration = Duration::from_millis(5);
/// Most till bytes held while an answer is awaited; beyond, they pass on unanswered.
pub const MAX_HELD: usize = 1 << 20;
/// Consecutive zero-byte reads (poll says readable, read returns nothing) that mean the device
/// is gone.
const ZERO_READS_GONE: u32 = 3;

/// Why the serial edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum SerialSetupError {
    /// A tap's receipt capture could not be built from the configuration.
    #[error("serial device {device}: {source}")]
    Capture {
        /// Device name.
        device: String,
        /// Why.
        source: CaptureSetupError,
    },
    /// A tap without a capture (pass one from [`ReceiptCapture::for_serial`]).
    #[error("serial device {0}: kind = \"escpos\" needs a receipt capture (profile)")]
    NoCapture(String),
    /// A tap without `printer_path`.
    #[error("serial device {0}: kind = \"escpos\" needs printer_path")]
    NoPrinterPath(String),
}

/// Runs every `[[serial]]` device of `config` until `shutdown`; returns when all readers have
/// stopped. Fails before starting anything if a tap's capture cannot be built.
pub async fn run_all(
    config: &Built,
    tx: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) -> Result<(), SerialSetupError> {
    let mut devices = Vec::new();
    for device in &config.raw.serial {
        let capture = match device.kind {
            SerialKind::Scanner => None,
            SerialKind::Escpos => Some(ReceiptCapture::for_serial(device, config).map_err(
                |source| SerialSetupError::Capture {
                    device: device.name.clone(),
                    source,
                },
            )?),
        };
        devices.push((device.clone(), capture));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (device, capture) in devices {
        tasks.spawn(run(device, capture, tx.clone(), shutdown.clone()));
    }
    let mut first_error = None;
    while let Some(result) = tasks.join_next().await {
        if let Ok(Err(err)) = result {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Runs one serial device until `shutdown`: reads it, reopens it when it comes back, and
/// sends what it reads to `tx`. `capture` is required for `kind = "escpos"` (build it with
/// [`ReceiptCapture::for_serial`]) and ignored for scanners. Returns once the device thread
/// has stopped (within about [`READ_TIMEOUT`] of `shutdown`).
pub async fn run(
    cfg: SerialConfig,
    capture: Option<ReceiptCapture>,
    tx: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) -> Result<(), SerialSetupError> {
    if cfg.kind == SerialKind::Escpos {
        if capture.is_none() {
            return Err(SerialSetupError::NoCapture(cfg.name.clone()));
        }
        if cfg.printer_path.is_none() {
            return Err(SerialSetupError::NoPrinterPath(cfg.name.clone()));
        }
    }
    let stop = shutdown.child_token();
    let (inner_tx, mut inner_rx) = mpsc::unbounded_channel();
    let thread_stop = stop.clone();
    let thread_name = thread_name("serial:", &cfg.name);
    let spawned = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let events = Events {
                name: cfg.name.clone(),
                lane: cfg.lane.clone(),
                tx: inner_tx,
            };
            device_loop(&cfg, capture.as_ref(), &events, &thread_stop);
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "cannot start a serial reader thread");
        return Ok(());
    }
    // Forward until the thread ends (it drops its sender) or the gateway is gone.
    while let Some(input) = inner_rx.recv().await {
        if tx.send(input).await.is_err() {
            stop.cancel();
        }
    }
    Ok(())
}

fn thread_name(prefix: &str, name: &str) -> String {
    // Linux keeps 15 bytes of a thread name.
    let mut full = format!("{prefix}{name}");
    while full.len() > 15 {
        full.pop();
    }
    full
}

/// Where a device thread sends its inputs.
struct Events {
    name: String,
    lane: String,
    tx: mpsc::UnboundedSender<Input>,
}

impl Events {
    fn device(&self, up: bool, detail: String) {
        if up {
            tracing::info!(device = %self.name, %detail, "serial device up");
        } else {
            tracing::warn!(device = %self.name, %detail, "serial device down");
        }
        let _ = self.tx.send(Input::Device {
            name: self.name.clone(),
            up,
            detail,
        });
    }

    fn scan(&self, data: Vec<u8>) {
        let _ = self.tx.send(Input::Scan {
            lane: self.lane.clone(),
            data,
            origin: Origin::Serial(self.name.clone()),
            done: None,
        });
    }

    /// Sends a finished document as a receipt; returns the answer to await when the capture
    /// prints answers (and the receipt could be read).
    fn receipt(&self, capture: &ReceiptCapture, document: &Document) -> Option<AwaitedAnswer> {
        let (tx, lane, device) = (&self.tx, &self.lane, &self.name);
        send_printed_receipt(tx, lane, device, Origin::Serial, capture, document)
    }
}

/// Sleeps `duration` in short slices so that shutdown is noticed; false when stopped.
fn sleep_unless_stopped(duration: Duration, stop: &CancellationToken) -> bool {
    let until = Instant::now() + duration;
    loop {
        if stop.is_cancelled() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

fn open(cfg: &SerialConfig, path: &Path) -> Result<TTYPort, serialport::Error> {
    let data_bits = match cfg.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    let parity = match cfg.parity.as_str() {
        "odd" => Parity::Odd,
        "even" => Parity::Even,
        _ => Parity::None,
    };
    let stop_bits = if cfg.stop_bits == 2 {
        StopBits::Two
    } else {
        StopBits::One
    };
    let flow_control = match cfg.flow_control.as_str() {
        "software" => FlowControl::Software,
        "hardware" => FlowControl::Hardware,
        _ => FlowControl::None,
    };
    serialport::new(path.to_string_lossy(), cfg.baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(flow_control)
        .timeout(READ_TIMEOUT)
        .open_native()
}

/// The open ports of one device: a scanner, or a tap's till and printer sides.
enum Ports {
    Scanner(TTYPort),
    Tap { till: TTYPort, printer: TTYPort },
}

fn open_ports(cfg: &SerialConfig) -> Result<Ports, String> {
    let till = open(cfg, &cfg.path).map_err(|err| format!("{}: {err}", cfg.path.display()))?;
    match (&cfg.kind, &cfg.printer_path) {
        (SerialKind::Escpos, Some(printer_path)) => {
            let printer = open(cfg, printer_path)
                .map_err(|err| format!("printer {}: {err}", printer_path.display()))?;
            Ok(Ports::Tap { till, printer })
        }
        _ => Ok(Ports::Scanner(till)),
    }
}

/// Opens, reads, and reopens one device until `stop`.
fn device_loop(
    cfg: &SerialConfig,
    capture: Option<&ReceiptCapture>,
    events: &Events,
    stop: &CancellationToken,
) {
    let mut backoff = Backoff::new(REOPEN_MIN, REOPEN_MAX);
    // What was last reported: None before the first report.
    let mut reported_up: Option<bool> = None;
    while !stop.is_cancelled() {
        match open_ports(cfg) {
            Ok(ports) => {
                let detail = match &cfg.printer_path {
                    Some(printer) if cfg.kind == SerialKind::Escpos => {
                        format!("tapping {} -> {}", cfg.path.display(), printer.display())
                    }
                    _ => format!("reading {}", cfg.path.display()),
                };
                events.device(true, detail);
                backoff.reset();
                let reason = match (ports, capture) {
                    (Ports::Scanner(port), _) => read_scanner(port, cfg, events, stop),
                    (Ports::Tap { till, printer }, Some(capture)) => {
                        run_tap(till, printer, cfg, capture, events, stop)
                    }
                    (Ports::Tap { .. }, None) => return,
                };
                if stop.is_cancelled() {
                    break;
                }
                events.device(false, format!("{reason}; reopening when it comes back"));
                reported_up = Some(false);
            }
            Err(err) => {
                if reported_up != Some(false) {
                    events.device(
                        false,
                        format!("cannot open {err}; retrying (use /dev/serial/by-id/... paths)"),
                    );
                    reported_up = Some(false);
                }
            }
        }
        if !sleep_unless_stopped(backoff.next_delay(), stop) {
            break;
        }
    }
}

/// What one read means for the device.
enum ReadOutcome {
    Data(usize),
    Nothing,
    Gone(String),
}

/// One read with the traps handled: timeouts are "nothing", repeated zero-byte reads and
/// errors mean the device is gone.
fn read_some(port: &mut TTYPort, buf: &mut [u8], zero_reads: &mut u32) -> ReadOutcome {
    match port.read(buf) {
        Ok(0) => {
            *zero_reads += 1;
            if *zero_reads >= ZERO_READS_GONE {
                ReadOutcome::Gone("the device returns no data (unplugged?)".into())
            } else {
                ReadOutcome::Nothing
            }
        }
        Ok(n) => {
            *zero_reads = 0;
            ReadOutcome::Data(n)
        }
        Err(err) if err.kind() == io::ErrorKind::TimedOut => {
            *zero_reads = 0;
            ReadOutcome::Nothing
        }
        Err(err) if err.kind() == io::ErrorKind::Interrupted => ReadOutcome::Nothing,
        Err(err) => ReadOutcome::Gone(format!("read failed: {err}")),
    }
}

/// Reads scanner lines until the device goes or `stop`; returns why it stopped.
fn read_scanner(
    mut port: TTYPort,
    cfg: &SerialConfig,
    events: &Events,
    stop: &CancellationToken,
) -> String {
    let mut framer = LineFramer::new(cfg.max_line_len);
    let mut buf = [0u8; 512];
    let mut zero_reads = 0;
    loop {
        if stop.is_cancelled() {
            return "shutting down".into();
        }
        match read_some(&mut port, &mut buf, &mut zero_reads) {
            ReadOutcome::Data(n) => {
                for event in framer.push(&buf[..n]) {
                    match event {
                        LineEvent::Line(line) => events.scan(line),
                        LineEvent::Overlong(len) => events.device(
                            true,
                            format!(
                                "dropped a line longer than max_line_len = {} ({len} bytes without \
                                 CR/LF): check the scanner's baud rate and suffix settings",
                                cfg.max_line_len
                            ),
                        ),
                    }
                }
            }
            ReadOutcome::Nothing => {}
            ReadOutcome::Gone(reason) => return reason,
        }
    }
}

/// What the line framer found.
#[derive(Debug, PartialEq, Eq)]
enum LineEvent {
    /// One line without its terminator.
    Line(Vec<u8>),
    /// A line exceeded the limit (bytes seen so far); it is dropped up to its terminator.
    Overlong(usize),
}

/// Splits a byte stream into lines ended by CR, LF or CRLF; empty lines are skipped.
struct LineFramer {
    max: usize,
    line: Vec<u8>,
    overlong: bool,
}

impl LineFramer {
    fn new(max: usize) -> LineFramer {
        LineFramer {
            max,
            line: Vec::new(),
            overlong: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Vec<LineEvent> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte == b'\r' || byte == b'\n' {
                if self.overlong {
                    self.overlong = false;
                } else if !self.line.is_empty() {
                    events.push(LineEvent::Line(std::mem::take(&mut self.line)));
                }
                continue;
            }
            if self.overlong {
                continue;
            }
            if self.line.len() >= self.max {
                events.push(LineEvent::Overlong(self.line.len() + 1));
                self.line.clear();
                self.overlong = true;
                continue;
            }
            self.line.push(byte);
        }
        events
    }
}

/// Writes all of `data`, waiting out flow control (write timeouts) unless stopped.
fn write_all_patiently(
    port: &mut TTYPort,
    mut data: &[u8],
    stopped: &dyn Fn() -> bool,
) -> Result<(), String> {
    while !data.is_empty() {
        match port.write(data) {
            Ok(0) => return Err("the device accepts no data".into()),
            Ok(n) => data = &data[n..],
            Err(err)
                if err.kind() == io::ErrorKind::TimedOut
                    || err.kind() == io::ErrorKind::Interrupted
                    || err.kind() == io::ErrorKind::WouldBlock =>
            {
                if stopped() {
                    return Err("stopped while the device was busy".into());
                }
            }
            Err(err) => return Err(format!("write failed: {err}")),
        }
    }
    Ok(())
}

/// Runs an inline tap until either side goes or `stop`; returns why it stopped.
fn run_tap(
    mut till: TTYPort,
    mut printer: TTYPort,
    cfg: &SerialConfig,
    capture: &ReceiptCapture,
    events: &Events,
    stop: &CancellationToken,
) -> String {
    let (printer_reader, till_writer) = match (printer.try_clone_native(), till.try_clone_native())
    {
        (Ok(reader), Ok(writer)) => (reader, writer),
        (Err(err), _) | (_, Err(err)) => return format!("cannot share the port: {err}"),
    };
    let tap_down = Arc::new(AtomicBool::new(false));
    let back_reason: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let back = {
        let tap_down = tap_down.clone();
        let back_reason = back_reason.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(thread_name("tapback:", &cfg.name))
            .spawn(move || {
                let reason = relay_back(printer_reader, till_writer, &tap_down, &stop);
                tap_down.store(true, Ordering::SeqCst);
                if let Ok(mut slot) = back_reason.lock() {
                    *slot = Some(reason);
                }
            })
    };
    let back = match back {
        Ok(handle) => handle,
        Err(err) => return format!("cannot start the tap's back channel: {err}"),
    };
    let mut assembler = capture.assembler();
    let mut buf = [0u8; 4096];
    // Till bytes read but not passed on yet: held while an answer to print is awaited.
    let mut held: Vec<u8> = Vec::new();
    let mut awaited: Option<AwaitedAnswer> = None;
    let mut read_timeout = READ_TIMEOUT;
    let mut zero_reads = 0;
    let stopped = || stop.is_cancelled() || tap_down.load(Ordering::SeqCst);
    let reason = loop {
        if stopped() {
            break None;
        }
        if let Some(waiting) = &mut awaited {
            let printed = match waiting.answer.try_recv() {
                Ok(answer) => match capture.trailer(&answer, assembler.code_page()) {
                    Some(trailer) => Some(write_all_patiently(&mut printer, &trailer, &stopped)),
                    None => Some(Ok(())),
                },
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Some(Ok(())),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                    if Instant::now() >= waiting.until || held.len() >= MAX_HELD {
                        tracing::warn!(device = %cfg.name, "no answer to print in time (answer_timeout_ms): the till's next bytes pass on without it");
                        Some(Ok(()))
                    } else {
                        None
                    }
                }
            };
            match printed {
                Some(Ok(())) => awaited = None,
                Some(Err(err)) => break Some(format!("printer side: {err}")),
                None => {}
            }
        }
        if awaited.is_none() && !held.is_empty() {
            // Pass on what is held, up to the end of the next receipt (where an answer may
            // have to be printed before the rest).
            let (used, document) = assembler.feed_until_document(&held, Instant::now());
            if let Err(err) = write_all_patiently(&mut printer, &held[..used], &stopped) {
                break Some(format!("printer side: {err}"));
            }
            held.drain(..used);
            if let Some(document) = document {
                awaited = events.receipt(capture, &document);
            }
            continue;
        }
        let wanted = if awaited.is_some() {
            ANSWER_POLL
        } else {
            READ_TIMEOUT
        };
        if wanted != read_timeout && till.set_timeout(wanted).is_ok() {
            read_timeout = wanted;
        }
        match read_some(&mut till, &mut buf, &mut zero_reads) {
            ReadOutcome::Data(n) => held.extend_from_slice(&buf[..n]),
            ReadOutcome::Nothing => {
                if awaited.is_none() {
                    if let Some(document) = assembler.on_idle(Instant::now()) {
                        awaited = events.receipt(capture, &document);
                    }
                }
            }
            ReadOutcome::Gone(reason) => break Some(format!("till side: {reason}")),
        }
    };
    if !held.is_empty() {
        // Best effort: what the till sent still goes to the printer.
        let _ = write_all_patiently(&mut printer, &held, &|| true);
        for document in assembler.feed(&held, Instant::now()) {
            events.receipt(capture, &document);
        }
    }
    tap_down.store(true, Ordering::SeqCst);
    let _ = back.join();
    if let Some(document) = assembler.end_of_stream() {
        events.receipt(capture, &document);
    }
    let back_reason = back_reason.lock().ok().and_then(|mut slot| slot.take());
    reason
        .or(back_reason)
        .unwrap_or_else(|| "shutting down".into())
}

/// Relays the printer's answers to the till until either side goes or the tap is down.
fn relay_back(
    mut printer: TTYPort,
    mut till: TTYPort,
    tap_down: &AtomicBool,
    stop: &CancellationToken,
) -> String {
    let mut buf = [0u8; 256];
    let mut zero_reads = 0;
    let stopped = || stop.is_cancelled() || tap_down.load(Ordering::SeqCst);
    loop {
        if stopped() {
            return "shutting down".into();
        }
        match read_some(&mut printer, &mut buf, &mut zero_reads) {
            ReadOutcome::Data(n) => {
                if let Err(err) = write_all_patiently(&mut till, &buf[..n], &stopped) {
                    return format!("till side: {err}");
                }
            }
            ReadOutcome::Nothing => {}
            ReadOutcome::Gone(reason) => return format!("printer side: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_cr_lf_or_crlf_and_overlong_lines_are_dropped() {
        let mut framer = LineFramer::new(8);
        assert_eq!(
            framer.push(b"]E04006\r\nABC\rDEF\n\n\r"),
            vec![
                LineEvent::Line(b"]E04006".to_vec()),
                LineEvent::Line(b"ABC".to_vec()),
                LineEvent::Line(b"DEF".to_vec()),
            ]
        );
        // Split across reads.
        assert!(framer.push(b"12").is_empty());
        assert_eq!(
            framer.push(b"34\n"),
            vec![LineEvent::Line(b"1234".to_vec())]
        );
        // Overlong: reported once, dropped to its terminator, then normal again.
        assert_eq!(
            framer.push(b"0123456789ABCDEF"),
            vec![LineEvent::Overlong(9)]
        );
        assert!(framer.push(b"GHIJ").is_empty());
        assert_eq!(
            framer.push(b"\nOK\n"),
            vec![LineEvent::Line(b"OK".to_vec())]
        );
        // Exactly the limit is fine.
        assert_eq!(
            framer.push(b"12345678\r\n"),
            vec![LineEvent::Line(b"12345678".to_vec())]
        );
    }

    #[test]
    fn thread_names_fit_linux_limits() {
        assert_eq!(thread_name("serial:", "scan1"), "serial:scan1");
        assert_eq!(
            thread_name("serial:", "lane3-printer-long"),
            "serial:lane3-pr"
        );
    }
}
