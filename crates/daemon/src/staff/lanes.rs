//! "Now at the lanes": each lane's identified customer, published through a
//! `tokio::sync::watch` the page long-polls. The source is the gateway's broadcast of every
//! answer ([`crate::gateway::GatewayHandle::answers`]): a `customer` or `enrolled` answer is
//! the moment the gateway tells the till who the customer is, and the lane's `points` answer
//! closes that sale. No lane actor is changed for it, and the page sees exactly what the till saw.

use jiff::Timestamp;
use loyalty_protocol::till::Response;
use std::collections::BTreeMap;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Who is at one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtLane {
    /// Customer id.
    pub customer_id: String,
    /// The card scanned.
    pub card: String,
    /// Name, when the CRM sent one.
    pub name: Option<String>,
    /// Tier.
    pub tier: String,
    /// Balance the till was told.
    pub balance: i64,
    /// Enrolled by this scan.
    pub enrolled: bool,
    /// When the card was scanned.
    pub since: Timestamp,
    /// Points the sale earned, once its receipt was answered.
    pub checked_out: Option<i64>,
}

/// Every lane's customer, with a version that changes on every update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LanesNow {
    /// Bumped on every change (the page asks for changes after the version it shows).
    pub version: u64,
    /// By lane name.
    pub lanes: BTreeMap<String, AtLane>,
}

/// Applies one answer to the lanes; true when it changed them.
pub fn apply(now: &mut LanesNow, answer: &Response, at: Timestamp) -> bool {
    match answer {
        Response::Customer {
            lane,
            customer_id,
            card,
            name,
            tier,
            balance,
            ..
        } => set(
            now,
            lane,
            customer_id,
            card,
            name.clone(),
            tier,
            *balance,
            false,
            at,
        ),
        Response::Enrolled {
            lane,
            customer_id,
            card,
            tier,
            balance,
            ..
        } => set(now, lane, customer_id, card, None, tier, *balance, true, at),
        Response::Points {
            lane,
            customer_id: Some(customer_id),
            earned,
            balance,
            ..
        } => match now.lanes.get_mut(lane) {
            Some(at_lane) if &at_lane.customer_id == customer_id => {
                at_lane.checked_out = Some(*earned);
                if let Some(balance) = balance {
                    at_lane.balance = *balance;
                }
                now.version += 1;
                true
            }
            _ => false,
        },
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn set(
    now: &mut LanesNow,
    lane: &str,
    customer_id: &str,
    card: &str,
    name: Option<String>,
    tier: &str,
    balance: i64,
    enrolled: bool,
    at: Timestamp,
) -> bool {
    now.lanes.insert(
        lane.to_string(),
        AtLane {
            customer_id: customer_id.to_string(),
            card: card.to_string(),
            name,
            tier: tier.to_string(),
            balance,
            enrolled,
            since: at,
            checked_out: None,
        },
    );
    now.version += 1;
    true
}

/// Follows `answers` into `lanes` until `shutdown`.
pub async fn follow(
    mut answers: broadcast::Receiver<Response>,
    lanes: watch::Sender<LanesNow>,
    shutdown: CancellationToken,
) {
    loop {
        let answer = tokio::select! {
            () = shutdown.cancelled() => return,
            answer = answers.recv() => answer,
        };
        match answer {
            Ok(answer) => {
                lanes.send_if_modified(|now| apply(now, &answer, Timestamp::now()));
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "staff page: missed lane answers (busy store)");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_shows_the_customer_and_the_receipt_closes_the_sale() {
        let mut now = LanesNow::default();
        let at = Timestamp::from_second(1_800_000_000).expect("time");
        let scan = Response::Customer {
            lane: "3".into(),
            customer_id: "c-1".into(),
            card: "2990000000019".into(),
            name: Some("Erika".into()),
            tier: "gold".into(),
            balance: 120,
            replaced_card: None,
            screen: Default::default(),
        };
        assert!(apply(&mut now, &scan, at));
        assert_eq!(now.lanes["3"].name.as_deref(), Some("Erika"));
        let points = Response::Points {
            lane: "3".into(),
            receipt_id: "R-1".into(),
            customer_id: Some("c-1".into()),
            earned: 12,
            balance: Some(132),
            duplicate: false,
            vouchers: vec![],
            unknown_categories: vec![],
            redemptions: vec![],
        };
        assert!(apply(&mut now, &points, at));
        assert_eq!(now.lanes["3"].checked_out, Some(12));
        assert_eq!(now.lanes["3"].balance, 132);
        assert_eq!(now.version, 2);
    }
}
