//! The one test harness of the workspace (integration tests and benches): a real Mosquitto
//! broker and a till talking MQTT to it ([`Mosquitto`], [`Till`]), the gateway binary as a child
//! process with a generated configuration ([`GatewayBinary`], [`Gateway`]), a throw-away PKI with
//! the reference CRM and the sync helpers ([`crm`]), earning-policy and receipt builders for
//! store tests ([`store`]), the local API over plain HTTP ([`http_get`], [`metric_sample`]), and
//! a private PostgreSQL cluster for the hub's tests ([`Postgres`]), an open-loop raw-socket
//! publisher ([`flood`]), a real headless Chromium through chromedriver ([`browser::Browser`]),
//! the small helpers every test needs ([`free_port`],
//! [`wait_until`], [`eventually`]).
//!
//! Real services only, no mocks: the broker is Mosquitto, the CRM speaks mutual TLS, stores are
//! sled in temp dirs. Helpers panic with what went wrong, as test code does.

pub mod browser;
pub mod crm;
pub mod flood;
mod gateway;
mod http;
mod mqtt;
mod poll;
mod postgres;
pub mod store;

pub use gateway::{copy_dir, synced_config, Gateway, GatewayBinary};
pub use http::{http_get, metric_sample};
pub use mqtt::{format_cents, parse_cents, sale, wait_online, Mosquitto, Till};
pub use poll::{eventually, free_port, wait_until};
pub use postgres::{bindir as postgres_bindir, Postgres};
