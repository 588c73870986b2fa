//! The hub's TOML configuration (`loyalty-hub check-config` / `run --config`): the raw sections
//! as written (serde, `deny_unknown_fields`, defaults) and [`Config::check`], which collects
//! every problem with its key path (`server.listen: ...`) before anything starts. Reads no
//! secret: the TLS files are only checked to exist; they are read when the server starts.

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One configuration problem, named by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `section.key` (empty for the file as a whole).
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: where stores connect.
    pub server: ServerConfig,
    /// `[database]`: the PostgreSQL database every hub process shares.
    pub database: DatabaseConfig,
    /// `[feed]`: what each store gets.
    #[serde(default)]
    pub feed: FeedConfig,
    /// `[limits]`: what a request may cost.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[monitoring]`: thresholds of `/metrics` and `/health`.
    #[serde(default)]
    pub monitoring: MonitoringConfig,
    /// `[admin]`: the retailer's CRM and head office (admin API, export).
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[[tiers]]`: tiers qualified centrally by spend (none: tiers are not computed).
    #[serde(default)]
    pub tiers: Vec<TierConfig>,
    /// `[dashboard]`: head office's dashboard in a browser (off unless `listen` is set).
    #[serde(default)]
    pub dashboard: DashboardConfig,
}

/// `[dashboard]`: a second listener serving head office's dashboard as plain HTTP on a loopback
/// address only (put a TLS reverse proxy in front for other machines); login with the admin
/// token (`admin.token_file`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Loopback address and port (e.g. "127.0.0.1:8080"); absent: no dashboard.
    pub listen: Option<String>,
    /// "de" or "en".
    #[serde(default = "default_locale")]
    pub locale: String,
    /// The chain's currency symbol, e.g. "€" (amounts are formatted per locale).
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Minutes a login stays valid (server-side).
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u32,
}

fn default_locale() -> String {
    "en".into()
}
fn default_currency() -> String {
    "€".into()
}
fn default_session_minutes() -> u32 {
    480
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: None,
            locale: default_locale(),
            currency: default_currency(),
            session_minutes: default_session_minutes(),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A file whose first line is the bearer token of the admin API and the export stream
    /// (absent: both answer 503 `admin_disabled`). Read at start.
    pub token_file: Option<PathBuf>,
}

/// One `[[tiers]]` entry: a customer whose spend over the last `months` months (all stores,
/// sales minus returns) reaches `min_spend` holds the tier; the highest reached wins. Checked on
/// every receipt of the customer and by the periodic job (`feed.tier_recompute_secs`), which
/// downgrades those whose window no longer qualifies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Tier name as the till shows it.
    pub name: String,
    /// Spend needed, in the currency's units (e.g. `500` or `499.90`).
    pub min_spend: f64,
    /// The window, in months.
    pub months: u32,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address, e.g. `0.0.0.0:8443`.
    pub listen: String,
    /// The hub's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The CA whose client certificates identify stores (the certificate's CN is the store id).
    pub client_ca_file: PathBuf,
    /// Most connections served at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    4096
}

/// `[database]`: either `url` (a libpq connection string or `postgresql://` URL) or the parts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `host=... port=... user=... dbname=...` or `postgresql://user@host:port/dbname`.
    pub url: Option<String>,
    /// Host name, IP address or Unix socket directory.
    pub host: Option<String>,
    /// Port (default 5432).
    pub port: Option<u16>,
    /// Role.
    pub user: Option<String>,
    /// Database name.
    pub dbname: Option<String>,
    /// A file holding the password (first line), read at start.
    pub password_file: Option<PathBuf>,
    /// Connections per hub process.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long a request waits for a connection or a statement, in milliseconds.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
}

fn default_pool_size() -> usize {
    16
}

fn default_statement_timeout_ms() -> u64 {
    10_000
}

/// `[feed]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// A store gets the customers enrolled there, and those who shopped there within this many
    /// days.
    #[serde(default = "default_window_days")]
    pub customer_window_days: u32,
    /// Longest `wait=` honoured, in seconds (a longer one is cut to this).
    #[serde(default = "default_long_poll_max")]
    pub long_poll_max_secs: u64,
    /// Most change-log rows one page covers.
    #[serde(default = "default_page_max")]
    pub page_max_changes: i64,
    /// How often a hub re-qualifies every customer's tier (downgrades after the window).
    #[serde(default = "default_tier_recompute")]
    pub tier_recompute_secs: u64,
}

fn default_tier_recompute() -> u64 {
    3600
}

fn default_window_days() -> u32 {
    365
}

fn default_long_poll_max() -> u64 {
    60
}

fn default_page_max() -> i64 {
    500
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            customer_window_days: default_window_days(),
            long_poll_max_secs: default_long_poll_max(),
            page_max_changes: default_page_max(),
            tier_recompute_secs: default_tier_recompute(),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body, after gzip decompression.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_max_body() -> usize {
    8 * 1024 * 1024
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: default_max_body(),
        }
    }
}

/// `[monitoring]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringConfig {
    /// A store not heard from for this many minutes counts as not seen in `/metrics`.
    #[serde(default = "default_stale_minutes")]
    pub stale_store_minutes: u64,
}

fn default_stale_minutes() -> u64 {
    30
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            stale_store_minutes: default_stale_minutes(),
        }
    }
}

fn err(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![err(
            "",
            format!(
                "cannot read {}: {e} (check the path given to --config)",
                path.display()
            ),
        )]
    })?;
    parse(&text)
}

/// Parses and checks `text`.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let deserializer = toml::Deserializer::new(text);
    let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        // toml's message carries the line and column; keep its first line.
        let message = e.inner().message().to_string();
        let message = match e.inner().span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].lines().count().max(1);
                format!("{message} (line {line})")
            }
            None => message,
        };
        vec![err(&path, message)]
    })?;
    let errors = config.check();
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

fn file_exists(errors: &mut Vec<ConfigError>, path: &str, file: &Path) {
    if !file.is_file() {
        errors.push(err(
            path,
            format!("{} does not exist or is not a file", file.display()),
        ));
    }
}

impl Config {
    /// Every problem of a parsed file (empty: good to run).
    pub fn check(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            errors.push(err(
                "server.listen",
                format!(
                    "{:?} is not an address and port (e.g. \"0.0.0.0:8443\")",
                    self.server.listen
                ),
            ));
        }
        file_exists(&mut errors, "server.cert_file", &self.server.cert_file);
        file_exists(&mut errors, "server.key_file", &self.server.key_file);
        file_exists(
            &mut errors,
            "server.client_ca_file",
            &self.server.client_ca_file,
        );
        if self.server.max_connections == 0 {
            errors.push(err("server.max_connections", "must be at least 1"));
        }
        let db = &self.database;
        match &db.url {
            Some(url) => {
                if let Err(e) = url.parse::<tokio_postgres::Config>() {
                    errors.push(err("database.url", format!("not a connection string: {e}")));
                }
                for (key, set) in [
                    ("database.host", db.host.is_some()),
                    ("database.port", db.port.is_some()),
                    ("database.user", db.user.is_some()),
                    ("database.dbname", db.dbname.is_some()),
                ] {
                    if set {
                        errors.push(err(key, "set either database.url or the parts, not both"));
                    }
                }
            }
            None => {
                for (key, set) in [
                    ("database.host", db.host.is_some()),
                    ("database.user", db.user.is_some()),
                    ("database.dbname", db.dbname.is_some()),
                ] {
                    if !set {
                        errors.push(err(key, "is required when database.url is not set"));
                    }
                }
            }
        }
        if let Some(file) = &db.password_file {
            file_exists(&mut errors, "database.password_file", file);
        }
        if db.pool_size == 0 || db.pool_size > 1000 {
            errors.push(err("database.pool_size", "must be between 1 and 1000"));
        }
        if db.statement_timeout_ms < 100 {
            errors.push(err("database.statement_timeout_ms", "must be at least 100"));
        }
        if self.feed.customer_window_days == 0 {
            errors.push(err("feed.customer_window_days", "must be at least 1"));
        }
        if self.feed.long_poll_max_secs == 0 || self.feed.long_poll_max_secs > 3600 {
            errors.push(err("feed.long_poll_max_secs", "must be between 1 and 3600"));
        }
        if self.feed.page_max_changes < 1 {
            errors.push(err("feed.page_max_changes", "must be at least 1"));
        }
        if self.limits.max_body_bytes < 1024 {
            errors.push(err("limits.max_body_bytes", "must be at least 1024"));
        }
        if self.monitoring.stale_store_minutes == 0 {
            errors.push(err("monitoring.stale_store_minutes", "must be at least 1"));
        }
        if let Some(file) = &self.admin.token_file {
            file_exists(&mut errors, "admin.token_file", file);
        }
        let dash = &self.dashboard;
        if let Some(listen) = &dash.listen {
            match listen.parse::<SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => {}
                Ok(_) => errors.push(err(
                    "dashboard.listen",
                    format!("{listen:?} is not a loopback address: the dashboard is plain HTTP, so it listens on 127.0.0.1 or ::1 only (put a TLS reverse proxy in front for other machines)"),
                )),
                Err(_) => errors.push(err(
                    "dashboard.listen",
                    format!("{listen:?} is not an address and port (e.g. \"127.0.0.1:8080\")"),
                )),
            }
            if self.admin.token_file.is_none() {
                errors.push(err(
                    "dashboard.listen",
                    "the dashboard's login is the admin token: set admin.token_file too",
                ));
            }
        }
        if dash.locale != "de" && dash.locale != "en" {
            errors.push(err(
                "dashboard.locale",
                format!(
                    "{:?} is not a locale the dashboard has: \"de\" or \"en\"",
                    dash.locale
                ),
            ));
        }
        if dash.currency.trim().is_empty() {
            errors.push(err("dashboard.currency", "must not be empty (e.g. \"€\")"));
        }
        if dash.session_minutes == 0 || dash.session_minutes > 7 * 24 * 60 {
            errors.push(err(
                "dashboard.session_minutes",
                "must be between 1 and 10080 (a week)",
            ));
        }
        if self.feed.tier_recompute_secs == 0 {
            errors.push(err("feed.tier_recompute_secs", "must be at least 1"));
        }
        for (i, tier) in self.tiers.iter().enumerate() {
            if tier.name.trim().is_empty() {
                errors.push(err(&format!("tiers[{i}].name"), "must not be empty"));
            }
            if !(tier.min_spend.is_finite() && tier.min_spend >= 0.0) {
                errors.push(err(
                    &format!("tiers[{i}].min_spend"),
                    "must be a number >= 0",
                ));
            }
            if tier.months == 0 || tier.months > 120 {
                errors.push(err(
                    &format!("tiers[{i}].months"),
                    "must be between 1 and 120",
                ));
            }
        }
        errors
    }

    /// The listen address (checked by [`Config::check`]).
    pub fn listen(&self) -> SocketAddr {
        self.server
            .listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8443)))
    }

    /// The PostgreSQL connection settings (reads `database.password_file`).
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        let db = &self.database;
        let mut config = match &db.url {
            Some(url) => url
                .parse::<tokio_postgres::Config>()
                .map_err(|e| err("database.url", format!("not a connection string: {e}")))?,
            None => {
                let mut config = tokio_postgres::Config::new();
                config.host(db.host.as_deref().unwrap_or("localhost"));
                config.port(db.port.unwrap_or(5432));
                config.user(db.user.as_deref().unwrap_or("loyalty_hub"));
                config.dbname(db.dbname.as_deref().unwrap_or("loyalty_hub"));
                config
            }
        };
        if let Some(file) = &db.password_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                err(
                    "database.password_file",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            config.password(text.lines().next().unwrap_or("").trim_end());
        }
        config.application_name("loyalty-hub");
        config.connect_timeout(std::time::Duration::from_secs(5));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_listens_on_loopback_only_and_needs_the_admin_token() {
        let text = r#"
[server]
listen = "127.0.0.1:8443"
cert_file = "/nonexistent/cert.pem"
key_file = "/nonexistent/key.pem"
client_ca_file = "/nonexistent/ca.pem"
[database]
url = "postgresql://hub@localhost/hub"
[dashboard]
listen = "0.0.0.0:8080"
locale = "fr"
session_minutes = 0
"#;
        let errors = parse(text).expect_err("invalid");
        let of = |path: &str| -> Vec<&str> {
            errors
                .iter()
                .filter(|e| e.path == path)
                .map(|e| e.message.as_str())
                .collect()
        };
        let listen = of("dashboard.listen");
        assert!(
            listen.iter().any(|m| m.contains("not a loopback address")),
            "{errors:?}"
        );
        assert!(
            listen.iter().any(|m| m.contains("admin.token_file")),
            "{errors:?}"
        );
        assert!(!of("dashboard.locale").is_empty(), "{errors:?}");
        assert!(!of("dashboard.session_minutes").is_empty(), "{errors:?}");
    }

    #[test]
    fn every_error_is_named_by_its_key_path() {
        let text = r#"
[server]
listen = "nowhere"
cert_file = "/nonexistent/cert.pem"
key_file = "/nonexistent/key.pem"
client_ca_file = "/nonexistent/ca.pem"
[database]
host = "db"
pool_size = 0
[feed]
long_poll_max_secs = 0
[admin]
token_file = "/nonexistent/admin-token"
[[tiers]]
name = ""
min_spend = -1
months = 0
"#;
        let errors = parse(text).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for path in [
            "server.listen",
            "server.cert_file",
            "server.key_file",
            "server.client_ca_file",
            "database.user",
            "database.dbname",
            "database.pool_size",
            "feed.long_poll_max_secs",
            "admin.token_file",
            "tiers[0].name",
            "tiers[0].min_spend",
            "tiers[0].months",
        ] {
            assert!(paths.contains(&path), "{path} missing from {errors:?}");
        }
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_path() {
        let text = r#"
[server]
listen = "127.0.0.1:1"
cert_file = "a"
key_file = "b"
client_ca_file = "c"
[database]
url = "host=x"
pool_sizee = 3
"#;
        let errors = parse(text).expect_err("unknown key");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].to_string().contains("pool_sizee"),
            "{}",
            errors[0]
        );
        assert!(errors[0].path.starts_with("database"), "{}", errors[0]);
    }
}
