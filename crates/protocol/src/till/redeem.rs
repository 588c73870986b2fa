//! Paying with points on the till's contract (SPEC 2.3): the `redeem` request
//! (`{"reference", "customer_id", "points"}` or `"amount"` instead of points) and the `void`
//! request a till sends, the per-reference result a `points` answer carries, and the request
//! messages the tools send. The `redemption` and `void` answers are [`super::Response`]
//! variants.

use super::{decimal_text, WireError};
use loyalty_core::money::Money;
use loyalty_core::redemption::Ask;
use serde::{Deserialize, Serialize};

/// The longest reference (and customer id) a till may send.
const MAX_ID: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemJson {
    reference: String,
    customer_id: String,
    #[serde(default)]
    points: Option<i64>,
    #[serde(default)]
    amount: Option<Box<serde_json::value::RawValue>>,
}

/// A till's `redeem` request, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemRequest {
    /// The till's id of this redemption (idempotency key; the receipt names it).
    pub reference: String,
    /// Whose points.
    pub customer_id: String,
    /// Points, or an amount to convert into points.
    pub ask: Ask,
}

fn check_id(field: &str, value: &str) -> Result<(), WireError> {
    if value.is_empty() || value.chars().count() > MAX_ID || value.chars().any(char::is_control) {
        return Err(WireError::Field {
            field: field.into(),
            message: format!("must be 1 to {MAX_ID} characters without control characters"),
        });
    }
    Ok(())
}

/// Parses a `redeem` request; `decimals` is the store currency's (for `amount`).
pub fn parse_redeem(payload: &[u8], decimals: u32) -> Result<RedeemRequest, WireError> {
    let json: RedeemJson =
        serde_json::from_slice(payload).map_err(|err| WireError::Malformed(err.to_string()))?;
    check_id("reference", &json.reference)?;
    check_id("customer_id", &json.customer_id)?;
    let ask = match (json.points, &json.amount) {
        (Some(points), None) => Ask::Points(points),
        (None, Some(raw)) => {
            let text = decimal_text(raw, "amount")?;
            Ask::Amount(
                Money::parse(&text, decimals).map_err(|err| WireError::Field {
                    field: "amount".into(),
                    message: err.to_string(),
                })?,
            )
        }
        _ => {
            return Err(WireError::Field {
                field: "points".into(),
                message: "give either \"points\" (an integer) or \"amount\" (a decimal string)"
                    .into(),
            })
        }
    };
    Ok(RedeemRequest {
        reference: json.reference,
        customer_id: json.customer_id,
        ask,
    })
}

/// Reads a `void` request: an empty payload or a JSON object (its fields, such as a
/// `reason`, are informational and ignored). Returns what is wrong otherwise.
pub fn parse_void(payload: &[u8]) -> Result<(), WireError> {
    let text = String::from_utf8_lossy(payload);
    if text.trim().is_empty() {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(WireError::Malformed(
            "a void is an empty message or a JSON object".into(),
        )),
        Err(err) => Err(WireError::Malformed(err.to_string())),
    }
}

/// What a receipt did with one reference it named in `redemptions`, in its `points` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedemptionResultJson {
    /// The reference.
    pub reference: String,
    /// `committed`, or why not: `unknown`, `expired`, `released`, `insufficient`.
    pub status: String,
    /// Points spent (0 unless committed).
    pub points: i64,
}

/// A `redeem` request as a till sends it on `{prefix}/lane/{lane}/redeem` (for the tools and
/// tests that play a till); [`parse_redeem`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedeemMessage {
    /// An amount to convert into points (instead of `points`), decimal text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// Whose points.
    pub customer_id: String,
    /// Points to redeem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<i64>,
    /// The till's reference (the receipt names it in `redemptions`).
    pub reference: String,
}

impl RedeemMessage {
    /// `points` of `customer_id` under `reference`.
    pub fn points(reference: &str, customer_id: &str, points: i64) -> Self {
        RedeemMessage {
            amount: None,
            customer_id: customer_id.into(),
            points: Some(points),
            reference: reference.into(),
        }
    }

    /// Points worth `amount` (decimal text) of `customer_id` under `reference`.
    pub fn amount(reference: &str, customer_id: &str, amount: &str) -> Self {
        RedeemMessage {
            amount: Some(amount.into()),
            customer_id: customer_id.into(),
            points: None,
            reference: reference.into(),
        }
    }

    /// The JSON bytes a till publishes.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain strings and numbers: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
