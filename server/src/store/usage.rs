//! The optional usage-statistics database, in the Python server's usage
//! schema version 2 (protocol.md §6.4, §8), so operators' tools read it unchanged.

use super::sqlite::read_version;
use super::StoreError;
use crate::protocol::UsageRecord;
use rusqlite::{params, Connection};

const USAGE_SCHEMA: &str = include_str!("../../schema/usage-v2.sql");
const UPGRADE_TO_V2: &str = include_str!("../../schema/upgrade-usage-to-v2.sql");

/// Rounds a start/connect time down to a multiple of the blur interval.
fn blurred(t: f64, blur: Option<u64>) -> f64 {
    match blur {
        Some(b) if b > 0 => (t / b as f64).floor() * b as f64,
        _ => t,
    }
}

/// Writes usage rows; `blur` rounds recorded start/connect times down.
pub struct UsageDb {
    conn: Connection,
    blur: Option<u64>,
}

impl UsageDb {
    /// Opens or creates the usage DB (a version-1 file is upgraded in place).
    pub fn open(path: &str, blur: Option<u64>) -> Result<Self, StoreError> {
        let conn = if path == ":memory:" {
            Connection::open_in_memory()
        } else {
            Connection::open(path)
        }
        .map_err(|e| StoreError::Open {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        match read_version(&conn)? {
            None => conn.execute_batch(&format!("BEGIN; {USAGE_SCHEMA} COMMIT;"))?,
            Some(1) => {
                if path != ":memory:" {
                    let backup = format!("{path}-backup-v1");
                    conn.execute("VACUUM INTO ?1", params![backup])?;
                }
                conn.execute_batch(&format!("BEGIN; {UPGRADE_TO_V2} COMMIT;"))?
            }
            Some(2) => {}
            Some(v) => return Err(StoreError::UnknownVersion(v)),
        }
        Ok(UsageDb { conn, blur })
    }

    /// Appends rows in one transaction.
    pub fn record(&mut self, rows: &[UsageRecord]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let blur = self.blur;
        let tx = self.conn.transaction()?;
        for row in rows {
            match row {
                UsageRecord::ClientVersion {
                    app_id,
                    side,
                    connect_time,
                    implementation,
                    version,
                } => {
                    let t = blurred(*connect_time, blur);
                    tx.prepare_cached(
                        "INSERT INTO client_versions (app_id, side, connect_time, implementation, version) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![app_id, side, t, implementation, version])?;
                }
                UsageRecord::Nameplate {
                    app_id,
                    started,
                    waiting_time,
                    total_time,
                    result,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO nameplates (app_id, started, total_time, waiting_time, result) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        app_id,
                        blurred(*started, blur),
                        total_time,
                        waiting_time,
                        result.as_str()
                    ])?;
                }
                UsageRecord::Mailbox {
                    app_id,
                    for_nameplate,
                    started,
                    waiting_time,
                    total_time,
                    result,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO mailboxes (app_id, for_nameplate, started, total_time, waiting_time, result) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        app_id,
                        for_nameplate,
                        blurred(*started, blur),
                        total_time,
                        waiting_time,
                        result.as_str()
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Rewrites the single `current` row (every prune tick, and at start-up).
    pub fn write_current(
        &mut self,
        rebooted: f64,
        updated: f64,
        connections: usize,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM current", [])?;
        tx.execute(
            "INSERT INTO current (rebooted, updated, blur_time, connections_websocket) \
             VALUES (?1, ?2, ?3, ?4)",
            params![rebooted, updated, self.blur, connections as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Runs a read-only query for introspection (Python binding, tests):
    /// returns every row of `table` as JSON objects.
    pub fn rows(&self, table: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let cols: &[&str] = match table {
            "nameplates" => &["app_id", "started", "waiting_time", "total_time", "result"],
            "mailboxes" => &[
                "app_id",
                "for_nameplate",
                "started",
                "total_time",
                "waiting_time",
                "result",
            ],
            "client_versions" => &[
                "app_id",
                "side",
                "connect_time",
                "implementation",
                "version",
            ],
            "current" => &["rebooted", "updated", "blur_time", "connections_websocket"],
            _ => return Ok(Vec::new()),
        };
        let sql = format!("SELECT {} FROM {table} ORDER BY rowid", cols.join(", "));
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], |r| {
            let mut obj = serde_json::Map::new();
            for (i, c) in cols.iter().enumerate() {
                let v: rusqlite::types::Value = r.get(i)?;
                let j = match v {
                    rusqlite::types::Value::Null => serde_json::Value::Null,
                    rusqlite::types::Value::Integer(n) => n.into(),
                    rusqlite::types::Value::Real(f) => serde_json::Number::from_f64(f)
                        .map(serde_json::Value::Number)
                        .unwrap_or(serde_json::Value::Null),
                    rusqlite::types::Value::Text(s) => s.into(),
                    rusqlite::types::Value::Blob(_) => serde_json::Value::Null,
                };
                obj.insert((*c).to_owned(), j);
            }
            Ok(serde_json::Value::Object(obj))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::UsageResult;

    #[test]
    fn rows_blur_and_current() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("usage.sqlite");
        let path = path.to_str().expect("path");
        let mut db = UsageDb::open(path, Some(20)).expect("open");
        db.record(&[
            UsageRecord::ClientVersion {
                app_id: "a".into(),
                side: "s".into(),
                connect_time: 451.0,
                implementation: Some("python".into()),
                version: Some("0.24.0".into()),
            },
            UsageRecord::Nameplate {
                app_id: "a".into(),
                started: 21.0,
                waiting_time: Some(2.0),
                total_time: 9.0,
                result: UsageResult::Happy,
            },
        ])
        .expect("record");
        db.write_current(451.0, 456.0, 1).expect("current");
        db.write_current(451.0, 457.0, 0).expect("current");
        let np = db.rows("nameplates").expect("rows");
        assert_eq!(
            np,
            vec![
                serde_json::json!({"app_id": "a", "started": 20, "waiting_time": 2, "total_time": 9, "result": "happy"})
            ]
        );
        assert_eq!(
            db.rows("client_versions").expect("rows")[0]["connect_time"],
            440
        );
        let cur = db.rows("current").expect("rows");
        assert_eq!(cur.len(), 1);
        assert_eq!(cur[0]["updated"], 457);
        assert_eq!(cur[0]["blur_time"], 20);
    }

    #[test]
    fn version_one_is_upgraded_with_a_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("usage.sqlite");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE version (version INTEGER); INSERT INTO version VALUES (1);",
        )
        .expect("v1");
        drop(conn);
        let p = path.to_str().expect("path");
        let db = UsageDb::open(p, None).expect("upgrade");
        assert!(db.rows("client_versions").expect("rows").is_empty());
        assert!(dir.path().join("usage.sqlite-backup-v1").exists());
    }
}
