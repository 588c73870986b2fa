//! The staff page's customer view: finding a customer (by card number, customer id, phone or
//! e-mail; phone and e-mail are matched by their hash, `loyalty_core::contact`, as the store
//! never holds them in clear), and what the
//! page shows of them: profile, balance, open vouchers, this store's last purchases with their
//! items and the categories they buy most. Also the one action that writes: a goodwill voucher
//! issued through the running daemon's voucher store, capped by `rewards.goodwill_max_value`.
//! Blocking (reads sled): called on tokio's blocking pool.

use crate::gateway::GatewayHandle;
use jiff::Timestamp;
use loyalty_core::contact;
use loyalty_core::customer::Customer;
use loyalty_core::ledger::{Balance, EntryKind};
use loyalty_core::money::Money;
use loyalty_core::receipt::Receipt;
use loyalty_core::voucher::RedemptionState;
use loyalty_store::vouchers::{IssueError, IssuedVoucher};
use loyalty_store::StoreError;
use std::collections::BTreeMap;

/// Purchases shown.
pub const RECENT_PURCHASES: usize = 10;
/// Purchases the favourite categories are derived from.
const CATEGORY_BASE: usize = 50;
/// Categories shown.
const TOP_CATEGORIES: usize = 3;

/// Everything the customer page shows.
#[derive(Debug, Clone)]
pub struct CustomerPage {
    /// The profile.
    pub customer: Customer,
    /// Points now.
    pub balance: Balance,
    /// Open (unredeemed, unexpired) vouchers issued to the customer in this store.
    pub vouchers: Vec<IssuedVoucher>,
    /// This store's last purchases, newest first, with the points each earned.
    pub purchases: Vec<(Receipt, i64)>,
    /// Categories by amount spent over the last purchases, largest first.
    pub top_categories: Vec<(String, Money)>,
    /// Her active personal and segment offers (none without `profiling` consent).
    pub offers: Vec<loyalty_core::offers::Offer>,
}

/// Finds a customer by what staff typed, decided by its shape: with an `@`, an e-mail address
/// (by hash); with phone separators (`+`, spaces, dashes, ...) around digits, a phone number
/// (by hash); else a card number, else a customer id, else (all digits, no such card or id) a
/// phone number typed without separators.
pub fn find(handle: &GatewayHandle, query: &str) -> Result<Option<Customer>, StoreError> {
    let query = query.trim();
    if query.is_empty() || query.len() > 128 || query.chars().any(char::is_control) {
        return Ok(None);
    }
    if query.contains('@') {
        return match contact::email_hash(query) {
            Some(hash) => handle.store.customer_by_contact_hash("email", &hash),
            None => Ok(None),
        };
    }
    let phone = contact::phone_hash(query);
    let plain = query.bytes().all(|b| b.is_ascii_digit());
    if let (Some(hash), false) = (&phone, plain) {
        return handle.store.customer_by_contact_hash("phone", hash);
    }
    if let Some(customer) = handle.store.customer_by_card(query)? {
        return Ok(Some(customer));
    }
    if let Some(customer) = handle.store.customer(query)? {
        return Ok(Some(customer));
    }
    match phone {
        Some(hash) => handle.store.customer_by_contact_hash("phone", &hash),
        None => Ok(None),
    }
}

/// Loads what the page shows of `customer`.
pub fn load(
    handle: &GatewayHandle,
    customer: Customer,
    now: Timestamp,
) -> Result<CustomerPage, StoreError> {
    let store = &handle.store;
    let balance = store.balance(&customer.id, now)?;
    let entries = store.customer_entries(&customer.id)?;
    let mut purchases = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for entry in entries.iter().rev() {
        if purchases.len() >= CATEGORY_BASE {
            break;
        }
        if !matches!(entry.kind, EntryKind::Earn) {
            continue;
        }
        let Some(receipt_id) = &entry.receipt_id else {
            continue;
        };
        if !seen.insert(receipt_id.clone()) {
            continue;
        }
        if let Some(receipt) = store.receipt(receipt_id)? {
            purchases.push((receipt, entry.points));
        }
    }
    let top_categories = top_categories(purchases.iter().map(|(receipt, _)| receipt));
    let mut vouchers = Vec::new();
    for (receipt, _) in &purchases {
        for issued in handle.vouchers.issued_for_receipt(&receipt.id)? {
            if issued.voucher.valid_until <= now {
                continue;
            }
            if matches!(
                handle.vouchers.state(&issued.voucher.id)?,
                RedemptionState::Redeemed { .. }
            ) {
                continue;
            }
            vouchers.push(issued);
        }
    }
    purchases.truncate(RECENT_PURCHASES);
    let offers = store.active_offers(&customer.id, now)?;
    Ok(CustomerPage {
        offers,
        customer,
        balance,
        vouchers,
        purchases,
        top_categories,
    })
}

/// Categories by amount spent, largest first (lines without a category and discount lines are
/// left out).
pub fn top_categories<'a>(receipts: impl Iterator<Item = &'a Receipt>) -> Vec<(String, Money)> {
    let mut spent: BTreeMap<String, i64> = BTreeMap::new();
    for receipt in receipts {
        for line in &receipt.lines {
            if let Some(category) = &line.category {
                if line.amount.0 > 0 {
                    *spent.entry(category.clone()).or_default() += line.amount.0;
                }
            }
        }
    }
    let mut ranked: Vec<(String, Money)> = spent
        .into_iter()
        .map(|(category, minor)| (category, Money(minor)))
        .collect();
    ranked.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(TOP_CATEGORIES);
    ranked
}

/// Issues a goodwill voucher to `customer_id` through the running daemon's voucher store (the
/// same checks as `voucher goodwill`: signing key, positive value, at most
/// `rewards.goodwill_max_value`), recording who issued it with the voucher and in its
/// `voucher_issued` event (`issued_by`), and in the log.
pub fn issue_goodwill(
    handle: &GatewayHandle,
    staff: &str,
    customer_id: &str,
    value: &str,
    trusted: bool,
    now: Timestamp,
) -> Result<IssuedVoucher, IssueError> {
    let value = value.trim().replace(',', ".");
    let issued = handle.vouchers.stamped(trusted).issue_goodwill_by(
        &value,
        Some(customer_id),
        None,
        Some(staff),
        now,
    )?;
    tracing::info!(
        staff = %staff,
        voucher = %issued.voucher.id,
        customer = %customer_id,
        "goodwill voucher issued from the staff page"
    );
    Ok(issued)
}
