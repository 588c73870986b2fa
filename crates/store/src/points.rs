//! Points outside receipts: balances, a customer's entries, redemption at the till, conversion
//! into vouchers and the CRM's adjustments, each a journal entry with its outbox event.

use super::*;

impl Store {
    /// A customer's balance at `now`.
    pub fn balance(&self, customer_id: &str, now: Timestamp) -> Result<Balance, StoreError> {
        match self.customer_rec(customer_id)? {
            Some(rec) => Ok(rec.account.to_account().balance(now)),
            None => Err(StoreError::Refused(Refused::UnknownCustomer(
                customer_id.into(),
            ))),
        }
    }

    /// The customer's journal entries, oldest first (those of ids merged into her included).
    pub fn customer_entries(&self, customer_id: &str) -> Result<Vec<Entry>, StoreError> {
        let mut ids = self.customer_ids_of(customer_id)?;
        if ids.is_empty() {
            ids.push(customer_id.to_string());
        }
        let mut out = Vec::new();
        for id in &ids {
            let mut prefix = id.as_bytes().to_vec();
            prefix.push(0);
            for item in self.tree(CUSTOMER_JOURNAL).scan_prefix(&prefix) {
                let (key, _) = item?;
                let index = read_u64(&key[prefix.len()..]).ok_or_else(|| {
                    StoreError::Failed(Failure::Corrupt("customer_journal key".into()))
                })?;
                let Some(value) = self.tree(JOURNAL).get(u64_be(index))? else {
                    return Err(StoreError::Failed(Failure::Corrupt(format!(
                        "journal entry {index} missing"
                    ))));
                };
                let (_, _, body) = journal::decode(&value).ok_or_else(|| {
                    StoreError::Failed(Failure::Corrupt(format!("journal entry {index}")))
                })?;
                let entry = body.to_entry().ok_or_else(|| {
                    StoreError::Failed(Failure::Corrupt(format!("journal entry {index} kind")))
                })?;
                out.push(entry);
            }
        }
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }

    pub(crate) fn points_op(
        &self,
        op: &str,
        reference: &str,
        new: NewEntry<'_>,
        now: Timestamp,
    ) -> Result<LedgerOutcome, StoreError> {
        check_id(new.customer_id)?;
        check_id(reference)?;
        self.transact(&[], |tx| points_op_in(tx, op, reference, &new, now))
    }

    /// Spends `points` at the till. `reference` makes it idempotent (the lane's redemption id).
    pub fn redeem_points(
        &self,
        customer_id: &str,
        points: i64,
        reference: &str,
        now: Timestamp,
    ) -> Result<LedgerOutcome, StoreError> {
        self.spend(
            "redeem",
            EntryKind::Redeem,
            customer_id,
            points,
            reference,
            now,
        )
    }

    /// Converts `points` into the voucher `voucher_id` (the ledger side only; the voucher
    /// module stores the voucher). Idempotent per voucher id.
    pub fn convert_to_voucher(
        &self,
        customer_id: &str,
        points: i64,
        voucher_id: &str,
        now: Timestamp,
    ) -> Result<LedgerOutcome, StoreError> {
        self.spend(
            "voucher",
            EntryKind::VoucherConversion,
            customer_id,
            points,
            voucher_id,
            now,
        )
    }

    /// Takes `points` (positive) off the customer's available balance as a `kind` entry,
    /// idempotent per (`op`, `reference`).
    pub(crate) fn spend(
        &self,
        op: &str,
        kind: EntryKind,
        customer_id: &str,
        points: i64,
        reference: &str,
        now: Timestamp,
    ) -> Result<LedgerOutcome, StoreError> {
        // Only the sign is checked here; the available balance is checked in the transaction.
        ledger::check_spend(
            Balance {
                total: i64::MAX,
                available: i64::MAX,
                pending: 0,
            },
            points,
        )?;
        self.points_op(
            op,
            reference,
            NewEntry {
                customer_id,
                kind,
                points: -points,
                at: now,
                receipt_id: None,
                cause_receipt_id: None,
                reference: Some(reference),
                reason: None,
                vests_at: None,
            },
            now,
        )
    }

    /// Applies a signed adjustment from the CRM. Idempotent per `crm_reference`.
    pub fn crm_adjustment(
        &self,
        customer_id: &str,
        points: i64,
        crm_reference: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<LedgerOutcome, StoreError> {
        ledger::check_adjustment(points)?;
        self.points_op(
            "adjust",
            crm_reference,
            NewEntry {
                customer_id,
                kind: EntryKind::Adjustment,
                points,
                at: now,
                receipt_id: None,
                cause_receipt_id: None,
                reference: Some(crm_reference),
                reason: Some(reason),
                vests_at: None,
            },
            now,
        )
    }
}

/// The body of [`Store::points_op`] inside a caller's transaction (ids already checked): the
/// entry once per (`op`, `reference`); a repeat answers the first outcome as a duplicate.
pub(crate) fn points_op_in(
    tx: &Tx<'_>,
    op: &str,
    reference: &str,
    new: &NewEntry<'_>,
    now: Timestamp,
) -> TxResult<LedgerOutcome> {
    let mut op_key = op.as_bytes().to_vec();
    op_key.push(0);
    op_key.extend_from_slice(reference.as_bytes());
    if let Some(bytes) = tx.tree(OPS).get(&op_key)? {
        let Some(index) = read_u64(&bytes) else {
            return corrupt("ops value");
        };
        let balance = tx.balance(new.customer_id, now)?;
        let points = bytes.get(8..16).and_then(read_u64).map_or(0, |p| p as i64);
        return Ok(LedgerOutcome {
            entry: index,
            customer_id: new.customer_id.into(),
            points,
            balance,
            duplicate: true,
        });
    }
    let (index, balance) = tx.ledger_entry(new, now)?;
    let mut value = u64_be(index).to_vec();
    value.extend_from_slice(&u64_be(new.points as u64));
    tx.tree(OPS).put(op_key.as_slice(), value)?;
    Ok(LedgerOutcome {
        entry: index,
        customer_id: new.customer_id.into(),
        points: new.points,
        balance,
        duplicate: false,
    })
}
