//! dump
use loyalty_gateway::escpos::*;
use std::time::{Duration, Instant};

#[test]
fn dump() {
    for name in [
        "sale_cp858.bin",
        "return_cp858.bin",
        "pan_cp858.bin",
        "idle_1252.bin",
        "images.bin",
    ] {
        let bytes = std::fs::read(format!("tests/fixtures/escpos/{name}")).unwrap();
        let mut a = Assembler::new(CodePage::Cp437, Duration::from_secs(2), vec![]);
        let now = Instant::now();
        let mut docs = a.feed(&bytes, now);
        docs.extend(a.on_idle(now + Duration::from_secs(3)));
        println!("== {name}: {} docs", docs.len());
        for d in docs {
            println!("{:?} {}\n{}", d.end, d.masked_pans, d.text());
        }
    }
}
