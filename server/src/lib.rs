//! The reference Magic Wormhole mailbox server, as a library. The CLI, the
//! integration tests and the Python binding all start it the same way:
//! [`run`] (or [`Server::open`] + [`Server::serve`] when they also want a
//! [`ServerHandle`] for introspection).

pub mod config;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod protocol;
pub mod reload;
pub mod store;

pub use config::Config;
pub use protocol::{Limits, Permissions};
pub use store::Durability;

use pipeline::{Job, PipelineStats, Routes};
use protocol::{ClientMessage, ConnId, Core, CoreSettings, MailboxSide, Snapshot};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use store::{MemoryStore, SqliteStore, Store, UsageDb};
use tokio::net::TcpListener;

/// Seconds since the epoch, as the protocol's timestamps.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What sits behind the core lock: the core, its random source, and the
/// queue to the writer (queued under the lock to keep processing order).
pub(crate) struct Locked {
    pub core: Core,
    pub rng: StdRng,
    /// `None` once the server is shutting down.
    pub pipeline: Option<pipeline::JobSender>,
}

/// State shared by every task of one server.
pub(crate) struct Shared {
    pub config: Config,
    pub core: Mutex<Locked>,
    pub routes: Arc<Routes>,
    pub next_conn: AtomicU64,
    /// The welcome without the per-connection keys; replaced on reload.
    pub welcome: std::sync::RwLock<serde_json::Map<String, serde_json::Value>>,
    /// Process start, for the usage DB `current.rebooted`.
    pub started: f64,
    pub stats: Arc<PipelineStats>,
    /// Read-only view of the usage DB for introspection.
    pub usage_reader: Option<Mutex<UsageDb>>,
    /// Fault injection: the next N commits fail (see `ServerHandle`).
    pub fail_commits: Arc<std::sync::atomic::AtomicU32>,
    /// Operator metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The per-address cap in force (reloadable).
    pub ip_cap: std::sync::RwLock<Option<usize>>,
    /// Open connections per client address (for the per-address cap).
    pub per_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
}

impl Shared {
    /// The current welcome (without per-connection keys).
    pub fn welcome(&self) -> serde_json::Map<String, serde_json::Value> {
        self.welcome.read().map(|w| w.clone()).unwrap_or_default()
    }

    /// Hands a decoded message to the core and queues its effects; false
    /// when the server is shutting down.
    pub fn submit(&self, conn: ConnId, msg: ClientMessage) -> bool {
        let Ok(mut locked) = self.core.lock() else {
            return false;
        };
        let Locked {
            core,
            rng,
            pipeline,
        } = &mut *locked;
        self.metrics.count_message(
            msg.get("type")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(""),
        );
        let effects = core.handle(conn, msg, unix_now(), rng);
        self.metrics.observe(&effects.envelopes, &effects.usage);
        match pipeline {
            Some(tx) => tx
                .send(Job {
                    origin: Some(conn),
                    effects,
                    current: None,
                })
                .is_ok(),
            None => false,
        }
    }
}

/// Runs the prune (expiry) check at start-up and then every interval; an
/// error in one run is logged and never stops the loop.
pub(crate) async fn prune_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.config.prune_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Ok(mut locked) = shared.core.lock() else {
            tracing::error!("core lock poisoned; prune skipped");
            continue;
        };
        let now = unix_now();
        let old = now - shared.config.channel_expiration.as_secs_f64();
        let Locked { core, pipeline, .. } = &mut *locked;
        let effects = core.prune(now, old);
        let removed = effects.mutations.len();
        shared.metrics.prune_runs.inc();
        for m in &effects.mutations {
            let kind = match m {
                protocol::Mutation::DeleteMailbox { .. } => "mailbox",
                protocol::Mutation::DeleteNameplate { .. } => "nameplate",
                _ => continue,
            };
            shared
                .metrics
                .prune_removed
                .get_or_create(&vec![("kind".to_owned(), kind.to_owned())])
                .inc();
        }
        shared.metrics.observe_usage(&effects.usage);
        let listening = core.listening_connections();
        if let Some(tx) = pipeline {
            let _ = tx.send(Job {
                origin: None,
                effects,
                current: Some((shared.started, now, listening)),
            });
        }
        tracing::debug!(mutations = removed, "prune run");
    }
}

/// A server with its state loaded, ready to serve. Its writer starts with
/// [`Server::serve`]; what the core queues before that waits for it.
pub struct Server {
    shared: Arc<Shared>,
    writer: pipeline::Writer,
    jobs: pipeline::JobReceiver,
}

/// A cloneable read-only view of a running server, for assertions in tests
/// and fixtures.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl Server {
    /// Opens the databases, restores the stored state and starts the writer.
    pub fn open(config: Config) -> anyhow::Result<Server> {
        let mut store: Box<dyn Store> = match &config.channel_db {
            None => Box::new(MemoryStore::new()),
            Some(path) => Box::new(SqliteStore::open(path, config.durability)?),
        };
        let snapshot = store.load()?;
        tracing::info!(
            nameplates = snapshot.nameplates.len(),
            mailboxes = snapshot.mailboxes.len(),
            "channel state loaded"
        );
        let usage = match &config.usage_db {
            Some(path) => Some(UsageDb::open(path, config.blur_usage)?),
            None => None,
        };
        let usage_reader = match &config.usage_db {
            Some(path) if path != ":memory:" => {
                Some(Mutex::new(UsageDb::open(path, config.blur_usage)?))
            }
            _ => None,
        };
        let routes: Arc<Routes> = Arc::new(Mutex::new(HashMap::new()));
        let stats = Arc::new(PipelineStats::default());
        let resync: pipeline::Resync = Arc::new(std::sync::OnceLock::new());
        let fail_commits = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let metrics = Arc::new(metrics::Metrics::default());
        let (tx, jobs) = pipeline::job_queue();
        let writer = pipeline::Writer {
            metrics: metrics.clone(),
            store,
            usage,
            routes: routes.clone(),
            stats: stats.clone(),
            resync: resync.clone(),
            fail_commits: fail_commits.clone(),
        };
        let core = Core::restore(
            CoreSettings {
                disallow_list: config.disallow_list,
                limits: config.limits.clone(),
                permissions: config.permissions.clone(),
            },
            snapshot,
        );
        if config.disallow_list {
            tracing::info!("listing of allocated nameplates disallowed");
        }
        if let Some(b) = config.blur_usage {
            tracing::info!("blurring access times to {b} seconds");
        }
        let config_ip_cap = config.max_connections_per_ip;
        let shared = Arc::new(Shared {
            welcome: std::sync::RwLock::new(config.welcome_base()),
            config,
            core: Mutex::new(Locked {
                core,
                rng: StdRng::from_entropy(),
                pipeline: Some(tx),
            }),
            routes,
            next_conn: AtomicU64::new(1),
            started: unix_now(),
            stats,
            usage_reader,
            fail_commits,
            per_ip: Mutex::new(HashMap::new()),
            ip_cap: std::sync::RwLock::new(config_ip_cap),
            metrics,
        });
        let weak = Arc::downgrade(&shared);
        let _ = resync.set(Box::new(move |snapshot| {
            if let Some(shared) = weak.upgrade() {
                if let Ok(mut locked) = shared.core.lock() {
                    locked.core.resync(snapshot);
                    tracing::warn!("state reloaded from the channel db after a failed commit");
                }
            }
        }));
        Ok(Server {
            shared,
            writer,
            jobs,
        })
    }

    /// A read-only view that stays valid after the server stops.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves `listener` until `shutdown` resolves, then closes every
    /// connection with a close frame and commits everything queued.
    ///
    /// On a current-thread runtime (the `wormhole-mailbox` binary's) the
    /// writer is a task beside the connections, so a command's path from
    /// its frame to its `ack` never leaves the thread; on a multi-thread
    /// runtime it gets a thread of its own, so no worker blocks on a commit.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Server {
            shared,
            writer,
            jobs,
        } = self;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("websocket listening on ws://{addr}/v1");
        }
        let inline = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread;
        let stopped: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> = if inline
        {
            let task = tokio::spawn(writer.run_inline(jobs));
            Box::pin(async move { Ok(task.await?) })
        } else {
            let thread = writer.spawn_thread(jobs)?;
            Box::pin(async move {
                tokio::task::spawn_blocking(move || thread.join())
                    .await?
                    .map_err(|_| anyhow::anyhow!("writer thread panicked"))
            })
        };
        net::serve(listener, shared.clone(), shutdown).await;
        if let Ok(mut locked) = shared.core.lock() {
            locked.pipeline = None;
        }
        stopped.await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Starts a server on `listener` with `config` and serves until `shutdown`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    Server::open(config)?.serve(listener, shutdown).await
}

impl ServerHandle {
    fn with_core<T>(&self, f: impl FnOnce(&Core) -> T) -> Option<T> {
        self.shared.core.lock().ok().map(|l| f(&l.core))
    }

    /// All durable state (nameplates, mailboxes, sides, messages).
    pub fn snapshot(&self) -> Snapshot {
        self.with_core(Core::snapshot).unwrap_or_default()
    }

    /// The nameplates of an app, sorted as `list` reports them.
    pub fn nameplates(&self, app_id: &str) -> Vec<String> {
        self.snapshot()
            .nameplates
            .into_iter()
            .filter(|n| n.app_id == app_id)
            .map(|n| n.name)
            .collect()
    }

    /// The sides of a mailbox, or None if it doesn't exist.
    pub fn mailbox_sides(&self, app_id: &str, mailbox_id: &str) -> Option<Vec<MailboxSide>> {
        self.with_core(|c| c.mailbox_sides(app_id, mailbox_id))
            .flatten()
    }

    /// Open WebSocket connections (past the handshake).
    pub fn connections(&self) -> usize {
        self.with_core(Core::connections).unwrap_or(0)
    }

    /// Rows of a usage-DB table (`nameplates`, `mailboxes`,
    /// `client_versions`, `current`) as JSON objects; empty without a usage DB.
    pub fn usage_rows(&self, table: &str) -> Vec<serde_json::Value> {
        self.shared
            .usage_reader
            .as_ref()
            .and_then(|u| u.lock().ok().and_then(|u| u.rows(table).ok()))
            .unwrap_or_default()
    }

    /// Applies the settings that can change while running: the welcome
    /// texts, `disallow_list`, the storage limits and the per-address cap
    /// (for new connections). Everything else in `config` is ignored.
    pub fn reconfigure(&self, config: &Config) {
        if let Ok(mut w) = self.shared.welcome.write() {
            *w = config.welcome_base();
        }
        if let Ok(mut locked) = self.shared.core.lock() {
            locked.core.set_settings(CoreSettings {
                disallow_list: config.disallow_list,
                limits: config.limits.clone(),
                permissions: config.permissions.clone(),
            });
        }
        if let Ok(mut cap) = self.shared.ip_cap.write() {
            *cap = config.max_connections_per_ip;
        }
        tracing::info!("configuration reloaded");
    }

    /// Makes the next `n` channel-db commits fail (fault-injection tests:
    /// each failure is retried, so pass more than the retry count to make a
    /// batch fail for good).
    pub fn inject_commit_failures(&self, n: u32) {
        self.shared
            .fail_commits
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Limits hit so far, by limit name.
    pub fn limit_hits(&self) -> HashMap<&'static str, u64> {
        self.with_core(|c| c.limit_hits.clone()).unwrap_or_default()
    }

    /// The metrics text a scrape of `/metrics` returns.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render(&self.shared)
    }

    /// Transactions committed and jobs processed by the writer.
    pub fn commit_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.shared.stats.commits.load(Relaxed),
            self.shared.stats.jobs.load(Relaxed),
        )
    }
}
