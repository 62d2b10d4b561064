//! Answers the IPC requests of the CLI and the desktop app.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use trellis_protocol::ipc::{
    IpcError, IpcErrorCode, IpcRequest, IpcResponse, NetworkSummary, PeerInfo, PeerState, Status, TunnelState,
};
use trellis_protocol::signal::{ApiError, Member, Membership, Request, Response};
use trellis_protocol::{InviteTicket, PublicKey, ServerAddr};

use super::dataplane::Command;
use super::Daemon;
use crate::engine::PeerStatus;
use crate::signal::{SignalClient, SignalError};

/// How long `trellis ping` waits for the echo reply.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

use crate::ipc::HELPER_VERSION;

fn error(code: IpcErrorCode, message: impl Into<String>) -> IpcError {
    IpcError::new(code, message)
}

fn from_signal(e: SignalError) -> IpcError {
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
    pub fn status(&self) -> Status {
        // The revision is taken before any state is read: a change is always made before
        // the status that announces it is built, so a status with a later revision has
        // seen every change an earlier one has.
        let revision = self.status_revision.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let persisted = self.persisted().clone();
        let notice = persisted.removed.clone().or_else(|| self.notice.lock().expect("notice lock").clone());
        let server_connected = self.signal_client().is_some();
        let running = self.dataplane().is_some();
        let state = if !persisted.wants_up {
            TunnelState::Down
        } else if let Some(reason) = notice.clone().filter(|_| !running) {
            TunnelState::NeedsAttention { reason }
        } else if running {
            TunnelState::Up
        } else {
            TunnelState::Connecting
        };
        let network = persisted.membership.as_ref().map(|m| NetworkSummary {
            id: m.network.id,
            name: m.network.name.clone(),
            range: m.network.range,
            my_ip: m.me.ip,
            owner: m.me.owner,
            peers_total: m.members.iter().filter(|x| x.key != self.key).count() as u32,
            peers_connected: 0,
        });
        Status {
            helper_version: HELPER_VERSION.into(),
            device_name: persisted.device_name.clone(),
            public_key: self.key,
            fingerprint: self.key.fingerprint(),
            server: persisted.server.clone(),
            server_connected,
            wants_up: persisted.wants_up,
            state,
            network,
            notice,
            revision,
        }
    }

    async fn status_with_peers(&self) -> Status {
        let mut status = self.status();
        if let (Some(network), Some(dp)) = (status.network.as_mut(), self.dataplane()) {
            network.peers_connected =
                dp.peers().await.iter().filter(|p| p.state == PeerState::Connected).count() as u32;
        }
        status
    }

    fn membership(&self) -> Result<Membership, IpcError> {
        self.persisted().membership.clone().ok_or_else(|| {
            error(IpcErrorCode::NoNetwork, "this device is in no network yet: create one or join with a code")
        })
    }

    /// The live signal connection, connecting now if the user wants to be up.
    async fn client(self: &Arc<Self>) -> Result<SignalClient, IpcError> {
        if let Some(client) = self.signal_client() {
            return Ok(client);
        }
        let server = self.persisted().server.clone().ok_or_else(|| {
            error(
                IpcErrorCode::NoServer,
                "no signal server is set: give one with `trellis server HOST[:PORT]`",
            )
        })?;
        self.connect(&server).await.map_err(from_signal)?;
        self.signal_client()
            .ok_or_else(|| error(IpcErrorCode::ServerUnreachable, "the connection dropped at once"))
    }

    fn ensure_no_network(&self) -> Result<(), IpcError> {
        match self.persisted().membership.as_ref() {
            Some(m) => Err(error(
                IpcErrorCode::AlreadyInNetwork,
                format!("this device is already in network {:?}; leave it first", m.network.name.as_str()),
            )),
            None => Ok(()),
        }
    }

    /// Takes a membership the server just granted (created or joined) as this device's.
    async fn adopt(&self, membership: Membership) -> Result<IpcResponse, IpcError> {
        self.update(|p| {
            p.membership = Some(membership);
            p.wants_up = true;
            p.removed = None;
        })
        .map_err(internal)?;
        self.set_notice(None);
        self.apply_membership().await;
        Ok(IpcResponse::Status { status: self.status() })
    }

    fn set_server(&self, server: Option<ServerAddr>) -> Result<(), IpcError> {
        let Some(server) = server else { return Ok(()) };
        if self.persisted().server.as_ref() != Some(&server) {
            self.signal.lock().expect("signal lock").take();
            self.update(|p| p.server = Some(server)).map_err(internal)?;
        }
        Ok(())
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

    pub async fn handle(self: &Arc<Self>, request: IpcRequest) -> Result<IpcResponse, IpcError> {
        match request {
            IpcRequest::Status => Ok(IpcResponse::Status { status: self.status_with_peers().await }),
            IpcRequest::Up => {
                self.update(|p| p.wants_up = true).map_err(internal)?;
                Ok(IpcResponse::Status { status: self.status() })
            }
            IpcRequest::Down => {
                self.update(|p| p.wants_up = false).map_err(internal)?;
                self.set_notice(None);
                Ok(IpcResponse::Status { status: self.status() })
            }
            IpcRequest::SetServer { server } => {
                // One lock at a time: two guards in one expression would deadlock.
                let current = self.persisted().clone();
                if current.membership.is_some() && current.server.as_ref() != Some(&server) {
                    return Err(error(
                        IpcErrorCode::AlreadyInNetwork,
                        "this device is in a network on another server; leave it first",
                    ));
                }
                self.set_server(Some(server))?;
                Ok(IpcResponse::Done)
            }
            IpcRequest::CreateNetwork { name, server, range } => {
                self.ensure_no_network()?;
                self.set_server(server)?;
                self.update(|p| p.wants_up = true).map_err(internal)?;
                let client = self.client().await?;
                let device_name = self.persisted().device_name.clone();
                let response = client
                    .request(Request::CreateNetwork { name, device_name, range })
                    .await
                    .map_err(from_signal)?;
                let Response::NetworkCreated { membership } = response else {
                    return Err(internal(format!("unexpected answer {response:?}")));
                };
                self.adopt(membership).await
            }
            IpcRequest::Join { ticket } => {
                self.ensure_no_network()?;
                self.set_server(ticket.server.clone())?;
                // Wanting to be up first: the supervisor drops connections nobody wants.
                self.update(|p| p.wants_up = true).map_err(internal)?;
                let client = self.client().await?;
                let device_name = self.persisted().device_name.clone();
                let response = client
                    .request(Request::Join { code: ticket.code, device_name })
                    .await
                    .map_err(from_signal)?;
                let Response::Joined { membership } = response else {
                    return Err(internal(format!("unexpected answer {response:?}")));
                };
                self.adopt(membership).await
            }
            IpcRequest::CreateInvite { max_uses, expires_in_secs } => {
                let network = self.membership()?.network.id;
                let client = self.client().await?;
                let response = client
                    .request(Request::CreateInvite { network, max_uses, expires_in_secs })
                    .await
                    .map_err(from_signal)?;
                let Response::InviteCreated { invite, code } = response else {
                    return Err(internal(format!("unexpected answer {response:?}")));
                };
                let ticket = InviteTicket { code, server: self.persisted().server.clone() };
                Ok(IpcResponse::Invite { ticket, invite })
            }
            IpcRequest::ListInvites => {
                let network = self.membership()?.network.id;
                match self
                    .client()
                    .await?
                    .request(Request::ListInvites { network })
                    .await
                    .map_err(from_signal)?
                {
                    Response::Invites { invites } => Ok(IpcResponse::Invites { invites }),
                    other => Err(internal(format!("unexpected answer {other:?}"))),
                }
            }
            IpcRequest::RevokeInvite { id } => {
                let network = self.membership()?.network.id;
                self.client()
                    .await?
                    .request(Request::RevokeInvite { network, invite: id })
                    .await
                    .map_err(from_signal)?;
                Ok(IpcResponse::Done)
            }
            IpcRequest::Leave => {
                let network = self.membership()?.network.id;
                self.client().await?.request(Request::Leave { network }).await.map_err(from_signal)?;
                self.update(|p| p.membership = None).map_err(internal)?;
                Ok(IpcResponse::Done)
            }
            IpcRequest::Remove { peer } => {
                let membership = self.membership()?;
                let member = self.resolve_peer(&membership, &peer)?;
                let network = membership.network.id;
                self.client()
                    .await?
                    .request(Request::RemoveDevice { network, device: member.device })
                    .await
                    .map_err(from_signal)?;
                Ok(IpcResponse::Done)
            }
            IpcRequest::Rename { name } => {
                let membership = self.persisted().membership.clone();
                let name = match membership {
                    Some(m) => {
                        let response = self
                            .client()
                            .await?
                            .request(Request::Rename { network: m.network.id, name })
                            .await
                            .map_err(from_signal)?;
                        let Response::Renamed { me } = response else {
                            return Err(internal(format!("unexpected answer {response:?}")));
                        };
                        self.update(|p| {
                            if let Some(m) = p.membership.as_mut() {
                                m.me = me.clone();
                            }
                        })
                        .map_err(internal)?;
                        me.name
                    }
                    None => name,
                };
                self.update(|p| p.device_name = name).map_err(internal)?;
                Ok(IpcResponse::Status { status: self.status() })
            }
            IpcRequest::Peers => {
                let membership = self.membership()?;
                let live = match self.dataplane() {
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
                let membership = self.membership()?;
                let member = self.resolve_peer(&membership, &peer)?;
                let dp = self
                    .dataplane()
                    .ok_or_else(|| error(IpcErrorCode::NoNetwork, "the tunnel is down: run `trellis up`"))?;
                let rtt = self.ping(&dp, member.key).await?;
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

    async fn ping(&self, dp: &super::Dataplane, key: PublicKey) -> Result<Duration, IpcError> {
        let (tx, rx) = oneshot::channel();
        self.pings.lock().expect("pings lock").entry(key).or_default().push(tx);
        let (sent_tx, sent_rx) = oneshot::channel();
        dp.send(Command::Ping(key, sent_tx)).await;
        let sent =
            sent_rx.await.map_err(internal).and_then(|r| r.map_err(|e| error(IpcErrorCode::UnknownPeer, e)));
        let answer = match sent {
            Ok(()) => tokio::time::timeout(PING_TIMEOUT, rx).await.ok().and_then(Result::ok),
            Err(e) => {
                drop(rx);
                self.drop_ping_waiters(&key);
                return Err(e);
            }
        };
        match answer {
            Some(rtt) => Ok(rtt),
            None => {
                self.drop_ping_waiters(&key);
                Err(error(
                    IpcErrorCode::Timeout,
                    format!("no reply through the tunnel within {} s", PING_TIMEOUT.as_secs()),
                ))
            }
        }
    }

    /// Forgets the waiters of a ping that failed or timed out (closed ones only: a
    /// concurrent ping to the same peer keeps waiting).
    fn drop_ping_waiters(&self, key: &PublicKey) {
        let mut pings = self.pings.lock().expect("pings lock");
        if let Some(waiters) = pings.get_mut(key) {
            waiters.retain(|w| !w.is_closed());
            if waiters.is_empty() {
                pings.remove(key);
            }
        }
    }
}
