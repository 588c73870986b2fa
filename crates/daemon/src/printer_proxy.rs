//! The network printer proxy: tills print to the gateway on raw TCP (port 9100) as if it were
//! the printer; for each till connection the proxy connects to the real printer, forwards the
//! till's bytes unchanged, relays the printer's answers (status bytes) back, and feeds the
//! till's bytes to the ESC/POS assembler, forwarded as [`Input::Receipt`] at each cut, idle
//! gap or end of connection. Printer reachability changes are [`Input::Device`].
//!
//! Invariants:
//! - The printer gets the till's bytes unchanged and in order; parsing never alters them
//!   (inputs go through an unbounded hand-off, so a slow gateway never stalls printing).
//!   With `answer = "print"` the lane's answer (a trailer: points, balance, new vouchers' QR
//!   codes, a cut) is printed right after the till's cut, before any later byte of the till
//!   is read (TCP holds them), for at most `answer_timeout_ms`: a trailer never interleaves
//!   with the next receipt.
//! - A printer that is down is never silence: the till's connection is reset (RST) at once
//!   when the printer refuses or does not answer within `connect_timeout_ms`, and closed when
//!   the printer drops the connection mid-job.
//! - At most `max_connections` till connections are served; more are reset.
//! - On shutdown the listener closes at once; open jobs get [`SHUTDOWN_GRACE`] to finish.

use crate::backoff::Backoff;
use crate::capture::{CaptureSetupError, ReceiptCapture};
use crate::config::{Built, PrinterProxyConfig};
use crate::input::{send_printed_receipt, AwaitedAnswer, Input, Origin};
use loyalty_core::escpos::Document;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long open print jobs may continue after shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long the printer may take to close after the till finished sending.
pub const HALF_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// First and longest wait before binding the listen address again (another program holds it).
const BIND_RETRY_MIN: Duration = Duration::from_millis(200);
const BIND_RETRY_MAX: Duration = Duration::from_secs(10);

/// Why the printer proxies could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxySetupError {
    /// A proxy's receipt capture could not be built from the configuration.
    #[error("printer proxy {proxy}: {source}")]
    Capture {
        /// Proxy name.
        proxy: String,
        /// Why.
        source: CaptureSetupError,
    },
}

/// Runs every `[[printer_proxy]]` of `config` until `shutdown`. Fails before starting anything
/// if a capture cannot be built.
pub async fn run_all(
    config: &Built,
    tx: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) -> Result<(), ProxySetupError> {
    let mut proxies = Vec::new();
    for proxy in &config.raw.printer_proxy {
        let capture = ReceiptCapture::for_proxy(proxy, config).map_err(|source| {
            ProxySetupError::Capture {
                proxy: proxy.name.clone(),
                source,
            }
        })?;
        proxies.push((proxy.clone(), capture));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (proxy, capture) in proxies {
        tasks.spawn(run(proxy, capture, tx.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Reports inputs of one proxy without ever blocking the byte path.
#[derive(Clone)]
struct Events {
    name: String,
    lane: String,
    tx: mpsc::UnboundedSender<Input>,
    /// The last reported state (None before the first report).
    last_up: Arc<Mutex<Option<bool>>>,
}

impl Events {
    /// Reports a state, only when it changes.
    fn device(&self, up: bool, detail: String) {
        let changed = match self.last_up.lock() {
            Ok(mut last) => last.replace(up) != Some(up),
            Err(_) => true,
        };
        if !changed {
            return;
        }
        if up {
            tracing::info!(proxy = %self.name, %detail, "printer proxy up");
        } else {
            tracing::warn!(proxy = %self.name, %detail, "printer proxy down");
        }
        let _ = self.tx.send(Input::Device {
            name: self.name.clone(),
            up,
            detail,
        });
    }

    /// Sends a finished document as a receipt; returns the answer to await when the capture
    /// prints answers (and the receipt could be read).
    fn receipt(&self, capture: &ReceiptCapture, document: &Document) -> Option<AwaitedAnswer> {
        let (tx, lane, device) = (&self.tx, &self.lane, &self.name);
        send_printed_receipt(tx, lane, device, Origin::PrinterProxy, capture, document)
    }
}

/// Runs one printer proxy until `shutdown`: listens on `cfg.listen` (retrying if the address
/// is taken), serves till connections, and sends captured receipts and printer state to `tx`.
pub async fn run(
    cfg: PrinterProxyConfig,
    capture: ReceiptCapture,
    tx: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) {
    let (inner_tx, mut inner_rx) = mpsc::unbounded_channel();
    let events = Events {
        name: cfg.name.clone(),
        lane: cfg.lane.clone(),
        tx: inner_tx,
        last_up: Arc::default(),
    };
    let forwarder = tokio::spawn(async move {
        while let Some(input) = inner_rx.recv().await {
            if tx.send(input).await.is_err() {
                break;
            }
        }
    });
    serve_listener(&cfg, &capture, events, &shutdown).await;
    // All senders are gone once the listener and its connections ended.
    let _ = forwarder.await;
}

async fn bind(
    cfg: &PrinterProxyConfig,
    events: &Events,
    shutdown: &CancellationToken,
) -> Option<TcpListener> {
    let mut backoff = Backoff::new(BIND_RETRY_MIN, BIND_RETRY_MAX);
    loop {
        match TcpListener::bind(&cfg.listen).await {
            Ok(listener) => return Some(listener),
            Err(err) => events.device(
                false,
                format!(
                    "cannot listen on {}: {err}; retrying (is another program using the port?)",
                    cfg.listen
                ),
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn serve_listener(
    cfg: &PrinterProxyConfig,
    capture: &ReceiptCapture,
    events: Events,
    shutdown: &CancellationToken,
) {
    let Some(listener) = bind(cfg, &events, shutdown).await else {
        return;
    };
    let address = listener
        .local_addr()
        .map_or_else(|_| cfg.listen.clone(), |a| a.to_string());
    events.device(
        true,
        format!("listening on {address} for printer {}", cfg.printer),
    );
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let connections = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((till, peer)) => {
                    let _ = till.set_nodelay(true);
                    match limit.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let job = Connection {
                                printer: cfg.printer.clone(),
                                connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
                                capture: capture.clone(),
                                events: events.clone(),
                                cancel: connections.clone(),
                            };
                            tasks.spawn(async move {
                                job.serve(till).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            tracing::warn!(
                                proxy = %cfg.name, %peer, max = cfg.max_connections,
                                "too many till connections; resetting this one"
                            );
                            reset(till);
                        }
                    }
                }
                Err(err) => {
                    // Out of descriptors and the like: do not spin.
                    tracing::warn!(proxy = %cfg.name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        connections.cancel();
        while tasks.join_next().await.is_some() {}
    }
}

/// Closes a till connection with a reset, so the till sees a failure rather than silence.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// One till connection.
struct Connection {
    printer: String,
    connect_timeout: Duration,
    capture: ReceiptCapture,
    events: Events,
    cancel: CancellationToken,
}

/// How the till → printer direction ended.
enum ForwardEnd {
    /// The till finished sending (EOF); the printer was told.
    TillDone,
    /// Something failed or the connection was cancelled.
    Stopped,
}

impl Connection {
    async fn serve(self, till: TcpStream) {
        let connect = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.printer));
        let printer = match connect.await {
            Ok(Ok(printer)) => printer,
            Ok(Err(err)) => return self.printer_down(till, err.to_string()),
            Err(_) => {
                return self.printer_down(
                    till,
                    format!("no answer within {} ms", self.connect_timeout.as_millis()),
                )
            }
        };
        let _ = printer.set_nodelay(true);
        self.events
            .device(true, format!("printer {} reachable", self.printer));
        let (till_read, till_write) = till.into_split();
        let (printer_read, printer_write) = printer.into_split();
        let conn = self.cancel.child_token();
        let forward = self.forward(till_read, printer_write, conn.clone());
        let backward = backward(printer_read, till_write, conn.clone());
        tokio::pin!(forward, backward);
        let mut forward_done = false;
        let mut half_close_deadline = None;
        loop {
            tokio::select! {
                end = &mut forward, if !forward_done => {
                    forward_done = true;
                    match end {
                        ForwardEnd::TillDone => {
                            half_close_deadline = Some(Instant::now() + HALF_CLOSE_GRACE);
                        }
                        ForwardEnd::Stopped => {
                            conn.cancel();
                        }
                    }
                }
                till_write = &mut backward => {
                    conn.cancel();
                    if let (Some(till_write), false) = (till_write, forward_done) {
                        // The printer went away while the till was still printing.
                        let _ = till_write.as_ref().set_zero_linger();
                        self.events.device(
                            false,
                            format!("printer {} closed the connection mid-job", self.printer),
                        );
                    }
                    break;
                }
                _ = sleep_until_opt(half_close_deadline) => {
                    half_close_deadline = None;
                    conn.cancel();
                }
            }
        }
        if !forward_done {
            forward.await;
        }
    }

    /// Waits for the lane's answer to a receipt (at most until `awaited.until`) and prints its
    /// trailer; false when the printer failed or the connection was cancelled.
    async fn print_answer(
        &self,
        awaited: Option<AwaitedAnswer>,
        assembler: &loyalty_core::escpos::Assembler,
        printer: &mut OwnedWriteHalf,
        conn: &CancellationToken,
    ) -> bool {
        let Some(AwaitedAnswer { answer, until }) = awaited else {
            return true;
        };
        let answer = tokio::select! {
            _ = conn.cancelled() => return false,
            answer = tokio::time::timeout_at(Instant::from_std(until), answer) => answer,
        };
        let answer = match answer {
            Ok(Ok(answer)) => answer,
            // Not handled (refused before a lane took it): nothing to print.
            Ok(Err(_)) => return true,
            Err(_) => {
                tracing::warn!(printer = %self.printer, "no answer to print in time (answer_timeout_ms): the till's next bytes pass on without it");
                return true;
            }
        };
        let Some(trailer) = self.capture.trailer(&answer, assembler.code_page()) else {
            return true;
        };
        match printer.write_all(&trailer).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(printer = %self.printer, error = %err, "printer write failed");
                false
            }
        }
    }

    fn printer_down(&self, till: TcpStream, reason: String) {
        self.events.device(
            false,
            format!(
                "printer {} unreachable: {reason}; till connections are reset until it answers",
                self.printer
            ),
        );
        reset(till);
    }

    /// Till → printer, capturing. Ends at the till's EOF (after telling the printer), on any
    /// error, or when cancelled; the pending document is finished in every case.
    async fn forward(
        &self,
        mut till: OwnedReadHalf,
        mut printer: OwnedWriteHalf,
        conn: CancellationToken,
    ) -> ForwardEnd {
        let mut assembler = self.capture.assembler();
        let mut buf = vec![0u8; 8192];
        let end = 'job: loop {
            let deadline = assembler.deadline().map(Instant::from_std);
            tokio::select! {
                _ = conn.cancelled() => break ForwardEnd::Stopped,
                _ = sleep_until_opt(deadline) => {
                    if let Some(document) = assembler.on_idle(std::time::Instant::now()) {
                        let awaited = self.events.receipt(&self.capture, &document);
                        if !self.print_answer(awaited, &assembler, &mut printer, &conn).await {
                            break ForwardEnd::Stopped;
                        }
                    }
                }
                read = till.read(&mut buf) => match read {
                    Ok(0) => {
                        if let Some(document) = assembler.end_of_stream() {
                            let awaited = self.events.receipt(&self.capture, &document);
                            if !self.print_answer(awaited, &assembler, &mut printer, &conn).await {
                                break ForwardEnd::Stopped;
                            }
                        }
                        let _ = printer.shutdown().await;
                        break ForwardEnd::TillDone;
                    }
                    Ok(n) => {
                        // Up to each receipt's end, then its answer, then the rest: the
                        // printer gets the till's bytes unchanged and never a trailer inside
                        // the next receipt (the till's later bytes wait in TCP meanwhile).
                        let mut rest = &buf[..n];
                        while !rest.is_empty() {
                            let (used, document) =
                                assembler.feed_until_document(rest, std::time::Instant::now());
                            if let Err(err) = printer.write_all(&rest[..used]).await {
                                tracing::warn!(printer = %self.printer, error = %err, "printer write failed");
                                break 'job ForwardEnd::Stopped;
                            }
                            rest = &rest[used..];
                            if let Some(document) = document {
                                let awaited = self.events.receipt(&self.capture, &document);
                                if !self.print_answer(awaited, &assembler, &mut printer, &conn).await {
                                    break 'job ForwardEnd::Stopped;
                                }
                            }
                        }
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "till connection failed");
                        break ForwardEnd::Stopped;
                    }
                },
            }
        };
        if let Some(document) = assembler.end_of_stream() {
            self.events.receipt(&self.capture, &document);
        }
        end
    }
}

/// Printer → till. Returns the till's write half when the printer closed or failed (so the
/// caller can reset the till), or None when the till side failed or the connection was
/// cancelled.
async fn backward(
    mut printer: OwnedReadHalf,
    mut till: OwnedWriteHalf,
    conn: CancellationToken,
) -> Option<OwnedWriteHalf> {
    let mut buf = vec![0u8; 1024];
    loop {
        tokio::select! {
            _ = conn.cancelled() => return None,
            read = printer.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some(till),
                Ok(n) => {
                    if till.write_all(&buf[..n]).await.is_err() {
                        return None;
                    }
                }
            },
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
