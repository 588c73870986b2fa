//! The network printer proxy with real TCP: a client as the till, a listener as the printer.
//! Every byte arrives unchanged both ways, receipts are captured at the cut and after an idle
//! gap, and a printer that is down or drops the job is visible to the till.

use loyalty_core::money::Money;
use loyalty_daemon::capture::ReceiptCapture;
use loyalty_daemon::config::{self, Built, Config, PrinterProxyConfig};
use loyalty_daemon::input::{Input, Origin};
use loyalty_daemon::printer_proxy;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn example_config() -> Config {
    let snippet = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/arch/escpos-config-snippet.toml"
    ))
    .expect("snippet");
    let text = format!(
        "[store]\nid = \"berlin-1\"\ntimezone = \"Europe/Berlin\"\ncurrency = \"EUR\"\n\n{snippet}"
    );
    config::parse(&text).unwrap_or_else(|errors| panic!("{errors:#?}"))
}

async fn next(rx: &mut mpsc::Receiver<Input>) -> Input {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an input within 10 s")
        .expect("channel open")
}

async fn expect_device(rx: &mut mpsc::Receiver<Input>, want_up: bool) -> String {
    match next(rx).await {
        Input::Device { up, detail, name } if up == want_up => {
            assert_eq!(name, "proxy1");
            detail
        }
        other => panic!("expected device up = {want_up}, got {other:?}"),
    }
}

struct Proxy {
    rx: mpsc::Receiver<Input>,
    listen: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Starts a proxy for `printer` on a free port; returns once it listens.
async fn start(printer: String, idle_gap_ms: u64, max_connections: usize) -> Proxy {
    let config = example_config();
    let cfg = PrinterProxyConfig {
        name: "proxy1".into(),
        listen: "127.0.0.1:0".into(),
        printer,
        lane: "4".into(),
        profile: Some("example".into()),
        idle_gap_ms,
        connect_timeout_ms: 1000,
        max_connections,
        ..config.printer_proxy[0].clone()
    };
    let capture = ReceiptCapture::for_proxy(&cfg, &built(&config)).expect("capture");
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(printer_proxy::run(cfg, capture, tx, shutdown.clone()));
    let detail = expect_device(&mut rx, true).await;
    let listen = detail
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split(' ').next())
        .expect("the listen address in the detail")
        .to_string();
    Proxy {
        rx,
        listen,
        shutdown,
        task,
    }
}

impl Proxy {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("stops within the grace")
            .expect("joined");
    }
}

async fn expect_receipt(rx: &mut mpsc::Receiver<Input>) -> loyalty_core::receipt::Receipt {
    loop {
        match next(rx).await {
            Input::Receipt {
                lane,
                receipt,
                origin,
                ..
            } => {
                assert_eq!(lane, "4");
                assert_eq!(origin, Origin::PrinterProxy("proxy1".into()));
                return receipt.expect("the receipt reads");
            }
            Input::Device { up: true, .. } => continue,
            other => panic!("expected a receipt, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn bytes_pass_unchanged_both_ways_and_receipts_are_captured() {
    let printer = TcpListener::bind("127.0.0.1:0").await.expect("printer");
    let mut proxy = start(printer.local_addr().expect("addr").to_string(), 300, 8).await;

    // A job: the whole sale, then a status request, then the till closes its side.
    let sale = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/escpos/sale_cp858.bin"
    ))
    .expect("fixture");
    let mut till = TcpStream::connect(&proxy.listen)
        .await
        .expect("till connects");
    let (mut at_printer, _) = printer
        .accept()
        .await
        .expect("proxy connects to the printer");
    for chunk in sale.chunks(300) {
        till.write_all(chunk).await.expect("till writes");
    }
    till.write_all(&[0x10, 0x04, 0x01])
        .await
        .expect("status request");
    let mut got = vec![0u8; sale.len() + 3];
    at_printer
        .read_exact(&mut got)
        .await
        .expect("printer reads");
    assert_eq!(&got[..sale.len()], &sale[..], "every byte unchanged");
    assert_eq!(&got[sale.len()..], &[0x10, 0x04, 0x01]);
    at_printer
        .write_all(&[0x16])
        .await
        .expect("printer answers");
    let mut status = [0u8; 1];
    till.read_exact(&mut status)
        .await
        .expect("till gets the status");
    assert_eq!(status, [0x16]);

    let receipt = expect_receipt(&mut proxy.rx).await;
    assert_eq!(receipt.id, "4-4711");
    assert_eq!(receipt.total, Money(850));
    assert_eq!(receipt.lane, "4");

    // The till finishes: the printer sees the end, closes, and the till sees that.
    till.shutdown().await.expect("till half-close");
    let mut rest = Vec::new();
    at_printer
        .read_to_end(&mut rest)
        .await
        .expect("printer reads to the end");
    assert!(rest.is_empty());
    drop(at_printer);
    let mut tail = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), till.read_to_end(&mut tail))
        .await
        .expect("till sees the close")
        .expect("clean close");

    // A connection that stays open: the receipt without a cut ends after the idle gap.
    let idle = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/escpos/idle_1252.bin"
    ))
    .expect("fixture");
    let mut till = TcpStream::connect(&proxy.listen)
        .await
        .expect("till connects");
    let (mut at_printer, _) = printer.accept().await.expect("accept");
    till.write_all(&idle).await.expect("writes");
    let mut got = vec![0u8; idle.len()];
    at_printer.read_exact(&mut got).await.expect("reads");
    assert_eq!(got, idle);
    let receipt = expect_receipt(&mut proxy.rx).await;
    assert_eq!(receipt.id, "4-815");
    assert_eq!(receipt.total, Money(670));
    drop(till);
    proxy.stop().await;
}

#[tokio::test]
async fn a_printer_that_is_down_is_visible_to_the_till() {
    // A port with nothing behind it.
    let free = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let printer_addr = free.local_addr().expect("addr");
    drop(free);
    let mut proxy = start(printer_addr.to_string(), 300, 8).await;

    let mut till = TcpStream::connect(&proxy.listen)
        .await
        .expect("the proxy accepts");
    let _ = till.write_all(b"\x1b@Hallo\n").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(3), till.read(&mut buf))
        .await
        .expect("the till is told at once, not left hanging");
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the till's connection must fail, got {read:?}"
    );
    let detail = expect_device(&mut proxy.rx, false).await;
    assert!(detail.contains("unreachable"), "{detail}");

    // The printer comes back: the next job goes through and the proxy reports it up.
    let printer = TcpListener::bind(printer_addr).await.expect("printer back");
    let mut till = TcpStream::connect(&proxy.listen).await.expect("connects");
    let (mut at_printer, _) = printer.accept().await.expect("accept");
    till.write_all(b"\x1b@Hallo\n").await.expect("writes");
    let mut got = [0u8; 8];
    at_printer.read_exact(&mut got).await.expect("reads");
    assert_eq!(&got, b"\x1b@Hallo\n");
    assert!(expect_device(&mut proxy.rx, true)
        .await
        .contains("reachable"));

    // The printer drops the job mid-way: the till's connection fails too.
    drop(at_printer);
    let read = tokio::time::timeout(Duration::from_secs(3), till.read(&mut buf))
        .await
        .expect("the till is told");
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    let detail = expect_device(&mut proxy.rx, false).await;
    assert!(detail.contains("mid-job"), "{detail}");
    drop(till);
    proxy.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_reset() {
    let printer = TcpListener::bind("127.0.0.1:0").await.expect("printer");
    let proxy = start(printer.local_addr().expect("addr").to_string(), 300, 1).await;
    let mut first = TcpStream::connect(&proxy.listen).await.expect("first");
    let (mut at_printer, _) = printer.accept().await.expect("accept");
    first.write_all(b"A").await.expect("writes");
    let mut one = [0u8; 1];
    at_printer.read_exact(&mut one).await.expect("reads");
    // The second till connection while the first is open: reset, not left hanging.
    let mut second = TcpStream::connect(&proxy.listen)
        .await
        .expect("kernel accepts");
    let mut buf = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(3), second.read(&mut buf))
        .await
        .expect("told at once");
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    // The first still works.
    first.write_all(b"B").await.expect("writes");
    at_printer.read_exact(&mut one).await.expect("reads");
    assert_eq!(one, *b"B");
    drop((first, second, at_printer));
    proxy.stop().await;
}

/// The configuration as the gateway runs it (its receipt profiles built).
fn built(config: &Config) -> Built {
    Built::new(config.clone()).unwrap_or_else(|errors| panic!("{errors:#?}"))
}
