use loyalty_gateway::config::StorageConfig;
use loyalty_gateway::store::Store;
use std::time::Instant;
fn main() {
    let dir = std::path::PathBuf::from(std::env::var("PROBE_DIR").unwrap_or("/tmp/probe1m".into()));
    let storage = StorageConfig {
        data_dir: dir.join("data"),
        ..StorageConfig::default()
    };
    if !dir.join("data").exists() {
        let t = Instant::now();
        let store = Store::open(&storage, "footprint").unwrap();
        store
            .seed_customers(1_000_000, "299", jiff::Timestamp::now())
            .unwrap();
        drop(store);
        println!("seeded in {:?}", t.elapsed());
        let t = Instant::now();
        let store = Store::open(&storage, "footprint").unwrap();
        drop(store);
        println!("first reopen {:?}", t.elapsed());
    }
    if std::env::var("COMPACT").is_ok() {
        let t = Instant::now();
        let r = Store::compact_offline(&storage).unwrap();
        println!("compacted {:?} in {:?}", r, t.elapsed());
    }
    for _ in 0..std::env::var("RAW")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0)
    {
        let t = Instant::now();
        let db = sled::Config::new()
            .path(dir.join("data/db"))
            .cache_capacity(16 << 20)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let a = t.elapsed();
        let names = db.tree_names();
        for n in &names {
            let _ = db.open_tree(n).unwrap();
        }
        let b = t.elapsed();
        drop(db);
        let c = t.elapsed();
        println!(
            "raw sled open {:?} +trees {:?} +drop {:?} ({} trees)",
            a,
            b,
            c,
            names.len()
        );
    }
    for _ in 0..5 {
        let t = Instant::now();
        let store = Store::open(&storage, "footprint").unwrap();
        let a = t.elapsed();
        drop(store);
        println!("Store::open {:?} (+drop {:?})", a, t.elapsed());
    }
}
#[allow(dead_code)]
fn unused() {}
