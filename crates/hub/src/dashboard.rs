//! Head office's dashboard in a browser (`[dashboard]`): a second listener, plain HTTP on a
//! loopback address only (config check refuses others; a TLS reverse proxy fronts it for other
//! machines), a login form taking the admin token, server-side sessions behind an
//! `HttpOnly; SameSite=Strict` cookie, a lockout after wrong tokens, and security headers (CSP
//! without any script) on every response. Pages are in [`pages`], words and formats in [`text`].
//!
//! Invariants: the token is compared in constant time and never logged; a locked-out peer is
//! refused before its token is looked at; sessions expire on the server; nothing a store or a
//! customer sent is written into the HTML except through maud's escaping.

pub mod pages;
pub mod text;

use crate::api::Body;
use crate::Hub;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "lg_hub";
/// Wrong tokens a peer may send before it is locked out.
pub const FREE_FAILURES: u32 = 3;
/// The first lockout; each further failure doubles it, up to [`MAX_LOCKOUT`].
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(2);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(300);
const MAX_SESSIONS: usize = 256;
const CSS: &str = include_str!("dashboard/dashboard.css");
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Default)]
struct Attempts {
    failures: u32,
    locked_until: Option<Instant>,
}

/// Sessions and the failed-login limiter of one hub process.
#[derive(Default)]
pub struct Auth {
    sessions: Mutex<HashMap<String, Instant>>,
    attempts: Mutex<HashMap<IpAddr, Attempts>>,
}

/// Why a login was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The token did not match.
    Wrong,
    /// Too many wrong tokens from this peer: try again after this long.
    LockedOut(Duration),
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_id() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Auth {
    /// Checks `offered` against `token` for `peer`; the new session's id when it matches.
    pub fn login(
        &self,
        peer: IpAddr,
        offered: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<String, Refused> {
        let now = Instant::now();
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let entry = attempts.entry(peer).or_default();
        if let Some(until) = entry.locked_until {
            if until > now {
                return Err(Refused::LockedOut(until - now));
            }
        }
        if !same(offered.trim().as_bytes(), token.as_bytes()) {
            entry.failures += 1;
            if entry.failures >= FREE_FAILURES {
                let doublings = (entry.failures - FREE_FAILURES).min(16);
                let delay = (FIRST_LOCKOUT * 2u32.pow(doublings)).min(MAX_LOCKOUT);
                entry.locked_until = Some(now + delay);
            }
            return Err(Refused::Wrong);
        }
        attempts.remove(&peer);
        drop(attempts);
        let id = random_id().ok_or(Refused::Wrong)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, expires| *expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, e)| **e)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), now + ttl);
        Ok(id)
    }

    /// Whether `id` is a live session.
    pub fn valid(&self, id: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(id).is_some_and(|e| *e > Instant::now())
    }

    /// Ends `id`.
    pub fn logout(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(id);
    }
}

/// Serves the dashboard on `listener` until `shutdown`.
pub async fn serve(hub: Arc<Hub>, listener: TcpListener, shutdown: CancellationToken) {
    let auth = Arc::new(Auth::default());
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "dashboard accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (hub, auth, shutdown) = (hub.clone(), auth.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let (hub, auth) = (hub.clone(), auth.clone());
                async move {
                    let mut response = route(request, &hub, &auth, peer).await;
                    secure(&mut response);
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

/// Security headers on every response.
fn secure(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=()",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn html(status: StatusCode, body: maud::Markup) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", body.into_string())
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut response = respond(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        String::new(),
    );
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    response
}

fn session_of<T>(request: &Request<T>) -> Option<String> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_string())
}

/// Decodes one `application/x-www-form-urlencoded` value.
fn form_value(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let raw = text
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)?
        .1;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn days_of<T>(request: &Request<T>) -> i32 {
    let days = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("days="))
        .and_then(|d| d.parse::<i32>().ok());
    match days {
        Some(7) => 7,
        Some(30) => 30,
        _ => 1,
    }
}

async fn route(
    request: Request<Incoming>,
    hub: &Hub,
    auth: &Auth,
    peer: SocketAddr,
) -> Response<Body> {
    let texts = text::Texts::of(&hub.config.dashboard.locale);
    let path = request.uri().path().to_string();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/dashboard.css") => {
            let mut response = respond(StatusCode::OK, "text/css; charset=utf-8", CSS.into());
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
            response
        }
        (Method::GET, "/login") => html(StatusCode::OK, pages::login(texts, None)),
        (Method::POST, "/login") => login(request, hub, auth, peer, texts).await,
        (Method::POST, "/logout") => {
            if let Some(id) = session_of(&request) {
                auth.logout(&id);
            }
            let mut response = redirect("/login");
            response.headers_mut().insert(
                SET_COOKIE,
                HeaderValue::from_static("lg_hub=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            );
            response
        }
        (Method::GET, "/") => {
            if !session_of(&request).is_some_and(|id| auth.valid(&id)) {
                return redirect("/login");
            }
            match pages::dashboard(hub, texts, days_of(&request)).await {
                Ok(page) => html(StatusCode::OK, page),
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard: query failed");
                    html(
                        StatusCode::SERVICE_UNAVAILABLE,
                        pages::message(texts, texts.db_down),
                    )
                }
            }
        }
        _ => html(
            StatusCode::NOT_FOUND,
            pages::message(texts, texts.not_found),
        ),
    }
}

async fn login(
    request: Request<Incoming>,
    hub: &Hub,
    auth: &Auth,
    peer: SocketAddr,
    texts: &'static text::Texts,
) -> Response<Body> {
    let Some(token) = &hub.admin_token else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message(texts, texts.no_token),
        );
    };
    let body = match Limited::new(request.into_body(), 4096).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return html(
                StatusCode::PAYLOAD_TOO_LARGE,
                pages::login(texts, Some(texts.wrong)),
            )
        }
    };
    let offered = form_value(&body, "token").unwrap_or_default();
    let ttl = Duration::from_secs(u64::from(hub.config.dashboard.session_minutes) * 60);
    match auth.login(peer.ip(), &offered, token, ttl) {
        Ok(id) => {
            let mut response = redirect("/");
            let cookie = format!(
                "{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                ttl.as_secs()
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(SET_COOKIE, value);
            }
            response
        }
        Err(Refused::Wrong) => {
            tracing::info!(%peer, "dashboard: wrong token");
            html(
                StatusCode::UNAUTHORIZED,
                pages::login(texts, Some(texts.wrong)),
            )
        }
        Err(Refused::LockedOut(left)) => html(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(texts, Some(&texts.locked(left.as_secs().max(1)))),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(
            form_value(b"a=1&token=a%2Bb+c", "token").as_deref(),
            Some("a+b c")
        );
        assert_eq!(form_value(b"token=%zz", "token"), None);
        assert_eq!(form_value(b"token=%4", "token"), None);
    }

    #[test]
    fn wrong_tokens_lock_a_peer_out() {
        let auth = Auth::default();
        let peer: IpAddr = [127, 0, 0, 1].into();
        let ttl = Duration::from_secs(60);
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                auth.login(peer, "nope", "the-token", ttl),
                Err(Refused::Wrong)
            );
        }
        assert!(matches!(
            auth.login(peer, "the-token", "the-token", ttl),
            Err(Refused::LockedOut(_))
        ));
    }
}
