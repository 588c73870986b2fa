//! Tiers qualified centrally (`[[tiers]]`): a customer holds the highest tier whose `min_spend`
//! her spend (every store's sales minus returns) reaches within that tier's last `months`
//! months. [`requalify`] is one idempotent UPDATE (only rows whose tier changes are written), run
//! inside the ingest transaction for the customers a batch touched, and by [`job`] for every
//! customer periodically (downgrades once a window passes). Many hubs: the job takes a
//! transaction-level advisory lock with `try`, so one hub does each round; the SQL is idempotent
//! anyway. A tier set by head office (`tier_override`) wins over the computed one in the feed.

use crate::db::{self, DbError};
use crate::ingest::apply::{self, Effects};
use crate::Hub;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The advisory lock of the periodic job ("tiers" in ASCII).
const JOB_LOCK: i64 = 0x0074_6965_7273;

/// Recomputes the tier of `customers` (`None`: every customer) as of `now` (RFC 3339);
/// returns the customers whose tier changed. Nothing happens without `[[tiers]]`.
pub async fn requalify(
    tx: &deadpool_postgres::Transaction<'_>,
    tiers: &[crate::config::TierConfig],
    customers: Option<&[String]>,
    now: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    if tiers.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
    let spends: Vec<String> = tiers.iter().map(|t| format!("{}", t.min_spend)).collect();
    let months: Vec<i32> = tiers.iter().map(|t| t.months as i32).collect();
    let rows = db::query(
        tx,
        "UPDATE customers c SET tier = q.tier, updated_at = now()
         FROM (
             SELECT k.customer_id,
                 (SELECT t.name
                  FROM unnest($2::text[], $3::text[], $4::int[]) AS t(name, min_spend, months)
                  WHERE coalesce((SELECT sum(CASE WHEN r.kind = 'return' THEN -abs(r.total)
                                                  ELSE r.total END)
                                  FROM receipts r
                                  WHERE r.customer_key = k.customer_id
                                    AND r.at > $5::text::timestamptz
                                              - make_interval(months => t.months)
                                    AND r.at <= $5::text::timestamptz), 0)
                        >= t.min_spend::numeric
                  ORDER BY t.min_spend::numeric DESC LIMIT 1) AS tier
             FROM customers k
             WHERE ($1::text[] IS NULL OR k.customer_id = ANY($1))
               AND k.merged_into IS NULL AND k.erased_at IS NULL
         ) q
         WHERE c.customer_id = q.customer_id AND c.tier IS DISTINCT FROM q.tier
         RETURNING c.customer_id",
        &[&customers, &names, &spends, &months, &now],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// One round of the periodic job as of `now`: re-qualifies every customer and sends the changed
/// ones to their stores. Returns how many changed (`None`: another hub holds the round).
pub async fn round(hub: &Hub, now: &str) -> Result<Option<usize>, DbError> {
    let mut client = db::client(&hub.pool).await?;
    let tx = client.transaction().await?;
    let locked: bool = db::query_one(&tx, "SELECT pg_try_advisory_xact_lock($1)", &[&JOB_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(None);
    }
    let changed = requalify(&tx, &hub.config.tiers, None, now).await?;
    let mut effects = Effects::default();
    effects.customers = changed.iter().cloned().collect();
    apply::emit(&tx, &hub.config.feed, &effects).await?;
    tx.commit().await?;
    Ok(Some(changed.len()))
}

/// Runs [`round`] every `feed.tier_recompute_secs` until `shutdown` (only with `[[tiers]]`).
pub async fn job(hub: Arc<Hub>, shutdown: CancellationToken) {
    if hub.config.tiers.is_empty() {
        return;
    }
    let period = Duration::from_secs(hub.config.feed.tier_recompute_secs);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let now = jiff::Timestamp::now().to_string();
        match round(&hub, &now).await {
            Ok(Some(n)) => tracing::info!(changed = n, "tiers re-qualified"),
            Ok(None) => tracing::debug!("tiers: another hub holds this round"),
            Err(e) => tracing::warn!(error = %e, "tiers: round failed; retried next period"),
        }
    }
}
