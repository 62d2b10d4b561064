//! The Unix transport (Linux, macOS): a Unix socket whose file mode and group say who may
//! open it, and a second check of each connecting peer's credentials.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use super::auth::{self, AccessPolicy, PeerCredentials};
use super::server::Admission;

pub use trellis_protocol::ipc::endpoint::DEFAULT_ENDPOINT;
/// Members of this group may control the helper.
pub const TRELLIS_GROUP: &str = "trellis";
/// Read and write for the owner and the group: connecting needs write permission.
const SOCKET_MODE: u32 = 0o660;
/// The socket's directory when the helper creates it: anyone may reach the socket, whose
/// own mode then decides.
const DIR_MODE: u32 = 0o755;

/// Where and for whom the helper listens.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ListenOptions {
    pub path: PathBuf,
    /// A user who may connect without being in the group; the socket file is given to
    /// them so the kernel lets them open it.
    pub owner_uid: Option<u32>,
    /// The group whose members may connect, looked up in `/etc/group`; when it does not
    /// exist, only root, the helper's user and the owner may connect.
    pub group: Option<String>,
}

impl ListenOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), owner_uid: None, group: Some(TRELLIS_GROUP.to_string()) }
    }
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self::new(DEFAULT_ENDPOINT)
    }
}

/// The helper's listening socket. Dropping it removes the socket file, unless another
/// helper has replaced it since.
#[derive(Debug)]
pub struct IpcListener {
    listener: UnixListener,
    path: PathBuf,
    policy: AccessPolicy,
    /// Device and inode of our socket file, to recognise it at drop.
    file_id: (u64, u64),
}

impl IpcListener {
    /// Creates the socket (and its directory, mode 0755, when missing), replacing a stale
    /// socket file that no process listens on. Fails when another helper is listening or
    /// the path is something other than a socket. Must run inside a tokio runtime.
    pub fn bind(options: &ListenOptions) -> io::Result<Self> {
        let path = options.path.clone();
        let context =
            |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty() && !dir.exists()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)))
                .map_err(|e| context("cannot create the directory of", e))?;
        }
        remove_stale_socket(&path)?;
        let listener = UnixListener::bind(&path).map_err(|e| context("cannot listen on", e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(|e| context("cannot set the mode of", e))?;
        let group_gid = options.group.as_deref().and_then(group_gid);
        if options.owner_uid.is_some() || group_gid.is_some() {
            if let Err(e) = std::os::unix::fs::chown(&path, options.owner_uid, group_gid) {
                tracing::warn!(
                    path = %path.display(), ?group_gid, owner_uid = ?options.owner_uid,
                    "cannot hand the socket to its owner and group ({e}): only root and the helper's user can open it"
                );
            }
        }
        let meta = fs::metadata(&path).map_err(|e| context("cannot inspect", e))?;
        let policy = AccessPolicy { helper_uid: meta.uid(), owner_uid: options.owner_uid, group_gid };
        tracing::info!(path = %path.display(), ?policy, "IPC listening");
        Ok(Self { listener, path, policy, file_id: (meta.dev(), meta.ino()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn policy(&self) -> &AccessPolicy {
        &self.policy
    }

    #[cfg(test)]
    pub(super) fn policy_mut(&mut self) -> &mut AccessPolicy {
        &mut self.policy
    }

    /// The next connection and whether its peer may use it. Cancel-safe.
    pub(super) async fn accept(&mut self) -> io::Result<(UnixStream, Admission)> {
        let (stream, _) = self.listener.accept().await?;
        let admission = match peer_credentials(&stream) {
            Ok(peer) => {
                let access = auth::decide(&self.policy, &peer);
                tracing::debug!(%peer, ?access, "IPC peer");
                if access.allowed() {
                    Admission::Allowed { peer: peer.to_string() }
                } else {
                    Admission::Denied { peer: peer.to_string() }
                }
            }
            Err(e) => Admission::Denied { peer: format!("a peer whose credentials are unreadable ({e})") },
        };
        Ok((stream, admission))
    }
}

impl Drop for IpcListener {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file_id);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes a socket file left by a helper that is gone; refuses to touch a live socket or
/// anything that is not a socket.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket: refusing to replace it", path.display()),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another trellisd is already listening on {}", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket");
            fs::remove_file(path)
        }
        Err(e) => {
            Err(io::Error::new(e.kind(), format!("cannot check the socket at {}: {e}", path.display())))
        }
    }
}

fn group_gid(name: &str) -> Option<u32> {
    let gid = lookup_group_gid(name);
    if gid.is_none() {
        tracing::info!(group = name, "no such group: only root and the helper's user may connect");
    }
    gid
}

fn peer_credentials(stream: &UnixStream) -> io::Result<PeerCredentials> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid();
    #[cfg(target_os = "macos")]
    let groups = supplementary_groups_of_user(cred.uid());
    #[cfg(not(target_os = "macos"))]
    let groups = supplementary_groups(pid);
    Ok(PeerCredentials { uid: cred.uid(), gid: cred.gid(), pid, groups })
}

/// The peer's supplementary groups. On Linux from `/proc`; a process that exited since
/// `connect` has none, so it is judged by its primary group alone.
#[cfg(target_os = "linux")]
fn supplementary_groups(pid: Option<i32>) -> Vec<u32> {
    pid.and_then(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| auth::parse_status_groups(&status))
        .unwrap_or_default()
}

#[cfg(not(target_os = "macos"))]
fn lookup_group_gid(name: &str) -> Option<u32> {
    fs::read_to_string("/etc/group").ok().and_then(|text| auth::find_group_gid(&text, name))
}

/// macOS keeps groups in Directory Services, not /etc/group (which lists only a few
/// built-in ones): `dscl . -read /Groups/<name> PrimaryGroupID`. Not compiled here.
#[cfg(target_os = "macos")]
fn lookup_group_gid(name: &str) -> Option<u32> {
    let out = std::process::Command::new("dscl")
        .args([".", "-read", &format!("/Groups/{name}"), "PrimaryGroupID"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().last()?.parse().ok().filter(|_| out.status.success())
}

/// macOS: the groups Directory Services gives the peer's user (`id -G <uid>`); the kernel
/// reports only the primary group of a Unix socket's peer. Not compiled here.
#[cfg(target_os = "macos")]
fn supplementary_groups_of_user(uid: u32) -> Vec<u32> {
    std::process::Command::new("id")
        .args(["-G", &uid.to_string()])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| {
            String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|g| g.parse().ok()).collect()
        })
        .unwrap_or_default()
}

/// Elsewhere only the primary group of the peer is known.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn supplementary_groups(_pid: Option<i32>) -> Vec<u32> {
    Vec::new()
}
