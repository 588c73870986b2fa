//! Inside a receipt's transaction: a prepared receipt ([`ReceiptRequest`], planned outside the
//! transaction so that batches stay short) is applied: a duplicate answers the first outcome,
//! a card named on it is enrolled, points are earned or clawed back, then its vouchers are
//! redeemed and issued. A refusal is decided before anything is written.

use super::*;
use loyalty_protocol::crm::events::{CustomerEvent, ReceiptEvent};

pub(crate) fn outcome_from(receipt_id: &str, rec: &OutcomeRec, duplicate: bool) -> ReceiptOutcome {
    ReceiptOutcome {
        receipt_id: receipt_id.into(),
        customer_id: rec.customer_id.clone(),
        earned: rec.earned,
        balance: match (rec.total, rec.available, rec.pending) {
            (Some(total), Some(available), Some(pending)) => Some(Balance {
                total,
                available,
                pending,
            }),
            _ => None,
        },
        promotions: rec.promotions.clone(),
        duplicate,
        note: rec.note.as_deref().and_then(OutcomeNote::parse),
        redemptions: rec
            .redemptions
            .iter()
            .map(|r| reservations::RedemptionResult {
                reference: r.reference.clone(),
                status: loyalty_core::redemption::Status::parse(&r.status)
                    .unwrap_or(loyalty_core::redemption::Status::Unknown),
                points: r.points,
            })
            .collect(),
    }
}

pub(crate) fn outcome_rec(
    customer_id: Option<&str>,
    earned: i64,
    balance: Option<Balance>,
    promotions: &[String],
    note: Option<OutcomeNote>,
) -> OutcomeRec {
    OutcomeRec {
        customer_id: customer_id.map(Into::into),
        earned,
        total: balance.map(|b| b.total),
        available: balance.map(|b| b.available),
        pending: balance.map(|b| b.pending),
        promotions: promotions.to_vec(),
        note: note.map(|n| n.as_str().to_string()),
        redemptions: Vec::new(),
    }
}

/// A receipt prepared for [`apply_planned`]: owned, so that another caller's thread can apply
/// it in a batch (see `store/batch.rs`).
pub(crate) struct ReceiptRequest {
    pub(crate) receipt: Receipt,
    pub(crate) data: ReceiptDataRec,
    pub(crate) customer_id: Option<String>,
    pub(crate) now: Timestamp,
    /// Whether `now` came from a trusted clock (the submitting handle's [`Store::stamped`]).
    pub(crate) clock_trusted: bool,
    pub(crate) plan: Plan,
    /// A customer to enrol for the receipt's card, in the receipt's transaction.
    pub(crate) enrolment: Option<Enrolment>,
    /// The receipt's vouchers to settle and issue, in the receipt's transaction.
    pub(crate) vouchers: Option<vouchers::ReceiptVoucherStep>,
    /// Categories of its lines the rules do not know (flagged in its event).
    pub(crate) unknown_categories: Vec<String>,
    /// The offers its customer may use, prepared outside the transaction.
    pub(crate) offers: offers::PreparedOffers,
}

/// A card named on a receipt, unknown when the receipt was prepared: enrolled as `id` in the
/// receipt's transaction (or, when enrolled meanwhile, its customer is used).
pub(crate) struct Enrolment {
    pub(crate) card: String,
    pub(crate) id: String,
}

/// Who a receipt is for (see [`Store::apply_valid_receipt`]).
#[derive(Debug, Clone, Copy)]
pub enum ReceiptCustomer<'a> {
    /// The customer of the card on the receipt (`receipt.card`, as given), if it is known.
    FromReceipt,
    /// This customer (a card scanned before the receipt).
    Id(&'a str),
    /// The customer of this (normalised) card; an unknown card is enrolled in the receipt's
    /// transaction when `enrol`, and refused (`UnknownCustomer`) otherwise.
    Card {
        /// The card number.
        card: &'a str,
        /// Enrol an unknown card.
        enrol: bool,
    },
}

/// Everything a receipt did, committed in one durable transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptApplied {
    /// The points side.
    pub outcome: ReceiptOutcome,
    /// The voucher side (empty when applied without vouchers).
    pub vouchers: vouchers::ReceiptVouchers,
}

/// Enrols the card of `enrolment` (or finds the customer who got it meanwhile).
pub(crate) fn enrol_in_tx(
    tx: &Tx<'_>,
    enrolment: &Enrolment,
    now: Timestamp,
) -> TxResult<CustomerRec> {
    let card = &enrolment.card;
    if let Some(existing) = tx.tree(CARDS).get(card.as_bytes())? {
        let existing = String::from_utf8_lossy(&existing).to_string();
        return match tx.customer_rec(&existing)? {
            Some(rec) => Ok(rec),
            None => corrupt(format!("card {card} points to missing customer {existing}")),
        };
    }
    let rec = CustomerRec::enrolled_locally(enrolment.id.clone(), card.clone(), now);
    tx.put_customer_rec(&rec)?;
    tx.tree(CARDS)
        .put(card.as_bytes(), enrolment.id.as_bytes())?;
    tx.append_event(
        EventType::CustomerEnrolled,
        now,
        &CustomerEvent::new(&rec.to_customer()),
    )?;
    Ok(rec)
}

/// What the earning policy said, computed before the transaction.
pub(crate) enum Plan {
    /// A sale: the earning for a customer of `tier` (`None` also for no customer).
    Sale {
        tier: Option<String>,
        earning: Earning,
    },
    /// A return: the eligible amount of the returned lines.
    Return { eligible: Money },
}

/// Applies one prepared receipt inside a transaction. A duplicate answers the first outcome; a
/// refusal is decided before anything is written and returned as `Done(Err(..))`; an error of
/// the transaction (corrupt data, storage) aborts it. When the customer's tier differs from
/// the one the earning was computed for, `policy` recomputes it, or without a policy the
/// request is left untouched and answered [`BatchAnswer::Retry`].
pub(crate) fn apply_planned(
    tx: &Tx<'_>,
    request: &ReceiptRequest,
    policy: Option<&dyn EarningPolicy>,
) -> TxResult<BatchAnswer> {
    // A batch combines requests of several handles: each request's events carry its own flag.
    tx.clock_trusted.set(request.clock_trusted);
    let mut outcome = match apply_points(tx, request, policy)? {
        BatchAnswer::Done(Ok(applied)) => applied.outcome,
        other => return Ok(other),
    };
    if !outcome.duplicate && !request.receipt.redemptions.is_empty() {
        commit_redemptions(tx, request, &mut outcome)?;
    }
    let vouchers = match &request.vouchers {
        Some(step) => step.settle_in_tx(tx, &request.receipt, &outcome, request.now)?,
        None => vouchers::ReceiptVouchers::default(),
    };
    Ok(BatchAnswer::Done(Ok(ReceiptApplied { outcome, vouchers })))
}

/// Pay with points: commits the reservations a new sale names (before its vouchers are
/// issued, so conversion sees the points spent) and records what happened to each in the
/// receipt's first outcome, which a duplicate repeats.
fn commit_redemptions(
    tx: &Tx<'_>,
    request: &ReceiptRequest,
    outcome: &mut ReceiptOutcome,
) -> TxResult<()> {
    let receipt = &request.receipt;
    if !matches!(receipt.kind, ReceiptKind::Sale) {
        return Ok(());
    }
    let (results, paid) = reservations::commit_in_tx(tx, receipt, request.now)?;
    let Some(bytes) = tx.tree(RECEIPTS).get(receipt.id.as_bytes())? else {
        return corrupt(format!(
            "receipt {} missing in its own transaction",
            receipt.id
        ));
    };
    let mut rec = decode_receipt(&receipt.id, &bytes)?;
    if let Some((customer_id, balance)) = paid {
        if outcome.customer_id.as_deref() == Some(customer_id.as_str()) {
            outcome.balance = Some(balance);
            rec.outcome.total = Some(balance.total);
            rec.outcome.available = Some(balance.available);
            rec.outcome.pending = Some(balance.pending);
        }
    }
    rec.outcome.redemptions = results
        .iter()
        .map(|r| records::RedemptionRec {
            reference: r.reference.clone(),
            status: r.status.as_str().into(),
            points: r.points,
        })
        .collect();
    put_receipt(tx, &rec)?;
    outcome.redemptions = results;
    Ok(())
}

/// The points side of [`apply_planned`] (the answer's vouchers are left empty).
pub(crate) fn apply_points(
    tx: &Tx<'_>,
    request: &ReceiptRequest,
    policy: Option<&dyn EarningPolicy>,
) -> TxResult<BatchAnswer> {
    let done = |outcome| {
        BatchAnswer::Done(Ok(ReceiptApplied {
            outcome,
            vouchers: vouchers::ReceiptVouchers::default(),
        }))
    };
    let receipt = &request.receipt;
    if let Some(bytes) = tx.tree(RECEIPTS).get(receipt.id.as_bytes())? {
        let rec = decode_receipt(&receipt.id, &bytes)?;
        return Ok(done(outcome_from(&receipt.id, &rec.outcome, true)));
    }
    match (&request.plan, &receipt.kind) {
        (Plan::Sale { tier, earning }, ReceiptKind::Sale) => {
            let customer = match (request.customer_id.as_deref(), &receipt.card) {
                _ if request.enrolment.is_some() => request
                    .enrolment
                    .as_ref()
                    .map(|enrolment| enrol_in_tx(tx, enrolment, request.now))
                    .transpose()?,
                (Some(id), _) => match tx.customer_rec(id)? {
                    Some(rec) => Some(rec),
                    None => {
                        return Ok(BatchAnswer::Done(Err(StoreError::Refused(
                            Refused::UnknownCustomer(id.into()),
                        ))))
                    }
                },
                (None, Some(card)) => match tx.tree(CARDS).get(card.as_bytes())? {
                    Some(id) => tx.customer_rec(&String::from_utf8_lossy(&id))?,
                    None => None,
                },
                (None, None) => None,
            };
            let actual_tier = customer.as_ref().and_then(|c| c.tier.as_deref());
            let recomputed;
            let earning = if actual_tier == tier.as_deref() {
                earning
            } else {
                match policy {
                    Some(policy) => {
                        recomputed = policy.earn(receipt, actual_tier);
                        &recomputed
                    }
                    None => return Ok(BatchAnswer::Retry),
                }
            };
            let outcome = apply_sale(tx, request, customer.as_ref(), earning, request.now)?;
            Ok(done(outcome))
        }
        (
            Plan::Return { eligible },
            ReceiptKind::Return {
                original_receipt_id,
            },
        ) => apply_return(tx, request, original_receipt_id, *eligible, request.now).and_then(
            |result| match result {
                Ok(outcome) => {
                    // The card named on a return is enrolled too (its points go to the sale's
                    // customer), once the return is known to be accepted.
                    if let Some(enrolment) = &request.enrolment {
                        enrol_in_tx(tx, enrolment, request.now)?;
                    }
                    Ok(done(outcome))
                }
                Err(refused) => Ok(BatchAnswer::Done(Err(refused))),
            },
        ),
        _ => corrupt("receipt request plan does not match its kind (internal error)"),
    }
}

pub(crate) fn apply_sale(
    tx: &Tx<'_>,
    request: &ReceiptRequest,
    customer: Option<&CustomerRec>,
    earning: &Earning,
    now: Timestamp,
) -> TxResult<ReceiptOutcome> {
    let (receipt, data) = (&request.receipt, &request.data);
    let mut points = if customer.is_some() {
        earning.points.max(0)
    } else {
        0
    };
    let mut promotions = earning.promotions.clone();
    if let Some(customer) = customer.filter(|_| !request.offers.candidates.is_empty()) {
        // Offers: each use counted and evented in this transaction (`offers`).
        let used =
            offers::use_offers_in_tx(tx, tx.extra(3), customer, receipt, &request.offers, now)?;
        for one in &used {
            points = points.saturating_add(one.bonus_points);
            promotions.push(format!("offer:{}", one.offer_id));
        }
    }
    let mut rec = ReceiptRec {
        data: data.clone(),
        applied_at: now,
        customer_id: customer.as_ref().map(|c| c.id.clone()),
        eligible: earning.eligible.0,
        vests_at: earning.vests_at,
        promotions: promotions.clone(),
        returns: ReturnRec {
            original_points: points,
            original_eligible: earning.eligible.0,
            original_total: receipt.total.0,
            ..Default::default()
        },
        outcome: outcome_rec(None, 0, None, &[], None),
        attach_outcome: None,
        entries: Vec::new(),
    };
    let outcome = match customer {
        Some(customer) => {
            let mut balance = tx.balance(&customer.id, now)?;
            if points > 0 {
                let (index, b) = tx.ledger_entry(
                    &NewEntry {
                        customer_id: &customer.id,
                        kind: EntryKind::Earn,
                        points,
                        at: now,
                        receipt_id: Some(&receipt.id),
                        cause_receipt_id: None,
                        reference: None,
                        reason: None,
                        vests_at: earning.vests_at,
                    },
                    now,
                )?;
                rec.entries.push(index);
                balance = b;
                // Returns that found the points converted owe the rest: paid first from
                // these earnings (each part its own clawback entry).
                let (indexes, after) = tx.collect_owed(&customer.id, &receipt.id, points, now)?;
                rec.entries.extend(indexes);
                if let Some(after) = after {
                    balance = after;
                }
            }
            outcome_rec(Some(&customer.id), points, Some(balance), &promotions, None)
        }
        None => outcome_rec(None, 0, None, &[], Some(OutcomeNote::NoCustomer)),
    };
    rec.outcome = outcome.clone();
    put_receipt(tx, &rec)?;
    // Lines tied to a customer leave the box only with her profiling consent.
    let linked = customer.is_none_or(CustomerRec::receipt_lines_linked);
    tx.append_event(
        EventType::Receipt,
        receipt.timestamp,
        &ReceiptEvent::new(receipt, rec.customer_id.as_deref(), points)
            .lines_linked(linked)
            .with_unknown_categories(request.unknown_categories.clone()),
    )?;
    tx.count_sale(now, rec.customer_id.as_deref(), receipt.total.0)?;
    Ok(outcome_from(&receipt.id, &outcome, false))
}

/// Applies a return; `Ok(Err(NotASale))` (nothing written) when the "original" is a return.
pub(crate) fn apply_return(
    tx: &Tx<'_>,
    request: &ReceiptRequest,
    original_id: &str,
    returning_eligible: Money,
    now: Timestamp,
) -> TxResult<Result<ReceiptOutcome, StoreError>> {
    let (receipt, data) = (&request.receipt, &request.data);
    let mut rec = ReceiptRec {
        data: data.clone(),
        applied_at: now,
        customer_id: None,
        eligible: returning_eligible.0,
        vests_at: None,
        promotions: Vec::new(),
        returns: ReturnRec::default(),
        outcome: outcome_rec(None, 0, None, &[], None),
        attach_outcome: None,
        entries: Vec::new(),
    };
    let outcome = match tx.tree(RECEIPTS).get(original_id.as_bytes())? {
        None => outcome_rec(None, 0, None, &[], Some(OutcomeNote::OriginalUnknown)),
        Some(bytes) => {
            let mut original = decode_receipt(original_id, &bytes)?;
            if original.data.original_receipt_id.is_some() {
                return Ok(Err(StoreError::Refused(Refused::NotASale(
                    original_id.into(),
                ))));
            }
            let (claw, state) = ledger::clawback(
                original.returns.to_state(),
                returning_eligible,
                receipt.total,
            );
            original.returns = ReturnRec::from_state(&state);
            let outcome = match original.customer_id.clone() {
                Some(customer_id) => {
                    let mut balance = tx.balance(&customer_id, now)?;
                    if claw > 0 {
                        // The balance never goes below zero: what it does not hold is owed
                        // and collected from the next earnings (`ledger::floor_clawback`).
                        let (now_claw, owed) = ledger::floor_clawback(balance, claw);
                        let (index, b) = tx.floored_clawback(
                            &NewEntry {
                                customer_id: &customer_id,
                                kind: EntryKind::Clawback,
                                points: -now_claw,
                                at: now,
                                receipt_id: Some(original_id),
                                cause_receipt_id: Some(&receipt.id),
                                reference: None,
                                reason: None,
                                vests_at: None,
                            },
                            owed,
                            now,
                        )?;
                        rec.entries.push(index);
                        balance = b;
                    }
                    rec.customer_id = Some(customer_id.clone());
                    outcome_rec(Some(&customer_id), -claw, Some(balance), &[], None)
                }
                None => outcome_rec(
                    None,
                    0,
                    None,
                    &[],
                    Some(OutcomeNote::OriginalWithoutCustomer),
                ),
            };
            put_receipt(tx, &original)?;
            outcome
        }
    };
    rec.outcome = outcome.clone();
    put_receipt(tx, &rec)?;
    // The returned lines are tied to the sale's customer: the same consent decides.
    let linked = match rec.customer_id.as_deref() {
        Some(id) => tx
            .customer_rec(id)?
            .is_some_and(|c| c.receipt_lines_linked()),
        None => true,
    };
    tx.append_event(
        EventType::Receipt,
        receipt.timestamp,
        &ReceiptEvent::new(receipt, rec.customer_id.as_deref(), outcome.earned)
            .lines_linked(linked)
            .with_unknown_categories(request.unknown_categories.clone()),
    )?;
    Ok(Ok(outcome_from(&receipt.id, &outcome, false)))
}
