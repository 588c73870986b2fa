//! The voucher decision: given a decoded voucher and everything the gateway knows (trusted
//! keys, the time and whether the clock is trusted, revocations, the lane's customer, the
//! voucher's redemption state), whether the lane may apply it and what discount, or the exact
//! reason it may not. Also the receipt-side check (minimum spend, the discount's amount). Pure.
//!
//! Time rule (a Pi without a real-time clock can boot with a clock in the past or, rarely, in
//! the future): with a trusted clock the window `[valid_from, valid_until)` is applied as is.
//! With an untrusted clock only *certain* conclusions are drawn, from `floor`, the latest
//! trusted time the gateway has seen (a lower bound on the real time):
//! - `expired` only when `floor >= valid_until` (never expire on an untrusted clock alone);
//! - a voucher valid from its issue (`valid_from_issue`) is never `not_yet_valid`: its
//!   existence proves the issue happened;
//! - a voucher dated to start later is accepted only when `floor >= valid_from`, otherwise it
//!   is refused as [`Refusal::ClockUntrusted`] (retry once the clock is synchronised), never
//!   activated early.

use super::format::{self, Benefit, SignedVoucher, Voucher, VoucherId};
use super::keys::TrustedKeys;
use crate::money::Money;
use crate::receipt::{Receipt, ReceiptKind};
use jiff::Timestamp;
use std::collections::{BTreeSet, HashSet};

/// What the gateway knows about time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The system clock now.
    pub now: Timestamp,
    /// True when the system clock is known to be right (NTP synchronised or an RTC).
    pub trusted: bool,
    /// The latest trusted time seen so far (persisted across restarts); a lower bound on the
    /// real time whatever the system clock says.
    pub floor: Option<Timestamp>,
}

impl Clock {
    /// A trusted clock reading (tests, and gateways with an RTC or NTP).
    pub fn trusted(now: Timestamp) -> Clock {
        Clock {
            now,
            trusted: true,
            floor: None,
        }
    }

    /// The best estimate of now: the system clock, but never before the floor.
    pub fn effective_now(&self) -> Timestamp {
        match self.floor {
            Some(floor) if floor > self.now => floor,
            _ => self.now,
        }
    }
}

/// Where a voucher stands in this store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedemptionState {
    /// Never redeemed, not reserved (or its reservation expired).
    Free,
    /// Reserved by a lane that scanned it, until its receipt commits or the reservation ends.
    Reserved {
        /// The lane holding it.
        lane: String,
        /// When it was reserved.
        at: Timestamp,
        /// When the reservation ends if no receipt commits it.
        until: Timestamp,
    },
    /// Redeemed by a receipt.
    Redeemed {
        /// When.
        at: Timestamp,
        /// At which lane.
        lane: String,
        /// By which receipt.
        receipt_id: String,
    },
}

/// A set of revoked voucher ids.
pub trait Revocations {
    /// True when `id` is revoked.
    fn is_revoked(&self, id: &VoucherId) -> bool;
}

impl Revocations for BTreeSet<VoucherId> {
    fn is_revoked(&self, id: &VoucherId) -> bool {
        self.contains(id)
    }
}

impl Revocations for HashSet<VoucherId> {
    fn is_revoked(&self, id: &VoucherId) -> bool {
        self.contains(id)
    }
}

impl Revocations for [VoucherId] {
    fn is_revoked(&self, id: &VoucherId) -> bool {
        self.contains(id)
    }
}

/// Everything [`check`] needs besides the voucher.
#[derive(Clone, Copy)]
pub struct CheckContext<'a> {
    /// Keys whose signatures are accepted.
    pub keys: &'a TrustedKeys,
    /// The time.
    pub clock: Clock,
    /// Vouchers head office revoked.
    pub revocations: &'a dyn Revocations,
    /// The store's currency.
    pub currency: &'a str,
    /// The lane that scanned it.
    pub lane: &'a str,
    /// The customer identified at that lane, if any.
    pub customer_id: Option<&'a str>,
    /// The voucher's state in this store.
    pub state: &'a RedemptionState,
}

/// What the till must apply for a valid voucher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discount {
    /// The voucher (the till names it in the receipt's `rewards`).
    pub voucher_id: VoucherId,
    /// What it gives.
    pub benefit: Benefit,
    /// Its currency.
    pub currency: String,
    /// Minimum spend (goods before discounts) the receipt must reach.
    pub min_spend: Option<Money>,
    /// End of its validity.
    pub valid_until: Timestamp,
}

/// The answer for a scanned voucher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The lane may apply it.
    Valid {
        /// What to apply.
        discount: Discount,
    },
    /// The lane must not apply it.
    Refused(Refusal),
}

/// Why a voucher may not be applied. [`Refusal::status`] maps each to the `status` of SPEC
/// 2.3's `reward` answer; [`Refusal::code`] is the precise reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a readable voucher (damaged print, wrong code).
    #[error("{0}")]
    Malformed(format::FormatError),
    /// Signed by no trusted key.
    #[error("voucher signed with unknown key '{key_id}' (not issued by this retailer, or the key has not been synchronised yet)")]
    UnknownKey {
        /// The key id the voucher names.
        key_id: String,
    },
    /// The signature does not match the content: a forged or altered voucher.
    #[error("voucher signature is not valid: forged or altered")]
    ForgedSignature,
    /// Issued in another currency.
    #[error("voucher is in {found}, the store takes {expected}")]
    WrongCurrency {
        /// The voucher's currency.
        found: String,
        /// The store's.
        expected: String,
    },
    /// Revoked by head office.
    #[error("voucher was revoked by head office")]
    Revoked,
    /// Already used.
    #[error("voucher already redeemed at {at} on lane {lane} (receipt {receipt_id})")]
    AlreadyRedeemed {
        /// When.
        at: Timestamp,
        /// Which lane.
        lane: String,
        /// Which receipt.
        receipt_id: String,
    },
    /// Past its end.
    #[error("voucher expired at {valid_until}")]
    Expired {
        /// Its end.
        valid_until: Timestamp,
    },
    /// Before its start.
    #[error("voucher is valid only from {valid_from}")]
    NotYetValid {
        /// Its start.
        valid_from: Timestamp,
    },
    /// Its start cannot be confirmed because the gateway's clock is not synchronised.
    #[error("voucher starts at {valid_from} and the gateway's clock is not synchronised yet; try again once it is")]
    ClockUntrusted {
        /// Its start.
        valid_from: Timestamp,
    },
    /// Bound to a customer and no customer has been identified at the lane.
    #[error("voucher is personal: scan the customer's loyalty card first")]
    CustomerNotIdentified,
    /// Bound to a different customer than the one identified at the lane.
    #[error("voucher belongs to another customer")]
    BoundToAnotherCustomer,
    /// Another lane holds it right now.
    #[error("voucher is in use at lane {lane} until {until}")]
    ReservedElsewhere {
        /// The lane holding it.
        lane: String,
        /// When that reservation ends.
        until: Timestamp,
    },
    /// The receipt does not reach the minimum spend.
    #[error("minimum spend {required} not met (goods total {spent})")]
    MinimumSpendNotMet {
        /// The minimum.
        required: Money,
        /// The receipt's goods total.
        spent: Money,
    },
    /// A free-item voucher on a receipt without that item.
    #[error("the free item {sku} is not on the receipt")]
    ItemNotOnReceipt {
        /// The SKU.
        sku: String,
    },
    /// A receipt names a voucher this store has neither seen scanned nor issued.
    #[error("voucher {voucher_id} was never scanned here: scan it before the till applies it")]
    UnknownVoucher {
        /// The id as the receipt gave it.
        voucher_id: String,
    },
    /// Vouchers apply to sales only.
    #[error("a voucher cannot be redeemed on a return")]
    NotASale,
}

impl Refusal {
    /// The `status` of the `reward` answer (SPEC 2.3): `redeemed`, `expired`, `not_yet_valid`,
    /// or `invalid` for everything else.
    pub fn status(&self) -> &'static str {
        match self {
            Refusal::AlreadyRedeemed { .. } => "redeemed",
            Refusal::Expired { .. } => "expired",
            Refusal::NotYetValid { .. } | Refusal::ClockUntrusted { .. } => "not_yet_valid",
            Refusal::ReservedElsewhere { .. } => "reserved",
            _ => "invalid",
        }
    }

    /// A stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::UnknownKey { .. } => "unknown_key",
            Refusal::ForgedSignature => "forged_signature",
            Refusal::WrongCurrency { .. } => "wrong_currency",
            Refusal::Revoked => "revoked",
            Refusal::AlreadyRedeemed { .. } => "already_redeemed",
            Refusal::Expired { .. } => "expired",
            Refusal::NotYetValid { .. } => "not_yet_valid",
            Refusal::ClockUntrusted { .. } => "clock_untrusted",
            Refusal::CustomerNotIdentified => "customer_not_identified",
            Refusal::BoundToAnotherCustomer => "other_customer",
            Refusal::ReservedElsewhere { .. } => "reserved_elsewhere",
            Refusal::MinimumSpendNotMet { .. } => "minimum_spend_not_met",
            Refusal::ItemNotOnReceipt { .. } => "item_not_on_receipt",
            Refusal::UnknownVoucher { .. } => "unknown_voucher",
            Refusal::NotASale => "not_a_sale",
        }
    }
}

/// Verifies the signature against the trusted keys.
pub fn verify_signature(signed: &SignedVoucher, keys: &TrustedKeys) -> Result<(), Refusal> {
    let key = keys
        .get(&signed.voucher.key_id)
        .ok_or_else(|| Refusal::UnknownKey {
            key_id: signed.voucher.key_id.clone(),
        })?;
    key.verify_strict(
        &format::signed_message(&signed.body),
        &format::signature_of(signed),
    )
    .map_err(|_| Refusal::ForgedSignature)
}

/// Applies the validity window under the time rule of this module.
pub fn check_window(voucher: &Voucher, clock: &Clock) -> Result<(), Refusal> {
    let expired = Refusal::Expired {
        valid_until: voucher.valid_until,
    };
    if clock.trusted {
        let now = clock.effective_now();
        if now >= voucher.valid_until {
            return Err(expired);
        }
        if now < voucher.valid_from {
            return Err(Refusal::NotYetValid {
                valid_from: voucher.valid_from,
            });
        }
        return Ok(());
    }
    if clock
        .floor
        .is_some_and(|floor| floor >= voucher.valid_until)
    {
        return Err(expired);
    }
    let started =
        voucher.valid_from_issue || clock.floor.is_some_and(|floor| floor >= voucher.valid_from);
    if !started {
        return Err(Refusal::ClockUntrusted {
            valid_from: voucher.valid_from,
        });
    }
    Ok(())
}

/// The decision for a scanned voucher, checks in this order: key, signature, currency,
/// revocation, redemption, validity window, customer binding, reservation by another lane.
pub fn check(signed: &SignedVoucher, ctx: &CheckContext<'_>) -> Verdict {
    match check_inner(signed, ctx) {
        Ok(discount) => Verdict::Valid { discount },
        Err(refusal) => Verdict::Refused(refusal),
    }
}

/// Decodes a scanned text and [`check`]s it.
pub fn check_text(text: &str, ctx: &CheckContext<'_>) -> Verdict {
    match format::decode(text) {
        Ok(signed) => check(&signed, ctx),
        Err(err) => Verdict::Refused(Refusal::Malformed(err)),
    }
}

fn check_inner(signed: &SignedVoucher, ctx: &CheckContext<'_>) -> Result<Discount, Refusal> {
    verify_signature(signed, ctx.keys)?;
    let voucher = &signed.voucher;
    if voucher.currency != ctx.currency {
        return Err(Refusal::WrongCurrency {
            found: voucher.currency.clone(),
            expected: ctx.currency.to_string(),
        });
    }
    if ctx.revocations.is_revoked(&voucher.id) {
        return Err(Refusal::Revoked);
    }
    if let RedemptionState::Redeemed {
        at,
        lane,
        receipt_id,
    } = ctx.state
    {
        return Err(Refusal::AlreadyRedeemed {
            at: *at,
            lane: lane.clone(),
            receipt_id: receipt_id.clone(),
        });
    }
    check_window(voucher, &ctx.clock)?;
    if let Some(bound) = &voucher.customer {
        match ctx.customer_id {
            None => return Err(Refusal::CustomerNotIdentified),
            Some(customer) if !bound.matches(customer) => {
                return Err(Refusal::BoundToAnotherCustomer)
            }
            Some(_) => {}
        }
    }
    if let RedemptionState::Reserved { lane, until, .. } = ctx.state {
        if lane != ctx.lane && ctx.clock.now < *until {
            return Err(Refusal::ReservedElsewhere {
                lane: lane.clone(),
                until: *until,
            });
        }
    }
    Ok(Discount {
        voucher_id: voucher.id,
        benefit: voucher.benefit.clone(),
        currency: voucher.currency.clone(),
        min_spend: voucher.min_spend,
        valid_until: voucher.valid_until,
    })
}

/// The goods total a minimum spend is measured against: the sum of the receipt's positive
/// line amounts (goods before discount lines, whichever way the till writes its discounts).
pub fn goods_total(receipt: &Receipt) -> Money {
    receipt
        .lines
        .iter()
        .filter(|line| line.amount.0 > 0)
        .map(|line| line.amount)
        .sum()
}

/// The receipt-side check of a voucher the receipt names: a sale, minimum spend met, the free
/// item present. Returns the discount's amount (never more than the goods total).
pub fn check_receipt(voucher: &Voucher, receipt: &Receipt) -> Result<Money, Refusal> {
    if receipt.kind != ReceiptKind::Sale {
        return Err(Refusal::NotASale);
    }
    let spent = goods_total(receipt);
    if let Some(required) = voucher.min_spend {
        if spent < required {
            return Err(Refusal::MinimumSpendNotMet { required, spent });
        }
    }
    let amount = match &voucher.benefit {
        Benefit::AmountOff(value) => *value,
        // Rounded half up to the minor unit.
        Benefit::PercentOff(percent) => Money((spent.0 * i64::from(*percent) + 50) / 100),
        Benefit::FreeItem { sku } => {
            let line = receipt
                .lines
                .iter()
                .find(|line| &line.sku == sku && line.amount.0 > 0)
                .ok_or_else(|| Refusal::ItemNotOnReceipt { sku: sku.clone() })?;
            line.unit_price.unwrap_or_else(|| {
                // One unit's share of the line (quantities are in thousandths).
                if line.qty_milli >= 1000 {
                    Money(line.amount.0 * 1000 / line.qty_milli)
                } else {
                    line.amount
                }
            })
        }
    };
    Ok(Money(amount.0.min(spent.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::ReceiptLine;
    use ed25519_dalek::SigningKey;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3u8; 32])
    }

    fn voucher() -> Voucher {
        Voucher {
            id: VoucherId([1; 10]),
            key_id: "store-1".into(),
            currency: "EUR".into(),
            benefit: Benefit::AmountOff(Money(500)),
            valid_from: "2026-01-01T00:00:00Z".parse().expect("time"),
            valid_until: "2026-04-01T00:00:00Z".parse().expect("time"),
            valid_from_issue: false,
            min_spend: Some(Money(2000)),
            customer: None,
        }
    }

    fn t(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    fn clock(trusted: bool, now: &str, floor: Option<&str>) -> Clock {
        Clock {
            now: t(now),
            trusted,
            floor: floor.map(t),
        }
    }

    fn receipt(amounts: &[(&str, i64, i64)]) -> Receipt {
        Receipt {
            id: "R-9".into(),
            lane: "1".into(),
            timestamp: t("2026-02-01T10:00:00Z"),
            kind: ReceiptKind::Sale,
            currency: "EUR".into(),
            total: Money(amounts.iter().map(|a| a.2).sum()),
            card: None,
            rewards: vec![],
            redemptions: Vec::new(),
            lines: amounts
                .iter()
                .map(|(sku, qty, amount)| ReceiptLine {
                    sku: sku.to_string(),
                    name: sku.to_string(),
                    qty_milli: *qty,
                    unit_price: None,
                    amount: Money(*amount),
                    category: None,
                })
                .collect(),
        }
    }

    #[test]
    fn window_with_trusted_clock() {
        let v = voucher();
        assert_eq!(
            check_window(&v, &clock(true, "2026-02-01T00:00:00Z", None)),
            Ok(())
        );
        assert!(matches!(
            check_window(&v, &clock(true, "2026-04-01T00:00:00Z", None)),
            Err(Refusal::Expired { .. })
        ));
        assert!(matches!(
            check_window(&v, &clock(true, "2025-12-31T23:59:59Z", None)),
            Err(Refusal::NotYetValid { .. })
        ));
        // A trusted clock never goes below the floor.
        assert!(matches!(
            check_window(
                &v,
                &clock(true, "2026-02-01T00:00:00Z", Some("2026-05-01T00:00:00Z"))
            ),
            Err(Refusal::Expired { .. })
        ));
    }

    #[test]
    fn window_with_untrusted_clock_draws_only_certain_conclusions() {
        let mut v = voucher();
        // Clock in 1970 (no RTC), no floor: a voucher dated to start later is not activated.
        assert!(matches!(
            check_window(&v, &clock(false, "1970-01-01T00:00:10Z", None)),
            Err(Refusal::ClockUntrusted { .. })
        ));
        // Floor past the start: accepted, whatever the clock says.
        assert_eq!(
            check_window(
                &v,
                &clock(false, "1970-01-01T00:00:10Z", Some("2026-01-02T00:00:00Z"))
            ),
            Ok(())
        );
        // Untrusted clock far past the end, floor before it: not expired wrongly.
        assert_eq!(
            check_window(
                &v,
                &clock(false, "2030-01-01T00:00:00Z", Some("2026-03-01T00:00:00Z"))
            ),
            Ok(())
        );
        // Floor past the end: certainly expired.
        assert!(matches!(
            check_window(
                &v,
                &clock(false, "1970-01-01T00:00:00Z", Some("2026-04-02T00:00:00Z"))
            ),
            Err(Refusal::Expired { .. })
        ));
        // A voucher valid from its issue is started by its very existence.
        v.valid_from_issue = true;
        assert_eq!(
            check_window(&v, &clock(false, "1970-01-01T00:00:10Z", None)),
            Ok(())
        );
    }

    #[test]
    fn minimum_spend_and_amounts_on_the_receipt() {
        let v = voucher();
        assert_eq!(
            check_receipt(&v, &receipt(&[("a", 1000, 1500), ("d", 1000, -500)])),
            Err(Refusal::MinimumSpendNotMet {
                required: Money(2000),
                spent: Money(1500)
            })
        );
        assert_eq!(
            check_receipt(&v, &receipt(&[("a", 1000, 2000), ("d", 1000, -500)])),
            Ok(Money(500))
        );
        let mut pct = voucher();
        pct.benefit = Benefit::PercentOff(15);
        pct.min_spend = None;
        assert_eq!(
            check_receipt(&pct, &receipt(&[("a", 1000, 1003)])),
            Ok(Money(150))
        );
        let mut free = voucher();
        free.benefit = Benefit::FreeItem { sku: "42".into() };
        free.min_spend = None;
        assert_eq!(
            check_receipt(&free, &receipt(&[("a", 1000, 100), ("42", 2000, 398)])),
            Ok(Money(199))
        );
        assert_eq!(
            check_receipt(&free, &receipt(&[("a", 1000, 100)])),
            Err(Refusal::ItemNotOnReceipt { sku: "42".into() })
        );
        let mut ret = receipt(&[("a", 1000, 5000)]);
        ret.kind = ReceiptKind::Return {
            original_receipt_id: "R-1".into(),
        };
        assert_eq!(check_receipt(&v, &ret), Err(Refusal::NotASale));
        // Never more than the goods.
        let mut big = voucher();
        big.min_spend = None;
        assert_eq!(
            check_receipt(&big, &receipt(&[("a", 1000, 300)])),
            Ok(Money(300))
        );
    }

    #[test]
    fn own_lane_rescan_is_valid_and_expired_reservation_is_free() {
        let text = voucher().sign(&key()).expect("sign");
        let signed = format::decode(&text).expect("decode");
        let keys = TrustedKeys::new();
        keys.insert("store-1", key().verifying_key()).expect("key");
        let revoked: BTreeSet<VoucherId> = BTreeSet::new();
        let state = RedemptionState::Reserved {
            lane: "2".into(),
            at: t("2026-02-01T09:59:00Z"),
            until: t("2026-02-01T10:04:00Z"),
        };
        let ctx = |lane, now| CheckContext {
            keys: &keys,
            clock: Clock::trusted(t(now)),
            revocations: &revoked,
            currency: "EUR",
            lane,
            customer_id: None,
            state: &state,
        };
        assert!(matches!(
            check(&signed, &ctx("2", "2026-02-01T10:00:00Z")),
            Verdict::Valid { .. }
        ));
        assert!(matches!(
            check(&signed, &ctx("1", "2026-02-01T10:00:00Z")),
            Verdict::Refused(Refusal::ReservedElsewhere { .. })
        ));
        assert!(matches!(
            check(&signed, &ctx("1", "2026-02-01T10:05:00Z")),
            Verdict::Valid { .. }
        ));
    }

    proptest::proptest! {
        #[test]
        fn percent_discount_never_exceeds_goods(spent in 1i64..100_000_000, percent in 1u8..=100) {
            let mut v = voucher();
            v.benefit = Benefit::PercentOff(percent);
            v.min_spend = None;
            let amount = check_receipt(&v, &receipt(&[("a", 1000, spent)])).expect("valid");
            proptest::prop_assert!(amount.0 >= 0 && amount.0 <= spent);
            let exact = spent * i64::from(percent);
            proptest::prop_assert!((amount.0 * 100 - exact).abs() <= 50);
        }
    }
}
