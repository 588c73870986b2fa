//! The **reference CRM receiver**: a small HTTPS server that speaks the gateway's side of
//! SPEC 2.5 (`docs/openapi.yaml`) so that integrators can see what a store sends, and tests and
//! the demo have a real peer (the test double of head office: `loyalty-hub` serves the same
//! contract). It is **not a CRM**: it computes no balances, its changes feed serves only what
//! it was scripted to serve (merges included), and its by-card lookups answer only customers
//! scripted into it ([`ReferenceCrm::add_customer`]; [`ReferenceCrm::stall_lookups`] makes them
//! hang). A changes request with `?wait=N` is held until a page is scripted or the time is up
//! (long-poll). `customer_erased` confirmations are stored like every event
//! ([`ReferenceCrm::erasures_confirmed`]).
//!
//! What it does: mutual TLS 1.3 (a rustls server with `WebPkiClientVerifier`; a client without a
//! certificate signed by `--client-ca` is refused), deduplication by event id, in-order
//! acceptance per store *and database instance* (`acked_through` is the highest contiguous
//! sequence number stored of the batch's `instance`; a new instance, a replaced box, starts at
//! 0 and the old instances' events stay), persistence as JSON lines
//! (`{data_dir}/{store_id}.events.jsonl`, each event with its `instance`, written and flushed
//! before the answer), a
//! scriptable changes feed (pages pushed in-process, or lines of
//! `{data_dir}/{store_id}.changes.jsonl`; the cursor is the number of pages consumed) and fault
//! injection (500, 429/503 with `Retry-After`, stalls, dropped connections) at a given rate.

mod changes;
mod server;
mod store;

pub use server::serve;

use hyper::body::Bytes;
use loyalty_daemon::tls;
use loyalty_protocol::crm::{ChangesPage, OwnedEvent, WireCustomer};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{lock, State};
use tokio_util::sync::CancellationToken;

/// Options of `loyalty-gateway reference-crm`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReferenceCrmArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// The receiver's certificate chain (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// The receiver's private key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// CA whose client certificates are accepted (PEM).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Where received events are kept (`{store_id}.events.jsonl`) and scripted changes pages
    /// are read from (`{store_id}.changes.jsonl`, one page per line).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Share of requests that get a fault, in percent (0 to 100).
    #[arg(long, default_value_t = 0)]
    pub fault_rate: u32,
    /// Which faults to inject: any of `500,429,503,stall,drop,drop-after`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,429,503,stall,drop,drop-after"
    )]
    pub faults: Vec<String>,
}

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The data directory could not be read or written.
    #[error("reference receiver data {path}: {message}")]
    Data {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 500 without storing anything.
    ServerError,
    /// Answer 429 with `Retry-After` (seconds), storing nothing.
    TooManyRequests(u64),
    /// Answer 503 with `Retry-After` (seconds), storing nothing.
    Unavailable(u64),
    /// Wait this long, then answer 503 (meant to exceed the client's request timeout).
    Stall(Duration),
    /// Close the connection without an answer, storing nothing.
    DropBefore,
    /// Store the events, then close the connection without an answer (the ack is lost).
    DropAfter,
}

impl Fault {
    /// Parses a `--faults` word.
    pub fn parse(word: &str) -> Option<Fault> {
        Some(match word.trim() {
            "500" => Fault::ServerError,
            "429" => Fault::TooManyRequests(1),
            "503" => Fault::Unavailable(1),
            "stall" => Fault::Stall(Duration::from_secs(60)),
            "drop" => Fault::DropBefore,
            "drop-after" => Fault::DropAfter,
            _ => return None,
        })
    }
}

/// Fault injection settings.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share of requests that get a fault, in percent.
    pub rate_percent: u32,
    /// Faults picked from at random.
    pub kinds: Vec<Fault>,
    /// Whether the changes feed gets faults too (uploads always do).
    pub on_changes: bool,
}

/// Settings of an in-process receiver.
#[derive(Debug, Clone)]
pub struct ReferenceConfig {
    /// Address to bind (`127.0.0.1:0` for a free port).
    pub listen: SocketAddr,
    /// Server certificate chain (PEM file).
    pub cert_file: PathBuf,
    /// Server key (PEM file).
    pub key_file: PathBuf,
    /// CA of accepted client certificates (PEM file).
    pub client_ca_file: PathBuf,
    /// Persistence directory; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Whether every stored batch is fsynced before the answer.
    pub fsync: bool,
    /// Initial fault injection.
    pub faults: Faults,
}

/// Counters of what the receiver saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// HTTP requests to the events endpoint.
    pub upload_requests: u64,
    /// Events received in total, duplicates included.
    pub events_received: u64,
    /// Events skipped because their id was already stored.
    pub duplicates: u64,
    /// Events refused because their sequence number was already taken by another id.
    pub seq_conflicts: u64,
    /// Batches that started after a gap (nothing stored from the gap on).
    pub gaps: u64,
    /// Faults injected.
    pub faults_injected: u64,
    /// TLS handshakes that failed (no or bad client certificate, ...).
    pub tls_failures: u64,
    /// Changes pages served.
    pub changes_requests: u64,
    /// Changes requests held open (`?wait=`) because nothing was pending.
    pub long_polls_held: u64,
    /// By-card lookups asked.
    pub card_lookups: u64,
}

/// A running reference receiver.
pub struct ReferenceCrm {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ReferenceCrm {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:{port}`: the URL a gateway puts into `crm.url`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The distinct events received from `store_id`, in the order they were stored.
    pub fn received(&self, store_id: &str) -> Vec<OwnedEvent> {
        let mut state = lock(&self.state);
        state
            .store(store_id)
            .map(|log| log.events.clone())
            .unwrap_or_default()
    }

    /// How many distinct events of `store_id` are stored.
    pub fn received_count(&self, store_id: &str) -> usize {
        let mut state = lock(&self.state);
        state
            .store(store_id)
            .map(|log| log.events.len())
            .unwrap_or(0)
    }

    /// The highest contiguous sequence number stored for `store_id`'s latest database instance
    /// (the one first seen last; see [`ReferenceCrm::instances`]).
    pub fn acked_through(&self, store_id: &str) -> u64 {
        let mut state = lock(&self.state);
        state
            .store(store_id)
            .map(|log| {
                log.instances
                    .last()
                    .map_or(0, |instance| log.acked_through(instance))
            })
            .unwrap_or(0)
    }

    /// The highest contiguous sequence number stored for `store_id`'s database `instance`.
    pub fn acked_through_instance(&self, store_id: &str, instance: &str) -> u64 {
        let mut state = lock(&self.state);
        state
            .store(store_id)
            .map(|log| log.acked_through(instance))
            .unwrap_or(0)
    }

    /// The database instances `store_id` has uploaded from, in the order first seen (a
    /// replaced box or a wiped data directory adds one).
    pub fn instances(&self, store_id: &str) -> Vec<String> {
        let mut state = lock(&self.state);
        state
            .store(store_id)
            .map(|log| log.instances.clone())
            .unwrap_or_default()
    }

    /// Counters.
    pub fn stats(&self) -> ReceiverStats {
        lock(&self.state).stats.clone()
    }

    /// The last TLS handshake failure seen, if any.
    pub fn last_tls_error(&self) -> Option<String> {
        lock(&self.state).last_tls_error.clone()
    }

    /// The last upload body received (decompressed JSON), for checks against the OpenAPI
    /// document.
    pub fn last_upload_body(&self) -> Option<Bytes> {
        lock(&self.state).last_upload.clone()
    }

    /// The last non-empty changes page served (JSON).
    pub fn last_changes_body(&self) -> Option<Bytes> {
        lock(&self.state).last_changes.clone()
    }

    /// Replaces the fault injection settings.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.state).faults = faults;
    }

    /// Appends a page to `store_id`'s changes feed (its `cursor` is set by the receiver); a
    /// long-poll waiting for it is answered at once.
    pub fn push_changes(&self, store_id: &str, page: ChangesPage) {
        let mut state = lock(&self.state);
        if let Ok(log) = state.store(store_id) {
            log.pages.push(page);
        }
        state.pages_version.send_modify(|version| *version += 1);
    }

    /// Scripts a customer of the chain for by-card lookups (`GET .../customers/by-card/{card}`
    /// answers her for each of her `cards`, to any store).
    pub fn add_customer(&self, customer: WireCustomer) {
        let mut state = lock(&self.state);
        for card in &customer.cards {
            state.customers.insert(card.clone(), customer.clone());
        }
    }

    /// Makes by-card lookups hang (accepted, never answered) while `stalled`: a head office
    /// that is reachable but does not answer.
    pub fn stall_lookups(&self, stalled: bool) {
        lock(&self.state).stall_lookups = stalled;
    }

    /// Makes the changes feed ignore `?wait=` while `ignore` (an older CRM without long-poll:
    /// an empty page is answered at once).
    pub fn ignore_wait(&self, ignore: bool) {
        lock(&self.state).ignore_wait = ignore;
    }

    /// The customer ids `store_id` confirmed erasing (`customer_erased` events), in order.
    pub fn erasures_confirmed(&self, store_id: &str) -> Vec<String> {
        self.received(store_id)
            .into_iter()
            .filter(|event| event.kind == "customer_erased")
            .filter_map(|event| event.payload["customer_id"].as_str().map(str::to_string))
            .collect()
    }

    /// Stops accepting, closes every connection, and waits for the server task.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        let mut state = lock(&self.state);
        for log in state.stores.values_mut() {
            if let Some(file) = log.file.as_mut() {
                let _ = file.flush();
            }
        }
    }
}

/// Runs `loyalty-gateway reference-crm` until Ctrl-C or SIGTERM.
pub fn main(args: ReferenceCrmArgs) -> anyhow::Result<ExitCode> {
    let listen: SocketAddr = args.listen.parse().map_err(|err| {
        anyhow::anyhow!(
            "--listen '{}' is not an address such as 127.0.0.1:8443: {err}",
            args.listen
        )
    })?;
    let (Some(cert_file), Some(key_file), Some(client_ca_file)) =
        (args.cert, args.key, args.client_ca)
    else {
        anyhow::bail!("--cert, --key and --client-ca are required (mutual TLS is not optional)");
    };
    let mut kinds = Vec::new();
    for word in &args.faults {
        kinds.push(Fault::parse(word).ok_or_else(|| {
            anyhow::anyhow!(
                "--faults: unknown fault '{word}' (use 500, 429, 503, stall, drop, drop-after)"
            )
        })?);
    }
    anyhow::ensure!(
        args.fault_rate <= 100,
        "--fault-rate must be between 0 and 100"
    );
    let config = ReferenceConfig {
        listen,
        cert_file,
        key_file,
        client_ca_file,
        data_dir: args.data_dir,
        fsync: true,
        faults: Faults {
            rate_percent: args.fault_rate,
            kinds,
            on_changes: true,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = serve(config).await?;
        eprintln!(
            "REFERENCE CRM RECEIVER (for integrators and tests; not a CRM) listening on https://{} (mutual TLS)",
            server.addr()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        server.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
