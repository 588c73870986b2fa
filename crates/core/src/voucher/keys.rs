//! Voucher keys in memory: the store's signing key and the set of trusted public keys (from
//! the configuration, extended at runtime by the CRM's changes feed). Pure: no files here (the
//! key file lives in `voucher::keyfile`).

use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Why a public key could not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key id cannot be carried in a voucher.
    #[error("key id '{0}' must be 1 to 32 letters, digits, '-', '_' or '.'")]
    BadKeyId(String),
    /// Not base64 of 32 bytes, or not a point on the curve.
    #[error("public key of '{key_id}' is not a base64 Ed25519 public key (32 bytes): {reason}")]
    BadPublicKey {
        /// The key id.
        key_id: String,
        /// What is wrong.
        reason: String,
    },
}

/// The store's signing key and its id.
#[derive(Clone)]
pub struct StoreKey {
    /// Key id written into every voucher this store issues.
    pub key_id: String,
    /// The Ed25519 signing key.
    pub signing: SigningKey,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("StoreKey")
            .field("key_id", &self.key_id)
            .field(
                "public_key",
                &public_key_base64(&self.signing.verifying_key()),
            )
            .finish()
    }
}

impl StoreKey {
    /// The public half, base64, as configured in other stores and announced to the CRM.
    pub fn public_key_base64(&self) -> String {
        public_key_base64(&self.signing.verifying_key())
    }

    /// What the CRM is told about this store's key (see [`KeyAnnouncement`]).
    pub fn announcement(&self) -> KeyAnnouncement {
        KeyAnnouncement {
            key_id: self.key_id.clone(),
            algorithm: "ed25519",
            public_key: self.public_key_base64(),
        }
    }
}

/// The payload of the event announcing a store's public key to the CRM (event type
/// `voucher_key`), so the CRM can distribute it to the other stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAnnouncement {
    /// Key id carried in vouchers.
    pub key_id: String,
    /// Always `"ed25519"`.
    pub algorithm: &'static str,
    /// Standard base64 of the 32-byte public key.
    pub public_key: String,
}

/// Standard base64 of a public key.
pub fn public_key_base64(key: &VerifyingKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

/// Parses a base64 Ed25519 public key.
pub fn parse_public_key(key_id: &str, text: &str) -> Result<VerifyingKey, KeyError> {
    let bad = |reason: String| KeyError::BadPublicKey {
        key_id: key_id.to_string(),
        reason,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|err| bad(err.to_string()))?;
    let array: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| bad(format!("{} bytes instead of 32", bytes.len())))?;
    let key = VerifyingKey::from_bytes(&array).map_err(|err| bad(err.to_string()))?;
    if key.is_weak() {
        return Err(bad("a weak (small-order) key".into()));
    }
    Ok(key)
}

/// What [`TrustedKeys::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// A new key id.
    Added,
    /// The same key was already trusted under this id.
    Unchanged,
    /// The id was trusted with another key, which is replaced (rotation by head office).
    Replaced,
}

/// The public keys whose vouchers are accepted, by key id. Cheap to clone; clones share the
/// same set, so keys added by the sync task are seen by the gateway at once.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Arc<RwLock<BTreeMap<String, VerifyingKey>>>,
}

impl TrustedKeys {
    /// An empty set.
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// Trusts `key` under `key_id`.
    pub fn insert(&self, key_id: &str, key: VerifyingKey) -> Result<KeyChange, KeyError> {
        if !super::format::valid_key_id(key_id) {
            return Err(KeyError::BadKeyId(key_id.to_string()));
        }
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        Ok(match keys.insert(key_id.to_string(), key) {
            None => KeyChange::Added,
            Some(old) if old == key => KeyChange::Unchanged,
            Some(_) => KeyChange::Replaced,
        })
    }

    /// Trusts a base64 public key (as the configuration and the CRM write them).
    pub fn insert_base64(&self, key_id: &str, public_key: &str) -> Result<KeyChange, KeyError> {
        let key = parse_public_key(key_id, public_key)?;
        self.insert(key_id, key)
    }

    /// Stops trusting `key_id` (a key withdrawn by head office). True when it was trusted.
    pub fn remove(&self, key_id: &str) -> bool {
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        keys.remove(key_id).is_some()
    }

    /// The key trusted under `key_id`.
    pub fn get(&self, key_id: &str) -> Option<VerifyingKey> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        keys.get(key_id).copied()
    }

    /// The trusted key ids.
    pub fn key_ids(&self) -> Vec<String> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        keys.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_runtime_additions() {
        let keys = TrustedKeys::new();
        let other = keys.clone();
        let signing = SigningKey::from_bytes(&[1u8; 32]);
        let b64 = public_key_base64(&signing.verifying_key());
        assert_eq!(keys.insert_base64("ho-2026", &b64), Ok(KeyChange::Added));
        assert_eq!(
            keys.insert_base64("ho-2026", &b64),
            Ok(KeyChange::Unchanged)
        );
        assert_eq!(other.get("ho-2026"), Some(signing.verifying_key()));
        let rotated = SigningKey::from_bytes(&[2u8; 32]).verifying_key();
        assert_eq!(other.insert("ho-2026", rotated), Ok(KeyChange::Replaced));
        assert!(keys.remove("ho-2026"));
        assert_eq!(other.get("ho-2026"), None);
    }

    #[test]
    fn refuses_bad_keys() {
        let keys = TrustedKeys::new();
        assert!(matches!(
            keys.insert_base64("k", "not base64!"),
            Err(KeyError::BadPublicKey { .. })
        ));
        assert!(matches!(
            keys.insert_base64("k", "AAAA"),
            Err(KeyError::BadPublicKey { .. })
        ));
        // The identity point is a small-order (weak) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let b64 = base64::engine::general_purpose::STANDARD.encode(identity);
        assert!(keys.insert_base64("k", &b64).is_err());
        let good = public_key_base64(&SigningKey::from_bytes(&[1u8; 32]).verifying_key());
        assert!(matches!(
            keys.insert_base64("bad id", &good),
            Err(KeyError::BadKeyId(_))
        ));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = StoreKey {
            key_id: "store-1".into(),
            signing: SigningKey::from_bytes(&[9u8; 32]),
        };
        let text = format!("{key:?}");
        let secret = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert!(!text.contains(&secret));
        assert!(text.contains(&key.public_key_base64()));
    }
}
