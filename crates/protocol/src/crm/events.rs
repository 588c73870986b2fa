//! The CRM outbox events (SPEC 2.5), typed and serialised here and nowhere else: the `type`
//! strings ([`EventType`]), the envelope `{"at", "clock_trusted", "id", "payload", "seq",
//! "type"}` ([`Event`]) and every payload the store writes ([`ReceiptEvent`], [`LedgerEvent`],
//! [`CustomerEvent`], [`VoucherIssuedEvent`], [`VoucherRedeemedEvent`], [`VoucherKeyEvent`]).
//! The conversions from the core's types are here too, so that the CRM's field names, number
//! formats and time formats live in one place.
//!
//! Invariant: the bytes never change. Fields are declared in alphabetical order because that is
//! the order the outbox has always written (the events were first built as `serde_json::Value`,
//! whose map is sorted); an absent value is `null`, never an omitted field, except
//! `clock_trusted`, present only when `false`. Amounts are decimal strings with the currency's
//! decimals, quantities exact decimal strings, times RFC 3339. `tests` pins the exact text of
//! every payload.

use jiff::Timestamp;
use loyalty_core::customer::Customer;
use loyalty_core::ledger::EntryKind;
use loyalty_core::money::{currency_decimals, Money};
use loyalty_core::receipt::{Receipt, ReceiptKind};
use loyalty_core::voucher::{Benefit, KeyAnnouncement, Voucher};
use serde::{Serialize, Serializer};

/// Event types of SPEC 2.5. There is no `customer_updated`: the gateway never changes a profile
/// itself (profiles change at head office and come down the changes feed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A receipt (sale or return) as captured.
    Receipt,
    /// A ledger entry (points earned, clawed back, redeemed, converted, adjusted).
    Ledger,
    /// A customer enrolled in this store.
    CustomerEnrolled,
    /// A voucher was issued.
    VoucherIssued,
    /// A voucher was redeemed.
    VoucherRedeemed,
    /// This store's voucher signing key (public part), for the CRM to distribute.
    VoucherKey,
}

impl EventType {
    /// The `type` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Receipt => "receipt",
            EventType::Ledger => "ledger",
            EventType::CustomerEnrolled => "customer_enrolled",
            EventType::VoucherIssued => "voucher_issued",
            EventType::VoucherRedeemed => "voucher_redeemed",
            EventType::VoucherKey => "voucher_key",
        }
    }

    /// Inverse of [`EventType::as_str`].
    pub fn parse(text: &str) -> Option<EventType> {
        Some(match text {
            "receipt" => EventType::Receipt,
            "ledger" => EventType::Ledger,
            "customer_enrolled" => EventType::CustomerEnrolled,
            "voucher_issued" => EventType::VoucherIssued,
            "voucher_redeemed" => EventType::VoucherRedeemed,
            "voucher_key" => EventType::VoucherKey,
            _ => return None,
        })
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

fn rfc3339<S: Serializer>(time: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(time)
}

fn rfc3339_opt<S: Serializer>(time: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.collect_str(time),
        None => serializer.serialize_none(),
    }
}

fn entry_kind<S: Serializer>(kind: &EntryKind, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(kind.as_str())
}

fn is_true(value: &bool) -> bool {
    *value
}

/// The whole event as sent to the CRM and kept in the outbox. `clock_trusted` is written (as
/// `false`) only when `at` was read while the gateway's clock was not trusted (then `at` is a
/// proven lower bound on the real time); absent means trusted.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a, P: ?Sized> {
    /// When it happened.
    #[serde(serialize_with = "rfc3339")]
    pub at: Timestamp,
    /// Whether the clock was trusted when `at` was read.
    #[serde(skip_serializing_if = "is_true")]
    pub clock_trusted: bool,
    /// Globally unique id (the CRM deduplicates on it).
    pub id: &'a str,
    /// The content, whose shape depends on `kind`.
    pub payload: &'a P,
    /// Per-store sequence number: gapless, increasing.
    pub seq: u64,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: EventType,
}

impl<P: Serialize + ?Sized> Event<'_, P> {
    /// Appends the event's JSON text to `out` (the outbox's value after its time prefix).
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        serde_json::to_writer(out, self)
    }

    /// The event's JSON text.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// A quantity in thousandths as exact decimal text (`2000` is `"2"`, `532` is `"0.532"`).
pub fn qty_text(qty_milli: i64) -> String {
    let text = Money(qty_milli).format(3);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// Payload of a `receipt` event: the receipt as captured, its customer and the points it moved.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptEvent<'a> {
    /// Card the till sent, if any.
    pub card: Option<&'a str>,
    /// ISO 4217 code.
    pub currency: &'a str,
    /// The customer the receipt was applied to, if any.
    pub customer_id: Option<&'a str>,
    /// `sale` or `return`.
    pub kind: &'static str,
    /// Lane.
    pub lane: &'a str,
    /// Item lines.
    pub lines: Vec<ReceiptEventLine<'a>>,
    /// For a return, the sale returned.
    pub original_receipt_id: Option<&'a str>,
    /// Points earned (negative: clawed back).
    pub points: i64,
    /// Receipt id.
    pub receipt_id: &'a str,
    /// Voucher ids the till applied.
    pub rewards: &'a [String],
    /// The till's time.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: Timestamp,
    /// Total, decimal text.
    pub total: String,
    /// Categories of its lines the store's `rules.categories` does not list (they earned
    /// nothing); absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_categories: Vec<String>,
}

/// One line of a [`ReceiptEvent`].
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptEventLine<'a> {
    /// Line amount, decimal text.
    pub amount: String,
    /// Merchandise category, if known.
    pub category: Option<&'a str>,
    /// Display name.
    pub name: &'a str,
    /// Quantity, exact decimal text.
    pub qty: String,
    /// Article number.
    pub sku: &'a str,
    /// Unit price, decimal text, when the till sent it.
    pub unit_price: Option<String>,
}

impl<'a> ReceiptEvent<'a> {
    /// The payload for `receipt`, applied to `customer_id` (if any) for `points`.
    pub fn new(receipt: &'a Receipt, customer_id: Option<&'a str>, points: i64) -> Self {
        let decimals = currency_decimals(&receipt.currency);
        let money = |m: Money| m.format(decimals);
        let (kind, original_receipt_id) = match &receipt.kind {
            ReceiptKind::Sale => ("sale", None),
            ReceiptKind::Return {
                original_receipt_id,
            } => ("return", Some(original_receipt_id.as_str())),
        };
        ReceiptEvent {
            card: receipt.card.as_deref(),
            currency: &receipt.currency,
            customer_id,
            kind,
            lane: &receipt.lane,
            lines: receipt
                .lines
                .iter()
                .map(|line| ReceiptEventLine {
                    amount: money(line.amount),
                    category: line.category.as_deref(),
                    name: &line.name,
                    qty: qty_text(line.qty_milli),
                    sku: &line.sku,
                    unit_price: line.unit_price.map(money),
                })
                .collect(),
            original_receipt_id,
            points,
            receipt_id: &receipt.id,
            rewards: &receipt.rewards,
            timestamp: receipt.timestamp,
            total: money(receipt.total),
            unknown_categories: Vec::new(),
        }
    }

    /// This payload flagging `categories` as unknown to the store's rules.
    pub fn with_unknown_categories(mut self, categories: Vec<String>) -> Self {
        self.unknown_categories = categories;
        self
    }
}

/// Payload of a `ledger` event: one journal entry.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerEvent<'a> {
    /// The receipt that caused the entry when it is not `receipt_id` (the return).
    pub cause_receipt_id: Option<&'a str>,
    /// Customer.
    pub customer_id: &'a str,
    /// Journal index of the entry.
    pub entry: u64,
    /// The entry's hash in the tamper-evident journal (hex).
    pub hash: &'a str,
    /// Kind of entry.
    #[serde(serialize_with = "entry_kind")]
    pub kind: EntryKind,
    /// Signed points.
    pub points: i64,
    /// Free text (CRM adjustment reason).
    pub reason: Option<&'a str>,
    /// Sale the points belong to (earn, clawback).
    pub receipt_id: Option<&'a str>,
    /// Caller's reference (voucher id, CRM adjustment id, redemption reference).
    pub reference: Option<&'a str>,
    /// When earned points vest.
    #[serde(serialize_with = "rfc3339_opt")]
    pub vests_at: Option<Timestamp>,
}

/// Payload of a `ledger` event whose clawback was floored at zero (a return after the sale's
/// points were converted into a voucher or spent): the entry, plus `owed`, the points the
/// return still owes, collected by later `clawback` entries (same `receipt_id` and
/// `cause_receipt_id`, `reference` naming the paying sale) from the customer's next earnings.
#[derive(Debug, Clone, Serialize)]
pub struct OwingLedgerEvent<'a> {
    /// The entry.
    #[serde(flatten)]
    pub entry: LedgerEvent<'a>,
    /// Points still owed (> 0).
    pub owed: i64,
}

/// Payload of `customer_enrolled` events.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerEvent<'a> {
    /// Card number, if any.
    pub card: Option<&'a str>,
    /// Customer id.
    pub customer_id: &'a str,
    /// When the customer was enrolled.
    #[serde(serialize_with = "rfc3339")]
    pub enrolled_at: Timestamp,
    /// Display name, if known.
    pub name: Option<&'a str>,
    /// Tier, if any.
    pub tier: Option<&'a str>,
}

impl<'a> CustomerEvent<'a> {
    /// The payload for `customer`.
    pub fn new(customer: &'a Customer) -> Self {
        CustomerEvent {
            card: customer.card.as_deref(),
            customer_id: &customer.id,
            enrolled_at: customer.enrolled_at,
            name: customer.name.as_deref(),
            tier: customer.tier.as_deref(),
        }
    }
}

/// The `value` of a [`VoucherIssuedEvent`]: decimal text for `amount_off`, a whole number for
/// `percent_off`, the SKU for `free_item`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum BenefitValue<'a> {
    /// Amount off, decimal text.
    Amount(String),
    /// Whole percent off.
    Percent(u8),
    /// The free article's SKU.
    Sku(&'a str),
}

/// Payload of a `voucher_issued` event.
#[derive(Debug, Clone, Serialize)]
pub struct VoucherIssuedEvent<'a> {
    /// ISO 4217 code.
    pub currency: &'a str,
    /// The customer it was issued to, if any.
    pub customer_id: Option<&'a str>,
    /// Signing key id.
    pub key_id: &'a str,
    /// `amount_off`, `percent_off` or `free_item`.
    pub kind: &'static str,
    /// Smallest spend, decimal text, if any.
    pub min_spend: Option<String>,
    /// Why it was issued (`store`, `goodwill`, ...).
    pub origin: &'a str,
    /// Points converted for it.
    pub points: i64,
    /// The receipt it was earned on, if any.
    pub receipt_id: Option<&'a str>,
    /// Its QR text.
    pub text: &'a str,
    /// Valid from (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub valid_from: Timestamp,
    /// Valid until, exclusive (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub valid_until: Timestamp,
    /// What it gives (see [`BenefitValue`]).
    pub value: BenefitValue<'a>,
    /// Voucher id (upper-case hex).
    pub voucher_id: String,
}

/// What a store knows about a voucher it issued, beyond the voucher itself.
#[derive(Debug, Clone, Copy)]
pub struct Issue<'a> {
    /// Its QR text.
    pub text: &'a str,
    /// The receipt it was earned on, if any.
    pub receipt_id: Option<&'a str>,
    /// The customer it was issued to, if any.
    pub customer_id: Option<&'a str>,
    /// Points converted for it.
    pub points: i64,
    /// Why it was issued.
    pub origin: &'a str,
}

impl<'a> VoucherIssuedEvent<'a> {
    /// The payload for `voucher` issued as `issue` says.
    pub fn new(voucher: &'a Voucher, issue: Issue<'a>) -> Self {
        let decimals = currency_decimals(&voucher.currency);
        let (kind, value) = match &voucher.benefit {
            Benefit::AmountOff(amount) => {
                ("amount_off", BenefitValue::Amount(amount.format(decimals)))
            }
            Benefit::PercentOff(percent) => ("percent_off", BenefitValue::Percent(*percent)),
            Benefit::FreeItem { sku } => ("free_item", BenefitValue::Sku(sku)),
        };
        VoucherIssuedEvent {
            currency: &voucher.currency,
            customer_id: issue.customer_id,
            key_id: &voucher.key_id,
            kind,
            min_spend: voucher.min_spend.map(|m| m.format(decimals)),
            origin: issue.origin,
            points: issue.points,
            receipt_id: issue.receipt_id,
            text: issue.text,
            valid_from: voucher.valid_from,
            valid_until: voucher.valid_until,
            value,
            voucher_id: voucher.id.to_string(),
        }
    }
}

/// Payload of a `voucher_redeemed` event.
#[derive(Debug, Clone, Serialize)]
pub struct VoucherRedeemedEvent<'a> {
    /// ISO 4217 code.
    pub currency: &'a str,
    /// The discount given, decimal text.
    pub discount: String,
    /// Signing key id.
    pub key_id: &'a str,
    /// Lane.
    pub lane: &'a str,
    /// The receipt that redeemed it.
    pub receipt_id: &'a str,
    /// When (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub redeemed_at: Timestamp,
    /// Voucher id (upper-case hex).
    pub voucher_id: String,
}

impl<'a> VoucherRedeemedEvent<'a> {
    /// The payload for `voucher` redeemed on `receipt_id` at `lane` for `discount`, at `at`.
    pub fn new(
        voucher: &'a Voucher,
        lane: &'a str,
        receipt_id: &'a str,
        discount: Money,
        at: Timestamp,
    ) -> Self {
        VoucherRedeemedEvent {
            currency: &voucher.currency,
            discount: discount.format(currency_decimals(&voucher.currency)),
            key_id: &voucher.key_id,
            lane,
            receipt_id,
            redeemed_at: at,
            voucher_id: voucher.id.to_string(),
        }
    }
}

/// Payload of a `voucher_key` event: a store's public voucher key announced to the CRM.
#[derive(Debug, Clone, Serialize)]
pub struct VoucherKeyEvent<'a> {
    /// Always `ed25519`.
    pub algorithm: &'a str,
    /// Key id carried in vouchers.
    pub key_id: &'a str,
    /// Standard base64 of the 32-byte public key.
    pub public_key: &'a str,
}

impl<'a> VoucherKeyEvent<'a> {
    /// The payload announcing `key`.
    pub fn new(key: &'a KeyAnnouncement) -> Self {
        VoucherKeyEvent {
            algorithm: key.algorithm,
            key_id: &key.key_id,
            public_key: &key.public_key,
        }
    }
}

#[cfg(test)]
mod tests;
