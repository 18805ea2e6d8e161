use clap::Parser;
use tracing_subscriber::EnvFilter;

// Logs go to stderr; stdout carries only the few lines a person needs to get going.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = chatnode::Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
    match chatnode::server::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "chatnode failed to start");
            std::process::ExitCode::FAILURE
        }
    }
}
