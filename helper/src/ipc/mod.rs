//! The helper's local IPC: how the `trellis` CLI and the desktop app control `trellisd`.
//!
//! The messages are [`trellis_protocol::ipc`]'s, one JSON object per line. This module
//! moves them over the platform's local transport and decides who may connect:
//!
//! * [`serve`] runs the server side for the daemon: it checks each connecting user, does
//!   the hello / version check, hands every request to the daemon's [`Control`] and
//!   pushes [`IpcEvent`]s to connections that subscribed;
//! * [`client::IpcClient`] (which lives in `trellis_protocol::ipc::client`, so the app can
//!   use it without the helper's engine) is the client side, shared by the CLI and the app,
//!   and turns every way of not reaching the helper into an error that says what to do.
//!
//! The platform code is small and sits behind one interface ([`IpcListener`] with
//! `bind`/`accept`, plus a `connect` function for the client):
//!
//! * Unix (`unix.rs`): a Unix socket, by default [`DEFAULT_ENDPOINT`]
//!   (`/run/trellis/trellisd.sock`), mode 0660, group `trellis` when that group exists.
//!   The kernel's file permissions are the first gate; each connection is then checked
//!   again by the peer's credentials ([`auth::decide`]): root, the helper's own user, the
//!   configured owner, or a member of the `trellis` group.
//! * Windows (`windows.rs`): the named pipe `\\.\pipe\trellisd`, whose DACL admits SYSTEM,
//!   Administrators, the `Trellis Users` group and the person who installed Trellis; the
//!   OS enforces it at open. The DACL is decided in `windows_acl.rs` (pure, tested on
//!   every platform) and applied through `win32.rs`, the only unsafe code of the IPC.
//!
//! The session, in order: the client sends `Hello`; the helper answers `Hello` (on a version
//! mismatch it then sends an error response with id 0 and closes). Each request gets one
//! response with its id, answered in order. After `Subscribe` the connection also receives
//! events. A malformed or over-long line gets a `Malformed` error (with the request's id
//! when it can be read, else 0) and the connection carries on. Clients number requests
//! from 1: id 0 is the helper's, for errors about the connection itself.

use std::future::Future;
use std::pin::Pin;

use trellis_protocol::ipc::{IpcError, IpcRequest, IpcResponse};

#[cfg(unix)]
pub mod auth;
#[cfg(any(windows, test))]
mod pipe_instances;
mod server;
#[cfg(all(test, unix))]
pub(crate) mod testing;
#[cfg(all(test, unix))]
mod tests;
#[cfg(unix)]
mod unix;
#[cfg(windows)]
pub mod win32;
#[cfg(windows)]
mod windows;
#[cfg(any(windows, test))]
pub mod windows_acl;
#[cfg(all(test, windows))]
mod windows_tests;

pub use server::serve;
pub use trellis_protocol::ipc::client::{self, default_endpoint, ClientError, IpcClient};
use trellis_protocol::ipc::codec;
use trellis_protocol::ipc::endpoint as platform_hints;
#[cfg(unix)]
pub use unix::{IpcListener, ListenOptions, DEFAULT_ENDPOINT, TRELLIS_GROUP};
#[cfg(windows)]
pub use windows::{IpcListener, ListenOptions, DEFAULT_ENDPOINT, OWNER_SID_ENV, TRELLIS_USERS_GROUP};

pub use trellis_protocol::ipc::IpcEvent;

/// A boxed future that can be sent between threads: what [`Control::handle`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The daemon's side of the IPC: answers one request.
///
/// [`serve`] calls it for every request except [`IpcRequest::Subscribe`], which the
/// server handles itself. Requests on one connection are handed over one at a time, in
/// order; requests on different connections may run concurrently. An `Err` goes to the
/// client as it is: its message is what the user reads, so it should name what failed.
pub trait Control: Send + Sync + 'static {
    fn handle(&self, request: IpcRequest) -> BoxFuture<'_, Result<IpcResponse, IpcError>>;
}

/// The helper's version, which it reports in its hello and the CLI shows.
pub const HELPER_VERSION: &str = env!("CARGO_PKG_VERSION");
