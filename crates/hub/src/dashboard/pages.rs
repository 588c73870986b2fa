//! The dashboard's pages (maud, server-rendered, no script): the login form, messages, and the
//! one dashboard page — the chain's figures for today / 7 / 30 days with a per-day chart, the
//! store ranking with every store's figures, the fleet (stores not seen for
//! `monitoring.stale_store_minutes` highlighted), double-redemption alarms and erasure requests
//! with each store's confirmation. Figures come from [`crate::figures`]; the per-day series and
//! the erasure list are queried here.

use super::text::{bars, meter, Texts};
use crate::db::{self, DbError};
use crate::figures::{self, Figures};
use crate::Hub;
use maud::{html, Markup, DOCTYPE};
use std::collections::HashMap;

fn layout(texts: &Texts, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(texts.lang) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (texts.title) }
                link rel="stylesheet" href="/dashboard.css";
            }
            body { (body) }
        }
    }
}

/// The login form, with `problem` (wrong token, locked out) above it.
pub fn login(texts: &Texts, problem: Option<&str>) -> Markup {
    layout(
        texts,
        html! {
            main class="login" {
                h1 { (texts.login) }
                @if let Some(problem) = problem { p class="problem" id="login-error" role="alert" { (problem) } }
                form id="login" method="post" action="/login" {
                    label for="token" { (texts.token) }
                    input id="token" name="token" type="password" autocomplete="current-password" required autofocus;
                    button type="submit" { (texts.sign_in) }
                }
            }
        },
    )
}

/// A page that only says `what`.
pub fn message(texts: &Texts, what: &str) -> Markup {
    layout(
        texts,
        html! { main class="login" { p class="problem" { (what) } } },
    )
}

struct Erasure {
    customer_id: String,
    requested_at: String,
    stores: Vec<(String, bool)>,
}

struct Data {
    figures: Vec<Figures>,
    outstanding: HashMap<Option<String>, i64>,
    active: HashMap<Option<String>, i64>,
    series: Vec<(String, i64, i64)>,
    fleet: Vec<figures::FleetEntry>,
    alarms: Vec<figures::Alarm>,
    erasures: Vec<Erasure>,
}

async fn load(hub: &Hub, days: i32) -> Result<Data, DbError> {
    let client = db::client(&hub.pool).await?;
    let figures = figures::window(&client, days).await?;
    let outstanding = figures::points_outstanding(&client)
        .await?
        .into_iter()
        .collect();
    let active = figures::active_members(&client, 30)
        .await?
        .into_iter()
        .collect();
    let series = client
        .query(
            "SELECT to_char(d, 'YYYY-MM-DD'), coalesce(sum(f.receipts), 0)::bigint,
                 coalesce(sum(f.member_receipts), 0)::bigint
             FROM generate_series((now() AT TIME ZONE 'UTC')::date - ($1::int - 1),
                                  (now() AT TIME ZONE 'UTC')::date, interval '1 day') d
             LEFT JOIN store_day_figures f ON f.day = d::date
             GROUP BY d ORDER BY d",
            &[&days.max(7)],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let fleet = figures::fleet(&client).await?;
    let alarms = figures::alarms(&client, 20).await?;
    let rows = client
        .query(
            "SELECT e.customer_id, to_char(e.requested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
                 s.store_id, s.confirmed_at IS NOT NULL
             FROM (SELECT * FROM erasures ORDER BY requested_at DESC LIMIT 50) e
             LEFT JOIN erasure_stores s USING (customer_id)
             ORDER BY e.requested_at DESC, e.customer_id, s.store_id",
            &[],
        )
        .await?;
    let mut erasures: Vec<Erasure> = Vec::new();
    for row in &rows {
        let customer_id: String = row.get(0);
        if erasures.last().is_none_or(|e| e.customer_id != customer_id) {
            erasures.push(Erasure {
                customer_id,
                requested_at: row.get(1),
                stores: Vec::new(),
            });
        }
        let store: Option<String> = row.get(2);
        if let (Some(store), Some(last)) = (store, erasures.last_mut()) {
            last.stores
                .push((store, row.get::<_, Option<bool>>(3).unwrap_or(false)));
        }
    }
    Ok(Data {
        figures,
        outstanding,
        active,
        series,
        fleet,
        alarms,
        erasures,
    })
}

fn kpi(label: &str, value: String, id: &str) -> Markup {
    html! { div class="kpi" id=(id) { span class="label" { (label) } span class="value" { (value) } } }
}

/// The dashboard for the last `days` days (1 = today).
pub async fn dashboard(hub: &Hub, texts: &Texts, days: i32) -> Result<Markup, DbError> {
    let data = load(hub, days).await?;
    let currency = hub.config.dashboard.currency.as_str();
    let stale_secs = i64::try_from(hub.config.monitoring.stale_store_minutes)
        .unwrap_or(i64::MAX / 60)
        .saturating_mul(60);
    let chain = data.figures.first().cloned().unwrap_or_default();
    let stores = data.figures.get(1..).unwrap_or(&[]);
    let top = stores.iter().map(|f| f.receipts).max().unwrap_or(0);
    let labels: Vec<String> = data.series.iter().map(|s| s.0.clone()).collect();
    let totals: Vec<i64> = data.series.iter().map(|s| s.1).collect();
    let members: Vec<i64> = data.series.iter().map(|s| s.2).collect();
    let periods = [(1, texts.today), (7, texts.days7), (30, texts.days30)];
    let body = html! {
        header {
            h1 { (texts.title) }
            nav class="periods" {
                @for (d, name) in periods {
                    a href=(format!("/?days={d}")) aria-current=[(d == days).then_some("page")] { (name) }
                }
            }
            form method="post" action="/logout" { button type="submit" class="link" { (texts.sign_out) } }
        }
        main {
            section id="chain" {
                h2 { (texts.chain) }
                div class="kpis" {
                    (kpi(texts.receipts, texts.int(chain.receipts), "chain-receipts"))
                    (kpi(texts.participation, texts.percent(chain.participation()), "chain-participation"))
                    (kpi(texts.enrolments, texts.int(chain.enrolments), "chain-enrolments"))
                    (kpi(texts.active_members, texts.int(data.active.get(&None).copied().unwrap_or(0)), "chain-active"))
                    (kpi(texts.repeat_rate, texts.percent(chain.repeat_rate()), "chain-repeat"))
                    (kpi(texts.basket_members, texts.money(&chain.member_basket, currency), "chain-basket-members"))
                    (kpi(texts.basket_others, texts.money(&chain.nonmember_basket, currency), "chain-basket-others"))
                    (kpi(texts.points_issued, texts.int(chain.points_issued), "chain-points-issued"))
                    (kpi(texts.points_redeemed, texts.int(chain.points_redeemed), "chain-points-redeemed"))
                    (kpi(texts.vouchers_issued, texts.int(chain.vouchers_issued), "chain-vouchers-issued"))
                    (kpi(texts.vouchers_redeemed, texts.int(chain.vouchers_redeemed), "chain-vouchers-redeemed"))
                    (kpi(texts.points_outstanding, texts.int(data.outstanding.get(&None).copied().unwrap_or(0)), "chain-outstanding"))
                }
                figure {
                    (bars(&totals, &members, &labels))
                    figcaption { (texts.per_day) " — " span class="legend-part" { (texts.member_receipts) } }
                }
            }
            section id="ranking" {
                h2 { (texts.ranking) }
                div class="scroll" {
                    table {
                        thead { tr {
                            th { (texts.rank) } th { (texts.store) } th { (texts.receipts) }
                            th { (texts.participation) } th { (texts.repeat_rate) }
                            th { (texts.basket_members) } th { (texts.basket_others) }
                            th { (texts.enrolments) } th { (texts.active_members) }
                            th { (texts.points_issued) } th { (texts.points_redeemed) }
                            th { (texts.vouchers_issued) } th { (texts.vouchers_redeemed) }
                            th { (texts.points_outstanding) }
                        } }
                        tbody {
                            @for (i, f) in stores.iter().enumerate() {
                                @let store = f.store_id.clone();
                                tr class="store" {
                                    td class="num" { (i + 1) }
                                    td class="id" { (store.as_deref().unwrap_or("")) }
                                    td class="num receipts" { (texts.int(f.receipts)) (meter(f.receipts, top)) }
                                    td class="num" { (texts.percent(f.participation())) }
                                    td class="num" { (texts.percent(f.repeat_rate())) }
                                    td class="num" { (texts.money(&f.member_basket, currency)) }
                                    td class="num" { (texts.money(&f.nonmember_basket, currency)) }
                                    td class="num" { (texts.int(f.enrolments)) }
                                    td class="num" { (texts.int(data.active.get(&store).copied().unwrap_or(0))) }
                                    td class="num" { (texts.int(f.points_issued)) }
                                    td class="num" { (texts.int(f.points_redeemed)) }
                                    td class="num" { (texts.int(f.vouchers_issued)) }
                                    td class="num" { (texts.int(f.vouchers_redeemed)) }
                                    td class="num" { (texts.int(data.outstanding.get(&store).copied().unwrap_or(0))) }
                                }
                            }
                        }
                    }
                }
                @if stores.is_empty() { p class="empty" { (texts.none) } }
            }
            div class="columns" {
                section id="fleet" {
                    h2 { (texts.fleet) }
                    div class="scroll" {
                        table {
                            thead { tr { th { (texts.store) } th { (texts.last_seen) } th { (texts.sync_lag) } th { (texts.boxes) } th {} } }
                            tbody {
                                @for box_ in &data.fleet {
                                    @let stale = box_.silent_secs > stale_secs;
                                    tr class=(if stale { "stale" } else { "fresh" }) {
                                        td class="id" { (box_.store_id) }
                                        td { (box_.last_seen.replace('T', " ").trim_end_matches('Z')) }
                                        td class="num" { (texts.lag(box_.silent_secs)) }
                                        td class="num" { (box_.instances) }
                                        td { @if stale { strong class="bad" { (texts.not_seen) } } @else { span class="good" { (texts.ok) } } }
                                    }
                                }
                            }
                        }
                    }
                    @if data.fleet.is_empty() { p class="empty" { (texts.none) } }
                }
                section id="alarms" {
                    h2 { (texts.alarms) }
                    @if data.alarms.is_empty() { p class="empty" { (texts.none) } } @else {
                        div class="scroll" { table {
                            thead { tr { th { (texts.kind) } th { "Voucher" } th { (texts.first) } th { (texts.second) } } }
                            tbody { @for a in &data.alarms { tr class="alarm" {
                                td { (a.kind) }
                                td class="id" { (a.voucher_id.as_deref().unwrap_or("—")) }
                                td { (a.first.0.as_deref().unwrap_or("—")) " " (a.first.1.as_deref().unwrap_or("")) }
                                td { (a.second.0) " " (a.second.1.as_deref().unwrap_or("")) }
                            } } }
                        } }
                    }
                }
                section id="erasures" {
                    h2 { (texts.erasures) }
                    @if data.erasures.is_empty() { p class="empty" { (texts.none) } } @else {
                        div class="scroll" { table {
                            thead { tr { th { (texts.customer) } th { (texts.requested) } th { (texts.store) } } }
                            tbody { @for e in &data.erasures {
                                @let complete = e.stores.iter().all(|s| s.1);
                                tr class="erasure" {
                                    td class="id" { (e.customer_id) @if complete { " " span class="good" { (texts.complete) } } }
                                    td { (e.requested_at) }
                                    td { ul class="stores" { @for (store, done) in &e.stores {
                                        li class=(if *done { "confirmed" } else { "pending" }) {
                                            span class="id" { (store) } ": " (if *done { texts.confirmed } else { texts.pending })
                                        }
                                    } } }
                                }
                            } }
                        } }
                    }
                }
            }
        }
    };
    Ok(layout(texts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_page_speaks_the_locale_and_escapes_the_problem() {
        let page = login(Texts::of("de"), Some("<b>x</b>")).into_string();
        assert!(
            page.contains("lang=\"de\"") && page.contains("Anmelden"),
            "{page}"
        );
        assert!(page.contains("&lt;b&gt;x&lt;/b&gt;"), "{page}");
        assert!(!page.contains("<script"), "no script on any page");
        assert!(login(Texts::of("en"), None)
            .into_string()
            .contains("Sign in"));
    }
}
