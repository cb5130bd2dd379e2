//! The pure protocol core: messages, per-connection session rules and the
//! nameplate/mailbox model. No IO, no clock, no global randomness: time and a
//! random source are passed in, so every behaviour is testable in memory.

pub mod error;
pub mod message;
pub mod model;
pub mod mutation;
pub mod permission;
pub mod session;
pub mod usage;

pub use error::ProtocolError;
pub use message::{decode, ClientMessage, DecodeError, ServerMessage, StoredMessage};
pub use model::{App, Mailbox, MailboxSide, Nameplate, NameplateSide};
pub use mutation::{MailboxRecord, Mutation, NameplateRecord, Snapshot};
pub use permission::Permissions;
pub use session::{Core, CoreSettings, Limits};
pub use usage::{UsageRecord, UsageResult};

/// Identifies one WebSocket connection for the lifetime of the process.
pub type ConnId = u64;

/// One frame the IO layer must deliver, in order, to one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub to: ConnId,
    pub msg: ServerMessage,
}

/// Everything one input caused: frames to route, state changes to persist
/// (before any of the frames is written: an `ack` means durable), and usage
/// statistics to record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    pub envelopes: Vec<Envelope>,
    pub mutations: Vec<Mutation>,
    pub usage: Vec<UsageRecord>,
}

impl Effects {
    /// Queues a frame for `to`.
    pub fn send(&mut self, to: ConnId, msg: ServerMessage) {
        self.envelopes.push(Envelope { to, msg });
    }
}

#[cfg(test)]
pub(crate) mod tests;
