//! The changes feed: long-polls `GET /v1/stores/{id}/changes?instance=...&cursor=...&wait=N`,
//! validates what came down (rules through `rules::EarningRules::from_config`), and hands each
//! page to `store::sync_state` which applies it (merges and point adjustments included) and
//! stores its cursor in one transaction. While pages carry changes it asks again at once; a CRM
//! that held the request until `wait` was up is asked again at once too (a change made at head
//! office arrives within a round trip); a CRM that answers an empty page at once (no
//! long-poll) is asked every `crm.poll_interval_secs`.

use super::client::CrmClient;
use super::status::{StatusSink, SyncFailure};
use super::SyncError;
use crate::backoff::{Backoff, Jitter};
use crate::blocking::blocking;
use crate::config::RulesConfig;
use jiff::Timestamp;
use loyalty_core::rules::EarningRules;
use loyalty_protocol::crm::{ChangesPage, WireAdjustment, WireCustomer, WireKey};
use loyalty_store::sync_state::{
    ChangeSet, CrmAdjustment, CrmConsent, CrmCustomer, CrmKey, CrmMerge,
};
use loyalty_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// Earning rules sent by the CRM and accepted (validated) by this gateway.
#[derive(Debug)]
pub struct CrmRules {
    /// The rules as configuration (for display and for storing).
    pub config: RulesConfig,
    /// The built rules, ready to swap in.
    pub rules: EarningRules,
}

/// Checks a rule set from the CRM: it must be a `[rules]` table (as JSON) without unknown keys,
/// pass the same validation as the configuration file, and build. Returns the built rules or a
/// sentence saying what is wrong.
pub fn validate_rules(json: &serde_json::Value, currency: &str) -> Result<CrmRules, String> {
    let mut unknown = Vec::new();
    let config: RulesConfig =
        serde_ignored::deserialize(json, |path| unknown.push(path.to_string()))
            .map_err(|err| format!("the CRM's rules are not a rules table: {err}"))?;
    if !unknown.is_empty() {
        return Err(format!(
            "the CRM's rules have unknown keys: {}",
            unknown.join(", ")
        ));
    }
    // Building is the validation, the same as for the file's `[rules]` (`config::Built`).
    let rules = EarningRules::from_config(&config, currency)
        .map_err(|err| format!("the CRM's rules were refused: {err}"))?;
    Ok(CrmRules { config, rules })
}

/// Loads the last accepted CRM rules from the store (re-validated; `None` when there are none
/// or they no longer validate).
pub fn load_rules(store: &Store, currency: &str) -> Option<Arc<CrmRules>> {
    let json = store.accepted_rules_json().ok().flatten()?;
    let value: serde_json::Value = serde_json::from_str(&json).ok()?;
    match validate_rules(&value, currency) {
        Ok(rules) => Some(Arc::new(rules)),
        Err(err) => {
            tracing::warn!(error = %err, "stored CRM rules no longer validate; using the configured rules");
            None
        }
    }
}

/// A customer of the CRM's JSON (changes page or by-card answer) as the store takes it.
pub fn crm_customer(wire: WireCustomer) -> CrmCustomer {
    CrmCustomer {
        customer_id: wire.customer_id,
        balance: wire.balance,
        includes_store_seq: wire.includes_store_seq,
        tier: wire.tier,
        cards: wire.cards,
        display_name: wire.display_name,
        consent: wire.consent.map(|c| CrmConsent {
            marketing: c.marketing,
            profiling: c.profiling,
        }),
        phone_hash: wire.phone_hash,
        email_hash: wire.email_hash,
        tags: wire.tags,
        birthday: wire.birthday,
    }
}

fn adjustment(wire: WireAdjustment) -> CrmAdjustment {
    CrmAdjustment {
        reference: wire.reference,
        customer_id: wire.customer_id,
        points: wire.points,
        reason: wire.reason,
    }
}

fn key(wire: WireKey) -> CrmKey {
    CrmKey {
        key_id: wire.key_id,
        algorithm: wire.algorithm,
        public_key: wire.public_key,
        issuer: wire.issuer,
        revoked: wire.revoked,
    }
}

/// Turns a page into what the store applies, validating the rules. Returns the change set and
/// the accepted rules (if the page carried valid ones).
pub fn convert(page: ChangesPage, currency: &str, now: Timestamp) -> (ChangeSet, Option<CrmRules>) {
    let (rules_json, accepted, rejection) = match page.rules {
        None => (None, None, None),
        Some(json) => match validate_rules(&json, currency) {
            Ok(rules) => (Some(json.to_string()), Some(rules), None),
            Err(reason) => (None, None, Some(reason)),
        },
    };
    let changes = ChangeSet {
        cursor: page.cursor,
        now,
        merged: page
            .merged
            .into_iter()
            .map(|m| CrmMerge {
                from: m.from,
                into: m.into,
            })
            .collect(),
        customers: page.customers.into_iter().map(crm_customer).collect(),
        adjustments: page.adjustments.into_iter().map(adjustment).collect(),
        erased: page.erased,
        revoked_vouchers: page.revoked_vouchers,
        keys: page.keys.into_iter().map(key).collect(),
        rules_json,
        rules_rejection: rejection,
        offers: super::offers::offer_changes(page.offers, currency),
        clips: super::offers::clips(page.clips),
    };
    (changes, accepted)
}

/// Feed settings.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// Store id.
    pub store_id: String,
    /// The database instance ([`loyalty_store::Store::instance`]), named in every request.
    pub instance: String,
    /// Currency of the store (for rules).
    pub currency: String,
    /// Time between polls once the feed is drained (when the CRM does not long-poll).
    pub poll_interval: Duration,
    /// Long-poll: how long the CRM may hold a request (`?wait=`; zero: never ask).
    pub wait: Duration,
    /// First retry delay.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
}

/// What the feed tells the rest of the gateway when a page was applied.
pub(crate) struct FeedSignals {
    /// The rules accepted from the CRM.
    pub rules: Arc<watch::Sender<Option<Arc<CrmRules>>>>,
    /// Bumped after each page that stored voucher keys (or key revocations): the vouchers'
    /// trusted keys are reloaded from the store at once.
    pub keys: watch::Sender<u64>,
}

/// Runs the feed until `cancel` fires.
pub(crate) async fn run(
    store: Store,
    mut client: CrmClient,
    settings: FeedSettings,
    status: StatusSink,
    signals: FeedSignals,
    poll_now: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut backoff =
        Backoff::new(settings.backoff_min, settings.backoff_max).with_jitter(Jitter::Equal);
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => break,
            attempt = poll_once(&store, &mut client, &settings, &status, &signals) => attempt,
        };
        let wait = match attempt {
            Ok(Polled::Changes) | Ok(Polled::Waited) => {
                // More may be pending, or the CRM held the request until its time was up and
                // is ready to hold the next one: ask again at once.
                backoff.reset();
                if cancel.is_cancelled() {
                    break;
                }
                continue;
            }
            Ok(Polled::Empty) => {
                backoff.reset();
                settings.poll_interval
            }
            Err(err) => {
                let delay =
                    backoff.next_delay_honouring(err.retry_after(), settings.retry_after_cap);
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "CRM changes poll failed");
                status.request_failed(&err);
                status.update(|s| {
                    s.feed_failures = s.feed_failures.saturating_add(1);
                    s.last_feed_error = Some(SyncFailure {
                        at: Timestamp::now(),
                        kind: err.kind(),
                        message: err.to_string(),
                    });
                });
                delay
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = poll_now.notified() => {}
        }
    }
}

/// An empty page that took at least this long (or half the wait, if less) was held by the CRM.
const HELD_AT_LEAST: Duration = Duration::from_secs(2);

/// What one poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polled {
    /// The page carried changes (or moved the cursor): ask again at once.
    Changes,
    /// Nothing, after the CRM held the request (long-poll): ask again at once.
    Waited,
    /// Nothing, answered at once (a CRM that does not long-poll): ask again after the
    /// poll interval.
    Empty,
}

/// One poll.
async fn poll_once(
    store: &Store,
    client: &mut CrmClient,
    settings: &FeedSettings,
    status: &StatusSink,
    signals: &FeedSignals,
) -> Result<Polled, SyncError> {
    let s = store.clone();
    let cursor = blocking(move || s.sync_cursor())
        .await
        .map_err(super::store_error)?;
    let asked = tokio::time::Instant::now();
    let page = client
        .get_changes(
            &settings.store_id,
            &settings.instance,
            cursor.as_deref(),
            settings.wait,
        )
        .await?;
    let moved = cursor.as_deref() != Some(page.cursor.as_str());
    let had_changes = !page.is_empty();
    if !had_changes && !moved {
        status.update(|s| {
            s.last_feed_success = Some(Timestamp::now());
            s.feed_failures = 0;
            s.feed_cursor = cursor.clone();
        });
        // A CRM that honours `wait` answers an empty page only when the time is up (or a proxy
        // in between ended the request after some seconds); one that answers at once does not
        // long-poll, and is polled every interval instead.
        let held = (settings.wait / 2).min(HELD_AT_LEAST);
        let waited = !settings.wait.is_zero() && asked.elapsed() >= held;
        return Ok(if waited {
            Polled::Waited
        } else {
            Polled::Empty
        });
    }
    let currency = settings.currency.clone();
    let (changes, accepted) = convert(page, &currency, Timestamp::now());
    let rejection = changes.rules_rejection.clone();
    let new_cursor = changes.cursor.clone();
    let s = store.clone();
    let report = blocking(move || s.apply_changes(&changes))
        .await
        .map_err(super::store_error)?;
    tracing::info!(
        cursor = %new_cursor,
        customers = report.customers,
        adjustments = report.adjustments,
        duplicate_adjustments = report.duplicate_adjustments,
        erased = report.erased,
        erasures_confirmed = report.erasures_confirmed,
        merges = report.merges,
        revoked = report.revoked_vouchers,
        keys = report.keys,
        "CRM changes applied"
    );
    if report.refused_merges > 0 {
        tracing::warn!(
            cursor = %new_cursor,
            refused = report.refused_merges,
            "CRM customer merges skipped (invalid id, a customer merged into herself, or a cycle); check the merge at head office"
        );
    }
    if report.refused_adjustments > 0 {
        tracing::warn!(
            cursor = %new_cursor,
            refused = report.refused_adjustments,
            "CRM point adjustments skipped (unknown customer, invalid id or reference, zero or out-of-range points); correct them at head office and send them again under a new reference"
        );
    }
    if report.keys > 0 {
        // The lanes trust the new (or stop trusting revoked) keys now, not at the next
        // periodic reload.
        signals
            .keys
            .send_modify(|pages| *pages = pages.wrapping_add(1));
    }
    if let Some(accepted) = accepted {
        tracing::info!("new earning rules from the CRM accepted");
        signals.rules.send_replace(Some(Arc::new(accepted)));
    }
    let now = Timestamp::now();
    status.update(|s| {
        s.last_feed_success = Some(now);
        s.feed_failures = 0;
        s.feed_cursor = Some(new_cursor.clone());
        s.feed_pages_applied += 1;
        if let Some(reason) = rejection {
            tracing::error!(reason = %reason, "earning rules from the CRM refused; the current rules stay in force");
            s.rules_rejected = Some(SyncFailure {
                at: now,
                kind: "rules",
                message: reason,
            });
        }
    });
    Ok(if had_changes {
        Polled::Changes
    } else {
        Polled::Empty
    })
}
