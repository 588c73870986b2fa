//! Every wire format of loyalty-gateway, typed and serialised in one place: the till's JSON
//! over MQTT (SPEC 2.3, [`till`]) and the CRM sync API (SPEC 2.5, [`crm`]), which
//! `docs/openapi.yaml` publishes. The gateway, the tools and the tests all use these
//! definitions; nothing else builds these payloads.
#![deny(missing_docs)]

pub mod crm;
pub mod till;
