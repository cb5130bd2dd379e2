//! Property tests: the protocol core against a small reference model of
//! nameplates and mailboxes, the store contract (memory and SQLite stores
//! load to the core's snapshot) and `resync`, over generated command
//! sequences.
//!
//! The model is written from the rules (protocol.md §2.4, §5, with our §12
//! choices: a third side is refused without being recorded, a close deletes
//! only the nameplates of its own mailbox, a connection whose mailbox was
//! deleted can't add to it) rather than from the core's code. Random choices
//! of the core (mailbox ids, allocated nameplates) are taken from its output
//! and checked for freshness. A failure shrinks to a short command list
//! printed as `c1 claim "2"`, `c0 open mb#1`, …

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use wormhole_mailbox_server::protocol::{
    ConnId, Core, CoreSettings, Limits, MailboxRecord, MailboxSide, Mutation, NameplateRecord,
    NameplateSide, ServerMessage, Snapshot, StoredMessage,
};
use wormhole_mailbox_server::store::{MemoryStore, SqliteStore, Store};

const CONNS: usize = 4;
const APPS: [&str; 2] = ["app-a", "app-b"];
const SIDES: [&str; 3] = ["s1", "s2", "s3"];
const NAMEPLATES: [&str; 3] = ["1", "2", "3"];
const NAMED_MAILBOXES: [&str; 2] = ["mb-x", "mb-y"];
const MOODS: [&str; 3] = ["happy", "lonely", "scary"];

fn phase(i: usize) -> Value {
    [
        json!("pake"),
        json!("version"),
        json!("0"),
        json!(1),
        json!(null),
    ][i % 5]
        .clone()
}

fn body(i: usize) -> Value {
    [
        json!("abcd"),
        json!(""),
        json!("00ff"),
        json!(2.5),
        json!(true),
    ][i % 5]
        .clone()
}

/// A mailbox id in a command: the k-th id seen so far (in `claimed` replies
/// or opened by name), or a fixed free-form id.
#[derive(Clone, Copy)]
enum MbRef {
    Seen(usize),
    Named(usize),
}

/// One generated command. `c` is a connection slot.
#[derive(Clone)]
enum Cmd {
    Bind {
        c: usize,
        app: usize,
        side: usize,
    },
    List {
        c: usize,
    },
    Allocate {
        c: usize,
    },
    Claim {
        c: usize,
        np: usize,
    },
    Release {
        c: usize,
        np: Option<usize>,
    },
    Open {
        c: usize,
        mb: MbRef,
    },
    Add {
        c: usize,
        phase: usize,
        body: usize,
    },
    Close {
        c: usize,
        mb: Option<MbRef>,
        mood: Option<usize>,
    },
    /// A new connection in the slot, bound at once as (app, side) if given.
    Reconnect {
        c: usize,
        rebind: Option<(usize, usize)>,
    },
    Wait {
        secs: u16,
    },
    Prune {
        expiry: u16,
    },
}

impl fmt::Debug for MbRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MbRef::Seen(k) => write!(f, "mb#{k}"),
            MbRef::Named(k) => write!(f, "{:?}", NAMED_MAILBOXES[*k]),
        }
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cmd::Bind { c, app, side } => write!(f, "c{c} bind {} {}", APPS[*app], SIDES[*side]),
            Cmd::List { c } => write!(f, "c{c} list"),
            Cmd::Allocate { c } => write!(f, "c{c} allocate"),
            Cmd::Claim { c, np } => write!(f, "c{c} claim {:?}", NAMEPLATES[*np]),
            Cmd::Release { c, np: None } => write!(f, "c{c} release"),
            Cmd::Release { c, np: Some(n) } => write!(f, "c{c} release {:?}", NAMEPLATES[*n]),
            Cmd::Open { c, mb } => write!(f, "c{c} open {mb:?}"),
            Cmd::Add {
                c,
                phase: p,
                body: b,
            } => write!(f, "c{c} add {} {}", phase(*p), body(*b)),
            Cmd::Close { c, mb, mood } => {
                write!(f, "c{c} close")?;
                if let Some(mb) = mb {
                    write!(f, " {mb:?}")?;
                }
                if let Some(m) = mood {
                    write!(f, " mood={}", MOODS[*m])?;
                }
                Ok(())
            }
            Cmd::Reconnect { c, rebind: None } => write!(f, "c{c} reconnect"),
            Cmd::Reconnect {
                c,
                rebind: Some((app, side)),
            } => write!(f, "c{c} reconnect, bind {} {}", APPS[*app], SIDES[*side]),
            Cmd::Wait { secs } => write!(f, "wait {secs}s"),
            Cmd::Prune { expiry } => write!(f, "prune expiry={expiry}s"),
        }
    }
}

fn mb_ref() -> impl Strategy<Value = MbRef> {
    prop_oneof![
        3 => (0..4usize).prop_map(MbRef::Seen),
        1 => (0..NAMED_MAILBOXES.len()).prop_map(MbRef::Named),
    ]
}

/// Mostly the first app and nameplate, so connections meet.
fn app() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0), 1 => Just(1)]
}

fn nameplate() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0), 2 => Just(1), 1 => Just(2)]
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let c = 0..CONNS;
    prop_oneof![
        1 => (c.clone(), app(), 0..SIDES.len())
            .prop_map(|(c, app, side)| Cmd::Bind { c, app, side }),
        1 => c.clone().prop_map(|c| Cmd::List { c }),
        1 => c.clone().prop_map(|c| Cmd::Allocate { c }),
        3 => (c.clone(), nameplate()).prop_map(|(c, np)| Cmd::Claim { c, np }),
        3 => (c.clone(), proptest::option::of(nameplate()))
            .prop_map(|(c, np)| Cmd::Release { c, np }),
        3 => (c.clone(), mb_ref()).prop_map(|(c, mb)| Cmd::Open { c, mb }),
        3 => (c.clone(), 0..5usize, 0..5usize)
            .prop_map(|(c, phase, body)| Cmd::Add { c, phase, body }),
        2 => (c.clone(), proptest::option::of(mb_ref()), proptest::option::of(0..MOODS.len()))
            .prop_map(|(c, mb, mood)| Cmd::Close { c, mb, mood }),
        3 => (c, proptest::option::weighted(0.8, (app(), 0..SIDES.len())))
            .prop_map(|(c, rebind)| Cmd::Reconnect { c, rebind }),
        1 => (1..400u16).prop_map(|secs| Cmd::Wait { secs }),
        1 => (0..600u16).prop_map(|expiry| Cmd::Prune { expiry }),
    ]
}

/// A sequence: most connections bound first (shrinking drops those binds
/// it doesn't need), then the commands.
fn cmds() -> impl Strategy<Value = Vec<Cmd>> {
    let bind = proptest::option::weighted(0.85, (app(), 0..SIDES.len()));
    (
        proptest::collection::vec(bind, CONNS),
        proptest::collection::vec(cmd(), 1..60),
    )
        .prop_map(|(binds, rest)| {
            let binds = binds
                .into_iter()
                .enumerate()
                .filter_map(|(c, b)| b.map(|(app, side)| Cmd::Bind { c, app, side }));
            binds.chain(rest).collect()
        })
}

impl Cmd {
    /// A reconnect with a bind is a reconnect, then a `bind` message.
    fn parts(&self) -> Vec<Cmd> {
        match *self {
            Cmd::Reconnect {
                c,
                rebind: Some((app, side)),
            } => vec![
                Cmd::Reconnect { c, rebind: None },
                Cmd::Bind { c, app, side },
            ],
            ref other => vec![other.clone()],
        }
    }
}

/// Per-connection flags (§2.2).
#[derive(Default, Clone)]
struct Session {
    bound: Option<(String, String)>,
    did_allocate: bool,
    did_claim: bool,
    claimed: Option<String>,
    did_release: bool,
    /// The mailbox named by the last `open`.
    mailbox_id: Option<String>,
    /// The open mailbox and its generation (a later mailbox with the same id
    /// is another mailbox).
    open: Option<(String, u64)>,
    did_close: bool,
}

struct ModelNameplate {
    mailbox: String,
    sides: Vec<NameplateSide>,
    crowded: bool,
}

struct ModelMailbox {
    for_nameplate: bool,
    updated: f64,
    crowded: bool,
    sides: Vec<MailboxSide>,
    messages: Vec<StoredMessage>,
    /// Subscribed connection slots, in subscription order.
    listeners: Vec<usize>,
    generation: u64,
}

type Key = (String, String);

/// The reference model: plain maps and the rules, nothing clever.
#[derive(Default)]
struct Model {
    nameplates: BTreeMap<Key, ModelNameplate>,
    mailboxes: BTreeMap<Key, ModelMailbox>,
    sessions: [Session; CONNS],
    generations: u64,
}

/// What the core chose at random in the command being modelled.
struct Oracle<'a> {
    frames: &'a [(usize, ServerMessage)],
    after: &'a Snapshot,
}

impl Oracle<'_> {
    fn allocated(&self) -> Option<String> {
        self.frames.iter().find_map(|(_, m)| match m {
            ServerMessage::Allocated { nameplate } => Some(nameplate.clone()),
            _ => None,
        })
    }

    fn mailbox_of(&self, app: &str, name: &str) -> Option<String> {
        self.after
            .nameplates
            .iter()
            .find(|n| n.app_id == app && n.name == name)
            .map(|n| n.mailbox_id.clone())
    }
}

type Reply = Result<Vec<(usize, ServerMessage)>, String>;

fn err(s: &str) -> Reply {
    Err(s.to_owned())
}

impl Model {
    /// Open bookkeeping (§5.4): create if missing, add the side unless two
    /// others are there (then `crowded`, nothing recorded), bump `updated`.
    fn join_mailbox(&mut self, app: &str, id: &str, side: &str, now: f64) -> Result<(), String> {
        let key = (app.to_owned(), id.to_owned());
        if !self.mailboxes.contains_key(&key) {
            self.generations += 1;
            self.mailboxes.insert(
                key.clone(),
                ModelMailbox {
                    for_nameplate: false,
                    updated: now,
                    crowded: false,
                    sides: Vec::new(),
                    messages: Vec::new(),
                    listeners: Vec::new(),
                    generation: self.generations,
                },
            );
        }
        let mb = self.mailboxes.get_mut(&key).expect("just ensured");
        if !mb.sides.iter().any(|s| s.side == side) {
            if mb.sides.len() == 2 {
                mb.crowded = true;
                return Err("crowded".into());
            }
            mb.sides.push(MailboxSide {
                side: side.to_owned(),
                opened: true,
                added: now,
                mood: None,
            });
        }
        mb.updated = now;
        Ok(())
    }

    /// Claims a nameplate for a side (§5.2), creating it (with the mailbox
    /// id the core chose) if new; returns its mailbox id.
    fn claim(
        &mut self,
        app: &str,
        name: &str,
        side: &str,
        now: f64,
        oracle: &Oracle,
    ) -> Result<String, String> {
        let key = (app.to_owned(), name.to_owned());
        if !self.nameplates.contains_key(&key) {
            let id = oracle
                .mailbox_of(app, name)
                .ok_or("the core created no nameplate")?;
            let fresh = id.len() == 13
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
                && !self.mailboxes.contains_key(&(app.to_owned(), id.clone()));
            if !fresh {
                return Err(format!(
                    "new nameplate got a used or malformed mailbox id {id:?}"
                ));
            }
            self.join_mailbox(app, &id, side, now)
                .expect("a new mailbox has room");
            let mb = self.mailboxes.get_mut(&(app.to_owned(), id.clone()));
            mb.expect("created").for_nameplate = true;
            self.nameplates.insert(
                key.clone(),
                ModelNameplate {
                    mailbox: id,
                    sides: Vec::new(),
                    crowded: false,
                },
            );
        }
        let np = self.nameplates.get_mut(&key).expect("exists");
        let mailbox = np.mailbox.clone();
        match np.sides.iter().find(|s| s.side == side) {
            Some(s) if !s.claimed => return Err("reclaimed".into()),
            Some(_) => {}
            None => {
                // joining the mailbox decides whether this side is admitted
                if let Err(e) = self.join_mailbox(app, &mailbox, side, now) {
                    self.nameplates.get_mut(&key).expect("exists").crowded = true;
                    return Err(e);
                }
                self.nameplates
                    .get_mut(&key)
                    .expect("exists")
                    .sides
                    .push(NameplateSide {
                        side: side.to_owned(),
                        claimed: true,
                        added: now,
                    });
                return Ok(mailbox);
            }
        }
        self.join_mailbox(app, &mailbox, side, now)?;
        Ok(mailbox)
    }

    fn delete_mailbox(&mut self, key: &Key) {
        self.mailboxes.remove(key);
        self.nameplates
            .retain(|(app, _), np| !(app == &key.0 && np.mailbox == key.1));
    }

    fn is_live(&self, app: &str, open: &(String, u64)) -> bool {
        self.mailboxes
            .get(&(app.to_owned(), open.0.clone()))
            .is_some_and(|mb| mb.generation == open.1)
    }

    /// The frames a message command produces (ack first, then replies and
    /// broadcasts, or the error), updating the state.
    fn handle(
        &mut self,
        c: usize,
        cmd: &Resolved,
        now: f64,
        oracle: &Oracle,
    ) -> Vec<(usize, ServerMessage)> {
        let mut frames = vec![(c, ServerMessage::Ack { id: Value::Null })];
        match self.dispatch(c, cmd, now, oracle) {
            Ok(more) => frames.extend(more),
            Err(error) => frames.push((
                c,
                ServerMessage::Error {
                    error,
                    orig: Value::Object(cmd.json()),
                },
            )),
        }
        frames
    }

    fn dispatch(&mut self, c: usize, cmd: &Resolved, now: f64, oracle: &Oracle) -> Reply {
        if let Resolved::Bind { app, side } = cmd {
            let s = &mut self.sessions[c];
            if s.bound.is_some() {
                return err("already bound");
            }
            s.bound = Some((app.clone(), side.clone()));
            return Ok(vec![]);
        }
        let Some((app, side)) = self.sessions[c].bound.clone() else {
            return err("must bind first");
        };
        match cmd {
            Resolved::Bind { .. } => unreachable!("handled above"),
            Resolved::List => {
                let nameplates = self
                    .nameplates
                    .keys()
                    .filter(|(a, _)| *a == app)
                    .map(|(_, n)| n.clone())
                    .collect();
                Ok(vec![(c, ServerMessage::Nameplates { nameplates })])
            }
            Resolved::Allocate => {
                if self.sessions[c].did_allocate {
                    return err("you already allocated one, don't be greedy");
                }
                let name = oracle.allocated().unwrap_or_else(|| "<none>".into());
                let used = |n: u32| self.nameplates.contains_key(&(app.clone(), n.to_string()));
                let shortest = [(1, 10), (10, 100), (100, 1000)]
                    .into_iter()
                    .map(|(lo, hi)| (lo..hi).filter(|&n| !used(n)).collect::<Vec<u32>>())
                    .find(|free| !free.is_empty())
                    .unwrap_or_default();
                if !name.parse().is_ok_and(|n: u32| shortest.contains(&n)) {
                    return Err(format!(
                        "allocated {name:?}, not among the shortest free ids"
                    ));
                }
                self.claim(&app, &name, &side, now, oracle)?;
                self.sessions[c].did_allocate = true;
                Ok(vec![(c, ServerMessage::Allocated { nameplate: name })])
            }
            Resolved::Claim { name } => {
                let s = &mut self.sessions[c];
                if s.did_claim {
                    return err("only one claim per connection");
                }
                s.did_claim = true;
                s.claimed = Some(name.clone());
                let mailbox = self.claim(&app, name, &side, now, oracle)?;
                Ok(vec![(c, ServerMessage::Claimed { mailbox })])
            }
            Resolved::Release { name } => {
                let s = &mut self.sessions[c];
                if s.did_release {
                    return err("only one release per connection");
                }
                let name = match (name, &s.claimed) {
                    (Some(given), Some(claimed)) if given != claimed => {
                        return err("release and claim must use same nameplate")
                    }
                    (Some(given), _) => given.clone(),
                    (None, Some(claimed)) => claimed.clone(),
                    (None, None) => return err("release without nameplate must follow claim"),
                };
                s.did_release = true;
                let key = (app.clone(), name);
                if let Some(np) = self.nameplates.get_mut(&key) {
                    if let Some(s) = np.sides.iter_mut().find(|s| s.side == side) {
                        s.claimed = false;
                        if np.sides.iter().all(|s| !s.claimed) {
                            self.nameplates.remove(&key);
                        }
                    }
                }
                Ok(vec![(c, ServerMessage::Released)])
            }
            Resolved::Open { id } => {
                if self.sessions[c].open.is_some() {
                    return err("only one open per connection");
                }
                self.sessions[c].mailbox_id = Some(id.clone());
                self.join_mailbox(&app, id, &side, now)?;
                let mb = self
                    .mailboxes
                    .get_mut(&(app.clone(), id.clone()))
                    .expect("joined");
                if !mb.listeners.contains(&c) {
                    mb.listeners.push(c);
                }
                self.sessions[c].open = Some((id.clone(), mb.generation));
                Ok(mb
                    .messages
                    .iter()
                    .map(|m| (c, ServerMessage::Message(m.clone())))
                    .collect())
            }
            Resolved::Add { phase, body } => {
                let open = match self.sessions[c].open.clone() {
                    Some(open) if self.is_live(&app, &open) => open,
                    _ => return err("must open mailbox before adding"),
                };
                let mb = self.mailboxes.get_mut(&(app, open.0)).expect("live");
                let msg = StoredMessage {
                    side,
                    phase: phase.clone(),
                    body: body.clone(),
                    server_rx: now,
                    id: Value::Null,
                };
                mb.updated = now;
                mb.messages.push(msg.clone());
                Ok(mb
                    .listeners
                    .iter()
                    .map(|&l| (l, ServerMessage::Message(msg.clone())))
                    .collect())
            }
            Resolved::Close { id, mood } => {
                let s = &self.sessions[c];
                if s.did_close {
                    return err("only one close per connection");
                }
                let id = match (id, &s.mailbox_id) {
                    (Some(given), Some(opened)) if given != opened => {
                        return err("open and close must use same mailbox")
                    }
                    (Some(given), _) => given.clone(),
                    (None, Some(opened)) => opened.clone(),
                    (None, None) => return err("close without mailbox must follow open"),
                };
                let key = (app.clone(), id);
                let act = match s.open.clone() {
                    Some(open) => self.is_live(&app, &open),
                    // implicit open, only of a mailbox that exists
                    None if self.mailboxes.contains_key(&key) => {
                        self.join_mailbox(&app, &key.1, &side, now)?;
                        true
                    }
                    None => false,
                };
                let s = &mut self.sessions[c];
                s.did_close = true;
                s.open = None;
                for mb in self.mailboxes.values_mut() {
                    mb.listeners.retain(|&l| l != c);
                }
                if act {
                    let mb = self.mailboxes.get_mut(&key).expect("live");
                    if let Some(s) = mb.sides.iter_mut().find(|s| s.side == side) {
                        s.opened = false;
                        s.mood.clone_from(mood);
                    }
                    if mb.sides.iter().all(|s| !s.opened) {
                        self.delete_mailbox(&key);
                    }
                }
                Ok(vec![(c, ServerMessage::Closed)])
            }
        }
    }

    fn reconnect(&mut self, c: usize) {
        self.sessions[c] = Session::default();
        for mb in self.mailboxes.values_mut() {
            mb.listeners.retain(|&l| l != c);
        }
    }

    /// Expiry (§5.7): listened-to mailboxes are touched first; the rest idle
    /// since `old` go, with their nameplates.
    fn prune(&mut self, now: f64, old: f64) {
        for mb in self.mailboxes.values_mut() {
            if !mb.listeners.is_empty() {
                mb.updated = now;
            }
        }
        let expired: Vec<Key> = self
            .mailboxes
            .iter()
            .filter(|(_, mb)| mb.updated <= old)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.delete_mailbox(&key);
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            mailboxes: self
                .mailboxes
                .iter()
                .map(|((app, id), mb)| MailboxRecord {
                    app_id: app.clone(),
                    id: id.clone(),
                    for_nameplate: mb.for_nameplate,
                    updated: mb.updated,
                    crowded: mb.crowded,
                    sides: mb.sides.clone(),
                    messages: mb.messages.clone(),
                })
                .collect(),
            nameplates: self
                .nameplates
                .iter()
                .map(|((app, name), np)| NameplateRecord {
                    app_id: app.clone(),
                    name: name.clone(),
                    mailbox_id: np.mailbox.clone(),
                    crowded: np.crowded,
                    sides: np.sides.clone(),
                })
                .collect(),
        }
        .normalized()
    }
}

/// A message command with its pooled values resolved.
enum Resolved {
    Bind {
        app: String,
        side: String,
    },
    List,
    Allocate,
    Claim {
        name: String,
    },
    Release {
        name: Option<String>,
    },
    Open {
        id: String,
    },
    Add {
        phase: Value,
        body: Value,
    },
    Close {
        id: Option<String>,
        mood: Option<String>,
    },
}

impl Resolved {
    fn json(&self) -> Map<String, Value> {
        let v = match self {
            Resolved::Bind { app, side } => json!({"type": "bind", "appid": app, "side": side}),
            Resolved::List => json!({"type": "list"}),
            Resolved::Allocate => json!({"type": "allocate"}),
            Resolved::Claim { name } => json!({"type": "claim", "nameplate": name}),
            Resolved::Release { name: None } => json!({"type": "release"}),
            Resolved::Release { name: Some(n) } => json!({"type": "release", "nameplate": n}),
            Resolved::Open { id } => json!({"type": "open", "mailbox": id}),
            Resolved::Add { phase, body } => json!({"type": "add", "phase": phase, "body": body}),
            Resolved::Close { id, mood } => {
                let mut m = json!({"type": "close"});
                if let Some(id) = id {
                    m["mailbox"] = json!(id);
                }
                if let Some(mood) = mood {
                    m["mood"] = json!(mood);
                }
                m
            }
        };
        match v {
            Value::Object(m) => m,
            _ => unreachable!("objects"),
        }
    }
}

/// Drives the core (and optionally the model) through `cmds`, calling
/// `check` with every command's mutations.
struct Driver {
    core: Core,
    rng: StdRng,
    conns: [ConnId; CONNS],
    next_conn: ConnId,
    now: f64,
    /// Mailbox ids seen, in order (what `MbRef::Seen` indexes).
    seen: Vec<String>,
}

impl Driver {
    fn new() -> Self {
        let mut d = Driver {
            core: Core::new(CoreSettings {
                limits: Limits::unlimited(),
                ..CoreSettings::default()
            }),
            rng: StdRng::seed_from_u64(5),
            conns: [0; CONNS],
            next_conn: 1,
            now: 1_000.0,
            seen: Vec::new(),
        };
        for c in 0..CONNS {
            d.connect(c);
        }
        d
    }

    fn connect(&mut self, c: usize) {
        if self.conns[c] != 0 {
            self.core.disconnect(self.conns[c]);
        }
        self.conns[c] = self.next_conn;
        self.next_conn += 1;
        self.core.connect(self.conns[c], &mut self.rng);
    }

    fn mailbox(&self, r: MbRef) -> String {
        match r {
            MbRef::Seen(k) if !self.seen.is_empty() => self.seen[k % self.seen.len()].clone(),
            MbRef::Seen(k) | MbRef::Named(k) => NAMED_MAILBOXES[k % NAMED_MAILBOXES.len()].into(),
        }
    }

    fn resolve(&self, cmd: &Cmd) -> Option<(usize, Resolved)> {
        Some(match *cmd {
            Cmd::Bind { c, app, side } => (
                c,
                Resolved::Bind {
                    app: APPS[app].into(),
                    side: SIDES[side].into(),
                },
            ),
            Cmd::List { c } => (c, Resolved::List),
            Cmd::Allocate { c } => (c, Resolved::Allocate),
            Cmd::Claim { c, np } => (
                c,
                Resolved::Claim {
                    name: NAMEPLATES[np].into(),
                },
            ),
            Cmd::Release { c, np } => (
                c,
                Resolved::Release {
                    name: np.map(|n| NAMEPLATES[n].into()),
                },
            ),
            Cmd::Open { c, mb } => (
                c,
                Resolved::Open {
                    id: self.mailbox(mb),
                },
            ),
            Cmd::Add {
                c,
                phase: p,
                body: b,
            } => (
                c,
                Resolved::Add {
                    phase: phase(p),
                    body: body(b),
                },
            ),
            Cmd::Close { c, mb, mood } => (
                c,
                Resolved::Close {
                    id: mb.map(|m| self.mailbox(m)),
                    mood: mood.map(|m| MOODS[m].into()),
                },
            ),
            Cmd::Reconnect { .. } | Cmd::Wait { .. } | Cmd::Prune { .. } => return None,
        })
    }

    fn learn(&mut self, id: &str) {
        if !self.seen.iter().any(|s| s == id) {
            self.seen.push(id.to_owned());
        }
    }

    /// Runs one command on the core; returns its frames (by slot) and
    /// mutations, and the resolved message if it was one.
    #[allow(clippy::type_complexity)]
    fn step(
        &mut self,
        cmd: &Cmd,
    ) -> Result<
        (
            Option<(usize, Resolved)>,
            Vec<(usize, ServerMessage)>,
            Vec<Mutation>,
        ),
        String,
    > {
        self.now += 1.0;
        let resolved = self.resolve(cmd);
        let fx = match (cmd, &resolved) {
            (_, Some((c, r))) => {
                if let Resolved::Open { id } = r {
                    self.learn(id);
                }
                self.core
                    .handle(self.conns[*c], r.json(), self.now, &mut self.rng)
            }
            (Cmd::Reconnect { c, .. }, _) => {
                self.connect(*c);
                Default::default()
            }
            (Cmd::Wait { secs }, _) => {
                self.now += f64::from(*secs);
                Default::default()
            }
            (Cmd::Prune { expiry }, _) => self.core.prune(self.now, self.now - f64::from(*expiry)),
            _ => unreachable!("every command is one of these"),
        };
        let mut frames = Vec::new();
        for e in fx.envelopes {
            let slot = self
                .conns
                .iter()
                .position(|&c| c == e.to)
                .ok_or_else(|| format!("frame to a gone connection: {e:?}"))?;
            if let ServerMessage::Claimed { mailbox } = &e.msg {
                self.learn(mailbox);
            }
            frames.push((slot, e.msg));
        }
        Ok((resolved, frames, fx.mutations))
    }
}

/// What a sequence exercised, counted by reply kind (to check that the
/// generator reaches the interesting states, see `generator_reaches`).
type Seen = BTreeMap<String, usize>;

fn tally(seen: &mut Seen, frames: &[(usize, ServerMessage)], mutations: &[Mutation]) {
    let mut count = |k: String| *seen.entry(k).or_default() += 1;
    for (_, m) in frames {
        match m {
            ServerMessage::Error { error, .. } => count(format!("error {error}")),
            ServerMessage::Ack { .. } => {}
            other => count(other.type_name().to_owned()),
        }
    }
    for m in mutations {
        if let Mutation::DeleteMailbox { .. } = m {
            count("mailbox deleted".into());
        }
    }
}

/// Core and model side by side: same frames after every command, same state.
fn check_against_model(cmds: &[Cmd]) -> Result<Seen, TestCaseError> {
    let mut driver = Driver::new();
    let mut model = Model::default();
    let mut seen = Seen::new();
    for (i, whole) in cmds.iter().enumerate() {
        for cmd in &whole.parts() {
            let (resolved, frames, mutations) = driver.step(cmd).map_err(TestCaseError::fail)?;
            tally(&mut seen, &frames, &mutations);
            if let (Cmd::Open { .. }, true) = (cmd, frames.len() > 1) {
                if let ServerMessage::Message(_) = frames[1].1 {
                    *seen.entry("replay".into()).or_default() += 1;
                }
            }
            if let (Cmd::Prune { .. }, false) = (cmd, mutations.is_empty()) {
                *seen.entry("prune removed".into()).or_default() += usize::from(
                    mutations
                        .iter()
                        .any(|m| matches!(m, Mutation::DeleteMailbox { .. })),
                );
            }
            let after = driver.core.snapshot();
            match (cmd, resolved) {
                (_, Some((c, r))) => {
                    let oracle = Oracle {
                        frames: &frames,
                        after: &after,
                    };
                    let want = model.handle(c, &r, driver.now, &oracle);
                    prop_assert_eq!(&frames, &want, "frames of step {} ({:?})", i, cmd);
                }
                (Cmd::Reconnect { c, .. }, _) => model.reconnect(*c),
                (Cmd::Prune { expiry }, _) => {
                    model.prune(driver.now, driver.now - f64::from(*expiry))
                }
                _ => {}
            }
            prop_assert_eq!(
                &after,
                &model.snapshot(),
                "state after step {} ({:?})",
                i,
                cmd
            );
        }
    }
    Ok(seen)
}

/// The store contract: every command's mutations applied as one batch to a
/// memory and an in-memory SQLite store; both load to the core's snapshot
/// after every command, and a core restored from it has the same snapshot.
fn check_stores(cmds: &[Cmd]) -> Result<(), TestCaseError> {
    let mut driver = Driver::new();
    let mut memory = MemoryStore::new();
    let mut sqlite = SqliteStore::open(":memory:", Default::default()).expect("sqlite :memory:");
    for (i, whole) in cmds.iter().enumerate() {
        for cmd in &whole.parts() {
            let (_, _, mutations) = driver.step(cmd).map_err(TestCaseError::fail)?;
            memory.apply(&mutations).expect("memory apply");
            sqlite.apply(&mutations).expect("sqlite apply");
            let want = driver.core.snapshot();
            let got = memory.load().expect("memory load");
            prop_assert_eq!(&got, &want, "memory store after step {} ({:?})", i, cmd);
            let got = sqlite.load().expect("sqlite load");
            prop_assert_eq!(&got, &want, "sqlite store after step {} ({:?})", i, cmd);
        }
    }
    let loaded = sqlite.load().expect("sqlite load");
    let restored = Core::restore(CoreSettings::default(), loaded.clone());
    prop_assert_eq!(restored.snapshot(), loaded, "restore round-trips");
    Ok(())
}

/// `resync` (the reload after a failed commit) to the state the core already
/// has changes nothing: same frames and state as a core never resynced, so
/// listeners and open mailboxes survive it.
fn check_resync_is_transparent(cmds: &[Cmd]) -> Result<(), TestCaseError> {
    let mut plain = Driver::new();
    let mut resynced = Driver::new();
    for (i, whole) in cmds.iter().enumerate() {
        for cmd in &whole.parts() {
            let (_, want, _) = plain.step(cmd).map_err(TestCaseError::fail)?;
            let (_, got, _) = resynced.step(cmd).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&got, &want, "frames of step {} ({:?})", i, cmd);
            let snapshot = resynced.core.snapshot();
            resynced.core.resync(snapshot);
            prop_assert_eq!(resynced.core.snapshot(), plain.core.snapshot());
        }
    }
    Ok(())
}

proptest! {
    // the default case count (256, or PROPTEST_CASES); failures are saved
    // beside this file and replayed first on the next run
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn core_matches_reference_model(cmds in cmds()) {
        check_against_model(&cmds)?;
    }

    #[test]
    fn stores_load_the_core_snapshot(cmds in cmds()) {
        check_stores(&cmds)?;
    }

    #[test]
    fn resync_to_the_same_state_is_transparent(cmds in cmds()) {
        check_resync_is_transparent(&cmds)?;
    }
}

/// The model itself, on a plain exchange: if this fails, the model is wrong.
#[test]
fn model_agrees_on_a_plain_exchange() {
    use Cmd::*;
    let cmds = [
        Bind {
            c: 0,
            app: 0,
            side: 0,
        },
        Bind {
            c: 1,
            app: 0,
            side: 1,
        },
        Claim { c: 0, np: 0 },
        Claim { c: 1, np: 0 },
        Open {
            c: 0,
            mb: MbRef::Seen(0),
        },
        Add {
            c: 0,
            phase: 0,
            body: 0,
        },
        Open {
            c: 1,
            mb: MbRef::Seen(0),
        },
        Release { c: 0, np: None },
        Release { c: 1, np: None },
        Add {
            c: 1,
            phase: 1,
            body: 2,
        },
        Close {
            c: 0,
            mb: None,
            mood: Some(0),
        },
        Close {
            c: 1,
            mb: None,
            mood: Some(0),
        },
        Bind {
            c: 2,
            app: 0,
            side: 2,
        },
        List { c: 2 },
    ];
    check_against_model(&cmds).expect("model and core agree");
    check_stores(&cmds).expect("stores agree");
}

/// The generated sequences reach every interesting case in the default
/// number of cases (a guard against a generator that
/// silently stops covering something).
#[test]
fn generator_reaches_the_interesting_cases() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = Seen::new();
    for _ in 0..ProptestConfig::default().cases {
        let cmds = cmds().new_tree(&mut runner).expect("tree").current();
        for (k, n) in check_against_model(&cmds).expect("model and core agree") {
            *seen.entry(k).or_default() += n;
        }
    }
    println!("{seen:#?}");
    for case in [
        "claimed",
        "allocated",
        "released",
        "closed",
        "nameplates",
        "message",
        "replay",
        "mailbox deleted",
        "prune removed",
        "error crowded",
        "error reclaimed",
        "error must open mailbox before adding",
        "error only one claim per connection",
        "error release and claim must use same nameplate",
        "error open and close must use same mailbox",
        "error must bind first",
        "error already bound",
    ] {
        let n = seen.get(case).copied().unwrap_or(0);
        assert!(n > 0, "{case:?} never reached: {seen:#?}");
    }
}
