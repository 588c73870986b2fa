//! The command line as operators use it: `check-config` on the shipped configuration and on a
//! configuration with typos, `--version`.

use loyalty_tools::testkit::GatewayBinary;
use std::process::Command;

/// The binary under test.
fn gateway_binary() -> GatewayBinary {
    GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
}

#[test]
fn shipped_configuration_passes_check_config() {
    let output = Command::new(gateway_binary())
        .args(["check-config", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.toml"))
        .output()
        .expect("run check-config");
    assert!(
        output.status.success(),
        "config/gateway.toml fails check-config:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A store installed from the shipped configuration issues vouchers: `[rewards]` has a rule and
/// the key path the Debian package's postinst creates.
#[test]
fn shipped_configuration_issues_vouchers_with_the_packaged_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.toml");
    let config = loyalty_daemon::config::load(std::path::Path::new(path))
        .unwrap_or_else(|errors| panic!("{errors:#?}"));
    assert!(!config.rewards.rules.is_empty(), "no [[rewards.rules]]");
    let key = "/var/lib/loyalty-gateway/store.key";
    assert_eq!(
        config.rewards.signing_key_file.as_deref(),
        Some(std::path::Path::new(key))
    );
    let postinst = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/debian/postinst"))
        .expect("debian/postinst");
    assert!(
        postinst.contains("key=\"$STATE_DIR/store.key\"")
            && postinst.contains("STATE_DIR=/var/lib/loyalty-gateway")
            && postinst.contains("keys generate --out \"$key\""),
        "postinst must create {key}"
    );
}

#[test]
fn check_config_names_every_error_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        "[store]\nid = \"berlin 001\"\ntimezone = \"Europe/Berlin\"\n\n[mqtt]\nurll = \"mqtt://x\"\n\n[storage]\ncache_capacity_mb = \"lots\"\n",
    )
    .expect("write");
    let output = Command::new(gateway_binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run check-config");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "store.id (line 2)",
        "mqtt.urll (line 6): unknown key",
        "storage.cache_capacity_mb (line 9)",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn missing_configuration_file_is_a_clear_error() {
    let output = Command::new(gateway_binary())
        .args(["check-config", "--config", "/nonexistent/gateway.toml"])
        .output()
        .expect("run check-config");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read configuration file"));
}

#[test]
fn version_prints_the_crate_version() {
    let output = Command::new(gateway_binary())
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// `seed-test-customers` fills an empty store for measurements (`cross/measure.sh`), and
/// refuses a store that already holds customers.
#[test]
fn seed_test_customers_fills_an_empty_store_and_refuses_a_used_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nid = \"m\"\ntimezone = \"Europe/Berlin\"\n[storage]\ndata_dir = \"{}\"\n\
             [mqtt]\nenabled = false\n[cards]\nprefixes = [\"299\"]\n",
            data.display()
        ),
    )
    .expect("config");
    let seed = |count: &str| {
        Command::new(gateway_binary())
            .args(["seed-test-customers", "--count", count, "--config"])
            .arg(&config)
            .output()
            .expect("run seed-test-customers")
    };
    let output = seed("2500");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("seeded 2500 test customers"));
    {
        let storage = loyalty_daemon::config::StorageConfig {
            data_dir: data.clone(),
            ..Default::default()
        };
        let store = loyalty_store::Store::open(&storage, "m").expect("open");
        for card in ["2990000000000", "2990000002499"] {
            assert!(
                store.customer_by_card(card).expect("lookup").is_some(),
                "card {card} seeded"
            );
        }
        assert!(store
            .customer_by_card("2990000002500")
            .expect("lookup")
            .is_none());
    }
    let again = seed("10");
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds customers"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
