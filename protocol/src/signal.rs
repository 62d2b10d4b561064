//! The signal API between a device and the signal server, spoken as JSON text frames
//! over one WebSocket (`/v1/signal`).
//!
//! 1. The server opens with [`ServerMessage::Challenge`].
//! 2. The device answers [`ClientMessage::Authenticate`] with its key and proof
//!    (see [`crate::keys::auth_proof`]); the server replies [`ServerMessage::Welcome`]
//!    with everything the device is a member of, or an [`ServerMessage::Error`] and closes.
//! 3. The device sends [`ClientMessage::Request`]s, each answered by a
//!    [`ServerMessage::Response`] with the same id; meanwhile the server pushes
//!    [`ServerMessage::Event`]s: membership changes and sealed signal from peers.

use serde::{Deserialize, Serialize};

use crate::sealed::SealedEnvelope;
use crate::{
    encoding, DeviceId, DeviceName, InviteCode, InviteId, NetworkId, NetworkName, OverlayIp, OverlayNet,
    PublicKey,
};

/// Most uses an invite can be given.
pub const MAX_INVITE_USES: u32 = 1000;
/// Shortest and longest life of an invite, in seconds (1 minute to 30 days).
pub const INVITE_TTL_RANGE_SECS: std::ops::RangeInclusive<u64> = 60..=30 * 24 * 3600;
/// An invite's life when its creator does not choose: 24 hours.
pub const DEFAULT_INVITE_TTL_SECS: u64 = 24 * 3600;

/// Device → server.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Authenticate {
        version: u32,
        device_key: PublicKey,
        #[serde(with = "encoding::array")]
        proof: [u8; 32],
    },
    Request {
        id: u64,
        body: Request,
    },
}

/// What an authenticated device asks of the server.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Creates a network with the caller as its owner and first member.
    CreateNetwork {
        name: NetworkName,
        device_name: DeviceName,
        range: Option<OverlayNet>,
    },
    /// Redeems an invite code: the caller becomes a member.
    Join {
        code: InviteCode,
        device_name: DeviceName,
    },
    /// Owner only. `None` means single-use and [`DEFAULT_INVITE_TTL_SECS`].
    CreateInvite {
        network: NetworkId,
        max_uses: Option<u32>,
        expires_in_secs: Option<u64>,
    },
    /// Owner only: the network's invites that can still be redeemed.
    ListInvites {
        network: NetworkId,
    },
    /// Owner only.
    RevokeInvite {
        network: NetworkId,
        invite: InviteId,
    },
    ListMembers {
        network: NetworkId,
    },
    /// Changes the caller's own name in the network (a suffix is added on a clash).
    Rename {
        network: NetworkId,
        name: DeviceName,
    },
    Leave {
        network: NetworkId,
    },
    /// Owner only: removes another device; it loses access at once.
    RemoveDevice {
        network: NetworkId,
        device: DeviceId,
    },
    /// Forwards a sealed envelope to an online member of the same network.
    Signal {
        network: NetworkId,
        envelope: SealedEnvelope,
    },
    /// Short-lived TURN credentials for the relay; members only.
    TurnCredentials,
}

/// Server → device.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    Challenge {
        version: u32,
        server_key: PublicKey,
        #[serde(with = "encoding::array")]
        challenge: [u8; 32],
    },
    Welcome(Welcome),
    Response {
        id: u64,
        result: ApiResult,
    },
    Event {
        event: Event,
    },
    /// A failure not tied to a request id: a malformed message, a failed authentication.
    Error {
        error: ApiError,
    },
}

/// The state a device gets on every (re)connection, so it never relies on missed events.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Welcome {
    pub device_key: PublicKey,
    pub memberships: Vec<Membership>,
    /// The UDP port of the server's STUN and TURN service, on the same host as the API
    /// unless `relay_host` names another.
    pub relay_port: u16,
    pub relay_host: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Membership {
    pub network: NetworkInfo,
    pub me: Member,
    pub members: Vec<Member>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub id: NetworkId,
    pub name: NetworkName,
    pub range: OverlayNet,
    pub owner: DeviceId,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Member {
    pub device: DeviceId,
    pub key: PublicKey,
    pub name: DeviceName,
    pub ip: OverlayIp,
    pub owner: bool,
    pub online: bool,
    /// Unix seconds.
    pub joined_at: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct InviteInfo {
    pub id: InviteId,
    pub network: NetworkId,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    pub max_uses: u32,
    pub uses: u32,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
    /// Unix seconds after which the relay refuses these credentials.
    pub expires_at: u64,
    pub realm: String,
}

/// The answer to one [`Request`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    NetworkCreated { membership: Membership },
    Joined { membership: Membership },
    InviteCreated { invite: InviteInfo, code: InviteCode },
    Invites { invites: Vec<InviteInfo> },
    Members { members: Vec<Member> },
    Renamed { me: Member },
    TurnCredentials { credentials: TurnCredentials },
    Done,
}

/// `Ok` or `Err` of a request, as a JSON object with one of those keys.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiResult {
    Ok(Response),
    Err(ApiError),
}

impl From<Result<Response, ApiError>> for ApiResult {
    fn from(result: Result<Response, ApiError>) -> Self {
        match result {
            Ok(r) => ApiResult::Ok(r),
            Err(e) => ApiResult::Err(e),
        }
    }
}

impl From<ApiResult> for Result<Response, ApiError> {
    fn from(result: ApiResult) -> Self {
        match result {
            ApiResult::Ok(r) => Ok(r),
            ApiResult::Err(e) => Err(e),
        }
    }
}

/// Pushed by the server without being asked.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    MemberJoined {
        network: NetworkId,
        member: Member,
    },
    /// A member changed name, or came online or went offline.
    MemberUpdated {
        network: NetworkId,
        member: Member,
    },
    MemberLeft {
        network: NetworkId,
        device: DeviceId,
        key: PublicKey,
        reason: LeaveReason,
    },
    /// This device was removed from the network by its owner.
    RemovedFromNetwork {
        network: NetworkId,
    },
    Signal {
        network: NetworkId,
        envelope: SealedEnvelope,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    Left,
    Removed,
}

/// A failure with a stable machine-readable code and a sentence for people.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Every way a request can fail. Invite failures are distinct so that a user learns
/// whether to ask for a new code or to check what they typed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message was not valid JSON of a known shape.
    Malformed,
    /// The message exceeded [`crate::MAX_MESSAGE_BYTES`].
    TooLarge,
    VersionMismatch,
    /// The proof of key did not verify, or a request came before authentication.
    Unauthenticated,
    InvalidArgument,
    /// No invite has this code (or it was mistyped).
    InviteUnknown,
    InviteExpired,
    InviteUsedUp,
    InviteRevoked,
    /// Too many failed invite redemptions from this address or for this network.
    RateLimited,
    NotMember,
    NotOwner,
    AlreadyMember,
    /// The device was removed from this network by its owner and cannot rejoin it.
    Banned,
    AddressPoolExhausted,
    /// The network has [`crate::MAX_NETWORK_MEMBERS`] members.
    NetworkFull,
    /// The device is in [`crate::MAX_NETWORKS_PER_DEVICE`] networks already.
    TooManyNetworks,
    UnknownNetwork,
    UnknownDevice,
    UnknownInvite,
    /// The envelope's receiver is not an online member of the network.
    PeerUnreachable,
    /// The owner cannot leave a network that still has other members.
    OwnerCannotLeave,
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_secret;
    use crate::sealed::Sealer;
    use proptest::prelude::*;

    fn member() -> Member {
        Member {
            device: DeviceId::random(),
            key: PublicKey::of(&generate_secret()),
            name: "laptop".parse().unwrap(),
            ip: OverlayIp("100.64.0.1".parse().unwrap()),
            owner: true,
            online: true,
            joined_at: 1_700_000_000,
        }
    }

    fn membership() -> Membership {
        let me = member();
        Membership {
            network: NetworkInfo {
                id: NetworkId::random(),
                name: "home".parse().unwrap(),
                range: OverlayNet::DEFAULT,
                owner: me.device,
            },
            members: vec![me.clone()],
            me,
        }
    }

    fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(value: &T) {
        let json = serde_json::to_string(value).unwrap();
        let back: T = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(&back, value);
    }

    #[test]
    fn every_message_round_trips() {
        let net = NetworkId::random();
        let mut sealer = Sealer::new(generate_secret());
        let envelope = sealer.seal(PublicKey::of(&generate_secret()), b"hi", 1).unwrap();
        let requests = vec![
            Request::CreateNetwork {
                name: "home".parse().unwrap(),
                device_name: "pc".parse().unwrap(),
                range: Some("100.64.8.0/24".parse().unwrap()),
            },
            Request::Join { code: InviteCode::random(), device_name: "pc".parse().unwrap() },
            Request::CreateInvite { network: net, max_uses: Some(3), expires_in_secs: None },
            Request::ListInvites { network: net },
            Request::RevokeInvite { network: net, invite: InviteId("ABCD".into()) },
            Request::ListMembers { network: net },
            Request::Rename { network: net, name: "pc2".parse().unwrap() },
            Request::Leave { network: net },
            Request::RemoveDevice { network: net, device: DeviceId::random() },
            Request::Signal { network: net, envelope: envelope.clone() },
            Request::TurnCredentials,
        ];
        for (id, body) in requests.into_iter().enumerate() {
            round_trip(&ClientMessage::Request { id: id as u64, body });
        }
        round_trip(&ClientMessage::Authenticate {
            version: 1,
            device_key: PublicKey::of(&generate_secret()),
            proof: [3; 32],
        });

        let invite = InviteInfo {
            id: InviteId("ABCD".into()),
            network: net,
            created_at: 1,
            expires_at: 2,
            max_uses: 1,
            uses: 0,
        };
        let responses = vec![
            Response::NetworkCreated { membership: membership() },
            Response::Joined { membership: membership() },
            Response::InviteCreated { invite: invite.clone(), code: InviteCode::random() },
            Response::Invites { invites: vec![invite] },
            Response::Members { members: vec![member()] },
            Response::Renamed { me: member() },
            Response::TurnCredentials {
                credentials: TurnCredentials {
                    username: "1:a".into(),
                    password: "p".into(),
                    expires_at: 5,
                    realm: "trellis".into(),
                },
            },
            Response::Done,
        ];
        for (id, r) in responses.into_iter().enumerate() {
            round_trip(&ServerMessage::Response { id: id as u64, result: ApiResult::Ok(r) });
        }
        round_trip(&ServerMessage::Response {
            id: 9,
            result: ApiResult::Err(ApiError::new(ErrorCode::InviteExpired, "expired")),
        });
        round_trip(&ServerMessage::Challenge {
            version: 1,
            server_key: PublicKey::of(&generate_secret()),
            challenge: [1; 32],
        });
        round_trip(&ServerMessage::Welcome(Welcome {
            device_key: member().key,
            memberships: vec![membership()],
            relay_port: 3478,
            relay_host: None,
        }));
        round_trip(&ServerMessage::Error { error: ApiError::new(ErrorCode::Malformed, "bad") });
        let m = member();
        for event in [
            Event::MemberJoined { network: net, member: m.clone() },
            Event::MemberUpdated { network: net, member: m.clone() },
            Event::MemberLeft { network: net, device: m.device, key: m.key, reason: LeaveReason::Removed },
            Event::RemovedFromNetwork { network: net },
            Event::Signal { network: net, envelope },
        ] {
            round_trip(&ServerMessage::Event { event });
        }
    }

    #[test]
    fn unknown_fields_and_types_are_rejected() {
        assert!(serde_json::from_str::<ClientMessage>(
            r#"{"type":"request","id":1,"body":{"op":"turn_credentials"},"x":1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"launch_missiles"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(
            r#"{"type":"request","id":1,"body":{"op":"join","code":"nope","device_name":"a"}}"#
        )
        .is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = serde_json::from_slice::<ClientMessage>(&bytes);
            let _ = serde_json::from_slice::<ServerMessage>(&bytes);
        }

        #[test]
        fn create_invite_round_trips(uses in proptest::option::of(any::<u32>()), ttl in proptest::option::of(any::<u64>()), id in any::<u64>()) {
            let msg = ClientMessage::Request { id, body: Request::CreateInvite { network: NetworkId::random(), max_uses: uses, expires_in_secs: ttl } };
            let back: ClientMessage = serde_json::from_str(&serde_json::to_string(&msg).unwrap()).unwrap();
            prop_assert_eq!(back, msg);
        }
    }
}
