//! The till's JSON contract (SPEC 2.3): receipt JSON in, lane responses out. Owns the
//! conversion between these wire formats and the core's types; amounts are read from the JSON
//! text exactly (a JSON number is never parsed through a float).
//!
//! Invariant: nothing outside this module knows the receipt JSON's or the responses' field names.

use loyalty_core::money::Money;
use loyalty_core::receipt::{return_in_core_signs, Receipt, ReceiptKind, ReceiptLine};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

mod redeem;
pub use redeem::{parse_redeem, parse_void, RedeemMessage, RedeemRequest, RedemptionResultJson};

/// Why a receipt message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not JSON, or not the receipt shape.
    #[error("malformed receipt JSON: {0}")]
    Malformed(String),
    /// A field with an unusable value.
    #[error("{field}: {message}")]
    Field {
        /// The field (`lines[2].amount`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptJson {
    receipt_id: String,
    #[serde(default)]
    lane: Option<String>,
    timestamp: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    original_receipt_id: Option<String>,
    currency: String,
    total: Box<RawValue>,
    #[serde(default)]
    card: Option<String>,
    #[serde(default)]
    rewards: Vec<String>,
    #[serde(default)]
    redemptions: Vec<String>,
    lines: Vec<LineJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineJson {
    sku: String,
    #[serde(default)]
    name: String,
    qty: Box<RawValue>,
    #[serde(default)]
    unit_price: Option<Box<RawValue>>,
    amount: Box<RawValue>,
    #[serde(default)]
    category: Option<String>,
}

/// Reads the decimal text of a JSON string or number without going through a float.
pub(crate) fn decimal_text(raw: &RawValue, field: &str) -> Result<String, WireError> {
    let text = raw.get().trim();
    if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(|err| WireError::Field {
            field: field.to_string(),
            message: err.to_string(),
        })
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Ok(text.to_string())
    } else {
        Err(WireError::Field {
            field: field.to_string(),
            message: format!("expected a decimal string such as \"12.34\", found {text}"),
        })
    }
}

fn money(raw: &RawValue, field: &str, decimals: u32) -> Result<Money, WireError> {
    let text = decimal_text(raw, field)?;
    Money::parse(&text, decimals).map_err(|err| WireError::Field {
        field: field.to_string(),
        message: err.to_string(),
    })
}

/// Parses a till's receipt message. `topic_lane` is the lane named by the topic; a `lane`
/// field that disagrees with it is refused. `decimals` is the store currency's.
pub fn parse_receipt(
    payload: &[u8],
    topic_lane: &str,
    decimals: u32,
) -> Result<Receipt, WireError> {
    let json: ReceiptJson =
        serde_json::from_slice(payload).map_err(|err| WireError::Malformed(err.to_string()))?;
    if let Some(lane) = &json.lane {
        if lane != topic_lane {
            return Err(WireError::Field {
                field: "lane".into(),
                message: format!("says lane {lane} but was sent on lane {topic_lane}'s topic"),
            });
        }
    }
    let timestamp: jiff::Timestamp = json.timestamp.parse().map_err(|err| WireError::Field {
        field: "timestamp".into(),
        message: format!("not an RFC 3339 time: {err}"),
    })?;
    let kind = match (json.kind.as_deref(), json.original_receipt_id) {
        (None | Some("sale"), _) => ReceiptKind::Sale,
        (Some("return"), Some(original_receipt_id)) => ReceiptKind::Return {
            original_receipt_id,
        },
        (Some("return"), None) => {
            return Err(WireError::Field {
                field: "original_receipt_id".into(),
                message: "required for kind \"return\"".into(),
            })
        }
        (Some(other), _) => {
            return Err(WireError::Field {
                field: "kind".into(),
                message: format!("'{other}' is neither \"sale\" nor \"return\""),
            })
        }
    };
    let is_return = matches!(kind, ReceiptKind::Return { .. });
    let mut lines = Vec::with_capacity(json.lines.len());
    for (index, line) in json.lines.iter().enumerate() {
        let at = |field: &str| format!("lines[{index}].{field}");
        let qty_text = decimal_text(&line.qty, &at("qty"))?;
        let qty = Money::parse(&qty_text, 3).map_err(|err| WireError::Field {
            field: at("qty"),
            message: err.to_string(),
        })?;
        let unit_price = match &line.unit_price {
            Some(raw) => Some(money(raw, &at("unit_price"), decimals)?),
            None => None,
        };
        let amount = money(&line.amount, &at("amount"), decimals)?;
        lines.push(ReceiptLine {
            sku: line.sku.clone(),
            name: line.name.clone(),
            qty_milli: qty.0,
            unit_price: unit_price.map(|p| Money(p.0.abs())),
            amount,
            category: line.category.clone(),
        });
    }
    let mut total = money(&json.total, "total", decimals)?;
    if is_return {
        // Tills sign a return's amounts either way (SPEC 2.3); the core wants what was
        // returned, positive.
        return_in_core_signs(&mut total, &mut lines);
    }
    Ok(Receipt {
        id: json.receipt_id,
        lane: topic_lane.to_string(),
        timestamp,
        kind,
        currency: json.currency,
        total,
        card: json.card.filter(|card| !card.is_empty()),
        rewards: json.rewards,
        redemptions: json.redemptions,
        lines,
    })
}

/// The receipt id of a receipt message, read leniently: whatever else is wrong with the
/// message (an unreadable amount, a missing field, even broken JSON after the id), the id is
/// returned when the message names one (a string, or a number's text, 1 to 64 characters), so
/// that the lane's error answer can say which receipt it refuses. Money is never read here.
pub fn readable_receipt_id(payload: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(default)]
        receipt_id: Option<serde_json::Value>,
    }
    let id = match serde_json::from_slice::<IdOnly>(payload) {
        Ok(IdOnly {
            receipt_id: Some(serde_json::Value::String(id)),
        }) => Some(id),
        Ok(IdOnly {
            receipt_id: Some(serde_json::Value::Number(number)),
        }) => Some(number.to_string()),
        Ok(_) => None,
        // Not JSON as a whole: look for the id's key and read the string after it.
        Err(_) => receipt_id_in_text(payload),
    };
    id.filter(|id| !id.is_empty() && id.chars().count() <= 64)
}

/// `"receipt_id": "<string>"` anywhere in broken JSON text.
fn receipt_id_in_text(payload: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(payload);
    let key = "\"receipt_id\"";
    let after = &text[text.find(key)? + key.len()..];
    let value = after.trim_start().strip_prefix(':')?.trim_start();
    if !value.starts_with('"') {
        return None;
    }
    // The closing quote: the first one not escaped by a backslash.
    let mut escaped = false;
    let end = value
        .char_indices()
        .skip(1)
        .find(|&(_, c)| {
            let close = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            close
        })?
        .0;
    serde_json::from_str(&value[..=end]).ok()
}

/// A voucher's discount as the till must apply it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DiscountJson {
    /// A fixed amount off.
    AmountOff {
        /// Decimal text.
        amount: String,
    },
    /// A percentage off.
    PercentOff {
        /// Whole percent.
        percent: u32,
    },
    /// One item free.
    FreeItem {
        /// The item's SKU.
        sku: String,
    },
}

/// A voucher the till should print, carried by a `points` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedVoucherJson {
    /// Voucher id.
    pub voucher_id: String,
    /// The text encoded in the QR code.
    pub text: String,
    /// ESC/POS bytes printing the QR code, base64.
    pub escpos_base64: String,
    /// Value as decimal text.
    pub value: String,
    /// Last day of validity (RFC 3339).
    pub valid_until: String,
}

/// What a `customer` / `enrolled` answer carries for the cashier's screen besides name, tier
/// and balance (SPEC 2.3). Bounded so that the whole answer stays under
/// [`Screen::MAX_ANSWER_BYTES`]: at most [`Screen::MAX_VOUCHERS`] vouchers (soonest to expire
/// first), [`Screen::MAX_OFFERS`] offers with texts cut to [`Screen::MAX_TEXT_CHARS`]
/// characters, [`Screen::MAX_HINTS`] hints; `more_vouchers` / `more_offers` count what was
/// left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Screen {
    /// Points the customer can spend now (vested), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redeemable: Option<i64>,
    /// Her open vouchers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vouchers: Vec<ScreenVoucher>,
    /// Open vouchers not listed (beyond the bound).
    #[serde(skip_serializing_if = "is_zero")]
    pub more_vouchers: u32,
    /// Her active offers (only with `profiling` consent).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub offers: Vec<ScreenOffer>,
    /// Active offers not listed (beyond the bound).
    #[serde(skip_serializing_if = "is_zero")]
    pub more_offers: u32,
    /// Short hints for the cashier (`birthday_this_week`, `tier:gold`, `reward_in:120`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Screen {
    /// Vouchers listed at most.
    pub const MAX_VOUCHERS: usize = 5;
    /// Offers listed at most.
    pub const MAX_OFFERS: usize = 5;
    /// Hints listed at most.
    pub const MAX_HINTS: usize = 2;
    /// Characters of an offer's text kept.
    pub const MAX_TEXT_CHARS: usize = 40;
    /// The bound on a whole `customer` / `enrolled` answer's JSON: the gateway leaves offers,
    /// then vouchers, then hints out (counted in `more_*`) until it fits.
    pub const MAX_ANSWER_BYTES: usize = 1024;

    /// Cuts `text` to [`Screen::MAX_TEXT_CHARS`] characters (an ellipsis marks a cut).
    pub fn short_text(text: &str) -> String {
        let clean: String = text.chars().filter(|c| !c.is_control()).collect();
        if clean.chars().count() <= Self::MAX_TEXT_CHARS {
            return clean;
        }
        let mut cut: String = clean.chars().take(Self::MAX_TEXT_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

/// An open voucher on the till's screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScreenVoucher {
    /// Voucher id.
    pub voucher_id: String,
    /// Value as decimal text (or `10%`).
    pub value: String,
    /// End of validity (RFC 3339).
    pub valid_until: String,
}

/// An active offer on the till's screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScreenOffer {
    /// Offer id.
    pub offer_id: String,
    /// Short text (at most [`Screen::MAX_TEXT_CHARS`] characters).
    pub text: String,
    /// Amount the till takes off when the offer's articles are bought (decimal text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_off: Option<String>,
}

/// An answer to a lane on `{prefix}/lane/{lane}/response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// After a card scan of a known customer.
    Customer {
        /// Lane.
        lane: String,
        /// Customer id.
        customer_id: String,
        /// Card as scanned (normalised).
        card: String,
        /// Display name, if known.
        name: Option<String>,
        /// Tier name.
        tier: String,
        /// Points balance.
        balance: i64,
        /// Set when this card replaced another scanned at the lane before the receipt.
        #[serde(skip_serializing_if = "Option::is_none")]
        replaced_card: Option<String>,
        /// What the till's screen shows besides (redeemable points, open vouchers, offers,
        /// hints); each left out when empty.
        #[serde(flatten)]
        screen: Screen,
    },
    /// After a scan of an unknown card of the program's range: a customer was enrolled.
    Enrolled {
        /// Lane.
        lane: String,
        /// New customer id.
        customer_id: String,
        /// Card.
        card: String,
        /// Tier name.
        tier: String,
        /// Points balance (0).
        balance: i64,
        /// Set when this card replaced another scanned at the lane before the receipt.
        #[serde(skip_serializing_if = "Option::is_none")]
        replaced_card: Option<String>,
        /// What the till's screen shows besides (see [`Screen`]).
        #[serde(flatten)]
        screen: Screen,
    },
    /// After a receipt (or a card attached to one retroactively).
    Points {
        /// Lane.
        lane: String,
        /// Receipt id.
        receipt_id: String,
        /// Customer id, when the receipt has one.
        customer_id: Option<String>,
        /// Points earned (negative for a return).
        earned: i64,
        /// Balance after the receipt.
        balance: Option<i64>,
        /// True when this receipt had been applied before (nothing changed).
        duplicate: bool,
        /// Vouchers issued by this receipt, for the till to print.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        vouchers: Vec<IssuedVoucherJson>,
        /// Categories of its lines that `rules.categories` does not list: the receipt was
        /// applied, those lines earned nothing (absent when there are none).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        unknown_categories: Vec<String>,
        /// What the receipt did with each reservation it named in `redemptions` (absent when
        /// it named none).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        redemptions: Vec<RedemptionResultJson>,
    },
    /// After a voucher scan.
    Reward {
        /// Lane.
        lane: String,
        /// Voucher id (empty when the code could not be read at all).
        voucher_id: String,
        /// `valid`, `redeemed`, `expired`, `invalid`, `not_yet_valid` (and `reserved`).
        status: String,
        /// The discount to apply, when valid.
        #[serde(skip_serializing_if = "Option::is_none")]
        discount: Option<DiscountJson>,
        /// Why, when not valid (and when/where for `redeemed`).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// After a `redeem` request: whether the points are held for the lane's sale.
    Redemption {
        /// Lane.
        lane: String,
        /// The till's reference.
        reference: String,
        /// `reserved`, `insufficient`, `unknown_customer`, `expired`, `committed`,
        /// `released` or `conflict` (the reference is used for another customer or amount).
        status: String,
        /// Points held (or spent); for `insufficient`, the points asked for.
        points: i64,
        /// The discount the till applies, when `reserved` or `committed`.
        #[serde(skip_serializing_if = "Option::is_none")]
        discount: Option<DiscountJson>,
        /// The customer's points still available for redemption after this one.
        #[serde(skip_serializing_if = "Option::is_none")]
        available: Option<i64>,
        /// When a reservation runs out unless a receipt names it (RFC 3339).
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at: Option<String>,
    },
    /// After a `void`: every reservation of the lane's open sale was released.
    Void {
        /// Lane.
        lane: String,
        /// References of the points reservations released.
        redemptions: Vec<String>,
        /// Ids of the vouchers released.
        vouchers: Vec<String>,
    },
    /// Anything the gateway refuses.
    Error {
        /// Lane.
        lane: String,
        /// The receipt concerned, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        receipt_id: Option<String>,
        /// Stable machine-readable code (`malformed_receipt`, `invalid_receipt`,
        /// `unknown_card`, `bad_scan`, `storage`, ...).
        code: String,
        /// Human-readable explanation.
        message: String,
    },
}

impl Response {
    /// An error answer.
    pub fn error(
        lane: &str,
        receipt_id: Option<&str>,
        code: &str,
        message: impl Into<String>,
    ) -> Self {
        Response::Error {
            lane: lane.to_string(),
            receipt_id: receipt_id.map(str::to_string),
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The lane this answer goes to.
    pub fn lane(&self) -> &str {
        match self {
            Response::Customer { lane, .. }
            | Response::Enrolled { lane, .. }
            | Response::Points { lane, .. }
            | Response::Reward { lane, .. }
            | Response::Redemption { lane, .. }
            | Response::Void { lane, .. }
            | Response::Error { lane, .. } => lane,
        }
    }

    /// The JSON bytes sent to the till.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{\"type\":\"error\"}".to_vec())
    }

    /// Leaves a `customer` / `enrolled` answer's screen items out (offers first, then vouchers,
    /// then hints; counted in `more_offers` / `more_vouchers`) until its JSON is at most
    /// [`Screen::MAX_ANSWER_BYTES`]. Other answers are left as they are.
    pub fn fit_screen(&mut self) {
        while self.to_json().len() > Screen::MAX_ANSWER_BYTES {
            let (Response::Customer { screen, .. } | Response::Enrolled { screen, .. }) = self
            else {
                return;
            };
            if screen.offers.pop().is_some() {
                screen.more_offers += 1;
            } else if screen.vouchers.pop().is_some() {
                screen.more_vouchers += 1;
            } else if screen.hints.pop().is_none() {
                return;
            }
        }
    }
}

/// A receipt as a till sends it on `{prefix}/lane/{lane}/receipt` (the request side of SPEC
/// 2.3), for the tools and tests that play a till; [`parse_receipt`] reads it. Fields are in
/// alphabetical order, the order the tools have always sent (and the demo shows); absent
/// optional fields are omitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiptMessage {
    /// Loyalty card the till already knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
    /// ISO 4217 code.
    pub currency: String,
    /// `sale` or `return`.
    pub kind: &'static str,
    /// The lane (must match the topic's).
    pub lane: String,
    /// Item lines.
    pub lines: Vec<LineMessage>,
    /// For a return: the sale returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_receipt_id: Option<String>,
    /// Unique per store.
    pub receipt_id: String,
    /// References of points reservations the till applied (pay with points).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redemptions: Vec<String>,
    /// Voucher ids the till applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewards: Vec<String>,
    /// RFC 3339 time.
    pub timestamp: String,
    /// Total, decimal text.
    pub total: String,
}

/// One line of a [`ReceiptMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineMessage {
    /// Line amount, decimal text.
    pub amount: String,
    /// Merchandise category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Display name.
    pub name: String,
    /// Quantity.
    pub qty: Qty,
    /// Article number.
    pub sku: String,
    /// Unit price, decimal text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<String>,
}

/// A line quantity: whole pieces (a JSON number) or exact decimal text (`"0.532"` kg).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Qty {
    /// Whole pieces.
    Pieces(i64),
    /// Decimal text.
    Decimal(String),
}

impl ReceiptMessage {
    /// A sale of `lines` on `lane` at `timestamp` (RFC 3339), in `currency`, totalling `total`.
    pub fn sale(
        receipt_id: &str,
        lane: &str,
        timestamp: &str,
        currency: &str,
        total: &str,
        lines: Vec<LineMessage>,
    ) -> Self {
        ReceiptMessage {
            card: None,
            currency: currency.to_string(),
            kind: "sale",
            lane: lane.to_string(),
            lines,
            original_receipt_id: None,
            receipt_id: receipt_id.to_string(),
            redemptions: Vec::new(),
            rewards: Vec::new(),
            timestamp: timestamp.to_string(),
            total: total.to_string(),
        }
    }

    /// This receipt as a return of the sale `original_receipt_id`.
    pub fn returning(mut self, original_receipt_id: &str) -> Self {
        self.kind = "return";
        self.original_receipt_id = Some(original_receipt_id.to_string());
        self
    }

    /// The JSON bytes a till publishes.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain strings and numbers: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl LineMessage {
    /// `qty` pieces of `sku` for `amount`.
    pub fn new(sku: &str, name: &str, qty: Qty, amount: &str) -> Self {
        LineMessage {
            amount: amount.to_string(),
            category: None,
            name: name.to_string(),
            qty,
            sku: sku.to_string(),
            unit_price: None,
        }
    }
}

/// A scan sent as JSON on `{prefix}/lane/{lane}/scan` (the till may also send the raw scanned
/// text; see [`scan_payload`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanMessage {
    /// The scanned text.
    pub data: String,
    /// The scanner's AIM symbology identifier (`]E0`), if it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbology: Option<String>,
}

/// Parses a scan message: either the raw scanned text, or JSON `{"data": "...", "symbology": "..."}`.
/// Returns the bytes to decode (with an AIM prefix reconstructed from `symbology` when given as
/// one, e.g. `"]E0"`).
pub fn scan_payload(payload: &[u8]) -> Vec<u8> {
    if payload.first() == Some(&b'{') {
        if let Ok(json) = serde_json::from_slice::<ScanMessage>(payload) {
            let mut out = Vec::new();
            if let Some(symbology) = json
                .symbology
                .filter(|s| s.starts_with(']') && s.len() == 3)
            {
                if !json.data.starts_with(']') {
                    out.extend_from_slice(symbology.as_bytes());
                }
            }
            out.extend_from_slice(json.data.as_bytes());
            return out;
        }
    }
    let mut data = payload.to_vec();
    while matches!(data.last(), Some(b'\r' | b'\n')) {
        data.pop();
    }
    data
}

#[cfg(test)]
mod tests;
