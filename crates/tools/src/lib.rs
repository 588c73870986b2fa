//! Tools that never ship to the Pi: the demo store (`demo`), the load generator (`loadgen`),
//! the reference CRM receiver (`crm_reference`), a throw-away test PKI (`certs`) and the
//! workspace's test harness (`testkit`). The
//! product binary links them only with its default `tools` feature, which the Pi build and the
//! Debian package turn off.
#![deny(missing_docs)]

pub mod certs;
pub mod crm_reference;
pub mod demo;
pub mod loadgen;
pub mod testkit;
