//! In-place conversion of a Python server's channel database (schema 1 of
//! the released 0.8.0, or 2 of its unreleased master) to our schema 101, so
//! an operator can start us on their existing `relay.sqlite` and keep every
//! live nameplate, mailbox and message (protocol.md §6.2, §6.3).

use super::sqlite::CHANNEL_VERSION;
use super::StoreError;
use rusqlite::{params, Connection};
use std::path::Path;

/// Our schema, created empty next to the set-aside Python tables.
const CHANNEL_SCHEMA: &str = include_str!("../../schema/channel-v101.sql");
/// Copies the rows across and drops the Python tables.
const CONVERT: &str = include_str!("../../schema/upgrade-python-channel-to-v101.sql");

/// Moves the Python tables out of the way so our schema file can run
/// unchanged; their indexes and foreign keys follow them.
const SET_ASIDE: &str = "
ALTER TABLE version RENAME TO python_version;
ALTER TABLE messages RENAME TO python_messages;
ALTER TABLE mailbox_sides RENAME TO python_mailbox_sides;
ALTER TABLE nameplate_sides RENAME TO python_nameplate_sides;
ALTER TABLE nameplates RENAME TO python_nameplates;
ALTER TABLE mailboxes RENAME TO python_mailboxes;
";

/// The tables both layouts share by name, for the before/after counts.
const TABLES: [&str; 5] = [
    "nameplates",
    "nameplate_sides",
    "mailboxes",
    "mailbox_sides",
    "messages",
];

/// Converts the Python-layout database behind `conn` (found at `version`
/// 1 or 2) to ours: first a consistent copy to `<path>-backup-v<version>`
/// (so the operator can roll back to the Python server), then one
/// transaction, so a failure leaves the file exactly as the Python server
/// left it. Any problem, including a corrupt row, is an error: start-up
/// stops rather than serving half the state.
pub(crate) fn upgrade_python_channel_db(
    conn: &Connection,
    path: &str,
    version: i64,
) -> Result<(), StoreError> {
    let fail = |e: &dyn std::fmt::Display| {
        StoreError::Open {
        path: path.to_owned(),
        reason: format!(
            "converting the Python channel database (version {version}) to version {CHANNEL_VERSION}: {e}"
        ),
    }
    };
    let backup = if path == ":memory:" {
        None
    } else {
        Some(backup_copy(conn, path, version).map_err(|e| fail(&e))?)
    };
    let before = count_rows(conn).map_err(|e| fail(&e))?;
    let connections = if version >= 2 {
        count_table(conn, "connections").map_err(|e| fail(&e))?
    } else {
        0
    };
    let tx = conn.unchecked_transaction().map_err(|e| fail(&e))?;
    tx.execute_batch(SET_ASIDE).map_err(|e| fail(&e))?;
    tx.execute_batch(CHANNEL_SCHEMA).map_err(|e| fail(&e))?;
    tx.execute_batch(CONVERT).map_err(|e| fail(&e))?;
    let after = count_rows(&tx).map_err(|e| fail(&e))?;
    let crowded_mailboxes = count_where(&tx, "mailboxes", "crowded = 1").map_err(|e| fail(&e))?;
    let crowded_nameplates = count_where(&tx, "nameplates", "crowded = 1").map_err(|e| fail(&e))?;
    tx.commit().map_err(|e| fail(&e))?;

    tracing::info!(
        path,
        from_version = version,
        to_version = CHANNEL_VERSION,
        backup = backup.as_deref().unwrap_or("none"),
        nameplates = after[0],
        nameplate_sides = after[1],
        mailboxes = after[2],
        mailbox_sides = after[3],
        messages = after[4],
        crowded_nameplates,
        crowded_mailboxes,
        "converted the Python channel database"
    );
    let dropped: Vec<i64> = before.iter().zip(&after).map(|(b, a)| b - a).collect();
    if dropped.iter().any(|&d| d != 0) {
        tracing::warn!(
            path,
            nameplates = dropped[0],
            nameplate_sides = dropped[1],
            mailboxes = dropped[2],
            mailbox_sides = dropped[3],
            messages = dropped[4],
            "Python rows not carried over: third sides of crowded channels, rows of \
             missing nameplates/mailboxes, duplicates (the backup keeps them)"
        );
    }
    if connections > 0 {
        tracing::info!(
            path,
            connections,
            "dropped the Python connection bookkeeping (schema 2); it describes connections of the stopped server"
        );
    }
    Ok(())
}

/// Writes a consistent copy of the database (WAL content included, which a
/// plain file copy would miss) to `<path>-backup-v<version>` and makes it
/// durable before anything is changed. It goes through a temporary name so
/// a crash never leaves a half-written file under the backup name; a backup
/// left by an earlier, failed attempt is replaced, since the file is still
/// unconverted and newer than that copy (the Python server overwrites its
/// own backups the same way).
fn backup_copy(conn: &Connection, path: &str, version: i64) -> Result<String, String> {
    let backup = format!("{path}-backup-v{version}");
    let tmp = format!("{backup}.tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing a stale {tmp}: {e}")),
    }
    conn.execute("VACUUM INTO ?1", params![tmp])
        .map_err(|e| format!("writing the backup copy {tmp}: {e}"))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("syncing the backup copy {tmp}: {e}"))?;
    if Path::new(&backup).exists() {
        tracing::warn!(backup, "replacing the backup left by an earlier attempt");
    }
    std::fs::rename(&tmp, &backup).map_err(|e| format!("renaming {tmp} to {backup}: {e}"))?;
    let dir = match Path::new(&backup).parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    // Makes the rename itself durable; a directory that cannot be opened
    // for this (some platforms) only weakens the guarantee.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    tracing::info!(
        backup,
        "stored a backup copy of the Python channel database"
    );
    Ok(backup)
}

/// Row counts of [`TABLES`], in that order.
fn count_rows(conn: &Connection) -> rusqlite::Result<Vec<i64>> {
    TABLES.iter().map(|t| count_table(conn, t)).collect()
}

fn count_table(conn: &Connection, table: &str) -> rusqlite::Result<i64> {
    count_where(conn, table, "1")
}

/// `table` and `condition` are constants of this module, never input.
fn count_where(conn: &Connection, table: &str, condition: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        &format!("SELECT count(*) FROM \"{table}\" WHERE {condition}"),
        [],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{
        MailboxRecord, MailboxSide, NameplateRecord, NameplateSide, Snapshot, StoredMessage,
    };
    use crate::store::{Durability, SqliteStore, Store};
    use serde_json::{json, Value};

    /// The Python server's own schema file, as it creates new databases.
    const PYTHON_V1: &str = include_str!("../../schema/python-channel-v1.sql");

    /// What the Python server's (unreleased) upgrade to version 2 adds.
    const PYTHON_V1_TO_V2: &str = "
        CREATE TABLE addrid_generation (generation INTEGER, started INTEGER, ends INTEGER);
        CREATE TABLE connections (id INTEGER PRIMARY KEY AUTOINCREMENT,
            addrid_generation INTEGER, addrid_counter INTEGER, connected INTEGER,
            side VARCHAR, implementation VARCHAR, version VARCHAR, active INTEGER);
        CREATE TABLE connection_messages (id REFERENCES connections(id), `when` INTEGER, name VARCHAR);
        INSERT INTO addrid_generation VALUES (1, 1000, 87400);
        INSERT INTO connections VALUES (NULL, 1, 1, 1000, 'aaaa', 'python', '0.24.0', 1001);
        INSERT INTO connection_messages VALUES (1, 1001, 'bind');
        DELETE FROM version;
        INSERT INTO version VALUES (2);
    ";

    /// A database as Python 0.8.0 leaves it mid-session: app `a`, nameplate
    /// 7 claimed by two sides that both opened mailbox `mbx` and added their
    /// `pake` (the second `add` without an id); app `b` uses the same
    /// nameplate name for another mailbox; one orphan message. Values use
    /// the types Python's sqlite3 writes: True/False as 1/0, floats for
    /// times, which whole-second values turn into INTEGER.
    const MID_SESSION: &str = "
        INSERT INTO mailboxes VALUES ('a', 'mbx', 1002.5, 1);
        INSERT INTO mailboxes VALUES ('b', 'mby', 1003, 1);
        INSERT INTO nameplates (app_id, name, mailbox_id, request_id) VALUES ('a', '7', 'mbx', NULL);
        INSERT INTO nameplates (app_id, name, mailbox_id, request_id) VALUES ('b', '7', 'mby', NULL);
        INSERT INTO nameplate_sides VALUES (1, 1, 'side-a', 1000.25);
        INSERT INTO nameplate_sides VALUES (1, 1, 'side-b', 1002);
        INSERT INTO nameplate_sides VALUES (2, 0, 'side-c', 1003);
        INSERT INTO mailbox_sides VALUES ('mbx', 1, 'side-a', 1000.25, NULL);
        INSERT INTO mailbox_sides VALUES ('mbx', 1, 'side-b', 1002, NULL);
        INSERT INTO mailbox_sides VALUES ('mby', 0, 'side-c', 1003, 'lonely');
        INSERT INTO messages VALUES ('a', 'mbx', 'side-a', 'pake', '7b2270616b65223a2031327d', 1001.125, '58ba');
        INSERT INTO messages VALUES ('a', 'mbx', 'side-b', 'pake', 'c3a9\"\\', 1002.5, NULL);
        INSERT INTO messages VALUES ('a', 'gone', 'side-a', 'pake', 'ff', 999.0, 'x');
    ";

    /// Creates `relay.sqlite` in a fresh directory with the Python schema at
    /// version 1 plus `rows`.
    fn python_db(rows: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.sqlite");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(PYTHON_V1).expect("python schema");
        conn.execute("INSERT INTO version (version) VALUES (1)", [])
            .expect("version");
        conn.execute_batch(rows).expect("rows");
        let path = path.to_str().expect("utf-8 path").to_owned();
        (dir, path)
    }

    fn open(path: &str) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(path, Durability::Process)
    }

    fn msg(side: &str, body: &str, server_rx: f64, id: Value) -> StoredMessage {
        StoredMessage {
            side: side.into(),
            phase: json!("pake"),
            body: json!(body),
            server_rx,
            id,
        }
    }

    fn mid_session_snapshot() -> Snapshot {
        Snapshot {
            mailboxes: vec![
                MailboxRecord {
                    app_id: "a".into(),
                    id: "mbx".into(),
                    for_nameplate: true,
                    updated: 1002.5,
                    crowded: false,
                    sides: vec![
                        MailboxSide {
                            side: "side-a".into(),
                            opened: true,
                            added: 1000.25,
                            mood: None,
                        },
                        MailboxSide {
                            side: "side-b".into(),
                            opened: true,
                            added: 1002.0,
                            mood: None,
                        },
                    ],
                    messages: vec![
                        msg(
                            "side-a",
                            "7b2270616b65223a2031327d",
                            1001.125,
                            json!("58ba"),
                        ),
                        msg("side-b", "c3a9\"\\", 1002.5, Value::Null),
                    ],
                },
                MailboxRecord {
                    app_id: "b".into(),
                    id: "mby".into(),
                    for_nameplate: true,
                    updated: 1003.0,
                    crowded: false,
                    sides: vec![MailboxSide {
                        side: "side-c".into(),
                        opened: false,
                        added: 1003.0,
                        mood: Some("lonely".into()),
                    }],
                    messages: vec![],
                },
            ],
            nameplates: vec![
                NameplateRecord {
                    app_id: "a".into(),
                    name: "7".into(),
                    mailbox_id: "mbx".into(),
                    crowded: false,
                    sides: vec![
                        NameplateSide {
                            side: "side-a".into(),
                            claimed: true,
                            added: 1000.25,
                        },
                        NameplateSide {
                            side: "side-b".into(),
                            claimed: true,
                            added: 1002.0,
                        },
                    ],
                },
                NameplateRecord {
                    app_id: "b".into(),
                    name: "7".into(),
                    mailbox_id: "mby".into(),
                    crowded: false,
                    sides: vec![NameplateSide {
                        side: "side-c".into(),
                        claimed: false,
                        added: 1003.0,
                    }],
                },
            ],
        }
        .normalized()
    }

    /// `sqlite_master` entries other than SQLite's own.
    fn schema_of(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare(
                "SELECT type, name FROM sqlite_master \
                 WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
            )
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query");
        rows.collect::<Result<_, _>>().expect("rows")
    }

    #[test]
    fn version_1_mid_session_is_converted_after_a_backup() {
        let (dir, path) = python_db(MID_SESSION);
        let mut store = open(&path).expect("converted");
        assert_eq!(store.load().expect("load"), mid_session_snapshot());
        drop(store);

        // Exactly our layout remains, and it reopens as a plain v101 file.
        let conn = Connection::open(&path).expect("reopen");
        let fresh = Connection::open(dir.path().join("fresh.sqlite")).expect("fresh");
        fresh.execute_batch(CHANNEL_SCHEMA).expect("schema");
        assert_eq!(schema_of(&conn), schema_of(&fresh));
        let v: i64 = conn
            .query_row("SELECT version FROM version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, CHANNEL_VERSION);
        let stored: Vec<String> = conn
            .prepare("SELECT phase || ' ' || msg_id FROM messages ORDER BY rowid")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(stored, vec!["\"pake\" \"58ba\"", "\"pake\" null"]);
        drop(conn);
        let mut again = open(&path).expect("reopen as v101");
        assert_eq!(again.load().expect("load"), mid_session_snapshot());

        // The backup is the untouched Python database, in rollback-journal
        // mode so the Python server can use it as it is.
        let backup = Connection::open(format!("{path}-backup-v1")).expect("backup");
        let v: i64 = backup
            .query_row("SELECT version FROM version", [], |r| r.get(0))
            .expect("backup version");
        assert_eq!(v, 1);
        for (table, n) in [("messages", 3), ("nameplate_sides", 3), ("nameplates", 2)] {
            assert_eq!(count_table(&backup, table).expect("count"), n, "{table}");
        }
        let mode: String = backup
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "delete");
        assert!(!Path::new(&format!("{path}-backup-v1.tmp")).exists());
    }

    #[test]
    fn a_third_side_is_dropped_and_the_channel_marked_crowded() {
        // Python records the third claimer's nameplate and mailbox side rows
        // before refusing it with `crowded`.
        let (_dir, path) = python_db(
            "
            INSERT INTO mailboxes VALUES ('a', 'mbx', 1010, 1);
            INSERT INTO nameplates (app_id, name, mailbox_id) VALUES ('a', '12', 'mbx');
            INSERT INTO nameplate_sides VALUES (1, 1, 'first', 1000);
            INSERT INTO nameplate_sides VALUES (1, 1, 'third', 1010);
            INSERT INTO nameplate_sides VALUES (1, 0, 'second', 1005);
            INSERT INTO mailbox_sides VALUES ('mbx', 1, 'first', 1000, NULL);
            INSERT INTO mailbox_sides VALUES ('mbx', 1, 'third', 1010, NULL);
            INSERT INTO mailbox_sides VALUES ('mbx', 0, 'second', 1005, 'happy');
            ",
        );
        let snap = open(&path).expect("converted").load().expect("load");
        let mb = &snap.mailboxes[0];
        assert!(mb.crowded);
        let sides: Vec<(&str, bool)> = mb.sides.iter().map(|s| (&*s.side, s.opened)).collect();
        assert_eq!(sides, vec![("first", true), ("second", false)]);
        let np = &snap.nameplates[0];
        assert!(np.crowded);
        let sides: Vec<(&str, bool)> = np.sides.iter().map(|s| (&*s.side, s.claimed)).collect();
        assert_eq!(sides, vec![("first", true), ("second", false)]);
    }

    #[test]
    fn version_2_drops_the_connection_tables() {
        let (_dir, path) = python_db(&format!("{MID_SESSION}{PYTHON_V1_TO_V2}"));
        let mut store = open(&path).expect("converted");
        assert_eq!(store.load().expect("load"), mid_session_snapshot());
        drop(store);
        assert!(Path::new(&format!("{path}-backup-v2")).exists());
        let conn = Connection::open(&path).expect("reopen");
        let names: Vec<String> = schema_of(&conn).into_iter().map(|(_, n)| n).collect();
        for gone in ["connections", "connection_messages", "addrid_generation"] {
            assert!(!names.iter().any(|n| n == gone), "{gone} in {names:?}");
        }
    }

    #[test]
    fn other_versions_are_refused_untouched() {
        let (_dir, path) = python_db("UPDATE version SET version = 3;");
        assert!(matches!(open(&path), Err(StoreError::UnknownVersion(3))));
        assert!(!Path::new(&format!("{path}-backup-v3")).exists());
        let conn = Connection::open(&path).expect("reopen");
        assert_eq!(count_table(&conn, "nameplates").expect("python table"), 0);
    }

    #[test]
    fn a_corrupt_row_is_an_error_and_leaves_the_python_file() {
        let (_dir, path) = python_db(
            "
            INSERT INTO mailboxes VALUES ('a', 'mbx', 1000, 1);
            INSERT INTO messages VALUES ('a', 'mbx', 'side-a', 'pake', 'ff', NULL, 'x');
            ",
        );
        let err = open(&path).err().expect("refused");
        assert!(
            matches!(&err, StoreError::Open { reason, .. } if reason.contains("messages.server_rx")),
            "{err}"
        );
        // The transaction rolled back: still the Python layout, version 1,
        // and the next attempt (after a fix) replaces the backup.
        let conn = Connection::open(&path).expect("reopen");
        let v: i64 = conn
            .query_row("SELECT version FROM version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, 1);
        assert_eq!(count_table(&conn, "messages").expect("python table"), 1);
        conn.execute("UPDATE messages SET server_rx = 1001", [])
            .expect("fix");
        drop(conn);
        let snap = open(&path).expect("converted").load().expect("load");
        assert_eq!(snap.mailboxes[0].messages[0].server_rx, 1001.0);
    }

    #[test]
    fn a_blob_value_is_an_error_not_a_panic() {
        let (_dir, path) = python_db(
            "
            INSERT INTO mailboxes VALUES ('a', 'mbx', 1000, 1);
            INSERT INTO messages VALUES ('a', 'mbx', 'side-a', 'pake', x'00ff', 1001, 'x');
            ",
        );
        assert!(matches!(open(&path), Err(StoreError::Open { .. })));
    }

    #[test]
    fn a_missing_python_table_is_an_error() {
        let (_dir, path) = python_db("DROP TABLE messages;");
        let err = open(&path).err().expect("refused");
        assert!(err.to_string().contains("messages"), "{err}");
    }
}
