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

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
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
    /// (type-specific fields, then `type`, then `server_tx`).
    pub fn to_json(&self, server_tx: f64) -> String {
        let mut m = Map::new();
        match self {
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
                let list = nameplates
                    .iter()
                    .map(|n| {
                        let mut e = Map::new();
                        e.insert("id".into(), Value::String(n.clone()));
                        Value::Object(e)
                    })
                    .collect();
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
        m.insert("type".into(), Value::String(self.type_name().into()));
        m.insert("server_tx".into(), float(server_tx));
        Value::Object(m).to_string()
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
}
