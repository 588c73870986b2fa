//! Answers on printer lanes, end to end: the gateway in-process with a serial tap on real
//! pseudo-terminals and a network printer proxy on real TCP. The printer receives the till's
//! bytes unchanged, then a trailer (points, balance, the new voucher's QR code: the printer's
//! `GS ( k` on the tap, a `GS v 0` raster image on the proxy), then the till's next bytes,
//! never interleaved; the QR decodes to a voucher the gateway accepts when scanned at a lane. A
//! lane whose answers reach nobody (`answer = "none"`) converts no points into vouchers.

use loyalty_daemon::gateway::{self, GatewayHandle, StartOptions};
use loyalty_daemon::input::{Input, Origin};
use loyalty_protocol::till::Response;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const SALE: &str = "tests/fixtures/escpos/sale_cp858.bin";
/// The loyalty card the fixture's receipt prints.
const CARD: &str = "2990000000019";
/// The start of the till's next receipt, sent right behind the first one's cut (the devices'
/// idle gap is long, so it never ends as an unreadable receipt during a test).
const NEXT: &[u8] = b"\x1b@Bon-Nr.: 4712 (next receipt)\n";

/// A gateway with one printer lane described by `device` (a `[[serial]]` or
/// `[[printer_proxy]]` table), rewards of one 1.00 EUR voucher per 5 points.
async fn start(dir: &Path, device: &str) -> (GatewayHandle, CancellationToken) {
    let key = dir.join("signing.key");
    loyalty_daemon::vouchers::keyfile::generate(&key).expect("key");
    let snippet = std::fs::read_to_string("docs/arch/escpos-config-snippet.toml").expect("snippet");
    let profile = &snippet[snippet.find("[receipt_profiles.example]").expect("profile")..];
    let config = loyalty_daemon::config::parse_built(&format!(
        r#"[store]
id = "print-1"
timezone = "Europe/Berlin"
currency = "EUR"
require_ntp_sync = false
[storage]
data_dir = "{data}"
[mqtt]
enabled = false
[http]
enabled = false
[cards]
prefixes = ["299"]
[rewards]
signing_key_file = "{key}"
rules = [{{ every_points = 5, value = "1.00", validity_days = 30 }}]

{device}

{profile}"#,
        data = dir.join("data").display(),
        key = key.display(),
    ))
    .unwrap_or_else(|errors| panic!("{errors:#?}"));
    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, StartOptions { mqtt: false }, shutdown.clone())
        .await
        .expect("gateway starts");
    (handle, shutdown)
}

async fn wait_device_up(handle: &GatewayHandle, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up = handle
            .devices
            .lock()
            .ok()
            .and_then(|d| d.get(name).filter(|s| s.up).map(|s| s.detail.clone()));
        if let Some(detail) = up {
            return detail;
        }
        assert!(Instant::now() < deadline, "device {name} never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scan(handle: &GatewayHandle, lane: &str, text: &str) -> Response {
    let input = Input::Scan {
        lane: lane.into(),
        data: text.as_bytes().to_vec(),
        origin: Origin::Mqtt,
        done: None,
    };
    gateway::request(handle, input, lane, 1, Duration::from_secs(10))
        .await
        .pop()
        .expect("an answer")
}

/// What the printer got, split at the till's bytes: the trailer between the sale and the
/// next receipt.
fn trailer_between<'a>(printed: &'a [u8], sale: &[u8]) -> &'a [u8] {
    assert!(
        printed.starts_with(sale),
        "the printer got the till's receipt unchanged first"
    );
    assert!(
        printed.ends_with(NEXT),
        "the till's next bytes come after the trailer, unchanged"
    );
    &printed[sale.len()..printed.len() - NEXT.len()]
}

/// The data of the `GS ( k` store command (fn 80) in `bytes`.
fn native_qr_text(bytes: &[u8]) -> String {
    let at = bytes
        .windows(8)
        .position(|w| w[..3] == [0x1d, b'(', b'k'] && w[5..8] == [0x31, 0x50, 0x30])
        .expect("a GS ( k store command");
    let len = usize::from(bytes[at + 3]) + 256 * usize::from(bytes[at + 4]) - 3;
    String::from_utf8(bytes[at + 8..at + 8 + len].to_vec()).expect("text")
}

/// Renders every `GS v 0` band of `bytes` into one image and decodes its QR codes.
fn raster_qr_texts(bytes: &[u8]) -> Vec<String> {
    let mut rows: Vec<Vec<bool>> = Vec::new();
    let mut at = 0;
    while let Some(found) = bytes[at..]
        .windows(4)
        .position(|w| w == [0x1d, b'v', b'0', 0])
    {
        let start = at + found;
        let width = usize::from(bytes[start + 4]) + 256 * usize::from(bytes[start + 5]);
        let height = usize::from(bytes[start + 6]) + 256 * usize::from(bytes[start + 7]);
        for row in bytes[start + 8..start + 8 + width * height].chunks(width) {
            rows.push(
                (0..width * 8)
                    .map(|x| row[x / 8] & (0x80 >> (x % 8)) != 0)
                    .collect(),
            );
        }
        at = start + 8 + width * height;
    }
    assert!(!rows.is_empty(), "a raster image");
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(rows[0].len(), rows.len(), |x, y| {
            if rows[y][x] {
                0
            } else {
                255
            }
        });
    image
        .detect_grids()
        .into_iter()
        .filter_map(|grid| grid.decode().ok().map(|(_, text)| text))
        .collect()
}

/// Reads from a pty master until the bytes end with `suffix` or `timeout` passes.
fn read_until(master: &std::fs::File, suffix: &[u8], timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !out.ends_with(suffix) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out after {} bytes: {:?}",
            out.len(),
            String::from_utf8_lossy(&out[out.len().saturating_sub(200)..])
        );
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) } <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a buffer of its length from an owned descriptor.
        let got = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if got > 0 {
            out.extend_from_slice(&buf[..got as usize]);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_tap_prints_the_answer_after_the_cut_and_its_voucher_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let till_link = dir.path().join("till");
    let printer_link = dir.path().join("printer");
    let till = loyalty_tools::demo::pty::Pty::open(&till_link).expect("openpty");
    let printer = loyalty_tools::demo::pty::Pty::open(&printer_link).expect("openpty");
    let device = format!(
        r#"[[serial]]
name = "lane3-printer"
path = "{till}"
printer_path = "{printer}"
lane = "3"
kind = "escpos"
baud = 38400
profile = "example"
code_page = "cp858"
idle_gap_ms = 60000
answer = "print"
answer_qr = "native"
answer_labels = {{ title = "Danke für Ihren Einkauf", earned = "Punkte", balance = "Punktestand", voucher = "Ihr Gutschein", valid_until = "Gültig bis" }}"#,
        till = till_link.display(),
        printer = printer_link.display(),
    );
    let (handle, shutdown) = start(dir.path(), &device).await;
    wait_device_up(&handle, "lane3-printer").await;

    // The receipt and, at once behind its cut, the start of the next one.
    let sale = std::fs::read(SALE).expect("fixture");
    let mut sent = sale.clone();
    sent.extend_from_slice(NEXT);
    (&till.master).write_all(&sent).expect("till writes");
    // The printer stays connected to the end: closing it would take the tap down and end the
    // next receipt's start as an unreadable document (an error answer on the lane).
    let (printed, _printer) = tokio::task::spawn_blocking(move || {
        let printed = read_until(&printer.master, NEXT, Duration::from_secs(15));
        (printed, printer)
    })
    .await
    .expect("printer read");

    let trailer = trailer_between(&printed, &sale);
    // CP858 selected, the labels in it (ü = 0x81, € = 0xD5), a cut.
    assert!(trailer.starts_with(&[0x1b, b't', 19]));
    assert!(trailer.windows(8).any(|w| w == b"Danke f\x81".as_slice()));
    assert!(trailer.windows(6).any(|w| w == b"1,00 \xd5".as_slice()));
    assert!(trailer.windows(3).any(|w| w == [0x1d, b'V', 0]));
    let text = native_qr_text(trailer);
    // At the next visit: her card (the voucher is personal), then the voucher.
    assert!(matches!(
        scan(&handle, "3", CARD).await,
        Response::Customer { .. }
    ));
    match scan(&handle, "3", &text).await {
        Response::Reward { status, .. } => assert_eq!(status, "valid", "{text}"),
        other => panic!("expected a reward answer, got {other:?}"),
    }
    shutdown.cancel();
    assert!(handle.stop(Duration::from_secs(10)).await);
    drop(till);
}

/// Serves one printer connection on `listener`: everything it receives until the till's
/// connection ends.
async fn printer_job(listener: tokio::net::TcpListener) -> Vec<u8> {
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.expect("read");
    got
}

struct ProxyLane {
    handle: GatewayHandle,
    shutdown: CancellationToken,
    sale: Vec<u8>,
    printed: Vec<u8>,
    _dir: tempfile::TempDir,
}

async fn proxy_lane(answer: &str) -> ProxyLane {
    let dir = tempfile::tempdir().expect("tempdir");
    let printer = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("printer listens");
    let listen = {
        // A free port for the proxy.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("addr")
    };
    let device = format!(
        r#"[[printer_proxy]]
name = "lane4-printer"
listen = "{listen}"
printer = "{printer}"
lane = "4"
profile = "example"
code_page = "cp858"
idle_gap_ms = 60000
answer = "{answer}"
answer_qr = "raster"
paper_width_mm = 80"#,
        printer = printer.local_addr().expect("addr"),
    );
    let (handle, shutdown) = start(dir.path(), &device).await;
    wait_device_up(&handle, "lane4-printer").await;
    let job = tokio::spawn(printer_job(printer));
    let sale = std::fs::read(SALE).expect("fixture");
    let mut till = tokio::net::TcpStream::connect(listen)
        .await
        .expect("till connects");
    till.write_all(&sale).await.expect("till writes");
    till.write_all(NEXT).await.expect("till writes");
    till.shutdown().await.expect("till done");
    let printed = tokio::time::timeout(Duration::from_secs(15), job)
        .await
        .expect("the job ends")
        .expect("joined");
    ProxyLane {
        handle,
        shutdown,
        sale,
        printed,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printer_proxy_prints_a_raster_qr_that_decodes_to_an_accepted_voucher() {
    let ProxyLane {
        handle,
        shutdown,
        sale,
        printed,
        _dir,
    } = proxy_lane("print").await;
    let trailer = trailer_between(&printed, &sale);
    assert!(
        !trailer.windows(3).any(|w| w == [0x1d, b'(', b'k']),
        "raster profile: no native QR command"
    );
    let texts = raster_qr_texts(trailer);
    assert_eq!(texts.len(), 1, "one voucher");
    assert!(matches!(
        scan(&handle, "4", CARD).await,
        Response::Customer { .. }
    ));
    match scan(&handle, "4", &texts[0]).await {
        Response::Reward { status, .. } => assert_eq!(status, "valid"),
        other => panic!("expected a reward answer, got {other:?}"),
    }
    shutdown.cancel();
    assert!(handle.stop(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_whose_answers_reach_nobody_converts_no_points() {
    let ProxyLane {
        handle,
        shutdown,
        sale,
        printed,
        _dir,
    } = proxy_lane("none").await;
    let mut sent = sale.clone();
    sent.extend_from_slice(NEXT);
    assert_eq!(printed, sent, "exactly the till's bytes, no trailer");
    let counters = handle.counters.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.receipts.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the receipt was never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        handle
            .counters
            .vouchers_issued
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(
        handle
            .counters
            .points
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 5,
        "the points stay on the account"
    );
    shutdown.cancel();
    assert!(handle.stop(Duration::from_secs(10)).await);
}
