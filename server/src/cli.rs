//! Command-line flags (the Python server's, so an operator's command line
//! works unchanged, plus ours), logging set-up and the listener.

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use wormhole_mailbox_server::reload::ConfigFile;
use wormhole_mailbox_server::{Config, Durability, Server, ServerHandle};

/// Magic Wormhole mailbox (rendezvous) server, wire-compatible with the
/// Python server 0.8.0 (`twist wormhole-mailbox`).
#[derive(Debug, Parser)]
#[command(name = "wormhole-mailbox", version, about)]
pub struct Args {
    /// Where to listen: a port (`4000`), `HOST:PORT` (`127.0.0.1:4000`,
    /// `[::1]:4000`), or the Python server's Twisted form
    /// (`tcp:4000:interface=\:\:`). Default: port 4000 on every IPv4 and
    /// IPv6 address.
    #[arg(short, long, default_value = "tcp:4000:interface=\\:\\:")]
    pub port: String,

    /// Channel (live state) SQLite database; `:memory:` keeps it in memory.
    #[arg(long, default_value = "relay.sqlite", value_name = "PATH")]
    pub channel_db: String,

    /// Usage-statistics SQLite database (Python usage schema v2). Without
    /// it no statistics are recorded.
    #[arg(long, value_name = "PATH")]
    pub usage_db: Option<String>,

    /// Round recorded times down to this many seconds and keep client
    /// addresses out of the logs.
    #[arg(long, value_name = "SECONDS")]
    pub blur_usage: Option<u64>,

    /// Message of the day, shown by clients when they connect.
    #[arg(long)]
    pub motd: Option<String>,

    /// Client version to advertise as current (clients warn when theirs differs).
    #[arg(long, value_name = "VERSION")]
    pub advertise_version: Option<String>,

    /// Tell every client to quit with this error (the server keeps serving).
    #[arg(long, value_name = "TEXT")]
    pub signal_error: Option<String>,

    /// Answer every `list` with an empty list.
    #[arg(long)]
    pub disallow_list: bool,

    /// Python server option for Autobahn settings; `autoPingInterval` and
    /// `autoPingTimeout` are honoured, others are accepted and ignored.
    #[arg(long, value_name = "KEY=JSON")]
    pub websocket_protocol_option: Vec<String>,

    /// Accepted for compatibility with the Python server 0.8.0 (unused there too).
    #[arg(long, hide = true)]
    pub log_fd: Option<i64>,

    /// Seconds between expiry checks (Python: 300).
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    pub prune_interval: f64,

    /// Seconds of inactivity after which a channel expires (Python: 660).
    #[arg(long, default_value_t = 660.0, value_name = "SECONDS")]
    pub channel_expiration: f64,

    /// Seconds between WebSocket keepalive pings.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub ping_interval: f64,

    /// Drop a connection silent for this many seconds.
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS")]
    pub ping_timeout: f64,

    /// Fsync every commit (survives power loss), not just a process crash.
    #[arg(long)]
    pub power_loss_durable: bool,

    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_message_size: usize,

    /// Most simultaneous connections; more get HTTP 503.
    #[arg(long, default_value_t = 50_000)]
    pub max_connections: usize,

    /// Most simultaneous connections from one client address (default: no cap).
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// Count connections per `X-Real-IP` instead of the TCP peer (only
    /// behind a proxy that sets that header; otherwise clients could spoof it).
    #[arg(long)]
    pub trust_proxy_headers: bool,

    /// Seconds a client has to finish the HTTP/WebSocket handshake.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub handshake_timeout: f64,

    /// Frames queued for a client that isn't reading before it is disconnected.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_queued_frames: usize,

    /// Messages one mailbox may hold.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_mailbox_messages: usize,

    /// Bytes (phase + body) one mailbox may hold.
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub max_mailbox_bytes: usize,

    /// Live nameplates per app id.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_app_nameplates: usize,

    /// Live mailboxes in the whole server.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub max_mailboxes: usize,

    /// Accepted permission methods (repeatable): `none` lets any client
    /// in (the default, and the only one the Python server has); `hashcash`
    /// asks for proof of work. With only `hashcash`, clients must pay.
    #[arg(long = "permissions", value_enum, value_name = "METHOD")]
    pub permissions: Vec<PermissionMethod>,

    /// Bits of hashcash work asked for when `hashcash` is accepted.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub hashcash_bits: u32,

    /// Serve Prometheus/OpenMetrics `/metrics` and a `/health` check on
    /// this address (its own listener; keep it private).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<std::net::SocketAddr>,

    /// TOML file with reloadable settings (motd, advertise-version,
    /// signal-error, disallow-list, max-mailbox-messages, max-mailbox-bytes,
    /// max-app-nameplates, max-mailboxes, max-connections-per-ip) that
    /// overlay the flags; re-read on SIGHUP (a bad file is rejected and the
    /// running settings stay).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A permission method (protocol.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PermissionMethod {
    None,
    Hashcash,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr; the level comes from `RUST_LOG` (default `info`).
/// Colours only on a terminal: a log file or the journal gets plain text.
pub fn init_logging(args: &Args) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn seconds(v: f64, flag: &str) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v > 0.0) {
        bail!("--{flag} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses `--port`: `PORT`, `HOST:PORT`, `[V6]:PORT` or Twisted's
/// `tcp:PORT[:interface=ADDR]` / `tcp:port=PORT:interface=ADDR`.
/// Returns the address; `::` means dual-stack.
pub fn parse_port(spec: &str) -> anyhow::Result<SocketAddr> {
    let any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    if let Ok(port) = spec.parse::<u16>() {
        return Ok(SocketAddr::new(any, port));
    }
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(rest) = spec.strip_prefix("tcp:") {
        // split on ':' not preceded by a backslash
        let mut parts = Vec::new();
        let mut cur = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' => parts.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        parts.push(cur);
        let mut port = None;
        let mut iface = any;
        for (i, p) in parts.iter().enumerate() {
            if let Some(v) = p.strip_prefix("port=") {
                port = Some(v.parse::<u16>().context("bad port in --port")?);
            } else if let Some(v) = p.strip_prefix("interface=") {
                iface = v.parse().with_context(|| format!("bad interface {v:?}"))?;
            } else if i == 0 {
                port = Some(p.parse::<u16>().context("bad port in --port")?);
            } else if p.starts_with("backlog=") {
            } else {
                bail!("unsupported endpoint option {p:?} in --port");
            }
        }
        let port = port.context("--port needs a port number")?;
        return Ok(SocketAddr::new(iface, port));
    }
    if let Some((host, port)) = spec.rsplit_once(':') {
        if let (Ok(ip), Ok(port)) = (host.parse::<IpAddr>(), port.parse::<u16>()) {
            return Ok(SocketAddr::new(ip, port));
        }
    }
    bail!("cannot understand --port {spec:?} (use PORT, HOST:PORT or tcp:PORT:interface=ADDR)")
}

/// Binds the address; `[::]` is bound dual-stack (IPv4 too), falling back to
/// IPv4 only when the machine has no IPv6.
pub fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let make = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    let std_listener = match make(addr) {
        Ok(l) => l,
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
            tracing::warn!(error = %e, "no IPv6; listening on IPv4 only");
            make(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), addr.port()))
                .with_context(|| format!("cannot listen on port {}", addr.port()))?
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
    };
    Ok(tokio::net::TcpListener::from_std(std_listener)?)
}

fn apply_websocket_options(config: &mut Config, options: &[String]) -> anyhow::Result<()> {
    for opt in options {
        let Some((key, value)) = opt.split_once('=') else {
            bail!("format options as OPTION=VALUE");
        };
        let value: serde_json::Value = serde_json::from_str(value)
            .map_err(|_| anyhow::anyhow!("could not parse JSON value for {key}"))?;
        let secs = value.as_f64().filter(|v| *v > 0.0);
        match (key, secs) {
            ("autoPingInterval", Some(s)) => config.ping_interval = Duration::from_secs_f64(s),
            ("autoPingTimeout", Some(s)) => config.ping_timeout = Duration::from_secs_f64(s),
            _ => tracing::warn!(key, "websocket protocol option ignored"),
        }
    }
    Ok(())
}

/// Builds the config from flags.
pub fn config(args: &Args) -> anyhow::Result<Config> {
    let mut config = Config {
        channel_db: Some(args.channel_db.clone()),
        usage_db: args.usage_db.clone(),
        blur_usage: args.blur_usage,
        motd: args.motd.clone(),
        advertise_version: args.advertise_version.clone(),
        signal_error: args.signal_error.clone(),
        disallow_list: args.disallow_list,
        prune_interval: seconds(args.prune_interval, "prune-interval")?,
        channel_expiration: seconds(args.channel_expiration, "channel-expiration")?,
        ping_interval: seconds(args.ping_interval, "ping-interval")?,
        ping_timeout: seconds(args.ping_timeout, "ping-timeout")?,
        durability: if args.power_loss_durable {
            Durability::PowerLoss
        } else {
            Durability::Process
        },
        max_message_size: args.max_message_size,
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        trust_proxy_headers: args.trust_proxy_headers,
        handshake_timeout: seconds(args.handshake_timeout, "handshake-timeout")?,
        max_queued_frames: args.max_queued_frames.max(1),
        limits: wormhole_mailbox_server::Limits {
            max_mailbox_messages: args.max_mailbox_messages,
            max_mailbox_bytes: args.max_mailbox_bytes,
            max_app_nameplates: args.max_app_nameplates,
            max_mailboxes: args.max_mailboxes,
        },
        permissions: Default::default(),
        metrics: args.metrics,
    };
    if !args.permissions.is_empty() {
        config.permissions = wormhole_mailbox_server::Permissions {
            allow_none: args.permissions.contains(&PermissionMethod::None),
            hashcash_bits: args
                .permissions
                .contains(&PermissionMethod::Hashcash)
                .then_some(args.hashcash_bits),
        };
    }
    if !(1..=64).contains(&args.hashcash_bits) {
        bail!("--hashcash-bits must be between 1 and 64");
    }
    apply_websocket_options(&mut config, &args.websocket_protocol_option)?;
    Ok(config)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("signal received; shutting down");
}

/// Re-reads the config file on every SIGHUP and applies it.
#[cfg(unix)]
async fn reload_on_sighup(path: std::path::PathBuf, base: Config, handle: ServerHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; --config will not be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        match ConfigFile::load(&path) {
            Ok(file) => handle.reconfigure(&file.overlay(&base)),
            Err(e) => tracing::error!("config not reloaded, keeping the running settings: {e}"),
        }
    }
}

/// Runs the server as the flags say.
pub async fn main(args: Args) -> anyhow::Result<()> {
    let base = config(&args)?;
    let config = match &args.config {
        Some(path) => ConfigFile::load(path)
            .map_err(|e| anyhow::anyhow!("bad --config: {e}"))?
            .overlay(&base),
        None => base.clone(),
    };
    let addr = parse_port(&args.port)?;
    let listener = bind(addr)?;
    let server = Server::open(config)?;
    #[cfg(unix)]
    if let Some(path) = args.config.clone() {
        tokio::spawn(reload_on_sighup(path, base, server.handle()));
    }
    server.serve(listener, shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forms() {
        let p = |s| parse_port(s).expect(s);
        assert_eq!(p("4000"), "[::]:4000".parse().expect("addr"));
        assert_eq!(p("127.0.0.1:4001"), "127.0.0.1:4001".parse().expect("addr"));
        assert_eq!(
            p("tcp:4000:interface=\\:\\:"),
            "[::]:4000".parse().expect("addr")
        );
        assert_eq!(
            p("tcp:4002:interface=127.0.0.1"),
            "127.0.0.1:4002".parse().expect("addr")
        );
        assert_eq!(
            p("tcp:port=4003:interface=127.0.0.1"),
            "127.0.0.1:4003".parse().expect("addr")
        );
        assert_eq!(p("tcp:4004"), "[::]:4004".parse().expect("addr"));
        assert!(parse_port("ssl:4000").is_err());
        assert!(parse_port("tcp:abc").is_err());
    }

    #[test]
    fn websocket_options() {
        let mut c = Config::default();
        apply_websocket_options(&mut c, &["autoPingInterval=5".into()]).expect("ok");
        assert_eq!(c.ping_interval, Duration::from_secs(5));
        assert_eq!(
            apply_websocket_options(&mut c, &["nokey".into()])
                .unwrap_err()
                .to_string(),
            "format options as OPTION=VALUE"
        );
        assert_eq!(
            apply_websocket_options(&mut c, &["foo=bar".into()])
                .unwrap_err()
                .to_string(),
            "could not parse JSON value for foo"
        );
    }
}
