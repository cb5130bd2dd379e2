//! The SQLite [`Store`] (the default): WAL journal, versioned schema, one
//! transaction per batch so many commands share one commit.

use super::{Store, StoreError};
use crate::protocol::mutation::{text_to_value, value_to_text};
use crate::protocol::{
    MailboxRecord, MailboxSide, Mutation, NameplateRecord, NameplateSide, Snapshot, StoredMessage,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;

/// Our channel schema version (Python's layouts are 1 and 2).
pub const CHANNEL_VERSION: i64 = 101;
const CHANNEL_SCHEMA: &str = include_str!("../../schema/channel-v101.sql");

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: survives a process crash (`kill -9`);
    /// the last commits may be lost on power failure.
    #[default]
    Process,
    /// WAL with `synchronous=FULL`: every commit is fsynced.
    PowerLoss,
}

/// Channel state in an SQLite file (or `:memory:`).
pub struct SqliteStore {
    /// Declared first so it stops before the connection and lock go.
    _checkpointer: Option<Checkpointer>,
    conn: Connection,
    /// Fault injection (store contract tests): the next `apply` fails after
    /// this many of its mutations were written inside its transaction,
    /// which must then leave nothing of the batch behind.
    pub fail_after: Option<usize>,
    /// An exclusive advisory lock on `<db>.lock`: two servers on one
    /// database would each keep their own in-memory state and diverge.
    /// (Readers such as monitoring plugins are not affected.)
    _lock: Option<std::fs::File>,
}

/// How often the checkpointer moves committed WAL frames into the
/// database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// WAL size (pages) at which the writer checkpoints inline after all
/// (about 16 MiB). Under a continuous load a background pass never
/// catches up completely (commits keep arriving while it fsyncs), so the
/// WAL is never reset and only this checkpoint, on the writer's own
/// connection between two commits, completes. By then the background
/// passes have copied all but the last ~200 ms of frames, so it is short
/// (3–12 ms in the benchmark, where about 1 commit in 400 does it), and
/// the reset WAL is rewritten in place
/// while its pages are still cached. A high limit (we had 40,000 pages)
/// let the WAL grow to 160 MiB: every frame then went to a fresh page of
/// the file (allocated and zeroed by the kernel), and the one inline
/// checkpoint copied and fsynced it all, stalling every connection for
/// 50–70 ms now that the writer shares their thread. (SQLite's default is
/// 1000.)
const INLINE_CHECKPOINT_PAGES: u32 = 4_000;

/// After a reset the WAL file is truncated to this size, so the disk space
/// a burst took is given back.
const WAL_SIZE_LIMIT: u64 = 16 << 20;

/// Checkpoints the WAL on its own thread and connection. A checkpoint
/// fsyncs the WAL and the database file; done inline (SQLite's automatic
/// checkpoint) it stalls the commit that triggered it, and with it every
/// `ack` of that batch, for tens of milliseconds on an ordinary disk.
/// A passive checkpoint on another connection runs alongside the writer
/// instead. Durability is unchanged: a commit is in the WAL (and, with
/// `synchronous=FULL`, fsynced) before `apply` returns, as before.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &str, synchronous: &str) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).map_err(|e| open_error(path, e))?;
        conn.execute_batch(&format!("PRAGMA synchronous={synchronous};"))?;
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("mailbox-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(CHECKPOINT_EVERY)
                {
                    // (busy, WAL pages, pages checkpointed); busy is normal
                    if let Err(e) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
                    {
                        tracing::debug!(error = %e, "background checkpoint failed");
                    }
                }
            })
            .map_err(|e| open_error(path, e))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long `open` waits for another server (e.g. one still shutting down)
/// to release the database.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn lock_database(path: &str, wait: std::time::Duration) -> Result<std::fs::File, StoreError> {
    let lock_path = format!("{path}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| open_error(&lock_path, e))?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(open_error(
                    path,
                    "in use by another server (its .lock file is held)",
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(open_error(&lock_path, e)),
        }
    }
}

fn open_error(path: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Reads the one-row `version` table, or None for an empty database.
pub(crate) fn read_version(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='version'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    if !has_table {
        return Ok(None);
    }
    Ok(conn
        .query_row("SELECT version FROM version", [], |r| r.get(0))
        .optional()?)
}

impl SqliteStore {
    /// Opens (creating if needed) the channel database at `path`;
    /// `":memory:"` gives a private in-memory database.
    pub fn open(path: &str, durability: Durability) -> Result<Self, StoreError> {
        Self::open_waiting(path, durability, LOCK_WAIT)
    }

    /// [`SqliteStore::open`], waiting at most `wait` for the database lock.
    pub fn open_waiting(
        path: &str,
        durability: Durability,
        wait: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let lock = if path == ":memory:" {
            None
        } else {
            Some(lock_database(path, wait)?)
        };
        let conn = if path == ":memory:" {
            Connection::open_in_memory()
        } else {
            Connection::open(path)
        }
        .map_err(|e| open_error(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        if path != ":memory:" {
            let mode: String = conn
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                .map_err(|e| open_error(path, e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path, mode, "could not switch the channel db to WAL");
            }
        }
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::PowerLoss => "FULL",
        };
        conn.execute_batch(&format!("PRAGMA synchronous={sync};"))?;
        match read_version(&conn).map_err(|e| open_error(path, e))? {
            None => {
                let tx = conn.unchecked_transaction()?;
                tx.execute_batch(CHANNEL_SCHEMA)?;
                tx.commit()?;
            }
            Some(CHANNEL_VERSION) => {}
            Some(v @ (1 | 2)) => super::migrate::upgrade_python_channel_db(&conn, path, v)?,
            Some(v) => return Err(StoreError::UnknownVersion(v)),
        }
        let checkpointer = if path == ":memory:" {
            None
        } else {
            conn.execute_batch(&format!(
                "PRAGMA wal_autocheckpoint={INLINE_CHECKPOINT_PAGES}; \
                 PRAGMA journal_size_limit={WAL_SIZE_LIMIT};"
            ))?;
            Some(Checkpointer::start(path, sync)?)
        };
        Ok(SqliteStore {
            _checkpointer: checkpointer,
            conn,
            fail_after: None,
            _lock: lock,
        })
    }

    /// Runs `PRAGMA integrity_check`; "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    fn apply_one(stmts: &mut Statements<'_>, m: &Mutation) -> Result<(), rusqlite::Error> {
        match m {
            Mutation::CreateMailbox {
                app_id,
                mailbox_id,
                for_nameplate,
                updated,
            } => {
                stmts.get(Sql::CreateMailbox)?.execute(params![
                    app_id,
                    mailbox_id,
                    updated,
                    for_nameplate
                ])?;
            }
            Mutation::TouchMailbox {
                app_id,
                mailbox_id,
                updated,
            } => {
                stmts
                    .get(Sql::TouchMailbox)?
                    .execute(params![app_id, mailbox_id, updated])?;
            }
            Mutation::MarkMailboxCrowded { app_id, mailbox_id } => {
                stmts
                    .get(Sql::MarkMailboxCrowded)?
                    .execute(params![app_id, mailbox_id])?;
            }
            Mutation::AddMailboxSide {
                app_id,
                mailbox_id,
                side,
                added,
            } => {
                stmts
                    .get(Sql::AddMailboxSide)?
                    .execute(params![app_id, mailbox_id, side, added])?;
            }
            Mutation::CloseMailboxSide {
                app_id,
                mailbox_id,
                side,
                mood,
            } => {
                stmts
                    .get(Sql::CloseMailboxSide)?
                    .execute(params![app_id, mailbox_id, side, mood])?;
            }
            Mutation::DeleteMailbox { app_id, mailbox_id } => {
                for statement in [
                    Sql::DeleteMailboxMessages,
                    Sql::DeleteMailboxSides,
                    Sql::DeleteMailbox,
                ] {
                    stmts.get(statement)?.execute(params![app_id, mailbox_id])?;
                }
            }
            Mutation::CreateNameplate {
                app_id,
                name,
                mailbox_id,
            } => {
                stmts
                    .get(Sql::CreateNameplate)?
                    .execute(params![app_id, name, mailbox_id])?;
            }
            Mutation::MarkNameplateCrowded { app_id, name } => {
                stmts
                    .get(Sql::MarkNameplateCrowded)?
                    .execute(params![app_id, name])?;
            }
            Mutation::AddNameplateSide {
                app_id,
                name,
                side,
                added,
            } => {
                stmts
                    .get(Sql::AddNameplateSide)?
                    .execute(params![app_id, name, side, added])?;
            }
            Mutation::ReleaseNameplateSide { app_id, name, side } => {
                stmts
                    .get(Sql::ReleaseNameplateSide)?
                    .execute(params![app_id, name, side])?;
            }
            Mutation::DeleteNameplate { app_id, name } => {
                for statement in [Sql::DeleteNameplateSides, Sql::DeleteNameplate] {
                    stmts.get(statement)?.execute(params![app_id, name])?;
                }
            }
            Mutation::AddMessage {
                app_id,
                mailbox_id,
                message,
            } => {
                stmts.get(Sql::AddMessage)?.execute(params![
                    app_id,
                    mailbox_id,
                    message.side,
                    value_to_text(&message.phase),
                    value_to_text(&message.body),
                    message.server_rx,
                    value_to_text(&message.id),
                ])?;
            }
        }
        Ok(())
    }
}

/// The statements `apply` runs; a statement's discriminant is its slot in
/// [`Statements`].
#[derive(Clone, Copy)]
enum Sql {
    CreateMailbox,
    TouchMailbox,
    MarkMailboxCrowded,
    AddMailboxSide,
    CloseMailboxSide,
    DeleteMailboxMessages,
    DeleteMailboxSides,
    DeleteMailbox,
    CreateNameplate,
    MarkNameplateCrowded,
    AddNameplateSide,
    ReleaseNameplateSide,
    DeleteNameplateSides,
    DeleteNameplate,
    AddMessage,
}

impl Sql {
    /// Number of statements (slots): keep `AddMessage` the last variant.
    const COUNT: usize = Sql::AddMessage as usize + 1;

    fn text(self) -> &'static str {
        match self {
            Sql::CreateMailbox => {
                "INSERT OR REPLACE INTO mailboxes (app_id, id, updated, for_nameplate, crowded) \
                 VALUES (?1, ?2, ?3, ?4, 0)"
            }
            Sql::TouchMailbox => "UPDATE mailboxes SET updated=?3 WHERE app_id=?1 AND id=?2",
            Sql::MarkMailboxCrowded => "UPDATE mailboxes SET crowded=1 WHERE app_id=?1 AND id=?2",
            Sql::AddMailboxSide => {
                "INSERT OR IGNORE INTO mailbox_sides (app_id, mailbox_id, side, opened, added, mood) \
                 VALUES (?1, ?2, ?3, 1, ?4, NULL)"
            }
            Sql::CloseMailboxSide => {
                "UPDATE mailbox_sides SET opened=0, mood=?4 \
                 WHERE app_id=?1 AND mailbox_id=?2 AND side=?3"
            }
            Sql::DeleteMailboxMessages => "DELETE FROM messages WHERE app_id=?1 AND mailbox_id=?2",
            Sql::DeleteMailboxSides => "DELETE FROM mailbox_sides WHERE app_id=?1 AND mailbox_id=?2",
            Sql::DeleteMailbox => "DELETE FROM mailboxes WHERE app_id=?1 AND id=?2",
            Sql::CreateNameplate => {
                "INSERT OR REPLACE INTO nameplates (app_id, name, mailbox_id, crowded) \
                 VALUES (?1, ?2, ?3, 0)"
            }
            Sql::MarkNameplateCrowded => {
                "UPDATE nameplates SET crowded=1 WHERE app_id=?1 AND name=?2"
            }
            Sql::AddNameplateSide => {
                "INSERT OR IGNORE INTO nameplate_sides (app_id, name, side, claimed, added) \
                 VALUES (?1, ?2, ?3, 1, ?4)"
            }
            Sql::ReleaseNameplateSide => {
                "UPDATE nameplate_sides SET claimed=0 WHERE app_id=?1 AND name=?2 AND side=?3"
            }
            Sql::DeleteNameplateSides => "DELETE FROM nameplate_sides WHERE app_id=?1 AND name=?2",
            Sql::DeleteNameplate => "DELETE FROM nameplates WHERE app_id=?1 AND name=?2",
            Sql::AddMessage => {
                "INSERT INTO messages (app_id, mailbox_id, side, phase, body, server_rx, msg_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            }
        }
    }
}

/// One transaction's prepared statements. Each is taken from rusqlite's
/// statement cache the first time the batch needs it and kept for the rest
/// of the batch: a cache lookup hashes the whole SQL text (and returning
/// the statement hashes it again), which cost as much as a small
/// statement's execution when done once per mutation.
struct Statements<'c> {
    tx: &'c rusqlite::Transaction<'c>,
    slots: [Option<rusqlite::CachedStatement<'c>>; Sql::COUNT],
}

impl<'c> Statements<'c> {
    fn new(tx: &'c rusqlite::Transaction<'c>) -> Self {
        Statements {
            tx,
            slots: Default::default(),
        }
    }

    fn get(
        &mut self,
        statement: Sql,
    ) -> Result<&mut rusqlite::CachedStatement<'c>, rusqlite::Error> {
        match &mut self.slots[statement as usize] {
            Some(stmt) => Ok(stmt),
            empty => Ok(empty.insert(self.tx.prepare_cached(statement.text())?)),
        }
    }
}

type Key = (String, String);

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let conn = &self.conn;
        let mut mailboxes: HashMap<Key, MailboxRecord> = HashMap::new();
        let mut stmt = conn.prepare(
            "SELECT app_id, id, for_nameplate, updated, crowded FROM mailboxes ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(MailboxRecord {
                app_id: r.get(0)?,
                id: r.get(1)?,
                for_nameplate: r.get(2)?,
                updated: r.get(3)?,
                crowded: r.get(4)?,
                sides: Vec::new(),
                messages: Vec::new(),
            })
        })?;
        for m in rows {
            let m = m?;
            mailboxes.insert((m.app_id.clone(), m.id.clone()), m);
        }
        let mut stmt = conn.prepare(
            "SELECT app_id, mailbox_id, side, opened, added, mood FROM mailbox_sides ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                MailboxSide {
                    side: r.get(2)?,
                    opened: r.get(3)?,
                    added: r.get(4)?,
                    mood: r.get(5)?,
                },
            ))
        })?;
        for row in rows {
            let (key, side) = row?;
            if let Some(mb) = mailboxes.get_mut(&key) {
                mb.sides.push(side);
            }
        }
        let mut stmt = conn.prepare(
            "SELECT app_id, mailbox_id, side, phase, body, server_rx, msg_id \
             FROM messages ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                StoredMessage {
                    side: r.get(2)?,
                    phase: text_to_value(&r.get::<_, String>(3)?),
                    body: text_to_value(&r.get::<_, String>(4)?),
                    server_rx: r.get(5)?,
                    id: text_to_value(&r.get::<_, String>(6)?),
                },
            ))
        })?;
        for row in rows {
            let (key, msg) = row?;
            if let Some(mb) = mailboxes.get_mut(&key) {
                mb.messages.push(msg);
            }
        }
        let mut nameplates: HashMap<Key, NameplateRecord> = HashMap::new();
        let mut stmt = conn
            .prepare("SELECT app_id, name, mailbox_id, crowded FROM nameplates ORDER BY rowid")?;
        let rows = stmt.query_map([], |r| {
            Ok(NameplateRecord {
                app_id: r.get(0)?,
                name: r.get(1)?,
                mailbox_id: r.get(2)?,
                crowded: r.get(3)?,
                sides: Vec::new(),
            })
        })?;
        for n in rows {
            let n = n?;
            nameplates.insert((n.app_id.clone(), n.name.clone()), n);
        }
        let mut stmt = conn.prepare(
            "SELECT app_id, name, side, claimed, added FROM nameplate_sides ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                NameplateSide {
                    side: r.get(2)?,
                    claimed: r.get(3)?,
                    added: r.get(4)?,
                },
            ))
        })?;
        for row in rows {
            let (key, side) = row?;
            if let Some(np) = nameplates.get_mut(&key) {
                np.sides.push(side);
            }
        }
        Ok(Snapshot {
            mailboxes: mailboxes.into_values().collect(),
            nameplates: nameplates.into_values().collect(),
        }
        .normalized())
    }

    fn apply(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        let fail_after = self.fail_after.take();
        if batch.is_empty() {
            return Ok(());
        }
        // dropped without `commit` on any error: rolled back
        let tx = self.conn.transaction()?;
        {
            let mut stmts = Statements::new(&tx);
            for (i, m) in batch.iter().enumerate() {
                if fail_after == Some(i) {
                    return Err(StoreError::Injected(format!(
                        "sqlite store write, after {i} of {} mutations",
                        batch.len()
                    )));
                }
                Self::apply_one(&mut stmts, m)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
