//! The `record` subcommand: a WebSocket proxy between a real client and a
//! server that logs every frame, then turns the session into a draft
//! vector (connections `c1`, `c2`, …; client frames as `send`, server
//! frames as `expect`, with app ids, sides, nameplates, mailbox ids and
//! times replaced by variables, captures and matchers). For the
//! permissions extension, the welcome's hashcash `resource` and `bits` are
//! captured, a recorded stamp becomes a `{"$hashcash": {...}}` generator
//! for the replay's own resource, and the draft gets `requires` and
//! `server` options matching the welcome's `permission-required`.

use crate::hashcash;
use crate::json::{inline, to_hex};
use crate::transcript::Frame;
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// One thing the proxy saw.
#[derive(Clone, Debug, PartialEq)]
pub enum RecEvent {
    /// Client connection `n` (1-based) was accepted.
    Connected(usize),
    /// The client sent a frame.
    ClientFrame(usize, Frame),
    /// The server sent a frame.
    ServerFrame(usize, Frame),
    /// The client closed (`clean`: with a close frame).
    ClientClosed(usize, bool),
    /// The server closed.
    ServerClosed(usize),
}

/// Settings of a recording session.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Where clients connect (e.g. `127.0.0.1:4001`).
    pub listen: SocketAddr,
    /// The server (`ws://127.0.0.1:4000/v1`).
    pub upstream: String,
    /// Stop after this long with no open connection, once at least one
    /// connection has come and gone.
    pub idle: Duration,
    /// Stop once this many connections have finished.
    pub max_connections: Option<usize>,
}

/// Runs the proxy until `stop` resolves, the session goes idle, or
/// `max_connections` have finished; returns what it saw, in order.
pub async fn record(
    opts: &RecordOptions,
    stop: impl std::future::Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<Vec<RecEvent>> {
    crate::conn::Endpoint::parse(&opts.upstream).map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    on_listening(listener.local_addr()?);
    let log = Arc::new(Mutex::new(Vec::new()));
    let active = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let last_change = Arc::new(Mutex::new(Instant::now()));
    let mut accepted = 0usize;
    let mut handlers = Vec::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => {
                let (tcp, _) = r?;
                accepted += 1;
                active.fetch_add(1, Ordering::SeqCst);
                let n = accepted;
                let (log, active, finished, last_change) = (log.clone(), active.clone(), finished.clone(), last_change.clone());
                let upstream = opts.upstream.clone();
                handlers.push(tokio::spawn(async move {
                    if let Err(e) = proxy(tcp, n, &upstream, &log).await {
                        eprintln!("record: connection c{n}: {e:#}");
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                    finished.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut t) = last_change.lock() {
                        *t = Instant::now();
                    }
                }));
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let idle_for = last_change.lock().map(|t| t.elapsed()).unwrap_or_default();
                let quiet = accepted > 0 && active.load(Ordering::SeqCst) == 0;
                if quiet && idle_for >= opts.idle {
                    break;
                }
                if let Some(max) = opts.max_connections {
                    if finished.load(Ordering::SeqCst) >= max && active.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                }
            }
        }
    }
    for h in handlers {
        h.abort();
    }
    let events = log.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(events)
}

fn push(log: &Mutex<Vec<RecEvent>>, e: RecEvent) {
    if let Ok(mut l) = log.lock() {
        l.push(e);
    }
}

fn frame_of(m: &Message) -> Option<Frame> {
    match m {
        Message::Text(t) => Some(Frame::Text(t.as_str().to_owned())),
        Message::Binary(b) => Some(Frame::Binary(b.to_vec())),
        _ => None,
    }
}

async fn proxy(
    tcp: TcpStream,
    n: usize,
    upstream: &str,
    log: &Mutex<Vec<RecEvent>>,
) -> anyhow::Result<()> {
    let client = tokio_tungstenite::accept_async(tcp)
        .await
        .context("client handshake")?;
    push(log, RecEvent::Connected(n));
    let (server, _) = tokio_tungstenite::connect_async(upstream)
        .await
        .with_context(|| format!("cannot connect to {upstream}"))?;
    let (mut c_tx, mut c_rx) = client.split();
    let (mut s_tx, mut s_rx) = server.split();
    loop {
        tokio::select! {
            m = c_rx.next() => match m {
                Some(Ok(Message::Close(_))) => {
                    push(log, RecEvent::ClientClosed(n, true));
                    let _ = s_tx.send(Message::Close(None)).await;
                    return Ok(());
                }
                Some(Ok(m)) => if let Some(f) = frame_of(&m) {
                    push(log, RecEvent::ClientFrame(n, f));
                    s_tx.send(m).await.context("forwarding to the server")?;
                },
                None | Some(Err(_)) => {
                    push(log, RecEvent::ClientClosed(n, false));
                    return Ok(());
                }
            },
            m = s_rx.next() => match m {
                Some(Ok(Message::Close(frame))) => {
                    push(log, RecEvent::ServerClosed(n));
                    let _ = c_tx.send(Message::Close(frame)).await;
                    return Ok(());
                }
                Some(Ok(m)) => if let Some(f) = frame_of(&m) {
                    push(log, RecEvent::ServerFrame(n, f));
                    c_tx.send(m).await.context("forwarding to the client")?;
                },
                None | Some(Err(_)) => {
                    push(log, RecEvent::ServerClosed(n));
                    return Ok(());
                }
            },
        }
    }
}

/// What one connection's welcome offered for hashcash: the capture names
/// of its `resource` and `bits`, and the recorded bits.
struct HashcashOffer {
    resource: String,
    bits: Option<(String, u64)>,
}

/// Turns recorded values into variables, captures and matchers.
#[derive(Default)]
struct Drafter {
    appids: BTreeMap<String, String>,
    sides: BTreeMap<String, String>,
    /// Captured value → capture name.
    captured: BTreeMap<String, String>,
    nameplates: usize,
    mailboxes: usize,
    /// Connection → what its welcome offered for hashcash.
    offers: BTreeMap<usize, HashcashOffer>,
    /// Recorded hashcash resource → capture name (`res1`, …), so a stamp
    /// for any connection's resource refers to that connection's capture.
    resources: BTreeMap<String, String>,
    /// Recorded stamp → capture name (`st1`, …), for stamps that occur
    /// again after their first `send` (resent, or echoed in an `orig`).
    stamps: BTreeMap<String, String>,
    /// Stamps that occur in more than one frame of the session.
    repeated: BTreeSet<String>,
    /// Launch options inferred from the first welcome with a
    /// `permission-required` that names a known method.
    server: Option<Map<String, Value>>,
}

/// The `stamp` of a `submit-permission(s)` message, if it is a string.
fn submitted_stamp(msg: &Value) -> Option<&str> {
    let kind = msg.get("type").and_then(Value::as_str)?;
    if kind != "submit-permission" && kind != "submit-permissions" {
        return None;
    }
    msg.get("stamp").and_then(Value::as_str)
}

/// A literal string for a `send` template or pattern (`$` escaped).
fn literal(s: &str) -> Value {
    if s.starts_with('$') {
        json!(format!("${s}"))
    } else {
        json!(s)
    }
}

/// Counts, for each stamp the clients submitted, the frames whose JSON
/// holds it as a string value anywhere; returns those seen more than once.
fn repeated_stamps(events: &[RecEvent]) -> BTreeSet<String> {
    fn strings<'a>(v: &'a Value, out: &mut BTreeSet<&'a str>) {
        match v {
            Value::String(s) => {
                out.insert(s);
            }
            Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            Value::Object(map) => map.values().for_each(|i| strings(i, out)),
            _ => {}
        }
    }
    let frames: Vec<(bool, Value)> = events
        .iter()
        .filter_map(|e| match e {
            RecEvent::ClientFrame(_, f) => Some((true, f)),
            RecEvent::ServerFrame(_, f) => Some((false, f)),
            _ => None,
        })
        .filter_map(|(client, f)| {
            let v = match f {
                Frame::Text(_) => f.json(),
                Frame::Binary(b) => serde_json::from_slice(b).ok(),
            };
            v.map(|v| (client, v))
        })
        .collect();
    let mut counts: BTreeMap<&str, usize> = frames
        .iter()
        .filter(|(client, _)| *client)
        .filter_map(|(_, v)| submitted_stamp(v))
        .map(|s| (s, 0))
        .collect();
    for (_, v) in &frames {
        let mut seen = BTreeSet::new();
        strings(v, &mut seen);
        for s in seen {
            if let Some(n) = counts.get_mut(s) {
                *n += 1;
            }
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(s, _)| s.to_owned())
        .collect()
}

impl Drafter {
    /// A welcome: remembers connection `n`'s hashcash offer and, from the
    /// first welcome with a `permission-required`, the launch options that
    /// make a server send the same welcome.
    fn learn_welcome(&mut self, n: usize, msg: &Value) {
        if msg.get("type").and_then(Value::as_str) != Some("welcome") {
            return;
        }
        let welcome = msg.get("welcome");
        let Some(required) = welcome
            .and_then(|w| w.get("permission-required"))
            .and_then(Value::as_object)
        else {
            return;
        };
        let hashcash = required.get("hashcash").and_then(Value::as_object);
        if self.server.is_none() {
            let mut methods = Vec::new();
            if required.get("none").is_some_and(|v| !v.is_null()) {
                methods.push("none");
            }
            if hashcash.is_some() {
                methods.push("hashcash");
            }
            if !methods.is_empty() {
                let mut server = Map::new();
                let w = welcome.and_then(Value::as_object);
                for (key, option) in [
                    ("motd", "motd"),
                    ("current_cli_version", "advertise_version"),
                    ("error", "signal_error"),
                ] {
                    if let Some(text) = w.and_then(|w| w.get(key)).and_then(Value::as_str) {
                        server.insert(option.into(), json!(text));
                    }
                }
                server.insert("permissions".into(), json!(methods));
                if let Some(bits) = hashcash
                    .and_then(|h| h.get("bits"))
                    .and_then(Value::as_u64)
                    .filter(|b| (1..=64).contains(b))
                {
                    server.insert("hashcash_bits".into(), json!(bits));
                }
                self.server = Some(server);
            }
        }
        let Some(resource) = hashcash
            .and_then(|h| h.get("resource"))
            .and_then(Value::as_str)
        else {
            return;
        };
        let k = self.offers.len() + 1;
        let name = self
            .resources
            .entry(resource.to_owned())
            .or_insert_with(|| format!("res{k}"))
            .clone();
        let bits = hashcash
            .and_then(|h| h.get("bits"))
            .and_then(Value::as_u64)
            .map(|b| (format!("bits{k}"), b));
        self.offers.insert(
            n,
            HashcashOffer {
                resource: name,
                bits,
            },
        );
    }

    /// Puts connection `n`'s hashcash captures into its welcome pattern.
    fn capture_offer(&self, n: usize, pattern: &mut Value) {
        let Some(offer) = self.offers.get(&n) else {
            return;
        };
        let Some(hashcash) = pattern
            .pointer_mut("/welcome/permission-required/hashcash")
            .and_then(Value::as_object_mut)
        else {
            return;
        };
        let first = self
            .offers
            .iter()
            .find(|(_, o)| o.resource == offer.resource)
            .is_some_and(|(m, _)| *m == n);
        hashcash.insert(
            "resource".into(),
            if first {
                json!({"$capture": offer.resource, "$type": "string", "$regex": "^[^:]+$"})
            } else {
                json!(format!("${}", offer.resource))
            },
        );
        if let Some((name, _)) = &offer.bits {
            hashcash.insert("bits".into(), json!({"$capture": name, "$type": "integer"}));
        }
    }

    /// A recorded stamp as a `$hashcash` generator for connection `n`
    /// (`None` when it is not seven fields with numeric bits: then it stays
    /// a literal string), and a comment when the replay cannot mint what
    /// was recorded.
    fn generator(&mut self, n: usize, stamp: &str) -> Option<(Value, Option<String>)> {
        let fields: Vec<&str> = stamp.split(':').collect();
        if fields.len() != 7 {
            return None;
        }
        let claimed = fields[1]
            .parse::<u64>()
            .ok()
            .filter(|b| *b <= u64::from(hashcash::MAX_BITS))?;
        let mut g = Map::new();
        g.insert(
            "resource".into(),
            match self.resources.get(fields[3]) {
                Some(name) => json!(format!("${name}")),
                None => literal(fields[3]),
            },
        );
        let asked = self.offers.get(&n).and_then(|o| o.bits.as_ref());
        g.insert(
            "bits".into(),
            match asked {
                Some((name, bits)) if *bits == claimed => json!(format!("${name}")),
                _ => json!(claimed),
            },
        );
        let work = u64::from(hashcash::stamp_work(stamp));
        let max = u64::from(hashcash::MAX_WORK);
        let mut comment = None;
        if work < claimed {
            // a stamp that claims more than it carries (deliberately bad)
            g.insert("work".into(), json!(work.min(max)));
        } else if claimed > max {
            g.insert("work".into(), json!(max));
            comment = Some(format!(
                "the recorded stamp claims {claimed} bits and carries them; the harness mints at most {max} bits of work, so this stamp claims more than it carries: lower the server's hashcash_bits and the claimed bits"
            ));
        }
        if fields[0] != "1" {
            g.insert("version".into(), literal(fields[0]));
        }
        if !fields[4].is_empty() {
            g.insert("ext".into(), literal(fields[4]));
        }
        if self.repeated.contains(stamp) {
            let name = format!("st{}", self.stamps.len() + 1);
            g.insert("as".into(), json!(name));
            self.stamps.insert(stamp.to_owned(), name);
        }
        Some((json!({ "$hashcash": g }), comment))
    }

    /// A client message on connection `n`: substitute known values and
    /// turn a new hashcash stamp into a generator.
    fn client_message(&mut self, n: usize, msg: &Value) -> (Value, Option<String>) {
        self.learn_bind(msg);
        let mut out = self.template(msg, None);
        let mut comment = None;
        if let Some(stamp) = submitted_stamp(msg) {
            if !self.stamps.contains_key(stamp) {
                if let Some((g, c)) = self.generator(n, stamp) {
                    out["stamp"] = g;
                    comment = c;
                }
            }
        }
        (out, comment)
    }

    fn learn_bind(&mut self, msg: &Value) {
        if msg.get("type").and_then(Value::as_str) != Some("bind") {
            return;
        }
        if let Some(a) = msg.get("appid").and_then(Value::as_str) {
            if !self.appids.contains_key(a) {
                let var = if self.appids.is_empty() {
                    "$appid".to_owned()
                } else {
                    format!("$appid:app{}", self.appids.len() + 1)
                };
                self.appids.insert(a.to_owned(), var);
            }
        }
        if let Some(s) = msg.get("side").and_then(Value::as_str) {
            if !self.sides.contains_key(s) {
                let var = format!("$side:s{}", self.sides.len() + 1);
                self.sides.insert(s.to_owned(), var);
            }
        }
    }

    fn string(&self, s: &str, key: Option<&str>) -> Value {
        if let Some(v) = self.appids.get(s).or_else(|| self.sides.get(s)) {
            return json!(v);
        }
        if matches!(
            key,
            Some("nameplate") | Some("mailbox") | Some("nameplates[].id")
        ) {
            if let Some(name) = self.captured.get(s) {
                return json!(format!("${name}"));
            }
        }
        if let Some(name) = self.stamps.get(s) {
            return json!(format!("${name}"));
        }
        literal(s)
    }

    /// A client message: substitute known values.
    fn template(&self, v: &Value, key: Option<&str>) -> Value {
        match v {
            Value::String(s) => self.string(s, key),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| {
                        self.template(
                            i,
                            if key == Some("nameplates") {
                                Some("nameplates[]")
                            } else {
                                None
                            },
                        )
                    })
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, i)| {
                        let ctx = if key == Some("nameplates[]") && k == "id" {
                            "nameplates[].id"
                        } else {
                            k.as_str()
                        };
                        (k.clone(), self.template(i, Some(ctx)))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// A server message: a pattern, capturing new nameplates and mailboxes.
    fn pattern(&mut self, v: &Value, key: Option<&str>, parent: Option<&str>) -> Option<Value> {
        if matches!(key, Some("server_tx") | Some("server_rx")) {
            return None;
        }
        if key == Some("your-address") && parent == Some("welcome") {
            return Some(json!({"$type": "object"}));
        }
        Some(match v {
            Value::String(s) => {
                let is_np = matches!(key, Some("nameplate") | Some("nameplates[].id"));
                let is_mb = key == Some("mailbox");
                if (is_np || is_mb)
                    && !self.captured.contains_key(s)
                    && !self.appids.contains_key(s)
                    && !self.sides.contains_key(s)
                {
                    let name = if is_np {
                        self.nameplates += 1;
                        format!("np{}", self.nameplates)
                    } else {
                        self.mailboxes += 1;
                        format!("mb{}", self.mailboxes)
                    };
                    self.captured.insert(s.clone(), name.clone());
                    if is_np {
                        json!({"$capture": name, "$regex": "^[0-9]+$"})
                    } else {
                        json!({"$capture": name, "$type": "string"})
                    }
                } else {
                    self.string(s, key)
                }
            }
            Value::Array(items) => {
                let k = if key == Some("nameplates") {
                    Some("nameplates[]")
                } else {
                    None
                };
                Value::Array(
                    items
                        .iter()
                        .filter_map(|i| self.pattern(i, k, key))
                        .collect(),
                )
            }
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, i) in map {
                    let ctx = if key == Some("nameplates[]") && k == "id" {
                        "nameplates[].id"
                    } else {
                        k.as_str()
                    };
                    if let Some(p) = self.pattern(i, Some(ctx), key) {
                        out.insert(k.clone(), p);
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
}

/// Builds a draft vector from a recorded session.
pub fn draft_vector(events: &[RecEvent], upstream: &str) -> Value {
    let mut d = Drafter {
        repeated: repeated_stamps(events),
        ..Drafter::default()
    };
    let mut steps = Vec::new();
    let c = |n: &usize| format!("c{n}");
    for e in events {
        let step = match e {
            RecEvent::Connected(n) => json!({"connect": c(n)}),
            RecEvent::ClientFrame(n, f) => {
                let (key, value) = match (f, f.json()) {
                    (Frame::Text(_), Some(v)) => ("message", v),
                    (Frame::Text(t), None) => ("text", json!(t)),
                    (Frame::Binary(b), _) => match serde_json::from_slice::<Value>(b) {
                        Ok(v) => ("binary_message", v),
                        Err(_) => ("binary", json!(to_hex(b))),
                    },
                };
                if key == "message" || key == "binary_message" {
                    let (message, comment) = d.client_message(*n, &value);
                    let mut step = json!({"send": c(n), key: message});
                    if let Some(comment) = comment {
                        step["comment"] = json!(comment);
                    }
                    step
                } else {
                    json!({"send": c(n), key: value})
                }
            }
            RecEvent::ServerFrame(n, f) => match f.json() {
                Some(v) => {
                    d.learn_welcome(*n, &v);
                    let mut pattern = d.pattern(&v, None, None).unwrap_or(Value::Null);
                    d.capture_offer(*n, &mut pattern);
                    let is_plain_ack = pattern.get("type") == Some(&json!("ack"))
                        && pattern
                            .as_object()
                            .is_some_and(|o| o.len() == 2 && o.contains_key("id"));
                    if is_plain_ack {
                        json!({"expect": c(n), "ack": pattern["id"]})
                    } else {
                        json!({"expect": c(n), "message": pattern})
                    }
                }
                None => {
                    let what = match f {
                        Frame::Text(t) => {
                            format!("non-JSON text frame {}", Value::String(t.clone()))
                        }
                        Frame::Binary(b) => format!("binary frame {}", to_hex(b)),
                    };
                    json!({"expect": c(n), "message": {"$any": true}, "comment": format!("recorded {what}: a text JSON frame is expected here; edit this step")})
                }
            },
            RecEvent::ClientClosed(n, true) => json!({"disconnect": c(n)}),
            RecEvent::ClientClosed(n, false) => json!({"drop": c(n)}),
            RecEvent::ServerClosed(n) => json!({"expect": c(n), "closed": true}),
        };
        steps.push(step);
    }
    let mut draft = json!({
        "description": "Recorded session (draft): replace with one sentence saying what behaviour this checks",
        "spec": [],
        "class": "reference",
    });
    let mut notes = format!("Recorded by wormhole-mailbox-conformance record against {upstream}; review the matchers before committing.");
    if let Some(server) = d.server {
        draft["requires"] = json!(["permissions"]);
        draft["server"] = Value::Object(server);
        notes.push_str(" The welcome offered permissions: the launch options reproduce its permission-required (and its motd, version and error, if any), and the stamps are minted afresh for each connection's resource.");
    }
    draft["notes"] = json!(notes);
    draft["steps"] = json!(steps);
    draft
}

/// Renders a vector the way the vector files are written: top-level keys
/// one per line, one step per line.
pub fn render_vector(v: &Value) -> String {
    let Some(obj) = v.as_object() else {
        return inline(v);
    };
    let mut out = String::from("{\n");
    let n = obj.len();
    for (i, (k, val)) in obj.iter().enumerate() {
        out.push_str(&format!("  {}: ", Value::String(k.clone())));
        match (k.as_str(), val) {
            ("steps", Value::Array(steps)) => {
                out.push_str("[\n");
                for (j, s) in steps.iter().enumerate() {
                    out.push_str("    ");
                    out.push_str(&inline(s));
                    out.push_str(if j + 1 < steps.len() { ",\n" } else { "\n" });
                }
                out.push_str("  ]");
            }
            _ => out.push_str(&inline(val)),
        }
        out.push_str(if i + 1 < n { ",\n" } else { "\n" });
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Value) -> Frame {
        Frame::Text(v.to_string())
    }

    #[test]
    fn drafts_a_valid_vector_with_captures() {
        let events = vec![
            RecEvent::Connected(1),
            RecEvent::ServerFrame(
                1,
                text(
                    json!({"welcome": {"your-address": {"port": 1, "ipv4": "127.0.0.1"}}, "type": "welcome", "server_tx": 1.0}),
                ),
            ),
            RecEvent::ClientFrame(
                1,
                text(
                    json!({"appid": "lothar.com/x", "side": "b7bf0a807a", "id": "eaab", "type": "bind"}),
                ),
            ),
            RecEvent::ServerFrame(
                1,
                text(json!({"id": "eaab", "type": "ack", "server_tx": 1.0})),
            ),
            RecEvent::ClientFrame(1, text(json!({"id": "67bd", "type": "allocate"}))),
            RecEvent::ServerFrame(
                1,
                text(json!({"id": "67bd", "type": "ack", "server_tx": 1.0})),
            ),
            RecEvent::ServerFrame(
                1,
                text(json!({"nameplate": "7", "type": "allocated", "server_tx": 1.0})),
            ),
            RecEvent::ClientFrame(
                1,
                text(json!({"nameplate": "7", "id": "fc40", "type": "claim"})),
            ),
            RecEvent::ServerFrame(
                1,
                text(json!({"id": "fc40", "type": "ack", "server_tx": 1.0})),
            ),
            RecEvent::ServerFrame(
                1,
                text(json!({"mailbox": "2o5xfhw5csyjk", "type": "claimed", "server_tx": 1.0})),
            ),
            RecEvent::ClientFrame(1, text(json!({"mailbox": "2o5xfhw5csyjk", "type": "open"}))),
            RecEvent::ServerFrame(
                1,
                text(
                    json!({"side": "b7bf0a807a", "phase": "pake", "body": "00", "server_rx": 2.0, "id": null, "type": "message", "server_tx": 1.0}),
                ),
            ),
            RecEvent::ClientFrame(1, Frame::Binary(vec![0xff])),
            RecEvent::ClientClosed(1, true),
            RecEvent::Connected(2),
            RecEvent::ClientFrame(2, Frame::Text("not json".into())),
            RecEvent::ServerClosed(2),
        ];
        let v = draft_vector(&events, "ws://127.0.0.1:4000/v1");
        let steps = v["steps"].as_array().expect("steps");
        assert_eq!(
            steps[1]["message"],
            json!({"welcome": {"your-address": {"$type": "object"}}, "type": "welcome"})
        );
        assert_eq!(steps[2]["message"]["appid"], "$appid");
        assert_eq!(steps[2]["message"]["side"], "$side:s1");
        assert_eq!(steps[3], json!({"expect": "c1", "ack": "eaab"}));
        assert_eq!(
            steps[6]["message"]["nameplate"],
            json!({"$capture": "np1", "$regex": "^[0-9]+$"})
        );
        assert_eq!(steps[7]["message"]["nameplate"], "$np1");
        assert_eq!(
            steps[9]["message"]["mailbox"],
            json!({"$capture": "mb1", "$type": "string"})
        );
        assert_eq!(steps[10]["message"]["mailbox"], "$mb1");
        assert_eq!(steps[11]["message"]["side"], "$side:s1");
        assert!(steps[11]["message"].get("server_rx").is_none());
        assert_eq!(steps[12]["binary"], "ff");
        assert_eq!(steps[13], json!({"disconnect": "c1"}));
        assert_eq!(steps[16], json!({"expect": "c2", "closed": true}));
        assert!(v.get("requires").is_none() && v.get("server").is_none());
        let text = render_vector(&v);
        crate::load::parse_vector("recorded/draft", "draft.json", &text)
            .expect("the draft is a valid vector");
        assert!(text.contains("\n    {\"connect\": \"c1\"},\n"));
    }

    fn mint(version: &str, bits: u32, resource: &str, work: u32) -> String {
        let spec = hashcash::StampSpec {
            version: version.into(),
            work,
            ..hashcash::StampSpec::new(resource, bits)
        };
        spec.mint().expect("mint")
    }

    fn welcome(required: Value) -> Frame {
        text(
            json!({"welcome": {"permission-required": required, "motd": "hi", "your-address": {"port": 1}}, "type": "welcome", "server_tx": 1.0}),
        )
    }

    fn ack(id: Value) -> Frame {
        text(json!({"id": id, "type": "ack", "server_tx": 1.0}))
    }

    #[test]
    fn drafts_permissions_with_fresh_stamps() {
        let res1 = "k5xq3ufnw2ihykzz";
        let res2 = "pty7yg4gz6p3zyqa";
        let good = mint("1", 8, res1, 8);
        let weak = mint("1", 10, res1, 3);
        let v2 = mint("2", 8, res1, 8);
        let eight_fields = format!("1:8:260101:{res1}:a:b:r:0");
        let other = mint("1", 8, res1, 8); // c2 pays with c1's resource
        let hashcash_only = |r: &str| json!({"none": null, "hashcash": {"bits": 8, "resource": r}});
        let submit = |kind: &str, stamp: &str, id: &str| {
            text(json!({"type": kind, "method": "hashcash", "stamp": stamp, "id": id}))
        };
        let events = vec![
            RecEvent::Connected(1),
            RecEvent::ServerFrame(1, welcome(hashcash_only(res1))),
            RecEvent::ClientFrame(1, submit("submit-permission", &good, "p1")),
            RecEvent::ServerFrame(1, ack(json!("p1"))),
            RecEvent::ClientFrame(1, submit("submit-permissions", &good, "p2")),
            RecEvent::ServerFrame(1, ack(json!("p2"))),
            RecEvent::ServerFrame(
                1,
                text(
                    json!({"error": "submit-permission failed", "orig": {"type": "submit-permissions", "method": "hashcash", "stamp": good, "id": "p2"}, "type": "error", "server_tx": 1.0}),
                ),
            ),
            RecEvent::ClientFrame(1, submit("submit-permissions", &weak, "p3")),
            RecEvent::ClientFrame(1, submit("submit-permissions", &v2, "p4")),
            RecEvent::ClientFrame(1, submit("submit-permissions", &eight_fields, "p5")),
            RecEvent::ClientFrame(1, submit("submit-permissions", "$x", "p6")),
            RecEvent::Connected(2),
            RecEvent::ServerFrame(2, welcome(hashcash_only(res2))),
            RecEvent::ClientFrame(2, submit("submit-permissions", &other, "p7")),
            RecEvent::ClientClosed(2, true),
            RecEvent::ClientClosed(1, true),
        ];
        let v = draft_vector(&events, "ws://127.0.0.1:4000/v1");
        assert_eq!(v["requires"], json!(["permissions"]));
        assert_eq!(
            v["server"],
            json!({"motd": "hi", "permissions": ["hashcash"], "hashcash_bits": 8})
        );
        let steps = v["steps"].as_array().expect("steps");
        assert_eq!(
            steps[1]["message"]["welcome"]["permission-required"],
            json!({"none": null, "hashcash": {
                "bits": {"$capture": "bits1", "$type": "integer"},
                "resource": {"$capture": "res1", "$type": "string", "$regex": "^[^:]+$"}}})
        );
        // claims what the welcome asked: the replay claims what its welcome asks
        assert_eq!(
            steps[2]["message"]["stamp"],
            json!({"$hashcash": {"resource": "$res1", "bits": "$bits1", "as": "st1"}})
        );
        assert_eq!(steps[2]["message"]["type"], "submit-permission");
        // the same stamp again, and echoed in the error's orig
        assert_eq!(steps[4]["message"]["stamp"], "$st1");
        assert_eq!(steps[6]["message"]["orig"]["stamp"], "$st1");
        let work = hashcash::stamp_work(&weak);
        assert!((3..10).contains(&work));
        assert_eq!(
            steps[7]["message"]["stamp"],
            json!({"$hashcash": {"resource": "$res1", "bits": 10, "work": work}})
        );
        assert_eq!(
            steps[8]["message"]["stamp"],
            json!({"$hashcash": {"resource": "$res1", "bits": "$bits1", "version": "2"}})
        );
        // not seven fields: kept as recorded; a literal `$` is escaped
        assert_eq!(steps[9]["message"]["stamp"], json!(eight_fields));
        assert_eq!(steps[10]["message"]["stamp"], "$$x");
        assert_eq!(
            steps[12]["message"]["welcome"]["permission-required"]["hashcash"]["resource"],
            json!({"$capture": "res2", "$type": "string", "$regex": "^[^:]+$"})
        );
        assert_eq!(
            steps[13]["message"]["stamp"],
            json!({"$hashcash": {"resource": "$res1", "bits": "$bits2"}})
        );
        let text = render_vector(&v);
        let loaded = crate::load::parse_vector("recorded/draft", "draft.json", &text)
            .expect("the draft is a valid vector");
        assert!(loaded
            .needs()
            .contains(&crate::vector::Capability::Permissions));
        assert!(!text.contains(&good), "no recorded stamp is left: {text}");
    }

    #[test]
    fn infers_the_offered_methods() {
        let draft = |required: Value| {
            let events = vec![
                RecEvent::Connected(1),
                RecEvent::ServerFrame(
                    1,
                    text(json!({"welcome": {"permission-required": required}, "type": "welcome"})),
                ),
                RecEvent::ClientClosed(1, true),
            ];
            draft_vector(&events, "ws://x/v1")
        };
        let v = draft(json!({"none": {}, "hashcash": {"bits": 12, "resource": "r"}}));
        assert_eq!(
            v["server"],
            json!({"permissions": ["none", "hashcash"], "hashcash_bits": 12})
        );
        // none only (a server that advertises it): no hashcash_bits
        let v = draft(json!({"none": {}}));
        assert_eq!(v["server"], json!({"permissions": ["none"]}));
        assert_eq!(v["requires"], json!(["permissions"]));
        // bits out of the launch option's range: the launcher's default
        let v = draft(json!({"hashcash": {"bits": 100, "resource": "r"}}));
        assert_eq!(v["server"], json!({"permissions": ["hashcash"]}));
        // no known method: nothing to launch with
        let v = draft(json!({"none": null, "magic": {}}));
        assert!(v.get("server").is_none() && v.get("requires").is_none());
        for v in [
            draft(json!({"none": {}, "hashcash": {"bits": 12, "resource": "r"}})),
            draft(json!({"none": {}})),
        ] {
            crate::load::parse_vector("recorded/draft", "draft.json", &render_vector(&v))
                .expect("the draft is a valid vector");
        }
    }
}
