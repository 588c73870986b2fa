//! The sync test suite (issue 4): real TLS with rcgen certificates made at test time, the
//! reference CRM receiver in-process on 127.0.0.1:0, real sled in a tempdir.

mod sync_suite {
    mod changes;
    pub mod common;
    mod delivery;
    mod kill;
    mod openapi;
    mod transport;
}
