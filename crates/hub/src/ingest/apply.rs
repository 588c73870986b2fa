//! What a batch's events do to the chain-wide state, inside the batch's transaction, applied
//! set-wise (one statement per table per batch, arrays bound with `unnest`): enrolments (one
//! customer per card; the cards and merges are in [`super::merge`]), customer ids resolved to their survivors,
//! ledger entries (points beyond the chain-wide balance are recorded as abuse, in event order),
//! receipts with their lines, store links. Vouchers issued, redemptions (a voucher's second
//! redemption is recorded and revoked everywhere) and store keys are rare and applied per
//! event. Then [`emit`] writes the change-log rows for every store concerned, taking ids from
//! the single-row counter as the last statement before COMMIT, and notifies the hubs' listeners.

pub use super::changes::emit;
use super::merge::cards;
use super::parse::{Event, Payload};
use crate::config::FeedConfig;
use crate::db;
use deadpool_postgres::Transaction;
use loyalty_core::ledger::EntryKind;
use loyalty_protocol::crm::{WireKey, WireMerge};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
    /// Customer ids named by the batch -> their surviving id (kept current by merges).
    resolved: HashMap<String, String>,
    /// Surviving ids to check for an erasure before COMMIT beside those the batch names (see
    /// [`Effects::erasure_candidates`]): found erased when the batch was resolved, created by
    /// another transaction meanwhile, or the survivors of merges.
    pub erasure_checks: BTreeSet<String>,
    /// Store links to write once per customer at the end of the batch: (enrolled, latest time).
    links: BTreeMap<String, (bool, jiff::Timestamp)>,
}

impl Effects {
    /// Every surviving id the batch named, and [`Effects::erasure_checks`]: the ids whose
    /// erasure is checked again just before COMMIT. All of them, not only those found erased
    /// when the batch was resolved: an erasure that commits while this transaction runs (it
    /// does not wait for it) would otherwise miss the personal data this batch writes.
    pub fn erasure_candidates(&self) -> Vec<String> {
        let mut ids: BTreeSet<&String> = self.resolved.values().collect();
        ids.extend(&self.erasure_checks);
        ids.into_iter().cloned().collect()
    }

    fn link(&mut self, customer: &str, enrolled: bool, at: jiff::Timestamp) {
        let entry = self
            .links
            .entry(customer.to_string())
            .or_insert((enrolled, at));
        entry.0 |= enrolled;
        entry.1 = entry.1.max(at);
    }

    /// After a merge of `from` into `into`: every id resolved to `from` now lands on `into`.
    pub(super) fn remap(&mut self, from: &str, into: &str) {
        for survivor in self.resolved.values_mut() {
            if survivor == from {
                *survivor = into.to_string();
            }
        }
    }

    /// The surviving id of `customer_id` (resolved by [`resolve_all`]).
    pub(super) fn survivor<'a>(&'a self, customer_id: &'a str) -> &'a str {
        self.resolved
            .get(customer_id)
            .map(String::as_str)
            .unwrap_or(customer_id)
    }
}

/// [`resolve`], remembered for the rest of the batch.
pub(super) async fn resolve_cached(
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

/// Applies the batch's new events (in seq order), set-wise per table.
pub async fn apply(
    tx: &Transaction<'_>,
    _feed: &FeedConfig,
    store: &str,
    instance: &str,
    events: &[&Event<'_>],
    effects: &mut Effects,
) -> Result<(), Error> {
    enrolments(tx, store, events).await?;
    resolve_all(tx, store, events, effects).await?;
    cards(tx, store, events, effects).await?;
    ledger(tx, store, instance, events, effects).await?;
    receipts(tx, store, events, effects).await?;
    for event in events {
        rare(tx, store, event, effects).await?;
    }
    // Store links and changed customers, on the survivors of any merge of the batch.
    for event in events {
        let (customer, enrolled) = match &event.payload {
            Payload::Enrolled(c) => (c.customer_id.as_ref(), true),
            Payload::Ledger(l) => (l.customer_id.as_ref(), false),
            Payload::Receipt(r) => match r.customer_id.as_deref() {
                Some(id) => (id, false),
                None => continue,
            },
            _ => continue,
        };
        let survivor = effects.survivor(customer).to_string();
        effects.link(&survivor, enrolled, event.at);
        effects.customers.insert(survivor);
    }
    Ok(())
}

/// Every customer id the batch names, sorted and once (row locks in one order: no deadlocks).
fn named_customers<'e>(events: &[&'e Event<'_>]) -> Vec<&'e str> {
    let ids: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Enrolled(c) => Some(c.customer_id.as_ref()),
            Payload::Ledger(l) => Some(l.customer_id.as_ref()),
            Payload::Receipt(r) => r.customer_id.as_deref(),
            Payload::VoucherIssued(v) => v.customer_id.as_deref(),
            _ => None,
        })
        .collect();
    ids.into_iter().collect()
}

/// `customer_enrolled`: the customers' rows, one upsert for the batch (per customer, the first
/// value sent wins, as per event: what the hub holds already is kept).
async fn enrolments(tx: &Transaction<'_>, store: &str, events: &[&Event<'_>]) -> Result<(), Error> {
    let mut rows: BTreeMap<&str, (Option<&str>, Option<&str>, String)> = BTreeMap::new();
    for event in events {
        if let Payload::Enrolled(c) = &event.payload {
            let row = rows.entry(c.customer_id.as_ref()).or_insert((
                None,
                None,
                c.enrolled_at.to_string(),
            ));
            row.0 = row.0.or(c.name.as_deref());
            row.1 = row.1.or(c.tier.as_deref());
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = rows.keys().copied().collect();
    let names: Vec<Option<&str>> = rows.values().map(|r| r.0).collect();
    let tiers: Vec<Option<&str>> = rows.values().map(|r| r.1).collect();
    let ats: Vec<&str> = rows.values().map(|r| r.2.as_str()).collect();
    db::exec(
        tx,
        "INSERT INTO customers (customer_id, display_name, tier, enrolled_at, enrolled_store)
         SELECT id, name, tier, at::timestamptz, $5
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(id, name, tier, at)
         ON CONFLICT (customer_id) DO UPDATE
         SET enrolled_at = coalesce(customers.enrolled_at, excluded.enrolled_at),
             enrolled_store = coalesce(customers.enrolled_store, excluded.enrolled_store),
             display_name = coalesce(customers.display_name, excluded.display_name),
             tier = coalesce(customers.tier, excluded.tier),
             updated_at = now()",
        &[&ids, &names, &tiers, &ats, &store],
    )
    .await?;
    Ok(())
}

/// Every customer id the batch names -> its surviving id, and whether that one is erased; ids
/// the hub has not seen yet become bare customers. One statement for the batch (a second only
/// for ids another transaction created meanwhile, which this statement's snapshot misses).
async fn resolve_all(
    tx: &Transaction<'_>,
    store: &str,
    events: &[&Event<'_>],
    effects: &mut Effects,
) -> Result<(), Error> {
    let ids = named_customers(events);
    if ids.is_empty() {
        return Ok(());
    }
    let resolved = db::query(
        tx,
        "WITH created AS (
             INSERT INTO customers (customer_id, enrolled_store) SELECT unnest($1::text[]), $2
             ON CONFLICT (customer_id) DO NOTHING RETURNING customer_id
         )
         SELECT c.customer_id, coalesce(c.merged_into, c.customer_id), s.erased_at IS NOT NULL
         FROM customers c LEFT JOIN customers s
             ON s.customer_id = coalesce(c.merged_into, c.customer_id)
         WHERE c.customer_id = ANY($1)
         UNION ALL SELECT customer_id, customer_id, false FROM created",
        &[&ids, &store],
    )
    .await?;
    for row in resolved {
        let survivor: String = row.get(1);
        if row.get::<_, bool>(2) {
            effects.erasure_checks.insert(survivor.clone());
        }
        effects.resolved.insert(row.get(0), survivor);
    }
    let missed: Vec<&str> = ids
        .into_iter()
        .filter(|id| !effects.resolved.contains_key(*id))
        .collect();
    for id in missed {
        let survivor = resolve(tx, store, id).await?;
        effects.erasure_checks.insert(survivor.clone());
        effects.resolved.insert(id.to_string(), survivor);
    }
    Ok(())
}

/// `ledger`: one insert for the batch's entries. A `redeem` / `voucher_conversion` that takes
/// the chain-wide balance below 0 (counted in event order) is recorded in `double_redemptions`.
async fn ledger(
    tx: &Transaction<'_>,
    store: &str,
    instance: &str,
    events: &[&Event<'_>],
    effects: &mut Effects,
) -> Result<(), Error> {
    let entries: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Ledger(l) => Some((*e, l)),
            _ => None,
        })
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let redeems = |l: &loyalty_protocol::crm::events::LedgerEvent<'_>| {
        l.points < 0 && matches!(l.kind, EntryKind::Redeem | EntryKind::VoucherConversion)
    };
    // Balances before the batch of the customers who redeem in it (rare).
    let spenders: BTreeSet<String> = entries
        .iter()
        .filter(|(_, l)| redeems(l))
        .map(|(_, l)| effects.survivor(&l.customer_id).to_string())
        .collect();
    let mut balance: HashMap<String, i64> = HashMap::new();
    if !spenders.is_empty() {
        let ids: Vec<&str> = spenders.iter().map(String::as_str).collect();
        for row in db::query(
            tx,
            "SELECT customer_id, coalesce(sum(points), 0)::bigint FROM ledger_entries
                 WHERE customer_id = ANY($1) GROUP BY customer_id",
            &[&ids],
        )
        .await?
        {
            balance.insert(row.get(0), row.get(1));
        }
    }
    let customers: Vec<String> = entries
        .iter()
        .map(|(_, l)| effects.survivor(&l.customer_id).to_string())
        .collect();
    let ids: Vec<&str> = entries.iter().map(|(e, _)| e.id).collect();
    let seqs: Vec<i64> = entries.iter().map(|(e, _)| e.seq as i64).collect();
    let numbers: Vec<i64> = entries
        .iter()
        .map(|(_, l)| l.entry.min(i64::MAX as u64) as i64)
        .collect();
    let kinds: Vec<&str> = entries.iter().map(|(_, l)| l.kind.as_str()).collect();
    let points: Vec<i64> = entries.iter().map(|(_, l)| l.points).collect();
    let receipts: Vec<Option<&str>> = entries
        .iter()
        .map(|(_, l)| l.receipt_id.as_deref())
        .collect();
    let causes: Vec<Option<&str>> = entries
        .iter()
        .map(|(_, l)| l.cause_receipt_id.as_deref())
        .collect();
    let references: Vec<Option<&str>> = entries
        .iter()
        .map(|(_, l)| l.reference.as_deref())
        .collect();
    let reasons: Vec<Option<&str>> = entries.iter().map(|(_, l)| l.reason.as_deref()).collect();
    let vests: Vec<Option<String>> = entries
        .iter()
        .map(|(_, l)| l.vests_at.map(|t| t.to_string()))
        .collect();
    let ats: Vec<String> = entries.iter().map(|(e, _)| e.at.to_string()).collect();
    let sent: Vec<&str> = entries
        .iter()
        .map(|(_, l)| l.customer_id.as_ref())
        .collect();
    db::exec(
        tx,
        "INSERT INTO ledger_entries (customer_id, store_id, event_id, instance, store_seq,
             entry, kind, points, receipt_id, cause_receipt_id, reference, reason,
             vests_at, at, store_customer_id)
         SELECT c, $1, id, $2, seq, n, k, p, r, cr, ref, why, v::timestamptz, a::timestamptz, sc
         FROM unnest($3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[],
             $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
             $14::text[], $15::text[]) AS t(c, id, seq, n, k, p, r, cr, ref, why, v, a, sc)
         ON CONFLICT DO NOTHING",
        &[
            &store,
            &instance,
            &customers,
            &ids,
            &seqs,
            &numbers,
            &kinds,
            &points,
            &receipts,
            &causes,
            &references,
            &reasons,
            &vests,
            &ats,
            &sent,
        ],
    )
    .await?;
    if spenders.is_empty() {
        return Ok(());
    }
    for ((event, l), customer) in entries.iter().zip(&customers) {
        if !spenders.contains(customer) {
            continue;
        }
        let after = balance.entry(customer.clone()).or_insert(0);
        *after += l.points;
        if redeems(l) && *after < 0 {
            db::exec(
                tx,
                "INSERT INTO double_redemptions (kind, customer_id, second_store,
                     second_receipt, points, balance_after, event_id)
                 VALUES ('points', $1, $2, $3, $4, $5, $6)",
                &[
                    customer,
                    &store,
                    &l.receipt_id.as_deref().or(l.reference.as_deref()),
                    &l.points,
                    &*after,
                    &event.id,
                ],
            )
            .await?;
            effects.double_redemptions.push("points");
        }
    }
    Ok(())
}

/// `receipt`: one insert for the batch's receipts, one for the lines of those stored now.
async fn receipts(
    tx: &Transaction<'_>,
    store: &str,
    events: &[&Event<'_>],
    effects: &mut Effects,
) -> Result<(), Error> {
    let all: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Receipt(r) => Some((*e, r)),
            _ => None,
        })
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let anonymous = format!("store:{store}");
    let customers: Vec<Option<String>> = all
        .iter()
        .map(|(_, r)| {
            r.customer_id
                .as_deref()
                .map(|id| effects.survivor(id).to_string())
        })
        .collect();
    let keys: Vec<&str> = customers
        .iter()
        .map(|c| c.as_deref().unwrap_or(&anonymous))
        .collect();
    let rids: Vec<&str> = all.iter().map(|(_, r)| r.receipt_id.as_ref()).collect();
    let ids: Vec<&str> = all.iter().map(|(e, _)| e.id).collect();
    let kinds: Vec<&str> = all.iter().map(|(_, r)| r.kind.as_ref()).collect();
    let originals: Vec<Option<&str>> = all
        .iter()
        .map(|(_, r)| r.original_receipt_id.as_deref())
        .collect();
    let lanes: Vec<&str> = all.iter().map(|(_, r)| r.lane.as_ref()).collect();
    let cards: Vec<Option<&str>> = all.iter().map(|(_, r)| r.card.as_deref()).collect();
    let currencies: Vec<&str> = all.iter().map(|(_, r)| r.currency.as_ref()).collect();
    let totals: Vec<&str> = all.iter().map(|(_, r)| r.total.as_str()).collect();
    let points: Vec<i64> = all.iter().map(|(_, r)| r.points).collect();
    let ats: Vec<String> = all.iter().map(|(_, r)| r.timestamp.to_string()).collect();
    let stored: HashSet<(String, String)> = db::query(
        tx,
        "INSERT INTO receipts (customer_key, store_id, receipt_id, event_id, customer_id, kind,
             original_receipt_id, lane, card, currency, total, points, at)
         SELECT k, $1, rid, id, c, kind, o, lane, card, cur, total::numeric, p, a::timestamptz
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::text[])
             AS t(k, rid, id, c, kind, o, lane, card, cur, total, p, a)
         ON CONFLICT DO NOTHING
         RETURNING customer_key, receipt_id",
        &[
            &store,
            &keys,
            &rids,
            &ids,
            &customers,
            &kinds,
            &originals,
            &lanes,
            &cards,
            &currencies,
            &totals,
            &points,
            &ats,
        ],
    )
    .await?
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect();
    // Lines of the receipts stored now (a receipt id sent twice: the first one's lines).
    let mut pending = stored;
    let (mut lk, mut lr, mut ln) = (Vec::new(), Vec::new(), Vec::new());
    let (mut skus, mut names, mut cats) = (Vec::new(), Vec::new(), Vec::new());
    let (mut qtys, mut amounts, mut prices) = (Vec::new(), Vec::new(), Vec::new());
    for ((_, r), key) in all.iter().zip(&keys) {
        if !pending.remove(&(key.to_string(), r.receipt_id.to_string())) {
            continue;
        }
        for (n, line) in r.lines.iter().enumerate() {
            lk.push(*key);
            lr.push(r.receipt_id.as_ref());
            ln.push(n as i32 + 1);
            skus.push(line.sku.as_ref());
            names.push(line.name.as_ref());
            cats.push(line.category.as_deref());
            qtys.push(line.qty.as_str());
            amounts.push(line.amount.as_str());
            prices.push(line.unit_price.as_deref());
        }
    }
    if !lk.is_empty() {
        db::exec(
            tx,
            "INSERT INTO receipt_lines (customer_key, store_id, receipt_id, line_no, sku,
                 name, category, qty, amount, unit_price)
             SELECT k, $1, rid, n, sku, name, cat, qty::numeric, amount::numeric, price::numeric
             FROM unnest($2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[],
                 $8::text[], $9::text[], $10::text[])
                 AS l(k, rid, n, sku, name, cat, qty, amount, price)",
            &[
                &store, &lk, &lr, &ln, &skus, &names, &cats, &qtys, &amounts, &prices,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Writes the batch's store links: one upsert, each customer once (on its survivor).
pub async fn flush_links(
    tx: &Transaction<'_>,
    store: &str,
    effects: &mut Effects,
) -> Result<(), Error> {
    let links = std::mem::take(&mut effects.links);
    if links.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = links.keys().map(String::as_str).collect();
    let enrolled: Vec<bool> = links.values().map(|l| l.0).collect();
    let ats: Vec<String> = links.values().map(|l| l.1.to_string()).collect();
    db::exec(tx,
        "INSERT INTO customer_stores (customer_id, store_id, enrolled, last_activity_at)
         SELECT c, $1, e, a::timestamptz FROM unnest($2::text[], $3::bool[], $4::text[]) AS t(c, e, a)
         ON CONFLICT (customer_id, store_id) DO UPDATE
         SET enrolled = customer_stores.enrolled OR excluded.enrolled,
             last_activity_at = greatest(customer_stores.last_activity_at, excluded.last_activity_at)",
        &[&store, &ids, &enrolled, &ats],
    )
    .await?;
    Ok(())
}

/// The rare kinds, per event: vouchers issued, redemptions, store keys.
async fn rare(
    tx: &Transaction<'_>,
    store: &str,
    event: &Event<'_>,
    effects: &mut Effects,
) -> Result<(), Error> {
    match &event.payload {
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
        _ => {}
    }
    Ok(())
}
