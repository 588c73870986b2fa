//! `loyalty-gateway demo --chain`: a chain on this machine. It starts a private PostgreSQL
//! cluster (the test harness's [`crate::testkit::Postgres`]), `loyalty-hub` in this process on
//! it, and two store gateways (stores A and B, lanes fed in-process) syncing to the hub over
//! mutual TLS with a throw-away PKI; then shows, printing what really happens: a customer who
//! earned in A recognised with her balance at B's lane, a voucher redeemed in A refused in B,
//! the same card enrolled in both stores merged into one customer, and that customer named and
//! then erased at head office (admin API), both stores applying and confirming it
//! ([`erasure`]). The last lines are a summary the test checks.

mod erasure;

use super::lanes::{Lanes, Recorder};
use super::story::receipt_json;
use super::{explain, say, show_answer};
use crate::certs::{write_pem, TestCa, Validity};
use loyalty_daemon::gateway::{self, GatewayHandle, StartOptions};
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Anna's card: earns in A, is recognised in B, redeems a voucher in A.
const ANNA: &str = "2990000000019";
/// The card enrolled in both stores before either synced it.
const TWICE: &str = "2990000000026";
/// Within this, a change at one store must reach another store's lane (issue 15).
const WITHIN: Duration = Duration::from_secs(5);

/// One store of the chain.
struct StoreBox {
    id: &'static str,
    label: &'static str,
    handle: GatewayHandle,
    lanes: Lanes,
}

impl StoreBox {
    /// Uploads now and waits (at most 10 s) until head office acknowledged every event.
    async fn synced(&self) -> bool {
        let last = self.handle.store.outbox_stats().map_or(0, |s| s.last_seq);
        self.handle.sync.nudge();
        let status = self.handle.sync.status();
        tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.acked_through >= last),
        )
        .await
        .is_ok()
    }

    fn customer_of(&self, card: &str) -> Option<String> {
        self.handle
            .store
            .customer_by_card(card)
            .ok()
            .flatten()
            .map(|c| c.id)
    }
}

/// What the chain demo found, one field per step.
#[derive(Debug, Default)]
struct Outcome {
    recognised: Option<(Duration, i64, i64)>,
    voucher_at_b: Option<(String, String)>,
    merged: Option<String>,
    erased: Option<erasure::Erased>,
}

fn hub_config(dir: &Path, pg: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n\
         [database]\nurl = {pg:?}\npool_size = 8\n[feed]\nlong_poll_max_secs = 60\n\
         [admin]\ntoken_file = {:?}\n",
        dir.join("hub.pem"),
        dir.join("hub.key"),
        dir.join("ca.pem"),
        dir.join("admin.token"),
    )
}

fn gateway_config(dir: &Path, id: &str, name: &str, hub_port: u16) -> String {
    let files = dir.join(id);
    format!(
        r#"[store]
id = "{id}"
name = "{name}"
timezone = "Europe/Berlin"
currency = "EUR"
require_ntp_sync = false

[storage]
data_dir = "{data}"

[mqtt]
enabled = false

[cards]
prefixes = ["299"]

[rules]
points_per_unit = 1
per_amount = "1.00"
categories = ["food", "fresh", "drugstore"]

[rules.category_multipliers]
fresh = "2"

[rewards]
signing_key_file = "{key}"
rules = [{{ every_points = 30, value = "3.00", validity_days = 30 }}]

[crm]
enabled = true
url = "https://localhost:{hub_port}"
client_cert_file = "{cert}"
client_key_file = "{client_key}"
ca_file = "{ca}"
batch_max_age_ms = 50
poll_interval_secs = 1
feed_wait_secs = 25
lookup_timeout_ms = 300
backoff_min_ms = 100
backoff_max_ms = 2000

[http]
enabled = false
"#,
        data = files.join("data").display(),
        key = files.join("voucher-signing.key").display(),
        cert = files.join("client.pem").display(),
        client_key = files.join("client.key").display(),
        ca = dir.join("ca.pem").display(),
    )
}

/// The throw-away PKI: a CA, the hub's server certificate, one client certificate per store
/// (its common name is the store id the hub takes from it), one for head office's admin client,
/// and the admin API's token.
fn write_pki(dir: &Path, stores: &[&str]) -> anyhow::Result<()> {
    let ca = TestCa::new("loyalty chain demo CA")?;
    write_pem(&dir.join("ca.pem"), &ca.cert_pem(), false)?;
    let server = ca.server(&["localhost", "127.0.0.1"])?;
    write_pem(&dir.join("hub.pem"), &server.cert_pem, false)?;
    write_pem(&dir.join("hub.key"), &server.key_pem, true)?;
    for store in stores {
        let files = dir.join(store);
        std::fs::create_dir_all(&files)?;
        let client = ca.client(store, Validity::Current)?;
        write_pem(&files.join("client.pem"), &client.cert_pem, false)?;
        write_pem(&files.join("client.key"), &client.key_pem, true)?;
        loyalty_daemon::vouchers::keyfile::generate(&files.join("voucher-signing.key"))?;
    }
    let office = dir.join("head-office");
    std::fs::create_dir_all(&office)?;
    let client = ca.client("head-office", Validity::Current)?;
    write_pem(&office.join("client.pem"), &client.cert_pem, false)?;
    write_pem(&office.join("client.key"), &client.key_pem, true)?;
    write_pem(
        &dir.join("admin.token"),
        &format!("{}\n", erasure::TOKEN),
        true,
    )?;
    Ok(())
}

async fn start_store(
    dir: &Path,
    id: &'static str,
    label: &'static str,
    hub_port: u16,
    shutdown: &CancellationToken,
) -> anyhow::Result<StoreBox> {
    let text = gateway_config(dir, id, &format!("Store {label}"), hub_port);
    let built = loyalty_daemon::config::parse_built(&text).map_err(|errors| {
        let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!(
            "store {label}'s configuration invalid: {}",
            errors.join("; ")
        )
    })?;
    let handle = gateway::start(built, StartOptions { mqtt: false }, shutdown.clone()).await?;
    let lanes = Lanes::InProcess(Box::new(handle.clone()));
    Ok(StoreBox {
        id,
        label,
        handle,
        lanes,
    })
}

fn first(answers: &[Value]) -> &Value {
    answers.first().unwrap_or(&Value::Null)
}

async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms(elapsed: Duration) -> u128 {
    elapsed.as_millis()
}

/// Step 1: Anna earns in A; B's lane knows her and her balance.
async fn earn_in_a_seen_in_b(
    a: &mut StoreBox,
    b: &mut StoreBox,
    recorder: &mut Recorder,
    outcome: &mut Outcome,
) -> Option<(String, String)> {
    say("Store A, lane 1: Anna shows her new card");
    explain("Store A asks head office first (by-card, 300 ms at most); the card is new in the");
    explain("whole chain, so store A enrolls her.");
    let card_scan = format!("]E0{ANNA}").into_bytes();
    recorder.scan(&mut a.lanes, "1", &card_scan, 1).await;
    let receipt = receipt_json(
        "A-1001",
        "1",
        &[
            ("2000000000022", "Cheese", 1, "12.00", "fresh"),
            ("4000417025005", "Coffee", 2, "17.98", "food"),
        ],
        None,
    );
    let answers = recorder.receipt(&mut a.lanes, "1", &receipt).await;
    let answer = first(&answers);
    let balance_a = answer["balance"].as_i64().unwrap_or(0);
    let anna = answer["customer_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let voucher = match (
        answer["vouchers"][0]["voucher_id"].as_str(),
        answer["vouchers"][0]["text"].as_str(),
    ) {
        (Some(id), Some(text)) => Some((id.to_string(), text.to_string())),
        _ => None,
    };
    let started = Instant::now();

    say("Store A syncs; Anna walks into store B");
    if a.synced().await {
        explain(&format!(
            "Store A's events are committed at head office {} ms after the receipt.",
            ms(started.elapsed())
        ));
    } else {
        explain("Store A could not sync within 10 s (see the log above).");
    }
    explain("Store B has never seen the card: it looks it up at head office before enrolling.");
    let answers = recorder.scan(&mut b.lanes, "1", &card_scan, 1).await;
    let elapsed = started.elapsed();
    let answer = first(&answers);
    if answer["type"] == "customer" && answer["customer_id"] == anna.as_str() {
        let balance_b = answer["balance"].as_i64().unwrap_or(0);
        explain(&format!(
            "Recognised at store B as {anna} with balance {balance_b} (store A says {balance_a}), \
             {} ms after her receipt in store A.",
            ms(elapsed)
        ));
        outcome.recognised = Some((elapsed, balance_a, balance_b));
    } else {
        explain(&format!(
            "Store B did NOT recognise her (answer type {}).",
            answer["type"]
        ));
    }
    voucher
}

/// Step 2: the voucher redeemed in A, then shown in B.
async fn voucher_twice(
    a: &mut StoreBox,
    b: &mut StoreBox,
    recorder: &mut Recorder,
    outcome: &mut Outcome,
    voucher: Option<(String, String)>,
) {
    say("Store A, lane 2: Anna redeems the 3.00 voucher her receipt earned");
    let Some((id, text)) = voucher else {
        explain("(no voucher was issued by her receipt: the step is skipped)");
        return;
    };
    let keys = b.handle.vouchers.trusted_keys();
    explain(if keys.key_ids().iter().any(|k| k.ends_with(a.id)) {
        "Store B trusts store A's voucher key (it came down the feed at the start)."
    } else {
        "Store B does NOT trust store A's voucher key (see the start)."
    });
    let card_scan = format!("]E0{ANNA}").into_bytes();
    recorder.scan(&mut a.lanes, "2", &card_scan, 1).await;
    recorder
        .step(&mut a.lanes, "2", "scan", text.clone().into_bytes(), 1)
        .await;
    let mut receipt = receipt_json(
        "A-1002",
        "2",
        &[("4000417025005", "Coffee", 1, "8.99", "food")],
        None,
    );
    receipt.rewards = vec![id.clone()];
    recorder.receipt(&mut a.lanes, "2", &receipt).await;
    let started = Instant::now();
    a.synced().await;
    explain("Head office records the redemption and revokes the voucher for every other store");
    explain("in the changes feed, which store B long-polls.");
    let store = b.handle.store.clone();
    let revoked_at_b = until(WITHIN, || store.is_voucher_revoked(&id).unwrap_or(false)).await;
    if revoked_at_b {
        explain(&format!(
            "Store B holds the revocation {} ms after the redemption in store A.",
            ms(started.elapsed())
        ));
    } else {
        explain("Store B has no revocation for it within 5 s.");
    }

    say("Store B, lane 2: the same voucher is shown again");
    recorder.scan(&mut b.lanes, "2", &card_scan, 1).await;
    let answers = recorder
        .step(&mut b.lanes, "2", "scan", text.into_bytes(), 1)
        .await;
    let status = first(&answers)["status"]
        .as_str()
        .unwrap_or("no answer")
        .to_string();
    let reason = first(&answers)["reason"].as_str().unwrap_or_default();
    let why = if status == "valid" {
        "ACCEPTED: head office would record a double redemption at ingest".to_string()
    } else if reason.contains("revoked") {
        "revoked by head office through the feed after store A's sync".to_string()
    } else {
        format!("by store B's own checks: {reason}")
    };
    explain(&format!("Store B's answer: {status}, {why}."));
    outcome.voucher_at_b = Some((status, why));
}

/// Step 3: one card enrolled in both stores before either synced; merged by head office.
async fn merge(a: &mut StoreBox, b: &mut StoreBox, outcome: &mut Outcome) {
    say("Stores A and B: a new card is shown at both stores at the same moment");
    explain("Neither store finds it at head office (neither has synced it yet), so each enrolls");
    explain("it on its own, as a store with its WAN down would.");
    let card_scan = format!("]E0{TWICE}").into_bytes();
    println!("    → lane 3 at both stores scan: ]E0{TWICE}");
    let ((in_a, _), (in_b, _)) = tokio::join!(
        a.lanes.send("3", "scan", card_scan.clone(), 1),
        b.lanes.send("3", "scan", card_scan.clone(), 1)
    );
    for (store, answers) in [(a.label, &in_a), (b.label, &in_b)] {
        print!("    store {store}:");
        show_answer(first(answers));
    }
    for (store, receipt_id) in [(&mut *a, "A-2001"), (&mut *b, "B-2001")] {
        let receipt = receipt_json(
            receipt_id,
            "3",
            &[("4001686301265", "Bread", 2, "5.98", "food")],
            None,
        );
        let (answers, _) = store.lanes.send("3", "receipt", receipt.to_json(), 1).await;
        print!("    store {}:", store.label);
        show_answer(first(&answers));
    }
    let (id_a, id_b) = (a.customer_of(TWICE), b.customer_of(TWICE));
    if id_a == id_b {
        explain("Both stores already hold the same customer: nothing to merge this time.");
    } else {
        explain(&format!(
            "Two customers for one card: {} in store A, {} in store B.",
            id_a.unwrap_or_default(),
            id_b.unwrap_or_default()
        ));
    }
    say("Both stores sync: head office merges the two and sends customer_merged to both");
    let started = Instant::now();
    let (ok_a, ok_b) = tokio::join!(a.synced(), b.synced());
    if !(ok_a && ok_b) {
        explain("A store could not sync within 10 s (see the log above).");
    }
    let same = until(WITHIN, || {
        let id = a.customer_of(TWICE);
        id.is_some() && id == b.customer_of(TWICE)
    })
    .await;
    if !same {
        explain("The stores still hold different customers for the card after 5 s.");
        return;
    }
    explain(&format!(
        "Both stores hold one customer for the card {} ms after the sync started.",
        ms(started.elapsed())
    ));
    let ((in_a, _), (in_b, _)) = tokio::join!(
        a.lanes.send("3", "scan", card_scan.clone(), 1),
        b.lanes.send("3", "scan", card_scan, 1)
    );
    for (store, answers) in [(a.label, &in_a), (b.label, &in_b)] {
        print!("    store {store}:");
        show_answer(first(answers));
    }
    let shown_a = first(&in_a)["customer_id"].as_str().map(str::to_string);
    if shown_a.is_some() && shown_a.as_deref() == first(&in_b)["customer_id"].as_str() {
        outcome.merged = shown_a;
    }
}

async fn run(dir: &Path) -> anyhow::Result<(Outcome, crate::testkit::Postgres)> {
    let shutdown = CancellationToken::new();
    say("Starting PostgreSQL for head office");
    let pg = tokio::task::spawn_blocking(crate::testkit::Postgres::start)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "PostgreSQL could not be started (see the message above): install Debian's \
                 `postgresql` or set LOYALTY_PG_BINDIR to the folder holding initdb"
            )
        })?;
    explain(&format!(
        "A private cluster on 127.0.0.1:{} in a temporary directory, removed at the end.",
        pg.port()
    ));

    say("Starting loyalty-hub (head office) with mutual TLS");
    write_pki(dir, &["store-a", "store-b"])?;
    let config = loyalty_hub::config::parse(&hub_config(dir, &pg.connection_string())).map_err(
        |errors| {
            let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("hub configuration invalid: {}", errors.join("; "))
        },
    )?;
    let hub = loyalty_hub::start(config).await?;
    explain(&format!(
        "https://localhost:{} with a throw-away CA; each store's id is its client certificate's name.",
        hub.addr.port()
    ));

    say("Starting two store gateways: store A and store B");
    let mut a = start_store(dir, "store-a", "A", hub.addr.port(), &shutdown).await?;
    let mut b = start_store(dir, "store-b", "B", hub.addr.port(), &shutdown).await?;
    explain(
        "Each has its own sled data, voucher key and certificate; the lanes are fed in-process.",
    );
    let uploading = Instant::now();
    let (ok_a, ok_b) = tokio::join!(a.synced(), b.synced());
    explain(if ok_a && ok_b {
        "Both stores are connected: their voucher keys are at head office."
    } else {
        "A store could not reach head office within 10 s (see the log above)."
    });
    // The feed brings each store's key to the other; the gateway trusts it as soon as the
    // page is applied.
    let keys = b.handle.vouchers.trusted_keys();
    let trusted = until(WITHIN, || keys.key_ids().iter().any(|k| k.ends_with(a.id))).await;
    explain(&if trusted {
        format!(
            "Store B trusts store A's voucher key {} ms after store A began uploading it \
             (upload, head office, store B's feed).",
            ms(uploading.elapsed())
        )
    } else {
        "Store B does NOT trust store A's voucher key 5 s after head office had it.".to_string()
    });

    let mut recorder = Recorder {
        latencies: Vec::new(),
    };
    let mut outcome = Outcome::default();
    let voucher = earn_in_a_seen_in_b(&mut a, &mut b, &mut recorder, &mut outcome).await;
    voucher_twice(&mut a, &mut b, &mut recorder, &mut outcome, voucher).await;
    merge(&mut a, &mut b, &mut outcome).await;

    outcome.erased = erasure::erase(
        dir,
        hub.addr.port(),
        &a,
        &b,
        outcome.merged.as_deref(),
        TWICE,
    )
    .await?;

    shutdown.cancel();
    a.handle.stop(Duration::from_secs(5)).await;
    b.handle.stop(Duration::from_secs(5)).await;
    hub.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), hub.task).await;
    // PostgreSQL stops after the runtime (and the hub's pool with it) is gone.
    Ok((outcome, pg))
}

fn print_outcome(outcome: &Outcome) -> bool {
    println!("\n\x1b[1mChain summary\x1b[0m");
    let recognised = match outcome.recognised {
        Some((elapsed, balance_a, balance_b)) => {
            println!(
                "  recognised at store B: yes, balance {balance_b} (store A: {balance_a}), {} ms after the receipt in A",
                ms(elapsed)
            );
            elapsed <= WITHIN && balance_a == balance_b
        }
        None => {
            println!("  recognised at store B: no");
            false
        }
    };
    let refused = match &outcome.voucher_at_b {
        Some((status, why)) if status != "valid" => {
            println!("  voucher redeemed in A, at store B: refused ({status}, {why})");
            true
        }
        Some((status, _)) => {
            println!("  voucher redeemed in A, at store B: accepted ({status})");
            false
        }
        None => {
            println!("  voucher redeemed in A, at store B: not tried");
            false
        }
    };
    let merged = match &outcome.merged {
        Some(id) => {
            println!("  card enrolled in both stores: merged, {id} at both stores");
            true
        }
        None => {
            println!("  card enrolled in both stores: not merged");
            false
        }
    };
    let erased = match &outcome.erased {
        Some(e) => {
            println!(
                "  erasure at head office: card and name {} at both stores; confirmed by {} ({}), {} ms after the request",
                if e.gone_at_both { "gone" } else { "NOT gone" },
                if e.confirmed.is_empty() { "no store".to_string() } else { e.confirmed.join(", ") },
                if e.complete { "complete" } else { "NOT complete" },
                ms(e.elapsed)
            );
            e.gone_at_both && e.complete && e.confirmed.len() == 2
        }
        None => {
            println!("  erasure at head office: not done");
            false
        }
    };
    recognised && refused && merged && erased
}

/// Runs the chain demo; exits 1 when a step did not turn out as the chain promises.
pub fn main(keep_data: bool) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("loyalty-chain-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "loyalty-gateway demo --chain: head office and two stores on this machine (data in {})",
        dir.display()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(run(&dir));
    drop(runtime);
    let outcome = outcome.map(|(outcome, pg)| {
        drop(pg);
        outcome
    });
    if !keep_data {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(if print_outcome(&outcome?) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
