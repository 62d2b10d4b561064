//! The local IPC between the helper (`trellisd`) and its clients: the `trellis` CLI and
//! the desktop app. One schema for both, so they can never disagree.
//!
//! Framing: newline-delimited JSON over a Unix socket (a named pipe on Windows), each
//! line at most [`MAX_IPC_LINE_BYTES`]. The client opens with [`IpcClientMessage::Hello`];
//! the helper answers [`IpcServerMessage::Hello`] and, when the versions differ, closes
//! after sending it, so a client can tell the user to update instead of misreading replies.
//! Then each request gets one response with its id, and after
//! [`IpcRequest::Subscribe`] the helper pushes [`IpcEvent`]s.

use serde::{Deserialize, Serialize};

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod codec;
#[cfg(feature = "client")]
pub mod endpoint;

use crate::signal::InviteInfo;
use crate::{
    DeviceName, InviteId, InviteTicket, NetworkId, NetworkName, OverlayIp, OverlayNet, PublicKey, ServerAddr,
};

/// Version of the IPC schema; a client and helper with different versions refuse each other.
pub const IPC_VERSION: u32 = 1;
/// Longest line either side accepts.
pub const MAX_IPC_LINE_BYTES: usize = 256 * 1024;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum IpcClientMessage {
    Hello { version: u32, client: String },
    Request { id: u64, body: IpcRequest },
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum IpcServerMessage {
    Hello { version: u32, helper_version: String },
    Response { id: u64, result: IpcResult },
    Event { event: IpcEvent },
}

/// What a client asks the helper.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum IpcRequest {
    Status,
    /// Connect: bring the tunnel up and keep it up across restarts.
    Up,
    /// Disconnect: take the tunnel down and keep it down across restarts.
    Down,
    CreateNetwork {
        name: NetworkName,
        server: Option<ServerAddr>,
        range: Option<OverlayNet>,
    },
    CreateInvite {
        max_uses: Option<u32>,
        expires_in_secs: Option<u64>,
    },
    ListInvites,
    RevokeInvite {
        id: InviteId,
    },
    Join {
        ticket: InviteTicket,
    },
    Leave,
    Peers,
    /// Owner only: remove a peer by name, address or key.
    Remove {
        peer: String,
    },
    Rename {
        name: DeviceName,
    },
    SetServer {
        server: ServerAddr,
    },
    /// Ping a peer (by name, address or key) through the tunnel.
    Ping {
        peer: String,
    },
    Subscribe,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum IpcResponse {
    Status { status: Status },
    Invite { ticket: InviteTicket, invite: InviteInfo },
    Invites { invites: Vec<InviteInfo> },
    Peers { peers: Vec<PeerInfo> },
    Pong { peer: String, ip: OverlayIp, path: Option<PathKind>, rtt_micros: u64 },
    Done,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpcResult {
    Ok(IpcResponse),
    Err(IpcError),
}

/// A failure with a stable code for programs and a sentence for people.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct IpcError {
    pub code: IpcErrorCode,
    pub message: String,
}

impl IpcError {
    pub fn new(code: IpcErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpcErrorCode {
    Malformed,
    VersionMismatch,
    /// The connecting user may not control the helper (not root, not its owner, not in the
    /// `trellis` group); the helper closes the connection after saying so.
    PermissionDenied,
    /// The request needs a network and the device is in none.
    NoNetwork,
    /// The device is already in a network (leave it first).
    AlreadyInNetwork,
    /// The request needs a server address and none is configured or given.
    NoServer,
    /// The signal server could not be reached.
    ServerUnreachable,
    /// The signal server refused the request; the message says why.
    Server(crate::signal::ErrorCode),
    UnknownPeer,
    /// The peer did not answer in time.
    Timeout,
    InvalidArgument,
    Internal,
}

/// The helper's whole state as a person sees it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Status {
    pub helper_version: String,
    pub device_name: DeviceName,
    pub public_key: PublicKey,
    pub fingerprint: String,
    pub server: Option<ServerAddr>,
    pub server_connected: bool,
    /// What the user asked for with up/down.
    pub wants_up: bool,
    pub state: TunnelState,
    pub network: Option<NetworkSummary>,
    /// Why the device is not in a network any more, when it was removed.
    pub notice: Option<String>,
    /// Orders statuses: each one the helper makes has a higher revision than the last.
    /// Answers and events travel on different connections, so a client that gets both
    /// keeps the status with the highest revision, never an older one that came later.
    #[serde(default)]
    pub revision: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TunnelState {
    Down,
    Connecting,
    Up,
    NeedsAttention { reason: String },
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NetworkSummary {
    pub id: NetworkId,
    pub name: NetworkName,
    pub range: OverlayNet,
    pub my_ip: OverlayIp,
    pub owner: bool,
    pub peers_total: u32,
    pub peers_connected: u32,
}

/// One peer as the helper sees it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: DeviceName,
    pub key: PublicKey,
    pub fingerprint: String,
    pub ip: OverlayIp,
    pub owner: bool,
    /// Connected to the signal server.
    pub online: bool,
    pub state: PeerState,
    pub path: Option<PathInfo>,
    pub last_handshake_secs_ago: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rtt_micros: Option<u64>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PeerState {
    Offline,
    Connecting,
    Connected,
    Reconnecting,
    Failed { reason: String },
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    Direct,
    Relayed,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateKind {
    Host,
    ServerReflexive,
    PeerReflexive,
    Relayed,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PathInfo {
    pub kind: PathKind,
    pub local: CandidateKind,
    pub remote: CandidateKind,
    pub remote_addr: std::net::SocketAddr,
}

/// Pushed to subscribed clients.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum IpcEvent {
    Status { status: Status },
    PeerJoined { peer: PeerInfo },
    PeerChanged { peer: PeerInfo },
    PeerLeft { name: DeviceName, key: PublicKey },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_secret;
    use crate::InviteCode;

    fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(value: &T) {
        let json = serde_json::to_string(value).unwrap();
        assert!(!json.contains('\n'), "a frame must stay on one line");
        let back: T = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(&back, value);
    }

    fn peer() -> PeerInfo {
        let key = PublicKey::of(&generate_secret());
        PeerInfo {
            name: "bob".parse().unwrap(),
            fingerprint: key.fingerprint(),
            key,
            ip: OverlayIp("100.64.0.2".parse().unwrap()),
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
            rx_bytes: 10,
            tx_bytes: 20,
            rtt_micros: Some(1500),
        }
    }

    fn status() -> Status {
        let key = PublicKey::of(&generate_secret());
        Status {
            helper_version: "0.1.0".into(),
            device_name: "alice".parse().unwrap(),
            public_key: key,
            fingerprint: key.fingerprint(),
            server: Some("ws://203.0.113.1:8443".parse().unwrap()),
            server_connected: true,
            wants_up: true,
            state: TunnelState::NeedsAttention { reason: "server unreachable".into() },
            network: Some(NetworkSummary {
                id: NetworkId::random(),
                name: "home".parse().unwrap(),
                range: OverlayNet::DEFAULT,
                my_ip: OverlayIp("100.64.0.1".parse().unwrap()),
                owner: true,
                peers_total: 1,
                peers_connected: 1,
            }),
            notice: None,
            revision: 7,
        }
    }

    #[test]
    fn every_ipc_message_round_trips() {
        round_trip(&IpcClientMessage::Hello { version: IPC_VERSION, client: "trellis-cli".into() });
        let requests = vec![
            IpcRequest::Status,
            IpcRequest::Up,
            IpcRequest::Down,
            IpcRequest::CreateNetwork { name: "home".parse().unwrap(), server: None, range: None },
            IpcRequest::CreateInvite { max_uses: Some(2), expires_in_secs: Some(3600) },
            IpcRequest::ListInvites,
            IpcRequest::RevokeInvite { id: InviteId("ABCD".into()) },
            IpcRequest::Join { ticket: InviteTicket { code: InviteCode::random(), server: None } },
            IpcRequest::Leave,
            IpcRequest::Peers,
            IpcRequest::Remove { peer: "bob".into() },
            IpcRequest::Rename { name: "box".parse().unwrap() },
            IpcRequest::SetServer { server: "vpn.example.org".parse().unwrap() },
            IpcRequest::Ping { peer: "bob".into() },
            IpcRequest::Subscribe,
        ];
        for (id, body) in requests.into_iter().enumerate() {
            round_trip(&IpcClientMessage::Request { id: id as u64, body });
        }
        round_trip(&IpcServerMessage::Hello { version: IPC_VERSION, helper_version: "0.1.0".into() });
        let invite = InviteInfo {
            id: InviteId("ABCD".into()),
            network: NetworkId::random(),
            created_at: 1,
            expires_at: 2,
            max_uses: 1,
            uses: 0,
        };
        let responses = vec![
            IpcResponse::Status { status: status() },
            IpcResponse::Invite {
                ticket: InviteTicket { code: InviteCode::random(), server: Some("h:1".parse().unwrap()) },
                invite: invite.clone(),
            },
            IpcResponse::Invites { invites: vec![invite] },
            IpcResponse::Peers { peers: vec![peer()] },
            IpcResponse::Pong {
                peer: "bob".into(),
                ip: OverlayIp("100.64.0.2".parse().unwrap()),
                path: Some(PathKind::Direct),
                rtt_micros: 900,
            },
            IpcResponse::Done,
        ];
        for (id, r) in responses.into_iter().enumerate() {
            round_trip(&IpcServerMessage::Response { id: id as u64, result: IpcResult::Ok(r) });
        }
        for code in [
            IpcErrorCode::Server(crate::signal::ErrorCode::InviteExpired),
            IpcErrorCode::NoNetwork,
            IpcErrorCode::VersionMismatch,
        ] {
            round_trip(&IpcServerMessage::Response {
                id: 1,
                result: IpcResult::Err(IpcError::new(code, "no")),
            });
        }
        let p = peer();
        for event in [
            IpcEvent::Status { status: status() },
            IpcEvent::PeerJoined { peer: p.clone() },
            IpcEvent::PeerChanged { peer: p.clone() },
            IpcEvent::PeerLeft { name: p.name, key: p.key },
        ] {
            round_trip(&IpcServerMessage::Event { event });
        }
    }

    #[test]
    fn a_future_client_is_recognisable() {
        // A client of another version still parses as Hello, so the helper can answer it.
        let hello: IpcClientMessage =
            serde_json::from_str(r#"{"type":"hello","version":99,"client":"future"}"#).unwrap();
        assert_eq!(hello, IpcClientMessage::Hello { version: 99, client: "future".into() });
        assert!(serde_json::from_str::<IpcClientMessage>(
            r#"{"type":"request","id":1,"body":{"cmd":"format_disk"}}"#
        )
        .is_err());
    }
}
