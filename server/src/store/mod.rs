//! Durable storage behind a small, synchronous, domain-level trait: the core
//! emits [`Mutation`]s, a store applies them atomically and loads them back.

pub mod memory;
mod migrate;
pub mod sqlite;
pub mod usage;

use crate::protocol::{Mutation, Snapshot};

pub use memory::MemoryStore;
pub use sqlite::{Durability, SqliteStore};
pub use usage::UsageDb;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("unable to handle db version {0}")]
    UnknownVersion(i64),
    #[error("injected failure: {0}")]
    Injected(String),
}

/// Where the channel state lives. Implementations must make each
/// [`Store::apply`] call all-or-nothing: the server writes a command's `ack`
/// only after the batch holding its mutations was applied.
pub trait Store: Send {
    /// Everything stored, for the core to restore at start-up.
    fn load(&mut self) -> Result<Snapshot, StoreError>;

    /// Applies a batch of mutations (from one or many commands) atomically.
    fn apply(&mut self, batch: &[Mutation]) -> Result<(), StoreError>;
}

#[cfg(test)]
mod contract;
