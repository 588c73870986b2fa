//! A customer's open vouchers for the till's screen, found through her own journal: every
//! `voucher_conversion` entry names its voucher (`reference`), so the lookup walks her entries
//! (the `customer_journal` index, O(her entries)) and never the store's whole voucher tree.
//! Goodwill vouchers (no points converted) are not in her journal and are not listed.

use super::{IssuedVoucher, Vouchers};
use crate::{journal, read_u64, u64_be, StoreError, CUSTOMER_JOURNAL, JOURNAL};
use jiff::Timestamp;
use loyalty_core::ledger::EntryKind;
use loyalty_core::voucher::{RedemptionState, VoucherId};

impl Vouchers {
    /// Her vouchers that are neither redeemed, revoked nor expired at `now` (reserved ones
    /// included), soonest to expire first, and how many there are in all; at most `max` are
    /// returned. An id merged into her counts as hers.
    pub fn open_for_customer(
        &self,
        customer_id: &str,
        now: Timestamp,
        max: usize,
    ) -> Result<(Vec<IssuedVoucher>, usize), StoreError> {
        let store = &self.store;
        let mut ids = store.customer_ids_of(customer_id)?;
        if ids.is_empty() {
            ids.push(customer_id.to_string());
        }
        let mut open = Vec::new();
        for id in &ids {
            let mut prefix = id.as_bytes().to_vec();
            prefix.push(0);
            for item in store.tree(CUSTOMER_JOURNAL).scan_prefix(&prefix) {
                let (key, _) = item?;
                let Some(index) = read_u64(&key[prefix.len()..]) else {
                    continue;
                };
                let Some(value) = store.tree(JOURNAL).get(u64_be(index))? else {
                    continue;
                };
                let Some((_, _, body)) = journal::decode(&value) else {
                    continue;
                };
                if body.kind != EntryKind::VoucherConversion.as_str() {
                    continue;
                }
                let Some(voucher_id) = body.reference.as_deref().and_then(VoucherId::parse) else {
                    continue;
                };
                let Some(issued) = self.issued(&voucher_id)? else {
                    continue;
                };
                if issued.voucher.valid_until <= now
                    || self.is_revoked(&voucher_id)?
                    || matches!(self.state(&voucher_id)?, RedemptionState::Redeemed { .. })
                {
                    continue;
                }
                open.push(issued);
            }
        }
        open.sort_by_key(|v| v.voucher.valid_until);
        let all = open.len();
        open.truncate(max);
        Ok((open, all))
    }
}
