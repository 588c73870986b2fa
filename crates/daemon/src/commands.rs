//! The operator's commands on a stopped gateway's store: `compact`, `verify` and
//! `seed-test-customers` (`voucher goodwill` is with the other voucher commands in
//! `vouchers::cli`). Each opens the store itself (sled holds an exclusive lock, so the daemon
//! must be stopped) and prints what it did.

use crate::config::Config;
use jiff::Timestamp;
use loyalty_store::Store;
use std::process::ExitCode;

/// `loyalty-gateway compact`: compacts the database now, with the service stopped (the copy the
/// daemon makes by itself at start-up when sled's file has many free segments; on a Pi Zero the
/// copy's memory peak is better spent with nothing else running).
pub fn compact_command(config: Config) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let (before, after) = Store::compact_offline(&config.storage)?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "compacted {}: {:.1} MiB -> {:.1} MiB in {:.1} s",
        config.storage.data_dir.join("db").display(),
        mib(before),
        mib(after),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `loyalty-gateway verify`: replays the ledger and checks balances and the hash chain.
/// Prints a summary; exit 0 when consistent, 1 otherwise.
pub fn verify_command(config: Config) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.storage, &config.store.id)?;
    let report = store.verify()?;
    println!("{report}");
    Ok(if report.is_consistent() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `loyalty-gateway seed-test-customers`: fills an *empty* store with `count` synthetic
/// customers (cards `{prefix}{n}`, the prefix given or the first of `cards.prefixes`), so that
/// idle memory and start-up can be measured on the box itself (`cross/measure.sh`). Refuses a
/// store that already holds customers: synthetic customers never mix with real ones.
pub fn seed_test_customers_command(
    config: Config,
    count: u64,
    card_prefix: Option<String>,
) -> anyhow::Result<ExitCode> {
    let prefix = match card_prefix.or_else(|| config.cards.prefixes.first().cloned()) {
        Some(prefix) if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) => prefix,
        Some(prefix) => anyhow::bail!("card prefix {prefix:?} must be digits"),
        None => anyhow::bail!("no card prefix: pass --card-prefix or configure cards.prefixes"),
    };
    let digits = 13usize.saturating_sub(prefix.len());
    if 10u64.saturating_pow(digits as u32) < count {
        anyhow::bail!(
            "{count} customers do not fit 13-digit cards after prefix {prefix:?}; use a shorter prefix"
        );
    }
    let store = Store::open(&config.storage, &config.store.id)?;
    if store.has_customers() {
        anyhow::bail!(
            "the store in {} already holds customers; seed-test-customers only fills an empty \
             store (use a scratch storage.data_dir for measurements)",
            config.storage.data_dir.display()
        );
    }
    let started = std::time::Instant::now();
    store.seed_customers(count, &prefix, Timestamp::now())?;
    println!(
        "seeded {count} test customers (cards {prefix}{:0digits$} upwards) into {} in {:.1} s",
        0,
        config.storage.data_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
