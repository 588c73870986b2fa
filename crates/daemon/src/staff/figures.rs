//! The store figures page: today, 7 or 30 days of what the store counted
//! (`Store::figures_since`, aggregated into the store's days by `loyalty_core::figures`), each
//! figure as a number and a small per-day bar chart.

use super::charts::bars;
use super::locale::Locale;
use super::pages::Ctx;
use crate::gateway::GatewayHandle;
use loyalty_core::figures::{aggregate, period_start, Counts, Figures, Metric};
use loyalty_core::money::Money;
use loyalty_store::StoreError;
use maud::{html, Markup};

/// Periods offered (days).
pub const PERIODS: [u32; 3] = [1, 7, 30];
/// A chart shows at least this many days (today alone would be one bar).
const MIN_CHART_DAYS: u32 = 7;

/// The period's figures and the chart's (at least [`MIN_CHART_DAYS`] days). Blocking.
pub fn load(
    handle: &GatewayHandle,
    locale: &Locale,
    days: u32,
) -> Result<(Figures, Figures), StoreError> {
    let tz = locale.time_zone();
    let today = jiff::Timestamp::now().to_zoned(tz.clone()).date();
    let chart_days = days.max(MIN_CHART_DAYS);
    let counts = handle
        .store
        .figures_since(period_start(today, chart_days, tz))?;
    Ok((
        aggregate(&counts, today, days, tz),
        aggregate(&counts, today, chart_days, tz),
    ))
}

fn per_day(chart: &Figures, value: impl Fn(&Counts) -> i64) -> Vec<i64> {
    chart.days.iter().map(|(_, counts)| value(counts)).collect()
}

/// The page's body for `days`.
pub fn body(ctx: &Ctx<'_>, days: u32, period: &Figures, chart: &Figures) -> Markup {
    let (locale, t) = (ctx.locale, ctx.locale.t);
    let labels: Vec<String> = chart.days.iter().map(|(day, _)| locale.day(*day)).collect();
    let total = &period.total;
    let receipts = total.get(Metric::Receipts);
    let members = total.get(Metric::MemberReceipts);
    let (basket_members, basket_others) = period.average_baskets();
    let money = |minor: Option<i64>| minor.map(|m| locale.money(Money(m))).unwrap_or("–".into());
    let issued = total.get(Metric::VouchersIssued);
    let redeemed = total.get(Metric::VouchersRedeemed);
    let card = |id: &str, label: &str, value: String, series: Option<Vec<i64>>| {
        html! {
            div.figure #(id) {
                div.label { (label) }
                div.value { (value) }
                @if let Some(series) = series { (bars(&series, &labels)) }
            }
        }
    };
    let period_label = |d: u32| match d {
        1 => t.today,
        7 => t.days7,
        _ => t.days30,
    };
    html! {
        nav.periods {
            @for d in PERIODS {
                a href=(format!("/staff/figures?days={d}")) class=[(d == days).then_some("active")] { (period_label(d)) }
            }
        }
        div.figures {
            (card("fig-receipts", t.receipts, locale.count(receipts),
                Some(per_day(chart, |c| c.get(Metric::Receipts)))))
            (card("fig-participation", t.participation, locale.percent(members.max(0) as u64, receipts.max(0) as u64),
                Some(per_day(chart, |c| c.get(Metric::MemberReceipts)))))
            (card("fig-enrolments", t.enrolments, locale.count(total.get(Metric::Enrolments)),
                Some(per_day(chart, |c| c.get(Metric::Enrolments)))))
            (card("fig-active", t.active_members, locale.count(period.active_members as i64), None))
            (card("fig-repeat", t.repeat_rate, locale.percent(period.returning_members, period.active_members), None))
            (card("fig-basket-members", t.basket_members, money(basket_members),
                Some(per_day(chart, |c| avg(c.get(Metric::MemberSales), c.get(Metric::MemberReceipts))))))
            (card("fig-basket-others", t.basket_others, money(basket_others),
                Some(per_day(chart, |c| avg(c.get(Metric::OtherSales), c.get(Metric::Receipts) - c.get(Metric::MemberReceipts))))))
            (card("fig-points-issued", t.points_issued, locale.count(total.get(Metric::PointsIssued)),
                Some(per_day(chart, |c| c.get(Metric::PointsIssued)))))
            (card("fig-points-redeemed", t.points_redeemed, locale.count(total.get(Metric::PointsRedeemed)),
                Some(per_day(chart, |c| c.get(Metric::PointsRedeemed)))))
            (card("fig-vouchers-issued", t.vouchers_issued, locale.count(issued),
                Some(per_day(chart, |c| c.get(Metric::VouchersIssued)))))
            (card("fig-vouchers-redeemed", t.vouchers_redeemed, locale.count(redeemed),
                Some(per_day(chart, |c| c.get(Metric::VouchersRedeemed)))))
            (card("fig-redemption-rate", t.redemption_rate, locale.percent(redeemed.max(0) as u64, issued.max(0) as u64), None))
            (card("fig-outstanding", t.points_outstanding, locale.count(period.outstanding), None))
        }
    }
}

fn avg(sum: i64, n: i64) -> i64 {
    if n > 0 {
        sum / n
    } else {
        0
    }
}
