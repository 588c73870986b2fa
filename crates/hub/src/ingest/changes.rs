//! The change-log rows a batch writes ([`emit`]): a `customer` change for every store that
//! knows a changed customer, merges to every store knowing the survivor, and the batch's other
//! changes; ids taken from the single-row counter as the last statement before COMMIT (ids
//! become visible in commit order), and a NOTIFY naming the stores for the long-polls.

use super::apply::{Change, Effects};
use crate::config::FeedConfig;
use crate::db;
use deadpool_postgres::Transaction;
use std::collections::BTreeSet;
use tokio_postgres::Error;

/// Writes the change-log rows of `effects` and notifies every hub's listener (delivered at
/// COMMIT). Must be the last work of the transaction: the counter row stays locked until COMMIT.
pub async fn emit(tx: &Transaction<'_>, feed: &FeedConfig, effects: &Effects) -> Result<(), Error> {
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
    if rows.is_empty() {
        return Ok(());
    }
    let last: i64 = db::query_one(
        tx,
        "UPDATE change_counter SET last = last + $1 WHERE id = 1 RETURNING last",
        &[&(rows.len() as i64)],
    )
    .await?
    .get(0);
    let first = last - rows.len() as i64 + 1;
    let ids: Vec<i64> = (first..=last).collect();
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
    let notice = notice(&rows);
    db::exec(
        tx,
        "SELECT pg_notify($1, $2)",
        &[&crate::feed::CHANNEL, &notice],
    )
    .await?;
    Ok(())
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
