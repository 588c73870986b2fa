//! Contact hashes on a real sled database: a customer fed with a phone / e-mail hash is found
//! by one index lookup of the hash of the number as typed in another format; a new hash
//! replaces the old index entry; a merge moves it; erasure removes hashes and index entries.

#[allow(dead_code)] // each test binary uses some of them
#[path = "../../tools/src/testkit/store.rs"]
mod store_support;

use loyalty_core::contact::{email_hash, phone_hash};
use loyalty_store::sync_state::{ChangeSet, CrmCustomer, CrmMerge};
use store_support::*;

fn customer(id: &str, card: &str, phone: Option<&str>, email: Option<&str>) -> CrmCustomer {
    CrmCustomer {
        customer_id: id.into(),
        balance: 0,
        includes_store_seq: 0,
        tier: None,
        cards: vec![card.into()],
        display_name: Some("Ada".into()),
        consent: None,
        phone_hash: phone.and_then(phone_hash),
        email_hash: email.and_then(email_hash),
        tags: Vec::new(),
        birthday: None,
    }
}

fn page(
    cursor: &str,
    customers: Vec<CrmCustomer>,
    merged: Vec<CrmMerge>,
    erased: Vec<String>,
) -> ChangeSet {
    ChangeSet {
        cursor: cursor.into(),
        now: now(),
        merged,
        customers,
        adjustments: vec![],
        erased,
        revoked_vouchers: vec![],
        keys: vec![],
        rules_json: None,
        rules_rejection: None,
        offers: Vec::new(),
        clips: Vec::new(),
    }
}

fn found(store: &loyalty_store::Store, kind: &str, hash: Option<String>) -> Option<String> {
    let hash = hash.expect("a valid contact");
    store
        .customer_by_contact_hash(kind, &hash)
        .expect("lookup")
        .map(|c| c.id)
}

#[test]
fn contact_hashes_are_indexed_replaced_merged_and_erased() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let fed = customer(
        "C1",
        "2990000000019",
        Some("+49 170 1234567"),
        Some("Ada@Example.org"),
    );
    store
        .apply_changes(&page("1", vec![fed], vec![], vec![]))
        .expect("apply");
    assert_eq!(
        found(&store, "phone", phone_hash("+49-170-123-45-67")),
        Some("C1".into())
    );
    assert_eq!(
        found(&store, "email", email_hash(" ada@example.ORG")),
        Some("C1".into())
    );
    assert_eq!(
        found(&store, "email", phone_hash("+49 170 1234567")),
        None,
        "kinds are apart"
    );
    assert_eq!(found(&store, "phone", phone_hash("+49 170 7654321")), None);

    // A new number replaces the old index entry.
    let moved = customer("C1", "2990000000019", Some("+49 151 000000"), None);
    store
        .apply_changes(&page("2", vec![moved], vec![], vec![]))
        .expect("apply");
    assert_eq!(found(&store, "phone", phone_hash("+49 170 1234567")), None);
    assert_eq!(
        found(&store, "phone", phone_hash("+49151000000")),
        Some("C1".into())
    );
    assert_eq!(
        found(&store, "email", email_hash("ada@example.org")),
        Some("C1".into()),
        "kept"
    );

    // A merge: the survivor without a phone takes the merged one's.
    let other = customer("C2", "2990000000026", None, None);
    store
        .apply_changes(&page("3", vec![other], vec![], vec![]))
        .expect("apply");
    let merge = CrmMerge {
        from: "C1".into(),
        into: "C2".into(),
    };
    store
        .apply_changes(&page("4", vec![], vec![merge], vec![]))
        .expect("merge");
    assert_eq!(
        found(&store, "phone", phone_hash("+49151000000")),
        Some("C2".into())
    );

    // Erasure removes the hashes and their index entries, also after a restart.
    store
        .apply_changes(&page("5", vec![], vec![], vec!["C2".into()]))
        .expect("erase");
    drop(store);
    let store = open(dir.path());
    assert_eq!(found(&store, "phone", phone_hash("+49151000000")), None);
    assert_eq!(found(&store, "email", email_hash("ada@example.org")), None);
}
