//! End-to-end tests of the harness against a tiny fake mailbox server that
//! lives in this file (welcome, ack, ping, bind, allocate, claim, open, add,
//! and hashcash permissions when its welcome offers them), so the harness
//! can test itself without the real server.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Message;
use wormhole_mailbox_harness::hashcash::stamp_work;
use wormhole_mailbox_harness::libtest_mimic::{self, Arguments};
use wormhole_mailbox_harness::record::{
    draft_vector, record, render_vector, RecEvent, RecordOptions,
};
use wormhole_mailbox_harness::{
    parse_vector, run_vector, snapshot_name, trials, BoxFuture, Capability, LaunchOptions,
    Launcher, Outcome, PermissionMethod, RestartKind, RunOptions, Running, ServerRef, Suite,
    Target, TrialOptions, Vector,
};

// ---------------------------------------------------------------- fake server

#[derive(Default)]
struct State {
    /// (app, nameplate) -> mailbox id
    nameplates: HashMap<(String, String), String>,
    /// mailbox id -> stored messages and live listeners
    mailboxes: HashMap<String, (Vec<Value>, Vec<mpsc::UnboundedSender<Value>>)>,
    next_np: u32,
    next_mb: u32,
}

type Shared = Arc<Mutex<State>>;

struct FakeServer {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    async fn start(state: Shared, port: u16, welcome: Value) -> FakeServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let t2 = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (state, welcome) = (state.clone(), welcome.clone());
                let h = tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        connection(ws, state, welcome).await;
                    }
                });
                t2.lock().expect("lock").push(h.abort_handle());
            }
        });
        FakeServer {
            addr,
            tasks,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/v1", self.addr)
    }

    /// Kills everything at once: connections end without a close frame,
    /// and the port is free when this returns.
    async fn kill(self) {
        self.accept.abort();
        let _ = self.accept.await;
        for t in self.tasks.lock().expect("lock").drain(..) {
            t.abort();
        }
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn connection(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    state: Shared,
    welcome: Value,
) {
    let (mut tx, mut rx) = ws.split();
    let (live_tx, mut live_rx) = mpsc::unbounded_channel::<Value>();
    // Permissions (a welcome with permission-required.hashcash): a fresh
    // resource per connection, a stamp checked as protocol.md §9 says.
    static RESOURCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut welcome = welcome;
    let hashcash = welcome
        .pointer_mut("/permission-required/hashcash")
        .map(|h| {
            let n = RESOURCES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let resource = format!("fake{n}x{}", now().to_bits() % 1_000_000);
            h["resource"] = json!(resource);
            (resource, h["bits"].as_u64().unwrap_or(20))
        });
    let need_permission = hashcash.is_some()
        && welcome
            .pointer("/permission-required/none")
            .is_none_or(Value::is_null);
    let mut permitted = false;
    let send = |v: Value| {
        let mut v = v;
        v["server_tx"] = json!(now());
        Message::text(v.to_string())
    };
    if tx
        .send(send(json!({"welcome": welcome, "type": "welcome"})))
        .await
        .is_err()
    {
        return;
    }
    let mut app = None::<String>;
    let mut side = None::<String>;
    loop {
        let msg = tokio::select! {
            m = rx.next() => m,
            live = live_rx.recv() => {
                if let Some(v) = live {
                    if tx.send(send(v)).await.is_err() { return; }
                }
                continue;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => continue,
        };
        // Like the Python server: non-JSON input drops the connection.
        let Ok(m) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        let Some(kind) = m.get("type").and_then(Value::as_str).map(str::to_owned) else {
            let _ = tx
                .send(send(
                    json!({"error": "missing 'type'", "orig": m, "type": "error"}),
                ))
                .await;
            continue;
        };
        let mut out =
            vec![json!({"id": m.get("id").cloned().unwrap_or(Value::Null), "type": "ack"})];
        match kind.as_str() {
            "ping" => out.push(json!({"pong": m["ping"], "type": "pong"})),
            "submit-permission" | "submit-permissions" if hashcash.is_some() => {
                let stamp = m["stamp"].as_str().unwrap_or("");
                let f: Vec<&str> = stamp.split(':').collect();
                let ok = hashcash.as_ref().is_some_and(|(resource, bits)| {
                    let claimed = f.get(1).and_then(|b| b.parse::<u64>().ok()).unwrap_or(0);
                    f.len() == 7
                        && f[0] == "1"
                        && f[3] == resource
                        && claimed >= *bits
                        && u64::from(stamp_work(stamp)) >= claimed
                });
                if ok {
                    permitted = true;
                } else {
                    out.push(
                        json!({"error": "submit-permission failed", "orig": m, "type": "error"}),
                    );
                }
            }
            "bind" if need_permission && !permitted => out
                .push(json!({"error": "must submit-permission first", "orig": m, "type": "error"})),
            "bind" => {
                app = m["appid"].as_str().map(str::to_owned);
                side = m["side"].as_str().map(str::to_owned);
            }
            _ if app.is_none() => {
                out.push(json!({"error": "must bind first", "orig": m, "type": "error"}))
            }
            "allocate" | "claim" => {
                let mut st = state.lock().expect("lock");
                let np = if kind == "allocate" {
                    st.next_np += 1;
                    st.next_np.to_string()
                } else {
                    m["nameplate"].as_str().unwrap_or("").to_owned()
                };
                let key = (app.clone().unwrap_or_default(), np.clone());
                let mb = match st.nameplates.get(&key) {
                    Some(mb) => mb.clone(),
                    None => {
                        st.next_mb += 1;
                        let mb = format!("mb{:011}", st.next_mb);
                        st.nameplates.insert(key, mb.clone());
                        mb
                    }
                };
                if kind == "allocate" {
                    out.push(json!({"nameplate": np, "type": "allocated"}));
                } else {
                    out.push(json!({"mailbox": mb, "type": "claimed"}));
                }
            }
            "open" => {
                let mb = m["mailbox"].as_str().unwrap_or("").to_owned();
                let mut st = state.lock().expect("lock");
                let entry = st.mailboxes.entry(mb).or_default();
                out.extend(entry.0.iter().cloned());
                entry.1.push(live_tx.clone());
            }
            "add" => {
                let msg = json!({"side": side, "phase": m["phase"], "body": m["body"], "server_rx": now(),
                                 "id": m.get("id").cloned().unwrap_or(Value::Null), "type": "message"});
                let mut st = state.lock().expect("lock");
                for (mb, entry) in st.mailboxes.iter_mut() {
                    if entry.1.iter().any(|l| l.same_channel(&live_tx)) {
                        let _ = mb;
                        entry.0.push(msg.clone());
                        for l in &entry.1 {
                            let _ = l.send(msg.clone());
                        }
                    }
                }
            }
            _ => out.push(json!({"error": "unknown type", "orig": m, "type": "error"})),
        }
        for v in out {
            if tx.send(send(v)).await.is_err() {
                return;
            }
        }
    }
}

// ------------------------------------------------------------ fake launcher

/// Starts fake servers in-process: exercises the `Launcher` trait the way a
/// real server's conformance test does.
struct FakeLauncher;

struct FakeRunning {
    server: Option<FakeServer>,
    state: Shared,
    welcome: Value,
}

fn welcome_for(opts: &LaunchOptions) -> Value {
    let mut welcome = match &opts.server.motd {
        Some(m) => json!({"motd": m}),
        None => json!({}),
    };
    let methods = &opts.server.permissions;
    if methods.contains(&PermissionMethod::Hashcash) {
        let none = if methods.contains(&PermissionMethod::None) {
            json!({})
        } else {
            Value::Null
        };
        let bits = opts.server.hashcash_bits.unwrap_or(20);
        welcome["permission-required"] =
            json!({"none": none, "hashcash": {"bits": bits, "resource": ""}});
    }
    welcome
}

impl Launcher for FakeLauncher {
    fn capabilities(&self) -> std::collections::BTreeSet<Capability> {
        [
            Capability::Launch,
            Capability::Restart,
            Capability::Permissions,
        ]
        .into_iter()
        .collect()
    }

    fn start<'a>(
        &'a self,
        opts: &'a LaunchOptions,
    ) -> BoxFuture<'a, anyhow::Result<Box<dyn Running>>> {
        Box::pin(async move {
            assert!(
                opts.state_dir.is_dir(),
                "the harness provides a state directory"
            );
            let state = Shared::default();
            let welcome = welcome_for(opts);
            let server = FakeServer::start(state.clone(), 0, welcome.clone()).await;
            Ok(Box::new(FakeRunning {
                server: Some(server),
                state,
                welcome,
            }) as Box<dyn Running>)
        })
    }
}

impl Running for FakeRunning {
    fn url(&self) -> String {
        self.server
            .as_ref()
            .map(FakeServer::url)
            .unwrap_or_default()
    }

    fn restart(&mut self, _kind: RestartKind) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let server = self
                .server
                .take()
                .ok_or_else(|| anyhow::anyhow!("not running"))?;
            let port = server.addr.port();
            server.kill().await;
            // The state survives, like a database would.
            self.server =
                Some(FakeServer::start(self.state.clone(), port, self.welcome.clone()).await);
            Ok(())
        })
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            if let Some(s) = self.server {
                s.kill().await;
            }
            Ok(())
        })
    }
}

// ------------------------------------------------------------------ vectors

fn vector(id: &str, text: &str) -> Vector {
    match parse_vector(id, id, text) {
        Ok(v) => v,
        Err(e) => panic!("test vector {id} is malformed:\n{e}"),
    }
}

const TWO_CLIENTS: &str = r#"{
  "description": "Two clients meet through an allocated nameplate and exchange a message",
  "spec": ["protocol.md §11"],
  "class": "required",
  "steps": [
    {"connect": "a"},
    {"expect": "a", "message": {"type": "welcome", "welcome": {"$type": "object"}, "server_tx": {"$type": "number"}}},
    {"send": "a", "message": {"type": "bind", "appid": "$appid", "side": "$side:a", "id": "b1"}},
    {"expect": "a", "ack": "b1"},
    {"sync": "a"},
    {"send": "a", "message": {"type": "allocate"}},
    {"expect": "a", "ack": null},
    {"expect": "a", "message": {"type": "allocated", "nameplate": {"$capture": "np", "$regex": "^[0-9]+$"}}},
    {"send": "a", "message": {"type": "claim", "nameplate": "$np"}},
    {"expect": "a", "message": {"type": "ack"}},
    {"expect": "a", "message": {"type": "claimed", "mailbox": {"$capture": "mb"}}},
    {"connect": "b", "bind": "b"},
    {"send": "b", "message": {"type": "claim", "nameplate": "$np"}},
    {"expect": "b", "message": {"type": "ack"}},
    {"expect": "b", "message": {"type": "claimed", "mailbox": "$mb"}},
    {"send": "a", "message": {"type": "open", "mailbox": "$mb"}},
    {"send": "b", "message": {"type": "open", "mailbox": "$mb"}},
    {"expect": "a", "ack": null},
    {"expect": "b", "ack": null},
    {"send": "a", "message": {"type": "add", "phase": "pake", "body": "00", "id": "m1"}},
    {"expect": "a", "ack": "m1"},
    {"expect": "a", "message": {"type": "message", "side": "$side:a", "phase": "pake", "id": "m1", "server_rx": {"$type": "number"}}},
    {"expect": "b", "message": {"type": "message", "side": "$side:a", "body": "00"}},
    {"expect_silence": "b", "ms": 50},
    {"send": "a", "message": {"type": "list", "x": "$$literal"}},
    {"expect": "a", "ack": null},
    {"expect": "a", "message": {"type": "error", "error": "unknown type", "orig": {"x": "$$literal"}}},
    {"disconnect": "b"},
    {"drop": "a"}
  ]
}"#;

const MALFORMED: &str = r#"{
  "description": "Non-JSON input gets an error or a closed connection, and the server stays up",
  "spec": ["protocol.md §1.4"],
  "class": "required",
  "steps": [
    {"connect": "a", "bind": "a"},
    {"send": "a", "text": "not json"},
    {"expect": "a", "any_of": [{"message": {"type": "error"}}, {"closed": true}]},
    {"expect": "a", "closed": true, "within_ms": 1000},
    {"connect": "a", "bind": "a"},
    {"send": "a", "message": {"id": 7}},
    {"expect": "a", "message": {"type": "error", "error": "missing 'type'", "orig": {"id": 7}}},
    {"send": "a", "binary": "00ff"},
    {"expect_silence": "a", "ms": 30}
  ]
}"#;

const WRONG: &str = r#"{
  "description": "Expects the wrong reply, to check failures are reported well",
  "spec": [],
  "class": "required",
  "steps": [
    {"connect": "a", "bind": "a"},
    {"send": "a", "message": {"type": "allocate"}},
    {"expect": "a", "message": {"type": "ack"}},
    {"expect": "a", "message": {"type": "allocated", "nameplate": "no-such-nameplate"}}
  ]
}"#;

const INFORMATIONAL: &str = r#"{
  "description": "An informational vector that does not hold: reported, never failing",
  "spec": [],
  "class": "informational",
  "steps": [
    {"connect": "a", "bind": "a"},
    {"send": "a", "message": {"type": "ping", "ping": 1}},
    {"expect": "a", "message": {"type": "ack"}},
    {"expect": "a", "message": {"type": "pong", "pong": 2}}
  ]
}"#;

const RESTART: &str = r#"{
  "description": "A claim survives a restart",
  "spec": ["protocol.md §6.5"],
  "class": "required",
  "requires": ["restart"],
  "server": {"motd": "hello"},
  "steps": [
    {"connect": "a"},
    {"expect": "a", "message": {"type": "welcome", "welcome": {"motd": "hello"}}},
    {"send": "a", "message": {"type": "bind", "appid": "$appid", "side": "$side:a"}},
    {"send": "a", "message": {"type": "claim", "nameplate": "42"}},
    {"expect": "a", "message": {"type": "ack"}, "count": 2},
    {"expect": "a", "message": {"type": "claimed", "mailbox": {"$capture": "mb"}}},
    {"restart": "kill"},
    {"expect": "a", "closed": true},
    {"connect": "a", "bind": "a"},
    {"send": "a", "message": {"type": "claim", "nameplate": "42"}},
    {"expect": "a", "ack": null},
    {"expect": "a", "message": {"type": "claimed", "mailbox": "$mb"}}
  ]
}"#;

const PRUNE: &str = r#"{
  "description": "Needs fast pruning, which the fake launcher does not offer",
  "spec": [],
  "class": "required",
  "requires": ["prune"],
  "server": {"prune_interval": 1, "channel_expiration": 1},
  "steps": [{"connect": "a"}, {"sleep_ms": 1}]
}"#;

fn opts() -> RunOptions {
    RunOptions {
        step_timeout: Duration::from_secs(2),
    }
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn passing_vectors_pass_against_a_url() {
    let server = FakeServer::start(Shared::default(), 0, json!({})).await;
    for (id, text) in [
        ("fake/two-clients", TWO_CLIENTS),
        ("fake/malformed", MALFORMED),
    ] {
        let r = run_vector(&vector(id, text), ServerRef::Url(server.url()), &opts()).await;
        assert_eq!(
            r.outcome,
            Outcome::Pass,
            "{id}: {:?}\n{}\n{}",
            r.reason,
            r.diff.clone().unwrap_or_default(),
            r.transcript_text()
        );
        assert!(!r.transcript.is_empty());
    }
    server.kill().await;
}

#[tokio::test]
async fn failures_have_a_reason_and_a_diff() {
    let server = FakeServer::start(Shared::default(), 0, json!({})).await;
    let r = run_vector(
        &vector("fake/wrong", WRONG),
        ServerRef::Url(server.url()),
        &opts(),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Fail);
    assert_eq!(r.failed_step, Some(3));
    let reason = r.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("step 3: "), "{reason}");
    assert!(reason.contains(".nameplate"), "{reason}");
    let diff = r.diff.clone().unwrap_or_default();
    assert!(
        diff.contains("expected: {\"type\": \"allocated\", \"nameplate\": \"no-such-nameplate\"}"),
        "{diff}"
    );
    assert!(
        diff.contains("actual:   {\"nameplate\": \"1\", \"type\": \"allocated\""),
        "{diff}"
    );
    // The JSON form carries the transcript.
    let j = r.to_json();
    assert_eq!(j["outcome"], "fail");
    assert!(j["transcript"].as_array().is_some_and(|t| t.len() >= 6));
    server.kill().await;
}

#[tokio::test]
async fn timeouts_fail_the_step() {
    let server = FakeServer::start(Shared::default(), 0, json!({})).await;
    let v = vector(
        "fake/timeout",
        r#"{"description": "d", "spec": [], "class": "required", "steps": [
            {"connect": "a"}, {"expect": "a", "message": {"type": "welcome"}},
            {"expect": "a", "message": {"type": "never"}, "within_ms": 100}]}"#,
    );
    let r = run_vector(&v, ServerRef::Url(server.url()), &opts()).await;
    assert_eq!(r.outcome, Outcome::Fail);
    assert!(r
        .reason
        .unwrap_or_default()
        .contains("timed out after 100 ms"));
    server.kill().await;
}

#[tokio::test]
async fn url_targets_skip_what_they_cannot_run() {
    let server = FakeServer::start(Shared::default(), 0, json!({})).await;
    let suite = Suite::new(Target::Url(server.url()), opts());
    let r = suite.run(&vector("fake/restart", RESTART)).await;
    assert_eq!(r.outcome, Outcome::Skip);
    assert!(r.reason.unwrap_or_default().contains("launch"));
    server.kill().await;
}

#[tokio::test]
async fn launchers_give_own_servers_and_restart() {
    let suite = Suite::new(Target::Launcher(Arc::new(FakeLauncher)), opts());
    let r = suite.run(&vector("fake/restart", RESTART)).await;
    assert_eq!(
        r.outcome,
        Outcome::Pass,
        "{:?}\n{}",
        r.diff,
        r.transcript_text()
    );
    let text = r.normalized_transcript();
    assert!(text.contains("restart kill\n"), "{text}");
    assert!(text.contains("a <- closed (no close frame)\n"), "{text}");
    // Shared server for ordinary vectors.
    let r = suite.run(&vector("fake/two-clients", TWO_CLIENTS)).await;
    assert_eq!(r.outcome, Outcome::Pass, "{:?}", r.diff);
    let r = suite.run(&vector("fake/prune", PRUNE)).await;
    assert_eq!(r.outcome, Outcome::Skip);
    suite.shutdown().await;
}

#[tokio::test]
async fn normalised_transcripts_are_stable_across_runs() {
    let suite = Suite::new(Target::Launcher(Arc::new(FakeLauncher)), opts());
    let v = vector("fake/two-clients", TWO_CLIENTS);
    let first = suite.run(&v).await.normalized_transcript();
    let second = suite.run(&v).await.normalized_transcript();
    assert_eq!(first, second);
    assert!(first.contains("\"side\": \"[side:a]\""), "{first}");
    assert!(first.contains("\"mailbox\": \"[mb:1]\""), "{first}");
    assert!(first.contains("\"nameplate\": \"[np:1]\""), "{first}");
    assert!(first.contains("\"server_tx\": \"[time]\""), "{first}");
    assert!(!first.contains("conformance/"), "{first}");
    suite.shutdown().await;
}

/// A recording proxy in front of `upstream` that ends after two client
/// connections; its task (yielding the recorded events) and its address.
async fn start_recorder(
    upstream: String,
) -> (
    tokio::task::JoinHandle<anyhow::Result<Vec<RecEvent>>>,
    SocketAddr,
) {
    let rec_opts = RecordOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream,
        idle: Duration::from_secs(5),
        max_connections: Some(2),
    };
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let recorder = tokio::spawn(async move {
        record(&rec_opts, std::future::pending::<()>(), move |a| {
            let _ = addr_tx.send(a);
        })
        .await
    });
    let addr = addr_rx.await.expect("the recorder listens");
    (recorder, addr)
}

#[tokio::test]
async fn recorded_sessions_replay() {
    let server = FakeServer::start(Shared::default(), 0, json!({})).await;
    let (recorder, addr) = start_recorder(server.url()).await;
    // A session through the proxy...
    let through = run_vector(
        &vector("fake/two-clients", TWO_CLIENTS),
        ServerRef::Url(format!("ws://{addr}/v1")),
        &opts(),
    )
    .await;
    assert_eq!(through.outcome, Outcome::Pass, "{:?}", through.diff);
    let events = recorder.await.expect("join").expect("record");
    // ...becomes a draft vector that loads and passes on its own.
    let text = render_vector(&draft_vector(&events, &server.url()));
    let draft = vector("recorded/two-clients", &text);
    assert!(text.contains("\"$capture\": \"np1\""), "{text}");
    assert!(text.contains("\"$$literal\""), "{text}");
    let r = run_vector(&draft, ServerRef::Url(server.url()), &opts()).await;
    assert_eq!(r.outcome, Outcome::Pass, "{:?}\n{text}", r.diff);
    server.kill().await;
}

const PAYING_CLIENTS: &str = r#"{
  "description": "Two clients pay with hashcash (a good stamp, a weak one, a stamp for another connection's resource) and bind",
  "spec": ["protocol.md §9"],
  "class": "required",
  "requires": ["permissions"],
  "server": {"permissions": ["hashcash"], "hashcash_bits": 8},
  "steps": [
    {"connect": "a"},
    {"expect": "a", "message": {"type": "welcome", "welcome": {"permission-required": {"hashcash": {"bits": {"$capture": "bits"}, "resource": {"$capture": "res_a"}}}}}},
    {"send": "a", "message": {"type": "submit-permissions", "method": "hashcash", "stamp": {"$hashcash": {"resource": "$res_a", "bits": 8, "work": 2}}, "id": "p1"}},
    {"expect": "a", "ack": "p1"},
    {"expect": "a", "message": {"type": "error", "error": "submit-permission failed"}},
    {"send": "a", "message": {"type": "bind", "appid": "$appid", "side": "$side:a", "id": "b0"}},
    {"expect": "a", "ack": "b0"},
    {"expect": "a", "message": {"type": "error", "error": "must submit-permission first"}},
    {"send": "a", "message": {"type": "submit-permission", "method": "hashcash", "stamp": {"$hashcash": {"resource": "$res_a", "bits": "$bits", "as": "st"}}, "id": "p2"}},
    {"expect": "a", "ack": "p2"},
    {"send": "a", "message": {"type": "submit-permissions", "method": "hashcash", "stamp": "$st", "id": "p3"}},
    {"expect": "a", "ack": "p3"},
    {"send": "a", "message": {"type": "bind", "appid": "$appid", "side": "$side:a", "id": "b1"}},
    {"expect": "a", "ack": "b1"},
    {"connect": "b"},
    {"expect": "b", "message": {"type": "welcome", "welcome": {"permission-required": {"hashcash": {"resource": {"$capture": "res_b"}}}}}},
    {"send": "b", "message": {"type": "submit-permissions", "method": "hashcash", "stamp": {"$hashcash": {"resource": "$res_a", "bits": 8}}, "id": "p4"}},
    {"expect": "b", "ack": "p4"},
    {"expect": "b", "message": {"type": "error", "error": "submit-permission failed"}},
    {"send": "b", "message": {"type": "submit-permissions", "method": "hashcash", "stamp": {"$hashcash": {"resource": "$res_b", "bits": 9}}, "id": "p5"}},
    {"expect": "b", "ack": "p5"},
    {"send": "b", "message": {"type": "bind", "appid": "$appid", "side": "$side:b", "id": "b2"}},
    {"expect": "b", "ack": "b2"},
    {"sync": "b"},
    {"disconnect": "b"},
    {"disconnect": "a"}
  ]
}"#;

#[tokio::test]
async fn recorded_permission_sessions_replay_with_fresh_stamps() {
    let paying = vector("fake/paying-clients", PAYING_CLIENTS);
    // the session replays against a launched fake with the same options
    let suite = Suite::new(Target::Launcher(Arc::new(FakeLauncher)), opts());
    let direct = suite.run(&paying).await;
    assert_eq!(direct.outcome, Outcome::Pass, "{:?}", direct.diff);
    let server = FakeServer::start(
        Shared::default(),
        0,
        json!({"permission-required": {"none": null, "hashcash": {"bits": 8, "resource": ""}}}),
    )
    .await;
    let (recorder, addr) = start_recorder(server.url()).await;
    let through = run_vector(&paying, ServerRef::Url(format!("ws://{addr}/v1")), &opts()).await;
    assert_eq!(through.outcome, Outcome::Pass, "{:?}", through.diff);
    let events = recorder.await.expect("join").expect("record");
    let text = render_vector(&draft_vector(&events, &server.url()));
    let draft = vector("recorded/paying-clients", &text);
    assert!(
        text.contains(r#""requires": ["permissions"]"#)
            && text.contains(r#""server": {"permissions": ["hashcash"], "hashcash_bits": 8}"#),
        "{text}"
    );
    // the weak stamp claims what was asked but carries less work
    assert!(
        text.contains(r#"{"$hashcash": {"resource": "$res1", "bits": "$bits1", "work": "#),
        "{text}"
    );
    assert!(
        text.contains(
            r#""stamp": {"$hashcash": {"resource": "$res1", "bits": "$bits1", "as": "st2"}}"#
        ) && text.contains(r#""stamp": "$st2""#),
        "{text}"
    );
    assert!(
        text.contains(
            r#""stamp": {"$hashcash": {"resource": "$res1", "bits": "$bits2", "as": "st3"}}"#
        ),
        "c2's stamp for c1's resource: {text}"
    );
    assert!(
        text.contains(r#""stamp": {"$hashcash": {"resource": "$res2", "bits": 9}}"#),
        "{text}"
    );
    // a new server: new resources, so only fresh stamps can pass
    let r = suite.run(&draft).await;
    assert_eq!(r.outcome, Outcome::Pass, "{:?}\n{text}", r.diff);
    let r = run_vector(&draft, ServerRef::Url(server.url()), &opts()).await;
    assert_eq!(r.outcome, Outcome::Pass, "{:?}\n{text}", r.diff);
    suite.shutdown().await;
    server.kill().await;
}

fn write_snap(dir: &std::path::Path, id: &str, contents: &str) {
    let text = format!("---\nsource: harness/tests/fake_server.rs\n---\n{contents}");
    std::fs::write(dir.join(format!("{}.snap", snapshot_name(id))), text).expect("write snapshot");
}

#[test]
fn trials_follow_the_rules() {
    let dir = std::env::temp_dir().join(format!("wmh-trials-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");

    // The expected snapshot is what a run produces (normalisation makes it
    // stable), and a deliberately wrong one must fail its trial.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let suite = Suite::new(Target::Launcher(Arc::new(FakeLauncher)), opts());
        for (id, text) in [
            ("fake/two-clients", TWO_CLIENTS),
            ("fake/informational", INFORMATIONAL),
            ("fake/restart", RESTART),
        ] {
            let r = suite.run(&vector(id, text)).await;
            write_snap(&dir, id, &r.normalized_transcript());
        }
        suite.shutdown().await;
    });
    drop(rt);
    write_snap(&dir, "fake/malformed", "a connect /v1\nsomething else\n");

    let vectors = vec![
        vector("fake/two-clients", TWO_CLIENTS),
        vector("fake/malformed", MALFORMED),
        vector("fake/wrong", WRONG),
        vector("fake/informational", INFORMATIONAL),
        vector("fake/restart", RESTART),
        vector("fake/prune", PRUNE),
        vector("fake/diverges", WRONG),
    ];
    let unknown = trials(
        vectors.clone(),
        Arc::new(FakeLauncher),
        TrialOptions {
            known_divergences: &["fake/nope"],
            ..Default::default()
        },
    );
    assert!(unknown.is_err(), "unknown divergences are refused");

    let ts = trials(
        vectors,
        Arc::new(FakeLauncher),
        TrialOptions {
            known_divergences: &["fake/diverges"],
            snapshot_dir: Some(dir.clone()),
            run: opts(),
        },
    )
    .expect("trials");
    let names: Vec<&str> = ts.iter().map(|t| t.name()).collect();
    assert_eq!(names[0], "fake/two-clients");
    assert!(ts
        .iter()
        .any(|t| t.name() == "fake/diverges" && t.has_ignored_flag()));

    // The inner run's report goes to a file: its "test result: FAILED"
    // line (two trials fail on purpose) must not look like ours.
    let log = dir.join("trials.log");
    let log_arg = log.display().to_string();
    let args = Arguments::from_iter([
        "conformance",
        "--test-threads",
        "2",
        "--logfile",
        log_arg.as_str(),
    ]);
    let c = libtest_mimic::run(&args, ts);
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(report.contains("ignored (requires prune"), "{report}");
    assert!(report.contains("3 passed; 2 failed; 2 ignored"), "{report}");
    // pass: two-clients, informational, restart; fail: wrong, malformed
    // (snapshot differs); ignored: prune (capability), diverges (listed).
    assert_eq!(c.num_passed, 3, "{c:?}");
    assert_eq!(c.num_failed, 2, "{c:?}");
    assert_eq!(c.num_ignored, 2, "{c:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
