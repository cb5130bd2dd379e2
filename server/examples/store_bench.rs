//! Times the channel store's commits in isolation: the mutations of
//! wormhole pairs (10 at a time, a few commands per transaction, as the
//! group-commit writer batches them under load), CPU microseconds per pair.
//! `cargo run --release --example store_bench -p wormhole-mailbox-server [PAIRS]`

use std::time::Instant;
use wormhole_mailbox_server::protocol::{Mutation, StoredMessage};
use wormhole_mailbox_server::store::{Durability, SqliteStore, Store};

fn cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// One pair's mutations, in the order the core emits them, grouped by command.
fn pair(i: usize) -> Vec<Vec<Mutation>> {
    let app = "lothar.com/wormhole/bench".to_owned();
    let mb = format!("mb{i:016x}");
    let np = format!("{i}");
    let side = |s: usize| format!("{s:010x}");
    let mut cmds = vec![
        vec![
            Mutation::CreateMailbox {
                app_id: app.clone(),
                mailbox_id: mb.clone(),
                for_nameplate: true,
                updated: 1.0,
            },
            Mutation::CreateNameplate {
                app_id: app.clone(),
                name: np.clone(),
                mailbox_id: mb.clone(),
            },
            Mutation::AddNameplateSide {
                app_id: app.clone(),
                name: np.clone(),
                side: side(1),
                added: 1.0,
            },
        ],
        vec![Mutation::AddNameplateSide {
            app_id: app.clone(),
            name: np.clone(),
            side: side(2),
            added: 1.0,
        }],
    ];
    for s in [1, 2] {
        cmds.push(vec![Mutation::AddMailboxSide {
            app_id: app.clone(),
            mailbox_id: mb.clone(),
            side: side(s),
            added: 1.0,
        }]);
    }
    for round in 0..4 {
        for s in [1, 2] {
            cmds.push(vec![
                Mutation::AddMessage {
                    app_id: app.clone(),
                    mailbox_id: mb.clone(),
                    message: StoredMessage {
                        side: side(s),
                        phase: serde_json::json!(round.to_string()),
                        body: serde_json::json!("ab".repeat(32)),
                        server_rx: 1.0,
                        id: serde_json::json!("0123"),
                    },
                },
                Mutation::TouchMailbox {
                    app_id: app.clone(),
                    mailbox_id: mb.clone(),
                    updated: 2.0,
                },
            ]);
        }
    }
    for s in [1, 2] {
        cmds.push(vec![Mutation::ReleaseNameplateSide {
            app_id: app.clone(),
            name: np.clone(),
            side: side(s),
        }]);
    }
    cmds.push(vec![Mutation::DeleteNameplate {
        app_id: app.clone(),
        name: np.clone(),
    }]);
    for s in [1, 2] {
        cmds.push(vec![Mutation::CloseMailboxSide {
            app_id: app.clone(),
            mailbox_id: mb.clone(),
            side: side(s),
            mood: Some("happy".into()),
        }]);
    }
    cmds.push(vec![Mutation::DeleteMailbox {
        app_id: app,
        mailbox_id: mb,
    }]);
    cmds
}

fn main() -> anyhow::Result<()> {
    let pairs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("relay.sqlite");
    for per_commit in [1usize, 2, 4] {
        let _ = std::fs::remove_file(&path);
        let mut store = SqliteStore::open(path.to_str().unwrap_or_default(), Durability::Process)?;
        let (cpu, wall) = (cpu_seconds(), Instant::now());
        let mut commits = 0;
        for group in 0..pairs / 10 {
            let cmds: Vec<_> = (0..10).map(|k| pair(group * 10 + k)).collect();
            let steps = cmds[0].len();
            // each transaction: `per_commit` commands of each of the 10 pairs
            for s in (0..steps).step_by(per_commit) {
                let batch: Vec<Mutation> = cmds
                    .iter()
                    .flat_map(|c| c[s..(s + per_commit).min(steps)].iter().flatten().cloned())
                    .collect();
                store.apply(&batch)?;
                commits += 1;
            }
        }
        let cpu = cpu_seconds() - cpu;
        println!(
            "{per_commit} command(s) per pair per commit: {:.1} us CPU per pair, {:.1} us per commit, {:.2} commits per pair, wall {:.2} s",
            cpu / pairs as f64 * 1e6,
            cpu / commits as f64 * 1e6,
            commits as f64 / pairs as f64,
            wall.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
