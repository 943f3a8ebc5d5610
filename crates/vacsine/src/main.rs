//! `vacsine`: the command-line interface. Exit codes are decided in [`exit`] (one `Exit`
//! type); this is the only caller of `std::process::exit`. The layout is in ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod approvalcmd;
mod assess;
mod checkcmd;
mod cli;
mod commands;
mod drivers;
mod enforcecmd;
mod exit;
mod follow;
mod gccmd;
mod nftcheck;
mod orch;
mod output;
mod paths;
mod posturecmd;
mod progress;
mod registrycmd;
mod responsecmd;
mod runcmd;
mod scapcmd;
mod scapdocs;
mod siteenforce;
mod toolcmd;
mod usercmd;
mod validatecmd;
mod watch;

use clap::Parser;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            std::process::exit(exit::Exit::of_usage(&e).code());
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
            std::process::exit(exit::Exit::Error.code());
        }
    };
    let exit = rt.block_on(commands::dispatch(args));
    std::process::exit(exit.code());
}
