//! `trellisd`: the privileged Trellis helper. See `trellisd --help` and README.md.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use trellis_helper::daemon::{Daemon, DaemonConfig};

/// The Trellis helper: owns the device key, the TUN device, ICE and WireGuard, and
/// answers the `trellis` CLI and the desktop app on a local socket.
#[derive(Parser, Debug)]
#[command(name = "trellisd", version, about)]
struct Args {
    /// Where the device key and state live (root-only).
    #[arg(long, env = "TRELLIS_STATE_DIR", default_value = trellis_helper::paths::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The local control socket for `trellis` and the app.
    #[arg(long, env = "TRELLIS_SOCKET", default_value = trellis_helper::paths::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Name of the TUN device.
    #[arg(long, env = "TRELLIS_TUN", default_value = "trellis0")]
    tun: String,
    /// UDP port for ICE and WireGuard (0: any free port).
    #[arg(long, env = "TRELLIS_PORT", default_value_t = 0)]
    port: u16,
    /// This device's name on first start (default: the host name); later `trellis rename`.
    #[arg(long)]
    name: Option<trellis_protocol::DeviceName>,
    /// Log filter, as in RUST_LOG.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(EnvFilter::try_new(&args.log).context("invalid log filter")?)
        .init();
    let config =
        DaemonConfig { state_dir: args.state_dir, tun_name: args.tun, port: args.port, name: args.name };
    let daemon = Daemon::start(config).await?;
    let server = trellis_helper::daemon::serve_ipc(daemon, &args.socket).await?;
    shutdown_signal().await?;
    tracing::info!("shutting down");
    drop(server);
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot watch SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("cannot watch Ctrl-C")?;
    Ok(())
}
