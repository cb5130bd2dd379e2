//! The in-memory model of a vector (one conformance case): metadata, the
//! launch options it needs, and its typed steps.

use crate::pattern::Pattern;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// How much a vector's outcome matters (see `vectors/README.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Any compliant server must behave so.
    Required,
    /// A drop-in replacement for the Python server 0.8.0 must match.
    Reference,
    /// Quirks and known reference bugs: reported, never failing a run.
    Informational,
}

impl Class {
    /// All classes, most important first.
    pub const ALL: [Class; 3] = [Class::Required, Class::Reference, Class::Informational];

    /// The name used in vectors and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Required => "required",
            Class::Reference => "reference",
            Class::Informational => "informational",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Class {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "required" => Ok(Class::Required),
            "reference" => Ok(Class::Reference),
            "informational" => Ok(Class::Informational),
            _ => Err(format!("unknown class {s:?}")),
        }
    }
}

/// Something a target must offer for a vector to run; a vector whose needs
/// are not met is reported `skip`, never `pass`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// The harness starts a fresh server for the vector, with its options.
    Launch,
    /// The harness can stop and restart that server on the same database.
    Restart,
    /// The server accepts `prune_interval`/`channel_expiration`.
    Prune,
    /// The server implements the permissions extension (protocol.md §9) and
    /// accepts `permissions`/`hashcash_bits`.
    Permissions,
}

impl Capability {
    /// The name used in vectors and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Launch => "launch",
            Capability::Restart => "restart",
            Capability::Prune => "prune",
            Capability::Permissions => "permissions",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Capability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "launch" => Ok(Capability::Launch),
            "restart" => Ok(Capability::Restart),
            "prune" => Ok(Capability::Prune),
            "permissions" => Ok(Capability::Permissions),
            _ => Err(format!(
                "unknown capability {s:?} (launch, restart, prune, permissions)"
            )),
        }
    }
}

/// A permission method a launched server accepts (`server.permissions`,
/// protocol.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PermissionMethod {
    /// Clients may bind without proving anything.
    None,
    /// Clients pay with a hashcash stamp.
    Hashcash,
}

impl PermissionMethod {
    /// The name used in vectors and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionMethod::None => "none",
            PermissionMethod::Hashcash => "hashcash",
        }
    }
}

impl fmt::Display for PermissionMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PermissionMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(PermissionMethod::None),
            "hashcash" => Ok(PermissionMethod::Hashcash),
            _ => Err(format!("unknown permission method {s:?} (none, hashcash)")),
        }
    }
}

/// Server options a vector asks for (its `server` object). A launcher turns
/// them into flags or configuration; `cli_args` gives the shared flag form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerOptions {
    /// `--motd=V`: welcome `motd`.
    pub motd: Option<String>,
    /// `--advertise-version=V`: welcome `current_cli_version`.
    pub advertise_version: Option<String>,
    /// `--signal-error=V`: welcome `error`.
    pub signal_error: Option<String>,
    /// `--disallow-list`: `list` always answers `[]`.
    pub disallow_list: bool,
    /// `--prune-interval=SECS` (not in the Python server): how often expiry runs.
    pub prune_interval: Option<u64>,
    /// `--channel-expiration=SECS` (not in the Python server): idle age after
    /// which a channel is pruned.
    pub channel_expiration: Option<u64>,
    /// `--permissions=V`, once per method, in order (not in the Python
    /// server 0.8.0): the accepted permission methods. Empty: the server's
    /// default (`none` only, nothing on the wire).
    pub permissions: Vec<PermissionMethod>,
    /// `--hashcash-bits=N` (not in the Python server 0.8.0): the bits of
    /// work a hashcash stamp must carry.
    pub hashcash_bits: Option<u32>,
}

impl ServerOptions {
    /// The command-line flags for these options, in the form both the
    /// Python server and ours accept (`--motd=V`, `--disallow-list`, …).
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(v) = &self.motd {
            args.push(format!("--motd={v}"));
        }
        if let Some(v) = &self.advertise_version {
            args.push(format!("--advertise-version={v}"));
        }
        if let Some(v) = &self.signal_error {
            args.push(format!("--signal-error={v}"));
        }
        if self.disallow_list {
            args.push("--disallow-list".to_owned());
        }
        if let Some(v) = self.prune_interval {
            args.push(format!("--prune-interval={v}"));
        }
        if let Some(v) = self.channel_expiration {
            args.push(format!("--channel-expiration={v}"));
        }
        for m in &self.permissions {
            args.push(format!("--permissions={m}"));
        }
        if let Some(v) = self.hashcash_bits {
            args.push(format!("--hashcash-bits={v}"));
        }
        args
    }

    /// True when the server would be launched with default settings.
    pub fn is_default(&self) -> bool {
        self == &ServerOptions::default()
    }
}

/// One conformance case, loaded and checked.
#[derive(Clone, Debug)]
pub struct Vector {
    /// The path relative to the vectors directory, without `.json`
    /// (`nameplate/claim-twice`).
    pub id: String,
    /// Where it was loaded from (a file path, or `bundled:ID`).
    pub source: String,
    /// One sentence: what behaviour this checks.
    pub description: String,
    /// The protocol sections it checks.
    pub spec: Vec<String>,
    /// How much its outcome matters.
    pub class: Class,
    /// The capabilities it declares in `requires`.
    pub requires: BTreeSet<Capability>,
    /// Whether the vector had a (possibly empty-valued) `server` object.
    pub has_server_options: bool,
    /// Launch options (`server`).
    pub server: ServerOptions,
    /// Free-form notes (`notes`), e.g. why it is informational.
    pub notes: Vec<String>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// App names used (`""` for `$appid`), so each run can make fresh ids.
    pub(crate) appid_names: BTreeSet<String>,
    /// Side names used, so each run can make fresh sides.
    pub(crate) side_names: BTreeSet<String>,
}

impl Vector {
    /// Every capability the target must offer: the declared ones, plus
    /// `launch` when a `server` object or `restart`/`prune` needs a server
    /// of its own.
    pub fn needs(&self) -> BTreeSet<Capability> {
        let mut needs = self.requires.clone();
        if self.has_server_options || !needs.is_empty() {
            needs.insert(Capability::Launch);
        }
        needs
    }

    /// True when the vector gets a server of its own instead of the shared one.
    pub fn needs_own_server(&self) -> bool {
        self.needs().contains(&Capability::Launch)
    }
}

/// One step of a vector.
#[derive(Clone, Debug)]
pub struct Step {
    /// Zero-based position in `steps`.
    pub index: usize,
    /// What to do.
    pub action: Action,
    /// The step's JSON, for diffs and reports.
    pub source: Value,
}

/// The action of a step (exactly one per step).
#[derive(Clone, Debug)]
pub enum Action {
    /// Open a WebSocket connection (optionally expect welcome and bind).
    Connect(ConnectStep),
    /// A plain HTTP request to the target's host.
    Http(HttpStep),
    /// Send one frame.
    Send {
        /// Connection name.
        conn: String,
        /// What to send.
        payload: Payload,
    },
    /// Expect the next event on a connection.
    Expect {
        /// Connection name.
        conn: String,
        /// What must arrive.
        expectation: Expectation,
        /// Overrides the step timeout for this step.
        within_ms: Option<u64>,
    },
    /// Nothing may arrive for `ms`.
    ExpectSilence {
        /// Connection name.
        conn: String,
        /// Window length.
        ms: u64,
    },
    /// Ping and wait for ack + pong.
    Sync {
        /// Connection name.
        conn: String,
    },
    /// Clean WebSocket close.
    Disconnect {
        /// Connection name.
        conn: String,
    },
    /// Abrupt TCP close without a close frame.
    Drop {
        /// Connection name.
        conn: String,
    },
    /// Wait.
    Sleep {
        /// Milliseconds.
        ms: u64,
    },
    /// Restart the launched server.
    Restart(RestartKind),
}

/// How a `restart` step stops the server before starting it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartKind {
    /// Abrupt: SIGKILL for a process; drop everything for an in-process server.
    Kill,
    /// Graceful: SIGTERM for a process; the shutdown signal in-process.
    Graceful,
}

impl fmt::Display for RestartKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartKind::Kill => "kill",
            RestartKind::Graceful => "graceful",
        })
    }
}

/// A `connect` step.
#[derive(Clone, Debug)]
pub struct ConnectStep {
    /// Connection name.
    pub conn: String,
    /// Replaces the URL's path (and query), e.g. `/v1/`.
    pub path: Option<String>,
    /// Extra request headers (values may use variables).
    pub headers: Vec<(String, String)>,
    /// Patterns for headers of the 101 response (names case-insensitive).
    pub expect_headers: Vec<(String, Pattern)>,
    /// Shorthand: expect welcome, bind with `$side:NAME`, expect the ack.
    pub bind: Option<String>,
    /// The app id for the bind shorthand (default `$appid`).
    pub appid: Option<String>,
}

/// An `http` step.
#[derive(Clone, Debug)]
pub struct HttpStep {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request path (and query).
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Pattern for the status code (a number).
    pub expect_status: Option<Pattern>,
    /// Pattern for the body (a string).
    pub expect_body: Option<Pattern>,
    /// Patterns for response headers (names case-insensitive).
    pub expect_headers: Vec<(String, Pattern)>,
}

/// What a `send` step sends.
#[derive(Clone, Debug)]
pub enum Payload {
    /// JSON (after substitution) in a text frame.
    Message(Value),
    /// A raw text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// JSON (after substitution) in a binary frame.
    BinaryMessage(Value),
}

/// What an `expect` step waits for.
#[derive(Clone, Debug)]
pub enum Expectation {
    /// `count` text frames in a row, each matching the pattern.
    Message {
        /// The pattern.
        pattern: Pattern,
        /// How many frames.
        count: u32,
    },
    /// The next event matches one of these.
    AnyOf(Vec<Alternative>),
    /// The server closes the connection before sending another data frame.
    Closed,
}

/// One alternative of `any_of`.
#[derive(Clone, Debug)]
pub enum Alternative {
    /// A text frame matching the pattern.
    Message(Pattern),
    /// The connection closes.
    Closed,
}
