//! loyalty-gateway: the in-store loyalty daemon. See `ARCHITECTURE.md` for the map.
//!
//! The pure core (`money`, `receipt`, `rules`, `ledger`, `scan`, `escpos`, `lane`, `voucher`,
//! `clock`) does no I/O and never imports tokio. The edges (`store`, `mqtt`, `serial`,
//! `printer_proxy`, `sync`, `http`, `systemd`) each own one outside system.
#![deny(missing_docs)]

pub mod backoff;
pub mod blocking;
pub mod capture;
pub mod commands;
pub mod config;
pub mod gateway;
pub mod http;
pub mod input;
pub mod mqtt;
pub mod percent;
pub mod printer_proxy;
pub mod render;
pub mod serial;
pub mod staff;
pub mod sync;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod vouchers;
