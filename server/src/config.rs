//! Server settings shared by the CLI, the tests and the Python binding.

use crate::protocol::{Limits, Permissions};
use crate::store::Durability;
use std::time::Duration;

/// Everything that shapes a running server. `Config::default()` is an
/// ephemeral in-memory server with the Python server's timing defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Channel database: `None` keeps state in memory only (tests, fixtures);
    /// `Some(":memory:")` is SQLite in memory; otherwise a file path.
    pub channel_db: Option<String>,
    /// Usage-statistics database (Python usage schema v2); none by default.
    pub usage_db: Option<String>,
    /// Round recorded start/connect times down to this many seconds, and
    /// keep client addresses out of the logs.
    pub blur_usage: Option<u64>,
    /// Welcome `motd` (sent even when empty, as the Python server does).
    pub motd: Option<String>,
    /// Welcome `current_cli_version` (omitted when empty).
    pub advertise_version: Option<String>,
    /// Welcome `error`: tells clients to quit (omitted when empty).
    pub signal_error: Option<String>,
    /// `list` always answers an empty list.
    pub disallow_list: bool,
    /// How often expired channels are pruned (first run at start-up).
    pub prune_interval: Duration,
    /// A channel idle this long (and with no connected listener) expires.
    pub channel_expiration: Duration,
    /// WebSocket keepalive Ping interval.
    pub ping_interval: Duration,
    /// Drop a connection from which nothing arrived for this long.
    pub ping_timeout: Duration,
    /// Commit durability of the channel database.
    pub durability: Durability,
    /// Largest WebSocket message (and frame) accepted, in bytes.
    pub max_message_size: usize,
    /// Most simultaneous connections; more are refused with HTTP 503.
    pub max_connections: usize,
    /// A client must finish the HTTP/WebSocket handshake within this time.
    pub handshake_timeout: Duration,
    /// Most simultaneous connections from one address (None: no cap).
    pub max_connections_per_ip: Option<usize>,
    /// Take the client address from `X-Real-IP` for the per-address cap
    /// (only behind a proxy that sets it; otherwise clients could spoof it).
    pub trust_proxy_headers: bool,
    /// Frames queued for one slow client before it is disconnected.
    pub max_queued_frames: usize,
    /// Storage limits per mailbox, per app and in total.
    pub limits: Limits,
    /// The permissions extension: `none` only (the default) changes nothing.
    pub permissions: Permissions,
    /// Serve `/metrics` and `/health` on this address.
    pub metrics: Option<std::net::SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            channel_db: None,
            usage_db: None,
            blur_usage: None,
            motd: None,
            advertise_version: None,
            signal_error: None,
            disallow_list: false,
            prune_interval: Duration::from_secs(5 * 60),
            channel_expiration: Duration::from_secs(11 * 60),
            ping_interval: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(600),
            durability: Durability::Process,
            max_message_size: 1 << 20,
            max_connections: 50_000,
            handshake_timeout: Duration::from_secs(10),
            max_connections_per_ip: None,
            trust_proxy_headers: false,
            max_queued_frames: 10_000,
            limits: Limits::default(),
            permissions: Permissions::default(),
            metrics: None,
        }
    }
}

impl Config {
    /// The welcome object without the per-connection `your-address`
    /// (protocol.md §3, keys in the Python server's order).
    pub fn welcome_base(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut w = serde_json::Map::new();
        if let Some(motd) = &self.motd {
            w.insert("motd".into(), motd.clone().into());
        }
        if let Some(v) = self.advertise_version.as_ref().filter(|v| !v.is_empty()) {
            w.insert("current_cli_version".into(), v.clone().into());
        }
        if let Some(e) = self.signal_error.as_ref().filter(|e| !e.is_empty()) {
            w.insert("error".into(), e.clone().into());
        }
        w
    }
}
