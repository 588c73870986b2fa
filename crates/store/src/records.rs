//! The store's own on-disk encodings (JSON values in sled) of customers, receipts, accounts and
//! journal bodies, and their conversion to and from the domain types. Domain types carry no
//! `Serialize`; these records are private to `store` and versioned by the schema version.

use jiff::Timestamp;
use loyalty_core::customer::{Customer, CustomerOrigin};
use loyalty_core::ledger::{Account, Confirmed, Entry, EntryKind, Owed, ReturnState, Vesting};
use loyalty_core::money::Money;
use loyalty_core::receipt::{Receipt, ReceiptKind, ReceiptLine};
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct VestingRec {
    pub receipt_id: String,
    pub points: i64,
    #[serde(with = "ts")]
    pub vests_at: Timestamp,
}

/// A customer. Fields that are `None`, `false`, zero or empty are left out of the JSON and
/// read back as those defaults (`#[serde(default)]`), so records written in the earlier full
/// form still decode: a new customer takes ~100 bytes instead of ~230 (a million customers:
/// less to store, to compact and to load at start-up). No schema version change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CustomerRec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(with = "ts")]
    pub enrolled_at: Timestamp,
    #[serde(default, skip_serializing_if = "is_false")]
    pub local: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub has_confirmed: bool,
    #[serde(default, skip_serializing_if = "AccountRec::is_empty")]
    pub account: AccountRec,
    /// Cards beyond `card` that identify the customer (from the CRM's `cards`, or moved here
    /// by a merge); each is in the `cards` index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_cards: Vec<String>,
    /// Consent flags as the CRM sent them (`None`: unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentRec>,
    /// Hex SHA-256 of the normalised phone number (never the number); in the `cards` tree
    /// under [`contact_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_hash: Option<String>,
    /// Hex SHA-256 of the normalised e-mail address; indexed like `phone_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_hash: Option<String>,
    /// Set on the record of a customer merged away at head office: the surviving id. Such a
    /// record holds nothing else (no card, name or points); looking the id up follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Ids merged into this customer (their vouchers and receipts count for it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// Segment tags from the CRM (segment offers name one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Birthday `MM-DD` from the CRM, for the cashier's hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthday: Option<String>,
}

/// A customer's consent flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConsentRec {
    pub marketing: bool,
    pub profiling: bool,
}

impl ConsentRec {
    pub fn to_consent(self) -> loyalty_core::customer::Consent {
        loyalty_core::customer::Consent {
            marketing: self.marketing,
            profiling: self.profiling,
        }
    }
}

impl CustomerRec {
    /// A record with this id and nothing else known yet.
    pub fn bare(id: String, enrolled_at: Timestamp) -> CustomerRec {
        CustomerRec {
            id,
            card: None,
            name: None,
            tier: None,
            enrolled_at,
            local: false,
            has_confirmed: false,
            account: AccountRec::default(),
            more_cards: Vec::new(),
            consent: None,
            phone_hash: None,
            email_hash: None,
            merged_into: None,
            merged_from: Vec::new(),
            tags: Vec::new(),
            birthday: None,
        }
    }

    /// The index keys of the customer's contact hashes (see [`contact_key`]).
    pub fn contact_keys(&self) -> Vec<Vec<u8>> {
        let phone = self.phone_hash.iter().map(|h| contact_key("phone", h));
        phone
            .chain(self.email_hash.iter().map(|h| contact_key("email", h)))
            .collect()
    }

    /// Whether her receipts' lines may leave the box tied to her
    /// (`loyalty_core::customer::receipt_lines_linked`: only with `profiling` consent).
    pub fn receipt_lines_linked(&self) -> bool {
        loyalty_core::customer::receipt_lines_linked(self.consent.map(ConsentRec::to_consent))
    }

    /// Every card of the customer (`card` first).
    pub fn all_cards(&self) -> impl Iterator<Item = &String> {
        self.card.iter().chain(self.more_cards.iter())
    }
}

/// The `cards` tree key of a contact hash: `NUL kind NUL hash`. Card numbers never contain
/// NUL (`check_id`), so these keys cannot collide with a card.
pub(crate) fn contact_key(kind: &str, hash: &str) -> Vec<u8> {
    format!("\0{kind}\0{hash}").into_bytes()
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// A customer's account; zero and empty fields are left out like [`CustomerRec`]'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub(crate) struct AccountRec {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub confirmed_points: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub confirmed_through: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed: Vec<(u64, i64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vesting: Vec<VestingRec>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub local_total: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub entries: u64,
    /// Points returns still owe: `[sale, return, points]`, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owed: Vec<(String, String, i64)>,
}

impl AccountRec {
    /// True for a customer without any points history (left out of the customer's JSON).
    pub fn is_empty(&self) -> bool {
        *self == AccountRec::default()
    }

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
            owed: self
                .owed
                .iter()
                .map(|(sale, ret, points)| Owed {
                    receipt_id: sale.clone(),
                    cause_receipt_id: ret.clone(),
                    points: *points,
                })
                .collect(),
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
            owed: account
                .owed
                .iter()
                .map(|o| (o.receipt_id.clone(), o.cause_receipt_id.clone(), o.points))
                .collect(),
        }
    }
}

impl CustomerRec {
    /// A customer enrolled in this store with its card, nothing else known yet.
    pub fn enrolled_locally(id: String, card: String, at: Timestamp) -> CustomerRec {
        CustomerRec {
            card: Some(card),
            local: true,
            ..CustomerRec::bare(id, at)
        }
    }

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
    /// Pay with points: the reservations the receipt named (left out when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redemptions: Vec<String>,
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
            redemptions: r.redemptions.clone(),
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
            redemptions: self.redemptions.clone(),
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
    /// Pay with points: what the receipt did with each reservation it named (left out when
    /// none, so older records decode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redemptions: Vec<RedemptionRec>,
}

/// One entry of [`OutcomeRec::redemptions`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RedemptionRec {
    pub reference: String,
    pub status: String,
    pub points: i64,
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
    /// For a clawback floored at zero: the points the return still owes (left out otherwise,
    /// so earlier entries hash as they did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owed: Option<i64>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Timestamp {
        "2026-11-23T10:00:00Z".parse().expect("time")
    }

    #[test]
    fn a_customer_record_in_the_old_full_form_still_decodes() {
        let old = r#"{"id":"c-1","card":"2990000000019","name":null,"tier":null,
            "enrolled_at":"2026-11-23T10:00:00Z","local":true,"has_confirmed":false,
            "account":{"confirmed_points":0,"confirmed_through":0,"unconfirmed":[],"vesting":[],
            "local_total":0,"entries":0}}"#;
        let rec: CustomerRec = serde_json::from_str(old).expect("old form");
        assert_eq!(rec.card.as_deref(), Some("2990000000019"));
        assert!(rec.local && !rec.has_confirmed && rec.account.is_empty());
        assert_eq!(rec.enrolled_at, at());
        let full = r#"{"id":"c-2","card":null,"name":"Ada","tier":"gold",
            "enrolled_at":"2026-11-23T10:00:00Z","local":false,"has_confirmed":true,
            "account":{"confirmed_points":120,"confirmed_through":7,"unconfirmed":[[8,5]],
            "vesting":[{"receipt_id":"R-1","points":5,"vests_at":"2026-12-01T00:00:00Z"}],
            "local_total":5,"entries":1}}"#;
        let rec: CustomerRec = serde_json::from_str(full).expect("old form");
        let again: CustomerRec =
            serde_json::from_slice(&serde_json::to_vec(&rec).expect("encode")).expect("decode");
        assert_eq!(again.name.as_deref(), Some("Ada"));
        assert_eq!(again.tier.as_deref(), Some("gold"));
        assert!(!again.local && again.has_confirmed);
        assert_eq!(again.account, rec.account);
        assert_eq!(again.account.unconfirmed, vec![(8, 5)]);
        assert_eq!(again.account.vesting[0].points, 5);
    }

    #[test]
    fn a_new_customer_record_leaves_out_empty_fields() {
        let rec = CustomerRec {
            card: Some("2990000000019".into()),
            local: true,
            ..CustomerRec::bare("seed-1".into(), at())
        };
        let text = serde_json::to_string(&rec).expect("encode");
        assert_eq!(
            text,
            r#"{"id":"seed-1","card":"2990000000019","enrolled_at":"2026-11-23T10:00:00Z","local":true}"#
        );
        let back: CustomerRec = serde_json::from_str(&text).expect("decode");
        assert!(back.name.is_none() && back.local && back.account.is_empty());
    }
}
