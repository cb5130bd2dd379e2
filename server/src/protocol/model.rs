//! The nameplate/mailbox model of one app: claim, release, open, add, close,
//! allocation and pruning (protocol.md §5), with the §12 fixes.

use super::error::ProtocolError;
use super::message::{ServerMessage, StoredMessage};
use super::mutation::Mutation;
use super::usage::{self, UsageRecord};
use super::{ConnId, Effects};
use rand::RngCore;
use std::collections::{BTreeMap, HashMap};

/// One side's claim on a nameplate.
#[derive(Debug, Clone, PartialEq)]
pub struct NameplateSide {
    pub side: String,
    /// False once the side released: it may not claim again (`reclaimed`).
    pub claimed: bool,
    /// First claim time; later idempotent claims don't change it.
    pub added: f64,
}

/// A short code that points at a mailbox until both sides released it.
#[derive(Debug, Clone, PartialEq)]
pub struct Nameplate {
    pub mailbox_id: String,
    pub sides: Vec<NameplateSide>,
    /// A third side was turned away (usage result `crowded`).
    pub crowded: bool,
}

/// One side's membership of a mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxSide {
    pub side: String,
    /// False once the side closed; the mailbox is deleted when none is open.
    pub opened: bool,
    pub added: f64,
    pub mood: Option<String>,
}

/// Where the two sides exchange messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Mailbox {
    /// Created by a nameplate claim (vs. opened directly by id).
    pub for_nameplate: bool,
    /// Last activity; the mailbox expires when this is older than the expiry.
    /// It never goes back (a clock step back doesn't shorten a mailbox's
    /// life), and it is the latest of the explicit touches
    /// ([`Mutation::TouchMailbox`]), its sides' `added` and its messages'
    /// `server_rx`: so opening a new side and adding a message need no
    /// touch of their own in storage, which derives it the same way at load.
    pub updated: f64,
    /// At most two: a third side is refused without being recorded
    /// (protocol.md §12.9), so it never blocks deletion.
    pub sides: Vec<MailboxSide>,
    /// Receive order, which is also replay order.
    pub messages: Vec<StoredMessage>,
    /// Sum of the messages' sizes, for the per-mailbox byte limit.
    pub stored_bytes: usize,
    /// Subscribed connections, in subscription order (broadcast order).
    pub listeners: Vec<ConnId>,
    pub crowded: bool,
    /// Distinguishes this mailbox from a later one with the same id, so a
    /// connection whose mailbox was deleted can't add to its successor.
    pub serial: u64,
}

/// Everything of one app id; apps never see each other's state.
#[derive(Debug, Default, Clone)]
pub struct App {
    /// Sorted as strings, which is the order `list` reports.
    pub nameplates: BTreeMap<String, Nameplate>,
    pub mailboxes: HashMap<String, Mailbox>,
}

/// Digit-length ranges tried in turn before random 4..6-digit ids (§5.1).
const SHORT_RANGES: [(u32, u32); 3] = [(1, 10), (10, 100), (100, 1000)];
const LONG_RANGE: (u32, u32) = (1000, 1_000_000);
const LONG_ATTEMPTS: usize = 1000;

fn uniform(rng: &mut dyn RngCore, n: usize) -> usize {
    // n is at most 999_000; modulo bias of a u64 draw is negligible
    (rng.next_u64() % n as u64) as usize
}

/// A fresh mailbox id: base32 of 8 random bytes, lower case, no padding.
pub fn new_mailbox_id(rng: &mut dyn RngCore) -> String {
    let mut bytes = [0u8; 8];
    rng.fill_bytes(&mut bytes);
    data_encoding::BASE32_NOPAD
        .encode(&bytes)
        .to_ascii_lowercase()
}

impl App {
    /// True when nothing is left and the app can be forgotten.
    pub fn is_empty(&self) -> bool {
        self.nameplates.is_empty() && self.mailboxes.is_empty()
    }

    /// Picks a free nameplate: shortest digit length first, uniformly random
    /// within it, unique among every nameplate of this app (§5.1).
    pub fn pick_free_nameplate(&self, rng: &mut dyn RngCore) -> Option<String> {
        let used = |n: u32| self.nameplates.contains_key(&n.to_string());
        for (lo, hi) in SHORT_RANGES {
            let free: Vec<u32> = (lo..hi).filter(|&n| !used(n)).collect();
            if !free.is_empty() {
                return Some(free[uniform(rng, free.len())].to_string());
            }
        }
        let (lo, hi) = LONG_RANGE;
        (0..LONG_ATTEMPTS)
            .map(|_| lo + uniform(rng, (hi - lo) as usize) as u32)
            .find(|&n| !used(n))
            .map(|n| n.to_string())
    }

    fn unused_mailbox_id(&self, rng: &mut dyn RngCore) -> String {
        loop {
            let id = new_mailbox_id(rng);
            if !self.mailboxes.contains_key(&id) {
                return id;
            }
        }
    }

    fn create_mailbox(
        &mut self,
        app_id: &str,
        mailbox_id: &str,
        for_nameplate: bool,
        now: f64,
        serial: u64,
        fx: &mut Effects,
    ) {
        self.mailboxes.insert(
            mailbox_id.to_owned(),
            Mailbox {
                for_nameplate,
                updated: now,
                sides: Vec::new(),
                messages: Vec::new(),
                stored_bytes: 0,
                listeners: Vec::new(),
                crowded: false,
                serial,
            },
        );
        fx.mutations.push(Mutation::CreateMailbox {
            app_id: app_id.to_owned(),
            mailbox_id: mailbox_id.to_owned(),
            for_nameplate,
            updated: now,
        });
    }

    /// The bookkeeping shared by `open`, `claim` and the implicit open of
    /// `close`: create the mailbox if needed, add the side, bump `updated`.
    /// A third distinct side is refused with `crowded` and not recorded.
    pub fn open_mailbox(
        &mut self,
        app_id: &str,
        mailbox_id: &str,
        side: &str,
        now: f64,
        serial: u64,
        fx: &mut Effects,
    ) -> Result<(), ProtocolError> {
        if !self.mailboxes.contains_key(mailbox_id) {
            self.create_mailbox(app_id, mailbox_id, false, now, serial, fx);
        }
        let Some(mb) = self.mailboxes.get_mut(mailbox_id) else {
            return Ok(());
        };
        if !mb.sides.iter().any(|s| s.side == side) {
            if mb.sides.len() >= 2 {
                if !mb.crowded {
                    mb.crowded = true;
                    fx.mutations.push(Mutation::MarkMailboxCrowded {
                        app_id: app_id.to_owned(),
                        mailbox_id: mailbox_id.to_owned(),
                    });
                }
                return Err(ProtocolError::Crowded);
            }
            mb.sides.push(MailboxSide {
                side: side.to_owned(),
                opened: true,
                added: now,
                mood: None,
            });
            fx.mutations.push(Mutation::AddMailboxSide {
                app_id: app_id.to_owned(),
                mailbox_id: mailbox_id.to_owned(),
                side: side.to_owned(),
                added: now,
            });
            // the new side's `added` is the touch (see `Mailbox::updated`)
            mb.updated = mb.updated.max(now);
            return Ok(());
        }
        mb.updated = mb.updated.max(now);
        fx.mutations.push(Mutation::TouchMailbox {
            app_id: app_id.to_owned(),
            mailbox_id: mailbox_id.to_owned(),
            updated: mb.updated,
        });
        Ok(())
    }

    /// Claims `name` for `side` (creating nameplate and mailbox if new) and
    /// returns the mailbox id. Idempotent per side (§5.2).
    #[allow(clippy::too_many_arguments)]
    pub fn claim(
        &mut self,
        app_id: &str,
        name: &str,
        side: &str,
        now: f64,
        rng: &mut dyn RngCore,
        serial: u64,
        fx: &mut Effects,
    ) -> Result<String, ProtocolError> {
        if !self.nameplates.contains_key(name) {
            let mailbox_id = self.unused_mailbox_id(rng);
            self.create_mailbox(app_id, &mailbox_id, true, now, serial, fx);
            self.nameplates.insert(
                name.to_owned(),
                Nameplate {
                    mailbox_id: mailbox_id.clone(),
                    sides: Vec::new(),
                    crowded: false,
                },
            );
            fx.mutations.push(Mutation::CreateNameplate {
                app_id: app_id.to_owned(),
                name: name.to_owned(),
                mailbox_id,
            });
        }
        let (mailbox_id, already) = match self.nameplates.get(name) {
            Some(np) => match np.sides.iter().find(|s| s.side == side) {
                Some(s) if !s.claimed => return Err(ProtocolError::Reclaimed),
                found => (np.mailbox_id.clone(), found.is_some()),
            },
            None => return Err(ProtocolError::Crowded),
        };
        if let Err(e) = self.open_mailbox(app_id, &mailbox_id, side, now, serial, fx) {
            if let Some(np) = self.nameplates.get_mut(name) {
                if !np.crowded {
                    np.crowded = true;
                    fx.mutations.push(Mutation::MarkNameplateCrowded {
                        app_id: app_id.to_owned(),
                        name: name.to_owned(),
                    });
                }
            }
            return Err(e);
        }
        if !already {
            if let Some(np) = self.nameplates.get_mut(name) {
                np.sides.push(NameplateSide {
                    side: side.to_owned(),
                    claimed: true,
                    added: now,
                });
                fx.mutations.push(Mutation::AddNameplateSide {
                    app_id: app_id.to_owned(),
                    name: name.to_owned(),
                    side: side.to_owned(),
                    added: now,
                });
            }
        }
        Ok(mailbox_id)
    }

    /// Releases `side`'s claim; the nameplate is deleted (and a usage row
    /// written) once no side holds a claim. Unknown names/sides: no-op.
    pub fn release(&mut self, app_id: &str, name: &str, side: &str, now: f64, fx: &mut Effects) {
        let Some(np) = self.nameplates.get_mut(name) else {
            return;
        };
        let Some(s) = np.sides.iter_mut().find(|s| s.side == side) else {
            return;
        };
        if s.claimed {
            s.claimed = false;
            fx.mutations.push(Mutation::ReleaseNameplateSide {
                app_id: app_id.to_owned(),
                name: name.to_owned(),
                side: side.to_owned(),
            });
        }
        if np.sides.iter().all(|s| !s.claimed) {
            self.retire_nameplate(app_id, name, now, false, true, fx);
        }
    }

    /// Deletes a nameplate, writing its usage row when `record` is set.
    fn retire_nameplate(
        &mut self,
        app_id: &str,
        name: &str,
        now: f64,
        pruned: bool,
        record: bool,
        fx: &mut Effects,
    ) {
        let Some(np) = self.nameplates.remove(name) else {
            return;
        };
        fx.mutations.push(Mutation::DeleteNameplate {
            app_id: app_id.to_owned(),
            name: name.to_owned(),
        });
        if record && !np.sides.is_empty() {
            let added: Vec<f64> = np.sides.iter().map(|s| s.added).collect();
            let (started, waiting_time, total_time) = usage::timings(&added, now);
            fx.usage.push(UsageRecord::Nameplate {
                app_id: app_id.to_owned(),
                started,
                waiting_time,
                total_time,
                result: usage::nameplate_result(np.sides.len(), pruned, np.crowded),
            });
        }
    }

    /// Subscribes `conn` and returns the stored messages for replay.
    pub fn subscribe(&mut self, mailbox_id: &str, conn: ConnId) -> Vec<StoredMessage> {
        match self.mailboxes.get_mut(mailbox_id) {
            Some(mb) => {
                if !mb.listeners.contains(&conn) {
                    mb.listeners.push(conn);
                }
                mb.messages.clone()
            }
            None => Vec::new(),
        }
    }

    /// Removes a listener (disconnect or close); the state is untouched.
    pub fn unsubscribe(&mut self, mailbox_id: &str, conn: ConnId) {
        if let Some(mb) = self.mailboxes.get_mut(mailbox_id) {
            mb.listeners.retain(|&c| c != conn);
        }
    }

    /// Stores a message and broadcasts it to every listener, sender included.
    pub fn add(&mut self, app_id: &str, mailbox_id: &str, msg: StoredMessage, fx: &mut Effects) {
        let Some(mb) = self.mailboxes.get_mut(mailbox_id) else {
            return;
        };
        // the stored message's `server_rx` is the touch (see `Mailbox::updated`)
        mb.updated = mb.updated.max(msg.server_rx);
        for &conn in &mb.listeners {
            fx.send(conn, ServerMessage::Message(msg.clone()));
        }
        fx.mutations.push(Mutation::AddMessage {
            app_id: app_id.to_owned(),
            mailbox_id: mailbox_id.to_owned(),
            message: msg.clone(),
        });
        mb.stored_bytes += msg.size();
        mb.messages.push(msg);
    }

    /// Marks `side` closed with `mood`; when no side is left open, deletes
    /// the mailbox, its messages and the nameplates pointing at it (only
    /// those: protocol.md §12.10) and writes the usage row.
    pub fn close(
        &mut self,
        app_id: &str,
        mailbox_id: &str,
        side: &str,
        mood: Option<String>,
        now: f64,
        fx: &mut Effects,
    ) {
        let Some(mb) = self.mailboxes.get_mut(mailbox_id) else {
            return;
        };
        let Some(s) = mb.sides.iter_mut().find(|s| s.side == side) else {
            return;
        };
        s.opened = false;
        s.mood.clone_from(&mood);
        fx.mutations.push(Mutation::CloseMailboxSide {
            app_id: app_id.to_owned(),
            mailbox_id: mailbox_id.to_owned(),
            side: side.to_owned(),
            mood,
        });
        if mb.sides.iter().any(|s| s.opened) {
            return;
        }
        self.retire_mailbox(app_id, mailbox_id, now, false, fx);
    }

    fn retire_mailbox(
        &mut self,
        app_id: &str,
        mailbox_id: &str,
        now: f64,
        pruned: bool,
        fx: &mut Effects,
    ) {
        let pointing: Vec<String> = self
            .nameplates
            .iter()
            .filter(|(_, np)| np.mailbox_id == mailbox_id)
            .map(|(name, _)| name.clone())
            .collect();
        for name in pointing {
            // The Python server writes a nameplate row only when pruning.
            self.retire_nameplate(app_id, &name, now, pruned, pruned, fx);
        }
        let Some(mb) = self.mailboxes.remove(mailbox_id) else {
            return;
        };
        fx.mutations.push(Mutation::DeleteMailbox {
            app_id: app_id.to_owned(),
            mailbox_id: mailbox_id.to_owned(),
        });
        if !mb.sides.is_empty() {
            let added: Vec<f64> = mb.sides.iter().map(|s| s.added).collect();
            let (started, waiting_time, total_time) = usage::timings(&added, now);
            let moods = mb.sides.iter().map(|s| s.mood.as_deref());
            fx.usage.push(UsageRecord::Mailbox {
                app_id: app_id.to_owned(),
                for_nameplate: mb.for_nameplate,
                started,
                waiting_time,
                total_time,
                result: usage::mailbox_result(moods, mb.sides.len(), pruned, mb.crowded),
            });
        }
    }

    /// Expires channels idle since `old` (§5.7): mailboxes with a listener
    /// are touched first and so survive; expired mailboxes take their
    /// nameplates with them. Returns true if anything was removed.
    pub fn prune(&mut self, app_id: &str, now: f64, old: f64, fx: &mut Effects) -> bool {
        for (id, mb) in self.mailboxes.iter_mut() {
            if !mb.listeners.is_empty() {
                mb.updated = mb.updated.max(now);
                fx.mutations.push(Mutation::TouchMailbox {
                    app_id: app_id.to_owned(),
                    mailbox_id: id.clone(),
                    updated: mb.updated,
                });
            }
        }
        let mut expired: Vec<String> = self
            .mailboxes
            .iter()
            .filter(|(_, mb)| mb.updated <= old)
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        // nameplates whose mailbox is missing can't be reached; drop them too
        let orphans: Vec<String> = self
            .nameplates
            .iter()
            .filter(|(_, np)| !self.mailboxes.contains_key(&np.mailbox_id))
            .map(|(n, _)| n.clone())
            .collect();
        let removed = !expired.is_empty() || !orphans.is_empty();
        for name in orphans {
            self.retire_nameplate(app_id, &name, now, true, true, fx);
        }
        for id in expired {
            self.retire_mailbox(app_id, &id, now, true, fx);
        }
        removed
    }
}
