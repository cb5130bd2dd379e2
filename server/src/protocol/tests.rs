//! Core unit tests: every session rule and model behaviour, in memory, with
//! explicit time and seeded randomness.

use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

/// A core plus helpers that turn envelopes into comparable JSON.
pub(crate) struct Harness {
    pub core: Core,
    pub rng: StdRng,
    /// Every mutation emitted so far, in order (for store contract tests).
    pub mutations: Vec<Mutation>,
    pub usage: Vec<UsageRecord>,
}

fn frame(msg: &ServerMessage) -> Value {
    let mut v: Value = serde_json::from_str(&msg.to_json(0.0)).expect("json");
    if let Some(o) = v.as_object_mut() {
        o.remove("server_tx");
    }
    v
}

impl Harness {
    pub fn new() -> Self {
        Self::with(CoreSettings {
            limits: Limits::unlimited(),
            ..CoreSettings::default()
        })
    }

    pub fn with(settings: CoreSettings) -> Self {
        Harness {
            core: Core::new(settings),
            rng: StdRng::seed_from_u64(7),
            mutations: Vec::new(),
            usage: Vec::new(),
        }
    }

    fn take(&mut self, fx: Effects) -> Vec<(ConnId, Value)> {
        self.mutations.extend(fx.mutations);
        self.usage.extend(fx.usage);
        fx.envelopes.iter().map(|e| (e.to, frame(&e.msg))).collect()
    }

    /// Sends `msg` on `conn` at time `now`; returns every frame it caused.
    pub fn send(&mut self, conn: ConnId, msg: Value, now: f64) -> Vec<(ConnId, Value)> {
        let Value::Object(map) = msg else {
            panic!("test messages are objects")
        };
        let fx = self.core.handle(conn, map, now, &mut self.rng);
        self.take(fx)
    }

    /// Frames for `conn` only, without the leading ack (asserted present).
    pub fn reply(&mut self, conn: ConnId, msg: Value, now: f64) -> Vec<Value> {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let out = self.send(conn, msg, now);
        assert_eq!(
            out[0],
            (conn, json!({"type": "ack", "id": id})),
            "ack first"
        );
        out[1..]
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Registers a connection; returns the welcome's permission offer.
    pub fn connect(&mut self, conn: ConnId) -> Option<Value> {
        self.core.connect(conn, &mut self.rng)
    }

    pub fn bind(&mut self, conn: ConnId, app: &str, side: &str) {
        self.core.connect(conn, &mut self.rng);
        let r = self.reply(
            conn,
            json!({"type": "bind", "appid": app, "side": side}),
            0.0,
        );
        assert!(r.is_empty(), "{r:?}");
    }

    pub fn claim(&mut self, conn: ConnId, np: &str, now: f64) -> String {
        let r = self.reply(conn, json!({"type": "claim", "nameplate": np}), now);
        assert_eq!(r[0]["type"], "claimed", "{r:?}");
        r[0]["mailbox"].as_str().expect("mailbox").to_owned()
    }

    pub fn prune(&mut self, now: f64, old: f64) {
        let fx = self.core.prune(now, old);
        self.take(fx);
    }
}

fn err(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn error_of(frames: &[Value]) -> Value {
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error", "{frames:?}");
    frames[0]["error"].clone()
}

#[test]
fn missing_type_gets_error_without_ack() {
    let mut h = Harness::new();
    h.connect(1);
    let out = h.send(1, json!({"foo": 1}), 0.0);
    assert_eq!(
        out,
        vec![(
            1,
            json!({"type": "error", "error": "missing 'type'", "orig": {"foo": 1}})
        )]
    );
}

#[test]
fn bind_rules_in_order() {
    let mut h = Harness::new();
    h.connect(1);
    let r = h.reply(1, json!({"type": "list"}), 0.0);
    assert_eq!(error_of(&r), err("must bind first"));
    let r = h.reply(1, json!({"type": "___unknown", "id": {"x": 1}}), 0.0);
    assert_eq!(error_of(&r), err("must bind first"));
    let r = h.reply(1, json!({"type": "bind", "appid": "a"}), 0.0);
    assert_eq!(error_of(&r), err("bind requires 'side'"));
    let r = h.reply(1, json!({"type": "bind", "side": "s"}), 0.0);
    assert_eq!(error_of(&r), err("bind requires 'appid'"));
    let r = h.reply(1, json!({"type": "bind", "appid": 5, "side": "s"}), 0.0);
    assert_eq!(error_of(&r), err("'appid' must be a string"));
    let r = h.reply(1, json!({"type": "bind", "appid": "a", "side": "s"}), 0.0);
    assert!(r.is_empty());
    let r = h.reply(1, json!({"type": "bind"}), 0.0);
    assert_eq!(error_of(&r), err("already bound"));
    let r = h.reply(1, json!({"type": "___unknown"}), 0.0);
    assert_eq!(error_of(&r), err("unknown type"));
    let r = h.reply(1, json!({"type": 5}), 0.0);
    assert_eq!(error_of(&r), err("unknown type"));
}

#[test]
fn ping_before_bind_echoes_any_value() {
    let mut h = Harness::new();
    h.connect(1);
    let r = h.reply(1, json!({"type": "ping", "ping": {"a": [1, 2]}}), 0.0);
    assert_eq!(r, vec![json!({"type": "pong", "pong": {"a": [1, 2]}})]);
    let r = h.reply(1, json!({"type": "ping"}), 0.0);
    assert_eq!(error_of(&r), err("ping requires 'ping'"));
}

#[test]
fn bind_records_client_version() {
    let mut h = Harness::new();
    h.connect(1);
    h.reply(
        1,
        json!({"type": "bind", "appid": "a", "side": "s", "client_version": ["python", "1.2.3", "junk"]}),
        5.0,
    );
    assert_eq!(
        h.usage,
        vec![UsageRecord::ClientVersion {
            app_id: "a".into(),
            side: "s".into(),
            connect_time: 5.0,
            implementation: Some("python".into()),
            version: Some("1.2.3".into()),
        }]
    );
}

#[test]
fn allocation_is_shortest_first_and_unique() {
    let mut h = Harness::new();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..999u64 {
        let conn = i + 1;
        h.bind(conn, "app", &format!("side{i}"));
        let r = h.reply(conn, json!({"type": "allocate"}), 1.0);
        let n: u32 = r[0]["nameplate"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("numeric nameplate");
        let expected = match i {
            0..=8 => 1..=9,
            9..=98 => 10..=99,
            _ => 100..=999,
        };
        assert!(expected.contains(&n), "allocation {i} gave {n}");
        assert!(seen.insert(n), "{n} allocated twice");
    }
    h.bind(5000, "app", "late");
    let r = h.reply(5000, json!({"type": "allocate"}), 1.0);
    let n: u32 = r[0]["nameplate"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("n");
    assert!((1000..1_000_000).contains(&n));
    // other apps start again at one digit
    h.bind(6000, "other-app", "x");
    let r = h.reply(6000, json!({"type": "allocate"}), 1.0);
    assert_eq!(r[0]["nameplate"].as_str().map(str::len), Some(1));
}

/// An RNG that always yields zero: the long-range pick is always 1000.
struct Zero;
impl rand::RngCore for Zero {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        dest.fill(0);
        Ok(())
    }
}

#[test]
fn allocation_failure_is_an_error_reply() {
    let mut app = App::default();
    for n in 1..=1000u32 {
        app.nameplates.insert(
            n.to_string(),
            Nameplate {
                mailbox_id: "m".into(),
                sides: vec![],
                crowded: false,
            },
        );
    }
    assert_eq!(app.pick_free_nameplate(&mut Zero), None);
    app.nameplates.remove("1000");
    assert_eq!(app.pick_free_nameplate(&mut Zero).as_deref(), Some("1000"));
}

#[test]
fn allocate_once_per_connection_and_claims() {
    let mut h = Harness::new();
    h.bind(1, "a", "s1");
    let r = h.reply(1, json!({"type": "allocate"}), 1.0);
    let np = r[0]["nameplate"].as_str().expect("np").to_owned();
    let r = h.reply(1, json!({"type": "allocate"}), 1.0);
    assert_eq!(
        error_of(&r),
        err("you already allocated one, don't be greedy")
    );
    // allocate doesn't count as this connection's claim
    let r = h.reply(1, json!({"type": "release"}), 1.0);
    assert_eq!(
        error_of(&r),
        err("release without nameplate must follow claim")
    );
    h.claim(1, &np, 2.0);
    let snap = h.core.snapshot();
    assert_eq!(snap.nameplates.len(), 1);
    assert_eq!(
        snap.nameplates[0].sides.len(),
        1,
        "claim after allocate is idempotent"
    );
    assert_eq!(snap.nameplates[0].sides[0].added, 1.0);
}

#[test]
fn claim_rules() {
    let mut h = Harness::new();
    h.bind(1, "a", "s1");
    let r = h.reply(1, json!({"type": "claim"}), 0.0);
    assert_eq!(error_of(&r), err("claim requires 'nameplate'"));
    let r = h.reply(1, json!({"type": "claim", "nameplate": "abc"}), 0.0);
    assert_eq!(error_of(&r), err("nameplate \"abc\" has non-digits"));
    // the rejected claim used up the connection's claim
    let r = h.reply(1, json!({"type": "claim", "nameplate": "1"}), 0.0);
    assert_eq!(error_of(&r), err("only one claim per connection"));
    h.bind(2, "a", "s1");
    let r = h.reply(2, json!({"type": "claim", "nameplate": 12}), 0.0);
    assert_eq!(error_of(&r), err("'nameplate' must be a string"));
    h.bind(3, "a", "s1");
    let mb = h.claim(3, "1", 1.0);
    assert_eq!(mb.len(), 13);
    assert!(mb
        .bytes()
        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
    // same side, new connection: same mailbox, one side row, original time
    h.bind(4, "a", "s1");
    assert_eq!(h.claim(4, "1", 2.0), mb);
    let snap = h.core.snapshot();
    assert_eq!(snap.nameplates[0].sides.len(), 1);
    assert_eq!(snap.nameplates[0].sides[0].added, 1.0);
}

#[test]
fn crowded_third_side_is_refused_and_not_recorded() {
    let mut h = Harness::new();
    h.bind(1, "a", "s1");
    h.bind(2, "a", "s2");
    h.bind(3, "a", "s3");
    let mb = h.claim(1, "1", 1.0);
    h.claim(2, "1", 2.0);
    let r = h.reply(3, json!({"type": "claim", "nameplate": "1"}), 3.0);
    assert_eq!(error_of(&r), err("crowded"));
    h.bind(4, "a", "s3");
    let r = h.reply(4, json!({"type": "open", "mailbox": mb}), 3.0);
    assert_eq!(error_of(&r), err("crowded"));
    // not subscribed: a second open on that connection is still allowed
    let r = h.reply(4, json!({"type": "open", "mailbox": mb}), 3.0);
    assert_eq!(error_of(&r), err("crowded"));
    h.bind(5, "a", "s3");
    let r = h.reply(5, json!({"type": "close", "mailbox": mb}), 3.0);
    assert_eq!(error_of(&r), err("crowded"));
    let snap = h.core.snapshot();
    assert_eq!(snap.mailboxes[0].sides.len(), 2);
    assert!(snap.mailboxes[0].crowded);
    // the two legitimate sides still delete everything when they finish
    for (conn, side) in [(6, "s1"), (7, "s2")] {
        h.bind(conn, "a", side);
        h.reply(conn, json!({"type": "release", "nameplate": "1"}), 4.0);
        h.reply(
            conn,
            json!({"type": "close", "mailbox": mb, "mood": "happy"}),
            5.0,
        );
    }
    assert_eq!(h.core.snapshot(), Snapshot::default());
    let results: Vec<_> = h
        .usage
        .iter()
        .filter_map(|u| match u {
            UsageRecord::Nameplate { result, .. } | UsageRecord::Mailbox { result, .. } => {
                Some(*result)
            }
            _ => None,
        })
        .collect();
    assert_eq!(results, vec![UsageResult::Crowded, UsageResult::Crowded]);
}

#[test]
fn reclaim_after_release_is_refused_while_the_nameplate_exists() {
    let mut h = Harness::new();
    h.bind(1, "a", "side");
    h.bind(2, "a", "side2");
    h.claim(1, "2", 1.0);
    h.claim(2, "2", 1.0);
    h.reply(1, json!({"type": "release"}), 2.0);
    h.bind(3, "a", "side");
    let r = h.reply(3, json!({"type": "claim", "nameplate": "2"}), 3.0);
    assert_eq!(error_of(&r), err("reclaimed"));
    let sides: Vec<_> = h.core.snapshot().nameplates[0]
        .sides
        .iter()
        .map(|s| (s.side.clone(), s.claimed))
        .collect();
    assert_eq!(sides, vec![("side".into(), false), ("side2".into(), true)]);
    // once the nameplate is gone the number is free again, with a new mailbox
    h.reply(2, json!({"type": "release"}), 4.0);
    assert!(h.core.snapshot().nameplates.is_empty());
}

#[test]
fn release_rules() {
    let mut h = Harness::new();
    h.bind(1, "a", "s1");
    let r = h.reply(1, json!({"type": "release"}), 0.0);
    assert_eq!(
        error_of(&r),
        err("release without nameplate must follow claim")
    );
    h.claim(1, "1", 1.0);
    let r = h.reply(1, json!({"type": "release", "nameplate": "2"}), 1.0);
    assert_eq!(
        error_of(&r),
        err("release and claim must use same nameplate")
    );
    let r = h.reply(1, json!({"type": "release"}), 1.0);
    assert_eq!(r, vec![json!({"type": "released"})]);
    let r = h.reply(1, json!({"type": "release"}), 1.0);
    assert_eq!(error_of(&r), err("only one release per connection"));
    // a named release on a fresh connection (resume), even of nothing
    h.bind(2, "a", "s9");
    let r = h.reply(2, json!({"type": "release", "nameplate": "abc"}), 1.0);
    assert_eq!(r, vec![json!({"type": "released"})]);
    // ... and a claim after it is still allowed
    h.claim(2, "5", 1.0);
}

#[test]
fn open_replays_in_receive_order_then_live() {
    let mut h = Harness::new();
    h.bind(1, "a", "s1");
    h.bind(2, "a", "s2");
    let r = h.reply(1, json!({"type": "open"}), 0.0);
    assert_eq!(error_of(&r), err("open requires 'mailbox'"));
    let r = h.reply(1, json!({"type": "add", "phase": "p", "body": "b"}), 0.0);
    assert_eq!(error_of(&r), err("must open mailbox before adding"));
    assert!(h
        .reply(1, json!({"type": "open", "mailbox": "mb1"}), 1.0)
        .is_empty());
    let r = h.reply(1, json!({"type": "open", "mailbox": "mb1"}), 1.0);
    assert_eq!(error_of(&r), err("only one open per connection"));
    let r = h.reply(1, json!({"type": "add", "body": "b"}), 1.0);
    assert_eq!(error_of(&r), err("missing 'phase'"));
    let r = h.reply(1, json!({"type": "add", "phase": "p"}), 1.0);
    assert_eq!(error_of(&r), err("missing 'body'"));
    let r = h.reply(
        1,
        json!({"type": "add", "phase": {"x": 1}, "body": "b"}),
        1.0,
    );
    assert_eq!(
        error_of(&r),
        err("'phase' must be a string, number, boolean or null")
    );
    for (i, phase) in ["pake", "version", "pake"].iter().enumerate() {
        let r = h.reply(
            1,
            json!({"type": "add", "phase": phase, "body": "00", "id": i}),
            2.0 + i as f64,
        );
        // echoed to the sender, no dedup
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["phase"], *phase);
        assert_eq!(r[0]["id"], i);
    }
    let replay = h.reply(2, json!({"type": "open", "mailbox": "mb1"}), 9.0);
    let rx: Vec<f64> = replay
        .iter()
        .filter_map(|m| m["server_rx"].as_f64())
        .collect();
    assert_eq!(rx, vec![2.0, 3.0, 4.0]);
    assert!(replay.iter().all(|m| m["side"] == "s1"));
    // live: both listeners get it, in subscription order
    let out = h.send(2, json!({"type": "add", "phase": "0", "body": "ff"}), 10.0);
    let to: Vec<ConnId> = out.iter().map(|(c, _)| *c).collect();
    assert_eq!(to, vec![2, 1, 2]);
}

#[test]
fn close_rules_and_deletion() {
    let mut h = Harness::new();
    h.bind(1, "a", "s1");
    let r = h.reply(1, json!({"type": "close"}), 0.0);
    assert_eq!(error_of(&r), err("close without mailbox must follow open"));
    h.reply(1, json!({"type": "open", "mailbox": "mb1"}), 1.0);
    let r = h.reply(1, json!({"type": "close", "mailbox": "mb2"}), 1.0);
    assert_eq!(error_of(&r), err("open and close must use same mailbox"));
    let r = h.reply(1, json!({"type": "close", "mood": "happy"}), 2.0);
    assert_eq!(r, vec![json!({"type": "closed"})]);
    assert!(h.core.listeners("a", "mb1").is_empty());
    let r = h.reply(1, json!({"type": "close"}), 2.0);
    assert_eq!(error_of(&r), err("only one close per connection"));
    // open again after close is allowed (Python behaviour)
    assert!(h
        .reply(1, json!({"type": "open", "mailbox": "mb1"}), 3.0)
        .is_empty());
    // one side only: that close deleted the mailbox; the reopen made a new one
    let snap = h.core.snapshot();
    assert_eq!(snap.mailboxes.len(), 1);
    assert!(snap.mailboxes[0].messages.is_empty());
}

#[test]
fn close_deletes_only_this_mailboxs_nameplates() {
    // protocol.md §5.5/§5.6: Python deletes nameplate sides by side across
    // apps and trips a foreign key when nobody released. We don't.
    let mut h = Harness::new();
    h.bind(1, "a", "s1");
    h.bind(2, "a", "s2");
    h.bind(3, "b", "s1");
    let mb = h.claim(1, "1", 1.0);
    h.claim(2, "1", 1.0);
    h.claim(3, "4", 1.0);
    for c in [1, 2] {
        h.connect(c + 10);
        h.reply(
            c,
            json!({"type": "close", "mailbox": mb, "mood": "happy"}),
            2.0,
        );
    }
    let snap = h.core.snapshot();
    assert_eq!(snap.nameplates.len(), 1, "{snap:?}");
    assert_eq!(snap.nameplates[0].app_id, "b");
    assert_eq!(snap.nameplates[0].sides.len(), 1);
    assert_eq!(snap.mailboxes.len(), 1);
}

#[test]
fn add_to_a_mailbox_deleted_by_the_peer_is_rejected() {
    let mut h = Harness::new();
    h.bind(1, "a", "s1");
    h.bind(2, "a", "s2");
    h.bind(3, "a", "s2");
    h.reply(1, json!({"type": "open", "mailbox": "m"}), 1.0);
    h.reply(2, json!({"type": "open", "mailbox": "m"}), 1.0);
    h.reply(2, json!({"type": "close"}), 2.0);
    // s1 closes from another connection while conn 1 is still subscribed
    h.bind(4, "a", "s1");
    h.reply(4, json!({"type": "close", "mailbox": "m"}), 3.0);
    assert!(h.core.snapshot().mailboxes.is_empty());
    let r = h.reply(1, json!({"type": "add", "phase": "p", "body": "b"}), 4.0);
    assert_eq!(error_of(&r), err("must open mailbox before adding"));
    let r = h.reply(1, json!({"type": "close"}), 4.0);
    assert_eq!(r, vec![json!({"type": "closed"})]);
    assert!(h.core.snapshot().mailboxes.is_empty());
    let _ = h.reply(3, json!({"type": "ping", "ping": 1}), 5.0);
}

#[test]
fn stray_named_close_of_a_missing_mailbox_is_answered_without_state() {
    let mut h = Harness::new();
    h.bind(1, "a", "s1");
    let r = h.reply(1, json!({"type": "close", "mailbox": "nope"}), 1.0);
    assert_eq!(r, vec![json!({"type": "closed"})]);
    assert_eq!(h.core.snapshot(), Snapshot::default());
    assert!(h
        .usage
        .iter()
        .all(|u| matches!(u, UsageRecord::ClientVersion { .. })));
}

#[test]
fn interrupted_client_resumes_on_new_connections() {
    // test_interrupted_client_nameplate / _mailbox
    let mut h = Harness::new();
    h.bind(1, "a", "side");
    let mb = h.claim(1, "1", 1.0);
    h.bind(2, "a", "side");
    assert_eq!(h.claim(2, "1", 2.0), mb);
    h.bind(3, "a", "side");
    let r = h.reply(3, json!({"type": "release", "nameplate": "1"}), 3.0);
    assert_eq!(r, vec![json!({"type": "released"})]);
    assert!(h.core.snapshot().nameplates.is_empty());
    h.bind(4, "a", "side");
    let r = h.reply(4, json!({"type": "release", "nameplate": "1"}), 3.0);
    assert_eq!(r, vec![json!({"type": "released"})]);
    // mailbox: two connections of one side both get the replay
    h.bind(5, "a", "side2");
    h.reply(5, json!({"type": "open", "mailbox": mb}), 4.0);
    h.reply(5, json!({"type": "add", "phase": "p", "body": "b"}), 4.0);
    h.bind(6, "a", "side");
    assert_eq!(
        h.reply(6, json!({"type": "open", "mailbox": mb}), 5.0)
            .len(),
        1
    );
    h.bind(7, "a", "side");
    assert_eq!(
        h.reply(7, json!({"type": "open", "mailbox": mb}), 5.0)
            .len(),
        1
    );
    let out = h.send(5, json!({"type": "add", "phase": "q", "body": "c"}), 6.0);
    let to: Vec<ConnId> = out.iter().skip(1).map(|(c, _)| *c).collect();
    assert_eq!(to, vec![5, 6, 7]);
}

#[test]
fn two_client_transcript_leaves_nothing_behind() {
    // protocol.md §11
    let mut h = Harness::new();
    let app = "lothar.com/wormhole/text-or-file-xfer";
    h.bind(1, app, "S");
    let r = h.reply(1, json!({"type": "allocate", "id": "67bd"}), 1.0);
    let np = r[0]["nameplate"].as_str().expect("np").to_owned();
    let mb = h.claim(1, &np, 1.1);
    h.reply(1, json!({"type": "open", "mailbox": mb}), 1.2);
    h.reply(
        1,
        json!({"type": "add", "phase": "pake", "body": "aa"}),
        1.3,
    );
    h.bind(2, app, "R");
    assert_eq!(h.claim(2, &np, 3.0), mb);
    let replay = h.reply(2, json!({"type": "open", "mailbox": mb}), 3.1);
    assert_eq!(replay.len(), 1);
    let out = h.send(
        2,
        json!({"type": "add", "phase": "pake", "body": "bb"}),
        3.2,
    );
    assert_eq!(
        out.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        vec![2, 1, 2]
    );
    h.reply(1, json!({"type": "release", "nameplate": np}), 3.3);
    h.reply(2, json!({"type": "release", "nameplate": np}), 3.4);
    assert!(h.core.snapshot().nameplates.is_empty());
    h.reply(
        2,
        json!({"type": "close", "mailbox": mb, "mood": "happy"}),
        4.0,
    );
    assert_eq!(h.core.snapshot().mailboxes.len(), 1);
    h.reply(
        1,
        json!({"type": "close", "mailbox": mb, "mood": "happy"}),
        5.0,
    );
    assert_eq!(h.core.snapshot(), Snapshot::default());
    let rows: Vec<_> = h
        .usage
        .iter()
        .filter(|u| !matches!(u, UsageRecord::ClientVersion { .. }))
        .cloned()
        .collect();
    assert_eq!(
        rows,
        vec![
            UsageRecord::Nameplate {
                app_id: app.into(),
                started: 1.0,
                waiting_time: Some(2.0),
                total_time: 3.4 - 1.0,
                result: UsageResult::Happy,
            },
            UsageRecord::Mailbox {
                app_id: app.into(),
                for_nameplate: true,
                started: 1.0,
                waiting_time: Some(2.0),
                total_time: 4.0,
                result: UsageResult::Happy,
            },
        ]
    );
}

#[test]
fn list_is_string_sorted_and_can_be_disallowed() {
    let mut h = Harness::new();
    for (i, np) in ["2", "10", "1", "100"].iter().enumerate() {
        h.bind(i as u64 + 1, "a", &format!("s{i}"));
        h.claim(i as u64 + 1, np, 1.0);
    }
    let r = h.reply(1, json!({"type": "list"}), 1.0);
    assert_eq!(
        r,
        vec![
            json!({"type": "nameplates", "nameplates": [{"id": "1"}, {"id": "10"}, {"id": "100"}, {"id": "2"}]})
        ]
    );
    let mut h = Harness::with(CoreSettings {
        disallow_list: true,
        ..CoreSettings::default()
    });
    h.bind(1, "a", "s");
    h.claim(1, "3", 1.0);
    let r = h.reply(1, json!({"type": "list"}), 1.0);
    assert_eq!(r, vec![json!({"type": "nameplates", "nameplates": []})]);
}

#[test]
fn apps_are_isolated() {
    let mut h = Harness::new();
    h.bind(1, "a", "s1");
    h.bind(2, "b", "s1");
    let r1 = h.reply(1, json!({"type": "allocate"}), 1.0);
    assert_eq!(r1[0]["type"], "allocated");
    let mb_a = h.claim(1, "7", 1.0);
    let mb_b = h.claim(2, "7", 1.0);
    assert_ne!(mb_a, mb_b);
    // app b opening app a's mailbox id gets a fresh, empty mailbox
    h.reply(1, json!({"type": "open", "mailbox": mb_a}), 1.0);
    h.reply(1, json!({"type": "add", "phase": "p", "body": "b"}), 1.0);
    h.bind(3, "b", "s2");
    assert!(h
        .reply(3, json!({"type": "open", "mailbox": mb_a}), 2.0)
        .is_empty());
}

#[test]
fn prune_matrix() {
    // Prune.test_lots: now=123, old=50; times 1 are old, 60 new
    let mut h = Harness::new();
    let mut expect_alive = Vec::new();
    let mut conn = 0;
    for with_nameplate in [false, true] {
        for t in [1.0, 60.0] {
            for listening in [false, true] {
                conn += 1;
                let side = format!("s{conn}");
                h.bind(conn, "a", &side);
                let mb = if with_nameplate {
                    let np = conn.to_string();
                    let mb = h.claim(conn, &np, t);
                    h.reply(conn, json!({"type": "release"}), t);
                    mb
                } else {
                    format!("mb{conn}")
                };
                if listening {
                    h.reply(conn, json!({"type": "open", "mailbox": mb}), t);
                } else {
                    h.bind(conn + 100, "a", &side);
                    h.reply(conn + 100, json!({"type": "open", "mailbox": mb}), t);
                    h.core.disconnect(conn + 100);
                }
                if t == 60.0 || listening {
                    expect_alive.push(mb);
                }
            }
        }
    }
    h.prune(123.0, 50.0);
    let mut alive: Vec<String> = h
        .core
        .snapshot()
        .mailboxes
        .into_iter()
        .map(|m| m.id)
        .collect();
    alive.sort();
    expect_alive.sort();
    assert_eq!(alive, expect_alive);
}

#[test]
fn prune_takes_nameplates_with_their_mailbox() {
    // Prune.test_nameplates: claims at (1), (1,2), (60), (1,60), (60,61)
    let mut h = Harness::new();
    let cases: [&[f64]; 5] = [&[1.0], &[1.0, 2.0], &[60.0], &[1.0, 60.0], &[60.0, 61.0]];
    let mut conn = 0;
    for (i, times) in cases.iter().enumerate() {
        for t in times.iter() {
            conn += 1;
            h.bind(conn, "a", &format!("side{conn}"));
            h.claim(conn, &(i + 1).to_string(), *t);
            h.core.disconnect(conn);
        }
    }
    h.prune(123.0, 50.0);
    let names: Vec<String> = h
        .core
        .snapshot()
        .nameplates
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec!["3", "4", "5"]);
    assert!(h.usage.iter().any(|u| matches!(
        u,
        UsageRecord::Nameplate {
            result: UsageResult::Pruney,
            ..
        }
    )));
}

#[test]
fn limits_answer_with_errors() {
    let mut h = Harness::with(CoreSettings {
        limits: Limits {
            max_mailbox_messages: 2,
            max_mailbox_bytes: 64,
            max_app_nameplates: 2,
            max_mailboxes: 3,
        },
        ..CoreSettings::default()
    });
    h.bind(1, "a", "s1");
    h.reply(1, json!({"type": "open", "mailbox": "m"}), 1.0);
    h.reply(1, json!({"type": "add", "phase": "1", "body": "aa"}), 1.0);
    h.reply(1, json!({"type": "add", "phase": "2", "body": "aa"}), 1.0);
    let r = h.reply(1, json!({"type": "add", "phase": "3", "body": "aa"}), 1.0);
    assert_eq!(error_of(&r), err("mailbox is full: too many messages"));
    h.bind(2, "a", "s2");
    h.reply(2, json!({"type": "open", "mailbox": "m2"}), 1.0);
    let r = h.reply(
        2,
        json!({"type": "add", "phase": "1", "body": "a".repeat(80)}),
        1.0,
    );
    assert_eq!(error_of(&r), err("mailbox is full: too many bytes"));
    h.bind(3, "a", "s3");
    h.claim(3, "1", 1.0); // third mailbox
    h.bind(4, "a", "s4");
    let r = h.reply(4, json!({"type": "claim", "nameplate": "2"}), 1.0);
    assert_eq!(
        error_of(&r),
        err("server is full: too many mailboxes in use, try again later")
    );
    // joining an existing nameplate is still fine
    h.bind(5, "a", "s5");
    h.claim(5, "1", 1.0);
    assert_eq!(h.core.limit_hits.get("max_mailbox_messages"), Some(&1));
}

#[test]
fn permissions_hashcash_and_none() {
    use super::permission::mint_hashcash;
    let mut h = Harness::with(CoreSettings {
        permissions: Permissions {
            allow_none: false,
            hashcash_bits: Some(8),
        },
        ..CoreSettings::default()
    });
    let offer = h.connect(1).expect("offered");
    assert_eq!(offer["none"], Value::Null);
    assert_eq!(offer["hashcash"]["bits"], 8);
    let resource = offer["hashcash"]["resource"]
        .as_str()
        .expect("resource")
        .to_owned();
    let r = h.reply(1, json!({"type": "bind", "appid": "a", "side": "s"}), 0.0);
    assert_eq!(error_of(&r), err("must submit-permission first"));
    let r = h.reply(
        1,
        json!({"type": "submit-permissions", "method": "none"}),
        0.0,
    );
    assert_eq!(error_of(&r), err("'none' is not one of: hashcash"));
    let r = h.reply(
        1,
        json!({"type": "submit-permission", "method": "hashcash", "stamp": "1:8:x:wrong::r:0"}),
        0.0,
    );
    assert_eq!(error_of(&r), err("submit-permission failed"));
    let stamp = mint_hashcash(&resource, 8);
    let r = h.reply(
        1,
        json!({"type": "submit-permission", "method": "hashcash", "stamp": stamp}),
        0.0,
    );
    assert!(r.is_empty(), "{r:?}");
    let r = h.reply(
        1,
        json!({"type": "submit-permissions", "method": "hashcash", "stamp": stamp}),
        0.0,
    );
    assert_eq!(
        error_of(&r),
        err("submit-permission failed"),
        "reused stamp"
    );
    let r = h.reply(1, json!({"type": "bind", "appid": "a", "side": "s"}), 0.0);
    assert!(r.is_empty());
    // default settings: nothing offered, the message type is unknown as in Python
    let mut h = Harness::new();
    assert_eq!(h.connect(1), None);
    let r = h.reply(
        1,
        json!({"type": "submit-permission", "method": "none"}),
        0.0,
    );
    assert_eq!(error_of(&r), err("must bind first"));
}

#[test]
fn restore_rebuilds_the_same_state() {
    let mut h = Harness::new();
    h.bind(1, "a", "s1");
    let mb = h.claim(1, "4", 1.0);
    h.reply(1, json!({"type": "open", "mailbox": mb}), 1.0);
    h.reply(
        1,
        json!({"type": "add", "phase": 5, "body": "x", "id": null}),
        2.0,
    );
    let snap = h.core.snapshot();
    let restored = Core::restore(CoreSettings::default(), snap.clone());
    assert_eq!(restored.snapshot(), snap);
}
