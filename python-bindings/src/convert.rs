//! Conversions of introspection results (JSON values, snapshot records) into
//! Python objects.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use wormhole_mailbox_server::protocol::{MailboxRecord, MailboxSide};

/// A JSON value as the matching Python object (`dict`, `list`, `str`,
/// `int`, `float`, `bool` or `None`).
pub fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// One side of a mailbox: `(side, opened, added, mood)`.
fn side_to_py<'py>(py: Python<'py>, s: &MailboxSide) -> PyResult<Bound<'py, PyTuple>> {
    (s.side.as_str(), s.opened, s.added, s.mood.as_deref()).into_pyobject(py)
}

/// A mailbox: `(id, for_nameplate, crowded, updated, message_count, sides)`.
pub fn mailbox_to_py<'py>(py: Python<'py>, m: &MailboxRecord) -> PyResult<Bound<'py, PyTuple>> {
    let sides = PyList::empty(py);
    for s in &m.sides {
        sides.append(side_to_py(py, s)?)?;
    }
    (
        m.id.as_str(),
        m.for_nameplate,
        m.crowded,
        m.updated,
        m.messages.len(),
        sides,
    )
        .into_pyobject(py)
}
