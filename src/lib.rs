//! loyalty-gateway: the in-store loyalty daemon. See `ARCHITECTURE.md` for the map.
//!
//! The pure core (`money`, `receipt`, `rules`, `ledger`, `scan`, `escpos`, `lane`, `voucher`,
//! `clock`) does no I/O and never imports tokio. The edges (`store`, `mqtt`, `serial`,
//! `printer_proxy`, `sync`, `http`, `systemd`) each own one outside system.
#![deny(missing_docs)]

pub mod clock;
pub mod config;
pub mod crm_reference;
pub mod customer;
pub mod demo;
pub mod escpos;
pub mod gateway;
pub mod http;
pub mod input;
pub mod lane;
pub mod ledger;
pub mod loadgen;
pub mod money;
pub mod mqtt;
pub mod printer_proxy;
pub mod receipt;
pub mod render;
pub mod rules;
pub mod scan;
pub mod serial;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod telemetry;
pub mod voucher;
pub mod wire;
