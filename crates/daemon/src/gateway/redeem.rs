//! "A redeem arrives", "a void arrives" (pay with points, SPEC 2.3): the lane's request priced
//! at the program's point value and reserved durably in the store before the `redemption`
//! answer; a void releases every reservation the lane's open sale holds (points and vouchers)
//! before its `void` answer. Also the expiry sweep and the reservation gauges, run by the
//! gateway's housekeeping. The receipt that names a reservation commits it (`receipt.rs`).

use super::*;
use crate::telemetry::RedemptionOutcome;
use loyalty_core::redemption::{Ask, Status};
use loyalty_protocol::till::{RedeemRequest, RedemptionResultJson};
use loyalty_store::reservations::{RedemptionResult, Reserve};

/// Paying with points, as configured (`[redeem]`).
#[derive(Debug, Clone, Copy)]
pub(super) struct RedeemSettings {
    pub value: loyalty_core::redemption::PointValue,
    pub reservation: SignedDuration,
    pub decimals: u32,
}

pub(super) async fn on_redeem(
    lane: &str,
    request: Result<RedeemRequest, String>,
    shared: &Shared,
) -> (Response, Handled) {
    let request = match request {
        Ok(request) => request,
        Err(message) => {
            return (
                Response::error(lane, None, "malformed_redeem", message),
                Handled::Refused,
            )
        }
    };
    let settings = shared.redeem;
    let (points, discount) = match settings.value.price(request.ask) {
        Ok(priced) => priced,
        Err(err) => {
            let field = match request.ask {
                Ask::Points(_) => "points",
                Ask::Amount(_) => "amount",
            };
            return (
                Response::error(
                    lane,
                    None,
                    "invalid_redeem",
                    format!("redemption {}: {field} {err}", request.reference),
                ),
                Handled::Refused,
            );
        }
    };
    let time = input_time(shared);
    let now = time.now;
    let until = now.checked_add(settings.reservation).unwrap_or(now);
    let store = shared.store.stamped(time.trusted);
    let lane_owned = lane.to_string();
    let reference = request.reference.clone();
    let customer_id = request.customer_id.clone();
    let reserved = blocking(move || {
        store.reserve_points(
            &Reserve {
                reference: &reference,
                lane: &lane_owned,
                customer_id: &customer_id,
                points,
                discount,
                until,
            },
            now,
        )
    })
    .await;
    match reserved {
        Ok(reservation) => {
            let outcome = match reservation.status {
                Status::Insufficient => Some(RedemptionOutcome::Insufficient),
                Status::UnknownCustomer => Some(RedemptionOutcome::UnknownCustomer),
                Status::Conflict => Some(RedemptionOutcome::Conflict),
                // A repeated request that found its reservation held: counted the first time.
                Status::Reserved if reservation.fresh => Some(RedemptionOutcome::Reserved),
                _ => None,
            };
            if let Some(outcome) = outcome {
                shared.metrics.redemption(outcome, 1);
            }
            let holds = matches!(reservation.status, Status::Reserved | Status::Committed);
            let answer = Response::Redemption {
                lane: lane.to_string(),
                reference: request.reference,
                status: reservation.status.as_str().into(),
                points: reservation.points,
                discount: holds.then(|| DiscountJson::AmountOff {
                    amount: reservation.discount.format(settings.decimals),
                }),
                available: reservation.available,
                expires_at: match reservation.status {
                    Status::Reserved => reservation
                        .until
                        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string()),
                    _ => None,
                },
            };
            (answer, Handled::Durable)
        }
        Err(err) => (
            refusal_or_storage(lane, None, &err),
            if err.is_refusal() {
                Handled::Refused
            } else {
                Handled::Failed
            },
        ),
    }
}

pub(super) async fn on_void(
    lane: &str,
    request: Result<(), String>,
    shared: &Shared,
) -> (Response, Handled) {
    if let Err(message) = request {
        return (
            Response::error(lane, None, "malformed_void", message),
            Handled::Refused,
        );
    }
    let now = input_time(shared).now;
    let store = shared.store.clone();
    let vouchers = shared.vouchers.clone();
    let lane_owned = lane.to_string();
    let released = blocking(move || {
        let points = store.release_lane_points(&lane_owned, now)?;
        let vouchers = vouchers.release_lane(&lane_owned)?;
        Ok::<_, StoreError>((points, vouchers))
    })
    .await;
    match released {
        Ok((points, vouchers)) => {
            shared
                .metrics
                .redemption(RedemptionOutcome::Released, points.len() as u64);
            (
                Response::Void {
                    lane: lane.to_string(),
                    redemptions: points,
                    vouchers: vouchers.iter().map(ToString::to_string).collect(),
                },
                Handled::Durable,
            )
        }
        Err(err) => (
            refusal_or_storage(lane, None, &err),
            if err.is_refusal() {
                Handled::Refused
            } else {
                Handled::Failed
            },
        ),
    }
}

/// What a receipt did with the reservations it named, for its `points` answer (and counted,
/// the first time).
pub(super) fn redemption_results(
    results: &[RedemptionResult],
    duplicate: bool,
    shared: &Shared,
) -> Vec<RedemptionResultJson> {
    if !duplicate {
        let committed = results
            .iter()
            .filter(|r| r.status == Status::Committed)
            .count() as u64;
        shared
            .metrics
            .redemption(RedemptionOutcome::Committed, committed);
        shared.metrics.redemption(
            RedemptionOutcome::NotCommitted,
            results.len() as u64 - committed,
        );
        for result in results.iter().filter(|r| r.status != Status::Committed) {
            tracing::warn!(reference = %result.reference, status = result.status.as_str(), "a receipt named a points reservation it could not commit; the receipt was applied without it");
        }
    }
    results
        .iter()
        .map(|r| RedemptionResultJson {
            reference: r.reference.clone(),
            status: r.status.as_str().into(),
            points: r.points,
        })
        .collect()
}

/// Housekeeping: releases the reservations that ran out (only with a trusted clock: a wrong
/// date must not release a sale's points early). Blocking.
pub(super) fn sweep(handle: &GatewayHandle, time: &TrustedTime) {
    if !time.trusted {
        return;
    }
    match handle.store.sweep_reservations(time.now) {
        Ok(report) => {
            if !report.expired.is_empty() {
                tracing::info!(references = ?report.expired, "points reservations expired and released (no receipt named them in time)");
                handle
                    .metrics
                    .redemption(RedemptionOutcome::Expired, report.expired.len() as u64);
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "releasing expired points reservations failed; retrying at the next tick")
        }
    }
}

/// The reservation gauges, from the store. Blocking.
pub(super) fn refresh_gauges(handle: &GatewayHandle) {
    match handle.store.open_reservations() {
        Ok(open) => handle.metrics.reservations(open.count, open.points),
        Err(err) => tracing::debug!(error = %err, "reservation gauges not refreshed"),
    }
}
