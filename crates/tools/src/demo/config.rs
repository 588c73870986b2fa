//! The demo store's configuration: `config/gateway.toml`'s sections with demo-sized values,
//! and the serial printer tap of lane 5 with its receipt profile.

use super::STORE_ID;
use std::path::Path;

/// The receipt profile that reads it (the example profile of `config/gateway.toml`).
const RECEIPT_PROFILE: &str = r#"
[receipt_profiles.example]
item_line = '^(?:(?P<sku>\d{8,14}) )?(?P<name>\S.*?)\s{2,}(?P<amount>-?\d{1,3}(?:\.\d{3})*,\d{2}-?) [AB]$'
qty_line = '^\s+(?P<qty>\d+(?:,\d{1,3})?)(?: kg)? x (?P<unit_price>\d+,\d{2})'
total = '^SUMME EUR\s+(?P<total>-?\d{1,3}(?:\.\d{3})*,\d{2})$'
receipt_id = '^Bon-Nr\.:\s*(?P<receipt_id>\d+)'
receipt_id_format = "{lane}-{receipt_id}"
date = '^Datum:\s*(?P<date>\d{2}\.\d{2}\.\d{4})\s+(?P<time>\d{2}:\d{2})'
date_format = "%d.%m.%Y"
time_format = "%H:%M"
card = '^Kundenkarte:\s*(?P<card>\d{8,19})$'
return_marker = '^RÜCKGABE zu Bon-Nr\.\s*(?P<original>\d+)'
ignore = ['^MwSt ', '^Zwischensumme']
decimal_separator = ","
"#;

/// Lane 5's answers go to MQTT only (`answer = "mqtt"`): the demo shows them from there, and
/// its printer receives exactly the till's bytes.
fn serial_tap_config(till_side: &Path, printer_side: &Path) -> String {
    format!(
        "[[serial]]\nname = \"lane5-printer\"\nkind = \"escpos\"\npath = \"{}\"\nprinter_path = \"{}\"\n\
         lane = \"5\"\nbaud = 38400\nprofile = \"example\"\ncode_page = \"cp858\"\nidle_gap_ms = 1000\n\
         answer = \"mqtt\"\n{RECEIPT_PROFILE}",
        till_side.display(),
        printer_side.display()
    )
}

pub(super) fn demo_config(data_dir: &Path, broker_port: Option<u16>, crm: &str) -> String {
    // Keep in step with `config/gateway.toml`: the same sections, demo-sized values.
    let mqtt = match broker_port {
        Some(port) => format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_min_ms = 50\n"),
        None => "[mqtt]\nenabled = false\n".into(),
    };
    format!(
        r#"[store]
id = "{STORE_ID}"
name = "Demo store"
timezone = "Europe/Berlin"
currency = "EUR"
# This machine may not run NTP; the clock is then judged by its floor alone.
require_ntp_sync = false

[storage]
data_dir = "{data}"

{mqtt}
[cards]
prefixes = ["299"]

[rules]
points_per_unit = 1
per_amount = "1.00"
categories = ["food", "fresh", "drugstore", "stationery", "books", "tobacco", "deposit"]
excluded_categories = ["tobacco", "deposit"]
excluded_gtin_prefixes = ["978", "979"]

[rules.category_multipliers]
fresh = "2"

[rewards]
signing_key_file = "{key}"
# Generous for a demo: every 30 points become a 3.00 voucher.
rules = [{{ every_points = 30, value = "3.00", validity_days = 30 }}]

[redeem]
# Paying with points: 10 points are 1.00 off.
point_value = "0.10"

{crm}
{tap}
[http]
enabled = false
"#,
        data = data_dir.join("gateway").display(),
        key = data_dir.join("voucher-signing.key").display(),
        tap = serial_tap_config(&data_dir.join("till-side"), &data_dir.join("printer-side"))
    )
}
