//! `[store]`: the store's identity (id, name, time zone, currency).

use super::{Config, Errors, Section};
use serde::Deserialize;

/// Who this store is.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// Store id as head office knows it; used in MQTT topics and CRM URLs.
    pub id: String,
    /// Display name.
    pub name: String,
    /// IANA time zone (`Europe/Berlin`); promotions' date and weekday windows use it.
    pub timezone: String,
    /// ISO 4217 currency code of the tills.
    pub currency: String,
    /// Distrust the wall clock while the kernel says NTP has not synchronised it. Turn off only
    /// in a store without NTP (the clock is then judged by its floor alone).
    pub require_ntp_sync: bool,
    /// Language and number format of the staff page: `"de"` or `"en"`. When not set: `de` for
    /// a store in a German-speaking time zone (Berlin, Vienna, Zurich, Busingen), else `en`.
    pub locale: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            id: String::new(),
            name: String::new(),
            timezone: "UTC".into(),
            currency: "EUR".into(),
            require_ntp_sync: true,
            locale: None,
        }
    }
}

impl StoreConfig {
    /// The staff page's language: `store.locale`, else one derived from the time zone.
    pub fn locale(&self) -> &str {
        match self.locale.as_deref() {
            Some(locale) => locale,
            None => match self.timezone.as_str() {
                "Europe/Berlin" | "Europe/Vienna" | "Europe/Zurich" | "Europe/Busingen" => "de",
                _ => "en",
            },
        }
    }

    /// The store's time zone (UTC when the configured one is unknown, which `validate` refuses).
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(&self.timezone).unwrap_or(jiff::tz::TimeZone::UTC)
    }
}

impl Section for StoreConfig {
    fn validate(&self, path: &str, _config: &Config, errors: &mut Errors) {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 32
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        errors.check(
            id_ok,
            format!("{path}.id"),
            "required: 1 to 32 letters, digits, '-' or '_' (it is used in MQTT topics and CRM URLs)",
        );
        errors.check(
            jiff::tz::TimeZone::get(&self.timezone).is_ok(),
            format!("{path}.timezone"),
            format!(
                "unknown time zone '{}' (use an IANA name such as \"Europe/Berlin\")",
                self.timezone
            ),
        );
        errors.check(
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase()),
            format!("{path}.currency"),
            "must be an ISO 4217 code such as \"EUR\"",
        );
        errors.check(
            matches!(self.locale.as_deref(), None | Some("de") | Some("en")),
            format!("{path}.locale"),
            "must be \"de\" or \"en\" (the staff page's language and number format)",
        );
    }
}
