//! The store's staff page (SPEC 2.7, issue 17): server-rendered HTML under `/staff` on the local
//! API's listener, for the salesperson's tablet and store IT.
//!
//! | route | what |
//! |---|---|
//! | `GET /staff/login`, `POST /staff/login` | the login form (staff token or name + PIN) → session cookie |
//! | `GET /staff/lanes` (+ `/staff/lanes/live?v=N`, long poll) | now at the lanes: each lane's customer, live |
//! | `GET /staff/customer?q=...` | customer search (card number or customer id) and profile |
//! | `POST /staff/goodwill` | issue a goodwill voucher to the customer shown |
//! | `GET /staff/voucher/{id}.svg` | a voucher's QR code |
//! | `POST /staff/print` | print a voucher's slip on a lane's printer (`[[printer_proxy]]`) |
//! | `GET /staff/figures?days=1\|7\|30` | the store's figures, with per-day charts (SVG) |
//! | `GET /staff/devices` | broker, devices, sync, clock, disk |
//! | `GET /staff/static/*` | the page's CSS and script, compiled into the binary |
//!
//! Pages: [`pages`] (templates, `maud`), [`charts`] (SVG), [`locale`] (German and English).
//! Data: [`lanes`] (who is at each lane, from the answers broadcast), [`customer`], [`figures`].
//! Who may see them: [`auth`].
//!
//! Invariants: every answer carries the security headers of [`secure`] (a CSP that allows no
//! inline script, no framing, no referrer, `no-store`); nothing is loaded from outside the box;
//! every value from a customer, a receipt or a device is escaped by the template; a page is only
//! shown to a session, unless no token and no PIN is configured, which the configuration allows
//! on a loopback address only.

pub mod auth;
pub mod charts;
pub mod customer;
pub mod figures;
pub mod lanes;
pub mod locale;
pub mod pages;
pub mod print;

use crate::config::Config;
use crate::gateway::backend::GatewayBackend;
use crate::gateway::GatewayHandle;
use crate::http::{Answer, ApiBackend, HttpError};
use auth::{Auth, LoginRefused, Session};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use lanes::LanesNow;
use locale::Locale;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The page's style sheet (compiled in: no external assets).
const CSS: &str = include_str!("staff/assets/staff.css");
/// The page's only script: the lanes' long poll (compiled in).
const JS: &str = include_str!("staff/assets/staff.js");
/// Largest form body accepted.
const MAX_FORM: usize = 4096;
/// How long a long poll of the lanes waits for a change before it answers "no change".
pub const LONG_POLL: Duration = Duration::from_secs(20);

/// The Content-Security-Policy of every staff answer: nothing but this box's own CSS, script and
/// images; no inline script or style; no framing; forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

/// The staff page: its data sources, its logins and its language.
pub struct StaffPage {
    handle: GatewayHandle,
    backend: Arc<GatewayBackend>,
    auth: Auth,
    lanes: watch::Receiver<LanesNow>,
    locale: Locale,
    goodwill_max: String,
    data_dir: std::path::PathBuf,
    printers: Vec<print::Printer>,
    printer_names: Vec<String>,
    shutdown: CancellationToken,
}

impl StaffPage {
    /// Reads the staff credentials (refusing a listener on a non-loopback `bound` address
    /// without any) and starts following the lanes (a task of the gateway,
    /// ending at `shutdown`).
    pub fn start(
        handle: GatewayHandle,
        backend: Arc<GatewayBackend>,
        config: &Config,
        bound: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<Arc<StaffPage>, HttpError> {
        let auth = Auth::from_config(&config.http)?;
        if auth.is_open() && !bound.ip().is_loopback() {
            return Err(HttpError::StaffTokenRequired(bound));
        }
        let (lanes_tx, lanes_rx) = watch::channel(LanesNow::default());
        handle.tasks.spawn(lanes::follow(
            handle.answers.subscribe(),
            lanes_tx,
            shutdown.clone(),
        ));
        let locale = Locale::new(
            config.store.locale(),
            &config.store.currency,
            config.store.time_zone(),
        );
        let decimals = locale.decimals();
        let goodwill_max =
            loyalty_core::money::Money::parse(&config.rewards.goodwill_max_value, decimals)
                .map(|max| locale.money(max))
                .unwrap_or_else(|_| config.rewards.goodwill_max_value.clone());
        Ok(Arc::new(StaffPage {
            handle,
            backend,
            auth,
            lanes: lanes_rx,
            locale,
            goodwill_max,
            data_dir: config.storage.data_dir.clone(),
            printers: print::printers(config),
            printer_names: print::printers(config)
                .into_iter()
                .map(|p| format!("{} ({})", p.name, p.lane))
                .collect(),
            shutdown,
        }))
    }
}

impl std::fmt::Debug for StaffPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffPage").finish_non_exhaustive()
    }
}

impl StaffPage {
    /// Answers one request under `/staff` from `peer`.
    pub async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Answer {
        let mut answer = self.route(request, peer).await;
        secure(&mut answer);
        answer
    }

    async fn route(&self, request: Request<Incoming>, peer: SocketAddr) -> Answer {
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let method = request.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/staff/static/staff.css") => {
                return asset(CSS, "text/css; charset=utf-8")
            }
            (&Method::GET, "/staff/static/staff.js") => {
                return asset(JS, "text/javascript; charset=utf-8")
            }
            (&Method::GET, "/staff/login") => {
                return html(
                    StatusCode::OK,
                    pages::login(&self.locale, self.auth.has_pins(), None),
                )
            }
            (&Method::POST, "/staff/login") => return self.login(request, peer).await,
            _ => {}
        }
        let cookies = request
            .headers()
            .get(COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let session = match self.auth.session(cookies.as_deref()) {
            Some(session) => session,
            None if self.auth.is_open() => {
                // No credentials configured (a loopback listener only): a session for the box.
                let (id, _) = self.auth.open_session("local".into());
                let mut answer = redirect(&path_and_query(&path, &query));
                set_cookie(&mut answer, &id, self.auth.ttl());
                return answer;
            }
            None => return redirect("/staff/login"),
        };
        let ctx = pages::Ctx {
            locale: &self.locale,
            staff: &session.staff,
            csrf: &session.csrf,
            printers: &self.printer_names,
        };
        match (&method, path.as_str()) {
            (&Method::GET, "/staff") | (&Method::GET, "/staff/") => redirect("/staff/lanes"),
            (&Method::GET, "/staff/lanes") => {
                let now = self.lanes.borrow().clone();
                html(StatusCode::OK, pages::lanes(&ctx, &now))
            }
            (&Method::GET, "/staff/lanes/live") => self.lanes_live(&query).await,
            (&Method::GET, "/staff/customer") => self.customer(&ctx, &query, None).await,
            (&Method::POST, "/staff/goodwill") => self.goodwill(&ctx, &session, request).await,
            (&Method::POST, "/staff/print") => self.print(&ctx, &session, request).await,
            (&Method::GET, "/staff/figures") => {
                let days = crate::percent::query_param(&query, "days")
                    .and_then(|d| d.parse::<u32>().ok())
                    .filter(|d| figures::PERIODS.contains(d))
                    .unwrap_or(7);
                let handle = self.handle.clone();
                let locale = self.locale.clone();
                match tokio::task::spawn_blocking(move || figures::load(&handle, &locale, days))
                    .await
                {
                    Ok(Ok((period, chart))) => html(
                        StatusCode::OK,
                        pages::figures(&ctx, figures::body(&ctx, days, &period, &chart)),
                    ),
                    Ok(Err(err)) => {
                        tracing::error!(error = %err, "staff page: figures failed");
                        failure(&ctx)
                    }
                    Err(_) => failure(&ctx),
                }
            }
            (&Method::GET, "/staff/devices") => {
                let backend = self.backend.clone();
                let data_dir = self.data_dir.clone();
                match tokio::task::spawn_blocking(move || {
                    let disk = disk_free(&data_dir);
                    (backend.health(), disk)
                })
                .await
                {
                    Ok((report, disk)) => html(StatusCode::OK, pages::devices(&ctx, &report, disk)),
                    Err(_) => failure(&ctx),
                }
            }
            (&Method::POST, "/staff/logout") => {
                self.auth.logout(cookies.as_deref());
                let mut answer = redirect("/staff/login");
                if let Ok(value) = HeaderValue::from_str(&format!(
                    "{}=; Path=/staff; HttpOnly; SameSite=Strict; Max-Age=0",
                    auth::COOKIE
                )) {
                    answer.headers_mut().insert(SET_COOKIE, value);
                }
                answer
            }
            (&Method::GET, _) => match path.strip_prefix("/staff/voucher/") {
                Some(file) => self.voucher_image(file).await,
                None => html(StatusCode::NOT_FOUND, pages::not_found(&ctx)),
            },
            _ => html(StatusCode::METHOD_NOT_ALLOWED, pages::not_found(&ctx)),
        }
    }

    async fn login(&self, request: Request<Incoming>, peer: SocketAddr) -> Answer {
        let Some(form) = read_form(request).await else {
            return html(
                StatusCode::BAD_REQUEST,
                pages::login(&self.locale, self.auth.has_pins(), None),
            );
        };
        let field = |name: &str| crate::percent::query_param(&form, name).unwrap_or_default();
        match self
            .auth
            .login(peer.ip(), &field("token"), &field("name"), &field("pin"))
        {
            Ok((id, session)) => {
                tracing::info!(staff = %session.staff, peer = %peer.ip(), "staff page: login");
                let mut answer = redirect("/staff/lanes");
                set_cookie(&mut answer, &id, self.auth.ttl());
                answer
            }
            Err(refused) => {
                tracing::warn!(peer = %peer.ip(), "staff page: login refused");
                let (status, retry) = match &refused {
                    LoginRefused::Wrong => (StatusCode::UNAUTHORIZED, None),
                    LoginRefused::LockedOut(wait) => {
                        (StatusCode::TOO_MANY_REQUESTS, Some(wait.as_secs().max(1)))
                    }
                };
                let mut answer = html(
                    status,
                    pages::login(&self.locale, self.auth.has_pins(), Some(&refused)),
                );
                if let Some(retry) = retry {
                    if let Ok(value) = HeaderValue::from_str(&retry.to_string()) {
                        answer
                            .headers_mut()
                            .insert(hyper::header::RETRY_AFTER, value);
                    }
                }
                answer
            }
        }
    }

    /// The lanes fragment once its version differs from `v` (or after [`LONG_POLL`]).
    async fn lanes_live(&self, query: &str) -> Answer {
        let seen: Option<u64> =
            crate::percent::query_param(query, "v").and_then(|v| v.parse().ok());
        let mut lanes = self.lanes.clone();
        if seen == Some(lanes.borrow_and_update().version) {
            tokio::select! {
                _ = tokio::time::timeout(LONG_POLL, lanes.changed()) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
        let now = lanes.borrow().clone();
        let mut answer = html(StatusCode::OK, pages::lanes_fragment(&self.locale, &now));
        if let Ok(value) = HeaderValue::from_str(&now.version.to_string()) {
            answer.headers_mut().insert("x-lanes-version", value);
        }
        answer
    }

    async fn customer(
        &self,
        ctx: &pages::Ctx<'_>,
        query: &str,
        issued: Option<pages::Issued>,
    ) -> Answer {
        let q = crate::percent::query_param(query, "q").unwrap_or_default();
        if q.trim().is_empty() {
            return html(
                StatusCode::OK,
                pages::customer(ctx, "", None, issued.as_ref(), &self.goodwill_max),
            );
        }
        let handle = self.handle.clone();
        let lookup = q.clone();
        let found = tokio::task::spawn_blocking(move || match customer::find(&handle, &lookup)? {
            Some(found) => customer::load(&handle, found, jiff::Timestamp::now()).map(Some),
            None => Ok(None),
        })
        .await;
        match found {
            Ok(Ok(page)) => {
                let status = if page.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                };
                html(
                    status,
                    pages::customer(ctx, &q, page.as_ref(), issued.as_ref(), &self.goodwill_max),
                )
            }
            Ok(Err(err)) => {
                tracing::error!(error = %err, "staff page: customer lookup failed");
                failure(ctx)
            }
            Err(_) => failure(ctx),
        }
    }

    async fn goodwill(
        &self,
        ctx: &pages::Ctx<'_>,
        session: &Session,
        request: Request<Incoming>,
    ) -> Answer {
        let Some(form) = read_form(request).await else {
            return html(StatusCode::BAD_REQUEST, pages::not_found(ctx));
        };
        let field = |name: &str| crate::percent::query_param(&form, name).unwrap_or_default();
        if !auth::same_token(&field("csrf"), &session.csrf) {
            return html(StatusCode::FORBIDDEN, pages::not_found(ctx));
        }
        let customer_id = field("customer_id");
        let value = field("value");
        let handle = self.handle.clone();
        let staff = session.staff.clone();
        let clock = self.handle.clock.clone();
        let issue_for = customer_id.clone();
        let result = tokio::task::spawn_blocking(move || {
            let time = match clock.lock() {
                Ok(mut clock) => clock.observe(),
                Err(poisoned) => poisoned.into_inner().observe(),
            };
            customer::issue_goodwill(&handle, &staff, &issue_for, &value, time.trusted, time.now)
        })
        .await;
        let issued = match result {
            Ok(Ok(voucher)) => pages::Issued::Voucher(Box::new(voucher)),
            Ok(Err(err)) => pages::Issued::Refused(err.to_string()),
            Err(_) => return failure(ctx),
        };
        let query = format!("q={}", crate::percent::encode_query_value(&customer_id));
        self.customer(ctx, &query, Some(issued)).await
    }

    async fn print(
        &self,
        ctx: &pages::Ctx<'_>,
        session: &Session,
        request: Request<Incoming>,
    ) -> Answer {
        let Some(form) = read_form(request).await else {
            return html(StatusCode::BAD_REQUEST, pages::not_found(ctx));
        };
        let field = |name: &str| crate::percent::query_param(&form, name).unwrap_or_default();
        if !auth::same_token(&field("csrf"), &session.csrf) {
            return html(StatusCode::FORBIDDEN, pages::not_found(ctx));
        }
        let printer = field("printer")
            .parse::<usize>()
            .ok()
            .and_then(|i| self.printers.get(i));
        let Some(printer) = printer else {
            return html(StatusCode::BAD_REQUEST, pages::not_found(ctx));
        };
        let Some(id) = loyalty_core::voucher::VoucherId::parse(&field("voucher_id")) else {
            return html(StatusCode::BAD_REQUEST, pages::not_found(ctx));
        };
        let vouchers = self.handle.vouchers.clone();
        let voucher = match tokio::task::spawn_blocking(move || vouchers.issued(&id)).await {
            Ok(Ok(Some(voucher))) => voucher,
            Ok(Ok(None)) => return html(StatusCode::NOT_FOUND, pages::not_found(ctx)),
            _ => return failure(ctx),
        };
        let outcome = match print::print(printer, &voucher, self.locale.time_zone().clone()).await {
            Ok(()) => {
                tracing::info!(staff = %session.staff, voucher = %voucher.voucher.id, printer = %printer.name, "voucher slip printed from the staff page");
                pages::Issued::Printed(printer.name.clone(), Box::new(voucher))
            }
            Err(err) => pages::Issued::Refused(err),
        };
        let query = format!("q={}", crate::percent::encode_query_value(&field("q")));
        self.customer(ctx, &query, Some(outcome)).await
    }

    async fn voucher_image(&self, file: &str) -> Answer {
        let Some(id) = file.strip_suffix(".svg") else {
            return plain(
                StatusCode::NOT_FOUND,
                "voucher images are /staff/voucher/{id}.svg",
            );
        };
        let backend = self.backend.clone();
        let id = id.to_string();
        match tokio::task::spawn_blocking(move || {
            backend.voucher_image(&id, crate::http::ImageFormat::Svg)
        })
        .await
        {
            Ok(Ok(Some(bytes))) => {
                let mut answer = Response::new(Full::new(Bytes::from(bytes)));
                answer
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
                answer
            }
            Ok(Ok(None)) => plain(StatusCode::NOT_FOUND, "no such voucher"),
            _ => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the image failed; see the gateway's log",
            ),
        }
    }
}

/// Free bytes of the file system holding the store's data, when it can be read.
fn disk_free(path: &std::path::Path) -> Option<u64> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Sets the security headers every staff answer carries.
pub fn secure(answer: &mut Answer) {
    let headers = answer.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

fn set_cookie(answer: &mut Answer, id: &str, ttl: Duration) {
    let cookie = format!(
        "{}={id}; Path=/staff; HttpOnly; SameSite=Strict; Max-Age={}",
        auth::COOKIE,
        ttl.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        answer.headers_mut().insert(SET_COOKIE, value);
    }
}

fn path_and_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

async fn read_form(request: Request<Incoming>) -> Option<String> {
    let body = Limited::new(request.into_body(), MAX_FORM)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).ok()?;
    Some(text)
}

fn html(status: StatusCode, markup: maud::Markup) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(markup.into_string())));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    answer
}

fn plain(status: StatusCode, text: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
}

fn asset(text: &'static str, content_type: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    answer
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    answer
}

fn redirect(to: &str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::new()));
    *answer.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(to) {
        answer.headers_mut().insert(LOCATION, value);
    }
    answer
}

fn failure(ctx: &pages::Ctx<'_>) -> Answer {
    html(StatusCode::INTERNAL_SERVER_ERROR, pages::failure(ctx))
}
