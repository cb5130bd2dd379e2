//! `wormhole_mailbox._native`: the private native module behind the
//! `wormhole_mailbox` Python package. It converts Python arguments into a
//! server [`Config`](wormhole_mailbox_server::Config), starts the server
//! library on a background tokio runtime and converts introspection results
//! back; no protocol logic lives here. It also exposes the conformance
//! harness (`wormhole_mailbox_harness`) for `wormhole_mailbox.conformance`.

mod conformance;
mod convert;
mod options;
mod server;

use pyo3::prelude::*;

pyo3::create_exception!(
    wormhole_mailbox._native,
    ServerError,
    pyo3::exceptions::PyRuntimeError,
    "The mailbox server could not start or stopped with an error."
);

/// The module initialiser called by `import wormhole_mailbox._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<server::MailboxServer>()?;
    m.add_function(wrap_pyfunction!(conformance::run_conformance, m)?)?;
    m.add("ServerError", m.py().get_type::<ServerError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
