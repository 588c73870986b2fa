//! Helpers of the store tests: a simple earning policy stand-in (1 point per 1.00 of eligible
//! spend, category "tobacco" excluded, optional vesting), receipts, a store in a temp dir and a
//! database that is mostly free segments.
//!
//! Uses loyalty-core and loyalty-store only: loyalty-store's own tests include this file by path
//! (`#[path = "../../tools/src/testkit/store.rs"] mod support;`), since the store may not
//! depend on the tools, not even for its tests (tidy's crate-boundary rule reads Cargo.lock).

use jiff::Timestamp;
use loyalty_core::ledger::{Earning, EarningPolicy};
use loyalty_core::money::Money;
use loyalty_core::receipt::{Receipt, ReceiptKind, ReceiptLimits, ReceiptLine};
use loyalty_store::events::EventType;
use loyalty_store::{StorageConfig, Store};
use std::path::Path;

/// 1 point per full 1.00 of eligible spend; "tobacco" earns nothing; gold earns double.
pub struct Policy {
    /// Currency and limits receipts are checked against.
    pub limits: ReceiptLimits,
    /// Days until earned points vest (0: at once).
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

    fn offer_lines(
        &self,
        receipt: &Receipt,
        _tier: Option<&str>,
    ) -> Vec<loyalty_core::offers::OfferLine> {
        receipt
            .lines
            .iter()
            .map(|l| {
                let allowed = l.category.as_deref() != Some("tobacco");
                loyalty_core::offers::OfferLine {
                    allowed,
                    points: if allowed { l.amount.0.max(0) / 100 } else { 0 },
                }
            })
            .collect()
    }
}

/// The tests' "now": 2026-11-23T10:00:00Z.
pub fn now() -> Timestamp {
    "2026-11-23T10:00:00Z".parse().expect("time")
}

/// A receipt line of one item at `amount` cents.
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

/// A sale on lane 1 at [`now`], its total the sum of `lines`.
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
        redemptions: Vec::new(),
        lines,
    }
}

/// A return of `original` with `lines`.
pub fn ret(id: &str, original: &str, lines: Vec<ReceiptLine>) -> Receipt {
    let mut r = sale(id, lines);
    r.kind = ReceiptKind::Return {
        original_receipt_id: original.into(),
    };
    r
}

/// Storage settings for a store in `dir` (small cache, no outbox retention).
pub fn config(dir: &Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_path_buf(),
        cache_capacity_mb: 8,
        outbox_retention_hours: 0,
        receipt_retention_days: 0,
    }
}

/// Opens (or creates) store `S1` in `dir`.
pub fn open(dir: &Path) -> Store {
    Store::open(&config(dir), "S1").expect("open store")
}

/// A database whose sled file is mostly free segments: 200 receipts, then ~8 MB of outbox
/// events acknowledged and compacted away. Returns (customer, last outbox seq).
pub fn database_with_free_segments(dir: &std::path::Path) -> (String, u64) {
    let store = open(dir);
    let policy = Policy::default();
    let c = store.enroll("2990000000019", now()).expect("enroll").id;
    for n in 0..200 {
        store
            .apply_receipt(
                &sale(&format!("R-{n}"), vec![line("a", 1000, None)]),
                Some(&c),
                &policy,
                now(),
            )
            .expect("apply");
    }
    let payload = serde_json::Value::Object(
        [("filler".to_string(), "x".repeat(2000).into())]
            .into_iter()
            .collect(),
    );
    for _ in 0..40 {
        store
            .transact(&[], |tx| {
                for _ in 0..100 {
                    tx.append_event(EventType::Receipt, now(), &payload)?;
                }
                Ok(())
            })
            .expect("append");
    }
    let last = store.outbox_stats().expect("stats").last_seq;
    store.outbox_ack(last).expect("ack");
    store.compact_outbox(now()).expect("compact");
    (c, last)
}

/// Asserts that a store made by [`database_with_free_segments`] kept every record.
pub fn assert_everything_kept(store: &Store, customer: &str, last: u64) {
    assert_eq!(store.balance(customer, now()).expect("balance").total, 2000);
    assert_eq!(store.receipt_count(), 200);
    assert_eq!(store.outbox_stats().expect("stats").last_seq, last);
    assert!(store.verify().expect("verify").is_consistent());
}

/// Every form `text` could take in a file: as is, JSON-escaped with `\u` for non-ASCII, and the
/// hex digits of its bytes (both cases).
fn byte_forms(text: &str) -> Vec<Vec<u8>> {
    let escaped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect();
    let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    vec![
        text.as_bytes().to_vec(),
        escaped.into_bytes(),
        hex.to_uppercase().into_bytes(),
        hex.into_bytes(),
    ]
}

/// The JSON of every outbox event of `kind` in `store`, oldest first.
pub fn events_of(store: &Store, kind: EventType) -> Vec<serde_json::Value> {
    store
        .outbox_after(0, 100_000)
        .expect("outbox")
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.json)
        .collect()
}

/// The files under `dir` (recursively) that hold any form of `text` (the erasure's byte scan).
/// A file that vanishes while it is read (a running store replacing its database) is skipped.
pub fn files_holding(dir: &Path, text: &str) -> Vec<String> {
    let needles = byte_forms(text);
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}
