//! Secrets read from files ([`Secret`]): never printed, compared in constant time, wiped on
//! drop.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value (password, bearer token, key material). `Debug` and `Display` print `***`;
/// only [`Secret::expose`] gives the value, at the one place that needs it. The memory is
/// overwritten on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source} (check that it exists and that the loyalty-gateway user may read it)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Everyone may read the file.
    #[error(
        "secret file {path} is readable by every user (mode {mode:o}); run: chmod o-rwx {path}"
    )]
    WorldReadable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds nothing but whitespace.
    #[error("secret file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Reads a secret from a file (trailing whitespace and newline removed). Refuses a file
    /// that every user may read, and an empty one.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        use std::os::unix::fs::PermissionsExt;
        let read_error = |source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(read_error)?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o004 != 0 {
            return Err(SecretError::WorldReadable {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = std::fs::read_to_string(path).map_err(read_error)?;
        let trimmed = text.trim_end().len();
        text.truncate(trimmed);
        if text.trim().is_empty() {
            return Err(SecretError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Secret(text))
    }

    /// The secret value. Never pass it to a log macro or an error message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in time independent of where they differ (for tokens).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != candidate.len() {
            return false;
        }
        mine.iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}
