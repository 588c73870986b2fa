//! Configuration: the TOML file of SPEC 2.2, in two layers. The raw layer, [`Config`], is the
//! file as written: typed sections with defaults, each in its own file below `config/`,
//! checking itself through [`Section::validate`]. The built layer, [`Built`], adds everything
//! built from it (card matcher, earning rules, voucher issuing rules, receipt profiles), built
//! exactly once, at load, by the same code that validates those sections.
//!
//! Owns loading and the collection of *every* error (unknown keys, wrong types, invalid values,
//! problems found while building) with its key path and line.
//!
//! Invariant: a `Config` returned by [`parse`] and a [`Built`] passed every validation; the rest
//! of the crate never re-checks configuration, and never builds these parts again.

mod built;
mod crm;
mod http;
mod inputs;
mod mqtt;
mod redeem;
mod rewards;
mod rules;
mod storage;
mod store;

pub use built::Built;
pub use crm::CrmConfig;
pub use http::{HttpConfig, StaffConfig, StaffPin};
pub use inputs::{
    lane_reach, AnswerLabelsConfig, AnswerMode, AnswerQr, CardsConfig, LanesConfig,
    PrinterProxyConfig, ReceiptProfileConfig, SerialConfig, SerialKind,
};
pub use mqtt::MqttConfig;
pub use redeem::RedeemConfig;
pub use rewards::{RewardRuleConfig, RewardsConfig};
pub use rules::{PromotionConfig, RoundingMode, RulesConfig, TierConfig};
pub use storage::StorageConfig;
pub use store::StoreConfig;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    /// `[store]`: who this store is.
    pub store: StoreConfig,
    /// `[storage]`: where and how data is kept.
    pub storage: StorageConfig,
    /// `[mqtt]`: the store's broker.
    pub mqtt: MqttConfig,
    /// `[[serial]]`: one per scanner or printer tap.
    pub serial: Vec<SerialConfig>,
    /// `[[printer_proxy]]`: network printers proxied on raw TCP.
    pub printer_proxy: Vec<PrinterProxyConfig>,
    /// `[receipt_profiles.NAME]`: how printed receipt text is read.
    pub receipt_profiles: BTreeMap<String, ReceiptProfileConfig>,
    /// `[cards]`: which card numbers belong to the program.
    pub cards: CardsConfig,
    /// `[lanes]`: lane session windows.
    pub lanes: LanesConfig,
    /// `[rules]`: earning rules.
    pub rules: RulesConfig,
    /// `[rewards]`: vouchers.
    pub rewards: RewardsConfig,
    /// `[redeem]`: paying with points at the till.
    pub redeem: RedeemConfig,
    /// `[crm]`: central CRM sync.
    pub crm: CrmConfig,
    /// `[http]`: local API.
    pub http: HttpConfig,
}

/// One configuration problem, named by key path (`serial[1].baud`) and, where known, line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path; `[n]` for array elements. Empty for file-level problems.
    pub path: String,
    /// 1-based line in the file, when it could be located.
    pub line: Option<usize>,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => write!(f, "{}", self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Collects validation errors with their key paths.
#[derive(Debug, Default)]
pub struct Errors {
    list: Vec<ConfigError>,
}

impl Errors {
    /// Records that the value at `path` is invalid.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError {
            path: path.into(),
            line: None,
            message: message.into(),
        });
    }

    /// Records an error when `ok` is false.
    pub fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.push(path, message);
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// A configuration section that can check its own values.
pub trait Section {
    /// Records every invalid value, with paths below `path`. `config` is the whole file, for
    /// checks that span sections.
    fn validate(&self, path: &str, config: &Config, errors: &mut Errors);
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    load_built(path).map(|built| built.raw)
}

/// Reads, validates and builds a configuration file (what the daemon runs with).
pub fn load_built(path: &Path) -> Result<Built, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        vec![ConfigError {
            path: String::new(),
            line: None,
            message: format!(
                "cannot read configuration file {}: {err} (pass --config PATH)",
                path.display()
            ),
        }]
    })?;
    parse_built(&text)
}

/// The largest number of type errors reported from one file before giving up.
const MAX_TYPE_ERRORS: usize = 64;

/// Parses and validates configuration text, collecting every error.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    parse_built(text).map(|built| built.raw)
}

/// Parses, validates and builds configuration text, collecting every error.
pub fn parse_built(text: &str) -> Result<Built, Vec<ConfigError>> {
    let document: toml_edit::ImDocument<&str> = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(err) => {
            return Err(vec![ConfigError {
                path: String::new(),
                line: err.span().map(|span| line_of(text, span.start)),
                message: format!("not valid TOML: {}", err.message()),
            }])
        }
    };
    let mut value: toml::Value = match toml::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            return Err(vec![ConfigError {
                path: String::new(),
                line: err.span().map(|span| line_of(text, span.start)),
                message: format!("not valid TOML: {}", err.message()),
            }])
        }
    };

    let mut errors: Vec<ConfigError> = Vec::new();
    let mut unknown_keys: Vec<Vec<PathSegment>> = Vec::new();
    let mut config = None;
    for _ in 0..MAX_TYPE_ERRORS {
        unknown_keys.clear();
        let mut record_unknown = |path: serde_ignored::Path<'_>| {
            unknown_keys.push(segments_of_ignored(&path));
        };
        let ignored = serde_ignored::Deserializer::new(value.clone(), &mut record_unknown);
        match serde_path_to_error::deserialize::<_, Config>(ignored) {
            Ok(parsed) => {
                config = Some(parsed);
                break;
            }
            Err(err) => {
                let segments = segments_of_error(err.path());
                let message = err.inner().to_string();
                let removable = !message.starts_with("missing field")
                    && !segments.is_empty()
                    && remove_at(&mut value, &segments);
                errors.push(ConfigError {
                    path: format_path(&segments),
                    line: line_of_path(&document, text, &segments),
                    message: tidy_serde_message(&message),
                });
                if !removable {
                    break;
                }
            }
        }
    }
    for segments in &unknown_keys {
        errors.push(ConfigError {
            path: format_path(segments),
            line: line_of_path(&document, text, segments),
            message: "unknown key (check the spelling against config/gateway.toml)".into(),
        });
    }
    let Some(config) = config else {
        return Err(sorted(errors));
    };
    let mut semantic = Errors::default();
    config.validate_all(&mut semantic);
    let built = built::build(config, &mut semantic);
    for mut error in semantic.list {
        let segments = parse_path(&error.path);
        error.line = line_of_path(&document, text, &segments);
        errors.push(error);
    }
    match built {
        Some(built) if errors.is_empty() => Ok(built),
        _ => Err(sorted(errors)),
    }
}

impl Config {
    fn validate_all(&self, errors: &mut Errors) {
        self.store.validate("store", self, errors);
        self.storage.validate("storage", self, errors);
        self.mqtt.validate("mqtt", self, errors);
        for (index, serial) in self.serial.iter().enumerate() {
            serial.validate(&format!("serial[{index}]"), self, errors);
        }
        for (index, proxy) in self.printer_proxy.iter().enumerate() {
            proxy.validate(&format!("printer_proxy[{index}]"), self, errors);
        }
        for (name, profile) in &self.receipt_profiles {
            profile.validate(&format!("receipt_profiles.{name}"), self, errors);
        }
        // `[cards]` and `[rules]` are checked by building them (`built::build`).
        self.lanes.validate("lanes", self, errors);
        self.rewards.validate("rewards", self, errors);
        self.redeem.validate("redeem", self, errors);
        self.crm.validate("crm", self, errors);
        self.http.validate("http", self, errors);
    }

    /// The MQTT topic prefix with `{store_id}` filled in.
    pub fn topic_prefix(&self) -> String {
        self.mqtt.topic_prefix.replace("{store_id}", &self.store.id)
    }
}

fn sorted(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors.sort_by(|a, b| a.line.cmp(&b.line).then_with(|| a.path.cmp(&b.path)));
    errors.dedup();
    errors
}

fn tidy_serde_message(message: &str) -> String {
    message
        .replace("invalid type: ", "wrong type: ")
        .replace("unknown variant", "unknown value")
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathSegment {
    Key(String),
    Index(usize),
}

fn format_path(segments: &[PathSegment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            PathSegment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            PathSegment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

fn parse_path(path: &str) -> Vec<PathSegment> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (key, rest) = match part.find('[') {
            Some(pos) => (&part[..pos], &part[pos..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segments.push(PathSegment::Key(key.to_string()));
        }
        for index in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(index) = index.trim_end_matches(']').parse() {
                segments.push(PathSegment::Index(index));
            }
        }
    }
    segments
}

fn segments_of_error(path: &serde_path_to_error::Path) -> Vec<PathSegment> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(PathSegment::Index(*index)),
            Segment::Map { key } => Some(PathSegment::Key(key.clone())),
            Segment::Enum { variant } => Some(PathSegment::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

fn segments_of_ignored(path: &serde_ignored::Path<'_>) -> Vec<PathSegment> {
    use serde_ignored::Path;
    let mut segments = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments_of_ignored(parent),
    };
    match path {
        Path::Seq { index, .. } => segments.push(PathSegment::Index(*index)),
        Path::Map { key, .. } => segments.push(PathSegment::Key(key.clone())),
        _ => {}
    }
    segments
}

fn remove_at(value: &mut toml::Value, segments: &[PathSegment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut current = value;
    for segment in parents {
        let next = match (segment, current) {
            (PathSegment::Key(key), toml::Value::Table(table)) => table.get_mut(key),
            (PathSegment::Index(index), toml::Value::Array(array)) => array.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return false,
        }
    }
    match (last, current) {
        (PathSegment::Key(key), toml::Value::Table(table)) => table.remove(key).is_some(),
        // An element of an array cannot be removed without shifting its siblings' paths, so
        // the whole array is dropped (its other errors are found on the next run).
        (PathSegment::Index(_), _) => false,
        _ => false,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn line_of_path(
    document: &toml_edit::ImDocument<&str>,
    text: &str,
    segments: &[PathSegment],
) -> Option<usize> {
    let mut item: &toml_edit::Item = document.as_item();
    let mut best_span = None;
    for segment in segments {
        match segment {
            PathSegment::Key(key) => {
                let table = item.as_table_like()?;
                let (found_key, next) = table.get_key_value(key)?;
                best_span = found_key.span().or_else(|| next.span()).or(best_span);
                item = next;
            }
            PathSegment::Index(index) => {
                if let Some(tables) = item.as_array_of_tables() {
                    let table = tables.get(*index)?;
                    best_span = table.span().or(best_span);
                    // Continue into the table: wrap it as an item by looking it up again below.
                    return line_of_path_in_table(table, text, &segments_after(segments, segment))
                        .or_else(|| best_span.map(|span| line_of(text, span.start)));
                }
                let value = item.as_array()?.get(*index)?;
                best_span = value.span().or(best_span);
                break;
            }
        }
    }
    best_span.map(|span| line_of(text, span.start))
}

fn segments_after(segments: &[PathSegment], marker: &PathSegment) -> Vec<PathSegment> {
    let position = segments
        .iter()
        .position(|s| std::ptr::eq(s, marker))
        .unwrap_or(segments.len());
    segments[(position + 1).min(segments.len())..].to_vec()
}

fn line_of_path_in_table(
    table: &toml_edit::Table,
    text: &str,
    segments: &[PathSegment],
) -> Option<usize> {
    let Some(PathSegment::Key(first)) = segments.first() else {
        return table.span().map(|span| line_of(text, span.start));
    };
    let (key, item) = table.get_key_value(first)?;
    let mut span = key.span().or_else(|| item.span());
    if let (Some(PathSegment::Key(second)), Some(inner)) = (segments.get(1), item.as_table_like()) {
        if let Some((inner_key, inner_item)) = inner.get_key_value(second) {
            span = inner_key.span().or_else(|| inner_item.span()).or(span);
        }
    }
    span.map(|span| line_of(text, span.start))
}

#[cfg(test)]
mod tests;
