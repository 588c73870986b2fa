//! The CRM outbox events (SPEC 2.5), typed and serialised here and nowhere else: the `type`
//! strings ([`EventType`]), the envelope `{"at", "clock_trusted", "id", "payload", "seq",
//! "type"}` ([`Event`]) and every payload the store writes ([`ReceiptEvent`], [`LedgerEvent`],
//! [`CustomerEvent`], [`VoucherIssuedEvent`], [`VoucherRedeemedEvent`], [`VoucherKeyEvent`],
//! [`CustomerErasedEvent`], [`OfferRedeemedEvent`]), and what an erasure leaves of a stored event
//! ([`scrub_erased`]).
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
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;

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
    /// This store has applied an erasure the CRM sent (the confirmation head office reports).
    CustomerErased,
    /// A personal or segment offer was used by a receipt.
    OfferRedeemed,
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
            EventType::CustomerErased => "customer_erased",
            EventType::OfferRedeemed => "offer_redeemed",
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
            "customer_erased" => EventType::CustomerErased,
            "offer_redeemed" => EventType::OfferRedeemed,
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

fn is_false(value: &bool) -> bool {
    !*value
}

fn de_rfc3339<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
    let text = Cow::<str>::deserialize(deserializer)?;
    text.parse()
        .map_err(|err| D::Error::custom(format!("not an RFC 3339 time {text:?}: {err}")))
}

fn de_rfc3339_opt<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Timestamp>, D::Error> {
    match Option::<Cow<str>>::deserialize(deserializer)? {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|err| D::Error::custom(format!("not an RFC 3339 time {text:?}: {err}"))),
    }
}

fn de_entry_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<EntryKind, D::Error> {
    let text = Cow::<str>::deserialize(deserializer)?;
    EntryKind::parse(&text)
        .ok_or_else(|| D::Error::custom(format!("unknown ledger entry kind {text:?}")))
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptEvent<'a> {
    /// Card the till sent, if any.
    #[serde(borrow)]
    pub card: Option<Cow<'a, str>>,
    /// ISO 4217 code.
    #[serde(borrow)]
    pub currency: Cow<'a, str>,
    /// The customer the receipt was applied to, if any.
    #[serde(borrow)]
    pub customer_id: Option<Cow<'a, str>>,
    /// `sale` or `return`.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    /// Lane.
    #[serde(borrow)]
    pub lane: Cow<'a, str>,
    /// Item lines; empty when `lines_withheld`.
    #[serde(borrow)]
    pub lines: Vec<ReceiptEventLine<'a>>,
    /// True when the receipt's customer has not given `profiling` consent (or it is unknown):
    /// its lines (and `unknown_categories`) are not sent at all
    /// (`loyalty_core::customer::receipt_lines_linked`); absent otherwise.
    #[serde(default, skip_serializing_if = "is_false")]
    pub lines_withheld: bool,
    /// For a return, the sale returned.
    #[serde(borrow)]
    pub original_receipt_id: Option<Cow<'a, str>>,
    /// Points earned (negative: clawed back).
    pub points: i64,
    /// Receipt id.
    #[serde(borrow)]
    pub receipt_id: Cow<'a, str>,
    /// Voucher ids the till applied.
    #[serde(borrow)]
    pub rewards: Cow<'a, [String]>,
    /// The till's time.
    #[serde(serialize_with = "rfc3339", deserialize_with = "de_rfc3339")]
    pub timestamp: Timestamp,
    /// Total, decimal text.
    pub total: String,
    /// Categories of its lines the store's `rules.categories` does not list (they earned
    /// nothing); absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_categories: Vec<String>,
}

/// One line of a [`ReceiptEvent`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptEventLine<'a> {
    /// Line amount, decimal text.
    pub amount: String,
    /// Merchandise category, if known.
    #[serde(borrow)]
    pub category: Option<Cow<'a, str>>,
    /// Display name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// Quantity, exact decimal text.
    pub qty: String,
    /// Article number.
    #[serde(borrow)]
    pub sku: Cow<'a, str>,
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
            card: receipt.card.as_deref().map(Cow::Borrowed),
            currency: Cow::Borrowed(&receipt.currency),
            customer_id: customer_id.map(Cow::Borrowed),
            kind: Cow::Borrowed(kind),
            lane: Cow::Borrowed(&receipt.lane),
            lines: receipt
                .lines
                .iter()
                .map(|line| ReceiptEventLine {
                    amount: money(line.amount),
                    category: line.category.as_deref().map(Cow::Borrowed),
                    name: Cow::Borrowed(&line.name),
                    qty: qty_text(line.qty_milli),
                    sku: Cow::Borrowed(&line.sku),
                    unit_price: line.unit_price.map(money),
                })
                .collect(),
            lines_withheld: false,
            original_receipt_id: original_receipt_id.map(Cow::Borrowed),
            points,
            receipt_id: Cow::Borrowed(&receipt.id),
            rewards: Cow::Borrowed(&receipt.rewards[..]),
            timestamp: receipt.timestamp,
            total: money(receipt.total),
            unknown_categories: Vec::new(),
        }
    }

    /// This payload flagging `categories` as unknown to the store's rules (never on a payload
    /// whose lines are withheld: the categories would tell what she bought).
    pub fn with_unknown_categories(mut self, categories: Vec<String>) -> Self {
        if !self.lines_withheld {
            self.unknown_categories = categories;
        }
        self
    }

    /// This payload as sent for a customer without `profiling` consent: the customer, card,
    /// totals and points stay, the lines and `unknown_categories` go, `lines_withheld` is set.
    pub fn withholding_lines(mut self) -> Self {
        self.lines = Vec::new();
        self.unknown_categories = Vec::new();
        self.lines_withheld = true;
        self
    }

    /// [`ReceiptEvent::withholding_lines`] unless `linked` (the decision of
    /// `loyalty_core::customer::receipt_lines_linked`).
    pub fn lines_linked(self, linked: bool) -> Self {
        if linked {
            self
        } else {
            self.withholding_lines()
        }
    }
}

/// Payload of a `ledger` event: one journal entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerEvent<'a> {
    /// The receipt that caused the entry when it is not `receipt_id` (the return).
    #[serde(borrow)]
    pub cause_receipt_id: Option<Cow<'a, str>>,
    /// Customer.
    #[serde(borrow)]
    pub customer_id: Cow<'a, str>,
    /// Journal index of the entry.
    pub entry: u64,
    /// The entry's hash in the tamper-evident journal (hex).
    #[serde(borrow)]
    pub hash: Cow<'a, str>,
    /// Kind of entry.
    #[serde(serialize_with = "entry_kind", deserialize_with = "de_entry_kind")]
    pub kind: EntryKind,
    /// Signed points.
    pub points: i64,
    /// Free text (CRM adjustment reason).
    #[serde(borrow)]
    pub reason: Option<Cow<'a, str>>,
    /// Sale the points belong to (earn, clawback).
    #[serde(borrow)]
    pub receipt_id: Option<Cow<'a, str>>,
    /// Caller's reference (voucher id, CRM adjustment id, redemption reference).
    #[serde(borrow)]
    pub reference: Option<Cow<'a, str>>,
    /// When earned points vest.
    #[serde(serialize_with = "rfc3339_opt", deserialize_with = "de_rfc3339_opt")]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomerEvent<'a> {
    /// Card number, if any.
    #[serde(borrow)]
    pub card: Option<Cow<'a, str>>,
    /// Customer id.
    #[serde(borrow)]
    pub customer_id: Cow<'a, str>,
    /// When the customer was enrolled.
    #[serde(serialize_with = "rfc3339", deserialize_with = "de_rfc3339")]
    pub enrolled_at: Timestamp,
    /// Display name, if known.
    #[serde(borrow)]
    pub name: Option<Cow<'a, str>>,
    /// Tier, if any.
    #[serde(borrow)]
    pub tier: Option<Cow<'a, str>>,
}

impl<'a> CustomerEvent<'a> {
    /// The payload for `customer`.
    pub fn new(customer: &'a Customer) -> Self {
        CustomerEvent {
            card: customer.card.as_deref().map(Cow::Borrowed),
            customer_id: Cow::Borrowed(&customer.id),
            enrolled_at: customer.enrolled_at,
            name: customer.name.as_deref().map(Cow::Borrowed),
            tier: customer.tier.as_deref().map(Cow::Borrowed),
        }
    }
}

/// The `value` of a [`VoucherIssuedEvent`]: decimal text for `amount_off`, a whole number for
/// `percent_off`, the SKU for `free_item`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BenefitValue<'a> {
    /// Amount off, decimal text.
    Amount(String),
    /// Whole percent off.
    Percent(u8),
    /// The free article's SKU.
    Sku(#[serde(borrow)] Cow<'a, str>),
}

/// Payload of a `voucher_issued` event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VoucherIssuedEvent<'a> {
    /// ISO 4217 code.
    #[serde(borrow)]
    pub currency: Cow<'a, str>,
    /// The customer it was issued to, if any.
    #[serde(borrow)]
    pub customer_id: Option<Cow<'a, str>>,
    /// The staff member who issued it (goodwill vouchers from the staff page); left out when
    /// none.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<Cow<'a, str>>,
    /// Signing key id.
    #[serde(borrow)]
    pub key_id: Cow<'a, str>,
    /// `amount_off`, `percent_off` or `free_item`.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    /// Smallest spend, decimal text, if any.
    pub min_spend: Option<String>,
    /// Why it was issued (`store`, `goodwill`, ...).
    #[serde(borrow)]
    pub origin: Cow<'a, str>,
    /// Points converted for it.
    pub points: i64,
    /// The receipt it was earned on, if any.
    #[serde(borrow)]
    pub receipt_id: Option<Cow<'a, str>>,
    /// Its QR text.
    #[serde(borrow)]
    pub text: Cow<'a, str>,
    /// Valid from (RFC 3339).
    #[serde(serialize_with = "rfc3339", deserialize_with = "de_rfc3339")]
    pub valid_from: Timestamp,
    /// Valid until, exclusive (RFC 3339).
    #[serde(serialize_with = "rfc3339", deserialize_with = "de_rfc3339")]
    pub valid_until: Timestamp,
    /// What it gives (see [`BenefitValue`]).
    #[serde(borrow)]
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
    /// The staff member who issued it, if one did.
    pub issued_by: Option<&'a str>,
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
            Benefit::FreeItem { sku } => ("free_item", BenefitValue::Sku(Cow::Borrowed(sku))),
        };
        VoucherIssuedEvent {
            currency: Cow::Borrowed(&voucher.currency),
            customer_id: issue.customer_id.map(Cow::Borrowed),
            issued_by: issue.issued_by.map(Cow::Borrowed),
            key_id: Cow::Borrowed(&voucher.key_id),
            kind: Cow::Borrowed(kind),
            min_spend: voucher.min_spend.map(|m| m.format(decimals)),
            origin: Cow::Borrowed(issue.origin),
            points: issue.points,
            receipt_id: issue.receipt_id.map(Cow::Borrowed),
            text: Cow::Borrowed(issue.text),
            valid_from: voucher.valid_from,
            valid_until: voucher.valid_until,
            value,
            voucher_id: voucher.id.to_string(),
        }
    }
}

/// Payload of a `voucher_redeemed` event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VoucherRedeemedEvent<'a> {
    /// ISO 4217 code.
    #[serde(borrow)]
    pub currency: Cow<'a, str>,
    /// The discount given, decimal text.
    pub discount: String,
    /// Signing key id.
    #[serde(borrow)]
    pub key_id: Cow<'a, str>,
    /// Lane.
    #[serde(borrow)]
    pub lane: Cow<'a, str>,
    /// The receipt that redeemed it.
    #[serde(borrow)]
    pub receipt_id: Cow<'a, str>,
    /// When (RFC 3339).
    #[serde(serialize_with = "rfc3339", deserialize_with = "de_rfc3339")]
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
            currency: Cow::Borrowed(&voucher.currency),
            discount: discount.format(currency_decimals(&voucher.currency)),
            key_id: Cow::Borrowed(&voucher.key_id),
            lane: Cow::Borrowed(lane),
            receipt_id: Cow::Borrowed(receipt_id),
            redeemed_at: at,
            voucher_id: voucher.id.to_string(),
        }
    }
}

/// Payload of a `voucher_key` event: a store's public voucher key announced to the CRM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VoucherKeyEvent<'a> {
    /// Always `ed25519`.
    #[serde(borrow)]
    pub algorithm: Cow<'a, str>,
    /// Key id carried in vouchers.
    #[serde(borrow)]
    pub key_id: Cow<'a, str>,
    /// Standard base64 of the 32-byte public key.
    #[serde(borrow)]
    pub public_key: Cow<'a, str>,
}

impl<'a> VoucherKeyEvent<'a> {
    /// The payload announcing `key`.
    pub fn new(key: &'a KeyAnnouncement) -> Self {
        VoucherKeyEvent {
            algorithm: Cow::Borrowed(key.algorithm),
            key_id: Cow::Borrowed(&key.key_id),
            public_key: Cow::Borrowed(&key.public_key),
        }
    }
}

/// Payload of a `customer_erased` event: the store has erased the customer's personal data
/// (sent once per erasure the changes feed carried, whether or not the store knew her). It
/// carries the id only: no card, no name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomerErasedEvent<'a> {
    /// The customer id the erasure named.
    pub customer_id: &'a str,
}

/// Who an erasure names, for [`scrub_erased`]: every id of the customer (hers and the ids
/// merged into her) and every card she held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasedPerson {
    /// Customer ids.
    pub ids: Vec<String>,
    /// Card numbers.
    pub cards: Vec<String>,
}

/// An outbox event's JSON text with an erased customer's personal data removed: in a payload
/// that names one of `erased.ids` as `customer_id`, `card` and `name` become `null`; in a
/// payload without a customer, a `card` that is one of `erased.cards` becomes `null`. Ids,
/// amounts, points and lines stay (head office keeps them under the pseudonymous id, as it
/// does on its side). `Ok(None)` when nothing had to change; the rest of the text is written
/// as it was (fields in the same order, the same number formats).
pub fn scrub_erased(
    event_json: &[u8],
    erased: &ErasedPerson,
) -> Result<Option<Vec<u8>>, serde_json::Error> {
    let mut event: serde_json::Value = serde_json::from_slice(event_json)?;
    let Some(payload) = event.get_mut("payload").and_then(|p| p.as_object_mut()) else {
        return Ok(None);
    };
    let hers = match payload.get("customer_id") {
        Some(serde_json::Value::String(id)) => erased.ids.contains(id),
        _ => false,
    };
    let without_customer = matches!(
        payload.get("customer_id"),
        None | Some(serde_json::Value::Null)
    );
    let mut changed = false;
    for field in ["card", "name"] {
        let Some(serde_json::Value::String(value)) = payload.get(field) else {
            continue;
        };
        let erase = hers || (field == "card" && without_customer && erased.cards.contains(value));
        if erase {
            payload.insert(field.to_string(), serde_json::Value::Null);
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    serde_json::to_vec(&event).map(Some)
}

/// A stored `receipt` event of a sale without a customer, rewritten because a customer without
/// `profiling` consent was attached to the sale afterwards (a card scanned just after it) while
/// the event was still unsent: `customer_id` becomes hers and the payload takes the shape
/// [`ReceiptEvent::withholding_lines`] gives (no lines, no `unknown_categories`,
/// `lines_withheld`). `Ok(None)` when `event_json` is not the `receipt` event of `receipt_id`
/// without a customer.
pub fn withhold_attached_receipt_lines(
    event_json: &[u8],
    receipt_id: &str,
    customer_id: &str,
) -> Result<Option<Vec<u8>>, serde_json::Error> {
    let mut event: serde_json::Value = serde_json::from_slice(event_json)?;
    if event.get("type").and_then(|t| t.as_str()) != Some(EventType::Receipt.as_str()) {
        return Ok(None);
    }
    let Some(payload) = event.get_mut("payload") else {
        return Ok(None);
    };
    let text = payload.to_string();
    let typed: ReceiptEvent<'_> = serde_json::from_str(&text)?;
    if typed.receipt_id != receipt_id || typed.customer_id.is_some() {
        return Ok(None);
    }
    let rewritten = ReceiptEvent {
        customer_id: Some(Cow::Borrowed(customer_id)),
        ..typed
    }
    .withholding_lines();
    *payload = serde_json::to_value(&rewritten)?;
    serde_json::to_vec(&event).map(Some)
}

/// Payload of an `offer_redeemed` event: one use of an offer by a sale, written in the sale's
/// transaction (exactly once per receipt). Bonus points it gave are part of the sale's `earn`
/// ledger entry (the `receipt` event's points include them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferRedeemedEvent<'a> {
    /// The amount off the till was told to give (decimal text), or null.
    pub amount_off: Option<String>,
    /// Bonus points the offer added to the sale (0 for an amount off).
    pub bonus_points: i64,
    /// The customer.
    #[serde(borrow)]
    pub customer_id: Cow<'a, str>,
    /// Lane.
    #[serde(borrow)]
    pub lane: Cow<'a, str>,
    /// The offer.
    #[serde(borrow)]
    pub offer_id: Cow<'a, str>,
    /// The sale that used it.
    #[serde(borrow)]
    pub receipt_id: Cow<'a, str>,
    /// When (RFC 3339).
    #[serde(serialize_with = "rfc3339", deserialize_with = "de_rfc3339")]
    pub redeemed_at: Timestamp,
    /// This customer's uses of the offer so far, this one included (1 = first).
    pub uses: u32,
}

#[cfg(test)]
mod tests;
