//! The second layer of the configuration: everything the daemon builds from the file as written
//! ([`Config`], the raw layer), built exactly once when the file is loaded and taken from here by
//! the rest of the daemon: the card matcher, the earning rules, the voucher issuing rules, the
//! trusted voucher keys and the compiled receipt profiles.
//!
//! Building *is* the validation of these sections: a problem found while building is reported
//! like every other configuration error, by key path (and line, when the file's text is known).
//!
//! Not here: what needs files beyond the configuration (the voucher signing key, the TLS
//! certificates of `[mqtt]` and `[crm]`). `check-config` reports their absence from the file but
//! never reads them; they are read when the gateway starts.

use super::{Config, Errors};
use ed25519_dalek::VerifyingKey;
use loyalty_core::escpos::ReceiptProfile;
use loyalty_core::rules::EarningRules;
use loyalty_core::scan::CardMatcher;
use loyalty_core::voucher::issue::RewardRules;
use loyalty_core::voucher::keys::parse_public_key;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The configuration with its built parts.
#[derive(Debug, Clone)]
pub struct Built {
    /// The file as written (validated).
    pub raw: Config,
    /// `[cards]`: which numbers are the program's cards.
    pub cards: CardMatcher,
    /// `[rules]`: the earning rules in exact form.
    pub rules: EarningRules,
    /// `[rewards]`: when vouchers are issued, and what they give.
    pub reward_rules: RewardRules,
    /// `[rewards].trusted_keys`: other issuers' public keys, parsed, by key id (in file order).
    pub trusted_keys: Vec<(String, VerifyingKey)>,
    /// `[receipt_profiles]`: compiled, by name.
    pub receipt_profiles: BTreeMap<String, Arc<ReceiptProfile>>,
}

impl Built {
    /// Validates and builds a configuration assembled in code (tests, the demo); errors carry
    /// key paths but no lines. [`super::parse_built`] is the same for a file's text.
    pub fn new(raw: Config) -> Result<Built, Vec<super::ConfigError>> {
        let mut errors = Errors::default();
        raw.validate_all(&mut errors);
        match build(raw, &mut errors) {
            Some(built) if errors.is_empty() => Ok(built),
            _ => Err(super::sorted(errors.list)),
        }
    }
}

/// Builds every part of `raw`, recording each problem in `errors`. The card matcher, the earning
/// rules and the trusted keys are always built (their problems are reported with the others);
/// the rest only when no problem was found, since their sections' checks already name what is
/// wrong.
pub(super) fn build(raw: Config, errors: &mut Errors) -> Option<Built> {
    let cards = CardMatcher::from_config(&raw.cards).map_err(|err| {
        if err.problems.is_empty() {
            errors.push("cards", err.to_string());
        }
        for problem in err.problems {
            errors.push(format!("cards.{}", problem.key), problem.message);
        }
    });
    let rules = EarningRules::from_config(&raw.rules, &raw.store.currency).map_err(|err| {
        if err.problems.is_empty() {
            errors.push("rules", err.to_string());
        }
        for problem in err.problems {
            errors.push(format!("rules.{}", problem.key), problem.message);
        }
    });
    let mut trusted_keys = Vec::new();
    for (index, key) in raw.rewards.trusted_keys.iter().enumerate() {
        match parse_public_key(&key.key_id, &key.public_key) {
            Ok(public) => trusted_keys.push((key.key_id.clone(), public)),
            Err(err) => errors.push(
                format!("rewards.trusted_keys[{index}].public_key"),
                format!("required: a base64 Ed25519 public key ({err})"),
            ),
        }
    }
    let (Ok(cards), Ok(rules)) = (cards, rules) else {
        return None;
    };
    if !errors.is_empty() {
        return None;
    }
    let rewards = &raw.rewards;
    let reward_rules = match RewardRules::from_config(
        &rewards.rules,
        rewards.max_vouchers_per_receipt,
        rewards.bind_earned_vouchers,
        &raw.store.currency,
    ) {
        Ok(rules) => rules,
        Err(err) => {
            errors.push("rewards.rules", err.to_string());
            return None;
        }
    };
    let mut receipt_profiles = BTreeMap::new();
    for (name, profile) in &raw.receipt_profiles {
        match ReceiptProfile::from_config(name, profile) {
            Ok(profile) => {
                receipt_profiles.insert(name.clone(), Arc::new(profile));
            }
            Err(err) => errors.push(
                format!("receipt_profiles.{name}.{}", err.field),
                err.message,
            ),
        }
    }
    if !errors.is_empty() {
        return None;
    }
    Some(Built {
        raw,
        cards,
        rules,
        reward_rules,
        trusted_keys,
        receipt_profiles,
    })
}
