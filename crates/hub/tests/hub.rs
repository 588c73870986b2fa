//! The hub's black-box tests: real PostgreSQL (a private cluster per test), real `loyalty-hub`
//! processes, real mutual TLS with certificates made at test time. One test binary, one module
//! per area.

#[path = "suite/support.rs"]
mod support;

#[path = "suite/ingest.rs"]
mod ingest;

#[path = "suite/faults.rs"]
mod faults;

#[path = "suite/feed.rs"]
mod feed;

#[path = "suite/gateway.rs"]
mod gateway;

#[path = "suite/merge_prop.rs"]
mod merge_prop;

#[path = "suite/admin.rs"]
mod admin;
#[path = "suite/figures.rs"]
mod figures;

#[path = "suite/dashboard.rs"]
mod dashboard;
