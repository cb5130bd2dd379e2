//! The observed transcript of a run (every frame in and out, per connection,
//! in order) and its normalised text form for snapshots, where random values
//! become stable aliases (`[side:a]`, `[np:1]`, `[mb:1]`, `[time]`, …).

use crate::json::{inline, to_hex};
use crate::vars::Variables;
use crate::vector::RestartKind;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One WebSocket data frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

impl Frame {
    /// The frame's JSON content, if it is a text frame holding JSON.
    pub fn json(&self) -> Option<Value> {
        match self {
            Frame::Text(t) => serde_json::from_str(t).ok(),
            Frame::Binary(_) => None,
        }
    }

    fn describe_raw(&self) -> String {
        match self {
            Frame::Text(t) => format!("text {}", Value::String(t.clone())),
            Frame::Binary(b) => format!("binary {}", to_hex(b)),
        }
    }
}

/// What happened.
#[derive(Clone, Debug)]
pub enum Event {
    /// A WebSocket connection was opened.
    Connect {
        /// The URL used.
        url: String,
    },
    /// Opening the connection failed.
    ConnectFailed {
        /// Why.
        error: String,
    },
    /// The harness sent a frame.
    Send(Frame),
    /// The server sent a frame. `consumed` is false for frames no
    /// expectation read (left over at the end, or drained by a close).
    Recv {
        /// The frame.
        frame: Frame,
        /// Read by an expectation.
        consumed: bool,
    },
    /// The connection ended from the server's side (or was lost).
    Closed {
        /// Close code and reason, or how the TCP connection ended.
        detail: String,
        /// Read by an expectation.
        consumed: bool,
    },
    /// The harness closed the connection cleanly.
    Disconnect,
    /// The harness dropped the TCP connection.
    Drop,
    /// A plain HTTP request.
    Http {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Status code, if a response arrived.
        status: Option<u16>,
        /// Response body (lossy UTF-8).
        body: Option<String>,
        /// Why no response, if none.
        error: Option<String>,
    },
    /// The server was restarted.
    Restart(RestartKind),
    /// The harness slept.
    Sleep(u64),
}

/// One transcript entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Milliseconds since the run started (when it happened; for received
    /// frames, when the frame arrived).
    pub t_ms: f64,
    /// The step that caused or consumed it (`None` for end-of-run cleanup).
    pub step: Option<usize>,
    /// The connection, for connection events.
    pub conn: Option<String>,
    /// What happened.
    pub event: Event,
}

impl Entry {
    /// The JSON form used in `--json` reports.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("t_ms".into(), json!((self.t_ms * 10.0).round() / 10.0));
        o.insert("step".into(), json!(self.step));
        if let Some(c) = &self.conn {
            o.insert("conn".into(), json!(c));
        }
        let frame_fields = |o: &mut Map<String, Value>, f: &Frame| match f {
            Frame::Text(t) => {
                o.insert("text".into(), json!(t));
            }
            Frame::Binary(b) => {
                o.insert("binary".into(), json!(to_hex(b)));
            }
        };
        match &self.event {
            Event::Connect { url } => {
                o.insert("event".into(), json!("connect"));
                o.insert("url".into(), json!(url));
            }
            Event::ConnectFailed { error } => {
                o.insert("event".into(), json!("connect_failed"));
                o.insert("error".into(), json!(error));
            }
            Event::Send(f) => {
                o.insert("event".into(), json!("send"));
                frame_fields(&mut o, f);
            }
            Event::Recv { frame, consumed } => {
                o.insert("event".into(), json!("recv"));
                frame_fields(&mut o, frame);
                o.insert("consumed".into(), json!(consumed));
            }
            Event::Closed { detail, consumed } => {
                o.insert("event".into(), json!("closed"));
                o.insert("detail".into(), json!(detail));
                o.insert("consumed".into(), json!(consumed));
            }
            Event::Disconnect => {
                o.insert("event".into(), json!("disconnect"));
            }
            Event::Drop => {
                o.insert("event".into(), json!("drop"));
            }
            Event::Http {
                method,
                path,
                status,
                body,
                error,
            } => {
                o.insert("event".into(), json!("http"));
                o.insert("method".into(), json!(method));
                o.insert("path".into(), json!(path));
                o.insert("status".into(), json!(status));
                o.insert("body".into(), json!(body));
                if let Some(e) = error {
                    o.insert("error".into(), json!(e));
                }
            }
            Event::Restart(kind) => {
                o.insert("event".into(), json!("restart"));
                o.insert("kind".into(), json!(kind.to_string()));
            }
            Event::Sleep(ms) => {
                o.insert("event".into(), json!("sleep"));
                o.insert("ms".into(), json!(ms));
            }
        }
        Value::Object(o)
    }

    /// A one-line human rendering with the real values (for failure reports).
    pub fn describe(&self) -> String {
        let conn = self.conn.as_deref().unwrap_or("-");
        let step = self
            .step
            .map_or_else(|| "end".to_owned(), |s| s.to_string());
        let body = event_line(conn, &self.event, &Form::Raw);
        format!("[{:>8.1} ms step {step:>3}] {body}", self.t_ms)
    }
}

/// How [`event_line`] shows the values that are random from run to run.
enum Form<'a> {
    /// As they were (failure reports).
    Raw,
    /// Replaced by stable aliases (snapshots).
    Normalised {
        /// The JSON of the entry's frame (see [`frame_json`]), if any.
        json: &'a Option<Value>,
        /// The aliases, scoped to the entry's connection.
        aliases: &'a Aliases,
    },
}

impl Form<'_> {
    fn frame(&self, f: &Frame) -> String {
        match self {
            Form::Raw => match f.json() {
                Some(v) => inline(&v),
                None => f.describe_raw(),
            },
            Form::Normalised { json, aliases } => match (json, f) {
                (Some(v), Frame::Binary(_)) => {
                    format!("binary {}", inline(&aliases.apply(v, None, None)))
                }
                (Some(v), Frame::Text(_)) => inline(&aliases.apply(v, None, None)),
                (None, _) => f.describe_raw(),
            },
        }
    }
}

/// One event as a line of text, without time or step.
fn event_line(conn: &str, event: &Event, form: &Form) -> String {
    let raw = matches!(form, Form::Raw);
    match event {
        Event::Connect { url } if raw => format!("{conn} connect {url}"),
        Event::Connect { url } => {
            let path = url.splitn(4, '/').nth(3).unwrap_or("");
            format!("{conn} connect /{path}")
        }
        Event::ConnectFailed { error } => format!("{conn} connect failed: {error}"),
        Event::Send(f) => format!("{conn} -> {}", form.frame(f)),
        Event::Recv { frame, consumed } => {
            // (the normalised form leaves unread frames out: see `stable`)
            let note = if raw && !consumed {
                "   (not read by any step)"
            } else {
                ""
            };
            format!("{conn} <- {}{note}", form.frame(frame))
        }
        Event::Closed { detail, .. } => format!("{conn} <- closed ({detail})"),
        Event::Disconnect => format!("{conn} disconnect"),
        Event::Drop => format!("{conn} drop"),
        Event::Http {
            method,
            path,
            status: Some(s),
            body,
            ..
        } => format!(
            "http {method} {path} -> {s} {}",
            Value::String(body.clone().unwrap_or_default())
        ),
        Event::Http {
            method,
            path,
            error,
            ..
        } => format!(
            "http {method} {path} failed: {}",
            error.clone().unwrap_or_default()
        ),
        Event::Restart(k) => format!("restart {k}"),
        Event::Sleep(ms) if raw => format!("sleep {ms} ms"),
        Event::Sleep(ms) => format!("sleep {ms}"),
    }
}

/// Assigns stable aliases to random values, by first appearance.
struct Aliases {
    fixed: BTreeMap<String, String>,
    /// Keyed by (app id of the connection, nameplate): nameplates are per
    /// app, so two apps allocating the same number get different aliases.
    nameplates: BTreeMap<(String, String), String>,
    /// The app id of the frame being aliased.
    scope: String,
    mailboxes: BTreeMap<String, String>,
    /// Hashcash resources of the welcome (`permission-required`).
    resources: BTreeMap<String, String>,
    captures: Vec<(String, String)>,
}

impl Aliases {
    fn new(vars: &Variables) -> Self {
        let mut fixed = BTreeMap::new();
        for (name, v) in vars.appids() {
            let alias = if name.is_empty() {
                "[appid]".to_owned()
            } else {
                format!("[appid:{name}]")
            };
            fixed.insert(v.clone(), alias);
        }
        for (name, v) in vars.sides() {
            fixed.insert(v.clone(), format!("[side:{name}]"));
        }
        for (i, v) in vars.generated().iter().enumerate() {
            fixed
                .entry(v.clone())
                .or_insert_with(|| format!("[stamp:{}]", i + 1));
        }
        let captures = vars
            .captures()
            .iter()
            .filter_map(|(name, v)| match v {
                Value::String(s) if s.chars().count() >= 8 => {
                    Some((s.clone(), format!("[cap:{name}]")))
                }
                _ => None,
            })
            .collect();
        Aliases {
            fixed,
            nameplates: BTreeMap::new(),
            scope: String::new(),
            mailboxes: BTreeMap::new(),
            resources: BTreeMap::new(),
            captures,
        }
    }

    /// Pass 1: number nameplates and mailboxes in order of appearance.
    fn collect(&mut self, v: &Value, key: Option<&str>) {
        match v {
            Value::String(s) if !self.fixed.contains_key(s) => match key {
                Some("nameplate") | Some("nameplates[].id") => {
                    let n = self.nameplates.len() + 1;
                    self.nameplates
                        .entry((self.scope.clone(), s.clone()))
                        .or_insert_with(|| format!("[np:{n}]"));
                }
                Some("mailbox") => {
                    let n = self.mailboxes.len() + 1;
                    self.mailboxes
                        .entry(s.clone())
                        .or_insert_with(|| format!("[mb:{n}]"));
                }
                Some("resource") => {
                    let n = self.resources.len() + 1;
                    self.resources
                        .entry(s.clone())
                        .or_insert_with(|| format!("[resource:{n}]"));
                }
                _ => {}
            },
            Value::Array(items) => {
                for item in items {
                    let k = if key == Some("nameplates") {
                        Some("nameplates[]")
                    } else {
                        None
                    };
                    self.collect(item, k);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let ctx = if key == Some("nameplates[]") && k == "id" {
                        "nameplates[].id"
                    } else {
                        k.as_str()
                    };
                    self.collect(item, Some(ctx));
                }
            }
            _ => {}
        }
    }

    /// Pass 2: replace.
    fn apply(&self, v: &Value, key: Option<&str>, parent: Option<&str>) -> Value {
        match v {
            Value::Number(_) if matches!(key, Some("server_tx") | Some("server_rx")) => {
                json!("[time]")
            }
            Value::Number(_) if key == Some("port") && parent == Some("your-address") => {
                json!("[port]")
            }
            Value::String(s) => {
                if let Some(a) = self.fixed.get(s) {
                    return json!(a);
                }
                let np = || self.nameplates.get(&(self.scope.clone(), s.clone()));
                let keyed = match key {
                    Some("nameplate") | Some("nameplates[].id") => np(),
                    Some("mailbox") => self.mailboxes.get(s),
                    Some("resource") => self.resources.get(s),
                    _ => None,
                };
                if let Some(a) = keyed {
                    return json!(a);
                }
                if s.chars().count() >= 8 {
                    if let Some(a) = self
                        .mailboxes
                        .get(s)
                        .or_else(np)
                        .or_else(|| self.resources.get(s))
                    {
                        return json!(a);
                    }
                    if let Some((_, a)) = self.captures.iter().find(|(val, _)| val == s) {
                        return json!(a);
                    }
                }
                v.clone()
            }
            Value::Array(items) => {
                let mut out: Vec<Value> = items
                    .iter()
                    .map(|item| {
                        let k = if key == Some("nameplates") {
                            Some("nameplates[]")
                        } else {
                            None
                        };
                        self.apply(item, k, key)
                    })
                    .collect();
                if key == Some("nameplates") {
                    // `list` is sorted by the (random) values; sort by alias
                    // so the same set always reads the same
                    out.sort_by_key(|e| alias_number(e.get("id")));
                }
                Value::Array(out)
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, item)| {
                        let ctx = if key == Some("nameplates[]") && k == "id" {
                            "nameplates[].id"
                        } else {
                            k.as_str()
                        };
                        (k.clone(), self.apply(item, Some(ctx), key))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// A frame's JSON: text frames, and binary frames holding UTF-8 JSON.
fn frame_json(f: &Frame) -> Option<Value> {
    match f {
        Frame::Text(_) => f.json(),
        Frame::Binary(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|t| serde_json::from_str(t).ok()),
    }
}

/// The N of an alias `"[np:N]"` (sort key; other values sort last).
fn alias_number(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("[np:"))
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Whether an entry belongs in the normalised transcript: frames and closes
/// that no step read are left out, because whether they arrived before the
/// run ended is a matter of timing.
fn stable(e: &Entry) -> bool {
    !matches!(
        e.event,
        Event::Recv {
            consumed: false,
            ..
        } | Event::Closed {
            consumed: false,
            ..
        }
    )
}

/// Renders a transcript with random values replaced by stable aliases:
/// one line per event, e.g. `a <- {"type": "claimed", "mailbox": "[mb:1]",
/// "server_tx": "[time]"}`. Identical server behaviour gives identical text,
/// which is what snapshots compare.
pub fn normalize(entries: &[Entry], vars: &Variables) -> String {
    let mut aliases = Aliases::new(vars);
    // JSON of each frame (binary frames too, when they hold UTF-8 JSON),
    // and the app id its connection bound to
    let mut app_of: BTreeMap<String, String> = BTreeMap::new();
    let frames: Vec<(&Entry, Option<Value>, String)> = entries
        .iter()
        .filter(|e| stable(e))
        .map(|e| {
            let json = match &e.event {
                Event::Send(f) | Event::Recv { frame: f, .. } => frame_json(f),
                _ => None,
            };
            let conn = e.conn.clone().unwrap_or_default();
            if let (Event::Send(_), Some(v)) = (&e.event, &json) {
                if v.get("type").and_then(Value::as_str) == Some("bind") {
                    if let Some(app) = v.get("appid").and_then(Value::as_str) {
                        app_of.insert(conn.clone(), app.to_owned());
                    }
                }
            }
            let scope = app_of.get(&conn).cloned().unwrap_or_default();
            (e, json, scope)
        })
        .collect();
    for (_, json, scope) in &frames {
        if let Some(v) = json {
            aliases.scope.clone_from(scope);
            aliases.collect(v, None);
        }
    }
    let mut out = String::new();
    for (e, json, scope) in &frames {
        let conn = e.conn.as_deref().unwrap_or("-");
        aliases.scope.clone_from(scope);
        let form = Form::Normalised {
            json,
            aliases: &aliases,
        };
        let line = event_line(conn, &e.event, &form);
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(conn: &str, event: Event) -> Entry {
        Entry {
            t_ms: 1.0,
            step: Some(0),
            conn: Some(conn.to_owned()),
            event,
        }
    }

    #[test]
    fn normalises_random_values() {
        let mut vars = Variables::fresh(&[String::new()], &["one".to_owned()]);
        vars.bind(
            [("mb".to_owned(), json!("abcdefghijklm"))]
                .into_iter()
                .collect(),
        );
        let appid = vars.appids()[""].clone();
        let side = vars.sides()["one"].clone();
        let text = |v: Value| Frame::Text(v.to_string());
        let entries = vec![
            entry(
                "a",
                Event::Connect {
                    url: "ws://127.0.0.1:5000/v1".into(),
                },
            ),
            entry(
                "a",
                Event::Recv {
                    frame: text(
                        json!({"welcome": {"your-address": {"port": 4242, "ipv4": "127.0.0.1"}}, "type": "welcome", "server_tx": 1.5}),
                    ),
                    consumed: true,
                },
            ),
            entry(
                "a",
                Event::Send(text(json!({"type": "bind", "appid": appid, "side": side}))),
            ),
            entry(
                "a",
                Event::Recv {
                    frame: text(json!({"nameplate": "42", "type": "allocated"})),
                    consumed: true,
                },
            ),
            entry(
                "a",
                Event::Recv {
                    frame: text(json!({"mailbox": "abcdefghijklm", "type": "claimed"})),
                    consumed: true,
                },
            ),
            entry(
                "a",
                Event::Recv {
                    frame: text(
                        json!({"nameplates": [{"id": "42"}, {"id": "7"}], "type": "nameplates"}),
                    ),
                    consumed: true,
                },
            ),
            entry(
                "a",
                Event::Recv {
                    frame: text(json!({"type": "message", "body": "abcdefghijklm", "phase": "42"})),
                    consumed: true,
                },
            ),
            entry(
                "a",
                Event::Recv {
                    frame: text(json!({"type": "late"})),
                    consumed: false,
                },
            ),
            entry(
                "a",
                Event::Closed {
                    detail: "1000".into(),
                    consumed: true,
                },
            ),
        ];
        let out = normalize(&entries, &vars);
        let expected = r#"a connect /v1
a <- {"welcome": {"your-address": {"port": "[port]", "ipv4": "127.0.0.1"}}, "type": "welcome", "server_tx": "[time]"}
a -> {"type": "bind", "appid": "[appid]", "side": "[side:one]"}
a <- {"nameplate": "[np:1]", "type": "allocated"}
a <- {"mailbox": "[mb:1]", "type": "claimed"}
a <- {"nameplates": [{"id": "[np:1]"}, {"id": "[np:2]"}], "type": "nameplates"}
a <- {"type": "message", "body": "[mb:1]", "phase": "42"}
a <- closed (1000)
"#;
        assert_eq!(out, expected);
    }

    #[test]
    fn aliases_resources_and_stamps() {
        let mut vars = Variables::fresh(&[], &[]);
        vars.bind(
            [("res".to_owned(), json!("r3s0urce9"))]
                .into_iter()
                .collect(),
        );
        let stamp = vars
            .render(&json!({"$hashcash": {"resource": "$res", "bits": 4}}))
            .expect("mints");
        let text = |v: Value| Frame::Text(v.to_string());
        let entries = vec![
            entry(
                "a",
                Event::Recv {
                    frame: text(
                        json!({"welcome": {"permission-required": {"none": null, "hashcash": {"bits": 4, "resource": "r3s0urce9"}}}, "type": "welcome"}),
                    ),
                    consumed: true,
                },
            ),
            entry(
                "b",
                Event::Recv {
                    frame: text(
                        json!({"welcome": {"permission-required": {"hashcash": {"bits": 4, "resource": "other-resource"}}}, "type": "welcome"}),
                    ),
                    consumed: true,
                },
            ),
            entry(
                "a",
                Event::Send(text(
                    json!({"type": "submit-permissions", "stamp": stamp, "note": "r3s0urce9"}),
                )),
            ),
            entry(
                "a",
                Event::Recv {
                    frame: text(
                        json!({"type": "error", "orig": {"stamp": stamp, "literal": "1:4:x:r::y:z"}}),
                    ),
                    consumed: true,
                },
            ),
        ];
        let out = normalize(&entries, &vars);
        let expected = r#"a <- {"welcome": {"permission-required": {"none": null, "hashcash": {"bits": 4, "resource": "[resource:1]"}}}, "type": "welcome"}
b <- {"welcome": {"permission-required": {"hashcash": {"bits": 4, "resource": "[resource:2]"}}}, "type": "welcome"}
a -> {"type": "submit-permissions", "stamp": "[stamp:1]", "note": "[resource:1]"}
a <- {"type": "error", "orig": {"stamp": "[stamp:1]", "literal": "1:4:x:r::y:z"}}
"#;
        assert_eq!(out, expected);
    }

    #[test]
    fn json_form_has_event_and_frame() {
        let e = entry(
            "a",
            Event::Recv {
                frame: Frame::Binary(vec![1, 2]),
                consumed: false,
            },
        );
        let v = e.to_json();
        assert_eq!(v["event"], "recv");
        assert_eq!(v["binary"], "0102");
        assert_eq!(v["conn"], "a");
        assert!(e.describe().contains("not read"));
    }
}
