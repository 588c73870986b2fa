//! The HTTPS server: mutual TLS accept loop, routing of the SPEC 2.5 endpoints (events,
//! changes with long-poll, by-card lookups), fault injection and the JSON answers.

use super::changes::{changes_page, has_pending};
use super::store::{lock, store_events, State};
use super::{Fault, ReceiverStats, ReferenceConfig, ReferenceCrm, ReferenceError};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use loyalty_daemon::percent::query_param;
use loyalty_daemon::sync::client::gunzip;
use loyalty_daemon::tls;
use loyalty_protocol::crm::ErrorBody;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest upload accepted, decompressed.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Longest long-poll honoured (`?wait=`).
const MAX_WAIT_SECS: u64 = 300;

/// Long-poll: while nothing is scripted after `cursor`, holds the request until a page is
/// pushed or `wait` is up.
async fn wait_for_changes(
    state: &Mutex<State>,
    store_id: &str,
    cursor: Option<&str>,
    wait: Duration,
) {
    if wait.is_zero() || lock(state).ignore_wait {
        return;
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut held = false;
    loop {
        // Subscribed before looking, so a page pushed in between still wakes this request.
        let mut version = {
            let mut s = lock(state);
            let version = s.pages_version.subscribe();
            if has_pending(&mut s, store_id, cursor) {
                break;
            }
            if !held {
                held = true;
                s.stats.long_polls_held += 1;
            }
            version
        };
        tokio::select! {
            changed = version.changed() => if changed.is_err() { break },
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
}

/// `GET /v1/stores/{id}/customers/by-card/{card}`: the scripted customer holding the card, or
/// 404; never answered while lookups are stalled.
async fn by_card(state: &Mutex<State>, card: &str) -> Response<Full<Bytes>> {
    let card = loyalty_daemon::percent::decode_path_segment(card).unwrap_or_default();
    let (found, stall) = {
        let mut s = lock(state);
        s.stats.card_lookups += 1;
        (s.customers.get(&card).cloned(), s.stall_lookups)
    };
    if stall {
        // Accepted and never answered: the connection closes at shutdown or by the client.
        std::future::pending::<()>().await;
    }
    match found {
        Some(customer) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&customer).unwrap_or_default(),
        ),
        None => error_response(
            StatusCode::NOT_FOUND,
            "unknown_card",
            "no customer of the chain holds this card".into(),
        ),
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
        customers: HashMap::new(),
        stall_lookups: false,
        ignore_wait: false,
        pages_version: tokio::sync::watch::Sender::new(0),
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

pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

pub(super) fn error_response(
    status: StatusCode,
    code: &str,
    message: String,
) -> Response<Full<Bytes>> {
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
        ["v1", "stores", _store, "customers", "by-card", card]
            if request.method() == hyper::Method::GET =>
        {
            return Ok(by_card(&state, card).await);
        }
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
            let wait = query_param(&query, "wait")
                .and_then(|w| w.parse::<u64>().ok())
                .map_or(Duration::ZERO, |w| {
                    Duration::from_secs(w.min(MAX_WAIT_SECS))
                });
            wait_for_changes(&state, &store_id, cursor.as_deref(), wait).await;
            Ok(changes_page(&state, &store_id, cursor.as_deref()))
        }
        _ => Ok(error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} {path} is not supported", request.method()),
        )),
    }
}
