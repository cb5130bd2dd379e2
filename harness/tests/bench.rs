//! The `bench` load tool, each mode run briefly against a tiny fake mailbox
//! server in this file (or against `WORMHOLE_BENCH_URL` when set), checking
//! that it completes work, reports zero errors and fills in its figures.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use wormhole_mailbox_harness::bench::{self, BenchArgs, Mode};

/// (app, nameplate) -> mailbox, and mailbox -> (messages, listeners).
#[derive(Default)]
struct State {
    nameplates: HashMap<(String, String), String>,
    mailboxes: HashMap<String, (Vec<Value>, Vec<mpsc::UnboundedSender<Value>>)>,
    next: u64,
}

/// Starts the fake server; returns its URL.
async fn fake_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(Mutex::new(State::default()));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    connection(ws, state).await;
                }
            });
        }
    });
    format!("ws://{addr}/v1")
}

async fn connection(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    state: Arc<Mutex<State>>,
) {
    let (mut tx, mut rx) = ws.split();
    let (live_tx, mut live_rx) = mpsc::unbounded_channel::<Value>();
    let frame = |v: Value| Message::text(v.to_string());
    if tx
        .send(frame(json!({"welcome": {}, "type": "welcome"})))
        .await
        .is_err()
    {
        return;
    }
    let (mut app, mut side, mut mailbox) = (String::new(), String::new(), None::<String>);
    loop {
        let text = tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
            Some(v) = live_rx.recv() => {
                if tx.send(frame(v)).await.is_err() { return; }
                continue;
            }
        };
        let Ok(m) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        let kind = m["type"].as_str().unwrap_or("").to_owned();
        let mut out = vec![json!({"id": m["id"], "type": "ack"})];
        {
            let mut st = state.lock().expect("lock");
            match kind.as_str() {
                "ping" => out.push(json!({"pong": m["ping"], "type": "pong"})),
                "bind" => {
                    app = m["appid"].as_str().unwrap_or("").to_owned();
                    side = m["side"].as_str().unwrap_or("").to_owned();
                }
                "allocate" => {
                    st.next += 1;
                    out.push(json!({"nameplate": st.next.to_string(), "type": "allocated"}));
                }
                "claim" => {
                    let key = (
                        app.clone(),
                        m["nameplate"].as_str().unwrap_or("").to_owned(),
                    );
                    st.next += 1;
                    let fresh = format!("mb{}", st.next);
                    let mb = st.nameplates.entry(key).or_insert(fresh).clone();
                    out.push(json!({"mailbox": mb, "type": "claimed"}));
                }
                "open" => {
                    let id = m["mailbox"].as_str().unwrap_or("").to_owned();
                    let entry = st.mailboxes.entry(id.clone()).or_default();
                    out.extend(entry.0.iter().cloned());
                    entry.1.push(live_tx.clone());
                    mailbox = Some(id);
                }
                "add" => {
                    let msg = json!({"side": side, "phase": m["phase"], "body": m["body"],
                                 "id": m["id"], "type": "message"});
                    if let Some(entry) = mailbox.as_ref().and_then(|id| st.mailboxes.get_mut(id)) {
                        entry.0.push(msg.clone());
                        for l in &entry.1 {
                            let _ = l.send(msg.clone());
                        }
                    }
                }
                "release" => out.push(json!({"type": "released"})),
                "close" => out.push(json!({"type": "closed"})),
                _ => out.push(json!({"error": "unknown type", "orig": m, "type": "error"})),
            }
        }
        for v in out {
            if tx.send(frame(v)).await.is_err() {
                return;
            }
        }
    }
}

async fn url() -> String {
    match std::env::var("WORMHOLE_BENCH_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => fake_server().await,
    }
}

fn args(mode: Mode, url: &str) -> BenchArgs {
    let mut a = BenchArgs::new(mode, url);
    a.concurrency = 4;
    a.duration = Some(5.0);
    a.step_timeout_ms = 5000;
    a.server_pid = Some(std::process::id());
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_mode() {
    let url = url().await;
    let mut a = args(Mode::Pairs, &url);
    a.count = Some(20);
    a.rounds = 3;
    a.body_size = 33;
    let r = bench::run(&a).await.expect("run");
    assert_eq!(r.error_total, 0, "{}", r.human());
    assert_eq!(r.completed, 20);
    assert_eq!(r.round_ms.n, 60);
    assert_eq!(r.connect_ms.n, 40);
    assert!(r.rate > 0.0);
    assert!(r.round_ms.p50 <= r.round_ms.p99 && r.round_ms.p99 <= r.round_ms.max);
    let server = r.server.as_ref().expect("server figures");
    assert!(server.rss_before_kib > 0 && server.rss_peak_kib >= server.rss_before_kib);
    let line: Value = serde_json::from_str(&r.to_json()).expect("JSON line");
    assert_eq!(line["mode"], "pairs");
    assert_eq!(line["unit"], "pairs/s");
    assert_eq!(line["completed"], 20);
    assert!(r.human().contains("errors: none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_mode() {
    let url = url().await;
    let mut a = args(Mode::Churn, &url);
    a.count = Some(50);
    let r = bench::run(&a).await.expect("run");
    assert_eq!(r.error_total, 0, "{}", r.human());
    assert_eq!(r.completed, 50);
    assert_eq!(r.connect_ms.n, 50);
    assert_eq!(r.unit, "connections/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_mode() {
    let url = url().await;
    let mut a = args(Mode::Idle, &url);
    a.count = Some(100);
    a.hold = 0.2;
    let r = bench::run(&a).await.expect("run");
    assert_eq!(r.error_total, 0, "{}", r.human());
    assert_eq!(r.completed, 100);
    assert_eq!(r.alive, Some(100));
    assert_eq!(r.round_ms.n, 100);
    let server = r.server.as_ref().expect("server figures");
    assert!(server.rss_per_conn_kib.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_kind() {
    // nothing listens on this port: every connection fails to connect
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let mut a = args(Mode::Churn, &format!("ws://127.0.0.1:{port}/v1"));
    a.count = Some(3);
    a.concurrency = 1;
    let r = bench::run(&a).await.expect("run");
    assert_eq!(r.completed, 0);
    assert_eq!(r.errors.get("connect"), Some(&3));
    assert!(r.error_examples.contains_key("connect"));
}
