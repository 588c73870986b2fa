//! Ingest, exactly once: one batch of a store's events in one PostgreSQL transaction. The
//! (store, instance) row of `ingest_positions` is locked first (an upsert), so batches of the
//! same store serialise across every hub process; events at or below the stored position must
//! be the same ids as stored (duplicates are skipped), new ones must continue the sequence
//! without a gap, and `acked_through` is answered only after COMMIT. A refused batch changes
//! nothing; a reused sequence number is then recorded in `sequence_conflicts` in a separate
//! transaction. Serialization failures and deadlocks run the transaction again.

pub mod apply;
pub mod changes;
pub mod merge;
pub mod parse;

use crate::db::{self, DbError};
use crate::Hub;
use apply::Effects;
use parse::Batch;
use std::collections::HashMap;

/// Why a batch was refused (nothing was written, except a conflict record).
#[derive(Debug)]
pub enum Refusal {
    /// The first new event does not follow the stored position.
    Gap {
        /// The seq the hub expects next.
        expected: u64,
        /// The first new seq offered.
        got: u64,
    },
    /// A sequence number (or event id) already stored for another event.
    Conflict {
        /// The seq offered.
        seq: u64,
        /// What is stored there.
        stored: Option<String>,
        /// The id offered.
        offered: String,
        /// Which rule was broken.
        reason: &'static str,
    },
}

/// What an ingest ended with.
#[derive(Debug)]
pub enum IngestError {
    /// The batch was refused.
    Refused(Refusal),
    /// The database failed (the store retries).
    Db(DbError),
}

impl From<DbError> for IngestError {
    fn from(e: DbError) -> Self {
        IngestError::Db(e)
    }
}

impl From<tokio_postgres::Error> for IngestError {
    fn from(e: tokio_postgres::Error) -> Self {
        IngestError::Db(DbError::Query(e))
    }
}

/// A committed batch.
#[derive(Debug, Default)]
pub struct Ingested {
    /// The position after the batch.
    pub acked_through: u64,
    /// Events stored for the first time.
    pub new_events: u64,
    /// Double redemptions detected (`voucher` / `points`).
    pub double_redemptions: Vec<&'static str>,
    /// Customers merged.
    pub merges: u64,
    /// Erasures a store confirmed (`customer_erased`).
    pub erasures_confirmed: u64,
}

/// How long an admitted batch waits for a database connection before it is answered 503.
const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Stores `batch` exactly once. Batches queue fairly (FIFO) for one of ingest's connections
/// (`Hub::ingest_pool`): up to `server.max_connections` admitted at once, each waiting up to
/// [`QUEUE_WAIT`]; only past that is one answered 503, so a busy pool costs waiting, not
/// retries, and the read pool serves the feed meanwhile.
pub async fn ingest(hub: &Hub, batch: &Batch<'_>) -> Result<Ingested, IngestError> {
    let Ok(_admitted) = hub.ingest_queue.try_acquire() else {
        return Err(IngestError::Db(DbError::Unavailable(
            "the ingest queue is full (server.max_connections batches waiting); \
             raise database.pool_size or add hub processes"
                .into(),
        )));
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ingest_once(hub, batch).await {
            Err(IngestError::Db(e)) if e.is_retryable() && attempt < 8 => {
                tracing::debug!(error = %e, attempt, "ingest transaction retried");
                continue;
            }
            Err(IngestError::Refused(Refusal::Conflict {
                seq,
                stored,
                offered,
                reason,
            })) => {
                record_conflict(hub, batch, seq, stored.as_deref(), &offered, reason).await;
                return Err(IngestError::Refused(Refusal::Conflict {
                    seq,
                    stored,
                    offered,
                    reason,
                }));
            }
            other => return other,
        }
    }
}

async fn record_conflict(
    hub: &Hub,
    batch: &Batch<'_>,
    seq: u64,
    stored: Option<&str>,
    offered: &str,
    reason: &str,
) {
    let result = async {
        let client = db::client(&hub.pool).await?;
        client
            .execute(
                "INSERT INTO sequence_conflicts
                     (store_id, instance, seq, stored_event_id, offered_event_id, reason)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &batch.store,
                    &batch.instance,
                    &(seq as i64),
                    &stored,
                    &offered,
                    &reason,
                ],
            )
            .await?;
        Ok::<_, DbError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, store = batch.store, "could not record a sequence conflict");
    }
}

/// After the unique index refused an event id of `new`: which one, stored under which seq (read
/// after the rollback; `None` if the clash was within the batch itself).
async fn reused_id(
    client: &deadpool_postgres::Object,
    store: &str,
    new: &[&parse::Event<'_>],
) -> Result<Option<IngestError>, IngestError> {
    let ids: Vec<&str> = new.iter().map(|e| e.id).collect();
    let statement = client
        .prepare_cached(
            "SELECT event_id, seq FROM store_events WHERE store_id = $1 AND event_id = ANY($2)
                 LIMIT 1",
        )
        .await?;
    let Some(row) = client.query_opt(&statement, &[&store, &ids]).await? else {
        return Ok(None);
    };
    let id: String = row.get(0);
    let seq: i64 = row.get(1);
    let offered = new.iter().find(|e| e.id == id).map(|e| e.seq).unwrap_or(0);
    Ok(Some(IngestError::Refused(Refusal::Conflict {
        seq: offered,
        stored: Some(format!("{id} at seq {seq}")),
        offered: id,
        reason: "event id already stored under another sequence number",
    })))
}

async fn ingest_once(hub: &Hub, batch: &Batch<'_>) -> Result<Ingested, IngestError> {
    // A fair (FIFO) wait for one of ingest's connections.
    let mut client = db::client_waiting(&hub.ingest_pool, QUEUE_WAIT)
        .await
        .map_err(|e| match e {
            DbError::Unavailable(why) => DbError::Unavailable(format!(
                "no connection for ingest within {} s ({why}); if PostgreSQL is up, raise \
                 database.pool_size or add hub processes",
                QUEUE_WAIT.as_secs()
            )),
            other => other,
        })?;
    let tx = client.transaction().await?;
    let store = batch.store;
    let instance = batch.instance;
    // The store's position, its row locked until COMMIT (inserted, or updated on conflict).
    let last: i64 = db::query_one(
        &tx,
        "INSERT INTO ingest_positions (store_id, instance) VALUES ($1, $2)
         ON CONFLICT (store_id, instance) DO UPDATE SET last_seen_at = now()
         RETURNING last_seq",
        &[&store, &instance],
    )
    .await?
    .get(0);
    let last = last as u64;
    let mut notice = None;
    let (old, new): (Vec<_>, Vec<_>) = batch.events.iter().partition(|e| e.seq <= last);
    if !old.is_empty() {
        let seqs: Vec<i64> = old.iter().map(|e| e.seq as i64).collect();
        let stored: HashMap<i64, String> = db::query(
            &tx,
            "SELECT seq, event_id FROM store_events
                 WHERE store_id = $1 AND instance = $2 AND seq = ANY($3)",
            &[&store, &instance, &seqs],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
        for event in &old {
            let known = stored.get(&(event.seq as i64));
            if known.map(String::as_str) != Some(event.id) {
                return Err(IngestError::Refused(Refusal::Conflict {
                    seq: event.seq,
                    stored: known.cloned(),
                    offered: event.id.to_string(),
                    reason: "sequence number reused with another event id",
                }));
            }
        }
    }
    let mut ingested = Ingested {
        acked_through: last,
        ..Ingested::default()
    };
    if let Some(first) = new.first() {
        if first.seq != last + 1 {
            return Err(IngestError::Refused(Refusal::Gap {
                expected: last + 1,
                got: first.seq,
            }));
        }
        let ids: Vec<&str> = new.iter().map(|e| e.id).collect();
        let mut effects = Effects::default();
        apply::apply(&tx, &hub.config.feed, store, instance, &new, &mut effects).await?;
        if !hub.config.tiers.is_empty() && !effects.customers.is_empty() {
            let ids: Vec<String> = effects.customers.iter().cloned().collect();
            let now = jiff::Timestamp::now().to_string();
            crate::tiers::requalify(&tx, &hub.config.tiers, Some(&ids), &now).await?;
        }
        let through = last + new.len() as u64;
        db::exec(
            &tx,
            // (`last_seen_at` was set by the position's upsert in this transaction.)
            "UPDATE ingest_positions SET last_seq = $3
             WHERE store_id = $1 AND instance = $2",
            &[&store, &instance, &(through as i64)],
        )
        .await?;
        apply::flush_links(&tx, store, &mut effects).await?;
        // Change ids and the events' export positions in one statement, late: feed and export
        // readers wait for a transaction holding positions until its COMMIT (docs/hub.md).
        let emitted = changes::emit_numbering(&tx, &hub.config.feed, &effects, new.len()).await?;
        let positions = emitted.numbers;
        notice = emitted.notice;
        let seqs: Vec<i64> = new.iter().map(|e| e.seq as i64).collect();
        let kinds: Vec<&str> = new.iter().map(|e| e.kind).collect();
        let ats: Vec<&str> = new.iter().map(|e| e.at_text).collect();
        let payloads: Vec<&str> = new.iter().map(|e| e.raw).collect();
        // An id stored before under another seq is found by the unique index here (no lookup
        // of every id beforehand): the transaction is then rolled back and the batch refused.
        if let Err(e) = db::exec(&tx,
            "INSERT INTO store_events (store_id, instance, seq, event_id, kind, at, payload, export_pos)
             SELECT $1, $2, * FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[])",
            &[&store, &instance, &seqs, &ids, &kinds, &ats, &payloads, &positions],
        )
        .await
        {
            let reused = e
                .as_db_error()
                .is_some_and(|d| d.constraint() == Some("store_events_event_id"));
            if !reused {
                return Err(e.into());
            }
            drop(tx);
            return Err(reused_id(&client, store, &new).await?.unwrap_or(IngestError::from(e)));
        }
        // An offline store may upload an erased customer's card or name after the erasure, or
        // an erasure may commit while this batch is applied: removed again before COMMIT.
        let check = effects.erasure_candidates();
        let scope = crate::admin::erasure::EventScope::Batch {
            store,
            instance,
            first: (last + 1) as i64,
            last: through as i64,
        };
        crate::admin::erasure::scrub_if_erased(&tx, &check, scope).await?;
        ingested.acked_through = through;
        ingested.new_events = new.len() as u64;
        ingested.double_redemptions = effects.double_redemptions.clone();
        ingested.merges = effects.merges;
        ingested.erasures_confirmed = effects.erasures_confirmed;
    }
    tx.commit().await?;
    // After COMMIT: a NOTIFY inside the transaction would serialise the commits (changes.rs).
    if let Some(notice) = notice {
        changes::notify(&client, &notice).await;
    }
    Ok(ingested)
}
