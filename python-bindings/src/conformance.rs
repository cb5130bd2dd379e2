//! `run_conformance`: the conformance harness (`wormhole_mailbox_harness`)
//! against a server URL, on a private tokio runtime with the interpreter
//! released. The harness does the work; this converts arguments and results.

use crate::convert::json_to_py;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wormhole_mailbox_harness::{
    conn::Endpoint, filter, load, load_bundled, Profile, RunOptions, RunResult, Suite, Summary,
    Target, Vector,
};

/// Runs every selected vector on `suite`, at most `jobs` at a time, and
/// returns the results in vector order.
async fn run_all(suite: Arc<Suite>, vectors: Vec<Vector>, jobs: usize) -> Vec<RunResult> {
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut set = tokio::task::JoinSet::new();
    for (i, v) in vectors.into_iter().enumerate() {
        let (suite, sem) = (suite.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, suite.run(&v).await)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok(done) = joined {
            results.push(done);
        }
    }
    suite.shutdown().await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// One result as a dict (the harness's JSON report entry, with the
/// transcript as text).
fn result_to_py<'py>(
    py: Python<'py>,
    r: &RunResult,
    profile: Profile,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", &r.id)?;
    d.set_item("class", r.class.as_str())?;
    d.set_item("outcome", r.outcome.as_str())?;
    d.set_item("counted", profile.counts(r.class))?;
    d.set_item("reason", r.reason.as_deref())?;
    d.set_item("diff", r.diff.as_deref())?;
    d.set_item("duration", r.duration.as_secs_f64())?;
    d.set_item("transcript", r.transcript_text())?;
    Ok(d)
}

/// Runs the conformance vectors against the server at `url`; returns
/// `{"summary": {...}, "results": [{...}, ...]}`.
#[pyfunction]
#[pyo3(signature = (url, *, filters = None, vectors = None, profile = "reference", jobs = 4, step_timeout = 5.0))]
pub fn run_conformance<'py>(
    py: Python<'py>,
    url: &str,
    filters: Option<Vec<String>>,
    vectors: Option<PathBuf>,
    profile: &str,
    jobs: i64,
    step_timeout: f64,
) -> PyResult<Bound<'py, PyDict>> {
    Endpoint::parse(url).map_err(PyValueError::new_err)?;
    let profile: Profile = profile.parse().map_err(PyValueError::new_err)?;
    let jobs = usize::try_from(jobs)
        .ok()
        .filter(|j| *j >= 1)
        .ok_or_else(|| PyValueError::new_err(format!("jobs must be >= 1, got {jobs}")))?;
    if !(step_timeout.is_finite() && step_timeout > 0.0) {
        return Err(PyValueError::new_err(format!(
            "step_timeout must be a positive number of seconds, got {step_timeout}"
        )));
    }
    let step_timeout = Duration::try_from_secs_f64(step_timeout)
        .map_err(|e| PyValueError::new_err(format!("step_timeout: {e}")))?;
    let filters = filters.unwrap_or_default();
    let url = url.to_owned();
    let results = py.detach(move || -> Result<Vec<RunResult>, String> {
        let all = match &vectors {
            Some(dir) => load(dir),
            None => load_bundled(),
        }
        .map_err(|e| format!("cannot load the vectors: {e}"))?;
        let selected: Vec<Vector> = all
            .into_iter()
            .filter(|v| filter::selected(&filters, &v.id))
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wormhole-conformance")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
        let suite = Arc::new(Suite::new(Target::Url(url), RunOptions { step_timeout }));
        Ok(runtime.block_on(run_all(suite, selected, jobs)))
    });
    let results = results.map_err(PyRuntimeError::new_err)?;
    let summary = Summary::new(&results, profile);
    let report = PyDict::new(py);
    report.set_item("summary", json_to_py(py, &summary.to_json())?)?;
    let list = PyList::empty(py);
    for r in &results {
        list.append(result_to_py(py, r, profile)?)?;
    }
    report.set_item("results", list)?;
    Ok(report)
}
