//! Head office's figures (issue 17, SPEC 2.8): the materialised `store_day_figures` table (one
//! row per store and UTC day, migration 0002) kept incrementally by [`refresh`], which
//! recomputes only the store-days of events ingested since its last run, and the dashboard's
//! queries over it ([`window`], [`points_outstanding`], [`active_members`], [`fleet`],
//! [`alarms`]), which read at most stores × days rows however many receipts there are.
//! [`run`] is the periodic job every hub process runs (runs are serialised by a row lock, so
//! any number of hubs may run it).
//!
//! Amounts are summed as they come (one currency per chain is assumed). A store-day is
//! recomputed from the ingest tables, so a run repeated or interrupted changes nothing.

use crate::db::{self, DbError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often [`run`] refreshes.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Recomputes the store-days of the events ingested since the last run (by export position,
/// up to a horizon below which every position is committed: none is missed, however late its
/// transaction commits); returns how many.
pub async fn refresh(pool: &deadpool_postgres::Pool) -> Result<u64, DbError> {
    let mut client = db::client(pool).await?;
    let upper = crate::ingest::changes::horizon(&client).await?;
    let tx = client.transaction().await?;
    // One run at a time across hub processes; the others wait, then find little left to do.
    let done: i64 = tx
        .query_one(
            "SELECT done_pos FROM figures_refresh WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?
        .get(0);
    let touched = tx
        .execute(
            "WITH touched AS (
                 SELECT DISTINCT store_id, (at::timestamptz AT TIME ZONE 'UTC')::date AS day
                 FROM store_events
                 WHERE export_pos > $1 AND export_pos <= $2
             ), bounds AS (
                 SELECT store_id, day, day::timestamp AT TIME ZONE 'UTC' AS lo,
                        (day + 1)::timestamp AT TIME ZONE 'UTC' AS hi
                 FROM touched
             )
             INSERT INTO store_day_figures AS f (store_id, day, receipts, member_receipts,
                 repeat_receipts, member_sales, nonmember_sales, enrolments, points_issued,
                 points_redeemed, points_net, vouchers_issued, vouchers_redeemed)
             SELECT b.store_id, b.day, r.receipts, r.member_receipts, r.repeat_receipts,
                 r.member_sales, r.nonmember_sales,
                 (SELECT count(*) FROM store_events e WHERE e.kind = 'customer_enrolled'
                      AND e.store_id = b.store_id AND left(e.at, 10) = b.day::text),
                 l.issued, l.redeemed, l.net,
                 (SELECT count(*) FROM vouchers v WHERE v.store_id = b.store_id
                      AND v.valid_from >= b.lo AND v.valid_from < b.hi),
                 (SELECT count(*) FROM redemptions d WHERE d.store_id = b.store_id
                      AND d.redeemed_at >= b.lo AND d.redeemed_at < b.hi)
             FROM bounds b
             CROSS JOIN LATERAL (
                 SELECT count(*) AS receipts,
                     count(*) FILTER (WHERE s.customer_id IS NOT NULL) AS member_receipts,
                     count(*) FILTER (WHERE s.repeat) AS repeat_receipts,
                     coalesce(sum(s.total) FILTER (WHERE s.customer_id IS NOT NULL), 0) AS member_sales,
                     coalesce(sum(s.total) FILTER (WHERE s.customer_id IS NULL), 0) AS nonmember_sales
                 FROM (
                     SELECT r.customer_id, r.total, r.customer_id IS NOT NULL AND EXISTS (
                         SELECT 1 FROM receipts p
                         WHERE p.customer_id = r.customer_id AND p.store_id = r.store_id
                           AND p.kind = 'sale' AND p.at < r.at
                           AND p.at >= r.at - interval '30 days') AS repeat
                     FROM receipts r
                     WHERE r.store_id = b.store_id AND r.kind = 'sale'
                       AND r.at >= b.lo AND r.at < b.hi
                 ) s
             ) r
             CROSS JOIN LATERAL (
                 SELECT coalesce(sum(points) FILTER (WHERE kind = 'earn'), 0)::bigint AS issued,
                     coalesce(-sum(points) FILTER (WHERE kind IN ('redeem', 'voucher_conversion')), 0)::bigint AS redeemed,
                     coalesce(sum(points), 0)::bigint AS net
                 FROM ledger_entries
                 WHERE store_id = b.store_id AND at >= b.lo AND at < b.hi
             ) l
             ON CONFLICT (store_id, day) DO UPDATE SET
                 receipts = excluded.receipts, member_receipts = excluded.member_receipts,
                 repeat_receipts = excluded.repeat_receipts, member_sales = excluded.member_sales,
                 nonmember_sales = excluded.nonmember_sales, enrolments = excluded.enrolments,
                 points_issued = excluded.points_issued, points_redeemed = excluded.points_redeemed,
                 points_net = excluded.points_net, vouchers_issued = excluded.vouchers_issued,
                 vouchers_redeemed = excluded.vouchers_redeemed",
            &[&done, &upper],
        )
        .await?;
    tx.execute(
        "UPDATE figures_refresh SET done_pos = greatest(done_pos, $1) WHERE id = 1",
        &[&upper],
    )
    .await?;
    tx.commit().await?;
    Ok(touched)
}

/// Refreshes every [`REFRESH_EVERY`] until `shutdown`; a failed run is logged and retried at
/// the next tick.
pub async fn run(pool: deadpool_postgres::Pool, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(err) = refresh(&pool).await {
            tracing::warn!(error = %err, "the dashboard figures were not refreshed; retrying in 30 s");
        }
    }
}

/// One store's (or the chain's) figures over a window of days.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// The store; `None` for the whole chain.
    pub store_id: Option<String>,
    /// Sales receipts.
    pub receipts: i64,
    /// Sales receipts with a customer.
    pub member_receipts: i64,
    /// Member receipts whose customer bought in the same store within the 30 days before.
    pub repeat_receipts: i64,
    /// Average member basket (decimal text, 2 places).
    pub member_basket: String,
    /// Average non-member basket (decimal text, 2 places).
    pub nonmember_basket: String,
    /// Customers enrolled.
    pub enrolments: i64,
    /// Points earned.
    pub points_issued: i64,
    /// Points spent or converted into vouchers.
    pub points_redeemed: i64,
    /// Vouchers issued.
    pub vouchers_issued: i64,
    /// Vouchers redeemed.
    pub vouchers_redeemed: i64,
}

impl Figures {
    /// Share of receipts carrying a card, in percent.
    pub fn participation(&self) -> f64 {
        percent(self.member_receipts, self.receipts)
    }

    /// Share of member receipts that were a repeat visit, in percent.
    pub fn repeat_rate(&self) -> f64 {
        percent(self.repeat_receipts, self.member_receipts)
    }
}

fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The figures of the last `days` UTC days (today included) per store, ranked by receipts, and
/// the chain's (the entry with `store_id: None`, first).
pub async fn window(client: &tokio_postgres::Client, days: i32) -> Result<Vec<Figures>, DbError> {
    let rows = client
        .query(
            "SELECT store_id, coalesce(sum(receipts), 0)::bigint, coalesce(sum(member_receipts), 0)::bigint,
                 coalesce(sum(repeat_receipts), 0)::bigint,
                 coalesce(round(sum(member_sales) / nullif(sum(member_receipts), 0), 2), 0)::text,
                 coalesce(round(sum(nonmember_sales) / nullif(sum(receipts) - sum(member_receipts), 0), 2), 0)::text,
                 coalesce(sum(enrolments), 0)::bigint, coalesce(sum(points_issued), 0)::bigint, coalesce(sum(points_redeemed), 0)::bigint,
                 coalesce(sum(vouchers_issued), 0)::bigint, coalesce(sum(vouchers_redeemed), 0)::bigint
             FROM store_day_figures
             WHERE day > (now() AT TIME ZONE 'UTC')::date - $1::int
             GROUP BY ROLLUP (store_id)
             ORDER BY store_id IS NOT NULL, sum(receipts) DESC, store_id",
            &[&days],
        )
        .await?;
    let mut figures: Vec<Figures> = rows
        .iter()
        .map(|r| Figures {
            store_id: r.get(0),
            receipts: r.get(1),
            member_receipts: r.get(2),
            repeat_receipts: r.get(3),
            member_basket: r.get(4),
            nonmember_basket: r.get(5),
            enrolments: r.get(6),
            points_issued: r.get(7),
            points_redeemed: r.get(8),
            vouchers_issued: r.get(9),
            vouchers_redeemed: r.get(10),
        })
        .collect();
    if figures.first().is_none_or(|f| f.store_id.is_some()) {
        figures.insert(
            0,
            Figures {
                member_basket: "0.00".into(),
                nonmember_basket: "0.00".into(),
                ..Figures::default()
            },
        );
    }
    Ok(figures)
}

/// Points outstanding (every ledger entry ever, vested or not) per store, and the chain's
/// (`None`, first).
pub async fn points_outstanding(
    client: &tokio_postgres::Client,
) -> Result<Vec<(Option<String>, i64)>, DbError> {
    let rows = client
        .query(
            "SELECT store_id, coalesce(sum(points_net), 0)::bigint FROM store_day_figures
             GROUP BY ROLLUP (store_id) ORDER BY store_id IS NOT NULL, store_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Members active (bought or enrolled) within the last `days` days: per store, and distinct
/// across the chain (`None`, first).
pub async fn active_members(
    client: &tokio_postgres::Client,
    days: i32,
) -> Result<Vec<(Option<String>, i64)>, DbError> {
    let since = "now() - make_interval(days => $1::int)";
    let chain = client
        .query_one(
            &format!("SELECT count(DISTINCT customer_id) FROM customer_stores WHERE last_activity_at >= {since}"),
            &[&days],
        )
        .await?;
    let mut out = vec![(None, chain.get::<_, i64>(0))];
    let rows = client
        .query(
            &format!(
                "SELECT store_id, count(*) FROM customer_stores WHERE last_activity_at >= {since}
                 GROUP BY store_id ORDER BY store_id"
            ),
            &[&days],
        )
        .await?;
    out.extend(rows.iter().map(|r| (Some(r.get(0)), r.get(1))));
    Ok(out)
}

/// One store box as head office last heard it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetEntry {
    /// The store.
    pub store_id: String,
    /// Its last request that delivered events (RFC 3339).
    pub last_seen: String,
    /// Seconds since then.
    pub silent_secs: i64,
    /// Database instances the store has delivered from (a replaced box adds one).
    pub instances: i64,
}

/// Every store box, the longest silent first.
pub async fn fleet(client: &tokio_postgres::Client) -> Result<Vec<FleetEntry>, DbError> {
    let rows = client
        .query(
            "SELECT store_id, to_char(max(last_seen_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                 extract(epoch FROM now() - max(last_seen_at))::bigint, count(*)
             FROM ingest_positions GROUP BY store_id ORDER BY max(last_seen_at), store_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| FleetEntry {
            store_id: r.get(0),
            last_seen: r.get(1),
            silent_secs: r.get(2),
            instances: r.get(3),
        })
        .collect())
}

/// A double redemption found at ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    /// `voucher` or `points`.
    pub kind: String,
    /// The voucher, for `voucher`.
    pub voucher_id: Option<String>,
    /// The first store and receipt (absent for points spent beyond the balance).
    pub first: (Option<String>, Option<String>),
    /// The second store and receipt.
    pub second: (String, Option<String>),
}

/// The latest `limit` double redemptions, newest first.
pub async fn alarms(client: &tokio_postgres::Client, limit: i64) -> Result<Vec<Alarm>, DbError> {
    let rows = client
        .query(
            "SELECT kind, voucher_id, first_store, first_receipt, second_store, second_receipt
             FROM double_redemptions ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Alarm {
            kind: r.get(0),
            voucher_id: r.get(1),
            first: (r.get(2), r.get(3)),
            second: (r.get(4), r.get(5)),
        })
        .collect())
}
