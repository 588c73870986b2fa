//! The local HTTP API (SPEC 2.7), served with hyper 1 on `http.bind` (127.0.0.1 by default):
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | JSON: storage, broker, each serial device, sync lag, clock, the lanes' input queue; 200 when every part is ok, 503 when degraded or overloaded |
//! | `GET /metrics` | Prometheus/OpenMetrics text ([`crate::telemetry::Metrics::encode`]) |
//! | `GET /customers?card=...` | staff lookup: profile, balance, recent purchases (JSON); 404 for an unknown card |
//! | `GET /vouchers/{id}.png`, `.svg` | the voucher's QR image |
//! | `/staff...` | the staff page (HTML, its own login and cookie: [`crate::staff`]) |
//!
//! The API knows nothing of the store: the gateway implements [`ApiBackend`], whose methods are
//! blocking (they may read sled) and run on tokio's blocking pool. When a bearer token is
//! configured (`http.token_file`) every request must carry `Authorization: Bearer <token>`; a
//! listener on a non-loopback address without a token is refused at start.
//!
//! Invariants: customer data is never logged (the query string is not logged at all); answers
//! with personal data carry `Cache-Control: no-store`; shutdown is bounded by
//! [`SHUTDOWN_GRACE`].

use crate::backoff::Backoff;
use crate::config::HttpConfig;
pub use crate::percent::query_param;
use crate::telemetry::{Metrics, Secret, SecretError, METRICS_CONTENT_TYPE};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use loyalty_protocol::local_api::{ErrorAnswer, HealthAnswer};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Most connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// How long open connections may take to finish after shutdown was requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// A client must send its request headers within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest wait after a failed `accept` (EMFILE and friends).
const ACCEPT_RETRY_MIN: Duration = Duration::from_millis(10);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// What the gateway provides
// ---------------------------------------------------------------------------------------------

/// The gateway's side of the API. Methods block (they may read the store); the server calls
/// them on tokio's blocking pool.
pub trait ApiBackend: Send + Sync + 'static {
    /// The current health of every part.
    fn health(&self) -> HealthReport;
    /// Sets the gauges of the registry `/metrics` encodes from their sources, now (called
    /// before every scrape, so that no gauge lags what `/health` says).
    fn refresh_metrics(&self) {}
    /// The customer holding `card`, or `None` when no customer has it.
    fn customer_by_card(&self, card: &str) -> Result<Option<CustomerView>, BackendError>;
    /// The image of voucher `voucher_id` in `format`, or `None` when there is no such voucher.
    fn voucher_image(
        &self,
        voucher_id: &str,
        format: ImageFormat,
    ) -> Result<Option<Vec<u8>>, BackendError>;
}

/// A failure inside the backend (storage). Logged; the client gets a plain 500.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// Voucher image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG (`image/png`).
    Png,
    /// SVG (`image/svg+xml`).
    Svg,
}

impl ImageFormat {
    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Svg => "image/svg+xml",
        }
    }
}

pub use loyalty_protocol::local_api::{
    ClockHealth, ComponentHealth, CustomerView, DeviceHealth, HealthReport, LanesHealth,
    PurchaseView, SyncHealth,
};

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// Why the API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// `http.bind` is not an address.
    #[error("http.bind '{0}' is not an address:port such as \"127.0.0.1:8780\"")]
    BadAddress(String),
    /// The address could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another process using the port? set http.bind)"
    )]
    Bind {
        /// The address.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The token file could not be used.
    #[error("http.token_file: {0}")]
    Token(#[from] SecretError),
    /// A non-loopback listener without a token.
    #[error("http.bind {0} is not a loopback address: set http.token_file (the API shows customer data)")]
    TokenRequired(SocketAddr),
    /// The staff page on a non-loopback listener without a token or PIN.
    #[error("http.bind {0} is not a loopback address: set http.staff.token_file or http.staff.pins, or set http.staff.enabled = false (the staff page shows customer data)")]
    StaffTokenRequired(SocketAddr),
    /// The listener failed.
    #[error("local API listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound, not yet serving, API listener.
#[derive(Debug)]
pub struct ApiServer {
    listener: TcpListener,
    token: Option<Secret>,
    staff: Option<Arc<crate::staff::StaffPage>>,
}

impl ApiServer {
    /// Binds `config.bind` and reads `config.token_file`.
    pub async fn bind(config: &HttpConfig) -> Result<ApiServer, HttpError> {
        let addr = config
            .bind_addr()
            .ok_or_else(|| HttpError::BadAddress(config.bind.clone()))?;
        let token = match &config.token_file {
            Some(path) => Some(Secret::from_file(path)?),
            None => None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind {
                addr: config.bind.clone(),
                source,
            })?;
        ApiServer::from_listener(listener, token)
    }

    /// Serves on an already bound listener. Refuses a non-loopback listener without a token.
    pub fn from_listener(
        listener: TcpListener,
        token: Option<Secret>,
    ) -> Result<ApiServer, HttpError> {
        let addr = listener.local_addr()?;
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(HttpError::TokenRequired(addr));
        }
        Ok(ApiServer {
            listener,
            token,
            staff: None,
        })
    }

    /// Serves the staff page under `/staff` too (it checks its own logins).
    pub fn with_staff(mut self, staff: Arc<crate::staff::StaffPage>) -> ApiServer {
        self.staff = Some(staff);
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then gives open connections [`SHUTDOWN_GRACE`] to finish.
    pub async fn serve(
        self,
        backend: Arc<dyn ApiBackend>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Result<(), HttpError> {
        let state = Arc::new(State {
            backend,
            metrics,
            token: self.token,
            staff: self.staff,
        });
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
        let builder = Arc::new(builder);
        let mut accept_backoff = Backoff::new(ACCEPT_RETRY_MIN, ACCEPT_RETRY_MAX);
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = limit.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // EMFILE and friends: wait and retry instead of spinning.
                        tracing::warn!(error = %err, "local API: accept failed; retrying");
                        tokio::time::sleep(accept_backoff.next_delay()).await;
                        continue;
                    }
                },
            };
            accept_backoff.reset();
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let builder = builder.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&state, request, peer).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            tracing::debug!(error = %err, "local API connection ended with an error");
                        }
                    }
                    _ = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
                    }
                }
            });
        }
        // Wait (bounded) until every connection task has released its permit.
        let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(
            SHUTDOWN_GRACE + Duration::from_millis(500),
            limit.acquire_many(all),
        )
        .await;
        Ok(())
    }
}

struct State {
    backend: Arc<dyn ApiBackend>,
    metrics: Metrics,
    token: Option<Secret>,
    staff: Option<Arc<crate::staff::StaffPage>>,
}

pub(crate) type Answer = Response<Full<Bytes>>;

async fn handle(state: &Arc<State>, request: Request<Incoming>, peer: SocketAddr) -> Answer {
    if let Some(staff) = &state.staff {
        let path = request.uri().path();
        if path == "/staff" || path.starts_with("/staff/") {
            return staff.handle(request, peer).await;
        }
    }
    if let Some(token) = &state.token {
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
        if !presented.is_some_and(|presented| token.matches(presented)) {
            let mut answer =
                json_error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            answer
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return answer;
        }
    }
    if request.method() != Method::GET {
        let mut answer = json_error(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported");
        answer
            .headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
        return answer;
    }
    let path = request.uri().path().to_string();
    tracing::debug!(path = %path, "local API request");
    match path.as_str() {
        "/health" => health(state).await,
        "/metrics" => {
            let backend = state.backend.clone();
            if let Err(err) = tokio::task::spawn_blocking(move || backend.refresh_metrics()).await {
                tracing::error!(error = %err, "local API: refreshing the gauges panicked");
            }
            let mut answer = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            answer
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            answer
        }
        "/customers" => customer(state, request.uri().query()).await,
        _ => match path.strip_prefix("/vouchers/") {
            Some(file) => voucher(state, file).await,
            None => json_error(StatusCode::NOT_FOUND, "no such resource"),
        },
    }
}

async fn health(state: &Arc<State>) -> Answer {
    let backend = state.backend.clone();
    match tokio::task::spawn_blocking(move || backend.health()).await {
        Ok(report) => {
            let status = if report.healthy() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &HealthAnswer::new(&report))
        }
        Err(err) => {
            tracing::error!(error = %err, "local API: health check panicked");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "health check failed")
        }
    }
}

async fn customer(state: &Arc<State>, query: Option<&str>) -> Answer {
    let Some(card) = query_param(query.unwrap_or(""), "card") else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "give the card number: /customers?card=NUMBER",
        );
    };
    if card.is_empty() || card.len() > 128 || card.chars().any(|c| c.is_control()) {
        return json_error(StatusCode::BAD_REQUEST, "not a card number");
    }
    let backend = state.backend.clone();
    let lookup = tokio::task::spawn_blocking(move || backend.customer_by_card(&card)).await;
    let mut answer = match lookup {
        Ok(Ok(Some(view))) => json(StatusCode::OK, &view),
        Ok(Ok(None)) => json_error(StatusCode::NOT_FOUND, "no customer holds this card"),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "local API: customer lookup failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "lookup failed; see the gateway's log",
            )
        }
        Err(err) => {
            tracing::error!(error = %err, "local API: customer lookup panicked");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "lookup failed; see the gateway's log",
            )
        }
    };
    answer
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

async fn voucher(state: &Arc<State>, file: &str) -> Answer {
    let (id, format) = if let Some(id) = file.strip_suffix(".png") {
        (id, ImageFormat::Png)
    } else if let Some(id) = file.strip_suffix(".svg") {
        (id, ImageFormat::Svg)
    } else {
        return json_error(
            StatusCode::NOT_FOUND,
            "voucher images are /vouchers/{id}.png or /vouchers/{id}.svg",
        );
    };
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return json_error(StatusCode::BAD_REQUEST, "not a voucher id");
    }
    let backend = state.backend.clone();
    let id = id.to_string();
    match tokio::task::spawn_blocking(move || backend.voucher_image(&id, format)).await {
        Ok(Ok(Some(bytes))) => {
            let mut answer = Response::new(Full::new(Bytes::from(bytes)));
            answer.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            answer
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            answer
        }
        Ok(Ok(None)) => json_error(StatusCode::NOT_FOUND, "no such voucher"),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "local API: voucher image failed");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "image failed; see the gateway's log",
            )
        }
        Err(err) => {
            tracing::error!(error = %err, "local API: voucher image panicked");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "image failed; see the gateway's log",
            )
        }
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Answer {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut answer = Response::new(Full::new(Bytes::from(bytes)));
            *answer.status_mut() = status;
            answer
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            answer
        }
        Err(err) => {
            tracing::error!(error = %err, "local API: cannot encode an answer");
            let mut answer = Response::new(Full::new(Bytes::new()));
            *answer.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            answer
        }
    }
}

fn json_error(status: StatusCode, message: &str) -> Answer {
    json(status, &ErrorAnswer { error: message })
}
