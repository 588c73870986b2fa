//! `[http]`: the local HTTP API (health, metrics, staff lookup, voucher images).

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
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            bind: "127.0.0.1:8780".into(),
            token_file: None,
        }
    }
}

impl HttpConfig {
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
    }
}
