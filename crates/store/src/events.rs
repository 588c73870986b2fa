//! Outbox events for the CRM (SPEC 2.5): their types, globally unique ids, and every payload,
//! built here and nowhere else so that field names follow the CRM contract in one place.
//!
//! Invariant: an event id is random (128 bits, hex), never derived from `seq`: a lost database
//! restarts `seq`, and the CRM deduplicates by `id`.

use jiff::Timestamp;
use loyalty_core::customer::Customer;
use loyalty_core::ledger::EntryKind;
use loyalty_core::money::{currency_decimals, Money};
use loyalty_core::receipt::{Receipt, ReceiptKind};
use serde_json::{json, Value};

/// Event types of SPEC 2.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A receipt (sale or return) as captured.
    Receipt,
    /// A ledger entry (points earned, clawed back, redeemed, converted, adjusted).
    Ledger,
    /// A customer enrolled in this store.
    CustomerEnrolled,
    /// A customer's profile changed in this store.
    CustomerUpdated,
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
            EventType::CustomerUpdated => "customer_updated",
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
            "customer_updated" => EventType::CustomerUpdated,
            "voucher_issued" => EventType::VoucherIssued,
            "voucher_redeemed" => EventType::VoucherRedeemed,
            "voucher_key" => EventType::VoucherKey,
            _ => return None,
        })
    }
}

/// A source of globally unique event ids for one transaction: a random 128-bit base drawn
/// *before* the transaction (no I/O inside the closure), from which the n-th event of the
/// transaction takes `base + n`. A re-run of the closure hands out the same ids again.
#[derive(Debug, Clone, Copy)]
pub struct EventIds {
    base: u128,
}

impl EventIds {
    /// Draws a random base from the operating system.
    pub fn random() -> Result<EventIds, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes)?;
        Ok(EventIds {
            base: u128::from_be_bytes(bytes),
        })
    }

    /// The `n`-th id as 32 lower-case hex digits.
    pub fn nth(&self, n: u32) -> String {
        format!("{:032x}", self.base.wrapping_add(n as u128))
    }
}

/// Random lower-case hex of `bytes` random bytes (customer ids).
pub fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf)?;
    Ok(hex(&buf))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// The whole event as sent to the CRM: `{"seq", "id", "type", "at", "payload"}`, plus
/// `"clock_trusted": false` when `at` was read while the gateway's clock was not trusted (then
/// `at` is a proven lower bound on the real time, see `clock`); absent means trusted.
pub fn event_json(
    seq: u64,
    id: &str,
    kind: EventType,
    at: Timestamp,
    clock_trusted: bool,
    payload: &Value,
) -> Value {
    let mut event = json!({"seq": seq, "id": id, "type": kind.as_str(), "at": at.to_string(), "payload": payload});
    if !clock_trusted {
        event["clock_trusted"] = Value::Bool(false);
    }
    event
}

/// Payload of a `receipt` event.
pub fn receipt_payload(receipt: &Receipt, customer_id: Option<&str>, points: i64) -> Value {
    let decimals = currency_decimals(&receipt.currency);
    let money = |m: Money| m.format(decimals);
    let (kind, original) = match &receipt.kind {
        ReceiptKind::Sale => ("sale", None),
        ReceiptKind::Return {
            original_receipt_id,
        } => ("return", Some(original_receipt_id.as_str())),
    };
    let lines: Vec<Value> = receipt
        .lines
        .iter()
        .map(|line| {
            json!({
                "sku": line.sku,
                "name": line.name,
                "qty": qty_text(line.qty_milli),
                "unit_price": line.unit_price.map(money),
                "amount": money(line.amount),
                "category": line.category,
            })
        })
        .collect();
    json!({
        "receipt_id": receipt.id,
        "lane": receipt.lane,
        "timestamp": receipt.timestamp.to_string(),
        "kind": kind,
        "original_receipt_id": original,
        "currency": receipt.currency,
        "total": money(receipt.total),
        "card": receipt.card,
        "customer_id": customer_id,
        "rewards": receipt.rewards,
        "lines": lines,
        "points": points,
    })
}

/// A quantity in thousandths as exact decimal text (`2000` is `"2"`, `532` is `"0.532"`).
pub fn qty_text(qty_milli: i64) -> String {
    let text = Money(qty_milli).format(3);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// What a `ledger` event says about one journal entry.
#[derive(Debug, Clone)]
pub struct LedgerPayload<'a> {
    /// Journal index of the entry.
    pub entry: u64,
    /// Customer.
    pub customer_id: &'a str,
    /// Kind of entry.
    pub kind: EntryKind,
    /// Signed points.
    pub points: i64,
    /// Sale the points belong to (earn, clawback).
    pub receipt_id: Option<&'a str>,
    /// The receipt that caused the entry when it is not `receipt_id` (the return).
    pub cause_receipt_id: Option<&'a str>,
    /// Caller's reference (voucher id, CRM adjustment id, redemption reference).
    pub reference: Option<&'a str>,
    /// Free text (CRM adjustment reason).
    pub reason: Option<&'a str>,
    /// When earned points vest.
    pub vests_at: Option<Timestamp>,
    /// The entry's hash in the tamper-evident journal (hex).
    pub hash: &'a str,
}

/// Payload of a `ledger` event.
pub fn ledger_payload(p: &LedgerPayload<'_>) -> Value {
    json!({
        "entry": p.entry,
        "customer_id": p.customer_id,
        "kind": p.kind.as_str(),
        "points": p.points,
        "receipt_id": p.receipt_id,
        "cause_receipt_id": p.cause_receipt_id,
        "reference": p.reference,
        "reason": p.reason,
        "vests_at": p.vests_at.map(|t| t.to_string()),
        "hash": p.hash,
    })
}

/// Payload of `customer_enrolled` and `customer_updated` events.
pub fn customer_payload(customer: &Customer) -> Value {
    json!({
        "customer_id": customer.id,
        "card": customer.card,
        "name": customer.name,
        "tier": customer.tier,
        "enrolled_at": customer.enrolled_at.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_hex() {
        let ids = EventIds::random().expect("random");
        assert_eq!(ids.nth(0).len(), 32);
        assert_ne!(ids.nth(0), ids.nth(1));
        assert_ne!(
            EventIds::random().expect("random").nth(0),
            EventIds::random().expect("random").nth(0)
        );
    }

    #[test]
    fn only_events_of_an_untrusted_clock_are_flagged() {
        let at = Timestamp::from_second(1_800_000_000).expect("time");
        let trusted = event_json(1, "a", EventType::Ledger, at, true, &json!({}));
        assert!(trusted.get("clock_trusted").is_none(), "{trusted}");
        let untrusted = event_json(2, "b", EventType::Receipt, at, false, &json!({}));
        assert_eq!(untrusted["clock_trusted"], Value::Bool(false));
        assert_eq!(untrusted["at"], "2027-01-15T08:00:00Z");
    }

    #[test]
    fn quantities_are_exact() {
        assert_eq!(qty_text(2000), "2");
        assert_eq!(qty_text(532), "0.532");
        assert_eq!(qty_text(1500), "1.5");
    }
}
