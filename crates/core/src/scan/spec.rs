//! Which card numbers belong to the program, as data (`[cards]` in the configuration file):
//! deserialisable, not yet checked. [`super::CardMatcher::from_config`] builds the matcher.

use serde::Deserialize;

/// A range of card numbers belonging to the program (inclusive, same length).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct CardRangeConfig {
    /// First number.
    pub from: String,
    /// Last number.
    pub to: String,
}

/// Which card numbers belong to the program, and how app cards look.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CardsConfig {
    /// Number prefixes of program cards (GS1 restricted circulation `2x` / `04x`, never
    /// `98x`/`99` which are coupons and refund receipts).
    pub prefixes: Vec<String>,
    /// Explicit number ranges (a number matches when it has the range's length and lies
    /// between `from` and `to`).
    pub ranges: Vec<CardRangeConfig>,
    /// Pattern for the customer app's QR card; group `card` is the card number (taken as a
    /// program card: the pattern is the program's). Empty: no app cards.
    pub app_qr_pattern: String,
    /// Whether an unknown card inside the program's numbers enrolls a customer offline.
    pub enroll_unknown: bool,
    /// Whether NFC card UIDs are accepted as cards (enrolled by UID, number `nfc:<HEX>`).
    pub accept_nfc_uid: bool,
}

impl Default for CardsConfig {
    fn default() -> Self {
        CardsConfig {
            prefixes: vec!["299".into()],
            ranges: Vec::new(),
            app_qr_pattern: r"^https://app\.example\.com/card/(?P<card>[0-9]{8,19})$".into(),
            enroll_unknown: true,
            accept_nfc_uid: true,
        }
    }
}
