//! Personal and segment offers offline: the `offers` tree (offers, their index by target,
//! customers' activations ("clips") and uses), written by the changes page's transaction
//! ([`apply_page`]) and by the receipt's transaction ([`use_offers_in_tx`]: each use counted and
//! sent as an `offer_redeemed` event in the sale's one transaction, so an offer applies exactly
//! once per sale across crashes and redeliveries: a redelivered receipt answers its first
//! outcome before offers are looked at). The decisions are `loyalty_core::offers`.
//!
//! Keys (ids never hold NUL): `o NUL offer` → JSON [`OfferRec`]; `t NUL c|s target NUL offer`
//! → empty (by customer id or segment tag); `k NUL customer NUL offer` → empty (clipped);
//! `u NUL customer NUL offer` → u32 BE (uses so far).
//!
//! A return claws the bonus back with the sale's other points (proportionally to the returned
//! eligible amount, floored at zero with the rest owed: the returns policy of `ledger`); the use
//! is not given back.

use super::*;
use loyalty_core::offers::{self, Conditions, Consent, Holder, Offer, OfferBenefit, Target};
use loyalty_protocol::crm::events::OfferRedeemedEvent;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// The tree's name.
pub(crate) const TREE: &str = "offers";

/// An offer change from the changes feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrmOfferChange {
    /// New or replaced.
    Upsert(Box<Offer>),
    /// Withdrawn (removed), by id.
    Withdraw(String),
}

/// A customer's activation of an offer (or its removal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmClip {
    /// Customer.
    pub customer_id: String,
    /// Offer.
    pub offer_id: String,
    /// True: taken back.
    pub withdrawn: bool,
}

/// An offer as stored (times in unix seconds, money in minor units).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OfferRec {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    customer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    segment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<i64>,
    text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gtins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    brands: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_spend: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bonus: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    factor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amount_off: Option<i64>,
    #[serde(default)]
    activation: bool,
    #[serde(default)]
    marketing: bool,
    max_uses: u32,
}

impl OfferRec {
    fn from_offer(offer: &Offer) -> OfferRec {
        let (customer, segment) = match &offer.target {
            Target::Customer(id) => (Some(id.clone()), None),
            Target::Segment(tag) => (None, Some(tag.clone())),
        };
        let (bonus, factor, amount_off) = match offer.benefit {
            OfferBenefit::BonusPoints(p) => (Some(p), None, None),
            OfferBenefit::Multiplier { hundredths } => (None, Some(hundredths), None),
            OfferBenefit::AmountOff(m) => (None, None, Some(m.0)),
        };
        OfferRec {
            id: offer.id.clone(),
            customer,
            segment,
            from: offer.valid_from.map(|t| t.as_second()),
            until: offer.valid_until.map(|t| t.as_second()),
            text: offer.text.clone(),
            gtins: offer.conditions.gtins.clone(),
            brands: offer.conditions.brands.clone(),
            categories: offer.conditions.categories.clone(),
            min_spend: offer.conditions.min_spend.map(|m| m.0),
            exclude: offer.conditions.exclude_categories.clone(),
            bonus,
            factor,
            amount_off,
            activation: offer.requires_activation,
            marketing: offer.requires_marketing,
            max_uses: offer.max_uses_per_customer,
        }
    }

    fn to_offer(&self) -> Option<Offer> {
        let target = match (&self.customer, &self.segment) {
            (Some(id), None) => Target::Customer(id.clone()),
            (None, Some(tag)) => Target::Segment(tag.clone()),
            _ => return None,
        };
        let benefit = match (self.bonus, self.factor, self.amount_off) {
            (Some(p), None, None) => OfferBenefit::BonusPoints(p),
            (None, Some(h), None) => OfferBenefit::Multiplier { hundredths: h },
            (None, None, Some(m)) => OfferBenefit::AmountOff(Money(m)),
            _ => return None,
        };
        let time = |s: Option<i64>| s.and_then(|s| Timestamp::from_second(s).ok());
        Some(Offer {
            id: self.id.clone(),
            target,
            valid_from: time(self.from),
            valid_until: time(self.until),
            text: self.text.clone(),
            conditions: Conditions {
                gtins: self.gtins.clone(),
                brands: self.brands.clone(),
                categories: self.categories.clone(),
                min_spend: self.min_spend.map(Money),
                exclude_categories: self.exclude.clone(),
            },
            benefit,
            requires_activation: self.activation,
            requires_marketing: self.marketing,
            max_uses_per_customer: self.max_uses,
        })
    }

    fn target_key(&self) -> Vec<u8> {
        match (&self.customer, &self.segment) {
            (Some(id), _) => key(&[b"t", b"c", id.as_bytes(), self.id.as_bytes()]),
            (None, Some(tag)) => key(&[b"t", b"s", tag.as_bytes(), self.id.as_bytes()]),
            (None, None) => key(&[b"t", b"-", self.id.as_bytes()]),
        }
    }
}

/// `a NUL b NUL c ...` (the target kind byte is glued to the target).
fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        out.extend_from_slice(part);
        // `t`, then `c`/`s` directly followed by the target.
        if i + 1 < parts.len() && !(i == 1 && parts[0] == b"t") {
            out.push(0);
        }
    }
    out
}

fn offer_key(offer_id: &str) -> Vec<u8> {
    key(&[b"o", offer_id.as_bytes()])
}

fn clip_key(customer_id: &str, offer_id: &str) -> Vec<u8> {
    key(&[b"k", customer_id.as_bytes(), offer_id.as_bytes()])
}

fn uses_key(customer_id: &str, offer_id: &str) -> Vec<u8> {
    key(&[b"u", customer_id.as_bytes(), offer_id.as_bytes()])
}

fn decode(id: &[u8], bytes: &[u8]) -> Result<OfferRec, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Failed(Failure::Corrupt(format!(
            "offer {}: {e}",
            String::from_utf8_lossy(id)
        )))
    })
}

/// What a changes page did to offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OffersReport {
    /// Offers stored (new or replaced).
    pub stored: u64,
    /// Offers removed (withdrawn, or already ended on arrival).
    pub removed: u64,
    /// Clips stored or removed.
    pub clips: u64,
    /// Offers or clips refused (invalid ids).
    pub refused: u64,
}

/// Applies a page's offers and clips inside its transaction (`tree`: the `offers` tree).
pub(crate) fn apply_page(
    tree: &sled::transaction::TransactionalTree,
    changes: &[CrmOfferChange],
    clips: &[CrmClip],
    now: Timestamp,
) -> TxResult<OffersReport> {
    let mut report = OffersReport::default();
    let remove = |id: &str| -> TxResult<bool> {
        match tree.remove(offer_key(id))? {
            Some(old) => {
                let old =
                    decode(id.as_bytes(), &old).map_err(ConflictableTransactionError::Abort)?;
                tree.remove(old.target_key())?;
                Ok(true)
            }
            None => Ok(false),
        }
    };
    for change in changes {
        match change {
            CrmOfferChange::Withdraw(id) => {
                if check_id(id).is_err() {
                    report.refused += 1;
                } else if remove(id)? {
                    report.removed += 1;
                }
            }
            CrmOfferChange::Upsert(offer) => {
                let target_ok = match &offer.target {
                    Target::Customer(t) | Target::Segment(t) => check_id(t).is_ok(),
                };
                if check_id(&offer.id).is_err() || !target_ok {
                    report.refused += 1;
                    continue;
                }
                remove(&offer.id)?;
                if offer.valid_until.is_some_and(|until| until <= now) {
                    report.removed += 1;
                    continue;
                }
                let rec = OfferRec::from_offer(offer);
                let bytes = serde_json::to_vec(&rec).map_err(|e| tx_corrupt(e.to_string()))?;
                tree.put(offer_key(&offer.id), bytes)?;
                tree.put(rec.target_key(), &[][..])?;
                report.stored += 1;
            }
        }
    }
    for clip in clips {
        if check_id(&clip.customer_id).is_err() || check_id(&clip.offer_id).is_err() {
            report.refused += 1;
            continue;
        }
        let k = clip_key(&clip.customer_id, &clip.offer_id);
        if clip.withdrawn {
            tree.remove(k)?;
        } else {
            tree.put(k, &[][..])?;
        }
        report.clips += 1;
    }
    Ok(report)
}

/// A customer's offers as read outside a transaction: the candidates for her sale, and what the
/// till's screen shows.
#[derive(Debug, Clone, Default)]
pub struct CustomerOffers {
    /// Offers targeting her id or one of her tags (in force or not, used up or not).
    pub offers: Vec<Offer>,
    /// Her tags.
    pub tags: Vec<String>,
    /// Her consent.
    pub consent: Option<Consent>,
    /// Offers she clipped.
    pub clipped: BTreeSet<String>,
    /// Her uses per offer.
    pub uses: BTreeMap<String, u32>,
}

impl CustomerOffers {
    /// Her offers that `receipt` would use if consent, activation and uses allowed: the
    /// candidates the sale's transaction decides on (so that it reads and counts only those).
    pub fn matching(
        self,
        customer_id: &str,
        receipt: &Receipt,
        lines: &[offers::OfferLine],
        now: Timestamp,
    ) -> Vec<Offer> {
        let permissive = Holder {
            customer_id,
            tags: &self.tags,
            consent: Some(Consent {
                marketing: true,
                profiling: true,
            }),
            clipped: self.offers.iter().map(|o| o.id.clone()).collect(),
            uses: BTreeMap::new(),
        };
        let would: BTreeSet<String> = offers::apply(&self.offers, &permissive, receipt, lines, now)
            .into_iter()
            .map(|u| u.offer_id)
            .collect();
        self.offers
            .into_iter()
            .filter(|o| would.contains(&o.id))
            .collect()
    }

    /// The offers she may use at `now` (see `loyalty_core::offers::active`).
    pub fn active(&self, customer_id: &str, now: Timestamp) -> Vec<Offer> {
        let holder = Holder {
            customer_id,
            tags: &self.tags,
            consent: self.consent,
            clipped: self.clipped.clone(),
            uses: self.uses.clone(),
        };
        offers::active(&self.offers, &holder, now)
            .into_iter()
            .cloned()
            .collect()
    }
}

impl Store {
    /// The `offers` tree.
    pub(crate) fn offers_tree(&self) -> &sled::Tree {
        &self.inner.offers_tree
    }

    /// A customer's offers, clips and uses (an id merged away resolves to the survivor); empty
    /// for an unknown customer.
    pub fn customer_offers(&self, customer_id: &str) -> Result<CustomerOffers, StoreError> {
        match self.customer_rec(customer_id)? {
            Some(rec) => self.offers_of(&rec),
            None => Ok(CustomerOffers::default()),
        }
    }

    /// The offers, clips and uses of the customer of this record.
    pub(crate) fn offers_of(&self, rec: &CustomerRec) -> Result<CustomerOffers, StoreError> {
        self.offers_read(rec, Reading::Consistent)
    }

    /// [`Store::offers_of`], read as `reading` says.
    pub(crate) fn offers_read(
        &self,
        rec: &CustomerRec,
        reading: Reading,
    ) -> Result<CustomerOffers, StoreError> {
        let tree = self.offers_tree();
        let suffixes = |prefix: Vec<u8>| -> Result<Vec<(String, sled::IVec)>, StoreError> {
            let mut out = Vec::new();
            for item in reading.scan_prefix(tree, &prefix) {
                let (k, v) = item?;
                out.push((String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), v));
            }
            Ok(out)
        };
        let mut prefixes = vec![key(&[b"t", b"c", rec.id.as_bytes(), b""])];
        for tag in &rec.tags {
            prefixes.push(key(&[b"t", b"s", tag.as_bytes(), b""]));
        }
        let mut offers = Vec::new();
        let mut seen = BTreeSet::new();
        for prefix in prefixes {
            for (offer_id, _) in suffixes(prefix)? {
                if !seen.insert(offer_id.clone()) {
                    continue;
                }
                if let Some(bytes) = reading.get(tree, &offer_key(&offer_id))? {
                    if let Some(offer) = decode(offer_id.as_bytes(), &bytes)?.to_offer() {
                        offers.push(offer);
                    }
                }
            }
        }
        let clipped = suffixes(key(&[b"k", rec.id.as_bytes(), b""]))?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let uses = suffixes(key(&[b"u", rec.id.as_bytes(), b""]))?
            .into_iter()
            .map(|(id, v)| (id, read_u32(&v)))
            .collect();
        Ok(CustomerOffers {
            offers,
            tags: rec.tags.clone(),
            consent: rec.consent.map(|c| Consent {
                marketing: c.marketing,
                profiling: c.profiling,
            }),
            clipped,
            uses,
        })
    }

    /// The offers a customer may use now (what the till's screen lists), in the order stored.
    pub fn active_offers(
        &self,
        customer_id: &str,
        now: Timestamp,
    ) -> Result<Vec<Offer>, StoreError> {
        let Some(rec) = self.customer_rec(customer_id)? else {
            return Ok(Vec::new());
        };
        // Without consent nothing is read further.
        if !rec.consent.is_some_and(|c| c.profiling) {
            return Ok(Vec::new());
        }
        Ok(self.offers_of(&rec)?.active(&rec.id, now))
    }
}

/// What the till's screen needs of a customer besides the core `Customer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScreenProfile {
    /// Her consent (`None`: unknown).
    pub consent: Option<Consent>,
    /// Her birthday `MM-DD`, if the CRM sent one.
    pub birthday: Option<String>,
}

impl Store {
    /// A customer's consent and birthday (`None`: unknown customer).
    pub fn screen_profile(&self, customer_id: &str) -> Result<Option<ScreenProfile>, StoreError> {
        Ok(self.customer_rec(customer_id)?.map(|rec| ScreenProfile {
            consent: rec.consent.map(|c| Consent {
                marketing: c.marketing,
                profiling: c.profiling,
            }),
            birthday: rec.birthday,
        }))
    }
}

fn read_u32(bytes: &[u8]) -> u32 {
    bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

/// Uses the offers a sale qualifies for, inside the receipt's transaction: re-reads the
/// customer's consent and tags, each candidate offer (a withdrawn one is skipped), its clip and
/// its uses from the transaction, decides with `loyalty_core::offers::apply`, counts each use
/// and appends its `offer_redeemed` event. Returns the uses (their bonus points are added to
/// the sale's points by the caller).
pub(crate) fn use_offers_in_tx(
    tx: &Tx<'_>,
    tree: &sled::transaction::TransactionalTree,
    customer: &CustomerRec,
    receipt: &Receipt,
    prepared: &PreparedOffers,
    now: Timestamp,
) -> TxResult<Vec<offers::OfferUse>> {
    if prepared.candidates.is_empty() || !customer.consent.is_some_and(|c| c.profiling) {
        return Ok(Vec::new());
    }
    let mut holder = Holder {
        customer_id: &customer.id,
        tags: &customer.tags,
        consent: customer.consent.map(|c| Consent {
            marketing: c.marketing,
            profiling: c.profiling,
        }),
        ..Default::default()
    };
    let mut current = Vec::new();
    for candidate in &prepared.candidates {
        // Withdrawn since the receipt was prepared: skipped. (A replaced offer is decided as
        // read when the receipt was prepared, like the earning.)
        if tree.get(offer_key(&candidate.id))?.is_none() {
            continue;
        }
        let offer = candidate.clone();
        if tree.get(clip_key(&customer.id, &offer.id))?.is_some() {
            holder.clipped.insert(offer.id.clone());
        }
        if let Some(n) = tree.get(uses_key(&customer.id, &offer.id))? {
            holder.uses.insert(offer.id.clone(), read_u32(&n));
        }
        current.push(offer);
    }
    let used = offers::apply(&current, &holder, receipt, &prepared.lines, now);
    let decimals = loyalty_core::money::currency_decimals(&receipt.currency);
    for one in &used {
        let uses = holder.uses.get(&one.offer_id).copied().unwrap_or(0) + 1;
        tree.put(
            uses_key(&customer.id, &one.offer_id),
            &uses.to_be_bytes()[..],
        )?;
        tx.append_event(
            EventType::OfferRedeemed,
            now,
            &OfferRedeemedEvent {
                amount_off: one.amount_off.map(|m| m.format(decimals)),
                bonus_points: one.bonus_points,
                customer_id: Cow::Borrowed(&customer.id),
                lane: Cow::Borrowed(&receipt.lane),
                offer_id: Cow::Borrowed(&one.offer_id),
                receipt_id: Cow::Borrowed(&receipt.id),
                redeemed_at: now,
                uses,
            },
        )?;
    }
    Ok(used)
}

/// A sale's offers prepared outside its transaction.
#[derive(Debug, Clone, Default)]
pub(crate) struct PreparedOffers {
    /// Offers targeting the customer as read when the receipt was prepared.
    pub(crate) candidates: Vec<Offer>,
    /// Per line: may offers apply, and its points.
    pub(crate) lines: Vec<offers::OfferLine>,
}
