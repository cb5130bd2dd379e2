//! Drivers and invariant checks shared by the fuzz targets (`fuzz_targets/`)
//! and by this crate's own `cargo test` replay of random and seed inputs.

pub mod sequence;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use wormhole_mailbox_server::protocol::{
    decode, ClientMessage, ConnId, Core, CoreSettings, Effects, Permissions, ServerMessage,
    Snapshot,
};
use wormhole_mailbox_server::store::{MemoryStore, Store};

/// Checks the frames one `handle` call produced for a message from `conn`:
/// - a message with a `type` key gets exactly one `ack`, carrying its `id`
///   (or null), and the ack is the first frame for `conn` (and the first
///   frame of the call: nothing is broadcast before the sender's ack);
/// - a message without `type` gets exactly one `error` and nothing else;
/// - a rejected command produces exactly `[ack, error]` (no partial reply);
/// - every frame encodes to a JSON object whose `type` is its kind.
pub fn check_frames(conn: ConnId, msg: &ClientMessage, fx: &Effects) {
    for e in &fx.envelopes {
        let text = e.msg.to_json(1.5);
        let v: Value = serde_json::from_str(&text).expect("server frame is JSON");
        assert_eq!(v["type"], e.msg.type_name(), "frame {text}");
    }
    let acks = fx
        .envelopes
        .iter()
        .filter(|e| matches!(e.msg, ServerMessage::Ack { .. }))
        .count();
    let errors: Vec<usize> = fx
        .envelopes
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.msg, ServerMessage::Error { .. }))
        .map(|(i, _)| i)
        .collect();
    if !msg.contains_key("type") {
        assert_eq!(fx.envelopes.len(), 1, "no type: one error only {fx:?}");
        assert_eq!(errors, vec![0], "no type: an error {fx:?}");
        assert!(fx.mutations.is_empty(), "no type: no state change {fx:?}");
        return;
    }
    assert_eq!(acks, 1, "exactly one ack {fx:?}");
    let first = &fx.envelopes[0];
    assert_eq!(first.to, conn, "the sender's ack comes first {fx:?}");
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    assert_eq!(
        first.msg,
        ServerMessage::Ack { id },
        "ack echoes the id {fx:?}"
    );
    if !errors.is_empty() {
        assert_eq!(errors, vec![1], "an error is the only reply {fx:?}");
        assert_eq!(fx.envelopes.len(), 2, "an error is the only reply {fx:?}");
        assert_eq!(fx.envelopes[1].to, conn, "errors go to the sender {fx:?}");
    }
}

/// Structural invariants of any state: at most two distinct sides on every
/// mailbox and nameplate, every nameplate points at a live mailbox of its
/// app, and stored messages are in receive order.
pub fn check_state(snap: &Snapshot) {
    let mailboxes: BTreeSet<(&str, &str)> = snap
        .mailboxes
        .iter()
        .map(|m| (m.app_id.as_str(), m.id.as_str()))
        .collect();
    for m in &snap.mailboxes {
        assert!(m.sides.len() <= 2, "more than two sides admitted: {m:?}");
        let distinct: BTreeSet<&str> = m.sides.iter().map(|s| s.side.as_str()).collect();
        assert_eq!(distinct.len(), m.sides.len(), "duplicate side: {m:?}");
        assert!(
            m.messages
                .windows(2)
                .all(|w| w[0].server_rx <= w[1].server_rx),
            "messages out of receive order: {m:?}"
        );
    }
    for n in &snap.nameplates {
        assert!(
            n.sides.len() <= 2,
            "more than two sides on a nameplate: {n:?}"
        );
        let distinct: BTreeSet<&str> = n.sides.iter().map(|s| s.side.as_str()).collect();
        assert_eq!(distinct.len(), n.sides.len(), "duplicate side: {n:?}");
        assert!(
            mailboxes.contains(&(n.app_id.as_str(), n.mailbox_id.as_str())),
            "nameplate points at a missing mailbox: {n:?}"
        );
    }
}

fn obj(v: Value) -> ClientMessage {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("literal objects only"),
    }
}

/// Feeds `msg` to `conn` and checks its frames; returns the effects.
fn feed(core: &mut Core, rng: &mut StdRng, conn: ConnId, msg: ClientMessage) -> Effects {
    let fx = core.handle(conn, msg.clone(), 1000.0, rng);
    check_frames(conn, &msg, &fx);
    fx
}

/// The `decode` target: one frame's bytes. If they decode, the message is
/// handled on a fresh connection in several states (unbound, bound, with a
/// claimed nameplate and an open mailbox, and on a server that requires a
/// permission), checking the frame rules, the state invariants, and that a
/// store fed with the emitted mutations holds exactly the core's state.
pub fn decode_and_handle(data: &[u8]) {
    let Ok(msg) = decode(data) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(0);
    let mut core = Core::new(CoreSettings::default());
    let mut store = MemoryStore::new();
    let mut mutations = Vec::new();
    let setup = [
        // unbound
        (1, vec![]),
        // bound
        (2, vec![json!({"type": "bind", "appid": "a", "side": "s2"})]),
        // bound, claimed, open, one stored message, a peer listening
        (
            3,
            vec![
                json!({"type": "bind", "appid": "a", "side": "s3"}),
                json!({"type": "claim", "nameplate": "1"}),
            ],
        ),
    ];
    for (conn, prelude) in setup {
        core.connect(conn, &mut rng);
        for m in prelude {
            let fx = feed(&mut core, &mut rng, conn, obj(m));
            mutations.extend(fx.mutations);
        }
    }
    // the peer of conn 3 opens the shared mailbox and adds a message
    let mailbox = core
        .snapshot()
        .nameplates
        .first()
        .map(|n| n.mailbox_id.clone())
        .expect("claimed nameplate");
    for m in [
        json!({"type": "open", "mailbox": mailbox}),
        json!({"type": "add", "phase": "pake", "body": "00"}),
    ] {
        let fx = feed(&mut core, &mut rng, 3, obj(m));
        mutations.extend(fx.mutations);
    }
    for conn in [1, 2, 3] {
        let fx = feed(&mut core, &mut rng, conn, msg.clone());
        mutations.extend(fx.mutations);
        let snap = core.snapshot();
        check_state(&snap);
    }
    store.apply(&mutations).expect("memory store");
    assert_eq!(
        store.load().expect("load"),
        core.snapshot(),
        "store mirrors core"
    );

    // a server that requires a permission before bind
    let mut guarded = Core::new(CoreSettings {
        permissions: Permissions {
            allow_none: false,
            hashcash_bits: Some(1),
        },
        ..CoreSettings::default()
    });
    guarded.connect(1, &mut rng);
    feed(&mut guarded, &mut rng, 1, msg.clone());
    feed(&mut guarded, &mut rng, 1, msg);
}
