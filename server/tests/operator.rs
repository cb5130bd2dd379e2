//! Operator features: metrics and health endpoints, live reconfiguration
//! (in-process and SIGHUP with the binary), and the hashcash permissions
//! extension over the wire.

mod common;

use common::{http_get, Client, Running, WAIT};
use serde_json::json;
use std::time::Duration;
use wormhole_mailbox_server::protocol::permission::mint_hashcash;
use wormhole_mailbox_server::{Config, Permissions};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn metrics_and_health() {
    let port = free_port();
    let config = Config {
        metrics: Some(format!("127.0.0.1:{port}").parse().expect("addr")),
        ..Config::default()
    };
    let srv = Running::start(config).await;
    let mut a = Client::bound(&srv.url, "m", "a").await;
    let mut b = Client::bound(&srv.url, "m", "b").await;
    let r = a.call(json!({"type": "claim", "nameplate": "1"})).await;
    let mb = r[0]["mailbox"].clone();
    b.call(json!({"type": "claim", "nameplate": "1"})).await;
    a.error(json!({"type": "claim", "nameplate": "2"})).await;
    for c in [&mut a, &mut b] {
        c.call(json!({"type": "close", "mailbox": mb, "mood": "scary"}))
            .await;
    }
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let text = http_get(addr, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for needle in [
        "wormhole_mailbox_connections 2",
        "wormhole_mailbox_messages_received_total{type=\"claim\"} 3",
        "wormhole_mailbox_errors_sent_total{error=\"only one claim per connection\"} 1",
        "wormhole_mailbox_mailbox_results_total{result=\"scary\"} 1",
        "wormhole_mailbox_live_mailboxes 0",
        "wormhole_mailbox_commit_duration_seconds_count",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let health = http_get(addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    srv.stop().await;
}

#[tokio::test]
async fn reconfigure_changes_welcome_and_limits_live() {
    let srv = Running::start(Config::default()).await;
    let before = Client::connect(&srv.url).await;
    assert!(before.welcome["welcome"].get("motd").is_none());
    let mut new = Config {
        motd: Some("maintenance tonight".into()),
        ..Config::default()
    };
    new.limits.max_mailbox_messages = 1;
    srv.handle.reconfigure(&new);
    let mut after = Client::bound(&srv.url, "r", "s").await;
    assert_eq!(after.welcome["welcome"]["motd"], "maintenance tonight");
    after.call(json!({"type": "open", "mailbox": "m"})).await;
    after
        .call(json!({"type": "add", "phase": "1", "body": "b"}))
        .await;
    assert_eq!(
        after
            .error(json!({"type": "add", "phase": "2", "body": "b"}))
            .await,
        "mailbox is full: too many messages"
    );
    srv.stop().await;
}

#[tokio::test]
async fn hashcash_permission_over_the_wire() {
    let config = Config {
        permissions: Permissions {
            allow_none: false,
            hashcash_bits: Some(10),
        },
        ..Config::default()
    };
    let srv = Running::start(config).await;
    let mut c = Client::connect(&srv.url).await;
    let offer = c.welcome["welcome"]["permission-required"].clone();
    assert_eq!(offer["none"], serde_json::Value::Null);
    assert_eq!(offer["hashcash"]["bits"], 10);
    assert_eq!(
        offer["hashcash"].as_object().map(|o| o.len()),
        Some(2),
        "exactly bits and resource"
    );
    assert_eq!(
        c.error(json!({"type": "bind", "appid": "h", "side": "s"}))
            .await,
        "must submit-permission first"
    );
    let resource = offer["hashcash"]["resource"].as_str().expect("resource");
    let stamp = mint_hashcash(resource, 10);
    let r = c
        .call(json!({"type": "submit-permission", "method": "hashcash", "stamp": stamp}))
        .await;
    assert!(r.is_empty(), "{r:?}");
    let r = c
        .call(json!({"type": "bind", "appid": "h", "side": "s"}))
        .await;
    assert!(r.is_empty(), "{r:?}");
    // the default server offers nothing: the welcome is unchanged
    let plain = Running::start(Config::default()).await;
    let c = Client::connect(&plain.url).await;
    assert!(c.welcome["welcome"].get("permission-required").is_none());
    plain.stop().await;
    srv.stop().await;
}

#[test]
fn sighup_reloads_the_config_file_and_keeps_old_settings_on_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("mailbox.toml");
    std::fs::write(&cfg, "motd = \"first\"\n").expect("write");
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wormhole-mailbox"))
        .arg(format!("--port=tcp:{port}:interface=127.0.0.1"))
        .arg("--channel-db=:memory:")
        .arg(format!("--config={}", cfg.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = format!("ws://127.0.0.1:{port}/v1");
    let motd = |url: String| async move {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Ok(Ok((mut ws, _))) =
                tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url)).await
            {
                use futures_util::StreamExt;
                let frame = ws.next().await.expect("frame").expect("ok");
                let v: serde_json::Value =
                    serde_json::from_str(frame.to_text().expect("text")).expect("json");
                return v["welcome"]["motd"].clone();
            }
            assert!(std::time::Instant::now() < deadline, "server didn't start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let hup = |pid: u32| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok);
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(rt.block_on(motd(url.clone())), "first");
    std::fs::write(&cfg, "motd = \"second\"\n").expect("write");
    hup(child.id());
    assert_eq!(rt.block_on(motd(url.clone())), "second");
    std::fs::write(&cfg, "motd = [not toml\n").expect("write");
    hup(child.id());
    assert_eq!(
        rt.block_on(motd(url.clone())),
        "second",
        "bad file rejected"
    );
    assert!(child.try_wait().expect("status").is_none(), "still running");
    let _ = child.kill();
    let _ = child.wait();
}
