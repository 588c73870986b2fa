//! The command line as operators use it: `check-config` on the shipped configuration and on a
//! configuration with typos, `--version`.

mod harness;

use std::process::Command;

#[test]
fn shipped_configuration_passes_check_config() {
    let output = Command::new(harness::gateway_binary())
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

#[test]
fn check_config_names_every_error_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        "[store]\nid = \"berlin 001\"\ntimezone = \"Europe/Berlin\"\n\n[mqtt]\nurll = \"mqtt://x\"\n\n[storage]\ncache_capacity_mb = \"lots\"\n",
    )
    .expect("write");
    let output = Command::new(harness::gateway_binary())
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
    let output = Command::new(harness::gateway_binary())
        .args(["check-config", "--config", "/nonexistent/gateway.toml"])
        .output()
        .expect("run check-config");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read configuration file"));
}

#[test]
fn version_prints_the_crate_version() {
    let output = Command::new(harness::gateway_binary())
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}
