//! The local HTTP API over real TCP with a real hyper client: routes, status codes, content
//! types, bearer-token enforcement, 503 when degraded, bounded shutdown.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use loyalty_daemon::config::HttpConfig;
use loyalty_daemon::http::{
    ApiBackend, ApiServer, BackendError, ClockHealth, ComponentHealth, CustomerView, DeviceHealth,
    HealthReport, HttpError, ImageFormat, PurchaseView, SyncHealth,
};
use loyalty_daemon::telemetry::{Metrics, ScanKind, Secret};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const CARD: &str = "2990000000019";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\nfake";
const SVG: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\"/>";

/// A small backend with settable health; one known card and one voucher.
struct TestBackend {
    scanner_up: Mutex<bool>,
    fail_lookups: Mutex<bool>,
}

impl ApiBackend for TestBackend {
    fn health(&self) -> HealthReport {
        let up = *self.scanner_up.lock().expect("lock");
        HealthReport {
            storage: ComponentHealth {
                ok: true,
                detail: "sled open, 12 customers".into(),
            },
            broker: ComponentHealth {
                ok: true,
                detail: "connected to mqtt://127.0.0.1:1883".into(),
            },
            devices: vec![DeviceHealth {
                name: "lane1-scanner".into(),
                up,
                detail: if up {
                    "/dev/serial/by-id/usb-scanner".into()
                } else {
                    "unplugged".into()
                },
            }],
            sync: SyncHealth {
                ok: true,
                enabled: true,
                outbox_depth: 3,
                lag_seconds: Some(2),
                last_error: None,
            },
            clock: ClockHealth {
                ok: true,
                detail: "trusted".into(),
            },
            lanes: loyalty_daemon::http::LanesHealth {
                overloaded: false,
                queue_depth: 0,
            },
        }
    }

    fn customer_by_card(&self, card: &str) -> Result<Option<CustomerView>, BackendError> {
        if *self.fail_lookups.lock().expect("lock") {
            return Err(BackendError("sled: corrupted page 17".into()));
        }
        Ok((card == CARD).then(|| CustomerView {
            customer_id: "C-1".into(),
            card: card.into(),
            name: Some("Ada".into()),
            tier: Some("gold".into()),
            balance: 1234,
            pending: 10,
            recent_purchases: vec![PurchaseView {
                receipt_id: "R-0001".into(),
                at: "2026-11-23T09:15:00Z".parse().expect("timestamp"),
                lane: "3".into(),
                total: "12.34".into(),
                points: 12,
            }],
        }))
    }

    fn voucher_image(
        &self,
        voucher_id: &str,
        format: ImageFormat,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        Ok((voucher_id == "V-42").then(|| match format {
            ImageFormat::Png => PNG.to_vec(),
            ImageFormat::Svg => SVG.as_bytes().to_vec(),
        }))
    }
}

struct Api {
    addr: SocketAddr,
    backend: Arc<TestBackend>,
    metrics: Metrics,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), HttpError>>,
}

async fn start(server: ApiServer) -> Api {
    let addr = server.local_addr().expect("addr");
    let backend = Arc::new(TestBackend {
        scanner_up: Mutex::new(true),
        fail_lookups: Mutex::new(false),
    });
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(backend.clone(), metrics.clone(), shutdown.clone()));
    Api {
        addr,
        backend,
        metrics,
        shutdown,
        task,
    }
}

async fn start_loopback(token: Option<&str>) -> Api {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start(ApiServer::from_listener(listener, token.map(Secret::new)).expect("server")).await
}

struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let response = sender
        .send_request(builder.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, None).await
}

#[tokio::test]
async fn health_is_200_when_healthy_and_503_when_a_device_is_down() {
    let api = start_loopback(None).await;
    let answer = get(api.addr, "/health").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "application/json");
    let body = answer.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["storage"]["ok"], true);
    assert_eq!(body["broker"]["ok"], true);
    assert_eq!(body["devices"][0]["name"], "lane1-scanner");
    assert_eq!(body["sync"]["lag_seconds"], 2);
    assert_eq!(body["sync"]["outbox_depth"], 3);

    *api.backend.scanner_up.lock().expect("lock") = false;
    let answer = get(api.addr, "/health").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = answer.json();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["devices"][0]["up"], false);
    assert_eq!(body["devices"][0]["detail"], "unplugged");
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let api = start_loopback(None).await;
    api.metrics.scan(ScanKind::Card);
    api.metrics.scan(ScanKind::Card);
    api.metrics.device("lane1-scanner", true);
    let answer = get(api.addr, "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer
        .header("content-type")
        .starts_with("application/openmetrics-text"));
    let text = String::from_utf8(answer.body).expect("utf-8");
    assert!(
        text.contains("loyalty_scans_total{kind=\"card\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("loyalty_serial_device_up{device=\"lane1-scanner\"} 1"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn customer_lookup_by_card() {
    let api = start_loopback(None).await;
    let answer = get(api.addr, &format!("/customers?card={CARD}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "application/json");
    assert_eq!(answer.header("cache-control"), "no-store");
    let body = answer.json();
    assert_eq!(body["customer_id"], "C-1");
    assert_eq!(body["card"], CARD);
    assert_eq!(body["balance"], 1234);
    assert_eq!(body["tier"], "gold");
    assert_eq!(body["recent_purchases"][0]["receipt_id"], "R-0001");
    assert_eq!(body["recent_purchases"][0]["at"], "2026-11-23T09:15:00Z");
    assert_eq!(body["recent_purchases"][0]["total"], "12.34");

    // Percent-encoded digits are decoded.
    let answer = get(api.addr, "/customers?card=%32990000000019").await;
    assert_eq!(answer.status, StatusCode::OK);

    let answer = get(api.addr, "/customers?card=2990000000026").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json()["error"], "no customer holds this card");

    let answer = get(api.addr, "/customers").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let answer = get(api.addr, "/customers?card=").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);

    // A storage failure is a 500 without internals.
    *api.backend.fail_lookups.lock().expect("lock") = true;
    let answer = get(api.addr, &format!("/customers?card={CARD}")).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!String::from_utf8_lossy(&answer.body).contains("sled"));
}

#[tokio::test]
async fn voucher_images_as_png_and_svg() {
    let api = start_loopback(None).await;
    let answer = get(api.addr, "/vouchers/V-42.png").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "image/png");
    assert_eq!(answer.body, PNG);

    let answer = get(api.addr, "/vouchers/V-42.svg").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "image/svg+xml");
    assert_eq!(answer.body, SVG.as_bytes());

    assert_eq!(
        get(api.addr, "/vouchers/V-43.png").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(api.addr, "/vouchers/V-42.gif").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(api.addr, "/vouchers/..%2Fx.png").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(api.addr, "/nothing-here").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn only_get_is_allowed() {
    let api = start_loopback(None).await;
    let answer = request(api.addr, "POST", "/health", None).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), "GET");
}

#[tokio::test]
async fn a_configured_token_is_required_on_every_route() {
    let api = start_loopback(Some("s3cret-token")).await;
    for path in [
        "/health",
        "/metrics",
        "/customers?card=2990000000019",
        "/vouchers/V-42.png",
    ] {
        let answer = get(api.addr, path).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(answer.header("www-authenticate"), "Bearer");
        let answer = request(api.addr, "GET", path, Some("wrong-token!")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        let answer = request(api.addr, "GET", path, Some("s3cret-token")).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_non_loopback_listener_needs_a_token() {
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    match ApiServer::from_listener(listener, None) {
        Err(HttpError::TokenRequired(addr)) => assert!(addr.ip().is_unspecified()),
        other => panic!("expected TokenRequired, got {other:?}"),
    }
    // With a token (from a file, as configured), it serves, and enforces it.
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("http.token");
    std::fs::write(&token_file, "from-file-token\n").expect("write token");
    set_mode(&token_file, 0o640);
    let config = HttpConfig {
        enabled: true,
        bind: "0.0.0.0:0".into(),
        token_file: Some(token_file),
        ..HttpConfig::default()
    };
    let server = ApiServer::bind(&config).await.expect("bind with token");
    let port = server.local_addr().expect("addr").port();
    let api = start(server).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert_eq!(get(addr, "/health").await.status, StatusCode::UNAUTHORIZED);
    let answer = request(addr, "GET", "/health", Some("from-file-token")).await;
    assert_eq!(answer.status, StatusCode::OK);
    drop(api);
}

#[tokio::test]
async fn a_world_readable_token_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("http.token");
    std::fs::write(&token_file, "token").expect("write token");
    set_mode(&token_file, 0o644);
    let config = HttpConfig {
        enabled: true,
        bind: "127.0.0.1:0".into(),
        token_file: Some(token_file),
        ..HttpConfig::default()
    };
    let err = ApiServer::bind(&config).await.expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("readable by every user"), "{message}");
    assert!(!message.contains("token\n"), "{message}");
}

#[tokio::test]
async fn shutdown_is_bounded_even_with_an_idle_keep_alive_connection() {
    let api = start_loopback(None).await;
    // An idle client that never sends anything.
    let _idle = TcpStream::connect(api.addr).await.expect("connect");
    assert_eq!(get(api.addr, "/health").await.status, StatusCode::OK);
    api.shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), api.task)
        .await
        .expect("serve returns within the grace period")
        .expect("task");
    assert!(result.is_ok());
    assert!(
        TcpStream::connect(api.addr).await.is_err(),
        "listener closed"
    );
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
