//! The store contract, run against every store: after applying the core's
//! mutations, `load()` returns exactly the core's own snapshot, also after
//! reopening a file, and a failed batch leaves nothing behind.

use super::{MemoryStore, SqliteStore, Store};
use crate::protocol::tests::Harness;
use crate::protocol::{Core, CoreSettings, Snapshot};
use serde_json::json;

/// Drives the core through a mixed scenario, returning the harness.
fn scenario() -> Harness {
    let mut h = Harness::new();
    h.bind(1, "app-a", "s1");
    h.bind(2, "app-a", "s2");
    h.bind(3, "app-b", "s1");
    h.bind(4, "app-a", "s3");
    let mb = h.claim(1, "1", 1.0);
    h.claim(2, "1", 2.0);
    let _ = h.reply(4, json!({"type": "claim", "nameplate": "1"}), 2.5); // crowded
    h.reply(1, json!({"type": "open", "mailbox": mb}), 3.0);
    h.reply(
        1,
        json!({"type": "add", "phase": "pake", "body": "00", "id": "ab"}),
        3.5,
    );
    h.reply(
        1,
        json!({"type": "add", "phase": 7, "body": null, "id": 1.5}),
        3.6,
    );
    h.reply(1, json!({"type": "release"}), 4.0);
    h.claim(3, "1", 5.0);
    h.reply(3, json!({"type": "open", "mailbox": "free-form"}), 6.0);
    h.reply(
        3,
        json!({"type": "add", "phase": "x", "body": "é\u{1F600}"}),
        6.5,
    );
    h.reply(3, json!({"type": "close", "mood": "lonely"}), 7.0);
    h.bind(5, "app-a", "s9");
    h.claim(5, "22", 8.0);
    h.reply(5, json!({"type": "release"}), 9.0);
    // the clock steps back: a mailbox's `updated` (20.0) never does, though
    // no touch is stored for a new side or a message
    h.bind(6, "app-c", "s1");
    h.bind(7, "app-c", "s2");
    h.reply(6, json!({"type": "open", "mailbox": "back"}), 20.0);
    h.reply(6, json!({"type": "add", "phase": "p", "body": "b"}), 15.0);
    h.reply(7, json!({"type": "open", "mailbox": "back"}), 12.0);
    h.reply(7, json!({"type": "add", "phase": "q", "body": "c"}), 18.0);
    h
}

/// The `updated` of the mailbox the scenario opened with a clock that
/// steps back.
const BACK_UPDATED: f64 = 20.0;

fn check_contract(store: &mut dyn Store) -> Snapshot {
    let h = scenario();
    assert!(!h.mutations.is_empty());
    // apply in several batches, as the writer does
    for chunk in h.mutations.chunks(3) {
        store.apply(chunk).expect("apply");
    }
    let loaded = store.load().expect("load");
    assert_eq!(loaded, h.core.snapshot());
    let back = loaded.mailboxes.iter().find(|m| m.id == "back");
    assert_eq!(back.map(|m| m.updated), Some(BACK_UPDATED));
    // a core restored from it behaves the same
    let restored = Core::restore(CoreSettings::default(), loaded.clone());
    assert_eq!(restored.snapshot(), loaded);
    loaded
}

#[test]
fn memory_store_contract() {
    check_contract(&mut MemoryStore::new());
}

#[test]
fn sqlite_memory_store_contract() {
    check_contract(&mut SqliteStore::open(":memory:", Default::default()).expect("open"));
}

#[test]
fn sqlite_file_store_contract_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.sqlite");
    let path = path.to_str().expect("utf-8 path");
    let snap = {
        let mut store = SqliteStore::open(path, super::Durability::PowerLoss).expect("open");
        check_contract(&mut store)
    };
    let mut store = SqliteStore::open(path, Default::default()).expect("reopen");
    assert_eq!(store.load().expect("load"), snap);
    assert_eq!(store.integrity_check().expect("check"), "ok");
}

#[test]
fn failed_batch_applies_nothing() {
    let h = scenario();
    let mut mem = MemoryStore::new();
    mem.fail_next = true;
    assert!(mem.apply(&h.mutations).is_err());
    assert_eq!(mem.load().expect("load"), Snapshot::default());
    mem.apply(&h.mutations).expect("recovers");
    assert_eq!(mem.load().expect("load"), h.core.snapshot());
    // SQLite: the failure comes in the middle of the transaction, after
    // half the batch was written, on top of already committed state
    let (first, second) = h.mutations.split_at(h.mutations.len() / 2);
    let mut sql = SqliteStore::open(":memory:", Default::default()).expect("open");
    sql.apply(first).expect("first half");
    let committed = sql.load().expect("load");
    assert_ne!(
        committed,
        Snapshot::default(),
        "the first half stored something"
    );
    sql.fail_after = Some(second.len() / 2);
    assert!(sql.apply(second).is_err());
    assert_eq!(
        sql.load().expect("load"),
        committed,
        "nothing of the failed batch"
    );
    sql.apply(second).expect("recovers");
    assert_eq!(sql.load().expect("load"), h.core.snapshot());
}

#[test]
fn a_database_serves_one_server_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.sqlite");
    let path = path.to_str().expect("path");
    let first = SqliteStore::open(path, Default::default()).expect("open");
    let wait = std::time::Duration::from_millis(300);
    let start = std::time::Instant::now();
    let second = SqliteStore::open_waiting(path, Default::default(), wait);
    assert!(second.is_err(), "second server refused");
    assert!(start.elapsed() >= wait, "after waiting");
    drop(first);
    SqliteStore::open(path, Default::default()).expect("free again");
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.sqlite");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch("CREATE TABLE version (version INTEGER); INSERT INTO version VALUES (999);")
        .expect("write");
    drop(conn);
    let err = SqliteStore::open(path.to_str().expect("path"), Default::default())
        .err()
        .expect("refused");
    assert_eq!(err.to_string(), "unable to handle db version 999");
}
