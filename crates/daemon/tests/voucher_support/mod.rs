//! The voucher tests' store: a real sled store in a directory with the store's signing key,
//! vouchers signed as head office or another store would, receipts naming them, and the
//! outbox events they leave. Shared by `voucher_store.rs` and `voucher_kill.rs`.
#![allow(dead_code)] // each test binary uses its share

use ed25519_dalek::SigningKey;
use jiff::{SignedDuration, Timestamp};
use loyalty_core::money::Money;
use loyalty_core::receipt::{Receipt, ReceiptKind, ReceiptLine};
use loyalty_core::voucher::{
    Benefit, Refusal, StoreKey, Verdict, Voucher, VoucherId, VoucherSettings,
};
use loyalty_daemon::config::{Config, RewardRuleConfig};
use loyalty_daemon::vouchers::VoucherSettingsExt;
use loyalty_store::events::EventType;
use loyalty_store::vouchers::Vouchers;
use loyalty_store::Store;
use std::path::Path;

#[path = "../../../tools/src/testkit/store.rs"]
#[allow(dead_code)] // one source for the store tests' helpers; these tests use the policy only
pub mod store_support;

pub const KEY_ID: &str = "store-S042";

pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

pub fn t0() -> Timestamp {
    "2026-12-01T12:00:00Z".parse().expect("time")
}

pub fn at(seconds: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(seconds)
}

pub fn config(dir: &Path, redeem_on: &str) -> Config {
    let mut config = Config::default();
    config.store.id = "S042".into();
    config.store.timezone = "Europe/Berlin".into();
    config.storage.data_dir = dir.to_path_buf();
    config.rewards.rules = vec![RewardRuleConfig {
        every_points: 500,
        value: "5.00".into(),
        validity_days: 90,
        min_spend: Some("20.00".into()),
    }];
    config.rewards.redeem_on = redeem_on.into();
    config.rewards.goodwill_max_value = "10.00".into();
    // Named because rules require a key file; `open` passes the key in memory instead.
    config.rewards.signing_key_file = Some(dir.join("store.key"));
    config
}

pub fn open(dir: &Path, redeem_on: &str) -> (Store, Vouchers) {
    let config = config(dir, redeem_on);
    let store = Store::open(&config.storage, &config.store.id).expect("open store");
    let key = StoreKey {
        key_id: KEY_ID.into(),
        signing: signing_key(),
    };
    let built = loyalty_daemon::config::Built::new(config).expect("valid configuration");
    let settings = VoucherSettings::with_key(&built, Some(key)).expect("settings");
    let keys = settings.trusted_keys(&built).expect("keys");
    let vouchers = Vouchers::open(&store, settings, keys).expect("vouchers");
    (store, vouchers)
}

/// A voucher signed with the store's key (as head office or another store would).
pub fn voucher_text(n: u8, min_spend: Option<i64>) -> (VoucherId, String) {
    let voucher = Voucher {
        id: VoucherId([n; 10]),
        key_id: KEY_ID.into(),
        currency: "EUR".into(),
        benefit: Benefit::AmountOff(Money(500)),
        valid_from: "2026-11-01T00:00:00Z".parse().expect("time"),
        valid_until: "2027-02-01T00:00:00Z".parse().expect("time"),
        valid_from_issue: true,
        min_spend: min_spend.map(Money),
        customer: None,
    };
    (voucher.id, voucher.sign(&signing_key()).expect("sign"))
}

pub fn receipt(id: &str, lane: &str, total: i64, rewards: &[VoucherId]) -> Receipt {
    Receipt {
        id: id.into(),
        lane: lane.into(),
        timestamp: t0(),
        kind: ReceiptKind::Sale,
        currency: "EUR".into(),
        total: Money(total),
        card: None,
        rewards: rewards.iter().map(|id| id.to_string()).collect(),
        redemptions: Vec::new(),
        lines: vec![ReceiptLine {
            sku: "4006381333931".into(),
            name: "Goods".into(),
            qty_milli: 1000,
            unit_price: None,
            amount: Money(total),
            category: None,
        }],
    }
}

pub use store_support::events_of;

pub fn redeemed_events_for(store: &Store, id: &VoucherId) -> usize {
    events_of(store, EventType::VoucherRedeemed)
        .iter()
        .filter(|e| e["payload"]["voucher_id"] == id.to_string())
        .count()
}

pub fn is_valid(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Valid { .. })
}

pub fn refusal(verdict: Verdict) -> Refusal {
    match verdict {
        Verdict::Refused(r) => r,
        Verdict::Valid { discount } => panic!("accepted: {discount:?}"),
    }
}
