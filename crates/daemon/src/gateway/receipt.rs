//! "A receipt arrives": validate it (the one place), pick its customer, and have the store
//! enrol its card, apply it, settle the vouchers it names and issue the vouchers it earned in
//! one durable transaction; answer `points` only after that.

use super::*;
use loyalty_core::receipt::ValidReceipt;
use loyalty_store::vouchers::ReceiptVouchers;
use loyalty_store::{Committed, ReceiptApplied, ReceiptCustomer};

/// Where a receipt stands once its lane has handled it.
pub(super) enum ReceiptStep {
    /// Answered at once: refused (nothing written), or failed.
    Answered(Response, Handled),
    /// Committed: answered once durable ([`PendingReceipt::answer`]).
    Committed(PendingReceipt),
}

/// A receipt committed but not yet durable, with what its answer needs.
pub(super) struct PendingReceipt {
    committed: Committed<ReceiptApplied>,
    lane: String,
    receipt_id: String,
    unknown: Vec<String>,
}

impl PendingReceipt {
    /// Waits until the receipt is durable (`lead`: blocking, syncing on this thread when no
    /// other write is pending; otherwise without blocking a thread) and answers it.
    pub(super) async fn answer(self, lead: bool, shared: &Shared) -> (Response, Handled) {
        let PendingReceipt {
            committed,
            lane,
            receipt_id,
            unknown,
        } = self;
        let applied = if lead {
            blocking(move || committed.wait()).await
        } else {
            committed.durable().await
        };
        answer_applied(&lane, &receipt_id, applied, unknown, shared)
    }
}

/// Handles a receipt up to its commit: validates it, picks its customer and has the store apply
/// it; the lane's session learns of it at once (a card scanned next may attach to it), the
/// answer waits until it is durable.
pub(super) async fn on_receipt(
    lane: &str,
    receipt: Result<Receipt, Unreadable>,
    session: &mut LaneSession,
    shared: &Shared,
) -> ReceiptStep {
    let time = input_time(shared);
    let now = time.now;
    let receipt = match receipt {
        Ok(receipt) => receipt,
        Err(Unreadable {
            receipt_id,
            message,
        }) => {
            return ReceiptStep::Answered(
                Response::error(lane, receipt_id.as_deref(), "malformed_receipt", message),
                Handled::Refused,
            )
        }
    };
    let receipt_id = receipt.id.clone();
    if shared.stall_receipt.as_deref() == Some(receipt.id.as_str()) {
        tracing::warn!(receipt = %receipt.id, "fault injection ({STALL_RECEIPT_ENV}): stalling on this receipt, it is never applied");
        std::future::pending::<()>().await;
    }
    // The limits of the rules in force (the CRM may have replaced them since start-up). The
    // one validation of this receipt: the store takes the `ValidReceipt` it produces.
    let rules = current_rules(shared);
    // Applied all the same; flagged in the answer, the event and /metrics.
    let unknown = rules.limits().unknown_categories(&receipt);
    let receipt = match ValidReceipt::check(receipt, rules.limits()) {
        Ok(receipt) => receipt,
        Err(err) => {
            return ReceiptStep::Answered(
                Response::error(lane, Some(&receipt_id), "invalid_receipt", err.to_string()),
                Handled::Refused,
            )
        }
    };
    let card = match &receipt.card {
        None => None,
        Some(card) => match loyalty_core::scan::decode(card.as_bytes(), &shared.cards) {
            Ok(Scan::Card { number, .. }) => Some(number),
            Ok(other) => {
                let (code, message) = other
                    .refusal()
                    .unwrap_or(("unknown_card", "not a card of this program".into()));
                return ReceiptStep::Answered(
                    Response::error(lane, Some(&receipt.id), code, message),
                    Handled::Refused,
                );
            }
            Err(err) => {
                return ReceiptStep::Answered(
                    Response::error(lane, Some(&receipt.id), "unknown_card", err.to_string()),
                    Handled::Refused,
                )
            }
        },
    };
    // A card on the receipt wins over one held from a scan (which is used up either way).
    let held = session.on_receipt(None, now);
    let store = shared.store.stamped(time.trusted);
    // Points become vouchers only where the lane's answer reaches the customer.
    let reach = shared.lane_reach.get(lane).copied().unwrap_or_default();
    let vouchers = shared.vouchers.stamped(time.trusted).for_lane(reach);
    let enrol = shared.enroll_unknown;
    // Enrolling its card, applying it, settling its vouchers and issuing the vouchers it
    // earned: one transaction, one group commit, one trip to the storage threads.
    let applied = blocking(move || {
        let customer = match (&card, &held) {
            (Some(card), _) => ReceiptCustomer::Card { card, enrol },
            (None, Some(who)) => ReceiptCustomer::Id(&who.customer_id),
            (None, None) => ReceiptCustomer::FromReceipt,
        };
        store.commit_valid_receipt(&receipt, customer, rules.as_ref(), Some(&vouchers), now)
    })
    .await;
    match applied {
        Ok(committed) => {
            let outcome = &committed.peek().outcome;
            session.on_receipt_applied(&outcome.receipt_id, outcome.customer_id.is_some(), now);
            ReceiptStep::Committed(PendingReceipt {
                committed,
                lane: lane.to_string(),
                receipt_id,
                unknown,
            })
        }
        Err(err) => {
            let (answer, handled) = answer_applied(lane, &receipt_id, Err(err), unknown, shared);
            ReceiptStep::Answered(answer, handled)
        }
    }
}

/// The answer to a receipt once it is durable (or failed, or was refused).
fn answer_applied(
    lane: &str,
    receipt_id: &str,
    applied: Result<ReceiptApplied, StoreError>,
    unknown: Vec<String>,
    shared: &Shared,
) -> (Response, Handled) {
    match applied {
        Ok(ReceiptApplied { outcome, vouchers }) => {
            shared.sync.nudge();
            let counter = if outcome.duplicate {
                &shared.counters.duplicates
            } else {
                shared
                    .counters
                    .points
                    .fetch_add(outcome.earned, std::sync::atomic::Ordering::Relaxed);
                &shared.counters.receipts
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !outcome.duplicate {
                shared.metrics.points(outcome.earned);
                if !unknown.is_empty() {
                    tracing::warn!(receipt = %outcome.receipt_id, categories = ?unknown, "receipt with categories rules.categories does not list: applied, those lines earned nothing; add them to the rules");
                    shared.metrics.unknown_categories();
                }
            }
            let settled = settled_answers(lane, &outcome, vouchers, shared);
            let mut answer = points_answer(lane, &outcome);
            if let Response::Points {
                vouchers,
                balance,
                unknown_categories,
                redemptions,
                ..
            } = &mut answer
            {
                *unknown_categories = unknown;
                *redemptions = redemption_results(&outcome.redemptions, outcome.duplicate, shared);
                if let Some(after) = settled.balance_after_issue {
                    // Issuing converted points: answer the balance after it.
                    *balance = Some(after);
                }
                *vouchers = settled.issued;
            }
            for refusal in settled.refusals {
                send_answer(shared, refusal, std::time::Instant::now());
            }
            (answer, Handled::Durable)
        }
        Err(StoreError::Refused(refused)) => (
            Response::error(lane, Some(receipt_id), "refused", refused.to_string()),
            Handled::Refused,
        ),
        Err(err) => (storage_error(lane, Some(receipt_id), &err), Handled::Failed),
    }
}

/// What the lane is told about a receipt's vouchers.
pub(super) struct SettledAnswers {
    /// For the `points` answer.
    issued: Vec<IssuedVoucherJson>,
    balance_after_issue: Option<i64>,
    /// An error answer for each voucher the receipt named that could not be redeemed.
    refusals: Vec<Response>,
}

/// Counts what settling did, and turns it into answers.
pub(super) fn settled_answers(
    lane: &str,
    outcome: &ReceiptOutcome,
    settled: ReceiptVouchers,
    shared: &Shared,
) -> SettledAnswers {
    let ReceiptVouchers {
        commit,
        issued,
        balance_after_issue,
    } = settled;
    let redeemed_now = commit.redeemed.iter().filter(|r| !r.duplicate).count() as u64;
    for _ in 0..redeemed_now {
        shared.metrics.voucher_redeemed();
    }
    for _ in &issued {
        shared.metrics.voucher_issued();
    }
    shared
        .counters
        .vouchers_redeemed
        .fetch_add(redeemed_now, std::sync::atomic::Ordering::Relaxed);
    shared
        .counters
        .vouchers_issued
        .fetch_add(issued.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let refusals = commit
        .refused
        .into_iter()
        .map(|(voucher_id, refusal)| {
            Response::error(
                lane,
                Some(&outcome.receipt_id),
                refusal.code(),
                format!("voucher {voucher_id}: {refusal}"),
            )
        })
        .collect();
    SettledAnswers {
        issued: issued
            .iter()
            .map(|voucher| issued_json(voucher, &shared.time_zone))
            .collect(),
        balance_after_issue,
        refusals,
    }
}

pub(super) fn issued_json(
    issued: &IssuedVoucher,
    time_zone: &jiff::tz::TimeZone,
) -> IssuedVoucherJson {
    use base64::Engine as _;
    let options = crate::render::SlipOptions {
        time_zone: time_zone.clone(),
        ..Default::default()
    };
    let escpos =
        crate::render::escpos_slip(&issued.voucher, &issued.text, &options).unwrap_or_default();
    let decimals = loyalty_core::money::currency_decimals(&issued.voucher.currency);
    IssuedVoucherJson {
        voucher_id: issued.voucher.id.to_string(),
        text: issued.text.clone(),
        escpos_base64: base64::engine::general_purpose::STANDARD.encode(escpos),
        value: match &issued.voucher.benefit {
            Benefit::AmountOff(amount) => amount.format(decimals),
            Benefit::PercentOff(percent) => format!("{percent}%"),
            Benefit::FreeItem { sku } => format!("free {sku}"),
        },
        valid_until: issued.voucher.valid_until.to_string(),
    }
}
