//! The operator's endpoints: `/health` (the database answers, the schema version) and
//! `/metrics` (Prometheus text; the per-store last-seen ages are read from the database at
//! scrape time).

use super::{json, Body};
use crate::db;
use crate::metrics::Store;
use crate::Hub;
use hyper::{Response, StatusCode};
use serde::Serialize;

#[derive(Serialize)]
struct Health {
    status: &'static str,
    database: String,
    schema_version: i32,
}

/// `GET /health`: 200 when the database answers, 503 otherwise.
pub async fn health(hub: &Hub) -> Response<Body> {
    match db::schema_version(&hub.pool).await {
        Ok(version) => json(
            StatusCode::OK,
            &Health {
                status: "ok",
                database: "reachable".into(),
                schema_version: version,
            },
        ),
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Health {
                status: "degraded",
                database: e.to_string(),
                schema_version: 0,
            },
        ),
    }
}

/// `GET /metrics`.
pub async fn metrics(hub: &Hub) -> Response<Body> {
    if let Err(e) = refresh_store_ages(hub).await {
        tracing::warn!(error = %e, "metrics: store ages not refreshed");
    }
    let mut response = Response::new(Body::from(hub.metrics.encode()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

async fn refresh_store_ages(hub: &Hub) -> Result<(), db::DbError> {
    let client = db::client(&hub.pool).await?;
    let rows = client
        .query(
            "SELECT store_id, extract(epoch FROM now() - max(last_seen_at))::bigint
             FROM ingest_positions GROUP BY store_id",
            &[],
        )
        .await?;
    let stale = hub.config.monitoring.stale_store_minutes as i64 * 60;
    let mut not_seen = 0;
    for row in &rows {
        let store: String = row.get(0);
        let age: i64 = row.get(1);
        if age >= stale {
            not_seen += 1;
        }
        hub.metrics
            .store_last_seen_age
            .get_or_create(&Store { store })
            .set(age);
    }
    hub.metrics.stores_not_seen.set(not_seen);
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM erasure_stores WHERE confirmed_at IS NULL",
            &[],
        )
        .await?
        .get(0);
    hub.metrics.erasures_pending.set(pending);
    Ok(())
}
