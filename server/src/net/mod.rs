//! The IO shell: accept loop, per-connection task, keepalive and graceful
//! shutdown.
//!
//! Concurrency choice: one `std::sync::Mutex` around the protocol core. A
//! connection task decodes a frame, locks the core, lets it handle the
//! message and, still under the lock, queues the effects to the commit
//! pipeline (see `pipeline.rs`). The lock is never held across an `.await`.
//! Because queueing happens under the lock, the writer sees effects in the
//! core's processing order, so per-mailbox delivery order equals receive
//! order, and each connection's frames leave in the order they were caused.
//! The binary runs all of it on one current-thread runtime (the lock is
//! then never contended); embedded in a multi-thread runtime the same code
//! is safe, with the writer on its own thread.

pub mod connection;
pub mod handshake;

use crate::Shared;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How long connections get to close cleanly at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Accepts connections until `shutdown` resolves, then closes every
/// connection with a close frame and waits for them to end.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut tasks = JoinSet::new();
    let prune = tokio::spawn(crate::prune_loop(shared.clone(), stop_rx.clone()));
    if let Some(addr) = shared.config.metrics {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!("metrics on http://{addr}/metrics, health on /health");
                tokio::spawn(crate::metrics::serve(l, shared.clone(), stop_rx.clone()));
            }
            Err(e) => tracing::error!(error = %e, %addr, "cannot listen for metrics"),
        }
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // e.g. EMFILE: back off instead of spinning
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let permit = limit.clone().try_acquire_owned().ok();
                tasks.spawn(connection::run(shared.clone(), stream, peer, permit, stop_rx.clone()));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(connections = tasks.len(), "shutting down");
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tasks.abort_all();
    }
    let _ = prune.await;
}
