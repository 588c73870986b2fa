//! A receipt profile as data (`[receipt_profiles.NAME]` in the configuration file): patterns
//! as texts, deserialisable, not yet compiled. [`super::ReceiptProfile`] compiles it and names
//! every problem.

use serde::Deserialize;

/// How printed receipt text is read: regular expressions with named groups, matched against
/// each printed line (decoded, payment card numbers already masked).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReceiptProfileConfig {
    /// An item line; groups `name`, `amount`, optional `qty`, `unit_price`, `sku`, `category`.
    /// Only lines before the total line are items.
    pub item_line: String,
    /// A line following an item that carries its quantity (`  2 x 1,49`); groups `qty` and
    /// optional `unit_price`. Optional.
    pub qty_line: Option<String>,
    /// The total line; group `total`.
    pub total: String,
    /// The receipt number; group `receipt_id`.
    pub receipt_id: String,
    /// How the gateway's receipt id is built from the printed number: placeholders
    /// `{receipt_id}` and `{lane}` (use `"{lane}-{receipt_id}"` when every till numbers its
    /// receipts from 1). Applies to a return's original receipt number too.
    pub receipt_id_format: String,
    /// The date/time; groups `date` and optional `time`.
    pub date: Option<String>,
    /// Format of the `date` group (strftime, `%d.%m.%Y`).
    pub date_format: Option<String>,
    /// Format of the `time` group (strftime, `%H:%M`).
    pub time_format: Option<String>,
    /// A printed loyalty card number; group `card`.
    pub card: Option<String>,
    /// A return marker; group `original` names the original receipt.
    pub return_marker: Option<String>,
    /// Lines to skip even if they look like items (subtotals, tax summaries).
    pub ignore: Vec<String>,
    /// Decimal separator in printed amounts (`","` in Germany).
    pub decimal_separator: String,
    /// Digit prefixes of the program's own card numbers that are never masked as payment cards
    /// even when they pass the Luhn check (`["7777"]`). Payment card ranges are refused.
    pub pan_exempt_prefixes: Vec<String>,
}

impl Default for ReceiptProfileConfig {
    fn default() -> Self {
        ReceiptProfileConfig {
            item_line: String::new(),
            qty_line: None,
            total: String::new(),
            receipt_id: String::new(),
            receipt_id_format: "{receipt_id}".into(),
            date: None,
            date_format: None,
            time_format: None,
            card: None,
            return_marker: None,
            ignore: Vec::new(),
            decimal_separator: ".".into(),
            pan_exempt_prefixes: Vec::new(),
        }
    }
}
