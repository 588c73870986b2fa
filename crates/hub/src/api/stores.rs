//! The store-facing API (SPEC 2.5): `POST events` (ingest, exactly once), `GET changes`
//! (the feed, long-polled with `wait=`), `GET customers/by-card/{card}`.

use super::{error, json, query_param, read_body, Body};
use crate::feed;
use crate::ingest::{self, IngestError, Refusal};
use crate::Hub;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use loyalty_protocol::crm::AckResponse;
use std::time::Duration;

/// Routes `/v1/stores/{store}/{rest...}` (the store already checked against the certificate).
pub async fn route(
    request: Request<Incoming>,
    hub: &Hub,
    store: &str,
    rest: &[String],
) -> Response<Body> {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match (request.method().clone(), rest.as_slice()) {
        (Method::POST, ["events"]) => events(request, hub, store).await,
        (Method::GET, ["changes"]) => {
            let query = request.uri().query().unwrap_or("").to_string();
            changes(hub, store, &query).await
        }
        (Method::GET, ["customers", "by-card", card]) => by_card(hub, store, card).await,
        (method, _) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "{method} {} is not an endpoint of this hub",
                request.uri().path()
            ),
        ),
    }
}

fn unavailable(hub: &Hub, e: &crate::db::DbError) -> Response<Body> {
    hub.metrics.refuse("database");
    tracing::warn!(error = %e, "request failed on the database");
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

async fn events(request: Request<Incoming>, hub: &Hub, store: &str) -> Response<Body> {
    let body = match read_body(request, hub.config.limits.max_body_bytes).await {
        Ok(body) => body,
        Err(response) => {
            hub.metrics
                .refuse(if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "too_large"
                } else {
                    "malformed"
                });
            return response;
        }
    };
    let batch = match ingest::parse::parse(&body, store) {
        Ok(batch) => batch,
        Err(message) => {
            hub.metrics.refuse("malformed");
            return error(StatusCode::BAD_REQUEST, "malformed_batch", message);
        }
    };
    match ingest::ingest(hub, &batch).await {
        Ok(done) => {
            hub.metrics.batches.inc();
            hub.metrics.events_ingested.inc_by(done.new_events);
            for kind in &done.double_redemptions {
                hub.metrics.double_redemption(kind);
            }
            hub.metrics.merges.inc_by(done.merges);
            hub.metrics
                .erasures_confirmed
                .inc_by(done.erasures_confirmed);
            json(
                StatusCode::OK,
                &AckResponse {
                    acked_through: done.acked_through,
                },
            )
        }
        Err(IngestError::Refused(Refusal::Gap { expected, got })) => {
            hub.metrics.refuse("sequence_gap");
            error(
                StatusCode::CONFLICT,
                "sequence_gap",
                format!(
                    "expected seq {expected} next for instance {:?}, got {got}: send the events from seq {expected}",
                    batch.instance
                ),
            )
        }
        Err(IngestError::Refused(Refusal::Conflict {
            seq,
            stored,
            offered,
            reason,
        })) => {
            hub.metrics.refuse("sequence_conflict");
            error(
                StatusCode::CONFLICT,
                "sequence_conflict",
                format!(
                    "{reason}: seq {seq} offered as {offered:?}, stored as {}; the batch was refused and the conflict recorded (sequence_conflicts): this store's outbox disagrees with what it sent before",
                    stored.as_deref().unwrap_or("nothing")
                ),
            )
        }
        Err(IngestError::Db(e)) => unavailable(hub, &e),
    }
}

async fn changes(hub: &Hub, store: &str, query: &str) -> Response<Body> {
    let cursor = match feed::parse_cursor(query_param(query, "cursor").as_deref()) {
        Ok(cursor) => cursor,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_cursor", message),
    };
    let wait = match query_param(query, "wait") {
        None => 0,
        Some(text) => match text.parse::<u64>() {
            Ok(secs) => secs.min(hub.config.feed.long_poll_max_secs),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_wait",
                    format!("wait={text:?} is not a number of seconds"),
                )
            }
        },
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let notify = hub.notifier.handle(store);
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let page = match feed::page(hub, store, cursor).await {
            Ok(page) => page,
            Err(e) => return unavailable(hub, &e),
        };
        if !page.is_empty() || page.cursor != cursor.to_string() || wait == 0 {
            return json(StatusCode::OK, &page);
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => return json(StatusCode::OK, &page),
        }
    }
}

async fn by_card(hub: &Hub, store: &str, card: &str) -> Response<Body> {
    match feed::by_card(hub, store, card).await {
        Ok(Some(customer)) => json(StatusCode::OK, &customer),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "unknown_card",
            "no customer holds this card at head office".to_string(),
        ),
        Err(e) => unavailable(hub, &e),
    }
}
