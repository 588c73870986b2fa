//! The pure core of loyalty-gateway: money, receipts, earning rules, the points ledger, scan
//! decoding, ESC/POS parsing, lane sessions, voucher format and checks, and the clock
//! decisions. Plain functions over plain types: no I/O, no tokio, no sled (the crate does not
//! depend on them, and the tidy test keeps it so), and no configuration file: the rule,
//! card-range, receipt-profile and reward definitions here are data that the daemon's
//! configuration (or the CRM's feed) fills in and these modules build into checked types.
#![deny(missing_docs)]

pub mod clock;
pub mod contact;
pub mod customer;
pub mod escpos;
pub mod figures;
pub mod lane;
pub mod ledger;
pub mod money;
pub mod offers;
pub mod receipt;
pub mod redemption;
pub mod rules;
pub mod scan;
pub mod voucher;
