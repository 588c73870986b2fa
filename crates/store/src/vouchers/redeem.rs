//! Redeeming: the vouchers a receipt names (or its lane holds reserved) are redeemed exactly
//! once, inside the receipt's own transaction ([`ReceiptVoucherStep`], see
//! `Store::apply_valid_receipt`) or alone ([`Vouchers::commit_receipt`]); each redemption is
//! written with its `voucher_redeemed` event.

use super::*;

/// One voucher redeemed by a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redemption {
    /// The voucher.
    pub voucher_id: VoucherId,
    /// The discount it gave on this receipt.
    pub discount: Money,
    /// True when this receipt had already redeemed it (a redelivered receipt): nothing new.
    pub duplicate: bool,
}

/// What a receipt did to vouchers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Vouchers redeemed by the receipt (durably).
    pub redeemed: Vec<Redemption>,
    /// Vouchers the receipt named that could not be redeemed, with the reason, by id as the
    /// receipt gave it. Their state is unchanged.
    pub refused: Vec<(String, Refusal)>,
}

/// What a receipt did to vouchers, in its transaction (see `Store::apply_valid_receipt`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptVouchers {
    /// The vouchers it redeemed, and those it named that were refused.
    pub commit: CommitOutcome,
    /// The vouchers its points earned (on a redelivered receipt: those issued the first time).
    pub issued: Vec<IssuedVoucher>,
    /// The customer's balance after vouchers were issued (None when none were).
    pub balance_after_issue: Option<i64>,
}

/// The voucher side of one receipt, prepared outside its transaction: the vouchers it names
/// (parsed) or its lane holds reserved, and whether vouchers may be issued.
pub(crate) struct ReceiptVoucherStep {
    vouchers: Vouchers,
    ids: Vec<(String, VoucherId)>,
    refused: Vec<(String, Refusal)>,
    /// Rules are configured, a signing key is there and the clock is trusted.
    may_issue: bool,
}

impl ReceiptVoucherStep {
    /// Inside the receipt's transaction, after its points: redeems, then issues (a sale with a
    /// customer only). Each voucher refusal leaves that voucher as it was.
    pub(crate) fn settle_in_tx(
        &self,
        tx: &Tx<'_>,
        receipt: &Receipt,
        outcome: &ReceiptOutcome,
        now: Timestamp,
    ) -> TxResult<ReceiptVouchers> {
        let vouchers = &self.vouchers;
        let mut commit = CommitOutcome {
            redeemed: Vec::new(),
            refused: self.refused.clone(),
        };
        for (named, id) in &self.ids {
            match vouchers.commit_one(tx, receipt, id, now)? {
                Ok(redemption) => commit.redeemed.push(redemption),
                Err(refusal) => commit.refused.push((named.clone(), refusal)),
            }
        }
        let is_sale = matches!(receipt.kind, loyalty_core::receipt::ReceiptKind::Sale);
        let issued = match (&outcome.customer_id, is_sale && self.may_issue) {
            (Some(customer_id), true) => {
                vouchers.issue_in_tx(tx, &receipt.id, customer_id, !outcome.duplicate, now)?
            }
            _ => Vec::new(),
        };
        let balance_after_issue = match (&outcome.customer_id, issued.is_empty()) {
            (Some(customer_id), false) => Some(tx.balance(customer_id, now)?.total),
            _ => None,
        };
        Ok(ReceiptVouchers {
            commit,
            issued,
            balance_after_issue,
        })
    }
}

impl Vouchers {
    /// A receipt from a lane: redeems, durably and exactly once, the vouchers it names in
    /// `rewards` (and, with `redeem_on = "next_receipt"`, those its lane holds reserved).
    /// Call it after `Store::apply_receipt` and before acknowledging the receipt; calling it
    /// again for the same receipt changes nothing (`duplicate`). A voucher that cannot be
    /// redeemed (minimum spend not met, redeemed elsewhere meanwhile, revoked, never scanned)
    /// is listed in `refused` and left as it was.
    pub fn commit_receipt(
        &self,
        receipt: &Receipt,
        now: Timestamp,
    ) -> Result<CommitOutcome, StoreError> {
        let step = self.prepare_receipt(receipt, now)?;
        if step.ids.is_empty() {
            return Ok(CommitOutcome {
                redeemed: Vec::new(),
                refused: step.refused,
            });
        }
        let results = self.store.transact(&self.extra(), |tx| {
            let mut results = Vec::new();
            for (named, id) in &step.ids {
                results.push((named.clone(), self.commit_one(tx, receipt, id, now)?));
            }
            Ok(results)
        })?;
        let mut outcome = CommitOutcome {
            redeemed: Vec::new(),
            refused: step.refused,
        };
        for (named, result) in results {
            match result {
                Ok(redemption) => outcome.redeemed.push(redemption),
                Err(refusal) => outcome.refused.push((named, refusal)),
            }
        }
        Ok(outcome)
    }

    /// Prepares the voucher side of a receipt (outside its transaction): parses the vouchers
    /// it names, adds its lane's reservations (with `redeem_on = "next_receipt"`), and decides
    /// whether vouchers may be issued (not through a handle stamped untrusted).
    pub(crate) fn prepare_receipt(
        &self,
        receipt: &Receipt,
        now: Timestamp,
    ) -> Result<ReceiptVoucherStep, StoreError> {
        let mut refused = Vec::new();
        let mut ids: Vec<(String, VoucherId)> = Vec::new();
        for named in &receipt.rewards {
            let parsed = VoucherId::parse(named).or_else(|| {
                voucher::decode(named.trim())
                    .ok()
                    .map(|signed| signed.voucher.id)
            });
            match parsed {
                Some(id) if !ids.iter().any(|(_, seen)| *seen == id) => {
                    ids.push((named.clone(), id))
                }
                Some(_) => {}
                None => refused.push((
                    named.clone(),
                    Refusal::UnknownVoucher {
                        voucher_id: named.clone(),
                    },
                )),
            }
        }
        if self.settings.redeem_on == RedeemOn::NextReceipt {
            for id in self.reservations_of(&receipt.lane, Some(now))? {
                if !ids.iter().any(|(_, seen)| *seen == id) {
                    ids.push((id.to_string(), id));
                }
            }
        }
        let may_issue = if self.settings.rules.rules.is_empty() {
            false
        } else if self.settings.store_key.is_none() {
            tracing::warn!(receipt = %receipt.id, error = %IssueError::NoSigningKey, "no voucher issued");
            false
        } else if !self.store.clock_trusted() {
            tracing::info!(
                receipt = %receipt.id,
                "no voucher issued while the clock is untrusted; the points stay on the account"
            );
            false
        } else {
            true
        };
        Ok(ReceiptVoucherStep {
            vouchers: self.clone(),
            ids,
            refused,
            may_issue,
        })
    }

    fn commit_one(
        &self,
        tx: &Tx<'_>,
        receipt: &Receipt,
        id: &VoucherId,
        now: Timestamp,
    ) -> TxResult<Result<Redemption, Refusal>> {
        let text = match tx_state(tx, id)? {
            Some(StateRec::Redeemed {
                receipt_id,
                discount,
                lane,
                at,
                ..
            }) => {
                return Ok(if receipt_id == receipt.id {
                    Ok(Redemption {
                        voucher_id: *id,
                        discount: Money(discount),
                        duplicate: true,
                    })
                } else {
                    Err(Refusal::AlreadyRedeemed {
                        at,
                        lane,
                        receipt_id,
                    })
                });
            }
            Some(StateRec::Reserved {
                lane, until, text, ..
            }) => {
                if lane != receipt.lane && now < until {
                    return Ok(Err(Refusal::ReservedElsewhere { lane, until }));
                }
                text
            }
            None => match tx_issued(tx, id)? {
                Some(issued) => issued.text,
                None => {
                    return Ok(Err(Refusal::UnknownVoucher {
                        voucher_id: id.to_string(),
                    }))
                }
            },
        };
        if tx.extra(T_REVOKED).get(id.0)?.is_some() {
            return Ok(Err(Refusal::Revoked));
        }
        let signed = match voucher::decode(&text) {
            Ok(signed) => signed,
            Err(err) => return corrupt(format!("stored voucher {id}: {err}")),
        };
        // The signature was checked at the scan (or the voucher is this store's own); a key
        // withdrawn since then still stops it.
        if let Err(refusal) = voucher::check::verify_signature(&signed, &self.keys) {
            return Ok(Err(refusal));
        }
        let discount = match voucher::check_receipt(&signed.voucher, receipt) {
            Ok(discount) => discount,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let rec = StateRec::Redeemed {
            lane: receipt.lane.clone(),
            at: now,
            receipt_id: receipt.id.clone(),
            discount: discount.0,
            text,
        };
        tx.extra(T_STATE).put(&id.0, to_json(&rec)?)?;
        tx.append_event(
            EventType::VoucherRedeemed,
            now,
            &VoucherRedeemedEvent::new(&signed.voucher, &receipt.lane, &receipt.id, discount, now),
        )?;
        Ok(Ok(Redemption {
            voucher_id: *id,
            discount,
            duplicate: false,
        }))
    }
}
