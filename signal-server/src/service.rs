//! What the server does, independent of how requests arrive: authenticated devices
//! create, join and manage networks; live sessions receive membership events and
//! sealed signal.
//!
//! Contract: a transport (the WebSocket [`crate::api`]) authenticates a device, calls
//! [`Service::connect`] to register a session, sends the returned [`Welcome`] and then
//! every [`Outbound`] from the session's receiver, and passes each request to
//! [`Service::handle`]. Dropping the [`Session`] unregisters it. A request's change is
//! durable in the store before its response exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc;
use trellis_protocol::signal::{
    ApiError, ErrorCode, Event, LeaveReason, Member, Membership, NetworkInfo, Request, Response,
    ServerMessage, Welcome, DEFAULT_INVITE_TTL_SECS, INVITE_TTL_RANGE_SECS, MAX_INVITE_USES,
};
use trellis_protocol::{
    DeviceId, DeviceName, InviteCode, InviteId, NetworkId, NetworkName, OverlayNet, PublicKey,
    MAX_NETWORKS_PER_DEVICE, MAX_NETWORK_MEMBERS,
};
use x25519_dalek::StaticSecret;

use crate::clock::Clock;
use crate::network::{DeadInvite, InviteRecord, MemberRecord, NetworkState};
use crate::ratelimit::{source_key, Limiter, Rate};
use crate::relay::{self, RelaySecret};
use crate::store::{Store, StoreError};

/// How many messages may wait for a slow session before it is disconnected (it gets
/// the whole state again in the welcome when it reconnects, so nothing is lost).
pub const SESSION_QUEUE: usize = 256;

/// Most open (redeemable) invites per network: enough for any party, small enough that
/// an owner's script gone wild cannot grow a network's record without bound.
pub const MAX_OPEN_INVITES: usize = 100;

/// A frame for one session: a serialized server message (shared between all receivers
/// of a broadcast), or the reason the server closes the session.
#[derive(Debug, Clone)]
pub enum Outbound {
    Frame(Arc<str>),
    Close(ApiError),
}

#[derive(Clone, Copy, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Failed invite redemptions per source address (IPv4 or IPv6 /64).
    pub join_failures_per_source: Rate,
    /// Failed invite redemptions per network, whatever their source.
    pub join_failures_per_network: Rate,
    /// Requests per session, against floods from one authenticated device.
    pub requests_per_session: Rate,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            join_failures_per_source: Rate { burst: 10, per_minute: 5 },
            join_failures_per_network: Rate { burst: 20, per_minute: 10 },
            requests_per_session: Rate { burst: 200, per_minute: 1200 },
        }
    }
}

/// Where devices find the STUN/TURN relay, and the secret its credentials are made with.
#[derive(Debug, Clone)]
pub struct RelayInfo {
    pub secret: RelaySecret,
    pub realm: String,
    pub port: u16,
    pub host: Option<String>,
    /// Ends the relay allocations of a device that is no longer a member anywhere.
    pub evictor: Option<relay::Evictor>,
}

pub struct Service {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    server_secret: StaticSecret,
    relay: RelayInfo,
    limits: Limits,
    join_failures_by_source: Limiter<IpAddr>,
    join_failures_by_network: Limiter<NetworkId>,
    /// One writer at a time: a change reads a network, decides, and writes it back.
    write_lock: Mutex<()>,
    sessions: Mutex<Sessions>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("server_key", &self.server_key()).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Sessions {
    next_id: u64,
    by_device: HashMap<DeviceId, Vec<(u64, mpsc::Sender<Outbound>)>>,
}

/// One authenticated connection of a device. Unregisters itself when dropped.
#[derive(Debug)]
pub struct Session {
    service: Arc<Service>,
    id: u64,
    pub device: DeviceId,
    pub key: PublicKey,
    pub source: IpAddr,
    requests: Limiter<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.service.unregister(&self.device, self.id);
    }
}

fn internal(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store failure");
    ApiError::new(ErrorCode::Internal, "the server could not access its storage; try again later")
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        server_secret: StaticSecret,
        relay: RelayInfo,
        limits: Limits,
    ) -> Self {
        Self {
            store,
            clock,
            server_secret,
            relay,
            limits,
            join_failures_by_source: Limiter::new(limits.join_failures_per_source),
            join_failures_by_network: Limiter::new(limits.join_failures_per_network),
            write_lock: Mutex::new(()),
            sessions: Mutex::new(Sessions::default()),
        }
    }

    pub fn server_key(&self) -> PublicKey {
        PublicKey::of(&self.server_secret)
    }

    pub fn server_secret(&self) -> &StaticSecret {
        &self.server_secret
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().expect("sessions lock")
    }

    /// How many live sessions `device` has (one per connected helper; more only while a
    /// reconnect overlaps the old connection's end).
    pub fn session_count(&self, device: &DeviceId) -> usize {
        self.sessions().by_device.get(device).map_or(0, Vec::len)
    }

    fn is_online(&self, device: &DeviceId) -> bool {
        self.sessions().by_device.get(device).is_some_and(|s| !s.is_empty())
    }

    /// Registers a session for an authenticated device and returns what to send it.
    pub fn connect(
        self: &Arc<Self>,
        key: PublicKey,
        source: IpAddr,
    ) -> Result<(Session, mpsc::Receiver<Outbound>, Welcome), ApiError> {
        let device = DeviceId::of_key(&key);
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let (id, first) = {
            let mut sessions = self.sessions();
            sessions.next_id += 1;
            let id = sessions.next_id;
            let list = sessions.by_device.entry(device).or_default();
            list.push((id, tx));
            (id, list.len() == 1)
        };
        let session = Session {
            service: self.clone(),
            id,
            device,
            key,
            source,
            requests: Limiter::new(self.limits.requests_per_session),
        };
        // Registered before reading the state: a change made meanwhile reaches the
        // session as an event after the welcome, never falls between the two.
        let memberships = self.memberships(&device)?;
        if first {
            self.announce_presence(&device, &memberships);
        }
        let welcome = Welcome {
            device_key: key,
            memberships,
            relay_port: self.relay.port,
            relay_host: self.relay.host.clone(),
        };
        tracing::info!(device = %device, key = %key.short(), %source, "session started");
        Ok((session, rx, welcome))
    }

    fn unregister(&self, device: &DeviceId, id: u64) {
        let now_offline = {
            let mut sessions = self.sessions();
            let Some(list) = sessions.by_device.get_mut(device) else { return };
            let before = list.len();
            list.retain(|(sid, _)| *sid != id);
            let removed = list.len() < before;
            let empty = list.is_empty();
            if empty {
                sessions.by_device.remove(device);
            }
            removed && empty
        };
        if now_offline {
            tracing::info!(%device, "device offline");
            if let Ok(memberships) = self.memberships(device) {
                self.announce_presence(device, &memberships);
            }
        }
    }

    /// Tells the other members of each network that `device` came online or went offline.
    fn announce_presence(&self, device: &DeviceId, memberships: &[Membership]) {
        let online = self.is_online(device);
        for membership in memberships {
            let member = Member { online, ..membership.me.clone() };
            let event = Event::MemberUpdated { network: membership.network.id, member };
            let recipients = membership.members.iter().map(|m| m.device).filter(|d| d != device);
            self.send_event(recipients, event);
        }
    }

    /// Queues `event` for every session of `devices`; a session whose queue is full is
    /// disconnected (it catches up from the welcome when it reconnects).
    fn send_event(&self, devices: impl IntoIterator<Item = DeviceId>, event: Event) -> usize {
        let frame: Arc<str> = match serde_json::to_string(&ServerMessage::Event { event }) {
            Ok(text) => text.into(),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an event");
                return 0;
            }
        };
        let mut delivered = 0;
        let mut overflowed = Vec::new();
        {
            let sessions = self.sessions();
            for device in devices {
                for (id, tx) in sessions.by_device.get(&device).into_iter().flatten() {
                    match tx.try_send(Outbound::Frame(frame.clone())) {
                        Ok(()) => delivered += 1,
                        Err(mpsc::error::TrySendError::Full(_)) => overflowed.push((device, *id)),
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
        }
        for (device, id) in overflowed {
            tracing::warn!(%device, "session too slow to take events; disconnecting it");
            self.unregister(&device, id);
        }
        delivered
    }

    /// Ends every session of `device` after `reason` (queued behind what it already has).
    fn close_sessions(&self, device: &DeviceId, reason: ApiError) {
        let ids: Vec<u64> = {
            let sessions = self.sessions();
            let list = sessions.by_device.get(device).map(Vec::as_slice).unwrap_or_default();
            for (_, tx) in list {
                let _ = tx.try_send(Outbound::Close(reason.clone()));
            }
            list.iter().map(|(id, _)| *id).collect()
        };
        for id in ids {
            self.unregister(device, id);
        }
    }

    fn memberships(&self, device: &DeviceId) -> Result<Vec<Membership>, ApiError> {
        let mut memberships = Vec::new();
        for id in self.store.networks_of(device).map_err(internal)? {
            if let Some(state) = self.store.network(&id).map_err(internal)? {
                if let Some(m) = self.membership(&state, device) {
                    memberships.push(m);
                }
            }
        }
        Ok(memberships)
    }

    fn membership(&self, state: &NetworkState, device: &DeviceId) -> Option<Membership> {
        let me = state.member(device)?;
        Some(Membership {
            network: state.info.clone(),
            me: state.view(me, self.is_online(device)),
            members: self.members(state),
        })
    }

    fn members(&self, state: &NetworkState) -> Vec<Member> {
        state.members.iter().map(|m| state.view(m, self.is_online(&m.device))).collect()
    }

    fn load(&self, id: &NetworkId) -> Result<NetworkState, ApiError> {
        self.store
            .network(id)
            .map_err(internal)?
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownNetwork, format!("no network has the id {id}")))
    }

    /// Loads a network the caller must be a member of.
    fn load_as_member(&self, id: &NetworkId, device: &DeviceId) -> Result<NetworkState, ApiError> {
        let state = self.load(id)?;
        if state.member(device).is_some() {
            Ok(state)
        } else if state.is_banned(device) {
            Err(ApiError::new(
                ErrorCode::Banned,
                format!("this device was removed from network {:?} by its owner", state.info.name.as_str()),
            ))
        } else {
            Err(ApiError::new(ErrorCode::NotMember, format!("this device is not a member of network {id}")))
        }
    }

    fn load_as_owner(&self, id: &NetworkId, device: &DeviceId) -> Result<NetworkState, ApiError> {
        let state = self.load_as_member(id, device)?;
        if state.is_owner(device) {
            Ok(state)
        } else {
            Err(ApiError::new(
                ErrorCode::NotOwner,
                format!("only the owner of network {:?} may do this", state.info.name.as_str()),
            ))
        }
    }

    fn lock_writes(&self) -> MutexGuard<'_, ()> {
        self.write_lock.lock().expect("write lock")
    }

    fn save(&self, state: &NetworkState) -> Result<(), ApiError> {
        self.store.save_network(state).map_err(internal)
    }

    /// Answers one request of `session`.
    pub fn handle(&self, session: &Session, request: Request) -> Result<Response, ApiError> {
        if !session.requests.take(&(), Instant::now()) {
            return Err(ApiError::new(ErrorCode::RateLimited, "too many requests; slow down"));
        }
        let device = &session.device;
        match request {
            Request::CreateNetwork { name, device_name, range } => {
                self.create_network(session, name, device_name, range.unwrap_or_default())
            }
            Request::Join { code, device_name } => self.join(session, &code, device_name),
            Request::CreateInvite { network, max_uses, expires_in_secs } => {
                self.create_invite(device, &network, max_uses, expires_in_secs)
            }
            Request::ListInvites { network } => {
                let state = self.load_as_owner(&network, device)?;
                let now = self.clock.now();
                let invites = state
                    .invites
                    .iter()
                    .filter(|i| i.check_live(now).is_ok())
                    .map(|i| i.info(network))
                    .collect();
                Ok(Response::Invites { invites })
            }
            Request::RevokeInvite { network, invite } => self.revoke_invite(device, &network, &invite),
            Request::ListMembers { network } => {
                let state = self.load_as_member(&network, device)?;
                Ok(Response::Members { members: self.members(&state) })
            }
            Request::Rename { network, name } => self.rename(device, &network, &name),
            Request::Leave { network } => self.leave(device, &network),
            Request::RemoveDevice { network, device: target } => {
                self.remove_device(device, &network, &target)
            }
            Request::Signal { network, envelope } => {
                let state = self.load_as_member(&network, device)?;
                if envelope.from != session.key {
                    return Err(ApiError::new(
                        ErrorCode::InvalidArgument,
                        "the envelope's sender key is not this device's key",
                    ));
                }
                let Some(receiver) = state.member_by_key(&envelope.to) else {
                    return Err(ApiError::new(
                        ErrorCode::PeerUnreachable,
                        format!("{} is not a member of this network", envelope.to.short()),
                    ));
                };
                let receiver = receiver.device;
                if self.send_event([receiver], Event::Signal { network, envelope }) == 0 {
                    return Err(ApiError::new(
                        ErrorCode::PeerUnreachable,
                        format!("the device {receiver} is offline"),
                    ));
                }
                Ok(Response::Done)
            }
            Request::TurnCredentials => {
                if !self.store.networks_of(device).map_err(internal)?.is_empty() {
                    let now = self.clock.now();
                    let credentials =
                        relay::issue_credentials(&self.relay.secret, *device, now, &self.relay.realm);
                    Ok(Response::TurnCredentials { credentials })
                } else {
                    Err(ApiError::new(ErrorCode::NotMember, "relay credentials are for members of a network"))
                }
            }
        }
    }

    /// Once a device belongs to no network, its relay allocations end too.
    fn evict_if_homeless(&self, device: &DeviceId) {
        if let (Some(evictor), Ok(networks)) = (&self.relay.evictor, self.store.networks_of(device)) {
            if networks.is_empty() {
                evictor.evict(device);
            }
        }
    }

    fn check_network_count(&self, device: &DeviceId) -> Result<(), ApiError> {
        if self.store.networks_of(device).map_err(internal)?.len() >= MAX_NETWORKS_PER_DEVICE {
            return Err(ApiError::new(
                ErrorCode::TooManyNetworks,
                format!("this device is in {MAX_NETWORKS_PER_DEVICE} networks already; leave one first"),
            ));
        }
        Ok(())
    }

    fn create_network(
        &self,
        session: &Session,
        name: NetworkName,
        device_name: DeviceName,
        range: OverlayNet,
    ) -> Result<Response, ApiError> {
        let _writes = self.lock_writes();
        self.check_network_count(&session.device)?;
        let now = self.clock.now();
        let info = NetworkInfo { id: NetworkId::random(), name, range, owner: session.device };
        let mut state = NetworkState::new(info, now);
        let ip = state.allocate_address(now)?;
        state.members.push(MemberRecord {
            device: session.device,
            key: session.key,
            name: device_name,
            ip,
            joined_at: now,
        });
        self.save(&state)?;
        tracing::info!(network = %state.info.id, device = %session.device, "network created");
        let membership = self.membership(&state, &session.device).expect("the creator is a member");
        Ok(Response::NetworkCreated { membership })
    }

    fn create_invite(
        &self,
        device: &DeviceId,
        network: &NetworkId,
        max_uses: Option<u32>,
        expires_in_secs: Option<u64>,
    ) -> Result<Response, ApiError> {
        let max_uses = max_uses.unwrap_or(1);
        if !(1..=MAX_INVITE_USES).contains(&max_uses) {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("an invite can be used 1 to {MAX_INVITE_USES} times, not {max_uses}"),
            ));
        }
        let ttl = expires_in_secs.unwrap_or(DEFAULT_INVITE_TTL_SECS);
        if !INVITE_TTL_RANGE_SECS.contains(&ttl) {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "an invite lives {} to {} seconds, not {ttl}",
                    INVITE_TTL_RANGE_SECS.start(),
                    INVITE_TTL_RANGE_SECS.end()
                ),
            ));
        }
        let _writes = self.lock_writes();
        let mut state = self.load_as_owner(network, device)?;
        let now = self.clock.now();
        state.prune(now);
        if state.invites.iter().filter(|i| i.check_live(now).is_ok()).count() >= MAX_OPEN_INVITES {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("the network has {MAX_OPEN_INVITES} open invites; revoke some first"),
            ));
        }
        let code = self.fresh_code()?;
        let record = InviteRecord {
            id: code.locator(),
            secret_hash: code.secret_hash(),
            created_at: now,
            expires_at: now + ttl,
            max_uses,
            uses: 0,
            revoked_at: None,
        };
        let invite = record.info(*network);
        state.invites.push(record);
        self.save(&state)?;
        tracing::info!(%network, invite = %invite.id, max_uses, ttl, "invite created");
        Ok(Response::InviteCreated { invite, code })
    }

    /// A code whose locator no stored invite has (live or dead), so a locator names one invite.
    fn fresh_code(&self) -> Result<InviteCode, ApiError> {
        for _ in 0..64 {
            let code = InviteCode::random();
            if self.store.network_of_invite(&code.locator()).map_err(internal)?.is_none() {
                return Ok(code);
            }
        }
        Err(ApiError::new(ErrorCode::Internal, "could not find a free invite locator; try again"))
    }

    fn revoke_invite(
        &self,
        device: &DeviceId,
        network: &NetworkId,
        invite: &InviteId,
    ) -> Result<Response, ApiError> {
        let _writes = self.lock_writes();
        let mut state = self.load_as_owner(network, device)?;
        let now = self.clock.now();
        let record = state.invite_mut(invite).ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownInvite, format!("network {network} has no invite {invite}"))
        })?;
        record.revoked_at.get_or_insert(now);
        self.save(&state)?;
        tracing::info!(%network, %invite, "invite revoked");
        Ok(Response::Done)
    }

    fn join(
        &self,
        session: &Session,
        code: &InviteCode,
        device_name: DeviceName,
    ) -> Result<Response, ApiError> {
        let now_instant = Instant::now();
        let source = source_key(session.source);
        let rate_limited = || {
            ApiError::new(
                ErrorCode::RateLimited,
                "too many wrong invite codes; wait a few minutes and try again",
            )
        };
        if !self.join_failures_by_source.allows(&source, now_instant) {
            return Err(rate_limited());
        }
        let unknown = || {
            ApiError::new(
                ErrorCode::InviteUnknown,
                "no invite matches this code; check it for typos or ask for a new one",
            )
        };
        let _writes = self.lock_writes();
        let locator = code.locator();
        let network = self.store.network_of_invite(&locator).map_err(internal)?;
        let Some(network) = network else {
            self.join_failures_by_source.take(&source, now_instant);
            return Err(unknown());
        };
        // Checked before the secret: otherwise a guesser would learn from the answer
        // whether a guess was right even while limited.
        if !self.join_failures_by_network.allows(&network, now_instant) {
            return Err(rate_limited());
        }
        let mut state = self.load(&network)?;
        let now = self.clock.now();
        let hash = code.secret_hash();
        let matches =
            state.invites.iter().any(|i| i.id == locator && constant_time_eq(&i.secret_hash, &hash));
        if !matches {
            self.join_failures_by_source.take(&source, now_instant);
            self.join_failures_by_network.take(&network, now_instant);
            tracing::info!(%network, source = %session.source, "wrong invite secret");
            return Err(unknown());
        }
        let invite = state.invite_mut(&locator).expect("matched above");
        match invite.check_live(now) {
            Ok(()) => {}
            Err(DeadInvite::Revoked) => {
                return Err(ApiError::new(
                    ErrorCode::InviteRevoked,
                    "this invite was revoked by the network's owner",
                ))
            }
            Err(DeadInvite::Expired) => {
                return Err(ApiError::new(
                    ErrorCode::InviteExpired,
                    format!(
                        "this invite expired at {}; ask for a new one",
                        trellis_protocol::time::utc(invite.expires_at)
                    ),
                ))
            }
            Err(DeadInvite::UsedUp) => {
                return Err(ApiError::new(
                    ErrorCode::InviteUsedUp,
                    format!("this invite was already used {} of {} times", invite.uses, invite.max_uses),
                ))
            }
        }
        let device = session.device;
        if state.is_banned(&device) {
            return Err(ApiError::new(
                ErrorCode::Banned,
                format!("this device was removed from network {:?} by its owner", state.info.name.as_str()),
            ));
        }
        if state.member(&device).is_some() {
            return Err(ApiError::new(
                ErrorCode::AlreadyMember,
                format!("this device is already a member of network {:?}", state.info.name.as_str()),
            ));
        }
        if state.members.len() >= MAX_NETWORK_MEMBERS {
            return Err(ApiError::new(
                ErrorCode::NetworkFull,
                format!("the network has the most members it can have ({MAX_NETWORK_MEMBERS})"),
            ));
        }
        self.check_network_count(&device)?;
        let ip = state.allocate_address(now)?;
        let name = state.unique_name(&device_name, &device);
        state.invite_mut(&locator).expect("matched above").uses += 1;
        let record = MemberRecord { device, key: session.key, name, ip, joined_at: now };
        state.members.push(record.clone());
        self.save(&state)?;
        tracing::info!(%network, %device, ip = %ip, "device joined");
        let member = state.view(&record, true);
        let others = state.members.iter().map(|m| m.device).filter(|d| *d != device);
        self.send_event(others, Event::MemberJoined { network, member });
        let membership = self.membership(&state, &device).expect("just joined");
        Ok(Response::Joined { membership })
    }

    fn rename(
        &self,
        device: &DeviceId,
        network: &NetworkId,
        name: &DeviceName,
    ) -> Result<Response, ApiError> {
        let _writes = self.lock_writes();
        let mut state = self.load_as_member(network, device)?;
        let name = state.unique_name(name, device);
        let record = state.members.iter_mut().find(|m| &m.device == device).expect("member");
        record.name = name;
        let record = record.clone();
        self.save(&state)?;
        let me = state.view(&record, true);
        let others = state.members.iter().map(|m| m.device).filter(|d| d != device);
        self.send_event(others, Event::MemberUpdated { network: *network, member: me.clone() });
        Ok(Response::Renamed { me })
    }

    fn leave(&self, device: &DeviceId, network: &NetworkId) -> Result<Response, ApiError> {
        let _writes = self.lock_writes();
        let mut state = self.load_as_member(network, device)?;
        if state.is_owner(device) {
            if state.members.len() > 1 {
                return Err(ApiError::new(
                    ErrorCode::OwnerCannotLeave,
                    "the owner cannot leave while others are in the network; remove them first",
                ));
            }
            self.store.delete_network(network).map_err(internal)?;
            tracing::info!(%network, "network deleted by its owner leaving");
            self.evict_if_homeless(device);
            return Ok(Response::Done);
        }
        let record = state.remove_member(device, self.clock.now()).expect("member");
        self.save(&state)?;
        tracing::info!(%network, %device, "device left");
        let event = Event::MemberLeft {
            network: *network,
            device: *device,
            key: record.key,
            reason: LeaveReason::Left,
        };
        self.send_event(state.members.iter().map(|m| m.device), event);
        self.evict_if_homeless(device);
        Ok(Response::Done)
    }

    fn remove_device(
        &self,
        owner: &DeviceId,
        network: &NetworkId,
        target: &DeviceId,
    ) -> Result<Response, ApiError> {
        let _writes = self.lock_writes();
        let mut state = self.load_as_owner(network, owner)?;
        if target == owner {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "the owner cannot remove itself; leave instead",
            ));
        }
        let record = state.remove_member(target, self.clock.now()).ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownDevice, format!("no member of this network has the id {target}"))
        })?;
        state.banned.push(*target);
        self.save(&state)?;
        tracing::info!(%network, device = %target, "device removed by the owner");
        let event = Event::MemberLeft {
            network: *network,
            device: *target,
            key: record.key,
            reason: LeaveReason::Removed,
        };
        self.send_event(state.members.iter().map(|m| m.device), event);
        self.send_event([*target], Event::RemovedFromNetwork { network: *network });
        self.evict_if_homeless(target);
        self.close_sessions(
            target,
            ApiError::new(
                ErrorCode::Banned,
                format!("this device was removed from network {:?} by its owner", state.info.name.as_str()),
            ),
        );
        Ok(Response::Done)
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
