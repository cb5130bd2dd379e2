//! Drop-in replacement of a running deployment: the pinned Python server
//! 0.8.0 writes its channel and usage databases mid-session, is stopped,
//! and our server, started on the same files, lets both clients resume and
//! finish (issue 7, "Drop-in replacement for an existing deployment").

mod common;

use common::{Client, Running};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wormhole_mailbox_server::Config;

const APP: &str = "example.com/python-db-migration";
const SIDE_A: &str = "a1a1a1a1a1";
const SIDE_B: &str = "b2b2b2b2b2";

/// The repository's `.venv` (ci/setup-venv.sh), or None when it is absent.
/// CI always creates it, so there a missing venv fails the test instead of
/// skipping it.
fn python_twist() -> Option<PathBuf> {
    let twist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/twist");
    if twist.exists() {
        return Some(twist);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: run ci/setup-venv.sh",
        twist.display()
    );
    None
}

/// The Python server process; killed if a test fails before stopping it.
struct Python {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Python {
    fn start(twist: &Path, dir: &Path, channel: &Path, usage: &Path) -> Python {
        // A free port: bind, note it, release it for the Python server.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = dir.join("python-server.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(twist)
            .current_dir(dir)
            .env("PYTHONUNBUFFERED", "1")
            .args([
                "--log-format=text".to_owned(),
                "wormhole-mailbox".to_owned(),
                format!("--port=tcp:{port}:interface=127.0.0.1"),
                format!("--channel-db={}", channel.display()),
                format!("--usage-db={}", usage.display()),
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the Python server");
        let mut py = Python { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = py.child.try_wait() {
                panic!("Python server exited ({status}): {}", py.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "Python server not listening: {}",
                py.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        py
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as an operator's `systemctl stop` would send, then wait.
    fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: plain kill(2) on the child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Twisted re-raises SIGTERM after a clean shutdown (143).
                assert!(
                    status.success()
                        || std::os::unix::process::ExitStatusExt::signal(&status)
                            == Some(libc::SIGTERM)
                        || status.code() == Some(143),
                    "Python server stopped badly ({status}): {}",
                    self.log_text()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Python server ignores SIGTERM: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn bind(url: &str, side: &str, era: &str) -> Client {
    let mut c = Client::connect(url).await;
    let r = c
        .call(json!({"type": "bind", "appid": APP, "side": side,
                     "client_version": [era, "1.0"], "id": format!("bind-{side}")}))
        .await;
    assert!(r.is_empty(), "{r:?}");
    c
}

fn read_only(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open read-only")
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

fn version(conn: &Connection) -> i64 {
    conn.query_row("SELECT version FROM version", [], |r| r.get(0))
        .expect("version")
}

/// Every row of `table` in rowid order, as JSON, for exact comparisons.
fn rows(conn: &Connection, table: &str) -> Vec<Vec<Value>> {
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
        .expect("prepare");
    let n = stmt.column_count();
    let out = stmt
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                        rusqlite::types::Value::Null => Value::Null,
                        rusqlite::types::Value::Integer(v) => json!(v),
                        rusqlite::types::Value::Real(v) => json!(v),
                        rusqlite::types::Value::Text(v) => json!(v),
                        rusqlite::types::Value::Blob(v) => json!(v),
                    })
                })
                .collect()
        })
        .expect("query");
    out.collect::<Result<_, _>>().expect("rows")
}

#[tokio::test(flavor = "multi_thread")]
async fn python_session_continues_on_our_server() {
    let Some(twist) = python_twist() else {
        eprintln!(
            "SKIPPED python_session_continues_on_our_server: no .venv with the Python \
             server 0.8.0 at the repository root (create it with ci/setup-venv.sh)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let channel = dir.path().join("relay.sqlite");
    let usage = dir.path().join("usage.sqlite");

    // --- The Python server, up to the middle of a session.
    let py = Python::start(&twist, dir.path(), &channel, &usage);
    let url = format!("ws://127.0.0.1:{}/v1", py.port);
    let mut a = bind(&url, SIDE_A, "python-era").await;
    let r = a.call(json!({"type": "allocate", "id": "alloc"})).await;
    assert_eq!(r.len(), 1, "{r:?}");
    let nameplate = r[0]["nameplate"].as_str().expect("allocated").to_owned();
    let r = a
        .call(json!({"type": "claim", "nameplate": nameplate, "id": "claim-a"}))
        .await;
    let mailbox = r[0]["mailbox"].as_str().expect("claimed").to_owned();
    assert!(a
        .call(json!({"type": "open", "mailbox": mailbox, "id": "open-a"}))
        .await
        .is_empty());
    let r = a
        .call(json!({"type": "add", "phase": "pake", "body": "7b2270616b655f7631223a202261227d", "id": "pake-a"}))
        .await;
    assert_eq!(r.len(), 1, "{r:?}");
    let pake_a = r[0].clone();
    assert_eq!(pake_a["side"], SIDE_A);
    assert!(pake_a["server_rx"].is_f64(), "{pake_a}");

    let mut b = bind(&url, SIDE_B, "python-era").await;
    let r = b
        .call(json!({"type": "claim", "nameplate": nameplate, "id": "claim-b"}))
        .await;
    assert_eq!(r, vec![json!({"type": "claimed", "mailbox": mailbox})]);
    let r = b
        .call(json!({"type": "open", "mailbox": mailbox, "id": "open-b"}))
        .await;
    assert_eq!(r, vec![pake_a.clone()], "replay of A's pake");
    // No id on B's add: Python stores NULL, which must come back as null.
    let r = b
        .call(json!({"type": "add", "phase": "pake", "body": "7b2270616b655f7631223a202262227d"}))
        .await;
    assert_eq!(r.len(), 1, "{r:?}");
    let pake_b = r[0].clone();
    assert_eq!(pake_b["id"], Value::Null);
    assert_eq!(a.drain().await, vec![pake_b.clone()]);

    // --- Stop it (clients still connected, nothing closed).
    py.stop();
    drop((a, b));
    for suffix in ["-journal", "-wal"] {
        let side_file = PathBuf::from(format!("{}{suffix}", channel.display()));
        assert!(
            !side_file.exists() || std::fs::metadata(&side_file).map(|m| m.len()).unwrap_or(0) == 0,
            "the Python server left {} behind",
            side_file.display()
        );
    }
    let python_client_versions = {
        let ch = read_only(&channel);
        assert_eq!(version(&ch), 1);
        assert_eq!(count(&ch, "messages"), 2);
        assert_eq!(count(&ch, "nameplate_sides"), 2);
        assert_eq!(count(&ch, "mailbox_sides"), 2);
        let us = read_only(&usage);
        assert_eq!(version(&us), 2);
        let cv = rows(&us, "client_versions");
        assert_eq!(cv.len(), 2, "{cv:?}");
        assert!(cv.iter().all(|r| r[3] == "python-era"), "{cv:?}");
        assert_eq!(count(&us, "nameplates") + count(&us, "mailboxes"), 0);
        cv
    };

    // --- Our server on the same files.
    let srv = Running::start(Config {
        channel_db: Some(channel.to_str().expect("utf-8 path").to_owned()),
        usage_db: Some(usage.to_str().expect("utf-8 path").to_owned()),
        ..Config::default()
    })
    .await;
    let backup = PathBuf::from(format!("{}-backup-v1", channel.display()));
    assert!(backup.exists(), "no backup copy");

    let mut a = bind(&srv.url, SIDE_A, "rust-era").await;
    let mut b = bind(&srv.url, SIDE_B, "rust-era").await;
    let r = a
        .call(json!({"type": "claim", "nameplate": nameplate, "id": "reclaim-a"}))
        .await;
    assert_eq!(r, vec![json!({"type": "claimed", "mailbox": mailbox})]);
    let r = a
        .call(json!({"type": "open", "mailbox": mailbox, "id": "reopen-a"}))
        .await;
    assert_eq!(
        r,
        vec![pake_a.clone(), pake_b.clone()],
        "replay, original server_rx"
    );
    let r = b
        .call(json!({"type": "claim", "nameplate": nameplate, "id": "reclaim-b"}))
        .await;
    assert_eq!(r, vec![json!({"type": "claimed", "mailbox": mailbox})]);
    let r = b
        .call(json!({"type": "open", "mailbox": mailbox, "id": "reopen-b"}))
        .await;
    assert_eq!(r, vec![pake_a.clone(), pake_b.clone()]);

    // Finish: versions, releases, happy closes.
    let r = a
        .call(json!({"type": "add", "phase": "version", "body": "aa", "id": "v-a"}))
        .await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(b.drain().await, r);
    let r = b
        .call(json!({"type": "add", "phase": "version", "body": "bb", "id": "v-b"}))
        .await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(a.drain().await, r);
    for (c, id) in [(&mut a, "rel-a"), (&mut b, "rel-b")] {
        let r = c
            .call(json!({"type": "release", "nameplate": nameplate, "id": id}))
            .await;
        assert_eq!(r, vec![json!({"type": "released"})]);
    }
    for (c, id) in [(&mut a, "close-a"), (&mut b, "close-b")] {
        let r = c
            .call(json!({"type": "close", "mailbox": mailbox, "mood": "happy", "id": id}))
            .await;
        assert_eq!(r, vec![json!({"type": "closed"})]);
    }
    drop((a, b));
    srv.stop().await;

    // --- What the databases hold now.
    let ch = read_only(&channel);
    assert_eq!(version(&ch), 101);
    for table in [
        "nameplates",
        "nameplate_sides",
        "mailboxes",
        "mailbox_sides",
        "messages",
    ] {
        assert_eq!(count(&ch, table), 0, "{table} not empty");
    }
    let bk = read_only(&backup);
    assert_eq!(version(&bk), 1);
    assert_eq!(count(&bk, "messages"), 2);

    let us = read_only(&usage);
    assert_eq!(version(&us), 2);
    let cv = rows(&us, "client_versions");
    assert_eq!(cv.len(), 4, "{cv:?}");
    assert_eq!(
        &cv[..2],
        &python_client_versions[..],
        "Python rows kept first"
    );
    assert!(cv[2..].iter().all(|r| r[3] == "rust-era"), "{cv:?}");
    let np = rows(&us, "nameplates");
    assert_eq!(np.len(), 1, "{np:?}");
    assert_eq!(np[0][0], APP);
    assert_eq!(np[0][4], "happy", "{np:?}");
    let mb = rows(&us, "mailboxes");
    assert_eq!(mb.len(), 1, "{mb:?}");
    assert_eq!((&mb[0][0], &mb[0][1]), (&json!(APP), &json!(1)), "{mb:?}");
    assert_eq!(mb[0][5], "happy", "{mb:?}");
    // Both rows start at A's first claim/open, made under the Python server.
    let started = np[0][1].as_f64().expect("started");
    let first_rx = pake_a["server_rx"].as_f64().expect("server_rx");
    assert!(started <= first_rx, "{started} > {first_rx}");
}
