//! The commit pipeline: one writer thread takes the core's effects in the
//! order the core produced them, commits the mutations of everything queued
//! in one transaction (group commit), then routes the frames. So an `ack`
//! (and every frame a command causes) is written only after its mutation is
//! durable, and per-connection order equals processing order.

use crate::protocol::{ConnId, Effects, ServerMessage};
use crate::store::{Store, UsageDb};
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::mpsc::UnboundedSender;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;

/// What a connection task must do next.
#[derive(Debug)]
pub enum Outbound {
    /// Write this message.
    Message(ServerMessage),
    /// Close the WebSocket with this code and reason (storage failure).
    Close(u16, &'static str),
}

/// The connections frames can be routed to.
pub type Routes = Mutex<HashMap<ConnId, UnboundedSender<Outbound>>>;

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
}

/// Starts the writer thread; it ends when every sender is dropped, after
/// committing what was queued.
pub fn spawn_writer(
    mut store: Box<dyn Store>,
    mut usage: Option<UsageDb>,
    routes: Arc<Routes>,
    stats: Arc<PipelineStats>,
) -> std::io::Result<(mpsc::Sender<Job>, JoinHandle<()>)> {
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
                commit_batch(&mut *store, usage.as_mut(), &routes, &stats, batch);
            }
            tracing::debug!("writer drained and stopped");
        })?;
    Ok((tx, handle))
}

fn commit_batch(
    store: &mut dyn Store,
    usage: Option<&mut UsageDb>,
    routes: &Routes,
    stats: &PipelineStats,
    mut batch: Vec<Job>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let wrote: Vec<bool> = batch
        .iter()
        .map(|j| !j.effects.mutations.is_empty())
        .collect();
    let mutations: Vec<_> = batch
        .iter_mut()
        .flat_map(|j| std::mem::take(&mut j.effects.mutations))
        .collect();
    stats.jobs.fetch_add(batch.len() as u64, Relaxed);
    let ok = match store.apply(&mutations) {
        Ok(()) => {
            if !mutations.is_empty() {
                stats.commits.fetch_add(1, Relaxed);
            }
            true
        }
        Err(e) => {
            stats.failures.fetch_add(1, Relaxed);
            tracing::error!(error = %e, jobs = batch.len(), "channel db commit failed");
            false
        }
    };
    if let Some(usage) = usage {
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
    let Ok(routes) = routes.lock() else {
        return;
    };
    for (job, wrote) in batch.into_iter().zip(wrote) {
        if !ok && wrote {
            // Nothing of this batch is durable: don't acknowledge it. The
            // commands that caused writes get their connection closed (the
            // client reconnects and resumes); the others are answered.
            if let Some(origin) = job.origin {
                if let Some(tx) = routes.get(&origin) {
                    let _ = tx.send(Outbound::Close(1011, "storage error"));
                }
            }
            continue;
        }
        for env in job.effects.envelopes {
            if let Some(tx) = routes.get(&env.to) {
                let _ = tx.send(Outbound::Message(env.msg));
            }
        }
    }
}
