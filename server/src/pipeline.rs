//! The commit pipeline: one writer (a task beside the connections on a
//! current-thread runtime, else a thread) takes the core's effects in the
//! order the core produced them, commits the mutations of everything queued
//! in one transaction (group commit), then routes the frames. So an `ack`
//! (and every frame a command causes) is written only after its mutation is
//! durable, and per-connection order equals processing order.

use crate::protocol::{ConnId, Effects, ServerMessage, Snapshot};
use crate::store::{Store, StoreError, UsageDb};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

/// Everything the writer owns or shares.
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

/// The queue from the core to the writer: unbounded, because every job is
/// already bounded by what a connection may send (message size, per-mailbox
/// limits) and the writer drains it in batches.
pub type JobSender = tokio::sync::mpsc::UnboundedSender<Job>;
/// The writer's end of the queue.
pub type JobReceiver = tokio::sync::mpsc::UnboundedReceiver<Job>;

/// A new, empty job queue.
pub fn job_queue() -> (JobSender, JobReceiver) {
    tokio::sync::mpsc::unbounded_channel()
}

/// Takes what else is queued behind `first`, up to a batch.
fn drain(first: Job, rx: &mut JobReceiver) -> Vec<Job> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch
}

impl Writer {
    /// The writer as a task of a current-thread runtime: it runs when the
    /// connection tasks that were ready have run, so it commits everything
    /// they queued in one transaction, then routes the frames, all on one
    /// thread: no cross-thread wake-ups or context switches per command.
    /// Before taking a batch it yields once, so the runtime polls its IO
    /// driver and the frames that arrived meanwhile join this batch rather
    /// than needing a commit of their own. The commit blocks the thread
    /// (with `synchronous=NORMAL` a WAL append, tens of microseconds; with
    /// `--power-loss-durable` also an fsync; frames keep arriving in the
    /// kernel's socket buffers and form the next batch); waits between retries
    /// of a failed commit do not. Ends when every sender is dropped, after
    /// committing what was queued.
    pub async fn run_inline(mut self, mut rx: JobReceiver) {
        while let Some(first) = rx.recv().await {
            tokio::task::yield_now().await;
            let mut commit = Commit::new(drain(first, &mut rx));
            let ok = loop {
                match self.attempt(&mut commit) {
                    Attempt::Done(ok) => break ok,
                    Attempt::RetryAfter(delay) => tokio::time::sleep(delay).await,
                }
            };
            self.finish(commit, ok);
        }
        tracing::debug!("writer drained and stopped");
    }

    /// The writer on its own thread (for a multi-thread runtime, whose
    /// workers must not block on commits): the same loop as
    /// [`Writer::run_inline`], on a current-thread runtime of its own, so
    /// the same batches in the same order.
    pub fn spawn_thread(self, rx: JobReceiver) -> std::io::Result<JoinHandle<()>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        std::thread::Builder::new()
            .name("mailbox-writer".into())
            .spawn(move || runtime.block_on(self.run_inline(rx)))
    }
}

/// One batch on its way to the disk.
struct Commit {
    batch: Vec<Job>,
    /// Per job: did it change durable state (and so needs the commit)?
    wrote: Vec<bool>,
    /// Every job's mutations, in order: one transaction.
    mutations: Vec<crate::protocol::Mutation>,
    /// Failed attempts so far.
    failures: usize,
}

/// What a commit attempt left to do.
enum Attempt {
    /// Committed (true), or failed for good (false).
    Done(bool),
    /// Failed; try again after this long.
    RetryAfter(Duration),
}

impl Commit {
    fn new(mut batch: Vec<Job>) -> Commit {
        let wrote = batch
            .iter()
            .map(|j| !j.effects.mutations.is_empty())
            .collect();
        let mutations = batch
            .iter_mut()
            .flat_map(|j| std::mem::take(&mut j.effects.mutations))
            .collect();
        Commit {
            batch,
            wrote,
            mutations,
            failures: 0,
        }
    }
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

    /// One attempt at committing `commit` (nothing to do for a batch
    /// without mutations); after a failure, how long to wait before the
    /// next, until the retries run out.
    fn attempt(&mut self, commit: &mut Commit) -> Attempt {
        if commit.mutations.is_empty() {
            return Attempt::Done(true);
        }
        match self.try_apply(&commit.mutations) {
            Ok(()) => {
                self.metrics.storage_ok.store(true, Ordering::Relaxed);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                Attempt::Done(true)
            }
            Err(e) => {
                self.metrics.commit_failures.inc();
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                let attempt = commit.failures;
                commit.failures += 1;
                match RETRY_DELAYS.get(attempt) {
                    Some(delay) => {
                        tracing::warn!(error = %e, attempt, "channel db commit failed; retrying");
                        Attempt::RetryAfter(*delay)
                    }
                    None => {
                        self.metrics.storage_ok.store(false, Ordering::Relaxed);
                        tracing::error!(error = %e, "channel db commit failed; giving up on this batch");
                        Attempt::Done(false)
                    }
                }
            }
        }
    }

    /// After the commit (`ok`) or its final failure: resyncs the core if
    /// needed, records usage, and routes the batch's frames.
    fn finish(&mut self, commit: Commit, ok: bool) {
        let Commit {
            mut batch, wrote, ..
        } = commit;
        resync_and_record_usage(self, &mut batch, ok);
        route(self, batch, wrote, ok);
    }
}

/// Goes back to the stored state after a final failure; records usage rows.
fn resync_and_record_usage(w: &mut Writer, batch: &mut [Job], ok: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    w.stats.jobs.fetch_add(batch.len() as u64, Relaxed);
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
}

/// Hands each frame to its connection (or closes the connections whose
/// writes failed); disconnects clients whose queue is full.
fn route(w: &mut Writer, batch: Vec<Job>, wrote: Vec<bool>, ok: bool) {
    use std::sync::atomic::Ordering::Relaxed;
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
