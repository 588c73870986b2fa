//! `[mqtt]`: the store's broker (usually Mosquitto on the same box).

use super::{Config, Errors, Section};
use serde::Deserialize;
use std::path::PathBuf;

/// Broker connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MqttConfig {
    /// Whether the gateway connects to a broker at all.
    pub enabled: bool,
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Client id; must be stable so the broker keeps the session across restarts.
    /// `{store_id}` is replaced.
    pub client_id: String,
    /// Topic prefix; `{store_id}` is replaced.
    pub topic_prefix: String,
    /// User name, if the broker requires one.
    pub username: Option<String>,
    /// File holding the password (never the password itself in this file).
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) for `mqtts://`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS to the broker.
    pub client_cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS to the broker.
    pub client_key_file: Option<PathBuf>,
    /// Keep-alive in seconds.
    pub keep_alive_secs: u64,
    /// Largest MQTT packet accepted or sent (rumqttc's default, 10 KiB, is too small for
    /// receipts with many lines).
    pub max_packet_bytes: usize,
    /// First reconnect delay in milliseconds; doubles up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in milliseconds.
    pub reconnect_max_ms: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: "loyalty-gateway-{store_id}".into(),
            topic_prefix: "loyalty/{store_id}".into(),
            username: None,
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            keep_alive_secs: 30,
            max_packet_bytes: 1024 * 1024,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
        }
    }
}

/// A broker address split out of `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

impl MqttConfig {
    /// Splits `url` into host, port and TLS flag.
    pub fn broker_address(&self) -> Result<BrokerAddress, String> {
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = self.url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!(
                "'{}' must start with mqtt:// or mqtts://",
                self.url
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("'{port}' is not a port number"))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        Ok(BrokerAddress {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

impl Section for MqttConfig {
    fn validate(&self, path: &str, _config: &Config, errors: &mut Errors) {
        if let Err(message) = self.broker_address() {
            errors.push(format!("{path}.url"), message);
        }
        errors.check(
            !self.client_id.is_empty(),
            format!("{path}.client_id"),
            "required: a stable client id",
        );
        errors.check(
            !self.topic_prefix.is_empty()
                && !self.topic_prefix.contains(['#', '+'])
                && !self.topic_prefix.ends_with('/'),
            format!("{path}.topic_prefix"),
            "must be non-empty, without wildcards and without a trailing '/'",
        );
        errors.check(
            (4096..=64 * 1024 * 1024).contains(&self.max_packet_bytes),
            format!("{path}.max_packet_bytes"),
            "must be between 4096 and 67108864",
        );
        errors.check(
            self.client_cert_file.is_some() == self.client_key_file.is_some(),
            format!("{path}.client_key_file"),
            "client_cert_file and client_key_file go together",
        );
        errors.check(
            self.reconnect_min_ms >= 10 && self.reconnect_min_ms <= self.reconnect_max_ms,
            format!("{path}.reconnect_min_ms"),
            "must be at least 10 and not above reconnect_max_ms",
        );
    }
}
