//! chatfleet-load: opens many WebSocket users over many rooms on one or more chat nodes, has
//! them chat at a set rate, and reports what the node delivered, how fast, and at what cost.
//! `docs/benchmarks.md` gives the scenarios and the commands that reproduce them.

mod args;
mod report;
mod run;
mod stats;
mod user;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = args::Args::parse();
    match run::run(&args).await {
        Ok(report) => {
            report.print();
            if let Some(path) = &args.json {
                let json = serde_json::to_string_pretty(&report).expect("reports serialize");
                if let Err(error) = std::fs::write(path, json) {
                    eprintln!("cannot write {}: {error}", path.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("chatfleet-load: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
