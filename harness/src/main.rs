//! `wormhole-mailbox-conformance`: runs the conformance vectors against a
//! mailbox server (`run`, the default, alias `test`) or records a real
//! client session as a draft vector (`record`), or generates load against
//! a server and reports its throughput and latency (`bench`).

use clap::{Args, Parser, Subcommand};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wormhole_mailbox_harness::record::{draft_vector, record, render_vector, RecordOptions};
use wormhole_mailbox_harness::report::{json_report, junit_report};
use wormhole_mailbox_harness::{
    filter, load, load_bundled, parse_vector, Capability, CommandLauncher, Outcome, Profile,
    RunOptions, RunResult, Suite, Summary, Target, Vector,
};

/// Conformance harness for Magic Wormhole mailbox servers.
#[derive(Parser, Debug)]
#[command(
    name = "wormhole-mailbox-conformance",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run vectors against a server (the default when no subcommand is given).
    #[command(alias = "test")]
    Run(RunArgs),
    /// Proxy a real client to a server and write the session as a draft vector.
    Record(RecordArgs),
    /// Generate load against a server (pairs, idle, churn) and report
    /// throughput, latency percentiles, errors and CPU/RSS use.
    Bench(wormhole_mailbox_harness::bench::BenchArgs),
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// The server's WebSocket URL (e.g. ws://127.0.0.1:4000/v1). Vectors that
    /// need launch, restart or prune are skipped.
    #[arg(long, conflicts_with = "server_cmd")]
    url: Option<String>,
    /// A command that starts the server, with {port} and {db} (and {dir})
    /// placeholders; the harness appends the vector's flags (--motd=…).
    #[arg(long, value_name = "CMD")]
    server_cmd: Option<String>,
    /// An extra capability of --server-cmd: `prune` (the server accepts
    /// --prune-interval/--channel-expiration) or `permissions` (it implements
    /// the permissions extension: --permissions=METHOD, --hashcash-bits=N).
    #[arg(long = "capability", value_name = "CAP")]
    capabilities: Vec<Capability>,
    /// A vectors directory (default: the copy bundled into this binary).
    #[arg(long, value_name = "DIR")]
    vectors: Option<PathBuf>,
    /// Only vectors whose id matches one of these (glob with * and ?, or a
    /// substring).
    #[arg(value_name = "FILTER")]
    filters: Vec<String>,
    /// List the selected vectors and exit.
    #[arg(long)]
    list: bool,
    /// Vectors run in parallel.
    #[arg(long, short = 'j', default_value_t = 4, value_name = "N")]
    jobs: usize,
    /// How long a step may wait (frame, handshake, close).
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    step_timeout_ms: u64,
    /// How long a launched server may take to accept connections.
    #[arg(long, default_value_t = 30000, value_name = "MS")]
    startup_timeout_ms: u64,
    /// Write a JSON report (summary and every result with its transcript).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a JUnit XML report.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Which classes count for the exit status: required, reference
    /// (= required + reference) or all.
    #[arg(long, default_value = "reference", value_name = "PROFILE")]
    profile: Profile,
    /// Print only failures and the summary.
    #[arg(long, short)]
    quiet: bool,
    /// Print the transcript of every failure.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Args, Debug)]
struct RecordArgs {
    /// Where the client connects.
    #[arg(long, default_value = "127.0.0.1:4001")]
    listen: SocketAddr,
    /// The server to forward to (ws://HOST:PORT/v1).
    #[arg(long)]
    upstream: String,
    /// Write the draft vector here (default: standard output).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Stop after this long with no open connection (once one has closed).
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    idle_ms: u64,
    /// Stop once this many connections have finished.
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        // its own runtime: current-thread unless --threads says otherwise
        Some(Command::Bench(args)) => return wormhole_mailbox_harness::bench::main(args),
        other => other,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Some(Command::Record(args)) => rt.block_on(record_cmd(args)),
        Some(Command::Run(args)) => rt.block_on(run_cmd(args)),
        Some(Command::Bench(_)) => return ExitCode::from(2),
        None => rt.block_on(run_cmd(cli.run)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_vectors(args: &RunArgs) -> anyhow::Result<Vec<Vector>> {
    let all = match &args.vectors {
        Some(dir) => load(dir)?,
        None => load_bundled()?,
    };
    Ok(all
        .into_iter()
        .filter(|v| filter::selected(&args.filters, &v.id))
        .collect())
}

async fn run_cmd(args: RunArgs) -> anyhow::Result<ExitCode> {
    let vectors = load_vectors(&args)?;
    if args.list {
        let mut out = std::io::stdout().lock();
        for v in &vectors {
            let needs: Vec<&str> = v.needs().into_iter().map(Capability::as_str).collect();
            let needs = if needs.is_empty() {
                String::new()
            } else {
                format!("  requires: {}", needs.join(", "))
            };
            // A closed pipe (`| head`) just ends the listing.
            if writeln!(out, "{}  [{}]{needs}", v.id, v.class).is_err() {
                break;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let target = match (&args.url, &args.server_cmd) {
        (Some(url), None) => {
            if !args.capabilities.is_empty() {
                anyhow::bail!("--capability only applies to --server-cmd (a plain URL has none)");
            }
            wormhole_mailbox_harness::conn::Endpoint::parse(url).map_err(anyhow::Error::msg)?;
            Target::Url(url.clone())
        }
        (None, Some(cmd)) => {
            let mut l = CommandLauncher::new(cmd.clone())
                .with_startup_timeout(Duration::from_millis(args.startup_timeout_ms));
            for c in &args.capabilities {
                l = l.with_capability(*c);
            }
            Target::Launcher(Arc::new(l))
        }
        _ => anyhow::bail!("give --url URL or --server-cmd CMD (or --list)"),
    };
    if vectors.is_empty() {
        eprintln!("no vectors selected");
    }
    let suite = Arc::new(Suite::new(
        target,
        RunOptions {
            step_timeout: Duration::from_millis(args.step_timeout_ms),
        },
    ));
    let started = Instant::now();
    let results = tokio::select! {
        r = run_all(&suite, &vectors, &args) => r,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the running vectors kills their servers
            // (kill_on_drop); the shared one is stopped here.
            eprintln!("interrupted: stopping servers");
            suite.shutdown().await;
            return Ok(ExitCode::from(130));
        }
    };
    suite.shutdown().await;
    report(&args, &results, started.elapsed())
}

async fn run_all(suite: &Arc<Suite>, vectors: &[Vector], args: &RunArgs) -> Vec<RunResult> {
    let total = vectors.len();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    // Vectors with a server of their own are slower: start them first.
    let mut order: Vec<(usize, &Vector)> = vectors.iter().enumerate().collect();
    order.sort_by_key(|(i, v)| (!v.needs_own_server(), *i));
    for (i, v) in order {
        let (suite, sem, v) = (suite.clone(), sem.clone(), v.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, suite.run(&v).await)
        });
    }
    let mut results: Vec<Option<RunResult>> = vec![None; total];
    let mut done = 0;
    while let Some(joined) = set.join_next().await {
        let Ok((i, r)) = joined else { continue };
        done += 1;
        let show = !args.quiet || (r.outcome == Outcome::Fail && args.profile.counts(r.class));
        if show {
            let mark = match r.outcome {
                Outcome::Pass => "pass".to_owned(),
                Outcome::Skip => "skip".to_owned(),
                Outcome::Fail if args.profile.counts(r.class) => "FAIL".to_owned(),
                Outcome::Fail => "fail (not counted)".to_owned(),
            };
            let why = match (&r.outcome, &r.reason) {
                (Outcome::Pass, _) | (_, None) => String::new(),
                (_, Some(reason)) => format!("  {reason}"),
            };
            eprintln!(
                "[{done:>4}/{total}] {mark:<4} {} [{}] ({} ms){why}",
                r.id,
                r.class,
                r.duration.as_millis()
            );
        }
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(r);
        }
    }
    results.into_iter().flatten().collect()
}

fn report(args: &RunArgs, results: &[RunResult], elapsed: Duration) -> anyhow::Result<ExitCode> {
    let summary = Summary::new(results, args.profile);
    let mut out = std::io::stdout().lock();
    let failures: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Fail)
        .collect();
    if !failures.is_empty() {
        writeln!(out, "\nfailures:")?;
        for r in failures {
            let counted = if args.profile.counts(r.class) {
                ""
            } else {
                ", not counted"
            };
            writeln!(out, "\n--- {} [{}{counted}]", r.id, r.class)?;
            writeln!(out, "{}", r.reason.as_deref().unwrap_or(""))?;
            if let Some(d) = &r.diff {
                writeln!(out, "{d}")?;
            }
            if args.verbose {
                writeln!(out, "transcript:\n{}", r.transcript_text())?;
            }
        }
    }
    writeln!(out, "\nsummary ({:.1} s):", elapsed.as_secs_f64())?;
    write!(out, "{}", summary.render())?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&json_report(results, &summary))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, junit_report(results, args.profile))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn record_cmd(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let opts = RecordOptions {
        listen: args.listen,
        upstream: args.upstream.clone(),
        idle: Duration::from_millis(args.idle_ms),
        max_connections: args.connections,
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let events = record(&opts, stop, |addr| {
        eprintln!(
            "recording: point the client at ws://{addr}/v1 (forwarding to {}); stops when idle for {} ms after the last connection closes, or on Ctrl-C",
            args.upstream, args.idle_ms
        );
    })
    .await?;
    let vector = draft_vector(&events, &args.upstream);
    let text = render_vector(&vector);
    if let Err(e) = parse_vector("recorded/draft", "draft", &text) {
        eprintln!("warning: the draft does not load as a vector yet:\n{e}");
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            eprintln!(
                "wrote {} ({} steps)",
                path.display(),
                vector["steps"].as_array().map_or(0, Vec::len)
            );
        }
        None => {
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    }
    Ok(ExitCode::SUCCESS)
}
