//! Test support for the IPC and CLI tests: a scripted [`Control`], sample data, a served
//! socket in a temporary directory, and re-running this test binary as a child process,
//! optionally as another user (with `setpriv`, which needs root).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, oneshot};
use trellis_protocol::ipc::{
    CandidateKind, IpcError, IpcErrorCode, IpcEvent, IpcRequest, IpcResponse, NetworkSummary, PathInfo,
    PathKind, PeerInfo, PeerState, Status, TunnelState,
};
use trellis_protocol::signal::InviteInfo;
use trellis_protocol::{InviteId, InviteTicket, NetworkId, OverlayIp, OverlayNet, PublicKey};

use super::{BoxFuture, Control, IpcListener, ListenOptions};

/// Answers every request with [`answer_for`] and remembers what it was asked.
#[derive(Debug, Default)]
pub(crate) struct FakeControl {
    pub(crate) seen: Mutex<Vec<IpcRequest>>,
}

impl FakeControl {
    pub(crate) fn seen(&self) -> Vec<IpcRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Control for FakeControl {
    fn handle(&self, request: IpcRequest) -> BoxFuture<'_, Result<IpcResponse, IpcError>> {
        self.seen.lock().unwrap().push(request.clone());
        Box::pin(async move { answer_for(&request) })
    }
}

/// A plausible answer to each request; `Leave` and pinging "nobody" fail.
pub(crate) fn answer_for(request: &IpcRequest) -> Result<IpcResponse, IpcError> {
    Ok(match request {
        IpcRequest::Status => IpcResponse::Status { status: status() },
        IpcRequest::CreateInvite { .. } => IpcResponse::Invite { ticket: ticket(), invite: invite() },
        IpcRequest::ListInvites => IpcResponse::Invites { invites: vec![invite()] },
        IpcRequest::Peers => IpcResponse::Peers { peers: peers() },
        IpcRequest::Ping { peer } if peer == "nobody" => {
            return Err(IpcError::new(IpcErrorCode::UnknownPeer, "no peer is called \"nobody\""));
        }
        IpcRequest::Ping { peer } => IpcResponse::Pong {
            peer: peer.clone(),
            ip: ip("100.64.0.2"),
            path: Some(PathKind::Direct),
            rtt_micros: 1500,
        },
        IpcRequest::Leave => {
            return Err(IpcError::new(IpcErrorCode::NoNetwork, "this device is in no network"))
        }
        _ => IpcResponse::Done,
    })
}

pub(crate) fn ip(text: &str) -> OverlayIp {
    text.parse().unwrap()
}

pub(crate) fn key(byte: u8) -> PublicKey {
    PublicKey::from_bytes([byte; 32])
}

pub(crate) fn status() -> Status {
    Status {
        helper_version: "0.1.0".into(),
        device_name: "alice".parse().unwrap(),
        public_key: key(1),
        fingerprint: key(1).fingerprint(),
        server: Some("vpn.example.org".parse().unwrap()),
        server_connected: true,
        wants_up: true,
        state: TunnelState::Up,
        network: Some(NetworkSummary {
            id: NetworkId::from_bytes([7; 16]),
            name: "home".parse().unwrap(),
            range: OverlayNet::DEFAULT,
            my_ip: ip("100.64.0.1"),
            owner: true,
            peers_total: 2,
            peers_connected: 1,
        }),
        notice: None,
        revision: 1,
    }
}

pub(crate) fn peers() -> Vec<PeerInfo> {
    vec![
        PeerInfo {
            name: "bob".parse().unwrap(),
            key: key(2),
            fingerprint: key(2).fingerprint(),
            ip: ip("100.64.0.2"),
            owner: false,
            online: true,
            state: PeerState::Connected,
            path: Some(PathInfo {
                kind: PathKind::Relayed,
                local: CandidateKind::Relayed,
                remote: CandidateKind::ServerReflexive,
                remote_addr: "203.0.113.9:41000".parse().unwrap(),
            }),
            last_handshake_secs_ago: Some(3),
            rx_bytes: 1536,
            tx_bytes: 20,
            rtt_micros: Some(1500),
        },
        PeerInfo {
            name: "carol-laptop".parse().unwrap(),
            key: key(3),
            fingerprint: key(3).fingerprint(),
            ip: ip("100.64.0.13"),
            owner: true,
            online: false,
            state: PeerState::Offline,
            path: None,
            last_handshake_secs_ago: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rtt_micros: None,
        },
    ]
}

pub(crate) fn ticket() -> InviteTicket {
    "K7QF-3M9T-WX2C-HN4R@vpn.example.org".parse().unwrap()
}

pub(crate) fn invite() -> InviteInfo {
    InviteInfo {
        id: InviteId("K7QF".into()),
        network: NetworkId::from_bytes([7; 16]),
        created_at: 1_700_000_000,
        expires_at: 1_700_086_400,
        max_uses: 1,
        uses: 0,
    }
}

/// A helper serving a [`FakeControl`] on a socket in a temporary directory.
pub(crate) struct TestServer {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
    pub(crate) control: Arc<FakeControl>,
    pub(crate) events: broadcast::Sender<IpcEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts serving; `configure` may change the listener (e.g. its access policy) first.
    pub(crate) fn start(event_capacity: usize, configure: impl FnOnce(&mut IpcListener)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("trellisd.sock");
        let mut listener = IpcListener::bind(&ListenOptions::new(&path)).unwrap();
        configure(&mut listener);
        let control = Arc::new(FakeControl::default());
        let (events, _) = broadcast::channel(event_capacity);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(super::serve(listener, control.clone(), events.clone(), async move {
            let _ = stopped.await;
        }));
        Self { dir, path, control, events, stop: Some(stop), task: Some(task) }
    }

    /// Stops the server and waits until it has closed every connection. Returns the
    /// temporary directory, which is removed when dropped.
    pub(crate) async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
        self.dir
    }

    /// This test binary, linked or copied into the server's directory, where every user
    /// can run it (the build directory may not be reachable by them).
    pub(crate) fn binary_for_others(&self) -> PathBuf {
        let exe = self.dir.path().join("trellis-test-binary");
        if !exe.exists() {
            let original = std::env::current_exe().unwrap();
            if std::fs::hard_link(&original, &exe).is_err() {
                std::fs::copy(&original, &exe).unwrap();
            }
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        exe
    }

    /// Lets every user reach the socket, so that the server's own check is what decides.
    pub(crate) fn open_to_everyone(&self) {
        for dir in [self.dir.path(), self.path.parent().unwrap()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
}

/// Who a child process runs as.
#[derive(Debug)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
    /// This test binary, where that user can run it: [`TestServer::binary_for_others`].
    pub(crate) exe: PathBuf,
}

/// The full name (without the crate) of test `name` in module `module` (`module_path!()`),
/// as `--exact` wants it.
pub(crate) fn test_name(module: &str, name: &str) -> String {
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    if module.is_empty() {
        name.to_string()
    } else {
        format!("{module}::{name}")
    }
}

/// Runs test `test` of this binary in a child process with `env`, as `run_as` if given,
/// and waits for it. The child test does its work only when it finds its environment.
pub(crate) async fn run_child(test: &str, env: &[(&str, &str)], run_as: Option<&RunAs>) -> Output {
    spawn_child(test, env, run_as).wait_with_output().await.unwrap()
}

/// [`run_child`] without waiting: stdout and stderr are piped.
pub(crate) fn spawn_child(test: &str, env: &[(&str, &str)], run_as: Option<&RunAs>) -> tokio::process::Child {
    let mut command = match run_as {
        None => tokio::process::Command::new(std::env::current_exe().unwrap()),
        Some(user) => {
            let mut setpriv = tokio::process::Command::new("setpriv");
            setpriv.arg(format!("--reuid={}", user.uid)).arg(format!("--regid={}", user.gid));
            if user.groups.is_empty() {
                setpriv.arg("--clear-groups");
            } else {
                let groups: Vec<String> = user.groups.iter().map(u32::to_string).collect();
                setpriv.arg(format!("--groups={}", groups.join(",")));
            }
            setpriv.arg(&user.exe);
            setpriv
        }
    };
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Whether tests that switch users can run: they need root and `setpriv`. Otherwise they
/// are skipped with a note, except under CI, where that is a failure.
pub(crate) fn can_switch_users() -> bool {
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    let setpriv = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if root && setpriv {
        return true;
    }
    let why = if root { "setpriv (util-linux) is not installed" } else { "the tests do not run as root" };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("cannot test access by another user: {why}");
    }
    eprintln!("SKIPPED: cannot test access by another user: {why}");
    false
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
