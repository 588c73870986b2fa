//! Lane sessions (SPEC 2.3): which customer a lane's receipt belongs to. Pure state machine over
//! plain types; the gateway feeds it card scans and receipts with their times and acts on what
//! it returns.
//!
//! Rules: a card scanned at a lane attaches to that lane's next receipt within
//! `card_before_receipt`; a card scanned within `card_after_receipt` after a receipt that had no
//! card attaches to it retroactively; a card printed in or sent with the receipt itself wins; a
//! second card before the receipt replaces the first (and says so).

use jiff::{SignedDuration, Timestamp};

/// A customer identified at a lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    /// Customer id.
    pub customer_id: String,
    /// The card that identified them.
    pub card: String,
}

/// What to do with a card just scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardDecision {
    /// Hold it for the lane's next receipt. `replaced` names the card it replaced, if any.
    HoldForNextReceipt {
        /// The previously held card.
        replaced: Option<String>,
    },
    /// Attach it to this recent card-less receipt now.
    AttachTo {
        /// The receipt that gets the customer.
        receipt_id: String,
    },
}

/// One lane's session state.
#[derive(Debug, Clone)]
pub struct LaneSession {
    card_before_receipt: SignedDuration,
    card_after_receipt: SignedDuration,
    held: Option<(Identified, Timestamp)>,
    last_cardless_receipt: Option<(String, Timestamp)>,
}

impl LaneSession {
    /// A lane with the configured windows.
    pub fn new(card_before_receipt: SignedDuration, card_after_receipt: SignedDuration) -> Self {
        LaneSession {
            card_before_receipt,
            card_after_receipt,
            held: None,
            last_cardless_receipt: None,
        }
    }

    /// A card was scanned at `now`.
    pub fn on_card(&mut self, who: Identified, now: Timestamp) -> CardDecision {
        if let Some((receipt_id, at)) = self.last_cardless_receipt.take() {
            if now.duration_since(at) <= self.card_after_receipt && now >= at {
                return CardDecision::AttachTo { receipt_id };
            }
        }
        let replaced = self
            .held
            .take()
            .filter(|(_, at)| now.duration_since(*at) <= self.card_before_receipt)
            .map(|(previous, _)| previous.card)
            .filter(|previous| *previous != who.card);
        self.held = Some((who, now));
        CardDecision::HoldForNextReceipt { replaced }
    }

    /// A receipt arrived at `now`. `in_receipt` is the customer named by the receipt itself
    /// (it wins). Returns the customer the receipt belongs to; a held card is consumed either
    /// way.
    pub fn on_receipt(
        &mut self,
        in_receipt: Option<Identified>,
        now: Timestamp,
    ) -> Option<Identified> {
        let held = self
            .held
            .take()
            .filter(|(_, at)| now.duration_since(*at) <= self.card_before_receipt)
            .map(|(who, _)| who);
        in_receipt.or(held)
    }

    /// A receipt was applied; `had_customer` false opens the retroactive window for it.
    pub fn on_receipt_applied(&mut self, receipt_id: &str, had_customer: bool, now: Timestamp) {
        self.last_cardless_receipt = if had_customer {
            None
        } else {
            Some((receipt_id.to_string(), now))
        };
    }

    /// The card currently held for the next receipt, if still within its window.
    pub fn held_card(&self, now: Timestamp) -> Option<&Identified> {
        self.held
            .as_ref()
            .filter(|(_, at)| now.duration_since(*at) <= self.card_before_receipt)
            .map(|(who, _)| who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid time")
    }

    fn who(card: &str) -> Identified {
        Identified {
            customer_id: format!("C-{card}"),
            card: card.into(),
        }
    }

    fn lane() -> LaneSession {
        LaneSession::new(
            SignedDuration::from_secs(300),
            SignedDuration::from_secs(60),
        )
    }

    #[test]
    fn card_before_receipt_attaches_within_window() {
        let mut lane = lane();
        assert_eq!(
            lane.on_card(who("1"), t(0)),
            CardDecision::HoldForNextReceipt { replaced: None }
        );
        assert_eq!(lane.on_receipt(None, t(100)), Some(who("1")));
        // Consumed: the next receipt has no customer.
        assert_eq!(lane.on_receipt(None, t(110)), None);
    }

    #[test]
    fn card_expires_after_window() {
        let mut lane = lane();
        lane.on_card(who("1"), t(0));
        assert_eq!(lane.on_receipt(None, t(301)), None);
    }

    #[test]
    fn card_in_receipt_wins() {
        let mut lane = lane();
        lane.on_card(who("1"), t(0));
        assert_eq!(lane.on_receipt(Some(who("2")), t(10)), Some(who("2")));
        assert_eq!(lane.held_card(t(11)), None);
    }

    #[test]
    fn second_card_replaces_first_and_says_so() {
        let mut lane = lane();
        lane.on_card(who("1"), t(0));
        assert_eq!(
            lane.on_card(who("2"), t(5)),
            CardDecision::HoldForNextReceipt {
                replaced: Some("1".into())
            }
        );
        assert_eq!(lane.on_receipt(None, t(10)), Some(who("2")));
    }

    #[test]
    fn card_after_cardless_receipt_attaches_retroactively_once() {
        let mut lane = lane();
        assert_eq!(lane.on_receipt(None, t(0)), None);
        lane.on_receipt_applied("R-1", false, t(0));
        assert_eq!(
            lane.on_card(who("1"), t(30)),
            CardDecision::AttachTo {
                receipt_id: "R-1".into()
            }
        );
        // The next card is held for the next receipt, not attached again.
        assert_eq!(
            lane.on_card(who("2"), t(31)),
            CardDecision::HoldForNextReceipt { replaced: None }
        );
    }

    #[test]
    fn card_too_late_for_retroactive_is_held() {
        let mut lane = lane();
        lane.on_receipt_applied("R-1", false, t(0));
        assert_eq!(
            lane.on_card(who("1"), t(61)),
            CardDecision::HoldForNextReceipt { replaced: None }
        );
    }
}
