//! `bench`: a load generator for any Magic Wormhole mailbox server.
//!
//! Three modes, each bounded in count and time:
//!
//! * `pairs`: the flow of two real clients: two connections, welcome,
//!   bind, `allocate` + `claim` on one side and `claim` on the other,
//!   `open`, N rounds in which both sides `add` a body and wait for the
//!   peer's copy, `release`, `close`, disconnect. Reports pairs/s and the
//!   latency of a message round (both `add`s sent until both peers' copies
//!   arrived).
//! * `idle`: N connections bound and held, then each checked alive with a
//!   `ping`. With `--server-pid`, the server's RSS before and after opening
//!   them gives its memory per idle connection.
//! * `churn`: connect, welcome, bind (wait for the `ack`), close. Reports
//!   connections/s.
//!
//! The client is raw `tokio-tungstenite` on a current-thread runtime (or a
//! small multi-thread one, `--threads`), one task per pair or connection,
//! frames parsed into a borrowed struct: no transcript, no per-frame
//! channel. The generator measures its own CPU use (`getrusage`), so a
//! saturated generator shows in the report; with `--server-pid` it samples
//! the server's CPU seconds and RSS from `/proc`.

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::conn::Endpoint;

type Ws = WebSocketStream<TcpStream>;

/// What load to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Complete wormhole pairs (allocate, claim, open, rounds of add, close).
    Pairs,
    /// Bound connections held open, then checked alive with `ping`.
    Idle,
    /// Connections opened, bound and closed.
    Churn,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Pairs => "pairs",
            Mode::Idle => "idle",
            Mode::Churn => "churn",
        }
    }
}

/// The `bench` subcommand's options.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// pairs, idle or churn.
    #[arg(value_enum)]
    pub mode: Mode,
    /// The server's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:4000/v1")]
    pub url: String,
    /// Pairs (or connections, for churn and while opening idle ones) in
    /// flight at once.
    #[arg(long, short = 'c', default_value_t = 10)]
    pub concurrency: usize,
    /// Message rounds per pair.
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    /// Length of each `add`'s `body` string, in bytes (hex digits).
    #[arg(long, default_value_t = 64)]
    pub body_size: usize,
    /// Stop starting new work after this many seconds (pairs, churn: default
    /// 10 when --count is not given; idle: limits the opening phase).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Pairs (pairs), connections (churn) or connections held (idle,
    /// default 1000) to complete.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Idle: seconds to hold the connections before checking them.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub hold: f64,
    /// Longest wait for one step (connect, an answer, a peer's message).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub step_timeout_ms: u64,
    /// The server's process id: sample its CPU seconds and RSS from /proc.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// The app id the clients bind to.
    #[arg(long, default_value = "lothar.com/wormhole/bench")]
    pub appid: String,
    /// Generator threads: 1 is a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print one JSON line on stdout (the human summary goes to stderr).
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// Options with the defaults the CLI uses, for `mode` against `url`.
    pub fn new(mode: Mode, url: &str) -> BenchArgs {
        BenchArgs {
            mode,
            url: url.to_owned(),
            concurrency: 10,
            rounds: 4,
            body_size: 64,
            duration: None,
            count: None,
            hold: 2.0,
            step_timeout_ms: 10_000,
            server_pid: None,
            appid: "lothar.com/wormhole/bench".to_owned(),
            threads: 1,
            json: false,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of nanosecond samples.
    pub fn of(mut samples: Vec<u64>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let at = |p: f64| {
            let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
            samples[rank - 1] as f64 / 1e6
        };
        Percentiles {
            n,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples[n - 1] as f64 / 1e6,
        }
    }
}

/// The server process as seen from `/proc`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ServerUsage {
    pub pid: u32,
    /// utime + stime spent during the measurement.
    pub cpu_s: f64,
    /// The part of `cpu_s` spent in the kernel (stime): for a mailbox
    /// server mostly loopback TCP, which no server code can make cheaper,
    /// so it says how much of `cpu_s` a faster server could still save.
    pub cpu_system_s: f64,
    /// `cpu_s` per completed pair (pairs) or connection (churn, idle).
    pub cpu_ms_per_unit: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub rss_peak_kib: u64,
    /// Idle: (RSS with the connections open − RSS before) / connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_conn_kib: Option<f64>,
}

/// The generator's own CPU use.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GeneratorUsage {
    pub threads: usize,
    /// User + system CPU seconds of this process.
    pub cpu_s: f64,
    /// `cpu_s` / wall time: near `threads` means the generator was the
    /// bottleneck.
    pub cpu_per_wall: f64,
    pub saturated: bool,
}

/// Everything one run measured; [`Report::to_json`] is the `--json` line.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub mode: Mode,
    pub url: String,
    pub concurrency: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_size: Option<usize>,
    /// Wall time of the measured phase, seconds.
    pub elapsed_s: f64,
    /// Pairs (pairs), connections closed (churn) or connections opened and
    /// bound (idle) without error.
    pub completed: u64,
    /// `completed` / `elapsed_s`.
    pub rate: f64,
    /// "pairs/s" or "connections/s".
    pub unit: &'static str,
    /// Pairs: one message round; idle: the `ping` check.
    pub round_ms: Percentiles,
    /// TCP connect until the welcome arrived.
    pub connect_ms: Percentiles,
    /// Failures by kind (connect, handshake, timeout, closed, server-error,
    /// protocol, send, missing-ack).
    pub errors: BTreeMap<String, u64>,
    pub error_total: u64,
    /// One example message per error kind.
    pub error_examples: BTreeMap<String, String>,
    /// Idle: connections that answered the `ping` check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alive: Option<u64>,
    pub generator: GeneratorUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerUsage>,
}

impl Report {
    /// The report as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A short human summary.
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} against {} (concurrency {}): {} completed in {:.2} s = {:.1} {}",
            self.mode.as_str(),
            self.url,
            self.concurrency,
            self.completed,
            self.elapsed_s,
            self.rate,
            self.unit
        );
        let pct = |name: &str, p: &Percentiles, s: &mut String| {
            if p.n > 0 {
                let _ = writeln!(
                    s,
                    "  {name:<13} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({} samples)",
                    p.p50, p.p90, p.p99, p.max, p.n
                );
            }
        };
        let round_name = if self.mode == Mode::Idle {
            "ping check"
        } else {
            "message round"
        };
        pct(round_name, &self.round_ms, &mut s);
        pct("connect", &self.connect_ms, &mut s);
        if let Some(alive) = self.alive {
            let _ = writeln!(s, "  alive after hold: {alive}/{}", self.completed);
        }
        if self.error_total == 0 {
            let _ = writeln!(s, "  errors: none");
        } else {
            let _ = writeln!(s, "  errors: {}", self.error_total);
            for (kind, n) in &self.errors {
                let example = self.error_examples.get(kind).map_or("", String::as_str);
                let _ = writeln!(s, "    {kind}: {n} (e.g. {example})");
            }
        }
        let g = &self.generator;
        let _ = writeln!(
            s,
            "  generator: {:.2} CPU s on {} thread(s), {:.0}% of one core{}",
            g.cpu_s,
            g.threads,
            g.cpu_per_wall * 100.0,
            if g.saturated {
                "  (SATURATED: the figures may be the generator's limit)"
            } else {
                ""
            }
        );
        if let Some(sv) = &self.server {
            let _ = writeln!(
                s,
                "  server pid {}: {:.2} CPU s ({:.3} ms per {}, {:.0}% in the kernel), RSS {} -> {} KiB (peak {} KiB)",
                sv.pid,
                sv.cpu_s,
                sv.cpu_ms_per_unit,
                if self.mode == Mode::Pairs {
                    "pair"
                } else {
                    "connection"
                },
                if sv.cpu_s > 0.0 {
                    100.0 * sv.cpu_system_s / sv.cpu_s
                } else {
                    0.0
                },
                sv.rss_before_kib,
                sv.rss_after_kib,
                sv.rss_peak_kib
            );
            if let Some(per) = sv.rss_per_conn_kib {
                let _ = writeln!(s, "  server RSS per idle connection: {per:.2} KiB");
            }
        }
        s
    }
}

// ------------------------------------------------------------------ errors

/// One failed pair or connection.
#[derive(Debug)]
struct Failure {
    kind: &'static str,
    detail: String,
}

fn fail(kind: &'static str, detail: impl Into<String>) -> Failure {
    Failure {
        kind,
        detail: detail.into(),
    }
}

/// Results one worker collected; merged at the end.
#[derive(Default)]
struct Tally {
    completed: u64,
    rounds: Vec<u64>,
    connects: Vec<u64>,
    errors: BTreeMap<&'static str, u64>,
    examples: BTreeMap<&'static str, String>,
}

impl Tally {
    fn failed(&mut self, f: Failure) {
        *self.errors.entry(f.kind).or_default() += 1;
        self.examples.entry(f.kind).or_insert(f.detail);
    }

    fn merge(&mut self, other: Tally) {
        self.completed += other.completed;
        self.rounds.extend(other.rounds);
        self.connects.extend(other.connects);
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for (k, e) in other.examples {
            self.examples.entry(k).or_insert(e);
        }
    }
}

// ------------------------------------------------------------------ /proc

/// CPU seconds a process has used, from `/proc/PID/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcCpu {
    /// utime: in the process's own code.
    pub user: f64,
    /// stime: in the kernel on its behalf (system calls, and on loopback
    /// the TCP work of delivering what it sends).
    pub system: f64,
}

impl ProcCpu {
    pub fn total(&self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Sub for ProcCpu {
    type Output = ProcCpu;
    fn sub(self, earlier: ProcCpu) -> ProcCpu {
        ProcCpu {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// CPU seconds (utime, stime) of a process from `/proc/PID/stat`.
pub fn proc_cpu_seconds(pid: u32) -> Option<ProcCpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may hold spaces: fields start after the last ')'
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3); utime is field 14, stime field 15
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tick = if tick > 0 { tick as f64 } else { 100.0 };
    Some(ProcCpu {
        user: utime / tick,
        system: stime / tick,
    })
}

/// Resident set size of a process in KiB (`VmRSS` of `/proc/PID/status`).
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft open-file limit to the hard limit; returns the new soft
/// limit.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur as u64;
            }
        }
        lim.rlim_cur as u64
    }
}

/// Samples the server's RSS every 100 ms to find the peak.
struct Sampler {
    pid: u32,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let peak = Arc::new(AtomicU64::new(proc_rss_kib(pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = proc_rss_kib(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Sampler { pid, peak, stop }
    }

    fn peak(&self) -> u64 {
        if let Some(rss) = proc_rss_kib(self.pid) {
            self.peak.fetch_max(rss, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------ client

/// The fields of a server frame the generator looks at, borrowed from the
/// frame text (the values it checks never contain escapes).
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    side: Option<&'a str>,
    #[serde(default)]
    phase: Option<&'a str>,
    #[serde(default)]
    nameplate: Option<&'a str>,
    #[serde(default)]
    mailbox: Option<&'a str>,
    #[serde(default)]
    pong: Option<u64>,
}

/// The text of an `error` frame (or a description of an unparsable frame).
fn describe_frame(text: &str) -> (&'static str, String) {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v.get("type").and_then(Value::as_str) == Some("error") => (
            "server-error",
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("(no text)")
                .to_owned(),
        ),
        Ok(_) => ("protocol", format!("unexpected frame {text:.200}")),
        Err(e) => ("protocol", format!("frame is not JSON ({e}): {text:.200}")),
    }
}

/// Everything every connection shares.
struct Ctx {
    addr: SocketAddr,
    url: String,
    appid: String,
    step: Duration,
    config: WebSocketConfig,
    body: String,
    rounds: u32,
}

/// One client connection with its side and counters.
struct Client {
    ws: Ws,
    side: String,
    /// Messages sent, each with an `id`, so each owes an `ack`.
    sent: u32,
    acks: u32,
}

fn new_side() -> String {
    format!("{:010x}", rand::random::<u64>() & 0xff_ffff_ffff)
}

/// What `Client::wait` is waiting for.
enum Want<'a> {
    /// A frame of this type.
    Kind(&'static str),
    /// The peer's `message` of this phase.
    PeerMessage(&'a str),
    /// A `pong` with this value.
    Pong(u64),
    /// Every `ack` owed so far.
    Acks,
}

/// What a matching frame carried.
#[derive(Default)]
struct Got {
    nameplate: Option<String>,
    mailbox: Option<String>,
}

impl Client {
    /// TCP connect, WebSocket handshake and welcome, within the step timeout.
    async fn connect(ctx: &Ctx) -> Result<(Client, u64), Failure> {
        let start = Instant::now();
        let fut = async {
            let tcp = TcpStream::connect(ctx.addr)
                .await
                .map_err(|e| fail("connect", format!("TCP connect to {}: {e}", ctx.addr)))?;
            let _ = tcp.set_nodelay(true);
            let req = ctx
                .url
                .as_str()
                .into_client_request()
                .map_err(|e| fail("handshake", e.to_string()))?;
            let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(ctx.config))
                .await
                .map_err(|e| fail("handshake", e.to_string()))?;
            let mut c = Client {
                ws,
                side: new_side(),
                sent: 0,
                acks: 0,
            };
            c.wait_inner(&Want::Kind("welcome")).await?;
            Ok(c)
        };
        let c = tokio::time::timeout(ctx.step, fut)
            .await
            .map_err(|_| fail("timeout", "connect (handshake and welcome)"))??;
        Ok((c, start.elapsed().as_nanos() as u64))
    }

    /// Queues a message (with a fresh `id`) without flushing.
    async fn feed(&mut self, mut text: String) -> Result<(), Failure> {
        self.sent += 1;
        // every message is an object ending in '}': add the id before it
        text.pop();
        text.push_str(&format!(",\"id\":\"{:x}\"}}", self.sent));
        self.ws
            .feed(Message::text(text))
            .await
            .map_err(|e| fail("send", e.to_string()))
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        self.ws
            .flush()
            .await
            .map_err(|e| fail("send", e.to_string()))
    }

    async fn send(&mut self, text: String) -> Result<(), Failure> {
        self.feed(text).await?;
        self.flush().await
    }

    /// Reads frames until `want` is met, within the step timeout.
    async fn wait(&mut self, want: Want<'_>, step: Duration) -> Result<Got, Failure> {
        tokio::time::timeout(step, self.wait_inner(&want))
            .await
            .map_err(|_| {
                let what = match want {
                    Want::Kind(k) => format!("waiting for {k}"),
                    Want::PeerMessage(p) => format!("waiting for the peer's message {p}"),
                    Want::Pong(_) => "waiting for pong".to_owned(),
                    Want::Acks => "waiting for acks".to_owned(),
                };
                fail("timeout", what)
            })?
    }

    async fn wait_inner(&mut self, want: &Want<'_>) -> Result<Got, Failure> {
        if matches!(want, Want::Acks) && self.acks >= self.sent {
            return Ok(Got::default());
        }
        loop {
            let msg = match self.ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(fail("closed", format!("read failed: {e}"))),
                None => return Err(fail("closed", "connection ended")),
            };
            let text = match &msg {
                Message::Text(t) => t.as_str(),
                Message::Binary(b) => std::str::from_utf8(b)
                    .map_err(|_| fail("protocol", "binary frame is not UTF-8"))?,
                Message::Close(f) => {
                    return Err(fail(
                        "closed",
                        format!("server closed the connection: {f:?}"),
                    ))
                }
                _ => continue,
            };
            let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else {
                let (kind, detail) = describe_frame(text);
                return Err(fail(kind, detail));
            };
            match frame.kind {
                "ack" => {
                    self.acks += 1;
                    if matches!(want, Want::Acks) && self.acks >= self.sent {
                        return Ok(Got::default());
                    }
                }
                "error" => {
                    let (kind, detail) = describe_frame(text);
                    return Err(fail(kind, detail));
                }
                "message" => {
                    if let Want::PeerMessage(phase) = want {
                        if frame.side != Some(self.side.as_str()) && frame.phase == Some(*phase) {
                            return Ok(Got::default());
                        }
                    }
                }
                "pong" => {
                    if let Want::Pong(v) = want {
                        if frame.pong == Some(*v) {
                            return Ok(Got::default());
                        }
                    }
                }
                kind => {
                    if let Want::Kind(k) = want {
                        if kind == *k {
                            return Ok(Got {
                                nameplate: frame.nameplate.map(str::to_owned),
                                mailbox: frame.mailbox.map(str::to_owned),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Sends a close frame and waits (step timeout) for the server to end
    /// the connection.
    async fn disconnect(mut self, step: Duration) -> Result<(), Failure> {
        if self.ws.close(None).await.is_err() {
            return Ok(()); // already gone
        }
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        tokio::time::timeout(step, drain)
            .await
            .map_err(|_| fail("timeout", "closing handshake"))
    }

    fn bind_text(&self, appid: &str) -> String {
        json!({"type": "bind", "appid": appid, "side": self.side,
               "client_version": ["bench", env!("CARGO_PKG_VERSION")]})
        .to_string()
    }
}

// ------------------------------------------------------------------ pairs

/// Runs one complete pair, recording connect and round latencies (ns).
async fn one_pair(ctx: &Ctx, tally: &mut Tally) -> Result<(), Failure> {
    let step = ctx.step;
    let (a, b) = tokio::join!(Client::connect(ctx), Client::connect(ctx));
    let (mut a, ta) = a?;
    let (mut b, tb) = b?;
    tally.connects.push(ta);
    tally.connects.push(tb);
    // A: bind + allocate, then claim what it got
    a.feed(a.bind_text(&ctx.appid)).await?;
    a.send(r#"{"type":"allocate"}"#.to_owned()).await?;
    let nameplate = a
        .wait(Want::Kind("allocated"), step)
        .await?
        .nameplate
        .ok_or_else(|| fail("protocol", "allocated without a nameplate"))?;
    let claim = json!({"type": "claim", "nameplate": nameplate}).to_string();
    a.send(claim.clone()).await?;
    // B: bind + claim the same nameplate
    b.feed(b.bind_text(&ctx.appid)).await?;
    b.send(claim).await?;
    let (ga, gb) = tokio::join!(
        a.wait(Want::Kind("claimed"), step),
        b.wait(Want::Kind("claimed"), step)
    );
    let mailbox = ga?
        .mailbox
        .ok_or_else(|| fail("protocol", "claimed without a mailbox"))?;
    if gb?.mailbox.as_deref() != Some(mailbox.as_str()) {
        return Err(fail("protocol", "the two sides got different mailboxes"));
    }
    let open = json!({"type": "open", "mailbox": mailbox}).to_string();
    a.send(open.clone()).await?;
    b.send(open).await?;
    for round in 0..ctx.rounds {
        let phase = round.to_string();
        let add = format!(
            r#"{{"type":"add","phase":"{phase}","body":"{}"}}"#,
            ctx.body
        );
        let start = Instant::now();
        a.send(add.clone()).await?;
        b.send(add).await?;
        let (ra, rb) = tokio::join!(
            a.wait(Want::PeerMessage(&phase), step),
            b.wait(Want::PeerMessage(&phase), step)
        );
        ra?;
        rb?;
        tally.rounds.push(start.elapsed().as_nanos() as u64);
    }
    let release = json!({"type": "release", "nameplate": nameplate}).to_string();
    a.send(release.clone()).await?;
    b.send(release).await?;
    let (ra, rb) = tokio::join!(
        a.wait(Want::Kind("released"), step),
        b.wait(Want::Kind("released"), step)
    );
    ra?;
    rb?;
    let close = json!({"type": "close", "mailbox": mailbox, "mood": "happy"}).to_string();
    a.send(close.clone()).await?;
    b.send(close).await?;
    let (ra, rb) = tokio::join!(
        a.wait(Want::Kind("closed"), step),
        b.wait(Want::Kind("closed"), step)
    );
    ra?;
    rb?;
    // every command is acknowledged before its answer, so all acks are in
    if a.acks != a.sent || b.acks != b.sent {
        return Err(fail(
            "missing-ack",
            format!(
                "acks {}/{} and {}/{} after closed",
                a.acks, a.sent, b.acks, b.sent
            ),
        ));
    }
    let (ra, rb) = tokio::join!(a.disconnect(step), b.disconnect(step));
    ra?;
    rb?;
    Ok(())
}

/// Hands out work: a count budget and a deadline.
struct Budget {
    left: Option<AtomicU64>,
    deadline: Option<Instant>,
}

impl Budget {
    fn new(count: Option<u64>, duration: Option<Duration>) -> Budget {
        Budget {
            left: count.map(AtomicU64::new),
            deadline: duration.map(|d| Instant::now() + d),
        }
    }

    /// True if one more unit may start.
    fn take(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        match &self.left {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

async fn worker<F, Fut>(budget: Arc<Budget>, ctx: Arc<Ctx>, unit: F) -> Tally
where
    F: Fn(Arc<Ctx>, Tally) -> Fut,
    Fut: std::future::Future<Output = (Tally, Result<(), Failure>)>,
{
    let mut tally = Tally::default();
    while budget.take() {
        let (t, r) = unit(ctx.clone(), tally).await;
        tally = t;
        match r {
            Ok(()) => tally.completed += 1,
            Err(f) => {
                tally.failed(f);
                // don't spin on a dead server
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

async fn run_workers<F, Fut>(n: usize, budget: Arc<Budget>, ctx: Arc<Ctx>, unit: F) -> Tally
where
    F: Fn(Arc<Ctx>, Tally) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (Tally, Result<(), Failure>)> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n.max(1) {
        set.spawn(worker(budget.clone(), ctx.clone(), unit.clone()));
    }
    let mut total = Tally::default();
    while let Some(t) = set.join_next().await {
        match t {
            Ok(t) => total.merge(t),
            Err(e) => total.failed(fail("internal", format!("worker failed: {e}"))),
        }
    }
    total
}

// ------------------------------------------------------------------ churn

async fn one_churn(ctx: &Ctx, tally: &mut Tally) -> Result<(), Failure> {
    let (mut c, t) = Client::connect(ctx).await?;
    tally.connects.push(t);
    c.send(c.bind_text(&ctx.appid)).await?;
    c.wait(Want::Acks, ctx.step).await?;
    c.disconnect(ctx.step).await
}

// ------------------------------------------------------------------ idle

async fn open_idle(ctx: &Ctx, tally: &mut Tally) -> Result<Client, Failure> {
    let (mut c, t) = Client::connect(ctx).await?;
    tally.connects.push(t);
    c.send(c.bind_text(&ctx.appid)).await?;
    c.wait(Want::Acks, ctx.step).await?;
    Ok(c)
}

/// Opens up to `n` bound connections, `concurrency` at a time.
async fn open_many(
    ctx: &Arc<Ctx>,
    n: u64,
    concurrency: usize,
    deadline: Option<Instant>,
) -> (Vec<Client>, Tally) {
    let budget = Arc::new(Budget {
        left: Some(AtomicU64::new(n)),
        deadline,
    });
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (budget, ctx) = (budget.clone(), ctx.clone());
        set.spawn(async move {
            let mut tally = Tally::default();
            let mut held = Vec::new();
            while budget.take() {
                match open_idle(&ctx, &mut tally).await {
                    Ok(c) => {
                        tally.completed += 1;
                        held.push(c);
                    }
                    Err(f) => {
                        tally.failed(f);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (held, tally)
        });
    }
    let mut all = Vec::new();
    let mut total = Tally::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((held, t)) => {
                all.extend(held);
                total.merge(t);
            }
            Err(e) => total.failed(fail("internal", format!("opener failed: {e}"))),
        }
    }
    (all, total)
}

/// Pings every held connection (`concurrency` at a time); returns the
/// connections with the ping latency, or the failure.
async fn check_alive(
    clients: Vec<Client>,
    concurrency: usize,
    step: Duration,
) -> Vec<(Client, Result<u64, Failure>)> {
    let queue = Arc::new(std::sync::Mutex::new(
        clients.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let queue = queue.clone();
        set.spawn(async move {
            let mut done = Vec::new();
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some((i, mut c)) = next else { break };
                let start = Instant::now();
                let r = async {
                    c.send(format!(r#"{{"type":"ping","ping":{i}}}"#)).await?;
                    c.wait(Want::Pong(i as u64), step).await?;
                    Ok(start.elapsed().as_nanos() as u64)
                }
                .await;
                done.push((c, r));
            }
            done
        });
    }
    let mut out = Vec::new();
    while let Some(Ok(done)) = set.join_next().await {
        out.extend(done);
    }
    out
}

/// Closes connections, `concurrency` at a time (errors are not counted:
/// the measurement is over).
async fn close_all(clients: Vec<Client>, concurrency: usize, step: Duration) {
    let queue = Arc::new(std::sync::Mutex::new(clients));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let queue = queue.clone();
        set.spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some(c) = next else { break };
                let _ = c.disconnect(step).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}

// ------------------------------------------------------------------ driver

fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let ep = Endpoint::parse(url).map_err(anyhow::Error::msg)?;
    (ep.host.as_str(), ep.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{} does not resolve", ep.host))
}

/// Runs the benchmark `args` describes (inside a Tokio runtime).
pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    let addr = resolve(&args.url)?;
    if args.mode == Mode::Idle {
        raise_nofile_limit();
    }
    let mut config = WebSocketConfig::default();
    // small buffers: thousands of connections in one generator
    config.read_buffer_size = 4096;
    config.write_buffer_size = 0;
    let ctx = Arc::new(Ctx {
        addr,
        url: args.url.clone(),
        appid: args.appid.clone(),
        step: Duration::from_millis(args.step_timeout_ms.max(1)),
        config,
        body: "ab".repeat(args.body_size / 2) + if args.body_size % 2 == 1 { "a" } else { "" },
        rounds: args.rounds,
    });
    let duration = args.duration.map(Duration::from_secs_f64);
    let sampler = args.server_pid.map(Sampler::start);
    let server_cpu0 = args.server_pid.and_then(proc_cpu_seconds);
    let rss0 = args.server_pid.and_then(proc_rss_kib);
    let gen_cpu0 = self_cpu_seconds();
    let start = Instant::now();
    let mut alive = None;
    let mut rss_open = None;
    let (tally, elapsed, server_cpu1) = match args.mode {
        Mode::Pairs | Mode::Churn => {
            let duration = match (args.count, duration) {
                (None, None) => Some(Duration::from_secs(10)),
                (_, d) => d,
            };
            let budget = Arc::new(Budget::new(args.count, duration));
            let tally = if args.mode == Mode::Pairs {
                run_workers(
                    args.concurrency,
                    budget,
                    ctx.clone(),
                    |ctx, mut t| async move {
                        let r = one_pair(&ctx, &mut t).await;
                        (t, r)
                    },
                )
                .await
            } else {
                run_workers(
                    args.concurrency,
                    budget,
                    ctx.clone(),
                    |ctx, mut t| async move {
                        let r = one_churn(&ctx, &mut t).await;
                        (t, r)
                    },
                )
                .await
            };
            let elapsed = start.elapsed();
            (tally, elapsed, args.server_pid.and_then(proc_cpu_seconds))
        }
        Mode::Idle => {
            let n = args.count.unwrap_or(1000);
            let deadline = duration.map(|d| Instant::now() + d);
            let (held, mut tally) = open_many(&ctx, n, args.concurrency, deadline).await;
            let elapsed = start.elapsed();
            let cpu1 = args.server_pid.and_then(proc_cpu_seconds);
            // let the server settle, then measure it with everything open
            tokio::time::sleep(Duration::from_secs_f64(args.hold.max(0.0))).await;
            rss_open = args.server_pid.and_then(proc_rss_kib);
            let checked = check_alive(held, args.concurrency, ctx.step).await;
            let mut ok = 0;
            let mut still = Vec::with_capacity(checked.len());
            for (c, r) in checked {
                match r {
                    Ok(ns) => {
                        ok += 1;
                        tally.rounds.push(ns);
                    }
                    Err(f) => tally.failed(f),
                }
                still.push(c);
            }
            alive = Some(ok);
            close_all(still, args.concurrency, ctx.step).await;
            (tally, elapsed, cpu1)
        }
    };
    let gen_cpu = self_cpu_seconds() - gen_cpu0;
    let wall = start.elapsed().as_secs_f64().max(1e-9);
    let elapsed_s = elapsed.as_secs_f64().max(1e-9);
    let completed = tally.completed;
    let server = args.server_pid.map(|pid| {
        let cpu = match (server_cpu0, server_cpu1) {
            (Some(a), Some(b)) => b - a,
            _ => ProcCpu::default(),
        };
        let cpu_s = cpu.total();
        let rss_before = rss0.unwrap_or(0);
        let rss_after = rss_open.or_else(|| proc_rss_kib(pid)).unwrap_or(0);
        ServerUsage {
            pid,
            cpu_s,
            cpu_system_s: cpu.system,
            cpu_ms_per_unit: if completed > 0 {
                cpu_s * 1e3 / completed as f64
            } else {
                0.0
            },
            rss_before_kib: rss_before,
            rss_after_kib: rss_after,
            rss_peak_kib: sampler.as_ref().map_or(0, Sampler::peak),
            rss_per_conn_kib: (args.mode == Mode::Idle && completed > 0)
                .then(|| (rss_after as f64 - rss_before as f64) / completed as f64),
        }
    });
    drop(sampler);
    let threads = args.threads.max(1);
    let cpu_per_wall = gen_cpu / wall;
    let error_total = tally.errors.values().sum();
    Ok(Report {
        mode: args.mode,
        url: args.url.clone(),
        concurrency: args.concurrency,
        rounds: (args.mode == Mode::Pairs).then_some(args.rounds),
        body_size: (args.mode == Mode::Pairs).then_some(args.body_size),
        elapsed_s,
        completed,
        rate: completed as f64 / elapsed_s,
        unit: if args.mode == Mode::Pairs {
            "pairs/s"
        } else {
            "connections/s"
        },
        round_ms: Percentiles::of(tally.rounds),
        connect_ms: Percentiles::of(tally.connects),
        errors: tally
            .errors
            .iter()
            .map(|(k, n)| ((*k).to_owned(), *n))
            .collect(),
        error_total,
        error_examples: tally
            .examples
            .into_iter()
            .map(|(k, e)| (k.to_owned(), e))
            .collect(),
        alive,
        generator: GeneratorUsage {
            threads,
            cpu_s: gen_cpu,
            cpu_per_wall,
            saturated: cpu_per_wall > 0.9 * threads as f64,
        },
        server,
    })
}

/// The `bench` subcommand: builds its own runtime, runs, prints. Exit
/// status 0 when nothing failed, 1 when some pair or connection failed, 2
/// when the run could not start.
pub fn main(args: BenchArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match rt.block_on(run(&args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        eprint!("{}", report.human());
        println!("{}", report.to_json());
    } else {
        print!("{}", report.human());
    }
    if report.error_total == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let p = Percentiles::of((1..=100).map(|ms| ms * 1_000_000).collect());
        assert_eq!(p.n, 100);
        assert_eq!(p.p50, 50.0);
        assert_eq!(p.p90, 90.0);
        assert_eq!(p.p99, 99.0);
        assert_eq!(p.max, 100.0);
        assert_eq!(Percentiles::of(Vec::new()).n, 0);
    }

    #[test]
    fn proc_sampling_of_self() {
        let pid = std::process::id();
        assert!(proc_rss_kib(pid).is_some_and(|kib| kib > 0));
        let before = proc_cpu_seconds(pid).expect("own /proc stat");
        // spin until the kernel's tick-based accounting shows the work
        // (bounded: a loaded test machine may deschedule us for a while)
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let used = loop {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            let used = proc_cpu_seconds(pid).expect("own /proc stat") - before;
            if used.total() > 0.0 || start.elapsed() > std::time::Duration::from_secs(5) {
                break used;
            }
        };
        std::hint::black_box(x);
        assert!(used.user >= 0.0 && used.system >= 0.0);
        assert!(used.total() > 0.0, "5 s of spinning shows in utime+stime");
    }

    #[test]
    fn human_summary_names_unit_and_kernel_share() {
        let report = Report {
            mode: Mode::Pairs,
            url: "ws://127.0.0.1:1/v1".into(),
            concurrency: 1,
            rounds: Some(4),
            body_size: Some(64),
            elapsed_s: 1.0,
            completed: 100,
            rate: 100.0,
            unit: "pairs/s",
            round_ms: Percentiles::of(vec![1_000_000]),
            connect_ms: Percentiles::of(vec![1_000_000]),
            errors: BTreeMap::new(),
            error_total: 0,
            error_examples: BTreeMap::new(),
            alive: None,
            generator: GeneratorUsage::default(),
            server: Some(ServerUsage {
                pid: 7,
                cpu_s: 0.05,
                cpu_system_s: 0.02,
                cpu_ms_per_unit: 0.5,
                ..ServerUsage::default()
            }),
        };
        let human = report.human();
        assert!(
            human.contains("0.05 CPU s (0.500 ms per pair, 40% in the kernel)"),
            "{human}"
        );
    }

    #[test]
    fn budget_counts_down() {
        let b = Budget::new(Some(2), None);
        assert!(b.take());
        assert!(b.take());
        assert!(!b.take());
        let b = Budget::new(None, Some(Duration::ZERO));
        assert!(!b.take());
    }
}
