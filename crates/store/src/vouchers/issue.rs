//! Issuing: the vouchers a sale's points earn (converted in the same transaction that records
//! them, with ids derived from the receipt id so that a redelivered receipt gets the same
//! ones), and staff goodwill vouchers.

use super::*;

/// Why a voucher could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No signing key configured.
    #[error("no signing key: set rewards.signing_key_file (create one with `loyalty-gateway keys generate --out PATH`)")]
    NoSigningKey,
    /// A goodwill voucher above `rewards.goodwill_max_value`.
    #[error("goodwill voucher of {value} is above rewards.goodwill_max_value {max}")]
    AboveGoodwillMax {
        /// Requested.
        value: String,
        /// Allowed.
        max: String,
    },
    /// The value is not a positive amount.
    #[error("value '{0}' must be a positive amount such as 5.00")]
    BadValue(String),
    /// The voucher cannot be encoded.
    #[error(transparent)]
    Format(#[from] voucher::FormatError),
    /// The operating system's random source failed.
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
}

impl Vouchers {
    /// After a sale receipt for `customer_id`: issues the vouchers the customer's available
    /// balance earns under `rewards.rules`, converting their points, recording the vouchers
    /// and their `voucher_issued` events in one durable transaction. Idempotent per receipt:
    /// a second call returns the vouchers issued the first time and converts nothing.
    ///
    /// Through a handle [`Vouchers::stamped`] untrusted nothing is issued: a validity window
    /// counted from an untrusted time (the floor, possibly days behind the real time) would
    /// make the voucher expire early, or already be expired at other stores. The points stay
    /// on the account and are converted at the customer's next sale with a trusted clock.
    pub fn issue_after_receipt(
        &self,
        receipt_id: &str,
        customer_id: &str,
        now: Timestamp,
    ) -> Result<Vec<IssuedVoucher>, IssueError> {
        if self.settings.rules.rules.is_empty() {
            return Ok(Vec::new());
        }
        if !self.store.clock_trusted() {
            tracing::info!(
                receipt = receipt_id,
                "no voucher issued while the clock is untrusted; the points stay on the account"
            );
            return Ok(Vec::new());
        }
        if self.settings.store_key.is_none() {
            return Err(IssueError::NoSigningKey);
        }
        let already = self.issued_for_receipt(receipt_id)?;
        if !already.is_empty() {
            return Ok(already);
        }
        let rules = &self.settings.rules;
        // Most receipts earn no voucher: decide that from a plain read, without a transaction
        // and its group commit (the transaction checks again).
        if rules
            .plan(self.store.balance(customer_id, now)?.available)
            .is_none()
        {
            return Ok(Vec::new());
        }
        self.store
            .transact(&self.extra(), |tx| {
                self.issue_in_tx(tx, receipt_id, customer_id, true, now)
            })
            .map_err(IssueError::from)
    }

    /// Inside a transaction: the vouchers issued for `receipt_id`, issuing them now (when
    /// `issue_new` and none were) from the customer's available balance. Needs a store key.
    pub(super) fn issue_in_tx(
        &self,
        tx: &Tx<'_>,
        receipt_id: &str,
        customer_id: &str,
        issue_new: bool,
        now: Timestamp,
    ) -> TxResult<Vec<IssuedVoucher>> {
        let Some(key) = &self.settings.store_key else {
            return Ok(Vec::new());
        };
        let rules = &self.settings.rules;
        let mut already = Vec::new();
        for index in 0..rules.max_per_receipt.max(1) {
            let id = VoucherId::derived(&key.key_id, receipt_id, index);
            match tx_issued(tx, &id)? {
                Some(rec) => match issued_from(&id, &rec) {
                    Ok(issued) => already.push(issued),
                    Err(err) => return abort(err),
                },
                None => break,
            }
        }
        if !already.is_empty() || !issue_new {
            return Ok(already);
        }
        let balance = tx.balance(customer_id, now)?;
        // Points held for a payment at a lane are not converted.
        let convertible = balance.available - tx.reserved_points(customer_id, now)?;
        let Some(plan) = rules.plan_for_lane(convertible, self.reach) else {
            return Ok(Vec::new());
        };
        let tz = &self.settings.time_zone;
        let every = plan.points / i64::from(plan.count);
        // Everything is signed before anything is written: a voucher that cannot be signed
        // issues nothing (the points stay on the account) rather than failing the receipt.
        let mut signed = Vec::new();
        for voucher in rules.vouchers(&plan, &key.key_id, receipt_id, customer_id, now, tz) {
            match voucher.sign(&key.signing) {
                Ok(text) => signed.push((voucher, text)),
                Err(err) => {
                    tracing::warn!(receipt = receipt_id, error = %err, "no voucher issued: cannot sign it");
                    return Ok(Vec::new());
                }
            }
        }
        let mut out = Vec::new();
        for (voucher, text) in signed {
            let issued = IssuedVoucher {
                voucher,
                text,
                receipt_id: Some(receipt_id.to_string()),
                customer_id: Some(customer_id.to_string()),
                points: every,
            };
            self.record_issued(tx, &issued, "earned", None, now)?;
            out.push(issued);
        }
        Ok(out)
    }

    fn record_issued(
        &self,
        tx: &Tx<'_>,
        issued: &IssuedVoucher,
        origin: &str,
        issued_by: Option<&str>,
        now: Timestamp,
    ) -> TxResult<()> {
        let id = issued.voucher.id;
        let id_text = id.to_string();
        if issued.points > 0 {
            if let Some(customer_id) = issued.customer_id.as_deref() {
                tx.ledger_entry(
                    &NewEntry {
                        customer_id,
                        kind: EntryKind::VoucherConversion,
                        points: -issued.points,
                        at: now,
                        receipt_id: None,
                        cause_receipt_id: issued.receipt_id.as_deref(),
                        reference: Some(&id_text),
                        reason: None,
                        vests_at: None,
                    },
                    now,
                )?;
            }
        }
        let rec = IssuedRec {
            text: issued.text.clone(),
            origin: origin.to_string(),
            receipt_id: issued.receipt_id.clone(),
            customer_id: issued.customer_id.clone(),
            issued_at: now,
            points: issued.points,
            issued_by: issued_by.map(str::to_string),
        };
        tx.extra(T_ISSUED).put(&id.0, to_json(&rec)?)?;
        tx.append_event(
            EventType::VoucherIssued,
            now,
            &VoucherIssuedEvent::new(
                &issued.voucher,
                Issue {
                    text: &issued.text,
                    receipt_id: issued.receipt_id.as_deref(),
                    customer_id: issued.customer_id.as_deref(),
                    points: issued.points,
                    origin,
                    issued_by,
                },
            ),
        )?;
        Ok(())
    }

    /// A staff goodwill voucher of `value` (decimal text, at most `rewards.goodwill_max_value`),
    /// optionally bound to `customer_id`, valid `days` days (default
    /// `rewards.goodwill_validity_days`). Recorded and announced like any other voucher.
    pub fn issue_goodwill(
        &self,
        value: &str,
        customer_id: Option<&str>,
        days: Option<u32>,
        now: Timestamp,
    ) -> Result<IssuedVoucher, IssueError> {
        self.issue_goodwill_by(value, customer_id, days, None, now)
    }

    /// [`Vouchers::issue_goodwill`] by staff member `issued_by` (recorded with the voucher and
    /// in its `voucher_issued` event).
    pub fn issue_goodwill_by(
        &self,
        value: &str,
        customer_id: Option<&str>,
        days: Option<u32>,
        issued_by: Option<&str>,
        now: Timestamp,
    ) -> Result<IssuedVoucher, IssueError> {
        let key = self
            .settings
            .store_key
            .as_ref()
            .ok_or(IssueError::NoSigningKey)?;
        let decimals = loyalty_core::money::currency_decimals(&self.settings.currency);
        let amount = Money::parse(value, decimals)
            .ok()
            .filter(|m| m.0 > 0)
            .ok_or_else(|| IssueError::BadValue(value.to_string()))?;
        if amount > self.settings.goodwill_max {
            return Err(IssueError::AboveGoodwillMax {
                value: amount.format(decimals),
                max: self.settings.goodwill_max.format(decimals),
            });
        }
        if let Some(customer_id) = customer_id {
            loyalty_core::customer::check_id(customer_id)
                .map_err(|err| IssueError::Store(StoreError::Refused(Refused::InvalidId(err))))?;
        }
        let mut random = [0u8; 10];
        getrandom::getrandom(&mut random).map_err(|err| IssueError::Random(err.to_string()))?;
        let valid_from = voucher::issue::whole_seconds(now);
        let days = days.unwrap_or(self.settings.goodwill_days).clamp(1, 3660);
        let voucher = Voucher {
            id: VoucherId(random),
            key_id: key.key_id.clone(),
            currency: self.settings.currency.clone(),
            benefit: Benefit::AmountOff(amount),
            valid_from,
            valid_until: voucher::issue::end_of_day_after(
                valid_from,
                days,
                &self.settings.time_zone,
            ),
            valid_from_issue: true,
            min_spend: None,
            customer: customer_id.map(CustomerBinding::of),
        };
        let text = voucher.sign(&key.signing)?;
        let issued = IssuedVoucher {
            voucher,
            text,
            receipt_id: None,
            customer_id: customer_id.map(str::to_string),
            points: 0,
        };
        self.store.transact(&self.extra(), |tx| {
            self.record_issued(tx, &issued, "goodwill", issued_by, now)
        })?;
        Ok(issued)
    }
}

pub(super) fn issued_from(id: &VoucherId, rec: &IssuedRec) -> Result<IssuedVoucher, StoreError> {
    let signed = voucher::decode(&rec.text).map_err(|err| {
        StoreError::Failed(Failure::Corrupt(format!("issued voucher {id}: {err}")))
    })?;
    Ok(IssuedVoucher {
        voucher: signed.voucher,
        text: rec.text.clone(),
        receipt_id: rec.receipt_id.clone(),
        customer_id: rec.customer_id.clone(),
        points: rec.points,
    })
}
