//! The per-connection session rules and the dispatcher: one client message
//! in, the ack, replies, broadcasts, mutations and usage rows out
//! (protocol.md §2.2–§2.4, checks in the Python server's exact order).

use super::error::{check_nameplate, ProtocolError};
use super::message::{ClientMessage, ServerMessage, StoredMessage};
use super::model::{App, Mailbox, MailboxSide, Nameplate};
use super::mutation::{MailboxRecord, Mutation, NameplateRecord, Snapshot};
use super::permission::{new_resource, verify_hashcash, Permissions};
use super::usage::UsageRecord;
use super::{ConnId, Effects};
use rand::RngCore;
use serde_json::Value;
use std::collections::HashMap;

/// Server-wide settings the core needs.
#[derive(Debug, Clone, Default)]
pub struct CoreSettings {
    /// `--disallow-list`: `list` always answers an empty list.
    pub disallow_list: bool,
    /// Storage limits, so nobody can fill the disk through the mailbox.
    pub limits: Limits,
    /// The permissions extension (off by default).
    pub permissions: Permissions,
}

/// Storage limits; hitting one gets the client an `error` (never a drop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Messages one mailbox may hold (real clients use fewer than 20).
    pub max_mailbox_messages: usize,
    /// Bytes of `phase` + `body` one mailbox may hold.
    pub max_mailbox_bytes: usize,
    /// Live nameplates per app id.
    pub max_app_nameplates: usize,
    /// Live mailboxes in the whole server.
    pub max_mailboxes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_mailbox_messages: 1000,
            max_mailbox_bytes: 4 << 20,
            max_app_nameplates: 100_000,
            max_mailboxes: 1_000_000,
        }
    }
}

impl Limits {
    /// No limits (core unit tests of the Python behaviours).
    pub fn unlimited() -> Self {
        Limits {
            max_mailbox_messages: usize::MAX,
            max_mailbox_bytes: usize::MAX,
            max_app_nameplates: usize::MAX,
            max_mailboxes: usize::MAX,
        }
    }
}

/// Per-connection flags; never persisted (§2.2).
#[derive(Debug, Default)]
struct Session {
    /// Set by `bind`: (app id, side).
    bound: Option<(String, String)>,
    did_allocate: bool,
    did_claim: bool,
    /// The nameplate of this connection's `claim` (for a bare `release`).
    nameplate: Option<String>,
    did_release: bool,
    /// The mailbox id of the last `open` attempt (for `close` checks).
    mailbox_id: Option<String>,
    /// The mailbox currently open (subscribed), with its serial.
    open: Option<(String, u64)>,
    did_close: bool,
    /// This connection's hashcash resource (permissions extension).
    resource: Option<String>,
    /// A permission was granted (`submit-permission` succeeded).
    permitted: bool,
    /// Stamps already spent on this connection.
    stamps: Vec<String>,
}

/// The whole protocol state of a server: apps and connection sessions.
#[derive(Debug, Default)]
pub struct Core {
    settings: CoreSettings,
    apps: HashMap<String, App>,
    sessions: HashMap<ConnId, Session>,
    next_serial: u64,
    /// Live mailboxes across all apps (kept for the `max_mailboxes` limit).
    mailbox_count: usize,
    /// How often each limit was hit, by name (for logs and metrics).
    pub limit_hits: HashMap<&'static str, u64>,
}

fn field_str<'a>(
    msg: &'a ClientMessage,
    key: &'static str,
) -> Result<Option<&'a str>, ProtocolError> {
    match msg.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ProtocolError::NotAString(key)),
    }
}

/// What a `release` or `close` acts on: the nameplate or mailbox named under
/// `key` (which must be the one this connection claimed or opened, if it
/// did: `mismatch` otherwise), else the one it did claim or open
/// (`missing` when it did neither).
fn named_or_used(
    msg: &ClientMessage,
    key: &'static str,
    used: Option<&String>,
    mismatch: ProtocolError,
    missing: ProtocolError,
) -> Result<String, ProtocolError> {
    match msg.get(key) {
        Some(given) => {
            if used.is_some_and(|used| given.as_str() != Some(used.as_str())) {
                return Err(mismatch);
            }
            given
                .as_str()
                .map(str::to_owned)
                .ok_or(ProtocolError::NotAString(key))
        }
        None => used.cloned().ok_or(missing),
    }
}

fn scalar(msg: &ClientMessage, key: &'static str) -> Result<Value, ProtocolError> {
    match msg.get(key) {
        None => Ok(Value::Null),
        Some(Value::Array(_) | Value::Object(_)) => Err(ProtocolError::NotAScalar(key)),
        Some(v) => Ok(v.clone()),
    }
}

/// `client_version` is `[implementation, version, ...]` (extra elements
/// ignored, as the Python server does); absent means unknown. Other shapes
/// are refused (the Python server drops the connection for most of them).
fn client_version(v: Option<&Value>) -> Result<(Option<String>, Option<String>), ProtocolError> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    match v {
        None => Ok((None, None)),
        Some(Value::Array(items)) if items.len() >= 2 => Ok((text(&items[0]), text(&items[1]))),
        Some(_) => Err(ProtocolError::BadClientVersion),
    }
}

impl Core {
    pub fn new(settings: CoreSettings) -> Self {
        Core {
            settings,
            ..Default::default()
        }
    }

    /// Rebuilds the state a store persisted (sessions and listeners are not
    /// persisted: clients reconnect and re-open).
    pub fn restore(settings: CoreSettings, snapshot: Snapshot) -> Self {
        let mut core = Core::new(settings);
        for m in snapshot.mailboxes {
            let serial = core.serial();
            core.apps.entry(m.app_id).or_default().mailboxes.insert(
                m.id,
                Mailbox {
                    for_nameplate: m.for_nameplate,
                    updated: m.updated,
                    sides: m.sides,
                    stored_bytes: m.messages.iter().map(StoredMessage::size).sum(),
                    messages: m.messages,
                    listeners: Vec::new(),
                    crowded: m.crowded,
                    serial,
                },
            );
        }
        core.mailbox_count = core.apps.values().map(|a| a.mailboxes.len()).sum();
        for n in snapshot.nameplates {
            core.apps.entry(n.app_id).or_default().nameplates.insert(
                n.name,
                Nameplate {
                    mailbox_id: n.mailbox_id,
                    sides: n.sides,
                    crowded: n.crowded,
                },
            );
        }
        core
    }

    /// Replaces the state with `snapshot` (what storage really holds, after
    /// a failed commit), keeping sessions, and the listeners and serials of
    /// every mailbox that still exists, so unaffected clients carry on.
    pub fn resync(&mut self, snapshot: Snapshot) {
        let fresh = Core::restore(self.settings.clone(), snapshot);
        let mut old = std::mem::take(&mut self.apps);
        self.apps = fresh.apps;
        self.mailbox_count = fresh.mailbox_count;
        let mut next = self.next_serial;
        for (app_id, app) in self.apps.iter_mut() {
            let mut old_app = old.remove(app_id);
            for (id, mb) in app.mailboxes.iter_mut() {
                match old_app.as_mut().and_then(|a| a.mailboxes.remove(id)) {
                    Some(prev) => {
                        mb.listeners = prev.listeners;
                        mb.serial = prev.serial;
                    }
                    None => {
                        // back from storage: a serial no connection holds
                        next += 1;
                        mb.serial = next;
                    }
                }
            }
        }
        self.next_serial = next;
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// Replaces the settings (live reconfiguration); state is untouched.
    pub fn set_settings(&mut self, settings: CoreSettings) {
        self.settings = settings;
    }

    /// Registers a new connection (before its first message) and returns
    /// the welcome's `permission-required` value, if the extension is on.
    pub fn connect(&mut self, conn: ConnId, rng: &mut dyn RngCore) -> Option<Value> {
        let mut session = Session::default();
        let perms = &self.settings.permissions;
        let offer = perms.advertised().then(|| {
            let resource = perms.hashcash_bits.map(|_| new_resource(rng));
            let value = perms.welcome_value(resource.as_deref());
            session.resource = resource;
            value
        });
        self.sessions.insert(conn, session);
        offer
    }

    /// Forgets a connection: its subscription ends, the state stays (§5.4).
    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some(session) = self.sessions.remove(&conn) {
            if let (Some((app_id, _)), Some((mailbox_id, _))) = (session.bound, session.open) {
                if let Some(app) = self.apps.get_mut(&app_id) {
                    app.unsubscribe(&mailbox_id, conn);
                }
            }
        }
    }

    /// Number of connections currently subscribed to a mailbox (the usage
    /// DB's `connections_websocket`).
    pub fn listening_connections(&self) -> usize {
        self.apps
            .values()
            .flat_map(|a| a.mailboxes.values())
            .map(|m| m.listeners.len())
            .sum()
    }

    /// Live (nameplates, mailboxes, messages), for metrics.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.apps.values().fold((0, 0, 0), |(n, m, k), a| {
            (
                n + a.nameplates.len(),
                m + a.mailboxes.len(),
                k + a
                    .mailboxes
                    .values()
                    .map(|mb| mb.messages.len())
                    .sum::<usize>(),
            )
        })
    }

    /// Number of registered connections.
    pub fn connections(&self) -> usize {
        self.sessions.len()
    }

    /// Handles one decoded client message from `conn`, received at `now`.
    pub fn handle(
        &mut self,
        conn: ConnId,
        msg: ClientMessage,
        now: f64,
        rng: &mut dyn RngCore,
    ) -> Effects {
        let mut fx = Effects::default();
        if !msg.contains_key("type") {
            fx.send(
                conn,
                ServerMessage::Error {
                    error: ProtocolError::MissingType.to_string(),
                    orig: Value::Object(msg),
                },
            );
            return fx;
        }
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        fx.send(conn, ServerMessage::Ack { id });
        if let Err(e) = self.dispatch(conn, &msg, now, rng, &mut fx) {
            fx.send(
                conn,
                ServerMessage::Error {
                    error: e.to_string(),
                    orig: Value::Object(msg),
                },
            );
        }
        self.count_mailboxes(&fx);
        fx
    }

    fn count_mailboxes(&mut self, fx: &Effects) {
        for m in &fx.mutations {
            match m {
                Mutation::CreateMailbox { .. } => self.mailbox_count += 1,
                Mutation::DeleteMailbox { .. } => {
                    self.mailbox_count = self.mailbox_count.saturating_sub(1)
                }
                _ => {}
            }
        }
    }

    /// Counts a limit hit and builds its error.
    fn limit(&mut self, name: &'static str, text: &str) -> ProtocolError {
        *self.limit_hits.entry(name).or_default() += 1;
        tracing::warn!(limit = name, "limit reached");
        ProtocolError::Limit(text.to_owned())
    }

    fn check_new_mailbox(&mut self) -> Result<(), ProtocolError> {
        if self.mailbox_count >= self.settings.limits.max_mailboxes {
            return Err(self.limit(
                "max_mailboxes",
                "server is full: too many mailboxes in use, try again later",
            ));
        }
        Ok(())
    }

    fn check_new_nameplate(&mut self, app_id: &str) -> Result<(), ProtocolError> {
        let used = self.apps.get(app_id).map_or(0, |a| a.nameplates.len());
        if used >= self.settings.limits.max_app_nameplates {
            return Err(self.limit(
                "max_app_nameplates",
                "too many nameplates in use for this app, try again later",
            ));
        }
        self.check_new_mailbox()
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        msg: &ClientMessage,
        now: f64,
        rng: &mut dyn RngCore,
        fx: &mut Effects,
    ) -> Result<(), ProtocolError> {
        let mtype = msg.get("type").and_then(Value::as_str).unwrap_or("");
        match mtype {
            "ping" => {
                let pong = msg.get("ping").ok_or(ProtocolError::PingRequiresPing)?;
                fx.send(conn, ServerMessage::Pong { pong: pong.clone() });
                return Ok(());
            }
            "bind" => return self.bind(conn, msg, now, fx),
            "submit-permission" | "submit-permissions"
                if self.settings.permissions.advertised() =>
            {
                return self.submit_permission(conn, msg);
            }
            _ => {}
        }
        let session = self.sessions.entry(conn).or_default();
        let Some((app_id, side)) = session.bound.clone() else {
            return Err(ProtocolError::MustBindFirst);
        };
        match mtype {
            "list" => {
                let nameplates = if self.settings.disallow_list {
                    Vec::new()
                } else {
                    self.apps
                        .get(&app_id)
                        .map(|a| a.nameplates.keys().cloned().collect())
                        .unwrap_or_default()
                };
                fx.send(conn, ServerMessage::Nameplates { nameplates });
                Ok(())
            }
            "allocate" => self.allocate(conn, &app_id, &side, now, rng, fx),
            "claim" => self.claim(conn, msg, &app_id, &side, now, rng, fx),
            "release" => self.release(conn, msg, &app_id, &side, now, fx),
            "open" => self.open(conn, msg, &app_id, &side, now, fx),
            "add" => self.add(conn, msg, &app_id, &side, now, fx),
            "close" => self.close(conn, msg, &app_id, &side, now, fx),
            _ => Err(ProtocolError::UnknownType),
        }
    }

    fn session(&mut self, conn: ConnId) -> &mut Session {
        self.sessions.entry(conn).or_default()
    }

    fn bind(
        &mut self,
        conn: ConnId,
        msg: &ClientMessage,
        now: f64,
        fx: &mut Effects,
    ) -> Result<(), ProtocolError> {
        if self.session(conn).bound.is_some() {
            return Err(ProtocolError::AlreadyBound);
        }
        if !self.settings.permissions.allow_none && !self.session(conn).permitted {
            return Err(ProtocolError::PermissionFirst);
        }
        if !msg.contains_key("appid") {
            return Err(ProtocolError::BindRequiresAppid);
        }
        if !msg.contains_key("side") {
            return Err(ProtocolError::BindRequiresSide);
        }
        let app_id = field_str(msg, "appid")?.unwrap_or_default().to_owned();
        let side = field_str(msg, "side")?.unwrap_or_default().to_owned();
        let (implementation, version) = client_version(msg.get("client_version"))?;
        fx.usage.push(UsageRecord::ClientVersion {
            app_id: app_id.clone(),
            side: side.clone(),
            connect_time: now,
            implementation,
            version,
        });
        self.session(conn).bound = Some((app_id, side));
        Ok(())
    }

    fn submit_permission(
        &mut self,
        conn: ConnId,
        msg: &ClientMessage,
    ) -> Result<(), ProtocolError> {
        let perms = self.settings.permissions.clone();
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        if !perms.names().contains(&method) {
            let shown = msg
                .get("method")
                .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned))
                .unwrap_or_default();
            return Err(ProtocolError::UnknownPermissionMethod(
                shown,
                perms.names().join(", "),
            ));
        }
        let session = self.session(conn);
        if method == "hashcash" {
            let stamp = msg.get("stamp").and_then(Value::as_str).unwrap_or("");
            let ok = match (&session.resource, perms.hashcash_bits) {
                (Some(resource), Some(bits)) => {
                    !session.stamps.iter().any(|s| s == stamp)
                        && verify_hashcash(stamp, resource, bits)
                }
                _ => false,
            };
            if !ok {
                return Err(ProtocolError::PermissionFailed);
            }
            session.stamps.push(stamp.to_owned());
        }
        session.permitted = true;
        Ok(())
    }

    fn allocate(
        &mut self,
        conn: ConnId,
        app_id: &str,
        side: &str,
        now: f64,
        rng: &mut dyn RngCore,
        fx: &mut Effects,
    ) -> Result<(), ProtocolError> {
        if self.session(conn).did_allocate {
            return Err(ProtocolError::AlreadyAllocated);
        }
        self.check_new_nameplate(app_id)?;
        let serial = self.serial();
        let app = self.apps.entry(app_id.to_owned()).or_default();
        let name = app
            .pick_free_nameplate(rng)
            .ok_or(ProtocolError::NoFreeNameplate)?;
        app.claim(app_id, &name, side, now, rng, serial, fx)?;
        self.session(conn).did_allocate = true;
        fx.send(conn, ServerMessage::Allocated { nameplate: name });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn claim(
        &mut self,
        conn: ConnId,
        msg: &ClientMessage,
        app_id: &str,
        side: &str,
        now: f64,
        rng: &mut dyn RngCore,
        fx: &mut Effects,
    ) -> Result<(), ProtocolError> {
        if !msg.contains_key("nameplate") {
            return Err(ProtocolError::ClaimRequiresNameplate);
        }
        let session = self.session(conn);
        if session.did_claim {
            return Err(ProtocolError::OnlyOneClaim);
        }
        // a rejected claim still uses up the connection's one claim
        session.did_claim = true;
        let name = field_str(msg, "nameplate")?.unwrap_or_default();
        check_nameplate(name)?;
        self.session(conn).nameplate = Some(name.to_owned());
        if !self
            .apps
            .get(app_id)
            .is_some_and(|a| a.nameplates.contains_key(name))
        {
            self.check_new_nameplate(app_id)?;
        }
        let serial = self.serial();
        let app = self.apps.entry(app_id.to_owned()).or_default();
        let mailbox = app.claim(app_id, name, side, now, rng, serial, fx)?;
        fx.send(conn, ServerMessage::Claimed { mailbox });
        Ok(())
    }

    fn release(
        &mut self,
        conn: ConnId,
        msg: &ClientMessage,
        app_id: &str,
        side: &str,
        now: f64,
        fx: &mut Effects,
    ) -> Result<(), ProtocolError> {
        let session = self.session(conn);
        if session.did_release {
            return Err(ProtocolError::OnlyOneRelease);
        }
        let name = named_or_used(
            msg,
            "nameplate",
            session.nameplate.as_ref(),
            ProtocolError::ReleaseClaimMismatch,
            ProtocolError::ReleaseWithoutNameplate,
        )?;
        session.did_release = true;
        if let Some(app) = self.apps.get_mut(app_id) {
            app.release(app_id, &name, side, now, fx);
        }
        self.forget_if_empty(app_id);
        fx.send(conn, ServerMessage::Released);
        Ok(())
    }

    /// True when the connection's open mailbox has since been deleted (by the
    /// other side's close or by pruning).
    fn is_stale(&self, app_id: &str, open: &(String, u64)) -> bool {
        self.apps
            .get(app_id)
            .and_then(|a| a.mailboxes.get(&open.0))
            .is_none_or(|mb| mb.serial != open.1)
    }

    fn open(
        &mut self,
        conn: ConnId,
        msg: &ClientMessage,
        app_id: &str,
        side: &str,
        now: f64,
        fx: &mut Effects,
    ) -> Result<(), ProtocolError> {
        if self.session(conn).open.is_some() {
            return Err(ProtocolError::OnlyOneOpen);
        }
        let mailbox_id = field_str(msg, "mailbox")?
            .ok_or(ProtocolError::OpenRequiresMailbox)?
            .to_owned();
        self.session(conn).mailbox_id = Some(mailbox_id.clone());
        if !self
            .apps
            .get(app_id)
            .is_some_and(|a| a.mailboxes.contains_key(&mailbox_id))
        {
            self.check_new_mailbox()?;
        }
        let serial = self.serial();
        let app = self.apps.entry(app_id.to_owned()).or_default();
        app.open_mailbox(app_id, &mailbox_id, side, now, serial, fx)?;
        let replay = app.subscribe(&mailbox_id, conn);
        let serial = app.mailboxes.get(&mailbox_id).map_or(0, |m| m.serial);
        self.session(conn).open = Some((mailbox_id, serial));
        for m in replay {
            fx.send(conn, ServerMessage::Message(m));
        }
        Ok(())
    }

    fn add(
        &mut self,
        conn: ConnId,
        msg: &ClientMessage,
        app_id: &str,
        side: &str,
        now: f64,
        fx: &mut Effects,
    ) -> Result<(), ProtocolError> {
        let open = match self.session(conn).open.clone() {
            Some(open) if !self.is_stale(app_id, &open) => open,
            _ => return Err(ProtocolError::MustOpenBeforeAdding),
        };
        if !msg.contains_key("phase") {
            return Err(ProtocolError::MissingPhase);
        }
        if !msg.contains_key("body") {
            return Err(ProtocolError::MissingBody);
        }
        let message = StoredMessage {
            side: side.to_owned(),
            phase: scalar(msg, "phase")?,
            body: scalar(msg, "body")?,
            server_rx: now,
            id: scalar(msg, "id")?,
        };
        let limits = &self.settings.limits;
        let (count, bytes) = self
            .apps
            .get(app_id)
            .and_then(|a| a.mailboxes.get(&open.0))
            .map_or((0, 0), |mb| (mb.messages.len(), mb.stored_bytes));
        if count >= limits.max_mailbox_messages {
            return Err(self.limit("max_mailbox_messages", "mailbox is full: too many messages"));
        }
        if bytes + message.size() > limits.max_mailbox_bytes {
            return Err(self.limit("max_mailbox_bytes", "mailbox is full: too many bytes"));
        }
        if let Some(app) = self.apps.get_mut(app_id) {
            app.add(app_id, &open.0, message, fx);
        }
        Ok(())
    }

    fn close(
        &mut self,
        conn: ConnId,
        msg: &ClientMessage,
        app_id: &str,
        side: &str,
        now: f64,
        fx: &mut Effects,
    ) -> Result<(), ProtocolError> {
        let session = self.session(conn);
        if session.did_close {
            return Err(ProtocolError::OnlyOneClose);
        }
        let mailbox_id = named_or_used(
            msg,
            "mailbox",
            session.mailbox_id.as_ref(),
            ProtocolError::OpenCloseMismatch,
            ProtocolError::CloseWithoutMailbox,
        )?;
        let mood = field_str(msg, "mood")?.map(str::to_owned);
        let open = session.open.clone();
        let serial = self.serial();
        let mut act = true;
        match &open {
            None => {
                // implicit open: only for a mailbox that still exists (a stray
                // close of a gone mailbox would just create and delete it)
                match self.apps.get_mut(app_id) {
                    Some(app) if app.mailboxes.contains_key(&mailbox_id) => {
                        app.open_mailbox(app_id, &mailbox_id, side, now, serial, fx)?
                    }
                    _ => act = false,
                }
            }
            Some(open) => act = !self.is_stale(app_id, open),
        }
        let session = self.session(conn);
        session.did_close = true;
        session.open = None;
        if let Some(app) = self.apps.get_mut(app_id) {
            if let Some((id, _)) = &open {
                app.unsubscribe(id, conn);
            }
            if act {
                app.close(app_id, &mailbox_id, side, mood, now, fx);
            }
        }
        self.forget_if_empty(app_id);
        fx.send(conn, ServerMessage::Closed);
        Ok(())
    }

    fn forget_if_empty(&mut self, app_id: &str) {
        if self.apps.get(app_id).is_some_and(App::is_empty) {
            self.apps.remove(app_id);
        }
    }

    /// Expires every channel idle since `old` (protocol.md §5.7).
    pub fn prune(&mut self, now: f64, old: f64) -> Effects {
        let mut fx = Effects::default();
        let mut emptied = Vec::new();
        let mut ids: Vec<&String> = self.apps.keys().collect();
        ids.sort();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        for app_id in ids {
            if let Some(app) = self.apps.get_mut(&app_id) {
                app.prune(&app_id, now, old, &mut fx);
                if app.is_empty() {
                    emptied.push(app_id);
                }
            }
        }
        for app_id in emptied {
            self.apps.remove(&app_id);
        }
        self.count_mailboxes(&fx);
        fx
    }

    /// A copy of the durable state, for introspection and store checks.
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for (app_id, app) in &self.apps {
            for (id, mb) in &app.mailboxes {
                snap.mailboxes.push(MailboxRecord {
                    app_id: app_id.clone(),
                    id: id.clone(),
                    for_nameplate: mb.for_nameplate,
                    updated: mb.updated,
                    crowded: mb.crowded,
                    sides: mb.sides.clone(),
                    messages: mb.messages.clone(),
                });
            }
            for (name, np) in &app.nameplates {
                snap.nameplates.push(NameplateRecord {
                    app_id: app_id.clone(),
                    name: name.clone(),
                    mailbox_id: np.mailbox_id.clone(),
                    crowded: np.crowded,
                    sides: np.sides.clone(),
                });
            }
        }
        snap.normalized()
    }

    /// The sides of a mailbox, for introspection.
    pub fn mailbox_sides(&self, app_id: &str, mailbox_id: &str) -> Option<Vec<MailboxSide>> {
        self.apps
            .get(app_id)?
            .mailboxes
            .get(mailbox_id)
            .map(|m| m.sides.clone())
    }

    /// Listeners of a mailbox, for introspection and tests.
    pub fn listeners(&self, app_id: &str, mailbox_id: &str) -> Vec<ConnId> {
        self.apps
            .get(app_id)
            .and_then(|a| a.mailboxes.get(mailbox_id))
            .map(|m| m.listeners.clone())
            .unwrap_or_default()
    }
}
