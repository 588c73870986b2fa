//! `loyalty-gateway demo`: a whole simulated store on this machine, with no hardware, no broker
//! set up by hand and no CRM. It starts a private Mosquitto on a free port when one is
//! installed (otherwise it feeds the lanes in-process and says so), the reference CRM receiver
//! with a throw-away PKI, and the gateway on a temporary data directory; then plays a scripted
//! morning at the tills, explaining each step, keeps trading until Ctrl-C (or
//! `--duration-secs`), and ends with a summary. `demo --chain` ([`chain`]) shows a chain
//! instead: PostgreSQL, the hub and two stores.

pub mod broker;
mod chain;
mod config;
mod lanes;
pub mod pty;
mod story;
mod summary;
mod tap;

pub use summary::DemoSummary;

use crate::loadgen::{self, Percentiles};
use config::demo_config;
use lanes::{Lanes, Recorder};
use loyalty_daemon::gateway::{self, StartOptions};
use loyalty_daemon::mqtt::Topics;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use story::{keep_trading, personal_offer, story};
use summary::print_summary;
use tap::printer_tap;
use tokio_util::sync::CancellationToken;

/// Demo options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// After the scripted story, keep trading this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Feed the lanes in-process even when Mosquitto is installed.
    #[arg(long)]
    pub no_broker: bool,
    /// Keep the demo's data directory (printed at the start) instead of deleting it.
    #[arg(long)]
    pub keep_data: bool,
    /// Show a chain instead of one store: PostgreSQL, the hub and two store gateways.
    #[arg(long)]
    pub chain: bool,
}

const STORE_ID: &str = "demo-store";

fn say(text: &str) {
    println!("\n\x1b[1m▶ {text}\x1b[0m");
}

fn explain(text: &str) {
    println!("  {text}");
}

fn show_answer(answer: &Value) {
    let mut shown = answer.clone();
    if let Some(vouchers) = shown.get_mut("vouchers").and_then(Value::as_array_mut) {
        for voucher in vouchers {
            let bytes = voucher["escpos_base64"]
                .as_str()
                .map_or(0, |b| b.len() * 3 / 4);
            voucher["escpos_base64"] =
                Value::String(format!("<{bytes} bytes of ESC/POS for the printer>"));
            voucher["text"] = Value::String("<the QR text>".into());
        }
    }
    println!("    ← {shown}");
}

async fn run(args: DemoArgs) -> anyhow::Result<DemoSummary> {
    let dir = std::env::temp_dir().join(format!("loyalty-gateway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "loyalty-gateway demo: a simulated store on this machine (data in {})",
        dir.display()
    );

    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            println!("\n(Ctrl-C: finishing up)");
            shutdown.cancel();
        });
    }

    say("Starting the store's MQTT broker");
    let broker = if args.no_broker {
        explain("--no-broker: the lanes talk to the gateway in-process.");
        None
    } else {
        match broker::Mosquitto::start(&dir.join("mosquitto")) {
            Ok(broker) => {
                explain(&format!(
                    "A private Mosquitto on 127.0.0.1:{} with persistence, as on a store box.",
                    broker.port
                ));
                Some(broker)
            }
            Err(err) => {
                explain(&format!(
                    "No broker ({err}); the lanes talk to the gateway in-process."
                ));
                explain("Install mosquitto (apt-get install mosquitto) to see the MQTT path too.");
                None
            }
        }
    };

    let till_side = pty::Pty::open(&dir.join("till-side"))?;
    let printer_side = pty::Pty::open(&dir.join("printer-side"))?;
    say("Starting the gateway");
    loyalty_daemon::vouchers::keyfile::generate(&dir.join("voucher-signing.key"))?;
    explain("A fresh Ed25519 voucher signing key for this store (mode 0600).");
    say("Starting the reference CRM receiver (mutual TLS)");
    let pki = crate::certs::write_local_pki(&dir, STORE_ID)?;
    let crm = crate::crm_reference::serve(crate::crm_reference::ReferenceConfig {
        listen: "127.0.0.1:0".parse()?,
        cert_file: pki.server_cert_file.clone(),
        key_file: pki.server_key_file.clone(),
        client_ca_file: pki.ca_file.clone(),
        data_dir: None,
        fsync: false,
        faults: Default::default(),
    })
    .await?;
    explain(&format!(
        "{} with a throw-away CA; the store authenticates with its own client certificate.",
        crm.url()
    ));
    explain(
        "It is the repository's reference receiver for integrators, not a CRM: it deduplicates",
    );
    explain("events by id and acknowledges them with acked_through.");
    // Head office's first page: a customer with a personal offer (`story::offer_page`).
    crm.push_changes(STORE_ID, story::offer_page());
    let crm_section = format!(
        "[crm]\nenabled = true\nurl = \"{url}\"\nclient_cert_file = \"{cert}\"\nclient_key_file = \"{key}\"\n\
         ca_file = \"{ca}\"\nbatch_max_age_ms = 50\npoll_interval_secs = 1\nbackoff_min_ms = 100\nbackoff_max_ms = 2000\n",
        url = crm.url(),
        cert = pki.client_cert_file.display(),
        key = pki.client_key_file.display(),
        ca = pki.ca_file.display()
    );
    let config_text = demo_config(&dir, broker.as_ref().map(|b| b.port), &crm_section);
    let built = loyalty_daemon::config::parse_built(&config_text).map_err(|errors| {
        anyhow::anyhow!(
            "demo configuration invalid: {}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let topics = Topics::new(&built.raw.topic_prefix());
    let handle = gateway::start(
        built,
        StartOptions {
            mqtt: broker.is_some(),
        },
        shutdown.clone(),
    )
    .await?;
    explain(&format!(
        "Store data in sled with group commit + fsync; answers on {}.",
        topics.response("N")
    ));
    explain(&format!(
        "Lane 5's receipt printer is tapped inline on a serial line: {} (till) -> gateway -> {} (printer).",
        till_side.link.display(),
        printer_side.link.display()
    ));

    let mut lanes = match &broker {
        Some(broker) => {
            let mut status = handle.broker.clone();
            let _ = tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.connected))
                .await;
            let peer = loadgen::connect_peer(
                "127.0.0.1",
                broker.port,
                "demo-tills",
                &[topics.responses()],
            )
            .await?;
            Lanes::Mqtt(peer, topics.clone())
        }
        None => Lanes::InProcess(Box::new(handle.clone())),
    };

    let mut recorder = Recorder {
        latencies: Vec::new(),
    };
    story(&mut lanes, &mut recorder).await;
    // The feed applied the first page once it asks for the next one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while crm.stats().changes_requests < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    personal_offer(&mut lanes, &mut recorder).await;
    // The till and the printer stay switched on until the demo ends.
    let _lane5_devices = printer_tap(&handle, till_side, printer_side).await;

    let trading_stop = shutdown.child_token();
    match args.duration_secs {
        Some(0) => {}
        Some(secs) => {
            say(&format!("The store keeps trading for {secs} s"));
            let stop = trading_stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                stop.cancel();
            });
            let cycles = keep_trading(&mut lanes, &mut recorder, &trading_stop).await;
            explain(&format!("{cycles} more customers served."));
        }
        None => {
            say("The store keeps trading: press Ctrl-C to stop and see the summary");
            let cycles = keep_trading(&mut lanes, &mut recorder, &trading_stop).await;
            explain(&format!("{cycles} more customers served."));
        }
    }

    say("Checking the ledger: replaying the hash-chained journal");
    let store = handle.store.clone();
    let report = tokio::task::spawn_blocking(move || store.verify()).await??;
    let ledger_verified = report.is_consistent();
    explain(&format!("{report}"));

    say("Syncing with the CRM");
    explain("Every receipt, ledger entry, enrolment and voucher event goes to the CRM in order,");
    explain("gzip-compressed over TLS 1.3; the store advances only on the CRM's acknowledgement.");
    let stats = {
        let store = handle.store.clone();
        tokio::task::spawn_blocking(move || store.outbox_stats()).await??
    };
    handle.sync.nudge();
    let deadline = Instant::now() + Duration::from_secs(20);
    while crm.acked_through(STORE_ID) < stats.last_seq && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    explain(&format!(
        "The CRM holds {} distinct events, acknowledged through sequence {} of {}.",
        crm.received_count(STORE_ID),
        crm.acked_through(STORE_ID),
        stats.last_seq
    ));
    let counters = &handle.counters;
    let summary = DemoSummary {
        via_mqtt: broker.is_some(),
        receipts: counters.receipts.load(Ordering::Relaxed),
        duplicates: counters.duplicates.load(Ordering::Relaxed),
        points: counters.points.load(Ordering::Relaxed),
        enrolled: counters.enrolled.load(Ordering::Relaxed),
        error_answers: counters.errors.load(Ordering::Relaxed),
        vouchers_issued: counters.vouchers_issued.load(Ordering::Relaxed),
        vouchers_redeemed: counters.vouchers_redeemed.load(Ordering::Relaxed),
        events_written: stats.last_seq,
        events_acknowledged: crm.received_count(STORE_ID) as u64,
        latency_ms: Percentiles::of(&mut recorder.latencies),
        ledger_verified,
    };
    shutdown.cancel();
    // The gateway's orderly end (last answers, retained `offline`, clean disconnects of both
    // broker connections) before the broker goes: a broker gone first is a warning.
    handle.stop(loyalty_daemon::gateway::SHUTDOWN_BOUND).await;
    crm.shutdown().await;
    drop(lanes);
    drop(broker);
    if !args.keep_data {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(summary)
}

/// Runs the demo.
pub fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.chain {
        return chain::main(args.keep_data);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let summary_path = args.summary_json.clone();
    let summary = runtime.block_on(run(args))?;
    print_summary(&summary);
    if let Some(path) = summary_path {
        std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)?;
    }
    Ok(if summary.ledger_verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
