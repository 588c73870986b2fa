//! The sync test suite (issue 4): real TLS with rcgen certificates made at test time, the
//! reference CRM receiver in-process on 127.0.0.1:0, real sled in a tempdir; the helpers are
//! `loyalty_tools::testkit::crm`.

mod sync_suite {
    mod changes;
    mod delivery;
    mod kill;
    mod longpoll;
    mod merges;
    mod openapi;
    mod transport;
}
