//! End-to-end tests over real WebSockets against an in-process server on
//! port 0: HTTP routes, welcome, the §11 transcript, every error string,
//! replay order, reconnect/resume, app isolation, malformed input, address
//! reflection, graceful shutdown and persistence across a restart.

mod common;

use common::{http_get, Client, Running};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use wormhole_mailbox_server::Config;

#[tokio::test]
async fn http_routes_and_server_header() {
    let srv = Running::start(Config::default()).await;
    let root = http_get(srv.addr, "/").await;
    assert!(root.starts_with("HTTP/1.1 200"), "{root}");
    assert!(root.ends_with("\r\n\r\nWormhole Relay\n"), "{root}");
    assert!(root.contains("Server: Magic Wormhole Mailbox "));
    assert!(http_get(srv.addr, "/v2").await.starts_with("HTTP/1.1 404"));
    for path in ["/v1", "/v1/", "/v1?x=1", "/v1/anything"] {
        let url = format!("ws://{}{path}", srv.addr);
        let (mut ws, resp) = tokio_tungstenite::connect_async(&url).await.expect(path);
        let server = resp
            .headers()
            .get("server")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(server.contains("Magic Wormhole Mailbox"), "{server}");
        assert!(server.contains(env!("CARGO_PKG_VERSION")), "{server}");
        assert!(resp.headers().get("sec-websocket-protocol").is_none());
        assert!(resp.headers().get("sec-websocket-extensions").is_none());
        let first = ws.next().await.expect("frame").expect("ok");
        assert!(first.to_text().expect("text").contains("\"welcome\""));
    }
    srv.stop().await;
}

#[tokio::test]
async fn welcome_comes_first_and_carries_options() {
    let config = Config {
        motd: Some("hello world".into()),
        advertise_version: Some("advertised.version".into()),
        signal_error: Some("error!".into()),
        ..Config::default()
    };
    let srv = Running::start(config).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&srv.url)
        .await
        .expect("connect");
    // the client talks first; the welcome still precedes everything
    ws.send(Message::text(r#"{"type":"ping","ping":1}"#))
        .await
        .expect("send");
    let first = ws.next().await.expect("frame").expect("ok");
    let w: Value = serde_json::from_str(first.to_text().expect("text")).expect("json");
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["welcome"]["motd"], "hello world");
    assert_eq!(w["welcome"]["current_cli_version"], "advertised.version");
    assert_eq!(w["welcome"]["error"], "error!");
    assert_eq!(w["welcome"]["your-address"]["ipv4"], "127.0.0.1");
    assert!(w["welcome"]["your-address"]["port"].is_u64());
    assert!(w["server_tx"].is_f64());
    srv.stop().await;
}

#[tokio::test]
async fn reflected_address_honours_proxy_headers() {
    let srv = Running::start(Config::default()).await;
    for (headers, want) in [
        (
            vec![("X-Real-IP", "127.1.2.3"), ("X-Real-Port", "54321")],
            json!({"ipv4": "127.1.2.3", "port": 54321}),
        ),
        (
            vec![("x-real-ip", "::1"), ("x-real-port", "54321")],
            json!({"ipv6": "::1", "port": 54321}),
        ),
    ] {
        let mut req = srv.url.as_str().into_client_request().expect("request");
        for (k, v) in headers {
            req.headers_mut().insert(k, v.parse().expect("header"));
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        let first = ws.next().await.expect("frame").expect("ok");
        let w: Value = serde_json::from_str(first.to_text().expect("text")).expect("json");
        assert_eq!(w["welcome"]["your-address"], want);
    }
    // X-Real-IP without X-Real-Port: the handshake still succeeds
    let mut req = srv.url.as_str().into_client_request().expect("request");
    req.headers_mut()
        .insert("X-Real-IP", "10.9.8.7".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    let first = ws.next().await.expect("frame").expect("ok");
    let w: Value = serde_json::from_str(first.to_text().expect("text")).expect("json");
    assert_eq!(w["welcome"]["your-address"]["ipv4"], "10.9.8.7");
    srv.stop().await;
}

#[tokio::test]
async fn two_client_transcript() {
    // protocol.md §11, with two raw clients
    let srv = Running::start(Config::default()).await;
    let app = "lothar.com/wormhole/text-or-file-xfer";
    let mut s = Client::bound(&srv.url, app, "b7bf0a807a").await;
    let r = s.call(json!({"type": "allocate", "id": "67bd"})).await;
    let np = r[0]["nameplate"].as_str().expect("np").to_owned();
    assert_eq!(r, vec![json!({"type": "allocated", "nameplate": np})]);
    let r = s
        .call(json!({"type": "claim", "nameplate": np, "id": "fc40"}))
        .await;
    let mb = r[0]["mailbox"].as_str().expect("mb").to_owned();
    assert!(s
        .call(json!({"type": "open", "mailbox": mb, "id": "8d61"}))
        .await
        .is_empty());
    let r = s
        .call(json!({"type": "add", "phase": "pake", "body": "7b22", "id": "58ba"}))
        .await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["side"], "b7bf0a807a");
    assert_eq!(r[0]["id"], "58ba");
    let pake_rx = r[0]["server_rx"].clone();
    let mut rcv = Client::bound(&srv.url, app, "70f5c03f1f").await;
    let r = rcv
        .call(json!({"type": "claim", "nameplate": np, "id": "99b3"}))
        .await;
    assert_eq!(r, vec![json!({"type": "claimed", "mailbox": mb})]);
    let r = rcv
        .call(json!({"type": "open", "mailbox": mb, "id": "12ec"}))
        .await;
    assert_eq!(
        r,
        vec![
            json!({"type": "message", "side": "b7bf0a807a", "phase": "pake", "body": "7b22", "server_rx": pake_rx, "id": "58ba"})
        ]
    );
    let r = rcv
        .call(json!({"type": "add", "phase": "pake", "body": "7b23", "id": "51ef"}))
        .await;
    assert_eq!(r[0]["side"], "70f5c03f1f");
    let echo = s.recv().await;
    assert_eq!(echo["id"], "51ef");
    let r = s
        .call(json!({"type": "release", "nameplate": np, "id": "1d7a"}))
        .await;
    assert_eq!(r, vec![json!({"type": "released"})]);
    let r = rcv
        .call(json!({"type": "release", "nameplate": np, "id": "3db8"}))
        .await;
    assert_eq!(r, vec![json!({"type": "released"})]);
    assert!(srv.handle.nameplates(app).is_empty());
    for (phase, body) in [("version", "2918"), ("0", "f6f3")] {
        let r = s
            .call(json!({"type": "add", "phase": phase, "body": body}))
            .await;
        assert_eq!(r[0]["phase"], phase);
        assert_eq!(rcv.recv().await["phase"], phase);
    }
    let r = rcv
        .call(json!({"type": "close", "mailbox": mb, "mood": "happy", "id": "614d"}))
        .await;
    assert_eq!(r, vec![json!({"type": "closed"})]);
    assert!(srv.handle.mailbox_sides(app, &mb).is_some());
    let r = s
        .call(json!({"type": "close", "mailbox": mb, "mood": "happy", "id": "aaab"}))
        .await;
    assert_eq!(r, vec![json!({"type": "closed"})]);
    assert!(srv.handle.mailbox_sides(app, &mb).is_none());
    assert!(srv.handle.snapshot().mailboxes.is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn every_error_string() {
    let srv = Running::start(Config::default()).await;
    let url = srv.url.clone();
    let mut c = Client::connect(&url).await;
    c.send(json!({"no": "type"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "error": "missing 'type'", "orig": {"no": "type"}})
    );
    assert_eq!(
        c.error(json!({"type": "ping"})).await,
        "ping requires 'ping'"
    );
    assert_eq!(c.error(json!({"type": "list"})).await, "must bind first");
    assert_eq!(
        c.error(json!({"type": "bind", "side": "x"})).await,
        "bind requires 'appid'"
    );
    assert_eq!(
        c.error(json!({"type": "bind", "appid": "e"})).await,
        "bind requires 'side'"
    );
    c.call(json!({"type": "bind", "appid": "e", "side": "e1"}))
        .await;
    assert_eq!(c.error(json!({"type": "bind"})).await, "already bound");
    assert_eq!(c.error(json!({"type": "nope"})).await, "unknown type");
    c.call(json!({"type": "allocate"})).await;
    assert_eq!(
        c.error(json!({"type": "allocate"})).await,
        "you already allocated one, don't be greedy"
    );
    assert_eq!(
        c.error(json!({"type": "release"})).await,
        "release without nameplate must follow claim"
    );
    assert_eq!(
        c.error(json!({"type": "claim"})).await,
        "claim requires 'nameplate'"
    );
    c.call(json!({"type": "claim", "nameplate": "55"})).await;
    assert_eq!(
        c.error(json!({"type": "claim", "nameplate": "55"})).await,
        "only one claim per connection"
    );
    assert_eq!(
        c.error(json!({"type": "release", "nameplate": "56"})).await,
        "release and claim must use same nameplate"
    );
    c.call(json!({"type": "release"})).await;
    assert_eq!(
        c.error(json!({"type": "release"})).await,
        "only one release per connection"
    );
    assert_eq!(
        c.error(json!({"type": "add", "phase": "p", "body": "b"}))
            .await,
        "must open mailbox before adding"
    );
    assert_eq!(
        c.error(json!({"type": "close"})).await,
        "close without mailbox must follow open"
    );
    assert_eq!(
        c.error(json!({"type": "open"})).await,
        "open requires 'mailbox'"
    );
    c.call(json!({"type": "open", "mailbox": "em"})).await;
    assert_eq!(
        c.error(json!({"type": "open", "mailbox": "em"})).await,
        "only one open per connection"
    );
    assert_eq!(
        c.error(json!({"type": "add", "body": "b"})).await,
        "missing 'phase'"
    );
    assert_eq!(
        c.error(json!({"type": "add", "phase": "p"})).await,
        "missing 'body'"
    );
    assert_eq!(
        c.error(json!({"type": "close", "mailbox": "other"})).await,
        "open and close must use same mailbox"
    );
    c.call(json!({"type": "close"})).await;
    assert_eq!(
        c.error(json!({"type": "close"})).await,
        "only one close per connection"
    );
    // crowded and reclaimed
    let mut a = Client::bound(&url, "e2", "a").await;
    let mut b = Client::bound(&url, "e2", "b").await;
    let mut third = Client::bound(&url, "e2", "c").await;
    a.call(json!({"type": "claim", "nameplate": "3"})).await;
    b.call(json!({"type": "claim", "nameplate": "3"})).await;
    assert_eq!(
        third
            .error(json!({"type": "claim", "nameplate": "3"}))
            .await,
        "crowded"
    );
    a.call(json!({"type": "release"})).await;
    let mut a2 = Client::bound(&url, "e2", "a").await;
    assert_eq!(
        a2.error(json!({"type": "claim", "nameplate": "3"})).await,
        "reclaimed"
    );
    srv.stop().await;
}

#[tokio::test]
async fn binary_frames_are_accepted_and_answered_as_text() {
    let srv = Running::start(Config::default()).await;
    let mut c = Client::connect(&srv.url).await;
    c.ws.send(Message::binary(br#"{"type":"ping","ping":5}"#.to_vec()))
        .await
        .expect("send");
    assert_eq!(c.recv().await, json!({"type": "ack", "id": null}));
    assert_eq!(c.recv().await, json!({"type": "pong", "pong": 5}));
    srv.stop().await;
}

#[tokio::test]
async fn malformed_input_closes_only_that_connection() {
    let srv = Running::start(Config::default()).await;
    let mut bystander = Client::bound(&srv.url, "m", "by").await;
    bystander
        .call(json!({"type": "open", "mailbox": "mbx"}))
        .await;
    let bad: Vec<Message> = vec![
        Message::text("not json"),
        Message::text("{}{}"),
        Message::text("[1,2]"),
        Message::text("\"str\""),
        Message::text("5"),
        Message::text(r#"{"type":"ping","ping":NaN}"#),
        Message::binary(vec![0xff, 0xfe, 0x00]),
        Message::binary(vec![b'{'; 2 << 20]),
    ];
    for frame in bad {
        let mut c = Client::connect(&srv.url).await;
        let _ = c.ws.send(frame).await;
        let code = c.closed().await;
        assert!(matches!(code, Some(1007) | Some(1009) | None), "{code:?}");
    }
    // wrong JSON types inside known messages get error replies
    let mut c = Client::bound(&srv.url, "m", "w").await;
    assert_eq!(
        c.error(json!({"type": "claim", "nameplate": 12})).await,
        "'nameplate' must be a string"
    );
    let mut c = Client::bound(&srv.url, "m", "w").await;
    for (msg, want) in [
        (
            json!({"type": "claim", "nameplate": "abc"}),
            "nameplate \"abc\" has non-digits",
        ),
        (
            json!({"type": "open", "mailbox": ["x"]}),
            "'mailbox' must be a string",
        ),
    ] {
        assert_eq!(c.error(msg).await, want);
    }
    // the bystander still works and a fresh connection is served
    let r = bystander
        .call(json!({"type": "add", "phase": "p", "body": "b"}))
        .await;
    assert_eq!(r.len(), 1);
    Client::bound(&srv.url, "m", "fresh").await;
    srv.stop().await;
}

#[tokio::test]
async fn reconnect_with_the_same_side_resumes() {
    let srv = Running::start(Config::default()).await;
    let mut a = Client::bound(&srv.url, "r", "sideA").await;
    let r = a.call(json!({"type": "claim", "nameplate": "8"})).await;
    let mb = r[0]["mailbox"].clone();
    a.call(json!({"type": "open", "mailbox": mb})).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = a
            .call(json!({"type": "add", "phase": i.to_string(), "body": "00", "id": i}))
            .await;
        ids.push(r[0]["server_rx"].clone());
    }
    drop(a); // abrupt: no close frame
    let mut a = Client::bound(&srv.url, "r", "sideA").await;
    let r = a.call(json!({"type": "claim", "nameplate": "8"})).await;
    assert_eq!(r[0]["mailbox"], mb);
    let replay = a.call(json!({"type": "open", "mailbox": mb})).await;
    let rx: Vec<Value> = replay.iter().map(|m| m["server_rx"].clone()).collect();
    assert_eq!(rx, ids, "replay in receive order with original server_rx");
    let mut b = Client::bound(&srv.url, "r", "sideB").await;
    let r = b.call(json!({"type": "claim", "nameplate": "8"})).await;
    assert_eq!(r[0]["mailbox"], mb);
    srv.stop().await;
}

#[tokio::test]
async fn apps_are_isolated() {
    let srv = Running::start(Config::default()).await;
    let mut a = Client::bound(&srv.url, "app-one", "s").await;
    let mut b = Client::bound(&srv.url, "app-two", "s").await;
    let ra = a.call(json!({"type": "allocate"})).await;
    let rb = b.call(json!({"type": "allocate"})).await;
    assert_eq!(ra[0]["nameplate"].as_str().map(str::len), Some(1));
    assert_eq!(rb[0]["nameplate"].as_str().map(str::len), Some(1));
    let r = a.call(json!({"type": "list"})).await;
    assert_eq!(r[0]["nameplates"].as_array().map(Vec::len), Some(1));
    assert_eq!(srv.handle.nameplates("app-one").len(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_sends_close_frames() {
    let srv = Running::start(Config::default()).await;
    let mut c = Client::bound(&srv.url, "g", "s").await;
    let stop = srv.stop();
    let (code, ()) = tokio::join!(c.closed(), stop);
    assert_eq!(code, Some(1001));
}

#[tokio::test]
async fn state_survives_a_restart_on_the_same_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("relay.sqlite");
    let config = Config {
        channel_db: Some(db.to_str().expect("path").into()),
        ..Config::default()
    };
    let srv = Running::start(config.clone()).await;
    let mut a = Client::bound(&srv.url, "p", "sa").await;
    let r = a.call(json!({"type": "claim", "nameplate": "4"})).await;
    let mb = r[0]["mailbox"].clone();
    a.call(json!({"type": "open", "mailbox": mb})).await;
    let sent = a
        .call(json!({"type": "add", "phase": "pake", "body": "aa", "id": "x"}))
        .await;
    srv.stop().await;
    let srv = Running::start(config).await;
    let mut a = Client::bound(&srv.url, "p", "sa").await;
    let r = a.call(json!({"type": "claim", "nameplate": "4"})).await;
    assert_eq!(r[0]["mailbox"], mb);
    let replay = a.call(json!({"type": "open", "mailbox": mb})).await;
    assert_eq!(replay, sent);
    srv.stop().await;
}

#[tokio::test]
async fn usage_rows_are_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let usage = dir.path().join("usage.sqlite");
    let config = Config {
        usage_db: Some(usage.to_str().expect("path").into()),
        ..Config::default()
    };
    let srv = Running::start(config).await;
    let mut a = Client::connect(&srv.url).await;
    a.call(
        json!({"type": "bind", "appid": "u", "side": "s1", "client_version": ["python", "0.24.0"]}),
    )
    .await;
    let mut b = Client::bound(&srv.url, "u", "s2").await;
    let r = a.call(json!({"type": "claim", "nameplate": "1"})).await;
    let mb = r[0]["mailbox"].clone();
    b.call(json!({"type": "claim", "nameplate": "1"})).await;
    for c in [&mut a, &mut b] {
        c.call(json!({"type": "release"})).await;
        c.call(json!({"type": "close", "mailbox": mb, "mood": "happy"}))
            .await;
    }
    let handle = srv.handle.clone();
    srv.stop().await;
    let versions = handle.usage_rows("client_versions");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["implementation"], "python");
    let np = handle.usage_rows("nameplates");
    assert_eq!(np.len(), 1);
    assert_eq!(np[0]["result"], "happy");
    let mbx = handle.usage_rows("mailboxes");
    assert_eq!(mbx.len(), 1);
    assert_eq!(mbx[0]["result"], "happy");
    assert_eq!(mbx[0]["for_nameplate"], 1);
    assert_eq!(handle.usage_rows("current").len(), 1);
}
