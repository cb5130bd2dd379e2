//! Hardening: storage faults (retry, close, resync, recovery), the prune
//! loop surviving a failed run, connection limits, handshake timeout,
//! storage limits over the wire, and a malformed-input corpus with a
//! bystander that must stay unaffected.

mod common;

use common::{Client, Running, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wormhole_mailbox_server::{Config, Limits};

fn sqlite_config(dir: &tempfile::TempDir) -> Config {
    Config {
        channel_db: Some(dir.path().join("relay.sqlite").to_string_lossy().into()),
        ..Config::default()
    }
}

// The commit-failure tests run twice: on a current-thread runtime the
// writer is a task (as in the binary), on a multi-thread one a thread.
#[tokio::test]
async fn transient_commit_failure_is_retried_invisibly() {
    transient_commit_failure().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_commit_failure_is_retried_invisibly_writer_thread() {
    transient_commit_failure().await;
}

async fn transient_commit_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Running::start(sqlite_config(&dir)).await;
    let mut a = Client::bound(&srv.url, "f", "a").await;
    a.call(json!({"type": "open", "mailbox": "m"})).await;
    srv.handle.inject_commit_failures(2); // fewer than the retries
    let r = a
        .call(json!({"type": "add", "phase": "p", "body": "b"}))
        .await;
    assert_eq!(r.len(), 1, "acked and echoed after the retry");
    srv.stop().await;
}

#[tokio::test]
async fn persistent_commit_failure_closes_the_writer_and_recovers() {
    persistent_commit_failure().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_commit_failure_closes_the_writer_and_recovers_writer_thread() {
    persistent_commit_failure().await;
}

async fn persistent_commit_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sqlite_config(&dir);
    let srv = Running::start(config.clone()).await;
    let mut bystander = Client::bound(&srv.url, "f", "by").await;
    bystander
        .call(json!({"type": "open", "mailbox": "mb-by"}))
        .await;
    let mut a = Client::bound(&srv.url, "f", "a").await;
    a.call(json!({"type": "open", "mailbox": "m"})).await;
    srv.handle.inject_commit_failures(4); // every attempt of one batch fails
    a.send(json!({"type": "add", "phase": "lost", "body": "b"}))
        .await;
    assert_eq!(
        a.closed().await,
        Some(1011),
        "no ack for a write that failed"
    );
    // the bystander is served throughout
    let r = bystander
        .call(json!({"type": "add", "phase": "p", "body": "b"}))
        .await;
    assert_eq!(r.len(), 1);
    // the client reconnects and resumes: the failed add never happened
    let mut a = Client::bound(&srv.url, "f", "a").await;
    let replay = a.call(json!({"type": "open", "mailbox": "m"})).await;
    assert!(replay.is_empty(), "{replay:?}");
    let r = a
        .call(json!({"type": "add", "phase": "again", "body": "b"}))
        .await;
    assert_eq!(r.len(), 1);
    srv.stop().await;
    // what was acknowledged is on disk, what wasn't is not
    let srv = Running::start(config).await;
    let mut a = Client::bound(&srv.url, "f", "a").await;
    let replay = a.call(json!({"type": "open", "mailbox": "m"})).await;
    let phases: Vec<_> = replay.iter().map(|m| m["phase"].clone()).collect();
    assert_eq!(phases, vec![json!("again")]);
    srv.stop().await;
}

#[tokio::test]
async fn prune_loop_survives_a_failed_run() {
    let config = Config {
        prune_interval: Duration::from_millis(200),
        channel_expiration: Duration::from_millis(300),
        ..Config::default()
    };
    let srv = Running::start(config).await;
    let mut a = Client::bound(&srv.url, "p", "a").await;
    a.call(json!({"type": "claim", "nameplate": "5"})).await;
    drop(a);
    // make the next prune's commit fail for good
    srv.handle.inject_commit_failures(4);
    // later runs still prune the abandoned channel
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while !srv.handle.nameplates("p").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "prune never succeeded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    srv.stop().await;
}

#[tokio::test]
async fn connection_limits() {
    let config = Config {
        max_connections: 3,
        max_connections_per_ip: Some(2),
        ..Config::default()
    };
    let srv = Running::start(config).await;
    let _a = Client::connect(&srv.url).await;
    let _b = Client::connect(&srv.url).await;
    // third from the same address: refused with a policy close
    let (mut ws, _) = tokio_tungstenite::connect_async(&srv.url)
        .await
        .expect("handshake");
    match tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("in time")
    {
        Some(Ok(Message::Close(Some(c)))) => assert_eq!(u16::from(c.code), 1008),
        other => panic!("expected a policy close, got {other:?}"),
    }
    drop(ws);
    srv.stop().await;
    let config = Config {
        max_connections: 1,
        ..Config::default()
    };
    let srv = Running::start(config).await;
    let _a = Client::connect(&srv.url).await;
    let mut s = TcpStream::connect(srv.addr).await.expect("tcp");
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    srv.stop().await;
}

#[tokio::test]
async fn silent_and_half_handshakes_are_dropped() {
    let config = Config {
        handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let srv = Running::start(config).await;
    for opening in [
        &b""[..],
        b"GET /v1 HTTP/1.1\r\nHost: x\r\n",
        b"\x16\x03\x01garbage",
    ] {
        let mut s = TcpStream::connect(srv.addr).await.expect("tcp");
        s.write_all(opening).await.expect("write");
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
            .await
            .expect("dropped in time");
        assert!(n.is_ok() || n.is_err());
    }
    // still serving
    Client::bound(&srv.url, "h", "s").await;
    srv.stop().await;
}

#[tokio::test]
async fn storage_limits_answer_with_errors() {
    let config = Config {
        limits: Limits {
            max_mailbox_messages: 3,
            ..Limits::default()
        },
        ..Config::default()
    };
    let srv = Running::start(config).await;
    let mut a = Client::bound(&srv.url, "l", "a").await;
    a.call(json!({"type": "open", "mailbox": "m"})).await;
    for _ in 0..3 {
        a.call(json!({"type": "add", "phase": "p", "body": "b"}))
            .await;
    }
    assert_eq!(
        a.error(json!({"type": "add", "phase": "p", "body": "b"}))
            .await,
        "mailbox is full: too many messages"
    );
    assert_eq!(
        srv.handle.limit_hits().get("max_mailbox_messages"),
        Some(&1)
    );
    srv.stop().await;
}

/// Every input class of protocol.md §1.4 / §4.2 and more: each gets an
/// `error` or a clean close within a second; a bystander with an open
/// mailbox is unaffected and fresh connections are served.
#[tokio::test]
async fn malformed_input_corpus() {
    let config = Config {
        max_message_size: 64 * 1024,
        ..Config::default()
    };
    let srv = Running::start(config).await;
    let mut bystander = Client::bound(&srv.url, "c", "by").await;
    bystander
        .call(json!({"type": "open", "mailbox": "mb"}))
        .await;
    let huge = "x".repeat(100 * 1024);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_obj = format!(
        r#"{{"type":"ping","ping":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let mut frames: Vec<Message> = vec![
        Message::text("not json"),
        Message::text(""),
        Message::text("{}{}"),
        Message::text("[1,2]"),
        Message::text("null"),
        Message::text(r#"{"type":"ping","ping":NaN}"#),
        Message::text(r#"{"type":"ping","ping":Infinity}"#),
        Message::text(deep),
        Message::text(format!(r#"{{"type":"ping","ping":"{huge}"}}"#)),
        Message::binary(vec![0xc3, 0x28]),
        Message::binary(vec![0u8; 10]),
        Message::text(deep_obj),
    ];
    // wrong JSON types in every field of every message
    let values = [
        json!(null),
        json!(5),
        json!(1.5),
        json!(true),
        json!([1]),
        json!({"a": 1}),
    ];
    let fields: &[(&str, &[&str])] = &[
        ("bind", &["appid", "side", "client_version"]),
        ("claim", &["nameplate"]),
        ("release", &["nameplate"]),
        ("open", &["mailbox"]),
        ("add", &["phase", "body", "id"]),
        ("close", &["mailbox", "mood"]),
        ("ping", &["ping"]),
        ("list", &["id"]),
        ("allocate", &["id"]),
    ];
    for (ty, keys) in fields {
        for key in keys.iter() {
            for v in &values {
                let mut m = json!({"type": ty, "appid": "c", "side": "w", "nameplate": "1",
                                   "mailbox": "mbw", "phase": "p", "body": "b"});
                m[*key] = v.clone();
                frames.push(Message::text(m.to_string()));
            }
        }
    }
    let total = frames.len();
    for frame in frames {
        let (mut ws, _) = tokio_tungstenite::connect_async(&srv.url)
            .await
            .expect("connect");
        let _welcome = ws.next().await;
        // bind first (except for bind probes) so the field checks are reached
        let text = frame.to_text().unwrap_or("").to_owned();
        if !text.contains("\"bind\"") {
            let _ = ws
                .send(Message::text(r#"{"type":"bind","appid":"c","side":"w"}"#))
                .await;
            let _ack = ws.next().await;
            if text.contains("\"add\"") {
                let _ = ws
                    .send(Message::text(r#"{"type":"open","mailbox":"mbw2"}"#))
                    .await;
                let _ack = ws.next().await;
            }
        }
        let _ = ws.send(frame).await;
        // answered (ack/error/reply) or closed, within a second
        let got = tokio::time::timeout(Duration::from_secs(1), ws.next())
            .await
            .expect("answer or close within a second");
        match got {
            Some(Ok(Message::Text(_))) | Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
            other => panic!("unexpected {other:?} for {text:.80}"),
        }
    }
    let r = bystander
        .call(json!({"type": "add", "phase": "still", "body": "here"}))
        .await;
    assert_eq!(r.len(), 1);
    Client::bound(&srv.url, "c", "fresh").await;
    eprintln!("malformed corpus: {total} inputs answered or closed");
    srv.stop().await;
}
