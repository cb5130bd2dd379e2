//! Wire messages: decoding client frames into JSON objects and encoding server messages.

use serde_json::{Map, Value};

/// A client message: the JSON object as received. Kept as an object (not a
/// typed enum) because the error replies echo it verbatim as `orig` and the
/// checks must happen in the Python server's exact order (protocol.md §2.3).
pub type ClientMessage = Map<String, Value>;

/// Why a frame could not be decoded; the connection is then closed
/// (protocol.md §1.4: the Python server drops TCP; we close cleanly).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not UTF-8")]
    NotUtf8,
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    #[error("JSON frame is not an object")]
    NotAnObject,
}

/// Decodes one data frame (text or binary: both are accepted identically).
pub fn decode(payload: &[u8]) -> Result<ClientMessage, DecodeError> {
    let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(DecodeError::NotAnObject),
        Err(e) => Err(DecodeError::NotJson(e.to_string())),
    }
}

/// Everything the server sends after the welcome. `server_tx` is added when
/// the frame is written (see [`ServerMessage::to_json`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    Welcome { welcome: Map<String, Value> },
    Ack { id: Value },
    Pong { pong: Value },
    Nameplates { nameplates: Vec<String> },
    Allocated { nameplate: String },
    Claimed { mailbox: String },
    Released,
    Message(StoredMessage),
    Closed,
    Error { error: String, orig: Value },
}

/// A message stored in a mailbox, exactly as replayed and broadcast.
/// `phase`, `body` and `id` keep the JSON value the client sent, so a live
/// echo and a later replay are identical (protocol.md §12.12).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// The side that added it: clients use it to drop their own echoes.
    pub side: String,
    pub phase: Value,
    pub body: Value,
    /// Receive time of the `add`, seconds since the epoch; replay order key.
    pub server_rx: f64,
    /// The `id` of the `add` (null when absent).
    pub id: Value,
}

impl StoredMessage {
    /// Bytes counted against a mailbox's storage limit.
    pub fn size(&self) -> usize {
        let len = |v: &Value| match v {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        };
        len(&self.phase) + len(&self.body) + len(&self.id) + self.side.len()
    }
}

impl ServerMessage {
    /// The `type` string on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::Ack { .. } => "ack",
            ServerMessage::Pong { .. } => "pong",
            ServerMessage::Nameplates { .. } => "nameplates",
            ServerMessage::Allocated { .. } => "allocated",
            ServerMessage::Claimed { .. } => "claimed",
            ServerMessage::Released => "released",
            ServerMessage::Message(_) => "message",
            ServerMessage::Closed => "closed",
            ServerMessage::Error { .. } => "error",
        }
    }

    /// Encodes as one JSON text frame, keys in the Python server's order
    /// (type-specific fields, then `type`, then `server_tx`). Written
    /// straight into one buffer: no intermediate JSON map, no copies of the
    /// values (this runs for every frame the server sends).
    pub fn to_json(&self, server_tx: f64) -> String {
        let mut out = Vec::with_capacity(self.size_hint());
        out.push(b'{');
        match self {
            ServerMessage::Welcome { welcome } => {
                key(&mut out, "welcome");
                value(&mut out, welcome);
            }
            ServerMessage::Ack { id } => {
                key(&mut out, "id");
                value(&mut out, id);
            }
            ServerMessage::Pong { pong } => {
                key(&mut out, "pong");
                value(&mut out, pong);
            }
            ServerMessage::Nameplates { nameplates } => {
                key(&mut out, "nameplates");
                out.push(b'[');
                for (i, n) in nameplates.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"id\":");
                    raw(&mut out, n);
                    out.push(b'}');
                }
                out.extend_from_slice(b"],");
            }
            ServerMessage::Allocated { nameplate } => {
                key(&mut out, "nameplate");
                value(&mut out, nameplate);
            }
            ServerMessage::Claimed { mailbox } => {
                key(&mut out, "mailbox");
                value(&mut out, mailbox);
            }
            ServerMessage::Released | ServerMessage::Closed => {}
            ServerMessage::Message(sm) => {
                key(&mut out, "side");
                value(&mut out, &sm.side);
                key(&mut out, "phase");
                value(&mut out, &sm.phase);
                key(&mut out, "body");
                value(&mut out, &sm.body);
                key(&mut out, "server_rx");
                float(&mut out, sm.server_rx);
                out.push(b',');
                key(&mut out, "id");
                value(&mut out, &sm.id);
            }
            ServerMessage::Error { error, orig } => {
                key(&mut out, "error");
                value(&mut out, error);
                key(&mut out, "orig");
                value(&mut out, orig);
            }
        }
        out.extend_from_slice(b"\"type\":\"");
        out.extend_from_slice(self.type_name().as_bytes());
        out.extend_from_slice(b"\",\"server_tx\":");
        float(&mut out, server_tx);
        out.push(b'}');
        // serde_json writes valid UTF-8; the fallback is never taken
        String::from_utf8(out).unwrap_or_default()
    }

    /// Roughly the encoded length, so the buffer is allocated once.
    fn size_hint(&self) -> usize {
        let fixed = 64;
        match self {
            ServerMessage::Message(sm) => {
                fixed + 64 + sm.side.len() + text_len(&sm.phase) + text_len(&sm.body)
            }
            ServerMessage::Nameplates { nameplates } => fixed + nameplates.len() * 16,
            ServerMessage::Error { error, .. } => fixed + error.len() + 128,
            ServerMessage::Welcome { .. } => fixed + 128,
            _ => fixed + 32,
        }
    }
}

/// Length of a string value (an estimate for other values).
fn text_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 2,
        _ => 16,
    }
}

/// `"name":` (names are plain ASCII, nothing to escape).
fn key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A JSON value followed by a comma (every field is followed by `type`).
fn value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    raw(out, v);
    out.push(b',');
}

/// A JSON value.
fn raw<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // writing to a Vec cannot fail, and these values are plain JSON
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// A timestamp as serde_json writes an `f64` (`null` if not finite).
fn float(out: &mut Vec<u8>, v: f64) {
    match serde_json::Number::from_f64(v) {
        Some(n) => {
            if serde_json::to_writer(&mut *out, &n).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decode_accepts_objects_only() {
        assert!(decode(br#"{"type":"ping","ping":1}"#).is_ok());
        assert_eq!(decode(b"[1,2]"), Err(DecodeError::NotAnObject));
        assert_eq!(decode(b"\"s\""), Err(DecodeError::NotAnObject));
        assert!(matches!(decode(b"not json"), Err(DecodeError::NotJson(_))));
        assert!(matches!(decode(b"{}{}"), Err(DecodeError::NotJson(_))));
        assert_eq!(decode(&[0xff, 0xfe]), Err(DecodeError::NotUtf8));
        assert!(matches!(
            decode(br#"{"type":"ping","ping":NaN}"#),
            Err(DecodeError::NotJson(_))
        ));
    }

    #[test]
    fn exact_json_of_each_shape() {
        let cases = [
            (
                ServerMessage::Ack { id: json!("ab12") },
                json!({"id": "ab12", "type": "ack", "server_tx": 1.5}),
            ),
            (
                ServerMessage::Ack { id: Value::Null },
                json!({"id": null, "type": "ack", "server_tx": 1.5}),
            ),
            (
                ServerMessage::Nameplates {
                    nameplates: vec!["1".into(), "10".into()],
                },
                json!({"nameplates": [{"id": "1"}, {"id": "10"}], "type": "nameplates", "server_tx": 1.5}),
            ),
            (
                ServerMessage::Released,
                json!({"type": "released", "server_tx": 1.5}),
            ),
            (
                ServerMessage::Message(StoredMessage {
                    side: "s".into(),
                    phase: json!("pake"),
                    body: json!("00"),
                    server_rx: 2.25,
                    id: Value::Null,
                }),
                json!({"side": "s", "phase": "pake", "body": "00", "server_rx": 2.25, "id": null, "type": "message", "server_tx": 1.5}),
            ),
            (
                ServerMessage::Error {
                    error: "crowded".into(),
                    orig: json!({"type": "claim", "nameplate": "1"}),
                },
                json!({"error": "crowded", "orig": {"type": "claim", "nameplate": "1"}, "type": "error", "server_tx": 1.5}),
            ),
        ];
        for (msg, want) in cases {
            let text = msg.to_json(1.5);
            let got: Value = serde_json::from_str(&text).expect("valid json");
            assert_eq!(got, want);
            // key order follows the Python server: `type` then `server_tx` last
            assert!(text.ends_with(&format!(
                "\"type\":\"{}\",\"server_tx\":1.5}}",
                msg.type_name()
            )));
        }
    }

    /// The straightforward encoding (a JSON map, then `to_string`), which
    /// `to_json` replaced for speed: both must give the same bytes.
    fn reference(msg: &ServerMessage, server_tx: f64) -> String {
        let float = |v: f64| {
            serde_json::Number::from_f64(v)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        };
        let mut m = Map::new();
        match msg {
            ServerMessage::Welcome { welcome } => {
                m.insert("welcome".into(), Value::Object(welcome.clone()));
            }
            ServerMessage::Ack { id } => {
                m.insert("id".into(), id.clone());
            }
            ServerMessage::Pong { pong } => {
                m.insert("pong".into(), pong.clone());
            }
            ServerMessage::Nameplates { nameplates } => {
                let list = nameplates.iter().map(|n| json!({ "id": n })).collect();
                m.insert("nameplates".into(), Value::Array(list));
            }
            ServerMessage::Allocated { nameplate } => {
                m.insert("nameplate".into(), Value::String(nameplate.clone()));
            }
            ServerMessage::Claimed { mailbox } => {
                m.insert("mailbox".into(), Value::String(mailbox.clone()));
            }
            ServerMessage::Released | ServerMessage::Closed => {}
            ServerMessage::Message(sm) => {
                m.insert("side".into(), Value::String(sm.side.clone()));
                m.insert("phase".into(), sm.phase.clone());
                m.insert("body".into(), sm.body.clone());
                m.insert("server_rx".into(), float(sm.server_rx));
                m.insert("id".into(), sm.id.clone());
            }
            ServerMessage::Error { error, orig } => {
                m.insert("error".into(), Value::String(error.clone()));
                m.insert("orig".into(), orig.clone());
            }
        }
        m.insert("type".into(), Value::String(msg.type_name().into()));
        m.insert("server_tx".into(), float(server_tx));
        Value::Object(m).to_string()
    }

    #[test]
    fn direct_encoding_matches_the_reference() {
        let welcome =
            json!({"motd": "h\u{e9}llo \"you\"\n", "your-address": {"port": 1, "ipv6": "::1"}});
        let Value::Object(welcome) = welcome else {
            unreachable!()
        };
        let msgs = [
            ServerMessage::Welcome { welcome },
            ServerMessage::Welcome {
                welcome: Map::new(),
            },
            ServerMessage::Ack { id: json!(7) },
            ServerMessage::Ack {
                id: json!("x\u{1}y"),
            },
            ServerMessage::Ack { id: Value::Null },
            ServerMessage::Pong { pong: json!(-3.25) },
            ServerMessage::Nameplates { nameplates: vec![] },
            ServerMessage::Nameplates {
                nameplates: vec!["1".into(), "23".into(), "456".into()],
            },
            ServerMessage::Allocated {
                nameplate: "12".into(),
            },
            ServerMessage::Claimed {
                mailbox: "abcdefghijklm".into(),
            },
            ServerMessage::Released,
            ServerMessage::Closed,
            ServerMessage::Message(StoredMessage {
                side: "side\\1".into(),
                phase: json!(3),
                body: json!("\u{2028}0a"),
                server_rx: 1_700_000_000.123_456,
                id: json!(1e21),
            }),
            ServerMessage::Message(StoredMessage {
                side: String::new(),
                phase: json!("version"),
                body: Value::Null,
                server_rx: f64::NAN,
                id: json!(true),
            }),
            ServerMessage::Error {
                error: "must bind first".into(),
                orig: json!({"type": "add", "body": {"z": 1, "a": [1, "2"]}}),
            },
        ];
        for msg in &msgs {
            for tx in [0.0, 1.5, 1_700_000_000.987_654_3, 1e-7, f64::INFINITY] {
                assert_eq!(msg.to_json(tx), reference(msg, tx), "{msg:?}");
            }
        }
    }
}
