//! The receipt as the core sees it, whichever way it arrived (MQTT JSON from the till, or text
//! captured from the printer stream), and its validation. Pure: no I/O, no wire formats.
//!
//! Invariant: a `Receipt` that passed [`validate`] has a non-empty id, exact amounts whose lines
//! add up to the total, positive quantities, and a total within the accepted range. A category
//! the rules do not know does not refuse a receipt (the sale happened): it is reported by
//! [`ReceiptLimits::unknown_categories`] and earns nothing (see `rules`).

use crate::money::Money;
use std::collections::BTreeSet;

/// Sale or return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptKind {
    /// Goods sold: points are earned.
    Sale,
    /// Goods returned against an earlier sale: points are clawed back.
    Return {
        /// The receipt id of the sale the goods came from.
        original_receipt_id: String,
    },
}

/// One item line. Quantities are in thousandths so that weighed goods (0.532 kg) are exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptLine {
    /// Article number, usually a GTIN (EAN-13).
    pub sku: String,
    /// Display name as printed.
    pub name: String,
    /// Quantity in thousandths (2 pieces = 2000).
    pub qty_milli: i64,
    /// Price of one unit, when the till sent it.
    pub unit_price: Option<Money>,
    /// Line amount (what the customer pays for this line; negative for a discount line).
    pub amount: Money,
    /// Merchandise category, when known.
    pub category: Option<String>,
}

/// A receipt from a lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Unique per store; the idempotency key.
    pub id: String,
    /// The lane (till) it came from.
    pub lane: String,
    /// When the till says it was made.
    pub timestamp: jiff::Timestamp,
    /// Sale or return.
    pub kind: ReceiptKind,
    /// ISO 4217 code.
    pub currency: String,
    /// The receipt total. For a return, the amount refunded (positive; see
    /// [`return_in_core_signs`]).
    pub total: Money,
    /// Loyalty card number the till already knew, if any.
    pub card: Option<String>,
    /// Voucher ids the till applied.
    pub rewards: Vec<String>,
    /// References of points reservations the till applied (pay with points): committed by
    /// this receipt.
    pub redemptions: Vec<String>,
    /// Item lines. For a return, the returned lines with positive quantities.
    pub lines: Vec<ReceiptLine>,
}

/// Limits applied by [`validate`].
#[derive(Debug, Clone)]
pub struct ReceiptLimits {
    /// The store's currency; a receipt in another is refused.
    pub currency: String,
    /// Largest accepted absolute receipt total.
    pub max_total: Money,
    /// Known merchandise categories; empty means every category is known.
    pub known_categories: BTreeSet<String>,
}

impl ReceiptLimits {
    /// The categories of `receipt`'s lines that are not among the known ones (sorted, each
    /// once); empty when every category is known or no list is configured. The receipt is
    /// applied all the same, and these lines earn nothing: the lane's answer, the receipt's
    /// CRM event and `/metrics` report them so that the operator adds them to the rules.
    pub fn unknown_categories(&self, receipt: &Receipt) -> Vec<String> {
        if self.known_categories.is_empty() {
            return Vec::new();
        }
        let unknown: BTreeSet<&String> = receipt
            .lines
            .iter()
            .filter_map(|line| line.category.as_ref())
            .filter(|category| !self.known_categories.contains(*category))
            .collect();
        unknown.into_iter().cloned().collect()
    }
}

/// Why a receipt was refused. Each names the field at fault so the till's integrator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Missing or overlong receipt id.
    #[error("receipt_id must be 1 to 64 characters")]
    BadId,
    /// A sale or return without lines.
    #[error("a receipt needs at least one line")]
    NoLines,
    /// Currency other than the store's.
    #[error("currency {found} is not the store's currency {expected}")]
    WrongCurrency {
        /// What the receipt said.
        found: String,
        /// The store's currency.
        expected: String,
    },
    /// Non-positive quantity.
    #[error("line {line}: quantity must be positive")]
    BadQuantity {
        /// 1-based line number.
        line: usize,
    },
    /// The sum of the line amounts differs from the total.
    #[error("total {total} disagrees with the sum of the lines {lines_sum}")]
    TotalMismatch {
        /// Total as received.
        total: String,
        /// Sum of lines.
        lines_sum: String,
    },
    /// A total beyond the accepted range (a scanning or integration error, not a sale).
    #[error("total {0} is outside the accepted range")]
    AbsurdTotal(String),
    /// A return without the sale it refers to.
    #[error("a return must name original_receipt_id")]
    ReturnWithoutOriginal,
    /// A negative total on a sale or return.
    #[error("total must not be negative")]
    NegativeTotal,
    /// A return whose lines and total are signed differently: they would add up if signed alike.
    #[error(
        "a return's line amounts and total must be signed alike, all positive or all negative \
         (either is accepted); this one mixes signs, so its lines do not add up to its total {total}"
    )]
    ReturnSignsMixed {
        /// The total, without its sign.
        total: String,
    },
}

/// Brings a return written with negative amounts (as many tills print and send them) to the
/// core's convention: what was returned, positive. `kind: "return"` decides that a receipt is a
/// return; its sign convention is that of its total: a negative total means every amount
/// (lines, discount lines, total) is negated. Quantities and unit prices lose their sign.
/// A return that mixes conventions is left inconsistent here and refused by [`validate`]
/// ([`ReceiptError::ReturnSignsMixed`]). The one place both edges (JSON, printed text) do this.
pub fn return_in_core_signs(total: &mut Money, lines: &mut [ReceiptLine]) {
    let negative = total.0 < 0;
    if negative {
        *total = Money(-total.0);
    }
    for line in lines {
        if negative {
            line.amount = Money(-line.amount.0);
        }
        line.qty_milli = line.qty_milli.abs();
        line.unit_price = line.unit_price.map(|price| Money(price.0.abs()));
    }
}

/// A receipt that passed [`validate`]: only [`ValidReceipt::check`] makes one, so a function
/// taking a `&ValidReceipt` (the store applying it) knows it was validated, exactly once, by
/// whoever received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidReceipt(Receipt);

impl ValidReceipt {
    /// Validates `receipt` against `limits` (see [`validate`]).
    pub fn check(receipt: Receipt, limits: &ReceiptLimits) -> Result<ValidReceipt, ReceiptError> {
        validate(&receipt, limits)?;
        Ok(ValidReceipt(receipt))
    }

    /// The receipt.
    pub fn receipt(&self) -> &Receipt {
        &self.0
    }

    /// The receipt, giving up the proof.
    pub fn into_inner(self) -> Receipt {
        self.0
    }
}

impl std::ops::Deref for ValidReceipt {
    type Target = Receipt;
    fn deref(&self) -> &Receipt {
        &self.0
    }
}

/// Checks a receipt against the store's limits. Pure; nothing is written for a refused receipt.
/// Receivers of receipts call it through [`ValidReceipt::check`].
pub fn validate(receipt: &Receipt, limits: &ReceiptLimits) -> Result<(), ReceiptError> {
    if receipt.id.is_empty() || receipt.id.chars().count() > 64 {
        return Err(ReceiptError::BadId);
    }
    if receipt.currency != limits.currency {
        return Err(ReceiptError::WrongCurrency {
            found: receipt.currency.clone(),
            expected: limits.currency.clone(),
        });
    }
    if let ReceiptKind::Return {
        original_receipt_id,
    } = &receipt.kind
    {
        if original_receipt_id.is_empty() {
            return Err(ReceiptError::ReturnWithoutOriginal);
        }
    }
    if receipt.lines.is_empty() {
        return Err(ReceiptError::NoLines);
    }
    if receipt.total.0.abs() > limits.max_total.0 {
        return Err(ReceiptError::AbsurdTotal(receipt.total.to_string()));
    }
    if receipt.total.0 < 0 {
        return Err(ReceiptError::NegativeTotal);
    }
    for (index, line) in receipt.lines.iter().enumerate() {
        if line.qty_milli <= 0 {
            return Err(ReceiptError::BadQuantity { line: index + 1 });
        }
    }
    let lines_sum: i64 = receipt.lines.iter().map(|l| l.amount.0).sum();
    if lines_sum != receipt.total.0 && matches!(receipt.kind, ReceiptKind::Return { .. }) {
        // Signed alike, the lines would add up: the till mixed the two conventions.
        let unsigned: i64 = receipt.lines.iter().map(|l| l.amount.0.abs()).sum();
        if lines_sum == -receipt.total.0 || unsigned == receipt.total.0 {
            return Err(ReceiptError::ReturnSignsMixed {
                total: receipt.total.to_string(),
            });
        }
    }
    if lines_sum != receipt.total.0 {
        return Err(ReceiptError::TotalMismatch {
            total: receipt.total.to_string(),
            lines_sum: Money(lines_sum).to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ReceiptLimits {
        ReceiptLimits {
            currency: "EUR".into(),
            max_total: Money(1_000_000),
            known_categories: ["food", "stationery"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    fn sale() -> Receipt {
        Receipt {
            id: "R-1".into(),
            lane: "1".into(),
            timestamp: "2026-11-23T10:15:00+01:00".parse().expect("valid time"),
            kind: ReceiptKind::Sale,
            currency: "EUR".into(),
            total: Money(398),
            card: None,
            rewards: vec![],
            redemptions: Vec::new(),
            lines: vec![
                ReceiptLine {
                    sku: "4006381333931".into(),
                    name: "Pencil".into(),
                    qty_milli: 2000,
                    unit_price: Some(Money(149)),
                    amount: Money(298),
                    category: Some("stationery".into()),
                },
                ReceiptLine {
                    sku: "1".into(),
                    name: "Bread".into(),
                    qty_milli: 1000,
                    unit_price: None,
                    amount: Money(100),
                    category: Some("food".into()),
                },
            ],
        }
    }

    #[test]
    fn accepts_a_consistent_sale() {
        assert_eq!(validate(&sale(), &limits()), Ok(()));
    }

    #[test]
    fn refuses_each_kind_of_bad_receipt() {
        let mut r = sale();
        r.total = Money(399);
        assert!(matches!(
            validate(&r, &limits()),
            Err(ReceiptError::TotalMismatch { .. })
        ));
        let mut r = sale();
        r.lines[0].qty_milli = -1000;
        assert_eq!(
            validate(&r, &limits()),
            Err(ReceiptError::BadQuantity { line: 1 })
        );
        // A category the rules do not know is applied and reported, not refused.
        let mut r = sale();
        r.lines[1].category = Some("tobaco".into());
        r.lines.push(r.lines[1].clone());
        r.lines[2].amount = Money(0);
        assert_eq!(validate(&r, &limits()), Ok(()));
        assert_eq!(limits().unknown_categories(&r), vec!["tobaco".to_string()]);
        assert!(limits().unknown_categories(&sale()).is_empty());
        let mut r = sale();
        r.total = Money(5_000_000);
        assert!(matches!(
            validate(&r, &limits()),
            Err(ReceiptError::AbsurdTotal(_))
        ));
        let mut r = sale();
        r.id.clear();
        assert_eq!(validate(&r, &limits()), Err(ReceiptError::BadId));
        let mut r = sale();
        r.currency = "USD".into();
        assert!(matches!(
            validate(&r, &limits()),
            Err(ReceiptError::WrongCurrency { .. })
        ));
        let mut r = sale();
        r.kind = ReceiptKind::Return {
            original_receipt_id: String::new(),
        };
        assert_eq!(
            validate(&r, &limits()),
            Err(ReceiptError::ReturnWithoutOriginal)
        );
    }
}
