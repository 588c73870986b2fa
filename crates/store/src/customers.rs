//! Customers: by id, indexed by card; enrolment, the CRM's profiles and balance confirmations,
//! erasure.

use super::*;
use loyalty_protocol::crm::events::CustomerEvent;

impl Store {
    /// The customer with this id.
    pub fn customer(&self, customer_id: &str) -> Result<Option<Customer>, StoreError> {
        Ok(self.customer_rec(customer_id)?.map(|rec| rec.to_customer()))
    }

    /// The customer's record; an id merged away at head office resolves to the survivor.
    pub(crate) fn customer_rec(
        &self,
        customer_id: &str,
    ) -> Result<Option<CustomerRec>, StoreError> {
        self.customer_rec_read(customer_id, Reading::Consistent)
    }

    /// [`Store::customer_rec`], read as `reading` says.
    pub(crate) fn customer_rec_read(
        &self,
        customer_id: &str,
        reading: Reading,
    ) -> Result<Option<CustomerRec>, StoreError> {
        let mut id = customer_id.to_string();
        for _ in 0..=MAX_MERGE_HOPS {
            let rec: CustomerRec = match reading.get(self.tree(CUSTOMERS), id.as_bytes())? {
                None => return Ok(None),
                Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Failed(Failure::Corrupt(format!("customer {id}: {e}")))
                })?,
            };
            match rec.merged_into {
                Some(into) => id = into,
                None => return Ok(Some(rec)),
            }
        }
        Err(StoreError::Failed(Failure::Corrupt(format!(
            "customer {customer_id}: more than {MAX_MERGE_HOPS} merges in a row (a cycle?)"
        ))))
    }

    /// The ids merged into this customer at head office (its own id first), so that vouchers
    /// bound to an old id and its journal entries still count for it. Empty when unknown.
    pub fn customer_ids_of(&self, customer_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(match self.customer_rec(customer_id)? {
            Some(rec) => std::iter::once(rec.id).chain(rec.merged_from).collect(),
            None => Vec::new(),
        })
    }

    /// The customer holding this card.
    pub fn customer_by_card(&self, card: &str) -> Result<Option<Customer>, StoreError> {
        match self.tree(CARDS).get(card.as_bytes())? {
            None => Ok(None),
            Some(id) => self.customer(&String::from_utf8_lossy(&id)),
        }
    }

    /// The customer whose phone (`kind` "phone") or e-mail ("email") hashes to `hash` (hex
    /// SHA-256 of the normalised value, `loyalty_core::contact`): one index lookup.
    pub fn customer_by_contact_hash(
        &self,
        kind: &str,
        hash: &str,
    ) -> Result<Option<Customer>, StoreError> {
        match self.tree(CARDS).get(records::contact_key(kind, hash))? {
            None => Ok(None),
            Some(id) => self.customer(&String::from_utf8_lossy(&id)),
        }
    }

    /// Enrolls a new customer for an unknown card of the program's range (emits
    /// `customer_enrolled`). Enrolling a known card returns its customer unchanged.
    pub fn enroll(&self, card: &str, at: Timestamp) -> Result<Customer, StoreError> {
        check_id(card)?;
        let id = format!(
            "{}-{}",
            self.inner.store_id,
            events::random_hex(8).map_err(|err| StoreError::Failed(Failure::Random(err)))?
        );
        self.transact(&[], |tx| {
            if let Some(existing) = tx.tree(CARDS).get(card.as_bytes())? {
                let existing = String::from_utf8_lossy(&existing).to_string();
                return match tx.customer_rec(&existing)? {
                    Some(rec) => Ok(rec.to_customer()),
                    None => corrupt(format!("card {card} points to missing customer {existing}")),
                };
            }
            let rec = CustomerRec::enrolled_locally(id.clone(), card.to_string(), at);
            tx.put_customer_rec(&rec)?;
            tx.tree(CARDS).put(card.as_bytes(), id.as_bytes())?;
            let customer = rec.to_customer();
            tx.append_event(
                EventType::CustomerEnrolled,
                at,
                &CustomerEvent::new(&customer),
            )?;
            Ok(customer)
        })
    }

    /// Creates or updates a customer's profile as sent by the CRM (card, name, tier; no
    /// event: the CRM already knows). The local account is kept.
    pub fn upsert_crm_customer(&self, customer: &Customer) -> Result<(), StoreError> {
        check_id(&customer.id)?;
        if let Some(card) = &customer.card {
            check_id(card)?;
        }
        self.transact(&[], |tx| {
            let old = tx.customer_rec(&customer.id)?;
            if let Some(card) = &customer.card {
                if let Some(holder) = tx.tree(CARDS).get(card.as_bytes())? {
                    if holder != customer.id.as_bytes() {
                        // The CRM is the authority on cards: move the card.
                        let holder = String::from_utf8_lossy(&holder).to_string();
                        if let Some(mut other) = tx.customer_rec(&holder)? {
                            other.card = None;
                            tx.put_customer_rec(&other)?;
                        }
                    }
                }
            }
            if let Some(old_card) = old.as_ref().and_then(|o| o.card.clone()) {
                if Some(&old_card) != customer.card.as_ref() {
                    tx.tree(CARDS).remove(old_card.as_bytes())?;
                }
            }
            let kept =
                old.unwrap_or_else(|| CustomerRec::bare(customer.id.clone(), customer.enrolled_at));
            let rec = CustomerRec {
                card: customer.card.clone(),
                name: customer.name.clone(),
                tier: customer.tier.clone(),
                ..kept
            };
            tx.put_customer_rec(&rec)?;
            if let Some(card) = &customer.card {
                tx.tree(CARDS).put(card.as_bytes(), rec.id.as_bytes())?;
            }
            Ok(())
        })
    }

    /// Records the balance the CRM confirmed for a customer, including this store's events up
    /// to `through_seq`. An older confirmation than the one held is ignored (returns false).
    pub fn confirm_balance(
        &self,
        customer_id: &str,
        points: i64,
        through_seq: u64,
    ) -> Result<bool, StoreError> {
        self.transact(&[], |tx| {
            let Some(mut rec) = tx.customer_rec(customer_id)? else {
                return abort(StoreError::Refused(Refused::UnknownCustomer(
                    customer_id.into(),
                )));
            };
            let mut account = rec.account.to_account();
            let taken = account.confirm(Confirmed {
                points,
                through_seq,
            });
            if taken {
                rec.has_confirmed = true;
                rec.account = records::AccountRec::from_account(&account);
                tx.put_customer_rec(&rec)?;
            }
            Ok(taken)
        })
    }

    /// Honors an erasure request: removes the card index and the profile's personal fields,
    /// and her cards and name from stored receipts and outbox events (`store/erasure.rs`; the
    /// next open compacts the old versions away). The pseudonymous ledger stays (it is needed
    /// for the hash chain and balances).
    pub fn erase_customer(&self, customer_id: &str) -> Result<bool, StoreError> {
        let erasing = self.erasure_scan(&[customer_id.to_string()])?;
        let erased = self.transact(&[], |tx| {
            let erased = super::sync_state::erase(tx, customer_id)?;
            super::erasure::scrub_in_tx(tx, &erasing)?;
            Ok(erased)
        })?;
        self.scrub_erased_again(erasing)?;
        Ok(erased)
    }
}
