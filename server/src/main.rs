//! The `wormhole-mailbox` command: parses the Python server's flags (and
//! ours), binds the listener, and runs the server until SIGINT/SIGTERM.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    cli::init_logging(&args);
    // One thread for the connections, the core and the commit pipeline
    // (its writer then runs inline, see `Server::serve`): a command's path
    // from frame to durable `ack` stays on one core, without cross-thread
    // wake-ups. SQLite's checkpoints run on a thread of their own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wormhole-mailbox: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::main(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("wormhole-mailbox: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
