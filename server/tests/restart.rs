//! Crash-restart: a two-client session split by a `kill -9` (or a SIGTERM)
//! of the `wormhole-mailbox` binary resumes after a restart on the same
//! SQLite database (same mailbox, full replay with the original `server_rx`
//! and `id`), completes, and leaves a consistent, empty channel database.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const APP_ID: &str = "example.invalid/wormhole-mailbox/restart";
const LIMIT: Duration = Duration::from_secs(10);
const SENDER: &str = "5e4de7";
const RECEIVER: &str = "7ec31e";

// ---------------------------------------------------------------- server

/// The server binary on 127.0.0.1:`port` with channel and usage DBs in `dir`.
struct Binary {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Binary {
    fn start(dir: &Path, port: u16) -> Binary {
        let child = Command::new(env!("CARGO_BIN_EXE_wormhole-mailbox"))
            .arg("--port")
            .arg(format!("tcp:{port}:interface=127.0.0.1"))
            .arg("--channel-db")
            .arg(dir.join("channel.sqlite"))
            .arg("--usage-db")
            .arg(dir.join("usage.sqlite"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start wormhole-mailbox");
        let mut server = Binary {
            child,
            port,
            dir: dir.to_owned(),
        };
        server.wait_ready();
        server
    }

    /// Polls the port until the server accepts connections.
    fn wait_ready(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + LIMIT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("server exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "server not listening on {addr}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1", self.port)
    }

    /// `kill -9`: no chance to flush anything.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// SIGTERM; the server must close connections, commit and exit 0.
    fn terminate(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: `pid` is our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "send SIGTERM");
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server ignored SIGTERM for {LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "exit after SIGTERM: {status}");
    }

    /// `kill -9`, then a new server on the same database and port.
    fn kill_and_restart(self) -> Binary {
        let (dir, port) = (self.dir.clone(), self.port);
        self.kill();
        Binary::start(&dir, port)
    }

    /// SIGTERM with `clients` connected: each gets a close frame, the server
    /// exits 0.
    async fn terminate_with(self, clients: Vec<Client>) {
        let stopping = tokio::task::spawn_blocking(move || self.terminate());
        futures_util::future::join_all(clients.into_iter().map(|c| c.expect_close())).await;
        stopping.await.expect("terminate");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        // Only matters when a test failed half-way: never leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on, below the kernel's ephemeral range: the
/// restart reuses it (the server binds with SO_REUSEADDR), and no outgoing
/// connection of a parallel test can take it in between, as it could take
/// a port from `bind(0)`.
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOW).max(1);
    // Spread concurrent test processes apart; probe in case one is in use.
    let start = std::process::id().wrapping_mul(97);
    for _ in 0..span {
        let n = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = u16::try_from(LOW + n % span).expect("port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{ephemeral_low}");
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill,
    Term,
}

// ---------------------------------------------------------------- client

/// A raw WebSocket client speaking the mailbox protocol.
struct Client {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    name: &'static str,
}

impl Client {
    /// Connects, checks the welcome and binds with `side`.
    async fn bind(url: &str, name: &'static str, side: &str) -> Client {
        let (ws, _) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("websocket handshake");
        let mut c = Client { ws, name };
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c.command(json!({"type": "bind", "appid": APP_ID, "side": side,
                         "client_version": ["rust-test", "0"]}))
            .await;
        c
    }

    async fn send(&mut self, msg: Value) {
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send frame");
    }

    /// The next protocol message, without its `server_tx` (which differs on
    /// every send, replays included). Pings are answered by tungstenite.
    async fn recv(&mut self) -> Value {
        loop {
            let frame = match tokio::time::timeout(LIMIT, self.ws.next()).await {
                Err(_) => panic!("{}: no message within {LIMIT:?}", self.name),
                Ok(None) => panic!("{}: connection ended", self.name),
                Ok(Some(Err(e))) => panic!("{}: {e}", self.name),
                Ok(Some(Ok(frame))) => frame,
            };
            match frame {
                Message::Text(text) => {
                    let mut msg: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    let tx = msg.as_object_mut().and_then(|m| m.remove("server_tx"));
                    assert!(tx.is_some_and(|t| t.is_f64()), "{}: {msg}", self.name);
                    return msg;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("{}: unexpected frame {other:?}", self.name),
            }
        }
    }

    /// Sends `msg` with a fresh id and checks the `ack` comes first.
    async fn command(&mut self, mut msg: Value) {
        let id = format!("{}-{}", self.name, next_id());
        msg["id"] = json!(id);
        self.send(msg).await;
        let ack = self.recv().await;
        assert_eq!(ack, json!({"type": "ack", "id": id}), "{}", self.name);
    }

    /// Sends `msg` and returns the reply that follows its `ack`.
    async fn request(&mut self, msg: Value, reply: &str) -> Value {
        self.command(msg).await;
        let got = self.recv().await;
        assert_eq!(got["type"], reply, "{}: {got}", self.name);
        got
    }

    /// `add` with an explicit id; returns after the ack only.
    async fn add(&mut self, phase: &str, body: &str, id: &str) {
        self.send(json!({"type": "add", "phase": phase, "body": body, "id": id}))
            .await;
        let ack = self.recv().await;
        assert_eq!(ack, json!({"type": "ack", "id": id}), "{}", self.name);
    }

    async fn message(&mut self) -> Value {
        let m = self.recv().await;
        assert_eq!(m["type"], "message", "{}: {m}", self.name);
        m
    }

    /// A graceful server shutdown ends the connection with a close frame
    /// (after whatever was already queued for this client).
    async fn expect_close(mut self) {
        loop {
            match tokio::time::timeout(LIMIT, self.ws.next()).await {
                Err(_) => panic!("{}: connection still open", self.name),
                Ok(Some(Ok(Message::Close(_)))) => return,
                Ok(Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("{}: {other:?} instead of a close frame", self.name),
            }
        }
    }
}

/// Distinct command ids, so an `ack` is matched to its own command.
fn next_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{:04x}", N.fetch_add(1, Ordering::Relaxed))
}

/// Checks a `message` frame (its `server_rx` is whatever the server stamped).
fn expect_message(got: &Value, side: &str, phase: &str, body: &str, id: &str) {
    assert_eq!(got["type"], "message", "{got}");
    assert_eq!(got["side"], side, "{got}");
    assert_eq!(got["phase"], phase, "{got}");
    assert_eq!(got["body"], body, "{got}");
    assert_eq!(got["id"], id, "{got}");
    assert!(got["server_rx"].is_f64(), "{got}");
}

// ---------------------------------------------------------------- DB checks

fn channel_db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("channel.sqlite")).expect("open channel db")
}

fn integrity(dir: &Path) -> String {
    channel_db(dir)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// Rows of live state left in the channel DB, over all its tables.
fn leftover_rows(dir: &Path) -> i64 {
    let db = channel_db(dir);
    [
        "nameplates",
        "nameplate_sides",
        "mailboxes",
        "mailbox_sides",
        "messages",
    ]
    .iter()
    .map(|table| {
        db.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .expect("count")
    })
    .sum()
}

/// After a completed session: consistent, empty, and the usage DB holds the
/// happy nameplate and mailbox.
fn check_db_after(dir: &Path) {
    assert_eq!(integrity(dir), "ok");
    assert_eq!(leftover_rows(dir), 0, "live state left behind");

    let usage = rusqlite::Connection::open(dir.join("usage.sqlite")).expect("open usage db");
    let rows = |sql: &str| -> Vec<String> {
        let mut stmt = usage.prepare(sql).expect("prepare");
        stmt.query_map([], |r| r.get::<_, String>(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    assert_eq!(rows("SELECT result FROM nameplates"), ["happy"]);
    assert_eq!(rows("SELECT result FROM mailboxes"), ["happy"]);
    // A nameplate's life spans the restart: it started before the crash.
    let (started, total): (f64, f64) = usage
        .query_row("SELECT started, total_time FROM nameplates", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("nameplate usage row");
    assert!(
        started > 1.0e9 && total >= 0.0,
        "started {started} total {total}"
    );
}

// ---------------------------------------------------------------- session

/// One session split by `stop`: both sides claimed, opened and added their
/// `pake` (the receiver's only acked, not yet echoed) before the server
/// stops; after the restart both resume with the same sides and finish.
async fn split_session(stop: Stop) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Binary::start(dir.path(), free_port());
    let url = server.url();

    // --- first life of the server
    let mut s = Client::bind(&url, "S", SENDER).await;
    let nameplate = s.request(json!({"type": "allocate"}), "allocated").await["nameplate"]
        .as_str()
        .expect("nameplate")
        .to_owned();
    let claimed = s
        .request(json!({"type": "claim", "nameplate": nameplate}), "claimed")
        .await;
    let mailbox = claimed["mailbox"].as_str().expect("mailbox").to_owned();
    s.command(json!({"type": "open", "mailbox": mailbox})).await;
    s.add("pake", "a1", "s-pake").await;
    let s_pake = s.message().await;
    expect_message(&s_pake, SENDER, "pake", "a1", "s-pake");

    let mut r = Client::bind(&url, "R", RECEIVER).await;
    let claimed = r
        .request(json!({"type": "claim", "nameplate": nameplate}), "claimed")
        .await;
    assert_eq!(claimed["mailbox"], mailbox);
    r.command(json!({"type": "open", "mailbox": mailbox})).await;
    assert_eq!(r.message().await, s_pake, "open replays the sender's pake");
    // Stop right after the ack: an ack means the message is durable.
    r.add("pake", "b2", "r-pake").await;

    let server = match stop {
        Stop::Kill => server.kill_and_restart(),
        Stop::Term => {
            let (dir, port) = (server.dir.clone(), server.port);
            server.terminate_with(vec![s, r]).await;
            Binary::start(&dir, port)
        }
    };

    // --- second life: resume with the same sides
    let mut s = Client::bind(&url, "S", SENDER).await;
    let again = s
        .request(json!({"type": "claim", "nameplate": nameplate}), "claimed")
        .await;
    assert_eq!(
        again["mailbox"], mailbox,
        "re-claim returns the same mailbox"
    );
    s.command(json!({"type": "open", "mailbox": mailbox})).await;
    assert_eq!(s.message().await, s_pake, "replay keeps server_rx and id");
    let r_pake = s.message().await;
    expect_message(&r_pake, RECEIVER, "pake", "b2", "r-pake");
    assert!(r_pake["server_rx"].as_f64() >= s_pake["server_rx"].as_f64());

    let mut r = Client::bind(&url, "R", RECEIVER).await;
    let again = r
        .request(json!({"type": "claim", "nameplate": nameplate}), "claimed")
        .await;
    assert_eq!(again["mailbox"], mailbox);
    r.command(json!({"type": "open", "mailbox": mailbox})).await;
    assert_eq!(r.message().await, s_pake);
    assert_eq!(r.message().await, r_pake);

    // Finish as the Python client does: release, version, phase 0, close.
    s.request(
        json!({"type": "release", "nameplate": nameplate}),
        "released",
    )
    .await;
    r.request(
        json!({"type": "release", "nameplate": nameplate}),
        "released",
    )
    .await;
    for (phase, s_body, r_body) in [("version", "c3", "d4"), ("0", "e5", "f6")] {
        let (s_id, r_id) = (format!("s-{phase}"), format!("r-{phase}"));
        s.add(phase, s_body, &s_id).await;
        expect_message(&s.message().await, SENDER, phase, s_body, &s_id);
        expect_message(&r.message().await, SENDER, phase, s_body, &s_id);
        r.add(phase, r_body, &r_id).await;
        expect_message(&s.message().await, RECEIVER, phase, r_body, &r_id);
        expect_message(&r.message().await, RECEIVER, phase, r_body, &r_id);
    }
    let close = json!({"type": "close", "mailbox": mailbox, "mood": "happy"});
    r.request(close.clone(), "closed").await;
    s.request(close, "closed").await;

    server.terminate_with(vec![s, r]).await;
    check_db_after(dir.path());
}

#[tokio::test]
async fn kill_9_mid_session_then_resume() {
    split_session(Stop::Kill).await;
}

#[tokio::test]
async fn sigterm_mid_session_exits_0_then_resume() {
    split_session(Stop::Term).await;
}

/// `kill -9` at an arbitrary moment of heavy traffic: every acked `add`
/// is replayed after the restart, in order, and the database is intact.
#[tokio::test]
async fn kill_9_under_load_loses_no_acked_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Binary::start(dir.path(), free_port());
    let url = server.url();
    let mut s = Client::bind(&url, "S", SENDER).await;
    let claimed = s
        .request(json!({"type": "claim", "nameplate": "77"}), "claimed")
        .await;
    let mailbox = claimed["mailbox"].as_str().expect("mailbox").to_owned();
    s.command(json!({"type": "open", "mailbox": mailbox})).await;

    // Pipeline adds without waiting, count the acks, kill mid-stream.
    const SENT: usize = 400;
    for n in 0..SENT {
        s.send(json!({"type": "add", "phase": n.to_string(), "body": "00", "id": n}))
            .await;
    }
    let mut acked = 0;
    while acked < SENT / 2 {
        if s.recv().await["type"] == "ack" {
            acked += 1;
        }
    }
    let server = server.kill_and_restart();

    let mut s = Client::bind(&url, "S", SENDER).await;
    s.command(json!({"type": "open", "mailbox": mailbox})).await;
    // The replay is the stored prefix of what was sent, in order; the
    // stored count is known from the database the server itself reads.
    let stored: usize = channel_db(dir.path())
        .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get::<_, i64>(0))
        .expect("count")
        .try_into()
        .expect("count fits");
    eprintln!("kill -9 after {acked} acks: {stored} of {SENT} adds stored");
    assert!(
        (acked..=SENT).contains(&stored),
        "{acked} acked but {stored} stored"
    );
    for n in 0..stored {
        let m = s.message().await;
        assert_eq!(m["phase"], n.to_string(), "{m}");
        assert_eq!(m["id"], n, "{m}");
    }
    s.request(json!({"type": "release", "nameplate": "77"}), "released")
        .await;
    s.request(
        json!({"type": "close", "mailbox": mailbox, "mood": "lonely"}),
        "closed",
    )
    .await;
    server.terminate_with(vec![s]).await;
    assert_eq!(integrity(dir.path()), "ok");
    assert_eq!(
        leftover_rows(dir.path()),
        0,
        "the only side closed: all deleted"
    );
}

/// One side of a pair during the load phase: sends `adds` messages while
/// reading, and returns the ids the server acknowledged before the
/// connection died.
async fn add_until_killed(
    c: Client,
    tag: String,
    adds: usize,
    acks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<String> {
    let (mut sink, mut stream) = c.ws.split();
    let sending = async move {
        for n in 0..adds {
            let id = format!("{tag}-{n}");
            let add = json!({"type": "add", "phase": n.to_string(), "body": "ab", "id": id});
            if sink.send(Message::text(add.to_string())).await.is_err() {
                break;
            }
            if n % 8 == 7 {
                tokio::task::yield_now().await;
            }
        }
        sink
    };
    let reading = async {
        let mut acked = Vec::new();
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(LIMIT, stream.next()).await {
            if let Message::Text(t) = frame {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                if v["type"] == "ack" {
                    if let Some(id) = v["id"].as_str() {
                        acked.push(id.to_owned());
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        acked
    };
    let (_sink, acked) = tokio::join!(sending, reading);
    acked
}

/// `kill -9` while 50 pairs are mid-exchange: after the restart every pair
/// reconnects with its sides, gets its mailbox back with every acked message
/// replayed in order, and completes; the database is intact and empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_50_pairs_mid_exchange_then_all_complete() {
    const PAIRS: usize = 50;
    const ADDS: usize = 200;
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Binary::start(dir.path(), free_port());
    let url = server.url();
    let mut mailboxes = Vec::new();
    let mut load = Vec::new();
    for p in 0..PAIRS {
        let (sa, sb) = (format!("a{p:03}"), format!("b{p:03}"));
        let np = (1000 + p).to_string();
        let mut a = Client::bind(&url, "A", &sa).await;
        let mut b = Client::bind(&url, "B", &sb).await;
        let mb = a
            .request(json!({"type": "claim", "nameplate": np}), "claimed")
            .await["mailbox"]
            .clone();
        let mb_b = b
            .request(json!({"type": "claim", "nameplate": np}), "claimed")
            .await["mailbox"]
            .clone();
        assert_eq!(mb, mb_b);
        a.command(json!({"type": "open", "mailbox": mb})).await;
        b.command(json!({"type": "open", "mailbox": mb})).await;
        mailboxes.push((sa.clone(), sb.clone(), np, mb));
        load.push(tokio::spawn(add_until_killed(a, sa, ADDS, acks.clone())));
        load.push(tokio::spawn(add_until_killed(b, sb, ADDS, acks.clone())));
    }
    // kill once about a quarter of the adds were acknowledged
    let deadline = Instant::now() + LIMIT;
    while acks.load(Ordering::Relaxed) < PAIRS * 2 * ADDS / 4 {
        assert!(Instant::now() < deadline, "load never got going");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let server = tokio::task::spawn_blocking(move || server.kill_and_restart())
        .await
        .expect("restart");
    let mut acked: Vec<Vec<String>> = Vec::new();
    for task in load {
        acked.push(task.await.expect("load task"));
    }
    let total_acked: usize = acked.iter().map(Vec::len).sum();
    eprintln!(
        "kill -9 with {PAIRS} pairs mid-exchange: {total_acked} of {} adds acked before the kill",
        PAIRS * 2 * ADDS
    );
    let mut finish = Vec::new();
    for (p, (sa, sb, np, mb)) in mailboxes.into_iter().enumerate() {
        let url = url.clone();
        let acked_a = acked[2 * p].clone();
        let acked_b = acked[2 * p + 1].clone();
        finish.push(tokio::spawn(async move {
            let mut a = Client::bind(&url, "A", &sa).await;
            let mut b = Client::bind(&url, "B", &sb).await;
            for c in [&mut a, &mut b] {
                let again = c
                    .request(json!({"type": "claim", "nameplate": np}), "claimed")
                    .await;
                assert_eq!(again["mailbox"], mb, "same mailbox after the restart");
            }
            for c in [&mut a, &mut b] {
                c.command(json!({"type": "open", "mailbox": mb})).await;
                c.send(json!({"type": "ping", "ping": 1})).await;
                let mut replay = Vec::new();
                loop {
                    let m = c.recv().await;
                    if m["type"] == "pong" {
                        break;
                    }
                    if m["type"] == "message" {
                        replay.push(m);
                    }
                }
                // every acked message of both sides is there, each side's in order
                for (side, acked_ids) in [(&sa, &acked_a), (&sb, &acked_b)] {
                    let ids: Vec<&str> = replay
                        .iter()
                        .filter(|m| m["side"] == side.as_str())
                        .filter_map(|m| m["id"].as_str())
                        .collect();
                    assert_eq!(
                        &ids[..acked_ids.len()],
                        acked_ids.iter().map(String::as_str).collect::<Vec<_>>(),
                        "acked messages of {side} replayed in order"
                    );
                }
            }
            for c in [&mut a, &mut b] {
                c.request(json!({"type": "release", "nameplate": np}), "released")
                    .await;
            }
            for c in [&mut a, &mut b] {
                c.request(
                    json!({"type": "close", "mailbox": mb, "mood": "happy"}),
                    "closed",
                )
                .await;
            }
            (a, b)
        }));
    }
    let mut clients = Vec::new();
    for f in finish {
        let (a, b) = f.await.expect("pair completes");
        clients.push(a);
        clients.push(b);
    }
    server.terminate_with(clients).await;
    assert_eq!(integrity(dir.path()), "ok");
    assert_eq!(leftover_rows(dir.path()), 0, "every pair completed");
}
