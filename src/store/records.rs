//! The store's own on-disk encodings (JSON values in sled) of customers, receipts, accounts and
//! journal bodies, and their conversion to and from the domain types. Domain types carry no
//! `Serialize`; these records are private to `store` and versioned by the schema version.

use crate::customer::{Customer, CustomerOrigin};
use crate::ledger::{Account, Confirmed, Entry, EntryKind, ReturnState, Vesting};
use crate::money::Money;
use crate::receipt::{Receipt, ReceiptKind, ReceiptLine};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// RFC 3339 text for `jiff::Timestamp` (jiff's serde feature is not enabled in this crate).
pub(crate) mod ts {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// [`ts`] for `Option<Timestamp>`.
pub(crate) mod ts_opt {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(t),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VestingRec {
    pub receipt_id: String,
    pub points: i64,
    #[serde(with = "ts")]
    pub vests_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CustomerRec {
    pub id: String,
    pub card: Option<String>,
    pub name: Option<String>,
    pub tier: Option<String>,
    #[serde(with = "ts")]
    pub enrolled_at: Timestamp,
    pub local: bool,
    pub has_confirmed: bool,
    pub account: AccountRec,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct AccountRec {
    pub confirmed_points: i64,
    pub confirmed_through: u64,
    pub unconfirmed: Vec<(u64, i64)>,
    pub vesting: Vec<VestingRec>,
    pub local_total: i64,
    pub entries: u64,
}

impl AccountRec {
    pub fn to_account(&self) -> Account {
        Account {
            confirmed: Confirmed {
                points: self.confirmed_points,
                through_seq: self.confirmed_through,
            },
            unconfirmed: self.unconfirmed.clone(),
            vesting: self
                .vesting
                .iter()
                .map(|v| Vesting {
                    receipt_id: v.receipt_id.clone(),
                    points: v.points,
                    vests_at: v.vests_at,
                })
                .collect(),
            local_total: self.local_total,
            entries: self.entries,
        }
    }

    pub fn from_account(account: &Account) -> AccountRec {
        AccountRec {
            confirmed_points: account.confirmed.points,
            confirmed_through: account.confirmed.through_seq,
            unconfirmed: account.unconfirmed.clone(),
            vesting: account
                .vesting
                .iter()
                .map(|v| VestingRec {
                    receipt_id: v.receipt_id.clone(),
                    points: v.points,
                    vests_at: v.vests_at,
                })
                .collect(),
            local_total: account.local_total,
            entries: account.entries,
        }
    }
}

impl CustomerRec {
    pub fn to_customer(&self) -> Customer {
        Customer {
            id: self.id.clone(),
            card: self.card.clone(),
            name: self.name.clone(),
            tier: self.tier.clone(),
            enrolled_at: self.enrolled_at,
            origin: if self.local {
                CustomerOrigin::Local
            } else {
                CustomerOrigin::Crm
            },
            confirmed: self.has_confirmed.then_some(Confirmed {
                points: self.account.confirmed_points,
                through_seq: self.account.confirmed_through,
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LineRec {
    pub sku: String,
    pub name: String,
    pub qty_milli: i64,
    pub unit_price: Option<i64>,
    pub amount: i64,
    pub category: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReceiptDataRec {
    pub id: String,
    pub lane: String,
    #[serde(with = "ts")]
    pub timestamp: Timestamp,
    pub original_receipt_id: Option<String>,
    pub currency: String,
    pub total: i64,
    pub card: Option<String>,
    pub rewards: Vec<String>,
    pub lines: Vec<LineRec>,
}

impl ReceiptDataRec {
    pub fn from_receipt(r: &Receipt) -> ReceiptDataRec {
        ReceiptDataRec {
            id: r.id.clone(),
            lane: r.lane.clone(),
            timestamp: r.timestamp,
            original_receipt_id: match &r.kind {
                ReceiptKind::Sale => None,
                ReceiptKind::Return {
                    original_receipt_id,
                } => Some(original_receipt_id.clone()),
            },
            currency: r.currency.clone(),
            total: r.total.0,
            card: r.card.clone(),
            rewards: r.rewards.clone(),
            lines: r
                .lines
                .iter()
                .map(|l| LineRec {
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    qty_milli: l.qty_milli,
                    unit_price: l.unit_price.map(|m| m.0),
                    amount: l.amount.0,
                    category: l.category.clone(),
                })
                .collect(),
        }
    }

    pub fn to_receipt(&self) -> Receipt {
        Receipt {
            id: self.id.clone(),
            lane: self.lane.clone(),
            timestamp: self.timestamp,
            kind: match &self.original_receipt_id {
                None => ReceiptKind::Sale,
                Some(id) => ReceiptKind::Return {
                    original_receipt_id: id.clone(),
                },
            },
            currency: self.currency.clone(),
            total: Money(self.total),
            card: self.card.clone(),
            rewards: self.rewards.clone(),
            lines: self
                .lines
                .iter()
                .map(|l| ReceiptLine {
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    qty_milli: l.qty_milli,
                    unit_price: l.unit_price.map(Money),
                    amount: Money(l.amount),
                    category: l.category.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct ReturnRec {
    pub original_points: i64,
    pub original_eligible: i64,
    pub original_total: i64,
    pub returned_eligible: i64,
    pub returned_total: i64,
    pub clawed: i64,
}

impl ReturnRec {
    pub fn to_state(&self) -> ReturnState {
        ReturnState {
            original_points: self.original_points,
            original_eligible: Money(self.original_eligible),
            original_total: Money(self.original_total),
            returned_eligible: Money(self.returned_eligible),
            returned_total: Money(self.returned_total),
            clawed: self.clawed,
        }
    }
    pub fn from_state(s: &ReturnState) -> ReturnRec {
        ReturnRec {
            original_points: s.original_points,
            original_eligible: s.original_eligible.0,
            original_total: s.original_total.0,
            returned_eligible: s.returned_eligible.0,
            returned_total: s.returned_total.0,
            clawed: s.clawed,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OutcomeRec {
    pub customer_id: Option<String>,
    pub earned: i64,
    pub total: Option<i64>,
    pub available: Option<i64>,
    pub pending: Option<i64>,
    pub promotions: Vec<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReceiptRec {
    pub data: ReceiptDataRec,
    #[serde(with = "ts")]
    pub applied_at: Timestamp,
    /// The customer whose points the receipt moved (a return: the original sale's).
    pub customer_id: Option<String>,
    pub eligible: i64,
    #[serde(with = "ts_opt")]
    pub vests_at: Option<Timestamp>,
    pub promotions: Vec<String>,
    /// For sales: earned points and what returns took back.
    pub returns: ReturnRec,
    /// The first answer (repeated for duplicates).
    pub outcome: OutcomeRec,
    /// The answer of `attach_customer` (repeated when attached again to the same customer).
    pub attach_outcome: Option<OutcomeRec>,
    /// Journal indexes of the entries this receipt caused.
    pub entries: Vec<u64>,
}

/// The hashed body of a journal entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JournalBody {
    pub index: u64,
    pub seq: u64,
    pub customer_id: String,
    pub kind: String,
    pub points: i64,
    #[serde(with = "ts")]
    pub at: Timestamp,
    pub receipt_id: Option<String>,
    pub cause_receipt_id: Option<String>,
    pub reference: Option<String>,
    pub reason: Option<String>,
    #[serde(with = "ts_opt")]
    pub vests_at: Option<Timestamp>,
}

impl JournalBody {
    pub fn to_entry(&self) -> Option<Entry> {
        Some(Entry {
            customer_id: self.customer_id.clone(),
            kind: EntryKind::parse(&self.kind)?,
            points: self.points,
            seq: self.seq,
            receipt_id: self.receipt_id.clone(),
            vests_at: self.vests_at,
        })
    }
}
