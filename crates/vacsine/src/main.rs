//! `vacsine`: the command-line interface. Maps every error to an exit code in one place:
//! 0 success (verified / all pass), 2 failures remain, 1 error (bad input, usage, engine
//! problem).
#![forbid(unsafe_code)]

mod approvalcmd;
mod assess;
mod cli;
mod commands;
mod drivers;
mod gccmd;
mod orch;
mod posturecmd;
mod progress;
mod registrycmd;
mod responsecmd;
mod runcmd;
mod scapcmd;
mod scapdocs;
mod siteenforce;
mod watch;

use clap::Parser;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            std::process::exit(commands::usage_exit_code(&e));
        }
    };
    let filter = std::env::var("VACSINE_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(commands::dispatch(args));
    std::process::exit(code);
}
