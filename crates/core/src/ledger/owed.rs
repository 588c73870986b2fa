//! The policy for returns after conversion: a return never makes a balance negative. Its
//! clawback takes what the balance holds ([`floor_clawback`]); the rest is [`Owed`] and paid
//! first from the customer's next earnings ([`collect_owed`], [`Account::take_owed`]). Pure.

use super::{Account, Balance};

/// Points a return could not claw back at once because the balance did not hold them (they
/// had been converted into a voucher or spent): collected from the customer's next earnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    /// The sale whose points were returned.
    pub receipt_id: String,
    /// The return.
    pub cause_receipt_id: String,
    /// Points still owed (> 0).
    pub points: i64,
}

/// The policy for a clawback of `claw` points against `balance`: the points taken now (never
/// more than the balance's total holds, so it never goes below zero) and the points owed.
pub fn floor_clawback(balance: Balance, claw: i64) -> (i64, i64) {
    let claw = claw.max(0);
    let now = claw.min(balance.total.max(0));
    (now, claw - now)
}

/// What `earned` new points pay off of `owed`, oldest first: `(index in owed, points)`.
pub fn collect_owed(owed: &[Owed], earned: i64) -> Vec<(usize, i64)> {
    let mut left = earned.max(0);
    let mut out = Vec::new();
    for (index, debt) in owed.iter().enumerate() {
        if left == 0 {
            break;
        }
        let take = debt.points.max(0).min(left);
        if take > 0 {
            out.push((index, take));
            left -= take;
        }
    }
    out
}

impl Account {
    /// Records points a return owes.
    pub fn owe(&mut self, owed: Owed) {
        if owed.points > 0 {
            self.owed.push(owed);
        }
    }

    /// Collects what `earned` new points pay off of the debts, oldest first
    /// ([`collect_owed`]): returns each part collected (its return and sale, and the points
    /// taken), which the caller journals as clawback entries.
    pub fn take_owed(&mut self, earned: i64) -> Vec<Owed> {
        let mut taken = Vec::new();
        for (index, points) in collect_owed(&self.owed, earned) {
            if let Some(debt) = self.owed.get_mut(index) {
                debt.points -= points;
                taken.push(Owed {
                    points,
                    ..debt.clone()
                });
            }
        }
        self.owed.retain(|debt| debt.points > 0);
        taken
    }

    /// Points returns still owe in all.
    pub fn owed_total(&self) -> i64 {
        self.owed.iter().map(|debt| debt.points).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_after_conversion_floors_at_zero_and_the_rest_is_collected_later() {
        let balance = |total| Balance {
            total,
            available: total,
            pending: 0,
        };
        // 10 earned, converted into a voucher: the whole sale is returned.
        assert_eq!(floor_clawback(balance(0), 10), (0, 10));
        assert_eq!(floor_clawback(balance(3), 10), (3, 7));
        assert_eq!(floor_clawback(balance(50), 10), (10, 0));
        assert_eq!(floor_clawback(balance(-5), 10), (0, 10));
        let mut account = Account::default();
        account.owe(Owed {
            receipt_id: "S-1".into(),
            cause_receipt_id: "R-1".into(),
            points: 7,
        });
        account.owe(Owed {
            receipt_id: "S-2".into(),
            cause_receipt_id: "R-2".into(),
            points: 5,
        });
        assert_eq!(account.owed_total(), 12);
        // The next sale earns 9: 7 pay the first debt, 2 the second, oldest first.
        assert_eq!(collect_owed(&account.owed, 9), vec![(0, 7), (1, 2)]);
        let taken = account.take_owed(9);
        assert_eq!(
            taken
                .iter()
                .map(|t| (t.cause_receipt_id.as_str(), t.points))
                .collect::<Vec<_>>(),
            vec![("R-1", 7), ("R-2", 2)]
        );
        assert_eq!(account.owed_total(), 3);
        assert_eq!(account.owed[0].cause_receipt_id, "R-2");
        assert_eq!(collect_owed(&account.owed, 0), vec![]);
        assert_eq!(collect_owed(&account.owed, 100), vec![(0, 3)]);
    }
}
