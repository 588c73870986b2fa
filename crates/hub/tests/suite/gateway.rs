//! End to end: the gateway's real store and sync (its uploader and feed, `[crm]` pointing at a
//! real `loyalty-hub`) syncing receipts; and the command line's `check-config`.

use crate::support::*;
use loyalty_core::ledger::EarningPolicy;
use loyalty_core::receipt::ValidReceipt;
use loyalty_store::ReceiptCustomer;
use loyalty_tools::testkit::crm::{self as crmkit, STORE};
use loyalty_tools::testkit::store::{line, sale, Policy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_gateway_syncs_its_receipts_to_the_hub_exactly_once_with_the_chain_balance() {
    let env = Env::new();
    let hub = env.hub("");
    let data = tempfile::tempdir().expect("tempdir");
    let url = format!("https://localhost:{}", hub.addr.port());
    let config = crmkit::config(&env.pki, &url, data.path());
    let store = crmkit::open_store(&config);
    let policy = Policy::default();
    let (sync, cancel) = crmkit::start(&config, &store);
    let mut customer = None;
    for i in 0..20 {
        let mut receipt = sale(&format!("R{i}"), vec![line("A", 1_250 + i * 100, None)]);
        receipt.card = Some("4000000000042".into());
        let valid = ValidReceipt::check(receipt, policy.limits()).expect("valid");
        let applied = store
            .apply_valid_receipt(
                &valid,
                ReceiptCustomer::Card {
                    card: "4000000000042",
                    enrol: true,
                },
                &policy,
                None,
                loyalty_tools::testkit::store::now(),
            )
            .expect("apply");
        customer = applied.outcome.customer_id.clone();
    }
    let customer = customer.expect("enrolled");
    // A sale without a customer: its lines reach head office (hers, of unknown consent, not).
    let anonymous = sale("ANON", vec![line("A", 300, None), line("B", 400, None)]);
    let valid = ValidReceipt::check(anonymous, policy.limits()).expect("valid");
    store
        .apply_valid_receipt(
            &valid,
            ReceiptCustomer::FromReceipt,
            &policy,
            None,
            loyalty_tools::testkit::store::now(),
        )
        .expect("apply");
    let last = store.outbox_stats().expect("stats").last_seq;
    let status = sync.status();
    crmkit::wait_status(&status, |s| s.acked_through >= last).await;
    let sql = env.sql().await;
    let stored: Vec<(i64, String)> = sql
        .query(
            "SELECT seq, event_id FROM store_events WHERE store_id = $1 ORDER BY seq",
            &[&STORE],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let local: Vec<(i64, String)> = crmkit::outbox_ids(&store)
        .into_iter()
        .map(|(seq, id)| (seq as i64, id))
        .collect();
    assert_eq!(stored, local, "the hub holds exactly the gateway's outbox");
    let hub_balance = count(
        &sql,
        &format!("SELECT coalesce(sum(points), 0)::bigint FROM ledger_entries WHERE customer_id = '{customer}'"),
    )
    .await;
    let local = store
        .balance(&customer, loyalty_tools::testkit::store::now())
        .expect("balance");
    assert_eq!(hub_balance, local.total);
    assert_eq!(count(&sql, "SELECT count(*) FROM receipts").await, 21);
    // Her consent is unknown (enrolled at the till): her receipts come without lines.
    assert_eq!(
        count(&sql, "SELECT count(*) FROM receipt_lines").await,
        2,
        "only the anonymous sale's lines"
    );
    assert_eq!(
        count(
            &sql,
            "SELECT count(*) FROM receipt_lines WHERE customer_key = 'store:S042'"
        )
        .await,
        2
    );
    // The feed brings the store its own customer back with the hub's balance.
    crmkit::wait_status(&status, |s| s.feed_pages_applied >= 1).await;
    cancel.cancel();
}

#[test]
fn check_config_names_every_error_by_key_path_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hub.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"nowhere\"\ncert_file = \"/no/cert\"\nkey_file = \"/no/key\"\nclient_ca_file = \"/no/ca\"\n[database]\nhost = \"db\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loyalty-hub"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.listen",
        "server.cert_file",
        "server.client_ca_file",
        "database.user",
        "database.dbname",
    ] {
        assert!(stderr.contains(key), "{key} missing: {stderr}");
    }
    // The shipped example is valid except for the files it names on a real server.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/hub.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loyalty-hub"))
        .args(["check-config", "--config", shipped])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().skip(1) {
        assert!(
            line.contains("_file:"),
            "unexpected error in config/hub.toml: {line}"
        );
    }
}
