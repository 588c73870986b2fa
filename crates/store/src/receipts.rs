//! Receipts: applying one (with everything it does, in one durable transaction: see
//! `apply.rs`), attaching a card-less sale to a customer afterwards, and reading them back.

use super::*;

/// What a receipt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptOutcome {
    /// The receipt.
    pub receipt_id: String,
    /// The customer whose points moved (for a return: the original sale's customer).
    pub customer_id: Option<String>,
    /// Points earned (negative: clawed back by a return).
    pub earned: i64,
    /// The customer's balance right after.
    pub balance: Option<Balance>,
    /// Promotions applied.
    pub promotions: Vec<String>,
    /// True when this receipt id had been applied before: nothing changed, this is the first
    /// answer again.
    pub duplicate: bool,
    /// Something the lane may want to know.
    pub note: Option<OutcomeNote>,
    /// Pay with points: what the receipt did with each reservation it named (`balance` is
    /// after them when they were the receipt customer's).
    pub redemptions: Vec<reservations::RedemptionResult>,
}

/// Remarks on a receipt outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeNote {
    /// A sale without a customer: stored, and a card scanned shortly after can attach it.
    NoCustomer,
    /// A return of a sale this store never saw: recorded and sent to the CRM (which may claw
    /// back centrally), no local points change.
    OriginalUnknown,
    /// A return of a sale without a customer: recorded; no points change.
    OriginalWithoutCustomer,
}

impl OutcomeNote {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutcomeNote::NoCustomer => "no_customer",
            OutcomeNote::OriginalUnknown => "original_unknown",
            OutcomeNote::OriginalWithoutCustomer => "original_without_customer",
        }
    }
    pub(crate) fn parse(text: &str) -> Option<OutcomeNote> {
        Some(match text {
            "no_customer" => OutcomeNote::NoCustomer,
            "original_unknown" => OutcomeNote::OriginalUnknown,
            "original_without_customer" => OutcomeNote::OriginalWithoutCustomer,
            _ => return None,
        })
    }
}

impl Store {
    /// Applies a receipt: validates it (nothing is written when refused), stores it, earns
    /// points on a sale for `customer_id` (or the customer of `receipt.card` when `None`),
    /// claws back proportionally on a return, and writes the outbox events, atomically. Returns
    /// once durable. A duplicate receipt id returns the first outcome (`duplicate: true`) and
    /// changes nothing. (A receiver that validated the receipt already calls
    /// [`Store::apply_valid_receipt`].)
    pub fn apply_receipt(
        &self,
        receipt: &Receipt,
        customer_id: Option<&str>,
        policy: &dyn EarningPolicy,
        now: Timestamp,
    ) -> Result<ReceiptOutcome, StoreError> {
        let receipt = ValidReceipt::check(receipt.clone(), policy.limits())?;
        let customer = match customer_id {
            Some(id) => ReceiptCustomer::Id(id),
            None => ReceiptCustomer::FromReceipt,
        };
        Ok(self
            .apply_valid_receipt(&receipt, customer, policy, None, now)?
            .outcome)
    }

    /// Applies a validated receipt and everything it does, in **one** transaction made durable
    /// by one group commit: enrols the customer of its card (with [`ReceiptCustomer::Card`]),
    /// stores it, earns or claws back points, and, with `vouchers`, redeems the vouchers it
    /// names (or its lane holds reserved), then issues the vouchers its points earned (never
    /// through a handle [`Store::stamped`] untrusted). Returns once durable. A duplicate
    /// receipt id returns the first outcome (`duplicate: true`), issues nothing new and returns
    /// the vouchers issued the first time.
    pub fn apply_valid_receipt(
        &self,
        receipt: &ValidReceipt,
        customer: ReceiptCustomer<'_>,
        policy: &dyn EarningPolicy,
        vouchers: Option<&vouchers::Vouchers>,
        now: Timestamp,
    ) -> Result<ReceiptApplied, StoreError> {
        self.commit_valid_receipt(receipt, customer, policy, vouchers, now)?
            .wait()
    }

    /// [`Store::apply_valid_receipt`] up to the commit: returns before the receipt is durable,
    /// so that a lane can apply its next receipt while this one's group commit runs. A refusal
    /// (nothing written) is an error at once.
    pub fn commit_valid_receipt(
        &self,
        receipt: &ValidReceipt,
        customer: ReceiptCustomer<'_>,
        policy: &dyn EarningPolicy,
        vouchers: Option<&vouchers::Vouchers>,
        now: Timestamp,
    ) -> Result<Committed<ReceiptApplied>, StoreError> {
        let mut customer_id = None;
        let mut enrolment = None;
        match customer {
            ReceiptCustomer::FromReceipt => {}
            ReceiptCustomer::Id(id) => {
                check_id(id)?;
                customer_id = Some(id.to_string());
            }
            ReceiptCustomer::Card { card, enrol } => {
                check_id(card)?;
                // Consistent, not a hint: a card missing here is refused or enrolled.
                match self.card_customer(card, Reading::Consistent)? {
                    Some(id) => customer_id = Some(id),
                    None if enrol => {
                        let id = format!(
                            "{}-{}",
                            self.inner.store_id,
                            events::random_hex(8)
                                .map_err(|err| StoreError::Failed(Failure::Random(err)))?
                        );
                        enrolment = Some(Enrolment {
                            card: card.to_string(),
                            id,
                        });
                    }
                    None => {
                        return Err(StoreError::Refused(Refused::UnknownCustomer(format!(
                            "card {card}"
                        ))))
                    }
                }
            }
        }
        if let ReceiptKind::Return {
            original_receipt_id,
        } = &receipt.kind
        {
            check_id(original_receipt_id)?;
        }
        let mut request = self.prepare_receipt(
            receipt,
            customer_id.as_deref(),
            enrolment.is_some(),
            policy,
            now,
        )?;
        request.enrolment = enrolment;
        request.vouchers = match vouchers {
            Some(vouchers) => Some(vouchers.prepare_receipt(receipt, now)?),
            None => None,
        };
        let request = Arc::new(request);
        let answer = self
            .inner
            .receipts
            .submit(request.clone(), |batch| self.apply_batch(batch));
        let result = match answer {
            BatchAnswer::Done(result) => result,
            // Alone, with the policy at hand (a tier changed meanwhile, or the batch failed).
            BatchAnswer::Retry => {
                match self.commit_only(&self.receipt_trees(), |tx| {
                    apply_planned(tx, &request, Some(policy))
                })? {
                    BatchAnswer::Done(result) => result,
                    BatchAnswer::Retry => Err(StoreError::Failed(Failure::Corrupt(
                        "receipt could not be applied alone (internal error)".into(),
                    ))),
                }
            }
        };
        // Refusals wrote nothing; anything else (applied, or a duplicate whose first
        // application may still be in flight) is answered only once it is on disk.
        self.committed(result?)
    }

    /// The extra trees of a receipt's transaction: the voucher trees, then `offers`.
    pub(crate) fn receipt_trees(&self) -> [&sled::Tree; 4] {
        let [issued, state, revoked] = self.voucher_trees();
        [issued, state, revoked, self.offers_tree()]
    }

    /// The voucher trees, as the extra trees of a receipt's transaction.
    pub(crate) fn voucher_trees(&self) -> [&sled::Tree; 3] {
        let [issued, state, revoked] = &self.inner.voucher_trees;
        [issued, state, revoked]
    }

    /// Prepares a (validated) receipt for a batch. Everything that needs the policy is
    /// computed here, outside the batch (see `store/batch.rs`): the earning for the tier of
    /// the customer as read now, or the eligible amount of a return.
    pub(crate) fn prepare_receipt(
        &self,
        receipt: &Receipt,
        customer_id: Option<&str>,
        enrolling: bool,
        policy: &dyn EarningPolicy,
        now: Timestamp,
    ) -> Result<ReceiptRequest, StoreError> {
        let mut offers = offers::PreparedOffers::default();
        let plan = match &receipt.kind {
            ReceiptKind::Sale => {
                // One read of the customer gives both the tier and the offers.
                let customer = if enrolling {
                    None
                } else {
                    self.expected_customer(customer_id, receipt.card.as_deref())?
                };
                let rec = match &customer {
                    Some(id) => self.customer_rec_read(id, Reading::Hint)?,
                    None => None,
                };
                let tier = rec.as_ref().and_then(|rec| rec.tier.clone());
                let earning = policy.earn(receipt, tier.as_deref());
                if let (Some(id), Some(rec)) = (&customer, &rec) {
                    let theirs = self.offers_read(rec, Reading::Hint)?;
                    if !theirs.offers.is_empty() && theirs.consent.is_some_and(|c| c.profiling) {
                        offers.lines = policy.offer_lines(receipt, tier.as_deref());
                        offers.candidates = theirs.matching(id, receipt, &offers.lines, now);
                    }
                }
                Plan::Sale { tier, earning }
            }
            ReceiptKind::Return { .. } => Plan::Return {
                eligible: policy.eligible_amount(&receipt.lines),
            },
        };
        Ok(ReceiptRequest {
            receipt: receipt.clone(),
            data: ReceiptDataRec::from_receipt(receipt),
            customer_id: customer_id.map(Into::into),
            now,
            clock_trusted: self.clock_trusted,
            plan,
            enrolment: None,
            vouchers: None,
            unknown_categories: policy.limits().unknown_categories(receipt),
            offers,
        })
    }

    /// The id of the customer a sale will be applied to, as read outside a transaction (a hint:
    /// the batch resolves the customer again).
    pub(crate) fn expected_customer(
        &self,
        customer_id: Option<&str>,
        card: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        Ok(match (customer_id, card) {
            (Some(id), _) => Some(id.to_string()),
            (None, Some(card)) => self.card_customer(card, Reading::Hint)?,
            (None, None) => None,
        })
    }

    /// The id of the customer who holds `card`, read as `reading` says.
    fn card_customer(&self, card: &str, reading: Reading) -> Result<Option<String>, StoreError> {
        Ok(reading
            .get(self.tree(CARDS), card.as_bytes())?
            .map(|id| String::from_utf8_lossy(&id).to_string()))
    }

    /// Applies a batch of receipts in one transaction; one answer per request, in order.
    pub(crate) fn apply_batch(&self, batch: &[Arc<ReceiptRequest>]) -> Vec<BatchAnswer> {
        let result = self.commit_only(&self.receipt_trees(), |tx| {
            batch
                .iter()
                .map(|request| apply_planned(tx, request, None))
                .collect::<TxResult<Vec<BatchAnswer>>>()
        });
        match result {
            Ok(answers) => answers,
            Err(err) => {
                tracing::warn!(error = %err, receipts = batch.len(),
                    "a receipt batch failed; applying its receipts one by one");
                batch.iter().map(|_| BatchAnswer::Retry).collect()
            }
        }
    }

    /// Attaches a card-less sale to a customer (a card scanned just after the receipt): earns
    /// its points now, exactly once (less what returns of it already took back). Attaching it
    /// again to the same customer returns the same answer with `duplicate: true`.
    pub fn attach_customer(
        &self,
        receipt_id: &str,
        customer_id: &str,
        policy: &dyn EarningPolicy,
        now: Timestamp,
    ) -> Result<ReceiptOutcome, StoreError> {
        check_id(receipt_id)?;
        check_id(customer_id)?;
        // Her consent decides whether the sale's lines may still leave the box tied to her:
        // without it, the sale's `receipt` event, if not sent yet, loses them (found here,
        // outside the transaction; checked again inside).
        let unsent_event = match self.customer_rec(customer_id)? {
            Some(customer) if !customer.receipt_lines_linked() => {
                self.unsent_receipt_event(receipt_id)?
            }
            _ => None,
        };
        self.transact(&[], |tx| {
            let Some(bytes) = tx.tree(RECEIPTS).get(receipt_id.as_bytes())? else {
                return abort(StoreError::Refused(Refused::UnknownReceipt(
                    receipt_id.into(),
                )));
            };
            let mut rec = decode_receipt(receipt_id, &bytes)?;
            if rec.data.original_receipt_id.is_some() {
                return abort(StoreError::Refused(Refused::NotASale(receipt_id.into())));
            }
            match (&rec.customer_id, &rec.attach_outcome) {
                (Some(existing), Some(outcome)) if existing == customer_id => {
                    return Ok(outcome_from(receipt_id, outcome, true));
                }
                (Some(existing), _) if existing == customer_id => {
                    return Ok(outcome_from(receipt_id, &rec.outcome, true));
                }
                (Some(existing), _) => {
                    return abort(StoreError::Refused(Refused::AlreadyAttached {
                        receipt_id: receipt_id.into(),
                        customer_id: existing.clone(),
                    }))
                }
                (None, _) => {}
            }
            let Some(customer) = tx.customer_rec(customer_id)? else {
                return abort(StoreError::Refused(Refused::UnknownCustomer(
                    customer_id.into(),
                )));
            };
            let receipt = rec.data.to_receipt();
            let earning = policy.earn(&receipt, customer.tier.as_deref());
            let points = earning.points.max(0);
            let mut state = rec.returns.to_state();
            state.original_points = points;
            state.original_eligible = earning.eligible;
            state.clawed = 0;
            let mut balance = tx.balance(customer_id, now)?;
            if points > 0 {
                let (index, b) = tx.ledger_entry(
                    &NewEntry {
                        customer_id,
                        kind: EntryKind::Earn,
                        points,
                        at: now,
                        receipt_id: Some(receipt_id),
                        cause_receipt_id: None,
                        reference: None,
                        reason: Some("attached"),
                        vests_at: earning.vests_at,
                    },
                    now,
                )?;
                rec.entries.push(index);
                balance = b;
            }
            // Returns of this sale made before the card was attached.
            let (claw, state) = ledger::clawback(
                state,
                loyalty_core::money::Money(0),
                loyalty_core::money::Money(0),
            );
            if claw > 0 {
                let (index, b) = tx.ledger_entry(
                    &NewEntry {
                        customer_id,
                        kind: EntryKind::Clawback,
                        points: -claw,
                        at: now,
                        receipt_id: Some(receipt_id),
                        cause_receipt_id: None,
                        reference: None,
                        reason: Some("returned before attach"),
                        vests_at: None,
                    },
                    now,
                )?;
                rec.entries.push(index);
                balance = b;
            }
            // Points owed by earlier returns are paid first from what this sale earned.
            let (indexes, after) = tx.collect_owed(customer_id, receipt_id, points - claw, now)?;
            rec.entries.extend(indexes);
            if let Some(after) = after {
                balance = after;
            }
            rec.returns = ReturnRec::from_state(&state);
            rec.customer_id = Some(customer_id.into());
            rec.vests_at = earning.vests_at;
            rec.promotions = earning.promotions.clone();
            let outcome = OutcomeRec {
                customer_id: Some(customer_id.into()),
                earned: points - claw,
                total: Some(balance.total),
                available: Some(balance.available),
                pending: Some(balance.pending),
                promotions: earning.promotions.clone(),
                note: None,
                redemptions: rec.outcome.redemptions.clone(),
            };
            rec.attach_outcome = Some(outcome.clone());
            put_receipt(tx, &rec)?;
            if !customer.receipt_lines_linked() {
                if let Some(key) = &unsent_event {
                    withhold_unsent_lines(tx, key, receipt_id, customer_id)?;
                }
            }
            tx.count_attached(rec.applied_at, customer_id, receipt.total.0)?;
            Ok(outcome_from(receipt_id, &outcome, false))
        })
    }

    /// The outbox key of the `receipt` event of `receipt_id` if it is not acknowledged yet,
    /// looked for among the last [`ATTACH_LOOKBACK`] events (a card is attached seconds after
    /// its sale; an older event is left as it is).
    fn unsent_receipt_event(&self, receipt_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (_, acked) = self.outbox_positions()?;
        let id = serde_json::to_string(receipt_id)
            .map_err(|e| StoreError::Failed(Failure::Corrupt(e.to_string())))?;
        let needles = [
            format!("\"receipt_id\":{id}").into_bytes(),
            b"\"type\":\"receipt\"".to_vec(),
        ];
        let start = acked.saturating_add(1);
        for item in self
            .tree(OUTBOX)
            .range(u64_be(start)..)
            .rev()
            .take(ATTACH_LOOKBACK)
        {
            let (key, value) = item?;
            let holds = |n: &Vec<u8>| value.windows(n.len()).any(|w| w == n.as_slice());
            if needles.iter().all(holds) {
                return Ok(Some(key.to_vec()));
            }
        }
        Ok(None)
    }

    /// The first outcome of a receipt, if it was applied.
    pub fn receipt_outcome(&self, receipt_id: &str) -> Result<Option<ReceiptOutcome>, StoreError> {
        match self.tree(RECEIPTS).get(receipt_id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                let rec: ReceiptRec = serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Failed(Failure::Corrupt(format!("receipt {receipt_id}: {e}")))
                })?;
                Ok(Some(outcome_from(receipt_id, &rec.outcome, false)))
            }
        }
    }

    /// The stored receipt, if it was applied.
    pub fn receipt(&self, receipt_id: &str) -> Result<Option<Receipt>, StoreError> {
        match self.tree(RECEIPTS).get(receipt_id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                let rec: ReceiptRec = serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Failed(Failure::Corrupt(format!("receipt {receipt_id}: {e}")))
                })?;
                Ok(Some(rec.data.to_receipt()))
            }
        }
    }

    /// Number of receipts stored.
    pub fn receipt_count(&self) -> usize {
        self.tree(RECEIPTS).len()
    }
}

pub(crate) fn decode_receipt(receipt_id: &str, bytes: &[u8]) -> TxResult<ReceiptRec> {
    serde_json::from_slice(bytes).map_err(|e| tx_corrupt(format!("receipt {receipt_id}: {e}")))
}

pub(crate) fn put_receipt(tx: &Tx<'_>, rec: &ReceiptRec) -> TxResult<()> {
    let bytes = serde_json::to_vec(rec).map_err(|e| tx_corrupt(e.to_string()))?;
    tx.tree(RECEIPTS).put(rec.data.id.as_bytes(), bytes)?;
    Ok(())
}

/// How many of the newest outbox events [`Store::attach_customer`] looks through for the sale's
/// unsent `receipt` event.
const ATTACH_LOOKBACK: usize = 1_000;

/// Rewrites the unsent `receipt` event at `key` of the card-less sale `receipt_id` for
/// `customer_id`, who has no profiling consent: hers, without lines.
fn withhold_unsent_lines(
    tx: &Tx<'_>,
    key: &[u8],
    receipt_id: &str,
    customer_id: &str,
) -> TxResult<()> {
    let Some(value) = tx.tree(OUTBOX).get(key)? else {
        return Ok(());
    };
    let (at, json) = value.split_at(8.min(value.len()));
    let rewritten = loyalty_protocol::crm::events::withhold_attached_receipt_lines(
        json,
        receipt_id,
        customer_id,
    )
    .map_err(|e| tx_corrupt(format!("outbox event of receipt {receipt_id}: {e}")))?;
    if let Some(text) = rewritten {
        let mut new = at.to_vec();
        new.extend_from_slice(&text);
        tx.tree(OUTBOX).put(key, new)?;
    }
    Ok(())
}
