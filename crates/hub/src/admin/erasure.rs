//! Erasure everywhere. `POST /v1/admin/erasures {customer_id}` removes, in one transaction, the
//! customer's personal data from every PostgreSQL row (name, consent, cards, the card numbers of
//! her receipts and merges, `card`/`name` in the stored event payloads) and keeps the anonymous
//! figures under the id (ledger entries, receipt totals and lines); the ids merged into her are
//! erased with her. Every store that ever knew her (`customer_stores`: enrolled there or any
//! activity there, whatever the feed window) gets an `erased` change and is recorded pending;
//! its `customer_erased` event at ingest ([`confirm`]) makes it confirmed. `GET
//! /v1/admin/erasures/{customer_id}` reports per store. An erasure asked again is the same one.
//! Personal data an offline store uploads after the erasure is removed at ingest
//! ([`scrub_if_erased`]).

use super::{answer, unavailable, write, AdminError};
use crate::api::{error, json, Body};
use crate::db;
use crate::ingest::apply::Change;
use crate::Hub;
use deadpool_postgres::Transaction;
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio_postgres::Error;

/// Per-store state of one erasure.
#[derive(Debug, Serialize)]
pub struct StoreState {
    /// Store id.
    pub store_id: String,
    /// `pending` or `confirmed`.
    pub state: &'static str,
    /// When the store's confirmation arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
}

/// The answer of `POST` and `GET`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The customer (the erasure's id).
    pub customer_id: String,
    /// When it was asked.
    pub requested_at: String,
    /// True when every store confirmed.
    pub complete: bool,
    /// Per store.
    pub stores: Vec<StoreState>,
}

/// Top-level JSON fields of stored payloads that carry personal data.
const PERSONAL_FIELDS: [&str; 5] = ["card", "name", "display_name", "email", "phone"];

/// Which stored events [`scrub`] rewrites.
#[derive(Debug, Clone, Copy)]
pub enum EventScope<'a> {
    /// Those of every store that knows the customers (the erasure itself).
    StoresKnowing,
    /// One batch ingest is writing: a store's instance, sequence numbers `first..=last`.
    Batch {
        /// The store.
        store: &'a str,
        /// Its database instance.
        instance: &'a str,
        /// The batch's first new sequence number.
        first: i64,
        /// Its last.
        last: i64,
    },
}

/// Removes the personal data of `ids` (and of receipts carrying their cards) from the rows, and
/// `card`/`name` from the stored events in `scope`.
async fn scrub(tx: &Transaction<'_>, ids: &[String], scope: EventScope<'_>) -> Result<(), Error> {
    let cards: Vec<String> = db::query(
        tx,
        "SELECT card FROM cards WHERE customer_id = ANY($1)
         UNION SELECT card FROM receipts WHERE customer_key = ANY($1) AND card IS NOT NULL
         UNION SELECT card FROM customer_merges
               WHERE (from_id = ANY($1) OR into_id = ANY($1)) AND card IS NOT NULL",
        &[&ids],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    db::exec(
        tx,
        "UPDATE customers SET display_name = NULL, consent_marketing = NULL,
             consent_profiling = NULL, phone_hash = NULL, email_hash = NULL, updated_at = now()
         WHERE customer_id = ANY($1)",
        &[&ids],
    )
    .await?;
    db::exec(
        tx,
        "DELETE FROM cards WHERE customer_id = ANY($1) OR card = ANY($2)",
        &[&ids, &cards],
    )
    .await?;
    db::exec(
        tx,
        "UPDATE receipts SET card = NULL
         WHERE card IS NOT NULL AND (customer_key = ANY($1) OR card = ANY($2))",
        &[&ids, &cards],
    )
    .await?;
    db::exec(
        tx,
        "UPDATE customer_merges SET card = NULL WHERE card = ANY($1)",
        &[&cards],
    )
    .await?;
    let fields: Vec<&str> = PERSONAL_FIELDS.to_vec();
    let rewrite = |scope: &str| {
        format!(
            "UPDATE store_events e SET payload = (e.payload::jsonb - $3::text[])::text
             WHERE {scope}
               AND e.kind IN ('customer_enrolled', 'customer_updated', 'receipt')
               AND (e.payload::jsonb ->> 'customer_id' = ANY($1)
                    OR e.payload::jsonb ->> 'card' = ANY($2))
               AND e.payload::jsonb ?| $3::text[]"
        )
    };
    match scope {
        EventScope::StoresKnowing => {
            let sql = rewrite(
                "e.store_id IN (SELECT store_id FROM customer_stores WHERE customer_id = ANY($1))",
            );
            db::exec(tx, &sql, &[&ids, &cards, &fields]).await?;
        }
        EventScope::Batch {
            store,
            instance,
            first,
            last,
        } => {
            let sql = rewrite("e.store_id = $4 AND e.instance = $5 AND e.seq BETWEEN $6 AND $7");
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                [&ids, &cards, &fields, &store, &instance, &first, &last];
            db::exec(tx, &sql, &params).await?;
        }
    }
    Ok(())
}

/// After an ingest: removes again the personal data of those of `customers` that are erased
/// (from the rows, and from the batch's events: `scope`).
pub async fn scrub_if_erased(
    tx: &Transaction<'_>,
    customers: &[String],
    scope: EventScope<'_>,
) -> Result<(), Error> {
    if customers.is_empty() {
        return Ok(());
    }
    let erased: Vec<String> = db::query(
        tx,
        "SELECT customer_id FROM customers WHERE customer_id = ANY($1) AND erased_at IS NOT NULL",
        &[&customers],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    if erased.is_empty() {
        return Ok(());
    }
    scrub(tx, &erased, scope).await
}

/// A store's `customer_erased` event: its erasure of `customer_id` (or of the id it was merged
/// into) is confirmed. Returns how many were.
pub async fn confirm(
    tx: &Transaction<'_>,
    store: &str,
    customer_id: &str,
    event_id: &str,
) -> Result<u64, Error> {
    db::exec(
        tx,
        "UPDATE erasure_stores SET confirmed_at = now(), event_id = $3
         WHERE store_id = $2 AND confirmed_at IS NULL
           AND customer_id IN (SELECT $1::text
                               UNION SELECT merged_into FROM customers
                                     WHERE customer_id = $1 AND merged_into IS NOT NULL)",
        &[&customer_id, &store, &event_id],
    )
    .await
}

/// `POST /v1/admin/erasures`.
pub async fn erase(hub: &Hub, customer_id: &str) -> Response<Body> {
    let requested = customer_id.to_string();
    let result = write(hub, move |tx, effects| {
        let requested = requested.clone();
        Box::pin(async move {
            let Some(row) = db::query_opt(
                tx,
                "SELECT coalesce(merged_into, customer_id) FROM customers
                 WHERE customer_id = $1 FOR UPDATE",
                &[&requested],
            )
            .await?
            else {
                return Err(AdminError::Refused(
                    StatusCode::NOT_FOUND,
                    "unknown_customer",
                    format!("no customer {requested} at head office: nothing to erase"),
                ));
            };
            let id: String = row.get(0);
            let inserted = db::exec(
                tx,
                "INSERT INTO erasures (customer_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&id],
            )
            .await?;
            if inserted == 0 {
                return Ok(id);
            }
            let mut ids: Vec<String> = db::query(
                tx,
                "SELECT customer_id FROM customers WHERE merged_into = $1",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
            ids.push(id.clone());
            let stores: Vec<String> = db::query(
                tx,
                "SELECT DISTINCT store_id FROM customer_stores WHERE customer_id = ANY($1)
                 ORDER BY store_id",
                &[&ids],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
            db::exec(
                tx,
                "INSERT INTO erasure_stores (customer_id, store_id)
                 SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                &[&id, &stores],
            )
            .await?;
            scrub(tx, &ids, EventScope::StoresKnowing).await?;
            db::exec(
                tx,
                "UPDATE customers SET erased_at = now() WHERE customer_id = ANY($1)",
                &[&ids],
            )
            .await?;
            for store in stores {
                effects.changes.push(Change {
                    store: Some(store),
                    kind: "erased",
                    customer_id: Some(id.clone()),
                    voucher_id: None,
                    payload: None,
                });
            }
            Ok(id)
        })
    })
    .await;
    match result {
        Ok(id) => status(hub, &id).await,
        Err(e) => answer::<()>(Err(e)),
    }
}

/// `GET /v1/admin/erasures/{customer_id}`.
pub async fn status(hub: &Hub, customer_id: &str) -> Response<Body> {
    let result = async {
        let client = db::client(&hub.pool).await?;
        let requested = client
            .query_opt(
                "SELECT requested_at::text FROM erasures WHERE customer_id = $1",
                &[&customer_id],
            )
            .await?;
        let Some(requested) = requested else {
            return Ok(None);
        };
        let stores = client
            .query(
                "SELECT store_id, confirmed_at::text FROM erasure_stores
                 WHERE customer_id = $1 ORDER BY store_id",
                &[&customer_id],
            )
            .await?;
        let stores: Vec<StoreState> = stores
            .iter()
            .map(|r| {
                let confirmed_at: Option<String> = r.get(1);
                StoreState {
                    store_id: r.get(0),
                    state: if confirmed_at.is_some() {
                        "confirmed"
                    } else {
                        "pending"
                    },
                    confirmed_at,
                }
            })
            .collect();
        Ok::<_, crate::db::DbError>(Some(Status {
            customer_id: customer_id.to_string(),
            requested_at: requested.get(0),
            complete: stores.iter().all(|s| s.state == "confirmed"),
            stores,
        }))
    }
    .await;
    match result {
        Ok(Some(status)) => json(StatusCode::OK, &status),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "unknown_erasure",
            format!("no erasure of customer {customer_id} was asked"),
        ),
        Err(e) => unavailable(&e),
    }
}
