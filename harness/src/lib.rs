//! Conformance harness for Magic Wormhole mailbox (rendezvous) servers.
//!
//! The harness knows vectors (JSON transcripts, specified in
//! `vectors/README.md`) and a server URL, never a server implementation:
//!
//! * [`load`] / [`load_bundled`] read and check vectors (JSON Schema plus
//!   semantic checks), [`Vector`] is the checked model;
//! * [`run_vector`] drives one vector over real WebSockets (several named
//!   connections, a reader task per connection, per-step timeouts) and
//!   returns a [`RunResult`] with the transcript and a diff on failure;
//! * [`Target`], [`Launcher`] and [`Running`] say what to run against: a
//!   plain URL, a command ([`CommandLauncher`]) or a Rust caller's own
//!   in-process server; [`Suite`] schedules vectors onto it;
//! * [`trials`] turns everything into libtest-mimic trials for
//!   `cargo test`, with known divergences and insta snapshots;
//! * [`record`](mod@record) drafts new vectors from a real client session;
//! * [`bench`] generates load (pairs, idle connections, churn) against any
//!   server and reports throughput, latency and CPU/RSS use.
//!
//! A server's conformance test looks like this (`harness = false`):
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn launcher() -> Arc<dyn wormhole_mailbox_harness::Launcher> { unimplemented!() }
//! use wormhole_mailbox_harness as harness;
//!
//! fn main() -> anyhow::Result<()> {
//!     let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
//!     let vectors = harness::load(root.join("vectors"))?;
//!     let conclusion = harness::run_trials(
//!         vectors,
//!         launcher(),
//!         harness::TrialOptions {
//!             known_divergences: &["nameplate/unicode-digits"],
//!             snapshot_dir: Some(root.join("server/tests/snapshots")),
//!             ..Default::default()
//!         },
//!     )?;
//!     conclusion.exit()
//! }
//! ```

pub mod bench;
pub mod command;
pub mod conn;
pub mod filter;
pub mod hashcash;
pub mod http;
pub mod json;
pub mod load;
pub mod pattern;
pub mod record;
pub mod report;
pub mod run;
pub mod target;
pub mod transcript;
pub mod trials;
pub mod vars;
pub mod vector;

pub use command::CommandLauncher;
pub use load::{load, load_bundled, parse_vector, LoadError, LoadErrors, Problem};
pub use pattern::{Mismatch, Pattern};
pub use report::{Profile, Summary};
pub use run::{run_vector, Outcome, RunOptions, RunResult, ServerRef};
pub use target::{BoxFuture, LaunchOptions, Launcher, Running, Suite, Target};
pub use trials::{run_trials, snapshot_name, trials, TrialOptions};
pub use vector::{Capability, Class, PermissionMethod, RestartKind, ServerOptions, Vector};

/// Re-exported so a conformance test needs no direct dependency.
pub use libtest_mimic;
