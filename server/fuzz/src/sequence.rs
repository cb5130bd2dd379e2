//! The `core_sequence` target: a [`Plan`] (read from the fuzz input with
//! `arbitrary`) is a sequence of commands over [`SLOTS`] connections and two
//! apps, with a small pool of sides, nameplates and mailbox ids, random field
//! omissions and wrong JSON types, disconnects, and prunes with advancing
//! time. [`run`] executes it against a fresh [`Core`] and checks after every
//! step:
//! - the frame rules of [`crate::check_frames`] (one ack, first, echoing the
//!   id; an error is the only reply) and that frames go to live connections;
//! - [`crate::check_state`]: never more than two sides admitted to a mailbox
//!   or nameplate, nameplates point at live mailboxes, receive order kept;
//! - stored messages are append-only, and an `open` replays exactly the
//!   stored messages in order; an `add` is stored last and broadcast once to
//!   every listener;
//! - a [`MemoryStore`] fed every emitted mutation loads to exactly
//!   `core.snapshot()` (the store mirrors the core);
//! - listeners are live connections, each on at most one mailbox; prune
//!   leaves nothing older than its cut-off; limit errors are justified;
//! - at the end: a core restored from the snapshot has the same snapshot,
//!   and once every connection is gone a prune empties everything.

use crate::{check_frames, check_state};
use arbitrary::{Arbitrary, Result, Unstructured};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use wormhole_mailbox_server::protocol::{
    ClientMessage, ConnId, Core, CoreSettings, Limits, Mutation, ServerMessage, Snapshot,
    StoredMessage,
};
use wormhole_mailbox_server::store::{MemoryStore, Store};

/// Connections driven at once.
pub const SLOTS: usize = 4;
const APPS: [&str; 2] = ["app-a", "app-b"];
const SIDES: [&str; 4] = ["s1", "s2", "s3", ""];
const NAMEPLATES: [&str; 3] = ["1", "2", "3"];
/// Invalid or unusual nameplates (some are valid but odd: "0", "007").
const ODD_NAMEPLATES: [&str; 8] = [
    "",
    "abc",
    "\u{663}",
    "5\n",
    "0",
    "007",
    "99999999999999999999999999999999999999999",
    "-1",
];
const FIXED_MAILBOXES: [&str; 3] = ["mb-x", "mb-y", ""];
const WORDS: [&str; 8] = [
    "pake",
    "version",
    "0",
    "1",
    "",
    "abcd",
    "\u{e9}\u{1F600}",
    "\u{0}",
];
const MOODS: [&str; 4] = ["happy", "lonely", "errory", "scary"];

/// Small storage limits (when a plan asks for them), so limits are hit.
fn small_limits() -> Limits {
    Limits {
        max_mailbox_messages: 5,
        max_mailbox_bytes: 60,
        max_app_nameplates: 4,
        max_mailboxes: 6,
    }
}

/// A field: present and well-typed, absent, or of a wrong JSON type.
#[derive(Debug, Clone)]
pub enum Field<T> {
    Good(T),
    Omit,
    Wrong(Wrong),
}

/// A usually present field (1/16 absent, 1/16 wrong type).
#[derive(Debug, Clone)]
pub struct Pick<T>(pub Field<T>);

/// An optional field (half the time absent, 1/16 wrong type).
#[derive(Debug, Clone)]
pub struct Maybe<T>(pub Field<T>);

impl<'a, T: Arbitrary<'a>> Arbitrary<'a> for Pick<T> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Pick(match u.arbitrary::<u8>()? {
            0..=223 => Field::Good(u.arbitrary()?),
            224..=239 => Field::Omit,
            _ => Field::Wrong(u.arbitrary()?),
        }))
    }
}

impl<'a, T: Arbitrary<'a>> Arbitrary<'a> for Maybe<T> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Maybe(match u.arbitrary::<u8>()? {
            0..=119 => Field::Omit,
            120..=239 => Field::Good(u.arbitrary()?),
            _ => Field::Wrong(u.arbitrary()?),
        }))
    }
}

/// A value of a JSON type that no string field accepts.
#[derive(Arbitrary, Debug, Clone)]
pub enum Wrong {
    Null,
    Bool(bool),
    Int(i64),
    Float(i16),
    Array(u8),
    Object(u8),
    Nested(u8),
}

impl Wrong {
    fn value(&self) -> Value {
        match self {
            Wrong::Null => Value::Null,
            Wrong::Bool(b) => json!(b),
            Wrong::Int(i) => json!(i),
            Wrong::Float(f) => json!(f64::from(*f) / 8.0),
            Wrong::Array(n) => json!([n, "x"]),
            Wrong::Object(n) => json!({"k": n}),
            Wrong::Nested(n) => {
                let mut v = json!(n);
                for _ in 0..(*n % 40) {
                    v = json!([v]);
                }
                v
            }
        }
    }
}

/// A word from a small pool of strings.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Word(pub u8);

impl Word {
    fn text(self) -> &'static str {
        WORDS[usize::from(self.0) % WORDS.len()]
    }
}

/// A JSON scalar (what `phase`, `body`, `id` and `ping` usually hold).
#[derive(Arbitrary, Debug, Clone)]
pub enum Small {
    Str(Word),
    Int(i64),
    Float(i16),
    Bool(bool),
    Null,
}

impl Small {
    fn value(&self) -> Value {
        match self {
            Small::Str(w) => json!(w.text()),
            Small::Int(i) => json!(i),
            Small::Float(f) => json!(f64::from(*f) / 4.0),
            Small::Bool(b) => json!(b),
            Small::Null => Value::Null,
        }
    }
}

/// One of the two apps.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct AppIx(pub u8);

/// One of the pooled sides.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct SideIx(pub u8);

/// Mostly "1".."3", sometimes one seen in an `allocated`, sometimes odd.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct NameplateIx(pub u8);

/// Mostly a mailbox id seen in a `claimed`, else a fixed free-form id.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct MailboxIx(pub u8);

/// A mood from the documented ones.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct MoodIx(pub u8);

/// `client_version` of a `bind`.
#[derive(Arbitrary, Debug, Clone)]
pub enum ClientVersion {
    Absent,
    Good,
    Short,
    Wrong(Wrong),
}

/// One client message, before the pools are resolved.
#[derive(Arbitrary, Debug, Clone)]
pub enum Msg {
    Ping(Pick<Small>),
    Bind {
        appid: Pick<AppIx>,
        side: Pick<SideIx>,
        client_version: ClientVersion,
    },
    List,
    Allocate,
    Claim(Pick<NameplateIx>),
    Release(Maybe<NameplateIx>),
    Open(Pick<MailboxIx>),
    Add {
        phase: Pick<Small>,
        body: Pick<Small>,
    },
    Close {
        mailbox: Maybe<MailboxIx>,
        mood: Maybe<MoodIx>,
    },
    SubmitPermission,
    /// `type` is not a known message type (an odd string or not a string).
    UnknownType(Small),
    /// No `type` key at all.
    NoType(Small),
}

/// A connection slot (0..SLOTS).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Slot(pub u8);

impl Slot {
    fn index(self) -> usize {
        usize::from(self.0) % SLOTS
    }
}

/// How a (re)connected slot starts: usually bound at once (app and side
/// from the byte, sides differing by slot), sometimes left unbound.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Identity(pub u8);

impl Identity {
    fn bind_msg(self, slot: usize) -> Option<Msg> {
        (self.0 < 224).then(|| Msg::Bind {
            appid: Pick(Field::Good(AppIx(self.0 & 1))),
            side: Pick(Field::Good(SideIx(((self.0 >> 1) as usize + slot) as u8))),
            client_version: ClientVersion::Absent,
        })
    }
}

/// One step of a plan.
#[derive(Debug, Clone)]
pub enum Step {
    /// A message on a connection, with an optional `id`.
    Send {
        slot: Slot,
        id: Option<Small>,
        msg: Msg,
    },
    /// The connection drops; the slot reconnects as a new connection.
    Disconnect(Slot, Identity),
    /// Time advances this many seconds.
    Tick(u16),
    /// One prune run, one second later, expiring what is idle this long.
    Prune { expiry: u16 },
}

impl<'a> Arbitrary<'a> for Step {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.arbitrary::<u8>()? {
            0..=215 => Step::Send {
                slot: u.arbitrary()?,
                id: u.arbitrary()?,
                msg: u.arbitrary()?,
            },
            216..=231 => Step::Disconnect(u.arbitrary()?, u.arbitrary()?),
            232..=243 => Step::Tick(u.arbitrary()?),
            _ => Step::Prune {
                expiry: u.arbitrary()?,
            },
        })
    }
}

/// A whole fuzz case.
#[derive(Arbitrary, Debug, Clone)]
pub struct Plan {
    /// Seeds the core's random source (mailbox ids, allocation).
    pub seed: u64,
    /// Run with tiny storage limits instead of the defaults.
    pub small_limits: bool,
    /// How each slot starts.
    pub start: [Identity; SLOTS],
    pub steps: Vec<Step>,
}

/// What a run exercised (to judge how deep the fuzzer gets).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub messages: usize,
    pub errors: usize,
    pub claims: usize,
    pub crowded: usize,
    pub replays: usize,
    pub replayed_messages: usize,
    pub adds: usize,
    pub closes: usize,
    pub deleted_mailboxes: usize,
    pub limit_errors: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.messages += o.messages;
        self.errors += o.errors;
        self.claims += o.claims;
        self.crowded += o.crowded;
        self.replays += o.replays;
        self.replayed_messages += o.replayed_messages;
        self.adds += o.adds;
        self.closes += o.closes;
        self.deleted_mailboxes += o.deleted_mailboxes;
        self.limit_errors += o.limit_errors;
    }
}

/// The state of one execution.
struct Exec {
    stats: Stats,
    core: Core,
    limits: Limits,
    rng: StdRng,
    now: f64,
    conns: [ConnId; SLOTS],
    next_conn: ConnId,
    /// The (app, side) each slot bound with.
    bound: [Option<(String, String)>; SLOTS],
    /// The mailbox each slot has open (successful `open`, no `close` since).
    opened: [Option<String>; SLOTS],
    /// Mailbox ids and nameplates seen in replies, most recent last.
    mailboxes: Vec<String>,
    nameplates: Vec<String>,
    store: MemoryStore,
}

fn learn(pool: &mut Vec<String>, value: &str) {
    pool.retain(|v| v != value);
    pool.push(value.to_owned());
    if pool.len() > 6 {
        pool.remove(0);
    }
}

fn recent(pool: &[String], k: usize) -> Option<&str> {
    pool.len()
        .checked_sub(1 + k % pool.len().max(1))
        .map(|i| pool[i].as_str())
}

impl Exec {
    fn new(plan: &Plan) -> Self {
        let limits = if plan.small_limits {
            small_limits()
        } else {
            Limits::default()
        };
        let mut exec = Exec {
            stats: Stats::default(),
            core: Core::new(CoreSettings {
                limits: limits.clone(),
                ..CoreSettings::default()
            }),
            limits,
            rng: StdRng::seed_from_u64(plan.seed),
            now: 1_000_000.0,
            conns: [0; SLOTS],
            next_conn: 1,
            bound: Default::default(),
            opened: Default::default(),
            mailboxes: Vec::new(),
            nameplates: Vec::new(),
            store: MemoryStore::new(),
        };
        for slot in 0..SLOTS {
            exec.reconnect(slot);
        }
        for (slot, identity) in plan.start.iter().enumerate() {
            exec.bind(slot, *identity);
        }
        exec
    }

    /// Binds the slot as `identity` says (through a checked `bind`).
    fn bind(&mut self, slot: usize, identity: Identity) {
        if let Some(msg) = identity.bind_msg(slot) {
            self.send(slot, &None, &msg);
        }
    }

    fn reconnect(&mut self, slot: usize) {
        if self.conns[slot] != 0 {
            self.core.disconnect(self.conns[slot]);
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let offer = self.core.connect(conn, &mut self.rng);
        assert_eq!(offer, None, "no permission offer by default");
        self.conns[slot] = conn;
        self.bound[slot] = None;
        self.opened[slot] = None;
    }

    fn nameplate(&self, ix: NameplateIx) -> String {
        let k = usize::from(ix.0);
        match k % 16 {
            0..=8 => NAMEPLATES[k % 3].to_owned(),
            9..=11 => recent(&self.nameplates, k / 16).unwrap_or("1").to_owned(),
            _ => ODD_NAMEPLATES[(k / 16) % ODD_NAMEPLATES.len()].to_owned(),
        }
    }

    fn mailbox(&self, ix: MailboxIx) -> String {
        let k = usize::from(ix.0);
        match (k % 8, recent(&self.mailboxes, k / 8)) {
            (0..=5, Some(id)) => id.to_owned(),
            _ => FIXED_MAILBOXES[k % FIXED_MAILBOXES.len()].to_owned(),
        }
    }

    /// Builds the JSON message; returns it with the resolved mailbox id (for
    /// `open`).
    fn build(&self, id: &Option<Small>, msg: &Msg) -> (ClientMessage, Option<String>) {
        fn put<T>(m: &mut Map<String, Value>, key: &str, f: &Field<T>, good: impl Fn(&T) -> Value) {
            match f {
                Field::Good(t) => {
                    m.insert(key.into(), good(t));
                }
                Field::Omit => {}
                Field::Wrong(w) => {
                    m.insert(key.into(), w.value());
                }
            }
        }
        let mut m = Map::new();
        let mut mailbox = None;
        let ty = |m: &mut Map<String, Value>, t: &str| {
            m.insert("type".into(), json!(t));
        };
        match msg {
            Msg::Ping(p) => {
                ty(&mut m, "ping");
                put(&mut m, "ping", &p.0, Small::value);
            }
            Msg::Bind {
                appid,
                side,
                client_version,
            } => {
                ty(&mut m, "bind");
                put(&mut m, "appid", &appid.0, |a| {
                    json!(APPS[usize::from(a.0) % APPS.len()])
                });
                put(&mut m, "side", &side.0, |s| {
                    json!(SIDES[usize::from(s.0) % SIDES.len()])
                });
                match client_version {
                    ClientVersion::Absent => {}
                    ClientVersion::Good => {
                        m.insert("client_version".into(), json!(["fuzz", "0.1", "x"]));
                    }
                    ClientVersion::Short => {
                        m.insert("client_version".into(), json!(["fuzz"]));
                    }
                    ClientVersion::Wrong(w) => {
                        m.insert("client_version".into(), w.value());
                    }
                }
            }
            Msg::List => ty(&mut m, "list"),
            Msg::Allocate => ty(&mut m, "allocate"),
            Msg::Claim(n) => {
                ty(&mut m, "claim");
                put(&mut m, "nameplate", &n.0, |&n| json!(self.nameplate(n)));
            }
            Msg::Release(n) => {
                ty(&mut m, "release");
                put(&mut m, "nameplate", &n.0, |&n| json!(self.nameplate(n)));
            }
            Msg::Open(b) => {
                ty(&mut m, "open");
                if let Field::Good(ix) = &b.0 {
                    mailbox = Some(self.mailbox(*ix));
                }
                put(&mut m, "mailbox", &b.0, |&b| json!(self.mailbox(b)));
            }
            Msg::Add { phase, body } => {
                ty(&mut m, "add");
                put(&mut m, "phase", &phase.0, Small::value);
                put(&mut m, "body", &body.0, Small::value);
            }
            Msg::Close { mailbox, mood } => {
                ty(&mut m, "close");
                put(&mut m, "mailbox", &mailbox.0, |&b| json!(self.mailbox(b)));
                put(&mut m, "mood", &mood.0, |md| {
                    json!(MOODS[usize::from(md.0) % MOODS.len()])
                });
            }
            Msg::SubmitPermission => {
                ty(&mut m, "submit-permission");
                m.insert("method".into(), json!("none"));
            }
            Msg::UnknownType(t) => {
                let v = match t {
                    Small::Str(w) => json!(format!("x-{}", w.text())),
                    other => other.value(),
                };
                m.insert("type".into(), v);
            }
            Msg::NoType(v) => {
                m.insert("foo".into(), v.value());
            }
        }
        if let Some(id) = id {
            m.insert("id".into(), id.value());
        }
        (m, mailbox)
    }

    fn mailbox_in<'s>(snap: &'s Snapshot, app: &str, id: &str) -> Option<&'s [StoredMessage]> {
        snap.mailboxes
            .iter()
            .find(|m| m.app_id == app && m.id == id)
            .map(|m| m.messages.as_slice())
    }

    fn send(&mut self, slot: usize, id: &Option<Small>, msg: &Msg) {
        let conn = self.conns[slot];
        let (cm, open_id) = self.build(id, msg);
        let pre = self.core.snapshot();
        let fx = self.core.handle(conn, cm.clone(), self.now, &mut self.rng);
        check_frames(conn, &cm, &fx);
        for e in &fx.envelopes {
            assert!(
                self.conns.contains(&e.to),
                "frame to a gone connection {e:?}"
            );
        }
        let error = fx.envelopes.iter().find_map(|e| match &e.msg {
            ServerMessage::Error { error, .. } => Some(error.clone()),
            _ => None,
        });
        for e in &fx.envelopes {
            match &e.msg {
                ServerMessage::Claimed { mailbox } => learn(&mut self.mailboxes, mailbox),
                ServerMessage::Allocated { nameplate } => learn(&mut self.nameplates, nameplate),
                _ => {}
            }
        }
        self.stats.messages += 1;
        if let Some(error) = &error {
            self.stats.errors += 1;
            self.stats.crowded += usize::from(error == "crowded");
            self.check_limit_error(error, &pre, slot);
        }
        let ok = error.is_none();
        self.stats.deleted_mailboxes += fx
            .mutations
            .iter()
            .filter(|m| matches!(m, Mutation::DeleteMailbox { .. }))
            .count();
        match msg {
            Msg::Bind { appid, side, .. } if ok => match (&appid.0, &side.0) {
                (Field::Good(a), Field::Good(s)) => {
                    let app = APPS[usize::from(a.0) % APPS.len()].to_owned();
                    let side = SIDES[usize::from(s.0) % SIDES.len()].to_owned();
                    self.bound[slot] = Some((app, side));
                }
                _ => panic!("a bind without a string appid and side succeeded"),
            },
            Msg::Open(_) if ok => {
                let (app, _) = self.bound[slot].clone().expect("open succeeded unbound");
                let id = open_id.expect("open succeeded without a mailbox");
                let stored = Self::mailbox_in(&pre, &app, &id).unwrap_or_default();
                let want: Vec<ServerMessage> =
                    stored.iter().cloned().map(ServerMessage::Message).collect();
                let got: Vec<ServerMessage> = fx.envelopes[1..]
                    .iter()
                    .map(|e| {
                        assert_eq!(e.to, conn, "open replays to the opener only");
                        e.msg.clone()
                    })
                    .collect();
                assert_eq!(got, want, "replay equals the stored messages in order");
                self.stats.replays += 1;
                self.stats.replayed_messages += want.len();
                assert!(
                    self.core.listeners(&app, &id).contains(&conn),
                    "opener is subscribed"
                );
                self.opened[slot] = Some(id);
            }
            Msg::Add { .. } if ok => {
                let (app, side) = self.bound[slot].clone().expect("add succeeded unbound");
                let id = self.opened[slot].clone().expect("add succeeded unopened");
                let post = self.core.snapshot();
                let before = Self::mailbox_in(&pre, &app, &id).expect("mailbox existed");
                let after = Self::mailbox_in(&post, &app, &id).expect("mailbox exists");
                assert_eq!(after.len(), before.len() + 1, "add stores one message");
                assert_eq!(&after[..before.len()], before, "add appends");
                let added = after.last().cloned().expect("one message");
                assert_eq!(added.side, side, "a message is attributed to its sender");
                assert_eq!(
                    added.server_rx, self.now,
                    "a message keeps its receive time"
                );
                let want: Vec<(ConnId, ServerMessage)> = self
                    .core
                    .listeners(&app, &id)
                    .into_iter()
                    .map(|c| (c, ServerMessage::Message(added.clone())))
                    .collect();
                let got: Vec<(ConnId, ServerMessage)> = fx.envelopes[1..]
                    .iter()
                    .map(|e| (e.to, e.msg.clone()))
                    .collect();
                assert_eq!(got, want, "add is broadcast once to every listener");
                assert!(want.iter().any(|(c, _)| *c == conn), "sender gets its echo");
                self.stats.adds += 1;
            }
            Msg::Close { .. } if ok => {
                self.opened[slot] = None;
                self.stats.closes += 1;
            }
            Msg::Claim(_) | Msg::Allocate if ok => self.stats.claims += 1,
            _ => {}
        }
        self.after(&fx.mutations, Some(&pre));
    }

    /// A limit error must be justified by the state before the command.
    fn check_limit_error(&mut self, error: &str, pre: &Snapshot, slot: usize) {
        let limited = ["server is full", "too many nameplates", "mailbox is full"];
        self.stats.limit_errors += usize::from(limited.iter().any(|l| error.starts_with(l)));
        let app = self.bound[slot].as_ref().map_or("", |(a, _)| a.as_str());
        if error.starts_with("server is full") {
            assert!(
                pre.mailboxes.len() >= self.limits.max_mailboxes,
                "max_mailboxes hit with {} mailboxes",
                pre.mailboxes.len()
            );
        } else if error.starts_with("too many nameplates") {
            let n = pre.nameplates.iter().filter(|n| n.app_id == app).count();
            assert!(
                n >= self.limits.max_app_nameplates,
                "max_app_nameplates hit with {n}"
            );
        } else if error.starts_with("mailbox is full: too many messages") {
            let id = self.opened[slot].as_deref().unwrap_or("");
            let n = Self::mailbox_in(pre, app, id).map_or(0, <[_]>::len);
            assert!(
                n >= self.limits.max_mailbox_messages,
                "max_mailbox_messages hit with {n}"
            );
        }
    }

    /// Checks after every step: store mirror, state invariants, stored
    /// messages append-only, listeners live and on one mailbox each.
    fn after(&mut self, mutations: &[Mutation], pre: Option<&Snapshot>) {
        self.store.apply(mutations).expect("memory store apply");
        let snap = self.core.snapshot();
        assert_eq!(
            self.store.load().expect("memory store load"),
            snap,
            "the store mirrors the core"
        );
        check_state(&snap);
        if self.limits != Limits::default() {
            assert!(snap.mailboxes.len() <= self.limits.max_mailboxes);
        }
        if let Some(pre) = pre {
            for m in &snap.mailboxes {
                if let Some(before) = Self::mailbox_in(pre, &m.app_id, &m.id) {
                    assert!(
                        m.messages.starts_with(before),
                        "stored messages rewritten: {before:?} -> {:?}",
                        m.messages
                    );
                }
            }
        }
        let mut seen = BTreeSet::new();
        for m in &snap.mailboxes {
            for conn in self.core.listeners(&m.app_id, &m.id) {
                assert!(self.conns.contains(&conn), "gone connection {conn} listens");
                assert!(seen.insert(conn), "connection {conn} on two mailboxes");
            }
        }
        assert_eq!(self.core.connections(), SLOTS);
    }

    fn prune(&mut self, expiry: u16) {
        self.now += 1.0;
        let old = self.now - f64::from(expiry);
        let pre = self.core.snapshot();
        let fx = self.core.prune(self.now, old);
        assert!(fx.envelopes.is_empty(), "prune sends nothing");
        self.after(&fx.mutations, Some(&pre));
        for m in self.core.snapshot().mailboxes {
            assert!(m.updated > old, "prune left an expired mailbox {m:?}");
        }
    }

    fn finish(&mut self) {
        let snap = self.core.snapshot();
        let restored = Core::restore(CoreSettings::default(), snap.clone());
        assert_eq!(restored.snapshot(), snap, "restore round-trips");
        for slot in 0..SLOTS {
            self.reconnect(slot);
        }
        self.now += 1.0;
        let fx = self.core.prune(self.now, self.now);
        self.after(&fx.mutations, None);
        assert_eq!(
            self.core.snapshot(),
            Snapshot::default(),
            "with nobody listening, a prune of everything empties the server"
        );
    }
}

/// Executes `plan`, panicking on the first broken invariant; returns what
/// it exercised.
pub fn run(plan: &Plan) -> Stats {
    let mut exec = Exec::new(plan);
    for step in &plan.steps {
        match step {
            Step::Send { slot, id, msg } => exec.send(slot.index(), id, msg),
            Step::Disconnect(slot, identity) => {
                exec.reconnect(slot.index());
                exec.after(&[], None);
                exec.bind(slot.index(), *identity);
            }
            Step::Tick(secs) => exec.now += f64::from(*secs),
            Step::Prune { expiry } => exec.prune(*expiry),
        }
    }
    exec.finish();
    exec.stats
}

/// Reads a plan from raw bytes (as libFuzzer would) and runs it.
pub fn run_bytes(data: &[u8]) -> Stats {
    match Plan::arbitrary_take_rest(Unstructured::new(data)) {
        Ok(plan) => run(&plan),
        Err(_) => Stats::default(),
    }
}
