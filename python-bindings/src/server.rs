//! The native `MailboxServer` class: one mailbox server on its own tokio
//! runtime and thread. The caller's thread only binds the socket, opens the
//! databases and later joins the server thread, always with the interpreter
//! released; nothing here runs on, or knows about, a Python event loop.

use crate::convert::{json_to_py, mailbox_to_py};
use crate::options::{Options, RawOptions};
use crate::ServerError;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;
use wormhole_mailbox_server::{Server, ServerHandle};

/// The usage-DB tables that `usage_rows` can read.
const USAGE_TABLES: [&str; 4] = ["nameplates", "mailboxes", "client_versions", "current"];

/// How long the runtime waits for stray tasks once `serve` has returned.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// What the server thread reports when it ends: `Err` carries the message.
type ServeResult = Result<(), String>;

/// A server that is listening.
struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    /// Fires the shutdown future given to `Server::serve`.
    shutdown: oneshot::Sender<()>,
    thread: JoinHandle<ServeResult>,
}

impl Running {
    /// Signals shutdown and waits for the server thread (blocking).
    fn finish(self) -> ServeResult {
        // The receiver is gone only if the thread already ended.
        let _ = self.shutdown.send(());
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => Err("the server thread panicked".into()),
        }
    }
}

/// Lifecycle of one `MailboxServer` object.
enum State {
    /// Never started.
    Idle,
    /// `start()` is binding and opening in some thread.
    Starting,
    Running(Running),
    /// `stop()` is waiting for the server thread in some thread.
    Stopping {
        addr: SocketAddr,
        handle: ServerHandle,
    },
    /// Stopped; the handle still answers introspection.
    Stopped {
        addr: SocketAddr,
        handle: ServerHandle,
    },
}

/// An in-process Magic Wormhole mailbox server.
///
/// The state mutex is only ever held briefly and never while the
/// interpreter is released, so a thread holding the GIL can't wait on a
/// thread that needs the GIL back.
#[pyclass(module = "wormhole_mailbox._native", name = "MailboxServer", frozen)]
pub struct MailboxServer {
    options: Options,
    state: Mutex<State>,
}

/// `ws://HOST:PORT/v1` for a bound address; a wildcard address is shown as
/// the loopback address of its family, which is where local clients connect.
fn url_for(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("ws://{}/v1", SocketAddr::new(ip, addr.port()))
}

/// An `OSError` that keeps the errno, so Python picks the matching subclass
/// and `exc.errno` is `errno.EADDRINUSE` for a port in use.
fn os_error(context: String, e: &std::io::Error) -> PyErr {
    match e.raw_os_error() {
        Some(errno) => {
            // Python prints `[Errno N] ...` itself.
            let text = e.to_string();
            let suffix = format!(" (os error {errno})");
            let text = text.strip_suffix(&suffix).unwrap_or(&text);
            PyOSError::new_err((errno, format!("{context}: {text}")))
        }
        None => PyOSError::new_err(format!("{context}: {e}")),
    }
}

/// Binds, opens the databases and starts the server thread. Runs with the
/// interpreter released.
fn launch(options: Options) -> PyResult<Running> {
    let where_ = format!("cannot listen on {}:{}", options.host, options.port);
    let std_listener = std::net::TcpListener::bind((options.host.as_str(), options.port))
        .map_err(|e| os_error(where_.clone(), &e))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| os_error(where_.clone(), &e))?;
    let addr = std_listener
        .local_addr()
        .map_err(|e| os_error(where_.clone(), &e))?;
    let server = Server::open(options.config)
        .map_err(|e| ServerError::new_err(format!("cannot open the server's databases: {e:#}")))?;
    let handle = server.handle();
    // One thread, as the `wormhole-mailbox` binary runs: the writer is then
    // a task beside the connections (see `Server::serve`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::new_err(format!("cannot start the tokio runtime: {e}")))?;
    let listener = {
        let _context = runtime.enter();
        tokio::net::TcpListener::from_std(std_listener).map_err(|e| os_error(where_, &e))?
    };
    let (shutdown, stop) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("wormhole-mailbox".into())
        .spawn(move || {
            let result = runtime.block_on(server.serve(listener, async {
                // A dropped sender (the object was freed) also stops it.
                let _ = stop.await;
            }));
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
            result.map_err(|e| format!("{e:#}"))
        })
        .map_err(|e| ServerError::new_err(format!("cannot start the server thread: {e}")))?;
    Ok(Running {
        addr,
        handle,
        shutdown,
        thread,
    })
}

impl MailboxServer {
    fn lock(&self) -> PyResult<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| PyRuntimeError::new_err("MailboxServer state is poisoned"))
    }

    /// The bound address, once started.
    fn addr(&self) -> PyResult<Option<SocketAddr>> {
        Ok(match &*self.lock()? {
            State::Idle | State::Starting => None,
            State::Running(r) => Some(r.addr),
            State::Stopping { addr, .. } | State::Stopped { addr, .. } => Some(*addr),
        })
    }

    /// The introspection handle, once started (it outlives `stop()`).
    fn handle(&self) -> PyResult<ServerHandle> {
        match &*self.lock()? {
            State::Idle | State::Starting => Err(PyRuntimeError::new_err(
                "the server has not been started: call start() first",
            )),
            State::Running(r) => Ok(r.handle.clone()),
            State::Stopping { handle, .. } | State::Stopped { handle, .. } => Ok(handle.clone()),
        }
    }
}

#[pymethods]
impl MailboxServer {
    /// Checks the options; the server starts with `start()`.
    #[new]
    #[pyo3(signature = (
        *,
        host = "127.0.0.1".to_owned(),
        port = 0,
        channel_db = None,
        usage_db = None,
        motd = None,
        advertise_version = None,
        signal_error = None,
        disallow_list = false,
        blur_usage = None,
        prune_interval = None,
        channel_expiration = None,
        ping_interval = None,
        ping_timeout = None,
        durability = None,
        max_message_size = None,
        max_connections = None,
        handshake_timeout = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        host: String,
        port: i64,
        channel_db: Option<PathBuf>,
        usage_db: Option<PathBuf>,
        motd: Option<String>,
        advertise_version: Option<String>,
        signal_error: Option<String>,
        disallow_list: bool,
        blur_usage: Option<i64>,
        prune_interval: Option<f64>,
        channel_expiration: Option<f64>,
        ping_interval: Option<f64>,
        ping_timeout: Option<f64>,
        durability: Option<String>,
        max_message_size: Option<i64>,
        max_connections: Option<i64>,
        handshake_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let options = RawOptions {
            host,
            port,
            channel_db,
            usage_db,
            motd,
            advertise_version,
            signal_error,
            disallow_list,
            blur_usage,
            prune_interval,
            channel_expiration,
            ping_interval,
            ping_timeout,
            durability,
            max_message_size,
            max_connections,
            handshake_timeout,
        }
        .check()?;
        Ok(MailboxServer {
            options,
            state: Mutex::new(State::Idle),
        })
    }

    /// Binds and starts serving; returns once the socket is listening.
    /// A stopped server may be started again (a fresh server, same options).
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        {
            let mut state = self.lock()?;
            match &*state {
                State::Starting | State::Running(_) => {
                    return Err(PyRuntimeError::new_err("the server is already running"))
                }
                State::Stopping { .. } => {
                    return Err(PyRuntimeError::new_err(
                        "the server is still stopping in another thread",
                    ))
                }
                State::Idle | State::Stopped { .. } => {}
            }
            *state = State::Starting;
        }
        let options = self.options.clone();
        let launched = py.detach(move || launch(options));
        let mut state = self.lock()?;
        match launched {
            Ok(running) => {
                *state = State::Running(running);
                Ok(())
            }
            Err(e) => {
                *state = State::Idle;
                Err(e)
            }
        }
    }

    /// Stops the server: closes every connection, commits what is queued
    /// and waits for its thread. Does nothing if it isn't running.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let running = {
            let mut state = self.lock()?;
            match std::mem::replace(&mut *state, State::Idle) {
                State::Running(r) => {
                    *state = State::Stopping {
                        addr: r.addr,
                        handle: r.handle.clone(),
                    };
                    r
                }
                State::Starting => {
                    *state = State::Starting;
                    return Err(PyRuntimeError::new_err(
                        "the server is starting in another thread",
                    ));
                }
                other => {
                    *state = other;
                    return Ok(());
                }
            }
        };
        let (addr, handle) = (running.addr, running.handle.clone());
        let result = py.detach(move || running.finish());
        *self.lock()? = State::Stopped { addr, handle };
        result.map_err(|e| ServerError::new_err(format!("the server stopped with an error: {e}")))
    }

    /// True between a successful `start()` and `stop()`.
    #[getter]
    fn running(&self) -> PyResult<bool> {
        Ok(matches!(&*self.lock()?, State::Running(_)))
    }

    /// The bound port, or None before the first `start()`.
    #[getter]
    fn port(&self) -> PyResult<Option<u16>> {
        Ok(self.addr()?.map(|a| a.port()))
    }

    /// The bound host address, or None before the first `start()`.
    #[getter]
    fn host(&self) -> PyResult<Option<String>> {
        Ok(self.addr()?.map(|a| a.ip().to_string()))
    }

    /// `ws://HOST:PORT/v1`, or None before the first `start()`.
    #[getter]
    fn url(&self) -> PyResult<Option<String>> {
        Ok(self.addr()?.map(url_for))
    }

    /// Names of the nameplates that exist now for `app_id`, sorted.
    fn nameplates(&self, py: Python<'_>, app_id: &str) -> PyResult<Vec<String>> {
        let handle = self.handle()?;
        let app_id = app_id.to_owned();
        Ok(py.detach(move || handle.nameplates(&app_id)))
    }

    /// The mailboxes of `app_id`: a list of
    /// `(id, for_nameplate, crowded, updated, message_count, sides)` where
    /// each side is `(side, opened, added, mood)`.
    fn mailboxes<'py>(&self, py: Python<'py>, app_id: &str) -> PyResult<Bound<'py, PyList>> {
        let handle = self.handle()?;
        let snapshot = py.detach(move || handle.snapshot()).normalized();
        let list = PyList::empty(py);
        for m in snapshot.mailboxes.iter().filter(|m| m.app_id == app_id) {
            let item: Bound<'py, PyTuple> = mailbox_to_py(py, m)?;
            list.append(item)?;
        }
        Ok(list)
    }

    /// Open WebSocket connections (past the handshake).
    fn connection_count(&self, py: Python<'_>) -> PyResult<usize> {
        let handle = self.handle()?;
        Ok(py.detach(move || handle.connections()))
    }

    /// Rows of a usage-DB table (`nameplates`, `mailboxes`,
    /// `client_versions` or `current`) as dicts, oldest first.
    fn usage_rows<'py>(&self, py: Python<'py>, table: &str) -> PyResult<Bound<'py, PyList>> {
        if !USAGE_TABLES.contains(&table) {
            return Err(PyValueError::new_err(format!(
                "unknown usage table {table:?}; expected one of {USAGE_TABLES:?}"
            )));
        }
        match self.options.config.usage_db.as_deref() {
            None => {
                return Err(PyRuntimeError::new_err(
                    "usage_rows() needs a server created with usage_db=PATH",
                ))
            }
            Some(":memory:") => {
                return Err(PyRuntimeError::new_err(
                    "usage_rows() can't read usage_db=':memory:'; give a file path",
                ))
            }
            Some(_) => {}
        }
        let handle = self.handle()?;
        let table = table.to_owned();
        let rows = py.detach(move || handle.usage_rows(&table));
        let list = PyList::empty(py);
        for row in &rows {
            list.append(json_to_py(py, row)?)?;
        }
        Ok(list)
    }

    fn __repr__(&self) -> PyResult<String> {
        let state = match &*self.lock()? {
            State::Idle => "not started".to_owned(),
            State::Starting => "starting".to_owned(),
            State::Running(r) => format!("running at {}", url_for(r.addr)),
            State::Stopping { addr, .. } => format!("stopping, was at {}", url_for(*addr)),
            State::Stopped { addr, .. } => format!("stopped, was at {}", url_for(*addr)),
        };
        Ok(format!("<MailboxServer {state}>"))
    }
}

impl Drop for MailboxServer {
    /// Garbage collection stops a running server (joining its thread, which
    /// never needs the interpreter, so holding it here can't deadlock).
    fn drop(&mut self) {
        let state = match self.state.get_mut() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let State::Running(running) = std::mem::replace(state, State::Idle) {
            if let Err(e) = running.finish() {
                eprintln!("wormhole_mailbox: server stopped with an error: {e}");
            }
        }
    }
}
