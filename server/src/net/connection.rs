//! One client connection: handshake, welcome, then frames in (to the core)
//! and frames out (from the pipeline), keepalive pings and clean closes.

use super::handshake::{self, Outcome};
use crate::pipeline::Outbound;
use crate::protocol::{decode, ServerMessage};
use crate::{unix_now, Shared};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// How long we wait for the client's close frame after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Initial read buffer of a connection. tungstenite allocates (and
/// zero-fills) it up front, so every idle connection pays for it: 256
/// bytes hold what a client sends before it waits for its peer (`bind`,
/// `claim`, `open`, a PAKE `add`); a larger frame grows the buffer to fit.
const READ_BUFFER: usize = 256;

/// Frames are collected up to this size before a write; `flush` writes the
/// rest, so one wake-up's frames go out in one `send` (the buffer grows
/// only to the largest batch actually written).
const WRITE_BUFFER: usize = 64 * 1024;

fn ws_config(shared: &Shared) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.max_message_size = Some(shared.config.max_message_size);
    c.max_frame_size = Some(shared.config.max_message_size);
    c.read_buffer_size = READ_BUFFER;
    c.write_buffer_size = WRITE_BUFFER;
    c
}

/// Serves one TCP connection to the end.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    stop: watch::Receiver<bool>,
) {
    if permit.is_none() {
        tracing::warn!("connection limit reached; refusing a connection");
        let body = "server busy\n";
        let resp = format!(
            "HTTP/1.1 503 Service Unavailable\r\nServer: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            handshake::server_header(),
            body.len()
        );
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, resp.as_bytes()).await;
        return;
    }
    let timeout = shared.config.handshake_timeout;
    // Boxed: the handshake's buffers would otherwise stay part of the
    // connection task's state (sized for its largest await point) for the
    // connection's whole life.
    let handshake = Box::pin(handshake::accept(stream, peer));
    let outcome = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("handshake timed out");
            return;
        }
    };
    let Outcome::Upgrade(upgrade) = outcome else {
        return;
    };
    let ip = if shared.config.trust_proxy_headers {
        upgrade.address.ip
    } else {
        peer.ip()
    };
    let Some(_ip_slot) = IpSlot::take(&shared, ip) else {
        tracing::warn!("per-address connection cap reached; refusing a connection");
        if let Ok(mut ws) = Box::pin(upgrade.finish(None, ws_config(&shared))).await {
            close(
                &mut ws,
                CloseCode::Policy,
                "too many connections from your address",
            )
            .await;
        }
        return;
    };
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    if shared.config.blur_usage.is_none() {
        tracing::debug!(conn, client = %peer, "ws client connecting");
    }
    let permission = match shared.core.lock() {
        Ok(mut locked) => {
            let crate::Locked { core, rng, .. } = &mut *locked;
            core.connect(conn, rng)
        }
        Err(_) => return,
    };
    let mut welcome = shared.welcome();
    if let Some(p) = permission {
        welcome.insert("permission-required".into(), p);
    }
    welcome.insert("your-address".into(), upgrade.address.to_json());
    let frame = ServerMessage::Welcome { welcome }.to_json(unix_now());
    // The 101 and the welcome in one write. Boxed, like the handshake: its
    // state would otherwise stay in every connection task's.
    let mut ws = match Box::pin(upgrade.finish(Some(frame), ws_config(&shared))).await {
        Ok(ws) => ws,
        Err(_) => {
            if let Ok(mut core) = shared.core.lock() {
                core.core.disconnect(conn);
            }
            return;
        }
    };
    let (tx, rx) = mpsc::channel(shared.config.max_queued_frames.max(1));
    if let Ok(mut routes) = shared.routes.lock() {
        routes.insert(conn, tx);
    }
    shared.metrics.connections_total.inc();
    shared.metrics.connections_current.inc();
    let reason = serve_frames(&shared, conn, &mut ws, rx, stop).await;
    shared.metrics.connections_current.dec();
    tracing::debug!(conn, reason, "connection ended");
    if let Ok(mut routes) = shared.routes.lock() {
        routes.remove(&conn);
    }
    if let Ok(mut core) = shared.core.lock() {
        core.core.disconnect(conn);
    }
    drop(permit);
}

/// One connection's place in the per-address count; released on drop.
/// (No cap configured: an empty slot.)
struct IpSlot<'a> {
    shared: &'a Shared,
    ip: Option<std::net::IpAddr>,
}

impl<'a> IpSlot<'a> {
    /// None when `ip` already has the maximum number of connections.
    fn take(shared: &'a Shared, ip: std::net::IpAddr) -> Option<Self> {
        let Some(cap) = shared.ip_cap.read().ok().and_then(|c| *c) else {
            return Some(IpSlot { shared, ip: None });
        };
        let mut map = shared.per_ip.lock().ok()?;
        let n = map.entry(ip).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            shared,
            ip: Some(ip),
        })
    }
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        let Some(ip) = self.ip else {
            return;
        };
        if let Ok(mut map) = self.shared.per_ip.lock() {
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// Sends a close frame and waits briefly for the client's. Boxed (it is
/// rare, and its timer would otherwise enlarge every connection's state).
fn close<'a>(
    ws: &'a mut Ws,
    code: CloseCode,
    reason: &'static str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(close_inner(ws, code, reason))
}

async fn close_inner(ws: &mut Ws, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    // wait (briefly) for the client's close so the TCP close is clean
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// The frame loop; returns why it ended.
async fn serve_frames(
    shared: &Shared,
    conn: u64,
    ws: &mut Ws,
    mut rx: mpsc::Receiver<Outbound>,
    mut stop: watch::Receiver<bool>,
) -> &'static str {
    let ping_every = shared.config.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    let mut ping_seq: u32 = 0;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                close(ws, CloseCode::Away, "server shutting down").await;
                return "shutdown";
            }
            out = rx.recv() => {
                let Some(out) = out else {
                    // the writer dropped our queue: we weren't reading
                    close(ws, CloseCode::Policy, "client too slow").await;
                    return "too slow";
                };
                match out {
                    Outbound::Message(msg) => {
                        if ws.feed(Message::text(msg.to_json(unix_now()))).await.is_err() {
                            return "write failed";
                        }
                        // write everything already queued before flushing
                        while let Ok(more) = rx.try_recv() {
                            match more {
                                Outbound::Message(m) => {
                                    if ws.feed(Message::text(m.to_json(unix_now()))).await.is_err() {
                                        return "write failed";
                                    }
                                }
                                Outbound::Close(&(code, reason)) => {
                                    let _ = ws.flush().await;
                                    close(ws, CloseCode::from(code), reason).await;
                                    return reason;
                                }
                            }
                        }
                        if ws.flush().await.is_err() {
                            return "write failed";
                        }
                    }
                    Outbound::Close(&(code, reason)) => {
                        close(ws, CloseCode::from(code), reason).await;
                        return reason;
                    }
                }
            }
            frame = ws.next() => {
                last_heard = Instant::now();
                // the frame's bytes themselves (shared, not copied)
                let payload = match frame {
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m.into_data(),
                    Some(Ok(Message::Close(_))) | None => return "client closed",
                    Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings
                    Some(Err(WsError::Capacity(e))) => {
                        tracing::info!(conn, error = %e, "message too big");
                        close(ws, CloseCode::Size, "message too big").await;
                        return "message too big";
                    }
                    Some(Err(WsError::Utf8)) => {
                        close(ws, CloseCode::Invalid, "invalid UTF-8").await;
                        return "invalid utf-8";
                    }
                    Some(Err(e)) => {
                        tracing::debug!(conn, error = %e, "read failed");
                        return "read failed";
                    }
                };
                let msg = match decode(&payload) {
                    Ok(msg) => msg,
                    Err(e) => {
                        tracing::info!(conn, error = %e, "malformed frame; closing");
                        close(ws, CloseCode::Invalid, "malformed message").await;
                        return "malformed";
                    }
                };
                if !shared.submit(conn, msg) {
                    close(ws, CloseCode::Away, "server shutting down").await;
                    return "shutdown";
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= shared.config.ping_timeout {
                    tracing::debug!(conn, "keepalive timeout");
                    return "keepalive timeout";
                }
                ping_seq = ping_seq.wrapping_add(1);
                let mut payload = unix_now().to_be_bytes().to_vec();
                payload.extend_from_slice(&ping_seq.to_be_bytes());
                if ws.send(Message::Ping(payload.into())).await.is_err() {
                    return "write failed";
                }
            }
        }
    }
}
