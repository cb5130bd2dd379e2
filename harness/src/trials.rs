//! `cargo test` integration: turns vectors and a [`Launcher`] into
//! libtest-mimic trials (one per vector, named by id), with a list of known
//! divergences shown as ignored and optional insta snapshots of each
//! vector's normalised transcript under explicit names.

use crate::run::{Outcome, RunOptions, RunResult};
use crate::target::{Launcher, Suite, Target};
use crate::vector::{Class, Vector};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Settings for [`trials`].
#[derive(Clone, Debug, Default)]
pub struct TrialOptions<'a> {
    /// Vector ids the server deliberately does not match: their trials are
    /// marked ignored (run them with `--include-ignored`). Every entry must
    /// name a loaded vector, so the list cannot go stale silently.
    pub known_divergences: &'a [&'a str],
    /// Where to keep insta snapshots of the normalised transcripts (`None`:
    /// no snapshots). Relative paths are taken from the current directory
    /// (the package root under `cargo test`).
    pub snapshot_dir: Option<PathBuf>,
    /// Step timeout and friends.
    pub run: RunOptions,
}

/// The snapshot name of a vector: its id with `/` replaced by `__`
/// (`nameplate/claim-twice` → `nameplate__claim-twice`, stored as
/// `nameplate__claim-twice.snap` in the snapshot directory).
pub fn snapshot_name(id: &str) -> String {
    id.replace('/', "__")
}

/// Owns the runtime and the suite shared by all trials; stops the shared
/// server when the last trial is gone.
struct Shared {
    rt: tokio::runtime::Runtime,
    suite: Suite,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            self.rt.block_on(self.suite.shutdown());
        }
    }
}

/// Builds one libtest-mimic trial per vector.
///
/// * A trial runs its vector against `launcher` (one shared server for
///   ordinary vectors, a fresh one for vectors with launch options, a
///   restart or pruning), and fails with the reason, the diff and the
///   transcript.
/// * `informational` vectors never fail: a mismatch is printed to stderr.
/// * Vectors the launcher cannot run are ignored at run time with the
///   reason (e.g. `requires prune`).
/// * `known_divergences` are marked ignored.
/// * With `snapshot_dir`, a trial that passed (or an informational one)
///   asserts an insta snapshot named by [`snapshot_name`].
///
/// Call it from a plain `fn main()` (a `harness = false` test), not from
/// inside a tokio runtime: the trials run on the harness's own runtime.
pub fn trials(
    vectors: Vec<Vector>,
    launcher: Arc<dyn Launcher>,
    options: TrialOptions<'_>,
) -> anyhow::Result<Vec<Trial>> {
    let unknown: Vec<&str> = options
        .known_divergences
        .iter()
        .copied()
        .filter(|d| !vectors.iter().any(|v| v.id == *d))
        .collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "known_divergences names no loaded vector: {}",
            unknown.join(", ")
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let shared = Arc::new(Shared {
        rt,
        suite: Suite::new(Target::Launcher(launcher), options.run.clone()),
    });
    let snapshot_dir = match options.snapshot_dir {
        Some(d) if d.is_relative() => Some(std::env::current_dir()?.join(d)),
        other => other,
    };
    Ok(vectors
        .into_iter()
        .map(|v| {
            let ignored = options.known_divergences.contains(&v.id.as_str());
            let shared = Arc::clone(&shared);
            let dir = snapshot_dir.clone();
            let skip = shared.suite.target().skip_reason(&v);
            Trial::ignorable_test(v.id.clone(), move || {
                if let Some(reason) = skip {
                    return Ok(Completion::ignored_with(reason));
                }
                let result = shared.rt.block_on(shared.suite.run(&v));
                drop(shared);
                verdict(&v, &result, dir.as_deref())
            })
            .with_ignored_flag(ignored)
        })
        .collect())
}

/// Parses the test binary's arguments, builds the [`trials`] and runs them:
/// the whole body of a `harness = false` conformance test.
pub fn run_trials(
    vectors: Vec<Vector>,
    launcher: Arc<dyn Launcher>,
    options: TrialOptions<'_>,
) -> anyhow::Result<libtest_mimic::Conclusion> {
    let args = libtest_mimic::Arguments::from_args();
    let trials = trials(vectors, launcher, options)?;
    Ok(libtest_mimic::run(&args, trials))
}

fn failure_text(r: &RunResult) -> String {
    format!(
        "{}\n\n{}\n\ntranscript:\n{}",
        r.reason.as_deref().unwrap_or("failed"),
        r.diff.as_deref().unwrap_or(""),
        r.transcript_text()
    )
}

fn verdict(v: &Vector, r: &RunResult, snapshots: Option<&Path>) -> Result<Completion, Failed> {
    match r.outcome {
        Outcome::Skip => Ok(Completion::ignored_with(
            r.reason.clone().unwrap_or_default(),
        )),
        Outcome::Fail if v.class != Class::Informational => Err(Failed::from(failure_text(r))),
        outcome => {
            if outcome == Outcome::Fail {
                eprintln!(
                    "note: informational vector {} differs (not a failure): {}\n{}",
                    v.id,
                    r.reason.as_deref().unwrap_or(""),
                    r.diff.as_deref().unwrap_or("")
                );
            }
            if let Some(dir) = snapshots {
                snapshot(dir, &v.id, &r.normalized_transcript())?;
            }
            Ok(Completion::Completed)
        }
    }
}

/// Asserts the insta snapshot `snapshot_name(id)` in `dir` with explicit
/// settings (insta would otherwise name snapshots after the calling
/// function, which is the same for every trial).
pub fn snapshot(dir: &Path, id: &str, text: &str) -> Result<(), Failed> {
    let name = snapshot_name(id);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_description(format!("normalised transcript of vector {id}"));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_snapshot!(name.as_str(), text));
    }));
    outcome.map_err(|_| {
        Failed::from(format!(
            "snapshot {name} (in {}) differs from the normalised transcript; review with `cargo insta review` or rerun with INSTA_UPDATE=always",
            dir.display()
        ))
    })
}
