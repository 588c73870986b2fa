//! The changes page's offers and clips (`loyalty_protocol::crm::WireOffer`, `WireClip`) as the
//! store keeps them (`loyalty_core::offers::Offer`): times, amounts and the multiplier read
//! exactly; an offer that cannot be read (no or both targets, a bad time, amount or factor, no
//! benefit) is skipped with a warning naming the offer and the field, never the page.

use jiff::Timestamp;
use loyalty_core::money::{currency_decimals, Money};
use loyalty_core::offers::{parse_factor, Conditions, Offer, OfferBenefit, Target};
use loyalty_protocol::crm::{WireClip, WireOffer, WireOfferBenefit};
use loyalty_store::offers::{CrmClip, CrmOfferChange};

/// One wire offer as a change for the store, or why it was skipped.
pub fn offer_change(wire: WireOffer, currency: &str) -> Result<CrmOfferChange, String> {
    if wire.withdrawn {
        return Ok(CrmOfferChange::Withdraw(wire.offer_id));
    }
    let decimals = currency_decimals(currency);
    let money = |text: &str, field: &str| {
        Money::parse(text, decimals)
            .ok()
            .filter(|m| m.0 >= 0)
            .ok_or_else(|| format!("{field}: '{text}' is not an amount in {currency}"))
    };
    let time = |text: &Option<String>, field: &str| -> Result<Option<Timestamp>, String> {
        text.as_deref()
            .map(|t| {
                t.parse::<Timestamp>()
                    .map_err(|e| format!("{field}: '{t}' is not an RFC 3339 time ({e})"))
            })
            .transpose()
    };
    let target = match (wire.customer_id, wire.segment) {
        (Some(id), None) => Target::Customer(id),
        (None, Some(tag)) => Target::Segment(tag),
        _ => return Err("exactly one of customer_id and segment must be given".into()),
    };
    let benefit = match wire.benefit {
        None => return Err("benefit: missing".into()),
        Some(WireOfferBenefit::BonusPoints(points)) if (1..=1_000_000).contains(&points) => {
            OfferBenefit::BonusPoints(points)
        }
        Some(WireOfferBenefit::BonusPoints(points)) => {
            return Err(format!(
                "benefit.bonus_points: {points} is not between 1 and 1000000"
            ))
        }
        Some(WireOfferBenefit::Multiplier(text)) => OfferBenefit::Multiplier {
            hundredths: parse_factor(&text).ok_or_else(|| {
                format!("benefit.multiplier: '{text}' is not a factor from 1 to 100")
            })?,
        },
        Some(WireOfferBenefit::AmountOff(text)) => {
            OfferBenefit::AmountOff(money(&text, "benefit.amount_off")?)
        }
    };
    let conditions = wire.conditions;
    Ok(CrmOfferChange::Upsert(Box::new(Offer {
        id: wire.offer_id,
        target,
        valid_from: time(&wire.valid_from, "valid_from")?,
        valid_until: time(&wire.valid_until, "valid_until")?,
        text: wire.text,
        conditions: Conditions {
            gtins: conditions.gtins,
            brands: conditions.brands,
            categories: conditions.categories,
            min_spend: conditions
                .min_spend
                .as_deref()
                .map(|m| money(m, "conditions.min_spend"))
                .transpose()?,
            exclude_categories: conditions.exclude_categories,
        },
        benefit,
        requires_activation: wire.requires_activation,
        requires_marketing: wire.requires_marketing,
        max_uses_per_customer: wire.max_uses_per_customer.max(1),
    })))
}

/// The page's offers as changes; unreadable ones are logged and skipped.
pub fn offer_changes(offers: Vec<WireOffer>, currency: &str) -> Vec<CrmOfferChange> {
    offers
        .into_iter()
        .filter_map(|wire| {
            let id = wire.offer_id.clone();
            match offer_change(wire, currency) {
                Ok(change) => Some(change),
                Err(reason) => {
                    tracing::warn!(offer_id = %id, %reason,
                        "an offer from the CRM was skipped; head office must correct and send it again");
                    None
                }
            }
        })
        .collect()
}

/// The page's clips.
pub fn clips(clips: Vec<WireClip>) -> Vec<CrmClip> {
    clips
        .into_iter()
        .map(|c| CrmClip {
            customer_id: c.customer_id,
            offer_id: c.offer_id,
            withdrawn: c.withdrawn,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: &str) -> WireOffer {
        serde_json::from_str(json).expect("wire offer")
    }

    #[test]
    fn offers_are_read_exactly_or_skipped_with_the_field() {
        let change = offer_change(
            wire(
                r#"{"offer_id":"O1","customer_id":"C1","valid_until":"2027-04-01T00:00:00Z",
                    "text":"x","conditions":{"min_spend":"5.50"},"benefit":{"multiplier":"1.5"}}"#,
            ),
            "EUR",
        )
        .expect("offer");
        let CrmOfferChange::Upsert(offer) = change else {
            panic!("an upsert");
        };
        assert_eq!(offer.benefit, OfferBenefit::Multiplier { hundredths: 150 });
        assert_eq!(offer.conditions.min_spend, Some(Money(550)));
        assert_eq!(offer.max_uses_per_customer, 1);
        for (json, field) in [
            (
                r#"{"offer_id":"O1","benefit":{"bonus_points":5}}"#,
                "customer_id",
            ),
            (
                r#"{"offer_id":"O1","segment":"s","benefit":{"bonus_points":0}}"#,
                "bonus_points",
            ),
            (
                r#"{"offer_id":"O1","segment":"s","benefit":{"multiplier":"0.5"}}"#,
                "multiplier",
            ),
            (
                r#"{"offer_id":"O1","segment":"s","valid_from":"soon","benefit":{"bonus_points":5}}"#,
                "valid_from",
            ),
            (r#"{"offer_id":"O1","segment":"s"}"#, "benefit"),
        ] {
            let err = offer_change(wire(json), "EUR").expect_err(json);
            assert!(err.contains(field), "{err}");
        }
        assert_eq!(
            offer_change(wire(r#"{"offer_id":"O1","withdrawn":true}"#), "EUR"),
            Ok(CrmOfferChange::Withdraw("O1".into()))
        );
    }
}
