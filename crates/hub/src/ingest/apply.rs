//! What each event does to the chain-wide state, inside the batch's transaction: enrolments
//! (one customer per card; a card already owned by another customer id merges the two: the
//! earliest enrolled survives, the other's ledger entries, receipts, vouchers, cards and store
//! links move to it), ledger entries (points beyond the chain-wide balance are recorded as
//! abuse), receipts with their lines, vouchers issued, redemptions (a voucher's second
//! redemption is recorded and revoked everywhere), and store keys. Then [`emit`] writes the
//! change-log rows for every store concerned, taking ids from the single-row counter as the
//! last statement before COMMIT, and notifies the hubs' listeners.

use super::parse::{Event, Payload};
use crate::config::FeedConfig;
use crate::db;
use deadpool_postgres::Transaction;
use loyalty_core::ledger::EntryKind;
use loyalty_protocol::crm::{WireKey, WireMerge};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio_postgres::Error;

/// One change-log row to write.
#[derive(Debug, Clone)]
pub struct Change {
    /// Target store; `None`: every store.
    pub store: Option<String>,
    /// `customer`, `merged`, `voucher_revoked`, `key`, `erased`, `rules`.
    pub kind: &'static str,
    /// Customer concerned.
    pub customer_id: Option<String>,
    /// Voucher concerned.
    pub voucher_id: Option<String>,
    /// JSON text (merges, keys).
    pub payload: Option<String>,
}

/// What a batch changed, collected while applying.
#[derive(Debug, Default)]
pub struct Effects {
    /// Customers whose profile or balance changed (each store knowing them gets them).
    pub customers: BTreeSet<String>,
    /// Merges (to every store knowing the survivor).
    pub merged: Vec<WireMerge>,
    /// Other changes.
    pub changes: Vec<Change>,
    /// Double redemptions found.
    pub double_redemptions: Vec<&'static str>,
    /// Merges done.
    pub merges: u64,
    /// Erasures confirmed by the store.
    pub erasures_confirmed: u64,
    /// Customer ids resolved in this batch (cleared by a merge).
    resolved: HashMap<String, String>,
    /// Store links to write once per customer at the end of the batch: (enrolled, latest time).
    links: BTreeMap<String, (bool, jiff::Timestamp)>,
}

impl Effects {
    fn link(&mut self, customer: &str, enrolled: bool, at: jiff::Timestamp) {
        let entry = self
            .links
            .entry(customer.to_string())
            .or_insert((enrolled, at));
        entry.0 |= enrolled;
        entry.1 = entry.1.max(at);
    }
}

/// [`resolve`], remembered for the rest of the batch.
async fn resolve_cached(
    tx: &Transaction<'_>,
    store: &str,
    customer_id: &str,
    effects: &mut Effects,
) -> Result<String, Error> {
    if let Some(id) = effects.resolved.get(customer_id) {
        return Ok(id.clone());
    }
    let id = resolve(tx, store, customer_id).await?;
    effects.resolved.insert(customer_id.to_string(), id.clone());
    Ok(id)
}

/// Writes the batch's store links (each customer once, resolved after any merge of the batch).
pub async fn flush_links(
    tx: &Transaction<'_>,
    store: &str,
    effects: &mut Effects,
) -> Result<(), Error> {
    for (customer, (enrolled, at)) in std::mem::take(&mut effects.links) {
        let customer = resolve(tx, store, &customer).await?;
        link(tx, &customer, store, enrolled, at).await?;
    }
    Ok(())
}

/// The surviving id of `customer_id`, creating a bare customer the hub has not seen yet.
async fn resolve(tx: &Transaction<'_>, store: &str, customer_id: &str) -> Result<String, Error> {
    if let Some(row) = db::query_opt(
        tx,
        "SELECT coalesce(merged_into, customer_id) FROM customers WHERE customer_id = $1",
        &[&customer_id],
    )
    .await?
    {
        return Ok(row.get(0));
    }
    db::exec(
        tx,
        "INSERT INTO customers (customer_id, enrolled_store) VALUES ($1, $2)
         ON CONFLICT (customer_id) DO NOTHING",
        &[&customer_id, &store],
    )
    .await?;
    Ok(customer_id.to_string())
}

/// Records that `store` knows `customer_id` (enrolled there, or activity at `at`).
async fn link(
    tx: &Transaction<'_>,
    customer_id: &str,
    store: &str,
    enrolled: bool,
    at: jiff::Timestamp,
) -> Result<(), Error> {
    db::exec(tx,
        "INSERT INTO customer_stores (customer_id, store_id, enrolled, last_activity_at)
         VALUES ($1, $2, $3, $4::text::timestamptz)
         ON CONFLICT (customer_id, store_id) DO UPDATE
         SET enrolled = customer_stores.enrolled OR excluded.enrolled,
             last_activity_at = greatest(customer_stores.last_activity_at, excluded.last_activity_at)",
        &[&customer_id, &store, &enrolled, &at.to_string()],
    )
    .await?;
    Ok(())
}

/// Applies one new event.
pub async fn apply(
    tx: &Transaction<'_>,
    _feed: &FeedConfig,
    store: &str,
    instance: &str,
    event: &Event<'_>,
    effects: &mut Effects,
) -> Result<(), Error> {
    let at = event.at.to_string();
    match &event.payload {
        Payload::Enrolled(c) => {
            db::exec(tx,
                "INSERT INTO customers (customer_id, display_name, tier, enrolled_at, enrolled_store)
                 VALUES ($1, $2, $3, $4::text::timestamptz, $5)
                 ON CONFLICT (customer_id) DO UPDATE
                 SET enrolled_at = coalesce(customers.enrolled_at, excluded.enrolled_at),
                     enrolled_store = coalesce(customers.enrolled_store, excluded.enrolled_store),
                     display_name = coalesce(customers.display_name, excluded.display_name),
                     tier = coalesce(customers.tier, excluded.tier),
                     updated_at = now()",
                &[
                    &c.customer_id.as_ref(),
                    &c.name.as_deref(),
                    &c.tier.as_deref(),
                    &c.enrolled_at.to_string(),
                    &store,
                ],
            )
            .await?;
            let me = resolve_cached(tx, store, &c.customer_id, effects).await?;
            effects.link(&me, true, event.at);
            let mut survivor = me.clone();
            if let Some(card) = c.card.as_deref() {
                db::exec(
                    tx,
                    "INSERT INTO cards (card, customer_id, store_id) VALUES ($1, $2, $3)
                     ON CONFLICT (card) DO NOTHING",
                    &[&card, &me, &store],
                )
                .await?;
                let owner: String = db::query_one(
                    tx,
                    "SELECT customer_id FROM cards WHERE card = $1 FOR UPDATE",
                    &[&card],
                )
                .await?
                .get(0);
                let owner = resolve(tx, store, &owner).await?;
                if owner != me {
                    survivor = merge(tx, store, event.id, card, &me, &owner, effects).await?;
                }
            }
            effects.customers.insert(survivor);
        }
        Payload::Ledger(l) => {
            let customer = resolve_cached(tx, store, &l.customer_id, effects).await?;
            db::exec(
                tx,
                "INSERT INTO ledger_entries (customer_id, store_id, event_id, instance, store_seq,
                     entry, kind, points, receipt_id, cause_receipt_id, reference, reason,
                     vests_at, at, store_customer_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                     $13::text::timestamptz, $14::text::timestamptz, $15)
                 ON CONFLICT DO NOTHING",
                &[
                    &customer,
                    &store,
                    &event.id,
                    &instance,
                    &(event.seq as i64),
                    &(l.entry.min(i64::MAX as u64) as i64),
                    &l.kind.as_str(),
                    &l.points,
                    &l.receipt_id.as_deref(),
                    &l.cause_receipt_id.as_deref(),
                    &l.reference.as_deref(),
                    &l.reason.as_deref(),
                    &l.vests_at.map(|t| t.to_string()),
                    &at,
                    &l.customer_id.as_ref(),
                ],
            )
            .await?;
            effects.link(&customer, false, event.at);
            if l.points < 0 && matches!(l.kind, EntryKind::Redeem | EntryKind::VoucherConversion) {
                let balance: i64 = db::query_one(
                    tx,
                    "SELECT coalesce(sum(points), 0)::bigint FROM ledger_entries
                         WHERE customer_id = $1",
                    &[&customer],
                )
                .await?
                .get(0);
                if balance < 0 {
                    db::exec(
                        tx,
                        "INSERT INTO double_redemptions (kind, customer_id, second_store,
                             second_receipt, points, balance_after, event_id)
                         VALUES ('points', $1, $2, $3, $4, $5, $6)",
                        &[
                            &customer,
                            &store,
                            &l.receipt_id.as_deref().or(l.reference.as_deref()),
                            &l.points,
                            &balance,
                            &event.id,
                        ],
                    )
                    .await?;
                    effects.double_redemptions.push("points");
                }
            }
            effects.customers.insert(customer);
        }
        Payload::Receipt(r) => {
            let customer = match r.customer_id.as_deref() {
                Some(id) => Some(resolve_cached(tx, store, id, effects).await?),
                None => None,
            };
            let key = customer.clone().unwrap_or_else(|| format!("store:{store}"));
            let inserted = db::exec(
                tx,
                "INSERT INTO receipts (customer_key, store_id, receipt_id, event_id,
                         customer_id, kind, original_receipt_id, lane, card, currency, total,
                         points, at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::numeric, $12,
                         $13::text::timestamptz)
                     ON CONFLICT DO NOTHING",
                &[
                    &key,
                    &store,
                    &r.receipt_id.as_ref(),
                    &event.id,
                    &customer,
                    &r.kind.as_ref(),
                    &r.original_receipt_id.as_deref(),
                    &r.lane.as_ref(),
                    &r.card.as_deref(),
                    &r.currency.as_ref(),
                    &r.total,
                    &r.points,
                    &r.timestamp.to_string(),
                ],
            )
            .await?;
            if inserted > 0 && !r.lines.is_empty() {
                let n: Vec<i32> = (1..=r.lines.len() as i32).collect();
                let skus: Vec<&str> = r.lines.iter().map(|l| l.sku.as_ref()).collect();
                let names: Vec<&str> = r.lines.iter().map(|l| l.name.as_ref()).collect();
                let cats: Vec<Option<&str>> =
                    r.lines.iter().map(|l| l.category.as_deref()).collect();
                let qtys: Vec<&str> = r.lines.iter().map(|l| l.qty.as_str()).collect();
                let amounts: Vec<&str> = r.lines.iter().map(|l| l.amount.as_str()).collect();
                let prices: Vec<Option<&str>> =
                    r.lines.iter().map(|l| l.unit_price.as_deref()).collect();
                db::exec(
                    tx,
                    "INSERT INTO receipt_lines (customer_key, store_id, receipt_id, line_no, sku,
                         name, category, qty, amount, unit_price)
                     SELECT $1, $2, $3, n, sku, name, cat, qty::numeric, amount::numeric,
                         price::numeric
                     FROM unnest($4::int[], $5::text[], $6::text[], $7::text[], $8::text[],
                         $9::text[], $10::text[]) AS l(n, sku, name, cat, qty, amount, price)",
                    &[
                        &key,
                        &store,
                        &r.receipt_id.as_ref(),
                        &n,
                        &skus,
                        &names,
                        &cats,
                        &qtys,
                        &amounts,
                        &prices,
                    ],
                )
                .await?;
            }
            if let Some(customer) = customer {
                effects.link(&customer, false, event.at);
                effects.customers.insert(customer);
            }
        }
        Payload::VoucherIssued(v) => {
            let customer = match v.customer_id.as_deref() {
                Some(id) => Some(resolve_cached(tx, store, id, effects).await?),
                None => None,
            };
            db::exec(
                tx,
                "INSERT INTO vouchers (voucher_id, store_id, customer_id, key_id, kind, payload,
                     valid_from, valid_until, event_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7::text::timestamptz, $8::text::timestamptz, $9)
                 ON CONFLICT (voucher_id) DO NOTHING",
                &[
                    &v.voucher_id,
                    &store,
                    &customer,
                    &v.key_id.as_ref(),
                    &v.kind.as_ref(),
                    &event.raw,
                    &v.valid_from.to_string(),
                    &v.valid_until.to_string(),
                    &event.id,
                ],
            )
            .await?;
        }
        Payload::VoucherRedeemed(v) => {
            let inserted = db::exec(
                tx,
                "INSERT INTO redemptions (voucher_id, store_id, receipt_id, lane, discount,
                         currency, redeemed_at, event_id)
                     VALUES ($1, $2, $3, $4, $5::text::numeric, $6, $7::text::timestamptz, $8)
                     ON CONFLICT (voucher_id) DO NOTHING",
                &[
                    &v.voucher_id,
                    &store,
                    &v.receipt_id.as_ref(),
                    &v.lane.as_ref(),
                    &v.discount,
                    &v.currency.as_ref(),
                    &v.redeemed_at.to_string(),
                    &event.id,
                ],
            )
            .await?;
            if inserted > 0 {
                // Redeemed once: every other store must refuse it from now on.
                effects.changes.push(Change {
                    store: None,
                    kind: "voucher_revoked",
                    customer_id: None,
                    voucher_id: Some(v.voucher_id.clone()),
                    payload: None,
                });
            } else {
                let row = db::query_one(
                    tx,
                    "SELECT store_id, receipt_id FROM redemptions WHERE voucher_id = $1",
                    &[&v.voucher_id],
                )
                .await?;
                let first_store: String = row.get(0);
                let first_receipt: String = row.get(1);
                if first_store != store || first_receipt != v.receipt_id.as_ref() {
                    db::exec(
                        tx,
                        "INSERT INTO double_redemptions (kind, voucher_id, first_store,
                             first_receipt, second_store, second_receipt, event_id)
                         VALUES ('voucher', $1, $2, $3, $4, $5, $6)",
                        &[
                            &v.voucher_id,
                            &first_store,
                            &first_receipt,
                            &store,
                            &v.receipt_id.as_ref(),
                            &event.id,
                        ],
                    )
                    .await?;
                    effects.double_redemptions.push("voucher");
                    effects.changes.push(Change {
                        store: None,
                        kind: "voucher_revoked",
                        customer_id: None,
                        voucher_id: Some(v.voucher_id.clone()),
                        payload: None,
                    });
                }
            }
        }
        Payload::VoucherKey(k) => {
            let inserted = db::exec(
                tx,
                "INSERT INTO voucher_keys (key_id, algorithm, public_key, issuer)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (key_id) DO NOTHING",
                &[
                    &k.key_id.as_ref(),
                    &k.algorithm.as_ref(),
                    &k.public_key.as_ref(),
                    &store,
                ],
            )
            .await?;
            if inserted > 0 {
                let key = WireKey {
                    key_id: k.key_id.to_string(),
                    algorithm: k.algorithm.to_string(),
                    public_key: k.public_key.to_string(),
                    issuer: Some(store.to_string()),
                    revoked: false,
                };
                effects.changes.push(Change {
                    store: None,
                    kind: "key",
                    customer_id: None,
                    voucher_id: None,
                    payload: serde_json::to_string(&key).ok(),
                });
            }
        }
        Payload::Erased(e) => {
            effects.erasures_confirmed +=
                crate::admin::erasure::confirm(tx, store, e.customer_id, event.id).await?;
        }
        Payload::Other => {}
    }
    Ok(())
}

/// Merges customers `a` and `b` (both surviving ids); returns the survivor.
async fn merge(
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
    effects.resolved.clear();
    effects.merged.push(WireMerge {
        from: from.to_string(),
        into: into.clone(),
    });
    effects.merges += 1;
    Ok(into)
}

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
