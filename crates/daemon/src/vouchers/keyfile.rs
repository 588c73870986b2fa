//! The store's signing key file (shell side of `voucher`): generation with the operating
//! system's randomness, written mode 0600 and never overwritten; loading refuses a file that
//! group or others can read or write, telling the operator which `chmod` to run.
//!
//! Secret bytes (the seed, its base64, the file's text) are wiped as soon as they are no longer
//! needed; the `SigningKey` wipes itself on drop (ed25519-dalek's `zeroize` feature).
//!
//! File format: comment lines starting with `#` (one names the public key), and one line with
//! the standard base64 of the 32-byte Ed25519 secret seed. `PATH.pub` holds the public key.

use base64::Engine;
use ed25519_dalek::SigningKey;
use loyalty_core::voucher::keys::{public_key_base64, StoreKey};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Why a key file could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Group or others may read or write the private key.
    #[error("{path}: private key file mode is {mode:04o}, readable or writable by others; run `chmod 600 {path}` (and check who could have copied it)")]
    LoosePermissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Refusing to overwrite an existing key.
    #[error("{0}: already exists; refusing to overwrite a signing key (vouchers signed with it would stop verifying once it is gone). Choose another --out path")]
    Exists(String),
    /// The file does not hold a key.
    #[error("{path}: not a loyalty-gateway signing key: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// No randomness from the operating system.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The public key file written next to a private key (`PATH.pub`).
pub fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

/// Generates a new signing key and writes it to `out` (mode 0600, created exclusively, synced)
/// and its public key to `out.pub`. Returns the signing key.
pub fn generate(out: &Path) -> Result<SigningKey, KeyFileError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(&mut seed[..]).map_err(|err| KeyFileError::Random(err.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    write_key(out, &key)?;
    Ok(key)
}

/// Writes `key` to `out` (mode 0600, never overwriting) and its public key to `out.pub`.
pub fn write_key(out: &Path, key: &SigningKey) -> Result<(), KeyFileError> {
    let public = public_key_base64(&key.verifying_key());
    let secret = Zeroizing::new(key.to_bytes());
    let secret = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&secret[..]));
    let text = Zeroizing::new(format!(
        "# loyalty-gateway voucher signing key (Ed25519). SECRET: keep this file mode 0600.\n\
         # public key: {public}\n{}\n",
        secret.as_str()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|err| {
            if err.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::Exists(out.display().to_string())
            } else {
                io(out)(err)
            }
        })?;
    // The umask can only narrow 0600; set it explicitly anyway.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io(out))?;
    file.write_all(text.as_bytes()).map_err(io(out))?;
    file.sync_all().map_err(io(out))?;
    let public_file = public_path(out);
    std::fs::write(&public_file, format!("{public}\n")).map_err(io(&public_file))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Loads a signing key, refusing a file whose mode lets group or others read or write it.
pub fn load(path: &Path) -> Result<SigningKey, KeyFileError> {
    let metadata = std::fs::metadata(path).map_err(io(path))?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::LoosePermissions {
            path: path.display().to_string(),
            mode,
        });
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io(path))?);
    parse(&text).map_err(|reason| KeyFileError::Invalid {
        path: path.display().to_string(),
        reason,
    })
}

/// Loads the store's key as configured: `rewards.signing_key_file` with id `rewards.key_id`
/// (default `store-{store_id}`). `None` when no key file is configured.
pub fn load_store_key(config: &crate::config::Config) -> Result<Option<StoreKey>, KeyFileError> {
    let Some(path) = &config.rewards.signing_key_file else {
        return Ok(None);
    };
    let signing = load(path)?;
    Ok(Some(StoreKey {
        key_id: store_key_id(config),
        signing,
    }))
}

/// The store's key id: `rewards.key_id`, or `store-{store.id}`.
pub fn store_key_id(config: &crate::config::Config) -> String {
    config
        .rewards
        .key_id
        .clone()
        .unwrap_or_else(|| format!("store-{}", config.store.id))
}

fn parse(text: &str) -> Result<SigningKey, String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    let secret = lines.next().ok_or("no key line")?;
    if lines.next().is_some() {
        return Err("more than one key line".into());
    }
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(secret)
            .map_err(|_| "the key line is not base64".to_string())?,
    );
    if bytes.len() != 32 {
        return Err(format!("the key is {} bytes instead of 32", bytes.len()));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&bytes);
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_0600_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signing.key");
        let key = generate(&path).expect("generate");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load(&path).expect("load");
        assert_eq!(loaded.to_bytes(), key.to_bytes());
        let public = std::fs::read_to_string(public_path(&path)).expect("pub");
        assert_eq!(public.trim(), public_key_base64(&key.verifying_key()));
        assert!(matches!(generate(&path), Err(KeyFileError::Exists(_))));
        // Two generations differ.
        let other = generate(&dir.path().join("other.key")).expect("generate");
        assert_ne!(other.to_bytes(), key.to_bytes());
    }

    #[test]
    fn loose_key_file_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signing.key");
        generate(&path).expect("generate");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load(&path).expect_err("refused");
        let message = err.to_string();
        assert!(matches!(
            err,
            KeyFileError::LoosePermissions { mode: 0o644, .. }
        ));
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse("# nothing\n").is_err());
        assert!(parse("abc\n").is_err());
        assert!(parse("AAAA\n").is_err());
    }
}
