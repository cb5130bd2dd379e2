//! Operator metrics (OpenMetrics text via `prometheus-client`) and the
//! health endpoint, served on their own listener (`--metrics HOST:PORT`).

use crate::protocol::{ServerMessage, UsageRecord};
use crate::Shared;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Labels = Vec<(String, String)>;

/// Every metric the server keeps. Counters are updated on the hot path
/// (lock-free atomics); live-state gauges are computed at scrape time.
pub struct Metrics {
    registry: Registry,
    pub connections_current: Gauge,
    pub connections_total: Counter,
    pub messages: Family<Labels, Counter>,
    /// The `messages` counter of each known type, and of any other type,
    /// looked up once: counting a message then costs one atomic add, not a
    /// label allocation and a hash lookup.
    by_type: Vec<(&'static str, Counter)>,
    other_type: Counter,
    pub errors: Family<Labels, Counter>,
    pub results: Family<Labels, Counter>,
    pub limits_hit: Family<Labels, Counter>,
    pub prune_runs: Counter,
    pub prune_removed: Family<Labels, Counter>,
    pub commit_seconds: Histogram,
    pub commit_failures: Counter,
    live_nameplates: Gauge,
    live_mailboxes: Gauge,
    live_messages: Gauge,
    /// False after a commit failed for good, until one succeeds again.
    pub storage_ok: AtomicBool,
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_owned(), v.to_owned())]
}

/// Client message types counted under their own name; any other type
/// counts as "other", so a client can't grow the label set.
const KNOWN_TYPES: [&str; 11] = [
    "ping",
    "bind",
    "list",
    "allocate",
    "claim",
    "release",
    "open",
    "add",
    "close",
    "submit-permission",
    "submit-permissions",
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wormhole_mailbox");
        let m = Metrics {
            connections_current: Gauge::default(),
            connections_total: Counter::default(),
            messages: Family::default(),
            by_type: Vec::new(),
            other_type: Counter::default(),
            errors: Family::default(),
            results: Family::default(),
            limits_hit: Family::default(),
            prune_runs: Counter::default(),
            prune_removed: Family::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            commit_failures: Counter::default(),
            live_nameplates: Gauge::default(),
            live_mailboxes: Gauge::default(),
            live_messages: Gauge::default(),
            storage_ok: AtomicBool::new(true),
            registry: Registry::default(),
        };
        // One line per metric: field, name, help text. The order here is the
        // order of the exposition.
        macro_rules! register {
            ($($field:ident, $name:literal, $help:literal;)*) => {
                $(registry.register($name, $help, m.$field.clone());)*
            };
        }
        register! {
            connections_current, "connections", "Open WebSocket connections";
            connections_total, "connections_accepted", "WebSocket connections accepted";
            messages, "messages_received", "Client messages by type";
            errors, "errors_sent", "Error replies by error string";
            results, "mailbox_results", "Retired mailboxes by result (mood)";
            limits_hit, "limits_hit", "Requests refused by a limit";
            prune_runs, "prune_runs", "Expiry checks run";
            prune_removed, "prune_removed", "Channels removed by expiry";
            commit_seconds, "commit_duration_seconds", "Channel db commit latency";
            commit_failures, "commit_failures", "Channel db commit attempts that failed";
            live_nameplates, "live_nameplates", "Nameplates in use";
            live_mailboxes, "live_mailboxes", "Mailboxes in use";
            live_messages, "live_messages", "Messages stored in live mailboxes";
        }
        let counter = |t: &str| m.messages.get_or_create(&label("type", t)).clone();
        let by_type = KNOWN_TYPES.iter().map(|&t| (t, counter(t))).collect();
        let other_type = counter("other");
        Metrics {
            registry,
            by_type,
            other_type,
            ..m
        }
    }
}

impl Metrics {
    /// Counts a client message by its `type`.
    pub fn count_message(&self, mtype: &str) {
        self.by_type
            .iter()
            .find(|(t, _)| *t == mtype)
            .map_or(&self.other_type, |(_, counter)| counter)
            .inc();
    }

    /// Counts what a client message caused: error replies, retired mailboxes.
    pub fn observe(&self, envelopes: &[crate::protocol::Envelope], usage: &[UsageRecord]) {
        for e in envelopes {
            if let ServerMessage::Error { error, .. } = &e.msg {
                // keep label values bounded: nameplate errors quote the input
                let key = if error.starts_with("nameplate ") {
                    "invalid nameplate"
                } else {
                    error.as_str()
                };
                self.errors.get_or_create(&label("error", key)).inc();
            }
        }
        self.observe_usage(usage);
    }

    /// Counts retired mailboxes by result.
    pub fn observe_usage(&self, usage: &[UsageRecord]) {
        for u in usage {
            if let UsageRecord::Mailbox { result, .. } = u {
                self.results
                    .get_or_create(&label("result", result.as_str()))
                    .inc();
            }
        }
    }

    /// The OpenMetrics text, with live-state gauges refreshed from `shared`.
    pub(crate) fn render(&self, shared: &Shared) -> String {
        if let Ok(locked) = shared.core.lock() {
            let snap = locked.core.counts();
            self.live_nameplates.set(snap.0 as i64);
            self.live_mailboxes.set(snap.1 as i64);
            self.live_messages.set(snap.2 as i64);
            for (name, n) in &locked.core.limit_hits {
                let c = self.limits_hit.get_or_create(&label("limit", name));
                let seen = c.get();
                if *n > seen {
                    c.inc_by(*n - seen);
                }
            }
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Health: storage committing and the core lock usable.
    pub(crate) fn healthy(&self, shared: &Shared) -> bool {
        self.storage_ok.load(Ordering::Relaxed) && shared.core.lock().is_ok()
    }
}

/// Serves `/metrics` and `/health` on `listener` until `stop` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (mut stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
                    .await;
            let Ok(Ok(n)) = read else { return };
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    shared.metrics.render(&shared),
                ),
                "/health" | "/healthz" => {
                    if shared.metrics.healthy(&shared) {
                        (
                            "200 OK",
                            "application/json",
                            "{\"status\": \"ok\"}\n".to_owned(),
                        )
                    } else {
                        (
                            "503 Service Unavailable",
                            "application/json",
                            "{\"status\": \"storage failing\"}\n".to_owned(),
                        )
                    }
                }
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
