//! `trellisd`: the privileged Trellis helper. See `trellisd --help` and README.md.
//!
//! Normally started by the system's service manager (systemd, launchd, the Windows service
//! control manager), which the packages set up. `trellisd install-service` sets the service
//! up where no package did: from the AppImage, the macOS app bundle, or a plain download.

mod service;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;
use trellis_helper::daemon::{Daemon, DaemonConfig};
use trellis_helper::tun::{requested_name, Platform};

/// The Trellis helper: owns the device key, the TUN device, ICE and WireGuard, and
/// answers the `trellis` CLI and the desktop app on a local socket.
#[derive(Parser, Debug)]
#[command(name = "trellisd", version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

/// How the helper runs.
#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Where the device key and state live (root-only).
    #[arg(long, env = "TRELLIS_STATE_DIR", default_value = trellis_helper::paths::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The local control socket for `trellis` and the app.
    #[arg(long, env = "TRELLIS_SOCKET", default_value = trellis_helper::paths::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Name of the TUN device. On macOS `utun` (the system picks a free utunN, logged
    /// when the tunnel comes up) or `utunN`; on Windows the name of the wintun adapter.
    #[arg(
        long,
        env = "TRELLIS_TUN",
        value_parser = tun_name,
        default_value = Platform::CURRENT.default_tun_name()
    )]
    tun: String,
    /// UDP port for ICE and WireGuard (0: any free port).
    #[arg(long, env = "TRELLIS_PORT", default_value_t = 0)]
    port: u16,
    /// This device's name on first start (default: the host name); later `trellis rename`.
    #[arg(long)]
    name: Option<trellis_protocol::DeviceName>,
    /// A user (uid) who may control the helper without being in the group `trellis`: the
    /// person who installed it, who would otherwise have to log in again before their new
    /// group counts. The installers set it (TRELLIS_OWNER_UID in the service's environment).
    #[cfg(unix)]
    #[arg(long, env = "TRELLIS_OWNER_UID", value_name = "UID")]
    owner_uid: Option<u32>,
    /// The same on Windows: the installing user's SID, who may control the helper before
    /// their membership of `Trellis Users` counts (install-service writes it into the
    /// service's environment).
    #[cfg(windows)]
    #[arg(long, env = trellis_helper::ipc::OWNER_SID_ENV, value_name = "SID")]
    owner_sid: Option<trellis_helper::ipc::windows_acl::Sid>,
    /// Log filter, as in RUST_LOG.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
    /// Run under the Windows service control manager (the service's command line has it).
    #[cfg(windows)]
    #[arg(long, hide = true)]
    service: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install this trellisd as the system's Trellis service and start it (as root or
    /// administrator). Says what it does, step by step.
    InstallService(service::InstallArgs),
    /// Stop and remove the service installed by `install-service`; the device key and
    /// state stay unless --purge.
    UninstallService(service::UninstallArgs),
}

/// Checks `--tun` at start, rather than when the tunnel first comes up.
fn tun_name(name: &str) -> Result<String, trellis_helper::tun::InvalidTunName> {
    requested_name(Platform::CURRENT, name).map(|_| name.to_string())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::InstallService(install)) => service::install(&install),
        Some(Command::UninstallService(uninstall)) => service::uninstall(&uninstall),
        None => {
            #[cfg(windows)]
            if args.run.service {
                return service::run_as_windows_service(args.run);
            }
            init_logging(
                &args.run.log,
                BoxMakeWriter::new(std::io::stderr),
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )?;
            runtime()?.block_on(async {
                // Before the socket exists, so that a stop right after it cannot kill the helper
                // uncleanly (see stop_signal).
                let stop =
                    trellis_protocol::shutdown::stop_signal().context("cannot watch SIGTERM and SIGINT")?;
                let shutdown = async move {
                    stop.await;
                    Ok(())
                };
                run(args.run, || {}, shutdown).await
            })
        }
    }
}

/// Logs to `writer`: stderr (the journal under systemd, the log file launchd names), or a
/// file where the service manager keeps no output (Windows).
fn init_logging(filter: &str, writer: BoxMakeWriter, ansi: bool) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_env_filter(EnvFilter::try_new(filter).context("invalid log filter")?)
        .init();
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// Runs the helper until `shutdown` completes; `ready` is called once it answers on its socket.
async fn run(
    args: RunArgs,
    ready: impl FnOnce(),
    shutdown: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let config =
        DaemonConfig { state_dir: args.state_dir, tun_name: args.tun, port: args.port, name: args.name };
    let daemon = Daemon::start(config).await?;
    let mut listen = trellis_helper::ipc::ListenOptions::new(&args.socket);
    #[cfg(unix)]
    {
        listen.owner_uid = args.owner_uid;
    }
    #[cfg(windows)]
    {
        listen.owner_sid = args.owner_sid;
    }
    let server = trellis_helper::daemon::serve_ipc(daemon.clone(), &listen).await?;
    ready();
    shutdown.await?;
    tracing::info!("shutting down");
    drop(server);
    // Peers see the device offline at once, and the TUN is gone before the process is.
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tun_name_has_a_default_per_system_and_is_checked_at_start() {
        let args = Args::try_parse_from(["trellisd"]).unwrap();
        assert_eq!(args.run.tun, Platform::CURRENT.default_tun_name());
        // A name no system takes: a line break.
        let err = Args::try_parse_from(["trellisd", "--tun", "tun\n0"]).unwrap_err();
        assert!(err.to_string().contains("cannot name the TUN device"), "{err}");
    }
}
