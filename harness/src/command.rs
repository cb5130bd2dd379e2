//! The `--server-cmd` launcher: starts a server process from a command
//! template with `{port}` and `{db}`, appends the vector's launch flags,
//! waits until the port accepts TCP, restarts it with SIGKILL/SIGTERM, and
//! kills it at the end.

use crate::target::{BoxFuture, LaunchOptions, Launcher, Running};
use crate::vector::{Capability, RestartKind};
use anyhow::{anyhow, bail, Context};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Launches servers by running a shell command.
///
/// The template is run by `sh -c` after replacing `{port}` (a free port on
/// 127.0.0.1 chosen by the harness), `{db}` (a database file in a fresh
/// state directory) and `{dir}` (that directory). The vector's options are
/// appended as separate arguments (`--motd=…`, see
/// [`crate::ServerOptions::cli_args`]). The server's URL is
/// `ws://127.0.0.1:{port}/v1`; its output goes to `server.log` in the state
/// directory and is quoted when it fails to start.
#[derive(Clone, Debug)]
pub struct CommandLauncher {
    template: String,
    capabilities: BTreeSet<Capability>,
    startup_timeout: Duration,
    path: String,
}

impl CommandLauncher {
    /// A launcher for this command template (`launch` and `restart`).
    pub fn new(template: impl Into<String>) -> Self {
        CommandLauncher {
            template: template.into(),
            capabilities: [Capability::Launch, Capability::Restart]
                .into_iter()
                .collect(),
            startup_timeout: Duration::from_secs(30),
            path: "/v1".to_owned(),
        }
    }

    /// Adds a capability the command offers (`prune` when the server takes
    /// `--prune-interval`/`--channel-expiration`, `permissions` when it
    /// implements the permissions extension and takes
    /// `--permissions=METHOD`/`--hashcash-bits=N`).
    pub fn with_capability(mut self, c: Capability) -> Self {
        self.capabilities.insert(c);
        self
    }

    /// The WebSocket path of the launched server (default `/v1`).
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// How long to wait for the port to accept connections.
    pub fn with_startup_timeout(mut self, t: Duration) -> Self {
        self.startup_timeout = t;
        self
    }
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

struct Spec {
    script: String,
    flags: Vec<String>,
    port: u16,
    path: String,
    log: PathBuf,
    startup_timeout: Duration,
}

impl Spec {
    async fn spawn(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let log2 = log.try_clone()?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("exec {} \"$@\"", self.script))
            .arg("sh")
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("cannot run sh")?;
        let deadline = tokio::time::Instant::now() + self.startup_timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the server exited ({status}) before accepting connections on port {}; command: {}; output:\n{}",
                    self.port,
                    self.script,
                    self.log_tail()
                );
            }
            let probe = tokio::time::timeout(
                Duration::from_millis(500),
                TcpStream::connect(("127.0.0.1", self.port)),
            )
            .await;
            if let Ok(Ok(_)) = probe {
                return Ok(child);
            }
            if tokio::time::Instant::now() >= deadline {
                signal_group(&child, libc::SIGKILL);
                let _ = child.wait().await;
                bail!(
                    "the server did not accept connections on port {} within {} s; command: {}; output:\n{}",
                    self.port,
                    self.startup_timeout.as_secs(),
                    self.script,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Sends a signal to the child's process group (the shell `exec`s the
/// server, and the group also catches anything it forks).
fn signal_group(child: &Child, sig: libc::c_int) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals the process group we
        // created with process_group(0); it has no memory-safety effects.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

async fn stop_child(child: &mut Child, sig: libc::c_int, grace: Duration) {
    signal_group(child, sig);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(child, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

struct CommandServer {
    spec: Spec,
    child: Option<Child>,
}

impl Launcher for CommandLauncher {
    fn capabilities(&self) -> BTreeSet<Capability> {
        self.capabilities.clone()
    }

    fn start<'a>(
        &'a self,
        opts: &'a LaunchOptions,
    ) -> BoxFuture<'a, anyhow::Result<Box<dyn Running>>> {
        Box::pin(async move {
            let port = free_port().context("cannot find a free port")?;
            let db = opts.state_dir.join("channel.sqlite");
            let script = self
                .template
                .replace("{port}", &port.to_string())
                .replace("{db}", &db.display().to_string())
                .replace("{dir}", &opts.state_dir.display().to_string());
            let spec = Spec {
                script,
                flags: opts.server.cli_args(),
                port,
                path: self.path.clone(),
                log: opts.state_dir.join("server.log"),
                startup_timeout: self.startup_timeout,
            };
            let child = spec.spawn().await?;
            Ok(Box::new(CommandServer {
                spec,
                child: Some(child),
            }) as Box<dyn Running>)
        })
    }
}

impl Running for CommandServer {
    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}{}", self.spec.port, self.spec.path)
    }

    fn restart(&mut self, kind: RestartKind) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let mut child = self
                .child
                .take()
                .ok_or_else(|| anyhow!("the server is not running"))?;
            match kind {
                RestartKind::Kill => {
                    stop_child(&mut child, libc::SIGKILL, Duration::from_secs(10)).await
                }
                RestartKind::Graceful => {
                    stop_child(&mut child, libc::SIGTERM, Duration::from_secs(10)).await
                }
            }
            self.child = Some(self.spec.spawn().await?);
            Ok(())
        })
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            if let Some(mut child) = self.child.take() {
                stop_child(&mut child, libc::SIGTERM, Duration::from_secs(3)).await;
            }
            Ok(())
        })
    }
}
