//! Shared helpers of the store tests: a simple earning policy stand-in (1 point per 1.00 of
//! eligible spend, category "tobacco" excluded, optional vesting), receipts and a temp store.
#![allow(dead_code)]

use jiff::Timestamp;
use loyalty_core::ledger::{Earning, EarningPolicy};
use loyalty_core::money::Money;
use loyalty_core::receipt::{Receipt, ReceiptKind, ReceiptLimits, ReceiptLine};
use loyalty_daemon::config::StorageConfig;
use loyalty_store::Store;
use std::path::Path;

/// 1 point per full 1.00 of eligible spend; "tobacco" earns nothing.
pub struct Policy {
    pub limits: ReceiptLimits,
    pub vesting_days: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            limits: ReceiptLimits {
                currency: "EUR".into(),
                max_total: Money(10_000_000),
                known_categories: Default::default(),
            },
            vesting_days: 0,
        }
    }
}

impl EarningPolicy for Policy {
    fn earn(&self, receipt: &Receipt, tier: Option<&str>) -> Earning {
        let eligible = self.eligible_amount(&receipt.lines);
        let factor = if tier == Some("gold") { 2 } else { 1 };
        Earning {
            points: eligible.0.max(0) / 100 * factor,
            eligible,
            vests_at: (self.vesting_days > 0).then(|| {
                receipt.timestamp + jiff::SignedDuration::from_hours(24 * self.vesting_days)
            }),
            promotions: Vec::new(),
        }
    }

    fn eligible_amount(&self, lines: &[ReceiptLine]) -> Money {
        lines
            .iter()
            .filter(|l| l.category.as_deref() != Some("tobacco"))
            .map(|l| l.amount)
            .sum()
    }

    fn limits(&self) -> &ReceiptLimits {
        &self.limits
    }
}

pub fn now() -> Timestamp {
    "2026-11-23T10:00:00Z".parse().expect("time")
}

pub fn line(sku: &str, amount: i64, category: Option<&str>) -> ReceiptLine {
    ReceiptLine {
        sku: sku.into(),
        name: format!("item {sku}"),
        qty_milli: 1000,
        unit_price: Some(Money(amount)),
        amount: Money(amount),
        category: category.map(Into::into),
    }
}

pub fn sale(id: &str, lines: Vec<ReceiptLine>) -> Receipt {
    Receipt {
        id: id.into(),
        lane: "1".into(),
        timestamp: now(),
        kind: ReceiptKind::Sale,
        currency: "EUR".into(),
        total: lines.iter().map(|l| l.amount).sum(),
        card: None,
        rewards: vec![],
        lines,
    }
}

pub fn ret(id: &str, original: &str, lines: Vec<ReceiptLine>) -> Receipt {
    let mut r = sale(id, lines);
    r.kind = ReceiptKind::Return {
        original_receipt_id: original.into(),
    };
    r
}

pub fn config(dir: &Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_path_buf(),
        cache_capacity_mb: 8,
        outbox_retention_hours: 0,
    }
}

pub fn open(dir: &Path) -> Store {
    Store::open(&config(dir), "S1").expect("open store")
}
