//! An in-memory [`Store`]: for tests and ephemeral servers (nothing survives
//! the process). It keeps real state so the store contract tests hold for it.

use super::{Store, StoreError};
use crate::protocol::{
    MailboxRecord, MailboxSide, Mutation, NameplateRecord, NameplateSide, Snapshot,
};
use std::collections::BTreeMap;

type Key = (String, String);

/// Channel state kept in maps keyed by (app id, name or mailbox id).
#[derive(Debug, Default)]
pub struct MemoryStore {
    mailboxes: BTreeMap<Key, MailboxRecord>,
    nameplates: BTreeMap<Key, NameplateRecord>,
    /// When set, the next `apply` fails (for fault-injection tests).
    pub fail_next: bool,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn mailbox(&mut self, app_id: &str, id: &str) -> Option<&mut MailboxRecord> {
        self.mailboxes.get_mut(&(app_id.to_owned(), id.to_owned()))
    }

    fn nameplate(&mut self, app_id: &str, name: &str) -> Option<&mut NameplateRecord> {
        self.nameplates
            .get_mut(&(app_id.to_owned(), name.to_owned()))
    }

    fn apply_one(&mut self, m: &Mutation) {
        match m {
            Mutation::CreateMailbox {
                app_id,
                mailbox_id,
                for_nameplate,
                updated,
            } => {
                self.mailboxes.insert(
                    (app_id.clone(), mailbox_id.clone()),
                    MailboxRecord {
                        app_id: app_id.clone(),
                        id: mailbox_id.clone(),
                        for_nameplate: *for_nameplate,
                        updated: *updated,
                        crowded: false,
                        sides: Vec::new(),
                        messages: Vec::new(),
                    },
                );
            }
            Mutation::TouchMailbox {
                app_id,
                mailbox_id,
                updated,
            } => {
                if let Some(mb) = self.mailbox(app_id, mailbox_id) {
                    mb.updated = *updated;
                }
            }
            Mutation::MarkMailboxCrowded { app_id, mailbox_id } => {
                if let Some(mb) = self.mailbox(app_id, mailbox_id) {
                    mb.crowded = true;
                }
            }
            Mutation::AddMailboxSide {
                app_id,
                mailbox_id,
                side,
                added,
            } => {
                if let Some(mb) = self.mailbox(app_id, mailbox_id) {
                    mb.sides.push(MailboxSide {
                        side: side.clone(),
                        opened: true,
                        added: *added,
                        mood: None,
                    });
                }
            }
            Mutation::CloseMailboxSide {
                app_id,
                mailbox_id,
                side,
                mood,
            } => {
                if let Some(mb) = self.mailbox(app_id, mailbox_id) {
                    if let Some(s) = mb.sides.iter_mut().find(|s| &s.side == side) {
                        s.opened = false;
                        s.mood.clone_from(mood);
                    }
                }
            }
            Mutation::DeleteMailbox { app_id, mailbox_id } => {
                self.mailboxes.remove(&(app_id.clone(), mailbox_id.clone()));
            }
            Mutation::CreateNameplate {
                app_id,
                name,
                mailbox_id,
            } => {
                self.nameplates.insert(
                    (app_id.clone(), name.clone()),
                    NameplateRecord {
                        app_id: app_id.clone(),
                        name: name.clone(),
                        mailbox_id: mailbox_id.clone(),
                        crowded: false,
                        sides: Vec::new(),
                    },
                );
            }
            Mutation::MarkNameplateCrowded { app_id, name } => {
                if let Some(np) = self.nameplate(app_id, name) {
                    np.crowded = true;
                }
            }
            Mutation::AddNameplateSide {
                app_id,
                name,
                side,
                added,
            } => {
                if let Some(np) = self.nameplate(app_id, name) {
                    np.sides.push(NameplateSide {
                        side: side.clone(),
                        claimed: true,
                        added: *added,
                    });
                }
            }
            Mutation::ReleaseNameplateSide { app_id, name, side } => {
                if let Some(np) = self.nameplate(app_id, name) {
                    if let Some(s) = np.sides.iter_mut().find(|s| &s.side == side) {
                        s.claimed = false;
                    }
                }
            }
            Mutation::DeleteNameplate { app_id, name } => {
                self.nameplates.remove(&(app_id.clone(), name.clone()));
            }
            Mutation::AddMessage {
                app_id,
                mailbox_id,
                message,
            } => {
                if let Some(mb) = self.mailbox(app_id, mailbox_id) {
                    mb.messages.push(message.clone());
                }
            }
        }
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            mailboxes: self.mailboxes.values().cloned().collect(),
            nameplates: self.nameplates.values().cloned().collect(),
        }
        .normalized())
    }

    fn apply(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        if std::mem::take(&mut self.fail_next) {
            return Err(StoreError::Injected("memory store write".into()));
        }
        for m in batch {
            self.apply_one(m);
        }
        Ok(())
    }
}
