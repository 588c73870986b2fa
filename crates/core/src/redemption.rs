//! Paying with points (SPEC 2.3 `redeem`): the program's point value, the conversion between
//! points and the discount the till applies (an amount asked for is rounded up to whole
//! points, so the discount is never less than the amount asked), and the statuses a
//! redemption goes through. Plain arithmetic: the store keeps the reservations.

use crate::money::Money;

/// What a redemption request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A number of points.
    Points(i64),
    /// An amount off the sale, converted into points at the point value.
    Amount(Money),
}

/// Why a request cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// Zero or negative.
    #[error("must be positive")]
    NotPositive,
    /// Beyond the largest redemption the program allows.
    #[error("more than the largest redemption ({0} points)")]
    TooLarge(i64),
}

/// The program's settings for paying with points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointValue {
    /// What one point is worth, in minor units of the store's currency (at least 1).
    pub minor_per_point: i64,
    /// The most points one redemption may take.
    pub max_points: i64,
}

impl Default for PointValue {
    fn default() -> Self {
        PointValue {
            minor_per_point: 1,
            max_points: 1_000_000,
        }
    }
}

impl PointValue {
    /// The points a request takes and the discount they give.
    pub fn price(&self, ask: Ask) -> Result<(i64, Money), AskError> {
        let per = self.minor_per_point.max(1);
        let points = match ask {
            Ask::Points(points) => points,
            // Rounded up: asking for 0.05 at 0.02 a point takes 3 points (0.06 off).
            Ask::Amount(Money(minor)) if minor > 0 => minor / per + i64::from(minor % per != 0),
            Ask::Amount(_) => return Err(AskError::NotPositive),
        };
        if points <= 0 {
            return Err(AskError::NotPositive);
        }
        if points > self.max_points {
            return Err(AskError::TooLarge(self.max_points));
        }
        Ok((points, self.discount(points)))
    }

    /// The discount `points` give.
    pub fn discount(&self, points: i64) -> Money {
        Money(points.saturating_mul(self.minor_per_point.max(1)))
    }
}

/// Where a redemption stands, as the lane is told (`redemption` answers, and per reference in
/// a receipt's `points` answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Held for the lane's open sale until it expires; the receipt naming it commits it.
    Reserved,
    /// The customer's available points (balance less other open reservations) do not cover it;
    /// nothing was held.
    Insufficient,
    /// No such customer.
    UnknownCustomer,
    /// The reservation ran out before a receipt named it: released, never committed.
    Expired,
    /// A receipt named it: the points are spent (once).
    Committed,
    /// A void released it (or a receipt could not commit it): the points are free again.
    Released,
    /// The reference is taken by a redemption for another customer or number of points.
    Conflict,
    /// A receipt named a reference this store does not know.
    Unknown,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Reserved => "reserved",
            Status::Insufficient => "insufficient",
            Status::UnknownCustomer => "unknown_customer",
            Status::Expired => "expired",
            Status::Committed => "committed",
            Status::Released => "released",
            Status::Conflict => "conflict",
            Status::Unknown => "unknown",
        }
    }

    /// Parses [`Status::as_str`].
    pub fn parse(text: &str) -> Option<Status> {
        Some(match text {
            "reserved" => Status::Reserved,
            "insufficient" => Status::Insufficient,
            "unknown_customer" => Status::UnknownCustomer,
            "expired" => Status::Expired,
            "committed" => Status::Committed,
            "released" => Status::Released,
            "conflict" => Status::Conflict,
            "unknown" => Status::Unknown,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_up_to_whole_points() {
        let value = PointValue {
            minor_per_point: 2,
            max_points: 100,
        };
        assert_eq!(value.price(Ask::Amount(Money(5))), Ok((3, Money(6))));
        assert_eq!(value.price(Ask::Points(10)), Ok((10, Money(20))));
        assert_eq!(value.price(Ask::Points(0)), Err(AskError::NotPositive));
        assert_eq!(
            value.price(Ask::Amount(Money(-1))),
            Err(AskError::NotPositive)
        );
        assert_eq!(value.price(Ask::Points(101)), Err(AskError::TooLarge(100)));
    }

    #[test]
    fn statuses_round_trip() {
        for status in [
            Status::Reserved,
            Status::Insufficient,
            Status::UnknownCustomer,
            Status::Expired,
            Status::Committed,
            Status::Released,
            Status::Conflict,
            Status::Unknown,
        ] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
    }
}
