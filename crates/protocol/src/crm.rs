//! The CRM's JSON (SPEC 2.5), and nothing else: request and response bodies of
//! `POST /v1/stores/{store_id}/events`, `GET /v1/stores/{store_id}/changes` and
//! `GET /v1/stores/{store_id}/customers/by-card/{card}` (one [`WireCustomer`]). `docs/openapi.yaml`
//! describes exactly these types; a test checks payloads produced here against it.
//!
//! The outbox events the gateway uploads, and their payloads, are in [`events`]. Domain types
//! carry no `Serialize`; conversions happen here or in `sync` at the edge.

pub mod events;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Body of `POST /v1/stores/{store_id}/events`.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventsRequest<'a> {
    /// The store sending (the same as in the path).
    #[serde(borrow)]
    pub store_id: &'a str,
    /// The store's database instance (a random id drawn when its database was created; new
    /// after a replaced box or a wiped data directory). Sequence numbers count per store *and*
    /// instance: a new instance starts again at 1.
    #[serde(borrow)]
    pub instance: &'a str,
    /// Events in increasing `seq`, without gaps.
    #[serde(borrow)]
    pub events: Vec<WireEvent<'a>>,
}

/// One outbox event as the CRM sees it.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireEvent<'a> {
    /// Sequence number per store and instance: gapless, increasing.
    pub seq: u64,
    /// Globally unique id; the CRM deduplicates on it.
    #[serde(borrow)]
    pub id: &'a str,
    /// `receipt`, `ledger`, `customer_enrolled`, `voucher_issued`, `voucher_redeemed`,
    /// `voucher_key`, ... (never `customer_updated`: profiles change at head office only).
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    /// When it happened (RFC 3339).
    #[serde(borrow)]
    pub at: &'a str,
    /// The event's content (a JSON object whose shape depends on `type`).
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

/// An event as the reference receiver stores it (owned).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OwnedEvent {
    /// Per-store sequence number.
    pub seq: u64,
    /// Globally unique id.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339 time.
    pub at: String,
    /// Content.
    pub payload: serde_json::Value,
}

/// Body of the CRM's `200` answer to an upload.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct AckResponse {
    /// Every event of this store's instance (the `instance` of the request) up to and including
    /// this sequence number is stored at the CRM. `0`: none of that instance yet.
    pub acked_through: u64,
}

/// One page of `GET /v1/stores/{store_id}/changes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChangesPage {
    /// Opaque position to ask from next time; stored only after the page is applied.
    pub cursor: String,
    /// Customers whose profile or balance changed.
    #[serde(default)]
    pub customers: Vec<WireCustomer>,
    /// Point adjustments made at head office, each applied once per `reference` (absent in
    /// older CRMs' pages; left out when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjustments: Vec<WireAdjustment>,
    /// Customers whose personal data must be erased (customer ids). The gateway confirms each
    /// with a `customer_erased` event once it has applied the erasure.
    #[serde(default)]
    pub erased: Vec<String>,
    /// Customers merged at head office (the same person enrolled twice, e.g. offline in two
    /// stores): the gateway moves the `from` account into `into` (absent in older CRMs' pages;
    /// left out when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<WireMerge>,
    /// Vouchers that must no longer be accepted (voucher ids).
    #[serde(default)]
    pub revoked_vouchers: Vec<String>,
    /// Voucher verification keys.
    #[serde(default)]
    pub keys: Vec<WireKey>,
    /// A new earning-rules set (the `[rules]` table as JSON), or null for no change.
    #[serde(default)]
    pub rules: Option<serde_json::Value>,
    /// Personal (one customer) or segment (a tag) offers, new, changed or withdrawn (absent
    /// in older CRMs' pages; left out when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offers: Vec<WireOffer>,
    /// Offers a customer activated ("clipped") in the app, or took back (absent in older
    /// CRMs' pages; left out when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clips: Vec<WireClip>,
}

impl ChangesPage {
    /// True when the page carries nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
            && self.adjustments.is_empty()
            && self.erased.is_empty()
            && self.merged.is_empty()
            && self.revoked_vouchers.is_empty()
            && self.keys.is_empty()
            && self.rules.is_none()
            && self.offers.is_empty()
            && self.clips.is_empty()
    }
}

/// A customer as the CRM knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireCustomer {
    /// Customer id.
    pub customer_id: String,
    /// Points balance at the CRM (all stores, CRM adjustments, and this store's events up to
    /// `includes_store_seq`).
    pub balance: i64,
    /// The highest sequence number of *this* store's events that `balance` includes.
    pub includes_store_seq: u64,
    /// Tier name, or null for none.
    #[serde(default)]
    pub tier: Option<String>,
    /// Card numbers of the customer (all of them; a card absent here is no longer theirs).
    #[serde(default)]
    pub cards: Vec<String>,
    /// Name shown at the till, or null.
    #[serde(default)]
    pub display_name: Option<String>,
    /// What the customer consented to; absent or null: unknown (stored as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<WireConsent>,
    /// Hex SHA-256 of the customer's normalised phone number (`loyalty_core::contact`), for
    /// staff search; absent: none known. The clear number never leaves head office.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_hash: Option<String>,
    /// Hex SHA-256 of the customer's normalised e-mail address; absent: none known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_hash: Option<String>,
    /// Segment tags (e.g. `pet-owner`); segment offers name one. Absent or empty: none (left
    /// out when empty). A page's list replaces the stored one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Birthday as `MM-DD` (no year), for the cashier's hint; absent: none known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthday: Option<String>,
}

/// A customer's consent flags as head office records them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireConsent {
    /// Personal offers and messages.
    pub marketing: bool,
    /// Use of the purchase history for personalisation.
    pub profiling: bool,
}

/// Two customer accounts merged at head office: `from` is gone, `into` survives with every
/// card, point and receipt of both. A gateway moves its local `from` account into `into` in the
/// page's transaction; applying the same merge again changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireMerge {
    /// The customer id that no longer exists.
    pub from: String,
    /// The surviving customer id.
    pub into: String,
}

/// A point adjustment made at head office (goodwill, correction). The store journals it as an
/// `adjustment` entry and uploads it as a `ledger` event carrying `reference`; a `balance` the
/// CRM sends counts the adjustment only through that event (`includes_store_seq`), so the CRM
/// must count the event once and not include the adjustment in balances before.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireAdjustment {
    /// The CRM's id of the adjustment; the store applies each reference once.
    pub reference: String,
    /// Customer id.
    pub customer_id: String,
    /// Signed points, non-zero.
    pub points: i64,
    /// Why (kept in the store's journal).
    pub reason: String,
}

/// A personal or segment offer (an eCoupon). Exactly one of `customer_id` (personal) and
/// `segment` (every customer carrying that tag) names who it is for. An offer the page sends
/// again replaces the stored one; `withdrawn: true` removes it. Every offer needs the
/// customer's `profiling` consent (and her `marketing` consent too with `requires_marketing`):
/// without it the offer is neither shown nor applied.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireOffer {
    /// The CRM's id of the offer (1 to 64 printable characters).
    pub offer_id: String,
    /// The one customer it is for (a personal offer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The segment tag it is for (every customer whose `tags` hold it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// First moment it applies (RFC 3339); absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// The moment it ends (RFC 3339, exclusive); absent: until withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Short text for the till's screen (truncated to 40 characters in the answer).
    #[serde(default)]
    pub text: String,
    /// Which lines it applies to.
    #[serde(default)]
    pub conditions: WireOfferConditions,
    /// What it gives; required unless `withdrawn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benefit: Option<WireOfferBenefit>,
    /// True: applies only once the customer activated it (a [`WireClip`]).
    #[serde(default)]
    pub requires_activation: bool,
    /// True: needs the customer's `marketing` consent as well as `profiling`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_marketing: bool,
    /// How many receipts of one customer it applies to (default 1).
    #[serde(default = "one")]
    pub max_uses_per_customer: u32,
    /// True: the offer is withdrawn (removed from the store).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withdrawn: bool,
}

fn one() -> u32 {
    1
}

/// Which lines of a sale an offer applies to. With no `gtins`, `brands` or `categories`,
/// every line qualifies; otherwise a line qualifies when it matches any of them. Lines the
/// earning rules exclude, lines in the store's `rules.offer_excluded_categories` and lines in
/// `exclude_categories` never qualify.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WireOfferConditions {
    /// Articles by GTIN (the line's `sku`, exactly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gtins: Vec<String>,
    /// Brands, as GS1 company prefixes (a line whose `sku` starts with one is that brand's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brands: Vec<String>,
    /// Merchandise categories (the line's `category`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Minimum spend on the qualifying lines (decimal text), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_spend: Option<String>,
    /// Categories this offer never applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_categories: Vec<String>,
}

/// What an offer gives: one of `{"bonus_points": 100}`, `{"multiplier": "2"}` (the qualifying
/// lines' points multiplied: the extra `factor - 1` times their points is the bonus) or
/// `{"amount_off": "5.00"}` (shown to the till, which takes it off; recorded when used).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum WireOfferBenefit {
    /// Flat bonus points (1 to 1,000,000).
    BonusPoints(i64),
    /// A factor on the qualifying lines' points, decimal text with at most two decimals
    /// (`"2"`, `"1.5"`; 1 to 100).
    Multiplier(String),
    /// An amount off the qualifying lines (decimal text).
    AmountOff(String),
}

/// A customer's activation of an offer in the app (or, with `withdrawn`, its removal).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireClip {
    /// Customer id.
    pub customer_id: String,
    /// The offer.
    pub offer_id: String,
    /// True: the activation is taken back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withdrawn: bool,
}

/// A voucher verification key distributed by head office.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireKey {
    /// Key id as printed in vouchers.
    pub key_id: String,
    /// Algorithm; only `ed25519` is known.
    pub algorithm: String,
    /// The public key, standard base64 of the 32 raw bytes.
    pub public_key: String,
    /// Who signs with it: `head-office` or a store id.
    #[serde(default)]
    pub issuer: Option<String>,
    /// True when vouchers signed with it must be refused from now on.
    #[serde(default)]
    pub revoked: bool,
}

/// An error body the CRM may send with a 4xx/5xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: String,
    /// What went wrong.
    pub message: String,
}
