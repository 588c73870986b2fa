//! The **reference CRM receiver**: a small HTTPS server that speaks the gateway's side of
//! SPEC 2.5 (`docs/openapi.yaml`) so that integrators can see what a store sends, and tests and
//! the demo have a real peer. It is **not a CRM**: it keeps no customers, computes no balances,
//! and its changes feed serves only what it was scripted to serve.
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

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use loyalty_daemon::percent::query_param;
use loyalty_daemon::sync::client::gunzip;
use loyalty_daemon::sync::tls;
use loyalty_protocol::crm::{AckResponse, ChangesPage, ErrorBody, OwnedEvent};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest upload accepted, decompressed.
const MAX_BODY: usize = 64 * 1024 * 1024;

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
}

#[derive(Default)]
struct StoreLog {
    events: Vec<OwnedEvent>,
    ids: HashSet<String>,
    /// The highest contiguous sequence number stored, per database instance.
    acked: HashMap<String, u64>,
    /// Database instances in the order they were first seen.
    instances: Vec<String>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    pages: Vec<ChangesPage>,
}

struct State {
    data_dir: Option<PathBuf>,
    fsync: bool,
    stores: HashMap<String, StoreLog>,
    stats: ReceiverStats,
    faults: Faults,
    rng: u64,
    last_tls_error: Option<String>,
    last_upload: Option<Bytes>,
    last_changes: Option<Bytes>,
}

impl State {
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick_fault(&mut self, changes: bool) -> Option<Fault> {
        if self.faults.kinds.is_empty() || (changes && !self.faults.on_changes) {
            return None;
        }
        if self.random() % 100 >= u64::from(self.faults.rate_percent) {
            return None;
        }
        let index = (self.random() % self.faults.kinds.len() as u64) as usize;
        self.stats.faults_injected += 1;
        Some(self.faults.kinds[index])
    }

    fn store(&mut self, store_id: &str) -> Result<&mut StoreLog, String> {
        if !self.stores.contains_key(store_id) {
            let log = load_store(self.data_dir.as_deref(), store_id)?;
            self.stores.insert(store_id.to_string(), log);
        }
        self.stores
            .get_mut(store_id)
            .ok_or_else(|| "store vanished".to_string())
    }
}

impl StoreLog {
    /// The highest contiguous sequence number stored of `instance` (0: none).
    fn acked_through(&self, instance: &str) -> u64 {
        self.acked.get(instance).copied().unwrap_or(0)
    }

    fn set_acked(&mut self, instance: &str, seq: u64) {
        if !self.acked.contains_key(instance) {
            self.instances.push(instance.to_string());
        }
        self.acked.insert(instance.to_string(), seq);
    }
}

/// One line of `{store_id}.events.jsonl`: the event and the database instance that sent it
/// (absent in files written before instances were known: the empty instance).
#[derive(serde::Deserialize)]
struct StoredEvent {
    #[serde(default)]
    instance: String,
    #[serde(flatten)]
    event: OwnedEvent,
}

/// [`StoredEvent`] for writing.
#[derive(serde::Serialize)]
struct StoredEventRef<'a> {
    instance: &'a str,
    #[serde(flatten)]
    event: &'a OwnedEvent,
}

fn events_path(dir: &Path, store_id: &str) -> PathBuf {
    dir.join(format!("{store_id}.events.jsonl"))
}

fn changes_path(dir: &Path, store_id: &str) -> PathBuf {
    dir.join(format!("{store_id}.changes.jsonl"))
}

fn load_store(dir: Option<&Path>, store_id: &str) -> Result<StoreLog, String> {
    let mut log = StoreLog::default();
    let Some(dir) = dir else {
        return Ok(log);
    };
    let path = events_path(dir, store_id);
    if let Ok(file) = std::fs::File::open(&path) {
        for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|err| format!("{}: {err}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            // A torn last line (a crash mid-write) is ignored: its batch was never acknowledged.
            let Ok(StoredEvent { instance, event }) = serde_json::from_str::<StoredEvent>(&line)
            else {
                tracing::warn!(file = %path.display(), line = number + 1, "skipping a torn line");
                continue;
            };
            if event.seq == log.acked_through(&instance) + 1 {
                log.set_acked(&instance, event.seq);
            }
            log.ids.insert(event.id.clone());
            log.events.push(event);
        }
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|err| format!("cannot open {}: {err}", path.display()))?;
    log.file = Some(std::io::BufWriter::new(file));
    if let Ok(text) = std::fs::read_to_string(changes_path(dir, store_id)) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let page: ChangesPage = serde_json::from_str(line)
                .map_err(|err| format!("{}: {err}", changes_path(dir, store_id).display()))?;
            log.pages.push(page);
        }
    }
    Ok(log)
}

/// A running reference receiver.
pub struct ReferenceCrm {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

    /// Appends a page to `store_id`'s changes feed (its `cursor` is set by the receiver).
    pub fn push_changes(&self, store_id: &str, page: ChangesPage) {
        let mut state = lock(&self.state);
        if let Ok(log) = state.store(store_id) {
            log.pages.push(page);
        }
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

/// Starts a receiver in this process (tests, demo, the `reference-crm` command).
pub async fn serve(config: ReferenceConfig) -> Result<ReferenceCrm, ReferenceError> {
    let server_config =
        tls::server_config(&config.cert_file, &config.key_file, &config.client_ca_file)?;
    if let Some(dir) = &config.data_dir {
        std::fs::create_dir_all(dir).map_err(|err| ReferenceError::Data {
            path: dir.clone(),
            message: err.to_string(),
        })?;
    }
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ReferenceError::Bind {
                addr: config.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ReferenceError::Bind {
            addr: config.listen,
            source,
        })?;
    let mut seed = [0u8; 8];
    let _ = getrandom::getrandom(&mut seed);
    let state = Arc::new(Mutex::new(State {
        data_dir: config.data_dir.clone(),
        fsync: config.fsync,
        stores: HashMap::new(),
        stats: ReceiverStats::default(),
        faults: config.faults.clone(),
        rng: u64::from_le_bytes(seed) | 1,
        last_tls_error: None,
        last_upload: None,
        last_changes: None,
    }));
    let shutdown = CancellationToken::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let task = tokio::spawn(accept_loop(
        listener,
        acceptor,
        state.clone(),
        shutdown.clone(),
    ));
    Ok(ReferenceCrm {
        addr,
        state,
        shutdown,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "reference receiver: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let tls = tokio::select! {
                _ = shutdown.cancelled() => return,
                tls = acceptor.accept(tcp) => tls,
            };
            let tls = match tls {
                Ok(tls) => tls,
                Err(err) => {
                    let text = tls::explain(&err).unwrap_or_else(|| err.to_string());
                    tracing::info!(%peer, error = %text, "reference receiver: TLS handshake failed");
                    let mut s = lock(&state);
                    s.stats.tls_failures += 1;
                    s.last_tls_error = Some(err.to_string());
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { handle(request, state).await }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = connection => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "reference receiver: connection ended");
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

/// A request that must end with the connection dropped.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault injection: connection dropped")
    }
}

impl std::error::Error for DropConnection {}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(status: StatusCode, code: &str, message: String) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&ErrorBody {
        code: code.into(),
        message,
    })
    .unwrap_or_default();
    json_response(status, body)
}

fn fault_response(fault: Fault) -> Response<Full<Bytes>> {
    let (status, retry) = match fault {
        Fault::TooManyRequests(secs) => (StatusCode::TOO_MANY_REQUESTS, Some(secs)),
        Fault::Unavailable(secs) => (StatusCode::SERVICE_UNAVAILABLE, Some(secs)),
        Fault::Stall(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    let mut response = error_response(
        status,
        "fault_injected",
        "reference receiver fault injection".into(),
    );
    if let Some(secs) = retry {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&secs.to_string()) {
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, value);
        }
    }
    response
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (store_id, endpoint) = match segments.as_slice() {
        ["v1", "stores", store, endpoint] => (store.to_string(), endpoint.to_string()),
        _ => {
            return Ok(error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such endpoint {path}"),
            ))
        }
    };
    match (request.method().clone(), endpoint.as_str()) {
        (hyper::Method::POST, "events") => {
            let fault = {
                let mut s = lock(&state);
                s.stats.upload_requests += 1;
                s.pick_fault(false)
            };
            match fault {
                Some(Fault::DropBefore) => return Err(DropConnection),
                Some(Fault::Stall(duration)) => {
                    tokio::time::sleep(duration).await;
                    return Ok(fault_response(Fault::Stall(duration)));
                }
                Some(
                    fault
                    @ (Fault::ServerError | Fault::TooManyRequests(_) | Fault::Unavailable(_)),
                ) => return Ok(fault_response(fault)),
                _ => {}
            }
            let gzip = request
                .headers()
                .get(hyper::header::CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return Err(DropConnection),
            };
            let body = if gzip {
                match gunzip(&body, MAX_BODY) {
                    Ok(body) => body,
                    Err(err) => {
                        return Ok(error_response(
                            StatusCode::BAD_REQUEST,
                            "bad_gzip",
                            err.to_string(),
                        ))
                    }
                }
            } else {
                body
            };
            lock(&state).last_upload = Some(body.clone());
            let response = store_events(&state, &store_id, &body);
            if fault == Some(Fault::DropAfter) {
                return Err(DropConnection);
            }
            Ok(response)
        }
        (hyper::Method::GET, "changes") => {
            let fault = {
                let mut s = lock(&state);
                s.stats.changes_requests += 1;
                s.pick_fault(true)
            };
            match fault {
                Some(Fault::DropBefore | Fault::DropAfter) => return Err(DropConnection),
                Some(Fault::Stall(duration)) => {
                    tokio::time::sleep(duration).await;
                    return Ok(fault_response(Fault::Stall(duration)));
                }
                Some(fault) => return Ok(fault_response(fault)),
                None => {}
            }
            let cursor = query_param(&query, "cursor");
            Ok(changes_page(&state, &store_id, cursor.as_deref()))
        }
        _ => Ok(error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} {path} is not supported", request.method()),
        )),
    }
}

fn store_events(state: &Mutex<State>, store_id: &str, body: &[u8]) -> Response<Full<Bytes>> {
    #[derive(serde::Deserialize)]
    struct Upload {
        store_id: String,
        /// Absent from gateways older than instances: the empty instance.
        #[serde(default)]
        instance: String,
        events: Vec<OwnedEvent>,
    }
    let upload: Upload = match serde_json::from_slice(body) {
        Ok(upload) => upload,
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("the body is not an events upload: {err}"),
            )
        }
    };
    if upload.store_id != store_id {
        return error_response(
            StatusCode::BAD_REQUEST,
            "store_mismatch",
            format!(
                "body store_id '{}' differs from the path's '{store_id}'",
                upload.store_id
            ),
        );
    }
    let mut guard = lock(state);
    let state = &mut *guard;
    let fsync = state.fsync;
    let log = match state.store(store_id) {
        Ok(log) => log,
        Err(err) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, "storage", err),
    };
    let (mut duplicates, mut conflicts, mut gap) = (0, 0, false);
    let mut lines = Vec::new();
    let received = upload.events.len() as u64;
    let instance = upload.instance;
    if !log.acked.contains_key(&instance) {
        log.set_acked(&instance, 0);
        tracing::info!(store = %store_id, instance = %instance, "reference receiver: a new database instance of this store");
    }
    for event in upload.events {
        if log.ids.contains(&event.id) {
            duplicates += 1;
            continue;
        }
        let acked = log.acked_through(&instance);
        if event.seq <= acked {
            conflicts += 1;
            continue;
        }
        if event.seq != acked + 1 {
            gap = true;
            break;
        }
        if log.file.is_some() {
            let stored = StoredEventRef {
                instance: &instance,
                event: &event,
            };
            match serde_json::to_vec(&stored) {
                Ok(mut line) => {
                    line.push(b'\n');
                    lines.extend_from_slice(&line);
                }
                Err(err) => {
                    return error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "storage",
                        err.to_string(),
                    )
                }
            }
        }
        log.set_acked(&instance, event.seq);
        log.ids.insert(event.id.clone());
        log.events.push(event);
    }
    if let Some(file) = log.file.as_mut() {
        let written = file
            .write_all(&lines)
            .and_then(|_| file.flush())
            .and_then(|_| {
                if fsync {
                    file.get_ref().sync_data()
                } else {
                    Ok(())
                }
            });
        if let Err(err) = written {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                err.to_string(),
            );
        }
    }
    let acked_through = log.acked_through(&instance);
    state.stats.events_received += received;
    state.stats.duplicates += duplicates;
    state.stats.seq_conflicts += conflicts;
    state.stats.gaps += u64::from(gap);
    let body = serde_json::to_vec(&AckResponse { acked_through }).unwrap_or_default();
    json_response(StatusCode::OK, body)
}

fn changes_page(
    state: &Mutex<State>,
    store_id: &str,
    cursor: Option<&str>,
) -> Response<Full<Bytes>> {
    let position: usize = match cursor {
        None | Some("") => 0,
        Some(text) => match text.parse() {
            Ok(position) => position,
            Err(_) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_cursor",
                    format!("unknown cursor '{text}'"),
                )
            }
        },
    };
    let mut guard = lock(state);
    let log = match guard.store(store_id) {
        Ok(log) => log,
        Err(err) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, "storage", err),
    };
    let page = match log.pages.get(position) {
        Some(page) => ChangesPage {
            cursor: (position + 1).to_string(),
            ..page.clone()
        },
        None => ChangesPage {
            cursor: position.min(log.pages.len()).to_string(),
            ..ChangesPage::default()
        },
    };
    let body = serde_json::to_vec(&page).unwrap_or_default();
    if !page.is_empty() {
        guard.last_changes = Some(Bytes::from(body.clone()));
    }
    json_response(StatusCode::OK, body)
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
