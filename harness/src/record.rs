//! The `record` subcommand: a WebSocket proxy between a real client and a
//! server that logs every frame, then turns the session into a draft
//! vector (connections `c1`, `c2`, …; client frames as `send`, server
//! frames as `expect`, with app ids, sides, nameplates, mailbox ids and
//! times replaced by variables, captures and matchers).

use crate::json::{inline, to_hex};
use crate::transcript::Frame;
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
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

/// Turns recorded values into variables, captures and matchers.
#[derive(Default)]
struct Drafter {
    appids: BTreeMap<String, String>,
    sides: BTreeMap<String, String>,
    /// Captured value → capture name.
    captured: BTreeMap<String, String>,
    nameplates: usize,
    mailboxes: usize,
}

impl Drafter {
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
        if s.starts_with('$') {
            return json!(format!("${s}"));
        }
        json!(s)
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
    let mut d = Drafter::default();
    let mut steps = Vec::new();
    let c = |n: &usize| format!("c{n}");
    for e in events {
        let step = match e {
            RecEvent::Connected(n) => json!({"connect": c(n)}),
            RecEvent::ClientFrame(n, f) => match (f, f.json()) {
                (Frame::Text(_), Some(v)) => {
                    d.learn_bind(&v);
                    json!({"send": c(n), "message": d.template(&v, None)})
                }
                (Frame::Text(t), None) => json!({"send": c(n), "text": t}),
                (Frame::Binary(b), _) => match serde_json::from_slice::<Value>(b) {
                    Ok(v) => {
                        d.learn_bind(&v);
                        json!({"send": c(n), "binary_message": d.template(&v, None)})
                    }
                    Err(_) => json!({"send": c(n), "binary": to_hex(b)}),
                },
            },
            RecEvent::ServerFrame(n, f) => match f.json() {
                Some(v) => {
                    let pattern = d.pattern(&v, None, None).unwrap_or(Value::Null);
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
    json!({
        "description": "Recorded session (draft): replace with one sentence saying what behaviour this checks",
        "spec": [],
        "class": "reference",
        "notes": format!("Recorded by wormhole-mailbox-conformance record against {upstream}; review the matchers before committing."),
        "steps": steps,
    })
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
        let text = render_vector(&v);
        crate::load::parse_vector("recorded/draft", "draft.json", &text)
            .expect("the draft is a valid vector");
        assert!(text.contains("\n    {\"connect\": \"c1\"},\n"));
    }
}
