//! Lane answer latency over a real Mosquitto (issue 3's benchmark): 1, 10 and 50 simulated lanes
//! doing card scan + receipt in a closed loop against the release gateway binary, with the
//! broker's own round-trip floor for the same path measured in the same run, and the disk's own
//! sync floor (4 KiB + `fdatasync` in the gateway's data directory, every ~10 ms during the run):
//! a receipt is durable before its answer, so no gateway answers a receipt faster than its disk
//! syncs.
//!
//! Flat out (closed loop, each lane sends its next request as soon as it has its answer) the
//! machine saturates and the figures are queueing; the paced rows (each lane a cycle every
//! 500 ms, still far busier than a real till) show the gateway's added latency when it is not
//! saturated. Paced lanes are independent: each starts at a random moment and jitters its
//! interval (see `LoadgenArgs::rate`).
//!
//! Offers in force: every simulated card is a customer from head office with `profiling` consent
//! in segment `bench`, and `LANES_OFFERS` (default 50) segment offers target that segment, two of
//! which match the receipt's articles (so every scan reads and lists her offers, and every sale
//! checks all of them and uses two, with their `offer_redeemed` events). `LANES_OFFERS=0` runs
//! without customers or offers fed (cards enrolled offline at the first scan, as before).
//!
//! Run: `cargo bench --bench lanes` (set `LANES_SECS` to change the 10 s per step,
//! `LANES_STEPS="50:2,10:0"` for other lanes:rate steps, `LOYALTY_GATEWAY_BIN` to measure another
//! build of the gateway).

use loyalty_core::offers::{Conditions, Offer, OfferBenefit, Target};
use loyalty_store::offers::CrmOfferChange;
use loyalty_store::sync_state::{ChangeSet, CrmConsent, CrmCustomer};
use loyalty_tools::loadgen::{self, LoadgenArgs};
use loyalty_tools::testkit::{self as harness, GatewayBinary};
use std::time::Duration;

fn main() {
    let seconds: u64 = std::env::var("LANES_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let broker = harness::Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[store]\nid = \"bench\"\ntimezone = \"Europe/Berlin\"\n[storage]\ndata_dir = \"{}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[cards]\nprefixes = [\"299\"]\n[http]\nenabled = false\n",
        dir.path().join("data").display(),
        broker.port
    );
    let steps = steps();
    let offers: usize = std::env::var("LANES_OFFERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let max_lanes = steps.iter().map(|(lanes, _)| *lanes).max().unwrap_or(1);
    if offers > 0 {
        seed_offers(&dir.path().join("data"), max_lanes as u64, offers);
    }
    println!("offers in force: {offers} per customer ({max_lanes} lanes x 50 customers from head office)");
    let gateway =
        GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway")).start(dir.path(), &config);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Wait for the gateway to answer before measuring.
    runtime.block_on(async {
        let mut till = harness::Till::connect(broker.port, "loyalty/bench", "bench-warmup").await;
        for _ in 0..50 {
            till.scan("warmup", "2990000000019").await;
            if till.try_next(Duration::from_secs(1)).await.is_some() {
                break;
            }
        }
    });
    println!(
        "rate: 0 = flat out (closed loop); 2 = each lane runs a scan+receipt cycle every 500 ms on average, lanes independent (random phase, ±50% jitter)"
    );
    println!("floor: the broker's own echo, idle (before the step) and under load (during it); adds = gateway p50/p99 minus that floor's");
    println!("disk floor: 4 KiB write + fdatasync in the gateway's data directory during the step (not subtracted)");
    println!("lanes rate  answers/s   p50 ms   p90 ms   p99 ms   max ms | idle floor p50   p99 | adds p50   p99 | loaded floor p50   p99 | adds p50   p99 | disk floor p50   p99 | errors timeouts | gateway RSS KiB");
    for (lanes, rate) in steps {
        let args = LoadgenArgs {
            broker: format!("mqtt://127.0.0.1:{}", broker.port),
            prefix: "loyalty/bench".into(),
            lanes,
            duration_secs: seconds,
            rate,
            card_prefix: "299".into(),
            return_percent: 10,
            voucher_percent: 0,
            gateway_pid: gateway.pid(),
            no_floor: false,
            disk_floor_dir: Some(dir.path().join("data")),
            json: false,
            answer_timeout_secs: 5,
            fresh_cards: false,
        };
        let s = runtime.block_on(loadgen::run(args)).expect("loadgen run");
        let f = s.broker_floor_ms.clone().unwrap_or_default();
        let g = s.broker_floor_loaded_ms.clone().unwrap_or_default();
        let d = s.disk_sync_floor_ms.clone().unwrap_or_default();
        let l = &s.latency_ms;
        println!(
            "{lanes:>5} {rate:>4} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} | {:>14.2} {:>5.2} | {:>8.2} {:>5.2} | {:>16.2} {:>5.2} | {:>8.2} {:>5.2} | {:>14.2} {:>5.2} | {:>6} {:>8} | {:?}",
            s.throughput, l.p50, l.p90, l.p99, l.max, f.p50, f.p99, l.p50 - f.p50, l.p99 - f.p99,
            g.p50, g.p99, l.p50 - g.p50, l.p99 - g.p99, d.p50, d.p99, s.error_answers, s.timeouts,
            s.gateway_rss_kib
        );
    }
    drop(gateway);
}

/// The lanes:rate steps (`LANES_STEPS`, e.g. `"50:2,50:2,50:2"` to repeat one step).
fn steps() -> Vec<(usize, f64)> {
    match std::env::var("LANES_STEPS") {
        Ok(list) => list
            .split(',')
            .filter_map(|step| {
                let (lanes, rate) = step.split_once(':')?;
                Some((lanes.trim().parse().ok()?, rate.trim().parse().ok()?))
            })
            .collect(),
        Err(_) => vec![(1, 0.0), (10, 0.0), (50, 0.0), (10, 2.0), (50, 2.0)],
    }
}

/// Feeds the store (before the gateway opens it) as head office's changes page would: every
/// loadgen card (lanes `L1`..`L{lanes}`, 50 cards each) a customer with `profiling` consent in
/// segment `bench`, and `offers` segment offers for it; two match the loadgen's receipt (coffee:
/// bonus points; pencils: double points), the rest name other articles. Unlimited uses, so every
/// sale uses the two.
fn seed_offers(data_dir: &std::path::Path, lanes: u64, offers: usize) {
    let store = loyalty_store::Store::open(
        &loyalty_store::StorageConfig {
            data_dir: data_dir.to_path_buf(),
            cache_capacity_mb: 64,
            outbox_retention_hours: 0,
            receipt_retention_days: 0,
        },
        "bench",
    )
    .expect("open the bench store");
    let customers = (1..=lanes)
        .flat_map(|lane| (0..50).map(move |serial| (lane, serial)))
        .map(|(lane, serial)| CrmCustomer {
            customer_id: format!("HO-{lane}-{serial}"),
            balance: 0,
            includes_store_seq: 0,
            tier: None,
            cards: vec![loadgen::card_number("299", lane * 1_000_000 + serial)],
            display_name: Some(format!("Customer {lane}-{serial}")),
            consent: Some(CrmConsent {
                marketing: true,
                profiling: true,
            }),
            phone_hash: None,
            email_hash: None,
            tags: vec!["bench".into()],
            birthday: None,
        })
        .collect();
    let offers = (0..offers)
        .map(|i| {
            let (gtin, benefit) = match i {
                0 => ("4000417025005".to_string(), OfferBenefit::BonusPoints(5)),
                1 => (
                    "4006381333931".to_string(),
                    OfferBenefit::Multiplier { hundredths: 200 },
                ),
                _ => (format!("40{i:011}"), OfferBenefit::BonusPoints(10)),
            };
            CrmOfferChange::Upsert(Box::new(Offer {
                id: format!("BENCH-{i:03}"),
                target: Target::Segment("bench".into()),
                valid_from: None,
                valid_until: None,
                text: format!("Bench offer {i} on article {gtin}"),
                conditions: Conditions {
                    gtins: vec![gtin],
                    ..Default::default()
                },
                benefit,
                requires_activation: false,
                requires_marketing: false,
                max_uses_per_customer: u32::MAX,
            }))
        })
        .collect();
    store
        .apply_changes(&ChangeSet {
            cursor: String::new(),
            now: jiff::Timestamp::now(),
            merged: Vec::new(),
            customers,
            adjustments: Vec::new(),
            erased: Vec::new(),
            revoked_vouchers: Vec::new(),
            keys: Vec::new(),
            rules_json: None,
            rules_rejection: None,
            offers,
            clips: Vec::new(),
        })
        .expect("seed customers and offers");
}
