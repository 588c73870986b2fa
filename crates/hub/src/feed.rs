//! The changes feed of one store (`GET /v1/stores/{id}/changes?cursor=&wait=`), built in one
//! read-only REPEATABLE READ snapshot: the change log after the cursor (rows for this store and
//! for every store), then for the customers named the exact chain-wide balance with this
//! store's `includes_store_seq` read in the same snapshot, their cards and profile. The cursor is
//! a change id: ids come from a single-row counter locked until COMMIT, so they become visible in
//! commit order and no change is ever skipped (docs/hub.md).
//!
//! Long-poll: one LISTEN connection per hub process ([`listen`]) wakes the waiting requests of
//! the stores a NOTIFY names ([`Notifier`]).

use crate::db::{self, DbError};
use crate::Hub;
use loyalty_protocol::crm::{
    ChangesPage, WireAdjustment, WireConsent, WireCustomer, WireKey, WireMerge, WireOffer,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The NOTIFY channel.
pub const CHANNEL: &str = "loyalty_changes";

/// Wakes the long-polls of the stores a change concerns.
#[derive(Default)]
pub struct Notifier {
    stores: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Notifier {
    /// The wake-up handle of `store`.
    pub fn handle(&self, store: &str) -> Arc<Notify> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores.entry(store.to_string()).or_default().clone()
    }

    /// Wakes the stores named in a NOTIFY payload (`*`: all).
    pub fn wake(&self, payload: &str) {
        let stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if payload == "*" {
            for notify in stores.values() {
                notify.notify_waiters();
            }
        } else {
            for store in payload.split(',') {
                if let Some(notify) = stores.get(store) {
                    notify.notify_waiters();
                }
            }
        }
    }
}

/// Keeps one LISTEN connection open (reconnecting) and wakes waiters; on every (re)connect all
/// waiters are woken, since notifications may have been missed meanwhile.
pub async fn listen(
    config: tokio_postgres::Config,
    notifier: Arc<Notifier>,
    shutdown: CancellationToken,
) {
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    while let Some(message) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "feed listener: connection lost");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        notifier.wake("*");
                        loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => { driver.abort(); return; }
                                payload = rx.recv() => match payload {
                                    Some(payload) => notifier.wake(&payload),
                                    None => break,
                                },
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "feed listener: LISTEN failed"),
                }
                driver.abort();
                drop(client);
            }
            Err(e) => {
                tracing::warn!(error = %e, "feed listener: cannot connect; long-polls fall back to their timeout")
            }
        }
        notifier.wake("*");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// An admin offer (`POST /v1/admin/offers`: target, validity and the `offer` object holding
/// the rest of SPEC 2.5's offer: `text`, `conditions`, `benefit`, ...) as the stores' feed
/// carries it; why not, when the object does not make an offer a store can apply.
pub fn wire_offer(
    offer_id: &str,
    customer_id: Option<&str>,
    segment: Option<&str>,
    valid_from: &str,
    valid_until: &str,
    offer: &serde_json::Value,
) -> Result<WireOffer, String> {
    use serde_json::Value;
    let mut fields = offer.as_object().cloned().unwrap_or_default();
    let mut set = |key: &str, value: Option<&str>| {
        if let Some(value) = value {
            fields.insert(key.to_string(), Value::String(value.to_string()));
        }
    };
    set("offer_id", Some(offer_id));
    set("customer_id", customer_id);
    set("segment", segment);
    set("valid_from", Some(valid_from));
    set("valid_until", Some(valid_until));
    let wire: WireOffer = serde_json::from_value(Value::Object(fields))
        .map_err(|e| format!("offer: {e} (see the Offer schema in docs/openapi.yaml)"))?;
    if wire.benefit.is_none() && !wire.withdrawn {
        return Err("offer.benefit: missing (bonus_points, multiplier or amount_off)".into());
    }
    Ok(wire)
}

/// Parses a cursor (`""` or absent: the beginning).
pub fn parse_cursor(text: Option<&str>) -> Result<i64, String> {
    match text {
        None | Some("") => Ok(0),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| format!("cursor {text:?} is not one this hub gave out")),
    }
}

/// One page for `store` after `cursor`.
pub async fn page(hub: &Hub, store: &str, cursor: i64) -> Result<ChangesPage, DbError> {
    let mut client = db::client(&hub.pool).await?;
    // Every position up to `upper` is committed before the snapshot below is taken.
    let upper = crate::ingest::changes::horizon(&client).await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let limit = hub.config.feed.page_max_changes;
    let rows = db::query(
        &tx,
        "SELECT id, kind, customer_id, voucher_id, payload FROM changes
             WHERE id > $1 AND id <= $2 AND (store_id = $3 OR store_id IS NULL)
             ORDER BY id LIMIT $4",
        &[&cursor, &upper, &store, &limit],
    )
    .await?;
    let next = if rows.len() as i64 == limit {
        rows.last().map(|r| r.get::<_, i64>(0)).unwrap_or(upper)
    } else {
        upper.max(cursor)
    };
    let mut page = ChangesPage {
        cursor: next.to_string(),
        ..ChangesPage::default()
    };
    let mut customer_ids: Vec<String> = Vec::new();
    for row in &rows {
        let kind: &str = row.get(1);
        let customer: Option<String> = row.get(2);
        let voucher: Option<String> = row.get(3);
        let payload: Option<String> = row.get(4);
        match kind {
            "customer" => customer_ids.extend(customer),
            "erased" => page.erased.extend(customer),
            "voucher_revoked" => page.revoked_vouchers.extend(voucher),
            "key" => page
                .keys
                .extend(payload.and_then(|p| serde_json::from_str::<WireKey>(&p).ok())),
            "merged" => page
                .merged
                .extend(payload.and_then(|p| serde_json::from_str::<WireMerge>(&p).ok())),
            "rules" => page.rules = payload.and_then(|p| serde_json::from_str(&p).ok()),
            "adjustment" => page
                .adjustments
                .extend(payload.and_then(|p| serde_json::from_str::<WireAdjustment>(&p).ok())),
            "offer" => page
                .offers
                .extend(payload.and_then(|p| serde_json::from_str::<WireOffer>(&p).ok())),
            other => tracing::debug!(kind = other, "change kind not in pages yet"),
        }
    }
    customer_ids.sort();
    customer_ids.dedup();
    page.revoked_vouchers.sort();
    page.revoked_vouchers.dedup();
    if !customer_ids.is_empty() {
        page.customers = customers(&tx, store, &customer_ids).await?;
    }
    tx.commit().await?;
    Ok(page)
}

/// The highest seq of `store`'s events the hub holds (its most recently heard instance).
async fn includes_store_seq(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &str,
) -> Result<u64, DbError> {
    let row = db::query_opt(
        tx,
        "SELECT last_seq FROM ingest_positions WHERE store_id = $1
             ORDER BY last_seen_at DESC LIMIT 1",
        &[&store],
    )
    .await?;
    Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64).unwrap_or(0))
}

/// The customers `ids` as `store` sees them (merged-away and erased ones left out). Run inside
/// one snapshot so that balances and `includes_store_seq` agree.
pub async fn customers(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &str,
    ids: &[String],
) -> Result<Vec<WireCustomer>, DbError> {
    let seq = includes_store_seq(tx, store).await?;
    let rows = db::query(
        tx,
        "SELECT c.customer_id, c.display_name, coalesce(c.tier_override, c.tier),
                 coalesce((SELECT sum(points) FROM ledger_entries l
                           WHERE l.customer_id = c.customer_id), 0)::bigint,
                 coalesce((SELECT array_agg(card ORDER BY card) FROM cards k
                           WHERE k.customer_id = c.customer_id), '{}'),
                 c.consent_marketing, c.consent_profiling, c.phone_hash, c.email_hash
             FROM customers c
             WHERE c.customer_id = ANY($1) AND c.merged_into IS NULL AND c.erased_at IS NULL
             ORDER BY c.customer_id",
        &[&ids],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| WireCustomer {
            customer_id: row.get(0),
            display_name: row.get(1),
            tier: row.get(2),
            balance: row.get(3),
            includes_store_seq: seq,
            cards: row.get(4),
            consent: match (row.get(5), row.get(6)) {
                (Some(marketing), Some(profiling)) => Some(WireConsent {
                    marketing,
                    profiling,
                }),
                _ => None,
            },
            phone_hash: row.get(7),
            email_hash: row.get(8),
            tags: Vec::new(),
            birthday: None,
        })
        .collect())
}

/// The customer holding `card`, as `store` sees it.
pub async fn by_card(hub: &Hub, store: &str, card: &str) -> Result<Option<WireCustomer>, DbError> {
    let mut client = db::client(&hub.pool).await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let owner = db::query_opt(
        &tx,
        "SELECT coalesce(c.merged_into, c.customer_id) FROM cards k
             JOIN customers c ON c.customer_id = k.customer_id WHERE k.card = $1",
        &[&card],
    )
    .await?;
    let found = match owner {
        Some(row) => {
            let id: String = row.get(0);
            customers(&tx, store, &[id]).await?.into_iter().next()
        }
        None => None,
    };
    tx.commit().await?;
    Ok(found)
}
