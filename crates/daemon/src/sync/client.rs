//! The HTTP client of the CRM link: one persistent HTTP/1.1 connection over TLS 1.3 (hyper 1 +
//! tokio-rustls), timeouts on connect and on each whole request, gzip bodies, and byte counters
//! at the TCP level (what actually crosses the wire, TLS records included).

use super::SyncError;
use crate::config::CrmConfig;
use crate::tls::{self, ClientTlsFiles};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use loyalty_protocol::crm::{AckResponse, ChangesPage, WireCustomer};
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Largest answer body accepted from the CRM for an upload.
const MAX_ACK_BODY: usize = 64 * 1024;
/// Largest changes page accepted (decompressed).
const MAX_CHANGES_BODY: usize = 64 * 1024 * 1024;

/// Bytes that crossed the TCP connection(s), TLS framing included.
#[derive(Debug, Default)]
pub struct WireCounters {
    /// Bytes written to the socket.
    pub sent: AtomicU64,
    /// Bytes read from the socket.
    pub received: AtomicU64,
}

/// A stream wrapper counting bytes read and written.
#[derive(Debug)]
pub struct CountingStream<S> {
    inner: S,
    counters: Arc<WireCounters>,
}

impl<S> CountingStream<S> {
    /// Wraps `inner`, adding to `counters`.
    pub fn new(inner: S, counters: Arc<WireCounters>) -> Self {
        CountingStream { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        self.counters
            .received
            .fetch_add(read as u64, Ordering::Relaxed);
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            self.counters.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where the CRM is, parsed from `crm.url`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name (or IP address) as written.
    pub host: String,
    /// TCP port (443 when not written).
    pub port: u16,
    /// Path prefix without a trailing `/` (usually empty).
    pub base_path: String,
}

impl Endpoint {
    /// Parses an `https://host[:port][/base]` URL.
    pub fn parse(url: &str) -> Result<Endpoint, SyncError> {
        let uri: Uri = url
            .parse()
            .map_err(|err| SyncError::Config(format!("crm.url '{url}' is not a URL: {err}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(SyncError::Config(format!(
                "crm.url '{url}' must start with https://"
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| SyncError::Config(format!("crm.url '{url}' has no host")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Endpoint {
            host,
            port: uri.port_u16().unwrap_or(443),
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Settings of one client.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The CRM.
    pub endpoint: Endpoint,
    /// TLS identity files (read on every new connection).
    pub tls: ClientTlsFiles,
    /// TCP connect + TLS handshake limit.
    pub connect_timeout: Duration,
    /// Limit for one whole request (send, wait, read the answer).
    pub request_timeout: Duration,
}

impl ClientSettings {
    /// Settings from the `[crm]` section.
    pub fn from_config(config: &CrmConfig) -> Result<ClientSettings, SyncError> {
        Ok(ClientSettings {
            endpoint: Endpoint::parse(&config.url)?,
            tls: ClientTlsFiles {
                ca_file: config.ca_file.clone(),
                cert_file: config.client_cert_file.clone(),
                key_file: config.client_key_file.clone(),
            },
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        })
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// A connection to the CRM, reopened as needed.
pub struct CrmClient {
    settings: ClientSettings,
    counters: Arc<WireCounters>,
    connection: Option<(Sender, tokio::task::JoinHandle<Option<SyncError>>)>,
}

impl Drop for CrmClient {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// The CRM's answer to an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked(pub u64);

impl CrmClient {
    /// A client; nothing is connected until the first request.
    pub fn new(settings: ClientSettings, counters: Arc<WireCounters>) -> CrmClient {
        CrmClient {
            settings,
            counters,
            connection: None,
        }
    }

    /// Closes the current connection (the next request opens a new one).
    pub fn disconnect(&mut self) {
        if let Some((_, task)) = self.connection.take() {
            task.abort();
        }
    }

    async fn connect(
        &self,
    ) -> Result<(Sender, tokio::task::JoinHandle<Option<SyncError>>), SyncError> {
        let config = tls::client_config(&self.settings.tls).map_err(SyncError::from)?;
        let endpoint = &self.settings.endpoint;
        let name = ServerName::try_from(endpoint.host.clone()).map_err(|_| {
            SyncError::Config(format!(
                "crm.url host '{}' is not a valid name",
                endpoint.host
            ))
        })?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let counters = self.counters.clone();
        let host = endpoint.host.clone();
        let port = endpoint.port;
        let attempt = async move {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|err| {
                    SyncError::Connect(format!("cannot connect to {host}:{port}: {err}"))
                })?;
            let _ = tcp.set_nodelay(true);
            let stream = CountingStream::new(tcp, counters);
            connector
                .connect(name, stream)
                .await
                .map_err(|err| match tls::explain(&err) {
                    Some(text) => SyncError::Tls(text),
                    None => SyncError::Connect(format!(
                        "TLS handshake with {host}:{port} failed: {err}"
                    )),
                })
        };
        let stream = tokio::time::timeout(self.settings.connect_timeout, attempt)
            .await
            .map_err(|_| {
                SyncError::Timeout(format!(
                    "connecting to {} took longer than {:?} (crm.connect_timeout_ms)",
                    endpoint.authority(),
                    self.settings.connect_timeout
                ))
            })??;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| SyncError::Connect(format!("HTTP handshake failed: {err}")))?;
        // The connection task's own error matters: in TLS 1.3 the CRM's refusal of the client
        // certificate arrives as an alert after the handshake, read by this task.
        let task = tokio::spawn(async move {
            match connection.await {
                Ok(()) => None,
                Err(err) => {
                    tracing::debug!(error = %err, "CRM connection ended");
                    Some(http_error(err))
                }
            }
        });
        Ok((sender, task))
    }

    /// Sends one request and reads the whole answer, within the request timeout. Any failure
    /// drops the connection.
    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), SyncError> {
        let timeout = self.settings.request_timeout;
        self.exchange_within(request, limit, timeout, "crm.request_timeout_ms")
            .await
    }

    /// [`CrmClient::exchange`] with another limit for the whole request (`setting` names the
    /// configuration key behind it, for the operator).
    async fn exchange_within(
        &mut self,
        request: Request<Full<Bytes>>,
        limit: usize,
        timeout: Duration,
        setting: &str,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), SyncError> {
        let result = tokio::time::timeout(timeout, self.exchange_inner(request, limit)).await;
        let result = match result {
            Ok(result) => result,
            Err(_) => Err(SyncError::Timeout(format!(
                "the CRM did not answer within {timeout:?} ({setting})"
            ))),
        };
        if result.is_err() {
            self.disconnect();
        }
        result
    }

    async fn exchange_inner(
        &mut self,
        request: Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), SyncError> {
        let reusable = matches!(&self.connection, Some((sender, _)) if !sender.is_closed());
        if !reusable {
            self.disconnect();
            self.connection = Some(self.connect().await?);
        }
        let Some((sender, _)) = self.connection.as_mut() else {
            return Err(SyncError::Connect("no connection".into()));
        };
        let sent = async {
            sender.ready().await.map_err(http_error)?;
            let response = sender.send_request(request).await.map_err(http_error)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|err| match err.downcast::<hyper::Error>() {
                    Ok(err) => http_error(*err),
                    Err(err) => SyncError::BadResponse(format!("answer body: {err}")),
                })?
                .to_bytes();
            Ok::<_, SyncError>((parts, body))
        }
        .await;
        let (parts, body) = match sent {
            Ok(sent) => sent,
            Err(err @ SyncError::Tls(_)) => return Err(err),
            Err(err) => {
                // The request only saw "connection closed"; the connection task knows why.
                if let Some((_, task)) = self.connection.take() {
                    let abort = task.abort_handle();
                    let cause = tokio::time::timeout(Duration::from_millis(200), task).await;
                    abort.abort();
                    if let Ok(Ok(Some(cause @ SyncError::Tls(_)))) = cause {
                        return Err(cause);
                    }
                }
                return Err(err);
            }
        };
        let body = if parts
            .headers
            .get(hyper::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"))
        {
            gunzip(&body, limit)?
        } else {
            body
        };
        Ok((parts.status, parts.headers, body))
    }

    fn request(&self, method: hyper::Method, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("{}{}", self.settings.endpoint.base_path, path))
            .header(hyper::header::HOST, self.settings.endpoint.authority())
            .header(
                hyper::header::USER_AGENT,
                concat!("loyalty-gateway/", env!("CARGO_PKG_VERSION")),
            )
    }

    /// Uploads one batch (`body` is the gzip-compressed JSON of an `EventsRequest`); returns the
    /// CRM's `acked_through`.
    pub async fn post_events(
        &mut self,
        store_id: &str,
        gzip_body: Bytes,
    ) -> Result<Acked, SyncError> {
        let request = self
            .request(
                hyper::Method::POST,
                &format!("/v1/stores/{store_id}/events"),
            )
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::CONTENT_ENCODING, "gzip")
            .body(Full::new(gzip_body))
            .map_err(|err| SyncError::Config(format!("cannot build request: {err}")))?;
        let (status, headers, body) = self.exchange(request, MAX_ACK_BODY).await?;
        check_status(status, &headers, &body)?;
        let ack: AckResponse = serde_json::from_slice(&body).map_err(|err| {
            SyncError::BadResponse(format!(
                "the CRM's answer to an upload is not {{\"acked_through\": N}}: {err}"
            ))
        })?;
        Ok(Acked(ack.acked_through))
    }

    /// Fetches the changes page after `cursor` (`None`: from the beginning) for the database
    /// `instance` (the CRM's `includes_store_seq` counts that instance's sequence numbers).
    /// A non-zero `wait` long-polls: the CRM may hold the request that long when nothing is
    /// pending, so the request may take `wait` more than `crm.request_timeout_ms`.
    pub async fn get_changes(
        &mut self,
        store_id: &str,
        instance: &str,
        cursor: Option<&str>,
        wait: Duration,
    ) -> Result<ChangesPage, SyncError> {
        let mut path = format!(
            "/v1/stores/{store_id}/changes?instance={}",
            crate::percent::encode_query_value(instance)
        );
        if let Some(cursor) = cursor {
            path.push_str("&cursor=");
            path.push_str(&crate::percent::encode_query_value(cursor));
        }
        if !wait.is_zero() {
            path.push_str(&format!("&wait={}", wait.as_secs()));
        }
        let request = self
            .request(hyper::Method::GET, &path)
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::ACCEPT_ENCODING, "gzip")
            .body(Full::new(Bytes::new()))
            .map_err(|err| SyncError::Config(format!("cannot build request: {err}")))?;
        let timeout = self.settings.request_timeout + wait;
        let (status, headers, body) = self
            .exchange_within(
                request,
                MAX_CHANGES_BODY,
                timeout,
                "crm.request_timeout_ms + crm.feed_wait_secs",
            )
            .await?;
        check_status(status, &headers, &body)?;
        serde_json::from_slice(&body).map_err(|err| {
            SyncError::BadResponse(format!("the CRM's changes page is malformed: {err}"))
        })
    }

    /// Asks the CRM for the customer holding `card` (`GET .../customers/by-card/{card}`,
    /// naming the database `instance` as the changes feed does, since the answer's
    /// `includes_store_seq` counts that instance's sequence numbers): `Ok(None)` on 404. The caller bounds the whole call (connect included) with its own
    /// timeout; this one only adds the client's request timeout as a backstop.
    pub async fn get_customer_by_card(
        &mut self,
        store_id: &str,
        instance: &str,
        card: &str,
    ) -> Result<Option<WireCustomer>, SyncError> {
        let path = format!(
            "/v1/stores/{store_id}/customers/by-card/{}?instance={}",
            crate::percent::encode_path_segment(card),
            crate::percent::encode_query_value(instance)
        );
        let request = self
            .request(hyper::Method::GET, &path)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|err| SyncError::Config(format!("cannot build request: {err}")))?;
        let (status, headers, body) = self.exchange(request, MAX_ACK_BODY).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check_status(status, &headers, &body)?;
        serde_json::from_slice(&body).map(Some).map_err(|err| {
            SyncError::BadResponse(format!("the CRM's by-card answer is not a customer: {err}"))
        })
    }
}

fn http_error(err: hyper::Error) -> SyncError {
    if let Some(text) = tls::explain(&err) {
        return SyncError::Tls(text);
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    SyncError::Connection(format!("the connection to the CRM failed: {text}"))
}

fn check_status(
    status: StatusCode,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> Result<(), SyncError> {
    if status == StatusCode::OK {
        return Ok(());
    }
    let retry_after = headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::backoff::parse_retry_after);
    let text: String = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    Err(SyncError::Status {
        status: status.as_u16(),
        retry_after,
        body: text,
    })
}

/// gzip-compresses `data` (fast level: the bytes are JSON with much repetition).
pub fn gzip(data: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::new(6),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// Decompresses a gzip body, refusing more than `limit` bytes.
pub fn gunzip(data: &[u8], limit: usize) -> Result<Bytes, SyncError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|err| SyncError::BadResponse(format!("gzip body: {err}")))?;
    if out.len() > limit {
        return Err(SyncError::BadResponse("gzip body too large".into()));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parses_host_port_and_base() {
        let e = Endpoint::parse("https://crm.example.com:8443/api/").expect("parse");
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("crm.example.com", 8443, "/api")
        );
        let e = Endpoint::parse("https://crm.example.com").expect("parse");
        assert_eq!((e.port, e.base_path.as_str()), (443, ""));
        assert!(Endpoint::parse("http://crm.example.com").is_err());
    }

    #[test]
    fn gzip_round_trips_and_limits() {
        let data = b"{\"x\":1}".repeat(100);
        let packed = gzip(&data);
        assert!(packed.len() < data.len());
        assert_eq!(&gunzip(&packed, 10_000).expect("gunzip")[..], &data[..]);
        assert!(gunzip(&packed, 10).is_err());
    }
}
