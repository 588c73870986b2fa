//! The change-log rows a batch writes ([`emit`]): a `customer` change for every store that
//! knows a changed customer, merges to every store knowing the survivor, and the batch's other
//! changes, with a NOTIFY naming the stores for the long-polls. Also the positions every change
//! id and export position comes from ([`positions`], [`horizon`]): `nextval` of `change_seq`
//! taken while the writer holds its own advisory lock until COMMIT, and a reader's upper bound
//! that waits for the writers holding positions at or below it, so a reader never skips a
//! position that commits later (docs/hub.md, "The feed and its cursor").

use super::apply::{Change, Effects};
use crate::config::FeedConfig;
use crate::db;
use deadpool_postgres::Transaction;
use std::collections::BTreeSet;
use tokio_postgres::Error;

/// Writes the change-log rows of `effects` and notifies every hub's listener (delivered at
/// COMMIT). Best as the last work of the transaction: readers wait for it from here to COMMIT.
pub async fn emit(tx: &Transaction<'_>, feed: &FeedConfig, effects: &Effects) -> Result<(), Error> {
    if let Some(notice) = emit_numbering(tx, feed, effects, 0).await?.notice {
        db::exec(
            tx,
            "SELECT pg_notify($1, $2)",
            &[&crate::feed::CHANNEL, &notice],
        )
        .await?;
    }
    Ok(())
}

/// What [`emit_numbering`] wrote.
#[derive(Debug, Default)]
pub struct Emitted {
    /// The extra positions asked for (a batch's export positions), ascending.
    pub numbers: Vec<i64>,
    /// The NOTIFY payload for the changes written (`None`: none), for [`notify`] after COMMIT.
    pub notice: Option<String>,
}

/// The change-log rows of `effects` and `events` more positions (a batch's export positions),
/// without the NOTIFY: ingest sends it after COMMIT ([`notify`]), because a transaction that
/// notifies holds PostgreSQL's global notify lock from its COMMIT until its WAL flush has
/// ended, which serialises every such commit (one flush per batch, no group commit).
pub async fn emit_numbering(
    tx: &Transaction<'_>,
    feed: &FeedConfig,
    effects: &Effects,
    events: usize,
) -> Result<Emitted, Error> {
    let mut rows: Vec<Change> = Vec::new();
    let window = format!("{} days", feed.customer_window_days);
    if !effects.customers.is_empty() || !effects.merged.is_empty() {
        let mut ids: Vec<&str> = effects.customers.iter().map(String::as_str).collect();
        ids.extend(effects.merged.iter().map(|m| m.into.as_str()));
        let targets = db::query(
            tx,
            "SELECT customer_id, store_id FROM customer_stores
                 WHERE customer_id = ANY($1)
                   AND (enrolled OR last_activity_at > now() - $2::text::interval)",
            &[&ids, &window],
        )
        .await?;
        for row in &targets {
            let customer: String = row.get(0);
            let store: String = row.get(1);
            for merge in effects.merged.iter().filter(|m| m.into == customer) {
                rows.push(Change {
                    store: Some(store.clone()),
                    kind: "merged",
                    customer_id: Some(merge.from.clone()),
                    voucher_id: None,
                    payload: serde_json::to_string(merge).ok(),
                });
            }
            if effects.customers.contains(&customer) {
                rows.push(Change {
                    store: Some(store),
                    kind: "customer",
                    customer_id: Some(customer),
                    voucher_id: None,
                    payload: None,
                });
            }
        }
    }
    rows.extend(effects.changes.iter().cloned());
    let mut ids = positions(tx, rows.len() + events).await?;
    let numbers = ids.split_off(rows.len());
    if rows.is_empty() {
        return Ok(Emitted {
            numbers,
            notice: None,
        });
    }
    let stores: Vec<Option<&str>> = rows.iter().map(|c| c.store.as_deref()).collect();
    let kinds: Vec<&str> = rows.iter().map(|c| c.kind).collect();
    let customers: Vec<Option<&str>> = rows.iter().map(|c| c.customer_id.as_deref()).collect();
    let vouchers: Vec<Option<&str>> = rows.iter().map(|c| c.voucher_id.as_deref()).collect();
    let payloads: Vec<Option<&str>> = rows.iter().map(|c| c.payload.as_deref()).collect();
    db::exec(
        tx,
        "INSERT INTO changes (id, store_id, kind, customer_id, voucher_id, payload)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::text[])",
        &[&ids, &stores, &kinds, &customers, &vouchers, &payloads],
    )
    .await?;
    Ok(Emitted {
        numbers,
        notice: Some(notice(&rows)),
    })
}

/// Wakes the long-polls of the stores in `notice` (every hub's listener), on a connection
/// outside any transaction, after the changes committed. Should it fail (or the hub die first),
/// the changes are still in the feed: the waiting long-polls get them at their next read, at
/// the latest when their `wait` ends.
pub async fn notify(client: &deadpool_postgres::Object, notice: &str) {
    let result = async {
        let statement = client.prepare_cached("SELECT pg_notify($1, $2)").await?;
        client
            .execute(&statement, &[&crate::feed::CHANNEL, &notice])
            .await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not notify the long-polls; they read at their timeout");
    }
}

/// The class of the advisory locks (two-key form: this class, the backend's pid) a writer holds
/// **exclusively** from taking positions until COMMIT; [`horizon`] waits for them. ("lhwp")
pub const WRITER_LOCK_CLASS: i32 = 0x6c68_7770;

/// `n` new positions (change ids, export positions), ascending, from `change_seq`, taken while
/// holding this backend's writer lock ([`WRITER_LOCK_CLASS`]) until COMMIT. Positions are unique
/// but not gapless (an aborted transaction leaves a gap); taking them makes no writer wait for
/// another, so concurrent batches commit together and share one WAL flush.
pub async fn positions(tx: &Transaction<'_>, n: usize) -> Result<Vec<i64>, Error> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut taken: Vec<i64> = db::query(
        tx,
        "WITH held AS MATERIALIZED (SELECT pg_advisory_xact_lock($1, pg_backend_pid()))
         SELECT nextval('change_seq') FROM held, generate_series(1, $2::bigint)",
        &[&WRITER_LOCK_CLASS, &(n as i64)],
    )
    .await?
    .iter()
    .map(|row| row.get(0))
    .collect();
    taken.sort_unstable();
    Ok(taken)
}

/// The highest position a reader may page up to: every position at or below it is committed
/// (visible to a snapshot taken after this returns) or will never be. Reads the sequence's last
/// value, then waits for each writer holding its writer lock at that moment (a writer that took
/// a position at or below that value holds it until its COMMIT) by taking their locks shared
/// for a moment: only those writers' next transactions wait, for as long as this statement
/// runs. Call it outside a transaction, before starting the reader's snapshot.
pub async fn horizon(client: &deadpool_postgres::Object) -> Result<i64, Error> {
    let read = client
        .prepare_cached("SELECT last_value FROM change_seq")
        .await?;
    let last: i64 = client.query_one(&read, &[]).await?.get(0);
    let wait = client
        .prepare_cached(
            "SELECT count(pg_advisory_xact_lock_shared($1, objid::int4)) FROM pg_locks
             WHERE locktype = 'advisory' AND classid = $1::oid AND objsubid = 2 AND granted
               AND pid <> pg_backend_pid()",
        )
        .await?;
    client.execute(&wait, &[&WRITER_LOCK_CLASS]).await?;
    Ok(last)
}

/// The NOTIFY payload: the stores concerned, comma-separated, or `*` for every store (also
/// when the list would not fit PostgreSQL's 8000-byte payload).
fn notice(rows: &[Change]) -> String {
    if rows.iter().any(|c| c.store.is_none()) {
        return "*".into();
    }
    let stores: BTreeSet<&str> = rows.iter().filter_map(|c| c.store.as_deref()).collect();
    let text = stores.into_iter().collect::<Vec<_>>().join(",");
    if text.len() > 7000 {
        "*".into()
    } else {
        text
    }
}
