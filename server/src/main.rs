//! The `wormhole-mailbox` command: parses the Python server's flags (and
//! ours), binds the listener, and runs the server until SIGINT/SIGTERM.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    cli::init_logging(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
