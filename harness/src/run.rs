//! Running one vector: executes its steps against a server URL with fresh
//! variables, records the transcript, and produces a verdict with a reason
//! and a readable diff on failure.

use crate::conn::{Connection, Endpoint, Incoming, Received};
use crate::json::{short, to_hex};
use crate::pattern::{Mismatch, Pattern};
use crate::target::Running;
use crate::transcript::{normalize, Entry, Event, Frame};
use crate::vars::Variables;
use crate::vector::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The verdict of one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every step held.
    Pass,
    /// A step failed (or the server could not be launched).
    Fail,
    /// The target cannot run it (missing capability); never a pass.
    Skip,
}

impl Outcome {
    /// `pass`, `fail` or `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
        }
    }
}

/// Settings for running vectors.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// How long one step may wait (a frame, a handshake, a close).
    pub step_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            step_timeout: Duration::from_secs(5),
        }
    }
}

/// The result of running one vector.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Vector id.
    pub id: String,
    /// Vector class.
    pub class: Class,
    /// Verdict.
    pub outcome: Outcome,
    /// One line: why it failed or was skipped.
    pub reason: Option<String>,
    /// Several lines on failure: the step, the expected pattern and the
    /// actual frame.
    pub diff: Option<String>,
    /// The failing step's index.
    pub failed_step: Option<usize>,
    /// Every frame in and out, per connection, in order.
    pub transcript: Vec<Entry>,
    /// The run's variables (fresh values and captures), for normalising.
    pub variables: Variables,
    /// Wall time.
    pub duration: Duration,
}

impl RunResult {
    /// A result for a vector the target cannot run.
    pub fn skipped(vector: &Vector, reason: impl Into<String>) -> Self {
        RunResult {
            id: vector.id.clone(),
            class: vector.class,
            outcome: Outcome::Skip,
            reason: Some(reason.into()),
            diff: None,
            failed_step: None,
            transcript: Vec::new(),
            variables: Variables::default(),
            duration: Duration::ZERO,
        }
    }

    /// A failure before any step ran (e.g. the server did not start).
    pub fn error(vector: &Vector, reason: impl Into<String>) -> Self {
        RunResult {
            outcome: Outcome::Fail,
            ..RunResult::skipped(vector, reason)
        }
    }

    /// The transcript with random values replaced by stable aliases (for
    /// snapshots).
    pub fn normalized_transcript(&self) -> String {
        normalize(&self.transcript, &self.variables)
    }

    /// The transcript with real values, one line per event.
    pub fn transcript_text(&self) -> String {
        self.transcript
            .iter()
            .map(|e| e.describe() + "\n")
            .collect()
    }

    /// The `--json` report entry.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "class": self.class,
            "outcome": self.outcome,
            "reason": self.reason,
            "diff": self.diff,
            "failed_step": self.failed_step,
            "duration_ms": self.duration.as_millis() as u64,
            "transcript": self.transcript.iter().map(Entry::to_json).collect::<Vec<_>>(),
        })
    }
}

/// The server a run talks to: a fixed URL, or a launched server it may
/// restart.
pub enum ServerRef<'a> {
    /// A server shared with other vectors (or not launched by us).
    Url(String),
    /// A server launched for this vector alone.
    Own(&'a mut dyn Running),
}

struct StepFailure {
    reason: String,
    diff: Option<String>,
}

impl StepFailure {
    fn new(reason: impl Into<String>) -> Self {
        StepFailure {
            reason: reason.into(),
            diff: None,
        }
    }
}

struct Runner<'a> {
    server: ServerRef<'a>,
    url: String,
    timeout: Duration,
    vars: Variables,
    conns: BTreeMap<String, Connection>,
    transcript: Vec<Entry>,
    start: Instant,
    step: Option<usize>,
    pings: u64,
}

/// Runs a vector against a server. Never panics on network input; every
/// problem becomes a `fail` with a reason.
pub async fn run_vector(vector: &Vector, server: ServerRef<'_>, options: &RunOptions) -> RunResult {
    let start = Instant::now();
    let url = match &server {
        ServerRef::Url(u) => u.clone(),
        ServerRef::Own(r) => r.url(),
    };
    let mut runner = Runner {
        server,
        url,
        timeout: options.step_timeout,
        vars: Variables::fresh(&vector.appid_names, &vector.side_names),
        conns: BTreeMap::new(),
        transcript: Vec::new(),
        start,
        step: None,
        pings: 0,
    };
    let mut failure = None;
    for step in &vector.steps {
        runner.step = Some(step.index);
        if let Err(f) = runner.step(step).await {
            failure = Some((step, f));
            break;
        }
    }
    runner.step = None;
    runner.finish().await;
    let (outcome, reason, diff, failed_step) = match failure {
        None => (Outcome::Pass, None, None, None),
        Some((step, f)) => {
            let head = format!("step {} {}", step.index, short(&step.source, 160));
            let diff = match f.diff {
                Some(d) => format!("{head}\n{d}"),
                None => format!("{head}\n  {}", f.reason),
            };
            (
                Outcome::Fail,
                Some(format!("step {}: {}", step.index, f.reason)),
                Some(diff),
                Some(step.index),
            )
        }
    };
    RunResult {
        id: vector.id.clone(),
        class: vector.class,
        outcome,
        reason,
        diff,
        failed_step,
        transcript: runner.transcript,
        variables: runner.vars,
        duration: start.elapsed(),
    }
}

fn describe_incoming(r: &Incoming) -> String {
    match r {
        Incoming::Frame(Frame::Text(t)) => match serde_json::from_str::<Value>(t) {
            Ok(v) => short(&v, 300),
            Err(_) => format!(
                "non-JSON text frame {}",
                short(&Value::String(t.clone()), 200)
            ),
        },
        Incoming::Frame(Frame::Binary(b)) => format!("binary frame {}", to_hex(b)),
        Incoming::Closed(d) => format!("connection closed ({d})"),
    }
}

fn prefix(what: &str) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!("{what}: ")
    }
}

fn mismatch_diff(
    pattern: &Pattern,
    vars: &Variables,
    actual: &Incoming,
    m: Option<&Mismatch>,
) -> String {
    let mut d = format!(
        "  expected: {}\n  actual:   {}",
        short(pattern.source(), 300),
        describe_incoming(actual)
    );
    if let Some(m) = m {
        d.push_str(&format!("\n  mismatch: {m}"));
    }
    let used: Vec<String> = pattern
        .references()
        .iter()
        .filter_map(|r| vars.get(r).map(|v| format!("{r} = {}", short(&v, 80))))
        .collect();
    if !used.is_empty() {
        d.push_str(&format!("\n  where:    {}", used.join(", ")));
    }
    d
}

impl Runner<'_> {
    fn now_ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64() * 1000.0
    }

    fn record(&mut self, conn: Option<&str>, event: Event) {
        let t_ms = self.now_ms(Instant::now());
        self.transcript.push(Entry {
            t_ms,
            step: self.step,
            conn: conn.map(str::to_owned),
            event,
        });
    }

    fn record_received(&mut self, conn: &str, r: &Received, consumed: bool) {
        let event = match &r.what {
            Incoming::Frame(f) => Event::Recv {
                frame: f.clone(),
                consumed,
            },
            Incoming::Closed(d) => Event::Closed {
                detail: d.clone(),
                consumed,
            },
        };
        self.transcript.push(Entry {
            t_ms: self.now_ms(r.at),
            step: self.step,
            conn: Some(conn.to_owned()),
            event,
        });
    }

    fn conn_mut(&mut self, name: &str) -> Result<&mut Connection, StepFailure> {
        self.conns
            .get_mut(name)
            .ok_or_else(|| StepFailure::new(format!("connection {name:?} is not open")))
    }

    /// Reads the next event on `conn`, recording it as consumed.
    async fn next_event(
        &mut self,
        conn: &str,
        timeout: Duration,
        waiting_for: &str,
    ) -> Result<Incoming, StepFailure> {
        let c = self.conn_mut(conn)?;
        match c.next(timeout).await {
            Some((r, first)) => {
                if first {
                    self.record_received(conn, &r, true);
                }
                Ok(r.what)
            }
            None => Err(StepFailure {
                reason: format!(
                    "timed out after {} ms on {conn:?} waiting for {waiting_for}",
                    timeout.as_millis()
                ),
                diff: Some(format!(
                    "  expected: {waiting_for}\n  actual:   nothing within {} ms",
                    timeout.as_millis()
                )),
            }),
        }
    }

    async fn expect_pattern(
        &mut self,
        conn: &str,
        pattern: &Pattern,
        timeout: Duration,
        what: &str,
    ) -> Result<(), StepFailure> {
        let waiting = short(pattern.source(), 200);
        let got = self.next_event(conn, timeout, &waiting).await?;
        let result = match &got {
            Incoming::Frame(Frame::Text(t)) => match serde_json::from_str::<Value>(t) {
                Ok(v) => pattern.matches(Some(&v), &self.vars),
                Err(_) => {
                    return Err(StepFailure {
                        reason: format!(
                            "{}expected a JSON text frame, got {}",
                            prefix(what),
                            describe_incoming(&got)
                        ),
                        diff: Some(mismatch_diff(pattern, &self.vars, &got, None)),
                    })
                }
            },
            other => {
                return Err(StepFailure {
                    reason: format!(
                        "{}expected a JSON text frame, got {}",
                        prefix(what),
                        describe_incoming(other)
                    ),
                    diff: Some(mismatch_diff(pattern, &self.vars, other, None)),
                })
            }
        };
        match result {
            Ok(caps) => {
                self.vars.bind(caps);
                Ok(())
            }
            Err(m) => Err(StepFailure {
                reason: format!("{}{m}", prefix(what)),
                diff: Some(mismatch_diff(pattern, &self.vars, &got, Some(&m))),
            }),
        }
    }

    async fn send_frame(&mut self, conn: &str, frame: Frame) -> Result<(), StepFailure> {
        let msg = match &frame {
            Frame::Text(t) => Message::text(t.clone()),
            Frame::Binary(b) => Message::binary(b.clone()),
        };
        self.record(Some(conn), Event::Send(frame));
        let timeout = self.timeout;
        self.conn_mut(conn)?
            .send(msg, timeout)
            .await
            .map_err(|e| StepFailure::new(format!("on {conn:?}: {e}")))
    }

    fn substitute(&self, v: &Value) -> Result<Value, StepFailure> {
        self.vars.substitute(v).map_err(StepFailure::new)
    }

    /// A send template with generators evaluated (`$hashcash`).
    fn render(&mut self, v: &Value) -> Result<Value, StepFailure> {
        self.vars.render(v).map_err(StepFailure::new)
    }

    fn check_headers(
        &self,
        what: &str,
        expected: &[(String, Pattern)],
        actual: &[(String, String)],
    ) -> Result<BTreeMap<String, Value>, StepFailure> {
        let mut caps = BTreeMap::new();
        for (name, pattern) in expected {
            let lname = name.to_ascii_lowercase();
            let value = actual
                .iter()
                .find(|(k, _)| *k == lname)
                .map(|(_, v)| Value::String(v.clone()));
            match pattern.matches(value.as_ref(), &self.vars) {
                Ok(c) => caps.extend(c),
                Err(m) => {
                    return Err(StepFailure {
                        reason: format!("{what} header {name}: {m}"),
                        diff: Some(format!(
                            "  expected header {name}: {}\n  actual:   {}\n  all headers: {}",
                            short(pattern.source(), 200),
                            value.map_or_else(|| "<missing>".to_owned(), |v| short(&v, 200)),
                            actual
                                .iter()
                                .map(|(k, v)| format!("{k}: {v}"))
                                .collect::<Vec<_>>()
                                .join("; ")
                        )),
                    })
                }
            }
        }
        Ok(caps)
    }

    async fn step(&mut self, step: &Step) -> Result<(), StepFailure> {
        let timeout = self.timeout;
        match &step.action {
            Action::Connect(c) => self.connect(c).await,
            Action::Http(h) => self.http(h).await,
            Action::Send { conn, payload } => {
                let frame = match payload {
                    Payload::Message(m) => Frame::Text(self.render(m)?.to_string()),
                    Payload::Text(t) => Frame::Text(t.clone()),
                    Payload::Binary(b) => Frame::Binary(b.clone()),
                    Payload::BinaryMessage(m) => {
                        Frame::Binary(self.render(m)?.to_string().into_bytes())
                    }
                };
                self.send_frame(conn, frame).await
            }
            Action::Expect {
                conn,
                expectation,
                within_ms,
            } => {
                let t = within_ms.map_or(timeout, Duration::from_millis);
                self.expect(conn, expectation, t).await
            }
            Action::ExpectSilence { conn, ms } => {
                let window = Duration::from_millis(*ms);
                let c = self.conn_mut(conn)?;
                match c.next(window).await {
                    None => Ok(()),
                    Some((r, first)) => {
                        if first {
                            self.record_received(conn, &r, true);
                        }
                        Err(StepFailure {
                            reason: format!(
                                "expected silence on {conn:?} for {ms} ms, got {}",
                                describe_incoming(&r.what)
                            ),
                            diff: Some(format!(
                                "  expected: nothing for {ms} ms\n  actual:   {}",
                                describe_incoming(&r.what)
                            )),
                        })
                    }
                }
            }
            Action::Sync { conn } => {
                self.pings += 1;
                let n = self.pings;
                let ping = json!({"type": "ping", "ping": n});
                self.send_frame(conn, Frame::Text(ping.to_string())).await?;
                let ack = Pattern::literal(json!({"type": "ack"}));
                self.expect_pattern(conn, &ack, timeout, "sync ack").await?;
                let pong = Pattern::literal(json!({"type": "pong", "pong": n}));
                self.expect_pattern(conn, &pong, timeout, "sync pong").await
            }
            Action::Disconnect { conn } => {
                let Some(mut c) = self.conns.remove(conn) else {
                    return Err(StepFailure::new(format!("connection {conn:?} is not open")));
                };
                self.record(Some(conn), Event::Disconnect);
                let (seen, result) = c.close(timeout).await;
                for r in &seen {
                    self.record_received(conn, r, false);
                }
                result.map_err(|e| StepFailure::new(format!("disconnect {conn:?}: {e}")))
            }
            Action::Drop { conn } => {
                let Some(mut c) = self.conns.remove(conn) else {
                    return Err(StepFailure::new(format!("connection {conn:?} is not open")));
                };
                for r in c.drain() {
                    self.record_received(conn, &r, false);
                }
                self.record(Some(conn), Event::Drop);
                c.drop_tcp().await;
                Ok(())
            }
            Action::Sleep { ms } => {
                self.record(None, Event::Sleep(*ms));
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Ok(())
            }
            Action::Restart(kind) => {
                self.record(None, Event::Restart(*kind));
                let ServerRef::Own(server) = &mut self.server else {
                    return Err(StepFailure::new(
                        "restart needs a server launched for this vector",
                    ));
                };
                let limit = Duration::from_secs(120);
                match tokio::time::timeout(limit, server.restart(*kind)).await {
                    Ok(Ok(())) => {
                        self.url = server.url();
                        Ok(())
                    }
                    Ok(Err(e)) => Err(StepFailure::new(format!("restart ({kind}) failed: {e:#}"))),
                    Err(_) => Err(StepFailure::new(format!(
                        "restart ({kind}) took longer than {} s",
                        limit.as_secs()
                    ))),
                }
            }
        }
    }

    async fn connect(&mut self, c: &ConnectStep) -> Result<(), StepFailure> {
        let timeout = self.timeout;
        if let Some(mut old) = self.conns.remove(&c.conn) {
            // The name is reused after the server closed it (or may have).
            let (seen, _) = old.close(Duration::from_millis(500)).await;
            for r in &seen {
                self.record_received(&c.conn, r, false);
            }
        }
        let url = match &c.path {
            Some(p) => {
                let path = self.vars.substitute_str(p).map_err(StepFailure::new)?;
                Endpoint::parse(&self.url)
                    .map_err(StepFailure::new)?
                    .url_with_path(&path)
            }
            None => self.url.clone(),
        };
        let mut headers = Vec::new();
        for (k, v) in &c.headers {
            headers.push((
                k.clone(),
                self.vars.substitute_str(v).map_err(StepFailure::new)?,
            ));
        }
        let opened = match Connection::open(&url, &headers, timeout).await {
            Ok(o) => o,
            Err(e) => {
                self.record(Some(&c.conn), Event::ConnectFailed { error: e.clone() });
                return Err(StepFailure::new(format!("connect {:?}: {e}", c.conn)));
            }
        };
        self.record(Some(&c.conn), Event::Connect { url });
        self.conns.insert(c.conn.clone(), opened.conn);
        let caps = self.check_headers("handshake response", &c.expect_headers, &opened.headers)?;
        self.vars.bind(caps);
        if let Some(side) = &c.bind {
            let welcome = Pattern::literal(json!({"type": "welcome"}));
            self.expect_pattern(&c.conn, &welcome, timeout, "welcome before bind")
                .await?;
            let appid_template =
                Value::String(c.appid.clone().unwrap_or_else(|| "$appid".to_owned()));
            let appid = self.substitute(&appid_template)?;
            let side_value = self.substitute(&Value::String(format!("$side:{side}")))?;
            let bind = json!({"type": "bind", "appid": appid, "side": side_value});
            self.send_frame(&c.conn, Frame::Text(bind.to_string()))
                .await?;
            let ack = Pattern::literal(json!({"type": "ack"}));
            self.expect_pattern(&c.conn, &ack, timeout, "ack of bind")
                .await?;
        }
        Ok(())
    }

    async fn http(&mut self, h: &HttpStep) -> Result<(), StepFailure> {
        let ep = Endpoint::parse(&self.url).map_err(StepFailure::new)?;
        let mut headers = Vec::new();
        for (k, v) in &h.headers {
            headers.push((
                k.clone(),
                self.vars.substitute_str(v).map_err(StepFailure::new)?,
            ));
        }
        let resp = crate::http::request(
            &ep.host,
            ep.port,
            &ep.authority,
            &h.method,
            &h.path,
            &headers,
            self.timeout,
        )
        .await;
        let resp = match resp {
            Ok(r) => {
                self.record(
                    None,
                    Event::Http {
                        method: h.method.clone(),
                        path: h.path.clone(),
                        status: Some(r.status),
                        body: Some(String::from_utf8_lossy(&r.body).into_owned()),
                        error: None,
                    },
                );
                r
            }
            Err(e) => {
                self.record(
                    None,
                    Event::Http {
                        method: h.method.clone(),
                        path: h.path.clone(),
                        status: None,
                        body: None,
                        error: Some(e.clone()),
                    },
                );
                return Err(StepFailure::new(format!(
                    "HTTP {} {}: {e}",
                    h.method, h.path
                )));
            }
        };
        let body = Value::String(String::from_utf8_lossy(&resp.body).into_owned());
        let checks = [
            ("status", h.expect_status.as_ref(), json!(resp.status)),
            ("body", h.expect_body.as_ref(), body),
        ];
        for (what, pattern, actual) in checks {
            if let Some(p) = pattern {
                match p.matches(Some(&actual), &self.vars) {
                    Ok(caps) => self.vars.bind(caps),
                    Err(m) => {
                        return Err(StepFailure {
                            reason: format!("HTTP {what}: {m}"),
                            diff: Some(format!(
                                "  expected {what}: {}\n  actual {what}:   {}",
                                short(p.source(), 300),
                                short(&actual, 300)
                            )),
                        })
                    }
                }
            }
        }
        let caps = self.check_headers("HTTP response", &h.expect_headers, &resp.headers)?;
        self.vars.bind(caps);
        Ok(())
    }

    async fn expect(
        &mut self,
        conn: &str,
        expectation: &Expectation,
        timeout: Duration,
    ) -> Result<(), StepFailure> {
        match expectation {
            Expectation::Message { pattern, count } => {
                for i in 0..*count {
                    let what = if *count > 1 {
                        format!("frame {} of {count}", i + 1)
                    } else {
                        String::new()
                    };
                    self.expect_pattern(conn, pattern, timeout, &what).await?;
                }
                Ok(())
            }
            Expectation::Closed => match self
                .next_event(conn, timeout, "the connection to close")
                .await?
            {
                Incoming::Closed(_) => Ok(()),
                other => Err(StepFailure {
                    reason: format!(
                        "expected the server to close {conn:?}, got {}",
                        describe_incoming(&other)
                    ),
                    diff: Some(format!(
                        "  expected: connection closed\n  actual:   {}",
                        describe_incoming(&other)
                    )),
                }),
            },
            Expectation::AnyOf(alts) => {
                let waiting = alts
                    .iter()
                    .map(|a| match a {
                        Alternative::Message(p) => short(p.source(), 120),
                        Alternative::Closed => "the connection to close".to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(" or ");
                let got = self.next_event(conn, timeout, &waiting).await?;
                let json = match &got {
                    Incoming::Frame(Frame::Text(t)) => serde_json::from_str::<Value>(t).ok(),
                    _ => None,
                };
                let mut lines = Vec::new();
                for (i, alt) in alts.iter().enumerate() {
                    match alt {
                        Alternative::Closed => {
                            if matches!(got, Incoming::Closed(_)) {
                                return Ok(());
                            }
                            lines.push(format!("  alternative {i}: connection closed"));
                        }
                        Alternative::Message(p) => {
                            if let Some(v) = &json {
                                match p.matches(Some(v), &self.vars) {
                                    Ok(caps) => {
                                        self.vars.bind(caps);
                                        return Ok(());
                                    }
                                    Err(m) => lines.push(format!(
                                        "  alternative {i}: {}\n      mismatch: {m}",
                                        short(p.source(), 200)
                                    )),
                                }
                            } else {
                                lines
                                    .push(format!("  alternative {i}: {}", short(p.source(), 200)));
                            }
                        }
                    }
                }
                Err(StepFailure {
                    reason: format!("no alternative matched {}", describe_incoming(&got)),
                    diff: Some(format!(
                        "{}\n  actual:   {}",
                        lines.join("\n"),
                        describe_incoming(&got)
                    )),
                })
            }
        }
    }

    /// Ends the run: records frames nobody read, closes what is still open.
    async fn finish(&mut self) {
        let mut conns = std::mem::take(&mut self.conns);
        for (name, c) in conns.iter_mut() {
            for r in c.drain() {
                self.record_received(name, &r, false);
            }
        }
        let closes = conns.iter_mut().map(|(name, c)| async move {
            let (seen, _) = c.close(Duration::from_millis(500)).await;
            (name.clone(), seen)
        });
        for (name, seen) in futures_util::future::join_all(closes).await {
            for r in &seen {
                self.record_received(&name, r, false);
            }
        }
    }
}
