//! The closed set of inputs that flow from the edges (MQTT, serial, printer proxy, demo) into
//! the gateway's main loop, and the origin of each; a printed document sent as a receipt, the
//! same for both printer edges. Edges only construct these; the gateway only consumes them.

use crate::capture::ReceiptCapture;
use loyalty_core::escpos::Document;
use loyalty_core::receipt::Receipt;
use loyalty_protocol::till::{RedeemRequest, Response};
use tokio::sync::{mpsc, oneshot};

/// Where an input came from (for logs, metrics and answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The store's MQTT broker.
    Mqtt,
    /// A serial device, by its configured name.
    Serial(String),
    /// A network printer proxy, by its configured name.
    PrinterProxy(String),
}

/// Why a receipt could not be read, with its id when the edge could read that much (the
/// lane's error answer names it, so the till knows which sale was refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The receipt id, when the message yielded one.
    pub receipt_id: Option<String>,
    /// What is wrong, for the till's integrator.
    pub message: String,
}

impl Unreadable {
    /// A receipt whose id could not be read either.
    pub fn without_id(message: impl Into<String>) -> Self {
        Unreadable {
            receipt_id: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the gateway did with a receipt (or a scan: `Durable` once answered), reported back to the edge that delivered it (MQTT acks
/// the broker only after this arrives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Durably applied (or recognised as a duplicate of a durably applied receipt).
    Durable,
    /// Refused as bad input; nothing was written. Acknowledged too: redelivery cannot fix it.
    Refused,
    /// Not handled because of an internal failure (storage); must be redelivered.
    Failed,
}

/// The lane's answer to a receipt, awaited by the edge that prints it (until `until`).
#[derive(Debug)]
pub struct AwaitedAnswer {
    /// Gets the answer (closed when the receipt was not handled).
    pub answer: oneshot::Receiver<Response>,
    /// When the edge stops waiting.
    pub until: std::time::Instant,
}

impl AwaitedAnswer {
    /// A reply channel for [`Input::Receipt`]'s `answer`, awaited for at most `timeout`.
    pub fn channel(timeout: std::time::Duration) -> (oneshot::Sender<Response>, AwaitedAnswer) {
        let (tx, answer) = oneshot::channel();
        (
            tx,
            AwaitedAnswer {
                answer,
                until: std::time::Instant::now() + timeout,
            },
        )
    }
}

/// Sends a finished printed document on `lane` as a receipt from the printer edge `device`
/// (`origin`: `Origin::Serial` or `Origin::PrinterProxy`); returns the answer to await when the
/// capture prints answers (and the receipt could be read). An unreadable receipt is logged with
/// its masked text at debug level, to help an integrator fix the profile.
pub fn send_printed_receipt(
    tx: &mpsc::UnboundedSender<Input>,
    lane: &str,
    device: &str,
    origin: fn(String) -> Origin,
    capture: &ReceiptCapture,
    document: &Document,
) -> Option<AwaitedAnswer> {
    let receipt = capture.read(document, jiff::Timestamp::now());
    match &receipt {
        Ok(r) => tracing::info!(
            device, receipt_id = %r.id, masked_pans = document.masked_pans,
            "receipt captured from the printer stream"
        ),
        Err(err) => {
            tracing::warn!(device, error = %err, "printed receipt not readable");
            tracing::debug!(device, text = %document.text(), "unreadable receipt");
        }
    }
    let (answer, awaited) = match (&receipt, capture.answer_timeout()) {
        (Ok(_), Some(timeout)) => {
            let (tx, awaited) = AwaitedAnswer::channel(timeout);
            (Some(tx), Some(awaited))
        }
        _ => (None, None),
    };
    let _ = tx.send(Input::Receipt {
        lane: lane.to_string(),
        receipt: receipt.map_err(|err| Unreadable::without_id(err.to_string())),
        origin: origin(device.to_string()),
        done: None,
        answer,
    });
    awaited
}

/// One input for the gateway's main loop.
#[derive(Debug)]
pub enum Input {
    /// A scanned code, as read (may carry an AIM prefix), from lane `lane`.
    Scan {
        /// Lane id.
        lane: String,
        /// Raw bytes of one line, without the line terminator.
        data: Vec<u8>,
        /// Where it came from.
        origin: Origin,
        /// Told once the scan is answered (the MQTT edge acknowledges it to the broker then).
        done: Option<oneshot::Sender<Handled>>,
    },
    /// A receipt from lane `lane`, already parsed by its edge (JSON or printed text), or the
    /// reason it could not be parsed.
    Receipt {
        /// Lane id.
        lane: String,
        /// The receipt, or why it could not be read (answered to the lane as an error).
        receipt: Result<Receipt, Unreadable>,
        /// Where it came from.
        origin: Origin,
        /// Told when the receipt is durably handled.
        done: Option<oneshot::Sender<Handled>>,
        /// Given the lane's answer to the receipt (`points` or `error`), for an edge that
        /// prints answers on the lane's printer; dropped unanswered when the receipt is not
        /// handled.
        answer: Option<oneshot::Sender<Response>>,
    },
    /// A `redeem` request (pay with points) from lane `lane`, or why it could not be read.
    /// Only MQTT lanes send them: a serial or printer lane has no channel for requests.
    Redeem {
        /// Lane id.
        lane: String,
        /// The request, or what is wrong with it (answered to the lane as an error).
        request: Result<RedeemRequest, String>,
        /// Told once the request is durably handled and answered.
        done: Option<oneshot::Sender<Handled>>,
    },
    /// A `void` of lane `lane`'s open sale: every reservation it holds is released. `Err`
    /// says why the message could not be read.
    Void {
        /// Lane id.
        lane: String,
        /// Whether the message was readable.
        request: Result<(), String>,
        /// Told once the release is durable and answered.
        done: Option<oneshot::Sender<Handled>>,
    },
    /// A device came up or went away.
    Device {
        /// Configured device name.
        name: String,
        /// True when open and reading.
        up: bool,
        /// Human-readable detail (the error, or the path opened).
        detail: String,
    },
}
