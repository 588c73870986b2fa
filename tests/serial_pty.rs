//! The serial edge over real pseudo-terminals (openpty): a scanner and an ESC/POS tap, each
//! unplugged (pty closed, its link removed, as udev removes /dev/serial/by-id/...) and
//! replugged (a new pty behind the same link), with the reader thread's CPU time measured
//! while the device is gone.

use loyalty_core::money::Money;
use loyalty_daemon::capture::ReceiptCapture;
use loyalty_daemon::config::{self, Built, Config, SerialConfig, SerialKind};
use loyalty_daemon::input::{Input, Origin};
use loyalty_daemon::serial;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One end of a pseudo-terminal pair as a device: the gateway opens the slave through `link`,
/// the test talks to the master (the demo's pty pair, `loyalty_tools::demo::pty`).
struct Pty {
    inner: loyalty_tools::demo::pty::Pty,
}

impl Pty {
    fn plug(link: &Path) -> Pty {
        Pty {
            inner: loyalty_tools::demo::pty::Pty::open(link).expect("openpty"),
        }
    }

    /// The USB adapter is pulled: the link goes and the tty hangs up.
    fn unplug(self) {
        let _ = std::fs::remove_file(&self.inner.link);
        drop(self);
    }

    fn write(&self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // SAFETY: writing from a valid buffer to an owned descriptor.
            let n = unsafe {
                libc::write(
                    self.inner.master.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                )
            };
            assert!(n > 0, "write: {}", std::io::Error::last_os_error());
            bytes = &bytes[n as usize..];
        }
    }

    /// Reads exactly `n` bytes or fails after `timeout`.
    fn read_exact(&self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out with {} of {n} bytes", out.len());
            let mut pfd = libc::pollfd {
                fd: self.inner.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            if ready <= 0 {
                continue;
            }
            let mut buf = vec![0u8; n - out.len()];
            // SAFETY: reading into a buffer of the given length.
            let got = unsafe {
                libc::read(
                    self.inner.master.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if got > 0 {
                out.extend_from_slice(&buf[..got as usize]);
            }
        }
        out
    }

    /// True when nothing arrives within `wait`.
    fn quiet_for(&self, wait: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.inner.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) == 0 }
    }
}

/// CPU time (clock ticks, user + system) of this process's thread named `name`.
fn thread_cpu_ticks(name: &str) -> u64 {
    for task in std::fs::read_dir("/proc/self/task").expect("proc") {
        let task = task.expect("task").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(task.join("stat")).expect("stat");
            let after = &stat[stat.rfind(')').expect("comm end") + 2..];
            let fields: Vec<&str> = after.split(' ').collect();
            // Fields 14 and 15 of stat; `after` starts at field 3.
            return fields[11].parse::<u64>().expect("utime")
                + fields[12].parse::<u64>().expect("stime");
        }
    }
    panic!("no thread named {name}");
}

async fn next(rx: &mut mpsc::Receiver<Input>) -> Input {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an input within 10 s")
        .expect("channel open")
}

async fn expect_device(rx: &mut mpsc::Receiver<Input>, want_up: bool) -> String {
    match next(rx).await {
        Input::Device { up, detail, .. } if up == want_up => detail,
        other => panic!("expected device up = {want_up}, got {other:?}"),
    }
}

async fn expect_scan(rx: &mut mpsc::Receiver<Input>) -> Vec<u8> {
    match next(rx).await {
        Input::Scan {
            lane, data, origin, ..
        } => {
            assert_eq!(lane, "7");
            assert_eq!(origin, Origin::Serial("scan1".into()));
            data
        }
        other => panic!("expected a scan, got {other:?}"),
    }
}

/// Asserts that the thread `name` uses (almost) no CPU over 1.5 s.
fn assert_idle(name: &str) {
    let before = thread_cpu_ticks(name);
    std::thread::sleep(Duration::from_millis(1500));
    let used = thread_cpu_ticks(name) - before;
    // 100 ticks per second: a busy loop would use ~150.
    assert!(
        used <= 10,
        "{name} used {used} ticks in 1.5 s while the device was gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_lines_survive_unplug_and_replug() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("usb-Scanner-if00");
    let pty = Pty::plug(&link);
    let cfg = SerialConfig {
        name: "scan1".into(),
        path: link.clone(),
        lane: "7".into(),
        kind: SerialKind::Scanner,
        max_line_len: 64,
        ..SerialConfig::default()
    };
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serial::run(cfg, None, tx, shutdown.clone()));
    assert!(expect_device(&mut rx, true)
        .await
        .contains("usb-Scanner-if00"));

    // CRLF, LF and CR framing; an AIM prefix passes through as read.
    pty.write(b"]E04006381333931\r\n2990000000019\nABC\r");
    assert_eq!(expect_scan(&mut rx).await, b"]E04006381333931");
    assert_eq!(expect_scan(&mut rx).await, b"2990000000019");
    assert_eq!(expect_scan(&mut rx).await, b"ABC");
    // Garbage without a terminator (wrong baud rate): dropped and reported, then normal.
    pty.write(&[b'X'; 200]);
    pty.write(b"\r\nOK\r\n");
    let detail = expect_device(&mut rx, true).await;
    assert!(detail.contains("max_line_len = 64"), "{detail}");
    assert_eq!(expect_scan(&mut rx).await, b"OK");

    // Unplug: reported down once, and the reader does not spin.
    pty.unplug();
    let detail = expect_device(&mut rx, false).await;
    assert!(detail.contains("reopening"), "{detail}");
    tokio::task::spawn_blocking(|| assert_idle("serial:scan1"))
        .await
        .expect("measured");
    assert!(rx.try_recv().is_err(), "one report per outage");

    // Replug behind the same path: up again, scans flow.
    let pty = Pty::plug(&link);
    expect_device(&mut rx, true).await;
    pty.write(b"2990000000019\r\n");
    assert_eq!(expect_scan(&mut rx).await, b"2990000000019");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("stops promptly")
        .expect("joined")
        .expect("ran");
}

fn example_config() -> Config {
    let snippet = std::fs::read_to_string("docs/arch/escpos-config-snippet.toml").expect("snippet");
    let text = format!(
        "[store]\nid = \"berlin-1\"\ntimezone = \"Europe/Berlin\"\ncurrency = \"EUR\"\n\n{snippet}"
    );
    config::parse(&text).unwrap_or_else(|errors| panic!("{errors:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escpos_tap_passes_everything_through_and_captures_receipts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let till_link = dir.path().join("till");
    let printer_link = dir.path().join("printer");
    let till = Pty::plug(&till_link);
    let printer = Pty::plug(&printer_link);
    let config = example_config();
    let cfg = SerialConfig {
        name: "tap1".into(),
        path: till_link.clone(),
        printer_path: Some(printer_link.clone()),
        lane: "4".into(),
        kind: SerialKind::Escpos,
        profile: Some("example".into()),
        idle_gap_ms: 1500,
        ..SerialConfig::default()
    };
    let capture = ReceiptCapture::for_serial(&cfg, &built(&config)).expect("capture");
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serial::run(cfg, Some(capture), tx, shutdown.clone()));
    assert!(expect_device(&mut rx, true).await.contains("tapping"));

    // A whole receipt, written in uneven pieces: every byte reaches the printer unchanged.
    let sale = std::fs::read("tests/fixtures/escpos/sale_cp858.bin").expect("fixture");
    for chunk in sale.chunks(500) {
        till.write(chunk);
    }
    let printed = tokio::task::spawn_blocking(move || {
        let got = printer.read_exact(sale.len(), Duration::from_secs(10));
        assert_eq!(got, sale, "the printer got exactly what the till sent");
        printer
    })
    .await
    .expect("read");
    match next(&mut rx).await {
        Input::Receipt {
            lane,
            receipt,
            origin,
            done,
            ..
        } => {
            assert_eq!(lane, "4");
            assert_eq!(origin, Origin::Serial("tap1".into()));
            assert!(done.is_none());
            let receipt = receipt.expect("the sale reads");
            assert_eq!(receipt.id, "4-4711");
            assert_eq!(receipt.total, Money(850));
        }
        other => panic!("expected a receipt, got {other:?}"),
    }

    // A DLE EOT status request goes to the printer; its answer comes back to the till.
    let (till, printer) = tokio::task::spawn_blocking(move || {
        till.write(&[0x10, 0x04, 0x01]);
        assert_eq!(
            printed.read_exact(3, Duration::from_secs(5)),
            [0x10, 0x04, 0x01]
        );
        printed.write(&[0x16]);
        assert_eq!(till.read_exact(1, Duration::from_secs(5)), [0x16]);
        assert!(
            till.quiet_for(Duration::from_millis(200)),
            "nothing else comes back"
        );
        (till, printed)
    })
    .await
    .expect("status round trip");

    // The printer is unplugged: the tap goes down (both sides closed) without spinning.
    printer.unplug();
    let detail = expect_device(&mut rx, false).await;
    assert!(detail.contains("printer"), "{detail}");
    tokio::task::spawn_blocking(|| assert_idle("serial:tap1"))
        .await
        .expect("measured");

    // Replugged: up again; a receipt without a cut ends after the idle gap.
    let printer = Pty::plug(&printer_link);
    expect_device(&mut rx, true).await;
    let idle = std::fs::read("tests/fixtures/escpos/idle_1252.bin").expect("fixture");
    till.write(&idle);
    let expected = idle.clone();
    let printer = tokio::task::spawn_blocking(move || {
        assert_eq!(
            printer.read_exact(expected.len(), Duration::from_secs(10)),
            expected
        );
        printer
    })
    .await
    .expect("read");
    match next(&mut rx).await {
        Input::Receipt { receipt, .. } => {
            let receipt = receipt.expect("the idle receipt reads");
            assert_eq!(receipt.id, "4-815");
            assert_eq!(receipt.total, Money(670));
        }
        other => panic!("expected a receipt, got {other:?}"),
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("stops promptly")
        .expect("joined")
        .expect("ran");
    drop((till, printer));
}

#[tokio::test]
async fn a_tap_without_capture_is_refused_before_opening_anything() {
    let cfg = SerialConfig {
        name: "tap2".into(),
        path: "/nonexistent/till".into(),
        printer_path: Some("/nonexistent/printer".into()),
        lane: "4".into(),
        kind: SerialKind::Escpos,
        ..SerialConfig::default()
    };
    let (tx, mut rx) = mpsc::channel(4);
    let err = serial::run(cfg, None, tx, CancellationToken::new())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("needs a receipt capture"), "{err}");
    assert!(rx.try_recv().is_err());
}

/// The configuration as the gateway runs it (its receipt profiles built).
fn built(config: &Config) -> Built {
    Built::new(config.clone()).unwrap_or_else(|errors| panic!("{errors:#?}"))
}
