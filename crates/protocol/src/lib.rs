//! Every wire format of loyalty-gateway, typed and serialised in one place: the till's JSON
//! over MQTT (SPEC 2.3, [`till`]), the CRM sync API (SPEC 2.5, [`crm`]), which
//! `docs/openapi.yaml` publishes, and the local HTTP API's answers (SPEC 2.7, [`local_api`]).
//! The gateway, the tools and the tests all use these definitions; nothing else builds these
//! payloads.
#![deny(missing_docs)]

pub mod crm;
pub mod local_api;
pub mod till;
