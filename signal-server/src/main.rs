//! `trellis-signal`: see `--help`, and README.md ("Running the signal server").

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use trellis_signal::clock::SystemClock;
use trellis_signal::config::{Args, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = args.log.clone().unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_new(&filter).with_context(|| format!("invalid log filter {filter:?}"))?,
        )
        .init();
    let settings = Settings::resolve(args)?;
    // Before the server says it is up (see stop_signal).
    let stop = trellis_protocol::shutdown::stop_signal().context("cannot watch SIGTERM and SIGINT")?;
    let server = trellis_signal::server::start(&settings, Arc::new(SystemClock)).await?;
    stop.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}
