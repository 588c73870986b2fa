//! Loyalty customers as the store knows them: identity, card, tier and the last balance the CRM
//! confirmed; their consent ([`Consent`]) and what it lets leave the box
//! ([`receipt_lines_linked`]). Pure data and checks; `store` persists them.
//!
//! Invariant: a customer id and a card number are 1 to 64 printable characters without NUL
//! (the store uses NUL as a key separator).
//!
//! Invariant: a receipt's line items leave the box tied to a customer only when she gave
//! `profiling` consent; unknown consent counts as no ([`receipt_lines_linked`]).

use crate::ledger::Confirmed;
use jiff::Timestamp;

/// Where a customer record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerOrigin {
    /// Enrolled in this store (an unknown card of the program's range was scanned).
    Local,
    /// Sent down by the CRM.
    Crm,
}

/// A loyalty customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// Globally unique id (`{store_id}-{random hex}` for local enrolments, else the CRM's).
    pub id: String,
    /// Card number, if the customer has a card.
    pub card: Option<String>,
    /// Display name (from the CRM), if known.
    pub name: Option<String>,
    /// Tier name (from the CRM), if any.
    pub tier: Option<String>,
    /// When the customer was enrolled.
    pub enrolled_at: Timestamp,
    /// Where the record came from.
    pub origin: CustomerOrigin,
    /// The last balance the CRM confirmed, if any.
    pub confirmed: Option<Confirmed>,
}

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty, too long, or containing control characters.
    #[error("'{0}' is not a valid identifier (1 to 64 printable characters)")]
    Invalid(String),
}

/// Checks a customer id, card number or other key part.
pub fn check_id(text: &str) -> Result<(), IdError> {
    if text.is_empty() || text.chars().count() > 64 || text.chars().any(|c| c.is_control()) {
        return Err(IdError::Invalid(text.chars().take(80).collect()));
    }
    Ok(())
}

/// What a customer agreed to, as head office recorded it (SPEC 2.5 `consent`). Where a
/// customer's consent is not known (enrolled in the store, or head office sent none) it is
/// `None`, which counts as no for every purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Consent {
    /// Personal offers and messages.
    pub marketing: bool,
    /// Use of the purchase history for personalisation and analysis tied to her.
    pub profiling: bool,
}

/// Whether a receipt applied to a customer of `consent` may leave the box with its line items
/// (articles, categories) tied to her: only with `profiling` consent. Without it (or while it
/// is unknown: data minimisation, consent is never presumed) the `receipt` event carries the
/// customer, the totals and the points, but no lines.
pub fn receipt_lines_linked(consent: Option<Consent>) -> bool {
    consent.is_some_and(|c| c.profiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_linked_only_with_profiling_consent() {
        assert!(!receipt_lines_linked(None), "unknown consent is no consent");
        assert!(!receipt_lines_linked(Some(Consent::default())));
        let marketing_only = Consent {
            marketing: true,
            profiling: false,
        };
        assert!(!receipt_lines_linked(Some(marketing_only)));
        let profiling = Consent {
            marketing: false,
            profiling: true,
        };
        assert!(receipt_lines_linked(Some(profiling)));
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("2990000000019").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a\0b").is_err());
        assert!(check_id(&"x".repeat(65)).is_err());
    }
}
