//! Configuration parsing tests: every error is collected with its key path and line.

use super::*;

const MINIMAL: &str = r#"
[store]
id = "berlin-001"
timezone = "Europe/Berlin"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let config = parse(MINIMAL).expect("valid");
    assert_eq!(config.store.id, "berlin-001");
    assert_eq!(config.store.currency, "EUR");
    assert_eq!(config.topic_prefix(), "loyalty/berlin-001");
    assert_eq!(config.storage.cache_capacity_mb, 16);
}

#[test]
fn every_error_is_reported_with_path_and_line() {
    let text = r#"[store]
id = "berlin-001"
timezone = "Mars/Olympus"
curency = "EUR"

[mqtt]
url = "http://broker"
keep_alive_secs = "thirty"

[[serial]]
name = "scanner-1"
path = "/dev/ttyUSB0"
lane = "1"
baud = 9601
colour = "blue"
"#;
    let errors = parse(text).expect_err("invalid");
    let find = |path: &str| {
        errors
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error for {path}: {errors:#?}"))
    };
    assert_eq!(find("store.curency").line, Some(4));
    assert_eq!(find("store.timezone").line, Some(3));
    assert_eq!(find("mqtt.keep_alive_secs").line, Some(8));
    assert_eq!(find("serial[0].colour").line, Some(15));
    assert_eq!(find("serial[0].baud").line, Some(14));
    // The URL is checked after the type error in the same table was set aside.
    assert_eq!(find("mqtt.url").line, Some(7));
}

#[test]
fn syntax_errors_name_the_line() {
    let errors = parse("[store]\nid = \"x\"\nname = \n").expect_err("invalid");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, Some(3));
}

#[test]
fn config_file_errors_carry_the_rules_key_path_and_line() {
    let text = r#"[store]
id = "berlin-001"
timezone = "Europe/Berlin"

[rules]
categories = ["food"]

[[rules.promotions]]
name = "weekend"
weekdays = ["sat", "sunday"]
factor = "2"
"#;
    let errors = parse(text).expect_err("invalid");
    let error = errors
        .iter()
        .find(|e| e.path == "rules.promotions[0].weekdays[1]")
        .unwrap_or_else(|| panic!("{errors:#?}"));
    assert_eq!(error.line, Some(10));
    assert!(error.message.contains("'sunday'"));
}

#[test]
fn config_file_errors_carry_the_cards_key_path() {
    let text = "[store]\nid = \"berlin-001\"\n\n[cards]\nprefixes = [\"299\", \"99\"]\n";
    let errors = parse(text).expect_err("invalid");
    let error = errors
        .iter()
        .find(|e| e.path == "cards.prefixes[1]")
        .unwrap_or_else(|| panic!("{errors:#?}"));
    assert_eq!(error.line, Some(5));
}

#[test]
fn lane_limits_are_validated_by_key() {
    let config = parse(MINIMAL).expect("valid");
    assert!(config.lanes.names.is_empty());
    assert_eq!(config.lanes.max_lanes, 64);
    assert_eq!(config.lanes.idle_evict_secs, 900);
    let text = r#"[store]
id = "berlin-001"
timezone = "Europe/Berlin"

[lanes]
names = ["1", "2", "2", "x/y"]
max_lanes = 5000
card_before_receipt_secs = 600
idle_evict_secs = 600

[[serial]]
name = "scanner-1"
path = "/dev/ttyUSB0"
lane = "7"
"#;
    let errors = parse(text).expect_err("invalid");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for key in [
        "lanes.max_lanes",
        "lanes.idle_evict_secs",
        "lanes.names[2]",
        "lanes.names[3]",
        "serial[0].lane",
    ] {
        assert!(paths.contains(&key), "no error for {key}: {errors:#?}");
    }
    assert!(!paths.contains(&"lanes.names[1]"), "{errors:#?}");
}

#[test]
fn the_built_layer_holds_what_was_built_at_load() {
    let text = r#"[store]
id = "berlin-001"
timezone = "Europe/Berlin"

[cards]
prefixes = ["299"]

[rules]
points_per_unit = 2

[receipt_profiles.simple]
item_line = '^(?P<name>\S.*?)\s{2,}(?P<amount>-?\d+,\d{2})$'
total = '^SUMME EUR\s+(?P<total>-?\d+,\d{2})$'
receipt_id = '^Bon-Nr\.: (?P<receipt_id>\d+)$'
"#;
    let built = parse_built(text).expect("valid");
    assert_eq!(built.raw.store.id, "berlin-001");
    assert_eq!(
        built.rules,
        loyalty_core::rules::EarningRules::from_config(&built.raw.rules, "EUR").expect("rules")
    );
    assert!(built.receipt_profiles.contains_key("simple"));
    assert!(built.cards.is_program_number("2990000000019"));
    assert!(!built.cards.is_program_number("4006381333931"));
    // The same configuration assembled in code builds the same way, and so do its errors.
    let again = Built::new(built.raw.clone()).expect("valid");
    assert_eq!(again.rules, built.rules);
    let mut bad = built.raw.clone();
    bad.cards.prefixes = vec!["299".into(), "99".into()];
    bad.rules.points_per_unit = -1;
    let errors = Built::new(bad).expect_err("invalid");
    assert!(
        errors
            .iter()
            .any(|e| e.path == "cards.prefixes[1]" && e.line.is_none()),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.path == "rules.points_per_unit"),
        "{errors:#?}"
    );
}

#[test]
fn trusted_keys_are_parsed_once_at_load() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]).verifying_key();
    let text = format!(
        "[store]\nid = \"S1\"\n\n[[rewards.trusted_keys]]\nkey_id = \"ho-2026\"\npublic_key = \"{}\"\n",
        loyalty_core::voucher::keys::public_key_base64(&key)
    );
    let built = parse_built(&text).expect("valid");
    assert_eq!(built.trusted_keys, vec![("ho-2026".to_string(), key)]);
    let errors =
        parse_built(&text.replace("public_key = \"", "public_key = \"x")).expect_err("invalid");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "rewards.trusted_keys[0].public_key");
    assert_eq!(errors[0].line, Some(6));
}

#[test]
fn head_office_lookup_and_long_poll_are_validated_by_key() {
    let config = parse(MINIMAL).expect("valid");
    assert_eq!(config.crm.feed_wait_secs, 25);
    assert_eq!(config.crm.lookup_timeout_ms, 300);
    let text = r#"[store]
id = "berlin-001"
timezone = "Europe/Berlin"

[crm]
enabled = true
url = "https://crm.example.com"
client_cert_file = "/etc/c.pem"
client_key_file = "/etc/c.key"
ca_file = "/etc/ca.pem"
feed_wait_secs = 301
lookup_timeout_ms = 60000
"#;
    let errors = parse(text).expect_err("invalid");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for key in ["crm.feed_wait_secs", "crm.lookup_timeout_ms"] {
        assert!(paths.contains(&key), "no error for {key}: {errors:#?}");
    }
    let off =
        parse(&text.replace("= 301", "= 0").replace("= 60000", "= 0")).expect("0 turns both off");
    assert_eq!((off.crm.feed_wait_secs, off.crm.lookup_timeout_ms), (0, 0));
}

#[test]
fn receipt_retention_must_outlast_the_return_window() {
    let with = |retention: u32| {
        format!("{MINIMAL}[storage]\nreceipt_retention_days = {retention}\n[rules]\nvesting_days = 14\n")
    };
    let errors = parse(&with(14)).expect_err("not longer than the window");
    let error = errors
        .iter()
        .find(|e| e.path == "storage.receipt_retention_days")
        .unwrap_or_else(|| panic!("{errors:#?}"));
    assert!(
        error.message.contains("rules.vesting_days = 14"),
        "{error:?}"
    );
    assert_eq!(
        parse(&with(400))
            .expect("valid")
            .storage
            .receipt_retention_days,
        400
    );
    assert!(parse(&with(0)).is_ok(), "0 keeps receipts for ever");
}

#[test]
fn printer_answers_are_checked_and_each_lane_gets_its_reach() {
    use loyalty_core::voucher::issue::LaneReach;
    let profile = "[receipt_profiles.p]\nitem_line = '^(?P<name>.+) (?P<amount>\\d+\\.\\d\\d)$'\n\
                   total = '^TOTAL (?P<total>\\d+\\.\\d\\d)$'\nreceipt_id = '^No (?P<receipt_id>\\d+)$'\n";
    let proxy = |name: &str, lane: &str, extra: &str| {
        format!(
            "[[printer_proxy]]\nname = \"{name}\"\nlisten = \"127.0.0.1:9100\"\n\
             printer = \"192.0.2.1:9100\"\nlane = \"{lane}\"\nprofile = \"p\"\n{extra}\n"
        )
    };
    let text = format!(
        "{MINIMAL}{}{}{}{}{profile}",
        proxy("a", "1", ""),
        proxy("b", "2", "answer = \"none\""),
        proxy("c", "3", "answer = \"mqtt\""),
        proxy("d", "3", "answer = \"none\""),
    );
    let config = parse(&text).expect("valid");
    let reach = lane_reach(&config);
    assert_eq!(reach.get("1"), Some(&LaneReach::Paper));
    assert_eq!(reach.get("2"), Some(&LaneReach::Nowhere));
    assert_eq!(reach.get("3"), Some(&LaneReach::Screen));
    assert_eq!(reach.get("9"), None, "MQTT lanes: a screen (the default)");
    let bad = format!(
        "{MINIMAL}{}{profile}",
        proxy(
            "a",
            "1",
            "answer = \"fax\"\npaper_width_mm = 60\nanswer_timeout_ms = 5"
        )
    );
    let errors = parse(&bad).expect_err("invalid");
    for key in [
        "printer_proxy[0].answer",
        "printer_proxy[0].paper_width_mm",
        "printer_proxy[0].answer_timeout_ms",
    ] {
        assert!(errors.iter().any(|e| e.path == key), "{key}: {errors:#?}");
    }
}

#[test]
fn paying_with_points_is_configured_and_validated_by_key() {
    let config = parse(MINIMAL).expect("valid");
    let value = config.redeem.point_value(2);
    assert_eq!(value.minor_per_point, 1, "0.01 a point by default");
    assert_eq!(config.redeem.reservation_secs, 900);
    let text = "[store]\nid = \"S1\"\n\n[redeem]\npoint_value = \"0.10\"\nreservation_secs = 60\n";
    let config = parse(text).expect("valid");
    assert_eq!(config.redeem.point_value(2).minor_per_point, 10);
    assert_eq!(config.redeem.reservation().as_secs(), 60);
    let text = "[store]\nid = \"S1\"\n\n[redeem]\npoint_value = \"0.001\"\nmax_points = 0\nreservation_secs = 1\nvalue = 1\n";
    let errors = parse(text).expect_err("invalid");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for key in [
        "redeem.point_value",
        "redeem.max_points",
        "redeem.reservation_secs",
        "redeem.value",
    ] {
        assert!(paths.contains(&key), "no error for {key}: {errors:#?}");
    }
}
