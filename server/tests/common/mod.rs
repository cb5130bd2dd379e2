//! Shared helpers for the integration tests: an in-process server on port 0
//! and a raw WebSocket client that checks the ack-first rule on every call.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wormhole_mailbox_server::{Config, Server, ServerHandle};

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Running {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub handle: ServerHandle,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn start(config: Config) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = Server::open(config).expect("open");
        let handle = server.handle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = rx.await;
        }));
        Running {
            url: format!("ws://{addr}/v1"),
            addr,
            handle,
            stop: Some(tx),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("server stops in time")
            .expect("join")
            .expect("serve ok");
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Ws,
    pub welcome: Value,
    sync: u64,
}

pub fn strip(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("server_tx");
    }
    v
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let mut c = Client {
            ws,
            welcome: Value::Null,
            sync: 0,
        };
        c.welcome = c.recv().await;
        assert_eq!(c.welcome["type"], "welcome");
        c
    }

    pub async fn bound(url: &str, app: &str, side: &str) -> Client {
        let mut c = Client::connect(url).await;
        let r = c
            .call(json!({"type": "bind", "appid": app, "side": side}))
            .await;
        assert!(r.is_empty(), "{r:?}");
        c
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    /// Next data frame as JSON (without server_tx); panics on close/timeout.
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("frame in time")
                .expect("open")
                .expect("ok");
            match frame {
                Message::Text(t) => return strip(serde_json::from_str(&t).expect("json")),
                Message::Binary(_) => panic!("server sent a binary frame"),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Sends `v`, checks its ack comes first, and returns every other frame
    /// up to a following ping's pong.
    pub async fn call(&mut self, v: Value) -> Vec<Value> {
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        self.send(v).await;
        let ack = self.recv().await;
        assert_eq!(ack, json!({"type": "ack", "id": id}), "ack comes first");
        self.drain().await
    }

    /// Every frame until the pong of a fresh ping.
    pub async fn drain(&mut self) -> Vec<Value> {
        self.sync += 1;
        let n = 1_000_000 + self.sync;
        self.send(json!({"type": "ping", "ping": n})).await;
        let mut out = Vec::new();
        loop {
            let f = self.recv().await;
            if f == json!({"type": "pong", "pong": n}) {
                let ack = out.pop();
                assert_eq!(ack, Some(json!({"type": "ack", "id": null})));
                return out;
            }
            out.push(f);
        }
    }

    pub async fn error(&mut self, v: Value) -> String {
        let orig = v.clone();
        let r = self.call(v).await;
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0]["type"], "error");
        assert_eq!(r[0]["orig"], orig);
        r[0]["error"].as_str().expect("string").to_owned()
    }

    /// Waits for the server to close; returns the close code if any.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close in time")
            {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(c))) => return c.map(|c| c.code.into()),
                Some(Ok(Message::Text(t))) => panic!("unexpected frame {t}"),
                Some(Ok(_)) => continue,
            }
        }
    }
}

pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("in time")
        .expect("read");
    out
}
