//! `[http]`: the local HTTP API (health, metrics, staff lookup, voucher images) and
//! `[http.staff]`: who may open the staff page.

use super::{Config, Errors, Section};
use serde::Deserialize;
use std::path::PathBuf;

/// Local API settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Whether the API is served.
    pub enabled: bool,
    /// Listen address; loopback unless store IT decides otherwise.
    pub bind: String,
    /// File holding the bearer token required when `bind` is not a loopback address.
    pub token_file: Option<PathBuf>,
    /// `[http.staff]`: the staff page (HTML) under `/staff`.
    pub staff: StaffConfig,
}

/// `[http.staff]`: who may open the staff page and for how long a login lasts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StaffConfig {
    /// Whether `/staff` is served.
    pub enabled: bool,
    /// File holding the staff token (typed on the login page); defaults to `http.token_file`.
    pub token_file: Option<PathBuf>,
    /// Per-staff PINs: `{ name = "Anna", pin_hash = "sha256:SALT:HEX" }` with
    /// `HEX = sha256(SALT ++ PIN)`.
    pub pins: Vec<StaffPin>,
    /// Server-side lifetime of a login (minutes).
    pub session_minutes: u32,
}

/// One staff member's PIN (only its salted hash is configured).
#[derive(Debug, Clone, Deserialize)]
pub struct StaffPin {
    /// Who this is (recorded with the goodwill vouchers the member issues).
    pub name: String,
    /// `sha256:SALT:HEX`: `HEX` is the lower-case hex SHA-256 of `SALT` followed by the PIN.
    pub pin_hash: String,
}

impl Default for StaffConfig {
    fn default() -> Self {
        StaffConfig {
            enabled: true,
            token_file: None,
            pins: Vec::new(),
            session_minutes: 8 * 60,
        }
    }
}

impl StaffPin {
    /// The salt and the expected digest, when `pin_hash` is well formed.
    pub fn parsed(&self) -> Option<(&str, [u8; 32])> {
        let rest = self.pin_hash.strip_prefix("sha256:")?;
        let (salt, hex) = rest.rsplit_once(':')?;
        if salt.is_empty() || hex.len() != 64 {
            return None;
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some((salt, digest))
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            bind: "127.0.0.1:8780".into(),
            token_file: None,
            staff: StaffConfig::default(),
        }
    }
}

impl HttpConfig {
    /// The file of the staff page's token: `http.staff.token_file`, else `http.token_file`.
    pub fn staff_token_file(&self) -> Option<&std::path::Path> {
        self.staff
            .token_file
            .as_deref()
            .or(self.token_file.as_deref())
    }

    /// The parsed listen address (validated).
    pub fn bind_addr(&self) -> Option<std::net::SocketAddr> {
        self.bind.parse().ok()
    }
}

impl Section for HttpConfig {
    fn validate(&self, path: &str, _config: &Config, errors: &mut Errors) {
        match self.bind_addr() {
            None => errors.push(
                format!("{path}.bind"),
                format!(
                    "'{}' is not an address:port such as \"127.0.0.1:8780\"",
                    self.bind
                ),
            ),
            Some(addr) => errors.check(
                addr.ip().is_loopback() || self.token_file.is_some(),
                format!("{path}.token_file"),
                "required when http.bind is not a loopback address (the API shows customer data)",
            ),
        }
        let staff = &self.staff;
        if staff.enabled {
            if let Some(addr) = self.bind_addr() {
                errors.check(
                    addr.ip().is_loopback()
                        || self.staff_token_file().is_some()
                        || !staff.pins.is_empty(),
                    format!("{path}.staff.token_file"),
                    "required when http.bind is not a loopback address and the staff page is \
                     enabled (set it, add http.staff.pins, or set http.staff.enabled = false)",
                );
            }
            errors.check(
                (1..=7 * 24 * 60).contains(&staff.session_minutes),
                format!("{path}.staff.session_minutes"),
                "must be 1 to 10080 (a week)",
            );
            for (i, pin) in staff.pins.iter().enumerate() {
                errors.check(
                    !pin.name.trim().is_empty() && pin.name.len() <= 64,
                    format!("{path}.staff.pins[{i}].name"),
                    "required: the staff member's name (1 to 64 characters)",
                );
                errors.check(
                    pin.parsed().is_some(),
                    format!("{path}.staff.pins[{i}].pin_hash"),
                    "must be \"sha256:SALT:HEX\" with HEX the 64-digit SHA-256 of SALT followed by \
                     the PIN (printf '%s' \"$SALT$PIN\" | sha256sum)",
                );
            }
        }
    }
}
