//! The operator commands on real stores, run as the `loyalty-gateway` binary (or, for
//! `verify`, as the daemon's command function): `compact`, `verify`, `keys generate`/`keys
//! public` and `voucher goodwill`. Moved here from the store's and the daemon's tests, which
//! cannot run the binary.

use loyalty_core::money::Money;
use loyalty_core::voucher::Benefit;
use loyalty_store::events::EventType;
use loyalty_store::Store;
use loyalty_tools::testkit::store::*;
use loyalty_tools::testkit::GatewayBinary;
use std::os::unix::fs::PermissionsExt;

/// The binary under test.
fn gateway_binary() -> GatewayBinary {
    GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
}

/// `loyalty-gateway compact --config C` for a store whose data dir is `dir`.
fn compact_cli(dir: &std::path::Path) -> std::process::Output {
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nid = \"S1\"\ntimezone = \"Europe/Berlin\"\n[storage]\ndata_dir = \"{}\"\n\
             [mqtt]\nenabled = false\n[http]\nenabled = false\n",
            dir.display()
        ),
    )
    .expect("write config");
    gateway_binary()
        .command()
        .args(["compact", "--config"])
        .arg(&config)
        .output()
        .expect("run loyalty-gateway compact")
}

#[test]
fn compact_command_compacts_a_stopped_store_and_refuses_a_running_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (c, last) = database_with_free_segments(dir.path());
    // The database is open (as by a running daemon): refused, with what to do, nothing changed.
    let store = open(dir.path());
    let refused = compact_cli(dir.path());
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is another gateway running?"), "{stderr}");
    assert_everything_kept(&store, &c, last);
    drop(store);
    let size = |path: &std::path::Path| std::fs::metadata(path).expect("db file").len();
    let before = size(&dir.path().join("db/db"));
    let done = compact_cli(dir.path());
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(stdout.contains("compacted"), "{stdout}");
    assert!(size(&dir.path().join("db/db")) < before);
    assert!(dir.path().join("db.free-after-compaction").is_file());
    let store = open(dir.path());
    assert_everything_kept(&store, &c, last);
    drop(store);
    // No database there: an error naming the setting to check, nothing created.
    let empty = tempfile::tempdir().expect("tempdir");
    let missing = compact_cli(empty.path());
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("storage.data_dir"));
    assert!(!empty.path().join("db/db").exists());
}

#[test]
fn verify_command_exits_0_when_consistent_and_1_after_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[store]\nid = \"S1\"\n[storage]\ndata_dir = \"{}\"\n",
        dir.path().display()
    );
    let config = loyalty_daemon::config::parse(&text).expect("config");
    {
        let store = open(dir.path());
        let c = store.enroll("2990000000019", now()).expect("enroll").id;
        store
            .crm_adjustment(&c, 10, "a-1", "x", now())
            .expect("adjust");
        store
            .crm_adjustment(&c, 20, "a-2", "x", now())
            .expect("adjust");
    }
    let code = loyalty_daemon::commands::verify_command(config.clone()).expect("verify");
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    {
        let store = open(dir.path());
        store
            .raw_tree_for_tests("journal")
            .expect("tree")
            .remove(1u64.to_be_bytes())
            .expect("delete");
    }
    let code = loyalty_daemon::commands::verify_command(config).expect("verify");
    assert_eq!(code, std::process::ExitCode::from(1));
}

fn binary() -> std::process::Command {
    gateway_binary().command()
}

#[test]
fn keys_generate_writes_0600_and_a_loose_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("store.key");
    let out = binary()
        .args(["keys", "generate", "--out"])
        .arg(&key)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let public = std::fs::read_to_string(dir.path().join("store.key.pub")).expect("pub");
    assert!(String::from_utf8_lossy(&out.stdout).contains(public.trim()));

    // Generating again over it is refused, the key is unchanged.
    let before = std::fs::read(&key).expect("read");
    let again = binary()
        .args(["keys", "generate", "--out"])
        .arg(&key)
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert_eq!(std::fs::read(&key).expect("read"), before);

    // The key loads while 0600...
    let ok = binary()
        .args(["keys", "public", "--key"])
        .arg(&key)
        .output()
        .expect("run");
    assert!(ok.status.success());
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), public.trim());
    // ...and is refused at 0644 with the chmod to run.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let loose = binary()
        .args(["keys", "public", "--key"])
        .arg(&key)
        .output()
        .expect("run");
    assert!(!loose.status.success());
    let message = String::from_utf8_lossy(&loose.stderr);
    assert!(
        message.contains(&format!("chmod 600 {}", key.display())),
        "{message}"
    );
}
#[test]
fn goodwill_command_line_issues_and_refuses_above_the_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = &gateway_binary();
    let key = dir.path().join("store.key");
    let status = std::process::Command::new(bin)
        .args(["keys", "generate", "--out"])
        .arg(&key)
        .output()
        .expect("keys generate");
    assert!(status.status.success());
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(
        &config_path,
        format!(
            "[store]\nid = \"S042\"\ntimezone = \"Europe/Berlin\"\ncurrency = \"EUR\"\n\n\
             [storage]\ndata_dir = \"{}\"\n\n\
             [rewards]\nsigning_key_file = \"{}\"\ngoodwill_max_value = \"10.00\"\n",
            dir.path().join("data").display(),
            key.display()
        ),
    )
    .expect("config");
    let refused = std::process::Command::new(bin)
        .args(["voucher", "goodwill", "--value", "10.01", "--config"])
        .arg(&config_path)
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("goodwill_max_value"));
    assert!(
        !dir.path().join("data").exists(),
        "nothing written for a refused value"
    );

    let png = dir.path().join("v.png");
    let ok = std::process::Command::new(bin)
        .args([
            "voucher",
            "goodwill",
            "--value",
            "5.00",
            "--customer",
            "C-1",
            "--png",
        ])
        .arg(&png)
        .arg("--config")
        .arg(&config_path)
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let stdout = String::from_utf8_lossy(&ok.stdout);
    let text = stdout
        .lines()
        .find(|l| l.starts_with(loyalty_core::voucher::QR_PREFIX))
        .expect("voucher text printed")
        .to_string();
    let signed = loyalty_core::voucher::decode(&text).expect("decode");
    assert_eq!(signed.voucher.benefit, Benefit::AmountOff(Money(500)));
    assert!(std::fs::metadata(&png).expect("png").len() > 100);

    // Recorded in the store with its outbox event.
    let config = loyalty_daemon::config::load(&config_path).expect("config");
    let store = Store::open(&config.storage, "S042").expect("open");
    let issued = events_of(&store, EventType::VoucherIssued);
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["payload"]["text"], text.as_str());
    assert_eq!(issued[0]["payload"]["origin"], "goodwill");
}
