//! Input sections: `[[serial]]` devices, `[[printer_proxy]]` network printers,
//! `[receipt_profiles.NAME]`, `[cards]` (which numbers belong to the program) and `[lanes]`
//! (lane session windows).

use super::{Config, Errors, Section};
pub use loyalty_core::escpos::ReceiptProfileConfig;
pub use loyalty_core::scan::CardsConfig;
use serde::Deserialize;

use std::path::PathBuf;

/// What a serial device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SerialKind {
    /// A barcode / mag stripe / NFC reader sending one code per line.
    #[default]
    Scanner,
    /// An inline tap on a receipt printer line.
    Escpos,
}

/// Where the answers to a printer lane's receipts go (`answer` on `kind = "escpos"` serial taps
/// and printer proxies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// Printed on the real printer after the till's cut (points, balance, new vouchers' QR
    /// codes), and sent to MQTT.
    #[default]
    Print,
    /// Only to MQTT: a display or the till listens to the lane's `response` topic.
    Mqtt,
    /// Nobody hears them: the lane converts no points into vouchers.
    None,
}

/// How a printer prints the QR code of an answer (`answer_qr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnswerQr {
    /// The printer's own QR command (`GS ( k`).
    #[default]
    Native,
    /// A raster image (`GS v 0`), for printers without the QR command.
    Raster,
}

/// The words of a printed answer (`answer_labels`), in any language the device's code page can
/// print.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AnswerLabelsConfig {
    /// The heading.
    pub title: String,
    /// Before the points the receipt earned.
    pub earned: String,
    /// Before the balance.
    pub balance: String,
    /// The heading of a voucher.
    pub voucher: String,
    /// Before a voucher's last valid day.
    pub valid_until: String,
}

impl Default for AnswerLabelsConfig {
    fn default() -> Self {
        let labels = loyalty_core::escpos::trailer::TrailerLabels::default();
        AnswerLabelsConfig {
            title: labels.title,
            earned: labels.earned,
            balance: labels.balance,
            voucher: labels.voucher,
            valid_until: labels.valid_until,
        }
    }
}

/// One serial device.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SerialConfig {
    /// Name used in health and metrics.
    pub name: String,
    /// Device path; prefer `/dev/serial/by-id/...` (stable across replugging).
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// The lane this device belongs to.
    pub lane: String,
    /// `scanner` or `escpos`.
    pub kind: SerialKind,
    /// Data bits: 5 to 8.
    pub data_bits: u8,
    /// `none`, `odd` or `even`.
    pub parity: String,
    /// 1 or 2.
    pub stop_bits: u8,
    /// `none`, `software` or `hardware`.
    pub flow_control: String,
    /// For `escpos`: the serial device of the real printer, to which every byte is passed.
    pub printer_path: Option<PathBuf>,
    /// For `escpos`: the receipt profile that reads the printed text.
    pub profile: Option<String>,
    /// For `escpos`: the code page assumed until the printer stream selects one.
    pub code_page: String,
    /// For `escpos`: milliseconds without bytes that end a receipt when no cut comes.
    pub idle_gap_ms: u64,
    /// For `scanner`: the longest line accepted; a longer one (no CR/LF: wrong baud rate or
    /// suffix setting) is dropped and reported.
    pub max_line_len: usize,
    /// For `escpos`: where the answers go (`print`, `mqtt` or `none`).
    pub answer: AnswerMode,
    /// For `escpos`: how the printer prints a QR code (`native` or `raster`).
    pub answer_qr: AnswerQr,
    /// For `escpos`: the paper width in millimetres (58 or 80).
    pub paper_width_mm: u32,
    /// For `escpos` with `answer = "print"`: milliseconds the till's next bytes are
    /// held after a cut while the gateway answers the receipt (then they pass on unanswered).
    pub answer_timeout_ms: u64,
    /// For `escpos`: the words of the printed answer.
    pub answer_labels: AnswerLabelsConfig,
}

impl Default for SerialConfig {
    fn default() -> Self {
        SerialConfig {
            name: String::new(),
            path: PathBuf::new(),
            baud: 9600,
            lane: String::new(),
            kind: SerialKind::Scanner,
            data_bits: 8,
            parity: "none".into(),
            stop_bits: 1,
            flow_control: "none".into(),
            printer_path: None,
            profile: None,
            code_page: "cp858".into(),
            idle_gap_ms: 2000,
            max_line_len: 512,
            answer: AnswerMode::default(),
            answer_qr: AnswerQr::default(),
            paper_width_mm: 58,
            answer_timeout_ms: 3000,
            answer_labels: AnswerLabelsConfig::default(),
        }
    }
}

fn check_code_page(code_page: &str, path: &str, errors: &mut Errors) {
    errors.check(
        loyalty_core::escpos::CodePage::from_name(code_page).is_some(),
        format!("{path}.code_page"),
        format!(
            "must be one of {}",
            loyalty_core::escpos::CODE_PAGE_NAMES.join(", ")
        ),
    );
}

impl Section for SerialConfig {
    fn validate(&self, path: &str, config: &Config, errors: &mut Errors) {
        errors.check(!self.name.is_empty(), format!("{path}.name"), "required");
        errors.check(
            !self.path.as_os_str().is_empty(),
            format!("{path}.path"),
            "required: the device, preferably /dev/serial/by-id/...",
        );
        errors.check(!self.lane.is_empty(), format!("{path}.lane"), "required");
        errors.check(
            [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400].contains(&self.baud),
            format!("{path}.baud"),
            "must be a standard rate (1200 ... 230400)",
        );
        errors.check(
            (5..=8).contains(&self.data_bits),
            format!("{path}.data_bits"),
            "must be 5 to 8",
        );
        errors.check(
            ["none", "odd", "even"].contains(&self.parity.as_str()),
            format!("{path}.parity"),
            "must be none, odd or even",
        );
        errors.check(
            self.stop_bits == 1 || self.stop_bits == 2,
            format!("{path}.stop_bits"),
            "must be 1 or 2",
        );
        errors.check(
            ["none", "software", "hardware"].contains(&self.flow_control.as_str()),
            format!("{path}.flow_control"),
            "must be none, software or hardware",
        );
        if self.kind == SerialKind::Escpos {
            errors.check(
                self.printer_path.is_some(),
                format!("{path}.printer_path"),
                "required for kind = \"escpos\": the real printer's serial device",
            );
            check_capture(
                self.profile.as_deref(),
                &self.code_page,
                self.idle_gap_ms,
                path,
                config,
                errors,
            );
            check_answers(self.paper_width_mm, self.answer_timeout_ms, path, errors);
        }
        errors.check(
            (16..=65_536).contains(&self.max_line_len),
            format!("{path}.max_line_len"),
            "must be between 16 and 65536",
        );
    }
}

/// What every printer stream (serial tap or network proxy) needs: a known receipt profile, a
/// known code page and a sane idle gap.
fn check_capture(
    profile: Option<&str>,
    code_page: &str,
    idle_gap_ms: u64,
    path: &str,
    config: &Config,
    errors: &mut Errors,
) {
    check_profile(profile, path, config, errors);
    check_code_page(code_page, path, errors);
    errors.check(
        (50..=600_000).contains(&idle_gap_ms),
        format!("{path}.idle_gap_ms"),
        "must be between 50 and 600000",
    );
}

/// What a printed answer needs: a known paper width and a bounded hold of the till's bytes.
fn check_answers(paper_width_mm: u32, answer_timeout_ms: u64, path: &str, errors: &mut Errors) {
    errors.check(
        paper_width_mm == 58 || paper_width_mm == 80,
        format!("{path}.paper_width_mm"),
        "must be 58 or 80",
    );
    errors.check(
        (100..=30_000).contains(&answer_timeout_ms),
        format!("{path}.answer_timeout_ms"),
        "must be between 100 and 30000: the till's next receipt waits this long at most",
    );
}

/// Where each lane's answers reach the customer, for the issuing rules: a lane with a printer
/// stream that prints answers reaches her on paper; one whose printer streams all say
/// `answer = "none"` reaches nobody (it converts no points into vouchers); every other lane
/// (MQTT tills, `answer = "mqtt"`: a display or an in-process observer listens) on a screen.
/// Lanes not listed: on a screen.
pub fn lane_reach(
    config: &Config,
) -> std::collections::BTreeMap<String, loyalty_core::voucher::issue::LaneReach> {
    use loyalty_core::voucher::issue::LaneReach;
    let printers = config
        .serial
        .iter()
        .filter(|s| s.kind == SerialKind::Escpos)
        .map(|s| (&s.lane, s.answer))
        .chain(config.printer_proxy.iter().map(|p| (&p.lane, p.answer)));
    let mut reach = std::collections::BTreeMap::new();
    for (lane, mode) in printers {
        let this = match mode {
            AnswerMode::Print => LaneReach::Paper,
            AnswerMode::Mqtt => LaneReach::Screen,
            AnswerMode::None => LaneReach::Nowhere,
        };
        let entry = reach.entry(lane.clone()).or_insert(this);
        // The best way any of the lane's printers reaches the customer.
        *entry = match (*entry, this) {
            (LaneReach::Paper, _) | (_, LaneReach::Paper) => LaneReach::Paper,
            (LaneReach::Screen, _) | (_, LaneReach::Screen) => LaneReach::Screen,
            _ => LaneReach::Nowhere,
        };
    }
    reach
}

fn check_profile(profile: Option<&str>, path: &str, config: &Config, errors: &mut Errors) {
    match profile {
        None => errors.push(
            format!("{path}.profile"),
            "required: the name of a [receipt_profiles.NAME] table",
        ),
        Some(name) => errors.check(
            config.receipt_profiles.contains_key(name),
            format!("{path}.profile"),
            format!("no [receipt_profiles.{name}] table is defined"),
        ),
    }
}

/// A network printer proxied on raw TCP (port 9100).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PrinterProxyConfig {
    /// Name used in health and metrics.
    pub name: String,
    /// Where the till connects, `0.0.0.0:9100`.
    pub listen: String,
    /// The real printer, `192.0.2.10:9100`.
    pub printer: String,
    /// The lane the printer belongs to.
    pub lane: String,
    /// Receipt profile name.
    pub profile: Option<String>,
    /// Code page until the stream selects one.
    pub code_page: String,
    /// Milliseconds without bytes that end a receipt when no cut comes.
    pub idle_gap_ms: u64,
    /// Till connections served at once; more are refused (closed) until one ends.
    pub max_connections: usize,
    /// Milliseconds to wait for the real printer to accept a connection before the till's
    /// connection is closed.
    pub connect_timeout_ms: u64,
    /// Where the answers go (`print`, `mqtt` or `none`).
    pub answer: AnswerMode,
    /// For printer streams: how the printer prints a QR code (`native` or `raster`).
    pub answer_qr: AnswerQr,
    /// The paper width in millimetres (58 or 80).
    pub paper_width_mm: u32,
    /// With `answer = "print"`: milliseconds the till's next bytes are
    /// held after a cut while the gateway answers the receipt (then they pass on unanswered).
    pub answer_timeout_ms: u64,
    /// The words of the printed answer.
    pub answer_labels: AnswerLabelsConfig,
}

impl Default for PrinterProxyConfig {
    fn default() -> Self {
        PrinterProxyConfig {
            name: String::new(),
            listen: "0.0.0.0:9100".into(),
            printer: String::new(),
            lane: String::new(),
            profile: None,
            code_page: "cp858".into(),
            idle_gap_ms: 2000,
            max_connections: 8,
            connect_timeout_ms: 3000,
            answer: AnswerMode::default(),
            answer_qr: AnswerQr::default(),
            paper_width_mm: 58,
            answer_timeout_ms: 3000,
            answer_labels: AnswerLabelsConfig::default(),
        }
    }
}

impl Section for PrinterProxyConfig {
    fn validate(&self, path: &str, config: &Config, errors: &mut Errors) {
        errors.check(!self.name.is_empty(), format!("{path}.name"), "required");
        errors.check(
            self.listen.parse::<std::net::SocketAddr>().is_ok(),
            format!("{path}.listen"),
            "must be address:port such as \"0.0.0.0:9100\"",
        );
        errors.check(
            self.printer
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
            format!("{path}.printer"),
            "must be host:port of the real printer",
        );
        errors.check(!self.lane.is_empty(), format!("{path}.lane"), "required");
        check_capture(
            self.profile.as_deref(),
            &self.code_page,
            self.idle_gap_ms,
            path,
            config,
            errors,
        );
        check_answers(self.paper_width_mm, self.answer_timeout_ms, path, errors);
        errors.check(
            (1..=1000).contains(&self.max_connections),
            format!("{path}.max_connections"),
            "must be between 1 and 1000",
        );
        errors.check(
            (100..=120_000).contains(&self.connect_timeout_ms),
            format!("{path}.connect_timeout_ms"),
            "must be between 100 and 120000",
        );
    }
}

impl Section for ReceiptProfileConfig {
    fn validate(&self, path: &str, _config: &Config, errors: &mut Errors) {
        let patterns = [
            ("item_line", Some(&self.item_line), Some("amount")),
            ("qty_line", self.qty_line.as_ref(), Some("qty")),
            ("total", Some(&self.total), Some("total")),
            ("receipt_id", Some(&self.receipt_id), Some("receipt_id")),
            ("date", self.date.as_ref(), Some("date")),
            ("card", self.card.as_ref(), Some("card")),
            ("return_marker", self.return_marker.as_ref(), None),
        ];
        for (field, pattern, group) in patterns {
            let Some(pattern) = pattern else { continue };
            match regex::Regex::new(pattern) {
                Err(err) => errors.push(
                    format!("{path}.{field}"),
                    format!("not a valid pattern: {err}"),
                ),
                Ok(re) => {
                    if let Some(group) = group {
                        errors.check(
                            re.capture_names().flatten().any(|n| n == group),
                            format!("{path}.{field}"),
                            format!("the pattern needs a named group (?P<{group}>...)"),
                        );
                    }
                }
            }
        }
        for (index, pattern) in self.ignore.iter().enumerate() {
            if let Err(err) = regex::Regex::new(pattern) {
                errors.push(
                    format!("{path}.ignore[{index}]"),
                    format!("not a valid pattern: {err}"),
                );
            }
        }
        errors.check(
            self.decimal_separator == "." || self.decimal_separator == ",",
            format!("{path}.decimal_separator"),
            "must be \".\" or \",\"",
        );
        errors.check(
            self.receipt_id_format.contains("{receipt_id}"),
            format!("{path}.receipt_id_format"),
            "must contain {receipt_id} (and may contain {lane})",
        );
        errors.check(
            self.date.is_none() || self.date_format.is_some(),
            format!("{path}.date_format"),
            "required when date is set, e.g. \"%d.%m.%Y\"",
        );
        for (index, prefix) in self.pan_exempt_prefixes.iter().enumerate() {
            errors.check(
                !prefix.is_empty()
                    && prefix.bytes().all(|b| b.is_ascii_digit())
                    && !loyalty_core::escpos::prefix_overlaps_payment_cards(prefix),
                format!("{path}.pan_exempt_prefixes[{index}]"),
                "must be digits outside payment card ranges (not starting with 1, 3, 4, 5, 6 \
                 or 2221-2720): payment card numbers are always masked",
            );
        }
    }
}

/// Lane session windows, and which lanes the gateway serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LanesConfig {
    /// Seconds a scanned card waits for the lane's next receipt.
    pub card_before_receipt_secs: u64,
    /// Seconds after a card-less receipt during which a scanned card attaches to it.
    pub card_after_receipt_secs: u64,
    /// The lanes of this store. When listed, only these are served (an input for another lane
    /// gets an `unknown_lane` error); when empty, any lane a topic names is served, up to
    /// `max_lanes`.
    pub names: Vec<String>,
    /// Most lanes served at once when `names` is empty (beyond: a `too_many_lanes` error).
    pub max_lanes: usize,
    /// Seconds without input after which a lane's actor is stopped (it starts again with the
    /// lane's next input). Longer than both card windows, so no held card or open retroactive
    /// window is dropped by it.
    pub idle_evict_secs: u64,
}

impl Default for LanesConfig {
    fn default() -> Self {
        LanesConfig {
            card_before_receipt_secs: 300,
            card_after_receipt_secs: 120,
            names: Vec::new(),
            max_lanes: 64,
            idle_evict_secs: 900,
        }
    }
}

impl LanesConfig {
    /// How long a lane may be idle before its actor stops.
    pub fn idle_evict(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.idle_evict_secs)
    }
}

impl Section for LanesConfig {
    fn validate(&self, path: &str, config: &Config, errors: &mut Errors) {
        if !self.names.is_empty() {
            // A device on a lane that is not served would have every input refused.
            let devices = config
                .serial
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("serial[{i}].lane"), &d.lane))
                .chain(
                    config
                        .printer_proxy
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (format!("printer_proxy[{i}].lane"), &p.lane)),
                );
            for (key, lane) in devices {
                errors.check(
                    self.names.contains(lane),
                    key,
                    format!("lane {lane:?} is not in {path}.names"),
                );
            }
        }
        errors.check(
            (1..=86_400).contains(&self.card_before_receipt_secs),
            format!("{path}.card_before_receipt_secs"),
            "must be between 1 and 86400",
        );
        errors.check(
            self.card_after_receipt_secs <= 3600,
            format!("{path}.card_after_receipt_secs"),
            "must be at most 3600",
        );
        errors.check(
            (1..=1024).contains(&self.max_lanes),
            format!("{path}.max_lanes"),
            "must be between 1 and 1024",
        );
        let windows = self
            .card_before_receipt_secs
            .max(self.card_after_receipt_secs);
        errors.check(
            self.idle_evict_secs > windows && self.idle_evict_secs <= 7 * 86_400,
            format!("{path}.idle_evict_secs"),
            format!(
                "must be longer than both card windows ({windows} s here) and at most 604800: \
                 an evicted lane forgets a held card"
            ),
        );
        errors.check(
            self.names.len() <= 1024,
            format!("{path}.names"),
            "at most 1024 lanes",
        );
        let mut seen = std::collections::BTreeSet::new();
        for (index, name) in self.names.iter().enumerate() {
            errors.check(
                !name.is_empty() && !name.contains(['/', '+', '#']),
                format!("{path}.names[{index}]"),
                "must be a non-empty MQTT topic level (no '/', '+' or '#')",
            );
            errors.check(
                seen.insert(name.as_str()),
                format!("{path}.names[{index}]"),
                format!("lane {name:?} is listed twice"),
            );
        }
    }
}
