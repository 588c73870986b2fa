//! The staff page's two languages (`store.locale`: `de` or `en`): every word the page shows, and
//! amounts, counts and times in the store's format (`1.234,56 €` in German, `€1,234.56` in
//! English).

use loyalty_core::money::Money;

/// Language and number format of the page.
#[derive(Debug, Clone)]
pub struct Locale {
    /// The words.
    pub t: &'static Texts,
    german: bool,
    currency: String,
    decimals: u32,
    time_zone: jiff::tz::TimeZone,
}

impl Locale {
    /// The locale `code` (`de` or `en`; anything else is English) for amounts in `currency`.
    pub fn new(code: &str, currency: &str, time_zone: jiff::tz::TimeZone) -> Locale {
        let german = code == "de";
        Locale {
            t: if german { &DE } else { &EN },
            german,
            currency: currency.to_string(),
            decimals: loyalty_core::money::currency_decimals(currency),
            time_zone,
        }
    }

    /// The `lang` attribute of the page.
    pub fn lang(&self) -> &'static str {
        if self.german {
            "de"
        } else {
            "en"
        }
    }

    /// The currency's decimals.
    pub fn decimals(&self) -> u32 {
        self.decimals
    }

    /// An amount in the store's format: `12,34 €` (de) or `€12.34` (en).
    pub fn money(&self, amount: Money) -> String {
        let minor = amount.0;
        let negative = minor < 0;
        let minor = minor.unsigned_abs();
        let scale = 10u64.pow(self.decimals);
        let (units, cents) = (minor / scale, minor % scale);
        let (group, point) = if self.german { ('.', ',') } else { (',', '.') };
        let mut number = group_digits(units, group);
        if self.decimals > 0 {
            number.push(point);
            number.push_str(&format!("{cents:0width$}", width = self.decimals as usize));
        }
        let symbol = match self.currency.as_str() {
            "EUR" => "€",
            "GBP" => "£",
            "USD" => "$",
            other => other,
        };
        let sign = if negative { "-" } else { "" };
        if self.german {
            format!("{sign}{number}\u{a0}{symbol}")
        } else if symbol.len() == 3 && symbol.is_ascii() {
            format!("{sign}{symbol}\u{a0}{number}")
        } else {
            format!("{sign}{symbol}{number}")
        }
    }

    /// A whole number with the language's thousands separator.
    pub fn count(&self, value: i64) -> String {
        let sign = if value < 0 { "-" } else { "" };
        let group = if self.german { '.' } else { ',' };
        format!("{sign}{}", group_digits(value.unsigned_abs(), group))
    }

    /// A share in percent with one decimal (`42,5 %` / `42.5%`); "–" when there is no base.
    pub fn percent(&self, part: u64, whole: u64) -> String {
        if whole == 0 {
            return "–".into();
        }
        let tenths = (part * 1000 + whole / 2) / whole;
        if self.german {
            format!("{},{}\u{a0}%", tenths / 10, tenths % 10)
        } else {
            format!("{}.{}%", tenths / 10, tenths % 10)
        }
    }

    /// A time of day in the store's zone (`14:03:07`).
    pub fn time(&self, at: jiff::Timestamp) -> String {
        at.to_zoned(self.time_zone.clone())
            .strftime("%H:%M:%S")
            .to_string()
    }

    /// A date and time in the store's zone (`02.12.2026 14:03` / `2026-12-02 14:03`).
    pub fn date_time(&self, at: jiff::Timestamp) -> String {
        let zoned = at.to_zoned(self.time_zone.clone());
        if self.german {
            zoned.strftime("%d.%m.%Y %H:%M").to_string()
        } else {
            zoned.strftime("%Y-%m-%d %H:%M").to_string()
        }
    }

    /// A day label for charts (`02.12.` / `12-02`).
    pub fn day(&self, day: jiff::civil::Date) -> String {
        if self.german {
            day.strftime("%d.%m.").to_string()
        } else {
            day.strftime("%m-%d").to_string()
        }
    }

    /// The store's time zone.
    pub fn time_zone(&self) -> &jiff::tz::TimeZone {
        &self.time_zone
    }
}

fn group_digits(mut value: u64, separator: char) -> String {
    let mut groups = Vec::new();
    loop {
        groups.push(value % 1000);
        value /= 1000;
        if value == 0 {
            break;
        }
    }
    let mut out = String::new();
    for (i, group) in groups.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&group.to_string());
        } else {
            out.push(separator);
            out.push_str(&format!("{group:03}"));
        }
    }
    out
}

/// Every word of the page in one language (field names say where each is used).
#[allow(missing_docs)]
#[derive(Debug)]
pub struct Texts {
    pub title: &'static str,
    pub nav_lanes: &'static str,
    pub nav_customer: &'static str,
    pub nav_figures: &'static str,
    pub nav_devices: &'static str,
    pub logout: &'static str,
    pub login_title: &'static str,
    pub login_token: &'static str,
    pub login_or_pin: &'static str,
    pub login_name: &'static str,
    pub login_pin: &'static str,
    pub login_button: &'static str,
    pub login_wrong: &'static str,
    pub login_locked: &'static str,
    pub lanes_title: &'static str,
    pub lanes_empty: &'static str,
    pub lane: &'static str,
    pub since: &'static str,
    pub checked_out: &'static str,
    pub new_member: &'static str,
    pub search_label: &'static str,
    pub search_button: &'static str,
    pub not_found: &'static str,
    pub customer_id: &'static str,
    pub card: &'static str,
    pub name: &'static str,
    pub tier: &'static str,
    pub consent: &'static str,
    pub unknown: &'static str,
    pub balance: &'static str,
    pub redeemable: &'static str,
    pub pending: &'static str,
    pub enrolled: &'static str,
    pub open_vouchers: &'static str,
    pub no_vouchers: &'static str,
    pub offers: &'static str,
    pub no_offers: &'static str,
    pub offer_until: &'static str,
    pub offer_activated: &'static str,
    pub purchases: &'static str,
    pub no_purchases: &'static str,
    pub total: &'static str,
    pub points: &'static str,
    pub top_categories: &'static str,
    pub goodwill_title: &'static str,
    pub goodwill_value: &'static str,
    pub goodwill_button: &'static str,
    pub goodwill_issued: &'static str,
    pub goodwill_max: &'static str,
    pub valid_until: &'static str,
    pub voucher: &'static str,
    pub print: &'static str,
    pub printed: &'static str,
    pub figures_title: &'static str,
    pub today: &'static str,
    pub days7: &'static str,
    pub days30: &'static str,
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
    pub redemption_rate: &'static str,
    pub points_outstanding: &'static str,
    pub devices_title: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    pub broker: &'static str,
    pub storage: &'static str,
    pub sync: &'static str,
    pub sync_lag: &'static str,
    pub sync_off: &'static str,
    pub clock: &'static str,
    pub disk_free: &'static str,
    pub error: &'static str,
}

/// German.
pub static DE: Texts = Texts {
    title: "Kundenbindung – Filiale",
    nav_lanes: "Kassen",
    nav_customer: "Kunde",
    nav_figures: "Kennzahlen",
    nav_devices: "Geräte",
    logout: "Abmelden",
    login_title: "Anmelden",
    login_token: "Zugangsschlüssel",
    login_or_pin: "oder mit Name und PIN",
    login_name: "Name",
    login_pin: "PIN",
    login_button: "Anmelden",
    login_wrong: "Anmeldung abgelehnt: Schlüssel oder PIN falsch.",
    login_locked: "Zu viele Fehlversuche. Bitte warten (Sekunden):",
    lanes_title: "Jetzt an den Kassen",
    lanes_empty: "Noch keine Karte gescannt.",
    lane: "Kasse",
    since: "seit",
    checked_out: "bezahlt, Punkte",
    new_member: "neu angemeldet",
    search_label: "Kartennummer, Kunden-ID, Telefon oder E-Mail",
    search_button: "Suchen",
    not_found: "Kein Kunde gefunden.",
    customer_id: "Kunden-ID",
    card: "Karte",
    name: "Name",
    tier: "Stufe",
    consent: "Einwilligung Werbung",
    unknown: "unbekannt",
    balance: "Punktestand",
    redeemable: "einlösbar",
    pending: "noch nicht fällig",
    enrolled: "Mitglied seit",
    open_vouchers: "Offene Gutscheine",
    no_vouchers: "Keine offenen Gutscheine.",
    offers: "Persönliche Angebote",
    no_offers: "Keine aktiven Angebote (oder keine Einwilligung zur Personalisierung).",
    offer_until: "bis",
    offer_activated: "in der App aktiviert",
    purchases: "Letzte Einkäufe in dieser Filiale",
    no_purchases: "Noch keine Einkäufe.",
    total: "Summe",
    points: "Punkte",
    top_categories: "Bevorzugte Warengruppen",
    goodwill_title: "Kulanzgutschein ausstellen",
    goodwill_value: "Wert",
    goodwill_button: "Ausstellen",
    goodwill_issued: "Gutschein ausgestellt",
    goodwill_max: "höchstens",
    valid_until: "gültig bis",
    voucher: "Gutschein",
    print: "Drucken auf",
    printed: "Gedruckt auf",
    figures_title: "Kennzahlen der Filiale",
    today: "Heute",
    days7: "7 Tage",
    days30: "30 Tage",
    receipts: "Bons",
    participation: "Bons mit Karte",
    enrolments: "Neuanmeldungen",
    active_members: "Aktive Mitglieder",
    repeat_rate: "Wiederkehrende Mitglieder",
    basket_members: "Ø Bon Mitglieder",
    basket_others: "Ø Bon Nichtmitglieder",
    points_issued: "Punkte vergeben",
    points_redeemed: "Punkte eingelöst",
    vouchers_issued: "Gutscheine ausgegeben",
    vouchers_redeemed: "Gutscheine eingelöst",
    redemption_rate: "Einlösequote",
    points_outstanding: "Offene Punkte",
    devices_title: "Geräte und Verbindungen",
    up: "in Betrieb",
    down: "gestört",
    broker: "MQTT-Broker",
    storage: "Datenbank",
    sync: "Zentrale (Sync)",
    sync_lag: "Rückstand",
    sync_off: "abgeschaltet (crm.enabled = false)",
    clock: "Uhrzeit",
    disk_free: "Freier Speicher",
    error: "Fehler",
};

/// English.
pub static EN: Texts = Texts {
    title: "Loyalty – store",
    nav_lanes: "Lanes",
    nav_customer: "Customer",
    nav_figures: "Figures",
    nav_devices: "Devices",
    logout: "Log out",
    login_title: "Log in",
    login_token: "Staff token",
    login_or_pin: "or with your name and PIN",
    login_name: "Name",
    login_pin: "PIN",
    login_button: "Log in",
    login_wrong: "Login refused: wrong token or PIN.",
    login_locked: "Too many failed logins. Wait (seconds):",
    lanes_title: "Now at the lanes",
    lanes_empty: "No card scanned yet.",
    lane: "Lane",
    since: "since",
    checked_out: "paid, points",
    new_member: "just enrolled",
    search_label: "Card number, customer id, phone or e-mail",
    search_button: "Search",
    not_found: "No customer found.",
    customer_id: "Customer id",
    card: "Card",
    name: "Name",
    tier: "Tier",
    consent: "Marketing consent",
    unknown: "unknown",
    balance: "Balance",
    redeemable: "redeemable",
    pending: "pending",
    enrolled: "Member since",
    open_vouchers: "Open vouchers",
    no_vouchers: "No open vouchers.",
    offers: "Personal offers",
    no_offers: "No active offers (or no consent to personalisation).",
    offer_until: "until",
    offer_activated: "activated in the app",
    purchases: "Last purchases in this store",
    no_purchases: "No purchases yet.",
    total: "Total",
    points: "points",
    top_categories: "Favourite categories",
    goodwill_title: "Issue a goodwill voucher",
    goodwill_value: "Value",
    goodwill_button: "Issue",
    goodwill_issued: "Voucher issued",
    goodwill_max: "at most",
    valid_until: "valid until",
    voucher: "Voucher",
    print: "Print on",
    printed: "Printed on",
    figures_title: "Store figures",
    today: "Today",
    days7: "7 days",
    days30: "30 days",
    receipts: "Receipts",
    participation: "Receipts with a card",
    enrolments: "Enrolments",
    active_members: "Active members",
    repeat_rate: "Returning members",
    basket_members: "Avg basket members",
    basket_others: "Avg basket non-members",
    points_issued: "Points issued",
    points_redeemed: "Points redeemed",
    vouchers_issued: "Vouchers issued",
    vouchers_redeemed: "Vouchers redeemed",
    redemption_rate: "Redemption rate",
    points_outstanding: "Points outstanding",
    devices_title: "Devices and links",
    up: "up",
    down: "down",
    broker: "MQTT broker",
    storage: "Storage",
    sync: "Head office sync",
    sync_lag: "lag",
    sync_off: "off (crm.enabled = false)",
    clock: "Clock",
    disk_free: "Disk free",
    error: "Error",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_follow_the_store_locale() {
        let de = Locale::new("de", "EUR", jiff::tz::TimeZone::UTC);
        let en = Locale::new("en", "EUR", jiff::tz::TimeZone::UTC);
        assert_eq!(de.money(Money(1234)), "12,34\u{a0}€");
        assert_eq!(en.money(Money(1234)), "€12.34");
        assert_eq!(de.money(Money(123_456_789)), "1.234.567,89\u{a0}€");
        assert_eq!(en.money(Money(-5)), "-€0.05");
        assert_eq!(de.percent(1, 3), "33,3\u{a0}%");
        assert_eq!(en.count(1_000_000), "1,000,000");
    }
}
