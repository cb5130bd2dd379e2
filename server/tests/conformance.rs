//! The conformance vectors (`vectors/`) as `cargo test` cases against our
//! server, started in-process on port 0: one shared server for ordinary
//! vectors, a fresh one (with the vector's options, fast pruning, restarts)
//! where a vector needs it (also the permissions extension's options). Each vector's normalised transcript is an insta
//! snapshot under `tests/snapshots/conformance/`, so any change of our
//! output shows as a snapshot diff. `--list`, `--exact` and filters work.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wormhole_mailbox_harness::{
    BoxFuture, Capability, LaunchOptions, Launcher, PermissionMethod, RestartKind, Running,
    TrialOptions,
};
use wormhole_mailbox_server::{Config, Permissions, Server};

/// Vectors our server deliberately does not match. Empty: every required
/// and reference vector passes, and our divergences from the Python server
/// are `informational` vectors or accepted alternatives in the vectors
/// themselves (see vectors/README.md).
const KNOWN_DIVERGENCES: &[&str] = &[];

struct InProcess;

struct Handle {
    url: String,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn config_for(opts: &LaunchOptions) -> Config {
    let s = &opts.server;
    let mut config = Config {
        channel_db: Some(opts.state_dir.join("relay.sqlite").to_string_lossy().into()),
        motd: s.motd.clone(),
        advertise_version: s.advertise_version.clone(),
        signal_error: s.signal_error.clone(),
        disallow_list: s.disallow_list,
        ..Config::default()
    };
    if let Some(secs) = s.prune_interval {
        config.prune_interval = Duration::from_secs(secs.max(1));
    }
    if let Some(secs) = s.channel_expiration {
        config.channel_expiration = Duration::from_secs(secs.max(1));
    }
    // as `--permissions`/`--hashcash-bits` do (server/src/cli.rs)
    if !s.permissions.is_empty() {
        config.permissions = Permissions {
            allow_none: s.permissions.contains(&PermissionMethod::None),
            hashcash_bits: s
                .permissions
                .contains(&PermissionMethod::Hashcash)
                .then_some(s.hashcash_bits.unwrap_or(20)),
        };
    }
    config
}

async fn spawn(config: Config) -> anyhow::Result<Handle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/v1", listener.local_addr()?);
    let server = Server::open(config.clone())?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async {
        let _ = rx.await;
    }));
    Ok(Handle {
        url,
        config,
        stop: Some(tx),
        task,
    })
}

impl Handle {
    async fn shutdown(&mut self, kind: RestartKind) -> anyhow::Result<()> {
        match kind {
            RestartKind::Kill => {
                // no clean-up: connections and listener dropped mid-flight
                self.task.abort();
                let _ = (&mut self.task).await;
            }
            RestartKind::Graceful => {
                if let Some(tx) = self.stop.take() {
                    let _ = tx.send(());
                }
                (&mut self.task).await??;
            }
        }
        Ok(())
    }
}

impl Launcher for InProcess {
    fn capabilities(&self) -> std::collections::BTreeSet<Capability> {
        [
            Capability::Launch,
            Capability::Restart,
            Capability::Prune,
            Capability::Permissions,
        ]
        .into_iter()
        .collect()
    }

    fn start<'a>(
        &'a self,
        opts: &'a LaunchOptions,
    ) -> BoxFuture<'a, anyhow::Result<Box<dyn Running>>> {
        Box::pin(async move { Ok(Box::new(spawn(config_for(opts)).await?) as Box<dyn Running>) })
    }
}

impl Running for Handle {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn restart(&mut self, kind: RestartKind) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.shutdown(kind).await?;
            *self = spawn(self.config.clone()).await?;
            Ok(())
        })
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move { self.shutdown(RestartKind::Graceful).await })
    }
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let vectors = wormhole_mailbox_harness::load(root.join("../vectors"))?;
    let conclusion = wormhole_mailbox_harness::run_trials(
        vectors,
        Arc::new(InProcess),
        TrialOptions {
            known_divergences: KNOWN_DIVERGENCES,
            snapshot_dir: Some(root.join("tests/snapshots/conformance")),
            ..TrialOptions::default()
        },
    )?;
    conclusion.exit()
}
