//! The Windows transport: the named pipe `\\.\pipe\trellisd`, whose DACL admits SYSTEM,
//! Administrators, the `Trellis Users` group and the person who installed Trellis
//! ([`PipeAccess`]). Windows checks the DACL when a client opens the pipe, so every
//! connection that reaches the helper is admitted.
//!
//! Users get read and write, not `FILE_CREATE_PIPE_INSTANCE`: with it, a user could create
//! an instance of the pipe and be the "helper" the next client (another user, the app)
//! talks to. The pipe refuses remote clients.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};

use super::pipe_instances::{next_client, WaitingInstance};
use super::server::Admission;
use super::win32::{self, SecurityDescriptor};
use super::windows_acl::{PipeAccess, Sid};

pub use trellis_protocol::ipc::endpoint::DEFAULT_ENDPOINT;
/// Members of this local group may control the helper.
pub const TRELLIS_USERS_GROUP: &str = "Trellis Users";
/// The service's environment variable that names the person who installed Trellis (a SID),
/// as `trellisd install-service` writes it.
pub const OWNER_SID_ENV: &str = "TRELLIS_OWNER_SID";

/// Where and for whom the helper listens.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ListenOptions {
    pub path: PathBuf,
    /// The local group whose members may connect, besides SYSTEM and Administrators.
    pub users_group: Option<String>,
    /// A user who may connect without being in the group: the person who installed
    /// Trellis, whose new group membership counts only from their next sign-in.
    pub owner_sid: Option<Sid>,
}

impl ListenOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), users_group: Some(TRELLIS_USERS_GROUP.to_string()), owner_sid: None }
    }
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self::new(DEFAULT_ENDPOINT)
    }
}

/// The helper's pipe: always one instance waiting for the next client.
#[derive(Debug)]
pub struct IpcListener {
    path: PathBuf,
    access: PipeAccess,
    security: SecurityDescriptor,
    next: NamedPipeServer,
}

impl IpcListener {
    /// Creates the first pipe instance; fails when another process already owns the name.
    pub fn bind(options: &ListenOptions) -> io::Result<Self> {
        let users_group = options.users_group.as_deref().and_then(group_sid);
        let access = PipeAccess { users_group, owner: options.owner_sid.clone() };
        let sddl = access.sddl();
        let security = SecurityDescriptor::from_sddl(&sddl)?;
        let next = create_instance(&security, &options.path, true).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create the pipe {}: {e}", options.path.display()))
        })?;
        tracing::info!(path = %options.path.display(), %sddl, "IPC listening");
        Ok(Self { path: options.path.clone(), access, security, next })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who besides SYSTEM and Administrators may open the pipe.
    pub fn access(&self) -> &PipeAccess {
        &self.access
    }

    /// The instance waiting for the next client, for tests that inspect it.
    #[cfg(test)]
    pub(super) fn waiting_instance(&self) -> &NamedPipeServer {
        &self.next
    }

    /// The next connection. Cancel-safe: the waiting instance stays in `self`.
    ///
    /// An instance whose connection failed (a client that opened the pipe and closed it
    /// before the helper got to it, or a failed ConnectNamedPipe) cannot be used again: it
    /// is replaced by a fresh one, so the next client can connect ([`next_client`]).
    pub(super) async fn accept(&mut self) -> io::Result<(NamedPipeServer, Admission)> {
        let (security, path) = (&self.security, &self.path);
        let connected = next_client(&mut self.next, || create_instance(security, path, false)).await?;
        Ok((connected, Admission::Allowed { peer: "a pipe client admitted by the pipe's ACL".into() }))
    }
}

impl WaitingInstance for NamedPipeServer {
    fn connect(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        NamedPipeServer::connect(self)
    }
}

/// The SID of the local group `name`, when there is one.
fn group_sid(name: &str) -> Option<Sid> {
    match win32::local_group_sid(name) {
        Ok(sid) => {
            if sid.is_none() {
                tracing::info!(group = name, "no such local group: its members cannot connect");
            }
            sid
        }
        // Leaving the group out only narrows who may connect: better than no helper.
        Err(e) => {
            tracing::warn!(group = name, "cannot look up the local group ({e}): its members cannot connect");
            None
        }
    }
}

fn create_instance(security: &SecurityDescriptor, path: &Path, first: bool) -> io::Result<NamedPipeServer> {
    let mut options = ServerOptions::new();
    options.first_pipe_instance(first).reject_remote_clients(true);
    security.create_pipe(&options, path)
}
