//! Answers the IPC requests of the CLI and the desktop app.

use std::time::Duration;

use trellis_protocol::ipc::{IpcError, IpcErrorCode, IpcRequest, IpcResponse, PeerInfo, PeerState, Status};
use trellis_protocol::signal::{ApiError, Member, Membership, Request, Response};
use trellis_protocol::{InviteTicket, PublicKey};

use super::actor::{Command, Snapshot};
use super::dataplane::Command as DpCommand;
use super::{Daemon, Stopped};
use crate::engine::PeerStatus;
use crate::signal::SignalError;

/// How long `trellis ping` waits for the echo reply.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

fn error(code: IpcErrorCode, message: impl Into<String>) -> IpcError {
    IpcError::new(code, message)
}

pub(super) fn from_signal(e: SignalError) -> IpcError {
    match e {
        SignalError::Api(ApiError { code, message }) => error(IpcErrorCode::Server(code), message),
        SignalError::Refused { error: ApiError { code, message }, .. } => {
            error(IpcErrorCode::Server(code), message)
        }
        SignalError::Timeout => error(IpcErrorCode::Timeout, e.to_string()),
        other => error(IpcErrorCode::ServerUnreachable, other.to_string()),
    }
}

fn internal(e: impl std::fmt::Display) -> IpcError {
    error(IpcErrorCode::Internal, e.to_string())
}

impl From<Stopped> for IpcError {
    fn from(e: Stopped) -> Self {
        error(IpcErrorCode::Internal, e.to_string())
    }
}

/// The IPC view of a member, with the engine's live view when there is one.
pub fn peer_info(member: &Member, live: Option<&PeerStatus>) -> PeerInfo {
    PeerInfo {
        name: member.name.clone(),
        key: member.key,
        fingerprint: member.key.fingerprint(),
        ip: member.ip,
        owner: member.owner,
        online: member.online,
        state: live.map(|l| l.state.clone()).unwrap_or(if member.online {
            PeerState::Connecting
        } else {
            PeerState::Offline
        }),
        path: live.and_then(|l| l.path.clone()),
        last_handshake_secs_ago: live.and_then(|l| l.last_handshake).map(|d| d.as_secs()),
        rx_bytes: live.map_or(0, |l| l.rx_bytes),
        tx_bytes: live.map_or(0, |l| l.tx_bytes),
        rtt_micros: live.and_then(|l| l.rtt).map(|d| d.as_micros() as u64),
    }
}

impl Daemon {
    async fn snapshot(&self) -> Result<Snapshot, IpcError> {
        Ok(self.call(Command::Snapshot).await?)
    }

    /// The status as subscribers see it.
    pub async fn status(&self) -> Result<Status, IpcError> {
        Ok(self.snapshot().await?.status)
    }

    async fn status_with_peers(&self) -> Result<Status, IpcError> {
        let Snapshot { mut status, dataplane, .. } = self.snapshot().await?;
        if let (Some(network), Some(dp)) = (status.network.as_mut(), dataplane) {
            network.peers_connected =
                dp.peers().await.iter().filter(|p| p.state == PeerState::Connected).count() as u32;
        }
        Ok(status)
    }

    async fn membership(&self) -> Result<(Membership, Snapshot), IpcError> {
        let snapshot = self.snapshot().await?;
        let membership = snapshot.persisted.membership.clone().ok_or_else(|| {
            error(IpcErrorCode::NoNetwork, "this device is in no network yet: create one or join with a code")
        })?;
        Ok((membership, snapshot))
    }

    /// Sends one request to the server, on the daemon's session or, while disconnected,
    /// on one opened for it.
    async fn request(&self, body: Request) -> Result<Response, IpcError> {
        let lease = self.call(Command::Client).await??;
        let answer = lease.client().request(body).await;
        lease.release().await;
        answer.map_err(from_signal)
    }

    fn resolve_peer(&self, membership: &Membership, text: &str) -> Result<Member, IpcError> {
        let matches: Vec<&Member> = membership
            .members
            .iter()
            .filter(|m| m.key != self.key)
            .filter(|m| {
                m.name.as_str().eq_ignore_ascii_case(text)
                    || m.ip.to_string() == text
                    || (text.len() >= 4 && m.key.to_string().starts_with(text))
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(error(
                IpcErrorCode::UnknownPeer,
                format!("no peer is called {text:?} (name, address or key)"),
            )),
            _ => Err(error(
                IpcErrorCode::InvalidArgument,
                format!("{text:?} matches several peers; be more precise"),
            )),
        }
    }

    pub async fn handle(&self, request: IpcRequest) -> Result<IpcResponse, IpcError> {
        match request {
            IpcRequest::Status => Ok(IpcResponse::Status { status: self.status_with_peers().await? }),
            IpcRequest::Up => Ok(IpcResponse::Status { status: self.call(Command::Up).await?? }),
            IpcRequest::Down => Ok(IpcResponse::Status { status: self.call(Command::Down).await?? }),
            IpcRequest::SetServer { server } => {
                self.call(|reply| Command::SetServer(server, reply)).await??;
                Ok(IpcResponse::Done)
            }
            IpcRequest::CreateNetwork { name, server, range } => {
                self.call(|reply| Command::PrepareMembership(server, reply)).await??;
                let device_name = self.snapshot().await?.persisted.device_name;
                let response = self.request(Request::CreateNetwork { name, device_name, range }).await?;
                let Response::NetworkCreated { membership } = response else {
                    return Err(internal(format!("unexpected answer {response:?}")));
                };
                Ok(IpcResponse::Status {
                    status: self.call(|reply| Command::Adopt(membership, reply)).await??,
                })
            }
            IpcRequest::Join { ticket } => {
                self.call(|reply| Command::PrepareMembership(ticket.server.clone(), reply)).await??;
                let device_name = self.snapshot().await?.persisted.device_name;
                let response = self.request(Request::Join { code: ticket.code, device_name }).await?;
                let Response::Joined { membership } = response else {
                    return Err(internal(format!("unexpected answer {response:?}")));
                };
                Ok(IpcResponse::Status {
                    status: self.call(|reply| Command::Adopt(membership, reply)).await??,
                })
            }
            IpcRequest::CreateInvite { max_uses, expires_in_secs } => {
                let (membership, snapshot) = self.membership().await?;
                let network = membership.network.id;
                let response =
                    self.request(Request::CreateInvite { network, max_uses, expires_in_secs }).await?;
                let Response::InviteCreated { invite, code } = response else {
                    return Err(internal(format!("unexpected answer {response:?}")));
                };
                let ticket = InviteTicket { code, server: snapshot.persisted.server };
                Ok(IpcResponse::Invite { ticket, invite })
            }
            IpcRequest::ListInvites => {
                let network = self.membership().await?.0.network.id;
                match self.request(Request::ListInvites { network }).await? {
                    Response::Invites { invites } => Ok(IpcResponse::Invites { invites }),
                    other => Err(internal(format!("unexpected answer {other:?}"))),
                }
            }
            IpcRequest::RevokeInvite { id } => {
                let network = self.membership().await?.0.network.id;
                self.request(Request::RevokeInvite { network, invite: id }).await?;
                Ok(IpcResponse::Done)
            }
            IpcRequest::Leave => {
                let network = self.membership().await?.0.network.id;
                self.request(Request::Leave { network }).await?;
                self.call(Command::Left).await??;
                Ok(IpcResponse::Done)
            }
            IpcRequest::Remove { peer } => {
                let (membership, _) = self.membership().await?;
                let member = self.resolve_peer(&membership, &peer)?;
                let network = membership.network.id;
                self.request(Request::RemoveDevice { network, device: member.device }).await?;
                Ok(IpcResponse::Done)
            }
            IpcRequest::Rename { name } => {
                let membership = self.snapshot().await?.persisted.membership;
                let (name, me) = match membership {
                    Some(m) => {
                        let response = self.request(Request::Rename { network: m.network.id, name }).await?;
                        let Response::Renamed { me } = response else {
                            return Err(internal(format!("unexpected answer {response:?}")));
                        };
                        (me.name.clone(), Some(me))
                    }
                    None => (name, None),
                };
                Ok(IpcResponse::Status {
                    status: self.call(|reply| Command::Renamed(name, me, reply)).await??,
                })
            }
            IpcRequest::Peers => {
                let (membership, snapshot) = self.membership().await?;
                let live = match snapshot.dataplane {
                    Some(dp) => dp.peers().await,
                    None => Vec::new(),
                };
                let peers = membership
                    .members
                    .iter()
                    .filter(|m| m.key != self.key)
                    .map(|m| peer_info(m, live.iter().find(|l| l.key == m.key)))
                    .collect();
                Ok(IpcResponse::Peers { peers })
            }
            IpcRequest::Ping { peer } => {
                let (membership, _) = self.membership().await?;
                let member = self.resolve_peer(&membership, &peer)?;
                let (dp, answer) = self.call(|reply| Command::Ping(member.key, reply)).await??;
                let rtt = ping(&dp, member.key, answer).await?;
                let path = dp.peers().await.into_iter().find(|p| p.key == member.key).and_then(|p| p.path);
                Ok(IpcResponse::Pong {
                    peer: member.name.to_string(),
                    ip: member.ip,
                    path: path.map(|p| p.kind),
                    rtt_micros: rtt.as_micros() as u64,
                })
            }
            IpcRequest::Subscribe => Ok(IpcResponse::Done),
        }
    }
}

/// Sends the echo request and waits for the reply the actor hands to `answer`.
async fn ping(
    dp: &super::dataplane::DataplaneHandle,
    key: PublicKey,
    answer: tokio::sync::oneshot::Receiver<Duration>,
) -> Result<Duration, IpcError> {
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    dp.send(DpCommand::Ping(key, sent_tx)).await;
    sent_rx.await.map_err(internal)?.map_err(|e| error(IpcErrorCode::UnknownPeer, e))?;
    match tokio::time::timeout(PING_TIMEOUT, answer).await {
        Ok(Ok(rtt)) => Ok(rtt),
        _ => Err(error(
            IpcErrorCode::Timeout,
            format!("no reply through the tunnel within {} s", PING_TIMEOUT.as_secs()),
        )),
    }
}
