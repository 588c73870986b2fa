//! Loyalty customers as the store knows them: identity, card, tier and the last balance the CRM
//! confirmed. Pure data and checks; `store` persists them.
//!
//! Invariant: a customer id and a card number are 1 to 64 printable characters without NUL
//! (the store uses NUL as a key separator).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("2990000000019").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a\0b").is_err());
        assert!(check_id(&"x".repeat(65)).is_err());
    }
}
