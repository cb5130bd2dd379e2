//! The harness's own smoke vectors (`tests/smoke/`): they always load, and
//! `cargo test -p wormhole-mailbox-harness -- --ignored` runs them against
//! the pinned Python reference server in the project's `.venv`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wormhole_mailbox_harness::{load, CommandLauncher, Outcome, RunOptions, Suite, Target};

fn smoke_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/smoke")
}

#[test]
fn smoke_vectors_load() {
    let vectors = load(smoke_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(vectors.len() >= 6);
}

#[tokio::test]
#[ignore = "needs the Python reference server (bash ci/setup-venv.sh)"]
async fn smoke_vectors_pass_on_the_python_reference() {
    let twist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/twist");
    assert!(twist.exists(), "{} is missing", twist.display());
    let cmd = format!(
        "{} wormhole-mailbox --port=tcp:{{port}}:interface=127.0.0.1 --channel-db={{db}}",
        twist.display()
    );
    let suite = Suite::new(
        Target::Launcher(Arc::new(CommandLauncher::new(cmd))),
        RunOptions {
            step_timeout: Duration::from_secs(10),
        },
    );
    let vectors = load(smoke_dir()).unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    for v in &vectors {
        let r = suite.run(v).await;
        if r.outcome != Outcome::Pass {
            failures.push(format!(
                "{}: {:?}\n{}",
                r.id,
                r.reason,
                r.diff.unwrap_or_default()
            ));
        }
    }
    suite.shutdown().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
