//! The enrolments' cards ([`cards`], one insert per batch) and merging two customer ids that turned out to be one person (the same card enrolled offline
//! in two stores): the earliest enrolled survives (ties: the smaller id); the other's ledger
//! entries, receipts (with lines), vouchers, cards and store links move to it with
//! INSERT … SELECT + DELETE (no update of a distribution column), `merged_into` points there,
//! and a `customer_merges` row records it. Rare: run per event inside the batch's transaction.

use super::apply::{resolve_cached, Effects};
use super::parse::{Event, Payload};
use crate::db;
use deadpool_postgres::Transaction;
use loyalty_protocol::crm::WireMerge;
use std::collections::{BTreeMap, HashMap};
use tokio_postgres::Error;

/// Merges customers `a` and `b` (both surviving ids); returns the survivor.
pub async fn merge(
    tx: &Transaction<'_>,
    store: &str,
    event_id: &str,
    card: &str,
    a: &str,
    b: &str,
    effects: &mut Effects,
) -> Result<String, Error> {
    let rows = db::query(
        tx,
        "SELECT customer_id, enrolled_at FROM customers WHERE customer_id = ANY($1)
             ORDER BY enrolled_at NULLS LAST, customer_id FOR UPDATE",
        &[&vec![a, b]],
    )
    .await?;
    let into: String = rows
        .first()
        .map(|r| r.get(0))
        .unwrap_or_else(|| b.to_string());
    let from = if into == a { b } else { a };
    // Every statement takes ($1 = from, $2 = into); the deletes name $2 only to keep one
    // parameter list.
    let moves = [
        "INSERT INTO ledger_entries SELECT $2, store_id, event_id, instance, store_seq, entry, kind,
             points, receipt_id, cause_receipt_id, reference, reason, vests_at, at, store_customer_id
         FROM ledger_entries WHERE customer_id = $1",
        "DELETE FROM ledger_entries WHERE customer_id = $1 AND $2 <> ''",
        "INSERT INTO receipts SELECT $2, store_id, receipt_id, event_id, $2, kind,
             original_receipt_id, lane, card, currency, total, points, at
         FROM receipts WHERE customer_key = $1 ON CONFLICT DO NOTHING",
        "INSERT INTO receipt_lines SELECT $2, store_id, receipt_id, line_no, sku, name, category,
             qty, amount, unit_price
         FROM receipt_lines WHERE customer_key = $1 ON CONFLICT DO NOTHING",
        "DELETE FROM receipt_lines WHERE customer_key = $1 AND $2 <> ''",
        "DELETE FROM receipts WHERE customer_key = $1 AND $2 <> ''",
        "UPDATE vouchers SET customer_id = $2 WHERE customer_id = $1",
        "INSERT INTO customer_stores (customer_id, store_id, enrolled, last_activity_at)
         SELECT $2, store_id, enrolled, last_activity_at FROM customer_stores WHERE customer_id = $1
         ON CONFLICT (customer_id, store_id) DO UPDATE
         SET enrolled = customer_stores.enrolled OR excluded.enrolled,
             last_activity_at = greatest(customer_stores.last_activity_at, excluded.last_activity_at)",
        "DELETE FROM customer_stores WHERE customer_id = $1 AND $2 <> ''",
        "UPDATE cards SET customer_id = $2 WHERE customer_id = $1",
        "UPDATE customers SET merged_into = $2, updated_at = now()
         WHERE customer_id = $1 OR merged_into = $1",
        "UPDATE customers SET
             display_name = coalesce(customers.display_name, f.display_name),
             tier = coalesce(customers.tier, f.tier),
             tier_override = coalesce(customers.tier_override, f.tier_override),
             consent_marketing = coalesce(customers.consent_marketing, f.consent_marketing),
             consent_profiling = coalesce(customers.consent_profiling, f.consent_profiling),
             updated_at = now()
         FROM customers f WHERE f.customer_id = $1 AND customers.customer_id = $2",
    ];
    for sql in moves {
        db::exec(tx, sql, &[&from, &into]).await?;
    }
    db::exec(
        tx,
        "INSERT INTO customer_merges (from_id, into_id, card, store_id, event_id)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (from_id) DO NOTHING",
        &[&from, &into, &card, &store, &event_id],
    )
    .await?;
    effects.customers.remove(from);
    effects.erasure_checks.remove(from);
    effects.erasure_checks.insert(into.clone());
    effects.remap(from, &into);
    effects.merged.push(WireMerge {
        from: from.to_string(),
        into: into.clone(),
    });
    effects.merges += 1;
    Ok(into)
}

/// The enrolments' cards, one insert for the batch; then, in event order, a card owned by
/// another customer id merges the two (rare: per event).
pub async fn cards(
    tx: &Transaction<'_>,
    store: &str,
    events: &[&Event<'_>],
    effects: &mut Effects,
) -> Result<(), Error> {
    let mut first: BTreeMap<&str, String> = BTreeMap::new();
    for event in events {
        if let Payload::Enrolled(c) = &event.payload {
            if let Some(card) = c.card.as_deref() {
                let me = effects.survivor(&c.customer_id).to_string();
                first.entry(card).or_insert(me);
            }
        }
    }
    if first.is_empty() {
        return Ok(());
    }
    let cards: Vec<&str> = first.keys().copied().collect();
    let owners: Vec<&str> = first.values().map(String::as_str).collect();
    // The cards new to the hub are ours (and locked by the insert); the others are read, locked
    // in card order (rare: a card enrolled before, here or in another store).
    let inserted: std::collections::HashSet<String> = db::query(
        tx,
        "INSERT INTO cards (card, customer_id, store_id)
         SELECT card, owner, $3 FROM unnest($1::text[], $2::text[]) AS t(card, owner)
         ON CONFLICT (card) DO NOTHING RETURNING card",
        &[&cards, &owners, &store],
    )
    .await?
    .iter()
    .map(|row| row.get(0))
    .collect();
    let (ours, known): (Vec<_>, Vec<_>) = first
        .iter()
        .partition(|(card, _)| inserted.contains(**card));
    let mut owner: HashMap<String, String> = ours
        .into_iter()
        .map(|(card, me)| (card.to_string(), me.clone()))
        .collect();
    let known: Vec<&str> = known.into_iter().map(|(card, _)| *card).collect();
    if !known.is_empty() {
        for row in db::query(
            tx,
            "SELECT card, customer_id FROM cards WHERE card = ANY($1) ORDER BY card FOR UPDATE",
            &[&known],
        )
        .await?
        {
            owner.insert(row.get(0), row.get(1));
        }
    }
    for event in events {
        let Payload::Enrolled(c) = &event.payload else {
            continue;
        };
        let Some(card) = c.card.as_deref() else {
            continue;
        };
        let me = effects.survivor(&c.customer_id).to_string();
        let Some(held) = owner.get(card).cloned() else {
            continue;
        };
        let held = resolve_cached(tx, store, &held, effects).await?;
        if held != me {
            let into = merge(tx, store, event.id, card, &me, &held, effects).await?;
            for o in owner.values_mut() {
                if *o == me || *o == held {
                    *o = into.clone();
                }
            }
        }
    }
    Ok(())
}
