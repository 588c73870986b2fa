//! The admin API for the retailer's CRM and head office (`/v1/admin/...`, SPEC 2.8): a bearer
//! token read from `admin.token_file` at start, compared in constant time, required on every
//! request (401 without or with a wrong one; the connection is mutual TLS like the store API).
//! `PUT customers/{id}` (profile, cards, tier override, consent), `PUT rules`, `POST keys`
//! (keys and revocations), `POST offers` (stored verbatim and sent to every store), `POST
//! adjustments` (to one store of the customer), and erasure ([`erasure`]). Each change is written
//! with the change-log rows of the stores it concerns in one transaction (long-polls wake at
//! COMMIT).

pub mod erasure;

use crate::api::{error, json, read_body, Body};
use crate::db::{self, DbError};
use crate::ingest::apply::{self, Change, Effects};
use crate::Hub;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use loyalty_core::contact;
use loyalty_protocol::crm::{WireAdjustment, WireConsent, WireKey};
use serde::{Deserialize, Serialize};

/// Reads the admin token (`admin.token_file`, first line); `None` when not configured.
pub fn read_token(config: &crate::config::Config) -> Result<Option<String>, String> {
    let Some(file) = &config.admin.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "admin.token_file: cannot read {}: {e} (check the path and that the hub's user may read it)",
            file.display()
        )
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 {
        return Err(format!(
            "admin.token_file: {} must hold a token of at least 16 characters on its first line",
            file.display()
        ));
    }
    Ok(Some(token))
}

/// Equal in time independent of where `a` and `b` differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `None` when the request carries the admin token; the refusal otherwise.
pub fn refusal(request: &Request<Incoming>, hub: &Hub) -> Option<Response<Body>> {
    let Some(token) = &hub.admin_token else {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_disabled",
            "the admin API is off on this hub: set admin.token_file and restart".into(),
        ));
    };
    let offered = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same(offered.as_bytes(), token.as_bytes()) {
        None
    } else {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <the token of admin.token_file>".into(),
        );
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        Some(response)
    }
}

/// A database failure as an answer.
pub fn unavailable(e: &DbError) -> Response<Body> {
    tracing::warn!(error = %e, "admin request failed on the database");
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        format!("{e}; retry later"),
    );
    response.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    response
}

/// Routes `/v1/admin/{rest...}` (authorized first).
pub async fn route(request: Request<Incoming>, hub: &Hub, rest: &[String]) -> Response<Body> {
    if let Some(refused) = refusal(&request, hub) {
        return refused;
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let method = request.method().clone();
    if let (&Method::GET, ["erasures", id]) = (&method, rest.as_slice()) {
        return erasure::status(hub, id).await;
    }
    let known = matches!(
        (&method, rest.as_slice()),
        (&Method::PUT, ["customers", _])
            | (&Method::PUT, ["rules"])
            | (
                &Method::POST,
                ["keys" | "offers" | "adjustments" | "erasures"]
            )
    );
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{method} {} is not an admin endpoint", request.uri().path()),
        );
    }
    let body = match read_body(request, hub.config.limits.max_body_bytes).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    macro_rules! with_body {
        ($handler:expr) => {
            match parse(&body) {
                Ok(parsed) => $handler(parsed).await,
                Err(message) => return error(StatusCode::BAD_REQUEST, "malformed", message),
            }
        };
    }
    let answer = match rest.as_slice() {
        ["customers", id] => with_body!(|b| customer(hub, id, b)),
        ["rules"] => with_body!(|b| rules(hub, b)),
        ["keys"] => with_body!(|b| key(hub, b)),
        ["offers"] => with_body!(|b| offer(hub, b)),
        ["adjustments"] => with_body!(|b| adjustment(hub, b)),
        _ => with_body!(|b: ErasureBody| async move { erasure::erase(hub, &b.customer_id).await }),
    };
    if answer.status().is_success() {
        let kind = match rest.first() {
            Some(&"customers") => "customer",
            Some(&"keys") => "key",
            Some(&"offers") => "offer",
            Some(&"adjustments") => "adjustment",
            Some(&"erasures") => "erasure",
            _ => "rules",
        };
        hub.metrics.admin_change(kind);
    }
    answer
}

/// Parses a JSON body, naming the field on failure.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("the body is not valid: {}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// Runs `work` in one transaction, then writes the change-log rows of `effects` last (the
/// counter's row lock is held only until COMMIT) and commits. Serialization failures re-run it.
async fn write<F, T>(hub: &Hub, work: F) -> Result<T, AdminError>
where
    F: for<'t> Fn(
        &'t deadpool_postgres::Transaction<'t>,
        &'t mut Effects,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, AdminError>> + Send + 't>,
    >,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let mut client = db::client(&hub.pool).await?;
            let tx = client.transaction().await.map_err(DbError::Query)?;
            let mut effects = Effects::default();
            let value = work(&tx, &mut effects).await?;
            apply::emit(&tx, &hub.config.feed, &effects)
                .await
                .map_err(DbError::Query)?;
            tx.commit().await.map_err(DbError::Query)?;
            Ok(value)
        }
        .await;
        match result {
            Err(AdminError::Db(e)) if e.is_retryable() && attempt < 8 => continue,
            other => return other,
        }
    }
}

/// Why an admin change was refused.
#[derive(Debug)]
pub enum AdminError {
    /// Answer with this status, code and message; nothing was written.
    Refused(StatusCode, &'static str, String),
    /// The database failed.
    Db(DbError),
}

impl From<DbError> for AdminError {
    fn from(e: DbError) -> Self {
        AdminError::Db(e)
    }
}

impl From<tokio_postgres::Error> for AdminError {
    fn from(e: tokio_postgres::Error) -> Self {
        AdminError::Db(DbError::Query(e))
    }
}

/// The answer of a finished admin change.
fn answer<T: Serialize>(result: Result<T, AdminError>) -> Response<Body> {
    match result {
        Ok(value) => json(StatusCode::OK, &value),
        Err(AdminError::Refused(status, code, message)) => error(status, code, message),
        Err(AdminError::Db(e)) => unavailable(&e),
    }
}

/// `PUT /v1/admin/customers/{id}`: the whole profile (absent fields are cleared), except
/// `cards`, which when present is the customer's exact set of cards.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerBody {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    cards: Option<Vec<String>>,
    /// A tier set by head office; wins over the computed one. Null: none.
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    consent: Option<WireConsent>,
    /// Phone number in clear, international form (`+49 170 1234567`); only its hash
    /// (`loyalty_core::contact`) is stored and sent to the stores. Absent: none.
    #[serde(default)]
    phone: Option<String>,
    /// E-mail address in clear; only its hash is stored. Absent: none.
    #[serde(default)]
    email: Option<String>,
}

#[derive(Serialize)]
struct Done {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_id: Option<String>,
}

/// Whether `id` exists (`Ok(false)`: not yet); `Err` when it may not change (merged away, erased).
async fn live(tx: &deadpool_postgres::Transaction<'_>, id: &str) -> Result<bool, AdminError> {
    let row = db::query_opt(
        tx,
        "SELECT merged_into, erased_at IS NOT NULL FROM customers WHERE customer_id = $1 FOR UPDATE",
        &[&id],
    )
    .await?;
    match row {
        None => Ok(false),
        Some(row) => {
            if let Some(into) = row.get::<_, Option<String>>(0) {
                return Err(AdminError::Refused(
                    StatusCode::CONFLICT,
                    "merged",
                    format!("customer {id} was merged into {into}: use that id"),
                ));
            }
            if row.get::<_, bool>(1) {
                return Err(AdminError::Refused(
                    StatusCode::GONE,
                    "erased",
                    format!("customer {id} was erased; an erased customer cannot be changed"),
                ));
            }
            Ok(true)
        }
    }
}

async fn customer(hub: &Hub, id: &str, body: CustomerBody) -> Response<Body> {
    if id.is_empty() || id.len() > 256 {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "customer id: 1 to 256 characters".into(),
        );
    }
    if let Some(card) = body
        .cards
        .iter()
        .flatten()
        .find(|c| c.is_empty() || c.len() > 64)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("cards: {card:?} must be 1 to 64 characters"),
        );
    }
    let phone_hash = match body.phone.as_deref().map(contact::phone_hash) {
        Some(None) => {
            let what = "phone: 6 to 15 digits, with an optional leading + and spaces, dashes, dots, slashes or parentheses";
            return error(StatusCode::BAD_REQUEST, "malformed", what.into());
        }
        hash => hash.flatten(),
    };
    let email_hash = match body.email.as_deref().map(contact::email_hash) {
        Some(None) => {
            let what = "email: one @ with text on both sides and no spaces";
            return error(StatusCode::BAD_REQUEST, "malformed", what.into());
        }
        hash => hash.flatten(),
    };
    let id = id.to_string();
    let body = std::sync::Arc::new(body);
    let hashes = std::sync::Arc::new((phone_hash, email_hash));
    answer(
        write(hub, move |tx, effects| {
            let id = id.clone();
            let body = body.clone();
            let hashes = hashes.clone();
            Box::pin(async move {
                live(tx, &id).await?;
                let consent = body.consent;
                let (phone_hash, email_hash) = &*hashes;
                db::exec(
                    tx,
                    "INSERT INTO customers (customer_id, display_name, tier_override,
                         consent_marketing, consent_profiling, phone_hash, email_hash,
                         enrolled_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, now())
                     ON CONFLICT (customer_id) DO UPDATE
                     SET display_name = excluded.display_name,
                         tier_override = excluded.tier_override,
                         consent_marketing = excluded.consent_marketing,
                         consent_profiling = excluded.consent_profiling,
                         phone_hash = excluded.phone_hash,
                         email_hash = excluded.email_hash,
                         updated_at = now()",
                    &[
                        &id,
                        &body.display_name,
                        &body.tier,
                        &consent.map(|c| c.marketing),
                        &consent.map(|c| c.profiling),
                        phone_hash,
                        email_hash,
                    ],
                )
                .await?;
                if let Some(cards) = &body.cards {
                    if let Some(row) = db::query_opt(
                        tx,
                        "SELECT card, customer_id FROM cards
                         WHERE card = ANY($1) AND customer_id <> $2 LIMIT 1",
                        &[cards, &id],
                    )
                    .await?
                    {
                        let card: String = row.get(0);
                        let owner: String = row.get(1);
                        return Err(AdminError::Refused(
                            StatusCode::CONFLICT,
                            "card_taken",
                            format!("card {card} belongs to customer {owner}: remove it there first (or merge)"),
                        ));
                    }
                    db::exec(
                        tx,
                        "DELETE FROM cards WHERE customer_id = $1 AND NOT (card = ANY($2))",
                        &[&id, cards],
                    )
                    .await?;
                    db::exec(
                        tx,
                        "INSERT INTO cards (card, customer_id) SELECT unnest($2::text[]), $1
                         ON CONFLICT (card) DO NOTHING",
                        &[&id, cards],
                    )
                    .await?;
                }
                effects.customers.insert(id.clone());
                Ok(Done {
                    ok: true,
                    customer_id: Some(id),
                    store_id: None,
                })
            })
        })
        .await,
    )
}

async fn rules(hub: &Hub, body: serde_json::Value) -> Response<Body> {
    if !body.is_object() {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "the rules must be a JSON object (the [rules] table as JSON)".into(),
        );
    }
    let text = body.to_string();
    answer(
        write(hub, move |tx, effects| {
            let text = text.clone();
            Box::pin(async move {
                db::exec(
                    tx,
                    "INSERT INTO rules (id, rules) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET rules = excluded.rules, updated_at = now()",
                    &[&text],
                )
                .await?;
                effects.changes.push(Change {
                    store: None,
                    kind: "rules",
                    customer_id: None,
                    voucher_id: None,
                    payload: Some(text),
                });
                Ok(Done {
                    ok: true,
                    customer_id: None,
                    store_id: None,
                })
            })
        })
        .await,
    )
}

async fn key(hub: &Hub, mut body: WireKey) -> Response<Body> {
    if body.algorithm != "ed25519" {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("algorithm: {:?} is not known; only ed25519", body.algorithm),
        );
    }
    if body.key_id.is_empty() || body.key_id.len() > 64 || body.public_key.len() != 44 {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "key_id: 1 to 64 characters; public_key: standard base64 of the 32-byte key (44 characters)".into(),
        );
    }
    body.issuer.get_or_insert_with(|| "head-office".to_string());
    let key = std::sync::Arc::new(body);
    answer(
        write(hub, move |tx, effects| {
            let key = key.clone();
            Box::pin(async move {
                db::exec(
                    tx,
                    "INSERT INTO voucher_keys (key_id, algorithm, public_key, issuer, revoked)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (key_id) DO UPDATE
                     SET revoked = voucher_keys.revoked OR excluded.revoked,
                         public_key = CASE WHEN voucher_keys.revoked THEN voucher_keys.public_key
                                           ELSE excluded.public_key END",
                    &[
                        &key.key_id,
                        &key.algorithm,
                        &key.public_key,
                        &key.issuer,
                        &key.revoked,
                    ],
                )
                .await?;
                effects.changes.push(Change {
                    store: None,
                    kind: "key",
                    customer_id: None,
                    voucher_id: None,
                    payload: serde_json::to_string(&*key).ok(),
                });
                Ok(Done {
                    ok: true,
                    customer_id: None,
                    store_id: None,
                })
            })
        })
        .await,
    )
}

/// `POST /v1/admin/offers`: stored verbatim with its validity and target (a customer or a
/// segment), and sent to every store in the feed (`feed::wire_offer`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferBody {
    offer_id: String,
    #[serde(default)]
    customer_id: Option<String>,
    #[serde(default)]
    segment: Option<String>,
    valid_from: String,
    valid_until: String,
    offer: serde_json::Value,
}

async fn offer(hub: &Hub, body: OfferBody) -> Response<Body> {
    if body.customer_id.is_some() == body.segment.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "target: give exactly one of customer_id and segment".into(),
        );
    }
    let times = (
        body.valid_from.parse::<jiff::Timestamp>(),
        body.valid_until.parse::<jiff::Timestamp>(),
    );
    let ordered = matches!(times, (Ok(from), Ok(until)) if from < until);
    if !ordered || !body.offer.is_object() || body.offer_id.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "offer_id must not be empty, valid_from and valid_until must be RFC 3339 times, valid_until after valid_from, and offer a JSON object".into(),
        );
    }
    let wire = match crate::feed::wire_offer(
        &body.offer_id,
        body.customer_id.as_deref(),
        body.segment.as_deref(),
        &body.valid_from,
        &body.valid_until,
        &body.offer,
    ) {
        Ok(wire) => serde_json::to_string(&wire).ok(),
        Err(why) => return error(StatusCode::BAD_REQUEST, "malformed", why),
    };
    let body = std::sync::Arc::new(body);
    answer(
        write(hub, move |tx, effects| {
            let (body, wire) = (body.clone(), wire.clone());
            Box::pin(async move {
                effects.changes.push(Change {
                    store: None,
                    kind: "offer",
                    customer_id: body.customer_id.clone(),
                    voucher_id: None,
                    payload: wire,
                });
                db::exec(
                    tx,
                    "INSERT INTO offers (offer_id, customer_id, segment, valid_from, valid_until, offer)
                     VALUES ($1, $2, $3, $4::text::timestamptz, $5::text::timestamptz, $6)
                     ON CONFLICT (offer_id) DO UPDATE
                     SET customer_id = excluded.customer_id, segment = excluded.segment,
                         valid_from = excluded.valid_from, valid_until = excluded.valid_until,
                         offer = excluded.offer, updated_at = now()",
                    &[
                        &body.offer_id,
                        &body.customer_id,
                        &body.segment,
                        &body.valid_from,
                        &body.valid_until,
                        &body.offer.to_string(),
                    ],
                )
                .await?;
                Ok(Done {
                    ok: true,
                    customer_id: None,
                    store_id: None,
                })
            })
        })
        .await,
    )
}

async fn adjustment(hub: &Hub, body: WireAdjustment) -> Response<Body> {
    if body.points == 0 || body.reference.is_empty() || body.reference.len() > 128 {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "points must not be 0; reference: 1 to 128 characters".into(),
        );
    }
    let body = std::sync::Arc::new(body);
    answer(
        write(hub, move |tx, effects| {
            let body = body.clone();
            Box::pin(async move {
                let id = match db::query_opt(
                    tx,
                    "SELECT coalesce(merged_into, customer_id) FROM customers WHERE customer_id = $1",
                    &[&body.customer_id],
                )
                .await?
                {
                    Some(row) => row.get::<_, String>(0),
                    None => {
                        return Err(AdminError::Refused(
                            StatusCode::NOT_FOUND,
                            "unknown_customer",
                            format!("no customer {} at head office", body.customer_id),
                        ))
                    }
                };
                live(tx, &id).await?;
                if let Some(row) = db::query_opt(
                    tx,
                    "SELECT store_id FROM adjustments WHERE reference = $1",
                    &[&body.reference],
                )
                .await?
                {
                    // Sent already: the same reference is one adjustment.
                    return Ok(Done {
                        ok: true,
                        customer_id: Some(id),
                        store_id: Some(row.get(0)),
                    });
                }
                let Some(row) = db::query_opt(
                    tx,
                    "SELECT store_id FROM customer_stores WHERE customer_id = $1
                     ORDER BY enrolled DESC, last_activity_at DESC, store_id LIMIT 1",
                    &[&id],
                )
                .await?
                else {
                    return Err(AdminError::Refused(
                        StatusCode::CONFLICT,
                        "no_store",
                        format!("no store knows customer {id} yet: an adjustment is applied by a store of the customer; retry after her first visit"),
                    ));
                };
                let store: String = row.get(0);
                db::exec(
                    tx,
                    "INSERT INTO adjustments (reference, customer_id, points, reason, store_id)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&body.reference, &id, &body.points, &body.reason, &store],
                )
                .await?;
                let wire = WireAdjustment {
                    reference: body.reference.clone(),
                    customer_id: id.clone(),
                    points: body.points,
                    reason: body.reason.clone(),
                };
                effects.changes.push(Change {
                    store: Some(store.clone()),
                    kind: "adjustment",
                    customer_id: Some(id.clone()),
                    voucher_id: None,
                    payload: serde_json::to_string(&wire).ok(),
                });
                Ok(Done {
                    ok: true,
                    customer_id: Some(id),
                    store_id: Some(store),
                })
            })
        })
        .await,
    )
}

/// `POST /v1/admin/erasures`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasureBody {
    customer_id: String,
}
