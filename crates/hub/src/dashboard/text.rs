//! The dashboard's words in German and English (`[dashboard] locale`), numbers, percentages and
//! amounts in the locale's format with the chain's currency, and the small server-rendered SVG
//! bar charts (no script, no chart library; each bar has a `<title>` tooltip).

use maud::{html, Markup};

/// Every word the dashboard shows, in one language (field names say which).
#[allow(missing_docs)]
pub struct Texts {
    /// `lang` attribute.
    pub lang: &'static str,
    /// Decimal separator.
    pub decimal: char,
    /// Thousands separator.
    pub thousands: char,
    /// Currency symbol after the amount (German) or before (English).
    pub currency_after: bool,
    pub title: &'static str,
    pub login: &'static str,
    pub token: &'static str,
    pub sign_in: &'static str,
    pub sign_out: &'static str,
    pub wrong: &'static str,
    locked: &'static str,
    pub no_token: &'static str,
    pub db_down: &'static str,
    pub not_found: &'static str,
    pub today: &'static str,
    pub days7: &'static str,
    pub days30: &'static str,
    pub chain: &'static str,
    pub store: &'static str,
    pub receipts: &'static str,
    pub participation: &'static str,
    pub enrolments: &'static str,
    pub active_members: &'static str,
    pub repeat_rate: &'static str,
    pub basket_members: &'static str,
    pub basket_others: &'static str,
    pub points_issued: &'static str,
    pub points_redeemed: &'static str,
    pub vouchers_issued: &'static str,
    pub vouchers_redeemed: &'static str,
    pub points_outstanding: &'static str,
    pub per_day: &'static str,
    pub ranking: &'static str,
    pub rank: &'static str,
    pub fleet: &'static str,
    pub last_seen: &'static str,
    pub sync_lag: &'static str,
    pub boxes: &'static str,
    pub not_seen: &'static str,
    pub ok: &'static str,
    pub alarms: &'static str,
    pub kind: &'static str,
    pub first: &'static str,
    pub second: &'static str,
    pub none: &'static str,
    pub erasures: &'static str,
    pub customer: &'static str,
    pub requested: &'static str,
    pub confirmed: &'static str,
    pub pending: &'static str,
    pub complete: &'static str,
    pub member_receipts: &'static str,
}

const EN: Texts = Texts {
    lang: "en",
    decimal: '.',
    thousands: ',',
    currency_after: false,
    title: "Loyalty · head office",
    login: "Sign in to head office's dashboard",
    token: "Admin token",
    sign_in: "Sign in",
    sign_out: "Sign out",
    wrong: "Wrong token.",
    locked: "Too many wrong tokens: try again in {} s.",
    no_token:
        "The dashboard has no login: set admin.token_file in the hub's configuration and restart.",
    db_down:
        "The database is unavailable: check [database] and that PostgreSQL is running, then reload.",
    not_found: "No such page.",
    today: "Today",
    days7: "7 days",
    days30: "30 days",
    chain: "Chain",
    store: "Store",
    receipts: "Receipts",
    participation: "Participation",
    enrolments: "Enrolments",
    active_members: "Active members (30 days)",
    repeat_rate: "Repeat visits",
    basket_members: "Avg basket, members",
    basket_others: "Avg basket, others",
    points_issued: "Points issued",
    points_redeemed: "Points redeemed",
    vouchers_issued: "Vouchers issued",
    vouchers_redeemed: "Vouchers redeemed",
    points_outstanding: "Points outstanding",
    per_day: "Receipts per day (chain)",
    ranking: "Store ranking",
    rank: "#",
    fleet: "Fleet",
    last_seen: "Last seen (UTC)",
    sync_lag: "Sync lag",
    boxes: "Boxes",
    not_seen: "not seen",
    ok: "ok",
    alarms: "Double redemptions",
    kind: "Kind",
    first: "First",
    second: "Second",
    none: "None.",
    erasures: "Erasure requests",
    customer: "Customer",
    requested: "Requested (UTC)",
    confirmed: "confirmed",
    pending: "pending",
    complete: "complete",
    member_receipts: "Member receipts",
};

const DE: Texts = Texts {
    lang: "de",
    decimal: ',',
    thousands: '.',
    currency_after: true,
    title: "Kundenkarte · Zentrale",
    login: "Anmeldung zum Dashboard der Zentrale",
    token: "Admin-Token",
    sign_in: "Anmelden",
    sign_out: "Abmelden",
    wrong: "Falsches Token.",
    locked: "Zu viele falsche Token: erneut versuchen in {} s.",
    no_token: "Das Dashboard hat keine Anmeldung: admin.token_file in der Konfiguration des Hubs setzen und neu starten.",
    db_down: "Die Datenbank ist nicht erreichbar: [database] prüfen und ob PostgreSQL läuft, dann neu laden.",
    not_found: "Diese Seite gibt es nicht.",
    today: "Heute",
    days7: "7 Tage",
    days30: "30 Tage",
    chain: "Kette",
    store: "Filiale",
    receipts: "Bons",
    participation: "Kartenquote",
    enrolments: "Anmeldungen",
    active_members: "Aktive Mitglieder (30 Tage)",
    repeat_rate: "Wiederkäufe",
    basket_members: "Ø Bon Mitglieder",
    basket_others: "Ø Bon andere",
    points_issued: "Punkte vergeben",
    points_redeemed: "Punkte eingelöst",
    vouchers_issued: "Gutscheine ausgegeben",
    vouchers_redeemed: "Gutscheine eingelöst",
    points_outstanding: "Offene Punkte",
    per_day: "Bons pro Tag (Kette)",
    ranking: "Filialranking",
    rank: "Nr.",
    fleet: "Filialrechner",
    last_seen: "Zuletzt gesehen (UTC)",
    sync_lag: "Sync-Verzug",
    boxes: "Geräte",
    not_seen: "nicht gesehen",
    ok: "ok",
    alarms: "Doppelte Einlösungen",
    kind: "Art",
    first: "Erste",
    second: "Zweite",
    none: "Keine.",
    erasures: "Löschanträge",
    customer: "Kunde",
    requested: "Beantragt (UTC)",
    confirmed: "bestätigt",
    pending: "offen",
    complete: "abgeschlossen",
    member_receipts: "Bons mit Karte",
};

impl Texts {
    /// The texts of `locale` ("de"; anything else: English — the config check allows de/en).
    pub fn of(locale: &str) -> &'static Texts {
        if locale == "de" {
            &DE
        } else {
            &EN
        }
    }

    /// The lockout message.
    pub fn locked(&self, secs: u64) -> String {
        self.locked.replace("{}", &secs.to_string())
    }

    /// `n` with thousands separators.
    pub fn int(&self, n: i64) -> String {
        let digits = n.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(self.thousands);
            }
            out.push(c);
        }
        if n < 0 {
            out.insert(0, '-');
        }
        out
    }

    /// A percentage with one decimal.
    pub fn percent(&self, p: f64) -> String {
        format!("{p:.1} %").replace('.', &self.decimal.to_string())
    }

    /// A decimal amount as PostgreSQL prints it ("1234.50") in the locale with `currency`.
    pub fn money(&self, amount: &str, currency: &str) -> String {
        let (units, cents) = amount.split_once('.').unwrap_or((amount, "00"));
        let whole = units
            .parse::<i64>()
            .map(|u| self.int(u))
            .unwrap_or_else(|_| units.to_string());
        let number = format!("{whole}{}{cents:0<2}", self.decimal);
        if self.currency_after {
            format!("{number} {currency}")
        } else {
            format!("{currency}{number}")
        }
    }

    /// A duration in seconds as "42 s", "5 min", "3 h", "2 d".
    pub fn lag(&self, secs: i64) -> String {
        let day = if self.lang == "de" { "T" } else { "d" };
        match secs {
            s if s < 120 => format!("{s} s"),
            s if s < 7200 => format!("{} min", s / 60),
            s if s < 172_800 => format!("{} h", s / 3600),
            s => format!("{} {day}", s / 86_400),
        }
    }
}

/// A bar chart of `values` (oldest first) labelled by `labels`; `second` (same length) is drawn
/// over the first as the highlighted part (e.g. member receipts within receipts).
pub fn bars(values: &[i64], second: &[i64], labels: &[String]) -> Markup {
    let (width, height) = (300.0_f64, 56.0_f64);
    let n = values.len().max(1) as f64;
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = width / n;
    let bar = (slot * 0.8).max(1.0);
    let h = |v: i64| {
        if v > 0 {
            ((v as f64) / max * (height - 2.0)).max(2.0)
        } else {
            2.0
        }
    };
    html! {
        svg class="chart" viewBox=(format!("0 0 {width} {height}")) preserveAspectRatio="none" role="img" {
            @for (i, value) in values.iter().enumerate() {
                @let label = labels.get(i).map(String::as_str).unwrap_or("");
                rect x=(format!("{:.1}", i as f64 * slot)) y=(format!("{:.1}", height - h(*value)))
                    width=(format!("{bar:.1}")) height=(format!("{:.1}", h(*value))) class=[(*value <= 0).then_some("zero")] {
                    title { (label) ": " (value) }
                }
                @if let Some(part) = second.get(i).filter(|p| **p > 0) {
                    rect class="part" x=(format!("{:.1}", i as f64 * slot)) y=(format!("{:.1}", height - h(*part)))
                        width=(format!("{bar:.1}")) height=(format!("{:.1}", h(*part))) {
                        title { (label) ": " (part) }
                    }
                }
            }
        }
    }
}

/// A horizontal bar showing `value` out of `max` (the ranking's column).
pub fn meter(value: i64, max: i64) -> Markup {
    let w = if max > 0 {
        (value.max(0) as f64 / max as f64 * 100.0).max(1.0)
    } else {
        1.0
    };
    html! {
        svg class="meter" viewBox="0 0 100 8" preserveAspectRatio="none" role="img" {
            rect x="0" y="0" width=(format!("{w:.1}")) height="8" { title { (value) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_follow_the_locale() {
        assert_eq!(Texts::of("de").money("1234.5", "€"), "1.234,50 €");
        assert_eq!(Texts::of("en").money("1234.50", "€"), "€1,234.50");
        assert_eq!(Texts::of("en").int(-1_000_000), "-1,000,000");
        assert_eq!(Texts::of("de").percent(80.0), "80,0 %");
    }
}
