//! `trellis`, the command-line client of the helper.
//!
//! Each command checks its input locally (with the protocol's own parsers, so a mistyped
//! invite code gets the same sentence everywhere), sends one IPC request through
//! [`crate::ipc::IpcClient`], and prints the answer for a person or, with `--json`, as
//! the response's JSON. The exit code says what kind of failure happened ([`Exit`]).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use trellis_protocol::ipc::{IpcErrorCode, IpcEvent, IpcRequest, IpcResponse};
use trellis_protocol::{DeviceName, InviteId, InviteTicket, NetworkName, OverlayNet, ServerAddr};

use crate::ipc::{ClientError, IpcClient, DEFAULT_ENDPOINT};

mod input;
pub mod render;
#[cfg(all(test, unix))]
mod tests;

/// How the CLI introduces itself to the helper (shown in the helper's logs).
const CLIENT_NAME: &str = concat!("trellis-cli ", env!("CARGO_PKG_VERSION"));

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done
  1  the helper or the signal server refused the request (the message says why)
  2  invalid usage or input
  3  the helper is not running or cannot be reached
  4  permission denied: this user may not control Trellis
  5  the helper is another version of Trellis";

/// What `trellis` exits with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Exit {
    Ok = 0,
    /// The helper (or the signal server behind it) said no.
    Failed = 1,
    /// Invalid usage or input.
    Usage = 2,
    /// The helper is not running or cannot be reached.
    Unreachable = 3,
    PermissionDenied = 4,
    VersionMismatch = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

impl Exit {
    /// The exit code for a failed conversation with the helper.
    pub fn for_error(error: &ClientError) -> Self {
        match error {
            ClientError::NotRunning { .. }
            | ClientError::Unreachable { .. }
            | ClientError::Unresponsive { .. }
            | ClientError::Disconnected
            | ClientError::Io(_) => Exit::Unreachable,
            ClientError::PermissionDenied { .. } => Exit::PermissionDenied,
            ClientError::VersionMismatch { .. } => Exit::VersionMismatch,
            ClientError::Protocol(_) => Exit::Failed,
            ClientError::Refused(error) => match error.code {
                IpcErrorCode::PermissionDenied => Exit::PermissionDenied,
                IpcErrorCode::VersionMismatch => Exit::VersionMismatch,
                IpcErrorCode::InvalidArgument => Exit::Usage,
                _ => Exit::Failed,
            },
        }
    }
}

/// Control Trellis, the private mesh network, through its helper (trellisd).
#[derive(Debug, Parser)]
#[command(name = "trellis", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The helper's socket (on Windows, its named pipe).
    #[arg(long, global = true, env = "TRELLIS_SOCKET", value_name = "PATH", default_value = DEFAULT_ENDPOINT)]
    pub socket: PathBuf,
    /// Print the helper's answer as JSON (events as one JSON object per line).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect: bring the tunnel up, and keep it up across restarts.
    Up,
    /// Disconnect: take the tunnel down, and keep it down across restarts.
    Down,
    /// Show this device, its network and how the helper is doing.
    Status,
    /// Create a network and become its owner.
    Create {
        /// The network's name, as members see it.
        name: NetworkName,
        /// The signal server to use (default port 8443; `ws://` for a plain test server).
        #[arg(long, value_name = "HOST[:PORT]")]
        server: Option<ServerAddr>,
        /// The range addresses are drawn from [default: 100.64.0.0/10].
        #[arg(long, value_name = "CIDR")]
        range: Option<OverlayNet>,
    },
    /// Make an invite code for a friend to join your network.
    Invite {
        /// How many devices may join with it [default: 1].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        uses: Option<u32>,
        /// How long it stays valid, like 30m, 24h or 7d [default: the server's].
        #[arg(long, value_name = "DURATION", value_parser = input::parse_duration)]
        expires: Option<Duration>,
    },
    /// List your network's open invites.
    Invites,
    /// Revoke an invite, by its id (the first group of its code) or its whole code.
    Revoke {
        #[arg(value_parser = input::parse_invite_id)]
        id: InviteId,
    },
    /// Join a network: CODE, CODE@SERVER or trellis://join/CODE@SERVER.
    Join {
        #[arg(value_name = "CODE")]
        ticket: InviteTicket,
    },
    /// List the other devices of your network and how they are reached.
    Peers,
    /// Ping a peer through the tunnel, by name, address or key prefix.
    Ping {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        peer: String,
    },
    /// Leave your network.
    Leave,
    /// Rename this device (letters, digits and '-').
    Rename { name: DeviceName },
    /// Remove a device from your network, by name, address or key prefix (owner only).
    Remove {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        peer: String,
    },
    /// Set the signal server (default port 8443; `ws://` for a plain test server).
    Server {
        #[arg(value_name = "HOST[:PORT]")]
        server: ServerAddr,
    },
    /// Print changes as they happen, until interrupted.
    Watch,
}

impl Command {
    /// The request this command sends (`watch` subscribes instead).
    pub fn request(&self) -> Option<IpcRequest> {
        Some(match self {
            Command::Up => IpcRequest::Up,
            Command::Down => IpcRequest::Down,
            Command::Status => IpcRequest::Status,
            Command::Create { name, server, range } => {
                IpcRequest::CreateNetwork { name: name.clone(), server: server.clone(), range: *range }
            }
            Command::Invite { uses, expires } => {
                IpcRequest::CreateInvite { max_uses: *uses, expires_in_secs: expires.map(|d| d.as_secs()) }
            }
            Command::Invites => IpcRequest::ListInvites,
            Command::Revoke { id } => IpcRequest::RevokeInvite { id: id.clone() },
            Command::Join { ticket } => IpcRequest::Join { ticket: ticket.clone() },
            Command::Peers => IpcRequest::Peers,
            Command::Ping { peer } => IpcRequest::Ping { peer: peer.clone() },
            Command::Leave => IpcRequest::Leave,
            Command::Rename { name } => IpcRequest::Rename { name: name.clone() },
            Command::Remove { peer } => IpcRequest::Remove { peer: peer.clone() },
            Command::Server { server } => IpcRequest::SetServer { server: server.clone() },
            Command::Watch => return None,
        })
    }

    /// What to tell the user when the helper answers `Done`.
    pub fn done_message(&self) -> String {
        match self {
            Command::Up => "Trellis is connecting; `trellis status` shows when the tunnel is up.".into(),
            Command::Down => "Trellis is disconnected, and stays so until `trellis up`.".into(),
            Command::Create { name, .. } => {
                format!("Created the network {name:?}. `trellis invite` makes a code for a friend to join.")
            }
            Command::Revoke { id } => format!("Revoked the invite {id}."),
            Command::Join { .. } => "Joined the network. `trellis peers` lists its devices.".into(),
            Command::Leave => "This device left its network.".into(),
            Command::Rename { name } => format!("This device is now called {name}."),
            Command::Remove { peer } => format!("Removed {peer} from the network."),
            Command::Server { server } => format!("The signal server is now {server}."),
            _ => "Done.".into(),
        }
    }
}

/// The `trellis` program: parses `std::env::args`, runs the command, returns its exit code.
pub fn main() -> ExitCode {
    run_with_args(std::env::args_os()).into()
}

/// [`main`] with the given arguments (the first is the program name).
pub fn run_with_args<I, T>(args: I) -> Exit
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { Exit::Usage } else { Exit::Ok };
        }
    };
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(&cli)),
        Err(e) => {
            eprintln!("trellis: cannot start: {e}");
            Exit::Failed
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: &Cli) -> Exit {
    let mut client = match IpcClient::connect(&cli.socket, CLIENT_NAME).await {
        Ok(client) => client,
        Err(error) => return fail(cli.json, &error),
    };
    let Some(request) = cli.command.request() else {
        return watch(client, cli.json).await;
    };
    match client.request(request).await {
        Ok(response) => {
            let now = unix_now();
            let output = if cli.json {
                json(&response)
            } else {
                render::response(&response, &cli.command.done_message(), now)
            };
            emit(&output);
            Exit::Ok
        }
        Err(error) => fail(cli.json, &error),
    }
}

/// `trellis watch`: the current status, then every event, until interrupted or the helper
/// goes away.
async fn watch(mut client: IpcClient, as_json: bool) -> Exit {
    let show = |event: &IpcEvent| {
        let line = if as_json {
            serde_json::to_string(event).expect("events serialize")
        } else {
            render::event(event)
        };
        emit(&line)
    };
    // Subscribe first, then read the status: no change can fall in between.
    if let Err(error) = client.subscribe().await {
        return fail(as_json, &error);
    }
    match client.request(IpcRequest::Status).await {
        Ok(IpcResponse::Status { status }) => {
            if !show(&IpcEvent::Status { status }) {
                return Exit::Ok;
            }
        }
        Ok(_) => {}
        Err(error) => return fail(as_json, &error),
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Exit::Ok,
            event = client.next_event() => match event {
                Ok(event) => {
                    if !show(&event) {
                        return Exit::Ok;
                    }
                }
                Err(error) => return fail(as_json, &error),
            },
        }
    }
}

/// The response as pretty JSON.
pub fn json(response: &IpcResponse) -> String {
    serde_json::to_string_pretty(response).expect("responses serialize")
}

/// The error as the JSON `--json` prints: `{"error": {"code": …, "message": …}}`, with the
/// helper's code for refusals and a local code otherwise.
pub fn json_error(error: &ClientError) -> String {
    let code = match error {
        ClientError::Refused(refusal) => serde_json::to_value(refusal.code).expect("codes serialize"),
        ClientError::NotRunning { .. } => "helper_not_running".into(),
        ClientError::PermissionDenied { .. } => "permission_denied".into(),
        ClientError::VersionMismatch { .. } => "version_mismatch".into(),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::Unreachable { .. }
        | ClientError::Unresponsive { .. }
        | ClientError::Disconnected
        | ClientError::Io(_) => "helper_unreachable".into(),
    };
    let body = serde_json::json!({ "error": { "code": code, "message": error.to_string() } });
    serde_json::to_string_pretty(&body).expect("JSON values serialize")
}

/// Reports `error` (on stderr; with `--json` also as JSON on stdout) and picks the exit code.
fn fail(as_json: bool, error: &ClientError) -> Exit {
    eprintln!("trellis: {error}");
    if as_json {
        emit(&json_error(error));
    }
    Exit::for_error(error)
}

/// Prints `text` and a newline; `false` when stdout is gone (e.g. a closed pipe).
fn emit(text: &str) -> bool {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush()).is_ok()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
