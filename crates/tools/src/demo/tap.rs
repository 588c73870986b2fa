//! Lane 5's serial printer tap: a till without MQTT prints a real ESC/POS receipt through the
//! gateway, which passes every byte to the printer and reads the receipt from the text.

use super::{explain, pty, say, show_answer};
use loyalty_daemon::gateway::GatewayHandle;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The printed receipt the demo's till sends to its serial printer (made by python-escpos,
/// see `tests/fixtures/escpos/make_fixtures.py`).
const PRINTED_RECEIPT: &[u8] = include_bytes!("../../../../tests/fixtures/escpos/sale_cp858.bin");

/// Lane 5's till prints a receipt on its serial printer; the gateway passes every byte through
/// and reads the receipt from the printed text.
/// Returns the till's and the printer's ends of the pseudo-terminals: the caller keeps them
/// open until the demo ends (a closed till side is an unplugged device to the tap, which would
/// report it down in the middle of the demo).
pub(super) async fn printer_tap(
    handle: &GatewayHandle,
    till_side: pty::Pty,
    printer_side: pty::Pty,
) -> Vec<std::fs::File> {
    use std::io::{Read, Write};
    say("Lane 5: a till without MQTT prints its receipt on a serial printer; the gateway taps the line");
    explain(
        "python-escpos made these bytes: code page 858 (€, umlauts), bold, a barcode, a QR code,",
    );
    explain(
        "the paper cut. The gateway passes every byte to the printer and parses the printed text.",
    );
    let mut answers = handle.answers.subscribe();
    // Wait until the serial edge has opened both sides before the till starts printing.
    let devices = handle.devices.clone();
    let is_up = || {
        devices
            .lock()
            .map(|d| d.get("lane5-printer").is_some_and(|s| s.up))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !is_up() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !is_up() {
        let detail = devices
            .lock()
            .ok()
            .and_then(|d| d.get("lane5-printer").map(|s| s.detail.clone()))
            .unwrap_or_else(|| "not opened".into());
        explain(&format!(
            "(the serial tap could not open its pseudo-terminals: {detail}; skipped. Serial ports \
             do not work under qemu-user)"
        ));
        return Vec::new();
    }
    let expected = PRINTED_RECEIPT.len();
    let reader = tokio::task::spawn_blocking(move || {
        let mut printer = printer_side.master;
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while received.len() < expected {
            match printer.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
        (received, printer)
    });
    let mut till = till_side.master;
    if let Err(err) = till.write_all(PRINTED_RECEIPT) {
        explain(&format!("(cannot write to the till side: {err})"));
        return vec![till];
    }
    println!(
        "    → lane 5 printer stream: {} bytes of ESC/POS",
        PRINTED_RECEIPT.len()
    );
    let mut keep_open = vec![till];
    match tokio::time::timeout(Duration::from_secs(5), reader).await {
        Ok(Ok((received, printer))) => {
            keep_open.push(printer);
            if received == PRINTED_RECEIPT {
                explain(&format!(
                    "The printer received all {} bytes unchanged.",
                    received.len()
                ));
            } else {
                explain(&format!(
                    "(the printer received {} of {} bytes)",
                    received.len(),
                    PRINTED_RECEIPT.len()
                ));
            }
        }
        _ => explain("(the printer side did not receive the stream in time)"),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(answer)) = tokio::time::timeout_at(deadline, answers.recv()).await {
        if answer.lane() == "5" {
            show_answer(&serde_json::to_value(&answer).unwrap_or(Value::Null));
            break;
        }
    }
    keep_open
}
