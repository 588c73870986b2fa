//! The staff page's HTML, written with `maud` (templates checked at compile time, every
//! interpolated value escaped: a customer name or receipt line with `<script>` shows as text).
//! Each function returns a whole page, except [`lanes_fragment`], which the lanes page's script
//! swaps in when a lane changes.

use super::auth::LoginRefused;
use super::customer::CustomerPage;
use super::lanes::{AtLane, LanesNow};
use super::locale::Locale;
use crate::http::HealthReport;
use loyalty_core::voucher::Benefit;
use loyalty_store::vouchers::IssuedVoucher;
use maud::{html, Markup, DOCTYPE};

/// What every page of a session knows.
pub struct Ctx<'a> {
    /// Language and formats.
    pub locale: &'a Locale,
    /// Who is logged in.
    pub staff: &'a str,
    /// The session's form token.
    pub csrf: &'a str,
    /// The printers a slip may be printed on (empty: no print button).
    pub printers: &'a [String],
}

/// The outcome of a goodwill request, shown above the customer.
pub enum Issued {
    /// The voucher issued.
    Voucher(Box<IssuedVoucher>),
    /// Its slip was printed on this printer.
    Printed(String, Box<IssuedVoucher>),
    /// Why it was refused.
    Refused(String),
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Nav {
    Lanes,
    Customer,
    Figures,
    Devices,
    None,
}

fn head(locale: &Locale, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " – " (locale.t.title) }
            link rel="stylesheet" href="/staff/static/staff.css";
            script src="/staff/static/staff.js" defer {}
        }
    }
}

fn layout(ctx: &Ctx<'_>, nav: Nav, title: &str, body: Markup) -> Markup {
    let t = ctx.locale.t;
    let link = |target: Nav, href: &str, label: &str| {
        html! {
            a href=(href) class=[(nav == target).then_some("active")] { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang=(ctx.locale.lang()) {
            (head(ctx.locale, title))
            body {
                header {
                    nav {
                        (link(Nav::Lanes, "/staff/lanes", t.nav_lanes))
                        (link(Nav::Customer, "/staff/customer", t.nav_customer))
                        (link(Nav::Figures, "/staff/figures", t.nav_figures))
                        (link(Nav::Devices, "/staff/devices", t.nav_devices))
                    }
                    form.logout method="post" action="/staff/logout" {
                        span.staff { (ctx.staff) }
                        button type="submit" { (t.logout) }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The login form; `refused` says why the last attempt failed.
pub fn login(locale: &Locale, pins: bool, refused: Option<&LoginRefused>) -> Markup {
    let t = locale.t;
    html! {
        (DOCTYPE)
        html lang=(locale.lang()) {
            (head(locale, t.login_title))
            body.login {
                main {
                    h1 { (t.title) }
                    @match refused {
                        Some(LoginRefused::Wrong) => p.error #login-error { (t.login_wrong) },
                        Some(LoginRefused::LockedOut(wait)) => {
                            p.error #login-error { (t.login_locked) " " (wait.as_secs().max(1)) }
                        }
                        None => {}
                    }
                    form method="post" action="/staff/login" {
                        label { (t.login_token)
                            input #token type="password" name="token" autocomplete="current-password";
                        }
                        @if pins {
                            p.hint { (t.login_or_pin) }
                            label { (t.login_name) input #name type="text" name="name" autocomplete="username"; }
                            label { (t.login_pin) input #pin type="password" name="pin" inputmode="numeric"; }
                        }
                        button #login type="submit" { (t.login_button) }
                    }
                }
            }
        }
    }
}

/// Now at the lanes (the fragment is refreshed by the page's script).
pub fn lanes(ctx: &Ctx<'_>, now: &LanesNow) -> Markup {
    let body = html! {
        section #lanes data-version=(now.version) data-live="/staff/lanes/live" {
            (lanes_fragment(ctx.locale, now))
        }
    };
    layout(ctx, Nav::Lanes, ctx.locale.t.lanes_title, body)
}

/// Every lane's customer, as cards.
pub fn lanes_fragment(locale: &Locale, now: &LanesNow) -> Markup {
    let t = locale.t;
    html! {
        @if now.lanes.is_empty() {
            p.empty { (t.lanes_empty) }
        }
        div.cards {
            @for (lane, at) in &now.lanes {
                (lane_card(locale, lane, at))
            }
        }
    }
}

fn lane_card(locale: &Locale, lane: &str, at: &AtLane) -> Markup {
    let t = locale.t;
    let query = format!(
        "/staff/customer?q={}",
        crate::percent::encode_query_value(&at.card)
    );
    html! {
        article.lane.done[at.checked_out.is_some()] data-lane=(lane) data-customer=(at.customer_id) {
            h2 { (t.lane) " " (lane) }
            p.who {
                a href=(query) { (at.name.as_deref().unwrap_or(&at.card)) }
            }
            p.tier { (at.tier) " · " (locale.count(at.balance)) " " (t.points) }
            @if at.enrolled { p.badge { (t.new_member) } }
            p.since { (t.since) " " (locale.time(at.since)) }
            @if let Some(earned) = at.checked_out {
                p.paid { (t.checked_out) " " (locale.count(earned)) }
            }
        }
    }
}

fn benefit(locale: &Locale, benefit: &Benefit) -> String {
    match benefit {
        Benefit::AmountOff(amount) => locale.money(*amount),
        Benefit::PercentOff(percent) => format!("{percent} %"),
        Benefit::FreeItem { sku } => format!("1 × {sku}"),
    }
}

fn voucher_card(ctx: &Ctx<'_>, query: &str, issued: &IssuedVoucher) -> Markup {
    let (locale, t) = (ctx.locale, ctx.locale.t);
    let id = issued.voucher.id.to_string();
    html! {
        figure.voucher data-voucher=(id) {
            img src=(format!("/staff/voucher/{id}.svg")) alt=(format!("{} {id}", t.voucher)) width="180" height="180";
            figcaption {
                strong { (benefit(locale, &issued.voucher.benefit)) }
                br;
                (t.valid_until) " " (locale.date_time(issued.voucher.valid_until))
                br;
                code.voucher-text { (issued.text) }
                @for (i, printer) in ctx.printers.iter().enumerate() {
                    form.print method="post" action="/staff/print" {
                        input type="hidden" name="csrf" value=(ctx.csrf);
                        input type="hidden" name="voucher_id" value=(id);
                        input type="hidden" name="printer" value=(i);
                        input type="hidden" name="q" value=(query);
                        button type="submit" { (t.print) " " (printer) }
                    }
                }
            }
        }
    }
}

/// Customer search and profile.
pub fn customer(
    ctx: &Ctx<'_>,
    query: &str,
    page: Option<&CustomerPage>,
    issued: Option<&Issued>,
    goodwill_max: &str,
) -> Markup {
    let t = ctx.locale.t;
    let body = html! {
        form.search method="get" action="/staff/customer" {
            label { (t.search_label)
                input #q type="search" name="q" value=(query) inputmode="numeric" autofocus;
            }
            button #search type="submit" { (t.search_button) }
        }
        @match issued {
            Some(Issued::Voucher(voucher)) => {
                section.issued #issued {
                    h2 { (t.goodwill_issued) }
                    (voucher_card(ctx, query, voucher))
                }
            }
            Some(Issued::Printed(printer, voucher)) => {
                section.issued #printed {
                    h2 { (t.printed) " " (printer) }
                    (voucher_card(ctx, query, voucher))
                }
            }
            Some(Issued::Refused(why)) => p.error #issued-error { (t.error) ": " (why) },
            None => {}
        }
        @if !query.trim().is_empty() && page.is_none() {
            p.empty #not-found { (t.not_found) }
        }
        @if let Some(page) = page {
            (profile(ctx, page, goodwill_max))
        }
    };
    layout(ctx, Nav::Customer, t.nav_customer, body)
}

fn profile(ctx: &Ctx<'_>, page: &CustomerPage, goodwill_max: &str) -> Markup {
    let (locale, t) = (ctx.locale, ctx.locale.t);
    let c = &page.customer;
    html! {
        div.grid {
            section.profile #profile {
                h2 #customer-name { (c.name.as_deref().unwrap_or("–")) }
                dl {
                    dt { (t.customer_id) } dd #customer-id { (c.id) }
                    dt { (t.card) } dd #customer-card { (c.card.as_deref().unwrap_or("–")) }
                    dt { (t.tier) } dd { (c.tier.as_deref().unwrap_or("basic")) }
                    dt { (t.consent) } dd { (t.unknown) }
                    dt { (t.enrolled) } dd { (locale.date_time(c.enrolled_at)) }
                }
                p.balance #balance {
                    strong { (locale.count(page.balance.available)) }
                    " " (t.points) " " (t.redeemable)
                    @if page.balance.pending != 0 {
                        " · " (locale.count(page.balance.pending)) " " (t.pending)
                    }
                }
            }
            section.goodwill {
                h2 { (t.goodwill_title) }
                form method="post" action="/staff/goodwill" {
                    input type="hidden" name="csrf" value=(ctx.csrf);
                    input type="hidden" name="customer_id" value=(c.id);
                    label { (t.goodwill_value) " (" (t.goodwill_max) " " (goodwill_max) ")"
                        input #goodwill-value type="text" name="value" inputmode="decimal" required;
                    }
                    button #goodwill type="submit" { (t.goodwill_button) }
                }
            }
            section.vouchers {
                h2 { (t.open_vouchers) }
                @if page.vouchers.is_empty() { p.empty { (t.no_vouchers) } }
                div.cards { @for v in &page.vouchers { (voucher_card(ctx, &c.id, v)) } }
                h2 { (t.offers) }
                @if page.offers.is_empty() { p.empty { (t.no_offers) } }
                ul #offers {
                    @for o in &page.offers {
                        li.offer {
                            (o.text)
                            @if let Some(until) = o.valid_until {
                                " · " (t.offer_until) " " (locale.date_time(until))
                            }
                            @if o.requires_activation { " · " (t.offer_activated) }
                        }
                    }
                }
            }
            section.categories {
                h2 { (t.top_categories) }
                @if page.top_categories.is_empty() { p.empty { "–" } }
                ol #categories {
                    @for (category, spent) in &page.top_categories {
                        li { (category) " · " (locale.money(*spent)) }
                    }
                }
            }
        }
        section.purchases {
            h2 { (t.purchases) }
            @if page.purchases.is_empty() { p.empty { (t.no_purchases) } }
            @for (receipt, points) in &page.purchases {
                details.purchase open[page.purchases.first().map(|(r, _)| &r.id) == Some(&receipt.id)] {
                    summary {
                        span { (locale.date_time(receipt.timestamp)) }
                        span { (t.lane) " " (receipt.lane) }
                        span.amount { (locale.money(receipt.total)) }
                        span { (locale.count(*points)) " " (t.points) }
                    }
                    ul.items {
                        @for line in &receipt.lines {
                            li {
                                span.item { (line.name) }
                                @if let Some(category) = &line.category { span.cat { (category) } }
                                span.amount { (locale.money(line.amount)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Devices and links, from the health report.
pub fn devices(ctx: &Ctx<'_>, report: &HealthReport, disk_free: Option<u64>) -> Markup {
    let (locale, t) = (ctx.locale, ctx.locale.t);
    let row = |id: &str, name: &str, ok: bool, detail: &str| {
        html! {
            tr #(id) .ok[ok] .down[!ok] {
                th { (name) }
                td.state { @if ok { (t.up) } @else { (t.down) } }
                td { (detail) }
            }
        }
    };
    let lag = match report.sync.lag_seconds {
        Some(lag) => format!("{} {} s", t.sync_lag, locale.count(lag as i64)),
        None => format!("{} 0 s", t.sync_lag),
    };
    let sync_detail = match &report.sync.last_error {
        _ if !report.sync.enabled => t.sync_off.to_string(),
        Some(err) => format!("{lag}; {err}"),
        None => lag,
    };
    let disk = match disk_free {
        Some(bytes) => format!("{} MB", locale.count((bytes / 1_000_000) as i64)),
        None => t.unknown.to_string(),
    };
    let body = html! {
        table.devices #devices {
            (row("dev-storage", t.storage, report.storage.ok, &report.storage.detail))
            (row("dev-broker", t.broker, report.broker.ok, &report.broker.detail))
            @for device in &report.devices {
                (row(&format!("dev-{}", device.name), &device.name, device.up, &device.detail))
            }
            (row("dev-sync", t.sync, report.sync.ok, &sync_detail))
            (row("dev-clock", t.clock, report.clock.ok, &report.clock.detail))
            (row("dev-disk", t.disk_free, disk_free.is_some_and(|b| b > 100_000_000), &disk))
        }
    };
    layout(ctx, Nav::Devices, t.devices_title, body)
}

/// The figures page (see [`super::charts`]).
pub fn figures(ctx: &Ctx<'_>, body: Markup) -> Markup {
    layout(ctx, Nav::Figures, ctx.locale.t.figures_title, body)
}

/// A page that does not exist (or a refused form).
pub fn not_found(ctx: &Ctx<'_>) -> Markup {
    layout(ctx, Nav::None, "404", html! { p { "–" } })
}

/// Something failed inside; the log says what.
pub fn failure(ctx: &Ctx<'_>) -> Markup {
    layout(
        ctx,
        Nav::None,
        ctx.locale.t.error,
        html! { p.error { "see the gateway's log (journalctl -u loyalty-gateway)" } },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staff::lanes::AtLane;

    #[test]
    fn a_lane_in_german_with_its_name_escaped() {
        let locale = Locale::new(
            "de",
            "EUR",
            jiff::tz::TimeZone::get("Europe/Berlin").expect("tz"),
        );
        let mut now = LanesNow::default();
        now.lanes.insert(
            "3".into(),
            AtLane {
                customer_id: "c-1".into(),
                card: "2990000000019".into(),
                name: Some("<script>alert(1)</script>Erika".into()),
                tier: "gold".into(),
                balance: 1234,
                enrolled: false,
                since: jiff::Timestamp::from_second(1_800_000_000).expect("time"),
                checked_out: Some(12),
            },
        );
        let html = lanes_fragment(&locale, &now).into_string();
        assert!(html.contains("Kasse 3"), "{html}");
        assert!(html.contains("1.234 Punkte"), "{html}");
        assert!(html.contains("seit 09:00:00"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;Erika"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "{html}");
    }
}
