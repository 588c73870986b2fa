//! "A receipt arrives": pick its customer, apply it durably, settle the vouchers it names,
//! issue the vouchers it earned, and answer `points` only after all of it is durable.

use super::*;

/// Whether a store error is a refusal of the request (answered to the lane, acknowledged to
/// the broker) rather than a storage failure (to be retried).
pub(super) fn is_refusal(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::InvalidReceipt(_)
            | StoreError::InvalidId(_)
            | StoreError::UnknownCustomer(_)
            | StoreError::UnknownReceipt(_)
            | StoreError::NotASale(_)
            | StoreError::AlreadyAttached { .. }
            | StoreError::CardTaken { .. }
            | StoreError::Ledger(_)
    )
}

pub(super) async fn on_receipt(
    lane: &str,
    receipt: Result<Receipt, String>,
    session: &mut LaneSession,
    shared: &Shared,
) -> (Response, Handled) {
    let time = input_time(shared);
    let now = time.now;
    let receipt = match receipt {
        Ok(receipt) => receipt,
        Err(message) => {
            return (
                Response::error(lane, None, "malformed_receipt", message),
                Handled::Refused,
            )
        }
    };
    if shared.stall_receipt.as_deref() == Some(receipt.id.as_str()) {
        tracing::warn!(receipt = %receipt.id, "fault injection ({STALL_RECEIPT_ENV}): stalling on this receipt, it is never applied");
        std::future::pending::<()>().await;
    }
    // The limits of the rules in force (the CRM may have replaced them since start-up).
    let rules = current_rules(shared);
    if let Err(err) = loyalty_core::receipt::validate(&receipt, rules.limits()) {
        return (
            Response::error(lane, Some(&receipt.id), "invalid_receipt", err.to_string()),
            Handled::Refused,
        );
    }
    let in_receipt = match &receipt.card {
        None => None,
        Some(card) => {
            let normalized = match loyalty_core::scan::decode(card.as_bytes(), &shared.cards) {
                Ok(Scan::Card { number, .. }) => number,
                Ok(other) => {
                    let (code, message) = other
                        .refusal()
                        .unwrap_or(("unknown_card", "not a card of this program".into()));
                    return (
                        Response::error(lane, Some(&receipt.id), code, message),
                        Handled::Refused,
                    );
                }
                Err(err) => {
                    return (
                        Response::error(lane, Some(&receipt.id), "unknown_card", err.to_string()),
                        Handled::Refused,
                    )
                }
            };
            match identify(shared, &normalized, time).await {
                Ok((customer, _)) => Some(Identified {
                    customer_id: customer.id,
                    card: normalized,
                }),
                Err(err) => {
                    return (
                        storage_error(lane, Some(&receipt.id), &err),
                        Handled::Failed,
                    )
                }
            }
        }
    };
    let who = session.on_receipt(in_receipt, now);
    let store = shared.store.stamped(time.trusted);
    let vouchers = shared.vouchers.stamped(time.trusted);
    let customer_id = who.as_ref().map(|w| w.customer_id.clone());
    let receipt_id = receipt.id.clone();
    // Applying the receipt and settling its vouchers share one trip to the storage threads.
    let applied = blocking(move || {
        let outcome = store.apply_receipt(&receipt, customer_id.as_deref(), rules.as_ref(), now)?;
        let settled = settle_vouchers(&store, &vouchers, &receipt, &outcome, now);
        Ok((outcome, settled))
    })
    .await;
    match applied {
        Ok((outcome, settled)) => {
            session.on_receipt_applied(&outcome.receipt_id, outcome.customer_id.is_some(), now);
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
            }
            match settled {
                Ok(settled) => {
                    let settled = settled_answers(lane, &outcome, settled, shared);
                    let mut answer = points_answer(lane, &outcome);
                    if let Response::Points {
                        vouchers, balance, ..
                    } = &mut answer
                    {
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
                Err(err) => (
                    storage_error(lane, Some(&receipt_id), &err),
                    Handled::Failed,
                ),
            }
        }
        Err(err) if is_refusal(&err) => (
            Response::error(lane, Some(&receipt_id), "refused", err.to_string()),
            Handled::Refused,
        ),
        Err(err) => (
            storage_error(lane, Some(&receipt_id), &err),
            Handled::Failed,
        ),
    }
}

/// What settling a receipt's vouchers did.
pub(super) struct Settled {
    commit: CommitOutcome,
    issued: Vec<IssuedVoucher>,
    /// The customer's balance after vouchers were issued (None when none were).
    balance_after_issue: Option<i64>,
}

/// After a receipt is durable (runs on a storage thread): redeems the vouchers it names (or the
/// lane's reservation, per `rewards.redeem_on`) and issues the vouchers its points earned. Both
/// are idempotent, so a redelivered receipt changes nothing.
pub(super) fn settle_vouchers(
    store: &Store,
    vouchers: &Vouchers,
    receipt: &Receipt,
    outcome: &ReceiptOutcome,
    now: Timestamp,
) -> Result<Settled, StoreError> {
    let commit = vouchers.commit_receipt(receipt, now)?;
    let is_sale = matches!(receipt.kind, loyalty_core::receipt::ReceiptKind::Sale);
    let issued = match (&outcome.customer_id, is_sale) {
        (Some(customer_id), true) => vouchers
            .issue_after_receipt(&receipt.id, customer_id, now)
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, receipt = %receipt.id, "no voucher issued");
                Vec::new()
            }),
        _ => Vec::new(),
    };
    let balance_after_issue = match (&outcome.customer_id, issued.is_empty()) {
        (Some(customer_id), false) => Some(store.balance(customer_id, now)?.total),
        _ => None,
    };
    Ok(Settled {
        commit,
        issued,
        balance_after_issue,
    })
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
    settled: Settled,
    shared: &Shared,
) -> SettledAnswers {
    let Settled {
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
