//! Domain-level state changes the core emits for storage, and the snapshot a
//! store loads at start-up. A store never sees protocol rules, only these.

use super::message::StoredMessage;
use super::model::{MailboxSide, NameplateSide};
use serde_json::Value;

/// One durable change. Every variant names its app, since nameplate names and
/// mailbox ids are scoped per app (protocol.md §12.11).
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    CreateMailbox {
        app_id: String,
        mailbox_id: String,
        for_nameplate: bool,
        updated: f64,
    },
    /// Sets the mailbox's `updated` (expiry clock). `AddMailboxSide` and
    /// `AddMessage` move it too, to their `added` / `server_rx` if later
    /// (see [`crate::protocol::Mailbox::updated`]).
    TouchMailbox {
        app_id: String,
        mailbox_id: String,
        updated: f64,
    },
    /// A third side tried to join: remembered for the `crowded` statistic.
    MarkMailboxCrowded {
        app_id: String,
        mailbox_id: String,
    },
    AddMailboxSide {
        app_id: String,
        mailbox_id: String,
        side: String,
        added: f64,
    },
    CloseMailboxSide {
        app_id: String,
        mailbox_id: String,
        side: String,
        mood: Option<String>,
    },
    /// Deletes the mailbox with its sides and messages.
    DeleteMailbox {
        app_id: String,
        mailbox_id: String,
    },
    CreateNameplate {
        app_id: String,
        name: String,
        mailbox_id: String,
    },
    MarkNameplateCrowded {
        app_id: String,
        name: String,
    },
    AddNameplateSide {
        app_id: String,
        name: String,
        side: String,
        added: f64,
    },
    ReleaseNameplateSide {
        app_id: String,
        name: String,
        side: String,
    },
    /// Deletes the nameplate with its sides.
    DeleteNameplate {
        app_id: String,
        name: String,
    },
    AddMessage {
        app_id: String,
        mailbox_id: String,
        message: StoredMessage,
    },
}

/// A mailbox as stored: what a store returns at start-up and what
/// introspection shows.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxRecord {
    pub app_id: String,
    pub id: String,
    pub for_nameplate: bool,
    /// Expiry clock: see [`crate::protocol::Mailbox::updated`] (a store
    /// keeps the explicit touches; [`Snapshot::normalized`] adds the rest).
    pub updated: f64,
    pub crowded: bool,
    /// In the order the sides joined.
    pub sides: Vec<MailboxSide>,
    /// In receive order.
    pub messages: Vec<StoredMessage>,
}

/// A nameplate as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NameplateRecord {
    pub app_id: String,
    pub name: String,
    pub mailbox_id: String,
    pub crowded: bool,
    /// In the order the sides claimed.
    pub sides: Vec<NameplateSide>,
}

/// All durable state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub mailboxes: Vec<MailboxRecord>,
    pub nameplates: Vec<NameplateRecord>,
}

impl Snapshot {
    /// The canonical form every store's `load` returns: records sorted by
    /// (app, id), so two snapshots compare equal whatever order a store
    /// returned them in; and each mailbox's `updated` the latest of its
    /// stored value, its sides' `added` and its messages' `server_rx`, as
    /// the core keeps it (stores write no touch for a new side or message).
    pub fn normalized(mut self) -> Self {
        for m in &mut self.mailboxes {
            let activity = m
                .sides
                .iter()
                .map(|s| s.added)
                .chain(m.messages.iter().map(|msg| msg.server_rx));
            m.updated = activity.fold(m.updated, f64::max);
        }
        self.mailboxes
            .sort_by(|a, b| (&a.app_id, &a.id).cmp(&(&b.app_id, &b.id)));
        self.nameplates
            .sort_by(|a, b| (&a.app_id, &a.name).cmp(&(&b.app_id, &b.name)));
        self
    }
}

/// JSON text of a stored value (phase, body and id keep their JSON type).
pub fn value_to_text(v: &Value) -> String {
    v.to_string()
}

/// Inverse of [`value_to_text`]; text that is not JSON (e.g. written by
/// another tool) is taken as a plain string rather than failing the load.
pub fn text_to_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}
