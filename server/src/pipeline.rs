//! The commit pipeline: one writer thread takes the core's effects in the
//! order the core produced them, commits the mutations of everything queued
//! in one transaction (group commit), then routes the frames. So an `ack`
//! (and every frame a command causes) is written only after its mutation is
//! durable, and per-connection order equals processing order.

use crate::protocol::{ConnId, Effects, ServerMessage, Snapshot};
use crate::store::{Store, StoreError, UsageDb};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

/// Waits between attempts at a failed commit: transient faults (a locked
/// database, a briefly full disk) heal without a client noticing.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_secs(1),
];

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;

/// What a connection task must do next.
#[derive(Debug)]
pub enum Outbound {
    /// Write this message (boxed: queue slots stay small for idle clients).
    Message(Box<ServerMessage>),
    /// Close the WebSocket with this code and reason (storage failure).
    /// A reference, so a queue slot stays two words.
    Close(&'static (u16, &'static str)),
}

/// The connections frames can be routed to. Each queue is bounded: a
/// client that doesn't read is disconnected instead of growing memory.
pub type Routes = Mutex<HashMap<ConnId, Sender<Outbound>>>;

/// Called with the stored state after a commit finally failed, so the core
/// forgets the changes that never reached the disk.
pub type Resync = Arc<OnceLock<Box<dyn Fn(Snapshot) + Send + Sync>>>;

/// Everything the writer thread owns or shares.
pub struct Writer {
    pub store: Box<dyn Store>,
    pub usage: Option<UsageDb>,
    pub routes: Arc<Routes>,
    pub stats: Arc<PipelineStats>,
    pub resync: Resync,
    /// Fault injection for tests: this many upcoming commits fail.
    pub fail_commits: Arc<AtomicU32>,
    /// Commit latency, failures and storage health.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// One unit of work for the writer.
#[derive(Debug, Default)]
pub struct Job {
    /// The connection whose command caused it (None: pruning).
    pub origin: Option<ConnId>,
    pub effects: Effects,
    /// Rewrite the usage DB `current` row: (rebooted, now, listening).
    pub current: Option<(f64, f64, usize)>,
}

/// Counters the writer keeps, for tests, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub commits: std::sync::atomic::AtomicU64,
    pub jobs: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
    /// Connections dropped because their outbound queue was full.
    pub slow_clients: std::sync::atomic::AtomicU64,
}

/// Starts the writer thread; it ends when every sender is dropped, after
/// committing what was queued.
pub fn spawn_writer(mut w: Writer) -> std::io::Result<(mpsc::Sender<Job>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Job>();
    let handle = std::thread::Builder::new()
        .name("mailbox-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                commit_batch(&mut w, batch);
            }
            tracing::debug!("writer drained and stopped");
        })?;
    Ok((tx, handle))
}

impl Writer {
    fn try_apply(&mut self, mutations: &[crate::protocol::Mutation]) -> Result<(), StoreError> {
        let injected = self
            .fail_commits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            return Err(StoreError::Injected("commit".into()));
        }
        let start = std::time::Instant::now();
        let result = self.store.apply(mutations);
        self.metrics
            .commit_seconds
            .observe(start.elapsed().as_secs_f64());
        result
    }

    /// Applies with retries; false when every attempt failed.
    fn apply_with_retries(&mut self, mutations: &[crate::protocol::Mutation]) -> bool {
        let mut attempt = 0;
        loop {
            match self.try_apply(mutations) {
                Ok(()) => {
                    self.metrics.storage_ok.store(true, Ordering::Relaxed);
                    return true;
                }
                Err(e) => {
                    self.metrics.commit_failures.inc();
                    self.stats
                        .failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(delay) = RETRY_DELAYS.get(attempt) else {
                        self.metrics.storage_ok.store(false, Ordering::Relaxed);
                        tracing::error!(error = %e, "channel db commit failed; giving up on this batch");
                        return false;
                    };
                    tracing::warn!(error = %e, attempt, "channel db commit failed; retrying");
                    std::thread::sleep(*delay);
                    attempt += 1;
                }
            }
        }
    }
}

fn commit_batch(w: &mut Writer, mut batch: Vec<Job>) {
    use std::sync::atomic::Ordering::Relaxed;
    let wrote: Vec<bool> = batch
        .iter()
        .map(|j| !j.effects.mutations.is_empty())
        .collect();
    let mutations: Vec<_> = batch
        .iter_mut()
        .flat_map(|j| std::mem::take(&mut j.effects.mutations))
        .collect();
    w.stats.jobs.fetch_add(batch.len() as u64, Relaxed);
    let ok = mutations.is_empty() || w.apply_with_retries(&mutations);
    if ok && !mutations.is_empty() {
        w.stats.commits.fetch_add(1, Relaxed);
    }
    if !ok {
        // memory ran ahead of the disk: go back to what is stored
        match w.store.load() {
            Ok(snapshot) => {
                if let Some(resync) = w.resync.get() {
                    resync(snapshot);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot reload the channel db"),
        }
    }
    if let Some(usage) = w.usage.as_mut() {
        let rows: Vec<_> = batch
            .iter_mut()
            .flat_map(|j| std::mem::take(&mut j.effects.usage))
            .collect();
        if let Err(e) = usage.record(&rows) {
            tracing::warn!(error = %e, "usage db write failed");
        }
        for (rebooted, now, listening) in batch.iter().filter_map(|j| j.current) {
            if let Err(e) = usage.write_current(rebooted, now, listening) {
                tracing::warn!(error = %e, "usage db write failed");
            }
        }
    }
    let Ok(mut routes) = w.routes.lock() else {
        return;
    };
    let mut slow = Vec::new();
    for (job, wrote) in batch.into_iter().zip(wrote) {
        if !ok && wrote {
            // Nothing of this batch is durable: don't acknowledge it. The
            // commands that caused writes get their connection closed (the
            // client reconnects and resumes); the others are answered.
            if let Some(origin) = job.origin {
                if let Some(tx) = routes.get(&origin) {
                    if tx
                        .try_send(Outbound::Close(&(1011, "storage error")))
                        .is_err()
                    {
                        slow.push(origin);
                    }
                }
            }
            continue;
        }
        for env in job.effects.envelopes {
            if let Some(tx) = routes.get(&env.to) {
                if let Err(TrySendError::Full(_)) =
                    tx.try_send(Outbound::Message(Box::new(env.msg)))
                {
                    slow.push(env.to);
                }
            }
        }
    }
    for conn in slow {
        if routes.remove(&conn).is_some() {
            w.stats.slow_clients.fetch_add(1, Relaxed);
            tracing::warn!(conn, "client not reading; disconnecting it");
        }
    }
}
