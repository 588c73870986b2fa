//! The export stream `GET /v1/export?after=<cursor>&limit=<n>` (admin token): every store's
//! events in ingest (commit) order, each exactly as ingested (store, instance, seq, id, type, at,
//! payload; personal fields removed by an erasure are absent). The cursor is an event's export
//! position, taken from the change counter like change ids: positions become visible in commit
//! order, and a page reads only up to the counter value of its own snapshot, so a reader never
//! skips an event a concurrent ingest commits later (docs/hub.md, "The cursor").

use crate::admin::{refusal, unavailable};
use crate::api::{error, json, query_param, Body};
use crate::db::{self, DbError};
use crate::Hub;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Largest `limit`.
pub const MAX_LIMIT: i64 = 10_000;

/// One exported event.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportedEvent {
    /// Store id.
    pub store_id: String,
    /// The store's database instance.
    pub instance: String,
    /// Per-store (and instance) sequence number.
    pub seq: u64,
    /// Event id.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `at` as sent.
    pub at: String,
    /// The payload as ingested.
    pub payload: Box<RawValue>,
}

/// One page.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportPage {
    /// Ask with `after=<cursor>` next.
    pub cursor: String,
    /// Events after the asked cursor, in commit order.
    pub events: Vec<ExportedEvent>,
}

/// Routes `/v1/export`.
pub async fn route(request: Request<Incoming>, hub: &Hub) -> Response<Body> {
    if let Some(refused) = refusal(&request, hub) {
        return refused;
    }
    if request.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the export stream is read with GET".into(),
        );
    }
    let query = request.uri().query().unwrap_or("");
    let after = match crate::feed::parse_cursor(query_param(query, "after").as_deref()) {
        Ok(after) => after,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_cursor", message),
    };
    let limit = match query_param(query, "limit").map(|l| l.parse::<i64>()) {
        None => 1000,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_limit",
                format!("limit must be a number from 1 to {MAX_LIMIT}"),
            )
        }
    };
    match page(hub, after, limit).await {
        Ok(page) => json(StatusCode::OK, &page),
        Err(e) => unavailable(&e),
    }
}

/// The events after `after`, at most `limit`, in one read-only snapshot.
pub async fn page(hub: &Hub, after: i64, limit: i64) -> Result<ExportPage, DbError> {
    let mut client = db::client(&hub.pool).await?;
    // Every position up to `upper` is committed before the snapshot below is taken.
    let upper = crate::ingest::changes::horizon(&client).await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let rows = db::query(
        &tx,
        "SELECT export_pos, store_id, instance, seq, event_id, kind, at, payload
         FROM store_events WHERE export_pos > $1 AND export_pos <= $2
         ORDER BY export_pos LIMIT $3",
        &[&after, &upper, &limit],
    )
    .await?;
    tx.commit().await?;
    let next = if rows.len() as i64 == limit {
        rows.last().map(|r| r.get::<_, i64>(0)).unwrap_or(upper)
    } else {
        upper.max(after)
    };
    let events = rows
        .iter()
        .filter_map(|r| {
            let payload: String = r.get(7);
            Some(ExportedEvent {
                store_id: r.get(1),
                instance: r.get(2),
                seq: r.get::<_, i64>(3) as u64,
                id: r.get(4),
                kind: r.get(5),
                at: r.get(6),
                payload: RawValue::from_string(payload).ok()?,
            })
        })
        .collect();
    Ok(ExportPage {
        cursor: next.to_string(),
        events,
    })
}
