//! Targets: what vectors run against. A plain URL (no capabilities), or a
//! [`Launcher`] that starts servers (a command line, or a Rust caller's
//! in-process server). [`Suite`] schedules vectors onto them: one shared
//! server for ordinary vectors, a fresh one for vectors that need launch.

use crate::run::{run_vector, RunOptions, RunResult, ServerRef};
use crate::vector::{Capability, RestartKind, ServerOptions, Vector};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A boxed, sendable future: what [`Launcher`] and [`Running`] methods
/// return, so both traits stay object-safe (`Box<dyn Running>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a launcher is asked to start.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LaunchOptions {
    /// The vector's `server` options (all default for the shared server).
    /// [`ServerOptions::cli_args`] gives them as command-line flags.
    pub server: ServerOptions,
    /// A fresh, empty directory owned by the harness for this server's
    /// state (put the database here). It lives until after
    /// [`Running::stop`], and the harness deletes it afterwards. A restart
    /// must reuse it: state must survive a restart.
    pub state_dir: PathBuf,
}

impl LaunchOptions {
    /// Options for a server with these settings, keeping state in `state_dir`.
    pub fn new(server: ServerOptions, state_dir: PathBuf) -> Self {
        LaunchOptions { server, state_dir }
    }
}

/// Starts mailbox servers for the harness.
///
/// Implement this to run the vectors against a server the harness cannot
/// reach by URL alone: the CLI's `--server-cmd` is one implementation; a
/// server's own `cargo test` implements it to start the server in-process
/// on port 0. `start` is called once for the shared server (default
/// options) and once per vector that needs launch options, a restart or
/// pruning; calls may overlap (vectors run in parallel).
///
/// Methods are called from inside the harness's multi-threaded tokio
/// runtime, so an implementation may `tokio::spawn` the server there.
///
/// ```no_run
/// use std::sync::Arc;
/// use wormhole_mailbox_harness::{BoxFuture, LaunchOptions, Launcher, RestartKind, Running};
///
/// struct InProcess;
/// struct Handle { url: String }
///
/// impl Launcher for InProcess {
///     fn start<'a>(&'a self, opts: &'a LaunchOptions) -> BoxFuture<'a, anyhow::Result<Box<dyn Running>>> {
///         Box::pin(async move {
///             // bind 127.0.0.1:0, spawn the server with `opts.server`
///             // and a database in `opts.state_dir`, then:
///             let url = "ws://127.0.0.1:4000/v1".to_owned();
///             Ok(Box::new(Handle { url }) as Box<dyn Running>)
///         })
///     }
/// }
///
/// impl Running for Handle {
///     fn url(&self) -> String { self.url.clone() }
///     fn restart(&mut self, _kind: RestartKind) -> BoxFuture<'_, anyhow::Result<()>> {
///         Box::pin(async move { Ok(()) })
///     }
///     fn stop(self: Box<Self>) -> BoxFuture<'static, anyhow::Result<()>> {
///         Box::pin(async move { Ok(()) })
///     }
/// }
/// ```
pub trait Launcher: Send + Sync {
    /// What this launcher can do. The default (`launch` + `restart`) suits
    /// a launcher whose servers implement [`Running::restart`]; add
    /// `prune` if the server honours `prune_interval`/`channel_expiration`,
    /// `permissions` if it honours `permissions`/`hashcash_bits`.
    fn capabilities(&self) -> BTreeSet<Capability> {
        [Capability::Launch, Capability::Restart]
            .into_iter()
            .collect()
    }

    /// Starts a server with these options and returns once it accepts
    /// WebSocket connections.
    fn start<'a>(
        &'a self,
        opts: &'a LaunchOptions,
    ) -> BoxFuture<'a, anyhow::Result<Box<dyn Running>>>;
}

/// A server started by a [`Launcher`].
pub trait Running: Send {
    /// The WebSocket URL, e.g. `ws://127.0.0.1:PORT/v1`. Read again after
    /// [`Running::restart`], so a restarted server may listen elsewhere.
    fn url(&self) -> String;

    /// Stops the server and starts it again on the same state (same
    /// `state_dir`, same options), returning once it accepts connections
    /// again. [`RestartKind::Kill`] must not let the server clean up (kill
    /// the process; abort the in-process tasks and drop the listener
    /// without closing connections), [`RestartKind::Graceful`] is a normal
    /// shutdown. Connections open before the restart must end.
    fn restart(&mut self, kind: RestartKind) -> BoxFuture<'_, anyhow::Result<()>>;

    /// Stops the server for good (graceful). Called once; the harness then
    /// deletes `state_dir`.
    fn stop(self: Box<Self>) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// What the vectors run against.
#[derive(Clone)]
pub enum Target {
    /// A server somebody else runs: no capabilities, vectors that need
    /// launch, restart or prune are skipped.
    Url(String),
    /// Servers the harness starts itself.
    Launcher(Arc<dyn Launcher>),
}

impl Target {
    /// The capabilities of this target.
    pub fn capabilities(&self) -> BTreeSet<Capability> {
        match self {
            Target::Url(_) => BTreeSet::new(),
            Target::Launcher(l) => l.capabilities(),
        }
    }

    /// Why `vector` cannot run on this target, if it cannot.
    pub fn skip_reason(&self, vector: &Vector) -> Option<String> {
        let have = self.capabilities();
        let missing: Vec<&str> = vector
            .needs()
            .into_iter()
            .filter(|c| !have.contains(c))
            .map(Capability::as_str)
            .collect();
        if missing.is_empty() {
            return None;
        }
        let what = match self {
            Target::Url(_) => "the target is a plain URL",
            Target::Launcher(_) => "the launcher does not offer it",
        };
        Some(format!("requires {} ({what})", missing.join(", ")))
    }
}

enum Shared {
    NotStarted,
    Up {
        url: String,
        server: Option<Box<dyn Running>>,
        dir: Option<PathBuf>,
    },
    Failed(String),
}

/// Runs vectors on a target: skips what the target cannot run, shares one
/// server between ordinary vectors, and launches a fresh server for each
/// vector that needs one. Safe to use from many tasks at once.
pub struct Suite {
    target: Target,
    options: RunOptions,
    startup_timeout: Duration,
    shared: tokio::sync::Mutex<Shared>,
}

static STATE_DIRS: AtomicU64 = AtomicU64::new(0);

fn fresh_state_dir() -> std::io::Result<PathBuf> {
    let n = STATE_DIRS.fetch_add(1, Ordering::Relaxed);
    let r: u32 = rand::random();
    let dir = std::env::temp_dir().join(format!(
        "wormhole-conformance-{}-{n}-{r:08x}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl Suite {
    /// A suite for this target.
    pub fn new(target: Target, options: RunOptions) -> Self {
        Suite {
            target,
            options,
            startup_timeout: Duration::from_secs(60),
            shared: tokio::sync::Mutex::new(Shared::NotStarted),
        }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Runs one vector (or reports it skipped).
    pub async fn run(&self, vector: &Vector) -> RunResult {
        if let Some(reason) = self.target.skip_reason(vector) {
            return RunResult::skipped(vector, reason);
        }
        match &self.target {
            Target::Url(url) => {
                run_vector(vector, ServerRef::Url(url.clone()), &self.options).await
            }
            Target::Launcher(launcher) if vector.needs_own_server() => {
                let dir = match fresh_state_dir() {
                    Ok(d) => d,
                    Err(e) => {
                        return RunResult::error(
                            vector,
                            format!("cannot create a state directory: {e}"),
                        )
                    }
                };
                let opts = LaunchOptions::new(vector.server.clone(), dir.clone());
                let started =
                    tokio::time::timeout(self.startup_timeout, launcher.start(&opts)).await;
                let mut server = match started {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        let _ = std::fs::remove_dir_all(&dir);
                        return RunResult::error(
                            vector,
                            format!("could not launch the server: {e:#}"),
                        );
                    }
                    Err(_) => {
                        let _ = std::fs::remove_dir_all(&dir);
                        return RunResult::error(vector, "the server did not start in time");
                    }
                };
                let mut result =
                    run_vector(vector, ServerRef::Own(server.as_mut()), &self.options).await;
                if let Err(e) = server.stop().await {
                    if result.reason.is_none() {
                        result.reason = Some(format!("note: stopping the server failed: {e:#}"));
                    }
                }
                let _ = std::fs::remove_dir_all(&dir);
                result
            }
            Target::Launcher(launcher) => match self.shared_url(launcher).await {
                Ok(url) => run_vector(vector, ServerRef::Url(url), &self.options).await,
                Err(e) => {
                    RunResult::error(vector, format!("could not launch the shared server: {e}"))
                }
            },
        }
    }

    async fn shared_url(&self, launcher: &Arc<dyn Launcher>) -> Result<String, String> {
        let mut shared = self.shared.lock().await;
        match &*shared {
            Shared::Up { url, .. } => return Ok(url.clone()),
            Shared::Failed(e) => return Err(e.clone()),
            Shared::NotStarted => {}
        }
        let dir = fresh_state_dir().map_err(|e| format!("cannot create a state directory: {e}"))?;
        let opts = LaunchOptions::new(ServerOptions::default(), dir.clone());
        let started = tokio::time::timeout(self.startup_timeout, launcher.start(&opts)).await;
        match started {
            Ok(Ok(server)) => {
                let url = server.url();
                *shared = Shared::Up {
                    url: url.clone(),
                    server: Some(server),
                    dir: Some(dir),
                };
                Ok(url)
            }
            Ok(Err(e)) => {
                let msg = format!("{e:#}");
                *shared = Shared::Failed(msg.clone());
                let _ = std::fs::remove_dir_all(&dir);
                Err(msg)
            }
            Err(_) => {
                let msg = "the server did not start in time".to_owned();
                *shared = Shared::Failed(msg.clone());
                let _ = std::fs::remove_dir_all(&dir);
                Err(msg)
            }
        }
    }

    /// Stops the shared server, if one was started. Call once at the end.
    pub async fn shutdown(&self) {
        let mut shared = self.shared.lock().await;
        if let Shared::Up { server, dir, .. } = &mut *shared {
            if let Some(s) = server.take() {
                let _ = s.stop().await;
            }
            if let Some(d) = dir.take() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        *shared = Shared::NotStarted;
    }
}
