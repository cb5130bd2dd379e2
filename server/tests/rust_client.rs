//! Interop with the real Rust client: two `magic-wormhole` (crates.io 0.8)
//! wormholes meet through our in-process server, exchange a message each way
//! and close, after which the server holds no nameplate and no mailbox.

use magic_wormhole::{AppConfig, AppID, MailboxConnection, Wormhole, WormholeError};
use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wormhole_mailbox_server::{Config, Server, ServerHandle};

const APP_ID: &str = "example.invalid/wormhole-mailbox/rust-client-interop";
const LIMIT: Duration = Duration::from_secs(20);

/// Our server on 127.0.0.1, port 0, served by a task until `stop` is called.
struct Running {
    url: String,
    handle: ServerHandle,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(config: Config) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let server = Server::open(config).expect("open server");
        let handle = server.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Running {
            url: format!("ws://127.0.0.1:{port}/v1"),
            handle,
            stop,
            task,
        }
    }

    /// Shuts the server down and checks it stopped cleanly.
    async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server stops without error");
    }
}

fn app_config(url: &str) -> AppConfig<serde_json::Value> {
    AppConfig {
        id: AppID::new(APP_ID),
        rendezvous_url: Cow::Owned(url.to_owned()),
        app_version: serde_json::json!({"test": "rust_client.rs"}),
    }
}

/// Bounds a client step so a protocol mismatch fails the test instead of
/// hanging it.
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

/// Polls `cond` until it holds (state that settles after the client returns,
/// e.g. the server noticing a closed socket).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The whole client-side flow: allocate + claim + open, join with the code,
/// PAKE, versions, one message each way, close both.
async fn exchange(url: &str, handle: &ServerHandle) {
    let sender = bounded(
        "allocate/claim/open",
        MailboxConnection::create(app_config(url), 2),
    )
    .await
    .expect("sender connects and allocates");
    let code = sender.code().clone();
    let nameplate = code.nameplate().to_string();
    assert_eq!(handle.nameplates(APP_ID), vec![nameplate]);

    // connect(…, allocate = false) first lists the nameplates: it must see ours.
    let receiver = bounded(
        "list/claim/open",
        MailboxConnection::connect(app_config(url), code, false),
    )
    .await
    .expect("receiver joins with the code");

    let (s, r) = bounded("PAKE and versions", async {
        tokio::join!(Wormhole::connect(sender), Wormhole::connect(receiver))
    })
    .await;
    let (mut s, mut r) = (s.expect("sender wormhole"), r.expect("receiver wormhole"));
    assert_eq!(s.verifier(), r.verifier(), "both sides derive the same key");
    assert_eq!(
        r.peer_version(),
        &serde_json::json!({"test": "rust_client.rs"})
    );
    // Both released the nameplate during Wormhole::connect.
    assert!(handle.nameplates(APP_ID).is_empty(), "nameplate released");

    bounded("messages", async {
        s.send(b"hello from the sender".to_vec())
            .await
            .expect("send");
        r.send(b"hello from the receiver".to_vec())
            .await
            .expect("send");
        assert_eq!(
            r.receive().await.expect("receive"),
            b"hello from the sender"
        );
        assert_eq!(
            s.receive().await.expect("receive"),
            b"hello from the receiver"
        );
    })
    .await;

    let mailboxes = handle.snapshot().mailboxes;
    assert_eq!(
        mailboxes.len(),
        1,
        "one mailbox while the wormholes are open"
    );
    let mailbox_id = mailboxes[0].id.clone();
    // pake, version and phase 0 from each side.
    let mut phases: Vec<&str> = mailboxes[0]
        .messages
        .iter()
        .map(|m| m.phase.as_str().unwrap_or("?"))
        .collect();
    phases.sort_unstable();
    assert_eq!(phases, ["0", "0", "pake", "pake", "version", "version"]);

    bounded("close", async {
        r.close().await.expect("receiver closes");
        s.close().await.expect("sender closes");
    })
    .await;

    let snapshot = handle.snapshot();
    assert!(snapshot.nameplates.is_empty(), "{snapshot:?}");
    assert!(snapshot.mailboxes.is_empty(), "{snapshot:?}");
    assert!(handle.mailbox_sides(APP_ID, &mailbox_id).is_none());
    eventually("both connections dropped", || handle.connections() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rust_wormholes_exchange_messages_in_memory() {
    let server = Running::start(Config::default()).await;
    exchange(&server.url, &server.handle).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rust_wormholes_exchange_messages_sqlite_with_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let config = Config {
        channel_db: Some(path("channel.sqlite")),
        usage_db: Some(path("usage.sqlite")),
        ..Config::default()
    };
    let server = Running::start(config).await;
    let handle = server.handle.clone();
    exchange(&server.url, &handle).await;
    // A second session through the same server reuses nothing stale.
    exchange(&server.url, &handle).await;

    let results = |table: &str| -> Vec<String> {
        handle
            .usage_rows(table)
            .iter()
            .map(|row| row["result"].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    eventually("usage rows written", || {
        results("nameplates").len() == 2 && results("mailboxes").len() == 2
    })
    .await;
    assert_eq!(results("nameplates"), ["happy", "happy"]);
    assert_eq!(results("mailboxes"), ["happy", "happy"]);
    // The Rust client sends no client_version: bind rows carry nulls.
    let versions = handle.usage_rows("client_versions");
    assert_eq!(versions.len(), 4, "{versions:?}");
    assert!(
        versions.iter().all(|v| v["app_id"] == APP_ID),
        "{versions:?}"
    );
    server.shutdown().await;

    // Everything was deleted from the channel database too.
    let db = rusqlite::Connection::open(path("channel.sqlite")).expect("open db");
    for table in [
        "nameplates",
        "nameplate_sides",
        "mailboxes",
        "mailbox_sides",
        "messages",
    ] {
        let n: i64 = db
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 0, "rows left in {table}");
    }
}

/// The Rust client implements the permissions extension: with only
/// `hashcash` accepted, it pays with a stamp (sent as `submit-permission`)
/// and the exchange completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rust_wormholes_exchange_messages_with_hashcash_required() {
    let config = Config {
        permissions: wormhole_mailbox_server::Permissions {
            allow_none: false,
            hashcash_bits: Some(12),
        },
        ..Config::default()
    };
    let server = Running::start(config).await;
    exchange(&server.url, &server.handle).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_an_unknown_nameplate_fails_cleanly() {
    let server = Running::start(Config::default()).await;
    let code = "4242-purple-sausages".parse().expect("code");
    let err = bounded(
        "list",
        MailboxConnection::connect(app_config(&server.url), code, false),
    )
    .await
    .err()
    .expect("an unknown nameplate is refused by the client");
    assert!(
        matches!(err, WormholeError::UnclaimedNameplate(ref n) if n.to_string() == "4242"),
        "{err}"
    );
    assert!(server.handle.snapshot().nameplates.is_empty());
    eventually("connection dropped", || server.handle.connections() == 0).await;
    server.shutdown().await;
}
